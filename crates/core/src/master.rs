//! Master (multivariant) playlist rewrite: variant and rendition URIs come
//! back through the manifest worker, every attribute kept, with the query
//! parameters the media request needs (variant bandwidth and kind, mode,
//! session). Variants outside the origin's directory stay absolute origin
//! URLs (never a path that would make us fetch an arbitrary URL).

use crate::hls::{self, HlsError, Line};
use crate::splice::{is_absolute, rewrite_uri_attr};

pub struct MasterInput<'a> {
    pub origin: &'a str,
    /// The origin master playlist URL.
    pub origin_url: &'a url::Url,
    /// Our path prefix for this channel, e.g. `/org/channel/`.
    pub self_prefix: &'a str,
    /// Extra query pairs to carry (mode, session id), already URL-safe.
    pub carry: &'a [(&'a str, String)],
}

pub fn rewrite_master(input: &MasterInput<'_>) -> Result<String, HlsError> {
    let p = hls::tokenize(input.origin)?;
    let mut out = String::with_capacity(input.origin.len() * 2);
    // Audio groups whose renditions have their own playlists: a variant
    // naming one is video only (RFC 8216 §4.3.4.2.1), and takes the ads'
    // video-only renditions.
    let audio_groups: Vec<&str> = p
        .lines
        .iter()
        .filter(|l| l.is_tag("EXT-X-MEDIA"))
        .filter_map(|l| l.value())
        .filter(|v| hls::attr(v, "TYPE") == Some("AUDIO") && hls::attr(v, "URI").is_some())
        .filter_map(|v| hls::attr(v, "GROUP-ID"))
        .collect();
    let mut pending_stream: Option<[Option<&str>; 3]> = None;
    for line in &p.lines {
        match line {
            Line::Tag {
                name: "EXT-X-STREAM-INF",
                value,
                raw,
            } => {
                let v = value.unwrap_or("");
                let video_only = hls::attr(v, "AUDIO").is_some_and(|g| audio_groups.contains(&g));
                pending_stream = Some([
                    hls::attr(v, "BANDWIDTH"),
                    hls::attr(v, "CODECS"),
                    video_only.then_some("video"),
                ]);
                out.push_str(raw);
            }
            Line::Tag {
                name: "EXT-X-MEDIA",
                value,
                raw,
            } => {
                let v = value.unwrap_or("");
                let kind = match hls::attr(v, "TYPE") {
                    Some("AUDIO") => "audio",
                    Some("SUBTITLES") => "subtitles",
                    _ => "muxed",
                };
                out.push_str(&rewrite_uri_attr(raw, |u| {
                    Some(map_uri(input, u, &[("k", kind.to_string())]))
                }));
            }
            Line::Tag {
                name: "EXT-X-I-FRAME-STREAM-INF" | "EXT-X-SESSION-KEY" | "EXT-X-SESSION-DATA",
                raw,
                ..
            } => {
                // No ads in I-frame playlists: straight to the origin.
                out.push_str(&rewrite_uri_attr(raw, |u| {
                    (!is_absolute(u)).then(|| hls::resolve(input.origin_url, u))
                }));
            }
            Line::Uri(raw) => {
                let u = raw.trim_end_matches('\r').trim();
                let mut q = Vec::new();
                if let Some(attrs) = pending_stream.take() {
                    for (k, v) in ["bw", "codecs", "k"].into_iter().zip(attrs) {
                        if let Some(v) = v {
                            q.push((k, v.to_string()));
                        }
                    }
                }
                out.push_str(&map_uri(input, u, &q));
            }
            other => out.push_str(other.raw()),
        }
        out.push('\n');
    }
    if !p.trailing_newline && out.ends_with('\n') {
        out.pop();
    }
    Ok(out)
}

