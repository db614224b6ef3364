package buildkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	commonexptypes "github.com/moby/buildkit/exporter/exptypes"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
	"github.com/moby/buildkit/solver/errdefs"
	"github.com/moby/buildkit/util/progress/progressui"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/tonistiigi/fsutil"
	"golang.org/x/sync/errgroup"

	"github.com/gpuforge/gpuforge/recipes"
)

// ImageResult is what building one image target produced.
type ImageResult struct {
	Address   string        // image.NAME
	LayoutDir string        // the OCI image layout written for it
	Digest    digest.Digest // manifest, or index for several platforms
	Platforms []string
	Tags      []string
	Duration  time.Duration
	Nodes     []NodeReport // which node built each platform, on a builder of several nodes
}

// Report is the outcome of a [Build]: the images, and every build step of the run (gpuforge's
// own steps, named "[platform] …") with whether BuildKit took it from its cache.
type Report struct {
	Images []*ImageResult
	Steps  []Step
}

// Step is one build step as BuildKit reported it.
type Step struct {
	Name   string
	Cached bool
}

// CacheHits counts the steps taken from the cache.
func (r *Report) CacheHits() int {
	n := 0
	for _, s := range r.Steps {
		if s.Cached {
			n++
		}
	}
	return n
}

// BuildError is a failed image build, pointing at the recipe line that failed.
type BuildError struct {
	Target   string
	Location string   // recipe file:line:col of the failing step, when BuildKit reports it
	Step     string   // the step's name, e.g. "[linux/amd64] run make"
	Output   []string // the last lines the step printed
	Err      error
}

func (e *BuildError) Error() string {
	var sb strings.Builder
	sb.WriteString(e.Target)
	if e.Location != "" {
		sb.WriteString(" (" + e.Location + ")")
	}
	if e.Step != "" {
		sb.WriteString(": " + e.Step)
	}
	sb.WriteString(": " + e.Err.Error())
	if len(e.Output) > 0 {
		sb.WriteString("\n  last output:\n")
		for _, l := range e.Output {
			sb.WriteString("    " + l + "\n")
		}
	}
	return strings.TrimRight(sb.String(), "\n")
}

func (e *BuildError) Unwrap() error { return e.Err }

type buildOptions struct {
	outDir     string
	progress   io.Writer
	mode       progressui.DisplayMode
	epoch      *time.Time
	provenance bool
	platform   ocispecs.Platform
	cacheDir   string
	env        func(string) (string, bool)
	bootLog    io.Writer
	keychain   authn.Keychain
}

