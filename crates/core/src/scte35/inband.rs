//! In-band SCTE-35: splice_info_sections carried in the media itself, for
//! origins whose playlists carry no marker at all.
//!
//! - MPEG-TS: the PMT names the SCTE-35 PID (stream_type 0x86, SCTE 35
//!   §8.1); its sections are reassembled across packets (pointer_field,
//!   payload_unit_start_indicator, section_length) and CRC-checked.
//! - CMAF: `emsg` boxes (ISO/IEC 23009-1 §5.10.3.3), version 0 and 1, with
//!   scheme `urn:scte:scte35:2013:bin` (SCTE 214-3): the message is the
//!   binary section.
//!
//! The splice time maps to the HLS timeline through the segment: for TS the
//! splice PTS minus the segment's first PES PTS; for emsg v0 its
//! presentation_time_delta, for v1 its presentation_time minus the
//! fragment's `tfdt`. Events come out as the same [`CueEvent`]s as playlist
//! markers (dialects `inband-ts`, `inband-emsg`), on the MSN the splice
//! falls in.
//!
//! Hand-written rather than `mpeg2ts-reader`: that crate is a streaming
//! demultiplexer built around per-PID trait objects and a packet-filter
//! registry; here one segment is searched for one table and one PID, which
//! is ~100 lines that are fuzzed with the rest of the core and never panic.

use crate::scte35;
use crate::scte35::cues::{self, CueEvent, Dialect, SegmentationPolicy};

const TS_PACKET: usize = 188;
const SCTE35_STREAM_TYPE: u8 = 0x86;
pub const EMSG_SCHEME: &str = "urn:scte:scte35:2013:bin";

/// One SCTE-35 section found in a segment, with where it splices: the
/// offset (ms) from the segment's start, when the section says a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub section: Vec<u8>,
    pub offset_ms: Option<i64>,
}

fn u16_at(d: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(i)?, *d.get(i.checked_add(1)?)?]))
}

