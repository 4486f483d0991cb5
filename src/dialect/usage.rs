//! Token usage as each server reports it: OpenAI's `usage` object (with
//! `prompt_tokens_details.cached_tokens`), Ollama's `prompt_eval_count` and
//! `eval_count`, in JSON answers and in streams; a Responses answer's `input_tokens` and
//! `output_tokens` (`responses::events`).

use serde_json::Value;

use super::responses::events;
use super::stream;
use crate::chat::Dialect;
use crate::chat::Tokens;

/// The usage a JSON answer (or one stream chunk) reports, if any.
pub fn from_json(dialect: Dialect, body: &Value) -> Option<Tokens> {
    match dialect {
        _ if events::is_response_value(body) => events::usage(body),
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

/// The usage among an answer's values (a stream's chunks: OpenAI's usage chunk, Ollama's
/// final chunk): the last that reports it.
pub fn from_chunks(dialect: Dialect, chunks: &[Value]) -> Option<Tokens> {
    chunks.iter().rev().find_map(|c| from_json(dialect, c))
}

/// The usage in a whole answer as it went over the wire, streamed or not; a
/// truncated stream still yields what it reported.
pub fn from_bytes(dialect: Dialect, streamed: bool, bytes: &[u8]) -> Option<Tokens> {
    from_chunks(dialect, &stream::read(dialect, streamed, bytes).values)
}

/// The text an answer holds (content, legacy completion text, tool-call arguments), streamed
/// or not, so its tokens can be counted when the upstream reported none. A truncated
/// stream yields what arrived.
pub fn answer_text(dialect: Dialect, streamed: bool, bytes: &[u8]) -> String {
    text_of(dialect, &stream::read(dialect, streamed, bytes).values)
}

/// The text among an answer's values.
pub fn text_of(dialect: Dialect, values: &[Value]) -> String {
    let mut text = String::new();
    for value in values {
        collect_text(dialect, value, &mut text);
    }
    text
}

fn collect_text(dialect: Dialect, value: &Value, text: &mut String) {
    fn push(text: &mut String, piece: &Value) {
        if let Some(piece) = piece.as_str() {
            text.push_str(piece);
        }
    }
    match dialect {
        _ if events::is_response_value(value) => events::collect_text(value, text),
        Dialect::OpenAi => {
            for choice in value["choices"].as_array().into_iter().flatten() {
                let message = choice.get("message").or_else(|| choice.get("delta"));
                if let Some(message) = message {
                    push(text, &message["content"]);
                    push(text, &message["refusal"]);
                    for call in message["tool_calls"].as_array().into_iter().flatten() {
                        push(text, &call["function"]["name"]);
                        push(text, &call["function"]["arguments"]);
                    }
                }
                push(text, &choice["text"]);
            }
        }
        Dialect::Ollama => {
            push(text, &value["message"]["content"]);
            push(text, &value["message"]["thinking"]);
            for call in value["message"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                push(text, &call["function"]["name"]);
                if let Some(arguments) = call["function"].get("arguments") {
                    text.push_str(&arguments.to_string());
                }
            }
            push(text, &value["response"]);
        }
    }
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

    #[test]
    fn answer_text_reads_json_and_streams_in_both_dialects() {
        let json_answer = br#"{"choices":[{"message":{"content":"Hello there"}}]}"#;
        assert_eq!(
            answer_text(Dialect::OpenAi, false, json_answer),
            "Hello there"
        );
        let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(answer_text(Dialect::OpenAi, true, sse), "Hello");
        let ndjson = b"{\"message\":{\"content\":\"Hi\"},\"done\":false}\n{\"message\":{\"content\":\"!\"},\"done\":true}\n";
        assert_eq!(answer_text(Dialect::Ollama, true, ndjson), "Hi!");
        assert_eq!(
            answer_text(Dialect::Ollama, false, br#"{"response":"text"}"#),
            "text"
        );
    }
}
