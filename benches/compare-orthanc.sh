#!/usr/bin/env bash
# Phim and Orthanc side by side on the same data, in one run.
#
#   bash benches/compare-orthanc.sh [embedded|pg|all]      (default: all)
#
# Profiles:
#   embedded  Phim embedded (SQLite + files)  vs  Orthanc default (SQLite + files)
#   pg        Phim PostgreSQL + S3 (s3s-fs)   vs  Orthanc + PostgreSQL index (files for
#             storage: Debian has no Orthanc S3 plugin). Both use the same PostgreSQL
#             server, from scripts/services/pg-start.sh.
#
# What it does:
#   1. installs what is missing from Debian packages (orthanc, orthanc-dicomweb,
#      orthanc-postgresql, dcmtk), keeping the package's own Orthanc service stopped;
#   2. builds phim and phim-load (release) and generates two deterministic datasets once
#      (cached in $PHIM_COMPARE_DATA, default /tmp/phim-compare-data):
#      full  - 1 CT study of 449 512×512 slices, 2 MR × 50, 4 CR 2000×2500, 1 US cine
#              (40 frames 640×480 RGB): 554 instances, ~330 MB;
#      tiny  - 960 studies, 14,000 instances of 64×64 (QIDO index);
#   3. measures the machine's references: dd write with conv=fdatasync, page-cache read,
#      and a DICOM sink (storescp --ignore fed by storescu, one association);
#   4. per profile and repetition (alternating which server goes first), starts each
#      server on a free loopback port with fresh storage, STOWs the full dataset with
#      $STOW_CLIENTS clients, then measures WADO, metadata, rendered/thumbnail on it;
#   5. per profile, loads the tiny dataset into a fresh Phim and a fresh Orthanc, then
#      runs the QIDO mix against them alternately, $REPS times;
#   6. prints one table (min/median/max over repetitions, ratio Phim/Orthanc, the issue's
#      targets) from the rows phim-load appended to $RESULTS.
#
# Environment: REPS (3), STOW_CLIENTS (8), QIDO_COUNT (40 requests per query),
# READ_COUNT (20 requests per read operation), PHIM_COMPARE_DATA (dataset cache),
# RESULTS (rows file; default target/compare-orthanc/results-<time>.tsv).
# Everything it starts is stopped on exit; its scratch folder is removed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

WHICH=${1:-all}
case "$WHICH" in embedded|pg|all) ;; *) echo "usage: $0 [embedded|pg|all]" >&2; exit 2 ;; esac
REPS=${REPS:-3}
STOW_CLIENTS=${STOW_CLIENTS:-8}
QIDO_COUNT=${QIDO_COUNT:-40}
READ_COUNT=${READ_COUNT:-20}
DATA_ROOT=${PHIM_COMPARE_DATA:-${TMPDIR:-/tmp}/phim-compare-data}
FULL=$DATA_ROOT/full
TINY=$DATA_ROOT/tiny
mkdir -p "$ROOT/target/compare-orthanc"
RESULTS=${RESULTS:-$ROOT/target/compare-orthanc/results-$(date +%Y%m%d-%H%M%S).tsv}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/phim-compare.XXXXXX")

