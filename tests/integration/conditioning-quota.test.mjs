// One org cannot monopolise conditioning, and the control plane's limits
// hold against the caller: against the real stack (no conditioner runs;
// the test leases as one would).
// - Org A's ad servers return 120 creatives (two tags of 60: a VAST
//   document holds at most 64 ads): 100 jobs are recorded (the queued
//   quota), not 120.
// - Org B's one creative is leased within the first two leases although
//   A's hundred are older (fair lease order), and A never has more than
//   its running quota leased at once.
// - The decision preview refuses a body over its cap, streamed without a
//   Content-Length too.
// - Rate limits count by credential, not by the JWT `sub` a caller picks.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { request } from "node:http";
import { startStack, api, http, channelConfig, adminToken, jwt, ORG } from "./stack.mjs";

const OTHER = "quota-b";
let s, ads, adsBase;

const vast = (base, prefix, n) => `<?xml version="1.0" encoding="UTF-8"?>
<VAST version="4.2" xmlns="http://www.iab.com/VAST">${Array.from({ length: n }, (_, i) => `
 <Ad id="${prefix}-${i}" sequence="${i + 1}"><InLine><AdSystem>loopback</AdSystem><AdTitle>t</AdTitle>
  <Impression>${base}/imp</Impression>
  <Creatives><Creative id="${prefix}-creative-${i}"><Linear><Duration>00:00:15</Duration>
   <MediaFiles><MediaFile delivery="progressive" type="video/mp4" width="1280" height="720" codec="H.264">${base}/${prefix}-${i}.mp4</MediaFile></MediaFiles>
  </Linear></Creative></Creatives></InLine></Ad>`).join("")}
</VAST>`;

before(async () => {
  ads = createServer((req, res) => {
    const path = req.url.split("?")[0];
    if (path.startsWith("/many/")) return res.writeHead(200, { "Content-Type": "application/xml" }).end(vast(adsBase, path.slice(6), 60));
    if (path === "/one") return res.writeHead(200, { "Content-Type": "application/xml" }).end(vast(adsBase, "b", 1));
    res.writeHead(404).end();
  });
  await new Promise((r) => ads.listen(0, "127.0.0.1", r));
  adsBase = `http://127.0.0.1:${ads.address().port}`;
  s = await startStack({ dialects: [], echo: !!process.env.ECHO });
  for (const [org, slug, tag] of [[ORG, "quota", "/many/a"], [ORG, "quota2", "/many/c"], [OTHER, "quota", "/one"]]) {
    assert.equal((await api(s.base, "PUT", `/api/orgs/${org}`, { name: org })).status, 200);
    const r = await api(s.base, "PUT", `/api/orgs/${org}/channels/${slug}`, channelConfig(s.originBase, "none", { scte35_enabled: false, vast_urls: [`${adsBase}${tag}`], vast_cache_s: 0, decision_cache_s: 0 }));
    assert.equal(r.status, 200, JSON.stringify(r.json));
  }
});
after(() => {
  s?.stop();
  ads?.close();
});

const jobs = async (org) => (await api(s.base, "GET", `/api/orgs/${org}/conditioning/jobs`)).json.items;
async function until(what, f, ms) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

test("queued quota: 120 creatives from one org's ad servers record 100 jobs", async () => {
  for (const channel of ["quota", "quota2"]) {
    const r = await api(s.base, "POST", `/api/orgs/${ORG}/decision`, { channel, break_id: `q-${channel}`, duration_s: 30, cadence_ms: 1920 });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.ok(r.json.reasons.some((x) => x.includes("TRANSCODE_PENDING")), JSON.stringify(r.json.reasons).slice(0, 500));
    await until(`the jobs of ${channel}`, async () => (await jobs(ORG)).length >= 60, 20_000);
  }
  const a = await until("org A's jobs", async () => { const j = await jobs(ORG); return j.length >= 100 && j; }, 20_000);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal((await jobs(ORG)).length, 100, "the queued quota (100) holds");
  assert.ok(a.every((j) => j.state === "queued"));
  // Seen again: counted, still 100.
  const again = await api(s.base, "POST", `/api/orgs/${ORG}/decision`, { channel: "quota", break_id: "q2", duration_s: 30, cadence_ms: 1920 });
  await until(`a sighting counted (${JSON.stringify(again.json.reasons).slice(0, 300)})`, async () => (await jobs(ORG)).some((j) => j.seen >= 2), 10_000);
  assert.equal((await jobs(ORG)).length, 100);
});

