// Load benchmark of the playback path in the local runtime (workerd):
// wrk against a spliced SSAI variant (inside a break), an SGAI variant and
// a pass-through variant (a channel with no breaks), same origin.
// Run: scripts/bench-load.sh   (prints a markdown table)
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { writeFileSync } from "node:fs";
import { startStack, http, api, channelConfig, jwt, sessionToken, ORG } from "./stack.mjs";

// A tracking endpoint that counts beacons (for the beacons/s figure).
let beaconHits = 0;
const tracker = createServer((req, res) => {
  beaconHits++;
  res.writeHead(200).end("ok");
});
await new Promise((r) => tracker.listen(0, "127.0.0.1", r));
const T = `http://127.0.0.1:${tracker.address().port}`;
const tracking = { impression: [`${T}/imp`], start: [`${T}/start`] };
const s = await startStack({ firstBreak: 2, breakEvery: 40, breakLen: 30, tracking: { ad1: tracking, ad2: tracking } });
await api(s.base, "PUT", `/api/orgs/${ORG}/channels/tracked`, channelConfig(s.originBase, "cue-out", { proxy_ad_segments: true }));
// The news and manual channels again without the location's playlist cache
// (`cache_max_age_s: 0`; a client cannot skip it): the uncached rows.
await api(s.base, "PUT", `/api/orgs/${ORG}/channels/news-nocache`, channelConfig(s.originBase, "cue-out", { mode: "auto", cache_max_age_s: 0 }));
await api(s.base, "PUT", `/api/orgs/${ORG}/channels/manual-nocache`, channelConfig(s.originBase, "none", { cache_max_age_s: 0 }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// wrk runs asynchronously: the loopback ad server and tracking endpoint
// live in this process and must keep answering while it runs.
const wrk = (args) => new Promise((resolve) => {
  const p = spawn("wrk", args);
  let stdout = "";
  p.stdout.on("data", (d) => (stdout += d));
  p.on("close", () => resolve({ stdout }));
});
// Wait until the news channel (both copies) is inside its break.
for (let i = 0; i < 60; i++) {
  const inBreak = async (slug) => (await http(`${s.base}/${ORG}/${slug}/v360/index.m3u8?bw=900000&mode=ssai`)).text().includes("/media/demo/ads/");
  if ((await inBreak("news")) && (await inBreak("news-nocache"))) break;
  await sleep(1000);
}
const rows = [];
// Each twice: as players get it (the location's shared-playlist cache, ≤
// half a target duration), and with the cache bypassed (every request
// fetches the origin, reads KV and splices).
for (const [name, path] of [
  ["SSAI, 6 segments, inside a break", `/${ORG}/news/v360/index.m3u8?bw=900000&mode=ssai`],
  ["SGAI, same window", `/${ORG}/news/v360/index.m3u8?bw=900000&mode=sgai`],
  ["pass-through (no break)", `/${ORG}/manual/v360/index.m3u8?bw=900000`],
  ["SSAI, inside a break, cache bypassed", `/${ORG}/news-nocache/v360/index.m3u8?bw=900000&mode=ssai`],
  ["SGAI, cache bypassed", `/${ORG}/news-nocache/v360/index.m3u8?bw=900000&mode=sgai`],
  ["pass-through, cache bypassed", `/${ORG}/manual-nocache/v360/index.m3u8?bw=900000`],
]) {
  const r = await wrk(["-t1", "-c8", "-d10s", "--latency", s.base + path]);
  const out = r.stdout;
  const p = (q) => (out.match(new RegExp(`\\s${q}%\\s+([\\d.]+\\w+)`)) || [])[1];
  const rps = (out.match(/Requests\/sec:\s+([\d.]+)/) || [])[1];
  rows.push(`| ${name} | ${p(50)} | ${p(99)} | ${rps} |`);
}
console.log("| playlist | p50 | p99 | requests/s |\n|---|---|---|---|\n" + rows.join("\n"));

// Decision service p50/p99: POST /api/orgs/demo/decision (JWT check in the
// manifest worker, service binding to the decision worker), three ways.
const adServer = createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "application/xml" }).end(`<VAST version="4.2">
 <Ad id="a1" sequence="1"><InLine><AdSystem>bench</AdSystem><Impression>${T}/imp</Impression><Creatives><Creative id="ad1"><Linear><Duration>00:00:09.600</Duration><MediaFiles><MediaFile delivery="progressive" type="video/mp4">${T}/a.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad>
 <Ad id="a2" sequence="2"><InLine><AdSystem>bench</AdSystem><Impression>${T}/imp</Impression><Creatives><Creative id="ad2"><Linear><Duration>00:00:15.360</Duration><MediaFiles><MediaFile delivery="progressive" type="video/mp4">${T}/b.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad>
</VAST>`);
});
await new Promise((r) => adServer.listen(0, "127.0.0.1", r));
const adTag = `http://127.0.0.1:${adServer.address().port}/vast?cb=[CACHEBUSTING]`;
await api(s.base, "PUT", `/api/orgs/${ORG}/channels/dec-vast`, channelConfig(s.originBase, "none", { scte35_enabled: false, vast_urls: [adTag], decision_cache_s: 0, vast_cache_s: 0 }));
await api(s.base, "PUT", `/api/orgs/${ORG}/channels/dec-vastcache`, channelConfig(s.originBase, "none", { scte35_enabled: false, vast_urls: [adTag], decision_cache_s: 0, vast_cache_s: 30 }));
const drows = [];
for (const [name, channel, unique] of [
  ["decision, KV-cached pod", "manual", false],
  ["decision, library (no cache)", "capless", true],
  ["decision, VAST from a loopback ad server (no cache)", "dec-vast", true],
  ["decision, VAST response cached in the isolate", "dec-vastcache", true],
]) {
  if (channel === "capless") await api(s.base, "PUT", `/api/orgs/${ORG}/channels/capless`, channelConfig(s.originBase, "none", { scte35_enabled: false, decision_cache_s: 0 }));
  const lua = "/tmp/cf-ssai-decision.lua";
  // API calls are rate limited per credential (API_LIMITER): the load is
  // spread over 64 credentials, as 64 operators' tools would be.
  const now = Math.floor(Date.now() / 1000);
  const tokens = Array.from({ length: 64 }, (_, i) => `"${jwt({ sub: `bench-${i}`, exp: now + 3600, iat: now, aud: "cf-ssai", org: ORG })}"`);
  writeFileSync(lua, `tokens = {${tokens.join(",")}}
counter = 0
request = function()
  counter = counter + 1
  local b = '{"channel":"${channel}","break_id":"${unique ? "b' .. counter .. 'x' .. math.random(1000000000) .. '" : "bench"}","duration_s":30,"cadence_ms":1920}'
  return wrk.format("POST", "/api/orgs/${ORG}/decision", {["Authorization"]="Bearer " .. tokens[(counter % #tokens) + 1], ["Content-Type"]="application/json"}, b)
end
`);
  const r = await wrk(["-t1", "-c4", "-d10s", "--latency", "-s", lua, s.base]);
  const out = r.stdout;
  const p = (q) => (out.match(new RegExp(`\\s${q}%\\s+([\\d.]+\\w+)`)) || [])[1];
  const rps = (out.match(/Requests\/sec:\s+([\d.]+)/) || [])[1];
  const non2xx = (out.match(/Non-2xx or 3xx responses: (\d+)/) || [])[1] ?? 0;
  drows.push(`| ${name} | ${p(50)} | ${p(99)} | ${rps} | ${non2xx} |`);
}
adServer.close();
console.log("\n| decision | p50 | p99 | requests/s | non-2xx |\n|---|---|---|---|---|\n" + drows.join("\n"));

