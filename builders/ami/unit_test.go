package ami

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/gpuforge/gpuforge/recipes"
)

// apiErr builds the error the SDK returns for an API error response.
func apiErr(op string, status int, code, msg string) error {
	var inner error = &smithy.GenericAPIError{Code: code, Message: msg}
	if code == "AccessDeniedException" {
		inner = &ebstypes.AccessDeniedException{Message: &msg}
	}
	return &smithy.OperationError{ServiceID: "EBS", OperationName: op, Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: inner},
		RequestID:     "req-1",
	}}
}

func TestLinearChecksum(t *testing.T) {
	blocks := map[int64][]byte{7: []byte("seven"), 2: []byte("two"), 40: []byte("forty")}
	var ds []blockDigest
	for _, i := range []int64{40, 2, 7} { // out of order, as workers finish
		ds = append(ds, blockDigest{Index: i, Sum: sha256.Sum256(blocks[i])})
	}
	h := sha256.New()
	for _, i := range []int64{2, 7, 40} {
		s := sha256.Sum256(blocks[i])
		h.Write(s[:]) // raw digests, not their base64
	}
	want := base64.StdEncoding.EncodeToString(h.Sum(nil))
	if got := linearChecksum(ds); got != want {
		t.Fatalf("linearChecksum = %s, want %s", got, want)
	}
	if ds[0].Index != 2 || ds[2].Index != 40 {
		t.Errorf("digests not sorted by index: %v", []int64{ds[0].Index, ds[1].Index, ds[2].Index})
	}
}

func TestExtentsToBlocks(t *testing.T) {
	got := extentsToBlocks([][2]int64{
		{0, 4096},                             // block 0
		{BlockSize - 1, BlockSize + 1},        // blocks 0..1, merges
		{10 * BlockSize, 10*BlockSize + 512},  // block 10
		{10*BlockSize + 4096, 12 * BlockSize}, // blocks 10..11, merges
		{20 * BlockSize, 20 * BlockSize},      // empty
	})
	want := []blockRange{{0, 2}, {10, 12}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("extentsToBlocks = %v, want %v", got, want)
	}
	if n := countBlocks(got); n != 4 {
		t.Errorf("countBlocks = %d, want 4", n)
	}
}

