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
        (cfg.decision_cache_s > 0 && !cfg.frequency_cap.enabled() && !r.kind.follows_schedule())
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
    let capped = caps.capped(now);
    let pod = assemble(
        env, r, cfg, cadence_ms, &capped, source, candidates, reasons,
    )
    .await;
    caps.record(kv, &pod, now).await?;
    Ok((pod, calls))
}

/// The cache key of a decision that depends on the request alone: the
/// channel, cadence, duration and the viewer's dimensions.
fn cache_key(r: &DecisionRequest, cadence_ms: u64) -> String {
    format!(
        "decision:{}:{}:{cadence_ms}:{}:{}:{}:{}",
        r.org,
        r.channel,
        (r.duration_s * 1000.0).round() as u64,
        enc(&r.viewer.geo),
        short_hash(&r.viewer.consent),
        enc(&r.viewer.bucket)
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

/// The viewer dimensions a VAST response may depend on (cache key part).
fn viewer_key(v: &Viewer) -> String {
    format!(
        "{}|{}|{}",
        enc(&v.geo),
        short_hash(&v.consent),
        enc(&v.bucket)
    )
}

/// Step 1: POST the break to the external decision API (JSON both ways).
async fn external(
    env: &Env,
    url: &str,
    r: &DecisionRequest,
    timeout_ms: u64,
) -> std::result::Result<cf_ssai_core::ads::decision::ExternalResponse, CallError> {
    let body = serde_json::to_string(&cf_ssai_core::ads::decision::ExternalRequest {
        channel: &r.channel,
        break_id: &r.break_id,
        duration_s: r.duration_s,
        geo: &r.viewer.geo,
        consent: &r.viewer.consent,
        bucket: &r.viewer.bucket,
    })
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

/// Fill the tag's macros (VAST 4.3 §6): cache buster, timestamp, break
/// duration, and the viewer's geo/consent when given.
fn fill_tag(tag: &str, duration_s: f64, v: &Viewer, now_ms: i64) -> String {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let cb = (now_ms as u32).wrapping_mul(2_654_435_761) % 100_000_000;
    cf_ssai_core::ads::beacon::fill_macros(tag, now_ms, cb, None)
        .replace(
            "[BREAKMAXDURATION]",
            &format!("{}", (duration_s * 1000.0).round() as u64),
        )
        .replace("[DURATION]", &format!("{duration_s:.3}"))
        .replace("[GDPRCONSENT]", &enc(&v.consent))
        .replace(
            "[REGULATIONS]",
            if v.consent.is_empty() { "" } else { "gdpr" },
        )
        .replace("[DEVICEGEO]", &enc(&v.geo))
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
