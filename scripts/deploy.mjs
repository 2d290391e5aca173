// Deploy cf-ssai to a Cloudflare account (scripts/deploy.sh is the entry).
//
//   deploy.sh [--env staging|production] [--dry-run] [--config-only] [--account-id ID]
//             [--conditioner container|image|none] [--conditioner-max-instances N]
//             [--conditioner-instance-type T] [--public-url URL]
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
// The fifth component, the creative conditioner (`cf-ssai conditioner`,
// image: the repo's Dockerfile), per --conditioner:
//   container (default): a Cloudflare Container. The generated manifest
//     config (never the local one: `wrangler dev` needs no Docker) gets a
//     [[containers]] entry for the ConditionerContainer Durable Object, its
//     binding (CONDITIONER) and a cron trigger whose scheduled handler wakes
//     it; wrangler builds and pushes the image at deploy (a Docker engine is
//     needed then). It reaches the admin API at --public-url (else the
//     manifest's workers.dev URL, learned at the first deploy and kept in
//     .deploy/<env>/manifest-url) with the CONDITIONER_TOKEN secret.
//   image: scripts/conditioner-image.sh builds the image (or, with no
//     Docker engine, checks its steps) for any container runtime, and the
//     command to run it is printed.
//   none: nothing for the conditioner.
// Its ConditionerContainer migration is in every generated manifest config
// (right after v1, so later migrations keep their order), whatever the mode.
// CONDITIONER_TOKEN is set like the other secrets, when missing: a platform
// API key (org "*", admin scope, label "conditioner"; its salted hash in
// D1), never expiring, revocable in D1; shown once in image mode.
//
// --dry-run: offline, no account: the same configs with placeholder ids
// derived from the account id, `wrangler deploy --dry-run` for each worker
// (bundles built by scripts/build-workers.sh), and each bundle checked
// against the Workers size limits; the conditioner is listed, its image
// built (by wrangler) only when a Docker engine answers; without one the
// manifest's config is validated with the image given as a registry
// reference instead of the Dockerfile. --config-only: just the configs.
// Re-running changes nothing that is already right: resources are found by
// name, configs are a pure function of (env, account, ids, the conditioner's
// flags and URL), secrets that exist are kept.
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

