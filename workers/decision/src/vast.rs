//! VAST tags for the waterfall: fetch (within the budget), follow wrappers
//! to a depth of 5, map creatives to conditioned media from the ad library
//! (by creative id or UniversalAdId), and report rejected ads to their
//! `<Error>` URLs through the beacon queue. Parsing and merging are the
//! core's (`cf_ssai_core::ads::vast`).

use cf_ssai_core::ads::beacon::{self, BeaconMessage, TrackingEvent, TrackingEvent::Error};
use cf_ssai_core::ads::conditioning::{self, JobRequest, JobState};
use cf_ssai_core::ads::decision::{self as core_decision, TtlCache};
use cf_ssai_core::ads::pod::{self as core_pod, TrackingLimits};
use cf_ssai_core::ads::reason::{CallError, Reason};
use cf_ssai_core::ads::vast::{self as core_vast, error_code, Creative, VastAd};
use cf_ssai_core::model::{AdRendition, PodItem};
use std::cell::RefCell;
use worker::*;
use worker_shared::{bindings, now_ms};

pub const MAX_WRAPPER_DEPTH: usize = 5;

/// The org's conditioned media and what is known about conditioning: what
/// VAST creatives are mapped against, and where the decision notes the
/// creatives that need a conditioner (recorded after the answer).
#[derive(Default)]
pub struct Library {
    /// Every active ad of the channel (house ads and conditioned ones).
    pub items: Vec<PodItem>,
    /// Source (URL, size) of each conditioned ad, by ad id (every
    /// conditioned ad is here; house ads are not).
    pub sources: std::collections::HashMap<String, (String, u64)>,
    /// Jobs not ready, by id (a failed one is reported as such).
    pub jobs: std::collections::HashMap<String, JobState>,
    /// Creatives seen without conditioned media (or with a changed source).
    pub wanted: RefCell<Vec<JobRequest>>,
    /// The org's conditioning settings (the ladder's top rung ranks sources).
    pub settings: conditioning::Settings,
}
/// Variants of an HLS MediaFile master we read at most.
const MAX_HLS_VARIANTS: usize = 4;

