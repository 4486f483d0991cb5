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
use super::key::CacheKey;
use crate::body::{Body, full};
use crate::chat::{Call, Dialect};

use crate::dialect::{self, stream as wire, template};
use crate::headers::Labels;

/// Whether this entry can answer this call exactly as the upstream would.
pub fn can_serve(dialect: Dialect, call: &Call, entry: &Entry) -> bool {
    if entry.dialect != dialect || entry.endpoint != call.endpoint() {
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

/// The response that replays the entry, with a fresh id and creation time: from the entry's
/// template for this mode when it has one (made on the first replay), else built anew.
pub fn respond(dialect: Dialect, call: &Call, entry: &Entry) -> Response<Body> {
    let endpoint = call.endpoint();
    let streamed = call.stream();
    let usage = streamed && dialect::wants_stream_usage(dialect, call);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let now = SystemTime::now();
    let template = entry.framed.get(streamed, usage, || {
        template::template(dialect, endpoint, streamed, payload(dialect, call, entry))
    });
    let bytes = match template {
        Some(template) => template.fill(&id, now),
        None => {
            let mut values = payload(dialect, call, entry);
            wire::refresh(dialect, endpoint, &mut values, &id, now);
            wire::frame_all(dialect, endpoint, streamed, &values)
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

/// The labels of a replayed answer at `now_ms`: a hit, its key and its age.
pub fn labels(entry: &Entry, key: &CacheKey, now_ms: u64, labels: &mut Labels) {
    labels.cache = Some(Outcome::Hit.as_str());
    labels.cache_key = Some(key.short().to_owned());
    labels.cache_age_secs = Some(now_ms.saturating_sub(entry.created_ms) / 1000);
}
