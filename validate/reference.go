package validate

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/gpuforge/gpuforge/recipes/compat"
)

// Kinds of reference figure (see references.csv).
const (
	// ReferenceMeasured is validate/resnet50.py itself, measured on the project's hardware.
	ReferenceMeasured = "measured"
	// ReferencePublished is a published figure for a comparable, tuned setup; not this script.
	ReferencePublished = "published"
	// ReferenceSeed is the manual recipe gpuforge grew out of: 820 img/s on 4x P100.
	ReferenceSeed = "seed"
)

// Reference is one row of the ResNet-50 reference table: the expected training throughput of
// one GPU model in one precision and configuration, and where the figure comes from.
type Reference struct {
	Model     string  // canonical model, as compat.LookupGPU names it: "H200", "A100"
	Form      string  // "SXM", "PCIe", "NVL"; "" for any
	Memory    string  // "80GB"; "" for any
	Precision string  // bf16, fp16, tf32 or fp32
	PerGPU    float64 // images per second per GPU
	Kind      string  // ReferenceMeasured, ReferencePublished or ReferenceSeed
	BatchSize int     // per GPU; 0 when the source does not say
	// ChannelsLast is nil when the source does not say.
	ChannelsLast *bool
	Compile      bool
	Setup        string // framework, software and data of the figure
	Source       string // URL or file
	Note         string
}

// Variant is the form factor and memory, as written in the table ("SXM 80GB"), or "".
func (r Reference) Variant() string {
	return strings.TrimSpace(r.Form + " " + r.Memory)
}

// Citation is the reference's kind and source, as recorded in a result's ReferenceSource.
func (r Reference) Citation() string {
	return r.Kind + ": " + r.Source
}

// configText describes the configuration of the figure: "(bf16, batch 256, channels_last)".
func (r Reference) configText() string {
	name := r.Model
	if v := r.Variant(); v != "" {
		name += " " + v
	}
	parts := []string{r.Precision}
	if r.BatchSize > 0 {
		parts = append(parts, fmt.Sprintf("batch %d", r.BatchSize))
	}
	if r.ChannelsLast != nil {
		if *r.ChannelsLast {
			parts = append(parts, "channels_last")
		} else {
			parts = append(parts, "NCHW")
		}
	}
	if r.Compile {
		parts = append(parts, "torch.compile")
	}
	return name + " (" + strings.Join(parts, ", ") + ")"
}

// differences says how a run's configuration differs from the reference's, or "".
func (r Reference) differences(res *ResNet50Result) string {
	var d []string
	if res.Precision != r.Precision {
		d = append(d, fmt.Sprintf("the reference is for %s, this run used %s", r.Precision, res.Precision))
	}
	if res.Compile != r.Compile {
		if r.Compile {
			d = append(d, "the reference used torch.compile, this run did not")
		} else {
			d = append(d, "this run used torch.compile, the reference did not")
		}
	}
	if r.ChannelsLast != nil && *r.ChannelsLast != res.ChannelsLast {
		if res.ChannelsLast {
			d = append(d, "this run used channels_last, the reference NCHW")
		} else {
			d = append(d, "this run used NCHW, the reference channels_last")
		}
	}
	if r.BatchSize > 0 && res.BatchSize > 0 && r.BatchSize != res.BatchSize {
		d = append(d, fmt.Sprintf("the reference used batch %d, this run %d", r.BatchSize, res.BatchSize))
	}
	if r.Kind != ReferenceMeasured {
		d = append(d, "the reference is a "+r.Kind+" figure, not this script")
	}
	return strings.Join(d, "; ")
}

//go:embed references.csv
var referencesCSV []byte

var (
	refOnce  sync.Once
	refTable []Reference
	refErr   error
)

// References returns the whole reference table, in the file's order.
func References() []Reference {
	refOnce.Do(func() { refTable, refErr = parseReferences(referencesCSV) })
	if refErr != nil {
		panic("validate: references.csv: " + refErr.Error()) // a build-time table; its test catches this
	}
	out := make([]Reference, len(refTable))
	copy(out, refTable)
	return out
}

var refHeader = []string{"model", "variant", "precision", "per_gpu", "kind", "batch", "channels_last", "compile", "setup", "source", "note"}

var refMemoryRE = regexp.MustCompile(`^[0-9]+GB$`)

