package awsemu

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

func TestSnapshotUploadAndReadBack(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1")
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))

	// 64 blocks written by 64 parallel requests, spread over a 2 GiB volume.
	blocks := map[int32][]byte{}
	for i := int32(0); i < 64; i++ {
		blocks[i*61] = randomBlock(rng)
	}
	blocks[2*blocksPerGiB-1] = randomBlock(rng) // the last block of the volume
	id := uploadSnapshot(t, cl, 2, blocks, ebstypes.Tag{Key: aws.String("gpuforge:build"), Value: aws.String("b1")})

	d, err := cl.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}, OwnerIds: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Snapshots) != 1 || d.Snapshots[0].State != "completed" || aws.ToInt32(d.Snapshots[0].VolumeSize) != 2 {
		t.Fatalf("DescribeSnapshots = %+v", d.Snapshots)
	}

	// ListSnapshotBlocks pages through the blocks in order; GetSnapshotBlock returns their data.
	var listed []int32
	var token *string
	for {
		out, err := cl.ebs.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), MaxResults: aws.Int32(100), NextToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToInt32(out.BlockSize) != blockSize || aws.ToInt64(out.VolumeSize) != 2 {
			t.Fatalf("BlockSize %d VolumeSize %d", aws.ToInt32(out.BlockSize), aws.ToInt64(out.VolumeSize))
		}
		for _, b := range out.Blocks {
			listed = append(listed, aws.ToInt32(b.BlockIndex))
			got, err := cl.ebs.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(id), BlockIndex: b.BlockIndex, BlockToken: b.BlockToken})
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(got.BlockData)
			got.BlockData.Close()
			if !bytes.Equal(data, blocks[aws.ToInt32(b.BlockIndex)]) || aws.ToString(got.Checksum) != checksum(data) || aws.ToInt32(got.DataLength) != blockSize {
				t.Fatalf("GetSnapshotBlock %d returned other data", aws.ToInt32(b.BlockIndex))
			}
		}
		if out.NextToken == nil {
			break
		}
		token = out.NextToken
	}
	if len(listed) != len(blocks) {
		t.Fatalf("listed %d blocks, want %d", len(listed), len(blocks))
	}
	for i := 1; i < len(listed); i++ {
		if listed[i] <= listed[i-1] {
			t.Fatalf("blocks not in order: %v", listed)
		}
	}

	// WriteSnapshot rebuilds the disk: blocks at their offsets, holes elsewhere.
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := s.WriteSnapshot("us-east-1", id, path); err != nil {
		t.Fatal(err)
	}
	disk, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	if fi, _ := disk.Stat(); fi.Size() != 2<<30 {
		t.Fatalf("disk is %d bytes, want 2 GiB", fi.Size())
	}
	zero := make([]byte, blockSize)
	got := make([]byte, blockSize)
	check := func(i int32) {
		want, ok := blocks[i]
		if !ok {
			want = zero
		}
		if _, err := disk.ReadAt(got, int64(i)*blockSize); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("block %d of the disk differs", i)
		}
	}
	for i := range blocks {
		check(i)
		if i+1 < 2*blocksPerGiB {
			check(i + 1) // a hole, or the next block
		}
	}
	for i := 0; i < 64; i++ {
		check(rng.Int32N(2 * blocksPerGiB))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err == nil && st.Blocks*512 > int64(len(blocks)+8)*blockSize {
		t.Errorf("disk file allocates %d bytes; want a sparse file", st.Blocks*512)
	}

	stats := s.Stats()
	if stats.BlockBytes != int64(len(blocks))*blockSize || stats.Requests["PutSnapshotBlock"] != len(blocks) {
		t.Errorf("Stats = %+v", stats)
	}
	inv := s.Inventory()
	if len(inv.Snapshots) != 1 || inv.Snapshots[0].BlockCount != len(blocks) || inv.Snapshots[0].Tags["gpuforge:build"] != "b1" {
		t.Errorf("Inventory = %+v", inv.Snapshots)
	}
}

