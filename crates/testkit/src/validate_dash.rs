//! The DASH live validator: checks the rules that a stateless multi-period
//! splice (SSAI: the content Period split at a break, one Period per ad, a
//! return Period) and an SGAI EventStream must keep *across* reloads and
//! viewers of a dynamic MPD (ISO/IEC 23009-1).
//!
//! It parses MPDs itself (roxmltree, url), independently of the rewriter
//! it checks, into a [`Mpd`]: Periods, EventStreams, AdaptationSets,
//! Representations and the segment list of each Representation
//! (SegmentTemplate or SegmentList, with SegmentTimeline or @duration,
//! inherited Period → AdaptationSet → Representation), every segment with
//! its absolute URL, its presentation time on the MPD timeline and, for a
//! dynamic MPD, its availability start time.
//!
//! A [`Registry`] is shared by every viewer: the presentation, each
//! Period, each segment and each Event must read the same everywhere. A
//! [`Viewer`] is one player's successive reloads (nothing in the
//! time-shift window is withdrawn). The rule codes are in [`rule`].

use roxmltree::{Document, Node};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use url::Url;

/// How far two times on the MPD timeline may differ and still meet: one
/// frame at 50 fps, the rounding a packager may apply at a boundary.
pub const TOLERANCE_S: f64 = 0.020;

/// How far a viewer's clock (the fetch time) may lag the packager's.
pub const CLOCK_SKEW_S: f64 = 0.5;

/// At most this many segments per Representation: open-ended addressing
/// (`S@r=-1`, `@duration`) over a long time must not exhaust memory.
pub const MAX_SEGMENTS: usize = 100_000;

const DASH_NS: &str = "urn:mpeg:dash:schema:mpd:2011";

/// The rule codes of [`Violation::rule`].
pub mod rule {
    /// MPD@availabilityStartTime or MPD@type changed.
    pub const AST_CHANGED: &str = "ast-changed";
    /// A Period (by id) changed its @start or a Representation its
    /// presentationTimeOffset, or an id names two Periods.
    pub const PERIOD_CHANGED: &str = "period-changed";
    /// Media missing between Periods (or at a Period's start).
    pub const PERIOD_GAP: &str = "period-gap";
    /// Media outside its Period, or Periods out of order.
    pub const PERIOD_OVERLAP: &str = "period-overlap";
    /// A listed segment is not available yet at the fetch time.
    pub const SEGMENT_AHEAD: &str = "segment-ahead";
    /// A segment still inside the time-shift window is no longer listed.
    pub const SEGMENT_WITHDRAWN: &str = "segment-withdrawn";
    /// A segment (Period, AdaptationSet, Representation, time) changed its
    /// URL or duration.
    pub const SEGMENT_CHANGED: &str = "segment-changed";
    /// A SegmentTimeline has a gap or an overlap.
    pub const TIMELINE_GAP: &str = "timeline-gap";
    /// An Event (scheme, value, id) changed its attributes or content.
    pub const EVENT_CHANGED: &str = "event-changed";
    /// The MPD cannot be read as a valid MPD.
    pub const MPD_INVALID: &str = "mpd-invalid";
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

impl Violation {
    fn new(rule: &'static str, detail: String) -> Violation {
        Violation { rule, detail }
    }
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// An exact rational number of seconds: Period@start is compared exactly,
/// so `PT10S` and `PT10.000S` agree and `PT10.0001S` does not. Always
/// reduced, `den > 0`, so `==` is equality of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ratio {
    pub num: i128,
    pub den: i128,
}

impl Ratio {
    pub const ZERO: Ratio = Ratio { num: 0, den: 1 };

    fn new(num: i128, den: i128) -> Option<Ratio> {
        if den == 0 {
            return None;
        }
        let g = i128::try_from(gcd(num.unsigned_abs(), den.unsigned_abs()).max(1)).ok()?;
        let (num, den) = (num / g, den / g);
        if den < 0 {
            Some(Ratio {
                num: num.checked_neg()?,
                den: den.checked_neg()?,
            })
        } else {
            Some(Ratio { num, den })
        }
    }

    fn checked_add(self, o: Ratio) -> Option<Ratio> {
        let num = self
            .num
            .checked_mul(o.den)?
            .checked_add(o.num.checked_mul(self.den)?)?;
        Ratio::new(num, self.den.checked_mul(o.den)?)
    }

    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One parsed MPD snapshot.
#[derive(Debug, Clone)]
pub struct Mpd {
    /// MPD@type: "static" or "dynamic".
    pub mpd_type: String,
    /// MPD@availabilityStartTime in seconds since the Unix epoch.
    pub availability_start_time: Option<f64>,
    pub publish_time: Option<f64>,
    /// Seconds; `None` (absent) is an infinite time-shift window.
    pub time_shift_buffer_depth: Option<f64>,
    pub media_presentation_duration: Option<f64>,
    /// The MPD-level BaseURL resolved against the MPD URL.
    pub base_url: String,
    pub periods: Vec<Period>,
}

impl Mpd {
    pub fn is_dynamic(&self) -> bool {
        self.mpd_type == "dynamic"
    }

    /// The anchor of availability times (a static MPD has none: 0).
    fn ast(&self) -> f64 {
        self.availability_start_time.unwrap_or(0.0)
    }
}

#[derive(Debug, Clone)]
pub struct Period {
    /// Period@id, or `#index` when absent (allowed in static MPDs only).
    pub id: String,
    /// Period@start (or the previous Period's start + duration), seconds.
    pub start: f64,
    pub start_exact: Ratio,
    /// Period@duration, seconds.
    pub duration: Option<f64>,
    /// The next Period's start, else the MPD's duration, else start +
    /// Period@duration; `None` for the open live Period.
    pub end: Option<f64>,
    pub base_url: String,
    pub event_streams: Vec<EventStream>,
    pub adaptation_sets: Vec<AdaptationSet>,
}

#[derive(Debug, Clone)]
pub struct EventStream {
    pub scheme_id_uri: String,
    pub value: Option<String>,
    pub timescale: u64,
    pub presentation_time_offset: u64,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub presentation_time: u64,
    pub duration: Option<u64>,
    /// Presentation time on the MPD timeline, seconds.
    pub start: f64,
    /// Sorted attributes and raw inner XML (with the stream's timescale
    /// and offset, which give the times their meaning): an Event is "the
    /// same" while this is.
    pub identity: String,
}

#[derive(Debug, Clone)]
pub struct AdaptationSet {
    pub id: Option<String>,
    /// The id, or `#index:contentType` when there is none: the key of its
    /// segments across reloads.
    pub key: String,
    /// @contentType, else the type of the @mimeType (AdaptationSet's or
    /// first Representation's).
    pub content_type: Option<String>,
    pub mime_type: Option<String>,
    pub lang: Option<String>,
    pub representations: Vec<Representation>,
}

#[derive(Debug, Clone)]
pub struct Representation {
    pub id: String,
    pub bandwidth: Option<u64>,
    pub base_url: String,
    /// "SegmentTemplate", "SegmentList" or "none" (SegmentBase or BaseURL
    /// only: no segment list to check).
    pub addressing: &'static str,
    pub timescale: u64,
    pub presentation_time_offset: u64,
    pub start_number: u64,
    /// Segment* plus BaseURL availabilityTimeOffset, seconds (may be INF).
    pub availability_time_offset: f64,
    pub init_url: Option<String>,
    pub segments: Vec<Segment>,
    /// Gaps and overlaps inside the SegmentTimeline (rule timeline-gap).
    pub timeline_issues: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// `$Number$` (startNumber + index).
    pub number: u64,
    /// Media time (`$Time$`, S@t) and duration in timescale units.
    pub t: u64,
    pub d: u64,
    pub url: String,
    /// Presentation start and duration on the MPD timeline, seconds:
    /// Period@start + (t − presentationTimeOffset) / timescale.
    pub start: f64,
    pub duration: f64,
    /// Dynamic MPDs: AST + segment end − availabilityTimeOffset, seconds
    /// since the epoch. `None` for static MPDs and an infinite offset.
    pub available_at: Option<f64>,
}

impl Segment {
    pub fn end(&self) -> f64 {
        self.start + self.duration
    }
}

// ---------------------------------------------------------------------------
// Lexical types: xs:duration, xs:dateTime, URL templates
// ---------------------------------------------------------------------------

/// xs:duration → exact seconds. Years and months have no fixed length, so
/// only zero values of them are accepted (packagers write `P0Y0M0DT…`).
pub fn parse_duration(s: &str) -> Result<Ratio, String> {
    let bad = || format!("bad xs:duration {s:?}");
    let body = s.trim();
    let (negative, body) = match body.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, body),
    };
    let body = body.strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = match body.split_once('T') {
        Some((_, "")) => return Err(bad()),
        Some((d, t)) => (d, t),
        None => (body, ""),
    };
    let (d, any_d) =
        duration_fields(date, &[('Y', None), ('M', None), ('D', Some(86_400))]).ok_or_else(bad)?;
    let (t, any_t) = duration_fields(time, &[('H', Some(3_600)), ('M', Some(60)), ('S', Some(1))])
        .ok_or_else(bad)?;
    if !(any_d || any_t) {
        return Err(bad());
    }
    let total = d.checked_add(t).ok_or_else(bad)?;
    Ok(Ratio {
        num: if negative { -total.num } else { total.num },
        den: total.den,
    })
}

/// `nYnMnD` or `nHnMnS`: designators in order, each at most once, a
/// fraction only on seconds. A unit of `None` seconds has no fixed length
/// and must be zero.
fn duration_fields(mut rest: &str, units: &[(char, Option<i128>)]) -> Option<(Ratio, bool)> {
    let mut total = Ratio::ZERO;
    let mut next = 0;
    let mut any = false;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(end);
        let designator = tail.chars().next()?;
        let pos = next
            + units
                .get(next..)?
                .iter()
                .position(|(c, _)| *c == designator)?;
        next = pos + 1;
        if number.contains('.') && designator != 'S' {
            return None;
        }
        let value = parse_decimal(number)?;
        match units.get(pos)?.1 {
            Some(factor) => {
                total = total.checked_add(Ratio::new(value.num.checked_mul(factor)?, value.den)?)?
            }
            None if value.num != 0 => return None,
            None => {}
        }
        any = true;
        rest = tail.get(designator.len_utf8()..)?;
    }
    Some((total, any))
}

/// `digits[.digits]` exactly; bounded (12 integer, 18 fraction digits) so
/// that sums and cross-products stay inside i128.
fn parse_decimal(s: &str) -> Option<Ratio> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if (int.is_empty() && frac.is_empty()) || int.len() > 12 || frac.len() > 18 {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let den = 10i128.checked_pow(frac.len() as u32)?;
    let int_v: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_v: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    Ratio::new(int_v.checked_mul(den)?.checked_add(frac_v)?, den)
}

