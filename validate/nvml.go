package validate

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// HostExpect is what `gpuforge validate --host` requires of a GPU host. The zero value checks
// health only: NVML works, at least one GPU, no uncorrectable ECC errors, no pending or failed
// row remapping (or page retirement), PCIe links at full width, no hardware clock slowdown,
// and NVLinks all up or all down.
type HostExpect struct {
	// Count is the number of GPUs NVML must see on the host; the selection does not change
	// it. 0 accepts any number from 1.
	Count int
	// Model must appear in the name of each selected GPU, ignoring case ("H200" matches
	// "NVIDIA H200 141GB HBM3e"); "" accepts any.
	Model string
	// MinDriver is the oldest acceptable driver: a branch ("535") or a full version
	// ("550.54.15"), compared numerically component by component, a missing component
	// counting as 0; "" accepts any.
	MinDriver string
	// ECC, when set, is the ECC mode each selected GPU must be in; nil reports it.
	ECC *bool
	// MIG, when set, is the MIG mode each selected GPU must be in; nil reports it.
	MIG *bool
	// Persistence requires persistence mode on each selected GPU; a GPU without it fails.
	// Without persistence mode the driver tears a GPU's state down whenever no process holds
	// it, so every job start pays for re-initialisation and ECC/clock settings can be lost;
	// a GPU node image is expected to run nvidia-persistenced. false reports the mode.
	Persistence bool
	// Selection picks the GPUs whose per-GPU checks run: nil means all; otherwise indices
	// ("0") or UUIDs ("GPU-…", or "MIG-…" to select the GPU holding that MIG device), as
	// recipes.ParseGPUs returns them.
	Selection []string
}

// Names of the host checks, in the order HostChecks reports them: host-wide checks (GPU -1)
// first, then each selected GPU by index with its checks in this order.
const (
	hostCheckInit              = "init"
	hostCheckDriverVersion     = "driver_version"
	hostCheckCUDADriverVersion = "cuda_driver_version"
	hostCheckGPUCount          = "gpu_count"
	hostCheckGPUSelection      = "gpu_selection"
	hostCheckDevice            = "device" // only when a selected GPU cannot be opened
	hostCheckModel             = "model"
	hostCheckECCMode           = "ecc_mode"
	hostCheckECCUncorrectable  = "ecc_uncorrectable"
	hostCheckRemappedRows      = "remapped_rows" // Ampere and later
	hostCheckRetiredPages      = "retired_pages" // before Ampere
	hostCheckPCIeLink          = "pcie_link"
	hostCheckClockThrottle     = "clock_throttle"
	hostCheckMIGMode           = "mig_mode"
	hostCheckNVLink            = "nvlink"
	hostCheckPersistenceMode   = "persistence_mode"
)

// Clock event reasons that mean the hardware is protecting itself: a fault of cooling, power
// delivery or the GPU, never a normal state of a healthy idle host. SW thermal slowdown is
// among them: the driver only lowers clocks for temperature when the GPU is above its
// operating limit, which on a host being validated means cooling is inadequate.
const hostBadClockReasons = nvml.ClocksThrottleReasonHwSlowdown |
	nvml.ClocksThrottleReasonHwThermalSlowdown |
	nvml.ClocksThrottleReasonHwPowerBrakeSlowdown |
	nvml.ClocksEventReasonSwThermalSlowdown

// hostClockReasonNames names each clock event reason bit, in bit order.
var hostClockReasonNames = []struct {
	bit  uint64
	name string
}{
	{nvml.ClocksEventReasonGpuIdle, "GPU idle"},
	{nvml.ClocksEventReasonApplicationsClocksSetting, "application clocks setting"},
	{nvml.ClocksEventReasonSwPowerCap, "SW power cap"},
	{nvml.ClocksThrottleReasonHwSlowdown, "HW slowdown"},
	{nvml.ClocksEventReasonSyncBoost, "sync boost"},
	{nvml.ClocksEventReasonSwThermalSlowdown, "SW thermal slowdown"},
	{nvml.ClocksThrottleReasonHwThermalSlowdown, "HW thermal slowdown"},
	{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, "HW power brake slowdown"},
	{nvml.ClocksEventReasonDisplayClockSetting, "display clock setting"},
	{nvml.ClocksEventReasonBoardLimit, "board limit"},
	{nvml.ClocksEventReasonReliability, "reliability limit"},
}