func TestPutSnapshotBlockRejects(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1", withAttempts(1))
	ctx := context.Background()
	start, err := cl.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	if err != nil {
		t.Fatal(err)
	}
	if start.Status != ebstypes.StatusPending || aws.ToInt32(start.BlockSize) != blockSize {
		t.Fatalf("StartSnapshot = %+v", start)
	}
	id := start.SnapshotId
	data := randomBlock(rand.New(rand.NewPCG(3, 4)))
	put := func(idx int32, body []byte, sum string) error {
		_, err := cl.ebs.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{SnapshotId: id, BlockIndex: aws.Int32(idx),
			BlockData: bytes.NewReader(body), DataLength: aws.Int32(blockSize), Checksum: aws.String(sum),
			ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256})
		return err
	}
	var ve *ebstypes.ValidationException

	err = put(0, data, checksum(data[1:]))
	if !errors.As(err, &ve) || ve.Reason != ebstypes.ValidationExceptionReasonInvalidBlock {
		t.Errorf("wrong checksum: %v, want ValidationException INVALID_BLOCK", err)
	}
	if err := put(blocksPerGiB, data, checksum(data)); !errors.As(err, &ve) {
		t.Errorf("index beyond the volume: %v, want ValidationException", err)
	}
	var nf *ebstypes.ResourceNotFoundException
	if _, err := cl.ebs.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{SnapshotId: aws.String("snap-0123456789abcdef0"), BlockIndex: aws.Int32(0),
		BlockData: bytes.NewReader(data), DataLength: aws.Int32(blockSize), Checksum: aws.String(checksum(data)),
		ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256}); !errors.As(err, &nf) {
		t.Errorf("unknown snapshot: %v, want ResourceNotFoundException", err)
	}
	if err := put(0, data, checksum(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ebs.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{SnapshotId: id, ChangedBlocksCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	if err := put(1, data, checksum(data)); !errors.As(err, &ve) {
		t.Errorf("completed snapshot: %v, want ValidationException", err)
	}
	if got := s.Stats().Rejected["PutSnapshotBlock"]; got != 4 {
		t.Errorf("Rejected[PutSnapshotBlock] = %d, want 4", got)
	}
}

func TestCompleteSnapshotChecks(t *testing.T) {
	s := startServer(t, WithCompleteDelay(100*time.Millisecond))
	cl := clientsFor(s, "us-east-1", withAttempts(1))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	blocks := map[int32][]byte{0: randomBlock(rng), 7: randomBlock(rng), 3: randomBlock(rng)}
	start, err := cl.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	if err != nil {
		t.Fatal(err)
	}
	id := start.SnapshotId
	putBlocks(t, cl, *id, blocks)
	// Writing a block again replaces it and still counts once.
	putBlocks(t, cl, *id, map[int32][]byte{7: blocks[7]})

	complete := func(count int32, sum string) (*ebs.CompleteSnapshotOutput, error) {
		return cl.ebs.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{SnapshotId: id, ChangedBlocksCount: aws.Int32(count),
			Checksum: aws.String(sum), ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
			ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear})
	}
	good := linear(blocks, []int32{0, 3, 7})
	var ve *ebstypes.ValidationException
	if _, err := complete(4, good); !errors.As(err, &ve) {
		t.Errorf("wrong ChangedBlocksCount: %v, want ValidationException", err)
	}
	if _, err := complete(3, linear(blocks, []int32{7, 3, 0})); !errors.As(err, &ve) {
		t.Errorf("aggregate in the wrong order: %v, want ValidationException", err)
	}
	out, err := complete(3, good)
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != ebstypes.StatusPending {
		t.Errorf("status right after CompleteSnapshot with a delay = %s, want pending", out.Status)
	}
	// A retry of the accepted call answers as the first one.
	if _, err := complete(3, good); err != nil {
		t.Errorf("retried CompleteSnapshot: %v", err)
	}
	time.Sleep(150 * time.Millisecond)
	d, err := cl.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{*id}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Snapshots[0].State != "completed" || aws.ToString(d.Snapshots[0].Progress) != "100%" {
		t.Errorf("after the delay: %s %s, want completed 100%%", d.Snapshots[0].State, aws.ToString(d.Snapshots[0].Progress))
	}
}

func TestStartSnapshotClientToken(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1", withAttempts(1))
	ctx := context.Background()
	in := &ebs.StartSnapshotInput{VolumeSize: aws.Int64(8), ClientToken: aws.String("build-42-root"), Description: aws.String("root")}
	a, err := cl.ebs.StartSnapshot(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cl.ebs.StartSnapshot(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(a.SnapshotId) != aws.ToString(b.SnapshotId) {
		t.Errorf("same ClientToken gave %s and %s", aws.ToString(a.SnapshotId), aws.ToString(b.SnapshotId))
	}
	_, err = cl.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(9), ClientToken: aws.String("build-42-root")})
	var ce *ebstypes.ConflictException
	if !errors.As(err, &ce) {
		t.Errorf("same ClientToken, other parameters: %v, want ConflictException", err)
	}
	c, err := cl.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(8)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(c.SnapshotId) == aws.ToString(a.SnapshotId) {
		t.Error("a request without the token reused the snapshot")
	}
	if n := len(s.Inventory().Snapshots); n != 2 {
		t.Errorf("%d snapshots, want 2", n)
	}
}

func TestSnapshotTimesOut(t *testing.T) {
	var clock testClock
	s := startServer(t, withClock(clock.now))
	cl := clientsFor(s, "us-east-1", withAttempts(1))
	ctx := context.Background()
	start, err := cl.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Timeout: aws.Int32(10)})
	if err != nil {
		t.Fatal(err)
	}
	clock.advance(11 * time.Minute)
	data := make([]byte, blockSize)
	_, err = cl.ebs.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{SnapshotId: start.SnapshotId, BlockIndex: aws.Int32(0),
		BlockData: bytes.NewReader(data), DataLength: aws.Int32(blockSize), Checksum: aws.String(checksum(data)),
		ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256})
	var ve *ebstypes.ValidationException
	if !errors.As(err, &ve) {
		t.Fatalf("block after the timeout: %v, want ValidationException", err)
	}
	if inv := s.Inventory(); inv.Snapshots[0].State != "error" {
		t.Errorf("state %s, want error", inv.Snapshots[0].State)
	}
}

