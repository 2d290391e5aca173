// The conditioning corpus: creatives shaped like what ad servers send,
// generated with ffmpeg's lavfi sources, each conditioned with
// `cf-ssai ads condition` and its output checked; and a hostile set that
// must be refused with a clear category, fetching nothing.
//
// Run by scripts/conditioning-corpus.sh (which starts the loopback HTTP
// server the hostile playlists point at); node built-ins only.
//
//   node tests/conditioning/corpus.mjs --bin target/release/cf-ssai --work DIR
//        --port PORT --server-log FILE [--quick] [--only SHAPE,SHAPE]
//
// Every source ends with a marker: its last 0.1 s is a solid red frame
// with a green top-left corner, so the conditioned ad can be checked to
// hold the source's last frame from where the source ends (not earlier or
// later) to the end of its last segment, boxed at the source's display
// aspect ratio and the right way up.
//
// Checks per shape: exit 0; every rendition's playlist decodes with no
// error; whole segments of the cadence; padding under one segment; the
// creative's own length measured and all of it present; the probe saw the
// shape (interlaced, HDR, rotation, codec...); H.264 yuv420p 25 fps at the
// rung's size, AAC 48 kHz stereo, frame and audio counts; integrated
// loudness of the muxed top rung within 1 LU of the target (silence for
// a source without audio); the marker, its corner and the picture box.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync, truncateSync, copyFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import os from "node:os";

// ---------------------------------------------------------------------
// Arguments and the conditioning settings every shape gets.

const argv = process.argv.slice(2);
const opt = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const QUICK = argv.includes("--quick");
const BIN = resolve(opt("--bin") ?? "target/release/cf-ssai");
const WORK = resolve(opt("--work") ?? "/tmp/cf-ssai-corpus");
const PORT = Number(opt("--port") ?? 0);
const SERVER_LOG = opt("--server-log");

const CADENCE_MS = 1920;
const CADENCE = CADENCE_MS / 1000;
const FPS = 25;
const FRAMES_PER_SEGMENT = Math.round(CADENCE * FPS); // 48
const LADDER = [
  [640, 360, 900000],
  [960, 540, 1800000],
];
const TARGET_LUFS = -23;
const CONDITION_ARGS = [
  "--cadence-ms", String(CADENCE_MS),
  "--fps", String(FPS),
  "--ladder", LADDER.map(([w, h, b]) => `${w}x${h}:${b}`).join(","),
  "--containers", "ts,fmp4",
  "--loudness-lufs", String(TARGET_LUFS),
  "--true-peak-dbtp", "-1",
];

const CORPUS = join(WORK, "corpus");
const OUT = join(WORK, "out");
const CHECK = join(WORK, "check");
for (const d of [CORPUS, OUT, CHECK]) mkdirSync(d, { recursive: true });

function run(cmd, args, opts = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 256 << 20, ...opts });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "", ms };
}

function ffmpeg(args) {
  const r = run("ffmpeg", ["-hide_banner", "-loglevel", "error", "-nostdin", "-y", ...args]);
  if (r.status !== 0) throw new Error(`ffmpeg ${args.join(" ")}\n${r.stderr}`);
  return r;
}

const log = (...a) => process.stderr.write(a.join(" ") + "\n");

// ---------------------------------------------------------------------
// The shapes.
//
// Each is generated from lavfi sources: testsrc2 video with exactly
// `frames` frames at `rate` (so its known length is frames / rate), audio
// of the same length, and the red marker over the last 0.1 s.

const RATES = { "25": [25, 1], "30000/1001": [30000, 1001], "24000/1001": [24000, 1001], "50": [50, 1], "60000/1001": [60000, 1001] };
const rateOf = (r) => RATES[r][0] / RATES[r][1];

const H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "26"];
const AAC = ["-c:a", "aac", "-b:a", "128k"];

/** A shape; `seconds` rounds to whole frames at its rate (ad servers'
 * "15 s at 29.97" is 450 frames, 15.015 s). */
function shape(name, desc, o) {
  const rate = o.rate ?? "25";
  const frames = o.frames ?? Math.round(o.seconds * rateOf(rate));
  const len = frames / rateOf(rate);
  const [w, h] = o.size ?? [1280, 720];
  const [sn, sd] = o.sar ?? [1, 1];
  let dar = (w * sn) / sd / h;
  if (o.rotated) dar = 1 / dar;
  return {
    name, desc, rate, frames, len, w, h, dar, rotated: o.rotated ?? false,
    ext: o.ext ?? "mp4",
    audio: o.audio === undefined ? "stereo" : o.audio,
    gainDb: o.gainDb ?? 0,
    video: o.video ?? H264,
    pixFmt: o.pixFmt ?? "yuv420p",
    acodec: o.acodec ?? AAC,
    pre: o.pre ?? "",
    post: o.post ?? "",
    interlace: o.interlace ?? false,
    out: o.out ?? [],
    remux: o.remux ?? null,
    expect: o.expect ?? {},
    quick: o.quick ?? false,
    timing: o.timing ?? false,
  };
}

const X265 = (transfer) => [
  "-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1",
  "-x265-params", `log-level=error:colorprim=bt2020:transfer=${transfer}:colormatrix=bt2020nc:range=limited`,
  "-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc", "-color_range", "tv",
];

