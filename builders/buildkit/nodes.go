package buildkit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Node is one BuildKit daemon of a builder: a builder definition's node (recipes.BuilderNode),
// connected.
type Node struct {
	Name    string              // the node's name in the builder definition
	Address string              // its endpoint
	Client  *client.Client      // connected
	Native  []ocispecs.Platform // what the definition says it builds natively; none: what its workers report
	Workers []ocispecs.Platform // what its workers report (native or emulated), from Info
}

// builds reports whether the node builds p natively: p is among its declared platforms, or it
// declares none and its workers report p.
func (n *Node) builds(p ocispecs.Platform) bool {
	if len(n.Native) > 0 {
		return platforms.Any(n.Native...).Match(p)
	}
	return len(n.Workers) > 0 && platforms.Any(n.Workers...).Match(p)
}

// emulates reports whether the node's workers report p (through binfmt emulation, say).
func (n *Node) emulates(p ocispecs.Platform) bool {
	return len(n.Workers) > 0 && platforms.Any(n.Workers...).Match(p)
}

// platformGroup is the platforms of one image one node builds.
type platformGroup struct {
	node      *Node
	platforms []ocispecs.Platform
}

// route picks the node that builds each platform: the first node that builds it natively, else
// the first whose workers emulate it. With one node it builds everything, as a single builder
// does (BuildKit says so when it cannot). Groups come in the order of their first platform.
func route(nodes []*Node, plats []ocispecs.Platform) ([]platformGroup, error) {
	if len(nodes) == 1 {
		return []platformGroup{{node: nodes[0], platforms: plats}}, nil
	}
	var groups []platformGroup
	index := map[*Node]int{}
	for _, p := range plats {
		var pick *Node
		for _, n := range nodes {
			if n.builds(p) {
				pick = n
				break
			}
		}
		if pick == nil {
			for _, n := range nodes {
				if n.emulates(p) {
					pick = n
					break
				}
			}
		}
		if pick == nil {
			var serves []string
			for _, n := range nodes {
				ps := n.Native
				if len(ps) == 0 {
					ps = n.Workers
				}
				var names []string
				for _, q := range ps {
					names = append(names, platforms.Format(q))
				}
				serves = append(serves, fmt.Sprintf("%s (%s) builds %s", n.Name, n.Address, orNone(names)))
			}
			return nil, fmt.Errorf("no node of the builder builds %s: %s", platforms.Format(p), strings.Join(serves, "; "))
		}
		i, ok := index[pick]
		if !ok {
			i = len(groups)
			index[pick] = i
			groups = append(groups, platformGroup{node: pick})
		}
		groups[i].platforms = append(groups[i].platforms, p)
	}
	return groups, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}

// ConnectNodes connects to each node of a builder at once and asks each for its workers'
// platforms. conn connects to one node (Connect with its address and TLS files). On any error it
// closes what it opened and returns an error naming the node.
func ConnectNodes(ctx context.Context, nodes []*Node, conn func(ctx context.Context, n *Node) (*client.Client, error)) error {
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := conn(ctx, n)
			if err != nil {
				errs[i] = fmt.Errorf("node %s: %w", n.Name, err)
				return
			}
			n.Client = c
			info, err := Info(ctx, c)
			if err != nil {
				errs[i] = fmt.Errorf("node %s (%s): %w", n.Name, n.Address, err)
				return
			}
			n.Workers = nil
			for _, w := range info.Workers {
				n.Workers = append(n.Workers, w.Platforms...)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			CloseNodes(nodes)
			return err
		}
	}
	return nil
}

// CloseNodes closes the nodes' clients.
func CloseNodes(nodes []*Node) {
	for _, n := range nodes {
		if n.Client != nil {
			n.Client.Close()
			n.Client = nil
		}
	}
}

// NodeFor returns the node that builds p: the first that builds it natively, else the first.
func NodeFor(nodes []*Node, p ocispecs.Platform) *Node {
	for _, n := range nodes {
		if n.builds(p) {
			return n
		}
	}
	return nodes[0]
}

// mergeParts writes to dst an OCI layout whose image index holds the image manifests (and their
// attestation manifests) of the single- or multi-platform layouts in parts, in that order: the
// manifest list buildx makes with `imagetools create` after a build on several nodes, here
// without a registry in between. annotations go on the index; tags name its index.json entries
// as BuildKit's OCI exporter names them. It returns the index's digest.
//
// Hand-written on go-containerregistry because BuildKit merges platforms only within one solve
// on one daemon.
func mergeParts(dst string, parts []string, annotations map[string]string, tags []string) (digest.Digest, error) {
	var images, attestations []mutate.IndexAddendum
	for _, dir := range parts {
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return "", fmt.Errorf("reading the part %s: %w", dir, err)
		}
		top, err := idx.IndexManifest()
		if err != nil {
			return "", err
		}
		if len(top.Manifests) == 0 {
			return "", fmt.Errorf("the part %s holds no image", dir)
		}
		d := top.Manifests[0]
		if d.MediaType.IsIndex() {
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return "", err
			}
			cm, err := child.IndexManifest()
			if err != nil {
				return "", err
			}
			for _, cd := range cm.Manifests {
				img, err := child.Image(cd.Digest)
				if err != nil {
					return "", err
				}
				add := mutate.IndexAddendum{Add: img, Descriptor: cd}
				if cd.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
					attestations = append(attestations, add)
				} else {
					images = append(images, add)
				}
			}
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return "", err
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			return "", err
		}
		desc := v1.Descriptor{MediaType: d.MediaType, Size: d.Size, Digest: d.Digest, Platform: &v1.Platform{
			OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant, OSVersion: cfg.OSVersion,
		}}
		images = append(images, mutate.IndexAddendum{Add: img, Descriptor: desc})
	}
	merged := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	merged = mutate.AppendManifests(merged, append(images, attestations...)...)
	if len(annotations) > 0 {
		merged = mutate.Annotations(merged, annotations).(v1.ImageIndex)
	}
	h, err := merged.Digest()
	if err != nil {
		return "", err
	}
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	p, err := layout.Write(dst, empty.Index)
	if err != nil {
		return "", err
	}
	entries := []map[string]string{nil}
	if len(tags) > 0 {
		entries = nil
		for _, t := range tags {
			entries = append(entries, refAnnotations(t))
		}
	}
	for _, a := range entries {
		var opts []layout.Option
		if a != nil {
			opts = append(opts, layout.WithAnnotations(a))
		}
		if err := p.AppendIndex(merged, opts...); err != nil {
			return "", fmt.Errorf("writing %s: %w", dst, err)
		}
	}
	return digest.Digest(h.String()), nil
}

// refAnnotations are the annotations BuildKit's OCI exporter gives the index.json entry of an
// image named tag.
func refAnnotations(tag string) map[string]string {
	a := map[string]string{"io.containerd.image.name": tag}
	if named, err := reference.ParseNormalizedNamed(tag); err == nil {
		a["io.containerd.image.name"] = reference.TagNameOnly(named).String()
		if t, ok := reference.TagNameOnly(named).(reference.Tagged); ok {
			a[ocispecs.AnnotationRefName] = t.Tag()
		}
	}
	return a
}

// NodeReport says which node built which platform of an image.
type NodeReport struct {
	Platform string
	Node     string
	Duration time.Duration
}

// partsDir is where the per-node layouts of an image built on several nodes go before they are
// merged: beside the image's layout, so on the same file system.
func partsDir(outDir, name string) string {
	return filepath.Join(outDir, "."+name+".nodes")
}
