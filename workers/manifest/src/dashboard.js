"use strict";
const $ = (s) => document.querySelector(s);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
if (location.hash.startsWith("#key=")) { localStorage.setItem("cfssai.key", decodeURIComponent(location.hash.slice(5))); history.replaceState(null, "", location.pathname); }
let key = localStorage.getItem("cfssai.key");
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
  const m = (await api(`/api/orgs/${org}/metrics`)).items;
  $("#metrics tbody").innerHTML = m.map((x) => `<tr><td>${esc(x.scope)}</td><td>${esc(x.name)}</td><td>${x.value}</td></tr>`).join("");
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
$("#ch").onchange = preview; $("#mode").onchange = preview;
$("#cue").onclick = async () => {
  try { const r = await api("/cue", { method: "POST", body: JSON.stringify({ channel: `${org}/${$("#ch").value}`, type: "start", duration: 30 }) });
    $("#status").textContent = `break ${r.id} at MSN ${r.anchor_msn}`; } catch (e) { $("#status").textContent = "cue failed: " + e.message; }
};
start();
