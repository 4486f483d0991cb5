//! The OpenAI wire format: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`;
//! `/v1/responses` has a room of its own (`responses/`).

use serde_json::{Map, Value, json};

use super::embedding;
use super::wire::{
    self, Encoding, decode_part, parse_message_fields, peek_bool, split_fields, take_string,
};
use crate::chat::{
    Call, ChatRequest, CompletionRequest, Content, EmbeddingInput, EmbeddingRequest, Endpoint,
    Message, Role, ToolCall,
};
use crate::error::ProxyError;

/// Top-level fields that never change the answer.
const INCIDENTAL: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "prompt_cache_key",
    "safety_identifier",
];

pub fn endpoint_for(rest: &str) -> Option<Endpoint> {
    match rest {
        "/chat/completions" => Some(Endpoint::Chat),
        "/completions" => Some(Endpoint::Completion),
        "/embeddings" => Some(Endpoint::Embedding),
        "/responses" => Some(Endpoint::Responses),
        _ => None,
    }
}

pub fn decode(endpoint: Endpoint, mut object: Map<String, Value>) -> Result<Call, ProxyError> {
    if endpoint == Endpoint::Responses {
        return super::responses::decode(object);
    }
    let model = take_string(&mut object, "model")?;
    match endpoint {
        Endpoint::Chat => {
            let messages = match object.shift_remove("messages") {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(decode_message)
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => return Err(ProxyError::invalid_field("messages", "an array")),
                None => return Err(ProxyError::missing_field("messages")),
            };
            let stream = peek_bool(&object, "stream")?.unwrap_or(false);
            let (shaping, incidental) = split_fields(object, INCIDENTAL);
            Ok(Call::Chat(ChatRequest {
                model,
                messages,
                stream,
                shaping,
                incidental,
            }))
        }
        Endpoint::Completion => {
            let prompt = object.shift_remove("prompt").unwrap_or(Value::Null);
            let stream = peek_bool(&object, "stream")?.unwrap_or(false);
            let (shaping, incidental) = split_fields(object, INCIDENTAL);
            Ok(Call::Completion(CompletionRequest {
                model,
                prompt,
                stream,
                shaping,
                incidental,
            }))
        }
        // Responses calls were decoded above.
        Endpoint::Responses | Endpoint::Embedding | Endpoint::LegacyEmbedding => {
            let input = match object.shift_remove("input") {
                Some(input) => decode_embedding_input(input)?,
                None => return Err(ProxyError::missing_field("input")),
            };
            let (shaping, incidental) = split_fields(object, INCIDENTAL);
            Ok(Call::Embedding(EmbeddingRequest {
                model,
                input,
                legacy: false,
                shaping,
                incidental,
            }))
        }
    }
}

fn decode_embedding_input(input: Value) -> Result<EmbeddingInput, ProxyError> {
    match input {
        Value::String(text) => Ok(EmbeddingInput::Texts {
            texts: vec![text],
            single: true,
        }),
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(EmbeddingInput::Texts {
            texts: items
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            single: false,
        }),
        Value::Array(items) if items.iter().all(Value::is_u64) => Ok(EmbeddingInput::Tokens {
            ids: vec![items.iter().filter_map(Value::as_u64).collect()],
            single: true,
        }),
        Value::Array(items)
            if items
                .iter()
                .all(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_u64))) =>
        {
            Ok(EmbeddingInput::Tokens {
                ids: items
                    .iter()
                    .filter_map(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .collect(),
                single: false,
            })
        }
        _ => Err(ProxyError::invalid_field(
            "input",
            "a string, an array of strings, or token arrays",
        )),
    }
}

fn decode_message(value: Value) -> Result<Message, ProxyError> {
    let (role, content, mut extra) = parse_message_fields(value)?;
    let content = match content {
        None | Some(Value::Null) => Content::Absent,
        Some(Value::String(text)) => Content::Text(text),
        Some(Value::Array(parts)) => Content::Parts(parts.into_iter().map(decode_part).collect()),
        Some(_) => {
            return Err(ProxyError::invalid_field(
                "messages[].content",
                "a string or an array of content parts",
            ));
        }
    };
    let tool_calls = match extra.shift_remove("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .into_iter()
            .map(decode_tool_call)
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ProxyError::invalid_field(
                "messages[].tool_calls",
                "an array",
            ));
        }
    };
    let tool_call_id = match extra.shift_remove("tool_call_id") {
        Some(Value::String(id)) => Some(id),
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(ProxyError::invalid_field(
                "messages[].tool_call_id",
                "a string",
            ));
        }
    };
    Ok(Message {
        role: Role::parse(&role),
        content,
        tool_calls,
        tool_call_id,
        extra,
    })
}

