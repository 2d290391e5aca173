//! `cf-ssai`: the operator's and tester's CLI over the core.
//!
//! Subcommands:
//!   scte35 [--hex]      decode one section per stdin line to one JSON line
use cf_ssai_core::scte35_json::{line_to_json, InputEncoding};
use std::io::{self, BufRead, BufWriter, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("scte35") => scte35(&args[1..]),
        _ => {
            eprintln!("usage: cf-ssai scte35 [--hex] < lines");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cf-ssai: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One JSON object per input line, in order; invalid UTF-8 is a per-line
/// error, not a crash.
fn scte35(args: &[String]) -> io::Result<()> {
    let enc = if args.iter().any(|a| a == "--hex") {
        InputEncoding::Hex
    } else {
        InputEncoding::Base64
    };
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        let v = match std::str::from_utf8(&buf) {
            Ok(line) => line_to_json(line, enc),
            Err(_) => serde_json::json!({"error": "line is not valid UTF-8"}),
        };
        serde_json::to_writer(&mut out, &v)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
