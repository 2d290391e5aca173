//! Viewer targeting ("addressable breaks"): who a playlist request is for,
//! read from what the platform and the player tell us, and which audience
//! *cohort* it falls in. The manifest worker builds a [`Viewer`] per
//! session with [`from_request`]; the channel's Durable Object decides one
//! pod per (break, cohort), asking the decision service for the cohort's
//! shared view ([`cohort_viewer`]). Pure and feature-free: the manifest
//! worker's wasm is built without the `vast` feature.
//!
//! # The rules, field by field
//!
//! Nothing here is an error: a value that is malformed, or given twice with
//! different values (so that its meaning would depend on the order of the
//! query), is treated as absent. Query pairs are read percent-decoded (as
//! `url::Url::query_pairs` yields them).
//!
//! - **geo** (`[DEVICEGEO]`): the trusted country (platform metadata, or a
//!   header the operator trusts — never the query) when it is exactly two
//!   ASCII letters, upper-cased; Cloudflare's "XX" (unknown) and "T1" (Tor)
//!   are unknown (""). **region**: 1–3 ASCII alphanumerics (the ISO 3166-2
//!   part after the country), upper-cased, and only with a known country.
//! - **Consent signals** from the query, each checked for shape:
//!   `gdpr` ("1"/"0"), `gdpr_consent` (IAB TCF v2 TC string: base64url
//!   segments joined by '.', 20..=4096 characters, every segment decodes,
//!   the core segment's version field is 2), `us_privacy` (IAB US Privacy
//!   string `1[YN-]{3}`, upper-cased), `gpp` (IAB GPP string: base64url
//!   segments joined by '~', ≤ 4096), `gpp_sid` (up to 20 comma-separated
//!   section ids, each 0..=255).
//! - **personalised** (may the ads be chosen from this viewer's data), in
//!   order:
//!   1. GDPR applies — `gdpr=1`, or no `gdpr` flag but a valid TC string
//!      (a CMP only writes one where it applies): personalised iff the TC
//!      string's core segment records consent for Purposes 1 (store and/or
//!      access information on a device), 3 (create profiles for
//!      personalised advertising) and 4 (use profiles to select
//!      personalised advertising), the purposes personalised ads need.
//!      Vendor consents and legitimate-interest bits are not read: the ad
//!      server still receives the TC string and applies its own vendor's
//!      bits (a simplification that can only err towards non-personalised).
//!   2. A US Privacy string whose third character ("opt-out of sale") is
//!      'Y': not personalised.
//!   3. A zeroed IFA (the platform's limit-ad-tracking signal): not
//!      personalised.
//!   4. Otherwise — no regulation signalled, or `gdpr=0` — personalised.
//!
//!   The GPP string is forwarded to ad servers, which decode its sections;
//!   it is not read here.
//!   When the channel's cohort keys include "consent", this verdict is what
//!   splits the audience (a "1" and a "0" cohort).
//! - **device**: [`device_class`] of `X-Device-User-Agent` when present (a
//!   server-side player or a proxy names the real device there), else of
//!   the `User-Agent`.
//! - **ifa** / **ifa_type**: query `ifa` (or `ads.ifa`, as MediaTailor-style
//!   player parameters carry it) when it is a UUID (8-4-4-4-12 hex),
//!   lower-cased, the all-zero UUID being "limit ad tracking" (""); the
//!   type (`ifa_type` or `ads.ifa_type`) from the IAB OTT IFA guidelines'
//!   list. Both "" unless personalised.
//! - **params** (`[player_params.KEY]`): every `ads.KEY=value` whose KEY the
//!   channel allow-lists (`targeting.params`); values over 256 bytes are
//!   dropped, control characters removed; at most 16.
//! - **cohort**: [`cohort_of`].

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used
    )
)]

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub use crate::ads::request::Viewer;

/// The longest [`encode`]d viewer [`decode`] accepts (it rides in URLs and
/// session tokens); [`encode`] never produces a longer one.
pub const MAX_ENCODED_LEN: usize = 4096;
/// Dimensions one channel may split its audience by.
pub const MAX_KEYS: usize = 8;
/// Player key-values one channel may allow-list (and a viewer may carry).
pub const MAX_PARAMS: usize = 16;
/// The longest allow-listed key (bytes, `[a-z0-9_]`).
pub const MAX_PARAM_KEY_LEN: usize = 32;
/// The longest player key-value kept (bytes); longer ones are dropped,
/// not cut (a cut value would be a different value).
pub const MAX_PARAM_VALUE_LEN: usize = 256;
/// Cohorts one channel may decide pods for, at most.
pub const MAX_COHORTS_CEILING: usize = 256;
/// The longest TC / GPP string kept (characters).
pub const MAX_CONSENT_LEN: usize = 4096;
/// The most GPP section ids kept.
pub const MAX_GPP_SIDS: usize = 20;
/// The dimensions `targeting.keys` may name, besides `ads.KEY`.
pub const KEY_NAMES: [&str; 4] = ["geo", "region", "consent", "device"];
/// The IFA types of the IAB OTT IFA guidelines (and the VAST 4.3
/// `[IFATYPE]` macro).
pub const IFA_TYPES: [&str; 10] = [
    "aaid", "idfa", "rida", "afai", "msai", "ppid", "sspid", "tifa", "vida", "lgudid",
];

/// Query parameters the IFA is read from; they are never player
/// key-values (an allow-listed `ads.ifa` would leak the IFA of a viewer
/// who did not consent).
const RESERVED_PARAMS: [&str; 2] = ["ifa", "ifa_type"];

// ------------------------------------------------------------------ config

/// Which viewer dimensions split a channel's audience into cohorts
/// (`targeting` in the channel config). Lives here, with the rules it
/// parameterises; the control plane re-exports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetingConfig {
    /// The dimensions that split the audience, in order: "geo", "region",
    /// "consent", "device", "ads.KEY" (KEY allow-listed in `params`).
    /// Empty (the default): one audience, one pod per break.
    pub keys: Vec<String>,
    /// Cohorts with pods of their own, at most (1..=256); viewers of
    /// further cohorts get the default audience's pod. Each cohort costs
    /// one decision per break.
    pub max_cohorts: usize,
    /// The player key-values (`ads.KEY`, KEY without the prefix) read from
    /// playlist requests and passed to ad servers; others are ignored.
    pub params: Vec<String>,
}

