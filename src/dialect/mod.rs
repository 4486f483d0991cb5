//! Dialect adapters: the only code that knows OpenAI's and Ollama's wire JSON.
//!
//! Each adapter decodes request bodies into `chat` types, encodes them back,
//! renders `ProxyError` in its own error shape and maps endpoints to paths. OpenAI's
//! Responses API has a room of its own (`responses/`), whichever server speaks it.
//! Nothing outside this folder matches on `Dialect` to read or write JSON.

pub mod embedding;
mod ndjson;
pub mod observe;
mod ollama;
mod openai;
pub mod responses;
pub mod sse;
pub mod stream;
pub mod template;
pub mod usage;
mod wire;

use bytes::Bytes;

use crate::chat::{Call, ChatRequest, Dialect, Endpoint, Message};
use crate::error::ProxyError;

/// Decodes the body of an intercepted call.
pub fn decode(dialect: Dialect, endpoint: Endpoint, body: &[u8]) -> Result<Call, ProxyError> {
    let object = wire::parse_object(body)?;
    match dialect {
        Dialect::OpenAi => openai::decode(endpoint, object),
        Dialect::Ollama => ollama::decode(endpoint, object),
    }
}

/// The `model` a body names when it is JSON at all (`""` when it names none): such a body is
/// the upstream's to judge even where thrifty cannot decode it. `None` for bytes that are not
/// JSON.
pub fn json_model(body: &[u8]) -> Option<String> {
    let value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    Some(value["model"].as_str().unwrap_or_default().to_owned())
}

/// How the stream of a call that follows an identical one in flight is rewritten for it: the
/// usage it did not ask for taken out, and an id (OpenAI) or creation times (Ollama) of its
/// own, as a replay gets; a Responses answer keeps its id, which names the response the
/// upstream stored.
pub fn follower_stream(
    dialect: Dialect,
    call: &Call,
    strip_usage: bool,
) -> Option<Box<dyn sse::Rewriter>> {
    match dialect {
        Dialect::Ollama => Some(Box::new(ndjson::FreshTimes::default())),
        Dialect::OpenAi => {
            let own_id = call.endpoint() != Endpoint::Responses;
            let changes = sse::Changes {
                strip_usage,
                id_suffix: own_id.then(|| uuid::Uuid::new_v4().simple().to_string()),
            };
            usage_or_ids(changes)
        }
    }
}

/// The rewriter that takes out the usage chunk thrifty asked for and the client did not.
pub fn usage_stripper(strips: bool) -> Option<Box<dyn sse::Rewriter>> {
    usage_or_ids(sse::Changes {
        strip_usage: strips,
        id_suffix: None,
    })
}

fn usage_or_ids(changes: sse::Changes) -> Option<Box<dyn sse::Rewriter>> {
    let nothing = !changes.strip_usage && changes.id_suffix.is_none();
    (!nothing).then(|| Box::new(sse::EventRewriter::new(changes)) as Box<dyn sse::Rewriter>)
}

/// Encodes a call as the JSON body the given dialect expects.
pub fn encode(dialect: Dialect, call: &Call) -> Bytes {
    let object = match dialect {
        Dialect::OpenAi => openai::encode(call),
        Dialect::Ollama => ollama::encode(call),
    };
    Bytes::from(serde_json::Value::Object(object).to_string())
}

/// The JSON error body a client of this dialect expects.
pub fn error_body(dialect: Dialect, error: &ProxyError) -> Bytes {
    let value = match dialect {
        Dialect::OpenAi => openai::error_body(error),
        Dialect::Ollama => ollama::error_body(error),
    };
    Bytes::from(value.to_string())
}

/// The endpoint an intercepted `POST` path names, if any; `rest` is the path after the dialect prefix.
pub fn endpoint_for(dialect: Dialect, rest: &str) -> Option<Endpoint> {
    match dialect {
        Dialect::OpenAi => openai::endpoint_for(rest),
        Dialect::Ollama => ollama::endpoint_for(rest),
    }
}

/// The path prefix of the dialect's API on a client-facing server (`/v1`, `/api`).
pub fn prefix(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::OpenAi => "/v1",
        Dialect::Ollama => "/api",
    }
}

