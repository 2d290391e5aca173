//! The beacon queue consumer: fires each tracking URL concurrently with a
//! per-request timeout and the IAB device headers, dedupes by (session,
//! break, ad, event) in KV, retries failures one message at a time with
//! backoff (never `ack_all` over failures), and lets the queue dead-letter
//! what keeps failing.

use cf_ssai_core::ads::beacon::{self, BeaconMessage};
use cf_ssai_core::control::metrics::Batch;
use futures::future::join_all;
use std::collections::HashMap;
use worker::*;
use worker_shared::metrics::Level;
use worker_shared::{bindings, now_ms, var_or};

/// How long a beacon waits for its ad's previous stage before it is
/// dropped as out of order.
const OUT_OF_ORDER_WAIT_MS: i64 = 30_000;

/// Forward order per (session, break, ad): the stages of this batch that
/// may fire (see `beacon::in_order`), with the progress kept in KV.
async fn forward_order(
    kv: &kv::KvStore,
    messages: &[Message<serde_json::Value>],
) -> HashMap<String, Vec<u8>> {
    let mut groups: HashMap<String, Vec<u8>> = HashMap::new();
    for m in messages {
        if let Ok(b) = serde_json::from_value::<BeaconMessage>(m.body().clone()) {
            if let Some(st) = beacon::stage(b.event) {
                groups
                    .entry(beacon::progress_key(&b.session, &b.break_id, &b.ad_id))
                    .or_default()
                    .push(st);
            }
        }
    }
    let mut out = HashMap::new();
    for (key, stages) in groups {
        let reached: Option<u8> = kv
            .get(&key)
            .text()
            .await
            .ok()
            .flatten()
            .and_then(|t| t.parse().ok());
        let (ok, now) = beacon::in_order(reached, &stages);
        if now != reached {
            if let Some(Ok(p)) = now.map(|n| kv.put(&key, n.to_string())) {
                let _ = p.expiration_ttl(DEDUPE_TTL_S).execute().await;
            }
        }
        out.insert(key, ok);
    }
    out
}

/// Dedupe records live this long (a session's ad cannot recur sooner).
const DEDUPE_TTL_S: u64 = 86_400;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    // A queue consumer: nothing to serve the public.
    if !worker_shared::internal_ok(&req, &env) {
        return worker_shared::refuse_external();
    }
    Response::ok("beacon ok")
}

