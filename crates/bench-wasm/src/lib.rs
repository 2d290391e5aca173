//! The playback path's per-request work, exactly as the manifest worker
//! does it between its KV reads and its response, compiled to wasm32 with
//! the workers' release profile and timed in V8 (the engine workerd runs)
//! by `scripts/bench-wasm.sh`:
//!
//! KV values decoded (the channel view, and the pod of each break the
//! window touches) → origin playlist parsed → cues detected → the view's
//! vouching checked → the breaks the window needs → splice and render, all
//! by `core::splice::edge::playlist`, the function the worker drives.
//! [`request_old`] is the same with the pre-view KV value (the
//! whole `ChannelBreaks`, every pod inline), for the before/after figure.
//! [`request_dash`] is the DASH path (`workers/manifest/src/dash.rs`): the
//! origin MPD read, its window as HLS, cues, the same edge reads, the
//! multi-period splice (`core::dash::splice::serve`).
//!
//! Exports a tiny C ABI (no wasm-bindgen): `alloc`, `run_new`, `run_old`,
//! `run_part`, `run_dash`.

use cf_ssai_core::control::config::ChannelConfig;
use cf_ssai_core::dash::{splice as dsplice, window, Mpd};
use cf_ssai_core::hls::media;
use cf_ssai_core::model::{ChannelBreaks, ChannelView, Pod, TrackKind};
use cf_ssai_core::scte35::cues::{self, SegmentationPolicy};
use cf_ssai_core::splice::edge::{self, Need, Reads, Source, Step};
use cf_ssai_core::splice::{Mode, SpliceSettings, Variant};
use cf_ssai_core::wire;
use std::rc::Rc;

const CADENCE_MS: u64 = 1920;

