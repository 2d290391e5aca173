//! A live DASH origin as a pure function of `now`: the MPD of a
//! [`SimChannel`] (one Period from the channel's epoch, a video and an
//! audio AdaptationSet on one SegmentTimeline, SCTE-35 breaks as an
//! MPD `EventStream` or announced as an in-band `emsg` stream). Used by
//! the scenario tests and served by `cf-ssai origin` on `dash*` channels.
//!
//! The channel's MSN is the DASH segment number: segment N covers
//! [N, N+1) cadences after `availabilityStartTime` (the channel's epoch),
//! and the listed segments are exactly the HLS window, so an HLS and a
//! DASH view of one channel name the same media at the same instants.
//! Breaks come from [`SimChannel::break_at`], which ignores them on
//! [`SimDialect::None`](crate::sim::SimDialect::None): give a DASH channel
//! any other dialect (the MPD does not use it).

use crate::sim::SimChannel;
use cf_ssai_core::hls;
use cf_ssai_core::scte35::{self, CueSpec};
use std::fmt::Write;

/// How the SegmentTemplate names media segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `seg$Number$.m4s` with `startNumber`.
    Number,
    /// `t$Time$.m4s`: the segment's start in its timescale.
    Time,
}

/// How the breaks are signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cues {
    /// MPD `EventStream`, `urn:scte:scte35:2014:xml+bin` (base64 section).
    XmlBin,
    /// MPD `EventStream`, `urn:scte:scte35:2013:xml` (SCTE 35 XML).
    Xml,
    /// In-band only: an `InbandEventStream` on the video, whose segments
    /// carry the `emsg` (written by the origin from [`emsg_section`]).
    Emsg,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashOptions {
    pub template: Template,
    pub cues: Cues,
    /// `UTCTiming` http-iso URL, when the server offers one.
    pub utc_timing: Option<String>,
    /// An Event enters the MPD this many segments before its break's
    /// first segment is listed (a packager's pre-roll).
    pub signal_ahead: u64,
}

impl Default for DashOptions {
    fn default() -> Self {
        DashOptions {
            template: Template::Number,
            cues: Cues::XmlBin,
            utc_timing: None,
            signal_ahead: 2,
        }
    }
}

/// One Representation of the demo media (`scripts/demo-media.sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DashRep {
    pub id: &'static str,
    pub bandwidth: u64,
    /// The real codec string of the media (read from its `avcC`/`esds`):
    /// MSE rejects a SourceBuffer whose codec does not match the init.
    pub codecs: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Video track timescale of the CMAF media (12800 = 512 per frame at 25 fps).
pub const VIDEO_TIMESCALE: u64 = 12_800;
/// Audio track timescale (the AAC sample rate).
pub const AUDIO_TIMESCALE: u64 = 48_000;

pub const VIDEO_REPS: [DashRep; 2] = [
    DashRep {
        id: "v360",
        bandwidth: 800_000,
        codecs: "avc1.4d401e",
        width: 640,
        height: 360,
    },
    DashRep {
        id: "v540",
        bandwidth: 1_600_000,
        codecs: "avc1.4d401f",
        width: 960,
        height: 540,
    },
];

pub const AUDIO_REP: DashRep = DashRep {
    id: "aud-en",
    bandwidth: 96_000,
    codecs: "mp4a.40.2",
    width: 0,
    height: 0,
};

/// The track timescale of Representation `id` (None: no such rep).
pub fn rep_timescale(id: &str) -> Option<u64> {
    if VIDEO_REPS.iter().any(|r| r.id == id) {
        Some(VIDEO_TIMESCALE)
    } else {
        (id == AUDIO_REP.id).then_some(AUDIO_TIMESCALE)
    }
}

/// A segment's duration in `timescale` ticks. Exact when the cadence is a
/// whole number of ticks (the demo's 1920 ms: 24576 video, 92160 audio);
/// otherwise rounded, and the timeline then drifts from the wall clock by
/// the rounding (a channel like that has no exact DASH timeline anyway).
pub fn seg_duration(cadence_ms: u64, timescale: u64) -> u64 {
    cadence_ms.saturating_mul(timescale).saturating_add(500) / 1000
}

/// The segment number starting at time `t` (`$Time$`) on a timeline of
/// segments of `d` ticks from 0. None when `t` starts no segment: the
/// player only asks for S@t values, so anything else is a bad request.
pub fn segment_of_time(t: u64, d: u64) -> Option<u64> {
    (d > 0 && t.is_multiple_of(d)).then(|| t / d)
}

