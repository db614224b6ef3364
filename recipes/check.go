package recipes

import (
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/gpuforge/gpuforge/recipes/compat"
)

// check runs the semantic checks on the decoded recipe. Each finding points at the attribute or
// block it is about.
func (l *loader) check() hcl.Diagnostics {
	c := &checker{r: l.r, l: l, tags: map[string]hcl.Range{}}
	for _, b := range l.r.Bases {
		c.base(b)
	}
	for _, rp := range l.r.Repositories {
		c.repository(rp)
	}
	for _, d := range l.r.Drivers {
		c.driver(d)
	}
	for _, rt := range l.r.Runtimes {
		c.runtime(rt)
	}
	for _, f := range l.r.Frameworks {
		c.framework(f)
	}
	for _, img := range l.r.Images {
		c.image(img)
	}
	for _, m := range l.r.MachineImages {
		c.machineImage(m)
	}
	for _, v := range l.r.Validates {
		c.validate(v)
	}
	for _, rg := range l.r.Registries {
		c.registry(rg)
	}
	return c.diags
}

type checker struct {
	r     *Recipe
	l     *loader
	diags hcl.Diagnostics
	tags  map[string]hcl.Range // tag -> where first produced
	owner map[string]string
}

func (c *checker) errorf(rng hcl.Range, summary, format string, args ...any) {
	c.diags = append(c.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: rng.Ptr()})
}

func (c *checker) warnf(rng hcl.Range, summary, format string, args ...any) {
	c.diags = append(c.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: rng.Ptr()})
}

// oneOf checks an enumerated attribute; empty means "use the default".
func (c *checker) oneOf(value string, rng hcl.Range, attr string, allowed ...string) {
	if value == "" || contains(allowed, value) {
		return
	}
	c.errorf(rng, "Invalid "+attr, "%q is not a valid %s. It must be one of: %s.%s", value, attr, strings.Join(allowed, ", "), didYouMean(value, allowed))
}

// imageRef checks a registry image reference as docker and BuildKit parse it.
func (c *checker) imageRef(ref string, rng hcl.Range, what string) {
	if _, err := reference.ParseNormalizedNamed(ref); err != nil {
		c.errorf(rng, "Invalid image reference", "%s %q cannot be parsed as an image reference: %s. A reference looks like registry.example.com/team/name:tag or name@sha256:<64 hex digits>.", what, ref, err)
	}
}

func (c *checker) base(b *Base) {
	switch {
	case b.Image != "" && b.Bootstrap != nil:
		c.errorf(b.Bootstrap.DeclRange, "Conflicting base sources", "base %q sets both image and a bootstrap block; a base is one or the other.", b.Name)
	case b.Image == "" && b.Bootstrap == nil:
		c.errorf(b.DeclRange, "Missing base source", "base %q needs either image = \"<registry image>\" or a bootstrap {} block that builds it from a distribution mirror.", b.Name)
	case b.Image != "":
		c.imageRef(b.Image, b.ImageRange, "The base image")
	}
	if b.Platform != "" {
		c.platform(b.Platform, b.PlatformRange)
	}
	if bs := b.Bootstrap; bs != nil {
		c.oneOf(bs.Distribution, bs.DistributionRange, "distribution", "debian", "ubuntu")
		c.oneOf(bs.Variant, bs.VariantRange, "bootstrap variant", "extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important", "debootstrap", "standard")
		if bs.Mirror != "" {
			if u, err := url.Parse(bs.Mirror); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") || (u.Scheme != "file" && u.Host == "") {
				c.errorf(bs.MirrorRange, "Invalid mirror", "The mirror %q must be an http://, https:// or file:// URL. Leave it out to use the host's configured apt mirror.", bs.Mirror)
			}
		}
	}
}

