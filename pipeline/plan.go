package pipeline

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/gpuforge/gpuforge/recipes"
)

// Plan is the resolved DAG of a build: the selected targets, and the stages that build them, each
// after the stages it needs. It is what `gpuforge plan` prints and what the runner executes.
type Plan struct {
	Recipe  string        `json:"recipe"`
	Targets []*PlanTarget `json:"targets"`
	Stages  []*Stage      `json:"stages"`
}

// PlanTarget is one selected target.
type PlanTarget struct {
	Address   string   `json:"address"` // image.trainer
	Kind      string   `json:"kind"`    // image | machine_image | validate
	Name      string   `json:"name"`
	Stages    []string `json:"stages"`
	DependsOn []string `json:"depends_on,omitempty"`
	// Outputs are what the target leaves behind: tags, disk formats, AMI regions.
	Outputs []string `json:"outputs,omitempty"`
}

// Stage kinds. Sources (resolve, bootstrap) are shared by every target that uses them.
const (
	StageResolve       = "resolve"   // pin a registry image to a digest
	StageBootstrap     = "bootstrap" // mmdebstrap a base from a distribution mirror
	StageBuild         = "build"     // BuildKit solve of an image's filesystem
	StageExport        = "export"    // write an OCI layout
	StagePush          = "push"      // push tags to registries
	StageRootfs        = "rootfs"    // a machine image's root filesystem
	StageKernelModule  = "kernel-module"
	StagePreload       = "preload"
	StageDisk          = "disk"
	StageBootCheck     = "boot-check"
	StageAMIUpload     = "ami-upload"
	StageAMIRegister   = "ami-register"
	StageAMIDistribute = "ami-distribute"
	StageCDI           = "cdi"
	StageCheck         = "check"
)

// Stage is one unit of work in the plan.
type Stage struct {
	ID          string   `json:"id"`     // "image.trainer/build"
	Target      string   `json:"target"` // the block it belongs to ("base.debian" for shared sources)
	Kind        string   `json:"kind"`
	After       []string `json:"after,omitempty"`
	Description string   `json:"description"`
	// Runs lists what the stage will do, in order, as a person would read it.
	Runs []string `json:"runs,omitempty"`
}

// NewPlan builds the plan for the selected targets (names as on the command line: targets,
// groups, bare names; none selects the "default" group or every target). Every target a selected
// one builds from is planned too, and validations that gate a selected target's publishing.
func NewPlan(r *recipes.Recipe, selected []string) (*Plan, error) {
	addrs, err := r.Select(selected)
	if err != nil {
		return nil, err
	}
	b := &planner{r: r, p: &Plan{Recipe: r.Path}, stages: map[string]*Stage{}, targets: map[string]*PlanTarget{}}
	for _, a := range addrs {
		b.target(a)
	}
	// A validation gates the publishing of its target: push and AMI distribution wait for it.
	for _, v := range r.Validates {
		addr := recipes.KindValidate + "." + v.Name
		t := b.targets[v.Target.Addr()]
		if t == nil {
			continue
		}
		for _, id := range t.Stages {
			st := b.stages[id]
			if st.Kind == StagePush || st.Kind == StageAMIDistribute {
				b.target(addr)
				st.After = appendUnique(st.After, b.targets[addr].Stages[len(b.targets[addr].Stages)-1])
			}
		}
	}
	b.sortStages()
	b.redact()
	return b.p, nil
}

// sortStages orders the stage list so every stage comes after the stages it waits for (a
// validation added late moves before the push it gates), keeping discovery order otherwise.
func (b *planner) sortStages() {
	done := map[string]bool{}
	var out []*Stage
	var visit func(s *Stage)
	visit = func(s *Stage) {
		if done[s.ID] {
			return
		}
		done[s.ID] = true
		for _, dep := range s.After {
			if d := b.stages[dep]; d != nil {
				visit(d)
			}
		}
		out = append(out, s)
	}
	for _, s := range b.p.Stages {
		visit(s)
	}
	b.p.Stages = out
}

type planner struct {
	r       *recipes.Recipe
	p       *Plan
	stages  map[string]*Stage
	targets map[string]*PlanTarget
}

func (b *planner) add(s *Stage) *Stage {
	if prev, ok := b.stages[s.ID]; ok {
		return prev
	}
	b.stages[s.ID] = s
	b.p.Stages = append(b.p.Stages, s)
	return s
}

