//! The MPD a viewer gets: the origin's MPD with our breaks, SSAI as Periods
//! (multi-period, ISO/IEC 23009-1 §5.3.2 and DASH-IF IOP "ad insertion")
//! or SGAI as an alternative-MPD event, written as byte-span edits so all
//! that we do not change passes through as the origin wrote it (vendor
//! elements, `ContentProtection`, unknown attributes).
//!
//! SSAI: the content Period holding a break is split at the break's start;
//! each slot of the break's layout (`model::layout`: whole ads, then the
//! slate) becomes a Period `{break}-{j}` (j: the slot's first segment
//! within the break), starting at the content time it replaces and listing
//! the ad's own fMP4 renditions (`SegmentList`, absolute URLs); content
//! resumes in Period `{origin-period}~{break}` whose `presentationTimeOffset`
//! and `startNumber` make the content's own segments (the same URLs) play
//! from the return point. Every Period's id, `@start` and PTO are functions
//! of the break record and the origin Period alone, so they are the same on
//! every reload and node; no Period carries `@duration` (its end is the next
//! Period's start), and an ad Period lists only the segments whose content
//! counterparts the origin has published.
//!
//! SGAI: the content is untouched and each break gets an `EventStream` of
//! the DASH-IF alternative-MPD replace scheme pointing at the break's ad
//! MPD (the same pod as the HLS asset list), and a callback event for
//! players without it; both depend only on the record.

use super::mpd::{self, Mpd, PeriodInfo, Seg};
use super::tree::escaped;
use crate::model::{AdRendition, BreakRecord, Slot, SlotKind, TrackKind};
use crate::splice::edge::{self, MediaRequest, Reads, Step};
use crate::splice::{EntryRef, Mode, SpliceReport, SpliceSettings};
use std::fmt::Write;

/// The DASH-IF alternative-MPD replace scheme (Shaka Player 5.2 plays it).
pub const SCHEME_REPLACE: &str = "urn:mpeg:dash:event:alternativeMPD:replace:2025";
/// The DASH callback scheme (§5.10.4.3): the player GETs the URL.
pub const SCHEME_CALLBACK: &str = "urn:mpeg:dash:event:callback:2015";
/// DASH-IF asset identifier (IOP §5.3.3.3): the ad's id on an ad Period.
pub const SCHEME_ASSET_ID: &str = "urn:org:dashif:asset-id:2013";
/// The timescale of the ad Periods' segment lists and our events.
const AD_TIMESCALE: u64 = 90_000;

pub struct DashInput<'a> {
    pub mpd: &'a Mpd<'a>,
    /// The origin MPD's URL (relative origin URLs resolve against it).
    pub origin_url: &'a url::Url,
    /// The URL the viewer fetched from us (our routes resolve against it).
    pub self_url: &'a url::Url,
    /// The window's first and last MSN (`window::to_hls`).
    pub first_msn: u64,
    pub last_msn: u64,
    /// Breaks in view, sorted by anchor.
    pub breaks: &'a [EntryRef<'a>],
    /// The latest break that ended before the window: the content Period
    /// that followed it keeps its name and start while it plays.
    pub before: Option<&'a BreakRecord>,
    pub mode: Mode,
    pub settings: &'a SpliceSettings,
    /// A `Location` to give the player (a session just minted for it).
    pub location: Option<&'a str>,
    /// The request's instant: how far an open-ended timeline (`S@r=-1`)
    /// runs.
    pub now_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DashOutput {
    pub mpd: String,
    pub report: SpliceReport,
}

/// One replacement of a byte range of the origin MPD.
struct Edit {
    start: usize,
    end: usize,
    with: String,
}

/// One MPD request, as the edge serves it: the breaks of its window by
/// the edge's rules (`splice::edge::breaks`: the KV view, the pods it
/// names, the location's copy of the DO's answer, the DO), then the
/// splice. `req.origin`/`req.m` are the MPD's window (`window::to_hls`).
pub fn serve(
    req: &MediaRequest<'_>,
    mpd: &Mpd<'_>,
    self_url: &url::Url,
    location: Option<&str>,
    reads: &Reads,
) -> Step<DashOutput> {
    match edge::breaks(req, reads) {
        Step::Need(n) => Step::Need(n),
        Step::Done(b) => {
            let first = req
                .m
                .segments
                .first()
                .map_or(req.m.media_sequence, |s| s.msn);
            Step::Done(splice(&DashInput {
                mpd,
                origin_url: req.playlist_url,
                self_url,
                first_msn: first,
                last_msn: req.m.last_msn().unwrap_or(first),
                breaks: &b.entries,
                before: b.before,
                mode: req.mode,
                settings: req.settings,
                location,
                now_ms: window_end_ms(req.m),
            }))
        }
    }
}

/// Where the window ends on the wall clock: its last segment's end (what
/// the origin had published when it wrote the MPD).
fn window_end_ms(m: &crate::hls::media::MediaPlaylist<'_>) -> i64 {
    m.segments
        .last()
        .and_then(|s| {
            Some(
                s.pdt_ms?
                    .saturating_add((s.duration * 1000.0).round() as i64),
            )
        })
        .unwrap_or(0)
}

