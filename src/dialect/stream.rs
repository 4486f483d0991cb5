//! Recorded answers: parsing SSE and NDJSON streams into chunks, turning a
//! stream into the JSON answer it adds up to and back, and framing chunks for
//! replay, so a cached answer can be served in whichever mode the client asks.
//! Responses API answers have their own events, read and written by `responses::events`.

use std::ops::Range;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::responses::events;
use crate::chat::{Dialect, Endpoint};

/// The JSON values an answer is made of, read once and leniently: the body, or each event
/// of a stream (SSE `data:` lines, NDJSON lines). What does not parse is skipped and noted,
/// so a truncated stream still yields what arrived.
#[derive(Debug, Default)]
pub struct Values {
    pub values: Vec<Value>,
    /// Every piece that should be JSON was.
    pub all_parsed: bool,
    /// An SSE stream's `[DONE]` marker arrived.
    pub done_marker: bool,
    /// Where in the bytes each value lies, without the whitespace around it: one span per
    /// value, in order.
    pub spans: Vec<Range<usize>>,
}

/// Reads an answer's values; see [`Values`].
pub fn read(dialect: Dialect, streamed: bool, body: &[u8]) -> Values {
    let Ok(text) = std::str::from_utf8(body) else {
        return Values::default();
    };
    let mut read = Values {
        all_parsed: true,
        ..Values::default()
    };
    // `start..end` of `text`, without the whitespace around it.
    let take = |start: usize, end: usize, read: &mut Values| {
        let piece = &text[start..end];
        let start = start + (piece.len() - piece.trim_start().len());
        let piece = piece.trim();
        match serde_json::from_str(piece) {
            Ok(value) => {
                read.values.push(value);
                read.spans.push(start..start + piece.len());
            }
            Err(_) => read.all_parsed = false,
        }
    };
    if !streamed {
        take(0, text.len(), &mut read);
        return read;
    }
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let (at, end) = (start, start + line.len());
        start = end;
        match dialect {
            Dialect::OpenAi => {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                match data.trim() {
                    "[DONE]" => read.done_marker = true,
                    _ => take(at + "data:".len(), end, &mut read),
                }
            }
            Dialect::Ollama if line.trim().is_empty() => {}
            Dialect::Ollama => take(at, end, &mut read),
        }
    }
    read
}

/// Whether a stream's values make a complete success: every event parsed, and it ended
/// cleanly (`[DONE]` with a finish reason, `done: true`, or for the Responses API
/// `response.completed`) with no error event.
pub fn is_whole_stream(dialect: Dialect, endpoint: Endpoint, read: &Values) -> bool {
    if !read.all_parsed {
        return false;
    }
    let chunks = &read.values;
    if endpoint == Endpoint::Responses {
        return events::is_whole(chunks);
    }
    match dialect {
        Dialect::OpenAi => {
            let finished = chunks.iter().any(|c| {
                c["choices"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|ch| !ch["finish_reason"].is_null()))
            });
            read.done_marker && finished && chunks.iter().all(|c| c.get("error").is_none())
        }
        Dialect::Ollama => chunks
            .last()
            .is_some_and(|last| last["done"] == json!(true) && last.get("error").is_none()),
    }
}

/// Splits a complete streamed body into its chunk objects; `None` unless
/// [`is_whole_stream`].
#[cfg(test)]
pub fn parse(dialect: Dialect, endpoint: Endpoint, body: &[u8]) -> Option<Vec<Value>> {
    let read = read(dialect, true, body);
    is_whole_stream(dialect, endpoint, &read).then_some(read.values)
}

/// Whether a JSON answer is complete enough to serve again.
pub fn is_complete(dialect: Dialect, endpoint: Endpoint, body: &Value) -> bool {
    if endpoint == Endpoint::Responses {
        return events::is_complete(body);
    }
    match dialect {
        Dialect::OpenAi => body["choices"]
            .as_array()
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| !c["finish_reason"].is_null())),
        Dialect::Ollama => body["done"] == json!(true),
    }
}

/// One chunk as it goes on the wire.
pub fn frame(dialect: Dialect, endpoint: Endpoint, chunk: &Value) -> Bytes {
    if endpoint == Endpoint::Responses {
        return events::frame(chunk);
    }
    match dialect {
        Dialect::OpenAi => Bytes::from(format!("data: {chunk}\n\n")),
        Dialect::Ollama => Bytes::from(format!("{chunk}\n")),
    }
}

