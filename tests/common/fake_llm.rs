//! A fake upstream LLM that speaks OpenAI's and Ollama's real wire formats over real HTTP.
//!
//! One server answers both dialects, as a real Ollama does: `/v1/*` is OpenAI, `/api/*` is
//! Ollama.
//! It records every request so tests can count how many calls reached the upstream (the direct
//! proof that a cache hit never left the proxy), and it notices streams whose client went away.
//! It must not depend on the crate under test, so that it checks the proxy against the formats
//! rather than against the proxy's own idea of them.
//!
//! Answers are deterministic:
//!
//! - Chat and generate answer `"Echo: " + the last user text` (the prompt for `/api/generate`
//!   and `/v1/completions`).
//!   When the request carries `tools` and that text contains "weather", the answer is a call
//!   of the first tool with the arguments `{"city":"Paris"}`.
//! - Prompt tokens are the whitespace-separated words of every message plus 3 per message;
//!   completion tokens are the words of the answer (for a tool call: the words of its name and
//!   of its arguments, that is 2).
//! - Embeddings are unit vectors of [`EMBEDDING_DIMENSIONS`] floats: the normalised sum of one
//!   SHA-256-derived vector per lowercased word, so equal texts get equal vectors and texts that
//!   share most words land close together.
//!   [`embedding_for`] computes the same vector for a test's expectations.
//!
//! Magic models drive the error paths on every endpoint: `fail-400` (and any name starting
//! with it, such as `fail-400-x`), `fail-429` (with `retry-after`), `fail-500` and
//! `context-overflow` answer with the requesting dialect's error body, and `window-N` answers `context-overflow` only when the prompt is over N tokens;
//! `hang` never sends response headers; `slow-stream` streams 200 words with a delay
//! between chunks (50 ms unless the builder sets `chunk_delay`); `quiet-*` models stream
//! OpenAI answers without a usage chunk even when asked for one.
//! `reset-midway` streams half of its answer and `reset-after-done` all of it, terminal event
//! included, and then each breaks the connection instead of ending the body.
//! `big-error` answers 500 with an error body of [`BIG_ERROR_BYTES`] ([`big_error_body`]
//! gives its bytes), sending the second half only once [`FakeLlm::release_big_errors`] is called
//! (or 10 s have passed).
//! Malformed JSON sent to a known JSON endpoint is a 400; any other `/v1/*` path (such as
//! `/v1/files`) accepts any body and echoes its length and SHA-256, to prove byte-for-byte
//! passthrough.
//! `n` is ignored: every answer has exactly one choice.
//! `POST /v1/responses` speaks the Responses API; its rules are in `fake_llm/responses.rs`.

#[path = "fake_llm/responses.rs"]
pub mod responses;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::dialect::Dialect;

/// The length of every embedding the fake returns before `dimensions` truncates it.
pub const EMBEDDING_DIMENSIONS: usize = 8;

/// How many words the `slow-stream` model streams.
pub const SLOW_STREAM_WORDS: usize = 200;

/// The delay between chunks of the `slow-stream` model when the builder sets none.
pub const SLOW_STREAM_DEFAULT_DELAY: Duration = Duration::from_millis(50);

/// The arguments of every tool call the fake makes.
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Paris"}"#;

/// Why a body broke off (the `reset-*` models).
type BoxError = Box<dyn StdError + Send + Sync>;

/// The response body type of every route.
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The size of the `big-error` model's error body.
pub const BIG_ERROR_BYTES: usize = 4 * 1024 * 1024;

/// How long a `big-error` body waits for [`FakeLlm::release_big_errors`] before its second half.
const BIG_ERROR_HOLD: Duration = Duration::from_secs(10);

const OPENAI_JSON: &str = "application/json";
const OLLAMA_JSON: &str = "application/json; charset=utf-8";
/// As OpenAI labels its streams.
const SSE: &str = "text/event-stream; charset=utf-8";
const NDJSON: &str = "application/x-ndjson";

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method, such as `POST`.
    pub method: String,
    /// The path and query, such as `/v1/chat/completions` or `/v1/files?purpose=batch`.
    pub path: String,
    /// Every request header.
    pub headers: HeaderMap,
    /// The body, byte for byte.
    pub body: Bytes,
}

impl Recorded {
    /// The body parsed as JSON, or `None` when it is not JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The path without its query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// Configures a [`FakeLlm`] before it starts.
#[derive(Debug, Clone, Default)]
pub struct FakeLlmBuilder {
    latency: Duration,
    chunk_delay: Option<Duration>,
    linger: Duration,
}

impl FakeLlmBuilder {
    /// Delays the response headers of every request by `latency` (for single-flight tests).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Waits `delay` between the chunks of every streamed response, `slow-stream` included.
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = Some(delay);
        self
    }

    /// Holds every stream open for `linger` after its last event before ending the body, as
    /// a slow upstream or a proxy in front of it may.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving; the server stops when the [`FakeLlm`] is dropped.
    pub async fn start(self) -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("fake llm could not bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake llm has no local address: {e}"));
        let state = Arc::new(State {
            latency: self.latency,
            chunk_delay: self.chunk_delay,
            linger: self.linger,
            requests: Mutex::new(Vec::new()),
            cancelled_streams: AtomicUsize::new(0),
            cancelled_hangs: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            changed: Notify::new(),
            released: watch::channel(false).0,
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&state)));
        let scratch = tempfile::Builder::new()
            .prefix("thrifty-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("fake llm could not create its scratch directory: {e}"));
        FakeLlm {
            addr,
            state,
            server,
            scratch,
        }
    }
}

