// The local edge stack: the live origin (cf-ssai origin, real media) and all
// four workers in ONE `wrangler dev` process (queues only deliver within a
// process), with D1 migrations applied to the same state dir, then seeded
// (org, channels, API key, ads and slate ingested with the CLI).
//
// Used by the README's first command (`node tests/integration/stack.mjs
// --dev`) and by every integration test (startStack/stopStack). Everything
// runs in its own process group and is stopped as a group.
import { spawn, spawnSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ROOT = resolve(new URL("../..", import.meta.url).pathname);
export const CLI = join(ROOT, "target/release/cf-ssai");
const BIN = join(ROOT, "node_modules/.bin");
export const CADENCE_MS = 1920;
export const ORG = "demo";

export function devVars() {
  const vars = {};
  for (const line of readFileSync(join(ROOT, ".dev.vars"), "utf8").split("\n")) {
    const m = line.match(/^([A-Z_]+)=(.*)$/);
    if (m) vars[m[1]] = m[2];
  }
  return vars;
}

/** An HS256 JWT (same format the core verifies); `iss` defaults to ours. */
export function jwt(claims, secret = devVars().JWT_SECRET) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const h = b64({ alg: "HS256", typ: "JWT" });
  const p = b64({ iss: "cf-ssai", ...claims });
  const s = createHmac("sha256", secret).update(`${h}.${p}`).digest("base64url");
  return `${h}.${p}.${s}`;
}

/**
 * A viewer session token in the core's version-1 format
 * (crates/core/src/control/session.rs): `s1-{issued hex}-{nonce}-{HMAC-SHA-256
 * truncated to 128 bits}`. Still verified (the default audience, no
 * targeting); master playlists now mint version 2, which also binds the
 * viewer's cohort and targeting (`s2-{issued}-{nonce}-{cohort|0}-{td}-{mac}`).
 */
export function sessionToken(channel, issuedS = Math.floor(Date.now() / 1000), secret = devVars().SESSION_SECRET) {
  const nonce = randomBytes(8).toString("hex");
  const mac = createHmac("sha256", secret).update(`s1\0${channel}\0${issuedS}\0${nonce}`).digest("hex").slice(0, 32);
  return `s1-${issuedS.toString(16)}-${nonce}-${mac}`;
}

export function adminToken(org = "*", ttl = 86400) {
  const now = Math.floor(Date.now() / 1000);
  return jwt({ sub: "test", exp: now + ttl, aud: "cf-ssai", org });
}

export async function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

function spawnGroup(cmd, args, opts = {}) {
  const child = spawn(cmd, args, {
    cwd: ROOT,
    detached: true, // own process group: stopped as a whole
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1", ...opts.env },
  });
  child.log = "";
  const keep = (d) => {
    child.log += d.toString();
    if (child.log.length > 200_000) child.log = child.log.slice(-100_000);
    if (opts.echo) process.stdout.write(d);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  return child;
}

function killGroup(child) {
  if (!child || child.exitCode !== null) return;
  try {
    process.kill(-child.pid, "SIGTERM");
  } catch {}
  setTimeout(() => {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {}
  }, 2000).unref();
}

async function waitFor(url, ms, child) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (child && child.exitCode !== null) throw new Error(`process exited:\n${child.log.slice(-3000)}`);
    try {
      const r = await http(url, { timeoutMs: 2000 });
      if (r.status === 200) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`${url} not ready after ${ms} ms\n${child ? child.log.slice(-3000) : ""}`);
}

/**
 * One HTTP request on a fresh connection (workerd keeps connections open
 * after `Connection: close`; reusing them fails), body read by length.
 * Resolves {status, headers, body: Buffer, text()}.
 */
