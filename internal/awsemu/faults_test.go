package awsemu

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	smithy "github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func putOne(cl awsClients, id string, idx int32, data []byte) error {
	_, err := cl.ebs.PutSnapshotBlock(context.Background(), &ebs.PutSnapshotBlockInput{SnapshotId: aws.String(id), BlockIndex: aws.Int32(idx),
		BlockData: bytes.NewReader(data), DataLength: aws.Int32(blockSize), Checksum: aws.String(checksum(data)),
		ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256})
	return err
}

func startOne(t *testing.T, cl awsClients) string {
	t.Helper()
	out, err := cl.ebs.StartSnapshot(context.Background(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.SnapshotId)
}

// isConnectionError says whether err is a transport failure rather than an answer.
func isConnectionError(err error) bool {
	var ae smithy.APIError
	var se *smithyhttp.RequestSendError
	return err != nil && !errors.As(err, &ae) && errors.As(err, &se)
}

func TestFaultThrottleRetried(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1")
	ctx := context.Background()
	id := startOne(t, cl)
	data := randomBlock(rand.New(rand.NewPCG(1, 1)))

	s.Inject(Fault{Op: "PutSnapshotBlock", Kind: FaultThrottle, Count: 2})
	if err := putOne(cl, id, 0, data); err != nil {
		t.Fatalf("the retryer should get through 2 throttles: %v", err)
	}
	st := s.Stats()
	if st.Requests["PutSnapshotBlock"] != 3 || st.Rejected["PutSnapshotBlock"] != 2 || st.BlockBytes != blockSize {
		t.Errorf("Stats = %+v", st)
	}

	// Without retries the throttling error itself comes back, with its documented code.
	s.Inject(Fault{Op: "PutSnapshotBlock", Kind: FaultThrottle, Count: 1})
	err := putOne(clientsFor(s, "us-east-1", withAttempts(1)), id, 1, data)
	if apiCode(err) != "RequestThrottledException" || httpStatus(err) != 400 {
		t.Errorf("EBS throttle: %v, want RequestThrottledException 400", err)
	}
	s.Inject(Fault{Op: "DescribeImages", Kind: FaultThrottle, Count: 1})
	_, err = clientsFor(s, "us-east-1", withAttempts(1)).ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{})
	if apiCode(err) != "RequestLimitExceeded" || httpStatus(err) != 503 {
		t.Errorf("EC2 throttle: %v, want RequestLimitExceeded 503", err)
	}
	s.Inject(Fault{Op: "GetParameter", Kind: FaultThrottle, Count: 1})
	_, err = clientsFor(s, "us-east-1", withAttempts(1)).ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/p")})
	if apiCode(err) != "ThrottlingException" {
		t.Errorf("SSM throttle: %v, want ThrottlingException", err)
	}
}

func TestFaultServerErrorRetried(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1")
	s.Inject(Fault{Op: "StartSnapshot", Kind: FaultServerError, Count: 1})
	startOne(t, cl)
	s.Inject(Fault{Op: "RegisterImage", Kind: FaultServerError})
	_, err := cl.ec2.RegisterImage(context.Background(), &ec2.RegisterImageInput{Name: aws.String("x-image")})
	if apiCode(err) != "InternalError" || httpStatus(err) != 500 {
		t.Errorf("EC2 server error: %v, want InternalError 500", err)
	}
	if got := s.Stats().Requests["RegisterImage"]; got != 4 {
		t.Errorf("RegisterImage attempts = %d, want 4 (retried)", got)
	}
}