thread_local! {
    /// The audience cohort requests are served as (`set_cohort`).
    static COHORT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Serve the following requests as a viewer of this cohort ("" the
/// default audience).
#[no_mangle]
pub extern "C" fn set_cohort(ptr: *const u8, len: usize) {
    let c = slice(ptr, len).to_string();
    COHORT.with(|x| *x.borrow_mut() = c);
}

/// The request the manifest worker builds for a demo-rate channel's 360p
/// variant, and the core's edge driven as the worker drives it
/// (`splice::edge::playlist`), each read answered by `read` (KV values
/// decoded): the output's length, 0 when the reads cannot serve the window
/// without the DO (which the inputs are made to avoid).
/// The cohort requests are served as.
fn cohort() -> String {
    COHORT.with(|c| c.borrow().clone())
}

fn serve(origin: &str, read: impl Fn(&Need, &mut Reads) -> bool) -> usize {
    let cohort = cohort();
    let Ok(url) = url::Url::parse("https://origin.example/live/news/v360/index.m3u8") else {
        return 0;
    };
    let Ok(m) = media::parse(origin) else {
        return 0;
    };
    let events = cues::detect(&m, &SegmentationPolicy::default()).events;
    let settings = SpliceSettings {
        asset_list_prefix: "/demo/news/interstitials/".into(),
        ..Default::default()
    };
    let variant = Variant {
        bandwidth: Some(900_000),
        codecs: Some("avc1.42c01e,mp4a.40.2".into()),
        kind: Default::default(),
    };
    let req = edge::MediaRequest {
        origin,
        m: &m,
        events: &events,
        cadence_ms: CADENCE_MS,
        examined: true,
        ahead: 0,
        cohort: &cohort,
        playlist_url: &url,
        variant: &variant,
        mode: Mode::Ssai,
        settings: &settings,
    };
    let mut reads = Reads::default();
    loop {
        match edge::playlist(&req, &reads) {
            Step::Done(s) if s.source != Source::Unavailable => return s.output.playlist.len(),
            Step::Need(n) if read(&n, &mut reads) => {}
            _ => return 0,
        }
    }
}

/// One request served from KV: `view` and `pod` give what the edge reads
/// (decoded each time, or shared from an isolate's cache); the inputs are
/// made so that the view serves (no cached answer, no DO).
fn from_kv(
    origin: &str,
    view: impl Fn() -> Option<ChannelView>,
    pod: impl Fn() -> Option<Rc<Pod>>,
) -> usize {
    serve(origin, |need, reads| match need {
        Need::View => {
            reads.view = Some(view());
            true
        }
        Need::Pods(ids) => {
            for id in ids {
                reads.pods.insert(id.clone(), pod());
            }
            true
        }
        Need::CachedAnswer | Need::Do(_) => false,
    })
}

/// One request with the bounded view: the view and the pod of each break
/// the window needs decoded from their KV values as the edge asks for them.
pub fn request(view_json: &str, pod_json: &str, origin: &str) -> usize {
    from_kv(
        origin,
        || serde_json::from_str::<ChannelView>(view_json).ok(),
        || serde_json::from_str::<Pod>(pod_json).ok().map(Rc::new),
    )
}

/// One request with the binary KV values (`core::wire`): the view and the
/// lean pod decoded from their bytes as the edge asks for them.
pub fn request_bin(view: &[u8], pod: &[u8], origin: &str) -> usize {
    from_kv(
        origin,
        || wire::decode_view_as(view, Some(&cohort())).ok(),
        || wire::decode_pod(pod).ok().map(Rc::new),
    )
}

/// The binary values of the JSON ones the inputs carry: (view, lean pod).
fn binary(view_json: &str, pod_json: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let view: ChannelView = serde_json::from_str(view_json).ok()?;
    let pod: Pod = serde_json::from_str(pod_json).ok()?;
    Some((wire::encode_view(&view), wire::encode_lean_pod(&pod)))
}

/// One request as before the bounded view: the whole `ChannelBreaks`
/// (every pod inline), served as a location's cached DO answer is.
pub fn request_old(full_json: &str, origin: &str) -> usize {
    serve(origin, |need, reads| match need {
        Need::View => {
            reads.view = Some(None);
            true
        }
        Need::CachedAnswer => {
            reads.cached_answer = Some(serde_json::from_str::<ChannelBreaks>(full_json).ok());
            true
        }
        Need::Pods(_) | Need::Do(_) => false,
    })
}

/// The DASH channel's origin MPD (`bench-inputs` writes its windows).
pub const DASH_ORIGIN: &str = "https://origin.example/live/news/manifest.mpd";
/// The URL viewers get the spliced MPD from.
pub const DASH_SELF: &str = "https://edge.example/demo/news-dash/manifest.mpd";

/// One MPD request as the manifest worker's DASH path serves it
/// (`workers/manifest/src/dash.rs`, `manifest`) for a channel with the
/// default config, SSAI, the default audience, no session: the origin
/// MPD parsed, its window as an HLS media playlist at `now_ms`, parsed,
/// cues detected, the edge's reads answered by `read`, the multi-period
/// splice (`core::dash::splice::serve`). `None` when the MPD has no window
/// (the worker then serves the origin) or the reads cannot serve it
/// without the location's cached answer or the DO (which the inputs are
/// made to avoid).
pub fn serve_dash(
    text: &str,
    now_ms: i64,
    read: impl Fn(&Need, &mut Reads) -> bool,
) -> Option<dsplice::DashOutput> {
    CONFIG.with(|cfg| dash_with(cfg, text, now_ms, read))
}

thread_local! {
    /// The channel's config (the worker has it in hand: not timed).
    static CONFIG: ChannelConfig = ChannelConfig::default();
}

fn dash_with(
    cfg: &ChannelConfig,
    text: &str,
    now_ms: i64,
    read: impl Fn(&Need, &mut Reads) -> bool,
) -> Option<dsplice::DashOutput> {
    let origin_url = url::Url::parse(DASH_ORIGIN).ok()?;
    let self_url = url::Url::parse(DASH_SELF).ok()?;
    let mpd = Mpd::parse(text).ok()?;
    // As the worker: a window the HLS machinery cannot read is served as
    // the content (not timed here: the inputs always have one).
    let hls = window::to_hls(&mpd, &origin_url, now_ms, cfg.cadence_ms).ok()?;
    let m = media::parse(&hls).ok()?;
    let events = if cfg.scte35_enabled {
        cues::detect(&m, &cfg.segmentation).events
    } else {
        Vec::new()
    };
    let settings = cfg.splice_settings("/demo/news-dash/interstitials/".into());
    let variant = Variant {
        kind: TrackKind::Video,
        ..Default::default()
    };
    let mreq = edge::MediaRequest {
        origin: &hls,
        m: &m,
        events: &events,
        cadence_ms: if cfg.cadence_ms > 0 {
            cfg.cadence_ms
        } else {
            m.cadence_ms()
        },
        examined: !(cfg.scte35_enabled && cfg.cue_source.inband()),
        ahead: u64::try_from(cfg.sgai_announce_ahead_segments.max(0)).unwrap_or(0),
        cohort: "",
        playlist_url: &origin_url,
        variant: &variant,
        mode: Mode::Ssai,
        settings: &settings,
    };
    let mut reads = Reads::default();
    loop {
        match dsplice::serve(&mreq, &mpd, &self_url, None, &reads) {
            Step::Done(out) => return Some(out),
            Step::Need(n) if read(&n, &mut reads) => {}
            Step::Need(_) => return None,
        }
    }
}

/// The KV reads of a DASH request: the view (decoded for the default
/// audience by `view`) and the pod of each break the window needs (`pod`;
/// `None` refuses: a request that must not read a pod).
fn dash_from_kv(
    text: &str,
    now_ms: i64,
    view: impl Fn() -> Option<ChannelView>,
    pod: impl Fn() -> Option<Option<Rc<Pod>>>,
) -> usize {
    serve_dash(text, now_ms, |need, reads| match need {
        Need::View => {
            reads.view = Some(view());
            true
        }
        Need::Pods(ids) => {
            for id in ids {
                let Some(p) = pod() else { return false };
                reads.pods.insert(id.clone(), p);
            }
            true
        }
        Need::CachedAnswer | Need::Do(_) => false,
    })
    .map_or(0, |out| out.mpd.len())
}

/// One DASH MPD request with the binary KV values, as the worker reads
/// them: the view decoded for the default audience, the lean pod of each
/// break the window needs decoded from its bytes (an empty `pod`: none may
/// be needed). The output's length, 0 when not served from the view.
pub fn request_dash(view: &[u8], pod: &[u8], mpd: &str, now_ms: f64) -> usize {
    dash_from_kv(
        mpd,
        now_ms as i64,
        || wire::decode_view_as(view, Some("")).ok(),
        || (!pod.is_empty()).then(|| wire::decode_pod(pod).ok().map(Rc::new)),
    )
}

fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the host wrote `len` bytes at `ptr`, allocated by `alloc`
    // below, and does not touch them during the call.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

fn slice<'a>(ptr: *const u8, len: usize) -> &'a str {
    std::str::from_utf8(bytes(ptr, len)).unwrap_or("")
}

/// Memory for the host to write inputs into (never freed: one benchmark).
#[no_mangle]
pub extern "C" fn alloc(len: usize) -> *mut u8 {
    let mut v = Vec::<u8>::with_capacity(len);
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

/// `iters` requests with the bounded view; returns the last output length.
#[no_mangle]
pub extern "C" fn run_new(
    view: *const u8,
    view_len: usize,
    pod: *const u8,
    pod_len: usize,
    origin: *const u8,
    origin_len: usize,
    iters: u32,
) -> usize {
    let (v, p, o) = (
        slice(view, view_len),
        slice(pod, pod_len),
        slice(origin, origin_len),
    );
    let mut n = 0;
    for _ in 0..iters {
        n = request(v, p, o);
    }
    n
}

/// `iters` requests with the whole-history KV value.
#[no_mangle]
pub extern "C" fn run_old(
    full: *const u8,
    full_len: usize,
    origin: *const u8,
    origin_len: usize,
    iters: u32,
) -> usize {
    let (f, o) = (slice(full, full_len), slice(origin, origin_len));
    let mut n = 0;
    for _ in 0..iters {
        n = request_old(f, o);
    }
    n
}

/// Where a request's time goes: `part` 0 decodes the view alone, 1 the pod
/// alone, 2 runs the whole request with both already decoded (cloned from
/// memory, as a warm isolate's pod cache gives them); 3 and 4 decode the
/// binary view and lean pod; 5 is the whole request with binary values
/// (an isolate's first request for the break: the pod decoded too), 8 the
/// same in a warm isolate (the pod from its cache); 6 and 7 return the
/// binary view's and lean pod's sizes. Returns a
/// non-zero value when the part ran.
#[no_mangle]
pub extern "C" fn run_part(
    view: *const u8,
    view_len: usize,
    pod: *const u8,
    pod_len: usize,
    origin: *const u8,
    origin_len: usize,
    iters: u32,
    part: u32,
) -> usize {
    let (v, p, o) = (
        slice(view, view_len),
        slice(pod, pod_len),
        slice(origin, origin_len),
    );
    let (Ok(view), Ok(pod)) = (
        serde_json::from_str::<ChannelView>(v),
        serde_json::from_str::<Pod>(p).map(|p| Rc::new(wire::lean_pod(&p))),
    ) else {
        return 0;
    };
    let Some((vb, pb)) = binary(v, p) else {
        return 0;
    };
    match part {
        6 => return vb.len(),
        7 => return pb.len(),
        _ => {}
    }
    let mut n = 0;
    for _ in 0..iters {
        n = match part {
            3 => wire::decode_view_as(&vb, Some(&cohort())).map_or(0, |x| x.entries.len() + 1),
            4 => wire::decode_pod(&pb).map_or(0, |x| x.items.len() + 1),
            5 => request_bin(&vb, &pb, o),
            // A warm isolate: the binary view decoded, the pod from the
            // isolate's cache (shared, not copied), as the worker does.
            8 => from_kv(
                o,
                || wire::decode_view_as(&vb, Some(&cohort())).ok(),
                || Some(Rc::clone(&pod)),
            ),
            0 => serde_json::from_str::<ChannelView>(v).map_or(0, |x| x.entries.len() + 1),
            1 => serde_json::from_str::<Pod>(p).map_or(0, |x| x.items.len() + 1),
            _ => from_kv(o, || Some(view.clone()), || Some(Rc::clone(&pod))),
        };
    }
    n
}

/// The first steps of [`serve_dash`] alone, for where its time goes:
/// `upto` 0 parses the MPD, 1 also reads its window as HLS (and checks it
/// parses, as the worker does), 2 also parses that and detects its cues.
/// Non-zero when they ran.
fn dash_steps(text: &str, now_ms: i64, upto: u32) -> usize {
    let Ok(origin_url) = url::Url::parse(DASH_ORIGIN) else {
        return 0;
    };
    let Ok(mpd) = Mpd::parse(text) else { return 0 };
    if upto == 0 {
        return mpd.periods.len() + 1;
    }
    let cadence_ms = CONFIG.with(|cfg| cfg.cadence_ms);
    let Some(hls) = window::to_hls(&mpd, &origin_url, now_ms, cadence_ms).ok() else {
        return 0;
    };
    if upto == 1 {
        return hls.len();
    }
    let Ok(m) = media::parse(&hls) else { return 0 };
    CONFIG.with(|cfg| cues::detect(&m, &cfg.segmentation).events.len() + 1)
}

/// `iters` DASH MPD requests ([`request_dash`]) with the binary view and
/// lean pod: `warm` 0 decodes both on every request (an isolate's first
/// request for the break), 1 decodes the view and shares the pod decoded
/// once (the isolate's pod cache: every other request). Returns the last
/// output's length (0: not served from the view). `warm` 2, 3, 4: the
/// request's first steps alone (`dash_steps` 0, 1, 2).
#[no_mangle]
pub extern "C" fn run_dash(
    view: *const u8,
    view_len: usize,
    pod: *const u8,
    pod_len: usize,
    mpd: *const u8,
    mpd_len: usize,
    now_ms: f64,
    iters: u32,
    warm: u32,
) -> usize {
    let (v, p, m) = (
        bytes(view, view_len),
        bytes(pod, pod_len),
        slice(mpd, mpd_len),
    );
    let cached = (!p.is_empty()).then(|| wire::decode_pod(p).ok().map(Rc::new));
    let mut n = 0;
    for _ in 0..iters {
        n = if warm == 0 {
            request_dash(v, p, m, now_ms)
        } else if warm >= 2 {
            dash_steps(m, now_ms as i64, warm - 2)
        } else {
            dash_from_kv(
                m,
                now_ms as i64,
                || wire::decode_view_as(v, Some("")).ok(),
                || cached.clone(),
            )
        };
    }
    n
}
