//! Operator metrics in D1 (see `cf_ssai_core::control::metrics` for what is
//! measured), and structured log lines.
//!
//! Why D1 and not Workers Analytics Engine: the figures must be readable
//! by the worker itself (the metrics API, the OpenMetrics endpoint, the
//! dashboard) and under `wrangler dev`. Analytics Engine is write-only from
//! a worker (reads go through the account's SQL API with an API token),
//! samples at high volume, and has no local implementation, so it would
//! need a second path for everything we show. D1 is exact and local, and
//! its write rate is kept bounded by the writers: pollers and isolates
//! accumulate in memory ([`cf_ssai_core::control::metrics::PendingBatches`]) and flush at
//! most every few seconds; a decision writes once per break.

use cf_ssai_core::control::metrics::{Batch, HOUR_MS, HOUR_RETENTION_MS, MINUTE_MS, MINUTE_RETENTION_MS};
use worker::{console_error, console_log, console_warn, Env};

const ADD_MINUTE: &str = "INSERT INTO metric_minutes (org_id, channel, t_ms, series, value) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(org_id, t_ms, channel, series) DO UPDATE SET value = value + excluded.value";
const ADD_TOTAL: &str = "INSERT INTO metric_totals (org_id, channel, series, value) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(org_id, channel, series) DO UPDATE SET value = value + excluded.value";

/// Add a batch to `(org, channel)`'s bucket of the minute `t_ms` falls in,
/// and to its running totals: one D1 batch (one transaction). Best effort:
/// a failed write is logged, never the caller's error.
pub async fn record(env: &Env, org: &str, channel: &str, t_ms: i64, batch: &Batch) {
    if org.is_empty() || batch.is_empty() {
        return;
    }
    let Ok(db) = env.d1(crate::bindings::DB) else {
        return;
    };
    let minute = t_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    let mut stmts = Vec::with_capacity(batch.adds.len() * 2);
    for (series, v) in &batch.adds {
        let m = db.prepare(ADD_MINUTE).bind(&[
            org.into(),
            channel.into(),
            (minute as f64).into(),
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
    if let Err(e) = db.batch(stmts).await {
        log(
            Level::Error,
            "metrics_write_failed",
            &[
                ("org", org),
                ("channel", channel),
                ("error", &e.to_string()),
            ],
        );
    }
}

/// Roll minutes older than the minute retention into hours, drop hours
/// older than the hour retention. Whole hours only; additive, so a rollup
/// that runs twice or races a late writer adds, never loses.
pub async fn rollup(env: &Env, now_ms: i64) {
    let Ok(db) = env.d1(crate::bindings::DB) else {
        return;
    };
    let cutoff = (now_ms - MINUTE_RETENTION_MS).div_euclid(HOUR_MS) * HOUR_MS;
    let expire = now_ms - HOUR_RETENTION_MS;
    let stmts = [
        db.prepare(
            "INSERT INTO metric_hours (org_id, channel, t_ms, series, value) \
             SELECT org_id, channel, CAST(t_ms / 3600000 AS INTEGER) * 3600000 AS hour, series, SUM(value) \
             FROM metric_minutes WHERE t_ms < ?1 GROUP BY org_id, channel, hour, series \
             ON CONFLICT(org_id, t_ms, channel, series) DO UPDATE SET value = value + excluded.value",
        )
        .bind(&[(cutoff as f64).into()]),
        db.prepare("DELETE FROM metric_minutes WHERE t_ms < ?1")
            .bind(&[(cutoff as f64).into()]),
        db.prepare("DELETE FROM metric_hours WHERE t_ms < ?1")
            .bind(&[(expire as f64).into()]),
    ];
    let stmts: Vec<_> = stmts.into_iter().filter_map(|s| s.ok()).collect();
    if let Err(e) = db.batch(stmts).await {
        log(
            Level::Error,
            "metrics_rollup_failed",
            &[("error", &e.to_string())],
        );
    }
}

#[derive(Clone, Copy)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// One structured log line (JSON, one object per line): `event` names
/// what happened (`ad_skipped`, `decision_fallback`, `origin_error`, …),
/// `fields` carry org, channel, break id and reason. Workers Logs
/// (`[observability]`) indexes the JSON keys, so an operator filters by
/// channel or break without parsing text.
pub fn log(level: Level, event: &str, fields: &[(&str, &str)]) {
    let mut m = serde_json::Map::new();
    m.insert(
        "level".into(),
        match level {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
        .into(),
    );
    m.insert("event".into(), event.into());
    for (k, v) in fields {
        if !v.is_empty() {
            m.insert((*k).into(), (*v).into());
        }
    }
    let line = serde_json::Value::Object(m).to_string();
    match level {
        Level::Info => console_log!("{line}"),
        Level::Warn => console_warn!("{line}"),
        Level::Error => console_error!("{line}"),
    }
}
