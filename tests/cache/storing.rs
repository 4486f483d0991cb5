//! What is never stored (errors, streams cut short), and the per-request cache controls.

use std::time::Duration;

use reqwest::StatusCode;
use rstest::rstest;
use serde_json::json;

use crate::common::fake_llm::FakeLlm;
use crate::{Backend, Dialect, Harness, NO_HEADERS, Reply, WAIT, poll};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_never_stored(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    for (model, status) in [
        ("fail-400", StatusCode::BAD_REQUEST),
        ("fail-500", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        for stream in [false, true] {
            let what = format!("{backend:?}/{dialect:?}: {model} stream={stream}");
            let mut body = dialect.chat("this will fail", stream);
            body["model"] = json!(model);
            let before = h.fake.calls_to(path);
            for attempt in 1..=2 {
                let reply = h.api.send(path, &body).await;
                dialect.assert_error(&reply, status, &what);
                assert_eq!(reply.cache(), "miss", "{what}: attempt {attempt}");
                assert_eq!(
                    h.fake.calls_to(path),
                    before + attempt,
                    "{what}: attempt {attempt} went upstream"
                );
            }
        }
    }
    assert_eq!(h.answer_count().await, 0, "{backend:?}/{dialect:?}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_left_is_never_stored(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let mut body = dialect.chat("tell me a long story", true);
    body["model"] = json!("slow-stream");

    let mut response = h.api.open(path, &body, &NO_HEADERS).await;
    assert_eq!(response.status(), StatusCode::OK, "{what}");
    assert_eq!(
        response
            .headers()
            .get("x-thrifty-cache")
            .map(|v| v.as_bytes()),
        Some(&b"miss"[..]),
        "{what}"
    );
    for _ in 0..3 {
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .expect("a chunk in time")
            .expect("a chunk");
        assert!(chunk.is_some(), "{what}: the stream goes on");
    }
    drop(response);
    assert!(
        h.fake.wait_for_cancelled(1, WAIT).await,
        "{what}: the upstream stream was cancelled"
    );

    let again = h.api.open(path, &body, &NO_HEADERS).await;
    assert_eq!(again.status(), StatusCode::OK, "{what}");
    assert_eq!(
        again.headers().get("x-thrifty-cache").map(|v| v.as_bytes()),
        Some(&b"miss"[..]),
        "{what}: the cut stream was not stored"
    );
    assert_eq!(
        h.fake.calls_to(path),
        2,
        "{what}: the second call went upstream"
    );
    drop(again);
    assert!(h.fake.wait_for_cancelled(2, WAIT).await, "{what}");
    assert_eq!(h.answer_count().await, 0, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_left_after_its_last_event_is_stored(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    // SDKs stop reading at `[DONE]` / `done: true` and may close the connection before the
    // upstream's end of body arrives; the answer is complete and a JSON call replays it.
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::setup(backend)
        .fake(FakeLlm::builder().linger(Duration::from_secs(30)))
        .start()
        .await;
    let path = dialect.chat_path();
    let mut response = h
        .api
        .open(
            path,
            &dialect.chat("left after the last event", true),
            &NO_HEADERS,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{what}");
    let terminal = match dialect {
        Dialect::OpenAi => "data: [DONE]",
        Dialect::Ollama => "\"done\":true",
    };
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains(terminal) {
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .expect("a chunk in time")
            .expect("a chunk")
            .unwrap_or_else(|| panic!("{what}: the stream ended before its last event"));
        received.extend_from_slice(&chunk);
    }
    drop(response);

    let replay = h
        .api
        .send(path, &dialect.chat("left after the last event", false))
        .await;
    replay.assert_cache("hit", &what);
    assert_eq!(
        h.fake.calls_to(path),
        1,
        "{what}: the replay stayed in thrifty"
    );
    // The replay may have followed the stream still in flight; the answer is stored
    // once thrifty sees the client gone, while the upstream still lingers.
    poll(WAIT, &format!("{what}: the answer is stored"), || async {
        (h.answer_count().await == 1).then_some(())
    })
    .await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_went_idle_is_never_stored(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::setup(backend)
        .fake(FakeLlm::builder().chunk_delay(Duration::from_millis(1500)))
        .config(|raw| {
            for upstream in &mut raw.upstreams {
                upstream.idle_timeout = Duration::from_millis(300);
            }
        })
        .start()
        .await;
    let path = dialect.chat_path();
    let body = dialect.chat("a stream that stalls", true);
    for attempt in 1..=2 {
        let mut response = h.api.open(path, &body, &NO_HEADERS).await;
        assert_eq!(response.status(), StatusCode::OK, "{what}");
        assert_eq!(
            response
                .headers()
                .get("x-thrifty-cache")
                .map(|v| v.as_bytes()),
            Some(&b"miss"[..]),
            "{what}: attempt {attempt}"
        );
        let mut received = Vec::new();
        let ended = tokio::time::timeout(WAIT, async {
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                    Ok(None) => return true,
                    Err(_) => return false,
                }
            }
        })
        .await
        .expect("the idle timeout ends the stream");
        let text = String::from_utf8_lossy(&received);
        let complete = match dialect {
            Dialect::OpenAi => text.contains("[DONE]"),
            Dialect::Ollama => text.contains("\"done\":true"),
        };
        assert!(
            !complete,
            "{what}: the stream was cut (ended cleanly: {ended}): {text}"
        );
        assert_eq!(h.fake.calls_to(path), attempt, "{what}: attempt {attempt}");
    }
    assert_eq!(h.answer_count().await, 0, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_goes_upstream_and_refreshes_the_entry(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let body = dialect.chat("refresh me", false);
    let miss = h.api.fill(path, &body, &NO_HEADERS).await;
    let key = miss.key();
    let first = h.api.entry(&key).await.expect("stored")["entry"]["created_ms"]
        .as_u64()
        .expect("created_ms");

    let refreshed = h
        .api
        .post(path, &body, &[("cache-control", "no-cache")])
        .await;
    refreshed.assert_cache("bypass", &format!("{what}: no-cache skips the lookup"));
    assert_eq!(refreshed.key(), key, "{what}");
    assert_eq!(h.fake.calls_to(path), 2, "{what}: no-cache went upstream");
    poll(WAIT, &format!("{what}: the entry is rewritten"), || async {
        let entry = h.api.entry(&key).await?;
        (entry["entry"]["created_ms"].as_u64()? > first).then_some(())
    })
    .await;

    let hit = h.api.send(path, &body).await;
    hit.assert_cache("hit", &what);
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_reads_but_never_writes(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let body = dialect.chat("do not keep this", false);
    let no_store = [("cache-control", "no-store")];

    let first = h.api.post(path, &body, &no_store).await;
    first.assert_cache("miss", &what);
    let second = h.api.send(path, &body).await;
    second.assert_cache("miss", &format!("{what}: no-store wrote nothing"));
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
    h.api.wait_stored(&second.key()).await;

    let read = h.api.post(path, &body, &no_store).await;
    read.assert_cache("hit", &format!("{what}: no-store still reads"));
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
    assert_eq!(h.api.stats().await["stored"], 1, "{what}: one write in all");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_off_neither_reads_nor_writes(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let body = dialect.chat("not for the cache", false);
    let off = [("x-thrifty-cache", "off")];

    let reply = h.api.post(path, &body, &off).await;
    reply.assert_cache("off", &what);
    assert!(reply.header("x-thrifty-cache-key").is_none(), "{what}");
    let miss = h.api.send(path, &body).await;
    miss.assert_cache("miss", &format!("{what}: off wrote nothing"));
    h.api.wait_stored(&miss.key()).await;
    h.api
        .post(path, &body, &off)
        .await
        .assert_cache("off", &format!("{what}: off does not read"));
    assert_eq!(h.fake.calls_to(path), 3, "{what}");
    h.api
        .post(path, &body, &[("x-thrifty-cache", "on")])
        .await
        .assert_cache("hit", &what);

    let embed = dialect.embed(&["not for the cache either"]);
    for _ in 0..2 {
        h.api
            .post(dialect.embed_path(), &embed, &off)
            .await
            .assert_cache("off", &what);
    }
    assert_eq!(h.fake.calls_to(dialect.embed_path()), 2, "{what}");
    assert_eq!(h.api.stats().await["entries"]["embeddings"], 0, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_cache_is_off(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::setup(backend)
        .config(|raw| raw.cache.enabled = false)
        .start()
        .await;
    for (path, body) in [
        (dialect.chat_path(), dialect.chat("no cache at all", false)),
        (dialect.chat_path(), dialect.chat("no cache at all", true)),
        (dialect.embed_path(), dialect.embed(&["no cache at all"])),
    ] {
        for _ in 0..2 {
            h.api.send(path, &body).await.assert_cache("off", &what);
        }
    }
    assert_eq!(h.fake.calls(), 6, "{what}");
    let stats = h.api.stats().await;
    assert_eq!(
        stats["entries"],
        json!({"answers": 0, "embeddings": 0}),
        "{what}"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_max_entry_bytes_are_never_stored(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::setup(backend)
        .config(|raw| raw.cache.max_entry_bytes = 200)
        .start()
        .await;
    let path = dialect.chat_path();
    for stream in [false, true] {
        let body = dialect.chat(&"a long answer ".repeat(20), stream);
        for attempt in 1..=2 {
            let reply = h.api.send(path, &body).await;
            reply.assert_cache("miss", &format!("{what}: stream={stream} {attempt}"));
            assert!(
                reply.body.len() > 200,
                "{what}: the answer is over the limit"
            );
        }
    }
    assert_eq!(h.fake.calls_to(path), 4, "{what}: every call went upstream");
    assert_eq!(h.answer_count().await, 0, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_sampling_bypasses_the_cache(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::setup(backend)
        .config(|raw| raw.cache.max_temperature = Some(0.5))
        .start()
        .await;
    let path = dialect.chat_path();
    let mut hot = dialect.chat("be creative", false);
    dialect.set_option(&mut hot, "temperature", json!(0.9));
    for attempt in 1..=2 {
        let reply = h.api.send(path, &hot).await;
        reply.assert_cache("bypass", &format!("{what}: attempt {attempt}"));
        assert!(reply.header("x-thrifty-cache-key").is_none(), "{what}");
        assert_eq!(h.fake.calls_to(path), attempt, "{what}");
    }
    let mut cool = dialect.chat("be creative", false);
    dialect.set_option(&mut cool, "temperature", json!(0.2));
    h.api.fill(path, &cool, &NO_HEADERS).await;
    h.api.send(path, &cool).await.assert_cache("hit", &what);
    assert_eq!(h.fake.calls_to(path), 3, "{what}");
    assert_eq!(h.answer_count().await, 1, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cache_controls_are_rejected_in_the_dialects_error_shape(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let bad = [
        ("x-thrifty-cache-ttl", "soon"),
        ("x-thrifty-cache-ttl", "0"),
        ("x-thrifty-cache-ttl", "-5"),
        ("x-thrifty-cache", "maybe"),
        ("x-thrifty-cache-namespace", "has space"),
        ("x-thrifty-cache-namespace", ""),
        ("x-thrifty-cache-tags", "fine,not fine!"),
        ("cache-control", "max-age=-1"),
        ("cache-control", "no-cache, max-age=soon"),
    ];
    let h = Harness::start(backend).await;
    for (name, value) in bad {
        let what = format!("{backend:?}/{dialect:?}: {name}: {value:?}");
        for (path, body) in [
            (dialect.chat_path(), dialect.chat("bad controls", false)),
            (dialect.chat_path(), dialect.chat("bad controls", true)),
            (dialect.embed_path(), dialect.embed(&["bad controls"])),
        ] {
            let reply = h.api.post(path, &body, &[(name, value)]).await;
            dialect.assert_error(&reply, StatusCode::BAD_REQUEST, &what);
            let message = match dialect {
                Dialect::OpenAi => reply.json()["error"]["message"].clone(),
                Dialect::Ollama => reply.json()["error"].clone(),
            };
            let message = message.as_str().unwrap_or_default().to_owned();
            assert!(
                message.contains(name) || message.contains("cache"),
                "{what}: the message names the control: {message}"
            );
        }
    }
    assert_eq!(
        h.fake.calls(),
        0,
        "{backend:?}/{dialect:?}: nothing went upstream"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thrifty_headers_never_reach_the_upstream(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let controls = [
        ("x-thrifty-cache", "on"),
        ("x-thrifty-cache-ttl", "60"),
        ("x-thrifty-cache-namespace", "ns"),
        ("x-thrifty-cache-tags", "team:x,project"),
        ("x-custom-header", "travels"),
    ];
    let replies: Vec<Reply> = vec![
        h.api
            .post(
                dialect.chat_path(),
                &dialect.chat("headers", false),
                &controls,
            )
            .await,
        h.api
            .post(
                dialect.chat_path(),
                &dialect.chat("headers", true),
                &[("cache-control", "no-cache"), ("x-thrifty-cache-ttl", "5")],
            )
            .await,
        h.api
            .post(
                dialect.embed_path(),
                &dialect.embed(&["headers"]),
                &controls,
            )
            .await,
        h.api
            .post(
                dialect.chat_path(),
                &dialect.chat("off", false),
                &[
                    ("x-thrifty-cache", "off"),
                    ("x-thrifty-cache-namespace", "ns"),
                ],
            )
            .await,
    ];
    for reply in &replies {
        reply.assert_ok(&what);
    }
    let requests = h.fake.requests();
    assert_eq!(
        requests.len(),
        replies.len(),
        "{what}: every call went upstream"
    );
    for request in &requests {
        let leaked: Vec<&str> = request
            .headers
            .keys()
            .map(|name| name.as_str())
            .filter(|name| name.starts_with("x-thrifty-"))
            .collect();
        assert!(leaked.is_empty(), "{what}: {} got {leaked:?}", request.path);
    }
    assert!(
        requests[0].headers.get("x-custom-header").is_some(),
        "{what}: other headers do travel"
    );
}
