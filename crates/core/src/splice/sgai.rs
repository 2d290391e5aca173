//! SGAI documents: the interstitial asset list (RFC 8216bis Appendix D,
//! `X-ASSET-LIST`) and the per-ad multivariant playlist its URIs name.

use crate::model::{BreakEntry, PodItem, TrackKind};
use serde_json::json;
use std::fmt::Write;

/// The asset list for a break. `start_offset_s` (`_HLS_start_offset`) drops
/// the ads a viewer joining mid-break has already missed; `ad_uri(i)` names
/// the playlist of item `i` (None = slate).
pub fn asset_list(
    entry: &BreakEntry,
    start_offset_s: Option<f64>,
    ad_uri: impl Fn(Option<usize>) -> String,
) -> serde_json::Value {
    let offset = start_offset_s.unwrap_or(0.0).max(0.0);
    let mut assets = Vec::new();
    let mut t = 0.0;
    let cadence = entry.record.cadence_ms as f64 / 1000.0;
    let total = entry.record.covered() as f64 * cadence;
    for (i, item) in entry.pod.items.iter().enumerate() {
        let end = t + item.duration_s;
        if end > total + 1e-6 {
            break;
        }
        if end > offset + 1e-6 {
            // Tracking rides along for players that report themselves
            // (client-side reporting); unknown keys are ignored by players.
            assets.push(json!({
                "URI": ad_uri(Some(i)),
                "DURATION": round3(item.duration_s),
                "X-AD-ID": item.ad_id,
                "X-CREATIVE-ID": item.creative_id,
                "X-TRACKING": item.tracking,
            }));
        }
        t = end;
    }
    let rest = total - t;
    if rest > 1e-3 && !entry.pod.slate.renditions.is_empty() && total > offset + 1e-6 {
        assets.push(
            json!({"URI": ad_uri(None), "DURATION": round3(rest.min(total - offset.max(t)))}),
        );
    }
    json!({ "ASSETS": assets })
}

/// The renditions an interstitial asset offers: one container only (an
/// asset player plays one stream), MPEG-TS when the ad has it.
pub fn asset_renditions(
    renditions: &[crate::model::AdRendition],
) -> Vec<&crate::model::AdRendition> {
    // Unsafe renditions (see `AdRendition::check`) are never offered.
    let safe = || renditions.iter().filter(|r| r.check().is_ok());
    let ts = safe().any(|r| r.init_uri.is_none());
    safe().filter(|r| r.init_uri.is_none() == ts).collect()
}

/// A multivariant playlist over an ad's (or the slate's) renditions; each
/// variant URI is `variant_uri(rendition)` (the ad server's playlist, or
/// ours when deliveries are counted server-side). For a `demuxed` primary
/// (its audio in an audio group) an ad with video-only and audio-only
/// renditions is offered in the same shape: video variants naming an
/// audio group, so the player keeps its audio track layout across the
/// interstitial; else the muxed renditions.
pub fn ad_master(
    renditions: &[crate::model::AdRendition],
    demuxed: bool,
    variant_uri: impl Fn(&crate::model::AdRendition) -> String,
) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let of = |k: TrackKind| renditions.iter().filter(move |r| r.kind == k);
    let audio = of(TrackKind::Audio).max_by_key(|r| r.bandwidth);
    let video: Vec<_> = of(TrackKind::Video).collect();
    let (variants, audio) = match audio {
        Some(a) if demuxed && !video.is_empty() => {
            let _ = writeln!(
                s,
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AD_AUDIO_GROUP}\",NAME=\"ad\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"{}\"",
                variant_uri(a)
            );
            (video, Some(a))
        }
        _ => (of(TrackKind::Muxed).collect(), None),
    };
    for r in variants {
        let bw = r.bandwidth.saturating_add(audio.map_or(0, |a| a.bandwidth));
        let _ = write!(s, "#EXT-X-STREAM-INF:BANDWIDTH={bw}");
        // RFC 8216 §4.3.4.2: CODECS names every codec of the variant,
        // its audio rendition's too.
        let codecs = [r.codecs.as_deref(), audio.and_then(|a| a.codecs.as_deref())]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(",");
        if !codecs.is_empty() {
            let _ = write!(s, ",CODECS=\"{codecs}\"");
        }
        if let Some(res) = &r.resolution {
            let _ = write!(s, ",RESOLUTION={res}");
        }
        if audio.is_some() {
            let _ = write!(s, ",AUDIO=\"{AD_AUDIO_GROUP}\"");
        }
        let _ = writeln!(s, "\n{}", variant_uri(r));
    }
    s
}

