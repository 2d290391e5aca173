//! `breaks`: break history for the dashboard (the live state is in the
//! Channel DO).

use super::num;
use serde::{Deserialize, Serialize};
use worker::{D1Database, Result};

const INSERT: &str = "INSERT OR IGNORE INTO breaks (org_id, slug, break_id, source, record, pod, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const RECENT: &str = "SELECT slug, break_id, source, record, pod, created_ms FROM breaks WHERE org_id = ?1 ORDER BY created_ms DESC LIMIT 50";

/// A break as recorded (`record` and `pod`: JSON text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BreakRow {
    pub slug: String,
    pub break_id: String,
    pub source: String,
    pub record: String,
    pub pod: String,
    pub created_ms: i64,
}

/// Record a break once (a second write of the same id is ignored).
pub async fn insert(db: &D1Database, org: &str, b: &BreakRow) -> Result<()> {
    db.prepare(INSERT)
        .bind(&[
            org.into(),
            b.slug.as_str().into(),
            b.break_id.as_str().into(),
            b.source.as_str().into(),
            b.record.as_str().into(),
            b.pod.as_str().into(),
            num(b.created_ms),
        ])?
        .run()
        .await?;
    Ok(())
}

/// An org's 50 latest breaks.
pub async fn recent(db: &D1Database, org: &str) -> Result<Vec<BreakRow>> {
    db.prepare(RECENT)
        .bind(&[org.into()])?
        .all()
        .await?
        .results()
}
