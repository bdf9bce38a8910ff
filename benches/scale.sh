#!/usr/bin/env bash
# Scale benchmark (#13): 1, 2 and 3 Phim servers behind HAProxy on PostgreSQL and a
# 3-node Garage cluster; STOW and WADO-RS throughput per server count (benches/scale.py).
# Needs what `make test` installs (haproxy, the venv, Garage in ~/.cache/phim-tools).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bins >&2
export PHIM_BIN=${PHIM_BIN:-$PWD/target/release/phim} PHIM_LOAD_BIN=$PWD/target/release/phim-load
export PHIM_BENCH_DATA=${PHIM_BENCH_DATA:-${TMPDIR:-/tmp}/phim-bench-data}
[ -d "$PHIM_BENCH_DATA" ] || "$PHIM_LOAD_BIN" gen --out "$PHIM_BENCH_DATA"
PHIM_GARAGE_BIN=$(bash scripts/services/garage-install.sh)
export PHIM_GARAGE_BIN
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM, $(uname -r)"
echo "dataset: $(find "$PHIM_BENCH_DATA" -name '*.dcm' | wc -l) instances, $(du -sm "$PHIM_BENCH_DATA" | cut -f1) MB"
set -a
eval "$(bash scripts/services/pg-start.sh)"
set +a
trap 'bash scripts/services/pg-stop.sh >/dev/null 2>&1 || true' EXIT
.venv-test/bin/python benches/scale.py