// BenchmarkPutSnapshotBlock writes blocks through the SDK from 64 goroutines.
func BenchmarkPutSnapshotBlock(b *testing.B) {
	s, err := Start(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	cl := clientsFor(s, "us-east-1")
	out, err := cl.ebs.StartSnapshot(context.Background(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(64)})
	if err != nil {
		b.Fatal(err)
	}
	data := randomBlock(rand.New(rand.NewPCG(1, 1)))
	sum := checksum(data)
	var next atomic.Int32
	b.SetBytes(blockSize)
	b.SetParallelism(64 / max(1, runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) % (64 * blocksPerGiB)
			if _, err := cl.ebs.PutSnapshotBlock(context.Background(), &ebs.PutSnapshotBlockInput{SnapshotId: out.SnapshotId, BlockIndex: aws.Int32(i),
				BlockData: bytes.NewReader(data), DataLength: aws.Int32(blockSize), Checksum: aws.String(sum),
				ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestIncrementalSnapshot(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1", withAttempts(1))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(19, 20))
	parentBlocks := map[int32][]byte{0: randomBlock(rng), 1: randomBlock(rng)}
	parent := uploadSnapshot(t, cl, 1, parentBlocks)

	child, err := cl.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(2), ParentSnapshotId: aws.String(parent)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(child.ParentSnapshotId) != parent {
		t.Errorf("ParentSnapshotId = %s", aws.ToString(child.ParentSnapshotId))
	}
	written := map[int32][]byte{1: randomBlock(rng), 2: randomBlock(rng)}
	putBlocks(t, cl, aws.ToString(child.SnapshotId), written)
	// Only the blocks written to the child count, and only they enter the aggregate.
	if _, err := cl.ebs.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{SnapshotId: child.SnapshotId, ChangedBlocksCount: aws.Int32(2),
		Checksum: aws.String(linear(written, []int32{1, 2})), ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear}); err != nil {
		t.Fatal(err)
	}
	list, err := cl.ebs.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: child.SnapshotId})
	if err != nil || len(list.Blocks) != 3 {
		t.Fatalf("child blocks: %v %+v", err, list)
	}
	changed, err := cl.ebs.ListChangedBlocks(ctx, &ebs.ListChangedBlocksInput{FirstSnapshotId: aws.String(parent), SecondSnapshotId: child.SnapshotId})
	if err != nil {
		t.Fatal(err)
	}
	var idx []int32
	for _, c := range changed.ChangedBlocks {
		idx = append(idx, aws.ToInt32(c.BlockIndex))
	}
	if len(idx) != 2 || idx[0] != 1 || idx[1] != 2 || changed.ChangedBlocks[1].FirstBlockToken != nil {
		t.Errorf("changed blocks = %v", idx)
	}
}
