//! What the client sees when its request is bad, the upstream fails or is slow, or the
//! connection carries garbage: an error in its own dialect's shape, never a hang or a crash.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::fake_llm::FakeLlm;
use crate::common::thrifty::{Thrifty, config_for};
use crate::{
    Call, DIALECTS, Dialect, Reply, WAIT, assert_status, client, closed_port_url, content_type,
    get, header, is_json, post, read_stream, upstream_of,
};

/// POSTs raw bytes as JSON.
async fn post_bytes(url: String, body: impl Into<reqwest::Body>) -> Reply {
    let response = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request is sent");
    Reply::read(response, WAIT).await
}

async fn bad_requests_are_refused(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let thrifty =
        Thrifty::start_with_env(config_for(&fake), &[("THRIFTY_ADMIN_TOKEN", "adm")]).await;
    let url = |call: Call| format!("{}{}", thrifty.url(), dialect.path(call));

    // Bytes that are not JSON are thrifty's to refuse.
    for garbage in [
        &b"{\"model\": \"gpt-4o-mini\", \"messages\": ["[..],
        b"",
        b"\xff\xfe",
    ] {
        let answer = post_bytes(url(Call::Chat), garbage.to_vec()).await;
        assert_status(&answer, StatusCode::BAD_REQUEST, "malformed JSON");
        assert!(is_json(content_type(&answer)));
        let message = dialect.assert_error(&answer.json(), None);
        assert!(message.contains("JSON"), "{dialect:?}: {message}");
    }
    assert_eq!(
        fake.calls(),
        0,
        "{dialect:?}: bytes that are not JSON never reach the upstream"
    );

    // JSON thrifty cannot read as a call is the upstream's to judge: the client gets the
    // upstream's own answer, byte for byte, as if it had called it directly.
    let mut undecodable = vec![
        (Call::Chat, json!(["not", "an", "object"])),
        (
            Call::Chat,
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        ),
        (Call::Embedding, json!({"model": "e"})),
        (Call::Chat, json!({"model": 42, "messages": []})),
    ];
    if dialect == Dialect::OpenAi {
        // Ollama lets a chat without messages load the model; OpenAI requires them.
        undecodable.push((Call::Chat, json!({"model": "gpt-4o-mini"})));
    }
    // One the upstream takes (thrifty reads `stream` as a boolean only; the upstream does not
    // mind), the rest it refuses.
    let accepted = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": "no"
    });
    undecodable.push((Call::Chat, accepted.clone()));
    let forwarded = 2 * undecodable.len() as u64;
    for (call, body) in undecodable {
        let direct = post(format!("{}{}", fake.url(), dialect.path(call)), &body).await;
        let calls = fake.calls();
        let answer = post(url(call), &body).await;
        assert_eq!(fake.calls(), calls + 1, "{dialect:?}: {body} went upstream");
        assert_eq!(answer.status, direct.status, "{dialect:?}: {body}");
        // The upstream numbers and dates its answers (one JSON, or NDJSON lines); everything
        // else is the same.
        let unnumbered = |answer: &Reply| -> Vec<Value> {
            answer
                .text()
                .lines()
                .map(|line| {
                    let mut json: Value = serde_json::from_str(line).expect("JSON line");
                    if let Some(object) = json.as_object_mut() {
                        for field in ["id", "created", "created_at"] {
                            object.remove(field);
                        }
                    }
                    json
                })
                .collect()
        };
        assert_eq!(
            unnumbered(&answer),
            unnumbered(&direct),
            "{dialect:?}: {body}: the upstream's own words"
        );
        assert_eq!(
            header(&answer.headers, "x-thrifty-cache"),
            "bypass",
            "{body}"
        );
        // Never cached: the same body goes upstream again.
        post(url(call), &body).await;
        assert_eq!(fake.calls(), calls + 2, "{dialect:?}: {body} is not cached");
    }
    // Each went on the books: the accepted one twice as a bypass, the refused ones as errors;
    // the garbage, which reached no upstream, not at all.
    let report = thrifty.savings("format=json", "adm", forwarded).await;
    assert_eq!(report["total"]["requests"], forwarded, "{report}");
    assert_eq!(report["total"]["outcomes"]["bypass"], 2, "{report}");
    assert_eq!(
        report["total"]["outcomes"]["error"],
        forwarded - 2,
        "{report}"
    );
}

