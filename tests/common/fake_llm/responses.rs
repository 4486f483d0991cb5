//! The fake's `POST /v1/responses`: OpenAI's Responses API, as a JSON response object or as
//! its stream of semantic events (`event: <type>` + `data: <json>`, numbered by
//! `sequence_number`, no `[DONE]`), ending with `response.completed`.
//!
//! - The answer is `"Echo: " + the last user text` of `input` (a string, or the last user
//!   message item's text). With a `function` tool and "weather" in that text, it is a
//!   `function_call` of the first function tool with [`TOOL_ARGUMENTS`].
//! - With `reasoning` in the request, the output starts with a `reasoning` item and
//!   [`REASONING_TOKENS`] reasoning tokens are billed in `output_tokens`.
//! - `input_tokens` are the words of `instructions` and of every input item's text (message
//!   content, a call's name and arguments, a call output) plus 3 per item; with
//!   `prompt_cache_key`, half of them (rounded down) are `cached_tokens`. `output_tokens`
//!   are the answer's words (a tool call's: its name's and its arguments').
//! - `previous_response_id` must name a response id this fake gave, else the answer is
//!   OpenAI's 400 `previous_response_not_found`.
//! - The model `response-failed` streams `response.created`, `response.in_progress` and then
//!   `response.failed` (as JSON: a 200 response whose `status` is `failed`); `reset-*` and
//!   `slow-stream` pace and break off as they do on the other endpoints.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{
    Body, Dialect, Failure, SSE, State, TOOL_ARGUMENTS, model_of, pieces, slow_text,
    streaming_response, unix_now, words,
};

/// The reasoning tokens billed for a request with `reasoning`.
pub const REASONING_TOKENS: usize = 2;

/// The prefix of every response id the fake gives.
const RESPONSE_PREFIX: &str = "resp_";

/// Text of an item's content: a string, or its text parts joined by spaces.
fn item_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn items(request: &Value) -> Vec<Value> {
    match &request["input"] {
        Value::String(text) => vec![json!({"role": "user", "content": text})],
        Value::Array(items) => items.clone(),
        _ => Vec::new(),
    }
}

/// Input tokens by the rule in the module's documentation.
pub fn input_tokens(request: &Value) -> usize {
    let instructions = request["instructions"].as_str().map_or(0, words);
    instructions
        + items(request)
            .iter()
            .map(|item| {
                let text = match item["type"].as_str() {
                    Some("function_call") => format!(
                        "{} {}",
                        item["name"].as_str().unwrap_or_default(),
                        item["arguments"].as_str().unwrap_or_default()
                    ),
                    Some("function_call_output") => item_text(&item["output"]),
                    _ => item_text(&item["content"]),
                };
                words(&text) + 3
            })
            .sum::<usize>()
}

enum Output {
    Text(String),
    Call { name: String },
}

fn output_for(request: &Value) -> Output {
    if model_of(request) == "slow-stream" {
        return Output::Text(slow_text());
    }
    let question = items(request)
        .iter()
        .rev()
        .find(|item| item["role"] == "user")
        .map(|item| item_text(&item["content"]))
        .unwrap_or_default();
    let tool = request["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|tool| tool["type"] == "function")
        .and_then(|tool| tool["name"].as_str());
    match tool {
        Some(name) if question.to_lowercase().contains("weather") => Output::Call {
            name: name.to_owned(),
        },
        _ => Output::Text(format!("Echo: {question}")),
    }
}

/// Whether `id` is a response id this fake gave.
fn known(state: &State, id: &str) -> bool {
    id.strip_prefix(RESPONSE_PREFIX)
        .and_then(|rest| rest.strip_prefix("fake"))
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n < state.next_id.load(std::sync::atomic::Ordering::SeqCst))
}

