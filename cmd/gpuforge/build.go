package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/builders/registry"
	"github.com/gpuforge/gpuforge/pipeline"
	"github.com/gpuforge/gpuforge/recipes"
	"github.com/gpuforge/gpuforge/validate"
)

func newBuildCmd() *cobra.Command {
	var rf recipeFlags
	var targets []string
	var progress, outDir, metadataFile string
	var push, skipValidation, runValidation bool
	var mf machineFlags
	var af awsFlags
	cmd := &cobra.Command{
		Use:   "build [path]",
		Short: "Build the image targets of a recipe on BuildKit, write them as OCI layouts, push them",
		Long: `Build loads and checks a recipe, then builds its container image targets on BuildKit, all in
one run: a base they share is built once, independent images build in parallel, and BuildKit's
cache makes an unchanged rebuild a no-op. Without --builder (or BUILDKIT_HOST) gpuforge starts
its own buildkitd and reuses it across runs (gpuforge builder stop stops it).

Each image is written as an OCI layout under --out (default .gpuforge/out/NAME), then to the
outputs the recipe lists (an OCI tarball, a docker tarball, another layout), then pushed to its
tags when the image says push = true or --push is given. The build manifest (JSON, schema v1)
records every digest, tag and push; --metadata-file writes it.

A validate block gates the push of its image: --validate runs those validations on this
machine's GPUs after the build (as gpuforge validate does) and pushes only what passed; without
it such a push is refused, unless --skip-validation says to push without the GPU check.
A machine_image target is built into a bootable disk: its root filesystem on BuildKit (the
kernel, the NVIDIA modules built by DKMS for that kernel, the runtimes), exported and written
with an EFI system partition into a GPT disk (mkfs.ext4 -d, no loop devices or mounts),
converted to the recipe's formats with qemu-img, then booted in QEMU with OVMF until the image
reports its kernel, root filesystem, NVIDIA module, docker and cloud-init over the serial
console (--skip-boot-check skips that; a failed boot check is exit code 5). Disks are written
to OUT/NAME/NAME.FORMAT. With an ami block, a disk that passed its boot check is uploaded to an
EBS snapshot (EBS direct APIs), registered, copied, shared and published in SSM; a failure
removes what the run created (--no-ami skips the AMI; --aws-* select the account and endpoint).`,
		Example: `  gpuforge build examples/quickstart.hcl
  gpuforge build -t trainer --push --metadata-file build.json examples/ngc-pytorch.hcl
  gpuforge build -t gpu-node --no-ami examples/gpu-node-debian.hcl`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch progress {
			case "auto", "tty", "plain", "rawjson", "quiet":
			default:
				return exitf(ExitUsage, "--progress must be auto, tty, plain, rawjson or quiet, not %q", progress)
			}
			r, diags, err := rf.load(cmd, pathArg(args), "text")
			if err != nil {
				return err
			}
			if diags.HasErrors() {
				return exitf(ExitRecipe, "")
			}
			plan, err := pipeline.NewPlan(r, targets)
			if err != nil {
				return exitf(ExitUsage, "%s", r.Redact(err.Error()))
			}
			b := &buildRun{cmd: cmd, r: r, plan: plan, outDir: outDir, push: push, skipValidation: skipValidation, runValidation: runValidation, progress: progress, machine: mf, aws: af}
			err = b.run()
			if metadataFile != "" && b.manifest != nil {
				if werr := b.manifest.WriteFile(metadataFile); werr != nil && err == nil {
					err = exitf(ExitFailed, "writing %s: %s", metadataFile, werr)
				}
			}
			if err != nil {
				var ee *exitError
				if errors.As(err, &ee) {
					return err
				}
				return exitf(ExitFailed, "%s", r.Redact(err.Error()))
			}
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().StringArrayVarP(&targets, "target", "t", nil, "build only this target or group, with what it needs (repeatable)")
	cmd.Flags().StringVar(&progress, "progress", "auto", "progress output: auto, tty, plain, rawjson or quiet")
	cmd.Flags().StringVar(&outDir, "out", filepath.Join(".gpuforge", "out"), "directory of the OCI layouts, one per image")
	cmd.Flags().BoolVar(&push, "push", false, "push every built image to its tags")
	cmd.Flags().BoolVar(&skipValidation, "skip-validation", false, "push images even when a validation gates them, without running it")
	cmd.Flags().BoolVar(&runValidation, "validate", false, "run the validations of the built images on this machine's GPUs; push only images that pass")
	cmd.Flags().StringVar(&metadataFile, "metadata-file", "", "write the build manifest (JSON) to this file")
	cmd.Flags().BoolVar(&mf.skipBootCheck, "skip-boot-check", false, "do not boot machine image disks in QEMU")
	cmd.Flags().DurationVar(&mf.bootTimeout, "boot-timeout", 15*time.Minute, "time limit of a machine image's boot check")
	cmd.Flags().BoolVar(&mf.keepRootfs, "keep-rootfs", false, "keep a machine image's exported root filesystem and EFI partition files under OUT/NAME/.work")
	cmd.Flags().BoolVar(&mf.noAMI, "no-ami", false, "build machine images' disks only, without their AMI stages")
	af.register(cmd)
	return cmd
}

type buildRun struct {
	cmd            *cobra.Command
	r              *recipes.Recipe
	plan           *pipeline.Plan
	outDir         string
	progress       string
	push           bool
	skipValidation bool
	runValidation  bool
	manifest       *pipeline.Manifest
	machine        machineFlags
	aws            awsFlags
	epoch          *time.Time
}

func (b *buildRun) run() error {
	start := time.Now()
	stderr := b.cmd.ErrOrStderr()
	var images, machines, skipped, notRun []string
	gated := map[string][]string{} // image -> validations that gate its push
	for _, t := range b.plan.Targets {
		switch {
		case t.Kind == recipes.KindImage:
			images = append(images, t.Name)
		case t.Kind == recipes.KindMachineImage:
			machines = append(machines, t.Name)
		case t.Kind == recipes.KindValidate && b.runValidation && b.r.Validate(t.Name) != nil &&
			b.r.Validate(t.Name).Target.Kind == recipes.KindImage:
			// --validate runs it after the build.
		case t.Kind == recipes.KindValidate:
			notRun = append(notRun, t.Address)
		default:
			skipped = append(skipped, t.Address)
		}
	}
	// A validation gates the publishing of its target, whether the recipe or --push asks for it.
	for _, v := range b.r.Validates {
		if v.Target.Kind == recipes.KindImage {
			gated[v.Target.Name] = append(gated[v.Target.Name], recipes.KindValidate+"."+v.Name)
		}
	}
	if len(skipped) > 0 {
		fmt.Fprintf(stderr, "gpuforge: not built by this version (see gpuforge plan): %s\n", strings.Join(skipped, ", "))
	}
	if len(notRun) > 0 {
		fmt.Fprintf(stderr, "gpuforge: validations not run (pass --validate to run them on this machine's GPUs): %s\n", strings.Join(notRun, ", "))
	}
	if len(images) == 0 && len(machines) == 0 {
		return exitf(ExitUsage, "nothing to build: the selection has no image or machine image targets")
	}
	// A validation of a machine image gates the distribution of its AMI, and this version runs
	// machine image validations only on a booted host (gpuforge validate --host).
	for _, name := range machines {
		m := b.r.MachineImage(name)
		if m == nil || m.AMI == nil || b.machine.noAMI || b.skipValidation {
			continue
		}
		for _, v := range b.r.Validates {
			if v.Target.Kind == recipes.KindMachineImage && v.Target.Name == name {
				return exitf(ExitUsage, "machine_image.%s's AMI would be shared, but %s must pass first, on a host booted from it (gpuforge validate --host); pass --no-ami to build the disks only, or --skip-validation to bake the AMI without it",
					name, recipes.KindValidate+"."+v.Name)
			}
		}
	}
	pushes := map[string]bool{}
	for _, name := range images {
		img := b.r.Image(name)
		if len(img.Tags) > 0 && (b.push || (img.Push != nil && *img.Push)) {
			if len(gated[name]) > 0 && !b.skipValidation && !b.runValidation {
				return exitf(ExitUsage, "image.%s would be pushed, but %s must pass first: pass --validate to run it on this machine's GPUs, or --skip-validation to push without it",
					name, strings.Join(gated[name], ", "))
			}
			pushes[name] = true
		}
	}

	ctx, stop := pipeline.SignalContext(b.cmd.Context())
	defer stop()
	bc, err := connectBuilder(b.cmd)
	if err != nil {
		return err
	}
	defer bc.Close()
	c := bc.primary // machine images and in-image checks build for this machine's platform

	kc := recipeKeychain(b.r)
	opts := []buildkit.BuildOption{
		buildkit.WithOutDir(b.outDir),
		buildkit.WithKeychain(kc),
		buildkit.WithProvenance(len(pushes) > 0),
		buildkit.WithBootstrapLog(io.Discard),
	}
	if b.progress != "quiet" {
		opts = append(opts, buildkit.WithProgress(progressWriter(stderr, b.r), b.progress))
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return exitf(ExitUsage, "SOURCE_DATE_EPOCH=%q is not a number of seconds", s)
		}
		t := time.Unix(sec, 0)
		b.epoch = &t
		opts = append(opts, buildkit.WithEpoch(t))
	}
	rep := &buildkit.Report{}
	if len(images) > 0 {
		if rep, err = buildkit.BuildOn(ctx, bc.nodes, b.r, images, opts...); err != nil {
			if ctx.Err() != nil {
				return exitf(ExitInterrupted, "interrupted: %s", b.r.Redact(err.Error()))
			}
			return err
		}
	}

	b.manifest = pipeline.NewManifest(buildID(start), version, pipeline.NewRecipeRecord(b.r.Path, recipeSources(b.r)), start)
	failedValidation := map[string]bool{} // image name -> a validation of it failed
	if b.runValidation {
		var reports []*validate.Report
		for _, img := range rep.Images {
			name := strings.TrimPrefix(img.Address, recipes.KindImage+".")
			for _, v := range b.r.Validates {
				if v.Target.Kind != recipes.KindImage || v.Target.Name != name {
					continue
				}
				vr, err := runInImage(ctx, b.cmd, c, specFromBlock(v), img.LayoutDir, img.Digest, "", "", b.progress)
				if err != nil {
					return err
				}
				reports = append(reports, vr)
				addr := recipes.KindValidate + "." + v.Name
				b.manifest.RecordTarget(addr, pipeline.TargetValidate)
				data, _ := vr.JSON()
				b.manifest.RecordValidation(addr, pipeline.ValidationRecord{Verdict: pipeline.Verdict(vr.Verdict), Report: data})
				if vr.Verdict != validate.VerdictPass {
					failedValidation[name] = true
				}
			}
		}
		if len(reports) > 0 {
			if err := writeReports(b.cmd, reports, filepath.Join(b.outDir, "validation")); err != nil {
				var ee *exitError
				if !errors.As(err, &ee) || ee.code != ExitValidationFailed {
					return err
				}
			}
		}
	}
	for _, img := range rep.Images {
		name := strings.TrimPrefix(img.Address, recipes.KindImage+".")
		b.manifest.RecordTarget(img.Address, pipeline.TargetImage)
		rec := pipeline.ImageRecord{Digest: img.Digest.String(), Tags: img.Tags, OCILayout: img.LayoutDir, Size: layoutSize(img.LayoutDir)}
		for _, n := range img.Nodes {
			if rec.BuiltOn == nil {
				rec.BuiltOn = map[string]string{}
			}
			rec.BuiltOn[n.Platform] = n.Node
		}
		rec.Platform = strings.Join(img.Platforms, ",")
		for _, o := range b.r.Image(name).Outputs {
			out, _ := recipes.ParseOutput(o)
			if !filepath.IsAbs(out.Dest) {
				out.Dest = filepath.Join(b.r.Dir, out.Dest) // relative to the recipe, like copy sources
			}
			if err := buildkit.WriteOutput(img.LayoutDir, img.Tags, out); err != nil {
				return fmt.Errorf("%s: output %s: %w", img.Address, o, err)
			}
			if out.Type != "oci-layout" {
				rec.Tarball = out.Dest
			}
		}
		if pushes[name] && failedValidation[name] {
			fmt.Fprintf(stderr, "gpuforge: not pushing %s: a validation of it failed\n", img.Address)
		} else if pushes[name] {
			for _, tag := range img.Tags {
				d, err := registry.Push(ctx, img.LayoutDir, tag, registry.WithKeychain(kc), registry.WithRegistries(b.r.Registries),
					registry.WithRefName(img.Digest.String()))
				if err != nil {
					return err
				}
				rec.PushedTo = append(rec.PushedTo, d.String())
			}
		}
		b.manifest.RecordImage(img.Address, rec)
	}
	var outcomes []*machineOutcome
	bootFailed := false
	built := map[string]*buildkit.ImageResult{}
	for _, img := range rep.Images {
		built[img.Address] = img
	}
	for _, name := range machines {
		mo, err := b.buildMachine(ctx, c, name, opts, built)
		if err != nil {
			if ctx.Err() != nil {
				return exitf(ExitInterrupted, "interrupted: %s", b.r.Redact(err.Error()))
			}
			return err
		}
		outcomes = append(outcomes, mo)
		rep.Steps = append(rep.Steps, mo.steps...)
		var boot *pipeline.BootCheckRecord
		if mo.boot != nil {
			boot = &pipeline.BootCheckRecord{Verdict: pipeline.Verdict(mo.boot.Verdict), Reason: mo.boot.Reason, Accel: mo.boot.Accel, DurationMS: mo.boot.Took.Milliseconds()}
			if mo.boot.Verdict != "pass" {
				bootFailed = true
			}
		}
		b.manifest.RecordMachine(mo.address, mo.kernel, boot)
		for _, d := range mo.disks {
			b.manifest.RecordDisk(mo.address, d)
		}
		for _, a := range mo.amis {
			b.manifest.RecordAMI(mo.address, a)
		}
	}
	b.manifest.Finished = time.Now().UTC()
	b.manifest.Status = pipeline.OutcomeSucceeded
	if len(failedValidation) > 0 || bootFailed {
		b.manifest.Status = pipeline.OutcomeFailed
	}
	if err := b.manifest.WriteFile(filepath.Join(b.outDir, "manifest.json")); err != nil {
		return err
	}
	b.summary(rep, outcomes, time.Since(start))
	for _, mo := range outcomes {
		if mo.boot != nil {
			fmt.Fprintf(b.cmd.OutOrStdout(), "\nBoot check of %s:\n", mo.address)
			if err := mo.boot.WriteText(b.cmd.OutOrStdout()); err != nil {
				return err
			}
		}
	}
	if bootFailed {
		return exitf(ExitValidationFailed, "boot check failed")
	}
	if len(failedValidation) > 0 {
		return exitf(ExitValidationFailed, "validation failed; the images it gates were not pushed")
	}
	return nil
}

