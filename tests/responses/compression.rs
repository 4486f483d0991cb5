//! A long Responses item list is condensed before it reaches the upstream, and what arrives is
//! still a valid input: every function call output follows its call, every call keeps the
//! reasoning item it came with, no two message items in a row have the same role (strict chat
//! templates reject that), the input opens with a user message, the latest question stays last.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::world::{PATH, World, output_text};

const LAST: &str = "So what should I fix first?";

/// An agent's history: per turn a long question, a reasoning item, two parallel function calls,
/// their long outputs and a long answer; then the latest question.
fn agent_history(turns: usize) -> Vec<Value> {
    let mut items = Vec::new();
    for i in 0..turns {
        let filler = |what: &str| format!("{what} {i}: {}", "More context here. ".repeat(40));
        items.push(json!({"role": "user", "content": filler("Question")}));
        items.push(json!({"type": "reasoning", "id": format!("rs_{i}"), "summary": [], "encrypted_content": "gAAA"}));
        for side in ["a", "b"] {
            items.push(json!({"type": "function_call", "id": format!("fc_{i}{side}"), "call_id": format!("call_{i}{side}"),
                "name": "read_file", "arguments": format!("{{\"path\":\"src/module_{i}{side}.rs\"}}"), "status": "completed"}));
        }
        for side in ["a", "b"] {
            items.push(json!({"type": "function_call_output", "call_id": format!("call_{i}{side}"), "output": filler("Output")}));
        }
        items.push(json!({"type": "message", "role": "assistant", "id": format!("msg_{i}"), "status": "completed",
            "content": [{"type": "output_text", "text": filler("Answer"), "annotations": []}]}));
    }
    items.push(json!({"role": "user", "content": LAST}));
    items
}

/// A plain chat: long user and assistant messages taking turns, then the latest question.
fn chat_history(turns: usize) -> Vec<Value> {
    let mut items = Vec::new();
    for i in 0..turns {
        let filler = |what: &str| format!("{what} {i}: {}", "Some more chat here. ".repeat(30));
        items.push(json!({"role": "user", "content": filler("Question")}));
        items.push(json!({"type": "message", "role": "assistant", "id": format!("msg_{i}"), "status": "completed",
            "content": [{"type": "output_text", "text": filler("Answer"), "annotations": []}]}));
    }
    items.push(json!({"role": "user", "content": LAST}));
    items
}

fn body(items: Vec<Value>) -> Value {
    json!({"model": "gpt-4o-mini", "instructions": "Be terse.", "input": items,
           "tools": [{"type": "function", "name": "read_file", "parameters": {"type": "object"}}]})
}

/// The role of a message item (`{"role", "content"}`, with or without `"type": "message"`).
fn message_role(item: &Value) -> Option<&str> {
    match item["type"].as_str() {
        None | Some("message") => item["role"].as_str(),
        Some(_) => None,
    }
}

/// The problems of an item list as the upstream reads it.
fn invalid(items: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    if items.first().and_then(message_role) != Some("user") {
        problems.push("the input does not open with a user message".to_owned());
    }
    for (at, pair) in items.windows(2).enumerate() {
        if let (Some(a), Some(b)) = (message_role(&pair[0]), message_role(&pair[1])) {
            if a == b {
                problems.push(format!(
                    "items {at} and {}: two {a} messages in a row",
                    at + 1
                ));
            }
        }
    }
    let mut calls = HashSet::new();
    let mut reasoning = HashSet::new();
    for (at, item) in items.iter().enumerate() {
        match item["type"].as_str() {
            Some("reasoning") => {
                reasoning.insert(item["id"].as_str().unwrap_or_default().to_owned());
            }
            Some("function_call") => {
                let call = item["call_id"].as_str().unwrap_or_default();
                calls.insert(call.to_owned());
                let turn = call
                    .trim_start_matches("call_")
                    .trim_end_matches(['a', 'b']);
                if !reasoning.contains(&format!("rs_{turn}")) {
                    problems.push(format!("item {at}: {call} without its reasoning item"));
                }
            }
            Some("function_call_output") => {
                let call = item["call_id"].as_str().unwrap_or_default();
                if !calls.contains(call) {
                    problems.push(format!("item {at}: an orphaned output of {call}"));
                }
            }
            _ => {}
        }
    }
    let answered: HashSet<&str> = items
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .filter_map(|i| i["call_id"].as_str())
        .collect();
    for call in &calls {
        if !answered.contains(call.as_str()) {
            problems.push(format!("{call} has no output"));
        }
    }
    if items.last().map(|i| &i["content"]) != Some(&json!(LAST)) {
        problems.push("the latest question is not last".to_owned());
    }
    problems
}