const SHAPES = [
  shape("h264-5s-25", "H.264/AAC MP4 720p, 5 s at 25", { seconds: 5 }),
  shape("h264-15s-25-1080p", "H.264/AAC MP4 1080p, 15 s at 25", { seconds: 15, size: [1920, 1080], timing: true }),
  shape("h264-30s-25-1080p", "H.264/AAC MP4 1080p, 30 s at 25", { seconds: 30, size: [1920, 1080], timing: true, quick: true }),
  shape("h264-5s-2997", "H.264/AAC MP4 720p, 5 s at 29.97 (150 frames)", { seconds: 5, rate: "30000/1001" }),
  shape("h264-15s-2997", "H.264/AAC MP4 720p, 15 s at 29.97 (450 frames)", { seconds: 15, rate: "30000/1001", quick: true }),
  shape("h264-30s-2997", "H.264/AAC MP4 720p, 30 s at 29.97 (899 frames)", { seconds: 30, rate: "30000/1001" }),
  shape("h264-30.03s-2997", "H.264/AAC MP4 720p, 30.03 s at 29.97 (900 frames)", { frames: 900, rate: "30000/1001" }),
  shape("h264-15.015s-23976", "H.264/AAC MP4 720p, 15.015 s at 23.976 (360 frames)", { frames: 360, rate: "24000/1001", quick: true }),
  shape("h264-10s-25-quiet", "H.264/AAC MP4 720p, 10 s at 25, very quiet (about -47 LUFS)", { seconds: 10, gainDb: -26 }),
  shape("h264-12s-25-mono", "H.264/AAC MP4 720p, 12 s at 25, mono audio", { seconds: 12, audio: "mono" }),
  shape("h264-5s-25-loud", "H.264/AAC MP4 720p, 5 s at 25, very loud (about -5 LUFS)", { seconds: 5, gainDb: 16 }),
  shape("h264-1s-25", "H.264/AAC MP4 720p, 1 s at 25", { seconds: 1 }),
  shape("h264-120s-25", "H.264/AAC MP4 360p, 120 s at 25", { seconds: 120, size: [640, 360] }),
  shape("h264-10s-50", "H.264/AAC MP4 720p, 10 s at 50", { seconds: 10, rate: "50" }),
  shape("h264-10s-5994", "H.264/AAC MP4 720p, 10 s at 59.94 (599 frames)", { seconds: 10, rate: "60000/1001" }),
  shape("h264-1080i25-tff", "H.264/AAC MP4 1080i25 interlaced (TFF, +ildct+ilme)", {
    seconds: 10, size: [1920, 1080], interlace: true,
    video: [...H264, "-flags", "+ildct+ilme", "-x264-params", "tff=1"],
    expect: { interlaced: true },
  }),
  shape("mpeg2-ts-1080i25", "MPEG-2 video 1080i25 TFF + MP2 audio in MPEG-TS", {
    seconds: 10, size: [1920, 1080], interlace: true, ext: "ts",
    video: ["-c:v", "mpeg2video", "-b:v", "6M", "-maxrate", "6M", "-bufsize", "3M", "-flags", "+ildct+ilme", "-top", "1"],
    acodec: ["-c:a", "mp2", "-b:a", "192k"], out: ["-f", "mpegts"],
    expect: { interlaced: true, video_codec: "mpeg2video", container: "mpegts" },
  }),
  shape("phone-1080x1920", "H.264/AAC MP4 portrait phone video 1080x1920, 10 s at 29.97", {
    seconds: 10, rate: "30000/1001", size: [1080, 1920],
  }),
  shape("rotate90-mp4", "H.264/AAC MP4 1280x720 with rotate=90 in its display matrix (shows 720x1280)", {
    // ffmpeg 5.1 drops `rotate` when encoding; a stream copy writes it.
    seconds: 8, rotated: true, remux: ["-metadata:s:v:0", "rotate=90"], expect: { rotation: 90 },
  }),
  shape("fullrange-yuvj420p", "H.264/AAC MP4 720p full-range yuvj420p, 8 s at 25", {
    seconds: 8, pixFmt: "yuvj420p", expect: { pix_fmt: "yuvj420p" },
  }),
  shape("prores-mov-5.1", "ProRes 422 HQ 10-bit 4:2:2 MOV mezzanine, 5.1 PCM s24le, 10 s at 25", {
    seconds: 10, ext: "mov", audio: "5.1",
    // prores_aw: six times faster than prores_ks here, the same 10-bit HQ.
    video: ["-c:v", "prores", "-profile:v", "3"], pixFmt: "yuv422p10le",
    acodec: ["-c:a", "pcm_s24le"], quick: true,
    expect: { video_codec: "prores", audio_channels: 6 },
  }),
  shape("dnxhr-mov", "DNxHR SQ 4:2:2 MOV, PCM s16le stereo, 8 s at 25", {
    seconds: 8, ext: "mov", video: ["-c:v", "dnxhd", "-profile:v", "dnxhr_sq"], pixFmt: "yuv422p",
    acodec: ["-c:a", "pcm_s16le"], expect: { video_codec: "dnxhd" },
  }),
  shape("hevc-hdr10-pq", "HEVC Main10 HDR10 (BT.2020, PQ) MP4 720p, 6 s at 25", {
    seconds: 6, video: X265("smpte2084"), pixFmt: "yuv420p10le", expect: { hdr: "pq", video_codec: "hevc" },
  }),
  shape("hevc-hlg", "HEVC Main10 HLG (BT.2020, ARIB STD-B67) MP4 720p, 6 s at 25", {
    seconds: 6, video: X265("arib-std-b67"), pixFmt: "yuv420p10le", expect: { hdr: "hlg", video_codec: "hevc" },
  }),
  shape("webm-vp9-opus", "WebM VP9/Opus 720p, 5 s at 25", {
    seconds: 5, ext: "webm", video: ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M", "-row-mt", "1"],
    acodec: ["-c:a", "libopus", "-b:a", "96k"], quick: true, expect: { video_codec: "vp9", container: "matroska" },
  }),
  shape("webm-vp8-vorbis", "WebM VP8/Vorbis 720p, 8 s at 29.97", {
    seconds: 8, rate: "30000/1001", ext: "webm", video: ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M"],
    acodec: ["-c:a", "libvorbis", "-q:a", "3"], expect: { video_codec: "vp8" },
  }),
  shape("av1-svt-mp4", "AV1 (SVT-AV1 preset 12) + AAC in MP4 720p, 5 s at 25", {
    seconds: 5, video: ["-c:v", "libsvtav1", "-preset", "12", "-crf", "45"], expect: { video_codec: "av1" },
  }),
  shape("sd-720x480-sar8:9", "H.264/AAC MP4 720x480 SAR 8:9 (4:3 NTSC DV), 10 s at 29.97", {
    seconds: 10, rate: "30000/1001", size: [720, 480], sar: [8, 9], post: "setsar=8/9",
  }),
  shape("hdv-1440x1080-sar4:3", "H.264/AAC MP4 1440x1080 SAR 4:3 (anamorphic 16:9), 8 s at 25", {
    seconds: 8, size: [1440, 1080], sar: [4, 3], post: "setsar=4/3",
  }),
  shape("odd-853x480-vp9", "WebM VP9/Opus 853x480 (odd width), 8 s at 25", {
    seconds: 8, size: [853, 480], pre: "scale=853:480", ext: "webm",
    video: ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "800k", "-row-mt", "1"],
    acodec: ["-c:a", "libopus", "-b:a", "96k"], expect: { width: 853 },
  }),
  shape("square-1080x1080", "H.264/AAC MP4 1080x1080 square, 8 s at 25", { seconds: 8, size: [1080, 1080] }),
  shape("no-audio", "H.264 MP4 720p without an audio track, 8 s at 25", { seconds: 8, audio: null, expect: { audio_codec: null } }),
];

