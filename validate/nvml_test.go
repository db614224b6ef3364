package validate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/pmezard/go-difflib/difflib"
)

// hostSimBuses are the PCI buses of the eight GPUs of a DGX H200.
var hostSimBuses = []int{0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb}

// healthyH200 returns the go-nvml 8×H200 simulator completed into a healthy host. The simulator
// implements inventory and MIG calls only; every other call panics, so this fills in the health
// queries HostChecks makes with what a healthy idle DGX H200 reports (ECC on and clean, no row
// remapping, PCIe Gen5 x16, idle clocks, 18 active NVLinks, persistence mode on) and gives the
// GPUs fixed UUIDs and bus IDs so the goldens are stable. Tests inject faults on top.
func healthyH200() *server.Server {
	s := dgxh200.New()
	for i := range s.Devices {
		d := hostSimDevice(s, i)
		d.UUID = fmt.Sprintf("GPU-%08d-0000-0000-0000-000000000000", i)
		busID := fmt.Sprintf("00000000:%02X:00.0", hostSimBuses[i])
		d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
			p := nvml.PciInfo{PciDeviceId: d.Config.PciDeviceId, Bus: uint32(hostSimBuses[i])}
			for k := 0; k < len(busID); k++ {
				p.BusId[k] = int8(busID[k])
			}
			return p, nvml.SUCCESS
		}
		d.GetEccModeFunc = func() (nvml.EnableState, nvml.EnableState, nvml.Return) {
			return nvml.FEATURE_ENABLED, nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		d.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
			return 0, nvml.SUCCESS
		}
		d.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
			return 0, 0, false, false, nvml.SUCCESS
		}
		d.GetCurrPcieLinkGenerationFunc = func() (int, nvml.Return) { return 5, nvml.SUCCESS }
		d.GetCurrPcieLinkWidthFunc = func() (int, nvml.Return) { return 16, nvml.SUCCESS }
		d.GetMaxPcieLinkGenerationFunc = func() (int, nvml.Return) { return 5, nvml.SUCCESS }
		d.GetMaxPcieLinkWidthFunc = func() (int, nvml.Return) { return 16, nvml.SUCCESS }
		d.GetGpuMaxPcieLinkGenerationFunc = func() (int, nvml.Return) { return 5, nvml.SUCCESS }
		d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
			return nvml.ClocksEventReasonGpuIdle, nvml.SUCCESS
		}
		d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{}, nvml.SUCCESS
		}
		d.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
			if link >= 18 {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		d.GetPersistenceModeFunc = func() (nvml.EnableState, nvml.Return) {
			return nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
	}
	return s
}

func hostSimDevice(s *server.Server, i int) *server.Device { return s.Devices[i].(*server.Device) }

// hostH200Expect is what the healthy simulator meets: 8 H200s, driver 550.54.15 above 535.
func hostH200Expect() HostExpect {
	on := true
	return HostExpect{Count: 8, Model: "H200", MinDriver: "535", ECC: &on, Persistence: true}
}

// hostCheckOrder is the order of the per-GPU checks; retired_pages replaces remapped_rows
// before Ampere, and device replaces all of them for a GPU that cannot be opened.
var hostCheckOrder = map[string]int{
	hostCheckInit: 0, hostCheckDriverVersion: 1, hostCheckCUDADriverVersion: 2, hostCheckGPUCount: 3,
	hostCheckGPUSelection: 4, hostCheckDevice: 5, hostCheckModel: 6, hostCheckECCMode: 7,
	hostCheckECCUncorrectable: 8, hostCheckRemappedRows: 9, hostCheckRetiredPages: 9, hostCheckPCIeLink: 10,
	hostCheckClockThrottle: 11, hostCheckMIGMode: 12, hostCheckNVLink: 13, hostCheckPersistenceMode: 14,
}

