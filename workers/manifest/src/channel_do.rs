//! The Channel Durable Object: each channel's consistent sequencer. It
//! registers breaks exactly once (core `sequencer`), obtains each decision
//! once, persists before acknowledging, writes the channel's single KV key,
//! and runs the channel's poller on alarms at segment cadence.

use cf_ssai_core::channel::{Channel, Effect, Input, Reply, Step};
use cf_ssai_core::control::config::{ChannelConfig, CueSource};
use cf_ssai_core::scte35::cues;
use cf_ssai_core::hls::media;
use cf_ssai_core::control::metrics::{self as core_metrics, Batch, PendingBatches};
use cf_ssai_core::model::{BreakRecord, BreakSource, Pod, Slate};
use cf_ssai_core::channel::monitor::{self, PollStats};
use cf_ssai_core::channel::sequencer::{self, BreakPolicy};
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use worker::*;
use worker_shared::metrics::Level;
use worker_shared::{bindings, now_ms};

const STATE: &str = "state";
const CHANNEL: &str = "channel";
const FAILURES: &str = "poll_failures";
const POLL_STATS: &str = "poll_stats";
/// KV copy lifetime: every poll rewrites it; readers treat a miss as "ask
/// the DO".
const KV_TTL_S: u64 = 300;
/// Pods outlive any view that names them (entries leave the view
/// `keep_ms` after their end).
const POD_TTL_S: u64 = 86_400;

pub use worker_shared::channel_client::{
    ChannelRef, CueCommand, CueRequest, CueResponse, SyncRequest,
};

#[durable_object]
pub struct ChannelDO {
    state: State,
    env: Env,
    /// The polled media playlist URL and when it was resolved from the
    /// master (re-resolved every minute and after any failure).
    media_url: RefCell<Option<(String, i64)>>,
    /// When the current poll was due (phase-locked alarms).
    due_ms: Cell<Option<i64>>,
    /// D1 already shows this channel healthy (skip the write per poll).
    health_synced: Cell<bool>,
    /// An alarm (poll) is running: workerd clears the alarm while its
    /// handler runs, so "no alarm set" alone does not mean stopped.
    polling: Cell<bool>,
    /// Requests served since this object loaded, by path: how much of the
    /// edge's traffic reaches the one consistent object (fan-in checks).
    served: RefCell<std::collections::BTreeMap<String, u64>>,
    /// Decisions in flight, by break id: every caller waiting for a break's
    /// pod awaits the same one call.
    inflight: RefCell<HashMap<String, Shared<LocalBoxFuture<'static, Pod>>>>,
    /// The newest MSN whose media this poller examined for in-band
    /// SCTE-35 (`cue_source: inband | both`).
    inband_seen: Cell<Option<u64>>,
    /// Poll metrics not yet written (flushed every [`METRICS_FLUSH_MS`]:
    /// a poll every 2 s must not be a D1 write every 2 s).
    metrics: RefCell<PendingBatches>,
}

/// Segments a poll examines for in-band SCTE-35 at most.
const INBAND_PER_POLL: usize = 3;

/// How often a poller writes its accumulated metrics.
const METRICS_FLUSH_MS: i64 = 10_000;

