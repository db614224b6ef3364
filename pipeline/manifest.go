package pipeline

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// SchemaVersion is the version of the build manifest's schema this package writes and reads. Adding fields
// keeps it at 1; it changes only if a field is removed, renamed or changes meaning. docs/manifest.md documents
// every field.
const SchemaVersion = 1

// Manifest is the build manifest: what one `gpuforge build` built from which recipe, where it went, and how
// each step ended. It is written as JSON (WriteFile) next to the reports.
//
// The Record… methods, Target, WriteFile and MarshalJSON are safe for concurrent use: steps record their
// artifacts while other steps run. Fields read or written directly, and a *Target's fields, are not guarded; do
// that from one goroutine, e.g. before the run starts or after it returned.
type Manifest struct {
	mu sync.Mutex

	SchemaVersion   int                `json:"schema_version"`
	BuildID         string             `json:"build_id"`
	GpuforgeVersion string             `json:"gpuforge_version"`
	Recipe          RecipeRecord       `json:"recipe"`
	Started         time.Time          `json:"started"`
	Finished        time.Time          `json:"finished,omitzero"` // zero until RecordRun
	Status          Outcome            `json:"status"`            // empty until RecordRun
	Targets         map[string]*Target `json:"targets"`
	Steps           []StepRecord       `json:"steps"`
}

// RecipeRecord identifies the recipe a build used.
type RecipeRecord struct {
	// Path is the recipe as given on the command line: a file or a directory of .hcl files.
	Path string `json:"path"`
	// SHA256 is the hex SHA-256 over all the recipe's files; see NewRecipeRecord for how it is computed.
	SHA256 string `json:"sha256"`
	// Files are the recipe's files, sorted by path.
	Files []RecipeFile `json:"files,omitempty"`
}

// RecipeFile is one file of a recipe.
type RecipeFile struct {
	Path   string `json:"path"`   // slash-separated, relative to the recipe's directory
	SHA256 string `json:"sha256"` // hex SHA-256 of the file's contents
}

// NewRecipeRecord returns the RecipeRecord for a recipe at path made of files (path → contents; paths
// slash-separated, relative to the recipe's directory). Its SHA256 is the SHA-256 of the lines
// "<hex sha256 of file>  <path>\n", one per file, sorted by path (bytewise) — what `LC_ALL=C sort`ed
// sha256sum output of the files, run in the recipe's directory, hashes to:
//
//	sha256sum $(ls *.hcl | LC_ALL=C sort) | sha256sum
func NewRecipeRecord(path string, files map[string][]byte) RecipeRecord {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	rec := RecipeRecord{Path: path, Files: make([]RecipeFile, 0, len(names))}
	all := sha256.New()
	for _, name := range names {
		sum := sha256.Sum256(files[name])
		f := RecipeFile{Path: name, SHA256: hex.EncodeToString(sum[:])}
		rec.Files = append(rec.Files, f)
		fmt.Fprintf(all, "%s  %s\n", f.SHA256, f.Path)
	}
	rec.SHA256 = hex.EncodeToString(all.Sum(nil))
	return rec
}

// TargetKind is the kind of a recipe target, as its block is named in the recipe.
type TargetKind string

const (
	TargetImage        TargetKind = "image"         // an `image` block: a container image
	TargetMachineImage TargetKind = "machine_image" // a `machine_image` block: disks and AMIs
	TargetValidate     TargetKind = "validate"      // a `validate` block: a GPU validation verdict
)

// Target is what a build made for one recipe target. Lists are sorted (see the Record… methods) so that the
// same build gives the same manifest.
type Target struct {
	Kind       TargetKind        `json:"kind"`
	Images     []ImageRecord     `json:"images,omitempty"`
	Disks      []DiskRecord      `json:"disks,omitempty"`
	AMIs       []AMIRecord       `json:"amis,omitempty"`
	Validation *ValidationRecord `json:"validation,omitempty"`
	// Kernel is the kernel release a machine image boots (uname -r).
	Kernel string `json:"kernel,omitempty"`
	// BootCheck is the verdict of a machine image's boot check in QEMU.
	BootCheck *BootCheckRecord `json:"boot_check,omitempty"`
}

// BootCheckRecord is the outcome of booting a machine image's disk in QEMU.
type BootCheckRecord struct {
	Verdict    Verdict `json:"verdict"`          // pass or fail
	Reason     string  `json:"reason,omitempty"` // why it failed
	Accel      string  `json:"accel"`            // kvm or tcg
	DurationMS int64   `json:"duration_ms"`
}

