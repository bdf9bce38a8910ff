#!/usr/bin/env bash
# C-STORE ingest benchmark: dcmtk's storescu sends a generated CT study to
# Phim (embedded default) over 1 association and over 4 parallel ones, and to
# a do-nothing `storescp --ignore` sink as the upper bound.
#
#   bash benches/cstore.sh            (SLICES=300 by default)
#
# TCP_NODELAY=1 is set for storescu: dcmtk leaves Nagle's algorithm on by
# default, which caps any receiver at ~14 instances/s and measures the client.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SLICES=${SLICES:-300}
WORK=${PHIM_BENCH_WORK:-$(mktemp -d)}
command -v storescu >/dev/null || { apt-get update -qq && apt-get install -y -qq dcmtk >/dev/null; }
cargo build --release --bins >&2
PHIM=target/release/phim
DATA="$WORK/ct"
if [ ! -d "$DATA" ]; then
    target/release/phim-load gen --out "$DATA" --ct-studies 1 --ct-slices "$SLICES" \
        --mr-studies 0 --cr 0 --us 0 >&2
fi
FILES=$(find "$DATA" -name '*.dcm' | sort)
N=$(echo "$FILES" | wc -l)
MB=$(du -sm "$DATA" | cut -f1)
export TCP_NODELAY=1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rate() { # label seconds
    python3 -c "import sys; n,mb,s=$N,$MB,float(sys.argv[2]); print(f'{sys.argv[1]}: {n} instances, {mb} MB in {s:.2f} s = {n/s:.0f} inst/s, {mb/s:.0f} MB/s')" "$1" "$2"
}

send() { # port parallel
    local port=$1 par=$2 t0 t1
    rm -rf "$WORK/split"; mkdir -p "$WORK/split"
    local i=0
    for f in $FILES; do d="$WORK/split/$((i % par))"; mkdir -p "$d"; ln -s "$f" "$d/"; i=$((i+1)); done
    t0=$(date +%s.%N)
    for d in "$WORK"/split/*; do storescu -aec PHIM "127.0.0.1" "$port" +sd "$d" >/dev/null 2>&1 & done
    wait
    t1=$(date +%s.%N)
    python3 -c "print($t1-$t0)"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM; study: $N CT slices, $MB MB"

port=$(free_port)
storescp --ignore "$port" &
SINK=$!
sleep 0.5
rate "storescp --ignore sink, 1 association" "$(send "$port" 1)"
kill $SINK; wait $SINK 2>/dev/null || true

for par in 1 4; do
    rm -rf "$WORK/data"
    dport=$(free_port)
    "$PHIM" serve --listen 127.0.0.1:0 --dicom-listen "127.0.0.1:$dport" --data-dir "$WORK/data" 2>"$WORK/phim.log" &
    PID=$!
    for _ in $(seq 50); do grep -q "DICOM listening" "$WORK/phim.log" && break; sleep 0.1; done
    rate "phim embedded, $par association(s)" "$(send "$dport" "$par")"
    echo "  server peak RSS: $(awk '/VmHWM/{print int($2/1024)" MB"}' /proc/$PID/status)"
    kill $PID; wait $PID 2>/dev/null || true
done