fn u32_at(d: &[u8], i: usize) -> Option<u32> {
    let b = d.get(i..i.checked_add(4)?)?;
    Some(u32::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

fn u64_at(d: &[u8], i: usize) -> Option<u64> {
    let hi = u64::from(u32_at(d, i)?);
    let lo = u64::from(u32_at(d, i.checked_add(4)?)?);
    Some((hi << 32) | lo)
}

/// A TS packet's PID, payload-unit-start flag and payload.
fn ts_packet(p: &[u8]) -> Option<(u16, bool, &[u8])> {
    if p.first() != Some(&0x47) {
        return None;
    }
    let pusi = p.get(1)? & 0x40 != 0;
    let pid = u16_at(p, 1)? & 0x1FFF;
    let afc = (p.get(3)? >> 4) & 0x3;
    let start = match afc {
        1 => 4,
        3 => 5usize.checked_add(usize::from(*p.get(4)?))?,
        _ => return Some((pid, pusi, &[])),
    };
    Some((pid, pusi, p.get(start..)?))
}

/// PES header PTS (90 kHz), when the payload starts a PES packet with one.
fn pes_pts(payload: &[u8]) -> Option<u64> {
    if payload.get(..3)? != [0, 0, 1] || payload.get(7)? & 0x80 == 0 {
        return None;
    }
    let b = payload.get(9..14)?;
    let p = (u64::from(b.first()? >> 1 & 0x07) << 30)
        | (u64::from(u16_at(b, 1)? >> 1) << 15)
        | u64::from(u16_at(b, 3)? >> 1);
    Some(p)
}

/// Sections of one PID, reassembled across packets.
#[derive(Default)]
struct Reassembly {
    buf: Vec<u8>,
    open: bool,
}

impl Reassembly {
    fn push(&mut self, pusi: bool, payload: &[u8], out: &mut Vec<Vec<u8>>) {
        let mut data = payload;
        if pusi {
            let Some((&ptr, rest)) = data.split_first() else {
                return;
            };
            // The bytes before the pointer end the section in progress.
            if self.open {
                if let Some(tail) = rest.get(..usize::from(ptr)) {
                    self.buf.extend_from_slice(tail);
                }
                self.drain(out);
            }
            self.buf.clear();
            self.open = true;
            data = rest.get(usize::from(ptr)..).unwrap_or_default();
        } else if !self.open {
            return;
        }
        self.buf.extend_from_slice(data);
        self.drain(out);
    }

    /// Emit every complete section in the buffer (several may share a
    /// packet; 0xFF is stuffing).
    fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        loop {
            if self.buf.first().is_none_or(|b| *b == 0xFF) {
                self.buf.clear();
                self.open = false;
                return;
            }
            let Some(len) = u16_at(&self.buf, 1).map(|l| usize::from(l & 0x0FFF)) else {
                return;
            };
            let total = len.saturating_add(3);
            if self.buf.len() < total {
                return;
            }
            let rest = self.buf.split_off(total);
            out.push(std::mem::replace(&mut self.buf, rest));
        }
    }
}

/// The SCTE-35 sections of an MPEG-TS segment, with each splice's offset
/// from the segment's first PTS. Packets that do not parse are skipped.
pub fn ts_sections(data: &[u8]) -> Vec<Found> {
    let mut pmt_pids: Vec<u16> = Vec::new();
    let mut scte_pids: Vec<u16> = Vec::new();
    let mut first_pts: Option<u64> = None;
    let mut psi: std::collections::BTreeMap<u16, Reassembly> = Default::default();
    let mut sections: Vec<Vec<u8>> = Vec::new();
    for p in data.chunks_exact(TS_PACKET) {
        let Some((pid, pusi, payload)) = ts_packet(p) else {
            continue;
        };
        let is_psi = pid == 0 || pmt_pids.contains(&pid) || scte_pids.contains(&pid);
        if !is_psi {
            if pusi && first_pts.is_none() {
                first_pts = pes_pts(payload);
            }
            continue;
        }
        let mut done = Vec::new();
        psi.entry(pid).or_default().push(pusi, payload, &mut done);
        for s in done {
            match (pid, s.first()) {
                (0, Some(0x00)) => pmt_pids.extend(pat_pmt_pids(&s)),
                (_, Some(0x02)) if pmt_pids.contains(&pid) => {
                    for es in pmt_scte35_pids(&s) {
                        if !scte_pids.contains(&es) {
                            scte_pids.push(es);
                        }
                    }
                }
                (_, Some(0xFC)) if scte_pids.contains(&pid) => sections.push(s),
                _ => {}
            }
        }
    }
    sections
        .into_iter()
        .map(|s| {
            let offset_ms = scte35::parse(&s)
                .ok()
                .and_then(|sec| sec.adjusted_pts())
                .zip(first_pts)
                .map(|(splice, first)| pts_offset_ms(first, splice));
            Found {
                section: s,
                offset_ms,
            }
        })
        .collect()
}

/// Milliseconds from `first` to `splice` on the 33-bit clock; a splice
/// just before the segment (within 10 s back) is negative, not 26 h ahead.
fn pts_offset_ms(first: u64, splice: u64) -> i64 {
    let ahead = scte35::pts_delta(first, splice);
    let behind = scte35::pts_delta(splice, first);
    if behind < ahead && behind <= 900_000 {
        0i64.saturating_sub(i64::try_from(behind / 90).unwrap_or(0))
    } else {
        i64::try_from(ahead / 90).unwrap_or(i64::MAX)
    }
}

/// PMT PIDs listed in a PAT section (program 0, the NIT, excluded).
fn pat_pmt_pids(s: &[u8]) -> Vec<u16> {
    let len = u16_at(s, 1).map_or(0, |l| usize::from(l & 0x0FFF));
    let end = len.saturating_add(3).saturating_sub(4).min(s.len());
    s.get(8..end)
        .unwrap_or_default()
        .chunks_exact(4)
        .filter_map(|e| {
            let program = u16_at(e, 0)?;
            (program != 0).then_some(u16_at(e, 2)? & 0x1FFF)
        })
        .collect()
}

/// Elementary PIDs of stream_type 0x86 in a PMT section.
fn pmt_scte35_pids(s: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let len = u16_at(s, 1).map_or(0, |l| usize::from(l & 0x0FFF));
    let end = len.saturating_add(3).saturating_sub(4).min(s.len());
    let info_len = u16_at(s, 10).map_or(0, |l| usize::from(l & 0x0FFF));
    let mut i = 12usize.saturating_add(info_len);
    while i.saturating_add(5) <= end {
        let (Some(&st), Some(pid), Some(es_len)) = (
            s.get(i),
            u16_at(s, i.saturating_add(1)),
            u16_at(s, i.saturating_add(3)),
        ) else {
            break;
        };
        if st == SCTE35_STREAM_TYPE {
            out.push(pid & 0x1FFF);
        }
        i = i
            .saturating_add(5)
            .saturating_add(usize::from(es_len & 0x0FFF));
    }
    out
}

/// Top-level and `moof/traf` boxes we need from a CMAF segment.
fn boxes(data: &[u8]) -> impl Iterator<Item = (&[u8; 4], &[u8])> {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        let size = u32_at(data, i)?;
        let kind: &[u8; 4] = data
            .get(i.checked_add(4)?..i.checked_add(8)?)?
            .try_into()
            .ok()?;
        let (hdr, size) = match size {
            1 => (
                16usize,
                usize::try_from(u64_at(data, i.checked_add(8)?)?).ok()?,
            ),
            0 => (8, data.len().checked_sub(i)?),
            s => (8, usize::try_from(s).ok()?),
        };
        if size < hdr {
            return None;
        }
        let body = data.get(i.checked_add(hdr)?..i.checked_add(size)?)?;
        i = i.checked_add(size)?;
        Some((kind, body))
    })
}

