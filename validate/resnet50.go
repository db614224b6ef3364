package validate

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ResNet50Script is the ResNet-50 training smoke benchmark (resnet50.py): PyTorch and
// torchvision, synthetic data generated on the GPU, one process per GPU (DDP over NCCL when
// there are several), and one result line on standard output that ParseResNet50Output reads.
// The runner writes it into the container at ResNet50ScriptPath and runs ResNet50Args.
//
//go:embed resnet50.py
var ResNet50Script []byte

// ResNet50ScriptPath is where ResNet50Args expects the script inside the container.
const ResNet50ScriptPath = "/tmp/gpuforge/resnet50.py"

// ResNet50Marker starts the line on which the script prints its result as JSON.
const ResNet50Marker = "GPUFORGE_RESNET50_RESULT "

// ResNet50Precisions are the values of the script's --precision: bf16 and fp16 autocast
// (fp16 with a GradScaler), TF32 tensor-core math on float32, and strict float32.
var ResNet50Precisions = []string{"bf16", "fp16", "tf32", "fp32"}

// ValidResNet50Precision reports whether p is one of ResNet50Precisions.
func ValidResNet50Precision(p string) bool {
	for _, x := range ResNet50Precisions {
		if p == x {
			return true
		}
	}
	return false
}

// ResNet50Args is the command that runs the script in the image: batch images per GPU per step,
// precision (one of ResNet50Precisions), gpus processes, one per GPU (0: every GPU the
// container sees), warmup untimed steps, then iters timed ones. channelsLast selects the NHWC
// memory format; compile wraps the model in torch.compile. The script starts its own processes
// for gpus > 1 (no torchrun needed) and leaves the environment, NCCL_* included, as it finds it.
// python3 runs unbuffered so that output reaches the log as it is printed.
func ResNet50Args(batch int, precision string, gpus, warmup, iters int, channelsLast, compile bool) []string {
	args := []string{
		"python3", "-u", ResNet50ScriptPath,
		"--batch-size", strconv.Itoa(batch),
		"--precision", precision,
		"--gpus", strconv.Itoa(gpus),
		"--warmup", strconv.Itoa(warmup),
		"--iterations", strconv.Itoa(iters),
	}
	if channelsLast {
		args = append(args, "--channels-last")
	} else {
		args = append(args, "--no-channels-last")
	}
	if compile {
		args = append(args, "--compile")
	}
	return args
}

// ParseResNet50Output finds the script's result line among everything else the run printed
// (framework warnings, torchrun's banners, a "[rank0]: " prefix) and decodes it. The last
// result line wins. Without one, the error quotes the end of the output, where a Python
// traceback or the script's own "error:" line says what went wrong. The result must be
// self-consistent: a positive throughput for each of its GPUs and a positive time.
func ParseResNet50Output(out []byte) (*ResNet50Result, error) {
	var line []byte
	found := false
	for _, l := range bytes.Split(out, []byte("\n")) {
		if i := bytes.Index(l, []byte(ResNet50Marker)); i >= 0 {
			line, found = bytes.TrimSpace(l[i+len(ResNet50Marker):]), true
		}
	}
	if !found {
		return nil, fmt.Errorf("the ResNet-50 script printed no result line (%s); its output ends:\n%s",
			strings.TrimSpace(ResNet50Marker), rnTail(out, 15))
	}
	var res ResNet50Result
	if err := json.Unmarshal(line, &res); err != nil {
		return nil, fmt.Errorf("the ResNet-50 result line is not valid JSON: %v: %s", err, smiClip(string(line)))
	}
	if err := rnCheckResult(&res); err != nil {
		return nil, fmt.Errorf("the ResNet-50 result is inconsistent: %w", err)
	}
	return &res, nil
}

func rnCheckResult(r *ResNet50Result) error {
	var errs []error
	if r.GPUs < 1 {
		errs = append(errs, fmt.Errorf("gpus is %d", r.GPUs))
	}
	if len(r.PerGPU) != r.GPUs {
		errs = append(errs, fmt.Errorf("%d per-GPU figures for %d GPUs", len(r.PerGPU), r.GPUs))
	}
	for i, v := range r.PerGPU {
		if !(v > 0) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("rank %d: %v img/s", i, v))
		}
	}
	if !(r.ImagesPerSec > 0) || math.IsInf(r.ImagesPerSec, 0) {
		errs = append(errs, fmt.Errorf("images_per_sec is %v", r.ImagesPerSec))
	}
	if !(r.Seconds > 0) || math.IsInf(r.Seconds, 0) {
		errs = append(errs, fmt.Errorf("seconds is %v", r.Seconds))
	}
	if r.BatchSize < 1 || r.Iterations < 1 {
		errs = append(errs, fmt.Errorf("batch size %d, %d iterations", r.BatchSize, r.Iterations))
	}
	return errors.Join(errs...)
}

