//! The decision service: `POST /decision` → a pod that fits the break,
//! always, within its time budget. Waterfall: external decision API (JSON)
//! → VAST (VMAP's break for scheduled/pre-roll breaks, then the channel's
//! tags) → ad library (D1, media in R2) → slate (channel, then org
//! default), with frequency caps per creative (KV). Pure logic is in the
//! core (`pod`, `vast`, `vmap`, `decision`); this worker does the I/O and
//! caches.

use cf_ssai_core::ads::decision::{CapState, FrequencyCap};
use cf_ssai_core::ads::pod::{build_pod, PodRequest};
use cf_ssai_core::ads::reason::{CallError, Reason};
use cf_ssai_core::ads::request::{BreakKind, DecisionRequest, Viewer};
use cf_ssai_core::ads::vmap::AdSource;
use cf_ssai_core::control::config::ChannelConfig;
use cf_ssai_core::control::metrics::Batch;
use cf_ssai_core::model::{AdRendition, Pod, PodItem, PodSource, Slate, Tracking};
use worker::*;
use worker_shared::{bindings, error, json, store};

mod vast;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    // Internal only: pods carry other orgs' ad and tracking URLs, and a
    // call spends frequency caps and the org's ad-server quota.
    if !worker_shared::internal_ok(&req, &env) {
        return worker_shared::refuse_external();
    }
    match (req.method(), req.path().as_str()) {
        (Method::Get, "/healthz") => Response::ok("decision ok"),
        (Method::Post, "/decision") => match DecisionRequest::parse(&req.bytes().await?) {
            Ok(r) => decide(r, &env, &ctx).await,
            Err(e) => error(400, e.to_string()),
        },
        _ => error(404, "no such route"),
    }
}

/// One decision: the channel's cached answer when it may have one, else
/// the waterfall's ads (or the house ads) fitted into a pod with slate for
/// the rest; caps, cache and metrics written after.
async fn decide(r: DecisionRequest, env: &Env, worker_ctx: &Context) -> Result<Response> {
    let Some(ch) = worker_shared::load_channel(env, &r.org, &r.channel).await? else {
        return error(404, format!("channel {}/{} not found", r.org, r.channel));
    };
    let cfg = &ch.config;
    let cadence_ms = r
        .cadence_in_range()
        .or((cfg.cadence_ms > 0).then_some(cfg.cadence_ms))
        .unwrap_or(2000);
    let kv = env.kv(bindings::KV)?;
    // Cached pods would ignore frequency caps and VMAP's per-break
    // schedule: cache only decisions that depend on the request alone.
    let cache =
        // (Not a session's own decision: it depends on what it has seen.)
        (cfg.decision_cache_s > 0
            && !cfg.frequency_cap.enabled()
            && !r.kind.follows_schedule()
            && r.session.is_none())
            .then(|| cache_key(&r, cadence_ms));
    if let Some(key) = &cache {
        if let Some(pod) = cached_pod(&kv, key, &r.break_id).await {
            worker_shared::count(env, "decision", "cache_hits", 1).await;
            return json(&pod, 200);
        }
    }
    let (pod, calls) = waterfall_pod(env, worker_ctx, &kv, &r, cfg, cadence_ms).await?;
    if let Some(key) = &cache {
        if let Ok(put) = kv.put(key, serde_json::to_string(&pod)?) {
            let _ = put
                .expiration_ttl(cfg.decision_cache_s as u64)
                .execute()
                .await;
        }
    }
    worker_shared::count(env, "decision", "decisions", 1).await;
    worker_shared::metrics::record(env, &r.org, &r.channel, worker_shared::now_ms(), &calls).await;
    json(&pod, 200)
}

