//! Operator metrics: what an SSAI operator is asked first (how much break
//! time was filled, how long the ad server takes, why ads were skipped, is
//! detection keeping up), as additive per-minute buckets.
//!
//! Every metric is a sum, so buckets merge by addition: per-minute rows
//! roll up into hours by `SUM`, a range is the sum of its buckets, and a
//! writer can accumulate in memory and flush late without changing any
//! figure. Latencies are histograms (counts per upper bound, plus sum and
//! count, as Prometheus has them), so percentiles of any range come from
//! merged buckets, not from averages of percentiles.
//!
//! A series is stored under its key in the Prometheus text syntax
//! (`skips_total{kind="frequency_cap"}`): the key is the name, the API
//! parses it back, and the OpenMetrics endpoint prints it as is.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used
    )
)]

use crate::ads::reason::{self, Reason};
use crate::model::{Pod, PodSource};
use serde::Serialize;
use std::collections::BTreeMap;

/// Upper bounds (ms) of the latency histograms: fine where ad servers and
/// detection usually are (tens to hundreds of ms), coarse up to the 10 s a
/// decision may take at most.
pub const LATENCY_BOUNDS_MS: [f64; 15] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0,
    10000.0, 30000.0,
];

/// Per-minute buckets are kept this long, then rolled into hours.
pub const MINUTE_RETENTION_MS: i64 = 48 * 3_600_000;
/// Hourly buckets are kept this long.
pub const HOUR_RETENTION_MS: i64 = 90 * 24 * 3_600_000;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;

/// Label escaping lives in the bottom layer (ads use it too).
pub use crate::openmetrics::label_value;

/// The series key of `name` with `labels`, in Prometheus text syntax.
pub fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", label_value(v)))
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// A series key back into its name and labels.
pub fn parse_key(key: &str) -> (&str, Vec<(&str, &str)>) {
    let Some((name, rest)) = key.split_once('{') else {
        return (key, Vec::new());
    };
    let labels = rest
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect();
    (name, labels)
}

/// Sums to add to one (org, channel, minute)'s buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub adds: BTreeMap<String, f64>,
}

impl Batch {
    pub fn add(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        if v.is_finite() && v != 0.0 {
            *self.adds.entry(series_key(name, labels)).or_default() += v;
        }
    }

    /// One observation of a latency histogram: `{name}_bucket{le}`,
    /// `{name}_sum`, `{name}_count` (buckets not cumulative here, so they
    /// add; the OpenMetrics output accumulates them).
    pub fn observe(&mut self, name: &str, labels: &[(&str, &str)], ms: f64) {
        if !ms.is_finite() {
            return;
        }
        let ms = ms.max(0.0);
        let le = LATENCY_BOUNDS_MS
            .iter()
            .find(|b| ms <= **b)
            .map_or_else(|| "+Inf".to_string(), |b| format!("{b}"));
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        with_le.push(("le", le.as_str()));
        self.add(&format!("{name}_bucket"), &with_le, 1.0);
        self.add(&format!("{name}_sum"), labels, ms);
        self.add(&format!("{name}_count"), labels, 1.0);
    }

    pub fn merge(&mut self, other: Batch) {
        for (k, v) in other.adds {
            *self.adds.entry(k).or_default() += v;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.adds.is_empty()
    }
}

/// Batches waiting to be written, per (org, channel, minute): a writer
/// that sees many events (a poller every 2 s, an isolate serving many
/// playlist requests) adds here and flushes at most every `every_ms`, so
/// its store writes are bounded by time, not by traffic. Each event lands
/// in the minute it happened whenever it is flushed.
#[derive(Debug, Default)]
pub struct PendingBatches {
    batches: BTreeMap<(String, String, i64), Batch>,
    last_flush_ms: Option<i64>,
}

impl PendingBatches {
    pub fn batch(&mut self, org: &str, channel: &str, now_ms: i64) -> &mut Batch {
        let minute = now_ms.div_euclid(MINUTE_MS).saturating_mul(MINUTE_MS);
        self.last_flush_ms.get_or_insert(now_ms);
        self.batches
            .entry((org.to_string(), channel.to_string(), minute))
            .or_default()
    }

