package buildkit

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	contentlocal "github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/gofrs/flock"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/client/llb"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/gpuforge/gpuforge/recipes"
)

// Bootstrapped bases live in <cache dir>/bootstrap/<key>/, an OCI image layout with one image
// of one gzip layer, plus bootstrapMarker, written last. Next to it are <key>.lock (flock'd
// while a process checks or builds that base) and, while one is built, <key>.tmp/.
const (
	// bootstrapFormat names what Bootstrap writes from mmdebstrap's tarball: the tar
	// normalisation, the layer's compression and the image config. It is part of the cache
	// key: change it whenever any of them changes so that older layouts are not reused.
	bootstrapFormat = "gpuforge-bootstrap/1"
	// bootstrapMarker is the completion marker in a layout directory. A directory without it
	// is an interrupted bootstrap and is never used.
	bootstrapMarker = "gpuforge-bootstrap.json"
	// bootstrapLockPoll is how often a caller waiting for another one's bootstrap of the same
	// base retries the lock.
	bootstrapLockPoll = 250 * time.Millisecond
	// bootstrapStopGrace is how long a cancelled mmdebstrap gets after SIGTERM before it is
	// killed. It finishes the step it is in first (apt and dpkg inside the chroot: up to about
	// a minute here), then unmounts and removes its temporary root; killing it earlier could
	// leave mounts behind in $TMPDIR.
	bootstrapStopGrace = 5 * time.Minute
	// bootstrapTailBytes is how much of mmdebstrap's output an error quotes.
	bootstrapTailBytes = 4096
	// bootstrapRefNameAnnotation names the image in an OCI layout's index.json.
	bootstrapRefNameAnnotation = "org.opencontainers.image.ref.name"
	// bootstrapPath is the PATH of a bootstrapped image, as in Debian's official images.
	bootstrapPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// CacheDirEnv names the environment variable that moves gpuforge's cache of bootstrapped bases
// (by default the cache directory under the state directory).
const CacheDirEnv = "GPUFORGE_CACHE_DIR"

// BootstrapResult is a bootstrapped base: an OCI image layout holding one image.
type BootstrapResult struct {
	// LayoutDir is the OCI image layout: <cache dir>/bootstrap/<Key>.
	LayoutDir string
	// Digest is the image's manifest digest.
	Digest digest.Digest
	// RefName is the image's org.opencontainers.image.ref.name in the layout's index.json
	// ("debian-bookworm-amd64-" and the first 12 characters of Key).
	RefName string
	// Key is the sha256 (hex) of the inputs: distribution, suite, mirror, variant,
	// components, packages, architecture, SOURCE_DATE_EPOCH and mmdebstrap's version.
	Key string
	// Cached tells whether the layout was already in the cache (no mmdebstrap ran).
	Cached bool
	// Platform is the image's platform (linux/amd64 for Debian's amd64).
	Platform ocispecs.Platform
	// Mirror is the mirror it was bootstrapped from: the recipe's, WithBootstrapMirror's or
	// the host's apt mirror.
	Mirror string

	config []byte // the image config, as in the layout
}

// Config returns the image's config (platform, PATH, created time, history).
func (r *BootstrapResult) Config() (ocispecs.Image, error) {
	var img ocispecs.Image
	if err := json.Unmarshal(r.config, &img); err != nil {
		return img, fmt.Errorf("config of bootstrapped base %s: %w", r.LayoutDir, err)
	}
	return img, nil
}

// StoreName is the name under which the layout is offered to BuildKit:
// client.SolveOpt.OCIStores[r.StoreName()] = r.ContentStore(). It is derived from Key, so
// bases with different inputs never share a name in one solve.
func (r *BootstrapResult) StoreName() string {
	return "gpuforge-bootstrap-" + r.Key[:min(16, len(r.Key))]
}

// ContentStore opens the layout as a containerd content store, the type BuildKit's
// client.SolveOpt.OCIStores takes (as `buildctl --oci-layout` and buildx's oci-layout://
// contexts do). It only reads the layout.
func (r *BootstrapResult) ContentStore() (content.Store, error) {
	cs, err := contentlocal.NewStore(r.LayoutDir)
	if err != nil {
		return nil, fmt.Errorf("opening bootstrapped base %s: %w", r.LayoutDir, err)
	}
	return cs, nil
}

// State is the image as an LLB source, read through the session from the content store
// named StoreName (which the solve must offer, see ContentStore), with the image's config
// (PATH, platform) applied.
func (r *BootstrapResult) State() llb.State {
	st := llb.OCILayout("gpuforge/bootstrap@"+r.Digest.String(),
		llb.OCIStore("", r.StoreName()),
		llb.Platform(r.Platform),
		llb.WithCustomName("bootstrap "+r.RefName),
	)
	if withCfg, err := st.WithImageConfig(r.config); err == nil {
		st = withCfg
	}
	return st
}

// BootstrapOption configures Bootstrap.
type BootstrapOption func(*bootstrapOptions)

type bootstrapOptions struct {
	cacheDir   string
	mirror     string
	log        io.Writer
	mmdebstrap string
	epoch      *time.Time
}

// WithBootstrapCacheDir is where bootstrapped bases are kept: DIR/bootstrap/<key>/. The
// default is $GPUFORGE_CACHE_DIR (CacheDirEnv) when set, else the cache directory under
// gpuforge's state directory (DefaultStateDir).
func WithBootstrapCacheDir(dir string) BootstrapOption {
	return func(o *bootstrapOptions) { o.cacheDir = dir }
}

// WithBootstrapMirror bootstraps from this mirror, whatever the recipe or the host's apt
// configuration says.
func WithBootstrapMirror(mirror string) BootstrapOption {
	return func(o *bootstrapOptions) { o.mirror = mirror }
}

// WithBootstrapLogWriter receives mmdebstrap's output. The default discards it (an error still
// quotes its end).
func WithBootstrapLogWriter(w io.Writer) BootstrapOption {
	return func(o *bootstrapOptions) { o.log = w }
}

// WithMmdebstrapPath runs this mmdebstrap instead of the one on PATH.
func WithMmdebstrapPath(path string) BootstrapOption {
	return func(o *bootstrapOptions) { o.mmdebstrap = path }
}

// WithBootstrapEpoch sets SOURCE_DATE_EPOCH for the bootstrap instead of the environment
// variable: every mtime in the layer is clamped to it, it is the image's created time, and
// the same epoch, inputs and mirror content give the same image digest.
func WithBootstrapEpoch(t time.Time) BootstrapOption {
	return func(o *bootstrapOptions) { o.epoch = &t }
}

// bootstrapInputs are what a bootstrapped base is made of; their canonical JSON's sha256 is
// the cache key.
type bootstrapInputs struct {
	Format          string   `json:"format"`
	Distribution    string   `json:"distribution"`
	Suite           string   `json:"suite"`
	Mirror          string   `json:"mirror"`
	Variant         string   `json:"variant"`
	Components      []string `json:"components"`
	Packages        []string `json:"packages"`
	Architecture    string   `json:"architecture"`
	SourceDateEpoch string   `json:"source_date_epoch"` // seconds; "" when unset
	Mmdebstrap      string   `json:"mmdebstrap"`        // `mmdebstrap --version`
}

func (in *bootstrapInputs) key() string {
	b, err := json.Marshal(in)
	if err != nil {
		panic(err) // strings only
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// bootstrapRecord is the completion marker's content.
type bootstrapRecord struct {
	Key      string            `json:"key"`
	Digest   digest.Digest     `json:"digest"`
	RefName  string            `json:"ref_name"`
	Platform ocispecs.Platform `json:"platform"`
	Inputs   bootstrapInputs   `json:"inputs"`
	Seconds  float64           `json:"seconds"` // how long mmdebstrap and the layout took
}

// Bootstrap builds the base filesystem b describes with mmdebstrap on this host and turns it
// into an OCI image layout under the cache directory, or returns the one already there for the
// same inputs. mmdebstrap runs with --variant, --components, --include, --architectures,
// --format=tar (into a temporary file), --skip=output/dev (no device nodes in an image) and a
// hook that removes the host's /etc/hostname and /etc/resolv.conf it copies in (a container
// runtime provides both, and they would tie the image to the host).
//
// The mirror is WithBootstrapMirror's, else b.Mirror, else the host's apt mirror
// (HostAptMirror). SOURCE_DATE_EPOCH (WithBootstrapEpoch, else the environment variable) is
// passed to mmdebstrap, which then writes the same tarball for the same inputs and mirror
// content; the layer is that tarball normalised (names without "./", an empty dev/ directory,
// mtimes clamped to the epoch, numeric owners only) and gzip-compressed at a fixed level, so
// the digest is the same too. When SOURCE_DATE_EPOCH is unset the current time is used for
// the run, and the base is cached under an unset epoch.
//
// Concurrent callers for the same inputs, in this process or others, wait for one bootstrap
// (an flock per key). A layout counts as cached only once its completion marker is written,
// after everything else and atomically, so an interrupted bootstrap is never reused.
// Cancelling ctx sends mmdebstrap SIGTERM; it finishes its current step, cleans up and exits
// (up to about a minute), and Bootstrap returns ctx's error. It is killed if still running five
// minutes later.
func Bootstrap(ctx context.Context, b *recipes.Bootstrap, opts ...BootstrapOption) (*BootstrapResult, error) {
	if b == nil {
		return nil, errors.New("bootstrap: no bootstrap block")
	}
	o := bootstrapOptions{log: io.Discard}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = io.Discard
	}
	if o.cacheDir == "" {
		o.cacheDir = os.Getenv(CacheDirEnv)
	}
	if o.cacheDir == "" {
		state, err := DefaultStateDir()
		if err != nil {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		o.cacheDir = filepath.Join(state, "cache")
	}
	cacheDir, err := filepath.Abs(o.cacheDir)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: cache directory: %w", err)
	}
	o.cacheDir = cacheDir
	in, runEpoch, err := resolveBootstrapInputs(b, &o)
	if err != nil {
		return nil, err
	}
	key := in.key()
	dir := filepath.Join(cacheDir, "bootstrap")
	layoutDir := filepath.Join(dir, key)

	// Fast path: a completed layout is never written again, so no lock is needed to read it.
	if res, err := loadBootstrap(layoutDir, key); err == nil {
		return res, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	lock := flock.New(filepath.Join(dir, key+".lock"))
	locked, err := lock.TryLock()
	if err == nil && !locked {
		fmt.Fprintf(o.log, "gpuforge: waiting for another bootstrap of the same base (%s)\n", lock.Path())
		locked, err = lock.TryLockContext(ctx, bootstrapLockPoll)
	}
	if err != nil || !locked {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("bootstrap: waiting for %s: %w", lock.Path(), ctxErr)
		}
		return nil, fmt.Errorf("bootstrap: locking %s: %v", lock.Path(), err)
	}
	defer lock.Unlock()
	// Another caller may have finished while this one waited.
	if res, err := loadBootstrap(layoutDir, key); err == nil {
		return res, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(o.log, "gpuforge: bootstrapping again: %v\n", err)
	}
	return buildBootstrap(ctx, in, runEpoch, dir, key, &o)
}

var (
	bootstrapNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+.~_-]*$`)
	// apt package arguments: name, name=version, name/suite, name:arch.
	bootstrapPackageRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+.~_:=/-]*$`)
)

