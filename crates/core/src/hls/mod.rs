//! A lossless, borrowing HLS tokenizer (RFC 8216bis §4) and the typed views
//! the splice acts on.
//!
//! `render(&tokenize(x)) == x` for every input: lines keep their exact bytes
//! (including `\r`), and whether the text ended with a newline. Tags we do
//! not act on are never re-serialized. Attribute lists are parsed on demand
//! with [`attr`], without allocation.

pub mod media;

use thiserror::Error;

/// Playlists larger than this are refused (a live playlist is a few KB; a
/// huge one is an attack or a bug upstream).
pub const MAX_PLAYLIST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HlsError {
    #[error("playlist is {len} bytes, over the {MAX_PLAYLIST_BYTES}-byte limit")]
    TooLarge { len: usize },
    #[error("not an HLS playlist: first line is not #EXTM3U")]
    NotM3u,
    #[error("{tag} on line {line}: {what}")]
    BadTag {
        tag: &'static str,
        line: usize,
        what: String,
    },
    #[error("a media playlist was expected but this is a master playlist")]
    NotMedia,
}

/// One line of a playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// `#EXT...` with the tag name (without `#`) and the value after `:`.
    Tag {
        raw: &'a str,
        name: &'a str,
        value: Option<&'a str>,
    },
    Uri(&'a str),
    Comment(&'a str),
    Blank(&'a str),
}

impl<'a> Line<'a> {
    pub fn raw(&self) -> &'a str {
        match *self {
            Line::Tag { raw, .. } | Line::Uri(raw) | Line::Comment(raw) | Line::Blank(raw) => raw,
        }
    }
    pub fn tag_name(&self) -> Option<&'a str> {
        match *self {
            Line::Tag { name, .. } => Some(name),
            _ => None,
        }
    }
    pub fn is_tag(&self, n: &str) -> bool {
        self.tag_name() == Some(n)
    }
    pub fn value(&self) -> Option<&'a str> {
        match *self {
            Line::Tag { value, .. } => value,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playlist<'a> {
    pub lines: Vec<Line<'a>>,
    pub trailing_newline: bool,
}

/// Tokenize a playlist into lines, borrowing from `text`.
pub fn tokenize(text: &str) -> Result<Playlist<'_>, HlsError> {
    if text.len() > MAX_PLAYLIST_BYTES {
        return Err(HlsError::TooLarge { len: text.len() });
    }
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !body.trim_start().starts_with("#EXTM3U") {
        return Err(HlsError::NotM3u);
    }
    let trailing_newline = text.ends_with('\n');
    let content = if trailing_newline {
        &text[..text.len() - 1]
    } else {
        text
    };
    let lines = LineSplit {
        rest: Some(content),
    }
    .map(classify)
    .collect();
    Ok(Playlist {
        lines,
        trailing_newline,
    })
}

/// Render tokens back to text, byte for byte.
pub fn render(p: &Playlist<'_>) -> String {
    let mut out = String::with_capacity(p.lines.iter().map(|l| l.raw().len() + 1).sum());
    for (i, l) in p.lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(l.raw());
    }
    if p.trailing_newline {
        out.push('\n');
    }
    out
}

/// `split('\n')` over bytes: lines are short, and a plain scan beats the
/// generic char searcher on the hot path.
struct LineSplit<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for LineSplit<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let r = self.rest?;
        match r.bytes().position(|b| b == b'\n') {
            Some(i) => {
                self.rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                self.rest = None;
                Some(r)
            }
        }
    }
}

