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

/// What the consumer reads from its environment once per batch.
struct Settings {
    timeout_ms: u64,
    max_backoff_s: u32,
    allow_private: String,
}

impl Settings {
    fn from_env(env: &Env) -> Self {
        Settings {
            timeout_ms: var_or(env, "BEACON_TIMEOUT_MS", "3000")
                .parse()
                .unwrap_or(3000),
            max_backoff_s: var_or(env, "BEACON_MAX_BACKOFF_S", "600")
                .parse()
                .unwrap_or(600),
            allow_private: worker_shared::private_policy(env),
        }
    }
}

/// What every message of a batch is handled against.
struct Ctx<'a> {
    kv: &'a kv::KvStore,
    /// The stages that may fire, per progress key (empty on the DLQ).
    order: &'a HashMap<String, Vec<u8>>,
    settings: &'a Settings,
    is_dlq: bool,
}

#[event(queue)]
async fn queue(batch: MessageBatch<serde_json::Value>, env: Env, _ctx: Context) -> Result<()> {
    let settings = Settings::from_env(&env);
    let kv = env.kv(bindings::KV)?;
    let is_dlq = batch.queue().ends_with("-dlq");
    let messages = batch.messages()?;
    let firsts = first_of_each_key(&messages);
    let order = if is_dlq {
        HashMap::new()
    } else {
        forward_order(&kv, &messages).await
    };
    let ctx = Ctx {
        kv: &kv,
        order: &order,
        settings: &settings,
        is_dlq,
    };
    let outcomes = join_all(
        messages
            .iter()
            .zip(firsts)
            .map(|(m, first)| handle(&ctx, m.body(), first)),
    )
    .await;
    let mut tally = Tally::default();
    for (m, o) in messages.iter().zip(outcomes) {
        tally.note(m.body(), &o);
        settle(m, o, settings.max_backoff_s);
    }
    tally.flush(&env).await;
    Ok(())
}

/// Duplicates inside one batch (a segment fetched twice): only the first
/// of each key fires; the rest are acked (the first carries the retry).
fn first_of_each_key(messages: &[Message<serde_json::Value>]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::new();
    messages
        .iter()
        .map(
            |m| match serde_json::from_value::<BeaconMessage>(m.body().clone()) {
                Ok(b) => seen.insert(b.dedupe_key()),
                Err(_) => true,
            },
        )
        .collect()
}

/// One message, start to outcome: the smoke test's marker, the DLQ's
/// keeping, the forward order, the dedupe, then the request.
async fn handle(ctx: &Ctx<'_>, body: &serde_json::Value, first: bool) -> Outcome {
    if body.get("kind").and_then(|k| k.as_str()) == Some("diag") {
        return diag(ctx.kv, body).await;
    }
    let msg: BeaconMessage = match serde_json::from_value(body.clone()) {
        Ok(b) => b,
        Err(_) => return Outcome::Malformed,
    };
    if ctx.is_dlq {
        return dead_letter(ctx.kv, &msg).await;
    }
    if let Some(o) = out_of_order(ctx.order, &msg) {
        return o;
    }
    if !first {
        return Outcome::Deduped;
    }
    deliver(ctx, &msg).await
}

/// Smoke test: prove produce → consume through the queue.
async fn diag(kv: &kv::KvStore, body: &serde_json::Value) -> Outcome {
    let stamp = body["stamp"].as_str().unwrap_or("").to_string();
    if let Ok(p) = kv.put("diag:queue", stamp) {
        let _ = p.expiration_ttl(600).execute().await;
    }
    Outcome::Done
}

/// Keep what died, for the dashboard and for replay.
async fn dead_letter(kv: &kv::KvStore, msg: &BeaconMessage) -> Outcome {
    if let Ok(p) = kv.put(&format!("dlq:{}", msg.dedupe_key()), msg) {
        let _ = p.expiration_ttl(DEDUPE_TTL_S).execute().await;
    }
    Outcome::DeadLettered
}

/// A stage whose predecessor has not fired: its predecessor may still be
/// on its way (queues do not order), so it waits a little, then is
/// dropped as out of order. `None`: it may fire.
fn out_of_order(order: &HashMap<String, Vec<u8>>, msg: &BeaconMessage) -> Option<Outcome> {
    let st = beacon::stage(msg.event)?;
    let pk = beacon::progress_key(&msg.session, &msg.break_id, &msg.ad_id);
    if order.get(&pk).is_some_and(|ok| ok.contains(&st)) {
        return None;
    }
    Some(if now_ms() - msg.created_ms < OUT_OF_ORDER_WAIT_MS {
        Outcome::Early
    } else {
        Outcome::OutOfOrder
    })
}

