//! The Channel DO's logic as pure functions over [`ChannelBreaks`]: turning
//! cue events into break records exactly once, assigning the running
//! discontinuity count, applying early ends, pruning. The DO adds storage,
//! the decision call and the KV write around these.

use crate::model::{
    inserted_discontinuities, segments_for, BreakEntry, BreakRecord, BreakSource, ChannelBreaks,
    Pod,
};
use crate::scte35::cues::{CueEvent, CueKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per-channel limits for turning cues into records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakPolicy {
    /// Duration of a CUE-OUT without one, until its CUE-IN.
    pub open_break_ms: u64,
    /// No break is longer than this.
    pub max_break_ms: u64,
    /// Entries are pruned this long after their end (their discontinuities
    /// fold into `disc_base`). Must exceed the longest window a viewer can
    /// be behind the live edge (the origin's window, or its DVR window).
    pub keep_ms: i64,
    /// Audience cohorts with pods of their own, at most; viewers of others
    /// get the default pod. Set from the channel's `targeting.max_cohorts`
    /// (`ChannelConfig::break_policy`), not a `breaks` setting of its own.
    #[serde(skip, default = "default_max_cohorts")]
    pub max_cohorts: usize,
    /// A cohort no edge has reported for this long is no longer active:
    /// breaks registered after that are not decided for it.
    #[serde(skip, default = "default_cohort_ttl_ms")]
    pub cohort_ttl_ms: i64,
}

impl Default for BreakPolicy {
    fn default() -> Self {
        BreakPolicy {
            open_break_ms: 120_000,
            max_break_ms: 600_000,
            keep_ms: 600_000,
            max_cohorts: default_max_cohorts(),
            cohort_ttl_ms: default_cohort_ttl_ms(),
        }
    }
}

fn default_max_cohorts() -> usize {
    32
}

/// Edges report a cohort at most once a minute per isolate while its
/// viewers play: fifteen minutes without a report is none left.
fn default_cohort_ttl_ms() -> i64 {
    15 * 60_000
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("break {new} overlaps break {existing} (MSN {start}..{end})")]
    Overlap {
        new: String,
        existing: String,
        start: u64,
        end: u64,
    },
    #[error("cue has no usable anchor: {0}")]
    NoAnchor(String),
}

/// A break record proposed from a cue (OUT, or CONT for a viewer joining
/// mid-break). `None` for IN/CANCEL (see [`apply_end`]).
pub fn record_from_cue(
    cue: &CueEvent,
    cadence_ms: u64,
    policy: &BreakPolicy,
    now_ms: i64,
) -> Option<BreakRecord> {
    let (msn, pdt) = match cue.kind {
        CueKind::Out => (cue.msn, cue.pdt_ms),
        CueKind::Cont => {
            let elapsed_ms = (cue.elapsed_s? * 1000.0).round() as i64;
            let back = u64::from(segments_for(elapsed_ms.max(0) as u64, cadence_ms.max(1)));
            let half = i64::try_from(cadence_ms / 2).unwrap_or(i64::MAX);
            let back = if elapsed_ms < half { 0 } else { back };
            (
                cue.msn.checked_sub(back)?,
                cue.pdt_ms.map(|p| p.saturating_sub(elapsed_ms)),
            )
        }
        CueKind::In | CueKind::Cancel => return None,
    };
    let duration_ms = cue
        .duration_s
        .map(|d| (d * 1000.0).round() as u64)
        .filter(|d| *d > 0)
        .unwrap_or(policy.open_break_ms)
        .min(policy.max_break_ms);
    Some(BreakRecord {
        id: cue.break_id.clone(),
        source: BreakSource::Scte35,
        anchor_msn: msn,
        anchor_pdt_ms: pdt,
        duration_ms,
        cadence_ms,
        segment_count: segments_for(duration_ms, cadence_ms),
        cut_after: None,
        disc_before: 0,
        merged: Vec::new(),
        registered_ms: now_ms,
        asset: cue.asset.clone(),
        cohorts: Vec::new(),
    })
}

/// Index of an existing entry with this id.
pub fn find(state: &ChannelBreaks, id: &str) -> Option<usize> {
    state.entries.iter().position(|e| e.record.id == id)
}

/// Check that a proposed record does not overlap any existing break.
pub fn check_overlap(state: &ChannelBreaks, r: &BreakRecord) -> Result<(), SequenceError> {
    check_overlap_records(state.entries.iter().map(|e| &e.record), r)
}

