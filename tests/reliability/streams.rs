//! Upstreams that break a stream off: midway (recorded as a partial `error` with the tokens
//! seen), or right after its terminal event (the client saw a transport error, so the answer is
//! not cached).

use reqwest::StatusCode;
use rstest::rstest;
use serde_json::Value;

use crate::common::client::{ADMIN_TOKEN, Probe, poll, start_redis, start_thrifty};
use crate::common::dialect::DIALECTS;
use crate::common::fake_llm::FakeLlm;
use crate::common::thrifty::config_for;
use crate::{Dialect, WAIT, audit_log, client, read_stream, redis_env};

#[rstest]
#[tokio::test]
async fn a_stream_reset_after_its_terminal_event_is_not_cached(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let redis = start_redis().await;
    let fake = FakeLlm::start().await;
    let thrifty = start_thrifty(config_for(&fake), &redis_env(&redis), WAIT).await;
    let client = client();
    let ask = |model: &str, question: &str| {
        client
            .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
            .json(&dialect.chat(model, question, true))
            .send()
    };
    let before = fake.calls();
    let first = ask("reset-after-done", "is this kept?")
        .await
        .expect("sent");
    assert_eq!(first.status(), StatusCode::OK, "{dialect:?}");
    let streamed = read_stream(first.bytes_stream(), Vec::new(), WAIT).await;
    assert!(
        dialect.has_terminal_event(&streamed.bytes) && streamed.failed,
        "{dialect:?}: the client got the terminal event, then a transport error"
    );

    // A clean stream asked after it is stored: by the time it is, any write the reset
    // stream started has landed too.
    let control = format!("{dialect:?} control question");
    let clean = ask("gpt-4o-mini", &control).await.expect("sent");
    assert!(
        !read_stream(clean.bytes_stream(), Vec::new(), WAIT)
            .await
            .failed
    );
    poll(WAIT, "the clean stream is stored", || async {
        let again = ask("gpt-4o-mini", &control).await.ok()?;
        let hit = again
            .headers()
            .get("x-thrifty-cache")
            .is_some_and(|v| v == "hit");
        let _ = again.bytes().await;
        hit.then_some(())
    })
    .await;

    let calls = fake.calls();
    let second = ask("reset-after-done", "is this kept?")
        .await
        .expect("sent");
    let cache = second
        .headers()
        .get("x-thrifty-cache")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let _ = read_stream(second.bytes_stream(), Vec::new(), WAIT).await;
    assert_eq!(cache.as_deref(), Some("miss"), "{dialect:?}");
    assert_eq!(
        fake.calls(),
        calls + 1,
        "{dialect:?}: the second identical call reached the upstream"
    );
    assert!(fake.calls() > before);
}

#[tokio::test]
async fn a_stream_that_fails_midway_is_a_partial_error_with_the_tokens_seen() {
    let redis = start_redis().await;
    let fake = FakeLlm::start().await;
    let thrifty = start_thrifty(config_for(&fake), &redis_env(&redis), WAIT).await;
    let client = client();
    for dialect in DIALECTS {
        let response = client
            .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
            .json(&dialect.chat("reset-midway", "one two three four five six", true))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
        let streamed = read_stream(response.bytes_stream(), Vec::new(), WAIT).await;
        assert!(
            streamed.failed,
            "{dialect:?}: the client saw the stream fail"
        );
        assert!(!dialect.has_terminal_event(&streamed.bytes), "{dialect:?}");
    }

    let report = thrifty
        .savings("format=json", ADMIN_TOKEN, DIALECTS.len() as u64)
        .await;
    let total = &report["total"];
    assert_eq!(total["requests"], 2, "{report:#}");
    assert_eq!(total["outcomes"]["error"], 2, "{report:#}");
    assert_eq!(total["outcomes"]["miss"], 0, "{report:#}");
    assert_eq!(total["partial_requests"], 2, "{report:#}");
    assert!(
        total["tokens"]["actual"]["completion"].as_i64() > Some(0),
        "the tokens seen are counted: {report:#}"
    );

    let probe = Probe::connect(&redis.url(), WAIT).await;
    let records: Vec<Value> = audit_log(&probe).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    for record in records {
        assert_eq!(record["outcome"], "error", "{record:#}");
        assert_eq!(record["partial"], true, "{record:#}");
        // "Echo: one two three..." was cut in half: some of it was seen.
        assert!(
            record["actual"]["completion"].as_u64() > Some(0),
            "{record:#}"
        );
    }
}
