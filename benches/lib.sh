# Shared by the benchmark scripts (sourced): start and stop `phim serve`.
# Needs PHIM (the binary) and WORK (scratch folder); the data folder is
# DATA_DIR (default $WORK/data). Sets SERVER_PID and ADDR.

SERVER_PID=
start_phim() { # args: extra phim serve flags
    local log="$WORK/phim.log"
    "$PHIM" serve --listen 127.0.0.1:0 --data-dir "${DATA_DIR:-$WORK/data}" "$@" 2>"$log" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        ADDR=$(grep -oE 'listening on http://[0-9.]+:[0-9]+' "$log" | head -1 | sed 's|listening on http://||') || true
        [ -n "${ADDR:-}" ] && return 0
        sleep 0.1
    done
    cat "$log" >&2
    return 1
}
stop_phim() {
    [ -n "${SERVER_PID:-}" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
