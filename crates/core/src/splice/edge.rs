//! One playlist request at the edge, sans-IO: what it must read, and the
//! playlist it serves. The manifest worker, the scenario tests, the fan-in
//! simulation and the wasm benchmark all drive [`playlist`] (and, for
//! in-band SCTE-35, [`inband_watermark`]); none of them decides for itself
//! where a request gets its breaks.
//!
//! The driver keeps a [`Reads`] (what it has read so far) and calls the
//! function again after each read it is asked for, like rustls'
//! `process_new_packets` loop: [`Step::Need`] names the next read, a
//! [`Step::Done`] is the answer. The rules, in order:
//!
//! 1. the channel's KV view, when it vouches for the window (examined
//!    through its start, same origin timeline) and knows every cue in it
//!    and every origin discontinuity on a break's boundary
//!    ([`knows_origin_discontinuities`]), with the pods of the breaks the
//!    window needs (immutable, so any copy is good);
//! 2. else this location's copy of the Channel DO's answer (at most
//!    [`DO_ANSWER_TTL_S`] old), when it vouches and knows the same;
//! 3. else the DO itself, asked once with this window's cues;
//! 4. else (the DO is unreachable) the content, unspliced.
//!
//! Each function is idempotent in its reads: a read it was given is never
//! asked for again, so a driver loop always ends (at most four reads).
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

use crate::channel::sequencer::{self, OriginWindow};
use crate::channel::Input;
use crate::hls::media::MediaPlaylist;
use crate::model::{self, BreakEntry, BreakRecord, ChannelBreaks, ChannelView, Pod};
use crate::scte35::cues::CueEvent;
use crate::splice::{
    splice_media, EntryRef, Mode, SpliceInput, SpliceOutput, SpliceSettings, Variant,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::rc::Rc;

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

/// Can a (cached) DO answer serve this window: it vouches for it, knows
/// every cue in it and every origin discontinuity on its breaks'
/// boundaries ([`knows_origin_discontinuities`])?
pub fn answer_serves(b: &ChannelBreaks, req: &MediaRequest<'_>, w: &WindowFacts) -> bool {
    b.vouches_for(w.first_msn, w.last, w.cadence_ms)
        && sequencer::reconcile(req.events, &b.entries).is_empty()
        && knows_origin_discontinuities(req.m, &EntryRef::all(&b.entries))
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

/// Where a request's breaks came from (the `X-CF-SSAI-Breaks` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The KV view and the pods it names.
    View,
    /// This location's copy of the DO's answer.
    CachedAnswer,
    /// The Channel DO, asked by this request.
    Do,
    /// Nothing could be read: the content, unspliced.
    Unavailable,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::View => "view",
            Source::CachedAnswer => "answer",
            Source::Do => "do",
            Source::Unavailable => "none",
        }
    }
}

/// A sync the Channel DO is asked for: the window's cues (and, when the
/// request examined all of them, the watermark they vouch for). The same
/// query is never asked twice within one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoQuery {
    /// The audience cohort the answer is for ("" the default): the DO
    /// answers with its pods and its discontinuity count
    /// (`ChannelBreaks::for_cohort`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cohort: String,
    pub events: Vec<CueEvent>,
    pub cadence_ms: u64,
    /// The window's last MSN when the caller examined every cue in it.
    pub checked_through_msn: Option<u64>,
    /// The window (discontinuities, last PDT: merges and epochs).
    pub window: Option<OriginWindow>,
}

impl DoQuery {
    /// The channel machine's input for this query (what the DO feeds it).
    pub fn input(&self) -> Input {
        Input::Window {
            events: self.events.clone(),
            cadence_ms: self.cadence_ms,
            examined_through: self.checked_through_msn,
            window: self.window.clone(),
        }
    }
}

