#!/usr/bin/env bash
# Viewer benchmark (issue #7): first image after a click in the study list,
# whole 300-slice CT stack cached, and per-slice scroll latency, in Debian's
# headless Chromium against a release `phim serve` (embedded default).
#
#   bash benches/viewer.sh        (REPS=10 SLICES=300; needs `make test` run once
#                                  for chromium and tests/e2e/node_modules)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bins >&2
bash scripts/build-viewer.sh >&2
[ -d tests/e2e/node_modules ] || (cd tests/e2e && npm ci --no-audit --no-fund >&2)
echo "== $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
node benches/viewer.mjs
