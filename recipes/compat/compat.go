package compat

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// OpenModulesMinBranch is the first driver branch (R515) that shipped
// NVIDIA's open GPU kernel modules.
const OpenModulesMinBranch = 515

// DriverVersion is an NVIDIA Linux driver version such as 560.35.03.
//
// Major is the driver branch (560 in R560). A zero Patch means the version
// has only two components (384.81); zero Minor and Patch mean a bare branch
// (418, as in release notes that say "418.xx"). NVIDIA never publishes
// ".00" components, so nothing is lost.
type DriverVersion struct{ Major, Minor, Patch int }

// ParseDriverVersion parses "560.35.03", "384.81" or a bare branch such as
// "535" or "R535". Components must be decimal numbers.
func ParseDriverVersion(s string) (DriverVersion, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimPrefix(strings.TrimPrefix(t, "R"), "r")
	parts := strings.Split(t, ".")
	if t == "" || len(parts) > 3 {
		return DriverVersion{}, fmt.Errorf("invalid driver version %q", s)
	}
	var n [3]int
	for i, p := range parts {
		if p == "" || len(p) > 6 || strings.TrimLeft(p, "0123456789") != "" {
			return DriverVersion{}, fmt.Errorf("invalid driver version %q", s)
		}
		v, err := strconv.Atoi(p)
		if err != nil {
			return DriverVersion{}, fmt.Errorf("invalid driver version %q", s)
		}
		n[i] = v
	}
	if n[0] == 0 {
		return DriverVersion{}, fmt.Errorf("invalid driver version %q: branch 0", s)
	}
	return DriverVersion{Major: n[0], Minor: n[1], Patch: n[2]}, nil
}

// String formats the version the way NVIDIA does: "560.35.03", "384.81",
// or "418" for a bare branch.
func (v DriverVersion) String() string {
	switch {
	case v.Minor == 0 && v.Patch == 0:
		return strconv.Itoa(v.Major)
	case v.Patch == 0:
		return fmt.Sprintf("%d.%02d", v.Major, v.Minor)
	default:
		return fmt.Sprintf("%d.%02d.%02d", v.Major, v.Minor, v.Patch)
	}
}

