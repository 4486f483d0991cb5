//! A streamed or JSON answer framed once, with holes where each replay writes its own id and
//! creation time: a replay copies bytes instead of cloning, refreshing and serializing the
//! answer's JSON again.
//!
//! The template is made by refreshing the answer with sentinel values (an id suffix of
//! control characters, which JSON writes escaped, and a creation time in 2096), framing it,
//! and finding the sentinels in the bytes. It is used only when it found exactly as many of
//! each as the answer has fields to refresh; otherwise the caller builds the answer anew.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::stream;
use crate::chat::{Dialect, Endpoint};

/// The id suffix a template is refreshed with, and how JSON writes it.
const ID_SENTINEL: &str = "\u{1}thrifty-id\u{1}";
const ID_WRITTEN: &[u8] = b"\\u0001thrifty-id\\u0001";

/// The creation time a template is refreshed with: 4,000,000,000 s after the epoch.
const TIME_SENTINEL_SECS: u64 = 4_000_000_000;
const CREATED_WRITTEN: &[u8] = b"\"created\":4000000000";
const CREATED_AT_WRITTEN: &[u8] = b"2096-10-02T07:06:40.000000000Z";

fn time_sentinel() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(TIME_SENTINEL_SECS)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hole {
    IdSuffix,
    Created,
    CreatedAt,
}

/// The template of an answer's values (not yet refreshed), framed as `streamed` says.
pub fn template(
    dialect: Dialect,
    endpoint: Endpoint,
    streamed: bool,
    mut values: Vec<Value>,
) -> Option<Template> {
    stream::refresh(dialect, endpoint, &mut values, ID_SENTINEL, time_sentinel());
    let bytes = stream::frame_all(dialect, endpoint, streamed, &values);
    Template::new(dialect, endpoint, &values, bytes)
}

/// Framed bytes and where each replay's own values go.
#[derive(Debug)]
pub struct Template {
    bytes: Vec<u8>,
    holes: Vec<(usize, usize, Hole)>,
}

impl Template {
    /// A template of `bytes`, the framing of `values` refreshed with the sentinels; `None`
    /// unless every field refreshed is found once, and nothing else looks like one.
    fn new(
        dialect: Dialect,
        endpoint: Endpoint,
        values: &[Value],
        bytes: Vec<u8>,
    ) -> Option<Template> {
        let expected = |field: &str| {
            values
                .iter()
                .filter(|v| v.as_object().is_some_and(|o| o.contains_key(field)))
                .count()
        };
        let mut holes = Vec::new();
        if endpoint != Endpoint::Responses {
            let wanted: &[(&[u8], Hole, &str)] = match dialect {
                Dialect::OpenAi => &[
                    (ID_WRITTEN, Hole::IdSuffix, "id"),
                    (CREATED_WRITTEN, Hole::Created, "created"),
                ],
                Dialect::Ollama => &[(CREATED_AT_WRITTEN, Hole::CreatedAt, "created_at")],
            };
            for (pattern, hole, field) in wanted {
                let found = find_all(&bytes, pattern);
                let ids = (*hole == Hole::IdSuffix)
                    .then(|| values.iter().filter(|v| v["id"].is_string()).count());
                if found.len() != ids.unwrap_or_else(|| expected(field)) {
                    return None;
                }
                holes.extend(found.into_iter().map(|at| (at, pattern.len(), *hole)));
            }
        }
        holes.sort_unstable_by_key(|(at, _, _)| *at);
        Some(Template { bytes, holes })
    }

    /// The bytes with this replay's id suffix and time written in.
    pub fn fill(&self, id_suffix: &str, now: SystemTime) -> Vec<u8> {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let created = format!("\"created\":{secs}");
        let created_at = humantime::format_rfc3339_nanos(now).to_string();
        let mut out = Vec::with_capacity(self.bytes.len() + 16);
        let mut from = 0;
        for &(at, len, hole) in &self.holes {
            out.extend_from_slice(&self.bytes[from..at]);
            out.extend_from_slice(match hole {
                Hole::IdSuffix => id_suffix.as_bytes(),
                Hole::Created => created.as_bytes(),
                Hole::CreatedAt => created_at.as_bytes(),
            });
            from = at + len;
        }
        out.extend_from_slice(&self.bytes[from..]);
        out
    }
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
    {
        found.push(from + at);
        from += at + needle.len();
    }
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::dialect::stream::{frame_all, refresh};

    fn template_and_anew(dialect: Dialect, endpoint: Endpoint, streamed: bool, values: &[Value]) {
        let now = SystemTime::now();
        let template = template(dialect, endpoint, streamed, values.to_vec()).expect("a template");
        let mut anew = values.to_vec();
        refresh(dialect, endpoint, &mut anew, "0123abcd", now);
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
        refresh(
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
