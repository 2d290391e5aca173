#!/usr/bin/env bash
# README command 1: set up this machine (idempotent), build, generate the
# demo media, start the whole local stack and print where to point a player.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
./scripts/setup.sh
./scripts/build.sh
./scripts/demo-media.sh "$ROOT/demo-media"
exec node tests/integration/stack.mjs --dev
