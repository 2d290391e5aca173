//! Glue shared by the four workers: binding names (matching the wrangler
//! files), channel config loading with its KV cache, control-plane auth,
//! JSON responses, and fetch with a timeout. No domain logic: that is in
//! `cf-ssai-core`.

use cf_ssai_core::control::auth::{self, AuthError, Principal};
use cf_ssai_core::control::config::ChannelConfig;
use serde::{Deserialize, Serialize};
use worker::*;

pub mod channel_client;
mod fetch;
mod jwks;
pub mod metrics;
pub mod store;
pub use fetch::{fetch, get_text, FetchError, FetchSpec, Fetched, DEFAULT_MAX_BYTES};

/// Binding names: keep in sync with `wrangler-*.toml`.
pub mod bindings {
    pub const KV: &str = "ADBREAK_KV";
    pub const DB: &str = "DB";
    pub const CHANNEL_DO: &str = "CHANNEL_DO";
    pub const BEACONS: &str = "BEACONS";
    pub const DECISION: &str = "DECISION";
    pub const AD_MEDIA: &str = "AD_MEDIA";
    pub const JWT_SECRET: &str = "JWT_SECRET";
    pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
    pub const JWT_ISSUER: &str = "JWT_ISSUER";
    pub const JWT_MAX_LIFETIME_S: &str = "JWT_MAX_LIFETIME_S";
    pub const ALLOW_PRIVATE_ORIGINS: &str = "ALLOW_PRIVATE_ORIGINS";
    pub const PUBLIC_BASE_URL: &str = "PUBLIC_BASE_URL";
    /// Rate limiting bindings (`[[ratelimits]]` in wrangler-manifest.toml).
    pub const BEACON_LIMITER: &str = "BEACON_LIMITER";
    pub const CUE_LIMITER: &str = "CUE_LIMITER";
    pub const API_LIMITER: &str = "API_LIMITER";
    pub const AUTH_FAIL_LIMITER: &str = "AUTH_FAIL_LIMITER";
}

/// Config cache TTL in KV (changes also invalidate it at once).
pub const CONFIG_TTL_S: u64 = 60;

pub fn now_ms() -> i64 {
    Date::now().as_millis() as i64
}

pub fn json<T: Serialize>(v: &T, status: u16) -> Result<Response> {
    Ok(Response::from_json(v)?.with_status(status))
}

/// `{"error": msg}` with a status; for 4xx the message says what was wrong.
pub fn error(status: u16, msg: impl AsRef<str>) -> Result<Response> {
    json(&serde_json::json!({ "error": msg.as_ref() }), status)
}

pub fn var_or(env: &Env, name: &str, default: &str) -> String {
    env.var(name)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| default.to_string())
}

/// Whether this deployment allows private origins at all (channel config
/// validation); which hosts exactly is [`private_policy`].
pub fn private_origins_allowed(env: &Env) -> bool {
    !matches!(private_policy(env).trim(), "" | "false")
}

/// `ALLOW_PRIVATE_ORIGINS`: "false" (production), "true", or a host list.
pub fn private_policy(env: &Env) -> String {
    var_or(env, bindings::ALLOW_PRIVATE_ORIGINS, "false")
}

/// A channel as stored in D1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredChannel {
    pub org: String,
    pub slug: String,
    pub config: ChannelConfig,
    #[serde(default)]
    pub health: String,
}

impl StoredChannel {
    pub fn key(&self) -> String {
        channel_key(&self.org, &self.slug)
    }
}

pub fn channel_key(org: &str, slug: &str) -> String {
    format!("{org}:{slug}")
}

/// The channel's published view (`ChannelView`): what every playlist
/// request reads.
pub fn kv_breaks_key(org: &str, slug: &str) -> String {
    format!("adbreak:{org}:{slug}")
}

/// A break's decided pod: written once, never changed.
pub fn kv_pod_key(org: &str, slug: &str, break_id: &str) -> String {
    format!("pod:{org}:{slug}:{break_id}")
}

/// A break's lean pod (`core::wire`, binary: what the splice reads),
/// written beside the full pod; the playlist edge reads only this.
pub fn kv_splice_pod_key(org: &str, slug: &str, break_id: &str) -> String {
    format!("podsplice:{org}:{slug}:{break_id}")
}

/// A cohort's pod of a break: full (JSON) or lean (binary). The cohort
/// (16 hex digits) comes before the break id, so no break id can spell
/// another break's cohort key.
pub fn kv_cohort_pod_key(
    org: &str,
    slug: &str,
    cohort: &str,
    break_id: &str,
    lean: bool,
) -> String {
    let kind = if lean { "podsplicec" } else { "podc" };
    format!("{kind}:{org}:{slug}:{cohort}:{break_id}")
}

pub fn kv_config_key(org: &str, slug: &str) -> String {
    format!("config:{org}:{slug}")
}

