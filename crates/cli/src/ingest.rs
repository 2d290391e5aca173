//! `cf-ssai ads ingest FILE --org O --id ID --api URL --token T
//!  [--channel SLUG] [--slate] [--cadence-ms 1920] [--fps 25]
//!  [--ladder 640x360:900000,960x540:1800000] [--public-base URL]
//!  [--containers ts,fmp4] [--loudness-lufs -23 [--true-peak-dbtp -1]]`
//!
//! `cf-ssai ads condition FILE --out DIR [the same encode flags]
//!  [--vast-duration-s S] [--encode one-pass|per-rung]`: the same
//! conditioning to a local directory, nothing uploaded (the corpus script,
//! the container's smoke test, an operator checking a creative).
//!
//! Conditions a creative of any shape an ad server sends into HLS
//! renditions that splice into the channel: the source's container is
//! sniffed and pinned (MP4/MOV, WebM/Matroska, MPEG-TS; ffmpeg reads only
//! the local file), interlaced sources are deinterlaced, rotation applied,
//! HDR (PQ/HLG) tone-mapped to SDR BT.709, any frame rate converted to the
//! channel's, any size letter- or pillar-boxed to each rung at 8-bit
//! 4:2:0, any audio layout (or none: silence) to stereo 48 kHz AAC at the
//! org's loudness. Nothing of the creative is cut: the tail is padded to a
//! whole number of segments by holding the last frame (and silence), under
//! one segment, and the ad is registered with its own length (beacons are
//! timed on it). Closed GOPs on segment boundaries; every rung from one
//! decode (a split filter graph); muxed, video-only and audio-only
//! renditions in MPEG-TS and fMP4 (one encode, segmented without
//! re-encoding). Upload to R2 and registration go through the admin API
//! (`net::Api`).

use crate::{flag, flag_or};
use cf_ssai_core::ads::conditioning::{self as cond, FailureCategory, Fit};
use cf_ssai_core::hls::media;
use cf_ssai_core::model::{AdRendition, AdSegment, TrackKind};
use serde::Deserialize;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// A conditioning failure: its category (what the org and the metrics
/// see) and a detail written by us (never a tool's raw output: that goes
/// to the conditioner's own log).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub category: FailureCategory,
    pub detail: String,
}

impl Failure {
    pub fn new(category: FailureCategory, detail: impl Into<String>) -> Failure {
        Failure {
            category,
            detail: detail.into(),
        }
    }
    /// What the job's reader sees.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.category.as_str(), self.detail)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason())
    }
}

/// EBU R128 normalisation: integrated loudness target and true-peak
/// ceiling (two-pass `loudnorm`: measure, then apply linearly).
#[derive(Clone, Copy, Debug)]
pub struct Loudness {
    pub lufs: f64,
    pub true_peak: f64,
}

/// How a creative is conditioned for one cadence.
#[derive(Clone, Debug)]
pub struct Encode {
    pub cadence_ms: u64,
    pub fps: f64,
    /// (width, height, bandwidth), even sizes.
    pub ladder: Vec<(u32, u32, u64)>,
    pub containers: Vec<Container>,
    pub loudness: Option<Loudness>,
    /// Every rung from one decode (split filter) or one ffmpeg run per rung.
    pub one_pass: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Ts,
    Fmp4,
}

