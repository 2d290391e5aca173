//! Typed reading of the parts of an MPD the splice needs (ISO/IEC 23009-1
//! §5.3): `MPD@type`/`@availabilityStartTime`, Periods and their start,
//! AdaptationSets, Representations, `SegmentTemplate` with or without a
//! `SegmentTimeline`, `BaseURL`s and `EventStream`s. Everything is read from
//! the span tree, so the rewriter can keep the rest byte for byte.

use super::tree::{unescaped, Tree};
use super::DashError;
use std::borrow::Cow;

/// What a Period is, as the splice needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodInfo<'a> {
    pub node: usize,
    pub id: Option<&'a str>,
    /// `@start` in seconds (from the previous Period's start and duration
    /// when absent, 0 for the first).
    pub start_s: f64,
    pub sets: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mpd<'a> {
    pub tree: Tree<'a>,
    pub dynamic: bool,
    pub ast_ms: Option<i64>,
    pub time_shift_s: Option<f64>,
    pub periods: Vec<PeriodInfo<'a>>,
}

/// The kind of media an AdaptationSet carries, from `@contentType`, else
/// `@mimeType` (of the set or its first Representation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Video,
    Audio,
    Text,
    Other,
}

/// A `SegmentTemplate` as it applies to one Representation: attributes
/// from the nearest of Representation, AdaptationSet and Period
/// (§5.3.9.1), and the nearest `SegmentTimeline`.
#[derive(Debug, Clone, PartialEq)]
pub struct Template<'a> {
    /// The template elements, outermost (Period) first.
    pub chain: Vec<usize>,
    pub timescale: u64,
    pub pto: u64,
    pub start_number: u64,
    pub media: Option<Cow<'a, str>>,
    pub init: Option<Cow<'a, str>>,
    pub duration: Option<u64>,
    pub timeline: Option<usize>,
}

/// One media segment: start and duration in the template's timescale
/// (media time, before `@presentationTimeOffset`) and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub t: u64,
    pub d: u64,
    pub number: u64,
}

/// Longest timeline a Representation may expand to (the `@r` of one `S`
/// is untrusted).
pub const MAX_SEGMENTS: usize = 100_000;

impl<'a> Mpd<'a> {
    pub fn parse(text: &'a str) -> Result<Mpd<'a>, DashError> {
        let tree = Tree::parse(text)?;
        let root = tree.node(tree.root).ok_or(DashError::NotMpd)?;
        if root.name != "MPD" {
            return Err(DashError::NotMpd);
        }
        let dynamic = root.attr("type") == Some("dynamic");
        let ast_ms = root
            .attr("availabilityStartTime")
            .and_then(crate::hls::parse_pdt_ms);
        if dynamic && ast_ms.is_none() {
            return Err(DashError::Missing("MPD@availabilityStartTime"));
        }
        let time_shift_s = root.attr("timeShiftBufferDepth").and_then(duration_s);
        let mut periods: Vec<PeriodInfo<'a>> = Vec::new();
        let mut next_start = 0.0;
        for p in tree.children(tree.root, "Period").collect::<Vec<_>>() {
            let start_s = tree
                .attr(p, "start")
                .and_then(duration_s)
                .unwrap_or(next_start);
            next_start = tree
                .attr(p, "duration")
                .and_then(duration_s)
                .map_or(start_s, |d| start_s + d);
            periods.push(PeriodInfo {
                node: p,
                id: tree.attr(p, "id"),
                start_s,
                sets: tree.children(p, "AdaptationSet").collect(),
            });
        }
        if periods.is_empty() {
            return Err(DashError::Missing("Period"));
        }
        Ok(Mpd {
            tree,
            dynamic,
            ast_ms,
            time_shift_s,
            periods,
        })
    }

    /// The attribute of an AdaptationSet, else of its first Representation.
    fn set_attr(&self, set: usize, name: &str) -> Option<&'a str> {
        self.tree.attr(set, name).or_else(|| {
            self.tree
                .child(set, "Representation")
                .and_then(|r| self.tree.attr(r, name))
        })
    }

    pub fn content(&self, set: usize) -> Content {
        let ct = self.tree.attr(set, "contentType").unwrap_or("");
        let mime = self.set_attr(set, "mimeType").unwrap_or("");
        let kind = if ct.is_empty() {
            mime.split('/').next().unwrap_or("")
        } else {
            ct
        };
        match kind {
            "video" => Content::Video,
            "audio" => Content::Audio,
            "text" => Content::Text,
            _ if mime == "application/mp4" || mime == "application/ttml+xml" => Content::Text,
            _ => Content::Other,
        }
    }

