//! DASH live rules over simulated time: a live DASH origin (the testkit's
//! `sim_dash`, SCTE-35 in MPD `EventStream`s, `$Number$` and `$Time$`
//! templates), the channel machine polling its MPD as its window
//! (`dash::window::to_hls`), edge nodes whose KV lags, and viewers and late
//! joiners whose every MPD goes through the DASH live validator
//! (`cf_ssai_testkit::validate_dash`, a parser of its own).

use cf_ssai_core::dash::{splice as dsplice, window, Mpd};
use cf_ssai_core::hls::media;
use cf_ssai_core::model::*;
use cf_ssai_core::scte35::cues::{self, SegmentationPolicy};
use cf_ssai_core::splice::edge::{self, Reads};
use cf_ssai_core::splice::{Mode, SpliceSettings, Variant};
use cf_ssai_testkit::driver::Driver;
use cf_ssai_testkit::edge::LaggingNode;
use cf_ssai_testkit::sim::{SimChannel, SimDialect};
use cf_ssai_testkit::sim_dash::{self, Cues, DashOptions, Template};
use cf_ssai_testkit::validate_dash as vd;

mod common;
use common::pod;

const ORIGIN: &str = "https://origin.test/live/dash/manifest.mpd";
const SELF: &str = "https://edge.test/o/c/manifest.mpd";

fn channel() -> SimChannel {
    SimChannel {
        cadence_ms: 1920,
        window: 15,
        // The MPD carries the cues; the HLS dialect is not read.
        dialect: SimDialect::Daterange,
        first_break: 24,
        break_every: 25,
        break_len: 8,
        ..SimChannel::default()
    }
}

/// The origin's window as the Channel DO's poller reads it.
/// What an origin's packager does to the simulator's MPD (`same`: nothing).
type Edit = fn(String, i64) -> String;

fn same(text: String, _now: i64) -> String {
    text
}

fn window_at(ch: &SimChannel, opts: &DashOptions, edit: Edit, now: i64) -> String {
    let text = edit(sim_dash::mpd(ch, opts, now), now);
    let mpd = Mpd::parse(&text).expect("the origin MPD parses");
    // Before the first segment is out, an empty window.
    window::to_hls(&mpd, &url::Url::parse(ORIGIN).unwrap(), now, 1920)
        .unwrap_or_else(|_| "#EXTM3U\n#EXT-X-TARGETDURATION:2\n".into())
}

/// The manifest worker's DASH path in process.
fn serve(
    ch: &SimChannel,
    opts: &DashOptions,
    edit: Edit,
    seq: &mut Driver,
    now: i64,
    lag: i64,
    mode: Mode,
) -> (String, String) {
    serve_as(ch, opts, edit, seq, now, lag, mode, "")
}

/// [`serve`] for a viewer of audience cohort `cohort`.
#[allow(clippy::too_many_arguments)]
fn serve_as(
    ch: &SimChannel,
    opts: &DashOptions,
    edit: Edit,
    seq: &mut Driver,
    now: i64,
    lag: i64,
    mode: Mode,
    cohort: &str,
) -> (String, String) {
    let text = edit(sim_dash::mpd(ch, opts, now), now);
    let mpd = Mpd::parse(&text).unwrap();
    let origin_url = url::Url::parse(ORIGIN).unwrap();
    let self_url = url::Url::parse(SELF).unwrap();
    let hls = window::to_hls(&mpd, &origin_url, now, 1920).unwrap();
    let m = media::parse(&hls).unwrap();
    let det = cues::detect(&m, &SegmentationPolicy::default());
    let variant = Variant {
        kind: TrackKind::Video,
        ..Default::default()
    };
    let settings = SpliceSettings {
        asset_list_prefix: "/o/c/interstitials/".into(),
        ..Default::default()
    };
    let req = edge::MediaRequest {
        origin: &hls,
        m: &m,
        events: &det.events,
        cadence_ms: ch.cadence_ms,
        examined: true,
        ahead: 0,
        cohort,
        playlist_url: &origin_url,
        variant: &variant,
        mode,
        settings: &settings,
    };
    let mut node = LaggingNode { seq, lag, now };
    let mut reads = Reads::default();
    let out = cf_ssai_testkit::edge::drive(&mut node, &mut reads, |r| {
        dsplice::serve(&req, &mpd, &self_url, None, r)
    });
    assert!(out.report.reasons.is_empty(), "{:?}", out.report.reasons);
    (out.mpd, text)
}