export function http(url, { method = "GET", headers = {}, body, timeoutMs = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const data = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body);
    const req = httpRequest(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method, agent: false,
        headers: { Connection: "close", ...(data ? { "Content-Length": data.length } : {}), ...headers } },
      (res) => {
        const chunks = [];
        const want = Number(res.headers["content-length"] ?? -1);
        let got = 0;
        const done = () => {
          const buf = Buffer.concat(chunks);
          resolve({ status: res.statusCode, headers: res.headers, body: buf, text: () => buf.toString("utf8") });
          req.destroy();
        };
        res.on("data", (c) => {
          chunks.push(c);
          got += c.length;
          if (want >= 0 && got >= want) done();
        });
        res.on("end", done);
        res.on("error", reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout ${url}`)));
    req.on("error", reject);
    if (data) req.write(data);
    req.end();
  });
}

export async function api(base, method, path, body, token = adminToken()) {
  const r = await http(base + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": Buffer.isBuffer(body) ? "application/octet-stream" : "application/json" },
    body: body === undefined ? undefined : typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body),
  });
  const text = r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = { raw: text };
  }
  return { status: r.status, json, headers: r.headers };
}

export function channelConfig(originBase, dialect, extra = {}) {
  return {
    origin_url: `${originBase}/live/${dialect}/master.m3u8`,
    mode: "ssai",
    cadence_ms: CADENCE_MS,
    allow_private_origin: true,
    origin_timeout_ms: 2000,
    ...extra,
  };
}

/** A DASH channel on the origin's `dash*` MPDs (`dash`, `dash-xml`, `dash-time`, `dash-emsg`, `dash-none`). */
export function dashConfig(originBase, name, extra = {}) {
  return channelConfig(originBase, name, {
    origin_url: `${originBase}/live/${name}/manifest.mpd`,
    ...(name === "dash-emsg" ? { cue_source: "inband" } : {}),
    ...extra,
  });
}

/**
 * Start origin + workers. Options: port, originPort, stateDir, media,
 * seed (true), ingest (true), echo, dialect (news channel), dialects (one
 * channel each), firstBreak/breakEvery/breakLen (segments), cadenceMs
 * (origin only), vars, tracking, lifetimeS, extraAds ([{file, id}]: more
 * library ads ingested from demo-media/src).
 *
 * The manifest worker trusts the `CF-IPCountry` request header for the
 * viewer's country (`TRUSTED_GEO_HEADER`; deployed, it reads Cloudflare's
 * own `request.cf.country`), so tests and the dev stack can play viewers
 * from any country; `vars` may override it.
 */
export async function startStack(opts = {}) {
  let port = opts.port ?? (await freePort());
  const originPort = opts.originPort ?? (await freePort());
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), "cf-ssai-state-"));
  const media = opts.media ?? join(ROOT, "demo-media");
  let base = `http://127.0.0.1:${port}`;
  const originBase = `http://127.0.0.1:${originPort}`;
  for (const f of [CLI, join(ROOT, "workers/manifest/build/index.js")]) {
    if (!existsSync(f)) throw new Error(`${f} missing: run scripts/build.sh first`);
  }
  const mig = spawnSync(join(BIN, "wrangler"), ["d1", "migrations", "apply", "cf-ssai", "--local", "--persist-to", stateDir, "-c", "wrangler-manifest.toml"], {
    cwd: ROOT,
    env: { ...process.env, CI: "1", WRANGLER_SEND_METRICS: "false" },
    encoding: "utf8",
  });
  if (mig.status !== 0) throw new Error(`D1 migrations failed:\n${mig.stdout}\n${mig.stderr}`);
  const originArgs = [
    "origin", "--port", String(originPort), "--media", join(media, "content"), "--loop", "60",
    "--cadence-ms", String(opts.cadenceMs ?? CADENCE_MS), "--window", String(opts.window ?? 6),
    "--break-every", String(opts.breakEvery ?? 40), "--break-len", String(opts.breakLen ?? 16),
    "--first-break", String(opts.firstBreak ?? 6), "--exit-after-s", String(opts.lifetimeS ?? 7200),
  ];
  const origin = spawnGroup(CLI, [...originArgs, ...(opts.originArgs ?? [])], { echo: false });
  const startRuntime = async () => spawnGroup(join(BIN, "wrangler"), [
    "dev", "-c", "wrangler-manifest.toml", "-c", "wrangler-decision.toml", "-c", "wrangler-scte35-monitor.toml", "-c", "wrangler-beacon.toml",
    "--ip", "127.0.0.1", "--port", String(port), "--persist-to", stateDir, "--inspector-port", String(await freePort()),
    ...Object.entries({ TRUSTED_GEO_HEADER: "CF-IPCountry", ...(opts.vars ?? {}) }).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
  ], { echo: opts.echo });
  // A port found free can be taken before workerd binds it (another
  // process's ephemeral port): start again on fresh ports, up to 3 times.
  let wrangler;
  for (let attempt = 1; ; attempt++) {
    wrangler = await startRuntime();
    try {
      await waitFor(`${base}/healthz`, 90000, wrangler);
      break;
    } catch (e) {
      killGroup(wrangler);
      if (attempt >= 3 || opts.port || !/Address already in use/.test(e.message)) {
        killGroup(origin);
        throw e;
      }
      port = await freePort();
      base = `http://127.0.0.1:${port}`;
    }
  }
  const stack = { port, originPort, base, originBase, stateDir, origin, wrangler, ephemeral: !opts.stateDir };
  stack.stop = () => stopStack(stack);
  /**
   * Restart the whole local runtime (all four workers) on the same state;
   * the origin keeps running. `whileDown` (async) runs between the stop and
   * the start: every Durable Object is evicted, its storage kept.
   */
  stack.restartRuntime = async (whileDown) => {
    const old = stack.wrangler;
    killGroup(old);
    while (old.exitCode === null && old.signalCode === null) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 1000));
    if (whileDown) await whileDown();
    stack.wrangler = await startRuntime();
    await waitFor(`${base}/healthz`, 90000, stack.wrangler);
  };
  /** Restart the live origin (an encoder restart, or with `--msn-offset` a failover). */
  stack.restartOrigin = async (extra = []) => {
    const old = stack.origin;
    killGroup(old);
    while (old.exitCode === null && old.signalCode === null) await new Promise((r) => setTimeout(r, 100));
    stack.origin = spawnGroup(CLI, [...originArgs, ...extra], { echo: false });
    await waitFor(`${originBase}/healthz`, 15000, stack.origin);
  };
  try {
    await waitFor(`${originBase}/healthz`, 15000, origin);
    await waitFor(`${base}/healthz`, 90000, wrangler);
    if (opts.seed !== false) await seed(stack, opts);
  } catch (e) {
    stopStack(stack);
    throw e;
  }
  return stack;
}

