package validate

import (
	"encoding/json"
	"time"
)

// Status is the outcome of one check.
type Status string

// Check outcomes. A validation passes when no check failed or errored; skipped checks (nothing
// to check, e.g. NVLink on a PCIe GPU) do not count against it.
const (
	StatusPass  Status = "pass"
	StatusFail  Status = "fail"
	StatusSkip  Status = "skip"
	StatusError Status = "error" // the check could not run (no driver, the script crashed)
)

// CheckResult is one check's outcome: a name ("gpu_count", "ecc", "nvidia_smi", "resnet50"), a
// status, and a sentence a person reads ("PCIe link of GPU 1 is Gen4 x8, the GPU and slot
// support Gen5 x16").
type CheckResult struct {
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	// GPU is the index of the GPU the check is about, or -1 for checks of the whole host.
	GPU int `json:"gpu"`
	// Observed and Expected hold the values compared, as text, when there are any.
	Observed string `json:"observed,omitempty"`
	Expected string `json:"expected,omitempty"`
}

// GPU describes one GPU as the checks saw it.
type GPU struct {
	Index         int    `json:"index"`
	UUID          string `json:"uuid"`
	Name          string `json:"name"`
	MemoryMiB     int64  `json:"memory_mib,omitempty"`
	DriverVersion string `json:"driver_version,omitempty"`
	CUDAVersion   string `json:"cuda_version,omitempty"` // the CUDA version the driver supports
	PCIBusID      string `json:"pci_bus_id,omitempty"`
}

// ResNet50Result is what the ResNet-50 smoke benchmark measured.
type ResNet50Result struct {
	Model        string    `json:"model"`      // GPU model the reference is for ("H200")
	GPUs         int       `json:"gpus"`       // processes, one per GPU
	BatchSize    int       `json:"batch_size"` // per GPU
	Precision    string    `json:"precision"`
	ChannelsLast bool      `json:"channels_last"`
	Compile      bool      `json:"compile"`
	Warmup       int       `json:"warmup_iterations"`
	Iterations   int       `json:"iterations"`
	ImagesPerSec float64   `json:"images_per_sec"`         // total over all GPUs
	PerGPU       []float64 `json:"images_per_sec_per_gpu"` // by rank
	// Reference is the expected img/s per GPU for this model and precision, and its source.
	Reference       float64 `json:"reference_per_gpu,omitempty"`
	ReferenceSource string  `json:"reference_source,omitempty"`
	// Threshold is the pass line as a fraction of the reference (0.8 means 80 %).
	Threshold float64 `json:"threshold,omitempty"`
	// Framework versions the script reported.
	Torch string `json:"torch,omitempty"`
	CUDA  string `json:"cuda,omitempty"`
	// Seconds is the wall time of the timed iterations.
	Seconds float64 `json:"seconds"`
}

// Verdict is a validation's overall outcome.
type Verdict string

// Verdicts.
const (
	VerdictPass Verdict = "pass"
	VerdictFail Verdict = "fail"
)

// ReportSchemaVersion is the version of the JSON a Report encodes to. Additions keep it; a
// change of meaning bumps it.
const ReportSchemaVersion = 1

// Report is one validation of one target: the schema stored in the build manifest
// (targets.<validate>.validation.report) and written as validation.json.
type Report struct {
	SchemaVersion int    `json:"schema_version"`
	Validation    string `json:"validation"` // validate.NAME
	Target        string `json:"target"`     // image.NAME or machine_image.NAME
	// Image is the digest of the image checked, when it is a container image.
	Image    string    `json:"image,omitempty"`
	Host     string    `json:"host,omitempty"` // the GPU host's name
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Selection is the GPU selection as written ("all", "0,1", UUIDs).
	Selection string          `json:"gpus"`
	GPUs      []GPU           `json:"gpu_inventory"`
	Checks    []CheckResult   `json:"checks"`
	ResNet50  *ResNet50Result `json:"resnet50,omitempty"`
	// Env lists the names (never the values) of environment variables passed through to the
	// checks, such as NCCL settings of the GPU host.
	Env     []string `json:"env,omitempty"`
	Verdict Verdict  `json:"verdict"`
}

// Decide sets the verdict from the checks: fail when any check failed or errored.
func (r *Report) Decide() Verdict {
	r.Verdict = VerdictPass
	for _, c := range r.Checks {
		if c.Status == StatusFail || c.Status == StatusError {
			r.Verdict = VerdictFail
		}
	}
	return r.Verdict
}

// Failed returns the checks that failed or errored.
func (r *Report) Failed() []CheckResult {
	var out []CheckResult
	for _, c := range r.Checks {
		if c.Status == StatusFail || c.Status == StatusError {
			out = append(out, c)
		}
	}
	return out
}

// JSON encodes the report with stable indentation.
func (r *Report) JSON() ([]byte, error) {
	r.SchemaVersion = ReportSchemaVersion
	return json.MarshalIndent(r, "", "  ")
}