// source plans the stage that provides an image's filesystem and returns its ID.
func (b *planner) source(src recipes.Source) string {
	if src.Ref == nil {
		if src.Image == "" || src.Image == recipes.ScratchImage {
			return "" // nothing to resolve: an empty file system
		}
		runs := []string{"resolve " + src.Image}
		if strings.HasPrefix(src.Image, "nvcr.io/") {
			runs = []string{"log in to nvcr.io as $oauthtoken with NGC_API_KEY", "resolve " + src.Image}
		}
		return b.add(&Stage{
			ID: "image-ref." + src.Image + "/" + StageResolve, Target: src.Image, Kind: StageResolve,
			Description: "resolve " + src.Image + " to a digest, recorded in the manifest",
			Runs:        runs,
		}).ID
	}
	switch src.Ref.Kind {
	case recipes.KindBase:
		base := b.r.Base(src.Ref.Name)
		if base == nil {
			return ""
		}
		if bs := base.Bootstrap; bs != nil {
			return b.add(&Stage{
				ID: src.Ref.Addr() + "/" + StageBootstrap, Target: src.Ref.Addr(), Kind: StageBootstrap,
				Description: fmt.Sprintf("bootstrap %s %s with mmdebstrap, cached by its inputs", or(bs.Distribution, "debian"), bs.Suite),
				Runs:        []string{mmdebstrapLine(bs)},
			}).ID
		}
		return b.add(&Stage{
			ID: src.Ref.Addr() + "/" + StageResolve, Target: src.Ref.Addr(), Kind: StageResolve,
			Description: "resolve " + base.Image + " to a digest, recorded in the manifest",
			Runs:        []string{"resolve " + base.Image + platformSuffix(base.Platform)},
		}).ID
	case recipes.KindFramework:
		f := b.r.Framework(src.Ref.Name)
		if f == nil {
			return ""
		}
		runs := []string{"resolve " + f.Image}
		if strings.HasPrefix(f.Image, "nvcr.io/") {
			runs = []string{"log in to nvcr.io as $oauthtoken with " + or(f.APIKeyEnv, "NGC_API_KEY"), "resolve " + f.Image}
		}
		return b.add(&Stage{
			ID: src.Ref.Addr() + "/" + StageResolve, Target: src.Ref.Addr(), Kind: StageResolve,
			Description: "resolve NGC framework " + f.Image + " to a digest",
			Runs:        runs,
		}).ID
	case recipes.KindImage:
		t := b.target(src.Ref.Addr())
		if t == nil {
			return ""
		}
		return src.Ref.Addr() + "/" + StageBuild
	}
	return ""
}

func mmdebstrapLine(bs *recipes.Bootstrap) string {
	args := []string{"mmdebstrap", "--variant=" + or(bs.Variant, "minbase")}
	if len(bs.Components) > 0 {
		args = append(args, "--components="+strings.Join(bs.Components, ","))
	}
	if len(bs.Packages) > 0 {
		args = append(args, "--include="+strings.Join(bs.Packages, ","))
	}
	if bs.Architecture != "" {
		args = append(args, "--architectures="+bs.Architecture)
	}
	args = append(args, bs.Suite, "<oci layout>", or(bs.Mirror, "<host's apt mirror>"))
	return strings.Join(args, " ")
}