pub(super) fn answer(state: &Arc<State>, request: &Value) -> Response<Body> {
    let model = model_of(request);
    if let Some(previous) = request["previous_response_id"].as_str() {
        if !known(state, previous) {
            return Dialect::OpenAi.error(&Failure::previous_response_not_found());
        }
    }
    let output = output_for(request);
    let reasoning = request.get("reasoning").is_some_and(|r| !r.is_null());
    let input = input_tokens(request);
    let cached = if request.get("prompt_cache_key").is_some() {
        input / 2
    } else {
        0
    };
    let answered = match &output {
        Output::Text(text) => words(text),
        Output::Call { name } => words(name) + words(TOOL_ARGUMENTS),
    };
    let thought = if reasoning { REASONING_TOKENS } else { 0 };
    let usage = json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": answered + thought,
        "output_tokens_details": {"reasoning_tokens": thought},
        "total_tokens": input + answered + thought,
    });
    let mut items = Vec::new();
    if reasoning {
        items.push(json!({"id": state.id("rs_"), "type": "reasoning", "summary": []}));
    }
    items.push(match &output {
        Output::Text(text) => json!({
            "id": state.id("msg_"),
            "type": "message",
            "status": "completed",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
            "role": "assistant",
        }),
        Output::Call { name } => json!({
            "id": state.id("fc_"),
            "type": "function_call",
            "status": "completed",
            "arguments": TOOL_ARGUMENTS,
            "call_id": state.id("call_"),
            "name": name,
        }),
    });
    let failed = model == "response-failed";
    let mut response = object(state, request);
    response["status"] = json!(if failed { "failed" } else { "completed" });
    if failed {
        response["error"] =
            json!({"code": "server_error", "message": "The model failed to answer."});
    } else {
        response["output"] = Value::Array(items.clone());
        response["completed_at"] = json!(unix_now());
    }
    response["usage"] = if failed { Value::Null } else { usage };
    if request["stream"].as_bool() != Some(true) {
        return Dialect::OpenAi.json(StatusCode::OK, &response);
    }
    let mut events = Events::default();
    let mut started = response.clone();
    started["status"] = json!("in_progress");
    started["output"] = json!([]);
    started["usage"] = Value::Null;
    started["error"] = Value::Null;
    started["completed_at"] = Value::Null;
    events.push("response.created", json!({"response": started.clone()}));
    events.push("response.in_progress", json!({"response": started}));
    if failed {
        events.push("response.failed", json!({"response": response}));
    } else {
        for (index, item) in items.iter().enumerate() {
            stream_item(&mut events, index, item);
        }
        events.push("response.completed", json!({"response": response}));
    }
    let frames = events
        .0
        .iter()
        .map(|event| {
            let kind = event["type"].as_str().unwrap_or_default();
            bytes::Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
        })
        .collect();
    streaming_response(state, SSE, frames, state.pacing(model))
}

/// The response object before its output, echoing the request's settings as OpenAI does.
fn object(state: &State, request: &Value) -> Value {
    let echo = |field: &str, default: Value| {
        request
            .get(field)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    };
    json!({
        "id": state.id(RESPONSE_PREFIX),
        "object": "response",
        "created_at": unix_now(),
        "status": "in_progress",
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": echo("instructions", Value::Null),
        "max_output_tokens": echo("max_output_tokens", Value::Null),
        "model": model_of(request),
        "output": [],
        "parallel_tool_calls": true,
        "previous_response_id": echo("previous_response_id", Value::Null),
        "reasoning": echo("reasoning", json!({"effort": null, "summary": null})),
        "service_tier": "default",
        "store": echo("store", json!(true)),
        "temperature": echo("temperature", json!(1.0)),
        "text": echo("text", json!({"format": {"type": "text"}})),
        "tool_choice": echo("tool_choice", json!("auto")),
        "tools": echo("tools", json!([])),
        "top_p": echo("top_p", json!(1.0)),
        "truncation": "disabled",
        "usage": null,
        "user": null,
        "metadata": echo("metadata", json!({})),
    })
}

/// Events numbered as they are pushed.
#[derive(Default)]
struct Events(Vec<Value>);

impl Events {
    fn push(&mut self, kind: &str, mut event: Value) {
        event["type"] = json!(kind);
        event["sequence_number"] = json!(self.0.len());
        self.0.push(event);
    }
}

fn stream_item(events: &mut Events, index: usize, item: &Value) {
    let id = item["id"].clone();
    let mut opened = item.clone();
    opened["status"] = json!("in_progress");
    match item["type"].as_str() {
        Some("message") => opened["content"] = json!([]),
        Some("function_call") => opened["arguments"] = json!(""),
        _ => {}
    }
    if item["type"] == "reasoning" {
        opened = item.clone();
    }
    events.push(
        "response.output_item.added",
        json!({"output_index": index, "item": opened}),
    );
    match item["type"].as_str() {
        Some("message") => {
            let text = item["content"][0]["text"].as_str().unwrap_or_default();
            let at = json!({"item_id": id, "output_index": index, "content_index": 0});
            let mut added = at.clone();
            added["part"] =
                json!({"type": "output_text", "annotations": [], "logprobs": [], "text": ""});
            events.push("response.content_part.added", added);
            for piece in pieces(text) {
                let mut delta = at.clone();
                delta["delta"] = json!(piece);
                delta["logprobs"] = json!([]);
                events.push("response.output_text.delta", delta);
            }
            let mut done = at.clone();
            done["text"] = json!(text);
            done["logprobs"] = json!([]);
            events.push("response.output_text.done", done);
            let mut part_done = at;
            part_done["part"] = item["content"][0].clone();
            events.push("response.content_part.done", part_done);
        }
        Some("function_call") => {
            let (head, tail) = TOOL_ARGUMENTS.split_at(TOOL_ARGUMENTS.len() / 2);
            for piece in [head, tail] {
                events.push(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": piece}),
                );
            }
            events.push(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "arguments": TOOL_ARGUMENTS}),
            );
        }
        _ => {}
    }
    events.push(
        "response.output_item.done",
        json!({"output_index": index, "item": item}),
    );
}