/// xs:dateTime → seconds since the Unix epoch. A value without a time zone
/// is read as UTC (DASH-IF IOP requires UTC for MPD times anyway).
pub fn parse_date_time(s: &str) -> Result<f64, String> {
    let bad = || format!("bad xs:dateTime {s:?}");
    let s = s.trim();
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let mut ymd = date.split('-');
    let year = fixed_digits(ymd.next(), 4).ok_or_else(bad)?;
    let month = fixed_digits(ymd.next(), 2).ok_or_else(bad)?;
    let day = fixed_digits(ymd.next(), 2).ok_or_else(bad)?;
    if ymd.next().is_some() || !(1..=12).contains(&month) {
        return Err(bad());
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(bad());
    }
    let (clock, offset) = split_zone(time).ok_or_else(bad)?;
    let mut hms = clock.split(':');
    let hour = fixed_digits(hms.next(), 2).ok_or_else(bad)?;
    let minute = fixed_digits(hms.next(), 2).ok_or_else(bad)?;
    // `ss` or `ss.s+`: two digits before any fraction.
    let sec_field = hms.next().ok_or_else(bad)?;
    let two_digits = sec_field.find('.').unwrap_or(sec_field.len()) == 2;
    let second = parse_decimal(sec_field).ok_or_else(bad)?;
    if !two_digits || hms.next().is_some() || hour > 23 || minute > 59 || second.to_f64() >= 61.0 {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    Ok((days * 86_400 + hour * 3_600 + minute * 60 - offset) as f64 + second.to_f64())
}

/// `Z`, `±hh:mm` or nothing at the end of the time → (time, offset in
/// seconds east of UTC).
fn split_zone(time: &str) -> Option<(&str, i64)> {
    if let Some(t) = time.strip_suffix('Z') {
        return Some((t, 0));
    }
    match time.get(8..).and_then(|tail| tail.find(['+', '-'])) {
        None => Some((time, 0)),
        Some(i) => {
            let at = 8 + i;
            let (clock, zone) = time.split_at(at);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone.get(1..)?.split_once(':')?;
            let (h, m) = (fixed_digits(Some(h), 2)?, fixed_digits(Some(m), 2)?);
            if h > 14 || m > 59 {
                return None;
            }
            Some((clock, sign * (h * 3_600 + m * 60)))
        }
    }
}

fn fixed_digits(s: Option<&str>, len: usize) -> Option<i64> {
    let s = s?;
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The values a SegmentTemplate identifier can take for one segment.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    pub representation_id: &'a str,
    pub bandwidth: Option<u64>,
    pub number: Option<u64>,
    pub time: Option<u64>,
}

/// Substitutes `$RepresentationID$`, `$Number$`, `$Time$`, `$Bandwidth$`
/// (the last three with an optional `%0Nd` width) and `$$` (ISO/IEC
/// 23009-1 5.3.9.4.4). Unknown identifiers and ones without a value here
/// (`$Number$` in @initialization) are errors, not left in the URL.
pub fn expand_template(template: &str, vars: &TemplateVars) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after
            .find('$')
            .ok_or_else(|| format!("template {template:?}: unterminated $"))?;
        let ident = &after[..j];
        rest = &after[j + 1..];
        if ident.is_empty() {
            out.push('$');
            continue;
        }
        let (name, format) = match ident.split_once('%') {
            Some((n, f)) => (n, Some(f)),
            None => (ident, None),
        };
        let missing = || format!("template {template:?}: ${name}$ has no value here");
        let value = match name {
            "RepresentationID" if format.is_none() => {
                out.push_str(vars.representation_id);
                continue;
            }
            "Number" => vars.number.ok_or_else(missing)?,
            "Time" => vars.time.ok_or_else(missing)?,
            "Bandwidth" => vars.bandwidth.ok_or_else(missing)?,
            _ => return Err(format!("template {template:?}: bad identifier ${ident}$")),
        };
        let width = match format {
            None => 0,
            Some(f) => {
                format_width(f).ok_or_else(|| format!("template {template:?}: bad format %{f}"))?
            }
        };
        out.push_str(&format!("{value:0width$}"));
    }
    out.push_str(rest);
    Ok(out)
}

/// `0Nd` (after the `%`) → N; bounded so a hostile width cannot allocate.
fn format_width(f: &str) -> Option<usize> {
    let digits = f.strip_prefix('0')?.strip_suffix('d')?;
    let width: usize = digits.parse().ok()?;
    (width <= 64).then_some(width)
}

// ---------------------------------------------------------------------------
// XML helpers
// ---------------------------------------------------------------------------

/// An element of the DASH schema (or of no namespace, as hand-written
/// MPDs often are) with this local name.
fn is_dash(n: Node, name: &str) -> bool {
    n.is_element()
        && n.tag_name().name() == name
        && matches!(n.tag_name().namespace(), None | Some(DASH_NS))
}

fn dash_children<'a, 'i>(
    n: Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(move |c| is_dash(*c, name))
}

fn dash_child<'a, 'i>(n: Node<'a, 'i>, name: &'static str) -> Option<Node<'a, 'i>> {
    dash_children(n, name).next()
}

fn attr_string(n: Node, name: &str) -> Option<String> {
    n.attribute(name).map(str::to_string)
}

fn attr_parse<T: std::str::FromStr>(n: Node, name: &str) -> Result<Option<T>, String> {
    n.attribute(name)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| format!("{}@{name}: cannot parse {v:?}", n.tag_name().name()))
        })
        .transpose()
}

fn attr_duration(n: Node, name: &str) -> Result<Option<Ratio>, String> {
    n.attribute(name)
        .map(|v| parse_duration(v).map_err(|e| format!("{}@{name}: {e}", n.tag_name().name())))
        .transpose()
}

/// A double or `INF` (availabilityTimeOffset), finite otherwise.
fn attr_offset(n: Node, name: &str) -> Result<Option<f64>, String> {
    match n.attribute(name).map(str::trim) {
        None => Ok(None),
        Some("INF") => Ok(Some(f64::INFINITY)),
        Some(v) => match v.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(format!(
                "{}@{name}: cannot parse {v:?}",
                n.tag_name().name()
            )),
        },
    }
}

/// The first BaseURL child resolved against `parent` (RFC 3986), and its
/// availabilityTimeOffset (which adds to the Segment* one). Alternative
/// BaseURLs (CDN failover) are not checked.
fn base_url(n: Node, parent: &Url) -> Result<(Url, f64), String> {
    match dash_child(n, "BaseURL") {
        None => Ok((parent.clone(), 0.0)),
        Some(b) => {
            let text = b.text().unwrap_or("").trim();
            let url = parent
                .join(text)
                .map_err(|e| format!("BaseURL {text:?}: {e}"))?;
            Ok((
                url,
                attr_offset(b, "availabilityTimeOffset")?.unwrap_or(0.0),
            ))
        }
    }
}

fn join(base: &Url, reference: &str) -> Result<String, String> {
    base.join(reference)
        .map(String::from)
        .map_err(|e| format!("URL {reference:?} against {base}: {e}"))
}

// ---------------------------------------------------------------------------
// Segment addressing
// ---------------------------------------------------------------------------

/// One `S` of a SegmentTimeline.
#[derive(Debug, Clone, Copy)]
struct STag {
    t: Option<u64>,
    d: u64,
    r: i64,
}

/// The attributes of one SegmentTemplate or SegmentList element; merged
/// down the hierarchy, the lower level winning attribute by attribute.
#[derive(Debug, Clone, Default)]
struct SegInfo {
    timescale: Option<u64>,
    pto: Option<u64>,
    start_number: Option<u64>,
    end_number: Option<u64>,
    duration: Option<u64>,
    media: Option<String>,
    initialization: Option<String>,
    ato: Option<f64>,
    timeline: Option<Vec<STag>>,
    /// SegmentURL@media (SegmentList only); "" = the BaseURL itself.
    urls: Option<Vec<String>>,
}

impl SegInfo {
    fn read(n: Node) -> Result<SegInfo, String> {
        // @initialization (SegmentTemplate) takes precedence over the
        // Initialization element.
        let init_element = dash_child(n, "Initialization").and_then(|i| i.attribute("sourceURL"));
        let urls: Vec<String> = dash_children(n, "SegmentURL")
            .map(|s| s.attribute("media").unwrap_or("").to_string())
            .collect();
        Ok(SegInfo {
            timescale: attr_parse(n, "timescale")?,
            pto: attr_parse(n, "presentationTimeOffset")?,
            start_number: attr_parse(n, "startNumber")?,
            end_number: attr_parse(n, "endNumber")?,
            duration: attr_parse(n, "duration")?,
            media: attr_string(n, "media"),
            initialization: n
                .attribute("initialization")
                .or(init_element)
                .map(str::to_string),
            ato: attr_offset(n, "availabilityTimeOffset")?,
            timeline: dash_child(n, "SegmentTimeline")
                .map(read_timeline)
                .transpose()?,
            urls: (!urls.is_empty()).then_some(urls),
        })
    }

    fn over(self, parent: &SegInfo) -> SegInfo {
        SegInfo {
            timescale: self.timescale.or(parent.timescale),
            pto: self.pto.or(parent.pto),
            start_number: self.start_number.or(parent.start_number),
            end_number: self.end_number.or(parent.end_number),
            duration: self.duration.or(parent.duration),
            media: self.media.or_else(|| parent.media.clone()),
            initialization: self
                .initialization
                .or_else(|| parent.initialization.clone()),
            ato: self.ato.or(parent.ato),
            timeline: self.timeline.or_else(|| parent.timeline.clone()),
            urls: self.urls.or_else(|| parent.urls.clone()),
        }
    }
}

fn read_timeline(n: Node) -> Result<Vec<STag>, String> {
    dash_children(n, "S")
        .map(|s| {
            let r: i64 = attr_parse(s, "r")?.unwrap_or(0);
            if r < -1 {
                return Err(format!("S@r={r}"));
            }
            Ok(STag {
                t: attr_parse(s, "t")?,
                d: attr_parse(s, "d")?.ok_or("S without @d")?,
                r,
            })
        })
        .collect()
}

/// The addressing of a Representation from its three levels (Period,
/// AdaptationSet, Representation): the kind the lowest level names, with
/// that kind's attributes merged down. `(info, is_list)`.
fn addressing(levels: [Node; 3]) -> Result<Option<(SegInfo, bool)>, String> {
    let mut template: Option<SegInfo> = None;
    let mut list: Option<SegInfo> = None;
    let mut lowest_is_list = None;
    for n in levels {
        if let Some(e) = dash_child(n, "SegmentTemplate") {
            let s = SegInfo::read(e)?;
            template = Some(match template {
                Some(parent) => s.over(&parent),
                None => s,
            });
            lowest_is_list = Some(false);
        }
        if let Some(e) = dash_child(n, "SegmentList") {
            let s = SegInfo::read(e)?;
            list = Some(match list {
                Some(parent) => s.over(&parent),
                None => s,
            });
            lowest_is_list = Some(true);
        }
    }
    Ok(match lowest_is_list {
        Some(true) => list.map(|l| (l, true)),
        Some(false) => template.map(|t| (t, false)),
        None => None,
    })
}

/// How far open-ended addressing (`S@r=-1` last, `@duration` templates)
/// reaches, in seconds from the Period's start.
#[derive(Debug, Clone, Copy)]
struct Reach {
    /// The Period's end: segments start before it.
    end: Option<f64>,
    /// Dynamic: now − AST − Period@start + availabilityTimeOffset: the
    /// segments listed end at or before it.
    live_edge: Option<f64>,
    /// Dynamic: the time-shift window's start: segments end after it.
    window_start: Option<f64>,
}

/// A listed segment before URLs: (index from startNumber, t, d).
type Span = (u64, u64, u64);

/// Rounding slack for float bounds expressed in segments.
const EPS: f64 = 1e-9;

/// The segments of a SegmentTimeline, with its gaps and overlaps. `S@t`
/// defaults to 0 on the first S and to the previous end after (5.3.9.6).
fn timeline_spans(
    stags: &[STag],
    ts: u64,
    pto: u64,
    reach: &Reach,
) -> Result<(Vec<Span>, Vec<String>), String> {
    let mut spans: Vec<Span> = Vec::new();
    let mut issues = Vec::new();
    let mut next_t: u64 = 0;
    let mut prev_end: Option<u64> = None;
    for (i, s) in stags.iter().enumerate() {
        if s.d == 0 {
            return Err("S@d=0".into());
        }
        let t = s.t.unwrap_or(next_t);
        if let (Some(st), Some(pe)) = (s.t, prev_end) {
            if st != pe {
                let what = if st > pe { "gap" } else { "overlap" };
                issues.push(format!(
                    "{what}: S@t={st} but the previous segment ends at {pe} (timescale {ts})"
                ));
            }
        }
        let count = if s.r >= 0 {
            s.r as u64 + 1
        } else {
            repeat_until(stags.get(i + 1), t, s.d, ts, pto, reach)?
        };
        if spans.len() as u64 + count > MAX_SEGMENTS as u64 {
            return Err(format!("more than {MAX_SEGMENTS} segments in a timeline"));
        }
        for k in 0..count {
            let start = k
                .checked_mul(s.d)
                .and_then(|o| o.checked_add(t))
                .ok_or("S times overflow")?;
            spans.push((spans.len() as u64, start, s.d));
        }
        next_t = count
            .checked_mul(s.d)
            .and_then(|o| o.checked_add(t))
            .ok_or("S times overflow")?;
        prev_end = Some(next_t);
    }
    Ok((spans, issues))
}

/// The count of an `S@r=-1`: up to the next S@t, else the Period's end and
/// (dynamic) the live edge, whichever is first.
fn repeat_until(
    next: Option<&STag>,
    t: u64,
    d: u64,
    ts: u64,
    pto: u64,
    reach: &Reach,
) -> Result<u64, String> {
    if let Some(n) = next {
        let nt = n.t.ok_or("S@r=-1 followed by an S without @t")?;
        return Ok(nt.saturating_sub(t).div_ceil(d));
    }
    // Media time of a point `x` seconds into the Period.
    let media = |x: f64| pto as f64 + x * ts as f64;
    let by_end = reach
        .end
        .map(|e| ((media(e) - t as f64) / d as f64 - EPS).ceil().max(0.0));
    let by_live = reach
        .live_edge
        .map(|l| ((media(l) - t as f64) / d as f64 + EPS).floor().max(0.0));
    let count = match (by_end, by_live) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return Err("S@r=-1 with no Period end and no time to stop at".into()),
    };
    if count > MAX_SEGMENTS as f64 {
        return Err(format!("S@r=-1 reaches more than {MAX_SEGMENTS} segments"));
    }
    Ok(count as u64)
}