impl Encode {
    fn from_args(args: &[String]) -> Result<Encode, String> {
        let containers = flag(args, "--containers")
            .unwrap_or("ts,fmp4")
            .split(',')
            .map(|c| match c.trim() {
                "ts" => Ok(Container::Ts),
                "fmp4" => Ok(Container::Fmp4),
                bad => Err(format!("--containers: {bad:?} is not ts or fmp4")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let loudness = match flag(args, "--loudness-lufs") {
            Some(v) => Some(Loudness {
                lufs: v.parse().map_err(|_| format!("--loudness-lufs: {v:?}"))?,
                true_peak: flag_or(args, "--true-peak-dbtp", -1.0)?,
            }),
            None => None,
        };
        let settings = cond::Settings {
            ladder: flag(args, "--ladder")
                .unwrap_or("640x360:900000,960x540:1800000")
                .into(),
            fps: flag_or(args, "--fps", 25.0)?,
            ..cond::Settings::default()
        };
        // The same bounds as an org's settings (rungs, sizes, frame rates).
        settings
            .check()
            .map_err(|e| format!("--ladder/--fps: {e}"))?;
        let ladder = settings.rungs().map_err(|e| e.to_string())?;
        Ok(Encode {
            cadence_ms: flag_or(args, "--cadence-ms", 1920)?,
            fps: settings.fps,
            ladder,
            containers,
            loudness,
            one_pass: match flag(args, "--encode").unwrap_or("one-pass") {
                "one-pass" => true,
                "per-rung" => false,
                bad => return Err(format!("--encode: {bad:?} is not one-pass or per-rung")),
            },
        })
    }
}

/// `ads ingest`: condition, upload, register.
pub fn run(args: &[String]) -> Result<(), String> {
    let file = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .ok_or("ads ingest FILE required")?;
    let api = flag(args, "--api")
        .ok_or("--api required")?
        .trim_end_matches('/');
    let id = flag(args, "--id").ok_or("--id required")?;
    let spec = Spec {
        file,
        org: flag(args, "--org").ok_or("--org required")?,
        id,
        api,
        token: flag(args, "--token").ok_or("--token required")?,
        public: flag(args, "--public-base")
            .unwrap_or(api)
            .trim_end_matches('/'),
        slate: args.iter().any(|a| a == "--slate"),
        channel: flag(args, "--channel"),
        encode: Encode::from_args(args)?,
        creative_id: flag(args, "--creative-id").unwrap_or(id),
        universal_ad_id: flag(args, "--universal-ad-id"),
        tracking: flag(args, "--tracking")
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .unwrap_or(serde_json::json!({})),
        source: None,
        vast_duration_ms: 0,
        log: &Log::new(id),
    };
    println!("{}", ingest(&spec).map_err(|f| f.reason())?);
    Ok(())
}

/// `ads condition`: the conditioning alone, into `--out`.
pub fn run_condition(args: &[String]) -> Result<(), String> {
    let file = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .ok_or("ads condition FILE --out DIR required")?;
    let out = PathBuf::from(flag(args, "--out").ok_or("--out DIR required")?);
    let enc = Encode::from_args(args)?;
    let vast_ms = cf_ssai_core::model::secs_to_ms(flag_or(args, "--vast-duration-s", 0.0)?);
    let log = Log::new(file);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    match condition(Path::new(file), &enc, &out, vast_ms, &log) {
        Ok(c) => {
            let summary = c.summary();
            std::fs::write(out.join("conditioned.json"), summary.to_string())
                .map_err(|e| e.to_string())?;
            println!("{summary}");
            Ok(())
        }
        Err(f) => {
            println!(
                "{}",
                serde_json::json!({"error": f.category.as_str(), "detail": f.detail})
            );
            Err(f.reason())
        }
    }
}

/// One creative to condition and register.
pub struct Spec<'a> {
    pub file: &'a str,
    pub org: &'a str,
    pub id: &'a str,
    pub api: &'a str,
    pub token: &'a str,
    pub public: &'a str,
    pub slate: bool,
    pub channel: Option<&'a str>,
    pub encode: Encode,
    pub creative_id: &'a str,
    pub universal_ad_id: Option<&'a str>,
    pub tracking: serde_json::Value,
    /// Set by the conditioner: the ad server's source (URL, size) it was
    /// made from; the ad is then matched to VAST only, never a house ad.
    pub source: Option<(String, u64)>,
    /// The VAST `<Duration>` (0: none), compared with the source's.
    pub vast_duration_ms: u64,
    pub log: &'a Log,
}

/// Condition, upload and register one creative; the summary as JSON.
pub fn ingest(spec: &Spec) -> Result<serde_json::Value, Failure> {
    let work =
        std::env::temp_dir().join(format!("cf-ssai-ingest-{}-{}", spec.id, std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)
        .map_err(|e| Failure::new(FailureCategory::EncodeFailed, format!("work dir: {e}")))?;
    let result = (|| {
        let c = condition(
            Path::new(spec.file),
            &spec.encode,
            &work,
            spec.vast_duration_ms,
            spec.log,
        )?;
        register(spec, &c)?;
        Ok(c.summary())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn register(spec: &Spec, c: &Conditioned) -> Result<(), Failure> {
    let kind = if spec.slate { "slates" } else { "ads" };
    let up = Upload {
        api: crate::net::Api::new(spec.token),
        base: spec.api,
        public: spec.public,
        prefix: format!("{}/{kind}/{}", spec.org, spec.id),
        cadence: c.cadence_ms as f64 / 1000.0,
    };
    spec.log.stage("upload", 0.0);
    let mut renditions = Vec::with_capacity(c.renditions.len());
    for (i, r) in c.renditions.iter().enumerate() {
        renditions.push(up.rendition(r)?);
        spec.log
            .stage("upload", (i + 1) as f64 / c.renditions.len() as f64);
    }
    let api = spec.api;
    let (path, body) = if spec.slate {
        (
            format!("{api}/api/orgs/{}/slates/{}", spec.org, spec.id),
            serde_json::json!({"channel": spec.channel, "renditions": renditions}),
        )
    } else {
        (
            format!("{api}/api/orgs/{}/ads/{}", spec.org, spec.id),
            serde_json::json!({
                "creative_id": spec.creative_id,
                "universal_ad_id": spec.universal_ad_id,
                "channel": spec.channel,
                "duration_s": c.fit.duration_ms as f64 / 1000.0,
                "padding_s": c.fit.padding_ms as f64 / 1000.0,
                "cadence_ms": c.cadence_ms,
                "renditions": renditions,
                "tracking": spec.tracking,
                "conditioned": spec.source.is_some(),
                "source_url": spec.source.as_ref().map(|s| s.0.clone()),
                "source_size": spec.source.as_ref().map_or(0, |s| s.1),
            }),
        )
    };
    let bodyf = c.dir.join("register.json");
    std::fs::write(&bodyf, body.to_string())
        .map_err(|e| Failure::new(FailureCategory::UploadFailed, e.to_string()))?;
    up.api
        .put_file(&path, &bodyf, "application/json")
        .map_err(|e| Failure::new(FailureCategory::UploadFailed, e))
}

// ---------------------------------------------------------------------
// Progress: a bar on a terminal, structured log lines otherwise.

/// Where progress goes: stderr, as a bar when it is a terminal, else one
/// JSON line per stage change or every 10 % (the conditioner's log).
pub struct Log {
    label: String,
    tty: bool,
    /// The stage and percentage last shown.
    last: std::cell::RefCell<(String, i32)>,
    started: Instant,
}

impl Log {
    pub fn new(label: &str) -> Log {
        Log {
            label: label.to_string(),
            tty: std::io::stderr().is_terminal(),
            last: std::cell::RefCell::new((String::new(), -1)),
            started: Instant::now(),
        }
    }

    /// `stage` is `probe`, `loudness`, `encode`, `segment` or `upload`;
    /// `done` in 0..=1.
    pub fn stage(&self, stage: &str, done: f64) {
        let pct = (done.clamp(0.0, 1.0) * 100.0).round() as i32;
        let same_stage = self.last.borrow().0 == stage;
        let last_pct = self.last.borrow().1;
        if self.tty {
            if same_stage && pct == last_pct {
                return;
            }
            let filled = (pct / 5) as usize;
            eprint!(
                "\r{:<10} [{}{}] {pct:>3}% {:>6.1}s",
                stage,
                "#".repeat(filled),
                " ".repeat(20 - filled),
                self.started.elapsed().as_secs_f64()
            );
            if pct == 100 {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        } else {
            if same_stage && pct / 10 == last_pct / 10 {
                return;
            }
            eprintln!(
                "{}",
                serde_json::json!({"event": "conditioning_progress", "creative": self.label,
                    "stage": stage, "percent": pct,
                    "seconds": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0})
            );
        }
        *self.last.borrow_mut() = (stage.to_string(), pct);
    }
}

// ---------------------------------------------------------------------
// Source: sniffed, pinned, probed.

/// The containers ffmpeg may read a source as: pinned from the first
/// bytes, so a "creative" that is really a playlist, a concat list or
/// anything else never reaches a demuxer that fetches or includes files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinned {
    Mov,
    Matroska,
    MpegTs,
}

impl Pinned {
    fn demuxer(self) -> &'static str {
        match self {
            Pinned::Mov => "mov",
            Pinned::Matroska => "matroska",
            Pinned::MpegTs => "mpegts",
        }
    }
}

/// The container by its first bytes: ISO BMFF/QuickTime boxes, the EBML
/// magic, or MPEG-TS sync bytes (188- or 192-byte packets).
pub fn sniff(head: &[u8]) -> Option<Pinned> {
    const BOXES: [&[u8; 4]; 8] = [
        b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot", b"uuid",
    ];
    if head.len() >= 8 && BOXES.iter().any(|b| &head[4..8] == *b) {
        return Some(Pinned::Mov);
    }
    if head.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
        return Some(Pinned::Matroska);
    }
    for (first, size) in [(0usize, 188usize), (4, 192)] {
        let syncs = (0..3)
            .map(|k| first + k * size)
            .take_while(|&i| i < head.len())
            .collect::<Vec<_>>();
        if syncs.len() >= 2 && syncs.iter().all(|&i| head[i] == 0x47) {
            return Some(Pinned::MpegTs);
        }
    }
    None
}

/// ffmpeg/ffprobe input options for a pinned local file: only the `file`
/// protocol, the sniffed demuxer.
fn input_args(pinned: Pinned, file: &Path) -> Vec<String> {
    vec![
        "-protocol_whitelist".into(),
        "file".into(),
        "-f".into(),
        pinned.demuxer().into(),
        "-i".into(),
        file.display().to_string(),
    ]
}

/// What conditioning needs to know about a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub pinned: Pinned,
    pub format: String,
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    pub pix_fmt: String,
    pub fps: f64,
    pub interlaced: bool,
    /// `pq` or `hlg` when the transfer is HDR.
    pub hdr: Option<&'static str>,
    pub rotation: i32,
    /// Sample (pixel) aspect ratio: 8:9 for 4:3 SD, 4:3 for HDV.
    pub sar: f64,
    pub audio: Option<(String, u32)>,
    pub duration_ms: u64,
}

impl Probe {
    fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "container": self.pinned.demuxer(), "format": self.format,
            "video_codec": self.video_codec, "width": self.width, "height": self.height,
            "pix_fmt": self.pix_fmt, "fps": (self.fps * 1000.0).round() / 1000.0,
            "interlaced": self.interlaced, "hdr": self.hdr, "rotation": self.rotation,
            "sar": (self.sar * 1000.0).round() / 1000.0,
            "audio_codec": self.audio.as_ref().map(|a| a.0.clone()),
            "audio_channels": self.audio.as_ref().map(|a| a.1),
            "duration_s": self.duration_ms as f64 / 1000.0,
        })
    }
}

