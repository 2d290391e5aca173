//! `cf-ssai conditioner --api URL --token PLATFORM_TOKEN [--owner NAME]
//!  [--lease-s 300] [--poll-s 2] [--max-bytes 536870912]
//!  [--download-timeout-s 300] [--allow-private HOSTS] [--public-base URL]
//!  [--once] [--exit-after-s N] [--exit-when-idle-s N]`
//!
//! The long-running worker that turns ad servers' creatives into
//! conditioned renditions: leases a job through the admin API (a lease
//! with an expiry, so two conditioners never do the same job and a crashed
//! one's job is retried), downloads the source (URL checked hop by hop
//! against the private-address policy, size and time limited), sniffs and
//! probes it, and conditions it with the ingest pipeline (any container
//! and codec ffmpeg decodes to the org's ladder at every cadence its
//! channels use, the channel's frame rate, TS and fMP4, closed GOPs,
//! 48 kHz audio at the org's EBU R128 loudness, the tail padded so every
//! frame plays), uploads to R2, registers one ad per cadence, and reports
//! the outcome with a failure category and notes (source chosen, VAST
//! Duration against the file, padding). Runs as a container (the
//! repository's `Dockerfile`) or on any machine with ffmpeg and curl;
//! README command 1 starts one next to the local stack.
//!
//! Exit codes: 0 stopped as asked (`--once`, `--exit-after-s`,
//! `--exit-when-idle-s`, `--help`), 1 a fatal error (an answer from the API
//! it cannot read), 2 a usage error.

use crate::ingest::{self, Encode, Failure, Log, Loudness, Spec};
use crate::{flag, flag_or};
use cf_ssai_core::ads::conditioning::{
    FailureCategory, Settings, Source, DEFAULT_LEASE_S, DEFAULT_MAX_SOURCE_BYTES,
};
use std::path::Path;
use std::time::{Duration, Instant};

fn fail(category: FailureCategory, detail: impl Into<String>) -> Failure {
    Failure::new(category, detail)
}

pub const USAGE: &str =
    "usage: cf-ssai conditioner --api URL --token PLATFORM_TOKEN (or CF_SSAI_API, CF_SSAI_TOKEN) [--owner NAME] \
[--lease-s 300] [--poll-s 2] [--max-bytes 536870912] [--download-timeout-s 300] \
[--allow-private HOSTS] [--public-base URL] [--once] [--exit-after-s N] [--exit-when-idle-s N]\n\
Leases creative-conditioning jobs from the admin API and conditions them with ffmpeg.\n\
Exit codes: 0 stopped as asked, 1 fatal error, 2 usage error. Logs are JSON lines on stderr.";

struct Opts<'a> {
    api: &'a str,
    token: &'a str,
    /// One client (and its connections) for every admin API call.
    client: crate::net::Api,
    owner: String,
    public: &'a str,
    max_bytes: u64,
    download_timeout_s: u64,
    allow_private: &'a str,
}

pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    // Flags, else the environment (a container is configured by its
    // environment: the token never appears in a process listing).
    let env_api = std::env::var("CF_SSAI_API").ok();
    let env_token = std::env::var("CF_SSAI_TOKEN").ok();
    let (Some(api), Some(token)) = (
        flag(args, "--api").or(env_api.as_deref()),
        flag(args, "--token").or(env_token.as_deref()),
    ) else {
        eprintln!("cf-ssai conditioner: --api and --token (or CF_SSAI_API and CF_SSAI_TOKEN) are required\n{USAGE}");
        std::process::exit(2);
    };
    let api = api.trim_end_matches('/');
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        // First signal: finish the job in hand, then exit 0 (its lease is
        // reported, not left to expire). A second: exit at once.
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(143);
            }
            eprintln!("{}", serde_json::json!({"event": "conditioner_stopping"}));
        });
    }
    let opts = Opts {
        api,
        token,
        client: crate::net::Api::new(token),
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
    let secs = |name: &str| -> Result<Option<Duration>, String> {
        flag(args, name)
            .map(|v| v.parse::<u64>().map_err(|_| format!("{name}: {v:?}")))
            .transpose()
            .map(|s| s.map(Duration::from_secs))
    };
    let exit_after = secs("--exit-after-s")?;
    let idle_exit = secs("--exit-when-idle-s")?;
    let started = Instant::now();
    let mut last_work = Instant::now();
    eprintln!(
        "{}",
        serde_json::json!({"event": "conditioner_started", "owner": opts.owner, "api": api})
    );
    loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst)
            || exit_after.is_some_and(|d| started.elapsed() > d)
            || idle_exit.is_some_and(|d| last_work.elapsed() > d)
        {
            return Ok(());
        }
        let body = serde_json::json!({ "owner": opts.owner, "lease_s": lease_s }).to_string();
        let (status, text) = match opts.client.call(
            "POST",
            &format!("{api}/api/conditioning/lease"),
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
                last_work = Instant::now();
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
        Ok((ads, notes)) => {
            serde_json::json!({ "owner": opts.owner, "ok": true, "ad_ids": ads, "notes": notes })
        }
        Err(f) => serde_json::json!({
            "owner": opts.owner, "ok": false, "reason": f.reason(),
            "category": f.category.as_str(), "permanent": !f.category.transient()
        }),
    };
    eprintln!(
        "{}",
        serde_json::json!({
            "event": "conditioning_done", "org": org, "job": id,
            "ok": outcome.is_ok(), "category": outcome.as_ref().err().map(|f| f.category.as_str()),
            "reason": outcome.as_ref().err().map(Failure::reason),
            "seconds": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        })
    );
    // A report that cannot be made leaves the lease to expire: the job
    // is then retried (or failed after its last attempt).
    match opts.client.call(
        "POST",
        &format!("{}/api/conditioning/jobs/{org}/{id}/complete", opts.api),
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

/// Condition a leased job: its ad ids and notes, or why not.
fn condition(
    opts: &Opts,
    lease: &serde_json::Value,
) -> Result<(Vec<String>, serde_json::Value), Failure> {
    let job = &lease["job"];
    let org = job["org_id"].as_str().unwrap_or_default();
    let id = job["id"].as_str().unwrap_or_default();
    let source: Source = serde_json::from_value(job["source"].clone()).map_err(|e| {
        fail(
            FailureCategory::UnsupportedSource,
            format!("job source unreadable: {e}"),
        )
    })?;
    let settings: Settings = serde_json::from_value(lease["settings"].clone()).unwrap_or_default();
    let cadences: Vec<u64> = serde_json::from_value(lease["cadences"].clone()).unwrap_or_default();
    let vast_ms = cf_ssai_core::model::secs_to_ms(job["duration_s"].as_f64().unwrap_or(0.0));
    let work = std::env::temp_dir().join(format!("cf-ssai-cond-{id}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)
        .map_err(|e| fail(FailureCategory::EncodeFailed, format!("work dir: {e}")))?;
    let file = work.join("source");
    let log = Log::new(id);
    let result = (|| {
        log.stage("download", 0.0);
        download(opts, &source.url, &file)?;
        log.stage("download", 1.0);
        let ladder = settings
            .rungs()
            .map_err(|e| fail(FailureCategory::EncodeFailed, e.to_string()))?;
        let path = file.display().to_string();
        let mut ads = Vec::new();
        let mut notes = serde_json::json!({ "source_choice": source.why });
        for cadence in cadences.iter().copied().filter(|c| *c > 0) {
            let ad_id = format!("{id}-{cadence}");
            let spec = Spec {
                file: &path,
                org,
                id: &ad_id,
                api: opts.api,
                token: opts.token,
                public: opts.public,
                slate: false,
                channel: None,
                encode: Encode {
                    cadence_ms: cadence,
                    fps: settings.fps,
                    ladder: ladder.clone(),
                    containers: vec![ingest::Container::Ts, ingest::Container::Fmp4],
                    loudness: Some(Loudness {
                        lufs: settings.loudness_lufs,
                        true_peak: settings.true_peak_dbtp,
                    }),
                    one_pass: true,
                },
                creative_id: job["creative_id"].as_str().unwrap_or(id),
                universal_ad_id: job["universal_ad_id"].as_str(),
                tracking: serde_json::json!({}),
                source: Some((source.url.clone(), source.file_size)),
                vast_duration_ms: vast_ms,
                log: &log,
            };
            let summary = ingest::ingest(&spec)?;
            for k in ["source", "duration_s", "padding_s", "notes"] {
                notes[k] = summary[k].clone();
            }
            ads.push(ad_id);
        }
        if ads.is_empty() {
            return Err(fail(
                FailureCategory::NoCadence,
                "the org has no channel cadence to condition for",
            ));
        }
        Ok((ads, notes))
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Download with limits (`net::fetch_source`: addresses vetted after
/// resolution, redirects checked hop by hop, one deadline, one size cap).
fn download(opts: &Opts, url: &str, out: &Path) -> Result<(), Failure> {
    crate::net::fetch_source(
        url,
        out,
        opts.max_bytes,
        Duration::from_secs(opts.download_timeout_s),
        opts.allow_private,
    )
}
