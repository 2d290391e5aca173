//! Shared domain records: break records (what the Channel DO sequences and
//! KV carries), decisions/pods (what the decision service returns), and the
//! slot layout both the DO and the splice derive from them.
//!
//! The layout is a pure function of (record, pod) and independent of the
//! variant, which is what keeps every variant spliced at the same MSNs with
//! the same discontinuities: an MSN always names the same segment, the
//! discontinuity sequence counts what left the window, and ABR switching
//! inside a break works (the README's "The stateless splice").

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakSource {
    Scte35,
    Manual,
    Scheduled,
}

/// One ad break, anchored to the content timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakRecord {
    pub id: String,
    pub source: BreakSource,
    /// MSN and PDT of the first content segment of the break.
    pub anchor_msn: u64,
    pub anchor_pdt_ms: Option<i64>,
    /// Planned duration.
    pub duration_ms: u64,
    /// The channel's segment cadence when the break was registered.
    pub cadence_ms: u64,
    /// Content segments the break covers as planned.
    pub segment_count: u32,
    /// Early end (CUE-IN, `/cue stop`, cancel): segments actually covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_after: Option<u32>,
    /// Discontinuities inserted by all earlier breaks of the channel
    /// (assigned by the Channel DO, the sequencer).
    pub disc_before: u64,
    /// Of this break's discontinuity MSNs, those where the origin has its
    /// own EXT-X-DISCONTINUITY: one tag carries both, and the origin's
    /// DISCONTINUITY-SEQUENCE already counts it (learned by the sequencer
    /// from the windows it examines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<u64>,
    /// When the sequencer registered it (epoch ms).
    pub registered_ms: i64,
    /// `EXT-X-ASSET` metadata of the break (for `[asset.KEY]` macros).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub asset: std::collections::BTreeMap<String, String>,
    /// The audience cohorts with a pod of their own for this break
    /// (sorted): those active on the channel when the break was
    /// registered, whose decision succeeded. Fixed before the record is
    /// published, so every edge that knows the break knows which pod each
    /// cohort gets; a cohort not named gets the default pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cohorts: Vec<String>,
}

impl BreakRecord {
    /// Does cohort `c` have a pod of its own for this break?
    pub fn has_cohort(&self, c: &str) -> bool {
        !c.is_empty() && self.cohorts.binary_search_by(|x| x.as_str().cmp(c)).is_ok()
    }

    /// Segments the break covers now (planned, or cut).
    pub fn covered(&self) -> u32 {
        self.cut_after
            .map_or(self.segment_count, |c| c.min(self.segment_count))
    }
    /// MSN of the first content segment after the break.
    pub fn end_msn(&self) -> u64 {
        self.anchor_msn.saturating_add(u64::from(self.covered()))
    }
    pub fn contains(&self, msn: u64) -> bool {
        msn >= self.anchor_msn && msn < self.end_msn()
    }
}

/// Segments a planned duration covers at a cadence: rounded to the nearest
/// whole segment (encoders' durations are 29.97 for 30), at least one.
pub fn segments_for(duration_ms: u64, cadence_ms: u64) -> u32 {
    let rounded = duration_ms
        .saturating_add(cadence_ms / 2)
        .checked_div(cadence_ms)
        .unwrap_or(1);
    u32::try_from(rounded.max(1)).unwrap_or(u32::MAX)
}

/// How far past whole segments a creative may run and still take no further
/// segment: half a frame at 25 fps. The conditioner's frame-rate conversion
/// drops anything shorter than half an output frame anyway, so no frame of
/// the creative is lost below it; an audio track a few ms longer than the
/// video (AAC priming) does not cost the ad a whole padded segment.
pub const AD_TAIL_TOLERANCE_MS: u64 = 20;

/// Segments an ad of this length takes at a cadence: every frame plays, so
/// it is rounded *up* (a 15 s spot at 1.92 s is 8 segments, its last one
/// padded by 0.36 s), at least one. The one rule the conditioner cuts by,
/// the decision checks renditions by, the pod packs by and the splice lays
/// out by. Breaks are not ads: their length is [`segments_for`].
pub fn ad_segments(duration_ms: u64, cadence_ms: u64) -> u32 {
    if cadence_ms == 0 {
        return 1;
    }
    let over = duration_ms.saturating_sub(AD_TAIL_TOLERANCE_MS);
    over.div_ceil(cadence_ms).clamp(1, u32::MAX as u64) as u32
}

/// The padding an ad of this length carries at a cadence (ms): what its
/// last segment holds beyond the creative, under one segment.
pub fn ad_padding_ms(duration_ms: u64, cadence_ms: u64) -> u64 {
    (u64::from(ad_segments(duration_ms, cadence_ms)).saturating_mul(cadence_ms))
        .saturating_sub(duration_ms)
}

impl PodItem {
    /// The ad's length in whole segments at a cadence ([`ad_segments`]).
    pub fn segments_at(&self, cadence_ms: u64) -> u32 {
        ad_segments(secs_to_ms(self.duration_s), cadence_ms)
    }
}

/// `n` in decimal, written into the end of `buf` (numbers in URIs and
/// EXTINFs on the hot path, without the formatter).
pub(crate) fn decimal(n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i = i.saturating_sub(1);
        if let Some(b) = buf.get_mut(i) {
            *b = b'0'.saturating_add((n % 10) as u8);
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    std::str::from_utf8(buf.get(i..).unwrap_or_default()).unwrap_or_default()
}

/// Seconds (as VAST and the library carry them) to whole milliseconds;
/// negative or non-finite values are 0.
pub fn secs_to_ms(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        (s * 1000.0).round() as u64
    } else {
        0
    }
}