fn sequencer(ch: &SimChannel, opts: &DashOptions, edit: Edit) -> Driver {
    let mut d = Driver::new(
        ch.clone(),
        Box::new(|r| pod(&r.id, r.cadence_ms as f64 / 1000.0, true)),
    );
    let (c, o) = (ch.clone(), opts.clone());
    d.origin = Some(Box::new(move |now| window_at(&c, &o, edit, now)));
    d.start_poller();
    d
}

/// What a run saw.
#[derive(Debug, Default)]
struct Seen {
    ad_periods: std::collections::BTreeSet<String>,
    return_periods: std::collections::BTreeSet<String>,
    sgai_events: usize,
    snapshots: usize,
}

/// `secs` of the channel every `step` ms: three nodes (KV lag 0, 5 s and
/// 61 s) each with its own viewer, and a late joiner every few steps;
/// every MPD validated on its own, against the viewer's previous one and
/// against every other viewer's (one registry).
fn run(opts: DashOptions, mode: Mode, secs: i64, step: i64) -> Seen {
    run_edited(opts, same, mode, secs, step)
}

fn run_edited(opts: DashOptions, edit: Edit, mode: Mode, secs: i64, step: i64) -> Seen {
    let ch = channel();
    let mut seq = sequencer(&ch, &opts, edit);
    let mut reg = vd::Registry::default();
    let lags = [0i64, 5_000, 61_000];
    let mut prev: Vec<Option<vd::Mpd>> = lags.iter().map(|_| None).collect();
    let mut seen = Seen::default();
    let start = ch.epoch_ms + ch.cadence_ms as i64 * (ch.window as i64 + 1);
    let mut t = start;
    let mut k = 0;
    while t < start + secs * 1000 {
        seq.run_until(t);
        let mut viewers: Vec<(usize, i64, i64)> =
            lags.iter().enumerate().map(|(i, l)| (i, *l, t)).collect();
        if k % 5 == 2 {
            // A late joiner: a fresh viewer at another instant.
            viewers.push((usize::MAX, 30_000, t + 777));
        }
        for (vi, lag, at) in viewers {
            let (out, origin) = serve(&ch, &opts, edit, &mut seq, at, lag, mode);
            let mpd =
                vd::parse_at(&out, SELF, Some(at)).unwrap_or_else(|e| panic!("t={at}: {e}\n{out}"));
            let now_s = at as f64 / 1000.0;
            let mut errs = vd::snapshot_violations(&mpd, now_s);
            errs.extend(reg.check(&mpd));
            if let Some(Some(p)) = prev.get(vi) {
                errs.extend(vd::withdrawn(p, &mpd, now_s));
            }
            assert!(
                errs.is_empty(),
                "t={at} lag={lag}: {errs:#?}\n{out}\norigin:\n{origin}"
            );
            for p in &mpd.periods {
                if p.id.contains("~") {
                    seen.return_periods.insert(p.id.clone());
                } else if p.id != "p0" {
                    seen.ad_periods.insert(p.id.clone());
                }
            }
            seen.sgai_events += out.matches(dsplice::SCHEME_REPLACE).count();
            seen.snapshots += 1;
            if let Some(slot) = prev.get_mut(vi) {
                *slot = Some(mpd);
            }
        }
        k += 1;
        t += step;
    }
    seen
}

#[test]
fn ssai_periods_keep_the_live_rules_across_reloads_nodes_and_late_joiners() {
    for template in [Template::Number, Template::Time] {
        for cues in [Cues::XmlBin, Cues::Xml] {
            let opts = DashOptions {
                template,
                cues,
                ..Default::default()
            };
            let seen = run(opts, Mode::Ssai, 200, 960);
            // 200 s at a break every 48 s: four breaks, each with its ads
            // (two 10 s ads at 1.92 s = 5 segments each... cut to 8) and a
            // return.
            assert!(
                seen.ad_periods.len() >= 4,
                "{template:?} {cues:?}: {seen:?}"
            );
            assert!(
                seen.return_periods.len() >= 3,
                "{template:?} {cues:?}: {seen:?}"
            );
        }
    }
}

#[test]
fn sgai_events_are_stable_and_announce_every_break() {
    let seen = run(DashOptions::default(), Mode::Sgai, 150, 960);
    assert!(seen.sgai_events > 0, "{seen:?}");
    assert!(
        seen.ad_periods.is_empty(),
        "SGAI leaves the content Periods alone: {seen:?}"
    );
}

