package buildkit

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/hashicorp/hcl/v2"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/gpuforge/gpuforge/recipes"
	"github.com/gpuforge/gpuforge/recipes/compat"
)

// RecipeContext is the name of the local context holding the recipe's directory; copy sources
// are read from it.
const RecipeContext = "recipe"

// Base is a pinned filesystem an image starts from: the state that produces it and the image
// config it carries (environment, working directory, entrypoint…).
type Base struct {
	State  llb.State
	Config ocispecs.Image
	// Ref and Digest name the base as pinned: "docker.io/library/debian:bookworm" and its
	// manifest digest. They are recorded in the image's annotations.
	Ref    string
	Digest digest.Digest
}

// BaseResolver pins the bases of a recipe: a base or framework block, or an image reference
// written as a string, for one platform. The BuildKit gateway implements it when building; tests
// use fixed digests.
type BaseResolver interface {
	ResolveBase(ctx context.Context, src recipes.Source, platform ocispecs.Platform) (*Base, error)
}

// Lowered is a recipe image lowered to LLB: one state and one image config per platform.
type Lowered struct {
	Address   string // image.NAME
	Image     *recipes.Image
	Platforms []ocispecs.Platform
	States    []llb.State
	Configs   []ocispecs.Image
	// Annotations go on the image manifest (and index): OCI's and gpuforge's own.
	Annotations map[string]string
	// Bases are the pinned bases per platform (for the manifest and annotations).
	Bases []*Base
}

// Lowerer lowers a recipe's images to LLB. It is not safe for concurrent use; one build uses
// one Lowerer, and images shared between targets are lowered once.
type Lowerer struct {
	recipe   *recipes.Recipe
	resolver BaseResolver
	epoch    *time.Time
	defaults []ocispecs.Platform
	// only, when set, restricts every image to those of its platforms (one node's share of a
	// build on several nodes).
	only []ocispecs.Platform
	maps map[string]*llb.SourceMap
	done map[string]*Lowered
}

// NewLowerer returns a Lowerer for a loaded, checked recipe. epoch is SOURCE_DATE_EPOCH (nil when
// unset); defaultPlatform is used for images that name no platforms (the builder's).
func NewLowerer(r *recipes.Recipe, resolver BaseResolver, epoch *time.Time, defaultPlatform ocispecs.Platform) *Lowerer {
	return &Lowerer{
		recipe: r, resolver: resolver, epoch: epoch,
		defaults: []ocispecs.Platform{platforms.Normalize(defaultPlatform)},
		maps:     map[string]*llb.SourceMap{}, done: map[string]*Lowered{},
	}
}

// Lower lowers the image with the given name (and, first, the images it is built from).
func (l *Lowerer) Lower(ctx context.Context, name string) (*Lowered, error) {
	return l.lower(ctx, name, 0)
}

func (l *Lowerer) lower(ctx context.Context, name string, depth int) (*Lowered, error) {
	if out, ok := l.done[name]; ok {
		return out, nil
	}
	if depth > 64 {
		return nil, fmt.Errorf("image %s: images built from each other nest too deep", name)
	}
	img := l.recipe.Image(name)
	if img == nil {
		return nil, fmt.Errorf("no image %q in the recipe", name)
	}
	plats, err := l.platformsOf(img)
	if err != nil {
		return nil, err
	}
	var parent *Lowered
	if ref := img.From.Ref; ref != nil && ref.Kind == recipes.KindImage {
		if parent, err = l.lower(ctx, ref.Name, depth+1); err != nil {
			return nil, err
		}
	}
	out := &Lowered{Address: recipes.KindImage + "." + name, Image: img, Platforms: plats, Annotations: map[string]string{}}
	for _, p := range plats {
		var base *Base
		if parent != nil {
			i := indexPlatform(parent.Platforms, p)
			if i < 0 {
				return nil, fmt.Errorf("image %s is built for %s, but image %s, which it is built from, is not", name, platforms.Format(p), parent.Image.Name)
			}
			base = &Base{State: parent.States[i], Config: parent.Configs[i], Ref: parent.Address}
			if pb := parent.Bases[i]; pb != nil {
				base.Digest = pb.Digest
				base.Ref = pb.Ref
			}
		} else {
			if base, err = l.resolver.ResolveBase(ctx, img.From, p); err != nil {
				return nil, fmt.Errorf("image %s: resolving %s: %w", name, img.From, err)
			}
		}
		st, cfg, err := l.steps(img, base, p)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		out.States = append(out.States, st)
		out.Configs = append(out.Configs, cfg)
		out.Bases = append(out.Bases, base)
	}
	l.annotate(out)
	l.done[name] = out
	return out, nil
}

