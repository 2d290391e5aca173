#!/usr/bin/env bash
# README command 2: set up (idempotent), then every check CI runs: format,
# clippy (native and wasm32), unit/scenario tests, wasm builds with sizes,
# and the integration + real-player tests against the local stack.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step setup;            ./scripts/setup.sh
step "cargo fmt";      cargo fmt --all -- --check
step "cargo clippy";   cargo clippy --workspace --all-targets -- -D warnings
step "clippy wasm32";  cargo clippy --target wasm32-unknown-unknown -p manifest-worker -p decision-worker -p scte35-monitor-worker -p beacon-worker -- -D warnings
step "cargo test";     cargo test --workspace
step "build";          ./scripts/build.sh
step "conditioning corpus (quick)"; ./scripts/conditioning-corpus.sh --quick
step "conditioner image (steps)"; ./scripts/conditioner-image.sh --check
step "threefive diff"; python3 tests/differential/threefive_diff.py target/release/cf-ssai 5000
step "DASH schema (self-test)"; ./scripts/mpd-xsd.sh --self-test
step "demo media";     ./scripts/demo-media.sh "$ROOT/demo-media"
step "integration";    node --test --test-concurrency=1 tests/integration/
