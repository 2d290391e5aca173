// Creatives from a real-shaped ad server, conditioned on first sight: a
// loopback ad server answers VAST 4.2 with a progressive MP4 and a
// Mezzanine made by ffmpeg at test time (audio far louder than the
// content). The first break falls back with TRANSCODE_PENDING; the
// conditioner (started as command 1 starts it) conditions the mezzanine;
// a later break plays it in hls.js; every ad segment decodes and its
// loudness is within 1 LU of the target. Then the failures: a 404 source,
// a source that is not video, one over the size limit, and a conditioner
// killed mid-job twice (lease expired, retried once, then failed).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ARTIFACTS, launch, play } from "./browser.mjs";
import { startStack, startConditioner, stopConditioner, api, http, channelConfig, adminToken, ORG } from "./stack.mjs";

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