/**
 * Start a creative conditioner (`cf-ssai conditioner`) against the stack,
 * as command 1 does: platform token, loopback sources allowed. Returns the
 * child (its output in `.log`); stopped with the stack.
 */
export function startConditioner(stack, args = []) {
  const child = spawnGroup(CLI, [
    "conditioner", "--api", stack.base, "--token", adminToken("*", 7 * 86400),
    "--allow-private", "127.0.0.1", "--poll-s", "1", ...args,
  ], { echo: false });
  (stack.conditioners ??= []).push(child);
  return child;
}

export function stopConditioner(child) {
  killGroup(child);
}

export function stopStack(stack) {
  for (const c of stack.conditioners ?? []) killGroup(c);
  killGroup(stack.wrangler);
  killGroup(stack.origin);
  if (stack.ephemeral) setTimeout(() => rmSync(stack.stateDir, { recursive: true, force: true }), 2500).unref();
}

/** The demo org, its channels (one per marker dialect), a key, ads, slate. */
export async function seed(stack, opts = {}) {
  const { base, originBase } = stack;
  const must = (r, what) => {
    if (r.status >= 300) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.json)}`);
    return r;
  };
  must(await api(base, "PUT", `/api/orgs/${ORG}`, { name: "Demo" }), "org");
  // Library first: pollers start with their channel, and a decision is
  // made once per break.
  if (opts.ingest !== false) {
    const media = opts.media ?? join(ROOT, "demo-media");
    const token = adminToken(ORG);
    const ing = (file, id, extra = []) => {
      const r = spawnSync(CLI, ["ads", "ingest", join(media, "src", file), "--org", ORG, "--id", id, "--api", base, "--token", token, "--cadence-ms", String(CADENCE_MS), ...extra], { cwd: ROOT, encoding: "utf8" });
      if (r.status !== 0) throw new Error(`ingest ${id}: ${r.stderr}`);
      return JSON.parse(r.stdout.trim().split("\n").pop());
    };
    const tracking = opts.tracking ?? {};
    ing("ad1.mp4", "ad1", ["--tracking", JSON.stringify(tracking.ad1 ?? {})]);
    ing("ad2.mp4", "ad2", ["--tracking", JSON.stringify(tracking.ad2 ?? {})]);
    ing("slate.mp4", "slate", ["--slate"]);
    for (const a of opts.extraAds ?? []) ing(a.file, a.id);
  }
  const dialects = opts.dialects ?? ["cue-out", "daterange", "oatcls", "scte35-tag", "splicepoint"];
  must(await api(base, "PUT", `/api/orgs/${ORG}/channels/news`, channelConfig(originBase, opts.dialect ?? "cue-out", { mode: "auto" })), "news");
  for (const d of dialects) {
    // `inband*` origins carry SCTE-35 only in the media.
    const extra = d.startsWith("inband") ? { cue_source: "inband" } : {};
    must(await api(base, "PUT", `/api/orgs/${ORG}/channels/${d}`, channelConfig(originBase, d, extra)), d);
  }
  // The news channel again, packaged as fMP4 (CMAF segments, fMP4 ads).
  if (opts.fmp4 !== false) {
    must(await api(base, "PUT", `/api/orgs/${ORG}/channels/news-fmp4`, channelConfig(originBase, `${opts.dialect ?? "cue-out"}-fmp4`, { mode: "auto" })), "news-fmp4");
  }
  // The news channel demuxed: video-only variants, an audio group in two
  // languages and WebVTT subtitles (ads keep every rendition aligned).
  if (opts.demuxed !== false) {
    must(await api(base, "PUT", `/api/orgs/${ORG}/channels/news-demuxed`, channelConfig(originBase, `${opts.dialect ?? "cue-out"}-demuxed`, { mode: "auto" })), "news-demuxed");
  }
  // The news channel as LL-HLS (two 0.96 s parts per segment, blocking
  // reloads): parts outside breaks, whole ad segments inside them.
  if (opts.ll !== false) {
    must(await api(base, "PUT", `/api/orgs/${ORG}/channels/news-ll`, channelConfig(originBase, `${opts.dialect ?? "cue-out"}-ll`, { mode: "auto" })), "news-ll");
  }
  // The news channel as MPEG-DASH (multi-period SSAI, SGAI events): the
  // origin's live MPD (SCTE-35 in an EventStream, xml+bin), CMAF video
  // and audio sets. The dev stack and the DASH suite ask for it (other
  // suites do without its poller).
  if (opts.dash) {
    must(await api(base, "PUT", `/api/orgs/${ORG}/channels/news-dash`, dashConfig(originBase, "dash", { mode: "auto" })), "news-dash");
  }
  // A channel without origin markers, for POST /cue.
  must(await api(base, "PUT", `/api/orgs/${ORG}/channels/manual`, channelConfig(originBase, "none")), "manual");
  stack.apiKey = must(await api(base, "POST", `/api/orgs/${ORG}/api-keys`, {}), "api key").json.key;
  // hls.js for the dashboard, served from our R2 (no CDN).
  const hls = readFileSync(join(ROOT, "node_modules/hls.js/dist/hls.min.js"));
  must(await api(base, "PUT", "/api/media/_static/hls.min.js", hls, adminToken()), "hls.js");
  return stack;
}

// `node tests/integration/stack.mjs --dev`: the README's first command.
if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname) && process.argv.includes("--dev")) {
  const port = Number(process.env.PORT ?? 8787);
  const originPort = Number(process.env.ORIGIN_PORT ?? 8788);
  const stack = await startStack({ port, originPort, stateDir: join(ROOT, ".wrangler/state"), lifetimeS: 30 * 86400, dash: true });
  const b = stack.base;
  const token = adminToken(ORG, 7 * 86400);
  // Creatives from ad servers are conditioned on first sight by this one.
  startConditioner(stack, ["--exit-after-s", String(30 * 86400)]);
  console.log(`
