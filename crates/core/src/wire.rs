//! The binary KV values of the playback hot path: the channel view every
//! playlist request reads, and the lean pod of each break in its window.
//!
//! Why binary: on Workers a playlist request's CPU is mostly decoding its
//! KV values (the splice itself is a few µs), and JSON is the slow part of
//! that. The values are [postcard] (a compact, non-self-describing serde
//! format: varints, length-prefixed strings, no field names) behind a
//! version byte, through wire structs of their own: postcard cannot carry
//! the model's `skip_serializing_if`/`flatten` attributes, which keep the
//! JSON of the admin API and the debugging routes readable. Each wire
//! struct is converted with an exhaustive destructuring, so a field added
//! to the model and not to the wire is a compile error, not a silent loss.
//!
//! Mixed versions during a deploy: [`decode_view`] and [`decode_pod`] read
//! both the binary values and the JSON ones written before (a JSON value
//! starts with `{`, a binary one with its version byte), so a new reader
//! never fails on an old writer's value; an old reader that meets a binary
//! value reads nothing and asks the Channel DO, which is slower but right.
//!
//! The lean pod ([`lean_pod`]) is what the splice needs: renditions,
//! durations, ids. Tracking URLs, error URLs, reasons and the rest live
//! only in the full pod (JSON, its own key), read by the beacon path, the
//! asset list and the ad routes. Its URIs are front-coded ([`Front`]):
//! each stored as the length it shares with the URI before it and the
//! rest. A conditioned ad's renditions differ only past
//! `…/ads/{job}-{cadence}/` (rung, container, file name), so a rendition
//! costs ~40 bytes instead of ~200, and the pod stays within one read of
//! a few KB whatever the ladder: the demo's lean pod (two ads and the
//! slate, 10 renditions each) is 2.7 KB (6.8 KB before front coding), two
//! ads and the slate on a 5-rung ladder (20 renditions each) 2.0 KB.

use crate::model::{
    AdRendition, AdSegment, BreakRecord, BreakSource, ChannelView, Pod, PodItem, PodSource, Slate,
    TrackKind, Tracking, ViewEntry,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The first byte of a binary channel view. (`0x01`, the layout before
/// cohorts, is not read: a reader meeting one finds no view and asks the
/// Channel DO, whose next write is in this layout.)
pub const VIEW_V2: u8 = 0x04;
/// The first byte of a binary lean pod. (`0x02`, the first layout, had no
/// front coding: a reader of this version finds no lean pod in it and
/// reads the break's full pod, as for any pod it cannot decode.)
pub const POD_V2: u8 = 0x03;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty value")]
    Empty,
    #[error("unknown value version {0:#04x}")]
    Version(u8),
    #[error("binary value: {0}")]
    Binary(String),
    #[error("JSON value: {0}")]
    Json(String),
}

/// The view as stored in KV.
pub fn encode_view(v: &ChannelView) -> Vec<u8> {
    let ChannelView {
        entries,
        updated_ms,
        checked_through_msn,
        disc_base,
        origin_mark,
        cohort_disc_base,
    } = v;
    let wire = ViewV2 {
        entries: entries
            .iter()
            .map(|e| {
                let ViewEntry {
                    record,
                    inserted,
                    cohort_inserted,
                } = e;
                (RecordV2::of(record), *inserted, pairs(cohort_inserted))
            })
            .collect(),
        updated_ms: *updated_ms,
        checked_through_msn: *checked_through_msn,
        disc_base: *disc_base,
        origin_mark: *origin_mark,
        cohort_disc_base: pairs(cohort_disc_base),
    };
    encode(VIEW_V2, &wire)
}

/// A view from KV: binary, or JSON as written before.
pub fn decode_view(bytes: &[u8]) -> Result<ChannelView, WireError> {
    decode_view_as(bytes, None)
}

/// A view from KV as one audience is served (`Some(cohort)`; `""` the
/// default audience): only that cohort's facts are kept (which records
/// name it, what they insert for it, its base), so decoding costs the
/// same whatever the number of cohorts on the channel. `None`: all.
pub fn decode_view_as(bytes: &[u8], cohort: Option<&str>) -> Result<ChannelView, WireError> {
    let keep = |c: &str| cohort.is_none_or(|x| x == c);
    match bytes.first() {
        None => Err(WireError::Empty),
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string())),
        Some(&VIEW_V2) => {
            let w: ViewV2<'_> = decode(bytes)?;
            let owned_kept = |p: Vec<(&str, u64)>| -> BTreeMap<String, u64> {
                p.into_iter()
                    .filter(|(k, _)| keep(k))
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            };
            Ok(ChannelView {
                entries: w
                    .entries
                    .into_iter()
                    .map(|(mut r, inserted, cohort_inserted)| {
                        r.cohorts.retain(|c| keep(c));
                        ViewEntry {
                            record: r.into_record(),
                            inserted,
                            cohort_inserted: owned_kept(cohort_inserted),
                        }
                    })
                    .collect(),
                updated_ms: w.updated_ms,
                checked_through_msn: w.checked_through_msn,
                disc_base: w.disc_base,
                origin_mark: w.origin_mark,
                cohort_disc_base: owned_kept(w.cohort_disc_base),
            })
        }
        Some(&b) => Err(WireError::Version(b)),
    }
}

