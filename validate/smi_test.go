package validate

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// smiGoldenFile compares got with the golden file at path, or rewrites it under -update.
func smiGoldenFile(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./validate/ -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output (-want +got):\n%s", path, cmp.Diff(string(want), string(got)))
	}
}

// smiGoldenJSON encodes v the way the golden files hold it.
func smiGoldenJSON(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func smiErrText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func readSMISample(t *testing.T, name string) []GPU {
	t.Helper()
	out, err := os.ReadFile(filepath.Join("testdata", "smi", name))
	if err != nil {
		t.Fatal(err)
	}
	gpus, err := ParseNvidiaSMI(out)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return gpus
}

func TestSMIArgs(t *testing.T) {
	want := []string{"nvidia-smi", "--query-gpu=index,uuid,name,memory.total,driver_version,pci.bus_id", "--format=csv,noheader,nounits"}
	if diff := cmp.Diff(want, NvidiaSMIArgs); diff != "" {
		t.Errorf("NvidiaSMIArgs (-want +got):\n%s", diff)
	}
	// The parser reads the fields in the order the query names them.
	fields := strings.Split(strings.TrimPrefix(NvidiaSMIArgs[1], "--query-gpu="), ",")
	if len(fields) != smiFields {
		t.Errorf("query has %d fields, the parser reads %d", len(fields), smiFields)
	}
}

// TestSMIParseGolden parses every sample under testdata/smi and compares the GPUs and error
// with NAME.golden.json.
func TestSMIParseGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "smi", "*"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, in := range inputs {
		ext := filepath.Ext(in)
		if ext != ".csv" && ext != ".txt" {
			continue
		}
		n++
		t.Run(filepath.Base(in), func(t *testing.T) {
			out, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			gpus, perr := ParseNvidiaSMI(out)
			got := struct {
				GPUs  []GPU  `json:"gpus"`
				Error string `json:"error,omitempty"`
			}{gpus, smiErrText(perr)}
			smiGoldenFile(t, strings.TrimSuffix(in, ext)+".golden.json", smiGoldenJSON(t, got))
		})
	}
	if n < 10 {
		t.Errorf("only %d samples under testdata/smi", n)
	}
}

