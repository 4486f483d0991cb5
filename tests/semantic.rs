//! The semantic cache, driven over real sockets with the real embedding model: a client talks to
//! thrifty, thrifty embeds the last user message with all-MiniLM-L6-v2 (from `THRIFTY_EMBED_DIR`;
//! a missing model fails, it never skips) and answers from a cached answer to a question that
//! means the same, or goes to the fake upstream.
//!
//! Every scenario runs for both wire formats through [`Dialect`], and against both stores through
//! [`Backend`] wherever the store matters. Tests assert what a user would notice: the
//! `x-thrifty-cache` outcome, `x-thrifty-similarity`, the text of the answer, and how many calls
//! reached the fake (a semantic hit never does). The support shared with the cache suite
//! (an HTTP client of one thrifty, replies, stores and dialects, raw Redis commands) lives in
//! `tests/common/client.rs`; this suite adds `tests/semantic/world.rs`; the scenarios beside it:
//!
//! - `matching`: paraphrases hit; unrelated questions, near-misses, other conversations, other
//!   system prompts, other tenants, other speakers, tool results and images do not; the
//!   per-request controls.
//! - `context`: which earlier messages must match, the whole conversation (the default) or a
//!   window of its last messages.
//! - `lifecycle`: two instances on one Redis converge, a restart rebuilds the index (also when
//!   Redis comes up after thrifty), a stopped thrifty has closed its store, an expired answer
//!   leaves the index, admin invalidation, a Redis outage.
//! - `eval`: the guard's effect on precision, measured on a small pair file.
//! - `verified`: verified serving: unmeasured candidates are verified, agreeing outcomes shared
//!   through Redis make hits, differing ones and a corrupt record end them.
//! - `budget`: what the stage may spend on a request: no embedding unless a hit is possible,
//!   long messages exact-cache only, a busy model skipped, a bounded index queue.

mod common;

#[path = "semantic/world.rs"]
mod world;

#[path = "semantic/budget.rs"]
mod budget;
#[path = "semantic/context.rs"]
mod context;
#[path = "semantic/eval.rs"]
mod eval;
#[path = "semantic/lifecycle.rs"]
mod lifecycle;
#[path = "semantic/matching.rs"]
mod matching;
#[path = "semantic/verified.rs"]
mod verified;

use std::time::Duration;

use serde_json::{Value, json};

pub use common::client::{
    ADMIN_TOKEN, Api, BACKENDS, Backend, NO_HEADERS, POLL, Reply, bearer, poll,
};
pub use common::dialect::{DIALECTS, Dialect};
pub use world::World;

/// How long any single wait in these tests may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(20);

/// The question most scenarios cache first.
pub const QUESTION: &str = "How do I reset my password?";

/// A paraphrase of [`QUESTION`] (cosine 0.980 with this model; the guard lets it through).
pub const PARAPHRASE: &str = "how can I reset my password";

/// The system prompt of [`Dialect::chat`].
pub const SYSTEM: &str = "Be brief.";

/// One message of a conversation a test writes.
#[derive(Clone, Copy, Debug)]
pub enum Turn<'a> {
    System(&'a str),
    User(&'a str),
    Assistant(&'a str),
}

impl Dialect {
    pub fn model(self) -> &'static str {
        match self {
            Dialect::OpenAi => "gpt-4o-mini",
            Dialect::Ollama => "llama3.2",
        }
    }

    /// A chat request with raw JSON messages.
    pub fn request(self, messages: Vec<Value>, stream: bool) -> Value {
        json!({"model": self.model(), "messages": messages, "stream": stream})
    }

    /// A conversation of text messages, both dialects spell them the same way.
    pub fn conversation(self, turns: &[Turn<'_>], stream: bool) -> Value {
        let messages = turns
            .iter()
            .map(|turn| match turn {
                Turn::System(text) => json!({"role": "system", "content": text}),
                Turn::User(text) => json!({"role": "user", "content": text}),
                Turn::Assistant(text) => json!({"role": "assistant", "content": text}),
            })
            .collect();
        self.request(messages, stream)
    }

    /// A first question under the [`SYSTEM`] prompt.
    pub fn chat(self, text: &str, stream: bool) -> Value {
        self.conversation(&[Turn::System(SYSTEM), Turn::User(text)], stream)
    }

    /// A user message holding `text` (if any) and one image, in the dialect's own spelling.
    pub fn image_message(self, text: Option<&str>, image_base64: &str) -> Value {
        match self {
            Dialect::OpenAi => {
                let mut parts = Vec::new();
                if let Some(text) = text {
                    parts.push(json!({"type": "text", "text": text}));
                }
                parts.push(json!({
                    "type": "image_url",
                    "image_url": {"url": format!("data:image/png;base64,{image_base64}")}
                }));
                json!({"role": "user", "content": parts})
            }
            Dialect::Ollama => json!({
                "role": "user",
                "content": text.unwrap_or_default(),
                "images": [image_base64]
            }),
        }
    }

    /// An assistant message calling `get_weather` for Paris, then the tool's result.
    pub fn tool_exchange(self, result: &str) -> [Value; 2] {
        match self {
            Dialect::OpenAi => [
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}
                }]}),
                json!({"role": "tool", "tool_call_id": "call_1", "content": result}),
            ],
            Dialect::Ollama => [
                json!({"role": "assistant", "content": "", "tool_calls": [{
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}}
                }]}),
                json!({"role": "tool", "tool_name": "get_weather", "content": result}),
            ],
        }
    }

    /// The answer's text: the content of a JSON answer or of every chunk of a stream.
    pub fn text(self, reply: &Reply) -> String {
        let piece = |value: &Value| -> String {
            let text = match (self, reply.is_stream()) {
                (Dialect::OpenAi, false) => &value["choices"][0]["message"]["content"],
                (Dialect::OpenAi, true) => &value["choices"][0]["delta"]["content"],
                (Dialect::Ollama, _) => &value["message"]["content"],
            };
            text.as_str().unwrap_or_default().to_owned()
        };
        if reply.is_stream() {
            reply.events().iter().map(piece).collect()
        } else {
            piece(&reply.json())
        }
    }

    /// Checks that a streamed reply ends the way the dialect ends a stream, once.
    pub fn assert_stream_ends(self, reply: &Reply, what: &str) {
        assert!(
            reply.is_stream(),
            "{what}: not a stream: {}",
            reply.describe()
        );
        let text = reply.text();
        match self {
            Dialect::OpenAi => {
                assert!(
                    text.ends_with("data: [DONE]\n\n"),
                    "{what}: the stream does not end with [DONE]: {text}"
                );
                assert_eq!(text.matches("[DONE]").count(), 1, "{what}: {text}");
            }
            Dialect::Ollama => {
                let done: Vec<bool> = reply
                    .events()
                    .iter()
                    .map(|e| e["done"] == json!(true))
                    .collect();
                assert_eq!(
                    done.last(),
                    Some(&true),
                    "{what}: last line not done: {text}"
                );
                assert_eq!(done.iter().filter(|d| **d).count(), 1, "{what}: {text}");
            }
        }
    }
}

/// The fake's answer to `text`.
pub fn echo(text: &str) -> String {
    format!("Echo: {text}")
}