/// The URL prefix under which an upstream speaking `server` serves clients of `client`, if
/// it does. An OpenAI upstream's base URL already ends in its API root (`.../v1`); an Ollama
/// server serves its native API under `/api` and OpenAI's under `/v1`.
pub fn api_root(server: Dialect, client: Dialect, base_url: &str) -> Option<String> {
    match (server, client) {
        (Dialect::OpenAi, Dialect::OpenAi) => Some(base_url.to_owned()),
        (Dialect::OpenAi, Dialect::Ollama) => None,
        (Dialect::Ollama, client) => Some(format!("{base_url}{}", prefix(client))),
    }
}

/// Whether the client asked for token usage in its stream (`stream_options.include_usage`);
/// Ollama always reports counts in its final chunk.
pub fn wants_stream_usage(dialect: Dialect, call: &Call) -> bool {
    let incidental = match call {
        // A Responses stream always ends with the whole response, usage included.
        Call::Responses(_) => return true,
        Call::Chat(c) => &c.incidental,
        Call::Completion(c) => &c.incidental,
        Call::Embedding(_) => return false,
    };
    match dialect {
        Dialect::OpenAi => incidental
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        Dialect::Ollama => true,
    }
}

/// Whether thrifty should ask the upstream for the usage chunk the client did not ask for:
/// an OpenAI stream otherwise reports no token counts at all.
pub fn lacks_stream_usage(dialect: Dialect, call: &Call) -> bool {
    dialect == Dialect::OpenAi && call.stream() && !wants_stream_usage(dialect, call)
}

/// Sets `stream_options.include_usage`, keeping any other stream option the client sent.
pub fn request_stream_usage(call: &mut Call) {
    let incidental = match call {
        Call::Chat(c) => &mut c.incidental,
        Call::Completion(c) => &mut c.incidental,
        Call::Responses(_) | Call::Embedding(_) => return,
    };
    let options = incidental
        .entry("stream_options")
        .or_insert_with(|| serde_json::json!({}));
    if !options.is_object() {
        *options = serde_json::json!({});
    }
    if let Some(options) = options.as_object_mut() {
        options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
    }
}

/// A non-streamed OpenAI-style chat request thrifty makes itself (the summarizer's), its
/// answer capped at `max_tokens` in the field the upstream reads: OpenAI's current models
/// take `max_completion_tokens`, an Ollama server's OpenAI-compatible `/v1` takes `max_tokens`.
pub fn own_chat_request(
    upstream: Dialect,
    model: &str,
    messages: &[Message],
    max_tokens: u64,
) -> Bytes {
    let limit = match upstream {
        Dialect::OpenAi => "max_completion_tokens",
        Dialect::Ollama => "max_tokens",
    };
    let mut shaping = serde_json::Map::new();
    shaping.insert(limit.to_owned(), serde_json::json!(max_tokens));
    let chat = ChatRequest {
        model: model.to_owned(),
        messages: messages.to_vec(),
        stream: false,
        shaping,
        incidental: serde_json::Map::new(),
    };
    encode(Dialect::OpenAi, &Call::Chat(chat))
}

/// The conversation of a chat or Responses call when the call carries all of it; `None` for
/// a Responses call that continues state the upstream keeps (`previous_response_id`,
/// `conversation`), whose items are only the newest part of what the model reads: it is
/// neither compared with other questions nor condensed.
pub fn whole_conversation(call: &Call) -> Option<&ChatRequest> {
    match call {
        Call::Responses(c) if responses::continues_upstream_state(c) => None,
        call => call.conversation(),
    }
}

