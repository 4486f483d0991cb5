//! Serves a recorded answer in the mode the client asked for: JSON for a JSON
//! request, SSE or NDJSON (one event per recorded chunk) for a streaming one,
//! whichever mode filled the entry, with a fresh id and creation time, copied from the
//! entry's pre-framed template for that mode (see [`super::framed`]).

use std::time::SystemTime;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use serde_json::Value;

use super::Outcome;
use super::entry::{Answer, Entry};
use super::framed::{ID_SENTINEL, Template, time_sentinel};
use super::key::CacheKey;
use crate::body::{Body, full};
use crate::chat::{Call, Dialect, Endpoint};
use crate::clock::now_ms;

use crate::dialect::{self, stream as wire};
use crate::headers::Labels;

/// Whether this entry can answer this call exactly as the upstream would.
pub fn can_serve(dialect: Dialect, call: &Call, entry: &Entry) -> bool {
    if entry.dialect != dialect.as_str() || entry.endpoint != call.endpoint().as_str() {
        return false;
    }
    // A JSON answer always reports usage, and so does a stream that asked for it.
    let needs_usage = !call.stream() || dialect::wants_stream_usage(dialect, call);
    if !needs_usage {
        return true;
    }
    match &entry.answer {
        Answer::Stream(chunks) => wire::has_usage(dialect, call.endpoint(), chunks),
        Answer::Json(body) => wire::json_has_usage(dialect, call.endpoint(), body),
    }
}

/// The chunks or body to send, before their id and time are refreshed.
fn payload(dialect: Dialect, call: &Call, entry: &Entry) -> Vec<Value> {
    let endpoint = call.endpoint();
    if call.stream() {
        let chunks = match &entry.answer {
            Answer::Stream(chunks) => chunks.clone(),
            Answer::Json(body) => wire::split(dialect, endpoint, body),
        };
        if dialect::wants_stream_usage(dialect, call) {
            chunks
        } else {
            wire::without_usage(dialect, &chunks)
        }
    } else {
        vec![match &entry.answer {
            Answer::Json(body) => body.clone(),
            Answer::Stream(chunks) => wire::assemble(dialect, endpoint, chunks),
        }]
    }
}

/// The whole body: every chunk framed and the stream's end, or the JSON answer.
fn frame_all(dialect: Dialect, endpoint: Endpoint, streamed: bool, values: &[Value]) -> Vec<u8> {
    if !streamed {
        return values
            .first()
            .unwrap_or(&Value::Null)
            .to_string()
            .into_bytes();
    }
    let mut out = Vec::new();
    for value in values {
        out.extend_from_slice(&wire::frame(dialect, endpoint, value));
    }
    if let Some(end) = wire::end_frame(dialect, endpoint) {
        out.extend_from_slice(&end);
    }
    out
}

/// The response that replays the entry, with a fresh id and creation time: from the entry's
/// template for this mode when it has one (made on the first replay), else built anew.
pub fn respond(dialect: Dialect, call: &Call, entry: &Entry) -> Response<Body> {
    let endpoint = call.endpoint();
    let streamed = call.stream();
    let usage = streamed && dialect::wants_stream_usage(dialect, call);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let now = SystemTime::now();
    let template = entry.framed.get(streamed, usage, || {
        let mut values = payload(dialect, call, entry);
        wire::refresh(dialect, endpoint, &mut values, ID_SENTINEL, time_sentinel());
        let bytes = frame_all(dialect, endpoint, streamed, &values);
        Template::new(dialect, endpoint, &values, bytes)
    });
    let bytes = match template {
        Some(template) => template.fill(&id, now),
        None => {
            let mut values = payload(dialect, call, entry);
            wire::refresh(dialect, endpoint, &mut values, &id, now);
            frame_all(dialect, endpoint, streamed, &values)
        }
    };
    let content_type = if streamed {
        wire::stream_content_type(dialect)
    } else {
        wire::json_content_type(dialect)
    };
    let mut response = Response::new(full(bytes));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(directive) = wire::stream_cache_control(dialect).filter(|_| streamed) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static(directive));
    }
    response
}

/// The labels of a replayed answer: a hit, its key and its age.
pub fn labels(entry: &Entry, key: &CacheKey, labels: &mut Labels) {
    labels.cache = Some(Outcome::Hit.as_str());
    labels.cache_key = Some(key.short().to_owned());
    labels.cache_age_secs = Some(now_ms().saturating_sub(entry.created_ms) / 1000);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template_and_anew(dialect: Dialect, endpoint: Endpoint, streamed: bool, values: &[Value]) {
        let now = SystemTime::now();
        let mut sentinel = values.to_vec();
        wire::refresh(
            dialect,
            endpoint,
            &mut sentinel,
            ID_SENTINEL,
            time_sentinel(),
        );
        let bytes = frame_all(dialect, endpoint, streamed, &sentinel);
        let template = Template::new(dialect, endpoint, &sentinel, bytes).expect("a template");
        let mut anew = values.to_vec();
        wire::refresh(dialect, endpoint, &mut anew, "0123abcd", now);
        assert_eq!(
            String::from_utf8(template.fill("0123abcd", now)).expect("text"),
            String::from_utf8(frame_all(dialect, endpoint, streamed, &anew)).expect("text"),
            "{dialect:?} {endpoint:?} streamed {streamed}"
        );
    }

    #[test]
    fn a_template_filled_in_is_the_answer_built_anew() {
        let chunks = [
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": "Hi \"created\":4000000000"}, "finish_reason": null}]}),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"tool_calls": [{"id": "call_1", "function": {"name": "f"}}]}, "finish_reason": "stop"}]}),
        ];
        template_and_anew(Dialect::OpenAi, Endpoint::Chat, true, &chunks);
        let body = json!({"id": "cmpl-9", "object": "text_completion", "created": 1, "choices": [{"text": "x", "index": 0, "finish_reason": "stop"}]});
        template_and_anew(Dialect::OpenAi, Endpoint::Completion, false, &[body]);
        let ollama = [
            json!({"model": "m", "created_at": "2024-01-01T00:00:00.000000000Z", "message": {"role": "assistant", "content": "Hi"}, "done": false}),
            json!({"model": "m", "created_at": "2024-01-01T00:00:00.000000000Z", "message": {"role": "assistant", "content": ""}, "done": true, "eval_count": 1}),
        ];
        template_and_anew(Dialect::Ollama, Endpoint::Chat, true, &ollama);
        template_and_anew(Dialect::Ollama, Endpoint::Chat, false, &ollama[1..]);
    }

    #[test]
    fn an_answer_that_holds_a_sentinel_is_built_anew_every_time() {
        let body = json!({"id": "chatcmpl-1", "created": 1,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ID_SENTINEL}, "finish_reason": "stop"}]});
        let mut sentinel = vec![body];
        wire::refresh(
            Dialect::OpenAi,
            Endpoint::Chat,
            &mut sentinel,
            ID_SENTINEL,
            time_sentinel(),
        );
        let bytes = frame_all(Dialect::OpenAi, Endpoint::Chat, false, &sentinel);
        assert!(Template::new(Dialect::OpenAi, Endpoint::Chat, &sentinel, bytes).is_none());
    }

    #[test]
    fn the_time_sentinel_is_written_as_the_template_looks_for_it() {
        let written = humantime::format_rfc3339_nanos(time_sentinel()).to_string();
        assert_eq!(written, "2096-10-02T07:06:40.000000000Z");
    }
}
