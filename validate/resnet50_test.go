package validate

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readResNet50Sample(t *testing.T, name string) *ResNet50Result {
	t.Helper()
	out, err := os.ReadFile(filepath.Join("testdata", "resnet50", name))
	if err != nil {
		t.Fatal(err)
	}
	res, err := ParseResNet50Output(out)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

func TestResNet50ScriptEmbedded(t *testing.T) {
	disk, err := os.ReadFile("resnet50.py")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk, ResNet50Script) {
		t.Fatal("ResNet50Script differs from resnet50.py")
	}
	s := string(ResNet50Script)
	if !strings.Contains(s, `MARKER = "`+ResNet50Marker+`"`) {
		t.Errorf("the script's MARKER is not %q", ResNet50Marker)
	}
	for _, p := range ResNet50Precisions {
		if !strings.Contains(s, `"`+p+`"`) {
			t.Errorf("the script does not know precision %q", p)
		}
	}
	// The GPU host's NCCL settings (NCCL_NVLS_ENABLE=0 ...) must reach NCCL untouched: the
	// script writes no environment variable at all.
	for _, re := range []string{`os\.environ\[[^\]]*\]\s*=[^=]`, `os\.environ\.(setdefault|update|pop)`, `os\.putenv`, `os\.unsetenv`, `del os\.environ`} {
		if m := regexp.MustCompile(re).FindString(s); m != "" {
			t.Errorf("the script changes the environment: %q", m)
		}
	}
	for _, want := range []string{
		`init_process_group(backend="nccl"`, "LOCAL_RANK", "WORLD_SIZE", "mp.spawn", "all_gather_object",
		"torch.cuda.synchronize", "weights=None", "momentum=0.9", "lr=0.1", "channels_last", "torch.compile",
		"GradScaler", "torch.cuda.get_device_name",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("the script has no %q", want)
		}
	}
	// Every field the script prints is one ResNet50Result decodes (or an extra the report
	// does not need); the JSON tags the brief names are all there.
	for _, tag := range []string{"model", "gpus", "batch_size", "precision", "channels_last", "compile",
		"warmup_iterations", "iterations", "images_per_sec", "images_per_sec_per_gpu", "seconds", "torch", "cuda"} {
		if !strings.Contains(s, `"`+tag+`":`) {
			t.Errorf("the script prints no %q", tag)
		}
	}
}

// python3 finds a Python 3.10+ interpreter, or skips the test.
func python3(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	out, err := exec.Command(p, "-c", "import sys; print(sys.version_info >= (3, 10))").Output()
	if err != nil || strings.TrimSpace(string(out)) != "True" {
		t.Skip("python3 is older than 3.10")
	}
	return p
}

// TestResNet50ScriptCompiles is the py_compile check, without writing __pycache__ into the tree.
func TestResNet50ScriptCompiles(t *testing.T) {
	py := python3(t)
	cmd := exec.Command(py, "-c", "import sys; compile(open(sys.argv[1], encoding='utf-8').read(), sys.argv[1], 'exec')", "resnet50.py")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("resnet50.py does not compile: %v\n%s", err, out)
	}
}

// TestResNet50ArgsAcceptedByScript feeds ResNet50Args to the script's own argument parser
// (which needs no torch) and checks what it understood.
func TestResNet50ArgsAcceptedByScript(t *testing.T) {
	py := python3(t)
	const loader = `import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("gpuforge_resnet50", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
print(json.dumps(vars(m.parse_args(sys.argv[2:])), sort_keys=True))`
	for _, tc := range []struct {
		args []string
		want string
	}{
		{ResNet50Args(256, "bf16", 1, 10, 30, true, false),
			`{"batch_size": 256, "channels_last": true, "compile": false, "gpus": 1, "image_size": 224, "iterations": 30, "num_classes": 1000, "precision": "bf16", "seed": 0, "warmup": 10}`},
		{ResNet50Args(64, "fp32", 4, 0, 5, false, true),
			`{"batch_size": 64, "channels_last": false, "compile": true, "gpus": 4, "image_size": 224, "iterations": 5, "num_classes": 1000, "precision": "fp32", "seed": 0, "warmup": 0}`},
		{ResNet50Args(128, "fp16", 0, 3, 7, true, true),
			`{"batch_size": 128, "channels_last": true, "compile": true, "gpus": 0, "image_size": 224, "iterations": 7, "num_classes": 1000, "precision": "fp16", "seed": 0, "warmup": 3}`},
	} {
		if tc.args[0] != "python3" || tc.args[2] != ResNet50ScriptPath {
			t.Fatalf("ResNet50Args = %q, want python3 -u %s ...", tc.args, ResNet50ScriptPath)
		}
		cmd := exec.Command(py, append([]string{"-c", loader, "resnet50.py"}, tc.args[3:]...)...)
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.args, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("%q parsed as\n%s\nwant\n%s", tc.args, got, tc.want)
		}
	}
	// Bad values stop the script before it imports torch, with argparse's exit status 2.
	for _, bad := range [][]string{{"--batch-size", "0"}, {"--precision", "int8"}, {"--iterations", "0"}, {"--gpus", "-1"}} {
		cmd := exec.Command(py, append([]string{"resnet50.py"}, bad...)...)
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%q: %v, want exit status 2\n%s", bad, err, out)
		}
	}
}

