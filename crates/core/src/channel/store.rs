//! The machine's state in Durable Object storage, a key per part, so that
//! a step writes only what it changed: a small header (watermarks, the
//! running discontinuity count, the origin's timeline, the poller's clock,
//! health and stats) written when it changes, which is on every poll; a
//! key per decided break's record (rewritten only when the record changes:
//! an early end, a discontinuity merged, renumbered), its pod (written
//! once) and a key per pending break. Keys of breaks pruned from the view
//! are deleted with them, so storage is bounded like the view.
//!
//! Before, the whole state (every entry with its pod) was one value
//! rewritten on every poll: ~44 KB per write at the demo's break rate.

use super::{monitor::Poller, Channel, Cohort, OriginMark, Pending};
use crate::model::{BreakEntry, BreakRecord, ChannelBreaks, Pod};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The header's key.
pub const HEADER: &str = "h";
/// Key prefixes: a decided break's record, its pod, a pending break.
pub const RECORD: &str = "r/";
pub const POD: &str = "p/";
/// A decided break's pod of one cohort: `c/{cohort}/{break}` (written
/// once). One key each: a break's cohort pods together could pass a
/// value's size limit.
pub const COHORT_PODS: &str = "c/";
/// An audience cohort seen on the channel: `k/{cohort}` (written when
/// added, and with the next write after it was seen again).
pub const COHORT: &str = "k/";
pub const PENDING: &str = "q/";
/// The layout before this one: the whole state under one key, with the
/// poller's stats and failure count beside it. Read once and migrated.
pub const LEGACY_STATE: &str = "state";
pub const LEGACY_POLL_STATS: &str = "poll_stats";
pub const LEGACY_FAILURES: &str = "poll_failures";

/// Everything but the breaks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Header {
    updated_ms: i64,
    #[serde(default)]
    checked_through_msn: u64,
    #[serde(default)]
    disc_base: u64,
    /// The view's point of the origin timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    view_mark: Option<(u64, i64)>,
    #[serde(default)]
    examined_msn: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin_mark: Option<OriginMark>,
    #[serde(default)]
    epoch: u32,
    #[serde(default)]
    poller: Poller,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    cohort_disc_base: BTreeMap<String, u64>,
    #[serde(default)]
    cohort_overflow: u64,
}

impl Header {
    fn of(ch: &Channel) -> Header {
        Header {
            updated_ms: ch.breaks.updated_ms,
            checked_through_msn: ch.breaks.checked_through_msn,
            disc_base: ch.breaks.disc_base,
            view_mark: ch.breaks.origin_mark,
            examined_msn: ch.examined_msn,
            origin_mark: ch.origin_mark,
            epoch: ch.epoch,
            poller: ch.poller.clone(),
            cohort_disc_base: ch.breaks.cohort_disc_base.clone(),
            cohort_overflow: ch.cohort_overflow,
        }
    }
}

/// One storage operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Put { key: String, value: String },
    Delete(String),
}

