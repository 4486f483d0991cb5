//! Whether two recorded answers say the same: the verdict that turns a verified
//! candidate into an observation.

use serde_json::Value;

use crate::cache::entry::{Answer, Entry};
use crate::dialect::{observe, stream};
use crate::semantic::embedder::{Embedder, similarity};

/// Answers whose texts differ still agree when their embeddings are at least this
/// similar. Set high on purpose: a wrong "agree" would let the calibration serve more,
/// a wrong "differ" only costs a hit.
pub const ANSWER_AGREEMENT: f32 = 0.97;

/// What an answer says: its text, normalised, and its tool calls by name and arguments.
#[derive(Debug, PartialEq)]
struct Said {
    text: String,
    calls: Vec<(String, Value)>,
}

fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_matches(|c: char| c.is_ascii_punctuation())
        .to_owned()
}

/// What an answer says, or `None` when the dialect reads neither text nor a tool call in it.
fn said(entry: &Entry) -> Option<Said> {
    let (dialect, endpoint) = (entry.dialect, entry.endpoint);
    let body = match &entry.answer {
        Answer::Json(body) => body.clone(),
        Answer::Stream(chunks) => stream::assemble(dialect, endpoint, chunks),
    };
    let saying = observe::saying(dialect, endpoint, &body);
    if saying.text.is_empty() && saying.calls.is_empty() {
        return None;
    }
    let mut calls = saying.calls;
    calls.sort_by(|a, b| (&a.0, a.1.to_string()).cmp(&(&b.0, b.1.to_string())));
    Some(Said {
        text: normalise(&saying.text),
        calls,
    })
}

/// Whether serving `cached` where `fresh` was answered would have said the same: equal
/// tool calls (names and arguments, ids and order aside) and texts equal once case and
/// spacing are normalised, or, with an embedder, at least [`ANSWER_AGREEMENT`] similar.
/// An answer that cannot be read never agrees.
pub async fn answers_agree(fresh: &Entry, cached: &Entry, embedder: Option<&Embedder>) -> bool {
    let (Some(a), Some(b)) = (said(fresh), said(cached)) else {
        return false;
    };
    if a.calls != b.calls {
        return false;
    }
    if a.text == b.text {
        return true;
    }
    if a.text.is_empty() || b.text.is_empty() {
        return false;
    }
    let Some(embedder) = embedder else {
        return false;
    };
    // Off the request path: the comparison waits behind every lookup.
    match embedder
        .embed_background(&[a.text, b.text])
        .await
        .as_slice()
    {
        [Some(x), Some(y)] => similarity(x, y) >= ANSWER_AGREEMENT,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::chat::{Dialect, Endpoint};

    fn entry(dialect: Dialect, answer: Answer) -> Entry {
        Entry {
            created_ms: 0,
            ttl_ms: 0,
            tenant: "t".to_owned(),
            namespace: None,
            model: "m".to_owned(),
            tags: Vec::new(),
            dialect,
            endpoint: Endpoint::Chat,
            answer,
            compressed_away: 0,
            framed: Default::default(),
        }
    }

    fn openai(content: &str) -> Entry {
        entry(
            Dialect::OpenAi,
            Answer::Json(
                json!({"choices":[{"index":0,"message":{"role":"assistant","content":content},"finish_reason":"stop"}]}),
            ),
        )
    }

    fn openai_call(name: &str, arguments: &str, id: &str) -> Entry {
        entry(
            Dialect::OpenAi,
            Answer::Json(
                json!({"choices":[{"index":0,"message":{"role":"assistant","content":null,
                "tool_calls":[{"id":id,"type":"function","function":{"name":name,"arguments":arguments}}]},
                "finish_reason":"tool_calls"}]}),
            ),
        )
    }

    #[tokio::test]
    async fn texts_agree_once_normalised() {
        assert!(answers_agree(&openai("Paris."), &openai("  paris "), None).await);
        assert!(!answers_agree(&openai("Paris"), &openai("Rome"), None).await);
    }

    #[tokio::test]
    async fn a_streamed_answer_is_read_as_its_assembled_text() {
        let streamed = entry(
            Dialect::Ollama,
            Answer::Stream(vec![
                json!({"model":"m","created_at":"t","message":{"role":"assistant","content":"Hola, "},"done":false}),
                json!({"model":"m","created_at":"t","message":{"role":"assistant","content":"mundo"},"done":true}),
            ]),
        );
        let whole = entry(
            Dialect::Ollama,
            Answer::Json(
                json!({"model":"m","created_at":"t","message":{"role":"assistant","content":"hola, mundo"},"done":true}),
            ),
        );
        assert!(answers_agree(&streamed, &whole, None).await);
    }

    #[tokio::test]
    async fn tool_calls_compare_by_name_and_arguments_not_ids_or_spacing() {
        let a = openai_call("weather", r#"{"city":"Paris","days":3}"#, "call_1");
        let b = openai_call("weather", r#"{ "days": 3, "city": "Paris" }"#, "call_2");
        let c = openai_call("weather", r#"{"city":"Rome","days":3}"#, "call_1");
        assert!(answers_agree(&a, &b, None).await);
        assert!(!answers_agree(&a, &c, None).await);
        assert!(!answers_agree(&a, &openai(""), None).await);
    }

    #[tokio::test]
    async fn an_unreadable_answer_never_agrees() {
        // An Ollama-shaped body recorded as an OpenAI answer: the dialect reads nothing in it.
        let odd = entry(
            Dialect::OpenAi,
            Answer::Json(json!({"message":{"role":"assistant","content":"Paris"},"done":true})),
        );
        assert!(!answers_agree(&odd, &odd.clone(), None).await);
        assert!(answers_agree(&openai("Paris"), &openai("Paris"), None).await);
    }
}