/// [`check_overlap`] over break records alone (decided or pending).
pub fn check_overlap_records<'a>(
    records: impl IntoIterator<Item = &'a BreakRecord>,
    r: &BreakRecord,
) -> Result<(), SequenceError> {
    for x in records {
        if x.id != r.id
            && x.covered() > 0
            && r.anchor_msn < x.end_msn()
            && x.anchor_msn < r.anchor_msn.saturating_add(u64::from(r.segment_count))
        {
            return Err(SequenceError::Overlap {
                new: r.id.clone(),
                existing: x.id.clone(),
                start: x.anchor_msn,
                end: x.end_msn(),
            });
        }
    }
    Ok(())
}

/// Commit a record with its decision, exactly once: an existing id returns
/// the existing entry unchanged. Assigns `disc_before` from the entries
/// before it; entries are kept sorted by anchor.
/// `cohort_pods`: the pods decided for the audience cohorts the record
/// names; a cohort whose decision did not come back is dropped from the
/// record (it gets the default pod) before anything is published.
pub fn commit(
    state: &mut ChannelBreaks,
    mut record: BreakRecord,
    pod: Pod,
    mut cohort_pods: BTreeMap<String, Pod>,
    now_ms: i64,
) -> Result<BreakEntry, SequenceError> {
    if let Some(e) = state.entries.iter().find(|e| e.record.id == record.id) {
        return Ok(e.clone());
    }
    // The same break seen through another marker (a CONT with its own
    // SCTE-35 id, a PDT-derived id): same anchor, same break.
    if let Some(e) = state
        .entries
        .iter()
        .find(|e| e.record.anchor_msn == record.anchor_msn)
    {
        return Ok(e.clone());
    }
    check_overlap(state, &record)?;
    let pos = state
        .entries
        .iter()
        .position(|e| e.record.anchor_msn > record.anchor_msn)
        .unwrap_or(state.entries.len());
    record.disc_before = pos
        .checked_sub(1)
        .and_then(|i| state.entries.get(i))
        .map_or(state.disc_base, |p| disc_after(Some(p)));
    record.cohorts.retain(|c| cohort_pods.contains_key(c));
    record.cohorts.sort_unstable();
    record.cohorts.dedup();
    cohort_pods.retain(|c, _| record.cohorts.contains(c));
    let entry = BreakEntry {
        record,
        pod,
        cohort_pods,
    };
    state.entries.insert(pos, entry.clone());
    renumber(state, pos.saturating_add(1));
    state.updated_ms = now_ms;
    Ok(entry)
}

/// End a break early at `at_msn` (CUE-IN, `/cue stop`), or cancel it
/// (`at_msn` at or before its anchor). Returns whether anything changed.
pub fn apply_end(state: &mut ChannelBreaks, id: &str, at_msn: u64, now_ms: i64) -> bool {
    let Some(i) = find(state, id) else {
        return false;
    };
    let Some(r) = state.entries.get_mut(i).map(|e| &mut e.record) else {
        return false;
    };
    let cut = at_msn
        .saturating_sub(r.anchor_msn)
        .min(u64::from(r.segment_count));
    let cut = u32::try_from(cut).unwrap_or(u32::MAX);
    if cut >= r.covered() {
        return false;
    }
    r.cut_after = Some(cut);
    renumber(state, i.saturating_add(1));
    state.updated_ms = now_ms;
    true
}

/// Record that the origin was examined through `msn` (monotonic).
pub fn mark_checked(state: &mut ChannelBreaks, msn: u64, now_ms: i64) {
    if msn > state.checked_through_msn {
        state.checked_through_msn = msn;
        state.updated_ms = now_ms;
    }
}

/// What an examined origin window says: its MSN range, the MSNs of its
/// segments with EXT-X-DISCONTINUITY, and (to tell an origin restart or
/// failover) its last segment's PDT and the origin's discontinuity count
/// at its end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OriginWindow {
    pub first_msn: u64,
    pub last_msn: u64,
    pub discontinuities: Vec<u64>,
    #[serde(default)]
    pub last_pdt_ms: Option<i64>,
    #[serde(default)]
    pub disc_seq_end: u64,
}

impl OriginWindow {
    pub fn of(m: &crate::hls::media::MediaPlaylist<'_>) -> Option<OriginWindow> {
        let discontinuities: Vec<u64> = m
            .segments
            .iter()
            .filter(|s| s.discontinuity)
            .map(|s| s.msn)
            .collect();
        Some(OriginWindow {
            first_msn: m.segments.first()?.msn,
            last_msn: m.segments.last()?.msn,
            last_pdt_ms: m.segments.last()?.pdt_ms,
            disc_seq_end: m
                .discontinuity_sequence
                .saturating_add(u64::try_from(discontinuities.len()).unwrap_or(u64::MAX)),
            discontinuities,
        })
    }
}

