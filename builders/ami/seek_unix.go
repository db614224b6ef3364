//go:build unix

package ami

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// dataExtents returns the byte extents [start, end) of f that hold data, asking the file system with
// SEEK_DATA and SEEK_HOLE. It returns errNoSeekData where the file system does not support them.
func dataExtents(f *os.File, size int64) ([][2]int64, error) {
	var out [][2]int64
	for off := int64(0); off < size; {
		data, err := f.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off
		}
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP) {
			return nil, errNoSeekData
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA %s at %d: %w", f.Name(), off, err)
		}
		hole, err := f.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE %s at %d: %w", f.Name(), data, err)
		}
		hole = min(hole, size)
		if hole <= data {
			break
		}
		out = append(out, [2]int64{data, hole})
		off = hole
	}
	return out, nil
}
