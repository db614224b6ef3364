package validate

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpuforge/gpuforge/recipes/compat"
)

func TestReferenceTableParses(t *testing.T) {
	refs := References()
	if len(refs) < 25 {
		t.Fatalf("%d references", len(refs))
	}
	kinds := map[string]int{}
	for _, r := range refs {
		kinds[r.Kind]++
		if r.Kind != ReferenceMeasured && !strings.HasPrefix(r.Source, "https://") && r.Kind != ReferenceSeed {
			t.Errorf("%s %s %s: a published figure needs a URL, not %q", r.Model, r.Variant(), r.Precision, r.Source)
		}
		if r.Kind == ReferenceMeasured && !strings.HasPrefix(r.Source, "validate/testdata/resnet50/") {
			t.Errorf("%s %s: a measured figure cites its raw output under validate/testdata/resnet50/, not %q", r.Model, r.Precision, r.Source)
		}
		// Nothing in the table is above the physical ceiling (~40,300 img/s at H100/H200 peak).
		if r.PerGPU > 40300 {
			t.Errorf("%s: %v img/s is above the ceiling", r.Model, r.PerGPU)
		}
	}
	if kinds[ReferenceMeasured] == 0 || kinds[ReferencePublished] == 0 || kinds[ReferenceSeed] != 1 {
		t.Errorf("kinds: %v", kinds)
	}
	// The seed recipe: 820 img/s on 4x P100, TensorFlow 17.12, batch 64, fp32.
	var seed Reference
	for _, r := range refs {
		if r.Kind == ReferenceSeed {
			seed = r
		}
	}
	if seed.Model != "P100" || seed.PerGPU != 205 || seed.BatchSize != 64 || seed.Precision != "fp32" || !strings.Contains(seed.Setup, "820") {
		t.Errorf("seed row: %+v", seed)
	}
	// References returns a copy.
	refs[0].PerGPU = -1
	if References()[0].PerGPU == -1 {
		t.Error("References shares its table with callers")
	}
}

// TestReferenceMeasuredMatchesTestdata keeps the measured rows equal to the outputs they cite.
func TestReferenceMeasuredMatchesTestdata(t *testing.T) {
	for _, r := range References() {
		if r.Kind != ReferenceMeasured {
			continue
		}
		res := readResNet50Sample(t, strings.TrimPrefix(r.Source, "validate/testdata/resnet50/"))
		per := res.ImagesPerSec / float64(res.GPUs)
		if fmt.Sprintf("%.0f", per) != fmt.Sprintf("%.0f", r.PerGPU) {
			t.Errorf("%s %s: table says %v, %s measured %.2f", r.Model, r.Precision, r.PerGPU, r.Source, per)
		}
		if res.Precision != r.Precision || res.BatchSize != r.BatchSize || res.Compile != r.Compile ||
			r.ChannelsLast == nil || *r.ChannelsLast != res.ChannelsLast {
			t.Errorf("%s %s: the row's configuration differs from %s: %+v", r.Model, r.Precision, r.Source, res)
		}
		if g, ok := ResolveGPU(res.Model); !ok || g.Model != r.Model {
			t.Errorf("%s: the output's GPU %q resolves to %+v", r.Source, res.Model, g)
		}
	}
}