/** The ffmpeg arguments that make a shape. */
function makeArgs(s, file) {
  const d = s.len;
  const [w, h] = s.pre.startsWith("scale=") ? [1280, 720] : [s.w, s.h];
  // Interlaced shapes: 50p motion woven into 25i frames (real fields).
  const srcRate = s.interlace ? "50" : s.rate;
  // Red, with a green corner at the top left as the frame is displayed,
  // so the check sees the orientation as well as the colour. ffmpeg 5.1's
  // `rotate=90` tag writes a display matrix that turns the picture 90°
  // counter-clockwise (ffprobe: rotation 90; players and ffmpeg's
  // autorotate agree): the stored top right is displayed top left.
  const on = `enable='gte(t,${(d - 0.1 - 0.0005).toFixed(4)})'`;
  const corner = s.rotated ? "x=iw*3/4:y=0" : "x=0:y=0";
  const marker = `drawbox=x=0:y=0:w=iw:h=ih:color=red:t=fill:${on},drawbox=${corner}:w=iw/4:h=ih/4:color=lime:t=fill:${on}`;
  const vf = [s.pre, marker, s.interlace ? "tinterlace=mode=interleave_top,setfield=tff" : "", s.post].filter(Boolean).join(",");
  const args = ["-f", "lavfi", "-i", `testsrc2=size=${w}x${h}:rate=${srcRate}`];
  const tone = (f) => `${(0.125).toFixed(3)}*sin(2*PI*${f}*t)`;
  const asrc = {
    stereo: `aevalsrc=${tone(440)}|${tone(660)}:s=48000:c=stereo`,
    mono: `aevalsrc=${tone(440)}:s=48000:c=mono`,
    "5.1": `aevalsrc=${[440, 550, 660, 330, 110, 880].map(tone).join("|")}:s=48000:c=5.1`,
  }[s.audio];
  if (asrc) args.push("-f", "lavfi", "-t", d.toFixed(6), "-i", asrc);
  args.push("-map", "0:v", "-frames:v", String(s.frames), "-vf", vf, ...s.video, "-pix_fmt", s.pixFmt);
  if (asrc) args.push("-map", "1:a", "-af", `volume=${s.gainDb}dB`, ...s.acodec);
  args.push(...s.out, file);
  return args;
}

// ---------------------------------------------------------------------
// The hostile set: each must be refused with its category, and nothing
// fetched (the playlists point at the loopback server whose log is read).

