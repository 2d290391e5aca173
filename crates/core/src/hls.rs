//! A lossless, borrowing HLS tokenizer (RFC 8216bis §4) and the typed views
//! the splice acts on.
//!
//! `render(&tokenize(x)) == x` for every input: lines keep their exact bytes
//! (including `\r`), and whether the text ended with a newline. Tags we do
//! not act on are never re-serialized. Attribute lists are parsed on demand
//! with [`attr`], without allocation.

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
    let lines = content.split('\n').map(classify).collect();
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

fn classify(raw: &str) -> Line<'_> {
    let t = raw.trim_end_matches('\r');
    let t = t.strip_prefix('\u{feff}').unwrap_or(t);
    if t.trim().is_empty() {
        Line::Blank(raw)
    } else if let Some(rest) = t.strip_prefix("#EXT") {
        let _ = rest;
        let body = &t[1..];
        match body.find(':') {
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
/// epoch milliseconds.
pub fn parse_pdt_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|d| d.timestamp_millis())
}

/// Format epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_pdt_ms(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn pdt_round_trip() {
        let ms = parse_pdt_ms("2025-01-01T00:00:01.920Z").unwrap();
        assert_eq!(format_pdt_ms(ms), "2025-01-01T00:00:01.920Z");
        assert_eq!(parse_pdt_ms("2025-01-01T00:00:01.920+00:00"), Some(ms));
    }
}
