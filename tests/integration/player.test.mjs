// Real players: hls.js (from npm, served by our own worker) in Debian's
// headless Chromium, driven by playwright-core, against the local stack.
// SSAI across a SCTE-35 break from the origin and a POST /cue break; SGAI
// (HLS Interstitials) across a SCTE-35 break. Screenshots of the player
// mid-ad and of the dashboard are kept in test-artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ARTIFACTS, launch, play } from "./browser.mjs";
import { startStack, http, ORG } from "./stack.mjs";

let s, browser;
before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  // Short breaks close together so each playback crosses one quickly.
  s = await startStack({ firstBreak: 12, breakEvery: 24, breakLen: 8 });
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  if (s) s.stop();
});

const inAd = (log) => log.frags.length > 0 && /\/media\/demo\/(ads|slates)\//.test(log.frags[log.frags.length - 1].url);

test("SSAI in hls.js: a SCTE-35 break and a POST /cue break play through, ads then content", async () => {
  const newsShot = Object.assign((l) => inAd(l), { file: "player-ssai-mid-ad.png" });
  let cued = false;
  const [news, manual] = await Promise.all([
    play(browser, s.base, `${s.base}/${ORG}/news/master.m3u8?mode=ssai`, 52, { screenshotWhen: newsShot }),
    play(browser, s.base, `${s.base}/${ORG}/manual/master.m3u8?mode=ssai`, 52, {
      onTick: async (log) => {
        if (!cued && log.started && log.progress > 30) {
          const r = await http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${s.apiKey}` }, body: JSON.stringify({ channel: `${ORG}/manual`, type: "start", duration: 12 }) });
          assert.equal(r.status, 201, r.text());
          cued = true;
        }
      },
    }),
  ]);
  for (const [name, r] of [["news (SCTE-35)", news], ["manual (/cue)", manual]]) {
    const { log } = r;
    assert.deepEqual(log.fatal, [], `${name}: no fatal error`);
    assert.ok(log.started && log.progress > 100, `${name}: playback started and advanced`);
    assert.ok(log.maxStallMs <= 2000, `${name}: longest stall ${log.maxStallMs} ms`);
    const kinds = log.frags.map((f) => (/\/media\/demo\/(ads|slates)\//.test(f.url) ? "ad" : "content"));
    const firstAd = kinds.indexOf("ad");
    assert.ok(firstAd > 0, `${name}: content, then ad segments (${kinds.join(",")})`);
    assert.ok(kinds.slice(firstAd).includes("content"), `${name}: back to content after the break`);
  }
  assert.ok(news.shot, "screenshot taken mid-ad");
});

test("SGAI in hls.js: interstitial events fire and the player returns to content", async () => {
  const { log } = await play(browser, s.base, `${s.base}/${ORG}/news/master.m3u8?mode=sgai`, 50, {
    screenshotWhen: Object.assign((l) => l.events.some((e) => e.e === "INTERSTITIAL_ASSET_STARTED") && !l.events.some((e) => e.e === "INTERSTITIAL_ENDED"), { file: "player-sgai-mid-ad.png" }),
  });
  assert.deepEqual(log.fatal, [], "no fatal error");
  const names = log.events.map((e) => e.e);
  for (const e of ["INTERSTITIAL_STARTED", "INTERSTITIAL_ASSET_STARTED", "INTERSTITIAL_ENDED"]) {
    assert.ok(names.includes(e), `${e} observed (${names.join(",")})`);
  }
  assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms at ${log.maxStallAt} (t=${log.maxStallTime}): ${JSON.stringify(log.events)} ${JSON.stringify(log.frags.map((f) => [f.t, f.url.slice(-40)]))} ${JSON.stringify(log.errors)}`);
  const ended = log.events.find((e) => e.e === "INTERSTITIAL_ENDED").t;
  assert.ok(log.frags.some((f) => f.t > ended && !/\/media\/demo\//.test(f.url)), "primary content resumed");
});

test("fMP4 (CMAF) channel: SSAI with fMP4 ads plays through in hls.js; every segment decodes with its init", async () => {
  const { log } = await play(browser, s.base, `${s.base}/${ORG}/news-fmp4/master.m3u8?mode=ssai`, 50, {
    screenshotWhen: Object.assign((l) => inAd(l), { file: "player-fmp4-mid-ad.png" }),
  });
  assert.deepEqual(log.fatal, [], "no fatal error");
  assert.ok(log.started && log.progress > 100, "playback started and advanced");
  assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms`);
  const kinds = log.frags.map((f) => (/\/media\/demo\/(ads|slates)\//.test(f.url) ? "ad" : "content"));
  const firstAd = kinds.indexOf("ad");
  assert.ok(firstAd > 0, `content, then ad segments (${kinds.join(",")})`);
  assert.ok(kinds.slice(firstAd).includes("content"), "back to content after the break");
  assert.ok(log.frags.every((f) => /\.m4s(\?|$)/.test(f.url)), "only fMP4 segments were played");
  // Every segment the variant names decodes with the init its MAP names.
  const dir = mkdtempSync(join(tmpdir(), "cf-ssai-fmp4-"));
  const master = (await http(`${s.base}/${ORG}/news-fmp4/master.m3u8?mode=ssai`)).text();
  const variant = master.split("\n").find((l) => l.startsWith(`/${ORG}/news-fmp4/`));
  let checked = 0;
  let sawAd = false;
  for (let i = 0; i < 40 && (!sawAd || checked < 8); i++) {
    const pl = (await http(s.base + variant)).text();
    let init = null;
    for (const line of pl.split("\n")) {
      const m = line.match(/^#EXT-X-MAP:URI="([^"]+)"/);
      if (m) init = new URL(m[1], `${s.base}${variant}`).href;
      if (!line || line.startsWith("#")) continue;
      const seg = new URL(line, `${s.base}${variant}`).href;
      const [a, b] = await Promise.all([http(init), http(seg)]);
      assert.equal(a.status, 200, init);
      assert.equal(b.status, 200, seg);
      const f = join(dir, "seg.mp4");
      writeFileSync(f, Buffer.concat([a.body, b.body]));
      const p = spawnSync("ffprobe", ["-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", f], { encoding: "utf8" });
      assert.equal(p.status, 0, `${seg}: ${p.stderr}`);
      assert.match(p.stdout, /video/, seg);
      assert.match(p.stdout, /audio/, seg);
      if (seg.includes("/media/demo/")) sawAd = true;
      checked++;
    }
    if (!sawAd) await new Promise((r) => setTimeout(r, 1500));
  }
  assert.ok(sawAd, "an fMP4 ad segment was probed");
});

test("demuxed channel in hls.js: SSAI through a break with the audio switched to Spanish mid-ad, subtitles blank during the ads", async () => {
  let switched = null;
  const isAdUrl = (u) => /\/media\/demo\/(ads|slates)\//.test(u);
  const { log, shot } = await play(browser, s.base, `${s.base}/${ORG}/news-demuxed/master.m3u8?mode=ssai`, 85, {
    onTick: async (l, page) => {
      // The first ad after English content (the player may join mid-break).
      if (switched === null && inAd(l) && l.alt.some((f) => /\/aud-en\//.test(f.url))) {
        switched = Date.now();
        await page.evaluate(() => {
          window.hls.subtitleTrack = 0;
          window.hls.audioTrack = window.hls.audioTracks.findIndex((t) => t.lang === "es");
        });
      }
    },
    screenshotWhen: Object.assign((l) => switched !== null && inAd(l) && l.events.some((e) => e.e === "AUDIO_TRACK_SWITCHED"), { file: "player-demuxed-mid-ad-es.png" }),
  });
  const trail = JSON.stringify(log.alt.map((f) => [f.type, f.t - (switched ?? 0), f.url.replace(/^https?:\/\/[^/]+/, "").slice(0, 60)]));
  assert.deepEqual(log.fatal, [], `no fatal error ${JSON.stringify(log.errors)}`);
  assert.ok(log.started && log.progress > 100, "playback started and advanced");
  assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms ${trail}`);
  assert.ok(switched !== null, "an ad played (video)");
  // Video-only ad renditions are the ladder's rungs less 128 kb/s of audio.
  const adVideo = log.frags.filter((f) => isAdUrl(f.url)).map((f) => f.url.match(/\/(ads|slates)\/[^/]+\/(\d+)\//)[2]);
  assert.ok(adVideo.length > 0 && adVideo.every((bw) => bw === "772000" || bw === "1672000"), `the video variants played the ads' video-only renditions (${adVideo})`);
  assert.ok(log.events.some((e) => e.e === "AUDIO_TRACK_SWITCHED" && e.t >= switched), "the audio switch happened during the ad");
  const audio = log.alt.filter((f) => f.type === "audio");
  assert.ok(audio.some((f) => f.t < switched && /\/aud-en\//.test(f.url)), `English content audio before the switch ${trail}`);
  assert.ok(audio.some((f) => isAdUrl(f.url) && /\/128000\//.test(f.url)), `the ad's audio played ${trail}`);
  assert.ok(audio.some((f) => f.t > switched && /\/aud-es\//.test(f.url)), `Spanish content audio after the break ${trail}`);
  const subs = log.alt.filter((f) => f.type === "subtitle");
  assert.ok(subs.some((f) => /\/blank\.vtt/.test(f.url)), `blank subtitles during the ads ${trail}`);
  assert.ok(subs.some((f) => /\/sub-en\/seg\d+\.vtt/.test(f.url)), `content subtitles ${trail}`);
  assert.ok(shot, "screenshot taken mid-ad after the switch");
});

test("demuxed channel SGAI in hls.js: the interstitial (its assets with an audio group, like the primary) plays and the primary resumes", async () => {
  const { log } = await play(browser, s.base, `${s.base}/${ORG}/news-demuxed/master.m3u8?mode=sgai`, 50, {
    screenshotWhen: Object.assign((l) => l.events.some((e) => e.e === "INTERSTITIAL_ASSET_STARTED") && !l.events.some((e) => e.e === "INTERSTITIAL_ENDED"), { file: "player-demuxed-sgai-mid-ad.png" }),
  });
  assert.deepEqual(log.fatal, [], "no fatal error");
  const names = log.events.map((e) => e.e);
  for (const e of ["INTERSTITIAL_STARTED", "INTERSTITIAL_ASSET_STARTED", "INTERSTITIAL_ENDED"]) {
    assert.ok(names.includes(e), `${e} observed (${names.join(",")})`);
  }
  assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms`);
  const ended = log.events.find((e) => e.e === "INTERSTITIAL_ENDED").t;
  assert.ok(log.alt.some((f) => f.t > ended && f.type === "audio" && /\/aud-en\//.test(f.url)), "the primary's audio rendition resumed after the interstitial");
});

test("LL-HLS channel in hls.js low-latency mode: parts before the break, whole ad segments in it, parts again after, no stall", async () => {
  const { log, shot } = await play(browser, s.base, `${s.base}/${ORG}/news-ll/master.m3u8?mode=ssai`, 85, {
    // Catching up after a break (where whole segments set the pace) is
    // the player's call; a low-latency setup allows it.
    hlsConfig: { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 },
    screenshotWhen: Object.assign((l) => inAd(l), { file: "player-ll-hls-mid-ad.png" }),
  });
  assert.deepEqual(log.fatal, [], `no fatal error ${JSON.stringify(log.errors)}`);
  assert.ok(log.started && log.progress > 100, "playback started and advanced");
  const trail = JSON.stringify(log.frags.map((f) => [f.t - log.maxStallAt, f.url.replace(/^https?:\/\/[^/]+/, "").slice(-40)]));
  assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms at t=${log.maxStallTime} (${JSON.stringify(log.errors)}) ${trail}`);
  const kinds = log.frags.map((f) => (/\/media\/demo\/(ads|slates)\//.test(f.url) ? "ad" : "content"));
  // The first ad after content (the player may join mid-break).
  const firstAd = kinds.findIndex((k, j) => k === "ad" && kinds.slice(0, j).includes("content"));
  assert.ok(firstAd > 0, `content, then ad segments (${kinds.join(",")})`);
  assert.ok(kinds.slice(firstAd).includes("content"), "back to content after the break");
  assert.ok(log.parts > 0, "hls.js loaded LL-HLS parts");
  // Latency behind the live edge before the break: low-latency mode holds
  // PART-HOLD-BACK (2.88 s) plus a part or so, not three segments. After
  // it, reported (whole ad segments set the pace inside the break).
  const adAt = log.frags[firstAd].t;
  const p50 = (xs) => xs.map((x) => x.s).filter((x) => Number.isFinite(x) && x > 0).sort((a, b) => a - b)[xs.length >> 1];
  const before = p50(log.latency.filter((x) => x.t < adAt - 2000));
  const after = p50(log.latency.slice(-10));
  console.log(`# hls.js LL: ${log.parts} parts, latency p50 ${before?.toFixed(2)} s before the break, ${after?.toFixed(2)} s over the last 10 s; longest stall ${log.maxStallMs} ms`);
  if (before !== undefined) assert.ok(before < 4.5, `median latency before the break ${before} s`);
  assert.ok(shot, "screenshot taken mid-ad");
});

test("dashboard: the live timeline shows breaks with their ad slots, sparklines of the last hour, no console errors", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const problems = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  // The API-key form: the key arrives in the fragment (never sent to a server).
  await page.goto(`${s.base}/dashboard#key=${s.apiKey}`);
  await page.waitForSelector("#channels tr.channel", { timeout: 15000 });
  const rows = await page.locator("#channels tr.channel").count();
  assert.ok(rows >= 6, `channels listed (${rows})`);
  assert.equal(await page.locator("#ch").inputValue(), "news");
  // Wait for a break of the news channel on the timeline with its ads.
  let ads = 0;
  for (let i = 0; i < 60 && ads < 1; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    ads = await page.locator("#timeline g.break rect.ad").count();
  }
  assert.ok(ads >= 1, "a break with ad slots is drawn");
  const edge1 = Number(await page.locator("#edge").getAttribute("x1"));
  // The live edge moves with the refreshes (every 3 s), as segments
  // are published (the window slides left, the edge stays near "now").
  const label1 = await page.locator("#timeline text", { hasText: "live edge" }).textContent();
  let label2 = label1;
  for (let i = 0; i < 30 && label2 === label1; i++) {
    await new Promise((r) => setTimeout(r, 500));
    label2 = await page.locator("#timeline text", { hasText: "live edge" }).textContent();
  }
  assert.notEqual(label1, label2, `the live edge moved (${label1} → ${label2})`);
  assert.ok(edge1 > 600 && edge1 < 1200, `live edge near now: x=${edge1}`);
  // Sparklines: fill rate and detection latency have points by now.
  let lines = 0;
  for (let i = 0; i < 30 && lines < 2; i++) {
    lines = await page.locator("#sparks svg.sparkline path").count();
    if (lines < 2) await new Promise((r) => setTimeout(r, 1000));
  }
  assert.ok(lines >= 2, `sparklines drawn (${lines})`);
  const fill = await page.locator("#sparks .spark b").first().textContent();
  assert.match(fill, /%$/, `fill rate shown: ${fill}`);
  // Screenshot while a break is on screen (an ad slot left of the edge).
  await page.screenshot({ path: join(ARTIFACTS, "dashboard-timeline.png"), fullPage: true });
  await page.locator("#timeline").screenshot({ path: join(ARTIFACTS, "dashboard-timeline-only.png") });
  await page.locator("#sparks").screenshot({ path: join(ARTIFACTS, "dashboard-sparklines.png") });
  assert.deepEqual(problems, [], "no console errors");
  await page.close();
});
