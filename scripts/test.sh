#!/usr/bin/env bash
# The project's test command (`make test`; CI runs it through .ci/run).
#
#   1. installs missing Debian packages (dcmtk, postgresql-client, openssl, rsyslog, ...),
#   2. creates/refreshes the Python venv .venv-test from tests/python/requirements.txt,
#   3. starts PostgreSQL and an S3 server (scripts/services/*-start.sh) and stops them on exit;
#      builds Garage once into $PHIM_TOOLS_DIR for the cluster tests (scripts/services/garage-install.sh),
#   4. cargo build --bins, cargo test --all-targets, cargo fmt --check, cargo clippy -D warnings,
#      scripts/structure.py --check,
#   5. the Python black-box suite: pytest tests/python against target/debug/phim,
#   6. the viewer end-to-end tests (tests/e2e): builds viewer/, drives Debian's
#      chromium with playwright-core against a fresh `phim serve` (run.mjs), then the
#      OpenID Connect login against the test provider tests/oidc (its selftest, login.mjs),
#      then share links without a login (share.mjs),
#   7. the OHIF acceptance test (tests/ohif): the prebuilt OHIF Viewer 3 (pinned, fetched once
#      with `npm pack` into $PHIM_TOOLS_DIR/ohif) behind a same-origin proxy to a fresh
#      `phim serve`, judged from the canvas pixels.
#
# Extra arguments are passed to pytest, e.g. `bash scripts/test.sh -k roundtrip -x`.
# Environment knobs:
#   PHIM_SKIP_CARGO=1   skip step 4 (use an already built target/debug/phim, or $PHIM_BIN)
#   PHIM_TOOLS_DIR      where s3s-fs is installed (default ~/.cache/phim-tools)
#   PHIM_SKIP_E2E=1     skip step 6 (screenshots of a run go to .test-work/e2e)
#   PHIM_SKIP_OHIF=1    skip step 7 (screenshots and requests.jsonl go to .test-work/ohif)
#   PHIM_LOAD_BIN       phim-load for step 7 (default target/debug/phim-load)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

if [ -t 2 ]; then BOLD=$'\033[1m' RESET=$'\033[0m'; else BOLD='' RESET=''; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET" >&2; }
note() { printf '    %s\n' "$*" >&2; }

START=$(date +%s)
FAILED=()

