#!/usr/bin/env bash
# What a hostile STOW costs the server (issue #17): one request of 1,000,000
# empty parts (42 MB on the wire), sent to a fresh `phim serve` on the
# embedded profile; the server's resident memory is read from /proc before
# (idle), at its peak (VmHWM) and SETTLE (15) s after the answer (tokio keeps idle blocking
# threads, and their allocator arenas, for 10 s).
#
#   bash benches/stow_limits.sh      (env: PARTS=1000000, SETTLE=15, PHIM_BIN, PHIM_BASE_BIN)
#
# Modes:
#   limits     the defaults: the request is refused (413) at part 10,001
#   unlimited  --stow-max-parts above PARTS: every part is read and failed,
#              which shows the per-part state no longer grows with N
#   before     PHIM_BASE_BIN (a phim built before issue #17) on the same body
# Target: peak < idle + 100 MB, and back within 20 % of idle after.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PARTS=${PARTS:-1000000}
WORK=$(mktemp -d)
trap 'stop_phim; rm -rf "$WORK"' EXIT

if [ -z "${PHIM_BIN:-}" ]; then
    cargo build --release --bins >&2
    PHIM_BIN=target/release/phim
fi
# shellcheck source=benches/lib.sh
. benches/lib.sh

BODY=$WORK/body
python3 - "$BODY" "$PARTS" <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
part = b"--b\r\nContent-Type: application/dicom\r\n\r\n\r\n"
with open(path, "wb") as f:
    for _ in range(n // 10000):
        f.write(part * 10000)
    f.write(part * (n % 10000))
    f.write(b"--b--\r\n")
EOF

rss() { awk -v k="$2:" '$1 == k { print int($2 / 1024) }' "/proc/$1/status"; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM, $(uname -r)"
echo "request: $PARTS empty parts, $(( $(stat -c %s "$BODY") / 1000000 )) MB"
printf '%-10s %7s %9s %9s %9s %9s %10s\n' mode status seconds idle_MB peak_MB after_MB answer_KB
MODES="limits unlimited"
[ -n "${PHIM_BASE_BIN:-}" ] && MODES="before $MODES"
for mode in $MODES; do
    PHIM=$PHIM_BIN
    extra=()
    case $mode in
        before) PHIM=$PHIM_BASE_BIN ;;
        unlimited) extra=(--stow-max-parts $((PARTS + 1)) --stow-max-header-bytes 1000000000) ;;
    esac
    DATA_DIR=$WORK/data-$mode
    start_phim --dicom-listen off --thumbnails-at-ingest false "${extra[@]}"
    # Idle = at rest after one small STOW (one empty part), so that what a
    # first request initialises once (pools, caches) is not counted as the
    # big request's.
    printf -- '--b\r\nContent-Type: application/dicom\r\n\r\n\r\n--b--\r\n' >"$WORK/one"
    curl -s -o /dev/null -H 'Content-Type: multipart/related; type="application/dicom"; boundary=b' \
        --data-binary "@$WORK/one" "http://$ADDR/dicomweb/studies"
    sleep "${SETTLE:-15}"
    idle=$(rss "$SERVER_PID" VmRSS)
    start=$(date +%s.%N)
    status=$(curl -s -o "$WORK/answer" -w '%{http_code}' --max-time 900 \
        -H 'Content-Type: multipart/related; type="application/dicom"; boundary=b' \
        --data-binary "@$BODY" "http://$ADDR/dicomweb/studies" || true)
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    sleep "${SETTLE:-15}"
    peak=$(rss "$SERVER_PID" VmHWM)
    after=$(rss "$SERVER_PID" VmRSS)
    answer=$(( $(stat -c %s "$WORK/answer" 2>/dev/null || echo 0) / 1024 ))
    printf '%-10s %7s %9.1f %9s %9s %9s %10s\n' "$mode" "$status" "$secs" "$idle" "$peak" "$after" "$answer"
    stop_phim
done
