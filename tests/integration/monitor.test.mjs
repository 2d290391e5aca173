// The SCTE-35 monitor against the local stack and live origin, with no
// viewer at all: every break is found by the Channel DO pollers alone.
// Breaks in every dialect registered once; detection within one target
// duration of the cue appearing in the origin; a break signalled ahead has
// its decision in KV before its first segment is in any playlist; the
// origin dying mid-break neither loses nor duplicates the break.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startStack, api, http, channelConfig, ORG, CADENCE_MS } from "./stack.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const BREAK_EVERY = 12;
const BREAK_LEN = 6;
// The origin's `daterange-ahead` dialect announces a break this many segments early.
const SIGNAL_AHEAD = 3;
// `inband`: SCTE-35 only in the TS (a PID); `inband-fmp4`: only in CMAF
// `emsg` boxes (v0 and v1 alternately); no playlist marker at all.
const DIALECTS = ["cue-out", "daterange", "oatcls", "scte35-tag", "splicepoint", "inband", "inband-fmp4"];
let s;
let t0;

before(async () => {
  s = await startStack({ firstBreak: 3, breakEvery: BREAK_EVERY, breakLen: BREAK_LEN, dialects: DIALECTS });
  const r = await api(s.base, "PUT", `/api/orgs/${ORG}/channels/ahead`, channelConfig(s.originBase, "daterange-ahead"));
  assert.equal(r.status, 200, JSON.stringify(r.json));
  t0 = Date.now();
});
after(() => s?.stop());

const entries = async (slug) => (await api(s.base, "GET", `/api/orgs/${ORG}/channels/${slug}/breaks`)).json.entries ?? [];

