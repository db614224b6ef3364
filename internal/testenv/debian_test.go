package testenv_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gpuforge/gpuforge/internal/testenv"
	"github.com/gpuforge/gpuforge/recipes"
)

func TestDebianBaseBlockIsDebianBootstrap(t *testing.T) {
	src := testenv.DebianBaseBlock("debian")
	r, diags := recipes.LoadSource("recipe.hcl", []byte(src), recipes.Options{Env: []string{}})
	if diags.HasErrors() {
		t.Fatalf("%s\n%s", diags.Error(), src)
	}
	b := r.Base("debian")
	if b == nil || b.Bootstrap == nil {
		t.Fatalf("no bootstrap base \"debian\" in\n%s", src)
	}
	got, want := b.Bootstrap, testenv.DebianBootstrap()
	if got.Distribution != want.Distribution || got.Suite != want.Suite || got.Variant != want.Variant ||
		got.Mirror != want.Mirror || got.Architecture != want.Architecture ||
		!slices.Equal(got.Components, want.Components) || !slices.Equal(got.Packages, want.Packages) {
		t.Errorf("the block's bootstrap is %+v, DebianBootstrap() %+v", got, want)
	}
}

func TestCacheDirFromEnvironment(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	t.Setenv(testenv.TestCacheEnv, dir)
	if got := testenv.CacheDir(t); got != dir {
		t.Errorf("CacheDir = %s, want %s", got, dir)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Errorf("CacheDir did not create %s: %v", dir, err)
	}
}

func TestDebianBase(t *testing.T) {
	a := testenv.DebianBase(t)
	b := testenv.DebianBase(t)
	if a == b || a.Digest != b.Digest || a.LayoutDir != b.LayoutDir {
		t.Errorf("two calls: %+v and %+v; want equal copies", a, b)
	}
	if filepath.Dir(filepath.Dir(a.LayoutDir)) != testenv.CacheDir(t) {
		t.Errorf("LayoutDir %s is not under CacheDir %s", a.LayoutDir, testenv.CacheDir(t))
	}
	if _, err := os.Stat(filepath.Join(a.LayoutDir, "index.json")); err != nil {
		t.Error(err)
	}
}