thread_local! {
    /// VAST/VMAP responses per isolate (a few seconds): a burst of breaks
    /// across channels sharing a tag costs one ad-server request.
    static CACHE: RefCell<TtlCache> = RefCell::new(TtlCache::new(8 << 20));
    /// Network fetches made by this isolate: a tag resolved wholly from
    /// the cache made none, and is no ad-server request in the metrics.
    static FETCHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Network fetches so far (see `FETCHES`).
pub fn fetches() -> u64 {
    FETCHES.with(|f| f.get())
}

/// Where a VAST document comes from.
pub enum TagSource<'a> {
    /// A tag URL (macros filled), the cache key (the tag before cache
    /// busters were filled, with the viewer's dimensions) and the label
    /// reasons name it by: the tag as configured, macros unfilled — the
    /// filled URL carries the viewer's consent strings and IFA, which
    /// must not reach pods' reasons or logs.
    Url {
        url: &'a str,
        cache_key: &'a str,
        label: &'a str,
    },
    /// VAST carried inline (VMAP `VASTAdData`).
    Inline(&'a str),
}

/// Fetch a text document through the per-isolate cache.
pub async fn fetch_cached(
    url: &str,
    cache_key: &str,
    ttl_s: u32,
    deadline: i64,
    private_ok: &str,
) -> std::result::Result<String, CallError> {
    cf_ssai_core::control::config::check_url_allowing(url, private_ok)
        .map_err(|e| CallError::Refused(e.to_string()))?;
    let now = now_ms();
    if ttl_s > 0 {
        if let Some(hit) = CACHE.with(|c| c.borrow().get(cache_key, now).map(String::from)) {
            return Ok(hit);
        }
    }
    let left = deadline - now;
    if left <= 0 {
        return Err(CallError::BudgetSpent);
    }
    FETCHES.with(|f| f.set(f.get() + 1));
    let text = worker_shared::get_text(url, left as u64, private_ok)
        .await
        .map_err(call_error)?;
    if ttl_s > 0 {
        CACHE.with(|c| {
            c.borrow_mut().put(
                cache_key.to_string(),
                text.clone(),
                ttl_s as i64 * 1000,
                now_ms(),
            )
        });
    }
    Ok(text)
}

/// The usable pod items of one VAST tag, in play order (their tracking is
/// bounded when the pod is built); the `<Error>` URLs of what it rejects
/// are reported within `limits`.
#[allow(clippy::too_many_arguments)]
pub async fn resolve(
    env: &Env,
    src: TagSource<'_>,
    library: &Library,
    cadence_ms: u64,
    budget_ms: u64,
    cache_s: u32,
    limits: TrackingLimits,
    reasons: &mut Vec<Reason>,
) -> Vec<PodItem> {
    let deadline = now_ms() + budget_ms as i64;
    let private_ok = &worker_shared::private_policy(env);
    let (label, doc) = match src {
        TagSource::Url {
            url,
            cache_key,
            label,
        } => (
            label.to_string(),
            fetch_cached(url, cache_key, cache_s, deadline, private_ok)
                .await
                .and_then(|t| parse_doc(&t)),
        ),
        TagSource::Inline(text) => ("VMAP VASTAdData".to_string(), parse_doc(text)),
    };
    let url = label.as_str();
    let doc = match doc {
        Ok(d) => d,
        Err(e) => {
            reasons.push(Reason::call_failed(format!("VAST {url}"), e));
            return Vec::new();
        }
    };
    let mut items = Vec::new();
    let mut errors: Vec<(String, u16)> = Vec::new();
    for ad in core_vast::ordered_inline_ads(&doc)
        .into_iter()
        .cloned()
        .chain(
            unwrap_all(
                &doc,
                deadline,
                private_ok,
                cache_s,
                limits,
                reasons,
                &mut errors,
            )
            .await,
        )
    {
        let hls = hls_renditions(&ad, &library.items, deadline, private_ok, reasons).await;
        match map_ad(&ad, library, &hls, cadence_ms) {
            Ok(item) => items.push(item),
            Err((why, code)) => {
                reasons.push(why);
                let who = format!("VAST ad {}", ad.id);
                let urls = core_pod::first_urls(&who, Error, &ad.errors, limits, reasons);
                errors.extend(urls.iter().map(|u| (u.clone(), code)));
            }
        }
    }
    if doc.ads.is_empty() {
        reasons.push(Reason::NoFill {
            at: format!("VAST {url}"),
            detail: "no ads".into(),
        });
        let who = format!("VAST {url}");
        let urls = core_pod::first_urls(&who, Error, &doc.errors, limits, reasons);
        errors.extend(urls.iter().map(|u| (u.clone(), 303)));
    }
    core_pod::limit_reports(&mut errors, limits, reasons);
    report_errors(env, errors).await;
    items
}

/// Follow each wrapper of the document to its inline ad, merging wrapper
/// tracking; loops and depth over 5 are errors 302.
async fn unwrap_all(
    doc: &core_vast::VastDoc,
    deadline: i64,
    private_ok: &str,
    cache_s: u32,
    limits: TrackingLimits,
    reasons: &mut Vec<Reason>,
    errors: &mut Vec<(String, u16)>,
) -> Vec<VastAd> {
    let mut out = Vec::new();
    // Every wrapper of a failed chain reports to its own `<Error>` URLs,
    // each list within the per-event limit.
    let report = |chain: &[VastAd],
                  code: u16,
                  reasons: &mut Vec<Reason>,
                  errors: &mut Vec<(String, u16)>| {
        for a in chain {
            let who = format!("VAST wrapper {}", a.id);
            let urls = core_pod::first_urls(&who, Error, &a.errors, limits, reasons);
            errors.extend(urls.iter().map(|e| (e.clone(), code)));
        }
    };
    for w in doc.ads.iter().filter(|a| a.is_wrapper) {
        let mut chain: Vec<VastAd> = vec![w.clone()];
        let mut seen: Vec<String> = Vec::new();
        let mut next = w.wrapper_uri().map(String::from);
        let mut resolved = None;
        while let Some(u) = next.take() {
            if chain.len() > MAX_WRAPPER_DEPTH || seen.contains(&u) {
                reasons.push(Reason::WrapperLimit {
                    wrapper: w.id.clone(),
                    url: u.clone(),
                });
                report(&chain, error_code::WRAPPER_LIMIT, reasons, errors);
                break;
            }
            seen.push(u.clone());
            match fetch_cached(&u, &u, cache_s, deadline, private_ok)
                .await
                .and_then(|t| parse_doc(&t))
            {
                Ok(d) => match d.ads.into_iter().next() {
                    Some(a) if a.is_wrapper => {
                        next = a.wrapper_uri().map(String::from);
                        chain.push(a);
                    }
                    Some(a) => resolved = Some(a),
                    None => {
                        reasons.push(Reason::NoFill {
                            at: format!("VAST wrapper {}", w.id),
                            detail: format!("no ads after {u}"),
                        });
                        report(&chain, error_code::NO_ADS_AFTER_WRAPPER, reasons, errors);
                    }
                },
                Err(e) => {
                    reasons.push(Reason::call_failed(
                        format!("VAST wrapper {}: {u}", w.id),
                        e,
                    ));
                    report(&chain, error_code::WRAPPER_TIMEOUT, reasons, errors);
                }
            }
        }
        if let Some(mut inline) = resolved {
            for wrapper in chain.iter().rev() {
                core_vast::merge_wrapper(&mut inline, wrapper);
            }
            if inline.sequence.is_none() {
                inline.sequence = w.sequence;
            }
            out.push(inline);
        }
    }
    out
}

fn library_match<'a>(c: &Creative, library: &'a [PodItem]) -> Option<&'a PodItem> {
    library_match_at(c, library, 0)
}