// resolveBootstrapInputs applies defaults, resolves the mirror and mmdebstrap, and checks
// what ends up on mmdebstrap's command line. It also returns the epoch the run uses.
func resolveBootstrapInputs(b *recipes.Bootstrap, o *bootstrapOptions) (*bootstrapInputs, time.Time, error) {
	in := &bootstrapInputs{Format: bootstrapFormat, Suite: b.Suite, Variant: b.Variant, Architecture: b.Architecture}
	var err error
	if in.Distribution, err = aptDistribution(b.Distribution); err != nil {
		return nil, time.Time{}, fmt.Errorf("bootstrap: %w", err)
	}
	if !bootstrapNameRE.MatchString(in.Suite) {
		return nil, time.Time{}, fmt.Errorf("bootstrap: invalid suite %q", in.Suite)
	}
	if in.Variant == "" {
		in.Variant = "minbase"
	}
	if !bootstrapNameRE.MatchString(in.Variant) {
		return nil, time.Time{}, fmt.Errorf("bootstrap: invalid variant %q", in.Variant)
	}
	in.Components = slices.Clone(b.Components)
	if len(in.Components) == 0 {
		in.Components = []string{"main"}
	}
	for _, c := range in.Components {
		if !bootstrapNameRE.MatchString(c) {
			return nil, time.Time{}, fmt.Errorf("bootstrap: invalid component %q", c)
		}
	}
	// The order of --include does not change the result; the order of components does (it
	// is written to the image's sources.list).
	in.Packages = slices.Clone(b.Packages)
	slices.Sort(in.Packages)
	in.Packages = slices.Compact(in.Packages)
	for _, p := range in.Packages {
		if !bootstrapPackageRE.MatchString(p) {
			return nil, time.Time{}, fmt.Errorf("bootstrap: invalid package %q", p)
		}
	}
	if in.Packages == nil {
		in.Packages = []string{}
	}
	if in.Architecture == "" {
		in.Architecture = bootstrapDebianArch(runtime.GOARCH)
	}
	if _, err := bootstrapPlatform(in.Architecture); err != nil {
		return nil, time.Time{}, fmt.Errorf("bootstrap: %w", err)
	}

	mirror := o.mirror
	if mirror == "" {
		mirror = b.Mirror
	}
	if mirror == "" {
		if mirror, err = HostAptMirror(in.Distribution); err != nil {
			return nil, time.Time{}, fmt.Errorf("bootstrap: %w", err)
		}
	}
	if u, err := url.Parse(mirror); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") ||
		(u.Scheme != "file" && u.Host == "") || strings.ContainsAny(mirror, " \t\n") {
		return nil, time.Time{}, fmt.Errorf("bootstrap: the mirror %q is not an http://, https:// or file:// URL", mirror)
	}
	in.Mirror = strings.TrimRight(mirror, "/")

	runEpoch := time.Now().UTC().Truncate(time.Second)
	switch {
	case o.epoch != nil:
		if o.epoch.Unix() < 0 {
			return nil, time.Time{}, fmt.Errorf("bootstrap: SOURCE_DATE_EPOCH %d is before 1970", o.epoch.Unix())
		}
		runEpoch = time.Unix(o.epoch.Unix(), 0).UTC()
		in.SourceDateEpoch = strconv.FormatInt(runEpoch.Unix(), 10)
	case os.Getenv("SOURCE_DATE_EPOCH") != "":
		s := os.Getenv("SOURCE_DATE_EPOCH")
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return nil, time.Time{}, fmt.Errorf("bootstrap: SOURCE_DATE_EPOCH=%q is not a number of seconds since 1970", s)
		}
		runEpoch = time.Unix(n, 0).UTC()
		in.SourceDateEpoch = strconv.FormatInt(n, 10)
	}

	if o.mmdebstrap == "" {
		if o.mmdebstrap, err = exec.LookPath("mmdebstrap"); err != nil {
			return nil, time.Time{}, errors.New("bootstrap: mmdebstrap is not installed (apt-get install mmdebstrap, or `make setup`)")
		}
	}
	if in.Mmdebstrap, err = mmdebstrapVersion(o.mmdebstrap, o.cacheDir); err != nil {
		return nil, time.Time{}, err
	}
	return in, runEpoch, nil
}

