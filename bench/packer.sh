#!/usr/bin/env bash
# Packer vs gpuforge: the GPU host image of examples/gpu-node-debian.hcl (Debian bookworm, the cloud
# kernel, Debian's NVIDIA 535 driver built by DKMS, docker.io, pciutils) baked both ways on this
# machine, cold, then warm after adding one package (`less`, as bench/machine.sh does).
#
#   gpuforge: `gpuforge build` on a fresh buildkitd (empty build cache; the bootstrapped base comes from
#             the bootstrap cache the base-disk step below filled), raw + qcow2 disks, WITH the boot
#             check in QEMU (Packer's output is a booted-and-shut-down disk too). Warm: the same
#             buildkitd after adding the package.
#   Packer:   Packer v1.9.4's qemu builder (bench/packer/gpu-node-debian.pkr.hcl) boots a copy of a
#             base disk (bench/packer/base.hcl, built by gpuforge on a buildkitd of its own, timed
#             apart: Debian minbase, the cloud kernel, cloud-init, sshd), provisions over SSH with
#             bench/packer/provision.sh (what gpuforge installs and configures), shuts down and
#             compacts the qcow2. Warm: the whole provisioning again with the package added (Packer
#             has no step cache).
#
#   bench/packer.sh            (run from anywhere; needs `make setup bin/packer`)
#
# Environment: GPUFORGE (default: `make build`, then bin/gpuforge), PACKER (bin/packer), MIRROR (the
# Debian mirror for the VM; default the one gpuforge bootstrapped from, i.e. the host's apt mirror,
# with localhost rewritten to QEMU's host address 10.0.2.2), ACCEL (Packer's accelerator, default tcg:
# nested KVM fails on the machines this was written on; kvm where /dev/kvm works), KEEP=1 (keep
# the work directory: disks, logs, the VMs' consoles; kept anyway on failure), STEPS (default
# "base gpuforge packer"; "base packer" skips the gpuforge runs, "gpuforge" runs only those),
# PACKER_RUNS (default "cold warm"; "warm" bakes only the warm image: each bake is a full provisioning,
# an hour or more under TCG, so a warm-only run fits beside an earlier cold one).
#
# Prints each time as it finishes, then the four times and the ratios Packer/gpuforge.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STEPS=${STEPS:-base gpuforge packer}
PACKER_RUNS=${PACKER_RUNS:-cold warm}
[[ " $PACKER_RUNS " == *" cold "* || " $PACKER_RUNS " == *" warm "* ]] ||
	{ echo "packer.sh: PACKER_RUNS=\"$PACKER_RUNS\" names neither cold nor warm" >&2; exit 1; }
ACCEL=${ACCEL:-tcg}
if [ -z "${GPUFORGE:-}" ]; then
	make --no-print-directory build >/dev/null
	GPUFORGE=bin/gpuforge
fi
PACKER=${PACKER:-bin/packer}
[ -x "$PACKER" ] || { echo "packer.sh: no $PACKER: run make bin/packer" >&2; exit 1; }
GPUFORGE=$(realpath "$GPUFORGE")
PACKER=$(realpath "$PACKER")

