//! A media playlist view over the tokenized lines: which lines are header,
//! which belong to each segment, each segment's MSN, duration, PDT, and the
//! EXT-X-MAP / EXT-X-KEY in effect (RFC 8216bis §4.4).

use crate::hls::{self, HlsError, Line, Playlist};

#[derive(Debug, Clone, PartialEq)]
pub struct Segment<'a> {
    /// Index range into `Playlist::lines`: the tags before the URI and the
    /// URI line itself (the last line of the range).
    pub first_line: usize,
    pub uri_line: usize,
    pub msn: u64,
    pub duration_text: &'a str,
    pub duration: f64,
    /// Program date-time of the segment's start, explicit or carried forward.
    pub pdt_ms: Option<i64>,
    pub discontinuity: bool,
    /// The EXT-X-MAP / EXT-X-KEY lines in effect for this segment.
    pub map: Option<&'a str>,
    pub keys: Vec<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist<'a> {
    pub tokens: Playlist<'a>,
    /// Lines before the first segment's tags.
    pub header_end: usize,
    pub segments: Vec<Segment<'a>>,
    pub target_duration: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub endlist: bool,
}

/// Tags that belong to the following segment rather than the header.
fn is_segment_tag(name: &str) -> bool {
    matches!(
        name,
        "EXTINF"
            | "EXT-X-BYTERANGE"
            | "EXT-X-DISCONTINUITY"
            | "EXT-X-KEY"
            | "EXT-X-MAP"
            | "EXT-X-PROGRAM-DATE-TIME"
            | "EXT-X-DATERANGE"
            | "EXT-X-GAP"
            | "EXT-X-BITRATE"
            | "EXT-X-PART"
            | "EXT-X-CUE-OUT"
            | "EXT-X-CUE-OUT-CONT"
            | "EXT-X-CUE-IN"
            | "EXT-X-CUE"
            | "EXT-OATCLS-SCTE35"
            | "EXT-X-SPLICEPOINT-SCTE35"
            | "EXT-X-SCTE35"
            | "EXT-X-ASSET"
    )
}

/// Build the media view. Fails on a master playlist and on header tags
/// whose value cannot be read (those we need for the live rules).
pub fn parse(text: &str) -> Result<MediaPlaylist<'_>, HlsError> {
    let tokens = hls::tokenize(text)?;
    if hls::is_master(&tokens) {
        return Err(HlsError::NotMedia);
    }
    let mut target_duration = 0u64;
    let mut media_sequence = 0u64;
    let mut discontinuity_sequence = 0u64;
    let mut endlist = false;
    let mut header_end = None;
    let mut segments = Vec::new();
    let mut seg_start = None;
    let mut duration: Option<(&str, f64)> = None;
    let mut disc = false;
    let mut explicit_pdt: Option<i64> = None;
    let mut next_pdt: Option<i64> = None;
    let mut map: Option<&str> = None;
    let mut keys: Vec<&str> = Vec::new();
    let mut msn_offset = 0u64;

    for (i, line) in tokens.lines.iter().enumerate() {
        match *line {
            Line::Tag { name, value, .. } => {
                let v = value.unwrap_or("");
                if header_end.is_none() && is_segment_tag(name) {
                    header_end = Some(i);
                }
                if is_segment_tag(name) && seg_start.is_none() {
                    seg_start = Some(i);
                }
                match name {
                    "EXT-X-TARGETDURATION" => {
                        target_duration = v.trim().parse().map_err(|_| bad(name, i, v))?
                    }
                    "EXT-X-MEDIA-SEQUENCE" => {
                        media_sequence = v.trim().parse().map_err(|_| bad(name, i, v))?
                    }
                    "EXT-X-DISCONTINUITY-SEQUENCE" => {
                        discontinuity_sequence = v.trim().parse().map_err(|_| bad(name, i, v))?
                    }
                    "EXT-X-ENDLIST" => endlist = true,
                    "EXTINF" => {
                        duration = Some(hls::extinf_duration(v).ok_or_else(|| bad(name, i, v))?)
                    }
                    "EXT-X-DISCONTINUITY" => disc = true,
                    "EXT-X-PROGRAM-DATE-TIME" => {
                        explicit_pdt = hls::parse_pdt_ms(v);
                    }
                    "EXT-X-MAP" => map = Some(line.raw()),
                    "EXT-X-KEY" => {
                        // A KEY with the same KEYFORMAT replaces the earlier
                        // one; METHOD=NONE clears all (§4.4.4.4).
                        if hls::attr(v, "METHOD") == Some("NONE") {
                            keys.clear();
                        } else {
                            let fmt = hls::attr(v, "KEYFORMAT").unwrap_or("identity");
                            keys.retain(|k| {
                                hls::attr(k.split_once(':').map_or("", |x| x.1), "KEYFORMAT")
                                    .unwrap_or("identity")
                                    != fmt
                            });
                        }
                        keys.push(line.raw());
                    }
                    _ => {}
                }
            }
            Line::Uri(uri) => {
                let Some((dtext, dsecs)) = duration.take() else {
                    // A URI without EXTINF is malformed; keep it as an
                    // opaque line of the next segment.
                    continue;
                };
                let _ = uri;
                if header_end.is_none() {
                    header_end = Some(i);
                }
                let pdt = explicit_pdt.take().or(next_pdt);
                next_pdt = pdt.map(|p| p.saturating_add((dsecs * 1000.0).round() as i64));
                segments.push(Segment {
                    first_line: seg_start.take().unwrap_or(i),
                    uri_line: i,
                    msn: media_sequence.saturating_add(msn_offset),
                    duration_text: dtext,
                    duration: dsecs,
                    pdt_ms: pdt,
                    discontinuity: std::mem::take(&mut disc),
                    map,
                    keys: keys.clone(),
                });
                msn_offset = msn_offset.saturating_add(1);
            }
            Line::Comment(_) | Line::Blank(_) => {}
        }
    }
    let header_end = header_end.unwrap_or(tokens.lines.len());
    // Back-fill PDTs before the first explicit one (§4.4.4.6 lets a player
    // derive them from durations).
    let first_pdt = segments.iter().position(|s| s.pdt_ms.is_some());
    if let Some((before, from)) = first_pdt.and_then(|k| segments.split_at_mut_checked(k)) {
        let mut t = from.first().and_then(|s| s.pdt_ms).unwrap_or(0);
        for s in before.iter_mut().rev() {
            t = t.saturating_sub((s.duration * 1000.0).round() as i64);
            s.pdt_ms = Some(t);
        }
    }
    Ok(MediaPlaylist {
        tokens,
        header_end,
        segments,
        target_duration,
        media_sequence,
        discontinuity_sequence,
        endlist,
    })
}

