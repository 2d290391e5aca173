//! The decision service: `POST /decision` → a pod that fits the break,
//! always, within its time budget. Waterfall: ad library (D1, media in R2)
//! → slate (channel, then org default). Pure pod building is in the core
//! (`cf_ssai_core::pod`); this worker loads candidates and caches.

use cf_ssai_core::model::{AdRendition, PodItem, PodSource, Slate, Tracking};
use cf_ssai_core::pod::{build_pod, PodRequest};
use serde::Deserialize;
use worker::*;
use worker_shared::{bindings, error, json};

mod vast;

/// Decision cache TTL (KV), seconds.
const CACHE_TTL_S: u64 = 60;

#[derive(Debug, Deserialize)]
struct DecisionRequest {
    org: Option<String>,
    channel: Option<String>,
    break_id: Option<String>,
    duration_s: Option<f64>,
    cadence_ms: Option<u64>,
    #[serde(default)]
    viewer: Viewer,
}

#[derive(Debug, Default, Deserialize)]
struct Viewer {
    #[serde(default)]
    geo: String,
    #[serde(default)]
    consent: String,
    #[serde(default)]
    bucket: String,
}

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    match (req.method(), req.path().as_str()) {
        (Method::Get, "/healthz") => Response::ok("decision ok"),
        (Method::Post, "/decision") => {
            let body = req.bytes().await?;
            if body.len() > 64 * 1024 {
                return error(400, "body: over the 64 KiB limit");
            }
            let r: DecisionRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return error(400, format!("body: invalid JSON: {e}")),
            };
            decide(r, &env).await
        }
        _ => error(404, "no such route"),
    }
}

async fn decide(r: DecisionRequest, env: &Env) -> Result<Response> {
    let Some(org) = r.org.filter(|s| !s.is_empty()) else {
        return error(400, "org: required");
    };
    let Some(slug) = r.channel.filter(|s| !s.is_empty()) else {
        return error(400, "channel: required");
    };
    let Some(break_id) = r.break_id.filter(|s| !s.is_empty() && s.len() <= 128) else {
        return error(400, "break_id: required (at most 128 characters)");
    };
    let duration_s = match r.duration_s {
        Some(d) if d.is_finite() && d > 0.0 && d <= 3600.0 => d,
        _ => {
            return error(
                400,
                "duration_s: required, a number of seconds in (0, 3600]",
            )
        }
    };
    let Some(ch) = worker_shared::load_channel(env, &org, &slug).await? else {
        return error(404, format!("channel {org}/{slug} not found"));
    };
    let cadence_ms = r
        .cadence_ms
        .filter(|c| (200..=20_000).contains(c))
        .or((ch.config.cadence_ms > 0).then_some(ch.config.cadence_ms))
        .unwrap_or(2000);
    let kv = env.kv(bindings::KV)?;
    let cache_key = format!(
        "decision:{org}:{slug}:{}:{cadence_ms}:{}:{}:{}",
        (duration_s * 1000.0).round() as u64,
        r.viewer.geo,
        r.viewer.consent.len(),
        r.viewer.bucket
    );
    if let Ok(Some(mut pod)) = kv.get(&cache_key).json::<cf_ssai_core::model::Pod>().await {
        pod.break_id = break_id.clone();
        pod.pod_id = format!("pod-{break_id}");
        worker_shared::count(env, "decision", "cache_hits", 1).await;
        return json(&pod, 200);
    }
    let mut reasons = Vec::new();
    let lib = match library(env, &org, &slug).await {
        Ok(c) => c,
        Err(e) => {
            reasons.push(format!("ad library unavailable: {e}"));
            Vec::new()
        }
    };
    // Waterfall: VAST tags (within the time budget), then the library.
    let started = worker_shared::now_ms();
    let budget = ch.config.decision_timeout_ms as i64;
    let mut source = PodSource::Library;
    let mut candidates = Vec::new();
    for tag in &ch.config.vast_urls {
        let left = budget - (worker_shared::now_ms() - started);
        if left <= 50 {
            reasons.push("VAST: time budget spent".into());
            break;
        }
        let url = fill_tag(tag, duration_s, &r.viewer, worker_shared::now_ms());
        let items = vast::resolve(env, &url, &lib, cadence_ms, left as u64, &mut reasons).await;
        if !items.is_empty() {
            source = PodSource::Vast;
            candidates.extend(items);
        }
    }
    if candidates.is_empty() {
        candidates = lib;
    }
    let slate = match slate(env, &org, &slug, &ch.config.slate_id).await {
        Ok(s) => s,
        Err(e) => {
            reasons.push(format!("slate unavailable: {e}"));
            Slate::default()
        }
    };
    let pod = build_pod(
        &PodRequest {
            break_id: &break_id,
            duration_s,
            cadence_ms,
            personalization_threshold_s: ch.config.personalization_threshold_s,
            capped: &[],
            source,
        },
        candidates,
        slate,
        reasons,
    );
    if let Ok(put) = kv.put(&cache_key, &pod) {
        let _ = put.expiration_ttl(CACHE_TTL_S).execute().await;
    }
    worker_shared::count(env, "decision", "decisions", 1).await;
    json(&pod, 200)
}