func indexPlatform(ps []ocispecs.Platform, p ocispecs.Platform) int {
	m := platforms.Only(p)
	for i, q := range ps {
		if m.Match(q) {
			return i
		}
	}
	return -1
}

func (l *Lowerer) platformsOf(img *recipes.Image) ([]ocispecs.Platform, error) {
	all, err := l.allPlatformsOf(img)
	if err != nil || l.only == nil {
		return all, err
	}
	var out []ocispecs.Platform
	for _, p := range all {
		if indexPlatform(l.only, p) >= 0 {
			out = append(out, p)
		}
	}
	return out, nil
}

func (l *Lowerer) allPlatformsOf(img *recipes.Image) ([]ocispecs.Platform, error) {
	if len(img.Platforms) == 0 {
		return l.defaults, nil
	}
	var out []ocispecs.Platform
	for _, s := range img.Platforms {
		p, err := platforms.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("image %s: platform %q: %w", img.Name, s, err)
		}
		out = append(out, platforms.Normalize(p))
	}
	return out, nil
}

// sourceMap returns the LLB source map of a recipe file, so each op can point at its line.
func (l *Lowerer) sourceMap(filename string) *llb.SourceMap {
	if sm, ok := l.maps[filename]; ok {
		return sm
	}
	var data []byte
	if f := l.recipe.Files[filename]; f != nil {
		data = f.Bytes
	}
	sm := llb.NewSourceMap(nil, filename, "HCL", data)
	l.maps[filename] = sm
	return sm
}

// location attaches a recipe range to an op.
func (l *Lowerer) location(rng hcl.Range) llb.ConstraintsOpt {
	if rng.Filename == "" {
		return llb.WithCustomName("")
	}
	return l.sourceMap(rng.Filename).Location([]*pb.Range{{
		Start: &pb.Position{Line: int32(rng.Start.Line), Character: int32(rng.Start.Column)},
		End:   &pb.Position{Line: int32(rng.End.Line), Character: int32(rng.End.Column)},
	}})
}

// Cache mount IDs are per platform: packages of two architectures never share a cache.
func cacheID(kind string, p ocispecs.Platform) string {
	return "gpuforge-" + kind + "-" + strings.ReplaceAll(platforms.Format(p), "/", "-")
}

