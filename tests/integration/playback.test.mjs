// The playback path in the real runtime, over time: two viewers (one
// joining mid-break) reload SSAI and SGAI playlists of every variant while
// SCTE-35 breaks (two dialects) and a POST /cue break go by; the project's
// validator checks every live rule across all of them. Then every segment
// the playlists named is decoded by ffprobe, and the origin dies and comes
// back.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startStack, http, api, channelConfig, CLI, ORG } from "./stack.mjs";

let s;
before(async () => {
  s = await startStack({ firstBreak: 14 });
  // A channel whose SCTE-35 is only in the media (a TS PID, no playlist
  // marker): the edge holds back segments its poller has not examined.
  const r = await api(s.base, "PUT", `/api/orgs/${ORG}/channels/inband`, channelConfig(s.originBase, "inband", { cue_source: "inband" }));
  assert.equal(r.status, 200, JSON.stringify(r.json));
});
after(() => s && s.stop());

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const get = async (path) => {
  const r = await http(s.base + path);
  return { status: r.status, text: r.text(), headers: r.headers };
};

const VARIANTS = [
  ["v360", "bw=900000"],
  ["v540", "bw=1800000"],
];
const STREAMS = [
  ["news", "ssai"],
  ["news", "sgai"],
  ["daterange", "ssai"],
  ["manual", "ssai"],
  ["inband", "ssai"],
];

test("live rules hold across reloads, variants and a late joiner; ads and interstitials appear", async () => {
  const served = [];
  const seen = { adSegments: new Set(), interstitials: new Map(), cueBreak: false, inband: false };
  let joinerStarted = false;
  let cuePosted = false;
  const end = Date.now() + 62_000;
  while (Date.now() < end) {
    const tick = Date.now();
    for (const [ch, mode] of STREAMS) {
      for (const [v, q] of VARIANTS) {
        const viewers = joinerStarted ? ["A", "B"] : ["A"];
        for (const viewer of viewers) {
          const r = await get(`/${ORG}/${ch}/${v}/index.m3u8?${q}&mode=${mode}`);
          assert.equal(r.status, 200, `${ch} ${mode} ${v}: ${r.text}`);
          assert.equal(r.headers["content-type"], "application/vnd.apple.mpegurl");
          assert.match(r.headers["cache-control"], /max-age=1/);
          served.push({ group: `${ch}/${mode}/${v}`, viewer, playlist: r.text, pdt: true });
          for (const line of r.text.split("\n")) {
            if (line.includes("/media/demo/ads/")) {
              seen.adSegments.add(line);
              if (ch === "manual") seen.cueBreak = true;
              if (ch === "inband") seen.inband = true;
              // Viewer B joins in the middle of the first break.
              joinerStarted = true;
            }
            const m = line.match(/CLASS="com.apple.hls.interstitial".*X-ASSET-LIST="([^"]+)"/);
            if (m) seen.interstitials.set(m[1], line);
          }
        }
      }
    }
    // A manual break from POST /cue on the channel without origin markers.
    if (!cuePosted && joinerStarted) {
      const r = await http(`${s.base}/cue`, {
        method: "POST",
        headers: { Authorization: `Bearer ${s.apiKey}` },
        body: JSON.stringify({ channel: `${ORG}/manual`, type: "start", duration: 15 }),
      });
      assert.equal(r.status, 201, r.text());
      cuePosted = true;
    }
    await sleep(Math.max(0, 1000 - (Date.now() - tick)));
  }
  const dir = mkdtempSync(join(tmpdir(), "cf-ssai-validate-"));
  const file = join(dir, "served.jsonl");
  writeFileSync(file, served.map((x) => JSON.stringify(x)).join("\n"));
  const v = spawnSync(CLI, ["validate"], { input: served.map((x) => JSON.stringify(x)).join("\n"), encoding: "utf8" });
  assert.equal(v.status, 0, `validator found violations (${file}):\n${v.stdout.slice(0, 4000)}`);
  assert.ok(seen.adSegments.size >= 10, `ad segments were spliced (${seen.adSegments.size})`);
  assert.ok(seen.cueBreak, "the POST /cue break was spliced");
  assert.ok(seen.inband, "the in-band SCTE-35 break was spliced");
  assert.ok(seen.interstitials.size >= 1, "SGAI playlists carried an interstitial");

  // The asset list of each interstitial, and the ad playlists it names.
  for (const [url] of seen.interstitials) {
    const al = await get(`${url}?_HLS_primary_id=test&_HLS_start_offset=0`);
    assert.equal(al.status, 200, al.text);
    const doc = JSON.parse(al.text);
    assert.ok(doc.ASSETS.length >= 2, al.text);
    for (const a of doc.ASSETS) {
      assert.ok(a.DURATION > 0);
      const m = await get(a.URI);
      assert.equal(m.status, 200);
      assert.match(m.text, /#EXT-X-STREAM-INF:BANDWIDTH=/);
    }
    // A viewer joining 12 s into the break skips the first ad (9.6 s).
    const late = JSON.parse((await get(`${url}?_HLS_start_offset=12`)).text);
    assert.equal(late.ASSETS.length, doc.ASSETS.length - 1);
  }

  // Every segment a served playlist named decodes (content, ad, slate).
  const uris = new Set();
  for (const x of served.filter((x) => x.group.includes("ssai"))) {
    for (const line of x.playlist.split("\n")) if (line.startsWith("http")) uris.add(line);
  }
  const pick = [...uris].filter((u) => u.includes("/media/")).concat([...uris].filter((u) => !u.includes("/media/")).slice(-6));
  assert.ok(pick.some((u) => u.includes("/slates/")), "slate segments were served");
  for (const u of pick.slice(0, 60)) {
    const r = await http(u);
    assert.equal(r.status, 200, u);
    const f = join(dir, "seg.ts");
    writeFileSync(f, r.body);
    const p = spawnSync("ffprobe", ["-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", f], { encoding: "utf8" });
    assert.equal(p.status, 0, `${u}: ${p.stderr}`);
    assert.equal(p.stderr.trim(), "", `${u}: ${p.stderr}`);
    assert.match(p.stdout, /video/, u);
    assert.match(p.stdout, /audio/, u);
  }
});