/// A break record with its decision: the unit KV and the DO carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakEntry {
    pub record: BreakRecord,
    pub pod: Pod,
    /// The pods of the cohorts named in `record.cohorts`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cohort_pods: BTreeMap<String, Pod>,
}

impl BreakEntry {
    /// The pod cohort `c` gets ("" is the default audience).
    pub fn pod_for(&self, c: &str) -> &Pod {
        if self.record.has_cohort(c) {
            self.cohort_pods.get(c).unwrap_or(&self.pod)
        } else {
            &self.pod
        }
    }

    /// Discontinuities this break inserts for cohort `c`.
    pub fn inserted_for(&self, c: &str) -> u64 {
        inserted_discontinuities(&self.record, self.pod_for(c))
    }
}

/// The channel's break records in view (one KV key per channel).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelBreaks {
    pub entries: Vec<BreakEntry>,
    /// When the sequencer wrote this value (epoch ms).
    pub updated_ms: i64,
    /// The newest origin MSN the sequencer has examined for cues. A reader
    /// whose window starts after it cannot rule out a break that began and
    /// ended unseen (KV lag): it must ask the sequencer.
    #[serde(default)]
    pub checked_through_msn: u64,
    /// Discontinuities inserted before the first entry in view when no
    /// entry is: the running count carried across an origin restart
    /// (whose old entries leave the view), see `channel`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disc_base: u64,
    /// A point (MSN, PDT) of the origin timeline this view was made for:
    /// a window whose mapping disagrees is another origin epoch, which
    /// this view cannot vouch for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_mark: Option<(u64, i64)>,
    /// The running discontinuity count before the first entry of each
    /// cohort whose count differs from `disc_base` (its own pods inserted
    /// another number of discontinuities than the default's). See
    /// [`cohort_disc_before`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cohort_disc_base: BTreeMap<String, u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How far a break's recorded PDT may sit from the window's PDT at the
/// same MSN and still be the same break: generous, because origins drift,
/// re-stamp PDT after gaps and signal CONT cues a segment off; an origin
/// restart or failover moves the MSN↔PDT mapping by minutes to hours. Over
/// long distances 1 % of the distance is allowed on top (segment durations
/// are not exactly the cadence).
pub const PDT_TOLERANCE_MS: i64 = 60_000;

impl BreakRecord {
    /// Does this record name the same content as a window where segment
    /// `msn` starts at `pdt_ms` (cadence `cadence_ms`)? Both PDTs known:
    /// the projection of the anchor must agree; otherwise MSN alone.
    pub fn agrees_with(&self, msn: u64, pdt_ms: Option<i64>, cadence_ms: u64) -> bool {
        let (Some(anchor_pdt), Some(pdt)) = (self.anchor_pdt_ms, pdt_ms) else {
            return true;
        };
        mapping_agrees(self.anchor_msn, anchor_pdt, msn, pdt, cadence_ms)
    }
}

/// Do two (MSN, PDT) points lie on one timeline at `cadence_ms` per
/// segment (within [`PDT_TOLERANCE_MS`] + 1 % of the distance)?
pub fn mapping_agrees(msn_a: u64, pdt_a: i64, msn_b: u64, pdt_b: i64, cadence_ms: u64) -> bool {
    // In i128 a step count (< 2^64) times a cadence (< 2^64) can still
    // reach 2^128: saturating keeps such a mapping disagreeing, as it is.
    let steps = i128::from(msn_b).saturating_sub(i128::from(msn_a));
    let span = steps.saturating_mul(i128::from(cadence_ms.max(1)));
    let expected = i128::from(pdt_a).saturating_add(span);
    expected.saturating_sub(i128::from(pdt_b)).saturating_abs()
        <= i128::from(PDT_TOLERANCE_MS).saturating_add(span.saturating_abs() / 100)
}

/// Whether a view examined through `checked_through_msn` on the origin
/// timeline `origin_mark` can vouch for a window (`first_msn`, and its
/// last segment's MSN and PDT): no MSN before the window is unexamined, and
/// the window is on that timeline (after an origin restart or failover a
/// stale copy must not be trusted: ask the sequencer).
fn vouches(
    checked_through_msn: u64,
    origin_mark: Option<(u64, i64)>,
    first_msn: u64,
    last: Option<(u64, i64)>,
    cadence_ms: u64,
) -> bool {
    let same_epoch = match (origin_mark, last) {
        (Some((m, p)), Some((l, q))) => {
            l.saturating_add(3) >= m && mapping_agrees(m, p, l, q, cadence_ms)
        }
        _ => true,
    };
    same_epoch && checked_through_msn.saturating_add(1) >= first_msn
}

impl ChannelBreaks {
    /// See [`ChannelView::vouches_for`].
    pub fn vouches_for(&self, first_msn: u64, last: Option<(u64, i64)>, cadence_ms: u64) -> bool {
        vouches(
            self.checked_through_msn,
            self.origin_mark,
            first_msn,
            last,
            cadence_ms,
        )
    }

