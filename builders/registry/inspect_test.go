package registry

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/gpuforge/gpuforge/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// fixedImage is a deterministic OCI image: uncompressed tar layers with fixed headers, a config
// with a fixed creation time, platform and labels, and manifest annotations. Its digest does not
// depend on the Go version (no compression).
func fixedImage(t *testing.T, platform string, files map[string]string, labels, annotations map[string]string) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, n := range slices.Sorted(maps.Keys(files)) {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		epoch := time.Unix(1700000000, 0).UTC()
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[n])); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		var err error
		img, err = mutate.AppendLayers(img, static.NewLayer(b.Bytes(), types.OCIUncompressedLayer))
		if err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	p, _ := v1.ParsePlatform(platform)
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: time.Unix(1700000000, 0).UTC()}
	cf.Config.Labels = labels
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return mutate.Annotations(img, annotations).(v1.Image)
}

// TestInspectGolden pushes a fixed two-platform index and compares Inspect's result, as JSON,
// with testdata/inspect_index.golden (host replaced by REGISTRY). Run with -update to rewrite it.
func TestInspectGolden(t *testing.T) {
	reg := testenv.StartRegistry(t)
	labels := map[string]string{
		"org.opencontainers.image.source": "https://example.com/ml/trainer",
		"dev.gpuforge.recipe":             "examples/ngc-pytorch.hcl",
		"maintainer":                      "ml-platform",
	}
	amd := fixedImage(t, "linux/amd64", map[string]string{"app/train.py": "print('amd64')\n", "etc/motd": "hello\n"},
		labels, map[string]string{"dev.gpuforge.target": "image.trainer"})
	arm := fixedImage(t, "linux/arm64/v8", map[string]string{"app/train.py": "print('arm64')\n"},
		labels, map[string]string{"dev.gpuforge.target": "image.trainer"})
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, img := range []v1.Image{amd, arm} {
		cf, _ := img.ConfigFile()
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: cf.Platform()}})
	}
	idx = mutate.Annotations(idx, map[string]string{
		"org.opencontainers.image.version": "24.10",
		"org.opencontainers.image.created": "2026-11-28T00:00:00Z",
		"dev.gpuforge.build-id":            "b-0001",
		"com.example.unrelated":            "kept in Annotations, not in Metadata",
	}).(v1.ImageIndex)
	if _, err := Push(ctxFor(t), writeLayout(t, idx, ""), reg.Ref("ml/trainer:24.10"), testOpts(reg)...); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ ref, golden string }{
		{reg.Ref("ml/trainer:24.10"), "inspect_index.golden"},
		{reg.Ref("ml/trainer@" + digestOf(t, amd).String()), "inspect_image.golden"},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			d, err := Inspect(ctxFor(t), tc.ref, testOpts(reg)...)
			if err != nil {
				t.Fatal(err)
			}
			out, err := json.MarshalIndent(d, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got := strings.ReplaceAll(string(out), reg.Host, "REGISTRY") + "\n"
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestInspectGolden -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("Inspect(%s) differs from %s (-want +got):\n%s", tc.ref, path, diff)
			}
		})
	}

	// Sanity checks that do not depend on the golden file.
	d, err := Inspect(ctxFor(t), reg.Ref("ml/trainer:24.10"), testOpts(reg)...)
	if err != nil {
		t.Fatal(err)
	}
	if d.Digest != digestOf(t, idx).String() || len(d.Platforms) != 2 || d.Platforms[1].Platform != "linux/arm64/v8" {
		t.Errorf("Inspect = %+v", d)
	}
	p := d.Platforms[0]
	if p.Layers != 2 || p.Size != p.ManifestSize+p.ConfigSize+p.LayersSize || p.Labels["maintainer"] != "ml-platform" {
		t.Errorf("platform %+v", p)
	}
	for _, k := range []string{"dev.gpuforge.build-id", "dev.gpuforge.target", "dev.gpuforge.recipe", "org.opencontainers.image.source", "org.opencontainers.image.version"} {
		if d.Metadata[k] == "" {
			t.Errorf("Metadata lacks %s: %v", k, d.Metadata)
		}
	}
	if _, ok := d.Metadata["maintainer"]; ok {
		t.Errorf("Metadata has an unrelated label: %v", d.Metadata)
	}

	_, err = Inspect(ctxFor(t), reg.Ref("ml/trainer:nope"), testOpts(reg)...)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), reg.Host+"/ml/trainer") {
		t.Errorf("Inspect of a missing tag: %v", err)
	}
}