/// The fragment's baseMediaDecodeTime (`moof/traf/tfdt`), when present.
pub fn fragment_decode_time(data: &[u8]) -> Option<u64> {
    tfdt(data)
}

fn tfdt(data: &[u8]) -> Option<u64> {
    let (_, moof) = boxes(data).find(|(k, _)| *k == b"moof")?;
    let (_, traf) = boxes(moof).find(|(k, _)| *k == b"traf")?;
    let (_, t) = boxes(traf).find(|(k, _)| *k == b"tfdt")?;
    match t.first()? {
        1 => u64_at(t, 4),
        _ => u32_at(t, 4).map(u64::from),
    }
}

fn cstr(d: &[u8], i: usize) -> Option<(&str, usize)> {
    let rest = d.get(i..)?;
    let n = rest.iter().position(|b| *b == 0)?;
    let s = std::str::from_utf8(rest.get(..n)?).ok()?;
    Some((s, i.checked_add(n)?.checked_add(1)?))
}

/// The SCTE-35 sections in a CMAF segment's `emsg` boxes (v0 and v1, our
/// scheme only), with each event's offset from the segment's start.
pub fn emsg_sections(data: &[u8]) -> Vec<Found> {
    let base = tfdt(data);
    boxes(data)
        .filter(|(k, _)| *k == b"emsg")
        .filter_map(|(_, b)| {
            let version = *b.first()?;
            let (scheme, timescale, offset, msg_at) = match version {
                0 => {
                    let (scheme, i) = cstr(b, 4)?;
                    let (_value, i) = cstr(b, i)?;
                    let timescale = u32_at(b, i)?;
                    let delta = u32_at(b, i.checked_add(4)?)?;
                    // timescale, delta, duration, id.
                    (
                        scheme,
                        timescale,
                        Some(u64::from(delta)),
                        i.checked_add(16)?,
                    )
                }
                1 => {
                    let timescale = u32_at(b, 4)?;
                    let pt = u64_at(b, 8)?;
                    let (scheme, i) = cstr(b, 24)?;
                    let (_value, i) = cstr(b, i)?;
                    // Relative to the fragment's decode time when the
                    // packager uses one timescale (the usual case); an
                    // unusable difference means "at the segment's start".
                    let off = base.and_then(|t| pt.checked_sub(t));
                    (scheme, timescale, off, i)
                }
                _ => return None,
            };
            if scheme != EMSG_SCHEME {
                return None;
            }
            let section = b.get(msg_at..)?.to_vec();
            let offset_ms = offset
                .filter(|_| timescale > 0)
                .and_then(|o| o.saturating_mul(1000).checked_div(u64::from(timescale)))
                .and_then(|ms| i64::try_from(ms).ok())
                .filter(|ms| *ms <= 600_000);
            Some(Found { section, offset_ms })
        })
        .collect()
}

