//! Control-plane authentication, pure: HS256 JWT verification (RFC 7519 /
//! RFC 7515) with `exp`, `aud` and an org claim, and salted API-key hashes
//! compared in constant time. `now` is a parameter.
//!
//! HS256 (shared secret) and RS256/ES256 (keys from a JWKS; the signature
//! check is WebCrypto's, in the worker) are accepted; `alg: none` and any
//! other algorithm are refused before a signature is looked at, and each
//! algorithm is bound to its own key type, which closes algorithm
//! confusion.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Tokens larger than this are refused before decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp`/`nbf`, seconds.
pub const LEEWAY_S: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send Authorization: Bearer <JWT or API key>")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("algorithm {0:?} is not accepted (HS256 only)")]
    Algorithm(String),
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token has no exp claim")]
    NoExpiry,
    #[error("wrong audience")]
    Audience,
    #[error("token has no org claim")]
    NoOrg,
    #[error("unknown or revoked API key")]
    UnknownKey,
    #[error("credentials are for org {have:?}, not {want:?}")]
    WrongOrg { have: String, want: String },
}

impl AuthError {
    /// 403 for an authenticated caller outside its scope, 401 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::WrongOrg { .. } => 403,
            _ => 401,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: Option<String>,
    pub exp: Option<i64>,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub iat: Option<i64>,
    pub aud: Option<Audience>,
    /// The org the token may act on; "*" for a platform admin.
    pub org: Option<String>,
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub org: String,
    pub subject: String,
}

impl Principal {
    /// May this principal touch `org`?
    pub fn authorize(&self, org: &str) -> Result<(), AuthError> {
        if self.org == "*" || self.org == org {
            Ok(())
        } else {
            Err(AuthError::WrongOrg {
                have: self.org.clone(),
                want: org.to_string(),
            })
        }
    }
}

/// A JWT split and decoded, signature not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedJwt<'t> {
    /// `HS256`, `RS256` or `ES256`; anything else is refused by [`split`].
    pub alg: String,
    pub kid: Option<String>,
    /// `header.payload`, what the signature covers.
    pub signing_input: &'t str,
    pub signature: Vec<u8>,
    payload_b64: &'t str,
}

/// Algorithms we accept; each is bound to its own key type (HMAC secret,
/// RSA JWK, EC P-256 JWK), so one can never be verified as another.
pub const ALGORITHMS: [&str; 3] = ["HS256", "RS256", "ES256"];

/// Split and decode a JWT; refuses `none` and unknown algorithms.
pub fn split(token: &str) -> Result<UnverifiedJwt<'_>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("expected three dot-separated parts"));
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value = serde_json::from_slice(
        &b64.decode(h)
            .map_err(|_| AuthError::Malformed("header is not base64url"))?,
    )
    .map_err(|_| AuthError::Malformed("header is not JSON"))?;
    let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
    if !ALGORITHMS.contains(&alg) {
        return Err(AuthError::Algorithm(alg.to_string()));
    }
    let signature = b64
        .decode(sig)
        .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
    Ok(UnverifiedJwt {
        alg: alg.to_string(),
        kid: header.get("kid").and_then(|k| k.as_str()).map(String::from),
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
        payload_b64: p,
    })
}

/// Check the claims of a token whose signature the caller has verified.
pub fn check_claims(
    jwt: &UnverifiedJwt<'_>,
    audience: &str,
    now_s: i64,
) -> Result<Principal, AuthError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: Claims = serde_json::from_slice(
        &b64.decode(jwt.payload_b64)
            .map_err(|_| AuthError::Malformed("payload is not base64url"))?,
    )
    .map_err(|_| AuthError::Malformed("payload is not a JSON claims object"))?;
    claims_principal(claims, audience, now_s)
}

/// Verify an HS256 JWT.
pub fn verify_hs256(
    token: &str,
    secret: &[u8],
    audience: &str,
    now_s: i64,
) -> Result<Principal, AuthError> {
    let jwt = split(token)?;
    if jwt.alg != "HS256" {
        return Err(AuthError::Algorithm(jwt.alg));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::Signature)?;
    mac.update(jwt.signing_input.as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&jwt.signature)
        .map_err(|_| AuthError::Signature)?;
    check_claims(&jwt, audience, now_s)
}

fn claims_principal(claims: Claims, audience: &str, now_s: i64) -> Result<Principal, AuthError> {
    let exp = claims.exp.ok_or(AuthError::NoExpiry)?;
    if now_s > exp + LEEWAY_S {
        return Err(AuthError::Expired);
    }
    if claims.nbf.is_some_and(|n| now_s + LEEWAY_S < n) {
        return Err(AuthError::NotYetValid);
    }
    let aud_ok = match &claims.aud {
        Some(Audience::One(a)) => a == audience,
        Some(Audience::Many(v)) => v.iter().any(|a| a == audience),
        None => false,
    };
    if !aud_ok {
        return Err(AuthError::Audience);
    }
    let org = claims
        .org
        .clone()
        .filter(|o| !o.is_empty())
        .ok_or(AuthError::NoOrg)?;
    Ok(Principal {
        org,
        subject: claims.sub.unwrap_or_else(|| "jwt".into()),
    })
}