/// The listed segment numbers at `now_ms` (the HLS window; a segment is
/// listed once complete). None before the first segment completes.
pub fn listed(chan: &SimChannel, now_ms: i64) -> Option<(u64, u64)> {
    let live = chan.live_msn(now_ms)?;
    let first = (live + 1).saturating_sub(chan.window);
    (chan.window > 0).then_some((first, live))
}

/// (first segment, event id) of the breaks the MPD announces at `now_ms`:
/// from `signal_ahead` segments before a break's first segment is listed
/// until its last segment leaves the window, so a reloading player sees
/// every Event unchanged for as long as it is there.
pub fn breaks_announced(chan: &SimChannel, opts: &DashOptions, now_ms: i64) -> Vec<(u64, u32)> {
    // At most this many (only absurd flags get near it): the scan below
    // stays bounded whatever break_len and break_every are.
    const MAX_EVENTS: usize = 64;
    let Some((first, live)) = listed(chan, now_ms) else {
        return Vec::new();
    };
    if chan.break_every == 0 || chan.break_len == 0 {
        return Vec::new();
    }
    // Anchors (first + k*every) in [lo, hi]: the break's last segment is
    // still listed, and its first is at most `signal_ahead` past the live
    // edge.
    let lo = (first + 1).saturating_sub(chan.break_len);
    let hi = live.saturating_add(opts.signal_ahead);
    let k0 = lo
        .saturating_sub(chan.first_break)
        .div_ceil(chan.break_every);
    (k0..)
        .map_while(|k| {
            k.checked_mul(chan.break_every)?
                .checked_add(chan.first_break)
        })
        .take_while(|a| *a <= hi)
        .take(MAX_EVENTS)
        .filter_map(|a| chan.break_at(a).filter(|(x, _)| *x == a))
        .collect()
}

/// A segment's start on the SCTE-35 90 kHz clock (the Event timescale and
/// the section's pts_time, which wraps at 2^33).
fn ticks_90k(chan: &SimChannel, n: u64) -> u64 {
    n.saturating_mul(chan.cadence_ms).saturating_mul(90)
}

/// The splice_insert (out, with duration and auto-return) of the break
/// starting at segment `anchor`; `pts` None splices at once (in-band: at
/// the start of the segment carrying it).
fn splice_out(chan: &SimChannel, id: u32, pts: Option<u64>) -> Vec<u8> {
    scte35::encode(&CueSpec::SpliceInsert {
        event_id: id,
        out_of_network: true,
        pts_time: pts.map(|p| p % scte35::PTS_MODULUS),
        duration: Some(ticks_90k(chan, chan.break_len)),
        auto_return: true,
        unique_program_id: 1,
    })
}

/// (event id, section) of the `emsg` on segment `n` of a DASH emsg
/// channel: the splice_insert of the break starting there, immediate (as
/// [`SimChannel::inband_section`], whatever the channel's dialect).
pub fn emsg_section(chan: &SimChannel, n: u64) -> Option<(u32, Vec<u8>)> {
    let (anchor, id) = chan.break_at(n)?;
    (anchor == n).then(|| (id, splice_out(chan, id, None)))
}

/// An xs:duration of whole milliseconds: `PT1.92S`, `PT2S`.
fn xs_duration(ms: u64) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return format!("PT{s}S");
    }
    let f = format!("{frac:03}");
    format!("PT{s}.{}S", f.trim_end_matches('0'))
}

/// `now` as the ISO 8601 UTC instant with milliseconds that MPD times and
/// the `UTCTiming` http-iso endpoint use.
pub fn iso_ms(ms: i64) -> String {
    hls::format_pdt_ms(ms)
}

