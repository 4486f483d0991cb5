//! Dialect adapters: the only code that knows OpenAI's and Ollama's wire JSON.
//!
//! Each adapter decodes request bodies into `chat` types, encodes them back,
//! renders `ProxyError` in its own error shape and maps endpoints to paths.
//! Nothing outside this folder matches on `Dialect` to read or write JSON.

mod ollama;
mod openai;
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
