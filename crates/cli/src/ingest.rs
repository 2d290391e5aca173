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
    let api = flag(args, "--api")
        .ok_or("--api required")?
        .trim_end_matches('/');
    let containers: Vec<String> = flag(args, "--containers")
        .unwrap_or("ts,fmp4")
        .split(',')
        .map(|c| c.trim().to_string())
        .collect();
    let loudness = match flag(args, "--loudness-lufs") {
        Some(v) => Some(Loudness {
            lufs: v.parse().map_err(|_| format!("--loudness-lufs: {v:?}"))?,
            true_peak: flag_or(args, "--true-peak-dbtp", -1.0)?,
        }),
        None => None,
    };
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
        cadence_ms: flag_or(args, "--cadence-ms", 1920)?,
        slate: args.iter().any(|a| a == "--slate"),
        channel: flag(args, "--channel"),
        ladder: parse_ladder(flag(args, "--ladder").unwrap_or("640x360:900000,960x540:1800000"))?,
        containers,
        creative_id: flag(args, "--creative-id").unwrap_or(id),
        universal_ad_id: flag(args, "--universal-ad-id"),
        tracking: flag(args, "--tracking")
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .unwrap_or(serde_json::json!({})),
        loudness,
        source: None,
    };
    println!("{}", ingest(&spec)?);
    Ok(())
}

/// EBU R128 normalisation: integrated loudness target and true-peak
/// ceiling (two-pass `loudnorm`: measure, then apply linearly).
#[derive(Clone, Copy, Debug)]
pub struct Loudness {
    pub lufs: f64,
    pub true_peak: f64,
}

/// One creative to condition and register.
pub struct Spec<'a> {
    pub file: &'a str,
    pub org: &'a str,
    pub id: &'a str,
    pub api: &'a str,
    pub token: &'a str,
    pub public: &'a str,
    pub cadence_ms: u64,
    pub slate: bool,
    pub channel: Option<&'a str>,
    pub ladder: Vec<(String, u64)>,
    pub containers: Vec<String>,
    pub creative_id: &'a str,
    pub universal_ad_id: Option<&'a str>,
    pub tracking: serde_json::Value,
    pub loudness: Option<Loudness>,
    /// Set by the conditioner: the ad server's source (URL, size) it was
    /// made from; the ad is then matched to VAST only, never a house ad.
    pub source: Option<(String, u64)>,
}

