package registry

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Copy copies the image or index at src to dst, every platform of an index included, and
// returns dst's repository at the copied digest, which is src's: manifests are copied byte for
// byte. Blobs dst already has are skipped; within one registry the others are mounted from
// src's repository rather than uploaded (go-containerregistry does both).
func Copy(ctx context.Context, src, dst string, opts ...Option) (name.Digest, error) {
	o := makeOptions(opts)
	srcRef, err := o.parseRef(src)
	if err != nil {
		return name.Digest{}, &Error{Op: "copy", Host: hostOf(src), Kind: KindFailed, Err: err,
			msg: fmt.Sprintf("copy %s: invalid reference: %v", src, err)}
	}
	dstRef, err := o.parseRef(dst)
	if err != nil {
		return name.Digest{}, &Error{Op: "copy", Host: hostOf(dst), Kind: KindFailed, Err: err,
			msg: fmt.Sprintf("copy to %s: invalid reference: %v", dst, err)}
	}
	s := newSecrets()
	ropts, err := o.remoteOptions(ctx, s)
	if err != nil {
		return name.Digest{}, newError("copy", err, s, dstRef)
	}
	desc, err := remote.Get(srcRef, ropts...)
	if err != nil {
		return name.Digest{}, newError("copy", err, s, srcRef, dstRef)
	}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return name.Digest{}, newError("copy", err, s, srcRef, dstRef)
		}
		err = remote.WriteIndex(dstRef, idx, ropts...)
		if err != nil {
			return name.Digest{}, newError("copy", err, s, dstRef, srcRef)
		}
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return name.Digest{}, newError("copy", err, s, srcRef, dstRef)
		}
		if err := remote.Write(dstRef, img, ropts...); err != nil {
			return name.Digest{}, newError("copy", err, s, dstRef, srcRef)
		}
	default:
		err := fmt.Errorf("%s has media type %q, neither an image nor an index", srcRef, desc.MediaType)
		return name.Digest{}, newError("copy", err, s, srcRef)
	}
	return dstRef.Context().Digest(desc.Digest.String()), nil
}
