#!/usr/bin/env bash
# The creative conditioner's container image (Dockerfile at the repo root).
#
#   scripts/conditioner-image.sh [--tag NAME]   docker build, then `docker run --rm IMAGE --help`,
#                                               when a Docker engine answers (`docker info`);
#                                               otherwise says so and runs --check
#   scripts/conditioner-image.sh --check        the image's steps outside a container: the release
#                                               binary, this machine's ffmpeg/ffprobe against
#                                               scripts/conditioner-needs.txt, `cf-ssai conditioner --help`,
#                                               and a start configured by the environment alone
#   scripts/conditioner-image.sh --needs-only   only the needs check (the Dockerfile runs it inside
#                                               the image while building it)
#
# The needs (decoders, filters, encoders, demuxers, tools) have one source:
# scripts/conditioner-needs.txt. Exits non-zero, naming what is missing or
# what failed, if any step fails.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NEEDS="$HERE/conditioner-needs.txt"
say() { printf '[conditioner-image] %s\n' "$*"; }

mode=build
tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --check) mode=check ;;
    --needs-only) mode=needs ;;
    --tag) tag="${2:?--tag NAME}"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# Every need in conditioner-needs.txt that this machine's ffmpeg (or PATH)
# lacks; prints what it checked and fails naming each missing one.
check_needs() {
  local missing=() kind names line
  local have_decoder="" have_encoder="" have_filter="" have_demuxer=""
  if command -v ffmpeg >/dev/null; then
    # Each list: a name per line (the second column after the legend;
    # demuxers list aliases comma-separated: "mov,mp4,m4a,...").
    have_decoder=$(ffmpeg -hide_banner -decoders 2>/dev/null | awk 'f{print $2} /^ *-+$/{f=1}')
    have_encoder=$(ffmpeg -hide_banner -encoders 2>/dev/null | awk 'f{print $2} /^ *-+$/{f=1}')
    have_demuxer=$(ffmpeg -hide_banner -demuxers 2>/dev/null | awk 'f{n=split($2,a,","); for(i=1;i<=n;i++) print a[i]} /^ *-+$/{f=1}')
    have_filter=$(ffmpeg -hide_banner -filters 2>/dev/null | awk 'NF>=3 && $3 ~ /->/ {print $2}')
  fi
  local n=0
  while IFS= read -r line; do
    line="${line%%#*}"
    read -r kind names _ <<<"$line" || true
    [ -n "${kind:-}" ] || continue
    n=$((n + 1))
    local ok="" alt list
    IFS='|' read -ra alts <<<"$names"
    for alt in "${alts[@]}"; do
      case "$kind" in
        tool) command -v "$alt" >/dev/null && ok=1 ;;
        decoder) list=$have_decoder ;;
        encoder) list=$have_encoder ;;
        filter) list=$have_filter ;;
        demuxer) list=$have_demuxer ;;
        *) echo "conditioner-needs.txt: unknown kind '$kind'" >&2; exit 2 ;;
      esac
      if [ "$kind" != tool ] && grep -qxF -- "$alt" <<<"$list"; then ok=1; fi
      [ -n "$ok" ] && break
    done
    [ -n "$ok" ] || missing+=("$kind $names")
  done <"$NEEDS"
  if command -v ffmpeg >/dev/null; then
    local v pkg=""
    v=$(ffmpeg -hide_banner -version | head -1)
    command -v dpkg-query >/dev/null && pkg=$(dpkg-query -W -f='${Version}' ffmpeg 2>/dev/null || true)
    say "ffmpeg: ${v}${pkg:+ (Debian package $pkg)}"
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    say "MISSING ${#missing[@]} of $n needs (scripts/conditioner-needs.txt):"
    printf '  %s\n' "${missing[@]}"
    return 1
  fi
  say "all $n needs present (tools, decoders, filters, encoders, demuxers)"
}

if [ "$mode" = needs ]; then
  check_needs
  exit
fi

# The repository's own tool paths (cargo, the pinned versions).
source "$HERE/env.sh"
cd "$ROOT"
tag=${tag:-cf-ssai-conditioner:$(git rev-parse --short HEAD 2>/dev/null || echo local)}

