//! The playback path: origin → cues → break entries (KV, else the Channel
//! DO) → splice. Stateless; every failure about ads serves the content.

use crate::audience::{self, Audience};
use cf_ssai_core::control::config::{choose_mode, SgaiDecision};
use cf_ssai_core::control::session;
use cf_ssai_core::hls::{self, media};
use cf_ssai_core::model::{BreakEntry, ChannelBreaks, ChannelView, Pod};
use cf_ssai_core::scte35::cues;
use cf_ssai_core::splice::ad_route::AdSegmentRoute;
use cf_ssai_core::splice::edge;
use cf_ssai_core::splice::{master, sgai};
use cf_ssai_core::splice::{Mode, Variant};
use std::rc::Rc;
use worker::*;
use worker_shared::channel_client::{ChannelClient, ChannelRef, SyncRequest};
use worker_shared::{bindings, error, StoredChannel};

const M3U8: &str = "application/vnd.apple.mpegurl";

thread_local! {
    /// Playlist requests not yet written, per channel: an isolate serving
    /// thousands of requests writes its counts at most every
    /// [`PLAYLIST_METRICS_FLUSH_MS`], off the response path.
    static PLAYLIST_METRICS: std::cell::RefCell<cf_ssai_core::control::metrics::PendingBatches> =
        Default::default();
}
const PLAYLIST_METRICS_FLUSH_MS: i64 = 10_000;

/// Count one playlist request (and an origin failure: 502/504 are the
/// origin's) for the operator metrics.
pub fn count_playlist(env: &Env, ctx: &Context, ch: &StoredChannel, status: u16) {
    let now = worker_shared::now_ms();
    let due = PLAYLIST_METRICS.with(|p| {
        let mut p = p.borrow_mut();
        let b = p.batch(&ch.org, &ch.slug, now);
        b.add("playlist_requests_total", &[], 1.0);
        if matches!(status, 502 | 504) {
            b.add("origin_errors_total", &[], 1.0);
        }
        p.take_due(now, PLAYLIST_METRICS_FLUSH_MS, false)
    });
    if matches!(status, 502 | 504) {
        worker_shared::metrics::log(
            worker_shared::metrics::Level::Warn,
            "origin_error",
            &[
                ("org", &ch.org),
                ("channel", &ch.slug),
                ("status", &status.to_string()),
            ],
        );
    }
    if !due.is_empty() {
        let env = env.clone();
        ctx.wait_until(async move {
            for (org, channel, minute, b) in due {
                worker_shared::metrics::record(&env, &org, &channel, minute, &b).await;
            }
        });
    }
}

pub async fn playlist(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
    rest: &str,
) -> Result<Response> {
    playlist_with(req, env, ch, rest, None).await
}

/// What a playlist request asked for, read from its URL and headers once.
struct Asked {
    url: Url,
    origin_url: Url,
    /// Which playlist this is, one spelling per playlist (the cache key).
    playlist_id: String,
    /// LL-HLS delivery directives (blocking reload, delta update), passed
    /// to the origin, which holds the request until it has what was asked.
    blocking: bool,
    /// The part asked for, as its MSN.
    asked_part: Option<u64>,
    origin_timeout_ms: u64,
    mode: Mode,
    /// The variant, in the one form both the cache key and the splice use.
    variant: Variant,
}

impl Asked {
    fn q(&self, k: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.into_owned())
    }
}

/// Reads a playlist request; `Err` is the response refusing it.
fn asked(
    req: &Request,
    ch: &StoredChannel,
    rest: &str,
    hold_for: Option<u64>,
) -> Result<std::result::Result<Asked, Response>> {
    let cfg = &ch.config;
    let Some(mut origin_url) = crate::origin::origin_url_for(cfg, rest) else {
        return error(404, "not a playlist of this channel").map(Err);
    };
    let playlist_id = edge::cache_url(&origin_url);
    let url = req.url()?;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let pairs = || pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let mut directives = match hls::delivery_directives(pairs()) {
        Ok(d) => d,
        Err(e) => return error(400, e.to_string()).map(Err),
    };
    let asked_part = match directives.as_slice() {
        [("_HLS_msn", m), ("_HLS_part", _)] => m.parse::<u64>().ok(),
        _ => None,
    };
    if let Some(n) = hold_for {
        directives = vec![("_HLS_msn", n.to_string())];
    }
    let blocking = !directives.is_empty();
    if blocking {
        origin_url
            .query_pairs_mut()
            .extend_pairs(directives.iter().map(|(k, v)| (*k, v.as_str())));
    }
    // A blocking reload may be held up to three target durations.
    let origin_timeout_ms = if blocking {
        cfg.origin_timeout_ms.max(if cfg.cadence_ms > 0 {
            cfg.cadence_ms.saturating_mul(3).saturating_add(1000)
        } else {
            20_000
        })
    } else {
        cfg.origin_timeout_ms
    };
    // A value no master rewrite writes is refused (`master::variant_query`).
    let variant = match master::variant_query(pairs()) {
        Ok(v) => v,
        Err(e) => return error(400, e.to_string()).map(Err),
    };
    let mode_q = url
        .query_pairs()
        .find(|(a, _)| a == "mode")
        .map(|(_, v)| v.into_owned());
    let mode = choose_mode(
        cfg.mode,
        mode_q.as_deref(),
        req.headers().get("X-Interstitials")?.as_deref(),
        req.headers().get("User-Agent")?.as_deref(),
    );
    Ok(Ok(Asked {
        url,
        origin_url,
        playlist_id,
        blocking,
        asked_part,
        origin_timeout_ms,
        mode,
        variant,
    }))
}

