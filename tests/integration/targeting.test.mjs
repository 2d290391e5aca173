// Addressable breaks in the local stack. Viewers from different countries
// (the CF-IPCountry header, which the stack's manifest worker trusts:
// TRUSTED_GEO_HEADER) join one channel whose `targeting.keys` is ["geo"].
// Each master request mints a v2 session bound to the viewer's cohort and
// targeting (`sid=s2-…&tg=…` on every variant URI) and reports the cohort
// to the Channel DO; breaks cued after that get one pod per (break,
// cohort), decided with the cohort's targeting (the VAST tag's
// [DEVICEGEO]). Checked here: each country's viewers get their own ads
// break after break and the live rules hold; two viewers of one cohort get
// the very same segments; the ad server is asked once per (break, cohort),
// never once per viewer, and never with one viewer's consent string; a sid
// whose cohort or targeting was edited is refused; SGAI asset lists are the
// cohort's; a channel over its `max_cohorts` serves the default pod to the
// rest and counts the overflow; hls.js plays a cohort's break.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import { launch, play } from "./browser.mjs";
import { startStack, api, http, channelConfig, CLI, ORG } from "./stack.mjs";

/** The channel of the first tests (32 cohorts at most) and the one with room for one. */
const SLUG = "geo-ads";
const ONE = "geo-one";
/** The channel whose SGAI asset lists decide for each viewer alone. */
const PV = "geo-pv";
/** 8 segments at the demo cadence: the FR creative (15.36 s) fits whole. */
const BREAK_S = 16;
const BREAKS = 3;
/**
 * What the ad server answers per [DEVICEGEO]: library creatives, mapped by
 * creative id (conditioned media that plays). Anything else (the default
 * audience's pod has no country) gets ad3: ad1's media ingested under
 * another id, so the default pod is told apart by its segment URIs.
 */
const BY_GEO = { DE: "ad1", FR: "ad2" };
const DEFAULT_CREATIVE = "ad3";
const DURATION = { ad1: "00:00:09.600", ad2: "00:00:15.360", ad3: "00:00:09.600" };

const SID_V2 = /^s2-[0-9a-f]{1,12}-[0-9a-f]{16}-[0-9a-z]{1,16}-[0-9a-f]{16}-[0-9a-f]{32}$/;
const AD = /\/media\/demo\/ads\/([^/]+)\//;
const OURS = /\/media\/demo\/(ads|slates)\//;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A well-formed IAB TCF v2 TC string (core segment bit layout: version 2,
 * created/updated, CMP, language EN, consent to purposes 1-10, publisher
 * country DE, ten vendors consented) plus a publisher segment: a viewer
 * who consented to personalised ads.
 */
function tcString() {
  const bits = [];
  const put = (v, n) => {
    for (let i = n - 1; i >= 0; i--) bits.push(Math.floor(v / 2 ** i) % 2);
  };
  const ds = Math.floor(Date.now() / 100);
  put(2, 6); // Version
  put(ds, 36); // Created
  put(ds, 36); // LastUpdated
  put(7, 12); // CmpId
  put(1, 12); // CmpVersion
  put(1, 6); // ConsentScreen
  put(4, 6); // ConsentLanguage "E"
  put(13, 6); // "N"
  put(150, 12); // VendorListVersion
  put(2, 6); // TcfPolicyVersion
  put(1, 1); // IsServiceSpecific
  put(0, 1); // UseNonStandardTexts
  put(0, 12); // SpecialFeatureOptIns
  for (let p = 1; p <= 24; p++) put(p <= 10 ? 1 : 0, 1); // PurposesConsent
  put(0, 24); // PurposesLITransparency
  put(0, 1); // PurposeOneTreatment
  put(3, 6); // PublisherCC "D"
  put(4, 6); // "E"
  put(10, 16); // vendor consents: MaxVendorId
  put(0, 1); // IsRangeEncoding
  for (let i = 0; i < 10; i++) put(1, 1);
  put(0, 16); // vendor legitimate interests: MaxVendorId
  put(0, 1);
  put(0, 12); // NumPubRestrictions
  while (bits.length % 8) bits.push(0);
  const bytes = Buffer.alloc(bits.length / 8);
  bits.forEach((b, i) => {
    if (b) bytes[i >> 3] |= 0x80 >> (i & 7);
  });
  return `${bytes.toString("base64url")}.YAAAAAAAAAAA`;
}
const TC = tcString();

