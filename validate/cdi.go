package validate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/nvidia-container-toolkit/pkg/nvcdi"
	"github.com/NVIDIA/nvidia-container-toolkit/pkg/nvcdi/transform"
	"go.yaml.in/yaml/v3"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	"tags.cncf.io/container-device-interface/specs-go"
)

// Defaults for the CDI kind gpuforge generates and asks BuildKit for: "nvidia.com/gpu".
const (
	DefaultCDIVendor = "nvidia.com"
	DefaultCDIClass  = "gpu"
	// CDIAllDevice is the name of the device that stands for every GPU of the spec.
	CDIAllDevice = "all"
)

// libDirs are the directories below a driver root where a driver's libraries are looked for,
// in this order. They are the directories nvcdi's library locator searches (Debian/Ubuntu
// multiarch, RHEL lib64, Debian's packaged driver under nvidia/current) plus plain lib and
// lib64 as used by /usr/local/nvidia style installs.
var libDirs = []string{
	"/usr/lib/x86_64-linux-gnu",
	"/usr/lib64",
	"/usr/lib/aarch64-linux-gnu",
	"/usr/lib/x86_64-linux-gnu/nvidia/current",
	"/usr/lib/aarch64-linux-gnu/nvidia/current",
	"/lib/x86_64-linux-gnu",
	"/lib64",
	"/lib/aarch64-linux-gnu",
	"/lib/x86_64-linux-gnu/nvidia/current",
	"/lib/aarch64-linux-gnu/nvidia/current",
	"/usr/lib",
	"/lib",
}

// driverRootCandidates are the driver roots FindDriverRoot tries, in order.
var driverRootCandidates = []string{
	"/",                           // the driver installed on the host (distro or .run packages)
	"/usr/local/nvidia",           // NGC / cloud images; the GPU host gpuforge validates on
	"/run/nvidia/driver",          // the NVIDIA GPU Operator's driver container
	"/home/kubernetes/bin/nvidia", // GKE's driver installer
}

// CDIOptions configures GenerateCDISpec.
type CDIOptions struct {
	// DriverRoot is the directory the driver's files (libraries, nvidia-smi) are under: "/" for
	// a driver installed on the host, "/usr/local/nvidia" on the GPU host. "" means find it with
	// FindDriverRoot.
	DriverRoot string
	// DevRoot is the directory whose dev/ holds the device nodes. "" means DriverRoot when
	// DriverRoot/dev/nvidiactl exists (a driver container), else "/".
	DevRoot string
	// NVIDIACDIHookPath is the host path of nvidia-cdi-hook, which the spec's hooks run to
	// create the libraries' symlinks and update the ld cache in the container. "" means look for
	// it (see findCDIHook); GenerateCDISpec fails when it is nowhere, since a spec whose hooks
	// cannot run makes every container using it fail to start.
	NVIDIACDIHookPath string
	// Vendor and Class make the spec's kind, Vendor/Class; "" means "nvidia.com" and "gpu".
	Vendor, Class string
	// Logf, when set, receives nvcdi's warnings and errors. nvcdi warns about every optional
	// file it does not find (graphics libraries, Vulkan ICDs, MPS binaries: about 50 lines on
	// the H200 host), so show them as debug output. nil drops them.
	Logf func(format string, args ...any)

	// nvmllib replaces the real NVML, for tests with go-nvml's simulated hardware.
	nvmllib nvml.Interface
}

// FindDriverRoot returns the driver root of this machine: the first of "/",
// "/usr/local/nvidia", "/run/nvidia/driver" and "/home/kubernetes/bin/nvidia" that has
// libnvidia-ml.so.1 in one of the library directories below it, tried in the order
// /usr/lib/x86_64-linux-gnu, /usr/lib64, /usr/lib/aarch64-linux-gnu,
// /usr/lib/{x86_64,aarch64}-linux-gnu/nvidia/current, /lib/x86_64-linux-gnu, /lib64,
// /lib/aarch64-linux-gnu, /lib/{x86_64,aarch64}-linux-gnu/nvidia/current, /usr/lib, /lib.
func FindDriverRoot() (string, error) {
	return findDriverRootIn("/")
}

