//! Control plane: the admin API under `/api/`, `POST /cue`, and the
//! bindings smoke check. Every route here is authenticated (JWT or API key)
//! and scoped to the principal's org.
//!
//! [`route`] authenticates, rate-limits and checks the scope; [`org_route`]
//! only dispatches; each handler does one route. Reads and writes of D1 go
//! through `worker_shared::store`; cue policy is `control::cue` in the core.

use cf_ssai_core::control::auth::{self, Principal, Scope};
use cf_ssai_core::control::config::ChannelConfig;
use cf_ssai_core::control::cue as cue_policy;
use cf_ssai_core::control::media_http;
use cf_ssai_core::hls::media;
use cf_ssai_core::model;
use serde::Deserialize;
use std::future::Future;
use worker::*;
use worker_shared::channel_client::{ChannelClient, ChannelRef, CueCommand, CueRequest};
use worker_shared::{bindings, error, json, now_ms, store};

const MAX_BODY: usize = 1024 * 1024;

/// A request answered before its work is done (refused, or not found):
/// the response to send.
type Early<T> = std::result::Result<T, Result<Response>>;

/// The value of an [`Early`], or return its response from the handler.
macro_rules! or_return {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

pub async fn route(mut req: Request, env: Env) -> Result<Response> {
    let principal = or_return!(authenticate(&req, &env).await);
    or_return!(within_rate(&req, &env, &principal).await);
    let path = req.path();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method();
    if let Some(Err(e)) = required_scope(&method, &parts).map(|n| principal.require(n)) {
        return worker_shared::auth_error(&e);
    }
    let p = &principal;
    match (method.clone(), parts.as_slice()) {
        (Method::Post, ["cue"]) => cue(&mut req, &env, p).await,
        (Method::Get, ["api", "whoami"]) => json(
            &serde_json::json!({"org": p.org, "subject": p.subject, "scopes": p.scopes.names()}),
            200,
        ),
        (Method::Post, ["api", "conditioning", "lease"]) => {
            platform_only(p, conditioning_lease(&mut req, &env)).await
        }
        (Method::Post, ["api", "conditioning", "jobs", org, id, "complete"]) => {
            platform_only(p, conditioning_complete(&mut req, &env, org, id)).await
        }
        // Every scope, platform-wide ones (beacon, decision) included.
        (Method::Get, ["api", "metrics"]) => platform_only(p, counters(&env)).await,
        // Platform totals and every binding: platform admins only.
        (Method::Get, ["api", "diag"]) => platform_only(p, diag(&env, p)).await,
        (_, ["api", "orgs", org, rest @ ..]) => {
            if let Err(e) = p.authorize(org) {
                return worker_shared::auth_error(&e);
            }
            org_route(method, &mut req, &env, org, rest).await
        }
        (Method::Put, ["api", "media", key @ ..]) => put_media(&req, &env, p, &key.join("/")).await,
        _ => error(404, "no such route"),
    }
}

/// The request's principal; a failure is answered (401/403), and guessing
/// credentials is slowed per client address (429).
async fn authenticate(req: &Request, env: &Env) -> Early<Principal> {
    match worker_shared::authenticate(req, env).await {
        Ok(p) => Ok(p),
        Err(e) => {
            let ip = worker_shared::client_ip(req).unwrap_or_default();
            if !worker_shared::within_limit(env, bindings::AUTH_FAIL_LIMITER, &ip).await {
                return Err(worker_shared::too_many(
                    "authentication failures from this address",
                ));
            }
            Err(worker_shared::auth_error(&e))
        }
    }
}

/// Per-credential rate limits: cues have their own, every other call
/// shares the API's.
async fn within_rate(req: &Request, env: &Env, p: &Principal) -> Early<()> {
    let (limiter, what) = match (req.method(), req.path().as_str()) {
        (Method::Post, "/cue") => (bindings::CUE_LIMITER, "cues per credential"),
        _ => (bindings::API_LIMITER, "API calls per credential"),
    };
    if worker_shared::within_limit(env, limiter, &p.rate_key()).await {
        Ok(())
    } else {
        Err(worker_shared::too_many(what))
    }
}

/// Scope per route: `cue` fires cues, `read` reads, the rest is `admin`
/// (`None`: any authenticated principal).
fn required_scope(method: &Method, parts: &[&str]) -> Option<Scope> {
    match (method, parts) {
        (Method::Get, ["api", "whoami"]) => None,
        (Method::Post, ["cue"]) => Some(Scope::Cue),
        (Method::Get, ["api", "orgs", _, "api-keys"]) => Some(Scope::Admin),
        (Method::Get, ["api", "orgs", _, ..]) => Some(Scope::Read),
        _ => Some(Scope::Admin),
    }
}

/// Run `handler` for platform admins only (the handler does nothing
/// until awaited, so nothing runs for anyone else).
async fn platform_only(
    p: &Principal,
    handler: impl Future<Output = Result<Response>>,
) -> Result<Response> {
    match p.require_platform() {
        Ok(()) => handler.await,
        Err(e) => worker_shared::auth_error(&e),
    }
}

/// `GET /api/metrics`: the dashboard counters of every scope.
async fn counters(env: &Env) -> Result<Response> {
    let rows = store::metrics::counters(&env.d1(bindings::DB)?).await?;
    json(&serde_json::json!({"items": rows}), 200)
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

/// The request's JSON body, or a 400 saying what was wrong with it.
async fn body<T: serde::de::DeserializeOwned>(req: &mut Request) -> Early<T> {
    body_json(req).await.map_err(|e| error(400, e))
}

/// An id from the path: `[A-Za-z0-9_-]{1,64}` (as `worker_shared::valid_id`),
/// else a 400 naming the field.
fn check_id(field: &str, id: &str) -> Early<()> {
    if worker_shared::valid_id(id) {
        Ok(())
    } else {
        Err(error(
            400,
            format!("{field}: must be 1-64 of [A-Za-z0-9_-]"),
        ))
    }
}

/// A query parameter of the request's URL.
fn query(req: &Request, key: &str) -> Result<Option<String>> {
    Ok(req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned()))
}

/// `/api/orgs/{org}/…`, the principal already authorized for `org`: one
/// handler per route.
async fn org_route(
    method: Method,
    req: &mut Request,
    env: &Env,
    org: &str,
    rest: &[&str],
) -> Result<Response> {
    let db = env.d1(bindings::DB)?;
    let channel = |slug: &str| ChannelClient::new(env, ChannelRef::new(org, slug));
    match (method, rest) {
        (Method::Put, []) => put_org(req, &db, org).await,
        (Method::Get, ["channels"]) => list_channels(req, &db, org).await,
        (Method::Get, ["channels", slug]) => get_channel(env, org, slug).await,
        (Method::Put, ["channels", slug]) => put_channel(req, env, &db, org, slug).await,
        (Method::Delete, ["channels", slug]) => delete_channel(env, &db, org, slug).await,
        (Method::Get, ["channels", slug, "breaks"]) => json(&channel(slug).state().await?, 200),
        // The poller's record: polls, errors, longest gap, late polls.
        (Method::Get, ["channels", slug, "monitor"]) => {
            json(&channel(slug).poll_stats().await?, 200)
        }
        (Method::Get, ["channels", slug, "kv"]) => channel_kv(env, org, slug).await,
        (Method::Post, ["decision"]) => preview_decision(req, env, org).await,
        (Method::Put, ["ads", id]) => put_ad(req, &db, org, id).await,
        (Method::Get, ["ads"]) => items(store::ads::list_ads(&db, org).await?),
        (Method::Put, ["slates", id]) => put_slate(req, &db, org, id).await,
        (Method::Post, ["api-keys"]) => create_key(req, &db, org).await,
        // Never the hash or salt: what a key is, not what proves it.
        (Method::Get, ["api-keys"]) => items(store::orgs::list_keys(&db, org).await?),
        (Method::Delete, ["api-keys", id]) => revoke_key(&db, org, id).await,
        (Method::Get, ["metrics"]) => metrics_report(req, &db, org).await,
        (Method::Get, ["metrics", "openmetrics"]) => openmetrics(&db, org).await,
        (Method::Get, ["conditioning", "stats"]) => json(&conditioning_stats(&db, org).await?, 200),
        (Method::Get, ["conditioning", "jobs"]) => items(store::jobs::list(&db, org).await?),
        (Method::Get, ["breaks"]) => items(store::breaks::recent(&db, org).await?),
        _ => error(404, "no such route"),
    }
}

/// `{"items": rows}`, the shape of every listing.
fn items<T: serde::Serialize>(rows: Vec<T>) -> Result<Response> {
    json(&serde_json::json!({ "items": rows }), 200)
}

/// `PUT /api/orgs/{org} {name, conditioning?}`: create or rename an org;
/// its conditioning settings change only when given (a rename keeps them).
async fn put_org(req: &mut Request, db: &D1Database, org: &str) -> Result<Response> {
    #[derive(Deserialize)]
    struct OrgIn {
        name: String,
        #[serde(default)]
        conditioning: Option<cf_ssai_core::ads::conditioning::Settings>,
    }
    let o: OrgIn = or_return!(body(req).await);
    or_return!(check_id("org", org));
    if !media_http::org_id_allowed(org) {
        return error(
            400,
            format!("org: {org:?} is reserved (a route or the platform's own prefix)"),
        );
    }
    if let Some(Err(e)) = o.conditioning.as_ref().map(|c| c.check()) {
        return error(400, format!("conditioning.{e}"));
    }
    let given = o.conditioning.is_some();
    let settings = serde_json::json!({ "conditioning": o.conditioning.unwrap_or_default() });
    store::orgs::upsert(db, org, &o.name, now_ms(), &settings.to_string(), given).await?;
    json(&serde_json::json!({"id": org}), 200)
}

/// `GET /api/orgs/{org}/channels?limit=&cursor=`: a page of channels by
/// slug (limit 50 by default, 200 at most), with the cursor of the next.
async fn list_channels(req: &Request, db: &D1Database, org: &str) -> Result<Response> {
    let limit: u32 = query(req, "limit")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .min(200);
    let cursor = query(req, "cursor")?.unwrap_or_default();
    let rows = store::channels::list_page(db, org, &cursor, limit).await?;
    let next = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| r.slug.clone()))
        .flatten();
    let items = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r)?;
            // The stored config served as JSON, not as a string.
            if let Ok(c) = serde_json::from_str::<serde_json::Value>(&r.config) {
                v["config"] = c;
            }
            Ok(v)
        })
        .collect::<serde_json::Result<Vec<_>>>()?;
    json(
        &serde_json::json!({"items": items, "next_cursor": next}),
        200,
    )
}

