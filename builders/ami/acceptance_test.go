package ami

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/gpuforge/gpuforge/recipes"
)

// TestAcceptanceRealAWS bakes a small AMI in a real account and removes it. It runs only with
// GPUFORGE_AWS_ACCEPTANCE=1, with credentials from the SDK's default chain (AWS_PROFILE, SSO, web identity,
// instance metadata) and the region from AWS_REGION (or GPUFORGE_AWS_REGION). The identity needs the EBS
// direct permissions (ebs:StartSnapshot, PutSnapshotBlock, CompleteSnapshot), ec2:RegisterImage,
// DescribeImages, DescribeSnapshots, DeregisterImage, DeleteSnapshot, CreateTags. It costs cents: a 1 GiB
// snapshot for a few minutes.
func TestAcceptanceRealAWS(t *testing.T) {
	if os.Getenv("GPUFORGE_AWS_ACCEPTANCE") != "1" {
		t.Skip("set GPUFORGE_AWS_ACCEPTANCE=1 to run against real AWS (default credential chain)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cfg, err := LoadConfig(ctx, Config{Region: os.Getenv("GPUFORGE_AWS_REGION")})
	if err != nil {
		t.Fatal(err)
	}
	// 64 MiB disk, 4 MiB of random data in two places.
	data := make([]byte, 2<<20)
	_, _ = rand.Read(data)
	disk := writeSparse(t, 64<<20, map[int64][]byte{0: data, 40 << 20: bytes.Clone(data)})

	buildID := fmt.Sprintf("acceptance-%d", time.Now().UnixNano())
	var log bytes.Buffer
	b := &Bake{
		BuildID: buildID,
		AMI:     &recipes.AMI{Name: "gpuforge-acceptance-" + buildID, Tags: map[string]string{"gpuforge:acceptance": "1"}},
		Disk:    disk,
		Upload:  UploadOptions{Workers: 16},
		Log:     &log,
	}
	res, err := b.Run(ctx, cfg)
	t.Log(log.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("baked %+v; upload %+v", res.Images, res.Upload)
	if res.Upload.Blocks-res.Upload.ZeroBlocks != 8 {
		t.Errorf("%d blocks written, want 8", res.Upload.Blocks-res.Upload.ZeroBlocks)
	}

	// Remove it, as a failed run would.
	rc := &regionClients{cfg: cfg}
	l := &ledger{buildID: buildID, regions: []string{res.Home}}
	l.addImage(res.Home, res.Images[0].ImageID)
	l.addSnapshot(res.Home, res.Snapshot)
	if err := l.cleanup(ctx, rc, defaultRetry, t.Logf); err != nil {
		t.Fatal(err)
	}
	items, err := GC(ctx, cfg, []string{res.Home}, nil, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.BuildID == buildID {
			t.Errorf("left behind: %s", it)
		}
	}
}
