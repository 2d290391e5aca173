//! The stable JSON view of a decoded splice_info_section: the public output
//! format of `cf-ssai scte35` (see the README). Raw fields: pts_adjustment is
//! *not* added to pts_time; times are integer 90 kHz ticks.

use crate::scte35::{
    self, DescriptorBody, Scte35Error, SegmentationDescriptor, SpliceCommand, SpliceInfoSection,
    SpliceInsert,
};
use serde_json::{json, Map, Value};

/// How the CLI's input lines are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEncoding {
    Base64,
    Hex,
}

/// One input line to one JSON object: the section, or `{"error": ...}`.
/// A line starting with `<` (neither base64 nor hex can) is the DASH XML
/// form of SCTE 214-1, described exactly as its binary section would be.
pub fn line_to_json(line: &str, enc: InputEncoding) -> Value {
    #[cfg(any(feature = "vast", feature = "dash"))]
    if line.trim_start().starts_with('<') {
        return xml_to_json(line);
    }
    let bytes = match enc {
        InputEncoding::Base64 => scte35::decode_base64(line),
        InputEncoding::Hex => scte35::decode_hex(line),
    };
    match bytes.and_then(|b| scte35::parse(&b).map(|s| section_to_json(&s))) {
        Ok(v) => v,
        Err(e) => error_json(&e),
    }
}

/// `<scte35:Signal>` or `<scte35:SpliceInfoSection>` to the section's JSON.
#[cfg(any(feature = "vast", feature = "dash"))]
fn xml_to_json(line: &str) -> Value {
    match scte35::xml::section_from_xml(line) {
        Ok(bytes) => match scte35::parse(&bytes) {
            Ok(s) => section_to_json(&s),
            Err(e) => error_json(&e),
        },
        Err(e) => json!({ "error": e.to_string() }),
    }
}

pub fn error_json(e: &Scte35Error) -> Value {
    json!({ "error": e.to_string() })
}

pub fn section_to_json(s: &SpliceInfoSection<'_>) -> Value {
    let command = match &s.command {
        SpliceCommand::SpliceNull | SpliceCommand::BandwidthReservation => json!({}),
        SpliceCommand::TimeSignal(t) => json!({ "pts_time_ticks": t.pts_time }),
        SpliceCommand::PrivateCommand {
            identifier,
            private_bytes,
        } => json!({
            "identifier": identifier,
            "private_bytes_hex": scte35::to_hex(private_bytes),
        }),
        SpliceCommand::SpliceInsert(i) => splice_insert_json(i),
        SpliceCommand::SpliceSchedule(events) => json!({
            "splice_count": events.len(),
            "events": events.iter().map(|e| json!({
                "splice_event_id": e.splice_event_id,
                "splice_event_cancel_indicator": e.splice_event_cancel_indicator,
                "out_of_network_indicator": e.out_of_network_indicator,
                "program_splice_flag": e.program_splice_flag,
                "utc_splice_time": e.utc_splice_time,
                "components": e.components.iter().map(|(t, u)| json!({"component_tag": t, "utc_splice_time": u})).collect::<Vec<_>>(),
                "break_duration_ticks": e.break_duration.map(|b| b.duration),
                "break_auto_return": e.break_duration.map(|b| b.auto_return),
                "unique_program_id": e.unique_program_id,
                "avail_num": e.avail_num,
                "avails_expected": e.avails_expected,
            })).collect::<Vec<_>>(),
        }),
        SpliceCommand::Unknown(b) => json!({ "command_bytes_hex": scte35::to_hex(b) }),
    };
    let descriptors: Vec<Value> = s
        .descriptors
        .iter()
        .map(|d| {
            let mut m = Map::new();
            m.insert("tag".into(), json!(d.tag));
            m.insert("identifier".into(), json!(latin1(d.identifier)));
            match &d.body {
                DescriptorBody::Avail { provider_avail_id } => {
                    m.insert("provider_avail_id".into(), json!(provider_avail_id));
                }
                DescriptorBody::Dtmf {
                    preroll,
                    dtmf_chars,
                } => {
                    m.insert("preroll".into(), json!(preroll));
                    m.insert(
                        "dtmf_chars".into(),
                        json!(dtmf_chars.iter().map(|&c| c as char).collect::<String>()),
                    );
                }
                DescriptorBody::Segmentation(seg) => segmentation_json(seg, &mut m),
                DescriptorBody::Time {
                    tai_seconds,
                    tai_ns,
                    utc_offset,
                } => {
                    m.insert("tai_seconds".into(), json!(tai_seconds));
                    m.insert("tai_ns".into(), json!(tai_ns));
                    m.insert("utc_offset".into(), json!(utc_offset));
                }
                DescriptorBody::Other(data) => {
                    m.insert("data_hex".into(), json!(scte35::to_hex(data)));
                }
            }
            Value::Object(m)
        })
        .collect();
    json!({
        "table_id": s.table_id,
        "pts_adjustment_ticks": s.pts_adjustment,
        "tier": s.tier,
        "splice_command_type": s.splice_command_type.0,
        "command": command,
        "descriptors": descriptors,
        "crc_ok": s.crc_ok,
    })
}

