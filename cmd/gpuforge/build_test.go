package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/internal/testenv"
	"github.com/gpuforge/gpuforge/pipeline"
)

// TestBuildPushesToAuthenticatedRegistry is the end-to-end path a user takes: a recipe with a
// shared base and two derived images, built in one run by `gpuforge build` on a real buildkitd,
// pushed to a real registry that needs TLS (test CA) and a password, then pulled back with
// go-containerregistry and compared, digest and content.
func TestBuildPushesToAuthenticatedRegistry(t *testing.T) {
	testEnv(t)
	testenv.DebianBase(t)
	reg := testenv.StartRegistry(t)
	addr := testenv.StartBuildkitd(t)
	t.Setenv(buildkit.CacheDirEnv, testenv.CacheDir(t))
	t.Setenv(buildkit.StateDirEnv, t.TempDir())
	t.Setenv("GPUFORGE_TEST_REGISTRY_PASSWORD", reg.Password)

	dir := t.TempDir()
	recipe := testenv.DebianBaseBlock("debian") + `
registry "test" {
  host         = "` + reg.Host + `"
  auth         = "basic"
  username     = "` + reg.Username + `"
  password_env = "GPUFORGE_TEST_REGISTRY_PASSWORD"
  ca_file      = "` + reg.CAFile + `"
}

image "common" {
  from = base.debian
  run  = ["echo common > /common.txt"]
}

image "left" {
  from = image.common
  run  = ["echo left > /left.txt"]
  tags = ["` + reg.Ref("e2e/left") + `:1"]
  push = true
}

image "right" {
  from = image.common
  run  = ["echo right > /right.txt"]
  tags = ["` + reg.Ref("e2e/right") + `:1", "` + reg.Ref("e2e/right") + `:latest"]
  push = true
}
`
	path := filepath.Join(dir, "recipe.hcl")
	os.WriteFile(path, []byte(recipe), 0o644)
	out := filepath.Join(dir, "out")
	meta := filepath.Join(dir, "build.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"build", "--builder", addr, "--progress", "plain", "--out", out, "--metadata-file", meta, "-t", "left", "-t", "right", path}, &stdout, &stderr)
	if code != ExitOK {
		t.Fatalf("build exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), reg.Password) {
		t.Error("the registry password appears in gpuforge's output")
	}

	m, err := pipeline.ReadManifestFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	kc := authn.NewMultiKeychain(staticKeychain{reg.Host, reg.Username, reg.Password})
	for _, side := range []string{"left", "right"} {
		target := m.Target("image." + side)
		if target == nil || len(target.Images) != 1 {
			t.Fatalf("manifest has no image for %s: %+v", side, target)
		}
		rec := target.Images[0]
		if len(rec.PushedTo) != len(rec.Tags) {
			t.Errorf("%s: pushed to %v, tags %v", side, rec.PushedTo, rec.Tags)
		}
		for _, tag := range rec.Tags {
			ref, err := name.ParseReference(tag)
			if err != nil {
				t.Fatal(err)
			}
			desc, err := remote.Get(ref, remote.WithAuthFromKeychain(kc), remote.WithTransport(reg.Client.Transport), remote.WithContext(context.Background()))
			if err != nil {
				t.Fatalf("pulling %s: %v", tag, err)
			}
			if desc.Digest.String() != rec.Digest {
				t.Errorf("%s: registry has %s, the build made %s", tag, desc.Digest, rec.Digest)
			}
			img, err := desc.Image()
			if err != nil {
				t.Fatal(err)
			}
			files := imageFiles(t, img)
			if string(files[side+".txt"]) != side+"\n" || string(files["common.txt"]) != "common\n" {
				t.Errorf("%s: pulled image lacks %s.txt or common.txt", tag, side)
			}
		}
	}
}

type staticKeychain struct{ host, user, pass string }

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.host {
		return &authn.Basic{Username: k.user, Password: k.pass}, nil
	}
	return authn.Anonymous, nil
}