/// Fill the tag's macros (VAST 4.3 §6): cache buster, timestamp, break
/// duration, and the viewer's geo/consent when given.
fn fill_tag(tag: &str, duration_s: f64, v: &Viewer, now_ms: i64) -> String {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let cb = (now_ms as u32).wrapping_mul(2_654_435_761) % 100_000_000;
    cf_ssai_core::beacon::fill_macros(tag, now_ms, cb, None)
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

#[derive(Deserialize)]
struct AdRow {
    id: String,
    creative_id: String,
    universal_ad_id: Option<String>,
    duration_s: f64,
    renditions: String,
    tracking: String,
}

/// Library candidates for the channel (channel-specific and org-wide), in
/// priority order.
async fn library(env: &Env, org: &str, slug: &str) -> Result<Vec<PodItem>> {
    let rows: Vec<AdRow> = env
        .d1(bindings::DB)?
        .prepare("SELECT id, creative_id, universal_ad_id, duration_s, renditions, tracking FROM ads WHERE org_id = ?1 AND active = 1 AND (channel_slug IS NULL OR channel_slug = ?2) ORDER BY priority DESC, id")
        .bind(&[org.into(), slug.into()])?
        .all()
        .await?
        .results()?;
    Ok(rows
        .into_iter()
        .filter_map(|a| {
            Some(PodItem {
                ad_id: a.id,
                creative_id: a.creative_id,
                universal_ad_id: a.universal_ad_id,
                duration_s: a.duration_s,
                renditions: serde_json::from_str::<Vec<AdRendition>>(&a.renditions).ok()?,
                tracking: serde_json::from_str::<Tracking>(&a.tracking).unwrap_or_default(),
            })
        })
        .collect())
}

#[derive(Deserialize)]
struct SlateRow {
    id: String,
    renditions: String,
}

/// The channel's slate (by id, or channel-scoped), else the org default.
async fn slate(env: &Env, org: &str, slug: &str, slate_id: &str) -> Result<Slate> {
    let row: Option<SlateRow> = env
        .d1(bindings::DB)?
        .prepare("SELECT id, renditions FROM slates WHERE org_id = ?1 AND (id = ?3 OR channel_slug = ?2 OR channel_slug IS NULL) ORDER BY (id = ?3) DESC, (channel_slug = ?2) DESC LIMIT 1")
        .bind(&[org.into(), slug.into(), slate_id.into()])?
        .first(None)
        .await?;
    Ok(match row {
        Some(r) => Slate {
            slate_id: r.id,
            renditions: serde_json::from_str(&r.renditions).unwrap_or_default(),
        },
        None => Slate::default(),
    })
}
