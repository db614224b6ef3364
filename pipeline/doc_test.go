package pipeline

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPackageImports enforces DESIGN.md's rule for this package: the standard library, package recipes and
// golang.org/x/sync only; no engine, cloud or GPU code.
func TestPackageImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	allowed := func(path string) bool {
		first, _, _ := strings.Cut(path, "/")
		return !strings.Contains(first, ".") || // the standard library
			path == "github.com/gpuforge/gpuforge/recipes" ||
			path == "golang.org/x/sync" || strings.HasPrefix(path, "golang.org/x/sync/")
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed(path) {
				t.Errorf("%s imports %q; package pipeline may import only the standard library, "+
					"github.com/gpuforge/gpuforge/recipes and golang.org/x/sync", fset.Position(imp.Pos()), path)
			}
		}
	}
}
