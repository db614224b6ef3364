package buildkit_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/internal/testenv"
	"github.com/gpuforge/gpuforge/recipes"
)

// The mirror the fake mmdebstrap is given; nothing connects to it.
const fakeMirror = "http://mirror.example.org/debian"

var fakeEpoch = time.Unix(1700000000, 0).UTC()

// fakeMmdebstrap writes a shell script that stands in for mmdebstrap: it answers --version,
// appends its arguments and SOURCE_DATE_EPOCH to DIR/calls, sleeps while DIR/sleep exists
// (stopped by SIGTERM), fails when DIR/fail exists, and writes a small root filesystem
// tarball, with mtimes in the future and device nodes left out, to its target argument.
func fakeMmdebstrap(t *testing.T) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "mmdebstrap")
	script := `#!/bin/sh
set -e
dir=$(dirname "$0")
if [ "$1" = --version ]; then echo "mmdebstrap 0.0-fake"; exit 0; fi
echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH $*" >> "$dir/calls"
if [ -e "$dir/sleep" ]; then exec sleep 60; fi
if [ -e "$dir/fail" ]; then echo "E: the fake mirror is broken" >&2; exit 1; fi
n=$#
eval target=\${$((n - 1))}
root=$(mktemp -d)
mkdir -p "$root/etc" "$root/usr/bin" "$root/var/lib" "$root/tmp"
echo 12.99 > "$root/etc/debian_version"
echo '#!/bin/sh' > "$root/usr/bin/true"
chmod 755 "$root/usr/bin/true"
ln "$root/usr/bin/true" "$root/usr/bin/also-true"
ln -s usr/bin "$root/bin"
chmod 1777 "$root/tmp"
touch -d @2000000000 "$root/var/lib/future"
tar --sort=name --numeric-owner --format=pax -C "$root" -cf "$target" .
rm -rf "$root"
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func fakeCalls(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "calls"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func fakeOpts(mm, cacheDir string, more ...buildkit.BootstrapOption) []buildkit.BootstrapOption {
	return append([]buildkit.BootstrapOption{
		buildkit.WithMmdebstrapPath(mm),
		buildkit.WithBootstrapCacheDir(cacheDir),
		buildkit.WithBootstrapMirror(fakeMirror),
		buildkit.WithBootstrapEpoch(fakeEpoch),
	}, more...)
}

func bookworm() *recipes.Bootstrap {
	return &recipes.Bootstrap{Suite: "bookworm", Architecture: "amd64"}
}

// layerEntry is one entry of a layer's tar.
type layerEntry struct {
	hdr  *tar.Header
	data []byte
}

// checkLayout checks what every bootstrapped layout must be, and returns the entries of its
// one layer by name.
func checkLayout(t *testing.T, res *buildkit.BootstrapResult, arch string) map[string]layerEntry {
	t.Helper()
	if filepath.Base(res.LayoutDir) != res.Key || filepath.Base(filepath.Dir(res.LayoutDir)) != "bootstrap" {
		t.Errorf("LayoutDir = %s, want <cache>/bootstrap/%s", res.LayoutDir, res.Key)
	}
	idx, err := layout.ImageIndexFromPath(res.LayoutDir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != res.RefName || !strings.Contains(got, res.Key[:12]) {
		t.Errorf("ref.name annotation = %q, RefName = %q; want equal and derived from the key %s", got, res.RefName, res.Key)
	}
	if desc.Digest.String() != res.Digest.String() || desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("index.json names %s (%s), want %s (%s)", desc.Digest, desc.MediaType, res.Digest, types.OCIManifestSchema1)
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate.Image: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != arch {
		t.Errorf("config platform = %s/%s, want linux/%s", cf.OS, cf.Architecture, arch)
	}
	if res.Platform.OS != "linux" || res.Platform.Architecture != arch {
		t.Errorf("Platform = %+v, want linux/%s", res.Platform, arch)
	}
	if len(cf.History) != 1 || cf.History[0].CreatedBy != "gpuforge bootstrap bookworm" || !cf.History[0].Created.Time.Equal(cf.Created.Time) {
		t.Errorf("history = %+v, want one entry created_by %q at %s", cf.History, "gpuforge bootstrap bookworm", cf.Created.Time)
	}
	if !slices.ContainsFunc(cf.Config.Env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		t.Errorf("config env %q has no PATH", cf.Config.Env)
	}
	cfg, err := res.Config()
	if err != nil || cfg.Architecture != arch || !cfg.Created.Equal(cf.Created.Time) {
		t.Errorf("Config() = %+v, %v; want the layout's config", cfg.Platform, err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries := map[string]layerEntry{}
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var data []byte
		if h.Typeflag == tar.TypeReg && h.Size < 1<<20 {
			if data, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
		if _, dup := entries[h.Name]; dup {
			t.Errorf("layer has %s twice", h.Name)
		}
		entries[h.Name] = layerEntry{h, data}
		names = append(names, h.Name)
		if strings.HasPrefix(h.Name, "./") || strings.HasPrefix(h.Name, "/") || h.Name == "" {
			t.Errorf("layer entry %q is not relative to the root", h.Name)
		}
		if h.ModTime.After(cf.Created.Time) {
			t.Errorf("%s: mtime %s after the epoch %s", h.Name, h.ModTime, cf.Created.Time)
		}
		if h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock {
			t.Errorf("layer has device node %s", h.Name)
		}
		if strings.HasPrefix(h.Name, "dev/") && h.Name != "dev/" {
			t.Errorf("layer has %s: /dev belongs to the runtime", h.Name)
		}
	}
	if dev, ok := entries["dev/"]; !ok || dev.hdr.Typeflag != tar.TypeDir {
		t.Errorf("layer has no dev/ directory")
	}
	if e, ok := entries["etc/debian_version"]; !ok || len(e.data) == 0 {
		t.Errorf("layer has no etc/debian_version")
	}
	return entries
}

func TestBootstrapFakeLayoutAndArguments(t *testing.T) {
	mm, fake := fakeMmdebstrap(t)
	cache := t.TempDir()
	b := &recipes.Bootstrap{Suite: "bookworm", Architecture: "amd64", Components: []string{"main", "contrib"}, Packages: []string{"zstd", "ca-certificates", "zstd"}}
	var log bytes.Buffer
	res, err := buildkit.Bootstrap(context.Background(), b, fakeOpts(mm, cache, buildkit.WithBootstrapLogWriter(&log))...)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cached {
		t.Error("first bootstrap: Cached = true")
	}
	if res.Mirror != fakeMirror {
		t.Errorf("Mirror = %q, want %q", res.Mirror, fakeMirror)
	}
	entries := checkLayout(t, res, "amd64")
	if e := entries["etc/debian_version"]; string(e.data) != "12.99\n" {
		t.Errorf("etc/debian_version = %q", e.data)
	}
	if e := entries["var/lib/future"]; !e.hdr.ModTime.Equal(fakeEpoch) {
		t.Errorf("var/lib/future mtime = %s, want it clamped to %s", e.hdr.ModTime, fakeEpoch)
	}
	// tar --sort=name stores usr/bin/also-true first, so usr/bin/true is the hard link.
	if e := entries["usr/bin/true"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeLink || e.hdr.Linkname != "usr/bin/also-true" {
		t.Errorf("hard link usr/bin/true = %+v, want a link to usr/bin/also-true", e.hdr)
	}
	if e := entries["bin"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != "usr/bin" {
		t.Errorf("symlink bin = %+v, want -> usr/bin", e.hdr)
	}
	if e := entries["tmp/"]; e.hdr == nil || e.hdr.Mode&0o7777 != 0o1777 {
		t.Errorf("tmp/ = %+v, want mode 1777", e.hdr)
	}

	calls := fakeCalls(t, fake)
	if len(calls) != 1 {
		t.Fatalf("mmdebstrap ran %d times, want 1: %q", len(calls), calls)
	}
	for _, want := range []string{
		"SOURCE_DATE_EPOCH=1700000000 ", " --variant=minbase ", " --components=main,contrib ",
		" --architectures=amd64 ", " --format=tar ", " --skip=output/dev ",
		" --include=ca-certificates,zstd ", " bookworm ", " " + fakeMirror,
		`--customize-hook=rm -f "$1/etc/hostname" "$1/etc/resolv.conf"`,
	} {
		if !strings.Contains(calls[0]+" ", want) {
			t.Errorf("mmdebstrap call %q lacks %q", calls[0], want)
		}
	}
	if !strings.Contains(log.String(), "mmdebstrap") {
		t.Errorf("the log writer got %q, want mmdebstrap's command line", log.String())
	}

	// Same inputs (packages in another order): from the cache, without running mmdebstrap.
	b2 := &recipes.Bootstrap{Suite: "bookworm", Architecture: "amd64", Components: []string{"main", "contrib"}, Packages: []string{"ca-certificates", "zstd"}}
	again, err := buildkit.Bootstrap(context.Background(), b2, fakeOpts(mm, cache)...)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cached || again.Digest != res.Digest || again.Key != res.Key || again.LayoutDir != res.LayoutDir || again.RefName != res.RefName {
		t.Errorf("second bootstrap = %+v, want the first (%+v) from the cache", again, res)
	}
	if n := len(fakeCalls(t, fake)); n != 1 {
		t.Errorf("mmdebstrap ran %d times, want 1", n)
	}

	// The fake writes the same tar for the same epoch; another cache directory gives the same
	// digest.
	other, err := buildkit.Bootstrap(context.Background(), b, fakeOpts(mm, t.TempDir())...)
	if err != nil {
		t.Fatal(err)
	}
	if other.Cached || other.Digest != res.Digest || other.Key != res.Key {
		t.Errorf("bootstrap into another cache = %s (cached %v, key %s), want %s rebuilt", other.Digest, other.Cached, other.Key, res.Digest)
	}
}

func TestBootstrapKey(t *testing.T) {
	mm, _ := fakeMmdebstrap(t)
	cache := t.TempDir()
	key := func(b *recipes.Bootstrap, opts ...buildkit.BootstrapOption) string {
		t.Helper()
		res, err := buildkit.Bootstrap(context.Background(), b, fakeOpts(mm, cache, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return res.Key
	}
	base := key(bookworm())
	// Defaults are spelled out or not: the same base.
	if k := key(&recipes.Bootstrap{Distribution: "debian", Suite: "bookworm", Variant: "minbase", Components: []string{"main"}, Architecture: "amd64"}); k != base {
		t.Errorf("explicit defaults give key %s, want %s", k, base)
	}
	if k := key(bookworm(), buildkit.WithBootstrapMirror(fakeMirror+"/")); k != base {
		t.Errorf("a trailing slash on the mirror gives key %s, want %s", k, base)
	}
	if k := key(&recipes.Bootstrap{Suite: "bookworm", Architecture: "amd64", Mirror: "http://recipe.example.org/debian"}); k != base {
		t.Errorf("WithBootstrapMirror does not override the recipe's mirror: key %s, want %s", k, base)
	}
	seen := map[string]string{base: "nothing"}
	for _, c := range []struct {
		change string
		key    string
	}{
		{"suite", key(&recipes.Bootstrap{Suite: "trixie", Architecture: "amd64"})},
		{"variant", key(&recipes.Bootstrap{Suite: "bookworm", Architecture: "amd64", Variant: "apt"})},
		{"components", key(&recipes.Bootstrap{Suite: "bookworm", Architecture: "amd64", Components: []string{"main", "contrib"}})},
		{"component order", key(&recipes.Bootstrap{Suite: "bookworm", Architecture: "amd64", Components: []string{"contrib", "main"}})},
		{"packages", key(&recipes.Bootstrap{Suite: "bookworm", Architecture: "amd64", Packages: []string{"zstd"}})},
		{"architecture", key(&recipes.Bootstrap{Suite: "bookworm", Architecture: "arm64"})},
		{"mirror", key(bookworm(), buildkit.WithBootstrapMirror("http://other.example.org/debian"))},
		{"recipe mirror", key(&recipes.Bootstrap{Suite: "bookworm", Architecture: "amd64", Mirror: "http://recipe.example.org/debian"}, buildkit.WithBootstrapMirror(""))},
		{"epoch", key(bookworm(), buildkit.WithBootstrapEpoch(fakeEpoch.Add(time.Second)))},
	} {
		if prev, dup := seen[c.key]; dup {
			t.Errorf("changing the %s gives the key of changing the %s", c.change, prev)
		}
		seen[c.key] = c.change
	}
}

func TestBootstrapInvalidInputs(t *testing.T) {
	mm, fake := fakeMmdebstrap(t)
	cache := t.TempDir()
	for name, tc := range map[string]struct {
		b    *recipes.Bootstrap
		opts []buildkit.BootstrapOption
		want string
	}{
		"nil":          {nil, nil, "no bootstrap block"},
		"distribution": {&recipes.Bootstrap{Distribution: "fedora", Suite: "40"}, nil, "unknown distribution"},
		"suite":        {&recipes.Bootstrap{Suite: "bookworm main"}, nil, "invalid suite"},
		"no suite":     {&recipes.Bootstrap{}, nil, "invalid suite"},
		"package":      {&recipes.Bootstrap{Suite: "bookworm", Packages: []string{"a,b"}}, nil, "invalid package"},
		"component":    {&recipes.Bootstrap{Suite: "bookworm", Components: []string{"main contrib"}}, nil, "invalid component"},
		"arch":         {&recipes.Bootstrap{Suite: "bookworm", Architecture: "vax"}, nil, "unsupported architecture"},
		"mirror":       {bookworm(), []buildkit.BootstrapOption{buildkit.WithBootstrapMirror("ftp://mirror.example.org/debian")}, "not an http://"},
		"mmdebstrap":   {bookworm(), []buildkit.BootstrapOption{buildkit.WithMmdebstrapPath(filepath.Join(t.TempDir(), "none"))}, "mmdebstrap"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := buildkit.Bootstrap(context.Background(), tc.b, fakeOpts(mm, cache, tc.opts...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	t.Run("env epoch", func(t *testing.T) {
		t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
		_, err := buildkit.Bootstrap(context.Background(), bookworm(),
			buildkit.WithMmdebstrapPath(mm), buildkit.WithBootstrapCacheDir(cache), buildkit.WithBootstrapMirror(fakeMirror))
		if err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
			t.Errorf("err = %v, want a SOURCE_DATE_EPOCH error", err)
		}
	})
	if calls := fakeCalls(t, fake); len(calls) != 0 {
		t.Errorf("mmdebstrap ran for invalid inputs: %q", calls)
	}
}

func TestBootstrapEpochFromEnvironment(t *testing.T) {
	mm, fake := fakeMmdebstrap(t)
	cache := t.TempDir()
	t.Setenv("SOURCE_DATE_EPOCH", "1600000000")
	opts := []buildkit.BootstrapOption{buildkit.WithMmdebstrapPath(mm), buildkit.WithBootstrapCacheDir(cache), buildkit.WithBootstrapMirror(fakeMirror)}
	res, err := buildkit.Bootstrap(context.Background(), bookworm(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := res.Config()
	if err != nil || cfg.Created == nil || cfg.Created.Unix() != 1600000000 {
		t.Errorf("created = %v, %v; want 1600000000", cfg.Created, err)
	}
	if calls := fakeCalls(t, fake); len(calls) != 1 || !strings.HasPrefix(calls[0], "SOURCE_DATE_EPOCH=1600000000 ") {
		t.Errorf("mmdebstrap calls %q, want one with SOURCE_DATE_EPOCH=1600000000", calls)
	}
	// WithBootstrapEpoch wins over the environment.
	res2, err := buildkit.Bootstrap(context.Background(), bookworm(), append(opts, buildkit.WithBootstrapEpoch(fakeEpoch))...)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Key == res.Key {
		t.Error("WithBootstrapEpoch did not change the key")
	}

	// Unset: the run uses the current time, and the base is cached under "unset".
	t.Setenv("SOURCE_DATE_EPOCH", "")
	before := time.Now().Add(-time.Second)
	res3, err := buildkit.Bootstrap(context.Background(), bookworm(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	cfg3, _ := res3.Config()
	if cfg3.Created == nil || cfg3.Created.Before(before) {
		t.Errorf("created = %v without SOURCE_DATE_EPOCH, want about now", cfg3.Created)
	}
	res4, err := buildkit.Bootstrap(context.Background(), bookworm(), opts...)
	if err != nil || !res4.Cached || res4.Digest != res3.Digest {
		t.Errorf("second bootstrap without SOURCE_DATE_EPOCH = %+v, %v; want the first from the cache", res4, err)
	}
}

func TestBootstrapDefaultCacheDir(t *testing.T) {
	mm, _ := fakeMmdebstrap(t)
	state := t.TempDir()
	t.Setenv(buildkit.StateDirEnv, state)
	t.Setenv(buildkit.CacheDirEnv, "")
	opts := []buildkit.BootstrapOption{buildkit.WithMmdebstrapPath(mm), buildkit.WithBootstrapMirror(fakeMirror), buildkit.WithBootstrapEpoch(fakeEpoch)}
	res, err := buildkit.Bootstrap(context.Background(), bookworm(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(state, "cache", "bootstrap", res.Key); res.LayoutDir != want {
		t.Errorf("LayoutDir = %s, want %s", res.LayoutDir, want)
	}

	// $GPUFORGE_CACHE_DIR wins over the state directory, WithBootstrapCacheDir over both.
	cache := t.TempDir()
	t.Setenv(buildkit.CacheDirEnv, cache)
	res, err = buildkit.Bootstrap(context.Background(), bookworm(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, "bootstrap", res.Key); res.LayoutDir != want {
		t.Errorf("with %s set: LayoutDir = %s, want %s", buildkit.CacheDirEnv, res.LayoutDir, want)
	}
	option := t.TempDir()
	res, err = buildkit.Bootstrap(context.Background(), bookworm(), append(opts, buildkit.WithBootstrapCacheDir(option))...)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(option, "bootstrap", res.Key); res.LayoutDir != want {
		t.Errorf("with WithBootstrapCacheDir: LayoutDir = %s, want %s", res.LayoutDir, want)
	}
}

func TestBootstrapInterruptedLayoutIsRebuilt(t *testing.T) {
	mm, fake := fakeMmdebstrap(t)
	cache := t.TempDir()
	res, err := buildkit.Bootstrap(context.Background(), bookworm(), fakeOpts(mm, cache)...)
	if err != nil {
		t.Fatal(err)
	}
	// What an interrupted run leaves: a layout without its marker, half an index, and a
	// temporary directory.
	if err := os.Remove(filepath.Join(res.LayoutDir, "gpuforge-bootstrap.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(res.LayoutDir, "index.json"), []byte(`{"schemaVersion": 2, "manif`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(res.LayoutDir+".tmp", "layout", "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	again, err := buildkit.Bootstrap(context.Background(), bookworm(), fakeOpts(mm, cache)...)
	if err != nil {
		t.Fatal(err)
	}
	if again.Cached || again.Digest != res.Digest {
		t.Errorf("after an interruption: cached %v, digest %s; want rebuilt with %s", again.Cached, again.Digest, res.Digest)
	}
	if n := len(fakeCalls(t, fake)); n != 2 {
		t.Errorf("mmdebstrap ran %d times, want 2", n)
	}
	checkLayout(t, again, "amd64")
	if _, err := os.Stat(res.LayoutDir + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary directory is still there: %v", err)
	}

	// The marker records the key and the digest.
	rec, err := os.ReadFile(filepath.Join(res.LayoutDir, "gpuforge-bootstrap.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(rec, &m); err != nil || m["key"] != res.Key || m["digest"] != res.Digest.String() {
		t.Fatalf("marker %s: %v", rec, err)
	}
}

func TestBootstrapFailureLeavesNothing(t *testing.T) {
	mm, fake := fakeMmdebstrap(t)
	cache := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := buildkit.Bootstrap(context.Background(), bookworm(), fakeOpts(mm, cache)...)
	if err == nil || !strings.Contains(err.Error(), "the fake mirror is broken") {
		t.Fatalf("err = %v, want mmdebstrap's error output quoted", err)
	}
	entries, _ := os.ReadDir(filepath.Join(cache, "bootstrap"))
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".lock") {
			t.Errorf("a failed bootstrap left %s", e.Name())
		}
	}
}

