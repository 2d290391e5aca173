#!/usr/bin/env bash
# The DASH suite in full (the README's "DASH" section): 10 minutes of the
# DASH live validator with 5 late joiners (SSAI) and 2 viewers (SGAI), and
# Shaka Player and dash.js through 3 breaks each. CI runs the same file in
# its quick form (about 80 s of validation, one break per player).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
./scripts/build.sh
./scripts/demo-media.sh "$ROOT/demo-media"
DASH_FULL=1 node --test --test-concurrency=1 --test-timeout=2400000 tests/integration/dash.test.mjs