impl Write {
    /// Bytes written (key and value), for the storage figures.
    pub fn bytes(&self) -> usize {
        match self {
            Write::Put { key, value } => key.len().saturating_add(value.len()),
            Write::Delete(_) => 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("channel state: {0}")]
    Json(#[from] serde_json::Error),
}

fn put<T: Serialize>(key: String, v: &T) -> Result<Write, StoreError> {
    Ok(Write::Put {
        key,
        value: serde_json::to_string(v)?,
    })
}

/// A cohort's pod of a break (the cohort first: it has no `/`, a break id
/// may).
fn cohort_pod_key(cohort: &str, id: &str) -> String {
    format!("{COHORT_PODS}{cohort}/{id}")
}

fn key(prefix: &str, id: &str) -> String {
    let mut k = String::with_capacity(prefix.len().saturating_add(id.len()));
    k.push_str(prefix);
    k.push_str(id);
    k
}

/// What to write so that storage holding `before` (`None`: nothing, or
/// the legacy layout) holds `after`: the header if it changed, the
/// records and pending breaks that changed, each new pod once, and the
/// keys of breaks that left.
pub fn diff(before: Option<&Channel>, after: &Channel) -> Result<Vec<Write>, StoreError> {
    let mut w = Vec::new();
    let head = Header::of(after);
    if before.map(Header::of).as_ref() != Some(&head) {
        w.push(put(HEADER.into(), &head)?);
    }
    let old_records: BTreeMap<&str, &BreakRecord> = before
        .map(|b| {
            b.breaks
                .entries
                .iter()
                .map(|e| (e.record.id.as_str(), &e.record))
                .collect()
        })
        .unwrap_or_default();
    for e in &after.breaks.entries {
        match old_records.get(e.record.id.as_str()) {
            Some(r) if **r == e.record => {}
            Some(_) => w.push(put(key(RECORD, &e.record.id), &e.record)?),
            None => {
                // The pod never changes once decided.
                w.push(put(key(POD, &e.record.id), &e.pod)?);
                for (c, pod) in &e.cohort_pods {
                    w.push(put(cohort_pod_key(c, &e.record.id), pod)?);
                }
                w.push(put(key(RECORD, &e.record.id), &e.record)?);
            }
        }
    }
    let old_cohorted: BTreeMap<&str, Vec<&String>> = before
        .map(|b| {
            b.breaks
                .entries
                .iter()
                .filter(|e| !e.cohort_pods.is_empty())
                .map(|e| (e.record.id.as_str(), e.cohort_pods.keys().collect()))
                .collect()
        })
        .unwrap_or_default();
    let old_cohorts = before.map(|b| &b.cohorts);
    for (id, c) in &after.cohorts {
        if old_cohorts.and_then(|o| o.get(id)) != Some(c) {
            w.push(put(key(COHORT, id), c)?);
        }
    }
    for id in old_cohorts.into_iter().flat_map(|o| o.keys()) {
        if !after.cohorts.contains_key(id) {
            w.push(Write::Delete(key(COHORT, id)));
        }
    }
    for id in old_records.keys() {
        if !after.breaks.entries.iter().any(|e| e.record.id == *id) {
            w.push(Write::Delete(key(RECORD, id)));
            w.push(Write::Delete(key(POD, id)));
            for c in old_cohorted.get(id).into_iter().flatten() {
                w.push(Write::Delete(cohort_pod_key(c, id)));
            }
        }
    }
    let old_pending: BTreeMap<&str, &Pending> = before
        .map(|b| {
            b.pending
                .iter()
                .map(|p| (p.record.id.as_str(), p))
                .collect()
        })
        .unwrap_or_default();
    for p in &after.pending {
        if old_pending.get(p.record.id.as_str()) != Some(&p) {
            w.push(put(key(PENDING, &p.record.id), p)?);
        }
    }
    for id in old_pending.keys() {
        if !after.pending.iter().any(|p| p.record.id == *id) {
            w.push(Write::Delete(key(PENDING, id)));
        }
    }
    Ok(w)
}

/// The state from its keys (`None` without a header: nothing stored in
/// this layout). Keys of other layouts and other uses are ignored; a
/// record whose pod is missing is dropped (never half an entry).
pub fn load<'a>(
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Option<Channel>, StoreError> {
    let mut head: Option<Header> = None;
    let mut records: Vec<BreakRecord> = Vec::new();
    let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
    let mut cohort_pods: BTreeMap<String, BTreeMap<String, Pod>> = BTreeMap::new();
    let mut cohorts: BTreeMap<String, Cohort> = BTreeMap::new();
    let mut pending: Vec<Pending> = Vec::new();
    for (k, v) in keys {
        if k == HEADER {
            head = Some(serde_json::from_str(v)?);
        } else if k.starts_with(RECORD) {
            records.push(serde_json::from_str(v)?);
        } else if let Some(id) = k.strip_prefix(POD) {
            pods.insert(id.to_string(), serde_json::from_str(v)?);
        } else if let Some((c, id)) = k.strip_prefix(COHORT_PODS).and_then(|r| r.split_once('/')) {
            cohort_pods
                .entry(id.to_string())
                .or_default()
                .insert(c.to_string(), serde_json::from_str(v)?);
        } else if let Some(id) = k.strip_prefix(COHORT) {
            cohorts.insert(id.to_string(), serde_json::from_str(v)?);
        } else if k.starts_with(PENDING) {
            pending.push(serde_json::from_str(v)?);
        }
    }
    let Some(h) = head else {
        return Ok(None);
    };
    let mut entries: Vec<BreakEntry> = records
        .into_iter()
        .filter_map(|record| {
            let pod = pods.remove(&record.id)?;
            let cohort_pods = cohort_pods.remove(&record.id).unwrap_or_default();
            Some(BreakEntry {
                record,
                pod,
                cohort_pods,
            })
        })
        .collect();
    entries.sort_by_key(|e| e.record.anchor_msn);
    pending.sort_by_key(|p| p.record.anchor_msn);
    Ok(Some(Channel {
        breaks: ChannelBreaks {
            entries,
            updated_ms: h.updated_ms,
            checked_through_msn: h.checked_through_msn,
            disc_base: h.disc_base,
            origin_mark: h.view_mark,
            cohort_disc_base: h.cohort_disc_base,
        },
        pending,
        examined_msn: h.examined_msn,
        origin_mark: h.origin_mark,
        epoch: h.epoch,
        poller: h.poller,
        cohorts,
        cohort_overflow: h.cohort_overflow,
    }))
}

/// The legacy layout's state, with its poll stats and failure count, as
/// this machine's; `alarm_ms` is the object's alarm (set: the old poller
/// was running, due then).
pub fn migrate(
    mut old: Channel,
    stats: Option<super::monitor::PollStats>,
    failures: Option<u32>,
    alarm_ms: Option<i64>,
) -> Channel {
    if let Some(s) = stats {
        old.poller.stats = s;
    }
    old.poller.failures = failures.unwrap_or(0);
    if let Some(t) = alarm_ms {
        old.poller.running = true;
        old.poller.next_poll_ms = Some(t);
    }
    // The old poller kept its in-band watermark in memory and resumed from
    // the published one.
    if old.poller.inband_msn.is_none() && old.breaks.checked_through_msn > 0 {
        old.poller.inband_msn = Some(old.breaks.checked_through_msn);
    }
    old
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::sequencer::tests::cue;
    use crate::channel::{sequencer::BreakPolicy, Effect, Input};
    use crate::model::Slate;
    use crate::scte35::cues::CueKind;

    fn apply(stored: &mut BTreeMap<String, String>, writes: &[Write]) {
        for w in writes {
            match w {
                Write::Put { key, value } => {
                    stored.insert(key.clone(), value.clone());
                }
                Write::Delete(k) => {
                    stored.remove(k);
                }
            }
        }
    }

    fn reload(stored: &BTreeMap<String, String>) -> Channel {
        load(stored.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn only_what_changed_is_written_and_pruned_breaks_are_deleted() {
        let p = BreakPolicy::default();
        let mut ch = Channel::default();
        let mut stored = BTreeMap::new();
        let mut persisted: Option<Channel> = None;
        let mut max_header = 0;
        for msn in 1u64..2_000 {
            let now = i64::try_from(msn).unwrap() * 2000;
            // Two audience cohorts watch throughout (reported each minute).
            if msn % 30 == 1 {
                for c in ["c0ffee0000000001", "c0ffee0000000002"] {
                    let viewer = crate::ads::request::Viewer {
                        cohort: c.into(),
                        geo: "DE".into(),
                        ..Default::default()
                    };
                    ch.handle(Input::CohortSeen { viewer }, &p, now);
                }
            }
            let events = if msn % 40 == 10 {
                vec![cue(CueKind::Out, &format!("b{msn}"), msn, Some(20.0))]
            } else {
                vec![]
            };
            let mut effects = ch
                .handle(
                    Input::Window {
                        events,
                        cadence_ms: 2000,
                        examined_through: Some(msn),
                        window: None,
                    },
                    &p,
                    now,
                )
                .effects;
            let mut i = 0;
            while let Some(e) = effects.get(i).cloned() {
                i += 1;
                if let Effect::Decide(r) = &e {
                    let pod = Pod::slate_only(&r.id, 20.0, Slate::default(), String::new());
                    let cohort_pods = r.cohorts.iter().map(|c| (c.clone(), pod.clone())).collect();
                    let d = ch.handle(
                        Input::Decided {
                            break_id: r.id.clone(),
                            pod,
                            cohort_pods,
                        },
                        &p,
                        now,
                    );
                    effects.extend(d.effects);
                }
                if e == Effect::Persist {
                    let w = diff(persisted.as_ref(), &ch).unwrap();
                    for x in &w {
                        if let Write::Put { key, value } = x {
                            if key == HEADER {
                                max_header = max_header.max(value.len());
                            }
                            assert!(x.bytes() < 2048, "{key}: {} bytes", x.bytes());
                        }
                    }
                    apply(&mut stored, &w);
                    persisted = Some(ch.clone());
                    // What is stored is the state, whatever the history.
                    assert_eq!(reload(&stored), ch);
                }
            }
        }
        assert!(max_header > 0 && max_header < 2048);
        // Bounded: the keys of the breaks in view (10 min kept after their
        // end) and the header, after ~66 minutes and 50 breaks.
        let in_view = ch.breaks.entries.len();
        assert!(in_view < 10, "{in_view}");
        // Each break in view: its record, its pod and each cohort's pod;
        // each cohort: its key.
        assert!(ch.breaks.entries.iter().all(|e| e.cohort_pods.len() == 2));
        assert_eq!(
            stored.len(),
            1 + 4 * in_view + ch.pending.len() + ch.cohorts.len()
        );
        assert_eq!(ch.cohorts.len(), 2);
        // A step that changes nothing writes nothing.
        assert!(diff(Some(&ch), &ch).unwrap().is_empty());
    }

    #[test]
    fn the_legacy_single_value_migrates_once() {
        let p = BreakPolicy::default();
        let mut old = Channel::default();
        old.handle(
            Input::Window {
                events: vec![cue(CueKind::Out, "a", 10, Some(10.0))],
                cadence_ms: 2000,
                examined_through: Some(12),
                window: None,
            },
            &p,
            0,
        );
        let stats = super::super::monitor::PollStats {
            polls: 7,
            ..Default::default()
        };
        let ch = migrate(old.clone(), Some(stats), Some(2), Some(5_000));
        assert_eq!(ch.poller.stats.polls, 7);
        assert!(ch.poller.running);
        assert_eq!(ch.poller.next_poll_ms, Some(5_000));
        assert_eq!(ch.pending, old.pending);
        let mut stored = BTreeMap::new();
        apply(&mut stored, &diff(None, &ch).unwrap());
        assert_eq!(reload(&stored), ch);
        // Other keys (the channel's identity, the smoke test's) are not state.
        stored.insert("channel".into(), "{}".into());
        assert_eq!(reload(&stored), ch);
        assert!(load(std::iter::empty()).unwrap().is_none());
    }
}