/// Splice one MPD.
pub fn splice(input: &DashInput<'_>) -> DashOutput {
    let m = input.mpd;
    let mut report = SpliceReport::default();
    let mut edits = urls_and_location(input);
    // Every source of breaks (the KV view, a DO answer) gives the same
    // ones here: not over before the window, not cancelled, not beyond
    // what the window (or SGAI's announcement) reaches.
    let ahead = match input.mode {
        Mode::Sgai => u64::try_from(input.settings.announce_ahead_segments.max(0)).unwrap_or(0),
        Mode::Ssai => 0,
    };
    let live: Vec<EntryRef<'_>> = input
        .breaks
        .iter()
        .filter(|e| {
            let r = e.record;
            r.covered() > 0
                && r.end_msn() >= input.first_msn
                && r.anchor_msn <= input.last_msn.saturating_add(1).saturating_add(ahead)
        })
        .copied()
        .collect();
    for (i, p) in m.periods.iter().enumerate() {
        let next_start = m.periods.get(i.saturating_add(1)).map(|n| n.start_s);
        let within = |s: f64| s >= p.start_s - 0.0005 && next_start.is_none_or(|n| s < n - 0.0005);
        let here: Vec<EntryRef<'_>> = live
            .iter()
            .filter(|e| time_s(input, e.record, e.record.anchor_msn).is_some_and(within))
            .copied()
            .collect();
        // (An origin Period that starts where the break returned is
        // itself the return: it keeps its own name.)
        let before = input.before.filter(|r| r.covered() > 0).filter(|r| {
            time_s(input, r, r.end_msn()).is_some_and(|s| within(s) && s > p.start_s + 0.0005)
        });
        if here.is_empty() && (before.is_none() || input.mode == Mode::Sgai) {
            continue;
        }
        match input.mode {
            Mode::Ssai => {
                if let Some(text) = split_period(input, p, before, &here, &mut report) {
                    if let Some(n) = m.tree.node(p.node) {
                        edits.push(Edit {
                            start: n.start,
                            end: n.end,
                            with: text,
                        });
                    }
                }
            }
            Mode::Sgai => edits.push(sgai_events(input, p, &here)),
        }
    }
    DashOutput {
        mpd: apply(m.tree.text, edits),
        report,
    }
}

/// The origin text with the edits (sorted, non-overlapping) applied.
fn apply(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|e| (e.start, e.end));
    let extra: usize = edits.iter().map(|e| e.with.len()).sum();
    let mut out = String::with_capacity(text.len().saturating_add(extra));
    let mut at = 0usize;
    for e in edits {
        if e.start < at {
            continue;
        }
        out.push_str(text.get(at..e.start).unwrap_or_default());
        out.push_str(&e.with);
        at = e.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

/// Seconds since availabilityStartTime of content segment `msn` of a break:
/// from the record's anchor PDT and cadence (the record alone, so the same
/// on every reload, even once the segment has left the window).
fn time_s(input: &DashInput<'_>, r: &BreakRecord, msn: u64) -> Option<f64> {
    let ast = input.mpd.ast_ms?;
    let pdt = r.anchor_pdt_ms?;
    let off = i64::try_from(msn.checked_sub(r.anchor_msn)?)
        .ok()?
        .checked_mul(i64::try_from(r.cadence_ms).ok()?)?;
    Some(pdt.checked_add(off)?.checked_sub(ast)? as f64 / 1000.0)
}

/// Relative URLs made absolute: a `BaseURL` at the MPD level (the origin's
/// directory when it has none: the viewer fetches the MPD from us, its
/// segments from the origin), relative `UTCTiming` values; `Location` and
/// `PatchLocation` removed (they would send the player's reloads to the
/// origin), our own `Location` written when given.
fn urls_and_location(input: &DashInput<'_>) -> Vec<Edit> {
    let m = input.mpd;
    let t = &m.tree;
    let mut edits = Vec::new();
    let Some(root) = t.node(t.root) else {
        return edits;
    };
    let base_urls: Vec<usize> = t.children(t.root, "BaseURL").collect();
    for b in &base_urls {
        let raw = t.text_of(*b);
        if let (Ok(abs), Some(n)) = (input.origin_url.join(raw.as_ref()), t.node(*b)) {
            if abs.as_str() != raw.as_ref() {
                edits.push(Edit {
                    start: n.tag_end,
                    end: n.inner_end,
                    with: escaped(abs.as_str()).into_owned(),
                });
            }
        }
    }
    // Where a new BaseURL or Location goes (XSD order: ProgramInformation,
    // BaseURL, Location, ...).
    let after = |names: &[&str]| {
        root.children
            .iter()
            .filter_map(|c| t.node(*c))
            .filter(|n| names.contains(&n.name))
            .map(|n| n.end)
            .max()
            .unwrap_or(root.tag_end)
    };
    if base_urls.is_empty() {
        edits.push(Edit {
            start: after(&["ProgramInformation"]),
            end: after(&["ProgramInformation"]),
            with: format!("<BaseURL>{}</BaseURL>", escaped(input.origin_url.as_str())),
        });
    }
    for l in t
        .children(t.root, "Location")
        .chain(t.children(t.root, "PatchLocation"))
    {
        if let Some(n) = t.node(l) {
            edits.push(Edit {
                start: n.start,
                end: n.end,
                with: String::new(),
            });
        }
    }
    if let Some(loc) = input.location {
        let at = after(&["ProgramInformation", "BaseURL"]);
        edits.push(Edit {
            start: at,
            end: at,
            with: format!("<Location>{}</Location>", escaped(loc)),
        });
    }
    for u in t.children(t.root, "UTCTiming") {
        let Some(n) = t.node(u) else { continue };
        let Some(v) = n.attrs.iter().find(|(k, _)| *k == "value") else {
            continue;
        };
        let scheme = n.attr("schemeIdUri").unwrap_or("");
        if scheme.contains(":http-") && url::Url::parse(v.1).is_err() {
            if let Ok(abs) = input.origin_url.join(v.1) {
                edits.push(Edit {
                    start: n.start,
                    end: n.tag_end,
                    with: with_attrs(
                        t.text.get(n.start..n.tag_end).unwrap_or(""),
                        &[("value", Some(abs.as_str()))],
                    ),
                });
            }
        }
    }
    edits
}

/// A start tag with attributes set (`Some`) or removed (`None`); the other
/// attributes and the rest of the tag kept as written.
fn with_attrs(tag: &str, set: &[(&str, Option<&str>)]) -> String {
    let close = if tag.ends_with("/>") { "/>" } else { ">" };
    let (name, attrs) = super::tree::parse_tag(tag);
    let mut out = String::with_capacity(tag.len().saturating_add(32));
    out.push('<');
    out.push_str(name);
    for (k, v) in &attrs {
        if set.iter().any(|(s, _)| s == k) {
            continue;
        }
        // As written, in quotes that cannot clash with the value.
        let q = if v.contains('"') { '\'' } else { '"' };
        let _ = write!(out, " {k}={q}{v}{q}");
    }
    for (k, v) in set {
        if let Some(v) = v {
            let _ = write!(out, " {k}=\"{}\"", escaped(v));
        }
    }
    out.push_str(close);
    out
}

/// What fills a time range of a split Period.
enum Piece<'e> {
    /// Content from `from_s` to `to_s` (open when `None`); `keep` for the
    /// origin Period's own first piece (its id, start and PTO unchanged).
    Content {
        id: String,
        from_s: f64,
        to_s: Option<f64>,
        keep: bool,
    },
    /// Ad (or slate) segments `0..count` of a slot's fill.
    Ad {
        id: String,
        from_s: f64,
        fill: Fill<'e>,
        count: usize,
        ad_id: String,
        entry: EntryRef<'e>,
        item: Option<usize>,
    },
}