    /// Everything pending once `every_ms` has passed since the last flush
    /// (or `force`): `(org, channel, minute, batch)`.
    pub fn take_due(
        &mut self,
        now_ms: i64,
        every_ms: i64,
        force: bool,
    ) -> Vec<(String, String, i64, Batch)> {
        let due = force
            || self
                .last_flush_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= every_ms);
        if !due {
            return Vec::new();
        }
        self.last_flush_ms = None;
        std::mem::take(&mut self.batches)
            .into_iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|((o, c, m), b)| (o, c, m, b))
            .collect()
    }
}

/// The outcome of one ad-server call, from the reasons it added to the
/// decision: `timeout` (timed out, budget spent), `error` (the server's
/// error), else `ok` (an empty answer is the server's choice).
pub fn call_outcome(added: &[Reason]) -> &'static str {
    if added.iter().any(|r| matches!(r, Reason::Timeout { .. })) {
        "timeout"
    } else if added
        .iter()
        .any(|r| matches!(r, Reason::AdServerError { .. }))
    {
        "error"
    } else {
        "ok"
    }
}

fn source_label(s: PodSource) -> &'static str {
    match s {
        PodSource::Api => "api",
        PodSource::Vast => "vast",
        PodSource::Library => "library",
        PodSource::Slate => "slate",
    }
}

/// A decided break: one avail of `avail_ms`, the time its ads fill, the
/// ads by source, slate fill, and each skip reason by kind.
pub fn record_pod(b: &mut Batch, avail_ms: u64, pod: &Pod) {
    let avail = avail_ms as f64;
    let ads: f64 = pod.items.iter().map(|i| i.duration_s * 1000.0).sum();
    b.add("avails_total", &[], 1.0);
    b.add("avail_ms_total", &[], avail);
    b.add("filled_ms_total", &[], ads.min(avail).max(0.0));
    let source = source_label(pod.source);
    b.add("ads_total", &[("source", source)], pod.items.len() as f64);
    if pod.fill_s > 0.0 {
        b.add("ads_total", &[("source", "slate")], 1.0);
        b.add("slate_ms_total", &[], pod.fill_s * 1000.0);
    }
    for r in pod.reasons.iter().filter(|r| reason::is_skip(&r.code)) {
        b.add("skips_total", &[("kind", &r.code)], 1.0);
    }
}

/// Cohorts named by their id in the per-cohort series of a break; the
/// rest of a break's cohorts are summed as `other` (the series stay few
/// whatever `max_cohorts` is).
pub const COHORT_LABELS: usize = 8;

/// One break's cohort decisions: how many cohorts it had
/// (`break_cohorts_total` over `avails_total` is the mean), and per cohort
/// (the first [`COHORT_LABELS`] by id, then `other`) its ad-server calls,
/// avail and fill, so fill rate splits by cohort.
pub fn record_cohort_pods<'a>(
    b: &mut Batch,
    avail_ms: u64,
    pods: impl IntoIterator<Item = (&'a str, Option<&'a Pod>)>,
) {
    let mut n = 0usize;
    for (i, (cohort, pod)) in pods.into_iter().enumerate() {
        n = n.saturating_add(1);
        let label = if i < COHORT_LABELS { cohort } else { "other" };
        let l = [("cohort", label)];
        b.add("cohort_decisions_total", &l, 1.0);
        b.add("cohort_avail_ms_total", &l, avail_ms as f64);
        match pod {
            Some(pod) => {
                let ads: f64 = pod.items.iter().map(|i| i.duration_s * 1000.0).sum();
                b.add(
                    "cohort_filled_ms_total",
                    &l,
                    ads.min(avail_ms as f64).max(0.0),
                );
            }
            None => b.add("cohort_decision_failures_total", &l, 1.0),
        }
    }
    b.add("break_cohorts_total", &[], n as f64);
}