func TestSMIParseSamples(t *testing.T) {
	h200 := readSMISample(t, "h200x2.csv")
	want := []GPU{
		{Index: 0, UUID: "GPU-e3b83999-e8a3-1e3f-0519-c7c0dcb4350f", Name: "NVIDIA H200", MemoryMiB: 143771, DriverVersion: "580.159.04", PCIBusID: "00000000:00:06.0"},
		{Index: 1, UUID: "GPU-e5d68d57-6c6c-7af2-e338-66ff724880a5", Name: "NVIDIA H200", MemoryMiB: 143771, DriverVersion: "580.159.04", PCIBusID: "00000000:00:07.0"},
	}
	if diff := cmp.Diff(want, h200); diff != "" {
		t.Errorf("h200x2.csv (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, readSMISample(t, "h200x2_header_units.csv")); diff != "" {
		t.Errorf("the header-and-units form parses differently (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want[:1], readSMISample(t, "h200x1.csv")); diff != "" {
		t.Errorf("h200x1.csv (-want +got):\n%s", diff)
	}
	p100 := readSMISample(t, "p100x4.csv")
	if len(p100) != 4 || p100[3].Name != "Tesla P100-SXM2-16GB" || p100[3].PCIBusID != "00000000:0B:00.0" || p100[2].Index != 2 {
		t.Errorf("p100x4.csv: %+v", p100)
	}
	na := readSMISample(t, "na_fields.csv")
	if len(na) != 2 || na[0].MemoryMiB != 0 || na[0].DriverVersion != "" || na[0].PCIBusID != "" ||
		na[0].Name != "NVIDIA A100-SXM4-40GB" || na[1].MemoryMiB != 40960 || na[1].Index != 1 {
		t.Errorf("na_fields.csv: %+v", na)
	}
}

func TestSMIParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		gpus     int
		err      string // substring; "" = no error
	}{
		{"empty", "", 0, "printed nothing"},
		{"blank lines", "\n \n\r\n", 0, "printed nothing"},
		{"no devices", "No devices were found\n", 0, ""},
		{"driver failed", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", 0, "couldn't communicate"},
		{"short line", "0, GPU-a, NVIDIA H200, 1, 580.1\n", 0, "5 fields, want 6"},
		{"bad index", "-1, GPU-a, NVIDIA H200, 1, 580.1, 0:0\n", 0, `GPU index "-1"`},
		{"one bad of two", "0, GPU-a, NVIDIA H200, 1, 580.1, 0:0\n1, GPU-b, NVIDIA H200, 1 GiB, 580.1, 0:1\n", 1, `line 2: GPU 1 memory "1 GiB"`},
		{"duplicate", "0, GPU-a, NVIDIA H200, 1, 580.1, 0:0\n0, GPU-b, NVIDIA H200, 1, 580.1, 0:1\n", 1, "GPU index 0 already on line 1"},
		{"no name", "0, GPU-a, [N/A], 1, 580.1, 0:0\n", 0, "GPU 0 has no name"},
		{"long garbage", strings.Repeat("x", 500), 0, "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gpus, err := ParseNvidiaSMI([]byte(tc.in))
			if len(gpus) != tc.gpus {
				t.Errorf("%d GPUs, want %d: %+v", len(gpus), tc.gpus, gpus)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

// TestSMICheckGolden runs NvidiaSMICheck on the samples with several expectations and compares
// every result, messages included, with testdata/smi/checks.golden.json.
func TestSMICheckGolden(t *testing.T) {
	a100 := []GPU{{Index: 0, Name: "NVIDIA A100-SXM4-80GB", DriverVersion: "550.54.15"}}
	mixed := []GPU{{Index: 0, Name: "NVIDIA H200", DriverVersion: "580.159.04"}, {Index: 1, Name: "NVIDIA H200", DriverVersion: "570.86.15"}}
	cases := []struct {
		Name        string `json:"name"`
		gpus        []GPU
		ExpectCount int           `json:"expect_count"`
		ExpectModel string        `json:"expect_model"`
		MinDriver   string        `json:"min_driver"`
		Results     []CheckResult `json:"results"`
	}{
		{Name: "h200x1 as expected", gpus: readSMISample(t, "h200x1.csv"), ExpectCount: 1, ExpectModel: "H200", MinDriver: "550"},
		{Name: "h200x2 expected 1", gpus: readSMISample(t, "h200x2.csv"), ExpectCount: 1, ExpectModel: "h200", MinDriver: "580.159.04"},
		{Name: "h200x2 any count, wrong model, old driver", gpus: readSMISample(t, "h200x2.csv"), ExpectModel: "A100", MinDriver: "590"},
		{Name: "h200x2 nothing expected", gpus: readSMISample(t, "h200x2.csv")},
		{Name: "p100x4 seed recipe", gpus: readSMISample(t, "p100x4.csv"), ExpectCount: 4, ExpectModel: "Tesla P100", MinDriver: "384.81"},
		{Name: "p100x4 driver too old", gpus: readSMISample(t, "p100x4.csv"), ExpectCount: 4, ExpectModel: "P100-SXM2", MinDriver: "R390.30"},
		{Name: "na_fields driver missing for one GPU", gpus: readSMISample(t, "na_fields.csv"), ExpectCount: 2, ExpectModel: "A100", MinDriver: "535"},
		{Name: "no GPUs", gpus: nil, ExpectCount: 0, ExpectModel: "H200", MinDriver: "550"},
		{Name: "no GPUs expected 8", gpus: nil, ExpectCount: 8},
		{Name: "A10 does not match A100", gpus: a100, ExpectCount: 1, ExpectModel: "A10"},
		{Name: "A100 80GB does not match A100-SXM4-80GB", gpus: a100, ExpectModel: "A100 80GB"},
		{Name: "A100-SXM4 matches", gpus: a100, ExpectModel: "a100-sxm4", MinDriver: "550.54.15"},
		{Name: "invalid minimum driver", gpus: a100, MinDriver: "5x0"},
		{Name: "negative count", gpus: a100, ExpectCount: -1},
		{Name: "different drivers", gpus: mixed, ExpectCount: 2, MinDriver: "570"},
	}
	for i := range cases {
		cases[i].Results = NvidiaSMICheck(cases[i].gpus, cases[i].ExpectCount, cases[i].ExpectModel, cases[i].MinDriver)
	}
	smiGoldenFile(t, filepath.Join("testdata", "smi", "checks.golden.json"), smiGoldenJSON(t, cases))

	// The statuses, stated here too so that a wrong -update does not go unnoticed.
	want := map[string]string{
		"h200x1 as expected":                        "pass pass pass",
		"h200x2 expected 1":                         "fail pass pass pass",
		"h200x2 any count, wrong model, old driver": "pass fail fail fail",
		"h200x2 nothing expected":                   "pass pass pass pass",
		"p100x4 seed recipe":                        "pass pass pass pass pass pass",
		"p100x4 driver too old":                     "pass fail pass pass pass pass",
		"na_fields driver missing for one GPU":      "pass fail pass pass",
		"no GPUs":                                   "fail skip skip",
		"no GPUs expected 8":                        "fail skip skip",
		"A10 does not match A100":                   "pass pass fail",
		"A100 80GB does not match A100-SXM4-80GB":   "pass pass fail",
		"A100-SXM4 matches":                         "pass pass pass",
		"invalid minimum driver":                    "pass error pass",
		"negative count":                            "error pass pass",
		"different drivers":                         "pass fail pass pass",
	}
	for _, c := range cases {
		var st []string
		for _, r := range c.Results {
			st = append(st, string(r.Status))
		}
		if got := strings.Join(st, " "); got != want[c.Name] {
			t.Errorf("%s: statuses %q, want %q", c.Name, got, want[c.Name])
		}
		for _, r := range c.Results {
			if r.Message == "" {
				t.Errorf("%s: %s has no message", c.Name, r.Name)
			}
		}
	}
}

func TestSMIModelMatches(t *testing.T) {
	for _, tc := range []struct {
		name, model string
		want        bool
	}{
		{"NVIDIA H200", "H200", true},
		{"NVIDIA H200", "nvidia h200", true},
		{"NVIDIA H200 NVL", "H200", true},
		{"NVIDIA GH200 480GB", "H200", false},
		{"NVIDIA A100-SXM4-80GB", "A10", false},
		{"NVIDIA A10", "A10", true},
		{"NVIDIA A10G", "A10", false},
		{"NVIDIA A100-SXM4-80GB", "A100", true},
		{"NVIDIA A100-SXM4-80GB", "SXM4-80GB", true},
		{"NVIDIA A100-SXM4-80GB", "80G", false},
		{"Tesla P100-SXM2-16GB", "P100", true},
		{"Tesla P100-SXM2-16GB", "tesla p100", true},
		{"NVIDIA H100 80GB HBM3", "H100 80GB", true},
		{"NVIDIA H100 80GB HBM3", "H10", false},
		{"NVIDIA A100-PCIE-40GB", "-pcie-", true},
		{"NVIDIA H100 PCIe", "H100 PCIe", true},
		{"NVIDIA L4", "L4", true},
		{"NVIDIA L40S", "L4", false},
		{"anything", "", true},
		{"", "H200", false},
	} {
		if got := smiModelMatches(tc.name, tc.model); got != tc.want {
			t.Errorf("smiModelMatches(%q, %q) = %v, want %v", tc.name, tc.model, got, tc.want)
		}
	}
}

func TestSMIVersionCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"580.159.04", "550.54.15", 1},
		{"550.54.15", "550.54.15", 0},
		{"550.54.14", "550.54.15", -1},
		{"550.100", "550.54.15", 1}, // numeric, not lexical
		{"535", "535.0.0", 0},
		{"535.1", "535", 1},
		{"R535", "535.104.05", -1},
		{"384.81", "384.81", 0},
		{"1000.1", "999.99.99", 1},
	} {
		a, err := parseSMIVersion(tc.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := parseSMIVersion(tc.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := compareSMIVersions(a, b); got != tc.want {
			t.Errorf("compare(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	for _, bad := range []string{"", "5x0", "550..1", "550.", ".550", "v550", "550.-1", "550 .1"} {
		if v, err := parseSMIVersion(bad); err == nil {
			t.Errorf("parseSMIVersion(%q) = %v, want an error", bad, v)
		}
	}
}