/// Map an origin-relative playlist URI to our route, or to an absolute
/// origin URL when it lies outside the origin's directory.
fn map_uri(input: &MasterInput<'_>, u: &str, extra: &[(&str, String)]) -> String {
    // The common case (`v1/index.m3u8`) is inside the origin's directory by
    // construction: no URL parsing.
    let abs;
    let rel = if hls::is_plain_relative(u) {
        Some(u)
    } else {
        abs = match input.origin_url.join(u) {
            Ok(a) => a,
            Err(_) => return u.to_string(),
        };
        let dir = input.origin_url.join(".").ok();
        dir.and_then(|d| {
            let (ds, as_) = (d.as_str(), abs.as_str());
            (abs.scheme() == d.scheme() && as_.starts_with(ds)).then(|| &as_[ds.len()..])
        })
    };
    match rel {
        Some(rel)
            if rel
                .split('?')
                .next()
                .is_some_and(|p| p.ends_with(".m3u8") && !p.contains("..")) =>
        {
            let mut s = format!("{}{}", input.self_prefix, rel);
            let mut sep = if s.contains('?') { '&' } else { '?' };
            for (k, v) in extra
                .iter()
                .map(|(k, v)| (*k, v))
                .chain(input.carry.iter().map(|(k, v)| (*k, v)))
            {
                s.push(sep);
                s.push_str(k);
                s.push('=');
                s.push_str(&encode_query(v));
                sep = '&';
            }
            s
        }
        _ => hls::resolve(input.origin_url, u),
    }
}

fn encode_query(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// The variant URI a poller should read: the one whose URI contains
/// `prefer` (when given), else the lowest BANDWIDTH.
pub fn poll_variant<'a>(master: &'a str, prefer: &str) -> Option<&'a str> {
    let p = hls::tokenize(master).ok()?;
    let mut best: Option<(u64, &'a str)> = None;
    let mut bw: Option<u64> = None;
    for line in &p.lines {
        match line {
            Line::Tag {
                name: "EXT-X-STREAM-INF",
                value,
                ..
            } => {
                bw = hls::attr(value.unwrap_or(""), "BANDWIDTH").and_then(|b| b.parse().ok());
            }
            Line::Uri(raw) => {
                if let Some(b) = bw.take() {
                    let u = raw.trim_end_matches('\r').trim();
                    if !prefer.is_empty() && u.contains(prefer) {
                        return Some(u);
                    }
                    if best.is_none_or(|(x, _)| b < x) {
                        best = Some((b, u));
                    }
                }
            }
            _ => {}
        }
    }
    best.map(|(_, u)| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_come_back_through_us() {
        let origin = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/en.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401f,mp4a.40.2\",AUDIO=\"a\"\nlow/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=3000000\nhttps://cdn.other/x.m3u8\n";
        let url = url::Url::parse("https://origin.test/live/ch1/master.m3u8").unwrap();
        let carry = [("mode", "ssai".to_string())];
        let out = rewrite_master(&MasterInput {
            origin,
            origin_url: &url,
            self_prefix: "/o/c/",
            carry: &carry,
        })
        .unwrap();
        assert!(
            out.contains(
                "\n/o/c/low/index.m3u8?bw=800000&codecs=avc1.4d401f%2Cmp4a.40.2&k=video&mode=ssai\n"
            ),
            "a variant whose audio group has playlists is video only: {out}"
        );
        assert!(
            out.contains("URI=\"/o/c/audio/en.m3u8?k=audio&mode=ssai\""),
            "{out}"
        );
        assert!(out.contains("\nhttps://cdn.other/x.m3u8\n"));
        assert!(out.contains(
            "#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401f,mp4a.40.2\",AUDIO=\"a\"\n"
        ));
    }

    #[test]
    fn a_group_without_playlists_leaves_the_variant_muxed() {
        let origin = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",DEFAULT=YES\n#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"a\"\nlow/index.m3u8\n";
        let url = url::Url::parse("https://origin.test/live/ch1/master.m3u8").unwrap();
        let out = rewrite_master(&MasterInput {
            origin,
            origin_url: &url,
            self_prefix: "/o/c/",
            carry: &[],
        })
        .unwrap();
        assert!(out.contains("\n/o/c/low/index.m3u8?bw=800000\n"), "{out}");
    }
}
