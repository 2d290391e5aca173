//! Pure parts of the decision waterfall that are not VAST: the external
//! decision API's JSON contract, frequency caps per creative within a
//! channel window (state kept in KV by the worker), ad renditions read
//! straight from a VAST creative's HLS MediaFile, and a small TTL cache
//! (VAST/VMAP responses, per isolate).

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used
    )
)]

use crate::ads::reason::Reason;
#[cfg(feature = "vast")]
use crate::hls;
#[cfg(feature = "vast")]
use crate::model::{AdRendition, AdSegment, TrackKind};
use crate::model::{PodItem, Tracking};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

// ---------------------------------------------------------------- external API

/// What we POST to a channel's external decision API (step 1 of the
/// waterfall). `geo`, `consent` and `bucket` are always written (the
/// contract's first fields); the targeting added since is left out when
/// empty. The consent strings and IFA are sent only for a personalised
/// viewer ([`ExternalRequest::new`]): for any other, the API is asked for
/// non-personalised ads and gets no identifier to personalise with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExternalRequest<'a> {
    pub channel: &'a str,
    pub break_id: &'a str,
    pub duration_s: f64,
    /// ISO 3166-1 alpha-2 country ("" unknown).
    pub geo: &'a str,
    /// The IAB TCF v2 TC string; "" unless personalised.
    pub consent: &'a str,
    pub bucket: &'a str,
    /// ISO 3166-2 subdivision code part.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub region: &'a str,
    /// "ctv", "mobile", "desktop" or "other".
    pub device: &'a str,
    /// Whether ads may be personalised.
    pub personalised: bool,
    /// The audience cohort the pod is for ("" = the default audience).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub cohort: &'a str,
    /// The player's allow-listed key-values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: &'a BTreeMap<String, String>,
    /// The IAB US Privacy string; sent whatever the verdict (an opt-out
    /// is itself what the API must honour).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub us_privacy: &'a str,
    /// The IAB GPP string and its section ids; "" unless personalised.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub gpp: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub gpp_sid: &'a str,
    /// The identifier for advertising and its type; "" unless
    /// personalised.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub ifa: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub ifa_type: &'a str,
}

impl<'a> ExternalRequest<'a> {
    /// The body for one break and viewer: consent strings and IFA only
    /// when the viewer is personalised.
    pub fn new(
        channel: &'a str,
        break_id: &'a str,
        duration_s: f64,
        v: &'a crate::ads::request::Viewer,
    ) -> Self {
        let personal = |s: &'a str| if v.personalised { s } else { "" };
        ExternalRequest {
            channel,
            break_id,
            duration_s,
            geo: &v.geo,
            consent: personal(&v.consent),
            bucket: &v.bucket,
            region: &v.region,
            device: v.device.as_str(),
            personalised: v.personalised,
            cohort: &v.cohort,
            params: &v.params,
            us_privacy: &v.us_privacy,
            gpp: personal(&v.gpp),
            gpp_sid: personal(&v.gpp_sid),
            ifa: personal(&v.ifa),
            ifa_type: personal(&v.ifa_type),
        }
    }
}

/// Its answer: ads named by creative id / UniversalAdId (mapped to the ad
/// library's conditioned media), and/or VAST tags to run before the
/// channel's own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalResponse {
    #[serde(default)]
    pub ads: Vec<ExternalAd>,
    #[serde(default)]
    pub vast_urls: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalAd {
    #[serde(default)]
    pub ad_id: Option<String>,
    #[serde(default)]
    pub creative_id: Option<String>,
    #[serde(default)]
    pub universal_ad_id: Option<String>,
    #[serde(default)]
    pub tracking: Tracking,
}

/// Parse the external API's body; errors name what was wrong.
pub fn parse_external(body: &str) -> Result<ExternalResponse, ExternalError> {
    serde_json::from_str(body).map_err(|e| ExternalError(e.to_string()))
}

/// A decision API answer that is not the documented JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decision API answer: {0}")]
pub struct ExternalError(pub String);

