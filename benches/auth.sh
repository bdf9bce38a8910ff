#!/usr/bin/env bash
# What authentication and the audit trail cost: QIDO-RS and WADO-RS metadata
# at 8 clients on the embedded profile, the same dataset and questions, once
# without authentication and once with --require-auth and an API key (every
# request authenticated, authorised and audited), alternated REPS times in
# one run so that both see the same machine.
#
#   bash benches/auth.sh          (env: REPS=2, CLIENTS=8, COUNT=400, PHIM_BENCH_DATA)
#
# With PHIM_BASE_BIN (a phim built before authentication and the audit trail
# existed, e.g. from commit d06a9e9), a third mode "before" runs it on its own
# copy of the dataset: the cost of the audit trail shows against it.
#
# Prints phim-load's lines and a table of p50/p99 and req/s per operation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPS=${REPS:-2}
CLIENTS=${CLIENTS:-8}
COUNT=${COUNT:-400}
DATA=${PHIM_BENCH_DATA:-${TMPDIR:-/tmp}/phim-bench-data}
WORK=$(mktemp -d)
trap 'stop_phim; rm -rf "$WORK"' EXIT

cargo build --release --bins >&2
PHIM=target/release/phim
LOAD=target/release/phim-load
[ -d "$DATA" ] || "$LOAD" gen --out "$DATA" >&2

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM, $(uname -r)"
# shellcheck source=benches/lib.sh
. benches/lib.sh
start_quiet() { start_phim --dicom-listen off --thumbnails-at-ingest false "$@"; }

start_quiet
"$LOAD" stow --url "http://$ADDR/dicomweb" --dir "$DATA" --clients 4 --batch 8 >&2
stop_phim
KEY=$("$PHIM" api-key create --name bench --role radiologist --data-dir "$WORK/data" 2>/dev/null)

MODES="open auth"
if [ -n "${PHIM_BASE_BIN:-}" ]; then
    MODES="before open auth"
    CURRENT=$PHIM; PHIM=$PHIM_BASE_BIN; DATA_DIR=$WORK/base-data
    start_quiet
    "$LOAD" stow --url "http://$ADDR/dicomweb" --dir "$DATA" --clients 4 --batch 8 >&2
    stop_phim
    PHIM=$CURRENT; unset DATA_DIR
fi

RESULTS=$WORK/results.tsv
for rep in $(seq 1 "$REPS"); do
    for mode in $MODES; do
        unset PHIM_LOAD_TOKEN
        case $mode in
            before) CURRENT=$PHIM; PHIM=$PHIM_BASE_BIN; DATA_DIR=$WORK/base-data; start_quiet; PHIM=$CURRENT; unset DATA_DIR ;;
            open) start_quiet ;;
            auth) start_quiet --require-auth; export PHIM_LOAD_TOKEN=$KEY ;;
        esac
        for op in qido metadata; do
            "$LOAD" "$op" --url "http://$ADDR/dicomweb" --dir "$DATA" --clients "$CLIENTS" \
                --count "$COUNT" --label "$mode" --results "$RESULTS"
        done
        stop_phim
    done
done
unset PHIM_LOAD_TOKEN
echo
echo "audit rows written: $(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from audit_log').fetchone()[0])" "$WORK/data/index.db")"
python3 - "$RESULTS" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, op, metric, value = line.rstrip("\n").split("\t")
    try:
        rows[(op, metric, label)].append(float(value))
    except ValueError:
        pass
ops = sorted({op for op, _, _ in rows})
labels = [l for l in ("before", "open", "auth") if any(k[2] == l for k in rows)]
ref = labels[0]
print(f"{'operation':30} {'metric':7} " + " ".join(f"{l:>9}" for l in labels) + " " +
      " ".join(f"{l + ' vs ' + ref:>15}" for l in labels[1:]))
for op in ops:
    for metric in ("rps", "p50_ms", "p99_ms"):
        vals = [rows.get((op, metric, l)) for l in labels]
        if not all(vals):
            continue
        vals = [statistics.median(v) for v in vals]
        diffs = [f"{(v / vals[0] - 1) * 100:+.1f} %" if metric == "rps" else f"{v - vals[0]:+.2f} ms" for v in vals[1:]]
        print(f"{op:30} {metric:7} " + " ".join(f"{v:9.2f}" for v in vals) + " " + " ".join(f"{d:>15}" for d in diffs))
PY
