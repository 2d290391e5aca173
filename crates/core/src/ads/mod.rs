//! Ads: what fills a break. VAST/VMAP parsing, the decision's pod (ads,
//! renditions, tracking), beacons and their timing, and conditioning of
//! creatives into renditions that splice cleanly. Below the channel machine
//! and the splice; above the HLS and SCTE-35 codecs.

pub mod beacon;
#[cfg(feature = "vast")]
pub mod conditioning;
pub mod decision;
pub mod pod;
pub mod reason;
pub mod request;
// Not behind `vast`: the manifest worker (built without it) reads viewers.
pub mod targeting;
#[cfg(feature = "vast")]
pub mod vast;
#[cfg(feature = "vast")]
pub mod vmap;
