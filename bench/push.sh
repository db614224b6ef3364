#!/usr/bin/env bash
# bench/push.sh: `gpuforge push` against `crane push`, side by side, same image, same registry.
#
# Generates (once, cached) a ~200 MB random single-platform OCI layout of 8 gzip layers, starts
# bin/registry (CNCF distribution, filesystem storage, plain HTTP on a loopback port, no auth),
# then for RUNS rounds, alternating which tool goes first:
#   cold   push to a repository never pushed to (every blob uploaded)
#   no-op  push the same image to the same tag again (nothing to upload)
#   start  `version`, to show how much of a short push is the process starting
# and prints each time, the medians, and gpuforge/crane ratios (< 1: gpuforge is faster).
#
# Usage: bench/push.sh            (from the repository root; needs bin/registry, bin/crane,
#                                  bin/gpuforge with the push command: make setup build)
# Environment: RUNS (3), JOBS (gpuforge --jobs, 4: crane's fixed value), LAYOUT_DIR (.cache/bench/push-layout),
#              GPUFORGE (bin/gpuforge), CRANE (bin/crane), REGISTRY (bin/registry).
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
JOBS=${JOBS:-4}
LAYOUT_DIR=${LAYOUT_DIR:-.cache/bench/push-layout}
GPUFORGE=${GPUFORGE:-bin/gpuforge}
CRANE=${CRANE:-bin/crane}
REGISTRY=${REGISTRY:-bin/registry}
# Layer sizes in MiB: 200 in all, a few big layers and a tail of small ones, like a CUDA image.
LAYER_MIB=(80 50 30 20 10 5 3 2)

for tool in "$GPUFORGE" "$CRANE" "$REGISTRY"; do
	[[ -x $tool ]] || { echo "push.sh: $tool not found; run make setup build" >&2; exit 1; }
done
"$GPUFORGE" push --help >/dev/null 2>&1 || { echo "push.sh: $GPUFORGE has no push command" >&2; exit 1; }

# --- the image, generated once -----------------------------------------------------------------
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

make_layout() {
	local dir=$1 tmp
	tmp=$(mktemp -d)
	rm -rf "$dir.partial"
	mkdir -p "$dir.partial/blobs/sha256"
	local layers="" diffids="" i=0
	for mib in "${LAYER_MIB[@]}"; do
		mkdir -p "$tmp/l$i"
		head -c "$((mib << 20))" /dev/urandom >"$tmp/l$i/data-$i.bin"
		tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/l$i" -cf "$tmp/l$i.tar" .
		gzip -1 -n -c "$tmp/l$i.tar" >"$tmp/l$i.tar.gz"
		local diff dgst
		diff=$(sha "$tmp/l$i.tar")
		dgst=$(sha "$tmp/l$i.tar.gz")
		mv "$tmp/l$i.tar.gz" "$dir.partial/blobs/sha256/$dgst"
		layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$dgst\",\"size\":$(size "$dir.partial/blobs/sha256/$dgst")}"
		diffids+="${diffids:+,}\"sha256:$diff\""
		rm -rf "$tmp/l$i" "$tmp/l$i.tar"
		i=$((i + 1))
	done
	printf '{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z","config":{"Labels":{"dev.gpuforge.bench":"push"}},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diffids" >"$tmp/config.json"
	local cfg
	cfg=$(sha "$tmp/config.json")
	mv "$tmp/config.json" "$dir.partial/blobs/sha256/$cfg"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[%s]}' \
		"$cfg" "$(size "$dir.partial/blobs/sha256/$cfg")" "$layers" >"$tmp/manifest.json"
	local man
	man=$(sha "$tmp/manifest.json")
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d}]}' \
		"$man" "$(size "$tmp/manifest.json")" >"$dir.partial/index.json"
	mv "$tmp/manifest.json" "$dir.partial/blobs/sha256/$man"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$dir.partial/oci-layout"
	rmdir "$tmp"
	mv "$dir.partial" "$dir"
}

if [[ ! -f $LAYOUT_DIR/index.json ]]; then
	echo "generating a $(IFS=+; echo "$((${LAYER_MIB[*]}))") MiB OCI layout in $LAYOUT_DIR (once)" >&2
	mkdir -p "$(dirname "$LAYOUT_DIR")"
	make_layout "$LAYOUT_DIR"
fi

# --- the registry ------------------------------------------------------------------------------
work=$(mktemp -d)
registry_pid=
cleanup() {
	[[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)))
host=127.0.0.1:$port
cat >"$work/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $host
  secret: bench-$$
EOF
OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true "$REGISTRY" serve "$work/config.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
	curl -fsS "http://$host/v2/" >/dev/null 2>&1 && break
	sleep 0.1
done
curl -fsS "http://$host/v2/" >/dev/null || { echo "push.sh: registry did not start:" >&2; cat "$work/registry.log" >&2; exit 1; }

# --- the runs ----------------------------------------------------------------------------------
# Both tools read credentials from docker's config; the registry has no auth, so point it at an
# empty one.
export DOCKER_CONFIG=$work/docker
mkdir -p "$DOCKER_CONFIG"

now() { date +%s.%N; }
# timed NAME CMD...: runs CMD, appends "NAME seconds" to $work/times.
timed() {
	local name=$1 t0 t1
	shift
	t0=$(now)
	"$@" >/dev/null
	t1=$(now)
	local d
	d=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
	echo "$name $d" >>"$work/times"
	printf '  %-16s %7.3f s\n' "$name" "$d"
}
gf_push() { "$GPUFORGE" push --jobs "$JOBS" "$LAYOUT_DIR" "$1"; }
# crane has no --jobs flag: it always uploads 4 blobs at once (go-containerregistry's default).
crane_push() { "$CRANE" push "$LAYOUT_DIR" "$1" 2>/dev/null; }

echo "registry $host; image $(du -sh "$LAYOUT_DIR" | cut -f1) in ${#LAYER_MIB[@]} layers; $RUNS runs; --jobs $JOBS"
for run in $(seq "$RUNS"); do
	echo "run $run"
	tag=r$run-$$
	if ((run % 2)); then order=(gf crane); else order=(crane gf); fi
	for tool in "${order[@]}"; do
		case $tool in
		gf) timed gpuforge-cold gf_push "$host/bench/gpuforge-$tag:v1" ;;
		crane) timed crane-cold crane_push "$host/bench/crane-$tag:v1" ;;
		esac
	done
	for tool in "${order[@]}"; do
		case $tool in
		gf) timed gpuforge-noop gf_push "$host/bench/gpuforge-$tag:v1" ;;
		crane) timed crane-noop crane_push "$host/bench/crane-$tag:v1" ;;
		esac
	done
	for tool in "${order[@]}"; do
		case $tool in
		gf) timed gpuforge-start "$GPUFORGE" version ;;
		crane) timed crane-start "$CRANE" version ;;
		esac
	done
done

median() { grep "^$1 " "$work/times" | cut -d' ' -f2 | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo
printf '%-8s %12s %12s %8s\n' case "gpuforge (s)" "crane (s)" ratio
for c in cold noop start; do
	g=$(median gpuforge-$c)
	k=$(median crane-$c)
	printf '%-8s %12.3f %12.3f %8.2f\n' "$c" "$g" "$k" "$(awk -v g="$g" -v k="$k" 'BEGIN {print g / k}')"
done
echo "(median of $RUNS; ratio = gpuforge / crane)"
