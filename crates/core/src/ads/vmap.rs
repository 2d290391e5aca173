//! VMAP 1.0 (IAB): a schedule of ad breaks, each with its ad source (a
//! VAST tag URI or VAST inline). Used by the decision waterfall for
//! scheduled (`/cue schedule`) and pre-roll breaks: the VMAP break with the
//! same breakId, else the one whose timeOffset matches, supplies the VAST
//! for that break. For a live channel a clock timeOffset ("HH:MM:SS.mmm")
//! is read as a time of day in UTC (a daily schedule); "start" is the
//! pre-roll. Percent and position offsets describe VOD content and never
//! match a live break.

use crate::ads::vast::VastError;
use quick_xml::events::Event;
use quick_xml::name::QName;
use quick_xml::Reader;

pub const MAX_BREAKS: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum TimeOffset {
    Start,
    End,
    /// Milliseconds from content start (for live: from 00:00 UTC).
    Clock(i64),
    Percent(f64),
    Position(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub enum AdSource {
    TagUri(String),
    /// The inner `<VAST>` document, verbatim.
    VastData(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdBreak {
    pub break_id: String,
    pub time_offset: TimeOffset,
    pub break_type: String,
    pub source: Option<AdSource>,
}

pub fn parse_time_offset(s: &str) -> Option<TimeOffset> {
    let s = s.trim();
    match s {
        "start" => return Some(TimeOffset::Start),
        "end" => return Some(TimeOffset::End),
        _ => {}
    }
    if let Some(p) = s.strip_suffix('%') {
        return p
            .parse()
            .ok()
            .filter(|p: &f64| (0.0..=100.0).contains(p))
            .map(TimeOffset::Percent);
    }
    if let Some(n) = s.strip_prefix('#') {
        return n.parse().ok().map(TimeOffset::Position);
    }
    crate::ads::vast::parse_duration(s)
        .map(|secs| TimeOffset::Clock((secs * 1000.0).round() as i64))
}

/// Parse a VMAP document (any namespace prefix).
pub fn parse(xml: &str) -> Result<Vec<AdBreak>, VastError> {
    if xml.len() > crate::ads::vast::MAX_VAST_BYTES {
        return Err(VastError::TooLarge { len: xml.len() });
    }
    let mut r = Reader::from_str(xml);
    r.config_mut().trim_text(true);
    let err = |r: &Reader<&[u8]>, e: quick_xml::Error| VastError::Xml {
        at: r.buffer_position(),
        msg: e.to_string(),
    };
    let mut out = Vec::new();
    let mut saw_root = false;
    let mut current: Option<AdBreak> = None;
    let mut in_tag_uri = false;
    let mut text = String::new();
    let mut depth = 0usize;
    loop {
        let ev = r.read_event().map_err(|e| err(&r, e))?;
        // quick-xml refuses an end tag without its start, so depth never
        // goes below 0 nor near usize::MAX: saturating is only the spelling.
        if matches!(ev, Event::Start(_)) {
            depth = depth.saturating_add(1);
        }
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let local = e.local_name();
                let name = std::str::from_utf8(local.as_ref()).unwrap_or("");
                if !saw_root {
                    if name != "VMAP" {
                        return Err(VastError::NotVast(format!("{name} (expected VMAP)")));
                    }
                    saw_root = true;
                    continue;
                }
                let attr = |k: &str| -> String {
                    e.attributes()
                        // No duplicate check: it allocates per element.
                        .with_checks(false)
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == k.as_bytes())
                        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                        .unwrap_or_default()
                };
                match name {
                    "AdBreak" => {
                        if out.len() >= MAX_BREAKS {
                            return Err(VastError::TooManyAds);
                        }
                        current = parse_time_offset(&attr("timeOffset")).map(|t| AdBreak {
                            break_id: attr("breakId"),
                            time_offset: t,
                            break_type: attr("breakType"),
                            source: None,
                        });
                    }
                    "AdTagURI" if matches!(ev, Event::Start(_)) => {
                        in_tag_uri = true;
                        text.clear();
                    }
                    "VASTAdData" if matches!(ev, Event::Start(_)) => {
                        // Keep the inner VAST verbatim for the VAST parser.
                        let qname = e.name().as_ref().to_vec();
                        let span = r.read_to_end(QName(&qname)).map_err(|e| err(&r, e))?;
                        depth = depth.saturating_sub(1);
                        let inner = xml
                            .get(span.start as usize..span.end as usize)
                            .unwrap_or("")
                            .trim()
                            .to_string();
                        if let Some(b) = current.as_mut() {
                            b.source = Some(AdSource::VastData(inner));
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_tag_uri => {
                text.push_str(&t.decode().map_err(|e| VastError::Xml {
                    at: r.buffer_position(),
                    msg: e.to_string(),
                })?);
            }
            Event::CData(t) if in_tag_uri => {
                text.push_str(&String::from_utf8_lossy(&t));
            }
            Event::GeneralRef(g) if in_tag_uri => {
                let name = String::from_utf8_lossy(&g).into_owned();
                text.push_str(match name.as_str() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                });
            }
            Event::End(ref e) => match e.local_name().as_ref() {
                _ if depth == 0 => {
                    return Err(VastError::Xml {
                        at: r.buffer_position(),
                        msg: "unbalanced end tag".into(),
                    })
                }
                b"AdTagURI" => {
                    depth = depth.saturating_sub(1);
                    in_tag_uri = false;
                    if let Some(b) = current.as_mut() {
                        b.source = Some(AdSource::TagUri(text.trim().to_string()));
                    }
                }
                b"AdBreak" => {
                    depth = depth.saturating_sub(1);
                    out.extend(current.take());
                }
                _ => depth = depth.saturating_sub(1),
            },
            Event::Eof if depth > 0 => {
                return Err(VastError::Xml {
                    at: r.buffer_position(),
                    msg: format!("document ends inside {depth} open element(s)"),
                })
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(VastError::NotVast("nothing".into()));
    }
    Ok(out)
}

/// The VMAP break for a live break: same breakId; else "start" for a
/// pre-roll; else a clock offset within `tolerance_ms` of the break's
/// start time of day (UTC). Only linear breaks with a source.
pub fn select<'a>(
    breaks: &'a [AdBreak],
    break_id: &str,
    preroll: bool,
    start_ms: Option<i64>,
    tolerance_ms: i64,
) -> Option<&'a AdBreak> {
    const DAY: i64 = 86_400_000;
    let usable = |b: &&AdBreak| {
        b.source.is_some()
            && (b.break_type.is_empty() || b.break_type.split(',').any(|t| t.trim() == "linear"))
    };
    if let Some(b) = breaks
        .iter()
        .filter(usable)
        .find(|b| !b.break_id.is_empty() && b.break_id == break_id)
    {
        return Some(b);
    }
    if preroll {
        return breaks
            .iter()
            .filter(usable)
            .find(|b| b.time_offset == TimeOffset::Start);
    }
    let tod = start_ms?.rem_euclid(DAY);
    breaks
        .iter()
        .filter(usable)
        .filter_map(|b| match b.time_offset {
            TimeOffset::Clock(ms) => {
                // Both times of day are in 0..DAY: no overflow.
                let d = ms.rem_euclid(DAY).saturating_sub(tod).saturating_abs();
                Some((d.min(DAY.saturating_sub(d)), b))
            }
            _ => None,
        })
        .filter(|(d, _)| *d <= tolerance_ms)
        .min_by_key(|(d, _)| *d)
        .map(|(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<vmap:VMAP xmlns:vmap="http://www.iab.net/videosuite/vmap" version="1.0">
 <vmap:AdBreak timeOffset="start" breakType="linear" breakId="preroll">
  <vmap:AdSource id="pre" allowMultipleAds="false" followRedirects="true">
   <vmap:AdTagURI templateType="vast3"><![CDATA[https://ads.test/pre?cb=[CACHEBUSTING]]]></vmap:AdTagURI>
  </vmap:AdSource>
 </vmap:AdBreak>
 <vmap:AdBreak timeOffset="12:00:00.000" breakType="linear" breakId="noon">
  <vmap:AdSource id="noon"><vmap:VASTAdData><VAST version="3.0"><Ad id="n"><InLine><AdSystem>x</AdSystem></InLine></Ad></VAST></vmap:VASTAdData></vmap:AdSource>
 </vmap:AdBreak>
 <vmap:AdBreak timeOffset="18:30:00" breakType="nonlinear" breakId="overlay">
  <vmap:AdSource><vmap:AdTagURI templateType="vast3">https://ads.test/o?a=1&amp;b=2</vmap:AdTagURI></vmap:AdSource>
 </vmap:AdBreak>
 <vmap:AdBreak timeOffset="50%" breakType="linear"><vmap:AdSource><vmap:AdTagURI>https://ads.test/mid</vmap:AdTagURI></vmap:AdSource></vmap:AdBreak>
</vmap:VMAP>"#;

    #[test]
    fn parses_sources_and_offsets() {
        let b = parse(DOC).unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(b[0].time_offset, TimeOffset::Start);
        assert_eq!(
            b[0].source,
            Some(AdSource::TagUri(
                "https://ads.test/pre?cb=[CACHEBUSTING]".into()
            ))
        );
        assert_eq!(b[1].time_offset, TimeOffset::Clock(43_200_000));
        match &b[1].source {
            Some(AdSource::VastData(v)) => {
                assert!(v.starts_with("<VAST version=\"3.0\">") && v.ends_with("</VAST>"));
                assert_eq!(crate::ads::vast::parse(v).unwrap().ads[0].id, "n");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            b[2].source,
            Some(AdSource::TagUri("https://ads.test/o?a=1&b=2".into()))
        );
        assert_eq!(b[3].time_offset, TimeOffset::Percent(50.0));
        assert_eq!(parse_time_offset("#2"), Some(TimeOffset::Position(2)));
        assert_eq!(parse_time_offset("soon"), None);
    }

    #[test]
    fn selects_by_id_then_preroll_then_time_of_day() {
        let b = parse(DOC).unwrap();
        let noon_utc = 1_767_268_800_000i64; // 2026-01-01T12:00:00Z
        assert_eq!(select(&b, "noon", false, None, 0).unwrap().break_id, "noon");
        assert_eq!(select(&b, "x", true, None, 0).unwrap().break_id, "preroll");
        assert_eq!(
            select(&b, "x", false, Some(noon_utc + 20_000), 30_000)
                .unwrap()
                .break_id,
            "noon"
        );
        assert!(select(&b, "x", false, Some(noon_utc + 60_000), 30_000).is_none());
        // Non-linear and percent breaks never match a live break.
        let evening = noon_utc + 6 * 3_600_000 + 1_800_000;
        assert!(select(&b, "overlay", false, Some(evening), 1000).is_none());
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(matches!(parse("<VAST/>"), Err(VastError::NotVast(_))));
        // Truncated: an error, never a half-read break.
        assert!(matches!(parse("<vmap:VMAP><vmap:AdBreak timeOffset=\"start\"><vmap:AdSource><vmap:AdTagURI>https://a"), Err(VastError::Xml { .. })), "{:?}", parse("<vmap:VMAP><vmap:AdBreak timeOffset=\"start\"><vmap:AdSource><vmap:AdTagURI>https://a"));
        assert!(parse("").is_err());
    }
}
