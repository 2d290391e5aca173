//! The splice proven over time: a simulated live origin serves successive
//! windows; "nodes" with different KV lag serve "viewers" who reload and
//! join late; the validator checks every rule across all of them.

use cf_ssai_core::channel::sequencer::{self, Action, BreakPolicy};
use cf_ssai_core::channel::Input;
use cf_ssai_core::hls::media;
use cf_ssai_core::model::*;
use cf_ssai_core::scte35::cues::{self, SegmentationPolicy};
use cf_ssai_core::splice::edge;
use cf_ssai_core::splice::{self, EntryRef, Mode, SpliceInput, SpliceSettings, Variant};
use cf_ssai_testkit::driver::Driver;
use cf_ssai_testkit::edge::LaggingNode;
use cf_ssai_testkit::sim::{SimChannel, SimDialect};
use cf_ssai_testkit::validate::{Registry, Viewer};

mod common;
use common::pod;

/// The Channel DO over simulated time: the testkit's one driver of the
/// channel machine (its poller on the alarms the machine asks for, KV
/// writes kept with their instants), the decision service answering at
/// once.
fn sequencer(ch: &SimChannel) -> Driver {
    let fmp4 = ch.fmp4;
    let mut d = Driver::new(
        ch.clone(),
        Box::new(move |r| pod(&r.id, r.cadence_ms as f64 / 1000.0, fmp4)),
    );
    d.start_poller();
    d
}

/// The manifest worker's playback path, in process: the core's edge
/// (`splice::edge::playlist`) driven over a node whose KV lags by `lag`.
fn serve(
    ch: &SimChannel,
    seq: &mut Driver,
    variant: &str,
    now: i64,
    lag: i64,
    mode: Mode,
) -> String {
    serve_as(ch, seq, variant, now, lag, mode, "")
}

/// [`serve`] for a viewer of audience cohort `cohort`.
fn serve_as(
    ch: &SimChannel,
    seq: &mut Driver,
    variant: &str,
    now: i64,
    lag: i64,
    mode: Mode,
    cohort: &str,
) -> String {
    let origin = ch.media(variant, now);
    let m = media::parse(&origin).unwrap();
    let det = cues::detect(&m, &SegmentationPolicy::default());
    let url = url::Url::parse(&format!("https://origin.test/live/{variant}/index.m3u8")).unwrap();
    let v = ch.variants.iter().find(|v| v.name == variant);
    let variant_info = Variant {
        bandwidth: v.map(|v| v.bandwidth),
        codecs: v.map(|v| v.codecs.clone()),
        kind: ch.kind_of(variant),
    };
    let settings = SpliceSettings {
        asset_list_prefix: "/o/c/interstitials/".into(),
        ..Default::default()
    };
    let req = edge::MediaRequest {
        origin: &origin,
        m: &m,
        events: &det.events,
        cadence_ms: ch.cadence_ms,
        examined: true,
        ahead: 0,
        cohort,
        playlist_url: &url,
        variant: &variant_info,
        mode,
        settings: &settings,
    };
    let mut node = LaggingNode { seq, lag, now };
    cf_ssai_testkit::edge::serve(&mut node, &req)
        .output
        .playlist
}

/// What a run served: ad segments (SSAI) and interstitial tags (SGAI)
/// over every response.
#[derive(Debug, Default, Clone, Copy)]
struct Served {
    ads: usize,
    interstitials: usize,
    parts: usize,
}

/// LL-HLS rules of an SSAI playlist, and across every playlist served on
/// any node: a part is content, so no segment whose parts were ever
/// served may later be served as an ad (a low-latency viewer would have
/// played the content the ad replaces), nor the other way round.
#[derive(Default)]
struct PartLedger {
    /// MSN → (content parts served, served as ours).
    seen: std::collections::HashMap<u64, (bool, bool)>,
}