// steps applies an image's recipe to its base, in a fixed order: apt repositories, packages,
// environment and working directory, copies, run commands; then the image config (user,
// entrypoint, cmd, labels).
func (l *Lowerer) steps(img *recipes.Image, base *Base, p ocispecs.Platform) (llb.State, ocispecs.Image, error) {
	st := base.State.Platform(p)
	// The base's environment and working directory apply to every command run on it.
	if data, err := json.Marshal(base.Config); err == nil {
		if withCfg, err := st.WithImageConfig(data); err == nil {
			st = withCfg.Platform(p)
		}
	}
	cfg := cloneConfig(base.Config)
	cfg.Platform = ocispecs.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
	history := func(createdBy string, empty bool) {
		h := ocispecs.History{CreatedBy: createdBy, Comment: "gpuforge", EmptyLayer: empty}
		if l.epoch != nil {
			t := l.epoch.UTC()
			h.Created = &t
		}
		cfg.History = append(cfg.History, h)
	}
	plat := platforms.Format(p)

	if len(img.Repositories) > 0 {
		fa, err := l.aptSources(img.Repositories)
		if err != nil {
			return st, cfg, err
		}
		st = st.File(fa, llb.WithCustomName("apt sources: "+repoNames(img.Repositories)), l.location(img.DeclRange))
		history("apt sources "+repoNames(img.Repositories), false)
	}

	if len(img.Packages) > 0 {
		script := "set -eu; rm -f /etc/apt/apt.conf.d/docker-clean; " +
			"apt-get update -qq && apt-get install -y -qq --no-install-recommends -o APT::Keep-Downloaded-Packages=true " +
			shellQuoteAll(img.Packages)
		st = st.Run(
			llb.Args([]string{"/bin/sh", "-c", script}),
			llb.AddEnv("DEBIAN_FRONTEND", "noninteractive"),
			// The package lists and archives live in cache mounts, so warm rebuilds skip
			// downloads and no apt lists end up in the layer.
			llb.AddMount("/var/cache/apt", llb.Scratch(), llb.AsPersistentCacheDir(cacheID("apt-archives", p), llb.CacheMountLocked)),
			llb.AddMount("/var/lib/apt/lists", llb.Scratch(), llb.AsPersistentCacheDir(cacheID("apt-lists", p), llb.CacheMountLocked)),
			llb.WithCustomName(fmt.Sprintf("[%s] apt-get install %s", plat, strings.Join(img.Packages, " "))),
			l.location(img.PackagesRange),
		).Root()
		history("apt-get install "+strings.Join(img.Packages, " "), false)
	}

	for _, k := range sortedKeys(img.Env) {
		st = st.AddEnv(k, img.Env[k])
		cfg.Config.Env = setEnv(cfg.Config.Env, k, img.Env[k])
	}
	if img.Workdir != "" {
		st = st.Dir(img.Workdir)
		cfg.Config.WorkingDir = img.Workdir
	}

	if len(img.Copies) > 0 {
		var includes []string
		for _, c := range img.Copies {
			includes = append(includes, path.Clean(filepath.ToSlash(c.Src)))
		}
		ctxState := llb.Local(RecipeContext, llb.IncludePatterns(includes), llb.SharedKeyHint(RecipeContext),
			llb.LocalUniqueID(l.uniqueID()), llb.WithCustomName("recipe directory"))
		for _, c := range img.Copies {
			info := &llb.CopyInfo{CreateDestPath: true, AllowWildcard: true, CopyDirContentsOnly: true, FollowSymlinks: true}
			if c.Chown != "" {
				info.ChownOpt = parseChown(c.Chown)
			}
			if c.Chmod != "" {
				var mode uint32
				if _, err := fmt.Sscanf(c.Chmod, "%o", &mode); err != nil {
					return st, cfg, fmt.Errorf("copy %s: chmod %q is not an octal mode", c.Src, c.Chmod)
				}
				info.Mode = &llb.ChmodOpt{Mode: os.FileMode(mode)}
			}
			dst := c.Dst
			if strings.HasSuffix(c.Src, "/") || !strings.Contains(path.Base(c.Src), ".") {
				dst = strings.TrimSuffix(dst, "/") + "/"
			}
			st = st.File(llb.Copy(ctxState, "/"+path.Clean(filepath.ToSlash(c.Src)), dst, info),
				llb.WithCustomName(fmt.Sprintf("[%s] copy %s %s", plat, c.Src, c.Dst)), l.location(c.DeclRange))
			history(fmt.Sprintf("copy %s %s", c.Src, c.Dst), false)
		}
	}

	for i, cmd := range img.Run {
		opts := []llb.RunOption{
			llb.Args([]string{"/bin/sh", "-c", cmd}),
			llb.AddMount("/root/.cache/pip", llb.Scratch(), llb.AsPersistentCacheDir(cacheID("pip", p), llb.CacheMountShared)),
			llb.WithCustomName(fmt.Sprintf("[%s] run %s", plat, cmd)),
			l.location(l.recipe.ElementRange(img.RunRange, i)),
		}
		for _, s := range img.Secrets {
			// Secrets are mounted for the command only (a tmpfs file), and, when read from an
			// environment variable, exposed under the same name: never an argument, never a layer.
			opts = append(opts, llb.AddSecret("/run/secrets/"+s.ID, llb.SecretID(s.ID), llb.SecretFileOpt(0, 0, 0o400), secretOptional(s)))
			if s.Env != "" {
				opts = append(opts, llb.AddSecret(s.Env, llb.SecretID(s.ID), llb.SecretAsEnv(true), secretOptional(s)))
			}
		}
		st = st.Run(opts...).Root()
		history("run "+cmd, false)
	}

	if img.User != "" {
		st = st.User(img.User)
		cfg.Config.User = img.User
	}
	if len(img.Entrypoint) > 0 {
		cfg.Config.Entrypoint = append([]string{}, img.Entrypoint...)
		if len(img.Cmd) == 0 {
			cfg.Config.Cmd = nil // a new entrypoint resets the inherited cmd, as in a Dockerfile
		}
	}
	if len(img.Cmd) > 0 {
		cfg.Config.Cmd = append([]string{}, img.Cmd...)
	}
	if len(img.Labels) > 0 {
		if cfg.Config.Labels == nil {
			cfg.Config.Labels = map[string]string{}
		}
		for k, v := range img.Labels {
			cfg.Config.Labels[k] = v
		}
	}
	if l.epoch != nil {
		t := l.epoch.UTC()
		cfg.Created = &t
	}
	return st, cfg, nil
}