/// Condition, upload and register one creative; the summary as JSON.
pub fn ingest(spec: &Spec) -> Result<serde_json::Value, String> {
    let Spec {
        file,
        org,
        id,
        api,
        token,
        public,
        cadence_ms,
        slate,
        channel,
        ..
    } = *spec;
    let ladder = &spec.ladder;
    let cadence = cadence_ms as f64 / 1000.0;
    let src_dur = probe_duration(file)?;
    // Whole segments only: the pod layout counts segments.
    let n = ((src_dur + 0.01) / cadence).floor().max(1.0) as u64;
    let dur = n as f64 * cadence;
    let work = std::env::temp_dir().join(format!("cf-ssai-ingest-{id}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let containers: Vec<&str> = spec.containers.iter().map(String::as_str).collect();
    if let Some(bad) = containers.iter().find(|c| !matches!(**c, "ts" | "fmp4")) {
        return Err(format!("--containers: {bad:?} is not ts or fmp4"));
    }
    let has_audio = probe_has(file, "a")?;
    let audio_filter = match spec.loudness {
        Some(l) if has_audio => Some(loudnorm_filter(file, dur, l)?),
        _ => None,
    };
    let mut renditions = Vec::new();
    let kind = if slate { "slates" } else { "ads" };
    let up = Upload {
        api,
        token,
        public,
        prefix: format!("{org}/{kind}/{id}"),
        cadence,
    };
    for (i, (res, bw)) in ladder.iter().enumerate() {
        let dir = work.join(bw.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let enc = dir.join("enc.mp4");
        transcode(
            file,
            &enc,
            res,
            *bw,
            cadence,
            dur,
            has_audio,
            audio_filter.as_deref(),
        )?;
        // Muxed for muxed channels; for demuxed ones (audio in an audio
        // group) the same encode without audio, and once its audio alone:
        // remuxed, never re-encoded, so every track keeps the timing. The
        // bandwidths differ (audio 128 kb/s, video-only the rung less
        // that), so each rendition has its own routes.
        let mut tracks = vec![(TrackKind::Muxed, *bw, Some(res.as_str()))];
        tracks.push((
            TrackKind::Video,
            bw.saturating_sub(AUDIO_BANDWIDTH),
            Some(res),
        ));
        if i == 0 {
            tracks.push((TrackKind::Audio, AUDIO_BANDWIDTH, None));
        }
        for (kind, bandwidth, res) in tracks {
            for c in &containers {
                let out = dir.join(format!("{kind:?}-{c}"));
                std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
                renditions.push(up.rendition(&enc, &out, kind, bandwidth, res, *c == "fmp4")?);
            }
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
                "creative_id": spec.creative_id,
                "universal_ad_id": spec.universal_ad_id,
                "channel": channel,
                "duration_s": (dur * 1000.0).round() / 1000.0,
                "cadence_ms": cadence_ms,
                "renditions": renditions,
                "tracking": spec.tracking,
                "conditioned": spec.source.is_some(),
                "source_url": spec.source.as_ref().map(|s| s.0.clone()),
                "source_size": spec.source.as_ref().map_or(0, |s| s.1),
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
    Ok(
        serde_json::json!({"id": id, "duration_s": dur, "segments": n, "renditions": renditions.len(), "slate": slate, "loudness_filter": audio_filter}),
    )
}

/// Two-pass EBU R128: measure the source's integrated loudness, true peak,
/// range and threshold, then the `loudnorm` filter that brings it to the
/// target linearly (one gain: no pumping), 48 kHz out.
fn loudnorm_filter(file: &str, dur: f64, l: Loudness) -> Result<String, String> {
    let target = format!("I={}:TP={}:LRA=11", l.lufs, l.true_peak);
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostats",
            "-i",
            file,
            "-t",
            &format!("{dur:.3}"),
        ])
        .args([
            "-vn",
            "-af",
            &format!("loudnorm={target}:print_format=json"),
            "-f",
            "null",
            "-",
        ])
        .output()
        .map_err(|e| format!("ffmpeg: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    let json = err
        .rfind('{')
        .and_then(|a| err[a..].find('}').map(|b| &err[a..=a + b]))
        .ok_or("loudness measurement: no loudnorm report")?;
    let m: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("loudness measurement: {e}"))?;
    let get = |k: &str| -> Result<f64, String> {
        m[k].as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .ok_or(format!("loudness measurement: {k} missing (silent audio?)"))
    };
    Ok(format!(
        "loudnorm={target}:measured_I={}:measured_TP={}:measured_LRA={}:measured_thresh={}:offset={}:linear=true,aresample=48000",
        get("input_i")?,
        get("input_tp")?,
        get("input_lra")?,
        get("input_thresh")?,
        get("target_offset")?,
    ))
}

/// Whether the file has a stream of this type (`v` video, `a` audio).
pub fn probe_has(file: &str, kind: &str) -> Result<bool, String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            kind,
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
            file,
        ])
        .output()
        .map_err(|e| format!("ffprobe: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ffprobe could not read {file}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

pub(crate) fn parse_ladder(s: &str) -> Result<Vec<(String, u64)>, String> {
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
#[allow(clippy::too_many_arguments)]
fn transcode(
    file: &str,
    out: &Path,
    res: &str,
    bw: u64,
    cadence: f64,
    dur: f64,
    has_audio: bool,
    audio_filter: Option<&str>,
) -> Result<(), String> {
    let (w, h) = res.split_once('x').ok_or("resolution must be WxH")?;
    let gop = (cadence * 25.0).round() as u64;
    let vbr = bw * 85 / 100 - 96_000;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y", "-i", file]);
    if has_audio {
        cmd.args(["-map", "0:v:0", "-map", "0:a:0"]);
        if let Some(af) = audio_filter {
            cmd.args(["-af", af]);
        }
    } else {
        // Content is muxed with audio: an ad without any gets silence, so
        // every rendition keeps the same tracks across the splice.
        cmd.args(["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"])
            .args(["-map", "0:v:0", "-map", "1:a:0"]);
    }
    let status = cmd
        .args(["-t", &format!("{dur:.3}")])
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

/// Audio-only renditions' BANDWIDTH (96 kb/s AAC plus container).
const AUDIO_BANDWIDTH: u64 = 128_000;

/// Where and how renditions are uploaded.
struct Upload<'a> {
    api: &'a str,
    token: &'a str,
    public: &'a str,
    /// `{org}/{ads|slates}/{id}`.
    prefix: String,
    cadence: f64,
}

impl Upload<'_> {
    /// Segment one track selection of the encode into `dir`, upload its
    /// segments and VOD playlist, and describe it.
    fn rendition(
        &self,
        enc: &Path,
        dir: &Path,
        kind: TrackKind,
        bw: u64,
        res: Option<&str>,
        fmp4: bool,
    ) -> Result<AdRendition, String> {
        let (api, token, public, cadence) = (self.api, self.token, self.public, self.cadence);
        segment(enc, dir, cadence, fmp4, kind)?;
        let list = dir.join(if fmp4 { "fmp4.m3u8" } else { "ts.m3u8" });
        let text = std::fs::read_to_string(&list).map_err(|e| e.to_string())?;
        let m = media::parse(&text).map_err(|e| format!("ffmpeg output: {e}"))?;
        let prefix = format!("{}/{bw}{}", self.prefix, if fmp4 { "/fmp4" } else { "" });
        let (ext, ctype) = match (fmp4, kind) {
            (true, TrackKind::Audio) => ("m4s", "audio/mp4"),
            (true, _) => ("m4s", "video/mp4"),
            (false, _) => ("ts", "video/mp2t"),
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
                ctype,
            )?;
            let u = format!("{public}/media/{prefix}/init.mp4");
            pl.push_str(&format!("#EXT-X-MAP:URI=\"{u}\"\n"));
            Some(u)
        } else {
            None
        };
        // Whole segments only (an audio remux may end with a few
        // milliseconds of encoder priming as its own segment).
        let whole = m.segments.iter().filter(|sg| sg.duration >= cadence / 2.0);
        for (i, sg) in whole.enumerate() {
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
        Ok(AdRendition {
            bandwidth: bw,
            codecs: Some(
                match kind {
                    TrackKind::Audio => "mp4a.40.2",
                    TrackKind::Video => "avc1.4d401f",
                    _ => "avc1.4d401f,mp4a.40.2",
                }
                .into(),
            ),
            resolution: res.map(str::to_string),
            kind,
            playlist_url: format!("{public}/media/{prefix}/index.m3u8"),
            cadence_s: cadence,
            segments: segs,
            init_uri,
            key: None,
        })
    }
}

/// Cut the encode into HLS segments without re-encoding: MPEG-TS
/// (`ts.m3u8`, `seg%d.ts`) or fMP4 (`fmp4.m3u8`, `init.mp4`, `seg%d.m4s`).
fn segment(
    enc: &Path,
    dir: &Path,
    cadence: f64,
    fmp4: bool,
    kind: TrackKind,
) -> Result<(), String> {
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
