//! One driver of the channel machine (`core::channel::Channel`) over
//! simulated time, doing what the Channel Durable Object does around it:
//! the origin is a [`SimChannel`], the object's alarm fires at the times
//! the machine asks for ([`Input::Tick`]), polls read the simulated origin
//! and come back as [`Input::Polled`], decisions are answered by a pod
//! function (at once, later, or never), effects land in an in-memory DO
//! storage (the same per-key layout as the object, `core::channel::store`)
//! and KV (every published view and pod with the instant it was written).
//! [`Driver::evict`] is a new instance of the object over the same storage:
//! the machine is rebuilt from what was persisted, the decisions in flight
//! are lost.
//!
//! It also counts what the previous design wrote (the whole state as one
//! value on every change, the poll stats beside it on every poll), so the
//! storage figures before and after come from the same run.

use cf_ssai_core::ads::request::Viewer;
use cf_ssai_core::channel::sequencer::BreakPolicy;
use cf_ssai_core::channel::store::{self, Write};
use cf_ssai_core::channel::{Channel, Effect, Health, Input, PollFailure, Polled, Step};
use cf_ssai_core::hls::media;
use cf_ssai_core::model::{BreakEntry, BreakRecord, ChannelView, Pod};
use cf_ssai_core::scte35::cues::{self, SegmentationPolicy};
use cf_ssai_core::splice::edge::PodKey;
use std::collections::BTreeMap;

use crate::sim::SimChannel;

/// What a storage layout wrote: operations, bytes, the largest single
/// write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub writes: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

impl Written {
    fn add(&mut self, bytes: usize) {
        let b = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.writes += 1;
        self.bytes += b;
        self.max_bytes = self.max_bytes.max(b);
    }
}

/// The object's storage, in memory, with what each layout wrote.
#[derive(Debug, Clone, Default)]
pub struct Storage {
    pub keys: BTreeMap<String, String>,
    /// The per-key layout (what the object writes now).
    pub written: Written,
    /// The single-value layout before it: the whole state on every change
    /// and the poll stats on every poll.
    pub legacy: Written,
}

impl Storage {
    fn apply(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::Put { key, value } => {
                    self.written.add(w.bytes());
                    self.keys.insert(key.clone(), value.clone());
                }
                Write::Delete(k) => {
                    // A delete is a write too (billed as one).
                    self.written.add(0);
                    self.keys.remove(k);
                }
            }
        }
    }

    /// The machine as a new instance loads it.
    pub fn load(&self) -> Option<Channel> {
        store::load(self.keys.iter().map(|(k, v)| (k.as_str(), v.as_str()))).ok()?
    }
}

/// Everything written to KV, with when.
#[derive(Debug, Clone, Default)]
pub struct Kv {
    pub views: Vec<(i64, ChannelView)>,
    pub pods: Vec<(i64, PodKey, Pod)>,
    pub written: Written,
}

impl Kv {
    /// The view a location lagging `lag_ms` behind sees at `now`.
    pub fn view(&self, now: i64, lag_ms: i64) -> Option<&ChannelView> {
        self.views
            .iter()
            .rev()
            .find(|(t, _)| *t <= now - lag_ms)
            .map(|(_, v)| v)
    }

    /// A pod as such a location sees it.
    pub fn pod(&self, now: i64, lag_ms: i64, key: &PodKey) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|(t, k, _)| k == key && *t <= now - lag_ms)
            .map(|(_, _, p)| p)
    }
}

/// How the decision service answers.
pub type DecideFn = Box<dyn FnMut(&BreakRecord) -> Pod>;
/// How it answers for an audience cohort (`None`: the call fails).
pub type DecideCohortFn = Box<dyn FnMut(&BreakRecord, &Viewer) -> Option<Pod>>;

