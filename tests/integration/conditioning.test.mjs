// Creatives from a real-shaped ad server, conditioned on first sight: a
// loopback ad server answers VAST 4.2 with a progressive MP4 and a
// Mezzanine made by ffmpeg at test time (audio far louder than the
// content). The first break falls back with TRANSCODE_PENDING; the
// conditioner (started as command 1 starts it) conditions the mezzanine;
// a later break plays it in hls.js; every ad segment decodes and its
// loudness is within 1 LU of the target. Then the failures: a 404 source,
// a source that is not video, one over the size limit, and a conditioner
// killed mid-job twice (lease expired, retried once, then failed). Last,
// "every spot plays in full" (see the section at the end): spots that are
// not multiples of the cadence (5/15/30 s at 25 and 29.97 fps, 15.015 s at
// 23.976), an IAB-style VAST with codec="H.264" and no Mezzanine, a WebM
// and a ProRes MOV Mezzanine, each conditioned and spliced into a live
// break checked by `cf-ssai validate`, its last frame held, its job's
// notes, and beacons timed on the creative's own quarters.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ARTIFACTS, launch, play } from "./browser.mjs";
import { startStack, startConditioner, stopConditioner, api, http, channelConfig, adminToken, sessionToken, CLI, ORG } from "./stack.mjs";

const TARGET_LUFS = -23;
const MAX_BYTES = 3_000_000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let s, ads, adsBase, dir, browser, cond;
const timings = {};

// VAST 4.2: a progressive MP4 and a Mezzanine (preferred for conditioning).
const vast = (base, { id, creative, uaid, dur, mezz, mp4 }) => `<?xml version="1.0" encoding="UTF-8"?>
<VAST version="4.2" xmlns="http://www.iab.com/VAST">
 <Ad id="${id}"><InLine><AdSystem version="1">loopback-ads</AdSystem><AdTitle>t</AdTitle>
  <Impression><![CDATA[${base}/imp?ad=${id}]]></Impression>
  <Creatives><Creative id="${creative}" adId="${creative}-adid">
   <UniversalAdId idRegistry="ad-id.org">${uaid}</UniversalAdId>
   <Linear><Duration>${dur}</Duration>
    <MediaFiles>
     <MediaFile delivery="progressive" type="video/mp4" width="640" height="360" bitrate="500" codec="avc1.4d401e,mp4a.40.2">${base}${mp4}</MediaFile>
     <MediaFile delivery="progressive" type="application/javascript" apiFramework="VPAID" width="640" height="360">${base}/vpaid.js</MediaFile>
     <Mezzanine delivery="progressive" type="video/mp4" width="1280" height="720" codec="avc1.640028">${base}${mezz}</Mezzanine>
    </MediaFiles></Linear></Creative></Creatives></InLine></Ad>
</VAST>`;

function ffmpeg(args) {
  const r = spawnSync("ffmpeg", ["-hide_banner", "-loglevel", "error", "-y", ...args], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ffmpeg ${args.join(" ")}: ${r.stderr}`);
}

/** Integrated loudness (LUFS) of a file, with ffmpeg's ebur128 filter. */
function loudness(file) {
  const r = spawnSync("ffmpeg", ["-hide_banner", "-nostats", "-i", file, "-af", "ebur128=peak=true", "-f", "null", "-"], { encoding: "utf8" });
  const m = r.stderr.match(/Integrated loudness:\s*\n\s*I:\s*(-?[\d.]+) LUFS/);
  if (!m) throw new Error(`no ebur128 summary for ${file}: ${r.stderr.slice(-500)}`);
  return Number(m[1]);
}

/** CPU seconds the conditioner's children (ffmpeg, curl) used so far. */
function childCpuS(child) {
  try {
    const f = readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(f[13]) + Number(f[14])) / 100; // cutime + cstime, in ticks of 1/100 s
  } catch {
    return NaN;
  }
}

/** A creative: colour bars with a counter, a tone ~10 LU louder than the content. */
function creative(file, seconds, size) {
  ffmpeg(["-f", "lavfi", "-i", `testsrc2=size=${size}:rate=25:duration=${seconds}`, "-f", "lavfi", "-i", `sine=frequency=660:sample_rate=48000:duration=${seconds}`,
    "-filter:a", "volume=14dB", "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "300k", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-shortest", file]);
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "cf-ssai-cond-"));
  mkdirSync(ARTIFACTS, { recursive: true });
  creative(join(dir, "mezz15.mp4"), 15.36, "1280x720");
  creative(join(dir, "low15.mp4"), 15.36, "640x360");
  creative(join(dir, "mezz30.mp4"), 30.72, "1280x720");
  writeFileSync(join(dir, "notvideo.mp4"), "this is not a video file\n".repeat(100));
  const files = { "/mezz15-v2.mp4": "mezz15.mp4", "/mezz15.mp4": "mezz15.mp4", "/low15.mp4": "low15.mp4", "/mezz30.mp4": "mezz30.mp4", "/notvideo.mp4": "notvideo.mp4" };
  const tags = {
    "/vast15": { id: "loud-15", creative: "creative-15", uaid: "LOUD0015000H", dur: "00:00:15.360", mezz: "/mezz15.mp4", mp4: "/low15.mp4" },
    "/vast15v2": { id: "loud-15", creative: "creative-15", uaid: "LOUD0015000H", dur: "00:00:15.360", mezz: "/mezz15-v2.mp4", mp4: "/low15.mp4" },
    "/vast30": { id: "loud-30", creative: "creative-30", uaid: "LOUD0030000H", dur: "00:00:30.720", mezz: "/mezz30.mp4", mp4: "/mezz30.mp4" },
    "/vast404": { id: "gone", creative: "creative-404", uaid: "GONE0404000H", dur: "00:00:15.000", mezz: "/missing.mp4", mp4: "/missing.mp4" },
    "/vastnotvideo": { id: "nv", creative: "creative-nv", uaid: "NOTV0001000H", dur: "00:00:15.000", mezz: "/notvideo.mp4", mp4: "/notvideo.mp4" },
    "/vastbig": { id: "big", creative: "creative-big", uaid: "BIGF0001000H", dur: "00:00:15.000", mezz: "/big.mp4", mp4: "/big.mp4" },
    "/vastslow": { id: "slow", creative: "creative-slow", uaid: "SLOW0001000H", dur: "00:00:15.000", mezz: "/trickle.mp4", mp4: "/trickle.mp4" },
  };
  ads = createServer((req, res) => {
    const path = req.url.split("?")[0];
    if (tags[path]) return res.writeHead(200, { "Content-Type": "application/xml" }).end(vast(adsBase, tags[path]));
    if (files[path]) return res.writeHead(200, { "Content-Type": "video/mp4" }).end(readFileSync(join(dir, files[path])));
    // Every spot (the tests at the end): its VAST, its source, its tracking.
    if (spotTags[path]) return res.writeHead(200, { "Content-Type": "application/xml" }).end(spotVast(adsBase, spotTags[path]));
    if (spotFiles[path]) return res.writeHead(200, { "Content-Type": spotFiles[path].type }).end(readFileSync(spotFiles[path].file));
    if (path.startsWith("/t/")) {
      tracked.push({ event: path.slice(3), ad: new URL(req.url, adsBase).searchParams.get("ad"), ua: req.headers["x-device-user-agent"] ?? "" });
      return res.writeHead(200).end("ok");
    }
    if (path === "/big.mp4") {
      const big = Buffer.alloc(MAX_BYTES * 2, 7);
      return res.writeHead(200, { "Content-Type": "video/mp4", "Content-Length": big.length }).end(big);
    }
    if (path === "/trickle.mp4") {
      // A slow source: 1 KB every 200 ms for a minute (the conditioner is
      // killed while it downloads).
      res.writeHead(200, { "Content-Type": "video/mp4" });
      let n = 0;
      const t = setInterval(() => {
        if (n++ > 300 || res.destroyed) { clearInterval(t); return res.end(); }
        res.write(Buffer.alloc(1024, 1));
      }, 200);
      return;
    }
    res.writeHead(404).end("not found");
  });
  await new Promise((r) => ads.listen(0, "127.0.0.1", r));
  adsBase = `http://127.0.0.1:${ads.address().port}`;
  s = await startStack({ dialects: [] });
  const org = await api(s.base, "PUT", `/api/orgs/${ORG}`, { name: "Demo", conditioning: { loudness_lufs: TARGET_LUFS, true_peak_dbtp: -1, ladder: "640x360:900000,960x540:1800000" } });
  assert.equal(org.status, 200, JSON.stringify(org.json));
  // One channel per break the test cues (a /cue break per channel at a
  // time); several channels share a tag, as channels share ad servers.
  for (const tag of Object.keys(tags)) {
    for (const suffix of ["", "b", "c", "d"]) {
      const slug = `cond${tag.slice(1).replace("vast", "-")}${suffix}`;
      const r = await api(s.base, "PUT", `/api/orgs/${ORG}/channels/${slug}`, channelConfig(s.originBase, "none", { scte35_enabled: false, vast_urls: [`${adsBase}${tag}`], vast_cache_s: 0 }));
      assert.equal(r.status, 200, JSON.stringify(r.json));
    }
  }
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  s?.stop();
  ads?.close();
});