impl DurableObject for ChannelDO {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            media_url: RefCell::new(None),
            due_ms: Cell::new(None),
            health_synced: Cell::new(false),
            polling: Cell::new(false),
            served: RefCell::new(Default::default()),
            inflight: RefCell::new(HashMap::new()),
            metrics: RefCell::new(PendingBatches::default()),
            inband_seen: Cell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        *self.served.borrow_mut().entry(path.clone()).or_default() += 1;
        match (req.method(), path.as_str()) {
            (Method::Get, "/state") => Response::from_json(&self.load().await?.breaks),
            (Method::Get, "/poll-stats") => {
                let stats: PollStats = self
                    .state
                    .storage()
                    .get(POLL_STATS)
                    .await?
                    .unwrap_or_default();
                let running =
                    self.polling.get() || self.state.storage().get_alarm().await?.is_some();
                let served = self.served.borrow().clone();
                Response::from_json(
                    &serde_json::json!({ "running": running, "stats": stats, "requests": served }),
                )
            }
            (Method::Post, "/sync") => {
                let body: SyncRequest = req.json().await?;
                self.remember(&body.channel).await?;
                let st = self.sync(&body).await?;
                Response::from_json(&st.breaks)
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
                let running = self.polling.get() || storage.get_alarm().await?.is_some();
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
        self.polling.set(true);
        let polled = self.poll().await;
        self.polling.set(false);
        let next = match polled {
            Ok(next) => next,
            Err(e) => {
                worker_shared::metrics::log(
                    Level::Error,
                    "poll_step_failed",
                    &[("reason", &e.to_string())],
                );
                // Back off on failure; the cron restarts a stopped poller.
                Some(now_ms() + 10_000)
            }
        };
        if let Some(at) = next {
            let when = worker::js_sys::Date::new(&(at as f64).into());
            self.state
                .storage()
                .set_alarm(ScheduledTime::new(when))
                .await?;
        } else {
            self.due_ms.set(None);
        }
        Response::ok("polled")
    }
}

/// What one successful poll found.
struct PollOutcome {
    cadence_ms: u64,
    registered: i64,
    latency_ms: Option<i64>,
    dialects: Vec<String>,
}

/// The deadline when the cadence is derived and the poll failed: the
/// common default.
fn stats_cadence(o: &std::result::Result<PollOutcome, String>) -> u64 {
    o.as_ref().map_or(2000, |o| o.cadence_ms)
}

/// How long the DO waits for a decision (the service's budget is at most
/// 10 s, `decision_timeout_ms`): past it the break gets slate and the
/// poller goes on.
const DECISION_DEADLINE_MS: u64 = 11_000;
const MEDIA_URL_TTL_MS: i64 = 60_000;

impl ChannelDO {
    async fn load(&self) -> Result<Channel> {
        Ok(self.state.storage().get(STATE).await?.unwrap_or_default())
    }

    async fn remember(&self, c: &ChannelRef) -> Result<()> {
        let have: Option<ChannelRef> = self.state.storage().get(CHANNEL).await?;
        if have.is_none() {
            self.state.storage().put(CHANNEL, c).await?;
        }
        Ok(())
    }

    async fn policy(&self, c: &ChannelRef) -> BreakPolicy {
        worker_shared::load_channel(&self.env, &c.org, &c.slug)
            .await
            .ok()
            .flatten()
            .map(|c| c.config.breaks)
            .unwrap_or_default()
    }