/// Whether bytes look like MPEG-TS (sync bytes every 188) or else ISO BMFF.
pub fn is_ts(data: &[u8]) -> bool {
    data.first() == Some(&0x47) && data.get(TS_PACKET).is_none_or(|b| *b == 0x47)
}

/// The cue events of one media segment (MSN `msn`, PDT `pdt_ms`, duration
/// `duration_ms`): a splice inside a later segment lands on that segment's
/// MSN (at `cadence_ms`); warnings for sections that do not decode.
pub fn detect_segment(
    data: &[u8],
    msn: u64,
    pdt_ms: Option<i64>,
    cadence_ms: u64,
    policy: &SegmentationPolicy,
) -> (Vec<CueEvent>, Vec<String>) {
    let (found, dialect) = if is_ts(data) {
        (ts_sections(data), Dialect::InbandTs)
    } else {
        (emsg_sections(data), Dialect::InbandEmsg)
    };
    let mut events = Vec::new();
    let mut warnings = Vec::new();
    for f in found {
        let section = match scte35::parse(&f.section) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("{dialect:?}: SCTE-35 section invalid: {e}"));
                continue;
            }
        };
        if !section.crc_ok {
            warnings.push(format!(
                "{dialect:?}: SCTE-35 CRC_32 mismatch: section dropped"
            ));
            continue;
        }
        let Some(mut ev) = cues::classify(&section, policy) else {
            continue;
        };
        let offset = f.offset_ms.unwrap_or(0).max(0);
        let later = u64::try_from(offset)
            .unwrap_or(0)
            .checked_div(cadence_ms)
            .unwrap_or(0);
        ev.msn = msn.saturating_add(later);
        ev.pdt_ms = pdt_ms.map(|p| p.saturating_add(offset));
        ev.dialect = dialect;
        ev.scte35_hex = Some(scte35::to_hex(&f.section));
        if ev.break_id.is_empty() {
            ev.break_id = format!("msn-{}", ev.msn);
        }
        events.push(ev);
    }
    (events, warnings)
}

/// Test and demo support: wrap sections for the origin and the tests
/// (writers over inputs we make; a malformed PMT is passed through).
pub mod build {
    use super::*;

    /// A TS packet carrying `payload` on `pid` (stuffed with 0xFF).
    pub fn ts_packet(pid: u16, pusi: bool, cc: u8, payload: &[u8]) -> [u8; TS_PACKET] {
        let mut p = [0xFFu8; TS_PACKET];
        if let Some((header, body)) = p.split_first_chunk_mut::<4>() {
            *header = [
                0x47,
                (if pusi { 0x40 } else { 0 }) | ((pid >> 8) as u8 & 0x1F),
                pid as u8,
                0x10 | (cc & 0x0F),
            ];
            // Cut to the packet's 184 payload bytes.
            for (dst, src) in body.iter_mut().zip(payload) {
                *dst = *src;
            }
        }
        p
    }

    /// A section split over TS packets of `pid`, the first with a pointer
    /// field; continuity counters from `cc`.
    pub fn section_packets(pid: u16, cc: u8, section: &[u8]) -> Vec<[u8; TS_PACKET]> {
        let mut data = vec![0u8];
        data.extend_from_slice(section);
        data.chunks(TS_PACKET - 4)
            .enumerate()
            .map(|(i, c)| ts_packet(pid, i == 0, cc.wrapping_add(i as u8), c))
            .collect()
    }

