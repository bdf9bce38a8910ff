#!/usr/bin/env bash
# Run the server (`make run`); arguments go to `phim serve`.
# Builds the web viewer first (viewer/dist, served at /).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/build-viewer.sh
exec cargo run --release --bin phim -- serve "$@"
