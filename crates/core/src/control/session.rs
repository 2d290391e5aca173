//! Viewer session tokens: what a playlist URL's `sid` is.
//!
//! A session may fire tracking beacons (impressions are money), so its id
//! cannot be any string a client makes up. The master playlist mints one:
//! `s1-{issued, hex seconds}-{nonce, 16 hex}-{mac, 32 hex}`, where the MAC
//! is HMAC-SHA-256 (truncated to 128 bits) over the version, the channel
//! (`org/slug`), the issue time and the nonce, keyed by the deployment's
//! `SESSION_SECRET`. The beacon path refuses a token that does not verify,
//! names another channel, or is older than its lifetime. Only hex digits and
//! `-` appear, so the token is safe in a URL query, a KV key and a log line.
//! Pure: the clock and the randomness are parameters.
//!
//! One spelling per session: the hex is lower-case and the issue time has
//! no leading zero or sign, exactly as [`mint`] writes it. The MAC covers
//! the decoded values, so `6553F100`, `06553f100` and `+6553f100` (or an
//! upper-case MAC) would verify as the same session under other names;
//! beacon dedupe keys on the token, so each would be counted again.
//! [`verify`] refuses every spelling but the canonical one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Default lifetime: a viewer who keeps one master playlist for a day
/// still counts; older tokens fire nothing.
pub const DEFAULT_TTL_S: i64 = 86_400;
/// A secret shorter than this is refused (no sessions are minted).
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated between edge nodes, seconds.
const SKEW_S: i64 = 60;
const PREFIX: &str = "s1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session secret is shorter than {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
    #[error("malformed session token")]
    Malformed,
    #[error("session token signature does not match this channel")]
    Signature,
    #[error("session token expired")]
    Expired,
    #[error("session token issued in the future")]
    Future,
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub issued_s: i64,
}

/// The keyed MAC over one token's fields (version, channel, issue time,
/// nonce), NUL-separated so no field can run into the next.
fn keyed(
    secret: &[u8],
    channel: &str,
    issued_s: i64,
    nonce: &str,
) -> Result<Hmac<Sha256>, SessionError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(SessionError::WeakSecret);
    }
    let mut m = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SessionError::WeakSecret)?;
    for (i, part) in [PREFIX, channel, &issued_s.to_string(), nonce]
        .iter()
        .enumerate()
    {
        if i > 0 {
            m.update(b"\0");
        }
        m.update(part.as_bytes());
    }
    Ok(m)
}

/// Mint a token for `channel` (`org/slug`) at `now_s` with 8 random bytes.
pub fn mint(
    secret: &[u8],
    channel: &str,
    now_s: i64,
    nonce: [u8; 8],
) -> Result<String, SessionError> {
    let nonce = crate::scte35::to_hex(&nonce);
    let now_s = now_s.max(0);
    let full = keyed(secret, channel, now_s, &nonce)?
        .finalize()
        .into_bytes();
    let tag = full.get(..16).ok_or(SessionError::Malformed)?;
    Ok(format!(
        "{PREFIX}-{now_s:x}-{nonce}-{}",
        crate::scte35::to_hex(tag)
    ))
}

