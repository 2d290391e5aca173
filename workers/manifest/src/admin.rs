//! Control plane: the admin API under `/api/`, `POST /cue`, and the
//! bindings smoke check. Every route here is authenticated (JWT or API key)
//! and scoped to the principal's org.

use cf_ssai_core::control::auth::{self, Principal, Scope};
use cf_ssai_core::control::config::ChannelConfig;
use cf_ssai_core::control::media_http;
use cf_ssai_core::hls::media;
use cf_ssai_core::model;
use serde::Deserialize;
use worker::*;
use worker_shared::channel_client::{ChannelClient, ChannelRef, CueCommand, CueRequest};
use worker_shared::{bindings, error, json, now_ms};

const MAX_BODY: usize = 1024 * 1024;

pub async fn route(mut req: Request, env: Env) -> Result<Response> {
    let principal = match worker_shared::authenticate(&req, &env).await {
        Ok(p) => p,
        Err(e) => {
            // Guessing credentials is slowed per client address.
            let ip = worker_shared::client_ip(&req).unwrap_or_default();
            if !worker_shared::within_limit(&env, bindings::AUTH_FAIL_LIMITER, &ip).await {
                return worker_shared::too_many("authentication failures from this address");
            }
            return worker_shared::auth_error(&e);
        }
    };
    let (limiter, what) = match (req.method(), req.path().as_str()) {
        (Method::Post, "/cue") => (bindings::CUE_LIMITER, "cues per credential"),
        _ => (bindings::API_LIMITER, "API calls per credential"),
    };
    if !worker_shared::within_limit(&env, limiter, &principal.rate_key()).await {
        return worker_shared::too_many(what);
    }
    let path = req.path();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method();
    // Scope per route: `cue` fires cues, `read` reads, the rest is `admin`.
    let need = match (&method, parts.as_slice()) {
        (Method::Get, ["api", "whoami"]) => None,
        (Method::Post, ["cue"]) => Some(Scope::Cue),
        (Method::Get, ["api", "orgs", _, "api-keys"]) => Some(Scope::Admin),
        (Method::Get, ["api", "orgs", _, ..]) => Some(Scope::Read),
        _ => Some(Scope::Admin),
    };
    if let Some(Err(e)) = need.map(|n| principal.require(n)) {
        return worker_shared::auth_error(&e);
    }
    match (method.clone(), parts.as_slice()) {
        (Method::Post, ["cue"]) => cue(&mut req, &env, &principal).await,
        (Method::Get, ["api", "whoami"]) => json(
            &serde_json::json!({"org": principal.org, "subject": principal.subject, "scopes": principal.scopes.names()}),
            200,
        ),
        (Method::Post, ["api", "conditioning", "lease"]) => match principal.require_platform() {
            Ok(()) => conditioning_lease(&mut req, &env).await,
            Err(e) => worker_shared::auth_error(&e),
        },
        (Method::Post, ["api", "conditioning", "jobs", org, id, "complete"]) => {
            match principal.require_platform() {
                Ok(()) => conditioning_complete(&mut req, &env, org, id).await,
                Err(e) => worker_shared::auth_error(&e),
            }
        }
        (Method::Get, ["api", "metrics"]) => match principal.require_platform() {
            // Every scope, platform-wide ones (beacon, decision) included.
            Ok(()) => {
                let rows: Vec<serde_json::Value> = env
                    .d1(bindings::DB)?
                    .prepare("SELECT scope, name, value FROM metrics ORDER BY scope, name")
                    .all()
                    .await?
                    .results()?;
                json(&serde_json::json!({"items": rows}), 200)
            }
            Err(e) => worker_shared::auth_error(&e),
        },
        (Method::Get, ["api", "diag"]) => match principal.require_platform() {
            // Platform totals and every binding: platform admins only.
            Ok(()) => diag(&env, &principal).await,
            Err(e) => worker_shared::auth_error(&e),
        },
        (_, ["api", "orgs", org, rest @ ..]) => {
            if let Err(e) = principal.authorize(org) {
                return worker_shared::auth_error(&e);
            }
            org_route(method, &mut req, &env, org, rest).await
        }
        (Method::Put, ["api", "media", key @ ..]) => {
            put_media(&req, &env, &principal, &key.join("/")).await
        }
        _ => error(404, "no such route"),
    }
}

/// Largest media object accepted (an ad segment is a few MB).
const MAX_MEDIA_BYTES: u64 = 64 * 1024 * 1024;

/// `PUT /api/media/{org}/{path}`: stream the body into R2 (never buffered
/// here; the length must be declared). Keys under `_static/` (the
/// dashboard's scripts) and reserved org ids are for platform admins only;
/// the stored type is ours (`media_http::disposition`), never the
/// uploader's.
async fn put_media(req: &Request, env: &Env, p: &Principal, key: &str) -> Result<Response> {
    if key.is_empty()
        || key.len() > 512
        || key.contains("..")
        || key.contains("//")
        || key.bytes().any(|b| b.is_ascii_control() || b == b'\\')
    {
        return error(
            400,
            "key: a relative path without '..', '//' or control characters",
        );
    }
    let org = key.split('/').next().unwrap_or("");
    if !media_http::org_id_allowed(org) && p.org != "*" {
        return error(403, format!("{org:?} is reserved for the platform"));
    }
    if let Err(e) = p.authorize(org) {
        return worker_shared::auth_error(&e);
    }
    let len: Option<u64> = req
        .headers()
        .get("Content-Length")?
        .and_then(|l| l.parse().ok());
    let Some(len) = len else {
        return error(411, "Content-Length: required (uploads are streamed)");
    };
    if len > MAX_MEDIA_BYTES {
        return error(
            413,
            format!("body is {len} bytes, over the {MAX_MEDIA_BYTES}-byte limit"),
        );
    }
    let d = media_http::disposition(key);
    let body: worker::Data = match req.inner().body() {
        Some(stream) if len > 0 => stream.into(),
        _ => worker::Data::Empty,
    };
    env.bucket(bindings::AD_MEDIA)?
        .put(key, body)
        .http_metadata(HttpMetadata {
            content_type: Some(d.content_type.into()),
            ..Default::default()
        })
        .execute()
        .await?;
    json(
        &serde_json::json!({"key": key, "content_type": d.content_type, "inline": d.inline}),
        201,
    )
}

