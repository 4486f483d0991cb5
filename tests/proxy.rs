//! thrifty as a reverse proxy, driven over real sockets against the fake upstream.
//!
//! Every scenario that exists in both wire formats runs for both dialects through one helper
//! that takes a [`Dialect`]. The scenarios live in `tests/proxy/`, one file per concern:
//!
//! - `forwarding`: intercepted calls reach the upstream unchanged and come back unchanged,
//!   streamed ones chunk by chunk.
//! - `passthrough`: every other API path, bodies byte for byte, header hygiene.
//! - `routing`: model globs choose the upstream.
//! - `access`: client keys and rate limits.
//! - `errors`: what the client sees when the request, the upstream or the connection is bad.
//! - `transport`: TLS, client disconnects and graceful shutdown.

mod common;

#[path = "proxy/access.rs"]
mod access;
#[path = "proxy/errors.rs"]
mod errors;
#[path = "proxy/forwarding.rs"]
mod forwarding;
#[path = "proxy/passthrough.rs"]
mod passthrough;
#[path = "proxy/routing.rs"]
mod routing;
#[path = "proxy/transport.rs"]
mod transport;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Value, json};

pub use common::client::Reply;
pub use common::dialect::{DIALECTS, Dialect};

/// How long any single wait in these tests may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// The intercepted calls both dialects have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Chat,
    Completion,
    Embedding,
}

pub const CALLS: [Call; 3] = [Call::Chat, Call::Completion, Call::Embedding];

impl Dialect {
    /// The path of `call` on thrifty and on a same-dialect upstream.
    pub fn path(self, call: Call) -> &'static str {
        match call {
            Call::Chat => self.chat_path(),
            Call::Completion => self.completion_path(),
            Call::Embedding => self.embed_path(),
        }
    }

    /// The upstream `common::thrifty::config_for` serves this dialect from.
    pub fn default_upstream(self) -> &'static str {
        self.name()
    }

    /// A non-streaming request for `call` with a few fields thrifty has no reason to touch.
    pub fn request(self, call: Call, model: &str, text: &str) -> Value {
        match (self, call) {
            (Dialect::OpenAi, Call::Chat) => json!({
                "model": model,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": text}
                ],
                "temperature": 0.2,
                "user": "user-1234"
            }),
            (Dialect::OpenAi, Call::Completion) => {
                json!({"model": model, "prompt": text, "max_tokens": 16})
            }
            (Dialect::OpenAi, Call::Embedding) => {
                json!({"model": model, "input": [text, "second input"]})
            }
            (Dialect::Ollama, Call::Chat) => json!({
                "model": model,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": text}
                ],
                "stream": false,
                "options": {"temperature": 0.2},
                "keep_alive": "5m"
            }),
            (Dialect::Ollama, Call::Completion) => {
                json!({"model": model, "prompt": text, "stream": false, "options": {"seed": 7}})
            }
            (Dialect::Ollama, Call::Embedding) => {
                json!({"model": model, "input": [text, "second input"]})
            }
        }
    }

    /// A non-streaming chat request.
    pub fn chat(self, model: &str, text: &str) -> Value {
        self.request(Call::Chat, model, text)
    }

    /// A streaming request for a chat or completion: OpenAI opts in, Ollama streams by default.
    pub fn streaming(self, call: Call, model: &str, text: &str) -> Value {
        let mut body = self.request(call, model, text);
        match self {
            Dialect::OpenAi => body["stream"] = json!(true),
            Dialect::Ollama => {
                if let Some(object) = body.as_object_mut() {
                    object.shift_remove("stream");
                }
            }
        }
        body
    }

    /// The content type of a streamed answer.
    pub fn stream_content_type(self) -> &'static str {
        match self {
            Dialect::OpenAi => "text/event-stream; charset=utf-8",
            Dialect::Ollama => "application/x-ndjson",
        }
    }

    /// The text a complete streamed body carries; panics when its framing or end marker is wrong.
    pub fn streamed_text(self, body: &str) -> String {
        let events: Vec<Value> = match self {
            Dialect::OpenAi => {
                let frames: Vec<&str> = body
                    .strip_suffix("\n\n")
                    .unwrap_or_else(|| panic!("SSE body does not end with a blank line: {body:?}"))
                    .split("\n\n")
                    .collect();
                let (done, events) = frames.split_last().expect("at least one SSE frame");
                assert_eq!(*done, "data: [DONE]", "the SSE stream ends with [DONE]");
                events
                    .iter()
                    .map(|frame| {
                        let data = frame
                            .strip_prefix("data: ")
                            .unwrap_or_else(|| panic!("SSE frame without `data: `: {frame:?}"));
                        serde_json::from_str(data).expect("SSE payload is JSON")
                    })
                    .collect()
            }
            Dialect::Ollama => {
                let events: Vec<Value> = body
                    .strip_suffix('\n')
                    .unwrap_or_else(|| panic!("NDJSON body does not end with a newline: {body:?}"))
                    .split('\n')
                    .map(|line| serde_json::from_str(line).expect("NDJSON line is JSON"))
                    .collect();
                let (last, rest) = events.split_last().expect("at least one NDJSON line");
                assert_eq!(last["done"], true, "the last NDJSON line says done: true");
                assert!(
                    rest.iter().all(|line| line["done"] == false),
                    "only the last NDJSON line is done"
                );
                events
            }
        };
        events
            .iter()
            .filter_map(|event| {
                [
                    "/choices/0/delta/content",
                    "/choices/0/text",
                    "/message/content",
                    "/response",
                ]
                .iter()
                .find_map(|pointer| event.pointer(pointer).and_then(Value::as_str))
            })
            .collect()
    }

    /// Checks that `body` is an error in this dialect's shape and returns its message.
    pub fn error_message(self, body: &Value) -> String {
        match self {
            Dialect::OpenAi => {
                let object = body.as_object().expect("error body is an object");
                assert_eq!(object.len(), 1, "only `error` at the top: {body}");
                let error = body["error"].as_object().expect("`error` is an object");
                let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
                keys.sort_unstable();
                assert_eq!(keys, ["code", "message", "param", "type"], "{body}");
                assert!(error["type"].is_string(), "{body}");
                assert!(
                    error["param"].is_string() || error["param"].is_null(),
                    "{body}"
                );
                assert!(
                    error["code"].is_string() || error["code"].is_null(),
                    "{body}"
                );
                let message = error["message"].as_str().expect("message is a string");
                assert!(!message.is_empty(), "{body}");
                message.to_owned()
            }
            Dialect::Ollama => {
                let object = body.as_object().expect("error body is an object");
                assert_eq!(object.len(), 1, "only `error` at the top: {body}");
                let message = body["error"].as_str().expect("`error` is a string");
                assert!(!message.is_empty(), "{body}");
                message.to_owned()
            }
        }
    }

    /// Checks an error body and, for OpenAI, its `code`.
    pub fn assert_error(self, body: &Value, openai_code: Option<&str>) -> String {
        let message = self.error_message(body);
        if self == Dialect::OpenAi {
            assert_eq!(body["error"]["code"].as_str(), openai_code, "{body}");
        }
        message
    }
}

