//! The storage seam: every D1 statement the workers run, one module per
//! table family of `migrations/`, each with its SQL as consts and typed
//! rows. Callers never see SQL text, so a schema change is reviewed in
//! one place, and `tests/sql_seam.rs` keeps it that way (no SQL outside
//! this folder).
//!
//! This is a move, not a rewrite: every statement, batch (one D1 batch is
//! one transaction) and parameter order is what the callers ran before.

pub mod ads;
pub mod breaks;
pub mod channels;
pub mod jobs;
pub mod metrics;
pub mod orgs;

use wasm_bindgen::JsValue;
use worker::{D1Result, Result};

/// A number parameter: D1 binds JS numbers (f64).
pub(crate) fn num(v: i64) -> JsValue {
    (v as f64).into()
}

/// A boolean parameter, as SQLite's 0/1.
pub(crate) fn flag(b: bool) -> JsValue {
    (if b { 1.0 } else { 0.0 }).into()
}

/// An optional text parameter: NULL when absent.
pub(crate) fn opt(s: Option<&str>) -> JsValue {
    s.map_or(JsValue::NULL, Into::into)
}

/// Rows changed by a write (0 when D1 does not say).
pub(crate) fn changes(r: &D1Result) -> Result<usize> {
    Ok(r.meta()?.and_then(|m| m.changes).unwrap_or(0))
}