/// The whole body: every chunk framed and the stream's end, or the JSON answer.
pub fn frame_all(
    dialect: Dialect,
    endpoint: Endpoint,
    streamed: bool,
    values: &[Value],
) -> Vec<u8> {
    if !streamed {
        return values
            .first()
            .unwrap_or(&Value::Null)
            .to_string()
            .into_bytes();
    }
    let mut out = Vec::new();
    for value in values {
        out.extend_from_slice(&frame(dialect, endpoint, value));
    }
    if let Some(end) = end_frame(dialect, endpoint) {
        out.extend_from_slice(&end);
    }
    out
}

/// What ends a stream after the last chunk; a Responses stream ends with its last event.
pub fn end_frame(dialect: Dialect, endpoint: Endpoint) -> Option<Bytes> {
    match dialect {
        _ if endpoint == Endpoint::Responses => None,
        Dialect::OpenAi => Some(Bytes::from_static(b"data: [DONE]\n\n")),
        Dialect::Ollama => None,
    }
}

/// Whether a response's content type is a stream (SSE or NDJSON).
pub fn is_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("event-stream") || ct.contains("ndjson"))
}

/// The content type of a JSON answer, as each server writes it.
pub fn json_content_type(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::OpenAi => "application/json",
        Dialect::Ollama => "application/json; charset=utf-8",
    }
}

/// The `cache-control` a dialect's upstream sends with a stream, if any.
pub fn stream_cache_control(dialect: Dialect) -> Option<&'static str> {
    match dialect {
        Dialect::OpenAi => Some("no-cache"),
        Dialect::Ollama => None,
    }
}

/// The content type of a stream, as each server writes it.
pub fn stream_content_type(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::OpenAi => "text/event-stream; charset=utf-8",
        Dialect::Ollama => "application/x-ndjson",
    }
}

/// Whether a chunk is OpenAI's trailing usage chunk (`choices: []` with `usage`).
pub fn is_usage_chunk(dialect: Dialect, chunk: &Value) -> bool {
    dialect == Dialect::OpenAi
        && chunk["choices"].as_array().is_some_and(Vec::is_empty)
        && chunk["usage"].is_object()
}

/// Removes usage reporting from a chunk list for a client that did not ask for it.
pub fn without_usage(dialect: Dialect, chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .filter(|c| !is_usage_chunk(dialect, c))
        .map(|c| {
            let mut c = c.clone();
            if dialect == Dialect::OpenAi {
                if let Some(o) = c.as_object_mut() {
                    o.shift_remove("usage");
                }
            }
            c
        })
        .collect()
}

/// Whether the chunks carry the usage a client asking for it expects.
pub fn has_usage(dialect: Dialect, endpoint: Endpoint, chunks: &[Value]) -> bool {
    if endpoint == Endpoint::Responses {
        return events::has_usage(chunks);
    }
    match dialect {
        Dialect::OpenAi => chunks.iter().any(|c| is_usage_chunk(dialect, c)),
        Dialect::Ollama => true,
    }
}

/// Whether a JSON answer carries its token usage (Ollama's counts are always there).
pub fn json_has_usage(dialect: Dialect, endpoint: Endpoint, body: &Value) -> bool {
    match dialect {
        _ if endpoint == Endpoint::Responses => body["usage"].is_object(),
        Dialect::OpenAi => body["usage"].is_object(),
        Dialect::Ollama => true,
    }
}

/// Gives an answer (JSON or every chunk of a stream) a fresh id and creation time. A
/// Responses answer keeps both: its id names the response the upstream stored, which a later
/// call's `previous_response_id` may name.
pub fn refresh(
    dialect: Dialect,
    endpoint: Endpoint,
    values: &mut [Value],
    id_suffix: &str,
    now: std::time::SystemTime,
) {
    if endpoint == Endpoint::Responses {
        return;
    }
    for value in values {
        let Some(object) = value.as_object_mut() else {
            continue;
        };
        match dialect {
            Dialect::OpenAi => {
                if let Some(Value::String(id)) = object.get_mut("id") {
                    let prefix = id.split_once('-').map_or("chatcmpl", |(p, _)| p);
                    *id = format!("{prefix}-{id_suffix}");
                }
                if object.contains_key("created") {
                    let secs = now
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    object.insert("created".to_owned(), json!(secs));
                }
            }
            Dialect::Ollama => {
                if object.contains_key("created_at") {
                    let stamp = humantime::format_rfc3339_nanos(now).to_string();
                    object.insert("created_at".to_owned(), json!(stamp));
                }
            }
        }
    }
}