/// `hold_for`: answer a blocking reload once segment `hold_for` is whole
/// (see `SpliceOutput::withheld_msn`), whatever part it asked for.
async fn playlist_with(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
    rest: &str,
    hold_for: Option<u64>,
) -> Result<Response> {
    let cfg = &ch.config;
    let a = match asked(req, ch, rest, hold_for)? {
        Ok(a) => a,
        Err(refused) => return Ok(refused),
    };
    // Server-side beacons: a session we signed (a made-up `sid` is none,
    // and must not make the playlist per viewer: that would skip the cache).
    let session = if cfg.proxy_ad_segments {
        a.q("sid").filter(|s| verify_session(env, ch, s))
    } else {
        None
    };
    // A media playlist without per-viewer URIs is the same for every viewer
    // of this location: served from the location's cache for at most half
    // a target duration, keyed by channel, path, normalised variant and the
    // mode actually chosen (SSAI and SGAI never share an entry). Nothing a
    // client sends skips it (`Cache-Control`/`Pragma: no-cache` are not
    // read); an operator turns it off per channel with `cache_max_age_s: 0`.
    let base = cache_base(req)?;
    // The viewer's cohort (from its signed session): the cache key and
    // the pods; a session that does not verify on a channel that targets
    // is refused once the playlist is known to be a media playlist.
    let (cohort, verified, forged) = match audience::of_request(&a.url, env, ch) {
        Audience::Viewer { cohort, verified } => (cohort, verified, false),
        Audience::Forged => (String::new(), false, true),
    };
    // A per-viewer SGAI decision: the viewer's session and targeting ride
    // on the asset-list URLs, so the playlist is this viewer's own.
    let per_viewer = (verified
        && a.mode == Mode::Sgai
        && cfg.sgai_decision == SgaiDecision::PerViewer)
        .then(|| {
            let q = |k: &str| a.q(k).unwrap_or_default();
            audience::viewer_query(&q("sid"), &q("tg"))
        });
    let master_path = rest.ends_with("master.m3u8");
    if !master_path && !forged {
        audience::report_from(env, ch, &a.url, &cohort).await;
    }
    let shared = !(master_path || session.is_some() || forged || per_viewer.is_some())
        && cfg.cache_max_age_s > 0;
    let shared_key =
        shared.then(|| shared_playlist_key(&base, ch, &a.playlist_id, a.mode, &a.variant, &cohort));
    // (A blocking reload never takes a cached playlist: it asked for a
    // newer one.)
    if let Some(key) = shared_key.as_ref().filter(|_| !a.blocking) {
        if let Some(body) = get_shared(key).await {
            return respond(req, cfg, body, 0);
        }
    }
    let text = match fetch_origin(env, &a.origin_url, a.origin_timeout_ms).await? {
        Ok(t) => t,
        Err(failed) => return Ok(failed),
    };
    match hls::tokenize(&text) {
        Err(e) => return error(502, format!("origin playlist is not HLS: {e}")),
        Ok(t) if hls::is_master(&t) => return serve_master(req, env, ch, &a, text).await,
        Ok(_) if forged => return error(403, "session does not verify for this channel"),
        Ok(_) => {}
    }
    let chref = ChannelRef::new(&ch.org, &ch.slug);
    let mut reads = edge::Reads::default();
    let text = hold_back_inband(env, &base, ch, &chref, &cohort, text, &mut reads).await;
    let m = match media::parse(&text) {
        Ok(m) => m,
        // Bad upstream content fails open: the origin, unchanged.
        Err(_) => return respond(req, cfg, text.clone(), 2),
    };
    let events = if cfg.scte35_enabled {
        cues::detect(&m, &cfg.segmentation).events
    } else {
        Vec::new()
    };
    let mut settings = splice_settings(ch, session);
    // (Asset lists are named by SGAI playlists only: no HMAC otherwise.)
    if a.mode == Mode::Sgai {
        settings.cohort_param = audience::cohort_param(env, ch, &cohort);
    }
    settings.viewer_query = per_viewer;
    let mreq = edge::MediaRequest {
        origin: &text,
        m: &m,
        events: &events,
        cadence_ms: crate::origin::cadence_ms(cfg, &m),
        examined: !inband(cfg),
        ahead: u64::try_from(cfg.sgai_announce_ahead_segments.max(0)).unwrap_or(0),
        cohort: &cohort,
        playlist_url: &a.origin_url,
        variant: &a.variant,
        mode: a.mode,
        settings: &settings,
    };
    let served = drive(env, &base, &chref, &cohort, &mut reads, |r| {
        edge::playlist(&mreq, r)
    })
    .await;
    // A blocking reload for a part of the segment whose parts a break
    // withholds: once more, held until that segment is whole (else the
    // client gets nothing new and asks again at once, in a loop).
    if let (None, Some(n), Some(asked)) = (hold_for, served.output.withheld_msn, a.asked_part) {
        if asked >= n {
            return Box::pin(playlist_with(req, env, ch, rest, Some(n))).await;
        }
    }
    if let Some(key) = &shared_key {
        put_shared(key, cfg.max_age(m.target_duration), &served.output.playlist).await;
    }
    media_response(req, ch, served, m.target_duration)
}

/// The spliced media playlist as the viewer gets it, saying where its
/// breaks came from; what the splice could not do is logged.
fn media_response(
    req: &Request,
    ch: &StoredChannel,
    served: edge::Served,
    target: u64,
) -> Result<Response> {
    for reason in &served.output.report.reasons {
        worker_shared::metrics::log(
            worker_shared::metrics::Level::Warn,
            "splice_fallback",
            &[("org", &ch.org), ("channel", &ch.slug), ("reason", reason)],
        );
    }
    let mut r = respond(req, &ch.config, served.output.playlist, target)?;
    // Where this playlist's breaks came from (operators, tests): the KV
    // view, this location's copy of the DO's answer, or the DO.
    r.headers_mut()
        .set("X-CF-SSAI-Breaks", served.source.as_str())?;
    Ok(r)
}

