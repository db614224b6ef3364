package disk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

const (
	oneMiB = int64(1) << 20

	// DefaultESPSize is the EFI system partition's size when Layout.ESPSize is 0: room for a
	// boot loader, two kernels and two initrds of a GPU image (an initrd with the NVIDIA
	// modules is 100–200 MiB). The disk is sparse, so unused room costs nothing.
	DefaultESPSize = 512 * oneMiB
	// DefaultRootLabel is the root filesystem's label when Layout.RootLabel is empty.
	DefaultRootLabel = "root"
	// ESPLabel is the FAT volume label of the EFI system partition.
	ESPLabel = "ESP"

	// partAlign is where partitions start and how their sizes round: 1 MiB, what parted,
	// sgdisk and the clouds expect, and a multiple of every SSD erase block and RAID stripe.
	partAlign = oneMiB
	// gptTailBytes is the backup GPT at the disk's end: a 128-entry partition array (32
	// sectors) and the header (1 sector).
	gptTailBytes = 33 * sectorSize
	sectorSize   = 512

	// Headroom of a disk whose size is not given: the root filesystem is its content plus 25 %
	// plus 256 MiB, rounded up to 1 MiB. The 25 % pays for ext4's metadata (inode tables
	// 1.6 %, journal, bitmaps, resize reserve) and leaves the booted system room for logs and
	// package caches; the 256 MiB keeps a small tree from giving a nearly full filesystem.
	// cloud-init's growpart grows the root partition to the cloud disk's size at first boot,
	// so the image itself stays small.
	headroomPercent = 25
	headroomBytes   = 256 * oneMiB

	ext4BlockSize = 4096
	// ext4InodeRatio is mke2fs's bytes-per-inode and ext4InodeSize its inode size for the
	// usage type "default" of mke2fs.conf, which writeRoot asks for.
	ext4InodeRatio = 16384
	ext4InodeSize  = 256
	// ext4FirstIno counts the inodes ext4 reserves (1–10) and lost+found.
	ext4FirstIno = 11
	// ext4MaxLabel is the longest ext4 volume label in bytes.
	ext4MaxLabel = 16

	// fatMinClusters is the fewest clusters a FAT32 filesystem may have: with fewer, FAT
	// drivers (UEFI firmware included) take it for FAT16.
	fatMinClusters = 65525
	// fatCopyChunk is how much of a file goes to go-diskfs per Write: each Write rewrites both
	// FATs, so small writes would rewrite them thousands of times for an initrd.
	fatCopyChunk = 16 * oneMiB
)

// Layout says what goes on a disk and how big it is.
type Layout struct {
	RootDir   string     // root filesystem tree, copied with mkfs.ext4 -d
	ESPDir    string     // files of the EFI system partition
	Size      int64      // whole disk in bytes, a multiple of 512; 0: content + headroom
	ESPSize   int64      // 0: DefaultESPSize (512 MiB)
	RootLabel string     // "": DefaultRootLabel ("root")
	IDs       IDs        // zero: NewIDs("", Epoch)
	Epoch     *time.Time // the time of the filesystems' metadata, for reproducible disks; nil: now
}

// Disk is an assembled raw disk.
type Disk struct {
	Path                 string
	Size                 int64 // apparent size
	Allocated            int64 // bytes allocated on the host filesystem (st_blocks*512)
	ESPOffset, ESPSize   int64
	RootOffset, RootSize int64
	IDs                  IDs
}

