// The deployment path without an account (scripts/deploy.sh): generated
// configs are a pure function of (env, account, ids), so a second run
// changes nothing; internal workers stay off public URLs; no local
// placeholder survives; and a dry run bundles all four workers within the
// Workers size limits.
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

test("dry run: every worker bundles and fits the Workers size limits, offline", () => {
  const r = deploy("--dry-run", "--env", "production", "--out", mkdtempSync(join(tmpdir(), "cf-ssai-dry-")));
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.equal((r.stdout.match(/gzip: fits the free plan/g) ?? []).length, 4, r.stdout);
  assert.match(r.stdout, /4 workers bundled, nothing deployed/);
});
