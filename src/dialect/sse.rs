//! OpenAI event streams rewritten as they pass: thrifty asks the upstream for the
//! usage chunk (`stream_options.include_usage`) so the ledger gets exact counts, and
//! takes it out again for a client that did not ask for it; a call that follows an
//! identical one in flight gets the stream with an id of its own, as a replay does.
//!
//! Events are cut at their blank line; an event whose single `data:` line is a JSON
//! object with a top-level `usage` loses that field (`"usage": null` on every chunk),
//! and the trailing usage chunk (`choices: []`) is dropped whole; a top-level string `id`
//! keeps its prefix (`chatcmpl-`) and gets the fresh suffix. Every other byte, nested values
//! included, passes through as the upstream wrote it.

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::value::RawValue;

/// What an [`EventRewriter`] changes in each event.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Take usage reporting out.
    pub strip_usage: bool,
    /// Give every event's `id` this suffix.
    pub id_suffix: Option<String>,
}

/// Rewrites a streamed answer's bytes as they pass: each piece gives what can go on now,
/// and the end what was held back.
pub trait Rewriter: Send {
    fn push(&mut self, piece: &[u8]) -> Bytes;
    fn finish(&mut self) -> Bytes;
}

/// Rewrites an SSE byte stream's events, one piece at a time.
#[derive(Default)]
pub struct EventRewriter {
    pending: Vec<u8>,
    changes: Changes,
}

impl EventRewriter {
    pub fn new(changes: Changes) -> EventRewriter {
        EventRewriter {
            pending: Vec::new(),
            changes,
        }
    }
}

impl Rewriter for EventRewriter {
    /// Takes the next piece of the stream; returns the events it completed, rewritten.
    fn push(&mut self, piece: &[u8]) -> Bytes {
        self.pending.extend_from_slice(piece);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut start = 0;
        while let Some(end) = event_end(&self.pending[start..]) {
            rewrite(&self.pending[start..start + end], &self.changes, &mut out);
            start += end;
        }
        self.pending.drain(..start);
        Bytes::from(out)
    }

    /// The stream ended: whatever is left (an event without its blank line) goes out too.
    fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            rewrite(&rest, &self.changes, &mut out);
        }
        Bytes::from(out)
    }
}

/// The length of the first complete event (its blank line included), if there is one.
fn event_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut line_start = 0;
    while i < bytes.len() {
        let terminator = match bytes[i] {
            b'\n' => 1,
            // A lone `\r` at the end may be the first half of `\r\n`: wait for more.
            b'\r' if i + 1 == bytes.len() => return None,
            b'\r' if bytes[i + 1] == b'\n' => 2,
            b'\r' => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        let empty = i == line_start;
        i += terminator;
        if empty && line_start > 0 {
            return Some(i);
        }
        line_start = i;
    }
    None
}

/// Appends `event` to `out` changed, or not at all when it is a usage chunk to take out.
fn rewrite(event: &[u8], changes: &Changes, out: &mut Vec<u8>) {
    match changed(event, changes) {
        Some(Rewritten::Drop) => {}
        Some(Rewritten::Event(bytes)) => out.extend_from_slice(&bytes),
        None => out.extend_from_slice(event),
    }
}

enum Rewritten {
    Drop,
    Event(Vec<u8>),
}

/// `None` when the event has nothing to change.
fn changed(event: &[u8], changes: &Changes) -> Option<Rewritten> {
    let usage = changes.strip_usage && contains(event, b"\"usage\"");
    let renames = changes.id_suffix.is_some() && contains(event, b"\"id\"");
    if !usage && !renames {
        return None;
    }
    let text = std::str::from_utf8(event).ok()?;
    let mut data_lines = text
        .split_inclusive('\n')
        .enumerate()
        .filter(|(_, line)| line.starts_with("data:"));
    let (index, line) = data_lines.next()?;
    if data_lines.next().is_some() {
        return None;
    }
    let body = line.trim_end_matches(['\r', '\n']);
    let ending = &line[body.len()..];
    let payload = body["data:".len()..].trim_start_matches(' ');
    // The byte cut only when stripping usage is all there is to do.
    let cut = (changes.strip_usage && !renames)
        .then(|| without_trailing_null_usage(payload))
        .flatten();
    let json = match cut {
        Some(kept) => kept.into_bytes(),
        None => match rewritten_payload(payload, changes)? {
            Rewritten::Event(json) => json,
            Rewritten::Drop => return Some(Rewritten::Drop),
        },
    };
    let mut rewritten = Vec::with_capacity(event.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i == index {
            rewritten.extend_from_slice(b"data: ");
            rewritten.extend_from_slice(&json);
            rewritten.extend_from_slice(ending.as_bytes());
        } else {
            rewritten.extend_from_slice(line.as_bytes());
        }
    }
    Some(Rewritten::Event(rewritten))
}

/// OpenAI's own chunks, when usage is asked for, end with `,"usage":null}`: taken off as
/// bytes, without taking the chunk apart. Only for valid JSON that names `usage` once, so the
/// member cut is the object's last; for compact JSON (OpenAI's) the result is what
/// [`rewritten_payload`] gives, and other spacing is kept as the upstream wrote it.
fn without_trailing_null_usage(payload: &str) -> Option<String> {
    const TAIL: &str = ",\"usage\":null}";
    let head = payload.strip_suffix(TAIL)?;
    if payload.find("\"usage\"")? != head.len() + 1 {
        return None;
    }
    serde_json::from_str::<serde::de::IgnoredAny>(payload).ok()?;
    Some(format!("{head}}}"))
}

