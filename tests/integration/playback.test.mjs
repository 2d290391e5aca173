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
  assert.match(r.text, /#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS="avc1.42c01e,mp4a.40.2",RESOLUTION=640x360\n\/demo\/news\/v360\/index.m3u8\?bw=900000&codecs=[^&]+&mode=sgai&sid=s2-[0-9a-z-]+/);
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

/**
 * Per MSN of a served playlist: its discontinuity number (the sequence at
 * that segment) and whether it is ours (ad, slate, blank subtitles).
 */
function shape(text) {
  let msn = Number(text.match(/#EXT-X-MEDIA-SEQUENCE:(\d+)/)?.[1] ?? 0);
  let disc = Number(text.match(/#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)/)?.[1] ?? 0);
  const out = new Map();
  let pendingDisc = false;
  for (const line of text.split("\n")) {
    if (line === "#EXT-X-DISCONTINUITY") pendingDisc = true;
    else if (line && !line.startsWith("#")) {
      if (pendingDisc) disc++;
      out.set(msn, { disc, ours: /\/media\/demo\/(ads|slates)\/|\/blank\.vtt/.test(line), uri: line });
      pendingDisc = false;
      msn++;
    }
  }
  return out;
}

/**
 * SGAI on a demuxed channel mid-break: the interstitial is the same in
 * every rendition, and its assets come in the primary's shape (video
 * variants naming an audio group).
 */
async function checkSgai(renditions) {
  const sgai = {};
  const text = {};
  // The renditions' windows must be the same window to compare: fetched
  // together, and again when a segment came out between them (at a
  // break's end the interstitial leaves a window that slid past it).
  const windowOf = (t) => `${t.match(/#EXT-X-MEDIA-SEQUENCE:(\d+)/)?.[1]}+${(t.match(/#EXTINF/g) ?? []).length}`;
  for (let attempt = 0; attempt < 5; attempt++) {
    const names = Object.keys(renditions);
    const got = await Promise.all(names.map((n) => get(renditions[n].replace("mode=ssai", "mode=sgai"))));
    names.forEach((n, i) => {
      text[n] = got[i].text;
      sgai[n] = text[n].match(/#EXT-X-DATERANGE:[^\n]*com\.apple\.hls\.interstitial[^\n]*/g) ?? [];
    });
    if (new Set(names.map((n) => windowOf(text[n]))).size === 1) break;
    await sleep(250);
  }
  // (A playlist of the last second may come from this location's cache.)
  if (sgai.v360.length === 0) return false;
  for (const name of Object.keys(renditions)) assert.deepEqual(sgai[name], sgai.v360, `${name}: same interstitials as v360`);
  const asset = sgai.v360[0].match(/X-ASSET-LIST="([^"]+)"/)[1];
  assert.match(asset, /tracks=demuxed/);
  const doc = JSON.parse((await get(asset)).text);
  assert.ok(doc.ASSETS.length > 0);
  const adMaster = (await get(doc.ASSETS[0].URI)).text;
  assert.match(adMaster, /#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="ad-audio"/, adMaster);
  assert.match(adMaster, /#EXT-X-STREAM-INF:[^\n]*AUDIO="ad-audio"/, adMaster);
  return true;
}

test("demuxed channel: video, both audio languages and subtitles keep the live rules and stay aligned through a break", async () => {
  const master = await get(`/${ORG}/news-demuxed/master.m3u8?mode=ssai`);
  assert.equal(master.status, 200, master.text);
  const uri = (re) => {
    const m = master.text.match(re);
    assert.ok(m, `${re} in\n${master.text}`);
    return m[1];
  };
  const renditions = {
    v360: uri(/\n(\/demo\/news-demuxed\/v360\/index\.m3u8\?[^\n]+)/),
    v540: uri(/\n(\/demo\/news-demuxed\/v540\/index\.m3u8\?[^\n]+)/),
    "aud-en": uri(/URI="(\/demo\/news-demuxed\/aud-en\/index\.m3u8\?[^"]+)"/),
    "aud-es": uri(/URI="(\/demo\/news-demuxed\/aud-es\/index\.m3u8\?[^"]+)"/),
    "sub-en": uri(/URI="(\/demo\/news-demuxed\/sub-en\/index\.m3u8\?[^"]+)"/),
  };
  assert.match(renditions.v360, /[?&]k=video(&|$)/, "a variant with an audio group is video only");
  assert.match(renditions["aud-es"], /[?&]k=audio(&|$)/);
  assert.match(renditions["sub-en"], /[?&]k=subtitles(&|$)/);
  const served = [];
  const seen = {};
  let sawBreak = false;
  let returned = false;
  let sgaiChecked = false;
  const end = Date.now() + 150_000;
  while (Date.now() < end && !returned) {
    const tick = Date.now();
    const shapes = {};
    for (const [name, path] of Object.entries(renditions)) {
      const r = await get(path);
      assert.equal(r.status, 200, `${name}: ${r.text}`);
      served.push({ group: `demuxed/${name}`, viewer: "A", playlist: r.text, pdt: true });
      shapes[name] = shape(r.text);
      for (const [, seg] of shapes[name]) if (seg.ours) (seen[name] ??= new Set()).add(seg.uri);
    }
    // Every rendition has the same MSNs spliced with the same
    // discontinuity numbers (compared where their windows overlap: the
    // requests of one tick may straddle a new segment).
    for (const [name, sh] of Object.entries(shapes)) {
      for (const [msn, seg] of sh) {
        const v = shapes.v360.get(msn);
        if (!v) continue;
        assert.equal(seg.ours, v.ours, `MSN ${msn}: ${name} ${seg.uri} vs v360 ${v.uri}`);
        assert.equal(seg.disc, v.disc, `MSN ${msn}: ${name} discontinuity ${seg.disc} vs v360 ${v.disc}`);
      }
    }
    const inBreak = [...shapes.v360.values()].some((x) => x.ours);
    sawBreak ||= inBreak;
    if (inBreak && !sgaiChecked) sgaiChecked = await checkSgai(renditions);
    returned = sawBreak && !inBreak && [...shapes.v360.values()].length > 0;
    await sleep(Math.max(0, 1000 - (Date.now() - tick)));
  }
  assert.ok(sawBreak, "a break was spliced into the demuxed channel");
  assert.ok(sgaiChecked, "the break was announced as an interstitial in SGAI");
  assert.ok(returned, "and it ended in every rendition");
  const v = spawnSync(CLI, ["validate"], { input: served.map((x) => JSON.stringify(x)).join("\n"), encoding: "utf8" });
  assert.equal(v.status, 0, `validator found violations:\n${v.stdout.slice(0, 4000)}`);
  // Each rendition got its kind of the ad: video only, audio only (one
  // ad audio for both languages), blank WebVTT for the subtitles.
  const dir = mkdtempSync(join(tmpdir(), "cf-ssai-demuxed-"));
  const probe = async (u) => {
    const r = await http(u.startsWith("http") ? u : s.base + u);
    assert.equal(r.status, 200, u);
    const f = join(dir, "seg");
    writeFileSync(f, r.body);
    const p = spawnSync("ffprobe", ["-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", f], { encoding: "utf8" });
    assert.equal(p.status, 0, `${u}: ${p.stderr}`);
    // A TS lists its streams once more under its program.
    return [...new Set(p.stdout.split("\n").filter(Boolean))].sort().join(",");
  };
  for (const name of ["v360", "v540"]) {
    for (const u of [...seen[name]].slice(0, 3)) assert.equal(await probe(u), "video", `${name}: ${u}`);
  }
  for (const name of ["aud-en", "aud-es"]) {
    for (const u of [...seen[name]].slice(0, 3)) assert.equal(await probe(u), "audio", `${name}: ${u}`);
  }
  assert.deepEqual([...seen["aud-en"]].sort(), [...seen["aud-es"]].sort(), "both languages get the ad's audio");
  assert.deepEqual([...seen["sub-en"]], ["/blank.vtt"], "subtitles are blank during the ads");
  const blank = await http(`${s.base}/blank.vtt`);
  assert.equal(blank.status, 200);
  assert.match(blank.headers["content-type"], /text\/vtt/);
  assert.equal(blank.text().trim(), "WEBVTT");
});

/**
 * An LL-HLS playlist as a client reads it: whole segments (MSN, ours,
 * parts before them, discontinuity before them), then the segment in
 * progress (its parts, whether a discontinuity precedes them, a hint).
 */
function llRead(text) {
  let msn = Number(text.match(/#EXT-X-MEDIA-SEQUENCE:(\d+)/)?.[1] ?? 0);
  const segs = [];
  let parts = [];
  let disc = false;
  let discBeforeParts = false;
  for (const line of text.split("\n")) {
    if (line === "#EXT-X-DISCONTINUITY") disc = true;
    else if (line.startsWith("#EXT-X-PART:")) {
      if (parts.length === 0) discBeforeParts = disc;
      parts.push(line.match(/URI="([^"]+)"/)[1]);
    } else if (line && !line.startsWith("#")) {
      segs.push({ msn, ours: /\/media\/demo\/(ads|slates)\//.test(line), parts, disc });
      parts = [];
      disc = false;
      msn++;
    }
  }
  const hint = /#EXT-X-PRELOAD-HINT/.test(text);
  return { segs, next: msn, parts, discFirst: parts.length ? discBeforeParts : disc, hint, lastMsn: msn - 1 };
}

test("LL-HLS channel: blocking part reloads keep the live rules; parts outside the break, whole ad segments inside, never a part an ad contradicts", async () => {
  const master = await get(`/${ORG}/news-ll/master.m3u8?mode=ssai`);
  assert.equal(master.status, 200, master.text);
  const variants = [...master.text.matchAll(/\n(\/demo\/news-ll\/v\d+\/index\.m3u8\?[^\n]+)/g)].map((m) => m[1]);
  assert.equal(variants.length, 2, master.text);
  const served = [];
  // MSN → { content: parts or a hint served, ours: served as an ad }.
  const ledger = new Map();
  const seen = { ours: 0, partsBefore: 0, partsAfter: 0, withheld: 0, held: [], missed: 0 };
  const state = variants.map(() => ({ directive: "" }));
  let sawBreak = false;
  let returned = false;
  const end = Date.now() + 150_000;
  const check = (name, text) => {
    assert.ok(!/CAN-SKIP-UNTIL/.test(text), `${name}: delta updates are never offered`);
    if (/#EXT-X-PART:/.test(text)) assert.match(text, /#EXT-X-PART-INF:PART-TARGET=/);
    const r = llRead(text);
    let prevOurs = false;
    for (const sg of r.segs) {
      const e = ledger.get(sg.msn) ?? { content: false, ours: false };
      if (sg.ours && sg.parts.length) assert.fail(`${name}: content parts before ad segment ${sg.msn}`);
      e.content ||= sg.parts.length > 0;
      e.ours ||= sg.ours;
      assert.ok(!(e.content && e.ours), `${name}: MSN ${sg.msn} was served as content parts and as an ad\n${text}`);
      ledger.set(sg.msn, e);
      prevOurs = sg.ours;
    }
    if (prevOurs && !r.parts.length && !r.hint) assert.ok(!/#EXT-X-PART:/.test(text), `${name}: parts listed while the live edge is an ad\n${text}`);
    if (r.parts.length || r.hint) {
      const e = ledger.get(r.next) ?? { content: false, ours: false };
      e.content = true;
      assert.ok(!e.ours, `${name}: parts of MSN ${r.next} after it was an ad`);
      ledger.set(r.next, e);
      if (prevOurs) assert.ok(r.discFirst, `${name}: parts after an ad without a discontinuity\n${text}`);
    }
    return r;
  };
  while (Date.now() < end && !returned) {
    // One LL client per variant: each asks for the next part (or, when the
    // playlist lists no part, the next whole segment), as hls.js does.
    const results = await Promise.all(
      variants.map(async (path, i) => {
        const t0 = Date.now();
        const r = await get(path + state[i].directive);
        return { i, r, ms: Date.now() - t0, asked: state[i].directive };
      }),
    );
    let inBreak = false;
    for (const { i, r, ms, asked } of results) {
      assert.equal(r.status, 200, `${variants[i]}${asked}: ${r.text}`);
      served.push({ group: `ll/${i}`, viewer: "blocking", playlist: r.text, pdt: true });
      const x = check(variants[i], r.text);
      // How long a reload answered with parts waited (inside a break a
      // reload waits for a whole ad segment by design).
      if (asked && (x.parts.length || x.hint)) seen.held.push(ms);
      const askedMsn = Number(asked.match(/_HLS_msn=(\d+)/)?.[1] ?? -1);
      const askedPart = Number(asked.match(/_HLS_part=(\d+)/)?.[1] ?? -1);
      if (askedMsn >= 0 && !(x.lastMsn >= askedMsn || (x.next === askedMsn && x.parts.length > askedPart))) seen.missed++;
      const last = x.segs[x.segs.length - 1];
      inBreak ||= x.segs.some((s) => s.ours);
      if (last?.ours && !x.parts.length && !x.hint) seen.withheld++;
      if (x.parts.length) (sawBreak ? seen.partsAfter++ : seen.partsBefore++);
      seen.ours += x.segs.filter((s) => s.ours).length;
      // The next request, as hls.js makes it: the part after the last part
      // listed; the next whole segment when the playlist ends without parts.
      const lastHadParts = last?.parts.length > 0;
      state[i].directive = x.parts.length
        ? `&_HLS_msn=${x.next}&_HLS_part=${x.parts.length}`
        : lastHadParts
          ? `&_HLS_msn=${x.next}&_HLS_part=0`
          : `&_HLS_msn=${x.next}`;
    }
    // A plain reload (a non-LL client / late joiner) on the first variant.
    const plain = await get(variants[0]);
    served.push({ group: "ll/0", viewer: "plain", playlist: plain.text, pdt: true });
    check("plain", plain.text);
    // A whole break between parts (the test may begin mid-break).
    sawBreak ||= inBreak && seen.partsBefore > 0;
    returned = sawBreak && !inBreak && seen.partsAfter > 4;
  }
  const v = spawnSync(CLI, ["validate"], { input: served.map((x) => JSON.stringify(x)).join("\n"), encoding: "utf8" });
  assert.equal(v.status, 0, `validator found violations:\n${v.stdout.slice(0, 4000)}`);
  const held = seen.held.sort((a, b) => a - b);
  console.log(`# LL-HLS: ${served.length} playlists, ${seen.ours} ad segment listings, parts before/after the break ${seen.partsBefore}/${seen.partsAfter}, withheld ${seen.withheld}, missed ${seen.missed}, blocking p50 ${held[held.length >> 1]} ms max ${held[held.length - 1]} ms`);
  assert.ok(sawBreak && seen.ours > 0, "a break was spliced into the LL-HLS channel");
  assert.ok(seen.partsBefore > 0 && seen.partsAfter > 0, "parts before and after the break");
  assert.ok(seen.withheld > 0, "the live edge inside the break listed whole ad segments only");
  assert.ok(returned, "back to parts after the break");
  // Every blocking reload got what it asked for: a part the break withholds
  // is answered with the whole (ad) segment, held until it is out, never
  // at once with nothing new (the client would ask again at once).
  assert.equal(seen.missed, 0, "blocking reloads answered without what they asked for");
  // Blocking reloads wait for the next part (0.96 s), not a whole poll.
  assert.ok(held[held.length >> 1] < 1500, `blocking reloads answered as parts appear (p50 ${held[held.length >> 1]} ms)`);
});