impl Default for TargetingConfig {
    fn default() -> Self {
        TargetingConfig {
            keys: Vec::new(),
            max_cohorts: 32,
            params: Vec::new(),
        }
    }
}

impl TargetingConfig {
    /// What is wrong with it, as (field, message) pairs; fields are named
    /// under `targeting.` like the channel config's other errors.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut e: Vec<(String, String)> = Vec::new();
        let mut f = |field: String, m: String| e.push((field, m));
        if self.keys.len() > MAX_KEYS {
            f("targeting.keys".into(), format!("at most {MAX_KEYS} keys"));
        }
        if self.params.len() > MAX_PARAMS {
            f(
                "targeting.params".into(),
                format!("at most {MAX_PARAMS} keys"),
            );
        }
        if !(1..=MAX_COHORTS_CEILING).contains(&self.max_cohorts) {
            f(
                "targeting.max_cohorts".into(),
                format!("must be 1..={MAX_COHORTS_CEILING}"),
            );
        }
        for (i, p) in self.params.iter().enumerate() {
            let field = format!("targeting.params[{i}]");
            if !is_param_key(p) {
                f(
                    field,
                    format!("{p:?}: 1 to {MAX_PARAM_KEY_LEN} of a-z, 0-9, _ (without \"ads.\")"),
                );
            } else if RESERVED_PARAMS.contains(&p.as_str()) {
                f(
                    field,
                    format!("{p:?} is read as the device's IFA, not a key-value"),
                );
            } else if self.params.iter().take(i).any(|q| q == p) {
                f(field, format!("{p:?} is listed twice"));
            }
        }
        for (i, k) in self.keys.iter().enumerate() {
            let field = format!("targeting.keys[{i}]");
            if self.keys.iter().take(i).any(|q| q == k) {
                f(field, format!("{k:?} is listed twice"));
            } else if let Some(p) = k.strip_prefix("ads.") {
                if !self.params.iter().any(|q| q == p) {
                    f(field, format!("{k:?}: {p:?} must be in targeting.params"));
                }
            } else if !KEY_NAMES.contains(&k.as_str()) {
                f(
                    field,
                    format!("{k:?} is not one of geo, region, consent, device, ads.KEY"),
                );
            }
        }
        e
    }
}

fn is_param_key(k: &str) -> bool {
    (1..=MAX_PARAM_KEY_LEN).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

// ------------------------------------------------------------------ device

/// The class of device a viewer watches on: ad servers price and pick
/// creatives by it (a CTV spot is not a mobile one). On the wire as the
/// lower-case name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    /// Connected TV: smart TVs, streaming sticks and boxes, consoles.
    Ctv,
    /// Phones and tablets.
    Mobile,
    /// Desktop and laptop computers.
    Desktop,
    /// Unknown (no or an unrecognised User-Agent).
    #[default]
    Other,
}

impl DeviceClass {
    pub const ALL: [DeviceClass; 4] = [
        DeviceClass::Ctv,
        DeviceClass::Mobile,
        DeviceClass::Desktop,
        DeviceClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Ctv => "ctv",
            DeviceClass::Mobile => "mobile",
            DeviceClass::Desktop => "desktop",
            DeviceClass::Other => "other",
        }
    }

    /// The default, which the wire leaves out.
    pub fn is_other(&self) -> bool {
        *self == DeviceClass::Other
    }
}

/// User-Agent markers (lower case) of each class, tried in this order:
/// TVs first, since their UAs also say "Android", "Linux", "X11",
/// "Windows NT" or "Mobile Safari" (Fire TV, Android TV, Chromecast, Xbox).
const DEVICE_MARKERS: [(DeviceClass, &[&str]); 3] = [
    (
        DeviceClass::Ctv,
        &[
            "smart-tv",
            "smarttv",
            "smart tv",
            "tizen",
            "web0s",
            "webos",
            "netcast",
            "roku",
            "appletv",
            "apple tv",
            "tvos",
            "bravia",
            "crkey",
            "chromecast",
            "android tv",
            "googletv",
            "google tv",
            "hbbtv",
            "playstation",
            "xbox",
            "vidaa",
            "viera",
        ],
    ),
    (
        DeviceClass::Mobile,
        &[
            "iphone",
            "ipad",
            "ipod",
            "android",
            "windows phone",
            "mobile",
        ],
    ),
    (
        DeviceClass::Desktop,
        &["windows nt", "macintosh", "x11", "linux x86_64", "cros"],
    ),
];

/// The device class of a User-Agent (table above; case-insensitive). Amazon
/// Fire TV names itself by model, "AFT" and capitals ("AFTMM", "AFTKA"),
/// matched case-sensitively as a token.
pub fn device_class(ua: &str) -> DeviceClass {
    if is_fire_tv(ua) {
        return DeviceClass::Ctv;
    }
    let lower = ua.to_ascii_lowercase();
    DEVICE_MARKERS
        .iter()
        .find(|(_, markers)| markers.iter().any(|m| lower.contains(m)))
        .map_or(DeviceClass::Other, |(c, _)| *c)
}

fn is_fire_tv(ua: &str) -> bool {
    ua.match_indices("AFT").any(|(i, _)| {
        let before = ua.get(..i).and_then(|s| s.chars().next_back());
        let after = ua.get(i..).and_then(|s| s.chars().nth(3));
        matches!(before, Some(' ' | ';' | '('))
            && after.is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    })
}

// ------------------------------------------------------------- the viewer

/// What a playlist request tells us about its viewer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    /// The country, from a trusted source only (platform metadata or a
    /// header the operator configured as trusted): the query is the
    /// viewer's to forge.
    pub country: Option<&'a str>,
    /// The region (ISO 3166-2 subdivision code), same source.
    pub region: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// `X-Device-User-Agent`: wins over `User-Agent` when present.
    pub device_user_agent: Option<&'a str>,
    /// The master request's query pairs, percent-decoded.
    pub query: &'a [(String, String)],
}