test("fair leasing: org B's one job is leased within the first two; A stays within its running quota", async () => {
  const r = await api(s.base, "POST", `/api/orgs/${OTHER}/decision`, { channel: "quota", break_id: "b1", duration_s: 30, cadence_ms: 1920 });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  await until("org B's job", async () => (await jobs(OTHER)).length === 1, 10_000);
  const leased = [];
  for (let i = 0; i < 4; i++) {
    const l = await api(s.base, "POST", "/api/conditioning/lease", { owner: `c${i}`, lease_s: 300 }, adminToken("*"));
    if (l.status === 204) break;
    assert.equal(l.status, 200, JSON.stringify(l.json));
    leased.push(l.json.job.org_id);
  }
  assert.ok(leased.slice(0, 2).includes(OTHER), `B within the first two leases: ${leased}`);
  assert.equal(leased.filter((o) => o === ORG).length, 2, `A's running quota is 2: ${leased}`);
  assert.equal(leased.length, 3, `nothing more to lease while A is at its quota: ${leased}`);
  // The lease hands over at most 3 cadences per job.
  const stats = await api(s.base, "GET", `/api/orgs/${ORG}/conditioning/stats`);
  assert.equal(stats.status, 200);
  assert.equal(stats.json.queued, 98);
  assert.equal(stats.json.running, 2);
  const om = await http(`${s.base}/api/orgs/${ORG}/metrics/openmetrics`, { headers: { Authorization: `Bearer ${adminToken(ORG)}` } });
  assert.match(om.text(), /^cf_ssai_conditioning_jobs\{org="demo",state="queued"\} 98$/m);
  assert.match(om.text(), /^cf_ssai_conditioning_jobs\{org="demo",state="running"\} 2$/m);
  assert.ok(om.text().endsWith("# EOF\n"));
});

test("the decision preview caps its body, with or without a Content-Length", async () => {
  const big = JSON.stringify({ channel: "quota", break_id: "x", duration_s: 30, pad: "x".repeat(200_000) });
  const r = await api(s.base, "POST", `/api/orgs/${ORG}/decision`, big);
  assert.equal(r.status, 413, JSON.stringify(r.json));
  assert.match(JSON.stringify(r.json), /65536/);
  // Chunked: no Content-Length to refuse up front.
  const status = await new Promise((resolve, reject) => {
    const u = new URL(`${s.base}/api/orgs/${ORG}/decision`);
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: "POST", headers: { Authorization: `Bearer ${adminToken()}`, "Content-Type": "application/json", "Transfer-Encoding": "chunked" } }, (res) => { res.resume(); resolve(res.statusCode); });
    req.on("error", reject);
    for (let i = 0; i < 50; i++) req.write("x".repeat(10_000));
    req.end();
  });
  assert.equal(status, 413);
});

test("rate limits count by credential: rotating the JWT sub does not escape the org's bucket", async () => {
  // API_LIMITER: 1200 per 60 s per credential. Exhaust org B's bucket with
  // one sub, then a fresh sub is limited too; org A is not.
  const now = Math.floor(Date.now() / 1000);
  const tok = (sub, org) => jwt({ sub, exp: now + 600, aud: "cf-ssai", org });
  let limited = 0;
  const burst = [];
  for (let i = 0; i < 1300; i++) burst.push(http(`${s.base}/api/whoami`, { headers: { Authorization: `Bearer ${tok("operator", OTHER)}` } }).then((r) => { if (r.status === 429) limited++; }));
  await Promise.all(burst);
  assert.ok(limited > 0, "the bucket ran out");
  const rotated = await http(`${s.base}/api/whoami`, { headers: { Authorization: `Bearer ${tok(`fresh-${Date.now()}`, OTHER)}` } });
  assert.equal(rotated.status, 429, "a new sub is the same bucket");
  const other = await http(`${s.base}/api/whoami`, { headers: { Authorization: `Bearer ${tok("operator", ORG)}` } });
  assert.equal(other.status, 200, "another org's bucket is its own");
});
