//! A lossless, borrowing HLS tokenizer (RFC 8216bis §4) and the typed views
//! the splice acts on.
//!
//! `render(&tokenize(x)) == x` for every input: lines keep their exact bytes
//! (including `\r`), and whether the text ended with a newline. Tags we do
//! not act on are never re-serialized. Attribute lists are parsed on demand
//! with [`attr`], without allocation.

pub mod media;

use std::num::Saturating as S;
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

/// A malformed LL-HLS delivery directive (the request is answered 400
/// with this message).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DirectiveError {
    #[error("_HLS_msn: {0:?} is not an MSN")]
    Msn(String),
    #[error("_HLS_part: {0:?} is not a part index")]
    Part(String),
    #[error("_HLS_skip: {0:?} is not YES or v2")]
    Skip(String),
    #[error("_HLS_part: only with _HLS_msn")]
    PartWithoutMsn,
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
    let (content, trailing_newline) = match text.strip_suffix('\n') {
        Some(content) => (content, true),
        None => (text, false),
    };
    // Sized once (a byte count the compiler vectorises), not grown four
    // or five times on the way.
    let mut lines = Vec::with_capacity(
        content
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            .saturating_add(1),
    );
    lines.extend(
        LineSplit {
            rest: Some(content),
        }
        .map(classify),
    );
    Ok(Playlist {
        lines,
        trailing_newline,
    })
}

/// Render tokens back to text, byte for byte.
pub fn render(p: &Playlist<'_>) -> String {
    let mut out = String::with_capacity(
        p.lines
            .iter()
            .map(|l| l.raw().len().saturating_add(1))
            .sum(),
    );
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
        match r
            .bytes()
            .position(|b| b == b'\n')
            .and_then(|i| r.split_at_checked(i))
        {
            Some((line, rest)) => {
                self.rest = rest.strip_prefix('\n');
                Some(line)
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
    if b.first()
        .is_none_or(|c| c.is_ascii_whitespace() && t.trim().is_empty())
    {
        Line::Blank(raw)
    } else if let Some(body) = t.strip_prefix("#EXT").and(t.strip_prefix('#')) {
        // A byte scan (as the original): on every line, the char searcher
        // behind split_once costs more.
        match body
            .bytes()
            .position(|c| c == b':')
            .and_then(|i| body.split_at_checked(i))
        {
            Some((name, colon_value)) => Line::Tag {
                raw,
                name,
                value: colon_value.get(1..),
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
) -> Result<Vec<(&'static str, String)>, DirectiveError> {
    let (mut msn, mut part) = (None, None);
    for (k, v) in query {
        match k {
            "_HLS_msn" => {
                msn = Some(
                    v.parse::<u64>()
                        .map_err(|_| DirectiveError::Msn(v.to_string()))?,
                )
            }
            "_HLS_part" => {
                part = Some(
                    v.parse::<u32>()
                        .map_err(|_| DirectiveError::Part(v.to_string()))?,
                )
            }
            "_HLS_skip" if v == "YES" || v == "v2" => {}
            "_HLS_skip" => return Err(DirectiveError::Skip(v.to_string())),
            _ => {}
        }
    }
    if part.is_some() && msn.is_none() {
        return Err(DirectiveError::PartWithoutMsn);
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
    // Byte scans throughout: attribute lists are short and ASCII by the
    // spec (RFC 8216bis §4.2), and this runs for every tag the splice and
    // the master rewrite read (the char-pattern searchers cost ~3x).
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let start = self.s.bytes().position(|c| c != b',' && c != b' ')?;
            let s = self.s.get(start..)?;
            let Some((key, rest)) = split_byte(s, b'=') else {
                self.s = "";
                return None;
            };
            let (val, after) = match rest.strip_prefix('"') {
                Some(q) => split_byte(q, b'"').unwrap_or((q, "")),
                None => split_byte(rest, b',').unwrap_or((rest, "")),
            };
            self.s = after;
            let key = key.trim_ascii();
            if !key.is_empty() {
                return Some((key, val.trim_ascii()));
            }
        }
    }
}

/// `s` split around the first `b` (an ASCII byte, so both sides are on
/// char boundaries), by a plain scan.
fn split_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|c| c == b)?;
    Some((s.get(..i)?, s.get(i.checked_add(1)?..)?))
}

/// Parse `#EXTINF:<duration>,[<title>]` duration text and seconds.
pub fn extinf_duration(value: &str) -> Option<(&str, f64)> {
    let end = value.bytes().position(|b| b == b',').unwrap_or(value.len());
    let text = value.get(..end)?.trim();
    let secs: f64 = match plain_decimal(text) {
        Some(s) => s,
        None => text.parse().ok()?,
    };
    if secs.is_finite() && secs >= 0.0 {
        Some((text, secs))
    } else {
        None
    }
}

/// `digits[.digits]` with at most 15 digits in all, as every EXTINF has:
/// the integer of its digits divided by a power of ten. Both are exact in
/// an `f64` (under 2^53, and 10^k for k ≤ 15), and IEEE division rounds
/// correctly, so this is the value `str::parse` gives (Clinger's fast
/// path), without its general machinery on every segment line.
fn plain_decimal(t: &str) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = int.len().checked_add(frac.len())?;
    if int.is_empty() || digits > 15 {
        return None;
    }
    let mut n: u64 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n
            .checked_mul(10)?
            .checked_add(u64::from(b.wrapping_sub(b'0')))?;
    }
    // n < 10^15 < 2^53: exact as an f64.
    let n = n as f64;
    Some(n / POW10.get(frac.len())?)
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
    let [_, _, _, _, b'-', _, _, b'-', _, _, b'T', _, _, b':', _, _, b':', _, _, tail @ ..] = b
    else {
        return None;
    };
    if tail.is_empty() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| decimal(b.get(r)?);
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Fractional seconds: the first three digits are the milliseconds.
    let (ms, tail) = match tail {
        [b'.', frac @ ..] => {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            let kept = n.min(3);
            let scale = match kept {
                1 => 100,
                2 => 10,
                _ => 1,
            };
            let ms = decimal(frac.get(..kept)?)?.checked_mul(scale)?;
            (ms, frac.get(n..)?)
        }
        tail => (0, tail),
    };
    let offset_min = match tail {
        [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let m = decimal(&[*h1, *h2])?
                .checked_mul(60)?
                .checked_add(decimal(&[*m1, *m2])?)?;
            if *sign == b'-' {
                m.saturating_neg()
            } else {
                m
            }
        }
        _ => return None,
    };
    // Four-digit years: every step below is far from overflow; Saturating
    // only spells that none can panic.
    let days = S(days_from_civil(y, mo, d));
    let secs = days * S(86_400) + S(h) * S(3600) + S(mi) * S(60) + S(sec) - S(offset_min) * S(60);
    Some((secs * S(1000) + S(ms)).0)
}

