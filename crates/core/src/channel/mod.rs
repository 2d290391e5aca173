//! The channel sequencer as one state machine, without I/O (in the spirit of
//! quinn-proto and rustls): an [`Input`] and `now` go in, the state changes,
//! and [`Effect`]s and a [`Reply`] come out. The Channel Durable Object is a
//! thin driver: load, [`Channel::handle`], carry out the effects, save.
//!
//! Why a machine: the DO used to load its state, await the decision service
//! (an outgoing fetch, during which workerd lets other events in) and then
//! save. Concurrent `/cue start`s or viewers' `/sync`s for one new cue each
//! registered and decided the break, and the last save won. Here a decision
//! is an effect whose result comes back later as [`Input::Decided`]: a
//! break is registered once, as *pending*, before anything is awaited; it
//! is neither published nor served until its one decision arrives, and the
//! published watermark (`checked_through_msn`) never passes a pending
//! break, so no edge node trusts a view that lacks it.
//!
//! The machine owns its clock too: the poller's schedule (the object's
//! alarm), backoff after failed polls, the channel's health and the
//! in-band watermark are [`monitor::Poller`] state, persisted with the
//! breaks ([`store`]: one small header and a key per break, written only
//! when they change). An alarm is [`Input::Tick`]; a poll's outcome is
//! [`Input::Polled`]; the time of the next alarm is in every [`Step`].

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used
    )
)]

pub mod monitor;
pub mod sequencer;
pub mod store;
use crate::ads::request::Viewer;
use crate::model::{BreakEntry, BreakRecord, BreakSource, ChannelBreaks, Pod};
use crate::scte35::cues::CueEvent;
use sequencer::{Action, BreakPolicy, OriginWindow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A pending break is asked for again after this long without an answer
/// (the object was evicted mid-decision; the service's budget is ≤ 10 s),
/// doubling with each attempt up to [`DECIDE_RETRY_MAX_MS`].
pub const DECIDE_RETRY_MS: i64 = 15_000;
pub const DECIDE_RETRY_MAX_MS: i64 = 120_000;

/// The channel's whole consistent state (what the DO persists).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// Decided breaks: what KV and every edge node see.
    #[serde(flatten)]
    pub breaks: ChannelBreaks,
    /// Registered, waiting for their decision: not published, not served.
    #[serde(default)]
    pub pending: Vec<Pending>,
    /// The newest origin MSN examined (the published watermark stops
    /// before the first pending break).
    #[serde(default)]
    pub examined_msn: u64,
    /// Where the origin's timeline stood at the newest examined window.
    #[serde(default)]
    pub origin_mark: Option<OriginMark>,
    /// Origin epochs seen (restarts and failovers detected).
    #[serde(default)]
    pub epoch: u32,
    /// The poller: its clock, backoff, health and in-band watermark.
    #[serde(default)]
    pub poller: monitor::Poller,
    /// Audience cohorts the edges reported recently, with what their
    /// viewers share (what a cohort's decision is asked with); at most the
    /// policy's `max_cohorts`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cohorts: BTreeMap<String, Cohort>,
    /// Reports of cohorts beyond `max_cohorts` (their viewers get the
    /// default pods), since the object was created.
    #[serde(default)]
    pub cohort_overflow: u64,
}

/// An audience cohort seen on the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cohort {
    /// The targeting its viewers share (`ads::targeting::cohort_viewer`).
    pub viewer: Viewer,
    pub last_seen_ms: i64,
}

/// A point on the origin's timeline: the newest examined window's last
/// segment (MSN, PDT) and the origin's discontinuity count at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginMark {
    pub msn: u64,
    pub pdt_ms: Option<i64>,
    pub disc_seq_end: u64,
}

/// Windows from other variants or slower requests may trail the newest by
/// a segment or two; more than this backwards is a restart.
const BACKWARDS_SEGMENTS: u64 = 3;

/// Is `w` from another origin epoch than `mark`: the media sequence went
/// back (an encoder or packager restarted at 0), or the MSN↔PDT mapping
/// moved (a failover to an origin whose sequence differs)?
pub fn restarted(mark: &OriginMark, w: &OriginWindow, cadence_ms: u64) -> bool {
    if w.last_msn.saturating_add(BACKWARDS_SEGMENTS) < mark.msn {
        return true;
    }
    match (mark.pdt_ms, w.last_pdt_ms) {
        (Some(a), Some(b)) => !crate::model::mapping_agrees(mark.msn, a, w.last_msn, b, cadence_ms),
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub record: BreakRecord,
    /// When its decision was last asked for.
    pub asked_ms: i64,
    /// Times asked again (after an eviction or no answer in time).
    #[serde(default)]
    pub retries: u32,
}

impl Pending {
    /// When its decision is asked for again if no answer came.
    pub fn retry_at(&self) -> i64 {
        let factor = 1i64.checked_shl(self.retries.min(3)).unwrap_or(8);
        self.asked_ms.saturating_add(
            DECIDE_RETRY_MS
                .saturating_mul(factor)
                .min(DECIDE_RETRY_MAX_MS),
        )
    }
}

/// What a successful poll examined (the poller's window and, for in-band
/// cues, how far it read the media).
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    pub events: Vec<CueEvent>,
    pub cadence_ms: u64,
    pub examined_through: Option<u64>,
    pub window: Option<OriginWindow>,
    /// The newest segment whose media was examined for in-band SCTE-35.
    pub inband_through: Option<u64>,
    /// The poll interval in force (configured or from the cadence).
    pub interval_ms: u64,
}

