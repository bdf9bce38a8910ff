#!/usr/bin/env bash
# Undo scripts/services/s3-start.sh: stop s3s-fs (S3_PID) and delete its data dir (S3_DIR).
# Reads them from the environment; S3_PID=... S3_DIR=... arguments override. Idempotent.
set -uo pipefail

log() { echo "[s3-stop] $*" >&2; }

for kv in "$@"; do
    case "$kv" in
        S3_PID=*|S3_DIR=*) export "${kv?}" ;;
        *) log "ignoring argument $kv" ;;
    esac
done

pid=${S3_PID:-}
dir=${S3_DIR:-}

if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # Only signal the process if it really is our s3s-fs.
    if grep -q "s3s-fs" "/proc/$pid/cmdline" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "s3s-fs (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped s3s-fs (pid $pid)"
    else
        log "pid $pid is not s3s-fs; not signalling it"
    fi
fi

if [ -n "$dir" ]; then
    case "$dir" in
        /tmp/phim-s3.*) rm -rf "$dir" && log "removed $dir" ;;
        *) log "refusing to remove '$dir'" ;;
    esac
fi
exit 0
