package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gpuforge/gpuforge/pipeline"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with what the commands print now")

// planCase is one golden plan: the arguments after `plan` (without --format) and the golden's name.
type planCase struct {
	golden string
	args   []string
}

func planCases(t *testing.T) []planCase {
	var cases []planCase
	for _, f := range exampleFiles(t) {
		cases = append(cases, planCase{golden: strings.TrimSuffix(filepath.Base(f), ".hcl"), args: []string{f}})
	}
	return append(cases,
		planCase{golden: "ngc-pytorch-t-trainer", args: []string{"-t", "trainer", "../../examples/ngc-pytorch.hcl"}},
		planCase{golden: "examples-dir", args: []string{"../../examples"}},
	)
}

// compareGolden compares got with the file at path, or rewrites the file under -update.
func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/gpuforge -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test ./cmd/gpuforge -run %s -update rewrites it)\n%s",
			path, t.Name(), lineDiff(string(want), string(got)))
	}
}

// lineDiff is a short description of the first lines where want and got differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var sb strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 10; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&sb, "line %d:\n  want %q\n  got  %q\n", i+1, wl, gl)
			shown++
		}
	}
	return sb.String()
}

func TestPlanGolden(t *testing.T) {
	for _, tc := range planCases(t) {
		t.Run(tc.golden, func(t *testing.T) {
			testEnv(t)
			for _, format := range []string{"json", "text"} {
				args := append([]string{"plan", "--format", format}, tc.args...)
				code, stdout, stderr := runCLI(t, args...)
				if code != ExitOK {
					t.Fatalf("gpuforge %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
				}
				if stderr != "" {
					t.Errorf("gpuforge %s: stderr is not empty:\n%s", strings.Join(args, " "), stderr)
				}
				ext := ".txt"
				if format == "json" {
					ext = ".json"
				}
				compareGolden(t, filepath.Join("testdata", "plan", tc.golden+ext), []byte(stdout))
			}
			// Text is the default format.
			code, stdout, _ := runCLI(t, append([]string{"plan"}, tc.args...)...)
			_, text, _ := runCLI(t, append([]string{"plan", "-format=text"}, tc.args...)...)
			if code != ExitOK || stdout != text {
				t.Errorf("plan without --format (exit %d) differs from --format text", code)
			}
		})
	}
}

// TestPlanDeterministic runs every plan several times: map iteration must not leak into the output.
func TestPlanDeterministic(t *testing.T) {
	for _, tc := range planCases(t) {
		t.Run(tc.golden, func(t *testing.T) {
			testEnv(t)
			args := append([]string{"plan", "--format", "json"}, tc.args...)
			_, first, _ := runCLI(t, args...)
			for range 5 {
				if _, again, _ := runCLI(t, args...); again != first {
					t.Fatalf("gpuforge %s printed two different plans:\n%s", strings.Join(args, " "), lineDiff(first, again))
				}
			}
		})
	}
}

// loadPlanJSON runs plan --format json and decodes the plan.
func loadPlanJSON(t *testing.T, args ...string) *pipeline.Plan {
	t.Helper()
	args = append([]string{"plan", "--format", "json"}, args...)
	code, stdout, stderr := runCLI(t, args...)
	if code != ExitOK {
		t.Fatalf("gpuforge %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	var p pipeline.Plan
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("gpuforge %s: %v\n%s", strings.Join(args, " "), err, stdout)
	}
	return &p
}

// TestPlanStructure checks what every plan must satisfy, whatever the goldens say: stages come
// after what they wait for, every reference resolves, and the runner accepts the graph.
func TestPlanStructure(t *testing.T) {
	for _, tc := range planCases(t) {
		t.Run(tc.golden, func(t *testing.T) {
			testEnv(t)
			p := loadPlanJSON(t, tc.args...)
			if p.Recipe != tc.args[len(tc.args)-1] {
				t.Errorf("recipe = %q, want %q", p.Recipe, tc.args[len(tc.args)-1])
			}
			checkPlanStructure(t, p)

			// The text header counts what the JSON lists.
			_, text, _ := runCLI(t, append([]string{"plan"}, tc.args...)...)
			noun := func(n int, one string) string {
				if n == 1 {
					return "1 " + one
				}
				return fmt.Sprintf("%d %ss", n, one)
			}
			header := fmt.Sprintf("Plan for %s: %s, %s\n", p.Recipe, noun(len(p.Targets), "target"), noun(len(p.Stages), "stage"))
			if !strings.HasPrefix(text, header) {
				t.Errorf("text plan starts %q, want %q", strings.SplitN(text, "\n", 2)[0], header)
			}
			// Every stage and every target appears in the text exactly once.
			for _, s := range p.Stages {
				if n := strings.Count(text, "  + "+s.ID+": "); n != 1 {
					t.Errorf("stage %s appears %d times in the text plan, want once", s.ID, n)
				}
			}
			for _, tg := range p.Targets {
				if n := strings.Count(text, "\n\n"+tg.Address+"\n") + strings.Count(text, "\n\n"+tg.Address+" (after "); n != 1 {
					t.Errorf("target %s has %d headings in the text plan, want one", tg.Address, n)
				}
			}
		})
	}
}

func checkPlanStructure(t *testing.T, p *pipeline.Plan) {
	t.Helper()
	pos := map[string]int{}
	byID := map[string]*pipeline.Stage{}
	for i, s := range p.Stages {
		if _, dup := pos[s.ID]; dup {
			t.Errorf("stage %s is listed twice", s.ID)
		}
		pos[s.ID], byID[s.ID] = i, s
		if s.Description == "" || s.Kind == "" || s.Target == "" {
			t.Errorf("stage %s lacks a description, kind or target: %+v", s.ID, s)
		}
		if !strings.HasSuffix(s.ID, "/"+s.Kind) {
			t.Errorf("stage %s: ID does not end in its kind %q", s.ID, s.Kind)
		}
	}
	for _, s := range p.Stages {
		for _, dep := range s.After {
			if _, ok := pos[dep]; !ok {
				t.Errorf("stage %s waits for %s, which is not in the plan", s.ID, dep)
			}
			if dep == s.ID {
				t.Errorf("stage %s waits for itself", s.ID)
			}
		}
		if len(s.After) != len(slices.Compact(slices.Sorted(slices.Values(s.After)))) {
			t.Errorf("stage %s lists a dependency twice: %v", s.ID, s.After)
		}
	}
	targets := map[string]*pipeline.PlanTarget{}
	owned := map[string]string{}
	for _, tg := range p.Targets {
		if _, dup := targets[tg.Address]; dup {
			t.Errorf("target %s is listed twice", tg.Address)
		}
		targets[tg.Address] = tg
		if tg.Address != tg.Kind+"."+tg.Name {
			t.Errorf("target %s: kind %q and name %q do not make its address", tg.Address, tg.Kind, tg.Name)
		}
		if len(tg.Stages) == 0 {
			t.Errorf("target %s has no stages", tg.Address)
		}
		for _, id := range tg.Stages {
			s := byID[id]
			if s == nil {
				t.Errorf("target %s has stage %s, which is not in the plan", tg.Address, id)
				continue
			}
			if s.Target != tg.Address {
				t.Errorf("stage %s of target %s says it belongs to %s", id, tg.Address, s.Target)
			}
			if prev, ok := owned[id]; ok {
				t.Errorf("stage %s belongs to both %s and %s", id, prev, tg.Address)
			}
			owned[id] = tg.Address
		}
	}
	for _, tg := range p.Targets {
		for _, dep := range tg.DependsOn {
			if targets[dep] == nil {
				t.Errorf("target %s depends on %s, which is not in the plan", tg.Address, dep)
			}
		}
	}
	// Stages that belong to no target are shared sources.
	for _, s := range p.Stages {
		if _, ok := owned[s.ID]; !ok && s.Kind != pipeline.StageResolve && s.Kind != pipeline.StageBootstrap {
			t.Errorf("stage %s (%s) belongs to no target and is not a source", s.ID, s.Kind)
		}
	}
	if err := pipeline.ValidateGraph(p.Graph(func(s *pipeline.Stage) pipeline.Step {
		return pipeline.NewStep(s.ID, nil, nil)
	})); err != nil {
		t.Errorf("the runner rejects the plan's graph: %v", err)
	}
}

// TestPlanStagesInDependencyOrder checks what docs/cli.md promises of the JSON plan's stages:
// "Every stage once, each after the stages it waits for."
func TestPlanStagesInDependencyOrder(t *testing.T) {
	for _, tc := range planCases(t) {
		t.Run(tc.golden, func(t *testing.T) {
			testEnv(t)
			p := loadPlanJSON(t, tc.args...)
			pos := map[string]int{}
			for i, s := range p.Stages {
				pos[s.ID] = i
			}
			for i, s := range p.Stages {
				for _, dep := range s.After {
					if j, ok := pos[dep]; ok && j >= i {
						t.Errorf("stage %s (#%d) is listed before %s (#%d), which it waits for", s.ID, i, dep, j)
					}
				}
			}
		})
	}
}

// stageAfter reports whether stage id waits for dep, directly or through other stages.
func stageAfter(p *pipeline.Plan, id, dep string) bool {
	byID := map[string]*pipeline.Stage{}
	for _, s := range p.Stages {
		byID[s.ID] = s
	}
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(id string) bool {
		if seen[id] || byID[id] == nil {
			return false
		}
		seen[id] = true
		for _, a := range byID[id].After {
			if a == dep || walk(a) {
				return true
			}
		}
		return false
	}
	return walk(id)
}

func targetAddrs(p *pipeline.Plan) []string {
	var out []string
	for _, tg := range p.Targets {
		out = append(out, tg.Address)
	}
	return out
}

// TestPlanOrdering pins the facts of each example's plan that the goldens must keep.
func TestPlanOrdering(t *testing.T) {
	testEnv(t)
	type order struct{ stage, after string }
	tests := []struct {
		args    []string
		targets []string
		orders  []order
	}{
		{
			args:    []string{"../../examples/quickstart.hcl"},
			targets: []string{"image.cuda-runtime", "validate.gpu"},
			orders: []order{
				{"image.cuda-runtime/build", "base.debian/bootstrap"},
				{"image.cuda-runtime/export", "image.cuda-runtime/build"},
				{"validate.gpu/check", "image.cuda-runtime/build"},
			},
		},
		{
			args:    []string{"../../examples/ngc-pytorch.hcl"},
			targets: []string{"image.trainer", "validate.trainer-gpu"},
			orders: []order{
				{"image.trainer/build", "framework.pytorch/resolve"},
				{"validate.trainer-gpu/check", "image.trainer/build"},
				// Nothing is pushed before it passed on GPUs.
				{"image.trainer/push", "validate.trainer-gpu/check"},
			},
		},
		{
			// -t trainer brings along the validation that gates its push.
			args:    []string{"-t", "trainer", "../../examples/ngc-pytorch.hcl"},
			targets: []string{"image.trainer", "validate.trainer-gpu"},
			orders:  []order{{"image.trainer/push", "validate.trainer-gpu/check"}},
		},
		{
			args:    []string{"-t", "validate.trainer-gpu", "../../examples/ngc-pytorch.hcl"},
			targets: []string{"image.trainer", "validate.trainer-gpu"},
			orders:  []order{{"validate.trainer-gpu/cdi", "image.trainer/build"}},
		},
		{
			args:    []string{"../../examples/gpu-node-ami.hcl"},
			targets: []string{"machine_image.gpu-node", "validate.gpu-node-host"},
			orders: []order{
				{"machine_image.gpu-node/rootfs", "base.ubuntu-noble/resolve"},
				{"machine_image.gpu-node/kernel-module", "machine_image.gpu-node/rootfs"},
				{"machine_image.gpu-node/preload", "framework.pytorch-node/resolve"},
				{"machine_image.gpu-node/disk", "machine_image.gpu-node/preload"},
				{"machine_image.gpu-node/boot-check", "machine_image.gpu-node/disk"},
				{"machine_image.gpu-node/ami-upload", "machine_image.gpu-node/boot-check"},
				{"machine_image.gpu-node/ami-register", "machine_image.gpu-node/ami-upload"},
				{"machine_image.gpu-node/ami-distribute", "validate.gpu-node-host/check"},
				{"validate.gpu-node-host/cdi", "machine_image.gpu-node/boot-check"},
			},
		},
		{
			// The group "seed", plus the images its validations check.
			args:    []string{"-t", "seed", "../../examples/seed.hcl"},
			targets: []string{"machine_image.seed-host", "image.seed-cuda", "validate.seed-nvidia-smi", "image.seed-tensorflow", "validate.seed-resnet50"},
			orders: []order{
				{"machine_image.seed-host/preload", "framework.tensorflow-1712/resolve"},
				{"image.seed-tensorflow/build", "framework.tensorflow-1712/resolve"},
				{"validate.seed-resnet50/check", "image.seed-tensorflow/build"},
				{"validate.seed-nvidia-smi/check", "image.seed-cuda/build"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			p := loadPlanJSON(t, tt.args...)
			if got := targetAddrs(p); !slices.Equal(got, tt.targets) {
				t.Errorf("targets = %v, want %v", got, tt.targets)
			}
			for _, o := range tt.orders {
				if !stageAfter(p, o.stage, o.after) {
					t.Errorf("stage %s does not wait for %s", o.stage, o.after)
				}
			}
		})
	}
}
