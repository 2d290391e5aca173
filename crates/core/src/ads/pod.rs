//! Building a pod that fits a break: whole ads only, never over the
//! duration, the fullest pod the candidates allow (earlier candidates
//! preferred on ties), slate for the rest, and a reason for every
//! candidate dropped. Every pod's tracking is bounded here too (see
//! [`TrackingLimits`]): every ad source (decision API, VAST, the library)
//! reaches a pod through [`build_pod`].

use crate::ads::reason::Reason;
use crate::model::{segments_for, Pod, PodItem, PodSource, Slate};
use serde::{Deserialize, Serialize};

/// Tracking URLs one ad keeps per event kind, unless the channel says
/// otherwise: each URL is one outgoing request per viewer, so a VAST with
/// 1,000 `<Impression>`s would otherwise make every viewer send 1,000.
pub const MAX_TRACKING_URLS_PER_EVENT: u32 = 64;
/// Tracking URLs one pod keeps in all (every ad and event kind).
pub const MAX_TRACKING_URLS_PER_POD: u32 = 512;
/// The most a channel may raise the two limits to.
pub const TRACKING_URLS_PER_EVENT_CEILING: u32 = 256;
pub const TRACKING_URLS_PER_POD_CEILING: u32 = 2048;

/// A channel's bounds on tracking fan-out (`tracking_limits` in its
/// config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingLimits {
    /// URLs per ad and event kind.
    pub per_event: u32,
    /// URLs per pod, all ads and event kinds together.
    pub per_pod: u32,
}

