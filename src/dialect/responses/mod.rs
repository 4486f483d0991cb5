//! OpenAI's Responses API (`POST /v1/responses`): the request's `input` items as the
//! canonical conversation and back; `events.rs` reads and writes its answers.
//!
//! `input` decodes into messages, one per unit compression may keep or condense whole:
//!
//! - a message item (`{"role", "content"}`, with or without `"type": "message"`) is a message
//!   of its role, its parts decoded as chat's are;
//! - a `function_call_output` is a tool message answering its `call_id`;
//! - a run of `function_call` items, with the `reasoning` items among and before them, is one
//!   assistant message whose tool calls are the run's calls. Its items are kept as sent under
//!   [`ITEMS`] and written back verbatim, so a call never travels without the reasoning item
//!   it needs, nor parallel calls without each other;
//! - any other item (a lone `reasoning`, an `item_reference`, a built-in tool's call) is a
//!   message of role `Other(type)` holding the item, verbatim, the same way.
//!
//! A string `instructions` is a leading system message (marked with [`INSTRUCTIONS`], written
//! back as the field), so compression counts it and never condenses it, as a chat's system
//! prompt. A string `input` is one user message and encodes back as a one-item list, which the
//! upstream reads the same way. Top-level fields split into shaping and incidental as chat's
//! do; `store`, `previous_response_id` and `conversation` shape the answer (they decide what
//! the upstream remembers and reads), so they are in the cache key.

pub mod events;

use serde_json::{Map, Value, json};

use super::wire::{decode_part, join_fields, peek_bool, split_fields, take_named, take_string};
use crate::chat::{Call, ChatRequest, Content, Message, Role, ToolCall};
use crate::error::ProxyError;

/// Top-level fields that never change the answer.
const INCIDENTAL: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "prompt_cache_key",
    "safety_identifier",
];

/// The field of `Message::extra` holding a unit's items as the client sent them. No item
/// has a field of this name, so it cannot clash with a message's own fields.
pub const ITEMS: &str = "thrifty:items";

/// The field of `Message::extra` marking the system message that holds `instructions`.
pub const INSTRUCTIONS: &str = "thrifty:instructions";

/// Fields naming state the upstream keeps between calls: an answer to a call that has one
/// depends on more than the call itself.
const UPSTREAM_STATE: &[&str] = &["previous_response_id", "conversation"];

pub fn decode(mut object: Map<String, Value>) -> Result<Call, ProxyError> {
    // A call of a stored prompt (`prompt`) may leave the model to the prompt's own.
    let model = match object.get("model") {
        None | Some(Value::Null) if object.get("prompt").is_some_and(Value::is_object) => {
            object.shift_remove("model");
            String::new()
        }
        _ => take_string(&mut object, "model")?,
    };
    let mut messages = Vec::new();
    if let Some(Value::String(_)) = object.get("instructions") {
        if let Some(Value::String(text)) = object.shift_remove("instructions") {
            let mut system = Message::text(Role::System, text);
            system
                .extra
                .insert(INSTRUCTIONS.to_owned(), Value::Bool(true));
            messages.push(system);
        }
    }
    match object.shift_remove("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(Message::text(Role::User, text)),
        Some(Value::Array(items)) => messages.extend(decode_items(items)?),
        Some(_) => {
            return Err(ProxyError::invalid_field(
                "input",
                "a string or an array of input items",
            ));
        }
    }
    let stream = peek_bool(&object, "stream")?.unwrap_or(false);
    let (shaping, incidental) = split_fields(object, INCIDENTAL);
    Ok(Call::Responses(ChatRequest {
        model,
        messages,
        stream,
        shaping,
        incidental,
    }))
}

/// Whether the call continues state the upstream keeps (`previous_response_id`,
/// `conversation`): its input alone does not say what the model reads.
pub fn continues_upstream_state(chat: &ChatRequest) -> bool {
    UPSTREAM_STATE
        .iter()
        .any(|field| chat.shaping.get(*field).is_some_and(|v| !v.is_null()))
}

fn item_type(item: &Value) -> Option<&str> {
    item.get("type").and_then(Value::as_str)
}

fn decode_items(items: Vec<Value>) -> Result<Vec<Message>, ProxyError> {
    let mut messages = Vec::new();
    let mut run: Vec<Value> = Vec::new();
    let mut items = items.into_iter().peekable();
    while let Some(item) = items.next() {
        if !item.is_object() {
            return Err(ProxyError::invalid_field("input[]", "an object"));
        }
        match item_type(&item) {
            Some("function_call") | Some("reasoning") => {
                run.push(item);
                let next = items.peek().and_then(item_type);
                if !matches!(next, Some("function_call") | Some("reasoning")) {
                    messages.extend(close_run(std::mem::take(&mut run))?);
                }
            }
            None | Some("message") => messages.push(decode_message(item)?),
            Some("function_call_output") => messages.push(decode_output(item)?),
            Some(other) => messages.push(opaque(Role::Other(other.to_owned()), vec![item])),
        }
    }
    messages.extend(close_run(run)?);
    Ok(messages)
}

