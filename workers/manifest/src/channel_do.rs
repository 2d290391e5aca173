//! The Channel Durable Object: a driver of the channel machine
//! (`core::channel`). It loads the machine's state from storage once per
//! instance, feeds it inputs (requests, alarms, poll outcomes, decisions)
//! and carries out what each step asks: persist what changed (a small
//! header and a key per break, `core::channel::store`), publish the view
//! to KV, record history, ask for decisions, poll the origin, report
//! health and arm the alarm at the time the machine wants. The clock,
//! retries, backoff, health and watermarks are the machine's state.

use cf_ssai_core::ads::request::Viewer;
use cf_ssai_core::channel::monitor;
use cf_ssai_core::channel::sequencer::{self, BreakPolicy};
use cf_ssai_core::channel::store::{self, Write};
use cf_ssai_core::channel::{Channel, Effect, Input, PollFailure, Polled, Reply, Step};
use cf_ssai_core::control::config::{ChannelConfig, CueSource};
use cf_ssai_core::control::metrics::{self as core_metrics, Batch, PendingBatches};
use cf_ssai_core::hls::media;
use cf_ssai_core::model::{BreakRecord, BreakSource, ChannelBreaks, Pod, Slate};
use cf_ssai_core::scte35::cues;
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use worker::*;
use worker_shared::channel_client::CohortReport;
use worker_shared::metrics::Level;
use worker_shared::{bindings, now_ms};

const CHANNEL: &str = "channel";
/// KV copy lifetime: every poll rewrites it; readers treat a miss as "ask
/// the DO".
const KV_TTL_S: u64 = 300;
/// Pods outlive any view that names them (entries leave the view
/// `keep_ms` after their end).
const POD_TTL_S: u64 = 86_400;
/// Durable Object storage takes at most this many keys per `put`.
const PUT_BATCH: usize = 128;

pub use worker_shared::channel_client::{
    ChannelRef, CueCommand, CueRequest, CueResponse, SyncRequest,
};

#[durable_object]
pub struct ChannelDO {
    state: State,
    env: Env,
    /// The machine, loaded once per instance, and what storage holds (the
    /// image the next write is the difference from).
    machine: RefCell<Option<Loaded>>,
    /// This instance has told the machine it is a new instance.
    resumed: Cell<bool>,
    /// The alarm this instance last set (`None`: none or not known).
    alarm_at: Cell<Option<i64>>,
    /// The polled media playlist URL and when it was resolved from the
    /// master (re-resolved every minute and after any failure).
    media_url: RefCell<Option<(String, i64)>>,
    /// An alarm (poll) is running: workerd clears the alarm while its
    /// handler runs, so "no alarm set" alone does not mean stopped; the
    /// handler arms the next alarm when it ends.
    polling: Cell<bool>,
    /// Requests served since this object loaded, by path: how much of the
    /// edge's traffic reaches the one consistent object (fan-in checks).
    served: RefCell<std::collections::BTreeMap<String, u64>>,
    /// Decisions in flight, by break id: every caller waiting for a break's
    /// pod awaits the same one call.
    inflight: RefCell<HashMap<String, Shared<LocalBoxFuture<'static, Decision>>>>,
    /// This instance logged where its in-band examination resumed.
    inband_logged: Cell<bool>,
    /// Poll metrics not yet written (flushed every [`METRICS_FLUSH_MS`]:
    /// a poll every 2 s must not be a D1 write every 2 s).
    metrics: RefCell<PendingBatches>,
}

