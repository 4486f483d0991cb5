//! Strategy 1: condense old turns into one message of key points and tool-call
//! summaries, without calling a model.
//!
//! The message has a header (how many messages of each role it covers, main
//! topics), one line per tool (`read_file ×12 (11 ok, 1 failed): src/a.rs, …`),
//! the error lines of failed calls, and key points: lines and sentences kept
//! verbatim (clipped when very long) that mention errors, file paths and file
//! operations, configuration and installs, code identifiers, decisions, and the
//! names, dates, numbers, places and preferences people state. Older messages get
//! a smaller share than recent ones. Everything is a single pass over the text
//! with no allocation per word, so condensing a long agent loop takes well under
//! a millisecond. This room must not count tokens exactly or reorder messages:
//! the caller checks the result against the ratio.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::Value;

use crate::chat::{Message, Role};

/// One message to condense.
pub struct Source<'a> {
    pub message: &'a Message,
    /// Its exact token count, used to estimate what its excerpts cost.
    pub tokens: usize,
    /// Whether it came after the latest user message, which stays verbatim above the summary.
    pub after_request: bool,
}

/// Lines longer than this are split into sentences (so a fact is kept without its neighbours)…
const LONG_LINE: usize = 40;
/// …and excerpts longer than this are clipped.
const MAX_EXCERPT: usize = 240;
/// Error lines kept per failed call, and their length.
const ERROR_LINES: usize = 2;
const MAX_ERROR_LINE: usize = 200;
/// Failed calls listed, most recent first when there are more.
const MAX_FAILURES: usize = 8;
/// Distinct targets (paths, commands) listed per tool, most recent first.
const MAX_TARGETS: usize = 5;
const MAX_TARGET: usize = 60;
/// Tools listed; the rest are folded into one count.
const MAX_TOOLS: usize = 12;
/// Topics are listed once this many messages are condensed.
const TOPICS_FROM: usize = 6;
const TOPICS: usize = 6;
/// Only the start of each message feeds the topic count.
const TOPIC_SCAN_BYTES: usize = 2_000;
/// How much of a tool result's start and end is read to judge whether it failed.
const HEAD_BYTES: usize = 400;
const TAIL_BYTES: usize = 1_200;
/// Excerpts are estimated at no more than this many tokens per byte (CJK text is about 0.5).
const MAX_TOKENS_PER_BYTE: f32 = 0.6;
/// Generated text (headers, tool lines) is estimated at this many bytes per token.
const BYTES_PER_TOKEN: usize = 4;