/// The payload of a data line changed (its JSON), or `Drop` for a usage chunk to take out;
/// `None` when nothing changes.
fn rewritten_payload(payload: &str, changes: &Changes) -> Option<Rewritten> {
    let mut fields: IndexMap<String, Box<RawValue>> = serde_json::from_str(payload).ok()?;
    let fresh = changes
        .id_suffix
        .as_deref()
        .zip(fields.get("id"))
        .and_then(|(suffix, id)| fresh_id(id, suffix));
    let renamed = fresh.is_some();
    if let Some(fresh) = fresh {
        fields.insert("id".to_owned(), fresh);
    }
    if changes.strip_usage {
        if let Some(usage) = fields.shift_remove("usage") {
            let no_choices = fields
                .get("choices")
                .and_then(|c| serde_json::from_str::<Vec<&RawValue>>(c.get()).ok())
                .is_some_and(|c| c.is_empty());
            if no_choices && usage.get() != "null" {
                return Some(Rewritten::Drop);
            }
        } else if !renamed {
            return None;
        }
    } else if !renamed {
        return None;
    }
    serde_json::to_vec(&fields).ok().map(Rewritten::Event)
}

/// `prefix-suffix` for a string id `prefix-…` (`chatcmpl` when it has no dash).
fn fresh_id(id: &RawValue, suffix: &str) -> Option<Box<RawValue>> {
    let id: String = serde_json::from_str(id.get()).ok()?;
    let prefix = id.split_once('-').map_or("chatcmpl", |(p, _)| p);
    serde_json::value::to_raw_value(&format!("{prefix}-{suffix}")).ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\\"usage\\\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
        "data: [DONE]\n\n",
    );

    const EXPECTED: &str = concat!(
        "data: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\\"usage\\\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );

    fn strip_in_pieces(stream: &[u8], size: usize) -> Vec<u8> {
        let mut stripper = EventRewriter::new(Changes {
            strip_usage: true,
            id_suffix: None,
        });
        let mut out = Vec::new();
        for piece in stream.chunks(size) {
            out.extend_from_slice(&stripper.push(piece));
        }
        out.extend_from_slice(&stripper.finish());
        out
    }

    #[test]
    fn usage_fields_and_the_usage_chunk_are_taken_out() {
        for size in [1, 2, 3, 7, 64, STREAM.len()] {
            let out = strip_in_pieces(STREAM.as_bytes(), size);
            assert_eq!(String::from_utf8_lossy(&out), EXPECTED, "pieces of {size}");
        }
    }

    #[test]
    fn streams_without_usage_pass_byte_for_byte() {
        let stream = concat!(
            ": keep-alive\r\n\r\n",
            "event: message\r\nid: 7\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"1e-5 \u{e9}\"}}], \"x\" : 1.50}\r\n\r\n",
            "data: [DONE]\r\n\r\n",
        );
        for size in [1, 5, stream.len()] {
            assert_eq!(strip_in_pieces(stream.as_bytes(), size), stream.as_bytes());
        }
    }

    #[test]
    fn a_trailing_null_usage_is_cut_as_the_full_rewrite_would_cut_it() {
        let strip = Changes {
            strip_usage: true,
            id_suffix: None,
        };
        for compact in [
            r#"{"id":"c-1","choices":[{"index":0,"delta":{"content":"Hi \"usage\":null}"}}],"usage":null}"#,
            r#"{"choices":[],"usage":null}"#,
            r#"{"a":{"b":[1,2,{"c":null}]},"usage":null}"#,
        ] {
            let fast = without_trailing_null_usage(compact).expect("cut as bytes");
            let Some(Rewritten::Event(full)) = rewritten_payload(compact, &strip) else {
                panic!("the full rewrite changes {compact}");
            };
            assert_eq!(fast.as_bytes(), full.as_slice(), "{compact}");
        }
        for other in [
            // Not valid JSON: left for the full rewrite, which leaves it alone.
            r#"{"a":,"usage":null}"#,
            // `usage` named twice, or inside another member first.
            r#"{"usage":1,"usage":null}"#,
            r#"{"x":{"usage":2},"usage":null}"#,
            // Not the last member, or not null.
            r#"{"usage":null,"a":1}"#,
            r#"{"a":1,"usage":{"prompt_tokens":1}}"#,
            r#"{"a":{"usage":null}}"#,
        ] {
            assert_eq!(without_trailing_null_usage(other), None, "{other}");
        }
    }

    #[test]
    fn usage_on_a_content_chunk_is_removed_but_the_chunk_kept() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"end\"}}],\"usage\":{\"prompt_tokens\":1}}\r\n\r\n";
        let out = strip_in_pieces(stream.as_bytes(), 4);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "data: {\"choices\":[{\"delta\":{\"content\":\"end\"}}]}\r\n\r\n"
        );
    }

    #[test]
    fn a_follower_gets_one_fresh_id_on_every_event_and_the_rest_as_written() {
        let mut renamer = EventRewriter::new(Changes {
            strip_usage: false,
            id_suffix: Some("abc".to_owned()),
        });
        let mut out = Vec::new();
        for piece in STREAM.as_bytes().chunks(5) {
            out.extend_from_slice(&renamer.push(piece));
        }
        out.extend_from_slice(&renamer.finish());
        assert_eq!(
            String::from_utf8_lossy(&out),
            STREAM.replace("\"id\":\"c-1\"", "\"id\":\"c-abc\"")
        );
    }

    #[test]
    fn a_stream_cut_short_still_delivers_its_last_partial_event() {
        let stream = "data: {\"choices\":[],\"usage\":null}\n\ndata: {\"partial\":";
        let out = strip_in_pieces(stream.as_bytes(), 3);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "data: {\"choices\":[]}\n\ndata: {\"partial\":"
        );
    }
}
