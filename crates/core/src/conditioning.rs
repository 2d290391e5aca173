//! Creative conditioning on first sight (what MediaTailor does with a new
//! creative): a VAST linear creative without conditioned media becomes a
//! job, keyed by the creative's identity, with the best source to
//! transcode; the creative is skipped (`TRANSCODE_PENDING`) until a
//! conditioner has made renditions at the org's ladder and cadences and
//! registered them, and then it plays.
//!
//! Pure: identity, source choice, the job request the decision records,
//! the reasons it writes, and the lease rules the admin API applies.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

use crate::vast::{Creative, MediaFile};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Mezzanine,
    Mp4,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// Interactive or non-video files are never a source.
fn interactive(m: &MediaFile) -> bool {
    let mime = m.mime.to_ascii_lowercase();
    !m.api_framework.trim().is_empty()
        || mime.contains("javascript")
        || mime.contains("flash")
        || mime.contains("vpaid")
}

/// Progressive H.264 (with AAC when the codecs say) MP4.
fn progressive_h264(m: &MediaFile) -> bool {
    let mime = m.mime.to_ascii_lowercase();
    let codec = m.codec.to_ascii_lowercase();
    !m.mezzanine
        && !m.is_hls()
        && (m.delivery.is_empty() || m.delivery.eq_ignore_ascii_case("progressive"))
        && mime == "video/mp4"
        && (codec.is_empty() || codec.contains("avc1") || codec.contains("avc3"))
}

fn quality(m: &MediaFile) -> (u64, u32) {
    (
        u64::from(m.width).saturating_mul(u64::from(m.height)),
        m.bitrate,
    )
}

/// The best file to condition: the Mezzanine when there is one (made for
/// this), else the highest-quality progressive H.264 MP4; never VPAID or
/// other interactive files.
pub fn best_source(c: &Creative) -> Result<Source, String> {
    let usable = c.media_files.iter().filter(|m| !interactive(m));
    let pick = usable
        .clone()
        .filter(|m| m.mezzanine)
        .max_by_key(|m| quality(m))
        .or_else(|| {
            usable
                .filter(|m| progressive_h264(m))
                .max_by_key(|m| quality(m))
        });
    let Some(m) = pick else {
        return Err(
            "no Mezzanine and no progressive H.264 MP4 MediaFile (interactive files are never conditioned)"
                .into(),
        );
    };
    Ok(Source {
        url: m.url.clone(),
        kind: if m.mezzanine {
            SourceKind::Mezzanine
        } else {
            SourceKind::Mp4
        },
        width: m.width,
        height: m.height,
        bitrate: m.bitrate,
        file_size: m.file_size,
    })
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
                SourceKind::Mp4 => "mp4",
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ladder: "640x360:900000,960x540:1800000".into(),
            loudness_lufs: DEFAULT_LOUDNESS_LUFS,
            true_peak_dbtp: DEFAULT_TRUE_PEAK_DBTP,
        }
    }
}

impl Settings {
    pub fn check(&self) -> Result<(), String> {
        if !(-40.0..=-10.0).contains(&self.loudness_lufs) {
            return Err("loudness_lufs: between -40 and -10 LUFS".into());
        }
        if !(-9.0..=0.0).contains(&self.true_peak_dbtp) {
            return Err("true_peak_dbtp: between -9 and 0 dBTP".into());
        }
        for rung in self.ladder.split(',') {
            let ok = rung.split_once(':').is_some_and(|(res, bw)| {
                res.split_once('x').is_some_and(|(w, h)| {
                    w.parse::<u32>().is_ok_and(|w| (16..=7680).contains(&w))
                        && h.parse::<u32>().is_ok_and(|h| (16..=4320).contains(&h))
                }) && bw
                    .parse::<u64>()
                    .is_ok_and(|b| (150_000..=50_000_000).contains(&b))
            });
            if !ok {
                return Err(format!("ladder: {rung:?} is not WxH:bandwidth"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mf(url: &str, mime: &str, w: u32, h: u32) -> MediaFile {
        MediaFile {
            url: url.into(),
            mime: mime.into(),
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

    #[test]
    fn mezzanine_first_then_the_best_h264_mp4_never_vpaid() {
        let mut mezz = mf("http://a/mezz.mov", "video/quicktime", 1920, 1080);
        mezz.mezzanine = true;
        let mut vpaid = mf("http://a/vpaid.js", "application/javascript", 0, 0);
        vpaid.api_framework = "VPAID".into();
        let low = mf("http://a/low.mp4", "video/mp4", 640, 360);
        let high = mf("http://a/high.mp4", "video/mp4", 1280, 720);
        let mut hevc = mf("http://a/hevc.mp4", "video/mp4", 3840, 2160);
        hevc.codec = "hvc1.1.6.L150.90".into();
        let webm = mf("http://a/x.webm", "video/webm", 3840, 2160);
        let c = creative(vec![
            vpaid.clone(),
            low.clone(),
            mezz,
            high.clone(),
            hevc.clone(),
            webm.clone(),
        ]);
        let s = best_source(&c).unwrap();
        assert_eq!(
            (s.url.as_str(), s.kind),
            ("http://a/mezz.mov", SourceKind::Mezzanine)
        );
        let c = creative(vec![vpaid.clone(), low, high, hevc, webm]);
        assert_eq!(best_source(&c).unwrap().url, "http://a/high.mp4");
        let mut vpaid_mp4 = mf("http://a/v.mp4", "video/mp4", 1920, 1080);
        vpaid_mp4.api_framework = "VPAID".into();
        assert!(best_source(&creative(vec![vpaid, vpaid_mp4])).is_err());
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
            kind: SourceKind::Mp4,
            width: 0,
            height: 0,
            bitrate: 0,
            file_size: 0,
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
    fn settings_are_checked() {
        assert!(Settings::default().check().is_ok());
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
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