    /// The published view: records without pods (each pod is its own,
    /// immutable KV key), with what each break inserts.
    pub fn view(&self) -> ChannelView {
        ChannelView {
            entries: self
                .entries
                .iter()
                .map(|e| ViewEntry {
                    record: e.record.clone(),
                    inserted: inserted_discontinuities(&e.record, &e.pod),
                    cohort_inserted: e
                        .record
                        .cohorts
                        .iter()
                        .map(|c| (c.clone(), e.inserted_for(c)))
                        .collect(),
                })
                .collect(),
            updated_ms: self.updated_ms,
            checked_through_msn: self.checked_through_msn,
            disc_base: self.disc_base,
            origin_mark: self.origin_mark,
            cohort_disc_base: self.cohort_disc_base.clone(),
        }
    }

    /// Cohort `c`'s running discontinuity count before the first entry,
    /// and after the last one.
    pub fn cohort_counts(&self, c: &str) -> (u64, u64) {
        let base = cohort_base(&self.cohort_disc_base, self.disc_base, c);
        let end = self
            .entries
            .iter()
            .map(|e| e.inserted_for(c))
            .fold(base, u64::saturating_add);
        (base, end)
    }

    /// The breaks as cohort `c` is served them: each entry with the
    /// cohort's pod and its running discontinuity count (what a DO answer
    /// to one of its viewers carries; the edge splices it as it is). The
    /// default audience ("") gets the breaks unchanged.
    pub fn for_cohort(&self, c: &str) -> ChannelBreaks {
        let mut running = cohort_base(&self.cohort_disc_base, self.disc_base, c);
        let disc_base = running;
        let entries = self
            .entries
            .iter()
            .map(|e| {
                let mut record = e.record.clone();
                if !c.is_empty() {
                    record.disc_before = running;
                }
                running = record.disc_before.saturating_add(e.inserted_for(c));
                BreakEntry {
                    record,
                    pod: e.pod_for(c).clone(),
                    cohort_pods: BTreeMap::new(),
                }
            })
            .collect();
        ChannelBreaks {
            entries,
            updated_ms: self.updated_ms,
            checked_through_msn: self.checked_through_msn,
            disc_base,
            origin_mark: self.origin_mark,
            cohort_disc_base: BTreeMap::new(),
        }
    }
}

/// A cohort's running count before the first entry: its own when it has
/// one, else the default audience's.
fn cohort_base(bases: &BTreeMap<String, u64>, disc_base: u64, c: &str) -> u64 {
    if c.is_empty() {
        return disc_base;
    }
    bases.get(c).copied().unwrap_or(disc_base)
}

/// What every playlist request reads first (one small KV key per
/// channel): the break records in view, the watermark and the running
/// discontinuity count, never the pods (read only for the breaks a window
/// touches, under their own immutable keys). Bounded by what a window can
/// need: entries leave it `keep_ms` after their end, whatever the
/// channel's age.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelView {
    pub entries: Vec<ViewEntry>,
    pub updated_ms: i64,
    #[serde(default)]
    pub checked_through_msn: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disc_base: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_mark: Option<(u64, i64)>,
    /// See [`ChannelBreaks::cohort_disc_base`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cohort_disc_base: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewEntry {
    #[serde(flatten)]
    pub record: BreakRecord,
    /// Discontinuities this break inserts (needs its pod to compute).
    pub inserted: u64,
    /// The same for each cohort with a pod of its own (`record.cohorts`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cohort_inserted: BTreeMap<String, u64>,
}

impl ViewEntry {
    /// Discontinuities this break inserts for cohort `c`.
    pub fn inserted_for(&self, c: &str) -> u64 {
        if self.record.has_cohort(c) {
            self.cohort_inserted
                .get(c)
                .copied()
                .unwrap_or(self.inserted)
        } else {
            self.inserted
        }
    }
}

impl ChannelView {
    /// Whether this (possibly stale) view can vouch for a window.
    pub fn vouches_for(&self, first_msn: u64, last: Option<(u64, i64)>, cadence_ms: u64) -> bool {
        vouches(
            self.checked_through_msn,
            self.origin_mark,
            first_msn,
            last,
            cadence_ms,
        )
    }

    pub fn records(&self) -> Vec<&BreakRecord> {
        self.entries.iter().map(|e| &e.record).collect()
    }

    pub fn find(&self, id: &str) -> Option<&BreakRecord> {
        self.entries.iter().map(|e| &e.record).find(|r| r.id == id)
    }

    /// The breaks a window `first_msn..=last_msn` needs spliced (those it
    /// overlaps, those ending at its first segment, those up to
    /// `ahead` segments after it for SGAI announcements), and the running
    /// discontinuity count before the first of them.
    pub fn needed(&self, first_msn: u64, last_msn: u64, ahead: u64) -> (Vec<&BreakRecord>, u64) {
        let (needed, base) = self.needed_for(first_msn, last_msn, ahead, "");
        (needed.into_iter().map(|(r, _)| r).collect(), base)
    }

