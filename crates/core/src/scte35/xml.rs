//! SCTE-35 in DASH MPD `EventStream`s: the two XML forms of SCTE 214-1.
//!
//! - `urn:scte:scte35:2014:xml+bin`: `<scte35:Signal><scte35:Binary>BASE64
//!   </scte35:Binary></scte35:Signal>`, the section's bytes in base64,
//!   returned as they are.
//! - `urn:scte:scte35:2013:xml`: `<scte35:SpliceInfoSection>`, the section
//!   spelled out in the SCTE 35 XML schema, encoded here to the binary
//!   splice_info_section (correct CRC_32), so that one binary decoder
//!   ([`scte35::parse`](crate::scte35::parse)) and one JSON view serve every
//!   form.
//!
//! Namespaces: packagers spell the SCTE 35 namespace many ways
//! (`http://www.scte.org/schemas/35/2016`, the older
//! `http://www.scte.org/schemas/35/2014SCTE35.xsd`, the current
//! `https://scte.org/schemas/35`, sometimes the scheme URN), and the inner
//! XML of an `Event` often uses a `scte35:` prefix declared on the MPD root,
//! so it arrives undeclared. An element counts as SCTE 35 when its namespace
//! is one of that family, none at all, or an undeclared prefix; an element
//! bound to any other namespace is someone else's and is skipped, as are
//! unknown SCTE 35 elements. Attributes are read by local name (some
//! encoders prefix them too).
//!
//! Not supported (an error naming the element, never a guess):
//! `SpliceSchedule` (its times are `xsd:dateTime`), `EncryptedPacket`.
//! `AudioDescriptor` and other unknown descriptors are skipped.

use crate::scte35::{
    self, crc32_mpeg2, put_splice_time, BitWriter, Scte35Error, SegmentationTypeId,
    SpliceCommandType, MAX_SECTION_BYTES, TABLE_ID,
};
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use thiserror::Error;

/// The inner XML of one `Event`: a section is at most 4 KiB in binary, so
/// anything far larger is not one (and is refused before parsing).
pub const MAX_XML_BYTES: usize = 64 * 1024;
/// The SCTE 35 schema nests 5 deep; the slack is for wrappers (an `Event`).
const MAX_DEPTH: usize = 32;
/// "CUEI": the identifier of every SCTE 35 splice_descriptor (§10.2); the
/// XML schema has no attribute for it.
const CUEI: u32 = 0x4355_4549;
/// segmentation_upid_type MID (Table 22): several UPIDs in one.
const UPID_TYPE_MID: u64 = 0x0D;
/// segmentation_upid_type MPU (Table 22): format_identifier + private data.
const UPID_TYPE_MPU: u64 = 0x0C;
/// Longest value quoted back in an error message.
const QUOTE_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XmlError {
    #[error("XML is {len} bytes, at most {MAX_XML_BYTES} for one SCTE-35 event")]
    TooLong { len: usize },
    #[error("not well-formed XML at byte {at}: {msg}")]
    Xml { at: u64, msg: String },
    #[error("XML nests deeper than {MAX_DEPTH} elements")]
    TooDeep,
    #[error("no SCTE-35 SpliceInfoSection or Signal element")]
    NoSignal,
    #[error("Signal has neither a Binary nor a SpliceInfoSection element")]
    EmptySignal,
    #[error("SpliceInfoSection has no splice command (SpliceNull, SpliceInsert, TimeSignal, BandwidthReservation, PrivateCommand)")]
    NoCommand,
    #[error("SpliceInfoSection has two splice commands: {first} and {second}")]
    TwoCommands { first: String, second: String },
    #[error("{element} is not supported in the XML form")]
    Unsupported { element: String },
    #[error("{element} has no {attribute} attribute")]
    MissingAttribute {
        element: String,
        attribute: &'static str,
    },
    #[error("{element}@{attribute} = {value:?} is not {expected}")]
    BadValue {
        element: String,
        attribute: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{element}@{attribute} = {value} does not fit in {bits} bits")]
    OutOfRange {
        element: String,
        attribute: &'static str,
        value: u64,
        bits: u32,
    },
    #[error("{element} content {value:?} is not {expected}")]
    BadContent {
        element: String,
        value: String,
        expected: &'static str,
    },
    #[error("{element} has {count} {what}, at most {max}")]
    TooMany {
        element: String,
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{what} is {len} bytes, at most {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("Binary: {0}")]
    Binary(#[from] Scte35Error),
}

/// The binary splice_info_section carried by the inner XML of a DASH
/// `Event` (or any XML holding one): a `Signal` with a `Binary` (its bytes,
/// base64-decoded, not otherwise checked) or with a `SpliceInfoSection`, or
/// a bare `SpliceInfoSection` (encoded, CRC_32 computed). The first such
/// element in document order is the one read.
pub fn section_from_xml(xml: &str) -> Result<Vec<u8>, XmlError> {
    if xml.len() > MAX_XML_BYTES {
        return Err(XmlError::TooLong { len: xml.len() });
    }
    let roots = read_tree(xml)?;
    let found = first_signal(&roots).ok_or(XmlError::NoSignal)?;
    if found.name == "SpliceInfoSection" {
        return splice_info_section(found);
    }
    // SCTE 35 XML schema: a Signal is a choice of Binary or SpliceInfoSection.
    if let Some(binary) = found.child("Binary") {
        return Ok(scte35::decode_base64(&without_space(&binary.text))?);
    }
    match found.child("SpliceInfoSection") {
        Some(section) => splice_info_section(section),
        None => Err(XmlError::EmptySignal),
    }
}

// ---------------------------------------------------------------------------
// The document as a small tree (the input is bounded: at most
// MAX_XML_BYTES, MAX_DEPTH deep).

#[derive(Debug, Default)]
struct Element {
    /// Local name (prefix dropped).
    name: String,
    /// In an SCTE 35 namespace, no namespace, or an undeclared prefix.
    scte: bool,
    /// (local name, unescaped value), namespace declarations left out.
    attrs: Vec<(String, String)>,
    /// The element's own character data (text, references, CDATA), joined.
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The SCTE 35 children called `name`, in order.
    fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children
            .iter()
            .filter(move |c| c.scte && c.name == name)
    }

    /// The first SCTE 35 child called `name`.
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.scte && c.name == name)
    }
}

fn read_tree(xml: &str) -> Result<Vec<Element>, XmlError> {
    let mut r = NsReader::from_str(xml);
    let mut open: Vec<Element> = Vec::new();
    let mut roots = Vec::new();
    loop {
        let (scte, event) = match r.read_resolved_event() {
            Ok((ns, event)) => (is_scte_namespace(&ns), event),
            Err(e) => return Err(malformed(r.buffer_position(), e)),
        };
        let at = r.buffer_position();
        match event {
            Event::Start(e) => {
                if open.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                open.push(element(&e, scte, at)?);
            }
            Event::Empty(e) => attach(&mut open, &mut roots, element(&e, scte, at)?),
            // quick-xml checks that end tags match their start tags.
            Event::End(_) => {
                if let Some(done) = open.pop() {
                    attach(&mut open, &mut roots, done);
                }
            }
            Event::Text(t) => push_text(&mut open, &t.decode().map_err(|e| malformed(at, e))?),
            Event::CData(t) => push_text(&mut open, &t.decode().map_err(|e| malformed(at, e))?),
            Event::GeneralRef(g) => push_text(&mut open, &reference(&g, at)?),
            Event::Eof => break,
            // Declarations, comments, processing instructions, DOCTYPE.
            _ => {}
        }
    }
    match open.last() {
        Some(unclosed) => Err(XmlError::Xml {
            at: r.buffer_position(),
            msg: format!("<{}> is never closed", unclosed.name),
        }),
        None => Ok(roots),
    }
}

/// See the module comment: the SCTE 35 family, no namespace, or a prefix
/// declared outside the fragment.
fn is_scte_namespace(ns: &ResolveResult<'_>) -> bool {
    match ns {
        ResolveResult::Unbound | ResolveResult::Unknown(_) => true,
        ResolveResult::Bound(ns) => {
            let uri = String::from_utf8_lossy(ns.as_ref());
            uri.contains("scte.org/schemas/35") || uri.starts_with("urn:scte:scte35:")
        }
    }
}