async function cue(slug, duration = 30) {
  const r = await http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${s.apiKey}` }, body: JSON.stringify({ channel: `${ORG}/${slug}`, type: "start", duration }) });
  assert.equal(r.status, 201, r.text());
  const id = JSON.parse(r.text()).id;
  const st = await api(s.base, "GET", `/api/orgs/${ORG}/channels/${slug}/breaks`);
  return st.json.entries.find((e) => e.record.id === id).pod;
}
const jobs = async () => (await api(s.base, "GET", `/api/orgs/${ORG}/conditioning/jobs`)).json.items;
const jobOf = async (creativeId) => (await jobs()).find((j) => j.creative_id === creativeId);
async function until(what, f, ms) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(1000);
  }
}

test("first sight: TRANSCODE_PENDING, one job per creative identity, mezzanine chosen, nothing waits", async () => {
  const t0 = Date.now();
  const pod = await cue("cond-15");
  assert.equal(pod.source, "library", JSON.stringify(pod.reasons));
  assert.ok(pod.reasons.some((r) => r.includes("TRANSCODE_PENDING")), JSON.stringify(pod.reasons));
  const job = await until("the job", () => jobOf("creative-15"), 10_000);
  timings.first15 = t0;
  assert.equal(job.identity, "uaid:LOUD0015000H");
  assert.equal(job.source_kind, "mezzanine");
  assert.ok(job.source_url.endsWith("/mezz15.mp4"), job.source_url);
  assert.ok(["queued", "running"].includes(job.state), job.state);
  // Seen again (another channel's break, the same creative): merged, not
  // duplicated.
  const again = await cue("cond-15b");
  assert.ok(again.reasons.some((r) => r.includes(`TRANSCODE_PENDING (job ${job.id}`)), JSON.stringify(again.reasons));
  const same = (await jobs()).filter((j) => j.creative_id === "creative-15");
  assert.equal(same.length, 1, "one job");
  assert.ok(same[0].seen >= 2, `seen counted: ${same[0].seen}`);
});

test("the conditioner makes it playable: hls.js plays the ad, every segment decodes, loudness within 1 LU of the target", async () => {
  cond = startConditioner(s, ["--max-bytes", String(MAX_BYTES), "--lease-s", "60"]);
  const ready = await until("the 15 s creative conditioned", async () => {
    const j = await jobOf("creative-15");
    assert.notEqual(j.state, "failed", `${j.reason}\n${cond.log.slice(-2000)}`);
    return j.state === "ready" && j;
  }, 240_000);
  timings.ready15 = ready.finished_ms;
  timings.cpu15 = childCpuS(cond);
  timings.work15 = ready.finished_ms - ready.started_ms;
  const adIds = JSON.parse(ready.ad_ids);
  assert.deepEqual(adIds, [`${ready.id}-1920`]);
  // The next break plays it (the ad server's creative, with its tracking).
  const pod = await cue("cond-15c", 16);
  timings.playable15 = Date.now();
  assert.deepEqual(pod.items.map((i) => i.ad_id), ["loud-15"]);
  assert.ok(!pod.reasons.some((r) => r.includes("TRANSCODE")), JSON.stringify(pod.reasons));
  const item = pod.items[0];
  assert.ok(item.tracking.impression.some((u) => u.includes("/imp?ad=loud-15")), "the ad server's impression kept");
  // Two rungs × (muxed, video only) × TS and fMP4, and the audio alone in
  // each container (for demuxed channels).
  assert.equal(item.renditions.length, 10, JSON.stringify(item.renditions.map((r) => [r.kind, r.bandwidth, !!r.init_uri])));
  assert.deepEqual(item.renditions.filter((r) => r.kind === "audio").map((r) => r.bandwidth), [128000, 128000]);
  // Conditioned ads are never house ads: a channel whose ad server has
  // nothing still gets only the library's own ads.
  const lib = (await api(s.base, "POST", `/api/orgs/${ORG}/decision`, { channel: "cond-404", break_id: "house", duration_s: 30, cadence_ms: 1920 })).json;
  assert.ok(!lib.items.some((i) => i.creative_id === "creative-15"), JSON.stringify(lib.items.map((i) => i.creative_id)));
  // Every segment decodes (video and audio), and the loudness is on target.
  const ts = item.renditions.find((r) => !r.init_uri && r.kind === "muxed");
  const segs = Array.isArray(ts.segments) ? ts.segments.map((x) => x.uri) : Array.from({ length: ts.segments.count }, (_, i) => ts.segments.template.replace("{i}", i));
  const parts = [];
  for (const [i, u] of segs.entries()) {
    const r = await http(u);
    assert.equal(r.status, 200, u);
    const f = join(dir, `seg${i}.ts`);
    writeFileSync(f, r.body);
    parts.push(f);
    const p = spawnSync("ffprobe", ["-v", "error", "-show_entries", "stream=codec_type,sample_rate", "-of", "csv=p=0", f], { encoding: "utf8" });
    assert.equal(p.status, 0, `${u}: ${p.stderr}`);
    assert.match(p.stdout, /video/, u);
    assert.match(p.stdout, /audio,48000/, u);
  }
  const joined = join(dir, "ad.ts");
  writeFileSync(joined, Buffer.concat(parts.map((f) => readFileSync(f))));
  const before = loudness(join(dir, "mezz15.mp4"));
  const after = loudness(joined);
  console.log(`# loudness: source ${before} LUFS → conditioned ${after} LUFS (target ${TARGET_LUFS})`);
  assert.ok(before > TARGET_LUFS + 8, `the source is loud (${before} LUFS)`);
  assert.ok(Math.abs(after - TARGET_LUFS) <= 1, `conditioned loudness ${after} LUFS within 1 LU of ${TARGET_LUFS}`);
  // hls.js plays it: a break cued while the player runs.
  let cued = false;
  const { log, shot } = await play(browser, s.base, `${s.base}/${ORG}/cond-15d/master.m3u8?mode=ssai`, 45, {
    onTick: async (l) => {
      if (!cued && l.started && l.progress > 30) {
        cued = true;
        const r = await http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${s.apiKey}` }, body: JSON.stringify({ channel: `${ORG}/cond-15d`, type: "start", duration: 16 }) });
        assert.equal(r.status, 201, r.text());
      }
    },
    screenshotWhen: Object.assign((l) => l.frags.length > 0 && l.frags[l.frags.length - 1].url.includes(`/ads/${ready.id}-1920/`), { file: "conditioned-ad.png" }),
  });
  assert.deepEqual(log.fatal, [], "no fatal error");
  assert.ok(log.frags.some((f) => f.url.includes(`/ads/${ready.id}-1920/`)), `the conditioned ad played: ${log.frags.map((f) => f.url).join(" ")}`);
  assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms`);
  assert.ok(shot, "screenshot of the ad taken");
});

test("a creative whose source changed plays its current media while it is conditioned again", async () => {
  const before = await jobOf("creative-15");
  const pod = await cue("cond-15v2");
  assert.equal(pod.source, "vast", JSON.stringify(pod.reasons));
  assert.ok(pod.items[0].renditions.every((r) => (r.playlist_url ?? "").includes(`/ads/${before.id}-1920/`)), "the current media plays");
  const redone = await until("the job conditioned again from the new source", async () => {
    const j = await jobOf("creative-15");
    return j.source_url.endsWith("/mezz15-v2.mp4") && j.state === "ready" && j.finished_ms > before.finished_ms && j;
  }, 120_000);
  assert.equal(redone.id, before.id, "same creative, same job");
  assert.equal(redone.attempts, 1, "attempts start again");
});

test("a 30 s creative: first sight to playable", async () => {
  const t0 = Date.now();
  const pod = await cue("cond-30", 32);
  assert.ok(pod.reasons.some((r) => r.includes("TRANSCODE_PENDING")), JSON.stringify(pod.reasons));
  const job = await until("the 30 s creative conditioned", async () => {
    const j = await jobOf("creative-30");
    assert.ok(j && j.state !== "failed", j?.reason);
    return j.state === "ready" && j;
  }, 240_000);
  const p = await cue("cond-30b", 32);
  assert.equal(p.source, "vast", JSON.stringify(p.reasons));
  const t1 = Date.now();
  const cpu30 = childCpuS(cond) - timings.cpu15;
  console.log(`# first sight → playable: 15 s creative ${((timings.playable15 - timings.first15) / 1000).toFixed(1)} s (conditioning ${(timings.work15 / 1000).toFixed(1)} s, ${timings.cpu15.toFixed(1)} CPU s); 30 s creative ${((t1 - t0) / 1000).toFixed(1)} s (conditioning ${((job.finished_ms - job.started_ms) / 1000).toFixed(1)} s, ${cpu30.toFixed(1)} CPU s)`);
});

test("failures: a 404 source, a source that is not video, one over the size limit fail at once with a category and our reason", async () => {
  for (const slug of ["cond-404", "cond-notvideo", "cond-big"]) await cue(slug);
  const want = { "creative-404": [/^source_gone: HTTP 404$/, "source_gone"], "creative-nv": [/^unsupported_source: not an MP4\/MOV, WebM\/Matroska or MPEG-TS file$/, "unsupported_source"], "creative-big": [/^source_too_large: over the 3000000-byte limit$/, "source_too_large"] };
  for (const [c, [re, category]] of Object.entries(want)) {
    const j = await until(`${c} failed`, async () => {
      const j = await jobOf(c);
      return j && j.state === "failed" && j;
    }, 60_000);
    assert.match(j.reason, re, c);
    assert.equal(j.failure_category, category, c);
    assert.equal(j.attempts, 1, `${c}: a permanent failure is not retried`);
  }
  // The next decision says why the creative is skipped.
  const p = await cue("cond-404b");
  assert.ok(p.reasons.some((r) => /TRANSCODE_FAILED: source_gone: HTTP 404/.test(r)), JSON.stringify(p.reasons));
});

test("a conditioner killed mid-job: the lease expires, the job is retried once, then failed with a reason", async () => {
  stopConditioner(cond);
  await sleep(500);
  await cue("cond-slow");
  const job = await until("the slow job", () => jobOf("creative-slow"), 10_000);
  for (const attempt of [1, 2]) {
    const c = startConditioner(s, ["--lease-s", "5", "--owner", `doomed-${attempt}`]);
    await until(`attempt ${attempt} running`, async () => {
      const j = await jobOf("creative-slow");
      return j.state === "running" && j.attempts === attempt && j.lease_owner === `doomed-${attempt}`;
    }, 30_000);
    stopConditioner(c); // killed while it downloads the trickling source
    await sleep(6000); // the lease expires
  }
  // The next lease request (any conditioner's) finds the expired lease
  // with no attempts left and fails the job.
  const probe = await api(s.base, "POST", "/api/conditioning/lease", { owner: "probe", org: "no-such-org" }, adminToken("*"));
  assert.equal(probe.status, 204);
  const j = await jobOf("creative-slow");
  assert.equal(j.id, job.id);
  assert.equal(j.state, "failed", JSON.stringify(j));
  assert.equal(j.attempts, 2);
  assert.match(j.reason, /^lease_expired: /);
  assert.equal(j.failure_category, "lease_expired");
  // Leases are for platform admins only.
  const denied = await api(s.base, "POST", "/api/conditioning/lease", { owner: "x" }, s.apiKey);
  assert.equal(denied.status, 403);
});

test("the dashboard lists the conditioning jobs with their state and reasons", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
  const problems = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  await page.goto(`${s.base}/dashboard#key=${s.apiKey}`);
  await page.waitForSelector("#jobs tr.job", { timeout: 20_000 });
  const rows = await page.locator("#jobs tr.job").allTextContents();
  assert.ok(rows.some((r) => r.includes("creative-15") && r.includes("ready")), rows.join("\n"));
  assert.ok(rows.some((r) => r.includes("creative-404") && r.includes("failed") && r.includes("HTTP 404")), rows.join("\n"));
  await page.locator("#jobs").screenshot({ path: join(ARTIFACTS, "dashboard-conditioning.png") });
  assert.deepEqual(problems, []);
  await page.close();
});

// ---------------------------------------------------------------------
// Every spot plays in full. Real spots are not multiples of the 1.92 s
// cadence: 5, 15 and 30 s at 25 and 29.97 fps, 15.015 s at 23.976, in the
// containers and codec spellings ad servers use (`codec="H.264"` with no
// Mezzanine as the IAB samples write it, `codec="0"`, a WebM with VP9/Opus,
// a ProRes 422 HQ MOV Mezzanine with 10-bit 4:2:2 and 5.1 PCM). Each source
// ends with a marker (its last 0.1 s solid red). Each is seen once (a job),
// conditioned by two conditioners, then its channel's next break plays it:
// the pod holds it with the source's own length, every rendition has
// ceil((d - 0.02) / 1.92) segments, the break is spliced into a live
// channel whose playlists (both variants, polled every second) pass
// `cf-ssai validate`, the last frame of the last ad segment is the
// source's red last frame (held, not cut, not black), and the job's notes
// say which source was chosen and why (and a VAST <Duration> off by more
// than a second). Beacons of the 5 s and 15 s spots follow the creative's
// own quarters, not the padded ad's. This part adds about 2 minutes on 2
// cores (sources ~12 s, nine creatives conditioned ~50 s, breaks played
// out in parallel, the last one ~30 s after it is cued); no quick/full
// split.
//
// Shapes: "iab" progressive MP4s only with codec="H.264" (a 640x360 and
// the spot) and a VPAID file; "mezz" a Mezzanine MP4 (codec="H.264") and a
// progressive MP4 with codec="0"; "codec0" one progressive MP4 with
// codec="0"; "webm" one WebM (VP9/Opus); "prores" one ProRes MOV Mezzanine.

const SPOT_SIZE = "960x540"; // the org's top rung: covered, nothing upscaled
const SPOTS = [
  { key: "5s-25", rate: "25", frames: 125, shape: "iab", vastDur: "00:00:05.000", beacons: true },
  { key: "15s-25", rate: "25", frames: 375, shape: "mezz", vastDur: "00:00:15.000", beacons: true },
  { key: "30s-25", rate: "25", frames: 750, shape: "iab", vastDur: "00:00:30.000" },
  { key: "5s-2997", rate: "30000/1001", frames: 150, shape: "iab", vastDur: "00:00:05.005" },
  // The ad server's <Duration> is 2 s off: noted on the job; the file's length plays.
  { key: "15s-2997", rate: "30000/1001", frames: 450, shape: "codec0", vastDur: "00:00:17.000", mismatch: true },
  { key: "30s-2997", rate: "30000/1001", frames: 899, shape: "iab", vastDur: "00:00:30.000" },
  // 15.015 s announced as 00:00:15 (the ad server's rounding): no note.
  { key: "15015-23976", rate: "24000/1001", frames: 360, shape: "mezz", vastDur: "00:00:15.000" },
  { key: "webm", rate: "25", frames: 150, shape: "webm", vastDur: "00:00:06.000", strict: true },
  { key: "prores", rate: "25", frames: 175, shape: "prores", vastDur: "00:00:07.000", strict: true },
];
const spotTags = {};
const spotFiles = {};
let spotConds = [];
const tracked = []; // tracking hits at the loopback ad server: {event, ad, ua}
const rateOf = (r) => (r.includes("/") ? Number(r.split("/")[0]) / Number(r.split("/")[1]) : Number(r));
const adIdOf = (key) => `spot-${key}`;

/** VAST 4.2 for one spot, in the shape its ad server would write. */
function spotVast(base, sp) {
  const id = adIdOf(sp.key);
  const file = `${base}/spot/${sp.key}.${sp.ext}`;
  const [w, h] = sp.size.split("x");
  const vpaid = `<MediaFile delivery="progressive" type="application/javascript" apiFramework="VPAID" width="640" height="360">${base}/vpaid.js</MediaFile>`;
  const media = {
    iab: `<MediaFile id="1" delivery="progressive" type="video/mp4" bitrate="500" width="640" height="360" minBitrate="360" maxBitrate="1080" scalable="1" maintainAspectRatio="1" codec="H.264">${base}/low15.mp4</MediaFile>
     <MediaFile id="2" delivery="progressive" type="video/mp4" bitrate="1500" width="${w}" height="${h}" minBitrate="1000" maxBitrate="2000" scalable="1" maintainAspectRatio="1" codec="H.264">${file}</MediaFile>
     ${vpaid}`,
    mezz: `<MediaFile delivery="progressive" type="video/mp4" bitrate="500" width="640" height="360" codec="0">${base}/low15.mp4</MediaFile>
     <Mezzanine delivery="progressive" type="video/mp4" width="${w}" height="${h}" codec="H.264">${file}</Mezzanine>`,
    codec0: `<MediaFile delivery="progressive" type="video/mp4" bitrate="1500" width="${w}" height="${h}" codec="0">${file}</MediaFile>`,
    webm: `<MediaFile delivery="progressive" type="video/webm" bitrate="400" width="${w}" height="${h}" codec="vp9">${file}</MediaFile>`,
    prores: `<Mezzanine delivery="progressive" type="video/quicktime" width="${w}" height="${h}" codec="ProRes 422 HQ">${file}</Mezzanine>`,
  }[sp.shape];
  const t = (ev) => `<Tracking event="${ev}"><![CDATA[${base}/t/${ev}?ad=${id}]]></Tracking>`;
  return `<?xml version="1.0" encoding="UTF-8"?>
<VAST version="4.2" xmlns="http://www.iab.com/VAST">
 <Ad id="${id}"><InLine><AdSystem version="4.2">iab-like</AdSystem><AdTitle>${sp.key}</AdTitle>
  <Impression id="i"><![CDATA[${base}/t/impression?ad=${id}]]></Impression>
  <Creatives><Creative id="creative-${sp.key}" sequence="1" adId="${sp.key}-adid">
   <UniversalAdId idRegistry="ad-id.org">EVERY${sp.key.replace(/[^0-9a-z]/gi, "").toUpperCase()}</UniversalAdId>
   <Linear><Duration>${sp.vastDur}</Duration>
    <TrackingEvents>${["start", "firstQuartile", "midpoint", "thirdQuartile", "complete"].map(t).join("")}</TrackingEvents>
    <MediaFiles>
     ${media}
    </MediaFiles></Linear></Creative></Creatives></InLine></Ad>
</VAST>`;
}

/** A spot's source: colour bars, a loud tone, the last 0.1 s solid red. */
function spotSource(sp) {
  const rate = rateOf(sp.rate);
  const d = sp.frames / rate;
  const marker = `drawbox=c=red@1:t=fill:enable='gte(t,${(d - 0.1).toFixed(4)})'`;
  const v = ["-f", "lavfi", "-i", `testsrc2=size=${sp.size}:rate=${sp.rate}`];
  const a = ["-f", "lavfi", "-i", `sine=frequency=660:sample_rate=48000:duration=${d.toFixed(4)}`];
  const out = join(dir, `spot-${sp.key}.${sp.ext}`);
  if (sp.shape === "webm") {
    ffmpeg([...v, ...a, "-vf", marker, "-frames:v", String(sp.frames), "-filter:a", "volume=14dB", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k", "-c:a", "libopus", "-b:a", "96k", out]);
  } else if (sp.shape === "prores") {
    // 5.1 PCM (the tone on every channel), ProRes 422 HQ, 10-bit 4:2:2.
    ffmpeg([...v, ...a, "-vf", marker, "-frames:v", String(sp.frames), "-filter:a", "volume=8dB,pan=5.1|FL=c0|FR=c0|FC=c0|LFE=c0|BL=c0|BR=c0",
      "-c:v", "prores_ks", "-profile:v", "3", "-pix_fmt", "yuv422p10le", "-c:a", "pcm_s24le", out]);
  } else {
    ffmpeg([...v, ...a, "-vf", marker, "-frames:v", String(sp.frames), "-filter:a", "volume=14dB", "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "600k", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", out]);
  }
  return out;
}

/** A source's length as the conditioner measures it: its video stream's. */
function measuredS(file) {
  const r = spawnSync("ffprobe", ["-v", "error", "-of", "json", "-show_format", "-show_streams", file], { encoding: "utf8" });
  const p = JSON.parse(r.stdout);
  const v = p.streams.find((x) => x.codec_type === "video");
  const hms = (t) => t.split(":").reduce((acc, x) => acc * 60 + Number(x), 0);
  return Number(v.duration ?? (v.tags?.DURATION ? hms(v.tags.DURATION) : p.format.duration));
}

/** A segment's frames scaled to one pixel (rgb24): the first, the last, how many, and how many red at the end. */
function edgeFrames(file) {
  const r = spawnSync("ffmpeg", ["-hide_banner", "-loglevel", "error", "-i", file, "-map", "0:v:0", "-vf", "scale=1:1", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"], { maxBuffer: 1 << 20 });
  assert.equal(r.status, 0, `${file}: ${r.stderr}`);
  const b = r.stdout;
  assert.ok(b.length >= 3, `${file}: no frame decoded`);
  const px = Array.from({ length: b.length / 3 }, (_, i) => [...b.subarray(i * 3, i * 3 + 3)]);
  let trailingRed = 0;
  while (trailingRed < px.length && red(px[px.length - 1 - trailingRed])) trailingRed++;
  return { first: px[0], last: px[px.length - 1], frames: px.length, trailingRed };
}

/** Run `tasks` (functions returning promises), at most `n` at a time. */
async function pool(tasks, n) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, tasks.length) }, async () => {
    while (next < tasks.length) await tasks[next++]();
  }));
}
/** A child process, awaited: {status, stdout, stderr}. */
function run(cmd, args) {
  return new Promise((resolve) => {
    const c = spawn(cmd, args);
    let stdout = "", stderr = "";
    c.stdout.on("data", (d) => (stdout += d));
    c.stderr.on("data", (d) => (stderr += d));
    c.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}
const red = ([r, g, b]) => r > 180 && g < 70 && b < 70;
const segUris = (r) => (Array.isArray(r.segments) ? r.segments.map((x) => x.uri) : Array.from({ length: r.segments.count }, (_, i) => r.segments.template.replace("{i}", i)));
const ours = (line) => /\/media\/demo\/(ads|slates)\//.test(line);
const expectSegs = (d) => Math.ceil((Math.round(d * 1000) - 20) / 1920);
const SPOT_VARIANTS = [["v360", 900000], ["v540", 1800000]];
const spotServed = []; // every playlist the spot channels served, for the validator

/** Poll a channel's variants every second until its break has played out (every segment of the ad seen, then content again). */
async function watchBreak(slug, item, deadline) {
  const lines = new Map(SPOT_VARIANTS.map(([v]) => [v, new Set()]));
  const want = new Map(SPOT_VARIANTS.map(([v, bw]) => [v, segUris(item.renditions.find((r) => r.kind === "muxed" && !r.init_uri && r.bandwidth === bw)).map((u) => new URL(u, s.base).pathname)]));
  const seenAll = () => [...want].every(([v, us]) => us.every((u) => lines.get(v).has(u)));
  while (Date.now() < deadline) {
    const tick = Date.now();
    let back = true;
    for (const [v, bw] of SPOT_VARIANTS) {
      const r = await http(`${s.base}/${ORG}/${slug}/${v}/index.m3u8?bw=${bw}&mode=ssai`);
      assert.equal(r.status, 200, `${slug} ${v}: ${r.text()}`);
      const text = r.text();
      spotServed.push({ group: `${slug}/${v}`, viewer: "A", playlist: text, pdt: true });
      const segs = text.split("\n").filter((l) => l && !l.startsWith("#"));
      for (const l of segs) lines.get(v).add(new URL(l, s.base).pathname);
      back &&= segs.length > 0 && !ours(segs[segs.length - 1]);
    }
    if (seenAll() && back) return { lines, complete: true };
    await sleep(Math.max(0, 1000 - (Date.now() - tick)));
  }
  return { lines, complete: seenAll() };
}

test("every spot, first sight: one job each, the source chosen whatever the codec attribute says (H.264, 0, VP9, ProRes), and why", async () => {
  const t0 = Date.now();
  for (const sp of SPOTS) {
    sp.ext = { webm: "webm", prores: "mov" }[sp.shape] ?? "mp4";
    sp.size = sp.shape === "webm" || sp.shape === "prores" ? "640x360" : SPOT_SIZE;
    sp.file = spotSource(sp);
    sp.d = measuredS(sp.file);
    spotFiles[`/spot/${sp.key}.${sp.ext}`] = { file: sp.file, type: { webm: "video/webm", mov: "video/quicktime" }[sp.ext] ?? "video/mp4" };
    spotTags[`/every/${sp.key}`] = sp;
    for (const suffix of ["", "-b", ...(sp.beacons ? ["-t"] : [])]) {
      const cfg = channelConfig(s.originBase, "none", { scte35_enabled: false, vast_urls: [`${adsBase}/every/${sp.key}`], vast_cache_s: 0, ...(suffix === "-t" ? { proxy_ad_segments: true } : {}) });
      const r = await api(s.base, "PUT", `/api/orgs/${ORG}/channels/ev-${sp.key}${suffix}`, cfg);
      assert.equal(r.status, 200, JSON.stringify(r.json));
    }
  }
  console.log(`# every spot: ${SPOTS.length} sources made in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${SPOTS.map((sp) => `${sp.key} ${sp.d.toFixed(3)} s`).join(", ")}`);
  // Two conditioners (leases keep them apart), no 3 MB limit: ProRes is big.
  spotConds = [startConditioner(s, ["--lease-s", "120", "--owner", "every-1"]), startConditioner(s, ["--lease-s", "120", "--owner", "every-2"])];
  for (const sp of SPOTS) {
    sp.firstSight = Date.now();
    const pod = await cue(`ev-${sp.key}`, 32);
    assert.ok(pod.reasons.some((r) => r.includes("TRANSCODE_PENDING")), `${sp.key}: ${JSON.stringify(pod.reasons)}`);
  }
  for (const sp of SPOTS) {
    const job = await until(`${sp.key}'s job`, () => jobOf(`creative-${sp.key}`), 10_000);
    sp.job = job.id;
    assert.ok(job.source_url.endsWith(`/spot/${sp.key}.${sp.ext}`), `${sp.key}: ${job.source_url}`);
    const src = typeof job.source === "string" ? JSON.parse(job.source) : job.source;
    const mezz = sp.shape === "mezz" || sp.shape === "prores";
    assert.equal(job.source_kind, mezz ? "mezzanine" : "progressive", sp.key);
    assert.equal(src.kind, job.source_kind, sp.key);
    assert.ok(src.why.startsWith(`${mezz ? "Mezzanine" : "progressive"} ${{ mp4: "video/mp4", webm: "video/webm", mov: "video/quicktime" }[sp.ext]} ${sp.size}`), `${sp.key}: ${src.why}`);
    const codec = { iab: "H.264", mezz: "H.264", codec0: "0", webm: "vp9", prores: "ProRes 422 HQ" }[sp.shape];
    assert.equal(src.codec, codec, sp.key);
    assert.ok(src.why.includes(`codec "${codec}"`), `${sp.key}: ${src.why}`);
  }
});

const firstSightRan = () => assert.ok(SPOTS.every((sp) => sp.job), "the first-sight test made every job");
const playedRan = () => assert.ok(SPOTS.every((sp) => sp.pod && sp.ready), "the second-sight test played every spot");

test("every spot becomes playable on its second sight: its own length, ceil((d-0.02)/1.92) segments, spliced live under the live rules, its last frame held", async () => {
  firstSightRan();
  const deadline = Date.now() + 360_000;
  const watchers = [];
  const pending = new Set(SPOTS.map((sp) => sp.key));
  while (pending.size > 0) {
    assert.ok(Date.now() < deadline, `not conditioned in time: ${[...pending].join(", ")}`);
    for (const j of await jobs()) {
      const sp = SPOTS.find((x) => `creative-${x.key}` === j.creative_id);
      if (!sp || !pending.has(sp.key)) continue;
      assert.notEqual(j.state, "failed", `${sp.key}: ${j.failure_category} ${j.reason}\n${spotConds.map((c) => c.log.slice(-1500)).join("\n")}`);
      if (j.state !== "ready") continue;
      pending.delete(sp.key);
      sp.ready = j;
      const segs = expectSegs(sp.d);
      // The next break, exactly as long as the ad, plays it (a VAST
      // <Duration> rounded or wrong does not matter: the file's length does).
      sp.pod = await cue(`ev-${sp.key}-b`, segs * 1.92);
      sp.playable = Date.now();
      assert.deepEqual(sp.pod.items.map((i) => i.ad_id), [adIdOf(sp.key)], `${sp.key}: ${JSON.stringify(sp.pod.reasons)}`);
      if (sp.beacons) sp.tpod = await cue(`ev-${sp.key}-t`, segs * 1.92);
      watchers.push(watchBreak(`ev-${sp.key}-b`, sp.pod.items[0], Date.now() + segs * 1920 + 45_000).then((w) => (sp.watch = w), (e) => (sp.watchError = e)));
    }
    if (pending.size > 0) await sleep(1000);
  }
  await Promise.all(watchers);
  for (const sp of SPOTS) {
    const item = sp.pod.items[0];
    const segs = expectSegs(sp.d);
    const id = `${sp.ready.id}-1920`;
    console.log(`# every spot: ${sp.key} (${sp.d.toFixed(3)} s, ${segs} segments): first sight → ready ${((sp.ready.finished_ms - sp.firstSight) / 1000).toFixed(1)} s (conditioning ${((sp.ready.finished_ms - sp.ready.started_ms) / 1000).toFixed(1)} s), → playable ${((sp.playable - sp.firstSight) / 1000).toFixed(1)} s`);
    assert.deepEqual(JSON.parse(sp.ready.ad_ids), [id], sp.key);
    // The pod carries the source's own length, not whole segments.
    assert.ok(Math.abs(item.duration_s - sp.d) < 0.0015, `${sp.key}: duration_s ${item.duration_s}, the source lasts ${sp.d}`);
    assert.ok(Math.abs(item.duration_s / 1.92 - Math.round(item.duration_s / 1.92)) > 0.001, `${sp.key}: ${item.duration_s} s is not a multiple of 1.92`);
    assert.equal(item.renditions.length, 10, sp.key);
    for (const r of item.renditions) {
      assert.equal(segUris(r).length, segs, `${sp.key}: ${r.kind} ${r.bandwidth} ${r.init_uri ? "fMP4" : "TS"}`);
      assert.ok(segUris(r).every((u) => u.includes(`/ads/${id}/`)), `${sp.key}: ${segUris(r)[0]}`);
    }
    // Spliced: every segment of the ad was in the live playlists of both variants.
    if (sp.watchError) throw sp.watchError;
    assert.ok(sp.watch.complete, `${sp.key}: the break did not play out in the live playlists`);
    // The last frame of the last ad segment is the source's (red) last
    // frame, held to the segment's end; the first frame is not red.
    const ts = item.renditions.find((r) => r.kind === "muxed" && !r.init_uri && r.bandwidth === 900000);
    const uris = segUris(ts);
    const fetchSeg = async (u, name) => {
      const r = await http(new URL(u, s.base).href);
      assert.equal(r.status, 200, u);
      const f = join(dir, name);
      writeFileSync(f, r.body);
      return f;
    };
    const last = edgeFrames(await fetchSeg(uris[uris.length - 1], `${sp.key}-last.ts`));
    const first = edgeFrames(await fetchSeg(uris[0], `${sp.key}-first.ts`));
    assert.ok(red(last.last), `${sp.key}: the last frame of the last ad segment is the source's last frame (red): rgb ${last.last}`);
    assert.ok(!red(first.first), `${sp.key}: the first frame is not the marker: rgb ${first.first}`);
    assert.equal(last.frames, 48, `${sp.key}: a whole 1.92 s segment at 25 fps`);
    // Red for the source's last 0.1 s plus the padding: the hold is the
    // padding, nothing before it frozen or cut.
    const held = (0.1 + segs * 1.92 - sp.d) * 25;
    assert.ok(Math.abs(last.trailingRed - held) <= 2.5, `${sp.key}: ${last.trailingRed} red frames at the end, ${held.toFixed(1)} expected (0.1 s marker + ${(segs * 1.92 - sp.d).toFixed(3)} s held)`);
  }
  const v = spawnSync(CLI, ["validate"], { input: spotServed.map((x) => JSON.stringify(x)).join("\n"), encoding: "utf8" });
  const file = join(dir, "every-spot-served.jsonl");
  writeFileSync(file, spotServed.map((x) => JSON.stringify(x)).join("\n"));
  assert.equal(v.status, 0, `the live rules (${spotServed.length} playlists in ${file}):\n${v.stdout.slice(0, 4000)}${v.stderr}`);
  assert.match(v.stdout, /"violations":0/);
});

test("a WebM (VP9/Opus) and a ProRes 422 HQ MOV Mezzanine (10-bit 4:2:2, 5.1 PCM): every segment decodes, loudness on target", async () => {
  playedRan();
  for (const sp of SPOTS.filter((x) => x.strict)) {
    const item = sp.pod.items[0];
    const src = JSON.parse(sp.ready.notes).source;
    assert.equal(src.video_codec, sp.shape === "webm" ? "vp9" : "prores", `${sp.key}: ${JSON.stringify(src)}`);
    if (sp.shape === "prores") assert.equal(src.audio_channels, 6, JSON.stringify(src));
    // Every rendition: muxed, video only and audio only, in TS and fMP4
    // (fetched and probed a few at a time).
    const files = new Map(); // rendition → its segment files
    const jobsToProbe = [];
    await pool(item.renditions.map((r, ri) => async () => {
      const init = r.init_uri ? await http(new URL(r.init_uri, s.base).href) : undefined;
      if (init) assert.equal(init.status, 200, r.init_uri);
      const list = [];
      for (const [i, u] of segUris(r).entries()) {
        const got = await http(new URL(u, s.base).href);
        assert.equal(got.status, 200, u);
        const f = join(dir, `${sp.key}-${ri}-${i}.${init ? "mp4" : "ts"}`);
        writeFileSync(f, init ? Buffer.concat([init.body, got.body]) : got.body);
        list.push(f);
        jobsToProbe.push({ f, what: `${sp.key} ${r.kind} ${r.bandwidth} ${init ? "fMP4" : "TS"} segment ${i}`, kind: r.kind });
      }
      files.set(r, list);
    }), 4);
    assert.equal(jobsToProbe.length, 10 * expectSegs(sp.d), `${sp.key}: every segment of the 10 renditions`);
    await pool(jobsToProbe.map(({ f, what, kind }) => async () => {
      const p = await run("ffprobe", ["-v", "error", "-show_entries", "stream=codec_type,codec_name,sample_rate,channels", "-of", "json", f]);
      assert.equal(p.status, 0, `${what}: ${p.stderr}`);
      assert.equal(p.stderr.trim(), "", `${what}: ${p.stderr}`);
      const streams = JSON.parse(p.stdout).streams.map((x) => [x.codec_name, x.codec_type, x.sample_rate, x.channels].filter((v) => v !== undefined).join(","));
      const want = { muxed: ["h264,video", "aac,audio,48000,2"], video: ["h264,video"], audio: ["aac,audio,48000,2"] }[kind];
      assert.deepEqual(streams.sort(), want.sort(), what);
    }), 2);
    for (const r of item.renditions) {
      const parts = files.get(r);
      if (r.init_uri || r.kind !== "muxed" || r.bandwidth !== 900000) continue;
      const joined = join(dir, `${sp.key}-ad.ts`);
      writeFileSync(joined, Buffer.concat(parts.map((f) => readFileSync(f))));
      const before = loudness(sp.file);
      const after = loudness(joined);
      console.log(`# every spot: ${sp.key} loudness ${before} LUFS → ${after} LUFS`);
      assert.ok(before > TARGET_LUFS + 5, `${sp.key}: the source is loud (${before} LUFS)`);
      assert.ok(Math.abs(after - TARGET_LUFS) <= 1, `${sp.key}: ${after} LUFS within 1 LU of ${TARGET_LUFS}`);
    }
  }
});

test("the jobs' notes: the source chosen, its probe, its length and padding, and a VAST <Duration> that is off by more than 1 s", async () => {
  playedRan();
  for (const sp of SPOTS) {
    assert.ok(sp.ready.notes, `${sp.key}: no notes`);
    const n = JSON.parse(sp.ready.notes);
    const src = typeof sp.ready.source === "string" ? JSON.parse(sp.ready.source) : sp.ready.source;
    assert.equal(n.source_choice, src.why, sp.key);
    assert.ok(Math.abs(n.duration_s - sp.d) < 0.0015, `${sp.key}: ${n.duration_s}`);
    assert.ok(Math.abs(n.padding_s - (expectSegs(sp.d) * 1.92 - n.duration_s)) < 0.002, `${sp.key}: padding ${n.padding_s}`);
    assert.equal(n.source.container, { mp4: "mov", mov: "mov", webm: "matroska" }[sp.ext], sp.key);
    const mismatch = n.notes.filter((x) => x.includes("VAST Duration"));
    if (sp.mismatch) {
      assert.equal(mismatch.length, 1, `${sp.key}: ${JSON.stringify(n.notes)}`);
      assert.match(mismatch[0], /VAST Duration 17\.000 s but the source lasts 15\.015 s/);
    } else {
      assert.deepEqual(mismatch, [], `${sp.key}: ${JSON.stringify(n.notes)}`);
    }
    assert.ok(n.notes.some((x) => x.includes("the last frame held")), `${sp.key}: ${JSON.stringify(n.notes)}`);
  }
});

test("beacons of a padded spot follow the creative's own quarters (5 s in 3 segments, 15 s in 8), not the padded ad's", async () => {
  // A viewer session per prefix of the ad: session k receives segments
  // 0..k in order (beacons fire in order per session, so no session can
  // skip ahead). The first k whose session fired an event is the segment
  // that event falls in. The rule under test: core::beacon::events_for_span.
  const want = {
    // The padded 5.76 s would put the third quarter (4.32 s) in segment 2.
    "5s-25": { impression: 0, start: 0, firstQuartile: 0, midpoint: 1, thirdQuartile: 1, complete: 2 },
    "15s-25": { impression: 0, start: 0, firstQuartile: 1, midpoint: 3, thirdQuartile: 5, complete: 7 },
  };
  playedRan();
  const beaconSpots = SPOTS.filter((x) => x.beacons);
  let expected = 0;
  await Promise.all(beaconSpots.map(async (sp) => {
    const slug = `ev-${sp.key}-t`;
    const item = sp.tpod.items[0];
    assert.equal(item.ad_id, adIdOf(sp.key));
    const n = segUris(item.renditions.find((x) => x.kind === "muxed" && !x.init_uri && x.bandwidth === 900000)).length;
    for (let k = 0; k < n; k++) expected += Object.values(want[sp.key]).filter((seg) => seg <= k).length;
    await Promise.all(Array.from({ length: n }, async (_, k) => {
      const sid = sessionToken(`${ORG}/${slug}`);
      for (let i = 0; i <= k; i++) {
        const got = await http(`${s.base}/${ORG}/${slug}/ad/${sp.tpod.break_id}/0/900000/${i}.ts?sid=${sid}`, { headers: { "User-Agent": `spot-${sp.key}-upto-${k}` } });
        assert.equal(got.status, 302, `${sp.key} segment ${i}: ${got.text()}`);
        assert.ok(got.headers.location.includes(`/ads/${sp.ready.id}-1920/`), got.headers.location);
      }
    }));
  }));
  const mine = () => tracked.filter((h) => h.ua.startsWith("spot-"));
  for (let i = 0; i < 60 && mine().length < expected; i++) await sleep(1000);
  await sleep(3000); // anything extra (a duplicate, a beacon from padding) arrives too
  for (const sp of beaconSpots) {
    const hits = mine().filter((h) => h.ad === adIdOf(sp.key));
    const got = {};
    for (const h of hits) {
      const k = Number(h.ua.split("-upto-")[1]);
      assert.equal(hits.filter((x) => x.ua === h.ua && x.event === h.event).length, 1, `${sp.key}: ${h.event} fired twice for one session`);
      got[h.event] = Math.min(got[h.event] ?? k, k);
    }
    assert.deepEqual(got, want[sp.key], `${sp.key} (${sp.d} s in ${expectSegs(sp.d)} segments): the segment each beacon falls in: ${JSON.stringify(hits)}`);
  }
  assert.equal(mine().length, expected, "each session fired exactly the events of the segments it received");
});
