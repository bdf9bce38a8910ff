#!/usr/bin/env bash
# Ingest durability cost (#13): small instances (64×64, ~10 KB) stored one per
# STOW request by 8 clients, on the embedded default (SQLite + files) and on
# PostgreSQL + S3 (s3s-fs), next to what the disk itself does: sequential
# 16 MiB writes with one fdatasync at the end (bandwidth), and 4 KiB writes each
# followed by a sync (the fsync rate, which bounds durable acknowledgements when
# every instance is made durable on its own).
#
#   bash benches/durability.sh [embedded|pg-s3|all]
#
# Environment: PHIM_BENCH_SMALL (dataset folder, generated once), PHIM_BENCH_WORK,
# CLIENTS ("8"), PHIM_BIN.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
which_profiles=${1:-all}
CLIENTS=${CLIENTS:-8}
DATA=${PHIM_BENCH_SMALL:-${TMPDIR:-/tmp}/phim-bench-small}
WORK=${PHIM_BENCH_WORK:-$(mktemp -d)}
mkdir -p "$WORK"

cargo build --release --bins >&2
PHIM=${PHIM_BIN:-target/release/phim}
LOAD=target/release/phim-load
# 2,000 instances of 64×64: 40 CT series of 25 slices and 1,000 CR.
[ -d "$DATA" ] || "$LOAD" gen --out "$DATA" --tiny --ct-studies 40 --ct-slices 25 --mr-studies 0 --cr 1000 --us 0

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM, $(uname -r), disk $(df -h "$WORK" | awk 'NR==2{print $1}')"
echo "dataset: $(find "$DATA" -name '*.dcm' | wc -l) instances, $(du -sm "$DATA" | cut -f1) MB"
echo -n "disk: 512 MB sequential with fdatasync: "
dd if=/dev/zero of="$WORK/dd.bin" bs=16M count=32 conv=fdatasync 2>&1 | tail -1 | awk -F, '{print $NF}'
echo -n "disk: 4 KiB writes, each synced (oflag=dsync), 2,000 of them: "
dd if=/dev/zero of="$WORK/dd.bin" bs=4k count=2000 oflag=dsync 2>&1 | tail -1 |
    awk -F, '{split($3, t, " "); printf "%.0f syncs/s (%s)\n", 2000 / t[1], $NF}'
rm -f "$WORK/dd.bin"

# shellcheck source=benches/lib.sh
. benches/lib.sh
trap bench_cleanup EXIT

if [ "$which_profiles" = all ] || [ "$which_profiles" = embedded ]; then
    rm -rf "$WORK/data"
    start_phim --thumbnails-at-ingest false
    "$LOAD" stow --url "http://$ADDR/dicomweb" --dir "$DATA" --clients "$CLIENTS" --batch 1 \
        --pid "$SERVER_PID" --label embedded --op stow.small
    stop_phim
fi

if [ "$which_profiles" = all ] || [ "$which_profiles" = pg-s3 ]; then
    start_backends
    rm -rf "$WORK/data"
    start_phim_pg_s3 durability --thumbnails-at-ingest false
    "$LOAD" stow --url "http://$ADDR/dicomweb" --dir "$DATA" --clients "$CLIENTS" --batch 1 \
        --pid "$SERVER_PID" --label pg-s3 --op stow.small
    stop_phim
fi