func TestHostChecksHealthy(t *testing.T) {
	s := healthyH200()
	gpus, checks, err := HostChecks(s, hostH200Expect())
	if err != nil {
		t.Fatal(err)
	}
	assertHostStatuses(t, checks, nil)
	assertHostInventory(t, gpus, []int{0, 1, 2, 3, 4, 5, 6, 7})
	if want := 5 + 8*9; len(checks) != want {
		t.Errorf("got %d checks, want %d (5 host-wide, 9 per GPU)", len(checks), want)
	}
	if g := gpus[0]; g.Name != "NVIDIA H200 141GB HBM3e" || g.MemoryMiB != 144384 || g.DriverVersion != "550.54.15" ||
		g.CUDAVersion != "12.4" || g.PCIBusID != "00000000:18:00.0" {
		t.Errorf("GPU 0 inventory = %+v", g)
	}
	if n, m := len(s.InitCalls()), len(s.ShutdownCalls()); n != 1 || m != 1 {
		t.Errorf("Init called %d times, Shutdown %d; want once each", n, m)
	}
	checkHostGolden(t, "healthy", formatHostChecks(gpus, checks, err))
}

// TestHostChecksZeroExpect runs the health-only checks: nothing is compared with an
// expectation, so the model, ECC, MIG and persistence checks only report.
func TestHostChecksZeroExpect(t *testing.T) {
	gpus, checks, err := HostChecks(healthyH200(), HostExpect{})
	if err != nil {
		t.Fatal(err)
	}
	assertHostStatuses(t, checks, nil)
	assertHostInventory(t, gpus, []int{0, 1, 2, 3, 4, 5, 6, 7})
	checkHostGolden(t, "zero-expect", formatHostChecks(gpus, checks, err))
}

// hostKey names a check of a GPU (-1: the host) in wanted statuses.
type hostKey struct {
	gpu  int
	name string
}

