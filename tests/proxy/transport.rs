//! The connection around a request: HTTPS with HTTP/2 and HTTP/1.1, a client that leaves in
//! the middle of a stream, and a shutdown that lets in-flight streams finish.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{StatusCode, Version};
use rstest::rstest;
use thrifty::config::RawTls;
use tokio::net::TcpStream;

use crate::common::fake_llm::FakeLlm;
use crate::common::thrifty::{Thrifty, config_for};
use crate::{
    Call, Dialect, Reply, WAIT, assert_status, client, header, read_rest, read_stream, slow_text,
    unique,
};

/// A fresh directory under Cargo's scratch space for integration tests.
fn scratch_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()))
}

/// A client trusting only `cert`, speaking HTTP/2 or HTTP/1.1 as ALPN settles.
fn tls_client(cert: &[u8], http1_only: bool) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(cert).expect("PEM certificate");
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .no_proxy();
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("TLS client")
}

#[rstest]
#[tokio::test]
async fn https_serves_http2_and_http1_with_streams(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let dir = scratch_dir("tls");
    thrifty::tls::write_self_signed(&dir).expect("self-signed certificate");
    let (cert, key) = (dir.join("localhost.pem"), dir.join("localhost-key.pem"));
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.server.tls = Some(RawTls {
        cert: cert.clone(),
        key,
    });
    let thrifty = Thrifty::start(raw).await;
    let pem = std::fs::read(&cert).expect("read certificate");
    let port = thrifty.addr().port();

    for (http1_only, version) in [(false, Version::HTTP_2), (true, Version::HTTP_11)] {
        let client = tls_client(&pem, http1_only);
        for host in ["localhost", "127.0.0.1"] {
            let base = format!("https://{host}:{port}");
            let response = client
                .post(format!("{base}{}", dialect.chat_path()))
                .json(&dialect.chat("gpt-4o-mini", &unique("over tls")))
                .send()
                .await
                .expect("HTTPS request is sent");
            assert_eq!(response.version(), version, "{host} {dialect:?}");
            let answer = Reply::read(response, WAIT).await;
            assert_status(&answer, StatusCode::OK, "chat over HTTPS");

            let text = unique("stream over tls");
            let response = client
                .post(format!("{base}{}", dialect.chat_path()))
                .json(&dialect.streaming(Call::Chat, "gpt-4o-mini", &text))
                .send()
                .await
                .expect("HTTPS request is sent");
            assert_eq!(response.version(), version);
            assert_eq!(
                header(response.headers(), "content-type"),
                dialect.stream_content_type()
            );
            let streamed = read_stream(response).await;
            assert!(streamed.error.is_none(), "{:?}", streamed.error);
            assert_eq!(
                dialect.streamed_text(&streamed.text()),
                format!("Echo: {text}"),
                "{version:?} {dialect:?}"
            );
        }
    }

    // Plain HTTP on the TLS port is not served.
    let plain = client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        !matches!(plain, Ok(r) if r.status() == StatusCode::OK),
        "plain HTTP is refused on the HTTPS port"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn disconnects_cancel_the_upstream(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let response = client()
        .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
        .json(&dialect.streaming(Call::Chat, "slow-stream", "go"))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(WAIT, body.next()).await;
    assert!(
        matches!(first, Ok(Some(Ok(_)))),
        "{dialect:?}: the first chunk arrives"
    );
    drop(body);
    assert!(
        fake.wait_for_cancelled(1, WAIT).await,
        "{dialect:?}: the upstream stream stopped when the client left"
    );
}

#[rstest]
#[tokio::test]
async fn a_client_leaving_mid_stream_cancels_the_upstream_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    disconnects_cancel_the_upstream(dialect).await;
}

/// A client that gives up while the upstream is still thinking releases the upstream request.
async fn waiting_disconnects_cancel_the_upstream(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let request = client()
        .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
        .json(&dialect.chat("hang", "hi"))
        .send();
    let waiting = tokio::spawn(request);
    assert!(
        fake.wait_for_calls(1, WAIT).await,
        "{dialect:?}: the request reached the upstream"
    );
    waiting.abort();
    assert!(
        fake.wait_for_cancelled_hangs(1, WAIT).await,
        "{dialect:?}: the upstream request was released when the client left"
    );
}

#[rstest]
#[tokio::test]
async fn a_client_leaving_before_the_answer_cancels_the_upstream_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    waiting_disconnects_cancel_the_upstream(dialect).await;
}

async fn shutdown_lets_streams_finish(dialect: Dialect) {
    let fake = FakeLlm::builder()
        .chunk_delay(Duration::from_millis(10))
        .start()
        .await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let addr = thrifty.addr();
    let response = client()
        .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
        .json(&dialect.streaming(Call::Chat, "slow-stream", "go"))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(WAIT, body.next())
        .await
        .expect("the first chunk arrives in time")
        .expect("the stream has a first chunk")
        .expect("the first chunk is not an error");

    // Idle clients must not hold the shutdown up: one connected and silent, one keeping its
    // connection alive after a request. Connections are accepted in order, so the answer to the
    // second proves the first was accepted too.
    let _silent = TcpStream::connect(addr).await.expect("connect");
    let keep_alive = client();
    let health = keep_alive
        .get(format!("{}/healthz", thrifty.url()))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(health.status(), StatusCode::OK);
    health.bytes().await.expect("health body");

    let server = thrifty.begin_shutdown();

    // New connections are refused once the listener is closed.
    let refused = tokio::time::timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "{dialect:?}: new connections are refused after shutdown began"
    );

    let streamed = read_rest(body, vec![(Duration::ZERO, first)]).await;
    assert!(
        streamed.error.is_none(),
        "{dialect:?}: the in-flight stream finished: {:?}",
        streamed.error
    );
    assert_eq!(dialect.streamed_text(&streamed.text()), slow_text());

    let ended = tokio::time::timeout(WAIT, server).await;
    assert!(
        matches!(ended, Ok(Ok(()))),
        "{dialect:?}: the server task ended after its last stream, not after the grace period"
    );
    drop(keep_alive);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "{dialect:?}: nothing listens after shutdown"
    );
}

#[rstest]
#[tokio::test]
async fn shutdown_refuses_new_connections_but_lets_streams_finish_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    shutdown_lets_streams_finish(dialect).await;
}
