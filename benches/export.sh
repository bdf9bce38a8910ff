#!/usr/bin/env bash
# Export benchmark (#12): one study holding a large multi-frame instance
# (FRAMES frames of 640x480 RGB, 2,000 = 1.8 GB) on the embedded default,
# retrieved as a ZIP (Accept: application/zip), as a ZIP with a DICOMDIR, and
# as WADO-RS multipart for comparison: MB/s, and the server's RSS before and
# at its peak during each (sampled every 100 ms). A streamed export keeps the
# peak flat whatever the study's size.
#
#   bash benches/export.sh
#
# Environment: FRAMES (2000), PHIM_BENCH_WORK (scratch folder, default a
# mktemp dir, removed after), PHIM_BIN (the phim to measure; default this
# tree's release build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FRAMES=${FRAMES:-2000}
WORK=${PHIM_BENCH_WORK:-$(mktemp -d)}
mkdir -p "$WORK"

cargo build --release --bins >&2
PHIM=${PHIM_BIN:-target/release/phim}
LOAD=target/release/phim-load

# shellcheck source=benches/lib.sh
. benches/lib.sh
trap 'stop_phim; rm -rf "$WORK"' EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM, $(uname -r)"
"$LOAD" gen-large --out "$WORK/large" --frames "$FRAMES" >&2
file=$WORK/large/large-cine.dcm
size=$(stat -c %s "$file")
echo "study: one instance of $FRAMES frames, $((size / 1000000)) MB"
start_phim
# -T streams the file (--data-binary @file would read it into curl's memory).
curl -sf -X POST -T "$file" -H 'Content-Type: application/dicom' \
    "http://$ADDR/dicomweb/studies" >/dev/null
rm -rf "$WORK/large"
study=$(curl -sf "http://$ADDR/dicomweb/studies" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["0020000D"]["Value"][0])')

rss_mb() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$SERVER_PID/status"; }

# measure LABEL ACCEPT [QUERY]: one retrieval to /dev/null, RSS sampled meanwhile.
measure() {
    local label=$1 accept=$2 query=${3:-}
    local before peak out
    before=$(rss_mb)
    peak=$before
    curl -sf -H "Accept: $accept" -o /dev/null -w '%{size_download} %{time_total}\n' \
        "http://$ADDR/dicomweb/studies/$study$query" >"$WORK/curl.out" &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        local now
        now=$(rss_mb)
        [ "$now" -gt "$peak" ] && peak=$now
        sleep 0.1
    done
    wait "$pid"
    read -r bytes secs <"$WORK/curl.out"
    out=$(python3 -c "print(f'{$bytes / 1e6 / $secs:.0f}')")
    printf '%-28s %6d MB in %5.1f s = %5s MB/s; server RSS %4d MB before, %4d MB peak\n' \
        "$label" "$((bytes / 1000000))" "$secs" "$out" "$before" "$peak"
}

measure "ZIP" "application/zip"
measure "ZIP with DICOMDIR" "application/zip" "?dicomdir=true"
measure "WADO-RS multipart (as stored)" 'multipart/related; type="application/dicom"; transfer-syntax=*'
