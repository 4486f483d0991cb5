//! Streams are billed from the upstream's own counts: thrifty asks for the usage chunk and
//! hands the client the stream it asked for.

use serde_json::{Value, json};

use super::common::fake_llm::FakeLlm;
use super::common::thrifty::{Thrifty, config_for};
use super::{report, words};

fn stream_body(text: &str, options: Option<Value>) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": text},
        ],
    });
    if let Some(options) = options {
        body["stream_options"] = options;
    }
    body
}

/// The fake's billing rule: words of every message plus 3 per message; the answer's words.
fn billed(text: &str) -> (u64, u64) {
    let prompt = words("Answer briefly.") + 3 + words(text) + 3;
    let completion = words(&format!("Echo: {text}"));
    (prompt, completion)
}

async fn post(thrifty: &Thrifty, body: &Value) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", thrifty.url()))
        .header("x-thrifty-cache", "off")
        .json(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    response.text().await.expect("stream")
}

fn data_lines(stream: &str) -> Vec<&str> {
    stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

#[tokio::test]
async fn a_stream_without_usage_is_billed_exactly_and_reaches_the_client_without_it() {
    let fake = FakeLlm::start().await;
    let thrifty =
        Thrifty::start_with_env(config_for(&fake), &[("THRIFTY_ADMIN_TOKEN", "adm")]).await;
    let text = "name three rivers of Europe";
    let stream = post(&thrifty, &stream_body(text, Some(json!({"x": 1})))).await;

    let sent = fake.last_request().and_then(|r| r.json()).expect("json");
    assert_eq!(
        sent["stream_options"],
        json!({"x": 1, "include_usage": true}),
        "thrifty asked the upstream for usage, keeping the client's other options"
    );
    assert!(
        !stream.contains("usage"),
        "the client did not ask: {stream}"
    );
    let lines = data_lines(&stream);
    assert_eq!(lines.last(), Some(&"[DONE]"));
    let content: String = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, format!("Echo: {text}"));

    let (prompt, completion) = billed(text);
    let total = report(&thrifty, 1).await;
    assert_eq!(total["requests"], 1, "{total:#}");
    assert_eq!(total["estimated_requests"], 0, "{total:#}");
    assert_eq!(total["tokens"]["actual"]["prompt"], prompt, "{total:#}");
    assert_eq!(
        total["tokens"]["actual"]["completion"], completion,
        "{total:#}"
    );
    let upstream_ms = total["avg_upstream_ms"]
        .as_f64()
        .expect("upstream time recorded");
    let latency_ms = total["avg_latency_ms"].as_f64().expect("latency recorded");
    assert!(upstream_ms > 0.0 && upstream_ms <= latency_ms, "{total:#}");
}

#[tokio::test]
async fn a_client_that_asked_for_usage_gets_the_upstreams_usage_chunk_untouched() {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let text = "how tall is the Eiffel tower";
    let body = stream_body(text, Some(json!({"include_usage": true})));
    let through = post(&thrifty, &body).await;
    let sent = fake.last_request().expect("request");
    assert_eq!(
        sent.json().expect("json")["stream_options"],
        body["stream_options"]
    );
    let lines = data_lines(&through);
    let usage: Value = lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|c| c["usage"].is_object())
        .expect("the usage chunk");
    let (prompt, completion) = billed(text);
    assert_eq!(usage["usage"]["prompt_tokens"], prompt);
    assert_eq!(usage["usage"]["completion_tokens"], completion);
    assert_eq!(usage["choices"], json!([]));
    assert!(
        lines[..lines.len() - 2]
            .iter()
            .all(|l| l.contains("\"usage\":null")),
        "every content chunk keeps its usage: null: {through}"
    );
}

#[tokio::test]
async fn turned_off_thrifty_forwards_streams_as_sent_and_counts_with_its_tokenizer() {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.savings.stream_usage = false;
    let thrifty = Thrifty::start_with_env(raw, &[("THRIFTY_ADMIN_TOKEN", "adm")]).await;
    let text = "spell the word banana backwards";
    let body = stream_body(text, None);
    let stream = post(&thrifty, &body).await;
    let sent = fake.last_request().and_then(|r| r.json()).expect("json");
    assert_eq!(sent, body, "forwarded as sent");
    assert!(!stream.contains("usage"));

    let total = report(&thrifty, 1).await;
    assert_eq!(total["requests"], 1, "{total:#}");
    assert_eq!(
        total["estimated_requests"], 1,
        "no usage reached thrifty, so it counted: {total:#}"
    );
    let prompt = total["tokens"]["actual"]["prompt"]
        .as_u64()
        .expect("prompt");
    let completion = total["tokens"]["actual"]["completion"]
        .as_u64()
        .expect("completion");
    // cl100k_base: the system and user messages with their framing, then "Echo: " + text.
    assert!((15..=30).contains(&prompt), "prompt {prompt}: {total:#}");
    assert!(
        (7..=12).contains(&completion),
        "completion {completion}: {total:#}"
    );
}