/// The origin playlist (a blocking reload held as the origin holds it);
/// `Err` is the 502/504 the viewer gets.
pub(crate) async fn fetch_origin(
    env: &Env,
    url: &Url,
    timeout_ms: u64,
) -> Result<std::result::Result<String, Response>> {
    let failed = match worker_shared::get_text(
        url.as_str(),
        timeout_ms,
        &worker_shared::private_policy(env),
    )
    .await
    {
        Ok(t) => return Ok(Ok(t)),
        Err(worker_shared::FetchError::Timeout) => {
            error(504, format!("origin timed out after {timeout_ms} ms"))
        }
        Err(e) => error(502, format!("origin error: {e}")),
    };
    failed.map(Err)
}

/// The channel's splice settings for this request: our interstitial and
/// ad routes, and the viewer's session when ad segments are proxied.
pub(crate) fn splice_settings(
    ch: &StoredChannel,
    session: Option<String>,
) -> cf_ssai_core::splice::SpliceSettings {
    let prefix = format!("/{}/{}/", ch.org, ch.slug);
    let mut settings = ch.config.splice_settings(format!("{prefix}interstitials/"));
    if ch.config.proxy_ad_segments {
        settings.ad_proxy_prefix = Some(format!("{prefix}ad/"));
        settings.session = session;
    }
    settings
}

/// A shared media playlist this location keeps.
pub(crate) async fn get_shared(key: &str) -> Option<String> {
    let mut hit = Cache::default().get(key, false).await.ok()??;
    hit.text().await.ok()
}

/// In-band SCTE-35 is on for this channel: only the poller looks into
/// the media, so viewers get no segment it has not examined.
pub(crate) fn inband(cfg: &cf_ssai_core::control::config::ChannelConfig) -> bool {
    cfg.scte35_enabled && cfg.cue_source.inband()
}

/// The master playlist: every variant through us, with the mode and the
/// viewer's session carried on each URI.
async fn serve_master(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
    a: &Asked,
    text: String,
) -> Result<Response> {
    let mode_s = match a.mode {
        Mode::Ssai => "ssai",
        Mode::Sgai => "sgai",
    };
    // The viewer's session, bound to its cohort (`viewer_session`).
    let (viewer, sid, tg) = viewer_session(req, env, ch, a.q("sid"))?;
    let mut carry = vec![("mode", mode_s.to_string())];
    if let Some(sid) = sid {
        carry.push(("sid", sid));
        if !tg.is_empty() {
            carry.push(("tg", tg));
        }
        audience::report(env, ch, &viewer).await;
    }
    let prefix = format!("/{}/{}/", ch.org, ch.slug);
    let out = master::rewrite_master(&master::MasterInput {
        origin: &text,
        origin_url: &a.origin_url,
        self_prefix: &prefix,
        carry: &carry,
    });
    respond(req, &ch.config, out.unwrap_or(text), 2)
}

/// The viewer's targeting and cohort (`core::ads::targeting`), bound into
/// its session: every variant and rendition of this viewer gets the same
/// cohort, and nobody changes it by editing a URL. A session is ours only
/// if we signed it for this channel with this targeting; any other `sid`
/// is replaced. Without a session secret there are no sessions (no
/// server-side beacons, the default audience): fail closed. `tg` carries
/// no more than its uses need: the viewer's whole targeting (consent
/// string, IFA) only where the ad server is asked for this viewer alone;
/// else what its cohort shares (no personal strings in playlist URLs and
/// their logs). Returns (viewer, session, tg).
pub(crate) fn viewer_session(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
    sid: Option<String>,
) -> Result<(cf_ssai_core::ads::request::Viewer, Option<String>, String)> {
    let viewer = audience::viewer(req, env, ch)?;
    let tg = if ch.config.sgai_decision == SgaiDecision::PerViewer {
        cf_ssai_core::ads::targeting::encode(&viewer)
    } else if viewer.cohort.is_empty() {
        String::new()
    } else {
        let shared = cf_ssai_core::ads::targeting::cohort_viewer(&viewer, &ch.config.targeting);
        cf_ssai_core::ads::targeting::encode(&shared)
    };
    let sid = sid
        .filter(|s| {
            audience::verify(env, ch, s).is_some_and(|v| v.cohort == viewer.cohort && v.binds(&tg))
        })
        .or_else(|| mint_session(env, ch, &viewer.cohort, &tg));
    Ok((viewer, sid, tg))
}

/// In-band SCTE-35: the origin window cut back to what the sequencer has
/// examined (`core::splice::edge::inband_watermark`); unchanged otherwise.
async fn hold_back_inband(
    env: &Env,
    base: &str,
    ch: &StoredChannel,
    chref: &ChannelRef,
    cohort: &str,
    text: String,
    reads: &mut edge::Reads,
) -> String {
    if !inband(&ch.config) {
        return text;
    }
    let Ok(m0) = media::parse(&text) else {
        return text;
    };
    let cadence = crate::origin::cadence_ms(&ch.config, &m0);
    let Some(w) = drive(env, base, chref, cohort, reads, |r| {
        edge::inband_watermark(&m0, cadence, cohort, r)
    })
    .await
    else {
        return text;
    };
    let held = m0.held_back(w);
    if held.is_none() && m0.last_msn().is_some_and(|l| l > w) {
        worker_shared::metrics::log(
            worker_shared::metrics::Level::Warn,
            "inband_watermark_behind",
            &[
                ("org", &ch.org),
                ("channel", &ch.slug),
                (
                    "reason",
                    &format!(
                        "examined through {w}, window ends at {}",
                        m0.last_msn().unwrap_or(0)
                    ),
                ),
            ],
        );
    }
    held.unwrap_or(text)
}

