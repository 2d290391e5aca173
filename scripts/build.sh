#!/usr/bin/env bash
# Build the CLI (release) and all four workers for wasm32.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
cargo build --release -p cf-ssai
./scripts/build-workers.sh