/// The renditions an ad Period offers per content AdaptationSet.
#[derive(Clone)]
struct Fill<'e> {
    /// (content set, the ad's renditions for it, in bandwidth order).
    /// (Every ad Period plays its renditions from their first segment: a
    /// slate repeated over a long slot starts again in a Period of its own.)
    sets: Vec<(usize, Vec<&'e AdRendition>)>,
}

/// The content Period `p` split around its breaks, or `None` when it cannot
/// be (a report says why; the viewer gets the content).
fn split_period(
    input: &DashInput<'_>,
    p: &PeriodInfo<'_>,
    before: Option<&BreakRecord>,
    breaks: &[EntryRef<'_>],
    report: &mut SpliceReport,
) -> Option<String> {
    let m = input.mpd;
    let pid_raw = super::tree::unescaped(p.id.unwrap_or("p"));
    let pid: &str = &pid_raw;
    // Video and audio must be addressed by templates (a piece moves their
    // offsets); a set of anything else without one (a sidecar subtitle
    // file) stays with the origin's own piece.
    if p.sets.iter().any(|s| {
        matches!(m.content(*s), mpd::Content::Video | mpd::Content::Audio)
            && m.template(p.node, *s, m.tree.child(*s, "Representation"))
                .is_none()
    }) {
        report.reasons.push(format!(
            "period {pid}: a video or audio set without SegmentTemplate; content kept"
        ));
        return None;
    }
    let mut pieces: Vec<Piece<'_>> = Vec::new();
    let mut cursor = match before {
        Some(r) => (
            format!("{pid}~{}", r.id),
            time_s(input, r, r.end_msn())?,
            false,
        ),
        None => (pid.to_string(), p.start_s, true),
    };
    let mut open = true;
    for e in breaks {
        let r = e.record;
        let b_s = time_s(input, r, r.anchor_msn)?;
        pieces.push(Piece::Content {
            id: cursor.0.clone(),
            from_s: cursor.1,
            to_s: Some(b_s),
            keep: cursor.2,
        });
        open = false;
        let slots = crate::model::layout(r, e.pod);
        for slot in &slots {
            let first = r.anchor_msn.saturating_add(u64::from(slot.start));
            if first > input.last_msn {
                break;
            }
            // A slot whose segments have all left the window is gone.
            if first.saturating_add(u64::from(slot.len)) <= input.first_msn {
                continue;
            }
            let published = input.last_msn.saturating_sub(first).saturating_add(1);
            slot_pieces(input, p, *e, *slot, published, pid, &mut pieces, report);
        }
        if r.end_msn() <= input.last_msn {
            cursor = (
                format!("{pid}~{}", r.id),
                time_s(input, r, r.end_msn())?,
                false,
            );
            open = true;
        }
    }
    if open {
        pieces.push(Piece::Content {
            id: cursor.0,
            from_s: cursor.1,
            to_s: None,
            keep: cursor.2,
        });
    }
    let mut out = String::new();
    for piece in &pieces {
        match piece {
            Piece::Content {
                id,
                from_s,
                to_s,
                keep,
            } => content_period(input, p, id, *from_s, *to_s, *keep, &mut out),
            Piece::Ad {
                id,
                from_s,
                fill,
                count,
                ad_id,
                entry,
                item,
            } => ad_period(
                input, id, *from_s, fill, *count, ad_id, *entry, *item, &mut out,
            ),
        }
    }
    Some(out)
}

/// The Periods of one slot: the ad's (or, when the ad fits no content set,
/// the slate's, repeated in Periods of the slate's length), or the content
/// when nothing fits. `published`: how many of the slot's segments the
/// origin has published.
#[allow(clippy::too_many_arguments)]
fn slot_pieces<'e>(
    input: &DashInput<'_>,
    p: &PeriodInfo<'_>,
    e: EntryRef<'e>,
    slot: Slot,
    published: u64,
    pid: &str,
    pieces: &mut Vec<Piece<'e>>,
    report: &mut SpliceReport,
) {
    let r = e.record;
    let at = |j: u32| time_s(input, r, r.anchor_msn.saturating_add(u64::from(j)));
    let shown = u32::try_from(published).unwrap_or(u32::MAX).min(slot.len);
    let item = match slot.kind {
        SlotKind::Ad(i) => e.pod.items.get(i).map(|it| (i, it)),
        SlotKind::Slate => None,
    };
    if let Some((i, it)) = item {
        match fill_for(input.mpd, p, &it.renditions, Some(slot.len)) {
            Ok(fill) => {
                if let Some(from_s) = at(slot.start) {
                    pieces.push(Piece::Ad {
                        id: format!("{}-{}", r.id, slot.start),
                        from_s,
                        fill,
                        count: shown as usize,
                        ad_id: it.ad_id.clone(),
                        entry: e,
                        item: Some(i),
                    });
                }
                return;
            }
            Err(why) => report.reasons.push(format!(
                "break {} ad {}: {why}; slate instead",
                r.id, it.ad_id
            )),
        }
    }
    match fill_for(input.mpd, p, &e.pod.slate.renditions, None) {
        Ok(fill) => {
            // The slate is short: one Period per repetition, each from its
            // first segment (a DASH Period's media times must match its
            // timeline, so a repeated segment cannot follow itself).
            let n = fill
                .sets
                .iter()
                .flat_map(|(_, rs)| rs.iter().map(|r| r.segments.len()))
                .min()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(1);
            let mut j = 0u32;
            while j < shown {
                let len = n.min(shown.saturating_sub(j));
                if let Some(from_s) = at(slot.start.saturating_add(j)) {
                    pieces.push(Piece::Ad {
                        id: format!("{}-{}", r.id, slot.start.saturating_add(j)),
                        from_s,
                        fill: fill.clone(),
                        count: len as usize,
                        ad_id: format!("slate-{}", e.pod.slate.slate_id),
                        entry: e,
                        item: None,
                    });
                }
                j = j.saturating_add(n);
            }
        }
        Err(why) => {
            report
                .reasons
                .push(format!("break {} slate: {why}; content kept", r.id));
            if let (Some(from_s), Some(to_s)) =
                (at(slot.start), at(slot.start.saturating_add(slot.len)))
            {
                pieces.push(Piece::Content {
                    id: format!("{pid}~{}-{}", r.id, slot.start),
                    from_s,
                    to_s: Some(to_s),
                    keep: false,
                });
            }
        }
    }
}

