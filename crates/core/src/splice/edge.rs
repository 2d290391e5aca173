//! What a playlist request may splice with, decided the same way by the
//! manifest worker and by the fan-in simulation (`tests/fanin.rs`): the
//! channel's KV view when it can vouch for the window, else this
//! location's cached copy of the Channel DO's answer (at most a second
//! old) when that can, else the DO itself.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

use crate::channel::sequencer;
use crate::hls::media::MediaPlaylist;
use crate::model::{ChannelBreaks, ChannelView};
use crate::scte35::cues::CueEvent;

/// How long a location keeps the DO's answer: fan-in to the channel's one
/// object is then about one call per location per second, whatever the
/// number of viewers.
pub const DO_ANSWER_TTL_S: u32 = 1;

/// The facts of an origin window the choice needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFacts {
    pub first_msn: u64,
    pub last_msn: u64,
    /// The last segment's (MSN, PDT), when it has a PDT.
    pub last: Option<(u64, i64)>,
    pub cadence_ms: u64,
}

impl WindowFacts {
    pub fn of(m: &MediaPlaylist<'_>, cadence_ms: u64) -> WindowFacts {
        let first_msn = m.segments.first().map_or(m.media_sequence, |s| s.msn);
        WindowFacts {
            first_msn,
            last_msn: m.segments.last().map_or(first_msn, |s| s.msn),
            last: m.segments.last().and_then(|s| s.pdt_ms.map(|p| (s.msn, p))),
            cadence_ms,
        }
    }
}

/// Can the KV view serve this window: it vouches for it (examined through
/// its start, same origin timeline) and knows every cue in it?
pub fn view_serves(view: &ChannelView, events: &[CueEvent], w: &WindowFacts) -> bool {
    view.vouches_for(w.first_msn, w.last, w.cadence_ms)
        && sequencer::reconcile_records(events, &view.records()).is_empty()
}

/// Can a (cached) DO answer serve this window?
pub fn answer_serves(b: &ChannelBreaks, events: &[CueEvent], w: &WindowFacts) -> bool {
    b.vouches_for(w.first_msn, w.last, w.cadence_ms)
        && sequencer::reconcile(events, &b.entries).is_empty()
}

/// Where a request gets its breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    View,
    CachedAnswer,
    AskDo,
}

/// An origin playlist URL as a cache key part, one spelling per resource:
/// the `url` crate has already resolved `.` segments and lower-cased the
/// scheme and host; this adds the rest of RFC 3986 §6.2.2's normalisation
/// (percent-escapes of unreserved characters decoded, other escapes in
/// upper case). Else `v360/%69ndex.m3u8` would be another cache entry for
/// the same playlist, and one client could make every request a miss.
pub fn cache_url(u: &url::Url) -> String {
    let s = u.as_str().as_bytes();
    let mut out = String::with_capacity(s.len());
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        let esc = match (s.get(i.wrapping_add(1)), s.get(i.wrapping_add(2))) {
            (Some(&h), Some(&l)) if b == b'%' => hex(h)
                .zip(hex(l))
                .and_then(|(h, l)| h.checked_mul(16)?.checked_add(l)),
            _ => None,
        };
        match esc.and_then(|v| u8::try_from(v).ok()) {
            Some(v) if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(v));
                i = i.saturating_add(3);
            }
            Some(v) => {
                out.push_str(&format!("%{v:02X}"));
                i = i.saturating_add(3);
            }
            None => {
                out.push(char::from(b));
                i = i.saturating_add(1);
            }
        }
    }
    out
}

pub fn choose(
    view: Option<&ChannelView>,
    cached_answer: Option<&ChannelBreaks>,
    events: &[CueEvent],
    w: &WindowFacts,
) -> Source {
    if view.is_some_and(|v| view_serves(v, events, w)) {
        Source::View
    } else if cached_answer.is_some_and(|b| answer_serves(b, events, w)) {
        Source::CachedAnswer
    } else {
        Source::AskDo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_urls_have_one_spelling() {
        let key = |rest: &str| {
            let base = url::Url::parse("https://Origin.Example/live/ch1/master.m3u8").unwrap();
            cache_url(&base.join(rest).unwrap())
        };
        let canon = key("v360/index.m3u8");
        assert_eq!(canon, "https://origin.example/live/ch1/v360/index.m3u8");
        for same in [
            "./v360/index.m3u8",
            "v360/./index.m3u8",
            "v360/%69ndex.m3u8",
            "%76360/index%2Em3u8",
        ] {
            assert_eq!(key(same), canon, "{same}");
        }
        // Reserved characters stay escaped (one case); bad escapes stay.
        assert_eq!(key("a%2fb.m3u8"), key("a%2Fb.m3u8"));
        assert_ne!(key("a%2Fb.m3u8"), key("a/b.m3u8"));
        assert!(key("x%zz.m3u8").ends_with("/x%zz.m3u8"));
        assert!(key("x%4.m3u8").ends_with("/x%4.m3u8"));
        assert!(key("x%").ends_with("/x%"));
    }
}