/// The machine and the state storage holds.
struct Loaded {
    ch: Channel,
    stored: Option<Channel>,
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
            machine: RefCell::new(None),
            resumed: Cell::new(false),
            alarm_at: Cell::new(None),
            media_url: RefCell::new(None),
            polling: Cell::new(false),
            served: RefCell::new(Default::default()),
            inflight: RefCell::new(HashMap::new()),
            metrics: RefCell::new(PendingBatches::default()),
            inband_logged: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        *self.served.borrow_mut().entry(path.clone()).or_default() += 1;
        match (req.method(), path.as_str()) {
            (Method::Get, "/state") => {
                self.ensure_loaded().await?;
                Response::from_json(&self.read(|ch| ch.breaks.clone()))
            }
            (Method::Get, "/poll-stats") => {
                self.ensure_loaded().await?;
                let (stats, wanted) = self.read(|ch| (ch.poller.stats.clone(), ch.poller.running));
                let running = self.polling.get()
                    || (wanted && self.state.storage().get_alarm().await?.is_some());
                let served = self.served.borrow().clone();
                Response::from_json(
                    &serde_json::json!({ "running": running, "stats": stats, "requests": served }),
                )
            }
            (Method::Post, "/sync") => {
                let body: SyncRequest = req.json().await?;
                self.remember(&body.channel).await?;
                let breaks = self.sync(&body).await?;
                // The answer as the asking viewer's cohort is served.
                Response::from_json(&breaks.for_cohort(&body.cohort))
            }
            (Method::Post, "/cohort") => {
                let body: CohortReport = req.json().await?;
                self.remember(&body.channel).await?;
                let policy = self.policy(&body.channel).await;
                let before = self.read(|ch| ch.cohort_overflow);
                let input = Input::CohortSeen {
                    viewer: body.viewer,
                };
                // A step, not `run`: a report never waits for the
                // decisions of pending breaks (the edge's request does).
                self.step(&body.channel, input, &policy).await?;
                let (after, cohorts) = self.read(|ch| (ch.cohort_overflow, ch.cohorts.len()));
                if after > before {
                    let mut b = Batch::default();
                    b.add("cohort_overflow_total", &[], (after - before) as f64);
                    let c = &body.channel;
                    worker_shared::metrics::record(&self.env, &c.org, &c.slug, now_ms(), &b).await;
                }
                Response::from_json(&serde_json::json!({ "cohorts": cohorts, "overflow": after }))
            }
            (Method::Post, "/cue") => {
                let body: CueRequest = req.json().await?;
                self.remember(&body.channel).await?;
                Response::from_json(&self.cue(body).await?)
            }
            (Method::Post, "/ensure-poller") => {
                let body: ChannelRef = req.json().await?;
                self.remember(&body).await?;
                let alarm_set =
                    self.polling.get() || self.state.storage().get_alarm().await?.is_some();
                if !alarm_set {
                    // Whatever this instance set has fired or was lost.
                    self.alarm_at.set(None);
                }
                let policy = self.policy(&body).await;
                let (step, _) = self
                    .run(&body, Input::StartPoller { alarm_set }, &policy)
                    .await?;
                let started = matches!(step.reply, Reply::Poller { started: true });
                Response::from_json(&serde_json::json!({ "started": started }))
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
        // The alarm that fired is no longer set.
        self.alarm_at.set(None);
        self.polling.set(true);
        let ticked = self.tick().await;
        self.polling.set(false);
        if let Err(e) = ticked {
            worker_shared::metrics::log(
                Level::Error,
                "poll_step_failed",
                &[("reason", &e.to_string())],
            );
            // Storage failed mid-step: reload from storage next time, and
            // come back (the cron restarts a stopped poller anyway).
            self.machine.replace(None);
            self.resumed.set(false);
            self.set_alarm(Some(now_ms() + 10_000)).await?;
            return Response::ok("polled");
        }
        let at = self.read(Channel::alarm_ms);
        self.arm(at).await?;
        Response::ok("polled")
    }
}

/// What one successful poll found, for the metrics and logs (the machine
/// gets the [`Polled`]).
struct PollFacts {
    polled: Polled,
    /// Each cue's break id, when its segment was published (PDT + its
    /// duration) and its dialect.
    cues: Vec<(String, Option<i64>, String)>,
}

/// How long the DO waits for a decision (the service's budget is at most
/// 10 s, `decision_timeout_ms`): past it the break gets slate and the
/// poller goes on.
const DECISION_DEADLINE_MS: u64 = 11_000;
const MEDIA_URL_TTL_MS: i64 = 60_000;

impl ChannelDO {
    /// Load the machine once per instance: the per-key layout, else the
    /// legacy single value (migrated and written in the new layout once),
    /// else a new channel.
    async fn ensure_loaded(&self) -> Result<()> {
        if self.machine.borrow().is_some() {
            return Ok(());
        }
        let storage = self.state.storage();
        let all = storage.list().await?;
        let mut pairs: Vec<(String, String)> = Vec::new();
        all.for_each(&mut |v, k| {
            if let (Some(k), Some(v)) = (k.as_string(), v.as_string()) {
                pairs.push((k, v));
            }
        });
        let found = store::load(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| Error::RustError(e.to_string()))?;
        let loaded = match found {
            Some(ch) => Loaded {
                stored: Some(ch.clone()),
                ch,
            },
            None => {
                let old: Option<Channel> = storage.get(store::LEGACY_STATE).await?;
                let stats = storage.get(store::LEGACY_POLL_STATS).await.ok().flatten();
                let failures = storage.get(store::LEGACY_FAILURES).await.ok().flatten();
                let alarm = storage.get_alarm().await?;
                let legacy = old.is_some() || stats.is_some();
                let ch = store::migrate(old.unwrap_or_default(), stats, failures, alarm);
                if legacy {
                    // Written in the new layout once, the old keys dropped.
                    let writes =
                        store::diff(None, &ch).map_err(|e| Error::RustError(e.to_string()))?;
                    let bytes: usize = writes.iter().map(Write::bytes).sum();
                    self.write(&writes).await?;
                    storage
                        .delete_multiple(vec![
                            store::LEGACY_STATE,
                            store::LEGACY_POLL_STATS,
                            store::LEGACY_FAILURES,
                        ])
                        .await?;
                    worker_shared::metrics::log(
                        Level::Info,
                        "do_storage_migrated",
                        &[
                            ("keys", &writes.len().to_string()),
                            ("bytes", &bytes.to_string()),
                        ],
                    );
                    Loaded {
                        stored: Some(ch.clone()),
                        ch,
                    }
                } else {
                    Loaded { ch, stored: None }
                }
            }
        };
        // Another event may have loaded it while this one awaited storage.
        let mut m = self.machine.borrow_mut();
        if m.is_none() {
            *m = Some(loaded);
        }
        Ok(())
    }