impl PartLedger {
    fn check(&mut self, out: &str) -> Vec<String> {
        let mut errs = Vec::new();
        let ours = |u: &str| u.contains("ads.test") || u == splice::BLANK_SUBTITLES_PATH;
        if out.contains("CAN-SKIP-UNTIL") {
            errs.push("CAN-SKIP-UNTIL offered: we never serve delta updates".into());
        }
        if out.contains("#EXT-X-PART:") && !out.contains("#EXT-X-PART-INF:") {
            errs.push("EXT-X-PART without EXT-X-PART-INF".into());
        }
        let mut msn: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (mut parts, mut disc, mut last_ours) = (0usize, false, false);
        let mut disc_before_parts = false;
        for l in out.lines() {
            if l == "#EXT-X-DISCONTINUITY" {
                disc = true;
            } else if l.starts_with("#EXT-X-PART:") {
                if parts == 0 {
                    disc_before_parts = disc;
                }
                parts += 1;
            } else if !l.is_empty() && !l.starts_with('#') {
                let is_ours = ours(l);
                if is_ours && parts > 0 {
                    errs.push(format!("MSN {msn}: content parts before an ad segment"));
                }
                let e = self.seen.entry(msn).or_default();
                e.0 |= parts > 0;
                e.1 |= is_ours;
                if e.0 && e.1 {
                    errs.push(format!("MSN {msn}: served as content parts and as an ad"));
                }
                last_ours = is_ours;
                (parts, disc) = (0, false);
                msn += 1;
            }
        }
        // The segment in progress: parts or a hint for its next part say
        // it is content.
        let hint = out.contains("#EXT-X-PRELOAD-HINT");
        if last_ours && parts == 0 && !hint && out.contains("#EXT-X-PART:") {
            // The live edge is an ad: an LL client must not wait for parts.
            errs.push("parts listed while the live edge is an ad".into());
        }
        if parts > 0 || hint {
            let e = self.seen.entry(msn).or_default();
            e.0 = true;
            if e.1 {
                errs.push(format!("MSN {msn}: content parts after it was an ad"));
            }
            let disc_first = if parts > 0 { disc_before_parts } else { disc };
            if last_ours && !disc_first {
                errs.push(format!(
                    "MSN {msn}: parts after an ad without a discontinuity"
                ));
            }
        }
        errs
    }
}

/// The splice shape of a served playlist: per MSN, whether it is ours (ad
/// or slate) and whether it starts a discontinuity, with the
/// discontinuity sequence. Every variant of one instant must agree.
type Shape = (u64, Vec<(u64, bool, bool)>);

fn shape(out: &str) -> Shape {
    let snap = cf_ssai_testkit::validate::snapshot(out).unwrap();
    (
        snap.disc_sequence,
        snap.segments
            .iter()
            .map(|(m, f)| {
                let ours = f.uri.contains("ads.test") || f.uri == splice::BLANK_SUBTITLES_PATH;
                (*m, ours, f.discontinuity)
            })
            .collect(),
    )
}

/// Run a channel for `secs`, reloading every `step` ms, with several nodes
/// (KV lags) and viewers (one per node and rendition, plus late joiners),
/// validating everything, and comparing the renditions (variants, and a
/// demuxed channel's audio and subtitles) with each other at every instant
/// and node (same MSNs spliced, same discontinuities).
fn run(ch: SimChannel, mode: Mode, secs: i64, step: i64) -> Served {
    let mut seq = sequencer(&ch);
    let names: Vec<&str> = ch
        .variants
        .iter()
        .map(|v| v.name.as_str())
        .chain(ch.alternates().iter().map(|a| a.name))
        .collect();
    let mut regs: Vec<Registry> = names.iter().map(|_| Registry::default()).collect();
    let lags = [0i64, 5_000, 61_000];
    let mut viewers: Vec<Vec<Viewer>> = names
        .iter()
        .map(|_| lags.iter().map(|_| Viewer::default()).collect())
        .collect();
    let mut served = Served::default();
    let mut parts = PartLedger::default();
    let start = ch.epoch_ms + ch.cadence_ms as i64 * (ch.window as i64 + 1);
    let mut t = start;
    let mut k = 0;
    while t < start + secs * 1000 {
        seq.run_until(t);
        let mut shapes: Vec<Vec<Shape>> = vec![Vec::new(); lags.len()];
        for (vi, name) in names.iter().enumerate() {
            for (li, lag) in lags.iter().enumerate() {
                let out = serve(&ch, &mut seq, name, t, *lag, mode);
                served.ads += out
                    .lines()
                    .filter(|l| l.starts_with("https://ads.test/"))
                    .count();
                served.interstitials += out.matches("com.apple.hls.interstitial").count();
                if ch.ll_parts > 0 && mode == Mode::Ssai {
                    let errs = parts.check(&out);
                    assert!(
                        errs.is_empty(),
                        "t={t} rendition={name} lag={lag}: {errs:?}\n{out}"
                    );
                    served.parts += out.matches("#EXT-X-PART:").count();
                }
                shapes[li].push(shape(&out));
                let errs = regs[vi].check(&mut viewers[vi][li], &out, ch.pdt);
                assert!(
                    errs.is_empty(),
                    "t={t} rendition={name} lag={lag}: {errs:?}\n{out}"
                );
            }
            // A late joiner at a pseudo-random instant: a fresh viewer.
            if k % 7 == 3 {
                let out = serve(&ch, &mut seq, name, t + 333, 30_000, mode);
                let errs = regs[vi].check(&mut Viewer::default(), &out, ch.pdt);
                assert!(errs.is_empty(), "late joiner t={t}: {errs:?}\n{out}");
            }
        }
        // Rule 5: every variant splices the same MSNs with the same
        // discontinuities (ABR switching inside a break).
        for (li, per_variant) in shapes.iter().enumerate() {
            for (oi, other) in per_variant.iter().enumerate().skip(1) {
                assert_eq!(
                    &per_variant[0], other,
                    "t={t} lag={}: {} differs from {}",
                    lags[li], names[oi], names[0]
                );
            }
        }
        k += 1;
        t += step;
    }
    served
}