func TestResNet50Args(t *testing.T) {
	got := ResNet50Args(256, "bf16", 2, 10, 30, true, false)
	want := []string{"python3", "-u", "/tmp/gpuforge/resnet50.py", "--batch-size", "256", "--precision", "bf16",
		"--gpus", "2", "--warmup", "10", "--iterations", "30", "--channels-last"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ResNet50Args (-want +got):\n%s", diff)
	}
	got = ResNet50Args(64, "fp32", 1, 0, 5, false, true)
	want = []string{"python3", "-u", "/tmp/gpuforge/resnet50.py", "--batch-size", "64", "--precision", "fp32",
		"--gpus", "1", "--warmup", "0", "--iterations", "5", "--no-channels-last", "--compile"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ResNet50Args (-want +got):\n%s", diff)
	}
	for _, p := range []string{"bf16", "fp16", "tf32", "fp32"} {
		if !ValidResNet50Precision(p) {
			t.Errorf("%s is not valid", p)
		}
	}
	for _, p := range []string{"", "BF16", "amp", "int8"} {
		if ValidResNet50Precision(p) {
			t.Errorf("%q is valid", p)
		}
	}
}

// TestResNet50ParseGolden parses every output under testdata/resnet50 and compares the result
// or error with NAME.golden.json.
func TestResNet50ParseGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "resnet50", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) < 12 {
		t.Fatalf("only %d outputs under testdata/resnet50", len(inputs))
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			out, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			res, perr := ParseResNet50Output(out)
			got := struct {
				Result *ResNet50Result `json:"result"`
				Error  string          `json:"error,omitempty"`
			}{res, smiErrText(perr)}
			smiGoldenFile(t, strings.TrimSuffix(in, ".txt")+".golden.json", smiGoldenJSON(t, got))
			// Every real run parses.
			if strings.HasPrefix(filepath.Base(in), "h200_") && perr != nil {
				t.Errorf("real output does not parse: %v", perr)
			}
		})
	}
}

func TestResNet50ParseRealRuns(t *testing.T) {
	one := readResNet50Sample(t, "h200_bf16_1gpu.txt")
	want := &ResNet50Result{
		Model: "NVIDIA H200", GPUs: 1, BatchSize: 256, Precision: "bf16", ChannelsLast: true, Warmup: 10,
		Iterations: 30, ImagesPerSec: 4674.09, PerGPU: []float64{4674.09}, Torch: "2.11.0+cu130", CUDA: "13.0", Seconds: 1.6431,
	}
	if diff := cmp.Diff(want, one); diff != "" {
		t.Errorf("h200_bf16_1gpu.txt (-want +got):\n%s", diff)
	}
	for _, name := range []string{"h200_bf16_2gpu_spawn.txt", "h200_bf16_2gpu_torchrun.txt", "torchrun_tee_prefixed.txt"} {
		r := readResNet50Sample(t, name)
		if r.GPUs != 2 || len(r.PerGPU) != 2 || math.Abs(r.PerGPU[0]+r.PerGPU[1]-r.ImagesPerSec) > 0.1 {
			t.Errorf("%s: %+v", name, r)
		}
		// img/s per rank = batch × iterations / seconds, the slowest rank's seconds reported.
		for i, v := range r.PerGPU {
			if lo := float64(r.BatchSize*r.Iterations) / r.Seconds; v < lo-1 {
				t.Errorf("%s rank %d: %.1f img/s below %d×%d/%.4f s", name, i, v, r.BatchSize, r.Iterations, r.Seconds)
			}
		}
	}
	if c := readResNet50Sample(t, "h200_bf16_compile_1gpu.txt"); !c.Compile || c.ImagesPerSec <= one.ImagesPerSec {
		t.Errorf("compile run: %+v", c)
	}
}

