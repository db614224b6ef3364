package awsemu

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	cl := clientsFor(s, "us-east-1", withAttempts(1))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(13, 14))
	done := map[int32][]byte{0: randomBlock(rng), 9: randomBlock(rng)}
	snap := uploadSnapshot(t, cl, 1, done)
	ami := registerTestImage(t, cl, "survivor", snap)
	if _, err := cl.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/survivor"), Value: aws.String(ami),
		Type: ssmtypes.ParameterTypeString, DataType: aws.String("aws:ec2:image")}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("keep")}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("keep"), Key: aws.String("a/b"), Body: strings.NewReader("payload")}); err != nil {
		t.Fatal(err)
	}
	// A snapshot half uploaded when the server stops.
	partial := map[int32][]byte{1: randomBlock(rng), 2: randomBlock(rng)}
	pending := startOne(t, cl)
	putBlocks(t, cl, pending, partial)

	before := s.Inventory()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	after := s2.Inventory()
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("Inventory changed across the restart:\nbefore %+v\nafter  %+v", before, after)
	}
	cl = clientsFor(s2, "us-east-1", withAttempts(1))

	// The completed snapshot reads back.
	list, err := cl.ebs.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(snap)})
	if err != nil || len(list.Blocks) != 2 {
		t.Fatalf("ListSnapshotBlocks: %v %+v", err, list)
	}
	got, err := cl.ebs.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(snap), BlockIndex: aws.Int32(9), BlockToken: list.Blocks[1].BlockToken})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(got.BlockData)
	if !bytes.Equal(data, done[9]) {
		t.Error("block 9 changed across the restart")
	}
	// The pending snapshot takes more blocks and completes with all of them.
	partial[5] = randomBlock(rng)
	putBlocks(t, cl, pending, map[int32][]byte{5: partial[5]})
	if _, err := cl.ebs.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{SnapshotId: aws.String(pending), ChangedBlocksCount: aws.Int32(3),
		Checksum: aws.String(linear(partial, []int32{1, 2, 5})), ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear}); err != nil {
		t.Fatalf("CompleteSnapshot after the restart: %v", err)
	}
	obj, err := cl.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("keep"), Key: aws.String("a/b")})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	if string(b) != "payload" {
		t.Errorf("object = %q", b)
	}
}
