//! `GET /admin/compression/stats` over HTTP: it counts what the `x-thrifty-compression`
//! response header reported, and nothing for a request the client exempted.

use rstest::rstest;
use serde_json::{Value, json};

use super::common::dialect::Dialect;
use super::common::fake_llm::FakeLlm;
use super::common::thrifty::{Thrifty, config_for};
use super::long_conversation;

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
        .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
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
    assert_eq!(counted["mode"], "relevant", "{what}");
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

#[rstest]
#[tokio::test]
async fn compression_stats_match_the_response_header_and_skip_exempted_requests(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    stats_match_the_header(dialect).await;
}

/// A chat between two people with no system prompt: one early message holds a fact, the
/// last user message asks about it. About 60 tokens per message.
fn chat_with_a_fact(dialect: Dialect, turns: usize) -> Value {
    let mut messages = Vec::new();
    for i in 0..turns {
        let user = if i == 3 {
            "Big news: my sister Marisol adopted a greyhound named Biscuit last March.".to_owned()
        } else {
            format!(
                "Week {i}: the garden needed watering again and the tomatoes are slowly turning red, so I spent the evening outside reading."
            )
        };
        messages.push(json!({"role": "user", "content": user}));
        messages.push(json!({"role": "assistant", "content": format!("Reply {i}: that sounds like a calm evening; the weather this week was warm and the neighbours were out walking their dogs.")}));
    }
    messages.push(
        json!({"role": "user", "content": "What is the name of the greyhound my sister adopted?"}),
    );
    let mut body = json!({"model": "gpt-4o-mini", "messages": messages});
    if dialect == Dialect::Ollama {
        body["stream"] = json!(false);
    }
    body
}

/// The roles of what reached the upstream never repeat (user after user, assistant after
/// assistant) and the conversation opens with a user turn after the instructions.
fn assert_roles_alternate(dialect: Dialect, messages: &[Value]) {
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap_or("?"))
        .collect();
    let talk: Vec<&str> = roles
        .iter()
        .copied()
        .filter(|r| *r != "system" && *r != "developer")
        .collect();
    assert_eq!(talk.first(), Some(&"user"), "{dialect:?}: {roles:?}");
    for pair in talk.windows(2) {
        assert!(
            pair[0] != pair[1] || pair[0] == "tool",
            "{dialect:?}: two {} messages in a row: {roles:?}",
            pair[0]
        );
    }
}

async fn relevant_chat_reaches_the_upstream_valid(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.compression.max_context_tokens = 1_500;
    raw.compression.preserve_recent_messages = 4;
    let thrifty = Thrifty::start(raw).await;
    let body = chat_with_a_fact(dialect, 100);
    let response = post(&thrifty, dialect, &body, None).await;
    assert_eq!(response.status(), 200, "{dialect:?}");
    let (before, after) = reported(&response);
    assert!(
        before > 4_000 && after <= 1_500,
        "{dialect:?}: {before}->{after}"
    );

    let sent = fake
        .last_request()
        .and_then(|r| r.json())
        .expect("upstream got json");
    let upstream = sent["messages"].as_array().expect("messages");
    let client = body["messages"].as_array().expect("messages");
    assert_roles_alternate(dialect, upstream);
    assert_eq!(
        upstream[upstream.len() - 4..],
        client[client.len() - 4..],
        "{dialect:?}: the last messages, the question among them, are forwarded verbatim"
    );
    let text = serde_json::to_string(upstream).expect("serializes");
    assert!(
        text.contains("greyhound named Biscuit"),
        "{dialect:?}: the message the question needs is kept: {text}"
    );
    assert!(text.contains("[thrifty:"), "{dialect:?}");
}

#[rstest]
#[tokio::test]
async fn a_relevant_condensed_chat_keeps_what_the_question_needs_and_alternates_roles(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    relevant_chat_reaches_the_upstream_valid(dialect).await;
}