// Assemble writes a raw GPT disk at out from l: partition 1 the EFI system partition (FAT32,
// label ESP) holding the files of l.ESPDir, partition 2, last so that growpart can grow it,
// an ext4 root filesystem holding the tree l.RootDir with its owners, modes, symlinks,
// hard links, device nodes and extended attributes. It needs no loop device, mount or
// privilege beyond reading the tree: go-diskfs writes the partition table and the FAT
// filesystem, and mkfs.ext4 -d (e2fsprogs) writes the ext4 filesystem at the root partition's
// offset in the file. The file is sparse: what no filesystem wrote is a hole.
//
// With l.Epoch set, the same tree, ESP files, layout and IDs give a byte-identical disk: every
// identifier comes from l.IDs (see NewIDs), the times the tools would take from the clock
// (superblock, root directory, lost+found, every FAT entry) are the epoch, ESP files are
// copied in name order, and each root inode's access and change times are set to its
// modification time, which is copied from the tree (see settleExt4Times). Without an epoch
// the clock is used, and the tree's access and change times are kept.
//
// The disk is written to a temporary file next to out and renamed to out when complete; on
// error nothing is left behind. Errors name out and, for a program that failed, its command
// line and the end of its output.
func Assemble(ctx context.Context, out string, l Layout) (*Disk, error) {
	fail := func(err error) (*Disk, error) { return nil, fmt.Errorf("assemble %s: %w", out, err) }
	if err := l.setDefaults(); err != nil {
		return fail(err)
	}
	mkfs, err := hostTool("mkfs.ext4", "e2fsprogs")
	if err != nil {
		return fail(err)
	}
	esp, err := scanESP(ctx, l.ESPDir)
	if err != nil {
		return fail(err)
	}
	tree, err := measureTree(ctx, l.RootDir)
	if err != nil {
		return fail(err)
	}
	g, err := planGeometry(l, tree)
	if err != nil {
		return fail(err)
	}
	if err := esp.checkFits(l.ESPDir, g.espSize); err != nil {
		return fail(err)
	}

	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
	if err != nil {
		return fail(err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// Sparse from the start: truncate makes a hole of the whole disk, never zeros.
	if err := f.Truncate(g.size); err != nil {
		return fail(err)
	}
	if err := writeGPT(f, g, l.IDs); err != nil {
		return fail(fmt.Errorf("partition table: %w", err))
	}
	if err := writeESP(ctx, f, g, l, esp); err != nil {
		return fail(fmt.Errorf("EFI system partition: %w", err))
	}
	if err := writeRoot(ctx, mkfs, tmp, g, l, tree); err != nil {
		return fail(fmt.Errorf("root filesystem: %w", err))
	}
	if l.Epoch != nil {
		if err := settleExt4Times(f, g.rootOffset); err != nil {
			return fail(fmt.Errorf("root filesystem: %w", err))
		}
	}
	// go-diskfs writes whole FATs, zeroed directory clusters and zero-padded GPT partition
	// arrays; make their zeros holes again so that the file's allocation is its content.
	// mkfs.ext4 -d already leaves holes.
	for _, r := range [][2]int64{{0, g.rootOffset}, {g.rootOffset + g.rootSize, g.size}} {
		if err := punchZeroBlocks(f, r[0], r[1]); err != nil {
			return fail(err)
		}
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fail(err)
	}
	done = true
	allocated, err := allocatedBytes(out)
	if err != nil {
		return fail(err)
	}
	return &Disk{
		Path:       out,
		Size:       g.size,
		Allocated:  allocated,
		ESPOffset:  g.espOffset,
		ESPSize:    g.espSize,
		RootOffset: g.rootOffset,
		RootSize:   g.rootSize,
		IDs:        l.IDs,
	}, nil
}

// setDefaults fills in l's defaults and checks what Assemble cannot work with.
func (l *Layout) setDefaults() error {
	if l.RootDir == "" || l.ESPDir == "" {
		return errors.New("Layout.RootDir and Layout.ESPDir are both required")
	}
	for _, d := range []string{l.RootDir, l.ESPDir} {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", d)
		}
	}
	if l.ESPSize == 0 {
		l.ESPSize = DefaultESPSize
	}
	if l.ESPSize < 0 || l.ESPSize%partAlign != 0 {
		return fmt.Errorf("ESPSize %d is not a positive multiple of 1 MiB", l.ESPSize)
	}
	if l.ESPSize > fat32.Fat32MaxSize {
		return fmt.Errorf("ESPSize %s is more than FAT32 allows (%s)", formatSize(l.ESPSize), formatSize(fat32.Fat32MaxSize))
	}
	if l.Size < 0 || l.Size%sectorSize != 0 {
		return fmt.Errorf("Size %d is not a multiple of %d bytes", l.Size, sectorSize)
	}
	if l.RootLabel == "" {
		l.RootLabel = DefaultRootLabel
	}
	if len(l.RootLabel) > ext4MaxLabel {
		return fmt.Errorf("root label %q is longer than ext4's %d bytes", l.RootLabel, ext4MaxLabel)
	}
	if l.IDs.isZero() {
		l.IDs = NewIDs("", l.Epoch)
	}
	if err := l.IDs.validate(); err != nil {
		return err
	}
	return nil
}

// geometry is where the partitions of a disk lie, in bytes.
type geometry struct {
	size                 int64
	espOffset, espSize   int64
	rootOffset, rootSize int64
	inodes               int64 // the root filesystem's inode count; 0: mke2fs's default
}

// planGeometry places the ESP at 1 MiB and the root filesystem after it, up to the last 1 MiB
// boundary before the backup GPT, and sizes the disk (see headroomPercent).
func planGeometry(l Layout, tree treeSize) (geometry, error) {
	g := geometry{espOffset: partAlign, espSize: l.ESPSize}
	g.rootOffset = g.espOffset + g.espSize
	minRoot := minRootSize(tree)
	if l.Size == 0 {
		root := roundUp(tree.bytes()+tree.bytes()*headroomPercent/100+headroomBytes, partAlign)
		g.rootSize = max(root, minRoot)
		// The last MiB holds the backup GPT; the root partition ends at its 1 MiB boundary.
		g.size = g.rootOffset + g.rootSize + partAlign
	} else {
		g.size = l.Size
		rootEnd := (l.Size - gptTailBytes) / partAlign * partAlign
		g.rootSize = rootEnd - g.rootOffset
		if g.rootSize < minRoot {
			need := g.rootOffset + minRoot + partAlign
			return g, fmt.Errorf("a disk of %s is too small for %s: its %d files, directories and links need a root filesystem of at least %s (%s of data and inodes plus ext4 metadata) after an ESP of %s; the disk needs at least %s (%d bytes)",
				formatSize(l.Size), l.RootDir, tree.inodes, formatSize(minRoot), formatSize(tree.bytes()),
				formatSize(l.ESPSize), formatSize(need), need)
		}
	}
	if defaultInodes := g.rootSize / ext4InodeRatio; tree.inodes+ext4FirstIno > defaultInodes*9/10 {
		// A tree of many small files would use up mke2fs's default inode count; ask for
		// enough with a quarter spare.
		g.inodes = roundUp((tree.inodes+ext4FirstIno)*5/4, 1024)
	}
	return g, nil
}

// minRootSize is the smallest root filesystem, a multiple of 1 MiB, that holds tree: its data
// and inodes plus ext4's own metadata, estimated from how mke2fs lays out a filesystem of
// that size. mkfs.ext4 itself has the last word; writeRoot reports when it runs out of space.
func minRootSize(tree treeSize) int64 {
	size := roundUp(tree.bytes(), partAlign)
	for range 64 { // grows monotonically; a few rounds reach the fixed point
		overhead := ext4Overhead(size, tree.inodes)
		need := roundUp(tree.data+overhead, partAlign)
		if need <= size {
			return size
		}
		size = need
	}
	return size
}

// ext4Overhead estimates the metadata of an ext4 filesystem of size bytes with at least
// inodes inodes, with mke2fs's defaults: inode tables, the journal
// (ext2fs_default_journal_size), bitmaps, group descriptors, their sparse_super backups and
// the resize_inode reserve (about 1/64 of the size together), and 4 MiB of slack.
func ext4Overhead(size, inodes int64) int64 {
	itable := max(size/ext4InodeRatio, inodes+ext4FirstIno) * ext4InodeSize
	return itable + ext4JournalSize(size) + size/64 + 4*oneMiB
}

// ext4JournalSize is e2fsprogs' ext2fs_default_journal_size for a filesystem of size bytes.
func ext4JournalSize(size int64) int64 {
	blocks := size / ext4BlockSize
	var jblocks int64
	switch {
	case blocks < 2048:
		return 0
	case blocks < 32768:
		jblocks = 1024
	case blocks < 256*1024:
		jblocks = 4096
	case blocks < 512*1024:
		jblocks = 8192
	case blocks < 4096*1024:
		jblocks = 16384
	case blocks < 8192*1024:
		jblocks = 32768
	case blocks < 16384*1024:
		jblocks = 65536
	case blocks < 32768*1024:
		jblocks = 131072
	default:
		jblocks = 262144
	}
	return jblocks * ext4BlockSize
}

// treeSize is what a root tree takes in an ext4 filesystem.
type treeSize struct {
	data   int64 // data blocks: files rounded up to 4 KiB, directories, long symlink targets
	inodes int64 // files, directories, symlinks and special files; hard links count once
}

// bytes is the tree's data plus its inodes.
func (t treeSize) bytes() int64 { return t.data + t.inodes*ext4InodeSize }

// measureTree walks dir (without following symlinks) and sums what its content takes in ext4.
func measureTree(ctx context.Context, dir string) (treeSize, error) {
	var t treeSize
	type devIno struct{ dev, ino uint64 }
	linked := map[devIno]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if p != dir {
			// Its entry in its directory: 8 bytes and the name, padded to 4.
			t.data += 8 + roundUp(int64(len(d.Name())), 4)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && !fi.IsDir() && st.Nlink > 1 {
			k := devIno{uint64(st.Dev), st.Ino}
			if linked[k] {
				return nil // another name of a file already counted
			}
			linked[k] = true
		}
		t.inodes++
		switch {
		case fi.Mode().IsRegular():
			t.data += roundUp(fi.Size(), ext4BlockSize)
		case fi.IsDir():
			// A block for ".", ".." and the unused end of its last block; its entries are
			// counted above.
			t.data += ext4BlockSize
		case fi.Mode()&fs.ModeSymlink != 0 && fi.Size() >= 60:
			t.data += ext4BlockSize // a target of 60 bytes or more does not fit in the inode
		}
		return nil
	})
	if err != nil {
		return t, fmt.Errorf("measuring %s: %w", dir, err)
	}
	return t, nil
}