func (c *checker) repository(rp *Repository) {
	if rp.URL == "" {
		// missing: reported by decoding
	} else if u, err := url.Parse(rp.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") || (u.Scheme != "file" && u.Host == "") {
		c.errorf(rp.URLRange, "Invalid repository URL", "The repository URL %q must be an http://, https:// or file:// URL.", rp.URL)
	}
	switch {
	case rp.Key != "" && rp.KeyFile != "":
		c.errorf(rp.KeyFileRange, "Conflicting repository keys", "repository %q sets both key and key_file; give the signing key one way.", rp.Name)
	case rp.Key == "" && rp.KeyFile == "":
		c.errorf(rp.DeclRange, "Missing signing key", "repository %q has no signing key. Every apt source gpuforge writes is signed-by its own keyring: set key = file(\"keys/%s.asc\") or key_file.", rp.Name, rp.Name)
	case rp.Key != "" && !strings.Contains(rp.Key, "-----BEGIN PGP PUBLIC KEY BLOCK-----"):
		c.errorf(rp.KeyRange, "Invalid signing key", "The key of repository %q is not an ASCII-armored OpenPGP public key (it has no \"-----BEGIN PGP PUBLIC KEY BLOCK-----\" line). For a binary keyring use key_file.", rp.Name)
	}
}

func (c *checker) driver(d *Driver) {
	if d.BranchNumber() < 300 || !regexp.MustCompile(`^\d{3}(\.\d+){0,2}$`).MatchString(d.Branch) {
		c.errorf(d.BranchRange, "Invalid driver branch", "The driver branch %q must be an NVIDIA driver branch such as \"535\" or \"580\" (or a full version such as \"535.247.01\").", d.Branch)
	}
	c.oneOf(d.KernelModule, d.KernelModuleRange, "kernel module flavor", "open", "proprietary")
	c.oneOf(d.Source, d.SourceRange, "driver source", "distro", "nvidia")
	for i, g := range d.GPUs {
		gpu, ok := compat.LookupGPU(g)
		if !ok {
			c.warnf(c.elem(d.GPUsRange, i), "Unknown GPU model", "gpuforge has no data on the GPU %q, so it cannot check that this driver supports it.", g)
			continue
		}
		c.openOnPreTuring(d, gpu, g, c.elem(d.GPUsRange, i))
	}
}

// openOnPreTuring reports open kernel modules on a GPU older than Turing: NVIDIA's open modules
// support Turing and later only, so such a host boots without a working GPU.
func (c *checker) openOnPreTuring(d *Driver, gpu compat.GPU, named string, where hcl.Range) {
	if d.KernelModule != "open" || gpu.OpenModules {
		return
	}
	c.diags = append(c.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Open kernel modules do not support this GPU",
		Detail: fmt.Sprintf("%s has a %s GPU (%s architecture), but driver %q uses kernel_module = \"open\" (at %s). NVIDIA's open kernel modules support Turing and later GPUs only; use kernel_module = \"proprietary\" for %s.",
			named, gpu.Model, gpu.Architecture, d.Name, d.KernelModuleRange, gpu.Architecture),
		Subject: where.Ptr(),
	})
}

func (c *checker) runtime(rt *Runtime) {
	switch rt.Type {
	case "docker":
		c.oneOf(rt.Edition, rt.EditionRange, "docker edition", "ce", "distro")
		c.notFor(rt, rt.ToolkitVersion != "", rt.ToolkitVersionRange, "toolkit_version", "nvidia")
		c.notFor(rt, rt.Mode != "", rt.ModeRange, "mode", "nvidia")
		c.notFor(rt, rt.DefaultRuntime != nil, rt.DefaultRuntimeRange, "default_runtime", "nvidia")
	case "nvidia":
		c.oneOf(rt.Mode, rt.ModeRange, "NVIDIA runtime mode", "cdi", "legacy")
		c.notFor(rt, rt.Edition != "", rt.EditionRange, "edition", "docker")
		c.notFor(rt, rt.Version != "", rt.VersionRange, "version", "docker")
	case "":
		rng := rt.DeclRange
		if b := c.l.blocks[KindRuntime][rt.Name]; b != nil && len(b.LabelRanges) > 0 {
			rng = b.LabelRanges[0]
		}
		c.errorf(rng, "Missing runtime type", "runtime %q needs type = \"docker\" or type = \"nvidia\" (the NVIDIA container toolkit). The type may be left out only when the label is docker or nvidia.%s", rt.Name, didYouMean(rt.Name, []string{"docker", "nvidia"}))
	default:
		c.errorf(rt.TypeRange, "Unknown runtime", "runtime type %q is not one gpuforge installs: use \"docker\" (edition ce or distro) or \"nvidia\" (the NVIDIA container toolkit).%s", rt.Type, didYouMean(rt.Type, []string{"docker", "nvidia"}))
	}
}