// findDriverRootIn is FindDriverRoot for a machine whose file system is at sysroot; the
// returned root includes sysroot.
func findDriverRootIn(sysroot string) (string, error) {
	var looked []string
	for _, cand := range driverRootCandidates {
		root := filepath.Join(sysroot, cand)
		if hasLib(root, "libnvidia-ml.so.1") != "" {
			return root, nil
		}
		looked = append(looked, root)
	}
	return "", fmt.Errorf("no NVIDIA driver found: libnvidia-ml.so.1 is not in the library directories (%s) of any of %s; is the driver installed? Set the driver root explicitly if it is elsewhere",
		strings.Join(libDirs, ", "), strings.Join(looked, ", "))
}

// hasLib returns the path of lib in one of root's library directories, or "".
func hasLib(root, lib string) string {
	for _, d := range libDirs {
		p := filepath.Join(root, d, lib)
		if _, err := os.Lstat(p); err == nil {
			return p
		}
	}
	return ""
}

// findCDIHook returns the path of nvidia-cdi-hook: from PATH, then /usr/bin, /usr/local/bin,
// then driverRoot's bin, usr/bin and usr/local/bin. It returns "" when there is none.
func findCDIHook(driverRoot string) string {
	if p, err := exec.LookPath("nvidia-cdi-hook"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	cands := []string{"/usr/bin/nvidia-cdi-hook", "/usr/local/bin/nvidia-cdi-hook"}
	if driverRoot != "" && driverRoot != "/" {
		for _, d := range []string{"bin", "usr/bin", "usr/local/bin"} {
			cands = append(cands, filepath.Join(driverRoot, d, "nvidia-cdi-hook"))
		}
	}
	for _, c := range cands {
		if isExecutable(c) {
			return c
		}
	}
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// GenerateCDISpec generates the CDI spec for this machine's GPUs with the NVIDIA Container
// Toolkit's nvcdi library, in NVML mode, as `nvidia-ctk cdi generate --device-name-strategy
// index --device-name-strategy uuid` would: one device per GPU (and MIG device) named by its
// index ("0", "1", "0:1") and one named by its UUID ("GPU-…", "MIG-…"), both with the same
// edits, plus "all"; the driver's libraries, nvidia-smi and the control device nodes are
// common edits. The spec's version is the lowest that can express it.
//
// NVML must work: without a driver (or with a driver root that has none) it returns an error
// saying so. The spec is checked with ValidateCDISpec before it is returned.
func GenerateCDISpec(opts CDIOptions) (*specs.Spec, error) {
	vendor, class := opts.Vendor, opts.Class
	if vendor == "" {
		vendor = DefaultCDIVendor
	}
	if class == "" {
		class = DefaultCDIClass
	}
	if err := parser.ValidateVendorName(vendor); err != nil {
		return nil, fmt.Errorf("CDI vendor %q: %w", vendor, err)
	}
	if err := parser.ValidateClassName(class); err != nil {
		return nil, fmt.Errorf("CDI class %q: %w", class, err)
	}

	driverRoot := opts.DriverRoot
	if driverRoot == "" {
		r, err := FindDriverRoot()
		if err != nil {
			return nil, err
		}
		driverRoot = r
	}
	driverRoot = filepath.Clean(driverRoot)
	if fi, err := os.Stat(driverRoot); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("driver root %s is not a directory", driverRoot)
	}
	devRoot := opts.DevRoot
	if devRoot == "" {
		devRoot = "/"
		if _, err := os.Stat(filepath.Join(driverRoot, "dev", "nvidiactl")); err == nil {
			devRoot = driverRoot
		}
	}
	devRoot = filepath.Clean(devRoot)

	hook := opts.NVIDIACDIHookPath
	if hook == "" {
		hook = findCDIHook(driverRoot)
		if hook == "" {
			return nil, fmt.Errorf("nvidia-cdi-hook not found in PATH, /usr/bin, /usr/local/bin or under %s: the CDI spec's hooks run it to create the driver libraries' symlinks and ld cache in the container; install it (NVIDIA Container Toolkit) or set the hook path", driverRoot)
		}
	}
	if !filepath.IsAbs(hook) {
		return nil, fmt.Errorf("nvidia-cdi-hook path %q is not absolute", hook)
	}

	indexNamer, err := nvcdi.NewDeviceNamer(nvcdi.DeviceNameStrategyIndex)
	if err != nil {
		return nil, err
	}
	uuidNamer, err := nvcdi.NewDeviceNamer(nvcdi.DeviceNameStrategyUUID)
	if err != nil {
		return nil, err
	}
	log := &cdiLogger{logf: opts.Logf}
	nopts := []nvcdi.Option{
		nvcdi.WithLogger(log),
		nvcdi.WithDriverRoot(driverRoot),
		nvcdi.WithDevRoot(devRoot),
		nvcdi.WithNVIDIACDIHookPath(hook),
		nvcdi.WithMode(nvcdi.ModeNvml),
		nvcdi.WithDeviceNamers(indexNamer, uuidNamer),
		nvcdi.WithVendor(vendor),
		nvcdi.WithClass(class),
		nvcdi.WithMergedDeviceOptions(transform.WithName(CDIAllDevice), transform.WithSkipIfExists(true)),
	}
	if opts.nvmllib != nil {
		// Simulated hardware: the real nvsandboxutils would describe another machine.
		nopts = append(nopts, nvcdi.WithNvmlLib(opts.nvmllib), nvcdi.WithFeatureFlags(nvcdi.FeatureDisableNvsandboxUtils))
	}

	spec, err := generate(nopts)
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "NVML") || strings.Contains(msg, "nvml") || strings.Contains(msg, "LIBRARY_NOT_FOUND") || strings.Contains(msg, "DRIVER_NOT_LOADED") {
			return nil, fmt.Errorf("generate CDI spec (driver root %s, dev root %s): %w (is the NVIDIA driver installed and loaded, and is libnvidia-ml.so.1 under the driver root?)", driverRoot, devRoot, err)
		}
		return nil, fmt.Errorf("generate CDI spec (driver root %s, dev root %s): %w", driverRoot, devRoot, err)
	}

	gpus := 0
	for _, d := range spec.Devices {
		if d.Name != CDIAllDevice {
			gpus++
		}
	}
	if gpus == 0 {
		return nil, fmt.Errorf("generate CDI spec (driver root %s): NVML reports no GPUs", driverRoot)
	}
	v, err := specs.MinimumRequiredVersion(spec)
	if err != nil {
		return nil, fmt.Errorf("generated CDI spec: %w", err)
	}
	spec.Version = v
	if err := ValidateCDISpec(spec); err != nil {
		return nil, fmt.Errorf("generated CDI spec (driver root %s, dev root %s) is not usable: %w", driverRoot, devRoot, err)
	}
	return spec, nil
}

