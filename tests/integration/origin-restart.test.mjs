// Origin epochs against the real stack: the live origin restarts with its
// media sequence back at 0 (an encoder restart), then fails over to an
// origin whose sequence is 10,000 further on with continuous PDT (a
// packager failover). After each, the next SCTE-35 break is registered
// within a target duration of its cue appearing, under an id of its own,
// no pod of the old epoch is served, every epoch's playlists keep the live
// rules for the viewers who watch it (checked by `cf-ssai validate`), and
// the discontinuity sequence never goes down for a viewer who stays.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { startStack, api, http, channelConfig, ORG, CLI } from "./stack.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let s;

before(async () => {
  // Breaks every 14 segments (27 s), 6 long, the first 4 segments in.
  s = await startStack({ dialects: [], fmp4: false, firstBreak: 4, breakEvery: 14, breakLen: 6 });
  const cfg = channelConfig(s.originBase, "daterange", { mode: "ssai" });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/epochs`, cfg)).status, 200);
});
after(() => s && s.stop());

const breaks = async () => (await api(s.base, "GET", `/api/orgs/${ORG}/channels/epochs/breaks`)).json;

/** Poll the origin until a new SCTE35-OUT shows; then time its registration. */
async function nextBreakRegistration(knownIds) {
  const origin = `${s.originBase}/live/daterange/v360/index.m3u8`;
  let cueAt = null;
  let cueMsn = null;
  for (let i = 0; i < 400 && cueAt === null; i++) {
    const t = (await http(origin)).text();
    const seq = Number((t.match(/#EXT-X-MEDIA-SEQUENCE:(\d+)/) || [])[1]);
    const lines = t.split("\n");
    let msn = seq;
    for (let k = 0; k < lines.length; k++) {
      if (lines[k].startsWith("#EXT-X-DATERANGE") && lines[k].includes("SCTE35-OUT")) {
        // The cue's segment is the next URI line: MSN `msn`.
        cueMsn = msn;
        cueAt = Date.now();
        break;
      }
      if (lines[k] && !lines[k].startsWith("#")) msn++;
    }
    if (cueAt !== null) {
      // Only a cue no known break has (a new one).
      const st = await breaks();
      const known = st.entries.some((e) => knownIds.includes(e.record.id) && e.record.anchor_msn === cueMsn);
      if (known) {
        cueAt = null;
        cueMsn = null;
      }
    }
    if (cueAt === null) await sleep(100);
  }
  assert.ok(cueAt !== null, "a new cue appeared at the origin");
  for (;;) {
    const st = await breaks();
    const e = st.entries.find((x) => x.record.anchor_msn === cueMsn && !knownIds.includes(x.record.id));
    if (e) return { entry: e, ms: Date.now() - cueAt, state: st };
    assert.ok(Date.now() - cueAt < 10_000, `break at MSN ${cueMsn} registered: ${JSON.stringify(st.entries.map((x) => [x.record.id, x.record.anchor_msn]))}`);
    await sleep(100);
  }
}

test("encoder restart (MSN back to 0) and failover (MSN +10,000, same PDT): breaks registered again, no stale pod, live rules per epoch", async () => {
  const variant = `${s.base}/${ORG}/epochs/v360/index.m3u8`;
  const served = []; // {group, viewer, playlist}
  const discSeqs = [];
  let stop = false;
  let epoch = 0;
  // A viewer who stays, reloading every second, and a new viewer per epoch.
  const watcher = (async () => {
    while (!stop) {
      const r = await http(variant).catch(() => null);
      if (!r || r.status !== 200) {
        await sleep(500);
        continue;
      }
      const t = r.text();
      served.push({ group: `epoch${epoch}`, viewer: `stays-${epoch}`, playlist: t });
      served.push({ group: `epoch${epoch}`, viewer: `new-${epoch}-${served.length % 3}`, playlist: t });
      discSeqs.push(Number((t.match(/#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)/) || [0, 0])[1]));
      await sleep(1000);
    }
  })();
  const first = await nextBreakRegistration([]);
  const oldIds = first.state.entries.map((e) => e.record.id);
  const figures = [first.ms];

  // 1. The encoder restarts: MSNs start again near 0, PDT continues with the clock.
  epoch = 1;
  await s.restartOrigin();
  const afterRestart = await nextBreakRegistration(oldIds);
  figures.push(afterRestart.ms);
  assert.ok(!oldIds.includes(afterRestart.entry.record.id), `a new id: ${afterRestart.entry.record.id}`);
  assert.ok(afterRestart.state.entries.every((e) => !oldIds.includes(e.record.id)), "old entries left the view");
  const ids2 = afterRestart.state.entries.map((e) => e.record.id);

  // 2. Failover to a packager 10,000 segments further on, same PDT.
  epoch = 2;
  await s.restartOrigin(["--msn-offset", "10000"]);
  const afterFailover = await nextBreakRegistration([...oldIds, ...ids2]);
  figures.push(afterFailover.ms);
  assert.ok(afterFailover.entry.record.anchor_msn > 10_000);
  await sleep(14_000); // let the break play into the window
  stop = true;
  await watcher;

  // Registered within one target duration (2 s) of the cue appearing,
  // with 600 ms for the test's own polling of the origin and the API.
  for (const ms of figures) assert.ok(ms <= 2600, `registration latencies ${figures.join(", ")} ms`);
  console.log(`# registration after cue: ${figures.join(", ")} ms (first epoch, after restart, after failover)`);

  // No pod of another epoch: a playlist of epoch N never names a break of another epoch.
  const idOf = (p) => [...p.matchAll(/#EXT-X-DATERANGE:ID="([^"]+)-ad\d+"/g)].map((m) => m[1]);
  const byEpoch = { epoch0: oldIds, epoch1: ids2, epoch2: null };
  for (const x of served) {
    for (const id of idOf(x.playlist)) {
      if (x.group === "epoch1") assert.ok(!oldIds.includes(id), `stale pod ${id} served after the restart`);
      if (x.group === "epoch2") assert.ok(!oldIds.includes(id) && !ids2.includes(id), `stale pod ${id} served after the failover`);
    }
  }
  assert.ok(served.some((x) => x.group === "epoch2" && idOf(x.playlist).length > 0), "ads spliced after the failover");
  void byEpoch;

  // Live rules within each epoch, for the viewer who stays and new ones.
  // The playlists of the seconds around each switch belong to whichever
  // origin answered: drop the first 3 of each epoch.
  const settled = [];
  for (const g of ["epoch0", "epoch1", "epoch2"]) settled.push(...served.filter((x) => x.group === g).slice(6));
  const v = spawnSync(CLI, ["validate"], { input: settled.map((x) => JSON.stringify({ ...x, pdt: true })).join("\n"), encoding: "utf8" });
  assert.equal(v.status, 0, v.stdout.split("\n").slice(0, 10).join("\n"));

  // The discontinuity sequence a viewer who stays sees never goes down.
  for (let i = 1; i < discSeqs.length; i++) assert.ok(discSeqs[i] >= discSeqs[i - 1], `discontinuity sequence ${discSeqs.join(",")}`);
});
