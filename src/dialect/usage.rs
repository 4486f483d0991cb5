//! Token usage as each server reports it: OpenAI's `usage` object (with
//! `prompt_tokens_details.cached_tokens`), Ollama's `prompt_eval_count` and
//! `eval_count`, in JSON answers and in streams.

use serde_json::Value;

use crate::chat::Dialect;
use crate::savings::Tokens;

/// The usage a JSON answer (or one stream chunk) reports, if any.
pub fn from_json(dialect: Dialect, body: &Value) -> Option<Tokens> {
    match dialect {
        Dialect::OpenAi => {
            let usage = body.get("usage").filter(|u| u.is_object())?;
            Some(Tokens {
                prompt: usage["prompt_tokens"].as_u64().unwrap_or(0),
                cached_prompt: usage["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap_or(0),
                completion: usage["completion_tokens"].as_u64().unwrap_or(0),
            })
        }
        Dialect::Ollama => {
            let prompt = body.get("prompt_eval_count").and_then(Value::as_u64);
            let completion = body.get("eval_count").and_then(Value::as_u64);
            if prompt.is_none() && completion.is_none() {
                return None;
            }
            Some(Tokens {
                prompt: prompt.unwrap_or(0),
                cached_prompt: 0,
                completion: completion.unwrap_or(0),
            })
        }
    }
}

/// The usage in a stream's chunks: OpenAI's usage chunk, Ollama's final chunk.
pub fn from_chunks(dialect: Dialect, chunks: &[Value]) -> Option<Tokens> {
    chunks.iter().rev().find_map(|c| from_json(dialect, c))
}

/// The usage in a whole answer as it went over the wire, streamed or not; a
/// truncated stream still yields what it reported.
pub fn from_bytes(dialect: Dialect, streamed: bool, bytes: &[u8]) -> Option<Tokens> {
    if !streamed {
        return serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| from_json(dialect, &v));
    }
    let text = std::str::from_utf8(bytes).ok()?;
    text.lines().rev().find_map(|line| {
        let data = match dialect {
            Dialect::OpenAi => line.strip_prefix("data:")?.trim(),
            Dialect::Ollama => line.trim(),
        };
        serde_json::from_str::<Value>(data)
            .ok()
            .and_then(|v| from_json(dialect, &v))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_both_dialects() {
        let openai = json!({"usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}});
        assert_eq!(
            from_json(Dialect::OpenAi, &openai),
            Some(Tokens {
                prompt: 10,
                cached_prompt: 4,
                completion: 3
            })
        );
        let ollama =
            b"{\"done\":false}\n{\"done\":true,\"prompt_eval_count\":7,\"eval_count\":2}\n";
        assert_eq!(
            from_bytes(Dialect::Ollama, true, ollama),
            Some(Tokens {
                prompt: 7,
                cached_prompt: 0,
                completion: 2
            })
        );
        let sse = b"data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            from_bytes(Dialect::OpenAi, true, sse).map(|t| t.total()),
            Some(6)
        );
        assert_eq!(from_json(Dialect::OpenAi, &json!({"usage": null})), None);
    }
}