fn splice_insert_json(i: &SpliceInsert) -> Value {
    let d = i.detail.as_ref();
    let bd = d.and_then(|d| d.break_duration);
    json!({
        "splice_event_id": i.splice_event_id,
        "splice_event_cancel_indicator": i.splice_event_cancel_indicator,
        "out_of_network_indicator": d.map(|d| d.out_of_network_indicator),
        "splice_immediate_flag": d.map(|d| d.splice_immediate_flag),
        "pts_time_ticks": d.and_then(|d| d.splice_time).and_then(|t| t.pts_time),
        "break_duration_ticks": bd.map(|b| b.duration),
        "break_auto_return": bd.map(|b| b.auto_return),
        "unique_program_id": d.map(|d| d.unique_program_id),
        "avail_num": d.map(|d| d.avail_num),
        "avails_expected": d.map(|d| d.avails_expected),
        "program_splice_flag": d.map(|d| d.program_splice_flag),
        "components": d.map(|d| d.components.iter().map(|(tag, t)| json!({
            "component_tag": tag,
            "pts_time_ticks": t.and_then(|t| t.pts_time),
        })).collect::<Vec<_>>()),
    })
}

fn segmentation_json(seg: &SegmentationDescriptor<'_>, m: &mut Map<String, Value>) {
    m.insert(
        "segmentation_event_id".into(),
        json!(seg.segmentation_event_id),
    );
    m.insert(
        "segmentation_event_cancel_indicator".into(),
        json!(seg.segmentation_event_cancel_indicator),
    );
    let d = seg.detail.as_ref();
    let r = d.and_then(|d| d.restrictions);
    let pairs = [
        (
            "segmentation_type_id",
            json!(d.map(|d| d.segmentation_type_id.0)),
        ),
        (
            "segmentation_duration_ticks",
            json!(d.and_then(|d| d.segmentation_duration)),
        ),
        (
            "segmentation_upid_type",
            json!(d.map(|d| d.segmentation_upid_type.0)),
        ),
        (
            "segmentation_upid_hex",
            json!(d.map(|d| scte35::to_hex(d.segmentation_upid))),
        ),
        ("segment_num", json!(d.map(|d| d.segment_num))),
        ("segments_expected", json!(d.map(|d| d.segments_expected))),
        ("sub_segment_num", json!(d.and_then(|d| d.sub_segment_num))),
        (
            "sub_segments_expected",
            json!(d.and_then(|d| d.sub_segments_expected)),
        ),
        (
            "delivery_not_restricted_flag",
            json!(d.map(|d| d.delivery_not_restricted_flag)),
        ),
        (
            "web_delivery_allowed_flag",
            json!(r.map(|r| r.web_delivery_allowed_flag)),
        ),
        (
            "no_regional_blackout_flag",
            json!(r.map(|r| r.no_regional_blackout_flag)),
        ),
        (
            "archive_allowed_flag",
            json!(r.map(|r| r.archive_allowed_flag)),
        ),
        (
            "device_restrictions",
            json!(r.map(|r| r.device_restrictions)),
        ),
    ];
    for (k, v) in pairs {
        m.insert(k.into(), v);
    }
}