func TestBootstrapCancel(t *testing.T) {
	mm, fake := fakeMmdebstrap(t)
	cache := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "sleep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := buildkit.Bootstrap(ctx, bookworm(), fakeOpts(mm, cache)...)
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); len(fakeCalls(t, fake)) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("mmdebstrap did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("cancelling took %s", d)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("Bootstrap did not return after cancel")
	}
	// The lock is free and nothing half-done is used: the next call bootstraps.
	os.Remove(filepath.Join(fake, "sleep"))
	res, err := buildkit.Bootstrap(context.Background(), bookworm(), fakeOpts(mm, cache)...)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cached {
		t.Error("after a cancelled bootstrap: Cached = true")
	}
}

func TestBootstrapConcurrentCallersBootstrapOnce(t *testing.T) {
	mm, fake := fakeMmdebstrap(t)
	cache := t.TempDir()
	const n = 4
	results := make([]*buildkit.BootstrapResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = buildkit.Bootstrap(context.Background(), bookworm(), fakeOpts(mm, cache)...)
		}()
	}
	wg.Wait()
	built := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !results[i].Cached {
			built++
		}
		if results[i].Digest != results[0].Digest {
			t.Errorf("caller %d got %s, caller 0 %s", i, results[i].Digest, results[0].Digest)
		}
	}
	if calls := fakeCalls(t, fake); len(calls) != 1 || built != 1 {
		t.Errorf("mmdebstrap ran %d times and %d callers built; want 1 and 1", len(calls), built)
	}
}