// generate runs nvcdi, turning a panic in it or in NVML's bindings into an error.
func generate(nopts []nvcdi.Option) (spec *specs.Spec, err error) {
	defer func() {
		if r := recover(); r != nil {
			spec, err = nil, fmt.Errorf("nvcdi panicked: %v", r)
		}
	}()
	lib, err := nvcdi.New(nopts...)
	if err != nil {
		return nil, err
	}
	s, err := lib.GetSpec(CDIAllDevice)
	if err != nil {
		return nil, err
	}
	return s.Raw(), nil
}

// cdiLogger adapts Logf to nvcdi's logger; only warnings and errors are passed on.
type cdiLogger struct{ logf func(string, ...any) }

func (l *cdiLogger) Debugf(string, ...any) {}
func (l *cdiLogger) Tracef(string, ...any) {}
func (l *cdiLogger) Infof(string, ...any)  {}
func (l *cdiLogger) Warningf(f string, a ...any) {
	if l.logf != nil {
		l.logf("nvcdi: warning: "+f, a...)
	}
}
func (l *cdiLogger) Errorf(f string, a ...any) {
	if l.logf != nil {
		l.logf("nvcdi: error: "+f, a...)
	}
}

// MarshalCDISpec encodes spec as YAML the way nvidia-ctk and the CDI library write spec
// files: a "---" document start followed by the YAML.
func MarshalCDISpec(spec *specs.Spec) ([]byte, error) {
	if spec == nil {
		return nil, errors.New("no CDI spec")
	}
	data, err := yaml.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode CDI spec: %w", err)
	}
	return append([]byte("---\n"), data...), nil
}

