package disk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"

	"github.com/gpuforge/gpuforge/internal/testenv"
)

// fixtureEpoch is an even second: FAT stores times in 2-second steps.
var fixtureEpoch = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// fixtureMTime is the modification time of /etc/hostname in the fixture's tree.
var fixtureMTime = time.Unix(1000000000, 0)

// diskFixture is a root tree and an ESP directory to assemble.
type diskFixture struct {
	root, esp string
	espFiles  map[string][]byte // ESP path (slash-separated) to content
	uid, gid  int               // owner of /usr/bin/tool in the tree
	xattr     bool              // whether /etc/hostname carries user.gpuforge
}

// newDiskFixture builds a small root tree (files, a subdirectory, an executable owned by another
// user, a symlink, a hard link, an empty directory, an extended attribute) and an ESP with a
// boot loader, a loader entry, a kernel and an initrd, in t.TempDir().
func newDiskFixture(t *testing.T) *diskFixture {
	t.Helper()
	dir := t.TempDir()
	fx := &diskFixture{root: filepath.Join(dir, "rootfs"), esp: filepath.Join(dir, "esp")}
	write := func(p string, data []byte, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(fx.root, 0o755))
	must(os.Chmod(fx.root, 0o755))
	write(filepath.Join(fx.root, "etc/hostname"), []byte("gpuforge-test\n"), 0o644)
	write(filepath.Join(fx.root, "etc/os-release"), []byte("ID=debian\nVERSION_ID=\"12\"\n"), 0o644)
	write(filepath.Join(fx.root, "usr/bin/tool"), []byte("#!/bin/sh\necho tool\n"), 0o755)
	write(filepath.Join(fx.root, "usr/lib/big.bin"), pseudoRandom(1, 300<<10), 0o600)
	must(os.MkdirAll(filepath.Join(fx.root, "var/empty"), 0o711))
	must(os.Chmod(filepath.Join(fx.root, "var/empty"), 0o711))
	must(os.MkdirAll(filepath.Join(fx.root, "sbin"), 0o755))
	must(os.Symlink("../usr/bin/tool", filepath.Join(fx.root, "sbin/init")))
	must(os.Link(filepath.Join(fx.root, "usr/bin/tool"), filepath.Join(fx.root, "usr/bin/tool-again")))
	fx.uid, fx.gid = os.Getuid(), os.Getgid()
	if os.Geteuid() == 0 {
		fx.uid, fx.gid = 1234, 2345
		must(os.Lchown(filepath.Join(fx.root, "usr/bin/tool"), fx.uid, fx.gid))
		// The root directory's owner is copied too, though mke2fs -d would make it its own.
		must(os.Lchown(fx.root, 4321, 5432))
	}
	// Times of their own: an mtime to keep, an atime and a ctime (now) that differ from it.
	must(os.Chtimes(filepath.Join(fx.root, "etc/hostname"), time.Unix(1577836800, 0), fixtureMTime))
	fx.xattr = unix.Setxattr(filepath.Join(fx.root, "etc/hostname"), "user.gpuforge", []byte("yes"), 0) == nil

	fx.espFiles = map[string][]byte{
		"EFI/BOOT/BOOTX64.EFI":  pseudoRandom(2, 150<<10),
		"loader/entries/x.conf": []byte("title gpuforge\nlinux /vmlinuz\ninitrd /initrd.img\n"),
		"vmlinuz":               pseudoRandom(3, 1<<20),
		"initrd.img":            pseudoRandom(4, 3<<20+123),
		"loader/loader.conf":    []byte("default x.conf\n"),
	}
	for p, data := range fx.espFiles {
		write(filepath.Join(fx.esp, filepath.FromSlash(p)), data, 0o644)
	}
	// FAT has no symlinks: a symlink to a file is copied as the file.
	must(os.Symlink("vmlinuz", filepath.Join(fx.esp, "vmlinuz-link")))
	fx.espFiles["vmlinuz-link"] = fx.espFiles["vmlinuz"]
	return fx
}