/// A running fake upstream; dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct FakeLlm {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
    /// The test's scratch space (see [`FakeLlm::scratch_dir`]), removed when the fake drops.
    scratch: TempDir,
}

impl FakeLlm {
    /// Starts a fake with no latency and no chunk delay.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A new empty directory, removed with the fake, for the files of a thrifty in front of it
    /// (its embedded store): every test holds its fake until it ends, across restarts of thrifty.
    pub fn scratch_dir(&self, label: &str) -> PathBuf {
        tempfile::Builder::new()
            .prefix(&format!("{label}-"))
            .tempdir_in(self.scratch.path())
            .map(TempDir::keep)
            .unwrap_or_else(|e| panic!("fake llm could not create a {label} directory: {e}"))
    }

    /// A builder for a fake with latency or chunk delays.
    pub fn builder() -> FakeLlmBuilder {
        FakeLlmBuilder::default()
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL of the Ollama dialect.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL of the OpenAI dialect.
    pub fn openai_base(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// How many requests reached the fake since it started or was last reset.
    pub fn calls(&self) -> usize {
        self.state.lock().len()
    }

    /// How many requests reached `path`; a path without `?` ignores the query.
    pub fn calls_to(&self, path: &str) -> usize {
        self.state
            .lock()
            .iter()
            .filter(|r| r.path == path || r.path_only() == path)
            .count()
    }

    /// Every recorded request, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().clone()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<Recorded> {
        self.state.lock().last().cloned()
    }

    /// How many streams lost their client before the last chunk was handed over.
    pub fn cancelled_streams(&self) -> usize {
        self.state.cancelled_streams.load(Ordering::SeqCst)
    }

    /// How many `hang` requests were released because their client went away.
    pub fn cancelled_hangs(&self) -> usize {
        self.state.cancelled_hangs.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived; false when `timeout` passed first.
    pub async fn wait_for_calls(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.calls() >= n).await
    }

    /// Waits until at least `n` streams were cancelled; false when `timeout` passed first.
    pub async fn wait_for_cancelled(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.cancelled_streams() >= n)
            .await
    }

    /// Waits until at least `n` hung requests were released; false when `timeout` passed first.
    pub async fn wait_for_cancelled_hangs(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.cancelled_hangs() >= n)
            .await
    }

    /// Lets every `big-error` body, held or yet to come, send its second half.
    pub fn release_big_errors(&self) {
        self.state.released.send_replace(true);
    }

    /// Forgets the recorded requests and zeroes the cancellation counters.
    pub fn reset(&self) {
        self.state.lock().clear();
        self.state.cancelled_streams.store(0, Ordering::SeqCst);
        self.state.cancelled_hangs.store(0, Ordering::SeqCst);
    }

    /// Re-checks `done` every time the state changes, until it holds or `timeout` passes.
    async fn wait_until(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let wait = async {
            loop {
                let changed = self.state.changed.notified();
                tokio::pin!(changed);
                // Register before checking so that a change between the check and the await is
                // not lost.
                changed.as_mut().enable();
                if done() {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks, so aborting it closes every connection.
        self.server.abort();
    }
}

/// What the server shares between its connections and the test.
#[derive(Debug)]
struct State {
    latency: Duration,
    chunk_delay: Option<Duration>,
    linger: Duration,
    requests: Mutex<Vec<Recorded>>,
    cancelled_streams: AtomicUsize,
    cancelled_hangs: AtomicUsize,
    next_id: AtomicU64,
    /// Woken whenever a request is recorded or a counter grows.
    changed: Notify,
    /// Whether `big-error` bodies may send their second half.
    released: watch::Sender<bool>,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Recorded>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a request; returns how many there are now.
    fn record(&self, request: Recorded) -> usize {
        let mut requests = self.lock();
        requests.push(request);
        let n = requests.len();
        drop(requests);
        self.changed.notify_waiters();
        n
    }

    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// A fresh identifier such as `chatcmpl-fake000001`.
    fn id(&self, prefix: &str) -> String {
        format!(
            "{prefix}fake{:06}",
            self.next_id.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// The delay between streamed chunks for `model`.
    fn chunk_delay_for(&self, model: &str) -> Duration {
        match self.chunk_delay {
            Some(delay) => delay,
            None if model == "slow-stream" => SLOW_STREAM_DEFAULT_DELAY,
            None => Duration::ZERO,
        }
    }

    /// How a stream for `model` is paced and how it ends.
    fn pacing(&self, model: &str) -> Pacing {
        Pacing {
            delay: self.chunk_delay_for(model),
            reset: match model {
                "reset-midway" => Reset::Midway,
                "reset-after-done" => Reset::AfterLast,
                _ => Reset::Never,
            },
        }
    }
}

/// The delay between a stream's chunks, and where it breaks off.
#[derive(Debug, Clone, Copy)]
struct Pacing {
    delay: Duration,
    reset: Reset,
}

/// Where a stream breaks the connection instead of ending its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reset {
    Never,
    Midway,
    AfterLast,
}

/// The error a `reset-*` stream ends with.
#[derive(Debug)]
struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the fake upstream broke the connection")
    }
}

impl StdError for ConnectionReset {}

/// Counts a `hang` request as released when hyper drops its handler.
struct HangGuard(Arc<State>);

impl Drop for HangGuard {
    fn drop(&mut self) {
        self.0.bump(&self.0.cancelled_hangs);
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Like real servers: each chunk goes out at once instead of waiting for an ACK.
        let _ = stream.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&state), request));
            // A connection error only means the client went away; there is nothing to report.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The `x-request-id` the fake gives its OpenAI answer to the `n`th call (counting from 1).
