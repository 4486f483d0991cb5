//! thrifty under faults and abuse, driven over real sockets against the fake upstream and a
//! private `redis-server`. The scenarios live in `tests/reliability/`, one file per fault:
//!
//! - `shutdown`: streams still running when the grace period ends are cut and recorded.
//! - `streams`: upstreams that break a stream off, midway or after its terminal event.
//! - `errors`: an upstream error answer too large to hold.
//! - `connections`: silent sockets and the connection cap.
//! - `ledger`: clients that invent model names or rotate tokens.
//! - `admin`: the dashboard cookie's lifetime.

mod common;

#[path = "reliability/admin.rs"]
mod admin;
#[path = "reliability/connections.rs"]
mod connections;
#[path = "reliability/errors.rs"]
mod errors;
#[path = "reliability/ledger.rs"]
mod ledger;
#[path = "reliability/shutdown.rs"]
mod shutdown;
#[path = "reliability/streams.rs"]
mod streams;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use common::client::{ADMIN_TOKEN, Probe};
use common::dialect::Dialect;
use common::redis::RedisServer;

/// How long any single wait in these tests may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// The Redis key of the ledger's audit log.
pub const AUDIT_LOG: &str = "thrifty:v1:{savings}:log";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// The environment of a thrifty that keeps its store in `redis`, with the admin API on.
pub fn redis_env(redis: &RedisServer) -> Vec<(String, String)> {
    vec![
        ("THRIFTY_REDIS_URL".to_owned(), redis.url()),
        ("THRIFTY_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
    ]
}

impl Dialect {
    pub fn chat(self, model: &str, question: &str, stream: bool) -> Value {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "stream": stream,
        })
    }

    /// Whether `body` holds the stream's terminal event.
    pub fn has_terminal_event(self, body: &[u8]) -> bool {
        let text = String::from_utf8_lossy(body);
        match self {
            Dialect::OpenAi => text.contains("data: [DONE]"),
            Dialect::Ollama => text.contains("\"done\":true"),
        }
    }
}

/// A streamed body read until it ends, fails or `within` passes.
pub struct Streamed {
    pub bytes: Vec<u8>,
    /// The body failed (a transport error) rather than ending.
    pub failed: bool,
}

pub async fn read_stream(
    mut body: impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    mut bytes: Vec<u8>,
    within: Duration,
) -> Streamed {
    let mut failed = false;
    let read = async {
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("the stream ends or fails in time");
    Streamed { bytes, failed }
}

/// The audit log's records as JSON, oldest first.
pub async fn audit_log(probe: &Probe) -> Vec<Value> {
    let raw: Vec<String> = probe
        .query(redis::cmd("LRANGE").arg(AUDIT_LOG).arg(0).arg(-1))
        .await;
    raw.iter()
        .map(|r| serde_json::from_str(r).expect("audit entries are JSON"))
        .collect()
}
