package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const (
	buildkitModule     = "github.com/moby/buildkit"
	distributionModule = "github.com/distribution/distribution/v3"
)

// TestDaemonsArePinned checks that the programs the tests run are the ones
// tools/go.mod pins, and that the BuildKit client library gpuforge links is the
// same release as the daemon.
func TestDaemonsArePinned(t *testing.T) {
	bk := PinnedVersion(t, "tools/go.mod", buildkitModule)
	reg := PinnedVersion(t, "tools/go.mod", distributionModule)

	for _, tc := range []struct{ name, version string }{
		{"buildkitd", bk},
		{"buildctl", bk},
		{"registry", reg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := Tool(t, tc.name)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --version: %v\n%s", path, err, out)
			}
			if !reportsVersion(string(out), tc.version) {
				t.Errorf("%s --version = %q, want version %s (pinned in tools/go.mod); run `make setup` to rebuild it", path, strings.TrimSpace(string(out)), tc.version)
			}
		})
	}

	t.Run("client library", func(t *testing.T) {
		top := filepath.Join(RepoRoot(t), "go.mod")
		v, ok, err := requiredVersion(top, buildkitModule)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Skipf("go.mod does not require %s yet", buildkitModule)
		}
		if v != bk {
			t.Errorf("go.mod requires %s %s but tools/go.mod pins buildkitd %s: the client library must match the daemon; change both together", buildkitModule, v, bk)
		}
	})
}

// reportsVersion reports whether a --version line names version, with or
// without its leading "v" (distribution's release builds drop it), as a word
// of its own: v0.34.2 must not pass for v0.34.21 or v0.34.2+unknown.
func reportsVersion(out, version string) bool {
	for _, f := range strings.Fields(out) {
		if f == version || f == strings.TrimPrefix(version, "v") {
			return true
		}
	}
	return false
}

func TestReportsVersion(t *testing.T) {
	for _, tc := range []struct {
		out, version string
		want         bool
	}{
		{"buildkitd github.com/moby/buildkit v0.34.2 \n", "v0.34.2", true},
		{"buildctl github.com/moby/buildkit v0.34.2 abcdef\n", "v0.34.2", true},
		{"/x/bin/registry github.com/distribution/distribution/v3 3.1.2\n", "v3.1.2", true},
		{"buildkitd github.com/moby/buildkit v0.0.0+unknown \n", "v0.34.2", false},
		{"registry github.com/distribution/distribution/v3 v3.1.2+unknown\n", "v3.1.2", false},
		{"buildkitd github.com/moby/buildkit v0.34.21\n", "v0.34.2", false},
		{"", "v0.34.2", false},
	} {
		if got := reportsVersion(tc.out, tc.version); got != tc.want {
			t.Errorf("reportsVersion(%q, %q) = %v, want %v", tc.out, tc.version, got, tc.want)
		}
	}
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "internal", "testenv", "testenv.go")); err != nil {
		t.Fatalf("RepoRoot = %s, which does not hold this package: %v", root, err)
	}
	// From inside the nested tools module, the root is still the top one.
	t.Chdir(filepath.Join(root, "tools"))
	if got := RepoRoot(t); got != root {
		t.Errorf("RepoRoot from tools/ = %s, want %s", got, root)
	}
}

func TestPinnedVersion(t *testing.T) {
	dir := t.TempDir()
	gomod := filepath.Join(dir, "go.mod")
	const src = `module example.com/tools

go 1.26.8

require (
	example.com/a v1.2.3
	example.com/b v0.1.0 // indirect
	example.com/c v1.0.0
)

require example.com/d v2.0.0+incompatible

replace example.com/c => example.com/c v1.0.1
`
	if err := os.WriteFile(gomod, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	for module, want := range map[string]string{
		"example.com/a": "v1.2.3",
		"example.com/b": "v0.1.0",
		"example.com/c": "v1.0.1",
		"example.com/d": "v2.0.0+incompatible",
	} {
		if got := PinnedVersion(t, gomod, module); got != want {
			t.Errorf("PinnedVersion(%s) = %q, want %q", module, got, want)
		}
	}
	if _, ok, err := requiredVersion(gomod, "example.com/missing"); err != nil || ok {
		t.Errorf("requiredVersion(missing) = ok %v, err %v; want not found, no error", ok, err)
	}
	tb := runTB(t, func(tb testing.TB) { PinnedVersion(tb, gomod, "example.com/missing") })
	if !tb.failed || !strings.Contains(tb.msg, "does not require example.com/missing") {
		t.Errorf("PinnedVersion of a module not required: failed %v, message %q", tb.failed, tb.msg)
	}
}

func TestToolMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	const name = "gpuforge-testenv-no-such-tool"

	t.Setenv(RequireToolsEnv, "")
	tb := runTB(t, func(tb testing.TB) { Tool(tb, name) })
	if !tb.skipped || tb.failed {
		t.Errorf("missing tool without %s=1: skipped %v, failed %v; want a skip", RequireToolsEnv, tb.skipped, tb.failed)
	}

	t.Setenv(RequireToolsEnv, "1")
	tb = runTB(t, func(tb testing.TB) { Tool(tb, name) })
	if !tb.failed || !strings.Contains(tb.msg, "make setup") {
		t.Errorf("missing tool with %s=1: failed %v, message %q; want a failure that says to run make setup", RequireToolsEnv, tb.failed, tb.msg)
	}
}

func TestToolOnPath(t *testing.T) {
	dir := t.TempDir()
	const name = "gpuforge-testenv-fake-tool"
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	if got := Tool(t, name); got != p {
		t.Errorf("Tool(%s) = %q, want %q", name, got, p)
	}
}

// recordTB stands in for a test so that a Fatalf or Skipf can be observed
// without ending the real one.
type recordTB struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (r *recordTB) Helper() {}

func (r *recordTB) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordTB) Skipf(format string, args ...any) {
	r.skipped, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runTB(t *testing.T, f func(testing.TB)) *recordTB {
	r := &recordTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}