test("master playlists come back through us, every attribute kept", async () => {
  const r = await get(`/${ORG}/news/master.m3u8?mode=sgai`);
  assert.equal(r.status, 200);
  assert.match(r.text, /#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS="avc1.42c01e,mp4a.40.2",RESOLUTION=640x360\n\/demo\/news\/v360\/index.m3u8\?bw=900000&codecs=[^&]+&mode=sgai&sid=s1-[0-9a-f-]+/);
});

test("origin down → 502, then recovery; ads failing → content", async () => {
  // Past the shared-playlist cache (half a target duration) of the last test.
  await sleep(1100);
  const down = await http(`${s.originBase}/ctl/none/down?secs=3`, { method: "POST" });
  assert.equal(down.status, 200);
  const r = await get(`/${ORG}/manual/v360/index.m3u8?bw=900000`);
  assert.equal(r.status, 502, r.text);
  assert.match(JSON.parse(r.text).error, /origin/);
  assert.ok(!r.text.includes("#EXTINF"), "never a fake playlist");
  await sleep(3500);
  const ok = await get(`/${ORG}/manual/v360/index.m3u8?bw=900000`);
  assert.equal(ok.status, 200);
  assert.match(ok.text, /#EXTINF/);
  // A channel whose org has no ads and no slate: breaks keep the content.
  await api(s.base, "PUT", "/api/orgs/bare", { name: "Bare" });
  const cfg = (await api(s.base, "GET", `/api/orgs/${ORG}/channels/news`)).json.config;
  assert.equal((await api(s.base, "PUT", "/api/orgs/bare/channels/news", cfg)).status, 200);
  const b = await http(`${s.base}/bare/news/v360/index.m3u8?bw=900000`);
  assert.equal(b.status, 200);
  assert.ok(!b.text().includes("/media/"), "no ad or slate: content");
});

test("LL-HLS blocking reload: _HLS_msn reaches the origin, which holds the request until that segment exists", async () => {
  const path = `/${ORG}/news/v360/index.m3u8?bw=900000&mode=ssai`;
  const lastMsn = (text) => Number(text.match(/#EXT-X-MEDIA-SEQUENCE:(\d+)/)[1]) + (text.match(/#EXTINF/g) ?? []).length - 1;
  const now = await get(path);
  assert.equal(now.status, 200);
  // Two segments ahead: at least one whole segment duration away.
  const next = lastMsn(now.text) + 2;
  const t0 = Date.now();
  const held = await get(`${path}&_HLS_msn=${next}`);
  const ms = Date.now() - t0;
  assert.equal(held.status, 200, held.text);
  assert.ok(lastMsn(held.text) >= next, `the playlist holds MSN ${next}: ${lastMsn(held.text)}`);
  assert.ok(ms >= 1500, `held until the segment was published (${ms} ms), not answered from a cache`);
  for (const bad of ["_HLS_part=1", "_HLS_msn=abc", "_HLS_msn=5&_HLS_skip=NO"]) {
    const r = await get(`${path}&${bad}`);
    assert.equal(r.status, 400, `${bad}: ${r.text}`);
  }
});