/// Fire a beacon not fired before (the dedupe record in KV), and record
/// it as fired once it was.
async fn deliver(ctx: &Ctx<'_>, msg: &BeaconMessage) -> Outcome {
    let key = msg.dedupe_key();
    if let Ok(Some(_)) = ctx.kv.get(&key).text().await {
        return Outcome::Deduped;
    }
    let started = now_ms();
    let s = ctx.settings;
    match fire(msg, s.timeout_ms, &s.allow_private).await {
        Ok(()) => {
            if let Ok(p) = ctx.kv.put(&key, "1") {
                let _ = p.expiration_ttl(DEDUPE_TTL_S).execute().await;
            }
            Outcome::Sent(now_ms() - started)
        }
        Err(Fail::Refused) => Outcome::Malformed,
        Err(Fail::Retry) => Outcome::Retry(msg.created_ms),
    }
}

/// Ack or retry a message by its outcome: never `ack_all` over failures;
/// a failure is retried with backoff (jittered, capped), an early stage
/// shortly.
fn settle(m: &Message<serde_json::Value>, o: Outcome, max_backoff_s: u32) {
    let retry = |delay: u32| {
        m.retry_with_options(
            &QueueRetryOptionsBuilder::new()
                .with_delay_seconds(delay)
                .build(),
        )
    };
    match o {
        Outcome::Early => retry(2),
        Outcome::Retry(created) => {
            let jitter = (now_ms() as u32).wrapping_mul(2654435761) >> 28;
            retry(beacon::backoff_s(now_ms() - created, jitter).min(max_backoff_s));
        }
        Outcome::Done
        | Outcome::Malformed
        | Outcome::OutOfOrder
        | Outcome::Deduped
        | Outcome::DeadLettered
        | Outcome::Sent(_) => m.ack(),
    }
}

/// A batch's counts: the dashboard counters, and the operator metrics per
/// (org, channel) (one metrics write per channel per batch).
#[derive(Default)]
struct Tally {
    sent: i64,
    failed: i64,
    deduped: i64,
    dead: i64,
    out_of_order: i64,
    latency_ms: i64,
    per: std::collections::BTreeMap<(String, String), Batch>,
}

impl Tally {
    fn note(&mut self, body: &serde_json::Value, o: &Outcome) {
        match o {
            Outcome::Sent(ms) => {
                self.sent += 1;
                self.latency_ms += ms;
            }
            Outcome::Retry(_) => self.failed += 1,
            Outcome::Deduped => self.deduped += 1,
            Outcome::DeadLettered => self.dead += 1,
            Outcome::OutOfOrder => self.out_of_order += 1,
            Outcome::Done | Outcome::Early | Outcome::Malformed => {}
        }
        let Some(outcome) = o.metric() else { return };
        let field = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or("");
        self.per
            .entry((field("org").to_string(), field("channel").to_string()))
            .or_default()
            .add("beacons_total", &[("outcome", outcome)], 1.0);
        if outcome == "dead_lettered" || outcome == "dropped" {
            worker_shared::metrics::log(
                Level::Warn,
                "beacon_lost",
                &[
                    ("org", field("org")),
                    ("channel", field("channel")),
                    ("break_id", field("break_id")),
                    ("tracking_event", field("event")),
                    ("reason", outcome),
                ],
            );
        }
    }

    async fn flush(self, env: &Env) {
        for (name, v) in [
            ("sent", self.sent),
            ("failed_retried", self.failed),
            ("deduped", self.deduped),
            ("dead_lettered", self.dead),
            ("out_of_order", self.out_of_order),
            ("latency_ms_total", self.latency_ms),
        ] {
            if v > 0 {
                worker_shared::count(env, "beacon", name, v).await;
            }
        }
        let now = now_ms();
        for ((org, channel), b) in self.per {
            worker_shared::metrics::record(env, &org, &channel, now, &b).await;
        }
    }
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

impl Outcome {
    /// The `beacons_total{outcome}` label; `None` for what is not a
    /// beacon's fate (the smoke test, a wait, a duplicate).
    fn metric(&self) -> Option<&'static str> {
        match self {
            Outcome::Sent(_) => Some("sent"),
            Outcome::Retry(_) => Some("retried"),
            Outcome::DeadLettered => Some("dead_lettered"),
            Outcome::OutOfOrder | Outcome::Malformed => Some("dropped"),
            Outcome::Done | Outcome::Early | Outcome::Deduped => None,
        }
    }
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