async fn stable_chat_with_a_system_prompt(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.compression.max_context_tokens = 1_500;
    raw.compression.preserve_recent_messages = 4;
    raw.compression.mode = "stable".to_owned();
    let thrifty = Thrifty::start(raw).await;
    let mut body = chat_with_a_fact(dialect, 100);
    let system = json!({"role": "system", "content": "You are a friendly companion."});
    body["messages"]
        .as_array_mut()
        .expect("messages")
        .insert(0, system.clone());
    let response = post(&thrifty, dialect, &body, None).await;
    assert_eq!(response.status(), 200, "{dialect:?}");
    let (_, after) = reported(&response);
    assert!(after <= 1_500, "{dialect:?}: {after}");
    let sent = fake
        .last_request()
        .and_then(|r| r.json())
        .expect("upstream got json");
    let upstream = sent["messages"].as_array().expect("messages");
    assert_roles_alternate(dialect, upstream);
    assert_eq!(upstream[0]["role"], "system", "{dialect:?}");
    let first = upstream[0]["content"].as_str().expect("text");
    assert!(
        first.starts_with("You are a friendly companion.\n\n[thrifty:"),
        "{dialect:?}: the condensed turns are a section after the client's own system prompt: {first}"
    );
    let client = body["messages"].as_array().expect("messages");
    assert_eq!(upstream[upstream.len() - 4..], client[client.len() - 4..]);
}

#[rstest]
#[tokio::test]
async fn with_a_system_prompt_the_condensed_turns_become_its_section(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    stable_chat_with_a_system_prompt(dialect).await;
}

/// An agent loop: a task, then tool calls and their results, in the dialect's shape.
fn agent_loop(dialect: Dialect, steps: usize) -> Value {
    let mut messages =
        vec![json!({"role": "user", "content": "Find why the build fails and fix it."})];
    for i in 0..steps {
        let output = format!("line {i}: compiling module {i} of the workspace, warnings follow. ")
            .repeat(12);
        match dialect {
            Dialect::OpenAi => {
                messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": format!("call_{i}"), "type": "function", "function": {"name": "bash", "arguments": format!("{{\"command\":\"cargo build -p crate_{i}\"}}")}}
                ]}));
                messages.push(
                    json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": output}),
                );
            }
            Dialect::Ollama => {
                messages.push(json!({"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "bash", "arguments": {"command": format!("cargo build -p crate_{i}")}}}
                ]}));
                messages.push(json!({"role": "tool", "tool_name": "bash", "content": output}));
            }
        }
    }
    let mut body = json!({"model": "gpt-4o-mini", "messages": messages});
    if dialect == Dialect::Ollama {
        body["stream"] = json!(false);
    }
    body
}

async fn agent_loop_keeps_tool_groups(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.compression.max_context_tokens = 2_000;
    raw.compression.preserve_recent_messages = 3;
    let thrifty = Thrifty::start(raw).await;
    let body = agent_loop(dialect, 30);
    let response = post(&thrifty, dialect, &body, None).await;
    assert_eq!(response.status(), 200, "{dialect:?}");
    let (before, after) = reported(&response);
    assert!(
        after <= 2_000 && after < before,
        "{dialect:?}: {before}->{after}"
    );
    let sent = fake
        .last_request()
        .and_then(|r| r.json())
        .expect("upstream got json");
    let upstream = sent["messages"].as_array().expect("messages");
    let client = body["messages"].as_array().expect("messages");
    assert_roles_alternate(dialect, upstream);
    assert!(
        upstream.contains(&client[0]),
        "{dialect:?}: the task is the latest user message and is kept verbatim"
    );
    // A window of 3 starts inside the last call's group: it widens to the call.
    assert_eq!(
        upstream[upstream.len() - 4..],
        client[client.len() - 4..],
        "{dialect:?}"
    );
    for (i, m) in upstream.iter().enumerate() {
        if m["role"] == "tool" {
            assert!(
                upstream[i - 1]["tool_calls"].is_array(),
                "{dialect:?}: tool result {i} follows its call"
            );
        }
        if m["tool_calls"].is_array() {
            assert_eq!(
                upstream[i + 1]["role"],
                "tool",
                "{dialect:?}: call {i} has its result"
            );
        }
    }
}

#[rstest]
#[tokio::test]
async fn an_agent_loop_keeps_its_task_and_tool_groups_and_alternates_roles(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    agent_loop_keeps_tool_groups(dialect).await;
}