/// The MPD of `chan` at `now_ms`.
pub fn mpd(chan: &SimChannel, opts: &DashOptions, now_ms: i64) -> String {
    let mut s = String::with_capacity(4096);
    let cad = chan.cadence_ms;
    let _ = write!(
        s,
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" xmlns:scte35=\"http://www.scte.org/schemas/35/2016\" ",
            "profiles=\"urn:mpeg:dash:profile:isoff-live:2011,http://dashif.org/guidelines/dash-if-simple\" ",
            "type=\"dynamic\" availabilityStartTime=\"{ast}\" publishTime=\"{now}\" minimumUpdatePeriod=\"{cad}\" ",
            "minBufferTime=\"{minbuf}\" timeShiftBufferDepth=\"{depth}\" suggestedPresentationDelay=\"{delay}\" ",
            "maxSegmentDuration=\"{cad}\">\n",
            "  <Period id=\"p0\" start=\"PT0S\">\n",
        ),
        ast = iso_ms(chan.epoch_ms),
        now = iso_ms(now_ms),
        cad = xs_duration(cad),
        minbuf = xs_duration(cad.div_ceil(1000).saturating_mul(1000)),
        depth = xs_duration(chan.window.saturating_mul(cad)),
        delay = xs_duration(cad.saturating_mul(3)),
    );
    event_stream(chan, opts, now_ms, &mut s);
    let segs = listed(chan, now_ms);
    let _ = writeln!(
        s,
        "    <AdaptationSet id=\"1\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\" maxWidth=\"{}\" maxHeight=\"{}\" frameRate=\"25\">",
        VIDEO_REPS.iter().map(|r| r.width).max().unwrap_or(0),
        VIDEO_REPS.iter().map(|r| r.height).max().unwrap_or(0),
    );
    if opts.cues == Cues::Emsg {
        s.push_str("      <InbandEventStream schemeIdUri=\"urn:scte:scte35:2013:bin\"/>\n");
    }
    segment_template(opts.template, VIDEO_TIMESCALE, cad, segs, &mut s);
    for r in &VIDEO_REPS {
        let _ = writeln!(
            s,
            "      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{}\" width=\"{}\" height=\"{}\" sar=\"1:1\"/>",
            r.id, r.bandwidth, r.codecs, r.width, r.height
        );
    }
    s.push_str(concat!(
        "    </AdaptationSet>\n",
        "    <AdaptationSet id=\"2\" contentType=\"audio\" mimeType=\"audio/mp4\" lang=\"en\" segmentAlignment=\"true\" startWithSAP=\"1\">\n",
        "      <AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"2\"/>\n",
        "      <Role schemeIdUri=\"urn:mpeg:dash:role:2011\" value=\"main\"/>\n",
    ));
    segment_template(opts.template, AUDIO_TIMESCALE, cad, segs, &mut s);
    let _ = writeln!(
        s,
        "      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{}\" audioSamplingRate=\"{AUDIO_TIMESCALE}\"/>",
        AUDIO_REP.id, AUDIO_REP.bandwidth, AUDIO_REP.codecs
    );
    s.push_str("    </AdaptationSet>\n  </Period>\n");
    if let Some(url) = &opts.utc_timing {
        let _ = writeln!(
            s,
            "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"{}\"/>",
            xml_escape(url)
        );
    }
    s.push_str("</MPD>\n");
    s
}

/// The SegmentTemplate of one AdaptationSet: one `S` run over the listed
/// segments (empty before the first completes).
fn segment_template(
    template: Template,
    timescale: u64,
    cadence_ms: u64,
    segs: Option<(u64, u64)>,
    s: &mut String,
) {
    let d = seg_duration(cadence_ms, timescale);
    let _ = write!(
        s,
        "      <SegmentTemplate timescale=\"{timescale}\" initialization=\"$RepresentationID$/init.mp4\" "
    );
    match (template, segs) {
        (Template::Number, Some((first, _))) => {
            let _ = write!(
                s,
                "media=\"$RepresentationID$/seg$Number$.m4s\" startNumber=\"{first}\">"
            );
        }
        (Template::Number, None) => s.push_str("media=\"$RepresentationID$/seg$Number$.m4s\">"),
        (Template::Time, _) => s.push_str("media=\"$RepresentationID$/t$Time$.m4s\">"),
    }
    match segs {
        Some((first, last)) => {
            let _ = write!(
                s,
                "\n        <SegmentTimeline><S t=\"{}\" d=\"{d}\" r=\"{}\"/></SegmentTimeline>\n",
                first.saturating_mul(d),
                last - first
            );
        }
        None => s.push_str("\n        <SegmentTimeline/>\n"),
    }
    s.push_str("      </SegmentTemplate>\n");
}

