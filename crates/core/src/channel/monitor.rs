//! The channel's poller as machine state: when each poll is due (the
//! object's alarm), backoff after failed polls, the health the channel
//! last reported, the in-band watermark, and the bookkeeping that shows
//! whether every channel is polled within its cadence. Pure; the DO
//! supplies the clock and carries out the polls.

use serde::{Deserialize, Serialize};

/// The poll interval: configured, else 90 % of the segment cadence, so that
/// interval + fetch time stays under one target duration and a cue is
/// detected within one target duration of appearing in the origin.
pub fn poll_interval_ms(configured_ms: u64, cadence_ms: u64) -> u64 {
    if configured_ms > 0 {
        configured_ms
    } else {
        (cadence_ms.max(1).saturating_mul(9) / 10).max(250)
    }
}

/// When the next poll is due, given when the current one was due. Phase-
/// locked (a poll that takes 80 ms does not push every later poll 80 ms
/// back); after an overrun, right away; without a phase (first poll, after
/// a backoff), one interval from now.
pub fn next_due_ms(due_ms: Option<i64>, interval_ms: u64, now_ms: i64) -> i64 {
    let interval = i64::try_from(interval_ms).unwrap_or(i64::MAX);
    match due_ms {
        Some(d) if d.saturating_add(interval) > now_ms => d.saturating_add(interval),
        Some(_) => now_ms.saturating_add(1),
        None => now_ms.saturating_add(interval),
    }
}

/// One channel's poll record (kept in its Channel DO, shown by the admin
/// API and the dashboard, read by the scale test).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PollStats {
    pub polls: u64,
    pub errors: u64,
    /// Start of the last poll (epoch ms).
    pub last_ms: Option<i64>,
    /// Longest time between the starts of two consecutive polls.
    pub max_gap_ms: i64,
    /// Gaps longer than the deadline (the channel's cadence): polls that
    /// missed the goal.
    pub late: u64,
    /// Sum and maximum of poll durations (fetch + detect + sync).
    pub busy_ms_total: i64,
    pub busy_ms_max: i64,
    /// Why the last failed poll failed (and when), for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl PollStats {
    /// Record a poll that started at `started_ms` and took `busy_ms`.
    pub fn record(&mut self, started_ms: i64, busy_ms: i64, ok: bool, deadline_ms: u64) {
        if let Some(prev) = self.last_ms {
            let gap = started_ms.saturating_sub(prev);
            self.max_gap_ms = self.max_gap_ms.max(gap);
            if gap > i64::try_from(deadline_ms).unwrap_or(i64::MAX) {
                self.late = self.late.saturating_add(1);
            }
        }
        self.last_ms = Some(started_ms);
        self.polls = self.polls.saturating_add(1);
        if !ok {
            self.errors = self.errors.saturating_add(1);
        }
        self.busy_ms_total = self.busy_ms_total.saturating_add(busy_ms.max(0));
        self.busy_ms_max = self.busy_ms_max.max(busy_ms);
    }

    /// After a pause (poller stopped, backoff), the next gap says nothing
    /// about keeping cadence.
    pub fn restart(&mut self) {
        self.last_ms = None;
    }
}

/// A fresh poller's first poll, this long after it was asked for.
pub const START_DELAY_MS: i64 = 10;

/// An alarm may fire this much before its time and still poll.
const EARLY_MS: i64 = 5;

/// The last error kept for operators is cut to this many characters: the
/// poller's state is written on every poll and must stay small.
pub const LAST_ERROR_CHARS: usize = 240;

/// Exponential backoff after `failures` consecutive failed polls: the
/// configured cadence (at least 1 s) × 2^n, capped at 60 s (the cron
/// restarts a stopped poller anyway).
pub fn backoff_ms(cadence_ms: u64, failures: u32) -> u64 {
    let factor = 1u64.checked_shl(failures.min(6)).unwrap_or(64);
    cadence_ms.max(1000).saturating_mul(factor).min(60_000)
}

/// The channel's poller, persisted with the channel's breaks: its clock
/// (when the next poll is due: the Durable Object's alarm), its health and
/// how far it examined in-band SCTE-35. A new instance of the object (an
/// eviction, a deploy) carries on from here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Poller {
    /// The channel wants a poller (`ensure-poller` until the channel is no
    /// longer polled).
    #[serde(default)]
    pub running: bool,
    /// When the next poll is due; the phase every later poll keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_poll_ms: Option<i64>,
    /// Consecutive failed polls (the backoff's exponent).
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub stats: PollStats,
    /// The newest MSN whose media was examined for in-band SCTE-35
    /// (`cue_source: inband | both`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inband_msn: Option<u64>,
    /// The health last reported for the channel (to D1): a healthy poll
    /// after a failure, or the first one, reports again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

impl Poller {
    /// Is a poll due at `now`?
    pub fn due(&self, now_ms: i64) -> bool {
        self.running
            && self
                .next_poll_ms
                .is_some_and(|t| now_ms.saturating_add(EARLY_MS) >= t)
    }

