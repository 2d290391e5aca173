#!/usr/bin/env bash
# Real demo media with ffmpeg (idempotent): a looped live content stream in
# two renditions, each encoded once and segmented without re-encoding,
# as MPEG-TS (seg{n}.ts) and as fMP4 (init.mp4 + seg{n}.m4s), in segments of
# 1.92 s = 48 video frames at 25 fps = 90 AAC frames at 48 kHz, so audio and
# video end together at every boundary (key frames every 0.96 s, so the
# same encode is also cut into LL-HLS parts of 0.96 s, part{n}.ts, each
# starting with a key frame); the same video without audio and
# two audio languages as separate TS renditions (the demuxed channel; its
# WebVTT subtitles are written by the origin); the same video and English
# audio as demuxed CMAF for the DASH channels ({v}-cmaf/, aud-en-cmaf/:
# init.mp4 + seg{n}.m4s, video at timescale 12800, audio at 48000, segment
# k starting at exactly k*24576 / k*92160, checked below); and source files
# for two ads and a slate that look nothing alike.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
OUT="${1:-$ROOT/demo-media}"
LOOP="${DEMO_LOOP_SEGMENTS:-60}"
CAD=1.92
PART=0.96
FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf
# Bump the version when the encoding changes so old media is regenerated.
stamp="$OUT/.done-v6-$LOOP"
[ -f "$stamp" ] && exit 0
mkdir -p "$OUT/content" "$OUT/src"
DUR=$(awk "BEGIN{print $LOOP*$CAD}")
# fMP4 by the HLS muxer, no re-encode: dash_fmp4 INPUT DIR [ffmpeg args].
dash_fmp4() {
  local in="$1" dir="$2"; shift 2
  mkdir -p "$dir"
  ffmpeg -hide_banner -loglevel error -y -i "$in" "$@" -c copy \
    -f hls -hls_time $CAD -hls_playlist_type vod -hls_segment_type fmp4 -hls_fmp4_init_filename init.mp4 \
    -hls_segment_options video_track_timescale=12800 \
    -hls_segment_filename "$dir/seg%d.m4s" "$dir/vod.m3u8"
}
# A DASH player places each segment by the MPD's timeline (segment k at
# k*D), and the origin only adds whole loops to the tfdt: so segment k of
# the loop must start at exactly k*D and last exactly D (in its track's
# timescale). Fail loudly if an ffmpeg ever cuts differently. (From the
# last packet's end: ffprobe leaves a fragment's first AAC duration N/A.)
check_timeline() { # DIR D
  local k want got
  for ((k = 0; k < LOOP; k++)); do
    want="$((k * $2)) $2"
    got=$(cat "$1/init.mp4" "$1/seg$k.m4s" | ffprobe -v error -show_entries packet=dts,duration -of csv=p=0 - |
      awk -F, 'NR == 1 { t = $1 } { end = $1 + $2 } END { print t, end - t }')
    [ "$got" = "$want" ] || { echo "demo-media: $1/seg$k.m4s starts/lasts $got, want $want" >&2; exit 1; }
  done
}
text() { echo "drawtext=fontfile=$FONT:text='$1':fontcolor=white:fontsize=$2:box=1:boxcolor=black@0.5:x=(w-tw)/2:y=$3"; }
for r in "v360 640x360 700k" "v540 960x540 1400k"; do
  set -- $r
  mkdir -p "$OUT/content/$1"
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=$2:rate=25" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t "$DUR" -vf "$(text 'cf-ssai LIVE CONTENT' 28 20),$(text '%{pts\:hms}' 36 h-60)" \
    -c:v libx264 -pix_fmt yuv420p -preset veryfast -profile:v main -bf 0 -b:v "$3" -maxrate "$3" -bufsize 2M \
    -g 24 -keyint_min 24 -sc_threshold 0 -force_key_frames "expr:gte(t,n_forced*$PART)" \
    -c:a aac -ar 48000 -ac 2 -b:a 96k "$OUT/content/$1/enc.mp4"
  ffmpeg -hide_banner -loglevel error -y -i "$OUT/content/$1/enc.mp4" -c copy \
    -f hls -hls_time $CAD -hls_playlist_type vod -hls_segment_filename "$OUT/content/$1/seg%d.ts" "$OUT/content/$1/vod.m3u8"
  ffmpeg -hide_banner -loglevel error -y -i "$OUT/content/$1/enc.mp4" -c copy \
    -f hls -hls_time $CAD -hls_playlist_type vod -hls_segment_type fmp4 -hls_fmp4_init_filename init.mp4 \
    -hls_segment_filename "$OUT/content/$1/seg%d.m4s" "$OUT/content/$1/vod-fmp4.m3u8"
  # LL-HLS parts: the same encode in 0.96 s pieces (no re-encode).
  ffmpeg -hide_banner -loglevel error -y -i "$OUT/content/$1/enc.mp4" -c copy \
    -f hls -hls_time $PART -hls_playlist_type vod -hls_segment_filename "$OUT/content/$1/part%d.ts" "$OUT/content/$1/vod-parts.m3u8"
  # Demuxed: the same encode without audio (no re-encode, same timing).
  mkdir -p "$OUT/content/$1-video"
  ffmpeg -hide_banner -loglevel error -y -i "$OUT/content/$1/enc.mp4" -an -c copy \
    -f hls -hls_time $CAD -hls_playlist_type vod -hls_segment_filename "$OUT/content/$1-video/seg%d.ts" "$OUT/content/$1-video/vod.m3u8"
  [ "$1" = v360 ] && ffmpeg -hide_banner -loglevel error -y -i "$OUT/content/$1/enc.mp4" -vn -c copy "$OUT/content/aud-en.m4a"
  # DASH (demuxed CMAF): the same encode, video only, then (once) the
  # English audio only. The AAC priming frame stays in audio segment 0
  # (the muxer shifts the audio so it starts at 0, and the empty edit list
  # keeps it presented), so every audio file holds exactly 90 frames; the
  # loop's extra file with the encoder's last frame is dropped.
  dash_fmp4 "$OUT/content/$1/enc.mp4" "$OUT/content/$1-cmaf" -an
  check_timeline "$OUT/content/$1-cmaf" 24576
  if [ "$1" = v360 ]; then
    dash_fmp4 "$OUT/content/$1/enc.mp4" "$OUT/content/aud-en-cmaf" -vn
    rm -f "$OUT/content/aud-en-cmaf/seg$LOOP.m4s"
    check_timeline "$OUT/content/aud-en-cmaf" 92160
  fi
  rm -f "$OUT/content/$1/enc.mp4"
