package recipes

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Block kinds a recipe may declare at its top level. The kinds that can be referenced from
// expressions (image.trainer, driver.nvidia) are the same words.
const (
	KindVariable     = "variable"
	KindLocals       = "locals"
	KindBase         = "base"
	KindRepository   = "repository"
	KindDriver       = "driver"
	KindRuntime      = "runtime"
	KindFramework    = "framework"
	KindImage        = "image"
	KindMachineImage = "machine_image"
	KindValidate     = "validate"
	KindRegistry     = "registry"
	KindGroup        = "group"
)

// rootSchema is the top level of a recipe file.
var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: KindVariable, LabelNames: []string{"name"}},
		{Type: KindLocals},
		{Type: KindBase, LabelNames: []string{"name"}},
		{Type: KindRepository, LabelNames: []string{"name"}},
		{Type: KindDriver, LabelNames: []string{"name"}},
		{Type: KindRuntime, LabelNames: []string{"name"}},
		{Type: KindFramework, LabelNames: []string{"name"}},
		{Type: KindImage, LabelNames: []string{"name"}},
		{Type: KindMachineImage, LabelNames: []string{"name"}},
		{Type: KindValidate, LabelNames: []string{"name"}},
		{Type: KindRegistry, LabelNames: []string{"name"}},
		{Type: KindGroup, LabelNames: []string{"name"}},
	},
}

// referableKinds are the roots an expression may traverse (besides var and local).
var referableKinds = []string{
	KindBase, KindRepository, KindDriver, KindRuntime, KindFramework,
	KindImage, KindMachineImage, KindValidate, KindRegistry, KindGroup,
}

// Variable is an input variable: `variable "name" { type, default, description, sensitive, validation {} }`.
type Variable struct {
	Name        string         `hcl:"name,label"`
	TypeExpr    hcl.Expression `hcl:"type,optional"`
	DefaultExpr hcl.Expression `hcl:"default,optional"`
	Description string         `hcl:"description,optional"`
	Sensitive   bool           `hcl:"sensitive,optional"`
	Validations []*Validation  `hcl:"validation,block"`
	DeclRange   hcl.Range      `hcl:",def_range"`

	// Type is the declared type (cty.DynamicPseudoType when none is given).
	Type cty.Type
	// Value is the final value after defaults, environment, var files and -var flags.
	Value cty.Value
	// Source says where Value came from: "default", "env", a var file name, or "-var".
	Source string
}

// Validation is a custom rule on a variable's value.
type Validation struct {
	Condition    hcl.Expression `hcl:"condition"`
	ErrorMessage string         `hcl:"error_message"`
	DeclRange    hcl.Range      `hcl:",def_range"`
}

// Base is where an image's filesystem starts: a registry image or a bootstrapped distribution.
type Base struct {
	Name      string     `hcl:"name,label"`
	Image     string     `hcl:"image,optional"`
	Platform  string     `hcl:"platform,optional"`
	Bootstrap *Bootstrap `hcl:"bootstrap,block"`
	DeclRange hcl.Range  `hcl:",def_range"`

	ImageRange    hcl.Range `hcl:"image,attr_range"`
	PlatformRange hcl.Range `hcl:"platform,attr_range"`
}

// Bootstrap builds a base filesystem from a distribution mirror (mmdebstrap).
type Bootstrap struct {
	Distribution string    `hcl:"distribution,optional"` // debian (default) | ubuntu
	Suite        string    `hcl:"suite"`
	Mirror       string    `hcl:"mirror,optional"` // default: the host's configured apt mirror
	Variant      string    `hcl:"variant,optional"`
	Components   []string  `hcl:"components,optional"`
	Packages     []string  `hcl:"packages,optional"`
	Architecture string    `hcl:"architecture,optional"`
	DeclRange    hcl.Range `hcl:",def_range"`

	DistributionRange hcl.Range `hcl:"distribution,attr_range"`
	VariantRange      hcl.Range `hcl:"variant,attr_range"`
	MirrorRange       hcl.Range `hcl:"mirror,attr_range"`
}