/// The JSON answer a stream adds up to.
pub fn assemble(dialect: Dialect, endpoint: Endpoint, chunks: &[Value]) -> Value {
    match dialect {
        _ if endpoint == Endpoint::Responses => events::assemble(chunks),
        Dialect::OpenAi => assemble_openai(endpoint, chunks),
        Dialect::Ollama => assemble_ollama(endpoint, chunks),
    }
}

/// The chunks of a stream that replays a JSON answer, cut the way upstreams stream. An OpenAI
/// chat message opens with its role (and, for a tool call, `content: null` and the first
/// call's head), then its text in word pieces, any refusal or reasoning in one delta, and each
/// call's arguments in 8-character fragments (at most `MAX_PIECES` pieces of a text or of a
/// call's arguments), then the finish reason and the usage. A completion choice's text, and an
/// Ollama answer's content, are one chunk each before the final chunk (Ollama's `done` chunk
/// holds the totals). Responses answers are cut by `responses::events::split`.
pub fn split(dialect: Dialect, endpoint: Endpoint, body: &Value) -> Vec<Value> {
    match dialect {
        _ if endpoint == Endpoint::Responses => events::split(body),
        Dialect::OpenAi => split_openai(endpoint, body),
        Dialect::Ollama => split_ollama(endpoint, body),
    }
}

fn append(target: &mut Map<String, Value>, field: &str, piece: &Value) {
    let Some(piece) = piece.as_str() else { return };
    match target.get_mut(field) {
        Some(Value::String(s)) => s.push_str(piece),
        _ => {
            target.insert(field.to_owned(), json!(piece));
        }
    }
}