let s, ads, adsBase;
/** Every tag request the ad server got: { t, ch, q (its query), url }. */
const calls = [];
/** What the first test's run leaves for the tests that look at it. */
let run = null;

const vast = (creative, geo) => `<?xml version="1.0" encoding="UTF-8"?>
<VAST version="4.2">
 <Ad id="${geo || "default"}-${creative}"><InLine><AdSystem>geo-test</AdSystem><Impression>${adsBase}/imp?c=${creative}</Impression>
  <Creatives><Creative id="${creative}"><Linear><Duration>${DURATION[creative]}</Duration>
   <MediaFiles><MediaFile delivery="progressive" type="video/mp4" width="960" height="540">${adsBase}/${creative}.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad>
</VAST>`;

/** A pod of several spots, in this order. */
const vastPod = (creatives) => `<?xml version="1.0" encoding="UTF-8"?>
<VAST version="4.2">${creatives
  .map(
    (c, i) => `
 <Ad id="pv-${c}" sequence="${i + 1}"><InLine><AdSystem>geo-test</AdSystem><Impression>${adsBase}/imp?c=${c}</Impression>
  <Creatives><Creative id="${c}"><Linear><Duration>${DURATION[c]}</Duration>
   <MediaFiles><MediaFile delivery="progressive" type="video/mp4" width="960" height="540">${adsBase}/${c}.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad>`,
  )
  .join("")}
</VAST>`;

/** The channel's VAST tag: every macro a cohort's decision fills. */
const tag = (slug) =>
  `${adsBase}/vast?ch=${slug}&geo=[DEVICEGEO]&npa=[NPA]&lat=[LIMITADTRACKING]&gdpr_consent=[GDPRCONSENT]&genre=[player_params.genre]&cb=[CACHEBUSTING]`;

const config = (slug, maxCohorts) =>
  channelConfig(s.originBase, "none", {
    scte35_enabled: false,
    vast_urls: [tag(slug)],
    // Every decision reaches the ad server (the calls are counted).
    vast_cache_s: 0,
    decision_cache_s: 0,
    targeting: { keys: ["geo"], params: ["genre"], max_cohorts: maxCohorts },
  });

before(async () => {
  ads = createServer((req, res) => {
    const u = new URL(req.url, "http://ads");
    if (u.pathname !== "/vast") return res.writeHead(404).end();
    const q = Object.fromEntries(u.searchParams);
    calls.push({ t: Date.now(), ch: q.ch, q, url: req.url });
    // The per-viewer channel's ad server offers two spots for any viewer
    // (only one fits a break): what the session has seen decides.
    if (q.ch === PV) return res.writeHead(200, { "Content-Type": "application/xml" }).end(vastPod(["ad2", "ad1"]));
    const creative = BY_GEO[q.geo] ?? DEFAULT_CREATIVE;
    res.writeHead(200, { "Content-Type": "application/xml" }).end(vast(creative, q.geo));
  });
  await new Promise((r) => ads.listen(0, "127.0.0.1", r));
  adsBase = `http://127.0.0.1:${ads.address().port}`;
  s = await startStack({ dialects: [], fmp4: false, demuxed: false, ll: false, extraAds: [{ file: "ad1.mp4", id: DEFAULT_CREATIVE }] });
  for (const [slug, max] of [[SLUG, 32], [ONE, 1]]) {
    const r = await api(s.base, "PUT", `/api/orgs/${ORG}/channels/${slug}`, config(slug, max));
    assert.equal(r.status, 200, JSON.stringify(r.json));
  }
  const back = (await api(s.base, "GET", `/api/orgs/${ORG}/channels/${SLUG}`)).json.config;
  assert.deepEqual(back.targeting, { keys: ["geo"], params: ["genre"], max_cohorts: 32 }, "the channel keeps its targeting");
});

after(() => {
  s && s.stop();
  ads && ads.close();
});

/**
 * A viewer joins: the master playlist (from `country`, with `query`), its
 * variant URIs, the session and targeting they carry, the cohort the
 * session names.
 */
