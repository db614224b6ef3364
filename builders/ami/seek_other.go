//go:build !unix

package ami

import "os"

// dataExtents cannot ask this platform's file systems for holes: every block is read.
func dataExtents(*os.File, int64) ([][2]int64, error) { return nil, errNoSeekData }
