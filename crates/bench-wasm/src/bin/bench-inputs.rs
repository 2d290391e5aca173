//! Inputs for the wasm pipeline benchmark: a demo-rate channel (1.92 s
//! segments, a 30.72 s break every 76.8 s, pods shaped as the demo's: two
//! ads and the slate in both containers, muxed, video-only and audio) run through the real channel machine for
//! N hours; writes the KV values one playlist request reads (the view, the
//! pod of the break in the window), the pre-view KV value (all of the last
//! hour's breaks with their pods), and an origin window inside a break.
//!
//! It also runs the same channel through the testkit's driver of the
//! Channel DO (polls at the alarm times the machine asks for, every effect
//! carried out) and reports the DO storage written in the last hour, in
//! the per-key layout the object writes now and in the single-value
//! layout before it (`scripts/do-storage.sh` prints them).
//!
//! With COHORTS, that many audience cohorts watch the channel (reported
//! every ten minutes), each break gets a pod per cohort (the same shape,
//! its own URIs), and the request is one cohort's viewer's (`cohort.txt`).
//!
//! For 1 hour without cohorts it also writes, in `OUT_DIR/dash/`, the
//! inputs of a DASH MPD request on a DASH channel at the same rate
//! (10-segment live MPD, 1.92 s segments, a 15.36 s break every 76.8 s;
//! the testkit's `sim_dash` origin; CMAF pods, `dash_pod`) run through the
//! same machine for the hour, its window read as the poller reads an MPD: the origin MPD 6 segments into
//! the last break (`manifest.mpd`) and the KV values the edge reads for
//! it, binary (`view.bin`, the lean `pod.bin`); the MPD and view at a
//! quiet instant, no break in view (`quiet.mpd`, `quiet-view.bin`); the
//! request instants in the printed `dash` object.
//!
//! `bench-inputs HOURS OUT_DIR [COHORTS]`

use cf_ssai_core::channel::sequencer::BreakPolicy;
use cf_ssai_core::channel::{Channel, Effect, Input};
use cf_ssai_core::hls::media;
use cf_ssai_core::model::*;
use cf_ssai_core::scte35::cues::{self, SegmentationPolicy};
use cf_ssai_core::splice::edge;
use cf_ssai_testkit::driver::{Driver, Written};
use cf_ssai_testkit::sim::{SimChannel, SimDialect};

/// Serialized size of anything we write.
mod erased {
    pub trait Ser {
        fn len(&self) -> usize;
    }
    impl<T: serde::Serialize> Ser for T {
        fn len(&self) -> usize {
            serde_json::to_vec(self).map_or(0, |v| v.len())
        }
    }
}

/// A pod shaped as the demo channel's really are (what `cf-ssai ads
/// ingest` registers with the default ladder, read back through the
/// decision service): two ads and the slate, each in both containers at
/// 640x360 and 960x540, muxed and video-only, plus the audio-only
/// rendition (10 renditions each); ad segment URIs on the local media
/// route; each ad with the tracking a VAST ad server sends (impressions,
/// quartiles, error) and the decision's reasons.
fn pod(id: &str) -> Pod {
    shaped_pod(
        id,
        30.72,
        &[("ad1", 15.0), ("ad2", 9.6)],
        5.12,
        "ad ad3 skipped: does not fit the 30.72 s break (15.0 s left)",
        false,
    )
}

/// The DASH channel's pod of a 15.36 s break: the same shape, demuxed
/// CMAF only (what a DASH Period can play: fMP4 video-only at the two
/// rungs and the audio-only rendition, 3 renditions each), two ads that
/// fill the break (9.6 s and 5.76 s) and the slate.
fn dash_pod(id: &str) -> Pod {
    shaped_pod(
        id,
        15.36,
        &[("ad1", 9.6), ("ad2", 5.76)],
        0.0,
        "ad ad3 skipped: does not fit the 15.36 s break (0.0 s left)",
        true,
    )
}