// HostChecks runs the host checks against NVML: it initialises lib, checks the driver, the
// GPU count and the selection, then each selected GPU, and shuts lib down. It returns the
// inventory of the selected GPUs and the check results, sorted by GPU (-1, the host, first)
// and then in check order; see the hostCheck constants for the names.
//
// A check that cannot read what it needs is StatusError; a feature the GPU or driver does not
// have (ERROR_NOT_SUPPORTED) is StatusSkip unless the expectation requires it.
//
// The error is non-nil when expect is invalid (no results), or when NVML cannot be used at all:
// Init fails (the results hold one StatusError "init" check) or the GPUs cannot be counted.
// It wraps the nvml.Return, so errors.Is(err, nvml.ERROR_DRIVER_NOT_LOADED) works. The
// results returned with it belong in the report.
func HostChecks(lib nvml.Interface, expect HostExpect) ([]GPU, []CheckResult, error) {
	minDriver, err := parseHostExpect(expect)
	if err != nil {
		return nil, nil, err
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		c := CheckResult{Name: hostCheckInit, Status: StatusError, GPU: -1,
			Message: nvmlInitMessage(ret), Observed: ret.Error()}
		return nil, []CheckResult{c}, fmt.Errorf("validate: initialising NVML: %w", ret)
	}
	defer func() { _ = lib.Shutdown() }() // nothing to do about a failed shutdown

	h := &hostRun{lib: lib, expect: expect, minDriver: minDriver, symbols: map[string]bool{}}
	h.init()
	h.driverVersion()
	h.cudaDriverVersion()
	count, err := h.gpuCount()
	if err != nil {
		return nil, h.results, err
	}
	h.open(count)
	selected := h.selection(count)
	for _, i := range selected {
		h.gpu(h.devices[i])
	}
	return h.inventory, h.results, nil
}

// parseHostExpect rejects expectations no host could meet and parses the minimum driver.
func parseHostExpect(e HostExpect) ([]int, error) {
	if e.Count < 0 {
		return nil, fmt.Errorf("validate: host expectation: GPU count %d is negative", e.Count)
	}
	for _, s := range e.Selection {
		if strings.TrimSpace(s) == "" {
			return nil, fmt.Errorf("validate: host expectation: empty entry in GPU selection %q", strings.Join(e.Selection, ","))
		}
	}
	if e.MinDriver == "" {
		return nil, nil
	}
	v, err := parseHostDriverVersion(e.MinDriver)
	if err != nil {
		return nil, fmt.Errorf("validate: host expectation: minimum driver: %w", err)
	}
	return v, nil
}

// parseHostDriverVersion splits "550.54.15" into [550 54 15].
func parseHostDriverVersion(s string) ([]int, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	v := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a driver version like 535 or 550.54.15", s)
		}
		v[i] = n
	}
	return v, nil
}

// compareHostDriverVersions compares a and b component by component, a missing component counting
// as 0, and returns -1, 0 or 1.
func compareHostDriverVersions(a, b []int) int {
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
	}
	return 0
}

// nvmlInitMessage says what a failed nvml.Init means for the person running the validation.
func nvmlInitMessage(ret nvml.Return) string {
	switch ret {
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return "NVML: driver not loaded: the nvidia kernel module is not loaded (check lsmod | grep nvidia and dmesg)"
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return "NVML: library not found: libnvidia-ml.so.1 is not installed or not on the loader path"
	case nvml.ERROR_NO_PERMISSION:
		return "NVML: no permission to open the GPU device nodes (/dev/nvidia*)"
	case nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return "NVML: library and kernel module versions differ: reboot after a driver upgrade, or reload the nvidia modules"
	case nvml.ERROR_GPU_IS_LOST:
		return "NVML: a GPU has fallen off the bus (check dmesg for Xid 79)"
	default:
		return fmt.Sprintf("NVML: initialisation failed: %s", ret.Error())
	}
}

// hostDevice is one GPU as enumerated by index.
type hostDevice struct {
	index int
	dev   nvml.Device
	ret   nvml.Return // of DeviceGetHandleByIndex
	uuid  string
}

// hostRun is the state of one HostChecks call.
type hostRun struct {
	lib       nvml.Interface
	expect    HostExpect
	minDriver []int
	symbols   map[string]bool

	driver    string
	cuda      string
	devices   []hostDevice
	inventory []GPU
	results   []CheckResult
}

func (h *hostRun) add(c CheckResult) { h.results = append(h.results, c) }

// queryError records a check that could not read what it needs.
func (h *hostRun) queryError(gpu int, name, what string, ret nvml.Return) {
	var msg string
	if gpu < 0 {
		msg = fmt.Sprintf("cannot read %s: %s", what, ret.Error())
	} else {
		msg = fmt.Sprintf("cannot read %s of GPU %d: %s", what, gpu, ret.Error())
	}
	h.add(CheckResult{Name: name, Status: StatusError, GPU: gpu, Message: msg})
}

// hasSymbol reports whether the loaded NVML library has a function. go-nvml binds symbols
// lazily, so calling one an older driver lacks would abort the process.
func (h *hostRun) hasSymbol(name string) bool {
	ok, seen := h.symbols[name]
	if !seen {
		ok = h.lib.Extensions().LookupSymbol(name) == nil
		h.symbols[name] = ok
	}
	return ok
}

func (h *hostRun) init() {
	v, ret := h.lib.SystemGetNVMLVersion()
	if ret != nvml.SUCCESS {
		h.add(CheckResult{Name: hostCheckInit, Status: StatusPass, GPU: -1, Message: "NVML initialised"})
		return
	}
	h.add(CheckResult{Name: hostCheckInit, Status: StatusPass, GPU: -1,
		Message: fmt.Sprintf("NVML %s initialised", v), Observed: v})
}

