package ami

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"
)

// UploadViaImport is the fallback for accounts that cannot use the EBS direct APIs: it uploads the raw disk
// to s3://bucket/key (one PutObject up to 5 GiB, a multipart upload above), has EC2 import it as a snapshot
// (ImportSnapshot, format RAW), waits for the import, tags the snapshot with opt.Tags and deletes the
// object. On failure or cancellation it cancels the import task, deletes a snapshot it made, aborts the
// multipart upload and deletes the object, on a context of its own.
//
// In real AWS, ImportSnapshot needs the service role "vmimport" (trusting vmie.amazonaws.com, allowed to
// read the bucket and, for encrypted snapshots, to use the KMS key): see "Required service role" in the
// VM Import/Export user guide. It is slower than UploadSnapshot (the whole disk, zeros included, goes through
// S3, and the import itself takes minutes) and cannot skip the zero blocks.
//
// It uses opt's Tags, Description, Encrypted, KMSKeyARN, ClientToken, Progress (in 512 KiB units of bytes
// uploaded to S3), Workers (parts sent at once, at most 16) and WaitTimeout (default 60 minutes here).
func UploadViaImport(ctx context.Context, cfg aws.Config, disk, bucket, key string, opt UploadOptions) (*UploadResult, error) {
	return uploadViaImport(ctx, newClients(cfg, ""), disk, bucket, key, opt, defaultRetry)
}

// putObjectMax is the largest object one PutObject takes; multipartPart the part size above it.
var (
	putObjectMax  int64 = 5 << 30
	multipartPart int64 = 64 << 20
)

func uploadViaImport(ctx context.Context, c *clients, disk, bucket, key string, opt UploadOptions, p retryPolicy) (res *UploadResult, err error) {
	start := time.Now()
	var retries atomic.Int64
	p.Retries = &retries
	f, size, err := openDisk("import", disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	object := "s3://" + bucket + "/" + key

	var (
		uploaded bool   // the object exists
		taskID   string // the import task, once started
		snap     string // the snapshot, once known
		finished bool   // the import completed
	)
	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		var errs []error
		if err != nil && taskID != "" && !finished {
			_, cerr := call(cctx, p, "CancelImportTask", taskID, c.region, func(ctx context.Context) (*ec2.CancelImportTaskOutput, error) {
				return c.ec2.CancelImportTask(ctx, &ec2.CancelImportTaskInput{ImportTaskId: aws.String(taskID)})
			})
			if cerr != nil && errorCode(cerr) != "InvalidConversionTaskId.Malformed" {
				errs = append(errs, cerr)
			}
		}
		if err != nil && snap != "" {
			if derr := deleteSnapshot(cctx, c, snap, p); derr != nil {
				errs = append(errs, derr)
			}
		}
		if uploaded {
			if _, derr := call(cctx, p, "DeleteObject", object, c.region, func(ctx context.Context) (*s3.DeleteObjectOutput, error) {
				return c.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
			}); derr != nil {
				errs = append(errs, derr)
			}
		}
		if len(errs) > 0 {
			cerr := fmt.Errorf("cleanup of the import left something behind: %w", errors.Join(errs...))
			if err == nil {
				err = cerr
				res = nil
			} else {
				err = fmt.Errorf("%w; %w", err, cerr)
			}
		}
	}()

	var (
		sent atomic.Int64
		mu   sync.Mutex // serialises Progress calls
	)
	progress := func(n int64) {
		done := sent.Add(n)
		if opt.Progress != nil {
			mu.Lock()
			opt.Progress(done/BlockSize, blocksOf(size))
			mu.Unlock()
		}
	}
	uploaded = true // from here on the object may exist: delete it whatever happens
	if size <= putObjectMax {
		_, err = call(ctx, p, "PutObject", object, c.region, func(ctx context.Context) (*s3.PutObjectOutput, error) {
			return c.s3.PutObject(ctx, &s3.PutObjectInput{
				Bucket:        aws.String(bucket),
				Key:           aws.String(key),
				Body:          io.NewSectionReader(f, 0, size),
				ContentLength: aws.Int64(size),
			})
		})
		if err != nil {
			return nil, err
		}
		progress(size)
	} else if err = multipartUpload(ctx, c, f, size, bucket, key, min(max(opt.Workers, 1), 16), p, progress); err != nil {
		return nil, err
	}

	token := opt.ClientToken
	if token == "" {
		token = randomToken()
	}
	in := &ec2.ImportSnapshotInput{
		ClientToken: aws.String(token),
		Description: aws.String(or(opt.Description, "gpuforge import of "+disk)),
		DiskContainer: &ec2types.SnapshotDiskContainer{
			Format:     aws.String("RAW"),
			UserBucket: &ec2types.UserBucket{S3Bucket: aws.String(bucket), S3Key: aws.String(key)},
		},
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImportSnapshotTask, Tags: ec2Tags(opt.Tags)}},
	}
	if len(opt.Tags) == 0 {
		in.TagSpecifications = nil
	}
	if opt.Encrypted || opt.KMSKeyARN != "" {
		in.Encrypted = aws.Bool(true)
		if opt.KMSKeyARN != "" {
			in.KmsKeyId = aws.String(opt.KMSKeyARN)
		}
	}
	out, err := call(ctx, p, "ImportSnapshot", object, c.region, func(ctx context.Context) (*ec2.ImportSnapshotOutput, error) {
		return c.ec2.ImportSnapshot(ctx, in)
	})
	if err != nil {
		return nil, err
	}
	taskID = aws.ToString(out.ImportTaskId)

	timeout := opt.WaitTimeout
	if timeout <= 0 {
		timeout = 60 * time.Minute
	}
	err = poll(ctx, timeout, "wait for import "+taskID+" of "+object, func(ctx context.Context) (bool, string, error) {
		out, err := call(ctx, p, "DescribeImportSnapshotTasks", taskID, c.region, func(ctx context.Context) (*ec2.DescribeImportSnapshotTasksOutput, error) {
			return c.ec2.DescribeImportSnapshotTasks(ctx, &ec2.DescribeImportSnapshotTasksInput{ImportTaskIds: []string{taskID}})
		})
		if err != nil {
			return false, "", err
		}
		if len(out.ImportSnapshotTasks) == 0 || out.ImportSnapshotTasks[0].SnapshotTaskDetail == nil {
			return false, "not found yet", nil
		}
		d := out.ImportSnapshotTasks[0].SnapshotTaskDetail
		if id := aws.ToString(d.SnapshotId); id != "" {
			snap = id
		}
		status, msg := aws.ToString(d.Status), aws.ToString(d.StatusMessage)
		switch status {
		case "completed":
			return true, status, nil
		case "deleting", "deleted":
			return false, "", &OpError{Op: "ImportSnapshot", Resource: taskID + " of " + object, Region: c.region, Err: fmt.Errorf("import %s: %s", status, msg)}
		}
		return false, fmt.Sprintf("%s %s %s%%", status, msg, aws.ToString(d.Progress)), nil
	})
	if err != nil {
		return nil, err
	}
	finished = true
	if snap == "" {
		return nil, &OpError{Op: "DescribeImportSnapshotTasks", Resource: taskID, Region: c.region, Err: errors.New("import completed without a snapshot id")}
	}
	// ImportSnapshot tags the task, not the snapshot it makes.
	if len(opt.Tags) > 0 {
		if _, err = call(ctx, p, "CreateTags", snap, c.region, func(ctx context.Context) (*ec2.CreateTagsOutput, error) {
			return c.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{snap}, Tags: ec2Tags(opt.Tags)})
		}); err != nil {
			return nil, err
		}
	}
	if err = waitSnapshotCompleted(ctx, c, snap, timeout, p); err != nil {
		return nil, err
	}
	return &UploadResult{SnapshotID: snap, Blocks: blocksOf(size), BytesSent: sent.Load(), Retries: retries.Load(), Took: time.Since(start)}, nil
}