    /// [`ChannelView::needed`] as cohort `c` is served: each break with
    /// the cohort's running discontinuity count before it, and the count
    /// before the first of them. A cohort's count runs from its own base
    /// ([`ChannelBreaks::cohort_disc_base`]) through what each break
    /// inserts with the cohort's pod, so its viewers' discontinuity
    /// sequence never moves except by what leaves their window; the
    /// default audience's is the records' own `disc_before`.
    pub fn needed_for(
        &self,
        first_msn: u64,
        last_msn: u64,
        ahead: u64,
        c: &str,
    ) -> (Vec<(&BreakRecord, u64)>, u64) {
        let own = !c.is_empty()
            && (self.cohort_disc_base.contains_key(c)
                || self.entries.iter().any(|e| e.record.has_cohort(c)));
        let mut running = cohort_base(&self.cohort_disc_base, self.disc_base, c);
        let mut base = running;
        let mut out = Vec::new();
        for e in &self.entries {
            let r = &e.record;
            let before = if own { running } else { r.disc_before };
            let inserted = e.inserted_for(c);
            running = before.saturating_add(inserted);
            if r.end_msn() < first_msn {
                base = running;
            } else if r.anchor_msn <= last_msn.saturating_add(ahead).saturating_add(1) {
                out.push((r, before));
            }
        }
        (out, base)
    }
}

/// A VAST tracking event kind (what a beacon reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "camelCase")]
pub enum TrackingEvent {
    Impression,
    Start,
    FirstQuartile,
    Midpoint,
    ThirdQuartile,
    Complete,
    Error,
}

impl TrackingEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackingEvent::Impression => "impression",
            TrackingEvent::Start => "start",
            TrackingEvent::FirstQuartile => "firstQuartile",
            TrackingEvent::Midpoint => "midpoint",
            TrackingEvent::ThirdQuartile => "thirdQuartile",
            TrackingEvent::Complete => "complete",
            TrackingEvent::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Tracking {
    #[serde(default)]
    pub impression: Vec<String>,
    #[serde(default)]
    pub start: Vec<String>,
    #[serde(default, rename = "firstQuartile")]
    pub first_quartile: Vec<String>,
    #[serde(default)]
    pub midpoint: Vec<String>,
    #[serde(default, rename = "thirdQuartile")]
    pub third_quartile: Vec<String>,
    #[serde(default)]
    pub complete: Vec<String>,
    #[serde(default)]
    pub error: Vec<String>,
}

impl Tracking {
    /// Every event kind's URL list, impressions first: when a budget runs
    /// out, what is paid for keeps its URLs longest.
    pub fn lists_mut(&mut self) -> [(TrackingEvent, &mut Vec<String>); 7] {
        use TrackingEvent as E;
        [
            (E::Impression, &mut self.impression),
            (E::Start, &mut self.start),
            (E::FirstQuartile, &mut self.first_quartile),
            (E::Midpoint, &mut self.midpoint),
            (E::ThirdQuartile, &mut self.third_quartile),
            (E::Complete, &mut self.complete),
            (E::Error, &mut self.error),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdSegment {
    pub uri: String,
    pub duration: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byterange: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// Video with muxed audio (or video only).
    #[default]
    Muxed,
    /// Video only, its audio in an `EXT-X-MEDIA` audio group (a demuxed
    /// channel's variant, or an ad's video-only rendition).
    Video,
    /// An `EXT-X-MEDIA` `TYPE=AUDIO` rendition, or an ad's audio-only one.
    Audio,
    Subtitles,
}

/// One HLS rendition of an ad (or of the slate), already conditioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdRendition {
    pub bandwidth: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codecs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(default)]
    pub kind: TrackKind,
    pub playlist_url: String,
    /// Segment cadence in seconds.
    pub cadence_s: f64,
    /// Stored compactly (a URI template and a count) when the segments
    /// follow one, as conditioned ads do: a pod is then a third of the
    /// bytes to read and decode on the playback path.
    #[serde(with = "segments_codec")]
    pub segments: Vec<AdSegment>,
    /// fMP4 init segment (EXT-X-MAP URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_uri: Option<String>,
    /// The ad's EXT-X-KEY attribute list, when encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// [`AdRendition::verdict`], worked out on first use (never stored).
    #[serde(skip)]
    pub memo: Memo,
}

/// What the splice needs to know of a rendition before choosing it, worked
/// out once per value: [`AdRendition::check`] walks every URI, and the
/// manifest worker keeps each decoded pod for its isolate's lifetime, so
/// without this every playlist request of a break re-checked the same
/// bytes (a fifth of a request's splice). A clone starts empty (it may be
/// changed before use); a value must not be changed after its first
/// [`AdRendition::verdict`] (pods are immutable once decided).
#[derive(Default)]
pub struct Memo(std::sync::OnceLock<Verdict>);

/// [`AdRendition::check`]'s result and the longest segment, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub check: Result<(), RenditionError>,
    pub longest_s: f64,
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

/// A cache, not a part of the value: two renditions are equal by their
/// fields.
impl PartialEq for Memo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

impl AdRendition {
    /// [`AdRendition::check`] and the longest segment, once per value (see
    /// [`Memo`]).
    pub fn verdict(&self) -> &Verdict {
        self.memo.0.get_or_init(|| Verdict {
            check: self.check(),
            longest_s: self.segments.iter().map(|s| s.duration).fold(0.0, f64::max),
        })
    }

