//! Sockets that never send a request are closed after `server.header_read_timeout`, and no
//! more than `server.max_connections` are served at once: the next waits for a free slot
//! while the work on the open ones goes on. On a TLS listener the deadline covers the
//! handshake: a socket that never starts it is closed as a silent plain one is. A connection
//! with no request in flight for `server.idle_timeout` is closed too, whatever its protocol.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::StatusCode;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use thrifty::config::RawTls;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::dialect::Dialect;
use crate::common::fake_llm::{FakeLlm, SLOW_STREAM_WORDS};
use crate::common::thrifty::{Thrifty, config_for};
use crate::{WAIT, client, read_stream};

const HEADER_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn silent_sockets_are_closed_and_connections_beyond_the_cap_wait() {
    // 200 words 10 ms apart: a stream of about two seconds.
    let fake = FakeLlm::builder()
        .chunk_delay(Duration::from_millis(10))
        .start()
        .await;
    let mut raw = config_for(&fake);
    raw.server.header_read_timeout = HEADER_TIMEOUT;
    raw.server.max_connections = 2;
    let thrifty = Thrifty::start(raw).await;

    // The first slot: a stream in flight.
    let streaming = client()
        .post(format!("{}{}", thrifty.url(), Dialect::OpenAi.chat_path()))
        .json(&Dialect::OpenAi.chat("slow-stream", "go on", true))
        .send()
        .await
        .expect("sent");
    assert_eq!(streaming.status(), StatusCode::OK);
    let stream = tokio::spawn(read_stream(streaming.bytes_stream(), Vec::new(), WAIT));

    // The second slot: a socket that never sends a byte.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(thrifty.addr()).await.expect("connect");
    let closed = tokio::spawn(async move {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(WAIT, silent.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "the silent socket is closed by thrifty: {read:?}"
        );
        opened.elapsed()
    });

    // A third client: it waits for a free slot, which the silent socket gives up.
    let asked = Instant::now();
    let health = client()
        .get(format!("{}/healthz", thrifty.url()))
        .send()
        .await
        .expect("the third client is served once a slot is free");
    assert_eq!(health.status(), StatusCode::OK);
    let waited = asked.elapsed();

    let silent_for = closed.await.expect("silent socket task");
    assert!(
        silent_for >= HEADER_TIMEOUT - Duration::from_millis(50) && silent_for < WAIT,
        "the silent socket lived {silent_for:?}, the header read timeout is {HEADER_TIMEOUT:?}"
    );
    assert!(
        waited >= HEADER_TIMEOUT / 2,
        "the third client waited for a slot ({waited:?}) rather than being served at once"
    );

    let streamed = stream.await.expect("stream task");
    assert!(!streamed.failed, "the stream in flight went on");
    let text = String::from_utf8_lossy(&streamed.bytes);
    assert_eq!(
        text.matches("word").count(),
        SLOW_STREAM_WORDS,
        "the stream in flight finished whole"
    );
    assert!(text.contains("data: [DONE]"));
}

/// Reads `socket` until thrifty closes it and returns how long it lived since `opened`.
async fn lifetime(mut socket: impl AsyncRead + Unpin, opened: Instant, what: &str) -> Duration {
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(WAIT, socket.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "{what}: the socket is closed by thrifty: {read:?}"
    );
    opened.elapsed()
}