#[test]
fn an_mpd_without_a_break_in_view_passes_through() {
    // An origin with absolute URLs and no break: byte for byte.
    let ch = SimChannel {
        break_every: 0,
        ..channel()
    };
    let opts = DashOptions {
        cues: Cues::None,
        ..Default::default()
    };
    let now = ch.epoch_ms + 60_000;
    let text = sim_dash::mpd(&ch, &opts, now).replace(
        "<Period ",
        "<BaseURL>https://origin.test/live/dash/</BaseURL><Period ",
    );
    let mpd = Mpd::parse(&text).unwrap();
    let origin_url = url::Url::parse(ORIGIN).unwrap();
    let out = dsplice::splice(&dsplice::DashInput {
        mpd: &mpd,
        origin_url: &origin_url,
        self_url: &url::Url::parse(SELF).unwrap(),
        first_msn: 0,
        last_msn: 0,
        breaks: &[],
        before: None,
        mode: Mode::Ssai,
        settings: &SpliceSettings::default(),
        location: None,
        now_ms: now,
    });
    assert_eq!(out.mpd, text);
}

/// Bad input never panics: every prefix of a live MPD with a break in
/// view, and byte-level mutations of it, through the reader, the window
/// and the splice (with the break's entry).
#[test]
fn hostile_mpds_never_panic() {
    let ch = channel();
    let opts = DashOptions::default();
    let mut seq = sequencer(&ch, &opts, same);
    let at = ch.epoch_ms + (ch.first_break as i64 + 5) * ch.cadence_ms as i64 + 300;
    seq.run_until(at);
    let entries = seq.machine.breaks.entries.clone();
    assert!(!entries.is_empty(), "a break is registered");
    let text = sim_dash::mpd(&ch, &opts, at);
    let origin = url::Url::parse(ORIGIN).unwrap();
    let me = url::Url::parse(SELF).unwrap();
    let settings = SpliceSettings::default();
    let run = |t: &str| {
        let Ok(mpd) = Mpd::parse(t) else { return };
        let _ = window::to_hls(&mpd, &origin, at, 1920);
        for mode in [Mode::Ssai, Mode::Sgai] {
            let _ = dsplice::splice(&dsplice::DashInput {
                mpd: &mpd,
                origin_url: &origin,
                self_url: &me,
                first_msn: 0,
                last_msn: u64::MAX / 2,
                breaks: &cf_ssai_core::splice::EntryRef::all(&entries),
                before: entries.first().map(|e| &e.record),
                mode,
                settings: &settings,
                location: Some("https://edge.test/x?a=1&b=<2>"),
                now_ms: at,
            });
        }
    };
    for end in (0..text.len()).filter(|i| text.is_char_boundary(*i)) {
        run(&text[..end]);
    }
    // A deterministic stream of single-byte changes (xorshift).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes = text.as_bytes();
    let specials = b"<>/\"'=&$%-0123456789 ".as_slice();
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut b = bytes.to_vec();
        let i = (x as usize) % b.len();
        b[i] = specials[(x >> 32) as usize % specials.len()];
        if let Ok(t) = std::str::from_utf8(&b) {
            run(t);
        }
    }
}

/// `S@r="-1"` (repeat until the next `S` or now): the timeline a piece
/// keeps runs to the request's instant, not one segment.
#[test]
fn open_ended_timelines_keep_every_segment() {
    fn open_ended(text: String, _now: i64) -> String {
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(" r=\"") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 4..];
            let end = after.find('"').unwrap();
            out.push_str(" r=\"-1\"");
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
    let seen = run_edited(DashOptions::default(), open_ended, Mode::Ssai, 120, 960);
    assert!(seen.ad_periods.len() >= 2, "{seen:?}");
    assert!(!seen.return_periods.is_empty(), "{seen:?}");
}

/// Packagers keep a Period's SCTE-35 events long after their break: an
/// event over before the window is history, never a new break (one
/// decision per break however long the origin repeats it).
#[test]
fn old_events_in_the_mpd_are_not_breaks_again() {
    fn keeps_first_event(text: String, _now: i64) -> String {
        let ch = channel();
        let pts = ch.first_break * ch.cadence_ms * 90;
        let dur = ch.break_len * ch.cadence_ms * 90;
        let section = cf_ssai_core::scte35::encode(&cf_ssai_core::scte35::CueSpec::SpliceInsert {
            event_id: 1000,
            out_of_network: true,
            pts_time: Some(pts),
            duration: Some(dur),
            auto_return: true,
            unique_program_id: 1,
        });
        let event = format!(
            "<EventStream schemeIdUri=\"urn:scte:scte35:2014:xml+bin\" timescale=\"90000\"><Event presentationTime=\"{pts}\" duration=\"{dur}\" id=\"1000\"><scte35:Signal><scte35:Binary>{}</scte35:Binary></scte35:Signal></Event></EventStream>",
            cf_ssai_core::scte35::to_base64(&section)
        );
        text.replacen("<AdaptationSet", &format!("{event}<AdaptationSet"), 1)
    }
    let ch = channel();
    let opts = DashOptions::default();
    let mut seq = sequencer(&ch, &opts, keeps_first_event);
    // Long enough for the first break to be pruned from the machine
    // (keep_ms after its end) with the origin still repeating its event.
    let end = ch.epoch_ms + 15 * 60_000;
    seq.run_until(end);
    let first: Vec<_> = seq
        .asked
        .iter()
        .filter(|(id, _)| id.ends_with("1000"))
        .collect();
    assert_eq!(
        first.len(),
        1,
        "one decision for the first break: {:?}",
        seq.asked
    );
}

