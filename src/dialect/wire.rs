//! Small helpers shared by both adapters for pulling typed fields out of a JSON object.

use serde_json::{Map, Value};

use serde_json::json;

use crate::chat::{
    Call, ChatRequest, CompletionRequest, EmbeddingRequest, Message, Part, PartKind,
};
use crate::error::ProxyError;

pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ProxyError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ProxyError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ProxyError::bad_request(format!(
            "we could not parse the JSON body of your request: {e}"
        ))),
    }
}

/// Removes a required string field.
pub fn take_string(
    object: &mut Map<String, Value>,
    field: &'static str,
) -> Result<String, ProxyError> {
    take_named(object, field, field)
}

/// Removes a required string field, named `param` in the error (`input[].role`).
pub fn take_named(
    object: &mut Map<String, Value>,
    field: &str,
    param: &'static str,
) -> Result<String, ProxyError> {
    match object.shift_remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ProxyError::invalid_field(param, "a string")),
        None => Err(ProxyError::missing_field(param)),
    }
}

/// Reads an optional boolean field without removing it.
pub fn peek_bool(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<bool>, ProxyError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ProxyError::invalid_field(field, "a boolean")),
    }
}

/// Splits the remaining top-level fields into those that can change the answer and those that cannot.
pub fn split_fields(
    object: Map<String, Value>,
    incidental_names: &[&str],
) -> (Map<String, Value>, Map<String, Value>) {
    let mut shaping = Map::new();
    let mut incidental = Map::new();
    for (name, value) in object {
        if incidental_names.contains(&name.as_str()) {
            incidental.insert(name, value);
        } else {
            shaping.insert(name, value);
        }
    }
    (shaping, incidental)
}

/// Joins model, body fields and the two field maps back into one object.
pub fn join_fields(
    head: impl IntoIterator<Item = (&'static str, Value)>,
    shaping: &Map<String, Value>,
    incidental: &Map<String, Value>,
) -> Map<String, Value> {
    let mut object = Map::new();
    for (name, value) in head {
        object.insert(name.to_owned(), value);
    }
    for (name, value) in shaping.iter().chain(incidental) {
        object.insert(name.clone(), value.clone());
    }
    object
}

/// A message object split into its role, its content and the remaining fields.
pub type MessageFields = (String, Option<Value>, Map<String, Value>);

/// Splits a message object into its role, its content and the remaining fields.
pub fn parse_message_fields(value: Value) -> Result<MessageFields, ProxyError> {
    let Value::Object(mut object) = value else {
        return Err(ProxyError::invalid_field("messages[]", "an object"));
    };
    let role = match object.shift_remove("role") {
        Some(Value::String(role)) => role,
        Some(_) => return Err(ProxyError::invalid_field("messages[].role", "a string")),
        None => return Err(ProxyError::missing_field("messages[].role")),
    };
    let content = object.shift_remove("content");
    Ok((role, content, object))
}

/// What a dialect writes its own way when it encodes a call; the rest (the model first, then
/// the shaping fields, then the fields thrifty does not read) is the same in every dialect.
pub struct Encoding {
    pub message: fn(&Message) -> Value,
    /// The embedding input's field name and value.
    pub embedding_input: fn(&EmbeddingRequest) -> (&'static str, Value),
    pub responses: fn(&ChatRequest) -> Map<String, Value>,
}

/// A call as a dialect's wire JSON object.
pub fn encode(call: &Call, encoding: &Encoding) -> Map<String, Value> {
    match call {
        Call::Responses(chat) => (encoding.responses)(chat),
        Call::Chat(ChatRequest {
            model,
            messages,
            stream: _,
            shaping,
            incidental,
        }) => {
            let messages = messages.iter().map(encoding.message).collect();
            join_fields(
                [
                    ("model", json!(model)),
                    ("messages", Value::Array(messages)),
                ],
                shaping,
                incidental,
            )
        }
        Call::Completion(CompletionRequest {
            model,
            prompt,
            stream: _,
            shaping,
            incidental,
        }) => {
            let mut head = vec![("model", json!(model))];
            if !prompt.is_null() {
                head.push(("prompt", prompt.clone()));
            }
            join_fields(head, shaping, incidental)
        }
        Call::Embedding(request) => {
            let (field, input) = (encoding.embedding_input)(request);
            join_fields(
                [("model", json!(request.model)), (field, input)],
                &request.shaping,
                &request.incidental,
            )
        }
    }
}

/// A content part as OpenAI's Chat Completions and Responses APIs both write them.
pub(super) fn decode_part(raw: Value) -> Part {
    let kind = match raw.get("type").and_then(Value::as_str) {
        Some("text") | Some("input_text") | Some("output_text") => {
            PartKind::Text(raw["text"].as_str().unwrap_or_default().to_owned())
        }
        Some("image_url") | Some("input_image") => PartKind::Image,
        Some("input_audio") => PartKind::Audio,
        Some("file") | Some("input_file") => PartKind::File(
            raw.pointer("/file/filename")
                .or_else(|| raw.get("filename"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        Some(other) => PartKind::Other(other.to_owned()),
        None => PartKind::Other("part".to_owned()),
    };
    Part { kind, raw }
}