/// One stored bucket: its start (epoch ms), series key and sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub t_ms: i64,
    pub key: String,
    pub value: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Quantiles {
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AdServer {
    pub requests: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub latency_ms: Quantiles,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Beacons {
    pub sent: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    /// Sent / (sent + dead-lettered + dropped): what reached the ad server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
}

/// The operator's figures for one range.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub avails: u64,
    pub avail_s: f64,
    pub filled_s: f64,
    /// Filled / avail duration; absent without avails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill_rate: Option<f64>,
    pub slate_s: f64,
    pub ads: BTreeMap<String, u64>,
    pub skips: BTreeMap<String, u64>,
    /// Breaks registered from cues, by the dialect that signalled them.
    pub cues: BTreeMap<String, u64>,
    pub decision_latency_ms: Quantiles,
    pub ad_servers: BTreeMap<String, AdServer>,
    pub detection_latency_ms: Quantiles,
    pub polls: u64,
    pub poll_errors: u64,
    pub beacons: Beacons,
    pub playlist_requests: u64,
    pub origin_errors: u64,
}

/// A histogram's merged buckets, keyed by upper bound.
#[derive(Debug, Clone, Default)]
struct Hist {
    buckets: BTreeMap<u64, f64>, // bound in µs (ordered; +Inf = u64::MAX)
    sum: f64,
    count: f64,
}

impl Hist {
    fn quantile(&self, q: f64) -> Option<f64> {
        let total: f64 = self.buckets.values().sum();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut seen = 0.0;
        for (&bound, &n) in &self.buckets {
            if seen + n >= rank && n > 0.0 {
                if bound == u64::MAX {
                    // Over the top bound: report the bound, invent nothing.
                    return LATENCY_BOUNDS_MS.last().copied();
                }
                let upper = bound as f64 / 1000.0;
                // Linear within the bucket, from the bound below it.
                let lo = LATENCY_BOUNDS_MS
                    .iter()
                    .rev()
                    .find(|b| **b < upper)
                    .copied()
                    .unwrap_or(0.0);
                let within = ((rank - seen) / n).clamp(0.0, 1.0);
                return Some(lo + (upper - lo) * within);
            }
            seen += n;
        }
        LATENCY_BOUNDS_MS.last().copied()
    }

    fn quantiles(&self) -> Quantiles {
        Quantiles {
            count: self.count.round() as u64,
            p50: self.quantile(0.5).map(round1),
            p95: self.quantile(0.95).map(round1),
            mean: (self.count > 0.0).then(|| round1(self.sum / self.count)),
        }
    }
}

/// Counters saturate: a sum this large is a bug upstream, not a reason to
/// wrap or panic.
fn bump(counter: &mut u64, n: u64) {
    *counter = counter.saturating_add(n);
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Accumulates rows into a [`Summary`].
#[derive(Default)]
struct Acc {
    s: Summary,
    hists: BTreeMap<String, Hist>,
}

impl Acc {
    fn add(&mut self, key: &str, v: f64) {
        let (name, labels) = parse_key(key);
        let label = |k: &str| {
            labels
                .iter()
                .find(|(a, _)| *a == k)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        };
        let n = v.max(0.0).round() as u64;
        let s = &mut self.s;
        match name {
            "avails_total" => bump(&mut s.avails, n),
            "avail_ms_total" => s.avail_s += v / 1000.0,
            "filled_ms_total" => s.filled_s += v / 1000.0,
            "slate_ms_total" => s.slate_s += v / 1000.0,
            "ads_total" => bump(s.ads.entry(label("source")).or_default(), n),
            "skips_total" => bump(s.skips.entry(label("kind")).or_default(), n),
            "cues_total" => bump(s.cues.entry(label("dialect")).or_default(), n),
            "polls_total" => bump(&mut s.polls, n),
            "poll_errors_total" => bump(&mut s.poll_errors, n),
            "playlist_requests_total" => bump(&mut s.playlist_requests, n),
            "origin_errors_total" => bump(&mut s.origin_errors, n),
            "beacons_total" => match label("outcome").as_str() {
                "sent" => bump(&mut s.beacons.sent, n),
                "retried" => bump(&mut s.beacons.retried, n),
                "dead_lettered" => bump(&mut s.beacons.dead_lettered, n),
                _ => bump(&mut s.beacons.dropped, n),
            },
            "ad_server_requests_total" => {
                let a = s.ad_servers.entry(label("server")).or_default();
                bump(&mut a.requests, n);
                match label("outcome").as_str() {
                    "timeout" => bump(&mut a.timeouts, n),
                    "error" => bump(&mut a.errors, n),
                    _ => {}
                }
            }
            _ => {
                for (suffix, part) in [("_bucket", 0), ("_sum", 1), ("_count", 2)] {
                    if let Some(base) = name.strip_suffix(suffix) {
                        let hk = match label("server") {
                            s if s.is_empty() => base.to_string(),
                            s => format!("{base}|{s}"),
                        };
                        let h = self.hists.entry(hk).or_default();
                        match part {
                            0 => {
                                let le = label("le");
                                let bound = if le == "+Inf" {
                                    u64::MAX
                                } else {
                                    (le.parse::<f64>().unwrap_or(0.0) * 1000.0) as u64
                                };
                                *h.buckets.entry(bound).or_default() += v;
                            }
                            1 => h.sum += v,
                            _ => h.count += v,
                        }
                    }
                }
            }
        }
    }

    fn finish(mut self) -> Summary {
        let s = &mut self.s;
        s.avail_s = round1(s.avail_s * 100.0) / 100.0;
        s.filled_s = round1(s.filled_s * 100.0) / 100.0;
        s.slate_s = round1(s.slate_s * 100.0) / 100.0;
        s.fill_rate =
            (s.avail_s > 0.0).then(|| (s.filled_s / s.avail_s * 10_000.0).round() / 10_000.0);
        let b = &mut s.beacons;
        let done = b
            .sent
            .saturating_add(b.dead_lettered)
            .saturating_add(b.dropped);
        b.success_rate =
            (done > 0).then(|| (b.sent as f64 / done as f64 * 10_000.0).round() / 10_000.0);
        for (k, h) in &self.hists {
            let q = h.quantiles();
            match k.split_once('|') {
                Some(("ad_server_latency_ms", server)) => {
                    s.ad_servers
                        .entry(server.to_string())
                        .or_default()
                        .latency_ms = q
                }
                None if k == "decision_latency_ms" => s.decision_latency_ms = q,
                None if k == "detection_latency_ms" => s.detection_latency_ms = q,
                _ => {}
            }
        }
        self.s
    }
}

/// Sum rows into one summary.
pub fn summarize<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Summary {
    let mut acc = Acc::default();
    for r in rows {
        acc.add(&r.key, r.value);
    }
    acc.finish()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub t_ms: i64,
    #[serde(flatten)]
    pub summary: Summary,
}

/// The answer of `GET /api/orgs/{org}/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_ms: i64,
    pub totals: Summary,
    /// One point per step (steps without data included, as zeros).
    pub series: Vec<Point>,
}

/// The step for a range: about `points` points, whole minutes, whole
/// hours once the range reaches rolled-up data (before `minute_floor_ms`).
pub fn step_for(from_ms: i64, to_ms: i64, points: i64, minute_floor_ms: i64) -> i64 {
    let span = to_ms.saturating_sub(from_ms).max(MINUTE_MS);
    let raw = span.checked_div(points.max(1)).unwrap_or(span);
    let unit = if from_ms < minute_floor_ms {
        HOUR_MS
    } else {
        MINUTE_MS
    };
    raw.saturating_add(unit.saturating_sub(1))
        .checked_div(unit)
        .unwrap_or(1)
        .max(1)
        .saturating_mul(unit)
}

/// Range `[from_ms, to_ms)` in steps of `step_ms`.
pub fn report(rows: &[Row], from_ms: i64, to_ms: i64, step_ms: i64) -> Report {
    let step = step_ms.max(MINUTE_MS);
    let start = from_ms.div_euclid(step).saturating_mul(step);
    // step ≥ MINUTE_MS > 0: the divisions cannot fail.
    let steps = to_ms
        .saturating_sub(start)
        .saturating_add(step.saturating_sub(1))
        .checked_div(step)
        .unwrap_or(0)
        .clamp(0, 2000);
    let mut accs: Vec<Acc> = (0..steps).map(|_| Acc::default()).collect();
    let mut total = Acc::default();
    for r in rows.iter().filter(|r| r.t_ms >= start && r.t_ms < to_ms) {
        total.add(&r.key, r.value);
        let i = r
            .t_ms
            .saturating_sub(start)
            .checked_div(step)
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or(usize::MAX);
        if let Some(a) = accs.get_mut(i) {
            a.add(&r.key, r.value);
        }
    }
    Report {
        from_ms: start,
        to_ms,
        step_ms: step,
        totals: total.finish(),
        series: accs
            .into_iter()
            .zip(0..)
            .map(|(a, i): (Acc, i64)| Point {
                t_ms: start.saturating_add(i.saturating_mul(step)),
                summary: a.finish(),
            })
            .collect(),
    }
}

/// A time the metrics API could not read (the 400 names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("{0:?}: an offset ends in s, m, h or d")]
    Unit(String),
    #[error("{0:?}: not an offset such as -90m")]
    Offset(String),
    #[error("{0:?}: out of range")]
    Range(String),
    #[error("{0:?}: not epoch ms, an RFC 3339 time, now or an offset (-1h)")]
    Unknown(String),
}

