//! `cf-ssai origin`: a local live HLS and DASH origin for the demo and the
//! tests.
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
//!
//! Channels named `dash*` are live MPEG-DASH (the testkit's
//! [`sim_dash`](cf_ssai_testkit::sim_dash) MPD over the same clock, window
//! and breaks): `dash` (`$Number$`, SCTE-35 as an `xml+bin` EventStream),
//! `dash-xml` (`2013:xml` EventStream), `dash-time` (`$Time$`, `xml+bin`),
//! `dash-emsg` (in-band only: an `emsg` on the video segment starting each
//! break) and `dash-none` (no cues). `/live/{dash*}/manifest.mpd`, and
//! `{rep}/init.mp4`, `{rep}/seg{N}.m4s` or `{rep}/t{T}.m4s` from the demuxed
//! CMAF media (`--media DIR/{v360,v540,aud-en}-cmaf/seg{N % loop}.m4s`),
//! each segment's `tfdt` moved to segment N's place on the MPD timeline (a
//! DASH player places media by its decode times, and the loop's files
//! restart at 0). Segments not yet published are 404. `GET /time` is the
//! clock the MPDs' `UTCTiming` (http-iso) points at.
//!
//! `POST /ctl/{channel}/down?secs=N` makes a channel answer 503 for N
//! seconds (the origin-dies test). Listens on 127.0.0.1 only.

use crate::{flag, flag_or};
use cf_ssai_testkit::sim::{SimChannel, SimDialect, SimVariant};
use cf_ssai_testkit::sim_dash::{self, Cues, DashOptions, Template};
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
    /// For the absolute `UTCTiming` URL in the MPDs.
    port: u16,
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
        port,
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
            if ch.starts_with("dash") {
                return dash(o, ch, rest);
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
        // The clock of the MPDs' UTCTiming (http-iso): players sync to it
        // to compute which segments are available.
        ("GET" | "HEAD", ["time"]) => (
            "200 OK",
            "text/plain",
            sim_dash::iso_ms(now_ms()).into_bytes(),
        ),
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

type Response = (&'static str, &'static str, Vec<u8>);

fn not_found(why: &str) -> Response {
    ("404 Not Found", "text/plain", why.as_bytes().to_vec())
}

/// The template and cue form of a `dash*` channel (None: no such channel).
fn dash_options(name: &str) -> Option<(Template, Cues)> {
    Some(match name {
        "dash" => (Template::Number, Cues::XmlBin),
        "dash-xml" => (Template::Number, Cues::Xml),
        "dash-time" => (Template::Time, Cues::XmlBin),
        "dash-emsg" => (Template::Number, Cues::Emsg),
        "dash-none" => (Template::Number, Cues::None),
        _ => return None,
    })
}

/// A DASH channel's MPD, init segments and media segments.
fn dash(o: &Origin, name: &str, rest: &[&str]) -> Response {
    let Some((template, cues)) = dash_options(name) else {
        return not_found("no such channel");
    };
    let mut chan = o.base.clone();
    // Any marker dialect but None: `break_at` then reports the breaks (the
    // MPD has no HLS dialect; `cues` says how they are signalled).
    chan.dialect = SimDialect::Daterange;
    let now = now_ms();
    match rest {
        ["manifest.mpd"] => {
            let opts = DashOptions {
                template,
                cues,
                utc_timing: Some(format!("http://127.0.0.1:{}/time", o.port)),
                // `--signal-ahead` when given, else the usual pre-roll.
                signal_ahead: match o.base.signal_ahead {
                    0 => DashOptions::default().signal_ahead,
                    n => n,
                },
            };
            let mpd = sim_dash::mpd(&chan, &opts, now);
            ("200 OK", "application/dash+xml", mpd.into_bytes())
        }
        [rep, file] => {
            let Some(timescale) = sim_dash::rep_timescale(rep) else {
                return not_found("no such representation");
            };
            let Some(media) = &o.media else {
                return not_found("no media directory");
            };
            let dir = media.join(format!("{rep}-cmaf"));
            let video = sim_dash::VIDEO_REPS.iter().any(|r| r.id == *rep);
            let ctype = if video { "video/mp4" } else { "audio/mp4" };
            if *file == "init.mp4" {
                return match std::fs::read(dir.join("init.mp4")) {
                    Ok(b) => ("200 OK", ctype, b),
                    Err(_) => not_found("no such init segment"),
                };
            }
            let d = sim_dash::seg_duration(chan.cadence_ms, timescale);
            let Some(n) = dash_segment_number(file, d) else {
                return not_found("no such segment");
            };
            // A live origin has nothing past its live edge: a player asking
            // early has its clock wrong, and should see it.
            if chan.live_msn(now).is_none_or(|live| n > live) {
                return not_found("segment not yet available");
            }
            let k = n % chan.loop_len.max(1);
            let Ok(bytes) = std::fs::read(dir.join(format!("seg{k}.m4s"))) else {
                return not_found("no such segment");
            };
            // The looped file k sits at k*d (+ the media's own offset):
            // whole loops move it to n*d, where the MPD's S@t puts it.
            let emsg = |t: u64| {
                let (id, section) = match cues {
                    Cues::Emsg if video => sim_dash::emsg_section(&chan, n)?,
                    _ => return None,
                };
                let ts = u32::try_from(timescale).ok()?;
                Some(cf_ssai_core::scte35::inband::build::emsg(
                    1, ts, t, id, &section,
                ))
            };
            let served = (n - k)
                .checked_mul(d)
                .ok_or_else(|| "decode time overflow".to_string())
                .and_then(|shift| retime_segment(&bytes, shift, emsg));
            match served {
                Ok(b) => ("200 OK", ctype, b),
                Err(e) => ("500 Internal Server Error", "text/plain", e.into_bytes()),
            }
        }
        _ => not_found("not found"),
    }
}

/// The segment number a DASH media request names: `seg{N}.m4s`
/// (`$Number$`) or `t{T}.m4s` (`$Time$`, on a timeline of `d` ticks).
fn dash_segment_number(file: &str, d: u64) -> Option<u64> {
    let stem = file.strip_suffix(".m4s")?;
    if let Some(n) = stem.strip_prefix("seg") {
        return n.parse().ok();
    }
    sim_dash::segment_of_time(stem.strip_prefix('t')?.parse().ok()?, d)
}

/// One ISO BMFF box: its type, header length and whole bytes.
struct Mp4Box<'a> {
    kind: [u8; 4],
    hdr: usize,
    bytes: &'a [u8],
}

