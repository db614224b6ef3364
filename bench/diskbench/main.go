// Command diskbench assembles a root filesystem tree and an ESP directory into a raw disk with
// disk.Assemble, for bench/disk.sh. It prints the disk's size, allocation and layout.
//
//	diskbench -root DIR -esp DIR -out FILE [-epoch UNIX] [-size BYTES]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/gpuforge/gpuforge/builders/disk"
)

func main() {
	root := flag.String("root", "", "root filesystem tree")
	esp := flag.String("esp", "", "EFI system partition files")
	out := flag.String("out", "", "raw disk to write")
	epoch := flag.Int64("epoch", 0, "epoch (Unix seconds) for reproducible IDs and times; 0: none")
	size := flag.Int64("size", 0, "disk size in bytes; 0: content + headroom")
	flag.Parse()
	if *root == "" || *esp == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	l := disk.Layout{RootDir: *root, ESPDir: *esp, Size: *size}
	if *epoch != 0 {
		t := time.Unix(*epoch, 0).UTC()
		l.Epoch = &t
	}
	l.IDs = disk.NewIDs("diskbench", l.Epoch)
	d, err := disk.Assemble(context.Background(), *out, l)
	if err != nil {
		fmt.Fprintln(os.Stderr, "diskbench:", err)
		os.Exit(1)
	}
	fmt.Printf("size %d allocated %d esp %d+%d root %d+%d\n",
		d.Size, d.Allocated, d.ESPOffset, d.ESPSize, d.RootOffset, d.RootSize)
}
