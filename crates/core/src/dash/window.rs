//! The MPD's window as the HLS machinery sees it: one media playlist of
//! the reference Representation (the first of the first video
//! AdaptationSet) with a program date-time per segment, and each SCTE-35
//! `EventStream` event as an `EXT-X-DATERANGE` carrying its section. The
//! cue detection, the sequencer's windows and the edge's rules then apply
//! to a DASH origin unchanged (the records, pods, KV view and cohorts are
//! the same), and the segment URIs are the origin's own, so the poller's
//! in-band reader finds `emsg` cues in them as in fMP4 HLS.
//!
//! Numbering: a segment's MSN is its `$Number$` when the media template
//! uses it (DASH-IF IOP asks live packagers to keep numbers continuous
//! across Periods), else its start time since availabilityStartTime
//! divided by the cadence (`$Time$` templates): both are stable across
//! reloads, so break records anchored on them stay valid.

use super::mpd::{self, Content, Mpd, PeriodInfo, Seg};
use super::DashError;
use crate::hls;
use crate::scte35;
use std::fmt::Write;

/// The SCTE 214-1 schemes of SCTE-35 in MPD `EventStream`s.
pub const SCHEME_XML: &str = "urn:scte:scte35:2013:xml";
pub const SCHEME_XML_BIN: &str = "urn:scte:scte35:2014:xml+bin";
pub const SCHEME_BIN: &str = "urn:scte:scte35:2013:bin";

/// The reference Representation of one Period and the segments it lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference<'a> {
    pub period: usize,
    pub set: usize,
    pub rep: Option<usize>,
    pub template: mpd::Template<'a>,
    pub segments: Vec<Seg>,
}

/// The set whose timeline names the MSNs: the first video set, else the
/// first set.
pub fn reference_set(m: &Mpd<'_>, p: &PeriodInfo<'_>) -> Option<usize> {
    p.sets
        .iter()
        .copied()
        .find(|s| m.content(*s) == Content::Video)
        .or_else(|| p.sets.first().copied())
}

/// The reference segments of every Period (listed up to `now_ms` for
/// `@duration` templates, which have no list of their own).
pub fn references<'a>(m: &Mpd<'a>, now_ms: i64) -> Vec<Reference<'a>> {
    let now_s = m
        .ast_ms
        .map_or(0.0, |a| (now_ms.saturating_sub(a)) as f64 / 1000.0);
    let from_s = now_s - m.time_shift_s.unwrap_or(60.0);
    m.periods
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let set = reference_set(m, p)?;
            let rep = m.tree.child(set, "Representation");
            let template = m.template(p.node, set, rep)?;
            let from = m.media_time(p, &template, from_s);
            let until = m.media_time(p, &template, now_s);
            let mut segments = m.segments(&template, from, Some(until));
            // A segment is published once complete.
            if m.dynamic && m.ast_ms.is_some() {
                segments
                    .retain(|s| Mpd::at_s(p, &template, s.t.saturating_add(s.d)) <= now_s + 0.001);
            }
            Some(Reference {
                period: i,
                set,
                rep,
                template,
                segments,
            })
        })
        .collect()
}