impl Default for TrackingLimits {
    fn default() -> Self {
        TrackingLimits {
            per_event: MAX_TRACKING_URLS_PER_EVENT,
            per_pod: MAX_TRACKING_URLS_PER_POD,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodRequest<'a> {
    pub break_id: &'a str,
    pub duration_s: f64,
    pub cadence_ms: u64,
    /// Breaks shorter than this get no ads (MediaTailor's personalization
    /// threshold).
    pub personalization_threshold_s: f64,
    /// Creative ids over their frequency cap for this channel window.
    pub capped: &'a [String],
    pub source: PodSource,
    /// Bounds on the pod's tracking URLs.
    pub tracking: TrackingLimits,
}

/// Build the pod from candidates in priority order.
pub fn build_pod(
    req: &PodRequest<'_>,
    candidates: Vec<PodItem>,
    slate: Slate,
    mut reasons: Vec<Reason>,
) -> Pod {
    let capacity = segments_for(
        (req.duration_s * 1000.0).round() as u64,
        req.cadence_ms.max(1),
    ) as usize;
    if req.duration_s < req.personalization_threshold_s {
        reasons.push(Reason::BelowThreshold {
            duration_s: req.duration_s,
            threshold_s: req.personalization_threshold_s,
        });
        return finish(req, Vec::new(), slate, reasons, PodSource::Slate);
    }
    // Sized on the first push (not before: often none are usable), so a
    // few large items never take a growth step.
    let mut usable: Vec<(PodItem, usize)> = Vec::new();
    let n_candidates = candidates.len();
    for c in candidates {
        if req.capped.contains(&c.creative_id) {
            reasons.push(Reason::FrequencyCap { ad_id: c.ad_id });
            continue;
        }
        let w = c.segments_at(req.cadence_ms.max(1)) as usize;
        if !c
            .renditions
            .iter()
            .any(|r| fits_cadence(r, req.cadence_ms, w))
        {
            reasons.push(Reason::NotConditioned {
                ad_id: c.ad_id,
                cadence_ms: req.cadence_ms,
            });
            continue;
        }
        if w > capacity {
            reasons.push(Reason::DoesNotFit {
                ad_id: c.ad_id,
                ad_s: c.duration_s,
                break_s: req.duration_s,
            });
            continue;
        }
        if usable.capacity() == 0 {
            usable.reserve_exact(n_candidates);
        }
        usable.push((c, w));
    }
    let chosen = best_fill(&usable, capacity);
    let mut items: Vec<PodItem> = Vec::with_capacity(chosen.len());
    let mut taken = vec![false; usable.len()];
    for &i in &chosen {
        if let Some(t) = taken.get_mut(i) {
            *t = true;
        }
    }
    for ((c, _), taken) in usable.into_iter().zip(taken) {
        if taken {
            items.push(c);
        } else {
            reasons.push(Reason::PodPacking { ad_id: c.ad_id });
        }
    }
    limit_tracking(&mut items, req.tracking, &mut reasons);
    let source = if items.is_empty() {
        PodSource::Slate
    } else {
        req.source
    };
    finish(req, items, slate, reasons, source)
}

/// Bound the pod's tracking: each ad keeps its first `per_event` URLs of
/// each event kind, then the pod keeps `per_pod` in all, shared out
/// round-robin (every ad's first impression before any ad's second URL of
/// anything), so no ad of the pod loses all its tracking to a greedy one
/// before it. Each list cut gets a reason naming the ad, the event and
/// the number dropped. Lists under the limits are untouched (order kept).
pub fn limit_tracking(items: &mut [PodItem], limits: TrackingLimits, reasons: &mut Vec<Reason>) {
    let per_event = limits.per_event as usize;
    for item in items.iter_mut() {
        for (ev, list) in item.tracking.lists_mut() {
            if list.len() > per_event {
                reasons.push(Reason::TrackingLimit {
                    at: format!("ad {}", item.ad_id),
                    dropped: list.len().saturating_sub(per_event),
                    event: ev,
                    limit: per_event,
                    per_pod: false,
                });
                list.truncate(per_event);
            }
        }
    }
    let total: usize = items
        .iter_mut()
        .flat_map(|i| i.tracking.lists_mut().map(|(_, l)| l.len()))
        .sum();
    let per_pod = limits.per_pod as usize;
    if total <= per_pod {
        return;
    }
    // keep[i][e]: how many of ad i's event-e URLs the pod keeps. Each
    // round gives every non-exhausted list one more URL, in pod order and
    // impressions first, until the budget is spent.
    let lens: Vec<[usize; 7]> = items
        .iter_mut()
        .map(|i| i.tracking.lists_mut().map(|(_, l)| l.len()))
        .collect();
    let mut keep = vec![[0usize; 7]; items.len()];
    let mut budget = per_pod;
    'rounds: for round in 0..per_event {
        for (k, len) in keep.iter_mut().zip(&lens) {
            for (kept, n) in k.iter_mut().zip(len) {
                if budget == 0 {
                    break 'rounds;
                }
                if *n > round {
                    // kept ≤ round < n, and budget > 0 here: neither saturates.
                    *kept = kept.saturating_add(1);
                    budget = budget.saturating_sub(1);
                }
            }
        }
    }
    for (item, k) in items.iter_mut().zip(&keep) {
        let at = format!("ad {}", item.ad_id);
        for ((ev, list), kept) in item.tracking.lists_mut().into_iter().zip(k) {
            if list.len() > *kept {
                reasons.push(Reason::TrackingLimit {
                    at: at.clone(),
                    dropped: list.len().saturating_sub(*kept),
                    event: ev,
                    limit: per_pod,
                    per_pod: true,
                });
                list.truncate(*kept);
            }
        }
    }
}

fn finish(
    req: &PodRequest<'_>,
    items: Vec<PodItem>,
    slate: Slate,
    reasons: Vec<Reason>,
    source: PodSource,
) -> Pod {
    let used: f64 = items.iter().map(|i| i.duration_s).sum();
    Pod {
        pod_id: format!("pod-{}", req.break_id),
        break_id: req.break_id.to_string(),
        duration_s: req.duration_s,
        items,
        slate,
        fill_s: ((req.duration_s - used).max(0.0) * 1000.0).round() / 1000.0,
        source,
        reasons: reasons.into_iter().map(Into::into).collect(),
    }
}

/// The first `per_event` URLs of one list outside a pod (the `<Error>`
/// URLs a decision reports for an ad or wrapper it rejected), with a
/// reason when some are cut.
pub fn first_urls<'a>(
    who: &str,
    event: crate::ads::beacon::TrackingEvent,
    list: &'a [String],
    limits: TrackingLimits,
    reasons: &mut Vec<Reason>,
) -> &'a [String] {
    let n = limits.per_event as usize;
    match list.get(..n).filter(|_| list.len() > n) {
        Some(kept) => {
            reasons.push(Reason::TrackingLimit {
                at: who.to_string(),
                dropped: list.len().saturating_sub(n),
                event,
                limit: n,
                per_pod: false,
            });
            kept
        }
        None => list,
    }
}

/// All the error reports of one decision: at most `per_pod`, a reason for
/// the rest.
pub fn limit_reports<T>(reports: &mut Vec<T>, limits: TrackingLimits, reasons: &mut Vec<Reason>) {
    let n = limits.per_pod as usize;
    if reports.len() > n {
        reasons.push(Reason::ErrorReportLimit {
            dropped: reports.len().saturating_sub(n),
            limit: n,
        });
        reports.truncate(n);
    }
}