#[test]
fn ssai_every_dialect_across_reloads_nodes_and_late_joiners() {
    for d in [
        SimDialect::CueOut,
        SimDialect::Daterange,
        SimDialect::Oatcls,
        SimDialect::Scte35Tag,
        SimDialect::Splicepoint,
    ] {
        let ch = SimChannel {
            dialect: d,
            ..Default::default()
        };
        let ads = run(ch, Mode::Ssai, 150, 1000).ads;
        assert!(ads > 0, "{d:?}: no ad segment was ever served");
    }
}

/// A cohort's pod: its own creatives (URIs under `ads.test/{tag}/`) and
/// another number of ads, so another number of discontinuities.
fn cohort_pod(r: &BreakRecord, tag: &str, ads: usize) -> Pod {
    let mut p = pod(&r.id, r.cadence_ms as f64 / 1000.0, false);
    let mut third = p.items[0].clone();
    third.ad_id = "adC".into();
    p.items.push(third);
    p.items.truncate(ads);
    for item in &mut p.items {
        item.creative_id = format!("{tag}-{}", item.creative_id);
        for r in &mut item.renditions {
            r.playlist_url = r
                .playlist_url
                .replace("ads.test/", &format!("ads.test/{tag}/"));
            for s in &mut r.segments {
                s.uri = s
                    .uri
                    .replace("https://ads.test/", &format!("https://ads.test/{tag}/"));
            }
        }
    }
    p
}

/// Addressable breaks: three cohorts and the default audience on one
/// channel. Two cohorts get pods of their own with other creatives and
/// other discontinuity counts; a third's decision fails (it gets the
/// default pod). Every (cohort, rendition) stream keeps the live rules
/// across reloads, nodes and KV lags through several breaks; renditions of
/// one cohort agree; cohorts differ only inside breaks (same MSNs
/// everywhere), and each cohort's break shows its own ads.
#[test]
fn cohorts_get_their_own_pods_and_each_keeps_the_live_rules() {
    let ch = SimChannel::default();
    let mut seq = sequencer(&ch);
    seq.decide_cohort = Some(Box::new(|r, v| match v.cohort.as_str() {
        "aaaa0001" => Some(cohort_pod(r, "a", 1)),
        "bbbb0002" => Some(cohort_pod(r, "b", 3)),
        _ => None,
    }));
    let cohorts = ["", "aaaa0001", "bbbb0002", "cccc0003"];
    for c in &cohorts[1..] {
        let viewer = cf_ssai_core::ads::request::Viewer {
            cohort: (*c).into(),
            ..Default::default()
        };
        seq.feed(Input::CohortSeen { viewer });
    }
    let names: Vec<&str> = ch.variants.iter().map(|v| v.name.as_str()).collect();
    let lags = [0i64, 5_000, 61_000];
    let mut regs: Vec<Vec<Registry>> = cohorts
        .iter()
        .map(|_| names.iter().map(|_| Registry::default()).collect())
        .collect();
    let mut viewers: Vec<Vec<Vec<Viewer>>> = cohorts
        .iter()
        .map(|_| {
            names
                .iter()
                .map(|_| lags.iter().map(|_| Viewer::default()).collect())
                .collect()
        })
        .collect();
    let mut ads: Vec<(usize, usize, usize)> = vec![(0, 0, 0); cohorts.len()];
    let start = ch.epoch_ms + ch.cadence_ms as i64 * (ch.window as i64 + 1);
    let mut t = start;
    while t < start + 200_000 {
        seq.run_until(t);
        for (li, lag) in lags.iter().enumerate() {
            let mut msns = Vec::new();
            for (ci, c) in cohorts.iter().enumerate() {
                let mut shapes = Vec::new();
                for (vi, name) in names.iter().enumerate() {
                    let out = serve_as(&ch, &mut seq, name, t, *lag, Mode::Ssai, c);
                    let errs = regs[ci][vi].check(&mut viewers[ci][vi][li], &out, ch.pdt);
                    assert!(
                        errs.is_empty(),
                        "t={t} cohort={c:?} {name} lag={lag}: {errs:?}\n{out}"
                    );
                    let ad = |l: &&str| l.starts_with("https://ads.test/") && !l.contains("slate");
                    for l in out.lines().filter(ad) {
                        let e = &mut ads[ci];
                        if l.starts_with("https://ads.test/a/") {
                            e.0 += 1;
                        } else if l.starts_with("https://ads.test/b/") {
                            e.1 += 1;
                        } else {
                            e.2 += 1;
                        }
                    }
                    shapes.push(shape(&out));
                    msns.push(media::parse(&out).unwrap().media_sequence);
                }
                for other in &shapes[1..] {
                    assert_eq!(&shapes[0], other, "t={t} cohort={c:?}: renditions differ");
                }
            }
            assert!(
                msns.windows(2).all(|w| w[0] == w[1]),
                "t={t}: MSNs differ across cohorts {msns:?}"
            );
        }
        t += 1000;
    }
    let breaks = seq.history.len();
    assert!(breaks >= 3, "only {breaks} breaks");
    assert!(seq
        .history
        .iter()
        .all(|(_, e)| e.record.cohorts == ["aaaa0001", "bbbb0002"]));
    // Each audience saw its own ads, and only those: (a, b, default) URIs.
    let only = |(a, b, other): (usize, usize, usize), which: usize| {
        [a, b, other]
            .iter()
            .enumerate()
            .all(|(i, n)| (i == which) == (*n > 0))
    };
    for (ci, which, who) in [
        (0, 2, "default"),
        (1, 0, "cohort a"),
        (2, 1, "cohort b"),
        (3, 2, "failed cohort"),
    ] {
        assert!(only(ads[ci], which), "{who} {:?}", ads[ci]);
    }
}