/// The viewer of a playlist request, its cohort set (rules in the module
/// doc).
pub fn from_request(facts: &RequestFacts<'_>, cfg: &TargetingConfig) -> Viewer {
    let q = facts.query;
    let geo = facts.country.and_then(country).unwrap_or_default();
    let region = if geo.is_empty() {
        String::new()
    } else {
        facts.region.and_then(subdivision).unwrap_or_default()
    };
    let gdpr = match single(q, &["gdpr"]) {
        Some("1") => Some(true),
        Some("0") => Some(false),
        _ => None,
    };
    let tcf = single(q, &["gdpr_consent"]).and_then(Tcf::parse);
    let us_privacy = single(q, &["us_privacy"])
        .and_then(us_privacy)
        .unwrap_or_default();
    let gpp = single(q, &["gpp"])
        .filter(|s| is_gpp(s))
        .map(String::from)
        .unwrap_or_default();
    let gpp_sid = single(q, &["gpp_sid"])
        .filter(|s| is_gpp_sid(s))
        .map(String::from)
        .unwrap_or_default();
    let ifa = single(q, &["ifa", "ads.ifa"]).and_then(ifa);
    let lat = ifa == Some(Ifa::Zeroed);
    let gdpr_applies = gdpr == Some(true) || (gdpr.is_none() && tcf.is_some());
    let personalised = if gdpr_applies {
        tcf.as_ref().is_some_and(Tcf::allows_personalised_ads)
    } else {
        us_privacy.as_bytes().get(2) != Some(&b'Y') && !lat
    };
    let (ifa, ifa_type) = match ifa {
        Some(Ifa::Id(id)) if personalised => {
            let t = single(q, &["ifa_type", "ads.ifa_type"])
                .map(str::to_ascii_lowercase)
                .filter(|t| IFA_TYPES.contains(&t.as_str()))
                .unwrap_or_default();
            (id, t)
        }
        _ => (String::new(), String::new()),
    };
    let ua = facts
        .device_user_agent
        .filter(|s| !s.trim().is_empty())
        .or(facts.user_agent);
    let mut v = Viewer {
        geo,
        region,
        consent: tcf.map(|t| t.text.to_string()).unwrap_or_default(),
        bucket: String::new(),
        gdpr,
        us_privacy,
        gpp,
        gpp_sid,
        personalised,
        device: ua.map_or(DeviceClass::Other, device_class),
        ifa,
        ifa_type,
        params: player_params(q, cfg),
        cohort: String::new(),
    };
    v.cohort = cohort_of(&v, cfg);
    v
}

/// The value of a query parameter (under any of `names`) when it is given
/// once, or several times alike: conflicting values are ambiguous (the
/// answer would depend on the order of the query) and read as absent.
fn single<'q>(q: &'q [(String, String)], names: &[&str]) -> Option<&'q str> {
    let mut found: Option<&str> = None;
    for (k, v) in q {
        if names.contains(&k.as_str()) {
            match found {
                Some(f) if f != v => return None,
                _ => found = Some(v),
            }
        }
    }
    found
}

fn country(c: &str) -> Option<String> {
    let c = c.trim();
    (c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| c.to_ascii_uppercase())
        .filter(|c| c != "XX" && c != "T1")
}

fn subdivision(r: &str) -> Option<String> {
    let r = r.trim();
    ((1..=3).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| r.to_ascii_uppercase())
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// base64url as TC strings are written: no padding (tolerated if present),
/// the last character's spare bits not checked.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An IAB TCF v2 TC string that passed the shape checks, and its core
/// segment.
#[derive(Debug)]
struct Tcf<'a> {
    text: &'a str,
    core: Vec<u8>,
}

impl<'a> Tcf<'a> {
    /// Offset of PurposesConsent in the core segment (bits): Version 6,
    /// Created 36, LastUpdated 36, CmpId 12, CmpVersion 12, ConsentScreen
    /// 6, ConsentLanguage 12, VendorListVersion 12, TcfPolicyVersion 6,
    /// IsServiceSpecific 1, UseNonStandardTexts 1, SpecialFeatureOptIns 12.
    const PURPOSES_CONSENT_BIT: usize = 152;
    /// The purposes personalised ads need (store/access, create and use a
    /// personalised-ads profile).
    const AD_PURPOSES: [usize; 3] = [1, 3, 4];

