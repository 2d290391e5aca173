//! A live-origin simulator: a channel's variant playlists as a pure
//! function of `now`, with SCTE-35 breaks in a chosen marker dialect. Used
//! by the core's tests (successive windows over time) and by
//! `cf-ssai origin`, the local live origin of the demo and the integration
//! tests.

use cf_ssai_core::hls;
use cf_ssai_core::model::TrackKind;
use cf_ssai_core::scte35::{self, CueSpec, SegmentationTypeId, UpidType};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimDialect {
    CueOut,
    Daterange,
    Oatcls,
    Scte35Tag,
    Splicepoint,
    None,
    /// No playlist marker: SCTE-35 only in the media (a TS PID or CMAF
    /// `emsg`, written by the origin from [`SimChannel::inband_section`]).
    Inband,
}

impl SimDialect {
    pub fn parse(s: &str) -> Option<SimDialect> {
        Some(match s {
            "cue-out" => SimDialect::CueOut,
            "daterange" => SimDialect::Daterange,
            "oatcls" => SimDialect::Oatcls,
            "scte35-tag" => SimDialect::Scte35Tag,
            "splicepoint" => SimDialect::Splicepoint,
            "none" => SimDialect::None,
            "inband" => SimDialect::Inband,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimVariant {
    pub name: String,
    pub bandwidth: u64,
    pub resolution: Option<String>,
    pub codecs: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimChannel {
    /// Segment duration in milliseconds (e.g. 1920).
    pub cadence_ms: u64,
    /// Segments in the live window.
    pub window: u64,
    /// Epoch ms at which MSN 0 starts.
    pub epoch_ms: i64,
    pub pdt: bool,
    pub fmp4: bool,
    /// AES-128 key line on content segments.
    pub key: bool,
    pub dialect: SimDialect,
    /// A break starts every `break_every` segments (at MSN multiples, from
    /// `first_break`), lasting `break_len` segments.
    pub break_every: u64,
    pub first_break: u64,
    pub break_len: u64,
    pub variants: Vec<SimVariant>,
    /// How many distinct media segments exist per variant (URIs name
    /// `seg{msn % loop_len}` files).
    pub loop_len: u64,
    /// Whether the origin's own discontinuity at MSN multiples of this
    /// (0 = never) appears, to test passing origin discontinuities.
    pub origin_disc_every: u64,
    /// DATERANGE dialect: also announce each break this many segments
    /// ahead of its first segment (START-DATE in the future), as a
    /// packager does with a splice_insert received with pre-roll.
    #[serde(default)]
    pub signal_ahead: u64,
    /// Demuxed: the variants are video only, with an audio group in two
    /// languages and a WebVTT subtitle group ([`ALTERNATES`]), every
    /// rendition on the same segment timeline.
    #[serde(default)]
    pub demuxed: bool,
    /// LL-HLS: partial segments per segment (0 = none). The playlist then
    /// has `EXT-X-PART-INF`, blocking-reload server control, the parts of
    /// the segments in its last three target durations and of the segment
    /// in progress, a preload hint and rendition reports.
    #[serde(default)]
    pub ll_parts: u64,
}

/// One `EXT-X-MEDIA` rendition of a demuxed channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimAlternate {
    /// Directory and playlist path (`{name}/index.m3u8`).
    pub name: &'static str,
    pub kind: TrackKind,
    pub group: &'static str,
    pub language: &'static str,
    pub label: &'static str,
    pub default: bool,
}

pub const AUDIO_GROUP: &str = "aud";
pub const SUBTITLE_GROUP: &str = "subs";

/// The audio (English, Spanish) and subtitle (English) renditions a
/// demuxed channel offers.
pub const ALTERNATES: [SimAlternate; 3] = [
    SimAlternate {
        name: "aud-en",
        kind: TrackKind::Audio,
        group: AUDIO_GROUP,
        language: "en",
        label: "English",
        default: true,
    },
    SimAlternate {
        name: "aud-es",
        kind: TrackKind::Audio,
        group: AUDIO_GROUP,
        language: "es",
        label: "Espanol",
        default: false,
    },
    SimAlternate {
        name: "sub-en",
        kind: TrackKind::Subtitles,
        group: SUBTITLE_GROUP,
        language: "en",
        label: "English",
        default: true,
    },
];

impl Default for SimChannel {
    fn default() -> Self {
        SimChannel {
            cadence_ms: 2000,
            window: 6,
            epoch_ms: 1_735_689_600_000,
            pdt: true,
            fmp4: false,
            key: false,
            dialect: SimDialect::CueOut,
            break_every: 30,
            first_break: 10,
            break_len: 15,
            variants: vec![
                SimVariant {
                    name: "low".into(),
                    bandwidth: 800_000,
                    resolution: Some("640x360".into()),
                    codecs: "avc1.42c01e,mp4a.40.2".into(),
                },
                SimVariant {
                    name: "high".into(),
                    bandwidth: 2_500_000,
                    resolution: Some("1280x720".into()),
                    codecs: "avc1.4d401f,mp4a.40.2".into(),
                },
            ],
            loop_len: 1_000_000,
            origin_disc_every: 0,
            signal_ahead: 0,
            demuxed: false,
            ll_parts: 0,
        }
    }
}

impl SimChannel {
    /// The newest MSN published at `now_ms` (a segment is published once
    /// complete).
    pub fn live_msn(&self, now_ms: i64) -> Option<u64> {
        let t = now_ms - self.epoch_ms;
        if t < self.cadence_ms as i64 {
            return None;
        }
        Some((t / self.cadence_ms as i64) as u64 - 1)
    }

    /// (anchor MSN, event id) of the break covering or starting at `msn`.
    pub fn break_at(&self, msn: u64) -> Option<(u64, u32)> {
        if self.break_every == 0 || msn < self.first_break || self.dialect == SimDialect::None {
            return None;
        }
        let k = (msn - self.first_break) / self.break_every;
        let anchor = self.first_break + k * self.break_every;
        (msn < anchor + self.break_len).then_some((anchor, 1000 + k as u32))
    }

    pub fn pdt_of(&self, msn: u64) -> i64 {
        self.epoch_ms + (msn * self.cadence_ms) as i64
    }

    /// The alternate renditions (none unless demuxed).
    pub fn alternates(&self) -> &'static [SimAlternate] {
        if self.demuxed {
            &ALTERNATES
        } else {
            &[]
        }
    }

    /// The kind of the rendition named `name` (a variant or an alternate).
    pub fn kind_of(&self, name: &str) -> TrackKind {
        match self.alternates().iter().find(|a| a.name == name) {
            Some(a) => a.kind,
            None if self.demuxed => TrackKind::Video,
            None => TrackKind::Muxed,
        }
    }

    pub fn master(&self) -> String {
        let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        for a in self.alternates() {
            let yes = |b: bool| if b { "YES" } else { "NO" };
            let _ = write!(
                s,
                "#EXT-X-MEDIA:TYPE={},GROUP-ID=\"{}\",NAME=\"{}\",LANGUAGE=\"{}\",DEFAULT={},AUTOSELECT=YES",
                if a.kind == TrackKind::Audio { "AUDIO" } else { "SUBTITLES" },
                a.group,
                a.label,
                a.language,
                yes(a.default),
            );
            if a.kind == TrackKind::Audio {
                s.push_str(",CHANNELS=\"2\"");
            }
            let _ = writeln!(s, ",URI=\"{}/index.m3u8\"", a.name);
        }
        for v in &self.variants {
            let _ = write!(
                s,
                "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\"",
                v.bandwidth, v.codecs
            );
            if let Some(r) = &v.resolution {
                let _ = write!(s, ",RESOLUTION={r}");
            }
            if self.demuxed {
                let _ = write!(s, ",AUDIO=\"{AUDIO_GROUP}\",SUBTITLES=\"{SUBTITLE_GROUP}\"");
            }
            let _ = writeln!(s, "\n{}/index.m3u8", v.name);
        }
        s
    }

    /// The variant's (or alternate rendition's) media playlist at `now_ms`.
    pub fn media(&self, variant: &str, now_ms: i64) -> String {
        let subtitles = self.kind_of(variant) == TrackKind::Subtitles;
        let mut s = String::with_capacity(1024);
        let td = self.cadence_ms.div_ceil(1000).max(1);
        let live = self.live_msn(now_ms);
        let first = live.map_or(0, |l| (l + 1).saturating_sub(self.window));
        let disc_seq = if self.origin_disc_every > 0 {
            (1..first)
                .filter(|m| m % self.origin_disc_every == 0)
                .count()
        } else {
            0
        };
        let _ = write!(
            s,
            "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{td}\n#EXT-X-MEDIA-SEQUENCE:{first}\n",
            if self.fmp4 && !subtitles { 7 } else { 3 }
        );
        if disc_seq > 0 {
            let _ = writeln!(s, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}");
        }
        let part_s = self.part_ms() as f64 / 1000.0;
        if self.ll_parts > 0 {
            let _ = write!(
                s,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n#EXT-X-PART-INF:PART-TARGET={part_s:.3}\n",
                3.0 * part_s
            );
        }
        let Some(live) = live else {
            return s;
        };
        let ext = match (subtitles, self.fmp4) {
            (true, _) => "vtt",
            (false, true) => "m4s",
            (false, false) => "ts",
        };
        for msn in first..=live {
            if self.origin_disc_every > 0 && msn > 0 && msn % self.origin_disc_every == 0 {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if msn == first {
                if self.fmp4 && !subtitles {
                    s.push_str("#EXT-X-MAP:URI=\"init.mp4\"\n");
                }
                if self.key && !subtitles {
                    s.push_str("#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\"\n");
                }
            }
            self.markers(msn, &mut s);
            if self.pdt {
                let _ = writeln!(
                    s,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    hls::format_pdt_ms(self.pdt_of(msn))
                );
            }
            // Parts of the segments in the last three target durations.
            if self.ll_parts > 0 && (live - msn + 1) * self.cadence_ms <= 3 * td * 1000 {
                self.parts(msn, self.ll_parts, ext, &mut s);
            }
            let _ = writeln!(
                s,
                "#EXTINF:{:.3},\nseg{}.{ext}",
                self.cadence_ms as f64 / 1000.0,
                msn % self.loop_len
            );
        }
        if self.ll_parts > 0 {
            // The segment in progress: its markers, its parts so far, the
            // next part's hint, where the other renditions are.
            let next = live + 1;
            let done = self.parts_done(next, now_ms);
            self.markers(next, &mut s);
            self.parts(next, done, ext, &mut s);
            let _ = writeln!(
                s,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part{}.{done}.{ext}\"",
                next % self.loop_len
            );
            for v in self.variants.iter().filter(|v| v.name != variant) {
                let (msn, part) = match done {
                    0 => (live, self.ll_parts - 1),
                    d => (next, d - 1),
                };
                let _ = writeln!(
                    s,
                    "#EXT-X-RENDITION-REPORT:URI=\"../{}/index.m3u8\",LAST-MSN={msn},LAST-PART={part}",
                    v.name
                );
            }
        }
        s
    }

    /// LL-HLS part duration.
    pub fn part_ms(&self) -> u64 {
        self.cadence_ms / self.ll_parts.max(1)
    }

    /// Parts of segment `msn` complete at `now_ms` (all of them once the
    /// segment is).
    pub fn parts_done(&self, msn: u64, now_ms: i64) -> u64 {
        let into = now_ms - self.pdt_of(msn);
        (into.max(0) as u64 / self.part_ms().max(1)).min(self.ll_parts)
    }

    fn parts(&self, msn: u64, n: u64, ext: &str, s: &mut String) {
        for i in 0..n {
            // Every part starts with a key frame (the LL media has a GOP
            // of one part).
            let _ = writeln!(
                s,
                "#EXT-X-PART:DURATION={:.3},URI=\"part{}.{i}.{ext}\",INDEPENDENT=YES",
                self.part_ms() as f64 / 1000.0,
                msn % self.loop_len
            );
        }
    }

    fn markers(&self, msn: u64, s: &mut String) {
        if self.dialect == SimDialect::Daterange && self.signal_ahead > 0 {
            let at = msn + self.signal_ahead;
            if let Some((anchor, id)) = self.break_at(at).filter(|(a, _)| *a == at) {
                self.daterange_out(anchor, id, s);
            }
        }
        let (anchor, id) = match self.break_at(msn) {
            Some(b) => b,
            None => match msn
                .checked_sub(self.break_len)
                .and_then(|m| self.break_at(m))
            {
                // The segment right after a break: the IN marker.
                Some((a, id)) if a + self.break_len == msn => {
                    self.in_marker(id, msn, s);
                    return;
                }
                _ => return,
            },
        };
        let dur = self.break_len as f64 * self.cadence_ms as f64 / 1000.0;
        let dur_ticks = self.break_len * self.cadence_ms * 90;
        let elapsed = (msn - anchor) as f64 * self.cadence_ms as f64 / 1000.0;
        let out = scte35::encode(&CueSpec::SpliceInsert {
            event_id: id,
            out_of_network: true,
            pts_time: Some((msn * self.cadence_ms * 90) % scte35::PTS_MODULUS),
            duration: Some(dur_ticks),
            auto_return: true,
            unique_program_id: 1,
        });
        let first = msn == anchor;
        match self.dialect {
            SimDialect::CueOut | SimDialect::Oatcls => {
                if first {
                    if self.dialect == SimDialect::Oatcls {
                        let _ = writeln!(s, "#EXT-OATCLS-SCTE35:{}", scte35::to_base64(&out));
                    }
                    let _ = writeln!(s, "#EXT-X-CUE-OUT:{dur:.3}");
                } else if self.dialect == SimDialect::Oatcls {
                    let _ = writeln!(
                        s,
                        "#EXT-X-CUE-OUT-CONT:ElapsedTime={elapsed:.3},Duration={dur:.3},SCTE35={}",
                        scte35::to_base64(&out)
                    );
                } else {
                    let _ = writeln!(s, "#EXT-X-CUE-OUT-CONT:{elapsed:.3}/{dur:.3}");
                }
            }
            SimDialect::Daterange if first => self.daterange_out(msn, id, s),
            SimDialect::Scte35Tag if first => {
                let ts = scte35::encode(&CueSpec::TimeSignal {
                    pts_time: Some((msn * self.cadence_ms * 90) % scte35::PTS_MODULUS),
                    segmentation_event_id: id,
                    segmentation_type_id: SegmentationTypeId::PROVIDER_PLACEMENT_OPPORTUNITY_START,
                    duration: Some(dur_ticks),
                    upid_type: UpidType::ADI,
                    upid: format!("cf-ssai:break:{id}").into_bytes(),
                    segment_num: 1,
                    segments_expected: 1,
                });
                let _ = writeln!(
                    s,
                    "#EXT-X-SCTE35:CUE=\"{}\",CUE-OUT=YES",
                    scte35::to_base64(&ts)
                );
            }
            SimDialect::Splicepoint if first => {
                let _ = writeln!(s, "#EXT-X-SPLICEPOINT-SCTE35:{}", scte35::to_base64(&out));
            }
            _ => {}
        }
    }

    /// The DATERANGE SCTE35-OUT of the break starting at `anchor`.
    fn daterange_out(&self, anchor: u64, id: u32, s: &mut String) {
        let out = scte35::encode(&CueSpec::SpliceInsert {
            event_id: id,
            out_of_network: true,
            pts_time: Some((anchor * self.cadence_ms * 90) % scte35::PTS_MODULUS),
            duration: Some(self.break_len * self.cadence_ms * 90),
            auto_return: true,
            unique_program_id: 1,
        });
        let _ = writeln!(
            s,
            "#EXT-X-DATERANGE:ID=\"splice-{id}\",START-DATE=\"{}\",PLANNED-DURATION={:.3},SCTE35-OUT=0x{}",
            hls::format_pdt_ms(self.pdt_of(anchor)),
            self.break_len as f64 * self.cadence_ms as f64 / 1000.0,
            scte35::to_hex(&out)
        );
    }

    fn in_marker(&self, id: u32, msn: u64, s: &mut String) {
        let inn = scte35::encode(&CueSpec::SpliceInsert {
            event_id: id,
            out_of_network: false,
            pts_time: Some((msn * self.cadence_ms * 90) % scte35::PTS_MODULUS),
            duration: None,
            auto_return: false,
            unique_program_id: 1,
        });
        match self.dialect {
            SimDialect::CueOut | SimDialect::Oatcls => s.push_str("#EXT-X-CUE-IN\n"),
            SimDialect::Daterange => {
                let _ = writeln!(
                    s,
                    "#EXT-X-DATERANGE:ID=\"splice-{id}-in\",START-DATE=\"{}\",SCTE35-IN=0x{}",
                    hls::format_pdt_ms(self.pdt_of(msn)),
                    scte35::to_hex(&inn)
                );
            }
            SimDialect::Scte35Tag => {
                let ts = scte35::encode(&CueSpec::TimeSignal {
                    pts_time: Some((msn * self.cadence_ms * 90) % scte35::PTS_MODULUS),
                    segmentation_event_id: id,
                    segmentation_type_id: SegmentationTypeId::PROVIDER_PLACEMENT_OPPORTUNITY_END,
                    duration: None,
                    upid_type: UpidType::ADI,
                    upid: format!("cf-ssai:break:{id}").into_bytes(),
                    segment_num: 1,
                    segments_expected: 1,
                });
                let _ = writeln!(
                    s,
                    "#EXT-X-SCTE35:CUE=\"{}\",CUE-IN=YES",
                    scte35::to_base64(&ts)
                );
            }
            SimDialect::Splicepoint => {
                let _ = writeln!(s, "#EXT-X-SPLICEPOINT-SCTE35:{}", scte35::to_base64(&inn));
            }
            SimDialect::None | SimDialect::Inband => {}
        }
    }

    /// The in-band splice_insert (immediate: it splices at the start of the
    /// segment carrying it) of the break starting at `msn`, on an in-band
    /// channel.
    pub fn inband_section(&self, msn: u64) -> Option<Vec<u8>> {
        if self.dialect != SimDialect::Inband {
            return None;
        }
        let (anchor, id) = self.break_at(msn)?;
        (anchor == msn).then(|| {
            scte35::encode(&CueSpec::SpliceInsert {
                event_id: id,
                out_of_network: true,
                pts_time: None,
                duration: Some(self.break_len * self.cadence_ms * 90),
                auto_return: true,
                unique_program_id: 1,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cf_ssai_core::{hls::media, scte35::cues};

    #[test]
    fn every_dialect_is_detected_with_a_stable_id() {
        for d in [
            SimDialect::CueOut,
            SimDialect::Daterange,
            SimDialect::Oatcls,
            SimDialect::Scte35Tag,
            SimDialect::Splicepoint,
        ] {
            let ch = SimChannel {
                dialect: d,
                window: 40,
                ..Default::default()
            };
            let now = ch.pdt_of(45);
            let text = ch.media("low", now);
            let m = media::parse(&text).unwrap();
            let det = cues::detect(&m, &Default::default());
            assert!(det.warnings.is_empty(), "{d:?} {:?}", det.warnings);
            let outs: Vec<_> = det
                .events
                .iter()
                .filter(|e| e.kind == cues::CueKind::Out)
                .collect();
            assert_eq!(outs.len(), 2, "{d:?}: {:?}", det.events);
            assert_eq!(outs[0].msn, 10, "{d:?}");
            let want = if d == SimDialect::CueOut {
                "pdt-1735689620"
            } else {
                "scte-1000"
            };
            assert_eq!(outs[0].break_id, want, "{d:?}");
            assert_eq!(outs[0].duration_s, Some(30.0), "{d:?}");
            let ins: Vec<_> = det
                .events
                .iter()
                .filter(|e| e.kind == cues::CueKind::In)
                .collect();
            assert_eq!(ins[0].msn, 25, "{d:?}");
        }
    }
}