// rnTail returns the last n non-empty lines of out, indented, or "(no output)".
func rnTail(out []byte, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(string(out), "\r\n", "\n"), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, "  "+smiClip(strings.TrimRight(l, " \t")))
		}
	}
	if len(lines) == 0 {
		return "  (no output)"
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ResNet50CheckName is the name of the ResNet-50 check.
const ResNet50CheckName = "resnet50"

// ResNet50Check compares the mean per-GPU throughput with threshold × the reference for the
// GPU model, precision and configuration (see LookupReferenceFor). It passes when the mean is
// at least that, fails below it, and is skipped when the table has no reference for the model
// and precision. It records the reference, its source and the threshold in res, for the
// report. A threshold outside (0, 1.5] or a missing result is an error.
func ResNet50Check(res *ResNet50Result, threshold float64) CheckResult {
	c := CheckResult{Name: ResNet50CheckName, GPU: -1}
	if res == nil {
		c.Status, c.Message = StatusError, "the ResNet-50 benchmark produced no result"
		return c
	}
	if !(threshold > 0 && threshold <= 1.5) {
		c.Status, c.Message = StatusError, fmt.Sprintf("threshold %v is not a fraction of the reference in (0, 1.5]", threshold)
		return c
	}
	per := res.PerGPU
	if len(per) == 0 && res.GPUs > 0 {
		per = []float64{res.ImagesPerSec / float64(res.GPUs)}
	}
	if len(per) == 0 {
		c.Status, c.Message = StatusError, "the ResNet-50 result has no throughput"
		return c
	}
	var sum float64
	lo := math.Inf(1)
	slowest := 0
	for i, v := range per {
		sum += v
		if v < lo {
			lo, slowest = v, i
		}
	}
	m := sum / float64(len(per))
	c.Observed = rnRate(m) + " img/s per GPU"
	cfg := fmt.Sprintf("%s, batch %d, %s", res.Precision, res.BatchSize, rnGPUs(len(per)))

	ref, ok := LookupReferenceFor(res)
	if !ok {
		c.Status = StatusSkip
		c.Message = fmt.Sprintf("ResNet-50 ran at %s img/s per GPU (%s) on %s; the reference table has no %s figure for this GPU, so there is nothing to compare with",
			rnRate(m), cfg, rnModel(res.Model), res.Precision)
		return c
	}
	res.Reference, res.ReferenceSource, res.Threshold = ref.PerGPU, ref.Citation(), threshold
	line := threshold * ref.PerGPU
	c.Expected = fmt.Sprintf(">= %s img/s per GPU (%s of %s, %s)", rnRate(line), rnPercent(threshold), rnRate(ref.PerGPU), ref.Kind)
	ratio := m / ref.PerGPU
	msg := fmt.Sprintf("ResNet-50 ran at %s img/s per GPU (%s), %s of the %s reference %s for %s",
		rnRate(m), cfg, rnPercent(ratio), ref.Kind, rnRate(ref.PerGPU), ref.configText())
	if len(per) > 1 {
		msg += fmt.Sprintf("; slowest rank %d at %s", slowest, rnRate(lo))
	}
	if d := ref.differences(res); d != "" {
		msg += "; note: " + d
	}
	if m >= line {
		c.Status = StatusPass
		c.Message = msg + fmt.Sprintf("; the pass line is %s (%s)", rnPercent(threshold), rnRate(line))
	} else {
		c.Status = StatusFail
		c.Message = msg + fmt.Sprintf("; below the pass line of %s (%s)", rnPercent(threshold), rnRate(line))
	}
	return c
}

func rnGPUs(n int) string {
	if n == 1 {
		return "1 GPU"
	}
	return fmt.Sprintf("%d GPUs", n)
}

func rnModel(m string) string {
	if m == "" {
		return "an unnamed GPU"
	}
	return m
}

// rnPercent formats a fraction as a percentage with at most one decimal: "80 %", "97.5 %".
func rnPercent(f float64) string {
	return strconv.FormatFloat(math.Round(f*1000)/10, 'f', -1, 64) + " %"
}

// rnRate formats images per second as the report does: whole numbers with thousands
// separated from 100 up ("4,674"), one decimal below ("51.9").
func rnRate(v float64) string {
	if math.Abs(v) < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(math.Round(math.Abs(v))), 10)
	var b strings.Builder
	if v < 0 {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
