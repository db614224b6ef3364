package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/builders/disk"
	"github.com/gpuforge/gpuforge/internal/awsemu"
	"github.com/gpuforge/gpuforge/internal/testenv"
	"github.com/gpuforge/gpuforge/pipeline"
)

// bootKeys are the facts a GPU host image must report over the serial console, all "ok".
var bootKeys = []string{"manifest", "kernel", "root", "root_size", "nvidia_module", "docker", "nvidia_runtime", "preload", "cloud_init", "ssh"}

// TestBuildMachineImageBoots is the machine image path end to end, on the example recipe
// examples/gpu-node-debian.hcl (Debian bookworm, the cloud kernel, Debian's 535 driver built by
// DKMS, docker.io) plus the NVIDIA container toolkit in CDI mode, installed the way a recipe
// installs it from NVIDIA's repository — here a signed apt repository on loopback serving
// packages of NVIDIA's toolkit built from its Go module — and a small image of the same recipe
// preloaded into docker's store. `gpuforge build` builds the root
// filesystem on a real buildkitd, assembles raw and qcow2 disks and boots the raw one in QEMU
// (OVMF, TCG here); every line of the boot report must be ok. Then the qcow2 boots too
// (gpuforge boot), both disks are checked (sparse raw, qemu-img check), and a copy of the raw
// disk with its root filesystem's superblock flipped fails the boot check with a verdict that
// says so.
func TestBuildMachineImageBoots(t *testing.T) {
	testEnv(t)
	for _, tool := range []string{"mmdebstrap", "qemu-system-x86_64", "qemu-img", "mkfs.ext4"} {
		testenv.Tool(t, tool)
	}
	addr := testenv.StartBuildkitd(t)
	t.Setenv(buildkit.CacheDirEnv, testenv.CacheDir(t))
	t.Setenv(buildkit.StateDirEnv, t.TempDir())
	repo := testenv.StartAptRepo(t, testenv.ToolkitDebs(t)...)
	aws := startAWSEmu(t)

	example, err := os.ReadFile(filepath.Join("..", "..", "examples", "gpu-node-debian.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(example), "runtimes = [runtime.docker-distro]", "runtimes = [runtime.docker-distro, runtime.nvidia-local]", 1)
	src = strings.Replace(src, `packages = ["pciutils"]`, `packages = ["pciutils"]
  preload  = [image.hello]

  ami {
    name          = "gpu-node-debian-e2e"
    regions       = ["us-east-1", "us-west-2", "eu-west-1"]
    ssm_parameter = "/gpuforge/gpu-node-debian/latest"
    tags          = { team = "ml-platform" }
    share {
      accounts = ["444455556666"]
    }
  }`, 1)
	if strings.Count(src, "runtime.nvidia-local") != 1 || !strings.Contains(src, "image.hello") {
		t.Fatal("the example's runtimes or packages line changed; update this test")
	}
	src += `
image "hello" {
  from = base.debian-host
  run  = ["echo hello > /hello.txt"]
  tags = ["gpuforge.test/hello:1"]
}

repository "nvidia-local" {
  url   = "` + repo.URL + `"
  suite = "/"
  key   = <<EOT
` + repo.Key + `EOT
}

runtime "nvidia-local" {
  type            = "nvidia"
  mode            = "cdi"
  toolkit_version = "` + testenv.ToolkitVersion + `-1"
  repository      = repository.nvidia-local
}
`
	dir := t.TempDir()
	path := filepath.Join(dir, "gpu-node.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	meta := filepath.Join(dir, "build.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"build", "--builder", addr, "--progress", "plain", "--out", out, "--metadata-file", meta, "--aws-endpoint", aws.URL(), "-t", "gpu-node-debian", path}, &stdout, &stderr)
	if code != ExitOK {
		t.Fatalf("build exit %d\nstdout:\n%s\nstderr (tail):\n%s", code, stdout.String(), tailString(stderr.String(), 80))
	}
	t.Logf("build stdout:\n%s", stdout.String())

	m, err := pipeline.ReadManifestFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	rec := m.Target("machine_image.gpu-node-debian")
	if rec == nil || rec.BootCheck == nil || rec.BootCheck.Verdict != pipeline.VerdictPass {
		t.Fatalf("manifest target = %+v, want a passed boot check", rec)
	}
	if !strings.HasSuffix(rec.Kernel, "-cloud-amd64") {
		t.Errorf("kernel = %q, want the cloud kernel's release", rec.Kernel)
	}
	disks := map[string]string{}
	for _, d := range rec.Disks {
		disks[d.Format] = d.Path
	}
	if disks["raw"] == "" || disks["qcow2"] == "" {
		t.Fatalf("disks = %+v, want raw and qcow2", rec.Disks)
	}
	// Every fact of the boot report is ok, as the build printed it.
	for _, key := range bootKeys {
		if !reportLineOK(stdout.String(), key) {
			t.Errorf("boot report line %q is not ok:\n%s", key, stdout.String())
		}
	}

	// The raw disk is sparse, the qcow2 is sound and boots too.
	raw, qcow2 := disks["raw"], disks["qcow2"]
	var st statBlocks
	allocated, err := st.allocated(raw)
	if err != nil {
		t.Fatal(err)
	}
	data, err := disk.NonZeroBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	if float64(allocated) > 1.05*float64(data) {
		t.Errorf("raw disk allocates %d bytes for %d bytes of data (> 1.05×)", allocated, data)
	}
	t.Logf("raw disk: %d bytes allocated, %d bytes of data", allocated, data)
	if err := disk.CheckQcow2(t.Context(), qcow2); err != nil {
		t.Error(err)
	}
	code, bootOut, bootErr := runCLI(t, "boot", "--format-report", "json", qcow2)
	if code != ExitOK {
		t.Fatalf("gpuforge boot %s: exit %d\n%s\n%s", qcow2, code, bootOut, bootErr)
	}
	var rep disk.BootReport
	if err := json.Unmarshal([]byte(bootOut), &rep); err != nil {
		t.Fatalf("boot report JSON: %v\n%s", err, bootOut)
	}
	got := map[string]string{}
	for _, l := range rep.Lines {
		got[l.Key] = l.Status
	}
	for _, key := range bootKeys {
		if got[key] != disk.StatusOK {
			t.Errorf("qcow2 boot: %s = %q, want ok (%+v)", key, got[key], rep.Lines)
		}
	}

	// The AMI: uploaded, registered in us-east-1, copied to two regions, shared, published in SSM,
	// everything tagged with the build id; the snapshot's blocks read back make a disk that boots.
	checkAMIs(t, aws, m, rec, raw)

	// A corrupted root filesystem fails the boot check, saying why.
	bad := filepath.Join(dir, "corrupt.raw")
	if err := copySparse(raw, bad); err != nil {
		t.Fatal(err)
	}
	corruptRootSuperblock(t, bad)
	code, badOut, badErr := runCLI(t, "boot", "--timeout", "6m", bad)
	if code != ExitValidationFailed {
		t.Fatalf("boot of a disk with a corrupted root: exit %d, want %d\n%s\n%s", code, ExitValidationFailed, badOut, badErr)
	}
	if !strings.Contains(badOut, "verdict: fail") || !strings.Contains(strings.ToLower(badOut), "root") {
		t.Errorf("the verdict does not say the root filesystem failed:\n%s", badOut)
	}
	t.Logf("corrupted root:\n%s", badOut)
}

// reportLineOK reports whether the boot report table in out has the line "KEY  ok  …".
func reportLineOK(out, key string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == key {
			return f[1] == disk.StatusOK
		}
	}
	return false
}