// writeSparse makes a sparse file of size bytes holding data at the given offsets.
func writeSparse(t *testing.T, size int64, data map[int64][]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range data {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestDataBlocksSkipsHoles(t *testing.T) {
	const size = 1 << 30
	ones := func(n int) []byte { return []byte(strings.Repeat("\x01", n)) }
	path := writeSparse(t, size, map[int64][]byte{
		0:                       ones(4096),
		300 << 20:               ones(BlockSize + 1), // blocks 600..601
		size - 100:              ones(100),           // last block
		700<<20 + BlockSize/2:   ones(10),            // block 1400
		700<<20 + BlockSize*3/4: make([]byte, 4096),  // zeros written: data to the file system, block 1400 still
	})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rs, err := dataBlocks(f, size)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dataExtents(f, size); errors.Is(err, errNoSeekData) {
		t.Skipf("the file system of %s does not support SEEK_DATA; every block is read", path)
	}
	// The file system allocates in its own blocks (4 KiB, or larger on some), so a range may widen to the
	// neighbouring 512 KiB block, never more than a few.
	want := map[int64]bool{0: true, 600: true, 601: true, 1400: true, blocksOf(size) - 1: true}
	for i := range want {
		if !inRanges(rs, i) {
			t.Errorf("block %d holds data but is not in %v", i, rs)
		}
	}
	if n := countBlocks(rs); n > 12 {
		t.Errorf("%d blocks to read of %d; want only those around the data: %v", n, blocksOf(size), rs)
	}
	// Reading: the data blocks are not zero, the written-zero region is.
	buf := make([]byte, BlockSize)
	if err := readBlock(f, size, 1400, buf); err != nil || isZero(buf) {
		t.Errorf("block 1400: zero=%v err=%v", isZero(buf), err)
	}
	if err := readBlock(f, size, 1399, buf); err != nil || !isZero(buf) {
		t.Errorf("block 1399: zero=%v err=%v", isZero(buf), err)
	}
}

func inRanges(rs []blockRange, i int64) bool {
	for _, r := range rs {
		if i >= r.First && i < r.End {
			return true
		}
	}
	return false
}

func TestReadBlockPadsTheLastBlock(t *testing.T) {
	const size = 3*BlockSize + 1000
	path := writeSparse(t, size, map[int64][]byte{3 * BlockSize: []byte(strings.Repeat("x", 1000))})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := []byte(strings.Repeat("garbage!", BlockSize/8))
	if err := readBlock(f, size, 3, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf[:1000]) != strings.Repeat("x", 1000) || !isZero(buf[1000:]) {
		t.Fatal("the last, partial block is not its bytes followed by zeros")
	}
	if blocksOf(size) != 4 || volumeGiB(size) != 1 || volumeGiB(gib) != 1 || volumeGiB(gib+1) != 2 {
		t.Errorf("blocksOf/volumeGiB: %d %d %d %d", blocksOf(size), volumeGiB(size), volumeGiB(gib), volumeGiB(gib+1))
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"ebs throttled", apiErr("PutSnapshotBlock", 400, "RequestThrottledException", "slow down"), true},
		{"ebs throttling", apiErr("StartSnapshot", 400, "ThrottlingException", "Rate exceeded"), true},
		{"ebs concurrent limit", apiErr("PutSnapshotBlock", 400, "ConcurrentLimitExceededException", ""), true},
		{"ec2 request limit", apiErr("CopyImage", 503, "RequestLimitExceeded", ""), true},
		{"s3 slow down", apiErr("PutObject", 503, "SlowDown", ""), true},
		{"ebs internal", apiErr("PutSnapshotBlock", 500, "InternalServerException", ""), true},
		{"ec2 internal", apiErr("RegisterImage", 500, "InternalError", ""), true},
		{"unknown 502", apiErr("RegisterImage", 502, "BadGateway", ""), true},
		{"http 429 without code", &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 429}}, Err: errors.New("x")}}, true},
		{"access denied", apiErr("PutSnapshotBlock", 403, "AccessDeniedException", "no"), false},
		{"unauthorized", apiErr("RegisterImage", 403, "UnauthorizedOperation", "no"), false},
		{"validation", apiErr("PutSnapshotBlock", 400, "ValidationException", "bad checksum"), false},
		{"not found", apiErr("DescribeImages", 400, "InvalidAMIID.NotFound", ""), false},
		{"duplicate", apiErr("RegisterImage", 400, "InvalidAMIName.Duplicate", ""), false},
		{"connection reset", &smithyhttp.RequestSendError{Err: &url.Error{Op: "Put", URL: "http://x", Err: &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}}, true},
		{"refused", &url.Error{Op: "Put", URL: "http://x", Err: errors.New("dial tcp: connection refused")}, true},
		{"cut-off response", &smithy.DeserializationError{Err: io.ErrUnexpectedEOF}, true},
		{"attempt timeout", fmt.Errorf("op: %w", context.DeadlineExceeded), true},
		{"cancelled", fmt.Errorf("op: %w", context.Canceled), false},
		{"plain", errors.New("something else"), false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("%s: retryable = %v, want %v (%v)", tc.name, got, tc.want, tc.err)
		}
	}
}

func TestBackoff(t *testing.T) {
	p := retryPolicy{Base: 100 * time.Millisecond, Max: 2 * time.Second}
	for n := 1; n <= 10; n++ {
		ceil := min(p.Base<<(n-1), p.Max)
		lo, hi := time.Duration(1<<62), time.Duration(0)
		for range 200 {
			d := p.backoff(n)
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo < ceil/2 || hi > ceil {
			t.Errorf("backoff(%d) in [%v, %v], want within [%v, %v]", n, lo, hi, ceil/2, ceil)
		}
		if n >= 3 && hi-lo < ceil/10 {
			t.Errorf("backoff(%d) has no jitter: [%v, %v]", n, lo, hi)
		}
	}
}

var fastRetry = retryPolicy{Attempts: 5, Base: time.Millisecond, Max: 4 * time.Millisecond}

func TestCallRetriesOnlyTransientErrors(t *testing.T) {
	ctx := context.Background()
	n := 0
	v, err := call(ctx, fastRetry, "PutSnapshotBlock", "snap-1 block 3", "us-east-1", func(context.Context) (int, error) {
		n++
		if n < 3 {
			return 0, apiErr("PutSnapshotBlock", 400, "RequestThrottledException", "slow down")
		}
		return 42, nil
	})
	if err != nil || v != 42 || n != 3 {
		t.Fatalf("throttled twice: v=%d n=%d err=%v", v, n, err)
	}

	n = 0
	_, err = call(ctx, fastRetry, "PutSnapshotBlock", "snap-0123 block 42", "us-east-1", func(context.Context) (int, error) {
		n++
		return 0, apiErr("PutSnapshotBlock", 403, "AccessDeniedException", "User is not authorized")
	})
	if n != 1 {
		t.Errorf("AccessDenied sent %d times, want 1", n)
	}
	want := "PutSnapshotBlock snap-0123 block 42: AccessDeniedException: User is not authorized (us-east-1, request req-1)"
	if err == nil || err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
	var oe *OpError
	var ade *ebstypes.AccessDeniedException
	if !errors.As(err, &oe) || oe.Code() != "AccessDeniedException" || oe.Temporary() || !errors.As(err, &ade) {
		t.Errorf("error %#v does not unwrap to an *OpError with the SDK's AccessDeniedException", err)
	}

	n = 0
	_, err = call(ctx, fastRetry, "CopyImage", "ami-1", "eu-west-1", func(context.Context) (int, error) {
		n++
		return 0, apiErr("CopyImage", 500, "InternalError", "boom")
	})
	if n != fastRetry.Attempts || !strings.Contains(err.Error(), "5 attempts") {
		t.Errorf("server errors: %d attempts, err %v", n, err)
	}

	cctx, cancel := context.WithCancel(ctx)
	n = 0
	_, err = call(cctx, retryPolicy{Attempts: 10, Base: time.Hour, Max: time.Hour}, "CopyImage", "ami-1", "eu-west-1", func(context.Context) (int, error) {
		n++
		cancel()
		return 0, apiErr("CopyImage", 503, "RequestLimitExceeded", "")
	})
	if n != 1 || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled during backoff: %d attempts, err %v", n, err)
	}
}

