package registry

import (
	"context"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Annotation and label prefixes Inspect gathers into Description.Metadata.
const (
	GPUForgePrefix = "dev.gpuforge."
	OCIImagePrefix = "org.opencontainers.image."
)

// Description is what Inspect reports about an image or an index.
type Description struct {
	// Reference is the reference as given; Digest the digest it resolved to.
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	// MediaType is the manifest's or index's media type, Size its length in bytes.
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
	// Annotations are the manifest's or index's annotations.
	Annotations map[string]string `json:"annotations,omitempty"`
	// Platforms has one entry per manifest of an index, in the index's order, or the image's
	// own for an image.
	Platforms []Platform `json:"platforms"`
	// Metadata holds the dev.gpuforge.* and org.opencontainers.image.* keys found in, by
	// precedence: the top-level annotations, then each platform's manifest annotations and
	// config labels in platform order.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Platform describes one image of a Description.
type Platform struct {
	// Platform is os/architecture[/variant], or "unknown" when neither the index nor the
	// config says (attestation manifests).
	Platform  string `json:"platform"`
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	// ManifestSize, ConfigSize and LayersSize (compressed, as stored) are in bytes; Size is
	// their sum, what pulling the platform transfers. They are zero for a nested index.
	ManifestSize int64 `json:"manifestSize"`
	ConfigSize   int64 `json:"configSize"`
	Layers       int   `json:"layers"`
	LayersSize   int64 `json:"layersSize"`
	Size         int64 `json:"size"`
	// Labels are the config's labels; Annotations the manifest's.
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Inspect describes the image or index at ref without pulling any layer: media type, digest,
// each platform with its sizes, labels and annotations, and gpuforge's and OCI's metadata.
func Inspect(ctx context.Context, ref string, opts ...Option) (*Description, error) {
	o := makeOptions(opts)
	r, err := o.parseRef(ref)
	if err != nil {
		return nil, &Error{Op: "inspect", Host: hostOf(ref), Kind: KindFailed, Err: err,
			msg: fmt.Sprintf("inspect %s: invalid reference: %v", ref, err)}
	}
	s := newSecrets()
	ropts, err := o.remoteOptions(ctx, s)
	if err != nil {
		return nil, newError("inspect", err, s, r)
	}
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, newError("inspect", err, s, r)
	}
	d := &Description{
		Reference: ref,
		Digest:    desc.Digest.String(),
		MediaType: string(desc.MediaType),
		Size:      desc.Size,
	}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, newError("inspect", err, s, r)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, newError("inspect", err, s, r)
		}
		d.Annotations = im.Annotations
		for _, child := range im.Manifests {
			p := Platform{
				Platform:     platformString(child.Platform),
				Digest:       child.Digest.String(),
				MediaType:    string(child.MediaType),
				ManifestSize: child.Size,
			}
			if child.MediaType.IsImage() {
				img, err := idx.Image(child.Digest)
				if err != nil {
					return nil, newError("inspect", err, s, r)
				}
				if err := describeImage(img, &p); err != nil {
					return nil, newError("inspect", err, s, r)
				}
			}
			if p.Annotations == nil && len(child.Annotations) > 0 {
				p.Annotations = child.Annotations
			}
			d.Platforms = append(d.Platforms, p)
		}
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, newError("inspect", err, s, r)
		}
		p := Platform{Digest: d.Digest, MediaType: d.MediaType, ManifestSize: d.Size}
		if err := describeImage(img, &p); err != nil {
			return nil, newError("inspect", err, s, r)
		}
		d.Annotations = p.Annotations
		d.Platforms = []Platform{p}
	default:
		return nil, newError("inspect", fmt.Errorf("media type %q is neither an image nor an index", desc.MediaType), s, r)
	}
	d.Metadata = metadata(d)
	return d, nil
}

// describeImage fills p from an image's manifest and config.
func describeImage(img v1.Image, p *Platform) error {
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	p.Annotations = m.Annotations
	p.ConfigSize = m.Config.Size
	p.Layers = len(m.Layers)
	for _, l := range m.Layers {
		p.LayersSize += l.Size
	}
	p.Size = p.ManifestSize + p.ConfigSize + p.LayersSize
	p.Labels = cf.Config.Labels
	if p.Platform == "" || p.Platform == "unknown" {
		if pl := cf.Platform(); pl != nil && pl.OS != "" {
			p.Platform = platformString(pl)
		}
	}
	if p.Platform == "" {
		p.Platform = "unknown"
	}
	return nil
}

func platformString(p *v1.Platform) string {
	if p == nil || (p.OS == "" && p.Architecture == "") {
		return "unknown"
	}
	if p.OS == "unknown" && p.Architecture == "unknown" {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func metadata(d *Description) map[string]string {
	out := map[string]string{}
	add := func(m map[string]string) {
		for k, v := range m {
			if !strings.HasPrefix(k, GPUForgePrefix) && !strings.HasPrefix(k, OCIImagePrefix) {
				continue
			}
			if _, ok := out[k]; !ok {
				out[k] = v
			}
		}
	}
	add(d.Annotations)
	for _, p := range d.Platforms {
		add(p.Annotations)
		add(p.Labels)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
