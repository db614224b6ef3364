package compat

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// TestEmbeddedDataParses proves that the shipped tables parse; a malformed
// row would otherwise panic at the first lookup.
func TestEmbeddedDataParses(t *testing.T) {
	d, err := load(func(name string) (io.Reader, error) {
		b, err := dataFS.ReadFile(name)
		return strings.NewReader(string(b)), err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.frameworks["pytorch"]) == 0 || len(d.frameworks["tensorflow"]) == 0 {
		t.Errorf("frameworks: %d pytorch, %d tensorflow", len(d.frameworks["pytorch"]), len(d.frameworks["tensorflow"]))
	}
	if len(d.gpus) == 0 || len(d.instances) == 0 {
		t.Errorf("%d GPUs, %d instance types", len(d.gpus), len(d.instances))
	}
	t.Logf("pytorch %d, tensorflow %d, GPUs %d, instance types %d, families %d",
		len(d.frameworks["pytorch"]), len(d.frameworks["tensorflow"]), len(d.gpus), len(d.instances), len(d.families))
	_ = tables() // and the package-level loader does not panic
}

func TestEveryFrameworkRowHasSource(t *testing.T) {
	for _, name := range []string{"pytorch", "tensorflow"} {
		for _, f := range Frameworks(name) {
			want := "https://docs.nvidia.com/deeplearning/"
			if !strings.HasPrefix(f.Source, want) {
				t.Errorf("%s %s: source %q is not an NVIDIA deep-learning docs page", name, f.Release, f.Source)
			}
			if !strings.Contains(f.Source, name+"-release-notes/") {
				t.Errorf("%s %s: source %q is not a %s release-notes page", name, f.Release, f.Source, name)
			}
			if yymm := strings.Replace(f.Release, ".", "", 1); !strings.Contains(strings.NewReplacer(".", "", "-", "", "_", "").Replace(f.Source), "rel"+yymm) {
				t.Errorf("%s %s: source %q does not name the release", name, f.Release, f.Source)
			}
		}
	}
}

func TestFrameworkRowsConsistent(t *testing.T) {
	for _, name := range []string{"pytorch", "tensorflow"} {
		list := Frameworks(name)
		for i, f := range list {
			if i > 0 && list[i-1].Release >= f.Release {
				t.Errorf("%s: releases out of order at %s", name, f.Release)
			}
			// A newer release never needs an older driver branch than the one
			// before. (Full versions may dip: the 19.07 notes say 418.67, the
			// 19.09 notes only "418.xx".)
			if i > 0 && f.MinDriver.Major < list[i-1].MinDriver.Major {
				t.Errorf("%s %s: min driver %s is older than %s's %s", name, f.Release, f.MinDriver, list[i-1].Release, list[i-1].MinDriver)
			}
			for _, c := range f.CompatBranches {
				if c.Major >= f.MinDriver.Major {
					t.Errorf("%s %s: compat branch %s not older than min %s", name, f.Release, c, f.MinDriver)
				}
			}
			if ok, via := f.SupportsBranch(f.MinDriver.Major); !ok || via {
				t.Errorf("%s %s: its own minimum branch is not supported directly", name, f.Release)
			}
		}
	}
}

// TestFrameworkCoverage pins the releases the checker relies on: every
// monthly PyTorch and TensorFlow release from 22.01, TensorFlow ending at
// 25.02, and the pre-2022 anchors.
func TestFrameworkCoverage(t *testing.T) {
	has := func(name, rel string) bool { _, ok := LookupFramework(name, rel); return ok }
	month := func(yy, mm int) string { return fmt.Sprintf("%02d.%02d", yy, mm) }
	for yy := 22; yy <= 25; yy++ {
		for mm := 1; mm <= 12; mm++ {
			rel := month(yy, mm)
			if rel <= "25.02" && !has("tensorflow", rel) {
				t.Errorf("tensorflow %s missing", rel)
			}
			if rel > "25.02" && has("tensorflow", rel) {
				t.Errorf("tensorflow %s present, but NGC TensorFlow ended with 25.02", rel)
			}
			if rel == "25.07" { // not confirmed to exist; see README
				continue
			}
			if !has("pytorch", rel) {
				t.Errorf("pytorch %s missing", rel)
			}
		}
	}
	for _, rel := range []string{"17.12", "18.07", "18.12", "19.03", "19.12", "20.06", "20.10", "21.10"} {
		if !has("tensorflow", rel) {
			t.Errorf("tensorflow %s missing", rel)
		}
	}
	for _, rel := range []string{"19.03", "20.02", "20.06"} {
		if !has("pytorch", rel) {
			t.Errorf("pytorch %s missing", rel)
		}
	}
}

// TestCUDADriverRule checks that rows follow the documented rule: the same
// CUDA version always carries the same minimum driver, except where a
// release's notes give a different figure (listed here).
func TestCUDADriverRule(t *testing.T) {
	exceptions := map[string]bool{
		"tensorflow 19.07": true, // notes: 418.67
		"tensorflow 19.12": true, // notes: 440.30
		"tensorflow 20.03": true, // notes: 440.33.01
		"pytorch 20.02":    true, // notes: 440.33.01
		"pytorch 22.06":    true, // CUDA 11.7 U1 preview: R515 GA figure
		"pytorch 22.07":    true,
		"tensorflow 22.06": true,
		"tensorflow 22.07": true,
	}
	byCUDA := map[string]string{}
	for _, name := range []string{"pytorch", "tensorflow"} {
		for _, f := range Frameworks(name) {
			if exceptions[name+" "+f.Release] {
				continue
			}
			if prev, ok := byCUDA[f.CUDA]; ok && prev != f.MinDriver.String() {
				t.Errorf("%s %s: CUDA %s -> %s, elsewhere %s", name, f.Release, f.CUDA, f.MinDriver, prev)
			}
			byCUDA[f.CUDA] = f.MinDriver.String()
		}
	}
	// Spot-check the toolkit table the derivation uses.
	for cuda, drv := range map[string]string{
		"9.0.176": "384.81", "11.8.0": "520.61.05", "12.1.0": "530.30.02", "12.4.0": "550.54.14",
		"12.5.0": "555.42.02", "12.6.2": "560.35.03", "12.9.1": "575.57.08", "13.0.0": "580.65.06",
	} {
		if got := byCUDA[cuda]; got != drv {
			t.Errorf("CUDA %s -> %q, want %s", cuda, got, drv)
		}
	}
}

func TestParseFrameworksErrors(t *testing.T) {
	const header = "framework,release,cuda,min_driver,compat_branches,confidence,source,note\n"
	const src = "https://docs.nvidia.com/x.html"
	tests := []struct {
		name, data, want string
	}{
		{"empty", "", "no header"},
		{"comments only", "# nothing\n", "no header"},
		{"no rows", header, "no data rows"},
		{"bad header", "framework,release\npytorch,24.10\n", "header"},
		{"field count", header + "pytorch,24.10,12.6.2\n", "wrong number of fields"},
		{"framework", header + "mxnet,24.10,12.6.2,560.35.03,,derived," + src + ",\n", "unknown framework"},
		{"release", header + "pytorch,24.13,12.6.2,560.35.03,,derived," + src + ",\n", "not YY.MM"},
		{"release tag", header + "pytorch,24.10-py3,12.6.2,560.35.03,,derived," + src + ",\n", "not YY.MM"},
		{"cuda", header + "pytorch,24.10,twelve,560.35.03,,derived," + src + ",\n", "cuda"},
		{"driver", header + "pytorch,24.10,12.6.2,560.x,,derived," + src + ",\n", "min_driver"},
		{"compat plus", header + "pytorch,24.10,12.6.2,560.35.03,535.86,derived," + src + ",\n", "must end in '+'"},
		{"compat value", header + "pytorch,24.10,12.6.2,560.35.03,abc+,derived," + src + ",\n", "compat entry"},
		{"compat newer", header + "pytorch,24.10,12.6.2,560.35.03,560.28+,derived," + src + ",\n", "not older"},
		{"compat twice", header + "pytorch,24.10,12.6.2,560.35.03,535.86+;535.104+,derived," + src + ",\n", "twice"},
		{"confidence", header + "pytorch,24.10,12.6.2,560.35.03,,guess," + src + ",\n", "confidence"},
		{"no source", header + "pytorch,24.10,12.6.2,560.35.03,,derived,,\n", "source"},
		{"http source", header + "pytorch,24.10,12.6.2,560.35.03,,derived,http://x,\n", "source"},
		{"duplicate", header + "pytorch,24.10,12.6.2,560.35.03,,derived," + src + ",\npytorch,24.10,12.6.2,560.35.03,,derived," + src + ",\n", "duplicate"},
	}
	for _, tt := range tests {
		_, err := parseFrameworks(strings.NewReader(tt.data))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want containing %q", tt.name, err, tt.want)
		}
	}
	good := "# comment\n" + header + "# another\n\npytorch,24.10,12.6.2,560.35.03,\"535.86+;470.57+\",derived," + src + ",\"a, quoted note\"\n"
	m, err := parseFrameworks(strings.NewReader(good))
	if err != nil {
		t.Fatalf("good data: %v", err)
	}
	f := m["pytorch"][0]
	if len(f.CompatBranches) != 2 || f.CompatBranches[0].String() != "470.57" || !f.Derived || f.Note != "a, quoted note" {
		t.Errorf("parsed %+v", f)
	}
}

