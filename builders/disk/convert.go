package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Formats are the disk formats Convert writes.
var Formats = []string{"raw", "qcow2", "vmdk", "vhd"}

// sparseBlock is the granularity of holes: NonZeroBytes counts, and punchZeroBlocks frees,
// 4 KiB blocks, the block size of ext4 and XFS.
const sparseBlock = 4096

// Convert writes the raw disk raw in another format with qemu-img (package qemu-utils):
//   - "raw": a sparse copy: blocks of zeros become holes, as with cp --sparse=always;
//   - "qcow2": qcow2 version 3 (compat 1.1);
//   - "vmdk": a streamOptimized VMDK, what vSphere and EC2's image import take;
//   - "vhd": a fixed VHD (qemu-img's vpc) whose virtual size is the raw size rounded up to
//     1 MiB, as Azure requires, kept exact with force_size; the file is that size plus the
//     512-byte footer, and sparse.
//
// out is written to a temporary file next to it and renamed to out when complete.
func Convert(ctx context.Context, raw, format, out string) error {
	qemuImg, err := hostTool("qemu-img", "qemu-utils")
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	fi, err := os.Stat(raw)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	var args [][]string // qemu-img runs, with tmp standing for the temporary output
	const tmpArg = "\x00tmp"
	switch format {
	case "raw":
		// -S 4k: a 4 KiB block of zeros becomes a hole (qemu-img's default, made explicit).
		args = [][]string{{"convert", "-q", "-f", "raw", "-O", "raw", "-S", "4k", raw, tmpArg}}
	case "qcow2":
		args = [][]string{{"convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, tmpArg}}
	case "vmdk":
		args = [][]string{{"convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, tmpArg}}
	case "vhd":
		// qemu-img convert would make the VHD the raw's size; create it at the size rounded
		// up to 1 MiB (sparse: a fixed VHD is the disk's bytes then a footer), then convert
		// into it (-n). --target-is-zero: the new VHD reads as zeros, so the zeros of the
		// raw need not be written, which keeps it sparse (qemu 5.0 and later).
		size := roundUp(fi.Size(), oneMiB)
		args = [][]string{
			{"create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", tmpArg, strconv.FormatInt(size, 10)},
			{"convert", "-q", "-n", "--target-is-zero", "-f", "raw", "-O", "vpc", raw, tmpArg},
		}
	default:
		return fmt.Errorf("convert: unknown format %q (want one of %v)", format, Formats)
	}

	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	tmp := f.Name()
	f.Close()
	done := false
	defer func() {
		if !done {
			os.Remove(tmp)
		}
	}()
	for _, a := range args {
		for i := range a {
			if a[i] == tmpArg {
				a[i] = tmp
			}
		}
		if _, err := runHostTool(ctx, qemuImg, nil, a...); err != nil {
			return fmt.Errorf("convert: %s to %s %s: %w", raw, format, out, err)
		}
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	done = true
	return nil
}

// CheckQcow2 runs `qemu-img check` on the qcow2 file path; a failure's error holds its output.
func CheckQcow2(ctx context.Context, path string) error {
	qemuImg, err := hostTool("qemu-img", "qemu-utils")
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if _, err := runHostTool(ctx, qemuImg, nil, "check", "-f", "qcow2", path); err != nil {
		return fmt.Errorf("check: %s: %w", path, err)
	}
	return nil
}

// NonZeroBytes counts the bytes of the 4 KiB blocks of the file path that are not all zeros:
// what a sparse copy of it must store. It reads only the file's data, skipping its holes
// (SEEK_DATA and SEEK_HOLE), or all of it where the filesystem cannot tell them apart.
func NonZeroBytes(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	err = forEachBlock(f, 0, -1, func(off int64, b []byte) error {
		if !isZero(b) {
			n += int64(len(b))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("counting the data of %s: %w", path, err)
	}
	return n, nil
}

// punchZeroBlocks makes every 4 KiB block of zeros of f between start and end (multiples of
// 4 KiB) a hole. A filesystem that cannot punch holes leaves the blocks as they are.
func punchZeroBlocks(f *os.File, start, end int64) error {
	err := forEachBlock(f, start, end, func(off int64, b []byte) error {
		if len(b) < sparseBlock || !isZero(b) {
			return nil
		}
		return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, int64(len(b)))
	})
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("punching holes in %s: %w", f.Name(), err)
	}
	return nil
}

// forEachBlock calls fn with each 4 KiB block (the last may be shorter) of f between start
// and end (-1: the end of the file) that lies in, or overlaps, a data extent of f. The
// slice is reused between calls.
func forEachBlock(f *os.File, start, end int64, fn func(off int64, b []byte) error) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if end < 0 || end > fi.Size() {
		end = fi.Size()
	}
	buf := make([]byte, 1<<20)
	fd := int(f.Fd())
	for off := start; off < end; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, syscall.ENXIO): // no data after off
			return nil
		case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP):
			data = off // no SEEK_DATA here: read everything
		case err != nil:
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = end
		}
		// Whole blocks: a filesystem's extents can be finer than 4 KiB.
		data = data / sparseBlock * sparseBlock
		hole = min(roundUp(hole, sparseBlock), end)
		for pos := data; pos < hole; {
			n := min(int64(len(buf)), hole-pos)
			m, err := f.ReadAt(buf[:n], pos)
			if err != nil && !(errors.Is(err, io.EOF) && int64(m) == n) {
				return err
			}
			for i := int64(0); i < n; i += sparseBlock {
				if err := fn(pos+i, buf[i:min(i+sparseBlock, n)]); err != nil {
					return err
				}
			}
			pos += n
		}
		off = hole
	}
	return nil
}

var zeroBlock = make([]byte, sparseBlock)

// isZero reports whether b, at most 4 KiB, is all zeros.
func isZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

// allocatedBytes is what the file path takes on its filesystem: st_blocks of 512 bytes.
func allocatedBytes(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("%s: no block count on this system", path)
	}
	return st.Blocks * 512, nil
}