// aptSources writes each repository's signing key to /etc/apt/keyrings and its source line to
// /etc/apt/sources.list.d.
func (l *Lowerer) aptSources(repos []*recipes.Repository) (*llb.FileAction, error) {
	fa := llb.Mkdir("/etc/apt/keyrings", 0o755, llb.WithParents(true))
	for _, r := range repos {
		key, ext, err := l.repoKey(r)
		if err != nil {
			return nil, err
		}
		keyPath := "/etc/apt/keyrings/gpuforge-" + r.Name + ext
		fa = fa.Mkfile(keyPath, 0o644, key).
			Mkfile("/etc/apt/sources.list.d/gpuforge-"+r.Name+".list", 0o644, []byte(aptSourceLine(r, keyPath)))
	}
	return fa, nil
}

// uniqueID names the recipe directory for BuildKit's local source, stable across runs so the
// daemon can reuse what it already received from this directory.
func (l *Lowerer) uniqueID() string {
	dir, err := filepath.Abs(l.recipe.Dir)
	if err != nil {
		dir = l.recipe.Dir
	}
	return digest.FromString("gpuforge:" + dir).Encoded()[:25]
}

func secretOptional(s *recipes.Secret) llb.SecretOption {
	if s.Required != nil && !*s.Required {
		return llb.SecretOptional
	}
	return llb.SecretID(s.ID)
}