/// The segments of number-based addressing (`@duration`, no timeline):
/// from the first still in the time-shift window to the last available
/// (dynamic), or to the Period's end.
fn duration_spans(
    d: u64,
    ts: u64,
    pto: u64,
    info: &SegInfo,
    reach: &Reach,
) -> Result<Vec<Span>, String> {
    if d == 0 {
        return Err("@duration=0".into());
    }
    let seg = d as f64 / ts as f64;
    let first = reach
        .window_start
        .map_or(0.0, |w| (w / seg + EPS).floor().max(0.0));
    let by_end = reach.end.map(|e| (e / seg - EPS).ceil().max(0.0));
    let by_live = reach.live_edge.map(|l| (l / seg + EPS).floor().max(0.0));
    let by_number = match (info.end_number, info.start_number.unwrap_or(1)) {
        (Some(end), start) => Some(end.saturating_add(1).saturating_sub(start) as f64),
        (None, _) => None,
    };
    let upper = [by_end, by_live, by_number]
        .into_iter()
        .flatten()
        .reduce(f64::min)
        .ok_or("@duration addressing with no Period end and no time to stop at")?;
    if upper - first > MAX_SEGMENTS as f64 {
        return Err(format!(
            "@duration addressing lists more than {MAX_SEGMENTS} segments"
        ));
    }
    let (first, upper) = (first as u64, upper as u64);
    (first..upper)
        .map(|k| {
            let t = k
                .checked_mul(d)
                .and_then(|o| o.checked_add(pto))
                .ok_or("segment times overflow")?;
            Ok((k, t, d))
        })
        .collect()
}

/// The segments of a SegmentList without a timeline: `n` of `d` each.
fn list_spans(d: u64, pto: u64, n: usize) -> Result<Vec<Span>, String> {
    if d == 0 {
        return Err("@duration=0".into());
    }
    if n > MAX_SEGMENTS {
        return Err(format!("more than {MAX_SEGMENTS} SegmentURL"));
    }
    (0..n as u64)
        .map(|k| {
            let t = k
                .checked_mul(d)
                .and_then(|o| o.checked_add(pto))
                .ok_or("segment times overflow")?;
            Ok((k, t, d))
        })
        .collect()
}

/// The MPD-wide facts segment timing needs.
#[derive(Debug, Clone, Copy)]
struct Clock {
    dynamic: bool,
    ast: f64,
    now: Option<f64>,
    tsbd: Option<f64>,
}

/// What a Representation inherits from its Period.
struct PeriodCtx {
    start: f64,
    end: Option<f64>,
    base: Url,
    /// availabilityTimeOffset of the BaseURLs above the Representation.
    base_ato: f64,
}

fn read_representation(
    levels: [Node; 3],
    period: &PeriodCtx,
    as_base: &Url,
    clock: &Clock,
) -> Result<Representation, String> {
    let rn = levels[2];
    let id = rn
        .attribute("id")
        .ok_or("Representation without @id")?
        .to_string();
    let bandwidth = attr_parse(rn, "bandwidth")?;
    let (base, rep_ato) = base_url(rn, as_base)?;
    let base_ato = period.base_ato + rep_ato;
    let mut rep = Representation {
        id,
        bandwidth,
        base_url: base.to_string(),
        addressing: "none",
        timescale: 1,
        presentation_time_offset: 0,
        start_number: 1,
        availability_time_offset: base_ato,
        init_url: None,
        segments: Vec::new(),
        timeline_issues: Vec::new(),
    };
    let Some((info, is_list)) = addressing(levels)? else {
        return Ok(rep);
    };
    rep.addressing = if is_list {
        "SegmentList"
    } else {
        "SegmentTemplate"
    };
    let ts = info.timescale.unwrap_or(1);
    if ts == 0 {
        return Err(format!("Representation {}: timescale 0", rep.id));
    }
    let pto = info.pto.unwrap_or(0);
    let ato = info.ato.unwrap_or(0.0) + base_ato;
    rep.timescale = ts;
    rep.presentation_time_offset = pto;
    rep.start_number = info.start_number.unwrap_or(1);
    rep.availability_time_offset = ato;
    let reach = Reach {
        end: period.end.map(|e| e - period.start),
        live_edge: match (clock.dynamic, clock.now) {
            (true, Some(now)) => Some(now - clock.ast - period.start + ato),
            _ => None,
        },
        window_start: match (clock.dynamic, clock.now, clock.tsbd) {
            (true, Some(now), Some(b)) => Some(now - clock.ast - period.start - b),
            _ => None,
        },
    };
    let vars = |number, time| TemplateVars {
        representation_id: &rep.id,
        bandwidth: rep.bandwidth,
        number,
        time,
    };
    let spans = if let Some(stags) = &info.timeline {
        let (spans, issues) = timeline_spans(stags, ts, pto, &reach)?;
        rep.timeline_issues = issues;
        spans
    } else if is_list {
        // Explicit URLs: the list is what is listed, one @duration each.
        let d = info
            .duration
            .ok_or("SegmentList without @duration or SegmentTimeline")?;
        list_spans(d, pto, info.urls.as_ref().map_or(0, Vec::len))?
    } else {
        let d = info
            .duration
            .ok_or("SegmentTemplate without @duration or SegmentTimeline")?;
        duration_spans(d, ts, pto, &info, &reach)?
    };
    let mut urls = Vec::with_capacity(spans.len());
    if is_list {
        let listed = info.urls.clone().unwrap_or_default();
        if listed.len() != spans.len() {
            return Err(format!(
                "Representation {}: {} SegmentURL but {} segments in the timing",
                rep.id,
                listed.len(),
                spans.len()
            ));
        }
        for u in &listed {
            urls.push(join(&base, u)?);
        }
        rep.init_url = info
            .initialization
            .as_deref()
            .map(|u| join(&base, u))
            .transpose()?;
    } else {
        let media = info
            .media
            .as_deref()
            .ok_or("SegmentTemplate without @media")?;
        for &(k, t, _) in &spans {
            let number = rep.start_number.checked_add(k).ok_or("$Number$ overflow")?;
            urls.push(join(
                &base,
                &expand_template(media, &vars(Some(number), Some(t)))?,
            )?);
        }
        rep.init_url = info
            .initialization
            .as_deref()
            .map(|i| join(&base, &expand_template(i, &vars(None, None))?))
            .transpose()?;
    }
    for (&(k, t, d), url) in spans.iter().zip(urls) {
        let start = period.start + (t as f64 - pto as f64) / ts as f64;
        let duration = d as f64 / ts as f64;
        let available_at =
            (clock.dynamic && ato.is_finite()).then_some(clock.ast + start + duration - ato);
        rep.segments.push(Segment {
            number: rep.start_number.saturating_add(k),
            t,
            d,
            url,
            start,
            duration,
            available_at,
        });
    }
    Ok(rep)
}

// ---------------------------------------------------------------------------
// Periods, AdaptationSets, EventStreams
// ---------------------------------------------------------------------------

/// Each Period's exact start and @duration: @start, else the previous
/// Period's start + @duration, else 0 for the first Period of a static
/// MPD (5.3.2.1).
fn period_starts(periods: &[Node], dynamic: bool) -> Result<Vec<(Ratio, Option<Ratio>)>, String> {
    let mut out = Vec::with_capacity(periods.len());
    let mut prev_end: Option<Ratio> = None;
    for (i, p) in periods.iter().enumerate() {
        let start = match (attr_duration(*p, "start")?, prev_end) {
            (Some(s), _) => s,
            (None, Some(e)) => e,
            (None, None) if i == 0 && !dynamic => Ratio::ZERO,
            (None, None) => return Err(format!("Period {i}: no @start and no previous @duration")),
        };
        let duration = attr_duration(*p, "duration")?;
        prev_end = match duration {
            Some(d) => Some(start.checked_add(d).ok_or("Period@duration overflow")?),
            None => None,
        };
        out.push((start, duration));
    }
    Ok(out)
}

