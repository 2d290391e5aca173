//! DASH playback: `GET /{org}/{channel}/manifest.mpd` (the channel's origin
//! MPD with our breaks) and `GET /{org}/{channel}/interstitials/{break}.mpd`
//! (a break's ad MPD, the SGAI target). The rules live in `core::dash`
//! and `core::splice::edge` (the same hot path as HLS: one KV view read,
//! the pods it names, the location's copy of the DO's answer, the DO only
//! when needed); this is the I/O.

use crate::audience::{self, Audience};
use crate::playback;
use cf_ssai_core::control::config::{choose_mode, SgaiDecision};
use cf_ssai_core::dash::{splice as dsplice, window, Mpd};
use cf_ssai_core::hls::media;
use cf_ssai_core::model::TrackKind;
use cf_ssai_core::scte35::cues;
use cf_ssai_core::splice::{edge, EntryRef, Mode, Variant};
use worker::*;
use worker_shared::channel_client::ChannelRef;
use worker_shared::{error, StoredChannel};

pub const MPD_TYPE: &str = "application/dash+xml";

/// The mode a DASH viewer gets (`config::choose_mode`): `?mode=`, else
/// the channel's; `auto` reads no header or User-Agent here (the player
/// names are HLS players' interstitial support), so it is SSAI.
fn mode_of(ch: &StoredChannel, url: &url::Url) -> Mode {
    choose_mode(
        ch.config.mode,
        audience::query(url, "mode").as_deref(),
        None,
        None,
    )
}

pub async fn manifest(req: &Request, env: &Env, ch: &StoredChannel) -> Result<Response> {
    let cfg = &ch.config;
    let Ok(origin_url) = url::Url::parse(&cfg.origin_url) else {
        return error(404, "the channel's origin is not a URL");
    };
    let url = req.url()?;
    let mode = mode_of(ch, &url);
    // The audience: a session we signed on the MPD URL, else a new one,
    // given to the player as the MPD's `Location` (its reloads then carry
    // it; this first answer is the viewer's own and is not shared, but is
    // spliced with the new session as every later one will be).
    let (cohort, sid, tg, location) = match audience::of_request(&url, env, ch) {
        Audience::Forged => return error(403, "session does not verify for this channel"),
        Audience::Viewer {
            cohort,
            verified: true,
        } => (
            cohort,
            audience::query(&url, "sid"),
            audience::query(&url, "tg").unwrap_or_default(),
            None,
        ),
        Audience::Viewer { .. } => {
            let (viewer, sid, tg) = playback::viewer_session(req, env, ch, None)?;
            match sid {
                Some(sid) => {
                    audience::report(env, ch, &viewer).await;
                    let mut loc = url.clone();
                    let kept: Vec<(String, String)> = url
                        .query_pairs()
                        .filter(|(k, _)| k != "sid" && k != "tg")
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    {
                        let mut q = loc.query_pairs_mut();
                        q.clear().extend_pairs(kept).append_pair("sid", &sid);
                        if !tg.is_empty() {
                            q.append_pair("tg", &tg);
                        }
                    }
                    (viewer.cohort, Some(sid), tg, Some(loc.to_string()))
                }
                None => (String::new(), None, String::new(), None),
            }
        }
    };
    if location.is_none() && sid.is_some() {
        audience::report_from(env, ch, &url, &cohort).await;
    }
    // Server-side beacons: the session on the ad segment URLs, while it
    // lives (as on HLS media playlists).
    let session = sid.clone().filter(|s| {
        cfg.proxy_ad_segments && (location.is_some() || playback::verify_session(env, ch, s))
    });
    let per_viewer = sid
        .as_ref()
        .filter(|_| mode == Mode::Sgai && cfg.sgai_decision == SgaiDecision::PerViewer)
        .map(|sid| audience::viewer_query(sid, &tg));
    let base = playback::cache_base(req)?;
    let shared =
        location.is_none() && session.is_none() && per_viewer.is_none() && cfg.cache_max_age_s > 0;
    let variant = Variant {
        kind: TrackKind::Video,
        ..Default::default()
    };
    let key = shared.then(|| {
        playback::shared_playlist_key(&base, ch, origin_url.as_str(), mode, &variant, &cohort)
    });
    if let Some(k) = &key {
        if let Some(body) = playback::get_shared(k).await {
            return respond(req, ch, body);
        }
    }
    let text = match playback::fetch_origin(env, &origin_url, cfg.origin_timeout_ms).await? {
        Ok(t) => t,
        Err(failed) => return Ok(failed),
    };
    // An origin answer that is no MPD: the player could not use it from
    // our host either (its URLs are relative to the origin's).
    let mpd = match Mpd::parse(&text) {
        Ok(m) => m,
        Err(e) => return error(502, format!("origin MPD is not readable: {e}")),
    };
    let now = worker_shared::now_ms();
    let mut settings = playback::splice_settings(ch, session);
    // The window as the HLS machinery reads it; one it cannot read (no
    // segment yet, no template) is served as the content, its URLs made
    // ours to serve.
    let hls = window::to_hls(&mpd, &origin_url, now, cfg.cadence_ms).unwrap_or_default();
    let Ok(m) = media::parse(&hls).map_err(|_| ()).and_then(|m| {
        if m.segments.is_empty() {
            Err(())
        } else {
            Ok(m)
        }
    }) else {
        let out = dsplice::splice(&dsplice::DashInput {
            mpd: &mpd,
            origin_url: &origin_url,
            self_url: &url,
            first_msn: 0,
            last_msn: 0,
            breaks: &[],
            before: None,
            mode,
            settings: &settings,
            location: location.as_deref(),
            now_ms: now,
        });
        return respond(req, ch, out.mpd);
    };
    let events = if cfg.scte35_enabled {
        cues::detect(&m, &cfg.segmentation).events
    } else {
        Vec::new()
    };
    if mode == Mode::Sgai {
        settings.cohort_param = audience::cohort_param(env, ch, &cohort);
    }
    settings.viewer_query = per_viewer;
    let mreq = edge::MediaRequest {
        origin: &hls,
        m: &m,
        events: &events,
        cadence_ms: crate::origin::cadence_ms(cfg, &m),
        examined: !playback::inband(cfg),
        ahead: u64::try_from(cfg.sgai_announce_ahead_segments.max(0)).unwrap_or(0),
        cohort: &cohort,
        playlist_url: &origin_url,
        variant: &variant,
        mode,
        settings: &settings,
    };
    let chref = ChannelRef::new(&ch.org, &ch.slug);
    let mut reads = edge::Reads::default();
    let body = {
        let out = playback::drive(env, &base, &chref, &cohort, &mut reads, |r| {
            dsplice::serve(&mreq, &mpd, &url, location.as_deref(), r)
        })
        .await;
        for reason in &out.report.reasons {
            worker_shared::metrics::log(
                worker_shared::metrics::Level::Warn,
                "splice_fallback",
                &[("org", &ch.org), ("channel", &ch.slug), ("reason", reason)],
            );
        }
        out.mpd
    };
    if let Some(k) = &key {
        playback::put_shared(k, cfg.max_age(m.target_duration), &body).await;
    }
    respond(req, ch, body)
}

