//! Tool calls summarized per tool (`read_file ×12 (11 ok, 1 failed): targets`) with
//! the error lines of failed calls; what failed is judged from the start and the end
//! of each result only.

use std::fmt::Write as _;

use serde_json::Value;

use crate::chat::Role;

use super::Source;
use super::text::{ceil_boundary, clip, floor_boundary};

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
/// How much of a tool result's start and end is read to judge whether it failed.
const HEAD_BYTES: usize = 400;
const TAIL_BYTES: usize = 1_200;

struct Call<'a> {
    name: &'a str,
    id: Option<&'a str>,
    target: Option<String>,
    answered: bool,
    failed: bool,
    errors: Vec<String>,
}

/// Writes the tool-call lines of `sources`; `errors` are each source's [`error_lines`]
/// (none but a tool result's).
pub(super) fn tool_summary<'e>(
    sources: &[Source<'_>],
    errors: impl IntoIterator<Item = &'e [String]>,
    out: &mut String,
) {
    let mut calls: Vec<Call<'_>> = Vec::new();
    let mut unit_start = 0;
    for (s, errors) in sources.iter().zip(errors) {
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
                call.errors = errors.to_vec();
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
pub(super) fn error_lines(text: &str) -> Vec<String> {
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
pub(super) fn mentions_failure(line: &str) -> bool {
    if !may_mention_failure(line) {
        return false;
    }
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
    let lower = lowered(line.trim_start());
    let starts = STARTS.iter().any(|s| {
        lower.starts_with(s.as_bytes())
            && !lower
                .get(s.len())
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    });
    if starts {
        return true;
    }
    (0..lower.len()).any(|at| {
        let rest = &lower[at..];
        let contains = CONTAINS
            .iter()
            .any(|c| c.as_bytes()[0] == rest[0] && rest.starts_with(c.as_bytes()));
        // "3 failed" and "2 errors" in test summaries, but not "0 failed".
        contains
            || ((rest.starts_with(b"error") || rest.starts_with(b"failed"))
                && counted(&lower[..at]))
    })
}

/// The line in ASCII lower case with `::` (left to right) turned into two spaces.
fn lowered(line: &str) -> Vec<u8> {
    let bytes = line.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b':' && bytes.get(i + 1) == Some(&b':') {
            out.extend_from_slice(b"  ");
            i += 2;
        } else {
            out.push(bytes[i].to_ascii_lowercase());
            i += 1;
        }
    }
    out
}

/// Whether text ends with a count other than zero and then spaces (`3 ` in `3 failed`).
fn counted(before: &[u8]) -> bool {
    let trimmed = before.len() - before.iter().rev().take_while(|b| **b == b' ').count();
    let number = &before[..trimmed];
    let digits = number
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    trimmed < before.len() && digits > 0 && number[trimmed - digits..].iter().any(|b| *b != b'0')
}

/// A quick pass that rules out most lines without allocating: every pattern
/// `mentions_failure` looks for contains one of these words (case aside), or is
/// `e   ` at the start of the line.
fn may_mention_failure(line: &str) -> bool {
    const ANCHORS: &[&[u8]] = &[
        b"rr",
        b"fatal",
        b"fail",
        b"found",
        b"traceback",
        b"panic",
        b"exception",
        b"exit",
        b"such",
        b"segmentation",
        b"denied",
    ];
    let bytes = line.as_bytes();
    if line
        .trim_start()
        .as_bytes()
        .first()
        .is_some_and(|b| b.eq_ignore_ascii_case(&b'e'))
    {
        return true;
    }
    // Most positions are ruled out by their first two letters.
    (0..bytes.len().saturating_sub(1)).any(|i| {
        let pair = [
            bytes[i].to_ascii_lowercase(),
            bytes[i + 1].to_ascii_lowercase(),
        ];
        matches!(
            &pair,
            b"rr" | b"fa" | b"fo" | b"tr" | b"pa" | b"ex" | b"su" | b"se" | b"de"
        ) && ANCHORS.iter().any(|anchor| {
            anchor[..2] == pair
                && bytes
                    .get(i..i + anchor.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(anchor))
        })
    })
}
