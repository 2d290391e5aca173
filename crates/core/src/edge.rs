//! What a playlist request may splice with, decided the same way by the
//! manifest worker and by the fan-in simulation (`tests/fanin.rs`): the
//! channel's KV view when it can vouch for the window, else this
//! location's cached copy of the Channel DO's answer (at most a second
//! old) when that can, else the DO itself.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

use crate::cues::CueEvent;
use crate::media::MediaPlaylist;
use crate::model::{ChannelBreaks, ChannelView};
use crate::sequencer;

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