func TestResNet50ParseErrors(t *testing.T) {
	good := `{"batch_size": 256, "channels_last": true, "compile": false, "gpus": 1, "images_per_sec": 100, "images_per_sec_per_gpu": [100], "iterations": 30, "model": "X", "precision": "bf16", "seconds": 1, "warmup_iterations": 1}`
	for _, tc := range []struct {
		name, out, err string
	}{
		{"empty", "", "(no output)"},
		{"traceback", "Traceback (most recent call last):\n  File \"x\", line 1\nRuntimeError: NCCL error\n", "RuntimeError: NCCL error"},
		{"marker alone", ResNet50Marker + "\n", "not valid JSON"},
		{"NaN", strings.Replace(ResNet50Marker+good, `"images_per_sec": 100`, `"images_per_sec": NaN`, 1), "not valid JSON"},
		{"zero rate", strings.Replace(ResNet50Marker+good, `[100]`, `[0]`, 1), "rank 0: 0 img/s"},
		{"no gpus", strings.Replace(ResNet50Marker+good, `"gpus": 1`, `"gpus": 0`, 1), "gpus is 0"},
		{"wrong type", strings.Replace(ResNet50Marker+good, `"gpus": 1`, `"gpus": "1"`, 1), "not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ParseResNet50Output([]byte(tc.out))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("got %+v, %v; want an error containing %q", res, err, tc.err)
			}
		})
	}
	// The last result line wins; CRLF and a prefix are fine; trailing text after the JSON is not.
	out := "noise\r\n" + ResNet50Marker + strings.Replace(good, "100", "50", -1) + "\r\n[rank0]: " + ResNet50Marker + good + "\r\nmore noise\n"
	res, err := ParseResNet50Output([]byte(out))
	if err != nil || res.ImagesPerSec != 100 {
		t.Errorf("got %+v, %v; want the last line's 100 img/s", res, err)
	}
	// A long traceback is cut to its last lines.
	var b strings.Builder
	for i := 0; i < 100; i++ {
		b.WriteString("line " + strings.Repeat("x", i%7) + "\n")
	}
	b.WriteString("RuntimeError: the end\n")
	_, err = ParseResNet50Output([]byte(b.String()))
	if err == nil || strings.Count(err.Error(), "\n") != 15 || !strings.HasSuffix(err.Error(), "RuntimeError: the end") {
		t.Errorf("error %q, want the last 15 lines", err)
	}
}

