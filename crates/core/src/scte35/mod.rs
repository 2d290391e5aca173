//! SCTE 35 (2023) `splice_info_section` decoder and encoder.
//!
//! Zero-copy: the decoded section borrows from the input bytes. Every read is
//! bounds-checked against the enclosing length (section, command, descriptor
//! loop, descriptor), so malformed input yields a [`Scte35Error`] naming the
//! field and the lengths, never a panic; nothing is allocated from a length
//! read off the wire (a section is at most 4098 bytes by construction).
//!
//! Deliberately not done here: policy (which segmentation types open a break
//! lives in `cues`), JSON (see `scte35_json`), logging.

pub mod cues;
pub mod inband;
pub mod json;
#[cfg(any(feature = "vast", feature = "dash"))]
pub mod xml;

use thiserror::Error;

/// 2^33: PTS values are 33-bit and wrap (SCTE 35 §9.6, ISO 13818-1).
pub const PTS_MODULUS: u64 = 1 << 33;
/// section_length is 12 bits, so a section is at most 4095 + 3 bytes.
pub const MAX_SECTION_BYTES: usize = 4095 + 3;
/// table_id of a splice_info_section (SCTE 35 Table 5).
pub const TABLE_ID: u8 = 0xFC;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Scte35Error {
    #[error("empty input")]
    Empty,
    #[error("invalid base64: {0}")]
    Base64(String),
    #[error("invalid hex: {0}")]
    Hex(String),
    #[error("section too long: {len} bytes, a splice_info_section is at most {MAX_SECTION_BYTES}")]
    TooLong { len: usize },
    #[error("table_id is 0x{found:02x}, expected 0xfc")]
    TableId { found: u8 },
    #[error("byte length {actual} != section_length {section_length} + 3")]
    SectionLength {
        section_length: usize,
        actual: usize,
    },
    #[error("{field} runs past the end of {within}: needs {needed} bits at bit {at}, {within} has {available} bits")]
    Truncated {
        field: &'static str,
        within: &'static str,
        at: usize,
        needed: usize,
        available: usize,
    },
    #[error("splice_command_length {declared} but {command} uses {used} bytes")]
    CommandLength {
        command: &'static str,
        declared: usize,
        used: usize,
    },
    #[error("splice_descriptor tag {tag} has descriptor_length {length} < 4 (identifier)")]
    DescriptorTooShort { tag: u8, length: usize },
    #[error("descriptor_loop_length {declared} runs past the section: {available} bytes remain before CRC_32")]
    DescriptorLoop { declared: usize, available: usize },
    #[error("{count} trailing bytes after the descriptor loop (expected only CRC_32)")]
    TrailingBytes { count: usize },
    #[error("encrypted_packet=1 (encryption_algorithm {algorithm}): encrypted sections cannot be decoded without the control word")]
    Encrypted { algorithm: u8 },
}

/// splice_command_type, an open code space (SCTE 35 Table 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpliceCommandType(pub u8);
impl SpliceCommandType {
    pub const SPLICE_NULL: Self = Self(0x00);
    pub const SPLICE_SCHEDULE: Self = Self(0x04);
    pub const SPLICE_INSERT: Self = Self(0x05);
    pub const TIME_SIGNAL: Self = Self(0x06);
    pub const BANDWIDTH_RESERVATION: Self = Self(0x07);
    pub const PRIVATE_COMMAND: Self = Self(0xFF);
}

/// segmentation_type_id, an open code space (SCTE 35 Table 23).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentationTypeId(pub u8);
impl SegmentationTypeId {
    pub const NOT_INDICATED: Self = Self(0x00);
    pub const CONTENT_IDENTIFICATION: Self = Self(0x01);
    pub const PROGRAM_START: Self = Self(0x10);
    pub const PROGRAM_END: Self = Self(0x11);
    pub const CHAPTER_START: Self = Self(0x20);
    pub const CHAPTER_END: Self = Self(0x21);
    pub const BREAK_START: Self = Self(0x22);
    pub const BREAK_END: Self = Self(0x23);
    pub const PROVIDER_ADVERTISEMENT_START: Self = Self(0x30);
    pub const PROVIDER_ADVERTISEMENT_END: Self = Self(0x31);
    pub const DISTRIBUTOR_ADVERTISEMENT_START: Self = Self(0x32);
    pub const DISTRIBUTOR_ADVERTISEMENT_END: Self = Self(0x33);
    pub const PROVIDER_PLACEMENT_OPPORTUNITY_START: Self = Self(0x34);
    pub const PROVIDER_PLACEMENT_OPPORTUNITY_END: Self = Self(0x35);
    pub const DISTRIBUTOR_PLACEMENT_OPPORTUNITY_START: Self = Self(0x36);
    pub const DISTRIBUTOR_PLACEMENT_OPPORTUNITY_END: Self = Self(0x37);
    pub const PROVIDER_OVERLAY_PLACEMENT_OPPORTUNITY_START: Self = Self(0x38);
    pub const DISTRIBUTOR_OVERLAY_PLACEMENT_OPPORTUNITY_START: Self = Self(0x3A);
    pub const PROVIDER_PROMO_START: Self = Self(0x44);
    pub const DISTRIBUTOR_PROMO_START: Self = Self(0x46);

    /// Types whose descriptor carries sub_segment_num/sub_segments_expected
    /// (SCTE 35 2023 §10.3.3.1).
    pub fn has_sub_segments(self) -> bool {
        matches!(
            self.0,
            0x30 | 0x32 | 0x34 | 0x36 | 0x38 | 0x3A | 0x44 | 0x46
        )
    }
}

/// segmentation_upid_type, an open code space (SCTE 35 Table 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpidType(pub u8);
impl UpidType {
    pub const NOT_USED: Self = Self(0x00);
    pub const USER_DEFINED: Self = Self(0x01);
    pub const ISCI: Self = Self(0x02);
    pub const AD_ID: Self = Self(0x03);
    pub const UMID: Self = Self(0x04);
    pub const ISAN_DEPRECATED: Self = Self(0x05);
    pub const ISAN: Self = Self(0x06);
    pub const TID: Self = Self(0x07);
    pub const TI: Self = Self(0x08);
    pub const ADI: Self = Self(0x09);
    pub const EIDR: Self = Self(0x0A);
    pub const ATSC_CONTENT_IDENTIFIER: Self = Self(0x0B);
    pub const MPU: Self = Self(0x0C);
    pub const MID: Self = Self(0x0D);
    pub const ADS_INFORMATION: Self = Self(0x0E);
    pub const URI: Self = Self(0x0F);
    pub const UUID: Self = Self(0x10);
    pub const SCR: Self = Self(0x11);
}

