//! Sockets that never send a request are closed after `server.header_read_timeout`, and no
//! more than `server.max_connections` are served at once: the next waits for a free slot
//! while the work on the open ones goes on.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

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