fn classify(raw: &str) -> Line<'_> {
    let t = raw.strip_suffix('\r').unwrap_or(raw);
    let t = t.strip_prefix('\u{feff}').unwrap_or(t);
    let b = t.as_bytes();
    if b.is_empty() || (b[0].is_ascii_whitespace() && t.trim().is_empty()) {
        Line::Blank(raw)
    } else if b.starts_with(b"#EXT") {
        let body = &t[1..];
        match body.bytes().position(|c| c == b':') {
            Some(i) => Line::Tag {
                raw,
                name: &body[..i],
                value: Some(&body[i + 1..]),
            },
            None => Line::Tag {
                raw,
                name: body.trim_end(),
                value: None,
            },
        }
    } else if t.starts_with('#') {
        Line::Comment(raw)
    } else {
        Line::Uri(raw)
    }
}

/// The value of attribute `key` in an attribute list (RFC 8216bis §4.2),
/// quotes stripped. Quoted strings may contain commas.
pub fn attr<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    AttrIter { s: list }
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The LL-HLS delivery directives of a playlist request (RFC 8216bis
/// §6.2.5): `_HLS_msn` (with an optional `_HLS_part`) asks for a blocking
/// reload, `_HLS_skip` (`YES` or `v2`) for a delta update. The blocking
/// directives are passed through to the origin in this order; `_HLS_skip`
/// is checked and not passed on: a splice must see the whole window to
/// number it, so we never offer delta updates (the splice removes
/// `CAN-SKIP-UNTIL`) and answer with the full playlist, as RFC 8216bis
/// §6.2.5.1 allows a server to. Anything malformed is an error (the spec
/// has the server answer 400), `_HLS_part` without `_HLS_msn` too.
pub fn delivery_directives<'a>(
    query: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<(&'static str, String)>, String> {
    let (mut msn, mut part) = (None, None);
    for (k, v) in query {
        match k {
            "_HLS_msn" => {
                msn = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("_HLS_msn: {v:?} is not an MSN"))?,
                )
            }
            "_HLS_part" => {
                part = Some(
                    v.parse::<u32>()
                        .map_err(|_| format!("_HLS_part: {v:?} is not a part index"))?,
                )
            }
            "_HLS_skip" if v == "YES" || v == "v2" => {}
            "_HLS_skip" => return Err(format!("_HLS_skip: {v:?} is not YES or v2")),
            _ => {}
        }
    }
    if part.is_some() && msn.is_none() {
        return Err("_HLS_part: only with _HLS_msn".into());
    }
    let mut out = Vec::new();
    if let Some(m) = msn {
        out.push(("_HLS_msn", m.to_string()));
    }
    if let Some(p) = part {
        out.push(("_HLS_part", p.to_string()));
    }
    Ok(out)
}

/// Iterate `(key, value)` pairs of an attribute list, quotes stripped.
pub fn attrs(list: &str) -> impl Iterator<Item = (&str, &str)> {
    AttrIter { s: list }
}

struct AttrIter<'a> {
    s: &'a str,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let s = self.s.trim_start_matches([',', ' ']);
            if s.is_empty() {
                return None;
            }
            let eq = match s.find('=') {
                Some(i) => i,
                None => {
                    self.s = "";
                    return None;
                }
            };
            let key = s[..eq].trim();
            let rest = &s[eq + 1..];
            let (val, after) = if let Some(q) = rest.strip_prefix('"') {
                match q.find('"') {
                    Some(end) => (&q[..end], &q[end + 1..]),
                    None => (q, ""),
                }
            } else {
                match rest.find(',') {
                    Some(c) => (&rest[..c], &rest[c..]),
                    None => (rest, ""),
                }
            };
            self.s = after;
            if !key.is_empty() {
                return Some((key, val.trim()));
            }
        }
    }
}

/// Parse `#EXTINF:<duration>,[<title>]` duration text and seconds.
pub fn extinf_duration(value: &str) -> Option<(&str, f64)> {
    let text = value.split(',').next()?.trim();
    let secs: f64 = text.parse().ok()?;
    if secs.is_finite() && secs >= 0.0 {
        Some((text, secs))
    } else {
        None
    }
}

