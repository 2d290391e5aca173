// The decision waterfall against a local ad server on loopback: inline VAST
// pods mapped to the ad library, 3-deep wrappers with merged tracking, slow,
// failing and looping tags falling through to the library within the time
// budget, and rejected MP4-only creatives reported to their Error URL.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { startStack, api, http, channelConfig, ORG } from "./stack.mjs";

let s, ads, adsBase;
const errorHits = [];
const hits = {};
const assetQueries = [];

const inline = (base) => `<?xml version="1.0" encoding="UTF-8"?>
<VAST version="4.2">
 <Ad id="vast-b" sequence="2"><InLine><AdSystem>test</AdSystem><Impression>${base}/imp?ad=b&amp;x=1</Impression>
  <Creatives><Creative id="ad1"><Linear><Duration>00:00:09.600</Duration>
   <TrackingEvents><Tracking event="start">${base}/start?ad=b</Tracking></TrackingEvents>
   <MediaFiles><MediaFile delivery="progressive" type="video/mp4" width="960" height="540">${base}/ad1.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad>
 <Ad id="vast-a" sequence="1"><InLine><AdSystem>test</AdSystem><Impression><![CDATA[${base}/imp?ad=a]]></Impression>
  <Creatives><Creative id="ad2"><Linear><Duration>00:00:15.360</Duration>
   <MediaFiles><MediaFile delivery="progressive" type="video/mp4">${base}/ad2.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad>
</VAST>`;
const apiRequests = [];
const vmap = (base) => `<?xml version="1.0"?>
<vmap:VMAP xmlns:vmap="http://www.iab.net/videosuite/vmap" version="1.0">
 <vmap:AdBreak timeOffset="start" breakType="linear" breakId="pre"><vmap:AdSource><vmap:AdTagURI templateType="vast3"><![CDATA[${base}/inline?vmap=pre]]></vmap:AdTagURI></vmap:AdSource></vmap:AdBreak>
 <vmap:AdBreak timeOffset="03:00:00.000" breakType="linear" breakId="promo"><vmap:AdSource><vmap:VASTAdData>${inline(base).replace('<?xml version="1.0" encoding="UTF-8"?>', "")}</vmap:VASTAdData></vmap:AdSource></vmap:AdBreak>
</vmap:VMAP>`;
const hlsOnly = (base) => `<VAST version="4.1"><Ad id="h"><InLine><AdSystem>t</AdSystem><Impression>${base}/imp?ad=h</Impression><Creatives><Creative id="hls-creative"><Linear><Duration>00:00:09.600</Duration><MediaFiles><MediaFile delivery="streaming" type="application/x-mpegURL" width="960" height="540">${base}/hls/master.m3u8</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>`;
const wrapper = (next, base, n) => `<VAST version="3.0"><Ad id="w${n}"><Wrapper><AdSystem>w</AdSystem><VASTAdTagURI><![CDATA[${next}]]></VASTAdTagURI>
 <Impression>${base}/wimp?n=${n}</Impression><Error>${base}/err?n=${n}&amp;code=[ERRORCODE]</Error></Wrapper></Ad></VAST>`;