    /// Is this rendition safe to put into a playlist we serve? Its fields
    /// come from an org's API calls or a third party's ad playlist, and
    /// they land in our playlists and `Location` headers: every URI must be
    /// an http(s) or relative URI without control characters, quotes or
    /// spaces (a lone CR would start a new playlist line); codecs,
    /// resolution and key attributes must not break out of their quotes or
    /// line. Checked when written and again when rendered.
    pub fn check(&self) -> Result<(), RenditionError> {
        safe_uri(&self.playlist_url).map_err(RenditionError::PlaylistUrl)?;
        if let Some(u) = &self.init_uri {
            safe_uri(u).map_err(RenditionError::InitUri)?;
        }
        for (index, seg) in self.segments.iter().enumerate() {
            safe_uri(&seg.uri).map_err(|error| RenditionError::SegmentUri { index, error })?;
            if !(seg.duration.is_finite() && seg.duration > 0.0) {
                return Err(RenditionError::SegmentDuration(index));
            }
            if let Some(b) = &seg.byterange {
                if b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit() || c == b'@') {
                    return Err(RenditionError::SegmentByterange(index));
                }
            }
        }
        if let Some(c) = &self.codecs {
            if !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b',' | b'-' | b'+' | b' '))
            {
                return Err(RenditionError::Codecs);
            }
        }
        if let Some(r) = &self.resolution {
            let ok = r.split_once('x').is_some_and(|(w, h)| {
                !w.is_empty()
                    && !h.is_empty()
                    && (w.bytes().chain(h.bytes())).all(|b| b.is_ascii_digit())
            });
            if !ok {
                return Err(RenditionError::Resolution);
            }
        }
        if let Some(k) = &self.key {
            if !k.starts_with("METHOD=") || k.bytes().any(|b| b.is_ascii_control()) {
                return Err(RenditionError::Key);
            }
        }
        if !(self.cadence_s.is_finite() && self.cadence_s >= 0.0) {
            return Err(RenditionError::Cadence);
        }
        Ok(())
    }
}

/// Why an ad rendition may not be rendered ([`AdRendition::check`]); the
/// message names the field, as the API's 400s and pod reasons show it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenditionError {
    #[error("playlist_url: {0}")]
    PlaylistUrl(UnsafeUri),
    #[error("init_uri: {0}")]
    InitUri(UnsafeUri),
    #[error("segments[{index}].uri: {error}")]
    SegmentUri { index: usize, error: UnsafeUri },
    #[error("segments[{0}].duration: must be > 0")]
    SegmentDuration(usize),
    #[error("segments[{0}].byterange: n[@o]")]
    SegmentByterange(usize),
    #[error("codecs: only RFC 6381 codec strings")]
    Codecs,
    #[error("resolution: WIDTHxHEIGHT")]
    Resolution,
    #[error("key: an EXT-X-KEY attribute list starting METHOD=")]
    Key,
    #[error("cadence_s: must be a number of seconds")]
    Cadence,
}

/// Why a URI may not be written ([`safe_uri`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeUri {
    #[error("must be 1-2048 bytes")]
    Length,
    #[error("byte 0x{0:02x} is not allowed in a URI")]
    Byte(u8),
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
}

