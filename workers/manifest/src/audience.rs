//! Who a playback request plays as: the viewer's targeting on a master
//! request (`core::ads::targeting`), its cohort on every request after
//! (from the signed session), and the reports that tell the Channel DO
//! which cohorts are watching. The rules are the core's; this reads the
//! request and does the I/O.

use cf_ssai_core::ads::targeting::{self, RequestFacts, Viewer};
use cf_ssai_core::control::{audience, session};
use std::cell::RefCell;
use std::collections::HashMap;
use worker::*;
use worker_shared::channel_client::{ChannelClient, ChannelRef, CohortReport};
use worker_shared::StoredChannel;

/// The wrangler var naming a request header trusted for the viewer's
/// country (local stacks and tests: `CF-IPCountry`). Unset in production,
/// where the country is Cloudflare's own request metadata and a header a
/// client sends is never read.
const TRUSTED_GEO_HEADER: &str = "TRUSTED_GEO_HEADER";

/// A cohort is reported at most this often per isolate.
const REPORT_EVERY_MS: i64 = 60_000;

thread_local! {
    /// When this isolate last reported each (channel, cohort).
    static REPORTED: RefCell<HashMap<String, i64>> = RefCell::new(HashMap::new());
}
const REPORTED_KEPT: usize = 4096;

/// The viewer of a master request, from the request's metadata, headers
/// and query.
pub fn viewer(req: &Request, env: &Env, ch: &StoredChannel) -> Result<Viewer> {
    let trusted = env
        .var(TRUSTED_GEO_HEADER)
        .ok()
        .map(|v| v.to_string())
        .filter(|v| !v.is_empty());
    let country = match &trusted {
        Some(h) => req.headers().get(h)?,
        None => req.cf().and_then(|cf| cf.country()),
    };
    let region = match &trusted {
        Some(_) => None,
        None => req.cf().and_then(|cf| cf.region_code()),
    };
    let ua = req.headers().get("User-Agent")?;
    let device_ua = req.headers().get("X-Device-User-Agent")?;
    let query: Vec<(String, String)> = req
        .url()?
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Ok(targeting::from_request(
        &RequestFacts {
            country: country.as_deref(),
            region: region.as_deref(),
            user_agent: ua.as_deref(),
            device_user_agent: device_ua.as_deref(),
            query: &query,
        },
        &ch.config.targeting,
    ))
}

/// The audience a media request is served as.
pub enum Audience {
    /// The cohort ("" the default); `verified`: the request carries a
    /// session (and targeting) we signed.
    Viewer { cohort: String, verified: bool },
    /// A session that does not verify on a channel that targets: refused
    /// (else anyone could pick another cohort's ads by editing a URL).
    Forged,
}

/// The audience of a media request: from its `sid` (and the `tg` that
/// session was minted with).
pub fn of_request(url: &Url, env: &Env, ch: &StoredChannel) -> Audience {
    let q = |k: &str| query(url, k);
    let targets = !ch.config.targeting.keys.is_empty();
    let Some(sid) = q("sid") else {
        return Audience::Viewer {
            cohort: String::new(),
            verified: false,
        };
    };
    let tg = q("tg").unwrap_or_default();
    match verify_cohort(env, ch, &sid).filter(|s| s.binds(&tg)) {
        Some(s) => Audience::Viewer {
            // The session's cohort, even if the channel stopped targeting:
            // its viewers keep their pods and their discontinuity count
            // (it is no longer reported, and ages out of the sequencer).
            cohort: s.cohort,
            verified: true,
        },
        None if targets => Audience::Forged,
        None => Audience::Viewer {
            cohort: String::new(),
            verified: false,
        },
    }
}

/// The wrangler secret that signs viewer sessions (and cohort tags).
const SESSION_SECRET: &str = "SESSION_SECRET";

/// The session secret, when the deployment has one.
pub fn secret(env: &Env) -> Option<String> {
    env.secret(SESSION_SECRET).ok().map(|s| s.to_string())
}

/// The asset-list query of a per-viewer SGAI decision: the viewer's
/// session and targeting (`sid=…&tg=…`), for HLS and DASH alike.
pub fn viewer_query(sid: &str, tg: &str) -> String {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    format!("sid={}&tg={}", enc(sid), enc(tg))
}

/// A query parameter of a request URL (the first, decoded).
pub fn query(url: &Url, k: &str) -> Option<String> {
    url.query_pairs()
        .find(|(a, _)| a == k)
        .map(|(_, v)| v.into_owned())
}

/// The verified session of `sid` for this channel.
pub fn verify(env: &Env, ch: &StoredChannel, sid: &str) -> Option<session::Session> {
    verify_within(env, ch, sid, session::DEFAULT_TTL_S)
}

/// A session's cohort: signed by us for this channel, however old. The
/// lifetime bounds what a session may fire (beacons), not what it plays:
/// a viewer watching past a day keeps its ads and its playlist's
/// discontinuity count instead of being refused.
pub fn verify_cohort(env: &Env, ch: &StoredChannel, sid: &str) -> Option<session::Session> {
    verify_within(env, ch, sid, i64::MAX)
}

