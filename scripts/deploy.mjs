// Deploy cf-ssai to a Cloudflare account (scripts/deploy.sh is the entry).
//
//   deploy.sh [--env staging|production] [--dry-run] [--config-only] [--account-id ID]
//
// Online: finds or creates the D1 database, KV namespace, R2 bucket and the
// two queues for the environment (idempotently, by name), writes the
// generated wrangler configs under .deploy/<env>/ (nothing committed is
// edited), applies the D1 migrations, sets the secrets that are missing
// (JWT_SECRET, SESSION_SECRET, INTERNAL_SECRET generated; the same internal
// secret on all four workers), deploys decision, beacon, monitor, manifest
// in that order with the internal workers off public URLs, and prints the
// manifest worker's URL and a first API key.
//
// --dry-run: offline, no account: the same configs with placeholder ids
// derived from the account id, `wrangler deploy --dry-run` for each worker
// (bundles built by scripts/build-workers.sh), and each bundle checked
// against the Workers size limits. --config-only: just the configs.
// Re-running changes nothing that is already right: resources are found by
// name, configs are a pure function of (env, account, ids), secrets that
// exist are kept.
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync, existsSync, statSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join, relative, resolve } from "node:path";

const ROOT = resolve(new URL("..", import.meta.url).pathname);
const WRANGLER = join(ROOT, "node_modules/.bin/wrangler");
const args = process.argv.slice(2);
const flag = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const env = flag("--env") ?? "production";
const dryRun = args.includes("--dry-run");
const configOnly = args.includes("--config-only");
if (!["staging", "production"].includes(env)) throw new Error(`--env: staging or production, not ${env}`);
const accountId = flag("--account-id") ?? process.env.CLOUDFLARE_ACCOUNT_ID ?? (dryRun || configOnly ? "dry-run-account" : undefined);
const outDir = resolve(flag("--out") ?? join(ROOT, ".deploy", env));

// Workers (deploy order) and which are internal (no public URL).
const WORKERS = [
  { name: "decision", internal: true },
  { name: "beacon", internal: true },
  { name: "scte35-monitor", internal: true },
  { name: "manifest", internal: false },
];
// Workers size limits (compressed): 3 MiB on the free plan, 10 MiB paid.
const LIMIT_FREE = 3 * 1024 * 1024;
const LIMIT_PAID = 10 * 1024 * 1024;

const names = {
  d1: `cf-ssai-${env}`,
  kv: `cf-ssai-${env}-adbreak`,
  r2: `cf-ssai-${env}-ad-media`,
  queue: `cf-ssai-${env}-beacons`,
  dlq: `cf-ssai-${env}-beacons-dlq`,
  worker: (w) => `cf-ssai-${w}-${env}`,
};