func TestReferenceParseErrors(t *testing.T) {
	header := strings.Join(refHeader, ",") + "\n"
	good := "H200,,bf16,4674,measured,256,yes,no,setup,src,\n"
	if _, err := parseReferences([]byte("# c\n" + header + good)); err != nil {
		t.Fatalf("good row: %v", err)
	}
	for _, tc := range []struct{ name, rows, err string }{
		{"no header", good, "header"},
		{"unknown model", "Quadro RTX 6000,,bf16,1,measured,,,no,s,u,\n", "not a canonical model"},
		{"alias, not canonical", "V100S,,fp16,1,published,,,no,s,u,\n", "not a canonical model"},
		{"bad variant", "H100,HBM3,fp16,1,published,,,no,s,u,\n", "neither SXM"},
		{"two forms", "H100,SXM PCIe,fp16,1,published,,,no,s,u,\n", "two form factors"},
		{"bad precision", "H100,,amp,1,published,,,no,s,u,\n", "precision"},
		{"bad rate", "H100,,fp16,-5,published,,,no,s,u,\n", "per_gpu"},
		{"bad kind", "H100,,fp16,5,guess,,,no,s,u,\n", "kind"},
		{"bad batch", "H100,,fp16,5,published,0,,no,s,u,\n", "batch"},
		{"bad channels_last", "H100,,fp16,5,published,,maybe,no,s,u,\n", "channels_last"},
		{"bad compile", "H100,,fp16,5,published,,,,s,u,\n", "compile"},
		{"no source", "H100,,fp16,5,published,,,no,s,,\n", "source"},
		{"duplicate", good + good, "repeats"},
		{"short row", "H100,,fp16\n", "wrong number of fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := header + tc.rows
			if tc.name == "no header" {
				in = tc.rows
			}
			_, err := parseReferences([]byte(in))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

func TestReferenceResolveGPU(t *testing.T) {
	for _, tc := range []struct {
		name string
		want GPUVariant
	}{
		{"NVIDIA H200", GPUVariant{"H200", "SXM", "", "9.0"}},
		{"NVIDIA H200 NVL", GPUVariant{"H200", "NVL", "", "9.0"}},
		{"NVIDIA H100 80GB HBM3", GPUVariant{"H100", "SXM", "80GB", "9.0"}},
		{"NVIDIA H100 PCIe", GPUVariant{"H100", "PCIe", "", "9.0"}},
		{"NVIDIA H100 NVL", GPUVariant{"H100", "NVL", "", "9.0"}},
		{"NVIDIA A100-SXM4-40GB", GPUVariant{"A100", "SXM", "40GB", "8.0"}},
		{"NVIDIA A100-PCIE-40GB", GPUVariant{"A100", "PCIe", "40GB", "8.0"}},
		{"NVIDIA A100 80GB PCIe", GPUVariant{"A100", "PCIe", "80GB", "8.0"}},
		{"Tesla V100S-PCIE-32GB", GPUVariant{"V100", "PCIe", "32GB", "7.0"}},
		{"Tesla P100-SXM2-16GB", GPUVariant{"P100", "SXM", "16GB", "6.0"}},
		{"h200", GPUVariant{"H200", "SXM", "", "9.0"}},
	} {
		got, ok := ResolveGPU(tc.name)
		if !ok || got != tc.want {
			t.Errorf("ResolveGPU(%q) = %+v, %v; want %+v", tc.name, got, ok, tc.want)
		}
	}
	for _, name := range []string{"", "Quadro RTX 6000", "AMD Instinct MI300X"} {
		if g, ok := ResolveGPU(name); ok {
			t.Errorf("ResolveGPU(%q) = %+v", name, g)
		}
	}
}

// referenceNames are GPU names as nvidia-smi and torch.cuda.get_device_name print them.
var referenceNames = []string{
	"NVIDIA H200", "NVIDIA H200 NVL", "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL",
	"NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe",
	"NVIDIA A10", "NVIDIA A10G", "NVIDIA L40S", "NVIDIA L4", "Tesla T4", "NVIDIA RTX 6000 Ada Generation",
	"Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB", "Tesla V100-PCIE-16GB", "Tesla P100-SXM2-16GB",
	"Tesla P100-PCIE-16GB", "Tesla K80", "Quadro RTX 6000",
}

// TestReferenceLookupGolden writes what LookupReference answers for each name and precision
// to testdata/resnet50/references.golden.txt: the reference table as a user meets it.
func TestReferenceLookupGolden(t *testing.T) {
	var b strings.Builder
	b.WriteString("# LookupReference(name, precision): img/s per GPU, kind: source (channels_last, no torch.compile)\n")
	for _, name := range referenceNames {
		fmt.Fprintf(&b, "\n%s\n", name)
		for _, p := range ResNet50Precisions {
			v, src, ok := LookupReference(name, p)
			if !ok {
				fmt.Fprintf(&b, "  %-4s  -\n", p)
				continue
			}
			fmt.Fprintf(&b, "  %-4s  %g  %s\n", p, v, src)
		}
	}
	smiGoldenFile(t, filepath.Join("testdata", "resnet50", "references.golden.txt"), []byte(b.String()))
}

func TestReferenceLookup(t *testing.T) {
	for _, tc := range []struct {
		name, prec string
		want       float64 // 0: no reference
		kind       string
	}{
		{"NVIDIA H200", "bf16", 4674, ReferenceMeasured},
		{"h200", "fp16", 5654, ReferenceMeasured},
		{"NVIDIA H200", "tf32", 3164, ReferenceMeasured},
		{"NVIDIA H200", "fp32", 1055, ReferenceMeasured},
		{"NVIDIA H100 80GB HBM3", "bf16", 2616, ReferencePublished}, // fp16 stands in
		{"NVIDIA H100 80GB HBM3", "fp32", 0, ""},                    // no strict-fp32 figure on Hopper
		{"NVIDIA H100 PCIe", "fp16", 1866, ReferencePublished},
		{"NVIDIA H100 NVL", "fp16", 0, ""},
		{"NVIDIA A100-SXM4-80GB", "bf16", 2470, ReferencePublished},
		{"NVIDIA A100-SXM4-40GB", "tf32", 909, ReferencePublished},
		{"NVIDIA A100-PCIE-40GB", "tf32", 882, ReferencePublished},
		{"NVIDIA A100 80GB PCIe", "fp16", 1527, ReferencePublished},
		{"NVIDIA A10", "tf32", 349, ReferencePublished},
		{"NVIDIA A10G", "bf16", 0, ""},
		{"Tesla V100-SXM2-32GB", "fp16", 1156, ReferencePublished},
		{"Tesla V100-PCIE-16GB", "tf32", 367, ReferencePublished}, // no TF32 on Volta: fp32
		{"Tesla V100-SXM2-16GB", "bf16", 0, ""},
		{"Tesla P100-SXM2-16GB", "fp32", 219, ReferencePublished}, // published before seed
		{"Tesla K80", "fp32", 51.9, ReferencePublished},
		{"NVIDIA L4", "bf16", 0, ""},
		{"Tesla T4", "fp16", 0, ""},
		{"NVIDIA L40S", "bf16", 0, ""},
		{"", "bf16", 0, ""},
		{"NVIDIA H200", "int8", 0, ""},
	} {
		v, src, ok := LookupReference(tc.name, tc.prec)
		if ok != (tc.want > 0) || v != tc.want || (ok && !strings.HasPrefix(src, tc.kind+": ")) {
			t.Errorf("LookupReference(%q, %q) = %v, %q, %v; want %v (%s)", tc.name, tc.prec, v, src, ok, tc.want, tc.kind)
		}
	}
	// The configuration picks among the measured H200 rows.
	for _, tc := range []struct {
		prec      string
		batch     int
		cl, comp  bool
		want      float64
		wantBatch int
	}{
		{"bf16", 256, true, false, 4674, 256},
		{"bf16", 256, true, true, 6834, 256},
		{"bf16", 256, false, false, 2407, 256},
		{"bf16", 256, false, true, 6834, 256}, // compile matters more than the memory format
		{"tf32", 64, false, false, 1965, 64},
		{"tf32", 256, false, false, 1965, 64}, // the NCHW row, though its batch differs
		{"tf32", 128, true, false, 3164, 256},
	} {
		ref, ok := LookupReferenceFor(&ResNet50Result{Model: "NVIDIA H200", Precision: tc.prec, BatchSize: tc.batch, ChannelsLast: tc.cl, Compile: tc.comp})
		if !ok || ref.PerGPU != tc.want || ref.BatchSize != tc.wantBatch {
			t.Errorf("%s batch %d cl=%v compile=%v: %+v, %v; want %v", tc.prec, tc.batch, tc.cl, tc.comp, ref, ok, tc.want)
		}
	}
	if _, ok := LookupReferenceFor(nil); ok {
		t.Error("LookupReferenceFor(nil) found a reference")
	}
}

// TestReferenceModelsKnown makes sure every model the table names is one compat knows, and
// that its compute capability drives the precision stand-ins as documented.
func TestReferenceModelsKnown(t *testing.T) {
	for _, r := range References() {
		g, ok := compat.LookupGPU(r.Model)
		if !ok || g.Model != r.Model {
			t.Errorf("%q is not a compat model", r.Model)
		}
	}
	if got := refPrecisions("bf16", 9); strings.Join(got, ",") != "bf16,fp16" {
		t.Errorf("bf16 on Hopper: %v", got)
	}
	if got := refPrecisions("bf16", 7); strings.Join(got, ",") != "bf16" {
		t.Errorf("bf16 on Volta: %v", got)
	}
	if got := refPrecisions("tf32", 7); strings.Join(got, ",") != "tf32,fp32" {
		t.Errorf("tf32 on Volta: %v", got)
	}
	if got := refPrecisions("fp32", 8); strings.Join(got, ",") != "fp32" {
		t.Errorf("fp32 on Ampere: %v", got)
	}
}