run_check() {
  local failed=0
  say "1/5 release binary: cargo build --release --locked -p cf-ssai (the Dockerfile's build stage)"
  cargo build --release --locked -p cf-ssai
  say "2/5 ffmpeg, ffprobe and what the conditioner needs from them"
  local pin pkg=""
  pin=$(sed -n 's/^ARG FFMPEG_VERSION=//p' Dockerfile)
  command -v dpkg-query >/dev/null && pkg=$(dpkg-query -W -f='${Version}' ffmpeg 2>/dev/null || true)
  check_needs || failed=1
  if [ -n "$pkg" ] && [ "$pkg" != "$pin" ]; then
    say "note: the image pins ffmpeg=$pin; this machine has $pkg (checked here: $pkg)"
  fi
  say "3/5 target/release/cf-ssai conditioner --help (what the image's ENTRYPOINT runs)"
  local rc=0 out
  out=$(target/release/cf-ssai conditioner --help 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then
    printf '%s\n' "$out" | head -5 | sed 's/^/  /'
  else
    say "FAILED: cf-ssai conditioner --help exited $rc (expected 0):"
    printf '%s\n' "$out" | head -5 | sed 's/^/  /'
    failed=1
  fi
  # As the Cloudflare Container starts it: no arguments but the image's
  # default ones, the API and the token in the environment. The API here is
  # a closed loopback port: leases fail, it goes idle and must exit 0.
  say "4/5 configured by CF_SSAI_API / CF_SSAI_TOKEN alone, --exit-when-idle-s 1 (as the Container starts it)"
  rc=0
  out=$(CF_SSAI_API=http://127.0.0.1:9 CF_SSAI_TOKEN=cfssai_check timeout 60 \
    target/release/cf-ssai conditioner --exit-when-idle-s 1 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then
    say "  exited 0 when idle"
  else
    say "FAILED: exited $rc (expected 0: idle):"
    printf '%s\n' "$out" | head -5 | sed 's/^/  /'
    failed=1
  fi
  say "5/5 conditions one creative (15 s at 29.97 fps, codec H.264) as the image would: cf-ssai ads condition"
  work=$(mktemp -d)
  rc=0
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1280x720:rate=30000/1001:duration=15" \
    -f lavfi -i "sine=frequency=660:sample_rate=48000:duration=15" -c:v libx264 -preset ultrafast \
    -pix_fmt yuv420p -c:a aac -shortest "$work/spot.mp4" || rc=$?
  [ "$rc" -eq 0 ] && { out=$(target/release/cf-ssai ads condition "$work/spot.mp4" --out "$work/out" \
    --loudness-lufs -23 --containers ts 2>/dev/null) || rc=$?; }
  if [ "$rc" -eq 0 ] && printf '%s' "$out" | grep -q '"segments":8'; then
    say "  8 segments of 1.92 s (15 s + 0.36 s of the last frame held)"
  else
    say "FAILED: conditioning exited $rc: $(printf '%s' "${out:-}" | head -c 300)"
    failed=1
  fi
  rm -rf "$work"
  if [ "$failed" -ne 0 ]; then
    say "check FAILED"
    return 1
  fi
  say "check passed: the image's steps work on this machine (no image was built)"
}

if [ "$mode" = check ]; then
  run_check
  exit
fi

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  say "docker build -t $tag ."
  docker build -t "$tag" .
  say "docker run --rm $tag --help"
  docker run --rm "$tag" --help
  say "docker run: configured by CF_SSAI_API / CF_SSAI_TOKEN alone, --exit-when-idle-s 1 (must exit 0 when idle)"
  docker run --rm -e CF_SSAI_API=http://127.0.0.1:9 -e CF_SSAI_TOKEN=cfssai_check "$tag" --exit-when-idle-s 1
  say "built $tag: run it with -e CF_SSAI_API=URL -e CF_SSAI_TOKEN=TOKEN under any container runtime"
else
  say "no Docker engine answers (docker info failed): the image is NOT built; checking its steps outside a container instead (--check)"
  run_check
fi
