package validate

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// NvidiaSMIArgs is the command run inside the image under test: one CSV line per GPU with the
// fields ParseNvidiaSMI reads, in this order. It runs with the GPUs injected through CDI, so it
// proves that the runtime put the driver's user-space libraries and device nodes into the
// container.
var NvidiaSMIArgs = []string{
	"nvidia-smi",
	"--query-gpu=index,uuid,name,memory.total,driver_version,pci.bus_id",
	"--format=csv,noheader,nounits",
}

// NvidiaSMIListArgs lists the GPUs in nvidia-smi's human form ("GPU 0: NVIDIA H200 (UUID:
// GPU-…)"), for logs; nothing parses it.
var NvidiaSMIListArgs = []string{"nvidia-smi", "-L"}

// Names of the nvidia-smi checks, in the order NvidiaSMICheck reports them: the count and the
// driver for the whole host (GPU -1), then the model of each GPU.
const (
	SMICheckCount  = "nvidia_smi_gpu_count"
	SMICheckDriver = "nvidia_smi_driver_version"
	SMICheckModel  = "nvidia_smi_model"
)

// smiFields is the number of comma-separated fields NvidiaSMIArgs asks for.
const smiFields = 6

// ParseNvidiaSMI reads the output of NvidiaSMIArgs. It tolerates spaces around fields, blank
// lines, CRLF line ends, a header line (from --format=csv without noheader), units on the
// memory field ("143771 MiB") and values nvidia-smi could not read ("[N/A]", "[Not Supported]",
// "N/A"), which leave the field empty (0 for the memory).
//
// Lines that are not GPU records are errors; the GPUs of the good lines are returned with the
// error, so a caller can report both. Output that is only nvidia-smi's "No devices were found"
// is no error: it returns no GPUs, and the count check fails. Any other output without a GPU
// record (nvidia-smi's "couldn't communicate with the NVIDIA driver", a shell's "not found") is
// returned in the error.
func ParseNvidiaSMI(out []byte) ([]GPU, error) {
	var gpus []GPU
	var problems []string
	seen := map[int]int{} // index -> line
	lines := strings.Split(string(bytes.ReplaceAll(out, []byte("\r\n"), []byte("\n"))), "\n")
	nonEmpty, recordLike := 0, 0
	for n, raw := range lines {
		line := strings.TrimSpace(raw)
		if line == "" {
			continue
		}
		nonEmpty++
		lineNo := n + 1
		if strings.EqualFold(line, "No devices were found") {
			continue
		}
		fields := strings.Split(line, ",")
		if len(fields) > 1 {
			recordLike++
		}
		for i := range fields {
			fields[i] = strings.TrimSpace(fields[i])
		}
		if len(fields) == smiFields && strings.EqualFold(fields[0], "index") {
			continue // header line
		}
		g, err := parseSMIRecord(fields)
		if err != nil {
			problems = append(problems, fmt.Sprintf("line %d: %v: %q", lineNo, err, smiClip(line)))
			continue
		}
		if prev, dup := seen[g.Index]; dup {
			problems = append(problems, fmt.Sprintf("line %d: GPU index %d already on line %d", lineNo, g.Index, prev))
			continue
		}
		seen[g.Index] = lineNo
		gpus = append(gpus, g)
	}
	switch {
	case nonEmpty == 0:
		return nil, fmt.Errorf("nvidia-smi printed nothing")
	case len(problems) == 0:
		return gpus, nil
	case len(gpus) == 0 && recordLike == 0:
		// Nothing at all looked like a record: say what nvidia-smi said instead.
		return nil, fmt.Errorf("nvidia-smi output has no GPU records: %s", smiClip(strings.TrimSpace(string(out))))
	}
	return gpus, fmt.Errorf("nvidia-smi output: %s", strings.Join(problems, "; "))
}

