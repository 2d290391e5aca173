"use strict";
const $ = (s) => document.querySelector(s);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
// A `#key=` link signs in, but never replaces a stored key unasked: a link
// someone sent would otherwise quietly sign the operator into their org,
// where what the operator then does and uploads is theirs. With a key
// stored, the operator is told which org the link's key belongs to (from
// /api/whoami) and confirms; declining, or a key that does not work, keeps
// the stored one. The fragment is cleared either way.
async function whoami(k) {
  const r = await fetch("/api/whoami", { headers: { Authorization: "Bearer " + k } });
  if (!r.ok) throw new Error(r.status);
  return r.json();
}
async function keyFromLink() {
  if (!location.hash.startsWith("#key=")) return;
  let linked = "";
  try { linked = decodeURIComponent(location.hash.slice(5)).trim(); } catch {}
  history.replaceState(null, "", location.pathname + location.search);
  const stored = localStorage.getItem("cfssai.key");
  if (!linked || linked === stored) return;
  if (stored) {
    const org = (w) => (w.org === "*" ? "* (every org: platform admin)" : w.org);
    const next = await whoami(linked).catch(() => null);
    if (!next) return;
    const now = await whoami(stored).catch(() => null);
    const msg = `This link signs you in to org ${org(next)}` + (now ? `, replacing your key for org ${org(now)}.` : ", replacing your stored key.") + " Only continue if you asked for this link.";
    if (!window.confirm(msg)) return;
  }
  localStorage.setItem("cfssai.key", linked);
}
let key = null;
let org = null, hls = null;
async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { Authorization: "Bearer " + key, "Content-Type": "application/json", ...(opts.headers || {}) } });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.error || r.status);
  return j;
}
function login() { $("#login").hidden = false; $("#app").hidden = true; }
$("#save").onclick = () => { key = $("#key").value.trim(); localStorage.setItem("cfssai.key", key); start(); };
$("#logout").onclick = () => { localStorage.removeItem("cfssai.key"); location.reload(); };
async function start() {
  if (!key) return login();
  try { org = (await api("/api/whoami")).org; } catch (e) { return login(); }
  if (org === "*") org = "demo";
  $("#who").textContent = "org " + org;
  $("#login").hidden = true; $("#app").hidden = false;
  await refresh();
  setInterval(refresh, 3000);
  preview();
}
async function refresh() {
  const chans = (await api(`/api/orgs/${org}/channels?limit=200`)).items;
  // Poller stats from each channel's DO (the first 30 SCTE-35 channels).
  const mon = {};
  await Promise.all(chans.filter((c) => c.config.scte35_enabled).slice(0, 30).map(async (c) => {
    try { mon[c.slug] = await api(`/api/orgs/${org}/channels/${encodeURIComponent(c.slug)}/monitor`); } catch {}
  }));
  const monCell = (c) => { const m = mon[c.slug]; if (!m) return "—"; const s = m.stats;
    const ago = s.last_ms ? ((Date.now() - s.last_ms) / 1000).toFixed(1) + " s ago" : "never";
    return `${m.running ? "" : "<b>stopped</b> "}${s.polls} · ${s.late} · ${s.errors} · ${ago}`; };
  $("#channels tbody").innerHTML = chans.map((c) => `<tr class="channel"><td>${esc(c.slug)}</td><td>${esc(c.config.mode)}</td>
    <td class="${c.health === "ok" ? "ok" : "bad"}">${esc(c.health)}${c.health_detail ? " — " + esc(c.health_detail) : ""}</td>
    <td>${monCell(c)}</td>
    <td><code>${esc(c.config.origin_url)}</code></td><td><a href="/${esc(org)}/${esc(c.slug)}/master.m3u8">playlist</a></td></tr>`).join("");
  const sel = $("#ch");
  if (!sel.options.length) { sel.innerHTML = chans.map((c) => `<option>${esc(c.slug)}</option>`).join(""); sel.value = chans.some((c) => c.slug === "news") ? "news" : sel.value; }
  const br = (await api(`/api/orgs/${org}/breaks`)).items;
  $("#breaks tbody").innerHTML = br.slice(0, 15).map((b) => { const r = JSON.parse(b.record), p = JSON.parse(b.pod);
    return `<tr><td>${esc(b.slug)}</td><td>${esc(r.id)}</td><td>${esc(b.source)}</td><td>${r.anchor_msn}</td><td>${r.cut_after ?? r.segment_count}/${r.segment_count}</td>
    <td>${esc(p.source)}: ${p.items.map((i) => esc(i.ad_id)).join(", ") || "slate"}${p.fill_s ? ` + ${p.fill_s}s slate` : ""}</td></tr>`; }).join("");
  const slug = sel.value;
  const cfg = (chans.find((c) => c.slug === slug) || {}).config || {};
  await Promise.all([timeline(slug, cfg).catch((e) => status("timeline: " + e.message)), sparks(slug).catch((e) => status("metrics: " + e.message)), conditioning().catch((e) => status("jobs: " + e.message))]);
}
// Creatives seen without conditioned media, and what the conditioners did.
async function conditioning() {
  const [jobs, st] = await Promise.all([api(`/api/orgs/${org}/conditioning/jobs`).then((r) => r.items), api(`/api/orgs/${org}/conditioning/stats`)]);
  const fails = Object.entries(st.failures).map(([k, v]) => `${esc(k)} ${v}`).join(", ") || "none";
  $("#jobstats").textContent = "";
  $("#jobstats").insertAdjacentHTML("beforeend", `<span>queued <b>${st.queued}</b> (oldest ${st.oldest_queued_s} s)</span> <span>running <b>${st.running}</b></span> <span>ready in the last hour <b>${st.ready}</b>: first sight → playable p50 <b>${st.latency_p50_s} s</b>, p95 <b>${st.latency_p95_s} s</b>; work p50 ${st.work_p50_s} s, p95 ${st.work_p95_s} s</span> <span>failures: ${fails}</span>`);
  const cls = { ready: "ok", failed: "bad" };
  const secs = (j) => (j.finished_ms && j.started_ms ? ((j.finished_ms - j.started_ms) / 1000).toFixed(1) + " s" : j.started_ms ? "running" : "waiting");
  $("#jobs tbody").innerHTML = jobs.slice(0, 20).map((j) => `<tr class="job"><td>${esc(j.creative_id)}<br><code>${esc(j.identity)}</code></td>
    <td>${esc(j.source_kind)} <code>${esc(j.source_url)}</code></td><td class="${cls[j.state] || ""}">${esc(j.state)}</td>
    <td>${j.attempts}</td><td>${j.seen}</td><td>${secs(j)}</td><td>${esc(j.reason || (j.ad_ids ? JSON.parse(j.ad_ids).join(", ") : ""))}${notes(j)}</td></tr>`).join("") || `<tr><td colspan="7">No creative has needed conditioning yet.</td></tr>`;
}
// The conditioner's notes on a job: the source it chose and why, the
// creative's length and padding, a VAST Duration that disagrees.
function notes(j) {
  let n;
  try { n = j.notes ? JSON.parse(j.notes) : null; } catch { n = null; }
  if (!n) return "";
  const src = n.source ? `${n.source.video_codec} ${n.source.width}x${n.source.height} ${n.source.container}` : "";
  const len = n.duration_s != null ? `${n.duration_s} s + ${n.padding_s} s held` : "";
  return `<br><small>${esc([src, len, ...(n.notes || []).filter((x) => x.startsWith("VAST"))].filter(Boolean).join(" · "))}</small>`;
}
function status(t) { $("#status").textContent = t; }
const SVG = "http://www.w3.org/2000/svg";
function el(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}
// The selected channel's last 150 s and next 30 s: content, each break with
// its ad slots and slate fill (from the sequencer's state: what every
// viewer is spliced from), the newest segment the sequencer examined (the
// live edge, moving with each refresh) and now.
async function timeline(slug, cfg) {
  $("#tl-ch").textContent = slug;
  const st = await api(`/api/orgs/${org}/channels/${encodeURIComponent(slug)}/breaks`);
  const svg = $("#timeline");
  svg.replaceChildren();
  const W = 1200, now = Date.now(), t0 = now - 150000, t1 = now + 30000;
  const x = (t) => Math.max(0, Math.min(W, ((t - t0) / (t1 - t0)) * W));
  const cadence = cfg.cadence_ms || 2000;
  // A point of the origin timeline: the sequencer's mark, else the newest
  // break's anchor (MSN and PDT of its first segment).
  const anchored = (st.entries || []).filter((e) => e.record.anchor_pdt_ms != null).map((e) => [e.record.anchor_msn, e.record.anchor_pdt_ms]);
  const mark = st.origin_mark || anchored[anchored.length - 1];
  const pdtOf = (msn) => (mark ? mark[1] + (msn - mark[0]) * cadence : null);
  const edge = pdtOf((st.checked_through_msn || 0) + 1);
  svg.append(el("rect", { x: 0, y: 30, width: W, height: 50, fill: "#c9d3e3" }));
  if (edge) svg.append(el("rect", { x: x(edge), y: 30, width: W - x(edge), height: 50, fill: "#f5f6f8" }));
  for (let t = Math.ceil(t0 / 30000) * 30000; t <= t1; t += 30000) {
    svg.append(el("line", { x1: x(t), x2: x(t), y1: 82, y2: 88, stroke: "#8a94a6" }));
    svg.append(el("text", { x: x(t) + 2, y: 98 }, new Date(t).toISOString().slice(11, 19)));
  }
  for (const e of st.entries || []) {
    const r = e.record, p = e.pod;
    const start = r.anchor_pdt_ms ?? pdtOf(r.anchor_msn);
    if (start == null) continue;
    const segs = r.cut_after != null ? Math.min(r.cut_after, r.segment_count) : r.segment_count;
    const end = start + segs * (r.cadence_ms || cadence);
    if (end < t0 || start > t1) continue;
    const g = el("g", { class: "break", "data-id": r.id });
    g.append(el("rect", { x: x(start), y: 30, width: Math.max(1, x(end) - x(start)), height: 50, fill: "#e7ebf3", stroke: "#8a94a6", "stroke-dasharray": "4 3" }));
    let t = start;
    for (const it of (p && p.items) || []) {
      const w = Math.max(1, x(Math.min(end, t + it.duration_s * 1000)) - x(t));
      g.append(el("rect", { class: "ad", x: x(t), y: 32, width: w, height: 46, fill: "#2f7de1", stroke: "#fff" }));
      if (w > 40) g.append(el("text", { x: x(t) + 3, y: 60, style: "fill:#fff" }, it.ad_id));
      t += it.duration_s * 1000;
    }
    if (p && t < end) g.append(el("rect", { class: "slate", x: x(t), y: 32, width: Math.max(1, x(end) - x(t)), height: 46, fill: "#f0a830" }));
    // Addressable breaks: how many audience cohorts got a pod of their own.
    const cohorts = (r.cohorts || []).length;
    const who = cohorts ? ` · ${cohorts} cohort${cohorts > 1 ? "s" : ""}` : "";
    g.append(el("text", { x: x(start) + 2, y: 24 }, `${r.id} · ${p ? p.source : "deciding…"}${who}`));
    svg.append(g);
  }
  if (edge) {
    svg.append(el("line", { id: "edge", x1: x(edge), x2: x(edge), y1: 14, y2: 84, stroke: "#b3261e", "stroke-width": 2 }));
    svg.append(el("text", { x: x(edge) + 3, y: 112 }, `live edge MSN ${st.checked_through_msn}`));
  }
  svg.append(el("line", { x1: x(now), x2: x(now), y1: 26, y2: 84, stroke: "#1d2330", "stroke-dasharray": "2 2" }));
  svg.append(el("text", { x: x(now) + 3, y: 12 }, "now"));
}
// Sparklines of the last hour, one point a minute, for the selected channel.
function spark(values, max, color) {
  const W = 260, H = 36, n = values.length;
  const svg = el("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "sparkline" });
  svg.append(el("line", { x1: 0, x2: W, y1: H - 1, y2: H - 1, stroke: "#e6e8ec" }));
  let d = "", pen = false;
  values.forEach((v, i) => {
    if (v == null) { pen = false; return; }
    const px = n > 1 ? (i / (n - 1)) * W : W / 2, py = H - 2 - (Math.min(v, max) / (max || 1)) * (H - 4);
    d += `${pen ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)} `; pen = true;
    svg.append(el("circle", { cx: px.toFixed(1), cy: py.toFixed(1), r: 1.5, fill: color }));
  });
  if (d) svg.append(el("path", { d, fill: "none", stroke: color, "stroke-width": 1.5 }));
  return svg;
}
async function sparks(slug) {
  $("#mx-ch").textContent = slug;
  const m = await api(`/api/orgs/${org}/metrics?from=-60m&step=60&channel=${encodeURIComponent(slug)}`);
  const t = m.totals, ser = m.series;
  const pct = (v) => (v == null ? "—" : (v * 100).toFixed(1) + " %");
  const ms = (q) => (q && q.count ? `p50 ${q.p50} · p95 ${q.p95} ms` : "—");
  const rows = [
    ["Fill rate", pct(t.fill_rate), ser.map((p) => p.fill_rate ?? null), 1, "#137333"],
    ["Decision latency", ms(t.decision_latency_ms), ser.map((p) => p.decision_latency_ms.p95 ?? null), null, "#2f7de1"],
    ["Detection latency", ms(t.detection_latency_ms), ser.map((p) => p.detection_latency_ms.p95 ?? null), null, "#8e44ad"],
    ["Playlist requests", String(t.playlist_requests), ser.map((p) => p.playlist_requests), null, "#1d2330"],
  ];
  const box = $("#sparks");
  box.replaceChildren();
  for (const [label, now, vals, max, color] of rows) {
    const row = document.createElement("div");
    row.className = "spark";
    row.innerHTML = `<span>${esc(label)}</span>`;
    row.append(spark(vals, max ?? Math.max(1, ...vals.filter((v) => v != null)), color));
    const b = document.createElement("b"); b.textContent = now; row.append(b);
    box.append(row);
  }
  const kv = (o) => Object.entries(o || {}).map(([k, v]) => `${esc(k)} ${v}`).join(" · ") || "—";
  const servers = Object.entries(t.ad_servers || {}).map(([h, a]) => `${esc(h)}: ${a.requests} req, ${a.timeouts} timeouts, ${a.errors} errors, ${ms(a.latency_ms)}`).join("<br>") || "—";
  const b = t.beacons || {};
  $("#mx tbody").innerHTML = [
    ["Avails", `${t.avails} (${t.avail_s} s, ${t.filled_s} s filled, ${t.slate_s} s slate)`],
    ["Ads by source", kv(t.ads)], ["Skips by reason", kv(t.skips)], ["Ad servers", servers],
    ["Polls", `${t.polls} (${t.poll_errors} errors)`],
    ["Beacons", `${b.sent} sent · ${b.retried} retried · ${b.dead_lettered} dead-lettered · success ${pct(b.success_rate)}`],
    ["Origin errors", String(t.origin_errors)],
  ].map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
}
function preview() {
  const url = `/${encodeURIComponent(org)}/${encodeURIComponent($("#ch").value)}/master.m3u8?mode=${$("#mode").value}`;
  if (hls) hls.destroy();
  const v = $("#v");
  if (window.Hls && Hls.isSupported()) { hls = new Hls({ liveSyncDurationCount: 3 }); hls.loadSource(url); hls.attachMedia(v);
    hls.on(Hls.Events.FRAG_CHANGED, (_, d) => { $("#status").textContent = (/\/media\//.test(d.frag.url) ? "AD  " : "content  ") + d.frag.url; });
  } else { v.src = url; }
  v.play().catch(() => {});
}
$("#ch").onchange = () => { preview(); refresh(); }; $("#mode").onchange = preview;
$("#cue").onclick = async () => {
  try { const r = await api("/cue", { method: "POST", body: JSON.stringify({ channel: `${org}/${$("#ch").value}`, type: "start", duration: 30 }) });
    $("#status").textContent = `break ${r.id} at MSN ${r.anchor_msn}`; } catch (e) { $("#status").textContent = "cue failed: " + e.message; }
};
keyFromLink().finally(() => { key = localStorage.getItem("cfssai.key"); start(); });