// ImageRecord is one container image built for one platform.
type ImageRecord struct {
	Platform     string   `json:"platform"`             // OS/architecture[/variant], e.g. "linux/amd64"
	Digest       string   `json:"digest"`               // image manifest digest, "sha256:<hex>"
	ConfigDigest string   `json:"config_digest"`        // image config digest, "sha256:<hex>"
	Size         int64    `json:"size"`                 // bytes: manifest, config and compressed layers
	Tags         []string `json:"tags,omitempty"`       // references the recipe asked for, e.g. "r.example.com/ml/trainer:1.2"
	PushedTo     []string `json:"pushed_to,omitempty"`  // references pushed, by digest: "r.example.com/ml/trainer@sha256:<hex>"
	OCILayout    string   `json:"oci_layout,omitempty"` // OCI image layout directory written, if any
	Tarball      string   `json:"tarball,omitempty"`    // image tarball written, if any
	// BuiltOn names, per platform, the node of a builder of several nodes that built it.
	BuiltOn map[string]string `json:"built_on,omitempty"`
}

// DiskRecord is one disk image file of a machine image.
type DiskRecord struct {
	Format string `json:"format"` // raw, qcow2, vmdk or vhd
	Path   string `json:"path"`   // where it was written
	Size   int64  `json:"size"`   // bytes of the file (for raw, the disk's virtual size)
	SHA256 string `json:"sha256"` // hex SHA-256 of the file
}

// AMIRecord is one AWS AMI registered (or copied) for a machine image.
type AMIRecord struct {
	Region      string   `json:"region"`       // e.g. "us-east-1"
	ImageID     string   `json:"image_id"`     // e.g. "ami-0123456789abcdef0"
	SnapshotIDs []string `json:"snapshot_ids"` // EBS snapshots behind the AMI
	Name        string   `json:"name"`         // the AMI's name
}

// Verdict is the result of a validation.
type Verdict string

const (
	VerdictPass Verdict = "pass"
	VerdictFail Verdict = "fail"
)

// ValidationRecord is the result of a validate target.
type ValidationRecord struct {
	Verdict Verdict `json:"verdict"`
	// Report is the validation report as JSON, kept as-is; its schema belongs to the validate package.
	Report json.RawMessage `json:"report,omitempty"`
}

// StepRecord is how one step of the run ended, from the runner's Result.
type StepRecord struct {
	ID         string         `json:"id"`
	Status     Status         `json:"status"`            // succeeded, failed, cancelled or skipped
	Started    time.Time      `json:"started,omitzero"`  // absent if skipped
	DurationMS int64          `json:"duration_ms"`       // of Run, integer milliseconds
	Cleanup    *CleanupRecord `json:"cleanup,omitempty"` // absent if Cleanup was not called
}

// CleanupRecord is how one step's Cleanup ended. A failed cleanup may have left something behind.
type CleanupRecord struct {
	Status     Status `json:"status"`      // succeeded or failed
	DurationMS int64  `json:"duration_ms"` // integer milliseconds
}

// NewManifest returns a manifest for a build that started at started, with no targets and no steps yet.
func NewManifest(buildID, gpuforgeVersion string, recipe RecipeRecord, started time.Time) *Manifest {
	return &Manifest{
		SchemaVersion:   SchemaVersion,
		BuildID:         buildID,
		GpuforgeVersion: gpuforgeVersion,
		Recipe:          recipe,
		Started:         started.UTC(),
		Targets:         map[string]*Target{},
		Steps:           []StepRecord{},
	}
}

// Target returns the target with the given name, adding an empty one if there is none. The returned Target is
// not guarded against concurrent use; steps running concurrently should use the Record… methods instead.
func (m *Manifest) Target(name string) *Target {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.target(name)
}

// target is Target with m.mu held.
func (m *Manifest) target(name string) *Target {
	if m.Targets == nil {
		m.Targets = map[string]*Target{}
	}
	t, ok := m.Targets[name]
	if !ok {
		t = &Target{}
		m.Targets[name] = t
	}
	return t
}

// RecordTarget adds the named target if there is none and sets its kind.
func (m *Manifest) RecordTarget(name string, kind TargetKind) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.target(name).Kind = kind
}

// RecordImage adds an image to the named target (added if needed), keeping images sorted by platform then
// digest.
func (m *Manifest) RecordImage(target string, img ImageRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.target(target)
	t.Images = insertSorted(t.Images, img, func(a, b ImageRecord) int {
		return cmp.Or(strings.Compare(a.Platform, b.Platform), strings.Compare(a.Digest, b.Digest))
	})
}

// RecordDisk adds a disk to the named target (added if needed), keeping disks sorted by format then path.
func (m *Manifest) RecordDisk(target string, d DiskRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.target(target)
	t.Disks = insertSorted(t.Disks, d, func(a, b DiskRecord) int {
		return cmp.Or(strings.Compare(a.Format, b.Format), strings.Compare(a.Path, b.Path))
	})
}

// RecordAMI adds an AMI to the named target (added if needed), keeping AMIs sorted by region then image ID.
// RecordMachine records the kernel and the boot check of a machine image target.
func (m *Manifest) RecordMachine(target, kernel string, boot *BootCheckRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.target(target)
	t.Kind, t.Kernel, t.BootCheck = TargetMachineImage, kernel, boot
}