// pseudoRandom returns n bytes that depend only on seed.
func pseudoRandom(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// assemble assembles fx with the test epoch and IDs of the name "test" into a temporary
// directory.
func (fx *diskFixture) assemble(t *testing.T, l Layout) *Disk {
	t.Helper()
	testenv.Tool(t, "mkfs.ext4")
	if l.RootDir == "" {
		l.RootDir = fx.root
	}
	if l.ESPDir == "" {
		l.ESPDir = fx.esp
	}
	if l.Epoch == nil {
		l.Epoch = &fixtureEpoch
	}
	if l.IDs.isZero() {
		l.IDs = NewIDs("test", l.Epoch)
	}
	d, err := Assemble(context.Background(), filepath.Join(t.TempDir(), "disk.raw"), l)
	if err != nil {
		t.Fatalf("Assemble: %v", err)
	}
	return d
}

func TestAssembleGPT(t *testing.T) {
	fx := newDiskFixture(t)
	d := fx.assemble(t, Layout{})
	f, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size() != d.Size || d.Size%oneMiB != 0 {
		t.Errorf("file size %d, Disk.Size %d: want equal and a multiple of 1 MiB", fi.Size(), d.Size)
	}

	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	if mbr[446+4] != 0xee || mbr[510] != 0x55 || mbr[511] != 0xaa {
		t.Errorf("no protective MBR: partition type %#x, signature % x", mbr[446+4], mbr[510:512])
	}

	table, err := gpt.Read(f, 512, 512)
	if err != nil {
		t.Fatalf("reading the GPT: %v", err)
	}
	if table.RecoveredFromBackup {
		t.Error("the primary GPT did not verify; go-diskfs read the backup")
	}
	if !strings.EqualFold(table.GUID, d.IDs.DiskGUID) {
		t.Errorf("disk GUID %s, want %s", table.GUID, d.IDs.DiskGUID)
	}
	if len(table.Partitions) != 2 {
		t.Fatalf("%d partitions, want 2: %+v", len(table.Partitions), table.Partitions)
	}
	for i, want := range []struct {
		index      int
		typ        gpt.Type
		name, guid string
		off, size  int64
	}{
		{1, gpt.EFISystemPartition, "ESP", d.IDs.ESPPartGUID, d.ESPOffset, d.ESPSize},
		{2, gpt.LinuxFilesystem, "root", d.IDs.RootPartGUID, d.RootOffset, d.RootSize},
	} {
		p := table.Partitions[i]
		if p.Index != want.index || !strings.EqualFold(string(p.Type), string(want.typ)) || p.Name != want.name ||
			!strings.EqualFold(p.GUID, want.guid) {
			t.Errorf("partition %d: index %d type %s name %q GUID %s; want %d %s %q %s",
				i+1, p.Index, p.Type, p.Name, p.GUID, want.index, want.typ, want.name, want.guid)
		}
		start, size := int64(p.Start)*512, int64(p.End-p.Start+1)*512
		if start != want.off || size != want.size {
			t.Errorf("partition %d at %d, %d bytes; Disk says %d, %d bytes", i+1, start, size, want.off, want.size)
		}
		if start%oneMiB != 0 || size%oneMiB != 0 {
			t.Errorf("partition %d at %d, %d bytes: not 1 MiB aligned", i+1, start, size)
		}
	}
	esp, root := table.Partitions[0], table.Partitions[1]
	if root.Start <= esp.End {
		t.Errorf("root (sectors %d-%d) does not come after the ESP (%d-%d)", root.Start, root.End, esp.Start, esp.End)
	}
	// The root partition ends at the last 1 MiB boundary before the backup GPT (33 sectors).
	lastUsable := uint64(d.Size/512) - 34
	if root.End > lastUsable || lastUsable-root.End > uint64(oneMiB/512) {
		t.Errorf("root ends at sector %d, the last usable is %d: want within 1 MiB of it", root.End, lastUsable)
	}
	if d.ESPSize != DefaultESPSize {
		t.Errorf("ESP of %d bytes, want the default %d", d.ESPSize, DefaultESPSize)
	}
}

func TestAssembleESP(t *testing.T) {
	fx := newDiskFixture(t)
	d := fx.assemble(t, Layout{})
	f, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := fat32.Read(file.New(f, true), d.ESPSize, d.ESPOffset, 512)
	if err != nil {
		t.Fatalf("reading the ESP as FAT32: %v", err)
	}
	if got := strings.TrimSpace(fsys.Label()); got != "ESP" {
		t.Errorf("label %q, want ESP", got)
	}
	for p, want := range fx.espFiles {
		got, err := fsys.ReadFile("/" + p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes differ from the %d written", p, len(got), len(want))
		}
		fi, err := fsys.Stat(p) // io/fs paths: no leading slash
		if err != nil {
			t.Errorf("stat %s: %v", p, err)
		} else if !fi.ModTime().Equal(fixtureEpoch) {
			t.Errorf("%s: modified %v, want the epoch %v", p, fi.ModTime(), fixtureEpoch)
		}
	}
	// The boot sector: volume serial from the IDs, hidden sectors = the partition's LBA.
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, d.ESPOffset); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint32(bs[67:71]); got != d.IDs.ESPVolumeID {
		t.Errorf("volume serial %08x, want %08x", got, d.IDs.ESPVolumeID)
	}
	if got := binary.LittleEndian.Uint32(bs[28:32]); int64(got) != d.ESPOffset/512 {
		t.Errorf("hidden sectors %d, want %d", got, d.ESPOffset/512)
	}
	if got := string(bs[71:82]); got != "ESP        " {
		t.Errorf("boot sector label %q, want \"ESP        \"", got)
	}

	// dosfstools' checker, when installed, must find nothing to fix (dates, ".." entries,
	// cluster chains, the backup boot sector).
	fsck, err := exec.LookPath("fsck.fat")
	if err != nil {
		t.Log("fsck.fat not installed (dosfstools); skipped its check")
		return
	}
	part := extractRange(t, f, d.ESPOffset, d.ESPSize)
	if out, err := exec.Command(fsck, "-n", "-v", part).CombinedOutput(); err != nil {
		t.Errorf("fsck.fat -n: %v\n%s", err, out)
	}
}