async fn body_json<T: serde::de::DeserializeOwned>(
    req: &mut Request,
) -> std::result::Result<T, String> {
    body_json_within(req, MAX_BODY).await
}

/// The decision preview's body: a decision request is a few hundred bytes.
const MAX_PREVIEW_BODY: usize = 64 * 1024;

/// Read at most `limit` bytes of body: refused before reading when the
/// declared length is already too much, and while streaming when a body
/// without one (chunked) runs past it, so a client never makes the worker
/// buffer more than the limit.
async fn read_within(req: &mut Request, limit: usize) -> std::result::Result<Vec<u8>, String> {
    use futures::StreamExt;
    let declared: Option<usize> = req
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|l| l.parse().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(format!("body is over the {limit}-byte limit"));
    }
    let mut out = Vec::new();
    let Ok(mut stream) = req.stream() else {
        return Ok(out);
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > limit {
            return Err(format!("body is over the {limit}-byte limit"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn body_json_within<T: serde::de::DeserializeOwned>(
    req: &mut Request,
    limit: usize,
) -> std::result::Result<T, String> {
    let mut bytes = read_within(req, limit).await?;
    if bytes.is_empty() {
        // No body reads as JSON null: fine for optional bodies, a clear
        // type error for required ones.
        bytes = b"null".to_vec();
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON body: {e}"))
}

fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn org_route(
    method: Method,
    req: &mut Request,
    env: &Env,
    org: &str,
    rest: &[&str],
) -> Result<Response> {
    let db = env.d1(bindings::DB)?;
    match (method, rest) {
        (Method::Put, []) => {
            #[derive(Deserialize)]
            struct Org {
                name: String,
                #[serde(default)]
                conditioning: Option<cf_ssai_core::ads::conditioning::Settings>,
            }
            let o: Org = match body_json(req).await {
                Ok(o) => o,
                Err(e) => return error(400, e),
            };
            if !valid_slug(org) {
                return error(400, "org: must be 1-64 of [A-Za-z0-9_-]");
            }
            if !media_http::org_id_allowed(org) {
                return error(
                    400,
                    format!("org: {org:?} is reserved (a route or the platform's own prefix)"),
                );
            }
            if let Some(Err(e)) = o.conditioning.as_ref().map(|c| c.check()) {
                return error(400, format!("conditioning.{e}"));
            }
            // Settings change only when given (a rename keeps them).
            let given = o.conditioning.is_some();
            let settings =
                serde_json::json!({ "conditioning": o.conditioning.unwrap_or_default() });
            db.prepare("INSERT INTO orgs (id, name, created_ms, settings) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(id) DO UPDATE SET name = excluded.name, settings = CASE WHEN ?5 = 1 THEN excluded.settings ELSE orgs.settings END")
                .bind(&[org.into(), o.name.into(), (now_ms() as f64).into(), settings.to_string().into(), (given as i32 as f64).into()])?
                .run()
                .await?;
            json(&serde_json::json!({"id": org}), 200)
        }
        (Method::Get, ["channels"]) => {
            let url = req.url()?;
            let limit: u32 = url
                .query_pairs()
                .find(|(k, _)| k == "limit")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(50)
                .min(200);
            let cursor = url
                .query_pairs()
                .find(|(k, _)| k == "cursor")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let rows: Vec<serde_json::Value> = db
                .prepare("SELECT slug, config, health, health_detail, updated_ms FROM channels WHERE org_id = ?1 AND slug > ?2 ORDER BY slug LIMIT ?3")
                .bind(&[org.into(), cursor.into(), (limit as f64).into()])?
                .all()
                .await?
                .results()?;
            let next = (rows.len() as u32 == limit)
                .then(|| {
                    rows.last()
                        .and_then(|r| r["slug"].as_str().map(String::from))
                })
                .flatten();
            let items: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|mut r| {
                    if let Some(c) = r["config"]
                        .as_str()
                        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
                    {
                        r["config"] = c;
                    }
                    r
                })
                .collect();
            json(
                &serde_json::json!({"items": items, "next_cursor": next}),
                200,
            )
        }
        (Method::Get, ["channels", slug]) => {
            match worker_shared::load_channel_d1(env, org, slug).await? {
                Some(c) => json(&c, 200),
                None => error(404, format!("no channel {org}/{slug}")),
            }
        }
        (Method::Put, ["channels", slug]) => {
            if !valid_slug(slug) {
                return error(400, "slug: must be 1-64 of [A-Za-z0-9_-]");
            }
            let cfg: ChannelConfig = match body_json(req).await {
                Ok(c) => c,
                Err(e) => return error(400, e),
            };
            let errs = cfg.validate(worker_shared::private_origins_allowed(env));
            if !errs.is_empty() {
                return json(
                    &serde_json::json!({"error": "invalid channel config", "fields": errs}),
                    400,
                );
            }
            db.prepare("INSERT INTO channels (org_id, slug, config, updated_ms) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(org_id, slug) DO UPDATE SET config = excluded.config, updated_ms = excluded.updated_ms")
                .bind(&[org.into(), (*slug).into(), serde_json::to_string(&cfg)?.into(), (now_ms() as f64).into()])?
                .run()
                .await?;
            worker_shared::invalidate_channel(env, org, slug).await?;
            if cfg.scte35_enabled && cfg.active {
                let _ = ChannelClient::new(env, ChannelRef::new(org, slug))
                    .ensure_poller()
                    .await;
            }
            json(
                &serde_json::json!({"org": org, "slug": slug, "config": cfg}),
                200,
            )
        }
        (Method::Delete, ["channels", slug]) => {
            db.prepare("DELETE FROM channels WHERE org_id = ?1 AND slug = ?2")
                .bind(&[org.into(), (*slug).into()])?
                .run()
                .await?;
            worker_shared::invalidate_channel(env, org, slug).await?;
            json(&serde_json::json!({"deleted": slug}), 200)
        }
        (Method::Get, ["channels", slug, "breaks"]) => {
            let st = ChannelClient::new(env, ChannelRef::new(org, slug))
                .state()
                .await?;
            json(&st, 200)
        }
        (Method::Post, ["decision"]) => {
            // Preview a decision (operators, dashboard, load test): the
            // body is the decision service's, with the org from the path.
            let mut v: serde_json::Value = match body_json_within(req, MAX_PREVIEW_BODY).await {
                Ok(v @ serde_json::Value::Object(_)) => v,
                Ok(_) => return error(400, "body: a JSON object"),
                Err(e) => return error(413, e),
            };
            v["org"] = serde_json::Value::String(org.to_string());
            worker_shared::call_internal(
                env,
                bindings::DECISION,
                "https://decision/decision",
                Method::Post,
                Some(v.to_string()),
                30_000,
            )
            .await
        }
        (Method::Get, ["channels", slug, "monitor"]) => {
            // The poller's record: polls, errors, longest gap, late polls.
            let stats = ChannelClient::new(env, ChannelRef::new(org, slug))
                .poll_stats()
                .await?;
            json(&stats, 200)
        }
        (Method::Get, ["channels", slug, "kv"]) => {
            // Exactly the KV values a playlist request of this channel
            // reads: the config cache, the view, and the pod of each break
            // in view (a window reads those it touches). `breaks` joins
            // view and pods the way the playback path does.
            let kv = env.kv(bindings::KV)?;
            let mut reads = serde_json::Map::new();
            let mut bytes = serde_json::Map::new();
            let mut read = |key: String, text: Option<String>| -> Option<serde_json::Value> {
                let t = text?;
                bytes.insert(key.clone(), t.len().into());
                let v: serde_json::Value = serde_json::from_str(&t).ok()?;
                reads.insert(key, v.clone());
                Some(v)
            };
            let config_key = worker_shared::kv_config_key(org, slug);
            let t = kv.get(&config_key).text().await?;
            read(config_key, t);
            let view_key = worker_shared::kv_breaks_key(org, slug);
            let t = kv.get(&view_key).text().await?;
            let view: Option<model::ChannelView> =
                read(view_key, t).and_then(|v| serde_json::from_value(v).ok());
            let mut entries = Vec::new();
            for e in view.iter().flat_map(|v| v.entries.iter()) {
                let key = worker_shared::kv_pod_key(org, slug, &e.record.id);
                let t = kv.get(&key).text().await?;
                let pod = read(key, t);
                entries.push(serde_json::json!({ "record": e.record, "pod": pod }));
            }
            let breaks = view.as_ref().map(|v| {
                serde_json::json!({
                    "entries": entries,
                    "checked_through_msn": v.checked_through_msn,
                    "disc_base": v.disc_base,
                    "updated_ms": v.updated_ms,
                })
            });
            json(
                &serde_json::json!({ "breaks": breaks, "reads": reads, "bytes": bytes }),
                200,
            )
        }
        (Method::Put, ["ads", id]) => {
            #[derive(Deserialize)]
            struct Ad {
                creative_id: String,
                universal_ad_id: Option<String>,
                channel: Option<String>,
                duration_s: f64,
                cadence_ms: u64,
                renditions: Vec<model::AdRendition>,
                #[serde(default)]
                tracking: model::Tracking,
                #[serde(default)]
                priority: i64,
                /// Made by a conditioner from an ad server's creative:
                /// matched to VAST only, never a house ad.
                #[serde(default)]
                conditioned: bool,
                #[serde(default)]
                source_url: Option<String>,
                #[serde(default)]
                source_size: u64,
                /// What the last segment holds beyond the creative (the
                /// conditioner holds the last frame to whole segments).
                #[serde(default)]
                padding_s: f64,
            }
            let ad: Ad = match body_json(req).await {
                Ok(a) => a,
                Err(e) => return error(400, e),
            };
            if !valid_slug(id) {
                return error(400, "id: must be 1-64 of [A-Za-z0-9_-]");
            }
            if !(ad.duration_s > 0.0 && ad.duration_s <= 600.0) {
                return error(400, "duration_s: must be in (0, 600]");
            }
            if !(0.0..=20.0).contains(&ad.padding_s) {
                return error(400, "padding_s: must be in [0, 20]");
            }
            if ad.renditions.is_empty() {
                return error(400, "renditions: at least one is required");
            }
            if let Err(e) = check_renditions(&ad.renditions) {
                return error(400, e);
            }
            db.prepare("INSERT INTO ads (org_id, id, channel_slug, creative_id, universal_ad_id, duration_s, cadence_ms, renditions, tracking, priority, created_ms, conditioned, source_url, source_size, padding_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT(org_id, id) DO UPDATE SET channel_slug = excluded.channel_slug, creative_id = excluded.creative_id, universal_ad_id = excluded.universal_ad_id, duration_s = excluded.duration_s, cadence_ms = excluded.cadence_ms, renditions = excluded.renditions, tracking = excluded.tracking, priority = excluded.priority, conditioned = excluded.conditioned, source_url = excluded.source_url, source_size = excluded.source_size, padding_s = excluded.padding_s")
                .bind(&[
                    org.into(),
                    (*id).into(),
                    opt(ad.channel),
                    ad.creative_id.into(),
                    opt(ad.universal_ad_id),
                    ad.duration_s.into(),
                    (ad.cadence_ms as f64).into(),
                    serde_json::to_string(&ad.renditions)?.into(),
                    serde_json::to_string(&ad.tracking)?.into(),
                    (ad.priority as f64).into(),
                    (now_ms() as f64).into(),
                    (ad.conditioned as i32 as f64).into(),
                    opt(ad.source_url),
                    (ad.source_size as f64).into(),
                    ad.padding_s.into(),
                ])?
                .run()
                .await?;
            json(&serde_json::json!({"id": id}), 200)
        }
        (Method::Get, ["ads"]) => {
            let rows: Vec<serde_json::Value> = db
                .prepare("SELECT id, channel_slug, creative_id, universal_ad_id, duration_s, cadence_ms, priority, active, conditioned, source_url FROM ads WHERE org_id = ?1 ORDER BY priority DESC, id LIMIT 200")
                .bind(&[org.into()])?
                .all()
                .await?
                .results()?;
            json(&serde_json::json!({"items": rows}), 200)
        }
        (Method::Put, ["slates", id]) => {
            #[derive(Deserialize)]
            struct SlateIn {
                channel: Option<String>,
                renditions: Vec<model::AdRendition>,
            }
            let s: SlateIn = match body_json(req).await {
                Ok(s) => s,
                Err(e) => return error(400, e),
            };
            if s.renditions.is_empty() {
                return error(400, "renditions: at least one is required");
            }
            if !valid_slug(id) {
                return error(400, "id: must be 1-64 of [A-Za-z0-9_-]");
            }
            if let Err(e) = check_renditions(&s.renditions) {
                return error(400, e);
            }
            db.prepare("INSERT INTO slates (org_id, id, channel_slug, renditions, created_ms) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(org_id, id) DO UPDATE SET channel_slug = excluded.channel_slug, renditions = excluded.renditions")
                .bind(&[
                    org.into(),
                    (*id).into(),
                    opt(s.channel),
                    serde_json::to_string(&s.renditions)?.into(),
                    (now_ms() as f64).into(),
                ])?
                .run()
                .await?;
            json(&serde_json::json!({"id": id}), 200)
        }
        (Method::Post, ["api-keys"]) => {
            #[derive(Deserialize, Default)]
            struct KeyIn {
                scopes: Option<String>,
                label: Option<String>,
            }
            let k: KeyIn = match body_json::<Option<KeyIn>>(req).await {
                Ok(k) => k.unwrap_or_default(),
                Err(e) => return error(400, e),
            };
            let scopes = match auth::Scopes::parse(k.scopes.as_deref().unwrap_or("admin")) {
                Ok(s) => s,
                Err(e) => return error(400, format!("scopes: {e}")),
            };
            let label = k.label.unwrap_or_default();
            if label.len() > 128 || label.chars().any(char::is_control) {
                return error(400, "label: at most 128 printable characters");
            }
            let key = format!("cfssai_{}", random_hex(24));
            let salt = random_hex(16);
            let id = auth::api_key_id(&key).unwrap_or_default().to_string();
            db.prepare("INSERT INTO api_keys (id, org_id, salt, hash, label, scopes, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .bind(&[id.as_str().into(), org.into(), salt.as_str().into(), auth::hash_api_key(&salt, &key).into(), label.as_str().into(), scopes.names().into(), (now_ms() as f64).into()])?
                .run()
                .await?;
            // The key is shown once; only its salted hash is stored.
            json(
                &serde_json::json!({"id": id, "key": key, "scopes": scopes.names(), "label": label}),
                201,
            )
        }
        (Method::Get, ["api-keys"]) => {
            // Never the hash or salt: what a key is, not what proves it.
            let rows: Vec<serde_json::Value> = db
                .prepare("SELECT id, label, scopes, created_ms, last_used_ms, revoked, revoked_ms FROM api_keys WHERE org_id = ?1 ORDER BY created_ms DESC LIMIT 500")
                .bind(&[org.into()])?
                .all()
                .await?
                .results()?;
            json(&serde_json::json!({"items": rows}), 200)
        }
        (Method::Delete, ["api-keys", id]) => {
            let r = db
                .prepare("UPDATE api_keys SET revoked = 1, revoked_ms = ?3 WHERE org_id = ?1 AND id = ?2 AND revoked = 0")
                .bind(&[org.into(), (*id).into(), (now_ms() as f64).into()])?
                .run()
                .await?;
            let changed = r.meta()?.and_then(|m| m.changes).unwrap_or(0);
            if changed == 0 {
                return error(404, format!("no active key {id} in org {org}"));
            }
            json(&serde_json::json!({"revoked": id}), 200)
        }
        (Method::Get, ["metrics"]) => metrics_report(req, &db, org).await,
        (Method::Get, ["conditioning", "stats"]) => json(&conditioning_stats(&db, org).await?, 200),
        (Method::Get, ["conditioning", "jobs"]) => {
            let rows: Vec<serde_json::Value> = db
                .prepare("SELECT id, identity, creative_id, universal_ad_id, ad_system, duration_s, source_url, source_kind, source_size, source, state, reason, failure_category, notes, attempts, lease_owner, lease_until_ms, seen, created_ms, updated_ms, started_ms, finished_ms, ad_ids FROM conditioning_jobs WHERE org_id = ?1 ORDER BY created_ms DESC LIMIT 200")
                .bind(&[org.into()])?
                .all()
                .await?
                .results()?;
            json(&serde_json::json!({"items": rows}), 200)
        }
        (Method::Get, ["metrics", "openmetrics"]) => {
            // Running totals (counters since the channel's first metric):
            // what Prometheus scrapes, and rates come from its `rate()`.
            #[derive(Deserialize)]
            struct T {
                channel: String,
                series: String,
                value: f64,
            }
            let rows: Vec<T> = db
                .prepare("SELECT channel, series, value FROM metric_totals WHERE org_id = ?1 ORDER BY channel, series")
                .bind(&[org.into()])?
                .all()
                .await?
                .results()?;
            let totals: Vec<(String, String, f64)> = rows
                .into_iter()
                .map(|t| (t.channel, t.series, t.value))
                .collect();
            // The conditioner's queue, latency and failures: a snapshot of
            // D1 at scrape time (gauges), before the closing `# EOF`.
            let cond = conditioning_stats(&db, org).await?.openmetrics(org);
            let mut r = Response::ok(cf_ssai_core::control::metrics::openmetrics(org, &totals, &cond))?;
            r.headers_mut().set(
                "Content-Type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )?;
            Ok(r)
        }
        (Method::Get, ["breaks"]) => {
            let rows: Vec<serde_json::Value> = db
                .prepare("SELECT slug, break_id, source, record, pod, created_ms FROM breaks WHERE org_id = ?1 ORDER BY created_ms DESC LIMIT 50")
                .bind(&[org.into()])?
                .all()
                .await?
                .results()?;
            json(&serde_json::json!({"items": rows}), 200)
        }
        _ => error(404, "no such route"),
    }
}

/// The org's conditioning figures over the last hour (queued and running
/// jobs whenever they started).
async fn conditioning_stats(
    db: &D1Database,
    org: &str,
) -> Result<cf_ssai_core::ads::conditioning::Stats> {
    use cf_ssai_core::ads::conditioning as c;
    const WINDOW_MS: i64 = 3_600_000;
    let now = now_ms();
    let rows: Vec<c::JobStat> = db
        .prepare("SELECT state, failure_category, created_ms, started_ms, finished_ms FROM conditioning_jobs WHERE org_id = ?1 AND (state IN ('queued', 'running') OR finished_ms >= ?2)")
        .bind(&[org.into(), ((now - WINDOW_MS) as f64).into()])?
        .all()
        .await?
        .results()?;
    Ok(c::stats(&rows, now, WINDOW_MS))
}

/// `POST /api/conditioning/lease {owner, lease_s?, org?}`: one job for a
/// conditioner (platform admins: conditioners serve every org). One
/// statement claims it (so two conditioners never get the same job): the
/// oldest queued job, or a running one whose lease expired (its
/// conditioner died), with attempts left. Jobs whose lease expired with no
/// attempts left fail first. Answers the job with its org's conditioning
/// settings and the cadences its channels use, or 204.
async fn conditioning_lease(req: &mut Request, env: &Env) -> Result<Response> {
    use cf_ssai_core::ads::conditioning as c;
    #[derive(Deserialize)]
    struct Lease {
        owner: String,
        #[serde(default)]
        lease_s: Option<u32>,
        #[serde(default)]
        org: Option<String>,
    }
    let l: Lease = match body_json(req).await {
        Ok(l) => l,
        Err(e) => return error(400, e),
    };
    if l.owner.is_empty() || l.owner.len() > 128 {
        return error(400, "owner: 1-128 characters naming this conditioner");
    }
    let lease_ms = i64::from(l.lease_s.unwrap_or(c::DEFAULT_LEASE_S).clamp(5, 3600)) * 1000;
    let now = now_ms();
    let db = env.d1(bindings::DB)?;
    let org = l.org.unwrap_or_default();
    let mut res = db
        .batch(vec![
            db.prepare("UPDATE conditioning_jobs SET state = 'failed', failure_category = 'lease_expired', reason = 'lease_expired: the conditioner was lost on each of ' || attempts || ' attempts', finished_ms = ?1, updated_ms = ?1, lease_owner = NULL WHERE state = 'running' AND lease_until_ms < ?1 AND attempts >= ?2")
                .bind(&[(now as f64).into(), f64::from(c::MAX_ATTEMPTS).into()])?,
            // Fair between orgs: the org served longest ago first (then
            // its oldest job), and no org beyond its running quota, so
            // one org's hundred creatives never hold back another's one.
            db.prepare("UPDATE conditioning_jobs SET state = 'running', lease_owner = ?2, lease_until_ms = ?3, attempts = attempts + 1, started_ms = COALESCE(started_ms, ?1), leased_ms = ?1, updated_ms = ?1 WHERE (org_id, id) = (WITH orgs AS (SELECT org_id, MAX(COALESCE(leased_ms, 0)) AS last, SUM(state = 'running' AND lease_until_ms >= ?1) AS running FROM conditioning_jobs GROUP BY org_id) SELECT j.org_id, j.id FROM conditioning_jobs j JOIN orgs o ON o.org_id = j.org_id WHERE (j.state = 'queued' OR (j.state = 'running' AND j.lease_until_ms < ?1)) AND j.attempts < ?4 AND (?5 = '' OR j.org_id = ?5) AND o.running < ?6 ORDER BY o.last, j.created_ms LIMIT 1) RETURNING org_id, id, identity, creative_id, universal_ad_id, duration_s, source, attempts, lease_until_ms")
                .bind(&[
                    (now as f64).into(),
                    l.owner.as_str().into(),
                    ((now + lease_ms) as f64).into(),
                    f64::from(c::MAX_ATTEMPTS).into(),
                    org.as_str().into(),
                    f64::from(c::MAX_RUNNING_PER_ORG).into(),
                ])?,
        ])
        .await?
        .into_iter();
    let _expired = res.next();
    let job: Option<serde_json::Value> = res
        .next()
        .map(|r| r.results::<serde_json::Value>())
        .transpose()?
        .and_then(|rows| rows.into_iter().next());
    let Some(mut job) = job else {
        return Ok(Response::empty()?.with_status(204));
    };
    let job_org = job["org_id"].as_str().unwrap_or_default().to_string();
    #[derive(Deserialize)]
    struct S {
        settings: String,
    }
    let settings: c::Settings = db
        .prepare("SELECT settings FROM orgs WHERE id = ?1")
        .bind(&[job_org.as_str().into()])?
        .first::<S>(None)
        .await?
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s.settings).ok())
        .and_then(|v| serde_json::from_value(v["conditioning"].clone()).ok())
        .unwrap_or_default();
    #[derive(Deserialize)]
    struct Cad {
        cadence: Option<f64>,
    }
    let mut cadences: Vec<u64> = db
        .prepare("SELECT DISTINCT json_extract(config, '$.cadence_ms') AS cadence FROM channels WHERE org_id = ?1")
        .bind(&[job_org.as_str().into()])?
        .all()
        .await?
        .results::<Cad>()?
        .into_iter()
        .filter_map(|r| r.cadence.map(|c| c as u64))
        .filter(|c| (200..=20_000).contains(c))
        .collect();
    cadences.sort_unstable();
    cadences.dedup();
    // Each cadence is a full encode: a few per job at most.
    cadences.truncate(c::MAX_CADENCES_PER_JOB);
    if cadences.is_empty() {
        // Channels that learn their cadence from the origin: the common one.
        cadences.push(2000);
    }
    if let Some(src) = job["source"]
        .as_str()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
    {
        job["source"] = src;
    }
    json(
        &serde_json::json!({ "job": job, "settings": settings, "cadences": cadences }),
        200,
    )
}

/// `POST /api/conditioning/jobs/{org}/{id}/complete {owner, ok, reason?,
/// permanent?, ad_ids?}`: the leaseholder reports. Success makes the job
/// ready (its ads are already registered); a permanent failure (the
/// source is missing, not video, too large) or a failure on the last
/// attempt fails it with the reason; any other failure queues it again.
/// 409 when the lease was lost (expired and taken by another conditioner).
async fn conditioning_complete(
    req: &mut Request,
    env: &Env,
    org: &str,
    id: &str,
) -> Result<Response> {
    use cf_ssai_core::ads::conditioning as c;
    #[derive(Deserialize)]
    struct Done {
        owner: String,
        ok: bool,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        permanent: bool,
        #[serde(default)]
        ad_ids: Vec<String>,
        /// A `FailureCategory` label (unknown labels are not stored).
        #[serde(default)]
        category: Option<String>,
        #[serde(default)]
        notes: Option<serde_json::Value>,
    }
    let d: Done = match body_json(req).await {
        Ok(d) => d,
        Err(e) => return error(400, e),
    };
    let now: wasm_bindgen::JsValue = (now_ms() as f64).into();
    let reason: String = d.reason.unwrap_or_default().chars().take(500).collect();
    let category = d
        .category
        .as_deref()
        .and_then(c::FailureCategory::parse)
        .map_or(wasm_bindgen::JsValue::NULL, |c| c.as_str().into());
    // Notes are the conditioner's summary: bounded, stored as JSON.
    let notes = d
        .notes
        .map(|n| n.to_string())
        .filter(|n| n.len() <= 8192)
        .map_or(wasm_bindgen::JsValue::NULL, Into::into);
    let db = env.d1(bindings::DB)?;
    let stmt = if d.ok {
        db.prepare("UPDATE conditioning_jobs SET state = 'ready', reason = NULL, failure_category = NULL, notes = ?6, finished_ms = ?4, updated_ms = ?4, lease_owner = NULL, ad_ids = ?5 WHERE org_id = ?1 AND id = ?2 AND lease_owner = ?3 AND state = 'running'")
            .bind(&[org.into(), id.into(), d.owner.into(), now, serde_json::to_string(&d.ad_ids)?.into(), notes])?
    } else {
        db.prepare("UPDATE conditioning_jobs SET state = CASE WHEN ?5 = 1 OR attempts >= ?6 THEN 'failed' ELSE 'queued' END, reason = ?7, failure_category = ?8, finished_ms = CASE WHEN ?5 = 1 OR attempts >= ?6 THEN ?4 ELSE NULL END, updated_ms = ?4, lease_owner = NULL, lease_until_ms = NULL WHERE org_id = ?1 AND id = ?2 AND lease_owner = ?3 AND state = 'running'")
            .bind(&[
                org.into(),
                id.into(),
                d.owner.into(),
                now,
                (d.permanent as i32 as f64).into(),
                f64::from(c::MAX_ATTEMPTS).into(),
                reason.into(),
                category,
            ])?
    };
    let changed = stmt
        .run()
        .await?
        .meta()?
        .and_then(|m| m.changes)
        .unwrap_or(0);
    if changed == 0 {
        return error(
            409,
            format!("job {org}/{id}: not leased by this conditioner (lease expired?)"),
        );
    }
    json(&serde_json::json!({ "id": id, "ok": d.ok }), 200)
}

/// `GET /api/orgs/{org}/metrics?from=&to=&channel=&step=`: the operator
/// figures for a range (default the last hour), totals and one point per
/// step. `from`/`to`: epoch ms, RFC 3339, `now` or `-90m`/`-24h`/`-7d`;
/// `step` in seconds (default: about 120 points, whole hours once the
/// range reaches rolled-up data).
async fn metrics_report(req: &Request, db: &D1Database, org: &str) -> Result<Response> {
    use cf_ssai_core::control::metrics as m;
    let url = req.url()?;
    let q = |k: &str| {
        url.query_pairs()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.into_owned())
    };
    let now = now_ms();
    let from = match m::parse_time(q("from").as_deref().unwrap_or("-1h"), now) {
        Ok(t) => t,
        Err(e) => return error(400, format!("from: {e}")),
    };
    let to = match m::parse_time(q("to").as_deref().unwrap_or("now"), now) {
        Ok(t) => t,
        Err(e) => return error(400, format!("to: {e}")),
    };
    if to <= from {
        return error(400, "to: must be after from");
    }
    let channel = q("channel").unwrap_or_default();
    let minute_floor = now - m::MINUTE_RETENTION_MS;
    let step = match q("step").map(|s| s.parse::<i64>()) {
        None => m::step_for(from, to, 120, minute_floor),
        Some(Ok(s)) if (60..=31 * 86_400).contains(&s) && s % 60 == 0 => s * 1000,
        Some(_) => return error(400, "step: whole minutes in seconds (60 to 2678400)"),
    };
    if (to - from) / step > 2000 {
        return error(400, "step: at most 2000 points per request");
    }
    #[derive(Deserialize)]
    struct R {
        t: f64,
        series: String,
        value: f64,
    }
    let mut rows: Vec<m::Row> = Vec::new();
    for table in ["metric_minutes", "metric_hours"] {
        let sql = format!(
            "SELECT CAST(t_ms / ?4 AS INTEGER) * ?4 AS t, series, SUM(value) AS value FROM {table} \
             WHERE org_id = ?1 AND t_ms >= ?2 AND t_ms < ?3 AND (?5 = '' OR channel = ?5) \
             GROUP BY t, series"
        );
        let start = from.div_euclid(step) * step;
        let got: Vec<R> = db
            .prepare(&sql)
            .bind(&[
                org.into(),
                (start as f64).into(),
                (to as f64).into(),
                (step as f64).into(),
                channel.as_str().into(),
            ])?
            .all()
            .await?
            .results()?;
        rows.extend(got.into_iter().map(|r| m::Row {
            t_ms: r.t as i64,
            key: r.series,
            value: r.value,
        }));
    }
    let mut v = serde_json::to_value(m::report(&rows, from, to, step))?;
    v["org"] = org.into();
    v["channel"] = (!channel.is_empty()).then_some(channel).into();
    json(&v, 200)
}

/// Every rendition an org writes must be safe to render (checked again
/// when rendered): see `AdRendition::check`.
fn check_renditions(rs: &[model::AdRendition]) -> std::result::Result<(), String> {
    for (i, r) in rs.iter().enumerate() {
        r.check().map_err(|e| format!("renditions[{i}].{e}"))?;
    }
    Ok(())
}

/// An optional text column: NULL when absent.
fn opt(s: Option<String>) -> wasm_bindgen::JsValue {
    s.map(Into::into).unwrap_or(wasm_bindgen::JsValue::NULL)
}

#[derive(Deserialize)]
struct CueBody {
    channel: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    duration: Option<f64>,
    pod_id: Option<String>,
    start_at: Option<String>,
    event_id: Option<String>,
}

/// `POST /cue {channel: "org/slug", type: start|stop|schedule, duration, start_at?}`
async fn cue(req: &mut Request, env: &Env, p: &Principal) -> Result<Response> {
    let idem = req.headers().get("Idempotency-Key")?;
    let b: CueBody = match body_json(req).await {
        Ok(b) => b,
        Err(e) => return error(400, e),
    };
    let Some(channel) = b.channel else {
        return error(400, "channel: required, as \"org/slug\"");
    };
    let Some((org, slug)) = channel.split_once('/') else {
        return error(400, "channel: must be \"org/slug\"");
    };
    if let Err(e) = p.authorize(org) {
        return worker_shared::auth_error(&e);
    }
    let kind = match b.kind.as_deref().map(|k| (k, CueCommand::parse(k))) {
        Some((_, Some(k))) => k,
        Some((other, None)) => {
            return error(
                400,
                format!("type: {other:?} is not start, stop or schedule"),
            )
        }
        None => return error(400, "type: required (start, stop or schedule)"),
    };
    let duration_ms = match (kind, b.duration) {
        (CueCommand::Stop, _) => 0,
        (_, Some(d)) if d.is_finite() && d > 0.0 && d <= 600.0 => (d * 1000.0).round() as u64,
        (_, Some(_)) => return error(400, "duration: must be a number of seconds in (0, 600]"),
        (_, None) => return error(400, "duration: required for start and schedule"),
    };
    let start_at_ms = match (kind, &b.start_at) {
        (CueCommand::Schedule, Some(s)) => match cf_ssai_core::hls::parse_pdt_ms(s) {
            Some(t) if t > now_ms() => Some(t),
            Some(_) => return error(400, "start_at: must be in the future"),
            None => return error(400, "start_at: must be an RFC 3339 date-time"),
        },
        (CueCommand::Schedule, None) => return error(400, "start_at: required for schedule"),
        (_, Some(_)) => return error(400, "start_at: only for schedule"),
        _ => None,
    };
    let Some(ch) = worker_shared::load_channel(env, org, slug).await? else {
        return error(404, format!("no channel {org}/{slug}"));
    };
    // Anchor at the next segment boundary of the live origin.
    let media_url =
        match crate::origin::media_url_for_poll(&ch.config, &worker_shared::private_policy(env))
            .await
        {
            Ok(u) => u,
            Err(e) => return error(502, format!("origin: {e}")),
        };
    let text = match worker_shared::get_text(
        &media_url,
        ch.config.origin_timeout_ms,
        &worker_shared::private_policy(env),
    )
    .await
    {
        Ok(t) => t,
        Err(e) => return error(502, format!("origin: {e}")),
    };
    let m = match media::parse(&text) {
        Ok(m) => m,
        Err(e) => return error(502, format!("origin playlist: {e}")),
    };
    let cadence = crate::origin::cadence_ms(&ch.config, &m);
    let Some(last) = m.segments.last() else {
        return error(502, "origin playlist has no segments");
    };
    let next_msn = last.msn + 1;
    let next_pdt = last
        .pdt_ms
        .map(|p| p + (last.duration * 1000.0).round() as i64);
    let (anchor_msn, anchor_pdt) = match (start_at_ms, next_pdt) {
        (Some(at), Some(np)) => {
            let ahead = ((at - np).max(0) as u64).div_ceil(cadence.max(1));
            (next_msn + ahead, Some(np + (ahead * cadence) as i64))
        }
        (Some(_), None) => {
            return error(
                400,
                "start_at: the origin has no PROGRAM-DATE-TIME to schedule against",
            )
        }
        (None, np) => (next_msn, np),
    };
    let break_id = b
        .event_id
        .or(idem)
        .or(b.pod_id.map(|p| format!("pod-{p}")))
        .map(|s| {
            format!(
                "cue-{}",
                s.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .take(64)
                    .collect::<String>()
            )
        })
        .unwrap_or_else(|| format!("cue-{anchor_msn}"));
    let client = ChannelClient::new(env, ChannelRef::new(org, slug));
    let r = client
        .cue(&CueRequest {
            channel: client.channel.clone(),
            kind,
            break_id,
            anchor_msn,
            anchor_pdt_ms: anchor_pdt,
            duration_ms,
            cadence_ms: cadence,
        })
        .await?;
    match r.record {
        Some(rec) => json(&rec, r.status),
        None => error(r.status, r.error.unwrap_or_default()),
    }
}

/// Each binding, for real, through this worker (smoke tests, operators).
async fn diag(env: &Env, p: &Principal) -> Result<Response> {
    let stamp = now_ms().to_string();
    let kv = env.kv(bindings::KV)?;
    kv.put("diag:kv", &stamp)?
        .expiration_ttl(60)
        .execute()
        .await?;
    let kv_back = kv.get("diag:kv").text().await?;
    let d1: Option<f64> = env
        .d1(bindings::DB)?
        .prepare("SELECT COUNT(*) AS n FROM orgs")
        .first(Some("n"))
        .await?;
    let r2 = env.bucket(bindings::AD_MEDIA)?;
    r2.put("diag/r2.txt", stamp.clone()).execute().await?;
    let r2_obj = r2.get("diag/r2.txt").execute().await?;
    let r2_back = match r2_obj.as_ref().and_then(|o| o.body()) {
        Some(b) => Some(b.text().await?),
        None => None,
    };
    let do_back = ChannelClient::new(env, ChannelRef::new(&p.org, "__diag"))
        .ping()
        .await?;
    let mut dec = worker_shared::call_internal(
        env,
        bindings::DECISION,
        "https://decision/healthz",
        Method::Get,
        None,
        5_000,
    )
    .await?;
    let dec_back = dec.text().await?;
    // A struct, not a serde_json::Value: queue bodies go through
    // serde-wasm-bindgen, which turns Value maps into JS Maps.
    #[derive(serde::Serialize)]
    struct DiagMessage<'a> {
        kind: &'a str,
        stamp: &'a str,
    }
    env.queue(bindings::BEACONS)?
        .send(DiagMessage {
            kind: "diag",
            stamp: &stamp,
        })
        .await?;
    // What the beacon consumer wrote for the previous diag message.
    let queue_consumed = kv.get("diag:queue").text().await?;
    let monitor_last_cycle = kv.get("monitor:last_cycle").text().await?;
    json(
        &serde_json::json!({
            "queue_last_consumed": queue_consumed,
            "monitor_last_cycle": monitor_last_cycle,
            "kv": kv_back,
            "d1_orgs": d1,
            "r2": r2_back,
            "durable_object": do_back,
            "service_decision": dec_back,
            "queue_sent": stamp,
            "stamp": stamp,
        }),
        200,
    )
}

fn random_hex(n: usize) -> String {
    crate::random_hex(n)
}