/// A read the driver must do before the request can be answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Need {
    /// The channel's KV view ([`Reads::view`]).
    View,
    /// These pods from KV ([`Reads::pods`]).
    Pods(Vec<PodKey>),
    /// This location's copy of the DO's answer ([`Reads::cached_answer`]).
    CachedAnswer,
    /// Ask the Channel DO ([`Reads::do_answers`]); cache its answer at the
    /// location for [`DO_ANSWER_TTL_S`].
    Do(DoQuery),
}

/// A pod in KV: a break's default pod, or one cohort's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    pub break_id: String,
    /// "" for the break's default pod.
    pub cohort: String,
}

impl PodKey {
    /// The pod cohort `c` is served for `r`: its own when the record
    /// names it, else the default.
    pub fn of(r: &BreakRecord, c: &str) -> PodKey {
        PodKey {
            break_id: r.id.clone(),
            cohort: if r.has_cohort(c) {
                c.to_string()
            } else {
                String::new()
            },
        }
    }
}

/// What the driver has read for one request. `None`: not read yet;
/// `Some(None)`: read, and there was nothing (or the read failed).
#[derive(Debug, Clone, Default)]
pub struct Reads {
    pub view: Option<Option<ChannelView>>,
    /// Shared with the driver's pod cache: a pod is decoded once per
    /// isolate and never copied per request.
    pub pods: BTreeMap<PodKey, Option<Rc<Pod>>>,
    pub cached_answer: Option<Option<ChannelBreaks>>,
    /// Each DO query asked, with its answer (`None`: the DO failed).
    pub do_answers: Vec<(DoQuery, Option<ChannelBreaks>)>,
}

impl Reads {
    fn do_answer(&self, q: &DoQuery) -> Option<Option<&ChannelBreaks>> {
        self.do_answers
            .iter()
            .find(|(asked, _)| asked == q)
            .map(|(_, a)| a.as_ref())
    }
}

/// The next read, or the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<T> {
    Need(Need),
    Done(T),
}

/// The breaks a window is spliced with, borrowed from the reads.
#[derive(Debug, Clone)]
pub struct Breaks<'r> {
    pub entries: Vec<EntryRef<'r>>,
    /// Discontinuities our breaks put before the first entry.
    pub disc_base: u64,
    pub source: Source,
    /// The latest break that ended before the window (DASH names the
    /// content Period after it: `dash::splice`).
    pub before: Option<&'r BreakRecord>,
}

/// The latest of `records` (sorted by anchor) that ended before
/// `first_msn`.
fn ended_before<'r>(
    records: impl Iterator<Item = &'r BreakRecord>,
    first_msn: u64,
) -> Option<&'r BreakRecord> {
    records.filter(|r| r.end_msn() < first_msn).last()
}

/// One media playlist request, as parsed once by the driver.
pub struct MediaRequest<'a> {
    /// The origin playlist text (after any in-band hold-back) and its parse.
    pub origin: &'a str,
    pub m: &'a MediaPlaylist<'a>,
    /// The cues detected in it (empty when SCTE-35 is off).
    pub events: &'a [CueEvent],
    pub cadence_ms: u64,
    /// Whether this request saw every cue of its window. Not so with
    /// in-band SCTE-35: only the poller looks into the media.
    pub examined: bool,
    /// SGAI: breaks announced this many segments ahead of the window.
    pub ahead: u64,
    /// The viewer's audience cohort ("" the default), from its verified
    /// session.
    pub cohort: &'a str,
    pub playlist_url: &'a url::Url,
    pub variant: &'a Variant,
    pub mode: Mode,
    pub settings: &'a SpliceSettings,
}

impl MediaRequest<'_> {
    fn facts(&self) -> WindowFacts {
        WindowFacts::of(self.m, self.cadence_ms)
    }

    /// The DO query this window sends. It examined every cue of its window
    /// (all of them go to the DO), so the window counts as checked: a
    /// channel nobody polls (SCTE-35 off, `/cue` only) then serves from KV
    /// too.
    pub fn do_query(&self) -> DoQuery {
        let window = OriginWindow::of(self.m);
        DoQuery {
            cohort: self.cohort.to_string(),
            events: self.events.to_vec(),
            cadence_ms: self.cadence_ms,
            checked_through_msn: window
                .as_ref()
                .map(|w| w.last_msn)
                .filter(|_| self.examined),
            window,
        }
    }
}

