//! Real-world-shaped playlists per packager (fixtures/hls): lossless
//! round trip, the cue events each must yield, and golden SSAI/SGAI
//! outputs (`*.ssai.expected.m3u8`, `*.sgai.expected.m3u8`; regenerate with
//! UPDATE_GOLDEN=1 and review the diff by eye).

use cf_ssai_core::channel::sequencer::{self, Action, BreakPolicy};
use cf_ssai_core::hls::{self, media};
use cf_ssai_core::model::*;
use cf_ssai_core::scte35::cues::{detect, CueKind};
use cf_ssai_core::splice::{splice, EntryRef, Mode, SpliceInput, SpliceSettings, Variant};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hls")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap()
}

fn kinds(name: &str) -> Vec<(CueKind, u64, String)> {
    let text = read(name);
    let m = media::parse(&text).unwrap();
    let det = detect(&m, &Default::default());
    assert!(det.warnings.is_empty(), "{name}: {:?}", det.warnings);
    det.events
        .into_iter()
        .map(|e| (e.kind, e.msn, e.break_id))
        .collect()
}

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    for e in std::fs::read_dir(dir()).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(hls::render(&hls::tokenize(&text).unwrap()), text, "{p:?}");
    }
}

#[test]
fn elemental_oatcls_cue_out() {
    let k = kinds("elemental_oatcls_cue_out.m3u8");
    let id = "scte-1207959695".to_string();
    assert_eq!(
        k,
        vec![
            (CueKind::Out, 43, id.clone()),
            (CueKind::Cont, 44, id.clone()),
            (CueKind::Cont, 45, id.clone()),
            (CueKind::In, 46, id)
        ]
    );
}

#[test]
fn mediapackage_daterange_hex() {
    let k = kinds("mediapackage_daterange.m3u8");
    assert_eq!(k[0], (CueKind::Out, 1202, "scte-1207959694".into()));
    assert_eq!(k[1].0, CueKind::In);
    assert_eq!(k[1].1, 1205);
}

#[test]
fn wowza_without_pdt_anchors_by_msn() {
    let k = kinds("wowza_cue_out_no_pdt.m3u8");
    assert_eq!(k[0], (CueKind::Out, 8, "msn-8".into()));
    assert_eq!(k[1].0, CueKind::Cont);
    assert_eq!(k[1].2, "msn-8");
    assert_eq!(k[2].0, CueKind::In);
}

#[test]
fn harmonic_scte35_tag_time_signal() {
    let k = kinds("harmonic_scte35_tag.m3u8");
    assert_eq!(k[0], (CueKind::Out, 301, "scte-1207959694".into()));
    assert_eq!(k[1].0, CueKind::In);
}

#[test]
fn joined_mid_break_cont_only_anchors_back() {
    let text = read("joined_mid_break_cont_only.m3u8");
    let m = media::parse(&text).unwrap();
    let det = detect(&m, &Default::default());
    let cont = &det.events[0];
    let r = sequencer::record_from_cue(cont, 6006, &BreakPolicy::default(), 0).unwrap();
    assert_eq!(
        r.anchor_msn, 43,
        "the break began one segment before the window"
    );
}

fn entries_for(text: &str) -> Vec<BreakEntry> {
    let m = media::parse(text).unwrap();
    let det = detect(&m, &Default::default());
    let mut st = ChannelBreaks::default();
    for a in sequencer::reconcile(&det.events, &[]) {
        if let Action::Register(c) = a {
            if let Some(r) =
                sequencer::record_from_cue(&c, m.cadence_ms(), &BreakPolicy::default(), 0)
            {
                let cad = r.cadence_ms as f64 / 1000.0;
                let seg = |i: usize| AdSegment {
                    uri: format!("https://ads.example/a/{i}.ts"),
                    duration: cad,
                    byterange: None,
                };
                let rend = AdRendition {
                    bandwidth: 1_000_000,
                    codecs: None,
                    resolution: None,
                    kind: TrackKind::Muxed,
                    playlist_url: "https://ads.example/a/index.m3u8".into(),
                    cadence_s: cad,
                    segments: (0..2).map(seg).collect(),
                    init_uri: text
                        .contains("EXT-X-MAP")
                        .then(|| "https://ads.example/a/init.mp4".into()),
                    key: None,
                    memo: Default::default(),
                };
                let slate = Slate {
                    slate_id: "s".into(),
                    renditions: vec![AdRendition {
                        playlist_url: "https://ads.example/s.m3u8".into(),
                        segments: vec![AdSegment {
                            uri: "https://ads.example/slate.ts".into(),
                            duration: cad,
                            byterange: None,
                        }],
                        ..rend.clone()
                    }],
                };
                let item = PodItem {
                    ad_id: "a".into(),
                    creative_id: "c".into(),
                    universal_ad_id: None,
                    duration_s: 2.0 * cad,
                    renditions: vec![rend],
                    tracking: Tracking::default(),
                };
                let pod = Pod {
                    pod_id: "p".into(),
                    break_id: r.id.clone(),
                    duration_s: r.duration_ms as f64 / 1000.0,
                    items: vec![item],
                    slate,
                    fill_s: 0.0,
                    source: PodSource::Library,
                    reasons: vec![],
                };
                let _ = sequencer::commit(&mut st, r, pod, Default::default(), 0);
            }
        }
    }
    st.entries
}

#[test]
fn golden_outputs() {
    let url = url::Url::parse("https://origin.example/live/ch/index.m3u8").unwrap();
    let settings = SpliceSettings {
        asset_list_prefix: "/org/ch/interstitials/".into(),
        ..Default::default()
    };
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    for name in [
        "elemental_oatcls_cue_out",
        "mediapackage_daterange",
        "harmonic_scte35_tag",
        "llhls_parts",
    ] {
        let text = read(&format!("{name}.m3u8"));
        let entries = entries_for(&text);
        for (mode, tag) in [(Mode::Ssai, "ssai"), (Mode::Sgai, "sgai")] {
            let out = splice(&SpliceInput {
                origin: &text,
                playlist_url: &url,
                breaks: &EntryRef::all(&entries),
                disc_base: 0,
                variant: &Variant::default(),
                mode,
                settings: &settings,
            })
            .unwrap();
            let golden = dir().join(format!("../golden/{name}.{tag}.expected.m3u8"));
            if update {
                std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
                std::fs::write(&golden, &out.playlist).unwrap();
            }
            let want = std::fs::read_to_string(&golden)
                .unwrap_or_else(|_| panic!("{golden:?} missing: run with UPDATE_GOLDEN=1"));
            assert_eq!(out.playlist, want, "{name} {tag}");
        }
    }
}