func (c *checker) notFor(rt *Runtime, set bool, rng hcl.Range, attr, belongs string) {
	if set {
		c.errorf(rng, "Unsupported argument", "%s is a setting of %s runtimes; runtime %q is a %s runtime.", attr, belongs, rt.Name, rt.Type)
	}
}

func (c *checker) framework(f *Framework) {
	if f.APIKey != "" && !c.l.tainted[KindFramework+"."+f.Name+".api_key"] {
		c.warnf(f.DeclRange, "API key written into the recipe", "The NGC API key of framework %q is not from a sensitive variable, so it can appear in plans and logs. Use api_key_env (default NGC_API_KEY), or a variable with sensitive = true.", f.Name)
	}
	if f.Image == "" {
		return // missing: reported by decoding
	}
	named, err := reference.ParseNormalizedNamed(f.Image)
	if err != nil {
		c.imageRef(f.Image, f.ImageRange, "The framework image")
		return
	}
	path := reference.Path(named)
	f.Framework = path[strings.LastIndex(path, "/")+1:]
	if t, ok := named.(reference.Tagged); ok {
		rel, ok := compat.ParseNGCTag(t.Tag())
		if !ok {
			if reference.Domain(named) == "nvcr.io" {
				c.errorf(f.ImageRange, "Invalid NGC release tag", "NGC framework images are tagged by release, YY.MM (for example 24.10-py3); %q is not one. Pin a release or a digest so the build is reproducible.", t.Tag())
			}
			return
		}
		f.Release = rel
		if _, known := compat.LookupFramework(f.Framework, rel); !known && reference.Domain(named) == "nvcr.io" {
			c.warnf(f.ImageRange, "Unknown NGC release", "gpuforge's table of NGC releases has no %s %s, so it cannot check the driver this release needs.", f.Framework, rel)
		}
	} else if _, ok := named.(reference.Digested); !ok {
		c.warnf(f.ImageRange, "Unpinned framework image", "The framework image %q has neither a release tag nor a digest; it will resolve to whatever \"latest\" is at build time.", f.Image)
	}
}

// platform checks an OCI platform string ("linux/amd64", "linux/arm64/v8").
func (c *checker) platform(p string, rng hcl.Range) {
	spec, err := platforms.Parse(p)
	known := map[string]bool{"amd64": true, "arm64": true, "arm": true, "386": true, "ppc64le": true, "s390x": true, "riscv64": true}
	switch {
	case err != nil:
		c.errorf(rng, "Invalid platform", "%q is not a platform: %s. Platforms are written os/arch[/variant], for example linux/amd64 or linux/arm64.", p, err)
	case spec.OS != "linux":
		c.errorf(rng, "Invalid platform", "%q is a %s platform; gpuforge builds Linux images (linux/amd64, linux/arm64).", p, spec.OS)
	case !known[spec.Architecture] || strings.Count(p, "/") < 1:
		c.errorf(rng, "Invalid platform", "%q does not name an architecture gpuforge can build; write it as os/arch, for example linux/amd64 or linux/arm64.", p)
	}
}