/// Keep a shared media playlist at this location for `age` seconds.
pub(crate) async fn put_shared(key: &str, age: u32, body: &str) {
    if let Ok(mut copy) = Response::ok(body) {
        if copy
            .headers_mut()
            .set("Cache-Control", &format!("max-age={age}"))
            .is_ok()
        {
            let _ = Cache::default().put(key, copy).await;
        }
    }
}

/// The location cache key of a shared media playlist: only normalised
/// values (the origin playlist from `edge::cache_url`, the variant from
/// `master::variant_query`).
pub(crate) fn shared_playlist_key(
    base: &str,
    ch: &StoredChannel,
    playlist: &str,
    mode: Mode,
    variant: &Variant,
    cohort: &str,
) -> String {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    format!(
        "{base}/__cf-ssai/playlist/{}/{}/{}?mode={}&cohort={}&{}",
        enc(&ch.org),
        enc(&ch.slug),
        enc(playlist),
        match mode {
            Mode::Ssai => "ssai",
            Mode::Sgai => "sgai",
        },
        enc(cohort),
        master::variant_key(variant),
    )
}

/// Runs one of the core's edge functions to its answer, doing each read it
/// asks for (`core::splice::edge`: the rules live there, the I/O here).
pub(crate) async fn drive<T>(
    env: &Env,
    base: &str,
    ch: &ChannelRef,
    cohort: &str,
    reads: &mut edge::Reads,
    step: impl Fn(&edge::Reads) -> edge::Step<T>,
) -> T {
    loop {
        match step(reads) {
            edge::Step::Done(t) => return t,
            edge::Step::Need(need) => read(env, base, ch, cohort, need, reads).await,
        }
    }
}

/// One read the edge asked for, its result recorded in `reads`.
/// (`cohort`: the request's audience; this location's copy of the DO's
/// answer is kept per cohort.)
async fn read(
    env: &Env,
    base: &str,
    ch: &ChannelRef,
    cohort: &str,
    need: edge::Need,
    reads: &mut edge::Reads,
) {
    match need {
        edge::Need::View => reads.view = Some(kv_view(env, ch, cohort).await),
        edge::Need::Pods(keys) => {
            let got = futures::future::join_all(keys.iter().map(|k| splice_pod(env, ch, k))).await;
            reads.pods.extend(keys.into_iter().zip(got));
        }
        edge::Need::CachedAnswer => {
            reads.cached_answer = Some(cached_answer(base, ch, cohort).await)
        }
        edge::Need::Do(q) => {
            let answer = ask_do(
                env,
                base,
                ch,
                &q,
                reads.view.as_ref().and_then(|v| v.as_ref()),
            )
            .await;
            reads.do_answers.push((q, answer));
        }
    }
}

/// The consistent path: this window's cues to the Channel DO, its answer
/// cached at this location for a second (and its entries the view lacks
/// for the SGAI and ad routes).
async fn ask_do(
    env: &Env,
    base: &str,
    ch: &ChannelRef,
    q: &edge::DoQuery,
    view: Option<&ChannelView>,
) -> Option<ChannelBreaks> {
    let body = SyncRequest {
        channel: ch.clone(),
        events: q.events.clone(),
        cadence_ms: q.cadence_ms,
        checked_through_msn: q.checked_through_msn,
        window: q.window.clone(),
        cohort: q.cohort.clone(),
    };
    match ChannelClient::new(env, ch.clone()).sync(&body).await {
        Ok(b) => {
            put_answer(base, ch, &q.cohort, &b).await;
            for e in edge::entries_to_cache(&b, view) {
                cache_entry(base, ch, &q.cohort, e).await;
            }
            Some(b)
        }
        Err(e) => {
            worker_shared::metrics::log(
                worker_shared::metrics::Level::Error,
                "sequencer_unavailable",
                &[
                    ("org", &ch.org),
                    ("channel", &ch.slug),
                    ("reason", &e.to_string()),
                ],
            );
            worker_shared::count(env, &ch.org, "do_fallback_failures", 1).await;
            None
        }
    }
}

/// The channel's published view as KV has it (possibly stale).
/// Decoded as `cohort` is served (only its facts kept: `wire::decode_view_as`).
async fn kv_view(env: &Env, ch: &ChannelRef, cohort: &str) -> Option<ChannelView> {
    let bytes = env
        .kv(bindings::KV)
        .ok()?
        .get(&worker_shared::kv_breaks_key(&ch.org, &ch.slug))
        .bytes()
        .await
        .ok()??;
    // Binary (`core::wire`), or JSON from an object not yet redeployed.
    cf_ssai_core::wire::decode_view_as(&bytes, Some(cohort)).ok()
}

thread_local! {
    /// Decided pods never change: kept per isolate once read, by KV key,
    /// and shared (never copied) with each request that splices them.
    static PODS: std::cell::RefCell<std::collections::HashMap<String, Rc<Pod>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}
const PODS_KEPT: usize = 256;

/// A KV pod: this isolate's memory, else its key (cached at the location
/// for an hour: it never changes), binary or JSON.
async fn kv_pod(env: &Env, key: String) -> Option<Rc<Pod>> {
    if let Some(p) = PODS.with(|c| c.borrow().get(&key).cloned()) {
        return Some(p);
    }
    let bytes = env
        .kv(bindings::KV)
        .ok()?
        .get(&key)
        .cache_ttl(3600)
        .bytes()
        .await
        .ok()??;
    let p = Rc::new(cf_ssai_core::wire::decode_pod(&bytes).ok()?);
    PODS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= PODS_KEPT {
            c.clear();
        }
        c.insert(key, Rc::clone(&p));
    });
    Some(p)
}

