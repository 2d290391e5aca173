// MPEG-DASH on the real local stack: the origin's live MPDs (SCTE-35 as
// EventStream xml+bin, SCTE 35 XML, `$Time$` templates, in-band `emsg`)
// through the manifest worker. The DASH live validator (`cf-ssai
// dash-validate`) over viewers and late joiners; every ad Period's
// segments fetched and decoded (ffprobe), audio and video of each Period
// within a frame; the MPDs against the DASH XSD (xmllint); and real
// players in headless Chromium: Shaka Player (SSAI, SGAI) and dash.js
// (SSAI), with the ad on screen (pixels compared with the ad's own
// frames).
//
// Quick by default (CI: about 80 s of validation, one break per player);
// `DASH_FULL=1` (scripts/dash-full.sh) runs 10 minutes of validation with
// 5 late joiners and plays through 3 breaks.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ARTIFACTS, WATCH_STALLS, launch, shakaStart as startShaka } from "./browser.mjs";
import { startStack, api, http, dashConfig, ROOT, ORG, CLI } from "./stack.mjs";

const FULL = process.env.DASH_FULL === "1";
const VALIDATE_S = FULL ? 600 : 80;
const PLAY_S = FULL ? 150 : 62;
const VIEWERS = 5;
// A break every 20 segments (38.4 s), 8 segments long (15.36 s): ad1
// (9.6 s, 5 segments) then 3 segments of slate.
const BREAK_EVERY = 20;

const SHAKA = readFileSync(join(ROOT, "node_modules/shaka-player/dist/shaka-player.compiled.js"), "utf8");
const DASHJS = readFileSync(join(ROOT, "node_modules/dashjs/dist/modern/umd/dash.all.min.js"), "utf8");

