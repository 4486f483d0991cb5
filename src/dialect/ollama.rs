//! The native Ollama wire format: `/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`.
//!
//! Ollama streams by default: a request without `stream` is a streaming request.

use serde_json::{Map, Value, json};

use super::embedding;
use super::wire::{self, Encoding, parse_message_fields, peek_bool, split_fields, take_string};
use crate::chat::{
    Call, ChatRequest, CompletionRequest, Content, EmbeddingInput, EmbeddingRequest, Endpoint,
    Message, Part, PartKind, Role, ToolCall,
};
use crate::error::ProxyError;

/// Top-level fields that never change the answer.
const INCIDENTAL: &[&str] = &["stream", "keep_alive"];

pub fn endpoint_for(rest: &str) -> Option<Endpoint> {
    match rest {
        "/chat" => Some(Endpoint::Chat),
        "/generate" => Some(Endpoint::Completion),
        "/embed" => Some(Endpoint::Embedding),
        "/embeddings" => Some(Endpoint::LegacyEmbedding),
        _ => None,
    }
}

pub fn decode(endpoint: Endpoint, mut object: Map<String, Value>) -> Result<Call, ProxyError> {
    let model = take_string(&mut object, "model")?;
    let stream = peek_bool(&object, "stream")?.unwrap_or(true);
    match endpoint {
        Endpoint::Chat => {
            let messages = match object.shift_remove("messages") {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(decode_message)
                    .collect::<Result<Vec<_>, _>>()?,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(ProxyError::invalid_field("messages", "an array")),
            };
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
            let prompt = match object.shift_remove("prompt") {
                Some(Value::String(p)) => Value::String(p),
                None | Some(Value::Null) => Value::Null,
                Some(_) => return Err(ProxyError::invalid_field("prompt", "a string")),
            };
            let (shaping, incidental) = split_fields(object, INCIDENTAL);
            Ok(Call::Completion(CompletionRequest {
                model,
                prompt,
                stream,
                shaping,
                incidental,
            }))
        }
        Endpoint::Embedding => {
            let input = match object.shift_remove("input") {
                Some(Value::String(text)) => EmbeddingInput::Texts {
                    texts: vec![text],
                    single: true,
                },
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                    EmbeddingInput::Texts {
                        texts: items
                            .into_iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                        single: false,
                    }
                }
                Some(_) => {
                    return Err(ProxyError::invalid_field(
                        "input",
                        "a string or an array of strings",
                    ));
                }
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
        Endpoint::LegacyEmbedding => {
            let prompt = take_string(&mut object, "prompt")?;
            let (shaping, incidental) = split_fields(object, INCIDENTAL);
            Ok(Call::Embedding(EmbeddingRequest {
                model,
                input: EmbeddingInput::Texts {
                    texts: vec![prompt],
                    single: true,
                },
                legacy: true,
                shaping,
                incidental,
            }))
        }
        Endpoint::Responses => Err(ProxyError::bad_request(
            "the Responses API is served under /v1/responses",
        )),
    }
}

fn decode_message(value: Value) -> Result<Message, ProxyError> {
    let (role, content, mut extra) = parse_message_fields(value)?;
    let text = match content {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(_) => {
            return Err(ProxyError::invalid_field("messages[].content", "a string"));
        }
    };
    let images = match extra.shift_remove("images") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(images)) => images,
        Some(_) => return Err(ProxyError::invalid_field("messages[].images", "an array")),
    };
    let content = if images.is_empty() {
        text.map_or(Content::Absent, Content::Text)
    } else {
        let mut parts = vec![Part {
            kind: PartKind::Text(text.clone().unwrap_or_default()),
            raw: json!(text.unwrap_or_default()),
        }];
        parts.extend(images.into_iter().map(|raw| Part {
            kind: PartKind::Image,
            raw,
        }));
        Content::Parts(parts)
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
    Ok(Message {
        role: Role::parse(&role),
        content,
        tool_calls,
        tool_call_id: None,
        extra,
    })
}

fn decode_tool_call(raw: Value) -> Result<ToolCall, ProxyError> {
    let function = raw.get("function");
    let name = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| ProxyError::missing_field("messages[].tool_calls[].function.name"))?;
    let arguments = function
        .and_then(|f| f.get("arguments"))
        .map(Value::to_string)
        .unwrap_or_default();
    Ok(ToolCall {
        id: raw.get("id").and_then(Value::as_str).map(str::to_owned),
        name: name.to_owned(),
        arguments,
    })
}

