package recipes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mustLoad(t *testing.T, src string, opts Options) *Recipe {
	t.Helper()
	if opts.Env == nil {
		opts.Env = []string{}
	}
	r, diags := LoadSource("recipe.hcl", []byte(src), opts)
	if len(diags) > 0 {
		t.Fatalf("unexpected diagnostics:\n%s", formatDiags(diags))
	}
	return r
}

const precedenceRecipe = `
variable "suite" {
  default = "bookworm"
}

variable "gpus" {
  type    = list(number)
  default = [0]
}
`

func TestVariablePrecedence(t *testing.T) {
	dir := t.TempDir()
	file1 := filepath.Join(dir, "a.vars.hcl")
	file2 := filepath.Join(dir, "b.vars.hcl")
	os.WriteFile(file1, []byte(`suite = "from-file-1"`+"\n"), 0o644)
	os.WriteFile(file2, []byte(`suite = "from-file-2"`+"\n"+`gpus = [0, 1]`+"\n"), 0o644)
	cases := []struct {
		name      string
		opts      Options
		wantSuite string
		wantGPUs  int
		source    string
	}{
		{"default", Options{}, "bookworm", 1, "default"},
		{"env", Options{Env: []string{"GPUFORGE_VAR_suite=from-env", "GPUFORGE_VAR_gpus=[0,1,2]"}}, "from-env", 3, "env"},
		{"var files in order win over env", Options{Env: []string{"GPUFORGE_VAR_suite=from-env"}, VarFiles: []string{file1, file2}}, "from-file-2", 2, file2},
		{"flags win over everything, last one last", Options{
			Env: []string{"GPUFORGE_VAR_suite=from-env"}, VarFiles: []string{file1},
			Vars: []string{"suite=flag-1", "suite=flag-2", "gpus=[3,4,5,6]"},
		}, "flag-2", 4, "-var"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustLoad(t, precedenceRecipe, tc.opts)
			v := r.Variable("suite")
			if got := v.Value.AsString(); got != tc.wantSuite {
				t.Errorf("suite = %q, want %q", got, tc.wantSuite)
			}
			if v.Source != tc.source {
				t.Errorf("source = %q, want %q", v.Source, tc.source)
			}
			if n := r.Variable("gpus").Value.LengthInt(); n != tc.wantGPUs {
				t.Errorf("len(gpus) = %d, want %d", n, tc.wantGPUs)
			}
		})
	}
}

func TestVariableErrorsFromOutside(t *testing.T) {
	dir := t.TempDir()
	vf := filepath.Join(dir, "x.vars.hcl")
	os.WriteFile(vf, []byte("suit = \"trixie\"\n"), 0o644)
	_, diags := LoadSource("recipe.hcl", []byte(precedenceRecipe), Options{
		Env: []string{}, VarFiles: []string{vf}, Vars: []string{"suiet=trixie", "gpus=[0,", "novalue"},
	})
	got := formatDiags(diags)
	for _, want := range []string{
		`error <value for -var suiet>:0:0-0:0: Value for undeclared variable`,
		`Did you mean "suite"?`,
		`error <-var option>:0:0-0:0: Invalid -var option`,
		`warning ` + vf + `:1:1-1:5: Value for undeclared variable`,
		`<value for -var gpus>`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("diagnostics lack %q:\n%s", want, got)
		}
	}
}

func TestMatrixExpansion(t *testing.T) {
	r := mustLoad(t, `
image "py" {
  matrix = {
    python = ["3.10", "3.11"]
    cuda   = ["12.4", "12.6"]
  }
  name = "py${replace(python, ".", "")}-cu${replace(cuda, ".", "")}"
  from = "docker.io/library/python:${python}"
  tags = ["registry.example.com/py:${python}-cuda${cuda}"]
}

group "all-py" {
  targets = ["py"]
}
`, Options{})
	var names []string
	for _, img := range r.Images {
		names = append(names, img.Name+"="+img.From.Image)
	}
	want := []string{
		"py310-cu124=docker.io/library/python:3.10", "py310-cu126=docker.io/library/python:3.10",
		"py311-cu124=docker.io/library/python:3.11", "py311-cu126=docker.io/library/python:3.11",
	}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("matrix images (-want +got):\n%s", diff)
	}
	sel, err := r.Select([]string{"all-py"})
	if err != nil || len(sel) != 4 {
		t.Errorf("group of a matrix label = %v, %v; want the 4 images", sel, err)
	}
	if got := r.Image("py311-cu126").MatrixValues; got["cuda"] != "12.6" || got["python"] != "3.11" {
		t.Errorf("matrix values = %v", got)
	}
}

