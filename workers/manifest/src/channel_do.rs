//! The Channel Durable Object: each channel's consistent sequencer. It
//! registers breaks exactly once (core `sequencer`), obtains each decision
//! once, persists before acknowledging, writes the channel's single KV key,
//! and runs the channel's poller on alarms at segment cadence.

use cf_ssai_core::cues::{self, CueEvent};
use cf_ssai_core::media;
use cf_ssai_core::model::{BreakRecord, BreakSource, ChannelBreaks, Pod, Slate};
use cf_ssai_core::sequencer::{self, Action};
use serde::{Deserialize, Serialize};
use worker::*;
use worker_shared::{bindings, now_ms};

const STATE: &str = "state";
const CHANNEL: &str = "channel";
const FAILURES: &str = "poll_failures";
/// KV copy lifetime: every poll rewrites it; readers treat a miss as "ask
/// the DO".
const KV_TTL_S: u64 = 300;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelRef {
    pub org: String,
    pub slug: String,
}

/// `POST /sync`: cues seen in an origin window (request path or poller).
#[derive(Debug, Serialize, Deserialize)]
pub struct SyncRequest {
    pub channel: ChannelRef,
    pub events: Vec<CueEvent>,
    pub cadence_ms: u64,
    /// The window's last MSN when the caller examined every cue in it.
    pub checked_through_msn: Option<u64>,
}

/// `POST /cue` (already validated and anchored by the worker).
#[derive(Debug, Serialize, Deserialize)]
pub struct CueRequest {
    pub channel: ChannelRef,
    pub kind: String,
    pub break_id: String,
    pub anchor_msn: u64,
    pub anchor_pdt_ms: Option<i64>,
    pub duration_ms: u64,
    pub cadence_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CueResponse {
    pub status: u16,
    pub error: Option<String>,
    pub record: Option<BreakRecord>,
}

#[durable_object]
pub struct ChannelDO {
    state: State,
    env: Env,
}

impl DurableObject for ChannelDO {
    fn new(state: State, env: Env) -> Self {
        Self { state, env }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        match (req.method(), path.as_str()) {
            (Method::Get, "/state") => Response::from_json(&self.load().await?),
            (Method::Post, "/sync") => {
                let body: SyncRequest = req.json().await?;
                self.remember(&body.channel).await?;
                let st = self.sync(&body).await?;
                Response::from_json(&st)
            }
            (Method::Post, "/cue") => {
                let body: CueRequest = req.json().await?;
                self.remember(&body.channel).await?;
                Response::from_json(&self.cue(body).await?)
            }
            (Method::Post, "/ensure-poller") => {
                let body: ChannelRef = req.json().await?;
                self.remember(&body).await?;
                let storage = self.state.storage();
                let running = storage.get_alarm().await?.is_some();
                if !running {
                    storage
                        .set_alarm(std::time::Duration::from_millis(10))
                        .await?;
                }
                Response::from_json(&serde_json::json!({ "started": !running }))
            }
            (Method::Post, "/ping") => {
                // Smoke test: storage round trip + an alarm.
                let n: u64 = self.state.storage().get("pings").await?.unwrap_or(0) + 1;
                self.state.storage().put("pings", n).await?;
                Response::from_json(&serde_json::json!({ "pings": n }))
            }
            _ => Response::error("not found", 404),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let next_ms = match self.poll().await {
            Ok(ms) => ms,
            Err(e) => {
                console_error!("poll failed: {e}");
                // Back off on failure; the cron restarts a stopped poller.
                10_000
            }
        };
        if next_ms > 0 {
            self.state
                .storage()
                .set_alarm(std::time::Duration::from_millis(next_ms))
                .await?;
        }
        Response::ok("polled")
    }
}

impl ChannelDO {
    async fn load(&self) -> Result<ChannelBreaks> {
        Ok(self.state.storage().get(STATE).await?.unwrap_or_default())
    }

    async fn remember(&self, c: &ChannelRef) -> Result<()> {
        let have: Option<ChannelRef> = self.state.storage().get(CHANNEL).await?;
        if have.is_none() {
            self.state.storage().put(CHANNEL, c).await?;
        }
        Ok(())
    }

    /// Persist, then publish to KV (the fast path of every edge node).
    async fn save(&self, c: &ChannelRef, st: &ChannelBreaks) -> Result<()> {
        self.state.storage().put(STATE, st).await?;
        let kv = self.env.kv(bindings::KV)?;
        kv.put(&worker_shared::kv_breaks_key(&c.org, &c.slug), st)?
            .expiration_ttl(KV_TTL_S)
            .execute()
            .await?;
        Ok(())
    }