/// The Channel DO over simulated time.
pub struct Driver {
    pub sim: SimChannel,
    /// The variant the poller reads.
    pub variant: String,
    pub policy: BreakPolicy,
    /// Configured poll interval (0: from the cadence).
    pub poll_interval_ms: u64,
    pub machine: Channel,
    /// What storage holds (the next write is the difference from it).
    stored: Option<Channel>,
    /// What the single-value layout held (for [`Storage::legacy`]).
    legacy: Option<Channel>,
    pub storage: Storage,
    pub kv: Kv,
    /// Decided breaks recorded in the history (D1), with when.
    pub history: Vec<(i64, BreakEntry)>,
    /// Health reported, with when.
    pub health: Vec<(i64, Health)>,
    decide: DecideFn,
    /// The decisions of audience cohorts (`None`: cohorts get the default
    /// pod).
    pub decide_cohort: Option<DecideCohortFn>,
    /// A decision comes back this long after it is asked for; `None`:
    /// never (the call is lost).
    pub decision_delay_ms: Option<i64>,
    /// Decisions asked and not answered yet: (answer due, record).
    pub in_flight: Vec<(i64, BreakRecord)>,
    /// Every decision asked for (break id, when).
    pub asked: Vec<(String, i64)>,
    /// The origin fails polls in these `[from, to)` intervals.
    pub origin_down: Vec<(i64, i64)>,
    /// Polls made (their start times).
    pub polls: Vec<i64>,
    /// The object's alarm.
    pub alarm: Option<i64>,
    /// What a poll reads at an instant, when not the simulator's first
    /// variant (a DASH origin: its MPD's window as a media playlist).
    pub origin: Option<OriginFn>,
    /// This instance has fed [`Input::Resumed`].
    resumed: bool,
    pub now: i64,
}

/// An origin's window at an instant, as a media playlist.
pub type OriginFn = Box<dyn Fn(i64) -> String>;

impl Driver {
    /// A driver at the origin's start, its poller not started.
    pub fn new(sim: SimChannel, decide: DecideFn) -> Driver {
        let variant = sim
            .variants
            .first()
            .map(|v| v.name.clone())
            .unwrap_or_default();
        let now = sim.epoch_ms;
        Driver {
            sim,
            variant,
            policy: BreakPolicy::default(),
            poll_interval_ms: 0,
            machine: Channel::default(),
            stored: None,
            legacy: None,
            storage: Storage::default(),
            kv: Kv::default(),
            history: Vec::new(),
            health: Vec::new(),
            decide,
            decide_cohort: None,
            decision_delay_ms: Some(0),
            in_flight: Vec::new(),
            asked: Vec::new(),
            origin_down: Vec::new(),
            polls: Vec::new(),
            alarm: None,
            origin: None,
            resumed: true,
            now,
        }
    }

    /// `ensure-poller`, as the cron sends it.
    pub fn start_poller(&mut self) -> Step {
        let alarm_set = self.alarm.is_some();
        self.feed(Input::StartPoller { alarm_set })
    }

    /// Feed one input at [`Driver::now`] and carry out its effects (and
    /// those of the decisions answered at once, and of a poll it asks for).
    pub fn feed(&mut self, input: Input) -> Step {
        if !self.resumed {
            self.resumed = true;
            if !self.machine.pending.is_empty() {
                self.feed(Input::Resumed);
            }
        }
        let step = self.machine.handle(input, &self.policy, self.now);
        self.carry_out(&step);
        if step.poll {
            self.poll();
        }
        step
    }

