// The playback path's per-request pipeline (crates/bench-wasm) compiled to
// wasm32 with the workers' release profile, timed in V8 under node:
// decode the KV values → parse the origin window → detect cues → check the
// view vouches → the breaks the window needs → splice and render. Last, the
// DASH path (each DIR with a dash/ subdirectory): the origin MPD read, its
// window as HLS, cues, the same KV reads (binary), the multi-period splice
// (bench-inputs writes them for 1 h without cohorts).
//
// node tests/bench/wasm-pipeline.mjs WASM DIR... (each DIR from bench-inputs)
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [wasmPath, ...dirs] = process.argv.slice(2);
const { instance } = await WebAssembly.instantiate(readFileSync(wasmPath), {});
const { memory, alloc, run_new, run_old, run_part, run_dash, set_cohort } = instance.exports;

function put(text) {
  const bytes = typeof text === "string" ? Buffer.from(text, "utf8") : text;
  const ptr = alloc(bytes.length);
  new Uint8Array(memory.buffer, ptr, bytes.length).set(bytes);
  return [ptr, bytes.length];
}

function time(fn, iters) {
  fn(Math.max(1, iters / 10)); // warm up (tier-up in V8)
  const rounds = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    const n = fn(iters);
    const ns = Number(process.hrtime.bigint() - t0);
    if (!n) throw new Error("the pipeline produced no playlist (inputs do not vouch)");
    rounds.push(ns / iters / 1000);
  }
  rounds.sort((a, b) => a - b);
  return rounds[2]; // median µs per request
}

console.log("| history | KV bytes read (view + pod) | µs per request, bounded view | µs per request, whole-history value (before) | before: value bytes |");
console.log("|---|---|---|---|---|");
for (const dir of dirs) {
  const r = (f) => readFileSync(join(dir, f), "utf8");
  const meta = JSON.parse(r("meta.json"));
  // A cohort's viewer (its pods, its discontinuity count), or the default.
  set_cohort(...put(existsSync(join(dir, "cohort.txt")) ? r("cohort.txt") : ""));
  const view = put(r("view.json"));
  const pod = put(r("pod.json"));
  const origin = put(r("origin.m3u8"));
  const full = put(r("full.json"));
  const usNew = time((n) => run_new(view[0], view[1], pod[0], pod[1], origin[0], origin[1], n), 2000);
  const usOld = time((n) => run_old(full[0], full[1], origin[0], origin[1], n), 50);
  const who = meta.cohorts ? `, ${meta.cohorts} cohorts, one cohort's viewer` : "";
  console.log(`| ${meta.hours} h (${meta.breaks_registered} breaks${who}) | ${meta.view_bytes} + ${meta.pod_bytes} | ${usNew.toFixed(1)} | ${usOld.toFixed(0)} | ${meta.old_bytes} |`);
}