// writeGPT writes the protective MBR and the primary and backup GPT of g with go-diskfs.
func writeGPT(f *os.File, g geometry, ids IDs) error {
	table := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		GUID:               ids.DiskGUID,
		ProtectiveMBR:      true,
		Partitions: []*gpt.Partition{
			{
				Index: 1,
				Start: uint64(g.espOffset / sectorSize),
				End:   uint64((g.espOffset+g.espSize)/sectorSize - 1),
				Type:  gpt.EFISystemPartition,
				Name:  "ESP",
				GUID:  ids.ESPPartGUID,
			},
			{
				Index: 2,
				Start: uint64(g.rootOffset / sectorSize),
				End:   uint64((g.rootOffset+g.rootSize)/sectorSize - 1),
				// The generic Linux filesystem type, not an architecture's root type of the
				// Discoverable Partitions Specification: a Layout does not say the image's
				// architecture, and the kernel command line names root by UUID or label.
				Type: gpt.LinuxFilesystem,
				Name: "root",
				GUID: ids.RootPartGUID,
			},
		},
	}
	return table.Write(f, g.size)
}

// espTree is the content of an ESP directory, in the order it is copied: each directory
// before its entries, entries in name order.
type espTree struct {
	entries   []espEntry
	rootNames []string // the names in the top directory
	files     int64    // bytes of file data
}

type espEntry struct {
	rel  string // slash-separated path under the ESP directory
	src  string // the file to copy; a symlink's target
	dir  bool
	size int64
	// names holds a directory's entry names, for the size of its directory clusters.
	names []string
}