fn verify_within(env: &Env, ch: &StoredChannel, sid: &str, ttl_s: i64) -> Option<session::Session> {
    let secret = secret(env)?;
    session::verify(
        secret.as_bytes(),
        sid,
        &format!("{}/{}", ch.org, ch.slug),
        worker_shared::now_ms() / 1000,
        ttl_s,
    )
    .ok()
}

/// The `c=` value a cohort's asset-list URLs carry.
pub fn cohort_param(env: &Env, ch: &StoredChannel, cohort: &str) -> Option<String> {
    let secret = secret(env)?;
    audience::cohort_param(
        secret.as_bytes(),
        &format!("{}/{}", ch.org, ch.slug),
        cohort,
    )
}

/// The cohort an asset-list request's `c=` names, when it verifies.
pub fn cohort_of_param(env: &Env, ch: &StoredChannel, param: &str) -> Option<String> {
    let secret = secret(env)?;
    audience::verify_cohort_param(secret.as_bytes(), &format!("{}/{}", ch.org, ch.slug), param)
}

/// Tell the Channel DO that viewers of `viewer.cohort` are watching (what
/// they share, never one viewer's consent string or device id:
/// `targeting::cohort_viewer`), at most once a minute per isolate and
/// cohort: DO calls per minute are bounded by isolates × cohorts, not
/// viewers. A failed report is retried on the next request after a minute.
pub async fn report(env: &Env, ch: &StoredChannel, viewer: &Viewer) {
    if !ch.config.targeting.keys.is_empty() && due(ch, &viewer.cohort) {
        send(env, ch, viewer).await;
    }
}

/// Is a report of this cohort due from this isolate (and so taken)?
fn due(ch: &StoredChannel, cohort: &str) -> bool {
    if cohort.is_empty() {
        return false;
    }
    let key = format!("{}/{}/{cohort}", ch.org, ch.slug);
    let now = worker_shared::now_ms();
    REPORTED.with(|r| {
        let mut r = r.borrow_mut();
        if r.get(&key).is_some_and(|t| now - t < REPORT_EVERY_MS) {
            return false;
        }
        if r.len() >= REPORTED_KEPT {
            r.clear();
        }
        r.insert(key, now);
        true
    })
}

async fn send(env: &Env, ch: &StoredChannel, viewer: &Viewer) {
    let chref = ChannelRef::new(&ch.org, &ch.slug);
    let body = CohortReport {
        channel: chref.clone(),
        viewer: targeting::cohort_viewer(viewer, &ch.config.targeting),
    };
    // Bounded: a report is worth less than the playlist it rides on (a
    // slow Channel DO delays this one request by at most this, and the
    // report is tried again a minute later).
    let client = ChannelClient::new(env, chref);
    let call = std::pin::pin!(client.cohort_seen(&body));
    let limit = std::pin::pin!(Delay::from(std::time::Duration::from_millis(
        REPORT_WAIT_MS
    )));
    let reason = match futures::future::select(call, limit).await {
        futures::future::Either::Left((Ok(_), _)) => return,
        futures::future::Either::Left((Err(e), _)) => e.to_string(),
        futures::future::Either::Right(_) => format!("no answer in {REPORT_WAIT_MS} ms"),
    };
    worker_shared::metrics::log(
        worker_shared::metrics::Level::Warn,
        "cohort_report_failed",
        &[("org", &ch.org), ("channel", &ch.slug), ("reason", &reason)],
    );
}

/// How long a request waits for its cohort report.
const REPORT_WAIT_MS: u64 = 1000;

/// A media request's report: the viewer its `tg` names (the session has
/// already verified it), when it decodes.
pub async fn report_from(env: &Env, ch: &StoredChannel, url: &Url, cohort: &str) {
    if ch.config.targeting.keys.is_empty() || !due(ch, cohort) {
        return;
    }
    let tg = query(url, "tg").unwrap_or_default();
    // Only a `tg` that still names this cohort under the channel's keys
    // (not one shortened to fit, nor one from before the keys changed):
    // a cohort's targeting must be what its viewers share.
    if let Ok(v) = targeting::decode(&tg) {
        if targeting::cohort_of(&v, &ch.config.targeting) == cohort {
            let mut v = v;
            v.cohort = cohort.to_string();
            send(env, ch, &v).await;
        }
    }
}

/// A request's verified session and the targeting it was minted with
/// (`sid`, `tg`), with the viewer that targeting names.
pub fn session_viewer(
    url: &Url,
    env: &Env,
    ch: &StoredChannel,
) -> Option<(String, String, Viewer)> {
    let q = |k: &str| query(url, k);
    let sid = q("sid")?;
    let tg = q("tg").unwrap_or_default();
    let s = verify(env, ch, &sid).filter(|s| s.binds(&tg))?;
    let mut v = if tg.is_empty() {
        Viewer::default()
    } else {
        targeting::decode(&tg).ok()?
    };
    v.cohort = s.cohort;
    Some((sid, tg, v))
}