// newBuildOptions applies opts to the defaults of [Build] and [BuildMachineRootfs].
func newBuildOptions(opts []BuildOption) buildOptions {
	o := buildOptions{outDir: filepath.Join(".gpuforge", "out"), platform: platforms.DefaultSpec(), env: os.LookupEnv, bootLog: io.Discard, keychain: authn.DefaultKeychain}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// BuildOption configures [Build].
type BuildOption func(*buildOptions)

// WithOutDir sets where each image's OCI layout is written: DIR/NAME. The default is
// ".gpuforge/out" in the current directory.
func WithOutDir(dir string) BuildOption { return func(o *buildOptions) { o.outDir = dir } }

// WithProgress shows BuildKit's progress on w in the given mode (auto, tty, plain, rawjson,
// quiet). The default is no progress output.
func WithProgress(w io.Writer, mode string) BuildOption {
	return func(o *buildOptions) { o.progress, o.mode = w, progressui.DisplayMode(mode) }
}

// WithEpoch sets SOURCE_DATE_EPOCH: image and history timestamps and every file's mtime in the
// layers are clamped to it, so the same inputs give the same digests. The default is unset.
func WithEpoch(t time.Time) BuildOption { return func(o *buildOptions) { o.epoch = &t } }

// WithProvenance attaches an SLSA provenance attestation (mode=max) to each image. The default
// is off (gpuforge build turns it on for images it pushes).
func WithProvenance(on bool) BuildOption { return func(o *buildOptions) { o.provenance = on } }

// WithPlatform is the platform of images that name none. The default is the platform gpuforge
// runs on.
func WithPlatform(p ocispecs.Platform) BuildOption { return func(o *buildOptions) { o.platform = p } }

// WithCacheDir is where bootstrapped bases are cached. The default is the state directory's cache.
func WithCacheDir(dir string) BuildOption { return func(o *buildOptions) { o.cacheDir = dir } }

// WithBootstrapLog receives mmdebstrap's output. The default discards it.
func WithBootstrapLog(w io.Writer) BuildOption { return func(o *buildOptions) { o.bootLog = w } }

// WithKeychain gives the credentials BuildKit pulls bases with. The default is
// authn.DefaultKeychain (docker config.json and credential helpers).
func WithKeychain(kc authn.Keychain) BuildOption { return func(o *buildOptions) { o.keychain = kc } }

// WithLookupEnv is how build secrets given as environment variables are read. The default is
// os.LookupEnv.
func WithLookupEnv(f func(string) (string, bool)) BuildOption {
	return func(o *buildOptions) { o.env = f }
}

// Build builds the named image targets of a recipe on a BuildKit daemon, all at once: one
// session and one solve per target, started together, so a base they share is built once and
// independent images build in parallel. Each image is written as an OCI layout.
func Build(ctx context.Context, c *client.Client, r *recipes.Recipe, names []string, opts ...BuildOption) (*Report, error) {
	return BuildOn(ctx, []*Node{{Name: "default", Client: c}}, r, names, opts...)
}

// BuildOn is Build on a builder of several nodes: each platform of an image is built on the node
// that builds it natively (see route), the platforms of one node in one solve, and the nodes'
// images are merged into one image index, as buildx does for a builder with appended nodes.
// With one node it is Build.
func BuildOn(ctx context.Context, nodes []*Node, r *recipes.Recipe, names []string, opts ...BuildOption) (*Report, error) {
	if len(nodes) == 0 {
		return nil, errors.New("a builder needs at least one node")
	}
	o := newBuildOptions(opts)
	plans := make([][]platformGroup, len(names))
	for i, name := range names {
		img := r.Image(name)
		if img == nil {
			return nil, fmt.Errorf("no image %q in the recipe", name)
		}
		plats, err := NewLowerer(r, nil, o.epoch, o.platform).platformsOf(img)
		if err != nil {
			return nil, err
		}
		if plans[i], err = route(nodes, plats); err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
	}
	boots, err := bootstrapBases(ctx, r, names, o)
	if err != nil {
		return nil, err
	}

	display := make(chan *client.SolveStatus)
	logs := newVertexLogs()
	var displayErr error
	displayDone := make(chan struct{})
	go func() {
		defer close(displayDone)
		if o.progress == nil {
			for range display {
			}
			return
		}
		d, err := progressui.NewDisplay(o.progress, o.mode)
		if err != nil {
			displayErr = err
			for range display {
			}
			return
		}
		_, displayErr = d.UpdateFrom(context.WithoutCancel(ctx), display)
	}()

	results := make([]*ImageResult, len(names))
	var fwd sync.WaitGroup
	status := func() chan *client.SolveStatus {
		ch := make(chan *client.SolveStatus)
		fwd.Add(1)
		go func() {
			defer fwd.Done()
			for s := range ch {
				logs.record(s)
				display <- s
			}
		}()
		return ch
	}
	eg, ectx := errgroup.WithContext(ctx)
	for i, name := range names {
		groups := plans[i]
		if len(groups) == 1 {
			ch := status()
			eg.Go(func() error {
				res, err := buildOne(ectx, groups[0].node.Client, r, name, boots, o, ch, nil, "")
				if err != nil {
					return logs.explain(recipes.KindImage+"."+name, err)
				}
				if len(nodes) > 1 {
					for _, p := range res.Platforms {
						res.Nodes = append(res.Nodes, NodeReport{Platform: p, Node: groups[0].node.Name, Duration: res.Duration})
					}
				}
				results[i] = res
				return nil
			})
			continue
		}
		chs := make([]chan *client.SolveStatus, len(groups))
		for j := range groups {
			chs[j] = status()
		}
		eg.Go(func() error {
			start := time.Now()
			defer os.RemoveAll(partsDir(o.outDir, name)) // the nodes' layouts, merged or not
			parts := make([]*ImageResult, len(groups))
			dirs := make([]string, len(groups))
			peg, pctx := errgroup.WithContext(ectx)
			for j, g := range groups {
				dirs[j] = filepath.Join(partsDir(o.outDir, name), g.node.Name)
				peg.Go(func() error {
					res, err := buildOne(pctx, g.node.Client, r, name, boots, o, chs[j], g.platforms, dirs[j])
					if err != nil {
						return fmt.Errorf("on node %s (%s): %w", g.node.Name, g.node.Address, err)
					}
					parts[j] = res
					return nil
				})
			}
			if err := peg.Wait(); err != nil {
				return logs.explain(recipes.KindImage+"."+name, err)
			}
			img := r.Image(name)
			dir := filepath.Join(o.outDir, name)
			var index map[string]string
			if len(img.Platforms) > 1 {
				index = staticAnnotations(r, img, o.epoch)
			}
			dgst, err := mergeParts(dir, dirs, index, img.Tags)
			if err != nil {
				return fmt.Errorf("image %s: merging the nodes' images: %w", name, err)
			}
			res := &ImageResult{Address: recipes.KindImage + "." + name, LayoutDir: dir, Tags: img.Tags, Digest: dgst}
			for j, part := range parts {
				res.Platforms = append(res.Platforms, part.Platforms...)
				for _, p := range part.Platforms {
					res.Nodes = append(res.Nodes, NodeReport{Platform: p, Node: groups[j].node.Name, Duration: part.Duration})
				}
			}
			res.Duration = time.Since(start)
			results[i] = res
			return nil
		})
	}
	err = eg.Wait()
	fwd.Wait()
	close(display)
	<-displayDone
	if err != nil {
		return nil, err
	}
	report := &Report{Images: results, Steps: logs.steps()}
	if displayErr != nil && !errors.Is(displayErr, context.Canceled) {
		return report, fmt.Errorf("progress display: %w", displayErr)
	}
	return report, nil
}

// bootstrapBases bootstraps (or takes from the cache) every bootstrap base the targets use.
func bootstrapBases(ctx context.Context, r *recipes.Recipe, names []string, o buildOptions) (map[string]*BootstrapResult, error) {
	var srcs []recipes.Source
	for _, n := range names {
		if img := r.Image(n); img != nil {
			srcs = append(srcs, img.From)
		}
	}
	return bootstrapSources(ctx, r, srcs, o)
}

// bootstrapSources bootstraps the bootstrap bases that the sources are built from, directly or
// through images.
func bootstrapSources(ctx context.Context, r *recipes.Recipe, srcs []recipes.Source, o buildOptions) (map[string]*BootstrapResult, error) {
	out := map[string]*BootstrapResult{}
	seen := map[string]bool{}
	var visit func(src recipes.Source) error
	visit = func(src recipes.Source) error {
		ref := src.Ref
		switch {
		case ref == nil:
		case ref.Kind == recipes.KindImage:
			img := r.Image(ref.Name)
			if img == nil || seen[img.Name] {
				return nil
			}
			seen[img.Name] = true
			return visit(img.From)
		case ref.Kind == recipes.KindBase:
			b := r.Base(ref.Name)
			if b == nil || b.Bootstrap == nil || out[b.Name] != nil {
				return nil
			}
			bopts := []BootstrapOption{WithBootstrapLogWriter(o.bootLog)}
			if o.cacheDir != "" {
				bopts = append(bopts, WithBootstrapCacheDir(o.cacheDir))
			}
			res, err := Bootstrap(ctx, b.Bootstrap, bopts...)
			if err != nil {
				return fmt.Errorf("bootstrapping base %s: %w", b.Name, err)
			}
			out[b.Name] = res
		}
		return nil
	}
	for _, s := range srcs {
		if err := visit(s); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// gatewayResolver pins bases through the BuildKit gateway of a running build.
type gatewayResolver struct {
	gw    gwclient.Client
	r     *recipes.Recipe
	boots map[string]*BootstrapResult
}

var _ BaseResolver = (*gatewayResolver)(nil)

func (g *gatewayResolver) ResolveBase(ctx context.Context, src recipes.Source, p ocispecs.Platform) (*Base, error) {
	ref := src.Image
	if src.Ref != nil {
		switch src.Ref.Kind {
		case recipes.KindBase:
			b := g.r.Base(src.Ref.Name)
			if b == nil {
				return nil, fmt.Errorf("no base %q", src.Ref.Name)
			}
			if b.Bootstrap != nil {
				boot := g.boots[b.Name]
				if boot == nil {
					return nil, fmt.Errorf("base %s was not bootstrapped", b.Name)
				}
				cfg, err := boot.Config()
				if err != nil {
					return nil, err
				}
				if !platforms.Only(p).Match(boot.Platform) {
					return nil, fmt.Errorf("base %s is bootstrapped for %s, not %s: set bootstrap.architecture, or bootstrap one base per platform",
						b.Name, platforms.Format(boot.Platform), platforms.Format(p))
				}
				return &Base{State: boot.State(), Config: cfg, Ref: "bootstrap/" + b.Bootstrap.Suite, Digest: boot.Digest}, nil
			}
			ref = b.Image
		case recipes.KindFramework:
			f := g.r.Framework(src.Ref.Name)
			if f == nil {
				return nil, fmt.Errorf("no framework %q", src.Ref.Name)
			}
			ref = f.Image
		default:
			return nil, fmt.Errorf("%s is not a base", src.Ref.Addr())
		}
	}
	if ref == recipes.ScratchImage {
		// FROM scratch, as in a Dockerfile: an empty file system, for static binaries and data.
		return &Base{State: llb.Scratch().Platform(p), Config: ocispecs.Image{Platform: p}, Ref: recipes.ScratchImage}, nil
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	full := reference.TagNameOnly(named).String()
	if dg, ok := named.(reference.Digested); ok {
		full = named.Name() + "@" + dg.Digest().String()
	}
	_, dgst, cfgBytes, err := g.gw.ResolveImageConfig(ctx, full, sourceresolver.Opt{
		LogName:  "resolve " + full,
		ImageOpt: &sourceresolver.ResolveImageOpt{Platform: &p, ResolveMode: "default"},
	})
	if err != nil {
		return nil, err
	}
	var cfg ocispecs.Image
	if err := json.Unmarshal(cfgBytes, &cfg); err != nil {
		return nil, fmt.Errorf("image config of %s: %w", full, err)
	}
	pinned := named.Name() + "@" + dgst.String()
	return &Base{State: llb.Image(pinned, llb.Platform(p), llb.WithCustomName("base "+full)), Config: cfg, Ref: full, Digest: dgst}, nil
}

// buildOne builds one image target in one solve on c. only, when set, restricts it to those of
// its platforms (one node's share, see BuildOn), written to dir, untagged; otherwise it writes
// every platform to OUTDIR/NAME.
func buildOne(ctx context.Context, c *client.Client, r *recipes.Recipe, name string, boots map[string]*BootstrapResult, o buildOptions, ch chan *client.SolveStatus, only []ocispecs.Platform, dir string) (*ImageResult, error) {
	img := r.Image(name)
	if img == nil {
		close(ch)
		return nil, fmt.Errorf("no image %q in the recipe", name)
	}
	start := time.Now()
	if only == nil {
		dir = filepath.Join(o.outDir, name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		close(ch)
		return nil, err
	}
	attrs := map[string]string{
		string(exptypes.OptKeyOCITypes): "true",
		"tar":                           "false",
	}
	if len(img.Tags) > 0 && only == nil {
		attrs[string(exptypes.OptKeyName)] = strings.Join(img.Tags, ",")
	}
	frontendAttrs := map[string]string{}
	if o.epoch != nil {
		epoch := strconv.FormatInt(o.epoch.Unix(), 10)
		attrs[string(exptypes.OptKeyRewriteTimestamp)] = "true"
		attrs[string(exptypes.OptKeySourceDateEpoch)] = epoch
		frontendAttrs["build-arg:SOURCE_DATE_EPOCH"] = epoch
	}
	if o.provenance {
		frontendAttrs["attest:provenance"] = "mode=max"
	}

	imports, exports, err := cacheEntries(img, r.Dir)
	if err != nil {
		close(ch)
		return nil, err
	}
	var lowered *Lowered
	buildFunc := func(ctx context.Context, gw gwclient.Client) (*gwclient.Result, error) {
		l := NewLowerer(r, &gatewayResolver{gw: gw, r: r, boots: boots}, o.epoch, o.platform)
		l.only = only
		low, err := l.Lower(ctx, name)
		if err != nil {
			return nil, err
		}
		lowered = low
		res := gwclient.NewResult()
		expPlatforms := &exptypes.Platforms{}
		for i, p := range low.Platforms {
			def, err := low.States[i].Marshal(ctx, llb.Platform(p))
			if err != nil {
				return nil, err
			}
			var gwImports []gwclient.CacheOptionsEntry
			for _, im := range imports {
				gwImports = append(gwImports, gwclient.CacheOptionsEntry{Type: im.Type, Attrs: im.Attrs})
			}
			sres, err := gw.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB(), Evaluate: true, CacheImports: gwImports})
			if err != nil {
				return nil, err
			}
			ref, err := sres.SingleRef()
			if err != nil {
				return nil, err
			}
			cfg, err := low.ConfigJSON(i)
			if err != nil {
				return nil, err
			}
			key := platforms.FormatAll(p)
			// The base's config tells the exporter which layers are the base's, so that
			// rewrite-timestamp (SOURCE_DATE_EPOCH) leaves them as they are, as the Dockerfile
			// frontend does; without it every build recompresses the whole base.
			var baseCfg []byte
			if b := low.Bases[i]; b != nil && len(b.Config.RootFS.DiffIDs) > 0 {
				if baseCfg, err = json.Marshal(b.Config); err != nil {
					return nil, err
				}
			}
			if len(low.Platforms) == 1 {
				res.SetRef(ref)
				res.AddMeta(exptypes.ExporterImageConfigKey, cfg)
				if baseCfg != nil {
					res.AddMeta(exptypes.ExporterImageBaseConfigKey, baseCfg)
				}
			} else {
				res.AddRef(key, ref)
				res.AddMeta(exptypes.ExporterImageConfigKey+"/"+key, cfg)
				if baseCfg != nil {
					res.AddMeta(exptypes.ExporterImageBaseConfigKey+"/"+key, baseCfg)
				}
			}
			expPlatforms.Platforms = append(expPlatforms.Platforms, exptypes.Platform{ID: key, Platform: p})
		}
		if len(low.Platforms) > 1 {
			dt, err := json.Marshal(expPlatforms)
			if err != nil {
				return nil, err
			}
			res.AddMeta(exptypes.ExporterPlatformsKey, dt)
		}
		if o.epoch != nil {
			res.AddMeta(commonexptypes.ExporterEpochKey, []byte(strconv.FormatInt(o.epoch.Unix(), 10)))
		}
		return res, nil
	}

	// The manifest annotations are known only once the image is lowered, which needs the
	// gateway; lower once beforehand with the same resolver semantics is not possible, so
	// annotations come from the recipe alone here and the bases from the lowering below.
	for k, v := range staticAnnotations(r, img, o.epoch) {
		attrs["annotation."+k] = v
		if len(img.Platforms) > 1 && (only == nil || len(only) > 1) {
			attrs["annotation-index."+k] = v
		}
	}

	secrets, stores, fs, err := solveInputs(r, img, boots, o.env)
	if err != nil {
		close(ch)
		return nil, err
	}
	solveOpt := client.SolveOpt{
		CacheImports:  imports,
		CacheExports:  exports,
		Exports:       []client.ExportEntry{{Type: client.ExporterOCI, Attrs: attrs, OutputDir: dir}},
		LocalMounts:   map[string]fsutil.FS{RecipeContext: fs},
		OCIStores:     stores,
		FrontendAttrs: frontendAttrs,
		Session: []session.Attachable{
			secrets,
			authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{AuthConfigProvider: authFromKeychain(o.keychain)}),
		},
	}
	resp, err := c.Build(ctx, solveOpt, "gpuforge", buildFunc, ch)
	if err != nil {
		return nil, err
	}
	res := &ImageResult{
		Address: recipes.KindImage + "." + name, LayoutDir: dir, Tags: img.Tags,
		Digest: digest.Digest(resp.ExporterResponse[exptypes.ExporterImageDigestKey]), Duration: time.Since(start),
	}
	if lowered != nil {
		for _, p := range lowered.Platforms {
			res.Platforms = append(res.Platforms, platforms.Format(p))
		}
	}
	return res, nil
}

// solveInputs are what a solve of a recipe target reads from this machine: the target's secrets,
// the content stores of the bootstrapped bases, and the recipe directory (the copy sources).
func solveInputs(r *recipes.Recipe, img *recipes.Image, boots map[string]*BootstrapResult, env func(string) (string, bool)) (session.Attachable, map[string]content.Store, fsutil.FS, error) {
	secrets, err := secretSources(img, r.Dir, env)
	if err != nil {
		return nil, nil, nil, err
	}
	stores := map[string]content.Store{}
	for _, b := range boots {
		st, err := b.ContentStore()
		if err != nil {
			return nil, nil, nil, err
		}
		stores[b.StoreName()] = st
	}
	fs, err := fsutil.NewFS(r.Dir)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("recipe directory %s: %w", r.Dir, err)
	}
	return secrets, stores, fs, nil
}

// cacheEntries are an image's cache_from and cache_to as BuildKit's cache importers and
// exporters take them; local directories are relative to the recipe, like copy sources. A
// registry cache is written as an OCI image manifest (image-manifest=true), which every OCI
// registry stores, with OCI media types.
func cacheEntries(img *recipes.Image, recipeDir string) (imports, exports []client.CacheOptionsEntry, err error) {
	dir := func(d string) string {
		if filepath.IsAbs(d) {
			return d
		}
		return filepath.Join(recipeDir, d)
	}
	for _, spec := range img.CacheFrom {
		c, err := recipes.ParseCache(spec, false)
		if err != nil {
			return nil, nil, err
		}
		e := client.CacheOptionsEntry{Type: c.Type, Attrs: map[string]string{}}
		if c.Type == "registry" {
			e.Attrs["ref"] = c.Ref
		} else {
			e.Attrs["src"] = dir(c.Dir)
		}
		imports = append(imports, e)
	}
	for _, spec := range img.CacheTo {
		c, err := recipes.ParseCache(spec, true)
		if err != nil {
			return nil, nil, err
		}
		e := client.CacheOptionsEntry{Type: c.Type, Attrs: map[string]string{"mode": c.Mode}}
		if c.Type == "registry" {
			e.Attrs["ref"] = c.Ref
			e.Attrs["image-manifest"] = "true"
			e.Attrs["oci-mediatypes"] = "true"
		} else {
			e.Attrs["dest"] = dir(c.Dir)
		}
		exports = append(exports, e)
	}
	return imports, exports, nil
}

// staticAnnotations are the manifest annotations known from the recipe alone.
func staticAnnotations(r *recipes.Recipe, img *recipes.Image, epoch *time.Time) map[string]string {
	l := &Lowerer{recipe: r, epoch: epoch}
	low := &Lowered{Address: recipes.KindImage + "." + img.Name, Image: img, Annotations: map[string]string{}, Bases: []*Base{nil}}
	l.annotate(low)
	return low.Annotations
}

// secretSources gives the build its secrets from the recipe's secret blocks, read from the
// environment or files of the machine running gpuforge, and only through the session.
func secretSources(img *recipes.Image, dir string, lookup func(string) (string, bool)) (session.Attachable, error) {
	values := map[string][]byte{}
	for _, s := range img.Secrets {
		switch {
		case s.Env != "":
			v, ok := lookup(s.Env)
			if !ok {
				if s.Required != nil && !*s.Required {
					continue
				}
				return nil, fmt.Errorf("image %s: secret %q reads the environment variable %s, which is not set", img.Name, s.ID, s.Env)
			}
			values[s.ID] = []byte(v)
		case s.File != "":
			path := s.File
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, path) // relative to the recipe, like copy sources
			}
			data, err := os.ReadFile(path)
			if err != nil {
				if s.Required != nil && !*s.Required {
					continue
				}
				return nil, fmt.Errorf("image %s: secret %q: %w", img.Name, s.ID, err)
			}
			values[s.ID] = data
		}
	}
	return secretsprovider.FromMap(values), nil
}