func parseReferences(data []byte) ([]Reference, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.Comment = '#'
	r.FieldsPerRecord = len(refHeader)
	recs, err := r.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 || strings.Join(recs[0], ",") != strings.Join(refHeader, ",") {
		return nil, fmt.Errorf("header must be %s", strings.Join(refHeader, ","))
	}
	type key struct {
		model, form, memory, precision, kind string
		batch                                int
		cl                                   string
		compile                              bool
	}
	seen := map[key]int{}
	var out []Reference
	for i, rec := range recs[1:] {
		row := i + 2
		ref, err := parseReference(rec)
		if err != nil {
			return nil, fmt.Errorf("row %d: %w", row, err)
		}
		k := key{ref.Model, ref.Form, ref.Memory, ref.Precision, ref.Kind, ref.BatchSize, rec[6], ref.Compile}
		if prev, dup := seen[k]; dup {
			return nil, fmt.Errorf("row %d repeats the configuration of row %d", row, prev)
		}
		seen[k] = row
		out = append(out, ref)
	}
	return out, nil
}

func parseReference(rec []string) (Reference, error) {
	ref := Reference{
		Model: rec[0], Precision: rec[2], Kind: rec[4],
		Setup: rec[8], Source: rec[9], Note: rec[10],
	}
	g, ok := compat.LookupGPU(ref.Model)
	if !ok || g.Model != ref.Model {
		return ref, fmt.Errorf("model %q is not a canonical model of recipes/compat", ref.Model)
	}
	for _, tok := range strings.Fields(rec[1]) {
		switch {
		case tok == "SXM" || tok == "PCIe" || tok == "NVL":
			if ref.Form != "" {
				return ref, fmt.Errorf("variant %q names two form factors", rec[1])
			}
			ref.Form = tok
		case refMemoryRE.MatchString(tok):
			if ref.Memory != "" {
				return ref, fmt.Errorf("variant %q names two memory sizes", rec[1])
			}
			ref.Memory = tok
		default:
			return ref, fmt.Errorf("variant %q: %q is neither SXM, PCIe, NVL nor a size like 80GB", rec[1], tok)
		}
	}
	if !ValidResNet50Precision(ref.Precision) {
		return ref, fmt.Errorf("precision %q is not one of %s", ref.Precision, strings.Join(ResNet50Precisions, ", "))
	}
	v, err := strconv.ParseFloat(rec[3], 64)
	if err != nil || !(v > 0) || math.IsInf(v, 0) {
		return ref, fmt.Errorf("per_gpu %q is not a positive number", rec[3])
	}
	ref.PerGPU = v
	switch ref.Kind {
	case ReferenceMeasured, ReferencePublished, ReferenceSeed:
	default:
		return ref, fmt.Errorf("kind %q is not measured, published or seed", ref.Kind)
	}
	if rec[5] != "" {
		b, err := strconv.Atoi(rec[5])
		if err != nil || b < 1 {
			return ref, fmt.Errorf("batch %q is not a positive number", rec[5])
		}
		ref.BatchSize = b
	}
	switch rec[6] {
	case "yes":
		t := true
		ref.ChannelsLast = &t
	case "no":
		f := false
		ref.ChannelsLast = &f
	case "":
	default:
		return ref, fmt.Errorf("channels_last %q is not yes, no or empty", rec[6])
	}
	switch rec[7] {
	case "yes":
		ref.Compile = true
	case "no":
	default:
		return ref, fmt.Errorf("compile %q is not yes or no", rec[7])
	}
	if ref.Setup == "" || ref.Source == "" {
		return ref, fmt.Errorf("setup and source are required")
	}
	return ref, nil
}

// GPUVariant is a GPU name resolved for the reference table: the canonical model and, where
// the name says, the form factor and memory.
type GPUVariant struct {
	Model  string // "H100"; "" when compat does not know the GPU
	Form   string // "SXM", "PCIe" or "NVL"
	Memory string // "80GB", or "" when the name does not say
	// ComputeCapability of the model, "" when unknown.
	ComputeCapability string
}

var (
	refSplitRE  = regexp.MustCompile(`[\s\-_/(),]+`)
	refMemTokRE = regexp.MustCompile(`^([0-9]+)gb$`)
)