func (c *checker) image(img *Image) {
	if isSet(img.DriverExpr) {
		c.diags = append(c.diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "A container image does not carry the NVIDIA driver",
			Detail: "The kernel driver belongs to the GPU host, not to the image. When the container starts, the NVIDIA container runtime " +
				"injects the host driver's user-space libraries (libcuda, libnvidia-ml, nvidia-smi) and the /dev/nvidia* devices into it (CDI), " +
				"so they always match the host's kernel module. Put the driver block on a machine_image, and build the image from a CUDA or framework base.",
			Subject: img.DriverExpr.Range().Ptr(),
		})
	}
	if isSet(img.KernelExpr) {
		c.errorf(img.KernelExpr.Range(), "A container image has no kernel", "Containers run on the host's kernel, so kernel belongs to a machine_image.")
	}
	if img.From.Ref == nil && img.From.Image == "" && !isSet(img.FromExpr) {
		c.errorf(img.DeclRange, "Missing required argument", "image %q needs from: a base, a framework, another image, or an image reference string.", img.Name)
	}
	if img.From.Image != "" {
		c.imageRef(img.From.Image, img.From.Range, "The from image")
	}
	if img.From.Ref != nil && img.From.Ref.Kind == KindImage && c.r.Image(img.From.Ref.Name) == nil && c.l.blocks[KindImage][img.From.Ref.Name] != nil {
		c.errorf(img.From.Range, "Ambiguous image reference", "image.%s has a matrix and stands for several images; an image can only be built from one. Build from a plain image, or give this image the same matrix.", img.From.Ref.Name)
	}
	for i, p := range img.Platforms {
		c.platform(p, c.elem(img.PlatformsRange, i))
	}
	for i, t := range img.Tags {
		c.tag(t, c.elem(img.TagsRange, i), KindImage+"."+img.Name)
	}
	for i, o := range img.Outputs {
		if _, err := ParseOutput(o); err != nil {
			c.errorf(c.elem(img.OutputsRange, i), "Invalid output", "%s.", err)
		}
	}
	for i, spec := range img.CacheFrom {
		if _, err := ParseCache(spec, false); err != nil {
			c.errorf(c.elem(img.CacheFromRange, i), "Invalid cache_from", "%s.", err)
		}
	}
	for i, spec := range img.CacheTo {
		if _, err := ParseCache(spec, true); err != nil {
			c.errorf(c.elem(img.CacheToRange, i), "Invalid cache_to", "%s.", err)
		}
	}
	for _, cp := range img.Copies {
		c.copy(cp)
	}
	for _, s := range img.Secrets {
		c.secret(s)
	}
}

func (c *checker) tag(t string, rng hcl.Range, owner string) {
	named, err := reference.ParseNormalizedNamed(t)
	if err != nil {
		c.errorf(rng, "Invalid image reference", "The tag %q cannot be parsed as an image reference: %s.", t, err)
		return
	}
	if _, ok := named.(reference.Digested); ok {
		c.errorf(rng, "Invalid tag", "The tag %q names a digest; a build produces the digest, so tag it by name instead.", t)
		return
	}
	full := reference.TagNameOnly(named).String()
	if c.owner == nil {
		c.owner = map[string]string{}
	}
	if first, dup := c.tags[full]; dup && c.owner[full] != owner {
		c.errorf(rng, "Same tag for two targets", "%s and %s both produce %s; the second push would silently replace the first. The first is tagged at %s.", c.owner[full], owner, full, first)
		return
	}
	c.tags[full], c.owner[full] = rng, owner
}

func (c *checker) copy(cp *Copy) {
	if filepath.IsAbs(cp.Src) || strings.HasPrefix(filepath.Clean(cp.Src), "..") {
		c.errorf(cp.SrcRange, "Copy source outside the recipe", "copy src %q must be a path inside the recipe's directory: only that directory is sent to the builder.", cp.Src)
	}
	if !strings.HasPrefix(cp.Dst, "/") {
		c.errorf(cp.DstRange, "Relative copy destination", "copy dst %q must be an absolute path in the image.", cp.Dst)
	}
}

func (c *checker) secret(s *Secret) {
	if (s.Env == "") == (s.File == "") {
		c.errorf(s.DeclRange, "Invalid secret", "secret %q needs exactly one of env (an environment variable of the build host) or file (a file on it).", s.ID)
	}
}

var sizeRe = regexp.MustCompile(`^(\d+)\s*(B|KiB|MiB|GiB|TiB|K|M|G|T|KB|MB|GB|TB)?$`)

// ParseSize parses a disk size such as "40GiB" or "512M" into bytes (binary units).
func ParseSize(s string) (int64, error) {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size; write a number and a unit, for example 40GiB", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]int64{"": 1, "B": 1, "K": 1 << 10, "KiB": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20, "MB": 1 << 20,
		"G": 1 << 30, "GiB": 1 << 30, "GB": 1 << 30, "T": 1 << 40, "TiB": 1 << 40, "TB": 1 << 40}[m[2]]
	return n * mult, nil
}

