//! Creative conditioning on first sight (what MediaTailor does with a new
//! creative): a VAST linear creative without conditioned media becomes a
//! job, keyed by the creative's identity, with the best source to
//! transcode; the creative is skipped (`TRANSCODE_PENDING`) until a
//! conditioner has made renditions at the org's ladder and cadences and
//! registered them, and then it plays.
//!
//! Pure: identity, source choice, the job request the decision records,
//! the reasons it writes, and the lease rules the admin API applies.

use crate::ads::vast::{Creative, MediaFile};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A conditioner gets this many leases of a job; a job whose lease expired
/// this often (a conditioner died on it each time) fails.
pub const MAX_ATTEMPTS: u32 = 2;
/// How long a lease holds by default (a conditioner renews by finishing).
pub const DEFAULT_LEASE_S: u32 = 300;
/// Source files larger than this are refused (a mezzanine of a 30 s ad is
/// tens to a few hundred MB; larger is a mistake or an attack).
pub const DEFAULT_MAX_SOURCE_BYTES: u64 = 512 << 20;
/// Quotas: one org cannot monopolise conditioning. Jobs an org may have
/// queued (a creative seen beyond it is not recorded, and is seen again on
/// a later decision), jobs of one org leased at once (the rest of the
/// conditioners serve other orgs), and the cadences conditioned per job
/// (each is a full encode).
pub const MAX_QUEUED_PER_ORG: u32 = 100;
pub const MAX_RUNNING_PER_ORG: u32 = 2;
pub const MAX_CADENCES_PER_JOB: usize = 3;
/// EBU R128: integrated loudness target and the true-peak ceiling.
pub const DEFAULT_LOUDNESS_LUFS: f64 = -23.0;
pub const DEFAULT_TRUE_PEAK_DBTP: f64 = -1.0;

/// What identifies a creative across wrappers, tags and decisions: its
/// UniversalAdId when the ad server gives a real one, else its creative id
/// within its ad system, else the source URL.
pub fn identity(c: &Creative, ad_system: &str, source_url: &str) -> String {
    if let Some(u) = c
        .universal_ad_id
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty() && !u.eq_ignore_ascii_case("unknown"))
    {
        return format!("uaid:{u}");
    }
    let cid = if c.id.is_empty() { &c.ad_id } else { &c.id };
    if !cid.is_empty() {
        return format!("creative:{}:{cid}", ad_system.trim());
    }
    format!("url:{source_url}")
}