/// A URI we may write into a playlist line, a quoted attribute or a
/// `Location` header: 1–2048 bytes, no controls, spaces, quotes or angle
/// brackets, and either relative or http(s) (never `javascript:`, `data:`).
pub fn safe_uri(u: &str) -> Result<(), UnsafeUri> {
    if u.is_empty() || u.len() > 2048 {
        return Err(UnsafeUri::Length);
    }
    let bad = |b: u8| b <= b' ' || b >= 0x7f || matches!(b, b'"' | b'<' | b'>' | b'\\');
    // Every byte, without an early exit: the compiler vectorises this, and
    // it runs for every URI of every rendition a splice considers (the
    // found-early search was a fifth of a whole request's time).
    if u.bytes().fold(false, |any, b| any | bad(b)) {
        if let Some(b) = u.bytes().find(|&b| bad(b)) {
            return Err(UnsafeUri::Byte(b));
        }
    }
    // A scheme is what precedes the first ':' when no '/', '?' or '#' comes
    // before it (RFC 3986 §3.1); anything else is a relative reference.
    let end = u.find([':', '/', '?', '#']);
    if let Some(i) = end.filter(|&i| u.as_bytes().get(i) == Some(&b':')) {
        let scheme = u.get(..i).unwrap_or("");
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return Err(UnsafeUri::Scheme(scheme.to_string()));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodItem {
    pub ad_id: String,
    pub creative_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub universal_ad_id: Option<String>,
    pub duration_s: f64,
    pub renditions: Vec<AdRendition>,
    #[serde(default)]
    pub tracking: Tracking,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Slate {
    #[serde(default)]
    pub slate_id: String,
    pub renditions: Vec<AdRendition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSource {
    Vast,
    Library,
    Slate,
    Api,
}

/// The decision for one break: made once, never changed. On the wire (the
/// decision service's answer, KV) `reasons` stays the list of messages
/// people and older readers know, and `reason_codes` carries each one's
/// code in the same order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "PodWire")]
pub struct Pod {
    pub pod_id: String,
    pub break_id: String,
    pub duration_s: f64,
    pub items: Vec<PodItem>,
    pub slate: Slate,
    pub fill_s: f64,
    pub source: PodSource,
    /// Why ads were skipped or the break fell back (`ads::reason`).
    pub reasons: Vec<PodReason>,
}

impl Pod {
    /// A pod of slate only: what a break gets when every ad source failed.
    pub fn slate_only(
        break_id: &str,
        duration_s: f64,
        slate: Slate,
        reason: impl Into<PodReason>,
    ) -> Pod {
        Pod {
            pod_id: format!("slate-{break_id}"),
            break_id: break_id.to_string(),
            duration_s,
            items: Vec::new(),
            slate,
            fill_s: duration_s,
            source: PodSource::Slate,
            reasons: vec![reason.into()],
        }
    }
}

/// One reason of a pod as stored: the stable code metrics count (an
/// `ads::reason::Reason`'s) and the message people read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReason {
    /// A [`crate::ads::reason::Reason`]'s code: static when made here,
    /// owned only when read back from a stored pod.
    pub code: std::borrow::Cow<'static, str>,
    pub message: String,
}

impl PodReason {
    /// The code of a reason stored without one: a pod written before
    /// reasons had codes (the decision cache, a stored break).
    pub const UNKNOWN: &'static str = "unknown";
}

/// A reason from before codes: its text, with code [`PodReason::UNKNOWN`].
impl From<String> for PodReason {
    fn from(message: String) -> PodReason {
        PodReason {
            code: PodReason::UNKNOWN.into(),
            message,
        }
    }
}

impl std::fmt::Display for PodReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// [`Pod`] as read: messages and codes apart; a pod without codes (or
/// with fewer codes than messages) reads as [`PodReason::UNKNOWN`].
#[derive(Deserialize)]
struct PodWire {
    pod_id: String,
    break_id: String,
    duration_s: f64,
    items: Vec<PodItem>,
    #[serde(default)]
    slate: Slate,
    fill_s: f64,
    source: PodSource,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    reason_codes: Vec<String>,
}

impl From<PodWire> for Pod {
    fn from(w: PodWire) -> Pod {
        let mut codes = w.reason_codes.into_iter();
        let reasons = w
            .reasons
            .into_iter()
            .map(|message| PodReason {
                code: codes
                    .next()
                    .map_or(PodReason::UNKNOWN.into(), std::borrow::Cow::Owned),
                message,
            })
            .collect();
        Pod {
            pod_id: w.pod_id,
            break_id: w.break_id,
            duration_s: w.duration_s,
            items: w.items,
            slate: w.slate,
            fill_s: w.fill_s,
            source: w.source,
            reasons,
        }
    }
}

/// Written borrowed (pods are written often, e.g. with the channel's
/// state), in [`PodWire`]'s shape.
impl Serialize for Pod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Each<'a>(&'a [PodReason], fn(&PodReason) -> &str);
        impl Serialize for Each<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(self.1))
            }
        }
        #[derive(Serialize)]
        struct Out<'a> {
            pod_id: &'a str,
            break_id: &'a str,
            duration_s: f64,
            items: &'a [PodItem],
            slate: &'a Slate,
            fill_s: f64,
            source: PodSource,
            reasons: Each<'a>,
            reason_codes: Each<'a>,
        }
        // Every field named: a field added to `Pod` fails to compile here.
        let Pod {
            pod_id,
            break_id,
            duration_s,
            items,
            slate,
            fill_s,
            source,
            reasons,
        } = self;
        Out {
            pod_id,
            break_id,
            duration_s: *duration_s,
            items,
            slate,
            fill_s: *fill_s,
            source: *source,
            reasons: Each(reasons, |r| &r.message),
            reason_codes: Each(reasons, |r| &r.code),
        }
        .serialize(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// Index into `Pod::items`.
    Ad(usize),
    Slate,
}

/// A run of break segments filled by one ad (or the slate). `start` is the
/// index within the break (0 = the anchor segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub start: u32,
    pub len: u32,
    pub kind: SlotKind,
}

/// The slots of a break: whole ads in pod order at the record's cadence,
/// slate for what is left, cut at an early end.
pub fn layout(record: &BreakRecord, pod: &Pod) -> Vec<Slot> {
    let planned = record.segment_count;
    let mut slots = Vec::with_capacity(pod.items.len().saturating_add(1));
    let mut cursor = 0u32;
    for (i, item) in pod.items.iter().enumerate() {
        let k = item.segments_at(record.cadence_ms);
        if let Some(end) = cursor.checked_add(k).filter(|&e| e <= planned) {
            slots.push(Slot {
                start: cursor,
                len: k,
                kind: SlotKind::Ad(i),
            });
            cursor = end;
        }
    }
    if let Some(rest) = planned.checked_sub(cursor).filter(|&r| r > 0) {
        slots.push(Slot {
            start: cursor,
            len: rest,
            kind: SlotKind::Slate,
        });
    }
    let n = record.covered();
    slots.retain(|s| s.start < n);
    if let Some(last) = slots.last_mut() {
        // retain kept only slots starting before n.
        last.len = last.len.min(n.saturating_sub(last.start));
    }
    slots
}

/// Discontinuities a break inserts in total: one per slot and one on the
/// return to content.
pub fn inserted_discontinuities(record: &BreakRecord, pod: &Pod) -> u64 {
    let slots = layout(record, pod);
    discontinuity_msns(record, &slots)
        .filter(|m| !record.merged.contains(m))
        .count() as u64
}