async fn get_channel(env: &Env, org: &str, slug: &str) -> Result<Response> {
    match worker_shared::load_channel_d1(env, org, slug).await? {
        Some(c) => json(&c, 200),
        None => error(404, format!("no channel {org}/{slug}")),
    }
}

/// `PUT /api/orgs/{org}/channels/{slug}`: a validated config; the cache
/// entry goes at once, and a channel with SCTE-35 gets its poller.
async fn put_channel(
    req: &mut Request,
    env: &Env,
    db: &D1Database,
    org: &str,
    slug: &str,
) -> Result<Response> {
    or_return!(check_id("slug", slug));
    let cfg: ChannelConfig = or_return!(body(req).await);
    let errs = cfg.validate(worker_shared::private_origins_allowed(env));
    if !errs.is_empty() {
        return json(
            &serde_json::json!({"error": "invalid channel config", "fields": errs}),
            400,
        );
    }
    store::channels::upsert(db, org, slug, &serde_json::to_string(&cfg)?, now_ms()).await?;
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

async fn delete_channel(env: &Env, db: &D1Database, org: &str, slug: &str) -> Result<Response> {
    store::channels::delete(db, org, slug).await?;
    worker_shared::invalidate_channel(env, org, slug).await?;
    json(&serde_json::json!({"deleted": slug}), 200)
}

/// `POST /api/orgs/{org}/decision`: preview a decision (operators,
/// dashboard, load test). The body is the decision service's, with the
/// org from the path.
async fn preview_decision(req: &mut Request, env: &Env, org: &str) -> Result<Response> {
    let mut v: serde_json::Value = match body_json_within(req, MAX_PREVIEW_BODY).await {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => return error(400, "body: a JSON object"),
        Err(e) => return error(413, e),
    };
    v["org"] = serde_json::Value::String(org.to_string());
    // Checked here as the service checks it (the same 400s), and sent as
    // the typed request the Channel DO sends too.
    let body = serde_json::to_vec(&v)?;
    let typed = match cf_ssai_core::ads::request::DecisionRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return error(400, e.to_string()),
    };
    worker_shared::call_internal(
        env,
        bindings::DECISION,
        "https://decision/decision",
        Method::Post,
        Some(serde_json::to_string(&typed)?),
        30_000,
    )
    .await
}

