package ami

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/gpuforge/gpuforge/internal/awsemu"
	"github.com/gpuforge/gpuforge/pipeline"
	"github.com/gpuforge/gpuforge/recipes"
)

func TestMain(m *testing.M) {
	pollFirst, pollMax = 20*time.Millisecond, 200*time.Millisecond
	snapshotInUseWait = 5 * time.Second
	os.Exit(m.Run())
}

// emu starts an awsemu server and returns it with an aws.Config pointed at it.
func emu(t *testing.T, opts ...awsemu.Option) (*awsemu.Server, aws.Config) {
	t.Helper()
	// Keep the developer's AWS configuration out of the tests.
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	srv, err := awsemu.Start(filepath.Join(dir, "emu"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg, err := LoadConfig(context.Background(), Config{
		Endpoint:    srv.URL(),
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(awsemu.DefaultAccessKeyID, awsemu.DefaultSecretAccessKey, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv, cfg
}

// testDisk is a 1 GiB sparse raw disk with a few MiB of random data at scattered offsets: an aligned "boot"
// region at the start, aligned runs in the middle, and small unaligned pieces (which cost a whole block).
type testDisk struct {
	Path string
	Size int64
	// NonZero is the bytes that are not zero; NonZeroBlockBytes the bytes of the 512 KiB blocks that are
	// not all zero, what the EBS direct APIs must send at least.
	NonZero, NonZeroBlockBytes int64
}

func makeDisk(t *testing.T, size int64) testDisk {
	t.Helper()
	random := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	at := func(fraction float64, plus int64) int64 {
		return int64(float64(size)*fraction)/BlockSize*BlockSize + plus
	}
	data := map[int64][]byte{
		0:                               random(3 << 20), // GPT, ESP
		at(0.1, 0):                      random(1 << 20),
		at(0.33, BlockSize):             random(BlockSize),
		at(0.6, 3*BlockSize):            random(2 << 20),
		at(0.77, 12345):                 random(6000), // within one block
		size - 4096:                     random(4096), // the backup GPT
		at(0.88, BlockSize/2):           make([]byte, 1<<20),
		at(0.88, 2*BlockSize+1000):      random(100),
		at(0.95, BlockSize-BlockSize/4): random(BlockSize / 2), // straddles two blocks
	}
	d := testDisk{Path: writeSparse(t, size, data), Size: size}
	// Count from the file, block by block.
	f, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, BlockSize)
	for off := int64(0); off < size; off += BlockSize {
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if !isZero(buf[:n]) {
			d.NonZeroBlockBytes += BlockSize
			for _, c := range buf[:n] {
				if c != 0 {
					d.NonZero++
				}
			}
		}
	}
	return d
}

// sameContent compares the disk with the snapshot awsemu holds, rebuilt into a file.
func sameContent(t *testing.T, srv *awsemu.Server, region, snap string, d testDisk) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "back.raw")
	if err := srv.WriteSnapshot(region, snap, out); err != nil {
		t.Fatal(err)
	}
	a, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fi, _ := b.Stat()
	if fi.Size() != volumeGiB(d.Size)<<30 {
		t.Errorf("snapshot rebuilt to %d bytes, want the volume size %d", fi.Size(), volumeGiB(d.Size)<<30)
	}
	ba, bb := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); off < d.Size; off += int64(len(ba)) {
		n, _ := a.ReadAt(ba, off)
		m, _ := b.ReadAt(bb[:n], off)
		if m != n || !bytes.Equal(ba[:n], bb[:n]) {
			t.Fatalf("snapshot %s differs from the disk in the 4 MiB at %d", snap, off)
		}
	}
}

func TestUploadSnapshotRoundTrip(t *testing.T) {
	srv, cfg := emu(t)
	d := makeDisk(t, 1<<30)
	var mu sync.Mutex
	var calls, lastDone, lastTotal int64
	monotonic := true
	start := time.Now()
	res, err := UploadSnapshot(context.Background(), cfg, d.Path, UploadOptions{
		Tags:        map[string]string{BuildIDTag: "rt", "team": "ml"},
		Description: "round trip",
		Progress: func(done, total int64) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			monotonic = monotonic && done > lastDone
			lastDone, lastTotal = done, total
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	written := res.Blocks - res.ZeroBlocks
	st := srv.Stats()
	t.Logf("disk %d MiB, %d non-zero bytes in %d non-zero blocks (%d bytes); sent %d bytes in %d PutSnapshotBlock (%.4f × non-zero block bytes, %.4f × non-zero bytes), %d retries, %s",
		d.Size>>20, d.NonZero, d.NonZeroBlockBytes/BlockSize, d.NonZeroBlockBytes, res.BytesSent, st.Requests["PutSnapshotBlock"],
		float64(res.BytesSent)/float64(d.NonZeroBlockBytes), float64(res.BytesSent)/float64(d.NonZero), res.Retries, took)
	if written*BlockSize != d.NonZeroBlockBytes || res.Blocks != 2048 {
		t.Errorf("wrote %d of %d blocks, want %d non-zero blocks of 2048", written, res.Blocks, d.NonZeroBlockBytes/BlockSize)
	}
	if float64(res.BytesSent) > 1.01*float64(d.NonZeroBlockBytes) || st.BlockBytes != res.BytesSent {
		t.Errorf("sent %d bytes (server counted %d), want ≤ 1.01 × %d", res.BytesSent, st.BlockBytes, d.NonZeroBlockBytes)
	}
	if !monotonic || lastDone != lastTotal || lastTotal > 40 || calls != lastTotal {
		t.Errorf("progress: %d calls, last %d/%d, monotonic %v; want one call per data block, ending at total (a few dozen blocks, not 2048)", calls, lastDone, lastTotal, monotonic)
	}
	sameContent(t, srv, "us-east-1", res.SnapshotID, d)
	inv := srv.Inventory()
	if len(inv.Snapshots) != 1 || inv.Snapshots[0].State != "completed" || inv.Snapshots[0].Tags[BuildIDTag] != "rt" ||
		inv.Snapshots[0].Tags["team"] != "ml" || inv.Snapshots[0].VolumeSize != 1 || inv.Snapshots[0].Description != "round trip" {
		t.Errorf("inventory: %+v", inv.Snapshots)
	}
}

func TestUploadSnapshotSurvivesFaults(t *testing.T) {
	srv, cfg := emu(t, awsemu.WithCompleteDelay(100*time.Millisecond))
	d := makeDisk(t, 1<<30)
	srv.Inject(awsemu.Fault{Op: "StartSnapshot", Kind: awsemu.FaultThrottle, Count: 2})
	srv.Inject(awsemu.Fault{Op: "PutSnapshotBlock", Kind: awsemu.FaultThrottle, Rate: 0.3, Seed: 1})
	srv.Inject(awsemu.Fault{Op: "PutSnapshotBlock", Kind: awsemu.FaultServerError, Rate: 0.15, Seed: 2})
	srv.Inject(awsemu.Fault{Op: "PutSnapshotBlock", Kind: awsemu.FaultReset, Rate: 0.1, Seed: 3})
	srv.Inject(awsemu.Fault{Op: "CompleteSnapshot", Kind: awsemu.FaultServerError, Count: 1})
	srv.Inject(awsemu.Fault{Op: "DescribeSnapshots", Kind: awsemu.FaultThrottle, Count: 2})
	start := time.Now()
	res, err := UploadSnapshot(context.Background(), cfg, d.Path, UploadOptions{Workers: 8})
	if err != nil {
		t.Fatal(err)
	}
	st := srv.Stats()
	t.Logf("under faults: %d PutSnapshotBlock requests (%d rejected) for %d blocks, %d retries, %d bytes sent, %s",
		st.Requests["PutSnapshotBlock"], st.Rejected["PutSnapshotBlock"], res.Blocks-res.ZeroBlocks, res.Retries, res.BytesSent, time.Since(start))
	if res.Retries < 5 {
		t.Errorf("only %d retries under a throttling storm", res.Retries)
	}
	sameContent(t, srv, "us-east-1", res.SnapshotID, d)
}

func TestUploadSnapshotAccessDeniedFailsAtOnce(t *testing.T) {
	srv, cfg := emu(t)
	d := makeDisk(t, 1<<30)
	srv.Inject(awsemu.Fault{Op: "PutSnapshotBlock", Kind: awsemu.FaultAccessDenied})
	start := time.Now()
	_, err := UploadSnapshot(context.Background(), cfg, d.Path, UploadOptions{Workers: 4})
	took := time.Since(start)
	if err == nil {
		t.Fatal("upload succeeded without PutSnapshotBlock permission")
	}
	t.Logf("error after %s: %v", took, err)
	st := srv.Stats()
	if n := st.Requests["PutSnapshotBlock"]; n > 4 {
		t.Errorf("%d PutSnapshotBlock requests; want at most one per worker, none retried", n)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "PutSnapshotBlock snap-") || !strings.Contains(msg, " block ") || !strings.Contains(msg, "AccessDeniedException") {
		t.Errorf("error %q does not name the operation, snapshot and block", msg)
	}
	var oe *OpError
	if !errors.As(err, &oe) || oe.Attempts != 1 {
		t.Errorf("error %#v: want an *OpError of 1 attempt", err)
	}
	if inv := srv.Inventory(); len(inv.Snapshots) != 0 {
		t.Errorf("the pending snapshot was left: %+v", inv.Snapshots)
	}

	srv.ClearFaults()
	srv.Inject(awsemu.Fault{Op: "StartSnapshot", Kind: awsemu.FaultAccessDenied})
	_, err = UploadSnapshot(context.Background(), cfg, d.Path, UploadOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "StartSnapshot for "+d.Path+": AccessDeniedException") {
		t.Errorf("StartSnapshot denied: %v", err)
	}
	if n := srv.Stats().Requests["StartSnapshot"]; n != 2 {
		t.Errorf("%d StartSnapshot requests in all, want 2 (one per upload, none retried)", n)
	}
}

func TestUploadSnapshotCancelled(t *testing.T) {
	srv, cfg := emu(t)
	d := makeDisk(t, 1<<30)
	srv.Inject(awsemu.Fault{Op: "PutSnapshotBlock", Kind: awsemu.FaultLatency, Latency: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := UploadSnapshot(ctx, cfg, d.Path, UploadOptions{Workers: 2, Progress: func(done, _ int64) {
		if done == 3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if inv := srv.Inventory(); len(inv.Snapshots) != 0 {
		t.Errorf("the cancelled upload left %+v", inv.Snapshots)
	}
}

func TestUploadSnapshotResumesWithClientToken(t *testing.T) {
	srv, cfg := emu(t)
	d := makeDisk(t, 1<<30)
	// A first run starts the snapshot, writes a few blocks and dies.
	c := newClients(cfg, "")
	first, err := c.ebs.StartSnapshot(context.Background(), &ebs.StartSnapshotInput{
		VolumeSize: aws.Int64(1), ClientToken: aws.String("build-1-disk-abc"), Timeout: aws.Int32(60),
		Tags: []ebstypes.Tag{{Key: aws.String(BuildIDTag), Value: aws.String("b1")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := UploadSnapshot(context.Background(), cfg, d.Path, UploadOptions{
		ClientToken: "build-1-disk-abc", Timeout: time.Hour, Tags: map[string]string{BuildIDTag: "b1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.SnapshotID != aws.ToString(first.SnapshotId) {
		t.Errorf("the rerun made %s, want the pending %s", res.SnapshotID, aws.ToString(first.SnapshotId))
	}
	sameContent(t, srv, "us-east-1", res.SnapshotID, d)
	// The token now belongs to a completed snapshot: a third run is told so.
	_, err = UploadSnapshot(context.Background(), cfg, d.Path, UploadOptions{
		ClientToken: "build-1-disk-abc", Timeout: time.Hour, Tags: map[string]string{BuildIDTag: "b1"},
	})
	if err == nil || !strings.Contains(err.Error(), "finished upload") {
		t.Errorf("reusing a finished upload's token: %v", err)
	}
}

func TestCorruptBlockRejectedNotRetried(t *testing.T) {
	_, cfg := emu(t)
	c := newClients(cfg, "")
	start, err := c.ebs.StartSnapshot(context.Background(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	if err != nil {
		t.Fatal(err)
	}
	snap := aws.ToString(start.SnapshotId)
	block := make([]byte, BlockSize)
	_, _ = rand.Read(block)
	sum := blockChecksumB64(block)
	block[1000] ^= 1 // flipped in transit
	n := 0
	_, err = call(context.Background(), fastRetry, "PutSnapshotBlock", snap+" block 0", "us-east-1", func(ctx context.Context) (*ebs.PutSnapshotBlockOutput, error) {
		n++
		return c.ebs.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{
			SnapshotId: aws.String(snap), BlockIndex: aws.Int32(0), BlockData: bytes.NewReader(block), DataLength: aws.Int32(BlockSize),
			Checksum: aws.String(sum), ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		})
	})
	if err == nil || n != 1 {
		t.Fatalf("a block with a wrong checksum: %d attempts, err %v", n, err)
	}
	t.Logf("flipped byte: %v", err)
}

func blockChecksumB64(b []byte) string {
	sum := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// recipeAMI is a full ami block for three regions.
func recipeAMI(name string) *recipes.AMI {
	tpm := true
	return &recipes.AMI{
		Name:         name,
		Description:  "GPU node",
		Regions:      []string{"us-east-1", "eu-west-1", "ap-southeast-2"},
		Architecture: "x86_64",
		BootMode:     "uefi",
		IMDS:         "v2.0",
		TPM:          tpm,
		Tags:         map[string]string{"team": "ml"},
		DeprecateAt:  time.Now().Add(90 * 24 * time.Hour).UTC().Format(time.RFC3339),
		SSMParameter: "/gpuforge/test/gpu-node",
		Volume:       &recipes.AMIVolume{Size: "2GiB", Type: "gp3", IOPS: 4000, Throughput: 250},
		Share: &recipes.AMIShare{
			Accounts:      []string{"111122223333"},
			Organizations: []string{"arn:aws:organizations::123456789012:organization/o-abc123defg"},
			OUs:           []string{"arn:aws:organizations::123456789012:ou/o-abc123defg/ou-ab12-cdef3456"},
		},
	}
}

// ofBuild is what the inventory holds of build id: snapshots, images and parameters (those pointing at
// one of its images).
func ofBuild(inv awsemu.Inventory, id string) []string {
	var out []string
	images := map[string]bool{}
	for _, s := range inv.Snapshots {
		if s.Tags[BuildIDTag] == id {
			out = append(out, "snapshot "+s.Region+" "+s.ID)
		}
	}
	for _, im := range inv.Images {
		if im.Tags[BuildIDTag] == id {
			out = append(out, "image "+im.Region+" "+im.ID)
			images[im.ID] = true
		}
	}
	for _, p := range inv.Parameters {
		if images[p.Value] {
			out = append(out, "parameter "+p.Region+" "+p.Name)
		}
	}
	return out
}

func TestBakeThreeRegionsThenGC(t *testing.T) {
	srv, cfg := emu(t, awsemu.WithCopyDelay(200*time.Millisecond))
	d := makeDisk(t, 1<<30)
	var log bytes.Buffer
	b := &Bake{BuildID: "build-full", AMI: recipeAMI("gpu-node-1"), Disk: d.Path, Log: &log, Upload: UploadOptions{ClientToken: "build-full-disk"}}
	start := time.Now()
	res, err := b.Run(context.Background(), cfg)
	t.Logf("bake took %s:\n%s", time.Since(start), log.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Home != "us-east-1" || len(res.Images) != 3 {
		t.Fatalf("result %+v", res)
	}
	inv := srv.Inventory()
	if len(inv.Images) != 3 || len(inv.Snapshots) != 3 || len(inv.Parameters) != 3 {
		t.Fatalf("inventory: %d images, %d snapshots, %d parameters; want 3 of each", len(inv.Images), len(inv.Snapshots), len(inv.Parameters))
	}
	for i, rec := range res.Images {
		if rec.Region != b.AMI.Regions[i] || rec.Name != "gpu-node-1" || len(rec.SnapshotIDs) != 1 {
			t.Errorf("record %d: %+v", i, rec)
		}
		im := findImage(inv, rec.ImageID)
		if im == nil {
			t.Errorf("%s not in the inventory", rec.ImageID)
			continue
		}
		if im.Region != rec.Region || im.State != "available" || im.Tags[BuildIDTag] != "build-full" || im.Tags["team"] != "ml" ||
			im.BootMode != "uefi" || im.ImdsSupport != "v2.0" || !im.EnaSupport || im.TpmSupport != "v2.0" || im.Architecture != "x86_64" ||
			im.DeprecationTime == "" || !slices.Equal(im.SnapshotIDs, rec.SnapshotIDs) {
			t.Errorf("image %s: %+v", rec.ImageID, *im)
		}
		for _, want := range append(append([]string{"111122223333"}, b.AMI.Share.Organizations...), b.AMI.Share.OUs...) {
			if !slices.Contains(im.LaunchPermissions, want) {
				t.Errorf("image %s launch permissions %v lack %s", rec.ImageID, im.LaunchPermissions, want)
			}
		}
		for _, s := range inv.Snapshots {
			if s.ID == rec.SnapshotIDs[0] && (s.Region != rec.Region || s.Tags[BuildIDTag] != "build-full" || s.Tags["team"] != "ml") {
				t.Errorf("snapshot %s: %+v", s.ID, s)
			}
		}
		c := newClients(cfg, rec.Region)
		attr, err := c.ec2.DescribeSnapshotAttribute(context.Background(), &ec2.DescribeSnapshotAttributeInput{
			SnapshotId: aws.String(rec.SnapshotIDs[0]), Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission})
		if err != nil || len(attr.CreateVolumePermissions) != 1 || aws.ToString(attr.CreateVolumePermissions[0].UserId) != "111122223333" {
			t.Errorf("snapshot %s createVolumePermission: %+v, %v", rec.SnapshotIDs[0], attr, err)
		}
		img, err := c.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{rec.ImageID}})
		if err != nil {
			t.Fatal(err)
		}
		bdm := img.Images[0].BlockDeviceMappings[0]
		if aws.ToString(img.Images[0].RootDeviceName) != RootDevice || aws.ToString(bdm.DeviceName) != RootDevice ||
			aws.ToInt32(bdm.Ebs.VolumeSize) != 2 || bdm.Ebs.VolumeType != "gp3" || aws.ToInt32(bdm.Ebs.Iops) != 4000 ||
			aws.ToInt32(bdm.Ebs.Throughput) != 250 || aws.ToString(img.Images[0].SriovNetSupport) != "simple" {
			t.Errorf("image %s: root device %s, mapping %+v %+v", rec.ImageID, aws.ToString(img.Images[0].RootDeviceName), bdm, *bdm.Ebs)
		}
	}
	for _, p := range inv.Parameters {
		if p.Name != "/gpuforge/test/gpu-node" || p.DataType != "aws:ec2:image" || findImage(inv, p.Value) == nil || findImage(inv, p.Value).Region != p.Region {
			t.Errorf("parameter %+v", p)
		}
	}
	sameContent(t, srv, "us-east-1", res.Snapshot, d)
	copySnap := res.Images[2].SnapshotIDs[0]
	sameContent(t, srv, "ap-southeast-2", copySnap, d)

	// GC keeping the build finds nothing; a dry run without it lists all; a real run removes all.
	regions := b.AMI.Regions
	items, err := GC(context.Background(), cfg, regions, map[string]bool{"build-full": true}, false, nil)
	if err != nil || len(items) != 0 {
		t.Fatalf("GC keeping the build: %v, %v", items, err)
	}
	var gclog bytes.Buffer
	items, err = GC(context.Background(), cfg, regions, nil, true, &gclog)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dry run:\n%s", gclog.String())
	if len(items) != 9 {
		t.Errorf("dry run found %d items, want 3 images, 3 snapshots, 3 parameters: %v", len(items), items)
	}
	if got := ofBuild(srv.Inventory(), "build-full"); len(got) != 9 {
		t.Fatalf("the dry run removed something: %v", got)
	}
	items, err = GC(context.Background(), cfg, regions, nil, false, nil)
	if err != nil || len(items) != 9 {
		t.Fatalf("GC: %v, %v", items, err)
	}
	inv = srv.Inventory()
	if len(inv.Images)+len(inv.Snapshots)+len(inv.Parameters) != 0 {
		t.Errorf("left after GC: %+v", inv)
	}
}

func findImage(inv awsemu.Inventory, id string) *awsemu.Image {
	for i := range inv.Images {
		if inv.Images[i].ID == id {
			return &inv.Images[i]
		}
	}
	return nil
}

// hookWriter is a log writer that calls hook with each line.
type hookWriter struct {
	mu   sync.Mutex
	hook func(string)
	buf  bytes.Buffer
}

func (h *hookWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Write(p)
	h.hook(string(p))
	return len(p), nil
}

// cancelOn is a log writer that cancels when a line starts with prefix (after the "ami: ").
type cancelOn struct {
	mu     sync.Mutex
	prefix string
	after  time.Duration
	cancel context.CancelFunc
	buf    bytes.Buffer
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if c.prefix != "" && strings.HasPrefix(string(p), "ami: "+c.prefix) {
		time.AfterFunc(c.after, c.cancel)
	}
	return len(p), nil
}

func TestBakeCancelledAtEachStep(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prefix string // log line that triggers the cancel
		after  time.Duration
		faults []awsemu.Fault
		blocks int64 // cancel from Progress after this many blocks instead
	}{
		{name: "mid-upload", blocks: 5, faults: []awsemu.Fault{{Op: "PutSnapshotBlock", Kind: awsemu.FaultLatency, Latency: 30 * time.Millisecond}}},
		{name: "after-register", prefix: "registered "},
		{name: "mid-copy", prefix: "copy ", after: 100 * time.Millisecond, faults: []awsemu.Fault{{Op: "CopyImage", Kind: awsemu.FaultLatency, Latency: 3 * time.Second, Count: 2}}},
		{name: "copy-pending", prefix: "copy ", after: 150 * time.Millisecond},
		{name: "mid-share", prefix: "shared ", faults: []awsemu.Fault{{Op: "ModifySnapshotAttribute", Kind: awsemu.FaultLatency, Latency: time.Second}}},
		{name: "after-first-parameter", prefix: "SSM parameter "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cfg := emu(t, awsemu.WithCopyDelay(500*time.Millisecond))
			d := makeDisk(t, 64<<20)
			// A parameter that exists before the run keeps its value.
			c := newClients(cfg, "eu-west-1")
			if _, err := c.ssm.PutParameter(context.Background(), &ssm.PutParameterInput{
				Name: aws.String("/gpuforge/test/gpu-node"), Value: aws.String("old"), Type: ssmtypes.ParameterTypeString}); err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.faults {
				srv.Inject(f)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			log := &cancelOn{prefix: tc.prefix, after: tc.after, cancel: cancel}
			ami := recipeAMI("gpu-node-" + tc.name)
			ami.Volume.Size = "1GiB"
			if tc.name == "after-first-parameter" {
				ami.Regions = []string{"us-east-1", "ap-southeast-2"} // eu-west-1's parameter is of data type text
			}
			b := &Bake{BuildID: "build-" + tc.name, AMI: ami, Disk: d.Path, Log: log}
			if tc.blocks > 0 {
				b.Upload.Workers = 2
				b.Upload.Progress = func(done, _ int64) {
					if done == tc.blocks {
						cancel()
					}
				}
			}
			start := time.Now()
			res, err := b.Run(ctx, cfg)
			t.Logf("%s after %s:\n%s", tc.name, time.Since(start), log.buf.String())
			if !errors.Is(err, context.Canceled) || res != nil {
				t.Fatalf("Run = %v, %v; want context.Canceled", res, err)
			}
			inv := srv.Inventory()
			if left := ofBuild(inv, b.BuildID); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if len(inv.Images)+len(inv.Snapshots) != 0 {
				t.Errorf("left behind: %+v %+v", inv.Images, inv.Snapshots)
			}
			if len(inv.Parameters) != 1 || inv.Parameters[0].Value != "old" {
				t.Errorf("parameters after cleanup: %+v", inv.Parameters)
			}
			items, err := GC(context.Background(), cfg, []string{"us-east-1", "eu-west-1", "ap-southeast-2"}, nil, true, nil)
			if err != nil || len(items) != 0 {
				t.Errorf("GC dry run after the cleanup found %v (%v)", items, err)
			}
		})
	}
}

func TestBakeFailureRestoresParameterAndRemovesAll(t *testing.T) {
	srv, cfg := emu(t, awsemu.WithCopyDelay(100*time.Millisecond))
	d := makeDisk(t, 64<<20)
	// A first build publishes the parameter; the second fails after updating it in one region.
	ami := recipeAMI("gpu-node-a")
	ami.Volume.Size = ""
	ami.Regions = []string{"us-east-1", "eu-west-1"}
	first, err := (&Bake{BuildID: "a", AMI: ami, Disk: d.Path}).Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ami2 := *ami
	ami2.Name = "gpu-node-b"
	// Once us-east-1's parameter points at build b's AMI, eu-west-1's cannot be written.
	log := &hookWriter{hook: func(line string) {
		if strings.HasPrefix(line, "ami: SSM parameter /gpuforge/test/gpu-node in us-east-1") {
			srv.Inject(awsemu.Fault{Op: "PutParameter", Kind: awsemu.FaultAccessDenied, Count: 1})
		}
	}}
	_, err = (&Bake{BuildID: "b", AMI: &ami2, Disk: d.Path, Log: log}).Run(context.Background(), cfg)
	t.Logf("%v\n%s", err, log.buf.String())
	if err == nil || !strings.HasPrefix(err.Error(), "PutParameter /gpuforge/test/gpu-node: AccessDeniedException") || !strings.Contains(err.Error(), "eu-west-1") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(log.buf.String(), "cleanup: restored SSM parameter /gpuforge/test/gpu-node in us-east-1 to "+first.Images[0].ImageID) {
		t.Errorf("us-east-1's parameter was not restored")
	}
	srv.ClearFaults()
	inv := srv.Inventory()
	if left := ofBuild(inv, "b"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if len(ofBuild(inv, "a")) != 6 {
		t.Errorf("build a was touched: %v", ofBuild(inv, "a"))
	}
	for _, p := range inv.Parameters {
		want := first.Images[slices.IndexFunc(first.Images, func(r pipeline.AMIRecord) bool { return r.Region == p.Region })].ImageID
		if p.Value != want {
			t.Errorf("parameter in %s = %s, want build a's %s", p.Region, p.Value, want)
		}
	}
}

func TestGCRemovesOnlyLeftovers(t *testing.T) {
	srv, cfg := emu(t)
	d := makeDisk(t, 64<<20)
	ami := recipeAMI("keep-me")
	ami.Regions, ami.Volume, ami.Share, ami.SSMParameter = []string{"us-east-1"}, nil, nil, ""
	if _, err := (&Bake{BuildID: "kept", AMI: ami, Disk: d.Path}).Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	// A killed run's leftover: a snapshot tagged with its build, and an image registered from another.
	left, err := UploadSnapshot(context.Background(), cfg, d.Path, UploadOptions{Tags: map[string]string{BuildIDTag: "killed"}})
	if err != nil {
		t.Fatal(err)
	}
	lost, err := UploadSnapshot(context.Background(), cfg, d.Path, UploadOptions{Tags: map[string]string{BuildIDTag: "killed"}})
	if err != nil {
		t.Fatal(err)
	}
	c := newClients(cfg, "us-east-1")
	reg, err := c.ec2.RegisterImage(context.Background(), &ec2.RegisterImageInput{
		Name: aws.String("killed"), RootDeviceName: aws.String(RootDevice), VirtualizationType: aws.String("hvm"), Architecture: "x86_64",
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String(RootDevice), Ebs: &ec2types.EbsBlockDevice{SnapshotId: aws.String(lost.SnapshotID)}}},
		TagSpecifications:   []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: ec2Tags(map[string]string{BuildIDTag: "killed"})}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	items, err := GC(context.Background(), cfg, []string{"us-east-1"}, map[string]bool{"kept": true}, true, &log)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dry run:\n%s", log.String())
	want := []string{
		"us-east-1 image " + aws.ToString(reg.ImageId) + " (build killed)",
		"us-east-1 snapshot " + left.SnapshotID + " (build killed)",
		"us-east-1 snapshot " + lost.SnapshotID + " (build killed)",
	}
	var got []string
	for _, it := range items {
		got = append(got, it.String())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("dry run found\n%v\nwant\n%v", got, want)
	}
	if _, err := GC(context.Background(), cfg, []string{"us-east-1"}, map[string]bool{"kept": true}, false, nil); err != nil {
		t.Fatal(err)
	}
	inv := srv.Inventory()
	if len(ofBuild(inv, "killed")) != 0 || len(ofBuild(inv, "kept")) != 2 {
		t.Errorf("after GC: killed %v, kept %v", ofBuild(inv, "killed"), ofBuild(inv, "kept"))
	}
}

func TestUploadViaImport(t *testing.T) {
	for _, multipart := range []bool{false, true} {
		t.Run(fmt.Sprintf("multipart=%v", multipart), func(t *testing.T) {
			srv, cfg := emu(t, awsemu.WithCopyDelay(100*time.Millisecond))
			d := makeDisk(t, 64<<20)
			if multipart {
				defer func(a, b int64) { putObjectMax, multipartPart = a, b }(putObjectMax, multipartPart)
				putObjectMax, multipartPart = 8<<20, 5<<20
			}
			c := newClients(cfg, "us-east-1")
			if _, err := c.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("imports")}); err != nil {
				t.Fatal(err)
			}
			res, err := UploadViaImport(context.Background(), cfg, d.Path, "imports", "disk.raw", UploadOptions{Workers: 4, Tags: map[string]string{BuildIDTag: "imp"}})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("import: %+v, requests %v", *res, srv.Stats().Requests)
			sameContent(t, srv, "us-east-1", res.SnapshotID, d)
			inv := srv.Inventory()
			if len(inv.Objects) != 0 || len(inv.Uploads) != 0 || len(inv.Snapshots) != 1 || inv.Snapshots[0].Tags[BuildIDTag] != "imp" {
				t.Errorf("after the import: objects %v, uploads %v, snapshots %+v", inv.Objects, inv.Uploads, inv.Snapshots)
			}
			if multipart != (srv.Stats().Requests["UploadPart"] > 0) {
				t.Errorf("multipart=%v but %d UploadPart requests", multipart, srv.Stats().Requests["UploadPart"])
			}

			srv.Inject(awsemu.Fault{Op: "ImportSnapshot", Kind: awsemu.FaultAccessDenied})
			_, err = UploadViaImport(context.Background(), cfg, d.Path, "imports", "disk2.raw", UploadOptions{})
			if err == nil || !strings.HasPrefix(err.Error(), "ImportSnapshot s3://imports/disk2.raw: UnauthorizedOperation") {
				t.Errorf("denied import: %v", err)
			}
			if inv := srv.Inventory(); len(inv.Objects) != 0 || len(inv.Snapshots) != 1 {
				t.Errorf("after the denied import: objects %v, snapshots %d", inv.Objects, len(inv.Snapshots))
			}
		})
	}
}

// TestBakeThroughImport is the fallback for accounts without EBS direct: with the ami block's
// import_bucket the disk goes to S3 and ImportSnapshot makes the snapshot; the rest of the bake
// is the same. The AMI boots from a snapshot with the disk's content, the S3 object is gone, and
// the resources carry the build id.
func TestBakeThroughImport(t *testing.T) {
	srv, cfg := emu(t, awsemu.WithCopyDelay(100*time.Millisecond))
	d := makeDisk(t, 64<<20)
	c := newClients(cfg, "us-east-1")
	if _, err := c.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("vm-imports")}); err != nil {
		t.Fatal(err)
	}
	a := recipeAMI("gpu-node-import")
	a.Regions = []string{"us-east-1"}
	a.ImportBucket = "vm-imports"
	var log bytes.Buffer
	res, err := (&Bake{BuildID: "build-import", AMI: a, Disk: d.Path, Log: &log}).Run(context.Background(), cfg)
	t.Logf("bake:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	if srv.Stats().Requests["ImportSnapshot"] != 1 || srv.Stats().Requests["PutSnapshotBlock"] != 0 {
		t.Errorf("requests %v: want one ImportSnapshot and no PutSnapshotBlock", srv.Stats().Requests)
	}
	sameContent(t, srv, "us-east-1", res.Snapshot, d)
	inv := srv.Inventory()
	if len(inv.Objects) != 0 || len(inv.Uploads) != 0 {
		t.Errorf("the import left S3 objects %v, uploads %v", inv.Objects, inv.Uploads)
	}
	if im := findImage(inv, res.Images[0].ImageID); im == nil || im.State != "available" || im.Tags[BuildIDTag] != "build-import" {
		t.Errorf("image %s: %+v", res.Images[0].ImageID, im)
	}
	for _, s := range inv.Snapshots {
		if s.ID == res.Snapshot && s.Tags[BuildIDTag] != "build-import" {
			t.Errorf("the imported snapshot %s is not tagged with the build id: %v", s.ID, s.Tags)
		}
	}
}
