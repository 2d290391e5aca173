//! Building a pod that fits a break: whole ads only, never over the
//! duration, the fullest pod the candidates allow (earlier candidates
//! preferred on ties), slate for the rest, and a reason for every
//! candidate dropped.

use crate::model::{segments_for, Pod, PodItem, PodSource, Slate};

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
}

/// Build the pod from candidates in priority order.
pub fn build_pod(
    req: &PodRequest<'_>,
    candidates: Vec<PodItem>,
    slate: Slate,
    mut reasons: Vec<String>,
) -> Pod {
    let capacity = segments_for(
        (req.duration_s * 1000.0).round() as u64,
        req.cadence_ms.max(1),
    ) as usize;
    if req.duration_s < req.personalization_threshold_s {
        reasons.push(format!(
            "break {:.3}s is below the personalization threshold {:.3}s",
            req.duration_s, req.personalization_threshold_s
        ));
        return finish(req, Vec::new(), slate, reasons, PodSource::Slate);
    }
    let mut usable: Vec<(PodItem, usize)> = Vec::new();
    for c in candidates {
        if req.capped.contains(&c.creative_id) {
            reasons.push(format!("ad {} dropped: frequency cap reached", c.ad_id));
            continue;
        }
        let w = c.segments_at(req.cadence_ms.max(1)) as usize;
        if !c
            .renditions
            .iter()
            .any(|r| fits_cadence(r, req.cadence_ms, w))
        {
            reasons.push(format!(
                "ad {} dropped: no rendition conditioned to the {} ms cadence (needs TRANSCODE)",
                c.ad_id, req.cadence_ms
            ));
            continue;
        }
        if w > capacity {
            reasons.push(format!(
                "ad {} dropped: {:.3}s does not fit the {:.3}s break",
                c.ad_id, c.duration_s, req.duration_s
            ));
            continue;
        }
        usable.push((c, w));
    }
    let chosen = best_fill(&usable, capacity);
    let mut items = Vec::with_capacity(chosen.len());
    let mut taken = vec![false; usable.len()];
    for &i in &chosen {
        taken[i] = true;
    }
    for (i, (c, _)) in usable.into_iter().enumerate() {
        if taken[i] {
            items.push(c);
        } else {
            reasons.push(format!(
                "ad {} dropped: a fuller pod fits without it",
                c.ad_id
            ));
        }
    }
    let source = if items.is_empty() {
        PodSource::Slate
    } else {
        req.source
    };
    finish(req, items, slate, reasons, source)
}

fn finish(
    req: &PodRequest<'_>,
    items: Vec<PodItem>,
    slate: Slate,
    reasons: Vec<String>,
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
        reasons,
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
    let n = items.len();
    // reach[i][c]: capacity c reachable using items i.. exactly.
    let mut reach = vec![vec![false; capacity + 1]; n + 1];
    reach[n][0] = true;
    for i in (0..n).rev() {
        let w = items[i].1;
        for c in 0..=capacity {
            reach[i][c] = reach[i + 1][c] || (c >= w && reach[i + 1][c - w]);
        }
    }
    let Some(mut c) = (0..=capacity).rev().find(|&c| reach[0][c]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let w = item.1;
        // Prefer taking the earlier candidate when the rest can still make c.
        if c >= w && reach[i + 1][c - w] {
            out.push(i);
            c -= w;
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
            }],
            tracking: Tracking::default(),
        }
    }

    fn req(d: f64) -> PodRequest<'static> {
        PodRequest {
            break_id: "b",
            duration_s: d,
            cadence_ms: 2000,
            personalization_threshold_s: 0.0,
            capped: &[],
            source: PodSource::Library,
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
        assert!(p.reasons.iter().any(|r| r.contains("ad a dropped")));
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
        assert!(p.items.is_empty() && p.reasons[0].contains("frequency cap"));
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
