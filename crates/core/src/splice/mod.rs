//! The stateless splice: origin media playlist + break entries in view →
//! the playlist a viewer gets, SSAI or SGAI, as a pure function.
//!
//! SSAI replaces each content segment of a break by exactly one output
//! segment (ad, or slate to fill), so MSNs never shift; the discontinuity
//! sequence is the origin's plus the discontinuities our breaks put before
//! the window, counted from each record's `disc_before` (assigned by the
//! Channel DO). Origin lines are copied byte for byte, except relative URIs,
//! which are resolved against the origin (the player fetches from us).
//!
//! SGAI keeps the content and adds one `EXT-X-DATERANGE` interstitial per
//! break whose attributes depend only on the record, so the tag is the same
//! byte for byte on every reload and node.

#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

pub mod ad_route;
pub mod edge;
pub mod master;
pub mod sgai;

use crate::hls::media::{self, MediaPlaylist, Segment};
use crate::hls::{self, HlsError, Line, Resolver};
use crate::model::{self, AdRendition, BreakEntry, BreakRecord, Pod, Slot, SlotKind, TrackKind};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ssai,
    Sgai,
}

/// What the requesting variant is (from the master rewrite's query).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variant {
    pub bandwidth: Option<u64>,
    pub codecs: Option<String>,
    pub kind: TrackKind,
}

/// A break and its pod, borrowed: the edge splices with the KV view's
/// records and the pods it read (or the DO's entries) without copying a
/// pod per request.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub record: &'a BreakRecord,
    pub pod: &'a Pod,
    /// The running discontinuity count before this break as its audience
    /// is served (the record's own for the default audience; a cohort
    /// whose pods inserted other counts has its own:
    /// `ChannelView::needed_for`).
    pub disc_before: u64,
}

impl<'a> From<&'a BreakEntry> for EntryRef<'a> {
    fn from(e: &'a BreakEntry) -> Self {
        EntryRef {
            record: &e.record,
            pod: &e.pod,
            disc_before: e.record.disc_before,
        }
    }
}

impl EntryRef<'_> {
    /// Borrows each of `entries`.
    pub fn all(entries: &[BreakEntry]) -> Vec<EntryRef<'_>> {
        entries.iter().map(EntryRef::from).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceSettings {
    /// Absolute path prefix of the asset-list endpoint, e.g.
    /// `/org/channel/interstitials/`.
    pub asset_list_prefix: String,
    /// When the SGAI tag is announced, in segments relative to the break's
    /// first segment appearing in the playlist: 0 = with it, 2 = two
    /// segments earlier, -1 = one segment after it. See the README for what
    /// hls.js 1.7 does with each.
    pub announce_ahead_segments: i32,
    /// `X-RESTRICT` (default "SKIP,JUMP"); empty to omit.
    pub restrict: String,
    /// `X-SNAP`; empty to omit (live default).
    pub snap: String,
    /// Remove origin cue tags from the output.
    pub strip_cues: bool,
    /// Add an `EXT-X-DATERANGE` per inserted ad (SSAI).
    pub ad_dateranges: bool,
    /// Deliver ad segments through this path prefix (e.g.
    /// `/org/channel/ad/`) so delivery fires server-side beacons. The URIs
    /// then carry the viewer's session and so differ per viewer.
    pub ad_proxy_prefix: Option<String>,
    /// The viewer session (from the master playlist's `sid`).
    pub session: Option<String>,
    /// The viewer's cohort as asset-list URLs carry it (`c=`, signed:
    /// `control::audience`); `None` for the default audience.
    pub cohort_param: Option<String>,
    /// A per-viewer SGAI decision: the viewer's session and targeting on
    /// the asset-list URL (`sid=…&tg=…`); the playlist is then per viewer.
    pub viewer_query: Option<String>,
    /// A WebVTT file without cues: the subtitle segments of an ad that has
    /// no subtitles.
    pub blank_subtitles_uri: String,
}

/// Where the manifest worker serves a WebVTT file without cues.
pub const BLANK_SUBTITLES_PATH: &str = "/blank.vtt";

/// The body served there (RFC 8216 §3.5: a WebVTT segment; no cues, so no
/// `X-TIMESTAMP-MAP` is needed).
pub const BLANK_SUBTITLES: &str = "WEBVTT\n\n";

impl Default for SpliceSettings {
    fn default() -> Self {
        SpliceSettings {
            asset_list_prefix: "interstitials/".into(),
            announce_ahead_segments: 0,
            restrict: "SKIP,JUMP".into(),
            snap: String::new(),
            strip_cues: false,
            ad_dateranges: true,
            ad_proxy_prefix: None,
            session: None,
            cohort_param: None,
            viewer_query: None,
            blank_subtitles_uri: BLANK_SUBTITLES_PATH.into(),
        }
    }
}

pub struct SpliceInput<'a> {
    pub origin: &'a str,
    pub playlist_url: &'a url::Url,
    /// Entries sorted by anchor MSN, contiguous from the earliest (as the
    /// Channel DO writes them).
    pub breaks: &'a [EntryRef<'a>],
    /// Discontinuities inserted before any entry in view
    /// (`ChannelBreaks::disc_base`): counts when no entry is in view.
    pub disc_base: u64,
    pub variant: &'a Variant,
    pub mode: Mode,
    pub settings: &'a SpliceSettings,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpliceReport {
    /// Why something was not spliced as decided (unfit rendition, ...).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpliceOutput {
    pub playlist: String,
    pub report: SpliceReport,
    /// LL-HLS: the segment in progress whose parts were withheld (a break
    /// replaces it). A blocking reload that asked for one of its parts is
    /// better held until the whole segment is out than answered at once
    /// with nothing new (the client would ask again at once).
    pub withheld_msn: Option<u64>,
}