/// `GET /api/orgs/{org}/channels/{slug}/kv`: exactly the KV values a
/// playlist request of this channel reads: the config cache, the view, and
/// the pod of each break in view (a window reads those it touches).
/// `breaks` joins view and pods the way the playback path does.
async fn channel_kv(env: &Env, org: &str, slug: &str) -> Result<Response> {
    let kv = env.kv(bindings::KV)?;
    // What a playlist request of this channel reads, key by key, with the
    // bytes it reads (the view and lean pods are binary: `core::wire`;
    // shown decoded here).
    let mut reads = serde_json::Map::new();
    let mut bytes = serde_json::Map::new();
    let config_key = worker_shared::kv_config_key(org, slug);
    if let Some(t) = kv.get(&config_key).text().await? {
        bytes.insert(config_key.clone(), t.len().into());
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
            reads.insert(config_key, v);
        }
    }
    let view_key = worker_shared::kv_breaks_key(org, slug);
    let view = match kv.get(&view_key).bytes().await? {
        Some(b) => {
            bytes.insert(view_key.clone(), b.len().into());
            let v = cf_ssai_core::wire::decode_view(&b).ok();
            reads.insert(view_key, serde_json::to_value(&v)?);
            v
        }
        None => None,
    };
    let mut entries = Vec::new();
    for e in view.iter().flat_map(|v| v.entries.iter()) {
        let id = &e.record.id;
        let lean_key = worker_shared::kv_splice_pod_key(org, slug, id);
        if let Some(b) = kv.get(&lean_key).bytes().await? {
            bytes.insert(lean_key.clone(), b.len().into());
            let lean = cf_ssai_core::wire::decode_pod(&b).ok();
            reads.insert(lean_key, serde_json::to_value(&lean)?);
        }
        // The whole pod (beacons, asset lists): not on the playlist path.
        let full_key = worker_shared::kv_pod_key(org, slug, id);
        let pod = kv
            .get(&full_key)
            .bytes()
            .await?
            .and_then(|b| cf_ssai_core::wire::decode_pod(&b).ok());
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

#[derive(Deserialize)]
struct AdIn {
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
    /// Made by a conditioner from an ad server's creative: matched to VAST
    /// only, never a house ad.
    #[serde(default)]
    conditioned: bool,
    #[serde(default)]
    source_url: Option<String>,
    #[serde(default)]
    source_size: u64,
    /// What the last segment holds beyond the creative (the conditioner
    /// holds the last frame to whole segments).
    #[serde(default)]
    padding_s: f64,
}

/// What an ad must be to be stored: the message of the first field that
/// is not.
fn check_ad(ad: &AdIn) -> std::result::Result<(), String> {
    if !(ad.duration_s > 0.0 && ad.duration_s <= 600.0) {
        return Err("duration_s: must be in (0, 600]".into());
    }
    if !(0.0..=20.0).contains(&ad.padding_s) {
        return Err("padding_s: must be in [0, 20]".into());
    }
    if ad.renditions.is_empty() {
        return Err("renditions: at least one is required".into());
    }
    check_renditions(&ad.renditions)
}

/// `PUT /api/orgs/{org}/ads/{id}`: create or replace an ad.
async fn put_ad(req: &mut Request, db: &D1Database, org: &str, id: &str) -> Result<Response> {
    let ad: AdIn = or_return!(body(req).await);
    or_return!(check_id("id", id));
    if let Err(e) = check_ad(&ad) {
        return error(400, e);
    }
    let renditions = serde_json::to_string(&ad.renditions)?;
    let tracking = serde_json::to_string(&ad.tracking)?;
    let row = store::ads::NewAd {
        id,
        channel: ad.channel.as_deref(),
        creative_id: &ad.creative_id,
        universal_ad_id: ad.universal_ad_id.as_deref(),
        duration_s: ad.duration_s,
        cadence_ms: ad.cadence_ms,
        renditions: &renditions,
        tracking: &tracking,
        priority: ad.priority,
        created_ms: now_ms(),
        conditioned: ad.conditioned,
        source_url: ad.source_url.as_deref(),
        source_size: ad.source_size,
        padding_s: ad.padding_s,
    };
    store::ads::upsert_ad(db, org, &row).await?;
    json(&serde_json::json!({"id": id}), 200)
}

/// `PUT /api/orgs/{org}/slates/{id} {channel?, renditions}`.
async fn put_slate(req: &mut Request, db: &D1Database, org: &str, id: &str) -> Result<Response> {
    #[derive(Deserialize)]
    struct SlateIn {
        channel: Option<String>,
        renditions: Vec<model::AdRendition>,
    }
    let s: SlateIn = or_return!(body(req).await);
    if s.renditions.is_empty() {
        return error(400, "renditions: at least one is required");
    }
    or_return!(check_id("id", id));
    if let Err(e) = check_renditions(&s.renditions) {
        return error(400, e);
    }
    let renditions = serde_json::to_string(&s.renditions)?;
    store::ads::upsert_slate(db, org, id, s.channel.as_deref(), &renditions, now_ms()).await?;
    json(&serde_json::json!({"id": id}), 200)
}

/// `POST /api/orgs/{org}/api-keys {scopes?, label?}`: a new key, shown
/// once; only its salted hash is stored.
async fn create_key(req: &mut Request, db: &D1Database, org: &str) -> Result<Response> {
    #[derive(Deserialize, Default)]
    struct KeyIn {
        scopes: Option<String>,
        label: Option<String>,
    }
    let k: KeyIn = or_return!(body::<Option<KeyIn>>(req).await).unwrap_or_default();
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
    let hash = auth::hash_api_key(&salt, &key);
    let names = scopes.names();
    let row = store::orgs::NewKey {
        id: &id,
        org,
        salt: &salt,
        hash: &hash,
        label: &label,
        scopes: &names,
        created_ms: now_ms(),
    };
    store::orgs::insert_key(db, &row).await?;
    json(
        &serde_json::json!({"id": id, "key": key, "scopes": names, "label": label}),
        201,
    )
}

async fn revoke_key(db: &D1Database, org: &str, id: &str) -> Result<Response> {
    if !store::orgs::revoke_key(db, org, id, now_ms()).await? {
        return error(404, format!("no active key {id} in org {org}"));
    }
    json(&serde_json::json!({"revoked": id}), 200)
}

/// `GET /api/orgs/{org}/metrics/openmetrics`: running totals (counters
/// since the channel's first metric), what Prometheus scrapes (rates come
/// from its `rate()`), and the conditioner's queue, latency and failures
/// as a snapshot of D1 at scrape time (gauges).
async fn openmetrics(db: &D1Database, org: &str) -> Result<Response> {
    let totals: Vec<(String, String, f64)> = store::metrics::totals(db, org)
        .await?
        .into_iter()
        .map(|t| (t.channel, t.series, t.value))
        .collect();
    let cond = conditioning_stats(db, org).await?.openmetrics(org);
    let mut r = Response::ok(cf_ssai_core::control::metrics::openmetrics(
        org, &totals, &cond,
    ))?;
    r.headers_mut().set(
        "Content-Type",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )?;
    Ok(r)
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
    let rows: Vec<c::JobStat> = store::jobs::stat_rows(db, org, now - WINDOW_MS)
        .await?
        .into_iter()
        .map(|r| c::JobStat {
            state: r.state,
            failure_category: r.failure_category,
            created_ms: r.created_ms,
            started_ms: r.started_ms,
            finished_ms: r.finished_ms,
        })
        .collect();
    Ok(c::stats(&rows, now, WINDOW_MS))
}

/// `POST /api/conditioning/lease {owner, lease_s?, org?}`: one job for a
/// conditioner (platform admins: conditioners serve every org). One
/// statement claims it (so two conditioners never get the same job): the
/// oldest queued job, or a running one whose lease expired (its
/// conditioner died), with attempts left, fairly between orgs. Jobs whose
/// lease expired with no attempts left fail first. Answers the job with
/// its org's conditioning settings and the cadences its channels use, or
/// 204.
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
    let l: Lease = or_return!(body(req).await);
    if l.owner.is_empty() || l.owner.len() > 128 {
        return error(400, "owner: 1-128 characters naming this conditioner");
    }
    let lease_ms = i64::from(l.lease_s.unwrap_or(c::DEFAULT_LEASE_S).clamp(5, 3600)) * 1000;
    let now = now_ms();
    let db = env.d1(bindings::DB)?;
    let ask = store::jobs::LeaseAsk {
        now,
        owner: &l.owner,
        until_ms: now + lease_ms,
        max_attempts: c::MAX_ATTEMPTS,
        org: l.org.as_deref().unwrap_or_default(),
        max_running_per_org: c::MAX_RUNNING_PER_ORG,
    };
    let Some(job) = store::jobs::lease(&db, &ask).await? else {
        return Ok(Response::empty()?.with_status(204));
    };
    let settings = org_conditioning_settings(&db, &job.org_id).await?;
    let cadences = org_cadences(&db, &job.org_id).await?;
    let mut job_v = serde_json::to_value(&job)?;
    // The source served as JSON, not as a string.
    if let Ok(src) = serde_json::from_str::<serde_json::Value>(&job.source) {
        job_v["source"] = src;
    }
    json(
        &serde_json::json!({ "job": job_v, "settings": settings, "cadences": cadences }),
        200,
    )
}

