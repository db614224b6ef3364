package awsemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

const (
	// blockSize is the EBS direct block size: 512 KiB.
	blockSize = 512 << 10
	// blocksPerGiB is the number of blocks in a GiB of volume.
	blocksPerGiB = (1 << 30) / blockSize
	// idxRecord is the size of one record of a snapshot's block log:
	// block index (8 bytes, little endian), flags (1 byte), SHA-256 (32 bytes).
	idxRecord = 8 + 1 + sha256.Size

	flagWritten = 1 // the block was written to this snapshot, not inherited from its parent
)

type blockEntry struct {
	sum     [sha256.Size]byte
	written bool
}

// blockSet holds the blocks of one snapshot: their data in a sparse file at index*512KiB and
// their checksums in memory and in an append-only log beside it. Writers of different blocks run
// in parallel; the lock only covers the log and the map.
type blockSet struct {
	path string // without extension

	mu       sync.Mutex
	data     *os.File
	idx      *os.File
	blocks   map[int64]blockEntry
	inflight map[int64]bool
	sealed   bool
	closed   bool
}

var (
	errBlockConflict = errors.New("another request is writing this block")
	errSealed        = errors.New("the snapshot is not accepting blocks")
	errNoBlock       = errors.New("the block was never written")
)

func openBlockSet(path string) (*blockSet, error) {
	b := &blockSet{path: path, blocks: map[int64]blockEntry{}, inflight: map[int64]bool{}}
	log, err := os.ReadFile(path + ".idx")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for len(log) >= idxRecord {
		rec := log[:idxRecord]
		log = log[idxRecord:]
		var e blockEntry
		copy(e.sum[:], rec[9:])
		e.written = rec[8]&flagWritten != 0
		b.blocks[int64(binary.LittleEndian.Uint64(rec[:8]))] = e
	}
	return b, nil
}

// files opens the data and log files on first use. b.mu must be held.
func (b *blockSet) files() (*os.File, *os.File, error) {
	if b.closed {
		return nil, nil, errSealed
	}
	if b.data == nil {
		if err := os.MkdirAll(filepath.Dir(b.path), 0o755); err != nil {
			return nil, nil, err
		}
		d, err := os.OpenFile(b.path+".blocks", os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, nil, err
		}
		x, err := os.OpenFile(b.path+".idx", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			d.Close()
			return nil, nil, err
		}
		b.data, b.idx = d, x
	}
	return b.data, b.idx, nil
}

// begin reserves a block index for one writer.
func (b *blockSet) begin(i int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sealed || b.closed {
		return errSealed
	}
	if b.inflight[i] {
		return errBlockConflict
	}
	b.inflight[i] = true
	return nil
}

func (b *blockSet) end(i int64) {
	b.mu.Lock()
	delete(b.inflight, i)
	b.mu.Unlock()
}

// put writes a block reserved with begin.
func (b *blockSet) put(i int64, data []byte, sum [sha256.Size]byte, written bool) error {
	b.mu.Lock()
	d, _, err := b.files()
	b.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := d.WriteAt(data, i*blockSize); err != nil {
		return err
	}
	return b.record(i, blockEntry{sum: sum, written: written})
}

func (b *blockSet) record(i int64, e blockEntry) error {
	var rec [idxRecord]byte
	binary.LittleEndian.PutUint64(rec[:8], uint64(i))
	if e.written {
		rec[8] = flagWritten
	}
	copy(rec[9:], e.sum[:])
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sealed {
		return errSealed
	}
	_, x, err := b.files()
	if err != nil {
		return err
	}
	if _, err := x.Write(rec[:]); err != nil {
		return err
	}
	b.blocks[i] = e
	return nil
}

// read reads block i into buf (blockSize bytes).
func (b *blockSet) read(i int64, buf []byte) ([sha256.Size]byte, error) {
	b.mu.Lock()
	e, ok := b.blocks[i]
	var d *os.File
	var err error
	if ok {
		d, _, err = b.files()
	}
	b.mu.Unlock()
	if !ok {
		return e.sum, errNoBlock
	}
	if err != nil {
		return e.sum, err
	}
	if _, err := d.ReadAt(buf[:blockSize], i*blockSize); err != nil && err != io.EOF {
		return e.sum, err
	}
	return e.sum, nil
}

// indexes returns the indexes of the blocks present, in order.
func (b *blockSet) indexes() []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	idx := make([]int64, 0, len(b.blocks))
	for i := range b.blocks {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(x, y int) bool { return idx[x] < idx[y] })
	return idx
}

func (b *blockSet) entry(i int64) (blockEntry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.blocks[i]
	return e, ok
}

func (b *blockSet) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.blocks)
}

// writtenSummary counts the blocks written to this snapshot and computes their LINEAR aggregate
// checksum: SHA-256 over the per-block SHA-256 digests in ascending block index order.
func (b *blockSet) writtenSummary() (int, [sha256.Size]byte) {
	n := 0
	h := sha256.New()
	for _, i := range b.indexes() {
		e, _ := b.entry(i)
		if e.written {
			n++
			h.Write(e.sum[:])
		}
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return n, sum
}

// seal stops the set from accepting blocks.
func (b *blockSet) seal() {
	b.mu.Lock()
	b.sealed = true
	b.mu.Unlock()
}

func (b *blockSet) close() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.data != nil {
		b.data.Close()
		b.idx.Close()
		b.data, b.idx = nil, nil
	}
	b.closed = true
}

// remove closes the set and deletes its files.
func (b *blockSet) remove() {
	b.close()
	os.Remove(b.path + ".blocks")
	os.Remove(b.path + ".idx")
}

func (b *blockSet) modTime() time.Time {
	fi, err := os.Stat(b.path + ".idx")
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime().UTC()
}

// copyTo copies every block of b into dst. written says whether the copies count as written to
// dst (a copied snapshot is complete in itself; a child of a parent inherits).
func (b *blockSet) copyTo(dst *blockSet, written bool) error {
	buf := make([]byte, blockSize)
	for _, i := range b.indexes() {
		sum, err := b.read(i, buf)
		if err != nil {
			return err
		}
		if err := dst.put(i, buf, sum, written); err != nil {
			return err
		}
	}
	return nil
}

// writeBlocksFrom fills an empty set from r, one block at a time, skipping blocks of zeros
// (they stay holes). It returns the number of bytes read.
func (b *blockSet) writeBlocksFrom(r io.Reader) (int64, error) {
	buf := make([]byte, blockSize)
	zero := make([]byte, blockSize)
	var total int64
	for i := int64(0); ; i++ {
		n, err := io.ReadFull(r, buf)
		total += int64(n)
		if n > 0 {
			clear(buf[n:])
			if !bytes.Equal(buf, zero) {
				if err := b.put(i, buf, sha256.Sum256(buf), true); err != nil {
					return total, err
				}
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// writeSparse writes the volume as a raw disk file of size bytes: every block present at its
// offset, everything else a hole.
func (b *blockSet) writeSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	buf := make([]byte, blockSize)
	for _, i := range b.indexes() {
		if _, err := b.read(i, buf); err != nil {
			f.Close()
			return fmt.Errorf("block %d: %w", i, err)
		}
		if _, err := f.WriteAt(buf, i*blockSize); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