/// A pod of `items` (ad, seconds) in a break of `duration_s`; `cmaf`: the
/// fMP4 video-only and audio-only renditions alone.
fn shaped_pod(
    id: &str,
    duration_s: f64,
    items: &[(&str, f64)],
    fill_s: f64,
    reason: &str,
    cmaf: bool,
) -> Pod {
    let rendition = |ad: &str, bw: u64, kind: TrackKind, fmp4: bool, count: usize| {
        let c = if fmp4 { "Fmp4" } else { "Ts" };
        let dir = format!("http://127.0.0.1:8787/media/demo/ads/{ad}/{bw}/{kind:?}-{c}");
        AdRendition {
            bandwidth: match kind {
                TrackKind::Audio => 128_000,
                TrackKind::Video => bw - 128_000,
                _ => bw,
            },
            codecs: Some(
                match kind {
                    TrackKind::Audio => "mp4a.40.2",
                    TrackKind::Video => "avc1.4d401f",
                    _ => "avc1.4d401f,mp4a.40.2",
                }
                .into(),
            ),
            resolution: (kind != TrackKind::Audio)
                .then(|| if bw > 1_000_000 { "960x540" } else { "640x360" }.into()),
            kind,
            playlist_url: format!("{dir}/index.m3u8"),
            cadence_s: 1.92,
            segments: (0..count)
                .map(|i| AdSegment {
                    uri: format!("{dir}/seg{i}.{}", if fmp4 { "m4s" } else { "ts" }),
                    duration: 1.92,
                    byterange: None,
                })
                .collect(),
            init_uri: fmp4.then(|| format!("{dir}/init.mp4")),
            key: None,
            memo: Default::default(),
        }
    };
    let ladder = |ad: &str, count: usize| -> Vec<AdRendition> {
        let mut out = Vec::new();
        for (i, bw) in [900_000u64, 1_800_000].into_iter().enumerate() {
            let mut kinds = if cmaf {
                vec![TrackKind::Video]
            } else {
                vec![TrackKind::Muxed, TrackKind::Video]
            };
            if i == 0 {
                kinds.push(TrackKind::Audio);
            }
            for kind in kinds {
                for fmp4 in [false, true] {
                    if fmp4 || !cmaf {
                        out.push(rendition(ad, bw, kind, fmp4, count));
                    }
                }
            }
        }
        out
    };
    let url = |ad: &str, ev: &str| {
        format!("https://track.adserver.example/v1/ev?e={ev}&ad={ad}&cb=[CACHEBUSTING]&ts=[TIMESTAMP]&sid=8f14e45fceea167a")
    };
    let item = |ad: &str, secs: f64| PodItem {
        ad_id: ad.into(),
        creative_id: format!("{ad}-creative"),
        universal_ad_id: Some(format!("ad-id.org:{ad}")),
        duration_s: secs,
        renditions: ladder(ad, ad_segments(secs_to_ms(secs), 1920) as usize),
        tracking: Tracking {
            impression: vec![url(ad, "impression"), url(ad, "impression-3p")],
            start: vec![url(ad, "start")],
            first_quartile: vec![url(ad, "firstQuartile")],
            midpoint: vec![url(ad, "midpoint")],
            third_quartile: vec![url(ad, "thirdQuartile")],
            complete: vec![url(ad, "complete")],
            error: vec![url(ad, "error&code=[ERRORCODE]")],
        },
    };
    Pod {
        pod_id: format!("pod-{id}"),
        break_id: id.into(),
        duration_s,
        items: items.iter().map(|(ad, secs)| item(ad, *secs)).collect(),
        slate: Slate {
            slate_id: "slate".into(),
            renditions: ladder("slate", 3),
        },
        fill_s,
        source: PodSource::Library,
        reasons: vec![PodReason::from(reason.to_string())],
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hours: i64 = args.first().and_then(|h| h.parse().ok()).ok_or("HOURS")?;
    let out = std::path::PathBuf::from(args.get(1).ok_or("OUT_DIR")?);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let cohorts: Vec<String> = (0..args.get(2).and_then(|c| c.parse::<u32>().ok()).unwrap_or(0))
        .map(|i| format!("{:08x}", 0xc0ff_ee00u32 + i))
        .collect();
    let ch = SimChannel {
        cadence_ms: 1920,
        window: 6,
        break_every: 40,
        break_len: 16,
        first_break: 12,
        ..Default::default()
    };
    let bounded = BreakPolicy::default();
    let hour = BreakPolicy {
        keep_ms: 3_600_000,
        ..BreakPolicy::default()
    };
    let mut new = Channel::default();
    let mut old = Channel::default();
    let segs = hours * 3_600_000 / 1920;
    // End inside a break: 3 segments after an anchor.
    let k = (segs as u64).saturating_sub(ch.first_break) / ch.break_every;
    let end_msn = ch.first_break + k * ch.break_every + 3;
    let mut pods = std::collections::HashMap::new();
    // Writes over the last hour: [new, old] × (KV writes, KV bytes, DO
    // storage writes, DO bytes). Old = the pre-view design: the whole
    // ChannelBreaks (an hour of pods) to KV and DO storage on every change.
    let mut writes = [[0u64; 4]; 2];
    let last_hour_from = end_msn.saturating_sub(3_600_000 / 1920);
    for msn in 1..=end_msn {
        let now = ch.pdt_of(msn + 1) + 10;
        let origin = ch.media("low", now);
        let m = media::parse(&origin).map_err(|e| e.to_string())?;
        let det = cues::detect(&m, &SegmentationPolicy::default());
        if msn % 300 == 1 {
            for c in &cohorts {
                let viewer = cf_ssai_core::ads::request::Viewer {
                    cohort: c.clone(),
                    ..Default::default()
                };
                new.handle(Input::CohortSeen { viewer }, &bounded, now);
            }
        }
        for (which, (machine, policy)) in [(&mut new, &bounded), (&mut old, &hour)]
            .into_iter()
            .enumerate()
        {
            let input = Input::examined(&m, det.events.clone(), 1920);
            let mut effects = machine.handle(input, policy, now).effects;
            let mut i = 0;
            while let Some(e) = effects.get(i).cloned() {
                i += 1;
                if let Effect::Decide(r) = &e {
                    let p = pod(&r.id);
                    pods.insert(r.id.clone(), p.clone());
                    let cohort_pods = r
                        .cohorts
                        .iter()
                        .map(|c| (c.clone(), cohort_pod(&p, c)))
                        .collect();
                    let decided = Input::Decided {
                        break_id: r.id.clone(),
                        pod: p,
                        cohort_pods,
                    };
                    effects.extend(machine.handle(decided, policy, now).effects);
                }
                if msn < last_hour_from {
                    continue;
                }
                let w = &mut writes[which];
                let size = |v: &dyn erased::Ser| v.len() as u64;
                match (&e, which) {
                    (Effect::Publish, 0) => {
                        w[0] += 1;
                        w[1] += size(&machine.view());
                    }
                    (Effect::History(entry), 0) => {
                        w[0] += 1;
                        w[1] += size(&entry.pod);
                    }
                    (Effect::Publish, _) => {
                        w[0] += 1;
                        w[1] += size(&machine.breaks);
                    }
                    (Effect::Persist, _) => {
                        w[2] += 1;
                        w[3] += size(&*machine);
                    }
                    _ => {}
                }
            }
        }
    }
    let now = ch.pdt_of(end_msn + 1) + 10;
    let origin = ch.media("low", now);
    let view = new.view();
    let m = media::parse(&origin).map_err(|e| e.to_string())?;
    let first = m.segments.first().map_or(0, |s| s.msn);
    let cohort = cohorts.first().cloned().unwrap_or_default();
    let (needed, _) = view.needed_for(first, end_msn, 0, &cohort);
    let record = needed.first().ok_or("no break in the window")?.0;
    let id = record.id.clone();
    let served_pod = if record.has_cohort(&cohort) {
        cohort_pod(&pods[&id], &cohort)
    } else {
        pods[&id].clone()
    };
    let write =
        |name: &str, text: &str| std::fs::write(out.join(name), text).map_err(|e| e.to_string());
    let view_json = serde_json::to_string(&view).map_err(|e| e.to_string())?;
    let pod_json = serde_json::to_string(&served_pod).map_err(|e| e.to_string())?;
    write("cohort.txt", &cohort)?;
    let full_json = serde_json::to_string(&old.breaks).map_err(|e| e.to_string())?;
    write("view.json", &view_json)?;
    write("pod.json", &pod_json)?;
    write("full.json", &full_json)?;
    write("origin.m3u8", &origin)?;
    let dash = if cohorts.is_empty() && hours == 1 {
        format!(",\"dash\":{}", dash_inputs(hours, &out.join("dash"))?)
    } else {
        String::new()
    };
    let [n, o] = writes;
    let (after, before, header_max) = do_storage(&ch, hours);
    println!(
        "{{\"kv_writes_per_hour\":[{},{}],\"kv_bytes_per_hour\":[{},{}],\"do_writes_per_hour\":[{},{}],\"do_bytes_per_hour\":[{},{}],\"do_storage_per_hour\":{{\"per_key\":{{\"writes\":{},\"bytes\":{},\"max_write\":{},\"max_header\":{header_max}}},\"single_value\":{{\"writes\":{},\"bytes\":{},\"max_write\":{}}}}},\"hours\":{hours},\"cohorts\":{},\"breaks_registered\":{},\"view_entries\":{},\"view_bytes\":{},\"pod_bytes\":{},\"old_entries\":{},\"old_bytes\":{}{dash}}}",
        n[0], o[0], n[1], o[1], n[2], o[2], n[3], o[3],
        after.writes, after.bytes, after.max_bytes,
        before.writes, before.bytes, before.max_bytes,
        cohorts.len(),
        pods.len(),
        view.entries.len(),
        view_json.len(),
        pod_json.len(),
        old.breaks.entries.len(),
        full_json.len(),
    );
    Ok(())
}

/// The DASH inputs (see the module's doc) in `dir`; returns their facts
/// as a JSON object.
fn dash_inputs(hours: i64, dir: &std::path::Path) -> Result<String, String> {
    use cf_ssai_core::dash::{window, Mpd};
    use cf_ssai_core::wire;
    use cf_ssai_testkit::sim_dash::{self, DashOptions};
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let ch = SimChannel {
        cadence_ms: 1920,
        window: 10,
        // The MPD's EventStream carries the cues; the HLS dialect is not
        // read (any but None).
        dialect: SimDialect::Daterange,
        break_every: 40,
        break_len: 8,
        first_break: 12,
        ..Default::default()
    };
    let opts = DashOptions::default();
    let origin_url = url::Url::parse(bench_wasm::DASH_ORIGIN).map_err(|e| e.to_string())?;
    let policy = BreakPolicy::default();
    let mut machine = Channel::default();
    let segs = hours * 3_600_000 / 1920;
    let k = (segs as u64).saturating_sub(ch.first_break) / ch.break_every;
    let anchor = ch.first_break + k * ch.break_every;
    // 6 segments into the break: its first six listed, the first ad's
    // Period whole, the second's being published.
    let end_msn = anchor + 5;
    // No break in view: the last one left the window, the next one is not
    // announced yet (signal_ahead 2).
    let quiet_msn = anchor - 3;
    // A poll and a request at the same instant: `live_msn` = msn.
    let at = |msn: u64| ch.pdt_of(msn + 1) + 10;
    let mut pods = std::collections::HashMap::new();
    let mut quiet = None;
    for msn in 1..=end_msn {
        let now = at(msn);
        let text = sim_dash::mpd(&ch, &opts, now);
        let mpd = Mpd::parse(&text).map_err(|e| e.to_string())?;
        // As the poller reads an MPD, with the default config's cadence
        // (0: derived from the window).
        let hls = window::to_hls(&mpd, &origin_url, now, 0).map_err(|e| e.to_string())?;
        let m = media::parse(&hls).map_err(|e| e.to_string())?;
        let det = cues::detect(&m, &SegmentationPolicy::default());
        let input = Input::examined(&m, det.events, ch.cadence_ms);
        let mut effects = machine.handle(input, &policy, now).effects;
        let mut i = 0;
        while let Some(e) = effects.get(i).cloned() {
            i += 1;
            if let Effect::Decide(r) = e {
                let p = dash_pod(&r.id);
                pods.insert(r.id.clone(), p.clone());
                let decided = Input::Decided {
                    break_id: r.id.clone(),
                    pod: p,
                    cohort_pods: Default::default(),
                };
                effects.extend(machine.handle(decided, &policy, now).effects);
            }
        }
        if msn == quiet_msn {
            quiet = Some((text, now, wire::encode_view(&machine.view())));
        }
    }
    let (quiet_mpd, quiet_now, quiet_view) = quiet.ok_or("no quiet instant")?;
    let now = at(end_msn);
    let text = sim_dash::mpd(&ch, &opts, now);
    let view = machine.view();
    let mpd = Mpd::parse(&text).map_err(|e| e.to_string())?;
    let hls = window::to_hls(&mpd, &origin_url, now, 0).map_err(|e| e.to_string())?;
    let m = media::parse(&hls).map_err(|e| e.to_string())?;
    let first = m.segments.first().map_or(0, |s| s.msn);
    let (needed, _) = view.needed_for(first, end_msn, 0, "");
    let record = needed.first().ok_or("no break in the DASH window")?.0;
    let id = record.id.clone();
    let pod = pods.get(&id).ok_or("the break has no pod")?;
    let view_bin = wire::encode_view(&view);
    let pod_bin = wire::encode_lean_pod(pod);
    // The request served natively as the wasm will: from the view, the
    // break's ads in their own Periods, no fallback.
    let serve = |text: &str, now: i64, view: &[u8], pod: Option<&[u8]>| {
        bench_wasm::serve_dash(text, now, |need, reads| match need {
            edge::Need::View => {
                reads.view = Some(wire::decode_view_as(view, Some("")).ok());
                true
            }
            edge::Need::Pods(ids) => match pod {
                Some(p) => {
                    for k in ids {
                        let decoded = wire::decode_pod(p).ok().map(std::rc::Rc::new);
                        reads.pods.insert(k.clone(), decoded);
                    }
                    true
                }
                None => false,
            },
            _ => false,
        })
    };
    let out = serve(&text, now, &view_bin, Some(&pod_bin))
        .ok_or("the DASH request is not served from the view")?;
    let periods = out.mpd.matches("<Period ").count();
    if !out.report.reasons.is_empty() || !out.mpd.contains(&format!("id=\"{id}-0\"")) {
        return Err(format!(
            "the DASH break is not spliced: {:?}",
            out.report.reasons
        ));
    }
    let q = serve(&quiet_mpd, quiet_now, &quiet_view, None)
        .ok_or("the quiet DASH request is not served from the view alone")?;
    if q.mpd.matches("<Period ").count() != 1 {
        return Err("the quiet DASH window has a break".into());
    }
    let write =
        |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).map_err(|e| e.to_string());
    write("manifest.mpd", text.as_bytes())?;
    write("view.bin", &view_bin)?;
    write("pod.bin", &pod_bin)?;
    write("quiet.mpd", quiet_mpd.as_bytes())?;
    write("quiet-view.bin", &quiet_view)?;
    // What the viewer gets (for inspection; not an input).
    write("served.mpd", out.mpd.as_bytes())?;
    Ok(format!(
        "{{\"now_ms\":{now},\"quiet_now_ms\":{quiet_now},\"breaks_registered\":{},\"view_entries\":{},\"view_bytes\":{},\"pod_bytes\":{},\"quiet_view_bytes\":{},\"mpd_bytes\":{},\"quiet_mpd_bytes\":{},\"out_bytes\":{},\"out_periods\":{periods},\"quiet_out_bytes\":{}}}",
        pods.len(),
        view.entries.len(),
        view_bin.len(),
        pod_bin.len(),
        quiet_view.len(),
        text.len(),
        quiet_mpd.len(),
        out.mpd.len(),
        q.mpd.len(),
    ))
}