before(async () => {
  ads = createServer(async (req, res) => {
    const base = adsBase;
    const send = (body, status = 200) => res.writeHead(status, { "Content-Type": "application/xml" }).end(body);
    const path = req.url.split("?")[0];
    hits[path] = (hits[path] ?? 0) + 1;
    if (path === "/asset") assetQueries.push(req.url);
    if (path === "/api") {
      let body = "";
      req.on("data", (c) => (body += c));
      return req.on("end", () => {
        const b = JSON.parse(body);
        apiRequests.push(b);
        res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({
          ads: [{ creative_id: "ad2", ad_id: `api-${b.break_id}`, tracking: { impression: [`${base}/api-imp`] } }, { creative_id: "not-in-library" }],
        }));
      });
    }
    if (path === "/api-broken") return res.writeHead(200, { "Content-Type": "application/json" }).end("{\"ads\": 7}");
    if (path === "/vmap") return send(vmap(base));
    if (path === "/counted" || path === "/asset") return send(inline(base));
    if (path === "/hls-only") return send(hlsOnly(base));
    if (path === "/hls/master.m3u8") return res.writeHead(200, { "Content-Type": "application/vnd.apple.mpegurl" }).end("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360\nlow.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1800000,RESOLUTION=960x540\nhigh.m3u8\n");
    if (path === "/hls/low.m3u8" || path === "/hls/high.m3u8") {
      const segs = Array.from({ length: 5 }, (_, i) => `#EXTINF:1.920,\nseg${i}.ts`).join("\n");
      return res.writeHead(200, { "Content-Type": "application/vnd.apple.mpegurl" }).end(`#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n${segs}\n#EXT-X-ENDLIST\n`);
    }
    if (path.startsWith("/err")) {
      errorHits.push(req.url);
      return send("ok");
    }
    if (path === "/inline") return send(inline(base));
    if (path === "/many-imps") {
      // One ad with 1,000 impression URLs: 1,000 requests per viewer unless limited.
      const imps = Array.from({ length: 1000 }, (_, i) => `<Impression>${base}/imp/${i}</Impression>`).join("");
      return send(`<VAST version="4.2"><Ad id="many"><InLine><AdSystem>t</AdSystem>${imps}<Creatives><Creative id="ad1"><Linear><Duration>00:00:09.600</Duration><MediaFiles><MediaFile delivery="progressive" type="video/mp4">${base}/ad1.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>`);
    }
    if (path === "/w1") return send(wrapper(`${base}/w2`, base, 1));
    if (path === "/w2") return send(wrapper(`${base}/w3`, base, 2));
    if (path === "/w3") return send(wrapper(`${base}/inline`, base, 3));
    if (path === "/loop") return send(wrapper(`${base}/loop`, base, 9));
    if (path === "/fail") return send("boom", 500);
    if (path === "/slow") return setTimeout(() => send(inline(base)), 4000);
    if (path === "/mp4only")
      return send(`<VAST version="4.0"><Ad id="m"><InLine><AdSystem>t</AdSystem><Error>${base}/err?ad=m&amp;code=[ERRORCODE]</Error><Creatives><Creative id="unknown-creative"><Linear><Duration>00:00:10</Duration><MediaFiles><MediaFile delivery="progressive" type="video/mp4">${base}/m.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>`);
    send("<VAST version=\"4.0\"/>");
  });
  await new Promise((r) => ads.listen(0, "127.0.0.1", r));
  adsBase = `http://127.0.0.1:${ads.address().port}`;
  s = await startStack({ dialects: [] });
  for (const [slug, tag] of [["vast-inline", "/inline"], ["vast-wrapped", "/w1"], ["vast-slow", "/slow"], ["vast-fail", "/fail"], ["vast-loop", "/loop"], ["vast-mp4", "/mp4only"], ["vast-empty", "/empty"]]) {
    const cfg = channelConfig(s.originBase, "none", { vast_urls: [`${adsBase}${tag}?cb=[CACHEBUSTING]&dur=[DURATION]`], scte35_enabled: false });
    const r = await api(s.base, "PUT", `/api/orgs/${ORG}/channels/${slug}`, cfg);
    assert.equal(r.status, 200, JSON.stringify(r.json));
  }
});
async function decide(slug, extra = {}) {
  const r = await api(s.base, "POST", `/api/orgs/${ORG}/decision`, { channel: slug, break_id: `b-${Math.random()}`, duration_s: 30, cadence_ms: 1920, ...extra });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json;
}

after(() => {
  s && s.stop();
  ads && ads.close();
});

