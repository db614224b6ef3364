// Package disk owns machine-image disks: assembling a BuildKit-built root filesystem into a GPT
// disk (EFI system partition and an ext4 root written with mkfs.ext4 -d), converting it to
// qcow2, VMDK or VHD with qemu-img, and booting it in QEMU to read the image's boot report.
package disk