/// The job id of an identity: short, URL- and key-safe, stable.
pub fn job_id(identity: &str) -> String {
    let d = Sha256::digest(identity.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("cj-{hex}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Mezzanine,
    /// A progressive file of any decodable container (jobs recorded before
    /// WebM/MOV sources were taken say `mp4`).
    #[default]
    #[serde(alias = "mp4")]
    Progressive,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Source {
    pub url: String,
    pub kind: SourceKind,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub bitrate: u32,
    #[serde(default)]
    pub file_size: u64,
    /// The MediaFile's `type` and `codec` as the ad server wrote them:
    /// hints, never trusted (ffprobe on the downloaded file decides).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mime: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub codec: String,
    /// Why this file was chosen, for the job's reader.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// Interactive or non-video files are never a source.
fn interactive(m: &MediaFile) -> bool {
    let mime = m.mime.to_ascii_lowercase();
    !m.api_framework.trim().is_empty()
        || mime.contains("javascript")
        || mime.contains("flash")
        || mime.contains("vpaid")
}

/// The containers a conditioner decodes (its input-format allow-list:
/// MP4/MOV, WebM/Matroska, MPEG-TS), by MIME type or, when the ad server
/// gave none, by the URL's extension.
fn decodable_container(m: &MediaFile) -> bool {
    let mime = m.mime.trim().to_ascii_lowercase();
    let mime = mime.split(';').next().unwrap_or("").trim();
    if !mime.is_empty() {
        return matches!(
            mime,
            "video/mp4"
                | "video/quicktime"
                | "video/x-m4v"
                | "video/webm"
                | "video/x-matroska"
                | "video/matroska"
                | "video/mp2t"
                | "video/mpeg2"
                | "application/octet-stream"
        );
    }
    let path = m
        .url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    [".mp4", ".m4v", ".mov", ".webm", ".mkv", ".ts", ".mxf"]
        .iter()
        .any(|e| path.ends_with(e))
}

/// How the `codec` hint ranks sources of equal size and bitrate: the
/// spellings ad servers use (`H.264`, `avc1.64001f`, `h264`, `0`, `VP9`,
/// `vp09.00.10.08`, `hvc1…`, `ProRes`, `apch`…). Unknown or odd spellings
/// are still sources (rank 0): the hint is not a contract.
fn codec_rank(codec: &str) -> u8 {
    let c = codec.trim().to_ascii_lowercase();
    let any = |keys: &[&str]| keys.iter().any(|k| c.contains(k));
    if any(&[
        "prores", "apch", "apcn", "apcs", "ap4h", "ap4x", "dnxh", "avdn",
    ]) {
        6 // a mezzanine codec: the least loss
    } else if any(&["avc", "h.264", "h264", "x264"]) {
        5
    } else if any(&[
        "hvc1", "hev1", "hevc", "h.265", "h265", "av01", "av1", "vp09", "vp9",
    ]) {
        4
    } else if any(&["mpeg2", "mp2v", "mpeg-2", "mpgv"]) {
        2
    } else if any(&["vp8", "vp08"]) {
        1
    } else {
        0
    }
}

/// A file that is neither interactive nor a streaming manifest and whose
/// container the conditioner decodes.
fn conditionable(m: &MediaFile) -> bool {
    let mime = m.mime.to_ascii_lowercase();
    !interactive(m)
        && !m.is_hls()
        && !mime.contains("dash")
        && (m.mezzanine || m.delivery.is_empty() || m.delivery.eq_ignore_ascii_case("progressive"))
        && decodable_container(m)
}

/// Ranking of candidate sources: within the size limit first, then a
/// resolution at or above the ladder's top rung (else the larger), then
/// bitrate, then codec.
fn rank(m: &MediaFile, top: (u32, u32)) -> (bool, bool, u64, u32, u8) {
    let fits_size = m.file_size == 0 || m.file_size <= DEFAULT_MAX_SOURCE_BYTES;
    let covers = m.width >= top.0 && m.height >= top.1 && m.height > 0;
    let pixels = u64::from(m.width).saturating_mul(u64::from(m.height));
    (
        fits_size,
        covers,
        if covers { 0 } else { pixels },
        m.bitrate,
        codec_rank(&m.codec),
    )
}

/// The best file to condition: the Mezzanine when there is one (made for
/// this), else the best progressive file of any container the conditioner
/// decodes ([`rank`]); never VPAID or other interactive files. The choice
/// and why are on the source.
pub fn best_source(c: &Creative, top_rung: (u32, u32)) -> Result<Source, NoSource> {
    let usable: Vec<&MediaFile> = c.media_files.iter().filter(|m| conditionable(m)).collect();
    let mezz = usable.iter().filter(|m| m.mezzanine).count();
    let pool = usable.iter().filter(|m| m.mezzanine == (mezz > 0));
    let Some(m) = pool.clone().max_by_key(|m| rank(m, top_rung)) else {
        return Err(NoSource {
            skipped: c.media_files.len(),
        });
    };
    let (w, h) = top_rung;
    let why = format!(
        "{} {} {}x{}{}{}: best of {} {} (ranked: within the size limit, >= the {w}x{h} top rung, bitrate, codec)",
        if m.mezzanine { "Mezzanine" } else { "progressive" },
        if m.mime.is_empty() { "(no type)" } else { m.mime.as_ref() },
        m.width,
        m.height,
        if m.bitrate > 0 { format!(" at {} kb/s", m.bitrate) } else { String::new() },
        if m.codec.is_empty() { String::new() } else { format!(", codec {:?}", m.codec) },
        pool.count(),
        if m.mezzanine { "Mezzanine files" } else { "progressive files" },
    );
    Ok(Source {
        url: m.url.clone(),
        kind: if m.mezzanine {
            SourceKind::Mezzanine
        } else {
            SourceKind::Progressive
        },
        width: m.width,
        height: m.height,
        bitrate: m.bitrate,
        file_size: m.file_size,
        mime: m.mime.to_string(),
        codec: m.codec.to_string(),
        why,
    })
}

/// No file of a creative can be conditioned ([`best_source`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no Mezzanine and no progressive MediaFile in a container the conditioner decodes \
     (MP4/MOV, WebM/Matroska, MPEG-TS) among {skipped}; interactive files and \
     streaming manifests are never conditioned"
)]
pub struct NoSource {
    /// How many MediaFiles the creative had.
    pub skipped: usize,
}

/// Why a conditioning job failed: a stable category, what metrics count
/// and what the org reads with the job. Never a transport's or a tool's
/// raw text (a conditioner that showed curl's or ffmpeg's words would tell
/// an org what answers on the conditioner's network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// No answer, a timeout, a 5xx (retried).
    SourceUnreachable,
    /// The ad server said no (4xx), or too many redirects.
    SourceGone,
    /// The URL (or an address it resolved to) is not allowed.
    SourceRefused,
    SourceTooLarge,
    /// Not a container the conditioner decodes (a playlist, a concat
    /// list, HTML…) or no video stream in it.
    UnsupportedSource,
    /// A container it decodes, but truncated or damaged.
    CorruptSource,
    SourceTooShort,
    SourceTooLong,
    /// ffmpeg failed on a source it had probed (retried).
    EncodeFailed,
    /// The admin API refused or lost an upload (retried).
    UploadFailed,
    /// The org has no channel cadence to condition for.
    NoCadence,
    /// The org's quota of queued or running jobs is used.
    QuotaExceeded,
    /// A conditioner died holding the lease on every attempt.
    LeaseExpired,
}

impl FailureCategory {
    pub const ALL: [FailureCategory; 13] = [
        FailureCategory::SourceUnreachable,
        FailureCategory::SourceGone,
        FailureCategory::SourceRefused,
        FailureCategory::SourceTooLarge,
        FailureCategory::UnsupportedSource,
        FailureCategory::CorruptSource,
        FailureCategory::SourceTooShort,
        FailureCategory::SourceTooLong,
        FailureCategory::EncodeFailed,
        FailureCategory::UploadFailed,
        FailureCategory::NoCadence,
        FailureCategory::QuotaExceeded,
        FailureCategory::LeaseExpired,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCategory::SourceUnreachable => "source_unreachable",
            FailureCategory::SourceGone => "source_gone",
            FailureCategory::SourceRefused => "source_refused",
            FailureCategory::SourceTooLarge => "source_too_large",
            FailureCategory::UnsupportedSource => "unsupported_source",
            FailureCategory::CorruptSource => "corrupt_source",
            FailureCategory::SourceTooShort => "source_too_short",
            FailureCategory::SourceTooLong => "source_too_long",
            FailureCategory::EncodeFailed => "encode_failed",
            FailureCategory::UploadFailed => "upload_failed",
            FailureCategory::NoCadence => "no_cadence",
            FailureCategory::QuotaExceeded => "quota_exceeded",
            FailureCategory::LeaseExpired => "lease_expired",
        }
    }

    pub fn parse(s: &str) -> Option<FailureCategory> {
        FailureCategory::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether a retry can help (the source or our side may recover).
    pub fn transient(self) -> bool {
        matches!(
            self,
            FailureCategory::SourceUnreachable
                | FailureCategory::EncodeFailed
                | FailureCategory::UploadFailed
        )
    }
}

/// Shortest and longest creative conditioned: an ad is 1 s to 120 s in
/// practice; a few seconds either side are allowed, longer is a mistake
/// (or an attack on the conditioner's time).
pub const MIN_SOURCE_MS: u64 = 500;
pub const MAX_SOURCE_MS: u64 = 180_000;

/// How a creative of a measured length fits a cadence: whole segments,
/// the tail padded (by holding its last frame, and silence) by less than
/// one segment; nothing of the creative is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fit {
    pub segments: u32,
    /// The creative's own length (what beacons are timed on).
    pub duration_ms: u64,
    pub padding_ms: u64,
    /// `segments × cadence`: the conditioned length.
    pub total_ms: u64,
}