/// A decoded segmentation UPID (SCTE 35 Table 22). Unknown or malformed
/// typed payloads fall back to `Raw`, so decoding a UPID never fails once its
/// length fits the descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upid<'a> {
    None,
    /// Text UPIDs: URI, ADI, ISCI, Ad-ID, TID, MPU, ADS information, SCR.
    Text(UpidType, &'a str),
    /// 64-bit UPIDs: TI, AiringID.
    Int(UpidType, u64),
    Uuid([u8; 16]),
    Umid(&'a [u8; 32]),
    Eidr {
        sub_prefix: u16,
        suffix: &'a [u8],
    },
    /// MID: a list of nested UPIDs.
    Mid(Vec<Upid<'a>>),
    Raw(UpidType, &'a [u8]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceInfoSection<'a> {
    pub table_id: u8,
    pub section_syntax_indicator: bool,
    pub private_indicator: bool,
    pub sap_type: u8,
    pub section_length: u16,
    pub protocol_version: u8,
    pub encrypted_packet: bool,
    pub encryption_algorithm: u8,
    /// Raw 33-bit pts_adjustment; add it with [`pts_add`].
    pub pts_adjustment: u64,
    pub cw_index: u8,
    pub tier: u16,
    pub splice_command_length: u16,
    pub splice_command_type: SpliceCommandType,
    pub command: SpliceCommand<'a>,
    pub descriptors: Vec<SpliceDescriptor<'a>>,
    pub crc_32: u32,
    /// Whether CRC_32 matches the CRC-32/MPEG-2 of the section. A mismatch is
    /// reported, not fatal: the caller decides policy.
    pub crc_ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpliceCommand<'a> {
    SpliceNull,
    SpliceSchedule(Vec<ScheduleEvent>),
    SpliceInsert(SpliceInsert),
    TimeSignal(SpliceTime),
    BandwidthReservation,
    PrivateCommand {
        identifier: u32,
        private_bytes: &'a [u8],
    },
    /// A reserved command type: kept as raw bytes.
    Unknown(&'a [u8]),
}

/// splice_time() (SCTE 35 §9.4.1): `None` when time_specified_flag = 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceTime {
    pub pts_time: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakDuration {
    pub auto_return: bool,
    pub duration: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceInsert {
    pub splice_event_id: u32,
    pub splice_event_cancel_indicator: bool,
    /// Absent when the event is cancelled.
    pub detail: Option<SpliceInsertDetail>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceInsertDetail {
    pub out_of_network_indicator: bool,
    pub program_splice_flag: bool,
    pub duration_flag: bool,
    pub splice_immediate_flag: bool,
    pub event_id_compliance_flag: bool,
    /// Program mode: the splice_time (None when immediate).
    pub splice_time: Option<SpliceTime>,
    /// Component mode: (component_tag, splice_time unless immediate).
    pub components: Vec<(u8, Option<SpliceTime>)>,
    pub break_duration: Option<BreakDuration>,
    pub unique_program_id: u16,
    pub avail_num: u8,
    pub avails_expected: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEvent {
    pub splice_event_id: u32,
    pub splice_event_cancel_indicator: bool,
    pub out_of_network_indicator: bool,
    pub program_splice_flag: bool,
    pub utc_splice_time: Option<u32>,
    pub components: Vec<(u8, u32)>,
    pub break_duration: Option<BreakDuration>,
    pub unique_program_id: u16,
    pub avail_num: u8,
    pub avails_expected: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceDescriptor<'a> {
    pub tag: u8,
    pub identifier: u32,
    pub body: DescriptorBody<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescriptorBody<'a> {
    Avail {
        provider_avail_id: u32,
    },
    Dtmf {
        preroll: u8,
        dtmf_chars: &'a [u8],
    },
    Segmentation(SegmentationDescriptor<'a>),
    Time {
        tai_seconds: u64,
        tai_ns: u32,
        utc_offset: u16,
    },
    /// Unknown tags (and the audio descriptor) kept as raw bytes after the
    /// identifier.
    Other(&'a [u8]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentationDescriptor<'a> {
    pub segmentation_event_id: u32,
    pub segmentation_event_cancel_indicator: bool,
    pub segmentation_event_id_compliance_indicator: bool,
    /// Absent when cancelled.
    pub detail: Option<SegmentationDetail<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentationDetail<'a> {
    pub program_segmentation_flag: bool,
    pub segmentation_duration_flag: bool,
    pub delivery_not_restricted_flag: bool,
    /// (web_delivery_allowed, no_regional_blackout, archive_allowed,
    /// device_restrictions), present when delivery is restricted.
    pub restrictions: Option<DeliveryRestrictions>,
    /// Component mode: (component_tag, pts_offset).
    pub components: Vec<(u8, u64)>,
    pub segmentation_duration: Option<u64>,
    pub segmentation_upid_type: UpidType,
    pub segmentation_upid: &'a [u8],
    pub segmentation_type_id: SegmentationTypeId,
    pub segment_num: u8,
    pub segments_expected: u8,
    pub sub_segment_num: Option<u8>,
    pub sub_segments_expected: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRestrictions {
    pub web_delivery_allowed_flag: bool,
    pub no_regional_blackout_flag: bool,
    pub archive_allowed_flag: bool,
    pub device_restrictions: u8,
}

/// (a + b) mod 2^33: pts_time + pts_adjustment (SCTE 35 §9.6).
pub fn pts_add(a: u64, b: u64) -> u64 {
    (a.wrapping_add(b)) % PTS_MODULUS
}

/// The forward distance from `from` to `to` on the 33-bit PTS clock.
pub fn pts_delta(from: u64, to: u64) -> u64 {
    (to.wrapping_sub(from)) % PTS_MODULUS
}

/// Decode standard padded base64 (RFC 4648 §4), ASCII whitespace trimmed.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, Scte35Error> {
    use base64::Engine;
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if t.is_empty() {
        return Err(Scte35Error::Empty);
    }
    // 4 base64 chars per 3 bytes: refuse before allocating for anything that
    // cannot be a section.
    let decoded = (t.len() / 4).saturating_mul(3);
    if decoded > MAX_SECTION_BYTES + 3 {
        return Err(Scte35Error::TooLong { len: decoded });
    }
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .map_err(|e| Scte35Error::Base64(e.to_string()))
}

/// Decode hexadecimal, with or without a `0x`/`0X` prefix (the
/// `EXT-X-DATERANGE` `SCTE35-*` form, RFC 8216 §4.3.2.7.1).
pub fn decode_hex(text: &str) -> Result<Vec<u8>, Scte35Error> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty() {
        return Err(Scte35Error::Empty);
    }
    if t.len() % 2 != 0 {
        return Err(Scte35Error::Hex(format!(
            "odd number of digits ({})",
            t.len()
        )));
    }
    if t.len() / 2 > MAX_SECTION_BYTES {
        return Err(Scte35Error::TooLong { len: t.len() / 2 });
    }
    let (pairs, _) = t.as_bytes().as_chunks::<2>();
    let mut out = Vec::with_capacity(pairs.len());
    for (i, &[hi, lo]) in pairs.iter().enumerate() {
        match (hex_val(hi), hex_val(lo)) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => {
                return Err(Scte35Error::Hex(format!(
                    "non-hex digit at position {}",
                    i.saturating_mul(2)
                )))
            }
        }
    }
    Ok(out)
}

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digit = |n: u8| DIGITS.get(usize::from(n)).map_or('0', |&d| char::from(d));
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for &b in bytes {
        s.push(digit(b >> 4));
        s.push(digit(b & 15));
    }
    s
}

/// Decode a splice_info_section from its bytes.
pub fn parse(data: &[u8]) -> Result<SpliceInfoSection<'_>, Scte35Error> {
    let Some(&table_id) = data.first() else {
        return Err(Scte35Error::Empty);
    };
    if data.len() > MAX_SECTION_BYTES {
        return Err(Scte35Error::TooLong { len: data.len() });
    }
    if table_id != TABLE_ID {
        return Err(Scte35Error::TableId { found: table_id });
    }
    let mut r = Bits::new(data, "splice_info_section");
    r.skip(8, "table_id")?;
    let section_syntax_indicator = r.flag("section_syntax_indicator")?;
    let private_indicator = r.flag("private_indicator")?;
    let sap_type = r.bits(2, "sap_type")? as u8;
    let section_length = r.bits(12, "section_length")? as u16;
    if data.len() != usize::from(section_length) + 3 {
        return Err(Scte35Error::SectionLength {
            section_length: section_length as usize,
            actual: data.len(),
        });
    }
    let protocol_version = r.bits(8, "protocol_version")? as u8;
    let encrypted_packet = r.flag("encrypted_packet")?;
    let encryption_algorithm = r.bits(6, "encryption_algorithm")? as u8;
    let pts_adjustment = r.bits(33, "pts_adjustment")?;
    let cw_index = r.bits(8, "cw_index")? as u8;
    let tier = r.bits(12, "tier")? as u16;
    let splice_command_length = r.bits(12, "splice_command_length")? as u16;
    let splice_command_type = SpliceCommandType(r.bits(8, "splice_command_type")? as u8);
    if encrypted_packet {
        return Err(Scte35Error::Encrypted {
            algorithm: encryption_algorithm,
        });
    }
    // Everything after the header is bounded by the section minus CRC_32.
    let body_end = data.len().saturating_sub(4);
    let start = r.byte_pos();
    let crc_truncated = || Scte35Error::Truncated {
        field: "CRC_32",
        within: "splice_info_section",
        at: bits_of(data.len()),
        needed: 32,
        available: bits_of(data.len().saturating_sub(start)),
    };
    let (covered, crc_bytes) = data.split_at_checked(body_end).ok_or_else(crc_truncated)?;
    let body = covered.get(start..).ok_or_else(crc_truncated)?;
    let (command, command_bytes) = if splice_command_length == 0xFFF {
        // Legacy "unknown length": the command's own syntax bounds it.
        parse_command(splice_command_type, body, None)?
    } else {
        let len = usize::from(splice_command_length);
        let Some(command) = body.get(..len) else {
            return Err(Scte35Error::Truncated {
                field: "splice_command",
                within: "splice_info_section",
                at: bits_of(start),
                needed: bits_of(len),
                available: bits_of(body.len()),
            });
        };
        parse_command(splice_command_type, command, Some(len))?
    };
    // parse_command reports at most the bytes it was given.
    let rest = body.get(command_bytes..).unwrap_or_default();
    let [hi, lo, rest @ ..] = rest else {
        return Err(Scte35Error::Truncated {
            field: "descriptor_loop_length",
            within: "splice_info_section",
            at: bits_of(start.saturating_add(command_bytes)),
            needed: 16,
            available: bits_of(rest.len()),
        });
    };
    let loop_len = usize::from(u16::from_be_bytes([*hi, *lo]));
    let Some((loop_bytes, trailing)) = rest.split_at_checked(loop_len) else {
        return Err(Scte35Error::DescriptorLoop {
            declared: loop_len,
            available: rest.len(),
        });
    };
    let descriptors = parse_descriptors(loop_bytes)?;
    if !trailing.is_empty() {
        return Err(Scte35Error::TrailingBytes {
            count: trailing.len(),
        });
    }
    let crc_32 = u32::from_be_bytes(crc_bytes.try_into().map_err(|_| crc_truncated())?);
    let crc_ok = crc32_mpeg2(covered) == crc_32;
    Ok(SpliceInfoSection {
        table_id: TABLE_ID,
        section_syntax_indicator,
        private_indicator,
        sap_type,
        section_length,
        protocol_version,
        encrypted_packet,
        encryption_algorithm,
        pts_adjustment,
        cw_index,
        tier,
        splice_command_length,
        splice_command_type,
        command,
        descriptors,
        crc_32,
        crc_ok,
    })
}

impl SpliceInfoSection<'_> {
    /// The splice point's PTS with pts_adjustment applied (mod 2^33), when the
    /// command carries one.
    pub fn adjusted_pts(&self) -> Option<u64> {
        let t = match &self.command {
            SpliceCommand::TimeSignal(t) => t.pts_time,
            SpliceCommand::SpliceInsert(i) => {
                i.detail.as_ref().and_then(|d| d.splice_time?.pts_time)
            }
            _ => None,
        }?;
        Some(pts_add(t, self.pts_adjustment))
    }

    pub fn segmentation_descriptors(&self) -> impl Iterator<Item = &SegmentationDescriptor<'_>> {
        self.descriptors.iter().filter_map(|d| match &d.body {
            DescriptorBody::Segmentation(s) => Some(s),
            _ => None,
        })
    }
}

/// CRC-32/MPEG-2: poly 0x04C11DB7, init 0xFFFFFFFF, no reflection, no xorout.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        let entry = CRC_TABLE.get(usize::from((crc >> 24) as u8 ^ b));
        crc = (crc << 8) ^ entry.copied().unwrap_or(0);
    }
    crc
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0u32;
    let mut slots: &mut [u32] = &mut t;
    while let [slot, rest @ ..] = slots {
        let mut c = i << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        *slot = c;
        i += 1;
        slots = rest;
    }
    t
};

/// Decode a segmentation UPID's bytes by type (SCTE 35 Table 22).
pub fn decode_upid(upid_type: UpidType, bytes: &[u8]) -> Upid<'_> {
    decode_upid_depth(upid_type, bytes, 0)
}

// ---------------------------------------------------------------------------
// Helpers

fn hex_val(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).map(|d| d as u8)
}

/// The bit count of `bytes` bytes (sections are at most
/// [`MAX_SECTION_BYTES`]: it never saturates).
fn bits_of(bytes: usize) -> usize {
    bytes.saturating_mul(8)
}

/// Big-endian bit reader bounded to one enclosing structure.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    within: &'static str,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], within: &'static str) -> Self {
        Bits {
            data,
            pos: 0,
            within,
        }
    }

    fn remaining_bits(&self) -> usize {
        bits_of(self.data.len()).saturating_sub(self.pos)
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), Scte35Error> {
        if n > self.remaining_bits() {
            return Err(Scte35Error::Truncated {
                field,
                within: self.within,
                at: self.pos,
                needed: n,
                available: self.remaining_bits(),
            });
        }
        Ok(())
    }

    /// Read up to 64 bits.
    fn bits(&mut self, n: usize, field: &'static str) -> Result<u64, Scte35Error> {
        self.need(n, field)?;
        let mut v = 0u64;
        let mut left = n;
        while left > 0 {
            // need() checked that the bits are there.
            let Some(&byte) = self.data.get(self.pos / 8) else {
                break;
            };
            // The bits of this byte from the current one: 1..=8.
            let room = 8usize.saturating_sub(self.pos % 8);
            let take = room.min(left);
            let chunk =
                (byte >> room.saturating_sub(take)) & (u8::MAX >> 8usize.saturating_sub(take));
            v = (v << take) | u64::from(chunk);
            self.pos = self.pos.saturating_add(take);
            left = left.saturating_sub(take);
        }
        Ok(v)
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, Scte35Error> {
        Ok(self.bits(1, field)? == 1)
    }

    fn skip(&mut self, n: usize, field: &'static str) -> Result<(), Scte35Error> {
        self.need(n, field)?;
        self.pos = self.pos.saturating_add(n);
        Ok(())
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, Scte35Error> {
        Ok(self.bits(8, field)? as u8)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, Scte35Error> {
        Ok(self.bits(16, field)? as u16)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, Scte35Error> {
        Ok(self.bits(32, field)? as u32)
    }

    fn byte_pos(&self) -> usize {
        self.pos.div_ceil(8)
    }

    /// Take `n` whole bytes (reader must be byte aligned, which every caller
    /// is by the syntax).
    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Scte35Error> {
        self.need(bits_of(n), field)?;
        let start = self.pos / 8;
        let taken = start
            .checked_add(n)
            .and_then(|end| self.data.get(start..end));
        let Some(taken) = taken else {
            return Err(Scte35Error::Truncated {
                field,
                within: self.within,
                at: self.pos,
                needed: bits_of(n),
                available: self.remaining_bits(),
            });
        };
        self.pos = self.pos.saturating_add(bits_of(n));
        Ok(taken)
    }

    fn rest(&mut self) -> &'a [u8] {
        let start = self.byte_pos().min(self.data.len());
        self.pos = bits_of(self.data.len());
        self.data.get(start..).unwrap_or_default()
    }
}

fn splice_time(r: &mut Bits<'_>) -> Result<SpliceTime, Scte35Error> {
    if r.flag("time_specified_flag")? {
        r.skip(6, "reserved")?;
        Ok(SpliceTime {
            pts_time: Some(r.bits(33, "pts_time")?),
        })
    } else {
        r.skip(7, "reserved")?;
        Ok(SpliceTime { pts_time: None })
    }
}

fn break_duration(r: &mut Bits<'_>) -> Result<BreakDuration, Scte35Error> {
    let auto_return = r.flag("auto_return")?;
    r.skip(6, "reserved")?;
    Ok(BreakDuration {
        auto_return,
        duration: r.bits(33, "duration")?,
    })
}

/// Parse a command; `declared` is splice_command_length unless legacy 0xFFF.
/// Returns the command and the bytes it used.
fn parse_command<'a>(
    ty: SpliceCommandType,
    data: &'a [u8],
    declared: Option<usize>,
) -> Result<(SpliceCommand<'a>, usize), Scte35Error> {
    let mut r = Bits::new(data, "splice_command");
    let (cmd, name) = match ty {
        SpliceCommandType::SPLICE_NULL => (SpliceCommand::SpliceNull, "splice_null"),
        SpliceCommandType::BANDWIDTH_RESERVATION => {
            (SpliceCommand::BandwidthReservation, "bandwidth_reservation")
        }
        SpliceCommandType::TIME_SIGNAL => (
            SpliceCommand::TimeSignal(splice_time(&mut r)?),
            "time_signal",
        ),
        SpliceCommandType::SPLICE_INSERT => (
            SpliceCommand::SpliceInsert(splice_insert(&mut r)?),
            "splice_insert",
        ),
        SpliceCommandType::SPLICE_SCHEDULE => (
            SpliceCommand::SpliceSchedule(splice_schedule(&mut r)?),
            "splice_schedule",
        ),
        SpliceCommandType::PRIVATE_COMMAND => {
            let identifier = r.u32("identifier")?;
            // private bytes fill the declared command; with the legacy
            // unknown length there is no way to bound them.
            let private_bytes = match declared {
                Some(_) => r.rest(),
                None => &[],
            };
            (
                SpliceCommand::PrivateCommand {
                    identifier,
                    private_bytes,
                },
                "private_command",
            )
        }
        _ => match declared {
            Some(_) => (SpliceCommand::Unknown(r.rest()), "reserved command"),
            None => (SpliceCommand::Unknown(&[]), "reserved command"),
        },
    };
    let used = r.byte_pos();
    if let Some(len) = declared {
        if used != len {
            return Err(Scte35Error::CommandLength {
                command: name,
                declared: len,
                used,
            });
        }
    }
    Ok((cmd, used))
}

fn splice_insert(r: &mut Bits<'_>) -> Result<SpliceInsert, Scte35Error> {
    let splice_event_id = r.u32("splice_event_id")?;
    let cancel = r.flag("splice_event_cancel_indicator")?;
    r.skip(7, "reserved")?;
    if cancel {
        return Ok(SpliceInsert {
            splice_event_id,
            splice_event_cancel_indicator: true,
            detail: None,
        });
    }
    let out_of_network_indicator = r.flag("out_of_network_indicator")?;
    let program_splice_flag = r.flag("program_splice_flag")?;
    let duration_flag = r.flag("duration_flag")?;
    let splice_immediate_flag = r.flag("splice_immediate_flag")?;
    let event_id_compliance_flag = r.flag("event_id_compliance_flag")?;
    r.skip(3, "reserved")?;
    let mut splice_time_v = None;
    let mut components = Vec::new();
    if program_splice_flag {
        if !splice_immediate_flag {
            splice_time_v = Some(splice_time(r)?);
        }
    } else {
        let count = r.u8("component_count")?;
        for _ in 0..count {
            let tag = r.u8("component_tag")?;
            let t = if splice_immediate_flag {
                None
            } else {
                Some(splice_time(r)?)
            };
            components.push((tag, t));
        }
    }
    let break_duration_v = if duration_flag {
        Some(break_duration(r)?)
    } else {
        None
    };
    Ok(SpliceInsert {
        splice_event_id,
        splice_event_cancel_indicator: false,
        detail: Some(SpliceInsertDetail {
            out_of_network_indicator,
            program_splice_flag,
            duration_flag,
            splice_immediate_flag,
            event_id_compliance_flag,
            splice_time: splice_time_v,
            components,
            break_duration: break_duration_v,
            unique_program_id: r.u16("unique_program_id")?,
            avail_num: r.u8("avail_num")?,
            avails_expected: r.u8("avails_expected")?,
        }),
    })
}

fn splice_schedule(r: &mut Bits<'_>) -> Result<Vec<ScheduleEvent>, Scte35Error> {
    let count = r.u8("splice_count")?;
    let mut events = Vec::new();
    for _ in 0..count {
        let splice_event_id = r.u32("splice_event_id")?;
        let cancel = r.flag("splice_event_cancel_indicator")?;
        r.skip(7, "reserved")?;
        let mut ev = ScheduleEvent {
            splice_event_id,
            splice_event_cancel_indicator: cancel,
            out_of_network_indicator: false,
            program_splice_flag: false,
            utc_splice_time: None,
            components: Vec::new(),
            break_duration: None,
            unique_program_id: 0,
            avail_num: 0,
            avails_expected: 0,
        };
        if !cancel {
            ev.out_of_network_indicator = r.flag("out_of_network_indicator")?;
            ev.program_splice_flag = r.flag("program_splice_flag")?;
            let duration_flag = r.flag("duration_flag")?;
            r.skip(5, "reserved")?;
            if ev.program_splice_flag {
                ev.utc_splice_time = Some(r.u32("utc_splice_time")?);
            } else {
                let n = r.u8("component_count")?;
                for _ in 0..n {
                    let tag = r.u8("component_tag")?;
                    ev.components.push((tag, r.u32("utc_splice_time")?));
                }
            }
            if duration_flag {
                ev.break_duration = Some(break_duration(r)?);
            }
            ev.unique_program_id = r.u16("unique_program_id")?;
            ev.avail_num = r.u8("avail_num")?;
            ev.avails_expected = r.u8("avails_expected")?;
        }
        events.push(ev);
    }
    Ok(events)
}

fn parse_descriptors(mut data: &[u8]) -> Result<Vec<SpliceDescriptor<'_>>, Scte35Error> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let [tag, len, after @ ..] = data else {
            return Err(Scte35Error::Truncated {
                field: "descriptor_length",
                within: "descriptor loop",
                at: 0,
                needed: 16,
                available: bits_of(data.len()),
            });
        };
        let (tag, len) = (*tag, usize::from(*len));
        let Some((body, next)) = after.split_at_checked(len) else {
            return Err(Scte35Error::Truncated {
                field: "splice_descriptor",
                within: "descriptor loop",
                at: 16,
                needed: bits_of(len),
                available: bits_of(after.len()),
            });
        };
        if len < 4 {
            return Err(Scte35Error::DescriptorTooShort { tag, length: len });
        }
        out.push(parse_descriptor(tag, body)?);
        data = next;
    }
    Ok(out)
}

