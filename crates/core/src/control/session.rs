//! Viewer session tokens: what a playlist URL's `sid` is.
//!
//! A session may fire tracking beacons (impressions are money), so its id
//! cannot be any string a client makes up; and it names the viewer's
//! audience (cohort), which picks the ads a playlist is served, so that
//! cannot be edited either. The master playlist mints one:
//!
//! `s2-{issued, hex seconds}-{nonce, 16 hex}-{cohort}-{td, 16 hex}-{mac, 32 hex}`
//!
//! where `cohort` is the viewer's cohort (`[0-9a-z]{1,16}`) or `0` for the
//! default audience, `td` is the first 8 bytes of SHA-256 of the viewer's
//! encoded targeting (the `tg` query value, `""` when none), and the MAC is
//! HMAC-SHA-256 (truncated to 128 bits) over the version, the channel
//! (`org/slug`), the issue time, the nonce, the cohort field and `td`,
//! keyed by the deployment's `SESSION_SECRET`. A playlist request whose
//! `tg` is not the one its session was minted with is caught by
//! [`Session::binds`]. The beacon path refuses a token that does not
//! verify, names another channel, or is older than its lifetime. Only
//! `[0-9a-z]` and `-` appear, so the token is safe in a URL query, a KV key
//! and a log line. Pure: the clock and the randomness are parameters.
//!
//! Version 1, `s1-{issued}-{nonce}-{mac}` (MAC over version, channel, issue
//! time and nonce), is still accepted: it binds the default audience and no
//! targeting. [`mint`] writes version 2 only.
//!
//! One spelling per session: the hex is lower-case and the issue time has
//! no leading zero or sign, exactly as [`mint`] writes it. The MAC covers
//! the decoded values, so `6553F100`, `06553f100` and `+6553f100` (or an
//! upper-case MAC) would verify as the same session under other names;
//! beacon dedupe keys on the token, so each would be counted again.
//! [`verify`] refuses every spelling but the canonical one; the cohort is
//! lower-case, and `0` is only ever the default marker (no cohort is named
//! `0`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Default lifetime: a viewer who keeps one master playlist for a day
/// still counts; older tokens fire nothing.
pub const DEFAULT_TTL_S: i64 = 86_400;
/// A secret shorter than this is refused (no sessions are minted).
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated between edge nodes, seconds.
const SKEW_S: i64 = 60;
const V1: &str = "s1";
const V2: &str = "s2";
/// The cohort field of the default audience ("").
const DEFAULT_COHORT: &str = "0";
/// Longest cohort name.
const MAX_COHORT: usize = 16;
/// Longest token accepted (a v2 token is at most 99 characters).
const MAX_TOKEN: usize = 128;

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

/// What a session is bound to besides its channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Binding<'a> {
    /// "" (the default audience) or 1..=16 chars of [0-9a-z].
    pub cohort: &'a str,
    /// The `tg` query value (the viewer's encoded targeting), "" when none.
    pub targeting: &'a str,
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub issued_s: i64,
    /// The viewer's cohort, "" for the default audience (and every v1
    /// token).
    pub cohort: String,
    /// The targeting digest the token carries (16 lower-case hex).
    targeting_digest: String,
}

impl Session {
    /// Whether `targeting` (a request's `tg` value) is the one this session
    /// was minted with. A v1 session binds only "" (no targeting).
    pub fn binds(&self, targeting: &str) -> bool {
        targeting_digest(targeting) == self.targeting_digest
    }
}

/// The `td` field: the first 8 bytes of SHA-256(`targeting`), lower-case hex.
fn targeting_digest(targeting: &str) -> String {
    let mut hex = crate::scte35::to_hex(&Sha256::digest(targeting.as_bytes()));
    hex.truncate(16);
    hex
}

/// A cohort name as it may appear in a token: 1..=16 of `[0-9a-z]`, never
/// the default marker.
fn cohort_ok(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_COHORT
        && c != DEFAULT_COHORT
        && c.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z'))
}