/// Map the external answer's ads to library items (conditioned media),
/// with the answer's tracking added to the library's. Unknown creatives
/// are reported, not guessed.
pub fn map_external(
    resp: &ExternalResponse,
    library: &[PodItem],
    reasons: &mut Vec<Reason>,
) -> Vec<PodItem> {
    let mut out = Vec::new();
    for (i, a) in resp.ads.iter().enumerate() {
        let found = library.iter().find(|l| {
            a.creative_id.as_deref().is_some_and(|c| c == l.creative_id)
                || (a.universal_ad_id.is_some() && a.universal_ad_id == l.universal_ad_id)
        });
        match found {
            Some(l) => {
                let mut item = l.clone();
                if let Some(id) = a.ad_id.as_deref().filter(|s| !s.is_empty()) {
                    item.ad_id = id.to_string();
                }
                merge_tracking(&mut item.tracking, &a.tracking);
                out.push(item);
            }
            None => reasons.push(Reason::NotInLibrary {
                index: i,
                creative: a
                    .creative_id
                    .as_deref()
                    .or(a.universal_ad_id.as_deref())
                    .unwrap_or("no creative id")
                    .to_string(),
            }),
        }
    }
    out
}

fn merge_tracking(into: &mut Tracking, from: &Tracking) {
    into.impression.extend(from.impression.iter().cloned());
    into.start.extend(from.start.iter().cloned());
    into.first_quartile
        .extend(from.first_quartile.iter().cloned());
    into.midpoint.extend(from.midpoint.iter().cloned());
    into.third_quartile
        .extend(from.third_quartile.iter().cloned());
    into.complete.extend(from.complete.iter().cloned());
    into.error.extend(from.error.iter().cloned());
}

// ---------------------------------------------------------- frequency caps

/// At most `max_per_window` plays of a creative per `window_s` on a
/// channel (0 = no cap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    #[serde(default)]
    pub max_per_window: u32,
    #[serde(default = "default_cap_window")]
    pub window_s: u64,
}

fn default_cap_window() -> u64 {
    3600
}

impl FrequencyCap {
    pub fn enabled(&self) -> bool {
        self.max_per_window > 0 && self.window_s > 0
    }

    /// The oldest play (epoch ms, exclusive) still in the window at `now_ms`.
    fn window_start(&self, now_ms: i64) -> i64 {
        let window_ms = i64::try_from(self.window_s)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        now_ms.saturating_sub(window_ms)
    }
}

/// Plays per creative (epoch ms of each decision that used it), kept in
/// KV under the channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapState {
    pub plays: BTreeMap<String, Vec<i64>>,
}

impl CapState {
    /// Creative ids at their cap now.
    pub fn capped(&self, cap: &FrequencyCap, now_ms: i64) -> Vec<String> {
        if !cap.enabled() {
            return Vec::new();
        }
        let since = cap.window_start(now_ms);
        self.plays
            .iter()
            .filter(|(_, t)| {
                t.iter().filter(|&&x| x > since).count() >= cap.max_per_window as usize
            })
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Count the creatives of a decision; forget plays out of the window.
    pub fn record<'a>(
        &mut self,
        creatives: impl IntoIterator<Item = &'a str>,
        cap: &FrequencyCap,
        now_ms: i64,
    ) {
        let since = cap.window_start(now_ms);
        for c in creatives {
            self.plays.entry(c.to_string()).or_default().push(now_ms);
        }
        for t in self.plays.values_mut() {
            t.retain(|&x| x > since);
        }
        self.plays.retain(|_, t| !t.is_empty());
    }
}

// ------------------------------------------------------ HLS MediaFiles

