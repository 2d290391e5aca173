//! Ad markers in every common HLS dialect → one normalized cue event model.
//!
//! Dialects: `EXT-X-DATERANGE` with `SCTE35-OUT/IN/CMD` (hexadecimal, RFC
//! 8216bis §4.4.5.1.1), `EXT-X-CUE-OUT` / `-CONT` / `EXT-X-CUE-IN`
//! (Elemental, MediaPackage, Wowza), `EXT-OATCLS-SCTE35` (base64, Anvato /
//! Harmonic), `EXT-X-SPLICEPOINT-SCTE35` (base64), `EXT-X-SCTE35` (`CUE=`,
//! Harmonic style). Malformed markers become warnings, never errors.
//! A break's id is stable across polls: from splice_event_id /
//! segmentation_event_id, else from the anchor PDT, else the anchor MSN.

use crate::hls::media::MediaPlaylist;
use crate::hls::{self, attr, Line};
use crate::scte35::{self, SegmentationTypeId, SpliceCommand, SpliceInfoSection};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CueKind {
    Out,
    Cont,
    In,
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    Daterange,
    CueOut,
    CueOutCont,
    CueIn,
    Oatcls,
    Splicepoint,
    Scte35Tag,
    /// In-band: an MPEG-TS SCTE-35 PID (see `inband`).
    InbandTs,
    /// In-band: CMAF `emsg` boxes (see `inband`).
    InbandEmsg,
}

/// Which segmentation_type_ids open and close a break (per channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentationPolicy {
    pub open: Vec<u8>,
    pub close: Vec<u8>,
}