    async fn sync(&self, req: &SyncRequest) -> Result<ChannelBreaks> {
        let mut st = self.load().await?;
        let now = now_ms();
        let config = worker_shared::load_channel(&self.env, &req.channel.org, &req.channel.slug)
            .await?
            .map(|c| c.config)
            .unwrap_or_default();
        let mut changed = false;
        for action in sequencer::reconcile(&req.events, &st.entries) {
            match action {
                Action::Register(cue) => {
                    let Some(mut rec) =
                        sequencer::record_from_cue(&cue, req.cadence_ms, &config.breaks, now)
                    else {
                        continue;
                    };
                    rec.source = BreakSource::Scte35;
                    if sequencer::check_overlap(&st, &rec).is_err() {
                        continue;
                    }
                    let pod = self.decide(&req.channel, &rec).await;
                    if let Ok(entry) = sequencer::commit(&mut st, rec, pod, now) {
                        self.history(&req.channel, &entry).await;
                        changed = true;
                    }
                }
                Action::End { break_id, at_msn } => {
                    changed |= sequencer::apply_end(&mut st, &break_id, at_msn, now);
                }
            }
        }
        if let Some(m) = req.checked_through_msn {
            let before = st.checked_through_msn;
            sequencer::mark_checked(&mut st, m, now);
            changed |= st.checked_through_msn != before;
        }
        if changed {
            sequencer::prune(&mut st, &config.breaks, now);
            self.save(&req.channel, &st).await?;
        }
        Ok(st)
    }

    async fn cue(&self, req: CueRequest) -> Result<CueResponse> {
        let mut st = self.load().await?;
        let now = now_ms();
        let resp = |status: u16, error: Option<String>, record: Option<BreakRecord>| CueResponse {
            status,
            error,
            record,
        };
        match req.kind.as_str() {
            "stop" => {
                let open = st
                    .entries
                    .iter()
                    .rev()
                    .find(|e| {
                        e.record.end_msn() > req.anchor_msn && e.record.anchor_msn <= req.anchor_msn
                    })
                    .map(|e| e.record.id.clone());
                let Some(id) = open else {
                    return Ok(resp(409, Some("no active break to stop".into()), None));
                };
                sequencer::apply_end(&mut st, &id, req.anchor_msn, now);
                self.save(&req.channel, &st).await?;
                let rec = st
                    .entries
                    .iter()
                    .find(|e| e.record.id == id)
                    .map(|e| e.record.clone());
                Ok(resp(200, None, rec))
            }
            _ => {
                if let Some(i) = sequencer::find(&st, &req.break_id) {
                    // Idempotent: the same id returns the same break.
                    return Ok(resp(200, None, Some(st.entries[i].record.clone())));
                }
                let rec = BreakRecord {
                    id: req.break_id.clone(),
                    source: if req.kind == "schedule" {
                        BreakSource::Scheduled
                    } else {
                        BreakSource::Manual
                    },
                    anchor_msn: req.anchor_msn,
                    anchor_pdt_ms: req.anchor_pdt_ms,
                    duration_ms: req.duration_ms,
                    cadence_ms: req.cadence_ms,
                    segment_count: cf_ssai_core::model::segments_for(
                        req.duration_ms,
                        req.cadence_ms,
                    ),
                    cut_after: None,
                    disc_before: 0,
                    registered_ms: now,
                };
                if let Err(e) = sequencer::check_overlap(&st, &rec) {
                    return Ok(resp(409, Some(e.to_string()), None));
                }
                let pod = self.decide(&req.channel, &rec).await;
                match sequencer::commit(&mut st, rec, pod, now) {
                    Ok(entry) => {
                        self.save(&req.channel, &st).await?;
                        self.history(&req.channel, &entry).await;
                        Ok(resp(201, None, Some(entry.record)))
                    }
                    Err(e) => Ok(resp(409, Some(e.to_string()), None)),
                }
            }
        }
    }

    /// One decision per break, from the decision service; slate-only (an
    /// empty slate keeps the content) when it fails.
    async fn decide(&self, c: &ChannelRef, r: &BreakRecord) -> Pod {
        let body = serde_json::json!({
            "org": c.org,
            "channel": c.slug,
            "break_id": r.id,
            "duration_s": r.duration_ms as f64 / 1000.0,
            "cadence_ms": r.cadence_ms,
        });
        let attempt = async {
            let svc = self.env.service(bindings::DECISION)?;
            let mut init = RequestInit::new();
            init.with_method(Method::Post)
                .with_body(Some(body.to_string().into()));
            let headers = Headers::new();
            headers.set("Content-Type", "application/json")?;
            init.with_headers(headers);
            let mut resp = svc.fetch("https://decision/decision", Some(init)).await?;
            if resp.status_code() != 200 {
                return Err(Error::RustError(format!(
                    "decision HTTP {}",
                    resp.status_code()
                )));
            }
            resp.json::<Pod>().await
        };
        match attempt.await {
            Ok(p) if p.break_id == r.id => p,
            Ok(p) => Pod::slate_only(
                &r.id,
                r.duration_ms as f64 / 1000.0,
                p.slate,
                "decision answered for another break".into(),
            ),
            Err(e) => {
                worker_shared::count(&self.env, &c.org, "decision_failures", 1).await;
                Pod::slate_only(
                    &r.id,
                    r.duration_ms as f64 / 1000.0,
                    Slate::default(),
                    format!("decision failed: {e}"),
                )
            }
        }
    }

