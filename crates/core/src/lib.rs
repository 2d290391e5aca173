//! cf-ssai core: the pure, sans-IO logic of live HLS ad insertion.
//!
//! What it does: SCTE-35 decoding/encoding, a lossless HLS tokenizer, ad
//! marker detection in every common HLS dialect, the stateless SSAI/SGAI
//! splice and master rewrite, VAST parsing and pod building, beacon and auth
//! logic. What it deliberately does not do: I/O, clocks, logging, or depend
//! on the Workers platform. `now` is always a parameter; anything needing the
//! network is returned to the caller as an instruction.
//!
//! Discipline (Symphonia's): outside tests, nothing in the core can panic
//! by its own hand: no `unwrap`, `expect` or `panic!`, no unchecked
//! indexing or slicing, no arithmetic that can overflow or divide by zero
//! (`get`, slice patterns, `split_at_checked`, `checked_*`, and
//! `saturating_*` where overflow cannot happen or saturating is the right
//! answer). Denied crate-wide here, with no module-level `allow`; errors
//! are thiserror enums, not strings. Modules are layered (model, net,
//! openmetrics at the bottom; then hls, scte35, ads, channel, splice,
//! control): `tests/layering.rs` fails on a use of a higher layer or an
//! import cycle.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod model;
pub mod wire;

pub mod net;

pub mod openmetrics;

pub mod hls;

pub mod scte35;

pub mod ads;

pub mod channel;

pub mod splice;

#[cfg(feature = "dash")]
pub mod dash;

pub mod control;