// scanESP lists dir. FAT has no symlinks: a symlink to a regular file is copied as that file
// (a kernel is often installed as vmlinuz -> vmlinuz-6.1.0-28-amd64); any other symlink,
// and anything but files and directories, is an error.
func scanESP(ctx context.Context, dir string) (*espTree, error) {
	t := &espTree{}
	var walk func(rel string) error
	walk = func(rel string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := os.ReadDir(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return err
		}
		di := len(t.entries) - 1 // this directory's entry; -1 for the root
		for _, e := range ents {
			r := path.Join(rel, e.Name())
			src := filepath.Join(dir, filepath.FromSlash(r))
			fi, err := os.Stat(src) // follows symlinks
			if err != nil {
				return err
			}
			if di >= 0 {
				t.entries[di].names = append(t.entries[di].names, e.Name())
			} else {
				t.rootNames = append(t.rootNames, e.Name())
			}
			switch {
			case e.Type()&fs.ModeSymlink != 0 && !fi.Mode().IsRegular():
				return fmt.Errorf("%s is a symlink to something other than a file: FAT has no symlinks", src)
			case fi.IsDir():
				t.entries = append(t.entries, espEntry{rel: r, src: src, dir: true})
				if err := walk(r); err != nil {
					return err
				}
			case fi.Mode().IsRegular():
				if fi.Size() > 1<<32-1 {
					return fmt.Errorf("%s is %s: FAT32 files are at most 4 GiB less one byte", src, formatSize(fi.Size()))
				}
				t.entries = append(t.entries, espEntry{rel: r, src: src, size: fi.Size()})
				t.files += fi.Size()
			default:
				return fmt.Errorf("%s is a %s: an ESP holds only files and directories", src, fi.Mode().Type())
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return nil, fmt.Errorf("EFI system partition files: %w", err)
	}
	return t, nil
}

// fatGeometry is the layout go-diskfs's fat32.Create gives a FAT32 filesystem of size bytes
// (its cluster size table is dosfstools' and Microsoft's): the cluster size and the number of
// data clusters.
func fatGeometry(size int64) (clusterBytes, clusters int64) {
	switch {
	case size <= 260*oneMiB:
		clusterBytes = 512
	case size <= 8*1024*oneMiB:
		clusterBytes = 4096
	case size <= 16*1024*oneMiB:
		clusterBytes = 8192
	case size <= 32*1024*oneMiB:
		clusterBytes = 16384
	default:
		clusterBytes = 32768
	}
	const reserved = 32
	sectors := size / sectorSize
	spc := clusterBytes / sectorSize
	fatSectors := (4*(sectors-reserved) + sectorSize*spc + 8 - 1) / (sectorSize*spc + 8)
	return clusterBytes, (sectors - reserved - 2*fatSectors) / spc
}

// checkFits reports whether the ESP files fit a FAT32 filesystem of size bytes, counting each
// file's and directory's clusters, and whether that size makes a valid FAT32 at all.
func (t *espTree) checkFits(dir string, size int64) error {
	cb, clusters := fatGeometry(size)
	if clusters < fatMinClusters {
		return fmt.Errorf("an ESP of %s is too small for FAT32 (%d clusters of %d bytes; FAT32 needs %d): make ESPSize at least 36 MiB",
			formatSize(size), clusters, cb, fatMinClusters)
	}
	dirClusters := func(names []string) int64 {
		// ".", ".." and, per entry, one 32-byte short entry and a long-name entry per 13
		// characters.
		slots := int64(2)
		for _, n := range names {
			slots += 1 + int64(len(n)+12)/13
		}
		return max(1, (slots*32+cb-1)/cb)
	}
	need := dirClusters(append([]string{"volume label"}, t.rootNames...))
	for _, e := range t.entries {
		if e.dir {
			need += dirClusters(e.names)
		} else {
			need += max(1, (e.size+cb-1)/cb)
		}
	}
	if need > clusters {
		// The size that would hold it: the clusters, both FATs (4 bytes a cluster each), the
		// reserved sectors, rounded up to 1 MiB, and at least one more MiB of room.
		fit := roundUp(need*cb+2*4*need+32*sectorSize, partAlign) + partAlign
		return fmt.Errorf("the EFI system partition files in %s (%s in %d files and directories) do not fit an ESP of %s (%s of %d-byte clusters); make ESPSize at least %s",
			dir, formatSize(t.files), len(t.entries), formatSize(size), formatSize(clusters*cb), cb, formatSize(fit))
	}
	return nil
}

// writeESP creates the FAT32 filesystem of the ESP with go-diskfs, copies the ESP files into
// it, and finishes what go-diskfs leaves undone (finishFAT).
func writeESP(ctx context.Context, f *os.File, g geometry, l Layout, t *espTree) error {
	// Reproducible mode keeps go-diskfs from taking the volume serial from the clock;
	// finishFAT writes l.IDs.ESPVolumeID over its zero.
	fsys, err := fat32.Create(file.New(f, false), g.espSize, g.espOffset, sectorSize, ESPLabel, true)
	if err != nil {
		return fmt.Errorf("creating FAT32: %w", err)
	}
	buf := make([]byte, min(fatCopyChunk, max(t.files, 1)))
	for _, e := range t.entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := "/" + e.rel
		if e.dir {
			if err := fsys.Mkdir(p); err != nil {
				return fmt.Errorf("creating %s: %w", p, err)
			}
			continue
		}
		if err := copyToFAT(fsys, p, e.src, buf); err != nil {
			return err
		}
	}
	epoch := time.Now()
	if l.Epoch != nil {
		epoch = *l.Epoch
	}
	return finishFAT(f, g.espOffset, l.IDs.ESPVolumeID, epoch)
}

// copyToFAT copies the file src to p in fsys, len(buf) bytes per write.
func copyToFAT(fsys *fat32.FileSystem, p, src string, buf []byte) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := fsys.OpenFile(p, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("creating %s: %w", p, err)
	}
	defer out.Close()
	for {
		n, err := io.ReadFull(in, buf)
		if n > 0 {
			if _, werr := out.Write(buf[:n]); werr != nil {
				return fmt.Errorf("writing %s from %s: %w", p, src, werr)
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return nil
		case err != nil:
			return err
		}
	}
}

// finishFAT sets in the FAT32 filesystem at offset start of f what go-diskfs v1.9.4 cannot be
// told, by editing its on-disk structures:
//   - the volume serial: go-diskfs takes it from the clock, or writes 0 in reproducible mode;
//   - the hidden sectors (sectors before the partition): go-diskfs writes 0, mkfs.fat the
//     partition's first LBA, which Windows and some firmware check;
//   - the times of every directory entry: go-diskfs stamps them with the clock, or with
//     $SOURCE_DATE_EPOCH read from the process environment (which a library must not set),
//     and offers no way to change the "." and ".." entries it writes in each directory;
//   - the ".." entry of a directory in the root directory, which must point to cluster 0
//     (go-diskfs writes the root's cluster, which fsck.fat reports as invalid);
//   - the free cluster count of the FS information sector, which go-diskfs leaves
//     "unknown" (fsck.fat reports it uninitialized).
//
// Both the boot sector and FS information sector and their backups are updated.
func finishFAT(f *os.File, start int64, volumeID uint32, t time.Time) error {
	bs := make([]byte, sectorSize)
	if _, err := f.ReadAt(bs, start); err != nil {
		return fmt.Errorf("reading the FAT boot sector: %w", err)
	}
	// Offsets of the FAT32 boot sector (Microsoft's FAT specification, "BPB").
	var (
		bytesPerSector = int64(binary.LittleEndian.Uint16(bs[11:13]))
		spc            = int64(bs[13])
		reserved       = int64(binary.LittleEndian.Uint16(bs[14:16]))
		fats           = int64(bs[16])
		fatSectors     = int64(binary.LittleEndian.Uint32(bs[36:40]))
		rootCluster    = binary.LittleEndian.Uint32(bs[44:48])
		backupSector   = int64(binary.LittleEndian.Uint16(bs[50:52]))
		fsInfoSector   = int64(binary.LittleEndian.Uint16(bs[48:50]))
		totalSectors   = int64(binary.LittleEndian.Uint32(bs[32:36]))
	)
	if bytesPerSector != sectorSize || spc == 0 || !bytes.Equal(bs[82:90], []byte("FAT32   ")) {
		return errors.New("finishing FAT32: not the boot sector go-diskfs writes")
	}
	for _, s := range []int64{0, backupSector} {
		if _, err := f.ReadAt(bs, start+s*sectorSize); err != nil {
			return fmt.Errorf("reading the FAT boot sector: %w", err)
		}
		binary.LittleEndian.PutUint32(bs[28:32], uint32(start/sectorSize)) // BPB_HiddSec
		binary.LittleEndian.PutUint32(bs[67:71], volumeID)                 // BS_VolID
		if _, err := f.WriteAt(bs, start+s*sectorSize); err != nil {
			return fmt.Errorf("writing the FAT boot sector: %w", err)
		}
	}

	fat := make([]byte, fatSectors*sectorSize)
	if _, err := f.ReadAt(fat, start+reserved*sectorSize); err != nil {
		return fmt.Errorf("reading the FAT: %w", err)
	}
	maxCluster := uint32(len(fat) / 4)
	dataStart := start + (reserved+fats*fatSectors)*sectorSize
	clusterBytes := spc * sectorSize
	clusters := (totalSectors - (reserved + fats*fatSectors)) / spc
	date, clock, tenths := fatTime(t)
	cluster := make([]byte, clusterBytes)
	var stamp func(dir, parent uint32) error
	stamp = func(dir, parent uint32) error {
		var subdirs []uint32
		// A directory is a chain of clusters; each FAT entry (28 bits) names the next one,
		// 0x0ffffff8 and above end the chain.
		for c, n := dir, uint32(0); c >= 2 && c < 0x0ffffff8; c = binary.LittleEndian.Uint32(fat[4*c:]) & 0x0fffffff {
			if c >= maxCluster || n > maxCluster {
				return fmt.Errorf("finishing FAT32: bad cluster chain from %d", dir)
			}
			n++
			off := dataStart + int64(c-2)*clusterBytes
			if _, err := f.ReadAt(cluster, off); err != nil {
				return fmt.Errorf("reading a FAT directory: %w", err)
			}
			end := false
			for i := 0; i < len(cluster) && !end; i += 32 {
				e := cluster[i : i+32]
				switch {
				case e[0] == 0x00: // no entries follow
					end = true
					continue
				case e[0] == 0xe5 || e[11]&0x3f == 0x0f: // deleted, or a part of a long name
					continue
				}
				e[13] = tenths
				binary.LittleEndian.PutUint16(e[14:16], clock) // creation
				binary.LittleEndian.PutUint16(e[16:18], date)
				binary.LittleEndian.PutUint16(e[18:20], date)  // last access
				binary.LittleEndian.PutUint16(e[22:24], clock) // last write
				binary.LittleEndian.PutUint16(e[24:26], date)
				switch {
				case bytes.Equal(e[0:11], []byte("..         ")):
					up := parent
					if up == rootCluster {
						up = 0 // the root directory, whatever its cluster
					}
					binary.LittleEndian.PutUint16(e[20:22], uint16(up>>16))
					binary.LittleEndian.PutUint16(e[26:28], uint16(up))
				case e[11]&0x10 != 0 && e[0] != '.': // a subdirectory (not ".")
					subdirs = append(subdirs, uint32(binary.LittleEndian.Uint16(e[20:22]))<<16|uint32(binary.LittleEndian.Uint16(e[26:28])))
				}
			}
			if _, err := f.WriteAt(cluster, off); err != nil {
				return fmt.Errorf("writing a FAT directory: %w", err)
			}
			if end {
				break
			}
		}
		for _, d := range subdirs {
			if err := stamp(d, dir); err != nil {
				return err
			}
		}
		return nil
	}
	if err := stamp(rootCluster, 0); err != nil {
		return err
	}

	// FS information sector (FSI_Free_Count at 488) and its backup, 6 sectors on.
	var free uint32
	for c := uint32(2); c < uint32(clusters)+2 && c < maxCluster; c++ {
		if binary.LittleEndian.Uint32(fat[4*c:])&0x0fffffff == 0 {
			free++
		}
	}
	for _, s := range []int64{fsInfoSector, backupSector + fsInfoSector} {
		if _, err := f.ReadAt(bs, start+s*sectorSize); err != nil {
			return fmt.Errorf("reading the FAT FS information sector: %w", err)
		}
		if string(bs[0:4]) != "RRaA" || string(bs[484:488]) != "rrAa" {
			return fmt.Errorf("finishing FAT32: no FS information sector at sector %d", s)
		}
		binary.LittleEndian.PutUint32(bs[488:492], free)
		if _, err := f.WriteAt(bs, start+s*sectorSize); err != nil {
			return fmt.Errorf("writing the FAT FS information sector: %w", err)
		}
	}
	return nil
}

// fatTime encodes t (UTC; FAT has no time zone) as a FAT date, time and 10 ms count, clamped
// to the range FAT can hold, 1980 to 2107.
func fatTime(t time.Time) (date, clock uint16, tenths byte) {
	t = t.UTC()
	if lo := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC); t.Before(lo) {
		t = lo
	}
	if hi := time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC); t.After(hi) {
		t = hi
	}
	date = uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	clock = uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	tenths = byte(t.Second()%2*100 + t.Nanosecond()/10_000_000)
	return date, clock, tenths
}