func TestHostChecksFaults(t *testing.T) {
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for _, tc := range []struct {
		name   string
		expect func(*HostExpect)
		inject func(*server.Server)
		want   map[hostKey]Status // every other check passes
		gpus   []int              // the inventory; nil means all eight
	}{{
		name: "missing-gpu",
		inject: func(s *server.Server) {
			s.DeviceGetCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
		},
		want: map[hostKey]Status{{-1, hostCheckGPUCount}: StatusFail},
		gpus: all[:7],
	}, {
		name: "ecc-uncorrectable-gpu3",
		inject: func(s *server.Server) {
			hostSimDevice(s, 3).GetTotalEccErrorsFunc = func(typ nvml.MemoryErrorType, counter nvml.EccCounterType) (uint64, nvml.Return) {
				switch {
				case typ != nvml.MEMORY_ERROR_TYPE_UNCORRECTED:
					return 40, nvml.SUCCESS // corrected errors do not count
				case counter == nvml.VOLATILE_ECC:
					return 2, nvml.SUCCESS
				default:
					return 5, nvml.SUCCESS
				}
			}
		},
		want: map[hostKey]Status{{3, hostCheckECCUncorrectable}: StatusFail},
	}, {
		name: "ecc-uncorrectable-lifetime-only-gpu3",
		inject: func(s *server.Server) {
			hostSimDevice(s, 3).GetTotalEccErrorsFunc = func(typ nvml.MemoryErrorType, counter nvml.EccCounterType) (uint64, nvml.Return) {
				if counter == nvml.AGGREGATE_ECC {
					return 1, nvml.SUCCESS
				}
				return 0, nvml.SUCCESS
			}
		},
		want: map[hostKey]Status{{3, hostCheckECCUncorrectable}: StatusFail},
	}, {
		name: "pcie-x8-gpu5",
		inject: func(s *server.Server) {
			hostSimDevice(s, 5).GetCurrPcieLinkWidthFunc = func() (int, nvml.Return) { return 8, nvml.SUCCESS }
		},
		want: map[hostKey]Status{{5, hostCheckPCIeLink}: StatusFail},
	}, {
		// An idle GPU at Gen1 is normal: GPUs lower the link generation to save power.
		name: "pcie-gen1-idle-gpu4",
		inject: func(s *server.Server) {
			hostSimDevice(s, 4).GetCurrPcieLinkGenerationFunc = func() (int, nvml.Return) { return 1, nvml.SUCCESS }
		},
	}, {
		name: "pcie-gen3-busy-gpu4",
		inject: func(s *server.Server) {
			d := hostSimDevice(s, 4)
			d.GetCurrPcieLinkGenerationFunc = func() (int, nvml.Return) { return 3, nvml.SUCCESS }
			d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
				return nvml.Utilization{Gpu: 87, Memory: 40}, nvml.SUCCESS
			}
			d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return 0, nvml.SUCCESS }
		},
		want: map[hostKey]Status{{4, hostCheckPCIeLink}: StatusFail},
	}, {
		name: "pcie-slot-gen4-gpu2",
		inject: func(s *server.Server) {
			d := hostSimDevice(s, 2)
			d.GetCurrPcieLinkGenerationFunc = func() (int, nvml.Return) { return 4, nvml.SUCCESS }
			d.GetMaxPcieLinkGenerationFunc = func() (int, nvml.Return) { return 4, nvml.SUCCESS }
		},
	}, {
		name:   "driver-too-old",
		expect: func(e *HostExpect) { e.MinDriver = "999" },
		want:   map[hostKey]Status{{-1, hostCheckDriverVersion}: StatusFail},
	}, {
		name:   "driver-same-branch-older-patch",
		expect: func(e *HostExpect) { e.MinDriver = "550.54.16" },
		want:   map[hostKey]Status{{-1, hostCheckDriverVersion}: StatusFail},
	}, {
		name: "hw-slowdown-gpu1",
		inject: func(s *server.Server) {
			hostSimDevice(s, 1).GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
				return nvml.ClocksThrottleReasonHwSlowdown | nvml.ClocksThrottleReasonHwThermalSlowdown, nvml.SUCCESS
			}
		},
		want: map[hostKey]Status{{1, hostCheckClockThrottle}: StatusFail},
	}, {
		name: "sw-power-cap-gpu1",
		inject: func(s *server.Server) {
			hostSimDevice(s, 1).GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
				return nvml.ClocksEventReasonSwPowerCap, nvml.SUCCESS
			}
		},
	}, {
		name:   "selection-missing-gpu9",
		expect: func(e *HostExpect) { e.Selection = []string{"0", "9"} },
		want:   map[hostKey]Status{{-1, hostCheckGPUSelection}: StatusFail},
		gpus:   []int{0},
	}, {
		name: "selection-uuids",
		expect: func(e *HostExpect) {
			e.Selection = []string{"GPU-00000005-0000-0000-0000-000000000000", "3", "GPU-deadbeef-0000-0000-0000-000000000000"}
		},
		want: map[hostKey]Status{{-1, hostCheckGPUSelection}: StatusFail},
		gpus: []int{3, 5},
	}, {
		name:   "selection-mig-uuid",
		expect: func(e *HostExpect) { e.Selection = []string{"MIG-11111111-2222-3333-4444-555555555555", "6"} },
		inject: func(s *server.Server) {
			parent := s.Devices[2]
			mig := &mock.Device{
				GetDeviceHandleFromMigDeviceHandleFunc: func() (nvml.Device, nvml.Return) { return parent, nvml.SUCCESS },
			}
			byUUID := s.DeviceGetHandleByUUIDFunc
			s.DeviceGetHandleByUUIDFunc = func(uuid string) (nvml.Device, nvml.Return) {
				if uuid == "MIG-11111111-2222-3333-4444-555555555555" {
					return mig, nvml.SUCCESS
				}
				return byUUID(uuid)
			}
		},
		gpus: []int{2, 6},
	}, {
		name: "remap-pending-gpu2",
		inject: func(s *server.Server) {
			hostSimDevice(s, 2).GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
				return 0, 1, true, false, nvml.SUCCESS
			}
		},
		want: map[hostKey]Status{{2, hostCheckRemappedRows}: StatusFail},
	}, {
		name: "remap-failed-gpu6",
		inject: func(s *server.Server) {
			hostSimDevice(s, 6).GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
				return 3, 8, false, true, nvml.SUCCESS
			}
		},
		want: map[hostKey]Status{{6, hostCheckRemappedRows}: StatusFail},
	}, {
		name: "remap-not-supported",
		inject: func(s *server.Server) {
			for i := range s.Devices {
				hostSimDevice(s, i).GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
					return 0, 0, false, false, nvml.ERROR_NOT_SUPPORTED
				}
			}
		},
		want: hostAllGPUs(hostCheckRemappedRows, StatusSkip),
	}, {
		// Before Ampere, bad memory is retired by page, and a pending retirement needs a reboot.
		name: "retired-pages-pending-volta-gpu1",
		inject: func(s *server.Server) {
			d := hostSimDevice(s, 1)
			d.GetArchitectureFunc = func() (nvml.DeviceArchitecture, nvml.Return) { return nvml.DEVICE_ARCH_VOLTA, nvml.SUCCESS }
			d.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_ENABLED, nvml.SUCCESS }
			d.GetRetiredPagesFunc = func(cause nvml.PageRetirementCause) ([]uint64, nvml.Return) {
				if cause == nvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR {
					return []uint64{0x1000}, nvml.SUCCESS
				}
				return []uint64{0x2000, 0x3000}, nvml.SUCCESS
			}
		},
		want: map[hostKey]Status{{1, hostCheckRetiredPages}: StatusFail},
	}, {
		name:   "ecc-disabled-gpu6",
		expect: func(e *HostExpect) { on := true; e.ECC = &on },
		inject: func(s *server.Server) {
			hostSimDevice(s, 6).GetEccModeFunc = func() (nvml.EnableState, nvml.EnableState, nvml.Return) {
				return nvml.FEATURE_DISABLED, nvml.FEATURE_ENABLED, nvml.SUCCESS
			}
		},
		want: map[hostKey]Status{{6, hostCheckECCMode}: StatusFail},
	}, {
		name:   "mig-enabled-gpu7",
		expect: func(e *HostExpect) { off := false; e.MIG = &off },
		inject: func(s *server.Server) { hostSimDevice(s, 7).SetMigMode(nvml.DEVICE_MIG_ENABLE) },
		want:   map[hostKey]Status{{7, hostCheckMIGMode}: StatusFail},
	}, {
		name: "nvlink-partial-gpu2",
		inject: func(s *server.Server) {
			hostSimDevice(s, 2).GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
				switch {
				case link >= 18:
					return 0, nvml.ERROR_INVALID_ARGUMENT
				case link == 3 || link == 7:
					return nvml.FEATURE_DISABLED, nvml.SUCCESS
				}
				return nvml.FEATURE_ENABLED, nvml.SUCCESS
			}
		},
		want: map[hostKey]Status{{2, hostCheckNVLink}: StatusFail},
	}, {
		name: "nvlink-all-down-and-pcie-only",
		inject: func(s *server.Server) {
			hostSimDevice(s, 0).GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
				if link >= 18 {
					return 0, nvml.ERROR_INVALID_ARGUMENT
				}
				return nvml.FEATURE_DISABLED, nvml.SUCCESS
			}
			hostSimDevice(s, 1).GetNvLinkStateFunc = func(int) (nvml.EnableState, nvml.Return) {
				return 0, nvml.ERROR_NOT_SUPPORTED
			}
		},
		want: map[hostKey]Status{{1, hostCheckNVLink}: StatusSkip},
	}, {
		name: "persistence-off-gpu0",
		inject: func(s *server.Server) {
			hostSimDevice(s, 0).GetPersistenceModeFunc = func() (nvml.EnableState, nvml.Return) {
				return nvml.FEATURE_DISABLED, nvml.SUCCESS
			}
		},
		want: map[hostKey]Status{{0, hostCheckPersistenceMode}: StatusFail},
	}, {
		name:   "model-mismatch",
		expect: func(e *HostExpect) { e.Model = "B200" },
		want:   hostAllGPUs(hostCheckModel, StatusFail),
	}, {
		name: "gpu4-lost",
		inject: func(s *server.Server) {
			byIndex := s.DeviceGetHandleByIndexFunc
			s.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
				if i == 4 {
					return nil, nvml.ERROR_GPU_IS_LOST
				}
				return byIndex(i)
			}
			hostSimDevice(s, 6).GetEccModeFunc = func() (nvml.EnableState, nvml.EnableState, nvml.Return) {
				return 0, 0, nvml.ERROR_UNKNOWN
			}
		},
		want: map[hostKey]Status{{4, hostCheckDevice}: StatusError, {6, hostCheckECCMode}: StatusError},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := healthyH200()
			expect := hostH200Expect()
			if tc.expect != nil {
				tc.expect(&expect)
			}
			if tc.inject != nil {
				tc.inject(s)
			}
			gpus, checks, err := HostChecks(s, expect)
			if err != nil {
				t.Fatal(err)
			}
			assertHostStatuses(t, checks, tc.want)
			want := tc.gpus
			if want == nil {
				want = all
			}
			assertHostInventory(t, gpus, want)
			checkHostGolden(t, tc.name, formatHostChecks(gpus, checks, err))
		})
	}
}