func TestInheritsMergesLikeBake(t *testing.T) {
	r := mustLoad(t, `
image "common" {
  from     = "docker.io/library/debian:bookworm"
  packages = ["ca-certificates"]
  env      = { A = "1", B = "1" }
  labels   = { team = "ml" }
  copy {
    src = "a"
    dst = "/a"
  }
}

image "app" {
  inherits = [image.common]
  env      = { B = "2", C = "2" }
  run      = ["true"]
  copy {
    src = "b"
    dst = "/b"
  }
}
`, Options{})
	app := r.Image("app")
	if app.From.Image != "docker.io/library/debian:bookworm" {
		t.Errorf("from not inherited: %+v", app.From)
	}
	if diff := cmp.Diff(map[string]string{"A": "1", "B": "2", "C": "2"}, app.Env); diff != "" {
		t.Errorf("env merge (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ca-certificates"}, app.Packages); diff != "" {
		t.Errorf("packages (-want +got):\n%s", diff)
	}
	if len(app.Copies) != 2 || app.Copies[0].Dst != "/a" || app.Copies[1].Dst != "/b" {
		t.Errorf("copies = %+v, want parent's then child's", app.Copies)
	}
	if app.Labels["team"] != "ml" {
		t.Errorf("labels = %v", app.Labels)
	}
}

func TestReferencesBetweenBlocks(t *testing.T) {
	r := mustLoad(t, `
locals {
  registry = "registry.example.com"
}

framework "pytorch" {
  image = "nvcr.io/nvidia/pytorch:24.10-py3"
}

image "base" {
  from = framework.pytorch
  tags = ["${local.registry}/base:${framework.pytorch.image == "" ? "x" : "1"}"]
}

image "app" {
  from = image.base
  tags = [replace(image.base.tags[0], "/base:", "/app:")]
}
`, Options{})
	if got := r.Image("app").Tags[0]; got != "registry.example.com/app:1" {
		t.Errorf("derived tag = %q", got)
	}
	if f := r.Framework("pytorch"); f.Framework != "pytorch" || f.Release != "24.10" {
		t.Errorf("framework parsed as %q %q", f.Framework, f.Release)
	}
	if got := r.Image("app").From.String(); got != "image.base" {
		t.Errorf("from = %q", got)
	}
}

func TestFunctions(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "motd.tmpl"), []byte("driver ${branch} built ${timestamp()}"), 0o644)
	os.WriteFile(filepath.Join(dir, "recipe.hcl"), []byte(`
locals {
  motd    = templatefile("motd.tmpl", { branch = "570" })
  digest  = sha256("gpuforge")
  when    = formatdate("YYYY-MM-DD", timestamp())
  merged  = merge({ a = 1 }, { b = 2 })
  looked  = lookup({ x = "y" }, "x", "z")
  matched = regex("^([0-9]+)\\.", "570.86.15")[0]
  json    = jsonencode({ gpus = [0, 1] })
  joined  = join(",", ["0", "1"])
}
`), 0o644)
	r, diags := Load(filepath.Join(dir, "recipe.hcl"), Options{Env: []string{}, Now: time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC)})
	if len(diags) > 0 {
		t.Fatal(formatDiags(diags))
	}
	want := map[string]string{
		"motd":    "driver 570 built 2026-11-28T09:30:00Z",
		"digest":  "9e3c3a3c2d9ef1f7c1a6ccb2e6c1f7ef1c0d2fd7b1e3a6e1bb0a1d1c9d7c3a7e",
		"when":    "2026-11-28",
		"looked":  "y",
		"matched": "570",
		"json":    `{"gpus":[0,1]}`,
		"joined":  "0,1",
	}
	for k, w := range want {
		v := r.Locals[k]
		if k == "digest" {
			if len(v.AsString()) != 64 {
				t.Errorf("sha256 = %q", v.AsString())
			}
			continue
		}
		if got := v.AsString(); got != w {
			t.Errorf("local.%s = %q, want %q", k, got, w)
		}
	}
	if r.Locals["merged"].LengthInt() != 2 {
		t.Errorf("merge = %#v", r.Locals["merged"])
	}
}

