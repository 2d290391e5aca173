//! criterion benchmarks of the core's hot paths. Peer inputs (the bytes
//! Ritcher benchmarks on) are read from ../shared/bench/peer-inputs when
//! present; they are not copied into the project.
//!
//! Run: `cargo bench -p cf-ssai-core --bench core`

use cf_ssai_core::channel::sequencer::{self, Action, BreakPolicy};
use cf_ssai_core::model::*;
use cf_ssai_core::scte35::cues::{self, SegmentationPolicy};
use cf_ssai_core::splice::master::{rewrite_master, MasterInput};
use cf_ssai_core::splice::{splice_media, EntryRef, Mode, SpliceInput, SpliceSettings, Variant};
use cf_ssai_core::{hls::media, scte35};
use cf_ssai_testkit::sim::{SimChannel, SimDialect};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::path::PathBuf;

fn rendition(ad: &str, bw: u64, n: usize, d: f64) -> AdRendition {
    AdRendition {
        bandwidth: bw,
        codecs: Some("avc1.4d401f,mp4a.40.2".into()),
        resolution: None,
        kind: TrackKind::Muxed,
        playlist_url: format!("https://ads.example.com/{ad}/{bw}/index.m3u8"),
        cadence_s: d,
        segments: (0..n)
            .map(|i| AdSegment {
                uri: format!("https://ads.example.com/{ad}/{bw}/s{i}.ts"),
                duration: d,
                byterange: None,
            })
            .collect(),
        init_uri: None,
        key: None,
        memo: Default::default(),
    }
}

fn pod(id: &str, ads: usize, segs: usize, d: f64) -> Pod {
    Pod {
        pod_id: format!("pod-{id}"),
        break_id: id.into(),
        duration_s: 30.0,
        items: (0..ads)
            .map(|i| PodItem {
                ad_id: format!("ad{i}"),
                creative_id: format!("cr{i}"),
                universal_ad_id: None,
                duration_s: segs as f64 * d,
                renditions: vec![
                    rendition(&format!("ad{i}"), 800_000, segs, d),
                    rendition(&format!("ad{i}"), 2_000_000, segs, d),
                ],
                tracking: Tracking::default(),
            })
            .collect(),
        slate: Slate {
            slate_id: "s".into(),
            renditions: vec![rendition("slate", 500_000, 1, d)],
        },
        fill_s: 0.0,
        source: PodSource::Library,
        reasons: vec![],
    }
}

/// Break entries for every cue in a playlist, as the Channel DO would hold.
fn entries_for(text: &str, ad_seg: f64) -> Vec<BreakEntry> {
    let m = media::parse(text).expect("bench input parses");
    let det = cues::detect(&m, &SegmentationPolicy::default());
    let cadence = m.cadence_ms();
    let mut st = ChannelBreaks::default();
    for a in sequencer::reconcile(&det.events, &st.entries.clone()) {
        if let Action::Register(c) = a {
            if let Some(r) = sequencer::record_from_cue(&c, cadence, &BreakPolicy::default(), 0) {
                let n = ((r.duration_ms as f64 / 1000.0) / ad_seg).round() as usize;
                let p = pod(&r.id, 5, (n / 5).max(1), ad_seg);
                let _ = sequencer::commit(&mut st, r, p, Default::default(), 0);
            }
        }
    }
    st.entries
}

/// What the manifest worker does per media request: parse, detect, check
/// the entries cover the cues, splice and render.
fn pipeline(
    text: &str,
    url: &url::Url,
    entries: &[BreakEntry],
    mode: Mode,
    settings: &SpliceSettings,
    variant: &Variant,
) -> usize {
    let m = media::parse(text).expect("parses");
    let det = cues::detect(&m, &SegmentationPolicy::default());
    let actions = sequencer::reconcile(&det.events, entries);
    black_box(actions.len());
    splice_media(
        &m,
        &SpliceInput {
            origin: text,
            playlist_url: url,
            breaks: &EntryRef::all(entries),
            disc_base: 0,
            variant,
            mode,
            settings,
        },
    )
    .playlist
    .len()
}