/// What the splice reads of a pod: no tracking, no reasons, no universal
/// ad ids (beacons, the asset list and the ad routes read the full pod).
pub fn lean_pod(p: &Pod) -> Pod {
    Pod {
        pod_id: p.pod_id.clone(),
        break_id: p.break_id.clone(),
        duration_s: p.duration_s,
        items: p
            .items
            .iter()
            .map(|i| PodItem {
                ad_id: i.ad_id.clone(),
                creative_id: i.creative_id.clone(),
                universal_ad_id: None,
                duration_s: i.duration_s,
                renditions: i.renditions.clone(),
                tracking: Tracking::default(),
            })
            .collect(),
        slate: p.slate.clone(),
        fill_s: p.fill_s,
        source: p.source,
        reasons: Vec::new(),
    }
}

/// A pod as the edge stores it: [`lean_pod`], binary.
pub fn encode_lean_pod(p: &Pod) -> Vec<u8> {
    let Pod {
        pod_id,
        break_id,
        duration_s,
        items,
        slate,
        fill_s,
        source,
        reasons: _,
    } = p;
    let (mut urls, mut words) = (Front::default(), Front::default());
    let wire = PodV2 {
        pod_id,
        break_id,
        duration_s: *duration_s,
        items: items
            .iter()
            .map(|i| {
                let PodItem {
                    ad_id,
                    creative_id,
                    universal_ad_id: _,
                    duration_s,
                    renditions,
                    tracking: _,
                } = i;
                ItemV2 {
                    ad_id,
                    creative_id,
                    duration_s: *duration_s,
                    renditions: renditions
                        .iter()
                        .map(|r| RenditionV2::of(r, &mut urls, &mut words))
                        .collect(),
                }
            })
            .collect(),
        slate_id: &slate.slate_id,
        slate: slate
            .renditions
            .iter()
            .map(|r| RenditionV2::of(r, &mut urls, &mut words))
            .collect(),
        fill_s: *fill_s,
        source: source_code(*source),
    };
    encode(POD_V2, &wire)
}

