//! Why a decision skipped an ad, cut its tracking or fell back: reasons as
//! data. Each [`Reason`] has a stable [`Reason::code`] (what metrics count
//! and dashboards chart, so rewording a message moves no counter) and a
//! human message (`Display`: what the pod's `reasons` and the logs show).
//! The pod keeps both as [`PodReason`]s.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used
    )
)]

use crate::model::{PodReason, TrackingEvent};
use std::fmt;

/// How a call to an ad server (decision API, VAST tag or wrapper, VMAP,
/// an HLS MediaFile) failed: which kind decides the reason's code, the
/// text is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The decision's time budget was spent before the call (or during it).
    BudgetSpent,
    /// The call's own deadline passed.
    TimedOut,
    /// The URL is refused by the deployment's address policy.
    Refused(String),
    /// Anything else: HTTP status, transport error, a body that does not
    /// parse.
    Failed(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::BudgetSpent => f.write_str("time budget spent"),
            CallError::TimedOut => f.write_str("timed out"),
            CallError::Refused(e) | CallError::Failed(e) => f.write_str(e),
        }
    }
}

/// One reason of a decision. `at` fields name where it happened as the
/// message starts ("VAST https://ads/tag", "VAST ad a1", "decision API").
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// The break is shorter than the channel's personalization threshold.
    BelowThreshold { duration_s: f64, threshold_s: f64 },
    /// The creative played its frequency cap's worth in the window.
    FrequencyCap { ad_id: String },
    /// No rendition of the ad is cut to the channel's cadence.
    NotConditioned { ad_id: String, cadence_ms: u64 },
    /// The decision API named a creative the ad library does not have.
    NotInLibrary { index: usize, creative: String },
    /// The ad is longer than the break.
    DoesNotFit {
        ad_id: String,
        ad_s: f64,
        break_s: f64,
    },
    /// A fuller pod is made of the other candidates.
    PodPacking { ad_id: String },
    /// The creative waits for the conditioner (`detail` names the job).
    TranscodePending { at: String, detail: String },
    /// The conditioner failed on the creative (`detail` says why).
    TranscodeFailed { at: String, detail: String },
    /// A call ran out of time (the decision's budget, or its deadline).
    Timeout { at: String, budget_spent: bool },
    /// A wrapper chain deeper than the limit, or looping.
    WrapperLimit { wrapper: String, url: String },
    /// The sequencer got no usable decision and filled the break with
    /// slate (`detail`: the error, or why the answer was refused).
    DecisionFailed { detail: String },
    /// An ad source answered with nothing for this break.
    NoFill { at: String, detail: String },
    /// An ad's media cannot be spliced (unreadable HLS, unsafe playlist,
    /// no linear creative, no duration, nothing to condition).
    UnusableMedia { at: String, detail: String },
    /// A URL refused by the deployment's address policy.
    UrlRefused { at: String, detail: String },
    /// The ad library or the slate could not be read.
    Unavailable { what: &'static str, error: String },
    /// An ad server's error: HTTP status, transport, a body that does not
    /// parse.
    AdServerError { at: String, error: String },
    /// Tracking URLs of one list over the per-event (or the pod's) limit.
    TrackingLimit {
        at: String,
        dropped: usize,
        event: TrackingEvent,
        limit: usize,
        per_pod: bool,
    },
    /// `<Error>` reports of one decision over its limit.
    ErrorReportLimit { dropped: usize, limit: usize },
    /// A note, not a skip: the VMAP break chosen and how many ads it gave.
    VmapBreak { break_id: String, ads: usize },
}

/// Every code [`Reason::code`] returns, and the one pods from before codes
/// get ([`PodReason::UNKNOWN`]).
pub const CODES: [&str; 19] = [
    "below_threshold",
    "frequency_cap",
    "not_conditioned",
    "not_in_library",
    "does_not_fit",
    "pod_packing",
    "transcode_pending",
    "transcode_failed",
    "timeout",
    "wrapper_limit",
    "decision_failed",
    "no_fill",
    "unusable_media",
    "url_refused",
    "unavailable",
    "ad_server_error",
    "tracking_limit",
    "error_report_limit",
    "vmap_break",
];

