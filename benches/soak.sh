#!/usr/bin/env bash
# Soak benchmark (#13): CLIENTS (64) concurrent clients mixing STOW (new 64×64
# instances), QIDO, WADO metadata, frames and rendered JPEGs for DURATION
# (600 s) against a server loaded with the benchmark dataset, on the embedded
# default (SQLite + files) and on PostgreSQL + S3 (s3s-fs); the server's RSS
# is sampled every 10 s. Targets: 0 errors, RSS flat after the 60 s warm-up.
#
#   bash benches/soak.sh [embedded|pg-s3|all]     (default: all)
#
# Environment: PHIM_BENCH_DATA (dataset folder, generated once), PHIM_BENCH_WORK,
# CLIENTS, DURATION, PHIM_BIN (the phim to measure; default the release build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
which_profiles=${1:-all}
CLIENTS=${CLIENTS:-64}
DURATION=${DURATION:-600}
DATA=${PHIM_BENCH_DATA:-${TMPDIR:-/tmp}/phim-bench-data}
WORK=${PHIM_BENCH_WORK:-$(mktemp -d)}
mkdir -p "$WORK"

cargo build --release --bins >&2
PHIM=${PHIM_BIN:-target/release/phim}
LOAD=target/release/phim-load
[ -d "$DATA" ] || "$LOAD" gen --out "$DATA"

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM, $(uname -r)"
echo "dataset: $(find "$DATA" -name '*.dcm' | wc -l) instances, $(du -sm "$DATA" | cut -f1) MB; $CLIENTS clients for $DURATION s"

# shellcheck source=benches/lib.sh
. benches/lib.sh

trap bench_cleanup EXIT

soak() { # label
    "$LOAD" stow --url "http://$ADDR/dicomweb" --dir "$DATA" --clients 8 --label "$1" >/dev/null
    "$LOAD" soak --url "http://$ADDR/dicomweb" --dataset "$DATA" --clients "$CLIENTS" \
        --duration "$DURATION" --pid "$SERVER_PID" --label "$1"
}

if [ "$which_profiles" = all ] || [ "$which_profiles" = embedded ]; then
    rm -rf "$WORK/data"
    start_phim
    soak embedded
    stop_phim
fi

if [ "$which_profiles" = all ] || [ "$which_profiles" = pg-s3 ]; then
    start_backends
    rm -rf "$WORK/data"
    start_phim_pg_s3 soak
    soak pg-s3
    stop_phim
fi