/// Verify a token for `channel` at `now_s`; the MAC is compared in
/// constant time.
pub fn verify(
    secret: &[u8],
    token: &str,
    channel: &str,
    now_s: i64,
    ttl_s: i64,
) -> Result<Session, SessionError> {
    if token.len() > 96 {
        return Err(SessionError::Malformed);
    }
    let mut parts = token.split('-');
    let (Some(PREFIX), Some(issued), Some(nonce), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(SessionError::Malformed);
    };
    // Lower-case hex only (`from_str_radix` and `decode_hex` would also
    // take upper case, and the former a sign).
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let hexy = |s: &str, n: usize| s.len() == n && lower_hex(s);
    if issued.is_empty()
        || issued.len() > 12
        || !lower_hex(issued)
        || (issued.len() > 1 && issued.starts_with('0'))
        || !hexy(nonce, 16)
        || !hexy(tag, 32)
    {
        return Err(SessionError::Malformed);
    }
    let issued_s = i64::from_str_radix(issued, 16).map_err(|_| SessionError::Malformed)?;
    let tag = crate::scte35::decode_hex(tag).map_err(|_| SessionError::Malformed)?;
    let m = keyed(secret, channel, issued_s, nonce)?;
    m.verify_truncated_left(&tag)
        .map_err(|_| SessionError::Signature)?;
    if issued_s > now_s.saturating_add(SKEW_S) {
        return Err(SessionError::Future);
    }
    if now_s.saturating_sub(issued_s) > ttl_s {
        return Err(SessionError::Expired);
    }
    Ok(Session { issued_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_refusals() {
        let t = mint(K, "demo/news", 1_700_000_000, [7; 8]).unwrap();
        assert!(
            t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b's')
        );
        let ok = verify(K, &t, "demo/news", 1_700_000_100, DEFAULT_TTL_S).unwrap();
        assert_eq!(ok.issued_s, 1_700_000_000);
        // Another channel, another secret, an edited field, expiry, future.
        assert_eq!(
            verify(K, &t, "demo/other", 1_700_000_100, DEFAULT_TTL_S),
            Err(SessionError::Signature)
        );
        let k2 = b"1123456789abcdef0123456789abcdef";
        assert_eq!(
            verify(k2, &t, "demo/news", 1_700_000_100, DEFAULT_TTL_S),
            Err(SessionError::Signature)
        );
        let later = t.replacen("-6553f100-", "-6553f101-", 1);
        assert_ne!(later, t);
        assert_eq!(
            verify(K, &later, "demo/news", 1_700_000_100, DEFAULT_TTL_S),
            Err(SessionError::Signature)
        );
        assert_eq!(
            verify(
                K,
                &t,
                "demo/news",
                1_700_000_000 + DEFAULT_TTL_S + 1,
                DEFAULT_TTL_S
            ),
            Err(SessionError::Expired)
        );
        assert_eq!(
            verify(K, &t, "demo/news", 1_699_999_000, DEFAULT_TTL_S),
            Err(SessionError::Future)
        );
        for bad in [
            "",
            "abc",
            "s1-1-2-3",
            "s1-zz-0000000000000000-00000000000000000000000000000000",
            &format!("{t}-x"),
        ] {
            assert_eq!(
                verify(K, bad, "demo/news", 1_700_000_100, DEFAULT_TTL_S),
                Err(SessionError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            mint(b"short", "demo/news", 0, [0; 8]),
            Err(SessionError::WeakSecret)
        );
    }

    /// Every other spelling of a valid token decodes to the same MAC input
    /// and the same tag bytes: each must be refused, or one session could
    /// be counted once per spelling.
    #[test]
    fn only_the_canonical_spelling_verifies() {
        let t = mint(K, "demo/news", 1_700_000_000, [0xab; 8]).unwrap();
        let ok = |s: &str| verify(K, s, "demo/news", 1_700_000_100, DEFAULT_TTL_S);
        assert!(ok(&t).is_ok());
        let [_, issued, nonce, tag] = t.split('-').collect::<Vec<_>>()[..] else {
            panic!("{t}")
        };
        assert_eq!((issued, nonce), ("6553f100", "abababababababab"));
        // The MAC with only its first letter in upper case.
        let one_upper = |tag: &str| {
            let i = tag.find(|c: char| c.is_ascii_alphabetic()).unwrap();
            let (head, rest) = tag.split_at(i);
            let (c, tail) = rest.split_at(1);
            format!("s1-{issued}-{nonce}-{head}{}{tail}", c.to_ascii_uppercase())
        };
        for other in [
            format!("s1-{}-{nonce}-{tag}", issued.to_ascii_uppercase()),
            format!("s1-0{issued}-{nonce}-{tag}"),
            format!("s1-00{issued}-{nonce}-{tag}"),
            format!("s1-+{issued}-{nonce}-{tag}"),
            format!("s1-{issued}-{nonce}-{}", tag.to_ascii_uppercase()),
            one_upper(tag),
            format!("s1-{issued}-{}-{tag}", nonce.to_ascii_uppercase()),
            format!("S1-{issued}-{nonce}-{tag}"),
        ] {
            assert_ne!(other, t);
            assert_eq!(ok(&other), Err(SessionError::Malformed), "{other}");
        }
        // An issue time of zero is written "0", and that verifies.
        let z = mint(K, "demo/news", 0, [1; 8]).unwrap();
        assert!(z.starts_with("s1-0-"));
        assert!(verify(K, &z, "demo/news", 0, DEFAULT_TTL_S).is_ok());
    }
}