// bootstrapDebianArch is the Debian architecture of a Go GOARCH.
func bootstrapDebianArch(goarch string) string {
	switch goarch {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	case "ppc64le":
		return "ppc64el"
	case "mips64le":
		return "mips64el"
	}
	return goarch // amd64, arm64, s390x, riscv64, loong64
}

// bootstrapPlatform is the OCI platform of a Debian architecture.
func bootstrapPlatform(arch string) (ocispecs.Platform, error) {
	p := ocispecs.Platform{OS: "linux"}
	switch arch {
	case "amd64", "s390x", "riscv64", "loong64":
		p.Architecture = arch
	case "arm64":
		p.Architecture, p.Variant = "arm64", "v8"
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v5"
	case "i386":
		p.Architecture = "386"
	case "ppc64el":
		p.Architecture = "ppc64le"
	case "mips64el":
		p.Architecture = "mips64le"
	default:
		return p, fmt.Errorf("unsupported architecture %q (one Debian architecture such as amd64 or arm64)", arch)
	}
	return p, nil
}

var mmdebstrapVersions sync.Map // path, size and mtime -> version

// mmdebstrapVersion returns `mmdebstrap --version` ("mmdebstrap 1.3.5"), remembered per
// program file in memory and in the cache directory: mmdebstrap is a Perl program that takes
// about 0.4 s to say its version, which would be most of a no-op rebuild.
func mmdebstrapVersion(path, cacheDir string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("bootstrap: mmdebstrap: %w", err)
	}
	id := fmt.Sprintf("%s\x00%d\x00%d", path, fi.Size(), fi.ModTime().UnixNano())
	if v, ok := mmdebstrapVersions.Load(id); ok {
		return v.(string), nil
	}
	memo := ""
	if cacheDir != "" {
		memo = filepath.Join(cacheDir, "mmdebstrap-version")
		if data, err := os.ReadFile(memo); err == nil {
			if saved, v, ok := strings.Cut(string(data), "\n"); ok && saved == id && v != "" {
				mmdebstrapVersions.Store(id, v)
				return v, nil
			}
		}
	}
	defer func() {
		if v, ok := mmdebstrapVersions.Load(id); ok && memo != "" {
			_ = os.MkdirAll(filepath.Dir(memo), 0o755)
			tmp := fmt.Sprintf("%s.%d", memo, os.Getpid())
			if os.WriteFile(tmp, []byte(id+"\n"+v.(string)), 0o644) == nil {
				_ = os.Rename(tmp, memo)
			}
		}
	}()
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("bootstrap: %s --version: %w", path, err)
	}
	v := strings.TrimSpace(string(out))
	if v == "" {
		return "", fmt.Errorf("bootstrap: %s --version printed nothing", path)
	}
	mmdebstrapVersions.Store(id, v)
	return v, nil
}

