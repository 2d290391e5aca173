//! The audience a playlist request is served as, and the signed cohort
//! an asset-list URL carries.
//!
//! A viewer's cohort rides in its signed session (`session::Session::
//! cohort`). Media playlists are shared per (channel, variant, cohort), so
//! what they link to cannot carry a session; an HLS Interstitials asset
//! list is fetched by the player from the URL the playlist names (it adds
//! only `_HLS_primary_id` and `_HLS_start_offset`). So a cohort's playlist
//! names its asset lists with `c={cohort}.{tag}`: the tag is an HMAC of the
//! channel and cohort under the session secret, the same for every viewer
//! of the cohort (the playlist stays shared), and nobody can get another
//! cohort's ads by editing the URL.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the tag (as hex, twice as many characters).
const TAG_BYTES: usize = 8;

fn mac(secret: &[u8], channel: &str, cohort: &str) -> Option<Hmac<Sha256>> {
    if secret.len() < super::session::MIN_SECRET_BYTES {
        return None;
    }
    let mut m = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    m.update(b"cohort\0");
    m.update(channel.as_bytes());
    m.update(b"\0");
    m.update(cohort.as_bytes());
    Some(m)
}

/// The `c` value of a cohort's asset-list URLs: `{cohort}.{tag}`; `None`
/// for the default audience or without a usable secret.
pub fn cohort_param(secret: &[u8], channel: &str, cohort: &str) -> Option<String> {
    if cohort.is_empty() {
        return None;
    }
    let full = mac(secret, channel, cohort)?.finalize().into_bytes();
    let tag = full.get(..TAG_BYTES)?;
    Some(format!("{cohort}.{}", crate::scte35::to_hex(tag)))
}

/// The cohort a `c` value names, when its tag verifies (constant time);
/// `None` otherwise (the default audience is served).
pub fn verify_cohort_param(secret: &[u8], channel: &str, param: &str) -> Option<String> {
    let (cohort, tag) = param.split_once('.')?;
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if cohort.is_empty()
        || cohort.len() > 16
        || !cohort
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        || tag.len() != TAG_BYTES.saturating_mul(2)
        || !lower_hex(tag)
    {
        return None;
    }
    let tag = crate::scte35::decode_hex(tag).ok()?;
    mac(secret, channel, cohort)?
        .verify_truncated_left(&tag)
        .ok()?;
    Some(cohort.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_cohort_param_verifies_only_for_its_channel_and_cohort() {
        let p = cohort_param(K, "demo/news", "0a1b2c3d").unwrap();
        assert_eq!(
            verify_cohort_param(K, "demo/news", &p).as_deref(),
            Some("0a1b2c3d")
        );
        assert_eq!(verify_cohort_param(K, "demo/other", &p), None);
        let other = p.replacen("0a1b2c3d", "0a1b2c3e", 1);
        assert_eq!(verify_cohort_param(K, "demo/news", &other), None);
        let k2 = b"1123456789abcdef0123456789abcdef";
        assert_eq!(verify_cohort_param(k2, "demo/news", &p), None);
        for bad in ["", ".", "0a1b2c3d", "0a1b2c3d.", ".00", &p.to_uppercase()] {
            assert_eq!(verify_cohort_param(K, "demo/news", bad), None, "{bad}");
        }
        assert_eq!(cohort_param(K, "demo/news", ""), None);
        assert_eq!(cohort_param(b"short", "demo/news", "ab"), None);
    }
}
