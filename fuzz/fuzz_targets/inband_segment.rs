#![no_main]
// Any bytes as a media segment (TS or CMAF): in-band SCTE-35 detection
// never panics; the bytes are also tried behind a valid TS sync pattern
// (every 188th byte 0x47) so the packet, PSI and section paths are reached.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = Default::default();
    let _ = cf_ssai_core::inband::detect_segment(data, 10, Some(0), 2000, &policy);
    let mut ts = data.to_vec();
    for i in (0..ts.len()).step_by(188) {
        ts[i] = 0x47;
    }
    let _ = cf_ssai_core::inband::detect_segment(&ts, 10, Some(0), 2000, &policy);
    let _ = cf_ssai_core::inband::emsg_sections(data);
});
