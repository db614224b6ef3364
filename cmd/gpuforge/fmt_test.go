package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Fixtures in testdata/fmt: unformatted.hcl is a valid recipe written carelessly, formatted.hcl
// is what fmt makes of it (rewritten by -update), broken.hcl does not parse.
const (
	fmtUnformatted = "testdata/fmt/unformatted.hcl"
	fmtFormatted   = "testdata/fmt/formatted.hcl"
	fmtBroken      = "testdata/fmt/broken.hcl"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// copyInto copies the fixture src into dir under name and returns the new path.
func copyInto(t *testing.T, dir, name, src string) string {
	t.Helper()
	dst := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, readFile(t, src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func assertUnchanged(t *testing.T, path, fixture string) {
	t.Helper()
	if got, want := readFile(t, path), readFile(t, fixture); !bytes.Equal(got, want) {
		t.Errorf("%s was modified:\n%s", path, got)
	}
}

func TestFormatSourceGolden(t *testing.T) {
	src := readFile(t, fmtUnformatted)
	out, _, diags := formatSource(fmtUnformatted, src)
	if diags.HasErrors() {
		t.Fatalf("formatSource: %v", diags)
	}
	if bytes.Equal(out, src) {
		t.Fatalf("%s is already formatted; the fixture must need formatting", fmtUnformatted)
	}
	if *update {
		if err := os.WriteFile(fmtFormatted, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := readFile(t, fmtFormatted); !bytes.Equal(out, want) {
		t.Errorf("formatSource(%s) =\n%s\nwant (%s):\n%s", fmtUnformatted, out, fmtFormatted, want)
	}
	again, _, diags := formatSource(fmtFormatted, out)
	if diags.HasErrors() || !bytes.Equal(again, out) {
		t.Errorf("formatting is not idempotent: second pass =\n%s (diags %v)", again, diags)
	}
}

func TestFormatSourceSyntaxError(t *testing.T) {
	out, r, diags := formatSource(fmtBroken, readFile(t, fmtBroken))
	if !diags.HasErrors() {
		t.Fatalf("formatSource(%s) reported no error; returned\n%s", fmtBroken, out)
	}
	if out != nil {
		t.Errorf("formatSource returned output for a file that does not parse:\n%s", out)
	}
	if r == nil || r.Files[fmtBroken] == nil {
		t.Errorf("formatSource returned no file to render the diagnostics' snippets from")
	}
	for _, d := range diags {
		if d.Subject == nil || d.Subject.Filename != fmtBroken || d.Subject.Start.Line < 1 {
			t.Errorf("diagnostic %q has no position in %s: %+v", d.Summary, fmtBroken, d.Subject)
		}
	}
}

func TestFmtCheckLeavesFilesAlone(t *testing.T) {
	testEnv(t)
	dir := t.TempDir()
	bad := copyInto(t, dir, "app.hcl", fmtUnformatted)
	good := copyInto(t, dir, "good.hcl", fmtFormatted)
	before, err := os.Stat(bad)
	if err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runCLI(t, "fmt", "-check", dir)
	if code != ExitUnformatted {
		t.Fatalf("fmt -check: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, ExitUnformatted, stdout, stderr)
	}
	if stdout != bad+"\n" {
		t.Errorf("fmt -check: stdout = %q, want only the unformatted file %q", stdout, bad)
	}
	if !strings.Contains(stderr, "1 file(s) need formatting") {
		t.Errorf("fmt -check: stderr = %q, want the count of files to format", stderr)
	}
	assertUnchanged(t, bad, fmtUnformatted)
	assertUnchanged(t, good, fmtFormatted)
	after, err := os.Stat(bad)
	if err != nil {
		t.Fatal(err)
	}
	if !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("fmt -check rewrote %s (mtime %v -> %v)", bad, before.ModTime(), after.ModTime())
	}

	// A file named on the command line is checked the same way.
	code, stdout, _ = runCLI(t, "fmt", "--check", bad)
	if code != ExitUnformatted || stdout != bad+"\n" {
		t.Errorf("fmt --check %s: exit %d, stdout %q; want %d and the file", bad, code, stdout, ExitUnformatted)
	}
	assertUnchanged(t, bad, fmtUnformatted)
}

func TestFmtCheckDiff(t *testing.T) {
	testEnv(t)
	dir := t.TempDir()
	bad := copyInto(t, dir, "app.hcl", fmtUnformatted)

	code, stdout, stderr := runCLI(t, "fmt", "-check", "-diff", dir)
	if code != ExitUnformatted {
		t.Fatalf("fmt -check -diff: exit %d, want %d\nstderr:\n%s", code, ExitUnformatted, stderr)
	}
	assertUnchanged(t, bad, fmtUnformatted)
	lines := strings.Split(stdout, "\n")
	if lines[0] != bad {
		t.Errorf("first line %q, want the file name %q", lines[0], bad)
	}
	for _, want := range []string{
		"--- " + bad + "\n",
		"+++ " + bad + " (formatted)\n",
		"@@ -",
		"\n-type = string\n",
		"\n+  type    = string\n",
		"\n-  packages = [ \"ca-certificates\",\"python3\" ]\n",
		"\n+  packages = [\"ca-certificates\", \"python3\"]\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("diff lacks %q:\n%s", want, stdout)
		}
	}
	// Unchanged lines are context, not changes.
	if strings.Contains(stdout, "\n-# A valid recipe") || strings.Contains(stdout, "\n+# A valid recipe") {
		t.Errorf("diff marks an unchanged comment line as changed:\n%s", stdout)
	}

	// -diff without -check prints the same diff and writes the file.
	code, stdout2, stderr := runCLI(t, "fmt", "-diff", dir)
	if code != ExitOK {
		t.Fatalf("fmt -diff: exit %d, want 0\nstderr:\n%s", code, stderr)
	}
	if stdout2 != stdout {
		t.Errorf("fmt -diff printed\n%s\nbut fmt -check -diff printed\n%s", stdout2, stdout)
	}
	assertUnchanged(t, bad, fmtFormatted)
}

func TestFmtRewrites(t *testing.T) {
	testEnv(t)
	dir := t.TempDir()
	bad := copyInto(t, dir, "app.hcl", fmtUnformatted)
	good := copyInto(t, dir, "good.hcl", fmtFormatted)
	if err := os.Chmod(bad, 0o600); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runCLI(t, "fmt", dir)
	if code != ExitOK {
		t.Fatalf("fmt: exit %d, want 0\nstderr:\n%s", code, stderr)
	}
	if stdout != bad+"\n" {
		t.Errorf("fmt: stdout = %q, want the rewritten file %q", stdout, bad)
	}
	assertUnchanged(t, bad, fmtFormatted)
	assertUnchanged(t, good, fmtFormatted)
	if st, err := os.Stat(bad); err != nil {
		t.Fatal(err)
	} else if st.Mode().Perm() != 0o600 {
		t.Errorf("fmt changed the mode of %s to %v, want 0600", bad, st.Mode().Perm())
	}

	code, stdout, stderr = runCLI(t, "fmt", "-check", dir)
	if code != ExitOK || stdout != "" || stderr != "" {
		t.Errorf("fmt -check after fmt: exit %d, stdout %q, stderr %q; want 0 and silence", code, stdout, stderr)
	}
	// The formatted recipe still loads.
	if code, _, stderr := runCLI(t, "check", bad); code != ExitOK {
		t.Errorf("check of the formatted recipe: exit %d\n%s", code, stderr)
	}
}

func TestFmtSyntaxError(t *testing.T) {
	testEnv(t)
	dir := t.TempDir()
	broken := copyInto(t, dir, "broken.hcl", fmtBroken)
	bad := copyInto(t, dir, "other.hcl", fmtUnformatted)

	code, stdout, stderr := runCLI(t, "fmt", "-check", dir)
	if code != ExitRecipe {
		t.Errorf("fmt -check with a broken file: exit %d, want %d (a syntax error wins over unformatted)", code, ExitRecipe)
	}
	if stdout != bad+"\n" {
		t.Errorf("fmt -check: stdout = %q, want only %q listed", stdout, bad)
	}
	assertUnchanged(t, broken, fmtBroken)
	assertUnchanged(t, bad, fmtUnformatted)

	code, _, stderr = runCLI(t, "fmt", dir)
	if code != ExitRecipe {
		t.Errorf("fmt with a broken file: exit %d, want %d", code, ExitRecipe)
	}
	assertUnchanged(t, broken, fmtBroken)
	// The file that parses is still formatted.
	assertUnchanged(t, bad, fmtFormatted)
	for _, want := range []string{"Error: Invalid expression", "on " + broken + " line 4", "4:   packages ="} {
		if !strings.Contains(stderr, want) {
			t.Errorf("fmt: stderr lacks %q:\n%s", want, stderr)
		}
	}

	// Named directly, too.
	code, stdout, _ = runCLI(t, "fmt", broken)
	if code != ExitRecipe || stdout != "" {
		t.Errorf("fmt %s: exit %d, stdout %q; want %d and nothing listed", broken, code, stdout, ExitRecipe)
	}
	assertUnchanged(t, broken, fmtBroken)
}

func TestFmtRecursive(t *testing.T) {
	testEnv(t)
	dir := t.TempDir()
	nested := copyInto(t, dir, filepath.Join("sub", "app.hcl"), fmtUnformatted)
	copyInto(t, dir, filepath.Join("sub", "notes.txt"), fmtUnformatted) // not *.hcl: never looked at

	code, stdout, _ := runCLI(t, "fmt", "-check", dir)
	if code != ExitOK || stdout != "" {
		t.Errorf("fmt -check without -recursive: exit %d, stdout %q; want 0 and nothing (subdirectories skipped)", code, stdout)
	}
	code, stdout, _ = runCLI(t, "fmt", "-check", "-recursive", dir)
	if code != ExitUnformatted || stdout != nested+"\n" {
		t.Errorf("fmt -check -recursive: exit %d, stdout %q; want %d and %q", code, stdout, ExitUnformatted, nested)
	}
	assertUnchanged(t, nested, fmtUnformatted)
}

func TestFmtMissingPath(t *testing.T) {
	testEnv(t)
	code, stdout, stderr := runCLI(t, "fmt", filepath.Join(t.TempDir(), "absent.hcl"))
	if code != ExitUsage || stdout != "" || !strings.Contains(stderr, "no such file or directory") {
		t.Errorf("fmt of a missing path: exit %d, stdout %q, stderr %q; want %d and the error", code, stdout, stderr, ExitUsage)
	}
}

// TestFmtStdin runs `fmt -` through the command tree (run has no stdin parameter).
func TestFmtStdin(t *testing.T) {
	testEnv(t)
	fmtStdin := func(src []byte) (int, string, string) {
		var stdout, stderr bytes.Buffer
		root := newRootCmd(&stdout, &stderr)
		root.SetIn(bytes.NewReader(src))
		root.SetArgs(singleDashFlags([]string{"fmt", "-"}))
		err := root.Execute()
		code := ExitOK
		if err != nil {
			var ee *exitError
			if !errors.As(err, &ee) {
				t.Fatalf("fmt -: %v", err)
			}
			code = ee.code
		}
		return code, stdout.String(), stderr.String()
	}

	code, stdout, stderr := fmtStdin(readFile(t, fmtUnformatted))
	if code != ExitOK || stdout != string(readFile(t, fmtFormatted)) || stderr != "" {
		t.Errorf("fmt - : exit %d, stderr %q, stdout\n%s\nwant 0 and %s", code, stderr, stdout, fmtFormatted)
	}
	code, stdout, stderr = fmtStdin(readFile(t, fmtBroken))
	if code != ExitRecipe || stdout != "" || !strings.Contains(stderr, "on <stdin> line 4") || !strings.Contains(stderr, "4:   packages =") {
		t.Errorf("fmt - with a syntax error: exit %d, stdout %q, stderr %q; want %d and the error at <stdin> line 4", code, stdout, stderr, ExitRecipe)
	}
}

func TestExamplesAreFormatted(t *testing.T) {
	testEnv(t)
	code, stdout, stderr := runCLI(t, "fmt", "-check", "-diff", "-recursive", "../../examples")
	if code != ExitOK || stdout != "" || stderr != "" {
		t.Errorf("fmt -check ../../examples: exit %d; want 0 and no output\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, f := range exampleFiles(t) {
		src := readFile(t, f)
		out, _, diags := formatSource(f, src)
		if diags.HasErrors() || !bytes.Equal(out, src) {
			t.Errorf("%s is not in canonical format (diags %v)", f, diags)
		}
	}
}
