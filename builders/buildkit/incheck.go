package buildkit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	contentlocal "github.com/containerd/containerd/v2/plugins/content/local"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/util/entitlements"
	"github.com/moby/buildkit/util/progress/progressui"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// InImageRun is a script run inside a built image on a GPU host, through BuildKit, with CDI
// devices attached. Its files under /gpuforge/out come back; nothing of it is cached.
type InImageRun struct {
	// LayoutDir and Digest name the image: an OCI layout (as gpuforge build writes) and the
	// manifest or index digest in it.
	LayoutDir string
	Digest    digest.Digest
	Platform  ocispecs.Platform
	// Devices are CDI device names ("nvidia.com/gpu=all", "nvidia.com/gpu=0").
	Devices []string
	// Files are written read-only under /gpuforge/in (e.g. the ResNet-50 script).
	Files map[string][]byte
	// Script is run with /bin/sh -c; it writes its results under /gpuforge/out.
	Script string
	// Env is added to the run (e.g. NCCL_* settings of the GPU host).
	Env map[string]string
	// Name is shown in progress output.
	Name string
}

// RunInImage runs the script in the image with the GPUs attached and returns the files it
// wrote under /gpuforge/out, by name. The step asks for BuildKit's device entitlement and is
// never taken from the cache: a check that passed yesterday says nothing about today's GPU.
func RunInImage(ctx context.Context, c *client.Client, run InImageRun, progress io.Writer, mode string) (map[string][]byte, error) {
	store, err := contentlocal.NewStore(run.LayoutDir)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", run.LayoutDir, err)
	}
	cfg, err := imageConfig(run.LayoutDir, run.Digest, run.Platform)
	if err != nil {
		return nil, err
	}
	storeName := "gpuforge-check-" + run.Digest.Encoded()[:16]
	base := llb.OCILayout("gpuforge/check@"+run.Digest.String(), llb.OCIStore("", storeName), llb.Platform(run.Platform))
	if data, err := json.Marshal(cfg); err == nil {
		if withCfg, err := base.WithImageConfig(data); err == nil {
			base = withCfg
		}
	}
	in := llb.Scratch()
	names := make([]string, 0, len(run.Files))
	for n := range run.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		in = in.File(llb.Mkfile("/"+n, 0o644, run.Files[n]))
	}
	opts := []llb.RunOption{
		llb.Args([]string{"/bin/sh", "-c", "mkdir -p /gpuforge/out && " + run.Script}),
		llb.AddMount("/gpuforge/in", in, llb.Readonly),
		llb.IgnoreCache,
		llb.WithCustomName(or(run.Name, "gpu checks")),
	}
	for _, d := range run.Devices {
		opts = append(opts, llb.AddCDIDevice(llb.CDIDeviceName(d)))
	}
	for _, k := range sortedKeys(run.Env) {
		opts = append(opts, llb.AddEnv(k, run.Env[k]))
	}
	exec := base.Run(opts...)
	out := exec.AddMount("/gpuforge/out", llb.Scratch())
	def, err := out.Marshal(ctx, llb.Platform(run.Platform))
	if err != nil {
		return nil, err
	}

	dest, err := os.MkdirTemp("", "gpuforge-check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dest)
	ch := make(chan *client.SolveStatus)
	done := make(chan error, 1)
	go func() {
		if progress == nil {
			for range ch {
			}
			done <- nil
			return
		}
		d, err := progressui.NewDisplay(progress, progressui.DisplayMode(mode))
		if err != nil {
			for range ch {
			}
			done <- err
			return
		}
		_, err = d.UpdateFrom(context.WithoutCancel(ctx), ch)
		done <- err
	}()
	_, err = c.Solve(ctx, def, client.SolveOpt{
		Exports:             []client.ExportEntry{{Type: client.ExporterLocal, OutputDir: dest}},
		OCIStores:           map[string]content.Store{storeName: store},
		AllowedEntitlements: []string{string(entitlements.EntitlementDevice)},
	}, ch)
	<-done
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	err = filepath.Walk(dest, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	return files, err
}

// imageConfig reads the config of the image with the given digest (or, for an index, of its
// manifest for the platform) from an OCI layout.
func imageConfig(dir string, d digest.Digest, p ocispecs.Platform) (ocispecs.Image, error) {
	var cfg ocispecs.Image
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return cfg, err
	}
	var raw []byte
	if img, err := idx.Image(toHash(d)); err == nil {
		if m, err := img.MediaType(); err == nil && m.IsImage() {
			raw, err = img.RawConfigFile()
			if err != nil {
				return cfg, err
			}
		}
	}
	if raw == nil {
		inner, err := idx.ImageIndex(toHash(d))
		if err != nil {
			return cfg, fmt.Errorf("image %s is not in %s: %w", d, dir, err)
		}
		img, err := firstImage(inner)
		if err != nil {
			return cfg, err
		}
		if raw, err = img.RawConfigFile(); err != nil {
			return cfg, err
		}
	}
	err = json.Unmarshal(raw, &cfg)
	return cfg, err
}

func or(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}

func toHash(d digest.Digest) v1.Hash {
	h, _ := v1.NewHash(d.String())
	return h
}