// countingMmdebstrap wraps the real mmdebstrap in a script that counts its bootstraps.
func countingMmdebstrap(t *testing.T, real string) (path, counter string) {
	t.Helper()
	dir := t.TempDir()
	path, counter = filepath.Join(dir, "mmdebstrap"), filepath.Join(dir, "runs")
	script := fmt.Sprintf("#!/bin/sh\n[ \"$1\" = --version ] || echo run >> %q\nexec %q \"$@\"\n", counter, real)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, counter
}

// TestBootstrapDebian checks the shared Debian base (bootstrapped by testenv.DebianBase, from
// the host's mirror, once per machine) and that asking again is a fast cache hit.
func TestBootstrapDebian(t *testing.T) {
	base := testenv.DebianBase(t)
	entries := checkLayout(t, base, runtime.GOARCH)
	if v := string(entries["etc/debian_version"].data); !strings.HasPrefix(v, "12.") {
		t.Errorf("etc/debian_version = %q, want bookworm's 12.x", v)
	}
	for _, name := range []string{"etc/hostname", "etc/resolv.conf"} {
		if _, ok := entries[name]; ok {
			t.Errorf("the layer has the host's %s", name)
		}
	}
	for _, name := range []string{"usr/bin/apt-get", "usr/bin/dpkg", "bin"} {
		if _, ok := entries[name]; !ok {
			t.Errorf("the layer has no %s", name)
		}
	}
	mirror, err := buildkit.HostAptMirror("debian")
	if err != nil {
		t.Fatal(err)
	}
	if base.Mirror != mirror {
		t.Errorf("Mirror = %q, want the host's %q", base.Mirror, mirror)
	}

	start := time.Now()
	again, err := buildkit.Bootstrap(context.Background(), testenv.DebianBootstrap(), buildkit.WithBootstrapCacheDir(testenv.CacheDir(t)))
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cache hit in %s", took)
	if !again.Cached || again.Digest != base.Digest || again.LayoutDir != base.LayoutDir {
		t.Errorf("second bootstrap = %+v, want %+v from the cache", again, base)
	}
	if took > 2*time.Second {
		t.Errorf("the cache hit took %s", took)
	}
}