/// What the splice reads of a break's pod: its lean binary value, else
/// (a pod decided before the lean key existed) the full one.
/// (A cohort's pod of the break when the key names one.)
async fn splice_pod(env: &Env, ch: &ChannelRef, k: &edge::PodKey) -> Option<Rc<Pod>> {
    let lean = if k.cohort.is_empty() {
        worker_shared::kv_splice_pod_key(&ch.org, &ch.slug, &k.break_id)
    } else {
        worker_shared::kv_cohort_pod_key(&ch.org, &ch.slug, &k.cohort, &k.break_id, true)
    };
    match kv_pod(env, lean).await {
        Some(p) => Some(p),
        None => full_pod(env, ch, k).await,
    }
}

/// A break's whole pod (tracking, error URLs: the beacon path, the asset
/// list and the ad routes), or a cohort's.
async fn full_pod(env: &Env, ch: &ChannelRef, k: &edge::PodKey) -> Option<Rc<Pod>> {
    let key = if k.cohort.is_empty() {
        worker_shared::kv_pod_key(&ch.org, &ch.slug, &k.break_id)
    } else {
        worker_shared::kv_cohort_pod_key(&ch.org, &ch.slug, &k.cohort, &k.break_id, false)
    };
    kv_pod(env, key).await
}

fn answer_cache_url(base: &str, ch: &ChannelRef, cohort: &str) -> String {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    format!(
        "{base}/__cf-ssai/do-answer/{}/{}?cohort={}",
        enc(&ch.org),
        enc(&ch.slug),
        enc(cohort)
    )
}

/// This location's copy of the DO's last answer for the channel, as
/// `cohort` is served.
async fn cached_answer(base: &str, ch: &ChannelRef, cohort: &str) -> Option<ChannelBreaks> {
    let mut hit = Cache::default()
        .get(answer_cache_url(base, ch, cohort), false)
        .await
        .ok()??;
    hit.json().await.ok()
}

async fn put_answer(base: &str, ch: &ChannelRef, cohort: &str, b: &ChannelBreaks) {
    let Ok(mut resp) = Response::from_json(b) else {
        return;
    };
    if resp
        .headers_mut()
        .set(
            "Cache-Control",
            &format!("max-age={}", edge::DO_ANSWER_TTL_S),
        )
        .is_err()
    {
        return;
    }
    if let Err(e) = Cache::default()
        .put(answer_cache_url(base, ch, cohort), resp)
        .await
    {
        console_warn!("DO answer cache put failed: {e}");
    }
}

/// `GET /{org}/{channel}/interstitials/{break}.json`
pub async fn asset_list(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
    break_id: &str,
) -> Result<Response> {
    let url = req.url()?;
    let offset = url
        .query_pairs()
        .find(|(k, _)| k == "_HLS_start_offset")
        .and_then(|(_, v)| v.parse::<f64>().ok());
    let Some(mut entry) = find_entry(req, env, ch, break_id).await else {
        return error(404, format!("no break {break_id}"));
    };
    let per_viewer = per_viewer_pod(req, env, ch, &mut entry).await;
    let prefix = format!("/{}/{}/ads/{}/", ch.org, ch.slug, break_id);
    // Server-side beacons: the session rides on to the ad playlists.
    let sid = counted_session(req, env, ch)?;
    // A demuxed primary's assets come in its shape (`sgai::ad_master`).
    let demuxed = demuxed_tracks(&url);
    let mut q: Vec<String> = sid.map(|s| format!("sid={s}")).into_iter().collect();
    if let Some(sid) = &per_viewer {
        // The ad playlists behind it read this viewer's pod.
        let sid: String = url::form_urlencoded::byte_serialize(sid.as_bytes()).collect();
        q.push(format!("pv={sid}"));
    }
    if let Some(c) = url.query_pairs().find(|(k, _)| k == "c") {
        // The cohort's signed value, on to its ad playlists.
        let c: String = url::form_urlencoded::byte_serialize(c.1.as_bytes()).collect();
        q.push(format!("c={c}"));
    }
    if demuxed {
        q.push("tracks=demuxed".into());
    }
    let q = if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    };
    let slate_q = if demuxed { "?tracks=demuxed" } else { "" };
    let doc = sgai::asset_list(&entry, offset, |i| match i {
        Some(i) => format!("{prefix}{i}.m3u8{q}"),
        None => format!("{prefix}slate.m3u8{slate_q}"),
    });
    let mut r = Response::from_json(&doc)?;
    cors(req, &ch.config, r.headers_mut())?;
    r.headers_mut().set("Cache-Control", "max-age=2")?;
    Ok(r)
}