func platformSuffix(p string) string {
	if p == "" {
		return ""
	}
	return " for " + p
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// target plans one target (and, first, what it builds from) and returns it.
func (b *planner) target(addr string) *PlanTarget {
	if t, ok := b.targets[addr]; ok {
		return t
	}
	kind, name, _ := strings.Cut(addr, ".")
	t := &PlanTarget{Address: addr, Kind: kind, Name: name}
	b.targets[addr] = t
	switch kind {
	case recipes.KindImage:
		img := b.r.Image(name)
		if img == nil {
			return nil
		}
		b.image(t, img)
	case recipes.KindMachineImage:
		m := b.r.MachineImage(name)
		if m == nil {
			return nil
		}
		b.machineImage(t, m)
	case recipes.KindValidate:
		v := b.r.Validate(name)
		if v == nil {
			return nil
		}
		b.validate(t, v)
	}
	b.p.Targets = append(b.p.Targets, t)
	return t
}

func (b *planner) stage(t *PlanTarget, kind, desc string, after []string, runs []string) *Stage {
	var deps []string
	for _, a := range after {
		if a != "" {
			deps = appendUnique(deps, a)
		}
	}
	s := b.add(&Stage{ID: t.Address + "/" + kind, Target: t.Address, Kind: kind, After: deps, Description: desc, Runs: runs})
	t.Stages = append(t.Stages, s.ID)
	return s
}

func (b *planner) image(t *PlanTarget, img *recipes.Image) {
	from := b.source(img.From)
	if img.From.Ref != nil && img.From.Ref.Kind == recipes.KindImage {
		t.DependsOn = append(t.DependsOn, img.From.Ref.Addr())
	}
	var runs []string
	runs = append(runs, "from "+img.From.String())
	runs = append(runs, aptLines(img.Repositories, img.Packages)...)
	for _, s := range img.Secrets {
		runs = append(runs, fmt.Sprintf("secret %s from %s (BuildKit secret mount, never in a layer)", s.ID, secretSource(s)))
	}
	for _, c := range img.Copies {
		runs = append(runs, fmt.Sprintf("copy %s -> %s", c.Src, c.Dst))
	}
	for _, c := range img.Run {
		runs = append(runs, "run "+c)
	}
	for _, k := range sortedKeys(img.Env) {
		runs = append(runs, fmt.Sprintf("env %s=%s", k, img.Env[k]))
	}
	if img.Workdir != "" {
		runs = append(runs, "workdir "+img.Workdir)
	}
	if img.User != "" {
		runs = append(runs, "user "+img.User)
	}
	if len(img.Entrypoint) > 0 {
		runs = append(runs, "entrypoint "+fmt.Sprintf("%q", img.Entrypoint))
	}
	if len(img.Cmd) > 0 {
		runs = append(runs, "cmd "+fmt.Sprintf("%q", img.Cmd))
	}
	for _, k := range sortedKeys(img.Labels) {
		runs = append(runs, fmt.Sprintf("label %s=%s", k, img.Labels[k]))
	}
	for _, k := range sortedKeys(img.Annotations) {
		runs = append(runs, fmt.Sprintf("annotation %s=%s", k, img.Annotations[k]))
	}
	for _, c := range img.CacheFrom {
		runs = append(runs, "import build cache "+c)
	}
	for _, c := range img.CacheTo {
		runs = append(runs, "export build cache "+c)
	}
	plats := "the builder's platform"
	if len(img.Platforms) > 0 {
		plats = strings.Join(img.Platforms, ", ")
	}
	build := b.stage(t, StageBuild, "build the image for "+plats, []string{from}, runs)
	if img.Push != nil && *img.Push && len(img.Tags) > 0 {
		b.stage(t, StagePush, "push to "+strings.Join(img.Tags, ", "), []string{build.ID}, b.pushLines(img.Tags))
	} else {
		what := "export the OCI layout, untagged"
		if len(img.Tags) > 0 {
			what = "export the OCI layout, tagged " + strings.Join(img.Tags, ", ")
		}
		b.stage(t, StageExport, "export an OCI layout", []string{build.ID}, []string{what})
	}
	t.Outputs = append(t.Outputs, img.Tags...)
}

func secretSource(s *recipes.Secret) string {
	if s.Env != "" {
		return "$" + s.Env
	}
	return s.File
}

// pushLines says how each tag is pushed, naming the registry block that authenticates it.
func (b *planner) pushLines(tags []string) []string {
	var out []string
	for _, t := range tags {
		host := registryHost(t)
		line := "push " + t
		if rg := b.r.Registry(host); rg != nil {
			line += fmt.Sprintf(" (credentials: registry.%s, %s)", rg.Name, or(rg.Auth, "docker"))
		} else {
			line += " (credentials: docker config)"
		}
		out = append(out, line)
	}
	return out
}

// registryHost is the registry part of an image reference, as docker reads it.
func registryHost(ref string) string {
	first, _, found := strings.Cut(ref, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first
	}
	return "docker.io"
}

func aptLines(repos []*recipes.Repository, packages []string) []string {
	var runs []string
	for _, r := range repos {
		runs = append(runs, fmt.Sprintf("apt source %s %s (signed-by /etc/apt/keyrings/%s.gpg)", r.Name, r.URL, r.Name))
	}
	if len(packages) > 0 {
		runs = append(runs, "apt-get install --no-install-recommends "+strings.Join(packages, " ")+" (apt cache mount; lists removed)")
	}
	return runs
}

func (b *planner) machineImage(t *PlanTarget, m *recipes.MachineImage) {
	from := b.source(m.From)
	if m.From.Ref != nil && m.From.Ref.Kind == recipes.KindImage {
		t.DependsOn = append(t.DependsOn, m.From.Ref.Addr())
	}
	runs := []string{"from " + m.From.String()}
	runs = append(runs, "install kernel "+m.Kernel+" and its initramfs; record its release")
	runs = append(runs, "install systemd, systemd-boot, cloud-init (grows the root partition), openssh-server, systemd-networkd and -resolved")
	for _, rt := range m.Runtimes {
		switch rt.Type {
		case "docker":
			if or(rt.Edition, "ce") == "ce" {
				runs = append(runs, "apt source docker-ce: Docker's repository for the image's distribution (signed-by Docker's key)")
				runs = append(runs, "install docker-ce, docker-ce-cli, containerd.io"+versionSuffix(rt.Version))
			} else {
				runs = append(runs, "install docker.io from the distribution"+versionSuffix(rt.Version))
			}
		case "nvidia":
			runs = append(runs, "apt source nvidia-container-toolkit: NVIDIA's repository (signed-by NVIDIA's key)")
			line := "install nvidia-container-toolkit " + or(rt.ToolkitVersion, "(newest)")
			if or(rt.Mode, "cdi") == "cdi" {
				line += "; docker uses CDI; a boot-time unit regenerates /var/run/cdi/nvidia.yaml once the driver is loaded"
			} else {
				line += "; nvidia runtime registered with docker"
			}
			if rt.DefaultRuntime != nil && *rt.DefaultRuntime {
				line += " as the default runtime"
			}
			runs = append(runs, line)
		}
	}
	runs = append(runs, aptLines(m.Repositories, m.Packages)...)
	for _, c := range m.Copies {
		runs = append(runs, fmt.Sprintf("copy %s -> %s", c.Src, c.Dst))
	}
	for _, c := range m.Run {
		runs = append(runs, "run "+c)
	}
	runs = append(runs, "empty machine-id and SSH host keys")
	last := b.stage(t, StageRootfs, "build the root filesystem", []string{from}, runs).ID
	if d := m.Driver; d != nil {
		runs := []string{}
		if or(d.Source, "distro") == "nvidia" {
			runs = append(runs, "apt source cuda: NVIDIA's CUDA repository (signed-by NVIDIA's key)")
		}
		runs = append(runs,
			fmt.Sprintf("dkms build nvidia %s (%s modules) against %s, in a stage of its own cached by kernel, driver and flavor", or(d.Version, d.Branch), or(d.KernelModule, "default"), m.Kernel),
			"check vermagic of nvidia.ko against the image kernel; copy the modules into the root filesystem",
		)
		if d.Persistenced == nil || *d.Persistenced {
			runs = append(runs, "enable nvidia-persistenced")
		}
		if d.FabricManager {
			runs = append(runs, "install and enable nvidia-fabricmanager "+d.Branch)
		}
		last = b.stage(t, StageKernelModule, fmt.Sprintf("build the NVIDIA %s driver for the image's kernel", d.Branch), []string{last}, runs).ID
	}
	if len(m.Preload) > 0 {
		var runs []string
		deps := []string{last}
		for _, p := range m.Preload {
			deps = append(deps, b.source(p))
			runs = append(runs, "pull "+b.preloadName(p)+" into the image's container store")
		}
		last = b.stage(t, StagePreload, "preload container images", deps, runs).ID
	}
	formats := []string{"raw"}
	size, boot := "content + headroom", "uefi"
	if d := m.Disk; d != nil {
		if len(d.Formats) > 0 {
			formats = d.Formats
		}
		size, boot = or(d.Size, size), or(d.Boot, boot)
	}
	disk := b.stage(t, StageDisk, "assemble the disk ("+strings.Join(formats, ", ")+")", []string{last}, []string{
		fmt.Sprintf("GPT: ESP (FAT32) + ext4 root via mkfs.ext4 -d, size %s, boot %s", size, boot),
		"convert to " + strings.Join(formats, ", ") + " with qemu-img",
	})
	for _, f := range formats {
		t.Outputs = append(t.Outputs, m.Name+"."+f)
	}
	boot2 := b.stage(t, StageBootCheck, "boot the disk in QEMU and read the boot report", []string{disk.ID}, []string{
		"qemu-system-x86_64 with OVMF, serial console: kernel, root rw, nvidia module, docker + NVIDIA runtime, cloud-init",
	})
	if a := m.AMI; a != nil {
		upDesc, upRuns := "upload the raw disk to an EBS snapshot (EBS direct APIs)", []string{
			"StartSnapshot, PutSnapshotBlock (512 KiB, SHA-256), CompleteSnapshot",
		}
		if a.ImportBucket != "" {
			upDesc, upRuns = "upload the raw disk to S3 and import it as an EBS snapshot", []string{
				"PutObject s3://" + a.ImportBucket + "/gpuforge/<build id>/, ImportSnapshot (RAW), wait, DeleteObject",
			}
		}
		up := b.stage(t, StageAMIUpload, upDesc, []string{boot2.ID}, upRuns)
		home := "the default region"
		if len(a.Regions) > 0 {
			home = a.Regions[0]
		}
		var flags []string
		if a.ENA == nil || *a.ENA {
			flags = append(flags, "ENA")
		}
		if a.SRIOV == nil || *a.SRIOV {
			flags = append(flags, "SR-IOV")
		}
		if a.TPM {
			flags = append(flags, "NitroTPM")
		}
		if a.Encrypted {
			flags = append(flags, "encrypted"+map[bool]string{true: " with " + a.KMSKeyID, false: ""}[a.KMSKeyID != ""])
		}
		regRuns := []string{
			fmt.Sprintf("RegisterImage %s, %s, boot %s, IMDS %s, %s", a.Name, or(a.Architecture, "x86_64"), or(a.BootMode, "uefi"), or(a.IMDS, "v2.0"), strings.Join(flags, ", ")),
		}
		if v := a.Volume; v != nil {
			regRuns = append(regRuns, fmt.Sprintf("root volume %s %s, %d IOPS, %d MiB/s", or(v.Type, "gp3"), or(v.Size, "the disk's size"), v.IOPS, v.Throughput))
		}
		tags := []string{"gpuforge:build-id"}
		tags = append(tags, sortedKeys(a.Tags)...)
		regRuns = append(regRuns, "tag the AMI and its snapshot: "+strings.Join(tags, ", "))
		if a.DeprecateAt != "" {
			regRuns = append(regRuns, "deprecate at "+a.DeprecateAt)
		}
		reg := b.stage(t, StageAMIRegister, "register AMI "+a.Name+" in "+home, []string{up.ID}, regRuns)
		var runs []string
		for i, region := range a.Regions {
			if i > 0 {
				runs = append(runs, "CopyImage "+a.Regions[0]+" -> "+region)
			}
			t.Outputs = append(t.Outputs, "ami:"+region)
		}
		if s := a.Share; s != nil {
			runs = append(runs, fmt.Sprintf("share with %d accounts, %d organizations, %d OUs", len(s.Accounts), len(s.Organizations), len(s.OUs)))
		}
		if a.SSMParameter != "" {
			runs = append(runs, "put SSM parameter "+a.SSMParameter)
		}
		b.stage(t, StageAMIDistribute, "copy, share and publish the AMI", []string{reg.ID}, runs)
	}
}

func versionSuffix(v string) string {
	if v == "" {
		return ""
	}
	return " " + v
}

func (b *planner) preloadName(p recipes.Source) string {
	if p.Ref != nil && p.Ref.Kind == recipes.KindFramework {
		if f := b.r.Framework(p.Ref.Name); f != nil {
			return f.Image
		}
	}
	return p.String()
}

func (b *planner) validate(t *PlanTarget, v *recipes.Validate) {
	target := b.target(v.Target.Addr())
	if target == nil {
		return
	}
	t.DependsOn = append(t.DependsOn, target.Address)
	// An image is validated once built; a machine image on a host booted from it: from the
	// registered AMI when there is one (its distribution waits for the verdict), else the disk.
	var built string
	for _, id := range target.Stages {
		if k := b.stages[id].Kind; k == StageBuild || k == StageBootCheck || k == StageAMIRegister {
			built = id
		}
	}
	gpus := or(v.GPUs, "all")
	last := b.stage(t, StageCDI, "generate the CDI spec for GPUs "+gpus, []string{built}, []string{
		"nvcdi: CDI spec for the host's driver, devices " + gpus,
	}).ID
	var runs []string
	if s := v.NvidiaSMI; s != nil {
		line := "nvidia-smi --query-gpu in the image"
		if v.Target.Kind == recipes.KindMachineImage {
			line = "nvidia-smi --query-gpu on a host booted from the image"
		}
		if s.ExpectCount > 0 {
			line += fmt.Sprintf(", expect %d GPUs", s.ExpectCount)
		}
		if s.ExpectModel != "" {
			line += ", model " + s.ExpectModel
		}
		if s.MinDriver != "" {
			line += ", driver >= " + s.MinDriver
		}
		runs = append(runs, line)
	}
	if r := v.ResNet50; r != nil {
		bs := r.BatchSize
		if bs == 0 {
			bs = 256
		}
		frac := r.MinFractionOfReference
		if frac == 0 {
			frac = 0.8
		}
		runs = append(runs, fmt.Sprintf("ResNet-50 training, batch %d per GPU, %s, pass at %.0f%% of the reference img/s", bs, or(r.Precision, "bf16"), frac*100))
	}
	if v.Host != nil {
		runs = append(runs, "NVML host checks: count, model, driver, ECC, retired pages, PCIe link, throttling, MIG, NVLink, persistence")
	}
	b.stage(t, StageCheck, "run the GPU checks", []string{last}, runs)
}

// redact removes the recipe's sensitive values from every string of the plan.
func (b *planner) redact() {
	for _, s := range b.p.Stages {
		s.ID, s.Target = b.r.Redact(s.ID), b.r.Redact(s.Target)
		for i := range s.After {
			s.After[i] = b.r.Redact(s.After[i])
		}
		s.Description = b.r.Redact(s.Description)
		for i := range s.Runs {
			s.Runs[i] = b.r.Redact(s.Runs[i])
		}
	}
	for _, t := range b.p.Targets {
		for i := range t.Stages {
			t.Stages[i] = b.r.Redact(t.Stages[i])
		}
		for i := range t.Outputs {
			t.Outputs[i] = b.r.Redact(t.Outputs[i])
		}
	}
}

// WriteText renders the plan for a person: each target with its stages, what they run and what
// they wait for.
func (p *Plan) WriteText(w io.Writer) error {
	byID := map[string]*Stage{}
	for _, s := range p.Stages {
		byID[s.ID] = s
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "Plan for %s: %s, %s\n", p.Recipe, plural(len(p.Targets), "target"), plural(len(p.Stages), "stage"))
	printed := map[string]bool{}
	for _, t := range p.Targets {
		fmt.Fprintf(&sb, "\n%s", t.Address)
		if len(t.DependsOn) > 0 {
			fmt.Fprintf(&sb, " (after %s)", strings.Join(t.DependsOn, ", "))
		}
		sb.WriteString("\n")
		if len(t.Outputs) > 0 {
			fmt.Fprintf(&sb, "  outputs: %s\n", strings.Join(t.Outputs, ", "))
		}
		// Shared source stages are printed with the first target that needs them.
		var ids []string
		for _, id := range t.Stages {
			for _, dep := range byID[id].After {
				if d := byID[dep]; d != nil && d.Target != t.Address && !strings.HasPrefix(d.Target, "image.") &&
					!strings.HasPrefix(d.Target, "machine_image.") && !strings.HasPrefix(d.Target, "validate.") && !printed[dep] {
					ids = append(ids, dep)
					printed[dep] = true
				}
			}
			ids = append(ids, id)
		}
		for _, id := range ids {
			s := byID[id]
			fmt.Fprintf(&sb, "  + %s: %s\n", s.ID, s.Description)
			if len(s.After) > 0 {
				fmt.Fprintf(&sb, "      after: %s\n", strings.Join(s.After, ", "))
			}
			for _, r := range s.Runs {
				fmt.Fprintf(&sb, "      - %s\n", r)
			}
		}
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// Graph returns the plan's stages as runner nodes, given a function that makes the step for a
// stage. The runner then runs them in dependency order.
func (p *Plan) Graph(step func(*Stage) Step) []Node {
	nodes := make([]Node, 0, len(p.Stages))
	for _, s := range p.Stages {
		nodes = append(nodes, Node{Step: step(s), After: s.After})
	}
	return nodes
}

func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
