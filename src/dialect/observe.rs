//! An upstream answer read once when its body ends, for everything that learns from it: the
//! savings record (its usage, or its text to count) and the cache's recorder (the whole answer,
//! when it is a complete success).

use std::ops::Range;

use bytes::Bytes;
use serde_json::{Value, json};

use super::responses::events;
use super::{stream, usage};
use crate::chat::{Dialect, Endpoint, Tokens};

/// What an answer's bytes hold, parsed once.
#[derive(Debug)]
pub struct Observed {
    pub dialect: Dialect,
    pub streamed: bool,
    /// The body, or every event of the stream that parsed.
    pub values: Vec<Value>,
    /// A complete success: a JSON answer with its finish, or a stream that ended cleanly.
    pub complete: bool,
    /// The text of every value, as it parsed, when all of them did.
    pub texts: Option<JsonTexts>,
}

/// The text of each of an answer's values (the body, or each event of a stream) exactly as
/// it parsed into one value, without the whitespace around it. Only [`observe`] makes them,
/// from bytes it has just parsed, so each can be written into other JSON as it is and that
/// JSON stays whole.
#[derive(Debug)]
pub struct JsonTexts {
    bytes: Bytes,
    spans: Vec<Range<usize>>,
}

impl JsonTexts {
    /// Each value's text, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.spans.iter().map(|span| &self.bytes[span.clone()])
    }
}

/// Reads an answer's bytes as the dialect and endpoint write them.
pub fn observe(dialect: Dialect, endpoint: Endpoint, streamed: bool, bytes: &Bytes) -> Observed {
    let read = stream::read(dialect, streamed, bytes);
    let complete = if streamed {
        stream::is_whole_stream(dialect, endpoint, &read)
    } else {
        read.all_parsed
            && read
                .values
                .first()
                .is_some_and(|v| stream::is_complete(dialect, endpoint, v))
    };
    let texts = read.all_parsed.then(|| JsonTexts {
        bytes: bytes.clone(),
        spans: read.spans,
    });
    Observed {
        dialect,
        streamed,
        values: read.values,
        complete,
        texts,
    }
}

impl Observed {
    /// The usage the upstream reported; a truncated stream still yields what it reported.
    pub fn usage(&self) -> Option<Tokens> {
        usage::from_chunks(self.dialect, &self.values)
    }

    /// The text the answer holds, for counting its tokens when no usage was reported.
    pub fn text(&self) -> String {
        usage::text_of(self.dialect, &self.values)
    }
}

/// What a whole answer says, read out of its wire form: its text, and its tool calls by name
/// and arguments (as data: OpenAI sends the arguments as a JSON string, Ollama as an object).
#[derive(Debug, Default, PartialEq)]
pub struct Saying {
    pub text: String,
    pub calls: Vec<(String, Value)>,
}