// Where the time goes, on the last history: each KV value's decoding, and
// the request with both already decoded (a warm isolate's pod cache).
// (For the last two histories: 24 h, and with cohorts when given.)
for (const dir of dirs.slice(-2)) {
  const r = (f) => readFileSync(join(dir, f), "utf8");
  const [view, pod, origin] = [put(r("view.json")), put(r("pod.json")), put(r("origin.m3u8"))];
  set_cohort(...put(existsSync(join(dir, "cohort.txt")) ? r("cohort.txt") : ""));
  const part = (k) => time((n) => run_part(view[0], view[1], pod[0], pod[1], origin[0], origin[1], n, k), 2000);
  const meta = JSON.parse(r("meta.json"));
  console.log("");
  console.log(`${meta.hours} h${meta.cohorts ? `, ${meta.cohorts} cohorts, one cohort's viewer` : ""}:`);
  console.log("");
  console.log("| part of one request | µs |");
  console.log("|---|---|");
  console.log(`| decode the view (${view[1]} B) | ${part(0).toFixed(1)} |`);
  console.log(`| decode the pod (${pod[1]} B) | ${part(1).toFixed(1)} |`);
  console.log(`| the rest (parse, cues, edge, splice, render) | ${part(2).toFixed(1)} |`);
  console.log(`| decode the binary view (${run_part(view[0], view[1], pod[0], pod[1], origin[0], origin[1], 1, 6)} B) | ${part(3).toFixed(1)} |`);
  console.log(`| decode the binary lean pod (${run_part(view[0], view[1], pod[0], pod[1], origin[0], origin[1], 1, 7)} B) | ${part(4).toFixed(1)} |`);
  console.log(`| one request, binary view + lean pod decoded (an isolate's first for the break) | ${part(5).toFixed(1)} |`);
  console.log(`| **one request, binary view, the lean pod from the isolate's cache (every other request)** | **${part(8).toFixed(1)}** |`);
}

// The DASH MPD request (workers/manifest/src/dash.rs): binary view and lean
// pod, as the worker reads them, for the default audience.
const dashDirs = dirs.filter((d) => existsSync(join(d, "dash")));
if (dashDirs.length) {
  const f = (n) => n.toLocaleString("en-US");
  console.log("");
  console.log("DASH: 10-segment live MPD (2 sets, 3 Representations), 1.92 s segments, a 15.36 s break every 76.8 s, 6 segments into the break; demuxed CMAF pod (two ads and the slate, fMP4 video-only at two rungs + audio-only):");
  console.log("");
  console.log("| history | request | KV bytes read (binary view + lean pod) | µs, view + pod decoded (an isolate's first request for the break) | µs, the pod from the isolate's cache (every other request) |");
  console.log("|---|---|---|---|---|");
  for (const dir of dashDirs) {
    const meta = JSON.parse(readFileSync(join(dir, "meta.json"), "utf8"));
    const d = meta.dash;
    const b = (name) => put(readFileSync(join(dir, "dash", name)));
    const [view, pod, mpd] = [b("view.bin"), b("pod.bin"), b("manifest.mpd")];
    const [qview, qmpd] = [b("quiet-view.bin"), b("quiet.mpd")];
    const dash = (v, p, m, now, warm) => (n) => run_dash(v[0], v[1], p[0], p[1], m[0], m[1], now, n, warm);
    const cold = time(dash(view, pod, mpd, d.now_ms, 0), 2000);
    const warm = time(dash(view, pod, mpd, d.now_ms, 1), 2000);
    // No pod may be read: an empty pod refuses (the request then fails).
    const quiet = time(dash(qview, [0, 0], qmpd, d.quiet_now_ms, 0), 2000);
    const h = `${meta.hours} h (${d.breaks_registered} breaks)`;
    console.log(`| ${h} | DASH MPD request in a break (multi-period SSAI) | ${f(d.view_bytes)} + ${f(d.pod_bytes)} | ${cold.toFixed(1)} | ${warm.toFixed(1)} |`);
    console.log(`| ${h} | DASH MPD request, no break in view | ${f(d.quiet_view_bytes)} | ${quiet.toFixed(1)} | ${quiet.toFixed(1)} (no pod read) |`);
  }
  // Where the time goes (the first history): the request's first steps
  // alone, cumulative; the rest is the view's reads and the splice.
  const dir = dashDirs[0];
  const d = JSON.parse(readFileSync(join(dir, "meta.json"), "utf8")).dash;
  const mpd = put(readFileSync(join(dir, "dash", "manifest.mpd")));
  const step = (k) => time((n) => run_dash(0, 0, 0, 0, mpd[0], mpd[1], d.now_ms, n, k), 2000);
  const [parse, win, cues] = [step(2), step(3), step(4)];
  console.log("");
  console.log("| DASH request in a break, cumulative | µs |");
  console.log("|---|---|");
  console.log(`| parse the origin MPD (${f(d.mpd_bytes)} B) | ${parse.toFixed(1)} |`);
  console.log(`| + its window as an HLS media playlist | ${win.toFixed(1)} |`);
  console.log(`| + parse that, detect cues | ${cues.toFixed(1)} |`);
  console.log(`| + the view's reads, the multi-period splice (${f(d.out_bytes)} B out, ${d.out_periods} Periods): the whole request, the pod from the isolate's cache | ${time(dash_args(dir, d), 2000).toFixed(1)} |`);
}

function dash_args(dir, d) {
  const b = (name) => put(readFileSync(join(dir, "dash", name)));
  const [view, pod, mpd] = [b("view.bin"), b("pod.bin"), b("manifest.mpd")];
  return (n) => run_dash(view[0], view[1], pod[0], pod[1], mpd[0], mpd[1], d.now_ms, n, 1);
}