/// Splice one media playlist.
pub fn splice(input: &SpliceInput<'_>) -> Result<SpliceOutput, HlsError> {
    let m = media::parse(input.origin)?;
    Ok(splice_media(&m, input))
}

/// Splice an already parsed media playlist (the worker parses once for cue
/// detection and the splice). `input.origin` must be the text `m` was
/// parsed from.
pub fn splice_media(m: &MediaPlaylist<'_>, input: &SpliceInput<'_>) -> SpliceOutput {
    let res = Resolver::new(input.playlist_url);
    let mut report = SpliceReport::default();
    let mut out = String::with_capacity(
        input
            .origin
            .len()
            .saturating_add(input.breaks.len().max(1).saturating_mul(512)),
    );
    let first_msn = m.segments.first().map_or(m.media_sequence, |s| s.msn);
    let last_msn = m.last_msn().unwrap_or(first_msn);

    // Breaks overlapping (or, for SGAI, announced in) the window; an entry
    // whose MSN and PDT disagree with this window belongs to another origin
    // epoch (a restart or failover) and is never spliced.
    let reference = m.segments.iter().find(|s| s.pdt_ms.is_some());
    let plans: Vec<Plan<'_>> = input
        .breaks
        .iter()
        .filter(|e| {
            reference.is_none_or(|s| e.record.agrees_with(s.msn, s.pdt_ms, e.record.cadence_ms))
        })
        .map(|e| Plan {
            entry: *e,
            slots: model::layout(e.record, e.pod),
        })
        .collect();
    let disc_seq = match input.mode {
        Mode::Ssai => m.discontinuity_sequence.saturating_add(inserted_before(
            &plans,
            first_msn,
            input.disc_base,
        )),
        Mode::Sgai => m.discontinuity_sequence,
    };

    let lines = &m.tokens.lines;
    let header = lines.get(..m.header_end).unwrap_or_default();
    let wrote_disc_seq = write_header(header, disc_seq, &res, &mut out);
    if !wrote_disc_seq && disc_seq > 0 && input.mode == Mode::Ssai {
        report
            .reasons
            .push("origin has no EXT-X-MEDIA-SEQUENCE; discontinuity sequence appended".into());
    }

    // Trailer: lines after the last segment (LL-HLS: the parts of the
    // segment in progress, its preload hint, rendition reports).
    let trailer_start = m
        .segments
        .last()
        .map_or(m.header_end, |s| s.uri_line.saturating_add(1));
    let trailer = lines
        .get(trailer_start.max(m.header_end)..)
        .unwrap_or_default();
    let edge = live_edge(input.mode, &plans, last_msn, trailer);

    match input.mode {
        Mode::Ssai => {
            // While the live edge is an ad, no part is listed at all, not
            // even the content's before the break: a playlist whose older
            // segments have parts and whose newest have none leaves an LL
            // client (hls.js 1.7) waiting for a next part that never comes
            // (a 4 s stall at every break); without parts it loads whole
            // segments until they return.
            let drop_parts = edge == LiveEdge::Withheld;
            ssai_segments(m, input, &res, &plans, drop_parts, &mut out, &mut report)
        }
        Mode::Sgai => sgai_segments(m, input, &res, &plans, &mut out, &mut report),
    }

    write_trailer(m, input, &res, &plans, edge, trailer, &mut out);
    if !m.tokens.trailing_newline && out.ends_with('\n') {
        out.pop();
    }
    SpliceOutput {
        playlist: out,
        report,
        withheld_msn: (edge == LiveEdge::Withheld && trailer.iter().any(is_part_line))
            .then_some(last_msn.saturating_add(1)),
    }
}

/// The origin's header with our discontinuity sequence (added after
/// `EXT-X-MEDIA-SEQUENCE` when the origin has none) and without delta
/// updates; whether the sequence was written.
fn write_header(header: &[Line<'_>], disc_seq: u64, res: &Resolver<'_>, out: &mut String) -> bool {
    let has_disc_seq = header
        .iter()
        .any(|l| l.is_tag("EXT-X-DISCONTINUITY-SEQUENCE"));
    let mut wrote = false;
    for line in header {
        if line.is_tag("EXT-X-DISCONTINUITY-SEQUENCE") {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}");
            wrote = true;
            continue;
        }
        if line.is_tag("EXT-X-SERVER-CONTROL") {
            out.push_str(&without_skip(line.raw()));
            out.push('\n');
            continue;
        }
        push_line(out, line, res);
        if line.is_tag("EXT-X-MEDIA-SEQUENCE") && !has_disc_seq && disc_seq > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}");
            wrote = true;
        }
    }
    wrote
}

