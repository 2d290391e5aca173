//! Serving stored media (`/media/{org}/...` from R2) without turning an
//! upload into active content: which types are served inline, byte ranges
//! (RFC 9110 §14), entity tags, and the org ids no one may take.
//!
//! Uploads come from org API keys; the dashboard lives on the same origin
//! and keeps its bearer key in `localStorage`. So a stored object is served
//! inline only when its type is media a player fetches (HLS, TS, fMP4,
//! audio, WebVTT) or an image, and JavaScript only from `_static/`, a
//! prefix no org can write. Everything else goes out as
//! `application/octet-stream` with `Content-Disposition: attachment`;
//! every response also says `X-Content-Type-Options: nosniff`.

/// Where the dashboard's own scripts live; never writable through the API.
pub const STATIC_PREFIX: &str = "_static/";

/// Org ids that would shadow a route or the static prefix.
pub const RESERVED_ORGS: &[&str] = &[
    "_static",
    "api",
    "media",
    "dashboard",
    "healthz",
    "cue",
    "cdn-cgi",
    "admin",
    "static",
    "assets",
    "favicon.ico",
    "robots.txt",
    "well-known",
    ".well-known",
];

/// May an org be created (or written to) under this id?
pub fn org_id_allowed(id: &str) -> bool {
    !id.starts_with('_') && !RESERVED_ORGS.iter().any(|r| r.eq_ignore_ascii_case(id))
}

/// How an object is served: its `Content-Type`, and whether inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition {
    pub content_type: &'static str,
    pub inline: bool,
}

/// The serving decision for a key: from the extension (players and
/// browsers check it), never from what the uploader claimed.
pub fn disposition(key: &str) -> Disposition {
    let ext = key
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    let inline = |content_type| Disposition {
        content_type,
        inline: true,
    };
    match ext.as_deref() {
        Some("m3u8") => inline("application/vnd.apple.mpegurl"),
        Some("ts") => inline("video/mp2t"),
        Some("m4s") | Some("mp4") | Some("cmfv") => inline("video/mp4"),
        Some("m4a") | Some("cmfa") => inline("audio/mp4"),
        Some("aac") => inline("audio/aac"),
        Some("vtt") | Some("webvtt") => inline("text/vtt"),
        Some("jpg") | Some("jpeg") => inline("image/jpeg"),
        Some("png") => inline("image/png"),
        Some("webp") => inline("image/webp"),
        Some("js") if key.starts_with(STATIC_PREFIX) => inline("text/javascript"),
        _ => Disposition {
            content_type: "application/octet-stream",
            inline: false,
        },
    }
}

/// A `Range` request's outcome for an object of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) range: the whole object, 200.
    Full,
    /// `offset`, `length`: 206 with `Content-Range`.
    Part { offset: u64, length: u64 },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parse a single `bytes=` range (first-last, first-, -suffix). Several
/// ranges, other units and malformed headers get the whole object, which
/// RFC 9110 §14.2 permits.
pub fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (num(a), num(b), a.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (None, Some(n), true) => {
            if n == 0 || size == 0 {
                ByteRange::Unsatisfiable
            } else {
                let length = n.min(size);
                ByteRange::Part {
                    offset: size.saturating_sub(length),
                    length,
                }
            }
        }
        (Some(first), last, false) if b.trim().is_empty() || last.is_some() => {
            if first >= size {
                return ByteRange::Unsatisfiable;
            }
            let end = last.map_or(size.saturating_sub(1), |l| l.min(size.saturating_sub(1)));
            if end < first {
                return ByteRange::Full;
            }
            ByteRange::Part {
                offset: first,
                length: end.saturating_sub(first).saturating_add(1),
            }
        }
        _ => ByteRange::Full,
    }
}

/// `If-None-Match` against an object's (quoted) entity tag, weak
/// comparison (RFC 9110 §13.1.2).
pub fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(h) = if_none_match else {
        return false;
    };
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    h.trim() == "*" || h.split(',').any(|t| bare(t) == bare(etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_media_is_inline() {
        assert!(disposition("demo/ad1/seg0.ts").inline);
        assert_eq!(
            disposition("demo/ad1/v.m3u8").content_type,
            "application/vnd.apple.mpegurl"
        );
        assert!(disposition("_static/hls.min.js").inline);
        for bad in [
            "demo/x.html",
            "demo/x.svg",
            "demo/x.js",
            "demo/x",
            "demo/x.HTML",
            "demo/x.xml",
        ] {
            let d = disposition(bad);
            assert!(
                !d.inline && d.content_type == "application/octet-stream",
                "{bad}"
            );
        }
    }

    #[test]
    fn reserved_orgs() {
        for r in [
            "_static",
            "api",
            "media",
            "dashboard",
            "_x",
            "API",
            "healthz",
            "cue",
        ] {
            assert!(!org_id_allowed(r), "{r}");
        }
        assert!(org_id_allowed("demo"));
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-3"), 10),
            Part {
                offset: 0,
                length: 4
            }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Part {
                offset: 5,
                length: 5
            }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Part {
                offset: 7,
                length: 3
            }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Part {
                offset: 8,
                length: 2
            }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
    }

    #[test]
    fn etags() {
        assert!(etag_matches(Some("\"abc\""), "\"abc\""));
        assert!(etag_matches(Some("W/\"abc\", \"d\""), "\"abc\""));
        assert!(etag_matches(Some("*"), "\"abc\""));
        assert!(!etag_matches(Some("\"abd\""), "\"abc\""));
        assert!(!etag_matches(None, "\"abc\""));
    }
}