/// The library entry of a creative; with a cadence, one conditioned to it
/// first (a conditioner registers one ad per cadence the org uses).
fn library_match_at<'a>(
    c: &Creative,
    library: &'a [PodItem],
    cadence_ms: u64,
) -> Option<&'a PodItem> {
    let mut matches = library.iter().filter(|l| {
        (!c.id.is_empty() && l.creative_id == c.id)
            || (!c.ad_id.is_empty() && l.creative_id == c.ad_id)
            || (c.universal_ad_id.is_some() && l.universal_ad_id == c.universal_ad_id)
    });
    let first = matches.clone().next();
    let fits = |l: &&PodItem| {
        let segs = l.segments_at(cadence_ms) as usize;
        l.renditions
            .iter()
            .any(|r| cf_ssai_core::ads::pod::fits_cadence(r, cadence_ms, segs))
    };
    if cadence_ms == 0 {
        return first;
    }
    matches.find(fits).or(first)
}

/// Renditions read straight from the creative's HLS MediaFile, when the ad
/// library has no conditioned copy: the master's variants (up to 4) or the
/// media playlist itself. Whether they fit the cadence is `map_ad`'s call.
async fn hls_renditions(
    ad: &VastAd,
    library: &[PodItem],
    deadline: i64,
    private_ok: &str,
    reasons: &mut Vec<Reason>,
) -> Vec<AdRendition> {
    let Some(c) = ad.creatives.iter().find(|c| c.linear) else {
        return Vec::new();
    };
    if library_match(c, library).is_some() {
        return Vec::new();
    }
    let Some(mf) = c.media_files.iter().find(|m| m.is_hls()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let result: std::result::Result<(), CallError> = async {
        let base =
            url::Url::parse(&mf.url).map_err(|e| CallError::Failed(format!("{}: {e}", mf.url)))?;
        let text = fetch_cached(&mf.url, &mf.url, 0, deadline, private_ok).await?;
        let variants = core_decision::master_variants(&text, &base);
        if variants.is_empty() {
            let bw = (mf.bitrate as u64) * 1000;
            out.push(
                core_decision::rendition_from_media(&text, &base, bw, None, None)
                    .map_err(|e| CallError::Failed(e.to_string()))?,
            );
            return Ok(());
        }
        for (u, bw, res, codecs) in variants.into_iter().take(MAX_HLS_VARIANTS) {
            let vurl = url::Url::parse(&u).map_err(|e| CallError::Failed(format!("{u}: {e}")))?;
            let t = fetch_cached(&u, &u, 0, deadline, private_ok).await?;
            out.push(
                core_decision::rendition_from_media(&t, &vurl, bw, res, codecs)
                    .map_err(|e| CallError::Failed(e.to_string()))?,
            );
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        reasons.push(match e {
            CallError::BudgetSpent | CallError::TimedOut => {
                Reason::call_failed(format!("VAST ad {}: HLS MediaFile unusable", ad.id), e)
            }
            e => Reason::UnusableMedia {
                at: format!("VAST ad {}", ad.id),
                detail: format!("HLS MediaFile unusable: {e}"),
            },
        });
        out.clear();
    }
    // A third party's playlist lands in ours: unsafe URIs or attributes
    // (a lone CR, a quote, javascript:) drop the rendition.
    out.retain(|r| match r.check() {
        Ok(()) => true,
        Err(e) => {
            reasons.push(Reason::UnusableMedia {
                at: format!("VAST ad {}", ad.id),
                detail: format!("HLS rendition refused: {e}"),
            });
            false
        }
    });
    out
}

/// Conditioned media for a VAST creative: the library entry with the same
/// creative id or UniversalAdId, else its HLS MediaFile when that fits the
/// cadence. MP4-only creatives without either need a transcode (403).
/// A rejection is the reason and the VAST error code it reports.
fn map_ad(
    ad: &VastAd,
    library: &Library,
    hls: &[AdRendition],
    cadence_ms: u64,
) -> std::result::Result<PodItem, (Reason, u16)> {
    let at = || format!("VAST ad {}", ad.id);
    let unusable = |detail: String| Reason::UnusableMedia { at: at(), detail };
    let mut matched: Option<&PodItem> = None;
    let mut item = core_vast::pod_item(ad, |c| {
        matched = library_match_at(c, &library.items, cadence_ms);
        matched
            .map(|l| l.renditions.clone())
            .unwrap_or_else(|| hls.to_vec())
    })
    .ok_or_else(|| (unusable("no linear creative".into()), error_code::LINEARITY))?;
    let creative = ad.creatives.iter().find(|c| c.linear);
    if item.renditions.is_empty() {
        // First sight of a creative without conditioned media: a job for
        // the conditioner, and this decision goes on without it.
        let Some(c) = creative else {
            return Err((unusable("no linear creative".into()), error_code::LINEARITY));
        };
        return Err(want_conditioning(ad, c, library));
    }
    // Conditioned from a source the ad server has since replaced: play
    // what we have, condition the new one.
    if let (Some(l), Some(c)) = (matched, creative) {
        if let (Some((url, size)), Ok(src)) = (
            library.sources.get(&l.ad_id),
            conditioning::best_source(c, library.settings.top_rung()),
        ) {
            if !url.is_empty() && conditioning::source_changed(url, *size, &src) {
                library
                    .wanted
                    .borrow_mut()
                    .push(JobRequest::new(c, &ad.ad_system, src));
            }
        }
    }
    // A conditioned (or registered) ad's own length is the one its
    // renditions were cut to: the source's, measured. The VAST
    // `<Duration>` is the ad server's rounding of it (00:00:15 for a
    // 15.015 s file); when they straddle a segment boundary only the
    // measured one matches the segments, and beacons are timed on it.
    if let Some(l) = matched.filter(|l| l.duration_s > 0.0) {
        item.duration_s = l.duration_s;
    }
    if item.duration_s <= 0.0 {
        return Err((unusable("no duration".into()), error_code::DURATION));
    }
    let segs = item.segments_at(cadence_ms) as usize;
    // Only renditions cut to the channel's cadence can be spliced.
    item.renditions
        .retain(|r| cf_ssai_core::ads::pod::fits_cadence(r, cadence_ms, segs));
    if item.renditions.is_empty() {
        return Err((
            unusable("renditions do not fit the cadence".into()),
            error_code::MEDIA_UNSUPPORTED,
        ));
    }
    item.ad_id = if ad.id.is_empty() {
        item.ad_id
    } else {
        ad.id.clone()
    };
    Ok(item)
}

/// A creative without conditioned media: a job for the conditioner (the
/// reason says whether one is pending or failed), or why none can be made.
fn want_conditioning(ad: &VastAd, c: &Creative, library: &Library) -> (Reason, u16) {
    let at = format!("VAST ad {}", ad.id);
    match conditioning::best_source(c, library.settings.top_rung()) {
        Ok(src) => {
            let job = JobRequest::new(c, &ad.ad_system, src);
            let known = library.jobs.get(&job.id);
            let detail = conditioning::skip_reason(&job, known);
            let why = if known.is_some_and(|s| s.state == "failed") {
                Reason::TranscodeFailed { at, detail }
            } else {
                Reason::TranscodePending { at, detail }
            };
            library.wanted.borrow_mut().push(job);
            (why, error_code::MEDIA_UNSUPPORTED)
        }
        Err(e) => (
            Reason::UnusableMedia {
                at,
                detail: format!("no conditioned rendition and nothing to condition: {e}"),
            },
            error_code::MEDIA_UNSUPPORTED,
        ),
    }
}

fn parse_doc(text: &str) -> std::result::Result<core_vast::VastDoc, CallError> {
    core_vast::parse(text).map_err(|e| CallError::Failed(format!("{e} (VAST error {})", e.code())))
}

/// A fetch's failure as a call's (the text kept as it reads).
pub fn call_error(e: worker_shared::FetchError) -> CallError {
    match e {
        worker_shared::FetchError::Timeout => CallError::TimedOut,
        e @ worker_shared::FetchError::Refused(_) => CallError::Refused(e.to_string()),
        e => CallError::Failed(e.to_string()),
    }
}

/// `[ERRORCODE]` error URLs go out through the beacon queue.
async fn report_errors(env: &Env, errors: Vec<(String, u16)>) {
    if errors.is_empty() {
        return;
    }
    let now = now_ms();
    let msgs: Vec<BeaconMessage> = errors
        .into_iter()
        .map(|(u, code)| BeaconMessage {
            url: beacon::fill_macros(&u, now, (now as u32) % 100_000_000, Some(code)),
            event: TrackingEvent::Error,
            session: "decision".into(),
            break_id: String::new(),
            ad_id: String::new(),
            device_ip: None,
            device_ua: None,
            referer: None,
            accept_language: None,
            created_ms: now,
            dedupe: String::new(),
            org: String::new(),
            channel: String::new(),
        })
        .collect();
    if let Ok(q) = env.queue(bindings::BEACONS) {
        let _ = q.send_batch(msgs).await;
    }
}
