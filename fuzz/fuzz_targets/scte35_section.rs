#![no_main]
// Any bytes: the section decoder and its JSON view never panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = cf_ssai_core::scte35::parse(data) {
        let _ = cf_ssai_core::scte35_json::section_to_json(&s);
        for d in s.segmentation_descriptors() {
            if let Some(x) = &d.detail {
                let _ = cf_ssai_core::scte35::decode_upid(x.segmentation_upid_type, x.segmentation_upid);
            }
        }
    }
    if let Ok(t) = std::str::from_utf8(data) {
        let _ = cf_ssai_core::scte35_json::line_to_json(t, cf_ssai_core::scte35_json::InputEncoding::Base64);
        let _ = cf_ssai_core::scte35_json::line_to_json(t, cf_ssai_core::scte35_json::InputEncoding::Hex);
    }
});
