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

use cf_ssai_core::control::metrics::{
    Batch, HOUR_MS, HOUR_RETENTION_MS, MINUTE_MS, MINUTE_RETENTION_MS,
};
use worker::{console_error, console_log, console_warn, Env};

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
    if let Err(e) = crate::store::metrics::add(&db, org, channel, minute, &batch.adds).await {
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
    if let Err(e) = crate::store::metrics::rollup(&db, cutoff, expire).await {
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
