//! The facts every answer needs, whatever the question: how much a line or sentence is
//! worth keeping by what it mentions (errors, paths, configuration, identifiers,
//! decisions, dates, numbers, names, stated preferences), in one pass over its words.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::OnceLock;

use super::text::Fnv;

const ERROR: u32 = 1;
const PATH: u32 = 1 << 1;
const FILE_OP: u32 = 1 << 2;
const CONFIG: u32 = 1 << 3;
const IDENT: u32 = 1 << 4;
const DECISION: u32 = 1 << 5;
const DATE: u32 = 1 << 6;
const NUMBER: u32 = 1 << 7;
const PREFERENCE: u32 = 1 << 8;
const FIRST_PERSON: u32 = 1 << 9;

/// How much an excerpt is worth keeping: one pass over its words.
pub(super) fn score(text: &str, is_user: bool) -> u32 {
    let mut flags = 0;
    let mut names = 0;
    if text.contains('`') || text.contains("::") || text.contains("()") {
        flags |= IDENT;
    }
    for token in text.split_whitespace() {
        // A path needs a `/` or a `.`, an identifier a `_` or a lower-case letter before an
        // upper-case one: most words of prose have none and are passed over at once.
        let bytes = token.as_bytes();
        let marked = bytes.iter().any(|b| matches!(b, b'/' | b'.' | b'_'))
            || bytes
                .windows(2)
                .any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase());
        if !marked {
            continue;
        }
        let t = token.trim_matches(|c: char| !(c.is_alphanumeric() || "/_.~-".contains(c)));
        let t = t.trim_end_matches('.');
        if looks_like_path(t) {
            flags |= PATH;
        } else if looks_like_identifier(t) {
            flags |= IDENT;
        }
    }
    let mut buf = [0u8; 24];
    for (i, word) in text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        let bytes = word.as_bytes();
        if bytes[0].is_ascii_digit() {
            flags |= NUMBER;
        }
        if i > 0 && bytes[0].is_ascii_uppercase() && bytes.len() > 1 {
            names += 1;
        }
        if bytes.len() > buf.len() || !word.is_ascii() {
            continue;
        }
        let lower = &mut buf[..bytes.len()];
        lower.copy_from_slice(bytes);
        lower.make_ascii_lowercase();
        flags |= keyword(lower);
    }
    let mut score = 0;
    for (flag, weight) in [
        (ERROR, 5),
        (PATH, 3),
        (CONFIG, 2),
        (IDENT, 2),
        (DECISION, 2),
        (DATE, 2),
        (NUMBER, 1),
    ] {
        if flags & flag != 0 {
            score += weight;
        }
    }
    if flags & FILE_OP != 0 && flags & PATH != 0 {
        score += 2;
    }
    if flags & PREFERENCE != 0 && flags & FIRST_PERSON != 0 {
        score += 3;
    }
    score += names.min(2);
    if is_user && score > 0 {
        score += 1;
    }
    // Numbered lines of a file listing (`273:    raise ...`) are context, not facts.
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && text[digits..].starts_with(':') && flags & ERROR == 0 {
        score /= 3;
    }
    score
}

/// The flag a lower-case word raises, by table: a match over this many byte strings
/// compares them one by one, and it runs for every word of every excerpt.
fn keyword(word: &[u8]) -> u32 {
    // One string of space-separated words per flag; the first flag listed wins.
    const WORDS: &[(u32, &str)] = &[
        (
            ERROR,
            "error errors failed failure failing fails exception traceback panic \
             panicked fatal denied errno crash crashed segfault aborted refused \
             cannot unable",
        ),
        (
            FILE_OP,
            "created wrote written edited modified deleted removed renamed moved \
             opened saved patched replaced copied create write edit delete rename \
             open mkdir",
        ),
        (
            CONFIG,
            "install installed installing pip npm yarn cargo apt brew conda config \
             configuration configure configured setting settings env environment \
             version upgrade upgraded dependency dependencies docker export enabled \
             disabled port",
        ),
        (
            DECISION,
            "decided decide decision chose choose chosen instead plan agreed \
             conclusion solution fix fixed resolved cause caused approach recommend \
             recommended must important todo",
        ),
        (
            DATE,
            "january february march april june july august september october november \
             december monday tuesday wednesday thursday friday saturday sunday today \
             tomorrow yesterday tonight weekend birthday deadline",
        ),
        (
            PREFERENCE,
            "like love prefer hate enjoy favorite favourite want wish allergic \
             vegetarian vegan dislike budget interested planning live name need",
        ),
        (FIRST_PERSON, "i my me we our im"),
    ];
    static TABLE: OnceLock<HashMap<&'static [u8], u32, BuildHasherDefault<Fnv>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = HashMap::default();
        for (flag, words) in WORDS {
            for w in words.split_whitespace() {
                table.entry(w.as_bytes()).or_insert(*flag);
            }
        }
        table
    });
    if let Some(flag) = table.get(word) {
        return *flag;
    }
    if word.len() > 6 && (word.ends_with(b"error") || word.ends_with(b"exception")) {
        ERROR
    } else {
        0
    }
}

pub(super) fn looks_like_path(t: &str) -> bool {
    if t.len() < 3 || t.starts_with("http") {
        return false;
    }
    let has_ext = t.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty()
            && (1..=5).contains(&ext.len())
            && ext.bytes().all(|b| b.is_ascii_alphanumeric())
            && ext.bytes().any(|b| b.is_ascii_alphabetic())
            && !stem.ends_with('.')
    });
    let slashed = t.contains('/') && t.bytes().filter(u8::is_ascii_alphanumeric).count() >= 2;
    (slashed && (has_ext || t.starts_with('/') || t.starts_with("./") || t.starts_with("~/")))
        || (has_ext && t.bytes().any(|b| b == b'_' || b == b'/') && !t.contains(' '))
        || (has_ext && is_source_extension(t))
}

fn is_source_extension(t: &str) -> bool {
    const EXTENSIONS: &[&str] = &[
        "rs",
        "py",
        "js",
        "ts",
        "tsx",
        "jsx",
        "go",
        "java",
        "kt",
        "c",
        "h",
        "cc",
        "cpp",
        "hpp",
        "cs",
        "rb",
        "php",
        "swift",
        "sh",
        "toml",
        "yaml",
        "yml",
        "json",
        "md",
        "txt",
        "cfg",
        "ini",
        "lock",
        "sql",
        "html",
        "css",
        "xml",
        "env",
        "log",
        "csv",
        "ipynb",
        "dockerfile",
    ];
    t.rsplit_once('.')
        .is_some_and(|(_, ext)| EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)))
}

/// `snake_case`, `camelCase`, `Type::path` or `call()` words.
pub(super) fn looks_like_identifier(t: &str) -> bool {
    let b = t.as_bytes();
    if b.len() < 4 || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') {
        return false;
    }
    let inner_underscore = b[1..b.len() - 1].contains(&b'_');
    let camel = b
        .windows(2)
        .any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase());
    inner_underscore || camel
}