// Beacons/s through the local queue consumer: every request for a proxied
// first ad segment with a new session enqueues an impression and a start.
let adUrl = null;
for (let i = 0; i < 60 && !adUrl; i++) {
  const t = (await http(`${s.base}/${ORG}/tracked/v360/index.m3u8?bw=900000&sid=${sessionToken(`${ORG}/tracked`)}`)).text();
  adUrl = t.split("\n").find((l) => /\/ad\/[^/]+\/0\/\d+\/0\./.test(l));
  if (!adUrl) await sleep(1000);
}
if (adUrl) {
  const lua = "/tmp/cf-ssai-beacon.lua";
  // Signed sessions (made-up sids fire nothing): one new session per request.
  const sids = Array.from({ length: 50_000 }, () => `"${sessionToken(`${ORG}/tracked`)}"`);
  // Beacons are rate limited per client address and channel
  // (BEACON_LIMITER); each request claims its own address, which the local
  // runtime passes through as CF-Connecting-IP (Cloudflare would not).
  writeFileSync(lua, `sids = {${sids.join(",")}}\ncounter = 0\nrequest = function()\n  counter = counter + 1\n  return wrk.format("GET", "${adUrl.split("?")[0]}?sid=" .. sids[(counter % #sids) + 1], {["CF-Connecting-IP"]="10.9." .. (counter % 250) .. "." .. (counter % 251)})\nend\n`);
  const before = beaconHits;
  const t0 = Date.now();
  const r = await wrk(["-t1", "-c4", "-d10s", "-s", lua, s.base]);
  const sent = Number((r.stdout.match(/(\d+) requests in/) || [])[1] || 0) * 2;
  // Drain: wait until the consumer has fired what was enqueued.
  let last = -1;
  while (beaconHits - before < sent && beaconHits !== last) {
    last = beaconHits;
    await sleep(6000);
  }
  const secs = (Date.now() - t0) / 1000;
  console.log(`\nbeacons: ${beaconHits - before} of ${sent} enqueued fired in ${secs.toFixed(1)} s = ${((beaconHits - before) / secs).toFixed(0)} beacons/s end to end (enqueue, batch of ≤100 / 5 s, fire, dedupe in KV)`);
}
tracker.close();
s.stop();
setTimeout(() => process.exit(0), 2500);