// ReadCDISpec reads and validates (with the CDI library's checks only, not ValidateCDISpec's
// checks of this host) a CDI spec file, YAML or JSON.
func ReadCDISpec(path string) (*specs.Spec, error) {
	s, err := cdi.ReadSpec(path, 0)
	if err != nil {
		return nil, err
	}
	return s.Spec, nil
}

// libraryValidate runs the CDI library's validation on data, the encoded spec, by reading it
// the way a CDI runtime (BuildKit's CDI cache) reads a spec file: strict YAML decoding, then
// version, kind, annotation, device name and container edit checks. path is a file holding
// data, or "" to write data to a temporary file.
func libraryValidate(data []byte, path string) error {
	if path == "" {
		dir, err := os.MkdirTemp("", "gpuforge-cdi-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "spec.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	if _, err := cdi.ReadSpec(path, 0); err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			return inner // drop ReadSpec's mention of the temporary file
		}
		return err
	}
	return nil
}

// ValidateCDISpec checks spec with the CDI library (the checks a runtime makes when it loads
// the spec file: version, kind, device names and their uniqueness, container edits) and checks
// that it can be used on this machine:
//   - the kind is vendor/class and a device named "all" exists, besides at least one GPU;
//   - every device node's host path (HostPath, or Path when that is empty: nvcdi writes
//     HostPath only for a dev root other than "/") exists;
//   - every hook's executable exists, and every bind mount's host path exists, since a
//     runtime fails to start the container otherwise.
func ValidateCDISpec(spec *specs.Spec) error {
	if spec == nil {
		return errors.New("invalid CDI spec: no spec")
	}
	vendor, class := parser.ParseQualifier(spec.Kind)
	if vendor == "" || class == "" {
		return fmt.Errorf("invalid CDI spec: kind %q is not vendor/class (like nvidia.com/gpu)", spec.Kind)
	}
	data, err := MarshalCDISpec(spec)
	if err != nil {
		return err
	}
	if err := libraryValidate(data, ""); err != nil {
		return fmt.Errorf("invalid CDI spec %s: %w", spec.Kind, err)
	}
	return hostValidate(spec)
}

// hostValidate is ValidateCDISpec's checks beyond the CDI library's.
func hostValidate(spec *specs.Spec) error {
	var errs []error
	hasAll, gpus := false, 0
	for _, d := range spec.Devices {
		if d.Name == CDIAllDevice {
			hasAll = true
		} else {
			gpus++
		}
	}
	if !hasAll {
		errs = append(errs, fmt.Errorf("no device named %q (the device for every GPU)", CDIAllDevice))
	}
	if gpus == 0 {
		errs = append(errs, errors.New("no GPU devices besides \"all\""))
	}

	seen := map[string]bool{}
	check := func(what, where, p string, wantExec bool) {
		key := what + "\x00" + p
		if seen[key] {
			return
		}
		seen[key] = true
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("%s %s (%s) does not exist on this machine", what, p, where))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s (%s): %w", what, p, where, err))
		case wantExec && (!fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0):
			errs = append(errs, fmt.Errorf("%s %s (%s) is not an executable file", what, p, where))
		}
	}
	checkEdits := func(e *specs.ContainerEdits, where string) {
		for _, n := range e.DeviceNodes {
			if n == nil {
				continue
			}
			p := n.HostPath
			if p == "" {
				p = n.Path
			}
			check("device node", where, p, false)
		}
		for _, h := range e.Hooks {
			if h != nil {
				check("hook executable", where, h.Path, true)
			}
		}
		for _, m := range e.Mounts {
			if m != nil && isBindMount(m) {
				check("mount source", where, m.HostPath, false)
			}
		}
	}
	checkEdits(&spec.ContainerEdits, "common edits")
	for _, d := range spec.Devices {
		checkEdits(&d.ContainerEdits, "device "+strconv.Quote(d.Name))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("CDI spec %s cannot be used on this machine: %w", spec.Kind, errors.Join(errs...))
}