// corruptRootSuperblock flips the bytes of the ext4 superblock of the disk's root partition
// (the second GPT partition): its magic, UUID and counters.
func corruptRootSuperblock(t *testing.T, path string) {
	t.Helper()
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	table, err := d.GetPartitionTable()
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	g, ok := table.(*gpt.Table)
	if !ok || len(g.Partitions) < 2 {
		t.Fatalf("partition table %T has no root partition", table)
	}
	start := int64(g.Partitions[1].Start) * int64(g.LogicalSectorSize)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, start+1024); err != nil {
		t.Fatal(err)
	}
	if sb[0x38] != 0x53 || sb[0x39] != 0xef {
		t.Fatalf("no ext4 superblock at %d", start+1024)
	}
	for i := range sb {
		sb[i] ^= 0xa5
	}
	if _, err := f.WriteAt(sb, start+1024); err != nil {
		t.Fatal(err)
	}
}

func tailString(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// statBlocks reads how much of a file the host filesystem allocated.
type statBlocks struct{}

func (statBlocks) allocated(path string) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

// copySparse copies a disk file keeping its holes.
func copySparse(src, dst string) error {
	out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp %s: %v\n%s", src, err, out)
	}
	return nil
}

// startAWSEmu starts internal/awsemu and points the AWS SDK's default chain at its keys only.
func startAWSEmu(t *testing.T) *awsemu.Server {
	t.Helper()
	srv, err := awsemu.Start(t.TempDir(), awsemu.WithCopyDelay(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	none := filepath.Join(t.TempDir(), "none")
	t.Setenv("AWS_ACCESS_KEY_ID", awsemu.DefaultAccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", awsemu.DefaultSecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", none)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", none)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return srv
}

// checkAMIs checks what the bake left in awsemu against the manifest, and boots the disk rebuilt
// from the home region's snapshot.
func checkAMIs(t *testing.T, srv *awsemu.Server, m *pipeline.Manifest, rec *pipeline.Target, raw string) {
	t.Helper()
	regions := []string{"us-east-1", "us-west-2", "eu-west-1"}
	if len(rec.AMIs) != len(regions) {
		t.Fatalf("manifest AMIs = %+v, want one per region %v", rec.AMIs, regions)
	}
	inv := srv.Inventory()
	images := map[string]awsemu.Image{}
	for _, img := range inv.Images {
		images[img.ID] = img
	}
	params := map[string]string{}
	for _, p := range inv.Parameters {
		params[p.Region] = p.Value
	}
	var homeSnap string
	seen := map[string]bool{}
	for _, a := range rec.AMIs {
		seen[a.Region] = true
		img, ok := images[a.ImageID]
		switch {
		case !ok:
			t.Errorf("%s: AMI %s is not in awsemu", a.Region, a.ImageID)
			continue
		case !slices.Contains(regions, a.Region) || img.Region != a.Region:
			t.Errorf("AMI %s is in %s (awsemu: %s), want one of %v", a.ImageID, a.Region, img.Region, regions)
		case img.State != "available":
			t.Errorf("%s: AMI %s is %s", a.Region, a.ImageID, img.State)
		}
		if img.Tags["gpuforge:build-id"] != m.BuildID || img.Tags["team"] != "ml-platform" {
			t.Errorf("%s: AMI tags = %v, want gpuforge:build-id=%s and team", a.Region, img.Tags, m.BuildID)
		}
		if img.BootMode != "uefi" || img.Architecture != "x86_64" || !img.EnaSupport || img.ImdsSupport != "v2.0" {
			t.Errorf("%s: AMI settings boot=%s arch=%s ena=%v imds=%s", a.Region, img.BootMode, img.Architecture, img.EnaSupport, img.ImdsSupport)
		}
		if !slices.Contains(img.LaunchPermissions, "444455556666") {
			t.Errorf("%s: launch permissions = %v, want account 444455556666", a.Region, img.LaunchPermissions)
		}
		if params[a.Region] != a.ImageID {
			t.Errorf("%s: SSM parameter = %q, want %s", a.Region, params[a.Region], a.ImageID)
		}
		if a.Region == regions[0] && len(a.SnapshotIDs) > 0 {
			homeSnap = a.SnapshotIDs[0]
		}
	}
	if len(seen) != len(regions) {
		t.Errorf("the manifest's AMIs cover %v, want %v", seen, regions)
	}
	for _, sn := range inv.Snapshots {
		if sn.Tags["gpuforge:build-id"] != m.BuildID {
			t.Errorf("snapshot %s in %s is not tagged with the build id: %v", sn.ID, sn.Region, sn.Tags)
		}
	}
	data, err := disk.NonZeroBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	// EBS snapshots are made of 512 KiB blocks: the disk's data, counted in the blocks that hold
	// any, is what an upload that skips zero blocks and re-sends nothing must send.
	blocks, err := nonZeroBlockBytes(raw, 512<<10)
	if err != nil {
		t.Fatal(err)
	}
	sent := srv.Stats().BlockBytes
	if float64(sent) > 1.01*float64(blocks) {
		t.Errorf("upload sent %d bytes for %d bytes of non-zero 512 KiB blocks (> 1.01×)", sent, blocks)
	}
	t.Logf("upload: %d bytes sent; %d bytes in non-zero 512 KiB blocks (%.4f×); %d non-zero bytes in 4 KiB blocks (%.4f×)",
		sent, blocks, float64(sent)/float64(blocks), data, float64(sent)/float64(data))

	if homeSnap == "" {
		t.Fatal("the manifest names no snapshot for the home region's AMI")
	}
	back := filepath.Join(t.TempDir(), "from-snapshot.raw")
	if err := srv.WriteSnapshot("us-east-1", homeSnap, back); err != nil {
		t.Fatal(err)
	}
	if err := samePrefix(raw, back); err != nil {
		t.Error(err)
	}
	code, out, errOut := runCLI(t, "boot", "--format", "raw", back)
	if code != ExitOK {
		t.Fatalf("gpuforge boot of the disk read back from snapshot %s: exit %d\n%s\n%s", homeSnap, code, out, errOut)
	}
	for _, key := range bootKeys {
		if !reportLineOK(out, key) {
			t.Errorf("boot of the snapshot's disk: line %q is not ok:\n%s", key, out)
		}
	}
}

// samePrefix checks that b starts with the bytes of a and holds only zeros after them (a
// snapshot is whole GiB).
func samePrefix(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	bufA, bufB := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for {
		n, errA := io.ReadFull(fa, bufA)
		if n > 0 {
			if _, err := io.ReadFull(fb, bufB[:n]); err != nil {
				return fmt.Errorf("the snapshot's disk is shorter than the disk: %w", err)
			}
			if !bytes.Equal(bufA[:n], bufB[:n]) {
				return fmt.Errorf("the snapshot's disk differs from the disk in the MiB at %d", off)
			}
			off += int64(n)
		}
		if errA != nil {
			break
		}
	}
	for {
		n, err := fb.Read(bufB)
		if bytes.ContainsFunc(bufB[:n], func(r rune) bool { return r != 0 }) {
			return fmt.Errorf("the snapshot's disk has data after the disk's end (%d)", off)
		}
		if err != nil {
			return nil
		}
	}
}

// nonZeroBlockBytes is the size of the blocks of the file that hold a non-zero byte.
func nonZeroBlockBytes(path string, block int) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, block)
	var total int64
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 && bytes.ContainsFunc(buf[:n], func(r rune) bool { return r != 0 }) {
			total += int64(block)
		}
		if err != nil {
			return total, nil
		}
	}
}