/// `sgai_decision: per_viewer`: ask the ad server for this viewer alone
/// (its session's targeting: consent, IFA, key-values, all of it), within
/// the channel's decision budget; on success the entry gets that pod, kept
/// at the location for the ad routes behind the asset list (keyed by the
/// session), and the session is returned. Otherwise the entry keeps the
/// cohort's pod.
pub(crate) async fn per_viewer_pod(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
    entry: &mut BreakEntry,
) -> Option<String> {
    if ch.config.sgai_decision != SgaiDecision::PerViewer {
        return None;
    }
    let url = req.url().ok()?;
    let (sid, _, viewer) = audience::session_viewer(&url, env, ch)?;
    let chref = ChannelRef::new(&ch.org, &ch.slug);
    let base = cache_base(req).ok()?;
    // Decided once per (session, break) at this location: a re-fetched
    // asset list (a rejoin, a retry) gets the same ads, and the ad routes
    // behind an earlier one still index the same pod.
    let kept = entry_cache_url(&base, &chref, &per_viewer_key(&sid), &entry.record.id);
    if let Some(mut hit) = Cache::default().get(kept, false).await.ok().flatten() {
        if let Ok(e) = hit.json::<BreakEntry>().await {
            *entry = e;
            return Some(sid);
        }
    }
    // The session's frequency cap: what it was served in the last hour
    // at this location.
    let now = worker_shared::now_ms();
    let mut seen = session_seen(&base, &chref, &sid).await;
    seen.retain(|(_, t)| now - t < SEEN_FOR_MS);
    let session = cf_ssai_core::ads::request::SessionSeen {
        creatives: seen.iter().map(|(c, _)| c.clone()).collect(),
    };
    let pod = crate::channel_do::decide_within(
        env.clone(),
        chref.clone(),
        entry.record.clone(),
        viewer,
        ch.config.decision_timeout_ms.max(200),
        Some(session),
    )
    .await;
    if pod.items.is_empty() {
        return None;
    }
    seen.extend(pod.items.iter().map(|i| (i.creative_id.clone(), now)));
    // Bounded: an hour of breaks' ads is a few dozen.
    let excess = seen.len().saturating_sub(64);
    seen.drain(..excess);
    put_session_seen(&base, &chref, &sid, &seen).await;
    entry.pod = pod;
    cache_entry(&base, &chref, &per_viewer_key(&sid), entry).await;
    Some(sid)
}

/// A session's frequency cap looks back this far.
const SEEN_FOR_MS: i64 = 3_600_000;

fn seen_cache_url(base: &str, ch: &ChannelRef, sid: &str) -> String {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    format!(
        "{base}/__cf-ssai/seen/{}/{}/{}",
        enc(&ch.org),
        enc(&ch.slug),
        enc(sid)
    )
}

/// The creatives a session was served (per-viewer decisions at this
/// location), with when.
async fn session_seen(base: &str, ch: &ChannelRef, sid: &str) -> Vec<(String, i64)> {
    let Some(mut hit) = Cache::default()
        .get(seen_cache_url(base, ch, sid), false)
        .await
        .ok()
        .flatten()
    else {
        return Vec::new();
    };
    hit.json().await.unwrap_or_default()
}

async fn put_session_seen(base: &str, ch: &ChannelRef, sid: &str, seen: &[(String, i64)]) {
    let Ok(mut resp) = Response::from_json(&seen) else {
        return;
    };
    let age = SEEN_FOR_MS / 1000;
    if resp
        .headers_mut()
        .set("Cache-Control", &format!("max-age={age}"))
        .is_ok()
    {
        let _ = Cache::default()
            .put(seen_cache_url(base, ch, sid), resp)
            .await;
    }
}

/// The entry-cache "cohort" of one session's per-viewer pods.
fn per_viewer_key(sid: &str) -> String {
    format!("pv-{sid}")
}

/// Did the interstitial (or asset list) ask for a demuxed primary's shape?
fn demuxed_tracks(url: &Url) -> bool {
    url.query_pairs()
        .any(|(k, v)| k == "tracks" && v == "demuxed")
}

/// The viewer session of a request, when this channel counts ad
/// deliveries server-side (`proxy_ad_segments`).
pub(crate) fn counted_session(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
) -> Result<Option<String>> {
    if !ch.config.proxy_ad_segments {
        return Ok(None);
    }
    Ok(req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == "sid")
        .map(|(_, v)| v.into_owned())
        .filter(|s| verify_session(env, ch, s)))
}

/// Was `sid` signed by us, for this channel, within its lifetime?
pub(crate) fn verify_session(env: &Env, ch: &StoredChannel, sid: &str) -> bool {
    audience::verify(env, ch, sid).is_some()
}

/// A new signed session for this channel; `None` without a usable secret.
fn mint_session(env: &Env, ch: &StoredChannel, cohort: &str, tg: &str) -> Option<String> {
    let secret = audience::secret(env)?;
    let mut nonce = [0u8; 8];
    crate::random_bytes(&mut nonce);
    match session::mint(
        secret.as_bytes(),
        &format!("{}/{}", ch.org, ch.slug),
        worker_shared::now_ms() / 1000,
        nonce,
        &session::Binding {
            cohort,
            targeting: tg,
        },
    ) {
        Ok(t) => Some(t),
        Err(e) => {
            worker_shared::metrics::log(
                worker_shared::metrics::Level::Error,
                "sessions_unavailable",
                &[
                    ("org", &ch.org),
                    ("channel", &ch.slug),
                    ("reason", &e.to_string()),
                ],
            );
            None
        }
    }
}

