//! SGAI documents: the interstitial asset list (RFC 8216bis Appendix D,
//! `X-ASSET-LIST`) and the per-ad multivariant playlist its URIs name.

use crate::model::{BreakEntry, PodItem, TrackKind};
use serde_json::json;
use std::fmt::Write;

/// The asset list for a break. `start_offset_s` (`_HLS_start_offset`) drops
/// the ads a viewer joining mid-break has already missed; `ad_uri(i)` names
/// the playlist of item `i` (None = slate).
pub fn asset_list(
    entry: &BreakEntry,
    start_offset_s: Option<f64>,
    ad_uri: impl Fn(Option<usize>) -> String,
) -> serde_json::Value {
    let offset = start_offset_s.unwrap_or(0.0).max(0.0);
    let mut assets = Vec::new();
    let mut t = 0.0;
    let cadence = entry.record.cadence_ms as f64 / 1000.0;
    let total = entry.record.covered() as f64 * cadence;
    for (i, item) in entry.pod.items.iter().enumerate() {
        let end = t + item.duration_s;
        if end > total + 1e-6 {
            break;
        }
        if end > offset + 1e-6 {
            // Tracking rides along for players that report themselves
            // (client-side reporting); unknown keys are ignored by players.
            assets.push(json!({
                "URI": ad_uri(Some(i)),
                "DURATION": round3(item.duration_s),
                "X-AD-ID": item.ad_id,
                "X-CREATIVE-ID": item.creative_id,
                "X-TRACKING": item.tracking,
            }));
        }
        t = end;
    }
    let rest = total - t;
    if rest > 1e-3 && !entry.pod.slate.renditions.is_empty() && total > offset + 1e-6 {
        assets.push(
            json!({"URI": ad_uri(None), "DURATION": round3(rest.min(total - offset.max(t)))}),
        );
    }
    json!({ "ASSETS": assets })
}

/// A multivariant playlist over an ad's (or the slate's) renditions.
pub fn ad_master(renditions: &[crate::model::AdRendition]) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for r in renditions.iter().filter(|r| r.kind == TrackKind::Muxed) {
        let _ = write!(s, "#EXT-X-STREAM-INF:BANDWIDTH={}", r.bandwidth);
        if let Some(c) = &r.codecs {
            let _ = write!(s, ",CODECS=\"{c}\"");
        }
        if let Some(res) = &r.resolution {
            let _ = write!(s, ",RESOLUTION={res}");
        }
        let _ = writeln!(s, "\n{}", r.playlist_url);
    }
    s
}

/// The item for an asset index, if any.
pub fn item(entry: &BreakEntry, i: usize) -> Option<&PodItem> {
    entry.pod.items.get(i)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
