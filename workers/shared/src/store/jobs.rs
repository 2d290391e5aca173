//! `conditioning_jobs`: creative conditioning on first sight, one job per
//! creative identity and org, leased by conditioners fairly between orgs.

use super::{changes, flag, num, opt};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Result};

/// Not ready: queued, running, or failed (a decision reports them).
pub(crate) const NOT_READY: &str = "SELECT id, state, reason FROM conditioning_jobs WHERE org_id = ?1 AND state != 'ready' ORDER BY updated_ms DESC LIMIT 500";
const STATS: &str = "SELECT state, failure_category, created_ms, started_ms, finished_ms FROM conditioning_jobs WHERE org_id = ?1 AND (state IN ('queued', 'running') OR finished_ms >= ?2)";
const LIST: &str = "SELECT id, identity, creative_id, universal_ad_id, ad_system, duration_s, source_url, source_kind, source_size, source, state, reason, failure_category, notes, attempts, lease_owner, lease_until_ms, seen, created_ms, updated_ms, started_ms, finished_ms, ad_ids FROM conditioning_jobs WHERE org_id = ?1 ORDER BY created_ms DESC LIMIT 200";
const WAITING: &str = "SELECT count(*) AS n FROM conditioning_jobs WHERE state = 'queued' OR (state = 'running' AND lease_until_ms < ?1)";
const FAIL_EXPIRED: &str = "UPDATE conditioning_jobs SET state = 'failed', failure_category = 'lease_expired', reason = 'lease_expired: the conditioner was lost on each of ' || attempts || ' attempts', finished_ms = ?1, updated_ms = ?1, lease_owner = NULL WHERE state = 'running' AND lease_until_ms < ?1 AND attempts >= ?2";
/// Fair between orgs: the org served longest ago first (then its oldest
/// job), and no org beyond its running quota, so one org's hundred
/// creatives never hold back another's one.
const LEASE: &str = "UPDATE conditioning_jobs SET state = 'running', lease_owner = ?2, lease_until_ms = ?3, attempts = attempts + 1, started_ms = COALESCE(started_ms, ?1), leased_ms = ?1, updated_ms = ?1 WHERE (org_id, id) = (WITH orgs AS (SELECT org_id, MAX(COALESCE(leased_ms, 0)) AS last, SUM(state = 'running' AND lease_until_ms >= ?1) AS running FROM conditioning_jobs GROUP BY org_id) SELECT j.org_id, j.id FROM conditioning_jobs j JOIN orgs o ON o.org_id = j.org_id WHERE (j.state = 'queued' OR (j.state = 'running' AND j.lease_until_ms < ?1)) AND j.attempts < ?4 AND (?5 = '' OR j.org_id = ?5) AND o.running < ?6 ORDER BY o.last, j.created_ms LIMIT 1) RETURNING org_id, id, identity, creative_id, universal_ad_id, duration_s, source, attempts, lease_until_ms";
const COMPLETE_OK: &str = "UPDATE conditioning_jobs SET state = 'ready', reason = NULL, failure_category = NULL, notes = ?6, finished_ms = ?4, updated_ms = ?4, lease_owner = NULL, ad_ids = ?5 WHERE org_id = ?1 AND id = ?2 AND lease_owner = ?3 AND state = 'running'";
const COMPLETE_FAILED: &str = "UPDATE conditioning_jobs SET state = CASE WHEN ?5 = 1 OR attempts >= ?6 THEN 'failed' ELSE 'queued' END, reason = ?7, failure_category = ?8, finished_ms = CASE WHEN ?5 = 1 OR attempts >= ?6 THEN ?4 ELSE NULL END, updated_ms = ?4, lease_owner = NULL, lease_until_ms = NULL WHERE org_id = ?1 AND id = ?2 AND lease_owner = ?3 AND state = 'running'";
/// Insert a job, or merge into the existing one: `seen` counts sightings;
/// a changed source (URL, or size when both are known: the same test as
/// `conditioning::source_changed`) queues it again with no attempts used.
/// An org at its queued quota (`MAX_QUEUED_PER_ORG`) records no new job:
/// the creative is seen again on a later decision.
const UPSERT: &str = "INSERT INTO conditioning_jobs (org_id, id, identity, creative_id, universal_ad_id, ad_system, duration_s, source_url, source_kind, source_size, source, state, created_ms, updated_ms) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'queued', ?12, ?12 \
WHERE (SELECT count(*) FROM conditioning_jobs WHERE org_id = ?1 AND state = 'queued') < ?13 OR EXISTS (SELECT 1 FROM conditioning_jobs WHERE org_id = ?1 AND id = ?2) \
ON CONFLICT(org_id, id) DO UPDATE SET seen = seen + 1, updated_ms = excluded.updated_ms, \
state = CASE WHEN (source_url != excluded.source_url OR (source_size > 0 AND excluded.source_size > 0 AND source_size != excluded.source_size)) AND state IN ('ready', 'failed') THEN 'queued' ELSE state END, \
attempts = CASE WHEN (source_url != excluded.source_url OR (source_size > 0 AND excluded.source_size > 0 AND source_size != excluded.source_size)) AND state IN ('ready', 'failed') THEN 0 ELSE attempts END, \
reason = CASE WHEN (source_url != excluded.source_url OR (source_size > 0 AND excluded.source_size > 0 AND source_size != excluded.source_size)) AND state IN ('ready', 'failed') THEN 'source changed' ELSE reason END, \
source = CASE WHEN state IN ('ready', 'failed') THEN excluded.source ELSE source END, \
source_kind = CASE WHEN state IN ('ready', 'failed') THEN excluded.source_kind ELSE source_kind END, \
source_size = CASE WHEN state IN ('ready', 'failed') THEN excluded.source_size ELSE source_size END, \
source_url = CASE WHEN state IN ('ready', 'failed') THEN excluded.source_url ELSE source_url END";