#[test]
fn ssai_fmp4_keys_and_1920ms_cadence() {
    let ch = SimChannel {
        fmp4: true,
        key: true,
        cadence_ms: 1920,
        window: 5,
        ..Default::default()
    };
    assert!(run(ch, Mode::Ssai, 120, 700).ads > 0);
}

#[test]
fn ssai_long_window_two_breaks_in_view_and_origin_discontinuities() {
    let ch = SimChannel {
        window: 60,
        break_every: 20,
        break_len: 8,
        origin_disc_every: 13,
        ..Default::default()
    };
    assert!(run(ch, Mode::Ssai, 150, 2000).ads > 0);
}

#[test]
fn ssai_break_longer_than_window() {
    let ch = SimChannel {
        window: 4,
        break_len: 20,
        break_every: 40,
        ..Default::default()
    };
    assert!(run(ch, Mode::Ssai, 120, 1500).ads > 0);
}

#[test]
fn ssai_cadences_1_to_10_seconds() {
    for c in [1000u64, 4000, 6000, 10_000] {
        let ch = SimChannel {
            cadence_ms: c,
            break_len: (30_000 / c).max(1),
            break_every: (90_000 / c).max(4),
            first_break: 3,
            ..Default::default()
        };
        let s = run(ch, Mode::Ssai, 200, c as i64);
        assert!(s.ads > 0, "cadence {c}: no ad segment was ever served");
    }
}

#[test]
fn sgai_interstitials_are_stable() {
    for d in [SimDialect::CueOut, SimDialect::Daterange] {
        let ch = SimChannel {
            dialect: d,
            ..Default::default()
        };
        let s = run(ch, Mode::Sgai, 150, 1000);
        assert!(
            s.interstitials > 0,
            "{d:?}: no interstitial was ever announced"
        );
        assert_eq!(s.ads, 0, "{d:?}: SGAI keeps the content");
    }
}

#[test]
fn ssai_replaces_exactly_the_break_and_returns_at_its_end() {
    let ch = SimChannel::default();
    let mut seq = sequencer(&ch);
    // Serve at every instant so the sequencer sees the OUT; then inspect a
    // window fully covering break 1 (MSN 10..25).
    for msn in 9..30u64 {
        seq.run_until(ch.pdt_of(msn + 1) + 10);
        serve(&ch, &mut seq, "low", ch.pdt_of(msn + 1) + 10, 0, Mode::Ssai);
    }
    let ch_wide = SimChannel {
        window: 30,
        ..ch.clone()
    };
    let out = serve(&ch_wide, &mut seq, "low", ch.pdt_of(29) + 10, 0, Mode::Ssai);
    let snap = cf_ssai_testkit::validate::snapshot(&out).unwrap();
    for (msn, f) in &snap.segments {
        let in_break = (10..25).contains(msn);
        assert_eq!(
            f.uri.starts_with("https://ads.test/"),
            in_break,
            "MSN {msn}: {}",
            f.uri
        );
        let boundary = [10u64, 15, 20, 25].contains(msn);
        assert_eq!(f.discontinuity, boundary, "MSN {msn}");
    }
    assert!(
        out.contains("https://ads.test/adA/700000/s0.ts"),
        "low variant gets the 700k rendition"
    );
    assert!(out.contains("https://ads.test/slate/500000/s0.ts"));
}