impl<'a> Mp4Box<'a> {
    fn body(&self) -> &'a [u8] {
        self.bytes.get(self.hdr..).unwrap_or_default()
    }
}

/// The boxes that tile `data` exactly, walked by their sizes. A size that
/// overruns or undercuts, or trailing bytes, refuse the whole file: a
/// malformed segment is an error, never half-rewritten.
fn mp4_boxes(data: &[u8]) -> Result<Vec<Mp4Box<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let bad = || "malformed box".to_string();
        let head = rest.get(..8).ok_or_else(bad)?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = [head[4], head[5], head[6], head[7]];
        let (hdr, size) = match size32 {
            // To the end of the enclosing data.
            0 => (8, rest.len()),
            1 => {
                let large: [u8; 8] = rest
                    .get(8..16)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(bad)?;
                let size = usize::try_from(u64::from_be_bytes(large)).map_err(|_| bad())?;
                (16, size)
            }
            s => (8, usize::try_from(s).map_err(|_| bad())?),
        };
        if size < hdr {
            return Err(bad());
        }
        let bytes = rest.get(..size).ok_or_else(bad)?;
        out.push(Mp4Box { kind, hdr, bytes });
        rest = rest.get(size..).unwrap_or_default();
    }
    Ok(out)
}

/// A box of `kind` around `body` (64-bit size only when 32 bits cannot
/// hold it).
fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    match u32::try_from(body.len() + 8) {
        Ok(size) => {
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(kind);
        }
        Err(_) => {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(&(body.len() as u64 + 16).to_be_bytes());
        }
    }
    out.extend_from_slice(body);
    out
}

/// A full box's 24 flag bits.
fn fullbox_flags(body: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes([
        0,
        *body.get(1)?,
        *body.get(2)?,
        *body.get(3)?,
    ]))
}

