#!/usr/bin/env bash
# Load on one builder: 8 `gpuforge build` processes at once on one buildkitd (4 different recipes,
# each built twice at the same time, each run with its own output directory), side by side with 8
# `buildctl build` processes of the equivalent Dockerfiles at once on the same daemon. The build
# cache is pruned before each tool's wave; both start from the same bootstrapped Debian layout and
# clamp timestamps to the same SOURCE_DATE_EPOCH (layers rewritten, as reproducible builds need).
# Every output of both is checked by digest: the two runs of a recipe give the same image
# digest (same SOURCE_DATE_EPOCH), the four recipes four different ones, and each image holds the
# file its recipe wrote.
#
#   bench/load.sh [runs]         (default 3; run from anywhere; needs `make setup` done)
#
# Prints each wave's wall time and the ratio gpuforge/buildctl (lower is better for gpuforge).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-3}
. bench/lib.sh
export GPUFORGE_CACHE_DIR="$work/cache" GPUFORGE_STATE_DIR="$work/state" SOURCE_DATE_EPOCH=1767225600
arch=$(dpkg --print-architecture)
kinds=4

for k in $(seq 0 $((kinds - 1))); do
  n=$((100000 * (k + 1)))
  mkdir -p "$work/r$k" "$work/d$k"
  cat >"$work/r$k/recipe.hcl" <<HCL
base "debian" {
  bootstrap {
    suite        = "bookworm"
    variant      = "minbase"
    components   = ["main"]
    architecture = "$arch"
  }
}

image "load" {
  from = base.debian
  run = [
    "dd if=/dev/urandom of=/payload bs=1M count=16 status=none && sha256sum /payload > /payload.sha256",
    "seq 1 $n | sha256sum > /load.sum",
    "echo recipe-$k > /load.txt",
  ]
}
HCL
  cat >"$work/d$k/Dockerfile" <<DOCKERFILE
FROM base
RUN dd if=/dev/urandom of=/payload bs=1M count=16 status=none && sha256sum /payload > /payload.sha256
RUN seq 1 $n | sha256sum > /load.sum
RUN echo recipe-$k > /load.txt
DOCKERFILE
done

gf() { bin/gpuforge build --builder "unix://$sock" --progress quiet --out "$work/gf-$1-$2" "$work/r$1/recipe.hcl" >"$work/gf-$1-$2.log" 2>&1; }
bk() {
  bin/buildctl --addr "unix://$sock" build --progress quiet --frontend dockerfile.v0 \
    --local context="$work/d$1" --local dockerfile="$work/d$1" \
    --oci-layout "base=$layout" --opt "context:base=oci-layout://base@$digest" \
    --opt "build-arg:SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" \
    --output "type=oci,dest=$work/bk-$1-$2,tar=false,rewrite-timestamp=true" >"$work/bk-$1-$2.log" 2>&1
}
prune() { bin/buildctl --addr "unix://$sock" prune --all >/dev/null; }
# wave TOOL: all 8 at once; prints the wall time, fails when any of them failed.
wave() {
  local s e pids=() failed=0
  rm -rf "$work"/"$1"-[0-9]-[0-9]
  s=$(date +%s.%N)
  for k in $(seq 0 $((kinds - 1))); do
    for c in 1 2; do "$1" "$k" "$c" & pids+=($!); done
  done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  e=$(date +%s.%N)
  if [ "$failed" = 1 ]; then
    tail -n 20 "$work"/"$1"-*.log >&2
    echo "a $1 build failed" >&2
    exit 1
  fi
  awk -v s="$s" -v e="$e" 'BEGIN {printf "%.2f", e - s}'
}
digest_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["digest"])' "$1"; }
# dir TOOL RECIPE COPY: the OCI layout one build wrote.
dir() { if [ "$1" = gf ]; then echo "$work/gf-$2-$3/load"; else echo "$work/bk-$2-$3"; fi; }
# verify TOOL: the two runs of a recipe agree, the recipes differ, each image holds its file.
verify() {
  local seen="" d1 d2 dir
  for k in $(seq 0 $((kinds - 1))); do
    d1=$(digest_of "$(dir "$1" "$k" 1)"); d2=$(digest_of "$(dir "$1" "$k" 2)")
    [ "$d1" = "$d2" ] || { echo "recipe $k built twice at once gave $d1 and $d2" >&2; exit 1; }
    case " $seen " in *" $d1 "*) echo "recipes built the same digest $d1" >&2; exit 1 ;; esac
    seen="$seen $d1"
    python3 - "$(dir "$1" "$k" 1)" "recipe-$k" <<'PY' || { echo "recipe $k: /load.txt is not recipe-$k" >&2; exit 1; }
import gzip, io, json, sys, tarfile
d, want = sys.argv[1], sys.argv[2]
blob = lambda h: open(d + "/blobs/" + h.replace(":", "/"), "rb").read()
m = json.loads(blob(json.load(open(d + "/index.json"))["manifests"][0]["digest"]))
found = None
for l in m["layers"]:
    data = blob(l["digest"])
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for ti in t:
            if ti.name == "load.txt":
                found = t.extractfile(ti).read().decode().strip()
sys.exit(0 if found == want else 1)
PY
  done
}

gf 0 1 # bootstraps the base once (cached) so neither tool pays for mmdebstrap below
layout=$(ls -d "$GPUFORGE_CACHE_DIR"/bootstrap/*/ | head -n1)
digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["digest"])' "$layout")

declare -a g b
for i in $(seq "$runs"); do
  prune; g+=("$(wave gf)"); verify gf
  prune; b+=("$(wave bk)"); verify bk
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
gm=$(median "${g[@]}"); bm=$(median "${b[@]}")
printf 'runs: %s, 8 builds at once (4 recipes x 2)\n' "$runs"
printf 'gpuforge: %s  (median %.2f s)\n' "${g[*]}" "$gm"
printf 'buildctl: %s  (median %.2f s)\n' "${b[*]}" "$bm"
echo "every output of both tools verified by digest (a recipe's two builds agree, recipes differ) and content"
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v a="$gm" -v b="$bm" 'BEGIN {printf "ratio gpuforge/buildctl: %.3f\n", a / b}'
