#!/bin/sh
# provision.sh — what gpuforge's machine image build does for examples/gpu-node-debian.hcl, done the
# Packer way: as root, over SSH, in the booted base disk (bench/packer/base.hcl), whose kernel is
# the image's kernel. The steps follow builders/buildkit/machine.go: the module stage (the kernel's
# headers, dkms and nvidia-kernel-dkms, the module built and checked for the image's kernel), the
# host packages (docker.io and the driver's user space; the rest of gpuforge's host packages are in
# the base disk), the recipe's packages, then the host setup (depmod, services enabled, the image's
# description) and the per-instance state emptied. Unlike gpuforge, which keeps the headers and
# compilers in a stage of their own, they stay in the disk, as in any in-place provisioning.
#
# Environment (from the Packer template): MIRROR (the Debian mirror as the VM reaches it; empty
# keeps the base disk's sources), PACKAGES (the recipe's packages, space-separated).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -qq --no-install-recommends "$@"; }
t0=$(date +%s)
step() { echo "provision: [$(( $(date +%s) - t0 ))s] $*"; }

if [ -n "${MIRROR:-}" ]; then
	. /etc/os-release
	echo "deb $MIRROR $VERSION_CODENAME main contrib non-free non-free-firmware" >/etc/apt/sources.list
	rm -f /etc/apt/sources.list.d/debian.sources
fi
kver=$(uname -r)
want=535
step "kernel $kver; apt-get update"
apt-get update -qq

# The module stage: headers, DKMS and the driver's DKMS package (its hook builds the module for
# the installed kernel that has headers: this one).
step "install linux-headers-$kver dkms nvidia-kernel-dkms (the DKMS build)"
apt_install "linux-headers-$kver" dkms nvidia-kernel-dkms
found=
for mv in $(dkms status 2>/dev/null | sed -n 's|^\([^/,]*\)/\([^,:]*\)[,:].*|\1/\2|p' | sort -u); do
	case "$mv" in nvidia*) ;; *) continue ;; esac
	mod=${mv%%/*}; ver=${mv#*/}
	case "$ver" in "$want"|"$want".*) ;; *) echo "provision: DKMS module $mod is version $ver, not $want" >&2; exit 1 ;; esac
	dkms status -m "$mod" -v "$ver" -k "$kver" | grep -q installed || dkms install -m "$mod" -v "$ver" -k "$kver"
	found="$mod $ver"
done
[ -n "$found" ] || { echo "provision: nvidia-kernel-dkms added no nvidia DKMS module" >&2; exit 1; }
main=
for ko in /lib/modules/"$kver"/updates/dkms/nvidia*.ko*; do
	[ -e "$ko" ] || { echo "provision: no NVIDIA module for $kver" >&2; exit 1; }
	vm=$(modinfo -F vermagic "$ko" | cut -d ' ' -f 1)
	[ "$vm" = "$kver" ] || { echo "provision: $ko has vermagic $vm, not $kver" >&2; exit 1; }
	n=$(basename "$ko"); n=${n%%.ko*}
	case "$n" in *modeset*|*drm*|*uvm*|*peermem*) ;; *) main=$n ;; esac
	echo "provision: $(basename "$ko") vermagic $vm"
done

# The host packages gpuforge adds to the base's: the runtime (docker, distro edition) and the
# driver's user space (DistroDriverPackages, proprietary flavour).
step "install docker.io and the driver's user space"
apt_install docker.io nvidia-kernel-support nvidia-modprobe firmware-nvidia-gsp nvidia-smi \
	libnvidia-ml1 libcuda1 nvidia-persistenced

# The recipe's packages, in a step of their own as gpuforge does.
step "install $PACKAGES"
# shellcheck disable=SC2086 # a list of package names
apt_install $PACKAGES

# The host setup (hostScript).
step "configure the host"
depmod -a "$kver"
systemctl enable docker.service containerd.service nvidia-persistenced.service
ls /lib/firmware/nvidia/*/gsp*.bin >/dev/null 2>&1 || echo "provision: warning: no GSP firmware under /lib/firmware/nvidia" >&2
mkdir -p /etc/gpuforge
printf '{"schema":"gpuforge.machine-image/v1","name":"%s","kernel":"%s","driver":{"module":"%s","version":"%s","flavor":"proprietary"},"runtimes":{"docker":"%s","nvidia":""}}\n' \
	gpu-node-debian "$kver" "$main" "${found#* }" distro >/etc/gpuforge/machine-image.json
apt-get clean
rm -rf /var/lib/apt/lists/*
# Per-instance state, as gpuforge leaves it: no machine id, host keys, cloud-init state or hostname.
cloud-init clean --logs
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub /etc/hostname
step "done"