let s, browser;
const must = (r, what) => {
  if (r.status >= 300) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.json)}`);
  return r;
};
before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  s = await startStack({ firstBreak: 8, breakEvery: BREAK_EVERY, breakLen: 8, window: 10, dialects: [], fmp4: false, demuxed: false, ll: false, dash: true });
  for (const name of ["dash-xml", "dash-time", "dash-emsg"]) {
    must(await api(s.base, "PUT", `/api/orgs/${ORG}/channels/${name}`, dashConfig(s.originBase, name)), name);
  }
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  if (s) s.stop();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const mpdUrl = (ch, mode = "ssai") => `${s.base}/${ORG}/${ch}/manifest.mpd?mode=${mode}`;
/** Ad Periods: `{break}-{j}` (not the origin's, not a return `~`). */
const adPeriods = (text) => [...text.matchAll(/<Period id="([^"]+)"/g)].map((m) => m[1]).filter((id) => id !== "p0" && !id.includes("~"));

/**
 * A viewer as a player reloads: the first request without a session (the
 * MPD's `Location` then names the viewer's own URL), then that URL every
 * ~2 s, each MPD saved as `{viewer}-{fetchedAtMs}.mpd` for the validator.
 */
async function viewer(name, url, dir, untilMs) {
  let at = url;
  let n = 0;
  while (Date.now() < untilMs) {
    const fetchedAt = Date.now();
    const r = await http(at);
    assert.equal(r.status, 200, `${name}: ${r.status} ${r.text()}`);
    assert.match(r.headers["content-type"] ?? "", /application\/dash\+xml/);
    const text = r.text();
    writeFileSync(join(dir, `${name}-${fetchedAt}.mpd`), text);
    const loc = text.match(/<Location>([^<]+)<\/Location>/);
    if (loc) at = loc[1].replaceAll("&amp;", "&");
    n++;
    await sleep(1500 + Math.random() * 1000);
  }
  return n;
}

function validate(url, files) {
  const r = spawnSync(CLI, ["dash-validate", "--url", url, ...files], { encoding: "utf8", maxBuffer: 256 << 20 });
  assert.ok(r.status === 0 || r.status === 1, `dash-validate: ${r.status} ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function ffprobe(file, stream) {
  const r = spawnSync("ffprobe", ["-v", "error", "-select_streams", stream, "-count_frames", "-show_entries", "stream=nb_read_frames,duration,codec_type:format=duration", "-of", "json", file], { encoding: "utf8" });
  assert.equal(r.status, 0, `${file}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

async function fetchBytes(url) {
  const r = await fetch(url);
  assert.equal(r.status, 200, `${url}: ${r.status}`);
  return Buffer.from(await r.arrayBuffer());
}

/** A Period's Representation as one file: init + every segment (HEAD and GET each). */
async function periodFile(rep, dir, name) {
  const parts = [await fetchBytes(rep.init_url)];
  for (const seg of rep.segments) {
    const h = await fetch(seg.url, { method: "HEAD" });
    assert.equal(h.status, 200, `HEAD ${seg.url}: ${h.status}`);
    parts.push(await fetchBytes(seg.url));
  }
  const file = join(dir, `${name}.mp4`);
  writeFileSync(file, Buffer.concat(parts));
  return file;
}

test("DASH SSAI and SGAI keep the live rules across reloads and late joiners; every ad Period's segments exist, decode and line up", async () => {
  const dir = mkdtempSync(join(tmpdir(), "cf-ssai-dash-"));
  const sgaiDir = mkdtempSync(join(tmpdir(), "cf-ssai-dash-sgai-"));
  const end = Date.now() + VALIDATE_S * 1000;
  // Viewers join one after another over the run (late joiners).
  const ssai = Array.from({ length: VIEWERS }, (_, i) =>
    sleep(i * ((VALIDATE_S * 1000) / (VIEWERS + 1))).then(() => viewer(`v${i}`, mpdUrl("news-dash"), dir, end)),
  );
  const sgai = [0, 1].map((i) => sleep(i * 20_000).then(() => viewer(`g${i}`, mpdUrl("news-dash", "sgai"), sgaiDir, end)));
  // Each cue form reaches the same break records (an ad Period appears).
  const forms = ["dash-xml", "dash-time", "dash-emsg"].map(async (ch) => {
    let seen = [];
    while (Date.now() < end && seen.length === 0) {
      const r = await http(mpdUrl(ch));
      assert.equal(r.status, 200, `${ch}: ${r.status}`);
      seen = adPeriods(r.text());
      if (seen.length === 0) await sleep(2000);
    }
    return [ch, seen];
  });
  const [counts, , formsSeen] = await Promise.all([Promise.all(ssai), Promise.all(sgai), Promise.all(forms)]);
  for (const [ch, seen] of formsSeen) assert.ok(seen.length > 0, `${ch}: an ad Period appeared`);
  assert.ok(counts.every((n) => n > 5), `every viewer reloaded (${counts})`);

  const files = (d) => spawnSync("ls", [d], { encoding: "utf8" }).stdout.trim().split("\n").map((f) => join(d, f));
  const report = validate(mpdUrl("news-dash"), files(dir));
  console.log(`# dash ssai: ${report.snapshots} MPDs from ${report.viewers} viewers, ${report.violations.length} violations`);
  assert.deepEqual(report.violations, [], "no live-rule violation (SSAI)");
  const sgaiReport = validate(mpdUrl("news-dash", "sgai"), files(sgaiDir));
  assert.deepEqual(sgaiReport.violations, [], "no live-rule violation (SGAI)");

  // Breaks appeared, and content came back after them.
  const all = files(dir).map((f) => readFileSync(f, "utf8"));
  const breaks = new Set(all.flatMap(adPeriods).map((id) => id.replace(/-\d+$/, "")));
  const expected = FULL ? 10 : 2;
  assert.ok(breaks.size >= expected, `at least ${expected} breaks seen (${[...breaks]})`);
  assert.ok(all.some((t) => /<Period id="p0~/.test(t)), "a return Period after a break");
  const sgaiAll = files(sgaiDir).map((f) => readFileSync(f, "utf8"));
  assert.ok(sgaiAll.some((t) => t.includes("urn:mpeg:dash:event:alternativeMPD:replace:2025")), "SGAI events announced");
  assert.ok(sgaiAll.every((t) => adPeriods(t).length === 0), "SGAI leaves the content Period alone");

  // Every ad Period of the newest MPD that holds a whole break (its
  // return Period listed): segments exist (HEAD, GET), decode, sum to the
  // Period's length, audio and video within a frame.
  const media = mkdtempSync(join(tmpdir(), "cf-ssai-dash-media-"));
  const whole = files(dir)
    .sort((a, b) => Number(b.match(/-(\d+)\.mpd$/)[1]) - Number(a.match(/-(\d+)\.mpd$/)[1]))
    .find((f) => {
      const t = readFileSync(f, "utf8");
      return adPeriods(t).length > 0 && /<Period id="p0~/.test(t.slice(t.indexOf("<AssetIdentifier")));
    });
  assert.ok(whole, "an MPD with a whole break in its window");
  const ads = validate(mpdUrl("news-dash"), [whole]).periods.filter((p) => adPeriods(`<Period id="${p.id}"`).length > 0);
  assert.ok(ads.length > 0 && ads.every((p) => p.end != null), `complete ad Periods (${ads.map((p) => p.id)})`);
  for (const p of ads) {
    const length = p.end - p.start;
    const durations = {};
    for (const set of p.adaptation_sets) {
      for (const rep of set.representations) {
        const sum = rep.segments.reduce((a, x) => a + x.duration, 0);
        assert.ok(Math.abs(sum - length) <= 0.021, `${p.id} ${rep.id}: segments sum to ${sum} s, the Period lasts ${length} s`);
        const file = await periodFile(rep, media, `${p.id}-${rep.id}`);
        const kind = set.content_type === "audio" ? "a:0" : "v:0";
        const probe = ffprobe(file, kind);
        const st = probe.streams[0];
        assert.ok(Number(st.nb_read_frames) > 0, `${p.id} ${rep.id}: decodes`);
        durations[set.content_type] = Number(st.duration ?? probe.format.duration);
      }
    }
    if (durations.video != null && durations.audio != null) {
      assert.ok(Math.abs(durations.video - durations.audio) <= 0.04, `${p.id}: audio ${durations.audio} s, video ${durations.video} s`);
    }
  }

  // The MPDs against the DASH schema (ISO/IEC 23009-1; the DASH-IF
  // alternative-MPD event of the 6th edition draft for SGAI).
  const withAds = files(dir).find((f) => adPeriods(readFileSync(f, "utf8")).length > 0);
  const withEvent = files(sgaiDir).find((f) => readFileSync(f, "utf8").includes("alternativeMPD"));
  const adMpdFile = join(media, "ad.mpd");
  const eventUrl = readFileSync(withEvent, "utf8").match(/ReplacePresentation uri="([^"]+)"/)[1].replaceAll("&amp;", "&");
  const adMpd = await http(eventUrl);
  assert.equal(adMpd.status, 200, `the SGAI ad MPD: ${adMpd.status}`);
  assert.match(adMpd.text(), /type="static"/);
  writeFileSync(adMpdFile, adMpd.text());
  const xsd = spawnSync(join(ROOT, "scripts/mpd-xsd.sh"), [withAds, withEvent, adMpdFile], { encoding: "utf8" });
  assert.equal(xsd.status, 0, `xmllint: ${xsd.stdout}${xsd.stderr}`);
});

// ---- Real players ---------------------------------------------------------

const PAGE = `<!doctype html><html><body style="margin:0;background:#000">
<video id="v" muted playsinline style="width:960px;height:540px"></video></body></html>`;

/**
 * Page-side: a 16×9 thumbnail of the frame on screen every 300 ms (the
 * pixel check), with the playhead.
 */
const SAMPLE_FRAMES = `function sampleFrames(v, log) {
  const c = document.createElement("canvas"); c.width = 16; c.height = 9;
  const g = c.getContext("2d", { willReadFrequently: true });
  log.frames = [];
  setInterval(() => {
    if (v.readyState < 2 || log.frames.length > 2000) return;
    try {
      // The interstitial's own element when it plays (SGAI), else the content.
      const ad = document.querySelector("#ads video");
      g.drawImage(ad && !ad.paused && ad.readyState >= 2 ? ad : v, 0, 0, 16, 9);
      const d = g.getImageData(0, 0, 16, 9).data;
      const px = [];
      for (let i = 0; i < d.length; i += 4) px.push(d[i], d[i + 1], d[i + 2]);
      log.frames.push({ t: Date.now(), ct: v.currentTime, px });
    } catch (e) { log.errors.push("canvas: " + e); }
  }, 300);
}`;

function startDashjs(src) {
  const log = (window.playerLog = { segs: [], fatal: [], errors: [], events: [], maxStallMs: 0, started: false, progress: 0 });
  const v = document.getElementById("v");
  const player = (window.player = dashjs.MediaPlayer().create());
  player.on(dashjs.MediaPlayer.events.FRAGMENT_LOADING_COMPLETED, (e) => {
    if (e.request && e.request.mediaType !== "text" && e.request.type === "MediaSegment") log.segs.push({ url: e.request.url, t: Date.now() });
  });
  player.on(dashjs.MediaPlayer.events.ERROR, (e) => log.fatal.push(JSON.stringify(e.error?.code ?? e.error ?? e).slice(0, 200)));
  player.on(dashjs.MediaPlayer.events.PERIOD_SWITCH_COMPLETED, (e) => log.events.push({ e: "PERIOD", id: e.toStreamInfo?.id, t: Date.now() }));
  player.initialize(v, src, true);
  watchStalls(v, log);
  sampleFrames(v, log);
}

async function play(lib, start, src, seconds, args = []) {
  const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
  await page.goto(`${s.base}/healthz`);
  await page.setContent(PAGE);
  // Every request stays in the resource timeline (250 by default: a long
  // run would lose the callback's).
  await page.evaluate(() => performance.setResourceTimingBufferSize(1_000_000));
  await page.addScriptTag({ content: lib });
  await page.addScriptTag({ content: WATCH_STALLS });
  await page.addScriptTag({ content: SAMPLE_FRAMES });
  await page.evaluate(`(${start.toString()})(${JSON.stringify(src)}, ...${JSON.stringify(args)})`);
  let shot = false;
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    await sleep(1000);
    const log = await page.evaluate(() => ({ ...window.playerLog, frames: undefined }));
    if (!shot && log.segs.length > 0 && isAd(log.segs[log.segs.length - 1].url)) {
      await sleep(4000);
      await page.screenshot({ path: join(ARTIFACTS, `dash-${start === startDashjs ? "dashjs" : "shaka"}-${src.includes("mode=sgai") ? "sgai" : "ssai"}-mid-ad.png`) });
      shot = true;
    }
  }
  const log = await page.evaluate(() => ({ ...window.playerLog, resources: performance.getEntriesByType("resource").map((e) => e.name) }));
  await page.close();
  return log;
}

