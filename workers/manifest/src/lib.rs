//! The manifest worker: stateless playback path, SGAI asset lists, ad
//! media, the control plane (`/api/`, `POST /cue`), the dashboard; exports
//! the Channel Durable Object. Thin: parse the request, call the core, map
//! the result.

mod admin;
mod audience;
mod channel_do;
mod conditioner_do;
mod dash;
mod origin;
mod playback;

use cf_ssai_core::control::media_http;
pub use channel_do::ChannelDO;
pub use conditioner_do::ConditionerContainer;
use worker::*;
use worker_shared::{bindings, error};

const DASHBOARD_HTML: &str = include_str!("dashboard.html");
const NOSNIFF: (&str, &str) = ("X-Content-Type-Options", "nosniff");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
/// The dashboard's CSP: scripts only from this origin's fixed paths
/// (`/dashboard.js`, hls.js under `/media/_static/`, which no org can
/// write), no inline script, no plugins, no framing, no form posts.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; media-src * blob: data:; connect-src *; worker-src blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let mut resp = route(req, env, ctx).await?;
    // Never let a browser guess a type: on every response we make. A
    // response passed through from a binding has immutable headers: it is
    // rebuilt around the same body (a stream is moved, not copied).
    if resp.headers_mut().set(NOSNIFF.0, NOSNIFF.1).is_err() {
        let headers = Headers::new();
        for (k, v) in resp.headers().entries() {
            headers.append(&k, &v)?;
        }
        let status = resp.status_code();
        resp = Response::from_body(resp.body().clone())?
            .with_status(status)
            .with_headers(headers);
        resp.headers_mut().set(NOSNIFF.0, NOSNIFF.1)?;
    }
    Ok(resp)
}

async fn route(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let path = req.path();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (Method::Options, _) => preflight(),
        (Method::Get, ["healthz"]) => Response::ok("ok"),
        (Method::Get, ["dashboard"]) => {
            let mut r = Response::ok(DASHBOARD_HTML)?;
            let h = r.headers_mut();
            h.set("Content-Type", "text/html; charset=utf-8")?;
            // Scripts only from this page and /media/_static/ (never an
            // org's upload); media from anywhere a channel may point.
            h.set("Content-Security-Policy", DASHBOARD_CSP)?;
            h.set("X-Frame-Options", "DENY")?;
            h.set("Referrer-Policy", "no-referrer")?;
            Ok(r)
        }
        (Method::Get, ["dashboard.js"]) => {
            let mut r = Response::ok(DASHBOARD_JS)?;
            let h = r.headers_mut();
            h.set("Content-Type", "text/javascript; charset=utf-8")?;
            h.set("X-Content-Type-Options", "nosniff")?;
            Ok(r)
        }
        (Method::Get | Method::Head, ["blank.vtt"]) => {
            // The subtitle segments of an ad without subtitles (the splice
            // names this path): a WebVTT file with no cues.
            let mut r = Response::ok(cf_ssai_core::splice::BLANK_SUBTITLES)?;
            let h = r.headers_mut();
            h.set("Content-Type", "text/vtt; charset=utf-8")?;
            h.set("Cache-Control", "public, max-age=86400")?;
            h.set("Access-Control-Allow-Origin", "*")?;
            Ok(r)
        }
        (Method::Get | Method::Head, ["media", key @ ..]) => {
            media(&req, &env, &key.join("/")).await
        }
        (_, ["api", ..]) | (Method::Post, ["cue"]) => admin::route(req, env).await,
        (Method::Get, [org, slug, rest @ ..]) if !rest.is_empty() => {
            let Some(ch) = worker_shared::load_channel(&env, org, slug).await? else {
                return error(404, format!("no channel {org}/{slug}"));
            };
            if !ch.config.active {
                return error(404, format!("channel {org}/{slug} is not active"));
            }
            match rest {
                ["manifest.mpd"] => {
                    let r = dash::manifest(&req, &env, &ch).await;
                    let status = r.as_ref().map_or(500, |r| r.status_code());
                    playback::count_playlist(&env, &ctx, &ch, status);
                    r
                }
                ["interstitials", file] if file.ends_with(".mpd") => {
                    dash::ad_mpd(&req, &env, &ch, file.trim_end_matches(".mpd")).await
                }
                ["interstitials", file] if file.ends_with(".json") => {
                    playback::asset_list(&req, &env, &ch, file.trim_end_matches(".json")).await
                }
                ["ad", seg @ ..] => playback::ad_segment(&req, &env, &ctx, &ch, seg).await,
                ["ads", brk, item, file] if file.ends_with(".m3u8") => {
                    let bw = file.trim_end_matches(".m3u8");
                    playback::ad_media(&req, &env, &ch, brk, item, bw).await
                }
                ["ads", brk, file] if file.ends_with(".m3u8") => {
                    playback::ad_master(&req, &env, &ch, brk, file.trim_end_matches(".m3u8")).await
                }
                _ => {
                    let r = playback::playlist(&req, &env, &ch, &rest.join("/")).await;
                    let status = r.as_ref().map_or(500, |r| r.status_code());
                    playback::count_playlist(&env, &ctx, &ch, status);
                    r
                }
            }
        }
        _ => error(404, "no such route"),
    }
}