impl Default for SegmentationPolicy {
    /// Break start/end (0x22/0x23), advertisement (0x30–0x33), placement
    /// opportunities (0x34/0x36 open, 0x35/0x37 close): SCTE 35 Table 23.
    fn default() -> Self {
        SegmentationPolicy {
            open: vec![0x22, 0x30, 0x32, 0x34, 0x36],
            close: vec![0x23, 0x31, 0x33, 0x35, 0x37],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CueEvent {
    pub kind: CueKind,
    /// Stable break identity (see module docs).
    pub break_id: String,
    /// splice_event_id / segmentation_event_id when the marker carried one.
    pub event_id: Option<u32>,
    /// MSN and PDT of the segment the marker applies to.
    pub msn: u64,
    pub pdt_ms: Option<i64>,
    /// Planned duration (OUT, CONT), seconds.
    pub duration_s: Option<f64>,
    /// Elapsed time into the break (CONT), seconds.
    pub elapsed_s: Option<f64>,
    pub dialect: Dialect,
    pub segmentation_type_id: Option<u8>,
    /// The SCTE-35 section in hex, when present.
    pub scte35_hex: Option<String>,
    /// `EXT-X-ASSET` attributes on the break's first segment (CAID, GENRE,
    /// …): what the ad request may carry as `[asset.KEY]` macros.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub asset: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Detection {
    pub events: Vec<CueEvent>,
    pub warnings: Vec<Warning>,
}

/// Find every ad marker of a media playlist.
pub fn detect(m: &MediaPlaylist<'_>, policy: &SegmentationPolicy) -> Detection {
    let mut det = Detection::default();
    let mut seg_idx = 0usize;
    let mut assets: Vec<(u64, std::collections::BTreeMap<String, String>)> = Vec::new();
    for (i, line) in m.tokens.lines.iter().enumerate() {
        // The segment a marker line belongs to: the next URI at or after it.
        while m.segments.get(seg_idx).is_some_and(|s| s.uri_line < i) {
            seg_idx = seg_idx.saturating_add(1);
        }
        let Line::Tag { name, value, .. } = *line else {
            continue;
        };
        if name == "EXT-X-ASSET" {
            // Metadata, not a marker: it joins the break that starts on
            // the same segment (below); alone it marks nothing.
            let msn = m.segments.get(seg_idx).map_or(m.media_sequence, |s| s.msn);
            let map = hls::attrs(value.unwrap_or(""))
                .filter(|(k, _)| !k.is_empty() && k.len() <= 64)
                .take(32)
                .map(|(k, v)| (k.to_string(), v.chars().take(256).collect()))
                .collect();
            assets.push((msn, map));
            continue;
        }
        let dialect = match name {
            "EXT-X-DATERANGE" => Dialect::Daterange,
            "EXT-X-CUE-OUT" => Dialect::CueOut,
            "EXT-X-CUE-OUT-CONT" => Dialect::CueOutCont,
            "EXT-X-CUE-IN" => Dialect::CueIn,
            "EXT-OATCLS-SCTE35" => Dialect::Oatcls,
            "EXT-X-SPLICEPOINT-SCTE35" => Dialect::Splicepoint,
            "EXT-X-SCTE35" => Dialect::Scte35Tag,
            _ => continue,
        };
        // Markers after the last segment apply to the next one to come.
        let (msn, seg_pdt) = match m.segments.get(seg_idx) {
            Some(s) => (s.msn, s.pdt_ms),
            None => match m.segments.last() {
                Some(s) => (
                    s.msn.saturating_add(1),
                    s.pdt_ms
                        .map(|p| p.saturating_add((s.duration * 1000.0).round() as i64)),
                ),
                None => (m.media_sequence, None),
            },
        };
        let v = value.unwrap_or("");
        let mut warn = |msg: String| {
            det.warnings.push(Warning {
                line: i.saturating_add(1),
                message: msg,
            })
        };
        let ev = match dialect {
            Dialect::Daterange => daterange(m, v, msn, seg_pdt, policy, &mut warn),
            Dialect::CueOut => {
                let dur = attr(v, "DURATION")
                    .or_else(|| (!v.contains('=')).then_some(v))
                    .filter(|s| !s.trim().is_empty())
                    .and_then(|s| s.trim().parse::<f64>().ok());
                if !v.trim().is_empty() && dur.is_none() && !v.contains('=') {
                    warn(format!("EXT-X-CUE-OUT duration {v:?} is not a number"));
                }
                Some(base(CueKind::Out, msn, seg_pdt, dialect).with_duration(dur))
            }
            Dialect::CueOutCont => cue_out_cont(v, msn, seg_pdt, policy, &mut warn),
            Dialect::CueIn => Some(base(CueKind::In, msn, seg_pdt, dialect)),
            Dialect::Oatcls | Dialect::Splicepoint => {
                let b64 = v.trim().trim_matches('"');
                from_section_text(b64, false, msn, seg_pdt, dialect, policy, &mut warn)
            }
            Dialect::Scte35Tag => {
                let cue = attr(v, "CUE").unwrap_or(v);
                let mut e = from_section_text(cue, false, msn, seg_pdt, dialect, policy, &mut warn);
                if let Some(e) = e.as_mut() {
                    if attr(v, "CUE-OUT") == Some("CONT") {
                        e.kind = CueKind::Cont;
                    }
                }
                e
            }
            // Never produced from a playlist line.
            Dialect::InbandTs | Dialect::InbandEmsg => None,
        };
        if let Some(ev) = ev {
            push_merged(&mut det.events, ev);
        }
    }
    for e in det.events.iter_mut().filter(|e| e.kind == CueKind::Out) {
        if let Some((_, a)) = assets.iter().find(|(msn, _)| *msn == e.msn) {
            e.asset = a.clone();
        }
    }
    // CONT and IN markers after an OUT in the same window belong to it,
    // whatever ids their own SCTE-35 carries.
    let mut open: Option<String> = None;
    for e in &mut det.events {
        if e.break_id.is_empty() {
            e.break_id = synth_id(e);
        }
        match e.kind {
            CueKind::Out => open = Some(e.break_id.clone()),
            CueKind::Cont => {
                if let Some(id) = &open {
                    e.break_id = id.clone();
                }
            }
            CueKind::In | CueKind::Cancel => {
                if let Some(id) = open.take() {
                    if e.event_id.is_none() || e.kind == CueKind::In {
                        e.break_id = id;
                    }
                }
            }
        }
    }
    det
}

/// A marker on the same segment with the same kind as another (e.g.
/// `EXT-X-CUE-OUT` + `EXT-OATCLS-SCTE35`) describes one event: keep the one
/// that carries SCTE-35, fill gaps from the other.
fn push_merged(events: &mut Vec<CueEvent>, ev: CueEvent) {
    if let Some(prev) = events
        .iter_mut()
        .rev()
        .take(4)
        .find(|p| p.msn == ev.msn && p.kind == ev.kind)
    {
        // The packager's HLS tag states the duration on the HLS timeline;
        // it wins over the raw SCTE-35 break_duration when both are there.
        let (scte, tag) = if ev.event_id.is_some() && prev.event_id.is_none() {
            (ev, prev.clone())
        } else {
            (prev.clone(), ev)
        };
        let mut merged = scte;
        if tag.event_id.is_none() {
            merged.duration_s = tag.duration_s.or(merged.duration_s);
        } else {
            merged.duration_s = merged.duration_s.or(tag.duration_s);
        }
        merged.elapsed_s = merged.elapsed_s.or(tag.elapsed_s);
        *prev = merged;
        return;
    }
    events.push(ev);
}

fn base(kind: CueKind, msn: u64, pdt_ms: Option<i64>, dialect: Dialect) -> CueEvent {
    CueEvent {
        kind,
        break_id: String::new(),
        event_id: None,
        msn,
        pdt_ms,
        duration_s: None,
        elapsed_s: None,
        dialect,
        segmentation_type_id: None,
        scte35_hex: None,
        asset: Default::default(),
    }
}

impl CueEvent {
    fn with_duration(mut self, d: Option<f64>) -> Self {
        self.duration_s = d.filter(|d| d.is_finite() && *d >= 0.0);
        self
    }
}

/// Without an event id, a break is named by its start: the anchor PDT
/// rounded to the second (encoders round elapsed times), else the MSN.
fn synth_id(e: &CueEvent) -> String {
    let start_pdt = e
        .pdt_ms
        .map(|p| p.saturating_sub((e.elapsed_s.unwrap_or(0.0) * 1000.0).round() as i64));
    match start_pdt {
        Some(p) => format!("pdt-{}", p.saturating_add(500).div_euclid(1000)),
        None => format!("msn-{}", e.msn),
    }
}

fn daterange(
    m: &MediaPlaylist<'_>,
    v: &str,
    msn: u64,
    seg_pdt: Option<i64>,
    policy: &SegmentationPolicy,
    warn: &mut impl FnMut(String),
) -> Option<CueEvent> {
    let (text, kind_hint) = if let Some(t) = attr(v, "SCTE35-OUT") {
        (t, Some(CueKind::Out))
    } else if let Some(t) = attr(v, "SCTE35-IN") {
        (t, Some(CueKind::In))
    } else if let Some(t) = attr(v, "SCTE35-CMD") {
        (t, None)
    } else {
        return None;
    };
    // Anchor at START-DATE: the segment it names in the window, else the
    // MSN it will have (signalled ahead) or had (start slid out).
    let start = attr(v, "START-DATE").and_then(hls::parse_pdt_ms);
    let (msn, pdt) = match start {
        Some(p) => match m.index_at_pdt(p) {
            Some(i) => (m.segments.get(i).map_or(msn, |s| s.msn), start),
            None => (m.project_msn(p).unwrap_or(msn), start),
        },
        None => (msn, seg_pdt),
    };
    let mut ev = from_section_text(text, true, msn, pdt, Dialect::Daterange, policy, warn)
        .or_else(|| kind_hint.map(|k| base(k, msn, pdt, Dialect::Daterange)))?;
    if let Some(k) = kind_hint {
        if ev.kind != CueKind::Cancel {
            ev.kind = k;
        }
    }
    let dur = attr(v, "DURATION")
        .or_else(|| attr(v, "PLANNED-DURATION"))
        .and_then(|d| d.parse::<f64>().ok());
    if dur.is_some() {
        ev.duration_s = dur;
    }
    if ev.event_id.is_none() {
        if let Some(id) = attr(v, "ID") {
            ev.break_id = format!("dr-{}", sanitize(id));
        }
    }
    Some(ev)
}

fn cue_out_cont(
    v: &str,
    msn: u64,
    pdt: Option<i64>,
    policy: &SegmentationPolicy,
    warn: &mut impl FnMut(String),
) -> Option<CueEvent> {
    let mut ev = match attr(v, "SCTE35") {
        Some(s) => from_section_text(s, false, msn, pdt, Dialect::CueOutCont, policy, warn)
            .unwrap_or_else(|| base(CueKind::Cont, msn, pdt, Dialect::CueOutCont)),
        None => base(CueKind::Cont, msn, pdt, Dialect::CueOutCont),
    };
    ev.kind = CueKind::Cont;
    ev.dialect = Dialect::CueOutCont;
    if let Some((a, b)) = v.split_once('/').filter(|_| !v.contains('=')) {
        // The "elapsed/duration" form.
        ev.elapsed_s = a.trim().parse().ok();
        ev.duration_s = b.trim().parse().ok();
    } else {
        ev.elapsed_s = attr(v, "ElapsedTime").and_then(|s| s.parse().ok());
        if let Some(d) = attr(v, "Duration").and_then(|s| s.parse().ok()) {
            ev.duration_s = Some(d);
        }
    }
    if ev.elapsed_s.is_none() {
        warn(format!(
            "EXT-X-CUE-OUT-CONT without a readable elapsed time: {v:?}"
        ));
    }
    Some(ev)
}

/// Decode a SCTE-35 section (hex when `hex`, base64 otherwise, with either
/// accepted as a fallback since encoders disagree) and classify it.
fn from_section_text(
    text: &str,
    hex: bool,
    msn: u64,
    pdt: Option<i64>,
    dialect: Dialect,
    policy: &SegmentationPolicy,
    warn: &mut impl FnMut(String),
) -> Option<CueEvent> {
    let text = text.trim().trim_matches('"');
    let looks_hex = text.starts_with("0x") || text.starts_with("0X");
    let bytes = if hex || looks_hex {
        scte35::decode_hex(text).or_else(|_| scte35::decode_base64(text))
    } else {
        scte35::decode_base64(text).or_else(|_| scte35::decode_hex(text))
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            warn(format!("{dialect:?}: SCTE-35 not decodable: {e}"));
            return None;
        }
    };
    let section = match scte35::parse(&bytes) {
        Ok(s) => s,
        Err(e) => {
            warn(format!("{dialect:?}: SCTE-35 section invalid: {e}"));
            return None;
        }
    };
    if !section.crc_ok {
        warn(format!(
            "{dialect:?}: SCTE-35 CRC_32 mismatch (used anyway)"
        ));
    }
    let mut ev = classify(&section, policy)?;
    ev.msn = msn;
    ev.pdt_ms = pdt;
    ev.dialect = dialect;
    ev.scte35_hex = Some(scte35::to_hex(&bytes));
    Some(ev)
}

/// What a decoded section means for ad breaks under `policy`.
pub fn classify(s: &SpliceInfoSection<'_>, policy: &SegmentationPolicy) -> Option<CueEvent> {
    let mut ev = base(CueKind::Out, 0, None, Dialect::Daterange);
    match &s.command {
        SpliceCommand::SpliceInsert(ins) => {
            ev.event_id = Some(ins.splice_event_id);
            match &ins.detail {
                None => ev.kind = CueKind::Cancel,
                Some(d) => {
                    ev.kind = if d.out_of_network_indicator {
                        CueKind::Out
                    } else {
                        CueKind::In
                    };
                    ev.duration_s = d.break_duration.map(|b| b.duration as f64 / 90_000.0);
                }
            }
        }
        SpliceCommand::TimeSignal(_) => {
            let seg = s.segmentation_descriptors().find(|d| match &d.detail {
                None => true,
                Some(x) => {
                    policy.open.contains(&x.segmentation_type_id.0)
                        || policy.close.contains(&x.segmentation_type_id.0)
                }
            })?;
            ev.event_id = Some(seg.segmentation_event_id);
            match &seg.detail {
                None => ev.kind = CueKind::Cancel,
                Some(d) => {
                    let t: SegmentationTypeId = d.segmentation_type_id;
                    ev.segmentation_type_id = Some(t.0);
                    ev.kind = if policy.open.contains(&t.0) {
                        CueKind::Out
                    } else {
                        CueKind::In
                    };
                    ev.duration_s = d.segmentation_duration.map(|t| t as f64 / 90_000.0);
                }
            }
        }
        _ => return None,
    }
    if let Some(id) = ev.event_id {
        ev.break_id = format!("scte-{id}");
    }
    Some(ev)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::media;

    const HDR: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:00.000Z\n#EXTINF:2.0,\na.ts\n";

    fn run(tail: &str) -> Detection {
        let text = format!("{HDR}{tail}");
        let m = media::parse(&text).unwrap();
        detect(&m, &SegmentationPolicy::default())
    }

    #[test]
    fn ext_x_asset_joins_the_break_on_its_segment() {
        let det = run("#EXT-X-ASSET:GENRE=CV,CAID=12345678,EPISODE=\"Episode%20Name\"\n#EXT-X-CUE-OUT:30\n#EXTINF:2.0,\nb.ts\n#EXT-X-ASSET:CAID=999\n#EXTINF:2.0,\nc.ts\n");
        assert_eq!(det.events.len(), 1, "an ASSET alone marks no break");
        let a = &det.events[0].asset;
        assert_eq!(a.get("CAID").map(String::as_str), Some("12345678"));
        assert_eq!(a.get("EPISODE").map(String::as_str), Some("Episode%20Name"));
    }

    #[test]
    fn cue_out_forms() {
        for (t, d) in [
            ("#EXT-X-CUE-OUT:DURATION=30\n", Some(30.0)),
            ("#EXT-X-CUE-OUT:15.5\n", Some(15.5)),
            ("#EXT-X-CUE-OUT\n", None),
        ] {
            let det = run(&format!("{t}#EXTINF:2.0,\nb.ts\n"));
            assert_eq!(det.events.len(), 1, "{t}");
            assert_eq!(det.events[0].kind, CueKind::Out);
            assert_eq!(det.events[0].msn, 11);
            assert_eq!(det.events[0].duration_s, d);
            assert_eq!(det.events[0].break_id, "pdt-1735689602");
        }
    }

    #[test]
    fn cont_ids_match_the_out() {
        let det = run("#EXT-X-CUE-OUT:DURATION=30\n#EXTINF:2.0,\nb.ts\n#EXT-X-CUE-OUT-CONT:ElapsedTime=2.0,Duration=30\n#EXTINF:2.0,\nc.ts\n#EXT-X-CUE-OUT-CONT:4/30\n#EXTINF:2.0,\nd.ts\n#EXT-X-CUE-IN\n#EXTINF:2.0,\ne.ts\n");
        let ids: Vec<_> = det
            .events
            .iter()
            .map(|e| (e.kind, e.break_id.as_str()))
            .collect();
        assert_eq!(ids[0].1, ids[1].1);
        assert_eq!(ids[1].1, ids[2].1);
        assert_eq!(det.events[3].kind, CueKind::In);
        assert_eq!(det.events[2].elapsed_s, Some(4.0));
    }

    #[test]
    fn daterange_hex_scte35_out() {
        let sec = scte35::encode(&scte35::CueSpec::SpliceInsert {
            event_id: 42,
            out_of_network: true,
            pts_time: None,
            duration: Some(30 * 90_000),
            auto_return: true,
            unique_program_id: 1,
        });
        let t = format!("#EXT-X-DATERANGE:ID=\"42\",START-DATE=\"2025-01-01T00:00:02.000Z\",PLANNED-DURATION=30.0,SCTE35-OUT=0x{}\n#EXTINF:2.0,\nb.ts\n", scte35::to_hex(&sec));
        let det = run(&t);
        assert_eq!(det.events.len(), 1);
        assert_eq!(det.events[0].break_id, "scte-42");
        assert_eq!(det.events[0].duration_s, Some(30.0));
        assert_eq!(det.events[0].msn, 11);
    }

    #[test]
    fn oatcls_merges_with_cue_out_and_malformed_warns() {
        let sec = scte35::encode(&scte35::CueSpec::SpliceInsert {
            event_id: 7,
            out_of_network: true,
            pts_time: None,
            duration: Some(20 * 90_000),
            auto_return: true,
            unique_program_id: 1,
        });
        let t = format!("#EXT-OATCLS-SCTE35:{}\n#EXT-X-CUE-OUT:20\n#EXTINF:2.0,\nb.ts\n#EXT-OATCLS-SCTE35:!!notbase64\n#EXTINF:2.0,\nc.ts\n", scte35::to_base64(&sec));
        let det = run(&t);
        assert_eq!(det.events.len(), 1);
        assert_eq!(det.events[0].break_id, "scte-7");
        assert_eq!(det.warnings.len(), 1);
    }
}