func (h *hostRun) driverVersion() {
	v, ret := h.lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		h.queryError(-1, hostCheckDriverVersion, "the driver version", ret)
		return
	}
	h.driver = v
	c := CheckResult{Name: hostCheckDriverVersion, GPU: -1, Observed: v}
	if h.minDriver == nil {
		c.Status, c.Message = StatusPass, fmt.Sprintf("NVIDIA driver %s is loaded", v)
		h.add(c)
		return
	}
	c.Expected = ">= " + h.expect.MinDriver
	got, err := parseHostDriverVersion(v)
	if err != nil {
		c.Status, c.Message = StatusError, fmt.Sprintf("cannot compare the driver version with %s: %v", h.expect.MinDriver, err)
	} else if compareHostDriverVersions(got, h.minDriver) < 0 {
		c.Status, c.Message = StatusFail, fmt.Sprintf("NVIDIA driver %s is older than the required %s", v, h.expect.MinDriver)
	} else {
		c.Status, c.Message = StatusPass, fmt.Sprintf("NVIDIA driver %s meets the minimum %s", v, h.expect.MinDriver)
	}
	h.add(c)
}

func (h *hostRun) cudaDriverVersion() {
	v, ret := h.lib.SystemGetCudaDriverVersion()
	switch ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND:
		h.add(CheckResult{Name: hostCheckCUDADriverVersion, Status: StatusSkip, GPU: -1,
			Message: "the driver does not report the CUDA version it supports"})
		return
	default:
		h.queryError(-1, hostCheckCUDADriverVersion, "the CUDA driver version", ret)
		return
	}
	h.cuda = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	h.add(CheckResult{Name: hostCheckCUDADriverVersion, Status: StatusPass, GPU: -1,
		Message:  fmt.Sprintf("the driver supports CUDA %s and older", h.cuda),
		Observed: h.cuda})
}

func (h *hostRun) gpuCount() (int, error) {
	n, ret := h.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		h.queryError(-1, hostCheckGPUCount, "the number of GPUs", ret)
		return 0, fmt.Errorf("validate: counting GPUs: %w", ret)
	}
	c := CheckResult{Name: hostCheckGPUCount, GPU: -1, Observed: strconv.Itoa(n)}
	switch {
	case h.expect.Count == 0 && n == 0:
		c.Status, c.Expected, c.Message = StatusFail, ">= 1", "NVML sees no GPUs"
	case h.expect.Count == 0:
		c.Status, c.Message = StatusPass, fmt.Sprintf("NVML sees %s", hostPlural(n, "GPU"))
	case n != h.expect.Count:
		c.Status, c.Expected = StatusFail, strconv.Itoa(h.expect.Count)
		c.Message = fmt.Sprintf("NVML sees %s, expected %d", hostPlural(n, "GPU"), h.expect.Count)
	default:
		c.Status, c.Expected = StatusPass, strconv.Itoa(h.expect.Count)
		c.Message = fmt.Sprintf("NVML sees %s, as expected", hostPlural(n, "GPU"))
	}
	h.add(c)
	return n, nil
}

// open gets a handle and the UUID of every GPU; a GPU that cannot be opened is reported by
// its per-GPU "device" check if it is selected.
func (h *hostRun) open(count int) {
	h.devices = make([]hostDevice, count)
	for i := range h.devices {
		d := hostDevice{index: i}
		d.dev, d.ret = h.lib.DeviceGetHandleByIndex(i)
		if d.ret == nvml.SUCCESS {
			if u, ret := d.dev.GetUUID(); ret == nvml.SUCCESS {
				d.uuid = u
			}
		}
		h.devices[i] = d
	}
}

// selection resolves expect.Selection to sorted GPU indices and reports entries naming no GPU.
func (h *hostRun) selection(count int) []int {
	if h.expect.Selection == nil {
		all := make([]int, count)
		for i := range all {
			all[i] = i
		}
		c := CheckResult{Name: hostCheckGPUSelection, GPU: -1, Observed: "all"}
		if count == 0 {
			c.Status, c.Message = StatusSkip, "no GPUs to select"
		} else {
			c.Status, c.Message = StatusPass, fmt.Sprintf("all %s selected", hostPlural(count, "GPU"))
		}
		h.add(c)
		return all
	}
	written := strings.Join(h.expect.Selection, ",")
	set := map[int]bool{}
	var missing []string
	for _, s := range h.expect.Selection {
		s = strings.TrimSpace(s)
		if i, ok := h.resolve(s); ok {
			set[i] = true
		} else {
			missing = append(missing, s)
		}
	}
	var sel []int
	for i := range set {
		sel = append(sel, i)
	}
	sort.Ints(sel)
	c := CheckResult{Name: hostCheckGPUSelection, GPU: -1, Observed: written}
	if len(missing) > 0 {
		c.Status, c.Observed, c.Expected = StatusFail, strings.Join(missing, ","), hostGPURange(count)
		c.Message = fmt.Sprintf("selection %s: %s not exist (the host has %s)",
			written, hostSelectionNames(missing), hostGPURange(count))
	} else {
		c.Status = StatusPass
		c.Message = fmt.Sprintf("selection %s checks %s", written, hostIndexList(sel))
	}
	h.add(c)
	return sel
}