#[derive(Deserialize, Default)]
struct FfProbe {
    #[serde(default)]
    streams: Vec<FfStream>,
    #[serde(default)]
    format: FfFormat,
}

#[derive(Deserialize, Default)]
struct FfFormat {
    #[serde(default)]
    format_name: String,
    #[serde(default)]
    duration: Option<String>,
}

#[derive(Deserialize, Default)]
struct FfStream {
    #[serde(default)]
    codec_type: String,
    #[serde(default)]
    codec_name: String,
    #[serde(default)]
    width: u32,
    #[serde(default)]
    height: u32,
    #[serde(default)]
    pix_fmt: String,
    #[serde(default)]
    field_order: String,
    #[serde(default)]
    sample_aspect_ratio: String,
    #[serde(default)]
    color_transfer: String,
    #[serde(default)]
    avg_frame_rate: String,
    #[serde(default)]
    r_frame_rate: String,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    channels: u32,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    disposition: std::collections::BTreeMap<String, i64>,
}

fn rate(r: &str) -> f64 {
    match r.split_once(['/', ':']) {
        Some((n, d)) => match (n.parse::<f64>(), d.parse::<f64>()) {
            (Ok(n), Ok(d)) if d > 0.0 => n / d,
            _ => 0.0,
        },
        None => r.parse().unwrap_or(0.0),
    }
}

/// `HH:MM:SS.fff` (Matroska's DURATION tag) or seconds.
fn seconds(s: &str) -> Option<f64> {
    let mut total = 0.0;
    for part in s.trim().split(':') {
        total = total * 60.0 + part.parse::<f64>().ok()?;
    }
    (total.is_finite() && total > 0.0).then_some(total)
}

/// Read the source's streams (headers only, pinned demuxer, local file).
pub fn probe(file: &Path) -> Result<Probe, Failure> {
    let mut head = [0u8; 600];
    let n = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| Failure::new(FailureCategory::EncodeFailed, format!("source: {e}")))?;
    let pinned = sniff(&head[..n]).ok_or_else(|| {
        Failure::new(
            FailureCategory::UnsupportedSource,
            "not an MP4/MOV, WebM/Matroska or MPEG-TS file",
        )
    })?;
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .args(input_args(pinned, file))
        .output()
        .map_err(|e| Failure::new(FailureCategory::EncodeFailed, format!("ffprobe: {e}")))?;
    let parsed: FfProbe = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if !out.status.success() || parsed.streams.is_empty() {
        log_tool("ffprobe", &out.stderr);
        return Err(Failure::new(
            FailureCategory::CorruptSource,
            format!(
                "the {} container could not be read (truncated or damaged)",
                pinned.demuxer()
            ),
        ));
    }
    from_ffprobe(pinned, parsed)
}

fn from_ffprobe(pinned: Pinned, p: FfProbe) -> Result<Probe, Failure> {
    let video = p
        .streams
        .iter()
        .find(|s| {
            s.codec_type == "video"
                && s.disposition.get("attached_pic").copied().unwrap_or(0) == 0
                && s.width > 0
        })
        .ok_or_else(|| {
            Failure::new(
                FailureCategory::UnsupportedSource,
                "no video stream (cover art and audio-only files are not creatives)",
            )
        })?;
    let audio = p.streams.iter().find(|s| s.codec_type == "audio");
    let duration = video
        .duration
        .as_deref()
        .and_then(seconds)
        .or_else(|| video.tags.get("DURATION").and_then(|d| seconds(d)))
        .or_else(|| p.format.duration.as_deref().and_then(seconds))
        .ok_or_else(|| {
            Failure::new(
                FailureCategory::CorruptSource,
                "no duration (truncated or a live stream)",
            )
        })?;
    let rotation = video
        .side_data_list
        .iter()
        .find_map(|d| d.get("rotation").and_then(serde_json::Value::as_f64))
        .map(|r| r.round() as i32)
        .or_else(|| video.tags.get("rotate").and_then(|r| r.parse().ok()))
        .unwrap_or(0);
    let fps = match rate(&video.avg_frame_rate) {
        f if f > 0.0 && f < 1000.0 => f,
        _ => rate(&video.r_frame_rate),
    };
    Ok(Probe {
        pinned,
        format: p.format.format_name,
        video_codec: video.codec_name.clone(),
        width: video.width,
        height: video.height,
        pix_fmt: video.pix_fmt.clone(),
        fps,
        interlaced: matches!(video.field_order.as_str(), "tt" | "bb" | "tb" | "bt"),
        hdr: match video.color_transfer.as_str() {
            "smpte2084" => Some("pq"),
            "arib-std-b67" => Some("hlg"),
            _ => None,
        },
        rotation,
        sar: match rate(&video.sample_aspect_ratio) {
            r if r > 0.1 && r < 10.0 => r,
            _ => 1.0,
        },
        audio: audio.map(|a| (a.codec_name.clone(), a.channels)),
        duration_ms: (duration * 1000.0).round() as u64,
    })
}

