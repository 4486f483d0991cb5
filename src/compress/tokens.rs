//! Token counting with `tiktoken`: per text, per message and per request.
//!
//! OpenAI's own encodings are exact for OpenAI models (o200k_base for the gpt-4o,
//! gpt-4.1, gpt-4.5, o-series, gpt-5 and gpt-oss families, cl100k_base for older
//! ones). Every other model is counted with cl100k_base as a stated approximation:
//! Llama 3 and Qwen use byte-level BPEs of a similar size and land within a few
//! percent; SentencePiece models (Mistral, Gemma, Phi) usually need somewhat more
//! tokens, which is what the recovery retry is for.
//!
//! Message framing follows OpenAI's cookbook (3 tokens per message, 1 more for a
//! `name`, 3 to prime the reply), as `tiktoken-rs` does. A text's tokens are
//! counted by `bpe`, exactly as `tiktoken-rs` would but without its regular
//! expressions on plain text. Counts of long texts are cached by a hash of their
//! text: a conversation resends the same history every turn, so in steady state
//! only the newest messages are counted.
//!
//! The work of one count (a request, a message or a text) is bounded: its first
//! [`EXACT_BYTES`] of text are counted exactly; what lies beyond is estimated from the
//! ratio of tokens to bytes seen so far (a text that crosses the bound is sampled first),
//! so a 30 MB message costs about what a 1 MiB one does.
//! This room must not decide anything: it only counts.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::chat::{ChatRequest, Content, Message, PartKind};
use crate::config::Encoding;
use crate::dialect;
use serde_json::Value;

use super::bpe;

/// Framing tokens around every message (`<|start|>{role}<|message|>...<|end|>` less the role).
pub const TOKENS_PER_MESSAGE: usize = 3;
/// Extra token when a message carries a `name`.
pub const TOKENS_PER_NAME: usize = 1;
/// Tokens that prime the assistant's reply, once per request.
pub const REPLY_PRIMING: usize = 3;
/// Extra tokens per tool call, as `tiktoken-rs` counts them.
pub const TOKENS_PER_TOOL_CALL: usize = 1;
/// What an image part is assumed to cost: a 1024×1024 image at high detail (85 + 4 × 170).
/// The true cost depends on the image size and `detail`, which thrifty does not decode.
pub const IMAGE_TOKENS: usize = 765;

/// Texts shorter than this are tokenized directly; caching them costs more than it saves.
const CACHE_MIN_BYTES: usize = 16;
/// How many text counts are remembered.
const CACHE_ENTRIES: u64 = 100_000;
/// Bytes of text one count tokenizes exactly; the rest is estimated.
pub const EXACT_BYTES: usize = 1024 * 1024;
/// The smallest sample a text beyond the bound is tokenized on, when nothing was counted yet.
const MIN_SAMPLE: usize = 4096;

/// What one count may still tokenize, and what it has tokenized so far.
struct Meter {
    left: usize,
    bytes: usize,
    tokens: usize,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            left: EXACT_BYTES,
            bytes: 0,
            tokens: 0,
        }
    }

    fn counted(&mut self, bytes: usize, tokens: usize) {
        self.left = self.left.saturating_sub(bytes);
        self.bytes += bytes;
        self.tokens += tokens;
    }

    /// Tokens of `bytes` more bytes at the ratio counted so far.
    fn estimate(&self, bytes: usize) -> usize {
        if self.bytes == 0 {
            return bytes.div_ceil(4);
        }
        let tokens = (bytes as u128 * self.tokens as u128).div_ceil(self.bytes as u128);
        usize::try_from(tokens).unwrap_or(usize::MAX)
    }
}

/// The longest prefix of `text` of at most `bytes` bytes that ends on a character boundary.
fn prefix(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Token counts of one request: one entry per message, plus what every request pays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub messages: Vec<usize>,
    /// Reply priming and tool definitions.
    pub fixed: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.fixed + self.messages.iter().sum::<usize>()
    }
}