/// Learn which of our discontinuities coincide with the origin's, from an
/// examined window; renumber what follows. Returns whether anything
/// changed.
pub fn note_origin_discontinuities(
    state: &mut ChannelBreaks,
    w: &OriginWindow,
    now_ms: i64,
) -> bool {
    let (first_msn, last_msn, origin_discs) = (w.first_msn, w.last_msn, &w.discontinuities);
    let mut from = None;
    for (i, e) in state.entries.iter_mut().enumerate() {
        // Every pod's boundaries (the default's and each cohort's): a
        // merge is a fact of an MSN, whichever layout puts a boundary there.
        let mut ours: Vec<u64> = std::iter::once(&e.pod)
            .chain(e.cohort_pods.values())
            .flat_map(|pod| {
                let slots = crate::model::layout(&e.record, pod);
                crate::model::discontinuity_msns(&e.record, &slots)
                    .filter(|m| (first_msn..=last_msn).contains(m))
                    .collect::<Vec<_>>()
            })
            .collect();
        ours.sort_unstable();
        ours.dedup();
        for m in ours {
            let has = e.record.merged.contains(&m);
            let origin = origin_discs.contains(&m);
            if origin && !has {
                e.record.merged.push(m);
                e.record.merged.sort_unstable();
            } else if !origin && has {
                e.record.merged.retain(|x| *x != m);
            } else {
                continue;
            }
            from.get_or_insert(i);
        }
    }
    match from {
        Some(i) => {
            renumber(state, i.saturating_add(1));
            state.updated_ms = now_ms;
            true
        }
        None => false,
    }
}

/// Drop entries that ended more than `keep_ms` ago, except the latest of
/// them. What they inserted
/// folds into `disc_base`, the running discontinuity count before the
/// first entry in view, so the published view stays bounded by what a
/// window can need (history lives in D1), whatever the channel's age. A
/// break ends at its anchor's PDT (or its registration, without PDT) plus
/// its duration, so a break scheduled far ahead is kept until it has run.
pub fn prune(state: &mut ChannelBreaks, policy: &BreakPolicy, now_ms: i64) {
    let ended = |e: &BreakEntry| {
        let start = e.record.anchor_pdt_ms.unwrap_or(e.record.registered_ms);
        start
            .saturating_add(i64::try_from(e.record.duration_ms).unwrap_or(i64::MAX))
            .saturating_add(policy.keep_ms)
            <= now_ms
    };
    // Entries are sorted by anchor: drop the leading run that has ended,
    // but its last: a DASH viewer's content Period is named after the
    // break it returned from, for as long as it plays (`dash::splice`).
    let n = state
        .entries
        .iter()
        .take_while(|e| ended(e))
        .count()
        .saturating_sub(1);
    if n == 0 {
        return;
    }
    let cohorts = cohorts_counted(state);
    let old_base = state.disc_base;
    state.disc_base = disc_after(n.checked_sub(1).and_then(|i| state.entries.get(i)));
    let dropped = ChannelBreaks {
        entries: state.entries.drain(..n).collect(),
        ..ChannelBreaks::default()
    };
    let mut bases = BTreeMap::new();
    for c in cohorts {
        let before = state.cohort_disc_base.get(&c).copied().unwrap_or(old_base);
        let after = dropped
            .entries
            .iter()
            .map(|e| e.inserted_for(&c))
            .fold(before, u64::saturating_add);
        if after != state.disc_base {
            bases.insert(c, after);
        }
    }
    state.cohort_disc_base = bases;
}

/// The cohorts whose running count may differ from the default's: those
/// with a base of their own and those with pods in the entries.
pub fn cohorts_counted(state: &ChannelBreaks) -> std::collections::BTreeSet<String> {
    state
        .cohort_disc_base
        .keys()
        .cloned()
        .chain(
            state
                .entries
                .iter()
                .flat_map(|e| e.record.cohorts.iter().cloned()),
        )
        .collect()
}

/// Forget the running counts of cohorts that are gone (no viewer left to
/// keep a sequence for): those not in `active` and with no pod in view.
pub fn forget_cohorts(state: &mut ChannelBreaks, active: &dyn Fn(&str) -> bool) {
    let in_view: std::collections::BTreeSet<String> = state
        .entries
        .iter()
        .flat_map(|e| e.record.cohorts.iter().cloned())
        .collect();
    state
        .cohort_disc_base
        .retain(|c, _| active(c) || in_view.contains(c));
}