/// The 4-byte identifier as a latin-1 string ("CUEI").
fn latin1(id: u32) -> String {
    id.to_be_bytes().iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_keys_for_splice_insert() {
        let v = line_to_json(
            "/DAvAAAAAAAA///wFAVIAACPf+/+c2nALv4AUsz1AAAAAAAKAAhDVUVJAAABNWLbowo=",
            InputEncoding::Base64,
        );
        assert_eq!(v["splice_command_type"], 5);
        assert_eq!(v["command"]["splice_event_id"], 0x4800008f_u32);
        assert_eq!(v["command"]["pts_time_ticks"], 0x07369c02e_u64);
        assert_eq!(v["command"]["break_auto_return"], true);
        assert_eq!(v["descriptors"][0]["identifier"], "CUEI");
        assert_eq!(v["descriptors"][0]["provider_avail_id"], 0x135);
        assert_eq!(v["crc_ok"], true);
    }

    #[test]
    fn hex_and_base64_agree() {
        let b = scte35::decode_base64(
            "/DAvAAAAAAAA///wBQb+dGKQoAAZAhdDVUVJSAAAjn+fCAgAAAAALKChijUCAKnMZ1g=",
        )
        .unwrap();
        let hex = format!("0x{}", scte35::to_hex(&b));
        assert_eq!(
            line_to_json(&hex, InputEncoding::Hex),
            line_to_json(
                "/DAvAAAAAAAA///wBQb+dGKQoAAZAhdDVUVJSAAAjn+fCAgAAAAALKChijUCAKnMZ1g=",
                InputEncoding::Base64
            )
        );
    }

    #[cfg(any(feature = "vast", feature = "dash"))]
    #[test]
    fn xml_lines_are_described_as_their_binary() {
        let b64 = "/DAvAAAAAAAA///wFAVIAACPf+/+c2nALv4AUsz1AAAAAAAKAAhDVUVJAAABNWLbowo=";
        let binary = line_to_json(b64, InputEncoding::Base64);
        let signal = format!(
            r#"<scte35:Signal xmlns:scte35="http://www.scte.org/schemas/35/2016"><scte35:Binary>{b64}</scte35:Binary></scte35:Signal>"#
        );
        let section = r#"  <scte35:SpliceInfoSection xmlns:scte35="http://www.scte.org/schemas/35/2016" ptsAdjustment="0" tier="4095"><scte35:SpliceInsert spliceEventId="1207959695" outOfNetworkIndicator="true" spliceImmediateFlag="false"><scte35:Program><scte35:SpliceTime ptsTime="1936310318"/></scte35:Program><scte35:BreakDuration autoReturn="true" duration="5426421"/></scte35:SpliceInsert><scte35:AvailDescriptor providerAvailId="309"/></scte35:SpliceInfoSection>"#;
        for enc in [InputEncoding::Base64, InputEncoding::Hex] {
            assert_eq!(line_to_json(&signal, enc), binary);
            assert_eq!(line_to_json(section, enc), binary);
        }
        let bad = line_to_json(
            "<scte35:SpliceInfoSection><scte35:SpliceNull/>",
            InputEncoding::Base64,
        );
        assert!(
            bad["error"].as_str().unwrap().contains("never closed"),
            "{bad}"
        );
        let bad = line_to_json(
            "<Signal><Binary>!!</Binary></Signal>",
            InputEncoding::Base64,
        );
        assert!(
            bad["error"]
                .as_str()
                .unwrap()
                .starts_with("Binary: invalid base64"),
            "{bad}"
        );
    }

    #[test]
    fn bad_lines_are_errors() {
        for l in ["", "   ", "!!!", "AAAA", "/DAv"] {
            assert!(
                line_to_json(l, InputEncoding::Base64)
                    .get("error")
                    .is_some(),
                "{l}"
            );
        }
    }
}