fn read_adaptation_set(
    pn: Node,
    an: Node,
    index: usize,
    period: &PeriodCtx,
    clock: &Clock,
) -> Result<AdaptationSet, String> {
    let id = attr_string(an, "id");
    let mime_type = attr_string(an, "mimeType")
        .or_else(|| dash_child(an, "Representation").and_then(|r| attr_string(r, "mimeType")));
    let content_type = attr_string(an, "contentType").or_else(|| {
        mime_type
            .as_deref()
            .and_then(|m| m.split('/').next())
            .map(str::to_string)
    });
    let key = id
        .clone()
        .unwrap_or_else(|| format!("#{index}:{}", content_type.as_deref().unwrap_or("")));
    let (base, as_ato) = base_url(an, &period.base)?;
    let ctx = PeriodCtx {
        start: period.start,
        end: period.end,
        base: period.base.clone(),
        base_ato: period.base_ato + as_ato,
    };
    let representations = dash_children(an, "Representation")
        .map(|rn| {
            read_representation([pn, an, rn], &ctx, &base, clock)
                .map_err(|e| format!("AdaptationSet {key}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AdaptationSet {
        id,
        key,
        content_type,
        mime_type,
        lang: attr_string(an, "lang"),
        representations,
    })
}

fn read_event_stream(n: Node, period_start: f64, text: &str) -> Result<EventStream, String> {
    let scheme_id_uri = n
        .attribute("schemeIdUri")
        .ok_or("EventStream without @schemeIdUri")?
        .to_string();
    let timescale: u64 = attr_parse(n, "timescale")?.unwrap_or(1);
    if timescale == 0 {
        return Err("EventStream@timescale=0".into());
    }
    let pto: u64 = attr_parse(n, "presentationTimeOffset")?.unwrap_or(0);
    let events = dash_children(n, "Event")
        .map(|e| {
            let presentation_time: u64 = attr_parse(e, "presentationTime")?.unwrap_or(0);
            Ok(Event {
                id: attr_string(e, "id"),
                presentation_time,
                duration: attr_parse(e, "duration")?,
                start: period_start + (presentation_time as f64 - pto as f64) / timescale as f64,
                identity: event_identity(e, timescale, pto, text),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(EventStream {
        scheme_id_uri,
        value: attr_string(n, "value"),
        timescale,
        presentation_time_offset: pto,
        events,
    })
}

/// Sorted attributes + raw inner XML: attribute order and the whitespace
/// of the start tag are not changes; anything in the payload is.
fn event_identity(e: Node, timescale: u64, pto: u64, text: &str) -> String {
    let mut attrs: Vec<String> = e
        .attributes()
        .map(|a| match a.namespace() {
            Some(ns) => format!("{{{ns}}}{}={:?}", a.name(), a.value()),
            None => format!("{}={:?}", a.name(), a.value()),
        })
        .collect();
    attrs.sort();
    let inner = match (e.first_child(), e.last_child()) {
        (Some(f), Some(l)) => text.get(f.range().start..l.range().end).unwrap_or(""),
        _ => "",
    };
    format!(
        "timescale={timescale} presentationTimeOffset={pto} {} | {}",
        attrs.join(" "),
        inner.trim()
    )
}

fn read_period(
    pn: Node,
    index: usize,
    (start, duration): (Ratio, Option<Ratio>),
    end: Option<f64>,
    (mpd_base, mpd_ato): (&Url, f64),
    clock: &Clock,
    text: &str,
) -> Result<Period, String> {
    let id = match pn.attribute("id") {
        Some(id) => id.to_string(),
        None if clock.dynamic => return Err(format!("dynamic MPD: Period {index} without @id")),
        None => format!("#{index}"),
    };
    let (base, ato) = base_url(pn, mpd_base)?;
    let ctx = PeriodCtx {
        start: start.to_f64(),
        end,
        base: base.clone(),
        base_ato: mpd_ato + ato,
    };
    let event_streams = dash_children(pn, "EventStream")
        .map(|e| read_event_stream(e, ctx.start, text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("Period {id}: {e}"))?;
    let adaptation_sets = dash_children(pn, "AdaptationSet")
        .enumerate()
        .map(|(i, an)| read_adaptation_set(pn, an, i, &ctx, clock))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("Period {id}: {e}"))?;
    Ok(Period {
        id,
        start: ctx.start,
        start_exact: start,
        duration: duration.map(Ratio::to_f64),
        end,
        base_url: base.to_string(),
        event_streams,
        adaptation_sets,
    })
}

/// Parses an MPD. Open-ended addressing of a dynamic MPD is listed up to
/// its MPD@publishTime; use [`parse_at`] to list it up to a fetch time.
pub fn parse(mpd: &str, mpd_url: &str) -> Result<Mpd, String> {
    parse_at(mpd, mpd_url, None)
}

/// Parses an MPD fetched at `now_ms` (ms since the epoch): `S@r=-1` and
/// `@duration` templates of a dynamic MPD list the segments available then
/// and still inside the time-shift window.
pub fn parse_at(mpd: &str, mpd_url: &str, now_ms: Option<i64>) -> Result<Mpd, String> {
    let doc = Document::parse(mpd).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if !is_dash(root, "MPD") {
        return Err(format!(
            "root element <{}> is not an MPD",
            root.tag_name().name()
        ));
    }
    let mpd_type = root.attribute("type").unwrap_or("static").to_string();
    let dynamic = match mpd_type.as_str() {
        "static" => false,
        "dynamic" => true,
        other => return Err(format!("MPD@type {other:?}")),
    };
    let date = |name| -> Result<Option<f64>, String> {
        root.attribute(name)
            .map(|v| parse_date_time(v).map_err(|e| format!("MPD@{name}: {e}")))
            .transpose()
    };
    let availability_start_time = date("availabilityStartTime")?;
    let publish_time = date("publishTime")?;
    if dynamic && availability_start_time.is_none() {
        return Err("dynamic MPD without @availabilityStartTime".into());
    }
    let tsbd = attr_duration(root, "timeShiftBufferDepth")?.map(Ratio::to_f64);
    let media_presentation_duration =
        attr_duration(root, "mediaPresentationDuration")?.map(Ratio::to_f64);
    let url = Url::parse(mpd_url).map_err(|e| format!("MPD URL {mpd_url:?}: {e}"))?;
    let (base, mpd_ato) = base_url(root, &url)?;
    let clock = Clock {
        dynamic,
        ast: availability_start_time.unwrap_or(0.0),
        now: now_ms.map(|ms| ms as f64 / 1000.0).or(publish_time),
        tsbd,
    };
    let nodes: Vec<Node> = dash_children(root, "Period").collect();
    if nodes.is_empty() {
        return Err("no Period".into());
    }
    let starts = period_starts(&nodes, dynamic)?;
    let mut periods = Vec::with_capacity(nodes.len());
    for (i, pn) in nodes.iter().enumerate() {
        let (start, duration) = starts[i];
        let end = match starts.get(i + 1) {
            Some((next, _)) => Some(next.to_f64()),
            None => media_presentation_duration.or_else(|| {
                duration
                    .and_then(|d| start.checked_add(d))
                    .map(Ratio::to_f64)
            }),
        };
        periods.push(read_period(
            *pn,
            i,
            starts[i],
            end,
            (&base, mpd_ato),
            &clock,
            mpd,
        )?);
    }
    Ok(Mpd {
        mpd_type,
        availability_start_time,
        publish_time,
        time_shift_buffer_depth: tsbd,
        media_presentation_duration,
        base_url: base.to_string(),
        periods,
    })
}

// ---------------------------------------------------------------------------
// Per-Period segment lists (for integration tests that fetch them)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct PeriodSegments {
    pub id: String,
    pub start: f64,
    pub end: Option<f64>,
    pub adaptation_sets: Vec<AdaptationSegments>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AdaptationSegments {
    pub key: String,
    pub content_type: Option<String>,
    pub representations: Vec<RepresentationSegments>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepresentationSegments {
    pub id: String,
    pub bandwidth: Option<u64>,
    pub init_url: Option<String>,
    /// The sum of the listed segments' durations, seconds.
    pub duration: f64,
    pub segments: Vec<SegmentRef>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentRef {
    pub url: String,
    pub start: f64,
    pub duration: f64,
}

/// Every Period's listed segments, per AdaptationSet and Representation:
/// what to HEAD/GET, and durations to sum against the Period's.
pub fn period_segments(mpd: &Mpd) -> Vec<PeriodSegments> {
    mpd.periods
        .iter()
        .map(|p| PeriodSegments {
            id: p.id.clone(),
            start: p.start,
            end: p.end,
            adaptation_sets: p
                .adaptation_sets
                .iter()
                .map(|a| AdaptationSegments {
                    key: a.key.clone(),
                    content_type: a.content_type.clone(),
                    representations: a
                        .representations
                        .iter()
                        .map(representation_segments)
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

fn representation_segments(r: &Representation) -> RepresentationSegments {
    RepresentationSegments {
        id: r.id.clone(),
        bandwidth: r.bandwidth,
        init_url: r.init_url.clone(),
        duration: r.segments.iter().map(|s| s.duration).sum(),
        segments: r
            .segments
            .iter()
            .map(|s| SegmentRef {
                url: s.url.clone(),
                start: s.start,
                duration: s.duration,
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// Rules within one snapshot
// ---------------------------------------------------------------------------

fn representations(mpd: &Mpd) -> impl Iterator<Item = (&Period, &AdaptationSet, &Representation)> {
    mpd.periods.iter().flat_map(|p| {
        p.adaptation_sets
            .iter()
            .flat_map(move |a| a.representations.iter().map(move |r| (p, a, r)))
    })
}

fn place(p: &Period, a: &AdaptationSet, r: &Representation) -> String {
    format!(
        "Period {} AdaptationSet {} Representation {}",
        p.id, a.key, r.id
    )
}

/// Where the time-shift window of an MPD fetched at `now` starts, in
/// seconds since the epoch: −∞ for a static MPD or an infinite depth.
fn window_start(mpd: &Mpd, now: f64) -> f64 {
    match (mpd.is_dynamic(), mpd.time_shift_buffer_depth) {
        (true, Some(b)) => now - b,
        _ => f64::NEG_INFINITY,
    }
}

/// The rules one snapshot can break by itself, fetched at `now` (seconds
/// since the epoch).
pub fn snapshot_violations(mpd: &Mpd, now: f64) -> Vec<Violation> {
    let mut v = duplicate_period_ids(mpd);
    v.extend(timeline_gaps(mpd));
    v.extend(period_order(mpd));
    v.extend(media_outside_periods(mpd));
    v.extend(gaps_between_periods(mpd, now));
    v.extend(gaps_at_period_starts(mpd, now));
    v.extend(segments_ahead(mpd, now));
    v
}

/// An id names one Period (its start is what the id means to a player).
fn duplicate_period_ids(mpd: &Mpd) -> Vec<Violation> {
    let mut seen = HashSet::new();
    mpd.periods
        .iter()
        .filter(|p| !seen.insert(p.id.as_str()))
        .map(|p| {
            Violation::new(
                rule::PERIOD_CHANGED,
                format!("Period id {} names two Periods in one MPD", p.id),
            )
        })
        .collect()
}

fn timeline_gaps(mpd: &Mpd) -> Vec<Violation> {
    representations(mpd)
        .flat_map(|(p, a, r)| {
            r.timeline_issues.iter().map(move |i| {
                Violation::new(rule::TIMELINE_GAP, format!("{}: {i}", place(p, a, r)))
            })
        })
        .collect()
}

/// Periods are in the order of their starts (a player plays them in
/// document order).
fn period_order(mpd: &Mpd) -> Vec<Violation> {
    mpd.periods
        .windows(2)
        .filter(|w| w[1].start < w[0].start - TOLERANCE_S)
        .map(|w| {
            Violation::new(
                rule::PERIOD_OVERLAP,
                format!(
                    "Period {} starts at {:.3}s, before the previous Period {} ({:.3}s)",
                    w[1].id, w[1].start, w[0].id, w[0].start
                ),
            )
        })
        .collect()
}

/// No segment starts before its Period or ends after the Period's end
/// (the next Period's start): the player would play it twice or cut it.
fn media_outside_periods(mpd: &Mpd) -> Vec<Violation> {
    representations(mpd)
        .filter_map(|(p, a, r)| {
            let outside: Vec<&Segment> = r
                .segments
                .iter()
                .filter(|s| {
                    s.start < p.start - TOLERANCE_S
                        || p.end.is_some_and(|e| s.end() > e + TOLERANCE_S)
                })
                .collect();
            let first = outside.first()?;
            Some(Violation::new(
                rule::PERIOD_OVERLAP,
                format!(
                    "{}: {} segment(s) outside the Period [{:.3}s, {}); first {} spans [{:.3}s, {:.3}s)",
                    place(p, a, r),
                    outside.len(),
                    p.start,
                    p.end.map_or("open".to_string(), |e| format!("{e:.3}s")),
                    first.url,
                    first.start,
                    first.end()
                ),
            ))
        })
        .collect()
}

/// When a next Period exists and the earlier one is complete, each of the
/// earlier one's Representations lists media up to the next Period's
/// start. Complete (dynamic): the next Period started at least one segment
/// duration ago, the time an origin may take to publish its last segment.
fn gaps_between_periods(mpd: &Mpd, now: f64) -> Vec<Violation> {
    let mut v = Vec::new();
    let window_start = window_start(mpd, now) - mpd.ast();
    for w in mpd.periods.windows(2) {
        let (p, next) = (&w[0], &w[1]);
        // A boundary that left the time-shift window has no media to list.
        if next.start <= window_start + TOLERANCE_S {
            continue;
        }
        for a in &p.adaptation_sets {
            let grace = a
                .representations
                .iter()
                .flat_map(|r| &r.segments)
                .map(|s| s.duration)
                .fold(0.0, f64::max);
            if mpd.is_dynamic() && now < mpd.ast() + next.start + grace {
                continue;
            }
            for r in &a.representations {
                if r.addressing == "none" {
                    continue;
                }
                let last_end = r.segments.last().map(Segment::end);
                if last_end.is_none_or(|e| e < next.start - TOLERANCE_S) {
                    v.push(Violation::new(
                        rule::PERIOD_GAP,
                        format!(
                            "{}: media ends at {} but the next Period {} starts at {:.3}s",
                            place(p, a, r),
                            last_end.map_or("(no segment)".to_string(), |e| format!("{e:.3}s")),
                            next.id,
                            next.start
                        ),
                    ));
                }
            }
        }
    }
    v
}

/// A Period's first listed segment starts at the Period's start, or (in
/// a dynamic MPD) where the time-shift window starts when that is later.
fn gaps_at_period_starts(mpd: &Mpd, now: f64) -> Vec<Violation> {
    let window_start = window_start(mpd, now) - mpd.ast();
    representations(mpd)
        .filter_map(|(p, a, r)| {
            let first = r.segments.first()?;
            let expected = p.start.max(window_start);
            (first.start > expected + TOLERANCE_S).then(|| {
                Violation::new(
                    rule::PERIOD_GAP,
                    format!(
                        "{}: first segment starts at {:.3}s, media expected from {:.3}s",
                        place(p, a, r),
                        first.start,
                        expected
                    ),
                )
            })
        })
        .collect()
}

/// A player may fetch any listed segment at once: none may be listed
/// before it is available (AST + end − availabilityTimeOffset).
fn segments_ahead(mpd: &Mpd, now: f64) -> Vec<Violation> {
    representations(mpd)
        .filter_map(|(p, a, r)| {
            let ahead: Vec<&Segment> = r
                .segments
                .iter()
                .filter(|s| s.available_at.is_some_and(|at| at > now + CLOCK_SKEW_S))
                .collect();
            let first = ahead.first()?;
            Some(Violation::new(
                rule::SEGMENT_AHEAD,
                format!(
                    "{}: {} segment(s) listed before they are available; first {} ([{:.3}s, {:.3}s)) available {:.3}s after the fetch",
                    place(p, a, r),
                    ahead.len(),
                    first.url,
                    first.start,
                    first.end(),
                    first.available_at.unwrap_or(now) - now
                ),
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Rules across reloads and viewers
// ---------------------------------------------------------------------------

/// A segment's identity across reloads and viewers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentKey {
    pub period: String,
    pub adaptation_set: String,
    pub representation: String,
    /// Media time (S@t, or PTO + index × @duration).
    pub t: u64,
}

fn keyed_segments(mpd: &Mpd) -> impl Iterator<Item = (SegmentKey, &Representation, &Segment)> {
    representations(mpd).flat_map(|(p, a, r)| {
        r.segments.iter().map(move |s| {
            (
                SegmentKey {
                    period: p.id.clone(),
                    adaptation_set: a.key.clone(),
                    representation: r.id.clone(),
                    t: s.t,
                },
                r,
                s,
            )
        })
    })
}

/// Two durations in (possibly different) timescales are equal.
fn same_duration((d1, ts1): (u64, u64), (d2, ts2): (u64, u64)) -> bool {
    d1 as u128 * ts2 as u128 == d2 as u128 * ts1 as u128
}

#[derive(Debug, Clone)]
struct SegmentFacts {
    url: String,
    d: u64,
    timescale: u64,
}

/// What every viewer's MPDs must agree on. Share one per presentation.
#[derive(Debug, Default)]
pub struct Registry {
    /// (MPD@type, MPD@availabilityStartTime) first seen.
    presentation: Option<(String, Option<f64>)>,
    period_starts: HashMap<String, Ratio>,
    /// (Period, AdaptationSet, Representation) → (PTO, timescale).
    offsets: HashMap<(String, String, String), (u64, u64)>,
    segments: HashMap<SegmentKey, SegmentFacts>,
    /// (schemeIdUri, value, Event id) → identity.
    events: HashMap<(String, String, String), String>,
}

impl Registry {
    /// Checks one snapshot against everything seen before (any viewer),
    /// then remembers what it saw first.
    pub fn check(&mut self, mpd: &Mpd) -> Vec<Violation> {
        let mut v = self.check_presentation(mpd);
        v.extend(self.check_periods(mpd));
        v.extend(self.check_segments(mpd));
        v.extend(self.check_events(mpd));
        v
    }

    fn check_presentation(&mut self, mpd: &Mpd) -> Vec<Violation> {
        let now = (mpd.mpd_type.clone(), mpd.availability_start_time);
        let Some((ty, ast)) = &self.presentation else {
            self.presentation = Some(now);
            return Vec::new();
        };
        let mut v = Vec::new();
        if *ty != now.0 {
            v.push(Violation::new(
                rule::AST_CHANGED,
                format!("MPD@type changed {ty} -> {}", now.0),
            ));
        }
        let moved = match (ast, now.1) {
            (Some(a), Some(b)) => (a - b).abs() > 1e-6,
            (a, b) => a.is_some() != b.is_some(),
        };
        if moved {
            v.push(Violation::new(
                rule::AST_CHANGED,
                format!(
                    "MPD@availabilityStartTime changed {} -> {} (seconds since the epoch)",
                    fmt_opt(*ast),
                    fmt_opt(now.1)
                ),
            ));
        }
        v
    }

    fn check_periods(&mut self, mpd: &Mpd) -> Vec<Violation> {
        let mut v = Vec::new();
        for p in &mpd.periods {
            match self.period_starts.get(&p.id) {
                Some(prev) if *prev != p.start_exact => v.push(Violation::new(
                    rule::PERIOD_CHANGED,
                    format!(
                        "Period {} @start changed {:.6}s -> {:.6}s",
                        p.id,
                        prev.to_f64(),
                        p.start
                    ),
                )),
                Some(_) => {}
                None => {
                    self.period_starts.insert(p.id.clone(), p.start_exact);
                }
            }
        }
        for (p, a, r) in representations(mpd) {
            let key = (p.id.clone(), a.key.clone(), r.id.clone());
            let now = (r.presentation_time_offset, r.timescale);
            match self.offsets.get(&key) {
                Some(prev) if !same_duration(*prev, now) => v.push(Violation::new(
                    rule::PERIOD_CHANGED,
                    format!(
                        "{}: presentationTimeOffset changed {}/{} -> {}/{}",
                        place(p, a, r),
                        prev.0,
                        prev.1,
                        now.0,
                        now.1
                    ),
                )),
                Some(_) => {}
                None => {
                    self.offsets.insert(key, now);
                }
            }
        }
        v
    }

    fn check_segments(&mut self, mpd: &Mpd) -> Vec<Violation> {
        let mut v = Vec::new();
        for (key, r, s) in keyed_segments(mpd) {
            match self.segments.get(&key) {
                Some(prev) => {
                    let same_d = same_duration((prev.d, prev.timescale), (s.d, r.timescale));
                    if prev.url != s.url || !same_d {
                        v.push(Violation::new(
                            rule::SEGMENT_CHANGED,
                            format!(
                                "Period {} AdaptationSet {} Representation {} t={}: {} ({}/{}) -> {} ({}/{})",
                                key.period,
                                key.adaptation_set,
                                key.representation,
                                key.t,
                                prev.url,
                                prev.d,
                                prev.timescale,
                                s.url,
                                s.d,
                                r.timescale
                            ),
                        ));
                    }
                }
                None => {
                    self.segments.insert(
                        key,
                        SegmentFacts {
                            url: s.url.clone(),
                            d: s.d,
                            timescale: r.timescale,
                        },
                    );
                }
            }
        }
        v
    }

    fn check_events(&mut self, mpd: &Mpd) -> Vec<Violation> {
        let mut v = Vec::new();
        for p in &mpd.periods {
            for es in &p.event_streams {
                for e in &es.events {
                    let id =
                        e.id.clone()
                            .unwrap_or_else(|| format!("@{}", e.presentation_time));
                    let key = (
                        es.scheme_id_uri.clone(),
                        es.value.clone().unwrap_or_default(),
                        id,
                    );
                    match self.events.get(&key) {
                        Some(prev) if *prev != e.identity => v.push(Violation::new(
                            rule::EVENT_CHANGED,
                            format!(
                                "Event {} ({} {:?}) in Period {} changed: {prev} -> {}",
                                key.2, key.0, key.1, p.id, e.identity
                            ),
                        )),
                        Some(_) => {}
                        None => {
                            self.events.insert(key, e.identity.clone());
                        }
                    }
                }
            }
        }
        v
    }
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or("(none)".to_string(), |x| format!("{x:.3}"))
}

/// Segments of `prev` whose end is still inside the time-shift window at
/// `now` and that `cur` no longer lists, one violation per Representation.
/// (A listed one that changed is the Registry's segment-changed.)
pub fn withdrawn(prev: &Mpd, cur: &Mpd, now: f64) -> Vec<Violation> {
    let window_start = window_start(cur, now);
    let listed: HashSet<SegmentKey> = keyed_segments(cur).map(|(k, _, _)| k).collect();
    let mut gone: Vec<(SegmentKey, &Segment, usize)> = Vec::new();
    for (key, _, s) in keyed_segments(prev) {
        if prev.ast() + s.end() <= window_start + TOLERANCE_S || listed.contains(&key) {
            continue;
        }
        let same_rep = gone.iter_mut().find(|(k, _, _)| {
            k.period == key.period
                && k.adaptation_set == key.adaptation_set
                && k.representation == key.representation
        });
        match same_rep {
            Some(g) => g.2 += 1,
            None => gone.push((key, s, 1)),
        }
    }
    gone.into_iter()
        .map(|(k, s, n)| {
            Violation::new(
                rule::SEGMENT_WITHDRAWN,
                format!(
                    "Period {} AdaptationSet {} Representation {}: {n} segment(s) still in the time-shift window withdrawn; first {} ([{:.3}s, {:.3}s))",
                    k.period, k.adaptation_set, k.representation, s.url, s.start, s.end()
                ),
            )
        })
        .collect()
}

/// One player's successive reloads of one MPD URL.
#[derive(Debug)]
pub struct Viewer {
    mpd_url: String,
    last: Option<Mpd>,
}

impl Viewer {
    pub fn new(mpd_url: &str) -> Viewer {
        Viewer {
            mpd_url: mpd_url.to_string(),
            last: None,
        }
    }

    /// The last snapshot that parsed.
    pub fn last(&self) -> Option<&Mpd> {
        self.last.as_ref()
    }

    /// Checks the MPD this viewer fetched at `fetched_at_ms` (ms since the
    /// epoch): by itself, against the shared `registry`, and against this
    /// viewer's previous reload. An unparseable MPD is one `mpd-invalid`
    /// and leaves the state as it was.
    pub fn reload(
        &mut self,
        registry: &mut Registry,
        fetched_at_ms: i64,
        mpd_text: &str,
    ) -> Vec<Violation> {
        let mpd = match parse_at(mpd_text, &self.mpd_url, Some(fetched_at_ms)) {
            Ok(m) => m,
            Err(e) => return vec![Violation::new(rule::MPD_INVALID, e)],
        };
        let now = fetched_at_ms as f64 / 1000.0;
        let mut v = snapshot_violations(&mpd, now);
        v.extend(registry.check(&mpd));
        if let Some(prev) = &self.last {
            v.extend(withdrawn(prev, &mpd, now));
        }
        self.last = Some(mpd);
        v
    }
}

// ---------------------------------------------------------------------------
// A run over saved snapshots (`cf-ssai dash-validate`)
// ---------------------------------------------------------------------------

/// One saved MPD: who fetched it, when, and the bytes served.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub viewer: String,
    pub fetched_at_ms: i64,
    pub bytes: Vec<u8>,
}

/// `{viewer}-{fetched_at_ms}.mpd` (a viewer token has no `-`) → (viewer,
/// fetched_at_ms).
pub fn snapshot_name(file_name: &str) -> Option<(String, i64)> {
    let (viewer, ms) = file_name.strip_suffix(".mpd")?.split_once('-')?;
    if viewer.is_empty() {
        return None;
    }
    Some((viewer.to_string(), ms.parse().ok()?))
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportedViolation {
    pub rule: &'static str,
    pub viewer: String,
    pub fetched_at_ms: i64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub snapshots: usize,
    pub viewers: usize,
    pub violations: Vec<ReportedViolation>,
    /// The Periods of each viewer's last valid snapshot, first viewer (by
    /// name) first, each Period id once.
    pub periods: Vec<PeriodSegments>,
}

/// Replays saved snapshots in fetch order (viewers interleaved, as they
/// were served), one [`Viewer`] per viewer and one [`Registry`] for all.
pub fn validate_snapshots(mpd_url: &str, snapshots: &[Snapshot]) -> Report {
    let mut order: Vec<&Snapshot> = snapshots.iter().collect();
    order.sort_by(|a, b| (a.fetched_at_ms, &a.viewer).cmp(&(b.fetched_at_ms, &b.viewer)));
    let mut registry = Registry::default();
    let mut viewers: std::collections::BTreeMap<&str, Viewer> = Default::default();
    let mut violations = Vec::new();
    for s in order {
        let viewer = viewers
            .entry(s.viewer.as_str())
            .or_insert_with(|| Viewer::new(mpd_url));
        let found = match std::str::from_utf8(&s.bytes) {
            Ok(text) => viewer.reload(&mut registry, s.fetched_at_ms, text),
            Err(e) => vec![Violation::new(rule::MPD_INVALID, format!("not UTF-8: {e}"))],
        };
        violations.extend(found.into_iter().map(|v| ReportedViolation {
            rule: v.rule,
            viewer: s.viewer.clone(),
            fetched_at_ms: s.fetched_at_ms,
            detail: v.detail,
        }));
    }
    let mut seen = HashSet::new();
    let periods = viewers
        .values()
        .filter_map(Viewer::last)
        .flat_map(period_segments)
        .filter(|p| seen.insert(p.id.clone()))
        .collect();
    Report {
        snapshots: snapshots.len(),
        viewers: viewers.len(),
        violations,
        periods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://cdn.example/live/ch1/manifest.mpd";
    const AST: &str = "2025-01-01T00:00:00Z";
    const AST_MS: i64 = 1_735_689_600_000;
    /// Content: 2 s segments; video at 90 kHz, audio at 48 kHz.
    const TRACKS: [(&str, &str, u64); 2] = [("video", "v1", 90_000), ("audio", "a1", 48_000)];
    const TSBD: u64 = 30;
    const SCTE35: &str = r#"<EventStream schemeIdUri="urn:scte:scte35:2014:xml+bin" timescale="90000"><Event presentationTime="1800000" duration="1080000" id="brk"><Signal xmlns="http://www.scte.org/schemas/35/2016"><Binary>/DAlAAAAAAAAAP/wFAUAAAABf+/+AJiWgP4AFJmJAAEBAQAAH+ptqw==</Binary></Signal></Event></EventStream>"#;

    /// `secs` after AST, in ms since the epoch.
    fn at(secs: f64) -> i64 {
        AST_MS + (secs * 1000.0).round() as i64
    }

    fn rules(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|x| x.rule).collect()
    }

    fn has(v: &[Violation], rule: &str) -> bool {
        v.iter().any(|x| x.rule == rule)
    }

    /// Indexes of the 2 s segments of a Period [start, end) listed at
    /// `now`: available (end ≤ now) and inside the time-shift window.
    fn listed(start: u64, end: u64, now: u64) -> Vec<u64> {
        (0..(end - start) / 2)
            .filter(|i| {
                let e = start + 2 * (i + 1);
                e <= now && e + TSBD > now
            })
            .collect()
    }

    fn content_period(id: &str, start: u64, end: u64, now: u64, events: &str) -> String {
        let segs = listed(start, end, now);
        let Some(&first) = segs.first() else {
            return String::new();
        };
        let mut out = format!(r#"<Period id="{id}" start="PT{start}S">{events}"#);
        for (i, (kind, rep, ts)) in TRACKS.iter().enumerate() {
            // $Number$ is startNumber + the position in the timeline: a
            // window that slides moves startNumber with it. The return
            // Period: presentationTimeOffset at the return point.
            let mut offset = String::new();
            if start > 0 {
                offset.push_str(&format!(r#" presentationTimeOffset="{}""#, start * ts));
            }
            let number = start / 2 + 1 + first;
            if number != 1 {
                offset.push_str(&format!(r#" startNumber="{number}""#));
            }
            out.push_str(&format!(
                r#"
  <AdaptationSet id="{}" contentType="{kind}" mimeType="{kind}/mp4">
   <SegmentTemplate timescale="{ts}"{offset} initialization="content/$RepresentationID$/init.mp4" media="content/$RepresentationID$/$Number%05d$.m4s">
    <SegmentTimeline><S t="{}" d="{}" r="{}"/></SegmentTimeline>
   </SegmentTemplate>
   <Representation id="{rep}" bandwidth="{}"/>
  </AdaptationSet>"#,
                i + 1,
                (start + 2 * first) * ts,
                2 * ts,
                segs.len() - 1,
                if i == 0 { 3_000_000 } else { 128_000 },
            ));
        }
        out + "\n </Period>\n"
    }

    fn ad_period(n: u64, now: u64) -> String {
        let start = 20 + 6 * n;
        let segs = listed(start, start + 6, now);
        if segs.is_empty() {
            return String::new();
        }
        let mut out = format!(r#"<Period id="brk-{n}" start="PT{start}S">"#);
        for (i, (kind, rep, ts)) in TRACKS.iter().enumerate() {
            let urls: String = segs
                .iter()
                .map(|s| {
                    format!(
                        "\n     <SegmentURL media=\"https://ads.example/c/ad{n}/{rep}/{s}.m4s\"/>"
                    )
                })
                .collect();
            out.push_str(&format!(
                r#"
  <AdaptationSet id="{}" contentType="{kind}" mimeType="{kind}/mp4">
   <Representation id="{rep}" bandwidth="{}">
    <SegmentList timescale="{ts}" duration="{}">
     <Initialization sourceURL="https://ads.example/c/ad{n}/{rep}/init.mp4"/>{urls}
    </SegmentList>
   </Representation>
  </AdaptationSet>"#,
                i + 1,
                if i == 0 { 2_000_000 } else { 128_000 },
                2 * ts,
            ));
        }
        out + "\n </Period>\n"
    }

    /// What a correct multi-period SSAI rewriter serves `now` seconds
    /// after AST: content Period p0 cut at the break at 20 s, ad Periods
    /// brk-0 [20, 26) and brk-1 [26, 32) (SegmentList, absolute ad URLs,
    /// 3 × 2 s each), the return Period p0~brk from 32 s; each Period
    /// lists what is available and inside the 30 s window.
    fn ssai(now: u64) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="dynamic" availabilityStartTime="{AST}" publishTime="2025-01-01T00:00:{now:02}Z" minimumUpdatePeriod="PT2S" timeShiftBufferDepth="PT{TSBD}S" minBufferTime="PT4S">
{}{}{}{}</MPD>
"#,
            content_period("p0", 0, 20, now, SCTE35),
            ad_period(0, now),
            ad_period(1, now),
            content_period("p0~brk", 32, 100, now, ""),
        )
    }

    /// Reloads of one viewer, each `(seconds after AST, MPD)`, with its
    /// own registry; all violations.
    fn run(reloads: &[(f64, String)]) -> Vec<Violation> {
        let mut reg = Registry::default();
        let mut viewer = Viewer::new(URL);
        reloads
            .iter()
            .flat_map(|(t, mpd)| viewer.reload(&mut reg, at(*t), mpd))
            .collect()
    }

    /// The good sequence's reload times (each fetched 150 ms after the
    /// MPD was made): before the break, in each ad, after the return.
    const RELOADS: [u64; 5] = [18, 22, 28, 34, 40];

    // --- the good cases -------------------------------------------------

    #[test]
    fn ssai_sequence_with_a_late_joiner_is_clean() {
        let mut reg = Registry::default();
        let mut a = Viewer::new(URL);
        let mut b = Viewer::new(URL);
        for &n in &RELOADS {
            let v = a.reload(&mut reg, at(n as f64 + 0.15), &ssai(n));
            assert!(v.is_empty(), "viewer a at {n}: {v:?}");
            if n >= 28 {
                // Joins late, and reloads at other times.
                let late = n + 1;
                let v = b.reload(&mut reg, at(late as f64 + 0.4), &ssai(late));
                assert!(v.is_empty(), "viewer b at {late}: {v:?}");
            }
        }
        let ids: Vec<&str> = a
            .last()
            .unwrap()
            .periods
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(ids, ["p0", "brk-0", "brk-1", "p0~brk"]);
    }

    #[test]
    fn ssai_segments_resolve_and_fill_their_periods() {
        let mpd = parse_at(&ssai(40), URL, Some(at(40.15))).unwrap();
        let ps = period_segments(&mpd);
        let p0 = &ps[0];
        assert_eq!((p0.id.as_str(), p0.start, p0.end), ("p0", 0.0, Some(20.0)));
        let v = &p0.adaptation_sets[0].representations[0];
        // Sliding: ends 12..=20 are inside [10.15 s, now].
        assert_eq!(v.segments.len(), 5);
        assert_eq!(
            v.segments[0].url,
            "https://cdn.example/live/ch1/content/v1/00006.m4s"
        );
        assert_eq!(
            v.init_url.as_deref(),
            Some("https://cdn.example/live/ch1/content/v1/init.mp4")
        );
        for ad in &ps[1..3] {
            let span = ad.end.unwrap() - ad.start;
            for a in &ad.adaptation_sets {
                for r in &a.representations {
                    assert!(
                        (r.duration - span).abs() < 1e-9,
                        "{} {}: {}",
                        ad.id,
                        r.id,
                        r.duration
                    );
                    assert!(r
                        .segments
                        .iter()
                        .all(|s| s.url.starts_with("https://ads.example/c/ad")));
                    assert!(r.init_url.as_deref().unwrap().ends_with("/init.mp4"));
                }
            }
        }
        let ret = &ps[3];
        assert_eq!(
            (ret.id.as_str(), ret.start, ret.end),
            ("p0~brk", 32.0, None)
        );
        let audio = &ret.adaptation_sets[1].representations[0];
        assert_eq!(
            audio.segments[0].url,
            "https://cdn.example/live/ch1/content/a1/00017.m4s"
        );
        assert_eq!(audio.segments[0].start, 32.0);
        assert_eq!(audio.segments.len(), 4);
        let json = serde_json::to_value(&ps).unwrap();
        assert_eq!(json[1]["id"], "brk-0");
        assert_eq!(
            json[1]["adaptation_sets"][0]["representations"][0]["segments"][2]["url"],
            "https://ads.example/c/ad0/v1/2.m4s"
        );
    }

    #[test]
    fn ssai_model_has_timing_events_and_availability() {
        let mpd = parse_at(&ssai(34), URL, Some(at(34.15))).unwrap();
        assert!(mpd.is_dynamic());
        assert_eq!(mpd.availability_start_time, Some(1_735_689_600.0));
        assert_eq!(mpd.publish_time, Some(1_735_689_634.0));
        assert_eq!(mpd.time_shift_buffer_depth, Some(30.0));
        let p0 = &mpd.periods[0];
        let es = &p0.event_streams[0];
        assert_eq!(es.scheme_id_uri, "urn:scte:scte35:2014:xml+bin");
        let e = &es.events[0];
        assert_eq!(
            (e.id.as_deref(), e.presentation_time, e.duration, e.start),
            (Some("brk"), 1_800_000, Some(1_080_000), 20.0)
        );
        assert!(e.identity.contains("<Binary>/DAl"), "{}", e.identity);
        let a = &p0.adaptation_sets[1];
        assert_eq!(
            (a.key.as_str(), a.content_type.as_deref()),
            ("2", Some("audio"))
        );
        let ret = &mpd.periods[3].adaptation_sets[0].representations[0];
        assert_eq!(
            (
                ret.timescale,
                ret.presentation_time_offset,
                ret.start_number
            ),
            (90_000, 2_880_000, 17)
        );
        let s = &ret.segments[0];
        assert_eq!(
            (s.number, s.t, s.d, s.start, s.duration),
            (17, 2_880_000, 180_000, 32.0, 2.0)
        );
        assert_eq!(s.available_at, Some(1_735_689_634.0));
        assert_eq!(mpd.periods[3].start_exact, Ratio { num: 32, den: 1 });
    }

    /// SGAI: content only (number-based template), an EventStream
    /// announcing the ad.
    fn sgai(event: &str) -> String {
        format!(
            r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="{AST}" timeShiftBufferDepth="PT30S">
 <Period id="p0" start="PT0S">
  <EventStream schemeIdUri="urn:mpeg:dash:event:alternativeMPD:2022" value="insert" timescale="1000">{event}</EventStream>
  <AdaptationSet id="1" contentType="video" mimeType="video/mp4">
   <SegmentTemplate timescale="90000" duration="180000" media="content/$RepresentationID$/$Number%05d$.m4s" initialization="content/$RepresentationID$/init.mp4"/>
   <Representation id="v1" bandwidth="3000000"/>
  </AdaptationSet>
 </Period>
</MPD>"#
        )
    }

    const SGAI_EVENT: &str = r#"<Event presentationTime="20000" duration="12000" id="brk"><AlternativeMPD uri="https://ads.example/brk.mpd" returnOffset="12000"/></Event>"#;

    #[test]
    fn sgai_event_stream_identical_across_reloads_is_clean() {
        let mut reloads: Vec<(f64, String)> = [10.1, 16.1, 22.1, 28.1, 34.1]
            .iter()
            .map(|&t| (t, sgai(SGAI_EVENT)))
            .collect();
        // Attribute order is not a change; an Event gone (past) is not one.
        let reordered = SGAI_EVENT.replace(
            r#"presentationTime="20000" duration="12000" id="brk""#,
            r#"id="brk" duration="12000"  presentationTime="20000""#,
        );
        reloads.push((40.1, sgai(&reordered)));
        reloads.push((60.1, sgai("")));
        let v = run(&reloads);
        assert!(v.is_empty(), "{v:?}");
        // Number-based: the window [4.1 s, 34.1 s] lists numbers 3..=17.
        let mpd = parse_at(&sgai(SGAI_EVENT), URL, Some(at(34.1))).unwrap();
        let segs = &mpd.periods[0].adaptation_sets[0].representations[0].segments;
        assert_eq!((segs[0].number, segs.last().unwrap().number), (3, 17));
        assert_eq!(
            segs[0].url,
            "https://cdn.example/live/ch1/content/v1/00003.m4s"
        );
    }

    // --- one known-bad case per rule ------------------------------------

    #[test]
    fn ast_changed() {
        let v = run(&[
            (22.15, ssai(22)),
            (28.15, ssai(28).replace(AST, "2025-01-01T00:00:01Z")),
        ]);
        assert!(has(&v, rule::AST_CHANGED), "{v:?}");
        let v = run(&[
            (22.15, ssai(22)),
            (
                28.15,
                ssai(28).replace("type=\"dynamic\"", "type=\"static\""),
            ),
        ]);
        assert!(has(&v, rule::AST_CHANGED), "{v:?}");
        // Across viewers.
        let mut reg = Registry::default();
        assert!(Viewer::new(URL)
            .reload(&mut reg, at(22.15), &ssai(22))
            .is_empty());
        let v = Viewer::new(URL).reload(
            &mut reg,
            at(22.3),
            &ssai(22).replace(AST, "2024-12-31T23:59:59Z"),
        );
        assert!(has(&v, rule::AST_CHANGED), "{v:?}");
        // The same instant written otherwise is no change.
        let v = run(&[
            (22.15, ssai(22)),
            (
                28.15,
                ssai(28).replace(AST, "2025-01-01T01:00:00.000+01:00"),
            ),
        ]);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn period_changed() {
        let moved = ssai(34).replace(
            r#"id="brk-1" start="PT26S""#,
            r#"id="brk-1" start="PT26.5S""#,
        );
        let v = run(&[(28.15, ssai(28)), (34.15, moved)]);
        assert!(
            v.iter()
                .any(|x| x.rule == rule::PERIOD_CHANGED && x.detail.contains("brk-1 @start")),
            "{v:?}"
        );
        // PTO of the return Period.
        let pto = ssai(40).replace(
            r#"presentationTimeOffset="2880000""#,
            r#"presentationTimeOffset="2880090""#,
        );
        let v = run(&[(34.15, ssai(34)), (40.15, pto)]);
        assert!(
            v.iter()
                .any(|x| x.rule == rule::PERIOD_CHANGED
                    && x.detail.contains("presentationTimeOffset")),
            "{v:?}"
        );
        // One id for two Periods.
        let reused = ssai(28).replace(r#"id="brk-1""#, r#"id="brk-0""#);
        assert!(has(&run(&[(28.15, reused)]), rule::PERIOD_CHANGED));
        // The same start written otherwise is no change.
        let same = ssai(34).replace(r#"start="PT26S""#, r#"start="P0Y0M0DT0H0M26.000S""#);
        let v = run(&[(28.15, ssai(28)), (34.15, same)]);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn period_gap_when_content_stops_short_of_the_break() {
        // p0's video ends at 18 s; brk-0 starts at 20 s.
        let short = ssai(22).replace(
            r#"<S t="0" d="180000" r="9"/>"#,
            r#"<S t="0" d="180000" r="8"/>"#,
        );
        let v = run(&[(22.15, short.clone())]);
        assert_eq!(rules(&v), [rule::PERIOD_GAP], "{v:?}");
        assert!(
            v[0].detail
                .contains("Period p0 AdaptationSet 1 Representation v1"),
            "{v:?}"
        );
        // Not complete yet: p0's last segment may still be on its way.
        assert!(run(&[(21.5, short)]).is_empty());
    }

    #[test]
    fn period_gap_when_an_ad_underfills_its_slot() {
        let under = ssai(28).replace(
            "\n     <SegmentURL media=\"https://ads.example/c/ad0/v1/2.m4s\"/>",
            "",
        );
        let v = run(&[(28.15, under)]);
        assert!(
            v.iter().any(|x| x.rule == rule::PERIOD_GAP
                && x.detail.contains("brk-0")
                && x.detail.contains("24.000s")),
            "{v:?}"
        );
    }

    #[test]
    fn period_gap_at_the_start_of_the_return_period() {
        // The return Period's first segment starts at 34 s, not 32 s.
        let late = ssai(38).replace(
            r#"<S t="2880000" d="180000" r="2"/>"#,
            r#"<S t="3060000" d="180000" r="1"/>"#,
        );
        let v = run(&[(38.15, late)]);
        assert!(
            v.iter()
                .any(|x| x.rule == rule::PERIOD_GAP && x.detail.contains("p0~brk")),
            "{v:?}"
        );
    }

    #[test]
    fn period_overlap() {
        // brk-0 lists a fourth ad segment, past the next Period's start.
        let over = ssai(28).replace(
            "<SegmentURL media=\"https://ads.example/c/ad0/v1/2.m4s\"/>",
            "<SegmentURL media=\"https://ads.example/c/ad0/v1/2.m4s\"/><SegmentURL media=\"https://ads.example/c/ad0/v1/3.m4s\"/>",
        );
        let v = run(&[(28.15, over)]);
        assert_eq!(rules(&v), [rule::PERIOD_OVERLAP], "{v:?}");
        assert!(v[0].detail.contains("ad0/v1/3.m4s"), "{v:?}");
        // The return Period's first segment starts before the Period.
        let early = ssai(36).replace(
            r#"<S t="2880000" d="180000" r="1"/>"#,
            r#"<S t="2790000" d="180000" r="1"/>"#,
        );
        let v = run(&[(36.15, early)]);
        assert!(
            v.iter()
                .any(|x| x.rule == rule::PERIOD_OVERLAP && x.detail.contains("p0~brk")),
            "{v:?}"
        );
        // Periods out of order.
        let order = ssai(28).replace(r#"start="PT26S""#, r#"start="PT19S""#);
        let v = run(&[(28.15, order)]);
        assert!(
            v.iter().any(|x| x.rule == rule::PERIOD_OVERLAP
                && x.detail.contains("before the previous Period")),
            "{v:?}"
        );
    }

    #[test]
    fn segment_ahead() {
        // Fetched at 27 s, the MPD lists brk-1's [26, 28) (available at 28 s).
        let v = run(&[(27.0, ssai(28))]);
        assert!(
            v.iter()
                .any(|x| x.rule == rule::SEGMENT_AHEAD && x.detail.contains("brk-1")),
            "{v:?}"
        );
        // Within the clock skew it is not.
        assert!(run(&[(27.6, ssai(28))]).is_empty());
        // Nor with an availabilityTimeOffset that makes it available.
        let ato = ssai(28).replace(
            "<SegmentList ",
            r#"<SegmentList availabilityTimeOffset="1.5" "#,
        );
        assert!(run(&[(27.0, ato)]).is_empty());
    }

    #[test]
    fn segment_withdrawn() {
        // At 40 s p0 must still list [10, 12) (ends after 10.15 s).
        let trimmed = ssai(40)
            .replace(
                r#"timescale="90000" startNumber="6""#,
                r#"timescale="90000" startNumber="7""#,
            )
            .replace(
                r#"<S t="900000" d="180000" r="4"/>"#,
                r#"<S t="1080000" d="180000" r="3"/>"#,
            );
        let v = run(&[(34.15, ssai(34)), (40.15, trimmed)]);
        // (The hole at the window's start is a period-gap as well.)
        assert_eq!(
            rules(&v),
            [rule::PERIOD_GAP, rule::SEGMENT_WITHDRAWN],
            "{v:?}"
        );
        assert!(
            v[1].detail.contains("1 segment(s)") && v[1].detail.contains("content/v1/00006.m4s"),
            "{v:?}"
        );
        // A whole ad Period dropped.
        let dropped = ssai(34).replace(&ad_period(0, 34), "");
        let v = run(&[(28.15, ssai(28)), (34.15, dropped)]);
        assert!(
            v.iter()
                .any(|x| x.rule == rule::SEGMENT_WITHDRAWN && x.detail.contains("brk-0")),
            "{v:?}"
        );
    }

    #[test]
    fn segment_changed() {
        let moved =
            |s: String| s.replace("ads.example/c/ad0/v1/1.m4s", "ads.example/c/ad9/v1/1.m4s");
        // Across reloads of one viewer.
        let v = run(&[(28.15, ssai(28)), (34.15, moved(ssai(34)))]);
        assert_eq!(rules(&v), [rule::SEGMENT_CHANGED], "{v:?}");
        // Across viewers.
        let mut reg = Registry::default();
        assert!(Viewer::new(URL)
            .reload(&mut reg, at(28.15), &ssai(28))
            .is_empty());
        let v = Viewer::new(URL).reload(&mut reg, at(28.5), &moved(ssai(28)));
        assert_eq!(rules(&v), [rule::SEGMENT_CHANGED], "{v:?}");
        // A duration.
        let longer = ssai(34).replace(
            r#"<S t="2880000" d="180000" r="0"/>"#,
            r#"<S t="2880000" d="171000" r="0"/>"#,
        );
        let v = run(&[(34.15, ssai(34)), (34.6, longer)]);
        assert!(has(&v, rule::SEGMENT_CHANGED), "{v:?}");
    }

    #[test]
    fn timeline_gap() {
        let gap = ssai(22).replace(
            r#"<S t="0" d="180000" r="9"/>"#,
            r#"<S t="0" d="180000" r="4"/><S t="945000" d="180000" r="3"/>"#,
        );
        let v = run(&[(22.15, gap)]);
        assert!(
            v.iter()
                .any(|x| x.rule == rule::TIMELINE_GAP && x.detail.contains("gap: S@t=945000")),
            "{v:?}"
        );
        let overlap = ssai(22).replace(
            r#"<S t="0" d="180000" r="9"/>"#,
            r#"<S t="0" d="180000" r="4"/><S t="810000" d="180000" r="5"/>"#,
        );
        let v = run(&[(22.15, overlap)]);
        assert!(
            v.iter()
                .any(|x| x.rule == rule::TIMELINE_GAP && x.detail.contains("overlap")),
            "{v:?}"
        );
    }

    #[test]
    fn event_changed() {
        let longer = SGAI_EVENT.replace(r#"duration="12000""#, r#"duration="14000""#);
        let v = run(&[(10.1, sgai(SGAI_EVENT)), (16.1, sgai(&longer))]);
        assert_eq!(rules(&v), [rule::EVENT_CHANGED], "{v:?}");
        let payload = SGAI_EVENT.replace("brk.mpd", "other.mpd");
        let v = run(&[(10.1, sgai(SGAI_EVENT)), (16.1, sgai(&payload))]);
        assert_eq!(rules(&v), [rule::EVENT_CHANGED], "{v:?}");
        // Across viewers, and in the SSAI MPD's SCTE-35 stream.
        let mut reg = Registry::default();
        assert!(Viewer::new(URL)
            .reload(&mut reg, at(22.15), &ssai(22))
            .is_empty());
        let other = ssai(22).replace("AAEBAQAAH+ptqw==", "AAEBAQAAH+ptqX==");
        let v = Viewer::new(URL).reload(&mut reg, at(22.2), &other);
        assert_eq!(rules(&v), [rule::EVENT_CHANGED], "{v:?}");
    }

    #[test]
    fn mpd_invalid() {
        let bad = [
            "not xml".to_string(),
            "<html/>".to_string(),
            format!(r#"<MPD xmlns="{DASH_NS}" type="dynamic" availabilityStartTime="{AST}"/>"#),
            ssai(22).replace(&format!(r#" availabilityStartTime="{AST}""#), ""),
            ssai(22).replace(r#"id="brk-0" "#, ""),
            ssai(22).replace("$Number%05d$", "$Segment$"),
            ssai(22).replace("$Number%05d$", "$Number%5d$"),
            ssai(22).replace(r#"start="PT20S""#, r#"start="PT1M1H""#),
            ssai(22).replace(r#"type="dynamic""#, r#"type="live""#),
            ssai(22).replace(r#"d="180000""#, r#"d="0""#),
            ssai(22).replace(r#"r="9""#, r#"r="-2""#),
            ssai(22).replace(r#"timescale="48000""#, r#"timescale="0""#),
            ssai(22).replace(
                r#"<Representation id="v1" bandwidth="3000000"/>"#,
                r#"<Representation bandwidth="3000000"/>"#,
            ),
        ];
        for text in &bad {
            let v = run(&[(22.15, text.clone())]);
            assert_eq!(rules(&v), [rule::MPD_INVALID], "{text}\n{v:?}");
        }
        // An invalid reload leaves the viewer's state as it was.
        let v = run(&[(22.15, ssai(22)), (24.15, "<MPD".into()), (28.15, ssai(28))]);
        assert_eq!(rules(&v), [rule::MPD_INVALID], "{v:?}");
    }

    #[test]
    fn snapshot_names() {
        assert_eq!(
            snapshot_name("a-1735689622150.mpd"),
            Some(("a".into(), 1_735_689_622_150))
        );
        assert_eq!(snapshot_name("a-b-1.mpd"), None);
        assert_eq!(snapshot_name("-1.mpd"), None);
        assert_eq!(snapshot_name("a-1.xml"), None);
        assert_eq!(snapshot_name("a1.mpd"), None);
    }

    #[test]
    fn saved_snapshots_replay_in_fetch_order_across_viewers() {
        let snap = |viewer: &str, secs: f64, text: String| Snapshot {
            viewer: viewer.into(),
            fetched_at_ms: at(secs),
            bytes: text.into_bytes(),
        };
        // Out of order on input; b joins late.
        let mut snapshots: Vec<Snapshot> = RELOADS
            .iter()
            .rev()
            .map(|&n| snap("a", n as f64 + 0.15, ssai(n)))
            .collect();
        snapshots.push(snap("b", 35.4, ssai(35)));
        let report = validate_snapshots(URL, &snapshots);
        assert_eq!((report.snapshots, report.viewers), (6, 2));
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        let ids: Vec<&str> = report.periods.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["p0", "brk-0", "brk-1", "p0~brk"]);
        // b's changed ad URL and a non-UTF-8 snapshot are reported with
        // who fetched them when.
        snapshots.push(snap(
            "b",
            36.4,
            ssai(36).replace("ad1/v1/1.m4s", "adX/v1/1.m4s"),
        ));
        snapshots.push(Snapshot {
            viewer: "c".into(),
            fetched_at_ms: at(37.0),
            bytes: vec![0xff, 0xfe],
        });
        let report = validate_snapshots(URL, &snapshots);
        let got: Vec<(&str, &str, i64)> = report
            .violations
            .iter()
            .map(|v| (v.rule, v.viewer.as_str(), v.fetched_at_ms))
            .collect();
        assert_eq!(
            got,
            [
                (rule::SEGMENT_CHANGED, "b", at(36.4)),
                (rule::MPD_INVALID, "c", at(37.0))
            ]
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["violations"][0]["rule"], "segment-changed");
    }

    // --- parsing ------------------------------------------------------

    #[test]
    fn xs_duration() {
        let secs = |s| parse_duration(s).map(Ratio::to_f64);
        assert_eq!(
            parse_duration("PT1H2M3.5S"),
            Ok(Ratio { num: 7447, den: 2 })
        );
        assert_eq!(secs("PT0S"), Ok(0.0));
        assert_eq!(secs("P1DT1S"), Ok(86_401.0));
        assert_eq!(secs("P0Y0M0DT10S"), Ok(10.0));
        assert_eq!(secs("-PT1.25S"), Ok(-1.25));
        assert_eq!(parse_duration("PT10S"), parse_duration("PT10.000S"));
        assert_ne!(parse_duration("PT10S"), parse_duration("PT10.0001S"));
        for bad in [
            "",
            "P",
            "PT",
            "P1Y",
            "P1M",
            "PT1.5M",
            "10S",
            "PT1S1M",
            "PT1M1H",
            "PTS",
            "PT1..2S",
            "PT99999999999999S",
            "P1DT",
            "PT1X",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn xs_date_time() {
        assert_eq!(parse_date_time("1970-01-01T00:00:00Z"), Ok(0.0));
        assert_eq!(parse_date_time(AST), Ok(1_735_689_600.0));
        assert_eq!(
            parse_date_time("2025-01-01T01:00:00+01:00"),
            Ok(1_735_689_600.0)
        );
        assert_eq!(
            parse_date_time("2024-12-31T19:00:00-05:00"),
            Ok(1_735_689_600.0)
        );
        assert_eq!(parse_date_time("2025-01-01T00:00:00"), Ok(1_735_689_600.0));
        assert_eq!(
            parse_date_time("2024-02-29T00:00:00.5Z"),
            Ok(1_709_164_800.5)
        );
        for bad in [
            "2025-02-29T00:00:00Z",
            "2025-01-01",
            "2025-01-01T24:00:00Z",
            "2025-1-01T00:00:00Z",
            "2025-01-01T00:00:0Z",
            "2025-01-01T00:00:00+1:00",
            "x",
            "2025-01-01T00:00Z",
        ] {
            assert!(parse_date_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn url_templates() {
        let vars = TemplateVars {
            representation_id: "v1",
            bandwidth: Some(3000),
            number: Some(42),
            time: Some(900),
        };
        assert_eq!(
            expand_template(
                "$RepresentationID$/$Number%05d$-$Time$-$Bandwidth%08d$$$.m4s",
                &vars
            ),
            Ok("v1/00042-900-00003000$.m4s".to_string())
        );
        assert_eq!(
            expand_template("plain.mp4", &vars),
            Ok("plain.mp4".to_string())
        );
        let init = TemplateVars {
            number: None,
            time: None,
            ..vars
        };
        for bad in [
            "$Foo$",
            "$Number",
            "$Number%5d$",
            "$Number%05x$",
            "$RepresentationID%05d$",
            "$Number%0999d$",
        ] {
            assert!(expand_template(bad, &vars).is_err(), "{bad:?}");
        }
        assert!(expand_template("$Number$.mp4", &init).is_err());
    }

    fn static_mpd(body: &str) -> String {
        format!(
            r#"<MPD xmlns="{DASH_NS}" type="static" mediaPresentationDuration="PT8S">{body}</MPD>"#
        )
    }

    #[test]
    fn base_urls_resolve_down_the_hierarchy() {
        let text = static_mpd(
            r#"<BaseURL>../media/</BaseURL><Period id="p"><BaseURL>p/</BaseURL>
            <AdaptationSet><BaseURL>video/</BaseURL><SegmentTemplate duration="4" media="$Number$.m4s" initialization="init-$Bandwidth$.mp4"/>
              <Representation id="v1" bandwidth="500"><BaseURL>v1/</BaseURL></Representation>
              <Representation id="v2" bandwidth="900"><BaseURL>https://other.example/x/</BaseURL></Representation>
            </AdaptationSet></Period>"#,
        );
        let mpd = parse(&text, URL).unwrap();
        assert_eq!(mpd.base_url, "https://cdn.example/live/media/");
        let reps = &mpd.periods[0].adaptation_sets[0].representations;
        let urls: Vec<&str> = reps[0].segments.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://cdn.example/live/media/p/video/v1/1.m4s",
                "https://cdn.example/live/media/p/video/v1/2.m4s"
            ]
        );
        assert_eq!(
            reps[0].init_url.as_deref(),
            Some("https://cdn.example/live/media/p/video/v1/init-500.mp4")
        );
        assert_eq!(reps[1].segments[1].url, "https://other.example/x/2.m4s");
        // Static, no AST: no availability times; no AdaptationSet id: a key.
        assert_eq!(reps[0].segments[0].available_at, None);
        assert_eq!(mpd.periods[0].adaptation_sets[0].key, "#0:");
    }

    #[test]
    fn segment_template_attributes_merge_down() {
        let text = static_mpd(
            r#"<Period id="p"><SegmentTemplate timescale="1000" startNumber="5"/>
            <AdaptationSet contentType="video"><SegmentTemplate media="$RepresentationID$-$Number$-$Time$.m4s"><SegmentTimeline><S t="500" d="2000" r="1"/><S d="4000"/></SegmentTimeline></SegmentTemplate>
              <Representation id="a"/>
              <Representation id="b"><SegmentTemplate startNumber="1" presentationTimeOffset="500"/></Representation>
            </AdaptationSet></Period>"#,
        );
        let mpd = parse(&text, URL).unwrap();
        let reps = &mpd.periods[0].adaptation_sets[0].representations;
        let a: Vec<(&str, f64, f64)> = reps[0]
            .segments
            .iter()
            .map(|s| (s.url.rsplit('/').next().unwrap(), s.start, s.duration))
            .collect();
        assert_eq!(
            a,
            [
                ("a-5-500.m4s", 0.5, 2.0),
                ("a-6-2500.m4s", 2.5, 2.0),
                ("a-7-4500.m4s", 4.5, 4.0)
            ]
        );
        let b: Vec<(u64, f64)> = reps[1]
            .segments
            .iter()
            .map(|s| (s.number, s.start))
            .collect();
        assert_eq!(b, [(1, 0.0), (2, 2.0), (3, 4.0)]);
        assert_eq!(mpd.periods[0].adaptation_sets[0].key, "#0:video");
    }

    #[test]
    fn repeat_minus_one_runs_to_the_next_s_the_period_end_or_now() {
        // To the next S@t, then to the Period's end (static).
        let text = static_mpd(
            r#"<Period id="p"><AdaptationSet><SegmentTemplate timescale="10" media="$Time$.m4s"><SegmentTimeline><S t="0" d="15" r="-1"/><S t="40" d="10" r="-1"/></SegmentTimeline></SegmentTemplate><Representation id="r"/></AdaptationSet></Period>"#,
        );
        let mpd = parse(&text, URL).unwrap();
        let r = &mpd.periods[0].adaptation_sets[0].representations[0];
        let ts: Vec<u64> = r.segments.iter().map(|s| s.t).collect();
        // 0, 15, 30 (ends at 45: overlaps S@t=40), 40, 50, 60, 70 (to 8 s).
        assert_eq!(ts, [0, 15, 30, 40, 50, 60, 70]);
        assert_eq!(r.timeline_issues.len(), 1, "{:?}", r.timeline_issues);
        // Dynamic: to the segments available at the fetch time.
        let live = format!(
            r#"<MPD xmlns="{DASH_NS}" type="dynamic" availabilityStartTime="{AST}"><Period id="p" start="PT10S"><AdaptationSet><SegmentTemplate timescale="1000" presentationTimeOffset="100000" media="$Time$.m4s"><SegmentTimeline><S t="100000" d="2000" r="-1"/></SegmentTimeline></SegmentTemplate><Representation id="r"/></AdaptationSet></Period></MPD>"#
        );
        let mpd = parse_at(&live, URL, Some(at(17.9))).unwrap();
        let r = &mpd.periods[0].adaptation_sets[0].representations[0];
        // Period from 10 s: [10,12) [12,14) [14,16) are available at 17.9 s.
        assert_eq!(
            r.segments.iter().map(|s| s.start).collect::<Vec<_>>(),
            [10.0, 12.0, 14.0]
        );
        // Without a fetch time or publishTime it cannot be bounded.
        assert!(parse(&live, URL).is_err());
    }

    #[test]
    fn number_based_template_to_the_period_end() {
        let text = static_mpd(
            r#"<Period id="p"><AdaptationSet><SegmentTemplate timescale="1000" duration="3000" startNumber="0" endNumber="5" media="$Number$.m4s"/><Representation id="r"/></AdaptationSet></Period>"#,
        );
        let mpd = parse(&text, URL).unwrap();
        let r = &mpd.periods[0].adaptation_sets[0].representations[0];
        // 8 s / 3 s: three segments, the last cut by the Period's end.
        assert_eq!(
            r.segments.iter().map(|s| s.number).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // With no end at all it is an error, not a guess.
        let open = text
            .replace(r#" mediaPresentationDuration="PT8S""#, "")
            .replace(r#" endNumber="5""#, "");
        assert!(parse(&open, URL).is_err());
    }

    #[test]
    fn segment_list_with_a_timeline_and_period_starts_from_durations() {
        let text = static_mpd(
            r#"<Period id="a" duration="PT4S"><AdaptationSet><Representation id="r"><SegmentList timescale="1"><SegmentTimeline><S d="1" r="1"/><S d="2"/></SegmentTimeline><SegmentURL media="x.m4s"/><SegmentURL media="y.m4s"/><SegmentURL media="https://ads.example/z.m4s"/></SegmentList></Representation></AdaptationSet></Period>
            <Period id="b"><AdaptationSet><Representation id="r"><SegmentList timescale="1" duration="2"><SegmentURL media="b1.m4s"/><SegmentURL media="b2.m4s"/></SegmentList></Representation></AdaptationSet></Period>"#,
        );
        let mpd = parse(&text, URL).unwrap();
        let ps = period_segments(&mpd);
        assert_eq!(
            (ps[0].start, ps[0].end, ps[1].start, ps[1].end),
            (0.0, Some(4.0), 4.0, Some(8.0))
        );
        let a = &ps[0].adaptation_sets[0].representations[0];
        assert_eq!(a.duration, 4.0);
        assert_eq!(a.segments[2].url, "https://ads.example/z.m4s");
        assert_eq!(
            ps[1].adaptation_sets[0].representations[0].segments[1].start,
            6.0
        );
        assert!(snapshot_violations(&mpd, 0.0).is_empty());
        // URLs and timing must agree.
        let short = text.replace(r#"<SegmentURL media="y.m4s"/>"#, "");
        assert!(parse(&short, URL).is_err());
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic_or_a_hang() {
        // Open-ended addressing over years of tiny segments is capped.
        let tiny = format!(
            r#"<MPD xmlns="{DASH_NS}" type="dynamic" availabilityStartTime="1970-01-01T00:00:00Z"><Period id="p" start="PT0S"><AdaptationSet><SegmentTemplate timescale="1000" duration="1" media="$Number$"/><Representation id="r"/></AdaptationSet></Period></MPD>"#
        );
        assert!(parse_at(&tiny, URL, Some(AST_MS)).is_err());
        let many = static_mpd(
            r#"<Period id="p"><AdaptationSet><SegmentTemplate media="$Time$"><SegmentTimeline><S d="1" r="9223372036854775807"/></SegmentTimeline></SegmentTemplate><Representation id="r"/></AdaptationSet></Period>"#,
        );
        assert!(parse(&many, URL).is_err());
        let overflow = static_mpd(
            r#"<Period id="p"><AdaptationSet><SegmentTemplate media="$Time$"><SegmentTimeline><S t="18446744073709551615" d="2" r="1"/></SegmentTimeline></SegmentTemplate><Representation id="r"/></AdaptationSet></Period>"#,
        );
        assert!(parse(&overflow, URL).is_err());
        assert!(parse(&ssai(22), "not a url").is_err());
        // Every prefix of a real MPD: an error or an MPD, never a panic.
        let text = ssai(34);
        for i in (0..text.len()).filter(|i| text.is_char_boundary(*i)) {
            let _ = parse_at(&text[..i], URL, Some(at(34.15)));
        }
    }
}