fn bad(tag: &str, line: usize, v: &str) -> HlsError {
    HlsError::BadTag {
        tag: static_tag(tag),
        line: line.saturating_add(1),
        what: format!("cannot read value {v:?}"),
    }
}

fn static_tag(tag: &str) -> &'static str {
    match tag {
        "EXT-X-TARGETDURATION" => "EXT-X-TARGETDURATION",
        "EXT-X-MEDIA-SEQUENCE" => "EXT-X-MEDIA-SEQUENCE",
        "EXT-X-DISCONTINUITY-SEQUENCE" => "EXT-X-DISCONTINUITY-SEQUENCE",
        "EXTINF" => "EXTINF",
        _ => "tag",
    }
}

impl<'a> MediaPlaylist<'a> {
    /// Index of the segment whose PDT interval contains `pdt_ms`, with a
    /// tolerance of half a segment for encoders that round.
    pub fn index_at_pdt(&self, pdt_ms: i64) -> Option<usize> {
        self.segments.iter().position(|s| {
            s.pdt_ms.is_some_and(|p| {
                let half = (s.duration * 500.0) as i64;
                let end = p.saturating_add((s.duration * 1000.0) as i64);
                pdt_ms >= p.saturating_sub(half) && pdt_ms < end.saturating_sub(half)
            })
        })
    }
    pub fn last_msn(&self) -> Option<u64> {
        self.segments.last().map(|s| s.msn)
    }

    /// The window the edge serves of an in-band SCTE-35 channel whose
    /// sequencer has examined the media through `watermark`: the text
    /// through it ([`Self::text_through`]), unless that would leave less
    /// than three target durations (RFC 8216 §6.2.2: a live playlist never
    /// gets that short): a sequencer that far behind is not keeping up, and
    /// the window is served whole (`None`), as content.
    pub fn held_back(&self, watermark: u64) -> Option<String> {
        let kept: f64 = self
            .segments
            .iter()
            .filter(|s| s.msn <= watermark)
            .map(|s| s.duration)
            .sum();
        if kept < 3.0 * self.target_duration as f64 {
            return None;
        }
        self.text_through(watermark)
    }

    /// The playlist text up to and including segment `msn` (what follows
    /// it — later segments, parts, preload hints — withheld). For in-band
    /// SCTE-35 the edge serves no segment the sequencer has not examined:
    /// a cue inside it would otherwise reach some viewers as content.
    /// `None` when `msn` is not in the window or nothing would be cut.
    pub fn text_through(&self, msn: u64) -> Option<String> {
        if self.last_msn()? <= msn {
            return None;
        }
        let seg = self.segments.iter().find(|s| s.msn == msn)?;
        let mut out = String::new();
        for line in self.tokens.lines.get(..=seg.uri_line)? {
            out.push_str(line.raw());
            out.push('\n');
        }
        Some(out)
    }