fn disc_after(prev: Option<&BreakEntry>) -> u64 {
    prev.map_or(0, |p| {
        p.record
            .disc_before
            .saturating_add(inserted_discontinuities(&p.record, &p.pod))
    })
}

/// Reassign `disc_before` of the entries from `from` on, each from the one
/// before it.
fn renumber(state: &mut ChannelBreaks, from: usize) {
    let start = from.max(1).saturating_sub(1);
    let mut prev = match state.entries.get(start) {
        Some(p) => disc_after(Some(p)),
        None => return,
    };
    for e in state.entries.iter_mut().skip(start.saturating_add(1)) {
        e.record.disc_before = prev;
        prev = disc_after(Some(e));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Slate;
    use crate::scte35::cues::Dialect;

    #[test]
    fn origin_discontinuities_on_our_boundaries_are_counted_once() {
        let mut st = ChannelBreaks::default();
        let pod = |id: &str| Pod::slate_only(id, 8.0, Slate::default(), String::new());
        let mut a = record_from_cue(
            &cue(CueKind::Out, "a", 10, Some(8.0)),
            2000,
            &BreakPolicy::default(),
            0,
        )
        .unwrap();
        a.id = "a".into();
        let mut pa = pod("a");
        pa.items = vec![crate::model::PodItem {
            ad_id: "x".into(),
            creative_id: "x".into(),
            universal_ad_id: None,
            duration_s: 8.0,
            renditions: vec![],
            tracking: Default::default(),
        }];
        commit(&mut st, a, pa, BTreeMap::new(), 0).unwrap();
        let b = record_from_cue(
            &cue(CueKind::Out, "b", 30, Some(8.0)),
            2000,
            &BreakPolicy::default(),
            0,
        )
        .unwrap();
        commit(&mut st, b, pod("b"), BTreeMap::new(), 0).unwrap();
        let ours =
            crate::model::inserted_discontinuities(&st.entries[0].record, &st.entries[0].pod);
        assert_eq!(st.entries[1].record.disc_before, ours);
        // The origin has its own discontinuity where break a returns (MSN 14).
        let w = OriginWindow {
            first_msn: 9,
            last_msn: 14,
            discontinuities: vec![14],
            ..Default::default()
        };
        assert!(note_origin_discontinuities(&mut st, &w, 1));
        assert_eq!(st.entries[0].record.merged, vec![14]);
        assert_eq!(st.entries[1].record.disc_before, ours - 1);
        // Seen again: nothing changes.
        assert!(!note_origin_discontinuities(&mut st, &w, 2));
    }

    /// A cue at `msn` (PDT = msn × 2 s), shared by the sequencer and
    /// channel tests.
    pub(crate) fn cue(kind: CueKind, id: &str, msn: u64, dur: Option<f64>) -> CueEvent {
        CueEvent {
            kind,
            break_id: id.into(),
            event_id: None,
            msn,
            pdt_ms: Some(msn as i64 * 2000),
            duration_s: dur,
            elapsed_s: None,
            dialect: Dialect::CueOut,
            segmentation_type_id: None,
            scte35_hex: None,
            asset: Default::default(),
        }
    }

    #[test]
    fn idempotent_and_running_count() {
        let mut st = ChannelBreaks::default();
        let p = BreakPolicy::default();
        let r1 = record_from_cue(&cue(CueKind::Out, "a", 10, Some(10.0)), 2000, &p, 0).unwrap();
        let pod = |id: &str| Pod::slate_only(id, 10.0, Slate::default(), String::new());
        for _ in 0..100 {
            commit(&mut st, r1.clone(), pod("a"), BTreeMap::new(), 0).unwrap();
        }
        assert_eq!(st.entries.len(), 1);
        let r2 = record_from_cue(&cue(CueKind::Out, "b", 30, Some(10.0)), 2000, &p, 0).unwrap();
        let e2 = commit(&mut st, r2, pod("b"), BTreeMap::new(), 0).unwrap();
        assert_eq!(e2.record.disc_before, 2);
        // An early end of the first changes nothing for the second here
        // (slate only: still 1 slot + return).
        assert!(apply_end(&mut st, "a", 12, 0));
        assert_eq!(st.entries[0].record.end_msn(), 12);
        // Cancel before start: no discontinuities at all.
        assert!(apply_end(&mut st, "a", 10, 0));
        assert_eq!(st.entries[1].record.disc_before, 0);
        let r3 = record_from_cue(&cue(CueKind::Out, "c", 33, Some(10.0)), 2000, &p, 0).unwrap();
        assert!(matches!(
            commit(&mut st, r3, pod("c"), BTreeMap::new(), 0),
            Err(SequenceError::Overlap { .. })
        ));
    }

    #[test]
    fn pruning_folds_the_running_count_into_disc_base() {
        let p = BreakPolicy::default();
        let mut st = ChannelBreaks::default();
        let pod = |id: &str| Pod::slate_only(id, 10.0, Slate::default(), String::new());
        for (id, msn) in [("a", 10u64), ("b", 30), ("c", 50)] {
            let r = record_from_cue(&cue(CueKind::Out, id, msn, Some(10.0)), 2000, &p, 0).unwrap();
            commit(&mut st, r, pod(id), BTreeMap::new(), 0).unwrap();
        }
        let total = disc_after(st.entries.last());
        let c_before = st.entries[2].record.disc_before;
        let b_before = st.entries[1].record.disc_before;
        // PDT of c is 100 s; all end by 110 s. a out; b kept (the latest
        // ended: a DASH content Period is named after it), c in.
        prune(&mut st, &p, 90_000 + p.keep_ms);
        assert_eq!(st.entries.len(), 2);
        assert_eq!(st.entries[0].record.id, "b");
        assert_eq!(st.disc_base, b_before, "what a inserted");
        assert_eq!(st.entries[1].record.disc_before, c_before);
        assert_eq!(disc_after(st.entries.last()), total);
        prune(&mut st, &p, 10_000_000);
        assert_eq!(st.entries.len(), 1, "the latest ended break stays");
        assert_eq!(st.entries[0].record.id, "c");
        assert_eq!(st.disc_base, c_before);
        assert_eq!(
            disc_after(st.entries.last()),
            total,
            "the running count holds"
        );
    }

    #[test]
    fn cont_anchors_back_by_elapsed() {
        let mut c = cue(CueKind::Cont, "x", 20, Some(30.0));
        c.elapsed_s = Some(8.0);
        let r = record_from_cue(&c, 2000, &BreakPolicy::default(), 0).unwrap();
        assert_eq!(r.anchor_msn, 16);
        assert_eq!(r.anchor_pdt_ms, Some(40_000 - 8_000));
    }
}

/// What the request path (or the monitor) must ask the sequencer to do for
/// the cues in an origin window, given the entries it already has.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A break that no entry covers yet.
    Register(CueEvent),
    /// An IN/CANCEL that ends a known break earlier than recorded.
    End { break_id: String, at_msn: u64 },
}