/// `GET /{org}/{channel}/ad/{break}/{item}/{bandwidth}/{pos}.{ext}?sid=`:
/// a proxied ad segment. Redirects to the media and, for a session, queues
/// the beacons this delivery crosses (impression/start on the first
/// segment, each quartile when crossed, complete on the last). Deduped
/// downstream, so reloads and re-fetches never fire twice.
pub async fn ad_segment(
    req: &Request,
    env: &Env,
    ctx: &Context,
    ch: &StoredChannel,
    parts: &[&str],
) -> Result<Response> {
    let Some(route) = AdSegmentRoute::parse(parts) else {
        return error(404, "no such ad segment");
    };
    let (brk, item_idx, pos) = (route.break_id, route.item, route.pos);
    let Some(entry) = find_entry(req, env, ch, brk).await else {
        return error(404, format!("no break {brk}"));
    };
    let Some(it) = entry.pod.items.get(item_idx) else {
        return error(404, "no such ad");
    };
    // An ad may come in TS and fMP4 at one bandwidth: the route's extension
    // says which one the playlist named.
    let Some(r) = it.renditions.iter().find(|r| route.matches(r)) else {
        return error(404, "no such rendition");
    };
    let Some(seg) = r.segments.get(pos as usize) else {
        return error(404, "no such segment");
    };
    // Never redirect to a URI we would not render (checked at write time
    // too; a value stored before that check, or a third party's, lands here).
    if let Err(e) = cf_ssai_core::model::safe_uri(&seg.uri) {
        return error(502, format!("ad segment URI refused: {e}"));
    }
    let msgs = match beacon_session(req, env, ch).await? {
        Some(sid) => {
            let h = req.headers();
            let device =
                cf_ssai_core::ads::beacon::Device::from_headers(|name| h.get(name).ok().flatten());
            let mut msgs = cf_ssai_core::ads::beacon::for_delivery(
                &entry.record.id,
                it,
                r,
                pos,
                &sid,
                &device,
                worker_shared::now_ms(),
            );
            for m in &mut msgs {
                m.org.clone_from(&ch.org);
                m.channel.clone_from(&ch.slug);
            }
            msgs
        }
        None => Vec::new(),
    };
    enqueue_beacons(env, ctx, msgs)?;
    let mut resp = Response::empty()?.with_status(302);
    resp.headers_mut().set("Location", &seg.uri)?;
    resp.headers_mut().set("Cache-Control", "no-store")?;
    cors(req, &ch.config, resp.headers_mut())?;
    Ok(resp)
}

/// The viewer's session when this delivery may fire beacons: a session we
/// signed, from a client address within its beacon limit (past it the
/// viewer still gets the segment, and nothing is fired).
async fn beacon_session(req: &Request, env: &Env, ch: &StoredChannel) -> Result<Option<String>> {
    let url = req.url()?;
    let Some(sid) = url
        .query_pairs()
        .find(|(k, _)| k == "sid")
        .map(|(_, v)| v.into_owned())
        .filter(|s| verify_session(env, ch, s))
    else {
        return Ok(None);
    };
    let ip = worker_shared::client_ip(req);
    let within = worker_shared::within_limit(
        env,
        bindings::BEACON_LIMITER,
        &format!("{}|{}/{}", ip.as_deref().unwrap_or(""), ch.org, ch.slug),
    )
    .await;
    if !within {
        worker_shared::count(env, &ch.org, "beacons_rate_limited", 1).await;
    }
    Ok(Some(sid).filter(|_| within))
}

/// Beacons onto the queue, off the response path (the redirect does not
/// wait), chunked to sendBatch's limits: one oversized batch loses all.
fn enqueue_beacons(
    env: &Env,
    ctx: &Context,
    msgs: Vec<cf_ssai_core::ads::beacon::BeaconMessage>,
) -> Result<()> {
    if msgs.is_empty() {
        return Ok(());
    }
    let q = env.queue(bindings::BEACONS)?;
    let chunks = cf_ssai_core::ads::beacon::batches(
        msgs,
        cf_ssai_core::ads::beacon::MAX_BATCH_MESSAGES,
        cf_ssai_core::ads::beacon::MAX_BATCH_BYTES,
    );
    ctx.wait_until(async move {
        for chunk in chunks {
            if let Err(e) = q.send_batch(chunk).await {
                worker_shared::metrics::log(
                    worker_shared::metrics::Level::Error,
                    "beacon_enqueue_failed",
                    &[("reason", &e.to_string())],
                );
            }
        }
    });
    Ok(())
}

/// `GET /{org}/{channel}/ads/{break}/{i|slate}.m3u8`: an ad's renditions.
pub async fn ad_master(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
    break_id: &str,
    which: &str,
) -> Result<Response> {
    let Some(entry) = find_entry(req, env, ch, break_id).await else {
        return error(404, format!("no break {break_id}"));
    };
    let sid = counted_session(req, env, ch)?;
    let demuxed = demuxed_tracks(&req.url()?);
    let (renditions, idx) = match which {
        "slate" => (&entry.pod.slate.renditions, None),
        i => match i
            .parse::<usize>()
            .ok()
            .and_then(|i| sgai::item(&entry, i).map(|it| (it, i)))
        {
            Some((item, i)) => (&item.renditions, Some(i)),
            None => return error(404, "no such ad"),
        },
    };
    let renditions: Vec<_> = sgai::asset_renditions(renditions)
        .into_iter()
        .cloned()
        .collect();
    let body = match (idx, sid) {
        // Counted: our media playlists, whose segments go through /ad/.
        (Some(i), Some(sid)) => {
            let pv = per_viewer_session(req, env, ch)
                .map(|s| {
                    let s: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
                    format!("&pv={s}")
                })
                .unwrap_or_default();
            sgai::ad_master(&renditions, demuxed, |r| {
                format!(
                    "/{}/{}/ads/{break_id}/{i}/{}.m3u8?sid={sid}{pv}",
                    ch.org, ch.slug, r.bandwidth
                )
            })
        }
        _ => sgai::ad_master(&renditions, demuxed, |r| r.playlist_url.clone()),
    };
    respond(req, &ch.config, body, 2)
}

/// `GET /{org}/{channel}/ads/{break}/{item}/{bandwidth}.m3u8?sid=`: an
/// SGAI asset's media playlist with every segment through the `/ad/` proxy
/// route, so a session's deliveries fire its beacons server-side.
pub async fn ad_media(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
    break_id: &str,
    item: &str,
    bw: &str,
) -> Result<Response> {
    let Some(sid) = counted_session(req, env, ch)? else {
        return error(
            404,
            "ad media playlists are served for counted sessions only",
        );
    };
    let (Ok(i), Ok(bw)) = (item.parse::<usize>(), bw.parse::<u64>()) else {
        return error(404, "no such ad rendition");
    };
    let Some(entry) = find_entry(req, env, ch, break_id).await else {
        return error(404, format!("no break {break_id}"));
    };
    let Some(r) = sgai::item(&entry, i).and_then(|it| {
        sgai::asset_renditions(&it.renditions)
            .into_iter()
            .find(|r| r.bandwidth == bw)
    }) else {
        return error(404, "no such ad rendition");
    };
    let prefix = format!("/{}/{}/ad/", ch.org, ch.slug);
    let body = sgai::ad_media(r, |pos, _uri| {
        AdSegmentRoute::new(break_id, i, r, pos as u32).to_path(&prefix, Some(&sid))
    });
    respond(req, &ch.config, body, 2)
}

