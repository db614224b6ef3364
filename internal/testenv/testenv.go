package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/mod/modfile"
)

// Module is the module path of the repository root's go.mod.
const Module = "github.com/gpuforge/gpuforge"

// RequireToolsEnv names the environment variable that turns a missing tool
// from a skip into a failure when set to "1". `make test` sets it.
const RequireToolsEnv = "GPUFORGE_REQUIRE_TOOLS"

// RepoRoot returns the repository root: the nearest directory at or above the
// working directory whose go.mod declares module github.com/gpuforge/gpuforge.
// Nested modules on the way up (tools/ is one) are passed over.
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return root
}

func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for dir := wd; ; {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		switch {
		case err == nil:
			if modfile.ModulePath(data) == Module {
				return dir, nil
			}
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("finding the repository root: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s at or above %s", Module, wd)
		}
		dir = parent
	}
}

// Tool returns the path of the program name: bin/<name> under the repository
// root when it is there (what `make setup` builds, at the pinned version),
// else name as found on PATH. When it is in neither place the test is skipped,
// or fails when GPUFORGE_REQUIRE_TOOLS=1.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, "bin", name)
		if isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv(RequireToolsEnv) == "1" {
		t.Fatalf("testenv: %s is not in bin/ nor on PATH and %s=1: run `make setup` at the repository root to build it", name, RequireToolsEnv)
	}
	t.Skipf("testenv: %s is not in bin/ nor on PATH (run `make setup` to build it)", name)
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// PinnedVersion returns the version of module required by the go.mod file at
// gomod (a path relative to the repository root, or absolute), such as
// PinnedVersion(t, "tools/go.mod", "github.com/moby/buildkit"). A replace
// directive that gives module another version wins over the require. The test
// fails when the file cannot be read or does not require module.
func PinnedVersion(t testing.TB, gomod, module string) string {
	t.Helper()
	if !filepath.IsAbs(gomod) {
		gomod = filepath.Join(RepoRoot(t), gomod)
	}
	v, ok, err := requiredVersion(gomod, module)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if !ok {
		t.Fatalf("testenv: %s does not require %s", gomod, module)
	}
	return v
}

// requiredVersion reports the version of module that the go.mod file at path
// selects, and whether it requires module at all.
func requiredVersion(path, module string) (version string, ok bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false, err
	}
	f, err := modfile.Parse(path, data, nil)
	if err != nil {
		return "", false, err
	}
	for _, r := range f.Require {
		if r.Mod.Path == module {
			version, ok = r.Mod.Version, true
		}
	}
	if !ok {
		return "", false, nil
	}
	for _, r := range f.Replace {
		if r.Old.Path == module && (r.Old.Version == "" || r.Old.Version == version) &&
			r.New.Path == module && r.New.Version != "" {
			version = r.New.Version
		}
	}
	return version, true, nil
}