// loadBootstrap returns the completed layout in dir, or an error wrapping fs.ErrNotExist when
// there is none (no marker: never built, or interrupted).
func loadBootstrap(dir, key string) (*BootstrapResult, error) {
	data, err := os.ReadFile(filepath.Join(dir, bootstrapMarker))
	if err != nil {
		return nil, err
	}
	var rec bootstrapRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("completion marker of %s: %w", dir, err)
	}
	if rec.Key != key || rec.Digest.Validate() != nil {
		return nil, fmt.Errorf("completion marker of %s is for another base", dir)
	}
	blob := func(d digest.Digest) string {
		return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
	}
	manifest, err := os.ReadFile(blob(rec.Digest))
	if err != nil {
		return nil, fmt.Errorf("layout %s is incomplete: %w", dir, err)
	}
	var m ocispecs.Manifest
	if err := json.Unmarshal(manifest, &m); err != nil || m.Config.Digest.Validate() != nil {
		return nil, fmt.Errorf("layout %s: bad manifest %s", dir, rec.Digest)
	}
	config, err := os.ReadFile(blob(m.Config.Digest))
	if err != nil {
		return nil, fmt.Errorf("layout %s is incomplete: %w", dir, err)
	}
	return &BootstrapResult{
		LayoutDir: dir, Digest: rec.Digest, RefName: rec.RefName, Key: key, Cached: true,
		Platform: rec.Platform, Mirror: rec.Inputs.Mirror, config: config,
	}, nil
}

