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
const wrapper = (next, base, n) => `<VAST version="3.0"><Ad id="w${n}"><Wrapper><AdSystem>w</AdSystem><VASTAdTagURI><![CDATA[${next}]]></VASTAdTagURI>
 <Impression>${base}/wimp?n=${n}</Impression><Error>${base}/err?n=${n}&amp;code=[ERRORCODE]</Error></Wrapper></Ad></VAST>`;

before(async () => {
  ads = createServer(async (req, res) => {
    const base = adsBase;
    const send = (body, status = 200) => res.writeHead(status, { "Content-Type": "application/xml" }).end(body);
    const path = req.url.split("?")[0];
    if (path.startsWith("/err")) {
      errorHits.push(req.url);
      return send("ok");
    }
    if (path === "/inline") return send(inline(base));
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
  assert.ok(pod.items.every((i) => i.renditions.length === 2 && i.renditions[0].segments.length > 0));
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
