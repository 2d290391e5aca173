#!/usr/bin/env bash
# Deploy to Cloudflare (see scripts/deploy.mjs and the README's "Deploying to
# Cloudflare"): scripts/deploy.sh [--env staging|production] [--dry-run]
# [--config-only] [--account-id ID] [--org ORG] [--conditioner
# container|image|none] [--conditioner-max-instances N]
# [--conditioner-instance-type T] [--public-url URL]. Five components: the
# decision, beacon, scte35-monitor and manifest workers, and the creative
# conditioner (a Cloudflare Container of the manifest worker by default; its
# image is the repo's Dockerfile). --dry-run needs no account and no
# network; command 2 runs it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
if [[ " $* " != *" --config-only "* ]]; then
  for w in manifest decision scte35-monitor beacon; do
    [ -f "workers/$w/build/index.js" ] || { ./scripts/build-workers.sh; break; }
  done
fi
exec node scripts/deploy.mjs "$@"
