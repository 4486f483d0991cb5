//! An upstream error answer far larger than a context-length error: thrifty reads only its
//! start to look for one, and streams the rest through byte for byte without holding it.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use rstest::rstest;

use crate::common::fake_llm::{BIG_ERROR_BYTES, FakeLlm, big_error_body};
use crate::common::thrifty::{Thrifty, config_for};
use crate::{Dialect, WAIT, client, read_stream};

/// How long the client waits for what thrifty must pass on before the upstream sends the
/// second half of its body (it holds it for 10 s).
const BEFORE_RELEASE: Duration = Duration::from_secs(5);

#[rstest]
#[tokio::test]
async fn a_large_error_answer_streams_through_before_the_upstream_finishes_it(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let sent = client()
        .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
        .json(&dialect.chat("big-error", "will this fail?", false))
        .send();
    let response = tokio::time::timeout(BEFORE_RELEASE, sent)
        .await
        .unwrap_or_else(|_| {
            panic!("{dialect:?}: the error's head arrives while the upstream holds half its body")
        })
        .expect("sent");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = response.bytes_stream();
    let mut got = Vec::new();
    while got.len() < BIG_ERROR_BYTES / 4 {
        let chunk = tokio::time::timeout(BEFORE_RELEASE, body.next())
            .await
            .unwrap_or_else(|_| panic!("{dialect:?}: the first half streams on without the second"))
            .expect("the body goes on")
            .expect("the chunk is not an error");
        got.extend_from_slice(&chunk);
    }
    fake.release_big_errors();
    let streamed = read_stream(body, got, WAIT).await;
    assert!(!streamed.failed, "{dialect:?}");
    let expected = big_error_body(dialect == crate::Dialect::Ollama);
    assert_eq!(streamed.bytes.len(), expected.len(), "{dialect:?}");
    assert!(
        streamed.bytes == expected,
        "{dialect:?}: the client got the upstream's bytes"
    );
    assert_eq!(fake.calls(), 1, "{dialect:?}: one call, no retry");
}
