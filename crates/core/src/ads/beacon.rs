//! Beacons: which tracking events a delivered ad segment fires, the queue
//! message, VAST macro filling, URL safety, the dedupe key and the retry
//! backoff. The beacon worker carries these out; the manifest worker
//! produces them on ad-segment delivery.

use serde::{Deserialize, Serialize};

/// The VAST tracking event kinds; defined with the pod's records in
/// [`crate::model`] (its `Tracking` lists them) and re-exported here.
pub use crate::model::TrackingEvent;

/// One beacon to fire: a queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconMessage {
    pub url: String,
    pub event: TrackingEvent,
    pub session: String,
    pub break_id: String,
    pub ad_id: String,
    #[serde(default)]
    pub device_ip: Option<String>,
    #[serde(default)]
    pub device_ua: Option<String>,
    #[serde(default)]
    pub referer: Option<String>,
    #[serde(default)]
    pub accept_language: Option<String>,
    /// Epoch ms when produced (backoff reads the age).
    pub created_ms: i64,
    /// Dedupe key fixed at creation from the URL *template* (macros such as
    /// [CACHEBUSTING] differ per delivery; the beacon must not).
    #[serde(default)]
    pub dedupe: String,
    /// Whose delivery this is (operator metrics: beacon outcomes per
    /// channel). Empty for the decision service's VAST error reports.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub org: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

impl BeaconMessage {
    /// (session, break, ad, event, url): a re-delivered or retried message
    /// never fires twice.
    pub fn dedupe_key(&self) -> String {
        if !self.dedupe.is_empty() {
            return self.dedupe.clone();
        }
        dedupe_key(
            &self.session,
            &self.break_id,
            &self.ad_id,
            self.event,
            &self.url,
        )
    }

    /// The IAB headers an ad stitcher sends on its requests (VAST 4.3 §2.3.4).
    pub fn headers(&self) -> Vec<(&'static str, &str)> {
        let mut h = Vec::new();
        if let Some(v) = &self.device_ip {
            h.push(("X-Device-IP", v.as_str()));
        }
        if let Some(v) = &self.device_ua {
            h.push(("X-Device-User-Agent", v.as_str()));
        }
        if let Some(v) = &self.referer {
            h.push(("X-Device-Referer", v.as_str()));
        }
        if let Some(v) = &self.accept_language {
            h.push(("X-Device-Accept-Language", v.as_str()));
        }
        h
    }
}

/// The events crossed when a session receives the ad segment that spans
/// `[start_ms, end_ms)` of an ad whose creative lasts `duration_ms`:
/// impression and start with the first segment, each quartile with the
/// segment holding that quarter of the *creative* (not of the padded ad:
/// a 15 s spot in eight 1.92 s segments has its midpoint at 7.5 s, in the
/// fourth), complete with the segment holding the creative's end. An ad
/// cut short by an early return never reaches the segments it lost, so it
/// fires no complete.
pub fn events_for_span(start_ms: u64, end_ms: u64, duration_ms: u64) -> Vec<TrackingEvent> {
    let mut ev = Vec::new();
    if end_ms <= start_ms || start_ms >= duration_ms {
        return ev;
    }
    if start_ms == 0 {
        ev.push(TrackingEvent::Impression);
        ev.push(TrackingEvent::Start);
    }
    // The span holds q/4 of the creative: start < q·d/4 <= end (×4, exact).
    let (s4, e4) = (start_ms.saturating_mul(4), end_ms.saturating_mul(4));
    for (q, e) in [
        (1, TrackingEvent::FirstQuartile),
        (2, TrackingEvent::Midpoint),
        (3, TrackingEvent::ThirdQuartile),
    ] {
        let at = duration_ms.saturating_mul(q);
        if s4 < at && at <= e4 {
            ev.push(e);
        }
    }
    if duration_ms <= end_ms {
        ev.push(TrackingEvent::Complete);
    }
    ev
}