// Repository is an apt source with the key that signs it.
type Repository struct {
	Name          string    `hcl:"name,label"`
	URL           string    `hcl:"url"`
	Suite         string    `hcl:"suite,optional"`
	Components    []string  `hcl:"components,optional"`
	Architectures []string  `hcl:"architectures,optional"`
	Key           string    `hcl:"key,optional"`      // armored key, inline or file("...")
	KeyFile       string    `hcl:"key_file,optional"` // path relative to the recipe
	DeclRange     hcl.Range `hcl:",def_range"`

	URLRange     hcl.Range `hcl:"url,attr_range"`
	KeyRange     hcl.Range `hcl:"key,attr_range"`
	KeyFileRange hcl.Range `hcl:"key_file,attr_range"`
}

// Driver is the NVIDIA kernel driver of a machine image.
type Driver struct {
	Name          string   `hcl:"name,label"`
	Branch        string   `hcl:"branch"`
	Version       string   `hcl:"version,optional"`
	KernelModule  string   `hcl:"kernel_module,optional"` // open | proprietary
	Source        string   `hcl:"source,optional"`        // distro | nvidia
	FabricManager bool     `hcl:"fabric_manager,optional"`
	Persistenced  *bool    `hcl:"persistenced,optional"`
	GPUs          []string `hcl:"gpus,optional"` // GPU models the image must drive
	// RepositoryExpr names a repository block to install the driver from instead of the
	// default (Debian's or Ubuntu's own for source = "distro", NVIDIA's CUDA repository for
	// "nvidia"): a mirror, or a repository of one's own packages.
	RepositoryExpr hcl.Expression `hcl:"repository,optional"`
	DeclRange      hcl.Range      `hcl:",def_range"`
	Repository     *Repository

	BranchRange       hcl.Range `hcl:"branch,attr_range"`
	KernelModuleRange hcl.Range `hcl:"kernel_module,attr_range"`
	SourceRange       hcl.Range `hcl:"source,attr_range"`
	GPUsRange         hcl.Range `hcl:"gpus,attr_range"`
}

// BranchNumber is the driver branch as a number (550 for "550" or "550.127.05"), 0 if unparseable.
func (d *Driver) BranchNumber() int { return leadingInt(d.Branch) }

// Runtime is a container runtime of a machine image: docker, or the NVIDIA container toolkit.
// Its type defaults to its label, so runtime "docker" {} and runtime "nvidia" {} need no type.
type Runtime struct {
	Name           string `hcl:"name,label"`
	Type           string `hcl:"type,optional"`            // docker | nvidia
	Edition        string `hcl:"edition,optional"`         // docker: ce | distro
	Version        string `hcl:"version,optional"`         // docker: package version pin
	ToolkitVersion string `hcl:"toolkit_version,optional"` // nvidia: container toolkit version
	Mode           string `hcl:"mode,optional"`            // nvidia: cdi | legacy
	DefaultRuntime *bool  `hcl:"default_runtime,optional"` // nvidia: make it docker's default runtime
	// RepositoryExpr names a repository block to install from instead of the vendor's (Docker's
	// for edition = "ce", NVIDIA's for the container toolkit): a mirror, or one's own packages.
	RepositoryExpr hcl.Expression `hcl:"repository,optional"`
	DeclRange      hcl.Range      `hcl:",def_range"`
	Repository     *Repository

	TypeRange           hcl.Range `hcl:"type,attr_range"`
	EditionRange        hcl.Range `hcl:"edition,attr_range"`
	VersionRange        hcl.Range `hcl:"version,attr_range"`
	ToolkitVersionRange hcl.Range `hcl:"toolkit_version,attr_range"`
	ModeRange           hcl.Range `hcl:"mode,attr_range"`
	DefaultRuntimeRange hcl.Range `hcl:"default_runtime,attr_range"`
}

// Framework is an NGC framework image (nvcr.io/nvidia/pytorch:24.10-py3 or by digest).
type Framework struct {
	Name      string    `hcl:"name,label"`
	Image     string    `hcl:"image"`
	APIKey    string    `hcl:"api_key,optional"`     // NGC API key; prefer api_key_env
	APIKeyEnv string    `hcl:"api_key_env,optional"` // default NGC_API_KEY
	DeclRange hcl.Range `hcl:",def_range"`

	ImageRange hcl.Range `hcl:"image,attr_range"`

	// Framework is the NGC framework name ("pytorch") taken from the image repository.
	Framework string
	// Release is the NGC YY.MM release from the tag, "" when pinned by digest only.
	Release string
}