/// The lines after the last segment (LL-HLS: the parts of the segment in
/// progress, its preload hint, rendition reports), as the live edge allows.
fn write_trailer(
    m: &MediaPlaylist<'_>,
    input: &SpliceInput<'_>,
    res: &Resolver<'_>,
    plans: &[Plan<'_>],
    edge: LiveEdge,
    trailer: &[Line<'_>],
    out: &mut String,
) {
    let mut returned = false;
    for line in trailer {
        let part = is_part_line(line);
        if edge == LiveEdge::Withheld && part {
            continue;
        }
        if edge == LiveEdge::Returning && part && !returned {
            // Back to content in the segment in progress: its parts follow
            // an ad segment, so the discontinuity (and the content's init
            // segment, key and date) comes before them, as it will before
            // the whole segment.
            if let Some(seg) = m.segments.last() {
                let keyed = plans.iter().any(|p| pod_has_keys(p.entry.pod));
                let next = Segment {
                    pdt_ms: seg
                        .pdt_ms
                        .map(|p| p.saturating_add((seg.duration * 1000.0).round() as i64)),
                    ..seg.clone()
                };
                content_return(&next, &[], keyed, out, res);
            }
            returned = true;
        }
        if input.settings.strip_cues && is_cue_tag(line) {
            continue;
        }
        if edge == LiveEdge::Withheld && line.is_tag("EXT-X-RENDITION-REPORT") {
            out.push_str(&withheld_report(line.raw()));
            out.push('\n');
            continue;
        }
        push_line(out, line, res);
    }
}

struct Plan<'a> {
    entry: EntryRef<'a>,
    slots: Vec<Slot>,
}

/// An LL-HLS part of the segment in progress, or the hint of its next.
fn is_part_line(l: &Line<'_>) -> bool {
    l.is_tag("EXT-X-PART") || l.is_tag("EXT-X-PRELOAD-HINT")
}

/// What SSAI does with the LL-HLS parts of the segment in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiveEdge {
    /// Content: the parts pass through.
    Content,
    /// The segment in progress is (or may be) replaced by an ad: no part
    /// of it is served, so no viewer plays content the whole segment will
    /// contradict. A cue among its tags withholds it too, until the
    /// sequencer has seen the break on a whole segment. Players then load
    /// whole segments (blocking on `_HLS_msn` alone) until the break ends.
    Withheld,
    /// The first content segment after a break: parts pass through after
    /// the discontinuity.
    Returning,
}

fn live_edge(mode: Mode, plans: &[Plan<'_>], last_msn: u64, trailer: &[Line<'_>]) -> LiveEdge {
    if mode != Mode::Ssai {
        return LiveEdge::Content;
    }
    let next = last_msn.saturating_add(1);
    let spliced = plans.iter().filter(|p| !p.slots.is_empty());
    let cue_ahead = trailer.iter().any(|l| is_cue_tag(l) && !is_return_cue(l));
    if spliced.clone().any(|p| p.entry.record.contains(next)) || cue_ahead {
        LiveEdge::Withheld
    } else if spliced.clone().any(|p| p.entry.record.end_msn() == next) {
        LiveEdge::Returning
    } else {
        LiveEdge::Content
    }
}

/// `EXT-X-SERVER-CONTROL` without `CAN-SKIP-UNTIL`/`CAN-SKIP-DATERANGES`:
/// we never ask the origin for a delta update (`_HLS_skip`), because a
/// splice must see every segment of the window to number it (a delta
/// playlist's `EXT-X-SKIP` hides the segments our counts start from), so
/// clients are told not to ask us for one.
fn without_skip(raw: &str) -> String {
    let (head, attrs) = raw.split_once(':').unwrap_or((raw, ""));
    let kept: Vec<String> = hls::attrs(attrs)
        .filter(|(k, _)| !k.starts_with("CAN-SKIP-"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{head}:{}", kept.join(","))
}

/// A cue that can only end a break (readable without decoding SCTE-35):
/// parts after it are content whatever the sequencer knows.
fn is_return_cue(l: &Line<'_>) -> bool {
    let v = l.value().unwrap_or("");
    l.is_tag("EXT-X-CUE-IN")
        || (l.is_tag("EXT-X-DATERANGE") && v.contains("SCTE35-IN=") && !v.contains("SCTE35-OUT="))
        || (l.is_tag("EXT-X-SCTE35") && v.contains("CUE-IN=YES"))
}

/// A rendition report while the parts of the segment in progress are
/// withheld: every rendition serves the same, so its last whole segment
/// is the one before the part the origin reports (RFC 8216bis 4.4.5.4:
/// LAST-MSN is the part's segment when parts are listed).
fn withheld_report(raw: &str) -> String {
    let (head, attrs) = raw.split_once(':').unwrap_or((raw, ""));
    let has_part = hls::attr(attrs, "LAST-PART").is_some();
    let kept: Vec<String> = hls::attrs(attrs)
        .filter(|(k, _)| *k != "LAST-PART")
        .map(|(k, v)| match (k, v.parse::<u64>()) {
            ("LAST-MSN", Ok(n)) if has_part => format!("LAST-MSN={}", n.saturating_sub(1)),
            ("URI", _) => format!("URI=\"{v}\""),
            _ => format!("{k}={v}"),
        })
        .collect();
    format!("{head}:{}", kept.join(","))
}

/// Discontinuities our breaks put before `first_msn`: everything before the
/// earliest record (its `disc_before`) plus those of records in view.
fn inserted_before(plans: &[Plan<'_>], first_msn: u64, disc_base: u64) -> u64 {
    let base = plans
        .iter()
        .min_by_key(|p| p.entry.record.anchor_msn)
        .map_or(disc_base, |p| p.entry.disc_before);
    plans
        .iter()
        .map(|p| {
            model::discontinuity_msns(p.entry.record, &p.slots)
                .filter(|&msn| msn < first_msn && !p.entry.record.merged.contains(&msn))
                .count() as u64
        })
        .fold(base, u64::saturating_add)
}

/// The slot of a break covering `msn`: its plan, the slot, and the
/// segment's position in it.
fn slot_at<'p, 'e>(plans: &'p [Plan<'e>], msn: u64) -> Option<(&'p Plan<'e>, Slot, u32)> {
    plans.iter().find_map(|p| {
        let r = &p.entry.record;
        if !r.contains(msn) {
            return None;
        }
        let j = u32::try_from(msn.checked_sub(r.anchor_msn)?).ok()?;
        p.slots
            .iter()
            .find(|s| j >= s.start && j < s.start.saturating_add(s.len))
            .map(|s| (p, *s, j.saturating_sub(s.start)))
    })
}

/// What the segments of one SSAI splice share.
struct Ssai<'a> {
    m: &'a MediaPlaylist<'a>,
    input: &'a SpliceInput<'a>,
    res: &'a Resolver<'a>,
    /// LL-HLS parts are dropped while the live edge is withheld.
    drop_parts: bool,
    /// Any pod in view is encrypted: content after it restates its key.
    keyed: bool,
}

/// One origin segment replaced by a segment of a slot.
struct AdSegment<'a, 'e> {
    seg: &'a Segment<'a>,
    seg_lines: &'a [Line<'a>],
    entry: EntryRef<'e>,
    slot: Slot,
    /// The segment's position in its slot.
    pos: u32,
    fill: Fill<'e>,
    /// The segment before it in the window was also in a break (else it
    /// restates the ad's init segment and key).
    continues: bool,
}

