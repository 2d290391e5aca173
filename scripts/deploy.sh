#!/usr/bin/env bash
# Deploy to Cloudflare (see scripts/deploy.mjs and the README's "Deploying to
# Cloudflare"): scripts/deploy.sh [--env staging|production] [--dry-run]
# [--config-only] [--account-id ID] [--org ORG]. --dry-run needs no account
# and no network; command 2 runs it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
if [[ " $* " != *" --config-only "* ]]; then
  for w in manifest decision scte35-monitor beacon; do
    [ -f "workers/$w/build/index.js" ] || { ./scripts/build-workers.sh; break; }
  done
fi
exec node scripts/deploy.mjs "$@"