/// The value of a run of ASCII digits (at most 18, so it fits); `None` for
/// anything else.
fn decimal(digits: &[u8]) -> Option<i64> {
    if digits.len() > 18 {
        return None;
    }
    digits.iter().try_fold(0i64, |v, &c| {
        let d = (c as char).to_digit(10)?;
        Some((S(v) * S(10) + S(i64::from(d))).0)
    })
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm). Years here are
/// 0..=9999: no step nears overflow (Saturating only says none panics), and
/// every quotient is of a non-negative value, where `div_euclid` is `/`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { S(y) - S(1) } else { S(y) };
    let era = S(y.0.div_euclid(400));
    let yoe = y - era * S(400);
    let mp = S((S(m) + S(9)).0.rem_euclid(12));
    let doy = S((S(153) * mp + S(2)).0.div_euclid(5)) + S(d) - S(1);
    let doe = yoe * S(365) + S(yoe.0.div_euclid(4)) - S(yoe.0.div_euclid(100)) + doy;
    (era * S(146_097) + doe - S(719_468)).0
}

/// Hinnant's inverse: `z` is epoch ms / 86,400,000, so |z| < 2^37 and no
/// step nears overflow; `doe`, `yoe`, `doy` and `mp` are non-negative, where
/// `div_euclid` is `/`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = S(z) + S(719_468);
    let era = S(z.0.div_euclid(146_097));
    let doe = z - era * S(146_097);
    let q = |v: S<i64>, by: i64| S(v.0.div_euclid(by));
    let yoe = q(doe - q(doe, 1460) + q(doe, 36_524) - q(doe, 146_096), 365);
    let y = yoe + era * S(400);
    let doy = doe - (S(365) * yoe + q(yoe, 4) - q(yoe, 100));
    let mp = q(S(5) * doy + S(2), 153);
    let d = u32::try_from((doy - q(S(153) * mp + S(2), 5) + S(1)).0).unwrap_or(1);
    let m = u32::try_from(if mp.0 < 10 { mp + S(3) } else { mp - S(9) }.0).unwrap_or(1);
    (if m <= 2 { (y + S(1)).0 } else { y.0 }, m, d)
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
    out.reserve(24);
    let mut put = |digits: &[u8], sep: char| {
        out.extend(digits.iter().map(|&c| char::from(c)));
        out.push(sep);
    };
    put(&zero_padded::<4>(y.clamp(0, 9999)), '-');
    put(&zero_padded::<2>(i64::from(m)), '-');
    put(&zero_padded::<2>(i64::from(d)), 'T');
    put(&zero_padded::<2>(h), ':');
    put(&zero_padded::<2>(mi), ':');
    put(&zero_padded::<2>(sec), '.');
    put(&zero_padded::<3>(milli), 'Z');
}

