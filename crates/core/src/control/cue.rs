//! An operator cue (`POST /cue`): its duration, where it lands on the live
//! origin (the next segment boundary, or the first boundary at or after a
//! scheduled time) and its break id. Pure: the worker fetches the origin
//! playlist and hands over its last segment.
//!
//! Every step is checked arithmetic: the last segment's sequence number,
//! date and duration come from an origin we do not control, and a
//! schedule's time from the caller, so an overflow is a refused cue with a
//! reason, never a wrapped anchor.

use core::fmt;

/// Longest cue accepted, in seconds.
pub const MAX_DURATION_S: f64 = 600.0;

/// What made a cue unusable; each says which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CueError {
    /// `duration` missing where required, or out of range.
    Duration(&'static str),
    /// `start_at` cannot be anchored on this origin.
    StartAt(&'static str),
    /// A computed position does not fit (a hostile or broken origin, or a
    /// time too far ahead): names what overflowed.
    Overflow(&'static str),
}

impl fmt::Display for CueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CueError::Duration(m) => write!(f, "duration: {m}"),
            CueError::StartAt(m) => write!(f, "start_at: {m}"),
            CueError::Overflow(what) => write!(f, "cue cannot be anchored: {what} overflows"),
        }
    }
}

/// A cue's length in ms from the request's seconds: required (for start
/// and schedule), finite, in (0, [`MAX_DURATION_S`]].
pub fn duration_ms(duration_s: Option<f64>) -> Result<u64, CueError> {
    match duration_s {
        Some(d) if d.is_finite() && d > 0.0 && d <= MAX_DURATION_S => {
            Ok((d * 1000.0).round() as u64)
        }
        Some(_) => Err(CueError::Duration(
            "must be a number of seconds in (0, 600]",
        )),
        None => Err(CueError::Duration("required for start and schedule")),
    }
}

/// The origin's last segment, as the worker parsed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastSegment {
    pub msn: u64,
    pub pdt_ms: Option<i64>,
    pub duration_s: f64,
}

/// Where a cue lands: the media sequence number of its first segment and
/// that segment's program date-time, when the origin carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub msn: u64,
    pub pdt_ms: Option<i64>,
}

/// The anchor after `last`: the next segment boundary, or with
/// `start_at_ms` the first boundary at or after it, counted in `cadence_ms`
/// steps (0 is taken as 1) from the next boundary's date.
pub fn anchor(
    last: LastSegment,
    start_at_ms: Option<i64>,
    cadence_ms: u64,
) -> Result<Anchor, CueError> {
    let next_msn = last
        .msn
        .checked_add(1)
        .ok_or(CueError::Overflow("the next media sequence number"))?;
    let next_pdt = last
        .pdt_ms
        .map(|p| end_of(p, last.duration_s))
        .transpose()?;
    let Some(at) = start_at_ms else {
        return Ok(Anchor {
            msn: next_msn,
            pdt_ms: next_pdt,
        });
    };
    let Some(np) = next_pdt else {
        return Err(CueError::StartAt(
            "the origin has no PROGRAM-DATE-TIME to schedule against",
        ));
    };
    let cadence = cadence_ms.max(1);
    let wait = at
        .checked_sub(np)
        .ok_or(CueError::Overflow("start_at's distance from the live edge"))?
        .max(0)
        .unsigned_abs();
    let ahead = wait.div_ceil(cadence);
    let msn = next_msn
        .checked_add(ahead)
        .ok_or(CueError::Overflow("the scheduled media sequence number"))?;
    let pdt = ahead
        .checked_mul(cadence)
        .and_then(|ms| i64::try_from(ms).ok())
        .and_then(|ms| np.checked_add(ms))
        .ok_or(CueError::Overflow("the scheduled program date-time"))?;
    Ok(Anchor {
        msn,
        pdt_ms: Some(pdt),
    })
}

/// The date a segment ends: its start plus its duration (finite, not
/// negative, in range).
fn end_of(pdt_ms: i64, duration_s: f64) -> Result<i64, CueError> {
    let ms = (duration_s * 1000.0).round();
    if !(ms.is_finite() && ms >= 0.0 && ms < i64::MAX as f64) {
        return Err(CueError::Overflow("the last segment's duration"));
    }
    pdt_ms
        .checked_add(ms as i64)
        .ok_or(CueError::Overflow("the next program date-time"))
}