    pub fn lang(&self, set: usize) -> Option<&'a str> {
        self.set_attr(set, "lang")
    }

    pub fn codecs(&self, set: usize) -> Option<&'a str> {
        self.set_attr(set, "codecs")
    }

    /// The template in force for a Representation of a set of a Period.
    pub fn template(&self, period: usize, set: usize, rep: Option<usize>) -> Option<Template<'a>> {
        let t = &self.tree;
        let chain: Vec<usize> = [Some(period), Some(set), rep]
            .into_iter()
            .flatten()
            .filter_map(|e| t.child(e, "SegmentTemplate"))
            .collect();
        if chain.is_empty() {
            return None;
        }
        let get = |name: &str| chain.iter().rev().find_map(|n| t.attr(*n, name));
        let num = |name: &str| get(name).and_then(|v| v.trim().parse::<u64>().ok());
        Some(Template {
            timescale: num("timescale").filter(|v| *v > 0).unwrap_or(1),
            pto: num("presentationTimeOffset").unwrap_or(0),
            start_number: num("startNumber").unwrap_or(1),
            media: get("media").map(unescaped),
            init: get("initialization").map(unescaped),
            duration: num("duration").filter(|v| *v > 0),
            timeline: chain
                .iter()
                .rev()
                .find_map(|n| t.child(*n, "SegmentTimeline")),
            chain,
        })
    }

    /// The segments a template lists: its `SegmentTimeline` (an `S@r` of
    /// -1 repeats until the next `S`, or up to media time `until`), else
    /// `@duration` numbering from media time `from` to `until`.
    pub fn segments(&self, tpl: &Template<'_>, from: u64, until: Option<u64>) -> Vec<Seg> {
        match tpl.timeline {
            Some(tl) => timeline(&self.tree, tl, tpl.start_number, until),
            None => by_duration(tpl, from, until.unwrap_or(from)),
        }
    }

    /// The media time in a template's timescale of an instant on the MPD
    /// timeline (seconds since availabilityStartTime) in a Period.
    pub fn media_time(&self, p: &PeriodInfo<'_>, tpl: &Template<'_>, at_s: f64) -> u64 {
        let rel = ((at_s - p.start_s) * tpl.timescale as f64).round();
        let rel = if rel.is_finite() && rel > 0.0 {
            rel as u64
        } else {
            0
        };
        tpl.pto.saturating_add(rel)
    }

    /// Seconds on the MPD timeline of a media time.
    pub fn at_s(p: &PeriodInfo<'_>, tpl: &Template<'_>, t: u64) -> f64 {
        p.start_s + (t as f64 - tpl.pto as f64) / tpl.timescale.max(1) as f64
    }

    /// The BaseURL chain (MPD, Period, set, Representation) resolved against
    /// the MPD's own URL.
    pub fn base(&self, mpd_url: &url::Url, elems: &[usize]) -> url::Url {
        let mut base = mpd_url.clone();
        for e in std::iter::once(self.tree.root).chain(elems.iter().copied()) {
            if let Some(b) = self.tree.child(e, "BaseURL") {
                if let Ok(u) = base.join(self.tree.text_of(b).as_ref()) {
                    base = u;
                }
            }
        }
        base
    }
}

