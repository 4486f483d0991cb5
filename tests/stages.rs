//! Compression and the savings ledger, end to end through the real server.
//!
//! - `compression`: `/admin/compression/stats` against the response header; `off` is untouched.
//! - `failures`: unreachable upstreams, upstream errors and refusals in the ledger and metrics.
//! - `long_input`: a 30 MB message costs bounded work.
//! - `recovery`: the retry after `context_length_exceeded`.
//! - `summarize`: the summarize strategy through thrifty's own routing.
//! - `usage`: streams billed from the upstream's usage chunk, stripped for clients that did
//!   not ask for it; the tokenizer's estimate when there is none.

mod common;

#[path = "stages/compression.rs"]
mod compression;
#[path = "stages/failures.rs"]
mod failures;
#[path = "stages/long_input.rs"]
mod long_input;
#[path = "stages/recovery.rs"]
mod recovery;
#[path = "stages/summarize.rs"]
mod summarize;
#[path = "stages/usage.rs"]
mod usage;

use common::fake_llm::FakeLlm;
use common::thrifty::{Thrifty, config_for};
use serde_json::{Value, json};

/// Whitespace-separated words, as the fake upstream counts tokens.
fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The savings report's totals once it holds `requests` records (the thrifty must run
/// with admin token `adm`).
async fn report(thrifty: &Thrifty, requests: u64) -> Value {
    thrifty.savings("format=json", "adm", requests).await["total"].clone()
}

fn long_conversation(turns: usize) -> Value {
    let mut messages = vec![json!({"role": "system", "content": "You are a terse assistant."})];
    for i in 0..turns {
        messages.push(json!({"role": "user", "content": format!("Question {i}: please explain the file src/module_{i}.rs and why build step {i} failed with error E{i:04}. {}", "More context here. ".repeat(40))}));
        messages.push(json!({"role": "assistant", "content": format!("Answer {i}: the failure came from a missing import. {}", "Details follow. ".repeat(40))}));
    }
    messages.push(json!({"role": "user", "content": "So what should I fix first?"}));
    json!({"model": "gpt-4o-mini", "messages": messages})
}

#[tokio::test]
async fn a_long_conversation_is_compressed_before_it_reaches_the_upstream() {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.compression.max_context_tokens = 2_000;
    raw.compression.preserve_recent_messages = 4;
    let thrifty = Thrifty::start(raw).await;
    let client = reqwest::Client::new();
    let body = long_conversation(30);
    let response = client
        .post(format!("{}/v1/chat/completions", thrifty.url()))
        .header("x-thrifty-cache", "off")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let header = response
        .headers()
        .get("x-thrifty-compression")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("x-thrifty-compression says what happened");
    let (before, after) = header.split_once("->").expect("before->after");
    let before: u64 = before.parse().expect("a number");
    let after: u64 = after
        .split(';')
        .next()
        .and_then(|a| a.trim().parse().ok())
        .expect("a number");
    assert!(after < before / 2, "{header}");
    let saved = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        saved("x-thrifty-tokens-saved"),
        Some((before - after).to_string())
    );
    // gpt-4o-mini input costs $0.15 per million tokens in the shipped price table.
    let cost: f64 = saved("x-thrifty-cost-saved")
        .and_then(|c| c.parse().ok())
        .expect("x-thrifty-cost-saved is a decimal");
    let expected = (before - after) as f64 * 0.15 / 1e6;
    assert!((cost - expected).abs() < 1e-9, "{cost} vs {expected}");
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Echo: So what should I fix first?"
    );

    let sent = fake
        .last_request()
        .and_then(|r| r.json())
        .expect("upstream got json");
    let upstream_messages = sent["messages"].as_array().expect("messages");
    let client_messages = body["messages"].as_array().expect("messages");
    assert!(upstream_messages.len() < client_messages.len());
    assert_eq!(
        upstream_messages[0], client_messages[0],
        "system message verbatim, first"
    );
    let n = upstream_messages.len();
    assert_eq!(
        upstream_messages[n - 4..],
        client_messages[client_messages.len() - 4..],
        "the last messages are forwarded verbatim"
    );

    let off = client
        .post(format!("{}/v1/chat/completions", thrifty.url()))
        .header("x-thrifty-cache", "off")
        .header("x-thrifty-compression", "off")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert!(off.headers().get("x-thrifty-compression").is_none());
    let sent = fake
        .last_request()
        .and_then(|r| r.json())
        .expect("upstream got json");
    assert_eq!(
        sent["messages"], body["messages"],
        "off forwards the conversation as sent"
    );
}