    fn carry_out(&mut self, step: &Step) {
        let mut answer_now = Vec::new();
        for e in &step.effects {
            match e {
                Effect::Persist => {
                    let writes = store::diff(self.stored.as_ref(), &self.machine)
                        .expect("the state serializes");
                    self.storage.apply(&writes);
                    self.stored = Some(self.machine.clone());
                    // Before: the whole state (no poller in it) as one
                    // value whenever it changed.
                    let mut whole = self.machine.clone();
                    whole.poller = Default::default();
                    if self.legacy.as_ref() != Some(&whole) {
                        let n = serde_json::to_vec(&whole).map_or(0, |v| v.len());
                        self.storage.legacy.add(n);
                        self.legacy = Some(whole);
                    }
                }
                Effect::Publish => {
                    let view = self.machine.view();
                    let n = serde_json::to_vec(&view).map_or(0, |v| v.len());
                    self.kv.written.add(n);
                    self.kv.views.push((self.now, view));
                }
                Effect::History(entry) => {
                    let n = serde_json::to_vec(&entry.pod).map_or(0, |v| v.len());
                    self.kv.written.add(n);
                    let key = |c: &str| PodKey {
                        break_id: entry.record.id.clone(),
                        cohort: c.to_string(),
                    };
                    self.kv.pods.push((self.now, key(""), entry.pod.clone()));
                    for (c, p) in &entry.cohort_pods {
                        self.kv.pods.push((self.now, key(c), p.clone()));
                    }
                    self.history.push((self.now, (**entry).clone()));
                }
                Effect::Decide(r) => {
                    self.asked.push((r.id.clone(), self.now));
                    match self.decision_delay_ms {
                        Some(0) => answer_now.push(r.clone()),
                        Some(d) => self.in_flight.push((self.now + d, r.clone())),
                        None => {}
                    }
                }
            }
        }
        if let Some(h) = &step.health {
            self.health.push((self.now, h.clone()));
        }
        self.alarm = step.alarm_ms;
        for r in answer_now {
            self.answer(&r);
        }
    }

    fn answer(&mut self, r: &BreakRecord) {
        let pod = (self.decide)(r);
        let viewers = self.machine.cohort_viewers(r);
        let cohort_pods = match self.decide_cohort.as_mut() {
            Some(f) => viewers
                .iter()
                .filter_map(|v| Some((v.cohort.clone(), f(r, v)?)))
                .collect(),
            None => Default::default(),
        };
        self.feed(Input::Decided {
            break_id: r.id.clone(),
            pod,
            cohort_pods,
        });
    }

    /// One poll of the simulated origin at `now`, fed back to the machine.
    fn poll(&mut self) {
        let started = self.now;
        self.polls.push(started);
        let down = self
            .origin_down
            .iter()
            .any(|(a, b)| (*a..*b).contains(&started));
        let outcome = if down {
            Err(PollFailure {
                reason: "origin unreachable".into(),
                cadence_ms: self.sim.cadence_ms,
            })
        } else {
            let text = match &self.origin {
                Some(f) => f(started),
                None => self.sim.media(&self.variant, started),
            };
            match media::parse(&text) {
                Ok(m) => {
                    let det = cues::detect(&m, &SegmentationPolicy::default());
                    Ok(Polled {
                        events: det.events,
                        cadence_ms: self.sim.cadence_ms,
                        examined_through: m.last_msn(),
                        window: cf_ssai_core::channel::sequencer::OriginWindow::of(&m),
                        inband_through: None,
                        interval_ms: cf_ssai_core::channel::monitor::poll_interval_ms(
                            self.poll_interval_ms,
                            self.sim.cadence_ms,
                        ),
                    })
                }
                Err(e) => Err(PollFailure {
                    reason: e.to_string(),
                    cadence_ms: self.sim.cadence_ms,
                }),
            }
        };
        self.feed(Input::Polled {
            started_ms: started,
            deadline_ms: self.sim.cadence_ms,
            outcome,
        });
        // Before: the poll stats under their own key after every poll.
        let n = serde_json::to_vec(&self.machine.poller.stats).map_or(0, |v| v.len());
        self.storage.legacy.add(n);
    }