// resolve turns a selection entry into a GPU index: an index below the count, a GPU UUID of
// an enumerated GPU, or a MIG device UUID (the GPU that holds it).
func (h *hostRun) resolve(s string) (int, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		return n, n >= 0 && n < len(h.devices)
	}
	for _, d := range h.devices {
		if d.uuid != "" && strings.EqualFold(d.uuid, s) {
			return d.index, true
		}
	}
	if !strings.HasPrefix(strings.ToUpper(s), "MIG-") {
		return 0, false
	}
	mig, ret := h.lib.DeviceGetHandleByUUID(s)
	if ret != nvml.SUCCESS {
		return 0, false
	}
	parent, ret := mig.GetDeviceHandleFromMigDeviceHandle()
	if ret != nvml.SUCCESS {
		return 0, false
	}
	i, ret := parent.GetIndex()
	if ret != nvml.SUCCESS || i < 0 || i >= len(h.devices) {
		return 0, false
	}
	return i, true
}

// hostSelectionNames names missing entries: "GPU 9 does", "GPU-x does", "GPU 9 and GPU-x do".
func hostSelectionNames(missing []string) string {
	names := make([]string, len(missing))
	for i, m := range missing {
		names[i] = m
		if _, err := strconv.Atoi(m); err == nil {
			names[i] = "GPU " + m
		}
	}
	if len(names) == 1 {
		return names[0] + " does"
	}
	return hostJoin(names) + " do"
}

// hostGPURange says which indices exist: "no GPUs", "GPU 0", "GPUs 0-7".
func hostGPURange(count int) string {
	switch count {
	case 0:
		return "no GPUs"
	case 1:
		return "GPU 0"
	}
	return fmt.Sprintf("GPUs 0-%d", count-1)
}