/// The MPD EventStream of the announced breaks (none in emsg/no-cue form,
/// or when nothing is announced).
fn event_stream(chan: &SimChannel, opts: &DashOptions, now_ms: i64, s: &mut String) {
    let scheme = match opts.cues {
        Cues::XmlBin => "urn:scte:scte35:2014:xml+bin",
        Cues::Xml => "urn:scte:scte35:2013:xml",
        Cues::Emsg | Cues::None => return,
    };
    let breaks = breaks_announced(chan, opts, now_ms);
    if breaks.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "    <EventStream schemeIdUri=\"{scheme}\" timescale=\"90000\">"
    );
    for (n, id) in breaks {
        let pt = ticks_90k(chan, n);
        let dur = ticks_90k(chan, chan.break_len);
        let _ = write!(
            s,
            "      <Event presentationTime=\"{pt}\" duration=\"{dur}\" id=\"{id}\">"
        );
        match opts.cues {
            Cues::Xml => xml_splice_insert(id, pt % scte35::PTS_MODULUS, dur, s),
            _ => {
                let _ = write!(
                    s,
                    "<scte35:Signal><scte35:Binary>{}</scte35:Binary></scte35:Signal>",
                    scte35::to_base64(&splice_out(chan, id, Some(pt)))
                );
            }
        }
        s.push_str("</Event>\n");
    }
    s.push_str("    </EventStream>\n");
}

/// The same splice_insert as [`splice_out`] in the SCTE 35 XML schema
/// (element and attribute names of its `SpliceInfoSection`).
fn xml_splice_insert(id: u32, pts: u64, dur: u64, s: &mut String) {
    let _ = write!(
        s,
        concat!(
            "<scte35:SpliceInfoSection protocolVersion=\"0\" ptsAdjustment=\"0\" tier=\"4095\">",
            "<scte35:SpliceInsert spliceEventId=\"{id}\" spliceEventCancelIndicator=\"false\" outOfNetworkIndicator=\"true\" ",
            "uniqueProgramId=\"1\" availNum=\"0\" availsExpected=\"0\" spliceImmediateFlag=\"false\">",
            "<scte35:Program><scte35:SpliceTime ptsTime=\"{pts}\"/></scte35:Program>",
            "<scte35:BreakDuration autoReturn=\"true\" duration=\"{dur}\"/>",
            "</scte35:SpliceInsert></scte35:SpliceInfoSection>"
        ),
        id = id,
        pts = pts,
        dur = dur,
    );
}

