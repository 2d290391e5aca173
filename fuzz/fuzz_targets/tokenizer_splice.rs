#![no_main]
// Any playlist text: tokenize → render is lossless, and the splice and
// master rewrite never panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = std::str::from_utf8(data) else { return };
    if let Ok(p) = cf_ssai_core::hls::tokenize(t) {
        assert_eq!(cf_ssai_core::hls::render(&p), t);
    }
    let url = url::Url::parse("https://origin.example/live/ch/index.m3u8").unwrap();
    let v = cf_ssai_core::splice::Variant::default();
    let s = cf_ssai_core::splice::SpliceSettings::default();
    for mode in [cf_ssai_core::splice::Mode::Ssai, cf_ssai_core::splice::Mode::Sgai] {
        let _ = cf_ssai_core::splice::splice(&cf_ssai_core::splice::SpliceInput {
            origin: t, playlist_url: &url, breaks: &[], disc_base: 0, variant: &v, mode, settings: &s,
        });
    }
    let _ = cf_ssai_core::master::rewrite_master(&cf_ssai_core::master::MasterInput {
        origin: t, origin_url: &url, self_prefix: "/o/c/", carry: &[],
    });
});
