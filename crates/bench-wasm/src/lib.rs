//! The playback path's per-request work, exactly as the manifest worker
//! does it between its KV reads and its response, compiled to wasm32 with
//! the workers' release profile and timed in V8 (the engine workerd runs)
//! by `scripts/bench-wasm.sh`:
//!
//! KV values decoded (the channel view, and the pod of each break the
//! window touches) → origin playlist parsed → cues detected → the view's
//! vouching checked (`core::edge`) → the breaks the window needs → splice
//! and render. [`request_old`] is the same with the pre-view KV value (the
//! whole `ChannelBreaks`, every pod inline), for the before/after figure.
//!
//! Exports a tiny C ABI (no wasm-bindgen): `alloc`, `run_new`, `run_old`.

use cf_ssai_core::hls::media;
use cf_ssai_core::model::{BreakEntry, ChannelBreaks, ChannelView, Pod};
use cf_ssai_core::scte35::cues::{self, SegmentationPolicy};
use cf_ssai_core::splice::edge::{self, WindowFacts};
use cf_ssai_core::splice::{self, Mode, SpliceInput, SpliceSettings, Variant};

const CADENCE_MS: u64 = 1920;

fn splice_out(
    m: &media::MediaPlaylist<'_>,
    origin: &str,
    entries: &[BreakEntry],
    base: u64,
) -> usize {
    let Ok(url) = url::Url::parse("https://origin.example/live/news/v360/index.m3u8") else {
        return 0;
    };
    let settings = SpliceSettings {
        asset_list_prefix: "/demo/news/interstitials/".into(),
        ..Default::default()
    };
    splice::splice_media(
        m,
        &SpliceInput {
            origin,
            playlist_url: &url,
            breaks: entries,
            disc_base: base,
            variant: &Variant {
                bandwidth: Some(900_000),
                codecs: Some("avc1.42c01e,mp4a.40.2".into()),
                kind: Default::default(),
            },
            mode: Mode::Ssai,
            settings: &settings,
        },
    )
    .playlist
    .len()
}

/// One request with the bounded view: returns the output's length (0 when
/// the view cannot vouch, which the inputs are made to avoid).
pub fn request(view_json: &str, pod_json: &str, origin: &str) -> usize {
    let Ok(view) = serde_json::from_str::<ChannelView>(view_json) else {
        return 0;
    };
    let Ok(m) = media::parse(origin) else {
        return 0;
    };
    let events = cues::detect(&m, &SegmentationPolicy::default()).events;
    let w = WindowFacts::of(&m, CADENCE_MS);
    if !edge::view_serves(&view, &events, &w) {
        return 0;
    }
    let (needed, base) = view.needed(w.first_msn, w.last_msn, 0);
    let mut entries = Vec::with_capacity(needed.len());
    for r in needed {
        let Ok(pod) = serde_json::from_str::<Pod>(pod_json) else {
            return 0;
        };
        entries.push(BreakEntry {
            record: r.clone(),
            pod,
        });
    }
    splice_out(&m, origin, &entries, base)
}

/// One request as before the bounded view: the whole `ChannelBreaks`.
pub fn request_old(full_json: &str, origin: &str) -> usize {
    let Ok(b) = serde_json::from_str::<ChannelBreaks>(full_json) else {
        return 0;
    };
    let Ok(m) = media::parse(origin) else {
        return 0;
    };
    let events = cues::detect(&m, &SegmentationPolicy::default()).events;
    let w = WindowFacts::of(&m, CADENCE_MS);
    if !edge::answer_serves(&b, &events, &w) {
        return 0;
    }
    splice_out(&m, origin, &b.entries, b.disc_base)
}

fn slice<'a>(ptr: *const u8, len: usize) -> &'a str {
    // SAFETY: the host wrote `len` bytes of UTF-8 at `ptr`, allocated by
    // `alloc` below, and does not touch them during the call.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    std::str::from_utf8(bytes).unwrap_or("")
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
