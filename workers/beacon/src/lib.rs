//! The beacon queue consumer: fires each tracking URL concurrently with a
//! per-request timeout and the IAB device headers, dedupes by (session,
//! break, ad, event) in KV, retries failures one message at a time with
//! backoff (never `ack_all` over failures), and lets the queue dead-letter
//! what keeps failing.

use cf_ssai_core::beacon::{self, BeaconMessage};
use futures::future::join_all;
use worker::*;
use worker_shared::{bindings, now_ms, var_or};

/// Dedupe records live this long (a session's ad cannot recur sooner).
const DEDUPE_TTL_S: u64 = 86_400;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(_req: Request, _env: Env, _ctx: Context) -> Result<Response> {
    Response::ok("beacon ok")
}

#[event(queue)]
async fn queue(batch: MessageBatch<serde_json::Value>, env: Env, _ctx: Context) -> Result<()> {
    let timeout_ms: u64 = var_or(&env, "BEACON_TIMEOUT_MS", "3000")
        .parse()
        .unwrap_or(3000);
    let private_ok = worker_shared::private_origins_allowed(&env);
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
    let outcomes = join_all(messages.iter().zip(firsts).map(|(m, first)| {
        let kv = &kv;
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
            let key = msg.dedupe_key();
            if !first {
                return Outcome::Deduped;
            }
            if let Ok(Some(_)) = kv.get(&key).text().await {
                return Outcome::Deduped;
            }
            if let Err(e) = beacon::check_url(&msg.url, private_ok) {
                console_warn!("beacon URL refused: {e}");
                return Outcome::Malformed;
            }
            let started = now_ms();
            match fire(&msg, timeout_ms).await {
                Ok(()) => {
                    if let Ok(p) = kv.put(&key, "1") {
                        let _ = p.expiration_ttl(DEDUPE_TTL_S).execute().await;
                    }
                    Outcome::Sent(now_ms() - started)
                }
                Err(_) => Outcome::Retry(msg.created_ms),
            }
        }
    }))
    .await;
    let (mut sent, mut failed, mut deduped, mut dead, mut latency) = (0, 0, 0, 0, 0i64);
    for (m, o) in messages.iter().zip(outcomes) {
        match o {
            Outcome::Done | Outcome::Malformed => m.ack(),
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
        ("latency_ms_total", latency),
    ] {
        if v > 0 {
            worker_shared::count(&env, "beacon", name, v).await;
        }
    }
    Ok(())
}

enum Outcome {
    Done,
    Malformed,
    Deduped,
    DeadLettered,
    Sent(i64),
    Retry(i64),
}

async fn fire(msg: &BeaconMessage, timeout_ms: u64) -> std::result::Result<(), String> {
    let headers = Headers::new();
    for (k, v) in msg.headers() {
        headers.set(k, v).map_err(|e| e.to_string())?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let req = Request::new_with_init(&msg.url, &init).map_err(|e| e.to_string())?;
    let resp = worker_shared::fetch_timeout(req, timeout_ms)
        .await
        .map_err(|e| e.to_string())?;
    if (200..400).contains(&resp.status_code()) {
        Ok(())
    } else {
        Err(format!("HTTP {}", resp.status_code()))
    }
}