log() { echo "[compare] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ cleanup
PIDS=()          # servers and sinks started here
PG_STARTED=0
S3_STARTED=0
PG_DBS=()        # extra databases created on the PostgreSQL server
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "$PG_STARTED" = 1 ]; then
        for db in "${PG_DBS[@]}"; do
            psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres \
                -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" </dev/null >/dev/null 2>&1
        done
        bash "$ROOT/scripts/services/pg-stop.sh" >/dev/null 2>&1
    fi
    [ "$S3_STARTED" = 1 ] && bash "$ROOT/scripts/services/s3-stop.sh" >/dev/null 2>&1
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ 1. packages
APT_UPDATED=0
apt_install() {
    [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        apt-get update -qq >&2
        APT_UPDATED=1
    fi
    # The orthanc package starts its own service on 8042/4242: forbid service starts
    # during the install (unless the machine already has a policy).
    local policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    log "apt-get install $*"
    apt-get install -y -qq "$@" >&2 || { [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d; return 1; }
    [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
    return 0
}
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/{print $2}'; }

need=()
have_pkg orthanc || need+=(orthanc)
have_pkg orthanc-dicomweb || need+=(orthanc-dicomweb)
command -v storescp >/dev/null 2>&1 && command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
ORTHANC_PG_OK=0
if [ "$WHICH" != embedded ]; then
    if have_pkg orthanc-postgresql; then
        ORTHANC_PG_OK=1
    else
        if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq >&2; APT_UPDATED=1; fi
        c=$(candidate orthanc-postgresql)
        if [ -n "$c" ] && [ "$c" != "(none)" ] && apt_install orthanc-postgresql; then
            ORTHANC_PG_OK=1
        else
            log "orthanc-postgresql is not installable here: the pg profile runs Phim alone"
        fi
    fi
fi
# The package's own Orthanc (config in /etc/orthanc) must not run next to ours.
for pid in $(pgrep -x Orthanc || true); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '/etc/orthanc'; then
        log "stopping the system Orthanc service (pid $pid)"
        service orthanc stop >&2 2>&1 || true
    fi
done
plugin() { dpkg -L "$1" 2>/dev/null | grep -E "/$2\$" | head -1; }
DICOMWEB_SO=$(plugin orthanc-dicomweb libOrthancDicomWeb.so)
[ -n "$DICOMWEB_SO" ] || die "libOrthancDicomWeb.so not found in orthanc-dicomweb"
PG_INDEX_SO=""
[ "$ORTHANC_PG_OK" = 1 ] && PG_INDEX_SO=$(plugin orthanc-postgresql libOrthancPostgreSQLIndex.so)
ORTHANC_VERSION=$(Orthanc --version 2>/dev/null | head -1 || true)
DICOMWEB_VERSION=$(dpkg-query -W -f='${Version}' orthanc-dicomweb)

# ------------------------------------------------------------------ 2. build, datasets
log "cargo build --release --bin phim --bin phim-load"
cargo build --release --bin phim --bin phim-load >&2
PHIM=$ROOT/target/release/phim
LOAD=$ROOT/target/release/phim-load
if [ ! -f "$FULL/manifest.json" ]; then
    rm -rf "$FULL"
    "$LOAD" gen --out "$FULL" --ct-studies 1 --ct-slices 449 >&2
fi
if [ ! -f "$TINY/manifest.json" ]; then
    rm -rf "$TINY"
    "$LOAD" gen --out "$TINY" --tiny >&2
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

{
    echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
    echo "# orthanc: $ORTHANC_VERSION, dicomweb plugin $DICOMWEB_VERSION; phim: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "# full dataset: $(find "$FULL" -name '*.dcm' | wc -l) instances, $(du -sm "$FULL" | cut -f1) MB; tiny: $(find "$TINY" -name '*.dcm' | wc -l) instances, $(du -sm "$TINY" | cut -f1) MB"
    echo "# reps=$REPS stow_clients=$STOW_CLIENTS qido_count=$QIDO_COUNT read_count=$READ_COUNT"
} >>"$RESULTS"

# ------------------------------------------------------------------ 3. references
dd_rate() { # prints MB/s from dd's last line (bytes and seconds)
    awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) s = $(i-1); printf "%.1f\n", $1 / s / 1e6 }'
}
log "references: dd write (fdatasync), page-cache read, storescp sink"
CT_DIR=$FULL/$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(max(m["studies"], key=lambda s: len(s["instances"]))["dir"])' "$FULL/manifest.json")
CT_N=$(find "$CT_DIR" -name '*.dcm' | wc -l)
CT_MB=$(du -sm "$CT_DIR" | cut -f1)
for rep in $(seq 1 "$REPS"); do
    w=$(dd if=/dev/zero of="$WORK/dd.bin" bs=16M count=32 conv=fdatasync 2>&1 | dd_rate)
    row "reference|machine|$rep" dd_write mbps "$w"
    cat "$WORK/dd.bin" >/dev/null
    r=$(dd if="$WORK/dd.bin" of=/dev/null bs=1M 2>&1 | dd_rate)
    row "reference|machine|$rep" page_cache_read mbps "$r"
    rm -f "$WORK/dd.bin"
    port=$(free_port)
    # Debian's dcmtk leaves Nagle's algorithm on unless TCP_NODELAY=1 is in the
    # environment; on the receiving side it costs ~40 ms per C-STORE (delayed ACK).
    TCP_NODELAY=1 storescp --ignore -aet SINK "$port" >"$WORK/storescp.log" 2>&1 &
    sink=$!
    PIDS+=("$sink")
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    t0=$(date +%s.%N)
    TCP_NODELAY=1 storescu -aec SINK +sd +r 127.0.0.1 "$port" "$CT_DIR" >"$WORK/storescu.log" 2>&1 \
        || { cat "$WORK/storescu.log" >&2; die "storescu failed"; }
    t1=$(date +%s.%N)
    stop_pid "$sink"
    secs=$(echo "$t1 $t0" | awk '{print $1 - $2}')
    row "reference|machine|$rep" storescp_sink inst_s "$(echo "$CT_N $secs" | awk '{printf "%.1f", $1 / $2}')"
    row "reference|machine|$rep" storescp_sink mbps "$(echo "$CT_MB $secs" | awk '{printf "%.1f", $1 * 1.048576 / $2}')"
done

# ------------------------------------------------------------------ servers
SERVER_PID=
BASE_URL=
# start_phim PROFILE DIR: fresh Phim with storage under DIR.
start_phim() {
    local profile=$1 dir=$2 extra=()
    mkdir -p "$dir"
    if [ "$profile" = pg ]; then
        local db="${PG_DBNAME}_phim$RANDOM$RANDOM"
        psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c "CREATE DATABASE \"$db\"" </dev/null >/dev/null
        PG_DBS+=("$db")
        extra=(--database-url "postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
            --store "s3://$PHIM_TEST_S3_BUCKET/compare-$db" --s3-endpoint "$PHIM_TEST_S3_ENDPOINT"
            --s3-region us-east-1 --allow-http)
    fi
    "$PHIM" serve --listen 127.0.0.1:0 --data-dir "$dir/data" "${extra[@]}" 2>"$dir/phim.log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local addr=""
    for _ in $(seq 1 300); do
        addr=$(grep -oE 'listening on http://[0-9.]+:[0-9]+' "$dir/phim.log" | head -1 | sed 's|listening on http://||') || true
        [ -n "$addr" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$dir/phim.log" >&2; die "phim did not start"; }
    BASE_URL="http://$addr/dicomweb"
}
# start_orthanc PROFILE DIR: fresh Orthanc with its own JSON configuration.
start_orthanc() {
    local profile=$1 dir=$2 http dicom plugins pg=""
    mkdir -p "$dir/storage" "$dir/index"
    http=$(free_port)
    dicom=$(free_port)
    plugins="\"$DICOMWEB_SO\""
    if [ "$profile" = pg ]; then
        local db="${PG_DBNAME}_orthanc$RANDOM$RANDOM"
        psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c "CREATE DATABASE \"$db\"" </dev/null >/dev/null
        PG_DBS+=("$db")
        plugins="$plugins, \"$PG_INDEX_SO\""
        pg=",
  \"PostgreSQL\": { \"EnableIndex\": true, \"EnableStorage\": false, \"Host\": \"$PG_HOST\",
                  \"Port\": $PG_PORT, \"Database\": \"$db\", \"Username\": \"$PG_USER\",
                  \"Password\": \"\", \"EnableSsl\": false, \"Lock\": false }"
    fi
    cat >"$dir/orthanc.json" <<JSON
{
  "Name": "phim-compare",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/index",
  "HttpPort": $http,
  "DicomPort": $dicom,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "Plugins": [ $plugins ],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }$pg
}
JSON
    Orthanc "$dir/orthanc.json" >"$dir/orthanc.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 1 300); do
        curl -sf -o /dev/null "http://127.0.0.1:$http/dicom-web/studies?limit=1" && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    curl -sf -o /dev/null "http://127.0.0.1:$http/dicom-web/studies?limit=1" \
        || { tail -40 "$dir/orthanc.log" >&2; die "Orthanc did not start"; }
    BASE_URL="http://127.0.0.1:$http/dicom-web"
}
# start_server NAME PROFILE DIR
start_server() { if [ "$1" = phim ]; then start_phim "$2" "$3"; else start_orthanc "$2" "$3"; fi; }

servers_for() { # profile rep -> alternating order
    local list=(phim)
    { [ "$1" = embedded ] || [ "$ORTHANC_PG_OK" = 1 ]; } && list+=(orthanc)
    if [ $(($2 % 2)) = 0 ] && [ ${#list[@]} = 2 ]; then echo "orthanc phim"; else echo "${list[*]}"; fi
}

run_profile() {
    local profile=$1
    if [ "$profile" = pg ]; then
        if [ "$PG_STARTED" = 0 ]; then
            local env
            env=$(bash "$ROOT/scripts/services/pg-start.sh")
            set -a; eval "$env"; set +a
            PG_STARTED=1
            env=$(bash "$ROOT/scripts/services/s3-start.sh")
            set -a; eval "$env"; set +a
            S3_STARTED=1
        fi
    fi
    local rep srv c label last_c
    last_c=${STOW_CLIENTS##* }
    # STOW of the full dataset into fresh servers, then reads on it.
    for rep in $(seq 1 "$REPS"); do
        for srv in $(servers_for "$profile" "$rep"); do
            for c in $STOW_CLIENTS; do
                label="$profile|$srv|$rep"
                log "$label: STOW full dataset, $c clients"
                start_server "$srv" "$profile" "$WORK/$profile-$srv-$rep-c$c"
                "$LOAD" stow --url "$BASE_URL" --dir "$FULL" --clients "$c" --pid "$SERVER_PID" \
                    --label "$label" --results "$RESULTS"
                if [ "$c" = "$last_c" ]; then
                    log "$label: WADO, metadata, rendered"
                    "$LOAD" read --url "$BASE_URL" --dir "$FULL" --count "$READ_COUNT" --passes 2 \
                        --label "$label" --results "$RESULTS"
                fi
                stop_pid "$SERVER_PID"
                rm -rf "$WORK/$profile-$srv-$rep-c$c"
            done
        done
    done
    # QIDO on the tiny index: load both servers once, then alternate the query mix.
    declare -A url pid
    for srv in $(servers_for "$profile" 1); do
        log "$profile|$srv: loading the QIDO index (tiny dataset, 8 clients)"
        start_server "$srv" "$profile" "$WORK/$profile-$srv-qido"
        url[$srv]=$BASE_URL
        pid[$srv]=$SERVER_PID
        "$LOAD" stow --url "$BASE_URL" --dir "$TINY" --clients 8 --pid "$SERVER_PID" \
            --op stow_tiny --label "$profile|$srv|1" --results "$RESULTS"
    done
    for rep in $(seq 1 "$REPS"); do
        for srv in $(servers_for "$profile" "$rep"); do
            log "$profile|$srv|$rep: QIDO mix"
            "$LOAD" qido --url "${url[$srv]}" --dir "$TINY" --count "$QIDO_COUNT" --pid "${pid[$srv]}" \
                --label "$profile|$srv|$rep" --results "$RESULTS"
        done
    done
    for srv in "${!pid[@]}"; do stop_pid "${pid[$srv]}"; done
}

case "$WHICH" in
    embedded) run_profile embedded ;;
    pg) run_profile pg ;;
    all) run_profile embedded; run_profile pg ;;
esac

log "results rows: $RESULTS"
python3 "$ROOT/benches/compare_table.py" "$RESULTS"
