// The deployment path without an account (scripts/deploy.sh): generated
// configs are a pure function of (env, account, ids), so a second run
// changes nothing; internal workers stay off public URLs; no local
// placeholder survives; a dry run bundles all four workers within the
// Workers size limits; and the fifth component, the conditioner, is listed
// and configured as a Cloudflare Container in the generated manifest config
// only (the local one stays Docker-free).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "./stack.mjs";

const deploy = (...args) => spawnSync(join(ROOT, "scripts/deploy.sh"), args, { cwd: ROOT, encoding: "utf8" });

test("generated deployment config: idempotent, internal workers private, nothing local left", () => {
  const out = mkdtempSync(join(tmpdir(), "cf-ssai-deploy-"));
  const first = deploy("--config-only", "--env", "staging", "--account-id", "f00dfeed", "--out", out);
  assert.equal(first.status, 0, first.stderr);
  const files = readdirSync(out).filter((f) => f.endsWith(".toml")).sort();
  assert.deepEqual(files, ["wrangler-beacon.toml", "wrangler-decision.toml", "wrangler-manifest.toml", "wrangler-scte35-monitor.toml"]);
  const before = files.map((f) => readFileSync(join(out, f), "utf8"));
  const second = deploy("--config-only", "--env", "staging", "--account-id", "f00dfeed", "--out", out);
  assert.equal(second.status, 0, second.stderr);
  assert.equal((second.stdout.match(/^unchanged /gm) ?? []).length, 4, second.stdout);
  assert.deepEqual(files.map((f) => readFileSync(join(out, f), "utf8")), before, "the second run changes nothing");
  for (const [i, f] of files.entries()) {
    const t = before[i];
    assert.match(t, /^account_id = "f00dfeed"$/m, f);
    assert.match(t, /^name = "cf-ssai-[a-z0-9-]+-staging"$/m, f);
    assert.doesNotMatch(t, /cf_ssai_adbreak_kv|cf-ssai-local|"beacons"|ALLOW_PRIVATE_ORIGINS = "(true|127)/, `${f}: local values left`);
    assert.match(t, /^\[observability\]\nenabled = true$/m, f);
    if (f !== "wrangler-manifest.toml") assert.match(t, /^workers_dev = false$/m, `${f}: internal`);
  }
  // Another environment or account: other names and ids.
  const prod = deploy("--config-only", "--env", "production", "--account-id", "f00dfeed", "--out", join(out, "prod"));
  assert.equal(prod.status, 0, prod.stderr);
  const p = readFileSync(join(out, "prod", "wrangler-manifest.toml"), "utf8");
  assert.match(p, /cf-ssai-manifest-production/);
  assert.notEqual(p.match(/^id = "([0-9a-f]+)"$/m)[1], before[2].match(/^id = "([0-9a-f]+)"$/m)[1]);
});

test("the conditioner: a Cloudflare Container in the generated manifest config, never in the local one", () => {
  const out = mkdtempSync(join(tmpdir(), "cf-ssai-deploy-"));
  const r = deploy("--config-only", "--env", "production", "--account-id", "f00dfeed", "--out", out,
    "--conditioner-max-instances", "3", "--public-url", "https://ssai.example.com");
  assert.equal(r.status, 0, r.stderr);
  const m = readFileSync(join(out, "wrangler-manifest.toml"), "utf8");
  const containers = m.match(/^\[\[containers\]\]\n((?:[a-z_]+ = .*\n)+)/m);
  assert.ok(containers, "a [[containers]] entry");
  assert.match(containers[1], /^class_name = "ConditionerContainer"$/m);
  assert.match(containers[1], /^image = "[^"]*\/Dockerfile"$/m);
  assert.match(containers[1], /^max_instances = 3$/m);
  assert.match(containers[1], /^instance_type = "standard-2"$/m);
  assert.match(m, /^\[\[durable_objects\.bindings\]\]\nname = "CONDITIONER"\nclass_name = "ConditionerContainer"$/m, "the DO binding");
  assert.match(m, /^\[\[migrations\]\]\ntag = "conditioner-v1"\nnew_sqlite_classes = \["ConditionerContainer"\]$/m, "the migration");
  // After v1: migrations added later keep their order after it.
  assert.ok(m.indexOf('tag = "v1"') < m.indexOf('tag = "conditioner-v1"'));
  assert.match(m, /^\[triggers\]\ncrons = \["\* \* \* \* \*"\]$/m, "the cron that wakes it");
  assert.match(m, /^CONDITIONER_INSTANCES = "3"$/m);
  assert.match(m, /^CONDITIONER_API = "https:\/\/ssai\.example\.com"$/m);
  // Other workers: untouched by it.
  for (const w of ["decision", "beacon", "scte35-monitor"]) {
    assert.doesNotMatch(readFileSync(join(out, `wrangler-${w}.toml`), "utf8"), /Conditioner|CONDITIONER|\[\[containers\]\]/, w);
  }
  // The local config: no container, no binding, no cron (wrangler dev needs no Docker).
  const local = readFileSync(join(ROOT, "wrangler-manifest.toml"), "utf8").replace(/#.*$/gm, "");
  assert.doesNotMatch(local, /\[\[containers\]\]|ConditionerContainer|CONDITIONER|^\[triggers\]/m);
  // --conditioner image: no container or cron, the migration kept.
  const img = deploy("--config-only", "--env", "production", "--account-id", "f00dfeed", "--out", join(out, "image"), "--conditioner", "image");
  assert.equal(img.status, 0, img.stderr);
  const mi = readFileSync(join(out, "image", "wrangler-manifest.toml"), "utf8");
  assert.doesNotMatch(mi, /\[\[containers\]\]|^\[triggers\]|name = "CONDITIONER"/m);
  assert.match(mi, /^tag = "conditioner-v1"$/m);
  assert.notEqual(deploy("--config-only", "--out", join(out, "bad"), "--conditioner", "kubernetes").status, 0);
});

test("dry run: every worker bundles and fits the Workers size limits, offline", () => {
  const r = deploy("--dry-run", "--env", "production", "--out", mkdtempSync(join(tmpdir(), "cf-ssai-dry-")));
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.equal((r.stdout.match(/gzip: fits the free plan/g) ?? []).length, 4, r.stdout);
  assert.match(r.stdout, /4 workers bundled, nothing deployed/);
  // The fifth component: listed, built only when a Docker engine answers.
  assert.match(r.stdout, /^conditioner: Cloudflare Container ConditionerContainer \(image \.\/Dockerfile, max_instances 1, standard-2\) — (image built by wrangler's dry run|not built here: no Docker engine)/m, r.stdout);
});
