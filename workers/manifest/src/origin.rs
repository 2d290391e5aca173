//! Origin access for the playback path and the poller: URL mapping (never
//! an open proxy: only paths under the channel's origin directory), the
//! polled variant, cadence, and channel health in D1.

use cf_ssai_core::control::config::ChannelConfig;
use cf_ssai_core::hls::{self, media::MediaPlaylist};
use cf_ssai_core::splice::master;
use worker::*;
use worker_shared::channel_client::ChannelRef;
use worker_shared::{bindings, now_ms, store};

/// The origin URL for a request path under the channel (`master.m3u8` is
/// the configured origin playlist itself). `None` for anything that is not
/// a plain relative `.m3u8` path.
pub fn origin_url_for(cfg: &ChannelConfig, rest: &str) -> Option<url::Url> {
    let base = url::Url::parse(&cfg.origin_url).ok()?;
    if rest == "master.m3u8" || rest == "index.m3u8" && base.path().ends_with("/index.m3u8") {
        return Some(base);
    }
    if !rest.ends_with(".m3u8")
        || rest.contains("..")
        || rest.contains("//")
        || rest.contains('\\')
        || rest.contains(':')
        || rest.starts_with('/')
    {
        return None;
    }
    base.join(rest).ok()
}

/// The media playlist the poller reads.
pub async fn media_url_for_poll(
    cfg: &ChannelConfig,
    allow_private: &str,
) -> std::result::Result<String, String> {
    let text = worker_shared::get_text(&cfg.origin_url, cfg.origin_timeout_ms, allow_private)
        .await
        .map_err(|e| format!("origin {}: {e}", cfg.origin_url))?;
    // A DASH origin: the MPD is the window (`core::dash::window`).
    if cf_ssai_core::dash::looks_like_mpd(&text) {
        return Ok(cfg.origin_url.clone());
    }
    let toks = hls::tokenize(&text).map_err(|e| e.to_string())?;
    if !hls::is_master(&toks) {
        return Ok(cfg.origin_url.clone());
    }
    let v = master::poll_variant(&text, &cfg.poll_variant).ok_or("master has no variants")?;
    let base = url::Url::parse(&cfg.origin_url).map_err(|e| e.to_string())?;
    Ok(hls::resolve(&base, v))
}

/// An origin document as the HLS machinery reads it: a media playlist as
/// is, an MPD as its window's media playlist (`core::dash::window::to_hls`).
pub fn as_media_playlist(
    text: String,
    url: &str,
    cfg: &ChannelConfig,
) -> std::result::Result<String, String> {
    if !cf_ssai_core::dash::looks_like_mpd(&text) {
        return Ok(text);
    }
    let base = url::Url::parse(url).map_err(|e| e.to_string())?;
    let mpd = cf_ssai_core::dash::Mpd::parse(&text).map_err(|e| e.to_string())?;
    cf_ssai_core::dash::window::to_hls(&mpd, &base, now_ms(), cfg.cadence_ms)
        .map_err(|e| e.to_string())
}

pub fn cadence_ms(cfg: &ChannelConfig, m: &MediaPlaylist<'_>) -> u64 {
    if cfg.cadence_ms > 0 {
        cfg.cadence_ms
    } else {
        m.cadence_ms()
    }
}

/// A channel that keeps failing is marked unhealthy (after 3 failures in a
/// row) and recovers on its first good poll.
pub async fn mark_health(env: &Env, c: &ChannelRef, ok: bool, detail: &str) {
    let Ok(db) = env.d1(bindings::DB) else { return };
    let done = if ok {
        store::channels::mark_ok(&db, &c.org, &c.slug).await
    } else {
        let detail = format!("{} at {}", detail, now_ms());
        store::channels::mark_failure(&db, &c.org, &c.slug, &detail).await
    };
    if let Err(e) = done {
        worker_shared::metrics::log(
            worker_shared::metrics::Level::Error,
            "health_update_failed",
            &[
                ("org", &c.org),
                ("channel", &c.slug),
                ("reason", &e.to_string()),
            ],
        );
    }
}
