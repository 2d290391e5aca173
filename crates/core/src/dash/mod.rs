//! MPEG-DASH (ISO/IEC 23009-1) output on the same breaks as HLS.
//!
//! A DASH origin's live MPD is read into its window as an HLS media
//! playlist of its reference Representation ([`window::to_hls`]): the cue
//! detection, the channel sequencer, the KV view, pods and cohorts then
//! work unchanged, and the edge's rules (`splice::edge::breaks`) give the
//! breaks a request is spliced with. [`splice::splice`] then writes them
//! into the MPD as Periods (SSAI) or alternative-MPD events (SGAI).
//!
//! Why not a typed MPD model (such as the `dash-mpd` crate): a rewrite must
//! keep what it does not understand (vendor elements and attributes,
//! `ContentProtection` payloads, `SupplementalProperty`s, comments) byte for
//! byte, and a typed model round-trips only what it models. Here the MPD is
//! a span tree ([`tree`]); the splice replaces spans and copies the rest.

pub mod mpd;
pub mod splice;
pub mod tree;
pub mod window;

pub use mpd::Mpd;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DashError {
    #[error(transparent)]
    Xml(#[from] tree::TreeError),
    #[error("not an MPD (root element is not MPD)")]
    NotMpd,
    #[error("MPD lacks {0}")]
    Missing(&'static str),
    #[error("no segment in the MPD's window")]
    EmptyWindow,
}

/// Whether a document looks like an MPD (an XML document rather than an
/// HLS playlist): what an origin URL serves decides how it is read.
pub fn looks_like_mpd(text: &str) -> bool {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    t.starts_with("<?xml") || t.starts_with("<MPD") || t.starts_with("<!--")
}