fn ssai_segments(
    m: &MediaPlaylist<'_>,
    input: &SpliceInput<'_>,
    res: &Resolver<'_>,
    plans: &[Plan<'_>],
    drop_parts: bool,
    out: &mut String,
    report: &mut SpliceReport,
) {
    let s = Ssai {
        m,
        input,
        res,
        drop_parts,
        keyed: plans.iter().any(|p| pod_has_keys(p.entry.pod)),
    };
    let content_is_fmp4 = m.segments.iter().any(|s| s.map.is_some());
    let mut prev_in_break = false;
    // One choice per slot (the same answer for every segment of it).
    let mut chosen: Vec<((usize, u32), Fill<'_>)> = Vec::new();
    for seg in &m.segments {
        let seg_lines = m
            .tokens
            .lines
            .get(seg.first_line.max(m.header_end)..=seg.uri_line)
            .unwrap_or_default();
        let Some((plan, slot, pos)) = slot_at(plans, seg.msn) else {
            let returning = prev_in_break
                || plans
                    .iter()
                    .any(|p| !p.slots.is_empty() && p.entry.record.end_msn() == seg.msn);
            content_segment(&s, seg, seg_lines, returning, out);
            prev_in_break = false;
            continue;
        };
        let key = (plan as *const Plan<'_> as usize, slot.start);
        let fill = match chosen.iter().find(|(k, _)| *k == key) {
            Some((_, c)) => *c,
            None => {
                let c = choose_for_slot(
                    plan.entry,
                    slot,
                    input.variant,
                    m.target_duration,
                    content_is_fmp4,
                    report,
                );
                chosen.push((key, c));
                c
            }
        };
        let a = AdSegment {
            seg,
            seg_lines,
            entry: plan.entry,
            slot,
            pos,
            fill,
            continues: prev_in_break,
        };
        ad_segment(&s, &a, out);
        prev_in_break = true;
    }
}

/// A content segment, after a discontinuity (and the content's init
/// segment and key) when it returns from a break.
fn content_segment(
    s: &Ssai<'_>,
    seg: &Segment<'_>,
    seg_lines: &[Line<'_>],
    returning: bool,
    out: &mut String,
) {
    if returning {
        content_return(seg, seg_lines, s.keyed, out, s.res);
    }
    for line in seg_lines {
        if (s.input.settings.strip_cues && is_cue_tag(line))
            || (s.drop_parts && line.is_tag("EXT-X-PART"))
        {
            continue;
        }
        push_line(out, line, s.res);
    }
}

/// An origin segment inside a break: the origin tags we do not own, the
/// discontinuity at a slot's start, the ad's state and date range, then
/// its segment (or, when nothing fits the variant, the content's).
fn ad_segment(s: &Ssai<'_>, a: &AdSegment<'_, '_>, out: &mut String) {
    for line in a.seg_lines {
        if keep_in_break(line, s.input.settings.strip_cues) {
            push_line(out, line, s.res);
        }
    }
    let first_of_slot = a.pos == 0;
    // An origin discontinuity inside the break is carried onto the ad
    // segment so the counts stay exact.
    if first_of_slot || a.seg.discontinuity {
        out.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if (first_of_slot || !a.continues) && !a.fill.blank {
        if let Some(r) = a.fill.rendition {
            ad_state(r, !a.seg.keys.is_empty() || pod_has_keys(a.entry.pod), out);
        }
    }
    if first_of_slot && s.input.settings.ad_dateranges {
        ad_daterange(a, out);
    }
    if let Some(pdt) = a.seg.pdt_ms {
        out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
        hls::write_pdt_ms(out, pdt);
        out.push('\n');
    }
    let ad = a.fill.rendition.and_then(|r| {
        let n = u32::try_from(r.segments.len()).ok().filter(|n| *n > 0)?;
        let i = usize::try_from(a.pos.checked_rem(n)?).ok()?;
        Some((r, r.segments.get(i)?))
    });
    match ad {
        Some((r, seg)) => ad_uri(s, a, r, seg, out),
        None => {
            // Nothing fits this variant: the content segment keeps the
            // slot (the viewer gets content, never a broken playlist),
            // inside the same discontinuities.
            if first_of_slot || !a.continues {
                push_content_state(out, a.seg, true, true, s.res);
            }
            let _ = writeln!(out, "#EXTINF:{},", a.seg.duration_text);
            if let Some(uri) = s.m.tokens.lines.get(a.seg.uri_line) {
                push_line(out, uri, s.res);
            }
        }
    }
}

/// The ad's init segment and key, restated where its segments start (or
/// `METHOD=NONE` when the content or the pod is keyed and the ad is not).
fn ad_state(r: &AdRendition, keys_in_effect: bool, out: &mut String) {
    if let Some(init) = &r.init_uri {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{init}\"");
    }
    match &r.key {
        Some(k) => {
            let _ = writeln!(out, "#EXT-X-KEY:{k}");
        }
        None if keys_in_effect => out.push_str("#EXT-X-KEY:METHOD=NONE\n"),
        None => {}
    }
}

/// The ad's `EXT-X-DATERANGE` (`CLASS="com.cf-ssai.ad"`) at its first
/// segment, for players and QoE tools that show ad positions.
fn ad_daterange(a: &AdSegment<'_, '_>, out: &mut String) {
    let (Some(pdt), SlotKind::Ad(i)) = (a.seg.pdt_ms, a.slot.kind) else {
        return;
    };
    let Some(item) = a.entry.pod.items.get(i) else {
        return;
    };
    let _ = write!(
        out,
        "#EXT-X-DATERANGE:ID=\"{}-ad{}\",CLASS=\"com.cf-ssai.ad\",START-DATE=\"",
        a.entry.record.id, a.slot.start
    );
    hls::write_pdt_ms(out, pdt);
    out.push_str("\",DURATION=");
    write_secs(
        out,
        f64::from(a.slot.len) * a.entry.record.cadence_ms as f64 / 1000.0,
    );
    let _ = writeln!(
        out,
        ",X-AD-ID=\"{}\",X-CREATIVE-ID=\"{}\"",
        attr_safe(&item.ad_id),
        attr_safe(&item.creative_id)
    );
}

/// The ad segment itself: its duration, byte range and URI (through our
/// `/ad/` route when the channel proxies ad segments, a blank WebVTT
/// segment for subtitles the ad lacks).
fn ad_uri(
    s: &Ssai<'_>,
    a: &AdSegment<'_, '_>,
    r: &AdRendition,
    seg: &model::AdSegment,
    out: &mut String,
) {
    out.push_str("#EXTINF:");
    write_secs(out, seg.duration);
    out.push_str(",\n");
    if let Some(br) = seg.byterange.as_ref().filter(|_| !a.fill.blank) {
        let _ = writeln!(out, "#EXT-X-BYTERANGE:{br}");
    }
    let settings = s.input.settings;
    match (&settings.ad_proxy_prefix, a.fill.item) {
        _ if a.fill.blank => out.push_str(&settings.blank_subtitles_uri),
        (Some(prefix), Some(i)) => {
            crate::splice::ad_route::AdSegmentRoute::new(&a.entry.record.id, i, r, a.pos).write(
                prefix,
                settings.session.as_deref(),
                out,
            );
        }
        _ => out.push_str(&seg.uri),
    }
    out.push('\n');
}

/// Back to content after a break: discontinuity, the content's init
/// segment and key, and a PDT.
fn content_return(
    seg: &Segment<'_>,
    seg_lines: &[Line<'_>],
    ads_keyed: bool,
    out: &mut String,
    base: &Resolver<'_>,
) {
    let has = |n: &str| seg_lines.iter().any(|l| l.is_tag(n));
    if !has("EXT-X-DISCONTINUITY") {
        out.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if seg.keys.is_empty() && ads_keyed && !has("EXT-X-KEY") {
        // An ad set a key; the content is clear.
        out.push_str("#EXT-X-KEY:METHOD=NONE\n");
    }
    push_content_state(out, seg, !has("EXT-X-MAP"), !has("EXT-X-KEY"), base);
    if !has("EXT-X-PROGRAM-DATE-TIME") {
        if let Some(p) = seg.pdt_ms {
            out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
            hls::write_pdt_ms(out, p);
            out.push('\n');
        }
    }
}

/// What fills one slot of one variant.
#[derive(Clone, Copy)]
struct Fill<'e> {
    /// The ad's (or the slate's) rendition; none = content keeps the slot.
    rendition: Option<&'e AdRendition>,
    /// The pod item, for ad slots actually filled by the ad.
    item: Option<usize>,
    /// Subtitles with no ad counterpart: blank WebVTT segments timed like
    /// `rendition` (a video rendition of the same ad).
    blank: bool,
}

/// The rendition that fills this slot for this variant: the ad's best fit,
/// else the slate's, else none (content keeps the slot).
fn choose_for_slot<'e>(
    entry: EntryRef<'e>,
    slot: Slot,
    variant: &Variant,
    target: u64,
    fmp4: bool,
    report: &mut SpliceReport,
) -> Fill<'e> {
    if let Some((i, item)) = match slot.kind {
        SlotKind::Ad(i) => entry.pod.items.get(i).map(|it| (i, it)),
        _ => None,
    } {
        let (v, blank) = timing_variant(variant, &item.renditions);
        match choose_timed(&item.renditions, &v, target, fmp4, Some(slot.len), blank) {
            Ok(r) => {
                return Fill {
                    rendition: Some(r),
                    item: Some(i),
                    blank,
                }
            }
            Err(why) => push_reason(
                report,
                format!(
                    "break {} ad {}: {why}; slate instead",
                    entry.record.id, item.ad_id
                ),
            ),
        }
    }
    let (v, blank) = timing_variant(variant, &entry.pod.slate.renditions);
    match choose_timed(&entry.pod.slate.renditions, &v, target, fmp4, None, blank) {
        Ok(r) => Fill {
            rendition: Some(r),
            item: None,
            blank,
        },
        Err(why) => {
            push_reason(
                report,
                format!("break {} slate: {why}; content kept", entry.record.id),
            );
            Fill {
                rendition: None,
                item: None,
                blank: false,
            }
        }
    }
}

/// [`choose_rendition`]; for blank subtitles (`blank`) only the timing
/// matters, so either container will do.
fn choose_timed<'r>(
    renditions: &'r [AdRendition],
    variant: &Variant,
    target: u64,
    fmp4: bool,
    need_segments: Option<u32>,
    blank: bool,
) -> Result<&'r AdRendition, Unfit> {
    choose_rendition(renditions, variant, target, fmp4, need_segments).or_else(|e| {
        if blank {
            choose_rendition(renditions, variant, target, !fmp4, need_segments)
        } else {
            Err(e)
        }
    })
}

/// Ads rarely carry subtitles. A subtitle rendition whose ad has none
/// gets blank WebVTT segments (no content subtitle over an ad) timed like
/// the ad's video: the variant to time them by, and whether they are blank.
fn timing_variant(variant: &Variant, renditions: &[AdRendition]) -> (Variant, bool) {
    if variant.kind == TrackKind::Subtitles
        && !renditions.iter().any(|r| r.kind == TrackKind::Subtitles)
    {
        let video = Variant {
            bandwidth: None,
            codecs: None,
            kind: TrackKind::Video,
        };
        return (video, true);
    }
    (variant.clone(), false)
}

/// Seconds with three decimals, without float formatting (hot path).
fn write_secs(out: &mut String, secs: f64) {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    out.push_str(model::decimal(ms / 1000, &mut [0u8; 20]));
    out.push('.');
    // Three digits, zero-padded: `{:03}` without the formatter's cost.
    let frac = ms % 1000;
    for d in [frac / 100, frac / 10 % 10, frac % 10] {
        out.push(char::from_digit(d as u32, 10).unwrap_or('0'));
    }
}

/// Re-emit the content's EXT-X-MAP and EXT-X-KEY lines in effect for
/// `seg` (URIs resolved like every other line).
fn push_content_state(
    out: &mut String,
    seg: &Segment<'_>,
    map: bool,
    keys: bool,
    res: &Resolver<'_>,
) {
    let tag = |raw, name| Line::Tag {
        raw,
        name,
        value: None,
    };
    if map {
        if let Some(m) = seg.map {
            push_line(out, &tag(m, "EXT-X-MAP"), res);
        }
    }
    if keys {
        for k in &seg.keys {
            push_line(out, &tag(k, "EXT-X-KEY"), res);
        }
    }
}

fn pod_has_keys(pod: &model::Pod) -> bool {
    pod.items
        .iter()
        .flat_map(|i| &i.renditions)
        .chain(&pod.slate.renditions)
        .any(|r| r.key.is_some())
}

fn push_reason(report: &mut SpliceReport, r: String) {
    if !report.reasons.contains(&r) {
        report.reasons.push(r);
    }
}

/// Bitrate-aware choice: among renditions of the variant's kind that fit the
/// cadence (every segment within TARGETDURATION, same container, enough
/// segments), the highest not above the variant's BANDWIDTH with compatible
/// codecs, else the lowest. Deterministic, so every reload agrees.
///
/// A demuxed variant (video only) takes the ad's video-only renditions,
/// else its muxed ones (a player with an audio group ignores a variant's
/// own audio); every other kind takes its own kind only.
pub fn choose_rendition<'r>(
    renditions: &'r [AdRendition],
    variant: &Variant,
    target: u64,
    fmp4: bool,
    need_segments: Option<u32>,
) -> Result<&'r AdRendition, Unfit> {
    let of = |kind| choose_of_kind(renditions, kind, variant, target, fmp4, need_segments);
    match variant.kind {
        TrackKind::Video => of(TrackKind::Video).or_else(|_| of(TrackKind::Muxed)),
        k => of(k),
    }
}

