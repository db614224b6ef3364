package buildkit_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/moby/buildkit/client"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/internal/testenv"
	"github.com/gpuforge/gpuforge/recipes"
)

// e2eRecipe writes a recipe whose base is the Debian bookworm fixture every test shares, and
// returns the loaded recipe. The bootstrap block matches testenv.DebianBase, so the base comes
// from its cache.
func e2eRecipe(t *testing.T, images string) *recipes.Recipe {
	t.Helper()
	dir := t.TempDir()
	src := testenv.DebianBaseBlock("debian") + "\n" + images
	if err := os.WriteFile(filepath.Join(dir, "recipe.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r, diags := recipes.Load(filepath.Join(dir, "recipe.hcl"), recipes.Options{Env: []string{}})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return r
}

func connect(t *testing.T) *client.Client {
	t.Helper()
	addr := testenv.StartBuildkitd(t)
	c, err := buildkit.Connect(context.Background(), buildkit.WithAddress(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func build(t *testing.T, c *client.Client, r *recipes.Recipe, names []string, opts ...buildkit.BuildOption) (*buildkit.Report, error) {
	t.Helper()
	testenv.DebianBase(t) // bootstrap once per machine, before the clock of the build starts
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	opts = append([]buildkit.BuildOption{buildkit.WithOutDir(t.TempDir()), buildkit.WithCacheDir(testenv.CacheDir(t))}, opts...)
	return buildkit.Build(ctx, c, r, names, opts...)
}

// layerFiles reads every regular file of every layer of the images in an OCI layout, looking
// through nested indexes (an image with an attestation is an index).
func layerFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	var walk func(idx v1.ImageIndex)
	walk = func(idx v1.ImageIndex) {
		m, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, desc := range m.Manifests {
			if desc.MediaType.IsIndex() {
				inner, err := idx.ImageIndex(desc.Digest)
				if err != nil {
					t.Fatal(err)
				}
				walk(inner)
				continue
			}
			img, err := idx.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range layers {
				rc, err := l.Uncompressed()
				if err != nil {
					t.Fatal(err)
				}
				tr := tar.NewReader(rc)
				for {
					h, err := tr.Next()
					if err != nil {
						break
					}
					if h.Typeflag == tar.TypeReg {
						data, _ := io.ReadAll(tr)
						files[h.Name] = data
					}
				}
				rc.Close()
			}
		}
	}
	walk(idx)
	return files
}

func TestBuildSharedBaseOneSolve(t *testing.T) {
	c := connect(t)
	r := e2eRecipe(t, `
image "common" {
  from = base.debian
  run  = ["echo common > /common.txt"]
}

image "left" {
  from = image.common
  run  = ["echo left > /left.txt"]
}

image "right" {
  from = image.common
  run  = ["echo right > /right.txt"]
}
`)
	rep, err := build(t, c, r, []string{"left", "right"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Images) != 2 {
		t.Fatalf("images = %d", len(rep.Images))
	}
	common := 0
	for _, s := range rep.Steps {
		if strings.Contains(s.Name, "echo common") {
			common++
		}
	}
	if common != 1 {
		t.Errorf("the shared step ran %d times in the report, want once: %+v", common, rep.Steps)
	}
	for _, img := range rep.Images {
		files := layerFiles(t, img.LayoutDir)
		side := strings.TrimPrefix(img.Address, "image.")
		if string(files[side+".txt"]) != side+"\n" || string(files["common.txt"]) != "common\n" {
			t.Errorf("%s: layers lack %s.txt or common.txt", img.Address, side)
		}
		if _, ok := files["etc/debian_version"]; !ok {
			t.Errorf("%s: the Debian base is missing", img.Address)
		}
		if !strings.HasPrefix(img.Digest.String(), "sha256:") {
			t.Errorf("%s: digest %q", img.Address, img.Digest)
		}
	}
}

func TestBuildChangedRunRebuildsOnlyDependents(t *testing.T) {
	c := connect(t)
	recipe := func(second string) *recipes.Recipe {
		return e2eRecipe(t, `
image "app" {
  from = base.debian
  run  = ["echo first > /first.txt", "`+second+`", "echo third > /third.txt"]
}
`)
	}
	if _, err := build(t, c, recipe("echo second > /second.txt"), []string{"app"}); err != nil {
		t.Fatal(err)
	}
	rep, err := build(t, c, recipe("echo changed > /second.txt"), []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"echo first": true, "echo changed": false, "echo third": false}
	for prefix, cached := range want {
		found := false
		for _, s := range rep.Steps {
			if strings.Contains(s.Name, "run "+prefix) {
				found = true
				if s.Cached != cached {
					t.Errorf("step %q cached = %v, want %v", s.Name, s.Cached, cached)
				}
			}
		}
		if !found {
			t.Errorf("no step for %q in %+v", prefix, rep.Steps)
		}
	}
}

func TestBuildReproducibleFromEmptyCaches(t *testing.T) {
	r := e2eRecipe(t, `
image "repro" {
  from = base.debian
  run  = ["echo same > /same.txt", "touch /new-file && mkdir -p /var/made"]
  env  = { A = "1" }
}
`)
	epoch := time.Unix(1735689600, 0)
	var digests []string
	for i := 0; i < 2; i++ {
		c := connect(t) // a fresh daemon: an empty build cache
		rep, err := build(t, c, r, []string{"repro"}, buildkit.WithEpoch(epoch))
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, rep.Images[0].Digest.String())
	}
	if digests[0] != digests[1] {
		t.Errorf("same recipe and SOURCE_DATE_EPOCH gave %s and %s", digests[0], digests[1])
	}
}

func TestBuildSecretNeverInImage(t *testing.T) {
	c := connect(t)
	const canary = "canary-7f3d9c2e5b1a4d8f9e0c"
	r := e2eRecipe(t, `
image "secret" {
  from = base.debian
  secret "token" {
    env = "GPUFORGE_TEST_TOKEN"
  }
  run = ["test \"$(cat /run/secrets/token)\" = \"$GPUFORGE_TEST_TOKEN\" && echo used-the-secret > /proof"]
}

image "leaky" {
  from = base.debian
  env  = { TOKEN = "`+canary+`" }
  run  = ["echo \"$TOKEN\" > /leak"]
}
`)
	var progress bytes.Buffer
	lookup := func(k string) (string, bool) {
		if k == "GPUFORGE_TEST_TOKEN" {
			return canary, true
		}
		return "", false
	}
	rep, err := build(t, c, r, []string{"secret", "leaky"}, buildkit.WithLookupEnv(lookup),
		buildkit.WithProgress(&progress, "plain"), buildkit.WithProvenance(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range rep.Images {
		found := blobsContain(t, img.LayoutDir, canary)
		switch img.Address {
		case "image.secret":
			if found != "" {
				t.Errorf("the build secret is in %s", found)
			}
			if string(layerFiles(t, img.LayoutDir)["proof"]) != "used-the-secret\n" {
				t.Error("the run command did not see the secret")
			}
		case "image.leaky":
			if found == "" {
				t.Error("negative control: a plain env value was not found, so the scan proves nothing")
			}
		}
	}
	if strings.Contains(progress.String(), canary) && !strings.Contains(progress.String(), "TOKEN="+canary) {
		t.Error("the build log holds the secret")
	}
}

// blobsContain looks for s in every blob of a layout: layers decompressed, configs, manifests,
// attestations, index. It returns where it was found.
func blobsContain(t *testing.T, dir, s string) string {
	t.Helper()
	var where string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || where != "" {
			return nil
		}
		data, _ := os.ReadFile(p)
		if bytes.Contains(data, []byte(s)) {
			where = p
			return nil
		}
		if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
			if plain, err := io.ReadAll(zr); err == nil && bytes.Contains(plain, []byte(s)) {
				where = p + " (decompressed)"
			}
		}
		return nil
	})
	return where
}

func TestBuildFailingRunNamesRecipeLine(t *testing.T) {
	c := connect(t)
	r := e2eRecipe(t, `
image "broken" {
  from = base.debian
  run = [
    "echo fine",
    "echo about-to-fail-7731; exit 3",
  ]
}
`)
	_, err := build(t, c, r, []string{"broken"})
	var be *buildkit.BuildError
	if !errors.As(err, &be) {
		t.Fatalf("err = %v, want a BuildError", err)
	}
	msg := be.Error()
	src, _ := os.ReadFile(filepath.Join(r.Dir, "recipe.hcl"))
	line := strings.Count(string(src[:bytes.Index(src, []byte("about-to-fail-7731"))]), "\n") + 1
	for _, want := range []string{"image.broken", "recipe.hcl:", "exit 3", "about-to-fail-7731"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(be.Location, ":"+strconv.Itoa(line)+":") {
		t.Errorf("location %q, want line %d", be.Location, line)
	}
}

// TestRunInImage runs a script inside a built image the way GPU checks run: files in, files
// out, never cached. Without a GPU it runs with no device; a CDI device that no spec defines
// fails with the device named.
func TestRunInImage(t *testing.T) {
	c := connect(t)
	r := e2eRecipe(t, `
image "checked" {
  from = base.debian
  env  = { CHECK_ENV = "from-the-image" }
}
`)
	rep, err := build(t, c, r, []string{"checked"})
	if err != nil {
		t.Fatal(err)
	}
	img := rep.Images[0]
	run := buildkit.InImageRun{
		LayoutDir: img.LayoutDir, Digest: img.Digest, Platform: platforms.DefaultSpec(),
		Files:  map[string][]byte{"input.txt": []byte("hello from gpuforge\n")},
		Script: `cp /gpuforge/in/input.txt /gpuforge/out/copied.txt && echo "$CHECK_ENV $NCCL_NVLS_ENABLE" > /gpuforge/out/env.txt && cat /proc/sys/kernel/random/uuid > /gpuforge/out/run-id`,
		Env:    map[string]string{"NCCL_NVLS_ENABLE": "0"},
	}
	ctx := context.Background()
	first, err := buildkit.RunInImage(ctx, c, run, nil, "quiet")
	if err != nil {
		t.Fatal(err)
	}
	if string(first["copied.txt"]) != "hello from gpuforge\n" || string(first["env.txt"]) != "from-the-image 0\n" {
		t.Errorf("outputs = %q", first)
	}
	second, err := buildkit.RunInImage(ctx, c, run, nil, "quiet")
	if err != nil {
		t.Fatal(err)
	}
	if len(first["run-id"]) == 0 || string(first["run-id"]) == string(second["run-id"]) {
		t.Error("the check was taken from the cache: both runs have the same run id")
	}
	run.Devices = []string{"nvidia.com/gpu=7"}
	if _, err := buildkit.RunInImage(ctx, c, run, nil, "quiet"); err == nil || !strings.Contains(err.Error(), "nvidia.com/gpu=7") {
		t.Errorf("an unknown CDI device: err = %v, want it named", err)
	}
}
