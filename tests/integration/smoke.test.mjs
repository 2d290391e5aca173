// Every binding for real through our workers, the cron, auth failures and
// control-plane validation, against the local stack.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startStack, api, http, jwt, adminToken, devVars, ORG } from "./stack.mjs";

let s;
const stateDir = mkdtempSync(join(tmpdir(), "cf-ssai-smoke-"));
before(async () => {
  s = await startStack({ ingest: false, stateDir });
});
after(() => {
  if (s) s.stop();
  setTimeout(() => rmSync(stateDir, { recursive: true, force: true }), 3000).unref();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("each binding answers through the manifest worker: KV, D1, R2, DO, service, queue", async () => {
  const a = await api(s.base, "GET", "/api/diag");
  assert.equal(a.status, 200, JSON.stringify(a.json));
  assert.equal(a.json.kv, a.json.stamp, "KV put/get round trip");
  assert.equal(a.json.r2, a.json.stamp, "R2 put/get round trip");
  assert.ok(a.json.d1_orgs >= 1, "D1 sees the seeded org");
  assert.ok(a.json.durable_object.pings >= 1, "DO storage counter");
  assert.equal(a.json.service_decision, "decision ok", "service binding to decision");
  // The beacon consumer stores the diag stamp it consumed (batch timeout 5 s).
  let consumed = null;
  for (let i = 0; i < 20 && consumed !== a.json.stamp; i++) {
    await sleep(1000);
    consumed = (await api(s.base, "GET", "/api/diag")).json.queue_last_consumed;
    if (consumed && consumed !== a.json.stamp && Number(consumed) > Number(a.json.stamp)) break;
  }
  assert.ok(consumed && Number(consumed) >= Number(a.json.stamp), `queue message consumed (got ${consumed})`);
  const b = await api(s.base, "GET", "/api/diag");
  assert.ok(b.json.durable_object.pings > a.json.durable_object.pings, "DO state persists across calls");
});

test("cron → monitor cycle → pollers on DO alarms", async () => {
  const r = await http(`${s.base}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`);
  assert.equal(r.status, 200);
  let cycle = null;
  for (let i = 0; i < 20 && !cycle; i++) {
    await sleep(500);
    cycle = (await api(s.base, "GET", "/api/diag")).json.monitor_last_cycle;
  }
  assert.ok(cycle, "the monitor's cycle ran and wrote KV");
  const c = JSON.parse(cycle);
  assert.ok(c.channels >= 6, `every SCTE-35 channel got a poller: ${cycle}`);
  // Alarms poll at segment cadence: the counter grows.
  let polls = 0;
  // (Pollers write their metrics every 10 s.)
  for (let i = 0; i < 40 && polls < 6; i++) {
    await sleep(1000);
    polls = (await api(s.base, "GET", `/api/orgs/${ORG}/metrics`)).json.totals?.polls ?? 0;
  }
  assert.ok(polls >= 6, `DO alarms polled the origins (${polls} polls)`);
});

test("auth: every failure is refused with a reason", async () => {
  const now = Math.floor(Date.now() / 1000);
  const path = `/api/orgs/${ORG}/channels`;
  const bad = async (token, status, why) => {
    const r = await http(s.base + path, { headers: token === null ? {} : { Authorization: `Bearer ${token}` } });
    assert.equal(r.status, status, `${why}: ${r.text()}`);
    assert.ok(JSON.parse(r.text()).error, `${why}: error message`);
  };
  await bad(null, 401, "no credentials");
  await bad("garbage", 401, "malformed");
  const none = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from(JSON.stringify({ exp: now + 60, aud: "cf-ssai", org: ORG })).toString("base64url")}.`;
  await bad(none, 401, "alg none");
  await bad(jwt({ exp: now + 60, aud: "cf-ssai", org: ORG }, "wrong-secret"), 401, "bad signature");
  await bad(jwt({ exp: now - 3600, aud: "cf-ssai", org: ORG }), 401, "expired");
  await bad(jwt({ exp: now + 60, aud: "someone-else", org: ORG }), 401, "wrong audience");
  await bad(jwt({ exp: now + 60, aud: "cf-ssai" }), 401, "no org claim");
  await bad(jwt({ exp: now + 60, aud: "cf-ssai", org: "other" }), 403, "wrong org");
  await bad("cfssai_000000000000000000000000000000000000000000000000", 401, "unknown API key");
  const ok = await http(s.base + path, { headers: { Authorization: `Bearer ${s.apiKey}` } });
  assert.equal(ok.status, 200, "the seeded API key works");
  assert.ok(JSON.parse(ok.text()).items.length >= 6);
  const cue = await http(`${s.base}/cue`, { method: "POST", body: "{}" });
  assert.equal(cue.status, 401, "POST /cue needs auth");
  assert.ok(!("JWT_SECRET" in JSON.parse(ok.text())), "secrets never leak");
  assert.ok(devVars().JWT_SECRET.length >= 32);
});

test("channel config is validated per field; no open proxy", async () => {
  const put = (cfg) => api(s.base, "PUT", `/api/orgs/${ORG}/channels/bad`, cfg);
  let r = await put({ origin_url: "ftp://x/y.m3u8" });
  assert.equal(r.status, 400);
  assert.ok(r.json.fields.some((f) => f.field === "origin_url"), JSON.stringify(r.json));
  r = await put({ origin_url: "http://127.0.0.1:1/x.m3u8" });
  assert.equal(r.status, 400, "loopback needs allow_private_origin");
  r = await put({ origin_url: "https://user:pw@example.com/x.m3u8" });
  assert.equal(r.status, 400, "credentials in URL");
  r = await put({ origin_url: "https://example.com/x.m3u8", cadence_ms: 3 });
  assert.ok(r.json.fields.some((f) => f.field === "cadence_ms"));
  r = await put({ origin_url: "https://example.com/x.m3u8", nonsense: 1 });
  assert.equal(r.status, 400, "unknown fields are refused");
  // Paths outside the channel's origin directory are not fetched.
  for (const p of ["/demo/manual/..%2F..%2Fsecret.m3u8", "/demo/manual/x.ts", "/demo/manual/http:%2F%2Fevil%2Fa.m3u8"]) {
    const g = await http(s.base + p);
    assert.equal(g.status, 404, p);
  }
});

test("POST /cue: validation, start, idempotency, overlap, stop", async () => {
  const cue = (body, headers = {}) =>
    http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${s.apiKey}`, ...headers }, body: JSON.stringify(body) }).then((r) => ({ status: r.status, json: JSON.parse(r.text()) }));
  const expect400 = async (body, field) => {
    const r = await cue(body);
    assert.equal(r.status, 400, JSON.stringify(r.json));
    assert.match(r.json.error, new RegExp(field), `names ${field}: ${r.json.error}`);
  };
  await expect400({ type: "start", duration: 10 }, "channel");
  await expect400({ channel: "demo/manual", duration: 10 }, "type");
  await expect400({ channel: "demo/manual", type: "pause", duration: 10 }, "type");
  await expect400({ channel: "demo/manual", type: "start" }, "duration");
  await expect400({ channel: "demo/manual", type: "start", duration: -3 }, "duration");
  await expect400({ channel: "demo/manual", type: "schedule", duration: 10 }, "start_at");
  await expect400({ channel: "demo/manual", type: "schedule", duration: 10, start_at: "2001-01-01T00:00:00Z" }, "start_at");
  const bad = await http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${s.apiKey}` }, body: "{not json" });
  assert.equal(bad.status, 400);
  assert.equal((await cue({ channel: "demo/nope", type: "start", duration: 10 })).status, 404);
  const wrongOrg = await http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${adminToken("other")}` }, body: JSON.stringify({ channel: "demo/manual", type: "start", duration: 10 }) });
  assert.equal(wrongOrg.status, 403);
  const start = await cue({ channel: "demo/manual", type: "start", duration: 12 }, { "Idempotency-Key": "k1" });
  assert.equal(start.status, 201, JSON.stringify(start.json));
  assert.equal(start.json.source, "manual");
  assert.equal(start.json.segment_count, Math.round(12000 / 1920));
  const again = await cue({ channel: "demo/manual", type: "start", duration: 12 }, { "Idempotency-Key": "k1" });
  assert.equal(again.status, 200);
  assert.equal(again.json.id, start.json.id, "same key, same break");
  const overlap = await cue({ channel: "demo/manual", type: "start", duration: 12 }, { "Idempotency-Key": "k2" });
  assert.equal(overlap.status, 409, JSON.stringify(overlap.json));
  await sleep(2500);
  const stop = await cue({ channel: "demo/manual", type: "stop" });
  assert.equal(stop.status, 200, JSON.stringify(stop.json));
  assert.ok(stop.json.cut_after !== undefined && stop.json.cut_after < start.json.segment_count, "stopped early");
  // The stop reached KV/DO state too (the original left it in KV).
  const st = await api(s.base, "GET", `/api/orgs/${ORG}/channels/manual/breaks`);
  const rec = st.json.entries.find((e) => e.record.id === start.json.id).record;
  assert.equal(rec.cut_after, stop.json.cut_after);
  const sched = await cue({ channel: "demo/manual", type: "schedule", duration: 10, start_at: new Date(Date.now() + 120000).toISOString() }, { "Idempotency-Key": "s1" });
  assert.equal(sched.status, 201, JSON.stringify(sched.json));
  assert.equal(sched.json.source, "scheduled");
  assert.ok(sched.json.anchor_msn > start.json.anchor_msn + 40);
});

