#!/usr/bin/env bash
# Run the server (`make run`); arguments go to `phim serve`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo run --release --bin phim -- serve "$@"