    /// Start (or restart, when its alarm was lost) polling; whether it was
    /// started.
    pub fn start(&mut self, alarm_set: bool, now_ms: i64) -> bool {
        if self.running && alarm_set {
            return false;
        }
        self.running = true;
        self.next_poll_ms = Some(now_ms.saturating_add(START_DELAY_MS));
        // The pause says nothing about keeping cadence.
        self.stats.restart();
        true
    }

    /// The channel is no longer polled (inactive, SCTE-35 off, deleted).
    pub fn stop(&mut self) {
        self.running = false;
        self.next_poll_ms = None;
        self.stats.restart();
    }

    /// A poll that started at `started_ms` succeeded; the next is due one
    /// interval after this one was (phase-locked). Returns whether the
    /// channel's health must be reported (recovered, or never reported).
    pub fn succeeded(
        &mut self,
        started_ms: i64,
        interval_ms: u64,
        deadline_ms: u64,
        now_ms: i64,
    ) -> bool {
        self.stats.record(
            started_ms,
            now_ms.saturating_sub(started_ms),
            true,
            deadline_ms,
        );
        self.failures = 0;
        if self.running {
            self.next_poll_ms = Some(next_due_ms(self.next_poll_ms, interval_ms, now_ms));
        }
        let report = self.healthy != Some(true);
        self.healthy = Some(true);
        report
    }

    /// A poll failed: count it, keep the reason, back off. Every failure is
    /// reported (the channel turns unhealthy after three in a row).
    pub fn failed(
        &mut self,
        started_ms: i64,
        reason: &str,
        cadence_ms: u64,
        deadline_ms: u64,
        now_ms: i64,
    ) {
        self.stats.record(
            started_ms,
            now_ms.saturating_sub(started_ms),
            false,
            deadline_ms,
        );
        let mut why: String = reason.chars().take(LAST_ERROR_CHARS).collect();
        why.push_str(&format!(" (at {started_ms})"));
        self.stats.last_error = Some(why);
        // The backoff pause is not a missed cadence: restart the gap.
        self.stats.restart();
        self.failures = self.failures.saturating_add(1);
        self.healthy = Some(false);
        if self.running {
            let pause = i64::try_from(backoff_ms(cadence_ms, self.failures)).unwrap_or(60_000);
            self.next_poll_ms = Some(now_ms.saturating_add(pause));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_defaults_under_the_cadence() {
        assert_eq!(poll_interval_ms(0, 2000), 1800);
        assert_eq!(poll_interval_ms(0, 1920), 1728);
        assert_eq!(poll_interval_ms(0, 100), 250);
        assert_eq!(poll_interval_ms(5000, 2000), 5000);
    }

    #[test]
    fn due_times_stay_phase_locked() {
        assert_eq!(next_due_ms(None, 1800, 1000), 2800);
        // A poll that finished 80 ms after its due time keeps the phase.
        assert_eq!(next_due_ms(Some(1000), 1800, 1080), 2800);
        // An overrun (poll took longer than the interval): right away.
        assert_eq!(next_due_ms(Some(1000), 1800, 3000), 3001);
    }

    #[test]
    fn stats_count_gaps_over_the_deadline() {
        let mut s = PollStats::default();
        s.record(0, 20, true, 2000);
        s.record(1800, 30, true, 2000);
        s.record(4000, 10, false, 2000);
        assert_eq!((s.polls, s.errors, s.late, s.max_gap_ms), (3, 1, 1, 2200));
        assert_eq!((s.busy_ms_total, s.busy_ms_max), (60, 30));
        s.restart();
        s.record(60_000, 10, true, 2000);
        assert_eq!((s.late, s.max_gap_ms), (1, 2200));
    }

    #[test]
    fn the_poller_keeps_its_phase_backs_off_and_reports_health_on_change() {
        let mut p = Poller::default();
        assert!(!p.due(0));
        assert!(p.start(false, 0));
        assert!(!p.start(true, 5), "running with its alarm set");
        assert!(p.due(10));
        assert!(p.succeeded(10, 1800, 2000, 90), "first health report");
        assert_eq!(p.next_poll_ms, Some(1810));
        assert!(
            !p.succeeded(1810, 1800, 2000, 1850),
            "still healthy: nothing to report"
        );
        assert_eq!(p.next_poll_ms, Some(3610));
        p.failed(3610, "origin down", 2000, 2000, 3700);
        assert_eq!((p.failures, p.next_poll_ms), (1, Some(3700 + 4000)));
        p.failed(7700, &"x".repeat(1000), 2000, 2000, 7800);
        assert_eq!(p.next_poll_ms, Some(7800 + 8000));
        assert!(p.stats.last_error.as_ref().unwrap().len() < LAST_ERROR_CHARS + 20);
        assert!(
            p.succeeded(15_800, 1800, 2000, 15_900),
            "recovered: reported"
        );
        assert_eq!(p.failures, 0);
        assert_eq!(backoff_ms(2000, 10), 60_000);
        p.stop();
        assert!(!p.due(1_000_000));
        assert!(p.start(true, 20_000), "a stopped poller starts again");
    }
}