/// A demuxed CMAF pod (video-only and audio-only fMP4 renditions), what a
/// DASH break gets.
fn cmaf_pod(id: &str, segs: usize, d: f64) -> Pod {
    let mut p = pod(id, 2, segs, d);
    let cmaf = |r: &mut AdRendition, kind: TrackKind| {
        r.kind = kind;
        r.init_uri = Some(r.playlist_url.replace("index.m3u8", "init.mp4"));
        for s in &mut r.segments {
            s.uri = s.uri.replace(".ts", ".m4s");
        }
    };
    for it in &mut p.items {
        let mut audio = it.renditions[0].clone();
        cmaf(&mut audio, TrackKind::Audio);
        audio.bandwidth = 128_000;
        for r in &mut it.renditions {
            cmaf(r, TrackKind::Video);
        }
        it.renditions.push(audio);
    }
    p
}

/// A DASH request: the MPD read, its window as HLS, cues, the splice.
fn dash_pipeline(
    text: &str,
    origin: &url::Url,
    self_url: &url::Url,
    entries: &[BreakEntry],
    settings: &SpliceSettings,
    now: i64,
) -> usize {
    use cf_ssai_core::dash::{splice as dsplice, window, Mpd};
    let mpd = Mpd::parse(text).expect("parses");
    let hls = window::to_hls(&mpd, origin, now, 1920).expect("a window");
    let m = media::parse(&hls).expect("parses");
    let det = cues::detect(&m, &SegmentationPolicy::default());
    black_box(det.events.len());
    let first = m.segments.first().map_or(0, |s| s.msn);
    dsplice::splice(&dsplice::DashInput {
        mpd: &mpd,
        origin_url: origin,
        self_url,
        first_msn: first,
        last_msn: m.last_msn().unwrap_or(first),
        breaks: &EntryRef::all(entries),
        before: None,
        mode: Mode::Ssai,
        settings,
        location: None,
        now_ms: now,
    })
    .mpd
    .len()
}

fn dash_benches(c: &mut Criterion) {
    use cf_ssai_core::dash::{window, Mpd};
    use cf_ssai_testkit::sim_dash::{self, DashOptions};
    let ch = SimChannel {
        cadence_ms: 1920,
        window: 10,
        dialect: SimDialect::Daterange,
        first_break: 20,
        break_every: 40,
        break_len: 8,
        ..SimChannel::default()
    };
    let origin = url::Url::parse("https://origin.example.com/live/news/manifest.mpd").unwrap();
    let self_url = url::Url::parse("https://edge.example.com/o/news/manifest.mpd").unwrap();
    let opts = DashOptions::default();
    // Five segments into the break: the content Period cut, an ad Period
    // being published.
    let at = ch.epoch_ms + (ch.first_break as i64 + 6) * ch.cadence_ms as i64 + 500;
    let text = sim_dash::mpd(&ch, &opts, at);
    let hls = window::to_hls(&Mpd::parse(&text).unwrap(), &origin, at, 1920).unwrap();
    let m = media::parse(&hls).unwrap();
    let det = cues::detect(&m, &SegmentationPolicy::default());
    let mut st = ChannelBreaks::default();
    for a in sequencer::reconcile(&det.events, &[]) {
        if let Action::Register(cue) = a {
            let r = sequencer::record_from_cue(&cue, 1920, &BreakPolicy::default(), 0).unwrap();
            let _ = sequencer::commit(
                &mut st,
                r.clone(),
                cmaf_pod(&r.id, 4, 1.92),
                Default::default(),
                0,
            );
        }
    }
    assert!(!st.entries.is_empty(), "the bench MPD has a break");
    let settings = SpliceSettings::default();
    let quiet = sim_dash::mpd(&ch, &opts, ch.epoch_ms + 15 * 1920 + 500);
    let mut g = c.benchmark_group("dash");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("mpd_ssai_in_break", |b| {
        b.iter(|| {
            dash_pipeline(
                black_box(&text),
                &origin,
                &self_url,
                &st.entries,
                &settings,
                at,
            )
        })
    });
    g.bench_function("mpd_no_break", |b| {
        b.iter(|| dash_pipeline(black_box(&quiet), &origin, &self_url, &[], &settings, at))
    });
    g.finish();
}

