//! The exact cache for `POST /v1/responses`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::client::Api;
use crate::common::fake_llm::request_id;
use crate::world::{PATH, World, completed, events, names, output_text};

fn question(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "input": text, "stream": stream})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_is_replayed_whole_with_the_upstreams_response_id() {
    let world = World::start().await;
    let body = question("Say hi", false);
    let first = world.create(&body).await;
    first.assert_cache("miss", "first call");
    assert_eq!(first.header("x-request-id"), Some(request_id(1).as_str()));
    let answer = first.json();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["status"], "completed");
    assert_eq!(output_text(&answer), "Echo: Say hi");

    let hit = world.until_hit(&body).await;
    hit.assert_cache("hit", "second call");
    assert_eq!(
        hit.json(),
        answer,
        "the hit is the recorded response, id included"
    );
    assert_eq!(hit.header("content-type"), Some("application/json"));
    assert_eq!(
        world.fake.calls_to(PATH),
        1,
        "the hit never reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_replayed_as_its_full_event_sequence() {
    let world = World::start().await;
    let body = question("Tell me a story", true);
    let first = world.create(&body).await;
    first.assert_cache("miss", "first stream");
    let live = events(&first);
    let kinds = names(&live);
    assert_eq!(
        kinds[..5],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
        ]
    );
    assert_eq!(
        kinds[kinds.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let hit = world.until_hit(&body).await;
    hit.assert_cache("hit", "second stream");
    assert_eq!(
        hit.text(),
        first.text(),
        "the replay is the recorded stream, byte for byte"
    );

    let as_json = world.until_hit(&question("Tell me a story", false)).await;
    as_json.assert_cache("hit", "the stream served as JSON");
    assert_eq!(as_json.json(), completed(&live));
    assert_eq!(world.fake.calls_to(PATH), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_is_replayed_as_a_stream_clients_can_follow() {
    let world = World::start().await;
    let recorded = world.create(&question("Count to three", false)).await;
    recorded.assert_cache("miss", "JSON first");
    let hit = world.until_hit(&question("Count to three", true)).await;
    hit.assert_cache("hit", "then a stream");
    let replay = events(&hit);
    for (n, event) in replay.iter().enumerate() {
        assert_eq!(
            event.data["sequence_number"], n,
            "events are numbered in order"
        );
    }
    let deltas: String = replay
        .iter()
        .filter(|e| e.name == "response.output_text.delta")
        .filter_map(|e| e.data["delta"].as_str())
        .collect();
    assert_eq!(deltas, "Echo: Count to three");
    assert_eq!(replay[0].name, "response.created");
    assert_eq!(replay[0].data["response"]["status"], "in_progress");
    assert_eq!(completed(&replay), recorded.json());
    assert_eq!(world.fake.calls_to(PATH), 1);
}

/// What the key covers: `store` (it decides what the upstream keeps), `instructions`, `tools` and
/// any field thrifty does not know (fail closed) each make another entry, so a call differing
/// only there reaches the upstream; fields that never change the answer (`metadata`, `user`,
/// `prompt_cache_key`, `safety_identifier`) do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaping_fields_make_their_own_entries_and_incidental_ones_do_not() {
    let world = World::start().await;
    let base = json!({
        "model": "gpt-4o-mini",
        "input": "Which fields are in the key?",
        "instructions": "Be brief.",
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
        "store": true
    });
    world
        .create(&base)
        .await
        .assert_cache("miss", "the first call");
    world
        .until_hit(&base)
        .await
        .assert_cache("hit", "the same call");
    let mut calls = world.fake.calls_to(PATH);
    assert_eq!(calls, 1);

    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let shaping = [
        ("store: false", with("store", json!(false))),
        (
            "other instructions",
            with("instructions", json!("Be thorough.")),
        ),
        (
            "other tools",
            with(
                "tools",
                json!([{"type": "function", "name": "search", "parameters": {"type": "object"}}]),
            ),
        ),
        ("an unknown field", with("frobnicate", json!({"level": 3}))),
    ];
    for (what, body) in &shaping {
        let reply = world.create(body).await;
        reply.assert_cache("miss", what);
        calls += 1;
        assert_eq!(
            world.fake.calls_to(PATH),
            calls,
            "{what}: reached the upstream"
        );
        let sent = world.fake.last_request().and_then(|r| r.json());
        assert_eq!(
            sent.as_ref(),
            Some(body),
            "{what}: sent as the client wrote it"
        );
        world
            .until_hit(body)
            .await
            .assert_cache("hit", &format!("{what}, again: its own entry"));
    }
    assert_eq!(world.fake.calls_to(PATH), calls);

    let incidental = [
        ("metadata", with("metadata", json!({"run": "42"}))),
        ("user", with("user", json!("user-1234"))),
        ("prompt_cache_key", with("prompt_cache_key", json!("pk-1"))),
        (
            "safety_identifier",
            with("safety_identifier", json!("sid-1")),
        ),
    ];
    for (what, body) in &incidental {
        world
            .create(body)
            .await
            .assert_cache("hit", &format!("{what} is not in the key"));
    }
    assert_eq!(
        world.fake.calls_to(PATH),
        calls,
        "no incidental field reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_and_reasoning_are_replayed() {
    let world = World::start().await;
    let body = json!({
        "model": "gpt-5-mini",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "weather in Paris?"}]}],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "reasoning": {"effort": "low"},
        "stream": true
    });
    let first = world.create(&body).await;
    first.assert_cache("miss", "a tool call");
    let live = events(&first);
    assert!(names(&live).contains(&"response.function_call_arguments.delta"));
    let output = completed(&live)["output"].clone();
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(output[1]["type"], "function_call");
    let hit = world.until_hit(&body).await;
    assert_eq!(hit.text(), first.text());
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let as_json = world.until_hit(&plain).await;
    assert_eq!(as_json.json()["output"], output);
    assert_eq!(world.fake.calls_to(PATH), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_streams_and_upstream_errors_are_never_stored() {
    let world = World::start().await;
    let failing = json!({"model": "response-failed", "input": "hi", "stream": true});
    for n in 1..=2 {
        let reply = world.create(&failing).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.describe());
        assert_eq!(reply.cache(), "miss", "call {n} is a miss");
        let stream = events(&reply);
        assert_eq!(names(&stream).last(), Some(&"response.failed"));
    }
    let refused = json!({"model": "fail-400", "input": "hi"});
    for _ in 0..2 {
        let reply = world.create(&refused).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    }
    let cut = json!({"model": "reset-midway", "input": "hi", "stream": true});
    for _ in 0..2 {
        let response = world.api.open(PATH, &cut, &[] as &[(&str, &str)]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.bytes().await.is_err(), "the client sees the cut");
    }
    assert_eq!(world.fake.calls_to(PATH), 6, "every call went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_response_id_is_in_the_key_and_a_replayed_id_continues_upstream() {
    let world = World::start().await;
    let opening = question("My name is Ann", false);
    let first = world.create(&opening).await;
    let id = first.json()["id"]
        .as_str()
        .expect("a response id")
        .to_owned();
    let replayed = world.until_hit(&opening).await;
    assert_eq!(replayed.json()["id"], id.as_str());

    let follow_up =
        json!({"model": "gpt-4o-mini", "input": "What is my name?", "previous_response_id": id});
    let continued = world.create(&follow_up).await;
    continued.assert_cache("miss", "the follow-up names the replayed id");
    assert_eq!(continued.json()["previous_response_id"], id.as_str());
    let alone = world.create(&question("What is my name?", false)).await;
    alone.assert_cache("miss", "the same input without the id is another question");
    let again = world.until_hit(&follow_up).await;
    again.assert_cache("hit", "the same id and input");
    assert_eq!(world.fake.calls_to(PATH), 3);

    let unknown =
        json!({"model": "gpt-4o-mini", "input": "hi", "previous_response_id": "resp_nope"});
    for _ in 0..2 {
        let reply = world.create(&unknown).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json()["error"]["code"], "previous_response_not_found");
    }
    assert_eq!(world.fake.calls_to(PATH), 5, "an error is never replayed");
}