    /// Drive the machine with one input: load, handle, carry out the
    /// effects; then wait for every decision this channel has in flight and
    /// feed each back. Between a load and its save only storage calls run
    /// (workerd holds other events back during those), so no step sees a
    /// half-applied state; the decision fetches happen between steps.
    async fn run(
        &self,
        c: &ChannelRef,
        input: Input,
        policy: &BreakPolicy,
    ) -> Result<(Step, Channel)> {
        let mut ch = self.load().await?;
        let step = ch.handle(input, policy, now_ms());
        self.apply(c, &ch, &step).await?;
        // Decisions: the machine asked for these; pending breaks without a
        // call in flight (this object was evicted mid-decision) too.
        let mut wanted: Vec<BreakRecord> = step
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Decide(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        for p in &ch.pending {
            if !wanted.iter().any(|r| r.id == p.record.id) {
                wanted.push(p.record.clone());
            }
        }
        let calls: Vec<(String, Shared<LocalBoxFuture<'static, Pod>>)> = wanted
            .into_iter()
            .map(|r| {
                let id = r.id.clone();
                let fut = self
                    .inflight
                    .borrow_mut()
                    .entry(id.clone())
                    .or_insert_with(|| {
                        decide(self.env.clone(), c.clone(), r)
                            .boxed_local()
                            .shared()
                    })
                    .clone();
                (id, fut)
            })
            .collect();
        if calls.is_empty() {
            // Nothing was awaited: the state this step saved is current.
            return Ok((step, ch));
        }
        for (id, fut) in calls {
            let pod = fut.await;
            self.inflight.borrow_mut().remove(&id);
            let mut now = self.load().await?;
            let s = now.handle(Input::Decided { break_id: id, pod }, policy, now_ms());
            self.apply(c, &now, &s).await?;
        }
        Ok((step, self.load().await?))
    }

    /// Carry out a step's effects (decisions excepted: see [`Self::run`]).
    async fn apply(&self, c: &ChannelRef, ch: &Channel, step: &Step) -> Result<()> {
        for e in &step.effects {
            match e {
                Effect::Persist => self.state.storage().put(STATE, ch).await?,
                Effect::Publish => {
                    // The view edge nodes read; written only when it changed.
                    // As JSON text: KV's own conversion goes through
                    // serde-wasm-bindgen, which writes flattened structs
                    // as JS Maps (and so as `{}`).
                    let kv = self.env.kv(bindings::KV)?;
                    let view = serde_json::to_string(&ch.view())?;
                    kv.put(&worker_shared::kv_breaks_key(&c.org, &c.slug), view)?
                        .expiration_ttl(KV_TTL_S)
                        .execute()
                        .await?;
                }
                Effect::History(entry) => {
                    // The pod under its own key first (immutable; the view
                    // published next refers to it), then the history.
                    let kv = self.env.kv(bindings::KV)?;
                    kv.put(
                        &worker_shared::kv_pod_key(&c.org, &c.slug, &entry.record.id),
                        serde_json::to_string(&entry.pod)?,
                    )?
                    .expiration_ttl(POD_TTL_S)
                    .execute()
                    .await?;
                    self.history(c, entry).await
                }
                Effect::Decide(_) => {}
            }
        }
        Ok(())
    }

    async fn sync(&self, req: &SyncRequest) -> Result<Channel> {
        let policy = self.policy(&req.channel).await;
        Ok(self.run(&req.channel, sync_input(req), &policy).await?.1)
    }

    async fn cue(&self, req: CueRequest) -> Result<CueResponse> {
        let policy = self.policy(&req.channel).await;
        let input = match req.kind {
            CueCommand::Stop => Input::CueStop {
                at_msn: req.anchor_msn,
            },
            kind => Input::CueStart(BreakRecord {
                id: req.break_id.clone(),
                source: if kind == CueCommand::Schedule {
                    BreakSource::Scheduled
                } else {
                    BreakSource::Manual
                },
                anchor_msn: req.anchor_msn,
                anchor_pdt_ms: req.anchor_pdt_ms,
                duration_ms: req.duration_ms,
                cadence_ms: req.cadence_ms,
                segment_count: cf_ssai_core::model::segments_for(req.duration_ms, req.cadence_ms),
                cut_after: None,
                disc_before: 0,
                merged: Vec::new(),
                registered_ms: now_ms(),
                asset: Default::default(),
            }),
        };
        let (step, ch) = self.run(&req.channel, input, &policy).await?;
        // The record as committed (its discontinuity count is final once
        // decided); the reply's own copy while it is still pending.
        let committed = |r: BreakRecord| {
            sequencer::find(&ch.breaks, &r.id)
                .and_then(|i| ch.breaks.entries.get(i))
                .map_or(r, |e| e.record.clone())
        };
        let resp = |status: u16, error: Option<String>, record: Option<BreakRecord>| CueResponse {
            status,
            error,
            record,
        };
        Ok(match step.reply {
            Reply::Created(r) => resp(201, None, Some(committed(r))),
            Reply::Existing(r) | Reply::Stopped(r) => resp(200, None, Some(committed(r))),
            Reply::Conflict(e) => resp(409, Some(e), None),
            Reply::None => resp(500, Some("no reply".into()), None),
        })
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
    /// In-band SCTE-35 of the window's unexamined segments, oldest first,
    /// at most [`INBAND_PER_POLL`] per poll (a first poll catches up over
    /// two or three). TS segments are read whole (a SCTE-35 packet can be
    /// anywhere); fMP4 ones only their first 256 KiB (`emsg` boxes come
    /// before the fragment's `moof`). Returns the events and the newest
    /// MSN examined: a segment that cannot be read stops the walk, so the
    /// watermark never passes a segment nobody looked into.
    async fn inband(
        &self,
        c: &ChannelRef,
        cfg: &ChannelConfig,
        playlist_url: &str,
        m: &media::MediaPlaylist<'_>,
        cadence: u64,
    ) -> (Vec<cues::CueEvent>, Option<u64>) {
        // A fresh instance (first poll, or after an eviction) resumes from
        // the watermark the machine persisted, not from the newest
        // segments: a cue in a segment examined by nobody, which the edge
        // holds back as unread, must still be found.
        let seen = match self.inband_seen.get() {
            Some(s) => Some(s),
            None => {
                let persisted = self
                    .load()
                    .await
                    .ok()
                    .map(|ch| ch.breaks.checked_through_msn);
                let w = cf_ssai_core::scte35::inband::resume_watermark(
                    persisted,
                    m.segments.first().map(|s| s.msn),
                    m.last_msn(),
                );
                self.inband_seen.set(w);
                worker_shared::metrics::log(
                    Level::Info,
                    "inband_resume",
                    &[
                        ("org", &c.org),
                        ("channel", &c.slug),
                        ("persisted", &format!("{persisted:?}")),
                        ("from", &format!("{w:?}")),
                    ],
                );
                w
            }
        };
        let mut events = Vec::new();
        let mut through = seen.filter(|s| m.segments.first().is_some_and(|f| *s + 1 >= f.msn));
        let Ok(base) = url::Url::parse(playlist_url) else {
            return (events, through);
        };
        let private = worker_shared::private_policy(&self.env);
        // A poller with no history starts at the newest segments (the older
        // ones were served before it ran: nothing to protect any more).
        let unseen: Vec<_> = m
            .segments
            .iter()
            .filter(|s| seen.is_none_or(|n| s.msn > n))
            .collect();
        let skip = if seen.is_none() {
            unseen.len().saturating_sub(INBAND_PER_POLL)
        } else {
            0
        };
        for seg in unseen.into_iter().skip(skip).take(INBAND_PER_POLL) {
            let uri = m
                .tokens
                .lines
                .get(seg.uri_line)
                .map(|l| l.raw().trim())
                .unwrap_or_default();
            let Ok(seg_url) = base.join(uri) else { break };
            let fmp4 = seg.map.is_some();
            let range = [("Range", "bytes=0-262143")];
            let spec = worker_shared::FetchSpec {
                headers: if fmp4 { &range } else { &[] },
                max_bytes: 16 << 20,
                ..worker_shared::FetchSpec::get(seg_url.as_str(), cfg.origin_timeout_ms, &private)
            };
            let got = match worker_shared::fetch(&spec).await {
                Ok(f) if f.ok() => f,
                Ok(f) => {
                    worker_shared::metrics::log(
                        Level::Warn,
                        "inband_segment_failed",
                        &[
                            ("org", &c.org),
                            ("channel", &c.slug),
                            ("reason", &format!("{seg_url}: HTTP {}", f.status)),
                        ],
                    );
                    break;
                }
                Err(e) => {
                    worker_shared::metrics::log(
                        Level::Warn,
                        "inband_segment_failed",
                        &[
                            ("org", &c.org),
                            ("channel", &c.slug),
                            ("reason", &format!("{seg_url}: {e}")),
                        ],
                    );
                    break;
                }
            };
            let (evs, warnings) = cf_ssai_core::scte35::inband::detect_segment(
                &got.body,
                seg.msn,
                seg.pdt_ms,
                cadence,
                &cfg.segmentation,
            );
            for w in warnings {
                worker_shared::metrics::log(
                    Level::Warn,
                    "inband_section_refused",
                    &[("org", &c.org), ("channel", &c.slug), ("reason", &w)],
                );
            }
            for e in &evs {
                worker_shared::metrics::log(
                    Level::Info,
                    "inband_cue",
                    &[
                        ("org", &c.org),
                        ("channel", &c.slug),
                        ("break_id", &e.break_id),
                        ("msn", &e.msn.to_string()),
                    ],
                );
            }
            events.extend(evs);
            through = Some(seg.msn);
            self.inband_seen.set(Some(seg.msn));
        }
        (events, through)
    }

    /// Add to this channel's pending metrics; write them when due.
    async fn note(&self, c: &ChannelRef, f: impl FnOnce(&mut Batch)) {
        let now = now_ms();
        let due = {
            let mut p = self.metrics.borrow_mut();
            f(p.batch(&c.org, &c.slug, now));
            p.take_due(now, METRICS_FLUSH_MS, false)
        };
        for (org, channel, minute, b) in due {
            worker_shared::metrics::record(&self.env, &org, &channel, minute, &b).await;
        }
    }

    async fn backoff(&self, cadence_ms: u64) -> u64 {
        let storage = self.state.storage();
        let n: u32 = storage.get(FAILURES).await.ok().flatten().unwrap_or(0) + 1;
        let _ = storage.put(FAILURES, n).await;
        (cadence_ms.max(1000) << n.min(6)).min(60_000)
    }

    /// One poll of the origin; returns when the next is due (`None`: the
    /// channel no longer needs a poller).
    async fn poll(&self) -> Result<Option<i64>> {
        let storage = self.state.storage();
        let Some(c): Option<ChannelRef> = storage.get(CHANNEL).await? else {
            return Ok(None);
        };
        let Some(ch) = worker_shared::load_channel(&self.env, &c.org, &c.slug).await? else {
            return Ok(None);
        };
        let cfg = &ch.config;
        if !cfg.active || !cfg.scte35_enabled {
            return Ok(None);
        }
        let started = now_ms();
        let outcome = self.poll_once(&c, cfg).await;
        let finished = now_ms();
        let mut stats: PollStats = storage.get(POLL_STATS).await?.unwrap_or_default();
        let deadline = if cfg.cadence_ms > 0 {
            cfg.cadence_ms
        } else {
            stats_cadence(&outcome)
        };
        stats.record(started, finished - started, outcome.is_ok(), deadline);
        if let Err(e) = &outcome {
            stats.last_error = Some(format!("{e} (at {started})"));
        }
        let next = match outcome {
            Ok(o) => {
                let failures: u32 = storage.get(FAILURES).await.ok().flatten().unwrap_or(0);
                if failures > 0 || !self.health_synced.get() {
                    crate::origin::mark_health(&self.env, &c, true, "").await;
                    self.health_synced.set(true);
                    storage.put(FAILURES, 0u32).await?;
                }
                self.note(&c, |b| {
                    b.add("polls_total", &[], 1.0);
                    if o.registered > 0 {
                        if let Some(lat) = o.latency_ms {
                            b.observe("detection_latency_ms", &[], lat as f64);
                        }
                        for d in &o.dialects {
                            b.add("cues_total", &[("dialect", d)], 1.0);
                        }
                    }
                })
                .await;
                let interval = monitor::poll_interval_ms(cfg.poll_interval_ms, o.cadence_ms);
                let due = monitor::next_due_ms(self.due_ms.get(), interval, now_ms());
                self.due_ms.set(Some(due));
                due
            }
            Err(e) => {
                crate::origin::mark_health(&self.env, &c, false, &e).await;
                self.health_synced.set(false);
                self.media_url.replace(None);
                self.note(&c, |b| b.add("poll_errors_total", &[], 1.0))
                    .await;
                worker_shared::metrics::log(
                    Level::Warn,
                    "poll_failed",
                    &[("org", &c.org), ("channel", &c.slug), ("reason", &e)],
                );
                // The backoff pause is not a missed cadence: restart the gap.
                stats.restart();
                self.due_ms.set(None);
                now_ms() + self.backoff(cfg.cadence_ms).await as i64
            }
        };
        storage.put(POLL_STATS, &stats).await?;
        Ok(Some(next))
    }

    /// Fetch, detect, register. Errors are the origin's (unreachable,
    /// 5xx, not a playlist).
    async fn poll_once(
        &self,
        c: &ChannelRef,
        cfg: &ChannelConfig,
    ) -> std::result::Result<PollOutcome, String> {
        let now = now_ms();
        let cached = self
            .media_url
            .borrow()
            .as_ref()
            .filter(|(_, at)| now - at < MEDIA_URL_TTL_MS)
            .map(|(u, _)| u.clone());
        let url = match cached {
            Some(u) => u,
            None => {
                let u = crate::origin::media_url_for_poll(
                    cfg,
                    &worker_shared::private_policy(&self.env),
                )
                .await?;
                self.media_url.replace(Some((u.clone(), now)));
                u
            }
        };
        let text = worker_shared::get_text(
            &url,
            cfg.origin_timeout_ms,
            &worker_shared::private_policy(&self.env),
        )
        .await
        .map_err(|e| format!("origin {url}: {e}"))?;
        let m = media::parse(&text).map_err(|e| format!("origin {url}: {e}"))?;
        let cadence = crate::origin::cadence_ms(cfg, &m);
        let mut det = cues::detect(&m, &cfg.segmentation);
        let mut examined = m.last_msn();
        if cfg.cue_source.inband() {
            // The media is the marker: examine the segments this poller has
            // not seen; the watermark is the newest one examined.
            let (events, through) = self.inband(c, cfg, &url, &m, cadence).await;
            if cfg.cue_source == CueSource::Inband {
                det.events.clear();
            }
            det.events.extend(events);
            examined = through;
        }
        let req = SyncRequest {
            channel: c.clone(),
            events: det.events.clone(),
            cadence_ms: cadence,
            checked_through_msn: examined,
            window: sequencer::OriginWindow::of(&m),
        };
        let (step, ch) = self
            .run(c, sync_input(&req), &cfg.breaks)
            .await
            .map_err(|e| e.to_string())?;
        let new: Vec<_> = ch
            .breaks
            .entries
            .iter()
            .filter(|e| step.registered.contains(&e.record.id))
            .collect();
        // Detection latency: from when the cue's segment was published
        // (its PDT + one segment: origins publish complete segments) to
        // registration; negative when signalled ahead of the splice.
        let latency_ms = det
            .events
            .iter()
            .filter(|ev| new.iter().any(|e| e.record.id == ev.break_id))
            .filter_map(|ev| {
                let seg = m.segments.iter().find(|s| s.msn == ev.msn)?;
                let published = seg.pdt_ms? + (seg.duration * 1000.0) as i64;
                let reg = new.iter().find(|e| e.record.id == ev.break_id)?;
                Some(reg.record.registered_ms - published)
            })
            .max();
        let mut dialects: Vec<String> = det
            .events
            .iter()
            .filter(|ev| new.iter().any(|e| e.record.id == ev.break_id))
            .filter_map(|ev| {
                serde_json::to_value(ev.dialect)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
            })
            .collect();
        dialects.dedup();
        Ok(PollOutcome {
            cadence_ms: cadence,
            registered: new.len() as i64,
            latency_ms,
            dialects,
        })
    }
}

/// One decision for a break, from the decision service; slate-only (an
/// empty slate keeps the content) when it fails or times out.
async fn decide(env: Env, c: ChannelRef, r: BreakRecord) -> Pod {
    use cf_ssai_core::ads::reason::Reason;
    use cf_ssai_core::ads::request::{BreakKind, DecisionRequest, Viewer};
    let request = DecisionRequest {
        org: c.org.clone(),
        channel: c.slug.clone(),
        break_id: r.id.clone(),
        duration_s: r.duration_ms as f64 / 1000.0,
        cadence_ms: Some(r.cadence_ms),
        kind: match r.source {
            BreakSource::Scte35 => BreakKind::Scte35,
            BreakSource::Manual => BreakKind::Cue,
            BreakSource::Scheduled => BreakKind::Scheduled,
        },
        start_ms: r.anchor_pdt_ms,
        viewer: Viewer::default(),
        asset: r.asset.clone(),
    };
    let attempt = async {
        let body = serde_json::to_string(&request)?;
        // The service keeps its own budget; this deadline is the
        // poller's guarantee that a stuck call cannot stall it.
        let mut resp = worker_shared::call_internal(
            &env,
            bindings::DECISION,
            "https://decision/decision",
            Method::Post,
            Some(body.to_string()),
            DECISION_DEADLINE_MS,
        )
        .await?;
        if resp.status_code() != 200 {
            return Err(Error::RustError(format!(
                "decision HTTP {}",
                resp.status_code()
            )));
        }
        resp.json::<Pod>().await
    };
    let started = now_ms();
    let outcome = attempt.await;
    let finished = now_ms();
    let pod = match outcome {
        Ok(p) if p.break_id == r.id => p,
        Ok(p) => Pod::slate_only(
            &r.id,
            r.duration_ms as f64 / 1000.0,
            p.slate,
            Reason::DecisionFailed {
                detail: "decision answered for another break".into(),
            },
        ),
        Err(e) => Pod::slate_only(
            &r.id,
            r.duration_ms as f64 / 1000.0,
            Slate::default(),
            Reason::DecisionFailed {
                detail: format!("decision failed: {e}"),
            },
        ),
    };
    // One metrics write per break: the avail, its fill, the decision's
    // latency as the sequencer saw it, and why ads were skipped.
    let mut b = Batch::default();
    b.observe("decision_latency_ms", &[], (finished - started) as f64);
    core_metrics::record_pod(&mut b, r.duration_ms, &pod);
    worker_shared::metrics::record(&env, &c.org, &c.slug, finished, &b).await;
    log_pod(&c, &pod);
    pod
}

/// A JSON log line per skip reason, and one for a break left to slate.
fn log_pod(c: &ChannelRef, pod: &Pod) {
    use cf_ssai_core::ads::reason;
    for reason in pod.reasons.iter().filter(|r| reason::is_skip(&r.code)) {
        worker_shared::metrics::log(
            Level::Info,
            "ad_skipped",
            &[
                ("org", &c.org),
                ("channel", &c.slug),
                ("break_id", &pod.break_id),
                ("kind", &reason.code),
                ("reason", &reason.message),
            ],
        );
    }
    if pod.items.is_empty() {
        worker_shared::metrics::log(
            Level::Warn,
            "break_fallback_to_slate",
            &[
                ("org", &c.org),
                ("channel", &c.slug),
                ("break_id", &pod.break_id),
                ("reason", pod.reasons.last().map_or("", |r| &r.message)),
            ],
        );
    }
}

/// A window examined by a viewer's request or the poller, as the machine's
/// input.
fn sync_input(req: &SyncRequest) -> Input {
    Input::Window {
        events: req.events.clone(),
        cadence_ms: req.cadence_ms,
        examined_through: req.checked_through_msn,
        window: req.window.clone(),
    }
}
