package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/recipes"
)

// preloadUnit loads the archives the build put into the disk into docker's store, on the first
// boot, before anything else can ask docker for them; each archive is deleted once loaded.
const preloadUnit = `[Unit]
Description=Load the container images preloaded into this machine image (gpuforge)
After=docker.service
Requires=docker.service
ConditionDirectoryNotEmpty=/var/lib/gpuforge/preload

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for f in /var/lib/gpuforge/preload/*.tar; do docker load --quiet --input "$f" && rm -f "$f" || exit 1; done'
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
`

// writePreloads puts the machine image's preload images into its root filesystem tree as docker
// archives (/var/lib/gpuforge/preload/NN-NAME.tar), lists their references in
// /etc/gpuforge/preload.list for the boot check, and installs and enables the unit that loads
// them. Images of this recipe come from their OCI layouts; others are pulled from their
// registries with the recipe's credentials.
//
// docker keeps its store in a format of its own that only a running dockerd writes, and running
// one during the build would need a privileged build step; so the images travel in the disk
// and reach the store on the first boot, with no download.
func (b *buildRun) writePreloads(ctx context.Context, m *recipes.MachineImage, rootDir string, built map[string]*buildkit.ImageResult) error {
	if len(m.Preload) == 0 {
		return nil
	}
	dir := filepath.Join(rootDir, "var/lib/gpuforge/preload")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var refs []string
	for i, p := range m.Preload {
		var ref, file string
		switch {
		case p.Ref != nil && p.Ref.Kind == recipes.KindImage:
			img := built[p.Ref.Addr()]
			if img == nil {
				return fmt.Errorf("preload %s: the image was not built in this run", p.Ref.Addr())
			}
			tags := img.Tags
			if len(tags) == 0 {
				tags = []string{"gpuforge/" + p.Ref.Name + ":latest"}
			}
			ref = tags[0]
			file = filepath.Join(dir, fmt.Sprintf("%02d-%s.tar", i, p.Ref.Name))
			if err := buildkit.WriteOutput(img.LayoutDir, tags, recipes.Output{Type: "docker", Dest: file}); err != nil {
				return fmt.Errorf("preload %s: %w", p.Ref.Addr(), err)
			}
		default:
			ref = p.Image
			if p.Ref != nil && p.Ref.Kind == recipes.KindFramework {
				ref = b.r.Framework(p.Ref.Name).Image
			}
			file = filepath.Join(dir, fmt.Sprintf("%02d-%s.tar", i, sanitize(ref)))
			if err := pullArchive(ctx, ref, file, recipeKeychain(b.r)); err != nil {
				return fmt.Errorf("preload %s: %w", ref, err)
			}
		}
		refs = append(refs, ref)
	}
	files := map[string]string{
		"etc/gpuforge/preload.list":                   strings.Join(refs, "\n") + "\n",
		"etc/systemd/system/gpuforge-preload.service": preloadUnit,
	}
	for p, content := range files {
		if err := os.WriteFile(filepath.Join(rootDir, p), []byte(content), 0o644); err != nil {
			return err
		}
	}
	wants := filepath.Join(rootDir, "etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return err
	}
	link := filepath.Join(wants, "gpuforge-preload.service")
	os.Remove(link)
	return os.Symlink("/etc/systemd/system/gpuforge-preload.service", link)
}

// pullArchive pulls ref for linux/amd64 and writes it as a docker archive tagged ref.
func pullArchive(ctx context.Context, ref, file string, kc authn.Keychain) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		return err
	}
	tag, err := name.NewTag(r.Context().String() + ":" + tagOf(r))
	if err != nil {
		return err
	}
	return tarball.WriteToFile(file, tag, img)
}

// tagOf is the tag of a reference, or for a digest reference a tag made from the digest.
func tagOf(r name.Reference) string {
	if t, ok := r.(name.Tag); ok {
		return t.TagStr()
	}
	return "preload-" + strings.TrimPrefix(r.Identifier(), "sha256:")[:12]
}

func sanitize(ref string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, strings.ToLower(ref))
}
