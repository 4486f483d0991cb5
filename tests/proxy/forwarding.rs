//! Intercepted calls reach the upstream as the client sent them, and the answers come back as
//! the upstream sent them: whole bodies byte for byte, streams chunk by chunk as they happen.

use std::time::Duration;

use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};

use crate::common::fake_llm::{self, FakeLlm};
use crate::common::thrifty::{Thrifty, config_for};
use crate::{
    CALLS, Call, Dialect, Reply, WAIT, assert_status, client, content_type, get, header, post,
    post_with, read_stream, slow_text, unique, upstream_of,
};

/// The body with the values the fake makes up per call (ids and clocks) replaced by `"*"`, so
/// that two answers to the same request can be compared byte for byte.
fn masked(body: &str) -> String {
    let value: Value = serde_json::from_str(body).expect("JSON body");
    let mut masked = body.to_owned();
    for field in ["id", "created", "created_at"] {
        if let Some(v) = value.get(field) {
            masked = masked.replacen(
                &format!("\"{field}\":{v}"),
                &format!("\"{field}\":\"*\""),
                1,
            );
        }
    }
    masked
}

/// Sends `request` through thrifty and straight to the fake, and compares what each side saw.
async fn forwards_unchanged(dialect: Dialect, path: &str, request: Value) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;

    let proxied = post(format!("{}{path}", thrifty.url()), &request).await;
    assert_status(&proxied, StatusCode::OK, path);
    assert_eq!(fake.calls(), 1, "{path}: one call reached the upstream");
    let recorded = fake.last_request().expect("the upstream was called");
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, path, "{dialect:?} upstream path");
    assert_eq!(
        recorded.json(),
        Some(request.clone()),
        "{path}: the upstream received the client's JSON"
    );

    let direct = post(format!("{}{path}", fake.url()), &request).await;
    assert_status(&direct, StatusCode::OK, "direct call to the fake");
    assert_eq!(
        content_type(&proxied),
        content_type(&direct),
        "{path}: content type"
    );
    assert_eq!(
        masked(&proxied.text()),
        masked(&direct.text()),
        "{path}: the client got the upstream's bytes"
    );
    assert_eq!(upstream_of(&proxied), dialect.default_upstream());
    assert!(
        !header(&proxied.headers, "x-thrifty-request-id").is_empty(),
        "{path}: x-thrifty-request-id is set"
    );
}

#[tokio::test]
async fn openai_calls_reach_the_upstream_and_come_back_unchanged() {
    let dialect = Dialect::OpenAi;
    for call in CALLS {
        let model = match call {
            Call::Embedding => "text-embedding-3-small",
            _ => "gpt-4o-mini",
        };
        let request = dialect.request(call, model, "hello  there, proxy");
        forwards_unchanged(dialect, dialect.path(call), request).await;
    }
}

#[tokio::test]
async fn ollama_calls_reach_the_upstream_and_come_back_unchanged() {
    let dialect = Dialect::Ollama;
    for call in CALLS {
        let model = match call {
            Call::Embedding => "nomic-embed-text",
            _ => "llama3.2",
        };
        let request = dialect.request(call, model, "hello  there, proxy");
        forwards_unchanged(dialect, dialect.path(call), request).await;
    }
    let legacy = json!({"model": "nomic-embed-text", "prompt": "hello there"});
    forwards_unchanged(dialect, "/api/embeddings", legacy).await;
}