// writeRoot runs mkfs.ext4 -d to write the root tree as an ext4 filesystem at the root
// partition's offset in the disk file.
func writeRoot(ctx context.Context, mkfs, disk string, g geometry, l Layout, tree treeSize) error {
	ext := []string{
		"offset=" + strconv.FormatInt(g.rootOffset, 10),
		// The directory hash seed is random unless given; derive it from the UUID.
		"hash_seed=" + derivedUUID(l.IDs.RootFSUUID, "ext4-hash-seed"),
		// The partition is a hole of the sparse file: it reads as zeros, so neither the
		// inode tables nor the journal need zeroing now or at first boot, and discarding it
		// would only punch holes that are already there.
		"lazy_itable_init=1",
		"lazy_journal_init=1",
		"nodiscard",
	}
	// The root directory's owner is mke2fs's user unless given: the tree's root's owner.
	if fi, err := os.Stat(l.RootDir); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ext = append(ext, fmt.Sprintf("root_owner=%d:%d", st.Uid, st.Gid))
		}
	}
	if mke2fsAtLeast(mkfs, 1, 47) {
		// Also marks the inode tables zeroed, so the booted kernel's ext4lazyinit does not
		// write them (e2fsprogs 1.47.0 and later).
		ext = append(ext, "assume_storage_prezeroed=1")
	}
	args := []string{
		"-q",
		"-F", // the file is not a block device and starts with a partition table
		// mke2fs.conf's "default" usage type and inode size whatever the size: a root under
		// 512 MiB would otherwise be "small" (1 KiB blocks, 4 times the inodes), and the
		// filesystem is sized for growpart to grow, not for its first size.
		"-T", "default",
		"-I", strconv.Itoa(ext4InodeSize),
		"-b", strconv.Itoa(ext4BlockSize),
		"-L", l.RootLabel,
		"-U", l.IDs.RootFSUUID,
		"-d", l.RootDir,
		"-E", strings.Join(ext, ","),
	}
	if g.inodes > 0 {
		args = append(args, "-N", strconv.FormatInt(g.inodes, 10))
	}
	args = append(args, disk, strconv.FormatInt(g.rootSize/ext4BlockSize, 10))
	env := append(os.Environ(), "LC_ALL=C")
	if l.Epoch != nil {
		// The creation, mount and check times in the superblock, and lost+found's and the
		// root directory's times, come from the clock unless this is set.
		env = append(env, "E2FSPROGS_FAKE_TIME="+strconv.FormatInt(l.Epoch.Unix(), 10))
	}
	out, err := runHostTool(ctx, mkfs, env, args...)
	if err == nil {
		return nil
	}
	if ctx.Err() == nil && (strings.Contains(out, "Could not allocate") || strings.Contains(out, "No space left")) {
		return fmt.Errorf("a root filesystem of %s is too small for %s (%s of data and inodes, %d inodes): give a larger Size, or leave it 0 for content plus headroom: %w",
			formatSize(g.rootSize), l.RootDir, formatSize(tree.bytes()), tree.inodes, err)
	}
	return err
}