pub fn request_id(n: usize) -> String {
    format!("req_fake{n:06}")
}

/// What a route decided: answer now, or hold the request until the client leaves.
enum Reply {
    Now(Response<Body>),
    Hang,
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|collected| collected.to_bytes()) else {
        return Ok(plain(StatusCode::BAD_REQUEST, "unreadable request body"));
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let call = state.record(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    match route(
        &state,
        &parts.method,
        parts.uri.path(),
        &path,
        &parts.headers,
        body,
    ) {
        Reply::Now(mut response) => {
            // OpenAI names every answer, errors included, with an id of its own.
            if Dialect::of(parts.uri.path()) == Dialect::OpenAi {
                let id = HeaderValue::from_str(&request_id(call)).expect("a header value");
                response.headers_mut().insert("x-request-id", id);
            }
            Ok(response)
        }
        Reply::Hang => {
            let _released = HangGuard(Arc::clone(&state));
            let never: Infallible = std::future::pending().await;
            match never {}
        }
    }
}

fn route(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Reply {
    let dialect = Dialect::of(path);
    let reply = match (method, path) {
        (&Method::GET, "/") => plain(StatusCode::OK, "Ollama is running"),
        (&Method::GET, "/v1/models") => dialect.json(StatusCode::OK, &openai_models()),
        (&Method::GET, "/api/tags") => dialect.json(StatusCode::OK, &ollama_tags()),
        (&Method::GET, "/api/version") => {
            dialect.json(StatusCode::OK, &json!({"version": "0.6.2"}))
        }
        (
            &Method::POST,
            "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/v1/responses"
            | "/api/chat"
            | "/api/generate"
            | "/api/embed"
            | "/api/embeddings"
            | "/api/show"
            | "/api/pull",
        ) => {
            let Some(request) = json_object(&body) else {
                return Reply::Now(dialect.error(&Failure::malformed_json()));
            };
            if let Some(failure) = invalid(dialect, path, &request) {
                return Reply::Now(dialect.error(&failure));
            }
            if let Some(reply) = magic(state, dialect, &request) {
                return reply;
            }
            match path {
                "/v1/chat/completions" => openai_chat(state, &request),
                "/v1/completions" => openai_completion(state, &request),
                "/v1/embeddings" => openai_embeddings(&request),
                "/v1/responses" => responses::answer(state, &request),
                "/api/chat" => ollama_chat(state, &request),
                "/api/generate" => ollama_generate(state, &request),
                "/api/embed" => ollama_embed(&request),
                "/api/embeddings" => ollama_legacy_embeddings(&request),
                "/api/show" => ollama_show(&request),
                _ => ollama_pull(state, &request),
            }
        }
        (_, p) if p.starts_with("/v1/") => {
            if let Some(reply) =
                json_object(&body).and_then(|request| magic(state, dialect, &request))
            {
                return reply;
            }
            passthrough_echo(method, path_and_query, headers, &body)
        }
        _ => plain(StatusCode::NOT_FOUND, "404 page not found"),
    };
    Reply::Now(reply)
}

/// What the real upstreams refuse before running a model: a request with no model name
/// (Ollama's `/api/show` and `/api/pull` take `name` instead), and an OpenAI request without
/// the endpoint's required parameter.
fn invalid(dialect: Dialect, path: &str, request: &Value) -> Option<Failure> {
    if path == "/v1/responses" {
        return invalid_response_request(request);
    }
    if model_of(request).is_empty() {
        return Some(match dialect {
            Dialect::OpenAi => Failure::invalid_request("you must provide a model parameter", None),
            Dialect::Ollama => Failure::invalid_request("model is required", None),
        });
    }
    let required = match path {
        "/v1/chat/completions" => "messages",
        "/v1/completions" => "prompt",
        "/v1/embeddings" => "input",
        _ => return None,
    };
    request.get(required).is_none().then(|| {
        Failure::invalid_request(
            match required {
                "messages" => "Missing required parameter: 'messages'.",
                "prompt" => "Missing required parameter: 'prompt'.",
                _ => "Missing required parameter: 'input'.",
            },
            Some(required),
        )
    })
}

/// What the Responses API refuses before running a model: no model (unless a stored prompt
/// names one), an `input` that is neither text nor a list of items, a tool output that names
/// no call.
fn invalid_response_request(request: &Value) -> Option<Failure> {
    if model_of(request).is_empty() && request.get("prompt").is_none() {
        return Some(Failure::invalid_request(
            "Missing required parameter: 'model'.",
            Some("model"),
        ));
    }
    match request.get("input") {
        None | Some(Value::String(_)) => None,
        Some(Value::Array(items)) => items
            .iter()
            .any(|item| item["type"] == "function_call_output" && !item["call_id"].is_string())
            .then(|| {
                Failure::invalid_request(
                    "Missing required parameter: 'input[0].call_id'.",
                    Some("input[0].call_id"),
                )
            }),
        Some(_) => Some(Failure::invalid_param(
            "Invalid type for 'input': expected one of a string or array of input items.",
            "input",
        )),
    }
}

/// The answer of a magic model, or `None` for an ordinary one.
fn magic(state: &Arc<State>, dialect: Dialect, request: &Value) -> Option<Reply> {
    let model = model_of(request);
    if let Some(window) = model.strip_prefix("window-").and_then(|w| w.parse().ok()) {
        return (prompt_tokens(request) > window)
            .then(|| Reply::Now(dialect.error(&Failure::context_overflow())));
    }
    let failure = match model {
        m if m.starts_with("fail-400") => Failure::bad_request(),
        "fail-429" => Failure::rate_limited(),
        "fail-500" => Failure::server_error(),
        "context-overflow" => Failure::context_overflow(),
        "hang" => return Some(Reply::Hang),
        "big-error" => return Some(Reply::Now(big_error(state, dialect))),
        _ => return None,
    };
    Some(Reply::Now(dialect.error(&failure)))
}

fn json_object(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn model_of(request: &Value) -> &str {
    request["model"]
        .as_str()
        .or_else(|| request["name"].as_str())
        .unwrap_or_default()
}

/// The fake's side of a dialect: which one a path belongs to, and its answers.
impl Dialect {
    fn of(path: &str) -> Self {
        if path.starts_with("/api/") {
            Self::Ollama
        } else {
            Self::OpenAi
        }
    }

    fn json(self, status: StatusCode, value: &Value) -> Response<Body> {
        let content_type = match self {
            Self::OpenAi => OPENAI_JSON,
            Self::Ollama => OLLAMA_JSON,
        };
        full(status, content_type, value.to_string())
    }

    /// Renders `failure` as this dialect's error body.
    fn error(self, failure: &Failure) -> Response<Body> {
        let body = match self {
            Self::OpenAi => json!({"error": {
                "message": failure.message,
                "type": failure.kind,
                "param": failure.param,
                "code": failure.code,
            }}),
            Self::Ollama => json!({"error": failure.ollama_message}),
        };
        let mut response = self.json(failure.status, &body);
        if failure.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// An error the fake answers with, in both dialects' words.
struct Failure {
    status: StatusCode,
    message: &'static str,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
    ollama_message: &'static str,
}

impl Failure {
    fn malformed_json() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)",
            kind: "invalid_request_error",
            param: None,
            code: None,
            ollama_message: "invalid character looking for beginning of value",
        }
    }

    fn bad_request() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: "The fake upstream was asked to reject this request (model fail-400).",
            kind: "invalid_request_error",
            param: None,
            code: None,
            ollama_message: "the fake upstream was asked to reject this request (model fail-400)",
        }
    }

    fn rate_limited() -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "Rate limit reached for fail-429 on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s.",
            kind: "requests",
            param: None,
            code: Some("rate_limit_exceeded"),
            ollama_message: "rate limit exceeded, please try again in 1s",
        }
    }

    fn server_error() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "The server had an error while processing your request. Sorry about that!",
            kind: "server_error",
            param: None,
            code: None,
            ollama_message: "llama runner process has terminated: exit status 2",
        }
    }

    fn context_overflow() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. Please reduce the length of the messages.",
            kind: "invalid_request_error",
            param: Some("messages"),
            code: Some("context_length_exceeded"),
            ollama_message: "the input length exceeds the context length",
        }
    }

    /// A refusal of the request's shape; OpenAI names a missing parameter in `param` and
    /// `code`.
    fn invalid_request(message: &'static str, missing: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
            kind: "invalid_request_error",
            param: missing,
            code: missing.map(|_| "missing_required_parameter"),
            ollama_message: message,
        }
    }

    fn previous_response_not_found() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: "Previous response with id not found.",
            kind: "invalid_request_error",
            param: Some("previous_response_id"),
            code: Some("previous_response_not_found"),
            ollama_message: "previous response not found",
        }
    }

    fn invalid_param(message: &'static str, param: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
            kind: "invalid_request_error",
            param: Some(param),
            code: None,
            ollama_message: message,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Answers shared by both dialects.
// ---------------------------------------------------------------------------------------------

/// What the assistant says.
enum Answer {
    Text(String),
    ToolCall { name: String },
}

impl Answer {
    /// The answer to a chat request in either dialect.
    fn for_chat(request: &Value) -> Self {
        if model_of(request) == "slow-stream" {
            return Self::Text(slow_text());
        }
        let question = request["messages"]
            .as_array()
            .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
            .map(|m| content_text(&m["content"]))
            .unwrap_or_default();
        let first_tool = request["tools"]
            .as_array()
            .and_then(|tools| tools.first())
            .and_then(|tool| tool["function"]["name"].as_str());
        match first_tool {
            Some(name) if question.to_lowercase().contains("weather") => Self::ToolCall {
                name: name.to_owned(),
            },
            _ => Self::Text(format!("Echo: {question}")),
        }
    }

    /// The answer to a prompt (legacy completions and Ollama's generate).
    fn for_prompt(model: &str, prompt: &str) -> String {
        if model == "slow-stream" {
            slow_text()
        } else {
            format!("Echo: {prompt}")
        }
    }

    fn completion_tokens(&self) -> usize {
        match self {
            Self::Text(text) => words(text),
            Self::ToolCall { name } => words(name) + words(TOOL_ARGUMENTS),
        }
    }
}

fn slow_text() -> String {
    (1..=SLOW_STREAM_WORDS)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text of a message's content: a string, or the `text` parts of an array joined by spaces.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|part| part["type"] == "text")
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Words of every message's content plus 3 per message.
fn prompt_tokens(request: &Value) -> usize {
    request["messages"].as_array().map_or(0, |messages| {
        messages
            .iter()
            .map(|m| words(&content_text(&m["content"])) + 3)
            .sum()
    })
}

/// Splits `text` into streamed pieces: each word with the whitespace before it, so that the
/// pieces concatenate back to `text` exactly.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() && in_word {
            out.push(std::mem::take(&mut current));
            in_word = false;
        }
        in_word |= !c.is_whitespace();
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn openai_usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

// ---------------------------------------------------------------------------------------------
// OpenAI.
// ---------------------------------------------------------------------------------------------

fn openai_chat(state: &Arc<State>, request: &Value) -> Response<Body> {
    let model = model_of(request);
    let answer = Answer::for_chat(request);
    let usage = openai_usage(prompt_tokens(request), answer.completion_tokens());
    let id = state.id("chatcmpl-");
    let created = unix_now();
    let call_id = state.id("call_");
    let finish_reason = match answer {
        Answer::Text(_) => "stop",
        Answer::ToolCall { .. } => "tool_calls",
    };

    if request["stream"].as_bool() != Some(true) {
        let message = match &answer {
            Answer::Text(text) => json!({"role": "assistant", "content": text, "refusal": null}),
            Answer::ToolCall { name } => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": TOOL_ARGUMENTS}
                }],
                "refusal": null
            }),
        };
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason
            }],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_fake"
        });
        return Dialect::OpenAi.json(StatusCode::OK, &body);
    }

    // `quiet-*` models ignore `stream_options`, as OpenAI-compatible servers that lack it do.
    let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true)
        && !model.starts_with("quiet-");
    let chunk = |choices: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let delta = |delta: Value, finish_reason: Value| {
        chunk(json!([{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason
        }]))
    };

    // As OpenAI streams: a text opens with empty content, a tool call with null content and
    // the call's head, its arguments following in short fragments.
    let mut events = Vec::new();
    match &answer {
        Answer::Text(text) => {
            events.push(delta(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ));
            events.extend(
                pieces(text)
                    .into_iter()
                    .map(|piece| delta(json!({"content": piece}), Value::Null)),
            );
        }
        Answer::ToolCall { name } => {
            events.push(delta(
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "index": 0,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""}
                    }],
                    "refusal": null
                }),
                Value::Null,
            ));
            let fragments: Vec<String> = TOOL_ARGUMENTS
                .chars()
                .collect::<Vec<_>>()
                .chunks(4)
                .map(|c| c.iter().collect())
                .collect();
            for piece in fragments {
                events.push(delta(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
        }
    }
    events.push(delta(json!({}), json!(finish_reason)));
    if include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage;
        events.push(last);
    }
    sse_response(state, &events, state.pacing(model))
}

