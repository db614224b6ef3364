package buildkit_test

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildSharedCacheAcrossDaemons is the shared cache between CI runs: a build on one daemon
// exports its cache (cache_to, a local directory, mode=max); a build of the same recipe on a
// second, fresh daemon imports it (cache_from) and takes the expensive steps from it instead of
// running them. The steps write random bytes, so the second image can only have the first one's
// digest if its layers came from the cache; the events say the steps were cached, and a third
// fresh daemon without cache_from (the negative control) runs them.
func TestBuildSharedCacheAcrossDaemons(t *testing.T) {
	cacheDir := filepath.Join(t.TempDir(), "cache")
	recipe := func(withCache bool) string {
		cache := ""
		if withCache {
			cache = `
  cache_to   = ["type=local,dest=` + cacheDir + `,mode=max"]
  cache_from = ["type=local,src=` + cacheDir + `"]`
		}
		return `
image "cached" {
  from = base.debian
  run = [
    "head -c 16777216 /dev/urandom > /payload",
    "sha256sum /payload > /payload.sha256",
  ]` + cache + `
}
`
	}
	r := e2eRecipe(t, recipe(true))

	first, err := build(t, connect(t), r, []string{"cached"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := build(t, connect(t), r, []string{"cached"})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := first.Images[0].Digest, second.Images[0].Digest; a != b {
		t.Errorf("the second daemon built %s, the first %s: the random payload was made again, not taken from the cache", b, a)
	}
	runs := 0
	for _, s := range second.Steps {
		if strings.Contains(s.Name, "run head -c") || strings.Contains(s.Name, "run sha256sum") {
			runs++
			if !s.Cached {
				t.Errorf("step %q ran on the second daemon; it should come from the imported cache", s.Name)
			}
		}
	}
	if runs != 2 {
		t.Errorf("the second build's events name %d of the 2 run steps: %+v", runs, second.Steps)
	}

	// Negative control: a fresh daemon without the cache runs the steps and makes another payload.
	third, err := build(t, connect(t), e2eRecipe(t, recipe(false)), []string{"cached"})
	if err != nil {
		t.Fatal(err)
	}
	if third.Images[0].Digest == first.Images[0].Digest {
		t.Error("a daemon without the cache built the same digest: the test cannot tell a cache hit from a rebuild")
	}
	for _, s := range third.Steps {
		if strings.Contains(s.Name, "run head -c") && s.Cached {
			t.Errorf("step %q is cached on a fresh daemon without cache_from", s.Name)
		}
	}
}