#[rstest]
#[tokio::test]
async fn malformed_and_incomplete_requests_get_a_400_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    bad_requests_are_refused(dialect).await;
}

async fn large_bodies_are_refused(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.server.max_body_bytes = 1024;
    let thrifty = Thrifty::start(raw).await;
    let url = format!("{}{}", thrifty.url(), dialect.chat_path());
    let body = dialect
        .chat("gpt-4o-mini", &"lorem ipsum ".repeat(400))
        .to_string();
    assert!(body.len() > 4096);

    let sized = reqwest::Body::from(body.clone());
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(
        body.as_bytes()
            .chunks(256)
            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
            .collect::<Vec<_>>(),
    ));
    for (how, upload) in [("content-length", sized), ("chunked", chunked)] {
        let answer = post_bytes(url.clone(), upload).await;
        assert_status(&answer, StatusCode::PAYLOAD_TOO_LARGE, how);
        let message = dialect.assert_error(&answer.json(), Some("request_too_large"));
        assert!(
            message.contains("1024"),
            "{how}: names the limit: {message}"
        );
    }

    let small = post(url, &dialect.chat("gpt-4o-mini", "hi")).await;
    assert_status(&small, StatusCode::OK, "a body under the limit");
    assert_eq!(
        fake.calls(),
        1,
        "{dialect:?}: only the small body went upstream"
    );
}

#[rstest]
#[tokio::test]
async fn bodies_over_the_limit_get_a_413_with_or_without_a_length_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    large_bodies_are_refused(dialect).await;
}

#[rstest]
#[tokio::test]
async fn an_unreachable_upstream_is_a_502_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let closed = closed_port_url();
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.upstreams[0].base_url = format!("{closed}/v1");
    raw.upstreams[1].base_url = closed;
    let thrifty = Thrifty::start(raw).await;
    let started = Instant::now();
    let answer = post(
        format!("{}{}", thrifty.url(), dialect.chat_path()),
        &dialect.chat("gpt-4o-mini", "hi"),
    )
    .await;
    assert_status(&answer, StatusCode::BAD_GATEWAY, "closed port");
    dialect.assert_error(&answer.json(), Some("upstream_unavailable"));
    assert!(started.elapsed() < WAIT, "a refused connection fails fast");

    let listing = get(format!("{}{}", thrifty.url(), dialect.models_path())).await;
    assert_status(
        &listing,
        StatusCode::BAD_GATEWAY,
        "closed port, passthrough",
    );
    dialect.assert_error(&listing.json(), Some("upstream_unavailable"));
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504_after_the_first_byte_timeout() {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    let timeout = Duration::from_millis(300);
    for upstream in &mut raw.upstreams {
        upstream.first_byte_timeout = timeout;
    }
    let thrifty = Thrifty::start(raw).await;
    for (n, dialect) in DIALECTS.into_iter().enumerate() {
        let started = Instant::now();
        let answer = post(
            format!("{}{}", thrifty.url(), dialect.chat_path()),
            &dialect.chat("hang", "hi"),
        )
        .await;
        let waited = started.elapsed();
        assert_status(&answer, StatusCode::GATEWAY_TIMEOUT, "hang");
        dialect.assert_error(&answer.json(), Some("upstream_timeout"));
        assert!(
            waited >= timeout && waited < timeout + Duration::from_secs(3),
            "{dialect:?}: answered after {waited:?} for a {timeout:?} timeout"
        );
        assert!(
            fake.wait_for_cancelled_hangs(n + 1, WAIT).await,
            "{dialect:?}: thrifty let go of the upstream request it gave up on"
        );
    }
}

/// Upstream errors reach the client as the upstream sent them.
async fn upstream_errors_pass_through(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    for (model, status) in [
        ("fail-400", StatusCode::BAD_REQUEST),
        ("fail-429", StatusCode::TOO_MANY_REQUESTS),
        ("fail-500", StatusCode::INTERNAL_SERVER_ERROR),
        ("context-overflow", StatusCode::BAD_REQUEST),
    ] {
        let request = dialect.chat(model, "hi");
        let proxied = post(
            format!("{}{}", thrifty.url(), dialect.chat_path()),
            &request,
        )
        .await;
        let direct = post(format!("{}{}", fake.url(), dialect.chat_path()), &request).await;
        assert_eq!(direct.status, status, "the fake's {model}");
        assert_eq!(proxied.status, status, "{dialect:?} {model}: status");
        assert_eq!(
            proxied.text(),
            direct.text(),
            "{dialect:?} {model}: the upstream's body"
        );
        assert_eq!(content_type(&proxied), content_type(&direct));
        assert_eq!(
            header(&proxied.headers, "retry-after"),
            header(&direct.headers, "retry-after"),
            "{dialect:?} {model}: retry-after"
        );
        assert_eq!(upstream_of(&proxied), dialect.default_upstream());
    }
}