func hostAllGPUs(name string, st Status) map[hostKey]Status {
	m := map[hostKey]Status{}
	for i := 0; i < 8; i++ {
		m[hostKey{i, name}] = st
	}
	return m
}

func TestHostChecksInitFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		ret  nvml.Return
	}{
		{"init-driver-not-loaded", nvml.ERROR_DRIVER_NOT_LOADED},
		{"init-library-not-found", nvml.ERROR_LIBRARY_NOT_FOUND},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := healthyH200()
			s.InitFunc = func() nvml.Return { return tc.ret }
			gpus, checks, err := HostChecks(s, hostH200Expect())
			if !errors.Is(err, tc.ret) {
				t.Fatalf("err = %v, want one wrapping %s", err, tc.ret.Error())
			}
			if gpus != nil {
				t.Errorf("inventory = %+v, want none", gpus)
			}
			if len(checks) != 1 || checks[0].Name != hostCheckInit || checks[0].Status != StatusError || checks[0].GPU != -1 {
				t.Fatalf("checks = %+v, want one host-wide init error", checks)
			}
			if n := len(s.ShutdownCalls()); n != 0 {
				t.Errorf("Shutdown called %d times after a failed Init", n)
			}
			checkHostGolden(t, tc.name, formatHostChecks(gpus, checks, err))
		})
	}
}