/// A `from`/`to` query value: epoch ms, an RFC 3339 time, `now`, or an
/// offset back from now (`-90m`, `-24h`, `-7d`).
pub fn parse_time(v: &str, now_ms: i64) -> Result<i64, TimeError> {
    let v = v.trim();
    if v == "now" {
        return Ok(now_ms);
    }
    if let Some(rel) = v.strip_prefix('-') {
        let (n, unit) = rel.split_at(rel.len().saturating_sub(1));
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => MINUTE_MS,
            "h" => HOUR_MS,
            "d" => 24 * HOUR_MS,
            _ => return Err(TimeError::Unit(v.to_string())),
        };
        let n: i64 = n.parse().map_err(|_| TimeError::Offset(v.to_string()))?;
        return n
            .checked_mul(unit_ms)
            .and_then(|d| now_ms.checked_sub(d))
            .ok_or_else(|| TimeError::Range(v.to_string()));
    }
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    crate::hls::parse_pdt_ms(v).ok_or_else(|| TimeError::Unknown(v.to_string()))
}

/// Help text and type of each metric family, for the OpenMetrics output.
fn family(name: &str) -> (&'static str, &'static str) {
    match name {
        "avails_total" => ("counter", "Ad avails (breaks) decided."),
        "avail_ms_total" => ("counter", "Planned avail duration, ms."),
        "filled_ms_total" => ("counter", "Avail time filled with ads, ms."),
        "slate_ms_total" => ("counter", "Avail time filled with slate, ms."),
        "ads_total" => (
            "counter",
            "Ads placed in pods, by source (slate: pods with slate fill).",
        ),
        "skips_total" => (
            "counter",
            "Ads skipped or decisions fallen back, by reason kind.",
        ),
        "ad_server_requests_total" => ("counter", "Ad server requests by server and outcome."),
        "polls_total" => ("counter", "Origin polls by the channel sequencer."),
        "poll_errors_total" => ("counter", "Origin polls that failed."),
        "beacons_total" => ("counter", "Tracking beacons by outcome."),
        "playlist_requests_total" => ("counter", "Playlist requests served."),
        "origin_errors_total" => (
            "counter",
            "Playlist requests the origin failed (5xx/timeout).",
        ),
        "decision_latency_ms" => (
            "histogram",
            "Ad decision latency seen by the sequencer, ms.",
        ),
        "ad_server_latency_ms" => ("histogram", "Ad server response latency, ms."),
        "detection_latency_ms" => (
            "histogram",
            "Cue detection latency after the cue appeared, ms.",
        ),
        _ => ("unknown", ""),
    }
}

