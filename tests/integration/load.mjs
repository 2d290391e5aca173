// Load benchmark of the playback path in the local runtime (workerd):
// wrk against a spliced SSAI variant (inside a break), an SGAI variant and
// a pass-through variant (a channel with no breaks), same origin.
// Run: scripts/bench-load.sh   (prints a markdown table)
import { spawnSync } from "node:child_process";
import { startStack, http, ORG } from "./stack.mjs";

const s = await startStack({ firstBreak: 2, breakEvery: 40, breakLen: 30 });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Wait until the news channel is inside its break.
for (let i = 0; i < 60; i++) {
  const t = (await http(`${s.base}/${ORG}/news/v360/index.m3u8?bw=900000&mode=ssai`)).text();
  if (t.includes("/media/demo/ads/")) break;
  await sleep(1000);
}
const rows = [];
for (const [name, path] of [
  ["SSAI, 6 segments, inside a break", `/${ORG}/news/v360/index.m3u8?bw=900000&mode=ssai`],
  ["SGAI, same window", `/${ORG}/news/v360/index.m3u8?bw=900000&mode=sgai`],
  ["pass-through (no break)", `/${ORG}/manual/v360/index.m3u8?bw=900000`],
]) {
  const r = spawnSync("wrk", ["-t1", "-c8", "-d10s", "--latency", s.base + path], { encoding: "utf8" });
  const out = r.stdout;
  const p = (q) => (out.match(new RegExp(`\\s${q}%\\s+([\\d.]+\\w+)`)) || [])[1];
  const rps = (out.match(/Requests\/sec:\s+([\d.]+)/) || [])[1];
  rows.push(`| ${name} | ${p(50)} | ${p(99)} | ${rps} |`);
}
console.log("| playlist | p50 | p99 | requests/s |\n|---|---|---|---|\n" + rows.join("\n"));
s.stop();
setTimeout(() => process.exit(0), 2500);