/// Local dev: `wrangler dev` exposes only this (primary) worker to
/// `/cdn-cgi/handler/scheduled`, so the cron event is handed to the
/// monitor's cycle (the same function its own `scheduled` runs) through
/// the MONITOR service binding. Production: the monitor's own cron fires
/// it; this worker's cron (only with the conditioner container) wakes that.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    // Production with the conditioner container (generated config only):
    // this cron wakes it; the monitor's own cron runs the monitor.
    if env.durable_object(conditioner_do::BINDING).is_ok() {
        return conditioner_do::wake(&env).await;
    }
    let forward = async {
        worker_shared::call_internal(
            &env,
            "MONITOR",
            "https://monitor/run",
            Method::Post,
            None,
            55_000,
        )
        .await
    };
    if let Err(e) = forward.await {
        console_error!("forwarding cron to the monitor failed: {e}");
    }
}

fn preflight() -> Result<Response> {
    let mut r = Response::empty()?.with_status(204);
    let h = r.headers_mut();
    h.set("Access-Control-Allow-Origin", "*")?;
    h.set(
        "Access-Control-Allow-Methods",
        "GET, POST, PUT, DELETE, OPTIONS",
    )?;
    h.set(
        "Access-Control-Allow-Headers",
        "Authorization, Content-Type, Idempotency-Key, X-Interstitials",
    )?;
    h.set("Access-Control-Max-Age", "600")?;
    Ok(r)
}

/// Ad media and dashboard assets from R2 (the local R2 in dev; a public R2
/// domain in production): streamed, never buffered; HEAD, single byte
/// ranges (206/416) and `If-None-Match` (304) as HLS players and CDNs use
/// them; inline only for media types (see `media_http`).
async fn media(req: &Request, env: &Env, key: &str) -> Result<Response> {
    if key.is_empty() || key.contains("..") {
        return error(404, "no such object");
    }
    let bucket = env.bucket(bindings::AD_MEDIA)?;
    let range_h = req.headers().get("Range")?;
    let inm = req.headers().get("If-None-Match")?;
    let head_only = req.method() == Method::Head;
    // Metadata first when the answer needs the size (HEAD, Range).
    let meta = if head_only || range_h.is_some() {
        match bucket.head(key).await? {
            Some(m) => Some(m),
            None => return error(404, "no such object"),
        }
    } else {
        None
    };
    let range = meta.as_ref().map_or(media_http::ByteRange::Full, |m| {
        media_http::parse_range(range_h.as_deref(), m.size())
    });
    let get = |r: Option<worker::Range>| {
        let b = bucket.get(key);
        match r {
            Some(r) => b.range(r).execute(),
            None => b.execute(),
        }
    };
    let fetched = match (meta, head_only, range) {
        (Some(m), true, _) | (Some(m), _, media_http::ByteRange::Unsatisfiable) => Some(m),
        (_, _, media_http::ByteRange::Part { offset, length }) => {
            get(Some(worker::Range::OffsetWithLength { offset, length })).await?
        }
        _ => get(None).await?,
    };
    let Some(obj) = fetched else {
        return error(404, "no such object");
    };
    let etag = obj.http_etag();
    let size = obj.size();
    let headers = Headers::new();
    let d = media_http::disposition(key);
    headers.set("Content-Type", d.content_type)?;
    if !d.inline {
        headers.set("Content-Disposition", "attachment")?;
    }
    headers.set("X-Content-Type-Options", "nosniff")?;
    headers.set("Access-Control-Allow-Origin", "*")?;
    headers.set("Cache-Control", "public, max-age=86400")?;
    headers.set("Accept-Ranges", "bytes")?;
    headers.set("ETag", &etag)?;
    if media_http::etag_matches(inm.as_deref(), &etag) {
        return Ok(Response::empty()?.with_status(304).with_headers(headers));
    }
    let (status, length) = match range {
        media_http::ByteRange::Full => (200, size),
        media_http::ByteRange::Part { offset, length } => {
            let last = offset + length - 1;
            headers.set("Content-Range", &format!("bytes {offset}-{last}/{size}"))?;
            (206, length)
        }
        media_http::ByteRange::Unsatisfiable => {
            headers.set("Content-Range", &format!("bytes */{size}"))?;
            return Ok(Response::empty()?.with_status(416).with_headers(headers));
        }
    };
    headers.set("Content-Length", &length.to_string())?;
    let body = match (head_only, obj.body()) {
        (false, Some(b)) => b.response_body()?,
        _ => ResponseBody::Empty,
    };
    Ok(Response::from_body(body)?
        .with_status(status)
        .with_headers(headers))
}

/// Random hex from the runtime's CSPRNG.
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    random_bytes(&mut b);
    cf_ssai_core::scte35::to_hex(&b)
}

/// Fill `b` from the runtime's CSPRNG (`crypto.getRandomValues`).
pub(crate) fn random_bytes(b: &mut [u8]) {
    let n = b.len();
    let filled = (|| -> std::result::Result<(), wasm_bindgen::JsValue> {
        let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into())?;
        let arr = js_sys::Uint8Array::new_with_length(n as u32);
        let f: js_sys::Function = js_sys::Reflect::get(&crypto, &"getRandomValues".into())?.into();
        f.call1(&crypto, &arr)?;
        arr.copy_to(b);
        Ok(())
    })();
    // Invariant: workerd always provides crypto.getRandomValues; without it
    // we must not mint predictable keys.
    assert!(filled.is_ok(), "crypto.getRandomValues unavailable");
}
