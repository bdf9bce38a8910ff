#!/usr/bin/env bash
# Undo scripts/services/pg-start.sh. Reads PG_MODE, PG_HOST, PG_PORT, PG_USER, PG_DBNAME,
# PG_CLUSTER_DIR, PG_BINDIR from the environment; KEY=value arguments override them.
# Logs to stderr. Idempotent: safe to call twice or when nothing was started.
set -uo pipefail

log() { echo "[pg-stop] $*" >&2; }

for kv in "$@"; do
    case "$kv" in
        PG_*=*) export "${kv?}" ;;
        *) log "ignoring argument $kv" ;;
    esac
done

PG_MODE=${PG_MODE:-}
PG_HOST=${PG_HOST:-127.0.0.1}
case "$PG_MODE" in
    existing)
        [ -n "${PG_DBNAME:-}" ] || { log "PG_DBNAME not set; nothing to drop"; exit 0; }
        case "$PG_DBNAME" in
            phim_test_*) ;;
            *) log "refusing to drop database '$PG_DBNAME' (not phim_test_*)"; exit 1 ;;
        esac
        psql_admin() {
            psql -X -q -h "$PG_HOST" -p "${PG_PORT:-5432}" -U "${PG_USER:-postgres}" -d postgres \
                -v ON_ERROR_STOP=1 "$@" </dev/null
        }
        # The Python fixtures make one database per server, named "${PG_DBNAME}_<hex>", and
        # drop it themselves; drop leftovers of this run (e.g. after a crash) here.
        leftovers=$(psql_admin -Atc "SELECT datname FROM pg_database WHERE datname LIKE '${PG_DBNAME}\_%'" 2>/dev/null || true)
        for db in $leftovers; do
            psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >&2 && log "dropped leftover database $db"
        done
        if psql -X -q -h "$PG_HOST" -p "${PG_PORT:-5432}" -U "${PG_USER:-postgres}" -d postgres \
                -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$PG_DBNAME\" WITH (FORCE)" </dev/null >&2; then
            log "dropped database $PG_DBNAME"
        else
            log "could not drop database $PG_DBNAME"
            exit 1
        fi
        ;;
    cluster)
        dir=${PG_CLUSTER_DIR:-}
        case "$dir" in
            /tmp/phim-pg.*) ;;
            *) log "refusing to remove cluster dir '$dir'"; exit 1 ;;
        esac
        if [ -d "$dir/data" ]; then
            bindir=${PG_BINDIR:-$(dirname "$(readlink -f "$(command -v pg_ctl)")")}
            if [ "$(id -u)" = 0 ]; then
                runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >&2 \
                    || runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >&2 || true
            else
                "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >&2 \
                    || "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >&2 || true
            fi
        fi
        rm -rf "$dir"
        log "stopped and removed cluster $dir"
        ;;
    "")
        log "PG_MODE not set; nothing to stop"
        ;;
    *)
        log "unknown PG_MODE '$PG_MODE'"
        exit 1
        ;;
esac
