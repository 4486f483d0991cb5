//! An upstream that answers `context_length_exceeded` gets one retry, compressed harder.

use serde_json::{Value, json};

use super::common::fake_llm::FakeLlm;
use super::common::thrifty::{Thrifty, config_for};
use super::{long_conversation, report};

async fn post(thrifty: &Thrifty, body: &Value, compression: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", thrifty.url()))
        .header("x-thrifty-cache", "off")
        .json(body);
    if let Some(value) = compression {
        request = request.header("x-thrifty-compression", value);
    }
    request.send().await.expect("sent")
}

fn with_model(mut body: Value, model: &str) -> Value {
    body["model"] = json!(model);
    body
}

#[tokio::test]
async fn a_prompt_over_the_window_is_retried_once_compressed_harder() {
    let fake = FakeLlm::start().await;
    let thrifty =
        Thrifty::start_with_env(config_for(&fake), &[("THRIFTY_ADMIN_TOKEN", "adm")]).await;
    // Under thrifty's budget (35000), over the upstream's window of 2000 fake tokens.
    let body = with_model(long_conversation(20), "window-2000");
    let response = post(&thrifty, &body, None).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("x-thrifty-compression").is_some(),
        "the retry was compressed"
    );
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Echo: So what should I fix first?"
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "the first attempt and one retry");
    let first = requests[0].json().expect("json");
    let second = requests[1].json().expect("json");
    assert_eq!(
        first["messages"], body["messages"],
        "first sent as the client sent it"
    );
    let sent = second["messages"].as_array().expect("messages");
    let original = body["messages"].as_array().expect("messages");
    assert!(sent.len() < original.len());
    assert_eq!(sent[0], original[0], "the system message stays first");
    assert_eq!(
        sent.last(),
        original.last(),
        "the latest user message is kept"
    );

    let total = report(&thrifty, 1).await;
    assert_eq!(total["requests"], 1, "{total:#}");
    let billed_prompt = answer["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert_eq!(
        total["tokens"]["actual"]["prompt"], billed_prompt,
        "{total:#}"
    );
    assert!(
        total["tokens"]["baseline"]["prompt"]
            .as_u64()
            .expect("baseline")
            > billed_prompt,
        "{total:#}"
    );
}

#[tokio::test]
async fn an_upstream_that_still_refuses_returns_its_own_error_after_one_retry() {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let body = with_model(long_conversation(12), "context-overflow");
    let response = post(&thrifty, &body, None).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "context_length_exceeded");
    assert_eq!(fake.calls(), 2, "one retry, never more");

    fake.reset();
    let response = post(&thrifty, &body, Some("off")).await;
    assert_eq!(response.status(), 400);
    assert_eq!(fake.calls(), 1, "compression off: no retry");

    fake.reset();
    let other = with_model(long_conversation(12), "fail-400");
    let response = post(&thrifty, &other, None).await;
    assert_eq!(response.status(), 400);
    assert_eq!(fake.calls(), 1, "other errors are not retried");
}

#[tokio::test]
async fn ollama_context_errors_are_retried_too() {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let mut body = with_model(long_conversation(20), "window-2000");
    body["stream"] = json!(false);
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", thrifty.url()))
        .header("x-thrifty-cache", "off")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer["message"]["content"],
        "Echo: So what should I fix first?"
    );
    assert_eq!(fake.calls(), 2);
}
