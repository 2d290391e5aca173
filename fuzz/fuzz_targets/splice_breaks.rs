#![no_main]
// The playback path with breaks in view: any origin playlist text, spliced
// in both modes against 1–3 break entries whose anchors, lengths, cadences,
// cuts, discontinuity counts and pods (TS and fMP4 renditions of any
// segment duration, slate) come from the input's first 16 bytes. Never a
// panic, an overflow (run with debug assertions) or an unbounded output.
use cf_ssai_core::model::{
    AdRendition, AdSegment, BreakEntry, BreakRecord, BreakSource, Pod, PodItem, PodSource, Slate,
    TrackKind, Tracking,
};
use cf_ssai_core::splice::{self, Mode, SpliceInput, SpliceSettings, Variant};
use libfuzzer_sys::fuzz_target;

fn rendition(fmp4: bool, seg_s: f64, n: usize, bw: u64) -> AdRendition {
    AdRendition {
        bandwidth: bw,
        codecs: Some("avc1.64001f,mp4a.40.2".into()),
        resolution: Some("640x360".into()),
        kind: TrackKind::Muxed,
        playlist_url: "https://ads.example/p.m3u8".into(),
        cadence_s: seg_s,
        segments: (0..n)
            .map(|i| AdSegment {
                uri: format!("https://ads.example/{i}.{}", if fmp4 { "m4s" } else { "ts" }),
                duration: seg_s,
                byterange: None,
            })
            .collect(),
        init_uri: fmp4.then(|| "https://ads.example/init.mp4".into()),
        key: None,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (h, text) = data.split_at(16);
    let Ok(t) = std::str::from_utf8(text) else { return };
    let Ok(m) = cf_ssai_core::media::parse(t) else { return };
    let first = m.segments.first().map_or(m.media_sequence, |s| s.msn);
    let first_pdt = m.segments.first().and_then(|s| s.pdt_ms);
    let mut entries = Vec::new();
    let mut disc = u64::from(h[15]);
    for k in 0..(1 + usize::from(h[0] % 3)) {
        let cadence = [1000u64, 1920, 2000, 6000][usize::from(h[1 + k] % 4)];
        let offset = u64::from(h[4 + k] % 16);
        let anchor = first.saturating_add(offset).saturating_sub(4);
        let segs = u32::from(h[7 + k] % 12);
        let record = BreakRecord {
            id: format!("b{k}"),
            source: BreakSource::Scte35,
            anchor_msn: anchor,
            anchor_pdt_ms: (h[10] & (1 << k) != 0)
                .then(|| first_pdt.map(|p| p + offset as i64 * cadence as i64))
                .flatten(),
            duration_ms: u64::from(segs) * cadence,
            cadence_ms: cadence,
            segment_count: segs,
            cut_after: (h[11] & (1 << k) != 0).then_some(segs / 2),
            disc_before: disc,
            merged: if h[11] & 0x80 != 0 { vec![anchor] } else { vec![] },
            registered_ms: 0,
            asset: Default::default(),
        };
        let seg_s = 0.5 + f64::from(h[12] % 16) * 0.5;
        let n = usize::from(h[13] % 9);
        let items: Vec<PodItem> = (0..usize::from(h[14] % 3))
            .map(|i| PodItem {
                ad_id: format!("ad{i}"),
                creative_id: format!("c{i}"),
                universal_ad_id: None,
                duration_s: seg_s * n as f64,
                renditions: vec![
                    rendition(false, seg_s, n, 900_000),
                    rendition(true, seg_s, n, 1_800_000),
                ],
                tracking: Tracking::default(),
            })
            .collect();
        let pod = Pod {
            pod_id: format!("p{k}"),
            break_id: record.id.clone(),
            duration_s: record.duration_ms as f64 / 1000.0,
            items,
            slate: Slate {
                slate_id: "s".into(),
                renditions: vec![rendition(h[12] & 1 == 0, 2.0, 1 + n, 500_000)],
            },
            fill_s: 0.0,
            source: PodSource::Library,
            reasons: vec![],
        };
        disc = disc.saturating_add(cf_ssai_core::model::inserted_discontinuities(&record, &pod));
        entries.push(BreakEntry { record, pod });
    }
    let url = url::Url::parse("https://origin.example/live/ch/index.m3u8").unwrap();
    let variant = Variant {
        bandwidth: Some(u64::from(h[9]) * 10_000),
        codecs: None,
        kind: TrackKind::Muxed,
    };
    let mut settings = SpliceSettings::default();
    settings.announce_ahead_segments = i32::from(h[10] >> 4) - 4;
    if h[9] & 1 == 1 {
        settings.ad_proxy_prefix = Some("/o/c/ad/".into());
        settings.session = Some("s1-0-00-00".into());
    }
    for mode in [Mode::Ssai, Mode::Sgai] {
        let Ok(out) = splice::splice(&SpliceInput {
            origin: t,
            playlist_url: &url,
            breaks: &entries,
            disc_base: 0,
            variant: &variant,
            mode,
            settings: &settings,
        }) else {
            continue;
        };
        // The output is a bounded function of the input (no runaway fill).
        assert!(out.playlist.len() <= 64 * 1024 + 40 * t.len(), "{} from {}", out.playlist.len(), t.len());
    }
});