func TestFaultAccessDenied(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1")
	ctx := context.Background()
	s.Inject(Fault{Op: "StartSnapshot", Kind: FaultAccessDenied})
	_, err := cl.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	var ad *ebstypes.AccessDeniedException
	if !errors.As(err, &ad) || !strings.Contains(aws.ToString(ad.Message), "ebs:StartSnapshot") {
		t.Errorf("EBS: %v, want AccessDeniedException naming ebs:StartSnapshot", err)
	}
	s.Inject(Fault{Op: "DeregisterImage", Kind: FaultAccessDenied})
	_, err = cl.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String("ami-0123456789abcdef0")})
	if apiCode(err) != "UnauthorizedOperation" || httpStatus(err) != 403 ||
		!strings.Contains(err.Error(), "ec2:DeregisterImage") || !strings.Contains(err.Error(), "image/ami-0123456789abcdef0") {
		t.Errorf("EC2: %v, want UnauthorizedOperation 403 naming the operation and the image", err)
	}
	if got := s.Stats().Requests["StartSnapshot"]; got != 1 {
		t.Errorf("AccessDenied was retried: %d requests", got)
	}
}

func TestFaultReset(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1", withAttempts(2))
	id := startOne(t, cl)
	data := randomBlock(rand.New(rand.NewPCG(2, 2)))

	s.Inject(Fault{Op: "PutSnapshotBlock", Kind: FaultReset})
	err := putOne(cl, id, 0, data)
	if !isConnectionError(err) {
		t.Fatalf("reset: %v (%T), want a connection error", err, err)
	}
	s.ClearFaults()
	// A single reset is retried by the SDK.
	s.Inject(Fault{Op: "PutSnapshotBlock", Kind: FaultReset, Count: 1})
	if err := putOne(cl, id, 0, data); err != nil {
		t.Fatalf("one reset, retried: %v", err)
	}
	if inv := s.Inventory(); inv.Snapshots[0].BlockCount != 1 {
		t.Errorf("BlockCount = %d, want 1", inv.Snapshots[0].BlockCount)
	}
}

func TestFaultLatency(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1")
	s.Inject(Fault{Op: "DescribeRegions", Kind: FaultLatency, Latency: 300 * time.Millisecond})
	start := time.Now()
	if _, err := cl.ec2.DescribeRegions(context.Background(), &ec2.DescribeRegionsInput{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("DescribeRegions took %v, want at least 300ms", d)
	}
	start = time.Now()
	if _, err := cl.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= 300*time.Millisecond {
		t.Errorf("DescribeImages took %v; the latency fault is for DescribeRegions only", d)
	}
}

func TestFaultCrash(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1", withAttempts(2))
	ctx := context.Background()
	id := startOne(t, cl)
	data := randomBlock(rand.New(rand.NewPCG(3, 3)))
	if err := putOne(cl, id, 0, data); err != nil {
		t.Fatal(err)
	}
	s.Inject(Fault{Op: "CompleteSnapshot", Kind: FaultCrash})
	if _, err := cl.ebs.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{SnapshotId: aws.String(id), ChangedBlocksCount: aws.Int32(1)}); err != nil {
		t.Fatalf("the crashing request is served: %v", err)
	}
	_, err := cl.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	if !isConnectionError(err) {
		t.Fatalf("after the crash: %v, want a connection error", err)
	}
	s.ClearFaults()
	d, err := cl.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	if err != nil || d.Snapshots[0].State != "completed" {
		t.Fatalf("after ClearFaults: %v %+v", err, d)
	}
}

func TestFaultRateIsDeterministic(t *testing.T) {
	pattern := func() []bool {
		s := startServer(t)
		cl := clientsFor(s, "us-east-1", withAttempts(1))
		s.Inject(Fault{Op: "DescribeRegions", Kind: FaultServerError, Rate: 0.5, Seed: 42})
		var hits []bool
		for i := 0; i < 24; i++ {
			_, err := cl.ec2.DescribeRegions(context.Background(), &ec2.DescribeRegionsInput{})
			hits = append(hits, err != nil)
		}
		return hits
	}
	a, b := pattern(), pattern()
	n := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("request %d: %v then %v; the same seed must affect the same requests", i, a[i], b[i])
		}
		if a[i] {
			n++
		}
	}
	if n == 0 || n == len(a) {
		t.Errorf("rate 0.5 affected %d of %d requests", n, len(a))
	}
}