// ResolveGPU resolves a GPU name as nvidia-smi, NVML, torch.cuda.get_device_name or a person
// writes it ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "Tesla V100-PCIE-16GB", "h200")
// with compat.LookupGPU, and reads the form factor and memory from its words. A name without
// "PCIe" or "NVL" is an SXM board: nvidia-smi names H100 SXM "NVIDIA H100 80GB HBM3".
func ResolveGPU(name string) (GPUVariant, bool) {
	g, ok := compat.LookupGPU(name)
	if !ok {
		return GPUVariant{}, false
	}
	v := GPUVariant{Model: g.Model, Form: "SXM", ComputeCapability: g.ComputeCapability}
	for _, tok := range refSplitRE.Split(strings.ToLower(name), -1) {
		switch {
		case tok == "pcie":
			v.Form = "PCIe"
		case strings.HasPrefix(tok, "nvl"):
			v.Form = "NVL"
		case refMemTokRE.MatchString(tok) && v.Memory == "":
			v.Memory = strings.TrimSuffix(tok, "gb") + "GB"
		}
	}
	return v, true
}

// refMajorCC is the major compute capability of a "9.0"-style string, or 0.
func refMajorCC(cc string) int {
	major, _, _ := strings.Cut(cc, ".")
	n, _ := strconv.Atoi(major)
	return n
}

// refPrecisions is the order in which precisions are tried for a run's precision on a GPU of
// compute capability major: the exact one first, then stand-ins whose throughput is close
// enough to serve (bf16 and fp16 on GPUs with native bf16; tf32 and fp32 before Ampere, which
// has no TF32 units, so tf32 runs as fp32).
func refPrecisions(p string, major int) []string {
	out := []string{p}
	switch {
	case p == "bf16" && major >= 8:
		out = append(out, "fp16")
	case p == "fp16" && major >= 8:
		out = append(out, "bf16")
	case p == "tf32" && major > 0 && major < 8:
		out = append(out, "fp32")
	case p == "fp32" && major > 0 && major < 8:
		out = append(out, "tf32")
	}
	return out
}

var refKindRank = map[string]int{ReferenceMeasured: 0, ReferencePublished: 1, ReferenceSeed: 2}

// LookupReference returns the expected ResNet-50 training throughput per GPU of a GPU model
// (any name ResolveGPU understands) in a precision (bf16, fp16, tf32, fp32), for the script's
// usual configuration: channels_last, no torch.compile. source is the figure's kind and
// citation. ok is false when the table has no figure for the model in that precision.
func LookupReference(model, precision string) (perGPU float64, source string, ok bool) {
	ref, ok := LookupReferenceFor(&ResNet50Result{Model: model, Precision: precision, ChannelsLast: true})
	if !ok {
		return 0, "", false
	}
	return ref.PerGPU, ref.Citation(), true
}

// LookupReferenceFor picks the reference row for a result: its GPU model (res.Model),
// precision, torch.compile, channels_last and batch size. Rows of the model whose form factor
// and memory do not contradict the GPU's name are candidates; among them it prefers, in this
// order, the exact precision over a stand-in (see references.csv), a measured figure over a
// published one over the seed, the same compile setting, the same memory format, a row naming
// the GPU's memory size, and the nearest batch size; the file's order breaks ties.
func LookupReferenceFor(res *ResNet50Result) (Reference, bool) {
	if res == nil {
		return Reference{}, false
	}
	gpu, ok := ResolveGPU(res.Model)
	if !ok {
		return Reference{}, false
	}
	precs := refPrecisions(res.Precision, refMajorCC(gpu.ComputeCapability))
	best, bestScore := -1, []float64(nil)
	table := References()
	for i, r := range table {
		if r.Model != gpu.Model ||
			(r.Form != "" && r.Form != gpu.Form) ||
			(r.Memory != "" && gpu.Memory != "" && r.Memory != gpu.Memory) {
			continue
		}
		prec := -1
		for j, p := range precs {
			if r.Precision == p {
				prec = j
			}
		}
		if prec < 0 {
			continue
		}
		score := []float64{
			float64(prec),
			float64(refKindRank[r.Kind]),
			refBool(r.Compile != res.Compile),
			refBool(r.ChannelsLast != nil && *r.ChannelsLast != res.ChannelsLast),
			refBool(r.Memory == "" || gpu.Memory == ""),
			refBatchDistance(r.BatchSize, res.BatchSize),
		}
		if best < 0 || refLess(score, bestScore) {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		return Reference{}, false
	}
	return table[best], true
}

func refBool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// refBatchDistance is how far apart two batch sizes are, on a log scale; an unknown size is
// neither near nor far.
func refBatchDistance(a, b int) float64 {
	if a <= 0 || b <= 0 {
		return 0.5
	}
	return math.Abs(math.Log2(float64(a) / float64(b)))
}

func refLess(a, b []float64) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