fn decode_tool_call(raw: Value) -> Result<ToolCall, ProxyError> {
    let function = raw.get("function");
    let name = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| ProxyError::missing_field("messages[].tool_calls[].function.name"))?;
    let arguments = match function.and_then(|f| f.get("arguments")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Ok(ToolCall {
        id: raw.get("id").and_then(Value::as_str).map(str::to_owned),
        name: name.to_owned(),
        arguments,
    })
}

/// How this dialect writes the parts of a call that differ from Ollama's.
pub const ENCODING: Encoding = Encoding {
    message: encode_message,
    embedding_input,
    responses: super::responses::encode,
};

pub fn encode(call: &Call) -> Map<String, Value> {
    wire::encode(call, &ENCODING)
}

fn embedding_input(request: &EmbeddingRequest) -> (&'static str, Value) {
    ("input", embedding::input(&request.input))
}

fn encode_message(message: &Message) -> Value {
    let mut object = Map::new();
    object.insert("role".to_owned(), json!(message.role.as_str()));
    match &message.content {
        Content::Absent => {
            if !message.tool_calls.is_empty() || message.role == Role::Assistant {
                object.insert("content".to_owned(), Value::Null);
            }
        }
        Content::Text(text) => {
            object.insert("content".to_owned(), json!(text));
        }
        Content::Parts(parts) => {
            object.insert(
                "content".to_owned(),
                Value::Array(parts.iter().map(|p| p.raw.clone()).collect()),
            );
        }
    }
    if !message.tool_calls.is_empty() {
        let calls = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            })
            .collect();
        object.insert("tool_calls".to_owned(), Value::Array(calls));
    }
    if let Some(id) = &message.tool_call_id {
        object.insert("tool_call_id".to_owned(), json!(id));
    }
    for (name, value) in &message.extra {
        object.insert(name.clone(), value.clone());
    }
    Value::Object(object)
}

pub fn error_body(error: &ProxyError) -> Value {
    json!({
        "error": {
            "message": error.to_string(),
            "type": error.kind(),
            "param": error.param(),
            "code": error.code(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: Value) -> Value {
        let Value::Object(object) = body else {
            panic!("fixture must be an object")
        };
        let call = decode(Endpoint::Chat, object).expect("decodes");
        Value::Object(encode(&call))
    }

    #[test]
    fn chat_round_trip_keeps_every_field() {
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "user", "content": "thanks", "name": "ann"}
            ],
            "temperature": 0.2,
            "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {}}}]
        });
        assert_eq!(round_trip(body.clone()), body);
    }

    #[test]
    fn chat_fields_are_split_by_whether_they_shape_the_answer() {
        let Value::Object(object) = json!({
            "model": "m", "messages": [], "temperature": 1, "user": "u",
            "stream": true, "brand_new_param": 3
        }) else {
            unreachable!()
        };
        let Call::Chat(chat) = decode(Endpoint::Chat, object).expect("decodes") else {
            panic!("expected chat")
        };
        assert!(chat.stream);
        assert_eq!(
            chat.shaping.keys().collect::<Vec<_>>(),
            ["temperature", "brand_new_param"]
        );
        assert_eq!(
            chat.incidental.keys().collect::<Vec<_>>(),
            ["user", "stream"]
        );
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let Value::Object(no_messages) = json!({"model": "m"}) else {
            unreachable!()
        };
        let err = decode(Endpoint::Chat, no_messages).expect_err("rejects");
        assert_eq!(err.param(), Some("messages"));
        let Value::Object(bad_model) = json!({"model": 3, "messages": []}) else {
            unreachable!()
        };
        let err = decode(Endpoint::Chat, bad_model).expect_err("rejects");
        assert_eq!(err.param(), Some("model"));
    }

    #[test]
    fn embedding_inputs_are_classified() {
        let cases = [
            (json!("a"), true),
            (json!(["a", "b"]), false),
            (json!([1, 2, 3]), false),
            (json!([[1, 2], [3]]), false),
        ];
        for (input, single) in cases {
            let Value::Object(object) = json!({"model": "e", "input": input.clone()}) else {
                unreachable!()
            };
            let call = decode(Endpoint::Embedding, object).expect("decodes");
            let Call::Embedding(e) = &call else {
                panic!("expected embedding")
            };
            if let EmbeddingInput::Texts { single: s, .. } = &e.input {
                assert_eq!(*s, single);
            }
            assert_eq!(encode(&call)["input"], input);
        }
    }

    #[test]
    fn error_body_has_openai_shape() {
        let body = error_body(&ProxyError::missing_field("model"));
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(body["error"]["code"], Value::Null);
    }
}