func TestParseGPUsErrors(t *testing.T) {
	const header = "model,architecture,compute_capability,open_modules,proprietary_modules,last_branch,aliases,sources\n"
	const src = "https://developer.nvidia.com/cuda-gpus"
	tests := []struct {
		name, data, want string
	}{
		{"bad header", "model,arch\nT4,Turing\n", "header"},
		{"cc", header + "T4,Turing,7,yes,yes,0,," + src + "\n", "compute capability"},
		{"bool", header + "T4,Turing,7.5,true,yes,0,," + src + "\n", "open_modules"},
		{"no module", header + "T4,Turing,7.5,no,no,0,," + src + "\n", "no kernel module"},
		{"branch", header + "T4,Turing,7.5,yes,yes,x,," + src + "\n", "last_branch"},
		{"source", header + "T4,Turing,7.5,yes,yes,0,,ftp://x\n", "sources"},
		{"model", header + ",Turing,7.5,yes,yes,0,," + src + "\n", "required"},
		{"alias clash", header + "T4,Turing,7.5,yes,yes,0,," + src + "\nT4G,Turing,7.5,yes,yes,0,Tesla T4," + src + "\n", "already belongs"},
	}
	for _, tt := range tests {
		_, _, err := parseGPUs(strings.NewReader(tt.data))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want containing %q", tt.name, err, tt.want)
		}
	}
}

