package registry

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// AnnotationRefName is the annotation of an OCI layout's index.json entry that names it.
const AnnotationRefName = "org.opencontainers.image.ref.name"

// Push uploads the image or index in src to ref and returns ref's repository at the pushed
// digest. src is one of:
//
//   - an OCI image layout directory: the manifest with the ref name (or digest) given by WithRefName, else
//     index.json's only entry (an image or an index), else all of index.json's entries pushed
//     as one index;
//   - a tar file (optionally gzip-compressed) of an OCI image layout, as BuildKit's oci exporter
//     writes, chosen the same way;
//   - a docker tarball (docker save), its only image or the one tagged WithRefName.
//
// Blobs the repository already has are not uploaded again, and when ref's tag already points at
// the same digest nothing is uploaded at all. Manifests are pushed byte for byte, so the digest
// is the one in src.
func Push(ctx context.Context, src, ref string, opts ...Option) (name.Digest, error) {
	o := makeOptions(opts)
	dst, err := o.parseRef(ref)
	if err != nil {
		return name.Digest{}, &Error{Op: "push", Host: hostOf(ref), Kind: KindFailed, Err: err,
			msg: fmt.Sprintf("push %s: invalid reference: %v", ref, err)}
	}
	s := newSecrets()
	t, cleanup, err := loadSource(src, o.refName)
	if err != nil {
		return name.Digest{}, newError("push", fmt.Errorf("reading %s: %w", src, err), s, dst)
	}
	defer cleanup()
	h, err := t.Digest()
	if err != nil {
		return name.Digest{}, newError("push", fmt.Errorf("reading %s: %w", src, err), s, dst)
	}
	ropts, err := o.remoteOptions(ctx, s)
	if err != nil {
		return name.Digest{}, newError("push", err, s, dst)
	}
	if err := remote.Push(dst, t, ropts...); err != nil {
		return name.Digest{}, newError("push", err, s, dst)
	}
	return dst.Context().Digest(h.String()), nil
}

// pushable is an image or an index.
type pushable interface {
	remote.Taggable
	Digest() (v1.Hash, error)
}

var (
	_ pushable = v1.Image(nil)
	_ pushable = v1.ImageIndex(nil)
)

// loadSource opens src (see Push) and returns what to push and a function that removes
// whatever loading it left on disk.
func loadSource(src, refName string) (pushable, func(), error) {
	nop := func() {}
	fi, err := os.Stat(src)
	if err != nil {
		return nil, nop, err
	}
	if fi.IsDir() {
		t, err := fromLayout(src, refName)
		return t, nop, err
	}
	kind, gz, err := sniffTarball(src)
	if err != nil {
		return nil, nop, err
	}
	switch kind {
	case ociTarball:
		// go-containerregistry's layout package reads only directories, so the tarball is
		// unpacked into a temporary one.
		dir, err := os.MkdirTemp("", "gpuforge-push-")
		if err != nil {
			return nil, nop, err
		}
		cleanup := func() { os.RemoveAll(dir) }
		if err := untar(src, gz, dir); err != nil {
			cleanup()
			return nil, nop, err
		}
		t, err := fromLayout(dir, refName)
		if err != nil {
			cleanup()
			return nil, nop, err
		}
		return t, cleanup, nil
	case dockerTarball:
		path, cleanup := src, nop
		if gz {
			// tarball.ImageFromPath reads an uncompressed tar, several times.
			if path, cleanup, err = gunzipToTemp(src); err != nil {
				return nil, nop, err
			}
		}
		var tag *name.Tag
		if refName != "" {
			tg, err := name.NewTag(refName)
			if err != nil {
				cleanup()
				return nil, nop, fmt.Errorf("ref name %q is not an image tag: %w", refName, err)
			}
			tag = &tg
		}
		img, err := tarball.ImageFromPath(path, tag)
		if err != nil {
			cleanup()
			return nil, nop, err
		}
		return img, cleanup, nil
	}
	return nil, nop, errors.New("not an OCI layout directory, an OCI layout tarball (oci-layout, index.json) nor a docker tarball (manifest.json)")
}