func TestTimestampHonoursSourceDateEpoch(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	r, diags := LoadSource("r.hcl", []byte(`locals { t = timestamp() }`+"\n"), Options{Env: []string{}})
	if len(diags) > 0 {
		t.Fatal(formatDiags(diags))
	}
	if got := r.Locals["t"].AsString(); got != "2023-11-14T22:13:20Z" {
		t.Errorf("timestamp() = %q", got)
	}
}

func TestDirectoryRecipe(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "b.hcl"), []byte("image \"b\" {\n  from = image.a\n}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "a.hcl"), []byte("image \"a\" {\n  from = \"docker.io/library/debian:bookworm\"\n}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a recipe {"), 0o644)
	r, diags := Load(dir, Options{Env: []string{}})
	if len(diags) > 0 {
		t.Fatal(formatDiags(diags))
	}
	if diff := cmp.Diff([]string{"image.a", "image.b"}, r.Targets()); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	if _, diags := Load(t.TempDir(), Options{}); !diags.HasErrors() || diags[0].Summary != "No recipe files" {
		t.Errorf("empty directory: %v", diags)
	}
}

func TestSensitiveValuesIncludeDerived(t *testing.T) {
	r := mustLoad(t, `
variable "token" {
  type      = string
  sensitive = true
  default   = "s3cr3t-token-value"
}

variable "public" {
  default = "visible"
}

locals {
  header = "Bearer ${var.token}"
}

registry "r" {
  host     = "registry.example.com"
  auth     = "basic"
  username = var.public
  password = base64encode(var.token)
}

image "a" {
  from   = "docker.io/library/debian:bookworm"
  env    = { AUTH = local.header, USER = var.public }
  labels = { v = var.public }
}
`, Options{})
	got := r.SensitiveValues()
	// A template hides its sensitive parts ("Bearer " stays); a function of a secret hides its result.
	for _, want := range []string{"s3cr3t-token-value", "czNjcjN0LXRva2VuLXZhbHVl"} {
		found := false
		for _, s := range got {
			found = found || s == want
		}
		if !found {
			t.Errorf("SensitiveValues() = %q, lacks %q", got, want)
		}
	}
	for _, s := range got {
		if strings.Contains(s, "visible") && !strings.Contains(s, "token") {
			t.Errorf("a public value is treated as sensitive: %q", s)
		}
	}
	if out := r.Redact("auth: Bearer s3cr3t-token-value, user: visible, quoted: \"s3cr3t-token-value\""); out != "auth: Bearer (sensitive value), user: visible, quoted: \"(sensitive value)\"" {
		t.Errorf("Redact = %q", out)
	}
}

func TestResolveTarget(t *testing.T) {
	r := mustLoad(t, `
image "trainer" {
  from = "docker.io/library/debian:bookworm"
}

validate "trainer" {
  target = image.trainer
  nvidia_smi {}
}

group "default" {
  targets = [image.trainer]
}
`, Options{})
	if _, err := r.ResolveTarget("trainer"); err == nil || !strings.Contains(err.Error(), "more than one target") {
		t.Errorf("ambiguous name: err = %v", err)
	}
	if got, err := r.ResolveTarget("validate.trainer"); err != nil || got[0] != "validate.trainer" {
		t.Errorf("kind.name: %v %v", got, err)
	}
	if _, err := r.ResolveTarget("trainr"); err == nil || !strings.Contains(err.Error(), `Did you mean "trainer"?`) {
		t.Errorf("typo: err = %v", err)
	}
	if got, _ := r.Select(nil); len(got) != 1 || got[0] != "image.trainer" {
		t.Errorf("default group: %v", got)
	}
}

func TestParseGPUs(t *testing.T) {
	for in, want := range map[string][]string{
		"all": nil, "": nil, "0,1": {"0", "1"}, " 2 , 3 ": {"2", "3"},
		"GPU-3f2a0c1e-1111-2222-3333-444455556666": {"GPU-3f2a0c1e-1111-2222-3333-444455556666"},
	} {
		got, err := ParseGPUs(in)
		if err != nil || !cmp.Equal(got, want) {
			t.Errorf("ParseGPUs(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"0,0", "x", "-1", "0,,1", "all,1"} {
		if _, err := ParseGPUs(bad); err == nil {
			t.Errorf("ParseGPUs(%q) accepted", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"40GiB": 40 << 30, "512M": 512 << 20, "1T": 1 << 40, "4096": 4096} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	if _, err := ParseSize("forty"); err == nil {
		t.Error("ParseSize accepted a word")
	}
}
