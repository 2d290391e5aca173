//! `metrics` (dashboard counters) and `metric_minutes` / `metric_hours` /
//! `metric_totals` (operator metrics, additive sums per org, channel,
//! bucket and series).

use super::num;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use worker::{D1Database, Result};

const COUNT: &str = "INSERT INTO metrics (scope, name, value) VALUES (?1, ?2, ?3) ON CONFLICT(scope, name) DO UPDATE SET value = value + excluded.value";
const COUNTERS: &str = "SELECT scope, name, value FROM metrics ORDER BY scope, name";
const ADD_MINUTE: &str = "INSERT INTO metric_minutes (org_id, channel, t_ms, series, value) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(org_id, t_ms, channel, series) DO UPDATE SET value = value + excluded.value";
const ADD_TOTAL: &str = "INSERT INTO metric_totals (org_id, channel, series, value) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(org_id, channel, series) DO UPDATE SET value = value + excluded.value";
const ROLL_HOURS: &str = "INSERT INTO metric_hours (org_id, channel, t_ms, series, value) \
     SELECT org_id, channel, CAST(t_ms / 3600000 AS INTEGER) * 3600000 AS hour, series, SUM(value) \
     FROM metric_minutes WHERE t_ms < ?1 GROUP BY org_id, channel, hour, series \
     ON CONFLICT(org_id, t_ms, channel, series) DO UPDATE SET value = value + excluded.value";
const DROP_MINUTES: &str = "DELETE FROM metric_minutes WHERE t_ms < ?1";
const DROP_HOURS: &str = "DELETE FROM metric_hours WHERE t_ms < ?1";
const TOTALS: &str =
    "SELECT channel, series, value FROM metric_totals WHERE org_id = ?1 ORDER BY channel, series";
const RANGE_MINUTES: &str =
    "SELECT CAST(t_ms / ?4 AS INTEGER) * ?4 AS t, series, SUM(value) AS value FROM metric_minutes \
     WHERE org_id = ?1 AND t_ms >= ?2 AND t_ms < ?3 AND (?5 = '' OR channel = ?5) \
     GROUP BY t, series";
const RANGE_HOURS: &str =
    "SELECT CAST(t_ms / ?4 AS INTEGER) * ?4 AS t, series, SUM(value) AS value FROM metric_hours \
     WHERE org_id = ?1 AND t_ms >= ?2 AND t_ms < ?3 AND (?5 = '' OR channel = ?5) \
     GROUP BY t, series";

/// Add to named counters of a scope: one statement alone, several in one
/// batch (one transaction).
pub async fn add_counters(db: &D1Database, scope: &str, counters: &[(String, i64)]) -> Result<()> {
    let stmts: Vec<_> = counters
        .iter()
        .filter_map(|(name, by)| {
            db.prepare(COUNT)
                .bind(&[scope.into(), name.as_str().into(), num(*by)])
                .ok()
        })
        .collect();
    match stmts.len() {
        0 => {}
        1 => {
            if let Some(s) = stmts.into_iter().next() {
                s.run().await?;
            }
        }
        _ => {
            db.batch(stmts).await?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CounterRow {
    pub scope: String,
    pub name: String,
    pub value: i64,
}

/// Every counter of every scope.
pub async fn counters(db: &D1Database) -> Result<Vec<CounterRow>> {
    db.prepare(COUNTERS).all().await?.results()
}

/// Add `adds` (series, value) to the minute bucket `minute` of
/// `(org, channel)` and to its running totals: one batch.
pub async fn add(
    db: &D1Database,
    org: &str,
    channel: &str,
    minute: i64,
    adds: &BTreeMap<String, f64>,
) -> Result<()> {
    let mut stmts = Vec::with_capacity(adds.len() * 2);
    for (series, v) in adds {
        let m = db.prepare(ADD_MINUTE).bind(&[
            org.into(),
            channel.into(),
            num(minute),
            series.as_str().into(),
            (*v).into(),
        ]);
        let t = db.prepare(ADD_TOTAL).bind(&[
            org.into(),
            channel.into(),
            series.as_str().into(),
            (*v).into(),
        ]);
        if let (Ok(m), Ok(t)) = (m, t) {
            stmts.push(m);
            stmts.push(t);
        }
    }
    db.batch(stmts).await?;
    Ok(())
}

/// Roll minutes before `cutoff` into hours and drop them; drop hours
/// before `expire`: one batch.
pub async fn rollup(db: &D1Database, cutoff: i64, expire: i64) -> Result<()> {
    let stmts = [
        db.prepare(ROLL_HOURS).bind(&[num(cutoff)]),
        db.prepare(DROP_MINUTES).bind(&[num(cutoff)]),
        db.prepare(DROP_HOURS).bind(&[num(expire)]),
    ];
    let stmts: Vec<_> = stmts.into_iter().filter_map(|s| s.ok()).collect();
    db.batch(stmts).await?;
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
pub struct TotalRow {
    pub channel: String,
    pub series: String,
    pub value: f64,
}

/// An org's running totals, by channel and series.
pub async fn totals(db: &D1Database, org: &str) -> Result<Vec<TotalRow>> {
    db.prepare(TOTALS)
        .bind(&[org.into()])?
        .all()
        .await?
        .results()
}

/// Which bucket table a range reads.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Minutes,
    Hours,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RangeRow {
    pub t: f64,
    pub series: String,
    pub value: f64,
}

/// Sums per `step` and series over `[start, to)` of one table, for one
/// channel or (empty) all.
pub async fn range(
    db: &D1Database,
    table: Table,
    org: &str,
    (start, to, step): (i64, i64, i64),
    channel: &str,
) -> Result<Vec<RangeRow>> {
    let sql = match table {
        Table::Minutes => RANGE_MINUTES,
        Table::Hours => RANGE_HOURS,
    };
    db.prepare(sql)
        .bind(&[org.into(), num(start), num(to), num(step), channel.into()])?
        .all()
        .await?
        .results()
}