/// A break by id for the SGAI and ad routes: the KV copy, else the entry
/// this location cached when its playlist path asked the DO. Never the DO
/// itself: these ids come from the URL, so anyone can make up millions,
/// and each would otherwise be a call to the channel's one object.
pub(crate) async fn find_entry(
    req: &Request,
    env: &Env,
    ch: &StoredChannel,
    id: &str,
) -> Option<cf_ssai_core::model::BreakEntry> {
    if id.is_empty() || id.len() > 160 {
        return None;
    }
    let chref = &ChannelRef::new(&ch.org, &ch.slug);
    // A per-viewer pod this location decided for the session.
    if let Some(sid) = per_viewer_session(req, env, ch) {
        if let Ok(base) = cache_base(req) {
            let key = entry_cache_url(&base, chref, &per_viewer_key(&sid), id);
            if let Some(mut hit) = Cache::default().get(key, false).await.ok().flatten() {
                if let Ok(e) = hit.json().await {
                    return Some(e);
                }
            }
        }
    }
    let cohort = request_cohort(req, env, ch);
    if let Some(record) = kv_view(env, chref, &cohort)
        .await
        .and_then(|v| v.find(id).cloned())
    {
        let key = edge::PodKey::of(&record, &cohort);
        if let Some(pod) = full_pod(env, chref, &key).await {
            return Some(BreakEntry {
                record,
                pod: Pod::clone(&pod),
                cohort_pods: Default::default(),
            });
        }
    }
    let base = cache_base(req).ok()?;
    let mut hit = Cache::default()
        .get(entry_cache_url(&base, chref, &cohort, id), false)
        .await
        .ok()??;
    hit.json().await.ok()
}

/// The session of an ad route's `pv=` (a per-viewer asset list's), when
/// it verifies.
fn per_viewer_session(req: &Request, env: &Env, ch: &StoredChannel) -> Option<String> {
    let pv = audience::query(&req.url().ok()?, "pv")?;
    audience::verify(env, ch, &pv).map(|_| pv)
}

/// The cohort an ad route serves: the asset list's signed `c=`, else the
/// viewer's session's, else the default audience.
fn request_cohort(req: &Request, env: &Env, ch: &StoredChannel) -> String {
    let Ok(url) = req.url() else {
        return String::new();
    };
    let q = |k: &str| audience::query(&url, k);
    q("c")
        .and_then(|c| audience::cohort_of_param(env, ch, &c))
        .or_else(|| {
            q("sid")
                .and_then(|s| audience::verify_cohort(env, ch, &s))
                .map(|s| s.cohort)
        })
        .unwrap_or_default()
}

/// How long a location keeps an entry it got from the DO: by then its KV
/// copy has caught up (KV propagates within about a minute).
const ENTRY_CACHE_S: u32 = 120;

/// This request's origin, the namespace of our Cache API keys.
pub fn cache_base(req: &Request) -> Result<String> {
    let u = req.url()?;
    Ok(format!(
        "{}://{}",
        u.scheme(),
        u.host_str().unwrap_or("cf-ssai")
    ))
}

fn entry_cache_url(base: &str, ch: &ChannelRef, cohort: &str, id: &str) -> String {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    format!(
        "{base}/__cf-ssai/entry/{}/{}/{}?cohort={}",
        enc(&ch.org),
        enc(&ch.slug),
        enc(id),
        enc(cohort)
    )
}

async fn cache_entry(
    base: &str,
    ch: &ChannelRef,
    cohort: &str,
    e: &cf_ssai_core::model::BreakEntry,
) {
    let Ok(mut resp) = Response::from_json(e) else {
        return;
    };
    if resp
        .headers_mut()
        .set("Cache-Control", &format!("max-age={ENTRY_CACHE_S}"))
        .is_err()
    {
        return;
    }
    if let Err(err) = Cache::default()
        .put(entry_cache_url(base, ch, cohort, &e.record.id), resp)
        .await
    {
        console_warn!("entry cache put failed: {err}");
    }
}

fn respond(
    req: &Request,
    cfg: &cf_ssai_core::control::config::ChannelConfig,
    body: String,
    target: u64,
) -> Result<Response> {
    let mut r = Response::ok(body)?;
    let h = r.headers_mut();
    h.set("Content-Type", M3U8)?;
    h.set("Cache-Control", &format!("max-age={}", cfg.max_age(target)))?;
    // Mode and variant are in the URL, and the auto mode reads these.
    h.set("Vary", "User-Agent, X-Interstitials")?;
    cors(req, cfg, h)?;
    Ok(r)
}

pub fn cors(
    req: &Request,
    cfg: &cf_ssai_core::control::config::ChannelConfig,
    h: &mut Headers,
) -> Result<()> {
    let origin = req.headers().get("Origin")?;
    let allow = if cfg.cors_origins.iter().any(|o| o == "*") {
        Some("*".to_string())
    } else {
        origin.filter(|o| cfg.cors_origins.iter().any(|a| a == o))
    };
    if let Some(a) = allow {
        h.set("Access-Control-Allow-Origin", &a)?;
        h.set("Access-Control-Expose-Headers", "Content-Length")?;
    }
    Ok(())
}