/// For each video and audio AdaptationSet of the content Period, the ad's
/// renditions that can play in its place: fMP4 (an ad Period is CMAF like
/// the content), of the set's kind (video only for video, audio only for
/// audio: DASH players refuse muxed media in a demuxed set), safe, with
/// enough segments, of the set's codec family when the ad has it.
fn fill_for<'e>(
    m: &Mpd<'_>,
    p: &PeriodInfo<'_>,
    renditions: &'e [AdRendition],
    need: Option<u32>,
) -> Result<Fill<'e>, String> {
    let mut sets = Vec::new();
    for s in &p.sets {
        let kind = match m.content(*s) {
            mpd::Content::Video => TrackKind::Video,
            mpd::Content::Audio => TrackKind::Audio,
            _ => continue,
        };
        let fits: Vec<&AdRendition> = renditions
            .iter()
            .filter(|r| r.kind == kind && dash_playable(r))
            .filter(|r| need.is_none_or(|n| r.segments.len() >= n as usize))
            .collect();
        let family = |c: Option<&str>| {
            c.and_then(|c| c.split('.').next())
                .map(|f| f.to_ascii_lowercase())
        };
        let want = family(m.codecs(*s));
        let same: Vec<&AdRendition> = fits
            .iter()
            .copied()
            .filter(|r| want.is_none() || family(r.codecs.as_deref()) == want)
            .collect();
        let mut chosen = if same.is_empty() { fits } else { same };
        if chosen.is_empty() {
            return Err(format!("no fMP4 {kind:?} rendition"));
        }
        chosen.sort_by_key(|r| r.bandwidth);
        sets.push((*s, chosen));
    }
    if sets.is_empty() {
        return Err("the period has no video or audio set".into());
    }
    Ok(Fill { sets })
}

/// A rendition a DASH Period can list: fMP4 (an init segment), whole
/// segments (no byte ranges), clear (DASH signals keys otherwise), safe.
fn dash_playable(r: &AdRendition) -> bool {
    r.init_uri.is_some()
        && !r.segments.is_empty()
        && r.key.is_none()
        && r.segments.iter().all(|s| s.byterange.is_none())
        && r.verdict().check.is_ok()
}