pub fn fit(duration_ms: u64, cadence_ms: u64) -> Result<Fit, FailureCategory> {
    if duration_ms < MIN_SOURCE_MS {
        return Err(FailureCategory::SourceTooShort);
    }
    if duration_ms > MAX_SOURCE_MS {
        return Err(FailureCategory::SourceTooLong);
    }
    let segments = crate::model::ad_segments(duration_ms, cadence_ms);
    Ok(Fit {
        segments,
        duration_ms,
        padding_ms: crate::model::ad_padding_ms(duration_ms, cadence_ms),
        total_ms: u64::from(segments).saturating_mul(cadence_ms),
    })
}

/// The note a job carries when the VAST `<Duration>` and the source's
/// measured length differ by more than a second (the ad server's metadata
/// is wrong, or the file is not the one it describes): the measured one
/// plays.
pub fn duration_mismatch(vast_ms: u64, source_ms: u64) -> Option<String> {
    (vast_ms > 0 && vast_ms.abs_diff(source_ms) > 1000).then(|| {
        format!(
            "VAST Duration {:.3} s but the source lasts {:.3} s: the source's length plays and beacons are timed on it",
            vast_ms as f64 / 1000.0,
            source_ms as f64 / 1000.0
        )
    })
}

/// One job as the conditioning metrics read it (a row of
/// `conditioning_jobs`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JobStat {
    pub state: String,
    #[serde(default)]
    pub failure_category: Option<String>,
    pub created_ms: i64,
    #[serde(default)]
    pub started_ms: Option<i64>,
    #[serde(default)]
    pub finished_ms: Option<i64>,
}

