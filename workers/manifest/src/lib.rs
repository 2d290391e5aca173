//! The manifest worker: stateless playback path, SGAI asset lists, ad
//! media, the control plane (`/api/`, `POST /cue`), the dashboard; exports
//! the Channel Durable Object. Thin: parse the request, call the core, map
//! the result.

mod admin;
mod channel_do;
mod origin;
mod playback;

pub use channel_do::ChannelDO;
use worker::*;
use worker_shared::{bindings, error};

const DASHBOARD_HTML: &str = include_str!("dashboard.html");

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let path = req.path();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (Method::Options, _) => preflight(),
        (Method::Get, ["healthz"]) => Response::ok("ok"),
        (Method::Get, ["dashboard"]) => {
            let mut r = Response::ok(DASHBOARD_HTML)?;
            r.headers_mut()
                .set("Content-Type", "text/html; charset=utf-8")?;
            Ok(r)
        }
        (Method::Get, ["media", key @ ..]) => media(&env, &key.join("/")).await,
        (_, ["api", ..]) | (Method::Post, ["cue"]) => admin::route(req, env).await,
        (Method::Get, [org, slug, rest @ ..]) if !rest.is_empty() => {
            let Some(ch) = worker_shared::load_channel(&env, org, slug).await? else {
                return error(404, format!("no channel {org}/{slug}"));
            };
            if !ch.config.active {
                return error(404, format!("channel {org}/{slug} is not active"));
            }
            match rest {
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
                _ => playback::playlist(&req, &env, &ch, &rest.join("/")).await,
            }
        }
        _ => error(404, "no such route"),
    }
}

/// Local dev: `wrangler dev` exposes only this (primary) worker to
/// `/cdn-cgi/handler/scheduled`, so the cron event is handed to the
/// monitor's cycle (the same function its own `scheduled` runs) through
/// the MONITOR service binding. Production: this worker has no cron
/// trigger; the monitor's fires directly.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let forward = async {
        let mut init = RequestInit::new();
        init.with_method(Method::Post);
        env.service("MONITOR")?
            .fetch("https://monitor/run", Some(init))
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
/// domain in production).
async fn media(env: &Env, key: &str) -> Result<Response> {
    if key.is_empty() || key.contains("..") {
        return error(404, "no such object");
    }
    let Some(obj) = env.bucket(bindings::AD_MEDIA)?.get(key).execute().await? else {
        return error(404, "no such object");
    };
    // The extension decides for media we know (players and browsers check
    // it); otherwise what the uploader said.
    let ct = match content_type(key) {
        "application/octet-stream" => obj
            .http_metadata()
            .content_type
            .unwrap_or_else(|| "application/octet-stream".into()),
        known => known.to_string(),
    };
    let bytes = match obj.body() {
        Some(b) => b.bytes().await?,
        None => Vec::new(),
    };
    let mut r = Response::from_bytes(bytes)?;
    let h = r.headers_mut();
    h.set("Content-Type", &ct)?;
    h.set("Access-Control-Allow-Origin", "*")?;
    h.set("Cache-Control", "public, max-age=86400")?;
    Ok(r)
}

fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("ts") => "video/mp2t",
        Some("m4s") | Some("mp4") => "video/mp4",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("js") => "text/javascript",
        Some("aac") => "audio/aac",
        _ => "application/octet-stream",
    }
}

/// Random hex from the runtime's CSPRNG.
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let filled = (|| -> std::result::Result<(), wasm_bindgen::JsValue> {
        let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into())?;
        let arr = js_sys::Uint8Array::new_with_length(n as u32);
        let f: js_sys::Function = js_sys::Reflect::get(&crypto, &"getRandomValues".into())?.into();
        f.call1(&crypto, &arr)?;
        arr.copy_to(&mut b);
        Ok(())
    })();
    // Invariant: workerd always provides crypto.getRandomValues; without it
    // we must not mint predictable keys.
    assert!(filled.is_ok(), "crypto.getRandomValues unavailable");
    cf_ssai_core::scte35::to_hex(&b)
}
