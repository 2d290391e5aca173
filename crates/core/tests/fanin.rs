//! Fan-in at edge scale, simulated with the real playback logic: L
//! locations, V viewers spread over them reloading every target duration,
//! each location's KV copy lagging by 0–60 s, a break every minute. Each
//! request goes through the manifest worker's own rules (`core::splice::edge::playlist`): the
//! location's shared-playlist cache (≤ half a target duration), else the KV
//! view if it vouches for the window, else the location's copy of the DO's
//! answer (≤ 1 s), else the Channel DO (counted), which is the real channel
//! machine. Every playlist a location produces is validated against the
//! live rules (one registry across all locations, one viewer per
//! location), so the figures are for output that is also correct.
//!
//! `cargo test --release -p cf-ssai-core --test fanin -- --ignored --nocapture`
//! prints the table in the README; the quick case runs with every
//! `cargo test`.

mod common;

use cf_ssai_core::channel::Input;
use cf_ssai_core::hls::media;
use cf_ssai_core::model::{ChannelBreaks, ChannelView, Pod};
use cf_ssai_core::scte35::cues::{self, SegmentationPolicy};
use cf_ssai_core::splice::edge::{self, DoQuery, PodKey, Source};
use cf_ssai_core::splice::{Mode, SpliceSettings, Variant};
use cf_ssai_testkit::driver::Driver;
use cf_ssai_testkit::edge::EdgeIo;
use cf_ssai_testkit::sim::SimChannel;
use cf_ssai_testkit::validate::{Registry, Viewer};

/// The Channel DO: the testkit's driver of the channel machine (its poller
/// on the machine's alarms, decisions answered at once, every KV write
/// kept with its instant), and the calls viewers' requests made to it.
struct Do {
    d: Driver,
    calls: u64,
}

struct Location {
    lag_ms: i64,
    /// What the location keeps per audience cohort.
    cohorts: Vec<Kept>,
}

/// A location's caches for one cohort (keyed by cohort in the worker).
#[derive(Default)]
struct Kept {
    /// (written at, playlist) — the shared-playlist cache.
    playlist: Option<(i64, String)>,
    /// (written at, answer) — the DO-answer cache.
    answer: Option<(i64, ChannelBreaks)>,
    viewer: Viewer,
}

/// One location serving one request: its lagged KV, its DO-answer cache,
/// the one Channel DO.
struct Node<'a> {
    dobj: &'a mut Do,
    lag_ms: i64,
    kept: &'a mut Kept,
    now: i64,
}

impl EdgeIo for Node<'_> {
    fn view(&mut self) -> Option<ChannelView> {
        self.dobj.d.kv.view(self.now, self.lag_ms).cloned()
    }
    fn pod(&mut self, id: &PodKey) -> Option<Pod> {
        self.dobj.d.kv.pod(self.now, self.lag_ms, id).cloned()
    }
    fn cached_answer(&mut self) -> Option<ChannelBreaks> {
        let ttl = i64::from(edge::DO_ANSWER_TTL_S) * 1000;
        self.kept
            .answer
            .as_ref()
            .filter(|(at, _)| self.now - at < ttl)
            .map(|(_, b)| b.clone())
    }
    fn ask_do(&mut self, q: &DoQuery) -> Option<ChannelBreaks> {
        self.dobj.calls += 1;
        self.dobj.d.run_until(self.now);
        self.dobj.d.feed(q.input());
        let b = self.dobj.d.machine.breaks.for_cohort(&q.cohort);
        self.kept.answer = Some((self.now, b.clone()));
        Some(b)
    }
}

#[derive(Debug, Default)]
struct Figures {
    requests: u64,
    do_calls: u64,
    from_playlist_cache: u64,
    from_view: u64,
    from_answer: u64,
    ad_segments: u64,
    seconds: f64,
    /// Breaks decided, and the decision calls made for them (the default
    /// audience's and each cohort's).
    breaks: u64,
    decisions: u64,
    /// The largest binary view any location read (bytes).
    view_bytes: usize,
}

/// The cohort ids of a run: the default audience ("") when `cohorts` is
/// 0, else `cohorts` named ones.
fn cohort_ids(cohorts: usize) -> Vec<String> {
    if cohorts == 0 {
        return vec![String::new()];
    }
    (0..cohorts)
        .map(|i| format!("{:08x}", 0xc0ff_ee00u32 + i as u32))
        .collect()
}

fn simulate(locations: usize, viewers: u64, secs: i64, seed: u64) -> Figures {
    simulate_cohorts(locations, viewers, secs, seed, 0)
}