/// The conditioner's health for an org: queue depth, how long a creative
/// waits from first sight to playable and how long the work takes (p50 and
/// p95 over the jobs finished in the window), failures by category.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Stats {
    pub queued: u64,
    pub running: u64,
    /// Age of the oldest queued job, s (0 when none).
    pub oldest_queued_s: f64,
    pub window_s: u64,
    /// Jobs that became ready in the window.
    pub ready: u64,
    /// First sight → ready, s.
    pub latency_p50_s: f64,
    pub latency_p95_s: f64,
    /// Lease → ready (the conditioner's own time), s.
    pub work_p50_s: f64,
    pub work_p95_s: f64,
    /// Jobs failed in the window, by category label.
    pub failures: std::collections::BTreeMap<String, u64>,
}

/// Nearest-rank quantile of sorted values (0 for none).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

pub fn stats(jobs: &[JobStat], now_ms: i64, window_ms: i64) -> Stats {
    let since = now_ms.saturating_sub(window_ms);
    let secs = |ms: i64| (ms.max(0) as f64 / 100.0).round() / 10.0;
    let mut st = Stats {
        window_s: (window_ms.max(0) / 1000) as u64,
        ..Stats::default()
    };
    let (mut latency, mut work) = (Vec::new(), Vec::new());
    for j in jobs {
        match j.state.as_str() {
            "queued" => {
                st.queued = st.queued.saturating_add(1);
                st.oldest_queued_s = st
                    .oldest_queued_s
                    .max(secs(now_ms.saturating_sub(j.created_ms)));
            }
            "running" => st.running = st.running.saturating_add(1),
            "ready" => {
                if let Some(f) = j.finished_ms.filter(|f| *f >= since) {
                    st.ready = st.ready.saturating_add(1);
                    latency.push(secs(f.saturating_sub(j.created_ms)));
                    if let Some(s) = j.started_ms {
                        work.push(secs(f.saturating_sub(s)));
                    }
                }
            }
            "failed" if j.finished_ms.is_some_and(|f| f >= since) => {
                let c = j
                    .failure_category
                    .as_deref()
                    .and_then(FailureCategory::parse)
                    .map_or("uncategorised", FailureCategory::as_str);
                let n = st.failures.entry(c.to_string()).or_default();
                *n = n.saturating_add(1);
            }
            _ => {}
        }
    }
    latency.sort_by(f64::total_cmp);
    work.sort_by(f64::total_cmp);
    st.latency_p50_s = quantile(&latency, 0.5);
    st.latency_p95_s = quantile(&latency, 0.95);
    st.work_p50_s = quantile(&work, 0.5);
    st.work_p95_s = quantile(&work, 0.95);
    st
}

impl Stats {
    /// The OpenMetrics families (gauges: a snapshot of D1 at scrape time).
    pub fn openmetrics(&self, org: &str) -> String {
        let o = crate::openmetrics::label_value(org);
        let mut out = String::new();
        let mut fam = |name: &str, help: &str, lines: Vec<(String, f64)>| {
            out.push_str(&format!(
                "# TYPE cf_ssai_{name} gauge\n# HELP cf_ssai_{name} {help}\n"
            ));
            for (labels, v) in lines {
                out.push_str(&format!("cf_ssai_{name}{{org=\"{o}\"{labels}}} {v}\n"));
            }
        };
        fam(
            "conditioning_jobs",
            "Conditioning jobs waiting or leased, by state.",
            vec![
                (",state=\"queued\"".into(), self.queued as f64),
                (",state=\"running\"".into(), self.running as f64),
            ],
        );
        fam(
            "conditioning_oldest_queued_seconds",
            "Age of the oldest queued conditioning job.",
            vec![(String::new(), self.oldest_queued_s)],
        );
        let w = self.window_s;
        fam(
            "conditioning_latency_seconds",
            "First sight to playable, over the jobs ready in the window.",
            vec![
                (
                    format!(",quantile=\"0.5\",window_s=\"{w}\""),
                    self.latency_p50_s,
                ),
                (
                    format!(",quantile=\"0.95\",window_s=\"{w}\""),
                    self.latency_p95_s,
                ),
            ],
        );
        fam(
            "conditioning_work_seconds",
            "Lease to playable (the conditioner's time), over the jobs ready in the window.",
            vec![
                (
                    format!(",quantile=\"0.5\",window_s=\"{w}\""),
                    self.work_p50_s,
                ),
                (
                    format!(",quantile=\"0.95\",window_s=\"{w}\""),
                    self.work_p95_s,
                ),
            ],
        );
        fam(
            "conditioning_failures",
            "Conditioning jobs failed in the window, by category.",
            FailureCategory::ALL
                .iter()
                .map(|c| c.as_str())
                .chain(["uncategorised"])
                .map(|c| {
                    (
                        format!(",category=\"{c}\",window_s=\"{w}\""),
                        self.failures.get(c).copied().unwrap_or(0) as f64,
                    )
                })
                .collect(),
        );
        out
    }
}

