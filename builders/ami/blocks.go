package ami

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"slices"
)

// BlockSize is the size of an EBS snapshot block, the unit of the EBS direct APIs: 512 KiB.
const BlockSize = 512 << 10

const gib = 1 << 30

// zeroBlock is compared against to find blocks that need not be written: a snapshot reads zeros where no
// block was written.
var zeroBlock = make([]byte, BlockSize)

// isZero reports whether b is all zero bytes.
func isZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

// blockRange is the block indices [First, End).
type blockRange struct{ First, End int64 }

// blocksOf returns the number of blocks of a disk of size bytes: the last one may be partial, and is sent
// padded with zeros.
func blocksOf(size int64) int64 { return (size + BlockSize - 1) / BlockSize }

// volumeGiB is the size of the volume a disk of size bytes needs, in GiB, rounded up (at least 1).
func volumeGiB(size int64) int64 { return max((size+gib-1)/gib, 1) }

// dataBlocks returns, sorted and merged, the ranges of blocks of f (size bytes long) that hold data
// according to the file system (SEEK_DATA/SEEK_HOLE): the blocks entirely inside holes are zero and are never
// read. Where the file system cannot say, every block is returned.
func dataBlocks(f *os.File, size int64) ([]blockRange, error) {
	extents, err := dataExtents(f, size)
	if errors.Is(err, errNoSeekData) {
		extents = [][2]int64{{0, size}}
	} else if err != nil {
		return nil, err
	}
	return extentsToBlocks(extents), nil
}

// extentsToBlocks turns byte extents [start, end) into merged block ranges.
func extentsToBlocks(extents [][2]int64) []blockRange {
	var out []blockRange
	for _, e := range extents {
		if e[1] <= e[0] {
			continue
		}
		r := blockRange{e[0] / BlockSize, (e[1] + BlockSize - 1) / BlockSize}
		if n := len(out); n > 0 && r.First <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, r.End)
			continue
		}
		out = append(out, r)
	}
	return out
}

func countBlocks(rs []blockRange) int64 {
	var n int64
	for _, r := range rs {
		n += r.End - r.First
	}
	return n
}

var errNoSeekData = errors.New("SEEK_DATA not supported")

// readBlock reads block idx of f (size bytes long) into buf (BlockSize long), padding a partial last block
// with zeros.
func readBlock(f io.ReaderAt, size, idx int64, buf []byte) error {
	off := idx * BlockSize
	n := min(int64(BlockSize), size-off)
	if _, err := f.ReadAt(buf[:n], off); err != nil {
		return err
	}
	clear(buf[n:])
	return nil
}

// blockDigest is the SHA-256 of one written block, kept for the snapshot's aggregate checksum.
type blockDigest struct {
	Index int64
	Sum   [sha256.Size]byte
}

// linearChecksum is the aggregate checksum CompleteSnapshot takes with the LINEAR method: the base64 SHA-256
// of the blocks' raw SHA-256 digests concatenated in ascending block index order. It sorts ds.
func linearChecksum(ds []blockDigest) string {
	slices.SortFunc(ds, func(a, b blockDigest) int {
		switch {
		case a.Index < b.Index:
			return -1
		case a.Index > b.Index:
			return 1
		}
		return 0
	})
	h := sha256.New()
	for _, d := range ds {
		h.Write(d.Sum[:])
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}