fn element(e: &BytesStart<'_>, scte: bool, at: u64) -> Result<Element, XmlError> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| malformed(at, e))?;
        if a.key.as_namespace_binding().is_some() {
            continue;
        }
        let value = a.unescape_value().map_err(|e| malformed(at, e))?;
        attrs.push((
            String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
            value.into_owned(),
        ));
    }
    Ok(Element {
        name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
        scte,
        attrs,
        text: String::new(),
        children: Vec::new(),
    })
}

fn attach(open: &mut [Element], roots: &mut Vec<Element>, done: Element) {
    match open.last_mut() {
        Some(parent) => parent.children.push(done),
        None => roots.push(done),
    }
}

/// Character data outside every element is whitespace or junk: dropped.
fn push_text(open: &mut [Element], text: &str) {
    if let Some(e) = open.last_mut() {
        e.text.push_str(text);
    }
}

/// `&name;` in text: XML's five predefined entities and character
/// references. Anything else would need a DTD, which is not read (so no
/// entity expansion).
fn reference(g: &BytesRef<'_>, at: u64) -> Result<String, XmlError> {
    if let Some(c) = g.resolve_char_ref().map_err(|e| malformed(at, e))? {
        return Ok(c.to_string());
    }
    let name = g.decode().map_err(|e| malformed(at, e))?;
    let text = match name.as_ref() {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        other => {
            return Err(XmlError::Xml {
                at,
                msg: format!("undefined entity &{};", quote(other)),
            })
        }
    };
    Ok(text.to_string())
}

fn malformed(at: u64, e: impl std::fmt::Display) -> XmlError {
    XmlError::Xml {
        at,
        msg: e.to_string(),
    }
}

/// The first SCTE 35 `SpliceInfoSection` or `Signal` in document order.
fn first_signal(elements: &[Element]) -> Option<&Element> {
    elements.iter().find_map(|e| {
        if e.scte && matches!(e.name.as_str(), "SpliceInfoSection" | "Signal") {
            Some(e)
        } else {
            first_signal(&e.children)
        }
    })
}

// ---------------------------------------------------------------------------
// Attribute values (XML Schema lexical forms).

/// An `xsd:unsignedXxx` attribute that must fit the field's `bits`.
fn uint(e: &Element, attribute: &'static str, bits: u32) -> Result<Option<u64>, XmlError> {
    let Some(raw) = e.attr(attribute) else {
        return Ok(None);
    };
    let value: u64 = raw.trim().parse().map_err(|_| XmlError::BadValue {
        element: e.name.clone(),
        attribute,
        value: quote(raw),
        expected: "an unsigned integer",
    })?;
    if value.checked_shr(bits).unwrap_or(0) != 0 {
        return Err(XmlError::OutOfRange {
            element: e.name.clone(),
            attribute,
            value,
            bits,
        });
    }
    Ok(Some(value))
}

fn required_uint(e: &Element, attribute: &'static str, bits: u32) -> Result<u64, XmlError> {
    uint(e, attribute, bits)?.ok_or_else(|| missing(e, attribute))
}

/// An `xsd:boolean` attribute: `true`, `false`, `1` or `0`.
fn boolean(e: &Element, attribute: &'static str) -> Result<Option<bool>, XmlError> {
    let Some(raw) = e.attr(attribute) else {
        return Ok(None);
    };
    match raw.trim() {
        "true" | "1" => Ok(Some(true)),
        "false" | "0" => Ok(Some(false)),
        _ => Err(XmlError::BadValue {
            element: e.name.clone(),
            attribute,
            value: quote(raw),
            expected: "a boolean (true, false, 1 or 0)",
        }),
    }
}

fn required_bool(e: &Element, attribute: &'static str) -> Result<bool, XmlError> {
    boolean(e, attribute)?.ok_or_else(|| missing(e, attribute))
}

fn missing(e: &Element, attribute: &'static str) -> XmlError {
    XmlError::MissingAttribute {
        element: e.name.clone(),
        attribute,
    }
}

/// A value quoted back in an error, cut short.
fn quote(s: &str) -> String {
    s.chars().take(QUOTE_CHARS).collect()
}