const isAd = (u) => /\/media\/demo\/(ads|slates)\//.test(u);

/**
 * Frames of each ad's and the slate's source, two a second, as 16×9
 * thumbnails (ffmpeg): a player may join an ad after its start, and the
 * second ad's picture zooms.
 */
function adThumbnails() {
  return ["ad1", "ad2", "slate"].flatMap((id) => {
    const f = spawnSync("ffmpeg", ["-hide_banner", "-loglevel", "error", "-i", join(ROOT, "demo-media/src", `${id}.mp4`), "-vf", "fps=2,scale=16:9", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"], { maxBuffer: 1 << 22 });
    assert.equal(f.status, 0, String(f.stderr));
    const size = 16 * 9 * 3;
    return Array.from({ length: Math.floor(f.stdout.length / size) }, (_, i) => ({ id: `${id}@${i / 2}s`, px: [...f.stdout.subarray(i * size, (i + 1) * size)] }));
  });
}

const distance = (a, b) => a.reduce((acc, x, i) => acc + Math.abs(x - b[i]), 0) / a.length;

/** Checks of one SSAI playback: no fatal error, no stall over 2 s, content → ad → content, the ad on screen. */
function checkPlayback(name, log, refs) {
  assert.deepEqual(log.fatal, [], `${name}: no fatal error (${log.errors.slice(0, 5)})`);
  assert.ok(log.started && log.progress > 100, `${name}: playback started and advanced`);
  assert.ok(log.maxStallMs <= 2000, `${name}: longest stall ${log.maxStallMs} ms`);
  // A whole break from its start: content, then ads, then content (a
  // player that joins mid-break starts with ads; the next break counts).
  const kinds = log.segs.map((x) => (isAd(x.url) ? "ad" : "content"));
  const content = kinds.indexOf("content");
  const firstAd = kinds.indexOf("ad", content);
  assert.ok(content >= 0 && firstAd > content, `${name}: content, then ad segments (${kinds.join(",")})`);
  assert.ok(kinds.slice(firstAd).includes("content"), `${name}: back to content after the break`);
  // The ad on screen: a frame close to one of the ads' own frames (the
  // demo ads are pictures with a caption), after content frames that are
  // not.
  const match = (f) => refs.find((r) => distance(f.px, r.px) < 18);
  const contentFrame = log.frames.findIndex((f) => !match(f));
  const onScreen = log.frames.findIndex((f, i) => i > contentFrame && match(f));
  assert.ok(contentFrame >= 0, `${name}: content on screen`);
  assert.ok(onScreen > contentFrame, `${name}: an ad's picture on screen after content (${log.frames.length} frames sampled; closest ${Math.min(...log.frames.map((f) => Math.min(...refs.map((r) => distance(f.px, r.px))))).toFixed(1)})`);
  return { breaks: new Set(log.segs.filter((x) => isAd(x.url)).map((x) => Math.round(x.t / 30000))).size };
}

test("DASH SSAI plays in Shaka Player and dash.js through breaks: ads on screen, content after, no stall", async () => {
  const refs = adThumbnails();
  const [shakaLog, dashLog] = await Promise.all([
    play(SHAKA, startShaka, mpdUrl("news-dash"), PLAY_S, [false]),
    play(DASHJS, startDashjs, mpdUrl("news-dash"), PLAY_S),
  ]);
  console.log(`# dash shaka: stall ${shakaLog.maxStallMs} ms, errors ${shakaLog.errors.slice(0, 5)}; dash.js: stall ${dashLog.maxStallMs} ms, errors ${dashLog.errors.slice(0, 5)}`);
  checkPlayback("Shaka", shakaLog, refs);
  checkPlayback("dash.js", dashLog, refs);
  if (FULL) {
    for (const [name, log] of [["Shaka", shakaLog], ["dash.js", dashLog]]) {
      const adStarts = log.segs.filter((x, i, a) => isAd(x.url) && (i === 0 || !isAd(a[i - 1].url))).length;
      assert.ok(adStarts >= 3, `${name}: 3 breaks played (${adStarts})`);
    }
  }
});

test("DASH SGAI: Shaka Player plays the alternative-MPD event's ad MPD and returns to content; dash.js (no alternative MPD) plays the content and fires the callback", async () => {
  const refs = adThumbnails();
  const [log, dashLog] = await Promise.all([
    play(SHAKA, startShaka, mpdUrl("news-dash", "sgai"), PLAY_S, [true, true]),
    play(DASHJS, startDashjs, mpdUrl("news-dash", "sgai"), PLAY_S),
  ]);
  // dash.js 5.2: content only, the callback event's GET sent at the break.
  assert.deepEqual(dashLog.fatal, [], `dash.js: no fatal error (${dashLog.errors.slice(0, 5)})`);
  assert.ok(dashLog.started && dashLog.progress > 100, "dash.js: playback started and advanced");
  assert.ok(dashLog.maxStallMs <= 2000, `dash.js: longest stall ${dashLog.maxStallMs} ms`);
  assert.ok(!dashLog.segs.some((x) => isAd(x.url)), "dash.js: no ad segment (it does not play alternative MPDs)");
  assert.ok(dashLog.resources.some((u) => /\/interstitials\/[^/]+\.mpd/.test(u)), `dash.js: the callback GET reached us (${dashLog.resources.filter((u) => !/\.m4s/.test(u)).slice(-5)})`);
  const names = log.events.map((e) => e.e);
  if (FULL) assert.ok(names.filter((e) => e === "AD_STARTED").length >= 3, `Shaka SGAI: 3 breaks played (${names})`);
  console.log(`# dash shaka sgai: events ${names.join(",")}; stall ${log.maxStallMs} ms; errors ${log.errors.slice(0, 5)}`);
  assert.deepEqual(log.fatal, [], "no fatal error");
  assert.ok(names.includes("AD_STARTED"), `ad started (${names.join(",")})`);
  assert.ok(log.segs.some((x) => isAd(x.url)), "the ad MPD's segments were fetched");
  assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms`);
  const done = log.events.find((e) => e.e === "AD_COMPLETE" || e.e === "AD_STOPPED" || e.e === "ALL_ADS_COMPLETED");
  assert.ok(done, `the ad ended (${names.join(",")})`);
  assert.ok(log.segs.some((x) => x.t > done.t && !isAd(x.url)), "content segments again after the ad");
  const started = log.events.find((e) => e.e === "AD_STARTED");
  const closest = (f) => Math.min(...refs.map((r) => distance(f.px, r.px)));
  const during = log.frames.filter((f) => f.t >= started.t && f.t <= done.t);
  assert.ok(
    log.frames.some((f) => closest(f) < 18),
    `an ad's picture on screen (ad from ${started.t} to ${done.t}: ${during.length} frames, closest ${Math.min(...during.map(closest)).toFixed(1)}; events ${JSON.stringify(log.events)})`,
  );
});