// Branch returns the driver branch, e.g. 560 for 560.35.03.
func (v DriverVersion) Branch() int { return v.Major }

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than w.
func (v DriverVersion) Compare(w DriverVersion) int {
	if c := cmpInt(v.Major, w.Major); c != 0 {
		return c
	}
	if c := cmpInt(v.Minor, w.Minor); c != 0 {
		return c
	}
	return cmpInt(v.Patch, w.Patch)
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Framework is one NGC framework container release.
type Framework struct {
	Name    string // "pytorch" or "tensorflow"
	Release string // "24.10"
	CUDA    string // CUDA toolkit shipped in the container, "12.6.2"
	// MinDriver is the oldest driver that runs the container on any GPU,
	// without CUDA forward compatibility.
	MinDriver DriverVersion
	// CompatBranches are the data-center driver branches that also run the
	// container through the CUDA forward-compatibility package; each entry
	// is the oldest usable release of its branch ("470.57 or later R470").
	CompatBranches []DriverVersion
	Source         string // NVIDIA release-notes page for the release
	// Derived is true when the row was filled from the CUDA toolkit's driver
	// table and the pattern of neighbouring releases rather than read from
	// this release's notes (see README.md).
	Derived bool
	Note    string
}

// SupportsBranch reports whether a driver branch (e.g. 535, meaning "the
// newest R535 release") can run the framework release, and whether only via
// data-center forward compatibility (data-center GPUs such as T4, A100, H100;
// not GeForce/workstation boards).
func (f Framework) SupportsBranch(branch int) (ok bool, viaCompat bool) {
	if branch <= 0 {
		return false, false
	}
	if branch >= f.MinDriver.Major {
		return true, false
	}
	for _, c := range f.CompatBranches {
		if c.Major == branch {
			return true, true
		}
	}
	return false, false
}

// SupportsDriver is SupportsBranch for an exact driver version: it checks
// the minor and patch numbers against MinDriver and the compat entries too.
func (f Framework) SupportsDriver(v DriverVersion) (ok bool, viaCompat bool) {
	if v.Major <= 0 {
		return false, false
	}
	if v.Compare(f.MinDriver) >= 0 {
		return true, false
	}
	for _, c := range f.CompatBranches {
		if c.Major == v.Major && v.Compare(c) >= 0 {
			return true, true
		}
	}
	return false, false
}

// ngcTagRE matches an NGC release tag: YY.MM, optionally followed by a
// variant suffix such as -py3, -tf2-py3 or -py3-igpu.
var ngcTagRE = regexp.MustCompile(`^([0-9]{2})\.([0-9]{2})(-[a-z0-9][a-z0-9._-]*)?$`)

// ParseNGCTag extracts the NGC release from a container tag:
// "24.10-py3" -> "24.10", "24.10-tf2-py3" -> "24.10", "17.12" -> "17.12".
// A full image reference ("nvcr.io/nvidia/pytorch:24.10-py3") and a digest
// suffix ("@sha256:...") are accepted too. Tags that are not releases
// ("latest"), months outside 01-12 and years before 17 (NGC began in 2017)
// are rejected.
func ParseNGCTag(tag string) (release string, ok bool) {
	t := strings.ToLower(strings.TrimSpace(tag))
	if i := strings.IndexByte(t, '@'); i >= 0 {
		t = t[:i]
	}
	if i := strings.LastIndexByte(t, ':'); i >= 0 {
		t = t[i+1:]
	}
	m := ngcTagRE.FindStringSubmatch(t)
	if m == nil {
		return "", false
	}
	yy, _ := strconv.Atoi(m[1])
	mm, _ := strconv.Atoi(m[2])
	if yy < 17 || mm < 1 || mm > 12 {
		return "", false
	}
	return m[1] + "." + m[2], true
}

// normFrameworkName maps "pytorch", "PyTorch" or "nvcr.io/nvidia/pytorch"
// to "pytorch".
func normFrameworkName(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	if i := strings.LastIndexByte(n, '/'); i >= 0 {
		n = n[i+1:]
	}
	return n
}

// LookupFramework finds the release that an NGC tag names. name is
// "pytorch" or "tensorflow" (case-insensitive; a repository path such as
// "nvcr.io/nvidia/pytorch" also works); tag is "24.10-py3", "24.10-tf2-py3",
// "17.12" or "24.10".
func LookupFramework(name, tag string) (Framework, bool) {
	rel, ok := ParseNGCTag(tag)
	if !ok {
		return Framework{}, false
	}
	list := tables().frameworks[normFrameworkName(name)]
	i, found := slices.BinarySearchFunc(list, rel, func(f Framework, r string) int {
		return strings.Compare(f.Release, r)
	})
	if !found {
		return Framework{}, false
	}
	return cloneFramework(list[i]), true
}

// Frameworks lists the known releases of a framework, oldest first. It
// returns nil for an unknown framework.
func Frameworks(name string) []Framework {
	list := tables().frameworks[normFrameworkName(name)]
	if len(list) == 0 {
		return nil
	}
	out := make([]Framework, len(list))
	for i, f := range list {
		out[i] = cloneFramework(f)
	}
	return out
}

func cloneFramework(f Framework) Framework {
	f.CompatBranches = slices.Clone(f.CompatBranches)
	return f
}

// GPU describes an NVIDIA GPU model.
type GPU struct {
	Model             string // canonical name, "V100", "H100", "RTX 6000 Ada"
	Architecture      string // "Volta", "Hopper", "Ada Lovelace" ...
	ComputeCapability string // "7.0"
	// OpenModules reports whether NVIDIA's open GPU kernel modules support
	// the GPU: Turing and later only.
	OpenModules bool
	// ProprietaryModules reports whether the proprietary kernel modules
	// support it; Grace Hopper and Blackwell need the open modules.
	ProprietaryModules bool
	// LastDriverBranch is the last driver branch that supports the GPU
	// (470 for Kepler, 580 for Maxwell, Pascal and Volta); 0 means current
	// branches still support it.
	LastDriverBranch int
}

// SupportsDriverBranch reports whether a driver branch still supports the
// GPU (see LastDriverBranch).
func (g GPU) SupportsDriverBranch(branch int) bool {
	return branch > 0 && (g.LastDriverBranch == 0 || branch <= g.LastDriverBranch)
}

// LookupGPU finds a GPU model by name, case-insensitively. It accepts the
// canonical model ("V100"), the names nvidia-smi and cloud providers print
// ("Tesla V100-SXM2-16GB", "NVIDIA H200", "H100 80GB HBM3",
// "NVIDIA A100-SXM4-40GB MIG 1g.5gb") and the aliases in data/gpus.csv:
// "NVIDIA"/"Tesla" prefixes and memory, form-factor and MIG tokens are
// ignored. It never guesses across models: "A10" and "A100" stay distinct,
// and names it does not know ("Quadro RTX 6000") are not found.
func LookupGPU(name string) (GPU, bool) {
	t := tables()
	if i, ok := lookupGPUIndex(t.gpuIndex, name); ok {
		return t.gpus[i], true
	}
	return GPU{}, false
}

func lookupGPUIndex(index map[string]int, name string) (int, bool) {
	for _, key := range gpuKeys(name) {
		if i, ok := index[key]; ok {
			return i, true
		}
	}
	return 0, false
}

var (
	gpuNoiseRE = regexp.MustCompile(`^(\d+(gb|g|tb)|\d+g\.\d+gb|sxm\d*|hbm\d*e?|nvl\d*|pcie|mig|gddr\d*x?|generation|edition|server|workstation|superchip|tensor|core|gpu)$`)
	gpuSplitRE = regexp.MustCompile(`[\s\-_/(),]+`)
)

// gpuKeys returns the lookup keys for a GPU name: the whole normalised name
// first, then the name with noise tokens removed.
func gpuKeys(name string) []string {
	full := strings.Join(trimGPUPrefix(strings.Fields(strings.ToLower(name))), " ")
	var toks []string
	for _, tok := range trimGPUPrefix(gpuSplitRE.Split(strings.ToLower(name), -1)) {
		if tok != "" && !gpuNoiseRE.MatchString(tok) {
			toks = append(toks, tok)
		}
	}
	stripped := strings.Join(toks, " ")
	switch {
	case full == "" && stripped == "":
		return nil
	case full == stripped || stripped == "":
		return []string{full}
	}
	return []string{full, stripped}
}

func trimGPUPrefix(toks []string) []string {
	for len(toks) > 0 && (toks[0] == "" || toks[0] == "nvidia" || toks[0] == "tesla") {
		toks = toks[1:]
	}
	return toks
}

// LookupInstanceType maps an AWS EC2 instance type to its accelerator model,
// the number of accelerators, and the vendor ("nvidia" or "amd"):
// "p3.8xlarge" -> ("V100", 4, "nvidia", true). For a size this package does
// not list, in a family it knows ("p5.96xlarge"), the model and vendor are
// returned with count 0. ok is false for instance types without a known
// accelerator.
func LookupInstanceType(t string) (model string, count int, vendor string, ok bool) {
	tt := strings.ToLower(strings.TrimSpace(t))
	tab := tables()
	if it, found := tab.instances[tt]; found {
		return it.model, it.count, it.vendor, true
	}
	family, _, _ := strings.Cut(tt, ".")
	if fam, found := tab.families[family]; found {
		return fam.model, 0, fam.vendor, true
	}
	return "", 0, "", false
}
