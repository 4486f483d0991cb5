//! Imports point one way: no two files of `src/` import each other (a child using its parent,
//! or a parent its child, is Rust's module tree, not a cycle), and the top-level modules form
//! a layering without cycles. Read from the sources themselves, so a new cycle fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Import edges on a cycle that are known and being removed; a new one fails the test.
const KNOWN_FILE_CYCLES: &[(&str, &str)] = &[];
const KNOWN_MODULE_CYCLE_EDGES: &[(&str, &str)] = &[];

type Module = Vec<String>;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file holds: `src/cache/mod.rs` is `cache`, `src/cache/key.rs` is `cache::key`.
fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(root).expect("under src");
    let mut parts: Module = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code without comments, string and char literals, and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn ident_at(chars: &[char], mut i: usize) -> (String, usize) {
    let start = i;
    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
        i += 1;
    }
    (chars[start..i].iter().collect(), i)
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Reads a path after its first segment: `a::b::{c, d::e}` gives every full path it names.
fn paths_from(chars: &[char], i: usize, prefix: Module, out: &mut Vec<Module>) -> usize {
    let mut i = skip_space(chars, i);
    let mut path = prefix;
    loop {
        if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i = skip_space(chars, i + 2);
            if chars.get(i) == Some(&'{') {
                i += 1;
                loop {
                    i = skip_space(chars, i);
                    match chars.get(i) {
                        Some('}') => return i + 1,
                        Some(',') => i += 1,
                        Some(c) if c.is_alphanumeric() || *c == '_' => {
                            let (name, next) = ident_at(chars, i);
                            let mut inner = path.clone();
                            inner.push(name);
                            i = paths_from(chars, next, inner, out);
                        }
                        Some(_) => i += 1,
                        None => return i,
                    }
                }
            }
            let (name, next) = ident_at(chars, i);
            if name.is_empty() {
                break;
            }
            path.push(name);
            i = skip_space(chars, next);
        } else {
            break;
        }
    }
    out.push(path);
    i
}

/// Every `crate::`, `super::` and `self::` path in a file, made absolute.
fn imports(me: &Module, text: &str) -> Vec<Module> {
    let chars: Vec<char> = code(text).chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if !boundary || !chars[i].is_alphabetic() {
            i += 1;
            continue;
        }
        let (word, next) = ident_at(&chars, i);
        let base: Option<Module> = match word.as_str() {
            "crate" => Some(Vec::new()),
            "self" => Some(me.clone()),
            "super" => {
                // `super` is the parent module (a `mod.rs` file is its folder's module).
                let mut base = me.clone();
                base.pop();
                let mut j = next;
                while chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':') {
                    let (w, after) = ident_at(&chars, skip_space(&chars, j + 2));
                    if w != "super" {
                        break;
                    }
                    base.pop();
                    j = after;
                }
                i = paths_from(&chars, j, base, &mut out).max(next);
                continue;
            }
            _ => None,
        };
        match base {
            Some(base) => i = paths_from(&chars, next, base, &mut out).max(next),
            None => i = next,
        }
    }
    out
}

/// The longest prefix of `path` that is a module of the crate.
fn resolve(modules: &BTreeSet<Module>, path: &Module) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

fn is_within(a: &Module, b: &Module) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&root, f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let me = module_of(&root, file);
        // Test-only modules may reach anywhere.
        if me.iter().any(|p| p == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a readable source");
        let targets: BTreeSet<Module> = imports(&me, &text)
            .iter()
            .filter_map(|p| resolve(&modules, p))
            .filter(|t| *t != me)
            .collect();
        edges.insert(me, targets);
    }
    edges
}

fn name(m: &Module) -> String {
    m.join("::")
}

#[test]
fn no_two_files_import_each_other() {
    let edges = graph();
    let mut cycles = BTreeSet::new();
    for (a, targets) in &edges {
        for b in targets {
            if !is_within(a, b) && edges.get(b).is_some_and(|back| back.contains(a)) {
                let (x, y) = if a < b { (a, b) } else { (b, a) };
                cycles.insert((name(x), name(y)));
            }
        }
    }
    let new: Vec<_> = cycles
        .iter()
        .filter(|(x, y)| !KNOWN_FILE_CYCLES.contains(&(x.as_str(), y.as_str())))
        .collect();
    assert!(new.is_empty(), "files that import each other: {new:?}");
}

#[test]
fn top_level_modules_form_layers() {
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, targets) in graph() {
        let Some(from) = a.first() else { continue };
        for b in targets {
            if let Some(to) = b.first().filter(|to| *to != from) {
                top.entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                stack.extend(top.get(&m).into_iter().flatten().cloned());
            }
        }
        false
    };
    let mut on_cycles = Vec::new();
    for (a, targets) in &top {
        for b in targets {
            if reaches(b, a) && !KNOWN_MODULE_CYCLE_EDGES.contains(&(a.as_str(), b.as_str())) {
                on_cycles.push(format!("{a} -> {b}"));
            }
        }
    }
    assert!(
        on_cycles.is_empty(),
        "imports between top-level modules on a cycle: {on_cycles:?}"
    );
}

#[test]
fn the_reader_sees_imports_of_every_form() {
    let me: Module = vec!["pipeline".into(), "answer".into()];
    let text = "use crate::cache::{Plan, key::CacheKey};\nuse super::Proxy;\n\
                // use crate::admin;\nfn f() { crate::clock::now_ms(); let s = \"crate::x\"; }\n\
                #[cfg(test)]\nmod tests { use crate::door; }";
    let mut got: Vec<String> = imports(&me, text).iter().map(name).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "cache::Plan",
            "cache::key::CacheKey",
            "clock::now_ms",
            "pipeline::Proxy"
        ]
    );
}