async fn request_ids_are_issued_and_propagated(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let url = format!("{}{}", thrifty.url(), dialect.chat_path());
    let first = post(url.clone(), &dialect.chat("gpt-4o-mini", &unique("hi"))).await;
    let second = post(url.clone(), &dialect.chat("gpt-4o-mini", &unique("hi"))).await;
    let (a, b) = (
        header(&first.headers, "x-thrifty-request-id"),
        header(&second.headers, "x-thrifty-request-id"),
    );
    assert!(!a.is_empty() && !b.is_empty(), "every answer carries an id");
    assert_ne!(a, b, "each request gets its own id");

    let request = dialect.chat("gpt-4o-mini", &unique("traced"));
    let traced = post_with(
        url.clone(),
        &request,
        &[("x-request-id", "trace-7f3a-0001")],
    )
    .await;
    assert_status(&traced, StatusCode::OK, "traced request");
    assert_eq!(
        header(&traced.headers, "x-thrifty-request-id"),
        "trace-7f3a-0001"
    );
    // The upstream's own id reaches the client as it came (OpenAI names every answer; the
    // fake's Ollama does not, so there the client's id comes back).
    let expected = match dialect {
        Dialect::OpenAi => fake_llm::request_id(fake.calls()),
        Dialect::Ollama => "trace-7f3a-0001".to_owned(),
    };
    assert_eq!(
        header(&traced.headers, "x-request-id"),
        expected,
        "x-request-id"
    );
    let recorded = fake.last_request().expect("the upstream was called");
    assert_eq!(
        header(&recorded.headers, "x-request-id"),
        "trace-7f3a-0001",
        "the client's request id travels upstream"
    );
    if dialect == Dialect::OpenAi {
        // So does it on an upstream error, which SDKs report with the id.
        let failed = post(url.clone(), &dialect.chat("fail-500", &unique("fail"))).await;
        assert_status(&failed, StatusCode::INTERNAL_SERVER_ERROR, "upstream error");
        assert_eq!(
            header(&failed.headers, "x-request-id"),
            fake_llm::request_id(fake.calls()),
            "the upstream's id on its error"
        );
        assert_ne!(
            header(&failed.headers, "x-thrifty-request-id"),
            header(&failed.headers, "x-request-id")
        );
    }
}

#[rstest]
#[tokio::test]
async fn request_ids_are_issued_and_propagated_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    request_ids_are_issued_and_propagated(dialect).await;
}