// vertexLogs keeps, per vertex, its name, whether it came from cache, whether it failed, and
// the last lines it printed, so a failure can be explained and cache hits counted.
type vertexLogs struct {
	mu      sync.Mutex
	names   map[digest.Digest]string
	cached  map[digest.Digest]bool
	done    map[digest.Digest]bool
	errs    map[digest.Digest]string
	lines   map[digest.Digest][]string
	partial map[digest.Digest]string
}

func newVertexLogs() *vertexLogs {
	return &vertexLogs{
		names: map[digest.Digest]string{}, cached: map[digest.Digest]bool{}, done: map[digest.Digest]bool{},
		errs: map[digest.Digest]string{}, lines: map[digest.Digest][]string{}, partial: map[digest.Digest]string{},
	}
}

const tailLines = 20

func (v *vertexLogs) record(s *client.SolveStatus) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, vx := range s.Vertexes {
		v.names[vx.Digest] = vx.Name
		if vx.Completed != nil {
			v.done[vx.Digest] = true
			v.cached[vx.Digest] = vx.Cached
		}
		if vx.Error != "" {
			v.errs[vx.Digest] = vx.Error
		}
	}
	for _, l := range s.Logs {
		text := v.partial[l.Vertex] + string(l.Data)
		parts := strings.Split(text, "\n")
		v.partial[l.Vertex] = parts[len(parts)-1]
		lines := append(v.lines[l.Vertex], parts[:len(parts)-1]...)
		if len(lines) > tailLines {
			lines = lines[len(lines)-tailLines:]
		}
		v.lines[l.Vertex] = lines
	}
}