    /// The MSN a PDT outside the window will have (or had), counted at the
    /// window's cadence from the nearest segment with a PDT: a DATERANGE
    /// signalled ahead of its splice point (SCTE 67 pre-roll) names a
    /// segment not yet published. `None` without PDTs or before MSN 0.
    pub fn project_msn(&self, pdt_ms: i64) -> Option<u64> {
        let cadence = i64::try_from(self.cadence_ms().max(1)).unwrap_or(i64::MAX);
        let (msn, at) = if pdt_ms >= self.segments.last()?.pdt_ms? {
            let s = self.segments.iter().rev().find(|s| s.pdt_ms.is_some())?;
            (s.msn as i64, s.pdt_ms?)
        } else {
            let s = self.segments.iter().find(|s| s.pdt_ms.is_some())?;
            (s.msn as i64, s.pdt_ms?)
        };
        // Rounded to the nearest step, half away from zero.
        let delta = pdt_ms.saturating_sub(at);
        let steps = delta
            .saturating_add(delta.signum().saturating_mul(cadence / 2))
            .checked_div(cadence)?;
        u64::try_from(msn.checked_add(steps)?).ok()
    }
}

impl MediaPlaylist<'_> {
    /// The segment cadence: the most common EXTINF (ms) in the window, else
    /// the target duration.
    pub fn cadence_ms(&self) -> u64 {
        // Sort + run-length count: O(n log n). The earlier linear search per
        // distinct value was quadratic in distinct EXTINF values (a hostile
        // 4 MiB playlist with all-different durations ≈ 10^10 steps).
        let mut ms: Vec<u64> = self
            .segments
            .iter()
            .map(|s| (s.duration * 1000.0).round() as u64)
            .collect();
        ms.sort_unstable();
        let mut best: Option<(usize, u64)> = None;
        for run in ms.chunk_by(|a, b| a == b) {
            let cand = (run.len(), run.first().copied().unwrap_or(0));
            // Most frequent wins; ties go to the longer duration.
            if best.is_none_or(|b| cand > b) {
                best = Some(cand);
            }
        }
        best.map(|(_, d)| d)
            .filter(|d| *d > 0)
            .unwrap_or(self.target_duration.max(1).saturating_mul(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_through_withholds_later_segments() {
        let t = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2,\na.ts\n#EXTINF:2,\nb.ts\n#EXT-X-CUE-OUT:30\n#EXTINF:2,\nc.ts\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"d.0.ts\"\n";
        let m = parse(t).unwrap();
        let cut = m.text_through(8).unwrap();
        assert!(
            cut.ends_with("b.ts\n") && !cut.contains("c.ts") && !cut.contains("PRELOAD"),
            "{cut}"
        );
        assert_eq!(parse(&cut).unwrap().last_msn(), Some(8));
        assert_eq!(m.text_through(9), None, "nothing to cut");
        assert_eq!(m.text_through(3), None, "not in the window");
        // Held back only while three target durations remain.
        assert_eq!(
            m.held_back(8),
            None,
            "4 s left of a 2 s target: served whole"
        );
        let long = format!(
            "{}#EXTINF:2,\nd.ts\n#EXTINF:2,\ne.ts\n",
            t.replace("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"d.0.ts\"\n", "")
        );
        let m = parse(&long).unwrap();
        assert!(m.held_back(10).is_some_and(|c| c.ends_with("d.ts\n")));
        assert_eq!(m.held_back(8), None);
    }

    #[test]
    fn segments_msn_pdt_map_key() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:100\n#EXT-X-DISCONTINUITY-SEQUENCE:3\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:00.000Z\n#EXTINF:2.000,\na.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\nb.m4s\n";
        let m = parse(text).unwrap();
        assert_eq!(m.target_duration, 2);
        assert_eq!(m.discontinuity_sequence, 3);
        assert_eq!(m.segments.len(), 2);
        assert_eq!(m.segments[1].msn, 101);
        assert!(m.segments[1].discontinuity);
        assert_eq!(
            m.segments[1].pdt_ms.unwrap() - m.segments[0].pdt_ms.unwrap(),
            2000
        );
        assert_eq!(m.segments[0].map, Some("#EXT-X-MAP:URI=\"init.mp4\""));
        assert_eq!(m.segments[1].keys.len(), 1);
        assert_eq!(m.header_end, 5);
    }

    #[test]
    fn cadence_is_the_most_frequent_duration_and_linearithmic() {
        let mut t = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:4\n");
        for d in ["2.000", "2.000", "3.000", "2.000", "3.000"] {
            t.push_str(&format!("#EXTINF:{d},\ns.ts\n"));
        }
        assert_eq!(parse(&t).unwrap().cadence_ms(), 2000);
        // Tie: the longer duration.
        let t2 = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:2,\na\n#EXTINF:3,\nb\n";
        assert_eq!(parse(t2).unwrap().cadence_ms(), 3000);
        // 100k distinct durations: quadratic would be 5·10^9 steps.
        let mut big = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:9999\n");
        for i in 0..100_000u32 {
            big.push_str(&format!("#EXTINF:{}.{:03},\ns\n", i / 1000, i % 1000));
        }
        assert!(parse(&big).unwrap().cadence_ms() > 0);
    }
}