/// The last `N` decimal digits of `v` (≥ 0) in ASCII, zero-padded.
fn zero_padded<const N: usize>(v: i64) -> [u8; N] {
    let mut out = [b'0'; N];
    let mut v = v.max(0);
    for c in out.iter_mut().rev() {
        // A digit 0..=9 in the low nibble of b'0' (0x30) is its ASCII.
        *c = b'0' | (v % 10) as u8;
        v /= 10;
    }
    out
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
    // One pass over the bytes (this runs for every segment and variant URI).
    let mut prev = b'/';
    !r.is_empty()
        && !r.starts_with('/')
        && r.bytes().all(|b| {
            // A '.' at the start or after a '/' would be a dot segment.
            let ok = b > b' '
                && b < 0x7f
                && !matches!(b, b':' | b'\\' | b'#' | b'%')
                && !(prev == b'/' && b == b'.');
            prev = b;
            ok
        })
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

    use proptest::prelude::*;

    #[test]
    fn plain_decimals_read_exactly_as_str_parse_does() {
        let mut cases: Vec<String> = [
            "6.006",
            "1.92",
            "0",
            "10",
            "2.002",
            "5.005",
            "3.003003",
            "0.1",
            "9.999999999",
            "123456789012345",
            "1.23456789012345",
            "7.",
            "00.50",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // A sweep of the durations packagers write (ms and µs precision).
        let mut x: u64 = 1;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            cases.push(format!("{}.{:03}", (x >> 40) % 20, (x >> 20) % 1000));
            cases.push(format!("{}.{:06}", (x >> 44) % 12, (x >> 8) % 1_000_000));
        }
        for c in &cases {
            assert_eq!(plain_decimal(c), Some(c.parse::<f64>().unwrap()), "{c}");
        }
        for other in [
            "",
            ".5",
            "1e3",
            "+1",
            "-1",
            "1.2.3",
            "1234567890123456",
            "١",
        ] {
            assert_eq!(plain_decimal(other), None, "{other}");
        }
        assert_eq!(extinf_duration(".5,x").map(|d| d.1), Some(0.5));
    }

    proptest! {
        /// The one-pass scans agree with their plain definitions (the
        /// char-pattern searchers they replaced for speed).
        #[test]
        fn fast_scans_agree_with_their_definitions(
            r in "[a-z0-9./:#%\\\\ ?=&_-]{0,24}",
            list in "[A-Z0-9=,\" .:-]{0,40}",
        ) {
            let plain = !r.is_empty()
                && !r.starts_with('/')
                && !r.starts_with('.')
                && !r.contains(':')
                && !r.contains("/.")
                && !r.contains('\\')
                && !r.contains('#')
                && r.bytes().all(|b| b > b' ' && b != b'%' && b < 0x7f);
            prop_assert_eq!(is_plain_relative(&r), plain, "{:?}", r);
            let mut rest = list.as_str();
            let mut slow = Vec::new();
            loop {
                let s = rest.trim_start_matches([',', ' ']);
                if s.is_empty() { break; }
                let Some((key, after_eq)) = s.split_once('=') else { break };
                let (val, after) = match after_eq.strip_prefix('"') {
                    Some(q) => q.split_once('"').unwrap_or((q, "")),
                    None => after_eq.split_once(',').unwrap_or((after_eq, "")),
                };
                rest = after;
                if !key.trim().is_empty() {
                    slow.push((key.trim(), val.trim()));
                }
            }
            let fast: Vec<_> = AttrIter { s: &list }.collect();
            prop_assert_eq!(fast, slow, "{:?}", list);
        }
    }

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