// hostIndexList writes "GPU 0" or "GPUs 0, 1 and 3".
func hostIndexList(idx []int) string {
	s := make([]string, len(idx))
	for i, n := range idx {
		s[i] = strconv.Itoa(n)
	}
	if len(s) == 1 {
		return "GPU " + s[0]
	}
	return "GPUs " + strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// hostPlural writes "1 GPU", "8 GPUs".
func hostPlural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// gpu runs the per-GPU checks of one selected GPU.
func (h *hostRun) gpu(d hostDevice) {
	if d.ret != nvml.SUCCESS {
		h.inventory = append(h.inventory, GPU{Index: d.index})
		h.add(CheckResult{Name: hostCheckDevice, Status: StatusError, GPU: d.index,
			Message: fmt.Sprintf("cannot open GPU %d: %s; its other checks did not run", d.index, d.ret.Error())})
		return
	}
	g := GPU{Index: d.index, UUID: d.uuid, DriverVersion: h.driver, CUDAVersion: h.cuda}
	if name, ret := d.dev.GetName(); ret == nvml.SUCCESS {
		g.Name = name
	}
	if mem, ret := d.dev.GetMemoryInfo(); ret == nvml.SUCCESS {
		g.MemoryMiB = int64(mem.Total >> 20)
	}
	if pci, ret := d.dev.GetPciInfo(); ret == nvml.SUCCESS {
		g.PCIBusID = nvmlString(pci.BusId[:])
	}
	h.inventory = append(h.inventory, g)

	i, dev := d.index, d.dev
	h.model(i, dev)
	h.eccMode(i, dev)
	h.eccUncorrectable(i, dev)
	h.memoryRepair(i, dev)
	reasons, reasonsRet := h.clockReasons(dev)
	h.pcieLink(i, dev, reasons, reasonsRet)
	h.clockThrottle(i, reasons, reasonsRet)
	h.migMode(i, dev)
	h.nvlink(i, dev)
	h.persistenceMode(i, dev)
}

// nvmlString converts a NUL-terminated C char array.
func nvmlString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

func hostEnabledWord(s nvml.EnableState) string {
	if s == nvml.FEATURE_ENABLED {
		return "enabled"
	}
	return "disabled"
}

func hostBoolWord(b bool) string {
	if b {
		return "enabled"
	}
	return "disabled"
}

func (h *hostRun) model(i int, dev nvml.Device) {
	name, ret := dev.GetName()
	if ret != nvml.SUCCESS {
		h.queryError(i, hostCheckModel, "the name", ret)
		return
	}
	c := CheckResult{Name: hostCheckModel, GPU: i, Observed: name}
	switch {
	case h.expect.Model == "":
		c.Status, c.Message = StatusPass, fmt.Sprintf("GPU %d is %s", i, name)
	case strings.Contains(strings.ToLower(name), strings.ToLower(h.expect.Model)):
		c.Status, c.Expected = StatusPass, fmt.Sprintf("name contains %q", h.expect.Model)
		c.Message = fmt.Sprintf("GPU %d is %s, which matches %q", i, name, h.expect.Model)
	default:
		c.Status, c.Expected = StatusFail, fmt.Sprintf("name contains %q", h.expect.Model)
		c.Message = fmt.Sprintf("GPU %d is %s, which does not match %q", i, name, h.expect.Model)
	}
	h.add(c)
}

// modeCheck compares an enable/disable mode with an optional expectation. what names the
// feature ("ECC"), after says when a pending change applies.
func (h *hostRun) modeCheck(name string, i int, what, after string, current, pending nvml.EnableState, want *bool) {
	cur := hostEnabledWord(current)
	c := CheckResult{Name: name, GPU: i, Observed: cur, Status: StatusPass}
	c.Message = fmt.Sprintf("%s is %s on GPU %d", what, cur, i)
	if want != nil {
		c.Expected = hostBoolWord(*want)
		if (current == nvml.FEATURE_ENABLED) != *want {
			c.Status = StatusFail
			c.Message += ", expected " + c.Expected
		}
	}
	if pending != current {
		c.Message += fmt.Sprintf("; it becomes %s after %s", hostEnabledWord(pending), after)
	}
	h.add(c)
}

// unsupported records a feature the GPU lacks: a failure when the expectation requires it,
// a pass when it requires it off, a skip otherwise.
func (h *hostRun) unsupported(name string, i int, what string, want *bool) {
	c := CheckResult{Name: name, GPU: i, Observed: "not supported",
		Message: fmt.Sprintf("GPU %d does not support %s", i, what)}
	switch {
	case want == nil:
		c.Status = StatusSkip
	case *want:
		c.Status, c.Expected = StatusFail, "enabled"
		c.Message += ", expected it enabled"
	default:
		c.Status, c.Expected = StatusPass, "disabled"
	}
	h.add(c)
}

func (h *hostRun) eccMode(i int, dev nvml.Device) {
	cur, pending, ret := dev.GetEccMode()
	switch ret {
	case nvml.SUCCESS:
		h.modeCheck(hostCheckECCMode, i, "ECC", "the next reboot", cur, pending, h.expect.ECC)
	case nvml.ERROR_NOT_SUPPORTED:
		h.unsupported(hostCheckECCMode, i, "ECC", h.expect.ECC)
	default:
		h.queryError(i, hostCheckECCMode, "the ECC mode", ret)
	}
}

// eccUncorrectable fails on any uncorrectable ECC error, since the driver loaded (volatile)
// or over the GPU's lifetime (aggregate).
func (h *hostRun) eccUncorrectable(i int, dev nvml.Device) {
	vol, r1 := dev.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC)
	agg, r2 := dev.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.AGGREGATE_ECC)
	if r1 == nvml.ERROR_NOT_SUPPORTED && r2 == nvml.ERROR_NOT_SUPPORTED {
		h.add(CheckResult{Name: hostCheckECCUncorrectable, Status: StatusSkip, GPU: i,
			Message: fmt.Sprintf("GPU %d counts no ECC errors (ECC disabled or not supported)", i)})
		return
	}
	for _, r := range []nvml.Return{r1, r2} {
		if r != nvml.SUCCESS && r != nvml.ERROR_NOT_SUPPORTED {
			h.queryError(i, hostCheckECCUncorrectable, "the uncorrectable ECC error counts", r)
			return
		}
	}
	count := func(n uint64, r nvml.Return) string {
		if r != nvml.SUCCESS {
			return "n/a"
		}
		return strconv.FormatUint(n, 10)
	}
	c := CheckResult{Name: hostCheckECCUncorrectable, GPU: i, Expected: "0",
		Observed: fmt.Sprintf("volatile %s, aggregate %s", count(vol, r1), count(agg, r2))}
	if (r1 == nvml.SUCCESS && vol > 0) || (r2 == nvml.SUCCESS && agg > 0) {
		c.Status = StatusFail
		c.Message = fmt.Sprintf("GPU %d has uncorrectable ECC errors: %s since the driver loaded, %s over its lifetime "+
			"(drain it and check nvidia-smi -q -d ECC,ROW_REMAPPER)", i, count(vol, r1), count(agg, r2))
	} else {
		c.Status = StatusPass
		c.Message = fmt.Sprintf("GPU %d has no uncorrectable ECC errors", i)
	}
	h.add(c)
}