function makeHostile(goodMp4) {
  const base = `http://127.0.0.1:${PORT}`;
  const h = [];
  const add = (name, desc, expect, make) => {
    const file = join(CORPUS, name);
    make(file);
    h.push({ name, desc, expect, file });
  };
  add("hls-playlist.mp4", "an HLS playlist named .mp4 (segments on the loopback server)", "unsupported_source", (f) =>
    writeFileSync(f, `#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n` +
      `#EXTINF:2.0,\n${base}/hls/seg0.ts\n#EXTINF:2.0,\n${base}/hls/seg1.ts\n#EXT-X-ENDLIST\n`));
  add("hls-master.mp4", "an HLS master playlist named .mp4 (variant on the loopback server)", "unsupported_source", (f) =>
    writeFileSync(f, `#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n${base}/hls/variant.m3u8\n`));
  add("concat-passwd.mp4", "an ffconcat list of file:/etc/passwd and a loopback URL, named .mp4", "unsupported_source", (f) =>
    writeFileSync(f, `ffconcat version 1.0\nfile 'file:/etc/passwd'\nfile '/etc/passwd'\nfile '${base}/concat/x.mp4'\n`));
  add("truncated.mp4", "the first half of a real MP4 (moov at the end: lost)", "corrupt_source", (f) => {
    copyFileSync(goodMp4.plain, f);
    truncateSync(f, Math.floor(statSync(f).size / 2));
  });
  add("truncated-faststart.mp4", "the first half of a real faststart MP4 (moov intact, media cut)", "corrupt_source", (f) => {
    copyFileSync(goodMp4.faststart, f);
    truncateSync(f, Math.floor(statSync(f).size / 2));
  });
  add("text.mp4", "a text file named .mp4", "unsupported_source", (f) =>
    writeFileSync(f, "This is not a video. Contact your ad ops team.\n".repeat(40)));
  add("html-error.mp4", "an HTML error page named .mp4", "unsupported_source", (f) =>
    writeFileSync(f, `<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1><img src="${base}/pixel.gif"></body></html>\n`));
  add("audio-only.m4a", "an audio-only AAC .m4a", "unsupported_source", (f) =>
    ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=10", "-c:a", "aac", "-b:a", "96k", f]));
  add("short-0.2s.mp4", "a 0.2 s H.264/AAC clip", "source_too_short", (f) =>
    ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-t", "0.2", "-i", "sine=sample_rate=48000",
      "-frames:v", "5", ...H264, "-pix_fmt", "yuv420p", ...AAC, f]));
  add("long-181s.mp4", "a 181 s H.264 clip (over the 180 s limit)", "source_too_long", (f) =>
    ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25", "-frames:v", String(181 * 25), ...H264, "-pix_fmt", "yuv420p", f]));
  return h;
}

// ---------------------------------------------------------------------
// Checks.

/** Whether an RGB colour is the red marker (after tone mapping, range and
 * matrix conversions it stays a saturated red). */
const isMarker = ([r, g, b]) => r >= 110 && r - Math.max(g, b) >= 70;
const isGreen = ([r, g, b]) => g >= 100 && g - Math.max(r, b) >= 50;
const rgbText = (c) => `(${c.map((x) => Math.round(x)).join(",")})`;