/// The cue's break id: the caller's event id, else its idempotency key,
/// else its pod id, reduced to `[A-Za-z0-9_-]{0,64}`; else the anchor's
/// sequence number. Prefixed `cue-` (never a signalled break's id).
pub fn break_id(
    event_id: Option<&str>,
    idempotency_key: Option<&str>,
    pod_id: Option<&str>,
    anchor_msn: u64,
) -> String {
    let given = event_id
        .map(String::from)
        .or(idempotency_key.map(String::from))
        .or(pod_id.map(|p| format!("pod-{p}")));
    match given {
        Some(s) => {
            let clean: String = s
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .take(64)
                .collect();
            format!("cue-{clean}")
        }
        None => format!("cue-{anchor_msn}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(msn: u64, pdt_ms: Option<i64>, duration_s: f64) -> LastSegment {
        LastSegment {
            msn,
            pdt_ms,
            duration_s,
        }
    }

    #[test]
    fn duration_bounds() {
        assert_eq!(duration_ms(Some(30.0)), Ok(30_000));
        assert_eq!(duration_ms(Some(600.0)), Ok(600_000));
        assert_eq!(duration_ms(Some(0.0004)), Ok(0));
        for bad in [0.0, -1.0, 600.001, f64::NAN, f64::INFINITY, f64::MAX] {
            assert!(
                matches!(duration_ms(Some(bad)), Err(CueError::Duration(_))),
                "{bad}"
            );
        }
        assert!(matches!(duration_ms(None), Err(CueError::Duration(_))));
    }

    #[test]
    fn next_boundary_without_schedule() {
        let a = anchor(last(100, Some(1_000_000), 2.0), None, 2000).unwrap();
        assert_eq!(
            a,
            Anchor {
                msn: 101,
                pdt_ms: Some(1_002_000)
            }
        );
        let a = anchor(last(100, None, 2.0), None, 2000).unwrap();
        assert_eq!(
            a,
            Anchor {
                msn: 101,
                pdt_ms: None
            }
        );
    }

    #[test]
    fn schedule_rounds_up_to_a_boundary() {
        // Next boundary at 1_002_000; 4.5 s later is 3 segments of 2 s on.
        let a = anchor(last(100, Some(1_000_000), 2.0), Some(1_006_500), 2000).unwrap();
        assert_eq!(
            a,
            Anchor {
                msn: 104,
                pdt_ms: Some(1_008_000)
            }
        );
        // A time already passed anchors at the next boundary.
        let a = anchor(last(100, Some(1_000_000), 2.0), Some(0), 2000).unwrap();
        assert_eq!(a.msn, 101);
        // Cadence 0 counts in 1 ms steps, never divides by zero.
        let a = anchor(last(1, Some(0), 1.0), Some(1_010), 0).unwrap();
        assert_eq!(a.msn, 2 + 10);
    }

    #[test]
    fn schedule_needs_program_date_time() {
        assert!(matches!(
            anchor(last(1, None, 2.0), Some(5), 2000),
            Err(CueError::StartAt(_))
        ));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        // The origin's sequence number at the top of its range.
        assert_eq!(
            anchor(last(u64::MAX, None, 2.0), None, 2000),
            Err(CueError::Overflow("the next media sequence number"))
        );
        // A date at the end of time, or a duration that is no number.
        assert!(matches!(
            anchor(last(1, Some(i64::MAX - 5), 2.0), None, 2000),
            Err(CueError::Overflow(_))
        ));
        for d in [f64::MAX, f64::INFINITY, f64::NAN, -2.0] {
            assert!(
                matches!(
                    anchor(last(1, Some(0), d), None, 2000),
                    Err(CueError::Overflow(_))
                ),
                "{d}"
            );
        }
        // A schedule so far ahead that the sequence number overflows.
        assert!(matches!(
            anchor(last(u64::MAX - 2, Some(0), 1.0), Some(i64::MAX), 1),
            Err(CueError::Overflow(_))
        ));
        // start_at minus a date far in the past overflows i64.
        assert!(matches!(
            anchor(last(1, Some(i64::MIN + 10), 0.0), Some(i64::MAX), 2000),
            Err(CueError::Overflow(_))
        ));
        // Boundary date past i64 after whole cadences.
        assert!(matches!(
            anchor(last(1, Some(0), 0.0), Some(i64::MAX - 1), 1 << 40),
            Err(CueError::Overflow(_))
        ));
    }

    #[test]
    fn overflow_messages_name_the_field() {
        let e = anchor(last(u64::MAX, None, 2.0), None, 2000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cue cannot be anchored: the next media sequence number overflows"
        );
        assert_eq!(
            duration_ms(None).unwrap_err().to_string(),
            "duration: required for start and schedule"
        );
    }

    #[test]
    fn break_ids() {
        assert_eq!(break_id(Some("ev 1/x"), Some("k"), None, 7), "cue-ev1x");
        assert_eq!(break_id(None, Some("key-1"), Some("p"), 7), "cue-key-1");
        assert_eq!(break_id(None, None, Some("9"), 7), "cue-pod-9");
        assert_eq!(break_id(None, None, None, 7), "cue-7");
        assert_eq!(
            break_id(Some(&"a".repeat(100)), None, None, 7).len(),
            4 + 64
        );
    }
}
