//! The core's layering, checked from its source: bottom to top `model`,
//! `net`, `openmetrics`, `wire` (one layer), then `hls`, `scte35`, `ads`,
//! `channel`, `splice`, `control`. A module may use its own layer and the
//! layers below it, never one above, and the top-level modules' import
//! graph has no cycle. Paths are read from code only: comments, string
//! and char literals and `#[cfg(test)]` items are blanked first, so a doc
//! link or a test helper does not count.
//!
//! The same reading checks the lint discipline `lib.rs` denies crate-wide:
//! no `allow`/`expect` at module level (an inner attribute, or one on a
//! `mod` item), and none anywhere of the denied lints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layer of a top-level module; `None` for a module not given one
/// (a new module must be placed in the README's layering and here).
fn layer(top: &str) -> Option<u8> {
    Some(match top {
        "model" | "net" | "openmetrics" | "wire" => 0,
        "hls" => 1,
        "scte35" => 2,
        "ads" => 3,
        "channel" => 4,
        "splice" | "dash" => 5,
        "control" => 6,
        _ => return None,
    })
}

/// `src`'s code with comments and string/char literals replaced by spaces
/// (newlines kept), so braces and paths inside them are not seen.
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while let Some(&ch) = c.get(i) {
        let next = c.get(i + 1).copied();
        let prev_ident = i > 0
            && c.get(i - 1)
                .is_some_and(|p| p.is_alphanumeric() || *p == '_');
        if ch == '/' && next == Some('/') {
            while let Some(&x) = c.get(i) {
                if x == '\n' {
                    break;
                }
                blank(&mut out, x);
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0usize;
            while let Some(&x) = c.get(i) {
                let y = c.get(i + 1).copied();
                if x == '/' && y == Some('*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if x == '*' && y == Some('/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, x);
                    i += 1;
                }
            }
        } else if ch == 'r' && !prev_ident && matches!(next, Some('"') | Some('#')) && {
            // A raw string: r"…" or r#…#"…"#…#.
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            let mut hashes = 0;
            i += 1;
            out.push(' ');
            while c.get(i) == Some(&'#') {
                hashes += 1;
                i += 1;
                out.push(' ');
            }
            i += 1; // the opening quote
            out.push(' ');
            while let Some(&x) = c.get(i) {
                if x == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                blank(&mut out, x);
                i += 1;
            }
        } else if ch == '"' {
            out.push(' ');
            i += 1;
            while let Some(&x) = c.get(i) {
                if x == '\\' {
                    blank(&mut out, x);
                    if let Some(&y) = c.get(i + 1) {
                        blank(&mut out, y);
                    }
                    i += 2;
                    continue;
                }
                blank(&mut out, x);
                i += 1;
                if x == '"' {
                    break;
                }
            }
        } else if ch == '\'' && next == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{7f}'.
            let mut j = i + 2;
            while c.get(j).is_some_and(|&x| x != '\'') || j == i + 2 {
                j += 1;
            }
            for &x in c.iter().take(j + 1).skip(i) {
                blank(&mut out, x);
            }
            i = j + 1;
        } else if ch == '\'' && c.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            out.push(ch);
            i += 1;
        }
    }
    out
}