var regionRe = regexp.MustCompile(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$`)

func (c *checker) machineImage(m *MachineImage) {
	if m.Kernel == "" {
		c.errorf(m.DeclRange, "Machine image without a kernel", "machine_image %q must name the kernel package to install (for example kernel = \"linux-image-cloud-amd64\" on Debian or \"linux-aws\" on Ubuntu). The NVIDIA driver is built against that kernel, never the build host's.", m.Name)
	}
	if m.From.Image != "" {
		c.imageRef(m.From.Image, m.From.Range, "The from image")
	}
	var docker, nvidia bool
	for _, rt := range m.Runtimes {
		docker = docker || rt.Type == "docker"
		nvidia = nvidia || rt.Type == "nvidia"
	}
	if nvidia && !docker {
		c.errorf(m.RuntimesExpr.Range(), "NVIDIA runtime without a container engine", "runtime.nvidia configures a container engine for GPUs; add runtime.docker to runtimes.")
	}
	if nvidia && m.Driver == nil {
		c.warnf(m.RuntimesExpr.Range(), "NVIDIA runtime without a driver", "machine_image %q installs the NVIDIA container runtime but no driver; containers will find no GPU unless the host gets a driver some other way.", m.Name)
	}
	if len(m.Preload) > 0 && !docker {
		c.errorf(m.PreloadExpr.Range(), "Preload without a container engine", "preload pulls images into the container store of the image's docker; add runtime.docker to runtimes.")
	}
	for _, p := range m.Preload {
		if p.Image != "" {
			c.imageRef(p.Image, p.Range, "The preload image")
		}
	}

	type instanceType struct {
		name string
		rng  hcl.Range
	}
	var instanceTypes []instanceType
	for i, it := range m.InstanceTypes {
		instanceTypes = append(instanceTypes, instanceType{it, c.elem(m.InstanceTypesRange, i)})
	}
	if m.AMI != nil {
		for i, it := range m.AMI.InstanceTypes {
			instanceTypes = append(instanceTypes, instanceType{it, c.elem(m.AMI.InstanceTypesRange, i)})
		}
	}
	for _, entry := range instanceTypes {
		it, itRange := entry.name, entry.rng
		model, _, vendor, ok := compat.LookupInstanceType(it)
		switch {
		case !ok:
			c.warnf(itRange, "Unknown instance type", "gpuforge has no data on the instance type %q, so it cannot check the driver against its GPU.", it)
		case vendor != "" && vendor != "nvidia":
			c.errorf(itRange, "Instance type without NVIDIA GPUs", "%s has %s GPUs, which the NVIDIA driver does not drive.", it, vendor)
		case m.Driver != nil:
			if gpu, ok := compat.LookupGPU(model); ok {
				c.openOnPreTuring(m.Driver, gpu, it, itRange)
			}
		}
	}

	if m.Driver != nil && m.Driver.BranchNumber() > 0 {
		for _, p := range m.Preload {
			if f := c.frameworkOf(p, 0); f != nil {
				c.ngcDriver(f, m.Driver.BranchNumber(), p.Range, fmt.Sprintf("the driver branch %s (set at %s)", m.Driver.Branch, m.Driver.BranchRange))
			}
		}
	}

	if d := m.Disk; d != nil {
		if d.Size != "" {
			if _, err := ParseSize(d.Size); err != nil {
				c.errorf(d.SizeRange, "Invalid disk size", "%s.", err)
			}
		}
		for i, f := range d.Formats {
			c.oneOf(f, c.elem(d.FormatsRange, i), "disk format", "raw", "qcow2", "vmdk", "vhd")
		}
		c.oneOf(d.Boot, d.BootRange, "boot mode", "uefi", "bios")
	}
	if a := m.AMI; a != nil {
		c.ami(m, a)
	}
}

func (c *checker) ami(m *MachineImage, a *AMI) {
	if v := a.Volume; v != nil && v.Size != "" {
		if _, err := ParseSize(v.Size); err != nil {
			c.errorf(v.SizeRange, "Invalid volume size", "%s.", err)
		}
	}
	for i, r := range a.Regions {
		if !regionRe.MatchString(r) {
			c.errorf(c.elem(a.RegionsRange, i), "Invalid AWS region", "%q is not an AWS region name such as us-east-1.", r)
		}
	}
	c.oneOf(a.Architecture, a.ArchitectureRange, "AMI architecture", "x86_64", "arm64")
	c.oneOf(a.BootMode, a.BootModeRange, "AMI boot mode", "uefi", "legacy-bios", "uefi-preferred")
	c.oneOf(a.IMDS, a.IMDSRange, "IMDS support", "v2.0")
	if m.Disk != nil && m.Disk.Boot == "bios" && a.BootMode == "uefi" {
		c.errorf(a.BootModeRange, "Boot mode mismatch", "The disk boots with legacy BIOS (disk.boot = \"bios\") but the AMI is registered for UEFI only.")
	}
	if (m.Disk == nil || m.Disk.Boot != "bios") && a.BootMode == "legacy-bios" {
		c.errorf(a.BootModeRange, "Boot mode mismatch", "The disk boots with UEFI but the AMI is registered for legacy BIOS; set disk.boot = \"bios\" or boot_mode = \"uefi\".")
	}
	if a.DeprecateAt != "" {
		if _, err := time.Parse(time.RFC3339, a.DeprecateAt); err != nil {
			c.errorf(a.DeprecateAtRange, "Invalid deprecation time", "deprecate_at %q must be an RFC 3339 time, for example timeadd(timestamp(), \"2160h\").", a.DeprecateAt)
		}
	}
}

// frameworkOf follows an image source to the NGC framework it derives from, if any.
func (c *checker) frameworkOf(s Source, depth int) *Framework {
	if s.Ref == nil || depth > 64 {
		return nil
	}
	switch s.Ref.Kind {
	case KindFramework:
		return c.r.Framework(s.Ref.Name)
	case KindImage:
		if img := c.r.Image(s.Ref.Name); img != nil {
			return c.frameworkOf(img.From, depth+1)
		}
	}
	return nil
}

// ngcDriver reports an NGC release that needs a newer driver than the given branch.
func (c *checker) ngcDriver(f *Framework, branch int, rng hcl.Range, what string) {
	if f.Release == "" {
		return
	}
	rel, ok := compat.LookupFramework(f.Framework, f.Release)
	if !ok {
		return
	}
	supported, viaCompat := rel.SupportsBranch(branch)
	switch {
	case !supported:
		c.diags = append(c.diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Framework needs a newer driver",
			Detail: fmt.Sprintf("NGC %s %s is built on CUDA %s and needs NVIDIA driver %s or later, but %s is older. Raise the driver branch to %d or pick an older release. (Source: %s)",
				f.Framework, f.Release, rel.CUDA, rel.MinDriver, what, rel.MinDriver.Branch(), rel.Source),
			Subject: rng.Ptr(),
		})
	case viaCompat:
		c.diags = append(c.diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "Framework runs only on data-center GPUs with this driver",
			Detail: fmt.Sprintf("NGC %s %s needs driver %s; %s is older and works only through CUDA forward compatibility, which NVIDIA supports on data-center GPUs only. (Source: %s)",
				f.Framework, f.Release, rel.MinDriver, what, rel.Source),
			Subject: rng.Ptr(),
		})
	}
}

var gpuUUIDRe = regexp.MustCompile(`^(GPU|MIG)-[0-9a-fA-F-]{8,}$`)

// ParseGPUs parses a GPU selection the way NV_GPU and NVIDIA_VISIBLE_DEVICES did: "all" (nil),
// or a comma-separated list of indices or GPU/MIG UUIDs.
func ParseGPUs(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" {
		return nil, nil
	}
	var out []string
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		p := strings.TrimSpace(part)
		_, err := strconv.ParseUint(p, 10, 8)
		if err != nil && !gpuUUIDRe.MatchString(p) {
			return nil, fmt.Errorf("%q is not a GPU index (0, 1, …) or a GPU UUID (GPU-…, MIG-…)", p)
		}
		if seen[p] {
			return nil, fmt.Errorf("GPU %s is listed twice", p)
		}
		seen[p] = true
		out = append(out, p)
	}
	return out, nil
}

func (c *checker) validate(v *Validate) {
	sel, err := ParseGPUs(v.GPUs)
	if err != nil {
		c.errorf(v.GPUsRange, "Invalid GPU selection", "gpus %q: %s. Write \"all\", indices like \"0,1\" (as NV_GPU=0,1 did), or UUIDs from nvidia-smi -L.", v.GPUs, err)
	}
	v.GPUSelection = sel
	if v.Target.Kind == KindImage && c.r.Image(v.Target.Name) == nil && c.l.blocks[KindImage][v.Target.Name] != nil {
		c.errorf(v.Target.Range, "Ambiguous validation target", "image.%s has a matrix and stands for several images; a validate block checks one image. Validate a plain image that inherits from the same settings.", v.Target.Name)
	}
	if v.NvidiaSMI == nil && v.ResNet50 == nil && v.Host == nil {
		c.warnf(v.DeclRange, "Validation without checks", "validate %q runs no check; add nvidia_smi {}, resnet50 {} or host {}.", v.Name)
	}
	if v.Host != nil && v.Target.Kind == KindImage {
		c.errorf(v.Host.DeclRange, "Host checks need a machine image", "host {} checks a host booted from a machine image; %s is a container image. Use nvidia_smi {} and resnet50 {} for images.", v.Target.Addr())
	}
	if r := v.ResNet50; r != nil {
		c.oneOf(r.Precision, r.PrecisionRange, "precision", "bf16", "fp16", "fp32", "tf32")
		if r.BatchSize < 0 || r.BatchSize > 4096 {
			c.errorf(r.BatchSizeRange, "Invalid batch size", "batch_size must be between 1 and 4096 images per GPU (leave it out for the default, 256); %d is not.", r.BatchSize)
		}
		if r.MinFractionOfReference < 0 || r.MinFractionOfReference > 1 {
			c.errorf(r.MinFractionOfReferenceR, "Invalid threshold", "min_fraction_of_reference is a fraction of the reference throughput, between 0 and 1; %g is not.", r.MinFractionOfReference)
		}
	}
	if s := v.NvidiaSMI; s != nil && s.MinDriver != "" {
		branch := leadingInt(s.MinDriver)
		if branch < 300 {
			c.errorf(s.MinDriverRange, "Invalid driver version", "min_driver %q must be a driver branch or version such as \"535\" or \"550.54.15\".", s.MinDriver)
		} else if v.Target.Kind == KindImage {
			if img := c.r.Image(v.Target.Name); img != nil {
				if f := c.frameworkOf(img.From, 0); f != nil {
					c.ngcDriver(f, branch, s.MinDriverRange, fmt.Sprintf("min_driver %s", s.MinDriver))
				}
			}
		}
	}
}

func (c *checker) registry(rg *Registry) {
	if rg.Host == "" || strings.Contains(rg.Host, "/") || strings.Contains(rg.Host, "://") {
		c.errorf(rg.HostRange, "Invalid registry host", "host %q must be a registry host name with an optional port, such as registry.example.com or localhost:5000, without a scheme or path.", rg.Host)
	}
	c.oneOf(rg.Auth, rg.AuthRange, "registry auth", "docker", "basic", "helper", "ngc", "ecr")
	switch rg.Auth {
	case "basic":
		if rg.Username == "" || (rg.Password == "" && rg.PasswordEnv == "") {
			c.errorf(rg.DeclRange, "Incomplete registry credentials", "auth = \"basic\" needs username and either password (from a sensitive variable) or password_env.")
		}
	case "helper":
		if rg.CredentialHelper == "" {
			c.errorf(rg.DeclRange, "Missing credential helper", "auth = \"helper\" needs credential_helper, the suffix of a docker-credential-* program (for example \"ecr-login\").")
		}
	}
	if rg.Password != "" && !c.l.tainted[KindRegistry+"."+rg.Name+".password"] {
		c.warnf(rg.DeclRange, "Password written into the recipe", "The password of registry %q is not from a sensitive variable, so it can appear in plans and logs. Use password_env, or a variable with sensitive = true.", rg.Name)
	}
}

// elem narrows an attribute's range to its i-th element when the attribute is written as a
// list literal, so a finding about one tag or platform points at that element.
func (c *checker) elem(attrRange hcl.Range, i int) hcl.Range { return c.r.ElementRange(attrRange, i) }

// ElementRange narrows an attribute's range (as recorded in the recipe's types) to its i-th
// element when the attribute is written as a list literal; otherwise it returns the attribute's.
// Builders use it to point a failing run command at its own line.
func (r *Recipe) ElementRange(attrRange hcl.Range, i int) hcl.Range {
	f := r.Files[attrRange.Filename]
	if f == nil {
		return attrRange
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return attrRange
	}
	out := attrRange
	_ = hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
		if a, ok := n.(*hclsyntax.Attribute); ok && a.SrcRange == attrRange {
			if t, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok && i < len(t.Exprs) {
				out = t.Exprs[i].Range()
			}
		}
		return nil
	})
	return out
}

// Output is one place a built image goes besides the registry: an OCI layout directory, an OCI
// tarball or a docker-loadable tarball, written like buildx's --output: "type=oci,dest=out.tar".
type Output struct {
	Type string // oci-layout | oci | docker
	Dest string
}

// ParseOutput parses an output string: type=oci-layout|oci|docker and dest=PATH.
func ParseOutput(s string) (Output, error) {
	var o Output
	for _, field := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(field), "=")
		switch {
		case !ok:
			return o, fmt.Errorf("output %q: %q is not key=value", s, field)
		case k == "type":
			o.Type = v
		case k == "dest":
			o.Dest = v
		default:
			return o, fmt.Errorf("output %q: unknown key %q (outputs take type and dest)", s, k)
		}
	}
	if !contains([]string{"oci-layout", "oci", "docker"}, o.Type) {
		return o, fmt.Errorf("output %q: type must be oci-layout (a directory), oci (an OCI tarball) or docker (a tarball for docker load)", s)
	}
	if o.Dest == "" {
		return o, fmt.Errorf("output %q needs dest=PATH", s)
	}
	return o, nil
}

// Cache is a BuildKit build cache to import from or export to, as buildx writes it:
// "type=registry,ref=REF[,mode=min|max]" or "type=local,src=DIR" (import) / "type=local,dest=DIR[,mode=…]"
// (export).
type Cache struct {
	Type string // registry | local
	Ref  string // registry: the image reference holding the cache
	Dir  string // local: the directory (src for an import, dest for an export)
	Mode string // export: min (default: only the final image's layers) or max (every step)
}

// ParseCache parses a cache_from (export false) or cache_to (export true) entry.
func ParseCache(s string, export bool) (Cache, error) {
	var c Cache
	what := "cache_from"
	if export {
		what = "cache_to"
	}
	for _, field := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(field), "=")
		switch {
		case !ok:
			return c, fmt.Errorf("%s %q: %q is not key=value", what, s, field)
		case k == "type":
			c.Type = v
		case k == "ref":
			c.Ref = v
		case k == "src" && !export, k == "dest" && export:
			c.Dir = v
		case k == "mode" && export:
			c.Mode = v
		default:
			keys := "type, ref, src"
			if export {
				keys = "type, ref, dest, mode"
			}
			return c, fmt.Errorf("%s %q: unknown key %q (it takes %s)", what, s, k, keys)
		}
	}
	switch c.Type {
	case "registry":
		if c.Ref == "" {
			return c, fmt.Errorf("%s %q: a registry cache needs ref=IMAGE", what, s)
		}
		if _, err := reference.ParseNormalizedNamed(c.Ref); err != nil {
			return c, fmt.Errorf("%s %q: ref %q is not an image reference: %s", what, s, c.Ref, err)
		}
	case "local":
		if c.Dir == "" {
			key := "src"
			if export {
				key = "dest"
			}
			return c, fmt.Errorf("%s %q: a local cache needs %s=DIR", what, s, key)
		}
	default:
		return c, fmt.Errorf("%s %q: type must be registry or local", what, s)
	}
	switch c.Mode {
	case "":
		if export {
			c.Mode = "min"
		}
	case "min", "max":
	default:
		return c, fmt.Errorf("%s %q: mode must be min or max", what, s)
	}
	return c, nil
}