#[test]
fn ssai_demuxed_audio_and_subtitles_stay_aligned_with_video() {
    for fmp4 in [false, true] {
        let ch = SimChannel {
            demuxed: true,
            fmp4,
            cadence_ms: 1920,
            ..Default::default()
        };
        assert!(run(ch, Mode::Ssai, 150, 1000).ads > 0);
    }
}

#[test]
fn ssai_ll_hls_parts_never_contradict_the_break() {
    for d in [SimDialect::CueOut, SimDialect::Daterange] {
        let ch = SimChannel {
            dialect: d,
            cadence_ms: 1920,
            ll_parts: 2,
            break_len: 5,
            break_every: 12,
            ..Default::default()
        };
        // Reloads every part (0.96 s) and off the part grid.
        for step in [960, 700] {
            let s = run(ch.clone(), Mode::Ssai, 90, step);
            assert!(
                s.ads > 0 && s.parts > 0,
                "{d:?}: ads {} parts {}",
                s.ads,
                s.parts
            );
        }
    }
}

#[test]
fn sgai_ll_hls_keeps_every_part() {
    let ch = SimChannel {
        ll_parts: 2,
        cadence_ms: 1920,
        ..Default::default()
    };
    let s = run(ch, Mode::Sgai, 60, 960);
    assert!(s.interstitials > 0);
}

#[test]
fn sgai_demuxed_every_rendition_announces_the_same_interstitial() {
    let ch = SimChannel {
        demuxed: true,
        ..Default::default()
    };
    let s = run(ch, Mode::Sgai, 120, 1000);
    assert!(s.interstitials > 0 && s.ads == 0);
}

/// Inside a break, each rendition of a demuxed channel gets its kind: the
/// video variant the ad's video-only rendition, each audio language the
/// ad's audio, the subtitles blank WebVTT; the slate likewise.
#[test]
fn ssai_demuxed_each_rendition_gets_its_kind() {
    let ch = SimChannel {
        demuxed: true,
        ..Default::default()
    };
    let mut seq = sequencer(&ch);
    for msn in 9..30u64 {
        seq.run_until(ch.pdt_of(msn + 1) + 10);
    }
    let wide = SimChannel {
        window: 30,
        ..ch.clone()
    };
    let at = ch.pdt_of(29) + 10;
    let expect = [
        (
            "low",
            "https://ads.test/adA/600000/s0.ts",
            "https://ads.test/slate/400000/s0.ts",
        ),
        (
            "aud-en",
            "https://ads.test/adA/128000/s0.ts",
            "https://ads.test/slate/96000/s0.ts",
        ),
        (
            "aud-es",
            "https://ads.test/adA/128000/s0.ts",
            "https://ads.test/slate/96000/s0.ts",
        ),
    ];
    for (name, ad, slate) in expect {
        let out = serve(&wide, &mut seq, name, at, 0, Mode::Ssai);
        assert!(out.contains(ad) && out.contains(slate), "{name}:\n{out}");
        assert!(
            !out.contains("/700000/") && !out.contains("/500000/"),
            "{name}: muxed ad in a demuxed rendition\n{out}"
        );
    }
    let subs = serve(&wide, &mut seq, "sub-en", at, 0, Mode::Ssai);
    let snap = cf_ssai_testkit::validate::snapshot(&subs).unwrap();
    for (msn, f) in &snap.segments {
        let blank = f.uri == splice::BLANK_SUBTITLES_PATH;
        assert_eq!(blank, (10..25).contains(msn), "MSN {msn}: {}", f.uri);
        if !blank {
            assert!(f.uri.ends_with(".vtt"), "{}", f.uri);
        }
    }
    assert!(!subs.contains("EXT-X-MAP"), "{subs}");
}