/// An org's conditioning settings (the defaults when none are stored).
async fn org_conditioning_settings(
    db: &D1Database,
    org: &str,
) -> Result<cf_ssai_core::ads::conditioning::Settings> {
    Ok(store::orgs::settings(db, org)
        .await?
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| serde_json::from_value(v["conditioning"].clone()).ok())
        .unwrap_or_default())
}

/// The cadences a job is encoded for: those of the org's channels (in
/// 200..=20000 ms), a few at most (each is a full encode); 2000 ms when
/// its channels learn theirs from the origin.
async fn org_cadences(db: &D1Database, org: &str) -> Result<Vec<u64>> {
    let mut cadences: Vec<u64> = store::channels::cadences(db, org)
        .await?
        .into_iter()
        .filter_map(|c| c.map(|c| c as u64))
        .filter(|c| (200..=20_000).contains(c))
        .collect();
    cadences.sort_unstable();
    cadences.dedup();
    cadences.truncate(cf_ssai_core::ads::conditioning::MAX_CADENCES_PER_JOB);
    if cadences.is_empty() {
        cadences.push(2000);
    }
    Ok(cadences)
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
    let d: Done = or_return!(body(req).await);
    let now = now_ms();
    let db = env.d1(bindings::DB)?;
    let held = if d.ok {
        // Notes are the conditioner's summary: bounded, stored as JSON.
        let notes = d.notes.map(|n| n.to_string()).filter(|n| n.len() <= 8192);
        let ad_ids = serde_json::to_string(&d.ad_ids)?;
        store::jobs::complete_ok(&db, org, id, &d.owner, now, &ad_ids, notes.as_deref()).await?
    } else {
        let reason: String = d.reason.unwrap_or_default().chars().take(500).collect();
        let category = d.category.as_deref().and_then(c::FailureCategory::parse);
        let f = store::jobs::Failure {
            owner: &d.owner,
            now,
            permanent: d.permanent,
            max_attempts: c::MAX_ATTEMPTS,
            reason: &reason,
            category: category.map(|c| c.as_str()),
        };
        store::jobs::complete_failed(&db, org, id, &f).await?
    };
    if !held {
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
    let now = now_ms();
    let from = match m::parse_time(query(req, "from")?.as_deref().unwrap_or("-1h"), now) {
        Ok(t) => t,
        Err(e) => return error(400, format!("from: {e}")),
    };
    let to = match m::parse_time(query(req, "to")?.as_deref().unwrap_or("now"), now) {
        Ok(t) => t,
        Err(e) => return error(400, format!("to: {e}")),
    };
    if to <= from {
        return error(400, "to: must be after from");
    }
    let channel = query(req, "channel")?.unwrap_or_default();
    let minute_floor = now - m::MINUTE_RETENTION_MS;
    let step = match query(req, "step")?.map(|s| s.parse::<i64>()) {
        None => m::step_for(from, to, 120, minute_floor),
        Some(Ok(s)) if (60..=31 * 86_400).contains(&s) && s % 60 == 0 => s * 1000,
        Some(_) => return error(400, "step: whole minutes in seconds (60 to 2678400)"),
    };
    if (to - from) / step > 2000 {
        return error(400, "step: at most 2000 points per request");
    }
    let start = from.div_euclid(step) * step;
    let mut rows: Vec<m::Row> = Vec::new();
    for table in [store::metrics::Table::Minutes, store::metrics::Table::Hours] {
        let got = store::metrics::range(db, table, org, (start, to, step), &channel).await?;
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

/// A cue's request, checked: the channel, the principal's right to it,
/// the command, its length and (schedule) its start.
struct CueAsk<'a> {
    org: &'a str,
    slug: &'a str,
    kind: CueCommand,
    duration_ms: u64,
    start_at_ms: Option<i64>,
}

/// `POST /cue {channel: "org/slug", type: start|stop|schedule, duration,
/// start_at?}`: anchored at the next segment boundary of the live origin
/// (or the first at `start_at`), then handed to the channel's DO.
async fn cue(req: &mut Request, env: &Env, p: &Principal) -> Result<Response> {
    let idem = req.headers().get("Idempotency-Key")?;
    let b: CueBody = or_return!(body(req).await);
    let ask = or_return!(check_cue(&b, p));
    let Some(ch) = worker_shared::load_channel(env, ask.org, ask.slug).await? else {
        return error(404, format!("no channel {}/{}", ask.org, ask.slug));
    };
    let (last, cadence) = or_return!(live_edge(env, &ch.config).await);
    let at = match cue_policy::anchor(last, ask.start_at_ms, cadence) {
        Ok(a) => a,
        Err(e) => return error(400, e.to_string()),
    };
    let break_id = cue_policy::break_id(
        b.event_id.as_deref(),
        idem.as_deref(),
        b.pod_id.as_deref(),
        at.msn,
    );
    let client = ChannelClient::new(env, ChannelRef::new(ask.org, ask.slug));
    let r = client
        .cue(&CueRequest {
            channel: client.channel.clone(),
            kind: ask.kind,
            break_id,
            anchor_msn: at.msn,
            anchor_pdt_ms: at.pdt_ms,
            duration_ms: ask.duration_ms,
            cadence_ms: cadence,
        })
        .await?;
    match r.record {
        Some(rec) => json(&rec, r.status),
        None => error(r.status, r.error.unwrap_or_default()),
    }
}

/// Check a cue's body (400s, or the principal's 403 for another org).
fn check_cue<'a>(b: &'a CueBody, p: &Principal) -> Early<CueAsk<'a>> {
    let Some(channel) = &b.channel else {
        return Err(error(400, "channel: required, as \"org/slug\""));
    };
    let Some((org, slug)) = channel.split_once('/') else {
        return Err(error(400, "channel: must be \"org/slug\""));
    };
    p.authorize(org)
        .map_err(|e| worker_shared::auth_error(&e))?;
    let kind = match b.kind.as_deref().map(|k| (k, CueCommand::parse(k))) {
        Some((_, Some(k))) => k,
        Some((other, None)) => {
            return Err(error(
                400,
                format!("type: {other:?} is not start, stop or schedule"),
            ))
        }
        None => return Err(error(400, "type: required (start, stop or schedule)")),
    };
    let duration_ms = match kind {
        CueCommand::Stop => 0,
        _ => cue_policy::duration_ms(b.duration).map_err(|e| error(400, e.to_string()))?,
    };
    let start_at_ms = match (kind, &b.start_at) {
        (CueCommand::Schedule, Some(s)) => match cf_ssai_core::hls::parse_pdt_ms(s) {
            Some(t) if t > now_ms() => Some(t),
            Some(_) => return Err(error(400, "start_at: must be in the future")),
            None => return Err(error(400, "start_at: must be an RFC 3339 date-time")),
        },
        (CueCommand::Schedule, None) => return Err(error(400, "start_at: required for schedule")),
        (_, Some(_)) => return Err(error(400, "start_at: only for schedule")),
        _ => None,
    };
    Ok(CueAsk {
        org,
        slug,
        kind,
        duration_ms,
        start_at_ms,
    })
}