// repoKey returns a repository's signing key and the keyring file extension apt expects:
// .asc for an armored key, .gpg for a binary keyring.
func (l *Lowerer) repoKey(r *recipes.Repository) ([]byte, string, error) {
	if r.Key != "" {
		return []byte(r.Key), ".asc", nil
	}
	p := r.KeyFile
	if !filepath.IsAbs(p) {
		p = filepath.Join(l.recipe.Dir, p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, "", fmt.Errorf("repository %s: reading key_file: %w", r.Name, err)
	}
	if strings.Contains(string(data), "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
		return data, ".asc", nil
	}
	return data, ".gpg", nil
}

// aptSourceLine is the one-line apt source of a repository, signed-by its own keyring. A suite
// ending in "/" (or none) is a flat repository.
func aptSourceLine(r *recipes.Repository, keyPath string) string {
	opts := "signed-by=" + keyPath
	if len(r.Architectures) > 0 {
		opts += " arch=" + strings.Join(r.Architectures, ",")
	}
	suite := r.Suite
	if suite == "" {
		suite = "/"
	}
	line := fmt.Sprintf("deb [%s] %s %s", opts, r.URL, suite)
	if !strings.HasSuffix(suite, "/") {
		comps := r.Components
		if len(comps) == 0 {
			comps = []string{"main"}
		}
		line += " " + strings.Join(comps, " ")
	}
	return line + "\n"
}

func repoNames(rs []*recipes.Repository) string {
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	return strings.Join(names, ", ")
}

func parseChown(s string) *llb.ChownOpt {
	user, group, _ := strings.Cut(s, ":")
	opt := &llb.ChownOpt{User: &llb.UserOpt{Name: user}}
	if group != "" {
		opt.Group = &llb.UserOpt{Name: group}
	}
	return opt
}

// annotate sets the manifest annotations: OCI's image annotations and gpuforge's own.
func (l *Lowerer) annotate(out *Lowered) {
	img := out.Image
	a := out.Annotations
	for k, v := range img.Annotations {
		a[k] = v
	}
	if l.epoch != nil {
		a["org.opencontainers.image.created"] = l.epoch.UTC().Format(time.RFC3339)
	}
	if b := out.Bases[0]; b != nil && b.Ref != "" {
		a["org.opencontainers.image.base.name"] = b.Ref
		if b.Digest != "" {
			a["org.opencontainers.image.base.digest"] = b.Digest.String()
		}
	}
	if len(img.Tags) > 0 {
		a["org.opencontainers.image.ref.name"] = img.Tags[0]
	}
	for _, k := range []string{"org.opencontainers.image.title", "org.opencontainers.image.version", "org.opencontainers.image.source",
		"org.opencontainers.image.revision", "org.opencontainers.image.description"} {
		if v, ok := img.Labels[k]; ok {
			if _, set := a[k]; !set {
				a[k] = v
			}
		}
	}
	a["dev.gpuforge.target"] = out.Address
	if f := l.frameworkOf(img, 0); f != nil {
		a["dev.gpuforge.framework"] = f.Image
		if f.Release != "" {
			a["dev.gpuforge.framework.release"] = f.Release
		}
		if b := out.Bases[0]; b != nil && b.Digest != "" {
			a["dev.gpuforge.framework.digest"] = b.Digest.String()
		}
		if cuda := frameworkCUDA(f); cuda != "" {
			a["dev.gpuforge.cuda"] = cuda
		}
	}
}

func (l *Lowerer) frameworkOf(img *recipes.Image, depth int) *recipes.Framework {
	ref := img.From.Ref
	if ref == nil || depth > 64 {
		return nil
	}
	switch ref.Kind {
	case recipes.KindFramework:
		return l.recipe.Framework(ref.Name)
	case recipes.KindImage:
		if parent := l.recipe.Image(ref.Name); parent != nil {
			return l.frameworkOf(parent, depth+1)
		}
	}
	return nil
}

// ConfigJSON is the image config as the exporter expects it.
func (lw *Lowered) ConfigJSON(i int) ([]byte, error) { return json.Marshal(lw.Configs[i]) }

func cloneConfig(c ocispecs.Image) ocispecs.Image {
	data, _ := json.Marshal(c)
	var out ocispecs.Image
	_ = json.Unmarshal(data, &out)
	return out
}

func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); name == k {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// shellQuoteAll quotes package names (with version pins such as "vim=2:9.0*") for /bin/sh.
func shellQuoteAll(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

// frameworkCUDA is the CUDA version of an NGC framework release, from gpuforge's table.
func frameworkCUDA(f *recipes.Framework) string {
	if rel, ok := compat.LookupFramework(f.Framework, f.Release); ok {
		return rel.CUDA
	}
	return ""
}