/// A body that is JSON but not a call thrifty can read is the upstream's to judge: it goes
/// upstream as it came and the client gets the upstream's own error. Bytes that are not JSON
/// are thrifty's to refuse, in OpenAI's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_calls_get_the_upstreams_own_error_and_garbage_gets_thriftys() {
    let world = World::start().await;
    let cases = [
        (json!({"model": "m", "input": 3}), Some("input")),
        (json!({"input": "hi"}), Some("model")),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}),
            Some("input[0].call_id"),
        ),
    ];
    for (body, param) in cases {
        let direct = Api::new(world.fake.url(), std::time::Duration::from_secs(10))
            .send(PATH, &body)
            .await;
        let calls = world.fake.calls_to(PATH);
        let reply = world.create(&body).await;
        assert_eq!(
            world.fake.calls_to(PATH),
            calls + 1,
            "{body}: went upstream"
        );
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            reply.json(),
            direct.json(),
            "{body}: the upstream's own error"
        );
        assert_eq!(reply.json()["error"]["param"].as_str(), param, "{body}");
        assert_eq!(reply.cache(), "bypass", "{body}");
    }
    let calls = world.fake.calls();
    let not_json = world
        .api
        .client
        .post(world.api.url(PATH))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .expect("sent");
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let error: Value = not_json.json().await.expect("a JSON error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(
        world.fake.calls(),
        calls,
        "garbage never reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_response_paths_stay_passthrough() {
    let world = World::start().await;
    let calls = [
        (Method::GET, "/v1/responses/resp_1"),
        (Method::DELETE, "/v1/responses/resp_1"),
        (Method::POST, "/v1/responses/resp_1/cancel"),
        (Method::GET, "/v1/responses/resp_1/input_items?limit=5"),
        (Method::POST, "/v1/conversations"),
        (Method::GET, "/v1/conversations/conv_1/items"),
    ];
    for (method, path) in calls {
        let reply = world.api.request(method.clone(), path, None, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{method} {path}");
        assert_eq!(reply.cache(), "", "{method} {path} is not cached");
        assert_eq!(
            reply.json()["path"],
            path,
            "{method} {path} reached the upstream as sent"
        );
        assert_eq!(reply.json()["method"], method.as_str());
    }
    assert_eq!(world.fake.calls(), 6);
}
