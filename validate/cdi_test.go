package validate

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	mockserver "github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
	"tags.cncf.io/container-device-interface/specs-go"
)

const cdiTestdata = "testdata/cdi/nvidia.com-gpu.yaml"

// UUIDs of the two GPUs in the testdata spec.
const (
	testUUID0 = "GPU-4e5b6b3f-0d2e-7c1a-9f3e-2b8d1c6a7e01"
	testUUID1 = "GPU-9a1c2d3e-4f50-6172-8394-a5b6c7d8e902"
)

// loadTestdataSpec reads the testdata spec, a spec like `nvidia-ctk cdi generate --driver-root
// /usr/local/nvidia --device-name-strategy index --device-name-strategy uuid` writes for two
// H200s, with the CDI library's validation.
func loadTestdataSpec(t *testing.T) *specs.Spec {
	t.Helper()
	s, err := ReadCDISpec(cdiTestdata)
	if err != nil {
		t.Fatalf("ReadCDISpec(%s): %v", cdiTestdata, err)
	}
	return s
}

// materialize creates, under a new temporary root, a stand-in for every host path spec uses
// (device nodes and mount sources as empty files, hook executables as executable files) and
// points the spec's host paths at them, as nvcdi does for a dev root or driver root other than
// "/". skip, if given, names host paths not to create. It returns the root.
func materialize(t *testing.T, spec *specs.Spec, skip ...string) string {
	t.Helper()
	root := t.TempDir()
	mk := func(p string, mode os.FileMode) string {
		full := filepath.Join(root, p)
		if slices.Contains(skip, p) {
			return full
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, nil, mode); err != nil {
			t.Fatal(err)
		}
		return full
	}
	edits := func(e *specs.ContainerEdits) {
		for _, n := range e.DeviceNodes {
			p := n.HostPath
			if p == "" {
				p = n.Path
			}
			n.HostPath = mk(p, 0o666)
		}
		for _, m := range e.Mounts {
			m.HostPath = mk(m.HostPath, 0o644)
		}
		for _, h := range e.Hooks {
			h.Path = mk(h.Path, 0o755)
		}
	}
	edits(&spec.ContainerEdits)
	for i := range spec.Devices {
		edits(&spec.Devices[i].ContainerEdits)
	}
	return root
}

// codeSpec is a small valid spec built in code, with stand-ins for its device nodes under a
// temporary dev root.
func codeSpec(t *testing.T, gpus int) *specs.Spec {
	t.Helper()
	devRoot := t.TempDir()
	node := func(name string) *specs.DeviceNode {
		p := filepath.Join(devRoot, "dev", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			t.Fatal(err)
		}
		return &specs.DeviceNode{Path: "/dev/" + name, HostPath: p}
	}
	s := &specs.Spec{
		Version: "0.5.0",
		Kind:    "nvidia.com/gpu",
		ContainerEdits: specs.ContainerEdits{
			Env:         []string{"NVIDIA_VISIBLE_DEVICES=void"},
			DeviceNodes: []*specs.DeviceNode{node("nvidiactl"), node("nvidia-uvm")},
		},
	}
	var all specs.ContainerEdits
	for i := 0; i < gpus; i++ {
		n := node(fmt.Sprintf("nvidia%d", i))
		e := specs.ContainerEdits{DeviceNodes: []*specs.DeviceNode{n}}
		s.Devices = append(s.Devices,
			specs.Device{Name: fmt.Sprint(i), ContainerEdits: e},
			specs.Device{Name: fmt.Sprintf("GPU-%08d-0000-0000-0000-000000000000", i), ContainerEdits: e})
		all.DeviceNodes = append(all.DeviceNodes, n)
	}
	s.Devices = append(s.Devices, specs.Device{Name: "all", ContainerEdits: all})
	return s
}

