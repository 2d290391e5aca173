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
    #[error("credentials lack the {0:?} scope")]
    Scope(&'static str),
    #[error("platform admins only")]
    PlatformOnly,
    #[error("wrong issuer")]
    Issuer,
    #[error("token lifetime over the {0}-second maximum")]
    Lifetime(i64),
    #[error("server misconfigured: {0}")]
    Config(&'static str),
}

impl AuthError {
    /// 403 for an authenticated caller outside its scope, 401 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::WrongOrg { .. } | AuthError::Scope(_) | AuthError::PlatformOnly => 403,
            AuthError::Config(_) => 500,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Space-separated scopes (`cue read admin`); absent means `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// What a credential may do. `cue` fires `POST /cue`; `read` reads the
/// org's channels, breaks and metrics; `admin` does everything in its org
/// (and implies the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cue,
    Read,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Cue, Scope::Read, Scope::Admin];
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Cue => "cue",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
    fn bit(self) -> u8 {
        match self {
            Scope::Cue => 1,
            Scope::Read => 2,
            Scope::Admin => 4,
        }
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u8);

/// A scope list that does not read (an API key's `scopes`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopesError {
    #[error("unknown scope {0:?} (cue, read, admin)")]
    Unknown(String),
    #[error("at least one scope (cue, read, admin)")]
    Empty,
}

impl Scopes {
    pub const ADMIN: Scopes = Scopes(4);

    /// `"cue read"` (spaces or commas); unknown names are an error naming them.
    pub fn parse(list: &str) -> Result<Scopes, ScopesError> {
        let mut bits = 0;
        for name in list.split([' ', ',']).filter(|n| !n.is_empty()) {
            let s = Scope::ALL
                .iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| ScopesError::Unknown(name.to_string()))?;
            bits |= s.bit();
        }
        if bits == 0 {
            return Err(ScopesError::Empty);
        }
        Ok(Scopes(bits))
    }

    pub fn allows(self, need: Scope) -> bool {
        self.0 & (need.bit() | Scope::Admin.bit()) != 0
    }

    /// Canonical form, e.g. `"cue read"`.
    pub fn names(self) -> String {
        Scope::ALL
            .iter()
            .filter(|s| self.0 & s.bit() != 0)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How tokens are validated: audience, issuer (when configured), and the
/// longest lifetime accepted (`exp` − `iat`, or `exp` − now without `iat`),
/// so a leaked token cannot be minted to live for years.
#[derive(Debug, Clone, Copy)]
pub struct Validation<'a> {
    pub audience: &'a str,
    pub issuer: Option<&'a str>,
    pub max_lifetime_s: i64,
}

/// Default longest token lifetime: 30 days.
pub const DEFAULT_MAX_LIFETIME_S: i64 = 30 * 86_400;
/// An HS256 secret shorter than this is refused (RFC 7518 §3.2: at least
/// the hash size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

impl<'a> From<&'a str> for Validation<'a> {
    fn from(audience: &'a str) -> Self {
        Validation {
            audience,
            issuer: None,
            max_lifetime_s: DEFAULT_MAX_LIFETIME_S,
        }
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub org: String,
    pub subject: String,
    pub scopes: Scopes,
    /// Authenticated by an API key (its subject is `key:{id}`), not a JWT.
    pub api_key: bool,
}

/// The subject prefix of an API key principal.
pub const API_KEY_SUBJECT: &str = "key:";

impl Principal {
    /// The key the control plane's rate limits count under: the API key's
    /// id for an API key (`key:{id}`, one bucket per key), else the org the
    /// token is bound to. Never the JWT `sub`: whoever mints tokens picks
    /// it (the CLI writes `operator` by default, so all operators of a
    /// platform shared one bucket, and rotating it escaped the limit); the
    /// `org` claim is what the token is authorised for and cannot be
    /// rotated without losing that.
    pub fn rate_key(&self) -> String {
        match self.subject.strip_prefix(API_KEY_SUBJECT) {
            Some(id) if self.api_key => format!("key:{id}"),
            _ => format!("org:{}", self.org),
        }
    }

    /// Does this credential carry `need`?
    pub fn require(&self, need: Scope) -> Result<(), AuthError> {
        if self.scopes.allows(need) {
            Ok(())
        } else {
            Err(AuthError::Scope(need.as_str()))
        }
    }

    /// Platform-wide routes (`/api/diag`): org `*` with `admin`.
    pub fn require_platform(&self) -> Result<(), AuthError> {
        if self.org == "*" && self.scopes.allows(Scope::Admin) {
            Ok(())
        } else {
            Err(AuthError::PlatformOnly)
        }
    }

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
    // header.payload is what was signed; exactly three parts.
    let three = token
        .rsplit_once('.')
        .and_then(|(input, sig)| Some((input, input.split_once('.')?, sig)))
        .filter(|(_, (_, p), _)| !p.contains('.'));
    let Some((signing_input, (h, p), sig)) = three else {
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
        signing_input,
        signature,
        payload_b64: p,
    })
}

/// Check the claims of a token whose signature the caller has verified.
pub fn check_claims<'v>(
    jwt: &UnverifiedJwt<'_>,
    v: impl Into<Validation<'v>>,
    now_s: i64,
) -> Result<Principal, AuthError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: Claims = serde_json::from_slice(
        &b64.decode(jwt.payload_b64)
            .map_err(|_| AuthError::Malformed("payload is not base64url"))?,
    )
    .map_err(|_| AuthError::Malformed("payload is not a JSON claims object"))?;
    claims_principal(claims, &v.into(), now_s)
}

/// Verify an HS256 JWT.
pub fn verify_hs256<'v>(
    token: &str,
    secret: &[u8],
    v: impl Into<Validation<'v>>,
    now_s: i64,
) -> Result<Principal, AuthError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(AuthError::Config("JWT_SECRET is shorter than 32 bytes"));
    }
    let jwt = split(token)?;
    if jwt.alg != "HS256" {
        return Err(AuthError::Algorithm(jwt.alg));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::Signature)?;
    mac.update(jwt.signing_input.as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&jwt.signature)
        .map_err(|_| AuthError::Signature)?;
    check_claims(&jwt, v, now_s)
}

fn claims_principal(
    claims: Claims,
    v: &Validation<'_>,
    now_s: i64,
) -> Result<Principal, AuthError> {
    let audience = v.audience;
    let exp = claims.exp.ok_or(AuthError::NoExpiry)?;
    let issued = claims.iat.unwrap_or(now_s).min(now_s);
    if exp.saturating_sub(issued) > v.max_lifetime_s.saturating_add(LEEWAY_S) {
        return Err(AuthError::Lifetime(v.max_lifetime_s));
    }
    if let Some(iss) = v.issuer {
        if claims.iss.as_deref() != Some(iss) {
            return Err(AuthError::Issuer);
        }
    }
    // A far-future exp was refused above (lifetime); saturating is exact.
    if now_s > exp.saturating_add(LEEWAY_S) {
        return Err(AuthError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|n| now_s.saturating_add(LEEWAY_S) < n)
    {
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
    let scopes = match claims.scope.as_deref() {
        None => Scopes::ADMIN,
        Some(list) => Scopes::parse(list).map_err(|_| AuthError::Malformed("unknown scope"))?,
    };
    Ok(Principal {
        org,
        subject: claims.sub.unwrap_or_else(|| "jwt".into()),
        scopes,
        api_key: false,
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
    constant_time_eq(hash_api_key(salt, key).as_bytes(), stored_hash.as_bytes())
}

/// Equal bytes, compared in time independent of where they differ (the
/// length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
            iss: None,
            scope: None,
        }
    }

    const S: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn rate_limits_count_by_key_or_org_never_by_sub() {
        let v = Validation {
            audience: "cf-ssai",
            issuer: None,
            max_lifetime_s: 3600,
        };
        let mut c = claims(1000, "cf-ssai", "demo");
        let a = verify_hs256(&sign_hs256(&c, S), S, v, 900).unwrap();
        // Rotating `sub` (or naming an API key in it) changes nothing.
        for sub in ["someone-else", "key:k1", "operator"] {
            c.sub = Some(sub.into());
            let b = verify_hs256(&sign_hs256(&c, S), S, v, 900).unwrap();
            assert_eq!(a.rate_key(), b.rate_key(), "{sub}");
        }
        assert_eq!(a.rate_key(), "org:demo");
        let key = Principal {
            org: "demo".into(),
            subject: "key:k1".into(),
            scopes: Scopes::ADMIN,
            api_key: true,
        };
        assert_eq!(key.rate_key(), "key:k1");
        assert_ne!(key.rate_key(), a.rate_key());
    }

    #[test]
    fn issuer_lifetime_scopes_and_secret_length() {
        let v = Validation {
            audience: "cf-ssai",
            issuer: Some("cf-ssai"),
            max_lifetime_s: 3600,
        };
        let mut c = claims(1000, "cf-ssai", "demo");
        assert_eq!(
            verify_hs256(&sign_hs256(&c, S), S, v, 900),
            Err(AuthError::Issuer)
        );
        c.iss = Some("cf-ssai".into());
        assert!(verify_hs256(&sign_hs256(&c, S), S, v, 900).is_ok());
        c.iss = Some("evil".into());
        assert_eq!(
            verify_hs256(&sign_hs256(&c, S), S, v, 900),
            Err(AuthError::Issuer)
        );
        c.iss = Some("cf-ssai".into());
        c.exp = Some(900 + 10 * 86_400);
        assert_eq!(
            verify_hs256(&sign_hs256(&c, S), S, v, 900),
            Err(AuthError::Lifetime(3600))
        );
        c.exp = Some(1000);
        c.iat = Some(-10 * 86_400);
        assert_eq!(
            verify_hs256(&sign_hs256(&c, S), S, v, 900),
            Err(AuthError::Lifetime(3600))
        );
        c.iat = None;
        c.scope = Some("cue".into());
        let p = verify_hs256(&sign_hs256(&c, S), S, v, 900).unwrap();
        assert!(p.require(Scope::Cue).is_ok());
        assert_eq!(p.require(Scope::Read), Err(AuthError::Scope("read")));
        assert_eq!(p.require(Scope::Admin).unwrap_err().status(), 403);
        assert_eq!(p.require_platform(), Err(AuthError::PlatformOnly));
        c.scope = Some("root".into());
        assert!(verify_hs256(&sign_hs256(&c, S), S, v, 900).is_err());
        assert_eq!(
            verify_hs256(&sign_hs256(&c, b"short"), b"short", v, 900),
            Err(AuthError::Config("JWT_SECRET is shorter than 32 bytes"))
        );
        assert_eq!(Scopes::parse("read, cue").unwrap().names(), "cue read");
        assert!(Scopes::parse("").is_err());
        assert!(Scopes::ADMIN.allows(Scope::Cue));
    }

    #[test]
    fn accepts_good_and_rejects_each_failure() {
        let s = S;
        let good = sign_hs256(&claims(1000, "cf-ssai", "demo"), s);
        assert_eq!(verify_hs256(&good, s, "cf-ssai", 900).unwrap().org, "demo");
        assert_eq!(
            verify_hs256(&good, b"other-other-other-other-other-32", "cf-ssai", 900),
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