/// Counts tokens, remembering the counts of long texts it has seen. Clones share that memory.
#[derive(Clone)]
pub struct TokenCounter {
    cache: moka::sync::Cache<u64, u32>,
}

impl Default for TokenCounter {
    fn default() -> Self {
        TokenCounter::new()
    }
}

impl TokenCounter {
    pub fn new() -> Self {
        TokenCounter {
            cache: moka::sync::Cache::new(CACHE_ENTRIES),
        }
    }

    /// Builds both tokenizers now; the first build takes about half a second.
    pub fn warm_up() {
        bpe::warm_up();
    }

    /// Tokens of a plain text, special-token lookalikes counted as ordinary text; beyond
    /// [`EXACT_BYTES`], estimated from a sample.
    pub fn text(&self, encoding: Encoding, text: &str) -> usize {
        self.metered(encoding, text, &mut Meter::new())
    }

    fn metered(&self, encoding: Encoding, text: &str, meter: &mut Meter) -> usize {
        if text.len() <= meter.left {
            let count = self.exact(encoding, text);
            meter.counted(text.len(), count);
            return count;
        }
        if meter.left >= MIN_SAMPLE || meter.bytes == 0 {
            let sample = prefix(text, meter.left.max(MIN_SAMPLE));
            let count = bpe::count(encoding, sample);
            meter.counted(sample.len(), count);
        }
        meter.estimate(text.len())
    }

    fn exact(&self, encoding: Encoding, text: &str) -> usize {
        if text.len() < CACHE_MIN_BYTES {
            return bpe::count(encoding, text);
        }
        let mut hasher = DefaultHasher::new();
        encoding.hash(&mut hasher);
        text.hash(&mut hasher);
        let key = hasher.finish();
        if let Some(count) = self.cache.get(&key) {
            return count as usize;
        }
        let count = bpe::count(encoding, text);
        self.cache
            .insert(key, u32::try_from(count).unwrap_or(u32::MAX));
        count
    }

    /// Tokens of one message including its framing, tool calls and named fields.
    pub fn message(&self, encoding: Encoding, message: &Message) -> usize {
        let mut meter = Meter::new();
        measure_message(message, &|role| self.role(encoding, role), &mut |text| {
            self.metered(encoding, text, &mut meter)
        })
    }

    /// Tokens of a message's content; non-text parts at their assumed cost.
    pub fn content(&self, encoding: Encoding, content: &Content) -> usize {
        let mut meter = Meter::new();
        measure_content(content, &mut |text| {
            self.metered(encoding, text, &mut meter)
        })
    }

    /// Tool (and legacy function) definitions, counted as their JSON text: OpenAI
    /// renders them in a more compact form, so this errs on the high side.
    pub fn tools(&self, encoding: Encoding, chat: &ChatRequest) -> usize {
        let mut meter = Meter::new();
        measure_tools(chat, &mut |text| self.metered(encoding, text, &mut meter))
    }

    /// Every message once, plus priming and tool definitions, within one bound of work.
    pub fn request(&self, encoding: Encoding, chat: &ChatRequest) -> Counts {
        let mut meter = Meter::new();
        measure_request(chat, &|role| self.role(encoding, role), &mut |text| {
            self.metered(encoding, text, &mut meter)
        })
    }

    /// A bound no count of `chat` by [`TokenCounter::request`] exceeds: the same walk with
    /// every text (roles included) measured by its bytes. A token covers at least one byte of
    /// its text (and an estimate beyond [`EXACT_BYTES`] keeps to the ratio counted, at most
    /// one token a byte), so it costs a walk over the messages, not a tokenization.
    pub fn request_bound(chat: &ChatRequest) -> usize {
        measure_request(chat, &str::len, &mut str::len).total()
    }

    fn role(&self, encoding: Encoding, role: &str) -> usize {
        match role {
            // One token in both encodings.
            "system" | "developer" | "user" | "assistant" | "tool" => 1,
            other => self.text(encoding, other),
        }
    }
}