/// MSNs at which a break puts a discontinuity (slot starts, return).
pub fn discontinuity_msns<'a>(
    record: &'a BreakRecord,
    slots: &'a [Slot],
) -> impl Iterator<Item = u64> + 'a {
    let ret = (!slots.is_empty()).then(|| record.end_msn());
    slots
        .iter()
        .map(move |s| record.anchor_msn.saturating_add(u64::from(s.start)))
        .chain(ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_as_a_plain_replace_would() {
        for t in [
            "https://c/ad/seg{i}.ts?t=1",
            "{i}/{i}.ts",
            "no-index.ts",
            "{i}",
            "",
        ] {
            let got = super::segments_codec::expand(t, 12, 2.0);
            let want: Vec<String> = (0..12).map(|i| t.replace("{i}", &i.to_string())).collect();
            assert_eq!(
                got.iter().map(|s| s.uri.clone()).collect::<Vec<_>>(),
                want,
                "{t}"
            );
        }
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), u64::MAX.to_string());
        assert_eq!(decimal(0, &mut [0; 20]), "0");
    }

    #[test]
    fn segments_round_trip_compactly() {
        let mk = |uris: &[&str]| AdRendition {
            bandwidth: 1,
            codecs: None,
            resolution: None,
            kind: TrackKind::Muxed,
            playlist_url: "p".into(),
            cadence_s: 2.0,
            segments: uris
                .iter()
                .map(|u| AdSegment {
                    uri: u.to_string(),
                    duration: 2.0,
                    byterange: None,
                })
                .collect(),
            init_uri: None,
            key: None,
            memo: Default::default(),
        };
        let names: Vec<String> = (0..12)
            .map(|i| format!("https://c/ad/seg{i}.ts?t=1"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let r = mk(&refs);
        let j = serde_json::to_string(&r).unwrap();
        assert!(
            j.contains("\"template\":\"https://c/ad/seg{i}.ts?t=1\""),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<AdRendition>(&j).unwrap(), r);
        // Not a template: kept as a list, and read back the same.
        for odd in [
            &["a/0/x0.ts", "a/1/x1.ts"][..],
            &["s0.ts", "s1.ts", "s3.ts"],
            &["one.ts"],
            &["s{i}0.ts", "s{i}1.ts"],
        ] {
            let r = mk(odd);
            let j = serde_json::to_string(&r).unwrap();
            assert!(!j.contains("template"), "{j}");
            assert_eq!(serde_json::from_str::<AdRendition>(&j).unwrap(), r);
        }
        let huge = r#"{"bandwidth":1,"playlist_url":"p","cadence_s":2,"segments":{"template":"{i}","count":99999999,"duration":2}}"#;
        assert!(serde_json::from_str::<AdRendition>(huge).is_err());
    }

    #[test]
    fn unsafe_rendition_fields_are_refused() {
        for ok in [
            "https://cdn.example/a/1.ts",
            "/media/demo/ad1/1.ts",
            "seg1.ts?x=1:2",
            "HTTP://x/y",
        ] {
            assert!(safe_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "javascript:alert(1)",
            "data:text/html,x",
            "https://x/a.ts\r#EXT-X-ENDLIST",
            "https://x/a.ts\n",
            "https://x/a\".ts",
            "https://x/a b.ts",
            "file:///etc/passwd",
        ] {
            assert!(safe_uri(bad).is_err(), "{bad:?}");
        }
        let good = AdRendition {
            bandwidth: 1,
            codecs: Some("avc1.64001f,mp4a.40.2".into()),
            resolution: Some("1280x720".into()),
            kind: TrackKind::Muxed,
            playlist_url: "https://x/p.m3u8".into(),
            cadence_s: 2.0,
            segments: vec![AdSegment {
                uri: "a.ts".into(),
                duration: 2.0,
                byterange: None,
            }],
            init_uri: None,
            key: None,
            memo: Default::default(),
        };
        assert!(good.check().is_ok());
        // The verdict is the check's, worked out once; a clone starts
        // afresh (it may be changed), and the memo is not part of equality.
        assert_eq!(good.verdict().check, Ok(()));
        assert_eq!(good.verdict().longest_s, 2.0);
        let mut bad = good.clone();
        bad.segments[0].uri = "javascript:alert(1)".into();
        assert!(bad.verdict().check.is_err(), "a changed clone is checked");
        assert_eq!(good, good.clone());
        let mut r = good.clone();
        r.codecs = Some("avc1\",x=\"".into());
        assert!(r.check().is_err());
        let mut r = good.clone();
        r.resolution = Some("1x1\n#EXT-X-ENDLIST".into());
        assert!(r.check().is_err());
        let mut r = good.clone();
        r.key = Some("METHOD=NONE\r#EXT-X-ENDLIST".into());
        assert!(r.check().is_err());
        let mut r = good.clone();
        r.segments[0].uri = "https://x/a.ts\r".into();
        assert!(r
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("segments[0].uri"));
        let mut r = good;
        r.init_uri = Some("javascript:x".into());
        assert!(r.check().is_err());
    }

    pub(crate) fn rec(anchor: u64, segs: u32) -> BreakRecord {
        BreakRecord {
            id: "b".into(),
            source: BreakSource::Scte35,
            anchor_msn: anchor,
            anchor_pdt_ms: None,
            duration_ms: segs as u64 * 2000,
            cadence_ms: 2000,
            segment_count: segs,
            cut_after: None,
            disc_before: 0,
            merged: vec![],
            registered_ms: 0,
            asset: Default::default(),
            cohorts: Vec::new(),
        }
    }

    fn item(d: f64) -> PodItem {
        PodItem {
            ad_id: "a".into(),
            creative_id: "c".into(),
            universal_ad_id: None,
            duration_s: d,
            renditions: vec![],
            tracking: Tracking::default(),
        }
    }

    #[test]
    fn whole_ads_then_slate_then_cut() {
        let mut pod = Pod::slate_only("b", 30.0, Slate::default(), String::new());
        pod.items = vec![item(10.0), item(30.0), item(6.0)];
        let mut r = rec(100, 15);
        let s = layout(&r, &pod);
        assert_eq!(
            s,
            vec![
                Slot {
                    start: 0,
                    len: 5,
                    kind: SlotKind::Ad(0)
                },
                Slot {
                    start: 5,
                    len: 3,
                    kind: SlotKind::Ad(2)
                },
                Slot {
                    start: 8,
                    len: 7,
                    kind: SlotKind::Slate
                },
            ]
        );
        assert_eq!(inserted_discontinuities(&r, &pod), 4);
        r.cut_after = Some(6);
        let s = layout(&r, &pod);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].len, 1);
        assert_eq!(
            discontinuity_msns(&r, &s).collect::<Vec<_>>(),
            vec![100, 105, 106]
        );
        r.cut_after = Some(0);
        assert_eq!(inserted_discontinuities(&r, &pod), 0);
    }

    #[test]
    fn segments_round_to_nearest() {
        assert_eq!(segments_for(29_970, 2000), 15);
        assert_eq!(segments_for(30_000, 1920), 16);
        assert_eq!(segments_for(100, 2000), 1);
        // Ads round up: every frame plays, the tail is padded.
        for (ms, n, pad) in [
            (15_000, 8, 360),
            (15_015, 8, 345),
            (30_000, 16, 720),
            (30_030, 16, 690),
            (5_000, 3, 760),
            (15_360, 8, 0),
            (15_375, 8, 0), // within the tolerance: a priming tail
            (15_400, 9, 1_880),
            (1_000, 1, 920),
            (120_000, 63, 960),
        ] {
            assert_eq!(ad_segments(ms, 1920), n, "{ms} ms");
            assert_eq!(ad_padding_ms(ms, 1920), pad, "{ms} ms");
            assert!(ad_padding_ms(ms, 1920) < 1920);
        }
        assert_eq!(ad_segments(0, 1920), 1);
        assert_eq!(ad_segments(10_000, 0), 1);
    }
}

