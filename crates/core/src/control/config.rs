//! Channel configuration: the document stored in D1 and cached in KV, its
//! validation (per-field errors), origin URL safety (no open proxy), and the
//! documented rule that picks SSAI or SGAI for `mode: auto`.

use crate::channel::sequencer::BreakPolicy;
use crate::scte35::cues::SegmentationPolicy;
use crate::splice::{Mode, SpliceSettings};
use serde::{Deserialize, Serialize};

/// The origin-URL safety rules live in [`crate::net`] (the bottom layer, so
/// beacons and fetches below the control plane can use them).
pub use crate::net::{
    check_origin_url, check_url_allowing, is_private_host, is_private_ip, private_host_allowed,
    UrlRefused,
};

/// Viewer targeting (`targeting`): which dimensions split the audience
/// into cohorts with pods of their own. Defined with its rules in
/// [`crate::ads::targeting`] (below the control plane: the manifest worker
/// and the channel machine read it too).
pub use crate::ads::targeting::TargetingConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModeSetting {
    #[default]
    Ssai,
    Sgai,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// The origin playlist (master or media), http(s).
    pub origin_url: String,
    pub mode: ModeSetting,
    /// Segment cadence in ms; 0 = derive from the origin.
    pub cadence_ms: u64,
    pub scte35_enabled: bool,
    pub segmentation: SegmentationPolicy,
    pub breaks: BreakPolicy,
    /// Variant the monitor polls (name in the master's URI); empty =
    /// lowest bandwidth.
    pub poll_variant: String,
    /// Monitor poll interval in ms; 0 = 90 % of the cadence (see
    /// `monitor::poll_interval_ms`).
    pub poll_interval_ms: u64,
    pub vast_urls: Vec<String>,
    /// External decision API (JSON), step 1 of the waterfall; empty = off.
    pub decision_api_url: String,
    /// VMAP 1.0 schedule for scheduled (`/cue schedule`) breaks; empty = off.
    pub vmap_url: String,
    /// Plays of one creative per channel window (0 = no cap).
    pub frequency_cap: crate::ads::decision::FrequencyCap,
    /// Decision cache in KV, seconds (0 = off; KV's minimum TTL is 60).
    pub decision_cache_s: u32,
    /// VAST/VMAP response cache per isolate, seconds (0 = off).
    pub vast_cache_s: u32,
    pub decision_timeout_ms: u64,
    pub origin_timeout_ms: u64,
    pub slate_id: String,
    pub personalization_threshold_s: f64,
    /// `Cache-Control: max-age` for playlists (capped at half a target
    /// duration).
    pub cache_max_age_s: u32,
    pub cors_origins: Vec<String>,
    pub sgai_announce_ahead_segments: i32,
    pub sgai_restrict: String,
    pub sgai_snap: String,
    pub strip_cues: bool,
    pub ad_dateranges: bool,
    /// Ad segments through `/{org}/{channel}/ad/...` so delivery fires
    /// server-side beacons.
    pub proxy_ad_segments: bool,
    /// Dev only: allow a loopback/private origin (refused unless the
    /// worker's environment allows it too).
    pub allow_private_origin: bool,
    pub active: bool,
    /// Where SCTE-35 comes from: playlist markers (default), the media's
    /// own in-band SCTE-35 (a TS PID or CMAF `emsg`), or both.
    pub cue_source: CueSource,
    /// Tracking URLs a pod keeps, per ad and event kind and in all: each
    /// is one request per viewer (see `pod::TrackingLimits`).
    pub tracking_limits: crate::ads::pod::TrackingLimits,
    /// Addressable breaks: the viewer dimensions that split the audience
    /// into cohorts, each with its own pod per break (`keys`; empty = one
    /// audience), how many cohorts at most, and the player key-values
    /// (`ads.KEY`) passed to ad servers. See `ads::targeting`.
    pub targeting: TargetingConfig,
    /// SGAI: whose ads an asset list serves. `cohort` (default): the
    /// viewer's cohort's pod, decided once per break. `per_viewer`: the
    /// ad server is asked for this viewer alone when the asset list is
    /// fetched (within `decision_timeout_ms`; the cohort's pod when it
    /// fails), as Google DAI does for SGAI. The SGAI playlists then carry
    /// the viewer's session in their asset-list URLs, so they are per
    /// viewer (not shared at the location).
    pub sgai_decision: SgaiDecision,
}

/// See [`ChannelConfig::sgai_decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SgaiDecision {
    #[default]
    Cohort,
    PerViewer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CueSource {
    #[default]
    Playlist,
    Inband,
    Both,
}