test("the KV copy holds a break signalled ahead, with its decision, before its first segment is in the origin playlist", async () => {
  // Sample the origin playlist and the channel's KV value every 100 ms.
  const samples = [];
  const until = Date.now() + 3.2 * BREAK_EVERY * CADENCE_MS;
  while (Date.now() < until) {
    const [o, kv] = await Promise.all([
      http(`${s.originBase}/live/daterange-ahead/v360/index.m3u8`),
      api(s.base, "GET", `/api/orgs/${ORG}/channels/ahead/kv`),
    ]);
    const text = o.text();
    const seq = Number(text.match(/#EXT-X-MEDIA-SEQUENCE:(\d+)/)[1]);
    const last = seq + (text.match(/#EXTINF/g) ?? []).length - 1;
    const view = kv.json.breaks ?? {};
    samples.push({ last, kv: view.entries ?? [], watermark: view.checked_through_msn ?? 0 });
    await sleep(100);
  }
  const breaks = await entries("ahead");
  let checked = 0;
  for (const b of breaks) {
    const a = b.record.anchor_msn;
    const published = samples.findIndex((x) => x.last >= a);
    if (published <= 0) continue; // already out before sampling began, or not yet
    // The promise holds for a signal that reached a running poller: skip a
    // break whose DATERANGE (SIGNAL_AHEAD segments before its first
    // segment) was in the origin before the new channel's poller was seen
    // running (or before sampling began).
    const signalled = samples.findIndex((x) => x.last >= a - SIGNAL_AHEAD);
    const pollerUp = samples.findIndex((x) => x.watermark > 0);
    if (signalled <= 0 || pollerUp < 0 || pollerUp >= signalled) continue;
    const inKv = samples.findIndex((x) => x.kv.some((e) => e.record.id === b.record.id && e.pod));
    assert.ok(inKv >= 0 && inKv < published, `break ${b.record.id}: in KV at sample ${inKv}, first segment (MSN ${a}) published at sample ${published}`);
    const e = samples[inKv].kv.find((e) => e.record.id === b.record.id);
    assert.ok(e.pod.items.length > 0, `the pre-computed decision has ads: ${JSON.stringify(e.pod.reasons)}`);
    checked++;
  }
  assert.ok(checked >= 2, `two breaks checked (got ${checked} of ${breaks.length})`);
});

test("every dialect: each break registered once, within one target duration of its cue appearing", async () => {
  // The origin publishes a segment when it is complete: the cue on a
  // break's first segment appears at that segment's PDT + one cadence.
  const targetMs = Math.ceil(CADENCE_MS / 1000) * 1000;
  for (const d of DIALECTS) {
    const es = await entries(d);
    assert.ok(es.length >= 2, `${d}: at least two breaks (got ${es.length})`);
    const anchors = es.map((e) => e.record.anchor_msn).sort((x, y) => x - y);
    for (let i = 1; i < anchors.length; i++) {
      assert.equal(anchors[i] - anchors[i - 1], BREAK_EVERY, `${d}: one record per break (${anchors})`);
    }
    assert.equal(new Set(es.map((e) => e.record.id)).size, es.length, `${d}: ids unique`);
    const timed = [];
    for (const e of es) {
      const r = e.record;
      assert.equal(r.segment_count, BREAK_LEN, `${d}: planned length`);
      const appeared = r.anchor_pdt_ms + CADENCE_MS;
      const latency = r.registered_ms - appeared;
      if (appeared < t0) continue; // in the origin before its poller started
      timed.push(latency);
      assert.ok(latency < targetMs, `${d} ${r.id}: detected ${latency} ms after the cue appeared (target duration ${targetMs} ms)`);
      assert.ok(e.pod, `${d} ${r.id}: decision made once with the break`);
    }
    assert.ok(timed.length >= 1, `${d}: a break appeared while polled`);
    console.log(`# ${d}: detection latency ${timed.join(", ")} ms`);
  }
  // The operator metrics saw the same: polls, one avail per break, the
  // dialect of each, detection latency within the target duration.
  const m = (await api(s.base, "GET", `/api/orgs/${ORG}/metrics?from=${t0 - 60_000}`)).json;
  assert.ok(m.totals.polls > 0, "polls counted");
  assert.ok(m.totals.avails >= 2 * DIALECTS.length, `an avail per break decided: ${m.totals.avails}`);
  const dialects = Object.keys(m.totals.cues);
  assert.ok(dialects.length >= 4, `cues counted per dialect: ${dialects}`);
  const det = m.totals.detection_latency_ms;
  // (p50: the metrics also time the first break of each channel, whose cue
  // was in the origin before its poller started.)
  assert.ok(det.count >= 2 * DIALECTS.length && det.p50 <= targetMs, `detection latency p50 ${det.p50} ms of ${det.count}`);
});

test("the origin dying mid-break: the break is kept once, polling resumes, the next break is found", async () => {
  const before = await entries("cue-out");
  // Wait for a break in progress (its first segment published, not over).
  let current;
  for (let i = 0; i < 40 && !current; i++) {
    const es = await entries("cue-out");
    const now = Date.now();
    current = es.find((e) => now > e.record.anchor_pdt_ms + CADENCE_MS && now < e.record.anchor_pdt_ms + (BREAK_LEN - 2) * CADENCE_MS);
    if (!current) await sleep(500);
  }
  assert.ok(current, "a break in progress");
  const down = await http(`${s.originBase}/ctl/cue-out/down?secs=6`, { method: "POST" });
  assert.equal(down.status, 200);
  await sleep(6000 + 2 * BREAK_EVERY * CADENCE_MS);
  const after = await entries("cue-out");
  const same = after.filter((e) => Math.abs(e.record.anchor_msn - current.record.anchor_msn) < BREAK_EVERY);
  assert.equal(same.length, 1, "the break in progress stays one break");
  assert.deepEqual(same[0].pod, current.pod, "with the same decision");
  assert.ok(after.some((e) => e.record.anchor_msn > current.record.anchor_msn), "the next break was found after recovery");
  assert.ok(after.length >= before.length, "nothing lost");
  const st = (await api(s.base, "GET", `/api/orgs/${ORG}/channels/cue-out/monitor`)).json;
  assert.equal(st.running, true, "poller still running");
  assert.ok(st.stats.errors >= 1, `failed polls counted: ${JSON.stringify(st.stats)}`);
});
