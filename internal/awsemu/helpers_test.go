package awsemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"
)

// testClock is a server clock the test moves forward. Keep the total under the 15 minutes of
// clock skew that signatures tolerate.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func startServer(t *testing.T, opts ...Option) *Server {
	t.Helper()
	s, err := Start(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// awsClients are the real SDK clients pointed at a server.
type awsClients struct {
	ebs *ebs.Client
	ec2 *ec2.Client
	ssm *ssm.Client
	s3  *s3.Client
}

type clientOpts struct {
	key, secret string
	attempts    int
}

func clientsFor(s *Server, region string, opt ...func(*clientOpts)) awsClients {
	o := clientOpts{key: DefaultAccessKeyID, secret: DefaultSecretAccessKey, attempts: 4}
	for _, f := range opt {
		f(&o)
	}
	cfg := aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(o.key, o.secret, ""),
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = o.attempts
				so.RateLimiter = ratelimit.None
				so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 5 * time.Millisecond, nil })
			})
		},
	}
	ep := aws.String(s.URL())
	return awsClients{
		ebs: ebs.NewFromConfig(cfg, func(o *ebs.Options) { o.BaseEndpoint = ep }),
		ec2: ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = ep }),
		ssm: ssm.NewFromConfig(cfg, func(o *ssm.Options) { o.BaseEndpoint = ep }),
		s3:  s3.NewFromConfig(cfg, func(o *s3.Options) { o.BaseEndpoint = ep; o.UsePathStyle = true }),
	}
}

func withSecret(secret string) func(*clientOpts) { return func(o *clientOpts) { o.secret = secret } }

func withKey(key string) func(*clientOpts) { return func(o *clientOpts) { o.key = key } }

func withAttempts(n int) func(*clientOpts) { return func(o *clientOpts) { o.attempts = n } }

func checksum(b []byte) string {
	s := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(s[:])
}

// linear is the LINEAR aggregate checksum of blocks in index order.
func linear(blocks map[int32][]byte, order []int32) string {
	h := sha256.New()
	for _, i := range order {
		s := sha256.Sum256(blocks[i])
		h.Write(s[:])
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func randomBlock(r *rand.Rand) []byte {
	b := make([]byte, blockSize)
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// uploadSnapshot writes blocks to a new snapshot of sizeGiB in parallel and completes it.
func uploadSnapshot(t *testing.T, cl awsClients, sizeGiB int64, blocks map[int32][]byte, tags ...ebstypes.Tag) string {
	t.Helper()
	ctx := context.Background()
	start, err := cl.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(sizeGiB), Tags: tags, Description: aws.String("test upload")})
	if err != nil {
		t.Fatalf("StartSnapshot: %v", err)
	}
	id := aws.ToString(start.SnapshotId)
	var order []int32
	for i := range blocks {
		order = append(order, i)
	}
	sortInt32(order)
	putBlocks(t, cl, id, blocks)
	out, err := cl.ebs.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
		SnapshotId: aws.String(id), ChangedBlocksCount: aws.Int32(int32(len(blocks))),
		Checksum: aws.String(linear(blocks, order)), ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear,
	})
	if err != nil {
		t.Fatalf("CompleteSnapshot: %v", err)
	}
	if out.Status != ebstypes.StatusCompleted {
		t.Fatalf("CompleteSnapshot status %s, want completed", out.Status)
	}
	return id
}

func putBlocks(t *testing.T, cl awsClients, id string, blocks map[int32][]byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(blocks))
	sem := make(chan struct{}, 64)
	for i, b := range blocks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := cl.ebs.PutSnapshotBlock(context.Background(), &ebs.PutSnapshotBlockInput{
				SnapshotId: aws.String(id), BlockIndex: aws.Int32(i), BlockData: bytes.NewReader(b),
				DataLength: aws.Int32(blockSize), Checksum: aws.String(checksum(b)),
				ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
			})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("PutSnapshotBlock: %v", err)
	}
}

func sortInt32(s []int32) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// apiCode returns the API error code of err, or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// registerTestImage registers an HVM UEFI image of one snapshot.
func registerTestImage(t *testing.T, cl awsClients, name, snapID string) string {
	t.Helper()
	out, err := cl.ec2.RegisterImage(context.Background(), &ec2.RegisterImageInput{
		Name: aws.String(name), Architecture: ec2types.ArchitectureValuesX8664, BootMode: ec2types.BootModeValuesUefi,
		EnaSupport: aws.Bool(true), SriovNetSupport: aws.String("simple"), ImdsSupport: ec2types.ImdsSupportValuesV20,
		TpmSupport: ec2types.TpmSupportValuesV20, RootDeviceName: aws.String("/dev/xvda"), VirtualizationType: aws.String("hvm"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{
			DeviceName: aws.String("/dev/xvda"),
			Ebs: &ec2types.EbsBlockDevice{SnapshotId: aws.String(snapID), VolumeSize: aws.Int32(2), VolumeType: ec2types.VolumeTypeGp3,
				Iops: aws.Int32(3000), Throughput: aws.Int32(125), DeleteOnTermination: aws.Bool(true)},
		}},
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage,
			Tags: []ec2types.Tag{{Key: aws.String("gpuforge:build"), Value: aws.String("b1")}}}},
	})
	if err != nil {
		t.Fatalf("RegisterImage: %v", err)
	}
	return aws.ToString(out.ImageId)
}
