//! The exact response cache, driven over real sockets: a client talks to thrifty, thrifty talks
//! to the fake upstream, and the cache lives in a spawned Redis or in the embedded store.
//!
//! Every scenario runs against both stores through [`Backend`], and for both wire formats
//! through [`Dialect`] wherever the scenario exists in both: each combination is an `rstest`
//! case of its own (`#[values(..)]`), so it runs beside the others and fails on its own. Tests assert what a user would
//! notice: the bytes returned, the `x-thrifty-cache*` headers, how many calls reached the fake
//! (a hit never does) and what the store holds. The support shared with the semantic suite
//! (an HTTP client of one thrifty, replies, stores and dialects, raw Redis commands) lives in
//! `tests/common/client.rs`; this suite adds `tests/cache/client.rs` (admin stats, waits for an
//! entry) and `tests/cache/harness.rs` (the fake, the store and thrifty started together, the
//! cache's Redis reads); the scenarios beside them:
//!
//! - `replay`: miss then hit, JSON and streams, replay in the client's mode, usage, tool calls.
//! - `keys`: which fields share an entry, namespaces, tenants.
//! - `storing`: what is never stored (errors, cut streams) and the per-request controls.
//! - `ttl`: expiry, `max-age`, the sliding TTL and its `max_ttl` cap.
//! - `flight`: identical concurrent misses go upstream once.
//! - `embeddings`: the per-input embedding cache.
//! - `admin`: `/admin/cache/*`.
//! - `secrecy`: no API key bytes in the store, encryption at rest.
//! - `durability`: a Redis outage and a thrifty restart.
//! - `sdk`: the official Python SDKs parse a replayed answer exactly like a live one.

mod common;

#[path = "cache/client.rs"]
mod client;
#[path = "cache/harness.rs"]
mod harness;

#[path = "cache/admin.rs"]
mod admin;
#[path = "cache/durability.rs"]
mod durability;
#[path = "cache/embeddings.rs"]
mod embeddings;
#[path = "cache/flight.rs"]
mod flight;
#[path = "cache/hot.rs"]
mod hot;
#[path = "cache/keys.rs"]
mod keys;
#[path = "cache/known.rs"]
mod known;
#[path = "cache/replay.rs"]
mod replay;
#[path = "cache/sdk.rs"]
mod sdk;
#[path = "cache/secrecy.rs"]
mod secrecy;
#[path = "cache/storing.rs"]
mod storing;
#[path = "cache/ttl.rs"]
mod ttl;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use common::client::{
    ADMIN_TOKEN, Api, BACKENDS, Backend, NO_HEADERS, POLL, Probe, Reply, bearer, poll, start_redis,
    start_thrifty,
};
pub use common::dialect::{DIALECTS, Dialect};
pub use harness::Harness;

/// How long any single wait in these tests may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// The prefix of every recorded answer in the store.
pub const ANSWER_PREFIX: &str = "thrifty:v1:answer:";

/// The arguments of every tool call the fake makes.
pub use common::fake_llm::TOOL_ARGUMENTS;

// ---------------------------------------------------------------------------------------------
// Dialects.
// ---------------------------------------------------------------------------------------------

/// The cached answer calls both dialects have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/chat/completions`, `/api/chat`.
    Chat,
    /// `/v1/completions`, `/api/generate`.
    Completion,
}

pub const KINDS: [Kind; 2] = [Kind::Chat, Kind::Completion];

