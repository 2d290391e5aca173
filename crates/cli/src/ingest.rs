//! `cf-ssai ads ingest FILE --org O --id ID --api URL --token T
//!  [--channel SLUG] [--slate] [--cadence-ms 1920]
//!  [--ladder 640x360:900000,960x540:1800000] [--public-base URL]
//!  [--containers ts,fmp4]`
//!
//! Conditions a creative with ffmpeg into HLS renditions that match the
//! channel's ladder and exact segment cadence (closed GOPs on segment
//! boundaries, 25 fps and 48 kHz AAC so 1.92 s holds whole video and audio
//! frames, trimmed to whole segments), in MPEG-TS and in fMP4 (one encode,
//! segmented twice: the splice only uses an ad whose container matches the
//! content's), uploads them to R2 through the admin API, and registers the
//! ad (or slate) in the library. HTTP goes through `curl` (no TLS stack
//! compiled into the CLI).

use crate::{flag, flag_or};
use cf_ssai_core::media;
use cf_ssai_core::model::{AdRendition, AdSegment, TrackKind};
use std::path::Path;
use std::process::Command;

pub fn run(args: &[String]) -> Result<(), String> {
    let file = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .ok_or("ads ingest FILE required")?;
    let org = flag(args, "--org").ok_or("--org required")?;
    let id = flag(args, "--id").ok_or("--id required")?;
    let api = flag(args, "--api")
        .ok_or("--api required")?
        .trim_end_matches('/');
    let token = flag(args, "--token").ok_or("--token required")?;
    let public = flag(args, "--public-base")
        .unwrap_or(api)
        .trim_end_matches('/');
    let cadence_ms: u64 = flag_or(args, "--cadence-ms", 1920)?;
    let slate = args.iter().any(|a| a == "--slate");
    let channel = flag(args, "--channel");
    let ladder = parse_ladder(flag(args, "--ladder").unwrap_or("640x360:900000,960x540:1800000"))?;
    let cadence = cadence_ms as f64 / 1000.0;
    let src_dur = probe_duration(file)?;
    // Whole segments only: the pod layout counts segments.
    let n = ((src_dur + 0.01) / cadence).floor().max(1.0) as u64;
    let dur = n as f64 * cadence;
    let work = std::env::temp_dir().join(format!("cf-ssai-ingest-{id}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let containers: Vec<&str> = flag(args, "--containers")
        .unwrap_or("ts,fmp4")
        .split(',')
        .map(str::trim)
        .collect();
    if let Some(bad) = containers.iter().find(|c| !matches!(**c, "ts" | "fmp4")) {
        return Err(format!("--containers: {bad:?} is not ts or fmp4"));
    }
    let mut renditions = Vec::new();
    for (res, bw) in &ladder {
        let dir = work.join(bw.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let enc = dir.join("enc.mp4");
        transcode(file, &enc, res, *bw, cadence, dur)?;
        for c in &containers {
            let fmp4 = *c == "fmp4";
            segment(&enc, &dir, cadence, fmp4)?;
            let list = dir.join(if fmp4 { "fmp4.m3u8" } else { "ts.m3u8" });
            let text = std::fs::read_to_string(&list).map_err(|e| e.to_string())?;
            let m = media::parse(&text).map_err(|e| format!("ffmpeg output: {e}"))?;
            let kind = if slate { "slates" } else { "ads" };
            let prefix = format!("{org}/{kind}/{id}/{bw}{}", if fmp4 { "/fmp4" } else { "" });
            let (ext, ctype) = if fmp4 {
                ("m4s", "video/mp4")
            } else {
                ("ts", "video/mp2t")
            };
            let mut segs = Vec::new();
            let mut pl = format!(
                "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n",
                if fmp4 { 7 } else { 3 },
                cadence.ceil() as u64
            );
            let init_uri = if fmp4 {
                upload(
                    api,
                    token,
                    &format!("{prefix}/init.mp4"),
                    &dir.join("init.mp4"),
                    "video/mp4",
                )?;
                let u = format!("{public}/media/{prefix}/init.mp4");
                pl.push_str(&format!("#EXT-X-MAP:URI=\"{u}\"\n"));
                Some(u)
            } else {
                None
            };
            for (i, sg) in m.segments.iter().enumerate() {
                let name = format!("seg{i}.{ext}");
                let local = dir.join(m.tokens.lines[sg.uri_line].raw().trim());
                upload(api, token, &format!("{prefix}/{name}"), &local, ctype)?;
                let uri = format!("{public}/media/{prefix}/{name}");
                pl.push_str(&format!("#EXTINF:{},\n{uri}\n", sg.duration_text));
                segs.push(AdSegment {
                    uri,
                    duration: sg.duration,
                    byterange: None,
                });
            }
            pl.push_str("#EXT-X-ENDLIST\n");
            let plf = dir.join("playlist.m3u8");
            std::fs::write(&plf, pl).map_err(|e| e.to_string())?;
            upload(
                api,
                token,
                &format!("{prefix}/index.m3u8"),
                &plf,
                "application/vnd.apple.mpegurl",
            )?;
            renditions.push(AdRendition {
                bandwidth: *bw,
                codecs: Some("avc1.4d401f,mp4a.40.2".into()),
                resolution: Some(res.clone()),
                kind: TrackKind::Muxed,
                playlist_url: format!("{public}/media/{prefix}/index.m3u8"),
                cadence_s: cadence,
                segments: segs,
                init_uri,
                key: None,
            });
        }
    }
    let (path, body) = if slate {
        (
            format!("{api}/api/orgs/{org}/slates/{id}"),
            serde_json::json!({"channel": channel, "renditions": renditions}),
        )
    } else {
        (
            format!("{api}/api/orgs/{org}/ads/{id}"),
            serde_json::json!({
                "creative_id": flag(args, "--creative-id").unwrap_or(id),
                "universal_ad_id": flag(args, "--universal-ad-id"),
                "channel": channel,
                "duration_s": (dur * 1000.0).round() / 1000.0,
                "cadence_ms": cadence_ms,
                "renditions": renditions,
                "tracking": flag(args, "--tracking").and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()).unwrap_or(serde_json::json!({})),
            }),
        )
    };
    let bodyf = work.join("register.json");
    std::fs::write(&bodyf, body.to_string()).map_err(|e| e.to_string())?;
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", bodyf.display()),
            &path,
        ],
        token,
    )?;
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "{}",
        serde_json::json!({"id": id, "duration_s": dur, "segments": n, "renditions": renditions.len(), "slate": slate})
    );
    Ok(())
}

