// The channel sequencer under concurrency, against the real Channel DO in
// workerd: many /cue starts for one break, many viewers' first requests for
// a new SCTE-35 cue, a /cue stop racing viewers' syncs. Decisions are
// counted where they cannot be faked: each one fetches the channel's VAST
// tag from a loopback ad server exactly once (VAST and decision caches off).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { startStack, api, http, channelConfig, ORG } from "./stack.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let s, ads, adsBase;
const tagHits = {};

before(async () => {
  ads = createServer((req, res) => {
    const path = req.url.split("?")[0];
    tagHits[path] = (tagHits[path] ?? 0) + 1;
    // Slow enough that concurrent requests overlap the decision.
    setTimeout(() => {
      res.writeHead(200, { "Content-Type": "application/xml" }).end(`<VAST version="4.2"><Ad id="v"><InLine><AdSystem>t</AdSystem><Impression>http://127.0.0.1:9/imp</Impression><Creatives><Creative id="ad1"><Linear><Duration>00:00:09.600</Duration><MediaFiles><MediaFile delivery="progressive" type="video/mp4">http://127.0.0.1:9/ad1.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>`);
    }, 400);
  });
  await new Promise((r) => ads.listen(0, "127.0.0.1", r));
  adsBase = `http://127.0.0.1:${ads.address().port}`;
  s = await startStack({ dialects: [], fmp4: false, firstBreak: 12, breakEvery: 30, breakLen: 8 });
  const cfg = (tag, extra = {}) => channelConfig(s.originBase, "none", { vast_urls: [`${adsBase}${tag}?cb=[CACHEBUSTING]`], vast_cache_s: 0, decision_cache_s: 0, scte35_enabled: false, ...extra });
  for (const [slug, c] of [
    ["cues", cfg("/tag/cues")],
    ["race", cfg("/tag/race")],
    // SCTE-35 channel: viewers race the poller for each new cue. No
    // location playlist cache (`cache_max_age_s: 0`): every request splices.
    ["viewers", { ...channelConfig(s.originBase, "daterange"), vast_urls: [`${adsBase}/tag/viewers?cb=[CACHEBUSTING]`], vast_cache_s: 0, decision_cache_s: 0, cache_max_age_s: 0 }],
  ]) {
    assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/${slug}`, c)).status, 200);
  }
});
after(() => {
  s && s.stop();
  ads && ads.close();
});

const cue = (channel, body, key = s.apiKey) =>
  http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${key}` }, body: JSON.stringify({ channel: `${ORG}/${channel}`, ...body }) });

test("16 concurrent /cue start for one break: one 201, one decision", async () => {
  const before = tagHits["/tag/cues"] ?? 0;
  const rs = await Promise.all(Array.from({ length: 16 }, () => cue("cues", { type: "start", duration: 20, event_id: "same-break" })));
  const statuses = rs.map((r) => r.status).sort();
  assert.equal(statuses.filter((x) => x === 201).length, 1, `statuses: ${statuses}`);
  assert.equal(statuses.filter((x) => x === 200).length, 15, `statuses: ${statuses}`);
  const ids = new Set(rs.map((r) => JSON.parse(r.text()).id));
  assert.deepEqual([...ids], ["cue-same-break"]);
  await sleep(1500);
  assert.equal((tagHits["/tag/cues"] ?? 0) - before, 1, "the ad server was asked once");
  const st = (await api(s.base, "GET", `/api/orgs/${ORG}/channels/cues/breaks`)).json;
  assert.equal(st.entries.filter((e) => e.record.id === "cue-same-break").length, 1);
  assert.equal(st.entries[0].pod.source, "vast", JSON.stringify(st.entries[0].pod.reasons));
});

test("16 concurrent viewers at each new SCTE-35 cue: one decision per break", async () => {
  const master = (await http(`${s.base}/${ORG}/viewers/master.m3u8`)).text();
  const variant = master.split("\n").find((l) => l.startsWith(`/${ORG}/viewers/`));
  const end = Date.now() + 110_000;
  let registered = 0;
  // Two breaks (every 30 segments of 1.92 s); 16 requests at once every
  // 300 ms, so some arrive in the instant a cue first appears.
  while (Date.now() < end && registered < 2) {
    const rs = await Promise.all(Array.from({ length: 16 }, () => http(s.base + variant)));
    for (const r of rs) assert.equal(r.status, 200);
    registered = (await api(s.base, "GET", `/api/orgs/${ORG}/channels/viewers/breaks`)).json.entries.length;
    await sleep(300);
  }
  const st = (await api(s.base, "GET", `/api/orgs/${ORG}/channels/viewers/breaks`)).json;
  assert.ok(st.entries.length >= 2, `breaks registered: ${st.entries.map((e) => e.record.id)}`);
  await sleep(1500);
  assert.equal(tagHits["/tag/viewers"], st.entries.length, `one ad-server request per break (${st.entries.length} breaks)`);
  assert.ok(st.entries.every((e) => e.pod.source === "vast"), JSON.stringify(st.entries.map((e) => e.pod.reasons)));
});

test("a /cue stop racing viewers' syncs is never lost", async () => {
  const start = await cue("race", { type: "start", duration: 60 });
  assert.equal(start.status, 201, start.text());
  const id = JSON.parse(start.text()).id;
  const variant = (await http(`${s.base}/${ORG}/race/master.m3u8`)).text().split("\n").find((l) => l.startsWith(`/${ORG}/race/`));
  await sleep(4000);
  const [stop] = await Promise.all([cue("race", { type: "stop" }), ...Array.from({ length: 16 }, () => http(s.base + variant))]);
  assert.equal(stop.status, 200, stop.text());
  // More viewers keep syncing; the cut must stay.
  for (let i = 0; i < 5; i++) {
    await Promise.all(Array.from({ length: 8 }, () => http(s.base + variant)));
    await sleep(1000);
  }
  const st = (await api(s.base, "GET", `/api/orgs/${ORG}/channels/race/breaks`)).json;
  const e = st.entries.find((x) => x.record.id === id);
  assert.ok(e && e.record.cut_after !== null && e.record.cut_after !== undefined, JSON.stringify(e?.record));
  const kv = (await api(s.base, "GET", `/api/orgs/${ORG}/channels/race/kv`)).json.breaks;
  assert.equal(kv.entries.find((x) => x.record.id === id).record.cut_after, e.record.cut_after, "KV shows the stop too");
});

test("a polled channel's playlists are spliced from the KV view, not the DO", async () => {
  const master = (await http(`${s.base}/${ORG}/viewers/master.m3u8`)).text();
  const variant = master.split("\n").find((l) => l.startsWith(`/${ORG}/viewers/`));
  const sources = {};
  for (let i = 0; i < 30; i++) {
    // The channel has no shared-playlist cache: every request decides.
    const r = await http(s.base + variant);
    assert.equal(r.status, 200);
    const src = r.headers["x-cf-ssai-breaks"];
    sources[src] = (sources[src] ?? 0) + 1;
    await sleep(300);
  }
  assert.ok((sources.view ?? 0) >= 20, `most from the view: ${JSON.stringify(sources)}`);
});
