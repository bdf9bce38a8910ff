#!/usr/bin/env bash
# Build the web viewer into viewer/dist (needs node >= 20 and npm).
# Installs viewer/node_modules from package-lock.json when missing or stale.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../viewer"
if ! command -v npm >/dev/null 2>&1; then
    echo "build-viewer: npm not found; install Node.js 20+ to build the viewer" >&2
    exit 1
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
fi
npm run build
