//! The control plane: channel configuration and its validation, API keys
//! and tokens, signed playback sessions, operator metrics, and the rules for
//! serving stored media. The top layer: it may use every layer below.

pub mod audience;
pub mod auth;
pub mod config;
pub mod cue;
pub mod media_http;
pub mod metrics;
pub mod session;
