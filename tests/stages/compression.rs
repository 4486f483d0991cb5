//! `GET /admin/compression/stats` over HTTP: it counts what the `x-thrifty-compression`
//! response header reported, and nothing for a request the client exempted.

use serde_json::{Value, json};

use super::common::client::{DIALECTS, Dialect};
use super::common::fake_llm::FakeLlm;
use super::common::thrifty::{Thrifty, config_for};
use super::long_conversation;

fn chat_path(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::OpenAi => "/v1/chat/completions",
        Dialect::Ollama => "/api/chat",
    }
}

/// The long conversation in the dialect's request shape.
fn conversation(dialect: Dialect) -> Value {
    let mut body = long_conversation(30);
    if dialect == Dialect::Ollama {
        body["stream"] = json!(false);
    }
    body
}

async fn post(
    thrifty: &Thrifty,
    dialect: Dialect,
    body: &Value,
    compression: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}{}", thrifty.url(), chat_path(dialect)))
        .header("x-thrifty-cache", "off")
        .json(body);
    if let Some(value) = compression {
        request = request.header("x-thrifty-compression", value);
    }
    request.send().await.expect("sent")
}

/// The prompt tokens before and after from `x-thrifty-compression: B->A[; budget-not-met]`.
fn reported(response: &reqwest::Response) -> (u64, u64) {
    let header = response
        .headers()
        .get("x-thrifty-compression")
        .and_then(|v| v.to_str().ok())
        .expect("x-thrifty-compression says what happened");
    let (before, after) = header.split_once("->").expect("before->after");
    let after = after.split(';').next().unwrap_or_default();
    let number = |n: &str| n.trim().parse::<u64>().expect(header);
    (number(before), number(after))
}

async fn stats(thrifty: &Thrifty) -> Value {
    thrifty
        .admin(reqwest::Method::GET, "/admin/compression/stats", "adm")
        .await
}

async fn stats_match_the_header(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.compression.max_context_tokens = 2_000;
    raw.compression.preserve_recent_messages = 4;
    let thrifty = Thrifty::start_with_env(raw, &[("THRIFTY_ADMIN_TOKEN", "adm")]).await;
    let idle = stats(&thrifty).await;
    assert_eq!(idle["requests_compressed"], 0, "{dialect:?}: {idle:#}");

    let body = conversation(dialect);
    let response = post(&thrifty, dialect, &body, None).await;
    assert_eq!(response.status(), 200, "{dialect:?}");
    let (before, after) = reported(&response);
    assert!(after < before, "{dialect:?}: {before}->{after}");

    let counted = stats(&thrifty).await;
    let what = format!("{dialect:?}: {counted:#}");
    assert_eq!(counted["enabled"], true, "{what}");
    assert_eq!(counted["strategy"], "extractive", "{what}");
    assert_eq!(counted["requests_compressed"], 1, "{what}");
    assert_eq!(counted["tokens_before"], before, "{what}");
    assert_eq!(counted["tokens_after"], after, "{what}");
    assert_eq!(counted["tokens_saved"], before - after, "{what}");
    let ratio = counted["ratio"].as_f64().expect("ratio is a number");
    assert!(
        (ratio - after as f64 / before as f64).abs() < 1e-9,
        "{what}"
    );
    assert!(
        counted["messages_condensed"].as_u64().unwrap_or(0) > 0,
        "{what}"
    );

    // Exempted: forwarded as sent, and not counted.
    let response = post(&thrifty, dialect, &body, Some("off")).await;
    assert_eq!(response.status(), 200, "{dialect:?}");
    assert!(
        response.headers().get("x-thrifty-compression").is_none(),
        "{dialect:?}: off reports no compression"
    );
    let sent = fake
        .last_request()
        .and_then(|r| r.json())
        .expect("upstream got json");
    assert_eq!(
        sent["messages"], body["messages"],
        "{dialect:?}: forwarded whole"
    );
    let after_off = stats(&thrifty).await;
    let what = format!("{dialect:?}: {after_off:#}");
    assert_eq!(after_off["requests_compressed"], 1, "{what}");
    assert_eq!(after_off["tokens_before"], before, "{what}");
    assert_eq!(after_off["tokens_after"], after, "{what}");
    assert_eq!(
        fake.calls(),
        2,
        "{dialect:?}: both requests reached the upstream"
    );
}

#[tokio::test]
async fn compression_stats_match_the_response_header_and_skip_exempted_requests() {
    for dialect in DIALECTS {
        stats_match_the_header(dialect).await;
    }
}