fn openai_completion(state: &Arc<State>, request: &Value) -> Response<Body> {
    let model = model_of(request);
    // A prompt may be a string or an array of them; the fake answers the first one only.
    let prompt = match &request["prompt"] {
        Value::Array(prompts) => prompts.first().map(content_text).unwrap_or_default(),
        other => content_text(other),
    };
    let text = Answer::for_prompt(model, &prompt);
    let usage = openai_usage(words(&prompt), words(&text));
    let id = state.id("cmpl-");
    let created = unix_now();
    let choice = |text: &str, finish_reason: Value| json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}]);

    if request["stream"].as_bool() != Some(true) {
        let body = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choice(&text, json!("stop")),
            "usage": usage,
            "system_fingerprint": "fp_fake"
        });
        return Dialect::OpenAi.json(StatusCode::OK, &body);
    }

    // `quiet-*` models ignore `stream_options`, as OpenAI-compatible servers that lack it do.
    let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true)
        && !model.starts_with("quiet-");
    let chunk = |choices: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "choices": choices,
            "model": model,
            "system_fingerprint": "fp_fake",
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut events: Vec<Value> = pieces(&text)
        .iter()
        .map(|piece| chunk(choice(piece, Value::Null)))
        .collect();
    events.push(chunk(choice("", json!("stop"))));
    if include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage;
        events.push(last);
    }
    sse_response(state, &events, state.pacing(model))
}