fn parse_descriptor(tag: u8, body: &[u8]) -> Result<SpliceDescriptor<'_>, Scte35Error> {
    let Some((identifier, fields)) = body.split_first_chunk::<4>() else {
        return Err(Scte35Error::DescriptorTooShort {
            tag,
            length: body.len(),
        });
    };
    let identifier = u32::from_be_bytes(*identifier);
    let mut r = Bits::new(fields, "splice_descriptor");
    let parsed = match tag {
        0 => DescriptorBody::Avail {
            provider_avail_id: r.u32("provider_avail_id")?,
        },
        1 => {
            let preroll = r.u8("preroll")?;
            let count = r.bits(3, "dtmf_count")? as usize;
            r.skip(5, "reserved")?;
            DescriptorBody::Dtmf {
                preroll,
                dtmf_chars: r.bytes(count, "DTMF_char")?,
            }
        }
        2 => DescriptorBody::Segmentation(segmentation_descriptor(&mut r)?),
        3 => DescriptorBody::Time {
            tai_seconds: r.bits(48, "TAI_seconds")?,
            tai_ns: r.u32("TAI_ns")?,
            utc_offset: r.u16("UTC_offset")?,
        },
        _ => DescriptorBody::Other(fields),
    };
    Ok(SpliceDescriptor {
        tag,
        identifier,
        body: parsed,
    })
}