async function cuePod(slug) {
  const t0 = Date.now();
  const r = await http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${s.apiKey}` }, body: JSON.stringify({ channel: `${ORG}/${slug}`, type: "start", duration: 30 }) });
  const ms = Date.now() - t0;
  assert.equal(r.status, 201, r.text());
  const st = await api(s.base, "GET", `/api/orgs/${ORG}/channels/${slug}/breaks`);
  const entry = st.json.entries.find((e) => e.record.id === JSON.parse(r.text()).id);
  return { pod: entry.pod, ms };
}

test("inline VAST pod: ads in <Ad sequence> order, mapped to conditioned library media", async () => {
  const { pod } = await cuePod("vast-inline");
  assert.equal(pod.source, "vast", JSON.stringify(pod.reasons));
  assert.deepEqual(pod.items.map((i) => i.ad_id), ["vast-a", "vast-b"]);
  // Two rungs muxed and video only, and the audio alone, each in TS and
  // fMP4 (the ingest's default containers).
  assert.ok(pod.items.every((i) => i.renditions.length === 10 && i.renditions.filter((r) => r.init_uri).length === 5 && i.renditions.every((r) => (Array.isArray(r.segments) ? r.segments.length : r.segments.count) > 0)), JSON.stringify(pod.items.map((i) => i.renditions.map((r) => [r.bandwidth, !!r.init_uri]))));
  assert.ok(pod.items[1].tracking.impression[0].endsWith("/imp?ad=b&x=1"), "entities decoded");
  assert.ok(pod.items.reduce((a, i) => a + i.duration_s, 0) <= 30.0);
});

test("3-deep wrapper chain resolves, wrapper impressions merged", async () => {
  const { pod } = await cuePod("vast-wrapped");
  assert.equal(pod.source, "vast", JSON.stringify(pod.reasons));
  assert.ok(pod.items.length >= 1);
  const imps = pod.items.flatMap((i) => i.tracking.impression);
  for (const n of [1, 2, 3]) assert.ok(imps.some((u) => u.endsWith(`/wimp?n=${n}`)), `wrapper ${n} impression merged: ${imps}`);
});

test("tracking fan-out is bounded: a VAST ad with 1,000 impressions keeps 64 (or the channel's limit), and the pod says so", async () => {
  const cfg = (extra) => channelConfig(s.originBase, "none", { scte35_enabled: false, vast_urls: [`${adsBase}/many-imps`], vast_cache_s: 0, decision_cache_s: 0, ...extra });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/vast-many`, cfg({}))).status, 200);
  const pod = await decide("vast-many");
  assert.equal(pod.source, "vast", JSON.stringify(pod.reasons));
  const imps = pod.items[0].tracking.impression;
  assert.equal(imps.length, 64);
  assert.ok(imps.every((u, i) => u.endsWith(`/imp/${i}`)), "the first 64, in order");
  assert.ok(pod.reasons.includes("ad many: 936 impression URLs over the limit of 64 dropped"), JSON.stringify(pod.reasons));
  // The channel may set its own limits, within bounds.
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/vast-many`, cfg({ tracking_limits: { per_event: 10 } }))).status, 200);
  const ten = await decide("vast-many");
  assert.equal(ten.items[0].tracking.impression.length, 10);
  assert.ok(ten.reasons.includes("ad many: 990 impression URLs over the limit of 10 dropped"), JSON.stringify(ten.reasons));
  const bad = await api(s.base, "PUT", `/api/orgs/${ORG}/channels/vast-many`, cfg({ tracking_limits: { per_event: 100000 } }));
  assert.equal(bad.status, 400);
  assert.ok(JSON.stringify(bad.json).includes("tracking_limits.per_event"), JSON.stringify(bad.json));
});

test("slow, failing, looping and empty tags fall through to the library within the budget", async () => {
  for (const slug of ["vast-slow", "vast-fail", "vast-loop", "vast-empty"]) {
    const { pod, ms } = await cuePod(slug);
    assert.equal(pod.source, "library", `${slug}: ${JSON.stringify(pod.reasons)}`);
    assert.ok(pod.items.length >= 1, slug);
    assert.ok(pod.reasons.some((r) => r.startsWith("VAST")), `${slug} says why: ${pod.reasons}`);
    assert.ok(ms < 3500, `${slug}: answered in ${ms} ms (budget 1.5 s + origin)`);
  }
});

test("an MP4-only creative without conditioned media is skipped and its Error URL gets 403", async () => {
  const { pod } = await cuePod("vast-mp4");
  assert.ok(pod.reasons.some((r) => r.includes("TRANSCODE")), JSON.stringify(pod.reasons));
  for (let i = 0; i < 20 && !errorHits.some((u) => u.includes("ad=m")); i++) await new Promise((r) => setTimeout(r, 1000));
  assert.ok(errorHits.some((u) => u.includes("ad=m&code=403")), `error beacon: ${errorHits}`);
});

test("the external decision API comes first; its ads map to the library; a broken answer falls through", async () => {
  const cfg = (tag, api) => channelConfig(s.originBase, "none", { scte35_enabled: false, decision_api_url: `${adsBase}${api}`, vast_urls: tag ? [`${adsBase}${tag}`] : [] });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/dapi`, cfg(null, "/api"))).status, 200);
  const pod = await decide("dapi", { break_id: "b-api", viewer: { geo: "FR", consent: "CPXxyz", bucket: "7", personalised: true } });
  assert.equal(pod.source, "api", JSON.stringify(pod.reasons));
  assert.deepEqual(pod.items.map((i) => i.ad_id), ["api-b-api"]);
  assert.ok(pod.items[0].tracking.impression.some((u) => u.endsWith("/api-imp")), "the API's tracking kept");
  assert.ok(pod.reasons.some((r) => r.includes("not-in-library")), JSON.stringify(pod.reasons));
  const got = apiRequests.find((b) => b.break_id === "b-api");
  assert.deepEqual([got.channel, got.duration_s, got.geo, got.consent, got.bucket], ["dapi", 30, "FR", "CPXxyz", "7"]);
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/dapi-bad`, cfg("/inline", "/api-broken"))).status, 200);
  const bad = await decide("dapi-bad");
  assert.equal(bad.source, "vast", JSON.stringify(bad.reasons));
  assert.ok(bad.reasons.some((r) => r.startsWith("decision API")), JSON.stringify(bad.reasons));
});

test("VMAP supplies the VAST of scheduled and pre-roll breaks (by breakId, by time of day, inline VASTAdData)", async () => {
  const cfg = channelConfig(s.originBase, "none", { scte35_enabled: false, vmap_url: `${adsBase}/vmap` });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/vmapped`, cfg)).status, 200);
  const byId = await decide("vmapped", { break_id: "cue-promo", kind: "scheduled" });
  assert.equal(byId.source, "vast", JSON.stringify(byId.reasons));
  assert.deepEqual(byId.items.map((i) => i.ad_id), ["vast-a", "vast-b"]);
  const threeAm = Date.UTC(2026, 10, 23, 3, 0, 5);
  const byClock = await decide("vmapped", { kind: "scheduled", start_ms: threeAm });
  assert.equal(byClock.source, "vast", JSON.stringify(byClock.reasons));
  const pre = await decide("vmapped", { kind: "preroll" });
  assert.equal(pre.source, "vast", JSON.stringify(pre.reasons));
  assert.ok(pre.reasons.some((r) => r.includes('VMAP break "pre"')), JSON.stringify(pre.reasons));
  // An SCTE-35 break does not use the VMAP schedule.
  const live = await decide("vmapped", { kind: "scte35", start_ms: threeAm });
  assert.equal(live.source, "library", JSON.stringify(live.reasons));
  const bad = await api(s.base, "POST", `/api/orgs/${ORG}/decision`, { channel: "vmapped", break_id: "x", duration_s: 30, kind: "midroll" });
  assert.equal(bad.status, 400);
  assert.match(bad.json.error, /^kind:/);
});

