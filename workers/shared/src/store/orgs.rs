//! `orgs` and `api_keys`: tenants, their settings, and their API keys
//! (only a salted hash of a key is stored).

use super::{changes, flag, num};
use serde::{Deserialize, Serialize};
use worker::{D1Database, Result};

const UPSERT_ORG: &str = "INSERT INTO orgs (id, name, created_ms, settings) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(id) DO UPDATE SET name = excluded.name, settings = CASE WHEN ?5 = 1 THEN excluded.settings ELSE orgs.settings END";
pub(crate) const SETTINGS: &str = "SELECT settings FROM orgs WHERE id = ?1";
const COUNT: &str = "SELECT COUNT(*) AS n FROM orgs";
const ACTIVE_KEY: &str =
    "SELECT org_id, salt, hash, scopes, last_used_ms FROM api_keys WHERE id = ?1 AND revoked = 0";
const TOUCH_KEY: &str = "UPDATE api_keys SET last_used_ms = ?2 WHERE id = ?1";
const INSERT_KEY: &str = "INSERT INTO api_keys (id, org_id, salt, hash, label, scopes, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const LIST_KEYS: &str = "SELECT id, label, scopes, created_ms, last_used_ms, revoked, revoked_ms FROM api_keys WHERE org_id = ?1 ORDER BY created_ms DESC LIMIT 500";
const REVOKE_KEY: &str =
    "UPDATE api_keys SET revoked = 1, revoked_ms = ?3 WHERE org_id = ?1 AND id = ?2 AND revoked = 0";

/// Create an org or rename it; `settings` (JSON text) replaces the stored
/// ones only when `replace_settings` (a rename keeps them).
pub async fn upsert(
    db: &D1Database,
    id: &str,
    name: &str,
    now: i64,
    settings: &str,
    replace_settings: bool,
) -> Result<()> {
    db.prepare(UPSERT_ORG)
        .bind(&[
            id.into(),
            name.into(),
            num(now),
            settings.into(),
            flag(replace_settings),
        ])?
        .run()
        .await?;
    Ok(())
}

/// The `settings` row of an org.
#[derive(Debug, Clone, Deserialize)]
pub struct SettingsRow {
    pub settings: String,
}

/// An org's settings (JSON text), if the org exists.
pub async fn settings(db: &D1Database, id: &str) -> Result<Option<String>> {
    let row: Option<SettingsRow> = db.prepare(SETTINGS).bind(&[id.into()])?.first(None).await?;
    Ok(row.map(|r| r.settings))
}

/// How many orgs there are (the bindings check reads D1 with it).
pub async fn count(db: &D1Database) -> Result<Option<f64>> {
    db.prepare(COUNT).first(Some("n")).await
}

/// What authenticating with a key needs: never listed, never served.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyAuthRow {
    pub org_id: String,
    pub salt: String,
    pub hash: String,
    #[serde(default)]
    pub scopes: Option<String>,
    #[serde(default)]
    pub last_used_ms: Option<f64>,
}

/// The unrevoked key with this id.
pub async fn active_key(db: &D1Database, id: &str) -> Result<Option<KeyAuthRow>> {
    db.prepare(ACTIVE_KEY).bind(&[id.into()])?.first(None).await
}

/// Record a key's use.
pub async fn touch_key(db: &D1Database, id: &str, now: i64) -> Result<()> {
    db.prepare(TOUCH_KEY)
        .bind(&[id.into(), num(now)])?
        .run()
        .await?;
    Ok(())
}

/// A new key: its salted hash, never the key.
pub struct NewKey<'a> {
    pub id: &'a str,
    pub org: &'a str,
    pub salt: &'a str,
    pub hash: &'a str,
    pub label: &'a str,
    pub scopes: &'a str,
    pub created_ms: i64,
}

pub async fn insert_key(db: &D1Database, k: &NewKey<'_>) -> Result<()> {
    db.prepare(INSERT_KEY)
        .bind(&[
            k.id.into(),
            k.org.into(),
            k.salt.into(),
            k.hash.into(),
            k.label.into(),
            k.scopes.into(),
            num(k.created_ms),
        ])?
        .run()
        .await?;
    Ok(())
}

/// A key as listed: what it is, not what proves it (no hash, no salt).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRow {
    pub id: String,
    pub label: Option<String>,
    pub scopes: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked: i64,
    pub revoked_ms: Option<i64>,
}

/// An org's keys, newest first.
pub async fn list_keys(db: &D1Database, org: &str) -> Result<Vec<KeyRow>> {
    db.prepare(LIST_KEYS)
        .bind(&[org.into()])?
        .all()
        .await?
        .results()
}

/// Revoke an active key of the org; false when there was none.
pub async fn revoke_key(db: &D1Database, org: &str, id: &str, now: i64) -> Result<bool> {
    let r = db
        .prepare(REVOKE_KEY)
        .bind(&[org.into(), id.into(), num(now)])?
        .run()
        .await?;
    Ok(changes(&r)? > 0)
}