/// (version, baseMediaDecodeTime) of a `tfdt` body.
fn tfdt_time(body: &[u8]) -> Option<(u8, u64)> {
    let word = |n: usize| body.get(4..4 + n);
    match body.first()? {
        0 => Some((0, u64::from(u32::from_be_bytes(word(4)?.try_into().ok()?)))),
        1 => Some((1, u64::from_be_bytes(word(8)?.try_into().ok()?))),
        _ => None,
    }
}

/// A `tfdt` body of `time`: version 0 only if it was and still fits.
fn tfdt_body(version: u8, time: u64) -> Vec<u8> {
    match u32::try_from(time) {
        Ok(t) if version == 0 => [&[0u8, 0, 0, 0][..], &t.to_be_bytes()].concat(),
        _ => [&[1u8, 0, 0, 0][..], &time.to_be_bytes()].concat(),
    }
}

/// A served DASH media segment: every fragment's `tfdt` moved `shift`
/// ticks, the `emsg` `emsg(new tfdt)` returns (if any) before the first
/// `moof`, and the `sidx` dropped (it indexes the file's own times and
/// byte ranges, which this moves; with a SegmentTemplate no player reads
/// it). A tfdt v0 that outgrows 32 bits becomes v1: its traf and moof grow
/// by 4 and the moof-relative trun data offsets follow. Absolute offsets
/// (tfhd base_data_offset, which CMAF forbids) are refused.
fn retime_segment(
    data: &[u8],
    shift: u64,
    emsg: impl FnOnce(u64) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() + 256);
    let mut emsg = Some(emsg);
    for b in mp4_boxes(data)? {
        match &b.kind {
            b"sidx" => {}
            b"moof" => {
                let (moof, t) = retime_moof(b.body(), shift)?;
                if let Some(e) = emsg.take().and_then(|f| f(t)) {
                    out.extend_from_slice(&e);
                }
                out.extend_from_slice(&mp4_box(b"moof", &moof));
            }
            _ => out.extend_from_slice(b.bytes),
        }
    }
    if emsg.is_some() {
        return Err("media segment without a moof".into());
    }
    Ok(out)
}

/// A moof body retimed by `shift`, and its first traf's new decode time.
fn retime_moof(body: &[u8], shift: u64) -> Result<(Vec<u8>, u64), String> {
    let kids = mp4_boxes(body)?;
    // Every traf's new time first: a v0 tfdt outgrowing 32 bits becomes v1,
    // 4 bytes longer, moving the mdat (so the trun offsets) by `growth`.
    let mut times = Vec::new();
    for traf in kids.iter().filter(|b| &b.kind == b"traf") {
        let (version, t) = mp4_boxes(traf.body())?
            .iter()
            .find(|b| &b.kind == b"tfdt")
            .and_then(|b| tfdt_time(b.body()))
            .ok_or("traf without a tfdt")?;
        let t = t.checked_add(shift).ok_or("decode time overflow")?;
        times.push((version, t));
    }
    let first_time = times.first().map(|t| t.1).ok_or("moof without a traf")?;
    let grown = |&(v, t): &(u8, u64)| v == 0 && u32::try_from(t).is_err();
    let growth = 4 * times.iter().filter(|t| grown(t)).count() as i64;
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut times = times.into_iter();
    let mut first = true;
    for k in &kids {
        if &k.kind != b"traf" {
            out.extend_from_slice(k.bytes);
            continue;
        }
        let (version, t) = times.next().ok_or("traf without a tfdt")?;
        let traf = retime_traf(k.body(), version, t, first, growth)?;
        out.extend_from_slice(&mp4_box(b"traf", &traf));
        first = false;
    }
    Ok((out, first_time))
}

