package buildkit_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/internal/testenv"
	"github.com/gpuforge/gpuforge/recipes"
)

// machineRecipe is examples/gpu-node-debian.hcl — a Debian GPU host: the cloud kernel named by
// the recipe, Debian's 535 driver (non-free), docker from Debian — with the machine image's
// packages replaced: in the tests, among them a second kernel that the module must not be
// built for.
func machineRecipe(t *testing.T, packages string) *recipes.Recipe {
	t.Helper()
	example, err := os.ReadFile(filepath.Join("..", "..", "examples", "gpu-node-debian.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(example), `packages = ["pciutils"]`, "packages = "+packages, 1)
	if src == string(example) {
		t.Fatal("the example's packages line changed; update this test")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "recipe.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r, diags := recipes.Load(filepath.Join(dir, "recipe.hcl"), recipes.Options{Env: []string{}})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return r
}

// TestMachineRootfsModuleForRecipeKernel builds a machine image's root filesystem with a second
// kernel installed on purpose (linux-image-amd64 next to the recipe's linux-image-cloud-amd64)
// and checks that the NVIDIA module was built by DKMS for the recipe's kernel — its vermagic is
// that kernel's release — and for no other; that the image describes itself; that per-instance
// state is empty. Then it changes one unrelated package and rebuilds: the kernel and module
// stages come from BuildKit's cache (from the build's events), the package step does not.
func TestMachineRootfsModuleForRecipeKernel(t *testing.T) {
	testenv.Tool(t, "mmdebstrap")
	modinfo := testenv.Tool(t, "modinfo")
	c := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	opts := []buildkit.BuildOption{buildkit.WithCacheDir(testenv.CacheDir(t))}

	dir := filepath.Join(t.TempDir(), "rootfs")
	res, err := buildkit.BuildMachineRootfs(ctx, c, machineRecipe(t, `["linux-image-amd64", "pciutils"]`), "gpu-node-debian", dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	kver := res.Info.Kernel
	if !strings.HasSuffix(kver, "-cloud-amd64") {
		t.Fatalf("kernel = %q, want the release of linux-image-cloud-amd64", kver)
	}
	if res.Info.Driver == nil || res.Info.Driver.Module != "nvidia-current" || !strings.HasPrefix(res.Info.Driver.Version, "535.") || res.Info.Driver.Flavor != "proprietary" {
		t.Errorf("driver = %+v, want nvidia-current 535.* proprietary", res.Info.Driver)
	}
	if res.Info.Runtimes["docker"] != "distro" {
		t.Errorf("runtimes = %v, want docker distro", res.Info.Runtimes)
	}
	ko := filepath.Join(dir, "lib/modules", kver, "updates/dkms/nvidia-current.ko")
	out, err := exec.Command(modinfo, "-F", "vermagic", ko).CombinedOutput()
	if err != nil {
		t.Fatalf("modinfo %s: %v\n%s", ko, err, out)
	}
	if got := strings.Fields(string(out)); len(got) == 0 || got[0] != kver {
		t.Errorf("vermagic of nvidia-current.ko = %q, want %s", out, kver)
	}
	// The second kernel is there, and has no NVIDIA module.
	entries, err := os.ReadDir(filepath.Join(dir, "lib/modules"))
	if err != nil {
		t.Fatal(err)
	}
	others := 0
	for _, e := range entries {
		if e.Name() == kver {
			continue
		}
		others++
		if m, _ := filepath.Glob(filepath.Join(dir, "lib/modules", e.Name(), "updates/dkms/nvidia*")); len(m) > 0 {
			t.Errorf("NVIDIA modules were built for %s too: %v", e.Name(), m)
		}
	}
	if others == 0 {
		t.Errorf("the second kernel is not installed: /lib/modules has only %s", kver)
	}
	if _, err := os.Stat(filepath.Join(dir, "usr/src")); err == nil {
		if m, _ := filepath.Glob(filepath.Join(dir, "usr/src/nvidia*")); len(m) > 0 {
			t.Errorf("the driver's DKMS sources reached the root filesystem: %v", m)
		}
	}
	if data, err := os.ReadFile(filepath.Join(dir, "etc/machine-id")); err != nil || len(data) != 0 {
		t.Errorf("etc/machine-id = %q (%v), want an empty file", data, err)
	}
	if keys, _ := filepath.Glob(filepath.Join(dir, "etc/ssh/ssh_host_*")); len(keys) > 0 {
		t.Errorf("SSH host keys were left in the image: %v", keys)
	}
	for _, f := range []string{"boot/vmlinuz-" + kver, "boot/initrd.img-" + kver, "usr/lib/systemd/boot/efi/systemd-bootx64.efi", "usr/sbin/dockerd"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the root filesystem lacks %s: %v", f, err)
		}
	}

	if smi, _ := filepath.Glob(filepath.Join(dir, "usr/lib/nvidia/*/nvidia-smi")); len(smi) == 0 {
		if _, err := os.Stat(filepath.Join(dir, "usr/bin/nvidia-smi")); err != nil {
			t.Errorf("the root filesystem has no nvidia-smi")
		}
	}

	// One unrelated package more: the module build is reused.
	dir2 := filepath.Join(t.TempDir(), "rootfs")
	res2, err := buildkit.BuildMachineRootfs(ctx, c, machineRecipe(t, `["linux-image-amd64", "pciutils", "less"]`), "gpu-node-debian", dir2, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Info.Kernel != kver {
		t.Errorf("kernel changed: %s then %s", kver, res2.Info.Kernel)
	}
	var sawModule, sawPackages bool
	for _, s := range res2.Steps {
		switch {
		case strings.Contains(s.Name, buildkit.StepKernelModule):
			sawModule = true
			if !s.Cached {
				t.Errorf("the module build ran again after an unrelated package change: %q", s.Name)
			}
		case strings.Contains(s.Name, buildkit.StepKernel):
			if !s.Cached {
				t.Errorf("the kernel stage ran again: %q", s.Name)
			}
		case strings.Contains(s.Name, "apt-get install") && strings.Contains(s.Name, "less"):
			sawPackages = true
			if s.Cached {
				t.Errorf("the changed package step came from the cache: %q", s.Name)
			}
		}
	}
	if !sawModule || !sawPackages {
		t.Errorf("steps of the rebuild lack the module build (%v) or the package step (%v): %+v", sawModule, sawPackages, res2.Steps)
	}
	if _, err := os.Stat(filepath.Join(dir2, "usr/bin/less")); err != nil {
		t.Errorf("the rebuilt root filesystem lacks less: %v", err)
	}
}
