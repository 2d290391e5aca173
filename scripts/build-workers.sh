#!/usr/bin/env bash
# Build all four workers for wasm32 (release, wasm-opt on) and print sizes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
for w in manifest scte35-monitor decision beacon; do
  ( cd "workers/$w" && worker-build --release >/dev/null 2>build.log || { cat build.log; exit 1; } )
done
printf '%-16s %12s %12s\n' worker "wasm bytes" "gzip bytes"
for w in manifest scte35-monitor decision beacon; do
  f="workers/$w/build/index_bg.wasm"
  printf '%-16s %12s %12s\n' "$w" "$(stat -c %s "$f")" "$(gzip -9c "$f" | wc -c)"
done
