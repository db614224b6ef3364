package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpuforge/gpuforge/recipes"
)

var planOptions = recipes.Options{Env: []string{}, Now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}

func loadRecipe(t testing.TB, src string) *recipes.Recipe {
	t.Helper()
	r, diags := recipes.LoadSource("recipe.hcl", []byte(src), planOptions)
	if diags.HasErrors() {
		t.Fatalf("recipe has errors: %s", diags.Error())
	}
	return r
}

func stageIDs(p *Plan) []string {
	var out []string
	for _, s := range p.Stages {
		out = append(out, s.ID)
	}
	return out
}

// TestPlanOrder checks that every stage comes after the stages it waits for, so the list is
// a valid run order, and that the graph is one the runner accepts.
func TestPlanOrder(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.hcl")
	for _, f := range append(files, "../examples") {
		r, diags := recipes.Load(f, planOptions)
		if diags.HasErrors() {
			t.Fatalf("%s: %s", f, diags.Error())
		}
		p, err := NewPlan(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		pos := map[string]int{}
		for i, s := range p.Stages {
			pos[s.ID] = i
		}
		for _, s := range p.Stages {
			for _, dep := range s.After {
				if at, ok := pos[dep]; !ok {
					t.Errorf("%s: stage %s waits for %s, which is not in the plan", f, s.ID, dep)
				} else if at > pos[s.ID] {
					t.Errorf("%s: stage %s is listed before %s, which it waits for", f, s.ID, dep)
				}
			}
		}
		nodes := p.Graph(func(s *Stage) Step { return NewStep(s.ID, nil, nil) })
		if err := ValidateGraph(nodes); err != nil {
			t.Errorf("%s: plan is not a valid step graph: %v", f, err)
		}
	}
}

func TestPlanSharesSourcesAndGatesPublishing(t *testing.T) {
	r := loadRecipe(t, `
base "debian" {
  bootstrap {
    suite = "bookworm"
  }
}

image "a" {
  from = base.debian
  tags = ["registry.example.com/a:1"]
  push = true
}

image "b" {
  from = image.a
}

image "c" {
  from = base.debian
}

validate "a" {
  target = image.a
  nvidia_smi {}
}
`)
	p, err := NewPlan(r, []string{"b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"base.debian/bootstrap", "image.a/build", "validate.a/cdi", "validate.a/check", "image.a/push",
		"image.b/build", "image.b/export", "image.c/build", "image.c/export",
	}
	if diff := cmp.Diff(want, stageIDs(p)); diff != "" {
		t.Errorf("stages (-want +got):\n%s", diff)
	}
	for _, s := range p.Stages {
		if s.ID == "image.a/push" {
			if diff := cmp.Diff([]string{"image.a/build", "validate.a/check"}, s.After); diff != "" {
				t.Errorf("push must wait for the validation (-want +got):\n%s", diff)
			}
		}
	}
	if _, err := NewPlan(r, []string{"nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown target: %v", err)
	}
}

func TestPlanRedactsSensitiveValues(t *testing.T) {
	r := loadRecipe(t, `
variable "token" {
  type      = string
  sensitive = true
  default   = "tok-9f8e7d6c5b4a"
}

image "a" {
  from = "docker.io/library/debian:bookworm"
  env  = { TOKEN = var.token, PUBLIC = "yes" }
  run  = ["echo ${var.token} > /dev/null"]
}
`)
	p, err := NewPlan(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := p.WriteText(&sb); err != nil {
		t.Fatal(err)
	}
	out := sb.String()
	if strings.Contains(out, "tok-9f8e7d6c5b4a") {
		t.Errorf("plan shows the sensitive value:\n%s", out)
	}
	for _, want := range []string{"env TOKEN=(sensitive value)", "env PUBLIC=yes", "run echo (sensitive value) > /dev/null"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
}

// FuzzPlan plans arbitrary recipes that load without errors, with arbitrary target selections:
// planning must never panic and must always produce a graph the runner accepts.
func FuzzPlan(f *testing.F) {
	seeds, _ := filepath.Glob("../examples/*.hcl")
	for _, p := range seeds {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src, "")
		f.Add(src, "default")
	}
	f.Add([]byte("image \"a\" {\n  from = \"debian\"\n}\nimage \"b\" {\n  from = image.a\n}\n"), "b")
	f.Fuzz(func(t *testing.T, src []byte, target string) {
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				panic(fmt.Sprintf("plan took over 10 s on target %q and:\n%s", target, src))
			}
		}()
		r, diags := recipes.LoadSource("fuzz.hcl", src, planOptions)
		if diags.HasErrors() {
			return
		}
		var sel []string
		if target != "" {
			sel = []string{target}
		}
		p, err := NewPlan(r, sel)
		if err != nil {
			return
		}
		nodes := p.Graph(func(s *Stage) Step { return NewStep(s.ID, nil, nil) })
		if err := ValidateGraph(nodes); err != nil {
			t.Fatalf("plan is not a valid step graph: %v", err)
		}
		var sb strings.Builder
		_ = p.WriteText(&sb)
	})
}

// TestPlanScratchHasNothingToResolve: from = "scratch" is an empty file system, not an image to
// resolve; a real reference is resolved.
func TestPlanScratchHasNothingToResolve(t *testing.T) {
	r := loadRecipe(t, `
image "static" {
  from = "scratch"
}
image "debian" {
  from = "docker.io/library/debian:bookworm"
}
`)
	p, err := NewPlan(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := strings.Join(stageIDs(p), " ")
	if strings.Contains(ids, "image-ref.scratch") {
		t.Errorf("stages %s resolve scratch", ids)
	}
	if !strings.Contains(ids, "image-ref.docker.io/library/debian:bookworm/resolve") {
		t.Errorf("stages %s do not resolve the registry base", ids)
	}
}