/// Reads a whole JSON answer (a stream assembled first, see [`stream::assemble`]).
pub fn saying(dialect: Dialect, endpoint: Endpoint, body: &Value) -> Saying {
    let (text, calls) = match (dialect, endpoint) {
        (_, Endpoint::Responses) => {
            let message = events::as_message(body);
            (message["content"].clone(), message["tool_calls"].clone())
        }
        (Dialect::OpenAi, Endpoint::Chat) => {
            let message = &body["choices"][0]["message"];
            (message["content"].clone(), message["tool_calls"].clone())
        }
        (Dialect::OpenAi, _) => (body["choices"][0]["text"].clone(), Value::Null),
        (Dialect::Ollama, Endpoint::Chat) => {
            let message = &body["message"];
            (message["content"].clone(), message["tool_calls"].clone())
        }
        (Dialect::Ollama, _) => (body["response"].clone(), Value::Null),
    };
    let calls = calls
        .as_array()
        .into_iter()
        .flatten()
        .map(|call| {
            let function = &call["function"];
            let arguments = match &function["arguments"] {
                Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
                other => other.clone(),
            };
            let name = function["name"].as_str().unwrap_or_default().to_owned();
            (name, arguments)
        })
        .collect();
    Saying {
        text: text.as_str().unwrap_or_default().to_owned(),
        calls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_stream_is_complete_and_a_cut_one_still_reports_what_arrived() {
        let whole = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
                     data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                     data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n\
                     data: [DONE]\n\n";
        let seen = observe(Dialect::OpenAi, Endpoint::Chat, true, &Bytes::from(whole));
        assert!(seen.complete);
        let texts: Vec<&[u8]> = seen.texts.as_ref().expect("all parsed").iter().collect();
        assert_eq!(
            texts,
            [
                &br#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#[..],
                br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
                br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
            ],
            "each event's text, without its framing"
        );
        assert_eq!(seen.values.len(), 3);
        assert_eq!(seen.usage().map(|u| (u.prompt, u.completion)), Some((5, 1)));
        assert_eq!(seen.text(), "Hi");
        let cut = &whole[..whole.find("data: [DONE]").unwrap_or(0) - 10];
        let seen = observe(Dialect::OpenAi, Endpoint::Chat, true, &Bytes::from(cut));
        assert!(!seen.complete, "no [DONE], a cut-off last event");
        assert_eq!(seen.text(), "Hi");
    }

    #[test]
    fn a_json_answer_is_complete_only_with_its_finish() {
        let done = r#"{"model":"m","message":{"role":"assistant","content":"Yes"},"done":true,"prompt_eval_count":3,"eval_count":1}"#;
        let seen = observe(Dialect::Ollama, Endpoint::Chat, false, &Bytes::from(done));
        assert!(seen.complete);
        assert_eq!(seen.usage().map(|u| (u.prompt, u.completion)), Some((3, 1)));
        let open = r#"{"model":"m","message":{"role":"assistant","content":"Ye"},"done":false}"#;
        assert!(!observe(Dialect::Ollama, Endpoint::Chat, false, &Bytes::from(open)).complete);
        let broken = Bytes::from_static(b"{not json");
        assert!(!observe(Dialect::Ollama, Endpoint::Chat, false, &broken).complete);
    }

    #[test]
    fn each_value_is_kept_as_it_parsed_and_only_when_all_of_them_did() {
        let padded = "\n  {\"message\":{\"content\":\"caf\\u00e9\"},\"done\":true} \r\n";
        let seen = observe(Dialect::Ollama, Endpoint::Chat, false, &Bytes::from(padded));
        let texts: Vec<&[u8]> = seen
            .texts
            .as_ref()
            .expect("one JSON value")
            .iter()
            .collect();
        assert_eq!(texts, [padded.trim().as_bytes()]);
        let parsed: Value = serde_json::from_slice(texts[0]).expect("JSON");
        assert_eq!(parsed, seen.values[0]);
        let ndjson = "{\"a\":1}\r\n\n  {\"b\": [2, 3]}  \n{\"done\":true}";
        let seen = observe(Dialect::Ollama, Endpoint::Chat, true, &Bytes::from(ndjson));
        let texts: Vec<&[u8]> = seen.texts.as_ref().expect("all parsed").iter().collect();
        assert_eq!(
            texts,
            [&b"{\"a\":1}"[..], b"{\"b\": [2, 3]}", b"{\"done\":true}"]
        );
        for not_all in ["{\"done\":true} {\"done\":true}", "{\"done\":"] {
            let seen = observe(
                Dialect::Ollama,
                Endpoint::Chat,
                false,
                &Bytes::from(not_all),
            );
            assert!(seen.texts.is_none(), "{not_all:?}");
        }
        let cut = "{\"a\":1}\n{\"b\":";
        let seen = observe(Dialect::Ollama, Endpoint::Chat, true, &Bytes::from(cut));
        assert!(seen.texts.is_none(), "a cut stream");
    }
}
