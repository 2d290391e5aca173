#!/usr/bin/env bash
# The playback path's per-request CPU in V8 (the engine workerd runs): the
# real pipeline (crates/bench-wasm) built for wasm32 with the workers'
# release profile, fed the KV values of a demo-rate channel after 1 and 24
# hours of breaks, and the pre-view value for comparison. Prints the
# README's table.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
cargo build -q --release --target wasm32-unknown-unknown -p bench-wasm
cargo build -q --release -p bench-wasm --bin bench-inputs
out=$(mktemp -d)
for h in 1 24; do
  target/release/bench-inputs "$h" "$out/$h" > "$out/$h.meta"
  mv "$out/$h.meta" "$out/$h/meta.json"
done
# The same hour with 8 audience cohorts (addressable breaks), served as
# one cohort's viewer; last, so the per-part table is for it.
target/release/bench-inputs 1 "$out/1c" 8 > "$out/1c.meta"
mv "$out/1c.meta" "$out/1c/meta.json"
node tests/bench/wasm-pipeline.mjs target/wasm32-unknown-unknown/release/bench_wasm.wasm "$out/1" "$out/24" "$out/1c"
rm -rf "$out"
