#![no_main]
// Any playlist text: marker detection and the sequencer never panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = std::str::from_utf8(data) else { return };
    if let Ok(m) = cf_ssai_core::media::parse(t) {
        let det = cf_ssai_core::cues::detect(&m, &Default::default());
        for e in &det.events {
            let _ = cf_ssai_core::sequencer::record_from_cue(e, m.cadence_ms(), &Default::default(), 0);
        }
        let _ = cf_ssai_core::sequencer::reconcile(&det.events, &[]);
    }
});
