package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpuforge/gpuforge/recipes"
)

// sourceDateEpoch is 2025-11-28 12:00:00 UTC; timestamp() in the examples returns it.
const sourceDateEpoch = "1764331200"

// testEnv pins the environment run() reads: a fixed SOURCE_DATE_EPOCH, no colour, and no
// GPUFORGE_VAR_* variables inherited from whoever runs the tests.
func testEnv(t *testing.T) {
	t.Helper()
	t.Setenv("SOURCE_DATE_EPOCH", sourceDateEpoch)
	t.Setenv("NO_COLOR", "1")
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, recipes.EnvPrefix) {
			t.Setenv(name, "") // restored when the test ends
			if err := os.Unsetenv(name); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// runCLI runs gpuforge with args and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// foldSpace replaces each run of white space in s with one space.
func foldSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

// exampleFiles returns the example recipes, ../../examples/*.hcl.
func exampleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../examples/*.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found %d example recipes (%v); want at least quickstart, ngc-pytorch, gpu-node-ami and seed", len(files), files)
	}
	return files
}

const badRecipe = "../../recipes/testdata/bad/driver_in_container_image.hcl"

func TestCLI(t *testing.T) {
	varFile := filepath.Join(t.TempDir(), "vars.hcl")
	if err := os.WriteFile(varFile, []byte("suite = \"trixie\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badVarFile := filepath.Join(t.TempDir(), "bad.hcl")
	if err := os.WriteFile(badVarFile, []byte("suite = \"buster\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string // substrings stdout must contain
		stderr     []string // substrings stderr must contain
		noStdout   bool     // stdout must be empty
		emptyError bool     // stderr must be empty
	}{
		{
			name:       "check examples directory",
			args:       []string{"check", "../../examples"},
			code:       ExitOK,
			stdout:     []string{"../../examples is valid:", "targets"},
			emptyError: true,
		},
		{
			name:     "check bad recipe renders the snippet",
			args:     []string{"check", badRecipe},
			code:     ExitRecipe,
			noStdout: true,
			stderr: []string{
				"Error: A container image does not carry the NVIDIA driver",
				"on " + badRecipe + " line 7, in image \"trainer\":",
				"7:   driver = driver.nvidia",
			},
		},
		{
			name:   "unknown command",
			args:   []string{"nosuch"},
			code:   ExitUsage,
			stderr: []string{`unknown command "nosuch"`, "gpuforge --help"},
		},
		{
			name:   "unknown flag",
			args:   []string{"check", "--nosuch", "../../examples"},
			code:   ExitUsage,
			stderr: []string{"unknown flag: --nosuch"},
		},
		{
			name:   "unknown single-dash flag",
			args:   []string{"plan", "-nosuch", "../../examples"},
			code:   ExitUsage,
			stderr: []string{"unknown shorthand flag"},
		},
		{
			name:   "too many arguments",
			args:   []string{"check", "../../examples", "../../examples"},
			code:   ExitUsage,
			stderr: []string{"accepts at most 1 arg"},
		},
		{
			name:     "plan unknown target",
			args:     []string{"plan", "-t", "nosuchtarget", "../../examples/ngc-pytorch.hcl"},
			code:     ExitUsage,
			noStdout: true,
			stderr:   []string{`there is no target or group "nosuchtarget"`},
		},
		{
			name:     "plan misspelt target suggests one",
			args:     []string{"plan", "-t", "trainr", "../../examples/ngc-pytorch.hcl"},
			code:     ExitUsage,
			noStdout: true,
			stderr:   []string{`"trainr"`, `Did you mean "trainer"?`},
		},
		{
			name:     "plan misspelt kind.name target suggests one",
			args:     []string{"plan", "-target", "image.traner", "../../examples/ngc-pytorch.hcl"},
			code:     ExitUsage,
			noStdout: true,
			stderr:   []string{`Did you mean "image.trainer"?`},
		},
		{
			name:     "check --format yaml",
			args:     []string{"check", "--format", "yaml", "../../examples"},
			code:     ExitUsage,
			noStdout: true,
			stderr:   []string{`--format must be text or json, not "yaml"`},
		},
		{
			name:     "plan -format yaml",
			args:     []string{"plan", "-format=yaml", "../../examples"},
			code:     ExitUsage,
			noStdout: true,
			stderr:   []string{`--format must be text or json, not "yaml"`},
		},
		{
			name:       "single-dash -var",
			args:       []string{"check", "-var", "suite=trixie", "../../examples/quickstart.hcl"},
			code:       ExitOK,
			stdout:     []string{"is valid"},
			emptyError: true,
		},
		{
			name:       "single-dash -var=",
			args:       []string{"check", "-var=suite=trixie", "../../examples/quickstart.hcl"},
			code:       ExitOK,
			stdout:     []string{"is valid"},
			emptyError: true,
		},
		{
			name:     "-var failing the variable's validation",
			args:     []string{"check", "-var", "suite=buster", "../../examples/quickstart.hcl"},
			code:     ExitRecipe,
			noStdout: true,
			stderr:   []string{"Invalid value for variable", "tested on bookworm and trixie", `The value "buster" was set by -var.`},
		},
		{
			name:     "-var for an undeclared variable",
			args:     []string{"check", "-var", "suit=trixie", "../../examples/quickstart.hcl"},
			code:     ExitRecipe,
			noStdout: true,
			stderr:   []string{"Value for undeclared variable", `Did you mean "suite"?`},
		},
		{
			name:   "-var reaches the plan",
			args:   []string{"plan", "-var", "suite=trixie", "../../examples/quickstart.hcl"},
			code:   ExitOK,
			stdout: []string{"bootstrap debian trixie with mmdebstrap"},
		},
		{
			name:       "-var-file",
			args:       []string{"plan", "-var-file", varFile, "../../examples/quickstart.hcl"},
			code:       ExitOK,
			stdout:     []string{"bootstrap debian trixie with mmdebstrap"},
			emptyError: true,
		},
		{
			name:     "-var-file failing the variable's validation",
			args:     []string{"check", "-var-file=" + badVarFile, "../../examples/quickstart.hcl"},
			code:     ExitRecipe,
			noStdout: true,
			stderr:   []string{"Invalid value for variable", `The value "buster" was set by ` + badVarFile + "."},
		},
		{
			name:     "-var wins over -var-file",
			args:     []string{"check", "-var-file", badVarFile, "-var", "suite=trixie", "../../examples/quickstart.hcl"},
			code:     ExitOK,
			stdout:   []string{"is valid"},
			noStdout: false,
		},
		{
			name:     "missing -var-file",
			args:     []string{"check", "-var-file", filepath.Join(t.TempDir(), "absent.hcl"), "../../examples/quickstart.hcl"},
			code:     ExitRecipe,
			noStdout: true,
			stderr:   []string{"Failed to read variables file"},
		},
		{
			name:     "missing recipe",
			args:     []string{"check", "../../examples/absent.hcl"},
			code:     ExitRecipe,
			noStdout: true,
			stderr:   []string{"Recipe not found"},
		},
		{
			name:       "version",
			args:       []string{"version"},
			code:       ExitOK,
			stdout:     []string{"gpuforge dev\n", "go:"},
			emptyError: true,
		},
		{
			name:       "completion bash",
			args:       []string{"completion", "bash"},
			code:       ExitOK,
			stdout:     []string{"# bash completion V2 for gpuforge", "__start_gpuforge()", "complete -o default -F __start_gpuforge gpuforge"},
			emptyError: true,
		},
		{
			name:       "completion zsh",
			args:       []string{"completion", "zsh"},
			code:       ExitOK,
			stdout:     []string{"#compdef gpuforge"},
			emptyError: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testEnv(t)
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != tt.code {
				t.Errorf("gpuforge %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tt.args, " "), code, tt.code, stdout, stderr)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("gpuforge %s: stdout lacks %q:\n%s", strings.Join(tt.args, " "), s, stdout)
				}
			}
			for _, s := range tt.stderr {
				// Diagnostics are wrapped at 100 columns: compare with whitespace folded.
				if !strings.Contains(foldSpace(stderr), foldSpace(s)) {
					t.Errorf("gpuforge %s: stderr lacks %q:\n%s", strings.Join(tt.args, " "), s, stderr)
				}
			}
			if tt.noStdout && stdout != "" {
				t.Errorf("gpuforge %s: stdout is not empty:\n%s", strings.Join(tt.args, " "), stdout)
			}
			if tt.emptyError && stderr != "" {
				t.Errorf("gpuforge %s: stderr is not empty:\n%s", strings.Join(tt.args, " "), stderr)
			}
			if strings.Contains(stdout+stderr, "\x1b[") {
				t.Errorf("gpuforge %s: output has ANSI escapes with NO_COLOR set", strings.Join(tt.args, " "))
			}
		})
	}
}

func TestCheckExamples(t *testing.T) {
	for _, f := range exampleFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			testEnv(t)
			code, stdout, stderr := runCLI(t, "check", f)
			if code != ExitOK {
				t.Fatalf("gpuforge check %s: exit %d, want 0\nstderr:\n%s", f, code, stderr)
			}
			if want := f + " is valid: "; !strings.HasPrefix(stdout, want) {
				t.Errorf("gpuforge check %s: stdout = %q, want it to start with %q", f, stdout, want)
			}
			if stderr != "" {
				t.Errorf("gpuforge check %s: warnings on an example:\n%s", f, stderr)
			}
		})
	}
}

// TestCheckExampleTargetCounts pins how many targets each example reports.
func TestCheckExampleTargetCounts(t *testing.T) {
	testEnv(t)
	want := map[string]string{
		"../../examples":                     "../../examples is valid: 12 targets.\n",
		"../../examples/gpu-node-debian.hcl": "../../examples/gpu-node-debian.hcl is valid: 1 target.\n",
		"../../examples/quickstart.hcl":      "../../examples/quickstart.hcl is valid: 2 targets.\n",
		"../../examples/ngc-pytorch.hcl":     "../../examples/ngc-pytorch.hcl is valid: 2 targets.\n",
		"../../examples/gpu-node-ami.hcl":    "../../examples/gpu-node-ami.hcl is valid: 2 targets.\n",
		"../../examples/seed.hcl":            "../../examples/seed.hcl is valid: 5 targets.\n",
	}
	for path, line := range want {
		code, stdout, stderr := runCLI(t, "check", path)
		if code != ExitOK || stdout != line {
			t.Errorf("gpuforge check %s: exit %d, stdout %q; want 0, %q\nstderr:\n%s", path, code, stdout, line, stderr)
		}
	}
}

func TestCheckJSON(t *testing.T) {
	t.Run("bad recipe", func(t *testing.T) {
		testEnv(t)
		code, stdout, stderr := runCLI(t, "check", "--format", "json", badRecipe)
		if code != ExitRecipe {
			t.Fatalf("exit %d, want %d\nstderr:\n%s", code, ExitRecipe, stderr)
		}
		var doc recipes.DiagnosticsJSON
		dec := json.NewDecoder(strings.NewReader(stdout))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("stdout is not a diagnostics document: %v\n%s", err, stdout)
		}
		if dec.More() {
			t.Errorf("stdout holds more than one JSON document:\n%s", stdout)
		}
		if doc.Valid {
			t.Error("valid = true for a recipe with errors")
		}
		if doc.ErrorCount < 1 {
			t.Errorf("error_count = %d, want ≥ 1", doc.ErrorCount)
		}
		if got := len(doc.Diagnostics); got != doc.ErrorCount+doc.WarningCount {
			t.Errorf("%d diagnostics, but error_count %d + warning_count %d", got, doc.ErrorCount, doc.WarningCount)
		}
		for i, d := range doc.Diagnostics {
			if d.Range == nil {
				t.Errorf("diagnostic %d (%s) has no range", i, d.Summary)
				continue
			}
			if d.Range.Filename != badRecipe {
				t.Errorf("diagnostic %d: filename %q, want %q", i, d.Range.Filename, badRecipe)
			}
			if d.Range.Start.Line < 1 || d.Range.Start.Column < 1 || d.Range.End.Byte < d.Range.Start.Byte {
				t.Errorf("diagnostic %d: bad range %+v", i, *d.Range)
			}
		}
		first := doc.Diagnostics[0]
		if first.Severity != "error" || first.Summary != "A container image does not carry the NVIDIA driver" ||
			first.Range.Start.Line != 7 || first.Range.Start.Column != 12 {
			t.Errorf("first diagnostic = %+v at %+v; want the driver error at 7:12", first, first.Range.Start)
		}
		// JSON goes to stdout only; the snippet is not printed as well.
		if stderr != "" {
			t.Errorf("stderr is not empty with --format json:\n%s", stderr)
		}
	})
	t.Run("valid recipe", func(t *testing.T) {
		testEnv(t)
		code, stdout, stderr := runCLI(t, "check", "-format", "json", "../../examples")
		if code != ExitOK {
			t.Fatalf("exit %d, want 0\nstderr:\n%s", code, stderr)
		}
		var doc recipes.DiagnosticsJSON
		if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
		}
		if !doc.Valid || doc.ErrorCount != 0 || doc.Diagnostics == nil {
			t.Errorf("document = %+v; want valid, no errors, diagnostics an empty list", doc)
		}
	})
}

func TestSingleDashFlags(t *testing.T) {
	tests := []struct {
		in, want []string
	}{
		{[]string{"check", "-var", "a=b", "x"}, []string{"check", "--var", "a=b", "x"}},
		{[]string{"check", "-var=a=b"}, []string{"check", "--var=a=b"}},
		{[]string{"fmt", "-check", "-diff", "-recursive"}, []string{"fmt", "--check", "--diff", "--recursive"}},
		{[]string{"plan", "-var-file", "f", "-format=json", "-target", "x"}, []string{"plan", "--var-file", "f", "--format=json", "--target", "x"}},
		// Short flags and unknown single-dash words are left to cobra.
		{[]string{"plan", "-t", "x", "-h"}, []string{"plan", "-t", "x", "-h"}},
		{[]string{"plan", "-nosuch"}, []string{"plan", "-nosuch"}},
		{[]string{"fmt", "-"}, []string{"fmt", "-"}},
		// Nothing after "--" is rewritten.
		{[]string{"check", "--", "-var"}, []string{"check", "--", "-var"}},
		{[]string{"check", "-var", "a=b", "--", "-check"}, []string{"check", "--var", "a=b", "--", "-check"}},
	}
	for _, tt := range tests {
		got := singleDashFlags(tt.in)
		if strings.Join(got, "\x00") != strings.Join(tt.want, "\x00") {
			t.Errorf("singleDashFlags(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEnvironmentVariables(t *testing.T) {
	testEnv(t)
	t.Setenv(recipes.EnvPrefix+"suite", "buster")
	code, _, stderr := runCLI(t, "check", "../../examples/quickstart.hcl")
	if code != ExitRecipe || !strings.Contains(foldSpace(stderr), `The value "buster" was set by env.`) {
		t.Errorf("check with GPUFORGE_VAR_suite=buster: exit %d, want %d and the value's source\n%s", code, ExitRecipe, stderr)
	}
	// -var wins over the environment.
	if code, stdout, stderr := runCLI(t, "plan", "-var", "suite=trixie", "../../examples/quickstart.hcl"); code != ExitOK ||
		!strings.Contains(stdout, "bootstrap debian trixie") {
		t.Errorf("plan -var suite=trixie with GPUFORGE_VAR_suite=buster: exit %d\n%s%s", code, stdout, stderr)
	}
	// testEnv clears it again for the next test.
	t.Run("cleared", func(t *testing.T) {
		testEnv(t)
		if _, ok := os.LookupEnv(recipes.EnvPrefix + "suite"); ok {
			t.Fatal("testEnv left GPUFORGE_VAR_suite set")
		}
		if code, _, stderr := runCLI(t, "check", "../../examples/quickstart.hcl"); code != ExitOK {
			t.Errorf("check after testEnv: exit %d\n%s", code, stderr)
		}
	})
}