/// The most common segment duration of the references, in ms (the
/// channel's cadence when it has none configured); ties go to the longer,
/// as `MediaPlaylist::cadence_ms` decides.
pub fn cadence_ms(refs: &[Reference<'_>]) -> u64 {
    let mut ms: Vec<u64> = refs
        .iter()
        .flat_map(|r| {
            let ts = r.template.timescale.max(1) as f64;
            r.segments
                .iter()
                .map(move |s| (s.d as f64 * 1000.0 / ts).round() as u64)
        })
        .collect();
    ms.sort_unstable();
    let mut best = (0usize, 0u64);
    for run in ms.chunk_by(|a, b| a == b) {
        if let Some(d) = run.first() {
            if run.len() >= best.0 {
                best = (run.len(), *d);
            }
        }
    }
    best.1
}

/// One reference segment placed on the wall clock.
struct Placed {
    msn: u64,
    pdt_ms: i64,
    dur_s: f64,
    uri: String,
    init: Option<String>,
    period: usize,
}

/// The window as an HLS media playlist (see the module documentation).
///
/// `cadence_ms`: the channel's configured cadence (0: the window's most
/// common duration). It numbers `$Time$` segments (start / cadence,
/// rounded to the nearest), so it must not move between reloads: configure
/// it for a `$Time$` origin whose segment durations vary.
pub fn to_hls(
    m: &Mpd<'_>,
    mpd_url: &url::Url,
    now_ms: i64,
    cadence_ms: u64,
) -> Result<String, DashError> {
    let ast = m.ast_ms.unwrap_or(0);
    let refs = references(m, now_ms);
    let cadence = if cadence_ms > 0 {
        cadence_ms
    } else {
        self::cadence_ms(&refs).max(1)
    };
    let by_number = refs.iter().all(|r| {
        r.template
            .media
            .as_deref()
            .is_some_and(|t| t.contains("$Number"))
    });
    let mut placed: Vec<Placed> = Vec::new();
    for r in &refs {
        let Some(p) = m.periods.get(r.period) else {
            continue;
        };
        let rep_id = r.rep.and_then(|x| m.tree.attr(x, "id")).unwrap_or("");
        let bw = r
            .rep
            .and_then(|x| m.tree.attr(x, "bandwidth"))
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        let base = m.base(mpd_url, &[p.node, r.set]);
        let base = match r.rep {
            Some(rep) => m.base(&base, &[rep]),
            None => base,
        };
        // Relative segment names appended to the base's directory without
        // a parse per segment.
        let res = hls::Resolver::new(&base);
        let join = |s: String| {
            let mut o = String::with_capacity(s.len().saturating_add(64));
            res.push(&mut o, &s);
            o
        };
        let init = r
            .template
            .init
            .as_deref()
            .map(|i| join(mpd::expand(i, rep_id, bw, None)));
        let media = r.template.media.as_deref().unwrap_or("");
        for s in &r.segments {
            let at_s = Mpd::at_s(p, &r.template, s.t);
            let pdt_ms = ast.saturating_add((at_s * 1000.0).round() as i64);
            let msn = if by_number {
                s.number
            } else {
                let since = u64::try_from(pdt_ms.saturating_sub(ast)).unwrap_or(0);
                since
                    .saturating_add(cadence / 2)
                    .checked_div(cadence)
                    .unwrap_or(0)
            };
            placed.push(Placed {
                msn,
                pdt_ms,
                dur_s: s.d as f64 / r.template.timescale.max(1) as f64,
                uri: join(mpd::expand(media, rep_id, bw, Some(s))),
                init: init.clone(),
                period: r.period,
            });
        }
    }
    // MSNs must be consecutive: keep the newest run (a numbering restart
    // at a Period boundary leaves the older Period out of the window).
    let run_start = placed
        .windows(2)
        .rposition(|w| match w {
            [a, b] => b.msn != a.msn.saturating_add(1),
            _ => false,
        })
        .map_or(0, |i| i.saturating_add(1));
    let placed = placed.get(run_start..).unwrap_or_default();
    let Some(first) = placed.first() else {
        return Err(DashError::EmptyWindow);
    };
    let target = placed
        .iter()
        .map(|s| s.dur_s.round() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut out = String::with_capacity(placed.len().saturating_mul(120).saturating_add(256));
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        first.msn
    );
    if !m.dynamic {
        out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    }
    // Events over before the window are history (packagers keep them for
    // the whole Period): left out, or a pruned break would be found again.
    for cue in cues(m, first.pdt_ms) {
        out.push_str(&cue);
        out.push('\n');
    }
    let mut map: Option<&str> = None;
    let mut period = first.period;
    for s in placed {
        if s.period != period {
            out.push_str("#EXT-X-DISCONTINUITY\n");
            period = s.period;
        }
        if s.init.as_deref() != map {
            if let Some(i) = &s.init {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{i}\"");
            }
            map = s.init.as_deref();
        }
        out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
        hls::write_pdt_ms(&mut out, s.pdt_ms);
        let _ = write!(out, "\n#EXTINF:{:.6},\n{}\n", s.dur_s, s.uri);
    }
    if !m.dynamic {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    Ok(out)
}

/// Every SCTE-35 event of the MPD's `EventStream`s as an
/// `EXT-X-DATERANGE` at its presentation time (its splice time, SCTE
/// 214-1), carrying the section (`SCTE35-CMD`: the cue detection reads
/// whether it opens or closes a break from the section itself). An event
/// whose section cannot be read is left out (the origin's problem, never
/// the viewer's).
pub fn cues(m: &Mpd<'_>, from_ms: i64) -> Vec<String> {
    let t = &m.tree;
    let ast = m.ast_ms.unwrap_or(0);
    let mut out: Vec<String> = Vec::new();
    for p in &m.periods {
        for es in t.children(p.node, "EventStream") {
            let scheme = t.attr(es, "schemeIdUri").unwrap_or("");
            if ![SCHEME_XML, SCHEME_XML_BIN, SCHEME_BIN].contains(&scheme) {
                continue;
            }
            let num = |e: usize, n: &str| t.attr(e, n).and_then(|v| v.trim().parse::<u64>().ok());
            let ts = num(es, "timescale").filter(|v| *v > 0).unwrap_or(1);
            let pto = num(es, "presentationTimeOffset").unwrap_or(0);
            for ev in t.children(es, "Event") {
                let pt = num(ev, "presentationTime").unwrap_or(0);
                let at_s = p.start_s + (pt as f64 - pto as f64) / ts as f64;
                let at_ms = ast.saturating_add((at_s * 1000.0).round() as i64);
                let dur_ms = num(ev, "duration")
                    .map_or(0, |d| ((d as f64 / ts as f64) * 1000.0).round() as i64);
                if at_ms.saturating_add(dur_ms) < from_ms {
                    continue;
                }
                let Some(section) = event_section(m, ev, scheme) else {
                    continue;
                };
                let id = t.attr(ev, "id").unwrap_or("");
                let mut line = format!(
                    "#EXT-X-DATERANGE:ID=\"dash-{}-{}\",START-DATE=\"",
                    sanitize(id),
                    at_ms
                );
                hls::write_pdt_ms(&mut line, at_ms);
                line.push('"');
                if let Some(d) = num(ev, "duration").filter(|d| *d > 0) {
                    let _ = write!(line, ",PLANNED-DURATION={:.3}", d as f64 / ts as f64);
                }
                let _ = write!(line, ",SCTE35-CMD=0x{}", scte35::to_hex(&section));
                out.push(line);
            }
        }
    }
    // The same event in two Periods once.
    out.sort_unstable();
    out.dedup();
    out
}

/// The binary splice_info_section an `Event` carries in its scheme's form.
fn event_section(m: &Mpd<'_>, ev: usize, scheme: &str) -> Option<Vec<u8>> {
    let t = &m.tree;
    if scheme == SCHEME_BIN {
        let text = t
            .attr(ev, "messageData")
            .map(|v| super::tree::unescaped(v).into_owned())
            .unwrap_or_else(|| t.text_of(ev).into_owned());
        let b = scte35::decode_base64(text.trim()).ok()?;
        return scte35::parse(&b).is_ok().then_some(b);
    }
    let b = scte35::xml::section_from_xml(t.inner(ev)).ok()?;
    scte35::parse(&b).is_ok().then_some(b)
}

fn sanitize(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect()
}
