//! Responses API answers: the response object, and its stream of semantic events
//! (`response.created`, `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta`, ..., `response.completed`),
//! each framed as `event: <type>` + `data: <json>` and numbered by `sequence_number`.
//!
//! A stream is whole only when it ends with `response.completed`: one that ends with
//! `response.failed`, `response.incomplete` or an `error` event, or breaks off, is not an
//! answer to record. A stream has no `[DONE]`; its last event carries the whole response,
//! usage included. Replays keep the response's id, which names a response the upstream knows.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::chat::Tokens;

/// The event that ends a complete stream.
const COMPLETED: &str = "response.completed";

fn event_type(event: &Value) -> Option<&str> {
    event.get("type").and_then(Value::as_str)
}

/// Whether a stream's events make a completed response: each names its type, none is an
/// error, a failure or an incomplete end, and the last is `response.completed`.
pub fn is_whole(events: &[Value]) -> bool {
    let typed = events.iter().all(|e| {
        event_type(e)
            .is_some_and(|t| !matches!(t, "error" | "response.failed" | "response.incomplete"))
    });
    typed && events.last().and_then(event_type) == Some(COMPLETED)
}

/// Whether a JSON answer is a completed response.
pub fn is_complete(body: &Value) -> bool {
    body["object"] == "response" && body["status"] == "completed"
}

/// One event as it goes on the wire.
pub fn frame(event: &Value) -> Bytes {
    let name = event_type(event).unwrap_or("message");
    Bytes::from(format!("event: {name}\ndata: {event}\n\n"))
}

/// The response a stream adds up to: the one its `response.completed` event carries.
pub fn assemble(events: &[Value]) -> Value {
    events
        .iter()
        .rev()
        .find(|e| event_type(e) == Some(COMPLETED))
        .map_or(Value::Null, |e| e["response"].clone())
}

/// Whether the events carry the response's usage.
pub fn has_usage(events: &[Value]) -> bool {
    assemble(events)["usage"].is_object()
}

/// The usage a response, or an event carrying one, reports: `input_tokens` (its
/// `input_tokens_details.cached_tokens` billed as cached input) and `output_tokens`
/// (reasoning tokens included).
pub fn usage(value: &Value) -> Option<Tokens> {
    let response = if value["object"] == "response" {
        value
    } else {
        value
            .get("response")
            .filter(|r| r["object"] == "response")?
    };
    let usage = response.get("usage").filter(|u| u.is_object())?;
    Some(Tokens {
        prompt: usage["input_tokens"].as_u64().unwrap_or(0),
        cached_prompt: usage["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
        completion: usage["output_tokens"].as_u64().unwrap_or(0),
    })
}

/// Whether a JSON value is a response or one of its stream's events.
pub fn is_response_value(value: &Value) -> bool {
    value["object"] == "response"
        || event_type(value).is_some_and(|t| t.starts_with("response.") || t == "error")
}

/// Appends the text of a response or of one event (text and refusal deltas, function names
/// and arguments) to `text`, so its tokens can be counted when no usage was reported.
pub fn collect_text(value: &Value, text: &mut String) {
    let mut push = |piece: &Value| {
        if let Some(piece) = piece.as_str() {
            text.push_str(piece);
        }
    };
    if value["object"] == "response" {
        for item in value["output"].as_array().into_iter().flatten() {
            push(&item["name"]);
            push(&item["arguments"]);
            for part in item["content"].as_array().into_iter().flatten() {
                push(&part["text"]);
                push(&part["refusal"]);
            }
        }
        return;
    }
    match event_type(value) {
        Some(
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta",
        ) => push(&value["delta"]),
        Some("response.output_item.added") => push(&value["item"]["name"]),
        _ => {}
    }
}

/// What a response said in a chat message's shape (`content`, and `tool_calls` with their
/// `function` names and arguments), so answers can be compared whatever the endpoint.
pub fn as_message(body: &Value) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for item in body["output"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") => {
                for part in item["content"].as_array().into_iter().flatten() {
                    if let Some(piece) = part["text"].as_str() {
                        text.push_str(piece);
                    }
                }
            }
            Some("function_call") => calls.push(json!({
                "function": {"name": item["name"], "arguments": item["arguments"]}
            })),
            _ => {}
        }
    }
    json!({"content": text, "tool_calls": calls})
}

