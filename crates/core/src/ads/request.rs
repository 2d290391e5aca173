//! The decision request: what a caller (the channel's sequencer, an
//! operator's preview) asks the decision service for one break. One type
//! both sides share, so the body is built and read by the same fields; the
//! service reads it through [`DecisionRequest::parse`], which is lenient
//! where callers always were (missing optional fields, unknown ones) and
//! names the first field that is wrong.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used
    )
)]

use crate::ads::targeting::DeviceClass;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bodies over this are refused before they are parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Break ids are KV key and URL parts (bytes).
pub const MAX_BREAK_ID_LEN: usize = 128;
/// The longest break a decision is made for.
pub const MAX_DURATION_S: f64 = 3600.0;

/// What opened the break. It decides whether a VMAP schedule applies and
/// whether the answer may be cached (see [`BreakKind::follows_schedule`]).
/// On the wire as the lower-case names callers have always sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakKind {
    /// A SCTE-35 cue in the origin's playlist (the default).
    #[default]
    Scte35,
    /// An operator's `/cue`.
    Cue,
    /// A break of the channel's schedule.
    Scheduled,
    /// The pre-roll before a viewer's first content.
    Preroll,
}

impl BreakKind {
    pub const ALL: [BreakKind; 4] = [
        BreakKind::Scte35,
        BreakKind::Cue,
        BreakKind::Scheduled,
        BreakKind::Preroll,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::Scte35 => "scte35",
            BreakKind::Cue => "cue",
            BreakKind::Scheduled => "scheduled",
            BreakKind::Preroll => "preroll",
        }
    }

    pub fn from_name(s: &str) -> Option<BreakKind> {
        BreakKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Scheduled breaks and pre-rolls take their ads from the channel's
    /// VMAP (by break id, clock offset or pre-roll position): their answer
    /// depends on the break, not on the request alone, so it is never
    /// cached.
    pub fn follows_schedule(self) -> bool {
        matches!(self, BreakKind::Scheduled | BreakKind::Preroll)
    }
}

/// Who the break is for: what ad servers target on and what a cached
/// answer is keyed by. Every field is optional on the wire (empty = not
/// known), so targeting added here later does not break older callers;
/// empty fields are not written, so the default audience's viewer stays a
/// few bytes (it rides in session tokens and decision bodies).
///
/// Built from a playlist request by [`crate::ads::targeting::from_request`],
/// which documents each field's rule; a cohort's shared view is
/// [`crate::ads::targeting::cohort_viewer`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Viewer {
    /// ISO 3166-1 alpha-2 country, upper case (`[DEVICEGEO]`); "" unknown.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub geo: String,
    /// ISO 3166-2 subdivision code (the part after the country, e.g. "CA"
    /// for US-CA); "" unknown.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// The IAB TCF v2 consent string (`[GDPRCONSENT]`); kilobytes long at
    /// times; "" when absent or malformed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub consent: String,
    /// An audience bucket the decision API may target.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bucket: String,
    /// The player's `gdpr` flag (TCF: does GDPR apply); None when not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gdpr: Option<bool>,
    /// The IAB US Privacy (CCPA) string, e.g. "1YNN"; "" absent/malformed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub us_privacy: String,
    /// The IAB Global Privacy Platform string; "" absent/malformed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gpp: String,
    /// The GPP section ids that apply, e.g. "2,6"; "" absent/malformed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gpp_sid: String,
    /// Whether ads may be personalised (the consent signals' verdict);
    /// false unless established.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub personalised: bool,
    /// The device class, from the User-Agent.
    #[serde(skip_serializing_if = "DeviceClass::is_other")]
    pub device: DeviceClass,
    /// The identifier for advertising (UUID, lower case); "" when absent,
    /// zeroed (limit ad tracking) or not personalised.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ifa: String,
    /// The IFA's type (IAB OTT IFA guidelines: "aaid", "idfa", "rida", …).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ifa_type: String,
    /// The player's allow-listed key-values (`ads.KEY=value`), keys
    /// without the `ads.` prefix (`[player_params.KEY]`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The audience cohort: "" = the default audience; else 8 lower-case
    /// hex digits.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cohort: String,
}

/// One break to fill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRequest {
    pub org: String,
    pub channel: String,
    pub break_id: String,
    pub duration_s: f64,
    /// The channel's segment cadence as the caller saw it; out of range
    /// (200..=20000) or absent, the service uses the channel's config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cadence_ms: Option<u64>,
    pub kind: BreakKind,
    /// The break's start (epoch ms), for VMAP clock offsets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
    pub viewer: Viewer,
    /// The break's `EXT-X-ASSET` attributes: `[asset.KEY]` macros.
    pub asset: BTreeMap<String, String>,
    /// A decision for one viewer's session (an SGAI asset list's, see
    /// `sgai_decision: per_viewer`): what that session was already served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionSeen>,
}

