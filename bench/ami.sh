#!/usr/bin/env bash
# EBS direct upload throughput against internal/awsemu with 20 ms injected on every PutSnapshotBlock,
# for 8, 32 and 64 workers, next to the ideal (workers × 512 KiB / 20 ms), from
# BenchmarkUploadSnapshotLatency (builders/ami/bench_test.go: a 256 MiB disk of random data, every
# block sent). Then the end-to-end bake modelled for a real disk: the non-zero bytes of the disk given
# as the argument (default: the gpu-node-debian raw disk a `make` run left in .gpuforge/out) at the
# measured 64-worker rate, against the ImportSnapshot path's published timings.
#
#   bench/ami.sh [raw-disk]      (run from anywhere)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CGO_CFLAGS=-Wno-deprecated-declarations
out=$(go test ./builders/ami/ -run '^$' -bench BenchmarkUploadSnapshotLatency -benchtime 3x -count 1)
echo "$out" | grep -E '^Benchmark|^goos|^cpu'
rate64=$(echo "$out" | awk '/workers=64/ { for (i = 1; i < NF; i++) if ($(i+1) == "MiB/s") print $i }')
disk=${1:-.gpuforge/out/gpu-node-debian/gpu-node-debian.raw}
if [ -f "$disk" ]; then
  # Non-zero data the upload sends: allocated bytes of the sparse disk (holes are never read).
  alloc=$(( $(stat -c %b "$disk") * $(stat -c %B "$disk") ))
  awk -v a="$alloc" -v r="$rate64" 'BEGIN {
    mib = a / 1048576; up = mib / r
    printf "disk %s: %.0f MiB of data; upload at %.0f MiB/s (64 workers, 20 ms): %.1f s\n", "'"$disk"'", mib, r, up
    printf "ImportSnapshot, published: 15-18 min even for 16 MB (nanovms/ops#799, osbuild-composer#500): %.0fx-%.0fx slower than the upload\n", 900 / up, 1080 / up
  }'
fi