/// A decision made afresh: the library and caps read, the waterfall's
/// ads (else the house ads) fitted into a pod, the caps counted; the
/// creatives that want conditioning recorded after the answer. Returns the
/// pod and the ad-server calls made.
async fn waterfall_pod(
    env: &Env,
    worker_ctx: &Context,
    kv: &kv::KvStore,
    r: &DecisionRequest,
    cfg: &ChannelConfig,
    cadence_ms: u64,
) -> Result<(Pod, Batch)> {
    let mut reasons = Vec::new();
    let lib = match library(env, &r.org, &r.channel).await {
        Ok(c) => c,
        Err(e) => {
            reasons.push(Reason::Unavailable {
                what: "ad library",
                error: e.to_string(),
            });
            vast::Library::default()
        }
    };
    let now = worker_shared::now_ms();
    let caps = Caps::load(kv, r, cfg.frequency_cap).await;
    let budget = Budget {
        started_ms: now,
        total_ms: cfg.decision_timeout_ms as i64,
    };
    let mut w = Waterfall {
        env,
        r,
        cfg,
        lib,
        cadence_ms,
        budget,
        reasons,
        calls: Batch::default(),
    };
    let (source, candidates) = w.ads().await;
    let Waterfall {
        lib,
        reasons,
        calls,
        ..
    } = w;
    let wanted = lib.wanted.take();
    let candidates = if candidates.is_empty() {
        house_ads(lib)
    } else {
        candidates
    };
    if !wanted.is_empty() {
        worker_ctx.wait_until(record_jobs(env.clone(), r.org.clone(), wanted));
    }
    // A session's decision: what it has seen is left out when something
    // else fills; the channel's caps count the breaks every viewer sees.
    let mut capped = caps.capped(now);
    if let Some(seen) = &r.session {
        capped.extend(cf_ssai_core::ads::request::avoid_seen(&candidates, seen));
    }
    let pod = assemble(
        env, r, cfg, cadence_ms, &capped, source, candidates, reasons,
    )
    .await;
    if r.session.is_none() {
        caps.record(kv, &pod, now).await?;
    }
    Ok((pod, calls))
}

/// The cache key of a decision that depends on the request alone: the
/// channel, cadence, duration and every dimension of the viewer
/// ([`viewer_key`]).
fn cache_key(r: &DecisionRequest, cadence_ms: u64) -> String {
    format!(
        "decision:{}:{}:{cadence_ms}:{}:{}",
        r.org,
        r.channel,
        (r.duration_s * 1000.0).round() as u64,
        viewer_key(&r.viewer)
    )
}

/// A cached pod, renamed for this break.
async fn cached_pod(kv: &kv::KvStore, key: &str, break_id: &str) -> Option<Pod> {
    let mut pod = kv.get(key).json::<Pod>().await.ok().flatten()?;
    pod.break_id = break_id.to_string();
    pod.pod_id = format!("pod-{break_id}");
    Some(pod)
}

/// The house ads of the library: what a break gets when no ad server
/// answered (conditioned creatives belong to the ad server's campaigns and
/// play only when it returns them).
fn house_ads(lib: vast::Library) -> Vec<PodItem> {
    lib.items
        .into_iter()
        .filter(|i| !lib.sources.contains_key(&i.ad_id))
        .collect()
}

/// The pod: the candidates that fit, slate (the channel's, else the
/// org's) for the rest.
#[allow(clippy::too_many_arguments)]
async fn assemble(
    env: &Env,
    r: &DecisionRequest,
    cfg: &ChannelConfig,
    cadence_ms: u64,
    capped: &[String],
    source: PodSource,
    candidates: Vec<PodItem>,
    mut reasons: Vec<Reason>,
) -> Pod {
    let slate = match slate(env, &r.org, &r.channel, &cfg.slate_id).await {
        Ok(s) => s,
        Err(e) => {
            reasons.push(Reason::Unavailable {
                what: "slate",
                error: e.to_string(),
            });
            Slate::default()
        }
    };
    build_pod(
        &PodRequest {
            break_id: &r.break_id,
            duration_s: r.duration_s,
            cadence_ms,
            personalization_threshold_s: cfg.personalization_threshold_s,
            capped,
            source,
            tracking: cfg.tracking_limits,
        },
        candidates,
        slate,
        reasons,
    )
}

/// The channel's frequency caps: plays per creative (KV), read before the
/// decision and counted after it.
struct Caps {
    cap: FrequencyCap,
    key: String,
    state: CapState,
}

impl Caps {
    async fn load(kv: &kv::KvStore, r: &DecisionRequest, cap: FrequencyCap) -> Caps {
        let key = format!("fcap:{}:{}", r.org, r.channel);
        let state = if cap.enabled() {
            kv.get(&key).json().await.ok().flatten().unwrap_or_default()
        } else {
            CapState::default()
        };
        Caps { cap, key, state }
    }

    fn capped(&self, now_ms: i64) -> Vec<String> {
        self.state.capped(&self.cap, now_ms)
    }

    /// Count the pod's creatives (a pod of slate plays none).
    async fn record(mut self, kv: &kv::KvStore, pod: &Pod, now_ms: i64) -> Result<()> {
        if !self.cap.enabled() || pod.items.is_empty() {
            return Ok(());
        }
        let creatives = pod.items.iter().map(|i| i.creative_id.as_str());
        self.state.record(creatives, &self.cap, now_ms);
        if let Ok(put) = kv.put(&self.key, serde_json::to_string(&self.state)?) {
            let _ = put
                .expiration_ttl(self.cap.window_s.max(60))
                .execute()
                .await;
        }
        Ok(())
    }
}

