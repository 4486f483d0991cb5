//! Ollama's NDJSON streams rewritten as they pass: a call that follows an identical one in
//! flight gets each chunk with its own `created_at`, the time it passes, as a replay gets a
//! fresh one. Lines are cut at their newline; a line that is a JSON object with a top-level
//! `created_at` gets the new time, and every other byte passes as the upstream wrote it.

use std::time::SystemTime;

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::value::RawValue;

use super::sse::Rewriter;

/// Gives every chunk of an NDJSON stream the time it passes as its `created_at`.
#[derive(Default)]
pub struct FreshTimes {
    pending: Vec<u8>,
}

impl Rewriter for FreshTimes {
    fn push(&mut self, piece: &[u8]) -> Bytes {
        self.pending.extend_from_slice(piece);
        let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Bytes::new();
        };
        let lines: Vec<u8> = self.pending.drain(..=end).collect();
        let mut out = Vec::with_capacity(lines.len());
        for line in lines.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(&retimed(line).unwrap_or_else(|| line.to_vec()));
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.pending);
        Bytes::from(retimed(&rest).unwrap_or(rest))
    }
}

/// The line with a fresh `created_at`; `None` when it has none or is not a JSON object.
fn retimed(line: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    let body = text.trim_end_matches(['\r', '\n']);
    if !body.contains("\"created_at\"") {
        return None;
    }
    let mut fields: IndexMap<String, Box<RawValue>> = serde_json::from_str(body).ok()?;
    let stamp = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
    fields.insert(
        "created_at".to_owned(),
        serde_json::value::to_raw_value(&stamp).ok()?,
    );
    let mut out = serde_json::to_vec(&fields).ok()?;
    out.extend_from_slice(&line[body.len()..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chunk_gets_a_fresh_time_and_keeps_the_rest() {
        let stream = concat!(
            "{\"model\":\"m\",\"created_at\":\"2024-01-01T00:00:00.000000000Z\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n",
            "{\"model\":\"m\",\"created_at\":\"2024-01-01T00:00:00.000000000Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"eval_count\":2}\n",
        );
        let mut times = FreshTimes::default();
        let mut out = Vec::new();
        for piece in stream.as_bytes().chunks(7) {
            out.extend_from_slice(&times.push(piece));
        }
        out.extend_from_slice(&times.finish());
        let text = String::from_utf8(out).expect("text");
        assert!(!text.contains("2024-01-01"), "{text}");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message"]["content"], "Hi");
        assert_eq!(lines[1]["eval_count"], 2);
        let keys: Vec<&String> = lines[0].as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            ["model", "created_at", "message", "done"],
            "order kept"
        );
    }
}