// parseSMIRecord reads one line's fields: index, uuid, name, memory.total, driver_version,
// pci.bus_id.
func parseSMIRecord(f []string) (GPU, error) {
	if len(f) != smiFields {
		return GPU{}, fmt.Errorf("%d fields, want %d", len(f), smiFields)
	}
	idx, err := strconv.Atoi(f[0])
	if err != nil || idx < 0 {
		return GPU{}, fmt.Errorf("GPU index %q is not a number", f[0])
	}
	g := GPU{
		Index:         idx,
		UUID:          smiValue(f[1]),
		Name:          smiValue(f[2]),
		DriverVersion: smiValue(f[4]),
		PCIBusID:      smiValue(f[5]),
	}
	if g.Name == "" {
		return GPU{}, fmt.Errorf("GPU %d has no name", idx)
	}
	if mem := smiValue(f[3]); mem != "" {
		mem = strings.TrimSpace(strings.TrimSuffix(mem, "MiB"))
		v, err := strconv.ParseInt(mem, 10, 64)
		if err != nil || v < 0 {
			return GPU{}, fmt.Errorf("GPU %d memory %q is not a number of MiB", idx, f[3])
		}
		g.MemoryMiB = v
	}
	return g, nil
}

// smiValue returns "" for nvidia-smi's placeholders of values it could not read.
func smiValue(s string) string {
	s = strings.TrimSpace(s)
	if s == "N/A" || (strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]")) {
		return ""
	}
	return s
}

// smiClip shortens text quoted in an error message.
func smiClip(s string) string {
	const limit = 200
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}

// NvidiaSMICheck judges what nvidia-smi reported inside the image:
//
//   - nvidia_smi_gpu_count: exactly expectCount GPUs; 0 accepts any number from 1.
//   - nvidia_smi_driver_version: the driver is minDriver or newer, compared numerically
//     component by component ("580.159.04" >= "550.54.15"; "535" means 535.0.0), a missing
//     component counting as 0. minDriver "" only reports the version.
//   - nvidia_smi_model, one per GPU: expectModel appears in the GPU's name, ignoring case and
//     as a whole word or words, so "H200" matches "NVIDIA H200" but "A10" does not match
//     "NVIDIA A100-SXM4-80GB". expectModel "" only reports the name.
//
// With no GPUs, the count check fails and the others are skipped.
func NvidiaSMICheck(gpus []GPU, expectCount int, expectModel, minDriver string) []CheckResult {
	var out []CheckResult
	out = append(out, smiCountCheck(gpus, expectCount))
	out = append(out, smiDriverCheck(gpus, minDriver))
	if len(gpus) == 0 {
		out = append(out, CheckResult{Name: SMICheckModel, Status: StatusSkip, GPU: -1,
			Message:  "nvidia-smi lists no GPUs, so there is no model to check",
			Expected: smiModelExpected(expectModel)})
		return out
	}
	for _, g := range gpus {
		c := CheckResult{Name: SMICheckModel, GPU: g.Index, Observed: g.Name, Expected: smiModelExpected(expectModel)}
		switch {
		case expectModel == "":
			c.Status, c.Message = StatusPass, fmt.Sprintf("GPU %d is %s", g.Index, g.Name)
		case smiModelMatches(g.Name, expectModel):
			c.Status, c.Message = StatusPass, fmt.Sprintf("GPU %d is %s, which matches %q", g.Index, g.Name, expectModel)
		default:
			c.Status, c.Message = StatusFail, fmt.Sprintf("GPU %d is %s, which does not match %q", g.Index, g.Name, expectModel)
		}
		out = append(out, c)
	}
	return out
}

func smiModelExpected(model string) string {
	if model == "" {
		return ""
	}
	return fmt.Sprintf("name matches %q as whole words", model)
}

func smiCountCheck(gpus []GPU, expect int) CheckResult {
	n := len(gpus)
	c := CheckResult{Name: SMICheckCount, GPU: -1, Observed: strconv.Itoa(n)}
	switch {
	case expect < 0:
		c.Status, c.Message = StatusError, fmt.Sprintf("expected GPU count %d is negative", expect)
	case expect == 0 && n == 0:
		c.Status, c.Expected, c.Message = StatusFail, ">= 1", "nvidia-smi in the image sees no GPUs"
	case expect == 0:
		c.Status, c.Expected, c.Message = StatusPass, ">= 1", fmt.Sprintf("nvidia-smi in the image sees %s", smiPlural(n))
	case n != expect:
		c.Status, c.Expected = StatusFail, strconv.Itoa(expect)
		c.Message = fmt.Sprintf("nvidia-smi in the image sees %s, expected %d", smiPlural(n), expect)
	default:
		c.Status, c.Expected = StatusPass, strconv.Itoa(expect)
		c.Message = fmt.Sprintf("nvidia-smi in the image sees %s, as expected", smiPlural(n))
	}
	return c
}

