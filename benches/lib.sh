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

# The PostgreSQL + S3 (s3s-fs) back ends of the pg-s3 profile, started once per
# script (exports their variables); bench_cleanup stops them and the server.
start_backends() {
    set -a
    eval "$(bash scripts/services/pg-start.sh)"
    eval "$(bash scripts/services/s3-start.sh)"
    set +a
}
bench_cleanup() {
    stop_phim
    [ -n "${S3_PID:-}" ] && bash scripts/services/s3-stop.sh >/dev/null 2>&1 || true
    [ -n "${PG_MODE:-}" ] && bash scripts/services/pg-stop.sh >/dev/null 2>&1 || true
}
# start_phim on the pg-s3 back ends, objects under key prefix $1; more flags after it.
start_phim_pg_s3() {
    local prefix=$1
    shift
    start_phim --database-url "$PHIM_TEST_DATABASE_URL" \
        --store "s3://$PHIM_TEST_S3_BUCKET/$prefix" --s3-endpoint "$PHIM_TEST_S3_ENDPOINT" \
        --s3-region us-east-1 --allow-http "$@"
}
