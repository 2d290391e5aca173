// hls.js in Debian's headless Chromium (playwright-core), shared by the
// player tests: a page that logs fragments, interstitial events, errors and
// stalls, and `play()` that watches it for a while (screenshot on demand).
import { join } from "node:path";
import { chromium } from "playwright-core";
import { ROOT } from "./stack.mjs";

export const ARTIFACTS = join(ROOT, "test-artifacts");

export function launch() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"],
  });
}

/**
 * Page-side script: the one stall measure every player test uses. Sampled
 * every 100 ms: playback started once currentTime moved; a stall is the
 * time currentTime stood still while the video was not paused.
 */
export const WATCH_STALLS = `function watchStalls(v, log) {
  let last = -1, lastMove = Date.now();
  setInterval(() => {
    const now = Date.now();
    if (v.currentTime !== last) {
      if (last >= 0) log.started = true;
      last = v.currentTime; lastMove = now; log.progress++;
    } else if (log.started && !v.paused) {
      const gap = now - lastMove;
      if (gap > log.maxStallMs) { log.maxStallMs = gap; log.maxStallAt = lastMove; log.maxStallTime = v.currentTime; }
    }
  }, 100);
}`;

/**
 * Page-side: load `src` in Shaka Player (the page has `shaka`, a video
 * `#v`, WATCH_STALLS and optionally a `sampleFrames`), logging segments,
 * ad events (`sgai`), errors and stalls. Shared by the HLS and DASH
 * Shaka tests (passed as source with `toString()`).
 */
export function shakaStart(src, sgai, adContainer = false) {
  const log = (window.playerLog = { segs: [], fatal: [], errors: [], events: [], maxStallMs: 0, started: false, progress: 0 });
  shaka.polyfill.installAll();
  const v = document.getElementById("v");
  const player = (window.player = new shaka.Player());
  player.configure({ streaming: { lowLatencyMode: false } });
  player.getNetworkingEngine().registerResponseFilter((type, resp) => {
    if (type === shaka.net.NetworkingEngine.RequestType.SEGMENT) log.segs.push({ url: resp.uri, t: Date.now() });
  });
  player.addEventListener("error", (e) => (e.detail.severity === 2 ? log.fatal : log.errors).push(String(e.detail.code)));
  (async () => {
    await player.attach(v);
    if (sgai) {
      // Shaka 5 reads HLS interstitials and DASH alternative-MPD events by
      // itself once the ad manager is there.
      const ads = player.getAdManager();
      // Interstitials in their own video element over the content (Shaka
      // 5.2 played only the first DASH interstitial of a session in the
      // content's element: measured).
      if (adContainer) {
        const box = document.createElement("div");
        box.id = "ads";
        box.style.cssText = "position:absolute;inset:0";
        document.body.appendChild(box);
        ads.setContainers(box, box);
      }
      for (const e of ["AD_STARTED", "AD_COMPLETE", "AD_STOPPED", "ALL_ADS_COMPLETED"]) {
        ads.addEventListener(shaka.ads.Utils[e], () => log.events.push({ e, t: Date.now() }));
      }
    }
    await player.load(src);
    // Subtitles on (Shaka 5 streams the selected text track).
    const text = player.getTextTracks()[0];
    if (text) player.selectTextTrack(text);
    v.play().catch(() => {});
  })().catch((e) => log.fatal.push(String(e.code ?? e)));
  watchStalls(v, log);
  if (typeof sampleFrames === "function") sampleFrames(v, log);
}

// hls.js config: three segments behind the edge, or (low-latency mode)
// the playlist's PART-HOLD-BACK, which hls.js takes only when no
// liveSync* setting is given.
const hlsConfig = (config) => (config.lowLatencyMode ? config : { liveSyncDurationCount: 3, lowLatencyMode: false, ...config });

export const PAGE = (src, config = {}) => `<!doctype html><html><body style="margin:0;background:#000">
<video id="v" muted playsinline style="width:960px;height:540px"></video>
<script src="/media/_static/hls.min.js"></script>
<script>
  const log = window.playerLog = { frags: [], alt: [], fatal: [], errors: [], events: [], stalls: [], maxStallMs: 0, started: false, progress: 0 };
  const v = document.getElementById("v");
  const hls = window.hls = new Hls(${JSON.stringify(hlsConfig(config))});
  for (const e of ["INTERSTITIAL_STARTED", "INTERSTITIAL_ASSET_STARTED", "INTERSTITIAL_ASSET_ENDED", "INTERSTITIAL_ENDED", "INTERSTITIALS_PRIMARY_RESUMED"]) {
    if (Hls.Events[e]) hls.on(Hls.Events[e], () => log.events.push({ e, t: Date.now() }));
  }
  hls.on(Hls.Events.FRAG_CHANGED, (_, d) => log.frags.push({ url: d.frag.url, t: Date.now() }));
  // Audio and subtitle renditions of a demuxed stream.
  hls.on(Hls.Events.FRAG_LOADED, (_, d) => d.frag.type !== "main" && log.alt.push({ type: d.frag.type, url: d.frag.url, t: Date.now() }));
  // LL-HLS: parts loaded (main), and the latency behind the live edge.
  log.parts = 0; log.latency = [];
  hls.on(Hls.Events.FRAG_LOADED, (_, d) => { if (d.part && d.frag.type === "main") log.parts++; });
  setInterval(() => { if (log.started) log.latency.push({ t: Date.now(), s: hls.latency }); }, 1000);
  hls.on(Hls.Events.AUDIO_TRACK_SWITCHED, (_, d) => log.events.push({ e: "AUDIO_TRACK_SWITCHED", id: d.id, t: Date.now() }));
  hls.on(Hls.Events.ERROR, (_, d) => { (d.fatal ? log.fatal : log.errors).push(d.details); });
  hls.loadSource(${JSON.stringify(src)});
  hls.attachMedia(v);
  v.play().catch(() => {});
  ${WATCH_STALLS}
  watchStalls(v, log);
</script></body></html>`;

/** Play `src` for `seconds` in a new page of `browser` (our worker at `base` serves hls.js). */
export async function play(browser, base, src, seconds, { onTick, screenshotWhen, hlsConfig } = {}) {
  const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
  await page.goto(`${base}/healthz`);
  await page.setContent(PAGE(src, hlsConfig));
  const supported = await page.evaluate(() => MediaSource.isTypeSupported('video/mp4; codecs="avc1.4d401f,mp4a.40.2"'));
  if (!supported) throw new Error("this Chromium does not play H.264/AAC");
  let shot = false;
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 1000));
    const log = await page.evaluate(() => window.playerLog);
    if (onTick) await onTick(log, page);
    if (!shot && screenshotWhen && screenshotWhen(log)) {
      await page.screenshot({ path: join(ARTIFACTS, screenshotWhen.file) });
      shot = true;
    }
  }
  const log = await page.evaluate(() => window.playerLog);
  await page.close();
  return { log, shot };
}