/// Running totals `(channel, key, value)` in the OpenMetrics text format,
/// with `org` and `channel` labels; histogram buckets made cumulative;
/// `extra` (whole families, e.g. the conditioner's gauges) before the
/// closing `# EOF`.
pub fn openmetrics(org: &str, totals: &[(String, String, f64)], extra: &str) -> String {
    // family → series (labels text, value), buckets accumulated per series.
    let mut fams: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    let mut hist: BTreeMap<(String, String), BTreeMap<u64, f64>> = BTreeMap::new();
    for (channel, key, value) in totals {
        let (name, labels) = parse_key(key);
        let mut all: Vec<(&str, &str)> = vec![("org", org), ("channel", channel)];
        all.extend(labels.iter().filter(|(k, _)| *k != "le"));
        if let Some(base) = name.strip_suffix("_bucket") {
            let le = labels.iter().find(|(k, _)| *k == "le").map(|(_, v)| *v);
            let bound = match le {
                Some("+Inf") | None => u64::MAX,
                Some(v) => (v.parse::<f64>().unwrap_or(0.0) * 1000.0) as u64,
            };
            *hist
                .entry((base.to_string(), series_key("", &all)))
                .or_default()
                .entry(bound)
                .or_default() += value;
            continue;
        }
        let fam = ["_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| family(b).0 == "histogram")
            .unwrap_or(name);
        fams.entry(fam.to_string())
            .or_default()
            .push((series_key(name, &all), *value));
    }
    for ((base, labels), buckets) in hist {
        let mut cum = 0.0;
        let inner = labels.trim_start_matches('{').trim_end_matches('}');
        let mut lines = Vec::new();
        for b in LATENCY_BOUNDS_MS
            .iter()
            .map(|b| (b * 1000.0) as u64)
            .chain([u64::MAX])
        {
            cum += buckets.get(&b).copied().unwrap_or(0.0);
            let le = if b == u64::MAX {
                "+Inf".to_string()
            } else {
                format!("{}", b as f64 / 1000.0)
            };
            lines.push((format!("{base}_bucket{{{inner},le=\"{le}\"}}"), cum));
        }
        fams.entry(base).or_default().extend(lines);
    }
    let mut out = String::new();
    for (fam, series) in fams {
        let (kind, help) = family(&fam);
        let shown = fam.strip_suffix("_total").unwrap_or(&fam);
        out.push_str(&format!(
            "# TYPE cf_ssai_{shown} {kind}\n# HELP cf_ssai_{shown} {help}\n"
        ));
        for (k, v) in series {
            out.push_str(&format!("cf_ssai_{k} {}\n", fmt_num(v)));
        }
    }
    out.push_str(extra);
    out.push_str("# EOF\n");
    out
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ads::reason::CallError;
    use crate::model::{PodItem, Slate};

    fn item(id: &str, s: f64) -> PodItem {
        serde_json::from_value(serde_json::json!({
            "ad_id": id, "creative_id": id, "duration_s": s, "renditions": [], "tracking": {}
        }))
        .unwrap()
    }

    fn rows(b: &Batch, t_ms: i64) -> Vec<Row> {
        b.adds
            .iter()
            .map(|(k, v)| Row {
                t_ms,
                key: k.clone(),
                value: *v,
            })
            .collect()
    }

    #[test]
    fn pending_flushes_by_time_into_the_minute_of_each_event() {
        let mut p = PendingBatches::default();
        p.batch("o", "c", 59_000).add("polls_total", &[], 1.0);
        p.batch("o", "c", 61_000).add("polls_total", &[], 1.0);
        assert!(p.take_due(65_000, 10_000, false).is_empty(), "not due yet");
        let out = p.take_due(69_000, 10_000, false);
        let minutes: Vec<i64> = out.iter().map(|x| x.2).collect();
        assert_eq!(minutes, vec![0, 60_000]);
        assert!(
            p.take_due(200_000, 10_000, false).is_empty(),
            "nothing left"
        );
        p.batch("o", "c", 300_000).add("polls_total", &[], 1.0);
        assert_eq!(p.take_due(300_001, 10_000, true).len(), 1, "forced");
    }

    #[test]
    fn times_in_every_accepted_form() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("-90m", now), Ok(now - 90 * MINUTE_MS));
        assert_eq!(parse_time("-2d", now), Ok(now - 48 * HOUR_MS));
        assert_eq!(parse_time("1700000000000", now), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2026-11-30T00:00:00Z", now),
            Ok(1_795_996_800_000)
        );
        for bad in ["-5y", "-m", "yesterday", "-99999999999999999d", ""] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_round_trip_and_hostile_labels_are_tamed() {
        let k = series_key("skips_total", &[("kind", "frequency_cap")]);
        assert_eq!(k, "skips_total{kind=\"frequency_cap\"}");
        assert_eq!(
            parse_key(&k),
            ("skips_total", vec![("kind", "frequency_cap")])
        );
        let k = series_key("x", &[("server", "a\",b=\"c}\n")]);
        let (_, l) = parse_key(&k);
        assert_eq!(l.len(), 1, "{k}");
        assert!(!k.contains('\n'));
    }

    #[test]
    fn fill_rate_sources_and_skips_from_pods() {
        let mut b = Batch::default();
        let mut vast = Pod::slate_only("a", 30.0, Slate::default(), String::new());
        vast.source = PodSource::Vast;
        vast.items = vec![item("x", 15.0), item("y", 10.0)];
        vast.fill_s = 5.0;
        let at = || "VAST http://ads/x".to_string();
        vast.reasons = [
            Reason::FrequencyCap { ad_id: "z".into() },
            Reason::call_failed(at(), CallError::TimedOut),
            Reason::VmapBreak {
                break_id: "b1".into(),
                ads: 2,
            },
            // Counted by code: a reworded message moves no counter.
            Reason::AdServerError {
                at: at(),
                error: "timed out (reworded)".into(),
            },
        ]
        .iter()
        .map(Into::into)
        .collect();
        // A pod from before codes: counted as unknown.
        vast.reasons
            .push("ad q dropped: frequency cap reached".to_string().into());
        record_pod(&mut b, 30_000, &vast);
        let slate = Pod::slate_only(
            "b",
            30.0,
            Slate::default(),
            Reason::DecisionFailed {
                detail: "decision failed: HTTP 500".into(),
            },
        );
        record_pod(&mut b, 30_000, &slate);
        let s = summarize(&rows(&b, 0));
        assert_eq!(s.avails, 2);
        assert_eq!(s.avail_s, 60.0);
        assert_eq!(s.filled_s, 25.0);
        assert_eq!(s.fill_rate, Some(0.4167));
        assert_eq!(s.ads.get("vast"), Some(&2));
        assert_eq!(s.ads.get("slate"), Some(&2));
        assert_eq!(s.skips.get("frequency_cap"), Some(&1));
        assert_eq!(s.skips.get("timeout"), Some(&1));
        assert_eq!(s.skips.get("decision_failed"), Some(&1));
        assert_eq!(s.skips.get("ad_server_error"), Some(&1));
        assert_eq!(s.skips.get("unknown"), Some(&1));
        assert_eq!(s.skips.values().sum::<u64>(), 5, "the VMAP note is no skip");
    }

    #[test]
    fn percentiles_from_merged_histograms_land_in_the_right_bucket() {
        let mut a = Batch::default();
        let mut b = Batch::default();
        for _ in 0..90 {
            a.observe("decision_latency_ms", &[], 40.0);
        }
        for _ in 0..10 {
            b.observe("decision_latency_ms", &[], 800.0);
        }
        let mut rs = rows(&a, 0);
        rs.extend(rows(&b, MINUTE_MS));
        let s = summarize(&rs);
        let q = s.decision_latency_ms;
        assert_eq!(q.count, 100);
        let p50 = q.p50.unwrap();
        assert!((25.0..=50.0).contains(&p50), "{p50}");
        let p95 = q.p95.unwrap();
        assert!((750.0..=1000.0).contains(&p95), "{p95}");
        assert_eq!(q.mean, Some(116.0));
        // Over the top bound: reported as the top bound, not invented.
        let mut c = Batch::default();
        c.observe("detection_latency_ms", &[], 99_999.0);
        assert_eq!(
            summarize(&rows(&c, 0)).detection_latency_ms.p50,
            Some(30000.0)
        );
    }

    #[test]
    fn call_outcomes() {
        let failed = |e| Reason::call_failed("VAST http://x", e);
        let http = || failed(CallError::Failed("HTTP 500".into()));
        assert_eq!(
            call_outcome(&[failed(CallError::TimedOut), http()]),
            "timeout"
        );
        assert_eq!(call_outcome(&[failed(CallError::BudgetSpent)]), "timeout");
        assert_eq!(call_outcome(&[http()]), "error");
        let empty = Reason::NoFill {
            at: "VAST http://x".into(),
            detail: "no ads".into(),
        };
        assert_eq!(call_outcome(&[empty]), "ok");
        assert_eq!(call_outcome(&[]), "ok");
    }

    #[test]
    fn ad_servers_by_host() {
        let mut b = Batch::default();
        b.add(
            "ad_server_requests_total",
            &[("server", "ads.example"), ("outcome", "ok")],
            3.0,
        );
        b.add(
            "ad_server_requests_total",
            &[("server", "ads.example"), ("outcome", "timeout")],
            1.0,
        );
        b.observe("ad_server_latency_ms", &[("server", "ads.example")], 120.0);
        let s = summarize(&rows(&b, 0));
        let a = &s.ad_servers["ads.example"];
        assert_eq!((a.requests, a.timeouts, a.errors), (4, 1, 0));
        assert_eq!(a.latency_ms.count, 1);
    }

    #[test]
    fn report_steps_and_ranges() {
        let mut b = Batch::default();
        b.add("playlist_requests_total", &[], 5.0);
        let mut rs = rows(&b, 0);
        rs.extend(rows(&b, 2 * MINUTE_MS));
        rs.extend(rows(&b, 10 * MINUTE_MS)); // outside
        let r = report(&rs, 0, 3 * MINUTE_MS, MINUTE_MS);
        assert_eq!(r.series.len(), 3);
        assert_eq!(r.totals.playlist_requests, 10);
        let per: Vec<u64> = r
            .series
            .iter()
            .map(|p| p.summary.playlist_requests)
            .collect();
        assert_eq!(per, vec![5, 0, 5]);
        assert_eq!(step_for(0, 120 * MINUTE_MS, 120, 0), MINUTE_MS);
        assert_eq!(step_for(0, 240 * MINUTE_MS, 120, 0), 2 * MINUTE_MS);
        assert_eq!(step_for(0, 240 * MINUTE_MS, 120, HOUR_MS), HOUR_MS);
    }

    #[test]
    fn openmetrics_output_is_cumulative_and_labelled() {
        let mut b = Batch::default();
        b.observe("decision_latency_ms", &[], 40.0);
        b.observe("decision_latency_ms", &[], 800.0);
        b.add("avails_total", &[], 2.0);
        let totals: Vec<(String, String, f64)> = b
            .adds
            .iter()
            .map(|(k, v)| ("news".to_string(), k.clone(), *v))
            .collect();
        let out = openmetrics("demo", &totals, "");
        assert!(out.contains("# TYPE cf_ssai_avails counter"), "{out}");
        assert!(
            out.contains("cf_ssai_avails_total{org=\"demo\",channel=\"news\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "cf_ssai_decision_latency_ms_bucket{org=\"demo\",channel=\"news\",le=\"50\"} 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "cf_ssai_decision_latency_ms_bucket{org=\"demo\",channel=\"news\",le=\"1000\"} 2\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "cf_ssai_decision_latency_ms_bucket{org=\"demo\",channel=\"news\",le=\"+Inf\"} 2\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("cf_ssai_decision_latency_ms_count{org=\"demo\",channel=\"news\"} 2\n"),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n"));
        // One TYPE line per family.
        assert_eq!(
            out.matches("# TYPE cf_ssai_decision_latency_ms ").count(),
            1,
            "{out}"
        );
    }
}