done
# The second language: another tone, encoded like the first.
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "sine=frequency=660:sample_rate=48000" -t "$DUR" \
  -c:a aac -ar 48000 -ac 2 -b:a 96k "$OUT/content/aud-es.m4a"
for lang in en es; do
  mkdir -p "$OUT/content/aud-$lang"
  ffmpeg -hide_banner -loglevel error -y -i "$OUT/content/aud-$lang.m4a" -c copy \
    -f hls -hls_time $CAD -hls_playlist_type vod -hls_segment_filename "$OUT/content/aud-$lang/seg%d.ts" "$OUT/content/aud-$lang/vod.m3u8"
  rm -f "$OUT/content/aud-$lang.m4a"
done
src() { # name seconds video-source label color
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$3" -f lavfi -i "sine=frequency=$5:sample_rate=48000" \
    -t "$2" -vf "$(text "$4" 48 '(h-th)/2')" -c:v libx264 -pix_fmt yuv420p -preset veryfast -c:a aac -ar 48000 "$OUT/src/$1.mp4"
}
src ad1 9.6 "smptehdbars=size=960x540:rate=25" "AD 1 - cf-ssai" 880
src ad2 15.36 "mandelbrot=size=960x540:rate=25" "AD 2 - cf-ssai" 660
src slate 3.84 "color=c=0x1f3a93:size=960x540:rate=25" "We will be right back" 220
touch "$stamp"