// memoryRepair checks how the GPU replaces bad memory: row remapping on Ampere and later
// (a pending remap needs a GPU reset; a failed one means the GPU is out of spare rows),
// page retirement before (a pending retirement needs a reboot).
func (h *hostRun) memoryRepair(i int, dev nvml.Device) {
	arch, ret := dev.GetArchitecture()
	known := ret == nvml.SUCCESS && arch != nvml.DEVICE_ARCH_UNKNOWN
	if known && arch < nvml.DEVICE_ARCH_AMPERE {
		h.retiredPages(i, dev)
		return
	}
	if !h.hasSymbol("nvmlDeviceGetRemappedRows") {
		h.retiredPages(i, dev)
		return
	}
	corr, unc, pending, failed, ret := dev.GetRemappedRows()
	switch ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_SUPPORTED:
		if !known { // an unknown architecture may be an older one
			h.retiredPages(i, dev)
			return
		}
		h.add(CheckResult{Name: hostCheckRemappedRows, Status: StatusSkip, GPU: i,
			Message: fmt.Sprintf("GPU %d does not support row remapping", i)})
		return
	default:
		h.queryError(i, hostCheckRemappedRows, "the remapped rows", ret)
		return
	}
	c := CheckResult{Name: hostCheckRemappedRows, GPU: i, Expected: "no pending or failed remapping"}
	c.Observed = fmt.Sprintf("%d correctable, %d uncorrectable", corr, unc)
	if pending {
		c.Observed += ", pending"
	}
	if failed {
		c.Observed += ", failed"
	}
	switch {
	case failed:
		c.Status = StatusFail
		c.Message = fmt.Sprintf("row remapping failed on GPU %d: a memory bank has no spare rows left; the GPU needs replacing", i)
		if pending {
			c.Message += " (a remap is also pending)"
		}
	case pending:
		c.Status = StatusFail
		c.Message = fmt.Sprintf("GPU %d has a row remapping pending: reset the GPU or reboot to apply it", i)
	default:
		c.Status = StatusPass
		c.Message = fmt.Sprintf("GPU %d has no pending or failed row remapping (%s remapped)", i, hostPlural(corr+unc, "row"))
	}
	h.add(c)
}

func (h *hostRun) retiredPages(i int, dev nvml.Device) {
	pending, ret := dev.GetRetiredPagesPendingStatus()
	switch ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_SUPPORTED:
		h.add(CheckResult{Name: hostCheckRetiredPages, Status: StatusSkip, GPU: i,
			Message: fmt.Sprintf("GPU %d does not support page retirement", i)})
		return
	default:
		h.queryError(i, hostCheckRetiredPages, "the page retirement status", ret)
		return
	}
	retired, counted := 0, true
	for _, cause := range []nvml.PageRetirementCause{
		nvml.PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
		nvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
	} {
		pages, ret := dev.GetRetiredPages(cause)
		if ret != nvml.SUCCESS {
			counted = false
			break
		}
		retired += len(pages)
	}
	c := CheckResult{Name: hostCheckRetiredPages, GPU: i, Expected: "no retirement pending"}
	if counted {
		c.Observed = hostPlural(retired, "page") + " retired"
	}
	if pending == nvml.FEATURE_ENABLED {
		c.Status = StatusFail
		c.Observed = strings.TrimPrefix(c.Observed+", retirement pending", ", ")
		c.Message = fmt.Sprintf("GPU %d has a page retirement pending: reboot to retire the pages", i)
	} else {
		c.Status = StatusPass
		c.Message = fmt.Sprintf("GPU %d has no page retirement pending", i)
		if counted {
			c.Message += fmt.Sprintf(" (%s retired)", hostPlural(retired, "page"))
		}
	}
	h.add(c)
}

// clockReasons reads the current clock event reasons, through the older throttle-reasons call
// on drivers before R535 that lack the event-reasons one.
func (h *hostRun) clockReasons(dev nvml.Device) (uint64, nvml.Return) {
	if h.hasSymbol("nvmlDeviceGetCurrentClocksEventReasons") {
		return dev.GetCurrentClocksEventReasons()
	}
	return dev.GetCurrentClocksThrottleReasons()
}

func hostClockReasonList(r uint64) []string {
	var names []string
	for _, n := range hostClockReasonNames {
		if r&n.bit != 0 {
			names = append(names, n.name)
			r &^= n.bit
		}
	}
	if r != 0 {
		names = append(names, fmt.Sprintf("unknown reasons 0x%x", r))
	}
	return names
}

// hostJoin writes "a", "a and b", "a, b and c".
func hostJoin(w []string) string {
	if len(w) <= 1 {
		return strings.Join(w, "")
	}
	return strings.Join(w[:len(w)-1], ", ") + " and " + w[len(w)-1]
}

