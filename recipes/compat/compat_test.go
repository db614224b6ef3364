package compat

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNGCTag(t *testing.T) {
	tests := []struct {
		tag  string
		want string
		ok   bool
	}{
		{"24.10-py3", "24.10", true},
		{"24.10-tf2-py3", "24.10", true},
		{"22.01-tf1-py3", "22.01", true},
		{"17.12", "17.12", true},
		{"24.10", "24.10", true},
		{"19.02-py2", "19.02", true},
		{"25.06-py3-igpu", "25.06", true},
		{" 24.10-PY3 ", "24.10", true},
		{"nvcr.io/nvidia/pytorch:24.10-py3", "24.10", true},
		{"24.10-py3@sha256:0123abcd", "24.10", true},
		{"latest", "", false},
		{"", "", false},
		{"24.13-py3", "", false}, // month 13
		{"24.00-py3", "", false}, // month 00
		{"24.1-py3", "", false},  // NGC months are two digits
		{"2024.10-py3", "", false},
		{"16.12", "", false}, // before NGC
		{"24.10py3", "", false},
		{"24.10-", "", false},
		{"v24.10-py3", "", false},
		{"24.10.1", "", false},
		{"nvcr.io:443/nvidia/pytorch", "", false},
	}
	for _, tt := range tests {
		got, ok := ParseNGCTag(tt.tag)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseNGCTag(%q) = %q, %v; want %q, %v", tt.tag, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseDriverVersion(t *testing.T) {
	tests := []struct {
		in   string
		want DriverVersion
		str  string
	}{
		{"560.35.03", DriverVersion{560, 35, 3}, "560.35.03"},
		{"535.104.05", DriverVersion{535, 104, 5}, "535.104.05"},
		{"384.81", DriverVersion{384, 81, 0}, "384.81"},
		{"570.26", DriverVersion{570, 26, 0}, "570.26"},
		{"535", DriverVersion{535, 0, 0}, "535"},
		{"R535", DriverVersion{535, 0, 0}, "535"},
		{" 470.57.02 ", DriverVersion{470, 57, 2}, "470.57.02"},
	}
	for _, tt := range tests {
		got, err := ParseDriverVersion(tt.in)
		if err != nil {
			t.Errorf("ParseDriverVersion(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseDriverVersion(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if got.String() != tt.str {
			t.Errorf("ParseDriverVersion(%q).String() = %q, want %q", tt.in, got.String(), tt.str)
		}
		if got.Branch() != tt.want.Major {
			t.Errorf("ParseDriverVersion(%q).Branch() = %d", tt.in, got.Branch())
		}
	}
	for _, bad := range []string{"", "abc", "560.", ".35", "560.35.03.1", "560.-1", "560.x", "0", "0.1", "560 35", "+560"} {
		if v, err := ParseDriverVersion(bad); err == nil {
			t.Errorf("ParseDriverVersion(%q) = %v, want error", bad, v)
		}
	}
}

func TestDriverVersionCompare(t *testing.T) {
	mk := func(s string) DriverVersion {
		v, err := ParseDriverVersion(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		a, b string
		want int
	}{
		{"560.35.03", "560.35.03", 0},
		{"560.28.03", "560.35.03", -1},
		{"560.35.05", "560.35.03", 1},
		{"535.104.05", "535.86.10", 1},
		{"550", "545.23.08", 1},
		{"384.81", "384.111", -1},
	}
	for _, tt := range tests {
		if got := mk(tt.a).Compare(mk(tt.b)); got != tt.want {
			t.Errorf("%s.Compare(%s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestPyTorch2410(t *testing.T) {
	f, ok := LookupFramework("pytorch", "24.10-py3")
	if !ok {
		t.Fatal("pytorch 24.10-py3 not found")
	}
	if f.Name != "pytorch" || f.Release != "24.10" {
		t.Errorf("got %s %s", f.Name, f.Release)
	}
	if !strings.HasPrefix(f.CUDA, "12.6.") {
		t.Errorf("CUDA = %q, want 12.6.x", f.CUDA)
	}
	if got := f.MinDriver.String(); got != "560.35.03" {
		t.Errorf("MinDriver = %s, want 560.35.03", got)
	}
	if f.MinDriver.Branch() != 560 {
		t.Errorf("MinDriver.Branch() = %d", f.MinDriver.Branch())
	}
	checkBranch := func(branch int, wantOK, wantCompat bool) {
		t.Helper()
		ok, via := f.SupportsBranch(branch)
		if ok != wantOK || via != wantCompat {
			t.Errorf("SupportsBranch(%d) = (%v, %v), want (%v, %v)", branch, ok, via, wantOK, wantCompat)
		}
	}
	checkBranch(535, true, true)
	checkBranch(550, true, true)
	checkBranch(470, true, true)
	checkBranch(560, true, false)
	checkBranch(570, true, false)
	checkBranch(580, true, false)
	checkBranch(555, false, false) // not a forward-compatible branch
	checkBranch(520, false, false)
	checkBranch(450, false, false)
	checkBranch(0, false, false)
	checkBranch(-1, false, false)

	// The same release through other spellings of the name and tag.
	for _, name := range []string{"PyTorch", "nvcr.io/nvidia/pytorch", " pytorch "} {
		for _, tag := range []string{"24.10", "24.10-py3", "nvcr.io/nvidia/pytorch:24.10-py3"} {
			g, ok := LookupFramework(name, tag)
			if !ok || g.Release != "24.10" {
				t.Errorf("LookupFramework(%q, %q) = %v, %v", name, tag, g.Release, ok)
			}
		}
	}
}

func TestSupportsDriver(t *testing.T) {
	f, ok := LookupFramework("pytorch", "24.10-py3")
	if !ok {
		t.Fatal("pytorch 24.10 not found")
	}
	tests := []struct {
		v          string
		ok, compat bool
	}{
		{"560.35.03", true, false},
		{"560.28.03", false, false}, // R560 but older than the minimum
		{"570.86.15", true, false},
		{"535.86.10", true, true},
		{"535.54.03", false, false}, // R535 older than 535.86
		{"550.54.15", true, true},
		{"470.57.02", true, true},
		{"525.60.13", false, false}, // older than 525.85
		{"555.42.06", false, false},
	}
	for _, tt := range tests {
		v, err := ParseDriverVersion(tt.v)
		if err != nil {
			t.Fatal(err)
		}
		ok, via := f.SupportsDriver(v)
		if ok != tt.ok || via != tt.compat {
			t.Errorf("SupportsDriver(%s) = (%v, %v), want (%v, %v)", tt.v, ok, via, tt.ok, tt.compat)
		}
	}
	if ok, _ := f.SupportsDriver(DriverVersion{}); ok {
		t.Error("SupportsDriver(zero) = true")
	}
}

func TestTensorFlow1712(t *testing.T) {
	f, ok := LookupFramework("tensorflow", "17.12")
	if !ok {
		t.Fatal("tensorflow 17.12 not found")
	}
	if !strings.HasPrefix(f.CUDA, "9.0") {
		t.Errorf("CUDA = %q, want 9.0.x", f.CUDA)
	}
	if got := f.MinDriver.String(); got != "384.81" {
		t.Errorf("MinDriver = %s, want 384.81", got)
	}
	if ok, _ := f.SupportsBranch(375); ok {
		t.Error("SupportsBranch(375) = true, want false")
	}
	if ok, via := f.SupportsBranch(384); !ok || via {
		t.Errorf("SupportsBranch(384) = (%v, %v), want (true, false)", ok, via)
	}
}

func TestLookupFrameworkMisses(t *testing.T) {
	for _, c := range [][2]string{
		{"pytorch", "latest"},
		{"pytorch", "24.13-py3"},
		{"pytorch", "16.01-py3"},
		{"pytorch", "99.01-py3"},        // well-formed, unknown
		{"tensorflow", "25.03-tf2-py3"}, // TensorFlow NGC ended with 25.02
		{"mxnet", "24.10-py3"},
		{"", "24.10"},
	} {
		if f, ok := LookupFramework(c[0], c[1]); ok {
			t.Errorf("LookupFramework(%q, %q) = %s %s, want not found", c[0], c[1], f.Name, f.Release)
		}
	}
}

func TestTensorFlowVariants(t *testing.T) {
	for _, tag := range []string{"24.10-tf2-py3", "22.01-tf1-py3", "25.02-tf2-py3", "19.02-py3"} {
		if _, ok := LookupFramework("tensorflow", tag); !ok {
			t.Errorf("tensorflow %s not found", tag)
		}
	}
}

func TestFrameworksReturnsCopies(t *testing.T) {
	list := Frameworks("pytorch")
	if len(list) == 0 {
		t.Fatal("no pytorch releases")
	}
	list[0].CompatBranches = append(list[0].CompatBranches[:0], DriverVersion{1, 2, 3})
	list[0].Release = "mutated"
	again := Frameworks("pytorch")
	if again[0].Release == "mutated" {
		t.Error("Frameworks shares its slice with the caller")
	}
	if len(again[0].CompatBranches) > 0 && again[0].CompatBranches[0] == (DriverVersion{1, 2, 3}) {
		t.Error("Frameworks shares CompatBranches with the caller")
	}
	if Frameworks("caffe") != nil {
		t.Error("Frameworks(unknown) != nil")
	}
}

func TestLookupGPU(t *testing.T) {
	tests := []struct {
		name, model, arch, cc string
		open, proprietary     bool
	}{
		{"Tesla V100-SXM2-16GB", "V100", "Volta", "7.0", false, true},
		{"Tesla V100S-PCIE-32GB", "V100", "Volta", "7.0", false, true},
		{"V100", "V100", "Volta", "7.0", false, true},
		{"NVIDIA H200", "H200", "Hopper", "9.0", true, true},
		{"H100 80GB HBM3", "H100", "Hopper", "9.0", true, true},
		{"NVIDIA H100 80GB HBM3", "H100", "Hopper", "9.0", true, true},
		{"NVIDIA H100 PCIe", "H100", "Hopper", "9.0", true, true},
		{"NVIDIA H100 NVL", "H100", "Hopper", "9.0", true, true},
		{"nvidia-h100", "H100", "Hopper", "9.0", true, true},
		{"NVIDIA A100-SXM4-40GB", "A100", "Ampere", "8.0", true, true},
		{"NVIDIA A100 80GB PCIe", "A100", "Ampere", "8.0", true, true},
		{"NVIDIA A100-SXM4-40GB MIG 1g.5gb", "A100", "Ampere", "8.0", true, true},
		{"NVIDIA A10G", "A10G", "Ampere", "8.6", true, true},
		{"a10", "A10", "Ampere", "8.6", true, true},
		{"NVIDIA A30", "A30", "Ampere", "8.0", true, true},
		{"NVIDIA A40", "A40", "Ampere", "8.6", true, true},
		{"Tesla T4", "T4", "Turing", "7.5", true, true},
		{"NVIDIA T4G", "T4G", "Turing", "7.5", true, true},
		{"Tesla K80", "K80", "Kepler", "3.7", false, true},
		{"Tesla M60", "M60", "Maxwell", "5.2", false, true},
		{"Tesla P4", "P4", "Pascal", "6.1", false, true},
		{"Tesla P40", "P40", "Pascal", "6.1", false, true},
		{"Tesla P100-PCIE-16GB", "P100", "Pascal", "6.0", false, true},
		{"NVIDIA L4", "L4", "Ada Lovelace", "8.9", true, true},
		{"NVIDIA L40", "L40", "Ada Lovelace", "8.9", true, true},
		{"NVIDIA L40S", "L40S", "Ada Lovelace", "8.9", true, true},
		{"NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada", "Ada Lovelace", "8.9", true, true},
		{"NVIDIA GH200 480GB", "GH200", "Hopper", "9.0", true, false},
		{"NVIDIA B200", "B200", "Blackwell", "10.0", true, false},
		{"NVIDIA GB200", "GB200", "Blackwell", "10.0", true, false},
		{"GB200 NVL72", "GB200", "Blackwell", "10.0", true, false},
		{"NVIDIA B300 SXM6 AC", "B300", "Blackwell", "10.3", true, false}, // name on p6-b300 (alias)
		{"NVIDIA B300 SXM6 XY", "", "", "", false, false},                 // unknown token: not guessed
		{"B300", "B300", "Blackwell", "10.3", true, false},
		{"NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX PRO 6000 Blackwell", "Blackwell", "12.0", true, false},
		// Not known, and must not be confused with known models.
		{"Quadro RTX 6000", "", "", "", false, false},
		{"NVIDIA GeForce RTX 4090", "", "", "", false, false},
		{"A1000", "", "", "", false, false},
		{"H10", "", "", "", false, false},
		{"NVIDIA", "", "", "", false, false},
		{"", "", "", "", false, false},
	}
	for _, tt := range tests {
		g, ok := LookupGPU(tt.name)
		if tt.model == "" {
			if ok {
				t.Errorf("LookupGPU(%q) = %s, want not found", tt.name, g.Model)
			}
			continue
		}
		want := GPU{Model: tt.model, Architecture: tt.arch, ComputeCapability: tt.cc, OpenModules: tt.open, ProprietaryModules: tt.proprietary}
		g.LastDriverBranch = 0 // checked separately
		if !ok {
			t.Errorf("LookupGPU(%q) not found", tt.name)
		} else if diff := cmp.Diff(want, g); diff != "" {
			t.Errorf("LookupGPU(%q) mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestGPUOpenModulesByArchitecture(t *testing.T) {
	preTuring := map[string]bool{"Kepler": true, "Maxwell": true, "Pascal": true, "Volta": true}
	for _, g := range tables().gpus {
		if g.OpenModules == preTuring[g.Architecture] {
			t.Errorf("%s (%s): OpenModules = %v", g.Model, g.Architecture, g.OpenModules)
		}
		var major, minor int
		if _, err := fmt.Sscanf(g.ComputeCapability, "%d.%d", &major, &minor); err != nil {
			t.Fatalf("%s: %v", g.Model, err)
		}
		if turingOrLater := major*10+minor >= 75; turingOrLater == preTuring[g.Architecture] {
			t.Errorf("%s: compute capability %s disagrees with architecture %s", g.Model, g.ComputeCapability, g.Architecture)
		}
		if g.Architecture == "Blackwell" && g.ProprietaryModules {
			t.Errorf("%s: Blackwell needs the open kernel modules", g.Model)
		}
	}
}

func TestGPUDriverBranches(t *testing.T) {
	tests := []struct {
		model  string
		branch int
		want   bool
	}{
		{"K80", 470, true},
		{"K80", 535, false},
		{"V100", 580, true},
		{"V100", 590, false},
		{"P100", 535, true},
		{"H100", 595, true},
		{"T4", 0, false},
	}
	for _, tt := range tests {
		g, ok := LookupGPU(tt.model)
		if !ok {
			t.Fatalf("%s not found", tt.model)
		}
		if got := g.SupportsDriverBranch(tt.branch); got != tt.want {
			t.Errorf("%s.SupportsDriverBranch(%d) = %v, want %v", tt.model, tt.branch, got, tt.want)
		}
	}
}

func TestLookupInstanceType(t *testing.T) {
	tests := []struct {
		typ, model string
		count      int
		vendor     string
		ok         bool
	}{
		{"p3.2xlarge", "V100", 1, "nvidia", true},
		{"p3.8xlarge", "V100", 4, "nvidia", true},
		{"p3.16xlarge", "V100", 8, "nvidia", true},
		{"P3.8XLARGE", "V100", 4, "nvidia", true},
		{" p3dn.24xlarge ", "V100", 8, "nvidia", true},
		{"p2.16xlarge", "K80", 16, "nvidia", true},
		{"p4d.24xlarge", "A100", 8, "nvidia", true},
		{"p4de.24xlarge", "A100", 8, "nvidia", true},
		{"p5.48xlarge", "H100", 8, "nvidia", true},
		{"p5.4xlarge", "H100", 1, "nvidia", true},
		{"p5e.48xlarge", "H200", 8, "nvidia", true},
		{"p5en.48xlarge", "H200", 8, "nvidia", true},
		{"p6-b200.48xlarge", "B200", 8, "nvidia", true},
		{"p6e-gb200.36xlarge", "GB200", 4, "nvidia", true},
		{"g3s.xlarge", "M60", 1, "nvidia", true},
		{"g3.16xlarge", "M60", 4, "nvidia", true},
		{"g4dn.xlarge", "T4", 1, "nvidia", true},
		{"g4dn.12xlarge", "T4", 4, "nvidia", true},
		{"g4dn.metal", "T4", 8, "nvidia", true},
		{"g4ad.xlarge", "Radeon Pro V520", 1, "amd", true},
		{"g4ad.16xlarge", "Radeon Pro V520", 4, "amd", true},
		{"g5.48xlarge", "A10G", 8, "nvidia", true},
		{"g5g.16xlarge", "T4G", 2, "nvidia", true},
		{"g6.12xlarge", "L4", 4, "nvidia", true},
		{"gr6.4xlarge", "L4", 1, "nvidia", true},
		{"g6e.xlarge", "L40S", 1, "nvidia", true},
		{"g6e.48xlarge", "L40S", 8, "nvidia", true},
		// Unknown size in a known family: model known, count 0.
		{"p5.96xlarge", "H100", 0, "nvidia", true},
		{"g4ad.metal", "Radeon Pro V520", 0, "amd", true},
		{"g6e", "L40S", 0, "nvidia", true},
		// Not accelerated, or unknown.
		{"m5.large", "", 0, "", false},
		{"c7g.xlarge", "", 0, "", false},
		{"p9.48xlarge", "", 0, "", false},
		{"", "", 0, "", false},
		{".48xlarge", "", 0, "", false},
	}
	for _, tt := range tests {
		model, count, vendor, ok := LookupInstanceType(tt.typ)
		if model != tt.model || count != tt.count || vendor != tt.vendor || ok != tt.ok {
			t.Errorf("LookupInstanceType(%q) = (%q, %d, %q, %v), want (%q, %d, %q, %v)",
				tt.typ, model, count, vendor, ok, tt.model, tt.count, tt.vendor, tt.ok)
		}
	}
}

func TestInstanceGPUsResolve(t *testing.T) {
	for typ := range tables().instances {
		model, _, vendor, ok := LookupInstanceType(typ)
		if !ok {
			t.Errorf("%s does not resolve", typ)
			continue
		}
		if vendor != "nvidia" {
			continue
		}
		g, ok := LookupGPU(model)
		if !ok || g.Model != model {
			t.Errorf("%s: GPU %q does not resolve to itself (got %q, %v)", typ, model, g.Model, ok)
		}
	}
}

func ExampleLookupFramework() {
	f, _ := LookupFramework("pytorch", "24.10-py3")
	ok, viaCompat := f.SupportsBranch(535)
	fmt.Println(f.CUDA, f.MinDriver, ok, viaCompat)
	// Output: 12.6.2 560.35.03 true true
}

func ExampleLookupInstanceType() {
	model, count, vendor, _ := LookupInstanceType("p3.8xlarge")
	g, _ := LookupGPU(model)
	fmt.Println(model, count, vendor, g.Architecture, g.OpenModules)
	// Output: V100 4 nvidia Volta false
}