/// A request measured part by part: each text by `text`, each role by `role`, the framing,
/// tool calls, images and names at their fixed costs.
fn measure_request(
    chat: &ChatRequest,
    role: &impl Fn(&str) -> usize,
    text: &mut impl FnMut(&str) -> usize,
) -> Counts {
    let fixed = REPLY_PRIMING + measure_tools(chat, text);
    Counts {
        messages: chat
            .messages
            .iter()
            .map(|m| measure_message(m, role, text))
            .collect(),
        fixed,
    }
}

fn measure_message(
    message: &Message,
    role: &impl Fn(&str) -> usize,
    text: &mut impl FnMut(&str) -> usize,
) -> usize {
    let mut tokens = TOKENS_PER_MESSAGE + role(message.role.as_str());
    tokens += measure_content(&message.content, text);
    for call in &message.tool_calls {
        tokens += TOKENS_PER_TOOL_CALL + text(&call.name) + text(&call.arguments);
    }
    for (field, value) in &message.extra {
        if let Value::String(value) = value {
            tokens += text(value);
            if field == "name" {
                tokens += TOKENS_PER_NAME;
            }
        }
    }
    tokens
}

fn measure_content(content: &Content, text: &mut impl FnMut(&str) -> usize) -> usize {
    match content {
        Content::Absent => 0,
        Content::Text(value) => text(value),
        Content::Parts(parts) => parts
            .iter()
            .map(|part| match &part.kind {
                PartKind::Text(value) => text(value),
                PartKind::Image => IMAGE_TOKENS,
                other => text(&other.placeholder()),
            })
            .sum(),
    }
}