function ffprobeJson(file, extra = []) {
  const r = run("ffprobe", ["-v", "error", "-of", "json", ...extra, file]);
  if (r.status !== 0) throw new Error(`ffprobe ${file}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The EXTINF durations of a media playlist. */
function extinfs(playlist) {
  return [...readFileSync(playlist, "utf8").matchAll(/#EXTINF:([\d.]+)/g)].map((m) => Number(m[1]));
}

/** The muxed rendition's frames: the centre colour of every frame, the
 * whole last frame (picture rectangle), and the integrated loudness, in
 * one decode. */
function inspectMuxed(playlist, w, h, frames, span, dir) {
  mkdirSync(dir, { recursive: true });
  const centre = join(dir, "centre.rgb");
  const last = join(dir, "last.rgb");
  const r = run("ffmpeg", [
    "-hide_banner", "-nostats", "-nostdin", "-y", "-i", playlist,
    "-filter_complex",
    `[0:v:0]split=2[a][b];[a]crop=iw/4:ih/4,format=rgb24,scale=1:1:flags=area[c];` +
      `[b]select='gte(n\\,${frames - 2})',format=rgb24[l];` +
      `[0:a:0]asplit=2[a1][a2];[a1]ebur128=peak=true[ao];[a2]atrim=duration=${span.toFixed(3)},ebur128[ac]`,
    "-map", "[c]", "-fps_mode", "passthrough", "-f", "rawvideo", centre,
    "-map", "[l]", "-fps_mode", "passthrough", "-f", "rawvideo", last,
    "-map", "[ao]", "-f", "null", "-",
    "-map", "[ac]", "-f", "null", "-",
  ]);
  if (r.status !== 0) return { error: r.stderr.slice(-400) };
  const c = readFileSync(centre);
  const colours = [];
  for (let i = 0; i + 2 < c.length; i += 3) colours.push([c[i], c[i + 1], c[i + 2]]);
  const l = readFileSync(last);
  const fsz = w * h * 3;
  const lastFrame = l.length >= fsz ? l.subarray(l.length - fsz) : null;
  // The picture: the bounding box of pixels that are not (near) black.
  let rect = null;
  let lastCentre = null;
  let corner = null;
  if (lastFrame) {
    let x0 = w, x1 = -1, y0 = h, y1 = -1;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const o = (y * w + x) * 3;
        if (Math.max(lastFrame[o], lastFrame[o + 1], lastFrame[o + 2]) > 48) {
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
          if (y < y0) y0 = y;
          if (y > y1) y1 = y;
        }
      }
    if (x1 >= 0) rect = { w: x1 - x0 + 1, h: y1 - y0 + 1, x: x0, y: y0 };
    // Centre colour of the last frame, averaged over a small square.
    const s = [0, 0, 0];
    let n = 0;
    for (let y = Math.floor(h / 2) - 8; y < Math.floor(h / 2) + 8; y++)
      for (let x = Math.floor(w / 2) - 8; x < Math.floor(w / 2) + 8; x++) {
        const o = (y * w + x) * 3;
        s[0] += lastFrame[o];
        s[1] += lastFrame[o + 1];
        s[2] += lastFrame[o + 2];
        n++;
      }
    lastCentre = s.map((v) => v / n);
    // The picture's top-left corner (an eighth in from its edges).
    if (rect) {
      const o = ((rect.y + Math.floor(rect.h / 8)) * w + rect.x + Math.floor(rect.w / 8)) * 3;
      corner = [lastFrame[o], lastFrame[o + 1], lastFrame[o + 2]];
    }
  }
  // Each ebur128's last summary (a filter graph re-configured when the
  // first segment's parameters arrive prints an empty one first): the
  // whole rendition's, and the creative's own span's (without the padding).
  const lufsOf = (name) => {
    const m = [...r.stderr.matchAll(new RegExp(`\\[${name} @ [^\\]]*\\] Summary:\\s*\\n\\s*Integrated loudness:\\s*\\n\\s*I:\\s*(-?[\\d.]+|-inf) LUFS`, "g"))].pop();
    return m ? (m[1] === "-inf" ? -Infinity : Number(m[1])) : NaN;
  };
  const names = [...new Set([...r.stderr.matchAll(/\[(Parsed_ebur128_\d+) @/g)].map((x) => x[1]))].sort((a, b) => Number(a.split("_")[2]) - Number(b.split("_")[2]));
  return { colours, rect, lastCentre, corner, lufs: lufsOf(names[0]), lufsSpan: lufsOf(names[1]) };
}

/** The box a display aspect ratio fills in a w x h rung. */
function expectedRect(dar, w, h) {
  return dar >= w / h ? { w, h: w / dar } : { w: h * dar, h };
}

/** Condition one shape into `out` and check everything; a result row. */
function conditionAndCheck(s, file, out, extraArgs = []) {
  const fails = [];
  const row = { shape: s.name, desc: s.desc, len: s.len, fails };
  const r = run(BIN, ["ads", "condition", file, "--out", out, ...CONDITION_ARGS, ...extraArgs]);
  row.wall = r.ms / 1000;
  writeFileSync(join(out, "..", `${s.name}${extraArgs.length ? "-" + extraArgs.join("") : ""}.stderr`), r.stderr);
  let j;
  try {
    j = JSON.parse(r.stdout.trim().split("\n").pop());
  } catch {
    j = null;
  }
  row.json = j;
  if (r.status !== 0 || !j || j.error) {
    fails.push(`exit ${r.status}: ${r.stdout.trim() || r.stderr.trim().slice(-300)}`);
    row.command = [BIN, "ads", "condition", file, "--out", out, ...CONDITION_ARGS, ...extraArgs].join(" ");
    row.toolErrors = r.stderr.split("\n").filter((l) => l.includes("conditioning_tool_error")).join("\n");
    return row;
  }
  row.seconds = j.seconds;
  row.segments = j.segments;
  row.padding = j.padding_s;
  const total = j.segments * CADENCE;
  // Whole segments, the padding under one, the creative's own length, all of it.
  if (j.cadence_ms !== CADENCE_MS) fails.push(`cadence_ms ${j.cadence_ms}`);
  if (!(j.padding_s >= 0 && j.padding_s < CADENCE)) fails.push(`padding_s ${j.padding_s} not in [0, ${CADENCE})`);
  if (Math.abs(total - j.duration_s - j.padding_s) > 0.0015 && j.padding_s > 0)
    fails.push(`segments x ${CADENCE} = ${total.toFixed(3)} but duration + padding = ${(j.duration_s + j.padding_s).toFixed(3)}`);
  if (Math.abs(j.duration_s - s.len) > 0.05) fails.push(`duration_s ${j.duration_s} but the source lasts ${s.len.toFixed(3)} s`);
  if (total < s.len - 0.02) fails.push(`conditioned ${total.toFixed(3)} s is shorter than the source's ${s.len.toFixed(3)} s`);
  if (j.segments !== Math.max(1, Math.ceil((Math.round(s.len * 1000) - 20) / CADENCE_MS)))
    fails.push(`${j.segments} segments for ${s.len.toFixed(3)} s`);
  // What the probe saw.
  for (const [k, v] of Object.entries(s.expect)) {
    const got = j.source?.[k];
    const ok = k === "rotation" ? Math.abs(got) === v : got === v;
    if (!ok) fails.push(`source.${k} ${JSON.stringify(got)}, expected ${JSON.stringify(v)}`);
  }
  // Every rendition: decodes without an error, the right streams, whole segments.
  const want = { muxed: 2 * 2, video: 2 * 2, audio: 2 };
  const kinds = {};
  for (const rd of j.renditions ?? []) kinds[rd.kind] = (kinds[rd.kind] ?? 0) + 1;
  for (const [k, n] of Object.entries(want)) if (kinds[k] !== n) fails.push(`${kinds[k] ?? 0} ${k} renditions, ${n} expected`);
  for (const rd of j.renditions ?? []) {
    const pl = resolve(rd.playlist);
    const tag = `${rd.kind}/${rd.container}${rd.resolution ? "@" + rd.resolution : ""}`;
    if (!existsSync(pl)) {
      fails.push(`${tag}: no playlist ${pl}`);
      continue;
    }
    const d = run("ffmpeg", ["-nostdin", "-v", "error", "-i", pl, "-f", "null", "-"]);
    if (d.status !== 0 || d.stderr.trim()) fails.push(`${tag}: decode: ${d.stderr.trim().split("\n").slice(0, 2).join(" / ") || "exit " + d.status}`);
    const durs = extinfs(pl);
    if (durs.length !== j.segments || rd.segments !== j.segments) fails.push(`${tag}: ${durs.length} segments in the playlist, ${rd.segments} listed, ${j.segments} expected`);
    const sum = durs.reduce((a, b) => a + b, 0);
    if (Math.abs(sum - total) > 0.05) fails.push(`${tag}: EXTINFs sum to ${sum.toFixed(3)} s, not ${total.toFixed(3)}`);
    const p = ffprobeJson(pl, ["-count_packets", "-show_entries", "stream=codec_type,codec_name,width,height,pix_fmt,r_frame_rate,avg_frame_rate,sample_rate,channels,nb_read_packets"]);
    const v = p.streams.filter((x) => x.codec_type === "video");
    const a = p.streams.filter((x) => x.codec_type === "audio");
    if (v.length !== (rd.kind === "audio" ? 0 : 1) || a.length !== (rd.kind === "video" ? 0 : 1))
      fails.push(`${tag}: ${v.length} video and ${a.length} audio streams`);
    if (v[0]) {
      const [w, h] = (rd.resolution ?? "").split("x").map(Number);
      if (v[0].codec_name !== "h264" || v[0].pix_fmt !== "yuv420p") fails.push(`${tag}: ${v[0].codec_name} ${v[0].pix_fmt}`);
      if (v[0].width !== w || v[0].height !== h) fails.push(`${tag}: ${v[0].width}x${v[0].height}`);
      if (v[0].r_frame_rate !== "25/1") fails.push(`${tag}: ${v[0].r_frame_rate} fps`);
      const nf = Number(v[0].nb_read_packets);
      if (nf !== j.segments * FRAMES_PER_SEGMENT) fails.push(`${tag}: ${nf} frames, ${j.segments * FRAMES_PER_SEGMENT} expected`);
    }
    if (a[0]) {
      if (a[0].codec_name !== "aac" || Number(a[0].sample_rate) !== 48000 || a[0].channels !== 2)
        fails.push(`${tag}: audio ${a[0].codec_name} ${a[0].sample_rate} Hz ${a[0].channels} ch`);
      const secs = (Number(a[0].nb_read_packets) * 1024) / 48000;
      if (Math.abs(secs - total) > 0.1) fails.push(`${tag}: ${secs.toFixed(3)} s of audio for ${total.toFixed(3)} s`);
    }
  }
  // The muxed top rung (fMP4): the marker held to the end, from where the
  // source ends; the picture boxed at the source's display aspect; loudness.
  const [tw, th] = LADDER[LADDER.length - 1];
  const top = (j.renditions ?? []).find((x) => x.kind === "muxed" && x.container === "fmp4" && x.resolution === `${tw}x${th}`);
  if (!top) {
    fails.push("no muxed fMP4 top rung");
    return row;
  }
  const frames = j.segments * FRAMES_PER_SEGMENT;
  const m = inspectMuxed(resolve(top.playlist), tw, th, frames, Math.min(j.duration_s, total), join(CHECK, s.name + (extraArgs.length ? "-" + extraArgs.join("") : "")));
  if (m.error) {
    fails.push(`inspect: ${m.error}`);
    return row;
  }
  row.lufs = m.lufs;
  if (s.audio) {
    if (!(Math.abs(m.lufs - TARGET_LUFS) <= 1))
      fails.push(`loudness ${m.lufs} LUFS over the rendition, ${TARGET_LUFS} ±1 expected (${m.lufsSpan} LUFS over the creative's own ${j.duration_s} s, without the padding)`);
  } else if (!(m.lufs <= -70)) fails.push(`no-audio source: ${m.lufs} LUFS, silence expected`);
  const cols = m.colours;
  if (cols.length !== frames) fails.push(`${cols.length} frames decoded, ${frames} expected`);
  let from = cols.length;
  while (from > 0 && isMarker(cols[from - 1])) from--;
  row.lastRgb = m.lastCentre;
  row.marker = cols.length > 0 && isMarker(cols[cols.length - 1]) && m.lastCentre && isMarker(m.lastCentre);
  row.markerFrom = from / FPS;
  if (!row.marker) fails.push(`last frame ${rgbText(m.lastCentre ?? cols[cols.length - 1] ?? [])} is not the red marker`);
  else if (Math.abs(from / FPS - (s.len - 0.1)) > 0.1)
    fails.push(`the marker shows from ${(from / FPS).toFixed(2)} s, the source's last 0.1 s starts at ${(s.len - 0.1).toFixed(2)} s`);
  if (cols.length && isMarker(cols[0])) fails.push("the first frame is already the marker");
  if (row.marker && !(m.corner && isGreen(m.corner)))
    fails.push(`the marker's top-left corner is ${rgbText(m.corner ?? [])}, not green: the picture is turned or flipped`);
  const want_ = expectedRect(s.dar, tw, th);
  row.rect = m.rect;
  if (!m.rect) fails.push("the last frame is black");
  else if (Math.abs(m.rect.w - want_.w) > 6 || Math.abs(m.rect.h - want_.h) > 6)
    fails.push(`picture ${m.rect.w}x${m.rect.h} in ${tw}x${th}, ${Math.round(want_.w)}x${Math.round(want_.h)} expected for display aspect ${s.dar.toFixed(3)}`);
  return row;
}