/// One viewer session's recent ads: its frequency cap. A creative it was
/// served within the hour is not served again when another can take its
/// place ([`avoid_seen`]); a session's decision is not counted in the
/// channel's caps (those count what every viewer of a break sees).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionSeen {
    /// Creative ids, most recent last.
    pub creatives: Vec<String>,
}

/// The creatives to leave out of a session's pod: those it has seen,
/// when at least one candidate it has not seen remains to fill the break
/// (a viewer sees a spot twice rather than slate).
pub fn avoid_seen(candidates: &[crate::model::PodItem], seen: &SessionSeen) -> Vec<String> {
    let was_seen = |c: &crate::model::PodItem| seen.creatives.contains(&c.creative_id);
    if candidates.iter().all(was_seen) {
        return Vec::new();
    }
    candidates
        .iter()
        .filter(|c| was_seen(c))
        .map(|c| c.creative_id.clone())
        .collect()
}

/// The body as callers send it, every field optional: what is missing or
/// wrong is named by [`DecisionRequest::parse`], not by serde.
#[derive(Debug, Default, Deserialize)]
struct Wire {
    org: Option<String>,
    channel: Option<String>,
    break_id: Option<String>,
    duration_s: Option<f64>,
    cadence_ms: Option<u64>,
    kind: Option<String>,
    start_ms: Option<i64>,
    #[serde(default)]
    viewer: Viewer,
    #[serde(default)]
    asset: BTreeMap<String, String>,
    #[serde(default)]
    session: Option<SessionSeen>,
}

/// Why a decision request body is refused (the 400's message names the
/// field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("body: over the 64 KiB limit")]
    TooLarge,
    #[error("body: invalid JSON: {0}")]
    Json(String),
    #[error("{0}: required")]
    Required(&'static str),
    #[error("break_id: required (at most 128 characters)")]
    BreakId,
    #[error("duration_s: required, a number of seconds in (0, 3600]")]
    Duration,
    #[error("kind: {0:?} is not one of scte35, cue, scheduled, preroll")]
    Kind(String),
}