/// The keyed MAC over one token's fields (version first),
/// NUL-separated so no field can run into the next.
fn keyed(secret: &[u8], fields: &[&str]) -> Result<Hmac<Sha256>, SessionError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(SessionError::WeakSecret);
    }
    let mut m = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SessionError::WeakSecret)?;
    for (i, part) in fields.iter().enumerate() {
        if i > 0 {
            m.update(b"\0");
        }
        m.update(part.as_bytes());
    }
    Ok(m)
}

/// The 32-hex truncated MAC over `fields`.
fn tag_hex(secret: &[u8], fields: &[&str]) -> Result<String, SessionError> {
    let full = keyed(secret, fields)?.finalize().into_bytes();
    let tag = full.get(..16).ok_or(SessionError::Malformed)?;
    Ok(crate::scte35::to_hex(tag))
}

/// Mint a (v2) token for `channel` (`org/slug`) at `now_s` with 8 random
/// bytes, bound to `bind`'s cohort and targeting. A cohort that is neither
/// "" nor 1..=16 of `[0-9a-z]` (or is `0`) is refused as
/// [`SessionError::Malformed`].
pub fn mint(
    secret: &[u8],
    channel: &str,
    now_s: i64,
    nonce: [u8; 8],
    bind: &Binding<'_>,
) -> Result<String, SessionError> {
    let cohort = match bind.cohort {
        "" => DEFAULT_COHORT,
        c if cohort_ok(c) => c,
        _ => return Err(SessionError::Malformed),
    };
    let nonce = crate::scte35::to_hex(&nonce);
    let now_s = now_s.max(0);
    let issued = format!("{now_s:x}");
    let td = targeting_digest(bind.targeting);
    let mac = tag_hex(
        secret,
        &[V2, channel, &now_s.to_string(), &nonce, cohort, &td],
    )?;
    Ok(format!("{V2}-{issued}-{nonce}-{cohort}-{td}-{mac}"))
}