// fromLayout picks what to push from an OCI layout directory.
func fromLayout(dir, refName string) (pushable, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("not an OCI image layout: %w", err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var picked []v1.Descriptor
	switch {
	case refName != "":
		var names []string
		for _, d := range im.Manifests {
			// A digest selects the entry by content: what a build just exported, whatever
			// ref names earlier builds left in the layout.
			if d.Annotations[AnnotationRefName] == refName || d.Digest.String() == refName {
				picked = append(picked, d)
			}
			if n := d.Annotations[AnnotationRefName]; n != "" {
				names = append(names, n)
			}
		}
		if len(picked) == 0 {
			return nil, fmt.Errorf("no manifest in index.json has %s %q (it has %s)", AnnotationRefName, refName, quoteList(names))
		}
		if len(picked) > 1 && picked[0].Digest.String() == refName {
			picked = picked[:1] // one entry per tag, all the same manifest
		}
		if len(picked) > 1 {
			return nil, fmt.Errorf("%d manifests in index.json have %s %q", len(picked), AnnotationRefName, refName)
		}
	case len(im.Manifests) == 0:
		return nil, errors.New("index.json lists no manifest")
	case len(im.Manifests) == 1:
		picked = im.Manifests
	default:
		// Several entries: push them all, as the index index.json is.
		return idx, nil
	}
	d := picked[0]
	switch {
	case d.MediaType.IsIndex():
		return idx.ImageIndex(d.Digest)
	case d.MediaType.IsImage():
		return idx.Image(d.Digest)
	}
	return nil, fmt.Errorf("manifest %s has media type %q, neither an image nor an index", d.Digest, d.MediaType)
}

func quoteList(ss []string) string {
	if len(ss) == 0 {
		return "no ref names"
	}
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

type tarballKind int

const (
	unknownTarball tarballKind = iota
	ociTarball
	dockerTarball
)

// sniffTarball says whether the file at p is a tar (gzip-compressed or not) of an OCI layout or
// a docker tarball, by the names of its entries.
func sniffTarball(p string) (kind tarballKind, gz bool, err error) {
	f, err := os.Open(p)
	if err != nil {
		return unknownTarball, false, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return unknownTarball, false, err
		}
		defer zr.Close()
		r, gz = zr, true
	}
	tr := tar.NewReader(r)
	var sawManifest bool
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return unknownTarball, gz, fmt.Errorf("not a tar file: %w", err)
		}
		switch cleanTarName(h.Name) {
		case "oci-layout", "index.json":
			return ociTarball, gz, nil
		case "manifest.json":
			sawManifest = true
		}
	}
	if sawManifest {
		return dockerTarball, gz, nil
	}
	return unknownTarball, gz, nil
}

func cleanTarName(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// untar unpacks the tar at src into dir. It accepts directories and regular files only, each
// within dir: an OCI layout has nothing else, and links could write outside dir.
func untar(src string, gz bool, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	if gz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		rel := cleanTarName(h.Name)
		if rel == "" {
			continue
		}
		if slices.Contains(strings.Split(h.Name, "/"), "..") {
			return fmt.Errorf("tar entry %q leaves the layout", h.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := writeFile(target, tr); err != nil {
				return err
			}
		default:
			return fmt.Errorf("tar entry %q is not a file or directory; an OCI layout holds only those", h.Name)
		}
	}
}

func writeFile(p string, r io.Reader) error {
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// gunzipToTemp decompresses src into a temporary file.
func gunzipToTemp(src string) (string, func(), error) {
	f, err := os.Open(src)
	if err != nil {
		return "", func() {}, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return "", func() {}, err
	}
	defer zr.Close()
	out, err := os.CreateTemp("", "gpuforge-push-*.tar")
	if err != nil {
		return "", func() {}, err
	}
	cleanup := func() { os.Remove(out.Name()) }
	if _, err := io.Copy(out, zr); err != nil {
		out.Close()
		cleanup()
		return "", func() {}, err
	}
	if err := out.Close(); err != nil {
		cleanup()
		return "", func() {}, err
	}
	return out.Name(), cleanup, nil
}