// buildBootstrap runs mmdebstrap and writes the layout. The caller holds the key's lock.
func buildBootstrap(ctx context.Context, in *bootstrapInputs, epoch time.Time, dir, key string, o *bootstrapOptions) (*BootstrapResult, error) {
	start := time.Now()
	layoutDir := filepath.Join(dir, key)
	tmp := filepath.Join(dir, key+".tmp")
	// Leftovers of an interrupted bootstrap of this key.
	for _, p := range []string{layoutDir, tmp} {
		if err := os.RemoveAll(p); err != nil {
			return nil, fmt.Errorf("bootstrap: removing an interrupted bootstrap: %w", err)
		}
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	defer os.RemoveAll(tmp)

	tarball := filepath.Join(tmp, "rootfs.tar")
	if err := runMmdebstrap(ctx, in, epoch, tarball, o); err != nil {
		return nil, err
	}

	staging := filepath.Join(tmp, "layout")
	lp, err := layout.Write(staging, empty.Index)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: writing the layout: %w", err)
	}
	layer, err := writeBootstrapLayer(tarball, filepath.Join(staging, "blobs", "sha256"), epoch)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := os.Remove(tarball); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	platform, _ := bootstrapPlatform(in.Architecture)
	img, err := bootstrapImage(layer, platform, epoch, in.Suite)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	refName := bootstrapRefName(in, key)
	err = lp.AppendImage(img,
		layout.WithAnnotations(map[string]string{bootstrapRefNameAnnotation: refName}),
		layout.WithPlatform(v1.Platform{OS: platform.OS, Architecture: platform.Architecture, Variant: platform.Variant}))
	if err != nil {
		return nil, fmt.Errorf("bootstrap: writing the layout: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}

	// Commit: the layout's files reach the disk, then the directory gets its name, then the
	// marker is written (to a temporary name, synced, renamed and the directory synced).
	if err := bootstrapSyncTree(staging); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := os.Rename(staging, layoutDir); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := bootstrapSyncDir(dir); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	rec := bootstrapRecord{
		Key: key, Digest: digest.Digest(d.String()), RefName: refName, Platform: platform, Inputs: *in,
		Seconds: time.Since(start).Round(time.Millisecond).Seconds(),
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := bootstrapWriteFile(filepath.Join(layoutDir, bootstrapMarker), append(data, '\n')); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return &BootstrapResult{
		LayoutDir: layoutDir, Digest: rec.Digest, RefName: refName, Key: key,
		Platform: platform, Mirror: in.Mirror, config: config,
	}, nil
}

// bootstrapRefName is the image's name in its layout: <distribution>-<suite>-<arch>-<key[:12]>.
func bootstrapRefName(in *bootstrapInputs, key string) string {
	name := fmt.Sprintf("%s-%s-%s-%s", in.Distribution, in.Suite, in.Architecture, key[:12])
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, name)
}

// runMmdebstrap writes the tarball of the base to tarball.
func runMmdebstrap(ctx context.Context, in *bootstrapInputs, epoch time.Time, tarball string, o *bootstrapOptions) error {
	args := []string{
		"--variant=" + in.Variant,
		"--components=" + strings.Join(in.Components, ","),
		"--architectures=" + in.Architecture,
		"--format=tar",
		"--skip=output/dev",
		// mmdebstrap copies the host's /etc/hostname and /etc/resolv.conf into the chroot.
		`--customize-hook=rm -f "$1/etc/hostname" "$1/etc/resolv.conf"`,
	}
	if len(in.Packages) > 0 {
		args = append(args, "--include="+strings.Join(in.Packages, ","))
	}
	args = append(args, in.Suite, tarball, in.Mirror)

	cmd := exec.CommandContext(ctx, o.mmdebstrap, args...)
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") })
	cmd.Env = append(env, "SOURCE_DATE_EPOCH="+strconv.FormatInt(epoch.Unix(), 10))
	tail := &bootstrapTail{max: bootstrapTailBytes}
	out := io.MultiWriter(o.log, tail)
	cmd.Stdout, cmd.Stderr = out, out
	// mmdebstrap unmounts and removes its temporary root on SIGTERM; SIGKILL would leave
	// them behind.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = bootstrapStopGrace
	fmt.Fprintf(o.log, "gpuforge: %s %s\n", o.mmdebstrap, strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("bootstrap: mmdebstrap %s: %w", in.Suite, ctxErr)
		}
		return fmt.Errorf("bootstrap: mmdebstrap %s from %s: %w\n%s", in.Suite, in.Mirror, err, tail.String())
	}
	return nil
}

// bootstrapTail keeps the last max bytes written to it.
type bootstrapTail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (w *bootstrapTail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > w.max {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-w.max:]...)
	}
	return len(p), nil
}