function sh(cmd, cmdArgs, { input, allowFail = false } = {}) {
  const r = spawnSync(cmd, cmdArgs, { cwd: ROOT, input, encoding: "utf8", env: { ...process.env, WRANGLER_SEND_METRICS: "false" } });
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${cmdArgs.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r;
}
const wrangler = (a, o) => sh(WRANGLER, a, o);
const jsonOut = (r) => {
  const t = r.stdout.slice(r.stdout.search(/[[{]/));
  return JSON.parse(t);
};

/** Placeholder ids for a dry run: stable per (account, env, resource). */
const fakeId = (what) => createHash("sha256").update(`${accountId}/${env}/${what}`).digest("hex").slice(0, 32);

/** Find or create every resource; their ids. */
function resources() {
  if (dryRun || configOnly) return { d1: fakeId("d1"), kv: fakeId("kv") };
  const d1 = jsonOut(wrangler(["d1", "list", "--json"])).find((d) => d.name === names.d1);
  const d1Id = d1?.uuid ?? (wrangler(["d1", "create", names.d1]), jsonOut(wrangler(["d1", "list", "--json"])).find((d) => d.name === names.d1).uuid);
  const kvList = () => jsonOut(wrangler(["kv", "namespace", "list"]));
  let kv = kvList().find((n) => n.title === names.kv);
  if (!kv) {
    wrangler(["kv", "namespace", "create", names.kv]);
    kv = kvList().find((n) => n.title === names.kv);
  }
  const buckets = wrangler(["r2", "bucket", "list"]).stdout;
  if (!buckets.includes(names.r2)) wrangler(["r2", "bucket", "create", names.r2]);
  const queues = wrangler(["queues", "list"]).stdout;
  for (const q of [names.queue, names.dlq]) if (!queues.includes(q)) wrangler(["queues", "create", q]);
  return { d1: d1Id, kv: kv.id };
}

/**
 * The deployable config of one worker: the committed local config with the
 * environment's names and ids, observability on, internal workers off public
 * URLs. A pure function of its inputs (re-running writes the same bytes).
 */
function configFor(worker, ids, { env: e = env, account = accountId } = {}) {
  let t = readFileSync(join(ROOT, `wrangler-${worker}.toml`), "utf8");
  const n = (w) => `cf-ssai-${w}-${e}`;
  t = t.replace(/^name = "cf-ssai-[^"]+"/m, `name = "${n(worker)}"`);
  // Paths relative to where the config is written.
  const rel = relative(outDir, ROOT) || ".";
  t = t.replace(/^main = "workers\//m, `main = "${rel}/workers/`);
  t = t.replace(/^migrations_dir = "migrations"/m, `migrations_dir = "${rel}/migrations"`);
  t = t.replace(/^(binding = "ADBREAK_KV"\nid = )"[^"]*"/m, `$1"${ids.kv}"`);
  t = t.replace(/^database_name = "cf-ssai"\ndatabase_id = "[^"]*"/m, `database_name = "cf-ssai-${e}"\ndatabase_id = "${ids.d1}"`);
  t = t.replace(/^bucket_name = "cf-ssai-ad-media"/m, `bucket_name = "cf-ssai-${e}-ad-media"`);
  t = t.replace(/queue = "beacons-dlq"/g, `queue = "cf-ssai-${e}-beacons-dlq"`).replace(/queue = "beacons"/g, `queue = "cf-ssai-${e}-beacons"`);
  t = t.replace(/dead_letter_queue = "beacons-dlq"/g, `dead_letter_queue = "cf-ssai-${e}-beacons-dlq"`);
  t = t.replace(/service = "cf-ssai-([a-z0-9-]+)"/g, (_, w) => `service = "${n(w)}"`);
  t = t.replace(/script_name = "cf-ssai-manifest"/g, `script_name = "${n("manifest")}"`);
  // Production never reaches private addresses.
  t = t.replace(/^ALLOW_PRIVATE_ORIGINS = ".*"$/m, 'ALLOW_PRIVATE_ORIGINS = "false"');
  const internal = WORKERS.find((w) => w.name === worker)?.internal;
  if (internal && !/^workers_dev = false$/m.test(t)) throw new Error(`${worker}: internal worker without workers_dev = false`);
  const header = `# Generated by scripts/deploy.mjs for env "${e}", account ${account}: do not edit.\naccount_id = "${account}"\n`;
  const obs = /^\[observability\]/m.test(t) ? "" : "\n[observability]\nenabled = true\n";
  return header + t + obs;
}

function writeConfigs(ids) {
  mkdirSync(outDir, { recursive: true });
  const files = {};
  for (const w of WORKERS) {
    const f = join(outDir, `wrangler-${w.name}.toml`);
    const text = configFor(w.name, ids);
    const same = existsSync(f) && readFileSync(f, "utf8") === text;
    if (!same) writeFileSync(f, text);
    files[w.name] = { file: f, changed: !same };
  }
  return files;
}

function secrets(files) {
  const existing = (w) => {
    const r = wrangler(["secret", "list", "-c", files[w].file], { allowFail: true });
    try {
      return jsonOut(r).map((s) => s.name);
    } catch {
      return [];
    }
  };
  const manifestHas = existing("manifest");
  const gen = () => randomBytes(32).toString("hex");
  const put = (w, name, value) => wrangler(["secret", "put", name, "-c", files[w].file], { input: value });
  // The internal secret must be the same everywhere: generated once, when
  // the manifest worker does not have it yet.
  const internal = manifestHas.includes("INTERNAL_SECRET") ? null : gen();
  for (const w of WORKERS) {
    const has = w.name === "manifest" ? manifestHas : existing(w.name);
    if (internal && !has.includes("INTERNAL_SECRET")) put(w.name, "INTERNAL_SECRET", internal);
  }
  for (const name of ["JWT_SECRET", "SESSION_SECRET"]) if (!manifestHas.includes(name)) put("manifest", name, gen());
}

function sizeCheck(worker, dir) {
  const js = join(dir, "index.js");
  const wasm = ["index_bg.wasm", "index.wasm"].map((f) => join(ROOT, `workers/${worker}/build`, f)).find(existsSync);
  const parts = [js, wasm].filter((f) => f && existsSync(f));
  const gz = parts.reduce((n, f) => n + gzipSync(readFileSync(f)).length, 0);
  const raw = parts.reduce((n, f) => n + statSync(f).size, 0);
  const verdict = gz <= LIMIT_FREE ? "fits the free plan" : gz <= LIMIT_PAID ? "paid plan only" : "TOO LARGE";
  console.log(`  ${worker}: ${raw} bytes, ${gz} gzip: ${verdict}`);
  if (gz > LIMIT_PAID) throw new Error(`${worker}: ${gz} bytes gzipped exceeds the 10 MiB Workers limit`);
}

const ids = resources();
const files = writeConfigs(ids);
for (const [w, f] of Object.entries(files)) console.log(`${f.changed ? "wrote" : "unchanged"} ${f.file}`);
if (configOnly) process.exit(0);
if (dryRun) {
  for (const w of WORKERS) {
    const dir = join(outDir, "dist", w.name);
    wrangler(["deploy", "--dry-run", "--outdir", dir, "-c", files[w.name].file]);
    sizeCheck(w.name, dir);
  }
  console.log(`dry run for ${env}: ${WORKERS.length} workers bundled, nothing deployed`);
  process.exit(0);
}
wrangler(["d1", "migrations", "apply", names.d1, "--remote", "-c", files.manifest.file], { input: "y\n" });
secrets(files);
let url = "";
for (const w of WORKERS) {
  const r = wrangler(["deploy", "-c", files[w.name].file]);
  const m = r.stdout.match(/https:\/\/\S+\.workers\.dev/);
  if (w.name === "manifest" && m) url = m[0];
}
// A first API key (admin scope) for the first org, shown once.
const key = `cfssai_${randomBytes(24).toString("hex")}`;
const salt = randomBytes(16).toString("hex");
const hash = JSON.parse(sh(join(ROOT, "target/release/cf-ssai"), ["apikey-hash", "--key", key, "--salt", salt]).stdout);
const org = flag("--org") ?? "main";
wrangler(["d1", "execute", names.d1, "--remote", "-c", files.manifest.file, "--command",
  `INSERT OR IGNORE INTO orgs (id, name, created_ms) VALUES ('${org}', '${org}', ${Date.now()}); INSERT INTO api_keys (id, org_id, salt, hash, label, scopes, created_ms) VALUES ('${hash.id}', '${org}', '${salt}', '${hash.hash}', 'deploy', 'admin', ${Date.now()});`]);
console.log(`\ncf-ssai (${env}) is live: ${url || "(see wrangler's output for the manifest URL)"}\nAPI key for org ${org} (shown once): ${key}`);