/// Parse an ISO 8601 / RFC 3339 date-time (as in EXT-X-PROGRAM-DATE-TIME) to
/// epoch milliseconds. The common `YYYY-MM-DDTHH:MM:SS[.fff](Z|±hh:mm)`
/// form is read directly (it is on every segment of the hot path); anything
/// else goes through chrono.
pub fn parse_pdt_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    fast_pdt(s.as_bytes()).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s)
            .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
            .ok()
            .map(|d| d.timestamp_millis())
    })
}

fn fast_pdt(b: &[u8]) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(r)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as i64;
        }
        Some(v)
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                ms = ms * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        for _ in (i - start).min(3)..3 {
            ms *= 10;
        }
        if i == start {
            return None;
        }
    }
    let offset_min = match b.get(i..)? {
        [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let v = |x: &u8| (*x as char).to_digit(10).map(|d| d as i64);
            let m = (v(h1)? * 10 + v(h2)?) * 60 + v(m1)? * 10 + v(m2)?;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + ms)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Format epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_pdt_ms(ms: i64) -> String {
    let mut s = String::with_capacity(24);
    write_pdt_ms(&mut s, ms);
    s
}

/// Append the `YYYY-MM-DDTHH:MM:SS.mmmZ` form of epoch milliseconds.
pub fn write_pdt_ms(out: &mut String, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, sec, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let mut buf = [0u8; 24];
    let put = |buf: &mut [u8], at: usize, v: i64, n: usize| {
        let mut v = v;
        for i in (0..n).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut buf, 0, y.clamp(0, 9999), 4);
    buf[4] = b'-';
    put(&mut buf, 5, m as i64, 2);
    buf[7] = b'-';
    put(&mut buf, 8, d as i64, 2);
    buf[10] = b'T';
    put(&mut buf, 11, h, 2);
    buf[13] = b':';
    put(&mut buf, 14, mi, 2);
    buf[16] = b':';
    put(&mut buf, 17, sec, 2);
    buf[19] = b'.';
    put(&mut buf, 20, milli, 3);
    buf[23] = b'Z';
    // Every byte written above is ASCII.
    out.push_str(std::str::from_utf8(&buf).unwrap_or("1970-01-01T00:00:00.000Z"));
}

/// Whether the playlist is a master (multivariant) playlist.
pub fn is_master(p: &Playlist<'_>) -> bool {
    p.lines
        .iter()
        .any(|l| l.is_tag("EXT-X-STREAM-INF") || l.is_tag("EXT-X-I-FRAME-STREAM-INF"))
        && !p.lines.iter().any(|l| l.is_tag("EXTINF"))
}

/// Resolve `reference` against `base` (RFC 3986), as players do.
pub fn resolve(base: &url::Url, reference: &str) -> String {
    match base.join(reference.trim()) {
        Ok(u) => u.to_string(),
        Err(_) => reference.to_string(),
    }
}

/// A relative reference that resolves by plain concatenation with the
/// base's directory (no scheme, no absolute path, no dot segments, no
/// escapes): `seg123.ts`, `v1/index.m3u8?x=1`.
pub fn is_plain_relative(r: &str) -> bool {
    !r.is_empty()
        && !r.starts_with('/')
        && !r.starts_with('.')
        && !r.contains(':')
        && !r.contains("/.")
        && !r.contains('\\')
        && !r.contains('#')
        && r.bytes().all(|b| b > b' ' && b != b'%' && b < 0x7f)
}

/// Resolves many references against one base: plain relative paths (the
/// common case: `seg123.ts`, `v1/seg.ts`) are appended to the base's
/// directory without reparsing; anything else goes through [`resolve`].
pub struct Resolver<'u> {
    base: &'u url::Url,
    dir: &'u str,
}

impl<'u> Resolver<'u> {
    pub fn new(base: &'u url::Url) -> Self {
        let s = base.as_str();
        let path_end = s.find(['?', '#']).unwrap_or(s.len());
        let dir = match s[..path_end].rfind('/') {
            Some(i) => &s[..=i],
            None => s,
        };
        Resolver { base, dir }
    }

