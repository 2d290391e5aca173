//! The live-playlist validator: checks the RFC 8216 rules that a stateless
//! splice must keep *across* reloads, nodes and viewers (listed in the
//! README's "The stateless splice" and below, rule by rule).
//!
//! A [`Registry`] is shared by every viewer and node of one variant: each
//! MSN must always name the same segment (URI, duration, discontinuity,
//! PDT) and the same discontinuity sequence number, and each DATERANGE ID
//! the same attributes. A [`Viewer`] checks one player's successive reloads
//! (MEDIA-SEQUENCE / DISCONTINUITY-SEQUENCE never go back, TARGETDURATION
//! never changes, window at least three target durations).

use cf_ssai_core::hls::{self, Line};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentFacts {
    pub uri: String,
    pub duration: String,
    pub discontinuity: bool,
    pub pdt: Option<String>,
    /// EXT-X-DISCONTINUITY-SEQUENCE + discontinuities up to this segment.
    pub disc_number: u64,
    pub map: Option<String>,
}

#[derive(Debug, Default)]
pub struct Registry {
    pub segments: HashMap<u64, SegmentFacts>,
    pub dateranges: HashMap<String, String>,
    pub target: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Viewer {
    last_msn: Option<u64>,
    last_disc_seq: Option<u64>,
}

/// Parsed facts of one served playlist.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub target: Option<u64>,
    pub media_sequence: u64,
    pub disc_sequence: u64,
    pub segments: Vec<(u64, SegmentFacts)>,
    pub dateranges: Vec<(String, String)>,
    pub endlist: bool,
    pub total_duration: f64,
}

pub fn snapshot(text: &str) -> Result<Snapshot, String> {
    let p = hls::tokenize(text).map_err(|e| e.to_string())?;
    let mut s = Snapshot::default();
    let mut msn = None;
    let mut disc = false;
    let mut pdt = None;
    let mut dur: Option<String> = None;
    let mut disc_number = 0;
    let mut map: Option<String> = None;
    for l in &p.lines {
        match l {
            Line::Tag { name, value, .. } => {
                let v = value.unwrap_or("");
                match *name {
                    "EXT-X-TARGETDURATION" => s.target = v.trim().parse().ok(),
                    "EXT-X-MEDIA-SEQUENCE" => {
                        s.media_sequence = v.trim().parse().map_err(|_| "bad MEDIA-SEQUENCE")?
                    }
                    "EXT-X-DISCONTINUITY-SEQUENCE" => {
                        s.disc_sequence = v.trim().parse().map_err(|_| "bad DISC-SEQUENCE")?
                    }
                    "EXT-X-DISCONTINUITY" => {
                        if disc {
                            return Err("two EXT-X-DISCONTINUITY on one segment".into());
                        }
                        disc = true
                    }
                    "EXT-X-PROGRAM-DATE-TIME" => pdt = Some(v.to_string()),
                    "EXT-X-MAP" => map = Some(v.to_string()),
                    "EXTINF" => {
                        let (t, secs) = hls::extinf_duration(v).ok_or("bad EXTINF")?;
                        s.total_duration += secs;
                        dur = Some(t.to_string())
                    }
                    "EXT-X-ENDLIST" => s.endlist = true,
                    "EXT-X-DATERANGE" => {
                        let id = hls::attr(v, "ID").ok_or("DATERANGE without ID")?;
                        s.dateranges.push((id.to_string(), v.to_string()));
                    }
                    _ => {}
                }
            }
            Line::Uri(u) => {
                let n = *msn.get_or_insert(s.media_sequence);
                if disc {
                    disc_number += 1;
                }
                s.segments.push((
                    n,
                    SegmentFacts {
                        uri: u.trim().to_string(),
                        duration: dur.take().ok_or("URI without EXTINF")?,
                        discontinuity: disc,
                        pdt: pdt.take(),
                        disc_number: s.disc_sequence + disc_number,
                        map: map.clone(),
                    },
                ));
                disc = false;
                msn = Some(n + 1);
            }
            _ => {}
        }
    }
    Ok(s)
}