fn measure_tools(chat: &ChatRequest, text: &mut impl FnMut(&str) -> usize) -> usize {
    dialect::tool_definitions(chat)
        .map(|value| text(&value.to_string()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Part, Role, ToolCall};
    use serde_json::{Map, json};
    use tiktoken_rs::{ChatCompletionRequestMessage, FunctionCall};

    fn chat(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "gpt-4o".to_owned(),
            messages,
            stream: false,
            shaping: Map::new(),
            incidental: Map::new(),
        }
    }

    #[test]
    fn request_counts_match_the_cookbook_as_tiktoken_rs_implements_it() {
        let mut named = Message::text(Role::User, "New synergies will help drive top-line growth.");
        named.extra.insert("name".to_owned(), json!("example_user"));
        let mut call = Message::text(Role::Assistant, "");
        call.content = Content::Absent;
        call.tool_calls.push(ToolCall {
            id: Some("call_1".to_owned()),
            name: "read_file".to_owned(),
            arguments: r#"{"path":"src/main.rs"}"#.to_owned(),
        });
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let messages = vec![
            Message::text(
                Role::System,
                "You are a helpful, pattern-following assistant.",
            ),
            named,
            call,
            Message::text(Role::Tool, long.clone()),
        ];
        let reference: Vec<ChatCompletionRequestMessage> = vec![
            ChatCompletionRequestMessage {
                role: "system".to_owned(),
                content: Some("You are a helpful, pattern-following assistant.".to_owned()),
                ..Default::default()
            },
            ChatCompletionRequestMessage {
                role: "user".to_owned(),
                content: Some("New synergies will help drive top-line growth.".to_owned()),
                name: Some("example_user".to_owned()),
                ..Default::default()
            },
            ChatCompletionRequestMessage {
                role: "assistant".to_owned(),
                tool_calls: vec![FunctionCall {
                    name: "read_file".to_owned(),
                    arguments: r#"{"path":"src/main.rs"}"#.to_owned(),
                }],
                ..Default::default()
            },
            ChatCompletionRequestMessage {
                role: "tool".to_owned(),
                content: Some(long),
                ..Default::default()
            },
        ];
        let counter = TokenCounter::new();
        for (model, encoding) in [
            ("gpt-4o", Encoding::O200kBase),
            ("gpt-4", Encoding::Cl100kBase),
        ] {
            let expected =
                tiktoken_rs::num_tokens_from_messages(model, &reference).expect("known model");
            let counts = counter.request(encoding, &chat(messages.clone()));
            assert_eq!(counts.total(), expected, "{model}");
            // The second count comes from the cache and agrees.
            assert_eq!(counter.request(encoding, &chat(messages.clone())), counts);
        }
    }

    #[test]
    fn text_beyond_the_bound_is_estimated_from_a_sample() {
        let counter = TokenCounter::new();
        let sentence = "The quick brown fox jumps over the lazy dog. ";
        let exact = counter.text(Encoding::O200kBase, &sentence.repeat(1000));
        let huge = sentence.repeat(EXACT_BYTES * 8 / sentence.len());
        let estimate = counter.text(Encoding::O200kBase, &huge);
        let expected = exact * (huge.len() / (sentence.len() * 1000));
        assert!(
            estimate.abs_diff(expected) * 100 < expected,
            "{estimate} is within 1% of {expected}"
        );
        // Many texts in one request share the bound; each is still counted.
        let many: Vec<Message> = (0..64)
            .map(|_| {
                Message::text(
                    Role::User,
                    sentence.repeat(EXACT_BYTES / 16 / sentence.len()),
                )
            })
            .collect();
        let counts = counter.request(Encoding::O200kBase, &chat(many));
        let one = counter.message(
            Encoding::O200kBase,
            &Message::text(
                Role::User,
                sentence.repeat(EXACT_BYTES / 16 / sentence.len()),
            ),
        );
        assert!(
            counts.messages.iter().all(|&n| n.abs_diff(one) * 100 < one),
            "{counts:?} {one}"
        );
        assert_eq!(prefix("é", 1), "");
    }

    #[test]
    fn the_bound_from_sizes_is_never_below_the_count() {
        let counter = TokenCounter::new();
        let mut named = Message::text(Role::User, "ünïcödé 𝄞 text, and some more of it");
        named.extra.insert("name".to_owned(), json!("a"));
        let mut request = chat(vec![
            Message::text(Role::System, "Be brief."),
            named,
            Message::text(Role::Assistant, ""),
            Message::text(Role::Tool, "x".repeat(3000)),
        ]);
        request.shaping.insert(
            "tools".to_owned(),
            json!([{"type": "function", "function": {"name": "f"}}]),
        );
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let counted = counter.request(encoding, &request).total();
            let bound = TokenCounter::request_bound(&request);
            assert!(counted <= bound, "{counted} <= {bound}");
        }
    }

    #[test]
    fn hello_world_is_nine_prompt_tokens() {
        let counter = TokenCounter::new();
        let counts = counter.request(
            Encoding::Cl100kBase,
            &chat(vec![Message::text(Role::User, "hello world")]),
        );
        assert_eq!(counts.messages, vec![6]);
        assert_eq!(counts.total(), 9);
    }

    #[test]
    fn tool_definitions_and_images_are_counted() {
        let counter = TokenCounter::new();
        let mut request = chat(vec![Message::text(Role::User, "hi")]);
        let bare = counter.request(Encoding::O200kBase, &request).total();
        request.shaping.insert(
            "tools".to_owned(),
            json!([{"type": "function", "function": {"name": "read_file", "description": "Reads a file from disk", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]),
        );
        let with_tools = counter.request(Encoding::O200kBase, &request).total();
        assert!(with_tools > bare + 15, "{bare} -> {with_tools}");

        let image = Message {
            content: Content::Parts(vec![
                Part {
                    kind: PartKind::Text("what is this".to_owned()),
                    raw: json!({"type": "text", "text": "what is this"}),
                },
                Part {
                    kind: PartKind::Image,
                    raw: json!({"type": "image_url"}),
                },
            ]),
            ..Message::text(Role::User, "")
        };
        let tokens = counter.message(Encoding::O200kBase, &image);
        assert!(tokens > IMAGE_TOKENS, "{tokens}");
    }
}
