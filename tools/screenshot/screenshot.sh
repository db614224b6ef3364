#!/usr/bin/env bash
# Screenshot an HTML file with headless Chromium, e.g. a validation report written by
# validate.WriteHTML:
#
#   tools/screenshot/screenshot.sh docs/validation/report-example.html docs/validation/report-example.png
#   WIDTH=1200 HEIGHT=1400 tools/screenshot/screenshot.sh in.html out.png
#
# Needs Debian's chromium (apt-get install -y chromium); CHROMIUM names another binary. The
# page is loaded from file:// with networking features off, so nothing outside it is fetched
# (gpuforge's reports are self-contained). --no-sandbox is needed when running as root; each
# run uses a fresh, throw-away profile. Not part of `make test`.
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 IN.html OUT.png   (WIDTH, HEIGHT and CHROMIUM may be set)" >&2
	exit 2
fi
in=$1
out=$2
width=${WIDTH:-1200}
height=${HEIGHT:-900}

chromium=${CHROMIUM:-}
if [ -z "$chromium" ]; then
	for c in chromium chromium-browser google-chrome; do
		if command -v "$c" >/dev/null; then chromium=$c; break; fi
	done
fi
if [ -z "$chromium" ]; then
	echo "$0: no chromium found; install it with: apt-get install -y chromium" >&2
	exit 1
fi
[ -f "$in" ] || { echo "$0: $in: no such file" >&2; exit 1; }

abs_in=$(cd "$(dirname "$in")" && pwd)/$(basename "$in")
mkdir -p "$(dirname "$out")"
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

"$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
	--disable-component-update --disable-sync --no-first-run --hide-scrollbars \
	--run-all-compositor-stages-before-draw --virtual-time-budget=5000 \
	--user-data-dir="$profile" --window-size="$width,$height" \
	--screenshot="$abs_out" "file://$abs_in" >"$profile/chromium.log" 2>&1 || {
	cat "$profile/chromium.log" >&2
	exit 1
}
[ -s "$abs_out" ] || { cat "$profile/chromium.log" >&2; echo "$0: no screenshot written" >&2; exit 1; }
echo "$out"