/// A tool's stderr goes to our log only, trimmed.
fn log_tool(tool: &str, stderr: &[u8]) {
    let text = String::from_utf8_lossy(stderr);
    let tail: String = text
        .chars()
        .rev()
        .take(600)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    eprintln!(
        "{}",
        serde_json::json!({"event": "conditioning_tool_error", "tool": tool, "stderr": tail.trim()})
    );
}

// ---------------------------------------------------------------------
// Conditioning.

/// One rendition conditioned into a local directory.
#[derive(Debug, Clone)]
pub struct LocalRendition {
    pub kind: TrackKind,
    pub bandwidth: u64,
    pub resolution: Option<String>,
    pub container: Container,
    pub dir: PathBuf,
    pub init: Option<PathBuf>,
    /// (file, duration s, EXTINF text).
    pub segments: Vec<(PathBuf, f64, String)>,
    pub codecs: String,
}

/// A creative conditioned for one cadence.
pub struct Conditioned {
    pub dir: PathBuf,
    pub probe: Probe,
    pub fit: Fit,
    pub cadence_ms: u64,
    pub renditions: Vec<LocalRendition>,
    pub notes: Vec<String>,
    pub loudness_filter: Option<String>,
    pub seconds: f64,
}

impl Conditioned {
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "source": self.probe.summary(),
            "duration_s": self.fit.duration_ms as f64 / 1000.0,
            "segments": self.fit.segments,
            "padding_s": self.fit.padding_ms as f64 / 1000.0,
            "cadence_ms": self.cadence_ms,
            "renditions": self.renditions.iter().map(|r| serde_json::json!({
                "kind": r.kind, "container": match r.container { Container::Ts => "ts", Container::Fmp4 => "fmp4" },
                "bandwidth": r.bandwidth, "resolution": r.resolution, "codecs": r.codecs,
                "playlist": r.dir.join("playlist.m3u8"), "segments": r.segments.len(),
            })).collect::<Vec<_>>(),
            "notes": self.notes,
            "loudness_filter": self.loudness_filter,
            "seconds": (self.seconds * 10.0).round() / 10.0,
        })
    }
}