    /// A PMT section (program 1, PCR on `pcr_pid`) listing `streams`
    /// (stream_type, PID), with its CRC.
    pub fn pmt(pcr_pid: u16, streams: &[(u8, u16)]) -> Vec<u8> {
        let mut body = vec![0x00, 0x01, 0xC1, 0x00, 0x00];
        body.extend_from_slice(&(0xE000 | pcr_pid).to_be_bytes());
        body.extend_from_slice(&[0xF0, 0x00]);
        for (st, pid) in streams {
            body.push(*st);
            body.extend_from_slice(&(0xE000 | pid).to_be_bytes());
            body.extend_from_slice(&[0xF0, 0x00]);
        }
        let len = body.len().saturating_add(4) as u16;
        let mut s = vec![0x02];
        s.extend_from_slice(&(0xB000 | len).to_be_bytes());
        s.extend_from_slice(&body);
        let crc = scte35::crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    /// A TS segment with SCTE-35 PID `pid` added to its PMT (stream_type
    /// 0x86, CRC recomputed) and, when given, `section` carried on it right
    /// after the PMT: what a packager with in-band SCTE-35 writes. The PMT
    /// must fit one packet (it does for any A/V PMT).
    pub fn with_scte35(segment: &[u8], pid: u16, section: Option<&[u8]>, cc: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(segment.len().saturating_add(2 * TS_PACKET));
        let mut pmt_pids: Vec<u16> = Vec::new();
        let mut inserted = false;
        for p in segment.chunks(TS_PACKET) {
            let Some((ppid, pusi, payload)) = super::ts_packet(p) else {
                out.extend_from_slice(p);
                continue;
            };
            if ppid == 0 && pusi {
                if let Some(sec) = pointed_section(payload) {
                    pmt_pids = super::pat_pmt_pids(sec);
                }
            }
            let pmt = (pusi && pmt_pids.contains(&ppid) && p.len() == TS_PACKET)
                .then(|| pmt_packet_with(p, ppid, payload, pid))
                .flatten();
            if let Some(pkt) = pmt {
                out.extend_from_slice(&pkt);
                if let (Some(s), false) = (section, inserted) {
                    for sp in section_packets(pid, cc, s) {
                        out.extend_from_slice(&sp);
                    }
                    inserted = true;
                }
                continue;
            }
            out.extend_from_slice(p);
        }
        out
    }

    /// The section a pointer field (the payload's first byte) points to.
    fn pointed_section(payload: &[u8]) -> Option<&[u8]> {
        let (&ptr, rest) = payload.split_first()?;
        rest.get(usize::from(ptr)..)
    }

    /// The PMT packet `p` (PID `ppid`, payload `payload`) with stream
    /// type 0x86 on `pid` added and its CRC recomputed; None when the PMT
    /// does not read (the packet is then kept as it was).
    fn pmt_packet_with(p: &[u8], ppid: u16, payload: &[u8], pid: u16) -> Option<[u8; TS_PACKET]> {
        let sec = pointed_section(payload)?;
        let len = usize::from(u16::from_be_bytes([*sec.get(1)?, *sec.get(2)?]) & 0x0FFF);
        let body = sec.get(3..)?.get(..len.checked_sub(4)?)?; // without the CRC
        let mut new = vec![0x02];
        // len is 12 bits: adding the 5-byte stream entry cannot overflow.
        let new_len = len.saturating_add(5) as u16;
        new.extend_from_slice(&(0xB000 | new_len).to_be_bytes());
        new.extend_from_slice(body);
        new.extend_from_slice(&[0x86, 0xE0 | (pid >> 8) as u8, pid as u8, 0xF0, 0x00]);
        let crc = scte35::crc32_mpeg2(&new);
        new.extend_from_slice(&crc.to_be_bytes());
        let mut payload = vec![0u8];
        payload.extend_from_slice(&new);
        let mut pkt = ts_packet(ppid, true, p.get(3)? & 0x0F, &payload);
        if let (Some(b), Some(was)) = (pkt.get_mut(1), p.get(1)) {
            *b |= was & 0x80; // keep the transport_error bit as it was
        }
        Some(pkt)
    }

    /// An `emsg` box carrying `section` (version 0 or 1).
    pub fn emsg(version: u8, timescale: u32, time: u64, id: u32, section: &[u8]) -> Vec<u8> {
        let mut b = vec![version, 0, 0, 0];
        let strings = |b: &mut Vec<u8>| {
            b.extend_from_slice(EMSG_SCHEME.as_bytes());
            b.push(0);
            b.push(0); // value ""
        };
        if version == 0 {
            strings(&mut b);
            b.extend_from_slice(&timescale.to_be_bytes());
            b.extend_from_slice(&(time as u32).to_be_bytes());
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(&id.to_be_bytes());
        } else {
            b.extend_from_slice(&timescale.to_be_bytes());
            b.extend_from_slice(&time.to_be_bytes());
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(&id.to_be_bytes());
            strings(&mut b);
        }
        b.extend_from_slice(section);
        let mut out = (b.len().saturating_add(8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(b"emsg");
        out.extend_from_slice(&b);
        out
    }
}

/// Where a fresh poller resumes examining in-band SCTE-35: the persisted
/// watermark, or the start of the origin's window when the window has
/// moved past it (what left it is gone; what is in it can still be read).
/// None (start at the newest segments) when nothing was persisted, or an
/// origin restart put the watermark ahead of the window.
pub fn resume_watermark(
    persisted: Option<u64>,
    first_msn: Option<u64>,
    last_msn: Option<u64>,
) -> Option<u64> {
    let (w, first, last) = (persisted?, first_msn?, last_msn?);
    (w > 0 && w <= last).then(|| w.max(first.saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn a_fresh_poller_resumes_from_the_persisted_watermark() {
        // Evicted after examining 101; the window is now 100..=110.
        assert_eq!(resume_watermark(Some(101), Some(100), Some(110)), Some(101));
        // The window moved past it: from the window's start.
        assert_eq!(resume_watermark(Some(90), Some(100), Some(110)), Some(99));
        // Nothing persisted, or an origin restart put it ahead: newest.
        assert_eq!(resume_watermark(None, Some(100), Some(110)), None);
        assert_eq!(resume_watermark(Some(0), Some(100), Some(110)), None);
        assert_eq!(resume_watermark(Some(5_000), Some(3), Some(9)), None);
        assert_eq!(resume_watermark(Some(5), None, None), None);
    }
    use crate::scte35::cues::CueKind;
    use crate::scte35::{encode, CueSpec};

    fn insert(event_id: u32, pts: Option<u64>) -> Vec<u8> {
        encode(&CueSpec::SpliceInsert {
            event_id,
            out_of_network: true,
            pts_time: pts,
            duration: Some(30 * 90_000),
            auto_return: true,
            unique_program_id: 1,
        })
    }

    fn pes_packet(pid: u16, pts: u64) -> [u8; 188] {
        let mut pes = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5];
        pes.push(0x21 | ((pts >> 29) as u8 & 0x0E));
        pes.extend_from_slice(&((((pts >> 14) & 0xFFFE) | 1) as u16).to_be_bytes());
        pes.extend_from_slice(&((((pts << 1) & 0xFFFE) | 1) as u16).to_be_bytes());
        build::ts_packet(pid, true, 0, &pes)
    }

    /// A segment: PAT, PMT (video 0x100, SCTE-35 0x1F0), a video PES at
    /// `first_pts`, then the section split over packets.
    fn segment(first_pts: u64, section: &[u8]) -> Vec<u8> {
        let mut pat = vec![
            0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00,
        ];
        let crc = scte35::crc32_mpeg2(&pat);
        pat.extend_from_slice(&crc.to_be_bytes());
        let mut out = Vec::new();
        for p in section_packets(0, 0, &pat)
            .into_iter()
            .chain(section_packets(
                0x1000,
                0,
                &pmt(0x100, &[(0x1B, 0x100), (0x86, 0x1F0)]),
            ))
            .chain([pes_packet(0x100, first_pts)])
            .chain(section_packets(0x1F0, 0, section))
        {
            out.extend_from_slice(&p);
        }
        out
    }

    #[test]
    fn ts_section_found_reassembled_and_timed() {
        // A section longer than one packet (many descriptors' worth).
        let sec = insert(77, Some(900_000 + 3 * 90_000));
        let seg = segment(900_000, &sec);
        let found = ts_sections(&seg);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].section, sec);
        assert_eq!(found[0].offset_ms, Some(3000));
        let (ev, warns) = detect_segment(
            &seg,
            50,
            Some(1_000_000),
            2000,
            &SegmentationPolicy::default(),
        );
        assert!(warns.is_empty(), "{warns:?}");
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].kind, ev[0].msn, ev[0].pdt_ms),
            (CueKind::Out, 51, Some(1_003_000))
        );
        assert_eq!(ev[0].duration_s, Some(30.0));
        assert_eq!(ev[0].break_id, "scte-77");
        assert_eq!(ev[0].dialect, Dialect::InbandTs);
    }

    #[test]
    fn ts_section_over_several_packets_and_bad_crc_dropped() {
        let mut bad = insert(5, None);
        let n = bad.len();
        bad[n - 1] ^= 0xFF;
        let (ev, warns) = detect_segment(
            &segment(0, &bad),
            1,
            None,
            2000,
            &SegmentationPolicy::default(),
        );
        assert!(ev.is_empty());
        assert_eq!(warns.len(), 1, "{warns:?}");
        // A 400-byte section spans three packets and still reassembles.
        let big = {
            let mut s = vec![0xFC, 0x30, 0x00];
            s.extend(std::iter::repeat_n(0xAB, 400));
            let len = (s.len() - 3 + 4) as u16;
            s[1] = 0x30 | (len >> 8) as u8;
            s[2] = len as u8;
            let crc = scte35::crc32_mpeg2(&s);
            s.extend_from_slice(&crc.to_be_bytes());
            s
        };
        let found = ts_sections(&segment(0, &big));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].section, big);
    }

    #[test]
    fn emsg_v0_and_v1() {
        let sec = insert(9, None);
        // v0: 1.5 s after the segment's start.
        let seg = emsg(0, 90_000, 135_000, 1, &sec);
        let (ev, _) = detect_segment(&seg, 10, Some(5_000), 2000, &SegmentationPolicy::default());
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].msn, ev[0].pdt_ms, ev[0].dialect),
            (10, Some(6_500), Dialect::InbandEmsg)
        );
        // v1: absolute time, against the fragment's tfdt: 4.2 s in.
        let mut seg = emsg(1, 1000, 104_200, 2, &sec);
        let tfdt = [
            0, 0, 0, 20, b't', b'f', b'd', b't', 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x86, 0xA0,
        ];
        let traf = [&[0, 0, 0, 28][..], b"traf", &tfdt].concat();
        let moof = [&[0, 0, 0, 36][..], b"moof", &traf].concat();
        seg.extend_from_slice(&moof);
        let (ev, _) = detect_segment(&seg, 10, Some(5_000), 2000, &SegmentationPolicy::default());
        assert_eq!((ev[0].msn, ev[0].pdt_ms), (12, Some(9_200)));
        // Another scheme is ignored.
        let mut other = emsg(0, 90_000, 0, 1, &sec);
        let at = other.windows(6).position(|w| w == b"scte35").unwrap();
        other[at + 5] = b'9';
        assert!(emsg_sections(&other).is_empty());
    }

    #[test]
    fn a_segment_gains_the_pid_and_the_section() {
        let plain = segment(0, &[]);
        // (`segment` always lists 0x1F0; strip it by rebuilding the PMT
        // without: the builder must add it back with a valid CRC.)
        let sec = insert(42, None);
        let with = with_scte35(&plain, 0x1F1, Some(&sec), 3);
        let found = ts_sections(&with);
        assert!(found.iter().any(|f| f.section == sec), "{found:?}");
        let (ev, w) = detect_segment(&with, 7, Some(0), 2000, &SegmentationPolicy::default());
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].break_id, "scte-42");
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..600usize {
            let d: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            let _ = ts_sections(&d);
            let _ = emsg_sections(&d);
            let mut t = d.clone();
            if let Some(b) = t.first_mut() {
                *b = 0x47;
            }
            let _ = detect_segment(&t, 0, None, 0, &SegmentationPolicy::default());
        }
    }
}