func (w *bootstrapTail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.TrimSpace(string(w.buf))
}

// bootstrapLayer is a gzip layer blob already in place in the layout, with its digests
// computed while it was written.
type bootstrapLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

func (l *bootstrapLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *bootstrapLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *bootstrapLayer) Size() (int64, error)                { return l.size, nil }
func (l *bootstrapLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *bootstrapLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *bootstrapLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &bootstrapReadCloser{Reader: zr, close: func() error { zr.Close(); return f.Close() }}, nil
}

type bootstrapReadCloser struct {
	io.Reader
	close func() error
}

func (r *bootstrapReadCloser) Close() error { return r.close() }

// writeBootstrapLayer rewrites mmdebstrap's tarball as the layer: entry names without "./"
// (the root entry dropped), an empty dev/ directory (mmdebstrap's device nodes are skipped,
// but a root filesystem needs the mount point), mtimes clamped to the epoch, no atime or
// ctime, numeric owners, extended attributes kept; the order is mmdebstrap's (tar
// --sort=name). It is gzip-compressed at level 1: a fixed level of Go's compress/gzip gives
// the same bytes for the same tar, BuildKit imports it with a cheap decompression, and it is
// pushed compressed when an image built on it is pushed (BuildKit keeps base layers' blobs).
// The blob is written into blobDir under its digest.
func writeBootstrapLayer(tarball, blobDir string, epoch time.Time) (*bootstrapLayer, error) {
	in, err := os.Open(tarball)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	if err := os.MkdirAll(blobDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(blobDir, "layer-*.tmp")
	if err != nil {
		return nil, err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name()) // fails once renamed
	}()
	digestH, diffH := sha256.New(), sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, digestH), 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(io.MultiWriter(zw, diffH))
	if err := normalizeBootstrapTar(tar.NewReader(bufio.NewReaderSize(in, 1<<20)), tw, epoch); err != nil {
		return nil, fmt.Errorf("rewriting mmdebstrap's tarball: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	l := &bootstrapLayer{digest: bootstrapHash(digestH), diffID: bootstrapHash(diffH), size: size}
	l.path = filepath.Join(blobDir, l.digest.Hex)
	if err := f.Chmod(0o644); err != nil { // CreateTemp's 0600; blobs are readable as layout.Write makes them
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(f.Name(), l.path); err != nil {
		return nil, err
	}
	return l, nil
}

func bootstrapHash(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// normalizeBootstrapTar copies tr to tw as writeBootstrapLayer describes.
func normalizeBootstrapTar(tr *tar.Reader, tw *tar.Writer, epoch time.Time) error {
	clamp := func(t time.Time) time.Time {
		if t.After(epoch) {
			t = epoch
		}
		return time.Unix(t.Unix(), 0)
	}
	devDone := false
	writeDev := func() error {
		devDone = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0o755, ModTime: time.Unix(epoch.Unix(), 0)})
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name := bootstrapTarName(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeXGlobalHeader:
			continue
		case tar.TypeGNUSparse:
			hdr.Typeflag = tar.TypeReg
		}
		if name == "" {
			continue // the root directory
		}
		top, _, _ := strings.Cut(name, "/")
		if top == "dev" {
			if !devDone && hdr.Typeflag == tar.TypeDir && name == "dev/" {
				if err := writeDev(); err != nil {
					return err
				}
			}
			continue // device nodes and /dev symlinks belong to the runtime
		}
		if !devDone && top > "dev" {
			if err := writeDev(); err != nil {
				return err
			}
		}
		nh := &tar.Header{
			Typeflag: hdr.Typeflag,
			Name:     name,
			Linkname: hdr.Linkname,
			Size:     hdr.Size,
			Mode:     hdr.Mode,
			Uid:      hdr.Uid,
			Gid:      hdr.Gid,
			ModTime:  clamp(hdr.ModTime),
			Devmajor: hdr.Devmajor,
			Devminor: hdr.Devminor,
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if !strings.HasSuffix(nh.Name, "/") {
				nh.Name += "/"
			}
		case tar.TypeLink:
			nh.Linkname = bootstrapTarName(hdr.Linkname)
		}
		for k, v := range hdr.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				if nh.PAXRecords == nil {
					nh.PAXRecords = map[string]string{}
				}
				nh.PAXRecords[k] = v
			}
		}
		if err := tw.WriteHeader(nh); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if nh.Typeflag == tar.TypeReg {
			if _, err := io.Copy(tw, tr); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		}
	}
	if !devDone {
		return writeDev()
	}
	return nil
}