// Copy copies files from the recipe directory into an image.
type Copy struct {
	Src       string    `hcl:"src"`
	Dst       string    `hcl:"dst"`
	Chown     string    `hcl:"chown,optional"`
	Chmod     string    `hcl:"chmod,optional"`
	DeclRange hcl.Range `hcl:",def_range"`
	SrcRange  hcl.Range `hcl:"src,attr_range"`
	DstRange  hcl.Range `hcl:"dst,attr_range"`
}

// Secret is a BuildKit secret mount available to run commands, from an environment variable or a file.
type Secret struct {
	ID        string    `hcl:"id,label"`
	Env       string    `hcl:"env,optional"`
	File      string    `hcl:"file,optional"`
	Required  *bool     `hcl:"required,optional"`
	DeclRange hcl.Range `hcl:",def_range"`
}

// Image is a container image target.
type Image struct {
	Name           string            `hcl:"name,label"`
	Matrix         hcl.Expression    `hcl:"matrix,optional"`
	NameExpr       hcl.Expression    `hcl:"name,optional"`
	InheritsExpr   hcl.Expression    `hcl:"inherits,optional"`
	FromExpr       hcl.Expression    `hcl:"from,optional"`
	ReposExpr      hcl.Expression    `hcl:"repositories,optional"`
	DriverExpr     hcl.Expression    `hcl:"driver,optional"` // always an error: see checks
	KernelExpr     hcl.Expression    `hcl:"kernel,optional"` // always an error: see checks
	Packages       []string          `hcl:"packages,optional"`
	Run            []string          `hcl:"run,optional"`
	Copies         []*Copy           `hcl:"copy,block"`
	Env            map[string]string `hcl:"env,optional"`
	Workdir        string            `hcl:"workdir,optional"`
	User           string            `hcl:"user,optional"`
	Entrypoint     []string          `hcl:"entrypoint,optional"`
	Cmd            []string          `hcl:"cmd,optional"`
	Labels         map[string]string `hcl:"labels,optional"`
	Annotations    map[string]string `hcl:"annotations,optional"`
	Tags           []string          `hcl:"tags,optional"`
	Platforms      []string          `hcl:"platforms,optional"`
	Push           *bool             `hcl:"push,optional"`
	Secrets        []*Secret         `hcl:"secret,block"`
	Outputs        []string          `hcl:"outputs,optional"`
	CacheFrom      []string          `hcl:"cache_from,optional"` // BuildKit cache to import: type=registry,ref=… | type=local,src=…
	CacheTo        []string          `hcl:"cache_to,optional"`   // BuildKit cache to export: type=registry,ref=…[,mode=max] | type=local,dest=…
	DeclRange      hcl.Range         `hcl:",def_range"`
	TagsRange      hcl.Range         `hcl:"tags,attr_range"`
	PlatformsRange hcl.Range         `hcl:"platforms,attr_range"`
	RunRange       hcl.Range         `hcl:"run,attr_range"`
	PackagesRange  hcl.Range         `hcl:"packages,attr_range"`
	OutputsRange   hcl.Range         `hcl:"outputs,attr_range"`
	CacheFromRange hcl.Range         `hcl:"cache_from,attr_range"`
	CacheToRange   hcl.Range         `hcl:"cache_to,attr_range"`

	// From is the resolved source of the image's filesystem.
	From Source
	// Repositories are the resolved apt repositories the image's package installs use.
	Repositories []*Repository
	// Inherits lists the images whose settings this one starts from, in order.
	Inherits []string
	// MatrixValues holds this instance's matrix values when the block has a matrix.
	MatrixValues map[string]string

	blockLabel string // the matrix block's label, for instances of a matrix
}

// Disk describes the disk a machine image is assembled into.
type Disk struct {
	Size      string    `hcl:"size,optional"` // "40GiB"; default: content + headroom
	Formats   []string  `hcl:"formats,optional"`
	Boot      string    `hcl:"boot,optional"` // uefi (default) | bios
	DeclRange hcl.Range `hcl:",def_range"`

	SizeRange    hcl.Range `hcl:"size,attr_range"`
	FormatsRange hcl.Range `hcl:"formats,attr_range"`
	BootRange    hcl.Range `hcl:"boot,attr_range"`
}

// AMIVolume is the root EBS volume of an AMI.
type AMIVolume struct {
	Size       string    `hcl:"size,optional"`
	Type       string    `hcl:"type,optional"` // gp3 (default)
	IOPS       int       `hcl:"iops,optional"`
	Throughput int       `hcl:"throughput,optional"`
	DeclRange  hcl.Range `hcl:",def_range"`
	SizeRange  hcl.Range `hcl:"size,attr_range"`
}