    async fn history(&self, c: &ChannelRef, e: &cf_ssai_core::model::BreakEntry) {
        let Ok(db) = self.env.d1(bindings::DB) else {
            return;
        };
        let source = serde_json::to_value(e.record.source)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        if let Ok(stmt) = db
            .prepare("INSERT OR IGNORE INTO breaks (org_id, slug, break_id, source, record, pod, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .bind(&[
                c.org.as_str().into(),
                c.slug.as_str().into(),
                e.record.id.as_str().into(),
                source.into(),
                serde_json::to_string(&e.record).unwrap_or_default().into(),
                serde_json::to_string(&e.pod).unwrap_or_default().into(),
                (e.record.registered_ms as f64).into(),
            ])
        {
            let _ = stmt.run().await;
        }
    }

    /// Exponential backoff after consecutive failed polls: cadence × 2^n,
    /// capped at 60 s (the cron restarts a stopped poller anyway).
    async fn backoff(&self, cadence_ms: u64) -> u64 {
        let storage = self.state.storage();
        let n: u32 = storage.get(FAILURES).await.ok().flatten().unwrap_or(0) + 1;
        let _ = storage.put(FAILURES, n).await;
        (cadence_ms.max(1000) << n.min(6)).min(60_000)
    }

    /// One poll of the origin; returns the delay to the next (0 = stop).
    async fn poll(&self) -> Result<u64> {
        let Some(c): Option<ChannelRef> = self.state.storage().get(CHANNEL).await? else {
            return Ok(0);
        };
        let Some(ch) = worker_shared::load_channel(&self.env, &c.org, &c.slug).await? else {
            return Ok(0);
        };
        let cfg = &ch.config;
        if !cfg.active || !cfg.scte35_enabled {
            return Ok(0);
        }
        let started = now_ms();
        let origin = crate::origin::media_url_for_poll(cfg).await;
        let text = match origin {
            Ok(u) => worker_shared::get_text(&u, cfg.origin_timeout_ms)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                crate::origin::mark_health(&self.env, &c, false, &e).await;
                worker_shared::count(&self.env, &c.org, "monitor_errors", 1).await;
                return Ok(self.backoff(cfg.cadence_ms).await);
            }
        };
        let m = match media::parse(&text) {
            Ok(m) => m,
            Err(e) => {
                crate::origin::mark_health(&self.env, &c, false, &e.to_string()).await;
                worker_shared::count(&self.env, &c.org, "monitor_errors", 1).await;
                return Ok(self.backoff(cfg.cadence_ms).await);
            }
        };
        let cadence = crate::origin::cadence_ms(cfg, &m);
        let det = cues::detect(&m, &cfg.segmentation);
        let before = self.load().await?.entries.len();
        let st = self
            .sync(&SyncRequest {
                channel: c.clone(),
                events: det.events.clone(),
                cadence_ms: cadence,
                checked_through_msn: m.last_msn(),
            })
            .await?;
        let registered = st.entries.len().saturating_sub(before) as i64;
        crate::origin::mark_health(&self.env, &c, true, "").await;
        let failures: u32 = self
            .state
            .storage()
            .get(FAILURES)
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        if failures > 0 {
            self.state.storage().put(FAILURES, 0u32).await?;
        }
        worker_shared::count(&self.env, &c.org, "monitor_polls", 1).await;
        worker_shared::count(&self.env, &c.org, "monitor_cycle_ms", now_ms() - started).await;
        if registered > 0 {
            worker_shared::count(&self.env, &c.org, "breaks_registered", registered).await;
            // Detection latency: from the cue's PDT (the break's first
            // segment) to its registration.
            let newest = st.entries.iter().max_by_key(|e| e.record.registered_ms);
            if let Some(pdt) = newest.and_then(|e| e.record.anchor_pdt_ms) {
                let lat = newest.map_or(0, |e| e.record.registered_ms) - pdt;
                worker_shared::count(&self.env, &c.org, "detection_latency_ms_total", lat.max(0))
                    .await;
                worker_shared::count(&self.env, &c.org, "detections_timed", 1).await;
            }
            for e in &det.events {
                let name = format!(
                    "cues_{}",
                    serde_json::to_value(e.dialect)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                );
                worker_shared::count(&self.env, &c.org, &name, 1).await;
            }
        }
        Ok(cadence.max(500))
    }
}