/// `xsd:base64Binary` and wrapped hex allow whitespace anywhere.
fn without_space(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

// ---------------------------------------------------------------------------
// Encoding (SCTE 35 §9.2 syntax; reserved bits are 1, as §9.1 requires).

/// splice_info_section() from `<SpliceInfoSection>`: unencrypted, with the
/// schema's defaults (ptsAdjustment 0, protocolVersion 0, tier 0xFFF,
/// sapType 3 "not specified").
fn splice_info_section(e: &Element) -> Result<Vec<u8>, XmlError> {
    if e.child("EncryptedPacket").is_some() {
        return Err(XmlError::Unsupported {
            element: "EncryptedPacket".into(),
        });
    }
    let sap_type = uint(e, "sapType", 2)?.unwrap_or(3);
    let protocol_version = uint(e, "protocolVersion", 8)?.unwrap_or(0);
    let pts_adjustment = uint(e, "ptsAdjustment", 33)?.unwrap_or(0);
    let tier = uint(e, "tier", 12)?.unwrap_or(0xFFF);
    let (command_type, command) = splice_command(e)?;
    let descriptors = descriptor_loop(e)?;
    // section_length counts from protocol_version to CRC_32 inclusive.
    let section_length = [11, command.len(), 2, descriptors.len(), 4]
        .into_iter()
        .fold(0usize, usize::saturating_add);
    let max = MAX_SECTION_BYTES.saturating_sub(3);
    if section_length > max {
        return Err(XmlError::TooLarge {
            what: "splice_info_section",
            len: section_length.saturating_add(3),
            max: MAX_SECTION_BYTES,
        });
    }
    // Every length below fits its field: the whole is at most 4098 bytes.
    let mut w = BitWriter::default();
    w.put(u64::from(TABLE_ID), 8);
    w.put(0, 1); // section_syntax_indicator
    w.put(0, 1); // private_indicator
    w.put(sap_type, 2);
    w.put(section_length as u64, 12);
    w.put(protocol_version, 8);
    w.put(0, 1); // encrypted_packet
    w.put(0, 6); // encryption_algorithm
    w.put(pts_adjustment, 33);
    // cw_index means nothing unencrypted; 0xFF as the §14 samples have it.
    w.put(0xFF, 8);
    w.put(tier, 12);
    w.put(command.len() as u64, 12);
    w.put(u64::from(command_type.0), 8);
    w.out.extend_from_slice(&command);
    w.put(descriptors.len() as u64, 16);
    w.out.extend_from_slice(&descriptors);
    let crc = crc32_mpeg2(&w.out);
    w.out.extend_from_slice(&crc.to_be_bytes());
    Ok(w.out)
}

/// The one command element (the schema's choice) and its bytes.
fn splice_command(e: &Element) -> Result<(SpliceCommandType, Vec<u8>), XmlError> {
    const COMMANDS: [&str; 6] = [
        "SpliceNull",
        "SpliceSchedule",
        "SpliceInsert",
        "TimeSignal",
        "BandwidthReservation",
        "PrivateCommand",
    ];
    let mut commands = e
        .children
        .iter()
        .filter(|c| c.scte && COMMANDS.contains(&c.name.as_str()));
    let command = commands.next().ok_or(XmlError::NoCommand)?;
    if let Some(second) = commands.next() {
        return Err(XmlError::TwoCommands {
            first: command.name.clone(),
            second: second.name.clone(),
        });
    }
    Ok(match command.name.as_str() {
        "SpliceNull" => (SpliceCommandType::SPLICE_NULL, Vec::new()),
        "BandwidthReservation" => (SpliceCommandType::BANDWIDTH_RESERVATION, Vec::new()),
        "SpliceInsert" => (SpliceCommandType::SPLICE_INSERT, splice_insert(command)?),
        "TimeSignal" => (SpliceCommandType::TIME_SIGNAL, time_signal(command)?),
        "PrivateCommand" => (
            SpliceCommandType::PRIVATE_COMMAND,
            private_command(command)?,
        ),
        other => {
            return Err(XmlError::Unsupported {
                element: other.into(),
            })
        }
    })
}

/// splice_insert() (§9.7.3). Program mode unless `Component`s are given;
/// the splice_time is written only when not immediate, as the syntax says,
/// whatever `SpliceTime` the XML also carries.
fn splice_insert(e: &Element) -> Result<Vec<u8>, XmlError> {
    let mut w = BitWriter::default();
    let cancel = boolean(e, "spliceEventCancelIndicator")?.unwrap_or(false);
    w.put(required_uint(e, "spliceEventId", 32)?, 32);
    w.put(u64::from(cancel), 1);
    w.put(0x7F, 7);
    if cancel {
        return Ok(w.out);
    }
    let out_of_network = required_bool(e, "outOfNetworkIndicator")?;
    let immediate = boolean(e, "spliceImmediateFlag")?.unwrap_or(false);
    let compliant = boolean(e, "eventIdComplianceFlag")?.unwrap_or(true);
    let components: Vec<&Element> = e.children_named("Component").collect();
    let break_duration = e.child("BreakDuration");
    w.put(u64::from(out_of_network), 1);
    w.put(u64::from(components.is_empty()), 1); // program_splice_flag
    w.put(u64::from(break_duration.is_some()), 1); // duration_flag
    w.put(u64::from(immediate), 1);
    w.put(u64::from(compliant), 1);
    w.put(0x7, 3);
    if components.is_empty() {
        if !immediate {
            let program = e.child("Program");
            put_splice_time(&mut w, splice_time(program)?);
        }
    } else {
        w.put(count(e, "Component elements", components.len(), 255)?, 8);
        for c in components {
            w.put(required_uint(c, "componentTag", 8)?, 8);
            if !immediate {
                put_splice_time(&mut w, splice_time(Some(c))?);
            }
        }
    }
    if let Some(b) = break_duration {
        w.put(u64::from(required_bool(b, "autoReturn")?), 1);
        w.put(0x3F, 6);
        w.put(required_uint(b, "duration", 33)?, 33);
    }
    w.put(uint(e, "uniqueProgramId", 16)?.unwrap_or(0), 16);
    w.put(uint(e, "availNum", 8)?.unwrap_or(0), 8);
    w.put(uint(e, "availsExpected", 8)?.unwrap_or(0), 8);
    Ok(w.out)
}

/// time_signal() (§9.7.4): a splice_time; no `SpliceTime@ptsTime` is
/// time_specified_flag = 0.
fn time_signal(e: &Element) -> Result<Vec<u8>, XmlError> {
    let mut w = BitWriter::default();
    put_splice_time(&mut w, splice_time(Some(e))?);
    Ok(w.out)
}

/// The `SpliceTime@ptsTime` child of `parent`, if any.
fn splice_time(parent: Option<&Element>) -> Result<Option<u64>, XmlError> {
    match parent.and_then(|p| p.child("SpliceTime")) {
        Some(t) => uint(t, "ptsTime", 33),
        None => Ok(None),
    }
}

/// private_command() (§9.7.6): identifier and `PrivateBytes` (hexBinary).
fn private_command(e: &Element) -> Result<Vec<u8>, XmlError> {
    let mut w = BitWriter::default();
    w.put(required_uint(e, "identifier", 32)?, 32);
    if let Some(bytes) = e.child("PrivateBytes") {
        w.out.extend_from_slice(&hex_content(bytes)?);
    }
    Ok(w.out)
}

/// The descriptor loop, in document order.
fn descriptor_loop(e: &Element) -> Result<Vec<u8>, XmlError> {
    let mut out = Vec::new();
    for d in e.children.iter().filter(|c| c.scte) {
        let (tag, body) = match d.name.as_str() {
            "AvailDescriptor" => (0, avail_descriptor(d)?),
            "DTMFDescriptor" => (1, dtmf_descriptor(d)?),
            "SegmentationDescriptor" => (2, segmentation_descriptor(d)?),
            "TimeDescriptor" => (3, time_descriptor(d)?),
            _ => continue,
        };
        // descriptor_length covers the identifier and the body.
        let length = body.len().saturating_add(4);
        let Ok(length_byte) = u8::try_from(length) else {
            return Err(XmlError::TooLarge {
                what: "splice_descriptor",
                len: length,
                max: 255,
            });
        };
        out.extend_from_slice(&[tag, length_byte]);
        out.extend_from_slice(&CUEI.to_be_bytes());
        out.extend_from_slice(&body);
    }
    Ok(out)
}

/// avail_descriptor() (§10.3.1).
fn avail_descriptor(e: &Element) -> Result<Vec<u8>, XmlError> {
    let id = required_uint(e, "providerAvailId", 32)?;
    let mut w = BitWriter::default();
    w.put(id, 32);
    Ok(w.out)
}

/// DTMF_descriptor() (§10.3.2): `chars` are the DTMF characters, at most 7.
fn dtmf_descriptor(e: &Element) -> Result<Vec<u8>, XmlError> {
    let chars = e.attr("chars").unwrap_or_default().trim();
    let mut w = BitWriter::default();
    w.put(required_uint(e, "preroll", 8)?, 8);
    w.put(count(e, "DTMF chars", chars.len(), 7)?, 3);
    w.put(0x1F, 5);
    w.out.extend_from_slice(chars.as_bytes());
    Ok(w.out)
}

/// time_descriptor() (§10.3.4).
fn time_descriptor(e: &Element) -> Result<Vec<u8>, XmlError> {
    let mut w = BitWriter::default();
    w.put(required_uint(e, "taiSeconds", 48)?, 48);
    w.put(required_uint(e, "taiNs", 32)?, 32);
    w.put(required_uint(e, "utcOffset", 16)?, 16);
    Ok(w.out)
}

/// segmentation_descriptor() (§10.3.3), after the identifier.
/// Program mode unless `Component`s are given; delivery restricted exactly
/// when `DeliveryRestrictions` is present; sub_segment_num and
/// sub_segments_expected are written when either attribute is present and
/// the type carries them (older encoders leave them out; the parser reads
/// them only when there).
fn segmentation_descriptor(e: &Element) -> Result<Vec<u8>, XmlError> {
    let mut w = BitWriter::default();
    let cancel = boolean(e, "segmentationEventCancelIndicator")?.unwrap_or(false);
    let compliant = boolean(e, "segmentationEventIdComplianceIndicator")?.unwrap_or(true);
    w.put(required_uint(e, "segmentationEventId", 32)?, 32);
    w.put(u64::from(cancel), 1);
    w.put(u64::from(compliant), 1);
    w.put(0x3F, 6);
    if cancel {
        return Ok(w.out);
    }
    let components: Vec<&Element> = e.children_named("Component").collect();
    let duration = uint(e, "segmentationDuration", 40)?;
    let restrictions = e.child("DeliveryRestrictions");
    w.put(u64::from(components.is_empty()), 1); // program_segmentation_flag
    w.put(u64::from(duration.is_some()), 1);
    w.put(u64::from(restrictions.is_none()), 1); // delivery_not_restricted_flag
    match restrictions {
        Some(r) => {
            w.put(u64::from(required_bool(r, "webDeliveryAllowedFlag")?), 1);
            w.put(u64::from(required_bool(r, "noRegionalBlackoutFlag")?), 1);
            w.put(u64::from(required_bool(r, "archiveAllowedFlag")?), 1);
            w.put(required_uint(r, "deviceRestrictions", 2)?, 2);
        }
        None => w.put(0x1F, 5),
    }
    if !components.is_empty() {
        w.put(count(e, "Component elements", components.len(), 255)?, 8);
        for c in components {
            w.put(required_uint(c, "componentTag", 8)?, 8);
            w.put(0x7F, 7);
            w.put(required_uint(c, "ptsOffset", 33)?, 33);
        }
    }
    if let Some(d) = duration {
        w.put(d, 40);
    }
    let (upid_type, upid) = segmentation_upid(e)?;
    w.put(upid_type, 8);
    w.put(count(e, "segmentation_upid bytes", upid.len(), 255)?, 8);
    w.out.extend_from_slice(&upid);
    let type_id = required_uint(e, "segmentationTypeId", 8)?;
    w.put(type_id, 8);
    w.put(uint(e, "segmentNum", 8)?.unwrap_or(0), 8);
    w.put(uint(e, "segmentsExpected", 8)?.unwrap_or(0), 8);
    let sub_num = uint(e, "subSegmentNum", 8)?;
    let sub_expected = uint(e, "subSegmentsExpected", 8)?;
    let has_sub = u8::try_from(type_id).is_ok_and(|t| SegmentationTypeId(t).has_sub_segments());
    if has_sub && (sub_num.is_some() || sub_expected.is_some()) {
        w.put(sub_num.unwrap_or(0), 8);
        w.put(sub_expected.unwrap_or(0), 8);
    }
    Ok(w.out)
}

/// (segmentation_upid_type, segmentation_upid). No `SegmentationUpid` is
/// type 0 with no bytes; several are a MID (Table 22: each as type, length,
/// bytes), which is how the schema spells one.
fn segmentation_upid(e: &Element) -> Result<(u64, Vec<u8>), XmlError> {
    let upids: Vec<&Element> = e.children_named("SegmentationUpid").collect();
    match upids.as_slice() {
        [] => Ok((0, Vec::new())),
        [one] => upid(one),
        many => {
            let mut mid = Vec::new();
            for u in many {
                let (t, bytes) = upid(u)?;
                // Both fit a byte: upid() checked the type, count() the length.
                mid.push(t as u8);
                mid.push(count(u, "segmentation_upid bytes", bytes.len(), 255)? as u8);
                mid.extend_from_slice(&bytes);
            }
            Ok((UPID_TYPE_MID, mid))
        }
    }
}

/// One `SegmentationUpid`: its type and its bytes, read from the content
/// in its `segmentationUpidFormat` (default `hexbinary`).
fn upid(e: &Element) -> Result<(u64, Vec<u8>), XmlError> {
    let upid_type = required_uint(e, "segmentationUpidType", 8)?;
    let format = e.attr("segmentationUpidFormat").unwrap_or("hexbinary");
    let mut bytes = match format.trim().to_ascii_lowercase().as_str() {
        "hexbinary" | "hex" => hex_content(e)?,
        "text" => e.text.trim().as_bytes().to_vec(),
        "base-64" | "base64" => base64_content(e)?,
        _ => {
            return Err(XmlError::BadValue {
                element: e.name.clone(),
                attribute: "segmentationUpidFormat",
                value: quote(format),
                expected: "text, hexbinary or base-64",
            })
        }
    };
    // MPU: some writers put format_identifier in its attribute and only the
    // private data in the content; the UPID is both.
    if upid_type == UPID_TYPE_MPU {
        if let Some(id) = uint(e, "formatIdentifier", 32)? {
            let id = (id as u32).to_be_bytes(); // fits: checked to 32 bits
            if !bytes.starts_with(&id) {
                bytes = id.iter().chain(&bytes).copied().collect();
            }
        }
    }
    Ok((upid_type, bytes))
}

/// `xsd:hexBinary` content; empty is no bytes.
fn hex_content(e: &Element) -> Result<Vec<u8>, XmlError> {
    let text = without_space(&e.text);
    if text.is_empty() {
        return Ok(Vec::new());
    }
    scte35::decode_hex(&text).map_err(|_| XmlError::BadContent {
        element: e.name.clone(),
        value: quote(&text),
        expected: "hexadecimal bytes",
    })
}

/// `xsd:base64Binary` content; empty is no bytes.
fn base64_content(e: &Element) -> Result<Vec<u8>, XmlError> {
    let text = without_space(&e.text);
    if text.is_empty() {
        return Ok(Vec::new());
    }
    scte35::decode_base64(&text).map_err(|_| XmlError::BadContent {
        element: e.name.clone(),
        value: quote(&text),
        expected: "base64",
    })
}

/// A count written into a field that holds at most `max`.
fn count(e: &Element, what: &'static str, n: usize, max: usize) -> Result<u64, XmlError> {
    if n > max {
        return Err(XmlError::TooMany {
            element: e.name.clone(),
            what,
            count: n,
            max,
        });
    }
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scte35::{
        parse, to_base64, to_hex, DescriptorBody, SegmentationDescriptor, SpliceCommand,
        SpliceDescriptor, SpliceInfoSection, SpliceInsert,
    };

    // -- A test-only writer: a parsed section back to the XML form, so any
    // section the binary parser accepts can be sent round the loop.

    fn to_xml(s: &SpliceInfoSection<'_>, p: &str, ns: &str) -> String {
        let mut x = format!(
            r#"<{p}SpliceInfoSection {ns} ptsAdjustment="{}" protocolVersion="{}" tier="{}" sapType="{}">"#,
            s.pts_adjustment, s.protocol_version, s.tier, s.sap_type
        );
        x.push_str(&command_xml(&s.command, p));
        for d in &s.descriptors {
            x.push_str(&descriptor_xml(d, p));
        }
        x.push_str(&format!("</{p}SpliceInfoSection>"));
        x
    }

    fn time_xml(pts: Option<u64>, p: &str) -> String {
        match pts {
            Some(t) => format!(r#"<{p}SpliceTime ptsTime="{t}"/>"#),
            None => format!("<{p}SpliceTime/>"),
        }
    }

    fn command_xml(c: &SpliceCommand<'_>, p: &str) -> String {
        match c {
            SpliceCommand::SpliceNull => format!("<{p}SpliceNull/>"),
            SpliceCommand::BandwidthReservation => format!("<{p}BandwidthReservation/>"),
            SpliceCommand::TimeSignal(t) => {
                format!("<{p}TimeSignal>{}</{p}TimeSignal>", time_xml(t.pts_time, p))
            }
            SpliceCommand::PrivateCommand {
                identifier,
                private_bytes,
            } => format!(
                r#"<{p}PrivateCommand identifier="{identifier}"><{p}PrivateBytes>{}</{p}PrivateBytes></{p}PrivateCommand>"#,
                to_hex(private_bytes)
            ),
            SpliceCommand::SpliceInsert(i) => insert_xml(i, p),
            other => panic!("not in the XML form: {other:?}"),
        }
    }

    fn insert_xml(i: &SpliceInsert, p: &str) -> String {
        let Some(d) = &i.detail else {
            return format!(
                r#"<{p}SpliceInsert spliceEventId="{}" spliceEventCancelIndicator="true"/>"#,
                i.splice_event_id
            );
        };
        let mut x = format!(
            r#"<{p}SpliceInsert spliceEventId="{}" spliceEventCancelIndicator="false" outOfNetworkIndicator="{}" spliceImmediateFlag="{}" eventIdComplianceFlag="{}" uniqueProgramId="{}" availNum="{}" availsExpected="{}">"#,
            i.splice_event_id,
            d.out_of_network_indicator,
            d.splice_immediate_flag,
            d.event_id_compliance_flag,
            d.unique_program_id,
            d.avail_num,
            d.avails_expected
        );
        if let Some(t) = d.splice_time {
            x.push_str(&format!(
                "<{p}Program>{}</{p}Program>",
                time_xml(t.pts_time, p)
            ));
        }
        for (tag, t) in &d.components {
            let time = t.map(|t| time_xml(t.pts_time, p)).unwrap_or_default();
            x.push_str(&format!(
                r#"<{p}Component componentTag="{tag}">{time}</{p}Component>"#
            ));
        }
        if let Some(b) = d.break_duration {
            x.push_str(&format!(
                r#"<{p}BreakDuration autoReturn="{}" duration="{}"/>"#,
                b.auto_return, b.duration
            ));
        }
        x.push_str(&format!("</{p}SpliceInsert>"));
        x
    }

    fn descriptor_xml(d: &SpliceDescriptor<'_>, p: &str) -> String {
        match &d.body {
            DescriptorBody::Avail { provider_avail_id } => {
                format!(r#"<{p}AvailDescriptor providerAvailId="{provider_avail_id}"/>"#)
            }
            DescriptorBody::Dtmf {
                preroll,
                dtmf_chars,
            } => format!(
                r#"<{p}DTMFDescriptor preroll="{preroll}" chars="{}"/>"#,
                std::str::from_utf8(dtmf_chars).unwrap()
            ),
            DescriptorBody::Time {
                tai_seconds,
                tai_ns,
                utc_offset,
            } => format!(
                r#"<{p}TimeDescriptor taiSeconds="{tai_seconds}" taiNs="{tai_ns}" utcOffset="{utc_offset}"/>"#
            ),
            DescriptorBody::Segmentation(s) => segmentation_xml(s, p),
            DescriptorBody::Other(_) => format!("<{p}AudioDescriptor/>"),
        }
    }

    fn segmentation_xml(s: &SegmentationDescriptor<'_>, p: &str) -> String {
        let Some(d) = &s.detail else {
            return format!(
                r#"<{p}SegmentationDescriptor segmentationEventId="{}" segmentationEventCancelIndicator="true" segmentationEventIdComplianceIndicator="{}"/>"#,
                s.segmentation_event_id, s.segmentation_event_id_compliance_indicator
            );
        };
        let mut x = format!(
            r#"<{p}SegmentationDescriptor segmentationEventId="{}" segmentationEventCancelIndicator="false" segmentationEventIdComplianceIndicator="{}" segmentationTypeId="{}" segmentNum="{}" segmentsExpected="{}""#,
            s.segmentation_event_id,
            s.segmentation_event_id_compliance_indicator,
            d.segmentation_type_id.0,
            d.segment_num,
            d.segments_expected
        );
        if let Some(dur) = d.segmentation_duration {
            x.push_str(&format!(r#" segmentationDuration="{dur}""#));
        }
        if let Some(n) = d.sub_segment_num {
            x.push_str(&format!(r#" subSegmentNum="{n}""#));
        }
        if let Some(n) = d.sub_segments_expected {
            x.push_str(&format!(r#" subSegmentsExpected="{n}""#));
        }
        x.push('>');
        if let Some(r) = d.restrictions {
            x.push_str(&format!(
                r#"<{p}DeliveryRestrictions webDeliveryAllowedFlag="{}" noRegionalBlackoutFlag="{}" archiveAllowedFlag="{}" deviceRestrictions="{}"/>"#,
                r.web_delivery_allowed_flag,
                r.no_regional_blackout_flag,
                r.archive_allowed_flag,
                r.device_restrictions
            ));
        }
        if d.segmentation_upid_type.0 != 0 || !d.segmentation_upid.is_empty() {
            x.push_str(&format!(
                r#"<{p}SegmentationUpid segmentationUpidType="{}" segmentationUpidFormat="hexbinary">{}</{p}SegmentationUpid>"#,
                d.segmentation_upid_type.0,
                to_hex(d.segmentation_upid)
            ));
        }
        for (tag, offset) in &d.components {
            x.push_str(&format!(
                r#"<{p}Component componentTag="{tag}" ptsOffset="{offset}"/>"#
            ));
        }
        x.push_str(&format!("</{p}SegmentationDescriptor>"));
        x
    }

    /// What the round trip must keep: everything but the bytes' own
    /// bookkeeping (lengths, CRC) and cw_index (meaningless unencrypted).
    fn semantic(s: &SpliceInfoSection<'_>) -> String {
        format!(
            "{} {} {} {} {:?} {:?} {:?}",
            s.sap_type,
            s.protocol_version,
            s.pts_adjustment,
            s.tier,
            s.splice_command_type,
            s.command,
            s.descriptors
        )
    }

    const NS_2016: &str = r#"xmlns:scte35="http://www.scte.org/schemas/35/2016""#;

    /// Binary → parse → XML → section_from_xml: the same bytes (for
    /// sections with reserved bits set and cw_index 0xFF, as the SCTE 35
    /// samples are) and the same decoded section (always).
    fn round_trip(b64: &str) -> Vec<u8> {
        let bytes = scte35::decode_base64(b64).unwrap();
        let s = parse(&bytes).unwrap();
        let xml = to_xml(&s, "scte35:", NS_2016);
        let back = section_from_xml(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
        let t = parse(&back).unwrap();
        assert!(t.crc_ok);
        assert_eq!(semantic(&s), semantic(&t), "{xml}");
        back
    }

    // SCTE 35 2023 §14 samples.
    const S14_1: &str =
        "/DA0AAAAAAAA///wBQb+cr0AUAAeAhxDVUVJSAAAjn/PAAGlmbAICAAAAAAsoKGKNAIAmsnRfg==";
    const S14_2: &str = "/DAvAAAAAAAA///wFAVIAACPf+/+c2nALv4AUsz1AAAAAAAKAAhDVUVJAAABNWLbowo=";
    const S14_3: &str = "/DAvAAAAAAAA///wBQb+dGKQoAAZAhdDVUVJSAAAjn+fCAgAAAAALKChijUCAKnMZ1g=";

    #[test]
    fn scte35_samples_round_trip_byte_exact() {
        for b64 in [S14_1, S14_2, S14_3] {
            assert_eq!(to_base64(&round_trip(b64)), b64);
        }
    }

    #[test]
    fn encoder_shapes_round_trip() {
        use crate::scte35::{encode, CueSpec, UpidType, PTS_MODULUS};
        let specs = [
            CueSpec::SpliceInsert {
                event_id: 9,
                out_of_network: true,
                pts_time: Some(PTS_MODULUS - 1),
                duration: Some(900_000),
                auto_return: true,
                unique_program_id: 1,
            },
            CueSpec::SpliceInsert {
                event_id: 10,
                out_of_network: false,
                pts_time: None,
                duration: None,
                auto_return: false,
                unique_program_id: 0,
            },
            CueSpec::SpliceInsertCancel { event_id: 9 },
            CueSpec::TimeSignal {
                pts_time: None,
                segmentation_event_id: 77,
                segmentation_type_id: SegmentationTypeId::PROVIDER_PLACEMENT_OPPORTUNITY_START,
                duration: Some((1 << 40) - 1),
                upid_type: UpidType::URI,
                upid: b"urn:x".to_vec(),
                segment_num: 1,
                segments_expected: 2,
            },
        ];
        for spec in &specs {
            round_trip(&to_base64(&encode(spec)));
        }
    }

    /// The SCTE 214-1 style DASH event for §14.1 (time_signal, provider
    /// placement opportunity start 0x34, duration, TI UPID), written as a
    /// packager would: prefixed, pretty-printed, commented.
    const PPO_START_XML: &str = r#"
        <!-- DASH Event payload -->
        <scte35:SpliceInfoSection xmlns:scte35="http://www.scte.org/schemas/35/2016"
            protocolVersion="0" ptsAdjustment="0" tier="4095">
          <scte35:TimeSignal>
            <scte35:SpliceTime ptsTime="1924989008"/>
          </scte35:TimeSignal>
          <scte35:SegmentationDescriptor segmentationEventId="1207959694"
              segmentationEventCancelIndicator="false" segmentationTypeId="52"
              segmentationDuration="27630000" segmentNum="2" segmentsExpected="0">
            <scte35:DeliveryRestrictions webDeliveryAllowedFlag="false"
                noRegionalBlackoutFlag="true" archiveAllowedFlag="true" deviceRestrictions="3"/>
            <!-- TI -->
            <scte35:SegmentationUpid segmentationUpidType="8" segmentationUpidFormat="hexbinary">
              000000002CA0A18A
            </scte35:SegmentationUpid>
          </scte35:SegmentationDescriptor>
        </scte35:SpliceInfoSection>"#;

    #[test]
    fn placement_opportunity_start_is_the_14_1_sample() {
        assert_eq!(to_base64(&section_from_xml(PPO_START_XML).unwrap()), S14_1);
    }

    #[test]
    fn namespace_spellings_agree() {
        let body = |p: &str| {
            format!(
                r#"<{p}TimeSignal><{p}SpliceTime ptsTime="1952616608"/></{p}TimeSignal><{p}SegmentationDescriptor segmentationEventId="1207959694" segmentationTypeId="53" segmentNum="2" segmentsExpected="0"><{p}DeliveryRestrictions webDeliveryAllowedFlag="true" noRegionalBlackoutFlag="true" archiveAllowedFlag="true" deviceRestrictions="3"/><{p}SegmentationUpid segmentationUpidType="8">000000002ca0a18a</{p}SegmentationUpid></{p}SegmentationDescriptor>"#
            )
        };
        let variants = [
            format!(
                r#"<scte35:SpliceInfoSection xmlns:scte35="http://www.scte.org/schemas/35/2016" tier="4095">{}</scte35:SpliceInfoSection>"#,
                body("scte35:")
            ),
            format!(
                r#"<s:SpliceInfoSection xmlns:s="http://www.scte.org/schemas/35/2014SCTE35.xsd">{}</s:SpliceInfoSection>"#,
                body("s:")
            ),
            format!(
                r#"<SpliceInfoSection xmlns="http://www.scte.org/schemas/35/2016">{}</SpliceInfoSection>"#,
                body("")
            ),
            format!(
                r#"<SpliceInfoSection xmlns="https://scte.org/schemas/35">{}</SpliceInfoSection>"#,
                body("")
            ),
            // No namespace at all, and a prefix declared on the MPD root.
            format!("<SpliceInfoSection>{}</SpliceInfoSection>", body("")),
            format!(
                "<scte35:SpliceInfoSection>{}</scte35:SpliceInfoSection>",
                body("scte35:")
            ),
            // Inside its MPD Event, with attributes prefixed as some write them.
            format!(
                r#"<Event xmlns="urn:mpeg:dash:schema:mpd:2011" presentationTime="0"><scte35:SpliceInfoSection xmlns:scte35="http://www.scte.org/schemas/35/2016" scte35:tier="4095">{}</scte35:SpliceInfoSection></Event>"#,
                body("scte35:")
            ),
        ];
        for v in &variants {
            let got = section_from_xml(v).unwrap_or_else(|e| panic!("{e}: {v}"));
            assert_eq!(to_base64(&got), S14_3, "{v}");
        }
    }

    #[test]
    fn signal_binary_is_decoded_as_is() {
        for xml in [
            format!(
                r#"<scte35:Signal xmlns:scte35="http://www.scte.org/schemas/35/2016"><scte35:Binary>{S14_2}</scte35:Binary></scte35:Signal>"#
            ),
            // threefive's spelling: default namespace, undeclared prefix.
            format!(
                r#"<scte35:Signal xmlns="https://scte.org/schemas/35"><scte35:Binary>{S14_2}</scte35:Binary></scte35:Signal>"#
            ),
            // Wrapped, with a comment inside the base64.
            format!(
                "<Signal>\n  <Binary signalType=\"SpliceInfoSection\">\n    {}\n    <!-- half -->{}\n  </Binary>\n</Signal>",
                &S14_2[..20],
                &S14_2[20..]
            ),
        ] {
            assert_eq!(to_base64(&section_from_xml(&xml).unwrap()), S14_2, "{xml}");
        }
        // A Signal may carry the section as XML instead.
        let xml = format!(
            "<Signal>{}</Signal>",
            to_xml(
                &parse(&scte35::decode_base64(S14_2).unwrap()).unwrap(),
                "",
                ""
            )
        );
        assert_eq!(to_base64(&section_from_xml(&xml).unwrap()), S14_2);
    }

    #[test]
    fn splice_insert_out_with_duration() {
        let xml = r#"<scte35:SpliceInfoSection xmlns:scte35="http://www.scte.org/schemas/35/2016" ptsAdjustment="0" tier="4095">
            <scte35:SpliceInsert spliceEventId="1207959695" spliceEventCancelIndicator="false"
                outOfNetworkIndicator="true" spliceImmediateFlag="false" uniqueProgramId="0"
                availNum="0" availsExpected="0">
              <scte35:Program><scte35:SpliceTime ptsTime="1936310318"/></scte35:Program>
              <scte35:BreakDuration autoReturn="true" duration="5426421"/>
            </scte35:SpliceInsert>
            <scte35:AvailDescriptor providerAvailId="309"/>
          </scte35:SpliceInfoSection>"#;
        assert_eq!(to_base64(&section_from_xml(xml).unwrap()), S14_2);
    }

    #[test]
    fn splice_null_cancel_and_immediate() {
        let null =
            section_from_xml("<SpliceInfoSection><SpliceNull/></SpliceInfoSection>").unwrap();
        let s = parse(&null).unwrap();
        assert!(s.crc_ok);
        assert_eq!(s.command, SpliceCommand::SpliceNull);
        assert_eq!((s.tier, s.sap_type, s.pts_adjustment), (0xFFF, 3, 0));

        let cancel = section_from_xml(
            r#"<SpliceInfoSection><SpliceInsert spliceEventId="9" spliceEventCancelIndicator="1"/></SpliceInfoSection>"#,
        )
        .unwrap();
        match parse(&cancel).unwrap().command {
            SpliceCommand::SpliceInsert(i) => {
                assert_eq!(i.splice_event_id, 9);
                assert!(i.splice_event_cancel_indicator);
                assert_eq!(i.detail, None);
            }
            other => panic!("{other:?}"),
        }

        let cancel_seg = section_from_xml(
            r#"<SpliceInfoSection><TimeSignal/><SegmentationDescriptor segmentationEventId="5" segmentationEventCancelIndicator="true"/></SpliceInfoSection>"#,
        )
        .unwrap();
        let s = parse(&cancel_seg).unwrap();
        assert_eq!(
            s.command,
            SpliceCommand::TimeSignal(scte35::SpliceTime { pts_time: None })
        );
        let seg = s.segmentation_descriptors().next().unwrap();
        assert!(seg.segmentation_event_cancel_indicator);
        assert_eq!(seg.detail, None);

        // spliceImmediateFlag wins over a SpliceTime (the syntax has none).
        let immediate = section_from_xml(
            r#"<SpliceInfoSection><SpliceInsert spliceEventId="1" outOfNetworkIndicator="0" spliceImmediateFlag="true"><Program><SpliceTime ptsTime="5"/></Program></SpliceInsert></SpliceInfoSection>"#,
        )
        .unwrap();
        match parse(&immediate).unwrap().command {
            SpliceCommand::SpliceInsert(i) => {
                let d = i.detail.unwrap();
                assert!(d.splice_immediate_flag && d.program_splice_flag);
                assert_eq!(d.splice_time, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn upid_formats_and_mid() {
        let seg = |upids: &str| {
            let xml = format!(
                r#"<SpliceInfoSection><TimeSignal/><SegmentationDescriptor segmentationEventId="1" segmentationTypeId="16">{upids}</SegmentationDescriptor></SpliceInfoSection>"#
            );
            let bytes = section_from_xml(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
            let s = parse(&bytes).unwrap();
            let d = s
                .segmentation_descriptors()
                .next()
                .unwrap()
                .detail
                .clone()
                .unwrap();
            (d.segmentation_upid_type.0, d.segmentation_upid.to_vec())
        };
        assert_eq!(seg(""), (0, vec![]));
        assert_eq!(
            seg(
                r#"<SegmentationUpid segmentationUpidType="3" segmentationUpidFormat="text"> ABCD0123456H </SegmentationUpid>"#
            ),
            (3, b"ABCD0123456H".to_vec())
        );
        assert_eq!(
            seg(
                r#"<SegmentationUpid segmentationUpidType="15" segmentationUpidFormat="text">urn:a?b=1&amp;c=&#x32;</SegmentationUpid>"#
            ),
            (15, b"urn:a?b=1&c=2".to_vec())
        );
        assert_eq!(
            seg(
                r#"<SegmentationUpid segmentationUpidType="14" segmentationUpidFormat="hexBinary">012345</SegmentationUpid>"#
            ),
            (14, vec![1, 0x23, 0x45])
        );
        assert_eq!(
            seg(
                r#"<SegmentationUpid segmentationUpidType="9" segmentationUpidFormat="base-64">QUJD</SegmentationUpid>"#
            ),
            (9, b"ABC".to_vec())
        );
        assert_eq!(
            seg(
                r#"<SegmentationUpid segmentationUpidType="12" formatIdentifier="1331055705">49</SegmentationUpid>"#
            ),
            (12, b"OVLYI".to_vec())
        );
        assert_eq!(
            seg(
                r#"<SegmentationUpid segmentationUpidType="12" formatIdentifier="1331055705">4f564c5949</SegmentationUpid>"#
            ),
            (12, b"OVLYI".to_vec())
        );
        assert_eq!(
            seg(
                r#"<SegmentationUpid segmentationUpidType="8">0102030405060708</SegmentationUpid><SegmentationUpid segmentationUpidType="3" segmentationUpidFormat="text">AB</SegmentationUpid>"#
            ),
            (13, vec![8, 8, 1, 2, 3, 4, 5, 6, 7, 8, 3, 2, b'A', b'B'])
        );
    }

    #[test]
    fn components_and_other_descriptors() {
        let xml = r#"<SpliceInfoSection ptsAdjustment="8589934591" protocolVersion="0" tier="12" sapType="1">
            <SpliceInsert spliceEventId="4294967295" outOfNetworkIndicator="true" eventIdComplianceFlag="false" uniqueProgramId="65535" availNum="1" availsExpected="2">
              <Component componentTag="1"><SpliceTime ptsTime="100"/></Component>
              <Component componentTag="2"><SpliceTime/></Component>
            </SpliceInsert>
            <DTMFDescriptor preroll="177" chars="121*"/>
            <TimeDescriptor taiSeconds="281474976710655" taiNs="999999999" utcOffset="37"/>
            <SegmentationDescriptor segmentationEventId="3" segmentationTypeId="48" subSegmentNum="1" subSegmentsExpected="4">
              <Component componentTag="7" ptsOffset="8589934591"/>
            </SegmentationDescriptor>
            <AudioDescriptor/><UnknownThing a="b"><Nested/></UnknownThing>
          </SpliceInfoSection>"#;
        let bytes = section_from_xml(xml).unwrap();
        let s = parse(&bytes).unwrap();
        assert!(s.crc_ok);
        assert_eq!(
            (s.pts_adjustment, s.tier, s.sap_type),
            ((1 << 33) - 1, 12, 1)
        );
        // And back through the writer: the same section.
        let again = section_from_xml(&to_xml(&s, "", "")).unwrap();
        assert_eq!(semantic(&parse(&again).unwrap()), semantic(&s));
        assert_eq!(s.descriptors.len(), 3);
        let seg = s
            .segmentation_descriptors()
            .next()
            .unwrap()
            .detail
            .clone()
            .unwrap();
        assert_eq!(seg.components, vec![(7, (1 << 33) - 1)]);
        assert_eq!(
            (seg.sub_segment_num, seg.sub_segments_expected),
            (Some(1), Some(4))
        );
        match &s.command {
            SpliceCommand::SpliceInsert(i) => {
                let d = i.detail.as_ref().unwrap();
                assert!(!d.program_splice_flag && !d.event_id_compliance_flag);
                assert_eq!(d.components.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn private_command_and_bandwidth_reservation() {
        for xml in [
            r#"<SpliceInfoSection><PrivateCommand identifier="1129661769"><PrivateBytes>0a0b</PrivateBytes></PrivateCommand></SpliceInfoSection>"#,
            "<SpliceInfoSection><BandwidthReservation/></SpliceInfoSection>",
        ] {
            let bytes = section_from_xml(xml).unwrap();
            let s = parse(&bytes).unwrap();
            assert!(s.crc_ok);
            assert_eq!(
                semantic(&parse(&section_from_xml(&to_xml(&s, "", "")).unwrap()).unwrap()),
                semantic(&s)
            );
        }
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_problem() {
        let err = |xml: &str| section_from_xml(xml).unwrap_err();
        assert_eq!(
            err(
                r#"<SpliceInfoSection><SpliceInsert outOfNetworkIndicator="true"/></SpliceInfoSection>"#
            ),
            XmlError::MissingAttribute {
                element: "SpliceInsert".into(),
                attribute: "spliceEventId"
            }
        );
        assert_eq!(
            err(r#"<SpliceInfoSection><SpliceInsert spliceEventId="1"/></SpliceInfoSection>"#),
            XmlError::MissingAttribute {
                element: "SpliceInsert".into(),
                attribute: "outOfNetworkIndicator"
            }
        );
        assert!(matches!(
            err(
                r#"<SpliceInfoSection><TimeSignal><SpliceTime ptsTime="12x"/></TimeSignal></SpliceInfoSection>"#
            ),
            XmlError::BadValue {
                attribute: "ptsTime",
                ..
            }
        ));
        assert!(matches!(
            err(
                r#"<SpliceInfoSection><TimeSignal><SpliceTime ptsTime="8589934592"/></TimeSignal></SpliceInfoSection>"#
            ),
            XmlError::OutOfRange {
                attribute: "ptsTime",
                bits: 33,
                ..
            }
        ));
        assert!(matches!(
            err(
                r#"<SpliceInfoSection><SpliceInsert spliceEventId="1" outOfNetworkIndicator="yes"/></SpliceInfoSection>"#
            ),
            XmlError::BadValue {
                attribute: "outOfNetworkIndicator",
                ..
            }
        ));
        assert!(matches!(
            err(r#"<SpliceInfoSection tier="4096"><SpliceNull/></SpliceInfoSection>"#),
            XmlError::OutOfRange {
                attribute: "tier",
                ..
            }
        ));
        assert!(matches!(
            err(
                r#"<SpliceInfoSection><TimeSignal/><SegmentationDescriptor segmentationEventId="1"/></SpliceInfoSection>"#
            ),
            XmlError::MissingAttribute {
                attribute: "segmentationTypeId",
                ..
            }
        ));
        assert!(matches!(
            err(
                r#"<SpliceInfoSection><TimeSignal/><SegmentationDescriptor segmentationEventId="1" segmentationTypeId="16"><SegmentationUpid segmentationUpidType="8">0g</SegmentationUpid></SegmentationDescriptor></SpliceInfoSection>"#
            ),
            XmlError::BadContent { .. }
        ));
        assert!(matches!(
            err(
                r#"<SpliceInfoSection><TimeSignal/><SegmentationDescriptor segmentationEventId="1" segmentationTypeId="16"><SegmentationUpid segmentationUpidType="8" segmentationUpidFormat="isan">x</SegmentationUpid></SegmentationDescriptor></SpliceInfoSection>"#
            ),
            XmlError::BadValue {
                attribute: "segmentationUpidFormat",
                ..
            }
        ));
        assert!(matches!(
            err(
                r#"<SpliceInfoSection><TimeSignal/><DTMFDescriptor preroll="1" chars="12345678"/></SpliceInfoSection>"#
            ),
            XmlError::TooMany { .. }
        ));
        let long = "ab".repeat(256);
        assert!(matches!(
            err(&format!(
                r#"<SpliceInfoSection><TimeSignal/><SegmentationDescriptor segmentationEventId="1" segmentationTypeId="16"><SegmentationUpid segmentationUpidType="1">{long}</SegmentationUpid></SegmentationDescriptor></SpliceInfoSection>"#
            )),
            XmlError::TooMany { .. }
        ));
        let many = r#"<AvailDescriptor providerAvailId="1"/>"#.repeat(700);
        assert!(matches!(
            err(&format!(
                "<SpliceInfoSection><SpliceNull/>{many}</SpliceInfoSection>"
            )),
            XmlError::TooLarge {
                what: "splice_info_section",
                ..
            }
        ));
        assert_eq!(err("<SpliceInfoSection/>"), XmlError::NoCommand);
        assert!(matches!(
            err("<SpliceInfoSection><SpliceNull/><TimeSignal/></SpliceInfoSection>"),
            XmlError::TwoCommands { .. }
        ));
        assert!(matches!(
            err("<SpliceInfoSection><SpliceSchedule/></SpliceInfoSection>"),
            XmlError::Unsupported { .. }
        ));
        assert!(matches!(
            err(
                r#"<SpliceInfoSection><EncryptedPacket encryptionAlgorithm="1" cwIndex="0"/><SpliceNull/></SpliceInfoSection>"#
            ),
            XmlError::Unsupported { .. }
        ));
        assert_eq!(err("<Signal/>"), XmlError::EmptySignal);
        assert_eq!(
            err("<Signal><Binary></Binary></Signal>"),
            XmlError::Binary(Scte35Error::Empty)
        );
        assert!(matches!(
            err("<Signal><Binary>not base64!</Binary></Signal>"),
            XmlError::Binary(Scte35Error::Base64(_))
        ));
        // Not SCTE 35, or not XML at all.
        assert_eq!(err("<MPD/>"), XmlError::NoSignal);
        assert_eq!(err(""), XmlError::NoSignal);
        assert_eq!(err("/DAvAAAA"), XmlError::NoSignal);
        assert_eq!(
            err(
                r#"<x:SpliceInfoSection xmlns:x="urn:other"><x:SpliceNull/></x:SpliceInfoSection>"#
            ),
            XmlError::NoSignal
        );
        for bad in [
            "<SpliceInfoSection><SpliceNull/>",
            "<SpliceInfoSection></Signal>",
            "<<<",
            "<SpliceInfoSection tier=4095><SpliceNull/></SpliceInfoSection>",
            r#"<SpliceInfoSection tier="1" tier="2"><SpliceNull/></SpliceInfoSection>"#,
            "<Signal><Binary>&bogus;</Binary></Signal>",
        ] {
            assert!(
                matches!(err(bad), XmlError::Xml { .. }),
                "{bad}: {:?}",
                err(bad)
            );
        }
        assert!(matches!(err(&"<a>".repeat(40)), XmlError::TooDeep));
        assert!(matches!(
            err(&" ".repeat(MAX_XML_BYTES + 1)),
            XmlError::TooLong { .. }
        ));
        // Messages name the element and attribute.
        let msg = err(r#"<SpliceInfoSection><TimeSignal/><AvailDescriptor/></SpliceInfoSection>"#)
            .to_string();
        assert_eq!(msg, "AvailDescriptor has no providerAvailId attribute");
    }

    use proptest::prelude::*;

    fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }

    fn pts() -> impl Strategy<Value = u64> {
        0..(1u64 << 33)
    }

    fn splice_time_s() -> impl Strategy<Value = scte35::SpliceTime> {
        proptest::option::of(pts()).prop_map(|pts_time| scte35::SpliceTime { pts_time })
    }

    fn insert_s() -> impl Strategy<Value = SpliceCommand<'static>> {
        let detail = (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![
                splice_time_s().prop_map(|t| (Some(t), vec![])),
                proptest::collection::vec((any::<u8>(), splice_time_s()), 1..4)
                    .prop_map(|c| (None, c)),
            ],
            proptest::option::of((any::<bool>(), pts())),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
        )
            .prop_map(
                |(out, immediate, compliant, (time, comps), bd, upid, num, exp)| {
                    let program = comps.is_empty();
                    scte35::SpliceInsertDetail {
                        out_of_network_indicator: out,
                        program_splice_flag: program,
                        duration_flag: bd.is_some(),
                        splice_immediate_flag: immediate,
                        event_id_compliance_flag: compliant,
                        splice_time: if immediate { None } else { time },
                        components: comps
                            .into_iter()
                            .map(|(tag, t)| (tag, (!immediate).then_some(t)))
                            .collect(),
                        break_duration: bd.map(|(auto_return, duration)| scte35::BreakDuration {
                            auto_return,
                            duration,
                        }),
                        unique_program_id: upid,
                        avail_num: num,
                        avails_expected: exp,
                    }
                },
            );
        (any::<u32>(), proptest::option::of(detail)).prop_map(|(id, detail)| {
            SpliceCommand::SpliceInsert(SpliceInsert {
                splice_event_id: id,
                splice_event_cancel_indicator: detail.is_none(),
                detail,
            })
        })
    }

    fn segmentation_s() -> impl Strategy<Value = SpliceDescriptor<'static>> {
        let detail = (
            proptest::option::of((any::<bool>(), any::<bool>(), any::<bool>(), 0u8..4)),
            proptest::collection::vec((any::<u8>(), pts()), 0..3),
            proptest::option::of(0..(1u64 << 40)),
            (1u8..=255, proptest::collection::vec(any::<u8>(), 1..40)),
            any::<u8>(),
            (any::<u8>(), any::<u8>()),
            proptest::option::of((any::<u8>(), any::<u8>())),
        )
            .prop_map(|(r, comps, dur, (ut, upid), type_id, (num, exp), sub)| {
                let type_id = SegmentationTypeId(type_id);
                let sub = sub.filter(|_| type_id.has_sub_segments());
                scte35::SegmentationDetail {
                    program_segmentation_flag: comps.is_empty(),
                    segmentation_duration_flag: dur.is_some(),
                    delivery_not_restricted_flag: r.is_none(),
                    restrictions: r.map(|(w, n, a, d)| scte35::DeliveryRestrictions {
                        web_delivery_allowed_flag: w,
                        no_regional_blackout_flag: n,
                        archive_allowed_flag: a,
                        device_restrictions: d,
                    }),
                    components: comps,
                    segmentation_duration: dur,
                    segmentation_upid_type: scte35::UpidType(ut),
                    segmentation_upid: leak(upid),
                    segmentation_type_id: type_id,
                    segment_num: num,
                    segments_expected: exp,
                    sub_segment_num: sub.map(|s| s.0),
                    sub_segments_expected: sub.map(|s| s.1),
                }
            });
        (any::<u32>(), any::<bool>(), proptest::option::of(detail)).prop_map(
            |(id, compliant, detail)| SpliceDescriptor {
                tag: 2,
                identifier: CUEI,
                body: DescriptorBody::Segmentation(SegmentationDescriptor {
                    segmentation_event_id: id,
                    segmentation_event_cancel_indicator: detail.is_none(),
                    segmentation_event_id_compliance_indicator: compliant,
                    detail,
                }),
            },
        )
    }

    fn descriptor_s() -> impl Strategy<Value = SpliceDescriptor<'static>> {
        let body = prop_oneof![
            any::<u32>()
                .prop_map(|provider_avail_id| (0, DescriptorBody::Avail { provider_avail_id })),
            (any::<u8>(), "[0-9*#]{0,7}").prop_map(|(preroll, chars)| (
                1,
                DescriptorBody::Dtmf {
                    preroll,
                    dtmf_chars: leak(chars.into_bytes())
                }
            )),
            (0..(1u64 << 48), any::<u32>(), any::<u16>()).prop_map(|(s, ns, off)| (
                3,
                DescriptorBody::Time {
                    tai_seconds: s,
                    tai_ns: ns,
                    utc_offset: off
                }
            )),
        ]
        .prop_map(|(tag, body)| SpliceDescriptor {
            tag,
            identifier: CUEI,
            body,
        });
        prop_oneof![body, segmentation_s()]
    }

    fn section_s() -> impl Strategy<Value = SpliceInfoSection<'static>> {
        let command = prop_oneof![
            Just(SpliceCommand::SpliceNull),
            Just(SpliceCommand::BandwidthReservation),
            splice_time_s().prop_map(SpliceCommand::TimeSignal),
            insert_s(),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..20)).prop_map(
                |(identifier, b)| SpliceCommand::PrivateCommand {
                    identifier,
                    private_bytes: leak(b)
                }
            ),
        ];
        (
            0u8..4,
            any::<u8>(),
            pts(),
            0u16..4096,
            command,
            proptest::collection::vec(descriptor_s(), 0..4),
        )
            .prop_map(|(sap, version, adj, tier, command, descriptors)| {
                let splice_command_type = match &command {
                    SpliceCommand::SpliceNull => SpliceCommandType::SPLICE_NULL,
                    SpliceCommand::BandwidthReservation => SpliceCommandType::BANDWIDTH_RESERVATION,
                    SpliceCommand::TimeSignal(_) => SpliceCommandType::TIME_SIGNAL,
                    SpliceCommand::SpliceInsert(_) => SpliceCommandType::SPLICE_INSERT,
                    _ => SpliceCommandType::PRIVATE_COMMAND,
                };
                SpliceInfoSection {
                    table_id: TABLE_ID,
                    section_syntax_indicator: false,
                    private_indicator: false,
                    sap_type: sap,
                    section_length: 0,
                    protocol_version: version,
                    encrypted_packet: false,
                    encryption_algorithm: 0,
                    pts_adjustment: adj,
                    cw_index: 0xFF,
                    tier,
                    splice_command_length: 0,
                    splice_command_type,
                    command,
                    descriptors,
                    crc_32: 0,
                    crc_ok: true,
                }
            })
    }

    proptest! {
        /// Any section the XML form can spell: XML → binary → parse gives
        /// it back, and the JSON view is the same as for its binary.
        #[test]
        fn any_section_round_trips(s in section_s(), prefixed in any::<bool>()) {
            let (p, ns) = if prefixed { ("scte35:", NS_2016) } else { ("", "") };
            let xml = to_xml(&s, p, ns);
            let bytes = section_from_xml(&xml).map_err(|e| TestCaseError::fail(format!("{e}: {xml}")))?;
            let back = parse(&bytes).map_err(|e| TestCaseError::fail(format!("{e}: {xml}")))?;
            prop_assert!(back.crc_ok);
            prop_assert_eq!(semantic(&back), semantic(&s));
            // Binary → XML → binary is then the identity.
            let again = section_from_xml(&to_xml(&back, p, ns)).unwrap();
            prop_assert_eq!(again, bytes);
        }

        /// Arbitrary text and mangled documents: an error or a section,
        /// never a panic.
        #[test]
        fn never_panics(junk in "\\PC{0,200}", cut in 0usize..2000) {
            let _ = section_from_xml(&junk);
            let doc = PPO_START_XML;
            let cut = cut.min(doc.len());
            if let Some(head) = doc.get(..cut) {
                let _ = section_from_xml(head);
                let _ = section_from_xml(&format!("{head}{junk}"));
            }
        }
    }
}