/// A content piece of Period `p`: its own id and start (`keep`), or a new
/// id starting at `from_s` with each template's `presentationTimeOffset`
/// moved to that instant; the timelines keep the segments that start in
/// `[from_s, to_s)` (by their midpoint, so a segment never belongs to two
/// pieces). A piece with no segment left in any timeline is not written.
fn content_period(
    input: &DashInput<'_>,
    p: &PeriodInfo<'_>,
    id: &str,
    from_s: f64,
    to_s: Option<f64>,
    keep: bool,
    out: &mut String,
) {
    let m = input.mpd;
    let t = &m.tree;
    let Some(pn) = t.node(p.node) else { return };
    let mut edits: Vec<Edit> = Vec::new();
    let mut any = false;
    let mut start = String::new();
    mpd::write_duration(&mut start, from_s);
    let tag = t.text.get(pn.start..pn.tag_end).unwrap_or("");
    edits.push(Edit {
        start: pn.start,
        end: pn.tag_end,
        with: if keep {
            with_attrs(tag, &[("duration", None)])
        } else {
            with_attrs(
                tag,
                &[
                    ("id", Some(id)),
                    ("start", Some(&start)),
                    ("duration", None),
                ],
            )
        },
    });
    // Every SegmentTemplate in the Period, with the parameters in force
    // at it (its own and its ancestors').
    for tn in t
        .descendants(p.node)
        .filter(|i| t.node(*i).is_some_and(|n| n.name == "SegmentTemplate"))
    {
        let Some(tpl) = template_at(m, p, tn) else {
            continue;
        };
        let now_s = m
            .ast_ms
            .map_or(0.0, |a| input.now_ms.saturating_sub(a) as f64 / 1000.0);
        let until = m.media_time(p, &tpl, now_s);
        let segs = m.segments(&tpl, tpl.pto, Some(until));
        let mid =
            |s: &Seg| Mpd::at_s(p, &tpl, s.t) + (s.d as f64 / tpl.timescale.max(1) as f64) / 2.0;
        let kept: Vec<Seg> = segs
            .iter()
            .copied()
            .filter(|s| mid(s) >= from_s && to_s.is_none_or(|e| mid(s) < e))
            .collect();
        let Some(n) = t.node(tn) else { continue };
        let own_tl = t.child(tn, "SegmentTimeline");
        if tpl.timeline.is_some() && !kept.is_empty() {
            any = true;
        }
        if tpl.timeline.is_none() && tpl.duration.is_some() {
            any = true;
        }
        let mut set: Vec<(&str, Option<String>)> = Vec::new();
        if !keep {
            let mut pto = m.media_time(p, &tpl, from_s);
            let first = match (tpl.timeline, kept.first(), tpl.duration) {
                (Some(_), Some(s), _) => s.number,
                (Some(_), None, _) | (None, _, None) => tpl.start_number,
                // @duration numbering: the piece starts on the nearest
                // segment boundary, its offset exactly on it.
                (None, _, Some(d)) => {
                    let k = (pto.saturating_sub(tpl.pto) as f64 / d as f64).round() as u64;
                    pto = tpl.pto.saturating_add(k.saturating_mul(d));
                    tpl.start_number.saturating_add(k)
                }
            };
            set.push(("presentationTimeOffset", Some(pto.to_string())));
            set.push(("startNumber", Some(first.to_string())));
        }
        if !set.is_empty() {
            let tag = t.text.get(n.start..n.tag_end).unwrap_or("");
            let set_ref: Vec<(&str, Option<&str>)> =
                set.iter().map(|(k, v)| (*k, v.as_deref())).collect();
            edits.push(Edit {
                start: n.start,
                end: n.tag_end,
                with: with_attrs(tag, &set_ref),
            });
        }
        if let Some(tl) = own_tl.and_then(|x| t.node(x)) {
            edits.push(Edit {
                start: tl.tag_end,
                end: tl.inner_end,
                with: timeline_xml(&kept),
            });
            if tl.tag_end == tl.inner_end {
                // `<SegmentTimeline/>`: nothing to replace inside.
            }
        }
    }
    if !any {
        return;
    }
    // SCTE-35 and other event streams stay with the origin's own piece,
    // whose start their times are relative to.
    if !keep {
        // Sets without a template (a sidecar file of the whole Period)
        // stay there too.
        for set in &p.sets {
            let templated = m
                .template(p.node, *set, m.tree.child(*set, "Representation"))
                .is_some();
            if let (false, Some(n)) = (templated, t.node(*set)) {
                edits.push(Edit {
                    start: n.start,
                    end: n.end,
                    with: String::new(),
                });
            }
        }
        for es in t.children(p.node, "EventStream") {
            if let Some(n) = t.node(es) {
                edits.push(Edit {
                    start: n.start,
                    end: n.end,
                    with: String::new(),
                });
            }
        }
    }
    let period_text = t.text.get(pn.start..pn.end).unwrap_or("");
    let shifted: Vec<Edit> = edits
        .into_iter()
        .map(|e| Edit {
            start: e.start.saturating_sub(pn.start),
            end: e.end.saturating_sub(pn.start),
            with: e.with,
        })
        .collect();
    out.push_str(&apply(period_text, shifted));
}

/// The template whose element is `tn`, with the attributes in force there
/// (it and its ancestors' templates) and the nearest timeline.
fn template_at<'a>(m: &Mpd<'a>, p: &PeriodInfo<'_>, tn: usize) -> Option<mpd::Template<'a>> {
    let t = &m.tree;
    let holder = t.node(tn)?.parent?;
    let hn = t.node(holder)?;
    match hn.name {
        "Period" => {
            let set = p.sets.first().copied()?;
            let mut tpl = m.template(p.node, set, None)?;
            // Only the Period's own template.
            tpl.chain.retain(|c| *c == tn);
            Some(tpl)
        }
        "AdaptationSet" => m.template(p.node, holder, None),
        "Representation" => m.template(p.node, hn.parent?, Some(holder)),
        _ => None,
    }
}

/// `S` elements for segments, runs of equal duration folded into `@r`.
fn timeline_xml(segs: &[Seg]) -> String {
    let mut out = String::new();
    let mut i = 0usize;
    while let Some(first) = segs.get(i) {
        let mut r = 0usize;
        while let (Some(a), Some(b)) = (
            segs.get(i.saturating_add(r)),
            segs.get(i.saturating_add(r).saturating_add(1)),
        ) {
            if b.d == first.d && b.t == a.t.saturating_add(a.d) {
                r = r.saturating_add(1);
            } else {
                break;
            }
        }
        if r > 0 {
            let _ = write!(out, "<S t=\"{}\" d=\"{}\" r=\"{r}\"/>", first.t, first.d);
        } else {
            let _ = write!(out, "<S t=\"{}\" d=\"{}\"/>", first.t, first.d);
        }
        i = i.saturating_add(r).saturating_add(1);
    }
    out
}

