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

use crate::cues::CueEvent;
use crate::model::{BreakEntry, BreakRecord, BreakSource, ChannelBreaks, Pod};
use crate::sequencer::{self, Action, BreakPolicy, OriginWindow};
use serde::{Deserialize, Serialize};

/// A pending break is asked for again after this long without an answer
/// (the object was evicted mid-decision; the service's budget is ≤ 10 s).
pub const DECIDE_RETRY_MS: i64 = 15_000;

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub record: BreakRecord,
    /// When its decision was last asked for.
    pub asked_ms: i64,
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
    /// The decision for a pending break.
    Decided { break_id: String, pod: Pod },
    /// An alarm or any request: re-ask stale decisions, prune.
    Tick,
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
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub effects: Vec<Effect>,
    pub reply: Reply,
    /// Breaks registered by this input.
    pub registered: Vec<String>,
}

impl Channel {
    /// The published view, what a playlist request reads.
    pub fn view(&self) -> &ChannelBreaks {
        &self.breaks
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
            Input::CueStart(rec) => self.cue_start(rec, now_ms, &mut step),
            Input::CueStop { at_msn } => self.cue_stop(at_msn, now_ms, &mut step),
            Input::Decided { break_id, pod } => self.decided(&break_id, pod, now_ms, &mut step),
            Input::Tick => {
                for p in &mut self.pending {
                    if now_ms.saturating_sub(p.asked_ms) >= DECIDE_RETRY_MS {
                        p.asked_ms = now_ms;
                        step.effects.push(Effect::Decide(p.record.clone()));
                    }
                }
            }
        }
        self.publish_watermark(now_ms);
        if self.breaks.entries != before.breaks.entries || self.pending != before.pending {
            sequencer::prune(&mut self.breaks, policy, now_ms);
        }
        let view_changed = self.breaks.entries != before.breaks.entries
            || self.breaks.checked_through_msn != before.breaks.checked_through_msn;
        if view_changed
            || self.pending != before.pending
            || self.examined_msn != before.examined_msn
        {
            // Persist first: effects that follow rely on the saved state.
            step.effects.insert(0, Effect::Persist);
        }
        if view_changed {
            step.effects.push(Effect::Publish);
        }
        step
    }

    /// Known to the machine, decided or pending: a record with this id, or
    /// one anchored at the same MSN (the same break through another marker).
    fn known(&self, id: &str, anchor_msn: u64) -> Option<&BreakRecord> {
        self.breaks
            .entries
            .iter()
            .map(|e| &e.record)
            .chain(self.pending.iter().map(|p| &p.record))
            .find(|r| r.id == id || r.anchor_msn == anchor_msn)
    }

    /// Overlap with a decided or pending break.
    fn overlaps(&self, rec: &BreakRecord) -> Result<(), String> {
        let mut all = self.breaks.clone();
        all.entries.extend(self.pending.iter().map(|p| BreakEntry {
            record: p.record.clone(),
            pod: Pod::slate_only(&p.record.id, 0.0, Default::default(), String::new()),
        }));
        sequencer::check_overlap(&all, rec).map_err(|e| e.to_string())
    }

    fn register(&mut self, rec: BreakRecord, now_ms: i64, step: &mut Step) {
        step.registered.push(rec.id.clone());
        step.effects.push(Effect::Decide(rec.clone()));
        self.pending.push(Pending {
            record: rec,
            asked_ms: now_ms,
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
        // Pending breaks count as known: a cue seen again while its
        // decision is in flight registers nothing.
        let mut known = self.breaks.entries.clone();
        known.extend(self.pending.iter().map(|p| BreakEntry {
            record: p.record.clone(),
            pod: Pod::slate_only(&p.record.id, 0.0, Default::default(), String::new()),
        }));
        for action in sequencer::reconcile(events, &known) {
            match action {
                Action::Register(cue) => {
                    let Some(mut rec) =
                        sequencer::record_from_cue(&cue, cadence_ms, policy, now_ms)
                    else {
                        continue;
                    };
                    rec.source = BreakSource::Scte35;
                    if self.known(&rec.id, rec.anchor_msn).is_some() || self.overlaps(&rec).is_err()
                    {
                        continue;
                    }
                    self.register(rec, now_ms, step);
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

    fn cue_start(&mut self, rec: BreakRecord, now_ms: i64, step: &mut Step) {
        if let Some(r) = self.known(&rec.id, rec.anchor_msn) {
            // Idempotent: the same id (or anchor) is the same break.
            step.reply = Reply::Existing(r.clone());
            return;
        }
        if let Err(e) = self.overlaps(&rec) {
            step.reply = Reply::Conflict(e);
            return;
        }
        step.reply = Reply::Created(rec.clone());
        self.register(rec, now_ms, step);
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

    fn decided(&mut self, id: &str, pod: Pod, now_ms: i64, step: &mut Step) {
        // Exactly once: a decision for a break that is no longer pending
        // (already decided, or pruned) is dropped.
        let Some(i) = self.pending.iter().position(|p| p.record.id == id) else {
            return;
        };
        let p = self.pending.remove(i);
        if let Ok(entry) = sequencer::commit(&mut self.breaks, p.record, pod, now_ms) {
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
    use crate::cues::{CueKind, Dialect};
    use crate::model::Slate;

    fn cue(kind: CueKind, id: &str, msn: u64, dur: Option<f64>) -> CueEvent {
        CueEvent {
            kind,
            break_id: id.into(),
            event_id: None,
            msn,
            pdt_ms: Some(msn as i64 * 2000),
            duration_s: dur,
            elapsed_s: None,
            dialect: Dialect::CueOut,
            segmentation_type_id: None,
            scte35_hex: None,
        }
    }

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
}