/// Whether an error answer says the prompt did not fit the model's context window
/// (OpenAI's `context_length_exceeded`, Ollama's and compatible servers' wording).
pub fn is_context_overflow(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = &value["error"];
    if error["code"].as_str() == Some("context_length_exceeded") {
        return true;
    }
    let message = error
        .as_str()
        .or_else(|| error["message"].as_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    ["context length", "context window", "maximum context"]
        .iter()
        .any(|phrase| message.contains(phrase))
}

/// A call's tool definitions (`tools`, and OpenAI's legacy `functions`), as sent.
pub fn tool_definitions(chat: &ChatRequest) -> impl Iterator<Item = &serde_json::Value> {
    ["tools", "functions"]
        .into_iter()
        .filter_map(|field| chat.shaping.get(field))
        .filter(|value| !value.is_null())
}

/// A text part written the way the message's other text parts are (`text` in Chat
/// Completions, `input_text` in the Responses API).
pub fn text_part(text: String, like: &[crate::chat::Part]) -> crate::chat::Part {
    use crate::chat::PartKind;
    let kind = like
        .iter()
        .filter(|p| matches!(p.kind, PartKind::Text(_)))
        .find_map(|p| p.raw["type"].as_str())
        .unwrap_or("text")
        .to_owned();
    crate::chat::Part {
        raw: serde_json::json!({"type": kind, "text": text}),
        kind: PartKind::Text(text),
    }
}

/// The speaker's `name` a message carries, if any.
pub fn message_name(message: &Message) -> Option<&str> {
    message
        .extra
        .get("name")
        .and_then(serde_json::Value::as_str)
}

/// The headers of a rate-limit refusal: `retry-after` in whole seconds, and OpenAI's
/// `x-ratelimit-*-requests` set, which OpenAI's SDKs read; Ollama's API has none of its own,
/// and its clients get the same set.
pub fn rate_limit_headers(
    h: &mut http::HeaderMap,
    limit: u32,
    retry_after: std::time::Duration,
    reset: std::time::Duration,
) {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    h.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(secs.max(1)),
    );
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            h.insert(name, value);
        }
    };
    set("x-ratelimit-limit-requests", limit.to_string());
    set("x-ratelimit-remaining-requests", "0".to_owned());
    set("x-ratelimit-reset-requests", openai_duration(reset));
}

/// Formats a duration the way OpenAI's `x-ratelimit-reset-*` headers do (`1s`, `6m0s`, `20ms`).
fn openai_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{}ms", ms.max(1));
    }
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        let s = format!("{secs:.3}");
        return format!("{}s", s.trim_end_matches('0').trim_end_matches('.'));
    }
    let whole = d.as_secs();
    format!("{}m{}s", whole / 60, whole % 60)
}

/// Whether an error answer with this status may be one that says the prompt did not fit
/// (OpenAI answers 400, some compatible servers 413, Ollama 500); only those are read.
pub fn may_be_context_overflow(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 413 | 500)
}

/// A legacy completion prompt (`prompt`: a text, token ids, or a list of either), as what
/// counts: its texts and how many token ids it holds.
#[derive(Debug, Default, PartialEq)]
pub struct LegacyPrompt<'a> {
    pub texts: Vec<&'a str>,
    pub token_ids: usize,
}

pub fn legacy_prompt(prompt: &serde_json::Value) -> LegacyPrompt<'_> {
    fn walk<'a>(value: &'a serde_json::Value, out: &mut LegacyPrompt<'a>) {
        match value {
            serde_json::Value::String(text) => out.texts.push(text),
            serde_json::Value::Number(_) => out.token_ids += 1,
            serde_json::Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = LegacyPrompt::default();
    walk(prompt, &mut out);
    out
}

/// The path under an upstream's API root where a dialect takes an endpoint's calls; the
/// inverse of [`endpoint_for`].
pub fn path_of(dialect: Dialect, endpoint: Endpoint) -> Option<&'static str> {
    Some(match (dialect, endpoint) {
        (Dialect::OpenAi, Endpoint::Chat) => "/chat/completions",
        (Dialect::OpenAi, Endpoint::Completion) => "/completions",
        (Dialect::OpenAi, Endpoint::Responses) => "/responses",
        (Dialect::OpenAi, Endpoint::Embedding) => "/embeddings",
        (Dialect::Ollama, Endpoint::Chat) => "/chat",
        (Dialect::Ollama, Endpoint::Completion) => "/generate",
        (Dialect::Ollama, Endpoint::Embedding) => "/embed",
        (Dialect::Ollama, Endpoint::LegacyEmbedding) => "/embeddings",
        (Dialect::OpenAi, Endpoint::LegacyEmbedding) | (Dialect::Ollama, Endpoint::Responses) => {
            return None;
        }
    })
}