// steps lists gpuforge's own completed steps (named "[platform] …"), sorted by name.
func (v *vertexLogs) steps() []Step {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []Step
	for d := range v.done {
		if strings.HasPrefix(v.names[d], "[") {
			out = append(out, Step{Name: v.names[d], Cached: v.cached[d]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// explain turns a solve error into a BuildError naming the recipe location and the failing
// step with the last lines it printed.
func (v *vertexLogs) explain(target string, err error) error {
	be := &BuildError{Target: target, Err: err}
	for _, src := range errdefs.Sources(err) {
		if src.Info == nil || len(src.Ranges) == 0 {
			continue
		}
		rg := src.Ranges[0]
		be.Location = fmt.Sprintf("%s:%d:%d", src.Info.Filename, rg.Start.Line, rg.Start.Character)
		break
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var failed []digest.Digest
	for d := range v.errs {
		if !strings.Contains(v.errs[d], "context canceled") {
			failed = append(failed, d)
		}
	}
	sort.Slice(failed, func(i, j int) bool { return v.names[failed[i]] < v.names[failed[j]] })
	if len(failed) > 0 {
		d := failed[0]
		be.Step = v.names[d]
		be.Output = append([]string{}, v.lines[d]...)
		if p := v.partial[d]; p != "" {
			be.Output = append(be.Output, p)
		}
	}
	return be
}
