package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/pipeline"
	"github.com/gpuforge/gpuforge/recipes"
	"github.com/gpuforge/gpuforge/validate"
)

// ExitValidationFailed is the exit code of a validation whose verdict is fail.
const ExitValidationFailed = 5

// validateFlags are the checks asked for on the command line (--image and --host modes);
// recipe mode takes them from the validate blocks.
type validateFlags struct {
	gpus, model, minDriver, precision, python string
	count, batch, iterations, warmup          int
	resnet, smi, compile                      bool
	fraction                                  float64
}

func newValidateCmd() *cobra.Command {
	var rf recipeFlags
	var vf validateFlags
	var targets []string
	var host bool
	var image, outDir, progress, cdiDir, driverRoot string
	cmd := &cobra.Command{
		Use:   "validate [path]",
		Short: "Run a recipe's GPU checks: nvidia-smi and a ResNet-50 smoke benchmark in the image, NVML checks on the host",
		Long: `Validate runs the checks of a recipe's validate blocks on this machine's GPUs and prints a
verdict. For a container image target it builds the image (from cache when unchanged), generates a
CDI spec for the host's driver (NVIDIA's nvcdi; the driver root is found, /usr/local/nvidia
included), and runs the checks inside the image through BuildKit with the selected GPUs attached:
nvidia-smi (count, model, driver) and a ResNet-50 training smoke benchmark (synthetic data, one
process per GPU, DDP over NCCL for several) compared with the reference figure for the GPU model.

--host checks this machine instead (a host booted from a machine image): NVML inventory and health
(count, model, driver and CUDA versions, ECC and uncorrectable errors, retired pages or remapped
rows, PCIe link, throttling, MIG, NVLink, persistence), nvidia-smi, and with --resnet50 the
benchmark with the host's Python (--python).

--image LAYOUT runs the in-image checks on an OCI layout without a recipe.

Reports: a Markdown summary here, and JSON plus an HTML report with a chart under --out. NCCL_*
and CUDA_* variables of this environment pass through to the checks. Exit code 0 when every
validation passes, 5 when one fails.`,
		Example: `  gpuforge validate examples/quickstart.hcl
  gpuforge validate --host --expect-model H200 --resnet50 --python /opt/torch/.venv/bin/python
  gpuforge validate --image .gpuforge/out/trainer --gpus 0,1 --resnet50`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if host && image != "" {
				return exitf(ExitUsage, "--host and --image exclude each other")
			}
			ctx, stop := pipeline.SignalContext(cmd.Context())
			defer stop()
			var reports []*validate.Report
			var err error
			switch {
			case host:
				var rep *validate.Report
				rep, err = hostValidation(ctx, vf)
				reports = append(reports, rep)
			case image != "":
				var rep *validate.Report
				rep, err = imageValidation(ctx, cmd, image, vf, cdiDir, driverRoot, progress)
				reports = append(reports, rep)
			default:
				reports, err = recipeValidations(ctx, cmd, &rf, args, targets, outDir, cdiDir, driverRoot, progress)
			}
			if err != nil {
				return err
			}
			return writeReports(cmd, reports, outDir)
		},
	}
	rf.register(cmd)
	f := cmd.Flags()
	f.StringArrayVarP(&targets, "target", "t", nil, "run only this validate block (repeatable)")
	f.BoolVar(&host, "host", false, "check this machine's GPUs with NVML instead of an image")
	f.StringVar(&image, "image", "", "check an image in an OCI layout directory (LAYOUT or LAYOUT@sha256:…)")
	f.StringVar(&outDir, "out", filepath.Join(".gpuforge", "validation"), "directory of the JSON and HTML reports")
	f.StringVar(&progress, "progress", "auto", "progress output: auto, tty, plain, rawjson or quiet")
	f.StringVar(&cdiDir, "cdi-dir", "", "where to write the CDI spec (default: the local builder's spec directory)")
	f.StringVar(&driverRoot, "driver-root", "", "root of the NVIDIA driver files (default: found automatically)")
	f.StringVar(&vf.gpus, "gpus", "all", "GPUs to check: all, indices (0,1) or UUIDs")
	f.IntVar(&vf.count, "expect-count", 0, "expected number of GPUs (0: any)")
	f.StringVar(&vf.model, "expect-model", "", "expected GPU model, e.g. H200")
	f.StringVar(&vf.minDriver, "min-driver", "", "minimum driver version or branch")
	f.BoolVar(&vf.smi, "nvidia-smi", true, "run nvidia-smi")
	f.BoolVar(&vf.resnet, "resnet50", false, "run the ResNet-50 smoke benchmark")
	f.IntVar(&vf.batch, "batch-size", 256, "ResNet-50 batch size per GPU")
	f.StringVar(&vf.precision, "precision", "bf16", "ResNet-50 precision: bf16, fp16, fp32 or tf32")
	f.IntVar(&vf.iterations, "iterations", 30, "ResNet-50 timed iterations")
	f.IntVar(&vf.warmup, "warmup", 10, "ResNet-50 warm-up iterations")
	f.BoolVar(&vf.compile, "compile", false, "ResNet-50 with torch.compile")
	f.Float64Var(&vf.fraction, "min-fraction", 0.8, "pass line as a fraction of the reference img/s")
	f.StringVar(&vf.python, "python", "python3", "Python with torch and torchvision, for --host --resnet50")
	return cmd
}