fn choose_of_kind<'r>(
    renditions: &'r [AdRendition],
    kind: TrackKind,
    variant: &Variant,
    target: u64,
    fmp4: bool,
    need_segments: Option<u32>,
) -> Result<&'r AdRendition, Unfit> {
    // One pass, no list: the best of the compatible fitting renditions
    // and the best of all fitting ones (used when none is compatible).
    let bw = variant.bandwidth.unwrap_or(u64::MAX);
    let mut compatible = Best::default();
    let mut any = Best::default();
    if !renditions.iter().any(|r| r.kind == kind) {
        return Err(Unfit::NoKind(kind));
    }
    let mut why = Unfit::NoRenditions;
    for r in renditions.iter().filter(|r| r.kind == kind) {
        if r.segments.is_empty() {
            why = Unfit::NoSegments;
            continue;
        }
        // Written by an org or a third party: never rendered unchecked.
        let verdict = r.verdict();
        if let Err(e) = &verdict.check {
            why = Unfit::Unsafe(e.to_string());
            continue;
        }
        // RFC 8216 §4.3.3.1: EXTINF rounded to the nearest integer must not
        // exceed TARGETDURATION.
        if target > 0 && verdict.longest_s.round() as u64 > target {
            why = Unfit::TooLong {
                longest_s: verdict.longest_s,
                target,
            };
            continue;
        }
        if r.init_uri.is_some() != fmp4 {
            why = Unfit::Container { content_fmp4: fmp4 };
            continue;
        }
        if let Some(n) = need_segments {
            if r.segments.len() < n as usize {
                why = Unfit::TooFewSegments {
                    has: r.segments.len(),
                    slot: n,
                };
                continue;
            }
        }
        any.offer(r, bw);
        if codecs_compatible(variant.codecs.as_deref(), r.codecs.as_deref()) {
            compatible.offer(r, bw);
        }
    }
    compatible.pick().or_else(|| any.pick()).ok_or(why)
}