/// Codes that are notes, not skips or fallbacks (not counted).
pub const NOTE_CODES: [&str; 1] = ["vmap_break"];

impl Reason {
    /// The stable snake_case code: what `skips_total{kind}` counts. Never
    /// change one (dashboards chart them); add a variant instead.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::BelowThreshold { .. } => "below_threshold",
            Reason::FrequencyCap { .. } => "frequency_cap",
            Reason::NotConditioned { .. } => "not_conditioned",
            Reason::NotInLibrary { .. } => "not_in_library",
            Reason::DoesNotFit { .. } => "does_not_fit",
            Reason::PodPacking { .. } => "pod_packing",
            Reason::TranscodePending { .. } => "transcode_pending",
            Reason::TranscodeFailed { .. } => "transcode_failed",
            Reason::Timeout { .. } => "timeout",
            Reason::WrapperLimit { .. } => "wrapper_limit",
            Reason::DecisionFailed { .. } => "decision_failed",
            Reason::NoFill { .. } => "no_fill",
            Reason::UnusableMedia { .. } => "unusable_media",
            Reason::UrlRefused { .. } => "url_refused",
            Reason::Unavailable { .. } => "unavailable",
            Reason::AdServerError { .. } => "ad_server_error",
            Reason::TrackingLimit { .. } => "tracking_limit",
            Reason::ErrorReportLimit { .. } => "error_report_limit",
            Reason::VmapBreak { .. } => "vmap_break",
        }
    }

    /// A failed call at `at`: a timeout, a refused URL or the server's
    /// error, by the kind of failure.
    pub fn call_failed(at: impl Into<String>, e: CallError) -> Reason {
        let at = at.into();
        match e {
            CallError::BudgetSpent => Reason::Timeout {
                at,
                budget_spent: true,
            },
            CallError::TimedOut => Reason::Timeout {
                at,
                budget_spent: false,
            },
            CallError::Refused(detail) => Reason::UrlRefused { at, detail },
            CallError::Failed(error) => Reason::AdServerError { at, error },
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::BelowThreshold {
                duration_s,
                threshold_s,
            } => write!(
                f,
                "break {duration_s:.3}s is below the personalization threshold {threshold_s:.3}s"
            ),
            Reason::FrequencyCap { ad_id } => {
                write!(f, "ad {ad_id} dropped: frequency cap reached")
            }
            Reason::NotConditioned { ad_id, cadence_ms } => write!(
                f,
                "ad {ad_id} dropped: no rendition conditioned to the {cadence_ms} ms cadence (needs TRANSCODE)"
            ),
            Reason::NotInLibrary { index, creative } => write!(
                f,
                "decision API ad #{index} ({creative}): not in the ad library (TRANSCODE needed)"
            ),
            Reason::DoesNotFit {
                ad_id,
                ad_s,
                break_s,
            } => write!(
                f,
                "ad {ad_id} dropped: {ad_s:.3}s does not fit the {break_s:.3}s break"
            ),
            Reason::PodPacking { ad_id } => {
                write!(f, "ad {ad_id} dropped: a fuller pod fits without it")
            }
            Reason::TranscodePending { at, detail }
            | Reason::TranscodeFailed { at, detail }
            | Reason::NoFill { at, detail }
            | Reason::UnusableMedia { at, detail }
            | Reason::UrlRefused { at, detail }
            | Reason::AdServerError { at, error: detail } => write!(f, "{at}: {detail}"),
            Reason::Timeout { at, budget_spent } => {
                let e = if *budget_spent {
                    CallError::BudgetSpent
                } else {
                    CallError::TimedOut
                };
                write!(f, "{at}: {e}")
            }
            Reason::WrapperLimit { wrapper, url } => {
                write!(f, "VAST wrapper {wrapper}: depth or loop limit at {url}")
            }
            Reason::DecisionFailed { detail } => f.write_str(detail),
            Reason::Unavailable { what, error } => write!(f, "{what} unavailable: {error}"),
            Reason::TrackingLimit {
                at,
                dropped,
                event,
                limit,
                per_pod,
            } => {
                let whose = if *per_pod { "the pod's" } else { "the" };
                write!(
                    f,
                    "{at}: {dropped} {} URLs over {whose} limit of {limit} dropped",
                    event.as_str()
                )
            }
            Reason::ErrorReportLimit { dropped, limit } => write!(
                f,
                "{dropped} error reports over the decision's limit of {limit} dropped"
            ),
            Reason::VmapBreak { break_id, ads } => {
                write!(f, "VMAP break {break_id:?}: {ads} ads")
            }
        }
    }
}