/// What the conditioning figures read of a job (the core's `JobStat`;
/// the core's conditioning module is not built into every worker).
#[derive(Debug, Clone, Deserialize)]
pub struct StatRow {
    pub state: String,
    #[serde(default)]
    pub failure_category: Option<String>,
    pub created_ms: i64,
    #[serde(default)]
    pub started_ms: Option<i64>,
    #[serde(default)]
    pub finished_ms: Option<i64>,
}

/// A job that is not ready, as a decision reports it (the core's
/// `JobState`).
#[derive(Debug, Clone, Deserialize)]
pub struct NotReadyRow {
    pub id: String,
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// An org's jobs that are queued or running, or finished since `since_ms`
/// (the conditioning figures).
pub async fn stat_rows(db: &D1Database, org: &str, since_ms: i64) -> Result<Vec<StatRow>> {
    db.prepare(STATS)
        .bind(&[org.into(), num(since_ms)])?
        .all()
        .await?
        .results()
}

/// A job as listed (`source`, `notes`, `ad_ids`: JSON text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRow {
    pub id: String,
    pub identity: String,
    pub creative_id: String,
    pub universal_ad_id: Option<String>,
    pub ad_system: String,
    pub duration_s: f64,
    pub source_url: String,
    pub source_kind: String,
    pub source_size: i64,
    pub source: String,
    pub state: String,
    pub reason: Option<String>,
    pub failure_category: Option<String>,
    pub notes: Option<String>,
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub seen: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub ad_ids: Option<String>,
}

/// An org's 200 latest jobs.
pub async fn list(db: &D1Database, org: &str) -> Result<Vec<JobRow>> {
    db.prepare(LIST).bind(&[org.into()])?.all().await?.results()
}

/// Jobs a conditioner would lease at `now`: queued ones, and running ones
/// whose lease expired.
pub async fn waiting(db: &D1Database, now: i64) -> Result<u64> {
    let n: Option<f64> = db
        .prepare(WAITING)
        .bind(&[num(now)])?
        .first(Some("n"))
        .await?;
    Ok(n.unwrap_or(0.0) as u64)
}

/// A lease request: who, until when, and the limits it runs under.
pub struct LeaseAsk<'a> {
    pub now: i64,
    pub owner: &'a str,
    pub until_ms: i64,
    pub max_attempts: u32,
    /// Only this org's jobs; empty: any org.
    pub org: &'a str,
    pub max_running_per_org: u32,
}

/// A leased job, as the conditioner receives it (`source`: JSON text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeasedJob {
    pub org_id: String,
    pub id: String,
    pub identity: String,
    pub creative_id: String,
    pub universal_ad_id: Option<String>,
    pub duration_s: f64,
    pub source: String,
    pub attempts: i64,
    pub lease_until_ms: i64,
}