/// An ad (or slate) Period: the ad's renditions per content set, segments
/// `0..count` of each, from `from_s`.
#[allow(clippy::too_many_arguments)]
fn ad_period(
    input: &DashInput<'_>,
    id: &str,
    from_s: f64,
    fill: &Fill<'_>,
    count: usize,
    ad_id: &str,
    entry: EntryRef<'_>,
    item: Option<usize>,
    out: &mut String,
) {
    let m = input.mpd;
    let mut start = String::new();
    mpd::write_duration(&mut start, from_s);
    let _ = write!(
        out,
        "<Period id=\"{}\" start=\"{start}\"><AssetIdentifier schemeIdUri=\"{SCHEME_ASSET_ID}\" value=\"{}\"/>",
        escaped(id),
        escaped(ad_id)
    );
    for (set, renditions) in &fill.sets {
        let kind = m.content(*set);
        let lang = m.lang(*set);
        write_ad_set(
            out,
            m.tree.attr(*set, "id"),
            kind,
            lang,
            renditions,
            count,
            input.self_url,
            |r, pos| segment_url(input, entry, item, r, pos),
        );
    }
    out.push_str("</Period>");
}

/// One AdaptationSet of an ad Period (also the SGAI ad MPD's): a
/// `SegmentList` per Representation with a timeline from 0 (the ad's own
/// media times) in [`AD_TIMESCALE`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_ad_set(
    out: &mut String,
    set_id: Option<&str>,
    kind: mpd::Content,
    lang: Option<&str>,
    renditions: &[&AdRendition],
    count: usize,
    base: &url::Url,
    url: impl Fn(&AdRendition, usize) -> String,
) {
    let (ct, mime) = match kind {
        mpd::Content::Audio => ("audio", "audio/mp4"),
        _ => ("video", "video/mp4"),
    };
    out.push_str("<AdaptationSet");
    if let Some(id) = set_id {
        let _ = write!(out, " id=\"{}\"", escaped(id));
    }
    let _ = write!(
        out,
        " contentType=\"{ct}\" mimeType=\"{mime}\" segmentAlignment=\"true\" startWithSAP=\"1\""
    );
    if let Some(l) = lang {
        let _ = write!(out, " lang=\"{}\"", escaped(l));
    }
    out.push('>');
    for (k, r) in renditions.iter().enumerate() {
        let prefix = if kind == mpd::Content::Audio {
            'a'
        } else {
            'v'
        };
        let _ = write!(
            out,
            "<Representation id=\"{prefix}{k}\" bandwidth=\"{}\"",
            r.bandwidth
        );
        if let Some(c) = &r.codecs {
            let _ = write!(out, " codecs=\"{}\"", escaped(c));
        }
        if let Some((w, h)) = r.resolution.as_deref().and_then(|s| s.split_once('x')) {
            if let (Ok(w), Ok(h)) = (w.trim().parse::<u32>(), h.trim().parse::<u32>()) {
                let _ = write!(out, " width=\"{w}\" height=\"{h}\"");
            }
        }
        if kind == mpd::Content::Audio {
            out.push_str(" audioSamplingRate=\"48000\"");
        }
        let mut t = 0u64;
        let n = r.segments.len().max(1);
        let picked: Vec<usize> = (0..count).map(|i| i.checked_rem(n).unwrap_or(0)).collect();
        let segs: Vec<Seg> = picked
            .iter()
            .filter_map(|i| r.segments.get(*i))
            .map(|s| {
                let d = (s.duration.max(0.0) * AD_TIMESCALE as f64).round() as u64;
                let seg = Seg { t, d, number: 0 };
                t = t.saturating_add(d);
                seg
            })
            .collect();
        let all: Vec<String> = (0..r.segments.len()).map(|i| url(r, i)).collect();
        // (Relative URLs resolve against our own: the MPD's BaseURL is the
        // origin's.)
        let init = r
            .init_uri
            .as_deref()
            .map(|i| escaped(&absolute(base, i.to_string())).into_owned())
            .unwrap_or_default();
        match index_template(&all) {
            // Segment URLs that differ only by their index (conditioned
            // ads, our `/ad/` route): a SegmentTemplate, which every
            // player reads (dash.js 5.2 fetches the first SegmentURL of a
            // live SegmentList for every segment).
            Some((pre, suf, first)) => {
                let number = first;
                let _ = write!(
                    out,
                    "><SegmentTemplate timescale=\"{AD_TIMESCALE}\" startNumber=\"{number}\" initialization=\"{}\" media=\"{}$Number${}\"><SegmentTimeline>{}</SegmentTimeline></SegmentTemplate></Representation>",
                    template_escaped(&init),
                    template_escaped(&escaped(&pre)),
                    template_escaped(&escaped(&suf)),
                    timeline_xml(&segs)
                );
            }
            None => {
                let _ = write!(out, "><SegmentList timescale=\"{AD_TIMESCALE}\">");
                if r.init_uri.is_some() {
                    let _ = write!(out, "<Initialization sourceURL=\"{init}\"/>");
                }
                out.push_str("<SegmentTimeline>");
                out.push_str(&timeline_xml(&segs));
                out.push_str("</SegmentTimeline>");
                for i in &picked {
                    let _ = write!(out, "<SegmentURL media=\"{}\"/>", escaped(&url(r, *i)));
                }
                out.push_str("</SegmentList></Representation>");
            }
        }
    }
    out.push_str("</AdaptationSet>");
}

