package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	controlapi "github.com/moby/buildkit/api/services/control"
	"github.com/moby/buildkit/client"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/internal/testenv"
	"github.com/gpuforge/gpuforge/pipeline"
	"github.com/gpuforge/gpuforge/recipes"
)

// TestBuilderTwoNodes is a builder of two BuildKit daemons on loopback, each with mutual TLS of
// its own test CA, defined in a builders file: node "amd64" builds linux/amd64 and node "arm64"
// builds linux/arm64. `gpuforge build --builder two-node` of an image for both platforms builds
// each platform on its node (each daemon's build history holds the export of its platform's
// manifest and not the other's), merges them into one index, and pushes that index to a
// registry. `builder ls` is golden-tested against the same daemons plus an unreachable node;
// `builder inspect` shows the nodes' health and exits 4 for a builder whose node is down.
func TestBuilderTwoNodes(t *testing.T) {
	testEnv(t)
	addrA, tlsA := testenv.StartBuildkitdTLS(t)
	addrB, tlsB := testenv.StartBuildkitdTLS(t)
	reg := testenv.StartRegistry(t)
	t.Setenv(buildkit.StateDirEnv, t.TempDir())
	t.Setenv("GPUFORGE_TEST_REGISTRY_PASSWORD", reg.Password)

	dir := t.TempDir()
	buildersFile := filepath.Join(dir, "builders.hcl")
	node := func(name, addr, platform string, f testenv.TLSFiles) string {
		return `
  node "` + name + `" {
    endpoint  = "` + addr + `"
    platforms = ["` + platform + `"]
    tls {
      ca_cert = "` + f.CACert + `"
      cert    = "` + f.ClientCert + `"
      key     = "` + f.ClientKey + `"
    }
  }`
	}
	os.WriteFile(buildersFile, []byte(`builder "two-node" {`+node("amd64", addrA, "linux/amd64", tlsA)+node("arm64", addrB, "linux/arm64", tlsB)+`
}

builder "offline" {
  node "gone" {
    endpoint  = "tcp://127.0.0.1:1"
    platforms = ["linux/amd64"]
  }
}
`), 0o644)
	t.Setenv(recipes.BuildersEnv, buildersFile)
	t.Setenv(buildkit.BuildkitHostEnv, "unix:///nonexistent/buildkitd.sock")

	os.WriteFile(filepath.Join(dir, "payload.txt"), []byte("built on two nodes\n"), 0o644)
	tag := reg.Ref("nodes/multi") + ":1"
	recipe := filepath.Join(dir, "recipe.hcl")
	os.WriteFile(recipe, []byte(`
registry "test" {
  host         = "`+reg.Host+`"
  auth         = "basic"
  username     = "`+reg.Username+`"
  password_env = "GPUFORGE_TEST_REGISTRY_PASSWORD"
  ca_file      = "`+reg.CAFile+`"
}

image "multi" {
  from      = "scratch"
  platforms = ["linux/amd64", "linux/arm64"]
  copy {
    src = "payload.txt"
    dst = "/payload.txt"
  }
  tags = ["`+tag+`"]
}

image "nowhere" {
  from      = "scratch"
  platforms = ["linux/s390x"]
  copy {
    src = "payload.txt"
    dst = "/payload.txt"
  }
}
`), 0o644)

	// builder ls: golden, with the loopback ports (always five digits) and the file's path
	// replaced by placeholders of their width so the columns stay as printed.
	code, stdout, stderr := runCLI(t, "builder", "ls")
	wantCode(t, []string{"builder", "ls"}, code, ExitOK, stdout, stderr)
	normal := strings.NewReplacer(addrA, "tcp://127.0.0.1:PORTA", addrB, "tcp://127.0.0.1:PORTB", buildersFile, "$GPUFORGE_BUILDERS").Replace(stdout)
	if regexp.MustCompile(`127\.0\.0\.1:\d{5}\b`).MatchString(normal) {
		t.Fatalf("builder ls shows a port that is not the test daemons' (a port of another width breaks the golden):\n%s", stdout)
	}
	compareGolden(t, filepath.Join("testdata", "builder", "ls.golden"), []byte(normal))

	code, stdout, stderr = runCLI(t, "builder", "inspect", "two-node")
	wantCode(t, []string{"builder", "inspect", "two-node"}, code, ExitOK, stdout, stderr)
	for _, want := range []string{"Node:      amd64\nEndpoint:  " + addrA, "Node:      arm64\nEndpoint:  " + addrB, "Platforms: linux/arm64*, linux/amd64", "CA " + tlsA.CACert} {
		if !strings.Contains(stdout, want) {
			t.Errorf("builder inspect two-node does not show %q:\n%s", want, stdout)
		}
	}
	if strings.Count(stdout, "Status:    running") != 2 {
		t.Errorf("builder inspect two-node: want both nodes running:\n%s", stdout)
	}
	code, stdout, stderr = runCLI(t, "builder", "inspect", "offline")
	wantCode(t, []string{"builder", "inspect", "offline"}, code, ExitFailed, stdout, stderr)
	if !strings.Contains(stdout, "Status:    unreachable: ") || !strings.Contains(stderr, "node gone does not answer") {
		t.Errorf("builder inspect offline: want the node unreachable\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}

	// The build: each platform on its node, merged. Without a push there is no provenance, so
	// each node exports its platform's manifest itself, which its build history records.
	out := filepath.Join(dir, "out")
	args := []string{"build", "--builder", "two-node", "--progress", "plain", "--out", out, "-t", "multi", recipe}
	code, stdout, stderr = runCLI(t, args...)
	wantCode(t, args, code, ExitOK, stdout, stderr)
	for _, want := range []string{"image.multi built linux/amd64 on amd64", "linux/arm64 on arm64"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the build's summary does not say %q:\n%s", want, stdout)
		}
	}
	local := mergedPlatforms(t, filepath.Join(out, "multi"), tag, 0)
	if _, err := os.Stat(filepath.Join(out, ".multi.nodes")); !os.IsNotExist(err) {
		t.Errorf("the nodes' layouts are left in %s after the merge (stat: %v)", out, err)
	}
	m, err := pipeline.ReadManifestFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if rec := m.Target("image.multi"); rec == nil || len(rec.Images) != 1 || rec.Images[0].BuiltOn["linux/amd64"] != "amd64" || rec.Images[0].BuiltOn["linux/arm64"] != "arm64" {
		t.Errorf("the build manifest's record of image.multi = %+v; want built_on naming each platform's node", rec)
	}
	// Each platform landed on its node: the daemon's build history holds the build of that
	// platform, and not of the other one.
	for _, n := range []struct {
		node, addr, mine, other string
		tls                     testenv.TLSFiles
	}{{"amd64", addrA, "amd64", "arm64", tlsA}, {"arm64", addrB, "arm64", "amd64", tlsB}} {
		built := builtArchitectures(t, n.addr, n.tls, "image.multi")
		if !slices.Contains(built, n.mine) || slices.Contains(built, n.other) {
			t.Errorf("node %s's build history has builds of image.multi for %v; want %s and not %s", n.node, built, n.mine, n.other)
		}
	}

	// Built again to be pushed (with provenance, as gpuforge attaches to what it pushes): the
	// merged index carries each platform's attestation, and the registry gets that index.
	args = []string{"build", "--builder", "two-node", "--progress", "plain", "--out", out, "--push", "-t", "multi", recipe}
	code, stdout, stderr = runCLI(t, args...)
	wantCode(t, args, code, ExitOK, stdout, stderr)
	pushed := mergedPlatforms(t, filepath.Join(out, "multi"), tag, 2)
	if pushed["linux/amd64"] != local["linux/amd64"] || pushed["linux/arm64"] != local["linux/arm64"] {
		t.Errorf("the images of the pushed build %v differ from the first build's %v (same epoch, same inputs)", pushed, local)
	}
	idx, err := layout.ImageIndexFromPath(filepath.Join(out, "multi"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}

	// The pushed index is the merged one.
	ref, err := name.ParseReference(tag)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref, remote.WithAuthFromKeychain(authn.NewMultiKeychain(staticKeychain{reg.Host, reg.Username, reg.Password})), remote.WithTransport(reg.Client.Transport))
	if err != nil {
		t.Fatal(err)
	}
	if want := top.Manifests[0].Digest; desc.Digest != want {
		t.Errorf("the registry has %s for %s; the merged layout has %s", desc.Digest, tag, want)
	}

	// A platform no node builds is refused before anything is built, naming the nodes.
	args = []string{"build", "--builder", "two-node", "--progress", "quiet", "--out", out, "-t", "nowhere", recipe}
	code, stdout, stderr = runCLI(t, args...)
	if code == ExitOK || !strings.Contains(stderr, "no node of the builder builds linux/s390x") || !strings.Contains(stderr, "amd64 ("+addrA+") builds linux/amd64") {
		t.Errorf("gpuforge %s: exit %d; want a failure naming linux/s390x and the nodes\nstderr:\n%s", strings.Join(args, " "), code, stderr)
	}
	// An unknown builder name is a usage error naming the file and the builders it defines.
	code, _, stderr = runCLI(t, "build", "--builder", "nosuch", "-t", "multi", recipe)
	if code != ExitUsage || !strings.Contains(stderr, `no builder of that name (`+buildersFile+` defines two-node, offline)`) {
		t.Errorf("build --builder nosuch: exit %d, stderr:\n%s", code, stderr)
	}
}

// builtArchitectures lists, from a daemon's build history, the architecture of the image each
// finished build of target exported: the image config its build result carried.
func builtArchitectures(t *testing.T, addr string, f testenv.TLSFiles, target string) []string {
	t.Helper()
	ctx := context.Background()
	c, err := client.New(ctx, addr, client.WithServerConfig("127.0.0.1", f.CACert), client.WithCredentials(f.ClientCert, f.ClientKey))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stream, err := c.ControlClient().ListenBuildHistory(ctx, &controlapi.BuildHistoryRequest{EarlyExit: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Record == nil || !slices.ContainsFunc(ev.Record.Exporters, func(e *controlapi.Exporter) bool {
			return e.Type == client.ExporterOCI && e.Attrs["annotation.dev.gpuforge.target"] == target
		}) {
			continue
		}
		// One platform: containerimage.config; several: containerimage.config/PLATFORM each.
		for k, v := range ev.Record.ExporterResponse {
			if k != "containerimage.config" && !strings.HasPrefix(k, "containerimage.config/") {
				continue
			}
			var cfg struct {
				Architecture string `json:"architecture"`
			}
			if err := json.Unmarshal([]byte(v), &cfg); err != nil {
				t.Fatalf("build %s on %s: %s in the history: %v", ev.Record.Ref, addr, k, err)
			}
			out = append(out, cfg.Architecture)
		}
	}
	return out
}

// mergedPlatforms checks the OCI layout of a build on several nodes: index.json names one image
// index, tagged tag, with a manifest per platform (its config for that platform, /payload.txt
// in it) and attestations attestation manifests. It returns the manifests by platform.
func mergedPlatforms(t *testing.T, dir, tag string, attestations int) map[string]v1.Hash {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 || !top.Manifests[0].MediaType.IsIndex() || top.Manifests[0].Annotations["io.containerd.image.name"] != tag {
		t.Fatalf("index.json of the merged layout = %+v; want one image index named %s", top.Manifests, tag)
	}
	merged, err := idx.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	mm, err := merged.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	byPlatform := map[string]v1.Hash{}
	n := 0
	for _, d := range mm.Manifests {
		if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
			n++
			continue
		}
		if d.Platform == nil {
			t.Fatalf("manifest %s in the merged index has no platform", d.Digest)
		}
		img, err := merged.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		if cfg.Architecture != d.Platform.Architecture {
			t.Errorf("manifest for %s has an image config for %s", p, cfg.Architecture)
		}
		if got := string(imageFiles(t, img)["payload.txt"]); got != "built on two nodes\n" {
			t.Errorf("%s: /payload.txt = %q", p, got)
		}
		byPlatform[p] = d.Digest
	}
	if len(byPlatform) != 2 || byPlatform["linux/amd64"] == (v1.Hash{}) || byPlatform["linux/arm64"] == (v1.Hash{}) {
		t.Fatalf("the merged index has manifests for %v; want linux/amd64 and linux/arm64", byPlatform)
	}
	if n != attestations {
		t.Errorf("the merged index has %d attestation manifests; want %d", n, attestations)
	}
	return byPlatform
}
