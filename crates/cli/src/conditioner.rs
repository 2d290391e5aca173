//! `cf-ssai conditioner --api URL --token PLATFORM_TOKEN [--owner NAME]
//!  [--lease-s 300] [--poll-s 2] [--max-bytes 536870912]
//!  [--download-timeout-s 300] [--allow-private HOSTS] [--public-base URL]
//!  [--once] [--exit-after-s N]`
//!
//! The long-running worker that turns ad servers' creatives into
//! conditioned renditions: leases a job through the admin API (a lease
//! with an expiry, so two conditioners never do the same job and a crashed
//! one's job is retried), downloads the source (URL checked hop by hop
//! against the private-address policy, size and time limited), checks it
//! is video, and conditions it with the ingest pipeline (ffmpeg: the org's
//! ladder at every cadence its channels use, TS and fMP4, closed GOPs,
//! 48 kHz audio, EBU R128 loudness normalisation to the org's target),
//! uploads to R2, registers one ad per cadence, and reports. Runs on any
//! machine with ffmpeg and curl; README command 1 starts one next to the
//! local stack.

use crate::ingest::{self, Loudness, Spec};
use crate::{flag, flag_or};
use cf_ssai_core::conditioning::{Settings, Source, DEFAULT_LEASE_S, DEFAULT_MAX_SOURCE_BYTES};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A failure: permanent ones (the source is gone, not video, too large)
/// fail the job at once; others are retried on the next lease.
struct Failure {
    reason: String,
    permanent: bool,
}

fn permanent(reason: impl Into<String>) -> Failure {
    Failure {
        reason: reason.into(),
        permanent: true,
    }
}

fn transient(reason: impl Into<String>) -> Failure {
    Failure {
        reason: reason.into(),
        permanent: false,
    }
}

struct Opts<'a> {
    api: &'a str,
    token: &'a str,
    owner: String,
    public: &'a str,
    max_bytes: u64,
    download_timeout_s: u64,
    allow_private: &'a str,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let api = flag(args, "--api")
        .ok_or("--api required")?
        .trim_end_matches('/');
    let opts = Opts {
        api,
        token: flag(args, "--token").ok_or("--token required (a platform admin token)")?,
        owner: flag(args, "--owner")
            .map(String::from)
            .unwrap_or_else(|| format!("conditioner-{}", std::process::id())),
        public: flag(args, "--public-base")
            .unwrap_or(api)
            .trim_end_matches('/'),
        max_bytes: flag_or(args, "--max-bytes", DEFAULT_MAX_SOURCE_BYTES)?,
        download_timeout_s: flag_or(args, "--download-timeout-s", 300)?,
        allow_private: flag(args, "--allow-private").unwrap_or(""),
    };
    let lease_s: u32 = flag_or(args, "--lease-s", DEFAULT_LEASE_S)?;
    let poll = Duration::from_secs_f64(flag_or(args, "--poll-s", 2.0)?);
    let once = args.iter().any(|a| a == "--once");
    let exit_after = flag(args, "--exit-after-s")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| format!("--exit-after-s: {v:?}"))
        })
        .transpose()?
        .map(Duration::from_secs);
    let started = Instant::now();
    eprintln!("conditioner {} leasing from {api}", opts.owner);
    loop {
        if exit_after.is_some_and(|d| started.elapsed() > d) {
            return Ok(());
        }
        let body = serde_json::json!({ "owner": opts.owner, "lease_s": lease_s }).to_string();
        let (status, text) = match http(
            "POST",
            &format!("{api}/api/conditioning/lease"),
            opts.token,
            Some(&body),
        ) {
            Ok(r) => r,
            Err(e) => {
                // The API is down or restarting: keep trying.
                eprintln!("conditioner: lease: {e}");
                std::thread::sleep(poll.max(Duration::from_secs(2)));
                continue;
            }
        };
        match status {
            200 => {
                let lease: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("lease answer: {e}"))?;
                work(&opts, &lease)?;
            }
            204 => {
                if once {
                    return Ok(());
                }
                std::thread::sleep(poll);
            }
            s => {
                eprintln!("conditioner: lease refused (HTTP {s}): {text}");
                std::thread::sleep(poll.max(Duration::from_secs(5)));
            }
        }
    }
}

/// One leased job: condition it and report, whatever happens.
fn work(opts: &Opts, lease: &serde_json::Value) -> Result<(), String> {
    let job = &lease["job"];
    let org = job["org_id"].as_str().unwrap_or_default();
    let id = job["id"].as_str().unwrap_or_default();
    let t0 = Instant::now();
    let outcome = condition(opts, lease);
    let report = match &outcome {
        Ok(ads) => serde_json::json!({ "owner": opts.owner, "ok": true, "ad_ids": ads }),
        Err(f) => serde_json::json!({
            "owner": opts.owner, "ok": false, "reason": f.reason, "permanent": f.permanent
        }),
    };
    eprintln!(
        "{}",
        serde_json::json!({
            "event": "conditioning_done", "org": org, "job": id,
            "ok": outcome.is_ok(), "reason": outcome.as_ref().err().map(|f| f.reason.clone()),
            "seconds": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        })
    );
    // A report that cannot be made leaves the lease to expire: the job
    // is then retried (or failed after its last attempt).
    match http(
        "POST",
        &format!("{}/api/conditioning/jobs/{org}/{id}/complete", opts.api),
        opts.token,
        Some(&report.to_string()),
    ) {
        Ok((200, _)) => {}
        Ok((status, text)) => {
            eprintln!("conditioner: report for {org}/{id} refused (HTTP {status}): {text}")
        }
        Err(e) => eprintln!("conditioner: report for {org}/{id}: {e}"),
    }
    Ok(())
}