#[test]
fn unfit_ad_renditions_become_slate_and_say_why() {
    let ch = SimChannel::default();
    let origin = ch.media("low", ch.pdt_of(16));
    let m = media::parse(&origin).unwrap();
    let det = cues::detect(&m, &SegmentationPolicy::default());
    let cue = det
        .events
        .iter()
        .find(|e| e.kind == cues::CueKind::Out)
        .unwrap();
    let r = sequencer::record_from_cue(cue, 2000, &BreakPolicy::default(), 0).unwrap();
    let mut p = pod(&r.id, 2.0, false);
    for item in &mut p.items {
        for rr in &mut item.renditions {
            for s in &mut rr.segments {
                s.duration = 6.0; // does not fit TARGETDURATION 2
            }
        }
    }
    let mut st = ChannelBreaks::default();
    sequencer::commit(&mut st, r, p, Default::default(), 0).unwrap();
    let url = url::Url::parse("https://origin.test/live/low/index.m3u8").unwrap();
    let out = splice::splice(&SpliceInput {
        origin: &origin,
        playlist_url: &url,
        breaks: &EntryRef::all(&st.entries),
        disc_base: 0,
        variant: &Variant::default(),
        mode: Mode::Ssai,
        settings: &SpliceSettings::default(),
    })
    .unwrap();
    assert!(!out.playlist.contains("/adA/"));
    assert!(out.playlist.contains("/slate/"));
    assert!(
        out.report
            .reasons
            .iter()
            .any(|r| r.contains("TARGETDURATION")),
        "{:?}",
        out.report.reasons
    );
}

mod random_channels {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        /// Random channels, break schedules and reload instants: every rule
        /// holds for every viewer, node and late joiner.
        #[test]
        fn live_rules_hold(
            cadence in prop_oneof![Just(1000u64), Just(1920), Just(2000), Just(4000), Just(6000)],
            window in 4u64..12,
            break_len in 1u64..20,
            gap in 1u64..30,
            first_break in 0u64..20,
            dialect in prop_oneof![Just(SimDialect::CueOut), Just(SimDialect::Daterange), Just(SimDialect::Oatcls), Just(SimDialect::Scte35Tag), Just(SimDialect::Splicepoint)],
            fmp4 in any::<bool>(),
            step_frac in 0.2f64..1.5,
            sgai in any::<bool>(),
        ) {
            let ch = SimChannel {
                cadence_ms: cadence,
                window,
                break_len,
                break_every: break_len + gap,
                first_break,
                dialect,
                fmp4,
                ..Default::default()
            };
            let secs = ((break_len + gap) * cadence / 1000 * 2).clamp(20, 120) as i64;
            let mode = if sgai { Mode::Sgai } else { Mode::Ssai };
            let s = run(ch.clone(), mode, secs, (cadence as f64 * step_frac) as i64);
            // A break whose first segment is published well inside the run
            // must have been seen.
            let start_ms = (window as i64 + 1) * cadence as i64;
            let first_seen_ms = (ch.first_break as i64 + 2) * cadence as i64;
            if first_seen_ms + 2 * cadence as i64 <= start_ms + secs * 1000 {
                if sgai {
                    prop_assert!(s.interstitials > 0, "no interstitial: {s:?}");
                } else {
                    prop_assert!(s.ads > 0, "no ad segment: {s:?}");
                }
            }
        }
    }
}

#[test]
fn ssai_origin_without_pdt_anchors_by_msn() {
    let ch = SimChannel {
        pdt: false,
        ..Default::default()
    };
    assert!(run(ch, Mode::Ssai, 120, 1000).ads > 0);
}

#[test]
fn cue_out_without_duration_runs_until_the_cue_in() {
    // An open CUE-OUT gets the channel's open-break length, and the CUE-IN
    // cuts it at the segment where it appears (the pod is cut on a segment
    // boundary and content resumes exactly there).
    let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:20.000Z\n#EXTINF:2.0,\na.ts\n#EXT-X-CUE-OUT\n#EXTINF:2.0,\nb.ts\n#EXT-X-CUE-OUT-CONT:2.0/0\n#EXTINF:2.0,\nc.ts\n#EXT-X-CUE-OUT-CONT:4.0/0\n#EXTINF:2.0,\nd.ts\n#EXT-X-CUE-IN\n#EXTINF:2.0,\ne.ts\n#EXTINF:2.0,\nf.ts\n";
    let m = media::parse(text).unwrap();
    let det = cues::detect(&m, &SegmentationPolicy::default());
    let mut st = ChannelBreaks::default();
    for a in sequencer::reconcile(&det.events, &st.entries.clone()) {
        if let Action::Register(c) = a {
            let r = sequencer::record_from_cue(&c, 2000, &BreakPolicy::default(), 0).unwrap();
            assert_eq!(r.duration_ms, BreakPolicy::default().open_break_ms);
            sequencer::commit(
                &mut st,
                r.clone(),
                pod(&r.id, 2.0, false),
                Default::default(),
                0,
            )
            .unwrap();
        }
    }
    for a in sequencer::reconcile(&det.events, &st.entries.clone()) {
        if let Action::End { break_id, at_msn } = a {
            assert!(sequencer::apply_end(&mut st, &break_id, at_msn, 0));
        }
    }
    assert_eq!(st.entries[0].record.end_msn(), 14);
    let url = url::Url::parse("https://origin.test/live/low/index.m3u8").unwrap();
    let out = splice::splice(&SpliceInput {
        origin: text,
        playlist_url: &url,
        breaks: &EntryRef::all(&st.entries),
        disc_base: 0,
        variant: &Variant::default(),
        mode: Mode::Ssai,
        settings: &SpliceSettings::default(),
    })
    .unwrap();
    let snap = cf_ssai_testkit::validate::snapshot(&out.playlist).unwrap();
    let ads: Vec<u64> = snap
        .segments
        .iter()
        .filter(|(_, f)| f.uri.contains("ads.test"))
        .map(|(m, _)| *m)
        .collect();
    assert_eq!(ads, vec![11, 12, 13]);
    assert!(snap
        .segments
        .iter()
        .any(|(m, f)| *m == 14 && f.discontinuity && f.uri.ends_with("/e.ts")));
}