/// A traf body with its tfdt at `time` and its moof-relative trun data
/// offsets moved by `growth` bytes.
fn retime_traf(
    body: &[u8],
    version: u8,
    time: u64,
    first: bool,
    growth: i64,
) -> Result<Vec<u8>, String> {
    let kids = mp4_boxes(body)?;
    let flags = kids
        .iter()
        .find(|b| &b.kind == b"tfhd")
        .and_then(|b| fullbox_flags(b.body()))
        .ok_or("traf without a tfhd")?;
    if flags & 0x1 != 0 {
        return Err("tfhd base_data_offset: absolute offsets are not rewritten".into());
    }
    // Data offsets count from the moof with default-base-is-moof, and in
    // the first traf without it; a later traf's count from the end of the
    // previous traf's data, which moves with the mdat.
    let moof_relative = flags & 0x02_0000 != 0 || first;
    let mut out = Vec::with_capacity(body.len() + 4);
    for k in &kids {
        match &k.kind {
            b"tfdt" => out.extend_from_slice(&mp4_box(b"tfdt", &tfdt_body(version, time))),
            b"trun" if growth != 0 && moof_relative => {
                out.extend_from_slice(&mp4_box(b"trun", &move_data_offset(k.body(), growth)?))
            }
            _ => out.extend_from_slice(k.bytes),
        }
    }
    Ok(out)
}

