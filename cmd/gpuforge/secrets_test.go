package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpuforge/gpuforge/pipeline"
	"github.com/gpuforge/gpuforge/recipes"
)

// The acceptance point these tests hold gpuforge to: a sensitive variable's value appears nowhere
// in plan, check, error output or the manifest — nor do values computed from it.

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randomDigits(t *testing.T, n int) string {
	t.Helper()
	var sb strings.Builder
	for range n {
		d, err := rand.Int(rand.Reader, big.NewInt(10))
		if err != nil {
			t.Fatal(err)
		}
		sb.WriteString(d.String())
	}
	return sb.String()
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// secrets are the values of one run and every string computed from them that must not be printed.
type secrets struct {
	token string // 32 random hex digits with a "!" in the middle: not allowed in a tag
	pin   string // the other sensitive variable
}

func newSecrets(t *testing.T, validPin bool) secrets {
	h := randomHex(t, 16)
	s := secrets{token: h[:16] + "!" + h[16:]}
	if validPin {
		s.pin = randomDigits(t, 12)
	} else {
		s.pin = "x" + randomHex(t, 6) // not digits: fails the pin's validation
	}
	return s
}

// forbidden lists what must not appear, with a name for the failure message. The halves of the
// token catch a value that is printed escaped, quoted or split across lines.
func (s secrets) forbidden() map[string]string {
	return map[string]string{
		"token":                 s.token,
		"first half of token":   s.token[:16],
		"second half of token":  s.token[17:],
		"sha256(token)":         sha256Hex(s.token),
		"prefix of sha256":      sha256Hex(s.token)[:16],
		"upper(token)":          strings.ToUpper(s.token[:16]),
		"Bearer token":          "Bearer " + s.token,
		"pin":                   s.pin,
		"run line with the pin": "login --pin " + s.pin,
	}
}

func assertNoSecrets(t *testing.T, what, out string, s secrets) {
	t.Helper()
	for name, v := range s.forbidden() {
		if strings.Contains(out, v) {
			t.Errorf("%s shows the %s (%q):\n%s", what, name, v, out)
		}
	}
}

// secretRecipe is a recipe that uses two sensitive variables directly and through values computed
// from them. With failing set, the token is also put in a tag (where its "!" makes the tag
// invalid, so the error message quotes it) and the pin fails its validation.
func secretRecipe(sensitive, failing bool) string {
	tag := `"registry.example.com/x:v1"`
	if failing {
		tag = `"registry.example.com/x:${var.token}"`
	}
	return fmt.Sprintf(`variable "token" {
  type      = string
  sensitive = %[1]t
}

variable "pin" {
  type      = string
  sensitive = %[1]t
  validation {
    condition     = can(regex("^[0-9]+$", var.pin))
    error_message = "The PIN is digits only."
  }
}

locals {
  auth = "Bearer ${var.token}"
}

registry "private" {
  host     = "registry.example.com"
  auth     = "basic"
  username = "ci-bot"
  password = var.token
}

image "app" {
  from        = "docker.io/library/debian:12"
  run         = ["login --pin ${var.pin}", "echo ${upper(var.token)}"]
  env         = { TOKEN = var.token }
  labels      = { sig = sha256(var.token) }
  annotations = { auth = local.auth }
  tags        = [%[2]s]
  push        = true
}

validate "smoke" {
  target = image.app
  nvidia_smi {
    min_driver = "535"
  }
}
`, sensitive, tag)
}

// writeRecipe writes a one-file recipe into a new directory and returns the directory.
func writeRecipe(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "recipe.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// channel is one way of giving variables: it returns the extra command-line arguments, and the
// recipes.Options that give the same values.
type channel struct {
	name string
	give func(t *testing.T, vars map[string]string) ([]string, recipes.Options)
}

var channels = []channel{
	{"-var", func(t *testing.T, vars map[string]string) ([]string, recipes.Options) {
		var args, kvs []string
		for _, name := range []string{"token", "pin"} {
			args = append(args, "-var", name+"="+vars[name])
			kvs = append(kvs, name+"="+vars[name])
		}
		return args, recipes.Options{Vars: kvs}
	}},
	{"env", func(t *testing.T, vars map[string]string) ([]string, recipes.Options) {
		for name, v := range vars {
			t.Setenv(recipes.EnvPrefix+name, v)
		}
		return nil, recipes.Options{}
	}},
	{"-var-file", func(t *testing.T, vars map[string]string) ([]string, recipes.Options) {
		path := filepath.Join(t.TempDir(), "secrets.vars.hcl") // not in the recipe's directory
		src := fmt.Sprintf("token = %s\npin   = %s\n", strconv.Quote(vars["token"]), strconv.Quote(vars["pin"]))
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"-var-file", path}, recipes.Options{VarFiles: []string{path}}
	}},
}

// output is what one command printed.
type output struct {
	args           []string
	code           int
	stdout, stderr string
}

func (o output) String() string {
	return fmt.Sprintf("gpuforge %s (exit %d)\n--- stdout\n%s--- stderr\n%s", strings.Join(o.args, " "), o.code, o.stdout, o.stderr)
}

// runAll runs check and plan, text and JSON, on dir with the extra arguments.
func runAll(t *testing.T, dir string, extra []string) map[string]output {
	t.Helper()
	outs := map[string]output{}
	for _, cmd := range []string{"check", "plan"} {
		for _, format := range []string{"text", "json"} {
			args := append(append([]string{cmd, "--format", format}, extra...), dir)
			code, stdout, stderr := runCLI(t, args...)
			outs[cmd+" "+format] = output{args, code, stdout, stderr}
		}
	}
	return outs
}

func TestSensitiveValuesNeverPrinted(t *testing.T) {
	for _, ch := range channels {
		t.Run(ch.name, func(t *testing.T) {
			t.Run("valid", func(t *testing.T) {
				testEnv(t)
				s := newSecrets(t, true)
				dir := writeRecipe(t, secretRecipe(true, false))
				extra, _ := ch.give(t, map[string]string{"token": s.token, "pin": s.pin})
				outs := runAll(t, dir, extra)
				for name, o := range outs {
					if o.code != ExitOK {
						t.Fatalf("%s: want exit 0\n%s", name, o)
					}
					assertNoSecrets(t, name, o.stdout+o.stderr, s)
				}
				if o := outs["check text"]; o.stderr != "" {
					t.Errorf("check printed diagnostics for a valid recipe:\n%s", o)
				}
				// The values are shown redacted where they would be. A template such as
				// "login --pin ${var.pin}" may be redacted as a whole or only where the value is.
				red := regexp.QuoteMeta(recipes.Redacted)
				for _, want := range []string{
					`env TOKEN=` + red + `["\n]`,
					`label sig=` + red,
					`annotation auth=(Bearer )?` + red,
					`run (login --pin )?` + red,
					`run (echo )?` + red,
				} {
					re := regexp.MustCompile(want)
					for _, name := range []string{"plan text", "plan json"} {
						if !re.MatchString(outs[name].stdout) {
							t.Errorf("%s does not match %s:\n%s", name, want, outs[name])
						}
					}
				}
				var plan pipeline.Plan
				if err := json.Unmarshal([]byte(outs["plan json"].stdout), &plan); err != nil {
					t.Errorf("plan --format json is not JSON after redaction: %v", err)
				}
			})
			t.Run("failing", func(t *testing.T) {
				testEnv(t)
				s := newSecrets(t, false)
				dir := writeRecipe(t, secretRecipe(true, true))
				extra, _ := ch.give(t, map[string]string{"token": s.token, "pin": s.pin})
				outs := runAll(t, dir, extra)
				for name, o := range outs {
					if o.code != ExitRecipe {
						t.Errorf("%s: want exit %d\n%s", name, ExitRecipe, o)
					}
					assertNoSecrets(t, name, o.stdout+o.stderr, s)
				}
				// The error paths that would print the values did run.
				text := foldSpace(outs["check text"].stderr)
				for _, want := range []string{
					"Error: Invalid value for variable",
					"The PIN is digits only.",
					"Error: Invalid image reference",
				} {
					if !strings.Contains(text, want) {
						t.Errorf("check text lacks %q:\n%s", want, outs["check text"])
					}
				}
				// The tag error quotes the tag, redacted as a whole or where the token is.
				tagErr := regexp.MustCompile(`The tag "(registry\.example\.com/x:)?` + regexp.QuoteMeta(recipes.Redacted) + `" cannot be parsed`)
				if !tagErr.MatchString(text) {
					t.Errorf("check text does not match %s:\n%s", tagErr, outs["check text"])
				}
				if strings.Contains(outs["plan text"].stdout, "Plan for") {
					t.Errorf("plan printed a plan for a recipe with errors:\n%s", outs["plan text"])
				}
				var doc recipes.DiagnosticsJSON
				if err := json.Unmarshal([]byte(outs["check json"].stdout), &doc); err != nil {
					t.Fatalf("check --format json is not JSON: %v\n%s", err, outs["check json"])
				}
				if doc.Valid || doc.ErrorCount < 2 {
					t.Errorf("check --format json: valid %v, error_count %d; want invalid with both errors", doc.Valid, doc.ErrorCount)
				}
			})
		})
	}
}

// TestSensitiveNegativeControl shows that the assertions above can see a leak: with sensitive =
// false, every value is printed.
func TestSensitiveNegativeControl(t *testing.T) {
	testEnv(t)
	s := newSecrets(t, true)
	dir := writeRecipe(t, secretRecipe(false, false))
	code, stdout, stderr := runCLI(t, "plan", "-var", "token="+s.token, "-var", "pin="+s.pin, dir)
	if code != ExitOK {
		t.Fatalf("plan: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		"env TOKEN=" + s.token,
		"label sig=" + sha256Hex(s.token),
		"annotation auth=Bearer " + s.token,
		"run login --pin " + s.pin,
		"run echo " + strings.ToUpper(s.token),
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("plan of a recipe without sensitive variables lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, recipes.Redacted) {
		t.Errorf("plan redacted a value that is not sensitive:\n%s", stdout)
	}

	s = newSecrets(t, false)
	dir = writeRecipe(t, secretRecipe(false, true))
	code, _, stderr = runCLI(t, "check", "-var", "token="+s.token, "-var", "pin="+s.pin, dir)
	if code != ExitRecipe {
		t.Fatalf("check: exit %d, want %d\n%s", code, ExitRecipe, stderr)
	}
	for _, want := range []string{s.token, `The value "` + s.pin + `" was set by -var.`} {
		if !strings.Contains(foldSpace(stderr), want) {
			t.Errorf("check of a recipe without sensitive variables lacks %q:\n%s", want, stderr)
		}
	}
	// The registry password not from a sensitive variable is worth a warning.
	if !strings.Contains(stderr, "Password written into the recipe") {
		t.Errorf("check lacks the warning about the registry password:\n%s", stderr)
	}
}

// buildManifest makes the build manifest the way a build would: the recipe's files, a target per
// planned target with what it produced, and a step per planned stage, run by the runner.
func buildManifest(t *testing.T, dir string, opts recipes.Options, selected ...string) ([]byte, *pipeline.Plan) {
	t.Helper()
	r, diags := recipes.Load(dir, opts)
	if diags.HasErrors() {
		t.Fatalf("load %s: %v", dir, diags)
	}
	p, err := pipeline.NewPlan(r, selected)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, name := range r.FileNames {
		rel, err := filepath.Rel(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.ToSlash(rel)] = readFile(t, name)
	}
	t0 := time.Unix(1764331200, 0)
	m := pipeline.NewManifest("b-test-00000001", version, pipeline.NewRecipeRecord(dir, files), t0)
	for _, tg := range p.Targets {
		kind := pipeline.TargetKind(tg.Kind)
		m.RecordTarget(tg.Name, kind)
		switch kind {
		case pipeline.TargetImage:
			digest := "sha256:" + sha256Hex("manifest of "+tg.Address)
			var pushed []string
			for _, tag := range tg.Outputs {
				repo, _, _ := strings.Cut(tag, ":")
				pushed = append(pushed, repo+"@"+digest)
			}
			m.RecordImage(tg.Name, pipeline.ImageRecord{
				Platform: "linux/amd64", Digest: digest, ConfigDigest: "sha256:" + sha256Hex("config of "+tg.Address),
				Size: 1234, Tags: tg.Outputs, PushedTo: pushed,
			})
		case pipeline.TargetValidate:
			m.RecordValidation(tg.Name, pipeline.ValidationRecord{Verdict: pipeline.VerdictPass})
		}
	}
	clock := t0
	res, err := pipeline.NewRunner(pipeline.WithConcurrency(1), pipeline.WithClock(func() time.Time {
		clock = clock.Add(time.Second)
		return clock
	})).Run(context.Background(), p.Graph(func(s *pipeline.Stage) pipeline.Step {
		return pipeline.NewStep(s.ID, nil, nil)
	}))
	if err != nil {
		t.Fatalf("run the plan with no-op steps: %v", err)
	}
	m.RecordRun(res)
	path := filepath.Join(t.TempDir(), "manifest.json")
	if err := m.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	return readFile(t, path), p
}

func TestSensitiveValuesNotInManifest(t *testing.T) {
	for _, ch := range channels {
		t.Run(ch.name, func(t *testing.T) {
			testEnv(t)
			s := newSecrets(t, true)
			dir := writeRecipe(t, secretRecipe(true, false))
			_, opts := ch.give(t, map[string]string{"token": s.token, "pin": s.pin})
			data, p := buildManifest(t, dir, opts)
			assertNoSecrets(t, "the manifest", string(data), s)
			// The manifest is complete: it would have shown a leak.
			m := new(pipeline.Manifest)
			if err := json.Unmarshal(data, m); err != nil {
				t.Fatal(err)
			}
			if len(m.Steps) != len(p.Stages) || len(m.Targets) != len(p.Targets) || m.Status != pipeline.OutcomeSucceeded {
				t.Errorf("manifest has %d steps, %d targets, status %q; want %d, %d, succeeded",
					len(m.Steps), len(m.Targets), m.Status, len(p.Stages), len(p.Targets))
			}
			if app := m.Targets["app"]; app == nil || len(app.Images) != 1 || len(app.Images[0].Tags) != 1 {
				t.Errorf("manifest target app = %+v; want one image with its tag", app)
			}
		})
	}
}

// A secret inside an image reference that is valid (hex digits only) ends up in a stage ID:
// "image-ref.registry.example.com/base:<token>/resolve". Plan output redacts it as a whole
// document, but the Plan's IDs are not redacted, and a manifest's steps are named by them.
func TestSensitiveStageID(t *testing.T) {
	testEnv(t)
	token := randomHex(t, 16)
	dir := writeRecipe(t, `variable "token" {
  type      = string
  sensitive = true
}

image "app" {
  from = "registry.example.com/base:${var.token}"
}
`)
	data, p := buildManifest(t, dir, recipes.Options{Vars: []string{"token=" + token}})
	for _, s := range p.Stages {
		if strings.Contains(s.ID, token) || strings.Contains(s.Target, token) {
			t.Errorf("plan stage %q (target %q) holds the token", s.ID, s.Target)
		}
	}
	if strings.Contains(string(data), token) {
		t.Errorf("the manifest holds the token:\n%s", data)
	}
}

// Values computed from a sensitive variable inside an image with a matrix are redacted too.
func TestSensitiveMatrixImage(t *testing.T) {
	testEnv(t)
	token := randomHex(t, 16)
	dir := writeRecipe(t, `variable "token" {
  type      = string
  sensitive = true
}

image "app" {
  matrix = { py = ["311", "312"] }
  name   = "app-${py}"
  from   = "docker.io/library/debian:12"
  labels = { sig = sha256(var.token) }
  run    = ["echo ${upper(var.token)}"]
}
`)
	for _, format := range []string{"text", "json"} {
		code, stdout, stderr := runCLI(t, "plan", "--format", format, "-var", "token="+token, dir)
		if code != ExitOK {
			t.Fatalf("plan: exit %d\n%s", code, stderr)
		}
		for _, leak := range []string{sha256Hex(token), strings.ToUpper(token)} {
			if strings.Contains(stdout+stderr, leak) {
				t.Errorf("plan --format %s shows %q, computed from the token:\n%s", format, leak, stdout)
			}
		}
	}
}

// Redaction replaces the value's exact text, but error messages quote values (%q, HCL's "with
// var.x as …"), which escapes characters such as `"` and `\`: the escaped text is not replaced.
func TestSensitiveQuotedValue(t *testing.T) {
	testEnv(t)
	h := randomHex(t, 16)
	token := h[:16] + `"` + h[16:]
	dir := writeRecipe(t, `variable "token" {
  type      = string
  sensitive = true
  validation {
    condition     = parseint(var.token, 16) > 0
    error_message = "The token is hex."
  }
}

image "app" {
  from = "docker.io/library/debian:12"
  tags = ["registry.example.com/x:${var.token}"]
}
`)
	for _, format := range []string{"text", "json"} {
		code, stdout, stderr := runCLI(t, "check", "--format", format, "-var", "token="+token, dir)
		if code != ExitRecipe {
			t.Errorf("check --format %s: exit %d, want %d", format, code, ExitRecipe)
		}
		for _, part := range []string{h[:16], h[16:]} {
			if strings.Contains(stdout+stderr, part) {
				t.Errorf("check --format %s shows part of the token (%s):\n%s%s", format, part, stdout, stderr)
			}
		}
	}
}

// Text diagnostics are wrapped at 100 columns before they are redacted, so a sensitive value with
// spaces that the wrapping splits across two lines is not replaced.
func TestSensitiveWrappedValue(t *testing.T) {
	testEnv(t)
	var words []string
	for range 12 {
		words = append(words, randomHex(t, 4))
	}
	pass := strings.Join(words, " ")
	dir := writeRecipe(t, `variable "pass" {
  type      = string
  sensitive = true
}

image "app" {
  from = "docker.io/library/debian:12"
  tags = ["registry.example.com/x:${var.pass}"]
}
`)
	code, stdout, stderr := runCLI(t, "check", "-var", "pass="+pass, dir)
	if code != ExitRecipe {
		t.Errorf("check: exit %d, want %d", code, ExitRecipe)
	}
	for _, w := range words {
		if strings.Contains(stdout+stderr, w) {
			t.Errorf("check shows a word of the passphrase (%s):\n%s", w, stderr)
		}
	}
}

// A value of the wrong type for a sensitive variable is never recorded as sensitive, and the
// error about it shows the var file's line with the value.
func TestSensitiveWrongTypeVarFile(t *testing.T) {
	testEnv(t)
	secret := "s3cret-" + randomHex(t, 12)
	dir := writeRecipe(t, `variable "port" {
  type      = number
  sensitive = true
}

image "app" {
  from = "docker.io/library/debian:12"
}
`)
	vf := filepath.Join(t.TempDir(), "vars.hcl")
	if err := os.WriteFile(vf, []byte("port = \""+secret+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "json"} {
		code, stdout, stderr := runCLI(t, "check", "--format", format, "-var-file", vf, dir)
		if code != ExitRecipe {
			t.Errorf("check --format %s: exit %d, want %d", format, code, ExitRecipe)
		}
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("check --format %s shows the value given for a sensitive variable:\n%s%s", format, stdout, stderr)
		}
	}
}

// Redaction runs over the whole encoded JSON document, so a short sensitive string (here "1",
// which merge() makes part of a sensitive map) replaces digits of numbers and breaks the JSON.
func TestSensitiveShortValueJSON(t *testing.T) {
	testEnv(t)
	dir := writeRecipe(t, `variable "token" {
  type      = string
  sensitive = true
}

image "app" {
  from   = "docker.io/library/debian:12"
  labels = merge({ debug = "1" }, { sig = sha256(var.token) })
  kernel = "linux-image-amd64"
}
`)
	code, stdout, stderr := runCLI(t, "check", "--format", "json", "-var", "token="+randomHex(t, 16), dir)
	if code != ExitRecipe {
		t.Errorf("check: exit %d, want %d\n%s", code, ExitRecipe, stderr)
	}
	var doc recipes.DiagnosticsJSON
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Errorf("check --format json is not JSON: %v\n%s", err, stdout)
	}
}

// A block that refers to a block with a sensitive attribute (validate "smoke" { target = image.app })
// makes every string of the referenced block sensitive: its name, its from, its tags. The plan
// then reads "image.(sensitive value)", and every "app" in any output is replaced. docs/recipes.md
// says only the items computed from sensitive values are redacted.
func TestSensitiveOverRedaction(t *testing.T) {
	testEnv(t)
	s := newSecrets(t, true)
	dir := writeRecipe(t, secretRecipe(true, false))
	code, stdout, stderr := runCLI(t, "plan", "-var", "token="+s.token, "-var", "pin="+s.pin, dir)
	if code != ExitOK {
		t.Fatalf("plan: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		"\nimage.app\n",
		"outputs: registry.example.com/x:v1\n",
		"- from docker.io/library/debian:12\n",
		"- push registry.example.com/x:v1 (credentials: registry.private, basic)\n",
		"validate.smoke (after image.app)\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("plan lacks %q, which holds no secret:\n%s", want, stdout)
		}
	}
}
