package recipes

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzParse loads arbitrary recipe text: parsing, evaluation, matrix and inherits expansion and
// every semantic check must report problems as diagnostics, never panic or hang.
// Seeds: the examples and every bad recipe in testdata.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../examples/*.hcl")
	bad, _ := filepath.Glob("testdata/bad/*.hcl")
	for _, p := range append(seeds, bad...) {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				panic(fmt.Sprintf("Load took over 10 s on:\n%s", src))
			}
		}()
		r, diags := LoadSource("fuzz.hcl", src, testOptions)
		if r == nil {
			t.Fatal("Load returned a nil recipe")
		}
		for _, d := range diags {
			if d.Summary == "" {
				t.Errorf("diagnostic without a summary: %#v", d)
			}
		}
		_ = ToJSON(diags)
		_, _ = r.Select(nil)
	})
}