const AD_AUDIO_GROUP: &str = "ad-audio";

/// An ad rendition as a VOD media playlist whose segment `pos` is at
/// `segment_uri(pos, original)`: the proxy route that fires the beacons a
/// delivery crosses (SGAI server-side reporting).
pub fn ad_media(
    r: &crate::model::AdRendition,
    segment_uri: impl Fn(usize, &str) -> String,
) -> String {
    let target = r
        .segments
        .iter()
        .map(|s| s.duration.round() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        if r.init_uri.is_some() { 7 } else { 3 }
    );
    if let Some(init) = &r.init_uri {
        let _ = writeln!(s, "#EXT-X-MAP:URI=\"{init}\"");
    }
    if let Some(k) = &r.key {
        let _ = writeln!(s, "#EXT-X-KEY:{k}");
    }
    for (i, seg) in r.segments.iter().enumerate() {
        let _ = writeln!(
            s,
            "#EXTINF:{:.3},\n{}",
            seg.duration,
            segment_uri(i, &seg.uri)
        );
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

/// The item for an asset index, if any.
pub fn item(entry: &BreakEntry, i: usize) -> Option<&PodItem> {
    entry.pod.items.get(i)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AdRendition, AdSegment};

    #[test]
    fn ad_media_names_every_segment_through_the_given_route() {
        let r = AdRendition {
            bandwidth: 900_000,
            codecs: None,
            resolution: None,
            kind: TrackKind::Muxed,
            playlist_url: "https://a/p.m3u8".into(),
            cadence_s: 1.92,
            segments: (0..3)
                .map(|i| AdSegment {
                    uri: format!("https://a/s{i}.ts"),
                    duration: 1.92,
                    byterange: None,
                })
                .collect(),
            init_uri: None,
            key: None,
            memo: Default::default(),
        };
        let m = ad_media(&r, |i, _| format!("/o/c/ad/b/0/900000/{i}.ts?sid=x"));
        let v = crate::hls::media::parse(&m).unwrap();
        assert!(v.endlist && v.segments.len() == 3 && v.target_duration == 2);
        assert!(m.contains("\n/o/c/ad/b/0/900000/2.ts?sid=x\n"));
        let master = ad_master(std::slice::from_ref(&r), false, |r| {
            format!("/o/c/ads/b/0/{}.m3u8?sid=x", r.bandwidth)
        });
        assert!(master.contains("BANDWIDTH=900000\n/o/c/ads/b/0/900000.m3u8?sid=x\n"));
    }

    fn r(kind: TrackKind, bw: u64, codecs: &str) -> AdRendition {
        AdRendition {
            bandwidth: bw,
            codecs: Some(codecs.into()),
            resolution: (kind != TrackKind::Audio).then(|| "640x360".into()),
            kind,
            playlist_url: format!("https://a/{bw}.m3u8"),
            cadence_s: 1.92,
            segments: vec![AdSegment {
                uri: "https://a/s.ts".into(),
                duration: 1.92,
                byterange: None,
            }],
            init_uri: None,
            key: None,
            memo: Default::default(),
        }
    }

    #[test]
    fn demuxed_primary_gets_the_ads_demuxed_shape() {
        let all = [
            r(TrackKind::Muxed, 900_000, "avc1.4d401f,mp4a.40.2"),
            r(TrackKind::Video, 772_000, "avc1.4d401f"),
            r(TrackKind::Audio, 128_000, "mp4a.40.2"),
        ];
        let m = ad_master(&all, true, |r| r.playlist_url.clone());
        assert!(m.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"ad-audio\",NAME=\"ad\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"https://a/128000.m3u8\"\n"), "{m}");
        assert!(m.contains("#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS=\"avc1.4d401f,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"ad-audio\"\nhttps://a/772000.m3u8\n"), "{m}");
        assert!(
            !m.contains("https://a/900000.m3u8"),
            "muxed not mixed in: {m}"
        );
        // A muxed primary, or an ad without demuxed renditions: muxed.
        for m in [
            ad_master(&all, false, |r| r.playlist_url.clone()),
            ad_master(&all[..1], true, |r| r.playlist_url.clone()),
        ] {
            assert!(
                !m.contains("EXT-X-MEDIA") && m.contains("https://a/900000.m3u8"),
                "{m}"
            );
        }
    }
}