/// Addressable breaks on DASH: each cohort's MPD carries its own pod's ad
/// Periods, every cohort's MPDs keep the live rules across reloads and
/// nodes, and all cohorts agree on the content (the return Periods' ids
/// and starts).
#[test]
fn cohorts_get_their_own_ad_periods_and_keep_the_live_rules() {
    fn tagged(r: &BreakRecord, tag: &str, ads: usize) -> Pod {
        let mut p = pod(&r.id, r.cadence_ms as f64 / 1000.0, true);
        p.items.truncate(ads);
        for item in &mut p.items {
            for rend in &mut item.renditions {
                for s in &mut rend.segments {
                    s.uri = s
                        .uri
                        .replace("https://ads.test/", &format!("https://ads.test/{tag}/"));
                }
                rend.init_uri = rend
                    .init_uri
                    .as_ref()
                    .map(|u| u.replace("https://ads.test/", &format!("https://ads.test/{tag}/")));
            }
        }
        p
    }
    let ch = channel();
    let opts = DashOptions::default();
    let mut seq = sequencer(&ch, &opts, same);
    seq.decide_cohort = Some(Box::new(|r, v| match v.cohort.as_str() {
        "aaaa0001" => Some(tagged(r, "a", 1)),
        "bbbb0002" => Some(tagged(r, "b", 2)),
        _ => None,
    }));
    let cohorts = ["", "aaaa0001", "bbbb0002"];
    for c in &cohorts[1..] {
        let viewer = cf_ssai_core::ads::request::Viewer {
            cohort: (*c).into(),
            ..Default::default()
        };
        seq.feed(cf_ssai_core::channel::Input::CohortSeen { viewer });
    }
    let lags = [0i64, 5_000, 61_000];
    let mut regs: Vec<vd::Registry> = cohorts.iter().map(|_| vd::Registry::default()).collect();
    let mut returns: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut ads = [(0usize, 0usize, 0usize); 3];
    let start = ch.epoch_ms + ch.cadence_ms as i64 * (ch.window as i64 + 1);
    let mut t = start;
    while t < start + 150_000 {
        seq.run_until(t);
        for lag in lags {
            for (ci, c) in cohorts.iter().enumerate() {
                let (out, _) = serve_as(&ch, &opts, same, &mut seq, t, lag, Mode::Ssai, c);
                let mpd = vd::parse_at(&out, SELF, Some(t)).unwrap();
                let mut errs = vd::snapshot_violations(&mpd, t as f64 / 1000.0);
                errs.extend(regs[ci].check(&mpd));
                assert!(
                    errs.is_empty(),
                    "t={t} cohort={c:?} lag={lag}: {errs:#?}\n{out}"
                );
                for p in mpd.periods.iter().filter(|p| p.id.contains('~')) {
                    returns
                        .entry(p.id.clone())
                        .or_default()
                        .insert(format!("{:?}", p.start));
                }
                ads[ci].0 += out.matches("https://ads.test/a/").count();
                ads[ci].1 += out.matches("https://ads.test/b/").count();
                ads[ci].2 += out.matches("https://ads.test/adA/").count();
            }
        }
        t += 960;
    }
    assert!(returns.len() >= 2, "{returns:?}");
    assert!(
        returns.values().all(|starts| starts.len() == 1),
        "every cohort returns to the content at the same Period start: {returns:?}"
    );
    assert!(
        ads[0].2 > 0 && ads[0].0 == 0 && ads[0].1 == 0,
        "default {:?}",
        ads[0]
    );
    assert!(
        ads[1].0 > 0 && ads[1].1 == 0 && ads[1].2 == 0,
        "cohort a {:?}",
        ads[1]
    );
    assert!(
        ads[2].1 > 0 && ads[2].0 == 0 && ads[2].2 == 0,
        "cohort b {:?}",
        ads[2]
    );
}