/// A pod from KV: the binary lean pod, or any pod in JSON (full or lean).
pub fn decode_pod(bytes: &[u8]) -> Result<Pod, WireError> {
    match bytes.first() {
        None => Err(WireError::Empty),
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string())),
        Some(&POD_V2) => {
            let w: PodV2<'_> = decode(bytes)?;
            let (mut urls, mut words) = (Front::default(), Front::default());
            let mut renditions = |list: Vec<RenditionV2<'_>>| {
                list.into_iter()
                    .map(|r| r.into_rendition(&mut urls, &mut words))
                    .collect::<Result<Vec<_>, WireError>>()
            };
            Ok(Pod {
                pod_id: w.pod_id.to_string(),
                break_id: w.break_id.to_string(),
                duration_s: w.duration_s,
                items: w
                    .items
                    .into_iter()
                    .map(|i| {
                        Ok(PodItem {
                            ad_id: i.ad_id.to_string(),
                            creative_id: i.creative_id.to_string(),
                            universal_ad_id: None,
                            duration_s: i.duration_s,
                            renditions: renditions(i.renditions)?,
                            tracking: Tracking::default(),
                        })
                    })
                    .collect::<Result<_, WireError>>()?,
                slate: Slate {
                    slate_id: w.slate_id.to_string(),
                    renditions: renditions(w.slate)?,
                },
                fill_s: w.fill_s,
                source: source_of(w.source)?,
                reasons: Vec::new(),
            })
        }
        Some(&b) => Err(WireError::Version(b)),
    }
}

fn encode<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let out = vec![version];
    // Serializing plain structs of strings and numbers into a Vec cannot
    // fail; were it ever to, the value is empty and every reader treats it
    // as missing (the content is served and the DO asked).
    postcard::to_extend(value, out).unwrap_or_default()
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    let body = bytes.get(1..).ok_or(WireError::Empty)?;
    postcard::from_bytes(body).map_err(|e| WireError::Binary(e.to_string()))
}