/// The decision's time budget, from when the waterfall started.
#[derive(Clone, Copy)]
struct Budget {
    started_ms: i64,
    total_ms: i64,
}

impl Budget {
    /// What is left for `step` (ms), or a reason when it is spent (the
    /// last 50 ms are kept for the answer).
    fn left(&self, reasons: &mut Vec<Reason>, step: &str) -> Option<u64> {
        let l = self.total_ms - (worker_shared::now_ms() - self.started_ms);
        if l <= 50 {
            reasons.push(Reason::call_failed(step, CallError::BudgetSpent));
            None
        } else {
            Some(l as u64)
        }
    }
}

/// The ad sources of one decision, tried in order within its budget: the
/// decision API, then VAST (the VMAP break for scheduled breaks and
/// pre-rolls, then the tags). Gathers the reasons and, per ad server, the
/// calls' outcomes and latencies.
struct Waterfall<'a> {
    env: &'a Env,
    r: &'a DecisionRequest,
    cfg: &'a ChannelConfig,
    lib: vast::Library,
    cadence_ms: u64,
    budget: Budget,
    reasons: Vec<Reason>,
    calls: Batch,
}

impl Waterfall<'_> {
    /// The first source's ads and which source it was (none: `Library`,
    /// the house ads' source).
    async fn ads(&mut self) -> (PodSource, Vec<PodItem>) {
        let mut tags: Vec<String> = self.cfg.vast_urls.clone();
        if let Some(resp) = self.ask_api().await {
            let items = cf_ssai_core::ads::decision::map_external(
                &resp,
                &self.lib.items,
                &mut self.reasons,
            );
            tags.splice(0..0, resp.vast_urls);
            if !items.is_empty() {
                return (PodSource::Api, items);
            }
        }
        let items = self.ask_vmap().await;
        if !items.is_empty() {
            return (PodSource::Vast, items);
        }
        let items = self.ask_tags(&tags).await;
        let source = if items.is_empty() {
            PodSource::Library
        } else {
            PodSource::Vast
        };
        (source, items)
    }

    /// Step 1: the external decision API, when the channel has one.
    async fn ask_api(&mut self) -> Option<cf_ssai_core::ads::decision::ExternalResponse> {
        let url = &self.cfg.decision_api_url;
        if url.is_empty() {
            return None;
        }
        let l = self.budget.left(&mut self.reasons, "decision API")?;
        let (t0, n0) = (worker_shared::now_ms(), self.reasons.len());
        let resp = external(self.env, url, self.r, l).await;
        if let Err(e) = &resp {
            self.reasons
                .push(Reason::call_failed("decision API", e.clone()));
        }
        note_call(&mut self.calls, url, t0, self.reasons.get(n0..));
        resp.ok()
    }

    /// What every VAST resolution of this decision shares.
    fn vast_ctx(&self) -> VastCtx<'_> {
        VastCtx {
            env: self.env,
            lib: &self.lib,
            duration_s: self.r.duration_s,
            cadence_ms: self.cadence_ms,
            viewer: &self.r.viewer,
            cache_s: self.cfg.vast_cache_s,
            asset: &self.r.asset,
            limits: self.cfg.tracking_limits,
        }
    }

    /// Step 2a: the VMAP break, for scheduled breaks and pre-rolls.
    async fn ask_vmap(&mut self) -> Vec<PodItem> {
        let url = &self.cfg.vmap_url;
        if url.is_empty() || !self.r.kind.follows_schedule() {
            return Vec::new();
        }
        let Some(l) = self.budget.left(&mut self.reasons, "VMAP") else {
            return Vec::new();
        };
        let (t0, f0) = (worker_shared::now_ms(), vast::fetches());
        let mut added = Vec::new();
        let items = vmap_step(&self.vast_ctx(), url, self.r, l, &mut added).await;
        if vast::fetches() > f0 {
            note_call(&mut self.calls, url, t0, Some(&added));
        }
        self.reasons.extend(added);
        items
    }

    /// Step 2b: the VAST tags in order, up to the first with ads.
    async fn ask_tags(&mut self, tags: &[String]) -> Vec<PodItem> {
        for tag in tags {
            let Some(l) = self.budget.left(&mut self.reasons, "VAST") else {
                break;
            };
            let (t0, f0) = (worker_shared::now_ms(), vast::fetches());
            let mut added = Vec::new();
            let items = self.vast_ctx().tag(tag, l, &mut added).await;
            if vast::fetches() > f0 {
                note_call(&mut self.calls, tag, t0, Some(&added));
            }
            self.reasons.extend(added);
            if !items.is_empty() {
                return items;
            }
        }
        Vec::new()
    }
}