/// A cohort's pod of a break: the same shape, its own creatives' URIs.
fn cohort_pod(p: &Pod, cohort: &str) -> Pod {
    let mut p = p.clone();
    for item in &mut p.items {
        item.creative_id = format!("{cohort}-{}", item.creative_id);
        for r in &mut item.renditions {
            for s in &mut r.segments {
                s.uri = s.uri.replace("/demo/ads/", &format!("/demo/ads/{cohort}/"));
            }
        }
    }
    p
}

/// The Channel DO's storage writes in the last of `hours`, driven as the
/// object drives the machine: (per-key layout, single-value layout before
/// it, the largest header written).
fn do_storage(ch: &SimChannel, hours: i64) -> (Written, Written, usize) {
    let mut d = Driver::new(ch.clone(), Box::new(|r| pod(&r.id)));
    d.start_poller();
    let start = ch.epoch_ms;
    let from = start + (hours - 1) * 3_600_000;
    d.run_until(from);
    let (a0, b0) = (d.storage.written, d.storage.legacy);
    let mut header_max = 0;
    let mut t = from;
    while t < start + hours * 3_600_000 {
        t += 60_000;
        d.run_until(t);
        header_max = header_max.max(
            d.storage
                .keys
                .get(cf_ssai_core::channel::store::HEADER)
                .map_or(0, |h| h.len() + 1),
        );
    }
    let since = |w: Written, w0: Written| Written {
        writes: w.writes - w0.writes,
        bytes: w.bytes - w0.bytes,
        max_bytes: w.max_bytes,
    };
    (
        since(d.storage.written, a0),
        since(d.storage.legacy, b0),
        header_max,
    )
}