// AMIShare lists who may launch an AMI.
type AMIShare struct {
	Accounts      []string  `hcl:"accounts,optional"`
	Organizations []string  `hcl:"organizations,optional"`
	OUs           []string  `hcl:"ous,optional"`
	DeclRange     hcl.Range `hcl:",def_range"`
}

// AMI registers a machine image's disk as an AWS AMI.
type AMI struct {
	Name          string            `hcl:"name"`
	Description   string            `hcl:"description,optional"`
	Regions       []string          `hcl:"regions,optional"`
	Architecture  string            `hcl:"architecture,optional"` // x86_64 | arm64
	BootMode      string            `hcl:"boot_mode,optional"`    // uefi | legacy-bios | uefi-preferred
	IMDS          string            `hcl:"imds,optional"`         // v2.0
	ENA           *bool             `hcl:"ena,optional"`
	SRIOV         *bool             `hcl:"sriov,optional"`
	TPM           bool              `hcl:"tpm,optional"`
	Encrypted     bool              `hcl:"encrypted,optional"`
	KMSKeyID      string            `hcl:"kms_key_id,optional"`
	RegionKMSKeys map[string]string `hcl:"region_kms_key_ids,optional"`
	InstanceTypes []string          `hcl:"instance_types,optional"`
	Tags          map[string]string `hcl:"tags,optional"`
	DeprecateAt   string            `hcl:"deprecate_at,optional"`
	SSMParameter  string            `hcl:"ssm_parameter,optional"`
	// ImportBucket switches the upload to S3 + ImportSnapshot (for accounts where the EBS direct
	// APIs are not allowed): the disk goes to this bucket of the home region, then VM Import.
	ImportBucket string     `hcl:"import_bucket,optional"`
	Volume       *AMIVolume `hcl:"volume,block"`
	Share        *AMIShare  `hcl:"share,block"`
	DeclRange    hcl.Range  `hcl:",def_range"`

	RegionsRange       hcl.Range `hcl:"regions,attr_range"`
	ArchitectureRange  hcl.Range `hcl:"architecture,attr_range"`
	BootModeRange      hcl.Range `hcl:"boot_mode,attr_range"`
	IMDSRange          hcl.Range `hcl:"imds,attr_range"`
	InstanceTypesRange hcl.Range `hcl:"instance_types,attr_range"`
	DeprecateAtRange   hcl.Range `hcl:"deprecate_at,attr_range"`
}

// MachineImage is a bootable host disk target (and optionally an AMI).
type MachineImage struct {
	Name          string            `hcl:"name,label"`
	FromExpr      hcl.Expression    `hcl:"from"`
	ReposExpr     hcl.Expression    `hcl:"repositories,optional"`
	Kernel        string            `hcl:"kernel,optional"`
	DriverExpr    hcl.Expression    `hcl:"driver,optional"`
	RuntimesExpr  hcl.Expression    `hcl:"runtimes,optional"`
	PreloadExpr   hcl.Expression    `hcl:"preload,optional"`
	Packages      []string          `hcl:"packages,optional"`
	Run           []string          `hcl:"run,optional"`
	Copies        []*Copy           `hcl:"copy,block"`
	Env           map[string]string `hcl:"env,optional"`
	Secrets       []*Secret         `hcl:"secret,block"`
	InstanceTypes []string          `hcl:"instance_types,optional"`
	Disk          *Disk             `hcl:"disk,block"`
	AMI           *AMI              `hcl:"ami,block"`
	DeclRange     hcl.Range         `hcl:",def_range"`

	KernelRange        hcl.Range `hcl:"kernel,attr_range"`
	InstanceTypesRange hcl.Range `hcl:"instance_types,attr_range"`
	PackagesRange      hcl.Range `hcl:"packages,attr_range"`
	RunRange           hcl.Range `hcl:"run,attr_range"`

	From         Source
	Repositories []*Repository
	Driver       *Driver
	Runtimes     []*Runtime
	// Preload are the images pulled into the disk's container store at build time.
	Preload []Source
}