/// How this dialect writes the parts of a call that differ from OpenAI's; the Responses API
/// has one wire format, OpenAI's, whoever serves it.
pub const ENCODING: Encoding = Encoding {
    message: encode_message,
    embedding_input,
    responses: super::responses::encode,
};

pub fn encode(call: &Call) -> Map<String, Value> {
    wire::encode(call, &ENCODING)
}

/// The legacy `/api/embeddings` takes one `prompt`; `/api/embed` an `input`.
fn embedding_input(request: &EmbeddingRequest) -> (&'static str, Value) {
    match &request.input {
        EmbeddingInput::Texts { texts, .. } if request.legacy => {
            ("prompt", json!(texts.first().cloned().unwrap_or_default()))
        }
        input => ("input", embedding::input(input)),
    }
}

fn encode_message(message: &Message) -> Value {
    let mut object = Map::new();
    object.insert("role".to_owned(), json!(message.role.as_str()));
    let mut images = Vec::new();
    match &message.content {
        Content::Absent => {}
        Content::Text(text) => {
            object.insert("content".to_owned(), json!(text));
        }
        Content::Parts(parts) => {
            let mut text = String::new();
            for part in parts {
                match &part.kind {
                    PartKind::Text(t) => text.push_str(t),
                    PartKind::Image => images.push(part.raw.clone()),
                    other => text.push_str(&other.placeholder()),
                }
            }
            object.insert("content".to_owned(), json!(text));
        }
    }
    if !images.is_empty() {
        object.insert("images".to_owned(), Value::Array(images));
    }
    if !message.tool_calls.is_empty() {
        let calls = message
            .tool_calls
            .iter()
            .map(|call| {
                let arguments = serde_json::from_str::<Value>(&call.arguments)
                    .unwrap_or_else(|_| json!(call.arguments));
                let mut function = json!({"name": call.name, "arguments": arguments});
                if let Some(id) = &call.id {
                    function = json!({"id": id, "function": function});
                } else {
                    function = json!({"function": function});
                }
                function
            })
            .collect();
        object.insert("tool_calls".to_owned(), Value::Array(calls));
    }
    for (name, value) in &message.extra {
        object.insert(name.clone(), value.clone());
    }
    Value::Object(object)
}

pub fn error_body(error: &ProxyError) -> Value {
    json!({ "error": error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(o) => o,
            _ => panic!("fixture must be an object"),
        }
    }

    #[test]
    fn chat_round_trip_keeps_images_and_tool_calls() {
        let body = json!({
            "model": "llama3.2",
            "messages": [
                {"role": "user", "content": "what is in this picture?", "images": ["iVBORw0KGgo="]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ]},
                {"role": "tool", "content": "sunny", "tool_name": "get_weather"}
            ],
            "options": {"temperature": 0},
            "keep_alive": "5m"
        });
        let call = decode(Endpoint::Chat, object(body.clone())).expect("decodes");
        let Call::Chat(chat) = &call else {
            panic!("expected chat")
        };
        assert!(chat.stream, "ollama streams unless told otherwise");
        assert_eq!(
            chat.messages[0].flat_text(),
            "what is in this picture? [image]"
        );
        assert_eq!(Value::Object(encode(&call)), body);
    }

    #[test]
    fn generate_and_embed_round_trip() {
        for (endpoint, body) in [
            (
                Endpoint::Completion,
                json!({"model": "m", "prompt": "hi", "stream": false, "system": "s"}),
            ),
            (
                Endpoint::Embedding,
                json!({"model": "m", "input": ["a", "b"]}),
            ),
            (Endpoint::Embedding, json!({"model": "m", "input": "a"})),
            (
                Endpoint::LegacyEmbedding,
                json!({"model": "m", "prompt": "a"}),
            ),
        ] {
            let call = decode(endpoint, object(body.clone())).expect("decodes");
            assert_eq!(Value::Object(encode(&call)), body);
        }
    }

    #[test]
    fn missing_model_is_a_bad_request() {
        let err = decode(Endpoint::Chat, object(json!({"messages": []}))).expect_err("rejects");
        assert_eq!(
            error_body(&err),
            json!({"error": "missing required parameter: 'model'"})
        );
    }
}
