// Scale: 200 channels, each polled by its own Channel DO alarm at a 2 s
// cadence, all on this machine (origin, four workers, D1/KV/DO local).
// Reports polls, gaps between polls, poll time (cycle) and the CPU the
// runtime used; the figures go in the README. Checks that every channel
// keeps being polled and that breaks are found on all of them.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cpus } from "node:os";
import { startStack, api, channelConfig, ROOT, ORG } from "./stack.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const CHANNELS = Number(process.env.SCALE_CHANNELS ?? 200);
const CADENCE = 2000;
const RUN_S = Number(process.env.SCALE_SECONDS ?? 60);
let s;

before(async () => {
  s = await startStack({ ingest: false, dialects: [], cadenceMs: CADENCE, firstBreak: 4, breakEvery: 15, breakLen: 5 });
});
after(() => s?.stop());

/** CPU seconds (user + system) of every process in a process group. */
function groupCpuS(pgid) {
  const tick = 100; // USER_HZ on Linux
  let total = 0;
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(f[2]) === pgid) total += (Number(f[11]) + Number(f[12])) / tick;
    } catch {}
  }
  return total;
}

const pct = (xs, p) => {
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.floor((p / 100) * v.length))];
};

test(`${CHANNELS} channels polled at a ${CADENCE / 1000} s cadence`, async () => {
  const slugs = Array.from({ length: CHANNELS }, (_, i) => `ch${String(i).padStart(3, "0")}`);
  // Each PUT starts the channel's poller (the cron would too).
  for (let i = 0; i < slugs.length; i += 10) {
    const rs = await Promise.all(slugs.slice(i, i + 10).map((c) =>
      api(s.base, "PUT", `/api/orgs/${ORG}/channels/${c}`, channelConfig(s.originBase, c, { cadence_ms: CADENCE }))));
    for (const r of rs) assert.equal(r.status, 200, JSON.stringify(r.json));
  }
  // Warm up, then measure a window of RUN_S seconds.
  await sleep(10_000);
  const stats = async () => Promise.all(slugs.map((c) => api(s.base, "GET", `/api/orgs/${ORG}/channels/${c}/monitor`).then((r) => r.json)));
  const a = await stats();
  const cpu0 = groupCpuS(s.wrangler.pid);
  const originCpu0 = groupCpuS(s.origin.pid);
  const t0 = Date.now();
  await sleep(RUN_S * 1000);
  const b = await stats();
  const secs = (Date.now() - t0) / 1000;
  const cpu = groupCpuS(s.wrangler.pid) - cpu0;
  const originCpu = groupCpuS(s.origin.pid) - originCpu0;
  const polls = b.map((x, i) => x.stats.polls - a[i].stats.polls);
  const late = b.map((x, i) => x.stats.late - a[i].stats.late);
  const busy = b.map((x, i) => (x.stats.busy_ms_total - a[i].stats.busy_ms_total) / Math.max(1, polls[i]));
  const maxGap = b.map((x) => x.stats.max_gap_ms);
  const totalPolls = polls.reduce((x, y) => x + y, 0);
  const report = {
    channels: CHANNELS,
    cadence_ms: CADENCE,
    seconds: Math.round(secs),
    polls: totalPolls,
    polls_per_s: +(totalPolls / secs).toFixed(1),
    expected_polls_per_channel: +(secs / (CADENCE * 0.9 / 1000)).toFixed(1),
    polls_per_channel_min: Math.min(...polls),
    late_polls: late.reduce((x, y) => x + y, 0),
    late_fraction: +(late.reduce((x, y) => x + y, 0) / Math.max(1, totalPolls)).toFixed(4),
    channels_with_late_polls: late.filter((x) => x > 0).length,
    max_gap_ms_p50: pct(maxGap, 50),
    max_gap_ms_max: Math.max(...maxGap),
    poll_ms_mean: +(busy.reduce((x, y) => x + y, 0) / busy.length).toFixed(1),
    poll_ms_max: Math.max(...b.map((x) => x.stats.busy_ms_max)),
    runtime_cpu_cores: +(cpu / secs).toFixed(2),
    runtime_cpu_ms_per_poll: +((cpu * 1000) / Math.max(1, totalPolls)).toFixed(2),
    origin_cpu_cores: +(originCpu / secs).toFixed(2),
    machine_cores: cpus().length,
  };
  console.log(`monitor scale: ${JSON.stringify(report)}`);
  mkdirSync(join(ROOT, "test-artifacts"), { recursive: true });
  writeFileSync(join(ROOT, "test-artifacts/monitor-scale.json"), JSON.stringify(report, null, 2));
  // Every channel kept being polled: none starved, none stopped.
  for (const [i, x] of b.entries()) {
    assert.equal(x.running, true, `${slugs[i]}: poller running`);
    assert.ok(polls[i] >= 0.5 * report.expected_polls_per_channel, `${slugs[i]}: ${polls[i]} polls in ${secs}s`);
    assert.equal(x.stats.errors, 0, `${slugs[i]}: no failed polls (last: ${x.stats.last_error})`);
  }
  // Breaks found on every channel (one break every 30 s of origin time).
  const withBreaks = await Promise.all(slugs.map((c) => api(s.base, "GET", `/api/orgs/${ORG}/channels/${c}/breaks`).then((r) => (r.json.entries ?? []).length)));
  assert.ok(withBreaks.every((n) => n >= 1), `every channel registered breaks: ${withBreaks.filter((n) => n < 1).length} without`);
});