/// The highest rendition not above a bandwidth (the last of equals, as
/// `max_by_key`), else the lowest (the first of equals, as `min_by_key`).
#[derive(Default)]
struct Best<'r> {
    under: Option<&'r AdRendition>,
    lowest: Option<&'r AdRendition>,
}

impl<'r> Best<'r> {
    fn offer(&mut self, r: &'r AdRendition, bw: u64) {
        if r.bandwidth <= bw && self.under.is_none_or(|u| r.bandwidth >= u.bandwidth) {
            self.under = Some(r);
        }
        if self.lowest.is_none_or(|l| r.bandwidth < l.bandwidth) {
            self.lowest = Some(r);
        }
    }

    fn pick(&self) -> Option<&'r AdRendition> {
        self.under.or(self.lowest)
    }
}

/// Why no rendition of an ad fits a variant (the splice report says it,
/// and the slot falls back to the slate or the content).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unfit {
    #[error("no {0:?} rendition")]
    NoKind(TrackKind),
    #[error("no renditions")]
    NoRenditions,
    #[error("rendition has no segments")]
    NoSegments,
    #[error("unsafe rendition: {0}")]
    Unsafe(String),
    #[error("segments up to {longest_s:.3}s do not fit TARGETDURATION {target}")]
    TooLong { longest_s: f64, target: u64 },
    #[error("container mismatch (content is {}, ad is {})", if *content_fmp4 { "fMP4" } else { "TS" }, if *content_fmp4 { "TS" } else { "fMP4" })]
    Container { content_fmp4: bool },
    #[error("{has} segments for a {slot}-segment slot")]
    TooFewSegments { has: usize, slot: u32 },
}