/// The variants of an ad server's master playlist (HLS MediaFile): URI
/// made absolute, BANDWIDTH, RESOLUTION, CODECS; I-frame playlists skipped.
/// Parsed with `m3u8-rs`: these are third-party VOD playlists that we read,
/// never rewrite, so a typed parser fits (the live path keeps its lossless
/// tokenizer).
#[cfg(feature = "vast")]
pub fn master_variants(
    text: &str,
    base: &url::Url,
) -> Vec<(String, u64, Option<String>, Option<String>)> {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => m
            .variants
            .iter()
            .filter(|v| !v.is_i_frame)
            .map(|v| {
                (
                    hls::resolve(base, v.uri.trim()),
                    v.bandwidth,
                    v.resolution.map(|r| r.to_string()),
                    v.codecs.clone(),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// An ad server's media playlist we cannot play, and which one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ad playlist {url}: {why}")]
pub struct AdPlaylistError {
    pub url: String,
    pub why: Unusable,
}

impl AdPlaylistError {
    #[cfg(feature = "vast")]
    fn new(url: &url::Url, why: Unusable) -> Self {
        AdPlaylistError {
            url: url.to_string(),
            why,
        }
    }
}

/// Why an ad's media playlist is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("a master playlist, not a media one")]
    Master,
    #[error("not HLS ({0})")]
    NotHls(String),
    #[error("not a VOD playlist (no EXT-X-ENDLIST)")]
    Live,
    #[error("no segments")]
    NoSegments,
    #[error("byte-range segments")]
    ByteRange,
    #[error("segment without a duration")]
    NoDuration,
}

/// An ad rendition from a VOD media playlist served by the ad server: every
/// segment URI absolute, MAP and KEY kept. Errors say why it is unusable
/// (live playlist, no segments, byte ranges we do not carry).
///
/// `m3u8-rs` keeps EXTINF as `f32`; durations are rounded back to the
/// microsecond (1.92 would otherwise come back as 1.9199999570846558 and
/// be written into our playlists).
#[cfg(feature = "vast")]
pub fn rendition_from_media(
    text: &str,
    url: &url::Url,
    bandwidth: u64,
    resolution: Option<String>,
    codecs: Option<String>,
) -> Result<AdRendition, AdPlaylistError> {
    let m = match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(m)) => m,
        Ok(m3u8_rs::Playlist::MasterPlaylist(_)) => {
            return Err(AdPlaylistError::new(url, Unusable::Master))
        }
        Err(e) => {
            let why = e.to_string();
            let why: String = why.chars().take(120).collect();
            return Err(AdPlaylistError::new(url, Unusable::NotHls(why)));
        }
    };
    if !m.end_list {
        return Err(AdPlaylistError::new(url, Unusable::Live));
    }
    let Some(first) = m.segments.first() else {
        return Err(AdPlaylistError::new(url, Unusable::NoSegments));
    };
    let mut segments = Vec::with_capacity(m.segments.len());
    for s in &m.segments {
        if s.byte_range.is_some() {
            return Err(AdPlaylistError::new(url, Unusable::ByteRange));
        }
        let d = (f64::from(s.duration) * 1e6).round() / 1e6;
        if !(d.is_finite() && d > 0.0) {
            return Err(AdPlaylistError::new(url, Unusable::NoDuration));
        }
        segments.push(AdSegment {
            uri: hls::resolve(url, s.uri.trim()),
            duration: d,
            byterange: None,
        });
    }
    let init_uri = first
        .map
        .as_ref()
        .map(|mp| hls::resolve(url, mp.uri.trim()));
    let key = first
        .key
        .as_ref()
        .filter(|k| k.method != m3u8_rs::KeyMethod::None)
        .map(|k| {
            let mut a = format!("METHOD={}", k.method);
            if let Some(u) = &k.uri {
                a.push_str(&format!(",URI=\"{}\"", hls::resolve(url, u)));
            }
            if let Some(iv) = &k.iv {
                a.push_str(&format!(",IV={iv}"));
            }
            if let Some(f) = &k.keyformat {
                a.push_str(&format!(",KEYFORMAT=\"{f}\""));
            }
            if let Some(v) = &k.keyformatversions {
                a.push_str(&format!(",KEYFORMATVERSIONS=\"{v}\""));
            }
            a
        });
    let cadence_ms = segments
        .iter()
        .map(|s| (s.duration * 1000.0).round() as u64)
        .max()
        .unwrap_or(0);
    Ok(AdRendition {
        bandwidth,
        codecs,
        resolution,
        kind: TrackKind::Muxed,
        playlist_url: url.to_string(),
        cadence_s: cadence_ms as f64 / 1000.0,
        segments,
        init_uri,
        key,
        memo: Default::default(),
    })
}

// ------------------------------------------------------------ TTL cache

/// A bounded cache with per-entry expiry and FIFO eviction by total size:
/// VAST and VMAP responses for a few seconds, per isolate. Keys are the
/// request URLs before cache busters are filled.
#[derive(Debug)]
pub struct TtlCache {
    max_bytes: usize,
    bytes: usize,
    order: VecDeque<String>,
    entries: BTreeMap<String, (i64, String)>,
}

impl TtlCache {
    pub fn new(max_bytes: usize) -> Self {
        TtlCache {
            max_bytes,
            bytes: 0,
            order: VecDeque::new(),
            entries: BTreeMap::new(),
        }
    }

    pub fn get(&self, key: &str, now_ms: i64) -> Option<&str> {
        self.entries
            .get(key)
            .filter(|(exp, _)| *exp > now_ms)
            .map(|(_, v)| v.as_str())
    }

    pub fn put(&mut self, key: String, value: String, ttl_ms: i64, now_ms: i64) {
        let size = key.len().saturating_add(value.len());
        if ttl_ms <= 0 || size > self.max_bytes {
            return;
        }
        if let Some((_, old)) = self.entries.remove(&key) {
            self.bytes = self
                .bytes
                .saturating_sub(key.len().saturating_add(old.len()));
            self.order.retain(|k| *k != key);
        }
        self.bytes = self.bytes.saturating_add(size);
        self.order.push_back(key.clone());
        self.entries
            .insert(key, (now_ms.saturating_add(ttl_ms), value));
        while self.bytes > self.max_bytes {
            let Some(k) = self.order.pop_front() else {
                break;
            };
            if let Some((_, v)) = self.entries.remove(&k) {
                self.bytes = self.bytes.saturating_sub(k.len().saturating_add(v.len()));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(id: &str, uaid: Option<&str>) -> PodItem {
        PodItem {
            ad_id: id.into(),
            creative_id: id.into(),
            universal_ad_id: uaid.map(String::from),
            duration_s: 10.0,
            renditions: vec![],
            tracking: Tracking {
                impression: vec!["https://lib/imp".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn external_answer_maps_to_the_library_and_says_what_it_could_not() {
        let r = parse_external(r#"{"ads":[{"creative_id":"c1","ad_id":"x","tracking":{"impression":["https://dsp/imp"]}},{"universal_ad_id":"U2"},{"creative_id":"nope"}],"vast_urls":["https://ads/vast"]}"#).unwrap();
        let mut reasons = vec![];
        let items = map_external(&r, &[lib("c1", None), lib("c2", Some("U2"))], &mut reasons);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].ad_id, "x");
        assert_eq!(
            items[0].tracking.impression,
            vec!["https://lib/imp", "https://dsp/imp"]
        );
        assert_eq!(items[1].creative_id, "c2");
        assert_eq!(reasons[0].code(), "not_in_library");
        assert!(
            reasons[0].to_string().contains("nope") && reasons[0].to_string().contains("TRANSCODE")
        );
        assert_eq!(r.vast_urls, vec!["https://ads/vast"]);
        assert!(parse_external(r#"{"ads":"x"}"#)
            .unwrap_err()
            .to_string()
            .contains("decision API"));
        assert!(parse_external(r#"{"adz":[]}"#).is_err());
        assert!(parse_external("<html>").is_err());
    }

    #[test]
    fn external_request_sends_consent_and_ifa_only_when_personalised() {
        use crate::ads::request::Viewer;
        use crate::ads::targeting::DeviceClass;
        let mut v = Viewer {
            geo: "US".into(),
            region: "CA".into(),
            consent: "CPtc".into(),
            us_privacy: "1YNN".into(),
            gpp: "DBABMA~x".into(),
            gpp_sid: "7".into(),
            personalised: true,
            device: DeviceClass::Ctv,
            ifa: "6d92078a-8246-4ba4-ae5b-76104861e7dc".into(),
            ifa_type: "rida".into(),
            params: [("genre".to_string(), "news".to_string())].into(),
            cohort: "0a1b2c3d".into(),
            ..Default::default()
        };
        let body =
            |v: &Viewer| serde_json::to_value(ExternalRequest::new("news", "b1", 30.0, v)).unwrap();
        let j = body(&v);
        assert_eq!(j["consent"], "CPtc");
        assert_eq!(j["ifa"], "6d92078a-8246-4ba4-ae5b-76104861e7dc");
        assert_eq!(
            (&j["ifa_type"], &j["gpp"], &j["gpp_sid"]),
            (&"rida".into(), &"DBABMA~x".into(), &"7".into())
        );
        assert_eq!(
            (&j["region"], &j["device"], &j["cohort"]),
            (&"CA".into(), &"ctv".into(), &"0a1b2c3d".into())
        );
        assert_eq!(j["params"]["genre"], "news");
        assert_eq!(
            (&j["personalised"], &j["us_privacy"]),
            (&true.into(), &"1YNN".into())
        );
        v.personalised = false;
        let j = body(&v);
        assert_eq!(j["consent"], "");
        for k in ["ifa", "ifa_type", "gpp", "gpp_sid"] {
            assert!(j.get(k).is_none(), "{k}: {j}");
        }
        assert_eq!(
            (&j["personalised"], &j["us_privacy"]),
            (&false.into(), &"1YNN".into())
        );
        // An unknown viewer: the contract's first fields, nothing else empty.
        let j = body(&Viewer::default());
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "break_id",
                "bucket",
                "channel",
                "consent",
                "device",
                "duration_s",
                "geo",
                "personalised"
            ]
        );
    }

    #[test]
    fn frequency_caps_count_within_the_window() {
        let cap = FrequencyCap {
            max_per_window: 2,
            window_s: 60,
        };
        let mut st = CapState::default();
        st.record(["a", "b"], &cap, 0);
        assert!(st.capped(&cap, 1000).is_empty());
        st.record(["a"], &cap, 10_000);
        assert_eq!(st.capped(&cap, 20_000), vec!["a"]);
        // The first play leaves the window.
        assert!(st.capped(&cap, 61_000).is_empty());
        st.record(["c"], &cap, 200_000);
        assert_eq!(
            st.plays.keys().collect::<Vec<_>>(),
            vec!["c"],
            "old plays forgotten"
        );
        assert!(st.capped(&FrequencyCap::default(), 0).is_empty());
    }

    #[test]
    fn hls_media_file_becomes_a_rendition() {
        let base = url::Url::parse("https://ads.test/c/master.m3u8").unwrap();
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.42c01e,mp4a.40.2\"\nlow/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2000000\nhttps://cdn.test/hi.m3u8\n";
        let v = master_variants(master, &base);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, "https://ads.test/c/low/index.m3u8");
        assert_eq!(v[0].1, 800_000);
        assert_eq!(v[1].0, "https://cdn.test/hi.m3u8");
        let u = url::Url::parse(&v[0].0).unwrap();
        let media = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\ns0.m4s\n#EXTINF:2.0,\ns1.m4s\n#EXT-X-ENDLIST\n";
        let r = rendition_from_media(media, &u, 800_000, v[0].2.clone(), v[0].3.clone()).unwrap();
        assert_eq!(r.segments.len(), 2);
        assert_eq!(r.segments[1].uri, "https://ads.test/c/low/s1.m4s");
        assert_eq!(
            r.init_uri.as_deref(),
            Some("https://ads.test/c/low/init.mp4")
        );
        assert_eq!(r.cadence_s, 2.0);
        let live = media.replace("#EXT-X-ENDLIST\n", "");
        let e = rendition_from_media(&live, &u, 1, None, None).unwrap_err();
        assert_eq!(e.why, Unusable::Live);
        assert!(e.to_string().contains("VOD"));
        assert!(rendition_from_media("nope", &u, 1, None, None).is_err());
    }

    #[test]
    fn ttl_cache_expires_and_stays_bounded() {
        let mut c = TtlCache::new(100);
        c.put("a".into(), "x".repeat(40), 1000, 0);
        assert_eq!(c.get("a", 999).map(str::len), Some(40));
        assert_eq!(c.get("a", 1000), None);
        c.put("b".into(), "y".repeat(40), 1000, 0);
        c.put("c".into(), "z".repeat(40), 1000, 0);
        assert_eq!(c.get("a", 1), None, "evicted first");
        assert!(c.get("c", 1).is_some() && c.len() == 2);
        c.put("big".into(), "w".repeat(200), 1000, 0);
        assert!(c.get("big", 1).is_none());
    }
}