/// Sign claims as an HS256 JWT (the CLI's `token` command, tests, the demo).
pub fn sign_hs256(claims: &Claims, secret: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = b64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    format!("{h}.{p}.{}", b64.encode(mac.finalize().into_bytes()))
}

/// API keys look like `cfssai_<48 hex>`; the first 16 characters name the
/// key (stored in clear to find the row), the whole key is hashed. The key
/// is 192 random bits, so a salted SHA-256 is enough (no password
/// stretching needed, unlike a human password).
pub fn api_key_id(key: &str) -> Option<&str> {
    (key.starts_with("cfssai_") && key.len() >= 24 && key.is_ascii()).then(|| &key[..16])
}

pub fn hash_api_key(salt: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(key.as_bytes());
    crate::scte35::to_hex(&h.finalize())
}

/// Constant-time comparison of a presented key with a stored hash.
pub fn verify_api_key(salt: &str, stored_hash: &str, key: &str) -> bool {
    let got = hash_api_key(salt, key);
    let (a, b) = (got.as_bytes(), stored_hash.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer credential from an Authorization header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let h = header.ok_or(AuthError::Missing)?.trim();
    let t = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .ok_or(AuthError::Malformed(
            "Authorization must be 'Bearer <token>'",
        ))?
        .trim();
    if t.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64, aud: &str, org: &str) -> Claims {
        Claims {
            sub: Some("op".into()),
            exp: Some(exp),
            nbf: None,
            iat: None,
            aud: Some(Audience::One(aud.into())),
            org: Some(org.into()),
        }
    }

    #[test]
    fn accepts_good_and_rejects_each_failure() {
        let s = b"secret";
        let good = sign_hs256(&claims(1000, "cf-ssai", "demo"), s);
        assert_eq!(verify_hs256(&good, s, "cf-ssai", 900).unwrap().org, "demo");
        assert_eq!(
            verify_hs256(&good, b"other", "cf-ssai", 900),
            Err(AuthError::Signature)
        );
        assert_eq!(
            verify_hs256(&good, s, "cf-ssai", 2000),
            Err(AuthError::Expired)
        );
        assert_eq!(
            verify_hs256(&good, s, "nope", 900),
            Err(AuthError::Audience)
        );
        // alg: none, with or without a signature.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let p = good.split('.').nth(1).unwrap();
        let none = format!("{}.{p}.", b64.encode(br#"{"alg":"none"}"#));
        assert_eq!(
            verify_hs256(&none, s, "cf-ssai", 900),
            Err(AuthError::Algorithm("none".into()))
        );
        let rs = format!("{}.{p}.abc", b64.encode(br#"{"alg":"RS256","kid":"k1"}"#));
        let weird = format!("{}.{p}.abc", b64.encode(br#"{"alg":"HS512"}"#));
        assert!(matches!(split(&weird), Err(AuthError::Algorithm(_))));
        let parsed = split(&rs).unwrap();
        assert_eq!(
            (parsed.alg.as_str(), parsed.kid.as_deref()),
            ("RS256", Some("k1"))
        );
        assert!(matches!(
            verify_hs256(&rs, s, "cf-ssai", 900),
            Err(AuthError::Algorithm(_))
        ));
        assert!(matches!(
            verify_hs256("a.b", s, "cf-ssai", 900),
            Err(AuthError::Malformed(_))
        ));
        let mut c = claims(1000, "cf-ssai", "demo");
        c.exp = None;
        assert_eq!(
            verify_hs256(&sign_hs256(&c, s), s, "cf-ssai", 900),
            Err(AuthError::NoExpiry)
        );
        let p = verify_hs256(&good, s, "cf-ssai", 900).unwrap();
        assert_eq!(p.authorize("other").unwrap_err().status(), 403);
    }

    #[test]
    fn api_keys() {
        let key = "cfssai_0123456789abcdef0123456789abcdef0123456789abcdef";
        let h = hash_api_key("salt", key);
        assert!(verify_api_key("salt", &h, key));
        assert!(!verify_api_key(
            "salt",
            &h,
            "cfssai_0123456789abcdef0123456789abcdef0123456789abcdeX"
        ));
        assert!(!verify_api_key("pepper", &h, key));
        assert_eq!(api_key_id(key), Some("cfssai_012345678"));
        assert_eq!(api_key_id("short"), None);
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
    }
}
