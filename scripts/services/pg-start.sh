#!/usr/bin/env bash
# Provide a PostgreSQL database for the test suite.
#
# stdout: KEY=value lines only (meant for `eval "$(bash scripts/services/pg-start.sh)"`).
# stderr: logs.
#
# Mode "existing": a server answers on 127.0.0.1:5432 with trust auth. A fresh database
#   phim_test_<random> is created there (role `postgres`, else `root`).
# Mode "cluster": nothing answers there. A throwaway cluster is initialised in a mktemp
#   dir (as OS user postgres), started on 127.0.0.1:5440 (or a free port when 5440 is
#   taken) with fsync=off and trust auth, and a database phim_test_<random> is created in it.
#   If initdb is missing, Debian's `postgresql` package is installed first.
#
# Printed: PHIM_TEST_DATABASE_URL, PG_MODE, PG_HOST, PG_PORT, PG_USER, PG_DBNAME and, in
# cluster mode, PG_CLUSTER_DIR and PG_BINDIR. scripts/services/pg-stop.sh reads them from the
# environment (or as KEY=value arguments) to undo what was done.
set -euo pipefail

log() { echo "[pg-start] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

HOST=127.0.0.1
EXISTING_PORT=${PHIM_PG_EXISTING_PORT:-5432}
CLUSTER_PORT=${PHIM_PG_CLUSTER_PORT:-5440}
DBNAME="phim_test_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

apt_updated=0
apt_install() {
    [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

command -v psql >/dev/null 2>&1 || apt_install postgresql-client
command -v pg_isready >/dev/null 2>&1 || apt_install postgresql-client

emit() {
    local mode=$1 port=$2 user=$3
    echo "PHIM_TEST_DATABASE_URL=postgres://${user}@${HOST}:${port}/${DBNAME}"
    echo "PG_MODE=${mode}"
    echo "PG_HOST=${HOST}"
    echo "PG_PORT=${port}"
    echo "PG_USER=${user}"
    echo "PG_DBNAME=${DBNAME}"
}

# --- mode "existing" -------------------------------------------------------------------
if pg_isready -q -h "$HOST" -p "$EXISTING_PORT" -t 3; then
    for role in postgres root; do
        if PGCONNECT_TIMEOUT=5 psql -X -q -h "$HOST" -p "$EXISTING_PORT" -U "$role" -d postgres \
                -v ON_ERROR_STOP=1 -Atc 'SELECT 1' </dev/null >/dev/null 2>&1; then
            if PGCONNECT_TIMEOUT=5 psql -X -q -h "$HOST" -p "$EXISTING_PORT" -U "$role" -d postgres \
                    -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$DBNAME\"" </dev/null >&2; then
                log "using the server on $HOST:$EXISTING_PORT as role $role, database $DBNAME"
                emit existing "$EXISTING_PORT" "$role"
                exit 0
            fi
            log "role $role can connect but could not create a database"
        fi
    done
    log "a server answers on $HOST:$EXISTING_PORT but no role (postgres, root) works with trust auth; starting a throwaway cluster instead"
else
    log "nothing answers on $HOST:$EXISTING_PORT; starting a throwaway cluster"
fi

# --- mode "cluster" --------------------------------------------------------------------
find_bindir() {
    local d
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    return 1
}

if ! BINDIR=$(find_bindir); then
    [ "$(id -u)" = 0 ] || die "initdb not found and not root"
    # Keep the package from creating and starting its own cluster on 5432.
    mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    apt_install postgresql
    BINDIR=$(find_bindir) || die "initdb still not found after installing postgresql"
fi
log "using PostgreSQL binaries in $BINDIR"

if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    as_pg() { runuser -u postgres -- "$@"; }
    PGUSER_OS=postgres
else
    as_pg() { "$@"; }
    PGUSER_OS=$(id -un)
fi

port_free() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}
PORT=$CLUSTER_PORT
if ! port_free "$PORT"; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    log "port $CLUSTER_PORT is taken; using $PORT"
fi

CLUSTER_DIR=$(mktemp -d /tmp/phim-pg.XXXXXX)
chown "$PGUSER_OS" "$CLUSTER_DIR"
chmod 700 "$CLUSTER_DIR"
cleanup_on_error() {
    as_pg "$BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
}
# shellcheck disable=SC2317  # called from the EXIT trap
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then cleanup_on_error; fi
}
trap on_exit EXIT

log "initdb in $CLUSTER_DIR/data"
as_pg "$BINDIR/initdb" -D "$CLUSTER_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$CLUSTER_DIR/initdb.log" 2>&1 \
    || as_pg "$BINDIR/initdb" -D "$CLUSTER_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C >"$CLUSTER_DIR/initdb.log" 2>&1 \
    || { cat "$CLUSTER_DIR/initdb.log" >&2; die "initdb failed"; }

cat >>"$CLUSTER_DIR/data/postgresql.conf" <<CONF
# phim test cluster
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$CLUSTER_DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF

log "starting cluster on $HOST:$PORT"
if ! as_pg "$BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w -t 60 start >&2; then
    cat "$CLUSTER_DIR/server.log" >&2 || true
    die "pg_ctl start failed"
fi
for _ in $(seq 1 60); do
    pg_isready -q -h "$HOST" -p "$PORT" -t 1 && break
    sleep 0.5
done
pg_isready -q -h "$HOST" -p "$PORT" -t 3 || die "cluster does not answer on $HOST:$PORT"

psql -X -q -h "$HOST" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE \"$DBNAME\"" </dev/null >&2 || die "CREATE DATABASE failed"

emit cluster "$PORT" postgres
echo "PG_CLUSTER_DIR=${CLUSTER_DIR}"
echo "PG_BINDIR=${BINDIR}"
log "cluster ready: postgres://postgres@$HOST:$PORT/$DBNAME (dir $CLUSTER_DIR)"