/// Codec families of the ad all appear in the variant's (unknown = fine).
fn codecs_compatible(variant: Option<&str>, ad: Option<&str>) -> bool {
    let (Some(v), Some(a)) = (variant, ad) else {
        return true;
    };
    fn fam(c: &str) -> &str {
        c.trim().split('.').next().unwrap_or("")
    }
    let same = |x: &str, y: &str| {
        x.eq_ignore_ascii_case(y)
            || (x.eq_ignore_ascii_case("hev1") && y.eq_ignore_ascii_case("hvc1"))
            || (x.eq_ignore_ascii_case("hvc1") && y.eq_ignore_ascii_case("hev1"))
    };
    a.split(',')
        .map(fam)
        .all(|f| v.split(',').map(fam).any(|x| same(f, x)))
}

fn sgai_segments(
    m: &MediaPlaylist<'_>,
    input: &SpliceInput<'_>,
    res: &Resolver<'_>,
    plans: &[Plan<'_>],
    out: &mut String,
    report: &mut SpliceReport,
) {
    let lines = &m.tokens.lines;
    let first_msn = m.segments.first().map_or(0, |s| s.msn);
    let last_msn = m.last_msn().unwrap_or(first_msn);
    let ahead = i64::from(input.settings.announce_ahead_segments);
    // Which tag goes before which segment index.
    let mut tags: Vec<(usize, String)> = Vec::new();
    for p in plans {
        let r = &p.entry.record;
        if p.slots.is_empty()
            || r.end_msn() <= first_msn
            || r.anchor_msn > last_msn.saturating_add_signed(ahead)
        {
            continue;
        }
        let Some(pdt) = r.anchor_pdt_ms else {
            push_reason(
                report,
                format!("break {}: origin has no PDT, no interstitial", r.id),
            );
            continue;
        };
        let idx = r
            .anchor_msn
            .saturating_sub(first_msn)
            .min(m.segments.len().saturating_sub(1) as u64) as usize;
        let demuxed = input.variant.kind != TrackKind::Muxed;
        tags.push((idx, interstitial_tag(p.entry, pdt, input.settings, demuxed)));
    }
    for (k, seg) in m.segments.iter().enumerate() {
        for (_, t) in tags.iter().filter(|(i, _)| *i == k) {
            out.push_str(t);
        }
        let seg_lines = lines
            .get(seg.first_line.max(m.header_end)..=seg.uri_line)
            .unwrap_or_default();
        for line in seg_lines {
            if input.settings.strip_cues && is_cue_tag(line) {
                continue;
            }
            push_line(out, line, res);
        }
    }
}

/// The interstitial DATERANGE (RFC 8216bis Appendix D). Every attribute is a
/// function of the record (and the viewer's session, the same on every
/// variant), so it never changes while in the window. With server-side
/// beacons on, the asset list URL carries the session so the ad playlists
/// and segments behind it can count deliveries.
/// `demuxed`: the channel's audio is in an audio group (every playlist of
/// a demuxed channel says so, so the tag is the same in each); its asset
/// playlists then offer the ads' video-only renditions with an audio
/// group, the shape of the primary.
pub fn interstitial_tag(
    entry: EntryRef<'_>,
    pdt_ms: i64,
    s: &SpliceSettings,
    demuxed: bool,
) -> String {
    let r = &entry.record;
    let mut t = format!(
        "#EXT-X-DATERANGE:ID=\"{}\",CLASS=\"com.apple.hls.interstitial\",START-DATE=\"{}\",DURATION={:.3},X-ASSET-LIST=\"{}{}.json",
        attr_safe(&r.id),
        hls::format_pdt_ms(pdt_ms),
        r.duration_ms as f64 / 1000.0,
        s.asset_list_prefix,
        attr_safe(&r.id),
    );
    let mut sep = '?';
    if let (Some(_), Some(sid)) = (&s.ad_proxy_prefix, &s.session) {
        let _ = write!(t, "?sid={}", attr_safe(sid));
        sep = '&';
    }
    if let Some(c) = &s.cohort_param {
        let _ = write!(t, "{sep}c={}", attr_safe(c));
        sep = '&';
    }
    if let Some(q) = &s.viewer_query {
        let _ = write!(t, "{sep}{}", attr_safe(q));
        sep = '&';
    }
    if demuxed {
        let _ = write!(t, "{sep}tracks=demuxed");
    }
    t.push('"');
    if !s.restrict.is_empty() {
        let _ = write!(t, ",X-RESTRICT=\"{}\"", s.restrict);
    }
    if !s.snap.is_empty() {
        let _ = write!(t, ",X-SNAP=\"{}\"", s.snap);
    }
    t.push('\n');
    t
}

fn attr_safe(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\n' && *c != '\r')
        .collect()
}

fn is_cue_tag(l: &Line<'_>) -> bool {
    matches!(
        l.tag_name(),
        Some(
            "EXT-X-CUE-OUT"
                | "EXT-X-CUE-OUT-CONT"
                | "EXT-X-CUE-IN"
                | "EXT-OATCLS-SCTE35"
                | "EXT-X-SPLICEPOINT-SCTE35"
                | "EXT-X-SCTE35"
        )
    ) || (l.is_tag("EXT-X-DATERANGE") && l.value().is_some_and(|v| v.contains("SCTE35-")))
}

/// Lines of a replaced content segment that stay: tags we do not own.
fn keep_in_break(l: &Line<'_>, strip_cues: bool) -> bool {
    const REPLACED: [&str; 9] = [
        "EXTINF",
        "EXT-X-PROGRAM-DATE-TIME",
        "EXT-X-DISCONTINUITY",
        "EXT-X-MAP",
        "EXT-X-KEY",
        "EXT-X-BYTERANGE",
        "EXT-X-GAP",
        "EXT-X-BITRATE",
        "EXT-X-PART",
    ];
    match l {
        Line::Uri(_) => false,
        Line::Tag { name, .. } if REPLACED.contains(name) => false,
        Line::Tag { .. } => !(strip_cues && is_cue_tag(l)),
        _ => true,
    }
}

/// Copy a line, resolving relative URIs (segment URIs and `URI="..."` of
/// MAP/KEY/PART/PRELOAD-HINT) against the origin playlist URL. Absolute URIs
/// and every other line are copied byte for byte.
fn push_line(out: &mut String, line: &Line<'_>, base: &Resolver<'_>) {
    match line {
        Line::Uri(raw) => {
            let u = raw.trim_end_matches('\r').trim();
            if is_absolute(u) {
                out.push_str(raw);
            } else {
                base.push(out, u);
            }
        }
        Line::Tag { raw, name, .. }
            if matches!(
                *name,
                "EXT-X-MAP"
                    | "EXT-X-KEY"
                    | "EXT-X-PART"
                    | "EXT-X-PRELOAD-HINT"
                    | "EXT-X-SESSION-KEY"
            ) =>
        {
            out.push_str(&rewrite_uri_attr(raw, |u| {
                (!is_absolute(u)).then(|| {
                    let mut s = String::new();
                    base.push(&mut s, u);
                    s
                })
            }));
        }
        other => out.push_str(other.raw()),
    }
    out.push('\n');
}

pub(crate) fn is_absolute(u: &str) -> bool {
    u.starts_with("http://")
        || u.starts_with("https://")
        || u.starts_with("data:")
        || u.starts_with("skd:")
}

/// Replace the value of `URI="..."` in a tag line when `f` returns a new one.
pub(crate) fn rewrite_uri_attr(raw: &str, f: impl FnOnce(&str) -> Option<String>) -> String {
    let Some(start) = raw.find("URI=\"") else {
        return raw.to_string();
    };
    // Must be the attribute URI, not e.g. KEYFORMATURI.
    let before = raw.get(..start).and_then(|h| h.bytes().last());
    if before.is_some_and(|b| !matches!(b, b':' | b',')) {
        return raw.to_string();
    }
    let vstart = start.saturating_add("URI=\"".len());
    let Some((head, rest)) = raw.split_at_checked(vstart) else {
        return raw.to_string();
    };
    let Some((value, tail)) = rest.split_once('"') else {
        return raw.to_string();
    };
    match f(value) {
        Some(new) => format!("{head}{new}\"{tail}"),
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_as_the_formatter_would() {
        for secs in [
            0.0,
            0.0004,
            0.0005,
            1.92,
            6.006,
            10.0,
            15.015,
            29.997,
            1e9 + 0.25,
            -3.0,
        ] {
            let mut out = String::new();
            write_secs(&mut out, secs);
            assert_eq!(
                out,
                format!("{:.3}", (secs.max(0.0) * 1000.0).round() / 1000.0),
                "{secs}"
            );
        }
    }

    #[test]
    fn delta_updates_are_not_offered() {
        assert_eq!(
            without_skip("#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL=12.0,CAN-SKIP-DATERANGES=YES,CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0"),
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0"
        );
    }

    #[test]
    fn withheld_rendition_reports_name_whole_segments() {
        assert_eq!(
            withheld_report("#EXT-X-RENDITION-REPORT:URI=\"../b/i.m3u8\",LAST-MSN=21,LAST-PART=0"),
            "#EXT-X-RENDITION-REPORT:URI=\"../b/i.m3u8\",LAST-MSN=20"
        );
        assert_eq!(
            withheld_report("#EXT-X-RENDITION-REPORT:URI=\"../b/i.m3u8\",LAST-MSN=21"),
            "#EXT-X-RENDITION-REPORT:URI=\"../b/i.m3u8\",LAST-MSN=21"
        );
    }
}