/// The breaks this window is spliced with, by the rules in the module
/// documentation; borrowed from `reads` (no pod is copied).
pub fn breaks<'r>(req: &MediaRequest<'_>, reads: &'r Reads) -> Step<Breaks<'r>> {
    let w = req.facts();
    let Some(view) = &reads.view else {
        return Step::Need(Need::View);
    };
    if let Some(v) = view.as_ref().filter(|v| view_serves(v, req.events, &w)) {
        let (needed, disc_base) = v.needed_for(w.first_msn, w.last_msn, req.ahead, req.cohort);
        let keys: Vec<PodKey> = needed
            .iter()
            .map(|(r, _)| PodKey::of(r, req.cohort))
            .collect();
        let unread: Vec<PodKey> = keys
            .iter()
            .filter(|k| !reads.pods.contains_key(k))
            .cloned()
            .collect();
        if !unread.is_empty() {
            return Step::Need(Need::Pods(unread));
        }
        let entries: Option<Vec<EntryRef<'r>>> = needed
            .into_iter()
            .zip(&keys)
            .map(|((record, disc_before), key)| {
                let pod = reads.pods.get(key)?.as_deref()?;
                Some(EntryRef {
                    record,
                    pod,
                    disc_before,
                })
            })
            .collect();
        // A pod not visible at this location yet: the DO has it.
        if let Some(entries) = entries.filter(|e| knows_origin_discontinuities(req.m, e)) {
            return Step::Done(Breaks {
                entries,
                disc_base,
                source: Source::View,
                before: ended_before(v.entries.iter().map(|e| &e.record), w.first_msn),
            });
        }
    }
    let Some(answer) = &reads.cached_answer else {
        return Step::Need(Need::CachedAnswer);
    };
    if let Some(b) = answer.as_ref().filter(|b| answer_serves(b, req, &w)) {
        return Step::Done(from_answer(b, Source::CachedAnswer, w.first_msn));
    }
    // An answer the DO gave this request for another query (the in-band
    // watermark's) is fresher than any cached copy, when it is for this
    // audience.
    if let Some(b) = reads
        .do_answers
        .iter()
        .filter(|(q, _)| q.cohort == req.cohort)
        .filter_map(|(_, a)| a.as_ref())
        .find(|b| answer_serves(b, req, &w))
    {
        return Step::Done(from_answer(b, Source::Do, w.first_msn));
    }
    let q = req.do_query();
    match reads.do_answer(&q) {
        None => Step::Need(Need::Do(q)),
        Some(Some(b)) => Step::Done(from_answer(b, Source::Do, w.first_msn)),
        Some(None) => Step::Done(Breaks {
            entries: Vec::new(),
            disc_base: 0,
            source: Source::Unavailable,
            before: None,
        }),
    }
}

/// Whether these breaks know every discontinuity the origin has in this
/// window on one of their own boundaries (`BreakRecord::merged`: one tag
/// carries both, and the origin's `EXT-X-DISCONTINUITY-SEQUENCE` counts
/// it once it leaves the window). Only the sequencer learns a merge, from
/// a window that shows it; a channel nobody polls (`/cue` only) shows the
/// sequencer windows only through the edges' syncs. So an edge that sees
/// such a discontinuity unknown to what it read must ask the DO, while the
/// segment is still in the origin's window: once it has left, nobody can
/// tell, and every later window would count it twice. The playlist served
/// meanwhile is the same either way (a merge only changes the count of
/// discontinuities before the window).
pub fn knows_origin_discontinuities(m: &MediaPlaylist<'_>, entries: &[EntryRef<'_>]) -> bool {
    let mut origin = m
        .segments
        .iter()
        .filter(|s| s.discontinuity)
        .map(|s| s.msn)
        .peekable();
    if origin.peek().is_none() {
        return true;
    }
    let boundaries: Vec<(u64, &[u64])> = entries
        .iter()
        .flat_map(|e| {
            let slots = model::layout(e.record, e.pod);
            model::discontinuity_msns(e.record, &slots)
                .map(|msn| (msn, e.record.merged.as_slice()))
                .collect::<Vec<_>>()
        })
        .collect();
    origin.all(|d| {
        boundaries
            .iter()
            .all(|(msn, merged)| *msn != d || merged.contains(&d))
    })
}