fn segmentation_descriptor<'a>(
    r: &mut Bits<'a>,
) -> Result<SegmentationDescriptor<'a>, Scte35Error> {
    let segmentation_event_id = r.u32("segmentation_event_id")?;
    let cancel = r.flag("segmentation_event_cancel_indicator")?;
    let compliance = r.flag("segmentation_event_id_compliance_indicator")?;
    r.skip(6, "reserved")?;
    if cancel {
        return Ok(SegmentationDescriptor {
            segmentation_event_id,
            segmentation_event_cancel_indicator: true,
            segmentation_event_id_compliance_indicator: compliance,
            detail: None,
        });
    }
    let program_segmentation_flag = r.flag("program_segmentation_flag")?;
    let segmentation_duration_flag = r.flag("segmentation_duration_flag")?;
    let delivery_not_restricted_flag = r.flag("delivery_not_restricted_flag")?;
    let restrictions = if delivery_not_restricted_flag {
        r.skip(5, "reserved")?;
        None
    } else {
        Some(DeliveryRestrictions {
            web_delivery_allowed_flag: r.flag("web_delivery_allowed_flag")?,
            no_regional_blackout_flag: r.flag("no_regional_blackout_flag")?,
            archive_allowed_flag: r.flag("archive_allowed_flag")?,
            device_restrictions: r.bits(2, "device_restrictions")? as u8,
        })
    };
    let mut components = Vec::new();
    if !program_segmentation_flag {
        let n = r.u8("component_count")?;
        for _ in 0..n {
            let tag = r.u8("component_tag")?;
            r.skip(7, "reserved")?;
            components.push((tag, r.bits(33, "pts_offset")?));
        }
    }
    let segmentation_duration = if segmentation_duration_flag {
        Some(r.bits(40, "segmentation_duration")?)
    } else {
        None
    };
    let segmentation_upid_type = UpidType(r.u8("segmentation_upid_type")?);
    let upid_len = r.u8("segmentation_upid_length")? as usize;
    let segmentation_upid = r.bytes(upid_len, "segmentation_upid")?;
    let segmentation_type_id = SegmentationTypeId(r.u8("segmentation_type_id")?);
    let segment_num = r.u8("segment_num")?;
    let segments_expected = r.u8("segments_expected")?;
    let (sub_segment_num, sub_segments_expected) =
        if segmentation_type_id.has_sub_segments() && r.remaining_bits() >= 16 {
            (
                Some(r.u8("sub_segment_num")?),
                Some(r.u8("sub_segments_expected")?),
            )
        } else {
            (None, None)
        };
    Ok(SegmentationDescriptor {
        segmentation_event_id,
        segmentation_event_cancel_indicator: false,
        segmentation_event_id_compliance_indicator: compliance,
        detail: Some(SegmentationDetail {
            program_segmentation_flag,
            segmentation_duration_flag,
            delivery_not_restricted_flag,
            restrictions,
            components,
            segmentation_duration,
            segmentation_upid_type,
            segmentation_upid,
            segmentation_type_id,
            segment_num,
            segments_expected,
            sub_segment_num,
            sub_segments_expected,
        }),
    })
}