    /// Read the loaded machine.
    fn read<T>(&self, f: impl FnOnce(&Channel) -> T) -> T {
        match self.machine.borrow().as_ref() {
            Some(l) => f(&l.ch),
            None => f(&Channel::default()),
        }
    }

    /// Carry out storage writes: puts in batches, then deletes.
    async fn write(&self, writes: &[Write]) -> Result<()> {
        let storage = self.state.storage();
        let puts: Vec<(&String, &String)> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Put { key, value } => Some((key, value)),
                Write::Delete(_) => None,
            })
            .collect();
        for chunk in puts.chunks(PUT_BATCH) {
            let obj = js_sys::Object::new();
            for (k, v) in chunk {
                js_sys::Reflect::set(&obj, &k.as_str().into(), &v.as_str().into())
                    .map_err(|_| Error::RustError("storage batch".into()))?;
            }
            storage.put_multiple_raw(obj).await?;
        }
        let deletes: Vec<&str> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Delete(k) => Some(k.as_str()),
                Write::Put { .. } => None,
            })
            .collect();
        if !deletes.is_empty() {
            storage.delete_multiple(deletes).await?;
        }
        Ok(())
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
            .map(|c| policy_of(&c.config))
            .unwrap_or_default()
    }

    /// One step of the machine: handle the input (synchronously, on the
    /// loaded state), then carry out its effects in order. Concurrent
    /// events always step the newest state: nothing is awaited between a
    /// step and the state it leaves in memory.
    async fn step(&self, c: &ChannelRef, input: Input, policy: &BreakPolicy) -> Result<Step> {
        self.ensure_loaded().await?;
        let (step, writes, view) = {
            let mut m = self.machine.borrow_mut();
            let Some(l) = m.as_mut() else {
                return Err(Error::RustError("channel state not loaded".into()));
            };
            let step = l.ch.handle(input, policy, now_ms());
            let writes = if step.effects.contains(&Effect::Persist) {
                let w = store::diff(l.stored.as_ref(), &l.ch)
                    .map_err(|e| Error::RustError(e.to_string()))?;
                l.stored = Some(l.ch.clone());
                w
            } else {
                Vec::new()
            };
            let view = step
                .effects
                .contains(&Effect::Publish)
                .then(|| cf_ssai_core::wire::encode_view(&l.ch.view()));
            (step, writes, view)
        };
        for e in &step.effects {
            match e {
                Effect::Persist => {
                    if let Err(err) = self.write(&writes).await {
                        // Memory is ahead of storage: reload next time.
                        self.machine.replace(None);
                        self.resumed.set(false);
                        return Err(err);
                    }
                }
                Effect::Publish => {
                    // The view edge nodes read; written only when it changed,
                    // binary (`core::wire`: what every playlist request
                    // decodes). Never through KV's own conversion of a
                    // value: serde-wasm-bindgen writes flattened structs as
                    // JS Maps (and so as `{}`).
                    let kv = self.env.kv(bindings::KV)?;
                    if let Some(view) = &view {
                        kv.put_bytes(&worker_shared::kv_breaks_key(&c.org, &c.slug), view)?
                            .expiration_ttl(KV_TTL_S)
                            .execute()
                            .await?;
                    }
                }
                Effect::History(entry) => {
                    // The pod under its own keys first (immutable; the view
                    // published next refers to them), then the history:
                    // the full pod (JSON: beacons, asset lists, the ad
                    // routes) and the lean one the playlist edge reads
                    // (binary, `core::wire`). The full one first: an edge
                    // that finds no lean pod reads it.
                    let kv = self.env.kv(bindings::KV)?;
                    let id = &entry.record.id;
                    kv.put(
                        &worker_shared::kv_pod_key(&c.org, &c.slug, id),
                        serde_json::to_string(&entry.pod)?,
                    )?
                    .expiration_ttl(POD_TTL_S)
                    .execute()
                    .await?;
                    kv.put_bytes(
                        &worker_shared::kv_splice_pod_key(&c.org, &c.slug, id),
                        &cf_ssai_core::wire::encode_lean_pod(&entry.pod),
                    )?
                    .expiration_ttl(POD_TTL_S)
                    .execute()
                    .await?;
                    // Each cohort's pods, before the view names them, at
                    // once; a failed write is logged, not fatal (an edge
                    // that finds no cohort pod asks the DO, which has it).
                    let puts = entry.cohort_pods.iter().map(|(cohort, pod)| {
                        let kv = &kv;
                        async move {
                            let key = |lean| {
                                worker_shared::kv_cohort_pod_key(&c.org, &c.slug, cohort, id, lean)
                            };
                            let full = serde_json::to_string(pod)?;
                            kv.put(&key(false), full)?
                                .expiration_ttl(POD_TTL_S)
                                .execute()
                                .await?;
                            kv.put_bytes(&key(true), &cf_ssai_core::wire::encode_lean_pod(pod))?
                                .expiration_ttl(POD_TTL_S)
                                .execute()
                                .await?;
                            Ok::<(), Error>(())
                        }
                    });
                    for r in futures::future::join_all(puts).await {
                        if let Err(e) = r {
                            worker_shared::metrics::log(
                                Level::Warn,
                                "cohort_pod_write_failed",
                                &[
                                    ("org", &c.org),
                                    ("channel", &c.slug),
                                    ("reason", &e.to_string()),
                                ],
                            );
                        }
                    }
                    self.history(c, entry).await
                }
                // Started by `run`, which waits for them.
                Effect::Decide(_) => {}
            }
        }
        if let Some(h) = &step.health {
            crate::origin::mark_health(
                &self.env,
                c,
                h.is_ok(),
                h.as_ref().err().map_or("", |e| e.0.as_str()),
            )
            .await;
        }
        self.arm(step.alarm_ms).await?;
        Ok(step)
    }

    /// Arm the object's alarm where the machine wants it (not while the
    /// alarm handler runs: it arms the next one when it ends).
    async fn arm(&self, at: Option<i64>) -> Result<()> {
        if self.polling.get() || at == self.alarm_at.get() {
            return Ok(());
        }
        self.set_alarm(at).await
    }

    async fn set_alarm(&self, at: Option<i64>) -> Result<()> {
        let storage = self.state.storage();
        match at {
            Some(t) => {
                let when = worker::js_sys::Date::new(&(t as f64).into());
                storage.set_alarm(ScheduledTime::new(when)).await?;
            }
            None => storage.delete_alarm().await?,
        }
        self.alarm_at.set(at);
        Ok(())
    }

    /// Drive the machine with one input and carry out its effects; then
    /// ask for the decisions it wants (one call per break, shared by every
    /// caller waiting for it) and wait for those this instance has in
    /// flight for its pending breaks, feeding each answer back. The first
    /// input of a new instance is preceded by [`Input::Resumed`]: the
    /// decisions a previous instance had in flight were lost with it.
    async fn run(
        &self,
        c: &ChannelRef,
        input: Input,
        policy: &BreakPolicy,
    ) -> Result<(Step, ChannelBreaks)> {
        let mut wanted: Vec<BreakRecord> = Vec::new();
        self.ensure_loaded().await?;
        if !self.resumed.replace(true) && self.read(|ch| !ch.pending.is_empty()) {
            let s = self.step(c, Input::Resumed, policy).await?;
            wanted.extend(decisions(&s));
        }
        let step = self.step(c, input, policy).await?;
        wanted.extend(decisions(&step));
        let mut calls: Vec<(String, Shared<LocalBoxFuture<'static, Decision>>)> = wanted
            .into_iter()
            .map(|r| {
                let id = r.id.clone();
                let fut = self
                    .inflight
                    .borrow_mut()
                    .entry(id.clone())
                    .or_insert_with(|| {
                        let viewers = self.read(|ch| ch.cohort_viewers(&r));
                        decide_all(self.env.clone(), c.clone(), r, viewers)
                            .boxed_local()
                            .shared()
                    })
                    .clone();
                (id, fut)
            })
            .collect();
        // Breaks still pending whose decision another caller started: wait
        // for the same call (never a second one).
        let pending: Vec<String> = self.read(|ch| ch.pending_ids().map(String::from).collect());
        for id in pending {
            if calls.iter().any(|(x, _)| *x == id) {
                continue;
            }
            let fut = self.inflight.borrow().get(&id).cloned();
            if let Some(f) = fut {
                calls.push((id, f));
            }
        }
        for (id, fut) in calls {
            let (pod, cohort_pods) = fut.await;
            self.inflight.borrow_mut().remove(&id);
            let input = Input::Decided {
                break_id: id,
                pod,
                cohort_pods,
            };
            self.step(c, input, policy).await?;
        }
        Ok((step, self.read(|ch| ch.breaks.clone())))
    }

    async fn sync(&self, req: &SyncRequest) -> Result<ChannelBreaks> {
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
                cohorts: Vec::new(),
            }),
        };
        let (step, breaks) = self.run(&req.channel, input, &policy).await?;
        // The record as committed (its discontinuity count is final once
        // decided); the reply's own copy while it is still pending.
        let committed = |r: BreakRecord| {
            sequencer::find(&breaks, &r.id)
                .and_then(|i| breaks.entries.get(i))
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
            Reply::None | Reply::Poller { .. } => resp(500, Some("no reply".into()), None),
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
        let row = worker_shared::store::breaks::BreakRow {
            slug: c.slug.clone(),
            break_id: e.record.id.clone(),
            source,
            record: serde_json::to_string(&e.record).unwrap_or_default(),
            pod: serde_json::to_string(&e.pod).unwrap_or_default(),
            created_ms: e.record.registered_ms,
        };
        // The history is for operators: a failed write is not the
        // playlist's concern (the break is in KV and DO storage).
        let _ = worker_shared::store::breaks::insert(&db, &c.org, &row).await;
    }

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
        // From the watermark the machine persisted (this instance's or a
        // previous one's: an eviction loses nothing), not from the newest
        // segments: a cue in a segment examined by nobody, which the edge
        // holds back as unread, must still be found. The published
        // watermark stands in for state written before the machine kept
        // its own.
        let persisted =
            self.read(|ch| ch.poller.inband_msn.or(Some(ch.breaks.checked_through_msn)));
        let seen = cf_ssai_core::scte35::inband::resume_watermark(
            persisted,
            m.segments.first().map(|s| s.msn),
            m.last_msn(),
        );
        let mut events = Vec::new();
        let mut examined: Vec<u64> = Vec::new();
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
            examined.push(seg.msn);
        }
        if !self.inband_logged.replace(true) {
            worker_shared::metrics::log(
                Level::Info,
                "inband_resume",
                &[
                    ("org", &c.org),
                    ("channel", &c.slug),
                    ("persisted", &format!("{persisted:?}")),
                    ("from", &format!("{seen:?}")),
                    ("examined", &format!("{examined:?}")),
                    ("cues", &events.len().to_string()),
                ],
            );
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

    /// The alarm: tell the machine ([`Input::Tick`]); poll if it says a
    /// poll is due, and feed the outcome back.
    async fn tick(&self) -> Result<()> {
        let Some(c): Option<ChannelRef> = self.state.storage().get(CHANNEL).await? else {
            return Ok(());
        };
        let ch = worker_shared::load_channel(&self.env, &c.org, &c.slug).await?;
        let policy = ch
            .as_ref()
            .map(|x| policy_of(&x.config))
            .unwrap_or_default();
        let (step, _) = self.run(&c, Input::Tick, &policy).await?;
        if !step.poll {
            return Ok(());
        }
        match ch {
            Some(ch) if ch.config.active && ch.config.scte35_enabled => {
                self.poll(&c, &ch.config).await
            }
            // The channel is no longer polled.
            _ => self.run(&c, Input::StopPoller, &policy).await.map(|_| ()),
        }
    }

    /// One poll of the origin, its outcome fed to the machine (which keeps
    /// the stats, the backoff and the next due time), then the metrics.
    async fn poll(&self, c: &ChannelRef, cfg: &ChannelConfig) -> Result<()> {
        let started = now_ms();
        let outcome = self.poll_once(c, cfg).await;
        let deadline = if cfg.cadence_ms > 0 {
            cfg.cadence_ms
        } else {
            outcome.as_ref().map_or(2000, |o| o.polled.cadence_ms)
        };
        let (input_outcome, cues) = match outcome {
            Ok(f) => (Ok(f.polled), Some(f.cues)),
            Err(e) => {
                self.media_url.replace(None);
                (
                    Err(PollFailure {
                        reason: e,
                        cadence_ms: cfg.cadence_ms,
                    }),
                    None,
                )
            }
        };
        let failed = input_outcome.as_ref().err().map(|f| f.reason.clone());
        let (step, breaks) = self
            .run(
                c,
                Input::Polled {
                    started_ms: started,
                    deadline_ms: deadline,
                    outcome: input_outcome,
                },
                &cfg.breaks,
            )
            .await?;
        match (cues, failed) {
            (Some(cues), _) => {
                let new: Vec<&BreakRecord> = breaks
                    .entries
                    .iter()
                    .map(|e| &e.record)
                    .filter(|r| step.registered.contains(&r.id))
                    .collect();
                // Detection latency: from when the cue's segment was
                // published (its PDT + one segment: origins publish
                // complete segments) to registration; negative when
                // signalled ahead of the splice.
                let latency_ms = cues
                    .iter()
                    .filter_map(|(id, published, _)| {
                        let reg = new.iter().find(|r| r.id == *id)?;
                        Some(reg.registered_ms - (*published)?)
                    })
                    .max();
                let mut dialects: Vec<&str> = cues
                    .iter()
                    .filter(|(id, _, _)| new.iter().any(|r| r.id == *id))
                    .map(|(_, _, d)| d.as_str())
                    .collect();
                dialects.dedup();
                let registered = new.len();
                self.note(c, |b| {
                    b.add("polls_total", &[], 1.0);
                    if registered > 0 {
                        if let Some(lat) = latency_ms {
                            b.observe("detection_latency_ms", &[], lat as f64);
                        }
                        for d in &dialects {
                            b.add("cues_total", &[("dialect", d)], 1.0);
                        }
                    }
                })
                .await;
            }
            (None, Some(e)) => {
                self.note(c, |b| b.add("poll_errors_total", &[], 1.0)).await;
                worker_shared::metrics::log(
                    Level::Warn,
                    "poll_failed",
                    &[("org", &c.org), ("channel", &c.slug), ("reason", &e)],
                );
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// Fetch and detect. Errors are the origin's (unreachable, 5xx, not a
    /// playlist).
    async fn poll_once(
        &self,
        c: &ChannelRef,
        cfg: &ChannelConfig,
    ) -> std::result::Result<PollFacts, String> {
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
        let text = crate::origin::as_media_playlist(text, &url, cfg)
            .map_err(|e| format!("origin {url}: {e}"))?;
        let m = media::parse(&text).map_err(|e| format!("origin {url}: {e}"))?;
        let cadence = crate::origin::cadence_ms(cfg, &m);
        let mut det = cues::detect(&m, &cfg.segmentation);
        let mut examined = m.last_msn();
        let mut inband_through = None;
        if cfg.cue_source.inband() {
            // The media is the marker: examine the segments this poller has
            // not seen; the watermark is the newest one examined.
            let (events, through) = self.inband(c, cfg, &url, &m, cadence).await;
            if cfg.cue_source == CueSource::Inband {
                det.events.clear();
            }
            det.events.extend(events);
            examined = through;
            inband_through = through;
        }
        let cues = det
            .events
            .iter()
            .map(|ev| {
                let published = m
                    .segments
                    .iter()
                    .find(|s| s.msn == ev.msn)
                    .and_then(|s| Some(s.pdt_ms? + (s.duration * 1000.0) as i64));
                let dialect = serde_json::to_value(ev.dialect)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                (ev.break_id.clone(), published, dialect)
            })
            .collect();
        Ok(PollFacts {
            polled: Polled {
                events: det.events,
                cadence_ms: cadence,
                examined_through: examined,
                window: sequencer::OriginWindow::of(&m),
                inband_through,
                interval_ms: monitor::poll_interval_ms(cfg.poll_interval_ms, cadence),
            },
            cues,
        })
    }
}

/// The channel's break policy, with its cohort limit from the targeting
/// config.
fn policy_of(cfg: &cf_ssai_core::control::config::ChannelConfig) -> BreakPolicy {
    let mut p = cfg.breaks.clone();
    p.max_cohorts = cfg.targeting.max_cohorts;
    p
}

/// The decisions a step asks for.
fn decisions(step: &Step) -> impl Iterator<Item = BreakRecord> + '_ {
    step.effects.iter().filter_map(|e| match e {
        Effect::Decide(r) => Some(r.clone()),
        _ => None,
    })
}

/// A break's decisions: the default audience's pod and each cohort's.
type Decision = (Pod, BTreeMap<String, Pod>);

/// The break's decisions, made together: the default audience's and, for
/// each cohort the record names, one with the targeting its viewers share
/// (all at once, so a break with cohorts takes one decision's time). A
/// cohort whose decision fails is left out: its viewers get the default
/// pod, never a slate the default audience would not get.
async fn decide_all(env: Env, c: ChannelRef, r: BreakRecord, viewers: Vec<Viewer>) -> Decision {
    let default = decide(env.clone(), c.clone(), r.clone(), Viewer::default());
    let cohorts = futures::future::join_all(viewers.into_iter().map(|v| {
        let cohort = v.cohort.clone();
        decide_cohort(env.clone(), c.clone(), r.clone(), v).map(move |p| (cohort, p))
    }));
    let (pod, cohort_pods) = futures::join!(default, cohorts);
    let mut b = Batch::default();
    core_metrics::record_cohort_pods(
        &mut b,
        r.duration_ms,
        cohort_pods.iter().map(|(c, p)| (c.as_str(), p.as_ref())),
    );
    if !cohort_pods.is_empty() {
        worker_shared::metrics::record(&env, &c.org, &c.slug, now_ms(), &b).await;
    }
    let cohort_pods = cohort_pods
        .into_iter()
        .filter_map(|(c, p)| Some((c, p?)))
        .collect();
    (pod, cohort_pods)
}

/// One cohort's decision: the pod, or `None` when the service failed or
/// answered slate only for a reason of its own (the default pod serves).
async fn decide_cohort(env: Env, c: ChannelRef, r: BreakRecord, v: Viewer) -> Option<Pod> {
    let pod = decide(env, c, r, v).await;
    let failed_code = cf_ssai_core::ads::reason::Reason::DecisionFailed {
        detail: String::new(),
    }
    .code();
    let failed = pod.items.is_empty() && pod.reasons.iter().any(|x| x.code == failed_code);
    (!failed).then_some(pod)
}

/// One decision for a break, from the decision service; slate-only (an
/// empty slate keeps the content) when it fails or times out.
pub(crate) async fn decide(env: Env, c: ChannelRef, r: BreakRecord, viewer: Viewer) -> Pod {
    decide_within(env, c, r, viewer, DECISION_DEADLINE_MS, None).await
}

/// [`decide`] with the caller's deadline (an asset list's per-viewer
/// decision cannot wait as long as the sequencer).
pub(crate) async fn decide_within(
    env: Env,
    c: ChannelRef,
    r: BreakRecord,
    viewer: Viewer,
    deadline_ms: u64,
    session: Option<cf_ssai_core::ads::request::SessionSeen>,
) -> Pod {
    // The break's default decision is the channel's avail; a cohort's is
    // counted by `decide_all`, a session's own not at all.
    let counted = session.is_none() && viewer.cohort.is_empty();
    use cf_ssai_core::ads::reason::Reason;
    use cf_ssai_core::ads::request::{BreakKind, DecisionRequest};
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
        viewer,
        asset: r.asset.clone(),
        session,
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
            Some(body),
            deadline_ms,
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
    if counted {
        let mut b = Batch::default();
        b.observe("decision_latency_ms", &[], (finished - started) as f64);
        core_metrics::record_pod(&mut b, r.duration_ms, &pod);
        worker_shared::metrics::record(&env, &c.org, &c.slug, finished, &b).await;
    }
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
