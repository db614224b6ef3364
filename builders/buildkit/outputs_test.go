package buildkit

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gpuforge/gpuforge/recipes"
)

func TestWriteOutputs(t *testing.T) {
	dir := t.TempDir()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	p, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "layout")
	tags := []string{"registry.example.com/team/app:1", "registry.example.com/team/app:latest"}

	// docker: loadable by `docker load`, every tag, the same image.
	dockerTar := filepath.Join(dir, "out", "app-docker.tar")
	if err := WriteOutput(src, tags, recipes.Output{Type: "docker", Dest: dockerTar}); err != nil {
		t.Fatal(err)
	}
	for _, tg := range tags {
		ref, _ := name.NewTag(tg)
		got, err := tarball.ImageFromPath(dockerTar, &ref)
		if err != nil {
			t.Fatalf("docker tarball lacks %s: %v", tg, err)
		}
		if d, _ := got.Digest(); d != want {
			t.Errorf("%s: digest %s, want %s", tg, d, want)
		}
	}

	// oci: a tar archive of the layout, deterministic.
	ociTar := filepath.Join(dir, "out", "app-oci.tar")
	if err := WriteOutput(src, tags, recipes.Output{Type: "oci", Dest: ociTar}); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(ociTar)
	if err := WriteOutput(src, tags, recipes.Output{Type: "oci", Dest: ociTar}); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(ociTar)
	if len(first) == 0 || string(first) != string(second) {
		t.Error("the OCI tarball is empty or differs between two writes of the same layout")
	}

	// oci-layout: a copy that go-containerregistry reads back.
	copyDir := filepath.Join(dir, "out", "layout-copy")
	if err := WriteOutput(src, tags, recipes.Output{Type: "oci-layout", Dest: copyDir}); err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(copyDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := firstImage(idx)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := got.Digest(); d != want {
		t.Errorf("layout copy: digest %s, want %s", d, want)
	}
}