/// The sampling temperature the call asks for, if it names one.
pub fn temperature(dialect: Dialect, call: &Call) -> Option<f64> {
    let shaping = match call {
        Call::Chat(c) | Call::Responses(c) => &c.shaping,
        Call::Completion(c) => &c.shaping,
        Call::Embedding(_) => return None,
    };
    match dialect {
        Dialect::OpenAi => shaping.get("temperature"),
        Dialect::Ollama => shaping.get("options").and_then(|o| o.get("temperature")),
    }
    .and_then(serde_json::Value::as_f64)
}

/// The most output tokens the call asks for (`max_tokens`, `max_completion_tokens`,
/// Responses' `max_output_tokens`, Ollama's `options.num_predict`), which compression
/// leaves room for.
pub fn max_output_tokens(dialect: Dialect, call: &Call) -> Option<u64> {
    let shaping = match call {
        Call::Responses(c) => return c.shaping.get("max_output_tokens").and_then(|v| v.as_u64()),
        Call::Chat(c) => &c.shaping,
        Call::Completion(c) => &c.shaping,
        Call::Embedding(_) => return None,
    };
    match dialect {
        Dialect::OpenAi => shaping
            .get("max_completion_tokens")
            .or_else(|| shaping.get("max_tokens")),
        Dialect::Ollama => shaping.get("options").and_then(|o| o.get("num_predict")),
    }
    .and_then(serde_json::Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_look_like_openai_headers() {
        use std::time::Duration;
        assert_eq!(openai_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(openai_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn every_path_names_its_endpoint_and_back() {
        let endpoints = [
            Endpoint::Chat,
            Endpoint::Completion,
            Endpoint::Embedding,
            Endpoint::LegacyEmbedding,
            Endpoint::Responses,
        ];
        let mut paths = 0;
        for dialect in [Dialect::OpenAi, Dialect::Ollama] {
            for endpoint in endpoints {
                if let Some(path) = path_of(dialect, endpoint) {
                    assert_eq!(endpoint_for(dialect, path), Some(endpoint), "{path}");
                    paths += 1;
                }
            }
        }
        assert_eq!(paths, 8);
    }

    #[test]
    fn a_legacy_prompt_counts_its_texts_and_token_ids() {
        let prompt = serde_json::json!(["Say hi", [1, 2, 3], 7, "and bye"]);
        let read = legacy_prompt(&prompt);
        assert_eq!(read.texts, ["Say hi", "and bye"]);
        assert_eq!(read.token_ids, 4);
    }

    fn chat(body: &str) -> Call {
        match decode(Dialect::OpenAi, Endpoint::Chat, body.as_bytes()) {
            Ok(call) => call,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn usage_is_requested_only_for_openai_streams_that_lack_it() {
        let plain = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let streamed = r#"{"model":"m","stream":true,"stream_options":{"x":1},"messages":[{"role":"user","content":"hi"}]}"#;
        let asked = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
        assert!(!lacks_stream_usage(Dialect::OpenAi, &chat(plain)));
        assert!(!lacks_stream_usage(Dialect::OpenAi, &chat(asked)));
        let mut call = chat(streamed);
        assert!(lacks_stream_usage(Dialect::OpenAi, &call));
        request_stream_usage(&mut call);
        assert!(wants_stream_usage(Dialect::OpenAi, &call));
        let sent: serde_json::Value = match serde_json::from_slice(&encode(Dialect::OpenAi, &call))
        {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            sent["stream_options"],
            serde_json::json!({"x": 1, "include_usage": true})
        );
    }

    #[test]
    fn context_overflow_is_recognised_in_both_dialects() {
        let openai = br#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let ollama = br#"{"error":"the input length exceeds the context length"}"#;
        let other = br#"{"error":{"message":"Invalid value for 'temperature'","code":null}}"#;
        assert!(is_context_overflow(openai));
        assert!(is_context_overflow(ollama));
        assert!(!is_context_overflow(other));
        assert!(!is_context_overflow(b"not json"));
    }
}