/// A rendition fits when it has the ad's segment count ([`crate::model::ad_segments`]
/// of its duration: the conditioner pads the tail to whole segments) and
/// every segment is within the cadence (rounded, as TARGETDURATION is).
pub fn fits_cadence(r: &crate::model::AdRendition, cadence_ms: u64, segments: usize) -> bool {
    let limit = (cadence_ms as f64 / 1000.0).ceil();
    !r.segments.is_empty()
        && r.segments.len() == segments
        && r.segments.iter().all(|s| s.duration.round() <= limit)
}

/// Subset (indices, in order) with the largest total weight ≤ capacity;
/// among equals, the one using earlier candidates. O(n · capacity).
fn best_fill(items: &[(PodItem, usize)], capacity: usize) -> Vec<usize> {
    let at = |row: &[bool], c: usize| row.get(c).copied().unwrap_or(false);
    // reach[i][c]: capacity c reachable using items i.. exactly. Built from
    // the end (past the last item only 0 is reachable), then put in order.
    let mut end = vec![false; capacity.saturating_add(1)];
    if let Some(zero) = end.first_mut() {
        *zero = true;
    }
    let mut reach = vec![end];
    for (_, w) in items.iter().rev() {
        let row = match reach.last() {
            Some(next) => (0..=capacity)
                .map(|c| at(next, c) || c.checked_sub(*w).is_some_and(|r| at(next, r)))
                .collect(),
            None => Vec::new(),
        };
        reach.push(row);
    }
    reach.reverse();
    let first = reach.first().map(Vec::as_slice).unwrap_or(&[]);
    let Some(mut c) = (0..=capacity).rev().find(|&c| at(first, c)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, ((_, w), rest)) in items.iter().zip(reach.iter().skip(1)).enumerate() {
        // Prefer taking the earlier candidate when the rest can still make c.
        if let Some(left) = c.checked_sub(*w).filter(|&left| at(rest, left)) {
            out.push(i);
            c = left;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AdRendition, AdSegment, TrackKind, Tracking};
    use proptest::prelude::*;

    fn ad(id: &str, secs: u32) -> PodItem {
        PodItem {
            ad_id: id.into(),
            creative_id: id.into(),
            universal_ad_id: None,
            duration_s: secs as f64,
            renditions: vec![AdRendition {
                bandwidth: 1,
                codecs: None,
                resolution: None,
                kind: TrackKind::Muxed,
                playlist_url: "u".into(),
                cadence_s: 2.0,
                segments: (0..secs / 2)
                    .map(|_| AdSegment {
                        uri: "s".into(),
                        duration: 2.0,
                        byterange: None,
                    })
                    .collect(),
                init_uri: None,
                key: None,
                memo: Default::default(),
            }],
            tracking: Tracking::default(),
        }
    }

    fn texts(p: &Pod) -> Vec<String> {
        p.reasons.iter().map(|r| r.message.clone()).collect()
    }

    fn req(d: f64) -> PodRequest<'static> {
        PodRequest {
            break_id: "b",
            duration_s: d,
            cadence_ms: 2000,
            personalization_threshold_s: 0.0,
            capped: &[],
            source: PodSource::Library,
            tracking: TrackingLimits::default(),
        }
    }

    #[test]
    fn prefers_fuller_pods() {
        let p = build_pod(
            &req(30.0),
            vec![ad("a", 20), ad("b", 16), ad("c", 14)],
            Slate::default(),
            vec![],
        );
        let ids: Vec<_> = p.items.iter().map(|i| i.ad_id.as_str()).collect();
        assert_eq!(ids, vec!["b", "c"]);
        assert_eq!(p.fill_s, 0.0);
        assert!(texts(&p).iter().any(|r| r.contains("ad a dropped")));
        assert!(p.reasons.iter().any(|r| r.code == "pod_packing"));
    }

    #[test]
    fn threshold_and_caps() {
        let mut r = req(10.0);
        r.personalization_threshold_s = 15.0;
        let p = build_pod(&r, vec![ad("a", 10)], Slate::default(), vec![]);
        assert!(p.items.is_empty());
        assert_eq!(p.source, PodSource::Slate);
        let capped = vec!["a".to_string()];
        let mut r = req(30.0);
        r.capped = &capped;
        let p = build_pod(&r, vec![ad("a", 10)], Slate::default(), vec![]);
        assert!(p.items.is_empty() && texts(&p)[0].contains("frequency cap"));
        assert_eq!(p.reasons[0].code, "frequency_cap");
    }

    fn urls(kind: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("https://t.example/{kind}/{i}"))
            .collect()
    }

    #[test]
    fn tracking_is_limited_per_ad_and_event() {
        let mut a = ad("a", 10);
        a.tracking.impression = urls("imp", 1000);
        a.tracking.start = urls("start", 64);
        a.tracking.complete = urls("done", 65);
        let p = build_pod(&req(30.0), vec![a, ad("b", 10)], Slate::default(), vec![]);
        let t = &p.items[0].tracking;
        assert_eq!(t.impression, urls("imp", 64), "the first 64, in order");
        assert_eq!(t.start.len(), 64, "at the limit: untouched");
        assert_eq!(t.complete.len(), 64);
        assert!(
            texts(&p)
                .contains(&"ad a: 936 impression URLs over the limit of 64 dropped".to_string()),
            "{:?}",
            p.reasons
        );
        assert!(
            texts(&p).contains(&"ad a: 1 complete URLs over the limit of 64 dropped".to_string())
        );
        assert!(p.reasons.iter().all(|r| r.code == "tracking_limit"));
        assert_eq!(p.reasons.len(), 2, "{:?}", p.reasons);
        // A channel's own limit.
        let mut r = req(30.0);
        r.tracking.per_event = 3;
        let mut a = ad("a", 10);
        a.tracking.midpoint = urls("mid", 5);
        let p = build_pod(&r, vec![a], Slate::default(), vec![]);
        assert_eq!(p.items[0].tracking.midpoint, urls("mid", 3));
        assert_eq!(
            texts(&p),
            vec!["ad a: 2 midpoint URLs over the limit of 3 dropped"]
        );
    }

    #[test]
    fn tracking_is_limited_per_pod_and_shared_out() {
        // Ten 2 s ads, each with 64 impressions and 64 starts: 1,280 URLs.
        let cands: Vec<_> = (0..10)
            .map(|i| {
                let mut a = ad(&format!("a{i}"), 2);
                a.tracking.impression = urls(&format!("imp{i}"), 64);
                a.tracking.start = urls(&format!("start{i}"), 64);
                a
            })
            .collect();
        let p = build_pod(&req(20.0), cands, Slate::default(), vec![]);
        assert_eq!(p.items.len(), 10);
        let total: usize = p
            .items
            .iter()
            .map(|i| i.tracking.impression.len() + i.tracking.start.len())
            .sum();
        assert_eq!(total, MAX_TRACKING_URLS_PER_POD as usize);
        // Round-robin: every ad keeps 25 or 26 of each, the earlier ads the
        // extra one; the lists keep their first URLs.
        for (i, it) in p.items.iter().enumerate() {
            let want = if i < 6 { 26 } else { 25 };
            assert_eq!(it.tracking.impression, urls(&format!("imp{i}"), want));
            assert_eq!(it.tracking.start.len(), want);
        }
        assert!(texts(&p).contains(
            &"ad a9: 39 impression URLs over the pod's limit of 512 dropped".to_string()
        ));
        // A pod under both limits is untouched, with no reason.
        let mut a = ad("a", 10);
        a.tracking.error = urls("err", 7);
        let p = build_pod(&req(10.0), vec![a.clone()], Slate::default(), vec![]);
        assert_eq!(p.items, vec![a]);
        assert!(p.reasons.is_empty());
    }

    #[test]
    fn error_reports_are_limited() {
        use crate::ads::beacon::TrackingEvent::Error;
        let l = TrackingLimits {
            per_event: 2,
            per_pod: 3,
        };
        let mut why = Vec::new();
        assert_eq!(first_urls("x", Error, &urls("e", 2), l, &mut why).len(), 2);
        assert!(why.is_empty());
        let list = urls("e", 5);
        assert_eq!(
            first_urls("VAST ad x", Error, &list, l, &mut why),
            &list[..2]
        );
        assert_eq!(
            why[0].to_string(),
            "VAST ad x: 3 error URLs over the limit of 2 dropped"
        );
        let mut all = urls("e", 5);
        limit_reports(&mut all, l, &mut why);
        assert_eq!(all, urls("e", 3));
        assert_eq!(
            why[1].to_string(),
            "2 error reports over the decision's limit of 3 dropped"
        );
        assert_eq!(why[1].code(), "error_report_limit");
    }

    proptest! {
        #[test]
        fn never_over_and_fill_is_exact(durs in proptest::collection::vec(1u32..40, 0..12), d in 2u32..120) {
            let cands: Vec<_> = durs.iter().enumerate().map(|(i, s)| ad(&format!("a{i}"), s * 2)).collect();
            let p = build_pod(&req(d as f64 * 2.0), cands, Slate::default(), vec![]);
            let used: f64 = p.items.iter().map(|i| i.duration_s).sum();
            prop_assert!(used <= p.duration_s + 1e-9);
            prop_assert!((used + p.fill_s - p.duration_s).abs() < 1e-6);
        }
    }
}