/// A TLS connector trusting only `pem`, for a client that shakes hands and then stays silent.
fn connector(pem: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(pem).expect("PEM certificate"))
        .expect("a trusted root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn silent_sockets_are_closed_on_a_tls_listener_too() {
    let fake = FakeLlm::start().await;
    let dir = fake.scratch_dir("tls");
    thrifty::tls::write_self_signed(&dir).expect("self-signed certificate");
    let (cert, key) = (dir.join("localhost.pem"), dir.join("localhost-key.pem"));
    let mut raw = config_for(&fake);
    raw.server.header_read_timeout = HEADER_TIMEOUT;
    raw.server.tls = Some(RawTls {
        cert: cert.clone(),
        key,
    });
    let thrifty = Thrifty::start(raw).await;
    let pem = std::fs::read(&cert).expect("read certificate");

    // A socket that never starts the handshake.
    let opened = Instant::now();
    let silent = TcpStream::connect(thrifty.addr()).await.expect("connect");
    let never_shook = tokio::spawn(lifetime(silent, opened, "no handshake"));

    // A socket that finishes the handshake and then sends nothing: the deadline runs from
    // accept, the handshake included.
    let opened = Instant::now();
    let tcp = TcpStream::connect(thrifty.addr()).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("a server name");
    let shook = connector(&pem)
        .connect(name, tcp)
        .await
        .expect("the TLS handshake completes");
    let never_asked = tokio::spawn(lifetime(shook, opened, "no request after the handshake"));

    // Meanwhile a client that speaks is served.
    let https = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM certificate"))
        .no_proxy()
        .build()
        .expect("TLS client");
    let health = https
        .get(format!(
            "https://localhost:{}/healthz",
            thrifty.addr().port()
        ))
        .send()
        .await
        .expect("HTTPS request is sent");
    assert_eq!(health.status(), StatusCode::OK);

    for (what, task) in [
        ("no handshake", never_shook),
        ("no request after the handshake", never_asked),
    ] {
        let lived = task.await.expect("socket task");
        assert!(
            lived >= HEADER_TIMEOUT - Duration::from_millis(50) && lived < WAIT,
            "{what}: the socket lived {lived:?}, the header read timeout is {HEADER_TIMEOUT:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The idle timeout of the idle-connection test.
const IDLE_TIMEOUT: Duration = Duration::from_millis(500);

/// A connection with no request in flight for `server.idle_timeout` is closed, over HTTP/2 as
/// over HTTP/1.1, while a response that streams for four times as long keeps its own open.
#[tokio::test]
async fn idle_connections_are_closed_and_streaming_ones_are_not() {
    // 200 words 10 ms apart: a stream of about two seconds.
    let fake = FakeLlm::builder()
        .chunk_delay(Duration::from_millis(10))
        .start()
        .await;
    let mut raw = config_for(&fake);
    raw.server.idle_timeout = IDLE_TIMEOUT;
    let thrifty = Thrifty::start(raw).await;
    let chat = serde_json::to_vec(&Dialect::OpenAi.chat("slow-stream", "take your time", true))
        .expect("a JSON body");
    let request = |path: &str, body: &[u8]| {
        hyper::Request::post(format!("{}{path}", thrifty.url()))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
                body,
            )))
            .expect("a request")
    };

    // HTTP/2 with prior knowledge: a stream outlives the idle timeout four times over.
    let io = TokioIo::new(TcpStream::connect(thrifty.addr()).await.expect("connect"));
    let (mut h2, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("an HTTP/2 handshake");
    let h2_open = tokio::spawn(connection);
    let asked = Instant::now();
    let response = h2
        .send_request(request(Dialect::OpenAi.chat_path(), &chat))
        .await
        .expect("an answer over HTTP/2");
    assert_eq!(response.status(), StatusCode::OK);
    let streamed = response
        .into_body()
        .collect()
        .await
        .expect("the whole stream arrives")
        .to_bytes();
    assert!(
        asked.elapsed() > IDLE_TIMEOUT * 3,
        "the stream ran past the idle timeout: {:?}",
        asked.elapsed()
    );
    assert!(
        Dialect::OpenAi.has_terminal_event(&streamed),
        "the stream ended whole, its connection open all along"
    );
    let idle_from = Instant::now();
    let ended = tokio::time::timeout(WAIT, h2_open).await;
    assert!(
        matches!(ended, Ok(Ok(_))),
        "the idle HTTP/2 connection is closed: {ended:?}"
    );
    let idled = idle_from.elapsed();
    assert!(
        idled >= IDLE_TIMEOUT - Duration::from_millis(50) && idled < IDLE_TIMEOUT * 6,
        "closed after the idle timeout, not before: {idled:?}"
    );

    // HTTP/1.1 keep-alive: the same after an answer.
    let io = TokioIo::new(TcpStream::connect(thrifty.addr()).await.expect("connect"));
    let (mut h1, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("an HTTP/1.1 handshake");
    let h1_open = tokio::spawn(connection);
    let answer = h1
        .send_request(request(Dialect::OpenAi.chat_path(), &chat))
        .await
        .expect("an answer over HTTP/1.1");
    assert_eq!(answer.status(), StatusCode::OK);
    answer
        .into_body()
        .collect()
        .await
        .expect("the whole answer");
    let idle_from = Instant::now();
    let ended = tokio::time::timeout(WAIT, h1_open).await;
    assert!(
        matches!(ended, Ok(Ok(_))),
        "the idle keep-alive connection is closed: {ended:?}"
    );
    assert!(
        idle_from.elapsed() >= IDLE_TIMEOUT - Duration::from_millis(50),
        "closed after the idle timeout, not before: {:?}",
        idle_from.elapsed()
    );
}
