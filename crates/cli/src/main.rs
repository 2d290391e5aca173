//! `cf-ssai`: the operator's and tester's CLI over the core.
//!
//! ```text
//! cf-ssai scte35 [--hex]            one section per stdin line (base64, hex, or DASH XML <scte35:Signal>/<scte35:SpliceInfoSection>) → one JSON line
//! cf-ssai cues FILE.m3u8|.ts|.m4s   ad markers (playlist or in-band) as normalized JSON events
//! cf-ssai token --secret S --org O [--aud A] [--iss I] [--scope "cue read"] [--ttl SECS]   mint an HS256 JWT
//! cf-ssai apikey-hash --key K       salt + hash for the api_keys table
//! cf-ssai origin [--port P] [--media DIR] ...   local live HLS origin
//! cf-ssai validate < JSONL          live rules across reloads/viewers/nodes
//! cf-ssai dash-validate --url MPD_URL VIEWER-MS.mpd ...   DASH live rules across reloads/viewers
//! cf-ssai ads ingest FILE ...       condition an ad (ffmpeg), upload, register
//! cf-ssai ads condition FILE --out DIR ...   condition an ad locally (nothing uploaded)
//! cf-ssai conditioner --api URL --token T ...   condition ad servers' creatives (jobs)
//! ```
mod conditioner;
mod ingest;
mod net;
mod origin;

use cf_ssai_core::control::auth;
use cf_ssai_core::hls::media;
use cf_ssai_core::scte35::cues;
use cf_ssai_core::scte35::json::{line_to_json, InputEncoding};
use std::io::{self, BufRead, BufWriter, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let result = match args.first().map(String::as_str) {
        Some("scte35") => scte35(rest),
        Some("cues") => cues_cmd(rest),
        Some("token") => token(rest),
        Some("apikey-hash") => apikey_hash(rest),
        Some("origin") => origin::run(rest),
        Some("validate") => validate(),
        Some("dash-validate") => return dash_validate(rest),
        Some("conditioner") => conditioner::run(rest),
        Some("ads") if rest.first().map(String::as_str) == Some("ingest") => {
            ingest::run(&rest[1..])
        }
        Some("ads") if rest.first().map(String::as_str) == Some("condition") => {
            ingest::run_condition(&rest[1..])
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cf-ssai: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cf-ssai scte35 [--hex] | cues FILE | token --secret S --org O | apikey-hash --key K | origin [...] | validate | dash-validate --url MPD_URL VIEWER-MS.mpd... | ads ingest FILE [...] | ads condition FILE --out DIR [...] | conditioner --api URL --token T [...] (conditioner --help)";

/// `--name value` flags.
pub(crate) fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

pub(crate) fn flag_or<T: std::str::FromStr>(
    args: &[String],
    name: &str,
    default: T,
) -> Result<T, String> {
    match flag(args, name) {
        Some(v) => v.parse().map_err(|_| format!("{name}: cannot parse {v:?}")),
        None => Ok(default),
    }
}

/// One JSON object per input line, in order; invalid UTF-8 is a per-line
/// error, not a crash. A line starting with `<` is the DASH MPD `Event`
/// payload of SCTE 214-1 (either XML form, one event per line), described
/// as its binary section, e.g.
/// `echo '<scte35:Signal><scte35:Binary>/DAvAAAAAAAA///wFAVIAACPf+/+c2nALv4AUsz1AAAAAAAKAAhDVUVJAAABNWLbowo=</scte35:Binary></scte35:Signal>' | cf-ssai scte35`.
fn scte35(args: &[String]) -> Result<(), String> {
    let enc = if args.iter().any(|a| a == "--hex") {
        InputEncoding::Hex
    } else {
        InputEncoding::Base64
    };
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut buf = Vec::new();
    let io = |e: io::Error| e.to_string();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        let v = match std::str::from_utf8(&buf) {
            Ok(line) => line_to_json(line, enc),
            Err(_) => serde_json::json!({"error": "line is not valid UTF-8"}),
        };
        serde_json::to_writer(&mut out, &v).map_err(|e| e.to_string())?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)
}

fn cues_cmd(args: &[String]) -> Result<(), String> {
    let path = args
        .first()
        .ok_or("usage: cf-ssai cues FILE.m3u8|FILE.ts|FILE.m4s|FILE.mp4")?;
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if !bytes.starts_with(b"#EXTM3U") {
        // A media segment: its in-band SCTE-35 (TS PID or CMAF emsg), on
        // MSN 0 at offsets from the segment's start (`pdt_ms`: ms into it).
        let (events, warnings) = cf_ssai_core::scte35::inband::detect_segment(
            &bytes,
            0,
            Some(0),
            flag_or(args, "--cadence-ms", 0)?,
            &Default::default(),
        );
        let stdout = io::stdout();
        let mut out = stdout.lock();
        for e in &events {
            let _ = writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default());
        }
        for w in &warnings {
            let _ = writeln!(out, "{}", serde_json::json!({ "warning": w }));
        }
        return Ok(());
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{path}: not UTF-8"))?;
    let m = media::parse(&text).map_err(|e| format!("{path}: {e}"))?;
    let det = cues::detect(&m, &Default::default());
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for e in &det.events {
        let _ = writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default());
    }
    for w in &det.warnings {
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({"warning": w.message, "line": w.line})
        );
    }
    Ok(())
}