/// Builds the condensed text, keeping key points within about `target_tokens`.
pub fn condense(sources: &[Source<'_>], target_tokens: usize) -> String {
    let mut out = header(sources);
    let split = sources.iter().any(|s| s.after_request) && sources.iter().any(|s| !s.after_request);
    if sources.len() >= TOPICS_FROM {
        let topics = topics(sources);
        if !topics.is_empty() {
            let _ = writeln!(out, "Topics: {}", topics.join(", "));
        }
    }
    tool_summary(sources, &mut out);
    let remaining = target_tokens.saturating_sub(out.len().div_ceil(BYTES_PER_TOKEN) + 4);
    key_points(sources, remaining, split, &mut out);
    while out.ends_with('\n') {
        out.pop();
    }
    out
}

fn header(sources: &[Source<'_>]) -> String {
    let (mut user, mut assistant, mut tool, mut other) = (0, 0, 0, 0);
    for s in sources {
        match s.message.role {
            Role::User => user += 1,
            Role::Assistant => assistant += 1,
            Role::Tool => tool += 1,
            _ => other += 1,
        }
    }
    let mut parts = Vec::new();
    for (n, what) in [
        (user, "user"),
        (assistant, "assistant"),
        (tool, "tool results"),
        (other, "other"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    format!(
        "[thrifty: {} earlier messages condensed ({})]\n",
        sources.len(),
        parts.join(", ")
    )
}

// ---- tool calls ----

struct Call<'a> {
    name: &'a str,
    id: Option<&'a str>,
    target: Option<String>,
    answered: bool,
    failed: bool,
    errors: Vec<String>,
}

fn tool_summary(sources: &[Source<'_>], out: &mut String) {
    let mut calls: Vec<Call<'_>> = Vec::new();
    let mut unit_start = 0;
    for s in sources {
        let m = s.message;
        if !m.tool_calls.is_empty() {
            unit_start = calls.len();
            for c in &m.tool_calls {
                calls.push(Call {
                    name: &c.name,
                    id: c.id.as_deref(),
                    target: target(&c.arguments),
                    answered: false,
                    failed: false,
                    errors: Vec::new(),
                });
            }
        } else if m.role == Role::Tool {
            // OpenAI names the call it answers; Ollama answers in order.
            let by_id = m
                .tool_call_id
                .as_deref()
                .and_then(|id| calls[unit_start..].iter().position(|c| c.id == Some(id)));
            let slot = by_id.or_else(|| calls[unit_start..].iter().position(|c| !c.answered));
            if let Some(i) = slot {
                let call = &mut calls[unit_start + i];
                call.answered = true;
                call.errors = error_lines(&text_of(m));
                call.failed = !call.errors.is_empty();
            }
        }
    }
    if calls.is_empty() {
        return;
    }
    let mut order: Vec<&str> = Vec::new();
    for c in &calls {
        if !order.contains(&c.name) {
            order.push(c.name);
        }
    }
    let mut lines = Vec::new();
    for name in order.iter().take(MAX_TOOLS) {
        let of_tool: Vec<&Call<'_>> = calls.iter().filter(|c| c.name == *name).collect();
        let failed = of_tool.iter().filter(|c| c.failed).count();
        let ok = of_tool.iter().filter(|c| c.answered && !c.failed).count();
        let mut line = format!("{name} ×{} ({ok} ok", of_tool.len());
        if failed > 0 {
            let _ = write!(line, ", {failed} failed");
        }
        line.push(')');
        let mut targets: Vec<&str> = Vec::new();
        for c in of_tool.iter().rev() {
            if let Some(t) = c.target.as_deref() {
                if !targets.contains(&t) {
                    targets.push(t);
                }
            }
        }
        if !targets.is_empty() {
            // The most recent targets, shown oldest first.
            let shown: Vec<&str> = targets.iter().take(MAX_TARGETS).rev().copied().collect();
            let _ = write!(line, ": {}", shown.join(", "));
            if targets.len() > MAX_TARGETS {
                let _ = write!(line, ", +{} more", targets.len() - MAX_TARGETS);
            }
        }
        lines.push(line);
    }
    if order.len() > MAX_TOOLS {
        lines.push(format!("{} other tools", order.len() - MAX_TOOLS));
    }
    let _ = writeln!(out, "Tool calls: {}", lines.join("; "));
    let failures: Vec<&Call<'_>> = calls.iter().filter(|c| c.failed).collect();
    if !failures.is_empty() {
        out.push_str("Failed calls:\n");
        let skip = failures.len().saturating_sub(MAX_FAILURES);
        if skip > 0 {
            let _ = writeln!(out, "- ({skip} older failures not shown)");
        }
        for c in &failures[skip..] {
            let _ = write!(out, "- {}", c.name);
            if let Some(t) = &c.target {
                let _ = write!(out, " {t}");
            }
            let _ = writeln!(out, ": {}", c.errors.join(" / "));
        }
    }
}

/// The argument that says what a call worked on: a path, a command, a query.
fn target(arguments: &str) -> Option<String> {
    const KEYS: &[&str] = &[
        "path",
        "file_path",
        "filepath",
        "file",
        "filename",
        "file_name",
        "command",
        "cmd",
        "query",
        "url",
        "pattern",
        "search",
    ];
    let value: Value = serde_json::from_str(arguments).ok()?;
    let object = value.as_object()?;
    let text = KEYS
        .iter()
        .find_map(|k| object.get(*k).and_then(Value::as_str))
        .or_else(|| object.values().find_map(Value::as_str))?;
    let line = text.lines().next().unwrap_or_default().trim();
    (!line.is_empty()).then(|| clip(line, MAX_TARGET))
}

/// The error lines at the start or end of a tool result, where failures show up;
/// a file that merely mentions errors in its middle does not count as a failure.
fn error_lines(text: &str) -> Vec<String> {
    let head = &text[..floor_boundary(text, HEAD_BYTES)];
    let tail_from = ceil_boundary(text, text.len().saturating_sub(TAIL_BYTES)).max(head.len());
    let tail = &text[tail_from..];
    let mut found: Vec<String> = Vec::new();
    for line in head.lines().chain(tail.lines()) {
        let line = line.trim();
        if !line.is_empty() && mentions_failure(line) {
            let line = clip(line, MAX_ERROR_LINE);
            if !found.contains(&line) {
                found.push(line);
            }
        }
    }
    // The first and the last error lines say the most.
    if found.len() > ERROR_LINES {
        let last = found.pop();
        found.truncate(ERROR_LINES - 1);
        found.extend(last);
    }
    found
}

/// Whether a line of tool output reports a failure. Deliberately narrow: file
/// views full of identifiers such as `Error` or `error_count` must not count.
fn mentions_failure(line: &str) -> bool {
    const STARTS: &[&str] = &[
        "error",
        "fatal",
        "failed",
        "fail:",
        "traceback",
        "panic",
        "exception",
        "npm err",
        "e   ",
    ];
    const CONTAINS: &[&str] = &[
        "error:",
        "error[",
        "rror: ",
        "failed:",
        "failed to",
        "failed with",
        "failure:",
        "exception:",
        "panicked at",
        "no such file or directory",
        "permission denied",
        "command not found",
        "not found:",
        "segmentation fault",
        "exit code 1",
        "exit status 1",
    ];
    // `std::error::Error` and `Error::NotFound` are paths, not reports.
    let lower = line.trim_start().to_ascii_lowercase().replace("::", "  ");
    let starts = STARTS.iter().any(|s| {
        lower.starts_with(s)
            && !lower[s.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    });
    if starts || CONTAINS.iter().any(|c| lower.contains(c)) {
        return true;
    }
    // "3 failed" and "2 errors" in test summaries, but not "0 failed".
    ["failed", "errors", "error"].iter().any(|word| {
        lower.match_indices(word).any(|(at, _)| {
            let before = lower[..at].trim_end_matches(' ');
            let digits = before.len() - before.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            at > before.len()
                && digits > 0
                && before[before.len() - digits..].bytes().any(|b| b != b'0')
        })
    })
}

// ---- key points ----

struct Candidate<'a> {
    message: usize,
    text: &'a str,
    clipped: bool,
    cost: usize,
    priority: f32,
}

fn key_points(sources: &[Source<'_>], budget: usize, split: bool, out: &mut String) {
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

fn looks_like_path(t: &str) -> bool {
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
fn looks_like_identifier(t: &str) -> bool {
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

// ---- topics ----

fn topics(sources: &[Source<'_>]) -> Vec<String> {
    let mut counts: HashMap<String, (u32, usize)> = HashMap::new();
    let mut order = 0;
    for s in sources {
        if s.message.role == Role::Tool {
            continue;
        }
        let mut note = |word: String, weight: u32| {
            order += 1;
            let entry = counts.entry(word).or_insert((0, order));
            entry.0 += weight;
        };
        for c in &s.message.tool_calls {
            note(c.name.clone(), 1);
        }
        let text = match &s.message.content {
            crate::chat::Content::Text(t) => t.as_str(),
            _ => "",
        };
        let text = &text[..floor_boundary(text, TOPIC_SCAN_BYTES)];
        for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\'')) {
            if word.len() < 4 || word.len() > 24 || !word.bytes().all(|b| b.is_ascii_alphabetic()) {
                continue;
            }
            let lower = word.to_ascii_lowercase();
            if is_stopword(&lower) {
                continue;
            }
            let weight = if word.as_bytes()[0].is_ascii_uppercase() {
                2
            } else {
                1
            };
            note(lower, weight);
        }
    }
    let mut ranked: Vec<(String, (u32, usize))> =
        counts.into_iter().filter(|(_, (n, _))| *n >= 2).collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    ranked.into_iter().take(TOPICS).map(|(w, _)| w).collect()
}

fn is_stopword(word: &str) -> bool {
    const STOP: &[&str] = &[
        "about",
        "above",
        "after",
        "again",
        "also",
        "always",
        "another",
        "anything",
        "around",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "could",
        "does",
        "doing",
        "done",
        "down",
        "each",
        "even",
        "every",
        "file",
        "files",
        "first",
        "following",
        "from",
        "further",
        "going",
        "good",
        "great",
        "have",
        "having",
        "help",
        "here",
        "into",
        "just",
        "know",
        "last",
        "let's",
        "like",
        "line",
        "lines",
        "look",
        "looks",
        "make",
        "many",
        "more",
        "most",
        "much",
        "must",
        "need",
        "next",
        "now",
        "only",
        "other",
        "over",
        "please",
        "really",
        "same",
        "should",
        "since",
        "some",
        "something",
        "such",
        "sure",
        "take",
        "than",
        "thank",
        "thanks",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "thing",
        "things",
        "think",
        "this",
        "those",
        "through",
        "under",
        "until",
        "very",
        "want",
        "well",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "with",
        "within",
        "without",
        "would",
        "your",
        "yours",
        "able",
        "command",
        "current",
        "directory",
        "okay",
        "still",
        "used",
        "using",
        "what's",
        "it's",
        "i'm",
        "don't",
        "can't",
        "that's",
        "here's",
        "there's",
        "you're",
        "we'll",
        "i'll",
        "let",
        "lets",
        "them",
        "certainly",
        "course",
        "happy",
        "recommend",
        "recommendations",
        "suggest",
        "could",
        "might",
        "also",
        "they're",
        "you'll",
        "you've",
        "i've",
        "isn't",
        "doesn't",
        "didn't",
        "include",
        "includes",
        "including",
        "known",
        "popular",
        "sounds",
        "definitely",
        "quite",
    ];
    STOP.contains(&word)
}

// ---- text helpers ----

/// A message's text, borrowed when it is plain text.
fn text_of(m: &Message) -> Cow<'_, str> {
    match &m.content {
        crate::chat::Content::Text(t) => Cow::Borrowed(t),
        _ => Cow::Owned(m.flat_text()),
    }
}

/// The text cut to at most `max` bytes at a character boundary, with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let end = floor_boundary(text, max.saturating_sub(3));
    format!("{}…", text[..end].trim_end())
}

pub fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

pub fn ceil_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolCall;

    fn source(message: &Message) -> Source<'_> {
        Source {
            message,
            tokens: message.flat_text().len() / 4 + 4,
            after_request: false,
        }
    }

    fn call(id: &str, name: &str, arguments: &str) -> Message {
        Message {
            tool_calls: vec![ToolCall {
                id: Some(id.to_owned()),
                name: name.to_owned(),
                arguments: arguments.to_owned(),
            }],
            ..Message::text(Role::Assistant, "")
        }
    }

    fn result(id: &str, text: &str) -> Message {
        Message {
            tool_call_id: Some(id.to_owned()),
            ..Message::text(Role::Tool, text)
        }
    }

    #[test]
    fn tool_calls_are_summarized_with_counts_targets_and_error_lines() {
        let mut messages = Vec::new();
        for i in 0..12 {
            let id = format!("r{i}");
            messages.push(call(
                &id,
                "read_file",
                &format!(r#"{{"path":"src/f{i}.rs"}}"#),
            ));
            let body = if i == 7 {
                "Error: No such file or directory (os error 2)".to_owned()
            } else {
                format!(
                    "fn f{i}() {{}}\n{}// handles the error case in the middle\n{}",
                    "x\n".repeat(300),
                    "y\n".repeat(700)
                )
            };
            messages.push(result(&id, &body));
        }
        for i in 0..5 {
            let id = format!("w{i}");
            messages.push(call(
                &id,
                "write_file",
                &format!(r#"{{"path":"out/{i}.txt","content":"..."}}"#),
            ));
            messages.push(result(&id, "wrote 12 bytes"));
        }
        let sources: Vec<Source<'_>> = messages.iter().map(source).collect();
        let text = condense(&sources, 400);
        assert!(
            text.contains("read_file ×12 (11 ok, 1 failed): src/f7.rs, src/f8.rs, src/f9.rs, src/f10.rs, src/f11.rs, +7 more"),
            "{text}"
        );
        assert!(text.contains("write_file ×5 (5 ok)"), "{text}");
        assert!(
            text.contains("- read_file src/f7.rs: Error: No such file or directory (os error 2)"),
            "{text}"
        );
        assert!(
            text.starts_with(
                "[thrifty: 34 earlier messages condensed (17 assistant, 17 tool results)"
            ),
            "{text}"
        );
    }

    #[test]
    fn ollama_tool_results_answer_calls_in_order() {
        let mut two = call("", "grep", r#"{"pattern":"deprecated"}"#);
        two.tool_calls[0].id = None;
        two.tool_calls.push(ToolCall {
            id: None,
            name: "bash".to_owned(),
            arguments: r#"{"command":"cargo build"}"#.to_owned(),
        });
        let messages = [
            two,
            Message::text(Role::Tool, "src/a.rs:3: deprecated"),
            Message::text(
                Role::Tool,
                "error[E0425]: cannot find value `x` in this scope",
            ),
        ];
        let sources: Vec<Source<'_>> = messages.iter().map(source).collect();
        let text = condense(&sources, 200);
        assert!(text.contains("grep ×1 (1 ok): deprecated"), "{text}");
        assert!(
            text.contains("bash ×1 (0 ok, 1 failed): cargo build"),
            "{text}"
        );
        assert!(text.contains("- bash cargo build: error[E0425]"), "{text}");
    }

    #[test]
    fn failures_are_recognised_and_code_is_not() {
        for failure in [
            "test result: FAILED. 2 passed; 10 failed",
            "=== 1 failed, 2 passed in 0.12s ===",
            "ModuleNotFoundError: No module named 'foo'",
            "error[E0425]: cannot find value `x` in this scope",
            "  File \"x.py\", line 4 SyntaxError: invalid syntax",
            "Traceback (most recent call last):",
            "thread 'main' panicked at src/main.rs:3:5:",
            "bash: foo: command not found",
            "cat: nope.txt: No such file or directory",
        ] {
            assert!(mentions_failure(failure), "{failure}");
        }
        for fine in [
            "test result: ok. 12 passed; 0 failed; 0 ignored",
            "Finished with no errors",
            "let error_58 = self.timeout.error(491, stream_request)?;",
            "    return Err(Error::NotFound);",
            "impl std::error::Error for ProxyError {}",
            "error_count += 1",
        ] {
            assert!(!mentions_failure(fine), "{fine}");
        }
    }

    #[test]
    fn key_points_prefer_facts_and_keep_them_verbatim() {
        let messages = [
            Message::text(
                Role::User,
                "Hi there! My name is Dana and I live in Lisbon. I prefer vegetarian food. The weather is nice and it is a fine day to chat about many different things here.",
            ),
            Message::text(
                Role::Assistant,
                "Nice to meet you, Dana. That sounds lovely, and there is plenty to talk about today, so let us just chat for a while about whatever you want.",
            ),
            Message::text(
                Role::User,
                "We decided to deploy on March 3rd using config/prod.toml and the `deploy_service` script.",
            ),
            Message::text(
                Role::Assistant,
                "Sounds good. Everything seems fine and I am happy to help with any other questions that you might have along the way.",
            ),
        ];
        let sources: Vec<Source<'_>> = messages.iter().map(source).collect();
        let text = condense(&sources, 100);
        assert!(text.contains("We decided to deploy on March 3rd using config/prod.toml and the `deploy_service` script."), "{text}");
        assert!(
            text.contains("My name is Dana and I live in Lisbon."),
            "{text}"
        );
        assert!(!text.contains("Everything seems fine"), "{text}");
    }

    #[test]
    fn recent_material_ranks_above_old_material() {
        let mut messages = Vec::new();
        for i in 0..20 {
            messages.push(Message::text(
                Role::User,
                format!("Please update src/module_{i}.rs to use the new API."),
            ));
        }
        let sources: Vec<Source<'_>> = messages.iter().map(source).collect();
        let text = condense(&sources, 120);
        assert!(text.contains("module_19.rs"), "{text}");
        assert!(!text.contains("module_0.rs"), "{text}");
    }

    #[test]
    fn paths_and_identifiers_are_recognised() {
        for path in [
            "src/main.rs",
            "/etc/hosts",
            "./run.sh",
            "config.toml",
            "tests/test_api.py",
        ] {
            assert!(looks_like_path(path), "{path}");
        }
        for not in ["e.g", "3.14", "and/or", "http://x.y/z"] {
            assert!(!looks_like_path(not), "{not}");
        }
        assert!(looks_like_identifier("snake_case_name"));
        assert!(looks_like_identifier("camelCase"));
        assert!(!looks_like_identifier("plain"));
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("héllo wörld", 8), "héll…");
        assert_eq!(clip("short", 10), "short");
    }
}