/// `code` (from [`code_only`]) without its `#[cfg(test)]` items: the
/// attribute, any attributes after it, and the item up to its `;` or its
/// matching `}`.
fn without_test_items(code: &str) -> String {
    const ATTR: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find(ATTR) {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let mut depth = 0usize;
        let mut end = item.len();
        let mut bracket = 0usize;
        for (k, ch) in item.char_indices().skip(ATTR.len()) {
            match ch {
                '[' => bracket += 1,
                ']' => bracket = bracket.saturating_sub(1),
                '{' if bracket == 0 => depth += 1,
                '}' if bracket == 0 => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 && bracket == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        out.extend(
            item[..end]
                .chars()
                .map(|ch| if ch == '\n' { '\n' } else { ' ' }),
        );
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code` names through `crate::…` (also
/// `crate::{a, b::c}`) and through `super::` chains that climb to the
/// crate root from the file's module path `module` (e.g. `["ads",
/// "beacon"]`).
fn top_modules_used(code: &str, module: &[&str]) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let boundary = |i: usize| {
        i == 0 || !code[..i].ends_with(|p: char| p.is_alphanumeric() || p == '_' || p == '$')
    };
    for (i, _) in code.match_indices("crate::") {
        if !boundary(i) {
            continue;
        }
        let after = code[i + "crate::".len()..].trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // The first identifier of each comma-separated item at depth 1.
            let mut depth = 1usize;
            let mut start = true;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => start = true,
                    ch if start && (ch.is_alphanumeric() || ch == '_') => {
                        used.insert(ident_at(&group[k..]).to_string());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(after);
            if !id.is_empty() {
                used.insert(id.to_string());
            }
        }
    }
    for (i, _) in code.match_indices("super::") {
        if !boundary(i) || code[..i].ends_with("super::") {
            continue;
        }
        let mut tail = &code[i..];
        let mut ups = 0;
        while let Some(t) = tail.strip_prefix("super::") {
            ups += 1;
            tail = t.trim_start();
        }
        // Inline `mod x { … }` items around this path add to its depth.
        let depth = module.len() + inline_modules_around(&code[..i]);
        if ups >= depth {
            let id = ident_at(tail);
            if !id.is_empty() {
                used.insert(id.to_string());
            }
        } else if let Some(top) = module.first() {
            used.insert((*top).to_string());
        }
    }
    used.remove("self");
    used
}

/// How many inline `mod x { … }` items are open at the end of `code`.
fn inline_modules_around(code: &str) -> usize {
    let mut depth = 0usize;
    let mut open: Vec<usize> = Vec::new();
    let mut pending = false;
    for (k, ch) in code.char_indices() {
        match ch {
            'm' if code[k..].starts_with("mod ")
                && (k == 0 || !code[..k].ends_with(|p: char| p.is_alphanumeric() || p == '_')) =>
            {
                let rest = code[k + 4..].trim_start();
                let after = rest[ident_at(rest).len()..].trim_start();
                pending = after.starts_with('{');
            }
            '{' => {
                depth += 1;
                if pending {
                    open.push(depth);
                    pending = false;
                }
            }
            '}' => {
                if open.last() == Some(&depth) {
                    open.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    open.len()
}

/// The module path of a file under `src/`: `model.rs` → `[model]`,
/// `ads/mod.rs` → `[ads]`, `ads/beacon.rs` → `[ads, beacon]`; `None` for
/// the crate root.
fn module_path(rel: &str) -> Option<Vec<&str>> {
    let rel = rel.strip_suffix(".rs")?;
    let mut parts: Vec<&str> = rel.split('/').collect();
    if parts.last() == Some(&"mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts.is_empty() {
        return None;
    }
    Some(parts)
}

/// Every layering problem in `files` (paths relative to `src/`, source
/// text): a use of a higher layer, a module with no layer, and each cycle
/// between top-level modules.
fn check(files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, src) in files {
        let Some(module) = module_path(rel) else {
            continue;
        };
        let top = module[0];
        let Some(own) = layer(top) else {
            problems.push(format!("{rel}: module `{top}` has no layer"));
            continue;
        };
        let code = without_test_items(&code_only(src));
        for used in top_modules_used(&code, &module) {
            if used == top {
                continue;
            }
            match layer(&used) {
                None => problems.push(format!("{rel}: uses `crate::{used}`, which has no layer")),
                Some(l) if l > own => problems.push(format!(
                    "{rel}: `{top}` (layer {own}) uses `crate::{used}` (layer {l}, above it)"
                )),
                Some(_) => {}
            }
            graph.entry(top.to_string()).or_default().insert(used);
        }
    }
    problems.extend(cycles(&graph));
    problems
}

/// One message per cycle found by a depth-first search of `graph`.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<String>,
    ) {
        if let Some(pos) = stack.iter().position(|s| s == n) {
            let mut ring = stack[pos..].to_vec();
            ring.push(n.to_string());
            found.push(format!("import cycle: {}", ring.join(" → ")));
            return;
        }
        if !done.insert(n.to_string()) {
            return;
        }
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            visit(m, graph, stack, done, found);
        }
        stack.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// The lints `lib.rs` denies outside tests.
const DENIED: [&str; 5] = [
    "unwrap_used",
    "expect_used",
    "panic",
    "indexing_slicing",
    "arithmetic_side_effects",
];

/// Every lint `allow`/`expect` in `files` that loosens the discipline: an
/// inner one (`#![allow(..)]`, also inside `cfg_attr`), one on a `mod`
/// item, or one naming a denied lint (test items left out).
fn loosened_lints(files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (rel, src) in files {
        let code = without_test_items(&code_only(src));
        let mut rest = code.as_str();
        while let Some(at) = rest.find('#') {
            let after = &rest[at + 1..];
            let inner = after.starts_with('!');
            let body_start = if inner { &after[1..] } else { after };
            let Some(body) = body_start.strip_prefix('[') else {
                rest = after;
                continue;
            };
            // The attribute's text up to its matching `]`.
            let mut depth = 1usize;
            let end = body
                .char_indices()
                .find(|&(_, ch)| {
                    match ch {
                        '[' => depth += 1,
                        ']' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(body.len(), |(k, _)| k);
            let attr: String = body[..end].split_whitespace().collect();
            let loosens = attr.starts_with("allow(")
                || attr.starts_with("expect(")
                || (attr.starts_with("cfg_attr(")
                    && (attr.contains(",allow(") || attr.contains(",expect(")));
            if loosens {
                let next = body.get(end + 1..).unwrap_or("").trim_start();
                let on_mod = ["mod ", "pub mod ", "pub(crate) mod "]
                    .iter()
                    .any(|m| next.starts_with(m));
                let denied = DENIED
                    .iter()
                    .any(|l| attr.contains(&format!("clippy::{l}")));
                if inner || on_mod || denied {
                    let bang = if inner { "!" } else { "" };
                    problems.push(format!("{rel}: #{bang}[{attr}]"));
                }
            }
            rest = &body[end..];
        }
    }
    problems
}

fn source_files(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            source_files(&p, root, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p.strip_prefix(root).expect("under src").to_string_lossy();
            let rel = rel.replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).expect("read source")));
        }
    }
}

#[test]
fn the_core_is_layered_without_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&root, &root, &mut files);
    assert!(files.len() > 20, "read only {} files", files.len());
    // The checker sees real edges (else it would pass on anything).
    let code = without_test_items(&code_only(
        &files
            .iter()
            .find(|(p, _)| p == "splice/edge.rs")
            .expect("edge.rs")
            .1,
    ));
    assert!(top_modules_used(&code, &["splice", "edge"]).contains("channel"));
    let problems = check(&files);
    assert!(problems.is_empty(), "layering:\n{}", problems.join("\n"));
}

#[test]
fn no_lint_is_loosened_at_module_level() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&root, &root, &mut files);
    let lib = &files.iter().find(|(p, _)| p == "lib.rs").expect("lib.rs").1;
    for lint in DENIED {
        assert!(
            lib.contains(&format!("clippy::{lint}")),
            "lib.rs denies {lint}"
        );
    }
    let problems = loosened_lints(&files);
    assert!(
        problems.is_empty(),
        "loosened lints:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_lint_checker_finds_loosened_lints() {
    let p = loosened_lints(&files(&[
        ("a.rs", "#![allow(dead_code)]\nfn f() {}"),
        (
            "b.rs",
            "#[allow(clippy::indexing_slicing)]\npub mod build {}",
        ),
        (
            "c.rs",
            "#[allow(clippy::too_many_arguments)]\nfn ok() {}\n#[expect(clippy::unwrap_used)]\nfn bad() {}",
        ),
        ("d.rs", "#![cfg_attr(not(test), allow(clippy::panic))]"),
        (
            "e.rs",
            "#![cfg_attr(not(test), deny(clippy::panic))]\n#[cfg(test)]\n#[allow(clippy::unwrap_used)]\nmod tests {}",
        ),
    ]));
    let named = |f: &str| p.iter().filter(|m| m.starts_with(f)).count();
    assert_eq!(
        (
            named("a.rs"),
            named("b.rs"),
            named("c.rs"),
            named("d.rs"),
            named("e.rs")
        ),
        (1, 1, 1, 1, 0),
        "{p:?}"
    );
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect()
}

#[test]
fn a_use_of_a_higher_layer_fails() {
    let p = check(&files(&[
        (
            "model.rs",
            "pub fn f() -> crate::ads::beacon::TrackingEvent { todo!() }",
        ),
        (
            "ads/beacon.rs",
            "use crate::{model::X, control::config::check};",
        ),
        ("hls/media.rs", "fn g() { super::super::scte35::decode(); }"),
        (
            "ads/pod.rs",
            "mod inner { use super::super::Local; fn h() { super::x(); } }",
        ),
        (
            "ads/vast.rs",
            "mod inner { fn h() { super::super::super::control::x(); } }",
        ),
    ]));
    assert!(
        p.iter()
            .any(|m| m.starts_with("model.rs:") && m.contains("crate::ads")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("ads/beacon.rs:") && m.contains("crate::control")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("hls/media.rs:") && m.contains("crate::scte35")),
        "{p:?}"
    );
    assert!(!p.iter().any(|m| m.contains("crate::model")), "{p:?}");
    assert!(!p.iter().any(|m| m.starts_with("ads/pod.rs")), "{p:?}");
    assert!(
        p.iter()
            .any(|m| m.starts_with("ads/vast.rs:") && m.contains("crate::control")),
        "{p:?}"
    );
}

#[test]
fn a_cycle_in_one_layer_fails() {
    let p = check(&files(&[
        ("model.rs", "use crate::net::x;"),
        ("net.rs", "use crate::openmetrics::y;"),
        ("openmetrics.rs", "use crate::model::z;"),
    ]));
    assert!(p.iter().any(|m| m.starts_with("import cycle")), "{p:?}");
    assert!(check(&files(&[
        ("model.rs", "use crate::net::x;"),
        ("net.rs", "")
    ]))
    .is_empty());
}

#[test]
fn comments_literals_and_tests_do_not_count() {
    let src = r##"
//! See [`crate::control::config`].
/// Moved from [`crate::splice`].
const S: &str = "crate::control::x";
const R: &str = r#"crate::channel::y "{"#;
const C: char = '{';
/* crate::splice::z { */
use crate::model::Pod;
#[cfg(test)]
mod tests {
    use crate::control::config::check; // a test may reach anywhere
    fn f() { let _ = "}"; }
}
#[cfg(test)]
use crate::splice::Mode;
pub fn after() -> crate::hls::Token { todo!() }
"##;
    let code = without_test_items(&code_only(src));
    let used = top_modules_used(&code, &["scte35"]);
    assert_eq!(
        used,
        BTreeSet::from(["model".to_string(), "hls".to_string()])
    );
    assert!(check(&files(&[("scte35/mod.rs", src)])).is_empty());
    assert!(
        !check(&files(&[("new_thing.rs", "")])).is_empty(),
        "an unplaced module fails"
    );
}