/// `cohorts`: viewers spread over this many audience cohorts, each with a
/// pod of its own per break (0: everyone the default audience).
fn simulate_cohorts(
    locations: usize,
    viewers: u64,
    secs: i64,
    seed: u64,
    cohorts: usize,
) -> Figures {
    let ch = SimChannel {
        cadence_ms: 2000,
        window: 6,
        break_every: 30, // one break a minute
        break_len: 15,
        first_break: 12,
        ..Default::default()
    };
    let td = 2000i64;
    let mut rng = seed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let ids = cohort_ids(cohorts);
    let mut locs: Vec<Location> = (0..locations)
        .map(|_| Location {
            lag_ms: (next() % 60_001) as i64,
            cohorts: ids.iter().map(|_| Kept::default()).collect(),
        })
        .collect();
    // Viewers: location, cohort and reload phase within a target duration.
    let per_tick_step = 100i64;
    let phases = (td / per_tick_step) as usize;
    let mut requests_at: Vec<Vec<Vec<u64>>> = vec![vec![vec![0; ids.len()]; locations]; phases];
    for _ in 0..viewers {
        let l = (next() % locations as u64) as usize;
        let c = (next() % ids.len() as u64) as usize;
        let phase = (next() % phases as u64) as usize;
        requests_at[phase][l][c] += 1;
    }
    let decisions = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let counted = std::rc::Rc::clone(&decisions);
    let mut d = Driver::new(
        ch.clone(),
        Box::new(move |r| {
            counted.set(counted.get() + 1);
            common::pod(&r.id, r.cadence_ms as f64 / 1000.0, false)
        }),
    );
    let counted = std::rc::Rc::clone(&decisions);
    d.decide_cohort = Some(Box::new(move |r, v| {
        counted.set(counted.get() + 1);
        let mut p = common::pod(&r.id, r.cadence_ms as f64 / 1000.0, false);
        // Each cohort its own creatives (and so its own URIs).
        for item in &mut p.items {
            for r in &mut item.renditions {
                for s in &mut r.segments {
                    s.uri = s
                        .uri
                        .replace("ads.test/", &format!("ads.test/{}/", v.cohort));
                }
            }
        }
        Some(p)
    }));
    d.policy.max_cohorts = ids.len();
    let mut dobj = Do { d, calls: 0 };
    let mut regs: Vec<Registry> = ids.iter().map(|_| Registry::default()).collect();
    let mut f = Figures::default();
    let variant = &ch.variants[0];
    let url = url::Url::parse("https://origin.test/live/low/index.m3u8").unwrap();
    let settings = SpliceSettings {
        asset_list_prefix: "/o/c/interstitials/".into(),
        ..Default::default()
    };
    let start = ch.epoch_ms + td * (ch.window as i64 + 1);
    let mut t = start;
    dobj.d.run_until(start);
    dobj.d.start_poller();
    while t < start + secs * 1000 {
        // The poller, on the alarms the machine sets.
        dobj.d.run_until(t);
        // Edges report each cohort with viewers about once a minute.
        if (t - start) % 60_000 == 0 {
            for c in ids.iter().filter(|c| !c.is_empty()) {
                let viewer = cf_ssai_core::ads::request::Viewer {
                    cohort: c.clone(),
                    ..Default::default()
                };
                dobj.d.feed(Input::CohortSeen { viewer });
            }
        }
        let tick = (((t - start) / per_tick_step) as usize) % requests_at.len();
        for (li, loc) in locs.iter_mut().enumerate() {
            for (ci, cohort) in ids.iter().enumerate() {
                let n = requests_at[tick][li][ci];
                if n == 0 {
                    continue;
                }
                let kept = &mut loc.cohorts[ci];
                f.requests += n;
                let max_age = td / 2;
                if kept
                    .playlist
                    .as_ref()
                    .is_some_and(|(at, _)| t - at < max_age)
                {
                    f.from_playlist_cache += n;
                    continue;
                }
                // A miss: one request does the work; the location's other
                // requests of the cohort this instant read what it cached.
                f.from_playlist_cache += n - 1;
                let origin = ch.media(&variant.name, t);
                let m = media::parse(&origin).unwrap();
                let events = cues::detect(&m, &SegmentationPolicy::default()).events;
                let variant_info = Variant {
                    bandwidth: Some(variant.bandwidth),
                    codecs: Some(variant.codecs.clone()),
                    kind: Default::default(),
                };
                let req = edge::MediaRequest {
                    origin: &origin,
                    m: &m,
                    events: &events,
                    cadence_ms: td as u64,
                    examined: true,
                    ahead: 0,
                    cohort,
                    playlist_url: &url,
                    variant: &variant_info,
                    mode: Mode::Ssai,
                    settings: &settings,
                };
                if let Some(v) = dobj.d.kv.view(t, loc.lag_ms) {
                    f.view_bytes = f.view_bytes.max(cf_ssai_core::wire::encode_view(v).len());
                }
                let mut node = Node {
                    dobj: &mut dobj,
                    lag_ms: loc.lag_ms,
                    kept: &mut *kept,
                    now: t,
                };
                let served = cf_ssai_testkit::edge::serve(&mut node, &req);
                match served.source {
                    Source::View => f.from_view += 1,
                    Source::CachedAnswer => f.from_answer += 1,
                    Source::Do => f.do_calls += 1,
                    Source::Unavailable => unreachable!("the simulated DO always answers"),
                }
                let out = served.output.playlist;
                let ads = out
                    .lines()
                    .filter(|l| l.starts_with("https://ads.test/") && !l.contains("slate"));
                for l in ads {
                    f.ad_segments += 1;
                    // A cohort's viewers get its own creatives, only those.
                    let own = !cohort.is_empty() && l.contains(&format!("/{cohort}/"));
                    assert!(cohort.is_empty() || own, "cohort {cohort} served {l}");
                }
                let errs = regs[ci].check(&mut kept.viewer, &out, true);
                assert!(
                    errs.is_empty(),
                    "t={t} cohort {cohort:?} location lag {}: {errs:?}\n{out}",
                    loc.lag_ms
                );
                kept.playlist = Some((t, out));
            }
        }
        t += per_tick_step;
    }
    f.seconds = secs as f64;
    f.breaks = dobj.d.history.len() as u64;
    f.decisions = decisions.get();
    f
}