/// MID nesting is bounded (a MID inside a MID is legal syntax, but 4 levels
/// is already absurd).
const MAX_MID_DEPTH: usize = 4;

fn decode_upid_depth(t: UpidType, b: &[u8], depth: usize) -> Upid<'_> {
    match t {
        UpidType::NOT_USED if b.is_empty() => Upid::None,
        UpidType::UMID => match <&[u8; 32]>::try_from(b) {
            Ok(a) => Upid::Umid(a),
            Err(_) => Upid::Raw(t, b),
        },
        UpidType::UUID => match <[u8; 16]>::try_from(b) {
            Ok(a) => Upid::Uuid(a),
            Err(_) => Upid::Raw(t, b),
        },
        UpidType::TI if b.len() == 8 => Upid::Int(t, be_u64(b)),
        UpidType::EIDR if b.len() >= 2 => match b.split_first_chunk::<2>() {
            Some((prefix, suffix)) => Upid::Eidr {
                sub_prefix: u16::from_be_bytes(*prefix),
                suffix,
            },
            None => Upid::Raw(t, b),
        },
        UpidType::MID if depth < MAX_MID_DEPTH => {
            let mut items = Vec::new();
            let mut rest = b;
            while let [ty, len, after @ ..] = rest {
                let Some((item, next)) = after.split_at_checked(usize::from(*len)) else {
                    return Upid::Raw(t, b);
                };
                // depth < MAX_MID_DEPTH here.
                let deeper = depth.saturating_add(1);
                items.push(decode_upid_depth(UpidType(*ty), item, deeper));
                rest = next;
            }
            if !rest.is_empty() {
                return Upid::Raw(t, b);
            }
            Upid::Mid(items)
        }
        UpidType::USER_DEFINED
        | UpidType::ISCI
        | UpidType::AD_ID
        | UpidType::TID
        | UpidType::ADI
        | UpidType::ATSC_CONTENT_IDENTIFIER
        | UpidType::MPU
        | UpidType::ADS_INFORMATION
        | UpidType::URI
        | UpidType::SCR => match std::str::from_utf8(b) {
            // User-defined, ATSC and MPU are binary structures, not text.
            Ok(s) if !matches!(t.0, 0x01 | 0x0B | 0x0C) => Upid::Text(t, s),
            _ => Upid::Raw(t, b),
        },
        // AiringID: 0x08 in 2023 (TI), 0x12 from some encoders.
        UpidType(0x12) if b.len() == 8 => Upid::Int(t, be_u64(b)),
        _ => Upid::Raw(t, b),
    }
}

