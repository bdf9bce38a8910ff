#!/usr/bin/env bash
# Run the server (`make run`); arguments go to `phim serve`.
# Installs the C/C++ build tools the JPEG-LS and 12-bit JPEG codecs need (cmake, g++) when
# missing, builds the web viewer (viewer/dist, served at /), then the server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing build tools: ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash scripts/build-viewer.sh
exec cargo run --release --bin phim -- serve "$@"