    fn parse(s: &'a str) -> Option<Tcf<'a>> {
        if !(20..=MAX_CONSENT_LEN).contains(&s.len()) {
            return None;
        }
        let mut core = None;
        for seg in s.split('.') {
            if seg.is_empty() || !is_base64url(seg) {
                return None;
            }
            let bytes = B64_LENIENT.decode(seg).ok()?;
            core.get_or_insert(bytes);
        }
        let core = core?;
        // Version 2, and long enough to hold the purposes.
        let version = core.first().map(|b| b >> 2);
        (version == Some(2) && core.len() >= 22).then_some(Tcf { text: s, core })
    }

    fn bit(&self, i: usize) -> bool {
        self.core
            .get(i / 8)
            .is_some_and(|b| b.rotate_left((i % 8) as u32) & 0x80 != 0)
    }

    fn allows_personalised_ads(&self) -> bool {
        Self::AD_PURPOSES.iter().all(|p| {
            self.bit(
                Self::PURPOSES_CONSENT_BIT
                    .saturating_add(*p)
                    .saturating_sub(1),
            )
        })
    }
}

/// The IAB US Privacy string: version 1, then notice given, opted out of
/// sale, covered by the LSPA, each Y, N or '-'.
fn us_privacy(s: &str) -> Option<String> {
    let b = s.as_bytes();
    (b.len() == 4
        && b.first() == Some(&b'1')
        && b.iter()
            .skip(1)
            .all(|c| matches!(c, b'Y' | b'N' | b'y' | b'n' | b'-')))
    .then(|| s.to_ascii_uppercase())
}

/// An IAB GPP string: a header and sections, base64url segments joined by
/// '~' (a section may have '.'-joined sub-segments).
fn is_gpp(s: &str) -> bool {
    (1..=MAX_CONSENT_LEN).contains(&s.len())
        && s.split('~')
            .all(|seg| !seg.is_empty() && seg.split('.').all(|p| !p.is_empty() && is_base64url(p)))
}

/// GPP section ids: comma-separated small integers.
fn is_gpp_sid(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').count() <= MAX_GPP_SIDS
        && s.split(',').all(|n| {
            (1..=3).contains(&n.len())
                && n.bytes().all(|b| b.is_ascii_digit())
                && n.parse::<u8>().is_ok()
        })
}

#[derive(Debug, PartialEq)]
enum Ifa {
    /// A device id, lower case.
    Id(String),
    /// The all-zero id: the device limits ad tracking.
    Zeroed,
}

fn ifa(s: &str) -> Option<Ifa> {
    let groups: Vec<&str> = s.split('-').collect();
    let shape = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !shape {
        return None;
    }
    Some(if s.bytes().all(|b| b == b'0' || b == b'-') {
        Ifa::Zeroed
    } else {
        Ifa::Id(s.to_ascii_lowercase())
    })
}

/// The allow-listed `ads.KEY=value` pairs (rules in the module doc). Which
/// 16 are kept does not depend on the query: the first 16 keys of the
/// allow-list.
fn player_params(q: &[(String, String)], cfg: &TargetingConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in cfg
        .params
        .iter()
        .filter(|k| !RESERVED_PARAMS.contains(&k.as_str()))
        .take(MAX_PARAMS)
    {
        let name = format!("ads.{key}");
        let Some(raw) = single(q, &[name.as_str()]) else {
            continue;
        };
        if raw.len() > MAX_PARAM_VALUE_LEN {
            continue;
        }
        let clean: String = raw.chars().filter(|c| !c.is_control()).collect();
        if !clean.is_empty() {
            out.insert(key.clone(), clean);
        }
    }
    out
}

// ----------------------------------------------------------------- cohorts

/// The viewer's cohort: "" when the channel does not split its audience
/// (no keys), else the first 8 bytes (16 lower-case hex digits) of the
/// SHA-256 of the keyed dimensions, as `key NUL value NUL` in the config's
/// key order: "geo", "region", "device" their value, "consent" "1"/"0"
/// (personalised or not), "ads.K" the K key-value or "". Stable across
/// isolates and releases (the Durable Object keys pods by it), short, and
/// saying nothing readable about the viewer. 64 bits: a client grinding
/// key-values to land on another cohort's id (and so its pods) would need
/// ~2^63 tries.
pub fn cohort_of(v: &Viewer, cfg: &TargetingConfig) -> String {
    if cfg.keys.is_empty() {
        return String::new();
    }
    let mut h = Sha256::new();
    for k in &cfg.keys {
        let value = match k.as_str() {
            "geo" => v.geo.as_str(),
            "region" => v.region.as_str(),
            "consent" => {
                if v.personalised {
                    "1"
                } else {
                    "0"
                }
            }
            "device" => v.device.as_str(),
            other => other
                .strip_prefix("ads.")
                .and_then(|p| v.params.get(p))
                .map_or("", String::as_str),
        };
        h.update(k.as_bytes());
        h.update([0]);
        h.update(value.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The targeting a cohort's decision is asked with: only what every viewer
/// of the cohort shares — the keyed dimensions (geo, region, device, the
/// keyed `ads.` params) and, when "consent" is a key, the cohort's consent
/// verdict — with the cohort id. A cohort's pod is shared by many viewers:
/// one viewer's TC, US Privacy or GPP string, IFA or unkeyed key-values
/// must not be presented to an ad server as if they were everyone's, so
/// they are all empty, and a cohort not split by consent is asked as
/// non-personalised (some of its viewers may not have consented).
pub fn cohort_viewer(v: &Viewer, cfg: &TargetingConfig) -> Viewer {
    let mut c = Viewer {
        cohort: v.cohort.clone(),
        ..Viewer::default()
    };
    for k in &cfg.keys {
        match k.as_str() {
            "geo" => c.geo.clone_from(&v.geo),
            "region" => c.region.clone_from(&v.region),
            "consent" => c.personalised = v.personalised,
            "device" => c.device = v.device,
            other => {
                if let Some((p, value)) = other
                    .strip_prefix("ads.")
                    .and_then(|p| v.params.get_key_value(p))
                {
                    c.params.insert(p.clone(), value.clone());
                }
            }
        }
    }
    c
}

// --------------------------------------------------------------- encoding

/// Why an encoded viewer is refused. Messages never echo the input (it
/// carries consent strings and device ids).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetingError {
    #[error("viewer: over {MAX_ENCODED_LEN} bytes")]
    TooLong,
    #[error("viewer: not base64url")]
    Base64,
    #[error("viewer: not a viewer's JSON ({0})")]
    Json(String),
}

const B64: GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The viewer, URL-safe: base64url without padding of its compact JSON.
/// Always within [`MAX_ENCODED_LEN`], so [`decode`] takes back whatever
/// this gives: a viewer too large (kilobyte TC and GPP strings, long
/// key-values) sheds, in turn, its GPP strings; its TC and US Privacy
/// strings and IFA (then as non-personalised: without the TC string its
/// consent cannot be shown); its key-values and bucket; and last
/// everything but geo, region, device and cohort.
pub fn encode(v: &Viewer) -> String {
    let fits = |v: &Viewer| {
        serde_json::to_vec(v)
            .ok()
            .map(|j| B64.encode(j))
            .filter(|s| s.len() <= MAX_ENCODED_LEN)
    };
    if let Some(s) = fits(v) {
        return s;
    }
    let mut v = v.clone();
    v.gpp.clear();
    v.gpp_sid.clear();
    if let Some(s) = fits(&v) {
        return s;
    }
    v.consent.clear();
    v.us_privacy.clear();
    v.ifa.clear();
    v.ifa_type.clear();
    v.personalised = false;
    if let Some(s) = fits(&v) {
        return s;
    }
    v.params.clear();
    v.bucket.clear();
    if let Some(s) = fits(&v) {
        return s;
    }
    let minimal = Viewer {
        geo: v.geo,
        region: v.region,
        device: v.device,
        cohort: v.cohort,
        ..Viewer::default()
    };
    fits(&minimal).unwrap_or_else(|| B64.encode(b"{}"))
}

/// A viewer from [`encode`]'s form; refuses anything longer than
/// [`MAX_ENCODED_LEN`], not base64url, or not a viewer's JSON.
pub fn decode(s: &str) -> Result<Viewer, TargetingError> {
    if s.len() > MAX_ENCODED_LEN {
        return Err(TargetingError::TooLong);
    }
    let json = B64.decode(s).map_err(|_| TargetingError::Base64)?;
    serde_json::from_slice(&json)
        .map_err(|e| TargetingError::Json(format!("{:?} at column {}", e.classify(), e.column())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(keys: &[&str], params: &[&str]) -> TargetingConfig {
        TargetingConfig {
            keys: keys.iter().map(|s| s.to_string()).collect(),
            params: params.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn viewer(pairs: &[(&str, &str)], c: &TargetingConfig) -> Viewer {
        let query = q(pairs);
        from_request(
            &RequestFacts {
                country: Some("de"),
                region: Some("be"),
                user_agent: Some("Roku/DVP-12.0 (12.0.0.4182-88)"),
                query: &query,
                ..Default::default()
            },
            c,
        )
    }

    /// A TC string whose core segment consents to `purposes` (bit layout
    /// of the TCF v2 core segment), `version` in its first 6 bits.
    fn tc_string(version: u8, purposes: &[usize]) -> String {
        let mut bits = vec![false; 260];
        for (i, bit) in bits.iter_mut().take(6).enumerate() {
            *bit = (version >> (5 - i)) & 1 == 1;
        }
        for p in purposes {
            bits[Tcf::PURPOSES_CONSENT_BIT + p - 1] = true;
        }
        let bytes: Vec<u8> = bits
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |b, (i, &x)| b | ((x as u8) << (7 - i)))
            })
            .collect();
        format!("{}.YAAAAAAAAAAA", B64.encode(bytes))
    }

    #[test]
    fn geo_is_trusted_and_checked() {
        let c = TargetingConfig::default();
        let at = |country: Option<&str>, region: Option<&str>| {
            let v = from_request(
                &RequestFacts {
                    country,
                    region,
                    ..Default::default()
                },
                &c,
            );
            (v.geo, v.region)
        };
        assert_eq!(at(Some("us"), Some("ca")), ("US".into(), "CA".into()));
        assert_eq!(at(Some("GB"), Some("ENG")), ("GB".into(), "ENG".into()));
        for forged in ["XX", "xx", "T1", "USA", "U", "1A", "", "ü"] {
            assert_eq!(
                at(Some(forged), Some("CA")),
                (String::new(), String::new()),
                "{forged}"
            );
        }
        assert_eq!(at(Some("US"), Some("CALI")).1, "");
        assert_eq!(at(Some("US"), Some("C-A")).1, "");
        assert_eq!(at(None, None), (String::new(), String::new()));
        // The query cannot set the country.
        let query = q(&[("geo", "US"), ("country", "US")]);
        let v = from_request(
            &RequestFacts {
                query: &query,
                ..Default::default()
            },
            &c,
        );
        assert_eq!(v.geo, "");
    }

    #[test]
    fn tcf_consent_decides_personalisation_where_gdpr_applies() {
        let c = TargetingConfig::default();
        let yes = tc_string(2, &[1, 2, 3, 4, 7]);
        let no_profile = tc_string(2, &[1, 2]);
        let v = viewer(&[("gdpr", "1"), ("gdpr_consent", &yes)], &c);
        assert_eq!((v.gdpr, v.personalised), (Some(true), true));
        assert_eq!(v.consent, yes);
        let v = viewer(&[("gdpr", "1"), ("gdpr_consent", &no_profile)], &c);
        assert!(!v.personalised && v.consent == no_profile);
        // GDPR applies and no (or a malformed) TC string: not personalised.
        assert!(!viewer(&[("gdpr", "1")], &c).personalised);
        let v1 = tc_string(1, &[1, 3, 4]);
        let short = B64.encode([0x08u8; 12]);
        for bad in [
            v1.as_str(),
            short.as_str(),
            "CP!xyz.not-base64-at-all-here",
            "CPXxyz",
            "A",
            "....................",
            &"C".repeat(4097),
        ] {
            let v = viewer(&[("gdpr", "1"), ("gdpr_consent", bad)], &c);
            assert_eq!(
                (v.consent.as_str(), v.personalised),
                ("", false),
                "{bad:.40}"
            );
        }
        // No flag but a valid TC string: the CMP says GDPR applies.
        let v = viewer(&[("gdpr_consent", &no_profile)], &c);
        assert_eq!((v.gdpr, v.personalised), (None, false));
        assert!(viewer(&[("gdpr_consent", &yes)], &c).personalised);
        // gdpr=0: GDPR does not apply.
        let v = viewer(&[("gdpr", "0"), ("gdpr_consent", &no_profile)], &c);
        assert_eq!((v.gdpr, v.personalised), (Some(false), true));
        // Junk flag: absent.
        assert_eq!(viewer(&[("gdpr", "yes")], &c).gdpr, None);
        // Real TC strings: purposes 1-10 consented (with vendor and
        // publisher segments), and one consenting to none.
        let all = "CO-HDlqO-HDlqAKAXCENBDCsAP_AAH_AAAqIHJtd_X__bX9j-_5_f_t0eY1P9_r3_-QzjhfNt-8F3L_W_L0X42E7NF36pq4KuR4Eu3LBIQNlHMHUTUmwaokVrzHsak2cpyNKJ7LEknMZO2dYGH9Pn9lDuYKY7_5___bz3j-v_t_-39T378Xf3_d5_2_--vCfV599jbn9fV_7_9nP___9v-_8__________wRgAJMNS8gC7EscGTaMIoUQIwrCQ6AUAFFAMLRNYQMrgp2VwEeoIWACE1ARgRAgxBRiwCAAQCAJCIgJADwQCIAiAQAAgAVAIQAEbAILACwMAgAFANCxAigCECQgyOCo5TAgIkWignkjAEou9jDCEMosAKBR_RUYCIQggWBkJBAAA.YAAAAAAAAAAA";
        let none = "COw4XqLOw4XqLAAAAAENAPCAAAAAAAAAAAAAAAAAAAAA.IFukWSQh";
        let v = viewer(&[("gdpr", "1"), ("gdpr_consent", all)], &c);
        assert_eq!((v.consent.as_str(), v.personalised), (all, true));
        let v = viewer(&[("gdpr", "1"), ("gdpr_consent", none)], &c);
        assert_eq!((v.consent.as_str(), v.personalised), (none, false));
    }

    #[test]
    fn us_privacy_opt_out_and_no_signal() {
        let c = TargetingConfig::default();
        assert!(viewer(&[], &c).personalised, "no regulation signalled");
        let v = viewer(&[("us_privacy", "1yyn")], &c);
        assert_eq!((v.us_privacy.as_str(), v.personalised), ("1YYN", false));
        let v = viewer(&[("us_privacy", "1YNN")], &c);
        assert_eq!((v.us_privacy.as_str(), v.personalised), ("1YNN", true));
        assert!(viewer(&[("us_privacy", "1---")], &c).personalised);
        for bad in ["2YNN", "1YN", "1YNNN", "1YXN", ""] {
            assert_eq!(viewer(&[("us_privacy", bad)], &c).us_privacy, "", "{bad}");
        }
    }

    #[test]
    fn gpp_strings_are_checked_for_shape() {
        let c = TargetingConfig::default();
        let gpp = "DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA.YAAAAAAAAAA";
        let v = viewer(&[("gpp", gpp), ("gpp_sid", "2,6")], &c);
        assert_eq!((v.gpp.as_str(), v.gpp_sid.as_str()), (gpp, "2,6"));
        for bad in ["", "DBABMA~~x", "DB ABMA", "a=b", &"D".repeat(4097)] {
            assert_eq!(viewer(&[("gpp", bad)], &c).gpp, "", "{bad:.20}");
        }
        let many = vec!["1"; 21].join(",");
        for bad in ["", "2,", "a", "2;6", "1000", "256", many.as_str()] {
            assert_eq!(viewer(&[("gpp_sid", bad)], &c).gpp_sid, "", "{bad}");
        }
    }

    #[test]
    fn ifa_needs_a_uuid_a_known_type_and_personalisation() {
        let c = TargetingConfig::default();
        let id = "6D92078A-8246-4BA4-AE5B-76104861E7DC";
        let v = viewer(&[("ifa", id), ("ifa_type", "IDFA")], &c);
        assert_eq!(v.ifa, id.to_ascii_lowercase());
        assert_eq!(v.ifa_type, "idfa");
        let v = viewer(&[("ads.ifa", id), ("ads.ifa_type", "rida")], &c);
        assert_eq!((v.ifa.is_empty(), v.ifa_type.as_str()), (false, "rida"));
        let v = viewer(&[("ifa", id), ("ifa_type", "cookie")], &c);
        assert_eq!((v.ifa.is_empty(), v.ifa_type.as_str()), (false, ""));
        for bad in [
            "6D92078A82464BA4AE5B76104861E7DC",
            "not-a-uuid",
            "6D92078A-8246-4BA4-AE5B-76104861E7DZ",
        ] {
            assert_eq!(viewer(&[("ifa", bad)], &c).ifa, "", "{bad}");
        }
        // Two different ids: ambiguous.
        let other = "11111111-2222-3333-4444-555555555555";
        assert_eq!(viewer(&[("ifa", id), ("ads.ifa", other)], &c).ifa, "");
        // Limit ad tracking: no id, not personalised.
        let v = viewer(
            &[
                ("ifa", "00000000-0000-0000-0000-000000000000"),
                ("ifa_type", "aaid"),
            ],
            &c,
        );
        assert_eq!(
            (v.ifa.as_str(), v.ifa_type.as_str(), v.personalised),
            ("", "", false)
        );
        // Not personalised: the id is not kept.
        let v = viewer(
            &[("ifa", id), ("ifa_type", "idfa"), ("us_privacy", "1YYN")],
            &c,
        );
        assert_eq!((v.ifa.as_str(), v.ifa_type.as_str()), ("", ""));
        let v = viewer(&[("ifa", id), ("gdpr", "1")], &c);
        assert_eq!(v.ifa, "");
    }

    #[test]
    fn player_params_are_allow_listed_and_bounded() {
        let c = cfg(&[], &["genre", "show", "empty", "ifa"]);
        let long = "x".repeat(257);
        let fits = "y".repeat(256);
        let v = viewer(
            &[
                ("ads.genre", "news\u{0}\n\t"),
                ("ads.show", &long),
                ("ads.secret", "nope"),
                ("genre", "sports"),
                ("ads.empty", "\u{7}"),
                ("ads.ifa", "6D92078A-8246-4BA4-AE5B-76104861E7DC"),
            ],
            &c,
        );
        assert_eq!(
            v.params,
            [("genre".to_string(), "news".to_string())].into(),
            "not allow-listed, overlong, empty and IFA keys left out"
        );
        let v = viewer(&[("ads.show", &fits)], &c);
        assert_eq!(v.params.get("show"), Some(&fits));
        // Conflicting duplicates: ambiguous; equal ones are fine.
        let v = viewer(&[("ads.genre", "a"), ("ads.genre", "b")], &c);
        assert!(v.params.is_empty());
        let v = viewer(&[("ads.genre", "a"), ("ads.genre", "a")], &c);
        assert_eq!(v.params.len(), 1);
        // At most 16, whatever the allow-list says.
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        let c = TargetingConfig {
            params: keys.clone(),
            ..Default::default()
        };
        let pairs: Vec<(String, String)> = keys
            .iter()
            .map(|k| (format!("ads.{k}"), "v".into()))
            .collect();
        let v = from_request(
            &RequestFacts {
                query: &pairs,
                ..Default::default()
            },
            &c,
        );
        assert_eq!(v.params.len(), MAX_PARAMS);
    }

    #[test]
    fn device_classes_from_real_user_agents() {
        use DeviceClass::*;
        let table: [(&str, DeviceClass); 27] = [
            ("Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) 76.0.3809.146/6.0 TV Safari/537.36", Ctv),
            ("Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.79 Safari/537.36 WebAppManager", Ctv),
            ("Roku/DVP-12.0 (12.0.0.4182-88)", Ctv),
            ("AppleCoreMedia/1.0.0.20K71 (Apple TV; U; CPU OS 16_1 like Mac OS X; en_us)", Ctv),
            ("AppleTV11,1/11.1", Ctv),
            ("Mozilla/5.0 (Linux; Android 9; AFTMM Build/PS7633; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/108.0.5359.160 Mobile Safari/537.36", Ctv),
            ("Mozilla/5.0 (Linux; Android 10; BRAVIA 4K VH2 Build/QTG3.200305.006.S292; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/114.0.5735.196 Mobile Safari/537.36", Ctv),
            ("Mozilla/5.0 (X11; Linux armv7l) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.120 Safari/537.36 CrKey/1.56.500000 DeviceType/Chromecast", Ctv),
            ("Dalvik/2.1.0 (Linux; U; Android 11; SHIELD Android TV Build/RQ1A.210105.003)", Ctv),
            ("Mozilla/5.0 (Linux armv7l) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/56.0.2924.0 Safari/537.36 OPR/43.0.2442.991 HbbTV/1.5.1 (+DRM; Philips; 55PUS7304/12; TPM191E_R.101.001.107.001; _TV_NT72690; )", Ctv),
            ("Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 Safari/605.1.15", Ctv),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/115.0.0.0 Safari/537.36 Edge/44.18363.8131", Ctv),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1", Mobile),
            ("AppleCoreMedia/1.0.0.21B91 (iPhone; U; CPU OS 17_1 like Mac OS X; en_us)", Mobile),
            ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1", Mobile),
            ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36", Mobile),
            ("Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Mobile),
            ("ExoPlayerDemo/2.19.1 (Linux; Android 13) ExoPlayerLib/2.19.1", Mobile),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Desktop),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15", Desktop),
            ("AppleCoreMedia/1.0.0.23B81 (Macintosh; U; Intel Mac OS X 14_1_1; en_us)", Desktop),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", Desktop),
            ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Desktop),
            ("curl/8.4.0", Other),
            ("VLC/3.0.20 LibVLC/3.0.20", Other),
            ("Lavf/60.3.100", Other),
            ("", Other),
        ];
        for (ua, want) in table {
            assert_eq!(device_class(ua), want, "{ua}");
        }
        // "AFT" only as a Fire TV model token.
        assert_eq!(device_class("AFTERMATH/1.0"), Other);
        for c in DeviceClass::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }

    #[test]
    fn device_user_agent_wins() {
        let c = TargetingConfig::default();
        let v = from_request(
            &RequestFacts {
                user_agent: Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64)"),
                device_user_agent: Some("Roku/DVP-12.0 (12.0.0.4182-88)"),
                ..Default::default()
            },
            &c,
        );
        assert_eq!(v.device, DeviceClass::Ctv);
        let v = from_request(
            &RequestFacts {
                user_agent: Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64)"),
                device_user_agent: Some(" "),
                ..Default::default()
            },
            &c,
        );
        assert_eq!(v.device, DeviceClass::Desktop);
    }

