//! Glue shared by the four workers: binding names (matching the wrangler
//! files), channel config loading with its KV cache, control-plane auth,
//! JSON responses, and fetch with a timeout. No domain logic: that is in
//! `cf-ssai-core`.

use cf_ssai_core::auth::{self, AuthError, Principal};
use cf_ssai_core::config::ChannelConfig;
use serde::{Deserialize, Serialize};
use worker::*;

mod jwks;

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
    pub const ALLOW_PRIVATE_ORIGINS: &str = "ALLOW_PRIVATE_ORIGINS";
    pub const PUBLIC_BASE_URL: &str = "PUBLIC_BASE_URL";
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

pub fn private_origins_allowed(env: &Env) -> bool {
    var_or(env, bindings::ALLOW_PRIVATE_ORIGINS, "false") == "true"
}

/// A channel as stored in D1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Channel {
    pub org: String,
    pub slug: String,
    pub config: ChannelConfig,
    #[serde(default)]
    pub health: String,
}

impl Channel {
    pub fn key(&self) -> String {
        channel_key(&self.org, &self.slug)
    }
}

pub fn channel_key(org: &str, slug: &str) -> String {
    format!("{org}:{slug}")
}

pub fn kv_breaks_key(org: &str, slug: &str) -> String {
    format!("adbreak:{org}:{slug}")
}

fn kv_config_key(org: &str, slug: &str) -> String {
    format!("config:{org}:{slug}")
}

#[derive(Deserialize)]
struct ChannelRow {
    org_id: String,
    slug: String,
    config: String,
    health: Option<String>,
}

/// Load a channel: KV cache first, D1 on a miss (then cached).
pub async fn load_channel(env: &Env, org: &str, slug: &str) -> Result<Option<Channel>> {
    let kv = env.kv(bindings::KV)?;
    if let Ok(Some(c)) = kv.get(&kv_config_key(org, slug)).json::<Channel>().await {
        return Ok(Some(c));
    }
    let c = load_channel_d1(env, org, slug).await?;
    if let Some(c) = &c {
        if let Ok(put) = kv.put(&kv_config_key(org, slug), c) {
            let _ = put.expiration_ttl(CONFIG_TTL_S).execute().await;
        }
    }
    Ok(c)
}

pub async fn load_channel_d1(env: &Env, org: &str, slug: &str) -> Result<Option<Channel>> {
    let db = env.d1(bindings::DB)?;
    let row: Option<ChannelRow> = db
        .prepare(
            "SELECT org_id, slug, config, health FROM channels WHERE org_id = ?1 AND slug = ?2",
        )
        .bind(&[org.into(), slug.into()])?
        .first(None)
        .await?;
    Ok(row.and_then(row_to_channel))
}

fn row_to_channel(r: ChannelRow) -> Option<Channel> {
    let config: ChannelConfig = serde_json::from_str(&r.config).ok()?;
    Some(Channel {
        org: r.org_id,
        slug: r.slug,
        config,
        health: r.health.unwrap_or_else(|| "ok".into()),
    })
}

/// Every active channel (the monitor's cron).
pub async fn list_channels(env: &Env) -> Result<Vec<Channel>> {
    let db = env.d1(bindings::DB)?;
    let rows: Vec<ChannelRow> = db
        .prepare("SELECT org_id, slug, config, health FROM channels ORDER BY org_id, slug")
        .all()
        .await?
        .results()?;
    Ok(rows.into_iter().filter_map(row_to_channel).collect())
}

pub async fn invalidate_channel(env: &Env, org: &str, slug: &str) -> Result<()> {
    env.kv(bindings::KV)?
        .delete(&kv_config_key(org, slug))
        .await?;
    Ok(())
}

#[derive(Deserialize)]
struct KeyRow {
    org_id: String,
    salt: String,
    hash: String,
}