#[test]
fn daterange_signalled_ahead_is_registered_before_its_first_segment() {
    // The DATERANGE arrives 3 segments before its START-DATE (pre-roll).
    let ch = SimChannel {
        dialect: SimDialect::Daterange,
        signal_ahead: 3,
        ..Default::default()
    };
    assert!(run(ch.clone(), Mode::Ssai, 150, 900).ads > 0);
    let sgai = run(ch.clone(), Mode::Sgai, 150, 900);
    assert!(sgai.interstitials > 0 && sgai.ads == 0, "{sgai:?}");
    // The first window showing the cue does not yet hold the break's first
    // segment, and the cue already anchors there (its future MSN).
    let anchor = ch.first_break + ch.break_every;
    let text = ch.media("low", ch.pdt_of(anchor - 2));
    let m = media::parse(&text).unwrap();
    assert!(m.last_msn().unwrap() < anchor);
    let det = cues::detect(&m, &SegmentationPolicy::default());
    let out = det
        .events
        .iter()
        .find(|e| e.msn == anchor)
        .expect("cue anchored at the future segment");
    assert_eq!(out.pdt_ms, Some(ch.pdt_of(anchor)));
}

#[test]
fn origin_discontinuity_on_a_break_boundary_is_counted_once() {
    // Origin discontinuities at MSN multiples of 10: every break (anchors
    // 10, 40, 70, ...) starts on one, and breaks of 20 segments end on one.
    let ch = SimChannel {
        window: 6,
        first_break: 10,
        break_every: 30,
        break_len: 20,
        origin_disc_every: 10,
        ..Default::default()
    };
    assert!(run(ch, Mode::Ssai, 200, 1000).ads > 0);
}

/// A stale node's KV copy after an origin restart: the old epoch's entry
/// sits at the same MSNs as the new content, but its PDT says it is other
/// content. It is never spliced (no stale pod replayed); the same entry
/// with its own epoch's PDT is.
#[test]
fn entries_from_another_origin_epoch_are_never_spliced() {
    let ch = SimChannel::default();
    let origin = ch.media("low", ch.pdt_of(16));
    let m = media::parse(&origin).unwrap();
    let det = cues::detect(&m, &SegmentationPolicy::default());
    let cue = det
        .events
        .iter()
        .find(|e| e.kind == cues::CueKind::Out)
        .unwrap();
    let r = sequencer::record_from_cue(cue, 2000, &BreakPolicy::default(), 0).unwrap();
    assert!(r.anchor_pdt_ms.is_some(), "the simulator stamps PDT");
    let url = url::Url::parse("https://origin.test/live/low/index.m3u8").unwrap();
    let splice_with = |rec: BreakRecord| {
        let mut st = ChannelBreaks::default();
        let p = pod(&rec.id, 2.0, false);
        sequencer::commit(&mut st, rec, p, Default::default(), 0).unwrap();
        splice::splice(&SpliceInput {
            origin: &origin,
            playlist_url: &url,
            breaks: &EntryRef::all(&st.entries),
            disc_base: 0,
            variant: &Variant::default(),
            mode: Mode::Ssai,
            settings: &SpliceSettings::default(),
        })
        .unwrap()
        .playlist
    };
    assert!(
        splice_with(r.clone()).contains("https://ads.test/"),
        "same epoch: spliced"
    );
    let mut stale = r;
    // Recorded 34 minutes earlier at the same MSN (before the restart).
    stale.anchor_pdt_ms = stale.anchor_pdt_ms.map(|p| p - 34 * 60_000);
    let out = splice_with(stale);
    assert!(
        !out.contains("https://ads.test/"),
        "old epoch: not spliced\n{out}"
    );
    assert!(
        !out.contains("#EXT-X-DISCONTINUITY\n"),
        "content, no boundaries"
    );
    assert_eq!(
        out.lines().filter(|l| l.ends_with(".ts")).count(),
        origin.lines().filter(|l| l.ends_with(".ts")).count()
    );
}

