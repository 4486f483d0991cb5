use serde_json::{Value, json};

use super::events;

/// The events of a complete streamed body, as the recorder reads it; a `[DONE]` after
/// `response.completed`, which some compatible servers send, is no event.
fn parse_events(text: &str) -> Option<Vec<Value>> {
    crate::dialect::stream::parse(Dialect::OpenAi, Endpoint::Responses, text.as_bytes())
}
use super::*;
use crate::chat::{Dialect, Endpoint};
use crate::dialect;

fn decoded(body: &Value) -> ChatRequest {
    match dialect::decode(
        Dialect::OpenAi,
        Endpoint::Responses,
        body.to_string().as_bytes(),
    ) {
        Ok(Call::Responses(chat)) => chat,
        other => panic!("expected a Responses call, got {other:?}"),
    }
}

fn round_trip(body: &Value) -> Value {
    Value::Object(encode(&decoded(body)))
}

fn agent_history() -> Value {
    json!({
        "model": "gpt-5-mini",
        "instructions": "be brief",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather in Paris and Rome?"},
                                          {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Rome\"}", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Sunny in Paris, rain in Rome.", "annotations": []}]},
            {"type": "item_reference", "id": "ws_1"},
            {"role": "user", "content": "thanks"}
        ],
        "tools": [{"type": "function", "name": "weather", "parameters": {}}, {"type": "web_search"}],
        "tool_choice": "auto",
        "text": {"format": {"type": "text"}},
        "reasoning": {"effort": "low"},
        "max_output_tokens": 300,
        "store": false,
        "stream": true,
        "metadata": {"run": "1"},
        "user": "u-1"
    })
}

#[test]
fn every_item_survives_a_round_trip() {
    let body = agent_history();
    assert_eq!(round_trip(&body), body);
}

#[test]
fn items_decode_into_units_compression_keeps_whole() {
    let chat = decoded(&agent_history());
    let roles: Vec<&str> = chat.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(chat.messages[0].flat_text(), "be brief");
    assert!(chat.messages[0].extra.contains_key(INSTRUCTIONS));
    let chat = ChatRequest {
        messages: chat.messages[1..].to_vec(),
        ..chat
    };
    assert_eq!(
        roles[1..],
        [
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant",
            "item_reference",
            "user"
        ]
    );
    let calls = &chat.messages[1];
    assert_eq!(calls.tool_calls.len(), 2, "parallel calls are one unit");
    assert_eq!(calls.tool_calls[1].id.as_deref(), Some("call_2"));
    assert_eq!(calls.extra[ITEMS].as_array().map(Vec::len), Some(3));
    assert_eq!(chat.messages[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(
        chat.messages[4].flat_text(),
        "Sunny in Paris, rain in Rome."
    );
    assert!(chat.stream);
    assert_eq!(
        chat.incidental.keys().collect::<Vec<_>>(),
        ["stream", "metadata", "user"]
    );
    assert!(chat.shaping.contains_key("store"));
    assert!(!chat.shaping.contains_key("instructions"));
}

#[test]
fn a_string_input_is_one_user_message() {
    let chat = decoded(&json!({"model": "m", "input": "hello"}));
    assert_eq!(chat.messages, vec![Message::text(Role::User, "hello")]);
    assert_eq!(
        Value::Object(encode(&chat))["input"],
        json!([{"role": "user", "content": "hello"}])
    );
    let none = decoded(&json!({"model": "m", "previous_response_id": "resp_1"}));
    assert!(none.messages.is_empty());
    assert!(continues_upstream_state(&none));
    assert!(!continues_upstream_state(&chat));
    assert!(Value::Object(encode(&none)).get("input").is_none());
}

#[test]
fn a_condensed_tool_output_is_written_back_from_its_content() {
    let mut chat = decoded(&agent_history());
    chat.messages[3].content = Content::Text("sun…".to_owned());
    let sent = Value::Object(encode(&chat));
    assert_eq!(
        sent["input"][4],
        json!({"type": "function_call_output", "call_id": "call_1", "output": "sun…"})
    );
}

#[test]
fn a_stored_prompt_may_leave_out_the_model() {
    let body = json!({"prompt": {"id": "pmpt_1", "variables": {"city": "Paris"}}, "input": "go"});
    let chat = decoded(&body);
    assert_eq!(chat.model, "");
    let sent = Value::Object(encode(&chat));
    assert!(sent.get("model").is_none());
    assert_eq!(sent["prompt"], body["prompt"]);
}

#[test]
fn malformed_input_is_named() {
    for (body, param) in [
        (json!({"input": "hi"}), "model"),
        (json!({"model": "m", "input": 3}), "input"),
        (json!({"model": "m", "input": [3]}), "input[]"),
        (
            json!({"model": "m", "input": [{"content": "x"}]}),
            "input[].role",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}),
            "input[].call_id",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}),
            "input[].name",
        ),
        (
            json!({"model": "m", "input": "x", "stream": "yes"}),
            "stream",
        ),
    ] {
        let err = dialect::decode(
            Dialect::OpenAi,
            Endpoint::Responses,
            body.to_string().as_bytes(),
        )
        .expect_err("rejects");
        assert_eq!(err.param(), Some(param), "{body}");
    }
}

fn response() -> Value {
    json!({
        "id": "resp_1", "object": "response", "created_at": 1_700_000_000, "status": "completed",
        "model": "gpt-5-mini", "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Hi there", "annotations": [], "logprobs": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather",
             "arguments": "{\"city\":\"Paris\"}", "status": "completed"}
        ],
        "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4},
                  "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 21}
    })
}

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| String::from_utf8_lossy(&events::frame(e)).into_owned())
        .collect()
}

#[test]
fn a_response_splits_into_its_event_sequence_and_back() {
    let body = response();
    let split = events::split(&body);
    let kinds: Vec<&str> = split.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (n, event) in split.iter().enumerate() {
        assert_eq!(event["sequence_number"], n);
    }
    assert_eq!(split[0]["response"]["status"], "in_progress");
    assert_eq!(split[6]["delta"], "Hi there");
    let parsed = parse_events(&sse(&split)).expect("a completed stream");
    assert_eq!(parsed, split);
    let with_done = format!("{}data: [DONE]\n\n", sse(&split));
    assert_eq!(parse_events(&with_done), Some(split.clone()));
    assert_eq!(events::assemble(&parsed), body);
    assert!(events::is_complete(&body));
    assert!(events::has_usage(&parsed));
    let usage = events::usage(&body).expect("usage");
    assert_eq!(
        (usage.prompt, usage.cached_prompt, usage.completion),
        (12, 4, 9)
    );
    assert_eq!(events::usage(parsed.last().expect("last")), Some(usage));
}

#[test]
fn only_completed_streams_are_answers() {
    let mut split = events::split(&response());
    split.pop();
    assert!(
        parse_events(&sse(&split)).is_none(),
        "cut before completion"
    );
    let mut failed = split.clone();
    failed.push(json!({"type": "response.failed", "sequence_number": 99,
                       "response": {"object": "response", "status": "failed"}}));
    assert!(parse_events(&sse(&failed)).is_none());
    let mut errored = split;
    errored.push(json!({"type": "error", "sequence_number": 99, "message": "boom"}));
    assert!(parse_events(&sse(&errored)).is_none());
    let mut incomplete = response();
    incomplete["status"] = json!("incomplete");
    assert!(!events::is_complete(&incomplete));
}

#[test]
fn a_response_reads_as_the_chat_message_it_says() {
    let message = events::as_message(&response());
    assert_eq!(message["content"], "Hi there");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "weather");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
}