/// Verify a (v1 or v2) token for `channel` at `now_s`; the MAC is compared
/// in constant time.
pub fn verify(
    secret: &[u8],
    token: &str,
    channel: &str,
    now_s: i64,
    ttl_s: i64,
) -> Result<Session, SessionError> {
    if token.len() > MAX_TOKEN {
        return Err(SessionError::Malformed);
    }
    let parts: Vec<&str> = token.split('-').collect();
    // (version, issued, nonce, cohort field, td, mac)
    let (version, issued, nonce, cohort, td, tag) = match parts[..] {
        [V1, issued, nonce, tag] => (V1, issued, nonce, None, None, tag),
        [V2, issued, nonce, cohort, td, tag] => (V2, issued, nonce, Some(cohort), Some(td), tag),
        _ => return Err(SessionError::Malformed),
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
        || cohort.is_some_and(|c| c != DEFAULT_COHORT && !cohort_ok(c))
        || td.is_some_and(|t| !hexy(t, 16))
    {
        return Err(SessionError::Malformed);
    }
    let issued_s = i64::from_str_radix(issued, 16).map_err(|_| SessionError::Malformed)?;
    let tag = crate::scte35::decode_hex(tag).map_err(|_| SessionError::Malformed)?;
    let issued_dec = issued_s.to_string();
    let mut fields = vec![version, channel, &issued_dec, nonce];
    fields.extend(cohort);
    fields.extend(td);
    keyed(secret, &fields)?
        .verify_truncated_left(&tag)
        .map_err(|_| SessionError::Signature)?;
    if issued_s > now_s.saturating_add(SKEW_S) {
        return Err(SessionError::Future);
    }
    if now_s.saturating_sub(issued_s) > ttl_s {
        return Err(SessionError::Expired);
    }
    Ok(Session {
        issued_s,
        cohort: match cohort {
            None | Some(DEFAULT_COHORT) => String::new(),
            Some(c) => c.to_owned(),
        },
        targeting_digest: td.map_or_else(|| targeting_digest(""), str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &[u8] = b"0123456789abcdef0123456789abcdef";
    const TG: &str = "eyJnZW8iOiJERSJ9";

    /// A version-1 token exactly as the v1 `mint` wrote it (and as
    /// `tests/integration/stack.mjs`'s `sessionToken` still does).
    fn mint_v1(secret: &[u8], channel: &str, now_s: i64, nonce: [u8; 8]) -> String {
        let nonce = crate::scte35::to_hex(&nonce);
        let mac = tag_hex(secret, &[V1, channel, &now_s.to_string(), &nonce]).unwrap();
        format!("{V1}-{now_s:x}-{nonce}-{mac}")
    }

    fn bound<'a>(cohort: &'a str, targeting: &'a str) -> Binding<'a> {
        Binding { cohort, targeting }
    }

    #[test]
    fn round_trip_and_refusals() {
        let t = mint(K, "demo/news", 1_700_000_000, [7; 8], &Binding::default()).unwrap();
        assert!(
            t.len() <= MAX_TOKEN
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
        );
        assert!(t.starts_with("s2-6553f100-0707070707070707-0-"), "{t}");
        let ok = verify(K, &t, "demo/news", 1_700_000_100, DEFAULT_TTL_S).unwrap();
        assert_eq!(ok.issued_s, 1_700_000_000);
        assert_eq!(ok.cohort, "");
        assert!(ok.binds(""));
        assert!(!ok.binds(TG));
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
        let long = format!(
            "s2-1-{}-{}-{}-{}",
            "0".repeat(16),
            "a".repeat(60),
            "0".repeat(16),
            "0".repeat(32)
        );
        for bad in [
            "",
            "abc",
            "s1-1-2-3",
            "s2-1-2-3-4-5",
            "s3-1-0000000000000000-00000000000000000000000000000000",
            "s1-zz-0000000000000000-00000000000000000000000000000000",
            "s2-1-0000000000000000-0-0000000000000000",
            &format!("{t}-x"),
            long.as_str(),
        ] {
            assert_eq!(
                verify(K, bad, "demo/news", 1_700_000_100, DEFAULT_TTL_S),
                Err(SessionError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            mint(b"short", "demo/news", 0, [0; 8], &Binding::default()),
            Err(SessionError::WeakSecret)
        );
    }

    #[test]
    fn v2_binds_cohort_and_targeting() {
        let t = mint(
            K,
            "demo/news",
            1_700_000_000,
            [9; 8],
            &bound("a1b2c3d4", TG),
        )
        .unwrap();
        assert!(t.len() <= MAX_TOKEN, "{t}");
        let td = targeting_digest(TG);
        assert_eq!(td.len(), 16);
        assert!(
            t.starts_with(&format!("s2-6553f100-0909090909090909-a1b2c3d4-{td}-")),
            "{t}"
        );
        let s = verify(K, &t, "demo/news", 1_700_000_100, DEFAULT_TTL_S).unwrap();
        assert_eq!(s.issued_s, 1_700_000_000);
        assert_eq!(s.cohort, "a1b2c3d4");
        assert!(s.binds(TG));
        assert!(!s.binds(""));
        assert!(!s.binds("eyJnZW8iOiJGUiJ9"));
        // The digest of "" is what an untargeted v2 session carries.
        assert_eq!(targeting_digest(""), "e3b0c44298fc1c14");

        let at = |t: &str| verify(K, t, "demo/news", 1_700_000_100, DEFAULT_TTL_S);
        // Another cohort (a well-formed one) with the same MAC.
        for cohort in ["a1b2c3d5", "0", "zz"] {
            let forged = t.replacen("-a1b2c3d4-", &format!("-{cohort}-"), 1);
            assert_ne!(forged, t);
            assert_eq!(at(&forged), Err(SessionError::Signature), "{forged}");
        }
        // Another targeting digest.
        let other_td = targeting_digest("eyJnZW8iOiJGUiJ9");
        let forged = t.replacen(&format!("-{td}-"), &format!("-{other_td}-"), 1);
        assert_ne!(forged, t);
        assert_eq!(at(&forged), Err(SessionError::Signature));
        let forged = t.replacen(
            &format!("-{td}-"),
            &format!("-{}-", targeting_digest("")),
            1,
        );
        assert_eq!(at(&forged), Err(SessionError::Signature));
        // A default-audience token re-labelled with a cohort.
        let d = mint(K, "demo/news", 1_700_000_000, [9; 8], &bound("", TG)).unwrap();
        let s = at(&d).unwrap();
        assert_eq!(s.cohort, "");
        assert!(s.binds(TG));
        let relabelled = d.replacen("-0-", "-a1b2c3d4-", 1);
        assert_ne!(relabelled, d);
        assert_eq!(at(&relabelled), Err(SessionError::Signature));
        // The longest cohort fits; bad cohorts are not minted.
        let max = "z".repeat(MAX_COHORT);
        let t = mint(
            K,
            "demo/news",
            i64::from(u32::MAX) * 256,
            [0xff; 8],
            &bound(&max, TG),
        )
        .unwrap();
        assert!(t.len() <= MAX_TOKEN);
        assert_eq!(at(&t).map(|s| s.cohort).ok(), None); // issued in the future
        assert_eq!(
            verify(K, &t, "demo/news", i64::from(u32::MAX) * 256, DEFAULT_TTL_S).map(|s| s.cohort),
            Ok(max.clone())
        );
        for cohort in ["0", "A1B2C3D4", "a-b", "a_b", "é", &format!("{max}z")] {
            assert_eq!(
                mint(K, "demo/news", 0, [0; 8], &bound(cohort, "")),
                Err(SessionError::Malformed),
                "{cohort}"
            );
        }
    }

    #[test]
    fn v1_tokens_still_verify() {
        let t = mint_v1(K, "demo/news", 1_700_000_000, [7; 8]);
        assert_eq!(
            t,
            format!("s1-6553f100-0707070707070707-{}", &t[t.len() - 32..])
        );
        let s = verify(K, &t, "demo/news", 1_700_000_100, DEFAULT_TTL_S).unwrap();
        assert_eq!(s.issued_s, 1_700_000_000);
        assert_eq!(s.cohort, "");
        assert!(s.binds(""));
        assert!(!s.binds(TG));
        assert_eq!(
            verify(K, &t, "demo/other", 1_700_000_100, DEFAULT_TTL_S),
            Err(SessionError::Signature)
        );
        // A v1 MAC does not verify as a v2 token (the version is signed).
        let [_, issued, nonce, tag] = t.split('-').collect::<Vec<_>>()[..] else {
            panic!("{t}")
        };
        let as_v2 = format!("s2-{issued}-{nonce}-0-{}-{tag}", targeting_digest(""));
        assert_eq!(
            verify(K, &as_v2, "demo/news", 1_700_000_100, DEFAULT_TTL_S),
            Err(SessionError::Signature)
        );
        assert_eq!(
            verify(
                K,
                &t.replacen("s1-", "s2-", 1),
                "demo/news",
                1_700_000_100,
                DEFAULT_TTL_S
            ),
            Err(SessionError::Malformed)
        );
    }

    /// Every other spelling of a valid token decodes to the same MAC input
    /// and the same tag bytes: each must be refused, or one session could
    /// be counted once per spelling.
    #[test]
    fn only_the_canonical_spelling_verifies() {
        let ok = |s: &str| verify(K, s, "demo/news", 1_700_000_100, DEFAULT_TTL_S);
        // The hex field with only its first letter in upper case.
        let one_upper = |hex: &str| {
            let i = hex.find(|c: char| c.is_ascii_alphabetic()).unwrap();
            let (head, rest) = hex.split_at(i);
            let (c, tail) = rest.split_at(1);
            format!("{head}{}{tail}", c.to_ascii_uppercase())
        };

        // Version 1.
        let t = mint_v1(K, "demo/news", 1_700_000_000, [0xab; 8]);
        assert!(ok(&t).is_ok());
        let [_, issued, nonce, tag] = t.split('-').collect::<Vec<_>>()[..] else {
            panic!("{t}")
        };
        assert_eq!((issued, nonce), ("6553f100", "abababababababab"));
        for other in [
            format!("s1-{}-{nonce}-{tag}", issued.to_ascii_uppercase()),
            format!("s1-0{issued}-{nonce}-{tag}"),
            format!("s1-00{issued}-{nonce}-{tag}"),
            format!("s1-+{issued}-{nonce}-{tag}"),
            format!("s1-{issued}-{nonce}-{}", tag.to_ascii_uppercase()),
            format!("s1-{issued}-{nonce}-{}", one_upper(tag)),
            format!("s1-{issued}-{}-{tag}", nonce.to_ascii_uppercase()),
            format!("S1-{issued}-{nonce}-{tag}"),
        ] {
            assert_ne!(other, t);
            assert_eq!(ok(&other), Err(SessionError::Malformed), "{other}");
        }

        // Version 2, with a cohort that has letters to upper-case and a
        // leading zero to strip.
        let t = mint(
            K,
            "demo/news",
            1_700_000_000,
            [0xab; 8],
            &bound("0a1b2c3d", TG),
        )
        .unwrap();
        assert!(ok(&t).is_ok());
        let [_, issued, nonce, cohort, td, tag] = t.split('-').collect::<Vec<_>>()[..] else {
            panic!("{t}")
        };
        assert_eq!(
            (issued, nonce, cohort),
            ("6553f100", "abababababababab", "0a1b2c3d")
        );
        assert!(td.bytes().any(|b| b.is_ascii_alphabetic()), "{td}");
        for other in [
            format!(
                "s2-{}-{nonce}-{cohort}-{td}-{tag}",
                issued.to_ascii_uppercase()
            ),
            format!("s2-0{issued}-{nonce}-{cohort}-{td}-{tag}"),
            format!("s2-+{issued}-{nonce}-{cohort}-{td}-{tag}"),
            format!(
                "s2-{issued}-{}-{cohort}-{td}-{tag}",
                nonce.to_ascii_uppercase()
            ),
            format!(
                "s2-{issued}-{nonce}-{}-{td}-{tag}",
                cohort.to_ascii_uppercase()
            ),
            format!("s2-{issued}-{nonce}-{}-{td}-{tag}", one_upper(cohort)),
            format!("s2-{issued}-{nonce}-{}-{td}-{tag}", &cohort[1..]),
            format!("s2-{issued}-{nonce}-+{cohort}-{td}-{tag}"),
            format!(
                "s2-{issued}-{nonce}-{cohort}-{}-{tag}",
                td.to_ascii_uppercase()
            ),
            format!("s2-{issued}-{nonce}-{cohort}-{}-{tag}", one_upper(td)),
            format!("s2-{issued}-{nonce}-{cohort}-0{td}-{tag}"),
            format!("s2-{issued}-{nonce}-{cohort}-{}-{tag}", &td[1..]),
            format!(
                "s2-{issued}-{nonce}-{cohort}-{td}-{}",
                tag.to_ascii_uppercase()
            ),
            format!("s2-{issued}-{nonce}-{cohort}-{td}-{}", one_upper(tag)),
            format!("S2-{issued}-{nonce}-{cohort}-{td}-{tag}"),
        ] {
            assert_ne!(other, t);
            let r = ok(&other);
            // Dropping the cohort's leading zero leaves a well-formed,
            // different cohort: its MAC does not match.
            if other == format!("s2-{issued}-{nonce}-{}-{td}-{tag}", &cohort[1..]) {
                assert_eq!(r, Err(SessionError::Signature), "{other}");
            } else {
                assert_eq!(r, Err(SessionError::Malformed), "{other}");
            }
        }
        // The default audience has exactly one cohort spelling, "0".
        let d = mint(
            K,
            "demo/news",
            1_700_000_000,
            [0xab; 8],
            &Binding::default(),
        )
        .unwrap();
        assert!(ok(&d).is_ok());
        for marker in ["", "00", "O", "-"] {
            let other = d.replacen("-0-", &format!("-{marker}-"), 1);
            assert_ne!(other, d);
            assert!(
                matches!(
                    ok(&other),
                    Err(SessionError::Malformed | SessionError::Signature)
                ),
                "{other}"
            );
        }
        assert_eq!(
            ok(&d.replacen("-0-", "--", 1)),
            Err(SessionError::Malformed)
        );

        // An issue time of zero is written "0", and that verifies.
        let z = mint(K, "demo/news", 0, [1; 8], &Binding::default()).unwrap();
        assert!(z.starts_with("s2-0-"));
        assert!(verify(K, &z, "demo/news", 0, DEFAULT_TTL_S).is_ok());
        let z1 = mint_v1(K, "demo/news", 0, [1; 8]);
        assert!(z1.starts_with("s1-0-"));
        assert!(verify(K, &z1, "demo/news", 0, DEFAULT_TTL_S).is_ok());
    }
}