/// Fail the jobs whose lease expired with no attempts left, then claim
/// one job in a single statement (two conditioners never get the same
/// one): one batch, one transaction.
pub async fn lease(db: &D1Database, a: &LeaseAsk<'_>) -> Result<Option<LeasedJob>> {
    let mut res = db
        .batch(vec![
            db.prepare(FAIL_EXPIRED)
                .bind(&[num(a.now), f64::from(a.max_attempts).into()])?,
            db.prepare(LEASE).bind(&[
                num(a.now),
                a.owner.into(),
                num(a.until_ms),
                f64::from(a.max_attempts).into(),
                a.org.into(),
                f64::from(a.max_running_per_org).into(),
            ])?,
        ])
        .await?
        .into_iter();
    let _expired = res.next();
    Ok(res
        .next()
        .map(|r| r.results::<LeasedJob>())
        .transpose()?
        .and_then(|rows| rows.into_iter().next()))
}

/// The leaseholder's success: ready, with its ads (`ad_ids`: JSON) and
/// notes. False when the lease was lost.
pub async fn complete_ok(
    db: &D1Database,
    org: &str,
    id: &str,
    owner: &str,
    now: i64,
    ad_ids: &str,
    notes: Option<&str>,
) -> Result<bool> {
    let r = db
        .prepare(COMPLETE_OK)
        .bind(&[
            org.into(),
            id.into(),
            owner.into(),
            num(now),
            ad_ids.into(),
            opt(notes),
        ])?
        .run()
        .await?;
    Ok(changes(&r)? > 0)
}

/// A failure the leaseholder reports.
pub struct Failure<'a> {
    pub owner: &'a str,
    pub now: i64,
    /// Never worth retrying (missing source, not video, too large).
    pub permanent: bool,
    pub max_attempts: u32,
    pub reason: &'a str,
    pub category: Option<&'a str>,
}

/// The leaseholder's failure: failed when permanent or on the last
/// attempt, else queued again. False when the lease was lost.
pub async fn complete_failed(
    db: &D1Database,
    org: &str,
    id: &str,
    f: &Failure<'_>,
) -> Result<bool> {
    let r = db
        .prepare(COMPLETE_FAILED)
        .bind(&[
            org.into(),
            id.into(),
            f.owner.into(),
            num(f.now),
            flag(f.permanent),
            f64::from(f.max_attempts).into(),
            f.reason.into(),
            opt(f.category),
        ])?
        .run()
        .await?;
    Ok(changes(&r)? > 0)
}

/// A creative a decision could not play for want of conditioned media.
pub struct JobUpsert<'a> {
    pub id: &'a str,
    pub identity: &'a str,
    pub creative_id: &'a str,
    pub universal_ad_id: Option<&'a str>,
    pub ad_system: &'a str,
    pub duration_s: f64,
    pub source_url: &'a str,
    pub source_kind: &'a str,
    pub source_size: u64,
    /// The source as JSON.
    pub source: &'a str,
}

fn upsert_stmt(
    db: &D1Database,
    org: &str,
    j: &JobUpsert<'_>,
    now: i64,
    max_queued: u32,
) -> Result<D1PreparedStatement> {
    let args: [JsValue; 13] = [
        org.into(),
        j.id.into(),
        j.identity.into(),
        j.creative_id.into(),
        opt(j.universal_ad_id),
        j.ad_system.into(),
        j.duration_s.into(),
        j.source_url.into(),
        j.source_kind.into(),
        (j.source_size as f64).into(),
        j.source.into(),
        num(now),
        f64::from(max_queued).into(),
    ];
    db.prepare(UPSERT).bind(&args)
}

/// Record jobs (insert or merge, see [`UPSERT`]) in one batch, within the
/// org's queued quota `max_queued`. Nothing to write is no round trip.
pub async fn upsert_all(
    db: &D1Database,
    org: &str,
    jobs: &[JobUpsert<'_>],
    now: i64,
    max_queued: u32,
) -> Result<()> {
    let stmts: Vec<_> = jobs
        .iter()
        .filter_map(|j| upsert_stmt(db, org, j, now, max_queued).ok())
        .collect();
    if stmts.is_empty() {
        return Ok(());
    }
    db.batch(stmts).await?;
    Ok(())
}