func (m *Manifest) RecordAMI(target string, a AMIRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.target(target)
	t.AMIs = insertSorted(t.AMIs, a, func(a, b AMIRecord) int {
		return cmp.Or(strings.Compare(a.Region, b.Region), strings.Compare(a.ImageID, b.ImageID))
	})
}

// RecordValidation sets the validation result of the named target (added if needed).
func (m *Manifest) RecordValidation(target string, v ValidationRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.target(target).Validation = &v
}

// RecordRun sets the manifest's status, finish time and steps from a runner's Result.
func (m *Manifest) RecordRun(res *Result) {
	steps := make([]StepRecord, 0, len(res.Steps))
	for _, s := range res.Steps {
		rec := StepRecord{ID: s.ID, Status: s.Status, DurationMS: s.Duration.Milliseconds()}
		if !s.Started.IsZero() {
			rec.Started = s.Started.UTC()
		}
		if s.Cleanup != nil {
			rec.Cleanup = &CleanupRecord{Status: s.Cleanup.Status, DurationMS: s.Cleanup.Duration.Milliseconds()}
		}
		steps = append(steps, rec)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Status = res.Outcome
	m.Finished = res.Finished.UTC()
	m.Steps = steps
}

func insertSorted[T any](s []T, v T, compare func(a, b T) int) []T {
	i, _ := slices.BinarySearchFunc(s, v, compare)
	return slices.Insert(s, i, v)
}

var (
	_ json.Marshaler   = (*Manifest)(nil)
	_ json.Unmarshaler = (*Manifest)(nil)
)

// manifestJSON has Manifest's fields without its mutex or methods.
type manifestJSON struct {
	SchemaVersion   int                `json:"schema_version"`
	BuildID         string             `json:"build_id"`
	GpuforgeVersion string             `json:"gpuforge_version"`
	Recipe          RecipeRecord       `json:"recipe"`
	Started         time.Time          `json:"started"`
	Finished        time.Time          `json:"finished,omitzero"`
	Status          Outcome            `json:"status"`
	Targets         map[string]*Target `json:"targets"`
	Steps           []StepRecord       `json:"steps"`
}

// MarshalJSON returns the manifest as JSON, holding the manifest's lock while it encodes.
func (m *Manifest) MarshalJSON() ([]byte, error) { return m.encode("") }

// encode returns the manifest as JSON, indented with indent if it is not empty, holding m.mu.
func (m *Manifest) encode(indent string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mj := manifestJSON{
		SchemaVersion:   m.SchemaVersion,
		BuildID:         m.BuildID,
		GpuforgeVersion: m.GpuforgeVersion,
		Recipe:          m.Recipe,
		Started:         m.Started,
		Finished:        m.Finished,
		Status:          m.Status,
		Targets:         m.Targets,
		Steps:           m.Steps,
	}
	if mj.Targets == nil {
		mj.Targets = map[string]*Target{}
	}
	if mj.Steps == nil {
		mj.Steps = []StepRecord{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	if err := enc.Encode(mj); err != nil {
		return nil, fmt.Errorf("encode build manifest: %w", err)
	}
	return buf.Bytes(), nil
}

// UnmarshalJSON reads a manifest, rejecting any schema_version but SchemaVersion. Fields it does not know are
// ignored: a newer gpuforge may add some.
func (m *Manifest) UnmarshalJSON(data []byte) error {
	var mj manifestJSON
	if err := json.Unmarshal(data, &mj); err != nil {
		return fmt.Errorf("decode build manifest: %w", err)
	}
	if mj.SchemaVersion != SchemaVersion {
		return fmt.Errorf("build manifest has schema_version %d; this gpuforge reads %d", mj.SchemaVersion, SchemaVersion)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.SchemaVersion = mj.SchemaVersion
	m.BuildID = mj.BuildID
	m.GpuforgeVersion = mj.GpuforgeVersion
	m.Recipe = mj.Recipe
	m.Started = mj.Started
	m.Finished = mj.Finished
	m.Status = mj.Status
	m.Targets = mj.Targets
	m.Steps = mj.Steps
	if m.Targets == nil {
		m.Targets = map[string]*Target{}
	}
	if m.Steps == nil {
		m.Steps = []StepRecord{}
	}
	return nil
}

// ReadManifestFile reads the manifest at path.
func ReadManifestFile(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read build manifest: %w", err)
	}
	m := new(Manifest)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// WriteFile writes the manifest as JSON to path atomically: to a temporary file in the same directory, synced,
// then renamed over path, so a reader sees the old manifest or the new one, never part of one. The JSON is
// indented by two spaces, map keys are sorted, lists keep the order described on Target, and the file ends
// with a newline; the file's mode is 0644.
func (m *Manifest) WriteFile(path string) (err error) {
	data, err := m.encode("  ")
	if err != nil {
		return err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write build manifest: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("write build manifest %s: %w", path, err)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
