#!/usr/bin/env bash
# Start a throwaway S3-compatible server (s3s-fs) on a free loopback port for the test suite.
#
# stdout: KEY=value lines only (meant for `eval "$(bash scripts/services/s3-start.sh)"`).
# stderr: logs (and the output of `cargo install` the first time).
#
# s3s-fs is installed with cargo into $PHIM_TOOLS_DIR (default ~/.cache/phim-tools) when
# missing: version 0.14.1 (later versions need a newer rustc than the project's).
# Printed: PHIM_TEST_S3_ENDPOINT, PHIM_TEST_S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_REGION, S3_PID, S3_DIR, and PHIM_S3S_BIN (the binary, for tests that run their own). scripts/services/s3-stop.sh reads S3_PID and S3_DIR.
set -euo pipefail

log() { echo "[s3-start] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

S3S_VERSION=0.14.1
TOOLS=${PHIM_TOOLS_DIR:-$HOME/.cache/phim-tools}
S3S=$TOOLS/bin/s3s-fs
BUCKET=${PHIM_TEST_S3_BUCKET:-phim-test}
ACCESS_KEY=phimtestkey
SECRET_KEY=phimtestsecret0123456789
REGION=us-east-1

if [ ! -x "$S3S" ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (needed to install s3s-fs)"
    mkdir -p "$TOOLS"
    # Two test runs starting at once must not both install into $TOOLS.
    exec 9>"$TOOLS/.install.lock"
    flock 9
    if [ ! -x "$S3S" ]; then
        log "installing s3s-fs $S3S_VERSION into $TOOLS (one-time, takes a few minutes)"
        # cargo writes progress to stderr; keep stdout clean for the KEY=value lines.
        cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$TOOLS" 1>&2 \
            || die "cargo install s3s-fs failed"
    fi
    flock -u 9
    exec 9>&-
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

port_answers() {
    python3 - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

S3_DIR=$(mktemp -d /tmp/phim-s3.XXXXXX)
mkdir -p "$S3_DIR/root/$BUCKET"
pid=""
# shellcheck disable=SC2317  # called from the EXIT trap
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
        rm -rf "$S3_DIR"
    fi
}
trap on_exit EXIT

# The port is picked before s3s-fs binds it, so another process could take it in between:
# retry a few times with a new port.
for attempt in 1 2 3; do
    PORT=$(free_port)
    log "starting s3s-fs on 127.0.0.1:$PORT (root $S3_DIR/root, attempt $attempt)"
    # Detach fully from our stdout (the caller's command substitution waits for it to close).
    RUST_LOG=${PHIM_S3S_LOG:-info} nohup "$S3S" --host 127.0.0.1 --port "$PORT" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$S3_DIR/root" \
        </dev/null >"$S3_DIR/s3s-fs.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        if port_answers "$PORT"; then
            log "s3s-fs is up (pid $pid)"
            echo "PHIM_TEST_S3_ENDPOINT=http://127.0.0.1:$PORT"
            echo "PHIM_TEST_S3_BUCKET=$BUCKET"
            echo "AWS_ACCESS_KEY_ID=$ACCESS_KEY"
            echo "AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
            echo "AWS_REGION=$REGION"
            echo "AWS_DEFAULT_REGION=$REGION"
            echo "S3_PID=$pid"
            echo "S3_DIR=$S3_DIR"
            echo "PHIM_S3S_BIN=$S3S"
            exit 0
        fi
        sleep 0.2
    done
    log "s3s-fs did not come up on port $PORT; its log:"
    sed 's/^/  | /' "$S3_DIR/s3s-fs.log" >&2 || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
done
die "could not start s3s-fs"