/// Authenticate a control-plane request: a bearer HS256 JWT (secret from
/// `JWT_SECRET`) or an API key (salted hash in D1).
pub async fn authenticate(req: &Request, env: &Env) -> std::result::Result<Principal, AuthError> {
    let header = req.headers().get("Authorization").ok().flatten();
    let token = auth::bearer(header.as_deref())?;
    if let Some(id) = auth::api_key_id(token) {
        let db = env.d1(bindings::DB).map_err(|_| AuthError::UnknownKey)?;
        let row: Option<KeyRow> = db
            .prepare("SELECT org_id, salt, hash FROM api_keys WHERE id = ?1 AND revoked = 0")
            .bind(&[id.into()])
            .map_err(|_| AuthError::UnknownKey)?
            .first(None)
            .await
            .map_err(|_| AuthError::UnknownKey)?;
        return match row {
            Some(r) if auth::verify_api_key(&r.salt, &r.hash, token) => Ok(Principal {
                org: r.org_id,
                subject: format!("key:{id}"),
            }),
            _ => Err(AuthError::UnknownKey),
        };
    }
    let aud = var_or(env, bindings::JWT_AUDIENCE, "cf-ssai");
    let jwt = auth::split(token)?;
    if jwt.alg == "HS256" {
        let secret = env
            .secret(bindings::JWT_SECRET)
            .map(|s| s.to_string())
            .map_err(|_| AuthError::Signature)?;
        return auth::verify_hs256(token, secret.as_bytes(), &aud, now_ms() / 1000);
    }
    jwks::verify(env, &jwt).await?;
    auth::check_claims(&jwt, &aud, now_ms() / 1000)
}

pub fn auth_error(e: &AuthError) -> Result<Response> {
    let mut r = error(e.status(), e.to_string())?;
    if e.status() == 401 {
        r.headers_mut()
            .set("WWW-Authenticate", "Bearer realm=\"cf-ssai\"")?;
    }
    Ok(r)
}

#[derive(Debug)]
pub enum FetchError {
    Timeout,
    Failed(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Timeout => write!(f, "timed out"),
            FetchError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Fetch with a timeout: the request is aborted when the delay wins.
pub async fn fetch_timeout(
    req: Request,
    timeout_ms: u64,
) -> std::result::Result<Response, FetchError> {
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(req);
    let send = fetch.send_with_signal(&signal);
    let delay = Delay::from(std::time::Duration::from_millis(timeout_ms));
    futures::pin_mut!(send);
    futures::pin_mut!(delay);
    match futures::future::select(send, delay).await {
        futures::future::Either::Left((Ok(r), _)) => Ok(r),
        futures::future::Either::Left((Err(e), _)) => Err(FetchError::Failed(e.to_string())),
        futures::future::Either::Right(_) => {
            controller.abort();
            Err(FetchError::Timeout)
        }
    }
}

/// GET a URL as text with a timeout; non-2xx is an error naming the status.
pub async fn get_text(url: &str, timeout_ms: u64) -> std::result::Result<String, FetchError> {
    let req = Request::new(url, Method::Get).map_err(|e| FetchError::Failed(e.to_string()))?;
    let mut resp = fetch_timeout(req, timeout_ms).await?;
    if !(200..300).contains(&resp.status_code()) {
        return Err(FetchError::Failed(format!("HTTP {}", resp.status_code())));
    }
    resp.text()
        .await
        .map_err(|e| FetchError::Failed(e.to_string()))
}

const COUNT_SQL: &str = "INSERT INTO metrics (scope, name, value) VALUES (?1, ?2, ?3) ON CONFLICT(scope, name) DO UPDATE SET value = value + excluded.value";

/// Increment a named counter (dashboard metrics), best effort.
pub async fn count(env: &Env, scope: &str, name: &str, by: i64) {
    count_many(env, scope, &[(name.to_string(), by)]).await
}

/// Increment several counters in one D1 round trip (a batch is one
/// transaction), best effort.
pub async fn count_many(env: &Env, scope: &str, counters: &[(String, i64)]) {
    let Ok(db) = env.d1(bindings::DB) else { return };
    let stmts: Vec<_> = counters
        .iter()
        .filter_map(|(name, by)| {
            db.prepare(COUNT_SQL)
                .bind(&[scope.into(), name.as_str().into(), (*by as f64).into()])
                .ok()
        })
        .collect();
    match stmts.len() {
        0 => {}
        1 => {
            if let Some(s) = stmts.into_iter().next() {
                let _ = s.run().await;
            }
        }
        _ => {
            let _ = db.batch(stmts).await;
        }
    }
}
