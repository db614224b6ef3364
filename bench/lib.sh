# Sourced by the bench scripts: builds bin/gpuforge, makes a work directory ($work, removed on exit)
# and starts a fresh buildkitd in it (socket $sock, empty cache), stopped on exit.
make --no-print-directory build >/dev/null
work=$(mktemp -d)
trap 'kill $(cat "$work/bk.pid" 2>/dev/null) 2>/dev/null || true; sleep 1; rm -rf "$work"' EXIT
sock="$work/bk.sock"
bin/buildkitd --root "$work/root" --addr "unix://$sock" --oci-worker=true --containerd-worker=false >"$work/bk.log" 2>&1 &
echo $! >"$work/bk.pid"
for _ in $(seq 50); do bin/buildctl --addr "unix://$sock" debug workers >/dev/null 2>&1 && break; sleep 0.2; done
