//! The shape of the source tree: the modules under `src/` import one another one
//! way only (no circles, and each only what its layer may), and no source file
//! grows past 500 lines. Read from the files themselves: every `crate::<module>`
//! and `$crate::<module>` path counts, in `use` lines, grouped imports and inline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import. A module missing here fails the test:
/// say where it sits when adding one.
const ALLOWED: &[(&str, &[&str])] = &[
    ("proto", &[]),
    ("signal", &[]),
    ("telemetry", &[]),
    ("domain", &[]),
    ("own_crm", &["domain"]),
    ("codec", &["domain", "proto"]),
    ("cli", &["proto", "own_crm", "signal"]),
    ("store", &["domain", "codec", "telemetry"]),
    ("relay", &["domain", "store", "codec", "telemetry"]),
    ("net", &["telemetry"]),
    ("http", &["relay", "domain", "own_crm", "net", "telemetry"]),
    (
        "grpc",
        &["relay", "domain", "proto", "codec", "net", "telemetry"],
    ),
    (
        "console",
        &[
            "relay",
            "domain",
            "own_crm",
            "proto",
            "codec",
            "net",
            "telemetry",
        ],
    ),
    // Settings are plain values: the application hands each face its own.
    ("config", &["cli", "domain", "own_crm", "net", "telemetry"]),
    (
        "app",
        &[
            "config",
            "domain",
            "own_crm",
            "store",
            "relay",
            "http",
            "grpc",
            "console",
            "net",
            "signal",
            "telemetry",
            "proto",
        ],
    ),
];

const MAX_LINES: usize = 500;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to; `None` for the crate root files.
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).unwrap();
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_owned();
    match first.as_str() {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

/// The source with comments and string and character literals blanked out, so
/// that only code is searched.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !ident_char(prev(&chars, i))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n'), not a lifetime.
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev(chars: &[char], i: usize) -> char {
    if i == 0 { ' ' } else { chars[i - 1] }
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first identifier at the start of `text`.
fn ident(text: &str) -> &str {
    let end = text.find(|c: char| !ident_char(c)).unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules `code` names through `crate::` or `$crate::`.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].chars().last().is_some_and(ident_char) {
            continue; // `mycrate::` and the like
        }
        let rest = code[at + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first name of each item.
            let mut depth = 0;
            let mut item_start = true;
            for (offset, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && ident_char(c) => {
                        let name = ident(&group[offset..]);
                        if name != "self" {
                            modules.insert(name.to_owned());
                        }
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                modules.insert(name.to_owned());
            }
        }
    }
    modules
}

/// The import graph of the top-level modules.
fn graph() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut files = vec![];
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        for imported in imported_modules(&code) {
            if imported != module {
                let shown = file.strip_prefix(src()).unwrap().display().to_string();
                edges.entry(imported).or_default().push(shown);
            }
        }
    }
    graph
}

/// A circle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut vec![], &mut done))
}

#[test]
fn the_import_scanner_sees_every_form_of_path() {
    let code = code_only(
        r#"
        use crate::{alpha, beta::Thing, gamma::{one, two::Three}, self};
        use crate::delta::Four;
        // crate::commented::out
        /* crate::blocked::out */
        const S: &str = "crate::quoted::out";
        fn f<'a>(x: &'a str) -> char { crate::epsilon::call(x); '"' }
        macro_rules! m { () => { $crate::zeta::Z } }
        "#,
    );
    let found: Vec<String> = imported_modules(&code).into_iter().collect();
    assert_eq!(
        found,
        ["alpha", "beta", "delta", "epsilon", "gamma", "zeta"]
    );
}

#[test]
fn the_cycle_finder_finds_a_circle() {
    let edge = |from: &str, to: &str| (from.to_owned(), BTreeMap::from([(to.to_owned(), vec![])]));
    let graph = BTreeMap::from([edge("a", "b"), edge("b", "c"), edge("c", "a")]);
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let graph = BTreeMap::from([edge("a", "b"), edge("b", "c")]);
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn modules_import_one_way() {
    let graph = graph();
    assert!(graph.len() >= ALLOWED.len(), "the source tree was not read");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("an import circle: {}", cycle.join(" → "));
    }
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = vec![];
    for (module, edges) in &graph {
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!("module {module} is not placed in ALLOWED"));
            continue;
        };
        for (imported, files) in edges {
            if !may.contains(&imported.as_str()) {
                wrong.push(format!(
                    "{module} imports {imported} (in {})",
                    files.join(", ")
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_source_file_grows_past_500_lines() {
    let mut files = vec![];
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(file).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} has {lines} lines", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}