/// One ad server call (a decision API request, or a VAST/VMAP tag with its
/// wrappers): latency and outcome (`metrics::call_outcome`) under the
/// server's host.
fn note_call(b: &mut Batch, url: &str, started_ms: i64, added: Option<&[Reason]>) {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(String::from))
        .unwrap_or_else(|| "invalid".into());
    let outcome = cf_ssai_core::control::metrics::call_outcome(added.unwrap_or_default());
    let labels = [("server", host.as_str())];
    b.add(
        "ad_server_requests_total",
        &[("server", host.as_str()), ("outcome", outcome)],
        1.0,
    );
    b.observe(
        "ad_server_latency_ms",
        &labels,
        (worker_shared::now_ms() - started_ms) as f64,
    );
}

/// What every VAST resolution of one decision shares.
struct VastCtx<'a> {
    env: &'a Env,
    lib: &'a vast::Library,
    duration_s: f64,
    cadence_ms: u64,
    viewer: &'a Viewer,
    cache_s: u32,
    asset: &'a std::collections::BTreeMap<String, String>,
    /// Bounds on tracking fan-out: the pod's, and the `<Error>` reports
    /// this decision sends for the ads it rejects.
    limits: cf_ssai_core::ads::pod::TrackingLimits,
}

impl VastCtx<'_> {
    /// One VAST tag: macros filled, cached by the tag before cache busters
    /// plus the viewer's dimensions.
    async fn tag(
        &self,
        tag: &str,
        budget_ms: u64,
        reasons: &mut Vec<Reason>,
    ) -> Vec<cf_ssai_core::model::PodItem> {
        let url = cf_ssai_core::ads::beacon::fill_asset_macros(
            &fill_tag(tag, self.duration_s, self.viewer, worker_shared::now_ms()),
            self.asset,
        );
        // Cached per tag, viewer and (when the tag uses them) asset values.
        let asset_key = if tag.contains("[asset.") {
            cf_ssai_core::ads::beacon::fill_asset_macros(tag, self.asset)
        } else {
            String::new()
        };
        let key = format!("{tag}|{}|{asset_key}", viewer_key(self.viewer));
        let src = vast::TagSource::Url {
            url: &url,
            cache_key: &key,
            label: tag,
        };
        self.resolve(src, budget_ms, reasons).await
    }

    async fn resolve(
        &self,
        src: vast::TagSource<'_>,
        budget_ms: u64,
        reasons: &mut Vec<Reason>,
    ) -> Vec<cf_ssai_core::model::PodItem> {
        vast::resolve(
            self.env,
            src,
            self.lib,
            self.cadence_ms,
            budget_ms,
            self.cache_s,
            self.limits,
            reasons,
        )
        .await
    }
}