/// Why a poll failed, and the configured cadence its backoff is based on.
#[derive(Debug, Clone, PartialEq)]
pub struct PollFailure {
    pub reason: String,
    pub cadence_ms: u64,
}

/// What happens to a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The cues of an examined origin window (the poller or a viewer's
    /// request that KV could not vouch for).
    Window {
        events: Vec<CueEvent>,
        cadence_ms: u64,
        /// The window's last MSN when every cue in it was examined.
        examined_through: Option<u64>,
        window: Option<OriginWindow>,
    },
    /// `POST /cue start|schedule`: a record the worker anchored.
    CueStart(BreakRecord),
    /// `POST /cue stop` at the next segment boundary.
    CueStop { at_msn: u64 },
    /// The decision for a pending break: the default audience's pod and
    /// the pods of the cohorts its record names (a cohort missing here
    /// gets the default pod).
    Decided {
        break_id: String,
        pod: Pod,
        cohort_pods: BTreeMap<String, Pod>,
    },
    /// An edge saw viewers of this audience cohort (`viewer.cohort`).
    CohortSeen { viewer: Viewer },
    /// The object's alarm fired: re-ask decisions that got no answer in
    /// time (with backoff); poll if a poll is due ([`Step::poll`]).
    Tick,
    /// A new instance of the object over the persisted state (first input
    /// after an eviction or deploy): decisions that were in flight were
    /// lost with the old instance, ask for them again now.
    Resumed,
    /// `ensure-poller` (the cron, a playback request): start polling
    /// unless polling with an alarm set (`alarm_set`: the object's alarm
    /// is set or its handler is running).
    StartPoller { alarm_set: bool },
    /// The channel is no longer polled (inactive, SCTE-35 off, deleted).
    StopPoller,
    /// A poll that started at `started_ms` finished: its window (as
    /// [`Input::Window`]) or why it failed. `deadline_ms` is the cadence
    /// the poll stats hold it to.
    Polled {
        started_ms: i64,
        deadline_ms: u64,
        outcome: Result<Polled, PollFailure>,
    },
}

impl Input {
    /// The input for an origin window examined in full (all its cues).
    pub fn examined(
        m: &crate::hls::media::MediaPlaylist<'_>,
        events: Vec<CueEvent>,
        cadence_ms: u64,
    ) -> Input {
        Input::Window {
            events,
            cadence_ms,
            examined_through: m.last_msn(),
            window: OriginWindow::of(m),
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Ask the decision service for this break; feed the answer back as
    /// [`Input::Decided`] (slate-only if it fails).
    Decide(BreakRecord),
    /// Save the state (before anything below).
    Persist,
    /// Write the published view ([`Channel::breaks`]) to KV.
    Publish,
    /// Record a decided break in the history (D1).
    History(Box<BreakEntry>),
}

/// The answer to the input's caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    None,
    /// A new break was registered by this input (201).
    Created(BreakRecord),
    /// The break already existed, decided or pending (200).
    Existing(BreakRecord),
    /// A break was ended early (200).
    Stopped(BreakRecord),
    /// Refused, with the reason (409).
    Conflict(String),
    /// [`Input::StartPoller`]: whether the poller was (re)started.
    Poller {
        started: bool,
    },
}

/// The channel's health to report (D1): healthy, or the failure.
pub type Health = Result<(), Unhealthy>;

/// Why a channel is unhealthy: the poll failure, in words (the operator
/// sees it on the channel).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub String);

/// One step's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub effects: Vec<Effect>,
    pub reply: Reply,
    /// Breaks registered by this input.
    pub registered: Vec<String>,
    /// This input showed an origin restart or failover.
    pub new_epoch: bool,
    /// Poll the origin now and feed the outcome back as [`Input::Polled`].
    pub poll: bool,
    /// Report the channel's health (after the effects).
    pub health: Option<Health>,
    /// When the object's alarm must next fire (`None`: no alarm wanted):
    /// the next poll or the earliest decision retry, whichever is first.
    pub alarm_ms: Option<i64>,
}

impl Channel {
    /// The published view, what a playlist request reads first (records,
    /// no pods: each pod is published once under its own key).
    pub fn view(&self) -> crate::model::ChannelView {
        self.breaks.view()
    }

    /// Ids of breaks waiting for a decision.
    pub fn pending_ids(&self) -> impl Iterator<Item = &str> {
        self.pending.iter().map(|p| p.record.id.as_str())
    }