/// What a decision records for a creative it had to skip: merged with any
/// job of the same id (a creative seen again only bumps `seen`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    pub id: String,
    pub identity: String,
    pub creative_id: String,
    #[serde(default)]
    pub universal_ad_id: Option<String>,
    pub ad_system: String,
    pub duration_s: f64,
    pub source: Source,
}

impl JobRequest {
    pub fn new(c: &Creative, ad_system: &str, source: Source) -> JobRequest {
        let identity = identity(c, ad_system, &source.url);
        JobRequest {
            id: job_id(&identity),
            identity,
            creative_id: if c.id.is_empty() {
                c.ad_id.clone()
            } else {
                c.id.clone()
            },
            universal_ad_id: c
                .universal_ad_id
                .clone()
                .filter(|u| !u.trim().is_empty() && !u.eq_ignore_ascii_case("unknown")),
            ad_system: ad_system.to_string(),
            duration_s: c.duration_s.unwrap_or(0.0),
            source,
        }
    }
}

/// A job's state as the decision reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    pub id: String,
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The reason a decision writes for a creative it skipped for want of
/// conditioned media.
pub fn skip_reason(job: &JobRequest, known: Option<&JobState>) -> String {
    match known {
        Some(s) if s.state == "failed" => format!(
            "TRANSCODE_FAILED: {} (job {})",
            s.reason.as_deref().unwrap_or("no reason recorded"),
            job.id
        ),
        _ => format!(
            "TRANSCODE_PENDING (job {}, {} source)",
            job.id,
            match job.source.kind {
                SourceKind::Mezzanine => "mezzanine",
                SourceKind::Progressive => "progressive",
            }
        ),
    }
}

/// Whether a recorded job must be conditioned again for this request: its
/// source changed (another URL, or another size when both are known).
pub fn source_changed(stored_url: &str, stored_size: u64, now: &Source) -> bool {
    stored_url != now.url || (stored_size > 0 && now.file_size > 0 && stored_size != now.file_size)
}

/// Per-org conditioning settings (the org's `conditioning` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `WxH:bandwidth`, comma separated (the ingest's `--ladder`).
    pub ladder: String,
    pub loudness_lufs: f64,
    pub true_peak_dbtp: f64,
    /// The content's frame rate: every ad is converted to it (23.976 to
    /// 59.94 in, this out), so the splice never changes the frame rate.
    pub fps: f64,
}

/// Rungs a ladder may have, and the pixels of its largest: conditioning
/// work grows with both, and one org's ladder must not monopolise it.
pub const MAX_LADDER_RUNGS: usize = 6;
pub const MAX_RUNG_PIXELS: u64 = 1920 * 1080;
/// Frame rates a channel's content may have.
pub const FRAME_RATES: [f64; 8] = [
    24000.0 / 1001.0,
    24.0,
    25.0,
    30000.0 / 1001.0,
    30.0,
    50.0,
    60000.0 / 1001.0,
    60.0,
];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ladder: "640x360:900000,960x540:1800000".into(),
            loudness_lufs: DEFAULT_LOUDNESS_LUFS,
            true_peak_dbtp: DEFAULT_TRUE_PEAK_DBTP,
            fps: 25.0,
        }
    }
}

/// Conditioning settings out of bounds (an org's, or the CLI's
/// `--ladder`/`--fps`); the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("loudness_lufs: between -40 and -10 LUFS")]
    Loudness,
    #[error("true_peak_dbtp: between -9 and 0 dBTP")]
    TruePeak,
    #[error("fps: one of 23.976, 24, 25, 29.97, 30, 50, 59.94, 60")]
    Fps,
    #[error("ladder: at most {MAX_LADDER_RUNGS} rungs")]
    TooManyRungs,
    #[error("ladder: {width}x{height} is over 1920x1080 pixels")]
    RungTooLarge { width: u32, height: u32 },
    #[error("ladder: {0:?} is not WxH:bandwidth (even sizes)")]
    Rung(String),
}

impl Settings {
    pub fn check(&self) -> Result<(), SettingsError> {
        if !(-40.0..=-10.0).contains(&self.loudness_lufs) {
            return Err(SettingsError::Loudness);
        }
        if !(-9.0..=0.0).contains(&self.true_peak_dbtp) {
            return Err(SettingsError::TruePeak);
        }
        if !FRAME_RATES.iter().any(|f| (f - self.fps).abs() < 0.01) {
            return Err(SettingsError::Fps);
        }
        let rungs = self.rungs()?;
        if rungs.len() > MAX_LADDER_RUNGS {
            return Err(SettingsError::TooManyRungs);
        }
        if let Some(&(width, height, _)) = rungs
            .iter()
            .find(|(w, h, _)| u64::from(*w).saturating_mul(u64::from(*h)) > MAX_RUNG_PIXELS)
        {
            return Err(SettingsError::RungTooLarge { width, height });
        }
        Ok(())
    }

