//! RS256 / ES256 signature checks against a configured JWKS (`JWKS_URL`),
//! with WebCrypto (`crypto.subtle`) doing the cryptography. The JWKS is
//! cached in KV for 10 minutes. Each algorithm only accepts its own key
//! type (RSA for RS256, EC P-256 for ES256) and a JWK's own `alg`, when
//! present, must match: no algorithm confusion.

use cf_ssai_core::control::auth::{AuthError, UnverifiedJwt};
use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::*;

const CACHE_KEY: &str = "jwks:cache";
const CACHE_TTL_S: u64 = 600;

pub async fn verify(env: &Env, jwt: &UnverifiedJwt<'_>) -> std::result::Result<(), AuthError> {
    let Ok(url) = env.var("JWKS_URL").map(|v| v.to_string()) else {
        return Err(AuthError::Algorithm(format!(
            "{} (no JWKS configured)",
            jwt.alg
        )));
    };
    let jwks = load(env, &url).await.ok_or(AuthError::Signature)?;
    let keys = jwks
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or(AuthError::Signature)?;
    let (kty, crv) = match jwt.alg.as_str() {
        "RS256" => ("RSA", None),
        "ES256" => ("EC", Some("P-256")),
        other => return Err(AuthError::Algorithm(other.to_string())),
    };
    let key = keys
        .iter()
        .filter(|k| k.get("kty").and_then(|v| v.as_str()) == Some(kty))
        .filter(|k| crv.is_none() || k.get("crv").and_then(|v| v.as_str()) == crv)
        .filter(|k| {
            k.get("alg")
                .and_then(|v| v.as_str())
                .is_none_or(|a| a == jwt.alg)
        })
        .find(|k| match &jwt.kid {
            Some(kid) => k.get("kid").and_then(|v| v.as_str()) == Some(kid.as_str()),
            None => true,
        })
        .ok_or(AuthError::Signature)?;
    match subtle_verify(&jwt.alg, key, jwt.signing_input.as_bytes(), &jwt.signature).await {
        Ok(true) => Ok(()),
        _ => Err(AuthError::Signature),
    }
}

async fn load(env: &Env, url: &str) -> Option<serde_json::Value> {
    let kv = env.kv(crate::bindings::KV).ok()?;
    if let Ok(Some(v)) = kv.get(CACHE_KEY).json::<serde_json::Value>().await {
        return Some(v);
    }
    let text = crate::get_text(url, 2000, &crate::private_policy(env))
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if let Ok(p) = kv.put(CACHE_KEY, text) {
        let _ = p.expiration_ttl(CACHE_TTL_S).execute().await;
    }
    Some(v)
}

async fn subtle_verify(
    alg: &str,
    jwk: &serde_json::Value,
    data: &[u8],
    sig: &[u8],
) -> std::result::Result<bool, JsValue> {
    let crypto = Reflect::get(&js_sys::global(), &"crypto".into())?;
    let subtle = Reflect::get(&crypto, &"subtle".into())?;
    let obj = |pairs: &[(&str, &str)]| -> std::result::Result<Object, JsValue> {
        let o = Object::new();
        for (k, v) in pairs {
            Reflect::set(&o, &(*k).into(), &(*v).into())?;
        }
        Ok(o)
    };
    let (import_params, verify_params) = match alg {
        "RS256" => (
            obj(&[("name", "RSASSA-PKCS1-v1_5"), ("hash", "SHA-256")])?,
            obj(&[("name", "RSASSA-PKCS1-v1_5")])?,
        ),
        _ => (
            obj(&[("name", "ECDSA"), ("namedCurve", "P-256")])?,
            obj(&[("name", "ECDSA"), ("hash", "SHA-256")])?,
        ),
    };
    let jwk_js = js_sys::JSON::parse(&jwk.to_string())?;
    let usages = js_sys::Array::of1(&"verify".into());
    let import: js_sys::Function = Reflect::get(&subtle, &"importKey".into())?.dyn_into()?;
    let args = js_sys::Array::new();
    for a in [
        JsValue::from("jwk"),
        jwk_js,
        import_params.into(),
        JsValue::FALSE,
        usages.into(),
    ] {
        args.push(&a);
    }
    let key = JsFuture::from(js_sys::Promise::from(import.apply(&subtle, &args)?)).await?;
    let verify: js_sys::Function = Reflect::get(&subtle, &"verify".into())?.dyn_into()?;
    let args = js_sys::Array::new();
    for a in [
        verify_params.into(),
        key,
        Uint8Array::from(sig).into(),
        Uint8Array::from(data).into(),
    ] {
        args.push(&a);
    }
    let ok = JsFuture::from(js_sys::Promise::from(verify.apply(&subtle, &args)?)).await?;
    Ok(ok.as_bool().unwrap_or(false))
}