    /// Feed one input. Never awaits; see the module comment.
    pub fn handle(&mut self, input: Input, policy: &BreakPolicy, now_ms: i64) -> Step {
        let before = self.clone();
        let mut step = Step {
            effects: Vec::new(),
            reply: Reply::None,
            registered: Vec::new(),
            new_epoch: false,
            poll: false,
            health: None,
            alarm_ms: None,
        };
        match input {
            Input::Window {
                events,
                cadence_ms,
                examined_through,
                window,
            } => self.window(
                &events,
                cadence_ms,
                examined_through,
                window,
                policy,
                now_ms,
                &mut step,
            ),
            Input::CueStart(rec) => self.cue_start(rec, policy, now_ms, &mut step),
            Input::CueStop { at_msn } => self.cue_stop(at_msn, now_ms, &mut step),
            Input::Decided {
                break_id,
                pod,
                cohort_pods,
            } => self.decided(&break_id, pod, cohort_pods, now_ms, &mut step),
            Input::CohortSeen { viewer } => self.cohort_seen(viewer, policy, now_ms),
            Input::Tick => {
                self.ask_again(|p| p.retry_at() <= now_ms, now_ms, &mut step);
                step.poll = self.poller.due(now_ms);
            }
            Input::Resumed => self.ask_again(|_| true, now_ms, &mut step),
            Input::StartPoller { alarm_set } => {
                let started = self.poller.start(alarm_set, now_ms);
                step.reply = Reply::Poller { started };
            }
            Input::StopPoller => self.poller.stop(),
            Input::Polled {
                started_ms,
                deadline_ms,
                outcome,
            } => self.polled(started_ms, deadline_ms, outcome, policy, now_ms, &mut step),
        }
        self.publish_watermark(now_ms);
        // The view names its origin timeline once per epoch (not every
        // poll: KV is written only when the view changes).
        if self.breaks.origin_mark.is_none() || step.new_epoch {
            if let Some(m) = self.origin_mark {
                self.breaks.origin_mark = m.pdt_ms.map(|p| (m.msn, p));
            }
        }
        if self.breaks.entries != before.breaks.entries || self.pending != before.pending {
            sequencer::prune(&mut self.breaks, policy, now_ms);
        }
        let since = now_ms.saturating_sub(policy.cohort_ttl_ms);
        let cohorts = &self.cohorts;
        sequencer::forget_cohorts(&mut self.breaks, &|c| {
            cohorts.get(c).is_some_and(|x| x.last_seen_ms > since)
        });
        let view_changed = self.breaks.entries != before.breaks.entries
            || self.breaks.checked_through_msn != before.breaks.checked_through_msn
            || self.breaks.origin_mark != before.breaks.origin_mark
            || self.breaks.disc_base != before.breaks.disc_base
            || self.breaks.cohort_disc_base != before.breaks.cohort_disc_base;
        if view_changed
            || self.pending != before.pending
            || self.examined_msn != before.examined_msn
            || self.poller != before.poller
            || self.origin_mark != before.origin_mark
            || self.epoch != before.epoch
            || self.cohort_overflow != before.cohort_overflow
            || !self.cohorts.keys().eq(before.cohorts.keys())
        {
            // Persist first: effects that follow rely on the saved state.
            step.effects.insert(0, Effect::Persist);
        }
        if view_changed {
            step.effects.push(Effect::Publish);
        }
        step.alarm_ms = self.alarm_ms();
        step
    }

    /// When the object's alarm must next fire: the next poll or the
    /// earliest decision retry.
    pub fn alarm_ms(&self) -> Option<i64> {
        let poll = self.poller.next_poll_ms.filter(|_| self.poller.running);
        self.pending.iter().map(Pending::retry_at).chain(poll).min()
    }

    /// Ask again for the pending decisions `which` selects.
    fn ask_again(&mut self, which: impl Fn(&Pending) -> bool, now_ms: i64, step: &mut Step) {
        for p in self.pending.iter_mut().filter(|p| which(p)) {
            p.asked_ms = now_ms;
            p.retries = p.retries.saturating_add(1);
            step.effects.push(Effect::Decide(p.record.clone()));
        }
    }

    /// A poll's outcome: its window is examined like any other, then the
    /// poller's clock, backoff and health move on.
    fn polled(
        &mut self,
        started_ms: i64,
        deadline_ms: u64,
        outcome: Result<Polled, PollFailure>,
        policy: &BreakPolicy,
        now_ms: i64,
        step: &mut Step,
    ) {
        match outcome {
            Ok(p) => {
                self.window(
                    &p.events,
                    p.cadence_ms,
                    p.examined_through,
                    p.window,
                    policy,
                    now_ms,
                    step,
                );
                // Persisted in the same step as the breaks its cues
                // registered: never ahead of them.
                if p.inband_through.is_some() {
                    self.poller.inband_msn = p.inband_through;
                }
                if self
                    .poller
                    .succeeded(started_ms, p.interval_ms, deadline_ms, now_ms)
                {
                    step.health = Some(Ok(()));
                }
            }
            Err(f) => {
                self.poller
                    .failed(started_ms, &f.reason, f.cadence_ms, deadline_ms, now_ms);
                step.health = Some(Err(Unhealthy(f.reason)));
            }
        }
    }

    /// Known to the machine, decided or pending: a record with this id, or
    /// one anchored at the same MSN (the same break through another marker).
    fn known(&self, id: &str, anchor_msn: u64) -> Option<&BreakRecord> {
        self.records()
            .find(|r| r.id == id || r.anchor_msn == anchor_msn)
    }