// NvidiaSMICheck runs nvidia-smi inside the image and checks what it reports.
type NvidiaSMICheck struct {
	ExpectCount int       `hcl:"expect_count,optional"`
	ExpectModel string    `hcl:"expect_model,optional"`
	MinDriver   string    `hcl:"min_driver,optional"`
	DeclRange   hcl.Range `hcl:",def_range"`

	MinDriverRange hcl.Range `hcl:"min_driver,attr_range"`
}

// ResNet50Check runs a ResNet-50 training smoke benchmark.
type ResNet50Check struct {
	BatchSize               int       `hcl:"batch_size,optional"`
	Precision               string    `hcl:"precision,optional"` // bf16 (default) | fp16 | fp32
	Iterations              int       `hcl:"iterations,optional"`
	Warmup                  int       `hcl:"warmup,optional"`
	Compile                 bool      `hcl:"compile,optional"`
	ChannelsLast            *bool     `hcl:"channels_last,optional"`
	MinFractionOfReference  float64   `hcl:"min_fraction_of_reference,optional"`
	DeclRange               hcl.Range `hcl:",def_range"`
	PrecisionRange          hcl.Range `hcl:"precision,attr_range"`
	BatchSizeRange          hcl.Range `hcl:"batch_size,attr_range"`
	MinFractionOfReferenceR hcl.Range `hcl:"min_fraction_of_reference,attr_range"`
}

// HostCheck runs NVML checks on a host booted from a machine image.
type HostCheck struct {
	ExpectCount int       `hcl:"expect_count,optional"`
	ECC         *bool     `hcl:"ecc,optional"`
	MIG         *bool     `hcl:"mig,optional"`
	DeclRange   hcl.Range `hcl:",def_range"`
}

// Validate checks a built target on real GPUs.
type Validate struct {
	Name       string            `hcl:"name,label"`
	TargetExpr hcl.Expression    `hcl:"target"`
	GPUs       string            `hcl:"gpus,optional"` // all | 0,1 | GPU-<uuid>,…
	Env        map[string]string `hcl:"env,optional"`
	NvidiaSMI  *NvidiaSMICheck   `hcl:"nvidia_smi,block"`
	ResNet50   *ResNet50Check    `hcl:"resnet50,block"`
	Host       *HostCheck        `hcl:"host,block"`
	DeclRange  hcl.Range         `hcl:",def_range"`

	GPUsRange hcl.Range `hcl:"gpus,attr_range"`

	// Target is the resolved "image.x" or "machine_image.x" this validates.
	Target Ref
	// GPUSelection is GPUs parsed: nil means all.
	GPUSelection []string
}

// Registry says how to authenticate to one registry host.
type Registry struct {
	Name             string    `hcl:"name,label"`
	Host             string    `hcl:"host"`
	Auth             string    `hcl:"auth,optional"` // docker (default) | basic | helper | ngc | ecr
	Username         string    `hcl:"username,optional"`
	Password         string    `hcl:"password,optional"`
	PasswordEnv      string    `hcl:"password_env,optional"`
	CredentialHelper string    `hcl:"credential_helper,optional"`
	Region           string    `hcl:"region,optional"` // ecr
	CAFile           string    `hcl:"ca_file,optional"`
	Insecure         bool      `hcl:"insecure,optional"`
	DeclRange        hcl.Range `hcl:",def_range"`

	HostRange hcl.Range `hcl:"host,attr_range"`
	AuthRange hcl.Range `hcl:"auth,attr_range"`
}

// Group is a named set of targets, like a bake group.
type Group struct {
	Name        string         `hcl:"name,label"`
	TargetsExpr hcl.Expression `hcl:"targets"`
	DeclRange   hcl.Range      `hcl:",def_range"`

	// Targets are the resolved target addresses ("image.trainer") with groups expanded.
	Targets []string
}

// Ref is a reference to a block: kind and name, and where the reference was written.
type Ref struct {
	Kind  string
	Name  string
	Range hcl.Range
}

// Addr is the reference's address, "kind.name".
func (r Ref) Addr() string { return r.Kind + "." + r.Name }

// Source is where an image target's filesystem comes from: another block or a registry image.
type Source struct {
	// Ref is set when the source is a block (base, framework, image).
	Ref *Ref
	// Image is set when the source is an image reference written as a string.
	Image string
	Range hcl.Range
}

// String is the source as a user wrote it.
func (s Source) String() string {
	if s.Ref != nil {
		return s.Ref.Addr()
	}
	return s.Image
}