// TestResNet50CheckGolden judges real and made-up results against the reference table and
// compares the check results, and what they record in the result, with
// testdata/resnet50/checks.golden.json.
func TestResNet50CheckGolden(t *testing.T) {
	mk := func(model, prec string, batch int, cl, compile bool, per ...float64) *ResNet50Result {
		var sum float64
		for _, v := range per {
			sum += v
		}
		return &ResNet50Result{Model: model, Precision: prec, BatchSize: batch, ChannelsLast: cl, Compile: compile,
			GPUs: len(per), PerGPU: per, ImagesPerSec: sum, Iterations: 30, Warmup: 10, Seconds: 1}
	}
	type checkCase struct {
		Name      string          `json:"name"`
		Threshold float64         `json:"threshold"`
		Input     *ResNet50Result `json:"input"`
		Check     CheckResult     `json:"check"`
	}
	cases := []checkCase{
		{Name: "H200 bf16 1 GPU (real)", Threshold: 0.8, Input: readResNet50Sample(t, "h200_bf16_1gpu.txt")},
		{Name: "H200 bf16 2 GPUs torchrun (real)", Threshold: 0.8, Input: readResNet50Sample(t, "h200_bf16_2gpu_torchrun.txt")},
		{Name: "H200 bf16 compile (real)", Threshold: 0.8, Input: readResNet50Sample(t, "h200_bf16_compile_1gpu.txt")},
		{Name: "H200 bf16 NCHW (real)", Threshold: 0.8, Input: readResNet50Sample(t, "h200_bf16_nchw_1gpu.txt")},
		{Name: "H200 fp16 (real)", Threshold: 0.8, Input: readResNet50Sample(t, "h200_fp16_1gpu.txt")},
		{Name: "H200 tf32 (real)", Threshold: 0.8, Input: readResNet50Sample(t, "h200_tf32_1gpu.txt")},
		{Name: "H200 tf32 batch 64 NCHW (real)", Threshold: 0.8, Input: readResNet50Sample(t, "h200_tf32_bs64_nchw_1gpu.txt")},
		{Name: "H200 fp32 (real)", Threshold: 0.8, Input: readResNet50Sample(t, "h200_fp32_1gpu.txt")},
		{Name: "H200 bf16 one slow rank of 8, the mean passes", Threshold: 0.8, Input: mk("NVIDIA H200", "bf16", 256, true, false, 4650, 4660, 4655, 4640, 4670, 1200, 4661, 4649)},
		{Name: "H200 bf16 half speed", Threshold: 0.8, Input: mk("NVIDIA H200", "bf16", 256, true, false, 2300)},
		{Name: "H200 compile run against a strict threshold", Threshold: 1.0, Input: mk("NVIDIA H200", "bf16", 256, true, true, 6500)},
		{Name: "H100 SXM bf16 (fp16 stand-in)", Threshold: 0.8, Input: mk("NVIDIA H100 80GB HBM3", "bf16", 256, true, false, 4200)},
		{Name: "H100 PCIe fp16 slow", Threshold: 0.8, Input: mk("NVIDIA H100 PCIe", "fp16", 256, true, false, 1400)},
		{Name: "A100 PCIe 40GB tf32", Threshold: 0.8, Input: mk("NVIDIA A100-PCIE-40GB", "tf32", 256, true, false, 900, 880)},
		{Name: "V100 tf32 (fp32 stand-in)", Threshold: 0.8, Input: mk("Tesla V100-SXM2-32GB", "tf32", 112, false, false, 340)},
		{Name: "P100 seed recipe (820 img/s on 4)", Threshold: 0.8, Input: mk("Tesla P100-SXM2-16GB", "fp32", 64, false, false, 205, 205, 205, 205)},
		{Name: "L4 has no reference", Threshold: 0.8, Input: mk("NVIDIA L4", "bf16", 128, true, false, 400)},
		{Name: "unknown GPU", Threshold: 0.8, Input: mk("Quadro RTX 6000", "fp16", 128, true, false, 400)},
		{Name: "V100 bf16 has no reference", Threshold: 0.8, Input: mk("Tesla V100-SXM2-16GB", "bf16", 256, true, false, 900)},
		{Name: "threshold 0", Threshold: 0, Input: mk("NVIDIA H200", "bf16", 256, true, false, 4600)},
		{Name: "no result", Threshold: 0.8},
	}
	for i := range cases {
		cases[i].Check = ResNet50Check(cases[i].Input, cases[i].Threshold)
	}
	smiGoldenFile(t, filepath.Join("testdata", "resnet50", "checks.golden.json"), smiGoldenJSON(t, cases))

	want := map[string]Status{
		"H200 bf16 1 GPU (real)": StatusPass, "H200 bf16 2 GPUs torchrun (real)": StatusPass,
		"H200 bf16 compile (real)": StatusPass, "H200 bf16 NCHW (real)": StatusPass, "H200 fp16 (real)": StatusPass,
		"H200 tf32 (real)": StatusPass, "H200 tf32 batch 64 NCHW (real)": StatusPass, "H200 fp32 (real)": StatusPass,
		"H200 bf16 one slow rank of 8, the mean passes": StatusPass, "H200 bf16 half speed": StatusFail,
		"H200 compile run against a strict threshold": StatusFail,
		"H100 SXM bf16 (fp16 stand-in)":               StatusPass, "H100 PCIe fp16 slow": StatusFail,
		"A100 PCIe 40GB tf32": StatusPass, "V100 tf32 (fp32 stand-in)": StatusPass,
		"P100 seed recipe (820 img/s on 4)": StatusPass, "L4 has no reference": StatusSkip, "unknown GPU": StatusSkip,
		"V100 bf16 has no reference": StatusSkip, "threshold 0": StatusError, "no result": StatusError,
	}
	for _, c := range cases {
		if c.Check.Status != want[c.Name] {
			t.Errorf("%s: %s (%s), want %s", c.Name, c.Check.Status, c.Check.Message, want[c.Name])
		}
		if c.Check.Name != ResNet50CheckName || c.Check.GPU != -1 || c.Check.Message == "" {
			t.Errorf("%s: %+v", c.Name, c.Check)
		}
		if c.Check.Status == StatusPass || c.Check.Status == StatusFail {
			if c.Input.Reference <= 0 || c.Input.ReferenceSource == "" || c.Input.Threshold != c.Threshold {
				t.Errorf("%s: the reference is not recorded in the result: %+v", c.Name, c.Input)
			}
		}
	}
	// The recorded result still encodes to the report's JSON.
	if _, err := json.Marshal(cases[0].Input); err != nil {
		t.Fatal(err)
	}
}
