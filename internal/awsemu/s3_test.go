package awsemu

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

func TestS3Objects(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "eu-central-1", withAttempts(1))
	ctx := context.Background()
	if _, err := cl.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("images"), Key: aws.String("k"), Body: bytes.NewReader([]byte("x"))}); apiCode(err) != "NoSuchBucket" || httpStatus(err) != 404 {
		t.Errorf("PutObject to a missing bucket: %v, want NoSuchBucket", err)
	}
	if _, err := cl.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("images"),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraintEuCentral1}}); err != nil {
		t.Fatal(err)
	}
	body := []byte("raw disk bytes")
	if _, err := cl.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("images"), Key: aws.String("disk.raw"), Body: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}
	h, err := cl.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("images"), Key: aws.String("disk.raw")})
	if err != nil || aws.ToInt64(h.ContentLength) != int64(len(body)) {
		t.Fatalf("HeadObject: %v %+v", err, h)
	}
	var nf *s3types.NotFound
	if _, err := cl.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("images"), Key: aws.String("nope")}); !errors.As(err, &nf) {
		t.Errorf("HeadObject of a missing key: %v, want NotFound", err)
	}
	var nk *s3types.NoSuchKey
	if _, err := cl.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("images"), Key: aws.String("nope")}); !errors.As(err, &nk) {
		t.Errorf("GetObject of a missing key: %v, want NoSuchKey", err)
	}
	// The bucket lives in its Region.
	if _, err := clientsFor(s, "us-east-1", withAttempts(1)).s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("images"), Key: aws.String("disk.raw")}); apiCode(err) != "AuthorizationHeaderMalformed" {
		t.Errorf("request signed for another Region: %v, want AuthorizationHeaderMalformed", err)
	}

	// A multipart upload: parts but the last are at least 5 MiB.
	rng := rand.New(rand.NewPCG(15, 16))
	big := make([]byte, 6<<20+123)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	mp, err := cl.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("images"), Key: aws.String("big.raw")})
	if err != nil {
		t.Fatal(err)
	}
	var parts []s3types.CompletedPart
	for i, chunk := range [][]byte{big[:5<<20], big[5<<20:]} {
		up, err := cl.s3.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("images"), Key: aws.String("big.raw"), UploadId: mp.UploadId,
			PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(chunk)})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, s3types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: up.ETag})
	}
	if inv := s.Inventory(); len(inv.Uploads) != 1 {
		t.Errorf("uploads in progress = %+v", inv.Uploads)
	}
	if _, err := cl.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("images"), Key: aws.String("big.raw"), UploadId: mp.UploadId,
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts}}); err != nil {
		t.Fatal(err)
	}
	got, err := cl.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("images"), Key: aws.String("big.raw")})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if !bytes.Equal(b, big) {
		t.Errorf("multipart object differs (%d bytes, want %d)", len(b), len(big))
	}
	// A part too small in the middle is refused; an abandoned upload is aborted.
	mp2, _ := cl.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("images"), Key: aws.String("small")})
	var small []s3types.CompletedPart
	for i := int32(1); i <= 2; i++ {
		up, err := cl.s3.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("images"), Key: aws.String("small"), UploadId: mp2.UploadId,
			PartNumber: aws.Int32(i), Body: bytes.NewReader([]byte("tiny"))})
		if err != nil {
			t.Fatal(err)
		}
		small = append(small, s3types.CompletedPart{PartNumber: aws.Int32(i), ETag: up.ETag})
	}
	if _, err := cl.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("images"), Key: aws.String("small"), UploadId: mp2.UploadId,
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: small}}); apiCode(err) != "EntityTooSmall" {
		t.Errorf("small part: %v, want EntityTooSmall", err)
	}
	if _, err := cl.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String("images"), Key: aws.String("small"), UploadId: mp2.UploadId}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"disk.raw", "big.raw"} {
		if _, err := cl.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("images"), Key: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
	}
	if inv := s.Inventory(); len(inv.Objects)+len(inv.Uploads) != 0 {
		t.Errorf("leftovers: %+v", inv)
	}
}