/// `SegmentTimeline` expanded (§5.3.9.6): each `S` at `@t` (else where the
/// previous ended), `@r` more of the same duration (-1: until the next `S`
/// or `until`). Bounded by [`MAX_SEGMENTS`].
pub fn timeline(tree: &Tree<'_>, tl: usize, start_number: u64, until: Option<u64>) -> Vec<Seg> {
    let ss: Vec<usize> = tree.children(tl, "S").collect();
    let mut out = Vec::new();
    let mut t = 0u64;
    let mut number = start_number;
    for (i, s) in ss.iter().enumerate() {
        let num = |n: &str| tree.attr(*s, n).and_then(|v| v.trim().parse::<i64>().ok());
        if let Some(st) = num("t").and_then(|v| u64::try_from(v).ok()) {
            t = st;
        }
        let Some(d) = num("d")
            .and_then(|v| u64::try_from(v).ok())
            .filter(|d| *d > 0)
        else {
            continue;
        };
        let r = num("r").unwrap_or(0);
        let next_t = ss
            .get(i.saturating_add(1))
            .and_then(|n| tree.attr(*n, "t"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        let count = if r < 0 {
            match next_t.or(until) {
                Some(end) => end.saturating_sub(t).checked_div(d).unwrap_or(0),
                None => 1,
            }
        } else {
            u64::try_from(r).unwrap_or(0).saturating_add(1)
        };
        for _ in 0..count {
            if out.len() >= MAX_SEGMENTS {
                return out;
            }
            out.push(Seg { t, d, number });
            t = t.saturating_add(d);
            number = number.saturating_add(1);
        }
    }
    out
}

/// `@duration` numbering (§5.3.9.5.3): segment k starts at media time
/// `pto + k × duration` and has number `startNumber + k`; those that start
/// at or after `from` and end by `until`.
fn by_duration(tpl: &Template<'_>, from: u64, until: u64) -> Vec<Seg> {
    let Some(d) = tpl.duration else {
        return Vec::new();
    };
    let first = from.saturating_sub(tpl.pto).div_ceil(d);
    let last = until.saturating_sub(tpl.pto).checked_div(d).unwrap_or(0);
    (first..last)
        .take(MAX_SEGMENTS)
        .map(|k| Seg {
            t: tpl.pto.saturating_add(k.saturating_mul(d)),
            d,
            number: tpl.start_number.saturating_add(k),
        })
        .collect()
}

/// A segment URL from a template (§5.3.9.4.4): `$RepresentationID$`,
/// `$Number$`, `$Time$`, `$Bandwidth$` (each with an optional `%0Nd`
/// width) and `$$`.
pub fn expand(template: &str, rep_id: &str, bandwidth: u64, seg: Option<&Seg>) -> String {
    let mut out = String::with_capacity(template.len().saturating_add(16));
    let mut rest = template;
    while let Some((head, tail)) = rest.split_once('$') {
        out.push_str(head);
        let Some((ident, after)) = tail.split_once('$') else {
            out.push('$');
            out.push_str(tail);
            return out;
        };
        let (name, fmt) = ident.split_once('%').unwrap_or((ident, ""));
        let width = fmt
            .strip_prefix('0')
            .and_then(|w| w.strip_suffix('d'))
            .and_then(|w| w.parse::<usize>().ok())
            .unwrap_or(0)
            .min(32);
        let num = |v: u64| format!("{v:0width$}");
        match (name, seg) {
            ("", _) => out.push('$'),
            ("RepresentationID", _) => out.push_str(rep_id),
            ("Bandwidth", _) => out.push_str(&num(bandwidth)),
            ("Number", Some(s)) => out.push_str(&num(s.number)),
            ("Time", Some(s)) => out.push_str(&num(s.t)),
            _ => {
                out.push('$');
                out.push_str(ident);
                out.push('$');
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// An `xs:duration` (`PT1H2M3.5S`, `P1DT2H`) in seconds; years and months
/// are refused (their length is not fixed).
pub fn duration_s(v: &str) -> Option<f64> {
    let v = v.trim();
    let (neg, v) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v),
    };
    let body = v.strip_prefix('P')?;
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    let mut total = 0.0;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let scale = units.iter().find(|(u, _)| *u == c)?.1;
            total += num.parse::<f64>().ok()? * scale;
            num.clear();
        }
        num.is_empty().then_some(())
    };
    take(date, &[('D', 86_400.0)])?;
    take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    if !total.is_finite() {
        return None;
    }
    Some(if neg { -total } else { total })
}

/// Seconds as an `xs:duration`, exact to the microsecond, without trailing
/// zeros (`PT12.5S`, `PT0S`): the same value always prints the same.
pub fn write_duration(out: &mut String, secs: f64) {
    let micros = (secs.max(0.0) * 1e6).round() as u64;
    let whole = micros / 1_000_000;
    let frac = micros % 1_000_000;
    out.push_str("PT");
    out.push_str(&whole.to_string());
    if frac > 0 {
        let f = format!("{frac:06}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push('S');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_s("PT0S"), Some(0.0));
        assert_eq!(duration_s("PT1H2M3.5S"), Some(3723.5));
        assert_eq!(duration_s("P1DT1S"), Some(86401.0));
        assert_eq!(duration_s("PT11.52S"), Some(11.52));
        assert_eq!(duration_s("P1Y"), None);
        assert_eq!(duration_s("12"), None);
        assert_eq!(duration_s("PTxS"), None);
        let mut s = String::new();
        write_duration(&mut s, 11.52);
        assert_eq!(s, "PT11.52S");
        s.clear();
        write_duration(&mut s, 7.0);
        assert_eq!(s, "PT7S");
    }

    #[test]
    fn templates_expand() {
        let s = Seg {
            t: 24576,
            d: 24576,
            number: 7,
        };
        assert_eq!(
            expand("$RepresentationID$/seg$Number%05d$.m4s", "v1", 0, Some(&s)),
            "v1/seg00007.m4s"
        );
        assert_eq!(
            expand("t$Time$-$Bandwidth$$$.m4s", "v", 800, Some(&s)),
            "t24576-800$.m4s"
        );
        assert_eq!(expand("a$Unknown$b", "v", 0, Some(&s)), "a$Unknown$b");
        assert_eq!(expand("open$Number", "v", 0, Some(&s)), "open$Number");
    }

    #[test]
    fn timelines_expand_repeats() {
        let x = r#"<SegmentTimeline><S t="100" d="10" r="2"/><S d="5"/><S t="200" d="10" r="-1"/></SegmentTimeline>"#;
        let t = Tree::parse(x).unwrap();
        let segs = timeline(&t, t.root, 3, Some(230));
        let ts: Vec<_> = segs.iter().map(|s| (s.t, s.d, s.number)).collect();
        assert_eq!(
            ts,
            vec![
                (100, 10, 3),
                (110, 10, 4),
                (120, 10, 5),
                (130, 5, 6),
                (200, 10, 7),
                (210, 10, 8),
                (220, 10, 9)
            ]
        );
        // An absurd @r is bounded.
        let t =
            Tree::parse(r#"<SegmentTimeline><S t="0" d="1" r="99999999999"/></SegmentTimeline>"#)
                .unwrap();
        assert_eq!(timeline(&t, t.root, 1, None).len(), MAX_SEGMENTS);
    }
}