/** Files under a directory (recursively). */
function walk(dir) {
  const out = [];
  if (!existsSync(dir)) return out;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

// ---------------------------------------------------------------------
// Main.

const t0 = Date.now();
const ONLY = opt("--only")?.split(",");
const shapes = SHAPES.filter((s) => (ONLY ? ONLY.includes(s.name) : QUICK ? s.quick : true));
log(`# ${QUICK ? "quick" : "full"} corpus: ${shapes.length} shapes into ${WORK}`);

// The loopback server answers: a control request shows its log records
// requests, so "no requests" below means none were made.
if (PORT) {
  const res = await fetch(`http://127.0.0.1:${PORT}/__control__`).catch((e) => ({ status: String(e) }));
  log(`# loopback server on 127.0.0.1:${PORT}, control request: ${res.status}`);
}

const gen0 = Date.now();
for (const s of shapes) {
  s.file = join(CORPUS, `${s.name}.${s.ext}`);
  let g;
  if (s.remux) {
    const pre = `${s.file}.pre.${s.ext}`;
    g = ffmpeg(makeArgs(s, pre));
    ffmpeg(["-i", pre, "-map", "0", "-c", "copy", ...s.remux, s.file]);
  } else g = ffmpeg(makeArgs(s, s.file));
  log(`generated ${s.name} (${(statSync(s.file).size / 1e6).toFixed(1)} MB, ${(g.ms / 1000).toFixed(1)} s)`);
}
// A real MP4 to truncate, moov at the end and moov first.
const good = { plain: join(CORPUS, "whole.mp4.src"), faststart: join(CORPUS, "whole-faststart.mp4.src") };
for (const [f, extra] of [[good.plain, []], [good.faststart, ["-movflags", "+faststart"]]])
  ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-t", "10", "-i", "sine=sample_rate=48000",
    "-frames:v", "250", ...H264, "-pix_fmt", "yuv420p", ...AAC, ...extra, "-f", "mp4", f]);