func smiPlural(n int) string {
	if n == 1 {
		return "1 GPU"
	}
	return fmt.Sprintf("%d GPUs", n)
}

func smiDriverCheck(gpus []GPU, minDriver string) CheckResult {
	c := CheckResult{Name: SMICheckDriver, GPU: -1}
	if minDriver != "" {
		c.Expected = ">= " + minDriver
	}
	var min []int
	if minDriver != "" {
		v, err := parseSMIVersion(minDriver)
		if err != nil {
			c.Status, c.Message = StatusError, fmt.Sprintf("the minimum driver version is invalid: %v", err)
			return c
		}
		min = v
	}
	if len(gpus) == 0 {
		c.Status, c.Message = StatusSkip, "nvidia-smi lists no GPUs, so it reports no driver version"
		return c
	}
	var versions []string
	missing := 0
	for _, g := range gpus {
		switch {
		case g.DriverVersion == "":
			missing++
		case !smiContains(versions, g.DriverVersion):
			versions = append(versions, g.DriverVersion)
		}
	}
	c.Observed = strings.Join(versions, ", ")
	switch {
	case len(versions) == 0:
		c.Status, c.Message = StatusError, "nvidia-smi did not report the driver version"
		return c
	case len(versions) > 1:
		c.Status, c.Message = StatusFail, fmt.Sprintf("nvidia-smi reports different driver versions for the GPUs: %s", c.Observed)
		return c
	case missing > 0:
		c.Status, c.Message = StatusFail, fmt.Sprintf("nvidia-smi reports driver %s but no driver version for %s", versions[0], smiPlural(missing))
		return c
	}
	v := versions[0]
	if min == nil {
		c.Status, c.Message = StatusPass, fmt.Sprintf("nvidia-smi in the image reports NVIDIA driver %s", v)
		return c
	}
	got, err := parseSMIVersion(v)
	switch {
	case err != nil:
		c.Status, c.Message = StatusError, fmt.Sprintf("cannot compare the driver version with %s: %v", minDriver, err)
	case compareSMIVersions(got, min) < 0:
		c.Status, c.Message = StatusFail, fmt.Sprintf("NVIDIA driver %s is older than the required %s", v, minDriver)
	default:
		c.Status, c.Message = StatusPass, fmt.Sprintf("NVIDIA driver %s meets the minimum %s", v, minDriver)
	}
	return c
}

func smiContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// parseSMIVersion splits "550.54.15" into [550 54 15]; "R535" is accepted as 535.
func parseSMIVersion(s string) ([]int, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimPrefix(strings.TrimPrefix(t, "R"), "r")
	parts := strings.Split(t, ".")
	v := make([]int, len(parts))
	for i, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return nil, fmt.Errorf("%q is not a driver version like 535 or 550.54.15", s)
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("%q is not a driver version like 535 or 550.54.15", s)
		}
		v[i] = n
	}
	return v, nil
}

// compareSMIVersions compares component by component, a missing component counting as 0.
func compareSMIVersions(a, b []int) int {
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// smiModelMatches reports whether model occurs in name, ignoring case, starting and ending
// at word boundaries (anything but a letter or digit, or the ends of the name).
func smiModelMatches(name, model string) bool {
	n, m := strings.ToLower(name), strings.ToLower(strings.TrimSpace(model))
	if m == "" {
		return true
	}
	for from := 0; from <= len(n)-len(m); {
		i := strings.Index(n[from:], m)
		if i < 0 {
			return false
		}
		start, end := from+i, from+i+len(m)
		if (start == 0 || !smiAlnum(n[start-1]) || !smiAlnum(m[0])) &&
			(end == len(n) || !smiAlnum(n[end]) || !smiAlnum(m[len(m)-1])) {
			return true
		}
		from = start + 1
	}
	return false
}

func smiAlnum(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b >= 'A' && b <= 'Z' || b >= 0x80
}