pub fn reconcile(events: &[CueEvent], entries: &[BreakEntry]) -> Vec<Action> {
    let records: Vec<&BreakRecord> = entries.iter().map(|e| &e.record).collect();
    reconcile_records(events, &records)
}

/// [`reconcile`] over break records alone (the KV view has no pods).
pub fn reconcile_records(events: &[CueEvent], entries: &[&BreakRecord]) -> Vec<Action> {
    let mut actions = Vec::new();
    for e in events {
        match e.kind {
            CueKind::Out | CueKind::Cont => {
                // The same break only where MSN and PDT agree: after an
                // origin restart a new cue at an old MSN (or reusing an old
                // splice_event_id) is a new break.
                let known = entries.iter().any(|x| {
                    let agrees = x.agrees_with(e.msn, e.pdt_ms, x.cadence_ms);
                    agrees
                        && (x.id == e.break_id
                            || (e.kind == CueKind::Out && x.anchor_msn == e.msn)
                            || (e.kind == CueKind::Cont && x.contains(e.msn)))
                });
                let pending = actions.iter().any(|a| match a {
                    Action::Register(p) => p.break_id == e.break_id,
                    _ => false,
                });
                if !known && !pending {
                    actions.push(Action::Register(e.clone()));
                }
            }
            CueKind::In | CueKind::Cancel => {
                let target = entries.iter().find(|x| x.id == e.break_id).or_else(|| {
                    entries
                        .iter()
                        .rev()
                        .find(|x| x.anchor_msn <= e.msn && e.msn < x.end_msn())
                });
                if let Some(x) = target {
                    if e.msn < x.end_msn() {
                        actions.push(Action::End {
                            break_id: x.id.clone(),
                            at_msn: e.msn,
                        });
                    }
                }
            }
        }
    }
    actions
}