fn report(l: usize, v: u64, f: &Figures) {
    println!(
        "| {l} | {v} | {:.0} | {:.2} | {:.4} | {:.1} % |",
        f.requests as f64 / f.seconds,
        f.do_calls as f64 / f.seconds,
        f.do_calls as f64 / f.seconds / l as f64,
        100.0 * (1.0 - f.do_calls as f64 / f.requests.max(1) as f64),
    );
}

#[test]
fn fan_in_is_bounded_by_locations_quick() {
    for (l, v) in [(1usize, 1u64), (1, 1000), (30, 10_000)] {
        let f = simulate(l, v, 180, 7);
        assert!(f.ad_segments > 0, "breaks were spliced: {f:?}");
        let per_s = f.do_calls as f64 / f.seconds;
        // Goal: DO calls per second ≤ L whatever V.
        assert!(
            per_s <= l as f64,
            "L={l} V={v}: {per_s:.2} DO calls/s > {l}: {f:?}"
        );
    }
}

/// Addressable breaks at edge scale: 10,000 viewers over 8 cohorts across
/// 50 locations. Ad-server calls per break are the cohorts (plus the
/// default audience's one), not the viewers; DO calls per second stay
/// within locations × cohorts; every cohort's stream keeps the live rules
/// and shows only its own ads; the view every request reads stays small.
#[test]
fn cohorts_cost_decisions_per_cohort_not_per_viewer() {
    let (l, v, c) = (50usize, 10_000u64, 8usize);
    let f = simulate_cohorts(l, v, 180, 5, c);
    assert!(f.ad_segments > 0, "breaks were spliced: {f:?}");
    assert!(f.breaks >= 2, "{f:?}");
    assert_eq!(
        f.decisions,
        f.breaks * (c as u64 + 1),
        "one decision per (break, cohort) and the default's: {f:?}"
    );
    let per_s = f.do_calls as f64 / f.seconds;
    assert!(per_s <= (l * c) as f64, "{per_s:.2} DO calls/s: {f:?}");
    assert!(f.view_bytes <= 2048, "the view grew to {} B", f.view_bytes);
    println!(
        "L={l} V={v} cohorts={c}: {} breaks, {} decisions ({} per break), {per_s:.2} DO calls/s, view ≤ {} B, {:.1} % served without the DO",
        f.breaks,
        f.decisions,
        f.decisions / f.breaks.max(1),
        f.view_bytes,
        100.0 * (1.0 - f.do_calls as f64 / f.requests.max(1) as f64)
    );
}

#[test]
#[ignore = "the README's table: run in release"]
fn fan_in_table() {
    println!(
        "| L | V | requests/s | DO calls/s | DO calls/s per location | served without the DO |"
    );
    println!("|---|---|---|---|---|---|");
    for l in [1usize, 30, 300] {
        for v in [1u64, 1000, 100_000] {
            let f = simulate(l, v, 300, 11);
            report(l, v, &f);
            assert!(f.do_calls as f64 / f.seconds <= l as f64);
        }
    }
}
