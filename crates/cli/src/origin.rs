//! `cf-ssai origin`: a local live HLS origin for the demo and the tests.
//!
//! Serves `/live/{channel}/master.m3u8` and `/live/{channel}/{variant}/
//! index.m3u8` from the core's simulator (a sliding window with PDT and
//! SCTE-35 breaks), and segments from `--media DIR/{variant}/seg{n}.ts`
//! (looped, with an origin discontinuity at each loop). The channel name
//! picks the marker dialect when it is one (`cue-out`, `daterange`,
//! `oatcls`, `scte35-tag`, `splicepoint`, `none`, or `daterange-ahead`:
//! DATERANGE announced 3 segments before its START-DATE), else
//! `--dialect`; `--signal-ahead N` announces DATERANGE breaks N segments
//! early on every channel. A `-fmp4` suffix serves the channel as fMP4
//! (`init.mp4` + `seg{n}.m4s` from the same media directory). `inband`
//! (and `inband-fmp4`) carries its breaks only in the media: a SCTE-35 PID
//! in the TS, `emsg` boxes in the fMP4, no playlist marker. A `-demuxed`
//! suffix serves the channel demuxed (TS): video-only variants from
//! `{variant}-video/`, an audio group in English and Spanish (`aud-en/`,
//! `aud-es/`) and English WebVTT subtitles written here, one cue per
//! segment naming its MSN.
//! Media playlists honour LL-HLS blocking reloads (`_HLS_msn`, and
//! `_HLS_part` on a `-ll` channel: LL-HLS with two 0.96 s parts per
//! segment, `part{n}.{i}.ts` cut from the same encode as the segments,
//! `--media DIR/{variant}/part{2n+i}.ts`).
//! `POST /ctl/{channel}/down?secs=N` makes a channel answer 503 for N
//! seconds (the origin-dies test). Listens on 127.0.0.1 only.

use crate::{flag, flag_or};
use cf_ssai_testkit::sim::{SimChannel, SimDialect, SimVariant};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Origin {
    base: SimChannel,
    default_dialect: SimDialect,
    media: Option<std::path::PathBuf>,
    down_until: Mutex<HashMap<String, i64>>,
    stop_after: Option<i64>,
}