/// Attribute-safe text (the UTCTiming URL comes from the command line).
fn xml_escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimDialect;

    /// 2026-12-05T08:00:00.000Z.
    const EPOCH: i64 = 1_796_457_600_000;

    fn chan() -> SimChannel {
        SimChannel {
            cadence_ms: 1920,
            window: 6,
            epoch_ms: EPOCH,
            dialect: SimDialect::Daterange,
            first_break: 10,
            break_every: 12,
            break_len: 5,
            ..Default::default()
        }
    }

    /// `now` just after segment `n` completes.
    fn after(c: &SimChannel, n: u64) -> i64 {
        c.pdt_of(n + 1) + 7
    }

    /// Every element's name (`scte35:` for that namespace) and
    /// attributes, in document order; fails the test unless the text is
    /// well-formed, namespace-correct XML.
    fn elements(xml: &str) -> Vec<(String, Vec<(String, String)>)> {
        let doc = roxmltree::Document::parse(xml).expect("well-formed XML");
        doc.descendants()
            .filter(|n| n.is_element())
            .map(|n| {
                let tag = n.tag_name();
                let name = match tag.namespace() {
                    Some("http://www.scte.org/schemas/35/2016") => format!("scte35:{}", tag.name()),
                    Some("urn:mpeg:dash:schema:mpd:2011") => tag.name().to_string(),
                    other => panic!("element {} in namespace {other:?}", tag.name()),
                };
                let attrs = n
                    .attributes()
                    .map(|a| (a.name().to_string(), a.value().to_string()))
                    .collect();
                (name, attrs)
            })
            .collect()
    }

    fn attr<'a>(els: &'a [(String, Vec<(String, String)>)], el: &str, key: &str) -> Vec<&'a str> {
        els.iter()
            .filter(|(n, _)| n == el)
            .filter_map(|(_, a)| a.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()))
            .collect()
    }

    #[test]
    fn header_and_period_stay_put_as_the_window_moves() {
        let c = chan();
        let o = DashOptions::default();
        let mut last_start = None;
        for n in 20..30 {
            let now = after(&c, n);
            let x = mpd(&c, &o, now);
            let els = elements(&x);
            assert_eq!(
                attr(&els, "MPD", "availabilityStartTime"),
                ["2026-12-05T08:00:00.000Z"]
            );
            assert_eq!(attr(&els, "MPD", "publishTime"), [iso_ms(now).as_str()]);
            assert_eq!(attr(&els, "MPD", "type"), ["dynamic"]);
            assert_eq!(attr(&els, "MPD", "minimumUpdatePeriod"), ["PT1.92S"]);
            assert_eq!(attr(&els, "MPD", "timeShiftBufferDepth"), ["PT11.52S"]);
            assert_eq!(attr(&els, "MPD", "suggestedPresentationDelay"), ["PT5.76S"]);
            assert_eq!(attr(&els, "MPD", "minBufferTime"), ["PT2S"]);
            assert_eq!(attr(&els, "Period", "id"), ["p0"]);
            assert_eq!(attr(&els, "Period", "start"), ["PT0S"]);
            // The window is the HLS one: n-5..=n, one segment per cadence.
            let first = n - 5;
            let start = first.to_string();
            assert_eq!(
                attr(&els, "SegmentTemplate", "startNumber"),
                [&*start, &*start]
            );
            let (vt, at) = ((first * 24576).to_string(), (first * 92160).to_string());
            assert_eq!(attr(&els, "S", "t"), [&*vt, &*at]);
            assert_eq!(attr(&els, "S", "d"), ["24576", "92160"]);
            assert_eq!(attr(&els, "S", "r"), ["5", "5"]);
            if let Some(prev) = last_start.replace(first) {
                assert_eq!(first, prev + 1);
            }
        }
    }

    #[test]
    fn the_window_moves_only_when_a_segment_completes() {
        let c = chan();
        let o = DashOptions {
            cues: Cues::None,
            ..Default::default()
        };
        let a = mpd(&c, &o, c.pdt_of(21));
        let b = mpd(&c, &o, c.pdt_of(22) - 1);
        let strip = |s: &str| s.lines().skip(2).collect::<Vec<_>>().join("\n");
        assert_eq!(strip(&a), strip(&b), "only publishTime differs");
        let next = mpd(&c, &o, c.pdt_of(22));
        assert!(next.contains("startNumber=\"16\"") && a.contains("startNumber=\"15\""));
    }

    #[test]
    fn an_event_appears_signal_ahead_early_and_stays_identical() {
        let c = chan();
        let o = DashOptions::default();
        // Break anchors: 10, 22, 34 … lasting 5 segments (22..=26).
        let event_of = |x: &str| -> Vec<String> {
            x.lines()
                .filter(|l| l.contains("<Event "))
                .map(String::from)
                .collect()
        };
        // Live 19 lists 14..=19: break 10 (10..=14) is still there, and 22
        // is 3 ahead, not yet announced.
        let at19 = event_of(&mpd(&c, &o, after(&c, 19)));
        assert_eq!(at19.len(), 1, "{at19:?}");
        assert!(at19[0].contains("id=\"1000\""));
        let at20 = event_of(&mpd(&c, &o, after(&c, 20)));
        assert_eq!(at20.len(), 1);
        assert!(at20[0].contains("id=\"1001\""), "{at20:?}");
        let want = at20[0].clone();
        assert!(want.contains(&format!("presentationTime=\"{}\"", 22 * 1920 * 90)));
        assert!(want.contains(&format!("duration=\"{}\"", 5 * 1920 * 90)));
        // Present and unchanged until its last segment (26) leaves the
        // window: live 31 lists 26..=31, live 32 does not.
        for n in 20..=31 {
            let ev = event_of(&mpd(&c, &o, after(&c, n)));
            assert!(ev.contains(&want), "live {n}: {ev:?}");
        }
        let gone = event_of(&mpd(&c, &o, after(&c, 32)));
        assert!(!gone.contains(&want), "{gone:?}");
        // Its section: the splice_insert at the Event's time.
        let els = elements(&mpd(&c, &o, after(&c, 22)));
        let pts = 22 * 1920 * 90;
        let b64 = want
            .split("<scte35:Binary>")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .unwrap();
        assert_eq!(
            b64,
            scte35::to_base64(&splice_out(&c, 1001, Some(pts))),
            "{els:?}"
        );
    }

    #[test]
    fn events_are_sorted_and_windowed() {
        let c = SimChannel {
            break_every: 4,
            break_len: 2,
            window: 10,
            ..chan()
        };
        let x = mpd(&c, &DashOptions::default(), after(&c, 30));
        let els = elements(&x);
        // Listed 21..=30, announced up to 32; anchors 10,14,…: 22,26,30
        // (18's last segment 19 is gone).
        let pts: Vec<u64> = attr(&els, "Event", "presentationTime")
            .iter()
            .map(|p| p.parse::<u64>().unwrap() / (1920 * 90))
            .collect();
        assert_eq!(pts, [22, 26, 30]);
    }

    #[test]
    fn time_template_and_xml_cues() {
        let c = chan();
        let o = DashOptions {
            template: Template::Time,
            cues: Cues::Xml,
            utc_timing: Some("http://127.0.0.1:1/time".into()),
            ..Default::default()
        };
        let x = mpd(&c, &o, after(&c, 24));
        let els = elements(&x);
        assert_eq!(
            attr(&els, "SegmentTemplate", "media"),
            ["$RepresentationID$/t$Time$.m4s"; 2]
        );
        assert!(attr(&els, "SegmentTemplate", "startNumber").is_empty());
        assert_eq!(
            attr(&els, "EventStream", "schemeIdUri"),
            ["urn:scte:scte35:2013:xml"]
        );
        assert_eq!(attr(&els, "scte35:SpliceInsert", "spliceEventId"), ["1001"]);
        let pts = (22 * 1920 * 90).to_string();
        assert_eq!(attr(&els, "scte35:SpliceTime", "ptsTime"), [pts.as_str()]);
        let dur = (5 * 1920 * 90).to_string();
        assert_eq!(
            attr(&els, "scte35:BreakDuration", "duration"),
            [dur.as_str()]
        );
        assert_eq!(
            attr(&els, "UTCTiming", "value"),
            ["http://127.0.0.1:1/time"]
        );
        // The segment named by S@t is the one $Number$ would name.
        let t: u64 = attr(&els, "S", "t")[0].parse().unwrap();
        assert_eq!(segment_of_time(t, 24576), Some(19));
        assert_eq!(segment_of_time(t + 1, 24576), None);
        assert_eq!(segment_of_time(t, 0), None);
    }

    #[test]
    fn emsg_form_announces_the_inband_stream_only() {
        let c = chan();
        let o = DashOptions {
            cues: Cues::Emsg,
            ..Default::default()
        };
        let x = mpd(&c, &o, after(&c, 24));
        let els = elements(&x);
        assert!(attr(&els, "EventStream", "schemeIdUri").is_empty());
        assert_eq!(
            attr(&els, "InbandEventStream", "schemeIdUri"),
            ["urn:scte:scte35:2013:bin"]
        );
        let (id, sec) = emsg_section(&c, 22).unwrap();
        assert_eq!(id, 1001);
        assert_eq!(sec, splice_out(&c, 1001, None));
        assert_eq!(emsg_section(&c, 23), None);
        let none = mpd(
            &c,
            &DashOptions {
                cues: Cues::None,
                ..Default::default()
            },
            after(&c, 24),
        );
        assert!(!none.contains("EventStream"));
    }

    #[test]
    fn xsd_element_order() {
        let x = mpd(
            &chan(),
            &DashOptions {
                utc_timing: Some("u".into()),
                ..Default::default()
            },
            after(&chan(), 24),
        );
        let order: Vec<String> = elements(&x)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !n.starts_with("scte35:"))
            .collect();
        assert_eq!(
            order,
            [
                "MPD",
                "Period",
                "EventStream",
                "Event",
                "AdaptationSet",
                "SegmentTemplate",
                "SegmentTimeline",
                "S",
                "Representation",
                "Representation",
                "AdaptationSet",
                "AudioChannelConfiguration",
                "Role",
                "SegmentTemplate",
                "SegmentTimeline",
                "S",
                "Representation",
                "UTCTiming"
            ]
        );
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let o = DashOptions::default();
        for c in [
            SimChannel {
                window: 0,
                ..chan()
            },
            SimChannel {
                cadence_ms: 1,
                break_every: 1,
                break_len: 1 << 40,
                first_break: 0,
                ..chan()
            },
            SimChannel {
                first_break: u64::MAX,
                break_every: u64::MAX,
                ..chan()
            },
            SimChannel {
                cadence_ms: 1001,
                ..chan()
            },
        ] {
            for now in [0, EPOCH - 1, EPOCH, after(&c, 40), i64::MAX / 2] {
                elements(&mpd(&c, &o, now));
            }
        }
        assert_eq!(seg_duration(1001, 12800), 12813);
        assert_eq!(xs_duration(1920), "PT1.92S");
        assert_eq!(xs_duration(1001), "PT1.001S");
        assert_eq!(xs_duration(0), "PT0S");
    }
}