/// One input of an embeddings request.
enum EmbedInput {
    Text(String),
    Tokens(Vec<i64>),
}

impl EmbedInput {
    fn embedding(&self) -> Vec<f32> {
        match self {
            Self::Text(text) => embedding_for(text),
            Self::Tokens(tokens) => {
                let words: Vec<String> = tokens.iter().map(i64::to_string).collect();
                embedding_of_words(&words, b"")
            }
        }
    }

    fn tokens(&self) -> usize {
        match self {
            Self::Text(text) => words(text),
            Self::Tokens(tokens) => tokens.len(),
        }
    }
}

/// Reads OpenAI's `input`: a string, strings, one token array, or token arrays.
fn embed_inputs(input: &Value) -> Option<Vec<EmbedInput>> {
    let tokens = |value: &Value| -> Option<Vec<i64>> {
        value.as_array()?.iter().map(Value::as_i64).collect()
    };
    match input {
        Value::String(text) => Some(vec![EmbedInput::Text(text.clone())]),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .map(|item| EmbedInput::Text(content_text(item)))
                .collect(),
        ),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            tokens(input).map(|t| vec![EmbedInput::Tokens(t)])
        }
        Value::Array(items) => items
            .iter()
            .map(|item| tokens(item).map(EmbedInput::Tokens))
            .collect(),
        _ => None,
    }
}