test("a channel whose origin keeps failing turns unhealthy, with backoff, and recovers by itself", async () => {
  const health = async () => (await api(s.base, "GET", `/api/orgs/${ORG}/channels/manual`)).json.health;
  const down = await http(`${s.originBase}/ctl/none/down?secs=14`, { method: "POST" });
  assert.equal(down.status, 200);
  let h = "ok";
  for (let i = 0; i < 30 && h !== "unhealthy"; i++) {
    await sleep(1000);
    h = await health();
  }
  assert.equal(h, "unhealthy", "marked unhealthy after repeated failures");
  for (let i = 0; i < 60 && h !== "ok"; i++) {
    await sleep(1000);
    h = await health();
  }
  assert.equal(h, "ok", "recovered once the origin came back");
});

test("the Channel DO's state survives a restart of the whole runtime", async () => {
  const before = (await api(s.base, "GET", `/api/orgs/${ORG}/channels/manual/breaks`)).json.entries;
  assert.ok(before.length >= 1, "the /cue test left breaks");
  // The runtime restarts; the origin keeps running (an origin restart is
  // a new epoch, whose breaks start afresh: origin-restart.test.mjs).
  await s.restartRuntime();
  const after = (await api(s.base, "GET", `/api/orgs/${ORG}/channels/manual/breaks`)).json.entries;
  assert.deepEqual(after.map((e) => e.record), before.map((e) => e.record));
});
