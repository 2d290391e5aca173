//! Helpers shared by the scenario tests: pods of two 10 s ads with two
//! renditions each and a slate, cut to a cadence.
#![allow(dead_code)]

use cf_ssai_core::model::*;

pub fn rendition(ad: &str, bw: u64, segs: usize, seg_dur: f64, fmp4: bool) -> AdRendition {
    AdRendition {
        bandwidth: bw,
        codecs: Some("avc1.42c01e,mp4a.40.2".into()),
        resolution: None,
        kind: TrackKind::Muxed,
        playlist_url: format!("https://ads.test/{ad}/{bw}/index.m3u8"),
        cadence_s: seg_dur,
        segments: (0..segs)
            .map(|i| AdSegment {
                uri: format!(
                    "https://ads.test/{ad}/{bw}/s{i}.{}",
                    if fmp4 { "m4s" } else { "ts" }
                ),
                duration: seg_dur,
                byterange: None,
            })
            .collect(),
        init_uri: fmp4.then(|| format!("https://ads.test/{ad}/{bw}/init.mp4")),
        key: None,
        memo: Default::default(),
    }
}

pub fn demuxed(mut r: AdRendition, kind: TrackKind) -> AdRendition {
    r.kind = kind;
    r.codecs = Some(
        match kind {
            TrackKind::Audio => "mp4a.40.2",
            _ => "avc1.42c01e",
        }
        .into(),
    );
    r
}

pub fn pod(break_id: &str, cadence_s: f64, fmp4: bool) -> Pod {
    let n = (10.0 / cadence_s).round() as usize;
    let item = |id: &str| PodItem {
        ad_id: id.into(),
        creative_id: format!("cr-{id}"),
        universal_ad_id: None,
        duration_s: n as f64 * cadence_s,
        renditions: vec![
            rendition(id, 700_000, n, cadence_s, fmp4),
            rendition(id, 2_000_000, n, cadence_s, fmp4),
            // What ingest makes for demuxed channels: the same encode
            // without audio, and its audio alone.
            demuxed(rendition(id, 600_000, n, cadence_s, fmp4), TrackKind::Video),
            demuxed(rendition(id, 128_000, n, cadence_s, fmp4), TrackKind::Audio),
        ],
        tracking: Tracking::default(),
    };
    Pod {
        pod_id: format!("pod-{break_id}"),
        break_id: break_id.into(),
        duration_s: 30.0,
        items: vec![item("adA"), item("adB")],
        slate: Slate {
            slate_id: "slate".into(),
            renditions: vec![
                rendition("slate", 500_000, 1, cadence_s, fmp4),
                demuxed(
                    rendition("slate", 400_000, 1, cadence_s, fmp4),
                    TrackKind::Video,
                ),
                demuxed(
                    rendition("slate", 96_000, 1, cadence_s, fmp4),
                    TrackKind::Audio,
                ),
            ],
        },
        fill_s: 10.0,
        source: PodSource::Library,
        reasons: vec![],
    }
}