// pcieLink compares the link the GPU trained to with the best the GPU and slot support.
//
// Width never changes at run time, so a link narrower than the maximum width fails: it trained
// down (a bad riser, a dirty or damaged slot, a misconfigured bifurcation). The generation
// does change: GPUs drop to Gen1 when idle to save power and go back up under load, so a
// generation below the maximum fails only when the GPU is known to be busy (utilisation above
// 0 and no "GPU idle" clock reason). On an idle GPU, or when the load cannot be read, it
// passes and the message says the link is below its maximum generation. Checking the
// generation properly needs load; the benchmark checks provide it.
func (h *hostRun) pcieLink(i int, dev nvml.Device, reasons uint64, reasonsRet nvml.Return) {
	curGen, r1 := dev.GetCurrPcieLinkGeneration()
	curWidth, r2 := dev.GetCurrPcieLinkWidth()
	for _, r := range []nvml.Return{r1, r2} {
		if r == nvml.ERROR_NOT_SUPPORTED {
			h.add(CheckResult{Name: hostCheckPCIeLink, Status: StatusSkip, GPU: i,
				Message: fmt.Sprintf("GPU %d does not report its PCIe link", i)})
			return
		}
		if r != nvml.SUCCESS {
			h.queryError(i, hostCheckPCIeLink, "the PCIe link", r)
			return
		}
	}
	cur := fmt.Sprintf("Gen%d x%d", curGen, curWidth)
	maxGen, r1 := dev.GetMaxPcieLinkGeneration()
	maxWidth, r2 := dev.GetMaxPcieLinkWidth()
	for _, r := range []nvml.Return{r1, r2} {
		if r == nvml.ERROR_NOT_SUPPORTED {
			h.add(CheckResult{Name: hostCheckPCIeLink, Status: StatusSkip, GPU: i, Observed: cur,
				Message: fmt.Sprintf("PCIe link of GPU %d is %s; the GPU does not report the maximum to compare with", i, cur)})
			return
		}
		if r != nvml.SUCCESS {
			h.queryError(i, hostCheckPCIeLink, "the maximum PCIe link", r)
			return
		}
	}
	best := fmt.Sprintf("Gen%d x%d", maxGen, maxWidth)
	c := CheckResult{Name: hostCheckPCIeLink, GPU: i, Observed: cur, Expected: best}
	// The GPU's own maximum, when higher, shows the slot is what limits the generation.
	slotNote := ""
	if h.hasSymbol("nvmlDeviceGetGpuMaxPcieLinkGeneration") {
		if g, ret := dev.GetGpuMaxPcieLinkGeneration(); ret == nvml.SUCCESS && g > maxGen {
			slotNote = fmt.Sprintf(" (the GPU supports Gen%d, the slot limits it to Gen%d)", g, maxGen)
		}
	}

	idle, busy, load := h.load(dev, reasons, reasonsRet)
	switch {
	case curWidth < maxWidth:
		c.Status = StatusFail
		c.Message = fmt.Sprintf("PCIe link of GPU %d is %s, the GPU and slot support %s%s: the link trained down "+
			"(reseat the GPU or riser, check the slot)", i, cur, best, slotNote)
	case curGen < maxGen && busy:
		c.Status = StatusFail
		c.Message = fmt.Sprintf("PCIe link of GPU %d is %s under load (%s), the GPU and slot support %s%s: the link trained down",
			i, cur, load, best, slotNote)
	case curGen < maxGen && idle:
		c.Status = StatusPass
		c.Message = fmt.Sprintf("PCIe link of GPU %d is %s while idle, the GPU and slot support %s%s "+
			"(GPUs lower the link generation when idle; only the width is checked)", i, cur, best, slotNote)
	case curGen < maxGen:
		c.Status = StatusPass
		c.Message = fmt.Sprintf("PCIe link of GPU %d is %s, the GPU and slot support %s%s "+
			"(the load cannot be read and GPUs lower the link generation when idle; only the width is checked)", i, cur, best, slotNote)
	default:
		c.Status = StatusPass
		c.Message = fmt.Sprintf("PCIe link of GPU %d is %s, the most the GPU and slot support%s", i, cur, slotNote)
	}
	h.add(c)
}

// load says whether a GPU is idle (a "GPU idle" clock reason or 0 % utilisation), busy
// (readable and neither), or neither when nothing could be read, and describes the load.
func (h *hostRun) load(dev nvml.Device, reasons uint64, reasonsRet nvml.Return) (idle, busy bool, desc string) {
	util, ret := dev.GetUtilizationRates()
	utilOK := ret == nvml.SUCCESS
	reasonsOK := reasonsRet == nvml.SUCCESS
	idle = (reasonsOK && reasons&nvml.ClocksEventReasonGpuIdle != 0) || (utilOK && util.Gpu == 0)
	busy = !idle && (reasonsOK || utilOK)
	if utilOK {
		desc = fmt.Sprintf("%d%% utilisation", util.Gpu)
	} else {
		desc = "clocks not idle"
	}
	return idle, busy, desc
}