fn from_answer(b: &ChannelBreaks, source: Source, first_msn: u64) -> Breaks<'_> {
    Breaks {
        entries: EntryRef::all(&b.entries),
        disc_base: b.disc_base,
        source,
        before: ended_before(b.entries.iter().map(|e| &e.record), first_msn),
    }
}

/// A served media playlist and where its breaks came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub output: SpliceOutput,
    pub source: Source,
}

/// The playlist a media request gets: [`breaks`], then the splice.
pub fn playlist(req: &MediaRequest<'_>, reads: &Reads) -> Step<Served> {
    match breaks(req, reads) {
        Step::Need(n) => Step::Need(n),
        Step::Done(b) => Step::Done(Served {
            output: splice_media(
                req.m,
                &SpliceInput {
                    origin: req.origin,
                    playlist_url: req.playlist_url,
                    breaks: &b.entries,
                    disc_base: b.disc_base,
                    variant: req.variant,
                    mode: req.mode,
                    settings: req.settings,
                },
            ),
            source: b.source,
        }),
    }
}

/// The entries of a DO answer worth caching at the location for the SGAI
/// and ad routes: those the KV view does not know yet.
pub fn entries_to_cache<'b>(
    answer: &'b ChannelBreaks,
    view: Option<&ChannelView>,
) -> Vec<&'b BreakEntry> {
    answer
        .entries
        .iter()
        .filter(|e| view.is_none_or(|v| v.find(&e.record.id).is_none()))
        .collect()
}

/// In-band SCTE-35: how far the sequencer has looked into the media, so
/// that no segment it has not examined is served (a cue inside it would
/// reach some viewers as content first). The KV view's watermark when it
/// lags the window by at most one segment (the poll cadence), else this
/// location's copy of the DO's answer, else the DO itself (a sync that
/// examined nothing). `Done(None)`: the sequencer is unreachable or behind
/// the whole window (its poller is not running): the window is served as
/// it is.
/// (`cohort`: the request's audience, so that a DO answer this asks for
/// can serve the playlist too.)
pub fn inband_watermark(
    m: &MediaPlaylist<'_>,
    cadence_ms: u64,
    cohort: &str,
    reads: &Reads,
) -> Step<Option<u64>> {
    let (Some(last), Some(first)) = (m.last_msn(), m.segments.first().map(|s| s.msn)) else {
        return Step::Done(None);
    };
    let fresh = |w: u64| w.saturating_add(1) >= last;
    let Some(view) = &reads.view else {
        return Step::Need(Need::View);
    };
    if let Some(v) = view.as_ref().filter(|v| fresh(v.checked_through_msn)) {
        return Step::Done(Some(v.checked_through_msn));
    }
    let Some(answer) = &reads.cached_answer else {
        return Step::Need(Need::CachedAnswer);
    };
    if let Some(b) = answer.as_ref().filter(|b| fresh(b.checked_through_msn)) {
        return Step::Done(Some(b.checked_through_msn));
    }
    let q = DoQuery {
        cohort: cohort.to_string(),
        events: Vec::new(),
        cadence_ms,
        checked_through_msn: None,
        window: OriginWindow::of(m),
    };
    match reads.do_answer(&q) {
        None => Step::Need(Need::Do(q)),
        Some(b) => Step::Done(b.map(|b| b.checked_through_msn).filter(|w| *w >= first)),
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