async function join(slug, name, country, { mode = "ssai", query = "" } = {}) {
  const headers = country ? { "CF-IPCountry": country } : {};
  const r = await http(`${s.base}/${ORG}/${slug}/master.m3u8?mode=${mode}${query}`, { headers });
  assert.equal(r.status, 200, `${name}: master: ${r.text()}`);
  const text = r.text();
  const uris = text.split("\n").filter((l) => l.startsWith(`/${ORG}/${slug}/`));
  assert.ok(uris.length >= 2, `${name}: variants in\n${text}`);
  const params = uris.map((l) => new URL(l, s.base).searchParams);
  const sid = params[0].get("sid") ?? "";
  const tg = params[0].get("tg") ?? "";
  assert.match(sid, SID_V2, `${name}: a v2 session on ${uris[0]}`);
  assert.ok(tg.length > 0, `${name}: the viewer's targeting (tg) on ${uris[0]}`);
  for (const p of params) assert.deepEqual([p.get("sid"), p.get("tg")], [sid, tg], `${name}: every variant carries the same session`);
  const cohort = sid.split("-")[3];
  assert.match(cohort, /^[0-9a-f]{16}$/, `${name}: a cohort of its own (${sid})`);
  // "/demo/slug/v360/index.m3u8?…" → v360.
  const variants = Object.fromEntries(uris.map((l) => [l.split("/")[3], l]));
  return { name, country, headers, mode, slug, sid, tg, cohort, variants, seen: {} };
}

/** The same variants without a session: the default audience. */
function anonymous(v, name) {
  const strip = (path) => {
    const u = new URL(path, s.base);
    u.searchParams.delete("sid");
    u.searchParams.delete("tg");
    return `${u.pathname}?${u.searchParams}`;
  };
  const variants = Object.fromEntries(Object.entries(v.variants).map(([k, p]) => [k, strip(p)]));
  return { name, country: null, headers: {}, mode: v.mode, slug: v.slug, sid: null, tg: null, cohort: "", variants, seen: {} };
}