// multipartUpload uploads f (size bytes) to bucket/key in parts, workers at once; it aborts the upload on
// failure.
func multipartUpload(ctx context.Context, c *clients, f *os.File, size int64, bucket, key string, workers int, p retryPolicy, progress func(int64)) (err error) {
	object := "s3://" + bucket + "/" + key
	part := max(multipartPart, (size+9999)/10000) // S3 allows 10,000 parts
	created, err := call(ctx, p, "CreateMultipartUpload", object, c.region, func(ctx context.Context) (*s3.CreateMultipartUploadOutput, error) {
		return c.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	})
	if err != nil {
		return err
	}
	uploadID := created.UploadId
	defer func() {
		if err == nil {
			return
		}
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if _, aerr := call(cctx, p, "AbortMultipartUpload", object, c.region, func(ctx context.Context) (*s3.AbortMultipartUploadOutput, error) {
			return c.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key), UploadId: uploadID})
		}); aerr != nil {
			err = fmt.Errorf("%w; %w", err, aerr)
		}
	}()
	n := int((size + part - 1) / part)
	parts := make([]s3types.CompletedPart, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for i := range n {
		g.Go(func() error {
			off := int64(i) * part
			length := min(part, size-off)
			num := int32(i + 1)
			out, err := call(gctx, p, "UploadPart", fmt.Sprintf("%s part %d", object, num), c.region, func(ctx context.Context) (*s3.UploadPartOutput, error) {
				return c.s3.UploadPart(ctx, &s3.UploadPartInput{
					Bucket: aws.String(bucket), Key: aws.String(key), UploadId: uploadID, PartNumber: aws.Int32(num),
					Body: io.NewSectionReader(f, off, length), ContentLength: aws.Int64(length),
				})
			})
			if err != nil {
				return err
			}
			parts[i] = s3types.CompletedPart{PartNumber: aws.Int32(num), ETag: out.ETag}
			progress(length)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	_, err = call(ctx, p, "CompleteMultipartUpload", object, c.region, func(ctx context.Context) (*s3.CompleteMultipartUploadOutput, error) {
		return c.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: aws.String(bucket), Key: aws.String(key), UploadId: uploadID,
			MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts},
		})
	})
	return err
}
