package ami

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sync/errgroup"
)

// UploadOptions tunes UploadSnapshot (and UploadViaImport, which uses Tags, Description, Encrypted,
// KMSKeyARN, ClientToken, Progress and WaitTimeout).
type UploadOptions struct {
	// Workers is how many blocks are sent at once. Default 64.
	Workers int
	// Tags are put on the snapshot (StartSnapshot's tags: the snapshot is never untagged).
	Tags map[string]string
	// Description is the snapshot's description.
	Description string
	// Encrypted makes an encrypted snapshot, with KMSKeyARN or else the account's default EBS key.
	Encrypted bool
	// KMSKeyARN is the KMS key that encrypts the snapshot; setting it implies Encrypted.
	KMSKeyARN string
	// Timeout is StartSnapshot's Timeout: EBS cancels the snapshot when no block is written for this long,
	// or when it is not completed this long after the last block. Whole minutes, 10 to 4320. Default 60
	// minutes.
	Timeout time.Duration
	// ClientToken makes StartSnapshot idempotent: the same token returns the same pending snapshot (for
	// 8 hours), so that a rerun after a crash resumes it; its blocks are sent again. The caller derives it
	// from the build id and the disk's SHA-256. Default: a random token (retries of StartSnapshot stay
	// idempotent, reruns do not resume).
	ClientToken string
	// Progress, when set, is called after each block with the blocks done and the blocks to do (those the
	// file system says hold data); calls come one at a time, from the workers: keep it quick.
	Progress func(done, total int64)
	// WaitTimeout bounds the wait for the snapshot to become completed after CompleteSnapshot (or for the
	// import to finish). Default 30 minutes.
	WaitTimeout time.Duration
}

// UploadResult is what an upload made.
type UploadResult struct {
	// SnapshotID is the completed snapshot, e.g. "snap-0123456789abcdef0".
	SnapshotID string
	// Blocks is the disk's size in 512 KiB blocks; ZeroBlocks of them were all zero (inside a hole of the
	// file, or read and found zero) and were not sent. Blocks - ZeroBlocks were written.
	Blocks, ZeroBlocks int64
	// BytesSent is the block data sent, retries included.
	BytesSent int64
	// Retries is how many calls were sent again after throttling, a server error or a dropped connection.
	Retries int64
	// Took is the upload's duration, the wait for completed included.
	Took time.Duration
}

// UploadSnapshot uploads the raw disk at path disk into a new EBS snapshot through the EBS direct APIs and
// waits for it to be completed. The snapshot's volume size is the disk's size rounded up to a GiB.
//
// Only blocks that hold data are read (SEEK_DATA/SEEK_HOLE), and only those not all zero are sent, each
// with its SHA-256; CompleteSnapshot gets the count and the LINEAR aggregate checksum, so EBS verifies the
// whole snapshot. Throttling, 5xx responses and dropped connections are retried with backoff and jitter;
// any other error (AccessDenied, a validation error) fails the upload at once, naming the operation and the
// snapshot. On failure or cancellation the pending snapshot is deleted, with a context of its own.
func UploadSnapshot(ctx context.Context, cfg aws.Config, disk string, opt UploadOptions) (*UploadResult, error) {
	return uploadSnapshot(ctx, newClients(cfg, ""), disk, opt, defaultRetry)
}

// cleanupTimeout bounds the removal of what a failed run made; it runs on a context the caller's
// cancellation does not reach.
var cleanupTimeout = 5 * time.Minute

// cleanupContext returns a context for cleaning up after ctx failed or was cancelled: ctx's values, not its
// cancellation, and a time limit of its own.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func timeoutMinutes(d time.Duration) int32 {
	if d <= 0 {
		return 60
	}
	m := int32((d + time.Minute - 1) / time.Minute)
	return min(max(m, 10), 4320)
}

// openDisk opens a raw disk for op ("upload", "import") and returns its size; an empty disk is
// an error.
func openDisk(op, disk string) (*os.File, int64, error) {
	f, err := os.Open(disk)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", op, disk, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err == nil && size == 0 {
		err = errors.New("the disk is empty")
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s %s: %w", op, disk, err)
	}
	return f, size, nil
}