fn be_u64(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| acc << 8 | x as u64)
}

// ---------------------------------------------------------------------------
// Encoder (tests, the /cue path's DATERANGE SCTE35-OUT, the demo origin)

/// What to encode: the common cue shapes we emit ourselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CueSpec {
    /// splice_insert, program mode.
    SpliceInsert {
        event_id: u32,
        out_of_network: bool,
        pts_time: Option<u64>,
        duration: Option<u64>,
        auto_return: bool,
        unique_program_id: u16,
    },
    /// splice_insert cancel.
    SpliceInsertCancel { event_id: u32 },
    /// time_signal with one segmentation descriptor.
    TimeSignal {
        pts_time: Option<u64>,
        segmentation_event_id: u32,
        segmentation_type_id: SegmentationTypeId,
        duration: Option<u64>,
        upid_type: UpidType,
        upid: Vec<u8>,
        segment_num: u8,
        segments_expected: u8,
    },
}

/// Encode a section with pts_adjustment 0 and a correct CRC_32.
pub fn encode(spec: &CueSpec) -> Vec<u8> {
    let mut w = BitWriter::default();
    let (cmd_type, cmd, descs) = match spec {
        CueSpec::SpliceInsert {
            event_id,
            out_of_network,
            pts_time,
            duration,
            auto_return,
            unique_program_id,
        } => {
            let mut c = BitWriter::default();
            c.put(*event_id as u64, 32);
            c.put(0, 1);
            c.put(0x7F, 7);
            c.put(*out_of_network as u64, 1);
            c.put(1, 1); // program_splice_flag
            c.put(duration.is_some() as u64, 1);
            c.put(pts_time.is_none() as u64, 1); // splice_immediate_flag
            c.put(1, 1); // event_id_compliance_flag
            c.put(0x7, 3);
            if let Some(p) = pts_time {
                put_splice_time(&mut c, Some(*p));
            }
            if let Some(d) = duration {
                c.put(*auto_return as u64, 1);
                c.put(0x3F, 6);
                c.put(*d & (PTS_MODULUS - 1), 33);
            }
            c.put(*unique_program_id as u64, 16);
            c.put(0, 8);
            c.put(0, 8);
            (SpliceCommandType::SPLICE_INSERT, c.out, Vec::new())
        }
        CueSpec::SpliceInsertCancel { event_id } => {
            let mut c = BitWriter::default();
            c.put(*event_id as u64, 32);
            c.put(1, 1);
            c.put(0x7F, 7);
            (SpliceCommandType::SPLICE_INSERT, c.out, Vec::new())
        }
        CueSpec::TimeSignal {
            pts_time,
            segmentation_event_id,
            segmentation_type_id,
            duration,
            upid_type,
            upid,
            segment_num,
            segments_expected,
        } => {
            let mut c = BitWriter::default();
            put_splice_time(&mut c, *pts_time);
            let mut d = BitWriter::default();
            d.put(*segmentation_event_id as u64, 32);
            d.put(0, 1);
            d.put(1, 1);
            d.put(0x3F, 6);
            d.put(1, 1); // program_segmentation_flag
            d.put(duration.is_some() as u64, 1);
            d.put(1, 1); // delivery_not_restricted_flag
            d.put(0x1F, 5);
            if let Some(dur) = duration {
                d.put(*dur & ((1 << 40) - 1), 40);
            }
            let upid = upid.get(..255).unwrap_or(upid);
            d.put(upid_type.0 as u64, 8);
            d.put(upid.len() as u64, 8);
            d.out.extend_from_slice(upid);
            d.put(segmentation_type_id.0 as u64, 8);
            d.put(*segment_num as u64, 8);
            d.put(*segments_expected as u64, 8);
            if segmentation_type_id.has_sub_segments() {
                d.put(0, 8);
                d.put(0, 8);
            }
            // A descriptor of at most 255 bytes (the UPID is cut to 255 above).
            let mut desc = vec![2u8, d.out.len().saturating_add(4) as u8];
            desc.extend_from_slice(b"CUEI");
            desc.extend_from_slice(&d.out);
            (SpliceCommandType::TIME_SIGNAL, c.out, desc)
        }
    };
    // section_length counts from protocol_version to CRC_32 inclusive.
    let section_length = [11, cmd.len(), 2, descs.len(), 4]
        .into_iter()
        .fold(0usize, usize::saturating_add);
    w.put(TABLE_ID as u64, 8);
    w.put(0, 1); // section_syntax_indicator
    w.put(0, 1); // private_indicator
    w.put(3, 2); // sap_type: not specified
    w.put(section_length as u64, 12);
    w.put(0, 8); // protocol_version
    w.put(0, 1); // encrypted_packet
    w.put(0, 6); // encryption_algorithm
    w.put(0, 33); // pts_adjustment
    w.put(0, 8); // cw_index
    w.put(0xFFF, 12); // tier
    w.put(cmd.len() as u64, 12);
    w.put(cmd_type.0 as u64, 8);
    w.out.extend_from_slice(&cmd);
    w.put(descs.len() as u64, 16);
    w.out.extend_from_slice(&descs);
    let crc = crc32_mpeg2(&w.out);
    w.out.extend_from_slice(&crc.to_be_bytes());
    w.out
}

