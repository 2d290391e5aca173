#!/usr/bin/env bash
# The Channel DO's storage writes per channel-hour, before (the whole state
# as one value on every change, the poll stats beside it on every poll) and
# after (a small header and a key per break, only what changed): a
# demo-rate channel (1.92 s segments, a 30.72 s break every 76.8 s, pods of
# two ads) driven for HOURS (default 1) by the testkit's driver of the
# channel machine, polled at the alarm times the machine asks for; the
# last hour is counted. Prints the README's figures.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
hours="${1:-1}"
cargo build -q --release -p bench-wasm --bin bench-inputs
out=$(mktemp -d)
target/release/bench-inputs "$hours" "$out" > "$out/meta.json"
node -e '
const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).do_storage_per_hour;
const f = (n) => n.toLocaleString("en-US");
const row = (name, w, extra) => console.log(`| ${name} | ${f(w.writes)} | ${(w.bytes / 1e6).toFixed(2)} MB | ${f(Math.round(w.bytes / w.writes))} B | ${f(w.max_write)} B${extra} |`);
console.log(`DO storage per channel-hour (after ${process.argv[2]} h):`);
console.log("| layout | writes | bytes | bytes per write | largest write |");
console.log("|---|---|---|---|---|");
row("before: one value + poll stats", m.single_value, "");
row("after: header + a key per break", m.per_key, ` (header ${f(m.per_key.max_header)} B)`);
' "$out/meta.json" "$hours"
rm -rf "$out"
