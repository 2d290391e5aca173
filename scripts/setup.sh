#!/usr/bin/env bash
# Idempotent setup of a fresh machine: installs what is missing, skips what
# is there. Called by both README commands (scripts/dev.sh, scripts/test.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Rust target for the workers.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# 2. worker-build, pinned.
if ! worker-build --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
  say "cargo install worker-build $WORKER_BUILD_VERSION"
  cargo install worker-build --version "$WORKER_BUILD_VERSION"
fi

# 3. wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock
#    (Cargo.toml pins it with '=' so the two cannot drift). Not --locked: that
#    fails here on a yanked webpki-roots.
WB_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/,"",$3); print $3; exit}' Cargo.lock)
if ! "$WASM_BINDGEN_BIN" --version 2>/dev/null | grep -q " $WB_VERSION"; then
  say "cargo install wasm-bindgen-cli $WB_VERSION"
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi

# 4. Debian packages: ffmpeg (demo media, ffprobe checks), chromium (player
#    tests). Installed only when missing.
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v chromium >/dev/null || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
command -v xmllint >/dev/null || need+=(libxml2-utils)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  say "apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 5. Node tooling from the committed lockfile (wrangler 4.86.0, esbuild,
#    binaryen's wasm-opt, hls.js, playwright-core).
stamp=node_modules/.cf-ssai-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi

# 6. Local secrets for wrangler dev: generated once, never committed; a
#    secret missing from an older .dev.vars is added.
rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
touch .dev.vars
add_var() { grep -q "^$1=" .dev.vars || { say "adding $1 to .dev.vars"; echo "$1=$2" >> .dev.vars; }; }
add_var JWT_SECRET "$(rand_hex 32)"
add_var ADMIN_API_KEY "cfssai_$(rand_hex 24)"
add_var SESSION_SECRET "$(rand_hex 32)"
add_var INTERNAL_SECRET "$(rand_hex 32)"
# Local dev fetches private addresses only at 127.0.0.1 (the demo origin and
# the test servers); localhost, [::1], 10/8, the metadata address stay
# refused, as in production (where this is "false").
sed -i 's/^ALLOW_PRIVATE_ORIGINS=true$/ALLOW_PRIVATE_ORIGINS=127.0.0.1/' .dev.vars
add_var ALLOW_PRIVATE_ORIGINS 127.0.0.1
# Local dev: retry quickly (production backs off up to 600 s).
add_var BEACON_MAX_BACKOFF_S 2
# threefive (PyPI), the reference SCTE-35 decoder for the differential test.
python3 -c "import threefive" 2>/dev/null || { say "pip install threefive"; python3 -m pip install -q threefive==3.1.5; }