func TestCallBoundsAnAttempt(t *testing.T) {
	n := 0
	p := fastRetry
	p.AttemptTimeout = 20 * time.Millisecond
	_, err := call(context.Background(), p, "PutSnapshotBlock", "snap-1 block 0", "us-east-1", func(ctx context.Context) (int, error) {
		n++
		if n == 1 {
			<-ctx.Done() // a connection that hangs
			return 0, ctx.Err()
		}
		return 1, nil
	})
	if err != nil || n != 2 {
		t.Fatalf("hung attempt: n=%d err=%v", n, err)
	}
}

func TestBakeSettings(t *testing.T) {
	f := false
	b := &Bake{BuildID: "b1", AMI: &recipes.AMI{Name: "n", SRIOV: &f, Tags: map[string]string{"team": "ml"}, DeprecateAt: "2027-01-02T03:04:05+01:00",
		Volume: &recipes.AMIVolume{Size: "40GiB", IOPS: 4000, Throughput: 250}}}
	s, err := b.settings("us-west-2", 10<<30)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(s.regions) != "[us-west-2]" || s.arch != "x86_64" || s.bootMode != "uefi" || s.imds != "v2.0" || !s.ena || s.sriov ||
		s.volumeGiB != 40 || s.volumeType != "gp3" || s.tags[BuildIDTag] != "b1" || s.tags["team"] != "ml" ||
		s.deprecateAt.Format(time.RFC3339) != "2027-01-02T02:04:05Z" {
		t.Errorf("settings = %+v", s)
	}
	for _, tc := range []struct {
		ami  recipes.AMI
		size int64
		want string
	}{
		{recipes.AMI{Name: "n", Volume: &recipes.AMIVolume{Size: "8GiB"}}, 10 << 30, "smaller than the disk"},
		{recipes.AMI{Name: "n", Regions: []string{"us-east-1", "us-east-1"}}, 1, "listed twice"},
		{recipes.AMI{Name: "n", Volume: &recipes.AMIVolume{Type: "io2", Throughput: 500}}, 1, "gp3 setting"},
		{recipes.AMI{}, 1, "no name"},
	} {
		b := &Bake{BuildID: "b", AMI: &tc.ami}
		if _, err := b.settings("us-east-1", tc.size); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.ami, err, tc.want)
		}
	}
	if len(b.copyToken("ami-1", "eu-west-1")) > 64 || b.copyToken("ami-1", "eu-west-1") == b.copyToken("ami-1", "eu-west-2") {
		t.Error("copy tokens: too long or not distinct per region")
	}
}

func TestTimeoutMinutes(t *testing.T) {
	for d, want := range map[time.Duration]int32{0: 60, time.Minute: 10, 90 * time.Minute: 90, 61*time.Minute + time.Second: 62, 1000 * time.Hour: 4320} {
		if got := timeoutMinutes(d); got != want {
			t.Errorf("timeoutMinutes(%v) = %d, want %d", d, got, want)
		}
	}
}