func TestCDIValidateTestdata(t *testing.T) {
	s := loadTestdataSpec(t)
	if s.Kind != "nvidia.com/gpu" {
		t.Fatalf("kind %q", s.Kind)
	}
	var names []string
	for _, d := range s.Devices {
		names = append(names, d.Name)
	}
	if want := []string{"0", "1", testUUID0, testUUID1, "all"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("devices %q, want %q", names, want)
	}
	if v, err := specs.MinimumRequiredVersion(s); err != nil || v != s.Version {
		t.Fatalf("version %s, minimum %s (%v)", s.Version, v, err)
	}
	// On this machine (no /usr/local/nvidia, no /dev/nvidia0) the spec is not usable as is.
	if _, err := os.Stat("/usr/local/nvidia/lib64/libcuda.so.580.159.04"); err != nil {
		if err := ValidateCDISpec(s); err == nil {
			t.Fatal("ValidateCDISpec accepted a spec whose files do not exist here")
		} else if !strings.Contains(err.Error(), "does not exist on this machine") {
			t.Fatalf("unexpected error: %v", err)
		}
	}
	materialize(t, s)
	if err := ValidateCDISpec(s); err != nil {
		t.Fatalf("ValidateCDISpec(testdata with stand-ins): %v", err)
	}
}