test("frequency caps per creative within the channel window, kept in KV", async () => {
  const cfg = channelConfig(s.originBase, "none", { scte35_enabled: false, frequency_cap: { max_per_window: 1, window_s: 3600 } });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/capped`, cfg)).status, 200);
  const first = await decide("capped");
  assert.ok(first.items.length >= 1, JSON.stringify(first));
  const used = first.items.map((i) => i.creative_id);
  const second = await decide("capped");
  for (const c of used) assert.ok(!second.items.some((i) => i.creative_id === c), `${c} capped: ${JSON.stringify(second.items.map((i) => i.creative_id))}`);
  assert.ok(second.reasons.some((r) => r.includes("frequency cap")), JSON.stringify(second.reasons));
});

test("VAST responses are cached briefly: two decisions, one ad-server request", async () => {
  const cfg = channelConfig(s.originBase, "none", { scte35_enabled: false, vast_urls: [`${adsBase}/counted?cb=[CACHEBUSTING]`], vast_cache_s: 30 });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/cached`, cfg)).status, 200);
  const before = hits["/counted"] ?? 0;
  // Different durations: the decision cache (KV) does not answer.
  const a = await decide("cached", { duration_s: 30 });
  const b = await decide("cached", { duration_s: 29 });
  assert.equal(a.source, "vast");
  assert.equal(b.source, "vast");
  assert.equal((hits["/counted"] ?? 0) - before, 1, "second decision served from the VAST cache");
});