// clockThrottle fails when the hardware holds the clocks back (HW slowdown, HW thermal, HW
// power brake, SW thermal); other reasons (idle, SW power cap, application clocks, sync boost)
// are normal and pass with a note.
func (h *hostRun) clockThrottle(i int, reasons uint64, ret nvml.Return) {
	switch ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_SUPPORTED:
		h.add(CheckResult{Name: hostCheckClockThrottle, Status: StatusSkip, GPU: i,
			Message: fmt.Sprintf("GPU %d does not report why its clocks are limited", i)})
		return
	default:
		h.queryError(i, hostCheckClockThrottle, "the clock event reasons", ret)
		return
	}
	names := hostClockReasonList(reasons)
	c := CheckResult{Name: hostCheckClockThrottle, GPU: i, Observed: "none",
		Expected: "no HW slowdown, SW thermal slowdown, HW thermal slowdown or HW power brake slowdown"}
	if len(names) > 0 {
		c.Observed = strings.Join(names, ", ")
	}
	switch {
	case reasons&hostBadClockReasons != 0:
		c.Status = StatusFail
		c.Message = fmt.Sprintf("GPU %d clocks are held back by %s: check cooling and power delivery (nvidia-smi -q -d PERFORMANCE)",
			i, hostJoin(hostClockReasonList(reasons&hostBadClockReasons)))
	case reasons == 0:
		c.Status = StatusPass
		c.Message = fmt.Sprintf("GPU %d clocks are not held back", i)
	default:
		c.Status = StatusPass
		c.Message = fmt.Sprintf("GPU %d clocks are limited only by %s, which is normal", i, hostJoin(names))
	}
	h.add(c)
}

func (h *hostRun) migMode(i int, dev nvml.Device) {
	cur, pending, ret := dev.GetMigMode()
	switch ret {
	case nvml.SUCCESS:
		h.modeCheck(hostCheckMIGMode, i, "MIG", "the next GPU reset", nvml.EnableState(cur), nvml.EnableState(pending), h.expect.MIG)
	case nvml.ERROR_NOT_SUPPORTED:
		h.unsupported(hostCheckMIGMode, i, "MIG", h.expect.MIG)
	default:
		h.queryError(i, hostCheckMIGMode, "the MIG mode", ret)
	}
}

// nvlink reports each NVLink's state. A GPU with some links active and others down fails: on
// an NVLink system every link is meant to be up. All links down passes with a note (a GPU not
// wired to peers, or NVSwitch fabric not started), and a GPU without NVLink is skipped.
func (h *hostRun) nvlink(i int, dev nvml.Device) {
	var links, down []int
	for l := 0; l < nvml.NVLINK_MAX_LINKS; l++ {
		st, ret := dev.GetNvLinkState(l)
		switch ret {
		case nvml.SUCCESS:
		case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_INVALID_ARGUMENT, nvml.ERROR_NOT_FOUND:
			continue // no such link
		default:
			h.queryError(i, hostCheckNVLink, fmt.Sprintf("the state of NVLink %d", l), ret)
			return
		}
		links = append(links, l)
		if st != nvml.FEATURE_ENABLED {
			down = append(down, l)
		}
	}
	n := len(links)
	if n == 0 {
		h.add(CheckResult{Name: hostCheckNVLink, Status: StatusSkip, GPU: i,
			Message: fmt.Sprintf("GPU %d has no NVLink", i)})
		return
	}
	c := CheckResult{Name: hostCheckNVLink, GPU: i, Status: StatusPass,
		Observed: fmt.Sprintf("%d/%d active", n-len(down), n),
		Expected: fmt.Sprintf("%d/%d active, or none", n, n)}
	switch {
	case len(down) == 0:
		c.Message = fmt.Sprintf("GPU %d has %s, all active", i, hostPlural(n, "NVLink"))
	case len(down) == n:
		c.Message = fmt.Sprintf("GPU %d has %s, none active (no NVLink peers; on NVSwitch systems check nvidia-fabricmanager)",
			i, hostPlural(n, "NVLink"))
	default:
		ids := make([]string, len(down))
		for k, l := range down {
			ids[k] = strconv.Itoa(l)
		}
		c.Status = StatusFail
		c.Observed += "; down: " + strings.Join(ids, ", ")
		which := "links " + hostJoin(ids)
		if len(down) == 1 {
			which = "link " + ids[0]
		}
		c.Message = fmt.Sprintf("GPU %d has %d of %s down (%s) while the others are active (nvidia-smi nvlink -s)",
			i, len(down), hostPlural(n, "NVLink"), which)
	}
	h.add(c)
}

func (h *hostRun) persistenceMode(i int, dev nvml.Device) {
	var want *bool
	if h.expect.Persistence {
		want = &h.expect.Persistence
	}
	mode, ret := dev.GetPersistenceMode()
	switch ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_SUPPORTED:
		h.unsupported(hostCheckPersistenceMode, i, "persistence mode", want)
		return
	default:
		h.queryError(i, hostCheckPersistenceMode, "the persistence mode", ret)
		return
	}
	c := CheckResult{Name: hostCheckPersistenceMode, GPU: i, Status: StatusPass, Observed: hostEnabledWord(mode),
		Message: fmt.Sprintf("persistence mode is %s on GPU %d", hostEnabledWord(mode), i)}
	if want != nil {
		c.Expected = "enabled"
		if mode != nvml.FEATURE_ENABLED {
			c.Status = StatusFail
			c.Message += ", expected enabled (run nvidia-persistenced, or nvidia-smi -pm 1)"
		}
	}
	h.add(c)
}