impl Registry {
    /// Check one playlist against everything seen before (any viewer, any
    /// node), then remember it. Returns every violated rule.
    pub fn check(&mut self, viewer: &mut Viewer, text: &str, want_pdt: bool) -> Vec<String> {
        let mut v = Vec::new();
        let s = match snapshot(text) {
            Ok(s) => s,
            Err(e) => return vec![format!("unparseable: {e}")],
        };
        // Rule 3: TARGETDURATION never changes; every segment fits it.
        match (s.target, self.target) {
            (None, _) => v.push("no EXT-X-TARGETDURATION".into()),
            (Some(t), Some(prev)) if t != prev => {
                v.push(format!("TARGETDURATION changed {prev} -> {t}"))
            }
            (Some(t), _) => self.target = Some(t),
        }
        let target = s.target.unwrap_or(0);
        for (msn, f) in &s.segments {
            let d: f64 = f.duration.parse().unwrap_or(0.0);
            if d.round() as u64 > target {
                v.push(format!(
                    "MSN {msn}: EXTINF {d} exceeds TARGETDURATION {target}"
                ));
            }
            if want_pdt && f.pdt.is_none() {
                v.push(format!("MSN {msn}: no EXT-X-PROGRAM-DATE-TIME"));
            }
        }
        // Rule 4: window never below three target durations.
        if !s.endlist && s.total_duration + 0.001 < 3.0 * target as f64 {
            v.push(format!(
                "window {:.3}s is below three target durations ({}s)",
                s.total_duration,
                3 * target
            ));
        }
        // Rules 1 and 2: each MSN always the same segment with the same
        // discontinuity sequence number.
        for (msn, f) in &s.segments {
            match self.segments.get(msn) {
                Some(prev) => {
                    if prev.uri != f.uri || prev.duration != f.duration {
                        v.push(format!(
                            "MSN {msn} changed: {} ({}) -> {} ({})",
                            prev.uri, prev.duration, f.uri, f.duration
                        ));
                    }
                    if prev.discontinuity != f.discontinuity {
                        v.push(format!("MSN {msn}: discontinuity flag changed"));
                    }
                    if prev.pdt.is_some() && f.pdt.is_some() && prev.pdt != f.pdt {
                        v.push(format!(
                            "MSN {msn}: PDT changed {:?} -> {:?}",
                            prev.pdt, f.pdt
                        ));
                    }
                    if prev.disc_number != f.disc_number {
                        v.push(format!(
                            "MSN {msn}: discontinuity sequence number {} -> {}",
                            prev.disc_number, f.disc_number
                        ));
                    }
                }
                None => {
                    self.segments.insert(*msn, f.clone());
                }
            }
        }
        // Rule 7: an interstitial (any DATERANGE) keeps its attributes.
        for (id, attrs) in &s.dateranges {
            match self.dateranges.get(id) {
                Some(prev) if prev != attrs => {
                    v.push(format!("DATERANGE {id} changed: {prev} -> {attrs}"))
                }
                Some(_) => {}
                None => {
                    self.dateranges.insert(id.clone(), attrs.clone());
                }
            }
        }
        // Per viewer: sequences never go back.
        if let Some(prev) = viewer.last_msn {
            if s.media_sequence < prev {
                v.push(format!(
                    "MEDIA-SEQUENCE went back {prev} -> {}",
                    s.media_sequence
                ));
            }
        }
        if let Some(prev) = viewer.last_disc_seq {
            if s.disc_sequence < prev {
                v.push(format!(
                    "DISCONTINUITY-SEQUENCE went back {prev} -> {}",
                    s.disc_sequence
                ));
            }
        }
        viewer.last_msn = Some(s.media_sequence);
        viewer.last_disc_seq = Some(s.disc_sequence);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pl(seq: u64, dseq: u64, segs: &[(&str, bool)]) -> String {
        let mut s = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{seq}\n#EXT-X-DISCONTINUITY-SEQUENCE:{dseq}\n");
        for (u, d) in segs {
            if *d {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            s.push_str(&format!("#EXTINF:2.000,\n{u}\n"));
        }
        s
    }

    fn run(a: &str, b: &str) -> Vec<String> {
        let mut r = Registry::default();
        let mut v = Viewer::default();
        assert!(r.check(&mut v, a, false).is_empty(), "first is valid");
        r.check(&mut v, b, false)
    }

    // The validator must fail on known-bad sequences, one per rule.
    #[test]
    fn catches_msn_renaming() {
        let e = run(
            &pl(1, 0, &[("a", false), ("b", false), ("c", false)]),
            &pl(2, 0, &[("X", false), ("c", false), ("d", false)]),
        );
        assert!(e.iter().any(|x| x.contains("MSN 2 changed")), "{e:?}");
    }

    #[test]
    fn catches_wrong_discontinuity_sequence() {
        let e = run(
            &pl(1, 0, &[("a", true), ("b", false), ("c", false)]),
            &pl(2, 0, &[("b", false), ("c", false), ("d", false)]),
        );
        assert!(
            e.iter()
                .any(|x| x.contains("discontinuity sequence number")),
            "{e:?}"
        );
        let ok = run(
            &pl(1, 0, &[("a", true), ("b", false), ("c", false)]),
            &pl(2, 1, &[("b", false), ("c", false), ("d", false)]),
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn catches_target_change_short_window_and_long_segments() {
        let a = pl(1, 0, &[("a", false), ("b", false), ("c", false)]);
        let b = a.replace("TARGETDURATION:2", "TARGETDURATION:3");
        assert!(run(&a, &b)
            .iter()
            .any(|x| x.contains("TARGETDURATION changed")));
        let short = pl(2, 0, &[("b", false)]);
        assert!(run(&a, &short)
            .iter()
            .any(|x| x.contains("three target durations")));
        let long = pl(2, 0, &[("b", false), ("c", false), ("d", false)])
            .replace("#EXTINF:2.000,\nd", "#EXTINF:6.000,\nd");
        assert!(run(&a, &long).iter().any(|x| x.contains("exceeds")));
    }

    #[test]
    fn catches_daterange_changes_and_missing_pdt() {
        let a = format!(
            "{}#EXT-X-DATERANGE:ID=\"i\",DURATION=30\n",
            pl(1, 0, &[("a", false), ("b", false), ("c", false)])
        );
        let b = a.replace("DURATION=30", "DURATION=31");
        assert!(run(&a, &b)
            .iter()
            .any(|x| x.contains("DATERANGE i changed")));
        let mut r = Registry::default();
        let e = r.check(&mut Viewer::default(), &a, true);
        assert!(e.iter().any(|x| x.contains("PROGRAM-DATE-TIME")));
    }

    #[test]
    fn catches_discontinuity_flag_change() {
        // MSN 2 first without, then with a discontinuity.
        let e = run(
            &pl(1, 0, &[("a", false), ("b", false), ("c", false)]),
            &pl(2, 0, &[("b", true), ("c", false), ("d", false)]),
        );
        assert!(
            e.iter()
                .any(|x| x.contains("MSN 2: discontinuity flag changed")),
            "{e:?}"
        );
    }

    #[test]
    fn catches_pdt_change() {
        let with_pdt = |seq: u64, segs: &[(&str, &str)]| {
            let mut s = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{seq}\n");
            for (u, t) in segs {
                s.push_str(&format!(
                    "#EXT-X-PROGRAM-DATE-TIME:{t}\n#EXTINF:2.000,\n{u}\n"
                ));
            }
            s
        };
        let a = with_pdt(
            1,
            &[
                ("a", "2025-01-01T00:00:00.000Z"),
                ("b", "2025-01-01T00:00:02.000Z"),
                ("c", "2025-01-01T00:00:04.000Z"),
            ],
        );
        let b = with_pdt(
            2,
            &[
                ("b", "2025-01-01T00:00:02.500Z"),
                ("c", "2025-01-01T00:00:04.000Z"),
                ("d", "2025-01-01T00:00:06.000Z"),
            ],
        );
        let e = run(&a, &b);
        assert!(e.iter().any(|x| x.contains("MSN 2: PDT changed")), "{e:?}");
    }

    #[test]
    fn catches_two_discontinuities_on_one_segment() {
        let mut r = Registry::default();
        let bad = pl(1, 0, &[("a", false), ("b", true), ("c", false)]).replace(
            "#EXT-X-DISCONTINUITY\n",
            "#EXT-X-DISCONTINUITY\n#EXT-X-DISCONTINUITY\n",
        );
        let e = r.check(&mut Viewer::default(), &bad, false);
        assert!(
            e.iter().any(|x| x.contains("two EXT-X-DISCONTINUITY")),
            "{e:?}"
        );
    }

    #[test]
    fn catches_sequences_going_back() {
        let a = pl(5, 0, &[("a", false), ("b", false), ("c", false)]);
        let b = pl(4, 0, &[("z", false), ("a", false), ("b", false)]);
        assert!(run(&a, &b)
            .iter()
            .any(|x| x.contains("MEDIA-SEQUENCE went back")));
    }
}
