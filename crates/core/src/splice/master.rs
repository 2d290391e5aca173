//! Master (multivariant) playlist rewrite: variant and rendition URIs come
//! back through the manifest worker, every attribute kept, with the query
//! parameters the media request needs (variant bandwidth and kind, mode,
//! session). Variants outside the origin's directory stay absolute origin
//! URLs (never a path that would make us fetch an arbitrary URL).

use crate::hls::{self, HlsError, Line};
use crate::model::TrackKind;
use crate::splice::{is_absolute, Variant};

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
    // Written straight into one buffer: no line, URI or query value is
    // built as a string of its own (this runs on every viewer's join).
    let mut out = String::with_capacity(input.origin.len().saturating_mul(2));
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
    let mut pending_stream: Option<[(&str, Option<&str>); 3]> = None;
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
                    ("bw", hls::attr(v, "BANDWIDTH")),
                    ("codecs", hls::attr(v, "CODECS")),
                    ("k", video_only.then_some("video")),
                ]);
                out.push_str(raw);
            }
            Line::Tag {
                name: "EXT-X-MEDIA",
                value,
                raw,
            } => {
                let kind = match value.and_then(|v| hls::attr(v, "TYPE")) {
                    Some("AUDIO") => "audio",
                    Some("SUBTITLES") => "subtitles",
                    _ => "muxed",
                };
                write_uri_attr(&mut out, raw, |out, u| {
                    write_mapped(out, input, u, &[("k", Some(kind))]);
                });
            }
            Line::Tag {
                name: "EXT-X-I-FRAME-STREAM-INF" | "EXT-X-SESSION-KEY" | "EXT-X-SESSION-DATA",
                raw,
                ..
            } => {
                // No ads in I-frame playlists: straight to the origin.
                write_uri_attr(&mut out, raw, |out, u| {
                    if is_absolute(u) {
                        out.push_str(u);
                    } else {
                        out.push_str(&hls::resolve(input.origin_url, u));
                    }
                });
            }
            Line::Uri(raw) => {
                let u = raw.trim_end_matches('\r').trim();
                let extra = pending_stream.take().unwrap_or_default();
                write_mapped(&mut out, input, u, &extra);
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

/// `raw` with the value of its `URI="..."` attribute written by `f` (the
/// attribute `URI`, never e.g. `KEYFORMATURI`); unchanged without one.
fn write_uri_attr(out: &mut String, raw: &str, f: impl FnOnce(&mut String, &str)) {
    const ATTR: &str = "URI=\"";
    let found = raw.match_indices(ATTR).find(|(i, _)| {
        raw.get(..*i)
            .and_then(|h| h.bytes().last())
            .is_none_or(|b| matches!(b, b':' | b','))
    });
    let parts = found.and_then(|(i, _)| {
        let (head, rest) = raw.split_at_checked(i.checked_add(ATTR.len())?)?;
        let (value, tail) = rest.split_once('"')?;
        Some((head, value, tail))
    });
    match parts {
        Some((head, value, tail)) => {
            out.push_str(head);
            f(out, value);
            out.push('"');
            out.push_str(tail);
        }
        None => out.push_str(raw),
    }
}

/// An origin playlist URI mapped to our route (with `extra` and the
/// carried query pairs), or to an absolute origin URL when it lies outside
/// the origin's directory or is not a playlist.
fn write_mapped(
    out: &mut String,
    input: &MasterInput<'_>,
    u: &str,
    extra: &[(&str, Option<&str>)],
) {
    // The common case (`v1/index.m3u8`) is inside the origin's directory by
    // construction: no URL parsing.
    let abs;
    let rel = if hls::is_plain_relative(u) {
        Some(u)
    } else {
        abs = match input.origin_url.join(u) {
            Ok(a) => a,
            Err(_) => {
                out.push_str(u);
                return;
            }
        };
        let dir = input.origin_url.join(".").ok();
        dir.and_then(|d| {
            (abs.scheme() == d.scheme())
                .then(|| abs.as_str().strip_prefix(d.as_str()))
                .flatten()
        })
    };
    let playlist = |rel: &str| {
        rel.split('?')
            .next()
            .is_some_and(|p| p.ends_with(".m3u8") && !p.contains(".."))
    };
    match rel {
        Some(rel) if playlist(rel) => {
            out.push_str(input.self_prefix);
            out.push_str(rel);
            let mut sep = if rel.contains('?') { '&' } else { '?' };
            let extra = extra.iter().filter_map(|(k, v)| Some((*k, (*v)?)));
            let carried = input.carry.iter().map(|(k, v)| (*k, v.as_str()));
            for (k, v) in extra.chain(carried) {
                out.push(sep);
                out.push_str(k);
                out.push('=');
                out.extend(url::form_urlencoded::byte_serialize(v.as_bytes()));
                sep = '&';
            }
        }
        _ => out.push_str(&hls::resolve(input.origin_url, u)),
    }
}

fn encode_query(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// The longest `codecs` value read (a CODECS attribute lists a handful of
/// RFC 6381 entries).
const MAX_CODECS_LEN: usize = 512;

/// The variant a media playlist request names: the `bw`, `codecs` and `k`
/// query values [`rewrite_master`] writes, normalised to exactly what the
/// splice reads of them, or an error naming the value no master rewrite
/// would write (the worker answers 400).
///
/// Why: the location's shared-playlist cache is keyed by the variant. Were
/// the raw values the key, every made-up spelling (`bw=0900000`, `k=x`, a
/// codec string in another case) would be a miss, and one client could
/// send all of a channel's requests to the origin, KV and the Channel DO.
/// So the key and the splice both use this one normal form, and a playlist
/// is a function of its key:
/// - `bw`: decimal digits only (BANDWIDTH is a decimal-integer), as a u64;
///   `0900000` is `900000`.
/// - `codecs`: the splice compares codec *families* only (the part before
///   the first `.`, case-insensitive, `hev1` = `hvc1`), so the value is
///   its sorted, distinct, lower-case families (`mp4a.40.2,AVC1.4d401f` →
///   `avc1,mp4a`); entries must look like RFC 6381 ones. Empty = absent.
/// - `k`: `video`, `audio`, `subtitles` or `muxed` (= absent).
///
/// Each may appear once; other parameters are not part of the variant.
pub fn variant_query<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Variant, VariantError> {
    let (mut bw, mut codecs, mut kind) = (None, None, None);
    for (k, v) in pairs {
        let slot = match k {
            "bw" => &mut bw,
            "codecs" => &mut codecs,
            "k" => &mut kind,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(VariantError::Repeated(k.to_string()));
        }
    }
    let bandwidth = match bw {
        None => None,
        Some(b) if !b.is_empty() && b.len() <= 20 && b.bytes().all(|c| c.is_ascii_digit()) => Some(
            b.parse::<u64>()
                .map_err(|_| VariantError::BandwidthTooLarge(b.to_string()))?,
        ),
        Some(b) => return Err(VariantError::Bandwidth(clip(b))),
    };
    let codecs = match codecs {
        None | Some("") => None,
        Some(c) => Some(codec_families(c)?),
    };
    let kind = match kind {
        None | Some("muxed") => TrackKind::Muxed,
        Some("video") => TrackKind::Video,
        Some("audio") => TrackKind::Audio,
        Some("subtitles") => TrackKind::Subtitles,
        Some(other) => return Err(VariantError::Kind(clip(other))),
    };
    Ok(Variant {
        bandwidth,
        codecs,
        kind,
    })
}

/// The sorted, distinct, lower-case codec families of a CODECS value
/// (`hev1` written `hvc1`: the splice treats them as one).
fn codec_families(c: &str) -> Result<String, VariantError> {
    if c.len() > MAX_CODECS_LEN {
        return Err(VariantError::CodecsTooLong);
    }
    let mut fams: Vec<String> = Vec::new();
    for entry in c.split(',').map(str::trim) {
        let ok = entry
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && entry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !ok {
            return Err(VariantError::Codecs(clip(c)));
        }
        let fam = entry
            .split('.')
            .next()
            .unwrap_or(entry)
            .to_ascii_lowercase();
        fams.push(if fam == "hev1" { "hvc1".into() } else { fam });
    }
    fams.sort();
    fams.dedup();
    Ok(fams.join(","))
}

/// A variant query a master rewrite never writes (answered 400 with this
/// message); quoted values are cut to 40 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariantError {
    #[error("{0}: given more than once")]
    Repeated(String),
    #[error("bw: {0} is too large")]
    BandwidthTooLarge(String),
    #[error("bw: {0:?} is not a variant BANDWIDTH (decimal bits per second)")]
    Bandwidth(String),
    #[error("codecs: over {MAX_CODECS_LEN} bytes")]
    CodecsTooLong,
    #[error("codecs: {0:?} is not an RFC 6381 codec list")]
    Codecs(String),
    #[error("k: {0:?} is not one of video, audio, subtitles, muxed")]
    Kind(String),
}

/// A value quoted in an error message, cut short.
fn clip(v: &str) -> String {
    v.chars().take(40).collect()
}

/// The variant part of a shared-playlist cache key: from the normalised
/// variant only, so every spelling of one variant shares one entry.
pub fn variant_key(v: &Variant) -> String {
    let k = match v.kind {
        TrackKind::Muxed => "muxed",
        TrackKind::Video => "video",
        TrackKind::Audio => "audio",
        TrackKind::Subtitles => "subtitles",
    };
    format!(
        "bw={}&codecs={}&k={k}",
        v.bandwidth.map_or(String::new(), |b| b.to_string()),
        encode_query(v.codecs.as_deref().unwrap_or(""))
    )
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

    /// Every query the rewrite writes parses; each spelling of one variant
    /// gives one key; anything the rewrite would never write is refused.
    #[test]
    fn variant_queries_are_normalised_or_refused() {
        let q = |s: &'static str| {
            variant_query(
                s.split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.split_once('=').unwrap_or((p, ""))),
            )
        };
        let key = |s: &'static str| variant_key(&q(s).unwrap());
        let canon = key("bw=800000&codecs=avc1.4d401f,mp4a.40.2&k=video");
        assert_eq!(canon, "bw=800000&codecs=avc1%2Cmp4a&k=video");
        for same in [
            "bw=0800000&codecs=avc1.4d401f,mp4a.40.2&k=video",
            "k=video&codecs=mp4a.40.5,AVC1.640028&bw=800000",
            "bw=800000&codecs= avc1.4d401f , mp4a.40.2,mp4a.40.5&k=video&x=1&sid=s1-x",
        ] {
            assert_eq!(key(same), canon, "{same}");
        }
        assert_eq!(key(""), key("k=muxed"));
        assert_eq!(key("codecs="), key(""));
        assert_eq!(key("codecs=hev1.1.6.L93.B0"), key("codecs=hvc1.2.4.L120"));
        assert_ne!(key("bw=800000"), key("bw=900000"));
        assert_ne!(key("k=audio"), key("k=subtitles"));
        // The splice sees the same normal form, with the same meaning.
        let v = q("bw=0900000&codecs=mp4a.40.2,avc1.42c01e&k=audio").unwrap();
        assert_eq!(v.bandwidth, Some(900_000));
        assert_eq!(v.codecs.as_deref(), Some("avc1,mp4a"));
        assert_eq!(v.kind, TrackKind::Audio);
        for (bad, field) in [
            ("bw=abc", "bw:"),
            ("bw=-1", "bw:"),
            ("bw=+900000", "bw:"),
            ("bw=1e6", "bw:"),
            ("bw=", "bw:"),
            ("bw=99999999999999999999", "bw:"),
            ("bw=1&bw=2", "bw:"),
            ("k=bogus", "k:"),
            ("k=VIDEO", "k:"),
            ("k=video&k=audio", "k:"),
            ("codecs=<script>", "codecs:"),
            ("codecs=avc1,,mp4a", "codecs:"),
            ("codecs=.avc1", "codecs:"),
            ("codecs=a&codecs=b", "codecs:"),
        ] {
            let e = q(bad).unwrap_err().to_string();
            assert!(e.starts_with(field), "{bad}: {e}");
        }
        let long = "avc1.4d401f,".repeat(50);
        assert!(variant_query([("codecs", long.as_str())])
            .unwrap_err()
            .to_string()
            .starts_with("codecs:"));
        // What the rewrite writes for a real master parses as itself.
        let origin = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"en.m3u8\"\n#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"s\",NAME=\"en\",URI=\"subs.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401f,mp4a.40.2\",AUDIO=\"a\"\nlow.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=3000000\nhigh.m3u8\n";
        let url = url::Url::parse("https://origin.test/live/master.m3u8").unwrap();
        let out = rewrite_master(&MasterInput {
            origin,
            origin_url: &url,
            self_prefix: "/o/c/",
            carry: &[("mode", "ssai".into())],
        })
        .unwrap();
        let mut n = 0;
        for u in out.split(['\n', '"']).filter(|l| l.starts_with("/o/c/")) {
            let full = url::Url::parse(&format!("https://x{u}")).unwrap();
            let pairs: Vec<(String, String)> = full.query_pairs().into_owned().collect();
            let v = variant_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            assert!(v.is_ok(), "{u}: {v:?}");
            n += 1;
        }
        assert_eq!(n, 4, "{out}");
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