fn openai_embeddings(request: &Value) -> Response<Body> {
    let Some(inputs) = embed_inputs(&request["input"]) else {
        return Dialect::OpenAi.error(&Failure::invalid_param(
            "'input' must be a string, an array of strings, an array of tokens, or an array of token arrays.",
            "input",
        ));
    };
    let dimensions = match &request["dimensions"] {
        Value::Null => EMBEDDING_DIMENSIONS,
        value => match value.as_u64().and_then(|d| usize::try_from(d).ok()) {
            Some(d) if (1..=EMBEDDING_DIMENSIONS).contains(&d) => d,
            _ => {
                return Dialect::OpenAi.error(&Failure::invalid_param(
                    "'dimensions' must be between 1 and 8 for this model.",
                    "dimensions",
                ));
            }
        },
    };
    let base64 = match request["encoding_format"].as_str() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Dialect::OpenAi.error(&Failure::invalid_param(
                "'encoding_format' must be 'float' or 'base64'.",
                "encoding_format",
            ));
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = truncate(input.embedding(), dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().map(EmbedInput::tokens).sum();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model_of(request),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    });
    Dialect::OpenAi.json(StatusCode::OK, &body)
}

fn openai_models() -> Value {
    let model = |id: &str, created: u64, owned_by: &str| json!({"id": id, "object": "model", "created": created, "owned_by": owned_by});
    json!({
        "object": "list",
        "data": [
            model("gpt-4o-mini", 1_721_172_741, "system"),
            model("gpt-4o", 1_715_367_049, "system"),
            model("text-embedding-3-small", 1_705_948_997, "system"),
        ]
    })
}

/// Answers any other `/v1/*` request with a digest of what arrived, to prove byte-for-byte
/// passthrough.
fn passthrough_echo(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Body> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let echo = json!({
        "path": path_and_query,
        "method": method.as_str(),
        "content_type": content_type,
        "bytes": body.len(),
        "sha256": hex::encode(Sha256::digest(body)),
    });
    Dialect::OpenAi.json(StatusCode::OK, &echo)
}

// ---------------------------------------------------------------------------------------------
// Ollama.
// ---------------------------------------------------------------------------------------------

/// Ollama streams unless the request says `"stream": false`.
fn ollama_streams(request: &Value) -> bool {
    request["stream"].as_bool() != Some(false)
}

/// Adds the counts and durations Ollama puts on its final object.
fn with_ollama_counts(mut object: Value, prompt_eval_count: usize, eval_count: usize) -> Value {
    let load_duration = 1_000_000_u64;
    let prompt_eval_duration = 100_000 * prompt_eval_count as u64;
    let eval_duration = 200_000 * eval_count as u64;
    object["total_duration"] = json!(load_duration + prompt_eval_duration + eval_duration);
    object["load_duration"] = json!(load_duration);
    object["prompt_eval_count"] = json!(prompt_eval_count);
    object["prompt_eval_duration"] = json!(prompt_eval_duration);
    object["eval_count"] = json!(eval_count);
    object["eval_duration"] = json!(eval_duration);
    object
}

fn ollama_chat(state: &Arc<State>, request: &Value) -> Response<Body> {
    let model = model_of(request);
    let answer = Answer::for_chat(request);
    let prompt_eval_count = prompt_tokens(request);
    let eval_count = answer.completion_tokens();
    let created_at = rfc3339_now();
    let message = match &answer {
        Answer::Text(text) => json!({"role": "assistant", "content": text}),
        Answer::ToolCall { name } => json!({
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": name, "arguments": {"city": "Paris"}}}]
        }),
    };
    let last = |message: Value| {
        with_ollama_counts(
            json!({
                "model": model,
                "created_at": created_at,
                "message": message,
                "done_reason": "stop",
                "done": true,
            }),
            prompt_eval_count,
            eval_count,
        )
    };
    if !ollama_streams(request) {
        return Dialect::Ollama.json(StatusCode::OK, &last(message));
    }
    let line = |message: Value| json!({"model": model, "created_at": created_at, "message": message, "done": false});
    let mut lines: Vec<Value> = match &answer {
        Answer::Text(text) => pieces(text)
            .into_iter()
            .map(|piece| line(json!({"role": "assistant", "content": piece})))
            .collect(),
        Answer::ToolCall { .. } => vec![line(message)],
    };
    lines.push(last(json!({"role": "assistant", "content": ""})));
    ndjson_response(state, &lines, state.pacing(model))
}