fn assemble_openai(endpoint: Endpoint, chunks: &[Value]) -> Value {
    let first = chunks.first().cloned().unwrap_or(Value::Null);
    let chat = endpoint == Endpoint::Chat;
    let mut choices: Vec<Map<String, Value>> = Vec::new();
    let mut usage = Value::Null;
    for chunk in chunks {
        if chunk["usage"].is_object() {
            usage = chunk["usage"].clone();
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let index = choice["index"].as_u64().unwrap_or(0) as usize;
            while choices.len() <= index {
                let mut fresh = Map::new();
                fresh.insert("index".to_owned(), json!(choices.len()));
                if chat {
                    fresh.insert("message".to_owned(), json!({"role": "assistant"}));
                }
                fresh.insert("logprobs".to_owned(), Value::Null);
                fresh.insert("finish_reason".to_owned(), Value::Null);
                choices.push(fresh);
            }
            let target = &mut choices[index];
            if !choice["finish_reason"].is_null() {
                target.insert("finish_reason".to_owned(), choice["finish_reason"].clone());
            }
            if let Some(content) = choice["logprobs"]["content"].as_array() {
                let slot = target
                    .entry("logprobs")
                    .or_insert_with(|| json!({"content": []}));
                if slot.is_null() {
                    *slot = json!({"content": []});
                }
                if let Some(list) = slot["content"].as_array_mut() {
                    list.extend(content.iter().cloned());
                }
            }
            if !chat {
                append(target, "text", &choice["text"]);
                continue;
            }
            let Some(Value::Object(message)) = target.get_mut("message") else {
                continue;
            };
            let delta = &choice["delta"];
            if let Some(role) = delta["role"].as_str() {
                message.insert("role".to_owned(), json!(role));
            }
            for field in ["content", "refusal", "reasoning_content", "reasoning"] {
                append(message, field, &delta[field]);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let calls = message
                    .entry("tool_calls")
                    .or_insert_with(|| json!([]))
                    .as_array_mut();
                let Some(calls) = calls else { continue };
                let at = call["index"].as_u64().unwrap_or(0) as usize;
                while calls.len() <= at {
                    calls.push(json!({"id": null, "type": "function", "function": {"name": "", "arguments": ""}}));
                }
                let slot = &mut calls[at];
                if let Some(id) = call["id"].as_str() {
                    slot["id"] = json!(id);
                }
                if let Some(kind) = call["type"].as_str() {
                    slot["type"] = json!(kind);
                }
                if let Some(function) = slot["function"].as_object_mut() {
                    append(function, "name", &call["function"]["name"]);
                    append(function, "arguments", &call["function"]["arguments"]);
                }
            }
        }
    }
    let mut choices: Vec<Value> = choices.into_iter().map(Value::Object).collect();
    if chat {
        for choice in &mut choices {
            let message = &mut choice["message"];
            if message.get("content").is_none() {
                message["content"] = Value::Null;
            }
            if message.get("refusal").is_none() {
                message["refusal"] = Value::Null;
            }
        }
    }
    let mut out = Map::new();
    out.insert("id".to_owned(), first["id"].clone());
    out.insert(
        "object".to_owned(),
        json!(if chat {
            "chat.completion"
        } else {
            "text_completion"
        }),
    );
    out.insert("created".to_owned(), first["created"].clone());
    out.insert("model".to_owned(), first["model"].clone());
    out.insert("choices".to_owned(), Value::Array(choices));
    out.insert("usage".to_owned(), usage);
    for field in ["system_fingerprint", "service_tier"] {
        if let Some(v) = first.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn split_openai(endpoint: Endpoint, body: &Value) -> Vec<Value> {
    let chat = endpoint == Endpoint::Chat;
    let mut head = Map::new();
    head.insert("id".to_owned(), body["id"].clone());
    head.insert(
        "object".to_owned(),
        json!(if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        }),
    );
    head.insert("created".to_owned(), body["created"].clone());
    head.insert("model".to_owned(), body["model"].clone());
    for field in ["system_fingerprint", "service_tier"] {
        if let Some(v) = body.get(field) {
            head.insert(field.to_owned(), v.clone());
        }
    }
    let chunk = |choices: Value| {
        let mut c = head.clone();
        c.insert("choices".to_owned(), choices);
        Value::Object(c)
    };
    let mut chunks = Vec::new();
    for choice in body["choices"].as_array().into_iter().flatten() {
        let index = &choice["index"];
        let logprobs = choice.get("logprobs").cloned().unwrap_or(Value::Null);
        if !chat {
            chunks.push(chunk(json!([{
                "text": choice["text"], "index": index, "logprobs": logprobs,
                "finish_reason": choice["finish_reason"]
            }])));
            continue;
        }
        let message = &choice["message"];
        let delta = |delta: Value, logprobs: Value| {
            chunk(json!([{
                "index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null
            }]))
        };
        let calls = message["tool_calls"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        // As the upstream streams: a text answer opens with empty content, a tool call with
        // null content and the first call's head; then the text and each call's arguments
        // come in pieces.
        let mut opening = json!({
            "role": message["role"].as_str().unwrap_or("assistant"),
            "content": if message["content"].is_string() { json!("") } else { Value::Null },
            "refusal": null
        });
        let opens_with_call = !message["content"].is_string() && !calls.is_empty();
        if opens_with_call {
            opening["tool_calls"] = json!([call_head(0, &calls[0])]);
        }
        chunks.push(delta(opening, Value::Null));
        if let Some(text) = message["content"].as_str() {
            let mut logprobs = Some(logprobs);
            for piece in text_pieces(text) {
                chunks.push(delta(
                    json!({"content": piece}),
                    logprobs.take().unwrap_or(Value::Null),
                ));
            }
        }
        let mut other = Map::new();
        for field in ["refusal", "reasoning_content", "reasoning"] {
            if message[field].is_string() {
                other.insert(field.to_owned(), message[field].clone());
            }
        }
        if !other.is_empty() {
            chunks.push(delta(Value::Object(other), Value::Null));
        }
        for (i, call) in calls.iter().enumerate() {
            if i > 0 || !opens_with_call {
                chunks.push(delta(
                    json!({"tool_calls": [call_head(i, call)]}),
                    Value::Null,
                ));
            }
            let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
            for piece in argument_pieces(arguments) {
                chunks.push(delta(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
        }
        chunks.push(chunk(json!([{
            "index": index, "delta": {}, "logprobs": null, "finish_reason": choice["finish_reason"]
        }])));
    }
    if body["usage"].is_object() {
        let mut last = head.clone();
        last.insert("choices".to_owned(), json!([]));
        last.insert("usage".to_owned(), body["usage"].clone());
        for c in &mut chunks {
            c["usage"] = Value::Null;
        }
        chunks.push(Value::Object(last));
    }
    chunks
}

/// The delta that opens tool call `i`: its id, type and name, with empty arguments.
fn call_head(i: usize, call: &Value) -> Value {
    json!({
        "index": i,
        "id": call["id"],
        "type": call["type"],
        "function": {"name": call["function"]["name"], "arguments": ""}
    })
}

/// The most pieces a replayed text or call is cut into.
const MAX_PIECES: usize = 256;

/// A text in word pieces (each word with the whitespace before it), as a model streams it;
/// at most [`MAX_PIECES`], longer texts taking several words per piece.
fn text_pieces(text: &str) -> Vec<&str> {
    let starts: Vec<usize> = text
        .char_indices()
        .filter(|&(i, c)| {
            i > 0
                && c.is_whitespace()
                && !text[..i]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_whitespace)
        })
        .map(|(i, _)| i)
        .collect();
    cut_at(text, &starts)
}

/// Tool-call arguments in short fragments, as a model streams JSON.
fn argument_pieces(arguments: &str) -> Vec<&str> {
    const FRAGMENT: usize = 8;
    let starts: Vec<usize> = arguments
        .char_indices()
        .map(|(i, _)| i)
        .enumerate()
        .filter(|&(n, i)| n > 0 && n % FRAGMENT == 0 && i > 0)
        .map(|(_, i)| i)
        .collect();
    cut_at(arguments, &starts)
}

/// `text` cut before each of `starts` (ascending char boundaries), merged evenly into at most
/// [`MAX_PIECES`] pieces; an empty text is no piece.
fn cut_at<'a>(text: &'a str, starts: &[usize]) -> Vec<&'a str> {
    let step = starts.len().div_ceil(MAX_PIECES).max(1);
    let mut pieces = Vec::new();
    let mut from = 0;
    for &at in starts.iter().skip(step - 1).step_by(step) {
        pieces.push(&text[from..at]);
        from = at;
    }
    pieces.push(&text[from..]);
    pieces.retain(|p| !p.is_empty());
    pieces
}

/// Ollama's final-chunk fields that describe the whole answer.
const OLLAMA_TOTALS: &[&str] = &[
    "done_reason",
    "context",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
];

fn assemble_ollama(endpoint: Endpoint, chunks: &[Value]) -> Value {
    let last = chunks.last().cloned().unwrap_or(Value::Null);
    let mut out = Map::new();
    out.insert("model".to_owned(), last["model"].clone());
    out.insert("created_at".to_owned(), last["created_at"].clone());
    if endpoint == Endpoint::Chat {
        let mut message = Map::new();
        message.insert("role".to_owned(), json!("assistant"));
        message.insert("content".to_owned(), json!(""));
        let mut calls = Vec::new();
        for chunk in chunks {
            let m = &chunk["message"];
            append(&mut message, "content", &m["content"]);
            append(&mut message, "thinking", &m["thinking"]);
            if let Some(role) = m["role"].as_str() {
                message.insert("role".to_owned(), json!(role));
            }
            calls.extend(m["tool_calls"].as_array().into_iter().flatten().cloned());
        }
        if !calls.is_empty() {
            message.insert("tool_calls".to_owned(), Value::Array(calls));
        }
        out.insert("message".to_owned(), Value::Object(message));
    } else {
        let mut text = Map::new();
        text.insert("response".to_owned(), json!(""));
        for chunk in chunks {
            append(&mut text, "response", &chunk["response"]);
            append(&mut text, "thinking", &chunk["thinking"]);
        }
        out.extend(text);
    }
    out.insert("done".to_owned(), json!(true));
    for field in OLLAMA_TOTALS {
        if let Some(v) = last.get(*field) {
            out.insert((*field).to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn split_ollama(endpoint: Endpoint, body: &Value) -> Vec<Value> {
    let mut first = Map::new();
    let mut last = Map::new();
    for m in [&mut first, &mut last] {
        m.insert("model".to_owned(), body["model"].clone());
        m.insert("created_at".to_owned(), body["created_at"].clone());
    }
    if endpoint == Endpoint::Chat {
        first.insert("message".to_owned(), body["message"].clone());
        last.insert(
            "message".to_owned(),
            json!({"role": body["message"]["role"].as_str().unwrap_or("assistant"), "content": ""}),
        );
    } else {
        first.insert("response".to_owned(), body["response"].clone());
        if let Some(t) = body.get("thinking") {
            first.insert("thinking".to_owned(), t.clone());
        }
        last.insert("response".to_owned(), json!(""));
    }
    first.insert("done".to_owned(), json!(false));
    last.insert("done".to_owned(), json!(true));
    for field in OLLAMA_TOTALS {
        if let Some(v) = body.get(*field) {
            last.insert((*field).to_owned(), v.clone());
        }
    }
    vec![Value::Object(first), Value::Object(last)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(chunks: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&frame(Dialect::OpenAi, Endpoint::Chat, c));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }

    #[test]
    fn openai_stream_assembles_into_the_json_answer_and_back() {
        let chunks = vec![
            json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}),
            json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}),
            json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" there"},"logprobs":null,"finish_reason":null}]}),
            json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]},"logprobs":null,"finish_reason":null}]}),
            json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"logprobs":null,"finish_reason":null}]}),
            json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}),
        ];
        let parsed = parse(Dialect::OpenAi, Endpoint::Chat, &sse(&chunks)).expect("clean stream");
        assert_eq!(parsed, chunks);
        let answer = assemble(Dialect::OpenAi, Endpoint::Chat, &parsed);
        assert_eq!(answer["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(
            answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
        assert!(is_complete(Dialect::OpenAi, Endpoint::Chat, &answer));
        let again = assemble(
            Dialect::OpenAi,
            Endpoint::Chat,
            &split(Dialect::OpenAi, Endpoint::Chat, &answer),
        );
        assert_eq!(again, answer);
    }

    #[test]
    fn a_json_answer_replays_as_a_stream_in_pieces() {
        let arguments = r#"{"city":"Paris","unit":"celsius"}"#;
        let tool = json!({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,
                "tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":arguments}}]},
                "logprobs":null,"finish_reason":"tool_calls"}],"usage":null});
        let chunks = split(Dialect::OpenAi, Endpoint::Chat, &tool);
        let first = &chunks[0]["choices"][0]["delta"];
        assert_eq!(
            first["content"],
            Value::Null,
            "a tool call opens with null content"
        );
        assert_eq!(first["tool_calls"][0]["function"]["name"], "get_weather");
        assert_eq!(first["tool_calls"][0]["function"]["arguments"], "");
        let fragments: Vec<&str> = chunks
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .filter(|a| !a.is_empty())
            .collect();
        assert!(fragments.len() > 2, "arguments in pieces: {fragments:?}");
        assert_eq!(fragments.concat(), arguments);
        assert_eq!(assemble(Dialect::OpenAi, Endpoint::Chat, &chunks), tool);

        let text = "The weather in Paris is mild and dry today.";
        let mut answer = tool.clone();
        answer["choices"][0]["message"] = json!({"role":"assistant","content":text,"refusal":null});
        answer["choices"][0]["finish_reason"] = json!("stop");
        let chunks = split(Dialect::OpenAi, Endpoint::Chat, &answer);
        assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
        let words: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(words.len(), 9, "one piece per word: {words:?}");
        assert_eq!(words.concat(), text);
        assert_eq!(assemble(Dialect::OpenAi, Endpoint::Chat, &chunks), answer);

        let long = "word ".repeat(5_000);
        assert!(text_pieces(&long).len() <= MAX_PIECES);
        assert_eq!(text_pieces(&long).concat(), long);
    }

    #[test]
    fn truncated_streams_are_not_recordings() {
        let chunk =
            json!({"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]});
        let mut body = frame(Dialect::OpenAi, Endpoint::Chat, &chunk).to_vec();
        assert!(
            parse(Dialect::OpenAi, Endpoint::Chat, &body).is_none(),
            "no [DONE]"
        );
        body.extend_from_slice(b"data: [DONE]\n\n");
        assert!(
            parse(Dialect::OpenAi, Endpoint::Chat, &body).is_none(),
            "no finish reason"
        );
        let ndjson = b"{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"x\"},\"done\":false}\n";
        assert!(parse(Dialect::Ollama, Endpoint::Chat, ndjson).is_none());
    }

    #[test]
    fn ollama_chat_round_trips() {
        let body = json!({"model":"llama","created_at":"t","message":{"role":"assistant","content":"Hi you"},"done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":2});
        let chunks = split(Dialect::Ollama, Endpoint::Chat, &body);
        assert_eq!(chunks.len(), 2);
        assert_eq!(assemble(Dialect::Ollama, Endpoint::Chat, &chunks), body);
    }

    #[test]
    fn usage_is_removed_for_clients_that_did_not_ask() {
        let chunks = vec![
            json!({"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}],"usage":null}),
            json!({"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}),
        ];
        assert!(has_usage(Dialect::OpenAi, Endpoint::Chat, &chunks));
        let stripped = without_usage(Dialect::OpenAi, &chunks);
        assert_eq!(stripped.len(), 1);
        assert!(stripped[0].get("usage").is_none());
    }
}