/// `(prefix, suffix, first)` when the URLs are `prefix + n + suffix` for
/// n = first, first + 1, … (at least two of them).
fn index_template(urls: &[String]) -> Option<(String, String, usize)> {
    let (a, b) = (urls.first()?, urls.get(1)?);
    let pre = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let suf = a
        .bytes()
        .rev()
        .zip(b.bytes().rev())
        .take_while(|(x, y)| x == y)
        .count();
    // The common prefix must end before the index's digits (seg1/seg10).
    let pre = a
        .get(..pre)?
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .len();
    let suf_start = a.len().checked_sub(suf)?.max(pre);
    let (p, s) = (a.get(..pre)?, a.get(suf_start..)?);
    let s = s.trim_start_matches(|c: char| c.is_ascii_digit());
    let index = |u: &str| -> Option<usize> {
        let n = u.strip_prefix(p)?.strip_suffix(s)?;
        // One spelling per number (no leading zeros but "0").
        (n == "0" || !n.starts_with('0')).then_some(())?;
        n.parse().ok()
    };
    let first = index(a)?;
    let ok = urls
        .iter()
        .enumerate()
        .all(|(i, u)| index(u) == first.checked_add(i));
    ok.then(|| (p.to_string(), s.to_string(), first))
}

/// A template's literal text: `$` doubled (§5.3.9.4.4).
fn template_escaped(s: &str) -> String {
    s.replace('$', "$$")
}

/// An ad segment's URL: the ad's own, or through our `/ad/` route when the
/// channel counts deliveries server-side (absolute: the MPD's BaseURL is
/// the origin's).
fn segment_url(
    input: &DashInput<'_>,
    entry: EntryRef<'_>,
    item: Option<usize>,
    r: &AdRendition,
    pos: usize,
) -> String {
    let seg = r.segments.get(pos);
    let direct = seg.map(|s| s.uri.clone()).unwrap_or_default();
    let url = match (&input.settings.ad_proxy_prefix, item) {
        (Some(prefix), Some(i)) => {
            let mut s = String::new();
            crate::splice::ad_route::AdSegmentRoute::new(
                &entry.record.id,
                i,
                r,
                u32::try_from(pos).unwrap_or(0),
            )
            .write(prefix, input.settings.session.as_deref(), &mut s);
            s
        }
        _ => direct,
    };
    absolute(input.self_url, url)
}

/// A URL resolved against `base`, without parsing one that is absolute
/// already (ad segments usually are: one parse per segment was a third of
/// a DASH request's time).
pub fn absolute(base: &url::Url, u: String) -> String {
    if u.starts_with("https://") || u.starts_with("http://") {
        return u;
    }
    base.join(&u).map(|x| x.to_string()).unwrap_or(u)
}

/// A stable numeric event id for a break (dash.js reads `Event@id` as a
/// number; Shaka keys interstitials by it): FNV-1a of the break id.
pub fn event_id(break_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in break_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h & 0x7fff_ffff
}

/// The URL of a break's ad MPD (the SGAI target), for this audience.
pub fn ad_mpd_url(self_url: &url::Url, settings: &SpliceSettings, break_id: &str) -> String {
    let mut u = format!("{}{}.mpd", settings.asset_list_prefix, break_id);
    let q = settings
        .viewer_query
        .as_deref()
        .or(settings.cohort_param.as_deref());
    if let Some(q) = q {
        u.push('?');
        u.push_str(q);
    }
    self_url.join(&u).map(|x| x.to_string()).unwrap_or(u)
}

