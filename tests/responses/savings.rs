//! The savings ledger's records of Responses calls: the usage the upstream reported
//! (`input_tokens`, its `cached_tokens`, `output_tokens` with reasoning), exactly, and the
//! endpoint in the report.

use serde_json::{Value, json};

use crate::common::client::ADMIN_TOKEN;
use crate::world::{World, completed, events};

/// `(prompt, cached, completion)` of a response's usage.
fn usage(response: &Value) -> (u64, u64, u64) {
    let u = &response["usage"];
    let n = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("no usage figure in {u}"))
    };
    (
        n(&u["input_tokens"]),
        n(&u["input_tokens_details"]["cached_tokens"]),
        n(&u["output_tokens"]),
    )
}

fn tokens(figures: &Value) -> (u64, u64, u64) {
    let n = |field: &str| figures[field].as_u64().unwrap_or_default();
    (n("prompt"), n("cached_prompt"), n("completion"))
}

fn add(a: (u64, u64, u64), b: (u64, u64, u64)) -> (u64, u64, u64) {
    (a.0 + b.0, a.1 + b.1, a.2 + b.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_bills_what_the_upstream_reported_under_the_responses_endpoint() {
    let world = World::start().await;
    let cached_reasoning = json!({
        "model": "gpt-4o-mini",
        "instructions": "Answer in one line.",
        "input": [{"role": "user", "content": "Why is the sky blue?"}],
        "prompt_cache_key": "sky",
        "reasoning": {"effort": "low"}
    });
    let first = world.create(&cached_reasoning).await;
    first.assert_cache("miss", "JSON miss");
    let json_usage = usage(&first.json());
    assert!(json_usage.1 > 0, "the fake reports cached input tokens");
    let hit = world.until_hit(&cached_reasoning).await;
    hit.assert_cache("hit", "JSON hit");
    let streamed = world
        .create(&json!({"model": "gpt-4o-mini", "input": "Stream it", "stream": true}))
        .await;
    streamed.assert_cache("miss", "stream miss");
    let stream_usage = usage(&completed(&events(&streamed)));
    let chat = world
        .api
        .send(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    chat.assert_cache("miss", "a chat call");

    // Three Responses calls that reached the end of their answer, and the chat call.
    let report = world.savings("group_by=endpoint,outcome", 4).await;
    let rows = report["rows"].as_array().expect("rows");
    let row = |endpoint: &str, outcome: &str| {
        rows.iter()
            .find(|r| r["endpoint"] == endpoint && r["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {endpoint}/{outcome} row in {report}"))
    };
    let misses = row("responses", "miss");
    assert_eq!(misses["requests"], 2);
    let billed = add(json_usage, stream_usage);
    assert_eq!(tokens(&misses["tokens"]["actual"]), billed);
    assert_eq!(tokens(&misses["tokens"]["baseline"]), billed);
    assert_eq!(
        misses["estimated_requests"], 0,
        "usage came from the upstream"
    );
    let hits = row("responses", "exact_hit");
    assert_eq!(hits["requests"], 1);
    assert_eq!(tokens(&hits["tokens"]["baseline"]), json_usage);
    assert_eq!(tokens(&hits["tokens"]["actual"]), (0, 0, 0));
    assert_eq!(row("chat", "miss")["requests"], 1);
    assert_eq!(
        hit.header("x-thrifty-tokens-saved"),
        Some((json_usage.0 + json_usage.2).to_string().as_str())
    );

    let dashboard = world
        .thrifty
        .admin_text(reqwest::Method::GET, "/dashboard", ADMIN_TOKEN)
        .await;
    let by_endpoint = dashboard
        .split("By endpoint")
        .nth(1)
        .unwrap_or_else(|| panic!("the dashboard has no endpoint breakdown"));
    assert!(by_endpoint.contains(">responses<"), "{by_endpoint}");
}
