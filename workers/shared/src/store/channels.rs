//! `channels`: the channel configs (JSON `ChannelConfig`) and their health.

use super::num;
use serde::{Deserialize, Serialize};
use worker::{D1Database, Result};

const GET: &str =
    "SELECT org_id, slug, config, health FROM channels WHERE org_id = ?1 AND slug = ?2";
const LIST_ALL: &str = "SELECT org_id, slug, config, health FROM channels ORDER BY org_id, slug";
const LIST_PAGE: &str = "SELECT slug, config, health, health_detail, updated_ms FROM channels WHERE org_id = ?1 AND slug > ?2 ORDER BY slug LIMIT ?3";
const UPSERT: &str = "INSERT INTO channels (org_id, slug, config, updated_ms) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(org_id, slug) DO UPDATE SET config = excluded.config, updated_ms = excluded.updated_ms";
const DELETE: &str = "DELETE FROM channels WHERE org_id = ?1 AND slug = ?2";
const MARK_OK: &str = "UPDATE channels SET health = 'ok', health_detail = NULL, failures = 0 WHERE org_id = ?1 AND slug = ?2 AND (failures != 0 OR health != 'ok')";
const MARK_FAILURE: &str = "UPDATE channels SET failures = failures + 1, health_detail = ?3, health = CASE WHEN failures + 1 >= 3 THEN 'unhealthy' ELSE health END WHERE org_id = ?1 AND slug = ?2";
const CADENCES: &str = "SELECT DISTINCT json_extract(config, '$.cadence_ms') AS cadence FROM channels WHERE org_id = ?1";

/// A channel row as the workers load it (config still JSON text).
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelRow {
    pub org_id: String,
    pub slug: String,
    pub config: String,
    pub health: Option<String>,
}

/// A channel in the admin listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelListRow {
    pub slug: String,
    pub config: String,
    pub health: Option<String>,
    pub health_detail: Option<String>,
    pub updated_ms: i64,
}

pub async fn get(db: &D1Database, org: &str, slug: &str) -> Result<Option<ChannelRow>> {
    db.prepare(GET)
        .bind(&[org.into(), slug.into()])?
        .first(None)
        .await
}

/// Every channel of every org (the monitor's cron).
pub async fn list_all(db: &D1Database) -> Result<Vec<ChannelRow>> {
    db.prepare(LIST_ALL).all().await?.results()
}

/// One page of an org's channels after `cursor` (a slug), by slug.
pub async fn list_page(
    db: &D1Database,
    org: &str,
    cursor: &str,
    limit: u32,
) -> Result<Vec<ChannelListRow>> {
    db.prepare(LIST_PAGE)
        .bind(&[org.into(), cursor.into(), f64::from(limit).into()])?
        .all()
        .await?
        .results()
}

/// Create or replace a channel's config (`config`: JSON text).
pub async fn upsert(db: &D1Database, org: &str, slug: &str, config: &str, now: i64) -> Result<()> {
    db.prepare(UPSERT)
        .bind(&[org.into(), slug.into(), config.into(), num(now)])?
        .run()
        .await?;
    Ok(())
}

pub async fn delete(db: &D1Database, org: &str, slug: &str) -> Result<()> {
    db.prepare(DELETE)
        .bind(&[org.into(), slug.into()])?
        .run()
        .await?;
    Ok(())
}

/// A good poll: healthy again, failures reset (no write when already so).
pub async fn mark_ok(db: &D1Database, org: &str, slug: &str) -> Result<()> {
    db.prepare(MARK_OK)
        .bind(&[org.into(), slug.into()])?
        .run()
        .await?;
    Ok(())
}

/// A failed poll: counted, unhealthy from the third in a row.
pub async fn mark_failure(db: &D1Database, org: &str, slug: &str, detail: &str) -> Result<()> {
    db.prepare(MARK_FAILURE)
        .bind(&[org.into(), slug.into(), detail.into()])?
        .run()
        .await?;
    Ok(())
}

/// The distinct `cadence_ms` of an org's channel configs (NULL for
/// channels that learn theirs from the origin).
pub async fn cadences(db: &D1Database, org: &str) -> Result<Vec<Option<f64>>> {
    #[derive(Deserialize)]
    struct Cad {
        cadence: Option<f64>,
    }
    let rows: Vec<Cad> = db
        .prepare(CADENCES)
        .bind(&[org.into()])?
        .all()
        .await?
        .results()?;
    Ok(rows.into_iter().map(|r| r.cadence).collect())
}