/// LL-HLS parts per segment on `-ll` channels (the demo media's parts are
/// half a segment).
const LL_PARTS: u64 = 2;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let port: u16 = flag_or(args, "--port", 8788)?;
    let cadence_ms: u64 = flag_or(args, "--cadence-ms", 1920)?;
    let window: u64 = flag_or(args, "--window", 6)?;
    let break_every: u64 = flag_or(args, "--break-every", 30)?;
    let break_len: u64 = flag_or(args, "--break-len", 8)?;
    let first_break: u64 = flag_or(args, "--first-break", 0)?;
    let loop_len: u64 = flag_or(args, "--loop", 1_000_000)?;
    let fmp4 = args.iter().any(|a| a == "--fmp4");
    let dialect = SimDialect::parse(flag(args, "--dialect").unwrap_or("cue-out"))
        .ok_or("--dialect: one of cue-out, daterange, oatcls, scte35-tag, splicepoint, none")?;
    // Optional lifetime: servers started for tests stop by themselves.
    let stop_after: Option<i64> = flag(args, "--exit-after-s").and_then(|s| s.parse().ok());
    let now = now_ms();
    // The first break comes `first_break` segments after start (so a demo
    // viewer sees one soon); MSNs count from an epoch a window ago.
    // `--msn-offset K` starts the sequence K segments further on with the
    // same PDT for the same instant: a packager failover whose media
    // sequence differs (tests of origin epochs).
    let msn_offset: u64 = flag_or(args, "--msn-offset", 0)?;
    let epoch = now - (window as i64 + 1 + msn_offset as i64) * cadence_ms as i64;
    let start_msn = window + 1 + msn_offset;
    let base = SimChannel {
        cadence_ms,
        window,
        epoch_ms: epoch,
        pdt: true,
        fmp4,
        key: false,
        dialect,
        break_every,
        first_break: start_msn + first_break,
        break_len,
        variants: vec![
            SimVariant {
                name: "v360".into(),
                bandwidth: 900_000,
                resolution: Some("640x360".into()),
                codecs: "avc1.42c01e,mp4a.40.2".into(),
            },
            SimVariant {
                name: "v540".into(),
                bandwidth: 1_800_000,
                resolution: Some("960x540".into()),
                codecs: "avc1.4d401f,mp4a.40.2".into(),
            },
        ],
        loop_len,
        origin_disc_every: if loop_len < 1_000_000 { loop_len } else { 0 },
        signal_ahead: flag_or(args, "--signal-ahead", 0)?,
        demuxed: false,
        ll_parts: 0,
    };
    let origin = Arc::new(Origin {
        base,
        default_dialect: dialect,
        media: flag(args, "--media").map(Into::into),
        down_until: Mutex::new(HashMap::new()),
        stop_after: stop_after.map(|s| now + s * 1000),
    });
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
    eprintln!("cf-ssai origin on http://127.0.0.1:{port}/live/{{channel}}/master.m3u8");
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    loop {
        if origin.stop_after.is_some_and(|t| now_ms() > t) {
            return Ok(());
        }
        match listener.accept() {
            Ok((s, _)) => {
                let o = origin.clone();
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = handle(&o, s);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn handle(o: &Origin, mut s: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    if content_length > 0 {
        let mut sink = vec![0u8; content_length.min(1 << 20)];
        let _ = r.read_exact(&mut sink);
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (status, ctype, body) = respond(o, &method, path, query);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nAccess-Control-Allow-Origin: *\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    if method != "HEAD" {
        s.write_all(&body)?;
    }
    s.flush()
}

fn respond(
    o: &Origin,
    method: &str,
    path: &str,
    query: &str,
) -> (&'static str, &'static str, Vec<u8>) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let text = |s: String| ("200 OK", "application/vnd.apple.mpegurl", s.into_bytes());
    match (method, parts.as_slice()) {
        ("POST", ["ctl", ch, "down"]) => {
            let secs: i64 = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("secs="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(10);
            if let Ok(mut d) = o.down_until.lock() {
                d.insert(ch.to_string(), now_ms() + secs * 1000);
            }
            ("200 OK", "text/plain", b"down".to_vec())
        }
        ("GET" | "HEAD", ["live", ch, rest @ ..]) => {
            let down = o
                .down_until
                .lock()
                .map(|d| d.get(*ch).is_some_and(|t| *t > now_ms()))
                .unwrap_or(false);
            if down {
                return (
                    "503 Service Unavailable",
                    "text/plain",
                    b"origin down".to_vec(),
                );
            }
            let chan = channel(o, ch);
            match rest {
                ["master.m3u8"] => text(chan.master()),
                [v, "index.m3u8"]
                    if chan.variants.iter().any(|x| x.name == *v)
                        || chan.alternates().iter().any(|a| a.name == *v) =>
                {
                    // LL-HLS blocking reload: hold the request until the
                    // asked-for MSN is published (at most 3 target
                    // durations), 400 for one too far ahead, 503 on timeout.
                    let directive = |k: &str| {
                        query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix(k))
                            .and_then(|v| v.parse::<u64>().ok())
                    };
                    let want = directive("_HLS_msn=");
                    // With `_HLS_part` (LL-HLS): until that part of that
                    // segment is published (a part index past the last
                    // part means the whole segment).
                    let part = directive("_HLS_part=").filter(|p| *p < chan.ll_parts);
                    let published = |now: i64, want: u64| match (chan.live_msn(now), part) {
                        (Some(l), _) if l >= want => true,
                        (Some(l), Some(p)) => l + 1 == want && chan.parts_done(want, now) > p,
                        _ => false,
                    };
                    if let Some(want) = want {
                        let live = chan.live_msn(now_ms()).unwrap_or(0);
                        if want > live + 2 {
                            return (
                                "400 Bad Request",
                                "text/plain",
                                b"_HLS_msn too far ahead".to_vec(),
                            );
                        }
                        let until = now_ms() + 3 * chan.cadence_ms as i64;
                        while !published(now_ms(), want) {
                            if now_ms() > until {
                                return (
                                    "503 Service Unavailable",
                                    "text/plain",
                                    b"not yet".to_vec(),
                                );
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    text(chan.media(v, now_ms()))
                }
                [v, file] if file.ends_with(".vtt") => match subtitles(&chan, file) {
                    Some(body) => ("200 OK", "text/vtt", body.into_bytes()),
                    None => ("404 Not Found", "text/plain", b"no such segment".to_vec()),
                },
                [v, file] => match &o.media {
                    Some(dir) => {
                        let name = segment_file(file, chan.loop_len);
                        let v = if chan.demuxed && chan.variants.iter().any(|x| x.name == *v) {
                            format!("{v}-video")
                        } else {
                            v.to_string()
                        };
                        match std::fs::read(dir.join(&v).join(&name)) {
                            Ok(b) => ("200 OK", ctype(&name), inband(&chan, file, b)),
                            Err(_) => ("404 Not Found", "text/plain", b"no such segment".to_vec()),
                        }
                    }
                    None => (
                        "404 Not Found",
                        "text/plain",
                        b"no media directory".to_vec(),
                    ),
                },
                _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
            }
        }
        ("GET", ["healthz"]) => ("200 OK", "text/plain", b"ok".to_vec()),
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    }
}

fn channel(o: &Origin, name: &str) -> SimChannel {
    let mut c = o.base.clone();
    // `{dialect}-fmp4`: the same stream as fMP4 (init.mp4 + seg{n}.m4s).
    // `{dialect}-ll`: LL-HLS, two parts per segment.
    let name = match name.strip_suffix("-ll") {
        Some(base) => {
            c.ll_parts = LL_PARTS;
            base
        }
        None => name,
    };
    // `{dialect}-demuxed`: video, audio languages and subtitles apart.
    let name = match name.strip_suffix("-demuxed") {
        Some(base) => {
            c.demuxed = true;
            base
        }
        None => name,
    };
    let name = match name.strip_suffix("-fmp4") {
        Some(base) => {
            c.fmp4 = true;
            base
        }
        None => name,
    };
    if name == "daterange-ahead" {
        // DATERANGE signalled 3 segments ahead of its START-DATE.
        c.dialect = SimDialect::Daterange;
        c.signal_ahead = c.signal_ahead.max(3);
        return c;
    }
    c.dialect = SimDialect::parse(name).unwrap_or(o.default_dialect);
    c
}

/// An in-band channel's segment as a packager with in-band SCTE-35 writes
/// it: TS with the SCTE-35 PID in every PMT and the splice_insert on the
/// break's first segment; fMP4 with an `emsg` box (v0 on even breaks, v1
/// on odd ones) before the first segment's `moof`.
fn inband(chan: &SimChannel, file: &str, bytes: Vec<u8>) -> Vec<u8> {
    use cf_ssai_core::scte35::inband::build;
    if chan.dialect != SimDialect::Inband {
        return bytes;
    }
    let Some((msn, ext)) = file
        .strip_prefix("seg")
        .and_then(|f| f.split_once('.'))
        .and_then(|(n, ext)| n.parse::<u64>().ok().map(|n| (n, ext)))
    else {
        return bytes;
    };
    let section = chan.inband_section(msn);
    match ext {
        "ts" => build::with_scte35(&bytes, 0x1F0, section.as_deref(), msn as u8),
        "m4s" => match section {
            Some(sec) => {
                let id = chan.break_at(msn).map_or(0, |(_, id)| id);
                let emsg = if id.is_multiple_of(2) {
                    build::emsg(0, 90_000, 0, id, &sec)
                } else {
                    let t = cf_ssai_core::scte35::inband::fragment_decode_time(&bytes).unwrap_or(0);
                    build::emsg(1, 90_000, t, id, &sec)
                };
                [emsg, bytes].concat()
            }
            None => bytes,
        },
        _ => bytes,
    }
}

/// Segment `seg{msn}.vtt` of the subtitles: one cue over the segment,
/// timed against the media's MPEG-TS clock (the loop's media start at PTS
/// 1.4 s = 126000 and advance one cadence per file).
fn subtitles(chan: &SimChannel, file: &str) -> Option<String> {
    let msn: u64 = file
        .strip_prefix("seg")?
        .strip_suffix(".vtt")?
        .parse()
        .ok()?;
    let start = (msn % chan.loop_len.max(1)) * chan.cadence_ms;
    let end = start + chan.cadence_ms;
    let t = |ms: u64| {
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    };
    Some(format!(
        "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n\n{} --> {}\nNews subtitles, segment {msn}\n",
        t(start),
        t(end)
    ))
}

/// `seg{msn}.ts` → the file of that position in the loop; LL-HLS
/// `part{n}.{i}.ts` → `part{2n+i}.ts`.
fn segment_file(file: &str, loop_len: u64) -> String {
    if let Some((n, i, ext)) = file.strip_prefix("part").and_then(|f| {
        let mut it = f.splitn(3, '.');
        Some((
            it.next()?.parse::<u64>().ok()?,
            it.next()?.parse::<u64>().ok()?,
            it.next()?,
        ))
    }) {
        return format!("part{}.{ext}", (n % loop_len.max(1)) * LL_PARTS + i);
    }
    if let Some(n) = file
        .strip_prefix("seg")
        .and_then(|f| f.split_once('.'))
        .and_then(|(n, ext)| n.parse::<u64>().ok().map(|n| (n, ext)))
    {
        return format!("seg{}.{}", n.0 % loop_len.max(1), n.1);
    }
    file.replace("..", "")
}

fn ctype(name: &str) -> &'static str {
    if name.ends_with(".ts") {
        "video/mp2t"
    } else if name.ends_with(".m4s") || name.ends_with(".mp4") {
        "video/mp4"
    } else {
        "application/octet-stream"
    }
}