// Offsets in ext4's superblock, group descriptors and inodes (the kernel's
// Documentation/filesystems/ext4/), for settleExt4Times.
const (
	ext4SuperblockOffset = 1024
	ext4Magic            = 0xef53
	ext4Incompat64Bit    = 0x80
	ext4IncompatMetaBG   = 0x10
	ext4IncompatCsumSeed = 0x2000
	ext4ROCompatCsum     = 0x400 // metadata_csum
	ext4BGInodeUninit    = 0x1

	ext4InodeLinks      = 26
	ext4InodeATime      = 8
	ext4InodeCTime      = 12
	ext4InodeMTime      = 16
	ext4InodeGeneration = 100
	ext4InodeCsumLo     = 124
	ext4InodeExtraIsize = 128
	ext4InodeCsumHi     = 130
	ext4InodeCTimeExtra = 132
	ext4InodeMTimeExtra = 136
	ext4InodeATimeExtra = 140
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the CRC32c ext4 computes (the kernel's crc32c_le): seeded with seed, without
// the final inversion that hash/crc32 adds.
func crc32c(seed uint32, p []byte) uint32 { return ^crc32.Update(^seed, castagnoli, p) }

// settleExt4Times sets the access and change time of every inode of the ext4 filesystem at
// offset off of f to its modification time, and updates the inode's checksum. mke2fs -d
// copies all three times from the tree, and the tree's atimes move when it reads the files
// (so a second run on the same tree would differ) and its ctimes are when BuildKit exported
// it; mtimes are the content's. Changing them in place is the only way: mke2fs has no option
// for it, and changing them in the tree would set the ctimes to now.
//
// Each inode's checksum is verified before it is changed, so a layout this code does not
// know is reported, not corrupted.
func settleExt4Times(f *os.File, off int64) error {
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, off+ext4SuperblockOffset); err != nil {
		return fmt.Errorf("reading the ext4 superblock: %w", err)
	}
	le16 := func(b []byte, o int) uint32 { return uint32(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(b []byte, o int) uint32 { return binary.LittleEndian.Uint32(b[o:]) }
	if le16(sb, 56) != ext4Magic {
		return errors.New("settling inode times: no ext4 superblock")
	}
	var (
		blocks         = int64(le32(sb, 4))
		firstDataBlock = int64(le32(sb, 20))
		blockSize      = int64(1024) << le32(sb, 24)
		blocksPerGroup = int64(le32(sb, 32))
		inodesPerGroup = int64(le32(sb, 40))
		inodeSize      = int64(le16(sb, 88))
		incompat       = le32(sb, 96)
		roCompat       = le32(sb, 100)
		descSize       = int64(32)
	)
	if incompat&ext4Incompat64Bit != 0 {
		blocks |= int64(le32(sb, 336)) << 32
		descSize = int64(le16(sb, 254))
	}
	if incompat&ext4IncompatMetaBG != 0 || inodeSize < 128 || blocksPerGroup == 0 {
		return errors.New("settling inode times: an ext4 layout mkfs.ext4 -d does not make here (meta_bg)")
	}
	csum := roCompat&ext4ROCompatCsum != 0
	var seed uint32
	if incompat&ext4IncompatCsumSeed != 0 {
		seed = le32(sb, 624)
	} else {
		seed = crc32c(^uint32(0), sb[104:120]) // the UUID
	}
	// inodeCsum is the inode's checksum: over its number, generation and bytes with the
	// checksum fields taken as zero.
	inodeCsum := func(ino uint32, b []byte, hasHi bool) uint32 {
		var n [4]byte
		binary.LittleEndian.PutUint32(n[:], ino)
		c := crc32c(seed, n[:])
		c = crc32c(c, b[ext4InodeGeneration:ext4InodeGeneration+4])
		lo, hi := b[ext4InodeCsumLo], b[ext4InodeCsumLo+1]
		b[ext4InodeCsumLo], b[ext4InodeCsumLo+1] = 0, 0
		var hlo, hhi byte
		if hasHi {
			hlo, hhi = b[ext4InodeCsumHi], b[ext4InodeCsumHi+1]
			b[ext4InodeCsumHi], b[ext4InodeCsumHi+1] = 0, 0
		}
		c = crc32c(c, b)
		b[ext4InodeCsumLo], b[ext4InodeCsumLo+1] = lo, hi
		if hasHi {
			b[ext4InodeCsumHi], b[ext4InodeCsumHi+1] = hlo, hhi
		}
		return c
	}

	groups := (blocks - firstDataBlock + blocksPerGroup - 1) / blocksPerGroup
	gdt := make([]byte, groups*descSize)
	if _, err := f.ReadAt(gdt, off+(firstDataBlock+1)*blockSize); err != nil {
		return fmt.Errorf("reading the ext4 group descriptors: %w", err)
	}
	for g := int64(0); g < groups; g++ {
		d := gdt[g*descSize : (g+1)*descSize]
		if le16(d, 18)&ext4BGInodeUninit != 0 {
			continue
		}
		table := int64(le32(d, 8))
		unused := int64(le16(d, 28))
		if descSize >= 64 {
			table |= int64(le32(d, 40)) << 32
			unused |= int64(le16(d, 50)) << 16
		}
		used := inodesPerGroup - unused
		if used <= 0 {
			continue
		}
		buf := make([]byte, used*inodeSize)
		if _, err := f.ReadAt(buf, off+table*blockSize); err != nil {
			return fmt.Errorf("reading the ext4 inode table of group %d: %w", g, err)
		}
		for i := int64(0); i < used; i++ {
			b := buf[i*inodeSize : (i+1)*inodeSize]
			ino := uint32(g*inodesPerGroup + i + 1)
			if le16(b, ext4InodeLinks) == 0 {
				continue // free, or a reserved inode mke2fs leaves unlinked
			}
			extra := int64(0)
			if inodeSize > 128 {
				extra = int64(le16(b, ext4InodeExtraIsize))
			}
			hasHi := extra >= 4
			if csum {
				want := le16(b, ext4InodeCsumLo)
				got := inodeCsum(ino, b, hasHi)
				if hasHi {
					want |= le16(b, ext4InodeCsumHi) << 16
				} else {
					got &= 0xffff
				}
				if got != want {
					return fmt.Errorf("settling inode times: inode %d's checksum is %#x, computed %#x: an inode layout this code does not know", ino, want, got)
				}
			}
			copy(b[ext4InodeATime:ext4InodeATime+4], b[ext4InodeMTime:ext4InodeMTime+4])
			copy(b[ext4InodeCTime:ext4InodeCTime+4], b[ext4InodeMTime:ext4InodeMTime+4])
			if extra >= ext4InodeATimeExtra+4-128 { // nanoseconds and epoch bits
				copy(b[ext4InodeATimeExtra:ext4InodeATimeExtra+4], b[ext4InodeMTimeExtra:ext4InodeMTimeExtra+4])
				copy(b[ext4InodeCTimeExtra:ext4InodeCTimeExtra+4], b[ext4InodeMTimeExtra:ext4InodeMTimeExtra+4])
			}
			if csum {
				c := inodeCsum(ino, b, hasHi)
				binary.LittleEndian.PutUint16(b[ext4InodeCsumLo:], uint16(c))
				if hasHi {
					binary.LittleEndian.PutUint16(b[ext4InodeCsumHi:], uint16(c>>16))
				}
			}
		}
		if _, err := f.WriteAt(buf, off+table*blockSize); err != nil {
			return fmt.Errorf("writing the ext4 inode table of group %d: %w", g, err)
		}
	}
	return nil
}

var mke2fsVersion = regexp.MustCompile(`mke2fs (\d+)\.(\d+)`)

// mke2fsAtLeast reports whether mkfs (mke2fs) is version major.minor or later.
func mke2fsAtLeast(mkfs string, major, minor int) bool {
	out, _ := exec.Command(mkfs, "-V").CombinedOutput()
	m := mke2fsVersion.FindSubmatch(out)
	if m == nil {
		return false
	}
	maj, _ := strconv.Atoi(string(m[1]))
	mnr, _ := strconv.Atoi(string(m[2]))
	return maj > major || maj == major && mnr >= minor
}

// sbinDirs are where hostTool looks after PATH: mkfs.ext4 is there, and not every user's
// PATH has them. A variable for tests.
var sbinDirs = []string{"/usr/sbin", "/sbin"}

// hostTool finds the program name on PATH or in sbinDirs, or says which apt package
// installs it.
func hostTool(name, aptPackage string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range sbinDirs {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed (not on PATH nor in %s): install the %s package (apt-get install %s)",
		name, strings.Join(sbinDirs, " or "), aptPackage, aptPackage)
}

// toolTailLines is how many of a failed program's last output lines an error quotes.
const toolTailLines = 20

// runHostTool runs tool with args (and env, nil for the process's) and returns its output,
// standard output and error together. A failure's error names the program and its arguments
// and quotes the last lines of its output.
func runHostTool(ctx context.Context, tool string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return out.String(), nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = ctxErr
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) > toolTailLines {
		lines = lines[len(lines)-toolTailLines:]
	}
	return out.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(tool), strings.Join(args, " "), err, strings.Join(lines, "\n"))
}

// roundUp rounds n up to a multiple of to.
func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// formatSize writes n bytes in binary units, rounded up to a tenth so a size that is needed
// is never understated.
func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			tenths := (n*10 + u.size - 1) / u.size
			if tenths%10 == 0 {
				return fmt.Sprintf("%d %s", tenths/10, u.name)
			}
			return fmt.Sprintf("%d.%d %s", tenths/10, tenths%10, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
