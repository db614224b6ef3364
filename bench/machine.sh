#!/usr/bin/env bash
# A machine image, cold and warm: `gpuforge build` of examples/gpu-node-debian.hcl (Debian bookworm,
# the cloud kernel, Debian's NVIDIA 535 driver built by DKMS, docker) on a fresh buildkitd (empty
# build cache; the bootstrapped base may come from the bootstrap cache, as it would on a CI runner
# that keeps it), then again after adding one unrelated package to the recipe. Both runs assemble
# the raw and qcow2 disks; the boot check is timed apart (--skip-boot-check, then gpuforge boot),
# since it is the same for both.
#
#   bench/machine.sh             (run from anywhere; needs `make setup` done)
#
# Prints each time and the ratio warm/cold (lower is better).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. bench/lib.sh
export GPUFORGE_STATE_DIR="$work/state"

cp examples/gpu-node-debian.hcl "$work/recipe.hcl"
secs() { local s e; s=$(date +%s.%N); "$@" >"$work/last.log" 2>&1 || { tail -40 "$work/last.log"; exit 1; }; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN {printf "%.1f", e - s}'; }
gf() { bin/gpuforge build --builder "unix://$sock" --progress plain --skip-boot-check --out "$work/out" -t gpu-node-debian "$work/recipe.hcl"; }

cold=$(secs gf)
cached_cold=$(grep -c ' CACHED$' "$work/last.log" || true)
sed -i 's/packages = \["pciutils"\]/packages = ["pciutils", "less"]/' "$work/recipe.hcl"
grep -q '"less"' "$work/recipe.hcl" || { echo "the example's packages line changed; update bench/machine.sh" >&2; exit 1; }
warm=$(secs gf)
dkms_cached=no
grep -A1 'build the NVIDIA kernel modules' "$work/last.log" | grep -q CACHED && dkms_cached=yes
boot=$(secs bin/gpuforge boot "$work/out/gpu-node-debian/gpu-node-debian.qcow2")
size=$(du -h --apparent-size "$work/out/gpu-node-debian/gpu-node-debian.raw" | cut -f1)
alloc=$(du -h "$work/out/gpu-node-debian/gpu-node-debian.raw" | cut -f1)

echo "machine image gpu-node-debian, raw disk $size ($alloc allocated)"
echo "cold build + disks:                    ${cold} s (${cached_cold} BuildKit steps from cache)"
echo "warm, one package added:               ${warm} s (DKMS step from cache: ${dkms_cached})"
echo "boot check (gpuforge boot, qcow2):     ${boot} s"
awk -v c="$cold" -v w="$warm" 'BEGIN {printf "warm/cold: %.2f (%.1fx faster)\n", w / c, c / w}'