// TestBootstrapDebianReproducibleAndConcurrent bootstraps the shared base's inputs again, into
// a fresh cache directory, from two callers at once, with the SOURCE_DATE_EPOCH the shared base
// was made with: mmdebstrap runs once, and the image digest is the shared base's (same epoch,
// same mirror content).
func TestBootstrapDebianReproducibleAndConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("bootstraps Debian from the mirror (a minute or two); not in -short")
	}
	base := testenv.DebianBase(t)
	cfg, err := base.Config()
	if err != nil {
		t.Fatal(err)
	}
	epoch := *cfg.Created
	mm, runs := countingMmdebstrap(t, testenv.Tool(t, "mmdebstrap"))
	fresh := func(cache string) (*buildkit.BootstrapResult, *buildkit.BootstrapResult) {
		t.Helper()
		var wg sync.WaitGroup
		var res [2]*buildkit.BootstrapResult
		var errs [2]error
		var logs [2]bytes.Buffer
		start := time.Now()
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				res[i], errs[i] = buildkit.Bootstrap(ctx, testenv.DebianBootstrap(),
					buildkit.WithBootstrapCacheDir(cache), buildkit.WithMmdebstrapPath(mm),
					buildkit.WithBootstrapEpoch(epoch), buildkit.WithBootstrapLogWriter(&logs[i]))
			}()
		}
		wg.Wait()
		for i := range 2 {
			if errs[i] != nil {
				t.Fatalf("%v\n%s", errs[i], logs[i].String())
			}
		}
		t.Logf("bootstrapped in %s (cached: %v, %v)", time.Since(start).Round(time.Millisecond), res[0].Cached, res[1].Cached)
		if res[0].Cached == res[1].Cached || res[0].Digest != res[1].Digest {
			t.Errorf("two concurrent callers: cached %v and %v, digests %s and %s; want one bootstrap, one cache hit, one digest",
				res[0].Cached, res[1].Cached, res[0].Digest, res[1].Digest)
		}
		return res[0], res[1]
	}
	a, _ := fresh(t.TempDir())
	data, _ := os.ReadFile(runs)
	if n := strings.Count(string(data), "run"); n != 1 {
		t.Errorf("mmdebstrap ran %d times for two concurrent callers, want 1", n)
	}
	if a.Digest == base.Digest {
		return
	}
	// The shared base may predate a change of the mirror's content (a point release).
	if !slices.Equal(dpkgStatus(t, a), dpkgStatus(t, base)) {
		t.Logf("the mirror changed since the shared base was made (%s); comparing two fresh bootstraps", base.Digest)
		b, _ := fresh(t.TempDir())
		if b.Digest != a.Digest {
			t.Errorf("two bootstraps with the same SOURCE_DATE_EPOCH: %s and %s\n%s", a.Digest, b.Digest, diffLayers(t, a, b))
		}
		return
	}
	t.Errorf("same SOURCE_DATE_EPOCH and packages, different digests: %s (shared) and %s (fresh)\n%s", base.Digest, a.Digest, diffLayers(t, base, a))
}

