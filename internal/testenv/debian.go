package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/recipes"
)

// TestCacheEnv names the environment variable that sets the directory tests keep fixtures in
// across packages and runs (see CacheDir).
const TestCacheEnv = "GPUFORGE_TEST_CACHE"

// debianBaseTimeout bounds the bootstrap of the Debian base; it takes about a minute here.
const debianBaseTimeout = 15 * time.Minute

// CacheDir returns the directory tests share fixtures through, across packages and runs:
// $GPUFORGE_TEST_CACHE when set, else gpuforge-test under the user's cache directory
// (~/.cache/gpuforge-test). Bootstrapped bases live in its bootstrap/ subdirectory, as they do
// under gpuforge's own cache directory; pass it to buildkit.WithBootstrapCacheDir or
// buildkit.WithCacheDir to reuse DebianBase.
func CacheDir(t testing.TB) string {
	t.Helper()
	dir, err := cacheDir()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dir
}

func cacheDir() (string, error) {
	dir := os.Getenv(TestCacheEnv)
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("finding the test cache directory (set %s): %w", TestCacheEnv, err)
		}
		dir = filepath.Join(base, "gpuforge-test")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("test cache directory: %w", err)
	}
	return dir, nil
}

// DebianBootstrap returns the bootstrap block of the Debian base every test shares: bookworm,
// minbase, main, the host's architecture, from the host's apt mirror. Each call returns a new
// value.
func DebianBootstrap() *recipes.Bootstrap {
	return &recipes.Bootstrap{Distribution: "debian", Suite: "bookworm", Variant: "minbase"}
}

// DebianBaseBlock returns recipe source for a base named name with DebianBootstrap's bootstrap
// block. A build of it with the cache directory CacheDir takes DebianBase's layout from the
// cache.
func DebianBaseBlock(name string) string {
	b := DebianBootstrap()
	return fmt.Sprintf(`base %q {
  bootstrap {
    distribution = %q
    suite        = %q
    variant      = %q
  }
}
`, name, b.Distribution, b.Suite, b.Variant)
}

var debianBase struct {
	once sync.Once
	res  *buildkit.BootstrapResult
	err  error
	took time.Duration
}

// DebianBase returns Debian bookworm minbase (DebianBootstrap) bootstrapped with mmdebstrap as
// an OCI layout, from the cache directory CacheDir when it is there: the bootstrap (about a
// minute) happens once per machine, and every test package and run after that reuses it. It
// is bootstrapped as buildkit.Bootstrap does for a recipe, with no options but the cache
// directory, so SOURCE_DATE_EPOCH comes from the environment. Concurrent test processes wait
// for one bootstrap. The test is skipped when mmdebstrap is missing, or fails when
// GPUFORGE_REQUIRE_TOOLS=1 (see Tool); a host without a Debian apt source is treated the same.
// The result is the caller's own copy.
func DebianBase(t testing.TB) *buildkit.BootstrapResult {
	t.Helper()
	mmdebstrap := Tool(t, "mmdebstrap")
	if _, err := buildkit.HostAptMirror("debian"); err != nil {
		if os.Getenv(RequireToolsEnv) == "1" {
			t.Fatalf("testenv: %v", err)
		}
		t.Skipf("testenv: %v", err)
	}
	d := &debianBase
	d.once.Do(func() {
		dir, err := cacheDir()
		if err != nil {
			d.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), debianBaseTimeout)
		defer cancel()
		var log bytes.Buffer
		start := time.Now()
		d.res, d.err = buildkit.Bootstrap(ctx, DebianBootstrap(),
			buildkit.WithBootstrapCacheDir(dir),
			buildkit.WithMmdebstrapPath(mmdebstrap),
			buildkit.WithBootstrapLogWriter(&log))
		d.took = time.Since(start)
		if d.err != nil && log.Len() > 0 {
			d.err = fmt.Errorf("%w\nmmdebstrap's output:\n%s", d.err, log.String())
		}
	})
	if d.err != nil {
		t.Fatalf("testenv: bootstrapping the Debian base: %v", d.err)
	}
	if !d.res.Cached {
		t.Logf("testenv: bootstrapped Debian %s in %s into %s", DebianBootstrap().Suite, d.took.Round(time.Second), d.res.LayoutDir)
	}
	res := *d.res
	return &res
}