impl DecisionRequest {
    /// Read and check a body; the error is the 400's message, naming the
    /// field (`org: required`, `kind: "midroll" is not one of …`).
    pub fn parse(body: &[u8]) -> Result<DecisionRequest, RequestError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(RequestError::TooLarge);
        }
        let w: Wire =
            serde_json::from_slice(body).map_err(|e| RequestError::Json(e.to_string()))?;
        let required = |v: Option<String>, field: &'static str| {
            v.filter(|s| !s.is_empty())
                .ok_or(RequestError::Required(field))
        };
        let org = required(w.org, "org")?;
        let channel = required(w.channel, "channel")?;
        let break_id = w
            .break_id
            .filter(|s| !s.is_empty() && s.len() <= MAX_BREAK_ID_LEN)
            .ok_or(RequestError::BreakId)?;
        let duration_s = w
            .duration_s
            .filter(|d| d.is_finite() && *d > 0.0 && *d <= MAX_DURATION_S)
            .ok_or(RequestError::Duration)?;
        let kind = match w.kind.as_deref() {
            None => BreakKind::default(),
            Some(k) => BreakKind::from_name(k).ok_or_else(|| RequestError::Kind(k.to_string()))?,
        };
        Ok(DecisionRequest {
            org,
            channel,
            break_id,
            duration_s,
            cadence_ms: w.cadence_ms,
            kind,
            start_ms: w.start_ms,
            viewer: w.viewer,
            asset: w.asset,
            session: w.session,
        })
    }

    /// The caller's cadence when it is a plausible one (200 ms to 20 s).
    pub fn cadence_in_range(&self) -> Option<u64> {
        self.cadence_ms.filter(|c| (200..=20_000).contains(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DecisionRequest {
        DecisionRequest {
            org: "demo".into(),
            channel: "news".into(),
            break_id: "b-1".into(),
            duration_s: 30.0,
            cadence_ms: Some(1920),
            kind: BreakKind::Cue,
            start_ms: Some(1_800_000_000_000),
            viewer: Viewer {
                geo: "DE".into(),
                consent: "CP…".into(),
                bucket: "a".into(),
                gdpr: Some(true),
                personalised: true,
                device: DeviceClass::Ctv,
                params: [("genre".to_string(), "news".to_string())].into(),
                cohort: "0a1b2c3d".into(),
                ..Default::default()
            },
            asset: [("caid".to_string(), "x".to_string())].into(),
            session: Some(SessionSeen {
                creatives: vec!["cr-1".into()],
            }),
        }
    }

    #[test]
    fn a_session_avoids_what_it_has_seen_when_something_else_fills() {
        let item = |c: &str| crate::model::PodItem {
            ad_id: c.into(),
            creative_id: c.into(),
            universal_ad_id: None,
            duration_s: 15.0,
            renditions: vec![],
            tracking: Default::default(),
        };
        let seen = SessionSeen {
            creatives: vec!["a".into(), "c".into()],
        };
        assert_eq!(
            avoid_seen(&[item("a"), item("b"), item("c")], &seen),
            ["a", "c"]
        );
        // Nothing unseen: the seen spots play again (not slate).
        assert!(avoid_seen(&[item("a"), item("c")], &seen).is_empty());
        assert!(avoid_seen(&[item("b")], &SessionSeen::default()).is_empty());
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let body = serde_json::to_string(&r).unwrap();
        assert_eq!(DecisionRequest::parse(body.as_bytes()), Ok(r));
        let bare = DecisionRequest {
            cadence_ms: None,
            start_ms: None,
            ..sample()
        };
        let body = serde_json::to_string(&bare).unwrap();
        assert!(!body.contains("start_ms"), "{body}");
        assert_eq!(DecisionRequest::parse(body.as_bytes()), Ok(bare));
        // An unknown viewer is written as `{}`: empty fields are skipped.
        let anon = DecisionRequest {
            viewer: Viewer::default(),
            ..sample()
        };
        let body = serde_json::to_string(&anon).unwrap();
        assert!(body.contains(r#""viewer":{}"#), "{body}");
        assert_eq!(DecisionRequest::parse(body.as_bytes()), Ok(anon));
    }

    #[test]
    fn kinds_are_the_names_callers_send() {
        for k in BreakKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<BreakKind>(&json).unwrap(), k);
            assert_eq!(BreakKind::from_name(k.as_str()), Some(k));
        }
        assert!(BreakKind::Scheduled.follows_schedule() && BreakKind::Preroll.follows_schedule());
        assert!(!BreakKind::Scte35.follows_schedule() && !BreakKind::Cue.follows_schedule());
    }

    #[test]
    fn the_body_the_sequencer_sent_before_still_parses() {
        // As `channel_do::decide` built it with `json!`: no viewer, a null
        // start when the break had no PDT anchor.
        let old = r#"{"org":"demo","channel":"news","break_id":"b7","duration_s":30.0,"cadence_ms":2000,"kind":"scheduled","start_ms":null,"asset":{"caid":"x"}}"#;
        let r = DecisionRequest::parse(old.as_bytes()).unwrap();
        assert_eq!(r.kind, BreakKind::Scheduled);
        assert_eq!((r.cadence_ms, r.start_ms), (Some(2000), None));
        assert_eq!(r.viewer, Viewer::default());
        assert_eq!(r.asset.get("caid").map(String::as_str), Some("x"));
        // An operator's preview: no kind, a partial viewer, a stray field.
        let preview = r#"{"org":"demo","channel":"news","break_id":"p","duration_s":15,"viewer":{"geo":"FR"},"extra":1}"#;
        let r = DecisionRequest::parse(preview.as_bytes()).unwrap();
        assert_eq!(r.kind, BreakKind::Scte35);
        assert_eq!(r.viewer.geo, "FR");
        assert_eq!(r.cadence_in_range(), None);
    }

    #[test]
    fn errors_name_the_field() {
        let err = |body: &str| {
            DecisionRequest::parse(body.as_bytes())
                .unwrap_err()
                .to_string()
        };
        let ok = r#""org":"o","channel":"c","break_id":"b","duration_s":30"#;
        assert!(err("{").starts_with("body: invalid JSON"));
        assert_eq!(err("{}"), "org: required");
        assert_eq!(err(r#"{"org":"o"}"#), "channel: required");
        assert!(err(r#"{"org":"o","channel":"c"}"#).starts_with("break_id:"));
        let long = format!(
            r#"{{"org":"o","channel":"c","break_id":"{}"}}"#,
            "x".repeat(129)
        );
        assert!(err(&long).starts_with("break_id:"));
        for d in ["0", "-1", "3600.5", "null"] {
            let b = format!(r#"{{"org":"o","channel":"c","break_id":"b","duration_s":{d}}}"#);
            assert!(err(&b).starts_with("duration_s:"), "{d}");
        }
        assert_eq!(
            err(&format!(r#"{{{ok},"kind":"midroll"}}"#)),
            r#"kind: "midroll" is not one of scte35, cue, scheduled, preroll"#
        );
        let big = format!(r#"{{{ok},"pad":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(err(&big), "body: over the 64 KiB limit");
        assert!(DecisionRequest::parse(format!("{{{ok}}}").as_bytes()).is_ok());
    }
}
