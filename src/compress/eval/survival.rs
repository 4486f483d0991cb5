//! Answer survival, the measure for probes that say where their answer is
//! (`evidence_msg_idx`, as LoCoMo's do).
//!
//! A probe is **asked** when all of its evidence lies outside the last
//! `preserve_recent_messages` messages, the part compression may condense: its
//! question is appended as the next user message and the request is compressed.
//! **Matching rule:** both texts are normalised (lower case, every run of characters
//! other than letters and digits becomes one space), and an answer *occurs* in a text
//! when its normalised form is found there between word boundaries. A probe counts
//! when its answer occurs in its evidence messages (only about a third of LoCoMo's
//! reference answers are written that way; the rest are paraphrases no matching rule
//! can find), and its answer **survives** when it occurs in what would reach the
//! upstream, the question itself left out. The **truncation baseline** is measured the
//! same way on the same probes: the instructions, the question, and as many of the
//! latest messages as fit the same budget, whole and counted with the same counter.

use crate::chat::{ChatRequest, Message, Role};
use crate::compress::{Encoding, TokenCounter};

/// Lower case, every run of other characters than letters and digits one space, with
/// a space at both ends so a match can be asked to fall between words.
pub(super) fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    for c in text.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

/// Whether the normalised `answer` occurs in the normalised `text` between word boundaries.
pub(super) fn occurs(answer: &str, text: &str) -> bool {
    !answer.trim().is_empty() && text.contains(answer)
}

/// All the text of `messages`, normalised.
pub(super) fn normalised_text(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(&normalise(&m.flat_text()));
        for c in &m.tool_calls {
            out.push_str(&normalise(&c.arguments));
        }
    }
    out
}

/// The request cut to the latest whole messages that fit `budget` tokens: leading
/// instructions and the latest user message always, a tool call with its results.
pub(super) fn truncated(
    counter: &TokenCounter,
    encoding: Encoding,
    chat: &ChatRequest,
    budget: usize,
) -> ChatRequest {
    let counts = counter.request(encoding, chat);
    let messages = &chat.messages;
    let lead = messages
        .iter()
        .take_while(|m| m.role.is_instruction())
        .count();
    let latest_user = messages.iter().rposition(|m| m.role == Role::User);
    let mut used = counts.fixed
        + counts.messages[..lead].iter().sum::<usize>()
        + latest_user.map_or(0, |u| counts.messages[u]);
    let mut from = messages.len();
    let mut unit = 0;
    for i in (lead..messages.len()).rev() {
        if Some(i) != latest_user {
            unit += counts.messages[i];
        }
        // A tool result belongs to the call before it: cut only at the start of a unit.
        if messages[i].role == Role::Tool {
            continue;
        }
        if used + unit > budget {
            break;
        }
        used += unit;
        unit = 0;
        from = i;
    }
    let mut out = chat.clone();
    out.messages = messages
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < lead || *i >= from || Some(*i) == latest_user)
        .map(|(_, m)| m.clone())
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_between_word_boundaries_whatever_the_punctuation() {
        let text =
            normalise("[Session 2, 8 May, 2023] Joanna: I watched \"Eternal Sunshine\" in 2019!");
        assert!(occurs(&normalise("eternal sunshine"), &text));
        assert!(occurs(&normalise("8 May 2023"), &text));
        assert!(occurs(&normalise("2019."), &text));
        assert!(!occurs(&normalise("201"), &text));
        assert!(!occurs(&normalise("sun"), &text));
        assert!(!occurs(&normalise("..."), &text));
    }

    #[test]
    fn truncation_keeps_the_latest_messages_that_fit() {
        let mut messages = vec![Message::text(Role::System, "Be brief.")];
        for i in 0..40 {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            messages.push(Message::text(role, format!("message {i} ").repeat(20)));
        }
        messages.push(Message::text(Role::User, "What was message 3 about?"));
        let chat = ChatRequest {
            model: "gpt-4o".to_owned(),
            messages,
            stream: false,
            shaping: Default::default(),
            incidental: Default::default(),
        };
        let counter = TokenCounter::new();
        let cut = truncated(&counter, Encoding::O200kBase, &chat, 500);
        let total = counter.request(Encoding::O200kBase, &cut).total();
        assert!(total <= 500, "{total}");
        assert!(cut.messages.len() > 3 && cut.messages.len() < chat.messages.len());
        assert_eq!(cut.messages[0], chat.messages[0]);
        assert!(chat.messages.ends_with(&cut.messages[1..]));
    }
}
