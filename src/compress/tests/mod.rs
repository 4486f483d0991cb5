//! The compressor's tests, driven through its public door: `validity` for the
//! invariants, `budget` for fitting and the ratio, `summaries` for strategy 2, `turns`
//! for a chat's next turn answered from the analyses of earlier ones.
//! The helpers here build conversations and configs in code.

use serde_json::Map;

use super::{Compressor, Force, Outcome};
use crate::chat::{ChatRequest, Message, Role, ToolCall};
use crate::config::{CompressionConfig, Mode};

mod budget;
mod relevance;
mod summaries;
mod turns;
mod validity;

pub(super) const FILLER: &str = "We went through the remaining parts of the module one by one, compared the behaviour with the notes from the previous session, and wrote down what still looked unclear so that nothing would be forgotten later on.";

pub(super) fn config(max_context_tokens: u64, recent: usize) -> CompressionConfig {
    CompressionConfig {
        max_context_tokens,
        preserve_recent_messages: recent,
        block_size: 4,
        ..CompressionConfig::default()
    }
}

pub(super) fn request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        model: "gpt-4o".to_owned(),
        messages,
        stream: false,
        shaping: Map::new(),
        incidental: Map::new(),
    }
}

/// A system prompt, then `turns` user/assistant pairs of about 150 tokens each.
pub(super) fn chat(turns: usize) -> ChatRequest {
    let mut messages = vec![Message::text(Role::System, "You are a careful assistant.")];
    for i in 0..turns {
        messages.push(Message::text(
            Role::User,
            format!(
                "Turn {i}: I moved the cache settings to config/cache_{i}.toml. {FILLER} {FILLER}"
            ),
        ));
        messages.push(Message::text(
            Role::Assistant,
            format!("Noted for turn {i}; we decided to keep `max_entries_{i}` at {i}00. {FILLER} {FILLER}"),
        ));
    }
    request(messages)
}

pub(super) fn call(id: &str, name: &str, arguments: &str) -> Message {
    Message {
        tool_calls: vec![ToolCall {
            id: Some(id.to_owned()),
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        }],
        ..Message::text(Role::Assistant, "")
    }
}

pub(super) fn result(id: &str, text: impl Into<String>) -> Message {
    Message {
        tool_call_id: Some(id.to_owned()),
        ..Message::text(Role::Tool, text)
    }
}

pub(super) fn compress(
    compressor: &Compressor,
    chat: &mut ChatRequest,
    force: Force,
) -> Option<Outcome> {
    compressor.compress_extractive(chat, None, force)
}

/// The condensed text, wherever compression put it: a user message of its own or a
/// section at the end of an instruction message.
pub(super) fn condensed_text(chat: &ChatRequest) -> Option<String> {
    chat.messages.iter().find_map(|m| {
        let text = m.flat_text();
        text.find("[thrifty:").map(|at| text[at..].to_owned())
    })
}

/// The test config in stable mode, for what only the block-stepped prefix promises.
pub(super) fn stable(max_context_tokens: u64, recent: usize) -> CompressionConfig {
    CompressionConfig {
        mode: Mode::Stable,
        ..config(max_context_tokens, recent)
    }
}