/// `text` with a number no other call in this test binary gets, so that no two requests are
/// alike and no answer can come from thrifty's cache: these tests are about the way through.
pub fn unique(text: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    format!("{text} #{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A client that talks to 127.0.0.1 directly, whatever proxy the environment names.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// POSTs JSON and reads the whole answer.
pub async fn post(url: String, body: &Value) -> Reply {
    post_with(url, body, &[]).await
}

/// POSTs JSON with extra headers and reads the whole answer.
pub async fn post_with(url: String, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::read(request.send().await.expect("request is sent"), WAIT).await
}

/// GETs and reads the whole answer.
pub async fn get(url: String) -> Reply {
    Reply::read(
        client().get(url).send().await.expect("request is sent"),
        WAIT,
    )
    .await
}

/// A streamed body as the client saw it arrive.
pub struct Streamed {
    /// Each chunk with the time it arrived, counted from when reading began.
    pub chunks: Vec<(Duration, Bytes)>,
    /// The error that ended the stream early, if one did.
    pub error: Option<reqwest::Error>,
}

impl Streamed {
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self
            .chunks
            .iter()
            .flat_map(|(_, chunk)| chunk.to_vec())
            .collect();
        String::from_utf8(bytes).expect("UTF-8 stream")
    }

    /// Time between the first and the last chunk.
    pub fn spread(&self) -> Duration {
        match (self.chunks.first(), self.chunks.last()) {
            (Some((first, _)), Some((last, _))) => *last - *first,
            _ => Duration::ZERO,
        }
    }
}

/// Reads a response body chunk by chunk until it ends or fails, within `WAIT`.
pub async fn read_stream(response: reqwest::Response) -> Streamed {
    read_rest(response.bytes_stream(), Vec::new()).await
}

/// Reads the rest of a body stream, after `chunks` already read.
pub async fn read_rest(
    mut stream: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin,
    mut chunks: Vec<(Duration, Bytes)>,
) -> Streamed {
    let started = Instant::now();
    let mut error = None;
    let read = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => chunks.push((started.elapsed(), chunk)),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the stream ends within the wait");
    Streamed { chunks, error }
}

/// The text the fake's `slow-stream` model streams.
pub fn slow_text() -> String {
    (1..=common::fake_llm::SLOW_STREAM_WORDS)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A base URL on which nothing listens: a port that was just bound and released.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}")
}

/// Is `content_type` JSON?
pub fn is_json(content_type: &str) -> bool {
    content_type.starts_with("application/json")
}

/// Reports with what a test expected in the failure message.
pub fn assert_status(answer: &Reply, status: StatusCode, what: &str) {
    assert_eq!(
        answer.status,
        status,
        "{what}: body {}",
        String::from_utf8_lossy(&answer.body)
    );
}

/// The header that names the answering upstream, checked present.
pub fn upstream_of(answer: &Reply) -> &str {
    let name = header(&answer.headers, "x-thrifty-upstream");
    assert!(!name.is_empty(), "x-thrifty-upstream is set");
    name
}

/// The answer's content type; empty when absent.
pub fn content_type(answer: &Reply) -> &str {
    header(&answer.headers, CONTENT_TYPE.as_str())
}