func TestParseInstancesErrors(t *testing.T) {
	const header = "instance_type,gpu_model,gpu_count,vendor,source,note\n"
	const src = "https://aws.amazon.com/ec2/instance-types/p3/"
	tests := []struct {
		name, data, want string
	}{
		{"type", header + "p3,V100,1,nvidia," + src + ",\n", "family.size"},
		{"count", header + "p3.2xlarge,V100,0,nvidia," + src + ",\n", "gpu_count"},
		{"vendor", header + "p3.2xlarge,V100,1,intel," + src + ",\n", "vendor"},
		{"model", header + "p3.2xlarge,,1,nvidia," + src + ",\n", "gpu_model"},
		{"source", header + "p3.2xlarge,V100,1,nvidia,,\n", "source"},
		{"duplicate", header + "p3.2xlarge,V100,1,nvidia," + src + ",\np3.2xlarge,V100,1,nvidia," + src + ",\n", "duplicate"},
		{"mixed family", header + "p3.2xlarge,V100,1,nvidia," + src + ",\np3.8xlarge,A100,4,nvidia," + src + ",\n", "mixes"},
	}
	for _, tt := range tests {
		_, _, err := parseInstances(strings.NewReader(tt.data))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want containing %q", tt.name, err, tt.want)
		}
	}
}

// TestLoadRejectsUnknownInstanceGPU covers the cross-table check: an NVIDIA
// instance must name a GPU that gpus.csv knows.
func TestLoadRejectsUnknownInstanceGPU(t *testing.T) {
	files := map[string]string{}
	for _, n := range []string{frameworksFile, gpusFile, instancesFile} {
		b, err := dataFS.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		files[n] = string(b)
	}
	files[instancesFile] += "p9.48xlarge,Z900,8,nvidia,https://aws.amazon.com/ec2/,\n"
	_, err := load(func(n string) (io.Reader, error) { return strings.NewReader(files[n]), nil })
	if err == nil || !strings.Contains(err.Error(), "Z900") {
		t.Errorf("err = %v, want one naming Z900", err)
	}
}
