//! The last resort when the protected part alone does not fit: the longest older
//! tool outputs are cut down to a common level first, then the latest ones, then
//! other long messages, each keeping its start and end around a marker. This room
//! must never touch instructions, tool calls or the latest user message.

use crate::chat::{Content, Message, Role};

use super::extractive;
use super::{Encoding, TokenCounter};

/// Shortened messages keep at least this many tokens.
pub(super) const MIN_KEEP_TOKENS: usize = 200;

/// Shortens long messages from `from` on until `excess` tokens are gone: older
/// tool outputs first, then the latest ones, then other long messages. Returns
/// how many messages were shortened.
pub(super) fn shorten_protected(
    counter: &TokenCounter,
    encoding: Encoding,
    messages: &mut [Message],
    tokens: &mut [usize],
    from: usize,
    latest_user: Option<usize>,
    mut excess: usize,
) -> usize {
    // The last tool results are what the model is about to read.
    let last_unit = (from..messages.len())
        .rev()
        .find(|&i| messages[i].role != Role::Tool)
        .unwrap_or(from);
    let in_pass = |pass: usize, i: usize, m: &Message| match pass {
        0 => m.role == Role::Tool && i < last_unit,
        1 => m.role == Role::Tool,
        _ => !m.role.is_instruction() && m.tool_calls.is_empty() && Some(i) != latest_user,
    };
    let mut shortened = vec![false; messages.len()];
    for pass in 0..3 {
        if excess == 0 {
            break;
        }
        let candidates: Vec<usize> = (from..messages.len())
            .filter(|&i| in_pass(pass, i, &messages[i]) && tokens[i] > MIN_KEEP_TOKENS)
            .collect();
        let Some(cap) = water_level(
            &candidates.iter().map(|&i| tokens[i]).collect::<Vec<_>>(),
            excess,
        ) else {
            continue;
        };
        for i in candidates {
            if tokens[i] <= cap {
                continue;
            }
            let text = messages[i].flat_text();
            messages[i].content = Content::Text(shorten(&text, tokens[i], cap));
            let now = counter.message(encoding, &messages[i]);
            excess = excess.saturating_sub(tokens[i].saturating_sub(now));
            tokens[i] = now;
            shortened[i] = true;
        }
    }
    shortened.iter().filter(|s| **s).count()
}

/// The level to cut the longest of `sizes` down to so that about `excess` is removed
/// (never below `MIN_KEEP_TOKENS`); `None` when nothing is above it.
fn water_level(sizes: &[usize], excess: usize) -> Option<usize> {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    if sorted.first().is_none_or(|top| *top <= MIN_KEEP_TOKENS) {
        return None;
    }
    let mut sum = 0;
    for m in 0..sorted.len() {
        sum += sorted[m];
        let level = sum.saturating_sub(excess) / (m + 1);
        let next = sorted.get(m + 1).copied().unwrap_or(0);
        if level >= next {
            return Some(level.max(MIN_KEEP_TOKENS));
        }
    }
    Some(MIN_KEEP_TOKENS)
}

/// Keeps the start and the end of `text` (about `to` of its `from` tokens) with a marker between.
fn shorten(text: &str, from: usize, to: usize) -> String {
    let keep = (text.len() * to / from.max(1)).saturating_sub(64);
    if keep >= text.len() {
        return text.to_owned();
    }
    let head = extractive::floor_boundary(text, keep * 2 / 3);
    let head = text[..head]
        .rfind('\n')
        .filter(|n| *n > head / 2)
        .unwrap_or(head);
    let tail = extractive::ceil_boundary(text, text.len().saturating_sub(keep / 3).max(head));
    let tail = text[tail..]
        .find('\n')
        .filter(|n| *n < (text.len() - tail) / 2)
        .map_or(tail, |n| tail + n + 1);
    format!(
        "{}\n[… {} tokens removed by thrifty to fit the context budget …]\n{}",
        &text[..head],
        from.saturating_sub(to),
        &text[tail..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_level_cuts_the_longest_first() {
        assert_eq!(water_level(&[1_000, 400, 300], 500), Some(500));
        assert_eq!(water_level(&[1_000, 900], 300), Some(800));
        assert_eq!(water_level(&[300, 250], 10_000), Some(MIN_KEEP_TOKENS));
        assert_eq!(water_level(&[150], 100), None);
        let text = "line\n".repeat(1_000);
        let short = shorten(&text, 1_000, 200);
        assert!(
            short.len() < 1_300 && short.contains("800 tokens removed"),
            "{}",
            short.len()
        );
    }
}
