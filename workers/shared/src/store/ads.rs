//! `ads` and `slates`: the ad library (creatives conditioned to a
//! channel's ladder and cadence) and the slates that fill what ads do not.

use super::{flag, num, opt};
use serde::{Deserialize, Serialize};
use worker::{D1Database, Result};

const UPSERT_AD: &str = "INSERT INTO ads (org_id, id, channel_slug, creative_id, universal_ad_id, duration_s, cadence_ms, renditions, tracking, priority, created_ms, conditioned, source_url, source_size, padding_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT(org_id, id) DO UPDATE SET channel_slug = excluded.channel_slug, creative_id = excluded.creative_id, universal_ad_id = excluded.universal_ad_id, duration_s = excluded.duration_s, cadence_ms = excluded.cadence_ms, renditions = excluded.renditions, tracking = excluded.tracking, priority = excluded.priority, conditioned = excluded.conditioned, source_url = excluded.source_url, source_size = excluded.source_size, padding_s = excluded.padding_s";
const LIST_ADS: &str = "SELECT id, channel_slug, creative_id, universal_ad_id, duration_s, cadence_ms, priority, active, conditioned, source_url FROM ads WHERE org_id = ?1 ORDER BY priority DESC, id LIMIT 200";
const LIBRARY: &str = "SELECT id, creative_id, universal_ad_id, duration_s, renditions, tracking, conditioned, source_url, source_size FROM ads WHERE org_id = ?1 AND active = 1 AND (channel_slug IS NULL OR channel_slug = ?2) ORDER BY priority DESC, id";
const UPSERT_SLATE: &str = "INSERT INTO slates (org_id, id, channel_slug, renditions, created_ms) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(org_id, id) DO UPDATE SET channel_slug = excluded.channel_slug, renditions = excluded.renditions";
const PICK_SLATE: &str = "SELECT id, renditions FROM slates WHERE org_id = ?1 AND (id = ?3 OR channel_slug = ?2 OR channel_slug IS NULL) ORDER BY (id = ?3) DESC, (channel_slug = ?2) DESC LIMIT 1";

/// An ad to write (`renditions`, `tracking`: JSON text).
pub struct NewAd<'a> {
    pub id: &'a str,
    pub channel: Option<&'a str>,
    pub creative_id: &'a str,
    pub universal_ad_id: Option<&'a str>,
    pub duration_s: f64,
    pub cadence_ms: u64,
    pub renditions: &'a str,
    pub tracking: &'a str,
    pub priority: i64,
    pub created_ms: i64,
    pub conditioned: bool,
    pub source_url: Option<&'a str>,
    pub source_size: u64,
    pub padding_s: f64,
}

/// Create or replace an ad of the org.
pub async fn upsert_ad(db: &D1Database, org: &str, a: &NewAd<'_>) -> Result<()> {
    db.prepare(UPSERT_AD)
        .bind(&[
            org.into(),
            a.id.into(),
            opt(a.channel),
            a.creative_id.into(),
            opt(a.universal_ad_id),
            a.duration_s.into(),
            (a.cadence_ms as f64).into(),
            a.renditions.into(),
            a.tracking.into(),
            num(a.priority),
            num(a.created_ms),
            flag(a.conditioned),
            opt(a.source_url),
            (a.source_size as f64).into(),
            a.padding_s.into(),
        ])?
        .run()
        .await?;
    Ok(())
}

/// An ad as listed (no renditions).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdListRow {
    pub id: String,
    pub channel_slug: Option<String>,
    pub creative_id: String,
    pub universal_ad_id: Option<String>,
    pub duration_s: f64,
    pub cadence_ms: i64,
    pub priority: i64,
    pub active: i64,
    pub conditioned: i64,
    pub source_url: Option<String>,
}

/// An org's ads by priority, at most 200.
pub async fn list_ads(db: &D1Database, org: &str) -> Result<Vec<AdListRow>> {
    db.prepare(LIST_ADS)
        .bind(&[org.into()])?
        .all()
        .await?
        .results()
}

/// A library candidate for a decision (`renditions`, `tracking`: JSON).
#[derive(Debug, Clone, Deserialize)]
pub struct LibraryAdRow {
    pub id: String,
    pub creative_id: String,
    pub universal_ad_id: Option<String>,
    pub duration_s: f64,
    pub renditions: String,
    pub tracking: String,
    #[serde(default)]
    pub conditioned: i64,
    #[serde(default)]
    pub source_url: Option<String>,
    #[serde(default)]
    pub source_size: f64,
}

/// What a decision reads of the org: its active ads for the channel
/// (channel-specific and org-wide, by priority), its conditioning jobs
/// that are not ready, and its settings (JSON text).
pub struct Library {
    pub ads: Vec<LibraryAdRow>,
    pub jobs: Vec<super::jobs::NotReadyRow>,
    pub settings: Option<String>,
}

/// The decision's read: one D1 round trip (a batch of three).
pub async fn library(db: &D1Database, org: &str, slug: &str) -> Result<Library> {
    let mut res = db
        .batch(vec![
            db.prepare(LIBRARY).bind(&[org.into(), slug.into()])?,
            db.prepare(super::jobs::NOT_READY).bind(&[org.into()])?,
            db.prepare(super::orgs::SETTINGS).bind(&[org.into()])?,
        ])
        .await?
        .into_iter();
    let ads = res.next().map(|r| r.results()).transpose()?;
    let jobs = res.next().map(|r| r.results()).transpose()?;
    let settings = res
        .next()
        .and_then(|r| r.results::<super::orgs::SettingsRow>().ok())
        .and_then(|rows| rows.into_iter().next())
        .map(|r| r.settings);
    Ok(Library {
        ads: ads.unwrap_or_default(),
        jobs: jobs.unwrap_or_default(),
        settings,
    })
}

/// Create or replace a slate (`renditions`: JSON text; no channel = the
/// org default).
pub async fn upsert_slate(
    db: &D1Database,
    org: &str,
    id: &str,
    channel: Option<&str>,
    renditions: &str,
    now: i64,
) -> Result<()> {
    db.prepare(UPSERT_SLATE)
        .bind(&[
            org.into(),
            id.into(),
            opt(channel),
            renditions.into(),
            num(now),
        ])?
        .run()
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
pub struct SlateRow {
    pub id: String,
    pub renditions: String,
}

/// The channel's slate: by id, else channel-scoped, else the org default.
pub async fn pick_slate(
    db: &D1Database,
    org: &str,
    slug: &str,
    slate_id: &str,
) -> Result<Option<SlateRow>> {
    db.prepare(PICK_SLATE)
        .bind(&[org.into(), slug.into(), slate_id.into()])?
        .first(None)
        .await
}