cf-ssai is running (all four workers in wrangler dev, live origin on ${stack.originBase}).

  Player, SSAI:   ${b}/${ORG}/news/master.m3u8?mode=ssai
  Player, SGAI:   ${b}/${ORG}/news/master.m3u8?mode=sgai
  Player, fMP4:   ${b}/${ORG}/news-fmp4/master.m3u8?mode=ssai   (same stream as CMAF/fMP4)
  Demuxed:        ${b}/${ORG}/news-demuxed/master.m3u8?mode=ssai   (audio en/es + WebVTT; mode=sgai too)
  LL-HLS:         ${b}/${ORG}/news-ll/master.m3u8?mode=ssai   (0.96 s parts; hls.js lowLatencyMode)
  DASH:           ${b}/${ORG}/news-dash/manifest.mpd   (multi-period SSAI; ?mode=sgai: alternative-MPD events for Shaka)
  Dashboard:      ${b}/dashboard   (paste the API key below)
  API key (org ${ORG}): ${stack.apiKey}

  Cue a 30 s break now:
    curl -X POST ${b}/cue -H 'Authorization: Bearer ${stack.apiKey}' \\
         -H 'Content-Type: application/json' -d '{"channel":"${ORG}/news","type":"start","duration":30}'

  (a JWT works too: ${token.slice(0, 24)}... ; mint one with target/release/cf-ssai token)
  Viewer country (channels with targeting keys): this stack trusts the
  CF-IPCountry request header (TRUSTED_GEO_HEADER), e.g.
    curl -H 'CF-IPCountry: DE' ${b}/${ORG}/news/master.m3u8
  A creative conditioner runs too: VAST creatives without conditioned media
  are transcoded on first sight (GET ${b}/api/orgs/${ORG}/conditioning/jobs).
  Origin breaks come every ${(40 * CADENCE_MS) / 1000}s (SCTE-35 as EXT-X-CUE-OUT). Ctrl-C stops everything.
`);
  // Cron: wrangler dev does not fire crons by itself; do it every minute.
  const cron = setInterval(() => http(`${b}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`).catch(() => {}), 60_000);
  http(`${b}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`).catch(() => {});
  const bye = () => {
    clearInterval(cron);
    stopStack(stack);
    setTimeout(() => process.exit(0), 500);
  };
  process.on("SIGINT", bye);
  process.on("SIGTERM", bye);
}