func TestHostChecksCountFailure(t *testing.T) {
	s := healthyH200()
	s.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	gpus, checks, err := HostChecks(s, hostH200Expect())
	if !errors.Is(err, nvml.ERROR_UNKNOWN) {
		t.Fatalf("err = %v, want one wrapping ERROR_UNKNOWN", err)
	}
	if gpus != nil {
		t.Errorf("inventory = %+v, want none", gpus)
	}
	assertHostStatuses(t, checks, map[hostKey]Status{{-1, hostCheckGPUCount}: StatusError})
	if n := len(s.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown called %d times, want once", n)
	}
	checkHostGolden(t, "count-error", formatHostChecks(gpus, checks, err))
}

func TestHostChecksInvalidExpect(t *testing.T) {
	for _, e := range []HostExpect{
		{MinDriver: "r535"},
		{MinDriver: "550..1"},
		{Count: -1},
		{Selection: []string{"0", " "}},
	} {
		s := healthyH200()
		gpus, checks, err := HostChecks(s, e)
		if err == nil || gpus != nil || checks != nil {
			t.Errorf("HostChecks(%+v) = %v, %v, %v; want only an error", e, gpus, checks, err)
		}
		if n := len(s.InitCalls()); n != 0 {
			t.Errorf("HostChecks(%+v) initialised NVML for an invalid expectation", e)
		}
	}
}

// TestHostChecksRealGPU runs the host checks against the real NVML of a GPU host and logs what
// they report: GPUFORGE_NVML_HOST=1 go test ./validate/ -run HostChecksRealGPU -v. It fails only
// when NVML cannot be used or a check errors; failed checks are the host's, not the code's.
func TestHostChecksRealGPU(t *testing.T) {
	if os.Getenv("GPUFORGE_NVML_HOST") == "" {
		t.Skip("set GPUFORGE_NVML_HOST=1 on a GPU host to run the checks against its NVML")
	}
	gpus, checks, err := HostChecks(nvml.New(), HostExpect{})
	t.Logf("\n%s", formatHostChecks(gpus, checks, err))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		if c.Status == StatusError {
			t.Errorf("check %s of GPU %d errored: %s", c.Name, c.GPU, c.Message)
		}
	}
}

func TestHostDriverVersionCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"550.54.15", "535", 1},
		{"535.104.05", "535", 1},
		{"535", "535.0.0", 0},
		{"550.54.15", "550.54.15", 0},
		{"550.54.15", "550.54.16", -1},
		{"550.54.15", "999", -1},
		{"580.159.04", "580.65.06", 1}, // numeric, not lexical
		{"9.1", "10", -1},
	} {
		a, err := parseHostDriverVersion(tc.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := parseHostDriverVersion(tc.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := compareHostDriverVersions(a, b); got != tc.want {
			t.Errorf("compare(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// assertHostStatuses checks each result against want (absent: pass) and that results are
// sorted by GPU, host first, then in check order, once each.
func assertHostStatuses(t *testing.T, checks []CheckResult, want map[hostKey]Status) {
	t.Helper()
	seen := map[hostKey]bool{}
	for k, c := range checks {
		key := hostKey{c.GPU, c.Name}
		if seen[key] {
			t.Errorf("check %s of GPU %d reported twice", c.Name, c.GPU)
		}
		seen[key] = true
		st, ok := want[key]
		if !ok {
			st = StatusPass
		}
		if c.Status != st {
			t.Errorf("check %s of GPU %d: status %s, want %s (%s)", c.Name, c.GPU, c.Status, st, c.Message)
		}
		if c.Message == "" {
			t.Errorf("check %s of GPU %d has no message", c.Name, c.GPU)
		}
		if _, ok := hostCheckOrder[c.Name]; !ok {
			t.Errorf("unknown check name %q", c.Name)
		}
		if k > 0 {
			p := checks[k-1]
			if p.GPU > c.GPU || (p.GPU == c.GPU && hostCheckOrder[p.Name] >= hostCheckOrder[c.Name]) {
				t.Errorf("check %s of GPU %d comes after %s of GPU %d", c.Name, c.GPU, p.Name, p.GPU)
			}
		}
	}
	for k := range want {
		if !seen[k] {
			t.Errorf("no check %s of GPU %d", k.name, k.gpu)
		}
	}
}

func assertHostInventory(t *testing.T, gpus []GPU, want []int) {
	t.Helper()
	var got []int
	for _, g := range gpus {
		got = append(got, g.Index)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("inventory GPUs %v, want %v", got, want)
	}
}

// formatHostChecks writes what a person reads of a HostChecks run, for the goldens.
func formatHostChecks(gpus []GPU, checks []CheckResult, err error) string {
	var b strings.Builder
	b.WriteString("inventory:\n")
	for _, g := range gpus {
		fmt.Fprintf(&b, "  %d %s %q %d MiB bus %s driver %s CUDA %s\n",
			g.Index, g.UUID, g.Name, g.MemoryMiB, g.PCIBusID, g.DriverVersion, g.CUDAVersion)
	}
	b.WriteString("checks:\n")
	for _, c := range checks {
		who := "host"
		if c.GPU >= 0 {
			who = fmt.Sprintf("gpu%d", c.GPU)
		}
		fmt.Fprintf(&b, "  %-5s %-19s %-5s %s\n", who, c.Name, c.Status, c.Message)
		var oe []string
		if c.Observed != "" {
			oe = append(oe, fmt.Sprintf("observed %q", c.Observed))
		}
		if c.Expected != "" {
			oe = append(oe, fmt.Sprintf("expected %q", c.Expected))
		}
		if len(oe) > 0 {
			fmt.Fprintf(&b, "        %s\n", strings.Join(oe, ", "))
		}
	}
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
	}
	return b.String()
}

// checkHostGolden compares got with testdata/nvml/NAME.golden, or rewrites it with -update.
func checkHostGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "nvml", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./validate/ -run Host -update to create it)", err)
	}
	if got != string(want) {
		diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(string(want)), B: difflib.SplitLines(got),
			FromFile: path, ToFile: "got", Context: 2,
		})
		t.Errorf("output differs from %s (-update rewrites it):\n%s", path, diff)
	}
}
