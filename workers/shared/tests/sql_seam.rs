//! The storage seam holds: no SQL text in the workers outside
//! `workers/shared/src/store/` (one module per table family). Runs in
//! `cargo test --workspace` (README command 2); a failure lists each
//! offending line as `path:line: text`.

use std::path::{Path, PathBuf};

/// What marks SQL in Rust source: the statements the workers run, and
/// preparing one.
const MARKERS: [&str; 5] = ["SELECT ", "INSERT ", "UPDATE ", "DELETE FROM", "prepare("];

/// Where SQL may live.
const STORE: &str = "workers/shared/src/store/";

/// Files that still hold SQL because another engineer owns them for now,
/// with how many lines at most: each has its store function ready. More
/// lines there fail as anywhere else; once the file is clean its entry is
/// reported as stale (not failed, so the clean-up commit is not blocked).
const PENDING: &[(&str, usize)] = &[];

/// The lines of `text` (a file at `path`, relative to the repository)
/// that carry SQL outside the store, as `path:line: text`. Comment lines
/// are prose, not statements.
fn offending(path: &str, text: &str) -> Vec<String> {
    if path.starts_with(STORE) {
        return Vec::new();
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| MARKERS.iter().any(|m| l.contains(m)))
        .map(|(i, l)| format!("{path}:{}: {}", i + 1, l.trim()))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn repo_root() -> PathBuf {
    // workers/shared → the repository.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn no_sql_outside_the_store() {
    let root = repo_root();
    let mut files = Vec::new();
    for w in std::fs::read_dir(root.join("workers"))
        .expect("workers/")
        .flatten()
    {
        rust_files(&w.path().join("src"), &mut files);
    }
    assert!(
        files.len() > 10,
        "found only {} worker sources",
        files.len()
    );
    let mut bad = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap_or(&f)
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&f).expect("readable source");
        let lines = offending(&rel, &text);
        match PENDING.iter().find(|(p, _)| *p == rel) {
            Some((_, n)) if lines.is_empty() => {
                eprintln!("{rel}: no SQL left, remove its PENDING entry (was {n})");
            }
            Some((_, n)) if lines.len() <= *n => {}
            Some((_, n)) => bad.push(format!(
                "{rel}: {} SQL lines, PENDING allows {n}\n  {}",
                lines.len(),
                lines.join("\n  ")
            )),
            None => bad.extend(lines),
        }
    }
    assert!(
        bad.is_empty(),
        "SQL outside {STORE} (move it into a store module):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_finds_sql_and_spares_the_store() {
    let bad = "fn f(db: &D1Database) {\n    let n = db\n        .prepare(\"SELECT COUNT(*) FROM orgs\")\n        .first(None);\n    // an UPDATE in prose is no statement\n    let s = \"DELETE FROM ads WHERE id = ?1\";\n}\n";
    assert_eq!(
        offending("workers/manifest/src/admin.rs", bad),
        vec![
            "workers/manifest/src/admin.rs:3: .prepare(\"SELECT COUNT(*) FROM orgs\")",
            "workers/manifest/src/admin.rs:6: let s = \"DELETE FROM ads WHERE id = ?1\";",
        ]
    );
    let consts = "const X: &str = \"INSERT INTO metrics (scope) VALUES (?1)\";\nconst Y: &str = \"UPDATE channels SET health = 'ok'\";\n";
    assert_eq!(offending("workers/decision/src/lib.rs", consts).len(), 2);
    assert!(offending("workers/shared/src/store/orgs.rs", bad).is_empty());
    assert!(offending("workers/beacon/src/lib.rs", "let x = selected(1);\n").is_empty());
}