# ---------------------------------------------------------------- 1. system packages
step "system packages"
need_pkgs=()
command -v storescu >/dev/null 2>&1 || need_pkgs+=(dcmtk)
# cmake builds CharLS (the JPEG-LS codec, crate charls-sys) and libjpeg-turbo
# (12-bit JPEG, crate turbojpeg-sys; C, no NASM needed).
command -v cmake >/dev/null 2>&1 || need_pkgs+=(cmake)
command -v g++ >/dev/null 2>&1 || need_pkgs+=(g++)
command -v psql >/dev/null 2>&1 || need_pkgs+=(postgresql-client)
command -v pg_isready >/dev/null 2>&1 || need_pkgs+=(postgresql-client)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
# The auth tests: openssl makes test certificates (HTTPS, DICOM TLS), rsyslog
# with its OpenSSL driver is the ATNA audit repository (TCP and TLS).
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
[ -x /usr/sbin/rsyslogd ] || need_pkgs+=(rsyslog)
dpkg -s rsyslog-openssl >/dev/null 2>&1 || need_pkgs+=(rsyslog-openssl)
# The cluster tests: HAProxy balances the Phim servers and the Garage nodes.
[ -x /usr/sbin/haproxy ] || need_pkgs+=(haproxy)
if [ "${PHIM_SKIP_E2E:-0}" != 1 ] || [ "${PHIM_SKIP_OHIF:-0}" != 1 ]; then
    [ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
    note "installing: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
else
    note "all present"
fi

# ---------------------------------------------------------------- 2. python venv
step "python venv .venv-test"
VENV=$ROOT/.venv-test
REQ=$ROOT/tests/python/requirements.txt
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
req_hash=$( { sha256sum "$REQ"; "$VENV/bin/python" -V 2>&1; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$req_hash" ]; then
    note "pip install -r tests/python/requirements.txt"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
    echo "$req_hash" > "$VENV/.requirements.sha256"
else
    note "up to date"
fi

# ---------------------------------------------------------------- 3. services
PG_STARTED=0
S3_STARTED=0
stop_services() {
    local rc=$?
    set +e
    if [ "$S3_STARTED" = 1 ]; then bash "$ROOT/scripts/services/s3-stop.sh"; S3_STARTED=0; fi
    if [ "$PG_STARTED" = 1 ]; then bash "$ROOT/scripts/services/pg-stop.sh"; PG_STARTED=0; fi
    return $rc
}
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "services: PostgreSQL"
pg_env=$(bash scripts/services/pg-start.sh)
set -a; eval "$pg_env"; set +a
PG_STARTED=1
note "PHIM_TEST_DATABASE_URL=$PHIM_TEST_DATABASE_URL ($PG_MODE)"

step "services: S3 (s3s-fs)"
s3_env=$(bash scripts/services/s3-start.sh)
set -a; eval "$s3_env"; set +a
S3_STARTED=1
note "PHIM_TEST_S3_ENDPOINT=$PHIM_TEST_S3_ENDPOINT bucket=$PHIM_TEST_S3_BUCKET"

# The cluster tests (tests/python/test_cluster.py) start their own 3-node Garage cluster;
# here its binary is built once (~16 min on 2 cores) and cached in $PHIM_TOOLS_DIR.
step "services: Garage binary (cluster tests)"
if PHIM_GARAGE_BIN=$(bash scripts/services/garage-install.sh); then
    export PHIM_GARAGE_BIN
    note "PHIM_GARAGE_BIN=$PHIM_GARAGE_BIN"
else
    FAILED+=("garage install")
fi

# ---------------------------------------------------------------- 4. cargo
if [ "${PHIM_SKIP_CARGO:-0}" != 1 ]; then
    step "cargo build --bins"
    if ! cargo build --bins; then
        FAILED+=("cargo build")
        # Nothing else can run without the binary.
        step "FAILED: ${FAILED[*]}"
        exit 1
    fi

    step "cargo test --all-targets"
    cargo test --all-targets || FAILED+=("cargo test")

    # The guard rails are part of the test: formatting and lints fail it.
    step "cargo fmt --check, cargo clippy --all-targets -D warnings"
    cargo fmt --check || FAILED+=("cargo fmt --check")
    cargo clippy --all-targets -- -D warnings || FAILED+=("cargo clippy")
    # Structure (#16): no import cycle among src/ modules, no function over
    # 100 lines without a `// long:` reason, index/sql files under 400.
    python3 scripts/structure.py --check || FAILED+=("structure check")
else
    step "cargo: skipped (PHIM_SKIP_CARGO=1)"
fi

# ---------------------------------------------------------------- 5. pytest
# The auth tests get access tokens from a real OpenID provider
# (tests/oidc/provider.mjs, npm oidc-provider).
step "npm packages of the test OpenID provider (tests/oidc)"
if [ -d tests/oidc/node_modules ] && [ ! tests/oidc/package-lock.json -nt tests/oidc/node_modules/.package-lock.json ]; then
    note "up to date"
else
    (cd tests/oidc && npm ci --no-audit --no-fund) || FAILED+=("npm ci tests/oidc")
fi

step "pytest tests/python"
if [ "${PHIM_SKIP_CARGO:-0}" = 1 ] && [ -n "${PHIM_BIN:-}" ]; then
    note "PHIM_BIN=$PHIM_BIN (PHIM_SKIP_CARGO=1)"
else
    export PHIM_BIN=$ROOT/target/debug/phim
fi
set +e
"$VENV/bin/python" -m pytest -q tests/python "$@"
rc=$?
set -e
# 5 = no tests collected, which must not pass silently either.
[ $rc -eq 0 ] || FAILED+=("pytest (exit $rc)")

# ---------------------------------------------------------------- 6. viewer e2e
if [ "${PHIM_SKIP_E2E:-0}" != 1 ]; then
    step "viewer end-to-end (tests/e2e, headless chromium)"
    # Each browser script has a time limit: a hung one must fail, not stall CI.
    e2e() {
        local rc=0
        bash scripts/build-viewer.sh &&
        { [ -d tests/e2e/node_modules ] && [ ! tests/e2e/package-lock.json -nt tests/e2e/node_modules/.package-lock.json ] ||
          (cd tests/e2e && npm ci --no-audit --no-fund); } &&
        { [ -d tests/oidc/node_modules ] && [ ! tests/oidc/package-lock.json -nt tests/oidc/node_modules/.package-lock.json ] ||
          (cd tests/oidc && npm ci --no-audit --no-fund); } &&
        [ -x "$ROOT/target/debug/phim-load" ] || return 1
        PHIM_BIN=$PHIM_BIN PHIM_LOAD_BIN=$ROOT/target/debug/phim-load PHIM_PYTHON=$VENV/bin/python \
            PHIM_VIEWER_DIR=$ROOT/viewer/dist E2E_OUT=$ROOT/.test-work/e2e \
            timeout 1200 node tests/e2e/run.mjs || rc=1
        # The viewer's OpenID Connect login: the test provider first checks itself.
        timeout 300 node tests/oidc/selftest.mjs || rc=1
        PHIM_BIN=$PHIM_BIN PHIM_LOAD_BIN=$ROOT/target/debug/phim-load \
            PHIM_VIEWER_DIR=$ROOT/viewer/dist E2E_OUT=$ROOT/.test-work/e2e \
            timeout 600 node tests/e2e/login.mjs || rc=1
        # Share links: a study opened with a link's token only, no login.
        PHIM_BIN=$PHIM_BIN PHIM_LOAD_BIN=$ROOT/target/debug/phim-load \
            PHIM_VIEWER_DIR=$ROOT/viewer/dist E2E_OUT=$ROOT/.test-work/e2e \
            timeout 600 node tests/e2e/share.mjs || rc=1
        return $rc
    }
    set +e
    e2e
    rc=$?
    set -e
    [ $rc -eq 0 ] || FAILED+=("viewer e2e (exit $rc)")
else
    step "viewer e2e: skipped (PHIM_SKIP_E2E=1)"
fi

# ---------------------------------------------------------------- 7. OHIF acceptance
if [ "${PHIM_SKIP_OHIF:-0}" != 1 ]; then
    step "OHIF Viewer acceptance (tests/ohif, headless chromium)"
    ohif() {
        local load=${PHIM_LOAD_BIN:-$ROOT/target/debug/phim-load}
        { [ -x "$load" ] || { note "missing $load (cargo build --bins)"; return 1; }; } &&
        { [ -d tests/ohif/node_modules ] && [ ! tests/ohif/package-lock.json -nt tests/ohif/node_modules/.package-lock.json ] ||
          (cd tests/ohif && npm ci --no-audit --no-fund); } &&
        PHIM_BIN=$PHIM_BIN PHIM_LOAD_BIN=$load PHIM_PYTHON=$VENV/bin/python \
            PHIM_TOOLS_DIR=${PHIM_TOOLS_DIR:-$HOME/.cache/phim-tools} OHIF_OUT=$ROOT/.test-work/ohif \
            timeout 1200 node tests/ohif/run.mjs
    }
    set +e
    ohif
    rc=$?
    set -e
    [ $rc -eq 0 ] || FAILED+=("OHIF acceptance (exit $rc)")
else
    step "OHIF acceptance: skipped (PHIM_SKIP_OHIF=1)"
fi

# ---------------------------------------------------------------- summary
elapsed=$(( $(date +%s) - START ))
if [ ${#FAILED[@]} -gt 0 ]; then
    step "FAILED after ${elapsed}s: ${FAILED[*]}"
    exit 1
fi
step "all tests passed in ${elapsed}s"