/// Condition `file` for one cadence into `dir`: probe, measure loudness,
/// encode every rung, segment every rendition.
pub fn condition(
    file: &Path,
    enc: &Encode,
    dir: &Path,
    vast_duration_ms: u64,
    log: &Log,
) -> Result<Conditioned, Failure> {
    let t0 = Instant::now();
    log.stage("probe", 0.0);
    let probe = probe(file)?;
    let fit = cond::fit(probe.duration_ms, enc.cadence_ms).map_err(|c| {
        Failure::new(
            c,
            format!(
                "{:.3} s (creatives of {:.1} to {:.0} s are conditioned)",
                probe.duration_ms as f64 / 1000.0,
                cond::MIN_SOURCE_MS as f64 / 1000.0,
                cond::MAX_SOURCE_MS as f64 / 1000.0
            ),
        )
    })?;
    let mut notes: Vec<String> = cond::duration_mismatch(vast_duration_ms, probe.duration_ms)
        .into_iter()
        .collect();
    if fit.padding_ms > 0 {
        notes.push(format!(
            "{:.3} s creative in {} segments of {} ms: the last frame held {:.3} s",
            fit.duration_ms as f64 / 1000.0,
            fit.segments,
            enc.cadence_ms,
            fit.padding_ms as f64 / 1000.0
        ));
    }
    log.stage("probe", 1.0);
    let loudness_filter = match enc.loudness {
        Some(l) if probe.audio.is_some() => {
            log.stage("loudness", 0.0);
            let f = loudness_filter(file, &probe, l, fit.total_ms)?;
            if f.is_none() {
                notes.push("silent audio: not normalised".into());
            }
            log.stage("loudness", 1.0);
            f
        }
        _ => None,
    };
    let plan = Plan {
        probe: &probe,
        fit,
        enc,
        audio_filter: loudness_filter.as_deref(),
    };
    let groups: Vec<Vec<usize>> = if enc.one_pass {
        vec![(0..enc.ladder.len()).collect()]
    } else {
        (0..enc.ladder.len()).map(|i| vec![i]).collect()
    };
    log.stage("encode", 0.0);
    let n_groups = groups.len();
    for (g, rungs) in groups.iter().enumerate() {
        let args = plan.ffmpeg_args(file, rungs, dir);
        run_ffmpeg(&args, fit.total_ms, |done| {
            log.stage("encode", (g as f64 + done) / n_groups as f64)
        })?;
    }
    log.stage("encode", 1.0);
    let mut renditions = Vec::new();
    let total = enc.ladder.len() * enc.containers.len() * 2 + enc.containers.len();
    for (i, &(w, h, bw)) in enc.ladder.iter().enumerate() {
        let mp4 = dir.join(format!("enc{i}.mp4"));
        let level = h264_level(&mp4);
        let res = format!("{w}x{h}");
        // Muxed for muxed channels; for demuxed ones (audio in an audio
        // group) the same encode without audio, and once its audio alone:
        // remuxed, never re-encoded, so every track keeps the timing. The
        // bandwidths differ (audio 128 kb/s, video-only the rung less
        // that), so each rendition has its own routes.
        let mut tracks = vec![
            (TrackKind::Muxed, bw, Some(res.clone())),
            (
                TrackKind::Video,
                bw.saturating_sub(AUDIO_BANDWIDTH),
                Some(res.clone()),
            ),
        ];
        if i == 0 {
            tracks.push((TrackKind::Audio, AUDIO_BANDWIDTH, None));
        }
        for (kind, bandwidth, res) in tracks {
            for &c in &enc.containers {
                let out = dir.join(format!("{bw}/{kind:?}-{c:?}"));
                std::fs::create_dir_all(&out)
                    .map_err(|e| Failure::new(FailureCategory::EncodeFailed, e.to_string()))?;
                let mut r = segment(&mp4, &out, enc.cadence_ms, c, kind)?;
                if r.segments.len() != fit.segments as usize {
                    return Err(Failure::new(
                        FailureCategory::EncodeFailed,
                        format!(
                            "{kind:?} {c:?} at {res:?}: {} segments, {} expected",
                            r.segments.len(),
                            fit.segments
                        ),
                    ));
                }
                r.bandwidth = bandwidth;
                r.resolution.clone_from(&res);
                r.codecs = match kind {
                    TrackKind::Audio => "mp4a.40.2".into(),
                    TrackKind::Video => format!("avc1.4d40{level:02x}"),
                    _ => format!("avc1.4d40{level:02x},mp4a.40.2"),
                };
                renditions.push(r);
                log.stage("segment", renditions.len() as f64 / total as f64);
            }
        }
    }
    Ok(Conditioned {
        dir: dir.to_path_buf(),
        probe,
        fit,
        cadence_ms: enc.cadence_ms,
        renditions,
        notes,
        loudness_filter,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The pre-processing every audio path shares (measurement and encode):
/// 48 kHz stereo (5.1 and other layouts downmixed).
const AUDIO_IN: &str =
    "aresample=48000:ocl=stereo,aformat=sample_rates=48000:channel_layouts=stereo";

/// EBU R128 in two passes: measure the source's integrated loudness and
/// true peak as it will play (downmixed to stereo 48 kHz and padded with
/// silence to whole segments: R128's gate keeps the 400 ms blocks that
/// straddle the end of the sound, which on a 1 s spot are ~1 LU of the
/// result), with ffmpeg's `ebur128` (the reference meter), then the filter
/// that brings it to the target: one gain (`volume`) when that keeps the
/// true peak under the ceiling, the usual case, else `loudnorm`, which
/// limits the peaks. `None` for a silent track (nothing to normalise).
/// (`loudnorm`'s own first pass was not used to measure: on a 5.1 PCM
/// mezzanine it read 7.8 LU below what `ebur128` reads on the same chain,
/// and its linear second pass needs 3 s of look-ahead a 1 s spot lacks.)
fn loudness_filter(
    file: &Path,
    probe: &Probe,
    l: Loudness,
    total_ms: u64,
) -> Result<Option<String>, Failure> {
    let total = total_ms as f64 / 1000.0;
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats"])
        .args(input_args(probe.pinned, file))
        .args([
            "-vn",
            "-af",
            &format!(
                "{AUDIO_IN},apad=whole_dur={total:.3},atrim=duration={total:.3},ebur128=peak=true"
            ),
            "-f",
            "null",
            "-",
        ])
        .output()
        .map_err(|e| Failure::new(FailureCategory::EncodeFailed, format!("ffmpeg: {e}")))?;
    let err = String::from_utf8_lossy(&out.stderr);
    let Some((i, tp)) = ebur128_summary(&err).filter(|_| out.status.success()) else {
        log_tool("ffmpeg loudness", &out.stderr);
        return Err(Failure::new(
            FailureCategory::CorruptSource,
            "the audio could not be decoded to measure its loudness",
        ));
    };
    // Silence (or near it): below the meter's absolute gate.
    if i <= -69.0 {
        return Ok(None);
    }
    let gain = l.lufs - i;
    if tp + gain <= l.true_peak {
        return Ok(Some(format!("volume={gain:.2}dB")));
    }
    Ok(Some(format!(
        "loudnorm=I={}:TP={}:LRA=11,aresample=48000",
        l.lufs, l.true_peak
    )))
}

/// (integrated loudness LUFS, true peak dBFS) from `ebur128`'s summary.
fn ebur128_summary(log: &str) -> Option<(f64, f64)> {
    let summary = &log[log.rfind("Summary:")?..];
    let value = |section: &str, key: &str| -> Option<f64> {
        let at = summary.find(section)?;
        let rest = &summary[at..];
        let k = rest.find(key)?;
        rest[k + key.len()..]
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    };
    Some((
        value("Integrated loudness:", "I:")?,
        value("True peak:", "Peak:").unwrap_or(0.0),
    ))
}

/// Everything one ffmpeg encode needs.
struct Plan<'a> {
    probe: &'a Probe,
    fit: Fit,
    enc: &'a Encode,
    audio_filter: Option<&'a str>,
}

impl Plan<'_> {
    /// The filter graph for some rungs: decode once, deinterlace, tone-map,
    /// convert the frame rate, hold the last frame to whole segments, then
    /// per rung scale into the box (letter/pillar-boxed), 8-bit 4:2:0
    /// BT.709 limited range. Audio: stereo 48 kHz, loudness, silence to
    /// the same length.
    fn filter_graph(&self, rungs: &[usize]) -> String {
        let p = self.probe;
        let total = self.fit.total_ms as f64 / 1000.0;
        let mut v = vec!["setpts=PTS-STARTPTS".to_string()];
        if p.interlaced {
            v.push("bwdif=mode=send_frame:deint=interlaced".into());
        }
        if let Some(hdr) = p.hdr {
            // PQ/HLG (BT.2020) to SDR BT.709: linear light, BT.709
            // primaries, a tone curve (Hable keeps highlights), back to
            // BT.709 video. The input's transfer and matrix are named, not
            // read from frame tags (often missing on mezzanines).
            let tin = if hdr == "hlg" {
                "arib-std-b67"
            } else {
                "smpte2084"
            };
            v.push(format!(
                "zscale=tin={tin}:min=bt2020nc:pin=bt2020:t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0,zscale=t=bt709:m=bt709:r=tv"
            ));
        }
        if (p.sar - 1.0).abs() > 0.001 {
            // Anamorphic (4:3 SD at 720x480, HDV at 1440x1080): square
            // the pixels first, so each rung boxes the picture at the shape
            // it is shown at, not the shape it is stored at.
            v.push("scale=w=trunc(iw*sar/2)*2:h=ih,setsar=1".into());
        }
        v.push(format!("fps={}", fps_expr(self.enc.fps)));
        // Hold the last frame past the end, then cut at whole segments.
        v.push(format!(
            "tpad=stop_mode=clone:stop_duration={:.3}",
            self.fit.padding_ms as f64 / 1000.0 + 1.0
        ));
        v.push(format!("trim=duration={total:.3}"));
        v.push(format!("split={}", rungs.len()));
        let mut g = format!(
            "[0:v:0]{}{}",
            v.join(","),
            rungs.iter().map(|i| format!("[vs{i}]")).collect::<String>()
        );
        for &i in rungs {
            let (w, h, _) = self.enc.ladder[i];
            g.push_str(&format!(
                ";[vs{i}]scale=w={w}:h={h}:force_original_aspect_ratio=decrease:force_divisible_by=2:out_color_matrix=bt709:out_range=tv,\
                 pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:black,setsar=1,format=yuv420p[v{i}]"
            ));
        }
        let src = if p.audio.is_some() {
            "[0:a:0]"
        } else {
            "[1:a:0]"
        };
        let mut a = vec!["asetpts=PTS-STARTPTS".to_string(), AUDIO_IN.to_string()];
        if let Some(f) = self.audio_filter {
            a.push(f.to_string());
        }
        a.push(format!("apad=whole_dur={total:.3}"));
        a.push(format!("atrim=duration={total:.3}"));
        a.push(format!("asplit={}", rungs.len()));
        g.push_str(&format!(
            ";{src}{}{}",
            a.join(","),
            rungs.iter().map(|i| format!("[a{i}]")).collect::<String>()
        ));
        g
    }

    fn ffmpeg_args(&self, file: &Path, rungs: &[usize], dir: &Path) -> Vec<String> {
        let enc = self.enc;
        let cadence = enc.cadence_ms as f64 / 1000.0;
        let total = format!("{:.3}", self.fit.total_ms as f64 / 1000.0);
        let gop = (cadence * enc.fps).round().max(1.0) as u64;
        let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostats", "-y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // A damaged MP4/MOV/Matroska source stops the encode (its tail
        // would otherwise be "padded" with a frozen frame); TS sources
        // start mid-GOP by nature and are decoded leniently.
        if self.probe.pinned != Pinned::MpegTs {
            args.push("-xerror".into());
        }
        args.extend(input_args(self.probe.pinned, file));
        if self.probe.audio.is_none() {
            // Content is muxed with audio: an ad without any gets silence,
            // so every rendition keeps the same tracks across the splice.
            args.extend(
                [
                    "-f",
                    "lavfi",
                    "-t",
                    &total,
                    "-i",
                    "anullsrc=r=48000:cl=stereo",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
        }
        args.push("-filter_complex".into());
        args.push(self.filter_graph(rungs));
        for &i in rungs {
            let (_, _, bw) = enc.ladder[i];
            let vbr = (bw * 85 / 100).saturating_sub(96_000).max(100_000);
            let s = |x: &str| x.to_string();
            args.extend([
                s("-map"),
                format!("[v{i}]"),
                s("-map"),
                format!("[a{i}]"),
                s("-c:v"),
                s("libx264"),
                s("-preset"),
                s("veryfast"),
                s("-profile:v"),
                s("main"),
                // No B-frames: audio and video then end together at every
                // segment boundary (B-frame delay shifts video ~64 ms past
                // the audio, and hls.js stalls at interstitial boundaries).
                s("-bf"),
                s("0"),
                s("-b:v"),
                vbr.to_string(),
                s("-maxrate"),
                vbr.to_string(),
                s("-bufsize"),
                (vbr * 2).to_string(),
                s("-g"),
                gop.to_string(),
                s("-keyint_min"),
                gop.to_string(),
                s("-sc_threshold"),
                s("0"),
                s("-force_key_frames"),
                format!("expr:gte(t,n_forced*{cadence})"),
                s("-colorspace"),
                s("bt709"),
                s("-color_primaries"),
                s("bt709"),
                s("-color_trc"),
                s("bt709"),
                s("-color_range"),
                s("tv"),
                s("-c:a"),
                s("aac"),
                s("-ar"),
                s("48000"),
                s("-ac"),
                s("2"),
                s("-b:a"),
                s("96k"),
                s("-t"),
                total.clone(),
                dir.join(format!("enc{i}.mp4")).display().to_string(),
            ]);
        }
        args.extend(["-progress", "pipe:1"].iter().map(|s| s.to_string()));
        args
    }
}

/// The `fps` filter's rate: NTSC rates as exact fractions.
fn fps_expr(fps: f64) -> String {
    for (num, den) in [(24000, 1001), (30000, 1001), (60000, 1001)] {
        if (fps - f64::from(num) / f64::from(den)).abs() < 0.01 {
            return format!("{num}/{den}");
        }
    }
    format!("{}", fps.round())
}

/// Run ffmpeg with `-progress pipe:1`, reporting the share of `total_ms`
/// encoded.
fn run_ffmpeg(args: &[String], total_ms: u64, progress: impl Fn(f64)) -> Result<(), Failure> {
    let mut child = Command::new("ffmpeg")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(FailureCategory::EncodeFailed, format!("ffmpeg: {e}")))?;
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_end(&mut buf);
        }
        buf
    });
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(us) = line.strip_prefix("out_time_us=") {
                if let Ok(us) = us.trim().parse::<u64>() {
                    progress((us as f64 / 1000.0 / total_ms.max(1) as f64).min(1.0));
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| Failure::new(FailureCategory::EncodeFailed, format!("ffmpeg: {e}")))?;
    let stderr = err_thread.join().unwrap_or_default();
    if !status.success() {
        log_tool("ffmpeg encode", &stderr);
        return Err(Failure::new(
            FailureCategory::CorruptSource,
            "the source could not be decoded to its end (truncated or damaged)",
        ));
    }
    Ok(())
}