    /// Run the clock to `until`: the alarm fires when the machine asked
    /// for it, delayed decisions come back when due, in time order.
    pub fn run_until(&mut self, until: i64) {
        loop {
            let decision = self.in_flight.iter().map(|(t, _)| *t).min();
            let next = match (self.alarm, decision) {
                (Some(a), Some(d)) => a.min(d),
                (Some(a), None) => a,
                (None, Some(d)) => d,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if decision == Some(next) {
                let i = self
                    .in_flight
                    .iter()
                    .position(|(t, _)| *t == next)
                    .expect("a decision due now");
                let (_, r) = self.in_flight.remove(i);
                self.answer(&r);
            } else {
                // The alarm fired; it is no longer set.
                self.alarm = None;
                self.feed(Input::Tick);
            }
        }
        self.now = self.now.max(until);
    }

    /// A new instance of the object over the same storage: the machine as
    /// persisted, the decisions in flight lost, the alarm kept (it is
    /// storage's).
    pub fn evict(&mut self) {
        self.machine = self.storage.load().unwrap_or_default();
        self.stored = self.storage.load();
        self.in_flight.clear();
        self.resumed = false;
    }

    /// Breaks decided, by id, each with how many times it was committed
    /// to the history.
    pub fn decided_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (_, e) in &self.history {
            *m.entry(e.record.id.clone()).or_insert(0) += 1;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cf_ssai_core::model::Slate;

    fn slate(r: &BreakRecord) -> Pod {
        Pod::slate_only(
            &r.id,
            r.duration_ms as f64 / 1000.0,
            Slate::default(),
            String::new(),
        )
    }

    fn sim() -> SimChannel {
        SimChannel {
            cadence_ms: 2000,
            window: 6,
            break_every: 30,
            break_len: 10,
            first_break: 12,
            ..Default::default()
        }
    }

    /// The breaks the origin signalled whose cue a poll could see by `t`.
    fn signalled(ch: &SimChannel, t: i64) -> usize {
        let live = ch.live_msn(t).unwrap_or(0);
        (ch.first_break..=live)
            .filter(|m| ch.break_at(*m).is_some_and(|(a, _)| a == *m))
            .count()
    }

    #[test]
    fn polls_at_the_machines_alarm_times_and_registers_each_break_once() {
        let ch = sim();
        let mut d = Driver::new(ch.clone(), Box::new(slate));
        d.start_poller();
        let end = ch.epoch_ms + 10 * 60_000;
        d.run_until(end);
        // Polls every 1.8 s (90 % of the cadence), phase-locked.
        let gaps: Vec<i64> = d.polls.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g == 1800), "{gaps:?}");
        assert!(d.polls.len() > 300);
        // Every break the origin signalled is decided exactly once.
        let counts = d.decided_counts();
        assert!(
            counts.len() + 1 >= signalled(&ch, end) && counts.len() >= 9,
            "{counts:?}"
        );
        assert!(counts.values().all(|n| *n == 1), "{counts:?}");
        assert_eq!(d.health.len(), 1, "healthy once, reported once");
        // Bounded storage: every write small, only the breaks in view kept.
        assert!(
            d.storage.written.max_bytes < 2048,
            "{:?}",
            d.storage.written
        );
        let breaks = d.machine.breaks.entries.len();
        assert_eq!(d.storage.keys.len(), 1 + 2 * breaks);
        // What storage holds is the machine.
        assert_eq!(d.storage.load().as_ref(), Some(&d.machine));
    }

    #[test]
    fn an_eviction_mid_decision_asks_again_and_decides_once() {
        let ch = sim();
        let mut d = Driver::new(ch.clone(), Box::new(slate));
        d.decision_delay_ms = Some(5_000);
        d.start_poller();
        // Run until the first break is asked for, then evict before the
        // answer comes.
        let mut t = ch.epoch_ms;
        while d.asked.is_empty() {
            t += 100;
            d.run_until(t);
        }
        assert_eq!(d.machine.pending.len(), 1);
        d.evict();
        assert!(
            d.in_flight.is_empty(),
            "the call was lost with the instance"
        );
        assert_eq!(
            d.machine.pending.len(),
            1,
            "the pending break was persisted"
        );
        d.run_until(ch.epoch_ms + 5 * 60_000);
        let first = &d.asked[0].0;
        assert_eq!(
            d.asked.iter().filter(|(id, _)| id == first).count(),
            2,
            "asked again by the new instance"
        );
        let counts = d.decided_counts();
        assert_eq!(counts.get(first), Some(&1));
        assert!(counts.values().all(|n| *n == 1));
        assert!(d.machine.pending.is_empty());
    }