    /// The ladder's rungs: (width, height, bandwidth), even sizes.
    pub fn rungs(&self) -> Result<Vec<(u32, u32, u64)>, SettingsError> {
        self.ladder
            .split(',')
            .map(|rung| {
                let parsed = rung.trim().split_once(':').and_then(|(res, bw)| {
                    let (w, h) = res.split_once('x')?;
                    Some((
                        w.parse::<u32>().ok()?,
                        h.parse::<u32>().ok()?,
                        bw.parse::<u64>().ok()?,
                    ))
                });
                match parsed {
                    Some((w, h, b))
                        if (16..=7680).contains(&w)
                            && (16..=4320).contains(&h)
                            && w % 2 == 0
                            && h % 2 == 0
                            && (150_000..=50_000_000).contains(&b) =>
                    {
                        Ok((w, h, b))
                    }
                    _ => Err(SettingsError::Rung(rung.to_string())),
                }
            })
            .collect()
    }

    /// The largest rung (the resolution a source should cover).
    pub fn top_rung(&self) -> (u32, u32) {
        self.rungs()
            .ok()
            .and_then(|r| {
                r.into_iter()
                    .max_by_key(|(w, h, _)| u64::from(*w).saturating_mul(u64::from(*h)))
            })
            .map_or((960, 540), |(w, h, _)| (w, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mf(url: &str, mime: &str, w: u32, h: u32) -> MediaFile {
        MediaFile {
            url: url.into(),
            mime: crate::ads::vast::vocabulary(mime),
            delivery: "progressive".into(),
            width: w,
            height: h,
            ..MediaFile::default()
        }
    }

    fn creative(files: Vec<MediaFile>) -> Creative {
        Creative {
            id: "cr1".into(),
            linear: true,
            duration_s: Some(15.0),
            media_files: files,
            ..Creative::default()
        }
    }

    const TOP: (u32, u32) = (960, 540);

    #[test]
    fn mezzanine_first_then_the_best_progressive_file_never_vpaid() {
        let mut mezz = mf("http://a/mezz.mov", "video/quicktime", 1920, 1080);
        mezz.mezzanine = true;
        let mut vpaid = mf("http://a/vpaid.js", "application/javascript", 0, 0);
        vpaid.api_framework = "VPAID".into();
        let low = mf("http://a/low.mp4", "video/mp4", 640, 360);
        let mut high = mf("http://a/high.mp4", "video/mp4", 1280, 720);
        high.bitrate = 2000;
        let mut hevc = mf("http://a/hevc.mp4", "video/mp4", 3840, 2160);
        hevc.codec = "hvc1.1.6.L150.90".into();
        hevc.bitrate = 1500;
        let c = creative(vec![
            vpaid.clone(),
            low.clone(),
            mezz,
            high.clone(),
            hevc.clone(),
        ]);
        let s = best_source(&c, TOP).unwrap();
        assert_eq!(
            (s.url.as_str(), s.kind),
            ("http://a/mezz.mov", SourceKind::Mezzanine)
        );
        assert!(
            s.why.starts_with("Mezzanine video/quicktime 1920x1080"),
            "{}",
            s.why
        );
        // Both cover the 960x540 top rung: the higher bitrate wins,
        // whatever the codec.
        let c = creative(vec![vpaid.clone(), low.clone(), high.clone(), hevc]);
        assert_eq!(best_source(&c, TOP).unwrap().url, "http://a/high.mp4");
        // Below the top rung: the larger.
        let c = creative(vec![low, mf("http://a/mid.mp4", "video/mp4", 854, 480)]);
        assert_eq!(best_source(&c, TOP).unwrap().url, "http://a/mid.mp4");
        let mut vpaid_mp4 = mf("http://a/v.mp4", "video/mp4", 1920, 1080);
        vpaid_mp4.api_framework = "VPAID".into();
        assert!(best_source(&creative(vec![vpaid, vpaid_mp4]), TOP).is_err());
    }

    #[test]
    fn the_codec_attribute_is_a_hint_in_any_spelling() {
        // As the IAB's own samples write it, and as some ad servers do.
        for codec in [
            "H.264",
            "h264",
            "0",
            "avc1.64001f,mp4a.40.2",
            "",
            "whatever",
        ] {
            let mut m = mf("http://a/x.mp4", "video/mp4", 1280, 720);
            m.codec = codec.into();
            let s = best_source(&creative(vec![m]), TOP);
            assert_eq!(
                s.map(|s| s.url).as_deref(),
                Ok("http://a/x.mp4"),
                "{codec:?}"
            );
        }
        // Equal otherwise: H.264 before VP8.
        let mut vp8 = mf("http://a/x.webm", "video/webm", 1280, 720);
        vp8.codec = "vp8".into();
        let mut avc = mf("http://a/x.mp4", "video/mp4", 1280, 720);
        avc.codec = "H.264".into();
        assert_eq!(
            best_source(&creative(vec![vp8, avc]), TOP).unwrap().url,
            "http://a/x.mp4"
        );
    }

    #[test]
    fn webm_mov_and_ts_sources_manifests_never() {
        let webm = mf("http://a/x.webm", "video/webm", 1920, 1080);
        assert_eq!(
            best_source(&creative(vec![webm]), TOP).unwrap().kind,
            SourceKind::Progressive
        );
        let mut prores = mf("http://a/m.mov", "video/quicktime", 1920, 1080);
        prores.codec = "ProRes 422 HQ".into();
        prores.mezzanine = true;
        prores.delivery = Default::default();
        assert_eq!(
            best_source(&creative(vec![prores]), TOP).unwrap().kind,
            SourceKind::Mezzanine
        );
        for (url, mime) in [
            ("http://a/x.ts", "video/MP2T"),
            ("http://a/x.mkv", ""),
            ("http://a/x.mov?sig=1", ""),
        ] {
            assert!(
                best_source(&creative(vec![mf(url, mime, 1280, 720)]), TOP).is_ok(),
                "{url}"
            );
        }
        let mut hls = mf("http://a/x.m3u8", "application/x-mpegURL", 1920, 1080);
        hls.delivery = "streaming".into();
        let dash = mf("http://a/x.mpd", "application/dash+xml", 1920, 1080);
        let flv = mf("http://a/x.flv", "video/x-flv", 1920, 1080);
        let mut streamed = mf("http://a/x.mp4", "video/mp4", 1920, 1080);
        streamed.delivery = "streaming".into();
        let e = best_source(&creative(vec![hls, dash, flv, streamed]), TOP)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MP4/MOV, WebM/Matroska, MPEG-TS"), "{e}");
        // A file over the size limit only when nothing else is there.
        let mut huge = mf("http://a/huge.mp4", "video/mp4", 3840, 2160);
        huge.file_size = DEFAULT_MAX_SOURCE_BYTES + 1;
        huge.bitrate = 90_000;
        let ok = mf("http://a/ok.mp4", "video/mp4", 1920, 1080);
        assert_eq!(
            best_source(&creative(vec![huge, ok]), TOP).unwrap().url,
            "http://a/ok.mp4"
        );
    }

    #[test]
    fn identity_prefers_a_real_universal_ad_id() {
        let mut c = creative(vec![]);
        assert_eq!(identity(&c, "GAM", "http://x"), "creative:GAM:cr1");
        c.universal_ad_id = Some("unknown".into());
        assert_eq!(identity(&c, "GAM", "http://x"), "creative:GAM:cr1");
        c.universal_ad_id = Some("ABCD1234000H".into());
        assert_eq!(identity(&c, "GAM", "http://x"), "uaid:ABCD1234000H");
        c.universal_ad_id = None;
        c.id.clear();
        assert_eq!(identity(&c, "GAM", "http://x"), "url:http://x");
        // Same creative through two wrappers: one job.
        let a = JobRequest::new(&creative(vec![]), "GAM", best_source_or(&[]));
        let b = JobRequest::new(
            &creative(vec![]),
            "GAM",
            best_source_or(&["http://other/x.mp4"]),
        );
        assert_eq!(a.id, b.id);
        assert!(a.id.starts_with("cj-") && a.id.len() == 19);
    }

    fn best_source_or(urls: &[&str]) -> Source {
        Source {
            url: urls.first().copied().unwrap_or("http://a/x.mp4").into(),
            ..Source::default()
        }
    }

    #[test]
    fn reasons_and_source_changes() {
        let j = JobRequest::new(&creative(vec![]), "s", best_source_or(&[]));
        assert!(skip_reason(&j, None).starts_with("TRANSCODE_PENDING"));
        let failed = JobState {
            id: j.id.clone(),
            state: "failed".into(),
            reason: Some("HTTP 404".into()),
        };
        assert!(skip_reason(&j, Some(&failed)).starts_with("TRANSCODE_FAILED: HTTP 404"));
        let s = best_source_or(&[]);
        assert!(!source_changed("http://a/x.mp4", 0, &s));
        assert!(source_changed("http://a/y.mp4", 0, &s));
        let sized = Source { file_size: 10, ..s };
        assert!(source_changed("http://a/x.mp4", 11, &sized));
        assert!(!source_changed("http://a/x.mp4", 0, &sized));
    }

    #[test]
    fn every_length_fits_whole_segments_padded_under_one() {
        for (ms, segs, pad) in [(5_000, 3, 760), (15_015, 8, 345), (30_000, 16, 720)] {
            let f = fit(ms, 1920).unwrap();
            assert_eq!(
                (f.segments, f.padding_ms, f.total_ms),
                (segs, pad, segs as u64 * 1920)
            );
        }
        for ms in (1_000..=120_000).step_by(7) {
            let f = fit(ms, 1920).unwrap();
            assert!(
                f.total_ms + crate::model::AD_TAIL_TOLERANCE_MS >= ms && f.padding_ms < 1920,
                "{ms}"
            );
        }
        assert_eq!(fit(100, 1920), Err(FailureCategory::SourceTooShort));
        assert_eq!(fit(600_000, 1920), Err(FailureCategory::SourceTooLong));
        assert!(duration_mismatch(15_000, 15_015).is_none());
        assert!(duration_mismatch(0, 15_015).is_none());
        assert!(duration_mismatch(15_000, 30_000)
            .unwrap()
            .contains("30.000 s"));
        for c in FailureCategory::ALL {
            assert_eq!(FailureCategory::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn stats_count_the_queue_latencies_and_failures() {
        let now = 10_000_000;
        let job = |state: &str,
                   created: i64,
                   started: Option<i64>,
                   finished: Option<i64>,
                   cat: Option<&str>| JobStat {
            state: state.into(),
            failure_category: cat.map(String::from),
            created_ms: created,
            started_ms: started,
            finished_ms: finished,
        };
        let mut jobs = vec![
            job("queued", now - 30_000, None, None, None),
            job("queued", now - 5_000, None, None, None),
            job("running", now - 8_000, Some(now - 4_000), None, None),
            job(
                "failed",
                now - 9_000,
                Some(now - 8_000),
                Some(now - 7_000),
                Some("source_gone"),
            ),
            job("failed", now - 9_000, None, Some(now - 7_000), None),
            // Outside the hour: not counted.
            job("failed", 0, None, Some(1), Some("corrupt_source")),
            job("ready", 0, Some(1), Some(2), None),
        ];
        for i in 1..=20 {
            jobs.push(job(
                "ready",
                now - 100_000,
                Some(now - 100_000 + 1000),
                Some(now - 100_000 + i * 1000),
                None,
            ));
        }
        let s = stats(&jobs, now, 3_600_000);
        assert_eq!((s.queued, s.running, s.ready), (2, 1, 20));
        assert_eq!(s.oldest_queued_s, 30.0);
        assert_eq!((s.latency_p50_s, s.latency_p95_s), (10.0, 19.0));
        assert_eq!((s.work_p50_s, s.work_p95_s), (9.0, 18.0));
        assert_eq!(s.failures.get("source_gone"), Some(&1));
        assert_eq!(s.failures.get("uncategorised"), Some(&1));
        assert_eq!(s.failures.get("corrupt_source"), None);
        let text = s.openmetrics("o\"1");
        assert!(
            text.contains("cf_ssai_conditioning_jobs{org=\"o_1\",state=\"queued\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("cf_ssai_conditioning_latency_seconds{org=\"o_1\",quantile=\"0.95\",window_s=\"3600\"} 19\n"), "{text}");
        assert!(
            text.contains("category=\"source_gone\",window_s=\"3600\"} 1\n"),
            "{text}"
        );
        assert_eq!(
            stats(&[], now, 1000),
            Stats {
                window_s: 1,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(Settings::default().check().is_ok());
        assert_eq!(Settings::default().top_rung(), (960, 540));
        let ntsc = Settings {
            fps: 29.97,
            ladder: "1280x720:3000000,640x360:900000".into(),
            ..Settings::default()
        };
        assert!(ntsc.check().is_ok());
        assert_eq!(ntsc.top_rung(), (1280, 720));
        for bad in [
            Settings {
                loudness_lufs: 0.0,
                ..Settings::default()
            },
            Settings {
                true_peak_dbtp: 3.0,
                ..Settings::default()
            },
            Settings {
                ladder: "640x360".into(),
                ..Settings::default()
            },
            Settings {
                ladder: "640x360:9;rm -rf /".into(),
                ..Settings::default()
            },
            Settings {
                ladder: "641x360:900000".into(),
                ..Settings::default()
            },
            Settings {
                ladder: "3840x2160:20000000".into(),
                ..Settings::default()
            },
            Settings {
                ladder: ["640x360:900000"; 7].join(","),
                ..Settings::default()
            },
            Settings {
                fps: 12.0,
                ..Settings::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
