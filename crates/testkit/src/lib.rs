//! Test support for cf-ssai, kept out of the product crate: nothing here
//! runs in a worker.
//!
//! - [`driver`]: the channel machine driven as the Channel DO drives it,
//!   over simulated time against [`sim`] (alarms, polls, decisions, DO
//!   storage and KV in memory, evictions).
//! - [`edge`]: the manifest worker's read loop around the core's sans-IO
//!   edge, synchronous, for the scenario tests and the fan-in simulation.
//! - [`sim`]: a live origin as a pure function of `now` (variant playlists
//!   with SCTE-35 breaks in a chosen dialect), served by `cf-ssai origin`
//!   and stepped over time by the scenario tests.
//! - [`validate`]: the RFC 8216 live-playlist rules a stateless splice must
//!   keep across reloads, nodes and viewers, used by the scenario tests and
//!   by `cf-ssai validate`.

pub mod driver;
pub mod edge;
pub mod sim;
pub mod sim_dash;
pub mod validate;
pub mod validate_dash;