// summary prints one screen: each image with its digest, platforms, size, tags and pushes, then
// the cache hits and the time.
func (b *buildRun) summary(rep *buildkit.Report, machines []*machineOutcome, took time.Duration) {
	w := tabwriter.NewWriter(redactWriter{b.cmd.OutOrStdout(), b.r}, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TARGET\tDIGEST\tPLATFORMS\tSIZE\tOUTPUT")
	for _, img := range rep.Images {
		rec := b.manifest.Target(img.Address)
		size := int64(0)
		var pushed []string
		if rec != nil && len(rec.Images) > 0 {
			size = rec.Images[0].Size
			pushed = rec.Images[0].PushedTo
		}
		out := img.LayoutDir
		if len(pushed) > 0 {
			out = strings.Join(img.Tags, ", ") + " (pushed)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", img.Address, shortDigest(img.Digest.String()), strings.Join(img.Platforms, ","), humanBytes(size), out)
	}
	for _, mo := range machines {
		var paths []string
		sum := ""
		for _, d := range mo.disks {
			paths = append(paths, d.Path)
			if sum == "" {
				sum = "sha256:" + d.SHA256
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", mo.address, shortDigest(sum), "kernel "+mo.kernel, humanBytes(mo.size), strings.Join(paths, ", "))
	}
	w.Flush()
	for _, img := range rep.Images {
		if len(img.Nodes) == 0 {
			continue
		}
		var on []string
		for _, n := range img.Nodes {
			on = append(on, fmt.Sprintf("%s on %s (%s)", n.Platform, n.Node, n.Duration.Round(100*time.Millisecond)))
		}
		fmt.Fprintf(b.cmd.OutOrStdout(), "%s built %s\n", img.Address, strings.Join(on, ", "))
	}
	fmt.Fprintf(b.cmd.OutOrStdout(), "%d/%d steps from cache, %s. Manifest: %s\n", rep.CacheHits(), len(rep.Steps),
		took.Round(100*time.Millisecond), filepath.Join(b.outDir, "manifest.json"))
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// layoutSize is the size of everything the layout's images reference: manifests, configs and
// layers, through nested indexes (a multi-platform image, or one with an attestation).
func layoutSize(dir string) int64 {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return 0
	}
	seen := map[string]bool{}
	var walk func(idx v1.ImageIndex) int64
	walk = func(idx v1.ImageIndex) int64 {
		m, err := idx.IndexManifest()
		if err != nil {
			return 0
		}
		var total int64
		for _, d := range m.Manifests {
			if seen[d.Digest.String()] {
				continue
			}
			seen[d.Digest.String()] = true
			total += d.Size
			if d.MediaType.IsIndex() {
				if inner, err := idx.ImageIndex(d.Digest); err == nil {
					total += walk(inner)
				}
				continue
			}
			if img, err := idx.Image(d.Digest); err == nil {
				if mf, err := img.Manifest(); err == nil {
					total += mf.Config.Size
					for _, l := range mf.Layers {
						total += l.Size
					}
				}
			}
		}
		return total
	}
	return walk(idx)
}

// progressWriter is where BuildKit's progress goes: the terminal itself when the recipe has no
// sensitive value (so the tty display works), else a redacting writer (the display then falls
// back to plain output).
func progressWriter(stderr io.Writer, r *recipes.Recipe) io.Writer {
	if len(r.SensitiveValues()) == 0 {
		return stderr
	}
	return redactWriter{stderr, r}
}

func buildID(t time.Time) string {
	return fmt.Sprintf("%s-%d", t.UTC().Format("20060102T150405Z"), os.Getpid())
}

func recipeSources(r *recipes.Recipe) map[string][]byte {
	out := map[string][]byte{}
	for name, f := range r.Files {
		out[name] = f.Bytes
	}
	return out
}

// recipeKeychain is the credentials of a recipe: its registry blocks, docker's config and
// helpers, and the NGC key from the environment variable its frameworks name.
func recipeKeychain(r *recipes.Recipe) *registry.Keychain {
	var opts []registry.KeychainOption
	for _, f := range r.Frameworks {
		if f.APIKeyEnv != "" {
			opts = append(opts, registry.WithNGCKeyEnv(f.APIKeyEnv))
			break
		}
	}
	return registry.NewKeychain(r.Registries, opts...)
}
