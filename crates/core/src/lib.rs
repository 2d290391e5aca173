//! cf-ssai core: the pure, sans-IO logic of live HLS ad insertion.
//!
//! What it does: SCTE-35 decoding/encoding, a lossless HLS tokenizer, ad
//! marker detection in every common HLS dialect, the stateless SSAI/SGAI
//! splice and master rewrite, VAST parsing and pod building, beacon and auth
//! logic. What it deliberately does not do: I/O, clocks, logging, or depend
//! on the Workers platform. `now` is always a parameter; anything needing the
//! network is returned to the caller as an instruction.
//!
//! Discipline (Symphonia's): no `unwrap`, `expect` or `panic!` outside
//! tests anywhere in the core; the modules written since the rule (the
//! channel machine, sessions, the ad route, media serving) also deny
//! unchecked indexing and arithmetic. The older modules still carry ~300
//! such sites (bounds-checked by construction and fuzzed with overflow
//! checks on); they are being converted module by module.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod model;

pub mod net;

pub mod openmetrics;

pub mod hls;

pub mod scte35;

pub mod ads;

pub mod channel;

pub mod splice;

pub mod control;