// bootstrapTarName is a tar entry's name relative to the root: "./etc/" -> "etc/", "./" -> "".
func bootstrapTarName(name string) string {
	for {
		switch {
		case strings.HasPrefix(name, "./"):
			name = name[2:]
		case strings.HasPrefix(name, "/"):
			name = name[1:]
		case name == ".":
			return ""
		default:
			return name
		}
	}
}

// bootstrapImage is the OCI image of the layer: os/arch of the platform, created at the epoch,
// one history entry "gpuforge bootstrap <suite>", PATH as in Debian's images, bash as command.
func bootstrapImage(layer *bootstrapLayer, p ocispecs.Platform, epoch time.Time, suite string) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: epoch.UTC()}
	cf := &v1.ConfigFile{
		Architecture: p.Architecture,
		Variant:      p.Variant,
		OS:           p.OS,
		Created:      created,
		Config: v1.Config{
			Env: []string{bootstrapPath},
			Cmd: []string{"bash"},
		},
		RootFS:  v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{layer.diffID}},
		History: []v1.History{{Created: created, CreatedBy: "gpuforge bootstrap " + suite}},
	}
	return mutate.ConfigFile(img, cf)
}

// bootstrapSyncTree fsyncs every file and directory under root.
func bootstrapSyncTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

func bootstrapSyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// bootstrapWriteFile writes path through a synced temporary file renamed over it, then syncs the
// directory.
func bootstrapWriteFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return bootstrapSyncDir(filepath.Dir(path))
}
