#!/usr/bin/env bash
# Load benchmark against the local stack (wrk from Debian). Not part of the
# tests: speed is measured, never asserted.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
./scripts/setup.sh
command -v wrk >/dev/null || { SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo; $SUDO apt-get install -y -qq wrk >/dev/null; }
./scripts/build.sh >/dev/null
./scripts/demo-media.sh "$ROOT/demo-media"
node tests/integration/load.mjs