impl From<Reason> for PodReason {
    fn from(r: Reason) -> PodReason {
        PodReason {
            code: r.code().into(),
            message: r.to_string(),
        }
    }
}

impl From<&Reason> for PodReason {
    fn from(r: &Reason) -> PodReason {
        PodReason {
            code: r.code().into(),
            message: r.to_string(),
        }
    }
}

/// Whether a stored reason counts as a skip or fallback (every code but
/// the notes).
pub fn is_skip(code: &str) -> bool {
    !NOTE_CODES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of every variant.
    pub(crate) fn every_variant() -> Vec<Reason> {
        let s = |x: &str| x.to_string();
        vec![
            Reason::BelowThreshold {
                duration_s: 4.0,
                threshold_s: 6.0,
            },
            Reason::FrequencyCap { ad_id: s("a") },
            Reason::NotConditioned {
                ad_id: s("a"),
                cadence_ms: 2000,
            },
            Reason::NotInLibrary {
                index: 0,
                creative: s("x"),
            },
            Reason::DoesNotFit {
                ad_id: s("a"),
                ad_s: 31.0,
                break_s: 30.0,
            },
            Reason::PodPacking { ad_id: s("a") },
            Reason::TranscodePending {
                at: s("VAST ad a"),
                detail: s("TRANSCODE_PENDING (job j1, mezzanine source)"),
            },
            Reason::TranscodeFailed {
                at: s("VAST ad a"),
                detail: s("TRANSCODE_FAILED: source_gone: HTTP 404 (job j1)"),
            },
            Reason::Timeout {
                at: s("VAST"),
                budget_spent: true,
            },
            Reason::WrapperLimit {
                wrapper: s("w"),
                url: s("http://x"),
            },
            Reason::DecisionFailed {
                detail: s("decision failed: HTTP 500"),
            },
            Reason::NoFill {
                at: s("VAST http://x"),
                detail: s("no ads"),
            },
            Reason::UnusableMedia {
                at: s("VAST ad 1"),
                detail: s("HLS rendition refused: bad"),
            },
            Reason::UrlRefused {
                at: s("VAST http://127.0.0.1/x"),
                detail: s("loopback/private addresses are not allowed"),
            },
            Reason::Unavailable {
                what: "ad library",
                error: s("D1"),
            },
            Reason::AdServerError {
                at: s("VAST http://x"),
                error: s("HTTP 500"),
            },
            Reason::TrackingLimit {
                at: s("ad a"),
                dropped: 936,
                event: TrackingEvent::Impression,
                limit: 64,
                per_pod: false,
            },
            Reason::ErrorReportLimit {
                dropped: 2,
                limit: 3,
            },
            Reason::VmapBreak {
                break_id: s("pre"),
                ads: 2,
            },
        ]
    }

    #[test]
    fn every_variant_has_a_distinct_stable_code() {
        let all = every_variant();
        let codes: Vec<&str> = all.iter().map(Reason::code).collect();
        // Listed in CODES in order: one variant per code, none left out.
        assert_eq!(codes, CODES.to_vec());
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
        for c in codes {
            assert!(
                c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c}: snake_case"
            );
        }
        assert!(!CODES.contains(&PodReason::UNKNOWN));
    }

    #[test]
    fn messages_read_as_before() {
        let m: Vec<String> = every_variant().iter().map(Reason::to_string).collect();
        for want in [
            "break 4.000s is below the personalization threshold 6.000s",
            "ad a dropped: frequency cap reached",
            "ad a dropped: no rendition conditioned to the 2000 ms cadence (needs TRANSCODE)",
            "decision API ad #0 (x): not in the ad library (TRANSCODE needed)",
            "ad a dropped: 31.000s does not fit the 30.000s break",
            "ad a dropped: a fuller pod fits without it",
            "VAST ad a: TRANSCODE_PENDING (job j1, mezzanine source)",
            "VAST: time budget spent",
            "VAST wrapper w: depth or loop limit at http://x",
            "decision failed: HTTP 500",
            "VAST http://x: no ads",
            "VAST ad 1: HLS rendition refused: bad",
            "ad library unavailable: D1",
            "VAST http://x: HTTP 500",
            "ad a: 936 impression URLs over the limit of 64 dropped",
            "2 error reports over the decision's limit of 3 dropped",
            "VMAP break \"pre\": 2 ads",
        ] {
            assert!(m.iter().any(|x| x == want), "{want} not in {m:#?}");
        }
        let pod_cut = Reason::TrackingLimit {
            at: "ad a9".into(),
            dropped: 39,
            event: TrackingEvent::Impression,
            limit: 512,
            per_pod: true,
        };
        assert_eq!(
            pod_cut.to_string(),
            "ad a9: 39 impression URLs over the pod's limit of 512 dropped"
        );
    }

    #[test]
    fn failed_calls_are_coded_by_the_kind_of_failure() {
        let at = "VAST http://x";
        let code = |e| Reason::call_failed(at, e).code();
        assert_eq!(code(CallError::BudgetSpent), "timeout");
        assert_eq!(code(CallError::TimedOut), "timeout");
        assert_eq!(code(CallError::Refused("no".into())), "url_refused");
        assert_eq!(
            code(CallError::Failed("HTTP 500".into())),
            "ad_server_error"
        );
        assert_eq!(
            Reason::call_failed(at, CallError::TimedOut).to_string(),
            "VAST http://x: timed out"
        );
        let stored = PodReason::from(Reason::call_failed(at, CallError::BudgetSpent));
        assert_eq!(stored.code, "timeout");
        assert_eq!(stored.message, "VAST http://x: time budget spent");
        assert!(is_skip("timeout") && !is_skip("vmap_break"));
    }
    #[test]
    fn pods_keep_messages_as_before_and_codes_beside_them() {
        use crate::model::{Pod, Slate};
        let mut pod = Pod::slate_only(
            "b1",
            30.0,
            Slate::default(),
            Reason::DecisionFailed {
                detail: "decision failed: HTTP 500".into(),
            },
        );
        pod.reasons.push(
            Reason::VmapBreak {
                break_id: "pre".into(),
                ads: 0,
            }
            .into(),
        );
        let json: serde_json::Value = serde_json::to_value(&pod).unwrap();
        // What readers of the pod always saw: a list of messages.
        assert_eq!(
            json["reasons"],
            serde_json::json!(["decision failed: HTTP 500", "VMAP break \"pre\": 0 ads"])
        );
        assert_eq!(
            json["reason_codes"],
            serde_json::json!(["decision_failed", "vmap_break"])
        );
        let back: Pod = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, pod);
        // A pod stored before codes (KV, the decision cache) still reads.
        let mut old = json;
        if let Some(o) = old.as_object_mut() {
            o.remove("reason_codes");
        }
        let legacy: Pod = serde_json::from_value(old).unwrap();
        assert_eq!(legacy.reasons.len(), 2);
        assert!(legacy.reasons.iter().all(|r| r.code == PodReason::UNKNOWN));
        assert_eq!(legacy.reasons[0].message, "decision failed: HTTP 500");
        let bare: Pod = serde_json::from_str(
            r#"{"pod_id":"p","break_id":"b","duration_s":1,"items":[],"fill_s":1,"source":"slate"}"#,
        )
        .unwrap();
        assert!(bare.reasons.is_empty());
    }
}