    /// Every break record, decided or pending.
    fn records(&self) -> impl Iterator<Item = &BreakRecord> {
        self.breaks
            .entries
            .iter()
            .map(|e| &e.record)
            .chain(self.pending.iter().map(|p| &p.record))
    }

    /// Overlap with a decided or pending break.
    fn overlaps(&self, rec: &BreakRecord) -> Result<(), sequencer::SequenceError> {
        sequencer::check_overlap_records(self.records(), rec)
    }

    /// A new break, pending its decisions: the default audience's and
    /// those of the cohorts active now (fixed here, before any edge can
    /// know the break: see `BreakRecord::cohorts`).
    fn register(
        &mut self,
        mut rec: BreakRecord,
        policy: &BreakPolicy,
        now_ms: i64,
        step: &mut Step,
    ) {
        rec.cohorts = self.active_cohorts(policy, now_ms);
        step.registered.push(rec.id.clone());
        step.effects.push(Effect::Decide(rec.clone()));
        self.pending.push(Pending {
            record: rec,
            asked_ms: now_ms,
            retries: 0,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn window(
        &mut self,
        events: &[CueEvent],
        cadence_ms: u64,
        examined_through: Option<u64>,
        window: Option<OriginWindow>,
        policy: &BreakPolicy,
        now_ms: i64,
        step: &mut Step,
    ) {
        if let Some(w) = &window {
            self.follow_origin(w, cadence_ms, now_ms, step);
        }
        // Pending breaks count as known: a cue seen again while its
        // decision is in flight registers nothing.
        let known: Vec<&BreakRecord> = self.records().collect();
        for action in sequencer::reconcile_records(events, &known) {
            match action {
                Action::Register(cue) => {
                    let Some(mut rec) =
                        sequencer::record_from_cue(&cue, cadence_ms, policy, now_ms)
                    else {
                        continue;
                    };
                    rec.source = BreakSource::Scte35;
                    // Encoders restart their splice_event_ids too: a break
                    // of a later origin epoch gets an id of its own (asset
                    // lists, history and caches are keyed by it).
                    if self.epoch > 0 {
                        rec.id = format!("{}-e{}", rec.id, self.epoch);
                    }
                    if self.known(&rec.id, rec.anchor_msn).is_some() || self.overlaps(&rec).is_err()
                    {
                        continue;
                    }
                    self.register(rec, policy, now_ms, step);
                }
                Action::End { break_id, at_msn } => {
                    self.end(&break_id, at_msn, now_ms);
                }
            }
        }
        if let Some(w) = &window {
            sequencer::note_origin_discontinuities(&mut self.breaks, w, now_ms);
        }
        if let Some(m) = examined_through {
            self.examined_msn = self.examined_msn.max(m);
        }
    }

    /// Follow the origin's timeline; on a restart or failover start a new
    /// epoch: the old entries leave the view (their MSNs name other
    /// content now; their pods are never replayed), pending decisions are
    /// dropped, the watermark restarts at the new window, and the running
    /// discontinuity count continues above everything a viewer who stays
    /// has seen (ours plus the origin's old count plus one for the
    /// restart), so their `EXT-X-DISCONTINUITY-SEQUENCE` never goes down.
    fn follow_origin(&mut self, w: &OriginWindow, cadence_ms: u64, now_ms: i64, step: &mut Step) {
        let mark = OriginMark {
            msn: w.last_msn,
            pdt_ms: w.last_pdt_ms,
            disc_seq_end: w.disc_seq_end,
        };
        let Some(old) = self.origin_mark else {
            self.origin_mark = Some(mark);
            return;
        };
        if restarted(&old, w, cadence_ms) {
            let ours = self
                .breaks
                .entries
                .last()
                .map_or(self.breaks.disc_base, |e| {
                    e.record
                        .disc_before
                        .saturating_add(crate::model::inserted_discontinuities(&e.record, &e.pod))
                });
            let above = |n: u64| n.saturating_add(old.disc_seq_end).saturating_add(1);
            self.breaks.disc_base = above(ours);
            // Each cohort's count continues above what its viewers saw.
            self.breaks.cohort_disc_base = sequencer::cohorts_counted(&self.breaks)
                .into_iter()
                .map(|c| {
                    let (_, end) = self.breaks.cohort_counts(&c);
                    (c, above(end))
                })
                .filter(|(_, n)| *n != self.breaks.disc_base)
                .collect();
            self.breaks.entries.clear();
            self.pending.clear();
            self.breaks.checked_through_msn = w.first_msn.saturating_sub(1);
            self.examined_msn = 0;
            self.epoch = self.epoch.saturating_add(1);
            self.breaks.updated_ms = now_ms;
            self.origin_mark = Some(mark);
            step.new_epoch = true;
        } else if w.last_msn >= old.msn {
            self.origin_mark = Some(mark);
        }
    }

    /// End a decided or pending break at `at_msn`; whether anything changed.
    fn end(&mut self, id: &str, at_msn: u64, now_ms: i64) -> bool {
        if let Some(p) = self.pending.iter_mut().find(|p| p.record.id == id) {
            let r = &mut p.record;
            let cut = at_msn
                .saturating_sub(r.anchor_msn)
                .min(u64::from(r.segment_count));
            let cut = u32::try_from(cut).unwrap_or(u32::MAX);
            if cut < r.covered() {
                r.cut_after = Some(cut);
                return true;
            }
            return false;
        }
        sequencer::apply_end(&mut self.breaks, id, at_msn, now_ms)
    }

    fn cue_start(&mut self, rec: BreakRecord, policy: &BreakPolicy, now_ms: i64, step: &mut Step) {
        // Idempotent by id only: another id at the same anchor is another
        // operator's break, refused as an overlap below.
        if let Some(r) = self.known(&rec.id, u64::MAX) {
            step.reply = Reply::Existing(r.clone());
            return;
        }
        if let Err(e) = self.overlaps(&rec) {
            step.reply = Reply::Conflict(e.to_string());
            return;
        }
        step.reply = Reply::Created(rec.clone());
        self.register(rec, policy, now_ms, step);
    }

    fn cue_stop(&mut self, at_msn: u64, now_ms: i64, step: &mut Step) {
        let open = self
            .breaks
            .entries
            .iter()
            .map(|e| &e.record)
            .chain(self.pending.iter().map(|p| &p.record))
            .filter(|r| r.end_msn() > at_msn && r.anchor_msn <= at_msn)
            .max_by_key(|r| r.anchor_msn)
            .map(|r| r.id.clone());
        let Some(id) = open else {
            step.reply = Reply::Conflict("no active break to stop".into());
            return;
        };
        self.end(&id, at_msn, now_ms);
        step.reply = match self.known(&id, u64::MAX).cloned() {
            Some(r) => Reply::Stopped(r),
            None => Reply::Conflict("no active break to stop".into()),
        };
    }

    /// A cohort reported by an edge: refreshed, or added while there is
    /// room (the least recently seen inactive one makes room); beyond
    /// `max_cohorts` counted, not added. A known cohort's targeting is
    /// never replaced by a later report: the first one (from a master
    /// request, whole) is what its pods are decided with, and a report
    /// cannot re-target a cohort another client's viewers belong to.
    fn cohort_seen(&mut self, viewer: Viewer, policy: &BreakPolicy, now_ms: i64) {
        if viewer.cohort.is_empty() {
            return;
        }
        let stale = now_ms.saturating_sub(policy.cohort_ttl_ms);
        if let Some(c) = self.cohorts.get_mut(&viewer.cohort) {
            c.last_seen_ms = c.last_seen_ms.max(now_ms);
            return;
        }
        self.cohorts.retain(|_, c| c.last_seen_ms > stale);
        if self.cohorts.len() >= policy.max_cohorts {
            self.cohort_overflow = self.cohort_overflow.saturating_add(1);
            return;
        }
        self.cohorts.insert(
            viewer.cohort.clone(),
            Cohort {
                viewer,
                last_seen_ms: now_ms,
            },
        );
    }

    /// The cohorts a break registered now is decided for: those seen
    /// within the policy's `cohort_ttl_ms`.
    fn active_cohorts(&self, policy: &BreakPolicy, now_ms: i64) -> Vec<String> {
        let since = now_ms.saturating_sub(policy.cohort_ttl_ms);
        self.cohorts
            .iter()
            .filter(|(_, c)| c.last_seen_ms > since)
            .map(|(id, _)| id.clone())
            .take(policy.max_cohorts)
            .collect()
    }

    /// The targeting each of a record's cohorts is decided with.
    pub fn cohort_viewers(&self, r: &BreakRecord) -> Vec<Viewer> {
        r.cohorts
            .iter()
            .filter_map(|c| self.cohorts.get(c).map(|x| x.viewer.clone()))
            .collect()
    }

    fn decided(
        &mut self,
        id: &str,
        pod: Pod,
        cohort_pods: BTreeMap<String, Pod>,
        now_ms: i64,
        step: &mut Step,
    ) {
        // Exactly once: a decision for a break that is no longer pending
        // (already decided, or pruned) is dropped.
        let Some(i) = self.pending.iter().position(|p| p.record.id == id) else {
            return;
        };
        let p = self.pending.remove(i);
        if let Ok(entry) = sequencer::commit(&mut self.breaks, p.record, pod, cohort_pods, now_ms) {
            step.effects.push(Effect::History(Box::new(entry)));
        }
    }

    /// The published watermark: everything examined, but never past the
    /// first pending break (its entry is not in the view yet).
    fn publish_watermark(&mut self, now_ms: i64) {
        let limit = self
            .pending
            .iter()
            .map(|p| p.record.anchor_msn.saturating_sub(1))
            .min()
            .unwrap_or(u64::MAX);
        let target = self.examined_msn.min(limit);
        sequencer::mark_checked(&mut self.breaks, target, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::sequencer::tests::cue;
    use crate::model::Slate;
    use crate::scte35::cues::CueKind;

    fn window(events: Vec<CueEvent>, last: u64) -> Input {
        Input::Window {
            events,
            cadence_ms: 2000,
            examined_through: Some(last),
            window: None,
        }
    }

    fn pod(id: &str) -> Pod {
        Pod::slate_only(id, 10.0, Slate::default(), String::new())
    }

    #[test]
    fn a_cue_seen_by_many_is_registered_and_decided_once() {
        let p = BreakPolicy::default();
        let mut ch = Channel::default();
        let s1 = ch.handle(
            window(vec![cue(CueKind::Out, "a", 10, Some(10.0))], 12),
            &p,
            0,
        );
        assert_eq!(s1.registered, vec!["a"]);
        assert_eq!(
            s1.effects
                .iter()
                .filter(|e| matches!(e, Effect::Decide(_)))
                .count(),
            1
        );
        assert!(s1.effects.first() == Some(&Effect::Persist));
        // Pending: not published, and the watermark stops before it.
        assert!(ch.breaks.entries.is_empty());
        assert_eq!(ch.breaks.checked_through_msn, 9);
        // Fifteen more viewers see the same cue while the decision runs.
        for _ in 0..15 {
            let s = ch.handle(
                window(vec![cue(CueKind::Out, "a", 10, Some(10.0))], 13),
                &p,
                10,
            );
            assert!(s.registered.is_empty());
            assert!(!s.effects.iter().any(|e| matches!(e, Effect::Decide(_))));
        }
        let d = ch.handle(
            Input::Decided {
                break_id: "a".into(),
                pod: pod("a"),
                cohort_pods: Default::default(),
            },
            &p,
            20,
        );
        assert!(d.effects.contains(&Effect::Publish));
        assert_eq!(ch.breaks.entries.len(), 1);
        assert_eq!(ch.breaks.checked_through_msn, 13);
        // A second answer (a retried call) changes nothing.
        let again = ch.handle(
            Input::Decided {
                break_id: "a".into(),
                pod: pod("other"),
                cohort_pods: Default::default(),
            },
            &p,
            30,
        );
        assert!(again.effects.is_empty());
        assert_eq!(ch.breaks.entries[0].pod.pod_id, pod("a").pod_id);
    }

    #[test]
    fn cue_start_is_created_once_and_stop_is_never_lost() {
        let p = BreakPolicy::default();
        let mut ch = Channel::default();
        let rec =
            sequencer::record_from_cue(&cue(CueKind::Out, "cue-1", 20, Some(30.0)), 2000, &p, 0)
                .unwrap();
        let replies: Vec<Reply> = (0..16)
            .map(|_| ch.handle(Input::CueStart(rec.clone()), &p, 0).reply)
            .collect();
        assert_eq!(
            replies
                .iter()
                .filter(|r| matches!(r, Reply::Created(_)))
                .count(),
            1
        );
        assert_eq!(
            replies
                .iter()
                .filter(|r| matches!(r, Reply::Existing(_)))
                .count(),
            15
        );
        // A stop while the decision is in flight, then a window, then the decision.
        assert!(matches!(
            ch.handle(Input::CueStop { at_msn: 25 }, &p, 1).reply,
            Reply::Stopped(_)
        ));
        ch.handle(window(vec![], 26), &p, 2);
        ch.handle(
            Input::Decided {
                break_id: "cue-1".into(),
                pod: pod("cue-1"),
                cohort_pods: Default::default(),
            },
            &p,
            3,
        );
        assert_eq!(
            ch.breaks.entries[0].record.end_msn(),
            25,
            "the stop survived the decision"
        );
        assert!(matches!(
            ch.handle(Input::CueStop { at_msn: 40 }, &p, 4).reply,
            Reply::Conflict(_)
        ));
    }

    fn win(first: u64, last: u64, pdt_last: i64, disc: u64, events: Vec<CueEvent>) -> Input {
        Input::Window {
            events,
            cadence_ms: 2000,
            examined_through: Some(last),
            window: Some(OriginWindow {
                first_msn: first,
                last_msn: last,
                discontinuities: vec![],
                last_pdt_ms: Some(pdt_last),
                disc_seq_end: disc,
            }),
        }
    }

    fn decide_all(ch: &mut Channel, step: Step, now: i64) {
        for e in step.effects {
            if let Effect::Decide(r) = e {
                let mut p = pod(&r.id);
                p.items = vec![crate::model::PodItem {
                    ad_id: "x".into(),
                    creative_id: "x".into(),
                    universal_ad_id: None,
                    duration_s: 4.0,
                    renditions: vec![],
                    tracking: Default::default(),
                }];
                ch.handle(
                    Input::Decided {
                        break_id: r.id,
                        pod: p,
                        cohort_pods: Default::default(),
                    },
                    &BreakPolicy::default(),
                    now,
                );
            }
        }
    }

    #[test]
    fn an_origin_restart_starts_a_new_epoch() {
        let p = BreakPolicy::default();
        let mut ch = Channel::default();
        // Old epoch: a break at MSN 133 (PDT = msn * 2 s), window through 606.
        let mut c = cue(CueKind::Out, "old", 133, Some(10.0));
        c.pdt_ms = Some(133 * 2000);
        let s = ch.handle(win(130, 135, 135 * 2000, 4, vec![c]), &p, 0);
        decide_all(&mut ch, s, 0);
        ch.handle(win(601, 606, 606 * 2000, 4, vec![]), &p, 1);
        let total = ch.breaks.entries[0].record.disc_before
            + crate::model::inserted_discontinuities(
                &ch.breaks.entries[0].record,
                &ch.breaks.entries[0].pod,
            );
        assert!(total > 0);
        // A viewer's window two segments behind is not a restart.
        assert!(
            !ch.handle(win(599, 604, 604 * 2000, 4, vec![]), &p, 2)
                .new_epoch
        );
        // The origin restarts at MSN 0, 40 minutes later; a cue at MSN 133
        // again (same splice_event_id even) is a new break with a new pod.
        let before_restart_view = ch.breaks.clone();
        assert!(before_restart_view.vouches_for(601, Some((606, 606 * 2000)), 2000));
        let t0 = 606 * 2000 + 2_400_000;
        let s = ch.handle(win(0, 5, t0, 0, vec![]), &p, 3);
        assert!(s.new_epoch);
        assert!(s.effects.contains(&Effect::Publish));
        assert!(ch.breaks.entries.is_empty(), "no stale pod stays in view");
        assert_eq!(
            ch.breaks.origin_mark,
            Some((5, t0)),
            "the view names its new timeline"
        );
        assert!(
            !before_restart_view.vouches_for(0, Some((5, t0)), 2000),
            "a stale copy cannot vouch for the new epoch"
        );
        assert!(ch.breaks.vouches_for(0, Some((5, t0)), 2000));
        assert_eq!(ch.breaks.checked_through_msn, 5);
        assert_eq!(
            ch.breaks.disc_base,
            total + 4 + 1,
            "never decreases for a viewer who stays"
        );
        let mut again = cue(CueKind::Out, "old", 133, Some(10.0));
        again.pdt_ms = Some(t0 + 128 * 2000);
        let s = ch.handle(win(128, 133, t0 + 128 * 2000, 0, vec![again]), &p, 4);
        assert_eq!(
            s.registered,
            vec!["old-e1"],
            "registered again within the window it appears in, under an id of its own"
        );
        decide_all(&mut ch, s, 4);
        assert_eq!(ch.breaks.entries[0].record.disc_before, ch.breaks.disc_base);
        assert_eq!(ch.epoch, 1);
    }

    #[test]
    fn a_failover_with_a_jumped_sequence_is_a_new_epoch() {
        let p = BreakPolicy::default();
        for jump in [10_000i64, -10_000] {
            let mut ch = Channel::default();
            ch.handle(win(20_000, 20_005, 1_000_000, 0, vec![]), &p, 0);
            let last = (20_005 + jump + 1) as u64;
            // Continuous PDT, sequence jumped by ±10,000.
            let s = ch.handle(win(last - 5, last, 1_002_000, 0, vec![]), &p, 1);
            assert!(s.new_epoch, "jump {jump}");
        }
        // Continuous PDT and sequence: no epoch, also across a PDT re-stamp
        // of a few seconds.
        let mut ch = Channel::default();
        ch.handle(win(100, 105, 1_000_000, 0, vec![]), &p, 0);
        assert!(
            !ch.handle(win(101, 106, 1_002_000 + 3_000, 0, vec![]), &p, 1)
                .new_epoch
        );
    }

    #[test]
    fn stale_pending_decisions_are_asked_again() {
        let p = BreakPolicy::default();
        let mut ch = Channel::default();
        ch.handle(
            window(vec![cue(CueKind::Out, "a", 10, Some(10.0))], 12),
            &p,
            0,
        );
        assert!(ch.handle(Input::Tick, &p, 1000).effects.is_empty());
        let s = ch.handle(Input::Tick, &p, DECIDE_RETRY_MS);
        assert!(s
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Decide(r) if r.id == "a")));
    }

    #[test]
    fn the_machine_owns_the_poll_clock_decision_retries_and_health() {
        let p = BreakPolicy::default();
        let mut ch = Channel::default();
        let s = ch.handle(Input::StartPoller { alarm_set: false }, &p, 0);
        assert_eq!(s.reply, Reply::Poller { started: true });
        assert_eq!(s.alarm_ms, Some(10));
        assert!(
            s.effects.contains(&Effect::Persist),
            "the poller's clock is state"
        );
        let t = ch.handle(Input::Tick, &p, 10);
        assert!(t.poll, "the alarm at the due time polls");
        assert!(
            t.effects.is_empty(),
            "a tick that asks nothing writes nothing"
        );
        let polled = |events: Vec<CueEvent>, last: u64| Input::Polled {
            started_ms: 10,
            deadline_ms: 2000,
            outcome: Ok(Polled {
                events,
                cadence_ms: 2000,
                examined_through: Some(last),
                window: None,
                inband_through: Some(last),
                interval_ms: 1800,
            }),
        };
        let s = ch.handle(
            polled(vec![cue(CueKind::Out, "a", 10, Some(10.0))], 12),
            &p,
            60,
        );
        assert_eq!(s.registered, vec!["a"]);
        assert_eq!(s.health, Some(Ok(())), "first poll reports health");
        assert_eq!(s.alarm_ms, Some(1810), "phase-locked next poll");
        assert_eq!(ch.poller.inband_msn, Some(12));
        assert_eq!(ch.poller.stats.polls, 1);
        // Not due yet: no poll.
        assert!(!ch.handle(Input::Tick, &p, 1000).poll);
        // The decision never came (the object was evicted): a new instance
        // asks again at once.
        let r = ch.handle(Input::Resumed, &p, 100);
        assert!(r
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Decide(x) if x.id == "a")));
        // Still no answer, the poller stopped: the alarm comes for the
        // retry, with backoff (30 s after the first retry).
        let s = ch.handle(Input::StopPoller, &p, 200);
        assert_eq!(s.alarm_ms, Some(100 + 30_000));
        let t = ch.handle(Input::Tick, &p, 30_100);
        assert!(!t.poll);
        assert!(t.effects.iter().any(|e| matches!(e, Effect::Decide(_))));
        assert_eq!(t.alarm_ms, Some(30_100 + 60_000));
        // A failed poll: counted, reported, backed off.
        ch.handle(Input::StartPoller { alarm_set: false }, &p, 40_000);
        let f = ch.handle(
            Input::Polled {
                started_ms: 40_010,
                deadline_ms: 2000,
                outcome: Err(PollFailure {
                    reason: "origin down".into(),
                    cadence_ms: 2000,
                }),
            },
            &p,
            40_100,
        );
        assert_eq!(f.health, Some(Err(Unhealthy("origin down".into()))));
        assert_eq!(f.alarm_ms, Some(40_100 + 4_000));
        assert_eq!((ch.poller.failures, ch.poller.stats.errors), (1, 1));
    }

    mod machine_props {
        use super::*;
        use proptest::prelude::*;

        /// One thing that can happen to a channel, in any order.
        #[derive(Debug, Clone)]
        enum Op {
            /// A window through `last` showing the cues of breaks `0..3`
            /// whose anchors it reaches.
            Window {
                last: u64,
            },
            /// `/cue start` of manual break `i` (anchors 70, 90).
            Start(usize),
            /// Answer the `i`-th outstanding decision (maybe again).
            Answer(usize),
            Tick,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (5u64..110).prop_map(|last| Op::Window { last }),
                (0usize..2).prop_map(Op::Start),
                (0usize..6).prop_map(Op::Answer),
                Just(Op::Tick),
            ]
        }

        fn total(ch: &Channel) -> u64 {
            ch.breaks.entries.last().map_or(ch.breaks.disc_base, |e| {
                e.record.disc_before + crate::model::inserted_discontinuities(&e.record, &e.pod)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Any interleaving of windows, cues, decisions (late, repeated,
            /// out of order) and alarms: each break is registered once and
            /// decided once, is never both pending and decided, every
            /// decision asked for is answered into exactly one entry, and
            /// the running discontinuity count never decreases.
            #[test]
            fn registered_once_decided_once(ops in proptest::collection::vec(op(), 1..60)) {
                let p = BreakPolicy::default();
                let mut ch = Channel::default();
                let mut asked: Vec<String> = Vec::new();
                let mut outstanding: Vec<String> = Vec::new();
                let mut now = 0i64;
                let mut last_total = 0u64;
                for op in ops {
                    now += 100; // stays under DECIDE_RETRY_MS: no retries
                    let step = match op {
                        Op::Window { last } => {
                            let events = [10u64, 30, 50]
                                .iter()
                                .enumerate()
                                .filter(|(_, a)| **a <= last && last < **a + 12)
                                .map(|(i, a)| cue(CueKind::Out, &format!("s{i}"), *a, Some(8.0)))
                                .collect();
                            ch.handle(window(events, last), &p, now)
                        }
                        Op::Start(i) => {
                            let anchor = [70u64, 90][i];
                            let rec = sequencer::record_from_cue(
                                &cue(CueKind::Out, &format!("m{i}"), anchor, Some(8.0)), 2000, &p, now,
                            ).unwrap();
                            ch.handle(Input::CueStart(rec), &p, now)
                        }
                        Op::Answer(i) => {
                            if outstanding.is_empty() { continue; }
                            let id = outstanding[i % outstanding.len()].clone();
                            if i % 3 != 0 { outstanding.retain(|x| *x != id); }
                            ch.handle(Input::Decided { break_id: id.clone(), pod: pod(&id), cohort_pods: Default::default() }, &p, now)
                        }
                        Op::Tick => ch.handle(Input::Tick, &p, now),
                    };
                    for e in &step.effects {
                        if let Effect::Decide(r) = e {
                            prop_assert!(!asked.contains(&r.id), "{} decided twice", r.id);
                            asked.push(r.id.clone());
                            outstanding.push(r.id.clone());
                        }
                    }
                    let mut ids: Vec<&str> = ch.breaks.entries.iter().map(|e| e.record.id.as_str()).chain(ch.pending_ids()).collect();
                    let n = ids.len();
                    ids.sort_unstable();
                    ids.dedup();
                    prop_assert_eq!(ids.len(), n, "a break is in the state twice");
                    let t = total(&ch);
                    prop_assert!(t >= last_total, "running count went down {} -> {}", last_total, t);
                    last_total = t;
                }
                // Answer everything still outstanding: every asked break is
                // decided into exactly one entry.
                for id in outstanding.clone() {
                    ch.handle(Input::Decided { break_id: id.clone(), pod: pod(&id), cohort_pods: Default::default() }, &p, now);
                }
                prop_assert!(ch.pending.is_empty());
                for id in &asked {
                    prop_assert_eq!(ch.breaks.entries.iter().filter(|e| &e.record.id == id).count(), 1, "{} committed once", id);
                }
            }
        }
    }
}