#[rstest]
#[tokio::test]
async fn upstream_errors_pass_through_unchanged_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    upstream_errors_pass_through(dialect).await;
}

#[tokio::test]
async fn unknown_paths_are_a_json_404() {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    for (method, path) in [
        (reqwest::Method::GET, "/v2/models"),
        (reqwest::Method::POST, "/chat/completions"),
        (reqwest::Method::GET, "/apis/tags"),
    ] {
        let response = client()
            .request(method.clone(), format!("{}{path}", thrifty.url()))
            .send()
            .await
            .expect("request is sent");
        let answer = Reply::read(response, WAIT).await;
        assert_status(&answer, StatusCode::NOT_FOUND, path);
        assert!(is_json(content_type(&answer)), "{method} {path}");
        Dialect::OpenAi.assert_error(&answer.json(), Some("not_found"));
        assert!(!header(&answer.headers, "x-thrifty-request-id").is_empty());
    }
    assert_eq!(fake.calls(), 0);
}

/// Writes `bytes` on a fresh connection, half-closes it and reads whatever comes back.
async fn send_raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may close the connection before it has read everything; that is its right.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closes a garbage connection");
    answer
}

#[rstest]
#[tokio::test]
async fn garbage_on_the_socket_does_not_take_the_server_down(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let junk: Vec<u8> = (0..=255_u8).cycle().take(4096).collect();
    let cases: [&[u8]; 6] = [
        &junk,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello tls\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mo",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\xff\xff\xff\xff\xff",
        b"GET /\x00\x01 HTTP/1.1\r\n\xff: \xfe\r\n\r\n",
    ];
    for case in cases {
        let answer = send_raw(thrifty.addr(), case).await;
        let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
        assert!(
            !head.starts_with("HTTP/1.1 2"),
            "garbage was not answered as a success: {head:?}"
        );
    }
    assert_eq!(fake.calls(), 0, "garbage never reaches the upstream");

    let health = get(format!("{}/healthz", thrifty.url())).await;
    assert_status(&health, StatusCode::OK, "health after garbage");
    let answer = post(
        format!("{}{}", thrifty.url(), dialect.chat_path()),
        &dialect.chat("gpt-4o-mini", "still there?"),
    )
    .await;
    assert_status(&answer, StatusCode::OK, "a normal request after garbage");
}

async fn idle_streams_are_cut(dialect: Dialect) {
    let fake = FakeLlm::builder()
        .chunk_delay(Duration::from_millis(1500))
        .start()
        .await;
    let mut raw = config_for(&fake);
    let idle = Duration::from_millis(200);
    for upstream in &mut raw.upstreams {
        upstream.idle_timeout = idle;
    }
    let thrifty = Thrifty::start(raw).await;
    let started = Instant::now();
    let response = client()
        .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
        .json(&dialect.streaming(Call::Chat, "slow-stream", "go"))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), "content-type"),
        dialect.stream_content_type()
    );
    let streamed = read_stream(response).await;
    assert!(
        streamed.error.is_some(),
        "{dialect:?}: a stream that went quiet ends in an error, not as if complete"
    );
    let text = streamed.text();
    let complete = match dialect {
        Dialect::OpenAi => text.contains("[DONE]"),
        Dialect::Ollama => text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .any(|line| line["done"] == true),
    };
    assert!(
        !complete,
        "{dialect:?}: the stream did not claim to be done"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500) + idle,
        "{dialect:?}: cut after {:?}, before the upstream's next chunk",
        started.elapsed()
    );
    assert!(
        fake.wait_for_cancelled(1, WAIT).await,
        "{dialect:?}: the upstream stream was released"
    );
}

#[rstest]
#[tokio::test]
async fn a_stream_that_goes_quiet_is_cut_after_the_idle_timeout_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    idle_streams_are_cut(dialect).await;
}