    pub fn push(&self, out: &mut String, reference: &str) {
        let r = reference.trim();
        if is_plain_relative(r) {
            out.push_str(self.dir);
            out.push_str(r);
        } else {
            out.push_str(&resolve(self.base, r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ll_hls_delivery_directives() {
        let q = |s: &'static str| s.split('&').filter_map(|kv| kv.split_once('='));
        assert_eq!(
            delivery_directives(q("mode=ssai&_HLS_part=2&_HLS_msn=100&_HLS_skip=YES")).unwrap(),
            vec![
                ("_HLS_msn", "100".to_string()),
                ("_HLS_part", "2".to_string()),
            ],
            "a delta update is never asked of the origin"
        );
        assert!(delivery_directives(q("mode=ssai")).unwrap().is_empty());
        assert!(delivery_directives(q("_HLS_skip=v2")).unwrap().is_empty());
        for bad in [
            "_HLS_msn=x",
            "_HLS_part=1",
            "_HLS_msn=1&_HLS_part=-1",
            "_HLS_skip=NO",
        ] {
            assert!(delivery_directives(q(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips_byte_for_byte() {
        for text in [
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:2.002,\nseg1.ts\n",
            "#EXTM3U\r\n#EXTINF:2.0,title\r\nseg.ts\r\n\r\n# comment\n#EXT-X-ENDLIST",
            "\u{feff}#EXTM3U\n#EXT-X-DATERANGE:ID=\"a,b\",START-DATE=\"2020-01-01T00:00:00Z\"\n",
        ] {
            assert_eq!(render(&tokenize(text).unwrap()), text);
        }
    }

    #[test]
    fn attributes_with_quoted_commas() {
        let v = r#"ID="a,b",CLASS="x",DURATION=30.0,SCTE35-OUT=0xFC00"#;
        assert_eq!(attr(v, "ID"), Some("a,b"));
        assert_eq!(attr(v, "DURATION"), Some("30.0"));
        assert_eq!(attr(v, "SCTE35-OUT"), Some("0xFC00"));
        assert_eq!(attr(v, "NOPE"), None);
    }

    #[test]
    fn rejects_non_playlists() {
        assert_eq!(tokenize("<html>"), Err(HlsError::NotM3u));
    }

    #[test]
    fn fast_paths_agree_with_the_slow_ones() {
        for t in [
            "2025-01-01T00:00:01.920Z",
            "2026-11-23T11:57:29.631+00:00",
            "1999-12-31T23:59:59Z",
            "2024-02-29T12:00:00.5-05:30",
            "2030-07-04T01:02:03.123456Z",
        ] {
            let slow = chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis();
            assert_eq!(fast_pdt(t.as_bytes()), Some(slow), "{t}");
            let f = format_pdt_ms(slow);
            assert_eq!(parse_pdt_ms(&f), Some(slow), "{t}");
        }
        assert_eq!(fast_pdt(b"2025-13-01T00:00:00Z"), None);
        let base = url::Url::parse("https://o.example/live/ch/v1/index.m3u8?token=1").unwrap();
        let r = Resolver::new(&base);
        for rel in [
            "seg1.ts",
            "../x/seg.ts",
            "/abs.ts",
            "https://cdn/x.ts",
            "a b.ts",
            "sub/seg.ts?x=1",
        ] {
            let mut s = String::new();
            r.push(&mut s, rel);
            assert_eq!(s, resolve(&base, rel), "{rel}");
        }
    }

    #[test]
    fn pdt_round_trip() {
        let ms = parse_pdt_ms("2025-01-01T00:00:01.920Z").unwrap();
        assert_eq!(format_pdt_ms(ms), "2025-01-01T00:00:01.920Z");
        assert_eq!(parse_pdt_ms("2025-01-01T00:00:01.920+00:00"), Some(ms));
    }
}
