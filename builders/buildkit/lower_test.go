package buildkit

import (
	"context"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/buildkit/client/llb"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/gpuforge/gpuforge/recipes"
)

var update = flag.Bool("update", false, "rewrite golden files")

// pinnedResolver pins every registry reference to a fixed digest: the lowering is tested
// without a daemon, as BuildKit's own llb tests do.
type pinnedResolver struct{}

func (pinnedResolver) ResolveBase(_ context.Context, src recipes.Source, p ocispecs.Platform) (*Base, error) {
	d := digest.FromString(src.String() + p.Architecture)
	cfg := ocispecs.Image{Platform: p}
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cfg.Config.Cmd = []string{"bash"}
	return &Base{State: llb.Image(src.Image + "@" + d.String()), Config: cfg, Ref: src.Image, Digest: d}, nil
}

func lowerTestRecipe(t *testing.T) (*recipes.Recipe, *Lowerer) {
	t.Helper()
	r, diags := recipes.Load("testdata/llb/recipe.hcl", recipes.Options{Env: []string{}})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	epoch := time.Unix(1700000000, 0)
	return r, NewLowerer(r, pinnedResolver{}, &epoch, ocispecs.Platform{OS: "linux", Architecture: "amd64"})
}

func TestLowerGolden(t *testing.T) {
	_, l := lowerTestRecipe(t)
	ctx := context.Background()
	low, err := l.Lower(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	def, err := low.States[0].Marshal(ctx, llb.Platform(low.Platforms[0]))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Summarize(def)
	if err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/llb/app.txt"
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, _ := os.ReadFile(golden)
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("LLB summary (-want +got):\n%s", diff)
	}
	// The secret's value never reaches the definition: only its ID does.
	for _, dt := range def.Def {
		if strings.Contains(string(dt), "canary-never-in-llb-0451") {
			t.Fatal("the marshalled LLB holds a sensitive value")
		}
	}
}

func TestLowerConfigAndAnnotations(t *testing.T) {
	_, l := lowerTestRecipe(t)
	low, err := l.Lower(context.Background(), "app")
	if err != nil {
		t.Fatal(err)
	}
	cfg := low.Configs[0]
	if diff := cmp.Diff([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NVIDIA_VISIBLE_DEVICES=all"}, cfg.Config.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if cfg.Config.User != "1000:1000" || cfg.Config.WorkingDir != "/workspace" {
		t.Errorf("user %q workdir %q", cfg.Config.User, cfg.Config.WorkingDir)
	}
	if diff := cmp.Diff([]string{"python3", "train/main.py"}, cfg.Config.Entrypoint); diff != "" || cfg.Config.Cmd != nil {
		t.Errorf("entrypoint %v cmd %v: a new entrypoint resets the base's cmd", cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	if cfg.Created == nil || cfg.Created.Unix() != 1700000000 {
		t.Errorf("created = %v, want SOURCE_DATE_EPOCH", cfg.Created)
	}
	if low.Annotations["org.opencontainers.image.base.name"] != "docker.io/library/debian:bookworm" ||
		!strings.HasPrefix(low.Annotations["org.opencontainers.image.base.digest"], "sha256:") ||
		low.Annotations["org.opencontainers.image.title"] != "app" ||
		low.Annotations["dev.gpuforge.target"] != "image.app" {
		t.Errorf("annotations = %v", low.Annotations)
	}
}

// TestLowerSharesParent checks that an image built from another reuses the parent's lowered
// state: both targets' definitions contain the same vertex, so one solve builds it once.
func TestLowerSharesParent(t *testing.T) {
	_, l := lowerTestRecipe(t)
	ctx := context.Background()
	base, err := l.Lower(ctx, "base")
	if err != nil {
		t.Fatal(err)
	}
	app, err := l.Lower(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	bdef, _ := base.States[0].Marshal(ctx, llb.Platform(base.Platforms[0]))
	adef, _ := app.States[0].Marshal(ctx, llb.Platform(app.Platforms[0]))
	inApp := map[string]bool{}
	for _, dt := range adef.Def {
		inApp[string(dt)] = true
	}
	for _, dt := range bdef.Def[:len(bdef.Def)-1] {
		if !inApp[string(dt)] {
			t.Fatal("a vertex of image.base is missing from image.app's definition")
		}
	}
}