func layerOf(t *testing.T, res *buildkit.BootstrapResult) map[string]layerEntry {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(res.LayoutDir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(v1.Hash{Algorithm: res.Digest.Algorithm().String(), Hex: res.Digest.Encoded()})
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]layerEntry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		out[h.Name] = layerEntry{h, data}
	}
}

// dpkgStatus is the "Package: ... Version: ..." pairs of the image's dpkg status.
func dpkgStatus(t *testing.T, res *buildkit.BootstrapResult) []string {
	t.Helper()
	var out []string
	pkg := ""
	for _, line := range strings.Split(string(layerOf(t, res)["var/lib/dpkg/status"].data), "\n") {
		if v, ok := strings.CutPrefix(line, "Package: "); ok {
			pkg = v
		}
		if v, ok := strings.CutPrefix(line, "Version: "); ok {
			out = append(out, pkg+"="+v)
		}
	}
	slices.Sort(out)
	return out
}

// diffLayers says which entries of two bootstrapped layers differ, and how.
func diffLayers(t *testing.T, a, b *buildkit.BootstrapResult) string {
	t.Helper()
	la, lb := layerOf(t, a), layerOf(t, b)
	var diffs []string
	for name, ea := range la {
		eb, ok := lb[name]
		switch {
		case !ok:
			diffs = append(diffs, "only in the first: "+name)
		case !bytes.Equal(ea.data, eb.data):
			diffs = append(diffs, "content differs: "+name)
		case !ea.hdr.ModTime.Equal(eb.hdr.ModTime) || ea.hdr.Mode != eb.hdr.Mode || ea.hdr.Linkname != eb.hdr.Linkname || ea.hdr.Uid != eb.hdr.Uid || ea.hdr.Gid != eb.hdr.Gid:
			diffs = append(diffs, fmt.Sprintf("header differs: %s: %v %o %q / %v %o %q", name, ea.hdr.ModTime, ea.hdr.Mode, ea.hdr.Linkname, eb.hdr.ModTime, eb.hdr.Mode, eb.hdr.Linkname))
		}
	}
	for name := range lb {
		if _, ok := la[name]; !ok {
			diffs = append(diffs, "only in the second: "+name)
		}
	}
	slices.Sort(diffs)
	if len(diffs) > 40 {
		diffs = append(diffs[:40], fmt.Sprintf("... and %d more", len(diffs)-40))
	}
	if len(diffs) == 0 {
		return "the layers have the same entries; the order or the tar encoding differs"
	}
	return strings.Join(diffs, "\n")
}

