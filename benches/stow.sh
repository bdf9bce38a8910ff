#!/usr/bin/env bash
# STOW-RS ingest benchmark: Phim on the embedded default (SQLite + files)
# and on PostgreSQL + S3 (s3s-fs), with 1, 4 and 8 concurrent clients, plus
# the disk's own sequential write speed with fdatasync as a reference.
#
#   bash benches/stow.sh [embedded|pg-s3|all]     (default: all)
#
# Environment: PHIM_BENCH_DATA (dataset folder, generated once),
# PHIM_BENCH_WORK (scratch folder, default a mktemp dir), CLIENTS ("1 4 8"),
# PHIM_BIN (the phim to measure; default this tree's release build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
which_profiles=${1:-all}
CLIENTS=${CLIENTS:-"1 4 8"}
DATA=${PHIM_BENCH_DATA:-${TMPDIR:-/tmp}/phim-bench-data}
WORK=${PHIM_BENCH_WORK:-$(mktemp -d)}
mkdir -p "$WORK"

cargo build --release --bins >&2
# PHIM_BIN: another phim build to measure (e.g. one from an earlier commit).
PHIM=${PHIM_BIN:-target/release/phim}
LOAD=target/release/phim-load
[ -d "$DATA" ] || "$LOAD" gen --out "$DATA"

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM, $(uname -r)"
echo "dataset: $(find "$DATA" -name '*.dcm' | wc -l) instances, $(du -sm "$DATA" | cut -f1) MB"
echo -n "reference: dd 512 MB with fdatasync: "
dd if=/dev/zero of="$WORK/dd.bin" bs=16M count=32 conv=fdatasync 2>&1 | tail -1 | awk -F, '{print $NF}'
rm -f "$WORK/dd.bin"

# shellcheck source=benches/lib.sh
. benches/lib.sh

trap bench_cleanup EXIT

if [ "$which_profiles" = all ] || [ "$which_profiles" = embedded ]; then
    for c in $CLIENTS; do
        rm -rf "$WORK/data"
        start_phim
        "$LOAD" stow --url "http://$ADDR/dicomweb" --dir "$DATA" --clients "$c" --pid "$SERVER_PID" --label embedded
        stop_phim
    done
fi

if [ "$which_profiles" = all ] || [ "$which_profiles" = pg-s3 ]; then
    start_backends
    for c in $CLIENTS; do
        rm -rf "$WORK/data"
        db="phim_bench_$RANDOM$RANDOM"
        psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c "CREATE DATABASE $db" >/dev/null
        start_phim --database-url "postgres://$PG_USER@$PG_HOST:$PG_PORT/$db" \
            --store "s3://$PHIM_TEST_S3_BUCKET/bench-$db" --s3-endpoint "$PHIM_TEST_S3_ENDPOINT" \
            --s3-region us-east-1 --allow-http
        "$LOAD" stow --url "http://$ADDR/dicomweb" --dir "$DATA" --clients "$c" --pid "$SERVER_PID" --label pg-s3
        stop_phim
        psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c "DROP DATABASE $db" >/dev/null
    done
fi
