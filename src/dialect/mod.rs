//! Dialect adapters: the only code that knows OpenAI's and Ollama's wire JSON.
//!
//! Each adapter decodes request bodies into `chat` types, encodes them back,
//! renders `ProxyError` in its own error shape and maps endpoints to paths.
//! Nothing outside this folder matches on `Dialect` to read or write JSON.

pub mod embedding;
mod ollama;
mod openai;
pub mod stream;
pub mod usage;
mod wire;

use bytes::Bytes;

use crate::chat::{Call, Dialect, Endpoint};
use crate::error::ProxyError;

/// Decodes the body of an intercepted call.
pub fn decode(dialect: Dialect, endpoint: Endpoint, body: &[u8]) -> Result<Call, ProxyError> {
    let object = wire::parse_object(body)?;
    match dialect {
        Dialect::OpenAi => openai::decode(endpoint, object),
        Dialect::Ollama => ollama::decode(endpoint, object),
    }
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

/// Whether the client asked for token usage in its stream (`stream_options.include_usage`);
/// Ollama always reports counts in its final chunk.
pub fn wants_stream_usage(dialect: Dialect, call: &Call) -> bool {
    let incidental = match call {
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

/// The sampling temperature the call asks for, if it names one.
pub fn temperature(dialect: Dialect, call: &Call) -> Option<f64> {
    let shaping = match call {
        Call::Chat(c) => &c.shaping,
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
/// Ollama's `options.num_predict`), which compression leaves room for.
pub fn max_output_tokens(dialect: Dialect, call: &Call) -> Option<u64> {
    let shaping = match call {
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