/** (MSN, URI) of each segment of a media playlist. */
function segments(text) {
  let msn = Number(text.match(/#EXT-X-MEDIA-SEQUENCE:(\d+)/)?.[1] ?? 0);
  const out = [];
  for (const line of text.split("\n")) if (line && !line.startsWith("#")) out.push({ msn: msn++, uri: line });
  return out;
}

/**
 * One reload of each of the viewer's variants, as its player does: each
 * playlist kept for the validator (one group per channel, mode, variant
 * and cohort: viewers of one cohort must see the same segment at each MSN)
 * and every MSN → URI it named.
 */
async function poll(v, served) {
  for (const [name, path] of Object.entries(v.variants)) {
    const r = await http(s.base + path, { headers: v.headers });
    assert.equal(r.status, 200, `${v.name} ${name}: ${r.text()}`);
    const text = r.text();
    served.push({ group: `${v.slug}/${v.mode}/${name}/${v.cohort || "default"}`, viewer: v.name, playlist: text, pdt: true });
    const seen = (v.seen[name] ??= new Map());
    for (const sg of segments(text)) seen.set(sg.msn, sg.uri);
    if (v.onPlaylist) await v.onPlaylist(text);
  }
}

const lastMsn = (v) => Math.max(-1, ...(v.seen[Object.keys(v.variants)[0]]?.keys() ?? []));

/**
 * POST /cue a break on `slug` now. Returns its record, the MSNs it covers
 * ([anchor_msn, end)) and where the ad server's calls stood.
 */
async function cue(slug, duration = BREAK_S) {
  const from = calls.length;
  const r = await http(`${s.base}/cue`, {
    method: "POST",
    headers: { Authorization: `Bearer ${s.apiKey}` },
    body: JSON.stringify({ channel: `${ORG}/${slug}`, type: "start", duration }),
  });
  assert.equal(r.status, 201, r.text());
  const record = JSON.parse(r.text());
  const b = { slug, id: record.id, anchor_msn: record.anchor_msn, end: record.anchor_msn + record.segment_count, record, from, entry: null, final: false };
  await refresh([b]);
  return b;
}

/**
 * The breaks' entries as the Channel DO holds them (record with its
 * `cohorts`, default `pod`, `cohort_pods`), kept once the break has
 * started airing (its pods were decided by then).
 */
async function refresh(breaks, edge = -1) {
  const open = breaks.filter((b) => !b.final);
  if (!open.length) return;
  const st = await api(s.base, "GET", `/api/orgs/${ORG}/channels/${open[0].slug}/breaks`);
  assert.equal(st.status, 200, JSON.stringify(st.json));
  for (const b of open) {
    const e = (st.json.entries ?? []).find((x) => x.record.id === b.id);
    if (e) b.entry = e;
    if (e && edge >= b.anchor_msn) b.final = true;
  }
}

/** The ad server's calls for `slug` from break `i`'s cue up to the next one's. */
const callsOf = (breaks, i) => calls.slice(breaks[i].from, breaks[i + 1]?.from ?? calls.length).filter((c) => c.ch === breaks[i].slug);

/** Ad and slate segments a viewer's variant named inside break `b`: [[msn, uri], …] by MSN. */
const oursIn = (v, variant, b) =>
  [...(v.seen[variant] ?? new Map())].filter(([msn, uri]) => msn >= b.anchor_msn && msn < b.end && OURS.test(uri)).sort((x, y) => x[0] - y[0]);

/** The creatives (library ids) a viewer's variant played in break `b`, with their segment counts. */
function creativesIn(v, variant, b) {
  const out = {};
  for (const [, uri] of oursIn(v, variant, b)) {
    const m = uri.match(AD);
    if (m) out[m[1]] = (out[m[1]] ?? 0) + 1;
  }
  return out;
}

const podCreatives = (pod) => (pod?.items ?? []).map((i) => i.creative_id);

function validate(served, what) {
  const input = served.map((x) => JSON.stringify(x)).join("\n");
  const v = spawnSync(CLI, ["validate"], { input, encoding: "utf8" });
  if (v.status !== 0) {
    const file = joinPath(mkdtempSync(joinPath(tmpdir(), "cf-ssai-targeting-")), "served.jsonl");
    writeFileSync(file, input);
    assert.fail(`${what}: the validator found violations (${file}):\n${v.stdout.slice(0, 4000)}${v.stderr.slice(0, 1000)}`);
  }
}

/**
 * Poll `viewers` once a second while `cueing` breaks go by: a break is
 * cued at once, each next one two content segments after the last ended;
 * returns when the last has ended (two content segments out) or at `ms`.
 */
async function watch(viewers, served, { slug, count, ms, onTick }) {
  const breaks = [];
  const end = Date.now() + ms;
  let ended = false;
  while (Date.now() < end && !ended) {
    const tick = Date.now();
    await Promise.all(viewers.map((v) => poll(v, served)));
    const edge = lastMsn(viewers[0]);
    await refresh(breaks, edge);
    const last = breaks.at(-1);
    if (breaks.length < count && (!last || edge >= last.end + 1)) breaks.push(await cue(slug));
    else if (breaks.length === count && edge >= last.end + 1) ended = true;
    if (onTick) await onTick();
    await sleep(Math.max(0, 1000 - (Date.now() - tick)));
  }
  assert.equal(breaks.length, count, `${count} breaks cued on ${slug} (the live edge: ${viewers.map((v) => `${v.name} ${lastMsn(v)}`).join(", ")})`);
  assert.ok(ended, `the last break on ${slug} (MSN ${breaks.at(-1).anchor_msn}..${breaks.at(-1).end - 1}) ended within ${ms} ms; the live edge is at ${lastMsn(viewers[0])}`);
  for (const b of breaks) assert.ok(b.entry && b.final, `break ${b.id}: its entry was read from the channel's breaks once it aired`);
  return breaks;
}

test("each country's viewers get their cohort's pod in every break, a second DE viewer the very same one, the ad server is asked once per (break, cohort), and the live rules hold", async () => {
  const de1 = await join(SLUG, "DE-1", "DE");
  const fr = await join(SLUG, "FR", "FR");
  const de2 = await join(SLUG, "DE-2", "DE");
  // A viewer who consented to personalised ads and sends a player
  // key-value (test 2 looks at what the ad server got).
  const es = await join(SLUG, "ES-consent", "ES", { query: `&gdpr=1&gdpr_consent=${TC}&ads.genre=news` });
  const frSgai = await join(SLUG, "FR-sgai", "FR", { mode: "sgai" });
  const anon = anonymous(de1, "no-sid");
  assert.equal(de2.cohort, de1.cohort, "two DE viewers share a cohort");
  assert.notEqual(de2.sid, de1.sid, "each viewer has its own session");
  assert.equal(frSgai.cohort, fr.cohort, "the cohort does not depend on the mode");
  assert.equal(new Set([de1.cohort, fr.cohort, es.cohort]).size, 3, "one cohort per country");
  // The FR SGAI viewer's interstitials: each asset list fetched once, as
  // a player does when the DATERANGE appears (test 4 looks at them).
  const sgaiLists = new Map();
  frSgai.onPlaylist = async (text) => {
    for (const m of text.matchAll(/X-ASSET-LIST="([^"]+)"/g)) {
      if (sgaiLists.has(m[1])) continue;
      const u = new URL(m[1], s.base);
      u.searchParams.set("_HLS_primary_id", "fr-sgai");
      u.searchParams.set("_HLS_start_offset", "0");
      const r = await http(u.href, { headers: frSgai.headers });
      assert.equal(r.status, 200, `${m[1]}: ${r.text()}`);
      sgaiLists.set(m[1], JSON.parse(r.text()));
    }
  };
  // The cohorts reach the Channel DO within a second of their first master
  // request; only breaks created after that have their pods.
  await sleep(2000);
  const served = [];
  const viewers = [de1, de2, fr, es, anon, frSgai];
  const breaks = await watch(viewers, served, { slug: SLUG, count: BREAKS, ms: 150_000 });
  run = { de1, de2, fr, es, anon, frSgai, breaks, sgaiLists };
  validate(served, "viewers of four audiences over three breaks");

  const expect = [
    [de1, BY_GEO.DE],
    [de2, BY_GEO.DE],
    [fr, BY_GEO.FR],
    [es, DEFAULT_CREATIVE], // the ad server's answer for ES
    [anon, DEFAULT_CREATIVE], // no sid: the default audience
  ];
  for (const [i, b] of breaks.entries()) {
    const what = `break ${i + 1} (${b.id}, MSN ${b.anchor_msn}..${b.end - 1})`;
    const e = b.entry;
    const cohorts = e.record.cohorts ?? [];
    for (const v of [de1, fr, es]) {
      assert.ok(cohorts.includes(v.cohort), `${what}: ${v.name}'s cohort ${v.cohort} has a pod of its own (record.cohorts ${JSON.stringify(cohorts)})`);
    }
    assert.equal(cohorts.length, 3, `${what}: three cohorts (${JSON.stringify(cohorts)})`);
    assert.deepEqual(podCreatives(e.pod), [DEFAULT_CREATIVE], `${what}: the default pod (${e.pod?.source}: ${JSON.stringify(e.pod?.reasons)})`);
    for (const [v, c] of [[de1, BY_GEO.DE], [fr, BY_GEO.FR], [es, DEFAULT_CREATIVE]]) {
      const pod = e.cohort_pods?.[v.cohort];
      assert.equal(pod?.source, "vast", `${what}: ${v.name}'s pod came from the ad server (${JSON.stringify(pod?.reasons)})`);
      assert.deepEqual(podCreatives(pod), [c], `${what}: ${v.name}'s pod`);
    }
    // What each viewer was served, variant by variant.
    for (const [v, c] of expect) {
      for (const variant of Object.keys(v.variants)) {
        const got = creativesIn(v, variant, b);
        assert.deepEqual(Object.keys(got), [c], `${what}: ${v.name} ${variant} played ${JSON.stringify(got)}, expected ${c}`);
      }
    }
    for (const variant of Object.keys(de1.variants)) {
      const one = oursIn(de1, variant, b);
      const two = oursIn(de2, variant, b);
      assert.ok(one.length >= 5, `${what}: DE-1 ${variant}: ${one.length} ad segments`);
      assert.deepEqual(two, one, `${what}: ${variant}: the second DE viewer got exactly the first one's pod`);
      // DE and FR differ at the same MSNs.
      const frAt = new Map(oursIn(fr, variant, b));
      assert.ok(one.some(([msn, uri]) => frAt.has(msn) && frAt.get(msn) !== uri), `${what}: ${variant}: DE and FR were served different segments`);
    }
    // One ad-server call per cohort and one for the default pod, however
    // many viewers a cohort has (DE has two).
    const geos = callsOf(breaks, i).map((c) => c.q.geo ?? "(none)").sort();
    assert.deepEqual(geos, ["", "DE", "ES", "FR"], `${what}: ad server calls by [DEVICEGEO]: ${JSON.stringify(callsOf(breaks, i).map((c) => c.url))}`);
  }
  // Nothing of ours outside the breaks cued.
  for (const v of viewers) {
    for (const [variant, seen] of Object.entries(v.seen)) {
      for (const [msn, uri] of seen) {
        if (OURS.test(uri)) assert.ok(breaks.some((b) => msn >= b.anchor_msn && msn < b.end), `${v.name} ${variant}: MSN ${msn} ${uri} outside every break`);
      }
    }
  }
  const mine = calls.filter((c) => c.ch === SLUG);
  assert.equal(mine.filter((c) => c.q.geo === "DE").length, BREAKS, "DE's pods: one call per break, not one per viewer");
});

test("consent: a cohort's decision carries no viewer's TC string or key-values and asks for non-personalised ads", () => {
  assert.ok(run, "needs the viewers and breaks of the first test");
  // The viewer did consent (with a valid TC string and a key-value), but
  // its playlist URLs carry only what its cohort shares: no TC string, no
  // key-value that is not a cohort key (minimised: URLs end up in logs).
  let own;
  try {
    own = JSON.parse(Buffer.from(run.es.tg, "base64url").toString("utf8"));
  } catch (e) {
    assert.fail(`tg is the cohort's targeting as base64url JSON: ${run.es.tg} (${e.message})`);
  }
  assert.equal(own.geo, "ES", `the cohort's key is in it: ${JSON.stringify(own)}`);
  assert.ok(!own.consent && !JSON.stringify(own).includes(TC.slice(0, 16)), `no TC string in the URL: ${JSON.stringify(own)}`);
  assert.ok(!own.params || !own.params.genre, `no viewer key-value in the URL: ${JSON.stringify(own)}`);
  const mine = calls.filter((c) => c.ch === SLUG);
  assert.ok(mine.filter((c) => c.q.geo === "ES").length >= BREAKS, `the consenting viewer's cohort was decided each break: ${JSON.stringify(mine.map((c) => c.q.geo))}`);
  const probe = TC.split(".")[0].slice(0, 16);
  for (const c of mine) {
    assert.ok(!c.url.includes(probe) && !decodeURIComponent(c.url).includes(probe), `no TC string reaches the ad server: ${c.url}`);
    assert.equal(c.q.gdpr_consent, "", `[GDPRCONSENT] is empty: ${c.url}`);
    assert.equal(c.q.npa, "1", `[NPA] is 1 (ads may not be personalised for a whole cohort): ${c.url}`);
    assert.equal(c.q.genre, "", `[player_params.genre] is empty (genre is not a cohort key; one viewer's key-value is not its cohort's): ${c.url}`);
  }
});

test("a sid whose cohort or targeting was edited is refused with 403; no sid is the default audience; a master replaces a forged sid", async () => {
  const de = await join(SLUG, "forge-DE", "DE");
  const fr = await join(SLUG, "forge-FR", "FR");
  const [variant, path] = Object.entries(de.variants)[0];
  const edit = (f) => {
    const u = new URL(path, s.base);
    f(u.searchParams);
    return `${u.pathname}?${u.searchParams}`;
  };
  const sidWith = (cohort) => {
    const p = de.sid.split("-");
    p[3] = cohort;
    return p.join("-");
  };
  const ok = await http(s.base + path, { headers: de.headers });
  assert.equal(ok.status, 200, `the minted session is served: ${ok.text()}`);
  const forged = {
    "cohort edited to FR's": edit((q) => q.set("sid", sidWith(fr.cohort))),
    "cohort edited to the default audience": edit((q) => q.set("sid", sidWith("0"))),
    "cohort and tg both FR's": edit((q) => {
      q.set("sid", sidWith(fr.cohort));
      q.set("tg", fr.tg);
    }),
    "tg swapped for FR's": edit((q) => q.set("tg", fr.tg)),
    "tg dropped": edit((q) => q.delete("tg")),
  };
  for (const [what, p] of Object.entries(forged)) {
    assert.notEqual(p, path, what);
    const r = await http(s.base + p, { headers: de.headers });
    assert.equal(r.status, 403, `${what} (${variant}): ${r.status} ${r.text().slice(0, 200)}`);
    assert.ok(!r.text().includes("#EXTINF"), `${what}: no playlist`);
  }
  const bare = await http(s.base + anonymous(de, "x").variants[variant]);
  assert.equal(bare.status, 200, `no sid: the default audience (${bare.text().slice(0, 200)})`);
  assert.match(bare.text(), /#EXTINF/);
  // A master request with an edited sid gets a session of its own minted.
  const again = await http(`${s.base}/${ORG}/${SLUG}/master.m3u8?mode=ssai&sid=${sidWith(fr.cohort)}`, { headers: de.headers });
  assert.equal(again.status, 200);
  const sid = again.text().match(/[?&]sid=([^&\s]+)/)?.[1];
  assert.ok(sid && sid !== sidWith(fr.cohort) && sid.split("-")[3] === de.cohort, `the master replaced the forged sid with a DE session: ${sid}`);
});

test("SGAI: the asset list the FR viewer's playlist names holds the FR creative", async () => {
  assert.ok(run, "needs the FR SGAI viewer of the first test");
  const lists = [...run.sgaiLists];
  assert.ok(lists.length >= BREAKS, `FR's SGAI playlists announced every break (${lists.map(([u]) => u).join(" ")})`);
  for (const [url, doc] of lists) {
    const ids = (doc.ASSETS ?? []).filter((a) => a["X-CREATIVE-ID"]).map((a) => a["X-CREATIVE-ID"]);
    assert.deepEqual(ids, [BY_GEO.FR], `${url}: ${JSON.stringify(doc)}`);
    // And the asset is playable: a multivariant playlist of the ad.
    const a = doc.ASSETS.find((x) => x["X-CREATIVE-ID"]);
    const m = await http(new URL(a.URI, s.base).href, { headers: run.frSgai.headers });
    assert.equal(m.status, 200, `${a.URI}: ${m.text()}`);
    assert.match(m.text(), /#EXT-X-STREAM-INF:BANDWIDTH=/, a.URI);
  }
});

test("max_cohorts 1: the second country gets the default pod, the overflow is counted, the live rules hold", async () => {
  const t0 = Date.now();
  const de = await join(ONE, "one-DE", "DE");
  await sleep(1500);
  const fr = await join(ONE, "one-FR", "FR");
  await sleep(2000);
  const served = [];
  const [b] = await watch([de, fr], served, { slug: ONE, count: 1, ms: 60_000 });
  validate(served, "max_cohorts 1");
  const what = `break ${b.id} (MSN ${b.anchor_msn}..${b.end - 1})`;
  assert.deepEqual(b.entry.record.cohorts ?? [], [de.cohort], `${what}: only the first cohort has a pod of its own`);
  for (const [v, c] of [[de, BY_GEO.DE], [fr, DEFAULT_CREATIVE]]) {
    for (const variant of Object.keys(v.variants)) {
      const got = creativesIn(v, variant, b);
      assert.deepEqual(Object.keys(got), [c], `${what}: ${v.name} ${variant} played ${JSON.stringify(got)}, expected ${c}`);
    }
  }
  // The cohort over the limit costs no decision.
  const geos = callsOf([b], 0).map((c) => c.q.geo ?? "(none)").sort();
  assert.deepEqual(geos, ["", "DE"], `${what}: ad server calls by [DEVICEGEO]`);
  // The overflow in the channel's metrics (OpenMetrics: every counter the
  // channel wrote; the JSON summary if it names it). Metrics are written
  // in batches: keep playing while waiting for them.
  let seen = null;
  for (let i = 0; i < 30 && !seen; i++) {
    const om = await http(`${s.base}/api/orgs/${ORG}/metrics/openmetrics`, { headers: { Authorization: `Bearer ${s.apiKey}` } });
    assert.equal(om.status, 200);
    let n = 0;
    for (const m of om.text().matchAll(/^cf_ssai_cohort_overflow_total\{([^}]*)\} (\S+)$/gm)) if (m[1].includes(`channel="${ONE}"`)) n += Number(m[2]);
    const totals = (await api(s.base, "GET", `/api/orgs/${ORG}/metrics?from=${t0 - 120_000}&to=now&channel=${ONE}`)).json?.totals ?? {};
    const j = Number(totals.cohort_overflow ?? totals.cohort_overflow_total ?? 0);
    if (n > 0 || j > 0) seen = { openmetrics: n, json: j };
    else {
      await poll(fr, []);
      await sleep(1000);
    }
  }
  assert.ok(seen, `cohort_overflow_total > 0 for channel ${ONE} (OpenMetrics cf_ssai_cohort_overflow_total{channel="${ONE}"} or the JSON totals' cohort_overflow)`);
});

test("hls.js plays the FR viewer's master through a break of FR's pod without a stall", async () => {
  const probe = await join(SLUG, "FR-probe", "FR");
  const browser = await launch();
  try {
    // The browser's requests to the stack come from France (only those:
    // a custom header on the origin's cross-origin segment requests would
    // need a CORS preflight the origin does not answer).
    const ctx = await browser.newContext({ viewport: { width: 960, height: 540 } });
    await ctx.route(`${s.base}/**`, (route) => route.continue({ headers: { ...route.request().headers(), "CF-IPCountry": "FR" } }));
    let cued = null;
    // (`play` opens its page in the context it is given.)
    const { log } = await play(ctx, s.base, `${s.base}/${ORG}/${SLUG}/master.m3u8?mode=ssai`, 55, {
      onTick: async (l) => {
        if (!cued && l.started && l.progress > 30) cued = await cue(SLUG);
        // Its entry as decided (the break leaves the channel's view later).
        else if (cued && !cued.final) await refresh([cued], Number.MAX_SAFE_INTEGER);
      },
    });
    assert.ok(cued, `a break was cued once playback started (started ${log.started}, progress ${log.progress}, fatal ${JSON.stringify(log.fatal)}, errors ${JSON.stringify(log.errors.slice(0, 10))}, ${log.frags.length} fragments)`);
    assert.ok((cued.entry?.record.cohorts ?? []).includes(probe.cohort), `FR's cohort has its pod in the break (${JSON.stringify(cued.entry?.record.cohorts)})`);
    assert.deepEqual(log.fatal, [], `no fatal error ${JSON.stringify(log.errors)}`);
    assert.ok(log.started && log.progress > 100, "playback started and advanced");
    assert.ok(log.maxStallMs <= 2000, `longest stall ${log.maxStallMs} ms at t=${log.maxStallTime}`);
    const kinds = log.frags.map((f) => (OURS.test(f.url) ? "ad" : "content"));
    const firstAd = kinds.indexOf("ad");
    assert.ok(firstAd > 0, `content, then the break (${kinds.join(",")})`);
    assert.ok(kinds.slice(firstAd).includes("content"), "back to content after the break");
    const played = [...new Set(log.frags.map((f) => f.url.match(AD)?.[1]).filter(Boolean))];
    assert.deepEqual(played, [BY_GEO.FR], `the FR creative played, nothing else: ${played}`);
  } finally {
    await browser.close();
  }
});

test("per_viewer SGAI: the asset list asks the ad server for this viewer alone (its own consent), once per break, and the session's frequency cap moves it to another spot", async () => {
  const r = await api(s.base, "PUT", `/api/orgs/${ORG}/channels/${PV}`, { ...config(PV, 32), sgai_decision: "per_viewer" });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const v = await join(PV, "pv-DE", "DE", { mode: "sgai", query: `&gdpr=1&gdpr_consent=${TC}` });
  const own = JSON.parse(Buffer.from(v.tg, "base64url").toString("utf8"));
  assert.equal(own.consent, TC, "a per_viewer channel's tg carries the viewer's own targeting");
  const variant = Object.keys(v.variants)[0];
  const served = [];
  for (let i = 0; i < 2; i++) {
    const b = await cue(PV, BREAK_S);
    let url;
    for (let k = 0; k < 40 && !url; k++) {
      const text = (await http(s.base + v.variants[variant], { headers: v.headers })).text();
      const m = [...text.matchAll(/#EXT-X-DATERANGE:ID="([^"]+)"[^\n]*X-ASSET-LIST="([^"]+)"/g)].find((x) => x[1] === b.id);
      url = m?.[2];
      if (!url) await sleep(500);
    }
    assert.ok(url, `break ${b.id} announced to the SGAI viewer`);
    assert.match(url, /[?&]sid=/, `a per-viewer asset list carries the session: ${url}`);
    const list = new URL(url, s.base);
    list.searchParams.set("_HLS_primary_id", "pv");
    list.searchParams.set("_HLS_start_offset", "0");
    const from = calls.length;
    const ids = async () => {
      const a = await http(list.href, { headers: v.headers });
      assert.equal(a.status, 200, a.text());
      return (JSON.parse(a.text()).ASSETS ?? []).filter((x) => x["X-CREATIVE-ID"]).map((x) => x["X-CREATIVE-ID"]);
    };
    const first = await ids();
    const mine = calls.slice(from).filter((c) => c.ch === PV);
    assert.equal(mine.length, 1, `one ad-server call for this viewer's asset list: ${JSON.stringify(mine.map((c) => c.url))}`);
    assert.equal(mine[0].q.gdpr_consent, TC, "the viewer's own TC string reached the ad server");
    assert.equal(mine[0].q.npa, "0", "and personalised ads were allowed");
    // Fetched again (a rejoin, a retry): the same spots, no new call.
    assert.deepEqual(await ids(), first, "decided once per session and break");
    assert.equal(calls.slice(from).filter((c) => c.ch === PV).length, 1);
    served.push(first);
    // The next break once this one has ended.
    if (i === 0) await sleep((BREAK_S + 3) * 1000);
  }
  assert.deepEqual(served[0], ["ad2"], "the fullest spot first");
  assert.deepEqual(served[1], ["ad1"], "the session saw ad2 within the hour: ad1 fills instead");
});
