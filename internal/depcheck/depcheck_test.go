package depcheck

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/gpuforge/gpuforge"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// listPackages runs `go list -deps` over the module and returns its own packages.
func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// engines are the packages that talk to build engines, clouds or GPUs.
var engines = []string{
	"github.com/moby/buildkit",
	"github.com/google/go-containerregistry",
	"github.com/aws/aws-sdk-go-v2",
	"github.com/aws/smithy-go",
	"github.com/NVIDIA/go-nvml",
	"github.com/NVIDIA/nvidia-container-toolkit",
	"tags.cncf.io/container-device-interface",
	"github.com/containerd/containerd",
	"github.com/diskfs/go-diskfs",
	"google.golang.org/grpc",
}

func TestDependencyRules(t *testing.T) {
	pkgs := listPackages(t)
	for path, p := range pkgs {
		own := func(prefix string) []string {
			var out []string
			for _, d := range p.Deps {
				if under(d, module+"/"+prefix) {
					out = append(out, d)
				}
			}
			return out
		}
		switch {
		case under(path, module+"/recipes"):
			// recipes: HCL to a typed recipe; no engine, cloud, GPU or network code.
			for _, d := range p.Deps {
				for _, e := range engines {
					if under(d, e) {
						t.Errorf("%s depends on %s: recipes must not import engine, cloud or GPU packages", path, d)
					}
				}
				if under(d, module) && !under(d, module+"/recipes") {
					t.Errorf("%s depends on %s: recipes imports no other gpuforge package", path, d)
				}
				if d == "net/http" {
					t.Errorf("%s depends on net/http: recipes never touches the network", path)
				}
			}
		case under(path, module+"/pipeline"):
			// pipeline: types and small interfaces, importing recipes only.
			for _, d := range p.Deps {
				if under(d, module) && !under(d, module+"/recipes") {
					t.Errorf("%s depends on %s: pipeline imports recipes only", path, d)
				}
				for _, e := range engines {
					if under(d, e) {
						t.Errorf("%s depends on %s: pipeline holds no engine code", path, d)
					}
				}
			}
		case under(path, module+"/validate"):
			for _, d := range own("builders") {
				t.Errorf("%s depends on %s: validate must not import builders", path, d)
			}
		}
		for _, imp := range p.Imports {
			if under(imp, module+"/cmd") {
				t.Errorf("%s imports %s: nothing imports cmd", path, imp)
			}
		}
	}
	// The rules read Deps; make sure go list filled it in.
	hasHCL := false
	for _, d := range pkgs[module+"/recipes"].Deps {
		hasHCL = hasHCL || d == "github.com/hashicorp/hcl/v2"
	}
	if !hasHCL {
		t.Error("go list reported no transitive dependencies for recipes; the rules checked nothing")
	}
	for _, must := range []string{module + "/recipes", module + "/pipeline", module + "/cmd/gpuforge"} {
		if _, ok := pkgs[must]; !ok {
			t.Errorf("go list did not report %s; the rules above checked nothing for it", must)
		}
	}
}