/// The VMAP schedule's break for this one (by breakId, clock offset or
/// pre-roll) and the ads of its VAST.
async fn vmap_step(
    ctx: &VastCtx<'_>,
    vmap_url: &str,
    r: &DecisionRequest,
    budget_ms: u64,
    reasons: &mut Vec<Reason>,
) -> Vec<cf_ssai_core::model::PodItem> {
    let deadline = worker_shared::now_ms() + budget_ms as i64;
    let private_ok = &worker_shared::private_policy(ctx.env);
    let breaks = match vast::fetch_cached(vmap_url, vmap_url, ctx.cache_s, deadline, private_ok)
        .await
        .and_then(|t| {
            cf_ssai_core::ads::vmap::parse(&t).map_err(|e| CallError::Failed(e.to_string()))
        }) {
        Ok(b) => b,
        Err(e) => {
            reasons.push(Reason::call_failed(format!("VMAP {vmap_url}"), e));
            return Vec::new();
        }
    };
    let tolerance = ((ctx.duration_s * 500.0) as i64).max(ctx.cadence_ms as i64);
    // `/cue` names breaks "cue-{event_id}"; VMAP names the event.
    let id = r.break_id.strip_prefix("cue-").unwrap_or(&r.break_id);
    let Some(b) = cf_ssai_core::ads::vmap::select(
        &breaks,
        id,
        r.kind == BreakKind::Preroll,
        r.start_ms,
        tolerance,
    ) else {
        reasons.push(Reason::NoFill {
            at: "VMAP".into(),
            detail: "no break matches".into(),
        });
        return Vec::new();
    };
    let left = (deadline - worker_shared::now_ms()).max(0) as u64;
    let items = match &b.source {
        Some(AdSource::TagUri(t)) => ctx.tag(t, left, reasons).await,
        Some(AdSource::VastData(x)) => ctx.resolve(vast::TagSource::Inline(x), left, reasons).await,
        None => Vec::new(),
    };
    reasons.push(Reason::VmapBreak {
        break_id: b.break_id.clone(),
        ads: items.len(),
    });
    items
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A short stable digest (FNV-1a) for long cache-key parts (consent
/// strings run to kilobytes; KV keys stop at 512 bytes).
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A short cache-key part: the value URL-encoded, or `~` and its digest
/// when that is long (URL-encoding never writes `~`, so the two cannot
/// meet).
fn key_part(s: &str) -> String {
    let e = enc(s);
    if e.len() <= 24 {
        e
    } else {
        format!("~{}", short_hash(s))
    }
}

/// Every viewer dimension a decision or a VAST response may depend on
/// (what `fill_tag` and the decision API are given), as a cache-key part
/// of bounded length: the short ones readable, the consent signals, IFA
/// and key-values digested.
fn viewer_key(v: &Viewer) -> String {
    let gdpr = match v.gdpr {
        Some(true) => "1",
        Some(false) => "0",
        None => "",
    };
    let signals = [gdpr, &v.consent, &v.us_privacy, &v.gpp, &v.gpp_sid].join("\0");
    let params: String = v
        .params
        .iter()
        .map(|(k, x)| format!("{k}\0{x}\0"))
        .collect();
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}",
        key_part(&v.geo),
        key_part(&v.region),
        v.device.as_str(),
        u8::from(v.personalised),
        key_part(&v.cohort),
        key_part(&v.bucket),
        short_hash(&signals),
        short_hash(&format!("{}\0{}", v.ifa, v.ifa_type)),
        short_hash(&params),
    )
}

/// Step 1: POST the break to the external decision API (JSON both ways).
async fn external(
    env: &Env,
    url: &str,
    r: &DecisionRequest,
    timeout_ms: u64,
) -> std::result::Result<cf_ssai_core::ads::decision::ExternalResponse, CallError> {
    let body = serde_json::to_string(&cf_ssai_core::ads::decision::ExternalRequest::new(
        &r.channel,
        &r.break_id,
        r.duration_s,
        &r.viewer,
    ))
    .map_err(|e| CallError::Failed(e.to_string()))?;
    let allow = worker_shared::private_policy(env);
    let resp = worker_shared::fetch(&worker_shared::FetchSpec {
        url,
        method: Method::Post,
        headers: &[("Content-Type", "application/json")],
        body: Some(&body),
        timeout_ms,
        max_bytes: 256 * 1024,
        allow_private: &allow,
    })
    .await
    .map_err(vast::call_error)?;
    if !resp.ok() {
        return Err(CallError::Failed(format!("HTTP {}", resp.status)));
    }
    let text = resp.text().map_err(vast::call_error)?;
    cf_ssai_core::ads::decision::parse_external(&text).map_err(|e| CallError::Failed(e.to_string()))
}