/// Standard padded base64 of bytes.
pub fn to_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn put_splice_time(c: &mut BitWriter, pts: Option<u64>) {
    match pts {
        Some(p) => {
            c.put(1, 1);
            c.put(0x3F, 6);
            c.put(p & (PTS_MODULUS - 1), 33);
        }
        None => {
            c.put(0, 1);
            c.put(0x7F, 7);
        }
    }
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    bit: usize,
}

impl BitWriter {
    fn put(&mut self, v: u64, n: usize) {
        for i in (0..n).rev() {
            let b = ((v >> i) & 1) as u8;
            if self.bit.is_multiple_of(8) {
                self.out.push(0);
            }
            // Bit k of the byte (from the top) is 0x80 >> k.
            if let Some(last) = self.out.last_mut() {
                *last |= (b << 7) >> (self.bit % 8);
            }
            self.bit = self.bit.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> SpliceInfoSection<'static> {
        let bytes: &'static [u8] = Box::leak(decode_base64(s).unwrap().into_boxed_slice());
        parse(bytes).unwrap()
    }

    // SCTE 35 2023 §14.1: time_signal – Placement Opportunity Start.
    #[test]
    fn sample_14_1_time_signal_placement_opportunity_start() {
        let s = b64("/DA0AAAAAAAA///wBQb+cr0AUAAeAhxDVUVJSAAAjn/PAAGlmbAICAAAAAAsoKGKNAIAmsnRfg==");
        assert!(s.crc_ok);
        assert_eq!(
            s.command,
            SpliceCommand::TimeSignal(SpliceTime {
                pts_time: Some(0x072bd0050)
            })
        );
        let seg = s.segmentation_descriptors().next().unwrap();
        assert_eq!(seg.segmentation_event_id, 0x4800008e);
        let d = seg.detail.as_ref().unwrap();
        assert_eq!(
            d.segmentation_type_id,
            SegmentationTypeId::PROVIDER_PLACEMENT_OPPORTUNITY_START
        );
        assert_eq!(d.segmentation_duration, Some(0x0001a599b0));
        assert_eq!(d.segmentation_upid_type, UpidType::TI);
        assert_eq!(d.sub_segment_num, None.or(d.sub_segment_num));
        assert_eq!(
            decode_upid(d.segmentation_upid_type, d.segmentation_upid),
            Upid::Int(UpidType::TI, 0x2ca0a18a)
        );
    }

    // SCTE 35 2023 §14.2: splice_insert.
    #[test]
    fn sample_14_2_splice_insert() {
        let s = b64("/DAvAAAAAAAA///wFAVIAACPf+/+c2nALv4AUsz1AAAAAAAKAAhDVUVJAAABNWLbowo=");
        assert!(s.crc_ok);
        match &s.command {
            SpliceCommand::SpliceInsert(i) => {
                assert_eq!(i.splice_event_id, 0x4800008f);
                let d = i.detail.as_ref().unwrap();
                assert!(d.out_of_network_indicator);
                assert_eq!(d.splice_time.unwrap().pts_time, Some(0x07369c02e));
                assert_eq!(
                    d.break_duration,
                    Some(BreakDuration {
                        auto_return: true,
                        duration: 0x00052ccf5
                    })
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.descriptors[0].body,
            DescriptorBody::Avail {
                provider_avail_id: 0x135
            }
        );
    }

    // SCTE 35 2023 §14.3: time_signal – Placement Opportunity End.
    #[test]
    fn sample_14_3_time_signal_placement_opportunity_end() {
        let s = b64("/DAvAAAAAAAA///wBQb+dGKQoAAZAhdDVUVJSAAAjn+fCAgAAAAALKChijUCAKnMZ1g=");
        assert!(s.crc_ok);
        let d = s
            .segmentation_descriptors()
            .next()
            .unwrap()
            .detail
            .clone()
            .unwrap();
        assert_eq!(
            d.segmentation_type_id,
            SegmentationTypeId::PROVIDER_PLACEMENT_OPPORTUNITY_END
        );
    }

    #[test]
    fn crc_mismatch_is_reported_not_fatal() {
        let mut bytes =
            decode_base64("/DAvAAAAAAAA///wBQb+dGKQoAAZAhdDVUVJSAAAjn+fCAgAAAAALKChijUCAKnMZ1g=")
                .unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        assert!(!parse(&bytes).unwrap().crc_ok);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(parse(&[]), Err(Scte35Error::Empty));
        assert_eq!(
            parse(&[0xFB, 0, 0]),
            Err(Scte35Error::TableId { found: 0xFB })
        );
        assert!(matches!(
            parse(&[0xFC, 0, 5]),
            Err(Scte35Error::SectionLength { .. })
        ));
        assert!(matches!(parse(&[0xFC]), Err(Scte35Error::Truncated { .. })));
        assert!(decode_base64("not base64!").is_err());
    }

    #[test]
    fn encoder_round_trips() {
        let spec = CueSpec::TimeSignal {
            pts_time: Some(PTS_MODULUS - 5),
            segmentation_event_id: 77,
            segmentation_type_id: SegmentationTypeId::PROVIDER_PLACEMENT_OPPORTUNITY_START,
            duration: Some(30 * 90_000),
            upid_type: UpidType::URI,
            upid: b"urn:x".to_vec(),
            segment_num: 1,
            segments_expected: 1,
        };
        let bytes = encode(&spec);
        let s = parse(&bytes).unwrap();
        assert!(s.crc_ok);
        let d = s
            .segmentation_descriptors()
            .next()
            .unwrap()
            .detail
            .clone()
            .unwrap();
        assert_eq!(d.segmentation_duration, Some(2_700_000));
        assert_eq!(d.sub_segment_num, Some(0));
        let spec = CueSpec::SpliceInsert {
            event_id: 9,
            out_of_network: true,
            pts_time: Some(123),
            duration: Some(900_000),
            auto_return: true,
            unique_program_id: 1,
        };
        let bytes = encode(&spec);
        assert!(parse(&bytes).unwrap().crc_ok);
        assert!(
            parse(&encode(&CueSpec::SpliceInsertCancel { event_id: 9 }))
                .unwrap()
                .crc_ok
        );
    }

    #[test]
    fn pts_wraps_at_33_bits() {
        assert_eq!(pts_add(PTS_MODULUS - 1, 2), 1);
        assert_eq!(pts_delta(PTS_MODULUS - 1, 1), 2);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = decode_base64(
            "/DA0AAAAAAAA///wBQb+cr0AUAAeAhxDVUVJSAAAjn/PAAGlmbAICAAAAAAsoKGKNAIAmsnRfg==",
        )
        .unwrap();
        for n in 0..full.len() {
            let mut b = full[..n].to_vec();
            if b.len() >= 3 {
                let sl = (n as u16).saturating_sub(3);
                b[1] = (b[1] & 0xF0) | ((sl >> 8) as u8 & 0x0F);
                b[2] = sl as u8;
            }
            assert!(parse(&b).is_err(), "len {n}");
        }
    }
}