#[tokio::test]
async fn the_savings_report_counts_a_miss_and_a_hit() {
    let fake = FakeLlm::start().await;
    let thrifty =
        Thrifty::start_with_env(config_for(&fake), &[("THRIFTY_ADMIN_TOKEN", "adm")]).await;
    let client = reqwest::Client::new();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count my savings please"}]});
    let miss: Value = client
        .post(format!("{}/v1/chat/completions", thrifty.url()))
        .json(&body)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let usage = miss["usage"].clone();
    // The answer is stored just after its body ends; poll until the same call is a hit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let hit = loop {
        let response = client
            .post(format!("{}/v1/chat/completions", thrifty.url()))
            .json(&body)
            .send()
            .await
            .expect("sent");
        if response
            .headers()
            .get("x-thrifty-cache")
            .is_some_and(|v| v == "hit")
        {
            break response;
        }
        assert!(std::time::Instant::now() < deadline, "no hit within 5 s");
    };
    let prompt = usage["prompt_tokens"].as_u64().expect("prompt tokens");
    let completion = usage["completion_tokens"]
        .as_u64()
        .expect("completion tokens");
    assert_eq!(
        hit.headers()
            .get("x-thrifty-tokens-saved")
            .and_then(|v| v.to_str().ok()),
        Some((prompt + completion).to_string().as_str())
    );
    let calls = fake.calls();

    let report = thrifty
        .savings("group_by=outcome&format=json", "adm", 2)
        .await;
    let total = &report["total"];
    let billed = prompt + completion;
    assert_eq!(total["requests"], 2, "{report:#}");
    assert_eq!(
        total["tokens"]["baseline"]["total"],
        2 * billed,
        "both calls would have been billed"
    );
    assert_eq!(
        total["tokens"]["actual"]["total"], billed,
        "only the miss was billed"
    );
    assert_eq!(total["tokens"]["saved"], billed);
    assert_eq!(total["hit_rate"], 0.5);
    assert_eq!(total["cost"]["savings_pct"], "50.00");
    let csv = client
        .get(format!(
            "{}/admin/savings?group_by=outcome&format=csv",
            thrifty.url()
        ))
        .bearer_auth("adm")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(csv.lines().count() >= 2, "{csv}");
    // The audit log: each raw record, priced, without a word of the conversation.
    let audit = |format: &'static str| {
        let client = client.clone();
        let url = format!(
            "{}/admin/savings/audit?limit=10&format={format}",
            thrifty.url()
        );
        async move {
            let response = client
                .get(url)
                .bearer_auth("adm")
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 200);
            response.text().await.expect("text")
        }
    };
    let records: Value = serde_json::from_str(&audit("json").await).expect("json");
    let outcomes: Vec<&str> = records["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["outcome"].as_str().expect("an outcome"))
        .collect();
    assert_eq!(outcomes, ["miss", "exact_hit"], "{records:#}");
    assert_eq!(
        records["records"][1]["baseline"]["completion"], completion,
        "{records:#}"
    );
    let audit_csv = audit("csv").await;
    let lines: Vec<&str> = audit_csv.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two records: {audit_csv}");
    assert!(lines[0].starts_with("at_ms,day,tenant,"), "{audit_csv}");
    assert!(lines[2].contains(",exact_hit,200,"), "{audit_csv}");
    assert!(
        !audit_csv.contains("savings please"),
        "no prompt text in the log"
    );
    let refused = client
        .get(format!("{}/admin/savings/audit?limit=0", thrifty.url()))
        .bearer_auth("adm")
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 400);
    let metrics = client
        .get(format!("{}/metrics", thrifty.url()))
        .bearer_auth("adm")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("thrifty"), "{metrics}");
    let dashboard = client
        .get(format!("{}/dashboard", thrifty.url()))
        .bearer_auth("adm")
        .send()
        .await
        .expect("sent");
    assert_eq!(dashboard.status(), 200);
    assert_eq!(fake.calls(), calls, "reports never call the upstream");
}