func isBindMount(m *specs.Mount) bool {
	if m.Type == "bind" || m.Type == "rbind" {
		return true
	}
	return m.Type == "" && (slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind"))
}

// CDISpecFileName returns the file name WriteCDISpec gives spec: "<vendor>-<class>.yaml",
// like nvidia-ctk's nvidia.com-gpu.yaml.
func CDISpecFileName(spec *specs.Spec) (string, error) {
	if spec == nil {
		return "", errors.New("no CDI spec")
	}
	name, err := cdi.GenerateNameForSpec(spec)
	if err != nil {
		return "", fmt.Errorf("CDI spec kind %q: %w", spec.Kind, err)
	}
	return name + ".yaml", nil
}

// WriteCDISpec writes spec into dir (created if missing) as CDISpecFileName(spec), YAML as
// nvidia-ctk writes it, mode 0644, and returns the file's path. The write is atomic: the spec
// goes to a temporary file in dir, is checked with the CDI library's validation, synced, and
// renamed over the old file, and dir is synced; a reader sees the old spec or the new one,
// never a part, and a failed write leaves no temporary file.
func WriteCDISpec(spec *specs.Spec, dir string) (path string, err error) {
	name, err := CDISpecFileName(spec)
	if err != nil {
		return "", err
	}
	data, err := MarshalCDISpec(spec)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("write CDI spec: %w", err)
	}
	path = filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write CDI spec: %w", err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return "", fmt.Errorf("write CDI spec %s: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return "", fmt.Errorf("write CDI spec %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return "", fmt.Errorf("write CDI spec %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return "", fmt.Errorf("write CDI spec %s: %w", path, err)
	}
	if err = libraryValidate(data, tmpName); err != nil {
		return "", fmt.Errorf("write CDI spec %s: invalid spec: %w", path, err)
	}
	if err = os.Rename(tmpName, path); err != nil {
		return "", fmt.Errorf("write CDI spec %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // make the rename durable; some file systems cannot sync a directory
		_ = d.Close()
	}
	return path, nil
}

// cdiGPU is one GPU (or MIG device) of a spec and the device names that stand for it.
type cdiGPU struct {
	index string // "0", "0:1"; "" when the spec names it only by UUID
	uuid  string // "GPU-…", "MIG-…"; "" when named only by index
	names []string
}

func (g cdiGPU) String() string {
	switch {
	case g.index != "" && g.uuid != "":
		return g.index + " (" + g.uuid + ")"
	case g.index != "":
		return g.index
	case g.uuid != "":
		return g.uuid
	}
	return strings.Join(g.names, "/")
}

// isIndexName reports whether a CDI device name is a GPU index ("0") or MIG index ("0:1").
func isIndexName(name string) bool {
	for _, part := range strings.SplitN(name, ":", 2) {
		if _, err := strconv.ParseUint(part, 10, 32); err != nil {
			return false
		}
	}
	return true
}

// cdiGPUs groups a spec's devices, except "all", into GPUs: devices whose container edits
// are the same (nvcdi gives a GPU's index name and UUID name identical edits) are one GPU.
func cdiGPUs(spec *specs.Spec) []cdiGPU {
	var gpus []cdiGPU
	byKey := map[string]int{}
	for _, d := range spec.Devices {
		if d.Name == CDIAllDevice {
			continue
		}
		key, err := yaml.Marshal(d.ContainerEdits)
		k := string(key)
		if err != nil || len(d.ContainerEdits.DeviceNodes) == 0 {
			k = "name:" + d.Name // cannot tell; keep it apart
		}
		i, ok := byKey[k]
		if !ok {
			i = len(gpus)
			byKey[k] = i
			gpus = append(gpus, cdiGPU{})
		}
		g := &gpus[i]
		g.names = append(g.names, d.Name)
		if isIndexName(d.Name) {
			if g.index == "" {
				g.index = d.Name
			}
		} else if g.uuid == "" {
			g.uuid = d.Name
		}
	}
	sort.SliceStable(gpus, func(a, b int) bool { return lessIndex(gpus[a].index, gpus[b].index) })
	return gpus
}

// lessIndex orders "0" < "1" < "1:0" < "10" < "" numerically.
func lessIndex(a, b string) bool {
	if a == "" || b == "" {
		return a != "" && b == ""
	}
	pa, pb := strings.SplitN(a, ":", 2), strings.SplitN(b, ":", 2)
	for i := 0; i < 2; i++ {
		var x, y uint64 = 0, 0
		hx, hy := i < len(pa), i < len(pb)
		if hx {
			x, _ = strconv.ParseUint(pa[i], 10, 32)
		}
		if hy {
			y, _ = strconv.ParseUint(pb[i], 10, 32)
		}
		if hx != hy {
			return !hx
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// CDIDeviceNames returns the fully qualified CDI device names ("nvidia.com/gpu=0") for a GPU
// selection as recipes.ParseGPUs returns it: nil, empty or containing "all" selects every GPU
// through the spec's "all" device; otherwise each entry is a GPU index ("0"), a MIG index
// ("0:1") or a UUID ("GPU-…", "MIG-…", matched without regard to case) and names the spec's
// device of that name, in the selection's order. An entry the spec has no device for is an
// error that names it and lists the GPUs the spec has. Two entries for the same GPU (its
// index and its UUID) give one name.
func CDIDeviceNames(spec *specs.Spec, selection []string) ([]string, error) {
	if spec == nil {
		return nil, errors.New("no CDI spec")
	}
	vendor, class := parser.ParseQualifier(spec.Kind)
	if vendor == "" || class == "" {
		return nil, fmt.Errorf("CDI spec kind %q is not vendor/class", spec.Kind)
	}
	byName := map[string]string{} // lower-case name -> name
	for _, d := range spec.Devices {
		byName[strings.ToLower(d.Name)] = d.Name
	}
	if len(selection) == 0 || slices.Contains(selection, CDIAllDevice) {
		if _, ok := byName[CDIAllDevice]; !ok {
			return nil, fmt.Errorf("CDI spec %s has no %q device", spec.Kind, CDIAllDevice)
		}
		return []string{parser.QualifiedName(vendor, class, CDIAllDevice)}, nil
	}

	gpus := cdiGPUs(spec)
	gpuOf := map[string]int{}
	for i, g := range gpus {
		for _, n := range g.names {
			gpuOf[n] = i
		}
	}
	var out []string
	var unknown []string
	picked := map[int]bool{}
	for _, sel := range selection {
		s := strings.TrimSpace(sel)
		name, ok := byName[strings.ToLower(s)]
		if !ok || s == "" {
			unknown = append(unknown, strconv.Quote(sel))
			continue
		}
		if i, ok := gpuOf[name]; ok {
			if picked[i] {
				continue
			}
			picked[i] = true
		}
		out = append(out, parser.QualifiedName(vendor, class, name))
	}
	if len(unknown) > 0 {
		var have []string
		for _, g := range gpus {
			have = append(have, g.String())
		}
		what := "GPU %s is"
		if len(unknown) > 1 {
			what = "GPUs %s are"
		}
		return nil, fmt.Errorf(what+" not in the CDI spec %s, which has %d: %s", strings.Join(unknown, ", "),
			spec.Kind, len(gpus), strings.Join(have, ", "))
	}
	return out, nil
}
