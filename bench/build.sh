#!/usr/bin/env bash
# gpuforge build vs buildctl with an equivalent Dockerfile, on the same buildkitd, cold (build
# cache pruned) and no-op warm. Both start from the same bootstrapped Debian bookworm layout.
#
#   bench/build.sh [runs]        (default 3; run from anywhere; needs `make setup` done)
#
# Prints each time and the ratios gpuforge/buildctl (lower is better for gpuforge).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-3}
. bench/lib.sh
export GPUFORGE_CACHE_DIR="$work/cache" GPUFORGE_STATE_DIR="$work/state"
arch=$(dpkg --print-architecture)

cat >"$work/recipe.hcl" <<HCL
base "debian" {
  bootstrap {
    suite        = "bookworm"
    variant      = "minbase"
    components   = ["main"]
    architecture = "$arch"
  }
}

image "bench" {
  from = base.debian
  env     = { APP_HOME = "/opt/app" }
  workdir = "/opt/app"
  run = [
    "dd if=/dev/zero of=/payload bs=1M count=64 status=none && sha256sum /payload > /payload.sha256",
    "seq 1 200000 | sha256sum > /seq.sha256",
    "mkdir -p /opt/app && for i in \$(seq 1 500); do echo \$i > /opt/app/f\$i; done",
  ]
}
HCL

gf() { bin/gpuforge build --builder "unix://$sock" --progress quiet --out "$work/gf-out" "$work/recipe.hcl" >/dev/null; }
layout=""
bk() {
  bin/buildctl --addr "unix://$sock" build --progress quiet --frontend dockerfile.v0 \
    --local context=bench/build --local dockerfile=bench/build \
    --oci-layout "base=$layout" --opt "context:base=oci-layout://base@$digest" \
    --output "type=oci,dest=$work/bk-out,tar=false" >/dev/null
}
prune() { bin/buildctl --addr "unix://$sock" prune --all >/dev/null; }
secs() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN {printf "%.3f", e - s}'; }

gf # bootstraps the base once (cached) so neither tool pays for mmdebstrap below
layout=$(ls -d "$GPUFORGE_CACHE_DIR"/bootstrap/*/ | head -n1)
digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["digest"])' "$layout")

declare -a gcold gwarm bcold bwarm
for i in $(seq "$runs"); do
  prune; gcold+=("$(secs gf)"); gwarm+=("$(secs gf)")
  prune; bcold+=("$(secs bk)"); bwarm+=("$(secs bk)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
gc=$(median "${gcold[@]}"); gw=$(median "${gwarm[@]}"); bc_=$(median "${bcold[@]}"); bw=$(median "${bwarm[@]}")
printf 'runs: %s\n' "$runs"
printf 'gpuforge cold: %s  (median %.2f s)\n' "${gcold[*]}" "$gc"
printf 'buildctl cold: %s  (median %.2f s)\n' "${bcold[*]}" "$bc_"
printf 'gpuforge warm: %s  (median %.2f s)\n' "${gwarm[*]}" "$gw"
printf 'buildctl warm: %s  (median %.2f s)\n' "${bwarm[*]}" "$bw"
awk -v a="$gc" -v b="$bc_" 'BEGIN {printf "ratio cold gpuforge/buildctl: %.3f\n", a / b}'
awk -v a="$gw" -v b="$bw" 'BEGIN {printf "ratio warm gpuforge/buildctl: %.3f\n", a / b}'