/// What the config cache holds: a channel, or the fact that there is none
/// (so a flood of requests for made-up channels costs KV reads, not one D1
/// query each).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum CachedChannel {
    Found(Box<StoredChannel>),
    Missing { missing: bool },
}

/// Org and channel ids are `[A-Za-z0-9_-]{1,64}`: anything else is no
/// channel, without a lookup.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Load a channel: KV cache first (hits and misses, `CONFIG_TTL_S`), D1
/// otherwise. Creating a channel deletes its cache entry, so the creating
/// location sees it at once; other locations within the TTL.
pub async fn load_channel(env: &Env, org: &str, slug: &str) -> Result<Option<StoredChannel>> {
    if !valid_id(org) || !valid_id(slug) {
        return Ok(None);
    }
    let kv = env.kv(bindings::KV)?;
    match kv
        .get(&kv_config_key(org, slug))
        .json::<CachedChannel>()
        .await
    {
        Ok(Some(CachedChannel::Found(c))) => return Ok(Some(*c)),
        Ok(Some(CachedChannel::Missing { .. })) => return Ok(None),
        _ => {}
    }
    let c = load_channel_d1(env, org, slug).await?;
    let entry = match &c {
        Some(c) => CachedChannel::Found(Box::new(c.clone())),
        None => CachedChannel::Missing { missing: true },
    };
    let Ok(entry) = serde_json::to_string(&entry) else {
        return Ok(c);
    };
    if let Ok(put) = kv.put(&kv_config_key(org, slug), entry) {
        let _ = put.expiration_ttl(CONFIG_TTL_S).execute().await;
    }
    Ok(c)
}

/// Within the binding's limit for `key`? A limiter that is missing or
/// fails lets the request through (availability first) and says so.
pub async fn within_limit(env: &Env, binding: &str, key: &str) -> bool {
    match env.rate_limiter(binding) {
        Ok(l) => match l.limit(key.to_string()).await {
            Ok(o) => o.success,
            Err(e) => {
                console_warn!("rate limiter {binding} failed: {e}");
                true
            }
        },
        Err(e) => {
            console_warn!("rate limiter {binding} missing: {e}");
            true
        }
    }
}

/// 429 with a reason and a retry hint.
pub fn too_many(what: &str) -> Result<Response> {
    let mut r = error(429, format!("rate limit exceeded: {what}"))?;
    r.headers_mut().set("Retry-After", "60")?;
    Ok(r)
}

/// The viewer's address as Cloudflare saw it; client headers such as
/// `X-Forwarded-For` are never trusted.
pub fn client_ip(req: &Request) -> Option<String> {
    req.headers().get("CF-Connecting-IP").ok().flatten()
}

pub async fn load_channel_d1(env: &Env, org: &str, slug: &str) -> Result<Option<StoredChannel>> {
    let db = env.d1(bindings::DB)?;
    let row = store::channels::get(&db, org, slug).await?;
    Ok(row.and_then(row_to_channel))
}

fn row_to_channel(r: store::channels::ChannelRow) -> Option<StoredChannel> {
    let config: ChannelConfig = serde_json::from_str(&r.config).ok()?;
    Some(StoredChannel {
        org: r.org_id,
        slug: r.slug,
        config,
        health: r.health.unwrap_or_else(|| "ok".into()),
    })
}

/// Every active channel (the monitor's cron).
pub async fn list_channels(env: &Env) -> Result<Vec<StoredChannel>> {
    let db = env.d1(bindings::DB)?;
    let rows = store::channels::list_all(&db).await?;
    Ok(rows.into_iter().filter_map(row_to_channel).collect())
}

pub async fn invalidate_channel(env: &Env, org: &str, slug: &str) -> Result<()> {
    env.kv(bindings::KV)?
        .delete(&kv_config_key(org, slug))
        .await?;
    Ok(())
}

/// `last_used_ms` is written at most this often per key (one D1 write a
/// minute, not one per request).
const KEY_USE_RESOLUTION_MS: i64 = 60_000;