# OVMF as builders/disk/boot.go finds it (a code file with its variables template).
efi_code= efi_vars=
for pair in /usr/share/OVMF/OVMF_CODE_4M.fd:/usr/share/OVMF/OVMF_VARS_4M.fd \
	/usr/share/OVMF/OVMF_CODE.fd:/usr/share/OVMF/OVMF_VARS.fd \
	/usr/share/edk2/ovmf/OVMF_CODE.fd:/usr/share/edk2/ovmf/OVMF_VARS.fd; do
	if [ -f "${pair%%:*}" ] && [ -f "${pair#*:}" ]; then efi_code=${pair%%:*} efi_vars=${pair#*:}; break; fi
done
[ -n "$efi_code" ] || { echo "packer.sh: no OVMF firmware (make apt-deps)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/packer-bench.XXXXXX")
pids=()
cleanup() {
	local rc=$?
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	sleep 1
	if [ "${KEEP:-}" = 1 ] || [ "$rc" != 0 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
echo "work directory: $work; load average at start: $(cut -d ' ' -f 1-3 /proc/loadavg)"
# The bootstrapped base is shared by the base disk and gpuforge's builds (made once, in the base step).
export GPUFORGE_CACHE_DIR=${GPUFORGE_CACHE_DIR:-$work/cache}

# buildkitd NAME: start a fresh daemon under $work/NAME; sock is its address.
buildkitd() {
	local dir=$work/$1
	mkdir -p "$dir"
	bin/buildkitd --root "$dir/root" --addr "unix://$dir/bk.sock" --oci-worker=true --containerd-worker=false >"$dir/bk.log" 2>&1 &
	pids+=($!)
	sock=unix://$dir/bk.sock
	for _ in $(seq 100); do bin/buildctl --addr "$sock" debug workers >/dev/null 2>&1 && break; sleep 0.2; done
}
# secs LOG CMD...: run CMD with its output in LOG, print the seconds it took.
secs() {
	local log=$1 s e; shift
	s=$(date +%s.%N)
	"$@" >"$log" 2>&1 || { echo "packer.sh: failed: $* (log $log):" >&2; tail -40 "$log" >&2; exit 1; }
	e=$(date +%s.%N)
	awk -v s="$s" -v e="$e" 'BEGIN {printf "%.1f", e - s}'
}
load() { cut -d ' ' -f 1-3 /proc/loadavg; }
# The load average each minute, to tell an idle machine's figures from a busy one's.
while sleep 60; do echo "$(date -u +%T) $(load)"; done >"$work/load.log" &
pids+=($!)

base_t= gf_cold= gf_warm= pk_cold= pk_warm= gf_boot_cold= gf_boot_warm=
if [[ " $STEPS " == *" base "* || " $STEPS " == *" packer "* ]]; then
	# The base disk, on a daemon of its own so that gpuforge's cold build below shares nothing with
	# it but the bootstrapped base.
	buildkitd base-bk
	export GPUFORGE_STATE_DIR=$work/base-state
	base_t=$(secs "$work/base.log" "$GPUFORGE" build --builder "$sock" --progress plain --skip-boot-check \
		--out "$work/base" -t packer-base bench/packer/base.hcl)
	kill "${pids[-1]}"; unset 'pids[-1]'
	base_disk=$work/base/packer-base/packer-base.qcow2
	echo "base disk for Packer (gpuforge, bootstrap included):  ${base_t} s  [load $(load)]"
fi

if [[ " $STEPS " == *" gpuforge "* ]]; then
	buildkitd gf-bk
	export GPUFORGE_STATE_DIR=$work/gf-state
	cp examples/gpu-node-debian.hcl "$work/recipe.hcl"
	gf() { "$GPUFORGE" build --builder "$sock" --progress plain --out "$work/gf-out" -t gpu-node-debian "$work/recipe.hcl"; }
	gf_cold=$(secs "$work/gf-cold.log" gf)
	gf_boot_cold=$(sed -n 's/.*verdict: pass (\([a-z]*\), \([0-9hms.]*\)).*/\1 \2/p' "$work/gf-cold.log" | tail -1)
	echo "gpuforge cold (build, disks, boot check):            ${gf_cold} s  (boot check: ${gf_boot_cold:-?})  [load $(load)]"
	sed -i 's/packages = \["pciutils"\]/packages = ["pciutils", "less"]/' "$work/recipe.hcl"
	grep -q '"less"' "$work/recipe.hcl" || { echo "the example's packages line changed; update bench/packer.sh" >&2; exit 1; }
	gf_warm=$(secs "$work/gf-warm.log" gf)
	gf_boot_warm=$(sed -n 's/.*verdict: pass (\([a-z]*\), \([0-9hms.]*\)).*/\1 \2/p' "$work/gf-warm.log" | tail -1)
	echo "gpuforge warm, less added (build, disks, boot check): ${gf_warm} s  (boot check: ${gf_boot_warm:-?})  [load $(load)]"
	kill "${pids[-1]}"; unset 'pids[-1]'
fi

if [[ " $STEPS " == *" packer "* ]]; then
	if [ -z "${MIRROR:-}" ]; then
		MIRROR=$(sed -n 's/^ *"mirror": "\(.*\)",$/\1/p' "$GPUFORGE_CACHE_DIR"/bootstrap/*/gpuforge-bootstrap.json | head -1)
		MIRROR=$(echo "$MIRROR" | sed -E 's#^(https?://)(localhost|127\.[0-9.]+|\[::1\])([:/]|$)#\110.0.2.2\3#')
	fi
	echo "mirror for the VM: ${MIRROR:-none, the base disk keeps its sources}; accelerator: $ACCEL"
	ssh-keygen -q -t ed25519 -N '' -C packer-bench -f "$work/id_ed25519"
	export PACKER_CACHE_DIR=$work/packer_cache CHECKPOINT_DISABLE=1 PACKER_NO_COLOR=1
	pk() { # pk NAME PACKAGES-JSON
		"$PACKER" build -color=false -var "base_disk=$base_disk" -var "output_dir=$work/$1" \
			-var "mirror=$MIRROR" -var "packages=$2" -var "ssh_public_key=$(cat "$work/id_ed25519.pub")" \
			-var "ssh_private_key_file=$work/id_ed25519" -var "efi_firmware_code=$efi_code" \
			-var "efi_firmware_vars=$efi_vars" -var "console_log=$work/$1-console.log" \
			-var "accelerator=$ACCEL" bench/packer
	}
	if [[ " $PACKER_RUNS " == *" cold "* ]]; then
		pk_cold=$(secs "$work/packer-cold.log" pk packer-cold '["pciutils"]')
		echo "Packer cold (boot, provision, shut down, compact):   ${pk_cold} s  [load $(load)]"
		grep '^.*provision: \[' "$work/packer-cold.log" | sed 's/^.*provision: /  /' || true
		last=packer-cold
	fi
	if [[ " $PACKER_RUNS " == *" warm "* ]]; then
		pk_warm=$(secs "$work/packer-warm.log" pk packer-warm '["pciutils", "less"]')
		echo "Packer warm, less added (the same again):            ${pk_warm} s  [load $(load)]"
		grep '^.*provision: \[' "$work/packer-warm.log" | sed 's/^.*provision: /  /' || true
		last=packer-warm
	fi
	echo "disks: Packer $(du -h --apparent-size "$work/$last/gpu-node-debian.qcow2" | cut -f1) qcow2 ($(du -h "$work/$last/gpu-node-debian.qcow2" | cut -f1) allocated)"
fi

echo
echo "                  gpuforge (s)   Packer (s)   Packer/gpuforge"
row() { awk -v n="$1" -v g="$2" -v p="$3" 'BEGIN {
	r = (g > 0 && p > 0) ? sprintf("%.1fx", p / g) : "-"
	printf "%-16s %12s %12s %17s\n", n, (g == "" ? "-" : g), (p == "" ? "-" : p), r }'; }
row cold "$gf_cold" "$pk_cold"
row "warm (+less)" "$gf_warm" "$pk_warm"
[ -n "$base_t" ] && [ -n "$pk_cold" ] && [ -n "$gf_cold" ] &&
	awk -v b="$base_t" -v g="$gf_cold" -v p="$pk_cold" 'BEGIN {printf "cold, Packer + its base disk: %.1f s, %.1fx gpuforge cold\n", b + p, (b + p) / g}'
echo "load average at the end: $(load); each minute: $work/load.log (highest 1-minute: $(sort -k2 -g "$work/load.log" | tail -1 | cut -d ' ' -f 2))"
