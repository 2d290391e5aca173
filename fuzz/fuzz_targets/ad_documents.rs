#![no_main]
// Any ad-server answer: VAST, VMAP, the external decision API's JSON and
// HLS MediaFile playlists parse to a value or a clear error, never a panic;
// whatever parses goes on through pod building.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = std::str::from_utf8(data) else { return };
    if let Ok(doc) = cf_ssai_core::vast::parse(t) {
        for ad in cf_ssai_core::vast::ordered_inline_ads(&doc) {
            let _ = cf_ssai_core::vast::pod_item(ad, |_| Vec::new());
        }
        let _ = cf_ssai_core::vast::pod_from_vast(doc, "b", 30.0, 2000, 0.0);
    }
    if let Ok(breaks) = cf_ssai_core::vmap::parse(t) {
        let _ = cf_ssai_core::vmap::select(&breaks, "b", false, Some(0), 1000);
    }
    if let Ok(r) = cf_ssai_core::decision::parse_external(t) {
        let mut reasons = Vec::new();
        let _ = cf_ssai_core::decision::map_external(&r, &[], &mut reasons);
    }
    let base = url::Url::parse("https://ads.test/c/master.m3u8").unwrap();
    for (u, bw, res, codecs) in cf_ssai_core::decision::master_variants(t, &base) {
        let _ = (u, bw, res, codecs);
    }
    let _ = cf_ssai_core::decision::rendition_from_media(t, &base, 1, None, None);
});