/// The H.264 level x264 chose (for the CODECS attribute); 3.1 if unknown.
fn h264_level(mp4: &Path) -> u8 {
    Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=level", "-of", "csv=p=0"])
        .arg(mp4)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u8>().ok())
        .filter(|l| (10..=62).contains(l))
        .unwrap_or(31)
}

/// Audio-only renditions' BANDWIDTH (96 kb/s AAC plus container).
const AUDIO_BANDWIDTH: u64 = 128_000;

/// Cut the encode into HLS segments without re-encoding: MPEG-TS
/// (`seg%d.ts`) or fMP4 (`init.mp4`, `seg%d.m4s`); the whole segments
/// (an audio remux may end with a few milliseconds of encoder priming as
/// its own segment, which is dropped).
fn segment(
    enc: &Path,
    dir: &Path,
    cadence_ms: u64,
    container: Container,
    kind: TrackKind,
) -> Result<LocalRendition, Failure> {
    let cadence = cadence_ms as f64 / 1000.0;
    let fmp4 = container == Container::Fmp4;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(enc)
        .args(match kind {
            TrackKind::Video => &["-an"][..],
            TrackKind::Audio => &["-vn"][..],
            _ => &[][..],
        })
        .args([
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            &format!("{cadence}"),
        ])
        .args(["-hls_playlist_type", "vod"]);
    let list = dir.join("ffmpeg.m3u8");
    if fmp4 {
        cmd.args([
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
        ])
        .args([
            "-hls_segment_filename",
            &dir.join("seg%d.m4s").display().to_string(),
        ]);
    } else {
        cmd.args([
            "-hls_segment_filename",
            &dir.join("seg%d.ts").display().to_string(),
        ]);
    }
    let out = cmd
        .arg(&list)
        .output()
        .map_err(|e| Failure::new(FailureCategory::EncodeFailed, format!("ffmpeg: {e}")))?;
    if !out.status.success() {
        log_tool("ffmpeg segment", &out.stderr);
        return Err(Failure::new(
            FailureCategory::EncodeFailed,
            format!("segmenting as {container:?} failed"),
        ));
    }
    let text = std::fs::read_to_string(&list)
        .map_err(|e| Failure::new(FailureCategory::EncodeFailed, e.to_string()))?;
    let m = media::parse(&text)
        .map_err(|e| Failure::new(FailureCategory::EncodeFailed, format!("segmenter: {e}")))?;
    let segments = m
        .segments
        .iter()
        .filter(|sg| sg.duration >= cadence / 2.0)
        .map(|sg| {
            (
                dir.join(m.tokens.lines[sg.uri_line].raw().trim()),
                sg.duration,
                sg.duration_text.to_string(),
            )
        })
        .collect();
    let r = LocalRendition {
        kind,
        bandwidth: 0,
        resolution: None,
        container,
        dir: dir.to_path_buf(),
        init: fmp4.then(|| dir.join("init.mp4")),
        segments,
        codecs: String::new(),
    };
    // A local VOD playlist beside the files (relative URIs): what a
    // player or ffprobe reads to check the rendition.
    std::fs::write(
        dir.join("playlist.m3u8"),
        vod_playlist(&r, cadence, |p| {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
    )
    .map_err(|e| Failure::new(FailureCategory::EncodeFailed, e.to_string()))?;
    Ok(r)
}

/// A VOD playlist of a rendition, each file named by `uri`.
fn vod_playlist(r: &LocalRendition, cadence: f64, uri: impl Fn(&Path) -> String) -> String {
    let fmp4 = r.container == Container::Fmp4;
    let mut pl = format!(
        "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n",
        if fmp4 { 7 } else { 3 },
        cadence.ceil() as u64
    );
    if let Some(init) = &r.init {
        pl.push_str(&format!("#EXT-X-MAP:URI=\"{}\"\n", uri(init)));
    }
    for (f, _, text) in &r.segments {
        pl.push_str(&format!("#EXTINF:{text},\n{}\n", uri(f)));
    }
    pl.push_str("#EXT-X-ENDLIST\n");
    pl
}

/// Where and how renditions are uploaded.
struct Upload<'a> {
    api: crate::net::Api,
    /// The admin API's base URL.
    base: &'a str,
    public: &'a str,
    /// `{org}/{ads|slates}/{id}`.
    prefix: String,
    cadence: f64,
}

impl Upload<'_> {
    /// Upload one rendition's files and VOD playlist, and describe it.
    fn rendition(&self, r: &LocalRendition) -> Result<AdRendition, Failure> {
        let fmp4 = r.container == Container::Fmp4;
        let prefix = format!(
            "{}/{}{}",
            self.prefix,
            r.bandwidth,
            if fmp4 { "/fmp4" } else { "" }
        );
        let ctype = match (fmp4, r.kind) {
            (true, TrackKind::Audio) => "audio/mp4",
            (true, _) => "video/mp4",
            (false, _) => "video/mp2t",
        };
        let up = |local: &Path, name: &str, ctype: &str| -> Result<String, Failure> {
            self.api
                .put_file(
                    &format!("{}/api/media/{prefix}/{name}", self.base),
                    local,
                    ctype,
                )
                .map_err(|e| Failure::new(FailureCategory::UploadFailed, e))?;
            Ok(format!("{}/media/{prefix}/{name}", self.public))
        };
        let init_uri = match &r.init {
            Some(init) => Some(up(init, "init.mp4", ctype)?),
            None => None,
        };
        let ext = if fmp4 { "m4s" } else { "ts" };
        let mut segs = Vec::with_capacity(r.segments.len());
        for (i, (local, duration, _)) in r.segments.iter().enumerate() {
            segs.push(AdSegment {
                uri: up(local, &format!("seg{i}.{ext}"), ctype)?,
                duration: *duration,
                byterange: None,
            });
        }
        let public_names: std::collections::HashMap<&Path, String> = r
            .segments
            .iter()
            .map(|(p, _, _)| p.as_path())
            .zip(segs.iter().map(|s| s.uri.clone()))
            .chain(r.init.as_deref().zip(init_uri.clone()))
            .collect();
        let pl = vod_playlist(r, self.cadence, |p| {
            public_names.get(p).cloned().unwrap_or_default()
        });
        let plf = r.dir.join("public.m3u8");
        std::fs::write(&plf, pl)
            .map_err(|e| Failure::new(FailureCategory::UploadFailed, e.to_string()))?;
        let playlist_url = up(&plf, "index.m3u8", "application/vnd.apple.mpegurl")?;
        Ok(AdRendition {
            bandwidth: r.bandwidth,
            codecs: Some(r.codecs.clone()),
            resolution: r.resolution.clone(),
            kind: r.kind,
            playlist_url,
            cadence_s: self.cadence,
            segments: segs,
            init_uri,
            key: None,
            memo: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ebur128_summary_is_read() {
        let log = "[Parsed_ebur128_4 @ 0x5] t: 1 M: -20\n[Parsed_ebur128_4 @ 0x55] Summary:\n\n  Integrated loudness:\n    I:         -15.8 LUFS\n    Threshold: -25.8 LUFS\n\n  Loudness range:\n    LRA:         1.4 LU\n\n  True peak:\n    Peak:      -10.8 dBFS\n";
        assert_eq!(ebur128_summary(log), Some((-15.8, -10.8)));
        assert_eq!(ebur128_summary("no summary"), None);
        let silent = "Summary:\n  Integrated loudness:\n    I:         -70.0 LUFS\n  True peak:\n    Peak:       -inf dBFS\n";
        assert_eq!(ebur128_summary(silent), Some((-70.0, 0.0)));
    }

    #[test]
    fn sniff_pins_only_the_allowed_containers() {
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypisom");
        assert_eq!(sniff(&mp4), Some(Pinned::Mov));
        let mut mov = vec![0, 0, 0, 8];
        mov.extend_from_slice(b"wide");
        assert_eq!(sniff(&mov), Some(Pinned::Mov));
        assert_eq!(sniff(&[0x1a, 0x45, 0xdf, 0xa3, 1]), Some(Pinned::Matroska));
        let mut ts = vec![0u8; 600];
        ts[0] = 0x47;
        ts[188] = 0x47;
        ts[376] = 0x47;
        assert_eq!(sniff(&ts), Some(Pinned::MpegTs));
        for bad in [
            &b"#EXTM3U\n#EXT-X-VERSION:3\n"[..],
            b"ffconcat version 1.0\nfile 'file:/etc/passwd'\n",
            b"<?xml version=\"1.0\"?><MPD>",
            b"<html>",
            b"",
            b"G",
        ] {
            assert_eq!(sniff(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn probe_of(v: serde_json::Value) -> Result<Probe, Failure> {
        from_ffprobe(Pinned::Mov, serde_json::from_value(v).unwrap())
    }

    #[test]
    fn probe_reads_what_conditioning_needs() {
        let p = probe_of(serde_json::json!({
            "streams": [
                {"codec_type": "video", "codec_name": "mjpeg", "width": 300, "height": 300, "disposition": {"attached_pic": 1}},
                {"codec_type": "video", "codec_name": "prores", "width": 1920, "height": 1080, "pix_fmt": "yuv422p10le", "sample_aspect_ratio": "4:3",
                 "field_order": "tt", "color_transfer": "smpte2084", "avg_frame_rate": "30000/1001", "duration": "15.015000",
                 "side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]},
                {"codec_type": "audio", "codec_name": "pcm_s24le", "channels": 6}
            ],
            "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "15.050000"}
        }))
        .unwrap();
        assert_eq!((p.video_codec.as_str(), p.width), ("prores", 1920));
        assert!(p.interlaced);
        assert_eq!(
            (p.hdr, p.rotation, p.duration_ms),
            (Some("pq"), -90, 15_015)
        );
        assert!((p.fps - 29.97).abs() < 0.01);
        assert!((p.sar - 4.0 / 3.0).abs() < 1e-9);
        assert_eq!(p.audio, Some(("pcm_s24le".into(), 6)));
        // WebM: the duration from the Matroska tag, else the format's.
        let p = probe_of(serde_json::json!({
            "streams": [{"codec_type": "video", "codec_name": "vp9", "width": 1280, "height": 720,
                         "tags": {"DURATION": "00:00:30.030000000"}}],
            "format": {"format_name": "matroska,webm"}
        }))
        .unwrap();
        assert_eq!((p.duration_ms, p.audio), (30_030, None));
        let e = probe_of(
            serde_json::json!({"streams": [{"codec_type": "audio", "codec_name": "aac"}]}),
        )
        .unwrap_err();
        assert_eq!(e.category, FailureCategory::UnsupportedSource);
        let e = probe_of(
            serde_json::json!({"streams": [{"codec_type": "video", "width": 2, "height": 2}]}),
        )
        .unwrap_err();
        assert_eq!(e.category, FailureCategory::CorruptSource);
    }

    #[test]
    fn the_graph_pads_to_whole_segments_and_boxes_each_rung() {
        let probe = Probe {
            pinned: Pinned::Mov,
            format: "mov".into(),
            video_codec: "h264".into(),
            width: 1080,
            height: 1920,
            pix_fmt: "yuv420p".into(),
            fps: 29.97,
            interlaced: true,
            hdr: Some("hlg"),
            rotation: 0,
            sar: 8.0 / 9.0,
            audio: None,
            duration_ms: 15_015,
        };
        let enc = Encode {
            cadence_ms: 1920,
            fps: 25.0,
            ladder: vec![(640, 360, 900_000), (960, 540, 1_800_000)],
            containers: vec![Container::Ts],
            loudness: None,
            one_pass: true,
        };
        let plan = Plan {
            probe: &probe,
            fit: cond::fit(15_015, 1920).unwrap(),
            enc: &enc,
            audio_filter: None,
        };
        let g = plan.filter_graph(&[0, 1]);
        assert!(g.contains("bwdif="), "{g}");
        assert!(g.contains("tonemap=tonemap=hable"), "{g}");
        assert!(
            g.contains("scale=w=trunc(iw*sar/2)*2:h=ih,setsar=1,fps=25"),
            "{g}"
        );
        assert!(g.contains("fps=25,tpad=stop_mode=clone:stop_duration=1.345,trim=duration=15.360,split=2[vs0][vs1]"), "{g}");
        assert!(
            g.contains("[vs1]scale=w=960:h=540:force_original_aspect_ratio=decrease"),
            "{g}"
        );
        assert!(g.contains("pad=960:540:(ow-iw)/2:(oh-ih)/2:black"), "{g}");
        // No audio: the silence input, padded and cut like the video.
        assert!(
            g.contains("[1:a:0]asetpts=PTS-STARTPTS,aresample=48000"),
            "{g}"
        );
        assert!(
            g.contains("apad=whole_dur=15.360,atrim=duration=15.360,asplit=2[a0][a1]"),
            "{g}"
        );
        let args = plan.ffmpeg_args(Path::new("/tmp/src"), &[0, 1], Path::new("/tmp/o"));
        let joined = args.join(" ");
        assert!(
            joined.contains("-protocol_whitelist file -f mov -i /tmp/src"),
            "{joined}"
        );
        assert!(joined.contains("-g 48 "), "{joined}");
        assert_eq!(fps_expr(29.97), "30000/1001");
        assert_eq!(fps_expr(25.0), "25");
    }
}