/// The live origin's last segment and the channel's cadence, read now
/// (502 when the origin cannot tell).
async fn live_edge(env: &Env, cfg: &ChannelConfig) -> Early<(cue_policy::LastSegment, u64)> {
    let policy = worker_shared::private_policy(env);
    let origin_err = |e: String| Err(error(502, format!("origin: {e}")));
    let media_url = match crate::origin::media_url_for_poll(cfg, &policy).await {
        Ok(u) => u,
        Err(e) => return origin_err(e.to_string()),
    };
    let text = match worker_shared::get_text(&media_url, cfg.origin_timeout_ms, &policy).await {
        Ok(t) => t,
        Err(e) => return origin_err(e.to_string()),
    };
    // (A DASH origin's MPD as its window: `/cue` works the same.)
    let text = match crate::origin::as_media_playlist(text, &media_url, cfg) {
        Ok(t) => t,
        Err(e) => return Err(error(502, format!("origin MPD: {e}"))),
    };
    let m = match media::parse(&text) {
        Ok(m) => m,
        Err(e) => return Err(error(502, format!("origin playlist: {e}"))),
    };
    let cadence = crate::origin::cadence_ms(cfg, &m);
    let Some(last) = m.segments.last() else {
        return Err(error(502, "origin playlist has no segments"));
    };
    let last = cue_policy::LastSegment {
        msn: last.msn,
        pdt_ms: last.pdt_ms,
        duration_s: last.duration,
    };
    Ok((last, cadence))
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
    let d1 = store::orgs::count(&env.d1(bindings::DB)?).await?;
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