// The conditioner (see the header).
const conditioner = {
  mode: flag("--conditioner") ?? "container",
  maxInstances: Number(flag("--conditioner-max-instances") ?? 1),
  instanceType: flag("--conditioner-instance-type") ?? "standard-2",
  className: "ConditionerContainer",
  binding: "CONDITIONER",
  migration: "conditioner-v1",
  image: "./Dockerfile",
};
if (!["container", "image", "none"].includes(conditioner.mode)) throw new Error(`--conditioner: container, image or none, not ${conditioner.mode}`);
if (!Number.isInteger(conditioner.maxInstances) || conditioner.maxInstances < 1 || conditioner.maxInstances > 16) throw new Error("--conditioner-max-instances: 1 to 16");
const urlFile = join(outDir, "manifest-url");
const publicUrl = (flag("--public-url") ?? (existsSync(urlFile) ? readFileSync(urlFile, "utf8").trim() : "")).replace(/\/+$/, "");
if (publicUrl && !/^https:\/\/[^\s"]+$/.test(publicUrl)) throw new Error(`--public-url: an https URL, not ${publicUrl}`);
/** Whether a Docker engine answers (the docker CLI alone is not enough). */
const dockerEngine = () => spawnSync("docker", ["info"], { stdio: "ignore" }).status === 0;

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
function configFor(worker, ids, { env: e = env, account = accountId, dir = outDir, image = null, apiUrl = publicUrl } = {}) {
  let t = readFileSync(join(ROOT, `wrangler-${worker}.toml`), "utf8");
  const n = (w) => `cf-ssai-${w}-${e}`;
  t = t.replace(/^name = "cf-ssai-[^"]+"/m, `name = "${n(worker)}"`);
  // Paths relative to where the config is written.
  const rel = relative(dir, ROOT) || ".";
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
  if (worker === "manifest") t = conditionerConfig(t, { rel, image, apiUrl });
  const internal = WORKERS.find((w) => w.name === worker)?.internal;
  if (internal && !/^workers_dev = false$/m.test(t)) throw new Error(`${worker}: internal worker without workers_dev = false`);
  const header = `# Generated by scripts/deploy.mjs for env "${e}", account ${account}: do not edit.\naccount_id = "${account}"\n`;
  const obs = /^\[observability\]/m.test(t) ? "" : "\n[observability]\nenabled = true\n";
  return header + t + obs;
}

/**
 * The conditioner's part of the manifest worker's deployable config: its
 * Durable Object migration always; in container mode the binding, the
 * [[containers]] entry (the Dockerfile, or `image` for validation without
 * Docker), the variables its Durable Object reads and the cron that wakes it.
 */
function conditionerConfig(t, { rel, image, apiUrl }) {
  const c = conditioner;
  const v1 = /^(\[\[migrations\]\]\ntag = "v1"\nnew_sqlite_classes = \["ChannelDO"\]\n)/m;
  if (!v1.test(t)) throw new Error("wrangler-manifest.toml: the v1 migration (ChannelDO) moved; place the conditioner's migration again");
  t = t.replace(v1, `$1\n# The conditioner's Durable Object (scripts/deploy.mjs; every mode, so the\n# migration history stays the same across --conditioner modes).\n[[migrations]]\ntag = "${c.migration}"\nnew_sqlite_classes = ["${c.className}"]\n`);
  if (c.mode !== "container") return t;
  const vars = [`CONDITIONER_INSTANCES = "${c.maxInstances}"`];
  if (apiUrl) vars.push(`CONDITIONER_API = "${apiUrl}"`);
  t = t.replace(/^(ALLOW_PRIVATE_ORIGINS = "false"\n)/m, `$1# The conditioner container (scripts/deploy.mjs --conditioner container).\n${vars.join("\n")}\n`);
  t = t.replace(/^(\[\[durable_objects\.bindings\]\]\nname = "CHANNEL_DO"\nclass_name = "ChannelDO"\n)/m,
    `$1\n# The creative conditioner: a Cloudflare Container (scripts/deploy.mjs).\n[[durable_objects.bindings]]\nname = "${c.binding}"\nclass_name = "${c.className}"\n`);
  if (!t.includes(`class_name = "${c.className}"`)) throw new Error("wrangler-manifest.toml: the CHANNEL_DO binding moved; place the conditioner's binding again");
  const img = image ?? `${rel}/${c.image.replace(/^\.\//, "")}`;
  return `${t.trimEnd()}\n
# The creative conditioner (cf-ssai conditioner) as a Cloudflare Container of
# the ConditionerContainer Durable Object; image: the repo's Dockerfile.
[[containers]]
class_name = "${c.className}"
image = "${img}"
max_instances = ${c.maxInstances}
instance_type = "${c.instanceType}"

# Every minute the scheduled handler wakes the ConditionerContainer (it
# starts the container while conditioning jobs wait). Deployed configs only.
[triggers]
crons = ["* * * * *"]
`;
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
  // The conditioner's credential: a platform API key (JWTs live at most
  // JWT_MAX_LIFETIME_S, 30 days; a container runs for months).
  if (conditioner.mode !== "none" && !manifestHas.includes("CONDITIONER_TOKEN")) {
    const key = mintKey("*", "conditioner", files);
    put("manifest", "CONDITIONER_TOKEN", key);
    return { conditionerKey: key };
  }
  return {};
}

/** An admin API key for `org` (its salted hash inserted in D1); the key. */
function mintKey(org, label, files) {
  const key = `cfssai_${randomBytes(24).toString("hex")}`;
  const salt = randomBytes(16).toString("hex");
  const hash = JSON.parse(sh(join(ROOT, "target/release/cf-ssai"), ["apikey-hash", "--key", key, "--salt", salt]).stdout);
  const name = org === "*" ? "platform" : org;
  wrangler(["d1", "execute", names.d1, "--remote", "-c", files.manifest.file, "--command",
    `INSERT OR IGNORE INTO orgs (id, name, created_ms) VALUES ('${org}', '${name}', ${Date.now()}); INSERT INTO api_keys (id, org_id, salt, hash, label, scopes, created_ms) VALUES ('${hash.id}', '${org}', '${salt}', '${hash.hash}', '${label}', 'admin', ${Date.now()});`]);
  return key;
}

/** scripts/conditioner-image.sh: the image built (or its steps checked); ok? */
function buildImage() {
  const r = spawnSync(join(ROOT, "scripts/conditioner-image.sh"), ["--tag", `cf-ssai-conditioner:${env}`], { cwd: ROOT, stdio: "inherit" });
  return r.status === 0;
}

/** What the conditioner is in this deployment: one line. */
function conditionerLine(built) {
  const c = conditioner;
  if (c.mode === "none") return "conditioner: none (--conditioner none): run `cf-ssai conditioner` yourself";
  const what = c.mode === "container"
    ? `Cloudflare Container ${c.className} (image ${c.image}, max_instances ${c.maxInstances}, ${c.instanceType})`
    : `container image for any runtime (image ${c.image})`;
  return `conditioner: ${what} — ${built}`;
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

if (!dryRun && !configOnly && conditioner.mode === "container" && !dockerEngine()) {
  // Before anything is created or changed.
  throw new Error("--conditioner container: wrangler builds and pushes the conditioner's image at deploy and needs a Docker engine (docker info failed). Start one, or deploy with --conditioner image (any runtime) or --conditioner none.");
}
const ids = resources();
const files = writeConfigs(ids);
for (const [w, f] of Object.entries(files)) console.log(`${f.changed ? "wrote" : "unchanged"} ${f.file}`);
if (configOnly) process.exit(0);
const engine = conditioner.mode !== "none" && dockerEngine();
if (dryRun) {
  for (const w of WORKERS) {
    const dir = join(outDir, "dist", w.name);
    let config = files[w.name].file;
    if (w.name === "manifest" && conditioner.mode === "container" && !engine) {
      // wrangler builds a Dockerfile's image even in a dry run, and needs a
      // Docker engine for it: without one the same config is validated with
      // the image as a registry reference (nothing is pulled in a dry run).
      const vdir = join(outDir, "dist");
      mkdirSync(vdir, { recursive: true });
      config = join(vdir, "wrangler-manifest.registry-image.toml");
      writeFileSync(config, configFor("manifest", ids, { dir: vdir, image: `registry.cloudflare.com/${accountId}/cf-ssai-conditioner:dry-run` }));
    }
    wrangler(["deploy", "--dry-run", "--outdir", dir, "-c", config]);
    sizeCheck(w.name, dir);
  }
  const built = conditioner.mode === "container"
    ? (engine ? "image built by wrangler's dry run (Docker engine present)" : "not built here: no Docker engine (config validated with a registry image reference; scripts/conditioner-image.sh --check checks the image's steps)")
    : engine ? (buildImage() ? `image built: cf-ssai-conditioner:${env}` : "image build FAILED (see above)") : "not built here: no Docker engine (scripts/conditioner-image.sh --check checks the image's steps)";
  console.log(conditionerLine(built));
  if (conditioner.mode === "container") console.log(`  its API URL (CONDITIONER_API): ${publicUrl || "the manifest's URL, learned at the first deploy (or --public-url)"}`);
  console.log(`dry run for ${env}: ${WORKERS.length} workers bundled, nothing deployed`);
  process.exit(0);
}
wrangler(["d1", "migrations", "apply", names.d1, "--remote", "-c", files.manifest.file], { input: "y\n" });
const minted = secrets(files);
let url = "";
for (const w of WORKERS) {
  const r = wrangler(["deploy", "-c", files[w.name].file]);
  const m = r.stdout.match(/https:\/\/\S+\.workers\.dev/);
  if (w.name === "manifest" && m) url = m[0];
}
if (conditioner.mode === "container" && !publicUrl && url) {
  // The conditioner's API URL was not known: the manifest's URL, kept for
  // the next runs, and the manifest deployed again with it.
  writeFileSync(urlFile, `${url}\n`);
  writeFileSync(files.manifest.file, configFor("manifest", ids, { apiUrl: url }));
  wrangler(["deploy", "-c", files.manifest.file]);
  console.log(`conditioner: CONDITIONER_API = ${url} (kept in ${urlFile}; --public-url to use a custom domain)`);
}
// The image for any runtime: built, or (no engine) its steps checked; a
// failure is reported below, after the workers' summary, not thrown.
const imageOk = conditioner.mode === "image" ? buildImage() : true;
// A first API key (admin scope) for the first org, shown once.
const org = flag("--org") ?? "main";
const key = mintKey(org, "deploy", files);
const live = publicUrl || url;
console.log(`\ncf-ssai (${env}) is live: ${live || "(see wrangler's output for the manifest URL)"}\nAPI key for org ${org} (shown once): ${key}`);
if (conditioner.mode === "container") console.log(conditionerLine("deployed with the manifest worker; started by its cron while conditioning jobs wait"));
if (conditioner.mode === "image") {
  console.log(conditionerLine(!imageOk ? "NOT ready: scripts/conditioner-image.sh failed (see its output above)"
    : engine ? `built as cf-ssai-conditioner:${env}` : "not built here: no Docker engine (its steps were checked: scripts/conditioner-image.sh --check)"));
  console.log(`  run it anywhere: docker run -e CF_SSAI_API=${live || "URL"} -e CF_SSAI_TOKEN=${minted.conditionerKey ? minted.conditionerKey + " (platform key, shown once)" : "<the conditioner key shown when it was minted>"} cf-ssai-conditioner:${env}`);
}