/// A cohort map as borrowed pairs.
fn pairs(m: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    m.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

/// A view entry: the record, what it inserts, and what it inserts for
/// each cohort with a pod of its own.
type EntryV2<'a> = (RecordV2<'a>, u64, Vec<(&'a str, u64)>);

#[derive(Serialize, Deserialize)]
struct ViewV2<'a> {
    #[serde(borrow)]
    entries: Vec<EntryV2<'a>>,
    updated_ms: i64,
    checked_through_msn: u64,
    disc_base: u64,
    origin_mark: Option<(u64, i64)>,
    #[serde(borrow)]
    cohort_disc_base: Vec<(&'a str, u64)>,
}

#[derive(Serialize, Deserialize)]
struct RecordV2<'a> {
    id: &'a str,
    source: u8,
    anchor_msn: u64,
    anchor_pdt_ms: Option<i64>,
    duration_ms: u64,
    cadence_ms: u64,
    segment_count: u32,
    cut_after: Option<u32>,
    disc_before: u64,
    merged: Vec<u64>,
    registered_ms: i64,
    #[serde(borrow)]
    asset: Vec<(&'a str, &'a str)>,
    #[serde(borrow)]
    cohorts: Vec<&'a str>,
}

impl<'a> RecordV2<'a> {
    fn of(r: &'a BreakRecord) -> Self {
        let BreakRecord {
            id,
            source,
            anchor_msn,
            anchor_pdt_ms,
            duration_ms,
            cadence_ms,
            segment_count,
            cut_after,
            disc_before,
            merged,
            registered_ms,
            asset,
            cohorts,
        } = r;
        RecordV2 {
            id,
            source: match source {
                BreakSource::Scte35 => 0,
                BreakSource::Manual => 1,
                BreakSource::Scheduled => 2,
            },
            anchor_msn: *anchor_msn,
            anchor_pdt_ms: *anchor_pdt_ms,
            duration_ms: *duration_ms,
            cadence_ms: *cadence_ms,
            segment_count: *segment_count,
            cut_after: *cut_after,
            disc_before: *disc_before,
            merged: merged.clone(),
            registered_ms: *registered_ms,
            asset: asset
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            cohorts: cohorts.iter().map(String::as_str).collect(),
        }
    }

    fn into_record(self) -> BreakRecord {
        BreakRecord {
            id: self.id.to_string(),
            source: match self.source {
                1 => BreakSource::Manual,
                2 => BreakSource::Scheduled,
                _ => BreakSource::Scte35,
            },
            anchor_msn: self.anchor_msn,
            anchor_pdt_ms: self.anchor_pdt_ms,
            duration_ms: self.duration_ms,
            cadence_ms: self.cadence_ms,
            segment_count: self.segment_count,
            cut_after: self.cut_after,
            disc_before: self.disc_before,
            merged: self.merged,
            registered_ms: self.registered_ms,
            asset: self
                .asset
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            cohorts: self.cohorts.into_iter().map(str::to_string).collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct PodV2<'a> {
    pod_id: &'a str,
    break_id: &'a str,
    duration_s: f64,
    #[serde(borrow)]
    items: Vec<ItemV2<'a>>,
    slate_id: &'a str,
    #[serde(borrow)]
    slate: Vec<RenditionV2<'a>>,
    fill_s: f64,
    source: u8,
}

#[derive(Serialize, Deserialize)]
struct ItemV2<'a> {
    ad_id: &'a str,
    creative_id: &'a str,
    duration_s: f64,
    #[serde(borrow)]
    renditions: Vec<RenditionV2<'a>>,
}

/// A string stored as the bytes it shares with the one before it (of the
/// same [`Front`]) and the rest.
type Fronted<'a> = (u16, Cow<'a, str>);

/// Front coding: each string against the previous one. The encoder and
/// the decoder walk the strings in the same order (URIs: each rendition's
/// playlist, segment template or list, init segment, in pod order; words:
/// codecs, resolution), so the decoder always has the string a shared
/// length refers to.
#[derive(Default)]
struct Front {
    prev: String,
}

impl Front {
    fn code<'s>(&mut self, s: &'s str) -> Fronted<'s> {
        let mut n = self
            .prev
            .bytes()
            .zip(s.bytes())
            .take_while(|(a, b)| a == b)
            .count()
            .min(usize::from(u16::MAX));
        while !s.is_char_boundary(n) {
            n = n.saturating_sub(1);
        }
        self.prev.clear();
        self.prev.push_str(s);
        (
            u16::try_from(n).unwrap_or(0),
            Cow::Borrowed(s.get(n..).unwrap_or_default()),
        )
    }

    fn code_owned(&mut self, s: &str) -> Fronted<'static> {
        let (n, rest) = self.code(s);
        (n, Cow::Owned(rest.into_owned()))
    }

    fn decode(&mut self, f: Fronted<'_>) -> Result<String, WireError> {
        Ok(self.decode_in_place(f)?.to_string())
    }

    /// The decoded string, built where the next one is decoded from (no
    /// copy of its own: a segment template is only expanded).
    fn decode_in_place(&mut self, (n, rest): Fronted<'_>) -> Result<&str, WireError> {
        let n = usize::from(n);
        if !self.prev.is_char_boundary(n) || n > self.prev.len() {
            return Err(WireError::Binary(format!("front coding: {n} shared bytes")));
        }
        self.prev.truncate(n);
        self.prev.push_str(&rest);
        Ok(&self.prev)
    }
}

#[derive(Serialize, Deserialize)]
struct RenditionV2<'a> {
    bandwidth: u64,
    #[serde(borrow)]
    codecs: Option<Fronted<'a>>,
    #[serde(borrow)]
    resolution: Option<Fronted<'a>>,
    kind: u8,
    #[serde(borrow)]
    playlist_url: Fronted<'a>,
    cadence_s: f64,
    #[serde(borrow)]
    segments: SegmentsV2<'a>,
    #[serde(borrow)]
    init_uri: Option<Fronted<'a>>,
    key: Option<&'a str>,
}

/// Conditioned ads' segments follow one URI template (`seg{i}.ts`): a
/// template and a count, as in the JSON pods.
#[derive(Serialize, Deserialize)]
enum SegmentsV2<'a> {
    Template {
        #[serde(borrow)]
        template: Fronted<'a>,
        count: u32,
        duration: f64,
    },
    #[serde(borrow)]
    List(Vec<(&'a str, f64, Option<&'a str>)>),
}