fn condition(opts: &Opts, lease: &serde_json::Value) -> Result<Vec<String>, Failure> {
    let job = &lease["job"];
    let org = job["org_id"].as_str().unwrap_or_default();
    let id = job["id"].as_str().unwrap_or_default();
    let source: Source = serde_json::from_value(job["source"].clone())
        .map_err(|e| permanent(format!("job source: {e}")))?;
    let settings: Settings = serde_json::from_value(lease["settings"].clone()).unwrap_or_default();
    let cadences: Vec<u64> = serde_json::from_value(lease["cadences"].clone()).unwrap_or_default();
    let work = std::env::temp_dir().join(format!("cf-ssai-cond-{id}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| transient(e.to_string()))?;
    let file = work.join("source");
    let result = (|| {
        download(opts, &source.url, &file)?;
        let path = file.display().to_string();
        match ingest::probe_has(&path, "v") {
            Ok(true) => {}
            Ok(false) => return Err(permanent("source is not video: it has no video stream")),
            // ffprobe's last words, without our temporary path.
            Err(e) => {
                let why = e.rsplit(": ").next().unwrap_or(&e).to_string();
                return Err(permanent(format!("source is not video: {why}")));
            }
        }
        let ladder = crate::ingest::parse_ladder(&settings.ladder).map_err(permanent)?;
        let mut ads = Vec::new();
        for cadence in cadences.iter().copied().filter(|c| *c > 0) {
            let ad_id = format!("{id}-{cadence}");
            let spec = Spec {
                file: &path,
                org,
                id: &ad_id,
                api: opts.api,
                token: opts.token,
                public: opts.public,
                cadence_ms: cadence,
                slate: false,
                channel: None,
                ladder: ladder.clone(),
                containers: vec!["ts".into(), "fmp4".into()],
                creative_id: job["creative_id"].as_str().unwrap_or(id),
                universal_ad_id: job["universal_ad_id"].as_str(),
                tracking: serde_json::json!({}),
                loudness: Some(Loudness {
                    lufs: settings.loudness_lufs,
                    true_peak: settings.true_peak_dbtp,
                }),
                source: Some((source.url.clone(), source.file_size)),
            };
            ingest::ingest(&spec)
                .map_err(|e| transient(format!("conditioning at {cadence} ms: {e}")))?;
            ads.push(ad_id);
        }
        if ads.is_empty() {
            return Err(permanent("the org has no channel cadence to condition for"));
        }
        Ok(ads)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Download with limits: each hop's URL checked against the private-address
/// policy (redirects followed by hand, at most 5), a size cap enforced
/// while transferring, one deadline.
fn download(opts: &Opts, url: &str, out: &Path) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(opts.download_timeout_s);
    let mut url = url.to_string();
    for _hop in 0..=5 {
        cf_ssai_core::config::check_url_allowing(&url, opts.allow_private)
            .map_err(|e| permanent(format!("source URL refused: {e}")))?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        let o = Command::new("curl")
            .args(["-sS", "--proto", "=http,https", "--max-redirs", "0"])
            .args(["--max-filesize", &opts.max_bytes.to_string()])
            .args(["--max-time", &left.to_string()])
            .args(["-o"])
            .arg(out)
            .args(["-w", "%{http_code} %{redirect_url}", &url])
            .output()
            .map_err(|e| transient(format!("curl: {e}")))?;
        let w = String::from_utf8_lossy(&o.stdout).to_string();
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        match o.status.code() {
            Some(0) => {}
            Some(63) => {
                return Err(permanent(format!(
                    "source is over the {}-byte limit",
                    opts.max_bytes
                )))
            }
            Some(28) => return Err(transient(format!("source download timed out: {err}"))),
            _ => return Err(transient(format!("source download failed: {err}"))),
        }
        let (code, next) = w.split_once(' ').unwrap_or((w.as_str(), ""));
        let code: u16 = code.trim().parse().unwrap_or(0);
        match code {
            200 => {
                // Without a Content-Length curl cannot refuse up front.
                let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
                if size > opts.max_bytes {
                    return Err(permanent(format!(
                        "source is over the {}-byte limit",
                        opts.max_bytes
                    )));
                }
                return Ok(());
            }
            301 | 302 | 303 | 307 | 308 if !next.trim().is_empty() => {
                url = next.trim().to_string();
            }
            404 | 410 => return Err(permanent(format!("source HTTP {code}"))),
            c if (400..500).contains(&c) => return Err(permanent(format!("source HTTP {c}"))),
            c => return Err(transient(format!("source HTTP {c}"))),
        }
    }
    Err(permanent("source: more than 5 redirects"))
}

/// One API call through curl: (status, body).
fn http(method: &str, url: &str, token: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "--max-time", "30"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json"])
        .args(["-w", "\n%{http_code}"]);
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    let o = cmd.arg(url).output().map_err(|e| format!("curl: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{url}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}