// TestBootstrapBuildKitReadsLayout gives the shared base to a real buildkitd the way Build
// does (SolveOpt.OCIStores and State) and runs a command in it.
func TestBootstrapBuildKitReadsLayout(t *testing.T) {
	base := testenv.DebianBase(t)
	addr := testenv.StartBuildkitd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := client.New(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	run := base.State().Run(llb.Shlex(`sh -c 'cat /etc/debian_version > /out; echo "$PATH" >> /out'`)).Root()
	// Export the one file, not the whole root filesystem.
	def, err := llb.Scratch().File(llb.Copy(run, "/out", "/out")).Marshal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	store, err := base.ContentStore()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	start := time.Now()
	_, err = c.Solve(ctx, def, client.SolveOpt{
		OCIStores: map[string]content.Store{base.StoreName(): store},
		Exports:   []client.ExportEntry{{Type: client.ExporterLocal, OutputDir: out}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BuildKit imported the base, ran a command and exported the result in %s", time.Since(start).Round(time.Millisecond))
	got, err := os.ReadFile(filepath.Join(out, "out"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "12.") || !strings.Contains(lines[1], "/usr/sbin") {
		t.Errorf("in the base: %q; want bookworm's debian_version and the image's PATH", got)
	}
	if base.Digest.Validate() != nil || !strings.HasPrefix(base.StoreName(), "gpuforge-bootstrap-") {
		t.Errorf("digest %q, store name %q", base.Digest, base.StoreName())
	}
}
