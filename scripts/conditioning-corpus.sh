#!/usr/bin/env bash
# The conditioning corpus: creatives shaped like what ad servers send
# (MP4/MOV/WebM/TS; H.264, HEVC HDR10/HLG, VP8, VP9, AV1, ProRes, DNxHR,
# MPEG-2; 23.976 to 59.94 fps, interlaced, rotated, anamorphic, odd sizes,
# full range, 5.1, mono, none, very quiet and very loud; 1 s to 120 s),
# generated with ffmpeg into a temp dir, each conditioned with
# `target/release/cf-ssai ads condition` and its renditions checked (decode
# without errors, whole segments, the creative's own length, loudness,
# the last frame held, boxed at the display aspect and the right way up,
# 25 fps 8-bit 4:2:0 at each rung, 48 kHz stereo; one pass against
# --encode per-rung timed on two 1080p shapes);
# and a hostile set (playlists and concat lists named .mp4, truncated
# MP4s, text, audio only, too short, too long) that must be refused with
# its category while a loopback HTTP server records that nothing was
# fetched. Prints a summary table; exits 1 if a shape fails or a hostile
# source is accepted.
#
#   scripts/conditioning-corpus.sh [--quick] [--keep DIR] [--only SHAPE,SHAPE]
#
# --quick: five shapes plus the hostile set (CI; under ~2 min on 2 cores).
# --keep DIR: generate and condition into DIR and keep it (default: a temp
# dir, removed at exit).
# --only SHAPE,SHAPE: those shapes alone (their names are in the table).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

quick=()
keep=""
only=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=(--quick) ;;
    --keep) keep="${2:?--keep DIR}"; shift ;;
    --keep=*) keep="${1#--keep=}" ;;
    --only) only=(--only "${2:?--only SHAPE,SHAPE}"); shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--quick] [--keep DIR] [--only SHAPE,SHAPE]" >&2; exit 2 ;;
  esac
  shift
done

for tool in ffmpeg ffprobe node python3; do
  command -v "$tool" >/dev/null || { echo "conditioning-corpus: $tool not found" >&2; exit 2; }
done
BIN="$ROOT/target/release/cf-ssai"
if [[ ! -x "$BIN" ]]; then
  echo "conditioning-corpus: $BIN missing, building it" >&2
  cargo build --release -p cf-ssai
fi

if [[ -n "$keep" ]]; then
  mkdir -p "$keep"
  WORK="$(cd "$keep" && pwd)"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/cf-ssai-corpus.XXXXXX")"
fi

# The loopback server the hostile playlists point at: an ephemeral port on
# 127.0.0.1, every request logged (the checker asserts there were none
# besides its own control request).
mkdir -p "$WORK/www"
SERVER_LOG="$WORK/http-server.log"
: >"$SERVER_LOG"
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$WORK/www" >>"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
cleanup() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  if [[ -z "$keep" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
PORT=""
for _ in $(seq 100); do
  PORT="$(sed -n 's/^Serving HTTP on 127\.0\.0\.1 port \([0-9]*\).*/\1/p' "$SERVER_LOG")"
  [[ -n "$PORT" ]] && break
  sleep 0.1
done
[[ -n "$PORT" ]] || { echo "conditioning-corpus: the loopback server did not start" >&2; cat "$SERVER_LOG" >&2; exit 2; }

start=$SECONDS
status=0
node tests/conditioning/corpus.mjs "${quick[@]}" "${only[@]}" --bin "$BIN" --work "$WORK" --port "$PORT" --server-log "$SERVER_LOG" || status=$?
echo "conditioning corpus (${quick[*]:-full}): $((SECONDS - start)) s${keep:+, kept in $WORK}"
exit "$status"