/// Hostile input cannot make a decoder allocate more segments than this.
const MAX_SEGMENTS: u32 = 10_000;

impl<'a> RenditionV2<'a> {
    /// Encoded in the order [`RenditionV2::into_rendition`] decodes: URIs
    /// playlist, segments, init; words codecs, resolution.
    fn of(r: &'a AdRendition, urls: &mut Front, words: &mut Front) -> Self {
        let AdRendition {
            bandwidth,
            codecs,
            resolution,
            kind,
            playlist_url,
            cadence_s,
            segments,
            init_uri,
            key,
            memo: _,
        } = r;
        let codecs = codecs.as_deref().map(|c| words.code(c));
        let resolution = resolution.as_deref().map(|c| words.code(c));
        let playlist_url = urls.code(playlist_url);
        let segments = match crate::model::segment_template(segments) {
            Some((template, duration)) => SegmentsV2::Template {
                template: urls.code_owned(&template),
                count: u32::try_from(segments.len()).unwrap_or(u32::MAX),
                duration,
            },
            None => SegmentsV2::List(
                segments
                    .iter()
                    .map(|s| (s.uri.as_str(), s.duration, s.byterange.as_deref()))
                    .collect(),
            ),
        };
        let init_uri = init_uri.as_deref().map(|u| urls.code(u));
        RenditionV2 {
            bandwidth: *bandwidth,
            codecs,
            resolution,
            kind: match kind {
                TrackKind::Muxed => 0,
                TrackKind::Video => 1,
                TrackKind::Audio => 2,
                TrackKind::Subtitles => 3,
            },
            playlist_url,
            cadence_s: *cadence_s,
            segments,
            init_uri,
            key: key.as_deref(),
        }
    }

    fn into_rendition(self, urls: &mut Front, words: &mut Front) -> Result<AdRendition, WireError> {
        let codecs = self.codecs.map(|c| words.decode(c)).transpose()?;
        let resolution = self.resolution.map(|c| words.decode(c)).transpose()?;
        let playlist_url = urls.decode(self.playlist_url)?;
        let segments = match self.segments {
            SegmentsV2::Template {
                template,
                count,
                duration,
            } => {
                if count > MAX_SEGMENTS {
                    return Err(WireError::Binary(format!("{count} segments")));
                }
                crate::model::expand_template(
                    urls.decode_in_place(template)?,
                    usize::try_from(count).unwrap_or(0),
                    duration,
                )
            }
            SegmentsV2::List(list) => list
                .into_iter()
                .map(|(uri, duration, byterange)| AdSegment {
                    uri: uri.to_string(),
                    duration,
                    byterange: byterange.map(str::to_string),
                })
                .collect(),
        };
        let init_uri = self.init_uri.map(|u| urls.decode(u)).transpose()?;
        Ok(AdRendition {
            bandwidth: self.bandwidth,
            codecs,
            resolution,
            kind: match self.kind {
                1 => TrackKind::Video,
                2 => TrackKind::Audio,
                3 => TrackKind::Subtitles,
                _ => TrackKind::Muxed,
            },
            playlist_url,
            cadence_s: self.cadence_s,
            segments,
            init_uri,
            key: self.key.map(str::to_string),
            memo: Default::default(),
        })
    }
}

fn source_code(s: PodSource) -> u8 {
    match s {
        PodSource::Vast => 0,
        PodSource::Library => 1,
        PodSource::Slate => 2,
        PodSource::Api => 3,
    }
}