/// Posts `body` until thrifty answers it from the cache: an answer is stored just after its body
/// ends, which may be a moment after the client has it.
async fn until_hit(url: &str, body: &Value) -> Reply {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let reply = post(url.to_owned(), body).await;
        if header(&reply.headers, "x-thrifty-cache") == "hit"
            || std::time::Instant::now() > deadline
        {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The upstream's `x-request-id` reaches the client on a streamed miss and on a passthrough
/// call as it does on a JSON one; a hit, which no upstream answered, carries thrifty's id there
/// (README, "Response headers"); every answer carries `x-thrifty-request-id`. The fake's Ollama
/// names no answer, so there every `x-request-id` is thrifty's.
async fn upstream_request_ids_reach_the_client_on_streams_passthrough_and_hits(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let url = format!("{}{}", thrifty.url(), dialect.chat_path());
    let ids = |reply: &Reply, what: &str| {
        let ours = header(&reply.headers, "x-thrifty-request-id").to_owned();
        assert!(!ours.is_empty(), "{what}: x-thrifty-request-id is set");
        (header(&reply.headers, "x-request-id").to_owned(), ours)
    };
    // The id the upstream gave its `n`th answer, or thrifty's `ours` where it gives none.
    let upstreams = |n: usize, ours: &str| match dialect {
        Dialect::OpenAi => fake_llm::request_id(n),
        Dialect::Ollama => ours.to_owned(),
    };

    let streaming = dialect.streaming(Call::Chat, "gpt-4o-mini", &unique("stream my id"));
    let streamed = post(url.clone(), &streaming).await;
    assert_status(&streamed, StatusCode::OK, "streamed miss");
    assert_eq!(header(&streamed.headers, "x-thrifty-cache"), "miss");
    assert_eq!(content_type(&streamed), dialect.stream_content_type());
    assert_eq!(fake.calls(), 1);
    let (streamed_id, ours) = ids(&streamed, "streamed miss");
    assert_eq!(
        streamed_id,
        upstreams(1, &ours),
        "the upstream's id on a streamed miss"
    );

    let listed = get(format!("{}{}", thrifty.url(), dialect.models_path())).await;
    assert_status(&listed, StatusCode::OK, "passthrough");
    assert_eq!(fake.calls(), 2);
    let (listed_id, ours) = ids(&listed, "passthrough");
    assert_eq!(
        listed_id,
        upstreams(2, &ours),
        "the upstream's id on a passthrough call"
    );

    let replayed = until_hit(&url, &streaming).await;
    assert_eq!(header(&replayed.headers, "x-thrifty-cache"), "hit");
    let (replayed_id, ours) = ids(&replayed, "stream hit");
    assert_eq!(
        replayed_id, ours,
        "a hit carries thrifty's id as x-request-id"
    );
    assert_ne!(replayed_id, streamed_id, "not the recorded answer's id");

    let plain = dialect.chat("gpt-4o-mini", &unique("hit my id"));
    let miss = post(url.clone(), &plain).await;
    let (miss_id, miss_ours) = ids(&miss, "JSON miss");
    let hit = until_hit(&url, &plain).await;
    assert_eq!(header(&hit.headers, "x-thrifty-cache"), "hit");
    let (hit_id, ours) = ids(&hit, "JSON hit");
    assert_eq!(hit_id, ours, "a hit carries thrifty's id as x-request-id");
    assert_ne!(hit_id, miss_id, "not the recorded answer's id");
    assert_ne!(ours, miss_ours, "each answer has its own id");
}

#[rstest]
#[tokio::test]
async fn upstream_request_ids_reach_the_client_on_streams_passthrough_and_hits_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    upstream_request_ids_reach_the_client_on_streams_passthrough_and_hits(dialect).await;
}

/// A slow stream reaches the client chunk by chunk while the upstream is still producing it.
async fn streams_arrive_chunk_by_chunk(dialect: Dialect) {
    let delay = Duration::from_millis(10);
    let fake = FakeLlm::builder().chunk_delay(delay).start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let request = dialect.streaming(Call::Chat, "slow-stream", "go");

    let response = client()
        .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
        .json(&request)
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), "content-type"),
        dialect.stream_content_type()
    );
    assert_eq!(
        header(response.headers(), "x-thrifty-upstream"),
        dialect.default_upstream()
    );
    let streamed = read_stream(response).await;
    assert!(streamed.error.is_none(), "{:?}", streamed.error);
    assert_eq!(dialect.streamed_text(&streamed.text()), slow_text());
    // OpenAI streams go upstream asking for the usage chunk, which the client does not get.
    let mut expected = request;
    if dialect == Dialect::OpenAi {
        expected["stream_options"] = json!({"include_usage": true});
        assert!(!streamed.text().contains("usage"), "{}", streamed.text());
    }
    assert_eq!(fake.last_request().and_then(|r| r.json()), Some(expected));

    // The fake waits `delay` between its ~200 chunks; a proxy that buffered the stream would
    // hand them over together at the end.
    assert!(
        streamed.chunks.len() >= 20,
        "the client got the stream in {} pieces",
        streamed.chunks.len()
    );
    assert!(
        streamed.spread() >= delay * 100,
        "the first chunk arrived only {:?} before the last",
        streamed.spread()
    );
}

#[tokio::test]
async fn openai_sse_streams_arrive_chunk_by_chunk() {
    streams_arrive_chunk_by_chunk(Dialect::OpenAi).await;
}

#[tokio::test]
async fn ollama_ndjson_streams_arrive_chunk_by_chunk() {
    streams_arrive_chunk_by_chunk(Dialect::Ollama).await;
}

/// Streamed completions keep their content type and end marker too.
#[rstest]
#[tokio::test]
async fn streamed_completions_keep_their_format_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let request = dialect.streaming(Call::Completion, "gpt-4o-mini", "hello there");
    let response = client()
        .post(format!(
            "{}{}",
            thrifty.url(),
            dialect.path(Call::Completion)
        ))
        .json(&request)
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), "content-type"),
        dialect.stream_content_type()
    );
    let streamed = read_stream(response).await;
    assert!(streamed.error.is_none(), "{:?}", streamed.error);
    assert_eq!(
        dialect.streamed_text(&streamed.text()),
        "Echo: hello there",
        "{dialect:?}"
    );
}
