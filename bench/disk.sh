#!/usr/bin/env bash
# Root filesystem to bootable raw disk: disk.Assemble (GPT, FAT32 ESP written by go-diskfs, ext4
# root by mkfs.ext4 -d, sparse) against copying the same bytes as one file, in the same run:
# `tar -c` of the tree and the ESP into one archive (reading every file, as mkfs.ext4 -d does)
# and `cp --sparse=always` of that archive (writing the bytes once, sparse). Also timed: the
# `mkfs.ext4 -d` of the tree alone into a sparse file of the root partition's size, the part of
# Assemble that is e2fsprogs' (same options, no offset).
#
#   bench/disk.sh [ROOTFS] [runs]   (default: a fresh `mmdebstrap --variant=minbase bookworm`; 5 runs)
#
# The ESP is dummy files of the sizes of a GPU image's: a 1 MiB boot loader, an 8 MiB kernel and
# a 64 MiB initrd, all random (incompressible). Every case runs once untimed first, so all read
# from a warm page cache; the order of the cases alternates between runs. Needs mkfs.ext4
# (e2fsprogs), and mmdebstrap when no ROOTFS is given (run as root).
#
# Prints each time, the medians, the throughput of Assemble over the content (tree + ESP bytes)
# and the ratios Assemble/cp, Assemble/tar and Assemble/mkfs.ext4 (lower is better for Assemble).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tree=${1:-}
runs=${2:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CGO_CFLAGS=${CGO_CFLAGS:--Wno-deprecated-declarations}
go build -o "$work/diskbench" ./bench/diskbench

if [[ -z $tree ]]; then
  mmdebstrap --variant=minbase --quiet bookworm "$work/rootfs"
  tree=$work/rootfs
fi
esp=$work/esp
mkdir -p "$esp/EFI/BOOT" "$esp/loader/entries"
head -c 1M /dev/urandom >"$esp/EFI/BOOT/BOOTX64.EFI"
head -c 8M /dev/urandom >"$esp/vmlinuz"
head -c 64M /dev/urandom >"$esp/initrd.img"
printf 'title bench\nlinux /vmlinuz\ninitrd /initrd.img\n' >"$esp/loader/entries/bench.conf"

tar -C "$tree" -cf "$work/src.tar" . && tar -C "$esp" -rf "$work/src.tar" .
content=$(du -sb --apparent-size "$tree" "$esp" | awk '{s += $1} END {print s}')
files=$(find "$tree" "$esp" | wc -l)

assemble() { rm -f "$work/disk.raw"; "$work/diskbench" -root "$tree" -esp "$esp" -out "$work/disk.raw" -epoch 1700000000 >"$work/disk.txt"; }
tarc() { tar -C "$tree" -cf "$work/t.tar" . && tar -C "$esp" -rf "$work/t.tar" .; }
cpsparse() { rm -f "$work/copy.tar"; cp --sparse=always "$work/src.tar" "$work/copy.tar"; }
mkfs=$(command -v mkfs.ext4 || echo /usr/sbin/mkfs.ext4)
mkfsonly() {
  rm -f "$work/root.ext4"; truncate -s "$rootsize" "$work/root.ext4"
  "$mkfs" -q -F -b 4096 -d "$tree" -E lazy_itable_init=1,lazy_journal_init=1,nodiscard "$work/root.ext4" </dev/null
}
secs() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN {printf "%.3f", e - s}'; }

assemble # warm-up: page cache, binaries; and the root partition's size for mkfsonly
read -r _ size _ alloc _ _ _ root <"$work/disk.txt"
rootsize=${root#*+}
tarc; cpsparse; mkfsonly
declare -a ta tt tc tm
for i in $(seq "$runs"); do
  if ((i % 2)); then
    ta+=("$(secs assemble)"); tm+=("$(secs mkfsonly)"); tt+=("$(secs tarc)"); tc+=("$(secs cpsparse)")
  else
    tc+=("$(secs cpsparse)"); tt+=("$(secs tarc)"); tm+=("$(secs mkfsonly)"); ta+=("$(secs assemble)")
  fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ma=$(median "${ta[@]}"); mt=$(median "${tt[@]}"); mc=$(median "${tc[@]}"); mm=$(median "${tm[@]}")
printf 'tree: %s (%s files and directories with the ESP), content %d MiB; tar %d MiB\n' \
  "$tree" "$files" $((content >> 20)) $(($(stat -c %s "$work/src.tar") >> 20))
printf 'disk: %d MiB apparent, %d MiB allocated\n' $((size >> 20)) $((alloc >> 20))
printf 'runs: %s\n' "$runs"
printf 'assemble:          %s  (median %.3f s)\n' "${ta[*]}" "$ma"
printf 'tar -c:            %s  (median %.3f s)\n' "${tt[*]}" "$mt"
printf 'cp --sparse=always: %s  (median %.3f s)\n' "${tc[*]}" "$mc"
printf 'mkfs.ext4 -d only: %s  (median %.3f s)\n' "${tm[*]}" "$mm"
awk -v c="$content" -v a="$ma" 'BEGIN {printf "assemble throughput: %.0f MiB/s of content\n", c / 1048576 / a}'
awk -v a="$ma" -v b="$mc" 'BEGIN {printf "ratio assemble/cp: %.2f\n", a / b}'
awk -v a="$ma" -v b="$mt" 'BEGIN {printf "ratio assemble/tar: %.2f\n", a / b}'
awk -v a="$ma" -v b="$mm" 'BEGIN {printf "ratio assemble/mkfs.ext4: %.2f\n", a / b}'