/// Authenticate a control-plane request: a bearer JWT (HS256 with
/// `JWT_SECRET` of at least 32 bytes, or RS256/ES256 from the JWKS),
/// checked for audience, issuer (`JWT_ISSUER`) and lifetime
/// (`JWT_MAX_LIFETIME_S`), or an API key (salted hash in D1, not revoked,
/// with its scopes).
pub async fn authenticate(req: &Request, env: &Env) -> std::result::Result<Principal, AuthError> {
    let header = req.headers().get("Authorization").ok().flatten();
    let token = auth::bearer(header.as_deref())?;
    if let Some(id) = auth::api_key_id(token) {
        let db = env.d1(bindings::DB).map_err(|_| AuthError::UnknownKey)?;
        let row = store::orgs::active_key(&db, id)
            .await
            .map_err(|_| AuthError::UnknownKey)?;
        let Some(r) = row.filter(|r| auth::verify_api_key(&r.salt, &r.hash, token)) else {
            return Err(AuthError::UnknownKey);
        };
        let now = now_ms();
        if r.last_used_ms
            .is_none_or(|t| now - t as i64 >= KEY_USE_RESOLUTION_MS)
        {
            let _ = store::orgs::touch_key(&db, id, now).await;
        }
        let scopes = auth::Scopes::parse(r.scopes.as_deref().unwrap_or("admin"))
            .map_err(|_| AuthError::UnknownKey)?;
        return Ok(Principal {
            org: r.org_id,
            subject: format!("{}{id}", auth::API_KEY_SUBJECT),
            scopes,
            api_key: true,
        });
    }
    let aud = var_or(env, bindings::JWT_AUDIENCE, "cf-ssai");
    let iss = var_or(env, bindings::JWT_ISSUER, "");
    let max_lifetime_s = var_or(env, bindings::JWT_MAX_LIFETIME_S, "")
        .parse()
        .unwrap_or(auth::DEFAULT_MAX_LIFETIME_S);
    let v = auth::Validation {
        audience: &aud,
        issuer: (!iss.is_empty()).then_some(iss.as_str()),
        max_lifetime_s,
    };
    let jwt = auth::split(token)?;
    if jwt.alg == "HS256" {
        let secret = env
            .secret(bindings::JWT_SECRET)
            .map(|s| s.to_string())
            .map_err(|_| AuthError::Config("JWT_SECRET is not set"))?;
        return auth::verify_hs256(token, secret.as_bytes(), v, now_ms() / 1000);
    }
    jwks::verify(env, &jwt).await?;
    auth::check_claims(&jwt, v, now_ms() / 1000)
}

pub fn auth_error(e: &AuthError) -> Result<Response> {
    let mut r = error(e.status(), e.to_string())?;
    if e.status() == 401 {
        r.headers_mut()
            .set("WWW-Authenticate", "Bearer realm=\"cf-ssai\"")?;
    }
    Ok(r)
}

/// Increment a named counter (dashboard metrics), best effort.
pub async fn count(env: &Env, scope: &str, name: &str, by: i64) {
    count_many(env, scope, &[(name.to_string(), by)]).await
}

/// Increment several counters in one D1 round trip (a batch is one
/// transaction), best effort.
pub async fn count_many(env: &Env, scope: &str, counters: &[(String, i64)]) {
    let Ok(db) = env.d1(bindings::DB) else { return };
    let _ = store::metrics::add_counters(&db, scope, counters).await;
}

/// The header an internal call carries: the deployment's `INTERNAL_SECRET`.
/// The internal workers have no public URL (`workers_dev = false`, no
/// route), and they also refuse any request without this header, so a
/// misconfigured deployment still fails closed.
pub const INTERNAL_HEADER: &str = "X-CF-SSAI-Internal";
pub const INTERNAL_SECRET: &str = "INTERNAL_SECRET";

/// Did this request come from one of our workers (through a binding)?
/// Constant-time comparison; no secret configured means no.
pub fn internal_ok(req: &Request, env: &Env) -> bool {
    let Ok(secret) = env.secret(INTERNAL_SECRET).map(|s| s.to_string()) else {
        return false;
    };
    let got = req
        .headers()
        .get(INTERNAL_HEADER)
        .ok()
        .flatten()
        .unwrap_or_default();
    secret.len() >= 32 && auth::constant_time_eq(secret.as_bytes(), got.as_bytes())
}

/// 403 for a request that did not come through a service binding.
pub fn refuse_external() -> Result<Response> {
    error(
        403,
        "internal service: only reachable through the cf-ssai service bindings",
    )
}

/// Call an internal worker through its service binding, with the internal
/// secret and a deadline (the caller must never hang on it).
pub async fn call_internal(
    env: &Env,
    binding: &str,
    url: &str,
    method: Method,
    json_body: Option<String>,
    timeout_ms: u64,
) -> Result<Response> {
    let headers = Headers::new();
    if let Ok(s) = env.secret(INTERNAL_SECRET) {
        headers.set(INTERNAL_HEADER, &s.to_string())?;
    }
    let mut init = RequestInit::new();
    init.with_method(method);
    if let Some(b) = json_body {
        headers.set("Content-Type", "application/json")?;
        init.with_body(Some(b.into()));
    }
    init.with_headers(headers);
    let svc = env.service(binding)?;
    let call = svc.fetch(url, Some(init));
    let delay = Delay::from(std::time::Duration::from_millis(timeout_ms));
    futures::pin_mut!(call);
    futures::pin_mut!(delay);
    match futures::future::select(call, delay).await {
        futures::future::Either::Left((r, _)) => r,
        futures::future::Either::Right(_) => Err(Error::RustError(format!(
            "{binding} did not answer within {timeout_ms} ms"
        ))),
    }
}