/// Fill the tag's macros (VAST 4.3 §6.1): cache buster, timestamp, break
/// duration, and the viewer's targeting, every value URL-encoded:
///
/// - `[DEVICEGEO]` the country; `[DEVICECLASS]` (ours) ctv, mobile,
///   desktop or other;
/// - `[GDPRCONSENT]` the TC string; `[REGULATIONS]` "gdpr" where GDPR
///   applies (`gdpr=1`, or a TC string without the flag), "us" with a US
///   Privacy string, comma-joined; `[US_PRIVACY]` (ours) that string;
///   `[GPPSTRING]`, `[GPPSECTIONID]` the GPP string and its sections;
/// - `[IFA]`, `[IFATYPE]` the device id and its type, only for a
///   personalised viewer; `[LIMITADTRACKING]` and `[NPA]` (ours, for
///   Google Ad Manager style `npa=`) "1" when the viewer is not
///   personalised, else "0";
/// - `[player_params.KEY]` the player's key-value KEY (MediaTailor's
///   syntax); one the viewer did not send becomes empty.
///
/// The filled URL carries consent strings and ids: it is fetched, never
/// logged (reasons name the tag as configured).
fn fill_tag(tag: &str, duration_s: f64, v: &Viewer, now_ms: i64) -> String {
    let cb = (now_ms as u32).wrapping_mul(2_654_435_761) % 100_000_000;
    let gdpr = v.gdpr == Some(true) || (v.gdpr.is_none() && !v.consent.is_empty());
    let regulations: Vec<&str> = [(gdpr, "gdpr"), (!v.us_privacy.is_empty(), "us")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    let personal = |s: &str| {
        if v.personalised {
            enc(s)
        } else {
            String::new()
        }
    };
    let not_personalised = if v.personalised { "0" } else { "1" };
    let filled = cf_ssai_core::ads::beacon::fill_macros(tag, now_ms, cb, None)
        .replace(
            "[BREAKMAXDURATION]",
            &format!("{}", (duration_s * 1000.0).round() as u64),
        )
        .replace("[DURATION]", &format!("{duration_s:.3}"))
        .replace("[GDPRCONSENT]", &enc(&v.consent))
        .replace("[REGULATIONS]", &enc(&regulations.join(",")))
        .replace("[US_PRIVACY]", &enc(&v.us_privacy))
        .replace("[GPPSTRING]", &enc(&v.gpp))
        .replace("[GPPSECTIONID]", &enc(&v.gpp_sid))
        .replace("[IFATYPE]", &personal(&v.ifa_type))
        .replace("[IFA]", &personal(&v.ifa))
        .replace("[LIMITADTRACKING]", not_personalised)
        .replace("[NPA]", not_personalised)
        .replace("[DEVICECLASS]", v.device.as_str())
        .replace("[DEVICEGEO]", &enc(&v.geo));
    fill_player_params(&filled, &v.params)
}

/// `[player_params.KEY]` macros: the viewer's KEY value, URL-encoded, or
/// nothing. Values are encoded, so they cannot form a macro themselves.
fn fill_player_params(url: &str, params: &std::collections::BTreeMap<String, String>) -> String {
    const OPEN: &str = "[player_params.";
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some((head, tail)) = rest.split_once(OPEN) {
        out.push_str(head);
        // A key runs to the next ']'; a '[' first means this is no macro.
        let end = tail.find([']', '[']);
        match end.and_then(|j| tail.split_at_checked(j)) {
            Some((key, after)) if after.starts_with(']') => {
                out.push_str(&params.get(key).map_or(String::new(), |x| enc(x)));
                rest = after.get(1..).unwrap_or_default();
            }
            _ => {
                out.push_str(OPEN);
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Library candidates for the channel (channel-specific and org-wide), in
/// priority order, and the org's conditioning jobs that are not ready:
/// one D1 round trip (a batch).
async fn library(env: &Env, org: &str, slug: &str) -> Result<vast::Library> {
    let db = env.d1(bindings::DB)?;
    let store::ads::Library {
        ads: rows,
        jobs,
        settings,
    } = store::ads::library(&db, org, slug).await?;
    let jobs = jobs
        .into_iter()
        .map(|j| cf_ssai_core::ads::conditioning::JobState {
            id: j.id,
            state: j.state,
            reason: j.reason,
        });
    let settings = settings
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| serde_json::from_value(v["conditioning"].clone()).ok())
        .unwrap_or_default();
    let mut lib = vast::Library {
        jobs: jobs.map(|j| (j.id.clone(), j)).collect(),
        settings,
        ..Default::default()
    };
    for a in rows {
        let Ok(renditions) = serde_json::from_str::<Vec<AdRendition>>(&a.renditions) else {
            continue;
        };
        if a.conditioned != 0 {
            lib.sources.insert(
                a.id.clone(),
                (a.source_url.unwrap_or_default(), a.source_size as u64),
            );
        }
        lib.items.push(PodItem {
            ad_id: a.id,
            creative_id: a.creative_id,
            universal_ad_id: a.universal_ad_id,
            duration_s: a.duration_s,
            renditions,
            tracking: serde_json::from_str::<Tracking>(&a.tracking).unwrap_or_default(),
        });
    }
    Ok(lib)
}

/// Record the creatives this decision could not play for want of
/// conditioned media (after the answer: the waterfall's budget is not
/// spent on it). One job per identity; a job seen again is counted, a
/// job whose source changed is queued again with the new source.
async fn record_jobs(
    env: Env,
    org: String,
    jobs: Vec<cf_ssai_core::ads::conditioning::JobRequest>,
) {
    let Ok(db) = env.d1(bindings::DB) else { return };
    let mut seen = std::collections::HashSet::new();
    // Each job's source kind and source as stored (JSON); a job that does
    // not serialize is not recorded.
    let jobs: Vec<_> = jobs
        .into_iter()
        .filter(|j| seen.insert(j.id.clone()))
        .filter_map(|j| {
            let kind = serde_json::to_value(j.source.kind)
                .ok()?
                .as_str()?
                .to_string();
            let source = serde_json::to_string(&j.source).ok()?;
            Some((j, kind, source))
        })
        .collect();
    let rows: Vec<_> = jobs
        .iter()
        .map(|(j, kind, source)| store::jobs::JobUpsert {
            id: &j.id,
            identity: &j.identity,
            creative_id: &j.creative_id,
            universal_ad_id: j.universal_ad_id.as_deref(),
            ad_system: &j.ad_system,
            duration_s: j.duration_s,
            source_url: &j.source.url,
            source_kind: kind,
            source_size: j.source.file_size,
            source,
        })
        .collect();
    let now = worker_shared::now_ms();
    let quota = cf_ssai_core::ads::conditioning::MAX_QUEUED_PER_ORG;
    if let Err(e) = store::jobs::upsert_all(&db, &org, &rows, now, quota).await {
        worker_shared::metrics::log(
            worker_shared::metrics::Level::Error,
            "conditioning_job_record_failed",
            &[("org", &org), ("reason", &e.to_string())],
        );
    }
}

/// The channel's slate (by id, or channel-scoped), else the org default.
async fn slate(env: &Env, org: &str, slug: &str, slate_id: &str) -> Result<Slate> {
    let row = store::ads::pick_slate(&env.d1(bindings::DB)?, org, slug, slate_id).await?;
    Ok(match row {
        Some(r) => Slate {
            slate_id: r.id,
            renditions: serde_json::from_str(&r.renditions).unwrap_or_default(),
        },
        None => Slate::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cf_ssai_core::ads::targeting::DeviceClass;

    fn viewer() -> Viewer {
        Viewer {
            geo: "US".into(),
            region: "CA".into(),
            consent: "CPtc.YAA".into(),
            gdpr: Some(true),
            us_privacy: "1YNN".into(),
            gpp: "DBABMA~CPtc".into(),
            gpp_sid: "2,6".into(),
            personalised: true,
            device: DeviceClass::Ctv,
            ifa: "6d92078a-8246-4ba4-ae5b-76104861e7dc".into(),
            ifa_type: "rida".into(),
            params: [
                ("genre".to_string(), "news & views".to_string()),
                ("show".to_string(), "a/b".to_string()),
            ]
            .into(),
            cohort: "0a1b2c3d".into(),
            ..Default::default()
        }
    }

    fn query(url: &str) -> Vec<(String, String)> {
        url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    const TAG: &str = "https://ads.test/vast?geo=[DEVICEGEO]&gdpr_consent=[GDPRCONSENT]&reg=[REGULATIONS]&usp=[US_PRIVACY]&gpp=[GPPSTRING]&gpp_sid=[GPPSECTIONID]&ifa=[IFA]&ifa_type=[IFATYPE]&lat=[LIMITADTRACKING]&npa=[NPA]&dc=[DEVICECLASS]&genre=[player_params.genre]&show=[player_params.show]&missing=[player_params.nope]&dur=[BREAKMAXDURATION]&cb=[CACHEBUSTING]";

    #[test]
    fn fill_tag_fills_the_targeting_macros() {
        let url = fill_tag(TAG, 30.0, &viewer(), 1_800_000_000_000);
        assert!(!url.contains('['), "{url}");
        let q = query(&url);
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("geo"), Some("US"));
        assert_eq!(get("gdpr_consent"), Some("CPtc.YAA"));
        assert_eq!(get("reg"), Some("gdpr,us"));
        assert_eq!(get("usp"), Some("1YNN"));
        assert_eq!(get("gpp"), Some("DBABMA~CPtc"));
        assert_eq!(get("gpp_sid"), Some("2,6"));
        assert_eq!(get("ifa"), Some("6d92078a-8246-4ba4-ae5b-76104861e7dc"));
        assert_eq!(get("ifa_type"), Some("rida"));
        assert_eq!((get("lat"), get("npa")), (Some("0"), Some("0")));
        assert_eq!(get("dc"), Some("ctv"));
        assert_eq!(get("genre"), Some("news & views"));
        assert_eq!(get("show"), Some("a/b"));
        assert_eq!(get("missing"), Some(""));
        assert_eq!(get("dur"), Some("30000"));
        assert!(url.contains("genre=news+%26+views&"), "{url}");
    }

    #[test]
    fn fill_tag_for_a_viewer_not_personalised() {
        let v = Viewer {
            personalised: false,
            ..viewer()
        };
        let q = query(&fill_tag(TAG, 30.0, &v, 0));
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!((get("ifa"), get("ifa_type")), (Some(""), Some("")));
        assert_eq!((get("lat"), get("npa")), (Some("1"), Some("1")));
        // An unknown viewer: every targeting macro empty or "not allowed".
        let q = query(&fill_tag(TAG, 30.0, &Viewer::default(), 0));
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        for k in ["geo", "gdpr_consent", "reg", "usp", "gpp", "ifa", "genre"] {
            assert_eq!(get(k), Some(""), "{k}");
        }
        assert_eq!((get("dc"), get("npa")), (Some("other"), Some("1")));
        // A TC string without the gdpr flag (older callers): GDPR applies.
        let v = Viewer {
            consent: "CPtc".into(),
            ..Default::default()
        };
        assert!(fill_tag("r=[REGULATIONS]", 1.0, &v, 0).ends_with("r=gdpr"));
        let v = Viewer {
            consent: "CPtc".into(),
            gdpr: Some(false),
            ..Default::default()
        };
        assert!(fill_tag("r=[REGULATIONS]", 1.0, &v, 0).ends_with("r="));
    }

    #[test]
    fn player_params_macros_are_scanned_safely() {
        let p: std::collections::BTreeMap<String, String> =
            [("a".to_string(), "[x]".to_string())].into();
        assert_eq!(fill_player_params("[player_params.a]", &p), "%5Bx%5D");
        assert_eq!(
            fill_player_params("x=[player_params.a", &p),
            "x=[player_params.a"
        );
        assert_eq!(
            fill_player_params("[player_params.[player_params.a]]", &p),
            "[player_params.%5Bx%5D]"
        );
        assert_eq!(fill_player_params("[player_params.]", &p), "");
        assert_eq!(fill_player_params("é[player_params.b]ü", &p), "éü");
    }

    #[test]
    fn cache_keys_change_with_every_viewer_dimension() {
        let r = DecisionRequest {
            org: "demo".into(),
            channel: "news".into(),
            break_id: "b1".into(),
            duration_s: 30.0,
            cadence_ms: None,
            kind: BreakKind::Cue,
            start_ms: None,
            viewer: viewer(),
            asset: Default::default(),
            session: None,
        };
        let base = cache_key(&r, 2000);
        let base_v = viewer_key(&r.viewer);
        /// A dimension's name and a change to it.
        type Change = (&'static str, fn(&mut Viewer));
        let changes: Vec<Change> = vec![
            ("geo", |v| v.geo = "FR".into()),
            ("region", |v| v.region = "NY".into()),
            ("consent", |v| v.consent = "CPother".into()),
            ("bucket", |v| v.bucket = "7".into()),
            ("gdpr", |v| v.gdpr = None),
            ("us_privacy", |v| v.us_privacy = "1YYN".into()),
            ("gpp", |v| v.gpp = "DBABMA".into()),
            ("gpp_sid", |v| v.gpp_sid = "2".into()),
            ("personalised", |v| v.personalised = false),
            ("device", |v| v.device = DeviceClass::Mobile),
            ("ifa", |v| {
                v.ifa = "11111111-2222-3333-4444-555555555555".into()
            }),
            ("ifa_type", |v| v.ifa_type = "aaid".into()),
            ("params", |v| {
                v.params.insert("genre".into(), "sport".into());
            }),
            ("param key", |v| {
                v.params.insert("extra".into(), String::new());
            }),
            ("cohort", |v| v.cohort = "ffffffff".into()),
        ];
        for (what, change) in changes {
            let mut r2 = r.clone();
            change(&mut r2.viewer);
            assert_ne!(cache_key(&r2, 2000), base, "{what}");
            assert_ne!(viewer_key(&r2.viewer), base_v, "{what}");
        }
        assert_eq!(cache_key(&r.clone(), 2000), base);
        // Bounded whatever the viewer sends (KV keys stop at 512 bytes).
        let mut r3 = r.clone();
        r3.viewer.geo = "g".repeat(5000);
        r3.viewer.bucket = "b".repeat(5000);
        r3.viewer.cohort = "c".repeat(5000);
        r3.viewer.consent = "C".repeat(5000);
        assert!(cache_key(&r3, 2000).len() < 200, "{}", cache_key(&r3, 2000));
        // No consent string or IFA in the key.
        assert!(
            !base.contains("CPtc") && !base.contains("6d92078a"),
            "{base}"
        );
    }
}