/// Where segment `pos` of a rendition lies in the ad (ms from its start to
/// its end), and the creative's length the events are timed on: the ad's
/// own duration, or the rendition's whole length when that is shorter
/// (an ad registered with a longer duration than its media still
/// completes on its last segment).
pub fn segment_span(
    item: &crate::model::PodItem,
    r: &crate::model::AdRendition,
    pos: u32,
) -> Option<(u64, u64, u64)> {
    let ms = |d: f64| crate::model::secs_to_ms(d);
    let seg = r.segments.get(pos as usize)?;
    let start: u64 = r
        .segments
        .iter()
        .take(pos as usize)
        .map(|s| ms(s.duration))
        .sum();
    let total: u64 = r.segments.iter().map(|s| ms(s.duration)).sum();
    let own = ms(item.duration_s);
    let duration = if own == 0 { total } else { own.min(total) };
    Some((start, start.saturating_add(ms(seg.duration)), duration))
}

/// `beacon:{session}:{break}:{ad}:{event}:{hash of the URL template}`.
/// `session` is a verified `sid`, which has one spelling only
/// ([`crate::control::session::verify`] refuses the others): keyed on the raw
/// string, every spelling of one session would be counted again.
pub fn dedupe_key(
    session: &str,
    break_id: &str,
    ad_id: &str,
    event: TrackingEvent,
    template: &str,
) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in template.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!(
        "beacon:{session}:{break_id}:{ad_id}:{}:{h:016x}",
        event.as_str()
    )
}

/// Who is watching, for the IAB headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    pub accept_language: Option<String>,
}

impl Device {
    /// The viewer as the request shows it. The address is Cloudflare's
    /// `CF-Connecting-IP` only (set by the edge, a client's own copy
    /// replaced); `X-Forwarded-For` and `X-Real-IP` are whatever the client
    /// wrote and are never read.
    pub fn from_headers(get: impl Fn(&str) -> Option<String>) -> Device {
        Device {
            ip: get("CF-Connecting-IP"),
            user_agent: get("User-Agent"),
            referer: get("Referer"),
            accept_language: get("Accept-Language"),
        }
    }
}

/// The beacons a session's delivery of segment `pos` of rendition `r` of
/// `item` fires: one message per tracking URL of each event crossed.
pub fn for_delivery(
    break_id: &str,
    item: &crate::model::PodItem,
    r: &crate::model::AdRendition,
    pos: u32,
    session: &str,
    device: &Device,
    now_ms: i64,
) -> Vec<BeaconMessage> {
    let t = &item.tracking;
    let mut out = Vec::new();
    let Some((start, end, duration)) = segment_span(item, r, pos) else {
        return out;
    };
    for ev in events_for_span(start, end, duration) {
        let urls = match ev {
            TrackingEvent::Impression => &t.impression,
            TrackingEvent::Start => &t.start,
            TrackingEvent::FirstQuartile => &t.first_quartile,
            TrackingEvent::Midpoint => &t.midpoint,
            TrackingEvent::ThirdQuartile => &t.third_quartile,
            TrackingEvent::Complete => &t.complete,
            TrackingEvent::Error => &t.error,
        };
        for u in urls {
            let cb = (now_ms as u32).wrapping_mul(2_654_435_761) % 100_000_000;
            out.push(BeaconMessage {
                url: fill_macros(u, now_ms, cb, None),
                event: ev,
                session: session.to_string(),
                break_id: break_id.to_string(),
                ad_id: item.ad_id.clone(),
                device_ip: device.ip.clone(),
                device_ua: device.user_agent.clone(),
                referer: device.referer.clone(),
                accept_language: device.accept_language.clone(),
                created_ms: now_ms,
                dedupe: dedupe_key(session, break_id, &item.ad_id, ev, u),
                org: String::new(),
                channel: String::new(),
            });
        }
    }
    out
}