/// The SGAI events of a Period's breaks, inserted after the Period's last
/// `BaseURL`/segment-information/`AssetIdentifier`/`EventStream` child
/// (XSD order). Announced `announce_ahead_segments` before the break.
fn sgai_events(input: &DashInput<'_>, p: &PeriodInfo<'_>, breaks: &[EntryRef<'_>]) -> Edit {
    let t = &input.mpd.tree;
    let at = t
        .node(p.node)
        .map(|n| {
            n.children
                .iter()
                .filter_map(|c| t.node(*c))
                .filter(|c| {
                    matches!(
                        c.name,
                        "BaseURL"
                            | "SegmentBase"
                            | "SegmentList"
                            | "SegmentTemplate"
                            | "AssetIdentifier"
                            | "EventStream"
                    )
                })
                .map(|c| c.end)
                .max()
                .unwrap_or(n.tag_end)
        })
        .unwrap_or(0);
    let ahead = u64::try_from(input.settings.announce_ahead_segments.max(0)).unwrap_or(0);
    let mut replace = String::new();
    let mut callback = String::new();
    for e in breaks {
        let r = e.record;
        if r.anchor_msn > input.last_msn.saturating_add(ahead) {
            continue;
        }
        let Some(b_s) = time_s(input, r, r.anchor_msn) else {
            continue;
        };
        let rel_ms = ((b_s - p.start_s) * 1000.0).round().max(0.0) as u64;
        let dur_ms = u64::from(r.covered()).saturating_mul(r.cadence_ms);
        let url = ad_mpd_url(input.self_url, input.settings, &r.id);
        let id = event_id(&r.id);
        let _ = write!(
            replace,
            "<Event id=\"{id}\" presentationTime=\"{rel_ms}\" duration=\"{dur_ms}\"><ReplacePresentation uri=\"{}\" returnOffset=\"{dur_ms}\" maxDuration=\"{dur_ms}\"/></Event>",
            escaped(&url)
        );
        let _ = write!(
            callback,
            "<Event id=\"{id}\" presentationTime=\"{rel_ms}\" duration=\"0\">{}</Event>",
            escaped(&url)
        );
    }
    let mut with = String::new();
    if !replace.is_empty() {
        let _ = write!(
            with,
            "<EventStream schemeIdUri=\"{SCHEME_REPLACE}\" timescale=\"1000\">{replace}</EventStream><EventStream schemeIdUri=\"{SCHEME_CALLBACK}\" value=\"1\" timescale=\"1000\">{callback}</EventStream>"
        );
    }
    Edit {
        start: at,
        end: at,
        with,
    }
}

/// The SGAI ad MPD of a break: a static MPD of the break's slots from 0,
/// one Period per ad (and per slate repetition), video and audio sets from
/// the ad's fMP4 renditions; `lang` is the content's audio language.
pub fn ad_mpd(
    entry: EntryRef<'_>,
    lang: Option<&str>,
    base: &url::Url,
    url: impl Fn(Option<usize>, &AdRendition, usize) -> String,
) -> String {
    let r = entry.record;
    let cadence = r.cadence_ms as f64 / 1000.0;
    let slots = crate::model::layout(r, entry.pod);
    let total = f64::from(r.covered()) * cadence;
    let mut body = String::new();
    for slot in &slots {
        let renditions = match slot.kind {
            SlotKind::Ad(i) => entry.pod.items.get(i).map(|it| (Some(i), &it.renditions)),
            SlotKind::Slate => None,
        }
        .unwrap_or((None, &entry.pod.slate.renditions));
        let kinds = [
            (mpd::Content::Video, TrackKind::Video),
            (mpd::Content::Audio, TrackKind::Audio),
        ];
        let sets: Vec<(mpd::Content, Vec<&AdRendition>)> = kinds
            .iter()
            .map(|(c, k)| {
                let mut v: Vec<&AdRendition> = renditions
                    .1
                    .iter()
                    .filter(|x| x.kind == *k && dash_playable(x))
                    .filter(|x| renditions.0.is_none() || x.segments.len() >= slot.len as usize)
                    .collect();
                v.sort_by_key(|x| x.bandwidth);
                (*c, v)
            })
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if sets.is_empty() {
            continue;
        }
        let n = sets
            .iter()
            .flat_map(|(_, v)| v.iter().map(|x| x.segments.len()))
            .min()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        let step = if renditions.0.is_some() { slot.len } else { n };
        let mut j = 0u32;
        while j < slot.len {
            let len = step.min(slot.len.saturating_sub(j));
            let mut start = String::new();
            mpd::write_duration(
                &mut start,
                f64::from(slot.start.saturating_add(j)) * cadence,
            );
            let _ = write!(
                body,
                "<Period id=\"{}-{}\" start=\"{start}\">",
                escaped(&r.id),
                slot.start.saturating_add(j)
            );
            for (k, (c, v)) in sets.iter().enumerate() {
                let sid = (k.saturating_add(1)).to_string();
                write_ad_set(
                    &mut body,
                    Some(&sid),
                    *c,
                    if *c == mpd::Content::Audio {
                        lang
                    } else {
                        None
                    },
                    v,
                    len as usize,
                    base,
                    |x, pos| url(renditions.0, x, pos),
                );
            }
            body.push_str("</Period>");
            j = j.saturating_add(step);
        }
    }
    let mut dur = String::new();
    mpd::write_duration(&mut dur, total);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"static\" mediaPresentationDuration=\"{dur}\" minBufferTime=\"PT2S\">{body}</MPD>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_templates_are_found_only_where_every_url_follows_one() {
        let urls = |f: &dyn Fn(usize) -> String, n: usize| (0..n).map(f).collect::<Vec<_>>();
        assert_eq!(
            index_template(&urls(&|i| format!("https://a/ad/1672000/seg{i}.m4s"), 12)),
            Some(("https://a/ad/1672000/seg".into(), ".m4s".into(), 0))
        );
        assert_eq!(
            index_template(&urls(
                &|i| format!("/o/c/ad/b1/0/800/{i}.m4s?sid=s2-1-2"),
                3
            )),
            Some(("/o/c/ad/b1/0/800/".into(), ".m4s?sid=s2-1-2".into(), 0))
        );
        // Numbered from 1 (or any start); the shared "1" of s10/s11 is part
        // of the index.
        assert_eq!(
            index_template(&urls(&|i| format!("s{}.m4s", i + 1), 12)),
            Some(("s".into(), ".m4s".into(), 1))
        );
        assert_eq!(
            index_template(&urls(&|i| format!("s1{i}.m4s"), 12)),
            None,
            "s10..s19, s110: not consecutive numbers"
        );
        assert_eq!(
            index_template(&["s01.m4s".into(), "s02.m4s".into()]),
            None,
            "zero-padded"
        );
        assert_eq!(
            index_template(&["https://a/x.m4s".into(), "https://a/y.m4s".into()]),
            None
        );
        assert_eq!(
            index_template(&["https://a/0.m4s".into()]),
            None,
            "one URL names no template"
        );
        assert_eq!(template_escaped("a$b"), "a$$b");
    }
}

#[cfg(test)]
mod tag_tests {
    use super::*;

    /// `<x a="1">` as `<x a="1"/>`, so it parses alone.
    fn tag_as_empty(tag: &str) -> String {
        if tag.ends_with("/>") {
            tag.to_string()
        } else {
            format!("{}/>", tag.strip_suffix('>').unwrap_or(tag))
        }
    }

    #[test]
    fn tags_keep_their_attributes_and_stay_well_formed() {
        assert_eq!(
            with_attrs(
                r#"<Period id="p0" start="PT0S" duration="PT60S">"#,
                &[("duration", None)]
            ),
            r#"<Period id="p0" start="PT0S">"#
        );
        // A single-quoted value holding a double quote keeps single quotes;
        // a set value is escaped.
        let t = with_attrs(
            r#"<Period id='say "hi"' x:y="1"/>"#,
            &[("start", Some("PT1S")), ("id", Some("a&b\"c"))],
        );
        assert_eq!(t, r#"<Period x:y="1" start="PT1S" id="a&amp;b&quot;c"/>"#);
        let t = with_attrs(r#"<Period id='say "hi"'>"#, &[("start", Some("PT1S"))]);
        assert!(
            super::super::tree::Tree::parse(&tag_as_empty(&t)).is_ok(),
            "{t}"
        );
    }
}