fn peer_dir() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bench/peer-inputs");
    d.is_dir().then_some(d)
}

fn benches(c: &mut Criterion) {
    // SCTE-35 decode throughput.
    let insert = scte35::decode_base64(
        "/DAvAAAAAAAA///wFAVIAACPf+/+c2nALv4AUsz1AAAAAAAKAAhDVUVJAAABNWLbowo=",
    )
    .expect("sample");
    let signal = scte35::decode_base64(
        "/DA0AAAAAAAA///wBQb+cr0AUAAeAhxDVUVJSAAAjn/PAAGlmbAICAAAAAAsoKGKNAIAmsnRfg==",
    )
    .expect("sample");
    let mut g = c.benchmark_group("scte35");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_splice_insert", |b| {
        b.iter(|| scte35::parse(black_box(&insert)).map(|s| s.crc_ok))
    });
    g.bench_function("decode_time_signal_segmentation", |b| {
        b.iter(|| scte35::parse(black_box(&signal)).map(|s| s.crc_ok))
    });
    g.finish();

    // Marker detection on a 10-segment playlist with a break in view.
    let ch = SimChannel {
        window: 10,
        dialect: SimDialect::Oatcls,
        ..Default::default()
    };
    let ten = ch.media("low", ch.pdt_of(16));
    c.bench_function("cues/detect_10seg_oatcls", |b| {
        b.iter(|| {
            let m = media::parse(black_box(&ten)).expect("parses");
            cues::detect(&m, &SegmentationPolicy::default())
                .events
                .len()
        })
    });

    // What a join adds to the master rewrite with targeting on: the
    // viewer from the request (a TCF string, a CTV user agent, two
    // key-values), its cohort, the encoded `tg`, the signed session.
    let cfg = cf_ssai_core::ads::targeting::TargetingConfig {
        keys: vec![
            "geo".into(),
            "consent".into(),
            "device".into(),
            "ads.tier".into(),
        ],
        max_cohorts: 32,
        params: vec!["tier".into(), "genre".into()],
    };
    let query: Vec<(String, String)> = [
        ("gdpr", "1"),
        (
            "gdpr_consent",
            "CPXxRfAPXxRfAAfKABENB-CgAP_AAH_AAAqIHWtf_X_fb39j-_59_9t0eY1f9_63t-wzjgeNs-8NyZ_X_J4Xr2MyvB34pqYKmR4EulLBAQdlHGHcTQgAwIkVqTLsYk2MizNKJ7LEilMbM2dYGG9vn8XTuZCYr_Ovv_v39v7_3____________________________",
        ),
        ("ads.tier", "premium"),
        ("ads.genre", "news"),
        ("mode", "ssai"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let secret = b"0123456789abcdef0123456789abcdef";
    c.bench_function("join/targeting_cohort_tg_session", |b| {
        b.iter(|| {
            let v = cf_ssai_core::ads::targeting::from_request(
                &cf_ssai_core::ads::targeting::RequestFacts {
                    country: Some("DE"),
                    region: None,
                    user_agent: Some(
                        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
                    ),
                    device_user_agent: None,
                    query: black_box(&query),
                },
                &cfg,
            );
            let tg = cf_ssai_core::ads::targeting::encode(&v);
            cf_ssai_core::control::session::mint(
                secret,
                "demo/news",
                1_800_000_000,
                [7; 8],
                &cf_ssai_core::control::session::Binding {
                    cohort: &v.cohort,
                    targeting: &tg,
                },
            )
            .map(|s| s.len() + tg.len())
        })
    });

    // Splice of a 6-segment live variant with one active 30 s break.
    let ch = SimChannel {
        window: 6,
        break_len: 15,
        first_break: 10,
        ..Default::default()
    };
    let six = ch.media("low", ch.pdt_of(18));
    let entries = entries_for(&six, 2.0);
    assert_eq!(entries.len(), 1);
    let url = url::Url::parse("https://origin.example.com/live/low/index.m3u8").expect("url");
    let settings = SpliceSettings::default();
    let variant = Variant {
        bandwidth: Some(1_000_000),
        codecs: None,
        kind: TrackKind::Muxed,
    };
    let mut g = c.benchmark_group("splice_6seg_30s_break");
    g.bench_function("ssai", |b| {
        b.iter(|| {
            pipeline(
                black_box(&six),
                &url,
                &entries,
                Mode::Ssai,
                &settings,
                &variant,
            )
        })
    });
    g.bench_function("sgai", |b| {
        b.iter(|| {
            pipeline(
                black_box(&six),
                &url,
                &entries,
                Mode::Sgai,
                &settings,
                &variant,
            )
        })
    });
    g.bench_function("passthrough", |b| {
        b.iter(|| pipeline(black_box(&six), &url, &[], Mode::Ssai, &settings, &variant))
    });
    g.finish();

    // The peer's inputs, same bytes.
    if let Some(dir) = peer_dir() {
        let mut g = c.benchmark_group("peer_full_pipeline");
        for name in [
            "full_pipeline_6seg_1break",
            "full_pipeline_15seg_1break",
            "full_pipeline_60seg_3breaks",
            "full_pipeline_12seg_0breaks",
        ] {
            let text =
                std::fs::read_to_string(dir.join(format!("{name}.m3u8"))).expect("peer input");
            let e = entries_for(&text, 6.0);
            g.bench_function(name, |b| {
                b.iter(|| pipeline(black_box(&text), &url, &e, Mode::Ssai, &settings, &variant))
            });
        }
        g.finish();
        let mut g = c.benchmark_group("peer_master_rewrite");
        for name in [
            "stage_rewrite_master_3variants",
            "stage_rewrite_master_7variants",
        ] {
            let text =
                std::fs::read_to_string(dir.join(format!("{name}.m3u8"))).expect("peer input");
            let carry = [
                ("mode", "ssai".to_string()),
                ("sid", "0123456789abcdef".to_string()),
            ];
            g.bench_function(name, |b| {
                b.iter(|| {
                    rewrite_master(&MasterInput {
                        origin: black_box(&text),
                        origin_url: &url,
                        self_prefix: "/org/ch/",
                        carry: &carry,
                    })
                    .map(|s| s.len())
                })
            });
        }
        g.finish();
        #[cfg(feature = "vast")]
        vast_benches(c, &dir);
    }
}

#[cfg(feature = "vast")]
fn vast_benches(c: &mut Criterion, dir: &std::path::Path) {
    let mut g = c.benchmark_group("peer_vast");
    for name in [
        "vast_inline_3ads_3mf",
        "vast_inline_1ad_1mf",
        "vast_inline_10ads_3mf",
        "vast_wrapper",
        "vast_empty",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.xml"))).expect("peer input");
        g.bench_function(format!("{name}_parse"), |b| {
            b.iter(|| cf_ssai_core::ads::vast::parse(black_box(&text)).map(|d| d.ads.len()))
        });
    }
    let text = std::fs::read_to_string(dir.join("vast_inline_3ads_3mf.xml")).expect("peer input");
    g.bench_function("vast_inline_3ads_3mf_parse_and_pod", |b| {
        b.iter(|| {
            let doc = cf_ssai_core::ads::vast::parse(black_box(&text)).expect("parses");
            cf_ssai_core::ads::vast::pod_from_vast(doc, "b1", 30.0, 2000, 0.0)
                .items
                .len()
        })
    });
    g.finish();
}

criterion_group!(core_benches, benches, dash_benches);
criterion_main!(core_benches);