#[event(queue)]
async fn queue(batch: MessageBatch<serde_json::Value>, env: Env, _ctx: Context) -> Result<()> {
    let timeout_ms: u64 = var_or(&env, "BEACON_TIMEOUT_MS", "3000")
        .parse()
        .unwrap_or(3000);
    let allow_private = worker_shared::private_policy(&env);
    let kv = env.kv(bindings::KV)?;
    let is_dlq = batch.queue().ends_with("-dlq");
    let max_backoff: u32 = var_or(&env, "BEACON_MAX_BACKOFF_S", "600")
        .parse()
        .unwrap_or(600);
    let messages = batch.messages()?;
    // Duplicates inside one batch (a segment fetched twice): only the first
    // of each key fires; the rest are acked (the first carries the retry).
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<bool> = messages
        .iter()
        .map(
            |m| match serde_json::from_value::<BeaconMessage>(m.body().clone()) {
                Ok(b) => seen.insert(b.dedupe_key()),
                Err(_) => true,
            },
        )
        .collect();
    let order = if is_dlq {
        HashMap::new()
    } else {
        forward_order(&kv, &messages).await
    };
    let outcomes = join_all(messages.iter().zip(firsts).map(|(m, first)| {
        let kv = &kv;
        let order = &order;
        let allow_private = &allow_private;
        async move {
            let body = m.body();
            if body.get("kind").and_then(|k| k.as_str()) == Some("diag") {
                // Smoke test: prove produce → consume through the queue.
                let stamp = body["stamp"].as_str().unwrap_or("").to_string();
                if let Ok(p) = kv.put("diag:queue", stamp) {
                    let _ = p.expiration_ttl(600).execute().await;
                }
                return Outcome::Done;
            }
            let msg: BeaconMessage = match serde_json::from_value(body.clone()) {
                Ok(b) => b,
                Err(_) => return Outcome::Malformed,
            };
            if is_dlq {
                // Keep what died, for the dashboard and for replay.
                if let Ok(p) = kv.put(&format!("dlq:{}", msg.dedupe_key()), &msg) {
                    let _ = p.expiration_ttl(DEDUPE_TTL_S).execute().await;
                }
                return Outcome::DeadLettered;
            }
            if let Some(st) = beacon::stage(msg.event) {
                let pk = beacon::progress_key(&msg.session, &msg.break_id, &msg.ad_id);
                if !order.get(&pk).is_some_and(|ok| ok.contains(&st)) {
                    // Its predecessor may still be on its way (queues do not
                    // order): wait a little, then drop it as out of order.
                    return if now_ms() - msg.created_ms < OUT_OF_ORDER_WAIT_MS {
                        Outcome::Early
                    } else {
                        Outcome::OutOfOrder
                    };
                }
            }
            let key = msg.dedupe_key();
            if !first {
                return Outcome::Deduped;
            }
            if let Ok(Some(_)) = kv.get(&key).text().await {
                return Outcome::Deduped;
            }
            let started = now_ms();
            match fire(&msg, timeout_ms, allow_private).await {
                Ok(()) => {
                    if let Ok(p) = kv.put(&key, "1") {
                        let _ = p.expiration_ttl(DEDUPE_TTL_S).execute().await;
                    }
                    Outcome::Sent(now_ms() - started)
                }
                Err(Fail::Refused) => Outcome::Malformed,
                Err(Fail::Retry) => Outcome::Retry(msg.created_ms),
            }
        }
    }))
    .await;
    let (mut sent, mut failed, mut deduped, mut dead, mut latency) = (0, 0, 0, 0, 0i64);
    let mut out_of_order = 0;
    // Outcomes per (org, channel): one metrics write per channel per batch.
    let mut per: std::collections::BTreeMap<(String, String), Batch> = Default::default();
    for (m, o) in messages.iter().zip(outcomes) {
        let body = m.body();
        let field = |k: &str| {
            body.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let outcome = match &o {
            Outcome::Sent(_) => Some("sent"),
            Outcome::Retry(_) => Some("retried"),
            Outcome::DeadLettered => Some("dead_lettered"),
            Outcome::OutOfOrder | Outcome::Malformed => Some("dropped"),
            Outcome::Done | Outcome::Early | Outcome::Deduped => None,
        };
        if let Some(outcome) = outcome {
            per.entry((field("org"), field("channel")))
                .or_default()
                .add("beacons_total", &[("outcome", outcome)], 1.0);
            if outcome == "dead_lettered" || outcome == "dropped" {
                worker_shared::metrics::log(
                    Level::Warn,
                    "beacon_lost",
                    &[
                        ("org", &field("org")),
                        ("channel", &field("channel")),
                        ("break_id", &field("break_id")),
                        ("tracking_event", &field("event")),
                        ("reason", outcome),
                    ],
                );
            }
        }
        match o {
            Outcome::Done | Outcome::Malformed => m.ack(),
            Outcome::OutOfOrder => {
                out_of_order += 1;
                m.ack()
            }
            Outcome::Early => m.retry_with_options(
                &QueueRetryOptionsBuilder::new()
                    .with_delay_seconds(2)
                    .build(),
            ),
            Outcome::Deduped => {
                deduped += 1;
                m.ack()
            }
            Outcome::DeadLettered => {
                dead += 1;
                m.ack()
            }
            Outcome::Sent(ms) => {
                sent += 1;
                latency += ms;
                m.ack()
            }
            Outcome::Retry(created) => {
                failed += 1;
                let jitter = (now_ms() as u32).wrapping_mul(2654435761) >> 28;
                let delay = beacon::backoff_s(now_ms() - created, jitter).min(max_backoff);
                m.retry_with_options(
                    &QueueRetryOptionsBuilder::new()
                        .with_delay_seconds(delay)
                        .build(),
                );
            }
        }
    }
    for (name, v) in [
        ("sent", sent),
        ("failed_retried", failed),
        ("deduped", deduped),
        ("dead_lettered", dead),
        ("out_of_order", out_of_order),
        ("latency_ms_total", latency),
    ] {
        if v > 0 {
            worker_shared::count(&env, "beacon", name, v).await;
        }
    }
    let now = now_ms();
    for ((org, channel), b) in per {
        worker_shared::metrics::record(&env, &org, &channel, now, &b).await;
    }
    Ok(())
}

enum Outcome {
    Done,
    /// Fired before its predecessor stage: retried shortly.
    Early,
    /// Still without its predecessor after the wait: never fired.
    OutOfOrder,
    Malformed,
    Deduped,
    DeadLettered,
    Sent(i64),
    Retry(i64),
}

/// One tracking request: redirects followed hop by hop (each hop checked
/// against the private-address policy, as pixel chains redirect), the body
/// capped small (a pixel), one deadline for all of it.
async fn fire(
    msg: &BeaconMessage,
    timeout_ms: u64,
    allow_private: &str,
) -> std::result::Result<(), Fail> {
    let headers = msg.headers();
    let resp = worker_shared::fetch(&worker_shared::FetchSpec {
        url: &msg.url,
        method: Method::Get,
        headers: &headers,
        body: None,
        timeout_ms,
        max_bytes: 64 * 1024,
        allow_private,
    })
    .await;
    match resp {
        Ok(r) if (200..400).contains(&r.status) => Ok(()),
        Ok(_) => Err(Fail::Retry),
        // A refused URL never becomes acceptable: logged, not retried.
        Err(worker_shared::FetchError::Refused(e)) => {
            worker_shared::metrics::log(
                Level::Warn,
                "beacon_url_refused",
                &[
                    ("org", &msg.org),
                    ("channel", &msg.channel),
                    ("break_id", &msg.break_id),
                    ("reason", &e.to_string()),
                ],
            );
            Err(Fail::Refused)
        }
        Err(_) => Err(Fail::Retry),
    }
}

enum Fail {
    Retry,
    Refused,
}