const hostile = makeHostile(good);
const genS = (Date.now() - gen0) / 1000;
log(`# corpus generated in ${genS.toFixed(1)} s`);

const rows = [];
for (const s of shapes) {
  log(`conditioning ${s.name} ...`);
  const row = conditionAndCheck(s, s.file, join(OUT, s.name));
  rows.push(row);
  log(`  ${row.fails.length ? "FAIL" : "ok"} in ${row.wall.toFixed(1)} s${row.fails.length ? ": " + row.fails.join("; ") : ""}`);
}

// One pass (every rung from one decode) against one ffmpeg run per rung:
// the per-rung output checked like the one-pass one, then both timed
// again, alternately (the machine may be shared: the load is printed).
const TIMING_RUNS = 3;
const timings = [];
if (!QUICK) {
  for (const s of shapes.filter((x) => x.timing)) {
    log(`conditioning ${s.name} with --encode per-rung ...`);
    const per = conditionAndCheck(s, s.file, join(OUT, `${s.name}-per-rung`), ["--encode", "per-rung"]);
    log(`  ${per.fails.length ? "FAIL" : "ok"} in ${per.wall.toFixed(1)} s${per.fails.length ? ": " + per.fails.join("; ") : ""}`);
    if (per.fails.length) rows.push({ ...per, shape: `${s.name} (per-rung)` });
    // Wall seconds (the JSON's) and CPU seconds of cf-ssai and its ffmpegs
    // (GNU time; less sensitive to other load than wall time).
    const t = { shape: s.name, one: [], per: [], oneCpu: [], perCpu: [], load: [] };
    for (let i = 0; i < TIMING_RUNS; i++)
      for (const [mode, list, cpu] of [["one-pass", t.one, t.oneCpu], ["per-rung", t.per, t.perCpu]]) {
        const out = join(OUT, `timing-${s.name}-${mode}-${i}`);
        const tf = `${out}.time`;
        const r = existsSync("/usr/bin/time")
          ? run("/usr/bin/time", ["-f", "%U %S", "-o", tf, BIN, "ads", "condition", s.file, "--out", out, ...CONDITION_ARGS, "--encode", mode])
          : run(BIN, ["ads", "condition", s.file, "--out", out, ...CONDITION_ARGS, "--encode", mode]);
        list.push(r.status === 0 ? JSON.parse(r.stdout.trim().split("\n").pop()).seconds : NaN);
        cpu.push(existsSync(tf) ? readFileSync(tf, "utf8").trim().split("\n").pop().split(" ").map(Number).reduce((a, b) => a + b, 0) : NaN);
        t.load.push(os.loadavg()[0]);
        rmSync(out, { recursive: true, force: true });
        rmSync(tf, { force: true });
      }
    log(`  one-pass ${t.one.join(", ")} s (CPU ${t.oneCpu.join(", ")}); per-rung ${t.per.join(", ")} s (CPU ${t.perCpu.join(", ")})`);
    timings.push(t);
  }
}