fn source_of(b: u8) -> Result<PodSource, WireError> {
    Ok(match b {
        0 => PodSource::Vast,
        1 => PodSource::Library,
        2 => PodSource::Slate,
        3 => PodSource::Api,
        other => return Err(WireError::Binary(format!("pod source {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodReason, Tracking};
    use proptest::prelude::*;

    fn rendition(seed: u64, fmp4: bool, template: bool) -> AdRendition {
        AdRendition {
            bandwidth: 300_000 + seed,
            codecs: seed
                .is_multiple_of(2)
                .then(|| "avc1.64001f,mp4a.40.2".into()),
            resolution: (!seed.is_multiple_of(3)).then(|| "1280x720".into()),
            kind: [
                TrackKind::Muxed,
                TrackKind::Video,
                TrackKind::Audio,
                TrackKind::Subtitles,
            ][(seed % 4) as usize],
            playlist_url: format!("https://ads.example/a{seed}/index.m3u8"),
            cadence_s: 1.92,
            segments: (0..(seed % 9))
                .map(|i| AdSegment {
                    uri: format!("https://ads.example/a{seed}/seg{i}.ts"),
                    duration: if template { 1.92 } else { 1.0 + i as f64 / 8.0 },
                    byterange: (!template && i % 2 == 1)
                        .then(|| format!("{}@{}", 100 + i, i * 100)),
                })
                .collect(),
            init_uri: fmp4.then(|| format!("https://ads.example/a{seed}/init.mp4")),
            key: seed
                .is_multiple_of(5)
                .then(|| "METHOD=AES-128,URI=\"https://k.example/k\"".into()),
            memo: Default::default(),
        }
    }

    fn pod(seed: u64) -> Pod {
        Pod {
            pod_id: format!("pod-{seed}"),
            break_id: format!("b{seed}"),
            duration_s: 30.72,
            items: (0..seed % 4)
                .map(|i| PodItem {
                    ad_id: format!("ad{i}"),
                    creative_id: format!("cr{i}"),
                    universal_ad_id: Some("ad-id.org:X".into()),
                    duration_s: 15.015,
                    renditions: (0..3)
                        .map(|r| rendition(seed + i + r, r == 1, r != 2))
                        .collect(),
                    tracking: Tracking {
                        impression: vec!["https://t.example/imp".into()],
                        ..Tracking::default()
                    },
                })
                .collect(),
            slate: Slate {
                slate_id: "slate".into(),
                renditions: vec![rendition(seed, false, true)],
            },
            fill_s: 0.5,
            source: [
                PodSource::Vast,
                PodSource::Library,
                PodSource::Slate,
                PodSource::Api,
            ][(seed % 4) as usize],
            reasons: vec![PodReason::from("ad x skipped".to_string())],
        }
    }

    fn view(seed: u64) -> ChannelView {
        ChannelView {
            entries: (0..seed % 5)
                .map(|i| ViewEntry {
                    record: BreakRecord {
                        id: format!("brk-{seed}-{i}"),
                        source: [
                            BreakSource::Scte35,
                            BreakSource::Manual,
                            BreakSource::Scheduled,
                        ][(i % 3) as usize],
                        anchor_msn: 1000 + i * 40,
                        anchor_pdt_ms: i.is_multiple_of(2).then_some(1_700_000_000_000 + i as i64),
                        duration_ms: 30_000,
                        cadence_ms: 1920,
                        segment_count: 16,
                        cut_after: (i == 2).then_some(7),
                        disc_before: i * 2,
                        merged: if i == 1 { vec![1040] } else { vec![] },
                        registered_ms: 1_700_000_000_000,
                        asset: if i == 3 {
                            [("CAID".to_string(), "0x1234".to_string())].into()
                        } else {
                            BTreeMap::new()
                        },
                        cohorts: if i == 2 {
                            vec!["0a1b2c3d".to_string()]
                        } else {
                            vec![]
                        },
                    },
                    inserted: 2,
                    cohort_inserted: if i == 2 {
                        [("0a1b2c3d".to_string(), 3)].into()
                    } else {
                        BTreeMap::new()
                    },
                })
                .collect(),
            updated_ms: 1_700_000_000_123,
            cohort_disc_base: if seed.is_multiple_of(2) {
                [("ffee0011".to_string(), 9)].into()
            } else {
                BTreeMap::new()
            },
            checked_through_msn: 1200 + seed,
            disc_base: seed % 3,
            origin_mark: seed.is_multiple_of(2).then_some((1200, 1_700_000_000_999)),
        }
    }

    proptest! {
        #[test]
        fn binary_values_round_trip(seed in 0u64..1000) {
            let v = view(seed);
            prop_assert_eq!(decode_view(&encode_view(&v)).unwrap(), v);
            let p = pod(seed);
            prop_assert_eq!(decode_pod(&encode_lean_pod(&p)).unwrap(), lean_pod(&p));
        }

        /// Whatever bytes KV holds, decoding answers (never panics).
        #[test]
        fn hostile_values_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_view(&bytes);
            let _ = decode_pod(&bytes);
        }
    }

    #[test]
    fn json_values_written_before_still_read() {
        let v = view(4);
        let json = serde_json::to_vec(&v).unwrap();
        assert_eq!(decode_view(&json).unwrap(), v);
        let p = pod(3);
        assert_eq!(decode_pod(&serde_json::to_vec(&p).unwrap()).unwrap(), p);
    }

    #[test]
    fn the_lean_pod_keeps_what_the_splice_reads_and_is_smaller() {
        let p = pod(7);
        let lean = lean_pod(&p);
        assert!(lean.items.iter().all(|i| i.tracking == Tracking::default()));
        assert!(lean.reasons.is_empty());
        for (a, b) in lean.items.iter().zip(&p.items) {
            assert_eq!(
                (&a.ad_id, &a.creative_id, &a.renditions),
                (&b.ad_id, &b.creative_id, &b.renditions)
            );
        }
        let bin = encode_lean_pod(&p).len();
        let json = serde_json::to_vec(&p).unwrap().len();
        assert!(bin * 2 < json, "binary {bin} B, JSON {json} B");
    }

    #[test]
    fn front_coding_round_trips_and_refuses_what_it_cannot_resolve() {
        let mut enc = Front::default();
        let words = [
            "https://a.example/ads/j-1920/900000/seg{i}.ts",
            "https://a.example/ads/j-1920/900000/init.mp4",
            "https://a.example/ads/j-1920/1800000/index.m3u8",
            // A shared prefix that would end inside a two-byte character.
            "https://a.example/é/x",
            "https://a.example/è/y",
            "",
            "other",
        ];
        let coded: Vec<(u16, String)> = words
            .iter()
            .map(|w| {
                let (n, rest) = enc.code(w);
                (n, rest.into_owned())
            })
            .collect();
        assert_eq!(coded[1], (36, "init.mp4".into()));
        let mut dec = Front::default();
        for ((n, rest), w) in coded.into_iter().zip(words) {
            assert_eq!(dec.decode((n, Cow::Owned(rest))).unwrap(), w);
        }
        // A shared length past the previous string, or inside a character.
        let mut dec = Front::default();
        assert!(dec.decode((3, Cow::Borrowed("x"))).is_err());
        dec.decode((0, Cow::Borrowed("é"))).unwrap();
        assert!(dec.decode((1, Cow::Borrowed("x"))).is_err());
    }

    /// What the edge reads for a break stays a few KB whatever the ladder:
    /// two 30 s ads and the slate, each in both containers, muxed and
    /// video-only at every rung plus audio (as the conditioner makes them).
    #[test]
    fn a_lean_pod_of_any_ladder_is_a_few_kilobytes() {
        let ladder = |rungs: u64| -> Vec<AdRendition> {
            let job = "https://media.example.com/media/acme/ads/cj-03864cbcb1cbdc02-1920";
            let mut out = Vec::new();
            for fmp4 in [false, true] {
                let ext = if fmp4 { "m4s" } else { "ts" };
                for r in 0..rungs {
                    let bw = 400_000 + r * 900_000;
                    for (kind, dir) in [(TrackKind::Muxed, ""), (TrackKind::Video, "v")] {
                        out.push(AdRendition {
                            bandwidth: bw,
                            codecs: Some("avc1.64001f,mp4a.40.2".into()),
                            resolution: Some(format!("{}x{}", 640 + r * 320, 360 + r * 180)),
                            kind,
                            playlist_url: format!(
                                "{job}/{dir}{bw}{}/index.m3u8",
                                if fmp4 { "f" } else { "" }
                            ),
                            cadence_s: 1.92,
                            segments: (0..16)
                                .map(|i| AdSegment {
                                    uri: format!(
                                        "{job}/{dir}{bw}{}/seg{i}.{ext}",
                                        if fmp4 { "f" } else { "" }
                                    ),
                                    duration: 1.92,
                                    byterange: None,
                                })
                                .collect(),
                            init_uri: fmp4.then(|| format!("{job}/{dir}{bw}f/init.mp4")),
                            key: None,
                            memo: Default::default(),
                        });
                    }
                }
            }
            out
        };
        for rungs in [2u64, 5] {
            let mut p = pod(4);
            p.items.truncate(2);
            for i in &mut p.items {
                i.renditions = ladder(rungs);
            }
            p.slate.renditions = ladder(rungs);
            let lean = encode_lean_pod(&p);
            assert_eq!(decode_pod(&lean).unwrap(), lean_pod(&p));
            let limit = if rungs == 2 { 1_500 } else { 3_000 };
            assert!(lean.len() < limit, "{rungs} rungs: {} bytes", lean.len());
        }
    }

    /// A view decoded for one audience keeps only that cohort's facts and
    /// serves that audience exactly as the whole view does.
    #[test]
    fn a_view_decoded_for_a_cohort_serves_it_as_the_whole_view_does() {
        for seed in 0..12 {
            let v = view(seed);
            let b = encode_view(&v);
            for c in ["", "0a1b2c3d", "ffee0011", "nobody"] {
                let mine = decode_view_as(&b, Some(c)).unwrap();
                assert!(mine
                    .entries
                    .iter()
                    .all(|e| e.record.cohorts.iter().all(|x| x == c)
                        && e.cohort_inserted.keys().all(|x| x == c)));
                assert!(mine.cohort_disc_base.keys().all(|x| x == c));
                for (first, last) in [(900, 1100), (1000, 1010), (1039, 1090)] {
                    // The same breaks, the same counts, the same pods.
                    let served = |view: &ChannelView| {
                        let (needed, base) = view.needed_for(first, last, 0, c);
                        let needed: Vec<_> = needed
                            .into_iter()
                            .map(|(r, d)| (r.id.clone(), d, r.has_cohort(c)))
                            .collect();
                        (needed, base)
                    };
                    assert_eq!(served(&mine), served(&v), "seed {seed} cohort {c:?}");
                }
            }
            assert_eq!(decode_view_as(&b, None).unwrap(), v);
        }
    }

    #[test]
    fn unknown_versions_and_truncations_are_refused() {
        assert_eq!(decode_view(&[]), Err(WireError::Empty));
        assert_eq!(decode_view(&[0x7f, 0]), Err(WireError::Version(0x7f)));
        assert_eq!(decode_pod(&[VIEW_V2]), Err(WireError::Version(VIEW_V2)));
        // The layout before cohorts: not read (the edge asks the DO).
        assert_eq!(decode_view(&[0x01, 0]), Err(WireError::Version(0x01)));
        assert!(matches!(decode_pod(&[POD_V2]), Err(WireError::Binary(_))));
        // The first layout's lean pods: not read (the edge reads the full
        // pod instead).
        assert_eq!(decode_pod(&[0x02, 0]), Err(WireError::Version(0x02)));
        let b = encode_view(&view(3));
        assert!(decode_view(&b[..b.len() - 1]).is_err());
        // A template claiming more segments than any ad has.
        let mut p = pod(1);
        p.items.truncate(0);
        p.slate.renditions = vec![rendition(2, false, true)];
        let mut b = encode_lean_pod(&p);
        assert!(decode_pod(&b).is_ok());
        b.truncate(b.len() - 3);
        assert!(decode_pod(&b).is_err());
    }
}