    #[test]
    fn a_lost_decision_is_retried_by_the_machines_clock_with_backoff() {
        let ch = sim();
        let mut d = Driver::new(ch.clone(), Box::new(slate));
        d.decision_delay_ms = None; // every call lost
        d.start_poller();
        let t0 = ch.epoch_ms + 120_000;
        d.run_until(t0);
        let id = d.asked[0].0.clone();
        let times: Vec<i64> = d
            .asked
            .iter()
            .filter(|(x, _)| *x == id)
            .map(|(_, t)| *t)
            .collect();
        let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        // 15 s, then 30 s (at the poll alarm at or after each retry time).
        assert!(gaps.len() >= 2, "{times:?}");
        assert!((15_000..15_000 + 1800).contains(&gaps[0]), "{gaps:?}");
        assert!((30_000..30_000 + 1800).contains(&gaps[1]), "{gaps:?}");
        // Stop the poller: the alarm still comes for the retries alone.
        d.feed(Input::StopPoller);
        let polls = d.polls.len();
        let asked = d.asked.len();
        d.run_until(t0 + 10 * 60_000);
        assert_eq!(d.polls.len(), polls, "no polls once stopped");
        assert!(d.asked.len() > asked, "retries go on");
        assert!(d.machine.pending.iter().all(|p| p.retries >= 3));
    }

    #[test]
    fn a_failing_origin_backs_off_turns_unhealthy_and_recovers() {
        let ch = sim();
        let mut d = Driver::new(ch.clone(), Box::new(slate));
        let down = (ch.epoch_ms + 30_000, ch.epoch_ms + 60_000);
        d.origin_down.push(down);
        d.start_poller();
        d.run_until(ch.epoch_ms + 120_000);
        let failed: Vec<i64> = d
            .polls
            .iter()
            .copied()
            .filter(|t| (down.0..down.1).contains(t))
            .collect();
        // Backoff: 4 s, 8 s, 16 s … apart, not every 1.8 s.
        let gaps: Vec<i64> = failed.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] > g[0]), "{gaps:?}");
        assert!(failed.len() <= 4, "{failed:?}");
        assert_eq!(d.machine.poller.stats.errors, failed.len() as u64);
        let reports: Vec<bool> = d.health.iter().map(|(_, h)| h.is_ok()).collect();
        assert_eq!(reports.first(), Some(&true));
        assert_eq!(reports.last(), Some(&true), "recovered: {reports:?}");
        assert_eq!(reports.iter().filter(|ok| !**ok).count(), failed.len());
        assert_eq!(d.machine.poller.failures, 0);
    }

    #[test]
    fn an_eviction_at_any_poll_loses_nothing() {
        let ch = sim();
        let mut reference = Driver::new(ch.clone(), Box::new(slate));
        reference.start_poller();
        let mut d = Driver::new(ch.clone(), Box::new(slate));
        d.start_poller();
        let end = ch.epoch_ms + 6 * 60_000;
        let mut t = ch.epoch_ms;
        while t < end {
            t += 7_000;
            reference.run_until(t);
            d.run_until(t);
            d.evict();
        }
        reference.run_until(end);
        d.run_until(end);
        assert_eq!(d.decided_counts(), reference.decided_counts());
        assert_eq!(d.machine.breaks, reference.machine.breaks);
        assert_eq!(d.polls, reference.polls, "the clock survives evictions");
    }
}