func TestImportSnapshotFromS3(t *testing.T) {
	var clock testClock
	s := startServer(t, WithCopyDelay(5*time.Minute), withClock(clock.now))
	cl := clientsFor(s, "us-east-1", withAttempts(1))
	ctx := context.Background()
	if _, err := cl.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("imports")}); err != nil {
		t.Fatal(err)
	}
	// A 3.25 MiB raw disk: data, a block of zeros, data, and a partial last block.
	rng := rand.New(rand.NewPCG(17, 18))
	disk := make([]byte, 6*blockSize+blockSize/2)
	for i := range disk {
		if i/blockSize != 1 {
			disk[i] = byte(rng.Uint32())
		}
	}
	if _, err := cl.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("imports"), Key: aws.String("disk.raw"), Body: bytes.NewReader(disk)}); err != nil {
		t.Fatal(err)
	}
	imp, err := cl.ec2.ImportSnapshot(ctx, &ec2.ImportSnapshotInput{Description: aws.String("gpu-node disk"),
		DiskContainer: &ec2types.SnapshotDiskContainer{Format: aws.String("RAW"),
			UserBucket: &ec2types.UserBucket{S3Bucket: aws.String("imports"), S3Key: aws.String("disk.raw")}}})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(imp.SnapshotTaskDetail.Status) != "active" {
		t.Errorf("ImportSnapshot status %s, want active", aws.ToString(imp.SnapshotTaskDetail.Status))
	}
	task := aws.ToString(imp.ImportTaskId)
	if len(s.Inventory().Snapshots) != 0 {
		t.Error("the snapshot appeared before the task completed")
	}
	d, err := cl.ec2.DescribeImportSnapshotTasks(ctx, &ec2.DescribeImportSnapshotTasksInput{ImportTaskIds: []string{task}})
	if err != nil {
		t.Fatal(err)
	}
	if det := d.ImportSnapshotTasks[0].SnapshotTaskDetail; aws.ToString(det.Status) != "active" || det.SnapshotId != nil {
		t.Errorf("task before the delay: %s %s", aws.ToString(det.Status), aws.ToString(det.SnapshotId))
	}
	clock.advance(5 * time.Minute)
	d, err = cl.ec2.DescribeImportSnapshotTasks(ctx, &ec2.DescribeImportSnapshotTasksInput{ImportTaskIds: []string{task}})
	if err != nil {
		t.Fatal(err)
	}
	det := d.ImportSnapshotTasks[0].SnapshotTaskDetail
	snap := aws.ToString(det.SnapshotId)
	if aws.ToString(det.Status) != "completed" || snap == "" {
		t.Fatalf("task after the delay: %s %s %s", aws.ToString(det.Status), aws.ToString(det.StatusMessage), snap)
	}
	path := filepath.Join(t.TempDir(), "import.raw")
	if err := s.WriteSnapshot("us-east-1", snap, path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(disk))
	if _, err := io.ReadFull(f, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, disk) {
		t.Error("the imported snapshot differs from the object")
	}
	inv := s.Inventory()
	if len(inv.Snapshots) != 1 || inv.Snapshots[0].VolumeSize != 1 || inv.Snapshots[0].BlockCount != 6 {
		t.Errorf("imported snapshot = %+v (the block of zeros stays a hole)", inv.Snapshots)
	}

	// Only RAW converts; another format ends deleted with a ClientError.
	vmdk, err := cl.ec2.ImportSnapshot(ctx, &ec2.ImportSnapshotInput{DiskContainer: &ec2types.SnapshotDiskContainer{Format: aws.String("VMDK"),
		UserBucket: &ec2types.UserBucket{S3Bucket: aws.String("imports"), S3Key: aws.String("disk.raw")}}})
	if err != nil {
		t.Fatal(err)
	}
	clock.advance(5 * time.Minute)
	d, err = cl.ec2.DescribeImportSnapshotTasks(ctx, &ec2.DescribeImportSnapshotTasksInput{ImportTaskIds: []string{aws.ToString(vmdk.ImportTaskId)}})
	if err != nil {
		t.Fatal(err)
	}
	if det := d.ImportSnapshotTasks[0].SnapshotTaskDetail; aws.ToString(det.Status) != "deleted" {
		t.Errorf("VMDK task: %s %s, want deleted", aws.ToString(det.Status), aws.ToString(det.StatusMessage))
	}
}
