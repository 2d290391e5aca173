# Sourced by the scripts: tool paths so nothing is downloaded at build time.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$ROOT/node_modules/.bin:$PATH"
export WASM_BINDGEN_BIN="$HOME/.cargo/bin/wasm-bindgen"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WRANGLER_SEND_METRICS=false
export CI=${CI:-}
# Pinned tool versions (worker-build's own; wasm-bindgen comes from Cargo.lock).
WORKER_BUILD_VERSION=0.8.7