// extractRange copies size bytes at off of f to a sparse file of its own and returns its path.
func extractRange(t *testing.T, f *os.File, off, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "part")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(size); err != nil {
		t.Fatal(err)
	}
	err = forEachBlock(f, off, off+size, func(o int64, b []byte) error {
		if isZero(b) {
			return nil
		}
		_, err := out.WriteAt(b, o-off)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// e2 runs an e2fsprogs program on the root filesystem of d (the FILE?offset=N syntax of
// unix_io) and returns its standard output.
func e2(t *testing.T, d *Disk, prog string, args ...string) string {
	t.Helper()
	path := testenv.Tool(t, prog)
	args = append(args, d.Path+"?offset="+strconv.FormatInt(d.RootOffset, 10))
	cmd := exec.Command(path, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", prog, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

func TestAssembleRootExt4(t *testing.T) {
	fx := newDiskFixture(t)
	d := fx.assemble(t, Layout{RootLabel: "gpuroot"})

	e2(t, d, "e2fsck", "-fn")

	sb := e2(t, d, "dumpe2fs", "-h")
	for _, want := range []string{
		"Filesystem UUID:          " + d.IDs.RootFSUUID,
		"Filesystem volume name:   gpuroot",
		"Block size:               4096",
		"Filesystem created:       " + fixtureEpoch.Local().Format("Mon Jan _2 15:04:05 2006"),
		"Directory Hash Seed:      " + derivedUUID(d.IDs.RootFSUUID, "ext4-hash-seed"),
	} {
		if !strings.Contains(sb, want) {
			t.Errorf("dumpe2fs -h lacks %q:\n%s", want, sb)
		}
	}

	// The filesystem fills its partition, but for a last block group too small for its own
	// inode table, which mke2fs leaves out (8224 inodes of 256 bytes: 514 blocks).
	m := regexp.MustCompile(`Block count: +(\d+)`).FindStringSubmatch(sb)
	if m == nil {
		t.Fatalf("dumpe2fs -h gives no block count:\n%s", sb)
	}
	if blocks, _ := strconv.ParseInt(m[1], 10, 64); blocks > d.RootSize/4096 || blocks < d.RootSize/4096-600 {
		t.Errorf("%d blocks of 4 KiB in a root partition of %d", blocks, d.RootSize/4096)
	}

	for p, want := range map[string]string{
		"/etc/hostname":       "gpuforge-test\n",
		"/usr/bin/tool":       "#!/bin/sh\necho tool\n",
		"/usr/bin/tool-again": "#!/bin/sh\necho tool\n",
		"/usr/lib/big.bin":    string(pseudoRandom(1, 300<<10)),
		"/etc/os-release":     "ID=debian\nVERSION_ID=\"12\"\n",
	} {
		if got := e2(t, d, "debugfs", "-R", "cat "+p); got != want {
			t.Errorf("%s holds %d bytes, want the %d of the tree", p, len(got), len(want))
		}
	}

	stat := func(p string) string { return e2(t, d, "debugfs", "-R", "stat "+p) }
	tool := stat("/usr/bin/tool")
	for _, re := range []string{
		`Type: regular\s+Mode:\s+0755`,
		`User:\s+` + strconv.Itoa(fx.uid) + `\s+Group:\s+` + strconv.Itoa(fx.gid) + `\s`,
		`Links: 2`,
	} {
		if !regexp.MustCompile(re).MatchString(tool) {
			t.Errorf("stat /usr/bin/tool does not match %s:\n%s", re, tool)
		}
	}
	rootUser := `User:\s+` + strconv.Itoa(os.Getuid()) + `\s+Group:\s+` + strconv.Itoa(os.Getgid()) + `\s`
	if os.Geteuid() == 0 {
		rootUser = `User:\s+4321\s+Group:\s+5432\s`
	}
	if got := stat("/"); !regexp.MustCompile(rootUser).MatchString(got) {
		t.Errorf("/ does not match %s:\n%s", rootUser, got)
	}
	if got := stat("/usr/lib/big.bin"); !regexp.MustCompile(`Mode:\s+0600`).MatchString(got) {
		t.Errorf("/usr/lib/big.bin is not mode 0600:\n%s", got)
	}
	if got := stat("/var/empty"); !regexp.MustCompile(`Type: directory\s+Mode:\s+0711`).MatchString(got) {
		t.Errorf("/var/empty is not a directory of mode 0711:\n%s", got)
	}
	if got := stat("/sbin/init"); !strings.Contains(got, `Fast link dest: "../usr/bin/tool"`) {
		t.Errorf("/sbin/init is not a symlink to ../usr/bin/tool:\n%s", got)
	}
	// Access and change times are the modification time (settleExt4Times).
	times := regexp.MustCompile(`(?m)^ *([acm])time: (0x[0-9a-f]+:[0-9a-f]+)`)
	for _, p := range []string{"/etc/hostname", "/usr/bin/tool", "/sbin/init", "/var/empty", "/"} {
		got := map[string]string{}
		st := stat(p)
		for _, m := range times.FindAllStringSubmatch(st, -1) {
			got[m[1]] = m[2]
		}
		if got["m"] == "" || got["a"] != got["m"] || got["c"] != got["m"] {
			t.Errorf("%s: atime %s, ctime %s, mtime %s: want all the mtime\n%s", p, got["a"], got["c"], got["m"], st)
		}
		if want := fmt.Sprintf("%#x:00000000", fixtureMTime.Unix()); p == "/etc/hostname" && got["m"] != want {
			t.Errorf("/etc/hostname: mtime %s, want the tree's %s", got["m"], want)
		}
	}
	ino := regexp.MustCompile(`Inode: (\d+)`)
	if a, b := ino.FindString(tool), ino.FindString(stat("/usr/bin/tool-again")); a != b {
		t.Errorf("the hard links /usr/bin/tool and /usr/bin/tool-again are %s and %s", a, b)
	}
	if fx.xattr {
		if got := e2(t, d, "debugfs", "-R", "ea_get /etc/hostname user.gpuforge"); !strings.Contains(got, "yes") {
			t.Errorf("/etc/hostname lost its extended attribute user.gpuforge: %q", got)
		}
	} else {
		t.Log("the temporary directory's filesystem takes no user extended attributes; not checked")
	}
}

func TestAssembleReproducible(t *testing.T) {
	fx := newDiskFixture(t)
	sum := func(d *Disk) [32]byte {
		t.Helper()
		sum, err := sparseSum(d.Path)
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	// Between the two runs the clock moves on a second and $SOURCE_DATE_EPOCH (which
	// go-diskfs reads) changes: a time taken from either would show.
	// Reading the tree moves its atimes, and touching an atime moves the ctime: neither may
	// show either.
	t.Setenv("SOURCE_DATE_EPOCH", "1000000000")
	a := fx.assemble(t, Layout{})
	time.Sleep(1100 * time.Millisecond)
	t.Setenv("SOURCE_DATE_EPOCH", "2000000000")
	ts := []unix.Timespec{unix.NsecToTimespec(time.Now().UnixNano()), {Nsec: unix.UTIME_OMIT}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(fx.root, "etc/hostname"), ts, 0); err != nil {
		t.Fatal(err)
	}
	b := fx.assemble(t, Layout{})
	if sum(a) != sum(b) {
		t.Errorf("two disks of the same tree, name and epoch differ")
	}

	later := fixtureEpoch.Add(time.Hour)
	c := fx.assemble(t, Layout{Epoch: &later})
	if c.IDs.RootFSUUID == a.IDs.RootFSUUID || c.IDs.DiskGUID == a.IDs.DiskGUID {
		t.Errorf("epochs %v and %v gave the same IDs %+v", fixtureEpoch, later, a.IDs)
	}
	if got := e2(t, c, "dumpe2fs", "-h"); !strings.Contains(got, c.IDs.RootFSUUID) {
		t.Errorf("the disk of the later epoch lacks its UUID %s:\n%s", c.IDs.RootFSUUID, got)
	}
	if sum(a) == sum(c) {
		t.Error("disks of different epochs are identical")
	}
}

// sparseSum is a sha256 of the file path's size and the offsets and contents of its non-zero
// 4 KiB blocks: two files have the same sum exactly when they have the same bytes, but the
// holes of a sparse disk are not read.
func sparseSum(path string) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	binary.Write(h, binary.LittleEndian, fi.Size())
	err = forEachBlock(f, 0, -1, func(off int64, b []byte) error {
		if !isZero(b) {
			binary.Write(h, binary.LittleEndian, off)
			h.Write(b)
		}
		return nil
	})
	return [32]byte(h.Sum(nil)), err
}

func TestAssembleSparse(t *testing.T) {
	fx := newDiskFixture(t)
	d := fx.assemble(t, Layout{})
	nz, err := NonZeroBytes(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("size %d, allocated %d, non-zero %d", d.Size, d.Allocated, nz)
	if float64(d.Allocated) > 1.05*float64(nz) {
		t.Errorf("%d bytes allocated for %d bytes of non-zero blocks: more than 5 %% written zeros", d.Allocated, nz)
	}
	if nz < 4<<20 { // the ESP's files alone are over 4 MiB
		t.Errorf("only %d non-zero bytes", nz)
	}
	if d.Allocated > d.Size/10 {
		t.Errorf("%d of %d bytes allocated: not sparse", d.Allocated, d.Size)
	}
	got, err := allocatedBytes(d.Path)
	if err != nil || got != d.Allocated {
		t.Errorf("Disk.Allocated %d, the file's %d (%v)", d.Allocated, got, err)
	}
}

func TestAssembleSizeTooSmall(t *testing.T) {
	fx := newDiskFixture(t)
	// 40 MiB of data that no filesystem can make sparse.
	if err := os.WriteFile(filepath.Join(fx.root, "usr/lib/data"), pseudoRandom(5, 40<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Tool(t, "mkfs.ext4")
	out := filepath.Join(t.TempDir(), "disk.raw")
	l := Layout{RootDir: fx.root, ESPDir: fx.esp, ESPSize: 64 * oneMiB, Size: 100 * oneMiB, Epoch: &fixtureEpoch}
	_, err := Assemble(context.Background(), out, l)
	if err == nil {
		t.Fatal("Assemble of 40 MiB into a 100 MiB disk with a 64 MiB ESP succeeded")
	}
	m := regexp.MustCompile(`the disk needs at least .* \((\d+) bytes\)`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("the error does not say the size needed: %v", err)
	}
	if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a failed Assemble left %s (%v)", out, serr)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*.tmp")); len(left) > 0 {
		t.Errorf("a failed Assemble left %v", left)
	}
	// The size named is enough.
	l.Size, _ = strconv.ParseInt(m[1], 10, 64)
	d, err := Assemble(context.Background(), out, l)
	if err != nil {
		t.Fatalf("Assemble with the size the error named (%d): %v", l.Size, err)
	}
	e2(t, d, "e2fsck", "-fn")
}

func TestAssembleESPTooBig(t *testing.T) {
	fx := newDiskFixture(t)
	if err := os.WriteFile(filepath.Join(fx.esp, "initrd-huge.img"), pseudoRandom(6, 50<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Tool(t, "mkfs.ext4")
	l := Layout{RootDir: fx.root, ESPDir: fx.esp, ESPSize: 48 * oneMiB, Epoch: &fixtureEpoch}
	_, err := Assemble(context.Background(), filepath.Join(t.TempDir(), "disk.raw"), l)
	if err == nil {
		t.Fatal("Assemble of a 54 MiB ESP directory into a 48 MiB ESP succeeded")
	}
	for _, want := range []string{fx.esp, "do not fit an ESP of 48 MiB", "make ESPSize at least"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// An ESP too small to be FAT32 at all.
	l.ESPSize = 16 * oneMiB
	if _, err := Assemble(context.Background(), filepath.Join(t.TempDir(), "disk.raw"), l); err == nil ||
		!strings.Contains(err.Error(), "too small for FAT32") {
		t.Errorf("a 16 MiB ESP: %v, want too small for FAT32", err)
	}
}

func TestAssembleDefaults(t *testing.T) {
	fx := newDiskFixture(t)
	testenv.Tool(t, "mkfs.ext4")
	d, err := Assemble(context.Background(), filepath.Join(t.TempDir(), "disk.raw"), Layout{RootDir: fx.root, ESPDir: fx.esp})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.IDs.validate(); err != nil {
		t.Errorf("IDs made without an epoch: %v", err)
	}
	if d.ESPSize != DefaultESPSize {
		t.Errorf("ESP of %d bytes, want %d", d.ESPSize, DefaultESPSize)
	}
	// Content + 25 % + 256 MiB, 1 MiB aligned: for a tree of under 1 MiB, 257 MiB.
	if d.RootSize != 257*oneMiB {
		t.Errorf("root of %d bytes, want 257 MiB", d.RootSize)
	}
	sb := e2(t, d, "dumpe2fs", "-h")
	if !strings.Contains(sb, "Filesystem volume name:   root\n") || !strings.Contains(sb, d.IDs.RootFSUUID) {
		t.Errorf("want label root and UUID %s:\n%s", d.IDs.RootFSUUID, sb)
	}
	e2(t, d, "e2fsck", "-fn")

	// A symlink to a directory cannot be copied to FAT.
	if err := os.Symlink("EFI", filepath.Join(fx.esp, "efi-link")); err != nil {
		t.Fatal(err)
	}
	_, err = Assemble(context.Background(), filepath.Join(t.TempDir(), "disk.raw"), Layout{RootDir: fx.root, ESPDir: fx.esp})
	if err == nil || !strings.Contains(err.Error(), "efi-link") {
		t.Errorf("an ESP with a symlink to a directory: %v, want an error naming it", err)
	}
}

func TestAssembleMissingMkfs(t *testing.T) {
	fx := newDiskFixture(t)
	t.Setenv("PATH", t.TempDir())
	saved := sbinDirs
	sbinDirs = []string{t.TempDir()}
	t.Cleanup(func() { sbinDirs = saved })
	_, err := Assemble(context.Background(), filepath.Join(t.TempDir(), "disk.raw"), Layout{RootDir: fx.root, ESPDir: fx.esp})
	if err == nil || !strings.Contains(err.Error(), "mkfs.ext4") || !strings.Contains(err.Error(), "e2fsprogs") {
		t.Errorf("Assemble without mkfs.ext4: %v, want an error naming mkfs.ext4 and e2fsprogs", err)
	}
}

func TestNewIDs(t *testing.T) {
	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	check := func(ids IDs) {
		t.Helper()
		for _, u := range []string{ids.DiskGUID, ids.ESPPartGUID, ids.RootPartGUID, ids.RootFSUUID} {
			if !uuidRE.MatchString(u) {
				t.Errorf("%q is not a canonical lower-case version 4 UUID", u)
			}
		}
		seen := map[string]bool{}
		for _, u := range []string{ids.DiskGUID, ids.ESPPartGUID, ids.RootPartGUID, ids.RootFSUUID} {
			if seen[u] {
				t.Errorf("%s appears twice in %+v", u, ids)
			}
			seen[u] = true
		}
	}
	a := NewIDs("gpu", &fixtureEpoch)
	check(a)
	if b := NewIDs("gpu", &fixtureEpoch); a != b {
		t.Errorf("same name and epoch: %+v and %+v", a, b)
	}
	later := fixtureEpoch.Add(time.Second)
	for _, other := range []IDs{NewIDs("gpu2", &fixtureEpoch), NewIDs("gpu", &later), NewIDs("gpu", nil)} {
		check(other)
		if other.DiskGUID == a.DiskGUID || other.RootFSUUID == a.RootFSUUID || other.ESPVolumeID == a.ESPVolumeID {
			t.Errorf("%+v shares an ID with %+v", other, a)
		}
	}
	if r1, r2 := NewIDs("gpu", nil), NewIDs("gpu", nil); r1 == r2 {
		t.Error("two IDs without an epoch are equal")
	}
	// The same instant in another zone is the same epoch.
	inZone := fixtureEpoch.In(time.FixedZone("X", 3600))
	if b := NewIDs("gpu", &inZone); a != b {
		t.Errorf("the epoch in another time zone gave other IDs")
	}
}