// TestCDIH200Spec checks the spec GenerateCDISpec made on the H200 host with DriverRoot
// /usr/local/nvidia (testdata/cdi/h200-usr-local-nvidia.yaml).
func TestCDIH200Spec(t *testing.T) {
	s, err := ReadCDISpec("testdata/cdi/h200-usr-local-nvidia.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const u0, u1 = "GPU-1a2d7986-4b79-e1ed-c951-afa4653d7453", "GPU-d03122da-110f-344b-4c6f-e544b8718777"
	// The driver root is stripped from container paths: the libraries land in /lib64 and
	// nvidia-smi in /bin, and the ld cache hook adds /lib64.
	var mounts []string
	for _, m := range s.ContainerEdits.Mounts {
		mounts = append(mounts, m.HostPath+":"+m.ContainerPath)
	}
	for _, want := range []string{
		"/usr/local/nvidia/lib64/libcuda.so.580.159.04:/lib64/libcuda.so.580.159.04",
		"/usr/local/nvidia/lib64/libnvidia-ml.so.580.159.04:/lib64/libnvidia-ml.so.580.159.04",
		"/usr/local/nvidia/bin/nvidia-smi:/bin/nvidia-smi",
	} {
		if !slices.Contains(mounts, want) {
			t.Errorf("no mount %s", want)
		}
	}
	materialize(t, s)
	if err := ValidateCDISpec(s); err != nil {
		t.Fatal(err)
	}
	got, err := CDIDeviceNames(s, []string{u1, "0"})
	if err != nil || !reflect.DeepEqual(got, []string{"nvidia.com/gpu=" + u1, "nvidia.com/gpu=0"}) {
		t.Fatalf("CDIDeviceNames: %q, %v", got, err)
	}
	if _, err := CDIDeviceNames(s, []string{"2"}); err == nil || !strings.Contains(err.Error(), "which has 2: 0 ("+u0+"), 1 ("+u1+")") {
		t.Fatalf("CDIDeviceNames(2): %v", err)
	}
}

func TestCDIValidateCodeSpec(t *testing.T) {
	if err := ValidateCDISpec(codeSpec(t, 2)); err != nil {
		t.Fatal(err)
	}
	// Without HostPath, the node's Path is what must exist ("/" dev root).
	s := codeSpec(t, 1)
	s.ContainerEdits.DeviceNodes = append(s.ContainerEdits.DeviceNodes, &specs.DeviceNode{Path: "/dev/null"})
	if err := ValidateCDISpec(s); err != nil {
		t.Fatal(err)
	}
}

func TestCDIValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, s *specs.Spec)
		want   string
	}{
		{"kind without class", func(t *testing.T, s *specs.Spec) { s.Kind = "nvidia.com" }, `kind "nvidia.com"`},
		{"kind with bad vendor", func(t *testing.T, s *specs.Spec) { s.Kind = "nvidia com/gpu" }, "nvidia com"},
		{"kind with bad class", func(t *testing.T, s *specs.Spec) { s.Kind = "nvidia.com/gpu.x" }, "gpu.x"},
		{"empty kind", func(t *testing.T, s *specs.Spec) { s.Kind = "" }, "kind"},
		{"bad version", func(t *testing.T, s *specs.Spec) { s.Version = "9.9.9" }, "9.9.9"},
		{"duplicate device", func(t *testing.T, s *specs.Spec) {
			d := s.Devices[0]
			s.Devices = append(s.Devices, d)
		}, `"0"`},
		{"bad device name", func(t *testing.T, s *specs.Spec) { s.Devices[0].Name = "gpu 0" }, "gpu 0"},
		{"device without edits", func(t *testing.T, s *specs.Spec) { s.Devices[0].ContainerEdits = specs.ContainerEdits{} }, "empty device edits"},
		{"no all device", func(t *testing.T, s *specs.Spec) { s.Devices = s.Devices[:len(s.Devices)-1] }, `no device named "all"`},
		{"only all", func(t *testing.T, s *specs.Spec) { s.Devices = s.Devices[len(s.Devices)-1:] }, "no GPU devices"},
		{"no devices", func(t *testing.T, s *specs.Spec) { s.Devices = nil }, "no devices"},
		{"device node missing", func(t *testing.T, s *specs.Spec) {
			p := s.Devices[2].ContainerEdits.DeviceNodes[0].HostPath // nvidia1
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}, "nvidia1 (device \"1\") does not exist"},
		{"common device node missing", func(t *testing.T, s *specs.Spec) {
			s.ContainerEdits.DeviceNodes[0].HostPath += "-gone"
		}, "nvidiactl-gone (common edits) does not exist"},
		{"hook missing", func(t *testing.T, s *specs.Spec) {
			s.ContainerEdits.Hooks = []*specs.Hook{{HookName: "createContainer", Path: "/nonexistent/nvidia-cdi-hook", Args: []string{"nvidia-cdi-hook", "update-ldcache"}}}
		}, "hook executable /nonexistent/nvidia-cdi-hook"},
		{"hook not executable", func(t *testing.T, s *specs.Spec) {
			p := filepath.Join(t.TempDir(), "nvidia-cdi-hook")
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			s.ContainerEdits.Hooks = []*specs.Hook{{HookName: "createContainer", Path: p}}
		}, "is not an executable file"},
		{"bad hook name", func(t *testing.T, s *specs.Spec) {
			s.ContainerEdits.Hooks = []*specs.Hook{{HookName: "beforeEverything", Path: "/bin/true"}}
		}, "beforeEverything"},
		{"mount source missing", func(t *testing.T, s *specs.Spec) {
			s.ContainerEdits.Mounts = []*specs.Mount{{HostPath: "/nonexistent/libcuda.so.1", ContainerPath: "/usr/lib/libcuda.so.1", Options: []string{"ro", "nosuid", "nodev", "rbind", "rprivate"}}}
		}, "mount source /nonexistent/libcuda.so.1"},
		{"bad env", func(t *testing.T, s *specs.Spec) { s.ContainerEdits.Env = []string{"NOEQUALS"} }, "NOEQUALS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := codeSpec(t, 2)
			tc.mutate(t, s)
			err := ValidateCDISpec(s)
			if err == nil {
				t.Fatal("ValidateCDISpec accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	if err := ValidateCDISpec(nil); err == nil {
		t.Fatal("ValidateCDISpec(nil) accepted")
	}
}

// TestCDIValidateMissingNodeUnderFakeDevRoot is the testdata spec on a fake dev root that lacks
// /dev/nvidia1.
func TestCDIValidateMissingNodeUnderFakeDevRoot(t *testing.T) {
	s := loadTestdataSpec(t)
	materialize(t, s, "/dev/nvidia1")
	err := ValidateCDISpec(s)
	if err == nil {
		t.Fatal("accepted a spec whose /dev/nvidia1 is missing")
	}
	// Each missing path is named once, with the first device that uses it.
	if !strings.Contains(err.Error(), "/dev/nvidia1 (device \"1\") does not exist") || strings.Count(err.Error(), "nvidia1") != 1 {
		t.Fatalf("error does not name the missing node once: %v", err)
	}
	if strings.Contains(err.Error(), "nvidia0") {
		t.Fatalf("error names a node that exists: %v", err)
	}
}

func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteCDISpec(t *testing.T) {
	s := loadTestdataSpec(t)
	dir := filepath.Join(t.TempDir(), "etc", "cdi")
	path, err := WriteCDISpec(s, dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "nvidia.com-gpu.yaml"); path != want {
		t.Fatalf("path %s, want %s", path, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Byte for byte what the CDI library (and so nvidia-ctk) writes.
	y, err := yaml.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte("---\n"), y...); !bytes.Equal(data, want) {
		t.Fatalf("file is not the CDI library's YAML:\n%s", data)
	}
	back, err := ReadCDISpec(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Fatalf("read back %+v, wrote %+v", back, s)
	}
	if names := readDirNames(t, dir); !reflect.DeepEqual(names, []string{"nvidia.com-gpu.yaml"}) {
		t.Fatalf("dir holds %q", names)
	}

	// Overwrite with another spec.
	s2 := codeSpec(t, 1)
	if _, err := WriteCDISpec(s2, dir); err != nil {
		t.Fatal(err)
	}
	back, err = ReadCDISpec(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s2) {
		t.Fatalf("overwrite: read back %+v", back)
	}

	// Another kind gets its own file.
	s3 := codeSpec(t, 1)
	s3.Kind = "example.com/accel"
	p3, err := WriteCDISpec(s3, dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p3) != "example.com-accel.yaml" {
		t.Fatalf("path %s", p3)
	}
	if names := readDirNames(t, dir); !reflect.DeepEqual(names, []string{"example.com-accel.yaml", "nvidia.com-gpu.yaml"}) {
		t.Fatalf("dir holds %q", names)
	}
}

func TestWriteCDISpecInvalidLeavesOldFile(t *testing.T) {
	dir := t.TempDir()
	good := codeSpec(t, 1)
	path, err := WriteCDISpec(good, dir)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)

	bad := codeSpec(t, 1)
	bad.Devices = append(bad.Devices, bad.Devices[0]) // duplicate device name
	if _, err := WriteCDISpec(bad, dir); err == nil {
		t.Fatal("WriteCDISpec wrote a spec with a duplicate device")
	}
	bad.Kind = "nvidia.com"
	if _, err := WriteCDISpec(bad, dir); err == nil {
		t.Fatal("WriteCDISpec wrote a spec with a bad kind")
	}
	if _, err := WriteCDISpec(nil, dir); err == nil {
		t.Fatal("WriteCDISpec(nil) succeeded")
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("a failed write changed the file")
	}
	if names := readDirNames(t, dir); !reflect.DeepEqual(names, []string{"nvidia.com-gpu.yaml"}) {
		t.Fatalf("failed writes left %q", names)
	}
}

// TestWriteCDISpecConcurrent runs 8 writers of different specs to one file while a reader reads
// it: every read must be a whole, valid spec equal to one of the 8, and so must the end result;
// no temporary file may be left.
func TestWriteCDISpecConcurrent(t *testing.T) {
	dir := t.TempDir()
	const writers, rounds = 8, 25
	var want []*specs.Spec
	var wantYAML [][]byte
	for i := 0; i < writers; i++ {
		s := codeSpec(t, i%4+1)
		s.ContainerEdits.Env = append(s.ContainerEdits.Env, fmt.Sprintf("WRITER=%d", i))
		// Make the specs of different sizes so a torn file would show.
		for j := 0; j < i*20; j++ {
			s.ContainerEdits.Env = append(s.ContainerEdits.Env, fmt.Sprintf("PAD_%d=%s", j, strings.Repeat("x", 64)))
		}
		want = append(want, s)
		y, err := MarshalCDISpec(s)
		if err != nil {
			t.Fatal(err)
		}
		wantYAML = append(wantYAML, y)
	}
	path := filepath.Join(dir, "nvidia.com-gpu.yaml")
	matches := func(data []byte) bool {
		return slices.ContainsFunc(wantYAML, func(y []byte) bool { return bytes.Equal(y, data) })
	}

	stop := make(chan struct{})
	readerErr := make(chan error, 1)
	reads := 0
	go func() {
		defer close(readerErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				readerErr <- err
				return
			}
			reads++
			if !matches(data) {
				readerErr <- fmt.Errorf("read a file that is none of the specs written (%d bytes)", len(data))
				return
			}
			if _, err := ReadCDISpec(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				readerErr <- fmt.Errorf("read an invalid spec: %w", err)
				return
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				p, err := WriteCDISpec(want[i], dir)
				if err != nil {
					errs <- err
					return
				}
				if p != path {
					errs <- fmt.Errorf("path %s", p)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := <-readerErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d concurrent reads", reads)

	final, err := ReadCDISpec(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(want, func(s *specs.Spec) bool { return reflect.DeepEqual(s, final) }) {
		t.Fatal("the final file equals none of the specs written")
	}
	if names := readDirNames(t, dir); !reflect.DeepEqual(names, []string{"nvidia.com-gpu.yaml"}) {
		t.Fatalf("dir holds %q", names)
	}
}

func TestCDIDeviceNames(t *testing.T) {
	s := loadTestdataSpec(t)
	for _, tc := range []struct {
		name      string
		selection []string
		want      []string
	}{
		{"nil is all", nil, []string{"nvidia.com/gpu=all"}},
		{"empty is all", []string{}, []string{"nvidia.com/gpu=all"}},
		{"all", []string{"all"}, []string{"nvidia.com/gpu=all"}},
		{"indices", []string{"0", "1"}, []string{"nvidia.com/gpu=0", "nvidia.com/gpu=1"}},
		{"order kept", []string{"1", "0"}, []string{"nvidia.com/gpu=1", "nvidia.com/gpu=0"}},
		{"one index", []string{"1"}, []string{"nvidia.com/gpu=1"}},
		{"uuid", []string{testUUID1}, []string{"nvidia.com/gpu=" + testUUID1}},
		{"uuid any case", []string{strings.ToUpper(testUUID0)}, []string{"nvidia.com/gpu=" + testUUID0}},
		{"index and uuid", []string{"0", testUUID1}, []string{"nvidia.com/gpu=0", "nvidia.com/gpu=" + testUUID1}},
		{"same GPU twice", []string{"0", testUUID0}, []string{"nvidia.com/gpu=0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CDIDeviceNames(s, tc.selection)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name      string
		selection []string
		want      []string
	}{
		{"unknown index", []string{"0", "3"}, []string{`GPU "3" is not in the CDI spec nvidia.com/gpu`, "which has 2: 0 (" + testUUID0 + "), 1 (" + testUUID1 + ")"}},
		{"unknown uuid", []string{"GPU-00000000-0000-0000-0000-000000000000"}, []string{`GPU "GPU-00000000-0000-0000-0000-000000000000" is not in`, testUUID0, testUUID1}},
		{"two unknown", []string{"7", "1", "MIG-aaaa"}, []string{`GPUs "7", "MIG-aaaa" are not in`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CDIDeviceNames(s, tc.selection)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}

	// GPUs are listed in index order, 10 after 9.
	many := codeSpec(t, 11)
	if _, err := CDIDeviceNames(many, []string{"11"}); err == nil || !strings.Contains(err.Error(), "which has 11: 0 (GPU-00000000-0000-0000-0000-000000000000), 1 (") ||
		!strings.Contains(err.Error(), "9 (GPU-00000009-0000-0000-0000-000000000000), 10 (GPU-00000010-0000-0000-0000-000000000000)") {
		t.Fatalf("11 GPUs: %v", err)
	}

	// A spec without "all" cannot give all GPUs; one with another kind names its kind.
	noAll := codeSpec(t, 2)
	noAll.Devices = noAll.Devices[:len(noAll.Devices)-1]
	if _, err := CDIDeviceNames(noAll, nil); err == nil {
		t.Fatal("all from a spec without an all device")
	}
	other := codeSpec(t, 2)
	other.Kind = "example.com/accel"
	got, err := CDIDeviceNames(other, []string{"1"})
	if err != nil || !reflect.DeepEqual(got, []string{"example.com/accel=1"}) {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := CDIDeviceNames(nil, nil); err == nil {
		t.Fatal("nil spec")
	}
}

func touch(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, mode); err != nil {
		t.Fatal(err)
	}
}

func TestCDIFindDriverRoot(t *testing.T) {
	sys := t.TempDir()
	if _, err := findDriverRootIn(sys); err == nil || !strings.Contains(err.Error(), "/usr/local/nvidia") {
		t.Fatalf("empty system: %v", err)
	}
	touch(t, filepath.Join(sys, "run/nvidia/driver/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"), 0o644)
	if got, err := findDriverRootIn(sys); err != nil || got != filepath.Join(sys, "run/nvidia/driver") {
		t.Fatalf("driver container: %q, %v", got, err)
	}
	touch(t, filepath.Join(sys, "usr/local/nvidia/lib64/libnvidia-ml.so.1"), 0o644)
	if got, err := findDriverRootIn(sys); err != nil || got != filepath.Join(sys, "usr/local/nvidia") {
		t.Fatalf("/usr/local/nvidia: %q, %v", got, err)
	}
	// A dangling symlink counts: the driver's links are relative to its own root.
	if err := os.MkdirAll(filepath.Join(sys, "usr/lib64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("libnvidia-ml.so.580.159.04", filepath.Join(sys, "usr/lib64/libnvidia-ml.so.1")); err != nil {
		t.Fatal(err)
	}
	if got, err := findDriverRootIn(sys); err != nil || got != sys {
		t.Fatalf("host driver: %q, %v", got, err)
	}
}

// fakeHook returns an executable stand-in for nvidia-cdi-hook.
func fakeHook(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "usr", "bin", "nvidia-cdi-hook")
	touch(t, p, 0o755)
	return p
}

// TestGenerateCDISpecNoDriver checks that GenerateCDISpec fails cleanly, naming the problem,
// when there is no driver.
func TestGenerateCDISpecNoDriver(t *testing.T) {
	root := t.TempDir()
	_, err := GenerateCDISpec(CDIOptions{DriverRoot: root, NVIDIACDIHookPath: fakeHook(t)})
	if err == nil {
		t.Fatal("GenerateCDISpec succeeded on an empty driver root")
	}
	if !strings.Contains(err.Error(), root) {
		t.Fatalf("error does not name the driver root: %v", err)
	}
	t.Logf("empty driver root: %v", err)

	if _, ferr := FindDriverRoot(); ferr != nil {
		_, err := GenerateCDISpec(CDIOptions{NVIDIACDIHookPath: fakeHook(t)})
		if err == nil || !strings.Contains(err.Error(), "no NVIDIA driver found") {
			t.Fatalf("no driver on this machine: %v", err)
		}
		t.Logf("no driver: %v", err)
	}

	if _, err := GenerateCDISpec(CDIOptions{DriverRoot: filepath.Join(root, "missing"), NVIDIACDIHookPath: fakeHook(t)}); err == nil || !strings.Contains(err.Error(), "is not a directory") {
		t.Fatalf("missing driver root: %v", err)
	}
	if _, err := GenerateCDISpec(CDIOptions{DriverRoot: root, Vendor: "nvidia com"}); err == nil || !strings.Contains(err.Error(), "vendor") {
		t.Fatalf("bad vendor: %v", err)
	}
	if _, err := GenerateCDISpec(CDIOptions{DriverRoot: root, NVIDIACDIHookPath: "bin/nvidia-cdi-hook"}); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Fatalf("relative hook: %v", err)
	}
	if findCDIHook(root) == "" {
		if _, err := GenerateCDISpec(CDIOptions{DriverRoot: root}); err == nil || !strings.Contains(err.Error(), "nvidia-cdi-hook not found") {
			t.Fatalf("no hook: %v", err)
		}
	}
}

const simDriverVersion = "550.54.15" // what go-nvml's simulated DGX H200 reports

// simDriverRoot lays out a driver root like /run/nvidia/driver for the simulated GPUs: device
// nodes (real char devices, made with mknod: nvcdi only takes char devices), the driver's
// versioned libraries and nvidia-smi. It skips the test where mknod is not allowed.
func simDriverRoot(t *testing.T, gpus int) string {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]int{"nvidiactl": 255, "nvidia-uvm": 0, "nvidia-uvm-tools": 1}
	for i := 0; i < gpus; i++ {
		nodes[fmt.Sprintf("nvidia%d", i)] = i
	}
	for name, minor := range nodes {
		major := uint32(195)
		if strings.HasPrefix(name, "nvidia-uvm") {
			major = 510
		}
		err := unix.Mknod(filepath.Join(root, "dev", name), unix.S_IFCHR|0o666, int(unix.Mkdev(major, uint32(minor))))
		if err != nil {
			t.Skipf("cannot make device nodes (mknod: %v); run as root to test generation with simulated GPUs", err)
		}
	}
	lib := filepath.Join(root, "usr", "lib", "x86_64-linux-gnu")
	for _, l := range []string{"libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so"} {
		touch(t, filepath.Join(lib, l+"."+simDriverVersion), 0o755)
		if err := os.Symlink(l+"."+simDriverVersion, filepath.Join(lib, l+".1")); err != nil {
			t.Fatal(err)
		}
	}
	touch(t, filepath.Join(root, "usr", "bin", "nvidia-smi"), 0o755)
	return root
}

func simNVML(n int) *mockserver.Server {
	server := dgxh200.NewWithGPUs(gpus.Multiple(n, gpus.H200_SXM5_141GB)...)
	for _, d := range server.Devices {
		// Not implemented by the simulator (nvidia-ctk's own tests do the same).
		d.(*mockserver.Device).GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 0, nvml.SUCCESS }
	}
	return server
}

// TestGenerateCDISpecSimulated generates a spec with nvcdi for two simulated H200s (go-nvml's
// DGX H200 simulator) on a fake driver root, and checks what a check run needs from it.
func TestGenerateCDISpecSimulated(t *testing.T) {
	root := simDriverRoot(t, 2)
	server := simNVML(2)
	hook := fakeHook(t)
	var logs []string
	spec, err := GenerateCDISpec(CDIOptions{
		DriverRoot:        root,
		NVIDIACDIHookPath: hook,
		Logf:              func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) },
		nvmllib:           server,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range logs {
		t.Log(l)
	}
	if testing.Verbose() {
		y, _ := MarshalCDISpec(spec)
		t.Logf("generated spec:\n%s", y)
	}
	if spec.Kind != "nvidia.com/gpu" {
		t.Fatalf("kind %q", spec.Kind)
	}
	uuid0, _ := server.Devices[0].GetUUID()
	uuid1, _ := server.Devices[1].GetUUID()
	var names []string
	for _, d := range spec.Devices {
		names = append(names, d.Name)
	}
	for _, n := range []string{"0", "1", uuid0, uuid1, "all"} {
		if !slices.Contains(names, n) {
			t.Errorf("no device %q in %q", n, names)
		}
	}
	// The dev root defaulted to the driver root, which has dev/nvidiactl.
	dev := func(d *specs.Device) []string {
		var out []string
		for _, n := range d.ContainerEdits.DeviceNodes {
			out = append(out, n.Path+"="+n.HostPath)
		}
		return out
	}
	for i := range spec.Devices {
		d := &spec.Devices[i]
		if d.Name == "1" || d.Name == uuid1 {
			if want := []string{"/dev/nvidia1=" + filepath.Join(root, "dev/nvidia1")}; !reflect.DeepEqual(dev(d), want) {
				t.Errorf("device %s nodes %q, want %q", d.Name, dev(d), want)
			}
		}
	}
	var mounts, hooks []string
	for _, m := range spec.ContainerEdits.Mounts {
		mounts = append(mounts, m.ContainerPath)
	}
	for _, h := range spec.ContainerEdits.Hooks {
		if h.Path != hook {
			t.Errorf("hook path %s, want %s", h.Path, hook)
		}
		hooks = append(hooks, h.Args[1])
	}
	for _, m := range []string{
		"/usr/lib/x86_64-linux-gnu/libcuda.so." + simDriverVersion,
		"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so." + simDriverVersion,
		"/usr/bin/nvidia-smi",
	} {
		if !slices.Contains(mounts, m) {
			t.Errorf("no mount of %s in %q", m, mounts)
		}
	}
	for _, h := range []string{"create-symlinks", "update-ldcache"} {
		if !slices.Contains(hooks, h) {
			t.Errorf("no %s hook in %q", h, hooks)
		}
	}
	if err := ValidateCDISpec(spec); err != nil {
		t.Fatal(err)
	}
	got, err := CDIDeviceNames(spec, []string{"1", uuid0})
	if err != nil || !reflect.DeepEqual(got, []string{"nvidia.com/gpu=1", "nvidia.com/gpu=" + uuid0}) {
		t.Fatalf("CDIDeviceNames: %q, %v", got, err)
	}
	if _, err := CDIDeviceNames(spec, []string{"2"}); err == nil || !strings.Contains(err.Error(), "which has 2: 0 ("+uuid0+"), 1 ("+uuid1+")") {
		t.Fatalf("CDIDeviceNames(2): %v", err)
	}
	path, err := WriteCDISpec(spec, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	back, err := ReadCDISpec(path)
	if err != nil || !reflect.DeepEqual(back, spec) {
		t.Fatalf("read back: %v", err)
	}

	// A custom kind.
	spec, err = GenerateCDISpec(CDIOptions{DriverRoot: root, NVIDIACDIHookPath: hook, Vendor: "example.com", Class: "accel", nvmllib: simNVML(2)})
	if err != nil || spec.Kind != "example.com/accel" {
		t.Fatalf("custom kind: %v", err)
	}
}

// TestGenerateCDISpecSimulatedNoGPUs: NVML works but reports no GPUs.
func TestGenerateCDISpecSimulatedNoGPUs(t *testing.T) {
	root := simDriverRoot(t, 0)
	_, err := GenerateCDISpec(CDIOptions{DriverRoot: root, NVIDIACDIHookPath: fakeHook(t), nvmllib: simNVML(0)})
	if err == nil {
		t.Fatal("generated a spec without GPUs")
	}
	t.Log(err)
}

// TestGenerateCDISpecRealGPU generates the spec for this machine's GPUs with the real NVML.
// It is skipped where there is no NVIDIA driver. GPUFORGE_CDI_DRIVER_ROOT sets the driver root
// (default: FindDriverRoot); GPUFORGE_CDI_OUT names a directory to write the spec to.
func TestGenerateCDISpecRealGPU(t *testing.T) {
	root := os.Getenv("GPUFORGE_CDI_DRIVER_ROOT")
	if root == "" {
		r, err := FindDriverRoot()
		if err != nil {
			t.Skipf("no NVIDIA driver: %v", err)
		}
		root = r
	}
	if _, err := os.Stat("/dev/nvidiactl"); err != nil {
		if _, err := os.Stat(filepath.Join(root, "dev/nvidiactl")); err != nil {
			t.Skipf("driver libraries under %s but no /dev/nvidiactl", root)
		}
	}
	hook := findCDIHook(root)
	if hook == "" {
		// The spec is only generated here, not run: a stand-in will do.
		hook = fakeHook(t)
		t.Logf("no nvidia-cdi-hook on this machine; using a stand-in at %s", hook)
	}
	var warnings int
	spec, err := GenerateCDISpec(CDIOptions{DriverRoot: root, NVIDIACDIHookPath: hook, Logf: func(string, ...any) { warnings++ }})
	if err != nil {
		t.Fatal(err)
	}
	y, _ := MarshalCDISpec(spec)
	t.Logf("driver root %s, %d nvcdi warnings, spec:\n%s", root, warnings, y)
	for _, want := range []string{"libcuda.so.", "libnvidia-ml.so.", "nvidia-smi", "/dev/nvidiactl", "/dev/nvidia0"} {
		if !bytes.Contains(y, []byte(want)) {
			t.Errorf("spec has no %s", want)
		}
	}
	names, err := CDIDeviceNames(spec, nil)
	if err != nil || !reflect.DeepEqual(names, []string{"nvidia.com/gpu=all"}) {
		t.Fatalf("CDIDeviceNames: %q, %v", names, err)
	}
	if _, err := CDIDeviceNames(spec, []string{"0"}); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("GPUFORGE_CDI_OUT"); dir != "" {
		p, err := WriteCDISpec(spec, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", p)
	}
}