fn token(args: &[String]) -> Result<(), String> {
    let secret = flag(args, "--secret").ok_or("--secret required")?;
    let org = flag(args, "--org").ok_or("--org required")?;
    let aud = flag(args, "--aud").unwrap_or("cf-ssai");
    let ttl: i64 = flag_or(args, "--ttl", 86_400)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let claims = auth::Claims {
        sub: Some(flag(args, "--sub").unwrap_or("operator").to_string()),
        exp: Some(now + ttl),
        nbf: None,
        iat: Some(now),
        aud: Some(auth::Audience::One(aud.to_string())),
        org: Some(org.to_string()),
        iss: Some(flag(args, "--iss").unwrap_or("cf-ssai").to_string()),
        scope: flag(args, "--scope").map(String::from),
    };
    println!("{}", auth::sign_hs256(&claims, secret.as_bytes()));
    Ok(())
}

fn apikey_hash(args: &[String]) -> Result<(), String> {
    let key = flag(args, "--key").ok_or("--key required")?;
    let id = auth::api_key_id(key).ok_or("not a cfssai_ API key")?;
    let salt = flag(args, "--salt").ok_or("--salt required")?;
    println!(
        "{}",
        serde_json::json!({"id": id, "salt": salt, "hash": auth::hash_api_key(salt, key)})
    );
    Ok(())
}

/// Check served playlists against the live rules. Input: JSON lines
/// `{"group": variant, "viewer": id, "playlist": text, "pdt": bool}` in
/// the order they were served. One registry per group (all viewers and
/// nodes of a variant), one sequence check per viewer. Prints every
/// violation; exits non-zero if there is any.
fn validate() -> Result<(), String> {
    use cf_ssai_testkit::validate::{Registry, Viewer};
    use std::collections::HashMap;
    let mut regs: HashMap<String, Registry> = HashMap::new();
    let mut viewers: HashMap<(String, String), Viewer> = HashMap::new();
    let mut n = 0usize;
    let mut bad = 0usize;
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let group = v["group"].as_str().unwrap_or("").to_string();
        let viewer = v["viewer"].as_str().unwrap_or("").to_string();
        let text = v["playlist"].as_str().unwrap_or("");
        let pdt = v["pdt"].as_bool().unwrap_or(true);
        n += 1;
        let reg = regs.entry(group.clone()).or_default();
        let vw = viewers.entry((group.clone(), viewer.clone())).or_default();
        for e in reg.check(vw, text, pdt) {
            bad += 1;
            println!(
                "{}",
                serde_json::json!({"group": group, "viewer": viewer, "index": n, "violation": e})
            );
        }
    }
    println!("{}", serde_json::json!({"playlists": n, "violations": bad}));
    if bad > 0 {
        return Err(format!("{bad} violations in {n} playlists"));
    }
    Ok(())
}

/// Check saved MPD snapshots against the DASH live rules. Each file is
/// `{viewer}-{fetched_at_ms}.mpd`; the snapshots are replayed in fetch
/// order, one sequence per viewer, one registry for all (late joiners).
/// Prints one JSON report (violations, and the Periods of each viewer's
/// last snapshot with their segments); exits 1 on violations, 2 on usage
/// errors.
fn dash_validate(args: &[String]) -> ExitCode {
    use cf_ssai_testkit::validate_dash::{snapshot_name, validate_snapshots, Snapshot};
    let usage = |e: String| {
        eprintln!("cf-ssai dash-validate: {e}\nusage: cf-ssai dash-validate --url MPD_URL {{viewer}}-{{fetched_at_ms}}.mpd ...");
        ExitCode::from(2)
    };
    let Some(url) = flag(args, "--url") else {
        return usage("--url MPD_URL required (relative BaseURLs resolve against it)".into());
    };
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--url" => {
                it.next();
            }
            f if f.starts_with("--") => return usage(format!("unknown flag {f}")),
            f => files.push(f),
        }
    }
    if files.is_empty() {
        return usage("no snapshot files".into());
    }
    let mut snapshots = Vec::with_capacity(files.len());
    for f in files {
        let name = std::path::Path::new(f)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let Some((viewer, fetched_at_ms)) = snapshot_name(name) else {
            return usage(format!("{f}: not named {{viewer}}-{{fetched_at_ms}}.mpd"));
        };
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => return usage(format!("{f}: {e}")),
        };
        snapshots.push(Snapshot {
            viewer,
            fetched_at_ms,
            bytes,
        });
    }
    let report = validate_snapshots(url, &snapshots);
    match serde_json::to_string(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("cf-ssai dash-validate: {e}");
            return ExitCode::FAILURE;
        }
    }
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