/// Fill `[asset.KEY]` macros (MediaTailor's convention) from a break's
/// `EXT-X-ASSET` attributes. Origins URL-encode the values; anything but
/// unreserved characters and `%`-escapes is encoded again, so a value can
/// never add a parameter or leave the URL. Unknown keys become empty.
pub fn fill_asset_macros(url: &str, asset: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find("[asset.") {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let Some((mac, after)) = tail.split_once(']') else {
            out.push_str(tail);
            return out;
        };
        let key = mac.strip_prefix("[asset.").unwrap_or("");
        let value = asset.get(key).map(String::as_str).unwrap_or("");
        for c in value.chars() {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%') {
                out.push(c);
            } else {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Fill the VAST 4 macros we know ([CACHEBUSTING], [TIMESTAMP],
/// [ERRORCODE], [BREAKPOSITION]...); unknown macros are left as is.
pub fn fill_macros(url: &str, now_ms: i64, cachebuster: u32, error_code: Option<u16>) -> String {
    let ts = crate::hls::format_pdt_ms(now_ms);
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    url.replace("[CACHEBUSTING]", &format!("{cachebuster:08}"))
        .replace("[TIMESTAMP]", &enc(&ts))
        .replace(
            "[ERRORCODE]",
            &error_code.map_or(String::new(), |c| c.to_string()),
        )
}

/// Only http(s) URLs; no loopback/private targets unless allowed (dev).
pub fn check_url(u: &str, private_ok: bool) -> Result<(), crate::net::UrlRefused> {
    crate::net::check_origin_url(u, private_ok).map(|_| ())
}

/// Where an event sits in an ad's playback: impression and start 0,
/// quartiles 1–3, complete 4. Errors have no place in the order.
pub fn stage(ev: TrackingEvent) -> Option<u8> {
    match ev {
        TrackingEvent::Impression | TrackingEvent::Start => Some(0),
        TrackingEvent::FirstQuartile => Some(1),
        TrackingEvent::Midpoint => Some(2),
        TrackingEvent::ThirdQuartile => Some(3),
        TrackingEvent::Complete => Some(4),
        TrackingEvent::Error => None,
    }
}

/// The KV key holding how far a session has got in one ad.
pub fn progress_key(session: &str, break_id: &str, ad_id: &str) -> String {
    format!("beaconprog:{session}:{break_id}:{ad_id}")
}

/// Forward order per ad: which of a batch's stages for one (session,
/// break, ad) may fire, given the stage the session had `reached` before.
/// A stage fires when it is the first (0) or the one before it was
/// reached, in this batch or earlier; so a script that asks for an ad's
/// last segment alone fires no `complete`. Returns the accepted stages and
/// the new progress.
pub fn in_order(reached: Option<u8>, stages: &[u8]) -> (Vec<u8>, Option<u8>) {
    let mut want: Vec<u8> = stages.to_vec();
    want.sort_unstable();
    want.dedup();
    let mut r = reached;
    let mut ok = Vec::new();
    for s in want {
        let next = match r {
            None => s == 0,
            Some(r) => s <= r.saturating_add(1),
        };
        if next {
            ok.push(s);
            r = Some(r.map_or(s, |r| r.max(s)));
        }
    }
    (ok, r)
}

/// Cloudflare Queues' `sendBatch` limits: 100 messages and 256 KB.
pub const MAX_BATCH_MESSAGES: usize = 100;
pub const MAX_BATCH_BYTES: usize = 256 * 1000;

/// Split messages into batches `sendBatch` accepts (≤ `max_n` messages,
/// ≤ `max_bytes` of JSON each, with room for the envelope); one batch over
/// the limit would lose all of them.
pub fn batches<T: Serialize>(msgs: Vec<T>, max_n: usize, max_bytes: usize) -> Vec<Vec<T>> {
    const ENVELOPE: usize = 64;
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut cur: Vec<T> = Vec::new();
    let mut bytes = 0usize;
    for m in msgs {
        // Sizes of messages in memory: the sums cannot reach usize::MAX.
        let size = serde_json::to_vec(&m)
            .map_or(0, |v| v.len())
            .saturating_add(ENVELOPE);
        if !cur.is_empty() && (cur.len() >= max_n.max(1) || bytes.saturating_add(size) > max_bytes)
        {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
        cur.push(m);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Retry delay (seconds) from the message's age: roughly doubling per
/// attempt (age grows by the previous delay), with jitter, capped.
pub fn backoff_s(age_ms: i64, jitter: u32) -> u32 {
    let age_s = (age_ms.max(0) / 1000) as u32;
    (age_s.saturating_mul(2).max(1).saturating_add(jitter % 3)).min(600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TrackingEvent::*;

    #[test]
    fn asset_macros_are_filled_and_cannot_inject() {
        let mut a = std::collections::BTreeMap::new();
        a.insert("CAID".to_string(), "12345678".to_string());
        a.insert("EPISODE".to_string(), "Episode%20Name".to_string());
        a.insert("EVIL".to_string(), "x&admin=1 #".to_string());
        let u = fill_asset_macros("https://ads/stub?g=[asset.CAID]&e=[asset.EPISODE]&x=[asset.EVIL]&n=[asset.NONE]&cb=[CACHEBUSTING]", &a);
        assert_eq!(u, "https://ads/stub?g=12345678&e=Episode%20Name&x=x%26admin%3D1%20%23&n=&cb=[CACHEBUSTING]");
        assert_eq!(
            fill_asset_macros("https://ads/[asset.CAID", &a),
            "https://ads/[asset.CAID"
        );
    }

    /// Segment `i` of `n` equal segments of an ad that fills them exactly.
    fn events_for_segment(i: u32, n: u32) -> Vec<TrackingEvent> {
        events_for_span(u64::from(i), u64::from(i) + 1, u64::from(n))
    }

    #[test]
    fn quartiles_are_timed_on_the_creative_not_the_padding() {
        // A 15 s spot in eight 1.92 s segments (0.36 s of padding): the
        // quarters fall at 3.75, 7.5 and 11.25 s, in segments 1, 3 and 5
        // (the padded 15.36 s would put the midpoint at 7.68 s, in 4);
        // complete with the eighth, which holds 15 s.
        let at = |q: TrackingEvent| {
            (0..8u64).find(|i| events_for_span(i * 1920, (i + 1) * 1920, 15_000).contains(&q))
        };
        assert_eq!(at(Impression), Some(0));
        assert_eq!(at(FirstQuartile), Some(1));
        assert_eq!(at(Midpoint), Some(3));
        assert_eq!(at(ThirdQuartile), Some(5));
        assert_eq!(at(Complete), Some(7));
        // A 30 s spot in sixteen: its midpoint at 15 s is in segment 7.
        assert!(events_for_span(7 * 1920, 8 * 1920, 30_000).contains(&Midpoint));
        // Cut after five segments: no complete was ever fired.
        assert!((0..5u64)
            .all(|i| !events_for_span(i * 1920, (i + 1) * 1920, 15_000).contains(&Complete)));
        // Past the creative (a segment of padding only): nothing.
        assert!(events_for_span(15_360, 17_280, 15_000).is_empty());
    }

    #[test]
    fn delivery_spans_come_from_the_rendition() {
        let r = crate::model::AdRendition {
            bandwidth: 1,
            codecs: None,
            resolution: None,
            kind: crate::model::TrackKind::Muxed,
            playlist_url: "p".into(),
            cadence_s: 1.92,
            segments: (0..8)
                .map(|i| crate::model::AdSegment {
                    uri: format!("s{i}"),
                    duration: 1.92,
                    byterange: None,
                })
                .collect(),
            init_uri: None,
            key: None,
            memo: Default::default(),
        };
        let mut item = crate::model::PodItem {
            ad_id: "a".into(),
            creative_id: "c".into(),
            universal_ad_id: None,
            duration_s: 15.015,
            renditions: vec![],
            tracking: Default::default(),
        };
        assert_eq!(segment_span(&item, &r, 3), Some((5760, 7680, 15_015)));
        assert_eq!(segment_span(&item, &r, 8), None);
        // Registered longer than its media: completes on the last segment.
        item.duration_s = 16.0;
        assert_eq!(segment_span(&item, &r, 7), Some((13_440, 15_360, 15_360)));
    }

    #[test]
    fn quartiles_fire_once_each() {
        for n in 1..20u32 {
            let all: Vec<_> = (0..n).flat_map(|i| events_for_segment(i, n)).collect();
            for e in [
                Impression,
                Start,
                FirstQuartile,
                Midpoint,
                ThirdQuartile,
                Complete,
            ] {
                assert_eq!(all.iter().filter(|x| **x == e).count(), 1, "{e:?} n={n}");
            }
        }
        assert_eq!(events_for_segment(0, 5), vec![Impression, Start]);
        assert_eq!(events_for_segment(1, 5), vec![FirstQuartile]);
    }

    #[test]
    fn macros_and_urls() {
        let u = fill_macros(
            "https://t/x?cb=[CACHEBUSTING]&e=[ERRORCODE]",
            0,
            42,
            Some(402),
        );
        assert_eq!(u, "https://t/x?cb=00000042&e=402");
        assert!(check_url("http://127.0.0.1/x", false).is_err());
        assert!(check_url("javascript:alert(1)", false).is_err());
        assert!(backoff_s(0, 0) >= 1 && backoff_s(10_000_000, 0) == 600);
    }

    #[test]
    fn device_ip_is_cloudflares_only() {
        let spoofed = |h: &str| match h {
            "X-Forwarded-For" | "X-Real-IP" => Some("203.0.113.7".to_string()),
            "User-Agent" => Some("ua".to_string()),
            _ => None,
        };
        let d = Device::from_headers(spoofed);
        assert_eq!((d.ip, d.user_agent.as_deref()), (None, Some("ua")));
        let edge = |h: &str| (h == "CF-Connecting-IP").then(|| "198.51.100.1".to_string());
        assert_eq!(
            Device::from_headers(edge).ip.as_deref(),
            Some("198.51.100.1")
        );
    }

    #[test]
    fn forward_order_only() {
        // A fresh session: only impression/start; complete alone fires nothing.
        assert_eq!(in_order(None, &[4]), (vec![], None));
        assert_eq!(in_order(None, &[0, 0, 1]), (vec![0, 1], Some(1)));
        // Skipping a quartile stops there.
        assert_eq!(in_order(Some(0), &[1, 3, 4]), (vec![1], Some(1)));
        assert_eq!(in_order(Some(2), &[3, 4]), (vec![3, 4], Some(4)));
        // Re-deliveries of reached stages stay allowed (dedupe drops them).
        assert_eq!(in_order(Some(4), &[0, 2]), (vec![0, 2], Some(4)));
        // A short ad fires every stage at once: all in order.
        let all: Vec<u8> = events_for_segment(0, 1)
            .into_iter()
            .filter_map(stage)
            .collect();
        assert_eq!(in_order(None, &all).1, Some(4));
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        let small: Vec<String> = (0..250).map(|i| format!("m{i}")).collect();
        let b = batches(small, MAX_BATCH_MESSAGES, MAX_BATCH_BYTES);
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        let big: Vec<String> = (0..10).map(|_| "x".repeat(60_000)).collect();
        let b = batches(big, MAX_BATCH_MESSAGES, MAX_BATCH_BYTES);
        assert!(
            b.iter().all(|c| c.len() <= 4),
            "{:?}",
            b.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 10);
        assert!(batches(Vec::<String>::new(), 100, 1000).is_empty());
    }
}