/// A run of reasoning and function-call items: one assistant message when it holds calls;
/// reasoning items with no call after them stand alone, each its own unit.
fn close_run(run: Vec<Value>) -> Result<Vec<Message>, ProxyError> {
    let mut calls = Vec::new();
    for item in run.iter().filter(|i| item_type(i) == Some("function_call")) {
        calls.push(decode_call(item)?);
    }
    if calls.is_empty() {
        return Ok(run
            .into_iter()
            .map(|item| opaque(Role::Other("reasoning".to_owned()), vec![item]))
            .collect());
    }
    let mut message = opaque(Role::Assistant, run);
    message.tool_calls = calls;
    Ok(vec![message])
}

fn opaque(role: Role, items: Vec<Value>) -> Message {
    let mut extra = Map::new();
    extra.insert(ITEMS.to_owned(), Value::Array(items));
    Message {
        role,
        content: Content::Absent,
        tool_calls: Vec::new(),
        tool_call_id: None,
        extra,
    }
}

fn decode_call(item: &Value) -> Result<ToolCall, ProxyError> {
    let text = |field: &str| item.get(field).and_then(Value::as_str);
    let call_id = text("call_id").ok_or_else(|| ProxyError::missing_field("input[].call_id"))?;
    let name = text("name").ok_or_else(|| ProxyError::missing_field("input[].name"))?;
    let arguments = match item.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(ProxyError::invalid_field("input[].arguments", "a string")),
    };
    Ok(ToolCall {
        id: Some(call_id.to_owned()),
        name: name.to_owned(),
        arguments,
    })
}

fn decode_content(content: Option<Value>, field: &'static str) -> Result<Content, ProxyError> {
    match content {
        None | Some(Value::Null) => Ok(Content::Absent),
        Some(Value::String(text)) => Ok(Content::Text(text)),
        Some(Value::Array(parts)) => {
            Ok(Content::Parts(parts.into_iter().map(decode_part).collect()))
        }
        Some(_) => Err(ProxyError::invalid_field(
            field,
            "a string or an array of content parts",
        )),
    }
}

fn into_object(item: Value) -> Map<String, Value> {
    match item {
        Value::Object(object) => object,
        _ => Map::new(),
    }
}

fn decode_message(item: Value) -> Result<Message, ProxyError> {
    let mut extra = into_object(item);
    let role = take_named(&mut extra, "role", "input[].role")?;
    let content = decode_content(extra.shift_remove("content"), "input[].content")?;
    Ok(Message {
        role: Role::parse(&role),
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
        extra,
    })
}

fn decode_output(item: Value) -> Result<Message, ProxyError> {
    let mut extra = into_object(item);
    let call_id = take_named(&mut extra, "call_id", "input[].call_id")?;
    let content = decode_content(extra.shift_remove("output"), "input[].output")?;
    Ok(Message {
        role: Role::Tool,
        content,
        tool_calls: Vec::new(),
        tool_call_id: Some(call_id),
        extra,
    })
}

pub fn encode(chat: &ChatRequest) -> Map<String, Value> {
    let ChatRequest {
        model,
        messages,
        stream: _,
        shaping,
        incidental,
    } = chat;
    let mut head = Vec::new();
    if !model.is_empty() {
        head.push(("model", json!(model)));
    }
    let (instructions, input): (Vec<&Message>, Vec<&Message>) = messages
        .iter()
        .partition(|m| m.extra.contains_key(INSTRUCTIONS));
    if let Some(instructions) = instructions.first() {
        head.push(("instructions", json!(instructions.flat_text())));
    }
    if !input.is_empty() {
        let mut items = Vec::with_capacity(input.len());
        for message in input {
            encode_message(message, &mut items);
        }
        head.push(("input", Value::Array(items)));
    }
    join_fields(head, shaping, incidental)
}

fn encode_content(content: &Content) -> Value {
    match content {
        Content::Absent => Value::Null,
        Content::Text(text) => json!(text),
        Content::Parts(parts) => Value::Array(parts.iter().map(|p| p.raw.clone()).collect()),
    }
}

fn encode_message(message: &Message, items: &mut Vec<Value>) {
    if let Some(Value::Array(verbatim)) = message.extra.get(ITEMS) {
        items.extend(verbatim.iter().cloned());
        return;
    }
    let mut object = Map::new();
    if message.role == Role::Tool {
        if let Some(id) = &message.tool_call_id {
            object.insert("type".to_owned(), json!("function_call_output"));
            object.insert("call_id".to_owned(), json!(id));
            object.insert("output".to_owned(), encode_content(&message.content));
        }
    }
    if object.is_empty() {
        object.insert("role".to_owned(), json!(message.role.as_str()));
        object.insert("content".to_owned(), encode_content(&message.content));
    }
    for (name, value) in &message.extra {
        object.insert(name.clone(), value.clone());
    }
    items.push(Value::Object(object));
}

#[cfg(test)]
mod tests;
