package recipes

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
)

var update = flag.Bool("update", false, "rewrite golden files")

// testOptions loads recipes without looking at the test process's environment, at a fixed time.
var testOptions = Options{Env: []string{}, Now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}

// formatDiags is the golden form of diagnostics: severity, exact start and end, summary, and
// the detail indented below.
func formatDiags(diags hcl.Diagnostics) string {
	var sb strings.Builder
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		rng := "(no range)"
		if s := d.Subject; s != nil {
			rng = fmt.Sprintf("%s:%d:%d-%d:%d", s.Filename, s.Start.Line, s.Start.Column, s.End.Line, s.End.Column)
		}
		fmt.Fprintf(&sb, "%s %s: %s\n", sev, rng, d.Summary)
		if d.Detail != "" {
			fmt.Fprintf(&sb, "    %s\n", strings.ReplaceAll(d.Detail, "\n", "\n    "))
		}
	}
	return sb.String()
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("missing golden file (run go test -update): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// TestBadRecipes loads every recipe under testdata/bad and compares its diagnostics with the
// golden file next to it. Every bad recipe must produce at least one diagnostic.
func TestBadRecipes(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.hcl")
	if len(files) < 40 {
		t.Fatalf("expected at least 40 bad recipes, found %d", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".hcl"), func(t *testing.T) {
			_, diags := Load(f, testOptions)
			if len(diags) == 0 {
				t.Fatalf("%s loaded without a single diagnostic", f)
			}
			for _, d := range diags {
				if d.Subject == nil || d.Subject.Filename == "" {
					t.Errorf("diagnostic %q has no source range", d.Summary)
				}
			}
			checkGolden(t, strings.TrimSuffix(f, ".hcl")+".golden", formatDiags(diags))
		})
	}
}

// TestExamplesAreValid loads each example on its own and the examples directory as one recipe.
func TestExamplesAreValid(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.hcl")
	if len(files) < 4 {
		t.Fatalf("expected the four examples, found %d", len(files))
	}
	for _, f := range append(files, "../examples") {
		r, diags := Load(f, testOptions)
		if len(diags) > 0 {
			t.Errorf("%s:\n%s", f, formatDiags(diags))
		}
		if len(r.Targets()) == 0 {
			t.Errorf("%s has no targets", f)
		}
	}
}

// TestDiagnosticTextRendering pins what a user sees: HCL's text writer with a source snippet.
func TestDiagnosticTextRendering(t *testing.T) {
	r, diags := Load("testdata/bad/many_errors_at_once.hcl", testOptions)
	var sb strings.Builder
	if err := WriteDiagnostics(&sb, r, diags, "text", 100, false); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "testdata/rendered/many_errors_at_once.txt", sb.String())
	sb.Reset()
	if err := WriteDiagnostics(&sb, r, diags, "json", 0, false); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "testdata/rendered/many_errors_at_once.json", sb.String())
}