test("a VAST creative with an HLS MediaFile cut to the cadence is used directly", async () => {
  const cfg = channelConfig(s.originBase, "none", { scte35_enabled: false, vast_urls: [`${adsBase}/hls-only`] });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/hls-direct`, cfg)).status, 200);
  const pod = await decide("hls-direct");
  assert.equal(pod.source, "vast", JSON.stringify(pod.reasons));
  assert.equal(pod.items[0].creative_id, "hls-creative");
  const r = pod.items[0].renditions;
  assert.deepEqual(r.map((x) => x.bandwidth), [900000, 1800000]);
  // Segments following a URI template travel as {template, count, duration}.
  const segs = (x) => (Array.isArray(x.segments) ? x.segments : Array.from({ length: x.segments.count }, (_, i) => ({ uri: x.segments.template.replace("{i}", String(i)), duration: x.segments.duration })));
  assert.equal(segs(r[0]).length, 5);
  assert.equal(segs(r[0])[0].uri, `${adsBase}/hls/seg0.ts`);
  // At another cadence it does not fit, and says so.
  const other = await decide("hls-direct", { cadence_ms: 4000 });
  assert.notEqual(other.source, "vast");
  assert.ok(other.reasons.some((x) => x.includes("cadence")), JSON.stringify(other.reasons));
});

test("operator metrics: fill rate, ads by source, skip kinds and latencies match the breaks the test caused", async () => {
  // One break per channel, each with a known outcome.
  const chans = {
    "m-vast": { vast_urls: [`${adsBase}/inline?cb=[CACHEBUSTING]`], vast_cache_s: 0 },
    "m-lib": {},
    "m-slow": { vast_urls: [`${adsBase}/slow`], vast_cache_s: 0 },
    "m-fail": { vast_urls: [`${adsBase}/fail`], vast_cache_s: 0 },
    "m-slate": { personalization_threshold_s: 40 },
  };
  for (const [slug, extra] of Object.entries(chans)) {
    const r = await api(s.base, "PUT", `/api/orgs/${ORG}/channels/${slug}`, channelConfig(s.originBase, "none", { scte35_enabled: false, ...extra }));
    assert.equal(r.status, 200, JSON.stringify(r.json));
  }
  const t0 = Date.now();
  const pods = {};
  const took = {};
  for (const slug of Object.keys(chans)) {
    const { pod, ms } = await cuePod(slug);
    pods[slug] = pod;
    took[slug] = ms;
  }
  // What the test caused, per channel.
  assert.equal(pods["m-vast"].source, "vast");
  assert.equal(pods["m-lib"].source, "library");
  assert.equal(pods["m-slow"].source, "library");
  assert.equal(pods["m-fail"].source, "library");
  assert.equal(pods["m-slate"].items.length, 0, JSON.stringify(pods["m-slate"]));
  // Playlist requests and origin failures (an origin nobody listens on).
  const dead = channelConfig(s.originBase, "none", { scte35_enabled: false, origin_url: "http://127.0.0.1:9/live/x/master.m3u8", origin_timeout_ms: 500 });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/m-dead`, dead)).status, 200);
  for (let i = 0; i < 2; i++) assert.ok([502, 504].includes((await http(`${s.base}/${ORG}/m-dead/v360/index.m3u8`)).status));
  for (let i = 0; i < 3; i++) assert.equal((await http(`${s.base}/${ORG}/m-lib/v360/index.m3u8`)).status, 200);
  // Isolates write their playlist counts every 10 s, at the next request.
  await new Promise((r) => setTimeout(r, 10_500));
  assert.equal((await http(`${s.base}/${ORG}/m-lib/v360/index.m3u8`)).status, 200);
  await new Promise((r) => setTimeout(r, 500));

  const metrics = async (slug) => {
    const r = await api(s.base, "GET", `/api/orgs/${ORG}/metrics?from=${t0 - 120_000}&to=now&channel=${slug}`);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return r.json;
  };
  const filled = (p) => p.items.reduce((a, i) => a + i.duration_s, 0);
  for (const slug of ["m-vast", "m-lib", "m-slow", "m-fail", "m-slate"]) {
    const m = await metrics(slug);
    const t = m.totals;
    const pod = pods[slug];
    assert.equal(t.avails, 1, `${slug}: one avail`);
    assert.equal(t.avail_s, 30, `${slug}: avail duration`);
    assert.ok(Math.abs(t.filled_s - filled(pod)) < 0.01, `${slug}: filled ${t.filled_s} s, pod ${filled(pod)} s`);
    assert.ok(Math.abs(t.fill_rate - filled(pod) / 30) < 0.001, `${slug}: fill rate ${t.fill_rate}`);
    if (pod.items.length) assert.equal(t.ads[pod.source], pod.items.length, `${slug}: ads by source ${JSON.stringify(t.ads)}`);
    // The decision's latency as the sequencer saw it: below what the
    // test's round trip took, in the right histogram bucket.
    const d = t.decision_latency_ms;
    assert.equal(d.count, 1, slug);
    assert.ok(d.p50 <= Math.max(took[slug], 5) * 1.5 + 50, `${slug}: decision p50 ${d.p50} ms, cue round trip ${took[slug]} ms`);
    // The point of the series that holds the avail is the minute it was decided.
    const at = m.series.filter((p) => p.avails > 0).map((p) => p.t_ms);
    assert.equal(at.length, 1, `${slug}: one point with the avail`);
    assert.ok(at[0] >= Math.floor(t0 / 60_000) * 60_000 && at[0] <= Date.now(), `${slug}: bucket ${at[0]} in the test's time`);
  }
  const slow = (await metrics("m-slow")).totals;
  assert.ok(slow.skips.timeout >= 1, `slow: ${JSON.stringify(slow.skips)}`);
  const host = "127.0.0.1";
  assert.deepEqual([slow.ad_servers[host].requests, slow.ad_servers[host].timeouts], [1, 1], JSON.stringify(slow.ad_servers));
  assert.ok(slow.ad_servers[host].latency_ms.p50 >= 1000 && slow.ad_servers[host].latency_ms.p50 <= 2000, `the slow server took the 1.5 s budget: ${JSON.stringify(slow.ad_servers[host])}`);
  assert.ok(slow.decision_latency_ms.p50 >= 1000, `slow decision p50 ${slow.decision_latency_ms.p50}`);
  const fail = (await metrics("m-fail")).totals;
  assert.deepEqual([fail.ad_servers[host].requests, fail.ad_servers[host].errors], [1, 1], JSON.stringify(fail.ad_servers));
  assert.ok(fail.skips.ad_server_error >= 1, JSON.stringify(fail.skips));
  const vast = (await metrics("m-vast")).totals;
  assert.deepEqual([vast.ad_servers[host].requests, vast.ad_servers[host].timeouts, vast.ad_servers[host].errors], [1, 0, 0]);
  assert.ok(vast.decision_latency_ms.p50 < 1000, `fast decision p50 ${vast.decision_latency_ms.p50}`);
  const slate = (await metrics("m-slate")).totals;
  assert.equal(slate.ads.slate, 1, JSON.stringify(slate.ads));
  assert.equal(slate.skips.below_threshold, 1, JSON.stringify(slate.skips));
  assert.equal(slate.fill_rate, 0);
  const lib = (await metrics("m-lib")).totals;
  assert.equal(lib.playlist_requests, 4, "every playlist request counted once");
  assert.equal(lib.origin_errors, 0);
  const deadM = (await metrics("m-dead")).totals;
  assert.deepEqual([deadM.playlist_requests, deadM.origin_errors], [2, 2]);
  // The org's view sums the channels.
  const org = (await api(s.base, "GET", `/api/orgs/${ORG}/metrics?from=${t0 - 120_000}`)).json.totals;
  assert.ok(org.avails >= 5 && org.ads.slate >= 1, JSON.stringify(org));
  // The same figures for Prometheus: running totals, cumulative buckets.
  const om = await http(`${s.base}/api/orgs/${ORG}/metrics/openmetrics`, { headers: { Authorization: `Bearer ${s.apiKey}` } });
  assert.equal(om.status, 200);
  assert.match(om.headers["content-type"], /application\/openmetrics-text/);
  const text = om.text();
  assert.match(text, /^cf_ssai_avails_total\{org="demo",channel="m-slate"\} 1$/m);
  assert.match(text, /^cf_ssai_ad_server_requests_total\{org="demo",channel="m-slow",server="127\.0\.0\.1",outcome="timeout"\} 1$/m);
  assert.match(text, /^cf_ssai_decision_latency_ms_bucket\{org="demo",channel="m-slow",le="\+Inf"\} 1$/m);
  assert.match(text, /# EOF\n$/);
  // Every skip, fallback and error is also a JSON log line with org,
  // channel, break id and reason (what Workers Logs indexes).
  const logs = s.wrangler.log.split("\n").filter((l) => l.includes('"event":')).map((l) => {
    // wrangler dev decorates warnings and errors (ANSI colours, a prefix).
    try { return JSON.parse(l.slice(l.indexOf("{"), l.lastIndexOf("}") + 1)); } catch { return null; }
  }).filter(Boolean);
  const find = (event, slug, kind) => logs.find((l) => l.event === event && l.channel === slug && (!kind || l.kind === kind));
  const slowSkip = find("ad_skipped", "m-slow", "timeout");
  assert.ok(slowSkip && slowSkip.org === ORG && slowSkip.break_id === pods["m-slow"].break_id && slowSkip.reason, `ad_skipped log line: ${JSON.stringify(logs.slice(-5))}`);
  assert.ok(find("break_fallback_to_slate", "m-slate"), "slate fallback logged");
  assert.ok(find("origin_error", "m-dead"), "origin error logged");
  // Bad ranges are refused with a reason.
  for (const q of ["from=yesterday", "from=-1h&to=-2h", "step=61", "from=-30d&step=60"]) {
    const r = await api(s.base, "GET", `/api/orgs/${ORG}/metrics?${q}`);
    assert.equal(r.status, 400, `${q}: ${JSON.stringify(r.json)}`);
  }
});

test("EXT-X-ASSET metadata reaches the ad server as [asset.KEY] macros, encoded so it cannot inject", async () => {
  const cfg = channelConfig(s.originBase, "none", { scte35_enabled: false, vast_urls: [`${adsBase}/asset?caid=[asset.CAID]&ep=[asset.EPISODE]&x=[asset.EVIL]&none=[asset.NONE]`], vast_cache_s: 0 });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/asseted`, cfg)).status, 200);
  const pod = await decide("asseted", { asset: { CAID: "12345678", EPISODE: "Episode%20Name", EVIL: "x&admin=1" } });
  assert.equal(pod.source, "vast", JSON.stringify(pod.reasons));
  const q = assetQueries.at(-1);
  assert.equal(q, "/asset?caid=12345678&ep=Episode%20Name&x=x%26admin%3D1&none=");
});