fn parse_ladder(s: &str) -> Result<Vec<(String, u64)>, String> {
    s.split(',')
        .map(|r| {
            let (res, bw) = r
                .split_once(':')
                .ok_or(format!("--ladder: {r:?} is not WxH:BANDWIDTH"))?;
            Ok((
                res.to_string(),
                bw.parse()
                    .map_err(|_| format!("--ladder: bad bandwidth {bw:?}"))?,
            ))
        })
        .collect()
}

fn probe_duration(file: &str) -> Result<f64, String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "default=nw=1:nk=1",
            file,
        ])
        .output()
        .map_err(|e| format!("ffprobe: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| format!("ffprobe could not read the duration of {file}"))
}

/// Encode once to an MP4 with keyframes exactly on segment boundaries.
fn transcode(
    file: &str,
    out: &Path,
    res: &str,
    bw: u64,
    cadence: f64,
    dur: f64,
) -> Result<(), String> {
    let (w, h) = res.split_once('x').ok_or("resolution must be WxH")?;
    let gop = (cadence * 25.0).round() as u64;
    let vbr = bw * 85 / 100 - 96_000;
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-i",
            file,
            "-t",
            &format!("{dur:.3}"),
        ])
        .args([
            "-vf",
            &format!("scale={w}:{h},fps=25"),
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-preset",
            "veryfast",
            "-profile:v",
            "main",
            // No B-frames: audio and video then end together at every
            // segment boundary (B-frame delay shifts video ~64 ms past the
            // audio, and hls.js stalls at interstitial boundaries).
            "-bf",
            "0",
        ])
        .args([
            "-b:v",
            &vbr.to_string(),
            "-maxrate",
            &vbr.to_string(),
            "-bufsize",
            &(vbr * 2).to_string(),
        ])
        .args([
            "-g",
            &gop.to_string(),
            "-keyint_min",
            &gop.to_string(),
            "-sc_threshold",
            "0",
        ])
        .args([
            "-force_key_frames",
            &format!("expr:gte(t,n_forced*{cadence})"),
        ])
        .args(["-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "96k"])
        .arg(out)
        .status()
        .map_err(|e| format!("ffmpeg: {e}"))?;
    if !status.success() {
        return Err(format!("ffmpeg failed for {res}"));
    }
    Ok(())
}

/// Cut the encode into HLS segments without re-encoding: MPEG-TS
/// (`ts.m3u8`, `seg%d.ts`) or fMP4 (`fmp4.m3u8`, `init.mp4`, `seg%d.m4s`).
fn segment(enc: &Path, dir: &Path, cadence: f64, fmp4: bool) -> Result<(), String> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(enc)
        .args([
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            &format!("{cadence}"),
        ])
        .args(["-hls_playlist_type", "vod"]);
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
        ])
        .arg(dir.join("fmp4.m3u8"));
    } else {
        cmd.args([
            "-hls_segment_filename",
            &dir.join("seg%d.ts").display().to_string(),
        ])
        .arg(dir.join("ts.m3u8"));
    }
    let status = cmd.status().map_err(|e| format!("ffmpeg: {e}"))?;
    if !status.success() {
        return Err(format!(
            "ffmpeg could not segment {} as {}",
            enc.display(),
            if fmp4 { "fMP4" } else { "TS" }
        ));
    }
    Ok(())
}

fn upload(api: &str, token: &str, key: &str, file: &Path, ctype: &str) -> Result<(), String> {
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {ctype}"),
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{api}/api/media/{key}"),
        ],
        token,
    )
}

fn curl(args: &[&str], token: &str) -> Result<(), String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ])
        .args(args)
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}{}",
            args.last().unwrap_or(&""),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
