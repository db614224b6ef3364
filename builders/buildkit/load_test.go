package buildkit_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/internal/testenv"
	"github.com/gpuforge/gpuforge/recipes"
)

// TestConcurrentBuildsOneDaemon is the load a shared builder sees: 8 builds at once on one
// daemon — 4 different recipes, each built twice at the same time — with their own output
// directories. Every build must succeed; the two builds of a recipe must give the same digest
// (same recipe, same SOURCE_DATE_EPOCH), different recipes different ones; and every image must
// hold the files its recipe wrote, read back from its own OCI layout. The wall time is logged for
// bench/RESULTS.md, not asserted.
func TestConcurrentBuildsOneDaemon(t *testing.T) {
	testenv.DebianBase(t)
	c := connect(t)
	epoch := time.Unix(1767225600, 0)
	const kinds, copies = 4, 2
	rs := make([]*recipes.Recipe, kinds)
	for k := range kinds {
		rs[k] = e2eRecipe(t, fmt.Sprintf(`
image "load" {
  from = base.debian
  run = [
    "seq 1 %d | sha256sum > /load.sum",
    "echo recipe-%d > /load.txt",
  ]
}
`, 100000*(k+1), k))
	}
	type result struct {
		kind   int
		digest string
		layout string
		err    error
	}
	results := make([]result, kinds*copies)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range results {
		k := i % kinds
		out := t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := buildkit.Build(ctx, c, rs[k], []string{"load"}, buildkit.WithOutDir(out),
				buildkit.WithCacheDir(testenv.CacheDir(t)), buildkit.WithEpoch(epoch))
			results[i] = result{kind: k, err: err}
			if err == nil {
				results[i].digest, results[i].layout = rep.Images[0].Digest.String(), rep.Images[0].LayoutDir
			}
		}()
	}
	wg.Wait()
	t.Logf("%d concurrent builds (%d recipes × %d) on one daemon: %.1f s wall", len(results), kinds, copies, time.Since(start).Seconds())

	byKind := map[int]string{}
	for i, r := range results {
		if r.err != nil {
			t.Errorf("build %d (recipe %d): %v", i, r.kind, r.err)
			continue
		}
		if d, ok := byKind[r.kind]; ok && d != r.digest {
			t.Errorf("recipe %d built twice at once gave %s and %s", r.kind, d, r.digest)
		}
		byKind[r.kind] = r.digest
		files := layerFiles(t, r.layout)
		if got, want := string(files["load.txt"]), fmt.Sprintf("recipe-%d\n", r.kind); got != want {
			t.Errorf("build %d: /load.txt = %q, want %q", i, got, want)
		}
		if len(files["load.sum"]) == 0 {
			t.Errorf("build %d: /load.sum is missing", i)
		}
	}
	seen := map[string]int{}
	for k, d := range byKind {
		if other, ok := seen[d]; ok {
			t.Errorf("recipes %d and %d gave the same digest %s", other, k, d)
		}
		seen[d] = k
	}
}