/// The segment in progress carries a break's OUT cue the sequencer has not
/// registered yet (its decision may still be pending): its parts and hint
/// are withheld all the same, and the rendition reports name whole
/// segments only. An IN cue withholds nothing.
#[test]
fn ll_hls_parts_of_a_cued_segment_are_withheld_before_the_break_is_known() {
    let ch = SimChannel {
        cadence_ms: 1920,
        ll_parts: 2,
        break_len: 5,
        break_every: 12,
        ..Default::default()
    };
    let url = url::Url::parse("https://origin.test/live/low/index.m3u8").unwrap();
    let splice_at = |now: i64| {
        let origin = ch.media("low", now);
        let out = splice::splice(&SpliceInput {
            origin: &origin,
            playlist_url: &url,
            breaks: &[],
            disc_base: 0,
            variant: &Variant::default(),
            mode: Mode::Ssai,
            settings: &SpliceSettings::default(),
        })
        .unwrap()
        .playlist;
        (origin, out)
    };
    let trailer = |s: &str| s[s.rfind(".ts\n").unwrap()..].to_string();
    // One part into MSN 10, the break's first segment.
    let (origin, out) = splice_at(ch.pdt_of(10) + 1000);
    assert!(
        trailer(&origin).contains("#EXT-X-CUE-OUT") && trailer(&origin).contains("#EXT-X-PART:")
    );
    let t = trailer(&out);
    assert!(
        !t.contains("#EXT-X-PART:") && !t.contains("PRELOAD-HINT"),
        "{out}"
    );
    assert!(
        t.contains("#EXT-X-RENDITION-REPORT:URI=\"../high/index.m3u8\",LAST-MSN=9\n"),
        "{out}"
    );
    // One part into MSN 15, the first after the break (EXT-X-CUE-IN).
    let (origin, out) = splice_at(ch.pdt_of(15) + 1000);
    assert!(trailer(&origin).contains("#EXT-X-CUE-IN"));
    assert!(
        trailer(&out).contains("#EXT-X-PART:") && trailer(&out).contains("PRELOAD-HINT"),
        "{out}"
    );
}

/// A `/cue` break whose first segment carries the origin's own
/// discontinuity (a packager's loop or splice point), on a channel nobody
/// polls (SCTE-35 off): the Channel DO learns of the origin's windows only
/// from the edges' syncs. The edge that sees the origin's discontinuity on
/// one of the break's boundaries while the view says nothing of it must
/// tell the DO, or, once that segment leaves the window, the origin's
/// DISCONTINUITY-SEQUENCE and ours both count it (seen in the field: every
/// segment of the break renumbered by one under the viewers' feet).
#[test]
fn a_cued_break_on_an_origin_discontinuity_is_counted_once_without_a_poller() {
    for lag in [0i64, 1_500, 5_000] {
        let ch = SimChannel {
            dialect: SimDialect::None,
            cadence_ms: 1920,
            window: 6,
            origin_disc_every: 20,
            ..Default::default()
        };
        let mut seq = Driver::new(
            ch.clone(),
            Box::new(|r| pod(&r.id, r.cadence_ms as f64 / 1000.0, false)),
        );
        // Cued when MSN 19 is the live edge: the break starts at 20, on
        // the origin's discontinuity, and lasts 8 segments.
        let anchor = 20u64;
        let cued = ch.pdt_of(anchor) + 100;
        seq.run_until(cued);
        seq.feed(Input::CueStart(BreakRecord {
            id: "cue-20".into(),
            source: BreakSource::Manual,
            anchor_msn: anchor,
            anchor_pdt_ms: Some(ch.pdt_of(anchor)),
            duration_ms: 8 * 1920,
            cadence_ms: 1920,
            segment_count: 8,
            cut_after: None,
            disc_before: 0,
            merged: vec![],
            registered_ms: cued,
            asset: Default::default(),
            cohorts: Vec::new(),
        }));
        seq.run_until(cued + 100);
        let mut reg = Registry::default();
        let mut viewer = Viewer::default();
        let mut ads = 0;
        let mut t = cued + 200;
        while t < cued + 40_000 {
            let out = serve(&ch, &mut seq, "low", t, lag, Mode::Ssai);
            ads += out
                .lines()
                .filter(|l| l.starts_with("https://ads.test/"))
                .count();
            let errs = reg.check(&mut viewer, &out, ch.pdt);
            assert!(errs.is_empty(), "lag {lag} t={t}: {errs:?}\n{out}");
            t += 1000;
        }
        assert!(ads > 0, "lag {lag}: the break was never served");
    }
}
