fn main() {
    let d = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("meta.json")).unwrap()).unwrap();
    let now = meta["dash"]["now_ms"].as_f64().unwrap();
    let v = std::fs::read(d.join("dash/view.bin")).unwrap();
    let p = std::fs::read(d.join("dash/pod.bin")).unwrap();
    let m = std::fs::read_to_string(d.join("dash/manifest.mpd")).unwrap();
    let t = std::time::Instant::now();
    let n = 20000;
    let mut x = 0;
    for _ in 0..n { x += bench_wasm::request_dash(&v, &p, &m, now); }
    eprintln!("{} us/req ({x})", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