fn ollama_generate(state: &Arc<State>, request: &Value) -> Response<Body> {
    let model = model_of(request);
    let prompt = request["prompt"].as_str().unwrap_or_default();
    let text = Answer::for_prompt(model, prompt);
    let created_at = rfc3339_now();
    let last = |response: &str| {
        with_ollama_counts(
            json!({
                "model": model,
                "created_at": created_at,
                "response": response,
                "done": true,
                "done_reason": "stop",
                "context": [1, 2, 3],
            }),
            words(prompt),
            words(&text),
        )
    };
    if !ollama_streams(request) {
        return Dialect::Ollama.json(StatusCode::OK, &last(&text));
    }
    let mut lines: Vec<Value> = pieces(&text)
        .into_iter()
        .map(|piece| {
            json!({"model": model, "created_at": created_at, "response": piece, "done": false})
        })
        .collect();
    lines.push(last(""));
    ndjson_response(state, &lines, state.pacing(model))
}

fn ollama_embed(request: &Value) -> Response<Body> {
    let texts: Vec<String> = match &request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().map(content_text).collect()
        }
        _ => {
            return Dialect::Ollama.error(&Failure::invalid_param("invalid input type", "input"));
        }
    };
    let embeddings: Vec<Vec<f32>> = texts.iter().map(|text| embedding_for(text)).collect();
    let prompt_eval_count: usize = texts.iter().map(|text| words(text)).sum();
    let body = json!({
        "model": model_of(request),
        "embeddings": embeddings,
        "total_duration": 14_143_917_u64,
        "load_duration": 1_019_500_u64,
        "prompt_eval_count": prompt_eval_count
    });
    Dialect::Ollama.json(StatusCode::OK, &body)
}

fn ollama_legacy_embeddings(request: &Value) -> Response<Body> {
    let prompt = request["prompt"].as_str().unwrap_or_default();
    Dialect::Ollama.json(StatusCode::OK, &json!({"embedding": embedding_for(prompt)}))
}

fn ollama_details() -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M"
    })
}

fn ollama_tags() -> Value {
    let model = |name: &str, size: u64, digest: &str| {
        json!({
            "name": name,
            "model": name,
            "modified_at": "2025-01-15T10:21:52.437128866+01:00",
            "size": size,
            "digest": digest,
            "details": ollama_details()
        })
    };
    json!({"models": [
        model(
            "llama3.2:latest",
            2_019_393_189,
            "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        ),
        model(
            "nomic-embed-text:latest",
            274_302_450,
            "0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
        ),
    ]})
}

fn ollama_show(request: &Value) -> Response<Body> {
    let body = json!({
        "license": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
        "modelfile": format!("# Modelfile generated by \"ollama show\"\nFROM {}\n", model_of(request)),
        "parameters": "stop                           \"<|start_header_id|>\"\nstop                           \"<|eot_id|>\"",
        "template": "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}",
        "details": ollama_details(),
        "model_info": {
            "general.architecture": "llama",
            "general.parameter_count": 3_212_749_888_u64,
            "llama.context_length": 131_072,
            "llama.embedding_length": 3072
        },
        "capabilities": ["completion", "tools"],
        "modified_at": "2025-01-15T10:21:52.437128866+01:00"
    });
    Dialect::Ollama.json(StatusCode::OK, &body)
}

fn ollama_pull(state: &Arc<State>, request: &Value) -> Response<Body> {
    if !ollama_streams(request) {
        return Dialect::Ollama.json(StatusCode::OK, &json!({"status": "success"}));
    }
    let mut lines = vec![json!({"status": "pulling manifest"})];
    let layers = [
        (
            "sha256:dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff",
            2_019_377_376_u64,
        ),
        (
            "sha256:966de95ca8a62200913e3f8bfbf84c8494536f1b94b49166851e76644e966396",
            1_429,
        ),
    ];
    for (digest, total) in layers {
        for completed in [0, total / 2, total] {
            lines.push(json!({
                "status": format!("pulling {}", &digest[7..19]),
                "digest": digest,
                "total": total,
                "completed": completed
            }));
        }
    }
    lines.push(json!({"status": "verifying sha256 digest"}));
    lines.push(json!({"status": "writing manifest"}));
    lines.push(json!({"status": "success"}));
    ndjson_response(state, &lines, state.pacing(""))
}

// ---------------------------------------------------------------------------------------------
// Bodies.
// ---------------------------------------------------------------------------------------------

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let body = Full::new(body.into()).map_err(|never| match never {});
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", text)
}

/// Frames each event as `data: {json}\n\n` and ends with `data: [DONE]\n\n`, as OpenAI does.
fn sse_response(state: &Arc<State>, events: &[Value], pacing: Pacing) -> Response<Body> {
    let frames = events
        .iter()
        .map(|event| Bytes::from(format!("data: {event}\n\n")))
        .chain([Bytes::from_static(b"data: [DONE]\n\n")])
        .collect();
    streaming_response(state, SSE, frames, pacing)
}

/// Writes one JSON object per line, as Ollama does.
fn ndjson_response(state: &Arc<State>, lines: &[Value], pacing: Pacing) -> Response<Body> {
    let frames = lines
        .iter()
        .map(|line| Bytes::from(format!("{line}\n")))
        .collect();
    streaming_response(state, NDJSON, frames, pacing)
}