impl Dialect {
    /// The path of `kind` on thrifty, which is also its path on the fake.
    pub fn path(self, kind: Kind) -> &'static str {
        match kind {
            Kind::Chat => self.chat_path(),
            Kind::Completion => self.completion_path(),
        }
    }

    pub fn model(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Dialect::OpenAi, Kind::Chat) => "gpt-4o-mini",
            (Dialect::OpenAi, Kind::Completion) => "gpt-3.5-turbo-instruct",
            (Dialect::Ollama, _) => "llama3.2",
        }
    }

    pub fn embed_model(self) -> &'static str {
        match self {
            Dialect::OpenAi => "text-embedding-3-small",
            Dialect::Ollama => "nomic-embed-text",
        }
    }

    /// A request for `kind` asking `text`, streamed or not.
    pub fn request(self, kind: Kind, text: &str, stream: bool) -> Value {
        let model = self.model(kind);
        match kind {
            Kind::Chat => json!({
                "model": model,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": text}
                ],
                "stream": stream
            }),
            Kind::Completion => json!({"model": model, "prompt": text, "stream": stream}),
        }
    }

    pub fn chat(self, text: &str, stream: bool) -> Value {
        self.request(Kind::Chat, text, stream)
    }

    /// A chat request offering the `get_weather` tool; the fake calls it when `text` mentions
    /// the weather.
    pub fn tool_chat(self, text: &str, stream: bool) -> Value {
        let mut body = self.chat(text, stream);
        body["tools"] = json!([{
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"]
                }
            }
        }]);
        body
    }

    /// The same request asking OpenAI for a usage chunk at the end of its stream.
    pub fn with_usage(self, mut body: Value) -> Value {
        assert_eq!(self, Dialect::OpenAi, "only OpenAI has stream_options");
        body["stream_options"] = json!({"include_usage": true});
        body
    }

    /// Sets a sampling option (`temperature`, `seed`) where the dialect keeps it.
    pub fn set_option(self, body: &mut Value, name: &str, value: Value) {
        match self {
            Dialect::OpenAi => body[name] = value,
            Dialect::Ollama => {
                if !body["options"].is_object() {
                    body["options"] = json!({});
                }
                body["options"][name] = value;
            }
        }
    }

    /// An embedding request for `inputs`.
    pub fn embed(self, inputs: &[&str]) -> Value {
        json!({"model": self.embed_model(), "input": inputs})
    }

    /// The fields a replay mints afresh.
    pub fn volatile(self) -> &'static [&'static str] {
        match self {
            Dialect::OpenAi => &["id", "created"],
            Dialect::Ollama => &["created_at"],
        }
    }

    /// `value` without the top-level fields a replay mints afresh.
    pub fn stable(self, value: &Value) -> Value {
        let mut value = value.clone();
        if let Some(object) = value.as_object_mut() {
            for field in self.volatile() {
                object.shift_remove(*field);
            }
        }
        value
    }

    /// The answer's text: the content of a JSON answer or of every chunk of a stream.
    pub fn text(self, kind: Kind, reply: &Reply) -> String {
        let piece = |value: &Value| -> String {
            let text = match (self, kind, reply.is_stream()) {
                (Dialect::OpenAi, Kind::Chat, false) => &value["choices"][0]["message"]["content"],
                (Dialect::OpenAi, Kind::Chat, true) => &value["choices"][0]["delta"]["content"],
                (Dialect::OpenAi, Kind::Completion, _) => &value["choices"][0]["text"],
                (Dialect::Ollama, Kind::Chat, _) => &value["message"]["content"],
                (Dialect::Ollama, Kind::Completion, _) => &value["response"],
            };
            text.as_str().unwrap_or_default().to_owned()
        };
        if reply.is_stream() {
            reply.events().iter().map(piece).collect()
        } else {
            piece(&reply.json())
        }
    }

    /// The fake's answer to `text`.
    pub fn echo(text: &str) -> String {
        format!("Echo: {text}")
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
                let finished = reply.events().iter().any(|event| {
                    event["choices"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| !c["finish_reason"].is_null()))
                });
                assert!(finished, "{what}: no chunk has a finish_reason: {text}");
            }
            Dialect::Ollama => {
                assert!(
                    text.ends_with('\n'),
                    "{what}: unterminated last line: {text}"
                );
                let events = reply.events();
                let done: Vec<bool> = events.iter().map(|e| e["done"] == json!(true)).collect();
                assert_eq!(
                    done.last(),
                    Some(&true),
                    "{what}: last line not done: {text}"
                );
                assert_eq!(done.iter().filter(|d| **d).count(), 1, "{what}: {text}");
            }
        }
    }

    /// Checks that `reply` is the dialect's error body with the given status.
    pub fn assert_error(self, reply: &Reply, status: StatusCode, what: &str) {
        assert_eq!(reply.status, status, "{what}: {}", reply.describe());
        let body = reply.json();
        match self {
            Dialect::OpenAi => {
                assert!(
                    body["error"]["message"].is_string() && body["error"]["type"].is_string(),
                    "{what}: not an OpenAI error body: {body}"
                );
            }
            Dialect::Ollama => {
                assert!(
                    body["error"].is_string(),
                    "{what}: not an Ollama error body: {body}"
                );
            }
        }
    }

    /// Checks that the replay minted a fresh id and creation time, unlike `recorded`.
    pub fn assert_fresh(self, replayed: &Value, recorded: &Value, what: &str) {
        match self {
            Dialect::OpenAi => {
                let id = replayed["id"].as_str().unwrap_or_default();
                let old = recorded["id"].as_str().unwrap_or_default();
                assert_ne!(id, old, "{what}: the replay reuses the recorded id");
                let prefix = old.split('-').next().unwrap_or_default();
                assert!(
                    id.starts_with(&format!("{prefix}-")),
                    "{what}: replayed id {id} lost the prefix of {old}"
                );
                let created = replayed["created"].as_u64().unwrap_or_default();
                assert!(
                    created.abs_diff(unix_now()) <= 5,
                    "{what}: replayed created {created} is not now"
                );
            }
            Dialect::Ollama => {
                let at = replayed["created_at"].as_str().unwrap_or_default();
                assert!(!at.is_empty(), "{what}: no created_at in {replayed}");
                assert_ne!(
                    at,
                    recorded["created_at"].as_str().unwrap_or_default(),
                    "{what}: the replay reuses the recorded created_at"
                );
            }
        }
    }
}

/// Waits until the stored answer under `key` is a stream recorded with its usage chunk.
pub async fn await_recorded_usage(api: &Api, key: &str, what: &str) {
    poll(
        WAIT,
        &format!("{what}: the answer with usage is recorded"),
        || async {
            let entry = api.entry(key).await?;
            let chunks = entry["entry"]["answer"]["body"].as_array()?.clone();
            chunks.iter().any(|c| c["usage"].is_object()).then_some(())
        },
    )
    .await;
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The tenant id thrifty derives from a passthrough bearer token.
pub fn tenant_id(token: &str) -> String {
    format!(
        "anon-{}",
        &hex::encode(Sha256::digest(token.as_bytes()))[..24]
    )
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
