// Beacons end to end in the local stack: a viewer session receives a pod
// through proxied ad segments (reloading and re-fetching), the beacon
// worker fires the tracking URLs at a loopback tracking server that fails
// 30 % of requests, and every beacon arrives exactly once, with the IAB
// device headers; a permanently failing URL ends in the dead-letter queue.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { startStack, api, http, channelConfig, ORG } from "./stack.mjs";

const hits = []; // successful deliveries
let failures = 0;
let tracker, trackerBase, s;
let n = 0;

before(async () => {
  tracker = createServer((req, res) => {
    n++;
    if (req.url.startsWith("/dead/") || (req.url.startsWith("/flaky/") && n % 10 < 3)) {
      failures++;
      res.writeHead(500).end("fail");
      return;
    }
    hits.push({ url: req.url, headers: req.headers });
    res.writeHead(200).end("ok");
  });
  await new Promise((r) => tracker.listen(0, "127.0.0.1", r));
  trackerBase = `http://127.0.0.1:${tracker.address().port}`;
  const t = (ad) => ({
    impression: [`${trackerBase}/flaky/impression?ad=${ad}&cb=[CACHEBUSTING]`],
    start: [`${trackerBase}/flaky/start?ad=${ad}`],
    firstQuartile: [`${trackerBase}/flaky/firstQuartile?ad=${ad}`],
    midpoint: [`${trackerBase}/flaky/midpoint?ad=${ad}`],
    thirdQuartile: [`${trackerBase}/flaky/thirdQuartile?ad=${ad}`],
    complete: [`${trackerBase}/flaky/complete?ad=${ad}`, ...(ad === 2 ? [`${trackerBase}/dead/complete?ad=2`] : [])],
  });
  s = await startStack({ firstBreak: 14, tracking: { ad1: t(1), ad2: t(2) } });
  const cfg = channelConfig(s.originBase, "daterange", { proxy_ad_segments: true });
  const r = await api(s.base, "PUT", `/api/orgs/${ORG}/channels/tracked`, cfg);
  assert.equal(r.status, 200, JSON.stringify(r.json));
});
after(() => {
  s && s.stop();
  tracker && tracker.close();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a session's pod fires each beacon exactly once, with IAB headers, despite 30 % failures and re-fetches", async () => {
  const UA = "cf-ssai-beacon-test/1.0";
  const master = (await http(`${s.base}/${ORG}/tracked/master.m3u8`)).text();
  const variant = master.split("\n").find((l) => l.startsWith(`/${ORG}/tracked/v360/`));
  assert.ok(variant && /sid=s2-[0-9a-z-]+/.test(variant), master);
  const fetched = new Map();
  let sawAds = false;
  const end = Date.now() + 75_000;
  while (Date.now() < end) {
    const pl = (await http(s.base + variant)).text();
    for (const line of pl.split("\n").filter((l) => l.includes(`/${ORG}/tracked/ad/`))) {
      sawAds = true;
      // The player fetches each segment; some twice (reload, retry).
      const times = fetched.get(line) ?? 0;
      if (times < 2) {
        const r = await http(s.base + line, { headers: { "User-Agent": UA, "X-Forwarded-For": "203.0.113.7" } });
        assert.equal(r.status, 302, line);
        assert.match(r.headers.location, /\/media\/demo\/ads\//);
        fetched.set(line, times + 1);
      }
    }
    if (sawAds && !pl.includes(`/${ORG}/tracked/ad/`) && hits.length >= 12) break;
    await sleep(1000);
  }
  assert.ok(sawAds, "the session received proxied ad segments");
  // Let retries finish (dev backoff ≤ 2 s, batches every ≤ 5 s).
  for (let i = 0; i < 40 && hits.filter((h) => h.url.startsWith("/flaky/")).length < 12; i++) await sleep(1000);
  await sleep(8000);
  const flaky = hits.filter((h) => h.url.startsWith("/flaky/"));
  const count = (ev, ad) => flaky.filter((h) => h.url.startsWith(`/flaky/${ev}?ad=${ad}`)).length;
  for (const ad of [1, 2]) {
    for (const ev of ["impression", "start", "firstQuartile", "midpoint", "thirdQuartile", "complete"]) {
      assert.equal(count(ev, ad), 1, `ad ${ad} ${ev} delivered exactly once (failures injected: ${failures}); hits: ${flaky.map((h) => h.url).join(" ")}`);
    }
  }
  assert.ok(failures > 0, "failures were injected and retried");
  // The operator metrics count the same, per channel.
  const b = (await api(s.base, "GET", `/api/orgs/${ORG}/metrics?channel=tracked`)).json.totals.beacons;
  assert.ok(b.sent >= 12 && b.retried >= failures, `beacon metrics ${JSON.stringify(b)} (failures injected: ${failures})`);
  for (const h of flaky) {
    assert.equal(h.headers["x-device-user-agent"], UA);
    // The runtime's CF-Connecting-IP wins over a client-sent X-Forwarded-For.
    assert.equal(h.headers["x-device-ip"], "127.0.0.1");
  }
  assert.ok(flaky.every((h) => !h.url.includes("[CACHEBUSTING]")), "macros filled");
});

test("a permanently failing tracking URL ends in the dead-letter queue", async () => {
  let dead = 0;
  for (let i = 0; i < 60 && dead < 1; i++) {
    // Platform-wide counters: platform admins only (GET /api/metrics).
    const m = (await api(s.base, "GET", "/api/metrics")).json.items ?? [];
    dead = m.find((x) => x.scope === "beacon" && x.name === "dead_lettered")?.value ?? 0;
    if (dead < 1) await sleep(2000);
  }
  assert.ok(dead >= 1, "dead-lettered after the retries ran out");
  const b = (await api(s.base, "GET", `/api/orgs/${ORG}/metrics?channel=tracked`)).json.totals.beacons;
  assert.ok(b.dead_lettered >= 1 && b.success_rate < 1, `beacon metrics ${JSON.stringify(b)}`);
  assert.equal(hits.filter((h) => h.url.startsWith("/dead/")).length, 0);
});

test("SGAI: the session rides from X-ASSET-LIST to the asset playlists we serve; deliveries fire each beacon once", async () => {
  const cfg = channelConfig(s.originBase, "none", { proxy_ad_segments: true, mode: "sgai" });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/tracked-sgai`, cfg)).status, 200);
  const before = hits.filter((h) => h.url.startsWith("/flaky/")).length;
  const cue = await http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${s.apiKey}` }, body: JSON.stringify({ channel: `${ORG}/tracked-sgai`, type: "start", duration: 30 }) });
  assert.equal(cue.status, 201, cue.text());
  const master = (await http(`${s.base}/${ORG}/tracked-sgai/master.m3u8?mode=sgai`)).text();
  const variant = master.split("\n").find((l) => l.startsWith(`/${ORG}/tracked-sgai/v360/`));
  const sid = variant.match(/sid=(s2-[0-9a-z-]+)/)[1];
  let list;
  for (let i = 0; i < 30 && !list; i++) {
    const pl = (await http(s.base + variant)).text();
    list = (pl.match(/X-ASSET-LIST="([^"]+)"/) || [])[1];
    if (!list) await sleep(1000);
  }
  assert.ok(list, "interstitial announced");
  assert.ok(list.endsWith(`?sid=${sid}`), `the asset list URL carries the session: ${list}`);
  const assets = JSON.parse((await http(s.base + list)).text()).ASSETS;
  const ads = assets.filter((a) => a["X-AD-ID"]);
  assert.ok(ads.length >= 2, JSON.stringify(assets));
  const UA = "cf-ssai-sgai-test/1.0";
  for (const a of ads) {
    assert.ok(a.URI.endsWith(`?sid=${sid}`), a.URI);
    const adMaster = (await http(s.base + a.URI)).text();
    const media = adMaster.split("\n").find((l) => l.startsWith(`/${ORG}/tracked-sgai/ads/`));
    assert.ok(media, adMaster);
    const pl = (await http(s.base + media)).text();
    assert.match(pl, /#EXT-X-ENDLIST/);
    const segs = pl.split("\n").filter((l) => l.startsWith(`/${ORG}/tracked-sgai/ad/`));
    assert.ok(segs.length >= 5, pl);
    // The player fetches every segment; the first one twice (a retry).
    for (const seg of [segs[0], ...segs]) {
      const r = await http(s.base + seg, { headers: { "User-Agent": UA } });
      assert.equal(r.status, 302, seg);
    }
  }
  // 12 beacons (2 ads × 6 events), retried through 30 % failures.
  for (let i = 0; i < 40 && hits.filter((h) => h.url.startsWith("/flaky/")).length < before + 12; i++) await sleep(1000);
  await sleep(8000);
  const mine = hits.filter((h) => h.url.startsWith("/flaky/") && h.headers["x-device-user-agent"] === UA);
  for (const ad of [1, 2]) {
    for (const ev of ["impression", "start", "firstQuartile", "midpoint", "thirdQuartile", "complete"]) {
      assert.equal(mine.filter((h) => h.url.startsWith(`/flaky/${ev}?ad=${ad}`)).length, 1, `SGAI ad ${ad} ${ev} once: ${mine.map((h) => h.url).join(" ")}`);
    }
  }
  // Without a counted session, no media playlist of ours (no open proxy).
  const bare = await http(`${s.base}/${ORG}/tracked-sgai/ads/x/0/900000.m3u8`);
  assert.equal(bare.status, 404);
});