    #[test]
    fn cohort_is_stable_and_independent_of_query_order() {
        let c = cfg(
            &["geo", "device", "consent", "ads.genre"],
            &["genre", "show"],
        );
        let a = viewer(
            &[
                ("ads.genre", "news"),
                ("us_privacy", "1YNN"),
                ("ads.show", "x"),
            ],
            &c,
        );
        let b = viewer(
            &[
                ("ads.show", "x"),
                ("us_privacy", "1YNN"),
                ("ads.genre", "news"),
            ],
            &c,
        );
        assert_eq!(a.cohort, b.cohort);
        assert_eq!(a.cohort.len(), 16);
        assert!(a
            .cohort
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(a.cohort, cohort_of(&a, &c));
        // No keys: the default audience.
        assert_eq!(
            viewer(&[("ads.genre", "news")], &cfg(&[], &["genre"])).cohort,
            ""
        );
    }

    #[test]
    fn cohort_changes_with_keyed_dimensions_only() {
        let c = cfg(&["geo", "consent", "ads.genre"], &["genre", "show"]);
        let base = viewer(&[("ads.genre", "news"), ("ads.show", "a")], &c);
        let other_genre = viewer(&[("ads.genre", "sport"), ("ads.show", "a")], &c);
        let opted_out = viewer(
            &[
                ("ads.genre", "news"),
                ("ads.show", "a"),
                ("us_privacy", "1YYN"),
            ],
            &c,
        );
        assert_ne!(base.cohort, other_genre.cohort);
        assert_ne!(base.cohort, opted_out.cohort);
        let mut elsewhere = base.clone();
        elsewhere.geo = "FR".into();
        assert_ne!(cohort_of(&elsewhere, &c), base.cohort);
        // Unkeyed: show, device, region, IFA.
        let other_show = viewer(&[("ads.genre", "news"), ("ads.show", "b")], &c);
        assert_eq!(base.cohort, other_show.cohort);
        let mut v = base.clone();
        v.device = DeviceClass::Mobile;
        v.region = "BY".into();
        v.ifa = "11111111-2222-3333-4444-555555555555".into();
        assert_eq!(cohort_of(&v, &c), base.cohort);
        // Order of keys in the config matters (it is the canonical order).
        let swapped = cfg(&["consent", "geo", "ads.genre"], &["genre", "show"]);
        assert_ne!(cohort_of(&base, &swapped), base.cohort);
    }

    #[test]
    fn cohort_viewer_shares_only_what_the_cohort_shares() {
        let c = cfg(&["geo", "device", "ads.genre"], &["genre", "show"]);
        let yes = tc_string(2, &[1, 3, 4]);
        let v = viewer(
            &[
                ("gdpr", "1"),
                ("gdpr_consent", &yes),
                ("us_privacy", "1YNN"),
                ("gpp", "DBABMA~x"),
                ("gpp_sid", "2"),
                ("ifa", "6D92078A-8246-4BA4-AE5B-76104861E7DC"),
                ("ifa_type", "idfa"),
                ("ads.genre", "news"),
                ("ads.show", "s1"),
            ],
            &c,
        );
        assert!(v.personalised && !v.ifa.is_empty());
        let cv = cohort_viewer(&v, &c);
        assert_eq!(
            cv,
            Viewer {
                geo: "DE".into(),
                device: DeviceClass::Ctv,
                params: [("genre".to_string(), "news".to_string())].into(),
                cohort: v.cohort.clone(),
                ..Default::default()
            },
            "region and show are not keyed; no one's consent or IFA; not personalised"
        );
        // Keyed by consent: the verdict, still no strings.
        let c = cfg(&["consent", "region"], &[]);
        let v = viewer(&[("gdpr", "1"), ("gdpr_consent", &yes)], &c);
        let cv = cohort_viewer(&v, &c);
        assert!(cv.personalised && cv.consent.is_empty() && cv.gdpr.is_none());
        assert_eq!((cv.region.as_str(), cv.geo.as_str()), ("BE", ""));
        assert_eq!(
            cohort_of(&cv, &c),
            v.cohort,
            "the cohort viewer is of its cohort"
        );
    }

    #[test]
    fn encode_round_trips_and_decode_refuses_garbage() {
        let c = cfg(&["geo"], &["genre"]);
        let v = viewer(
            &[
                ("gdpr", "1"),
                ("gdpr_consent", &tc_string(2, &[1, 3, 4])),
                ("ads.genre", "news & views/ü"),
                ("ifa", "6D92078A-8246-4BA4-AE5B-76104861E7DC"),
            ],
            &c,
        );
        let s = encode(&v);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{s}"
        );
        assert_eq!(decode(&s), Ok(v));
        assert_eq!(encode(&Viewer::default()), "e30", "{{}}");
        assert_eq!(decode("e30"), Ok(Viewer::default()));
        assert_eq!(decode("!!!"), Err(TargetingError::Base64));
        assert_eq!(decode("e30="), Err(TargetingError::Base64), "padding");
        assert!(matches!(
            decode(&B64.encode("[1,2]")),
            Err(TargetingError::Json(_))
        ));
        assert!(matches!(decode(""), Err(TargetingError::Json(_))));
        let secret = B64.encode(r#"{"consent":42,"ifa":"SECRET"}"#);
        let e = decode(&secret).unwrap_err().to_string();
        assert!(!e.contains("SECRET") && !e.contains("42"), "{e}");
        assert_eq!(
            decode(&"A".repeat(MAX_ENCODED_LEN + 1)),
            Err(TargetingError::TooLong)
        );
    }

    #[test]
    fn encode_sheds_what_does_not_fit() {
        let big = Viewer {
            geo: "DE".into(),
            consent: format!("C{}", "A".repeat(3000)),
            gpp: "D".repeat(4000),
            personalised: true,
            ifa: "6d92078a-8246-4ba4-ae5b-76104861e7dc".into(),
            cohort: "0a1b2c3d".into(),
            params: [("genre".to_string(), "news".to_string())].into(),
            ..Default::default()
        };
        let s = encode(&big);
        assert!(s.len() <= MAX_ENCODED_LEN);
        let back = decode(&s).unwrap();
        assert_eq!(
            (back.gpp.as_str(), back.consent.as_str(), back.ifa.as_str()),
            ("", "", "")
        );
        assert!(!back.personalised, "no TC string, no consent to show");
        assert_eq!(
            (back.geo.as_str(), back.cohort.as_str()),
            ("DE", "0a1b2c3d")
        );
        assert_eq!(back.params.len(), 1);
        let huge = Viewer {
            bucket: "b".repeat(10_000),
            ..big
        };
        let back = decode(&encode(&huge)).unwrap();
        assert_eq!((back.bucket.as_str(), back.geo.as_str()), ("", "DE"));
        let absurd = Viewer {
            geo: "g".repeat(10_000),
            ..Default::default()
        };
        assert_eq!(decode(&encode(&absurd)), Ok(Viewer::default()));
    }

    #[test]
    fn config_problems_name_the_field() {
        assert!(TargetingConfig::default().problems().is_empty());
        let ok = cfg(
            &["geo", "region", "consent", "device", "ads.genre"],
            &["genre", "show_id"],
        );
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        let fields = |c: &TargetingConfig| -> Vec<String> {
            c.problems().into_iter().map(|(f, _)| f).collect()
        };
        assert_eq!(fields(&cfg(&["city"], &[])), ["targeting.keys[0]"]);
        assert_eq!(
            fields(&cfg(&["geo", "ads.genre"], &[])),
            ["targeting.keys[1]"]
        );
        assert_eq!(fields(&cfg(&["geo", "geo"], &[])), ["targeting.keys[1]"]);
        let nine: Vec<&str> = [
            "geo", "region", "consent", "device", "ads.a", "ads.b", "ads.c", "ads.d", "ads.e",
        ]
        .into();
        assert_eq!(
            fields(&cfg(&nine, &["a", "b", "c", "d", "e"])),
            ["targeting.keys"]
        );
        let seventeen: Vec<String> = (0..17).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = seventeen.iter().map(String::as_str).collect();
        assert_eq!(fields(&cfg(&[], &refs)), ["targeting.params"]);
        for bad in [
            "Genre",
            "ads.genre",
            "",
            &"a".repeat(33),
            "show-id",
            "ifa",
            "ifa_type",
        ] {
            assert_eq!(fields(&cfg(&[], &[bad])), ["targeting.params[0]"], "{bad}");
        }
        assert_eq!(fields(&cfg(&[], &["a", "a"])), ["targeting.params[1]"]);
        for n in [0, 257] {
            let c = TargetingConfig {
                max_cohorts: n,
                ..Default::default()
            };
            assert_eq!(fields(&c), ["targeting.max_cohorts"]);
        }
        let c: TargetingConfig = serde_json::from_str(r#"{"keys":["geo"]}"#).unwrap();
        assert_eq!((c.max_cohorts, c.params.len()), (32, 0));
        assert!(serde_json::from_str::<TargetingConfig>(r#"{"key":["geo"]}"#).is_err());
    }
}
