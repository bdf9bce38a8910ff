#!/usr/bin/env bash
# Install Garage (a distributed S3 store, AGPL-3.0; used only as a test peer, never linked or
# shipped) into $PHIM_TOOLS_DIR/bin (default ~/.cache/phim-tools) when it is not there, and
# print its path. Built from crates.io source, pinned and --locked: ~16 min on 2 cores the first
# time, nothing after. Its build directory is a temporary one, removed afterwards.
set -euo pipefail

log() { echo "[garage-install] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

GARAGE_VERSION=2.5.0
TOOLS=${PHIM_TOOLS_DIR:-$HOME/.cache/phim-tools}
GARAGE=$TOOLS/bin/garage

installed() { [ -x "$GARAGE" ] && "$GARAGE" --version 2>/dev/null | grep -qF ":$GARAGE_VERSION "; }

if ! installed; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (needed to build garage)"
    mkdir -p "$TOOLS"
    exec 9>"$TOOLS/.install.lock"
    flock 9
    if ! installed; then
        log "building garage $GARAGE_VERSION into $TOOLS (one-time, ~16 min on 2 cores)"
        target=$(mktemp -d /tmp/phim-garage-build.XXXXXX)
        CARGO_TARGET_DIR=$target cargo install "garage@$GARAGE_VERSION" --locked --root "$TOOLS" 1>&2 \
            || { rm -rf "$target"; die "cargo install garage failed"; }
        rm -rf "$target"
    fi
    flock -u 9
    exec 9>&-
fi
echo "$GARAGE"