// passthroughEnv returns the NCCL_* and CUDA_* variables of this environment (a GPU host's
// settings, such as NCCL_NVLS_ENABLE=0) and the validate block's own.
func passthroughEnv(extra map[string]string) map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NCCL_") || strings.HasPrefix(k, "CUDA_") || k == "TORCH_NCCL_ASYNC_ERROR_HANDLING" {
			env[k] = v
		}
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func envNames(env map[string]string) []string {
	var out []string
	for k := range env {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// inImageScript is what runs inside the image: nvidia-smi and the benchmark, each with its
// output and exit status kept as files, so one failing does not hide the other.
func inImageScript(smi bool, resnetArgs []string) string {
	var parts []string
	if smi {
		parts = append(parts, shellJoin(validate.NvidiaSMIArgs)+" > /gpuforge/out/smi.csv 2> /gpuforge/out/smi.err; echo $? > /gpuforge/out/smi.rc")
	}
	if resnetArgs != nil {
		cmd := resnetCommand(resnetArgs, "python3", "/gpuforge/in/resnet50.py")
		parts = append(parts, shellJoin(cmd)+" > /gpuforge/out/resnet50.log 2>&1; echo $? > /gpuforge/out/resnet50.rc")
	}
	parts = append(parts, "true")
	return strings.Join(parts, "; ")
}

// resnetCommand is ResNet50Args with the Python and the script where this run has them.
func resnetCommand(args []string, python, script string) []string {
	out := append([]string{}, args...)
	for i, a := range out {
		if a == validate.ResNet50ScriptPath {
			out[i] = script
		}
	}
	if len(out) > 0 && out[0] == "python3" {
		out[0] = python
	}
	return out
}

func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

// checkSpec is one validation's checks, from a validate block or the command line.
type checkSpec struct {
	name, target, selection string
	gpus                    []string
	smi                     *recipes.NvidiaSMICheck
	resnet                  *recipes.ResNet50Check
	env                     map[string]string
}

func specFromFlags(name, target string, vf validateFlags) (checkSpec, error) {
	sel, err := recipes.ParseGPUs(vf.gpus)
	if err != nil {
		return checkSpec{}, exitf(ExitUsage, "--gpus: %s", err)
	}
	s := checkSpec{name: name, target: target, selection: vf.gpus, gpus: sel, env: passthroughEnv(nil)}
	if vf.smi {
		s.smi = &recipes.NvidiaSMICheck{ExpectCount: vf.count, ExpectModel: vf.model, MinDriver: vf.minDriver}
	}
	if vf.resnet {
		s.resnet = &recipes.ResNet50Check{BatchSize: vf.batch, Precision: vf.precision, Iterations: vf.iterations,
			Warmup: vf.warmup, Compile: vf.compile, MinFractionOfReference: vf.fraction}
	}
	return s, nil
}

func specFromBlock(v *recipes.Validate) checkSpec {
	return checkSpec{name: recipes.KindValidate + "." + v.Name, target: v.Target.Addr(), selection: or(v.GPUs, "all"),
		gpus: v.GPUSelection, smi: v.NvidiaSMI, resnet: v.ResNet50, env: passthroughEnv(v.Env)}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// resnetSettings fills the defaults of a resnet50 block.
func resnetSettings(r *recipes.ResNet50Check, gpus int) (args []string, batch int, precision string, threshold float64) {
	batch, precision, threshold = r.BatchSize, or(r.Precision, "bf16"), r.MinFractionOfReference
	if batch == 0 {
		batch = 256
	}
	if threshold == 0 {
		threshold = 0.8
	}
	iters, warmup := r.Iterations, r.Warmup
	if iters == 0 {
		iters = 30
	}
	if warmup == 0 {
		warmup = 10
	}
	channelsLast := r.ChannelsLast == nil || *r.ChannelsLast
	return validate.ResNet50Args(batch, precision, gpus, warmup, iters, channelsLast, r.Compile), batch, precision, threshold
}

// runInImage runs a check spec inside an image and turns what comes back into a report.
func runInImage(ctx context.Context, cmd *cobra.Command, c *client.Client, spec checkSpec, layoutDir string, d digest.Digest,
	cdiDir, driverRoot, progress string) (*validate.Report, error) {
	rep := &validate.Report{Validation: spec.name, Target: spec.target, Image: d.String(), Selection: spec.selection,
		Started: time.Now().UTC(), Env: envNames(spec.env)}
	rep.Host, _ = os.Hostname()
	cdiSpec, err := validate.GenerateCDISpec(validate.CDIOptions{DriverRoot: driverRoot})
	if err != nil {
		return nil, exitf(ExitFailed, "generating the CDI spec for this host's GPUs: %s", err)
	}
	if err := validate.ValidateCDISpec(cdiSpec); err != nil {
		return nil, exitf(ExitFailed, "the generated CDI spec is not valid: %s", err)
	}
	if cdiDir == "" {
		if cdiDir, err = buildkit.CDISpecDir(""); err != nil {
			return nil, err
		}
	}
	if _, err := validate.WriteCDISpec(cdiSpec, cdiDir); err != nil {
		return nil, exitf(ExitFailed, "writing the CDI spec: %s", err)
	}
	devices, err := validate.CDIDeviceNames(cdiSpec, spec.gpus)
	if err != nil {
		return nil, exitf(ExitUsage, "%s: %s", spec.name, err)
	}
	ngpus := len(spec.gpus) // 0: the benchmark uses every GPU it sees
	var resnetArgs []string
	var batch int
	var precision string
	var threshold float64
	if spec.resnet != nil {
		resnetArgs, batch, precision, threshold = resnetSettings(spec.resnet, ngpus)
	}
	files, err := buildkit.RunInImage(ctx, c, buildkit.InImageRun{
		LayoutDir: layoutDir, Digest: d, Platform: platforms.DefaultSpec(), Devices: devices,
		Files: map[string][]byte{"resnet50.py": validate.ResNet50Script}, Script: inImageScript(spec.smi != nil, resnetArgs),
		Env: spec.env, Name: spec.name,
	}, cmd.ErrOrStderr(), progress)
	if err != nil {
		return nil, exitf(ExitFailed, "%s: running the checks in %s: %s", spec.name, spec.target, err)
	}
	collect(rep, files, spec, batch, precision, threshold)
	rep.Finished = time.Now().UTC()
	rep.Decide()
	return rep, nil
}

// collect turns the files the in-image (or host) run wrote into checks.
func collect(rep *validate.Report, files map[string][]byte, spec checkSpec, batch int, precision string, threshold float64) {
	if spec.smi != nil {
		rc := strings.TrimSpace(string(files["smi.rc"]))
		if rc != "0" {
			rep.Checks = append(rep.Checks, validate.CheckResult{Name: "nvidia_smi", Status: validate.StatusError, GPU: -1,
				Message: fmt.Sprintf("nvidia-smi failed in the image (exit %s): %s", or(rc, "?"), lastLine(files["smi.err"]))})
		} else if gpus, err := validate.ParseNvidiaSMI(files["smi.csv"]); err != nil {
			rep.Checks = append(rep.Checks, validate.CheckResult{Name: "nvidia_smi", Status: validate.StatusError, GPU: -1, Message: err.Error()})
		} else {
			rep.GPUs = gpus
			rep.Checks = append(rep.Checks, validate.NvidiaSMICheck(gpus, spec.smi.ExpectCount, spec.smi.ExpectModel, spec.smi.MinDriver)...)
		}
	}
	if spec.resnet != nil {
		rc := strings.TrimSpace(string(files["resnet50.rc"]))
		res, err := validate.ParseResNet50Output(files["resnet50.log"])
		if rc != "0" || err != nil {
			msg := fmt.Sprintf("the ResNet-50 benchmark failed (exit %s)", or(rc, "?"))
			if err != nil {
				msg += ": " + err.Error()
			}
			rep.Checks = append(rep.Checks, validate.CheckResult{Name: "resnet50", Status: validate.StatusError, GPU: -1,
				Message: msg + "; last output: " + lastLine(files["resnet50.log"])})
			return
		}
		_, _ = batch, precision // the script reports both; ResNet50Check picks the reference
		rep.ResNet50 = res
		rep.Checks = append(rep.Checks, validate.ResNet50Check(res, threshold))
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func imageValidation(ctx context.Context, cmd *cobra.Command, image string, vf validateFlags, cdiDir, driverRoot, progress string) (*validate.Report, error) {
	dir, dg, _ := strings.Cut(image, "@")
	d := digest.Digest(dg)
	if d == "" {
		var err error
		if d, err = layoutDigest(dir); err != nil {
			return nil, exitf(ExitUsage, "--image %s: %s", image, err)
		}
	}
	spec, err := specFromFlags("validate.image", dir, vf)
	if err != nil {
		return nil, err
	}
	c, err := connectFromFlags(cmd)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return runInImage(ctx, cmd, c, spec, dir, d, cdiDir, driverRoot, progress)
}

func recipeValidations(ctx context.Context, cmd *cobra.Command, rf *recipeFlags, args, targets []string, outDir, cdiDir, driverRoot, progress string) ([]*validate.Report, error) {
	r, diags, err := rf.load(cmd, pathArg(args), "text")
	if err != nil {
		return nil, err
	}
	if diags.HasErrors() {
		return nil, exitf(ExitRecipe, "")
	}
	var blocks []*recipes.Validate
	if len(targets) == 0 {
		blocks = r.Validates
	}
	for _, t := range targets {
		v := r.Validate(strings.TrimPrefix(t, recipes.KindValidate+"."))
		if v == nil {
			return nil, exitf(ExitUsage, "there is no validate block %q in this recipe", t)
		}
		blocks = append(blocks, v)
	}
	if len(blocks) == 0 {
		return nil, exitf(ExitUsage, "the recipe has no validate blocks")
	}
	c, err := connectFromFlags(cmd)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var reports []*validate.Report
	for _, v := range blocks {
		if v.Target.Kind != recipes.KindImage {
			return nil, exitf(ExitUsage, "validate.%s checks %s, a machine image: boot a host from it and run gpuforge validate --host there", v.Name, v.Target.Addr())
		}
		rep, err := buildkit.Build(ctx, c, r, []string{v.Target.Name}, buildkit.WithOutDir(filepath.Join(filepath.Dir(outDir), "out")),
			buildkit.WithKeychain(recipeKeychain(r)), buildkit.WithProgress(redactWriter{cmd.ErrOrStderr(), r}, progress))
		if err != nil {
			return nil, exitf(ExitFailed, "%s", r.Redact(err.Error()))
		}
		img := rep.Images[0]
		vr, err := runInImage(ctx, cmd, c, specFromBlock(v), img.LayoutDir, img.Digest, cdiDir, driverRoot, progress)
		if err != nil {
			return nil, err
		}
		reports = append(reports, vr)
	}
	return reports, nil
}

// writeReports prints the Markdown summary and writes the JSON reports and the HTML page.
func writeReports(cmd *cobra.Command, reports []*validate.Report, outDir string) error {
	if err := validate.WriteMarkdown(cmd.OutOrStdout(), reports); err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	failed := false
	for _, rep := range reports {
		data, err := rep.JSON()
		if err != nil {
			return err
		}
		name := strings.ReplaceAll(strings.TrimPrefix(rep.Validation, recipes.KindValidate+"."), "/", "_")
		if err := os.WriteFile(filepath.Join(outDir, name+".json"), append(data, '\n'), 0o644); err != nil {
			return err
		}
		failed = failed || rep.Verdict != validate.VerdictPass
	}
	f, err := os.Create(filepath.Join(outDir, "report.html"))
	if err != nil {
		return err
	}
	if err := validate.WriteHTML(f, reports); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Reports: %s\n", outDir)
	if failed {
		return exitf(ExitValidationFailed, "validation failed")
	}
	return nil
}

// layoutDigest is the digest of the only image (or index) in an OCI layout.
func layoutDigest(dir string) (digest.Digest, error) {
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return "", err
	}
	var idx struct {
		Manifests []struct {
			Digest digest.Digest `json:"digest"`
		} `json:"manifests"`
	}
	if err := jsonUnmarshal(data, &idx); err != nil {
		return "", err
	}
	seen := map[digest.Digest]bool{}
	for _, m := range idx.Manifests {
		seen[m.Digest] = true
	}
	if len(seen) != 1 {
		return "", fmt.Errorf("the layout holds %d images; say which with LAYOUT@sha256:…", len(seen))
	}
	return idx.Manifests[0].Digest, nil
}