/// The JSON body of the last call the upstream got.
fn forwarded(world: &World) -> Value {
    world
        .fake
        .last_request()
        .and_then(|r| r.json())
        .expect("the upstream got JSON")
}

/// A world whose budget a dozen agent turns exceed.
async fn compressing_world() -> World {
    compressing_world_keeping(4).await
}

/// A world whose budget a dozen agent turns exceed, keeping the last `recent` messages.
async fn compressing_world_keeping(recent: usize) -> World {
    World::with(|raw| {
        raw.compression.max_context_tokens = 2_000;
        raw.compression.preserve_recent_messages = recent;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_item_list_reaches_the_upstream_condensed_and_valid() {
    let world = compressing_world().await;
    let items = agent_history(12);
    assert!(invalid(&items).is_empty(), "the fixture is valid");
    let reply = world.create(&body(items.clone())).await;
    reply.assert_ok("a long history");
    let header = reply
        .header("x-thrifty-compression")
        .unwrap_or_else(|| panic!("not compressed: {}", reply.describe()));
    // `before->after; ...`: the prompt's tokens as sent and as forwarded.
    let counts: Vec<u64> = header
        .split(['-', '>', ';'])
        .take(3)
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    assert!(
        matches!(counts[..], [before, after] if after < before / 2),
        "{header}"
    );
    assert_eq!(output_text(&reply.json()), format!("Echo: {LAST}"));

    let sent = forwarded(&world);
    let sent_items = sent["input"].as_array().expect("an input list");
    assert!(sent_items.len() < items.len(), "items were condensed");
    let problems = invalid(sent_items);
    assert!(problems.is_empty(), "{problems:?} in {sent_items:?}");
    assert_eq!(sent["instructions"], "Be terse.");
    assert_eq!(sent["tools"], body(Vec::new())["tools"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_continuing_a_response_is_sent_as_the_client_wrote_it() {
    let world = compressing_world().await;
    let opening = world
        .create(&json!({"model": "gpt-4o-mini", "input": "Hi"}))
        .await;
    let mut continued = body(agent_history(12));
    continued["previous_response_id"] = opening.json()["id"].clone();
    let reply = world.create(&continued).await;
    reply.assert_ok("a continued long history");
    assert_eq!(reply.header("x-thrifty-compression"), None);
    let sent = world.fake.last_request().expect("a request");
    assert_eq!(sent.path_only(), PATH);
    assert_eq!(sent.json(), Some(continued), "the client's call, unchanged");
}

/// Wherever the condensed part goes, the item list the upstream gets alternates roles: with 4
/// recent messages the first kept turn is the assistant's (the condensed part is a user message
/// before it); with 3 a plain chat's first kept turn is a user's (the condensed part is a
/// section of `instructions`, or without them a user message the assistant acknowledges).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_condensed_part_never_puts_two_messages_of_one_role_in_a_row() {
    let mut placements = HashSet::new();
    for recent in [4, 3] {
        let world = compressing_world_keeping(recent).await;
        for (history, items) in [("agent", agent_history(12)), ("chat", chat_history(30))] {
            assert!(invalid(&items).is_empty(), "the {history} fixture is valid");
            for instructions in [true, false] {
                let case =
                    format!("{history} history, {recent} recent, instructions {instructions}");
                let mut call = body(items.clone());
                if !instructions {
                    call.as_object_mut().map(|o| o.shift_remove("instructions"));
                }
                let reply = world.create(&call).await;
                reply.assert_ok(&case);
                assert!(
                    reply.header("x-thrifty-compression").is_some(),
                    "{case}: not compressed: {}",
                    reply.describe()
                );
                let sent = forwarded(&world);
                let sent_items = sent["input"].as_array().expect("an input list");
                assert!(
                    sent_items.len() < items.len(),
                    "{case}: items were condensed"
                );
                let problems = invalid(sent_items);
                assert!(
                    problems.is_empty(),
                    "{case}: {problems:?} in {sent_items:?}"
                );

                let in_instructions = sent["instructions"]
                    .as_str()
                    .is_some_and(|text| text.contains("[thrifty:"));
                assert_eq!(
                    sent["instructions"]
                        .as_str()
                        .map(|t| t.starts_with("Be terse.")),
                    instructions.then_some(true),
                    "{case}: the client's instructions lead"
                );
                let acknowledged = sent_items.get(1).and_then(message_role) == Some("assistant")
                    && sent_items[1].to_string().contains("Noted.");
                placements.insert(match (in_instructions, acknowledged) {
                    (true, _) => "section of the instructions",
                    (false, true) => "user message and acknowledgement",
                    (false, false) => "user message",
                });
            }
        }
    }
    assert_eq!(
        placements.len(),
        3,
        "every placement was tried: {placements:?}"
    );
}
