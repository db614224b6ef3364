package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpuforge/gpuforge/internal/testenv"
)

// requireBootTools skips the test when QEMU or OVMF is missing (fails it with
// GPUFORGE_REQUIRE_TOOLS=1).
func requireBootTools(t *testing.T) {
	t.Helper()
	testenv.Tool(t, "qemu-system-x86_64")
	testenv.Tool(t, "qemu-img")
	for _, fw := range []string{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/qemu/OVMF.fd", "/usr/share/edk2/ovmf/OVMF_CODE.fd"} {
		if _, err := os.Stat(fw); err == nil {
			return
		}
	}
	if os.Getenv(testenv.RequireToolsEnv) == "1" {
		t.Fatalf("OVMF is not installed (apt-get install ovmf) and %s=1", testenv.RequireToolsEnv)
	}
	t.Skip("OVMF is not installed (apt-get install ovmf)")
}

func TestBootCmdUsage(t *testing.T) {
	for _, args := range [][]string{
		{"boot"},
		{"boot", "a.qcow2", "b.qcow2"},
		{"boot", "--format-report", "yaml", "a.qcow2"},
		{"boot", "--format", "vmdk", "a.vmdk"},
		{"boot", "--accel", "hvf", "a.qcow2"},
		{"boot", "--timeout", "0s", "a.qcow2"},
	} {
		if code, _, stderr := runCLI(t, args...); code != ExitUsage {
			t.Errorf("gpuforge %s: exit %d, want %d; stderr:\n%s", strings.Join(args, " "), code, ExitUsage, stderr)
		}
	}
}

func TestBootCmdMissingDisk(t *testing.T) {
	requireBootTools(t)
	missing := filepath.Join(t.TempDir(), "gpu-node.qcow2")
	code, stdout, stderr := runCLI(t, "boot", missing)
	if code != ExitFailed || !strings.Contains(stderr, missing) {
		t.Errorf("exit %d, want %d with the path in the message; stdout:\n%s\nstderr:\n%s", code, ExitFailed, stdout, stderr)
	}
}

// TestBootCmdUnbootableDisk boots an empty disk: the verdict is fail, exit 5, and the reason
// is printed.
func TestBootCmdUnbootableDisk(t *testing.T) {
	requireBootTools(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "empty.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 64<<20); err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(dir, "console.log")
	code, stdout, stderr := runCLI(t, "boot", "--timeout", "60s", "--console", console, "--format-report", "json", disk)
	if code != ExitValidationFailed {
		t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, ExitValidationFailed, stdout, stderr)
	}
	const reason = "the firmware found nothing to boot"
	if !strings.Contains(stderr, "the boot check failed: "+reason) {
		t.Errorf("stderr has no reason:\n%s", stderr)
	}
	var rep struct {
		Verdict string  `json:"verdict"`
		Reason  string  `json:"reason"`
		Accel   string  `json:"accel"`
		Took    float64 `json:"took_seconds"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout)
	}
	if rep.Verdict != "fail" || !strings.HasPrefix(rep.Reason, reason) || rep.Accel == "" || rep.Took <= 0 {
		t.Errorf("report %+v", rep)
	}
	saved, err := os.ReadFile(console)
	if err != nil || !strings.Contains(string(saved), "BdsDxe") {
		t.Errorf("--console saved no firmware output (%v):\n%s", err, saved)
	}
}
