// The in-band watermark survives an eviction. A channel whose SCTE-35 is
// only in the media (a PID in the TS) is polled by its Channel DO, which
// examines each new segment once and persists how far it got; the edge
// holds back segments nobody has examined. The whole runtime is stopped
// just before the segment that carries the next cue is published, and
// started again only when that segment is no longer among the origin's
// newest three (a poller with no history starts there): every Durable
// Object is a new instance over the same storage. The break must still be
// registered at the cue's segment (before the fix the new instance started
// at the newest segments and the cue was never read).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startStack, api, http, channelConfig, ORG, CLI } from "./stack.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const EVERY = 20;
let s;
const dir = mkdtempSync(join(tmpdir(), "cf-ssai-evict-"));

before(async () => {
  // A 20-segment window: the cue's segment stays at the origin while the
  // runtime is down.
  s = await startStack({ dialects: [], fmp4: false, firstBreak: 4, breakEvery: EVERY, breakLen: 5, window: 20, echo: !!process.env.ECHO });
  const cfg = channelConfig(s.originBase, "inband", { cue_source: "inband", mode: "ssai" });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/evict`, cfg)).status, 200);
});
after(() => s && s.stop());

/** The origin's window (last MSN) and its SCTE-35 breaks, read from the
 * daterange dialect of the same timeline. */
async function origin() {
  const t = (await http(`${s.originBase}/live/daterange/v360/index.m3u8`)).text();
  let msn = Number((t.match(/#EXT-X-MEDIA-SEQUENCE:(\d+)/) || [])[1]);
  const cues = [];
  for (const line of t.split("\n")) {
    if (line.startsWith("#EXT-X-DATERANGE") && line.includes("SCTE35-OUT")) cues.push(msn);
    if (line && !line.startsWith("#")) msn++;
  }
  return { last: msn - 1, cues };
}
const breaks = async () => (await api(s.base, "GET", `/api/orgs/${ORG}/channels/evict/breaks`)).json.entries;

test("a cue in a segment examined by nobody is found by the poller's next instance", async () => {
  // The poller runs and registers a first in-band break: it works at all.
  await http(`${s.base}/${ORG}/evict/master.m3u8`);
  let first;
  for (let i = 0; i < 120 && !first; i++) {
    first = (await breaks()).find((e) => e.record.source === "scte35");
    if (!first) await sleep(1000);
  }
  assert.ok(first, "the poller registered an in-band break");
  // The next cue: the origin serves segments ahead of the live edge, so
  // read them (the media loops, so cues are not evenly spaced by MSN).
  let next;
  for (let n = first.record.anchor_msn + 1; n < first.record.anchor_msn + 4 * EVERY && next === undefined; n++) {
    // The playlist names MSN n `seg{n mod 60}.ts` (the stack's origin
    // loops its media every 60 segments, and the in-band cue goes with the
    // file): read the segment the poller will read.
    writeFileSync(join(dir, "seg.ts"), (await http(`${s.originBase}/live/inband/v360/seg${n % 60}.ts`)).body);
    const out = spawnSync(CLI, ["cues", join(dir, "seg.ts")], { encoding: "utf8" }).stdout;
    if (/"kind":"out"/.test(out)) next = n;
  }
  assert.ok(next !== undefined, "the origin has another in-band cue ahead");
  // The cue's segment is about to be published: stop everything.
  for (;;) {
    const o = await origin();
    if (o.last >= next - 2) {
      assert.ok(o.last < next, `stopped in time (origin at ${o.last}, cue at ${next})`);
      break;
    }
    await sleep(200);
  }
  const before = await breaks();
  assert.ok(!before.some((e) => e.record.anchor_msn === next), "not registered before the stop");
  await s.restartRuntime(async () => {
    // Down until the cue's segment is older than the newest three.
    for (;;) {
      const o = await origin();
      if (o.last >= next + 4) break;
      await sleep(300);
    }
  });
  const back = await origin();
  assert.ok(back.last >= next + 4 && back.last - 20 < next, `the cue's segment ${next} is in the window (${back.last - 19}..${back.last}) but not among the newest three`);
  // Any request wakes the channel; its DO is a new instance.
  await http(`${s.base}/${ORG}/evict/master.m3u8`);
  let found;
  for (let i = 0; i < 40 && !found; i++) {
    found = (await breaks()).find((e) => e.record.anchor_msn === next);
    if (!found) await sleep(1000);
  }
  assert.ok(found, `the break at MSN ${next} was registered after the eviction: ${JSON.stringify((await api(s.base, "GET", `/api/orgs/${ORG}/channels/evict/breaks`)).json, (k, v) => (k === "pod" ? undefined : v)).slice(0, 1500)}`);
  assert.equal(found.record.source, "scte35");
});