/// Streams `frames` through a channel, paced by `pacing`, and counts the stream as cancelled
/// when the channel's receiver (the response body) is dropped before the last frame was handed
/// over. A `reset` stream breaks off with an error where its pacing says.
fn streaming_response(
    state: &Arc<State>,
    content_type: &'static str,
    mut frames: Vec<Bytes>,
    pacing: Pacing,
) -> Response<Body> {
    let (sender, receiver) = mpsc::channel::<Result<Bytes, BoxError>>(1);
    let producer_state = Arc::clone(state);
    if pacing.reset == Reset::Midway {
        frames.truncate(frames.len() / 2);
    }
    tokio::spawn(async move {
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 && !pacing.delay.is_zero() {
                tokio::time::sleep(pacing.delay).await;
            }
            if sender.send(Ok(frame)).await.is_err() {
                producer_state.bump(&producer_state.cancelled_streams);
                return;
            }
        }
        if pacing.reset != Reset::Never {
            let _ = sender.send(Err(Box::new(ConnectionReset))).await;
            return;
        }
        // The body ends when the sender is dropped; a client that leaves first is no cancel.
        tokio::select! {
            () = tokio::time::sleep(producer_state.linger) => {}
            () = sender.closed() => {}
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let frame = receiver.recv().await?;
        Some((frame.map(Frame::data), receiver))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // OpenAI's event streams say not to cache them; Ollama's NDJSON says nothing.
    if content_type == SSE {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

/// The `big-error` model's error body in `dialect` (Ollama's when `ollama`): a real error
/// object whose message is padded to make the whole body [`BIG_ERROR_BYTES`] long.
pub fn big_error_body(ollama: bool) -> Bytes {
    let frame = |message: &str| {
        if ollama {
            json!({"error": message}).to_string()
        } else {
            json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
                .to_string()
        }
    };
    let padding = BIG_ERROR_BYTES - frame("").len();
    Bytes::from(frame(&"x".repeat(padding)))
}

/// A 500 with [`big_error_body`], sent in 64 KiB pieces; the second half waits for
/// [`FakeLlm::release_big_errors`] (or [`BIG_ERROR_HOLD`]).
fn big_error(state: &Arc<State>, dialect: Dialect) -> Response<Body> {
    let body = big_error_body(dialect == Dialect::Ollama);
    let mut released = state.released.subscribe();
    let (sender, receiver) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let half = body.len() / 2;
        let mut at = 0;
        while at < body.len() {
            if at == half {
                let _ = tokio::time::timeout(BIG_ERROR_HOLD, released.wait_for(|r| *r)).await;
            }
            let end = (at + 64 * 1024).min(body.len());
            if sender.send(body.slice(at..end)).await.is_err() {
                return;
            }
            at = end;
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let piece = receiver.recv().await?;
        Some((Ok::<_, BoxError>(Frame::data(piece)), receiver))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    let content_type = match dialect {
        Dialect::OpenAi => OPENAI_JSON,
        Dialect::Ollama => OLLAMA_JSON,
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

// ---------------------------------------------------------------------------------------------
// Embeddings, base64 and time.
// ---------------------------------------------------------------------------------------------

/// The fake's embedding of `text`: stable across runs and equal for equal texts.
pub fn embedding_for(text: &str) -> Vec<f32> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|word| {
            word.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|word| !word.is_empty())
        .collect();
    embedding_of_words(&words, text.as_bytes())
}

/// Sums one hash-derived vector per word (or hashes `fallback` when there are no words) and
/// normalises the sum to unit length.
fn embedding_of_words(words: &[String], fallback: &[u8]) -> Vec<f32> {
    let mut sum = [0.0_f64; EMBEDDING_DIMENSIONS];
    let mut add = |bytes: &[u8]| {
        let digest = Sha256::digest(bytes);
        for (slot, chunk) in sum.iter_mut().zip(digest.chunks_exact(4)) {
            let n = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            *slot += f64::from(n) / f64::from(u32::MAX) * 2.0 - 1.0;
        }
    };
    if words.is_empty() {
        add(fallback);
    } else {
        words.iter().for_each(|word| add(word.as_bytes()));
    }
    normalise(sum.iter().map(|&x| x as f32).collect())
}

/// Keeps the first `dimensions` components and renormalises, as OpenAI's `dimensions` does.
fn truncate(mut vector: Vec<f32>, dimensions: usize) -> Vec<f32> {
    vector.truncate(dimensions);
    normalise(vector)
}

fn normalise(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as OpenAI's `encoding_format: "base64"` uses.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(
                    BASE64_ALPHABET[(n >> (18 - 6 * i)) as usize & 63],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard padded base64; `None` when `text` is not valid base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.chunks(4) {
        let padding = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 {
            return None;
        }
        let mut n = 0_u32;
        for &c in &chunk[..4 - padding] {
            let value = BASE64_ALPHABET.iter().position(|&a| a == c)?;
            n = (n << 6) | value as u32;
        }
        n <<= 6 * padding as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - padding]);
    }
    Some(out)
}

/// Decodes an OpenAI base64 embedding into its little-endian `f32`s.
pub fn decode_base64_embedding(text: &str) -> Option<Vec<f32>> {
    let bytes = base64_decode(text)?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The current time as Ollama writes it, such as `2025-01-15T09:21:52.437128866Z`.
fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        now.subsec_nanos()
    )
}

/// Converts days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