func uploadSnapshot(ctx context.Context, c *clients, disk string, opt UploadOptions, p retryPolicy) (res *UploadResult, err error) {
	start := time.Now()
	var retries atomic.Int64
	p.Retries = &retries

	f, size, err := openDisk("upload", disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > 64<<40 {
		return nil, fmt.Errorf("upload %s: %d bytes is more than an EBS snapshot holds (64 TiB)", disk, size)
	}
	ranges, err := dataBlocks(f, size)
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", disk, err)
	}
	res = &UploadResult{Blocks: blocksOf(size)}
	total := countBlocks(ranges)

	token := opt.ClientToken
	if token == "" {
		token = randomToken()
	}
	in := &ebs.StartSnapshotInput{
		VolumeSize:  aws.Int64(volumeGiB(size)),
		ClientToken: aws.String(token),
		Timeout:     aws.Int32(timeoutMinutes(opt.Timeout)),
		Tags:        ebsTags(opt.Tags),
	}
	if opt.Description != "" {
		in.Description = aws.String(opt.Description)
	}
	if opt.Encrypted || opt.KMSKeyARN != "" {
		in.Encrypted = aws.Bool(true)
		if opt.KMSKeyARN != "" {
			in.KmsKeyArn = aws.String(opt.KMSKeyARN)
		}
	}
	started, err := call(ctx, p, "StartSnapshot", "for "+disk, c.region, func(ctx context.Context) (*ebs.StartSnapshotOutput, error) {
		return c.ebs.StartSnapshot(ctx, in)
	})
	if err != nil {
		if errorCode(err) == "" {
			// No answer (cancelled, connection lost): the snapshot may exist. The same token returns it.
			if derr := abandonStart(ctx, c, in, p); derr != nil {
				err = fmt.Errorf("%w; a snapshot it may have started was not deleted: %v", err, derr)
			}
		}
		return nil, err
	}
	snap := aws.ToString(started.SnapshotId)
	switch started.Status {
	case ebstypes.StatusPending, "":
	case ebstypes.StatusError:
		// The token's snapshot was cancelled by EBS (its timeout passed): it cannot be resumed.
		derr := deleteSnapshot(ctx, c, snap, p)
		return nil, &OpError{Op: "StartSnapshot", Resource: "for " + disk, Region: c.region,
			Err: fmt.Errorf("client token %q returned %s in state error, which cannot be resumed (deleted: %v); use another token", token, snap, derr == nil)}
	default:
		return nil, &OpError{Op: "StartSnapshot", Resource: "for " + disk, Region: c.region,
			Err: fmt.Errorf("client token %q returned %s in state %s: that token belongs to a finished upload; use another", token, snap, started.Status)}
	}
	defer func() {
		if err == nil {
			return
		}
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if derr := deleteSnapshot(cctx, c, snap, p); derr != nil {
			err = fmt.Errorf("%w; the pending snapshot was not deleted (EBS cancels it %d minutes after its last block; `gpuforge ami gc` removes it): %v", err, timeoutMinutes(opt.Timeout), derr)
		}
	}()

	// Workers read blocks with ReadAt (no shared offset) into buffers of their own.
	var (
		mu       sync.Mutex // guards digests and serialises Progress calls
		digests  []blockDigest
		done     atomic.Int64
		sent     atomic.Int64
		workers  = opt.Workers
		indexes  = make(chan int64)
		g, gctx  = errgroup.WithContext(ctx)
		progress = func() {
			n := done.Add(1)
			if opt.Progress != nil {
				mu.Lock()
				opt.Progress(n, total)
				mu.Unlock()
			}
		}
	)
	if workers <= 0 {
		workers = 64
	}
	g.Go(func() error {
		defer close(indexes)
		for _, r := range ranges {
			for i := r.First; i < r.End; i++ {
				select {
				case indexes <- i:
				case <-gctx.Done():
					return nil
				}
			}
		}
		return nil
	})
	for range min(int64(workers), max(total, 1)) {
		g.Go(func() error {
			buf := make([]byte, BlockSize)
			for idx := range indexes {
				if err := readBlock(f, size, idx, buf); err != nil {
					return fmt.Errorf("upload %s: read block %d: %w", disk, idx, err)
				}
				if isZero(buf) {
					progress()
					continue
				}
				sum := sha256.Sum256(buf)
				checksum := base64.StdEncoding.EncodeToString(sum[:])
				pct := int32(100 * done.Load() / total)
				_, err := call(gctx, p, "PutSnapshotBlock", fmt.Sprintf("%s block %d", snap, idx), c.region, func(ctx context.Context) (*ebs.PutSnapshotBlockOutput, error) {
					sent.Add(BlockSize)
					return c.ebs.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{
						SnapshotId:        aws.String(snap),
						BlockIndex:        aws.Int32(int32(idx)),
						BlockData:         bytes.NewReader(buf),
						DataLength:        aws.Int32(BlockSize),
						Checksum:          aws.String(checksum),
						ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
						Progress:          aws.Int32(pct),
					})
				})
				if err != nil {
					return err
				}
				mu.Lock()
				digests = append(digests, blockDigest{Index: idx, Sum: sum})
				mu.Unlock()
				progress()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("upload %s to %s: %w", disk, snap, context.Cause(ctx))
		}
		return nil, err
	}
	res.ZeroBlocks = res.Blocks - int64(len(digests))
	res.BytesSent = sent.Load()

	cin := &ebs.CompleteSnapshotInput{
		SnapshotId:         aws.String(snap),
		ChangedBlocksCount: aws.Int32(int32(len(digests))),
	}
	if len(digests) > 0 {
		cin.Checksum = aws.String(linearChecksum(digests))
		cin.ChecksumAlgorithm = ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256
		cin.ChecksumAggregationMethod = ebstypes.ChecksumAggregationMethodChecksumAggregationLinear
	}
	completed, err := call(ctx, p, "CompleteSnapshot", fmt.Sprintf("%s (%d blocks)", snap, len(digests)), c.region, func(ctx context.Context) (*ebs.CompleteSnapshotOutput, error) {
		return c.ebs.CompleteSnapshot(ctx, cin)
	})
	if err != nil {
		return nil, err
	}
	if completed.Status == ebstypes.StatusError {
		return nil, &OpError{Op: "CompleteSnapshot", Resource: snap, Region: c.region, Err: errors.New("the snapshot is in state error")}
	}
	if err := waitSnapshotCompleted(ctx, c, snap, opt.WaitTimeout, p); err != nil {
		return nil, err
	}
	res.SnapshotID = snap
	res.Retries = retries.Load()
	res.Took = time.Since(start)
	return res, nil
}

// abandonStart deletes the snapshot a StartSnapshot call that got no answer may have started: it asks again
// with the same client token, which returns that snapshot if there is one (or starts one), and deletes it.
func abandonStart(ctx context.Context, c *clients, in *ebs.StartSnapshotInput, p retryPolicy) error {
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	p.Attempts = min(p.Attempts, 3)
	out, err := call(cctx, p, "StartSnapshot", "(cleanup) token "+aws.ToString(in.ClientToken), c.region, func(ctx context.Context) (*ebs.StartSnapshotOutput, error) {
		return c.ebs.StartSnapshot(ctx, in)
	})
	if err != nil {
		return err
	}
	return deleteSnapshot(cctx, c, aws.ToString(out.SnapshotId), p)
}

// waitSnapshotCompleted waits for snap to be completed (ec2 DescribeSnapshots); state error fails.
func waitSnapshotCompleted(ctx context.Context, c *clients, snap string, timeout time.Duration, p retryPolicy) error {
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	return poll(ctx, timeout, "wait for "+snap+" to be completed", func(ctx context.Context) (bool, string, error) {
		out, err := call(ctx, p, "DescribeSnapshots", snap, c.region, func(ctx context.Context) (*ec2.DescribeSnapshotsOutput, error) {
			return c.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
		})
		if err != nil {
			if errorCode(err) == "InvalidSnapshot.NotFound" {
				return false, "not found yet", nil // EC2 sees an EBS direct snapshot a little later
			}
			return false, "", err
		}
		if len(out.Snapshots) == 0 {
			return false, "not found yet", nil
		}
		s := out.Snapshots[0]
		switch s.State {
		case ec2types.SnapshotStateCompleted:
			return true, string(s.State), nil
		case ec2types.SnapshotStateError:
			return false, "", &OpError{Op: "DescribeSnapshots", Resource: snap, Region: c.region, Err: fmt.Errorf("snapshot in state error: %s", aws.ToString(s.StateMessage))}
		}
		return false, fmt.Sprintf("%s %s", s.State, aws.ToString(s.Progress)), nil
	})
}

// deleteSnapshot deletes snap; one already gone counts as deleted.
func deleteSnapshot(ctx context.Context, c *clients, snap string, p retryPolicy) error {
	_, err := call(ctx, p, "DeleteSnapshot", snap, c.region, func(ctx context.Context) (*ec2.DeleteSnapshotOutput, error) {
		return c.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)})
	})
	if errorCode(err) == "InvalidSnapshot.NotFound" {
		return nil
	}
	return err
}

func ebsTags(m map[string]string) []ebstypes.Tag {
	var out []ebstypes.Tag
	for _, k := range sortedKeys(m) {
		out = append(out, ebstypes.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}
