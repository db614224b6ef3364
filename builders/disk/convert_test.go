package disk

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpuforge/gpuforge/internal/testenv"
)

// convertFixture assembles a small disk and returns it with the path of qemu-img.
func convertFixture(t *testing.T) (*Disk, string) {
	t.Helper()
	qemuImg := testenv.Tool(t, "qemu-img")
	return newDiskFixture(t).assemble(t, Layout{}), qemuImg
}

// qemuImg runs qemu-img and returns its standard output; it fails the test when qemu-img fails.
func qemuImg(t *testing.T, path string, args ...string) string {
	t.Helper()
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// imageInfo is the part of `qemu-img info --output=json` the tests read.
type imageInfo struct {
	Format         string `json:"format"`
	VirtualSize    int64  `json:"virtual-size"`
	FormatSpecific struct {
		Type string `json:"type"`
		Data struct {
			Compat     string `json:"compat"`
			CreateType string `json:"create-type"`
		} `json:"data"`
	} `json:"format-specific"`
}

func qemuInfo(t *testing.T, qemu, format, path string) imageInfo {
	t.Helper()
	var i imageInfo
	if err := json.Unmarshal([]byte(qemuImg(t, qemu, "info", "-f", format, "--output=json", path)), &i); err != nil {
		t.Fatal(err)
	}
	return i
}

// qemuCompare fails the test unless qemu-img compare finds the raw disk and the image identical.
func qemuCompare(t *testing.T, qemu, raw, format, image string) {
	t.Helper()
	if out := qemuImg(t, qemu, "compare", "-f", "raw", "-F", format, raw, image); !strings.Contains(out, "Images are identical") {
		t.Errorf("qemu-img compare %s %s: %s", raw, image, out)
	}
}

func TestConvertQcow2(t *testing.T) {
	d, qemu := convertFixture(t)
	out := filepath.Join(t.TempDir(), "disk.qcow2")
	if err := Convert(context.Background(), d.Path, "qcow2", out); err != nil {
		t.Fatal(err)
	}
	if err := CheckQcow2(context.Background(), out); err != nil {
		t.Errorf("CheckQcow2 of a converted disk: %v", err)
	}
	i := qemuInfo(t, qemu, "qcow2", out)
	if i.Format != "qcow2" || i.FormatSpecific.Data.Compat != "1.1" || i.VirtualSize != d.Size {
		t.Errorf("format %s compat %s, %d bytes; want qcow2 1.1, %d bytes", i.Format, i.FormatSpecific.Data.Compat, i.VirtualSize, d.Size)
	}
	qemuCompare(t, qemu, d.Path, "qcow2", out)
}

func TestConvertVMDK(t *testing.T) {
	d, qemu := convertFixture(t)
	out := filepath.Join(t.TempDir(), "disk.vmdk")
	if err := Convert(context.Background(), d.Path, "vmdk", out); err != nil {
		t.Fatal(err)
	}
	i := qemuInfo(t, qemu, "vmdk", out)
	if i.FormatSpecific.Data.CreateType != "streamOptimized" || i.VirtualSize != d.Size {
		t.Errorf("VMDK of create type %q, %d bytes; want streamOptimized, %d bytes", i.FormatSpecific.Data.CreateType, i.VirtualSize, d.Size)
	}
	qemuCompare(t, qemu, d.Path, "vmdk", out)
}

func TestConvertVHD(t *testing.T) {
	d, qemu := convertFixture(t)
	// A raw disk whose size is not a multiple of 1 MiB: the VHD's rounds up.
	odd := filepath.Join(t.TempDir(), "odd.raw")
	if err := os.WriteFile(odd, pseudoRandom(7, 3<<20+512), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		raw  string
		size int64
	}{{d.Path, d.Size}, {odd, 4 << 20}} {
		out := filepath.Join(t.TempDir(), "disk.vhd")
		if err := Convert(context.Background(), c.raw, "vhd", out); err != nil {
			t.Fatal(err)
		}
		i := qemuInfo(t, qemu, "vpc", out)
		if i.VirtualSize != c.size || i.VirtualSize%oneMiB != 0 {
			t.Errorf("%s: VHD of %d bytes, want %d, a multiple of 1 MiB", c.raw, i.VirtualSize, c.size)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != c.size+512 {
			t.Errorf("%s: VHD file of %d bytes, want %d and the 512-byte footer", c.raw, fi.Size(), c.size)
		}
		// The footer: "conectix", and disk type 2 (fixed) at 60, big-endian.
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		footer := make([]byte, 512)
		_, err = f.ReadAt(footer, fi.Size()-512)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(footer, []byte("conectix")) || binary.BigEndian.Uint32(footer[60:64]) != 2 {
			t.Errorf("%s: the VHD footer is not that of a fixed disk: % x", c.raw, footer[:64])
		}
		qemuCompare(t, qemu, c.raw, "vpc", out)
		assertSparse(t, out)
	}
}

func TestConvertRaw(t *testing.T) {
	d, _ := convertFixture(t)
	out := filepath.Join(t.TempDir(), "copy.raw")
	if err := Convert(context.Background(), d.Path, "raw", out); err != nil {
		t.Fatal(err)
	}
	a, err := sparseSum(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sparseSum(out)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("the raw copy differs from the disk")
	}
	assertSparse(t, out)
}

// assertSparse fails the test when path has more than 5 % more allocated than non-zero bytes.
func assertSparse(t *testing.T, path string) {
	t.Helper()
	nz, err := NonZeroBytes(path)
	if err != nil {
		t.Fatal(err)
	}
	alloc, err := allocatedBytes(path)
	if err != nil {
		t.Fatal(err)
	}
	if float64(alloc) > 1.05*float64(nz)+4096 {
		t.Errorf("%s: %d bytes allocated for %d non-zero: not sparse", path, alloc, nz)
	}
}

func TestCheckQcow2Corrupt(t *testing.T) {
	d, _ := convertFixture(t)
	out := filepath.Join(t.TempDir(), "disk.qcow2")
	if err := Convert(context.Background(), d.Path, "qcow2", out); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(out, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte of the L1 table offset (header bytes 40-47, big-endian): the image's
	// mapping now points past its end.
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 45); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, 45); err != nil {
		t.Fatal(err)
	}
	f.Close()
	err = CheckQcow2(context.Background(), out)
	if err == nil {
		t.Fatal("CheckQcow2 of a qcow2 with a corrupt header succeeded")
	}
	if !strings.Contains(err.Error(), out) || !strings.Contains(err.Error(), "errors were found") {
		t.Errorf("the error names neither the file nor what qemu-img check found: %v", err)
	}
}

func TestConvertUnknownFormat(t *testing.T) {
	raw := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(raw, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Tool(t, "qemu-img")
	err := Convert(context.Background(), raw, "vdi", filepath.Join(t.TempDir(), "d.vdi"))
	if err == nil || !strings.Contains(err.Error(), `"vdi"`) {
		t.Errorf("Convert to vdi: %v, want an unknown format error", err)
	}
}

func TestNonZeroBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	write := func(b []byte, off int64) {
		t.Helper()
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	block := bytes.Repeat([]byte{0xaa}, 4096)
	write(block, 0)                          // a data block
	write(make([]byte, 8192), 4096)          // two blocks of written zeros
	write([]byte{1}, 64<<10+4095)            // one byte, the last of its block, after a hole
	write(block, 1<<20)                      // a block after a 1 MiB hole
	write([]byte{0, 0, 0, 2, 0}, 4<<20+8192) // a short last block
	f.Close()
	n, err := NonZeroBytes(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(4096 + 4096 + 4096 + 5); n != want {
		t.Errorf("NonZeroBytes = %d, want %d", n, want)
	}
	if _, err := NonZeroBytes(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("NonZeroBytes of a missing file succeeded")
	}
}
