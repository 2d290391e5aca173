//! The SCTE-35 monitor's poller arithmetic: when each Channel DO alarm is
//! due, and the bookkeeping that shows whether every channel is polled
//! within its cadence. Pure; the DO supplies the clock.

use serde::{Deserialize, Serialize};

/// The poll interval: configured, else 90 % of the segment cadence, so that
/// interval + fetch time stays under one target duration and a cue is
/// detected within one target duration of appearing in the origin.
pub fn poll_interval_ms(configured_ms: u64, cadence_ms: u64) -> u64 {
    if configured_ms > 0 {
        configured_ms
    } else {
        (cadence_ms.max(1) * 9 / 10).max(250)
    }
}

/// When the next poll is due, given when the current one was due. Phase-
/// locked (a poll that takes 80 ms does not push every later poll 80 ms
/// back); after an overrun, right away; without a phase (first poll, after
/// a backoff), one interval from now.
pub fn next_due_ms(due_ms: Option<i64>, interval_ms: u64, now_ms: i64) -> i64 {
    match due_ms {
        Some(d) if d + interval_ms as i64 > now_ms => d + interval_ms as i64,
        Some(_) => now_ms + 1,
        None => now_ms + interval_ms as i64,
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
            let gap = started_ms - prev;
            self.max_gap_ms = self.max_gap_ms.max(gap);
            if gap > deadline_ms as i64 {
                self.late += 1;
            }
        }
        self.last_ms = Some(started_ms);
        self.polls += 1;
        if !ok {
            self.errors += 1;
        }
        self.busy_ms_total += busy_ms.max(0);
        self.busy_ms_max = self.busy_ms_max.max(busy_ms);
    }

    /// After a pause (poller stopped, backoff), the next gap says nothing
    /// about keeping cadence.
    pub fn restart(&mut self) {
        self.last_ms = None;
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
}
