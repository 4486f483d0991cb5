//! Key points: lines and sentences worth keeping verbatim, scored by what they
//! mention (errors, paths, configuration, identifiers, decisions, dates, numbers,
//! preferences), older messages ranked lower, chosen within the token budget.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;

use crate::chat::Role;

use super::Source;
use super::text::{clip, text_of};

/// Lines longer than this are split into sentences (so a fact is kept without its neighbours)…
const LONG_LINE: usize = 40;
/// …and excerpts longer than this are clipped.
const MAX_EXCERPT: usize = 240;
/// Excerpts are estimated at no more than this many tokens per byte (CJK text is about 0.5).
const MAX_TOKENS_PER_BYTE: f32 = 0.6;

struct Candidate<'a> {
    message: usize,
    text: &'a str,
    clipped: bool,
    cost: usize,
    priority: f32,
}

pub(super) fn key_points(sources: &[Source<'_>], budget: usize, split: bool, out: &mut String) {
    let texts: Vec<Option<Cow<'_, str>>> = sources
        .iter()
        .map(|s| (s.message.role != Role::Tool).then(|| text_of(s.message)))
        .collect();
    let n = sources.len().max(2) - 1;
    let mut candidates = Vec::new();
    let mut seen = HashSet::new();
    for (i, (s, text)) in sources.iter().zip(&texts).enumerate() {
        let Some(text) = text else { continue };
        // Capped: images and tool calls count towards the message but not its text.
        let per_byte = (s.tokens as f32 / text.len().max(1) as f32).min(MAX_TOKENS_PER_BYTE);
        // Older messages are condensed harder: their excerpts rank lower.
        let age = 0.4 + 0.8 * (i as f32 / n as f32);
        let is_user = s.message.role == Role::User;
        for line in text.lines() {
            for piece in pieces(line) {
                if !seen.insert(piece) {
                    continue;
                }
                let score = score(piece, is_user);
                let shown = piece.len().min(MAX_EXCERPT);
                candidates.push(Candidate {
                    message: i,
                    text: piece,
                    clipped: piece.len() > MAX_EXCERPT,
                    cost: (shown as f32 * per_byte).ceil() as usize + 1,
                    priority: if score == 0 {
                        0.05 * age
                    } else {
                        score as f32 * age
                    },
                });
            }
        }
    }
    let mut ranked: Vec<usize> = (0..candidates.len()).collect();
    ranked.sort_by(|&a, &b| candidates[b].priority.total_cmp(&candidates[a].priority));
    let mut chosen = vec![false; candidates.len()];
    let mut used = 0;
    for i in ranked {
        let cost = candidates[i].cost + 3;
        if used + cost <= budget {
            used += cost;
            chosen[i] = true;
        }
    }
    if !chosen.contains(&true) {
        return;
    }
    out.push_str("Key points:\n");
    let mut current: Option<usize> = None;
    let mut after = false;
    for (c, _) in candidates
        .iter()
        .zip(&chosen)
        .filter(|(_, chosen)| **chosen)
    {
        let source = &sources[c.message];
        if current != Some(c.message) {
            if current.is_some() {
                out.push('\n');
            }
            if split && source.after_request && !after {
                out.push_str("After the request above:\n");
                after = true;
            } else if split && current.is_none() && !source.after_request {
                out.push_str("Before the request above:\n");
            }
            let _ = write!(out, "- {}: ", source.message.role.as_str());
            current = Some(c.message);
        } else {
            out.push_str(" … ");
        }
        if c.clipped {
            out.push_str(&clip(c.text, MAX_EXCERPT));
        } else {
            out.push_str(c.text);
        }
    }
    out.push('\n');
}

/// A line, or its sentences when it is long, without blank or symbol-only pieces.
fn pieces(line: &str) -> Vec<&str> {
    let line = line.trim();
    let worth = |p: &&str| p.len() >= 3 && p.bytes().any(|b| b.is_ascii_alphanumeric());
    if line.len() <= LONG_LINE {
        return Some(line).filter(worth).into_iter().collect();
    }
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let end_of_sentence =
            matches!(b, b'.' | b'!' | b'?') && bytes.get(i + 1).is_none_or(|n| *n == b' ');
        if end_of_sentence {
            out.push(line[start..=i].trim());
            start = i + 1;
        }
    }
    out.push(line[start..].trim());
    out.retain(worth);
    out
}

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
fn score(text: &str, is_user: bool) -> u32 {
    let mut flags = 0;
    let mut names = 0;
    if text.contains('`') || text.contains("::") || text.contains("()") {
        flags |= IDENT;
    }
    for token in text.split_whitespace() {
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

fn keyword(word: &[u8]) -> u32 {
    match word {
        b"error" | b"errors" | b"failed" | b"failure" | b"failing" | b"fails" | b"exception"
        | b"traceback" | b"panic" | b"panicked" | b"fatal" | b"denied" | b"errno" | b"crash"
        | b"crashed" | b"segfault" | b"aborted" | b"refused" | b"cannot" | b"unable" => ERROR,
        b"created" | b"wrote" | b"written" | b"edited" | b"modified" | b"deleted" | b"removed"
        | b"renamed" | b"moved" | b"opened" | b"saved" | b"patched" | b"replaced" | b"copied"
        | b"create" | b"write" | b"edit" | b"delete" | b"rename" | b"open" | b"mkdir" => FILE_OP,
        b"install" | b"installed" | b"installing" | b"pip" | b"npm" | b"yarn" | b"cargo"
        | b"apt" | b"brew" | b"conda" | b"config" | b"configuration" | b"configure"
        | b"configured" | b"setting" | b"settings" | b"env" | b"environment" | b"version"
        | b"upgrade" | b"upgraded" | b"dependency" | b"dependencies" | b"docker" | b"export"
        | b"enabled" | b"disabled" | b"port" => CONFIG,
        b"decided" | b"decide" | b"decision" | b"chose" | b"choose" | b"chosen" | b"instead"
        | b"plan" | b"agreed" | b"conclusion" | b"solution" | b"fix" | b"fixed" | b"resolved"
        | b"cause" | b"caused" | b"approach" | b"recommend" | b"recommended" | b"must"
        | b"important" | b"todo" => DECISION,
        b"january" | b"february" | b"march" | b"april" | b"june" | b"july" | b"august"
        | b"september" | b"october" | b"november" | b"december" | b"monday" | b"tuesday"
        | b"wednesday" | b"thursday" | b"friday" | b"saturday" | b"sunday" | b"today"
        | b"tomorrow" | b"yesterday" | b"tonight" | b"weekend" | b"birthday" | b"deadline" => DATE,
        b"like" | b"love" | b"prefer" | b"hate" | b"enjoy" | b"favorite" | b"favourite"
        | b"want" | b"wish" | b"allergic" | b"vegetarian" | b"vegan" | b"dislike" | b"budget"
        | b"interested" | b"planning" | b"live" | b"name" | b"need" => PREFERENCE,
        b"i" | b"my" | b"me" | b"we" | b"our" | b"im" => FIRST_PERSON,
        w if w.len() > 6 && (w.ends_with(b"error") || w.ends_with(b"exception")) => ERROR,
        _ => 0,
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