/// A trun body with its data_offset (when present) moved by `by` bytes.
fn move_data_offset(body: &[u8], by: i64) -> Result<Vec<u8>, String> {
    let mut b = body.to_vec();
    if fullbox_flags(body).ok_or("short trun")? & 0x1 != 0 {
        let field = b.get_mut(8..12).ok_or("short trun")?;
        let old = i32::from_be_bytes([field[0], field[1], field[2], field[3]]);
        let new = i32::try_from(i64::from(old) + by).map_err(|_| "trun data_offset overflow")?;
        field.copy_from_slice(&new.to_be_bytes());
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(kind: &[u8; 4], version: u8, flags: u32, rest: &[u8]) -> Vec<u8> {
        let f = flags.to_be_bytes();
        mp4_box(kind, &[&[version, f[1], f[2], f[3]][..], rest].concat())
    }

    /// styp, sidx, moof (mfhd, traf (tfhd default-base-is-moof, tfdt,
    /// trun with a data offset at the mdat payload)), mdat.
    fn segment(tfdt_version: u8, time: u64) -> Vec<u8> {
        let tfdt = match tfdt_version {
            0 => full(b"tfdt", 0, 0, &(time as u32).to_be_bytes()),
            _ => full(b"tfdt", 1, 0, &time.to_be_bytes()),
        };
        let traf_of = |offset: i32| {
            let trun = full(
                b"trun",
                0,
                0x301,
                &[
                    &2u32.to_be_bytes()[..],
                    &offset.to_be_bytes(),
                    &[0, 0, 2, 0, 0, 0, 0, 3],
                    &[0, 0, 2, 0, 0, 0, 0, 2],
                ]
                .concat(),
            );
            let tfhd = full(b"tfhd", 0, 0x02_0000, &1u32.to_be_bytes());
            mp4_box(b"traf", &[tfhd, tfdt.clone(), trun].concat())
        };
        let mfhd = full(b"mfhd", 0, 0, &7u32.to_be_bytes());
        let moof_len = mp4_box(b"moof", &[mfhd.clone(), traf_of(0)].concat()).len();
        let moof = mp4_box(b"moof", &[mfhd, traf_of(moof_len as i32 + 8)].concat());
        [
            mp4_box(b"styp", b"msdhmsdh"),
            full(b"sidx", 1, 0, &[0u8; 28]),
            moof,
            mp4_box(b"mdat", b"abcde"),
        ]
        .concat()
    }

    /// (tfdt version, time) of the first traf, and whether its trun data
    /// offset lands on the mdat payload.
    fn inspect(seg: &[u8]) -> (u8, u64, bool) {
        let top = mp4_boxes(seg).unwrap();
        let mut at = 0usize;
        let mut moof_at = None;
        let mut result = None;
        for b in &top {
            if &b.kind == b"moof" {
                moof_at = Some(at);
                let traf = mp4_boxes(b.body())
                    .unwrap()
                    .into_iter()
                    .find(|k| &k.kind == b"traf")
                    .unwrap();
                let kids = mp4_boxes(traf.body()).unwrap();
                let tfdt = kids.iter().find(|k| &k.kind == b"tfdt").unwrap();
                let trun = kids.iter().find(|k| &k.kind == b"trun").unwrap();
                let off = i32::from_be_bytes(trun.body()[8..12].try_into().unwrap());
                let (v, t) = tfdt_time(tfdt.body()).unwrap();
                result = Some((v, t, off));
            }
            if &b.kind == b"mdat" {
                let (v, t, off) = result.unwrap();
                let lands = moof_at.unwrap() + off as usize == at + 8;
                return (v, t, lands);
            }
            at += b.bytes.len();
        }
        panic!("no mdat");
    }

    fn kinds(seg: &[u8]) -> Vec<String> {
        mp4_boxes(seg)
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(&b.kind).into_owned())
            .collect()
    }

    #[test]
    fn tfdt_moves_by_whole_loops_and_sidx_goes() {
        let seg = segment(1, 24_576);
        assert_eq!(inspect(&seg), (1, 24_576, true));
        let out = retime_segment(&seg, 60 * 24_576, |_| None).unwrap();
        assert_eq!(inspect(&out), (1, 61 * 24_576, true));
        assert_eq!(kinds(&out), ["styp", "moof", "mdat"]);
        // v0 that still fits stays v0, same size.
        let out = retime_segment(&segment(0, 5), 10, |_| None).unwrap();
        assert_eq!(inspect(&out), (0, 15, true));
    }

    #[test]
    fn a_v0_tfdt_outgrowing_32_bits_becomes_v1_and_offsets_follow() {
        let seg = segment(0, 1000);
        let shift = u64::from(u32::MAX);
        let out = retime_segment(&seg, shift, |_| None).unwrap();
        assert_eq!(inspect(&out), (1, shift + 1000, true));
        let sidx = 8 + 4 + 28;
        assert_eq!(out.len(), seg.len() - sidx + 4);
    }

    #[test]
    fn the_emsg_goes_before_the_moof_at_the_new_time() {
        use cf_ssai_core::scte35::inband;
        let seg = segment(1, 24_576);
        let out = retime_segment(&seg, 2 * 24_576, |t| {
            Some(inband::build::emsg(1, 12_800, t, 1001, b"\xfc"))
        })
        .unwrap();
        assert_eq!(kinds(&out), ["styp", "emsg", "moof", "mdat"]);
        assert_eq!(inspect(&out), (1, 3 * 24_576, true));
        let emsg = mp4_boxes(&out)
            .unwrap()
            .into_iter()
            .find(|b| &b.kind == b"emsg")
            .unwrap();
        let pt = u64::from_be_bytes(emsg.body()[8..16].try_into().unwrap());
        assert_eq!(pt, 3 * 24_576);
        assert_eq!(inband::fragment_decode_time(&out), Some(3 * 24_576));
    }

    #[test]
    fn malformed_media_is_an_error_not_a_panic() {
        let seg = segment(1, 1);
        assert!(retime_segment(&seg, u64::MAX, |_| None).is_err());
        for cut in 0..seg.len() {
            let _ = retime_segment(&seg[..cut], 1, |_| None);
            let mut bad = seg.clone();
            bad[cut] ^= 0xff;
            let _ = retime_segment(&bad, 1, |_| None);
        }
        assert!(retime_segment(b"", 1, |_| None).is_err());
        assert!(retime_segment(&[0, 0, 0, 1, b'm', b'o', b'o', b'f'], 1, |_| None).is_err());
        assert!(retime_segment(&[0, 0, 0, 4, b'm', b'o', b'o', b'f'], 1, |_| None).is_err());
        // An absolute base_data_offset is refused, not silently broken.
        let tfhd = full(b"tfhd", 0, 0x1, &[0u8; 12]);
        let tfdt = full(b"tfdt", 1, 0, &[0u8; 8]);
        let moof = mp4_box(b"moof", &mp4_box(b"traf", &[tfhd, tfdt].concat()));
        assert!(retime_segment(&moof, 1, |_| None).is_err());
    }

    #[test]
    fn dash_requests_name_segments() {
        assert_eq!(dash_segment_number("seg42.m4s", 24_576), Some(42));
        assert_eq!(dash_segment_number("t1032192.m4s", 24_576), Some(42));
        assert_eq!(dash_segment_number("t1032193.m4s", 24_576), None);
        assert_eq!(dash_segment_number("seg42.ts", 24_576), None);
        assert_eq!(dash_segment_number("t.m4s", 24_576), None);
        assert_eq!(
            dash_options("dash-time"),
            Some((Template::Time, Cues::XmlBin))
        );
        assert_eq!(dash_options("dash-nope"), None);
    }
}
