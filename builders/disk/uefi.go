package disk

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// systemdBootEFI is where Debian's and Ubuntu's systemd-boot-efi package puts the boot loader.
const systemdBootEFI = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"

// UEFIBoot is how a root filesystem boots from its EFI system partition with systemd-boot.
type UEFIBoot struct {
	Kernel  string // kernel release: boot/vmlinuz-KERNEL and boot/initrd.img-KERNEL in the tree
	Cmdline string // extra kernel command line after root=UUID=… ro
}

// ESPVolumeString is a FAT volume id as fstab and blkid write it: "ABCD-1234".
func ESPVolumeString(id uint32) string { return fmt.Sprintf("%04X-%04X", id>>16, id&0xffff) }

// PrepareUEFI fills espDir with what the firmware and systemd-boot need to boot the root
// filesystem in rootDir — the boot loader at the removable-media path (so no NVRAM entry is
// needed, which a disk built without its machine cannot have), a loader entry, the kernel and
// its initramfs — and writes rootDir's /etc/fstab, naming both filesystems by UUID. Nothing is
// mounted: the boot loader, kernel and initramfs are copied out of the tree, and the ESP is
// written by Assemble from espDir.
func PrepareUEFI(rootDir, espDir string, ids IDs, b UEFIBoot) error {
	kernel := filepath.Join(rootDir, "boot", "vmlinuz-"+b.Kernel)
	initrd := filepath.Join(rootDir, "boot", "initrd.img-"+b.Kernel)
	loader := filepath.Join(rootDir, systemdBootEFI)
	for _, f := range []struct{ path, what string }{
		{kernel, "the kernel"}, {initrd, "the initramfs"}, {loader, "systemd-boot (package systemd-boot-efi)"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("the root filesystem has no %s: %w", f.what, err)
		}
	}
	copies := []struct{ src, dst string }{
		{loader, "EFI/BOOT/BOOTX64.EFI"},
		{kernel, "gpuforge/vmlinuz"},
		{initrd, "gpuforge/initrd.img"},
	}
	for _, c := range copies {
		if err := copyBootFile(c.src, filepath.Join(espDir, filepath.FromSlash(c.dst))); err != nil {
			return err
		}
	}
	cmdline := strings.TrimSpace("root=UUID=" + ids.RootFSUUID + " ro " + b.Cmdline)
	files := map[string]string{
		"loader/loader.conf": "default gpuforge.conf\ntimeout 0\nconsole-mode keep\neditor no\n",
		"loader/entries/gpuforge.conf": fmt.Sprintf("title gpuforge %s\nlinux /gpuforge/vmlinuz\ninitrd /gpuforge/initrd.img\noptions %s\n",
			b.Kernel, cmdline),
	}
	for name, content := range files {
		p := filepath.Join(espDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	fstab := fmt.Sprintf("# gpuforge: filesystems by UUID\nUUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /boot/efi vfat umask=0077,nofail 0 2\n",
		ids.RootFSUUID, ESPVolumeString(ids.ESPVolumeID))
	if err := os.MkdirAll(filepath.Join(rootDir, "boot", "efi"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(rootDir, "etc", "fstab"), []byte(fstab), 0o644)
}

// copyBootFile copies a regular file (following a symlink at src), creating dst's directories.
func copyBootFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}
