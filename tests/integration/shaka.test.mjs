// A second real player: Shaka Player 5 (npm `shaka-player`) in the same
// headless Chromium, with the same criteria as hls.js: no fatal error, no
// stall over 2 s, the ad on screen (SSAI), interstitial events and a return
// to content (SGAI). Screenshots in test-artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ARTIFACTS, WATCH_STALLS, launch, shakaStart } from "./browser.mjs";
import { startStack, ROOT, ORG } from "./stack.mjs";

const SHAKA = readFileSync(join(ROOT, "node_modules/shaka-player/dist/shaka-player.compiled.js"), "utf8");
let s, browser;
before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  s = await startStack({ firstBreak: 12, breakEvery: 24, breakLen: 8 });
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  if (s) s.stop();
});

const PAGE = `<!doctype html><html><body style="margin:0;background:#000">
<div id="box" style="position:relative;width:960px;height:540px"><video id="v" muted playsinline style="width:960px;height:540px"></video><div id="ads" style="position:absolute;inset:0"></div></div></body></html>`;

async function play(src, seconds, { sgai = false, shotWhen, file, onTick } = {}) {
  const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
  await page.goto(`${s.base}/healthz`);
  await page.setContent(PAGE);
  await page.addScriptTag({ content: SHAKA });
  await page.addScriptTag({ content: WATCH_STALLS });
  await page.evaluate(`(${shakaStart.toString()})(${JSON.stringify(src)}, ${sgai})`);
  let shot = false;
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 1000));
    const log = await page.evaluate(() => window.playerLog);
    if (onTick) await onTick(log, page);
    if (!shot && shotWhen && shotWhen(log)) {
      await page.screenshot({ path: join(ARTIFACTS, file) });
      shot = true;
    }
  }
  const log = await page.evaluate(() => window.playerLog);
  await page.close();
  return { log, shot };
}

const isAd = (u) => /\/media\/demo\/(ads|slates)\//.test(u);

test("SSAI in Shaka Player: a SCTE-35 break plays through, ads then content", async () => {
  const { log, shot } = await play(`${s.base}/${ORG}/news/master.m3u8?mode=ssai`, 60, {
    shotWhen: (l) => l.segs.length > 0 && isAd(l.segs[l.segs.length - 1].url),
    file: "shaka-ssai-mid-ad.png",
  });
  assert.deepEqual(log.fatal, [], "no fatal error");
  assert.ok(log.started && log.progress > 100, "playback started and advanced");
  assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms`);
  const kinds = log.segs.map((x) => (isAd(x.url) ? "ad" : "content"));
  const firstAd = kinds.indexOf("ad");
  assert.ok(firstAd > 0, `content, then ad segments (${kinds.join(",")})`);
  assert.ok(kinds.slice(firstAd).includes("content"), "back to content after the break");
  assert.ok(shot, "screenshot taken mid-ad");
});

test("SGAI in Shaka Player: interstitial events fire and the player returns to content", async () => {
  const { log } = await play(`${s.base}/${ORG}/news/master.m3u8?mode=sgai`, 60, {
    sgai: true,
    shotWhen: (l) => l.events.some((e) => e.e === "AD_STARTED") && !l.events.some((e) => e.e === "ALL_ADS_COMPLETED" || e.e === "AD_STOPPED"),
    file: "shaka-sgai-mid-ad.png",
  });
  console.log(`# shaka sgai: events ${log.events.map((e) => e.e).join(",")}; longest stall ${log.maxStallMs} ms; errors ${log.errors.join(",")}`);
  assert.deepEqual(log.fatal, [], "no fatal error");
  const names = log.events.map((e) => e.e);
  assert.ok(names.includes("AD_STARTED"), `ad started (${names.join(",")})`);
  assert.ok(log.segs.some((x) => isAd(x.url)), "the interstitial's ad segments were fetched");
  assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms`);
  // Back to content after the first break's ads (a later break may have
  // begun by the end of the minute).
  const done = log.events.find((e) => e.e === "AD_COMPLETE" || e.e === "AD_STOPPED");
  assert.ok(done, `the ad ended (${names.join(",")})`);
  assert.ok(log.segs.some((x) => x.t > done.t && !isAd(x.url)), "content segments again after the ad ended");
});

test("demuxed channel in Shaka Player: SSAI through a break with the audio switched to Spanish mid-ad, subtitles blank during the ads", async () => {
  let switched = null;
  const video = (l) => l.segs.filter((x) => /\/(v360|v540)\/|\/(772000|1672000)\//.test(x.url));
  const inAd = (l) => {
    const v = video(l);
    return v.length > 0 && isAd(v[v.length - 1].url);
  };
  const { log, shot } = await play(`${s.base}/${ORG}/news-demuxed/master.m3u8?mode=ssai`, 85, {
    onTick: async (l, page) => {
      // The first ad after English content (the player may join mid-break).
      if (switched === null && inAd(l) && l.segs.some((x) => /\/aud-en\//.test(x.url))) {
        switched = Date.now();
        await page.evaluate(() => window.player.selectAudioTrack(window.player.getAudioTracks().find((t) => t.language === "es")));
      }
    },
    // Shaka fetches ahead of the playhead (about three segments, ~6 s).
    shotWhen: () => switched !== null && Date.now() - switched > 6000,
    file: "shaka-demuxed-mid-ad-es.png",
  });
  const trail = JSON.stringify(log.segs.map((x) => [x.t - (switched ?? 0), x.url.replace(/^https?:\/\/[^/]+/, "").slice(0, 60)]));
  assert.deepEqual(log.fatal, [], `no fatal error ${log.errors}`);
  assert.ok(log.started && log.progress > 100, "playback started and advanced");
  assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms`);
  assert.ok(switched !== null, `an ad played ${trail}`);
  const ad = log.segs.filter((x) => isAd(x.url)).map((x) => x.url.match(/\/(ads|slates)\/[^/]+\/(\d+)\//)[2]);
  assert.ok(ad.every((bw) => ["772000", "1672000", "128000"].includes(bw)), `only the ads' video-only and audio-only renditions (${ad})`);
  assert.ok(ad.includes("128000"), `the ad's audio played ${trail}`);
  assert.ok(log.segs.some((x) => x.t < switched && /\/aud-en\//.test(x.url)), `English content audio before the switch ${trail}`);
  assert.ok(log.segs.some((x) => x.t > switched && /\/aud-es\//.test(x.url)), `Spanish content audio after the break ${trail}`);
  assert.ok(log.segs.some((x) => /\/blank\.vtt/.test(x.url)), `blank subtitles during the ads ${trail}`);
  assert.ok(log.segs.some((x) => /\/sub-en\/seg\d+\.vtt/.test(x.url)), `content subtitles ${trail}`);
  assert.ok(shot, "screenshot taken mid-ad after the switch");
});