/// `AdRendition::segments` on the wire: the list, or
/// `{"template": "…/seg{i}.ts", "count": n, "duration": d}` when every
/// segment is the template with its index, of one duration, without byte
/// range. Both forms are read.
/// Segments as a URI template and a count, when they follow one (the JSON
/// pods and the binary ones in `wire` store them so).
pub(crate) use segments_codec::{expand as expand_template, template_of as segment_template};

mod segments_codec {
    use super::AdSegment;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Hostile input cannot make us allocate more than this.
    const MAX_SEGMENTS: usize = 10_000;

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Template {
            template: String,
            count: usize,
            duration: f64,
        },
        List(Vec<AdSegment>),
    }

    pub fn template_of(segs: &[AdSegment]) -> Option<(String, f64)> {
        let (a, b) = (segs.first()?, segs.get(1)?);
        if segs
            .iter()
            .any(|s| s.byterange.is_some() || s.duration != a.duration || s.uri.contains('{'))
        {
            return None;
        }
        let prefix = a
            .uri
            .bytes()
            .zip(b.uri.bytes())
            .take_while(|(x, y)| x == y)
            .count();
        let suffix = a
            .uri
            .bytes()
            .rev()
            .zip(b.uri.bytes().rev())
            .take_while(|(x, y)| x == y)
            .count();
        let pre = a.uri.get(..prefix)?;
        // The suffix must not eat into the index (e.g. seg0.ts / seg1.ts).
        let suf = a.uri.get(a.uri.len().checked_sub(suffix)?..)?;
        if prefix.checked_add(suffix)? > a.uri.len().min(b.uri.len()) {
            return None;
        }
        let t = format!("{pre}{{i}}{suf}");
        let ok = segs
            .iter()
            .enumerate()
            .all(|(i, s)| s.uri == t.replace("{i}", &i.to_string()));
        ok.then_some((t, a.duration))
    }

    pub fn serialize<S: Serializer>(segs: &Vec<AdSegment>, s: S) -> Result<S::Ok, S::Error> {
        match template_of(segs) {
            Some((template, duration)) => Wire::Template {
                template,
                count: segs.len(),
                duration,
            }
            .serialize(s),
            None => segs.serialize(s),
        }
    }

    /// The segments a template names: every `{i}` replaced by 0, 1, …
    /// `count - 1`. The template is split once, and each URI written at its final size (a
    /// cold playlist request expands every segment of every rendition of
    /// its pod: this is most of decoding one).
    pub fn expand(template: &str, count: usize, duration: f64) -> Vec<AdSegment> {
        let parts: Vec<&str> = template.split("{i}").collect();
        let fixed: usize = parts.iter().map(|p| p.len()).sum();
        let holes = parts.len().saturating_sub(1);
        let mut digits = [0u8; 20];
        (0..count)
            .map(|i| {
                let index = super::decimal(i as u64, &mut digits);
                let mut uri =
                    String::with_capacity(fixed.saturating_add(holes.saturating_mul(index.len())));
                for (k, part) in parts.iter().enumerate() {
                    if k > 0 {
                        uri.push_str(index);
                    }
                    uri.push_str(part);
                }
                AdSegment {
                    uri,
                    duration,
                    byterange: None,
                }
            })
            .collect()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AdSegment>, D::Error> {
        match Wire::deserialize(d)? {
            Wire::List(v) => Ok(v),
            Wire::Template {
                template,
                count,
                duration,
            } => {
                if count > MAX_SEGMENTS {
                    return Err(serde::de::Error::custom("too many segments"));
                }
                Ok(expand(&template, count, duration))
            }
        }
    }
}