/// `GET /{org}/{channel}/interstitials/{break}.mpd`: the break's pod as a
/// static MPD (per viewer on `sgai_decision: per_viewer` channels, as the
/// HLS asset list).
pub async fn ad_mpd(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
    break_id: &str,
) -> Result<Response> {
    let Some(mut entry) = playback::find_entry(req, env, ch, break_id).await else {
        return error(404, format!("no break {break_id}"));
    };
    let _ = playback::per_viewer_pod(req, env, ch, &mut entry).await;
    let url = req.url()?;
    let sid = playback::counted_session(req, env, ch)?;
    let prefix = format!("/{}/{}/ad/", ch.org, ch.slug);
    let body = dsplice::ad_mpd(
        EntryRef::from(&entry),
        audience::query(&url, "lang").as_deref(),
        &url,
        |item, r: &cf_ssai_core::model::AdRendition, pos| {
            let u = match (item, ch.config.proxy_ad_segments) {
                (Some(i), true) => {
                    let mut s = String::new();
                    cf_ssai_core::splice::ad_route::AdSegmentRoute::new(
                        &entry.record.id,
                        i,
                        r,
                        u32::try_from(pos).unwrap_or(0),
                    )
                    .write(&prefix, sid.as_deref(), &mut s);
                    s
                }
                _ => r
                    .segments
                    .get(pos)
                    .map(|s| s.uri.clone())
                    .unwrap_or_default(),
            };
            url.join(&u).map(|x| x.to_string()).unwrap_or(u)
        },
    );
    let mut r = Response::ok(body)?;
    r.headers_mut().set("Content-Type", MPD_TYPE)?;
    r.headers_mut().set("Cache-Control", "max-age=2")?;
    playback::cors(req, &ch.config, r.headers_mut())?;
    Ok(r)
}

fn respond(req: &Request, ch: &StoredChannel, body: String) -> Result<Response> {
    let mut r = Response::ok(body)?;
    let h = r.headers_mut();
    h.set("Content-Type", MPD_TYPE)?;
    h.set(
        "Cache-Control",
        &format!("max-age={}", ch.config.max_age(2)),
    )?;
    playback::cors(req, &ch.config, h)?;
    Ok(r)
}