// The hostile set.
const passwd = readFileSync("/etc/passwd", "utf8").split("\n").filter((l) => l.length >= 8);
const hrows = [];
for (const h of hostile) {
  const out = join(OUT, `hostile-${h.name}`);
  const r = run(BIN, ["ads", "condition", h.file, "--out", out, ...CONDITION_ARGS]);
  let j = null;
  try {
    j = JSON.parse(r.stdout.trim().split("\n").pop());
  } catch {}
  const got = r.status === 0 ? "ACCEPTED" : j?.error ?? `exit ${r.status}, no category`;
  const texts = [r.stdout, r.stderr, ...walk(out).map((f) => readFileSync(f, "latin1"))];
  const leaked = passwd.some((l) => texts.some((t) => t.includes(l)));
  const ok = r.status === 1 && got === h.expect && !leaked;
  hrows.push({ ...h, got, detail: j?.detail ?? "", ok, leaked });
  log(`hostile ${h.name}: ${got}${leaked ? " (LEAKED /etc/passwd content)" : ""} — ${ok ? "ok" : "FAIL, expected " + h.expect}`);
}
// Nothing fetched: the server saw the control request only.
let requests = [];
if (SERVER_LOG) {
  requests = readFileSync(SERVER_LOG, "utf8").split("\n").filter((l) => /"(GET|HEAD|POST|PUT|OPTIONS) /.test(l));
}
const fetched = requests.filter((l) => !l.includes("/__control__"));
const controlSeen = requests.some((l) => l.includes("/__control__"));
const corpusLeak = walk(OUT).some((f) => {
  const t = readFileSync(f, "latin1");
  return passwd.some((l) => t.includes(l));
});

// ---------------------------------------------------------------------
// Summary.

const f2 = (x, d = 2) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(d) : x === -Infinity ? "-inf" : "—");
const table = (head, body) => {
  const w = head.map((h, i) => Math.max(h.length, ...body.map((r) => String(r[i]).length)));
  const line = (r) => "| " + r.map((c, i) => String(c).padEnd(w[i])).join(" | ") + " |";
  return [line(head), "|" + w.map((n) => "-".repeat(n + 2)).join("|") + "|", ...body.map(line)].join("\n");
};
console.log(`\n## Conditioning corpus (${QUICK ? "quick" : "full"}): cadence ${CADENCE_MS} ms, ${FPS} fps, ladder ${CONDITION_ARGS[5]}, ts+fmp4, ${TARGET_LUFS} LUFS / -1 dBTP\n`);
console.log(table(
  ["shape", "source", "length s", "conditioned in s", "segments", "padding s", "loudness LUFS", "last-frame marker", "verdict"],
  rows.map((r) => [
    r.shape, r.desc, f2(r.len, 3), f2(r.seconds, 1), r.segments ?? "—", f2(r.padding, 3),
    r.lufs === undefined ? "—" : f2(r.lufs, 1),
    r.marker === undefined ? "—" : r.marker ? `ok (from ${f2(r.markerFrom)} s)` : `NO ${rgbText(r.lastRgb ?? [])}`,
    r.fails.length ? "FAIL" : "ok",
  ]),
));
const failed = rows.filter((r) => r.fails.length);
if (failed.length) {
  console.log("\nFailures:");
  for (const r of failed) {
    console.log(`- ${r.shape}: ${r.fails.join("; ")}`);
    if (r.command) console.log(`  command: ${r.command}`);
    if (r.toolErrors) console.log(`  tool log: ${r.toolErrors.slice(0, 800)}`);
  }
}
console.log("\n## Hostile sources\n");
console.log(table(["file", "what", "expected", "got", "detail", "verdict"],
  hrows.map((h) => [h.name, h.desc, h.expect, h.got, h.detail.slice(0, 80), h.ok ? "refused" : h.got === "ACCEPTED" ? "ACCEPTED" : "WRONG"])));
console.log(`\nloopback server: ${controlSeen ? "control request logged" : "CONTROL REQUEST NOT LOGGED (the check is blind)"}; ${fetched.length} requests from the pipeline${fetched.length ? ":\n  " + fetched.join("\n  ") : ""}`);
console.log(`/etc/passwd content in any output: ${corpusLeak || hrows.some((h) => h.leaked) ? "YES" : "none"}`);
if (timings.length) {
  const min = (l) => Math.min(...l.filter(Number.isFinite));
  const median = (l) => {
    const v = l.filter(Number.isFinite).sort((a, b) => a - b);
    return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  };
  console.log(`\n## One pass vs one ffmpeg run per rung (${LADDER.length} rungs; ${TIMING_RUNS} runs each, alternating)\n`);
  console.log(table(["shape", "one-pass wall s (runs)", "per-rung wall s (runs)", "wall min: one-pass / per-rung", "one-pass CPU s", "per-rung CPU s", "CPU median: one-pass / per-rung", "1-min load"],
    timings.map((t) => [t.shape, t.one.map((x) => f2(x, 1)).join(", "), t.per.map((x) => f2(x, 1)).join(", "),
      `${f2(min(t.one), 1)} / ${f2(min(t.per), 1)}`,
      t.oneCpu.map((x) => f2(x, 1)).join(", "), t.perCpu.map((x) => f2(x, 1)).join(", "),
      `${f2(median(t.oneCpu), 1)} / ${f2(median(t.perCpu), 1)}`,
      `${f2(Math.min(...t.load), 1)}–${f2(Math.max(...t.load), 1)}`])));
  console.log(`(${os.cpus().length} CPUs)`);
}
const playable = rows.filter((r) => !r.shape.endsWith("(per-rung)"));
const nOk = playable.filter((r) => !r.fails.length).length;
const hOk = hrows.filter((h) => h.ok).length;
console.log(`\ncorpus generated in ${genS.toFixed(1)} s; whole run ${((Date.now() - t0) / 1000).toFixed(1)} s`);
console.log(`${nOk}/${playable.length} shapes playable`);
console.log(`${hOk}/${hrows.length} hostile sources refused`);
const bad = failed.length > 0 || hOk !== hrows.length || fetched.length > 0 || !controlSeen || corpusLeak;
process.exit(bad ? 1 : 0);