/// The events that replay a JSON response as a stream: each output item added, its content
/// in one delta, done, and the whole response completed, numbered from 0.
pub fn split(body: &Value) -> Vec<Value> {
    let mut events = Events::default();
    let mut started = body.clone();
    started["status"] = json!("in_progress");
    started["output"] = json!([]);
    started["usage"] = Value::Null;
    for field in ["completed_at", "incomplete_details", "error"] {
        if started.get(field).is_some() {
            started[field] = Value::Null;
        }
    }
    events.push("response.created", json!({"response": started.clone()}));
    events.push("response.in_progress", json!({"response": started}));
    for (index, item) in body["output"].as_array().into_iter().flatten().enumerate() {
        split_item(&mut events, index, item);
    }
    events.push(COMPLETED, json!({"response": body}));
    events.0
}

/// Numbered events.
#[derive(Default)]
struct Events(Vec<Value>);

impl Events {
    fn push(&mut self, kind: &str, mut fields: Value) {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.0.len());
        self.0.push(fields);
    }
}

fn split_item(events: &mut Events, index: usize, item: &Value) {
    let id = item["id"].clone();
    let mut opened = item.clone();
    if opened.get("status").is_some() {
        opened["status"] = json!("in_progress");
    }
    match item["type"].as_str() {
        Some("message") => opened["content"] = json!([]),
        Some("function_call") => opened["arguments"] = json!(""),
        _ => {}
    }
    events.push(
        "response.output_item.added",
        json!({"output_index": index, "item": opened}),
    );
    match item["type"].as_str() {
        Some("message") => {
            for (part_index, part) in item["content"].as_array().into_iter().flatten().enumerate() {
                split_part(events, index, &id, part_index, part);
            }
        }
        Some("function_call") => {
            let arguments = &item["arguments"];
            let at = json!({"item_id": id, "output_index": index});
            let mut delta = at.clone();
            delta["delta"] = arguments.clone();
            events.push("response.function_call_arguments.delta", delta);
            let mut done = at;
            done["arguments"] = arguments.clone();
            events.push("response.function_call_arguments.done", done);
        }
        _ => {}
    }
    events.push(
        "response.output_item.done",
        json!({"output_index": index, "item": item}),
    );
}

fn split_part(events: &mut Events, index: usize, id: &Value, part_index: usize, part: &Value) {
    let at = json!({"item_id": id, "output_index": index, "content_index": part_index});
    let mut empty = part.clone();
    let (delta_kind, done_kind, field) = match part["type"].as_str() {
        Some("output_text") => (
            "response.output_text.delta",
            "response.output_text.done",
            "text",
        ),
        Some("refusal") => ("response.refusal.delta", "response.refusal.done", "refusal"),
        _ => ("", "", ""),
    };
    if !field.is_empty() {
        empty[field] = json!("");
        if empty.get("annotations").is_some() {
            empty["annotations"] = json!([]);
        }
    }
    let mut added = at.clone();
    added["part"] = empty;
    events.push("response.content_part.added", added);
    if !field.is_empty() {
        let mut delta = at.clone();
        delta["delta"] = part[field].clone();
        let mut done = at.clone();
        done[field] = part[field].clone();
        if field == "text" {
            let logprobs = part.get("logprobs").cloned().unwrap_or_else(|| json!([]));
            delta["logprobs"] = logprobs.clone();
            done["logprobs"] = logprobs;
        }
        events.push(delta_kind, delta);
        events.push(done_kind, done);
    }
    let mut done = at;
    done["part"] = part.clone();
    events.push("response.content_part.done", done);
}