impl CueSource {
    /// Whether the media segments themselves must be examined.
    pub fn inband(self) -> bool {
        matches!(self, CueSource::Inband | CueSource::Both)
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            origin_url: String::new(),
            mode: ModeSetting::Ssai,
            cadence_ms: 0,
            scte35_enabled: true,
            segmentation: SegmentationPolicy::default(),
            breaks: BreakPolicy::default(),
            poll_variant: String::new(),
            poll_interval_ms: 0,
            vast_urls: Vec::new(),
            decision_api_url: String::new(),
            vmap_url: String::new(),
            frequency_cap: Default::default(),
            decision_cache_s: 60,
            vast_cache_s: 10,
            decision_timeout_ms: 1500,
            origin_timeout_ms: 2000,
            slate_id: String::new(),
            personalization_threshold_s: 0.0,
            cache_max_age_s: 1,
            cors_origins: vec!["*".into()],
            sgai_announce_ahead_segments: -1,
            sgai_restrict: "SKIP,JUMP".into(),
            sgai_snap: String::new(),
            strip_cues: false,
            ad_dateranges: true,
            proxy_ad_segments: false,
            allow_private_origin: false,
            active: true,
            cue_source: CueSource::Playlist,
            sgai_decision: SgaiDecision::Cohort,
            tracking_limits: crate::ads::pod::TrackingLimits::default(),
            targeting: TargetingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl ChannelConfig {
    /// Per-field validation; `private_ok` is the environment's permission
    /// for loopback/private origins (dev only).
    pub fn validate(&self, private_ok: bool) -> Vec<FieldError> {
        let mut e = Vec::new();
        let mut f = |field: &str, m: String| {
            e.push(FieldError {
                field: field.into(),
                message: m,
            })
        };
        if let Err(m) = check_origin_url(&self.origin_url, private_ok && self.allow_private_origin)
        {
            f("origin_url", m.to_string());
        }
        for (i, u) in self.vast_urls.iter().enumerate() {
            if let Err(m) = check_origin_url(u, private_ok && self.allow_private_origin) {
                f(&format!("vast_urls[{i}]"), m.to_string());
            }
        }
        for (field, u) in [
            ("decision_api_url", &self.decision_api_url),
            ("vmap_url", &self.vmap_url),
        ] {
            if !u.is_empty() {
                if let Err(m) = check_origin_url(u, private_ok && self.allow_private_origin) {
                    f(field, m.to_string());
                }
            }
        }
        if self.decision_cache_s != 0 && !(60..=86_400).contains(&self.decision_cache_s) {
            f(
                "decision_cache_s",
                "must be 0 (off) or 60..=86400 (KV's minimum TTL is 60)".into(),
            );
        }
        if self.vast_cache_s > 300 {
            f("vast_cache_s", "must be at most 300".into());
        }
        if self.frequency_cap.max_per_window > 0
            && !(60..=604_800).contains(&self.frequency_cap.window_s)
        {
            f("frequency_cap.window_s", "must be 60..=604800".into());
        }
        if self.cadence_ms != 0 && !(500..=20_000).contains(&self.cadence_ms) {
            f("cadence_ms", "must be 0 (derive) or 500..=20000".into());
        }
        if self.poll_interval_ms != 0 && !(250..=60_000).contains(&self.poll_interval_ms) {
            f(
                "poll_interval_ms",
                "must be 0 (90% of the cadence) or 250..=60000".into(),
            );
        }
        if !(100..=10_000).contains(&self.origin_timeout_ms) {
            f("origin_timeout_ms", "must be 100..=10000".into());
        }
        if !(100..=10_000).contains(&self.decision_timeout_ms) {
            f("decision_timeout_ms", "must be 100..=10000".into());
        }
        if self.cache_max_age_s > 10 {
            f(
                "cache_max_age_s",
                "must be at most 10 for a live playlist".into(),
            );
        }
        if self.breaks.max_break_ms == 0 || self.breaks.max_break_ms > 3_600_000 {
            f("breaks.max_break_ms", "must be 1..=3600000".into());
        }
        for t in self
            .segmentation
            .open
            .iter()
            .chain(&self.segmentation.close)
        {
            if *t == 0 {
                f(
                    "segmentation",
                    "0x00 (not indicated) cannot open or close a break".into(),
                );
            }
        }
        {
            use crate::ads::pod::{TRACKING_URLS_PER_EVENT_CEILING, TRACKING_URLS_PER_POD_CEILING};
            let t = self.tracking_limits;
            if !(1..=TRACKING_URLS_PER_EVENT_CEILING).contains(&t.per_event) {
                f(
                    "tracking_limits.per_event",
                    format!("must be 1..={TRACKING_URLS_PER_EVENT_CEILING}"),
                );
            }
            if !(1..=TRACKING_URLS_PER_POD_CEILING).contains(&t.per_pod) {
                f(
                    "tracking_limits.per_pod",
                    format!("must be 1..={TRACKING_URLS_PER_POD_CEILING}"),
                );
            }
        }
        for (field, m) in self.targeting.problems() {
            f(&field, m);
        }
        if !(-3..=10).contains(&self.sgai_announce_ahead_segments) {
            f("sgai_announce_ahead_segments", "must be -3..=10".into());
        }
        if !self.sgai_restrict.is_empty()
            && !self
                .sgai_restrict
                .split(',')
                .all(|x| x == "SKIP" || x == "JUMP")
        {
            f("sgai_restrict", "must be a list of SKIP, JUMP".into());
        }
        if !self.sgai_snap.is_empty() && !self.sgai_snap.split(',').all(|x| x == "IN" || x == "OUT")
        {
            f("sgai_snap", "must be a list of IN, OUT".into());
        }
        e
    }

    pub fn splice_settings(&self, asset_list_prefix: String) -> SpliceSettings {
        SpliceSettings {
            asset_list_prefix,
            announce_ahead_segments: self.sgai_announce_ahead_segments,
            restrict: self.sgai_restrict.clone(),
            snap: self.sgai_snap.clone(),
            strip_cues: self.strip_cues,
            ad_dateranges: self.ad_dateranges,
            ad_proxy_prefix: None,
            session: None,
            ..SpliceSettings::default()
        }
    }

    /// max-age for a playlist: configured, never over half a target
    /// duration (RFC 8216bis §6.2.1 reload behaviour), at least 0.
    pub fn max_age(&self, target_duration_s: u64) -> u32 {
        let half = (target_duration_s / 2) as u32;
        self.cache_max_age_s.min(half.max(1))
    }
}

/// `mode: auto`: SGAI for players that play HLS Interstitials, SSAI
/// otherwise. The rule, in order:
/// 1. `?mode=ssai|sgai` wins.
/// 2. Channel `ssai`/`sgai` wins over detection.
/// 3. Client hint header `X-Interstitials: 1|0` (our explicit hint).
/// 4. User-Agent: AppleCoreMedia/AVPlayer (iOS/tvOS/macOS ≥ 16.4 play
///    interstitials) and hls.js ≥ 1.6 when the page says so in the UA
///    (`hls.js/1.6`), Shaka (`Shaka`), ExoPlayer/Media3 (`ExoPlayer`,
///    `AndroidXMedia3`) → SGAI. Everything else → SSAI (works on every
///    player).
pub fn choose_mode(
    setting: ModeSetting,
    query: Option<&str>,
    hint: Option<&str>,
    user_agent: Option<&str>,
) -> Mode {
    match query {
        Some("ssai") => return Mode::Ssai,
        Some("sgai") => return Mode::Sgai,
        _ => {}
    }
    match setting {
        ModeSetting::Ssai => return Mode::Ssai,
        ModeSetting::Sgai => return Mode::Sgai,
        ModeSetting::Auto => {}
    }
    match hint.map(str::trim) {
        Some("1") | Some("?1") | Some("true") => return Mode::Sgai,
        Some("0") | Some("?0") | Some("false") => return Mode::Ssai,
        _ => {}
    }
    let ua = user_agent.unwrap_or("");
    let sgai = ua.contains("AppleCoreMedia")
        || ua.contains("AVPlayer")
        || ua.contains("Shaka")
        || ua.contains("ExoPlayer")
        || ua.contains("AndroidXMedia3")
        || hlsjs_at_least_1_6(ua);
    if sgai {
        Mode::Sgai
    } else {
        Mode::Ssai
    }
}

fn hlsjs_at_least_1_6(ua: &str) -> bool {
    let Some((_, v)) = ua.split_once("hls.js/") else {
        return false;
    };
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    major > 1 || (major == 1 && minor >= 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_fields() {
        let c = ChannelConfig {
            origin_url: "http://127.0.0.1/x".into(),
            cadence_ms: 5,
            ..Default::default()
        };
        let e = c.validate(true);
        let fields: Vec<_> = e.iter().map(|x| x.field.as_str()).collect();
        assert!(
            fields.contains(&"origin_url"),
            "allow_private_origin not set"
        );
        assert!(fields.contains(&"cadence_ms"));
    }

    #[test]
    fn tracking_limits_default_and_bounds() {
        let c: ChannelConfig =
            serde_json::from_str(r#"{"origin_url": "https://o.example/m.m3u8"}"#).unwrap();
        assert_eq!(
            (c.tracking_limits.per_event, c.tracking_limits.per_pod),
            (64, 512)
        );
        assert!(c.validate(false).is_empty());
        let c: ChannelConfig = serde_json::from_str(
            r#"{"origin_url": "https://o.example/m.m3u8", "tracking_limits": {"per_event": 8}}"#,
        )
        .unwrap();
        assert_eq!(
            (c.tracking_limits.per_event, c.tracking_limits.per_pod),
            (8, 512)
        );
        for (json, field) in [
            (r#"{"per_event": 0}"#, "tracking_limits.per_event"),
            (r#"{"per_event": 257}"#, "tracking_limits.per_event"),
            (r#"{"per_pod": 4096}"#, "tracking_limits.per_pod"),
        ] {
            assert_only_error("tracking_limits", json, field);
        }
        assert!(serde_json::from_str::<ChannelConfig>(
            r#"{"origin_url": "x", "tracking_limits": {"per_ad": 1}}"#
        )
        .is_err());
    }

    /// A config whose `section` is `json` has exactly one error, on `field`.
    fn assert_only_error(section: &str, json: &str, field: &str) {
        let c: ChannelConfig = serde_json::from_str(&format!(
            r#"{{"origin_url": "https://o.example/m.m3u8", "{section}": {json}}}"#
        ))
        .unwrap();
        let e = c.validate(false);
        assert_eq!(e.len(), 1, "{json}: {e:?}");
        assert_eq!(e[0].field, field);
    }

    #[test]
    fn targeting_defaults_and_validation() {
        let c: ChannelConfig =
            serde_json::from_str(r#"{"origin_url": "https://o.example/m.m3u8"}"#).unwrap();
        assert_eq!(c.targeting, TargetingConfig::default());
        assert_eq!(c.targeting.max_cohorts, 32);
        assert!(c.targeting.keys.is_empty() && c.targeting.params.is_empty());
        let c: ChannelConfig = serde_json::from_str(
            r#"{"origin_url": "https://o.example/m.m3u8",
                "targeting": {"keys": ["geo", "ads.genre"], "params": ["genre"]}}"#,
        )
        .unwrap();
        assert!(c.validate(false).is_empty(), "{:?}", c.validate(false));
        assert_eq!(c.targeting.max_cohorts, 32);
        for (json, field) in [
            (r#"{"keys": ["city"]}"#, "targeting.keys[0]"),
            (r#"{"keys": ["ads.genre"]}"#, "targeting.keys[0]"),
            (r#"{"params": ["Genre"]}"#, "targeting.params[0]"),
            (r#"{"max_cohorts": 0}"#, "targeting.max_cohorts"),
            (r#"{"max_cohorts": 257}"#, "targeting.max_cohorts"),
        ] {
            assert_only_error("targeting", json, field);
        }
        assert!(serde_json::from_str::<ChannelConfig>(
            r#"{"origin_url": "x", "targeting": {"cohorts": 1}}"#
        )
        .is_err());
    }

    #[test]
    fn auto_mode_rule() {
        use ModeSetting::*;
        assert_eq!(
            choose_mode(Auto, None, None, Some("AppleCoreMedia/1.0")),
            Mode::Sgai
        );
        assert_eq!(
            choose_mode(Auto, None, None, Some("Mozilla/5.0 hls.js/1.6.2")),
            Mode::Sgai
        );
        assert_eq!(
            choose_mode(Auto, None, None, Some("Mozilla/5.0 hls.js/1.5.0")),
            Mode::Ssai
        );
        assert_eq!(choose_mode(Auto, None, None, Some("VLC/3.0")), Mode::Ssai);
        assert_eq!(
            choose_mode(Auto, None, Some("1"), Some("VLC/3.0")),
            Mode::Sgai
        );
        assert_eq!(choose_mode(Auto, Some("ssai"), Some("1"), None), Mode::Ssai);
        assert_eq!(choose_mode(Sgai, None, None, None), Mode::Sgai);
        assert_eq!(choose_mode(Ssai, Some("sgai"), None, None), Mode::Sgai);
    }
}
