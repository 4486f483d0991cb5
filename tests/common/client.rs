//! The client side shared by the scenario suites (`cache`, `semantic`): the stores and wire
//! formats a scenario runs against, one thrifty's HTTP API and the replies it gives, thrifty and
//! a private Redis started for a scenario, and raw Redis commands to see what thrifty stored.
//!
//! Each suite keeps its own waits (`WAIT`) and passes them in, and adds the calls only it needs
//! in `impl` blocks of its own (a dialect's paths and requests, admin calls, fills).

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use thrifty::Clock;
use thrifty::config::RawConfig;

use super::redis::RedisServer;
use super::thrifty::Thrifty;

/// The pause between two probes of a bounded poll.
pub const POLL: Duration = Duration::from_millis(20);

/// The admin token every scenario configures unless told otherwise.
pub const ADMIN_TOKEN: &str = "adm";

/// No extra request headers.
pub const NO_HEADERS: [(&str, &str); 0] = [];

// ---------------------------------------------------------------------------------------------
// Stores.
// ---------------------------------------------------------------------------------------------

/// Where the cache lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A private `redis-server`, named to thrifty by `THRIFTY_REDIS_URL`.
    Redis,
    /// The embedded store under `store.data_dir`.
    Embedded,
}

pub const BACKENDS: [Backend; 2] = [Backend::Redis, Backend::Embedded];

// ---------------------------------------------------------------------------------------------
// Replies.
// ---------------------------------------------------------------------------------------------

/// A whole response as the client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// Reads the whole of `response`, whose body must end within `wait`.
    pub async fn read(response: reqwest::Response, wait: Duration) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(wait, response.bytes())
            .await
            .unwrap_or_else(|_| panic!("the body did not end within {wait:?}"))
            .unwrap_or_else(|e| panic!("the body could not be read: {e}"));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `x-thrifty-cache`, or "" when absent.
    pub fn cache(&self) -> &str {
        self.header("x-thrifty-cache").unwrap_or_default()
    }

    /// `x-thrifty-cache-key`, which must be 16 hex digits.
    pub fn key(&self) -> String {
        let key = self.key_header();
        assert!(
            key.len() == 16 && key.chars().all(|c| c.is_ascii_hexdigit()),
            "x-thrifty-cache-key is not 16 hex digits: {key}"
        );
        key
    }

    /// `x-thrifty-cache-key` as sent, the short key of the entry a miss records, with no check
    /// of its shape.
    pub fn key_header(&self) -> String {
        self.header("x-thrifty-cache-key")
            .unwrap_or_else(|| panic!("no x-thrifty-cache-key: {}", self.describe()))
            .to_owned()
    }

    /// `x-thrifty-cache-age` in seconds.
    pub fn age(&self) -> u64 {
        self.header("x-thrifty-cache-age")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric x-thrifty-cache-age: {}", self.describe()))
    }

    /// `x-thrifty-similarity`, which a semantic hit must carry as a number.
    pub fn similarity(&self) -> f32 {
        let raw = self
            .header("x-thrifty-similarity")
            .unwrap_or_else(|| panic!("no x-thrifty-similarity: {}", self.describe()));
        raw.parse()
            .unwrap_or_else(|e| panic!("x-thrifty-similarity {raw:?} is not a number: {e}"))
    }

    /// The body as text, which must be UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec())
            .unwrap_or_else(|e| panic!("the body is not UTF-8 ({e}): {}", self.describe()))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.describe()))
    }

    pub fn is_stream(&self) -> bool {
        self.header("content-type")
            .is_some_and(|ct| ct.contains("event-stream") || ct.contains("ndjson"))
    }

    /// Whether a stream's last chunk carries an OpenAI `usage` object.
    pub fn ends_with_usage(&self) -> bool {
        self.events().last().is_some_and(|e| e["usage"].is_object())
    }

    /// The chunks of a stream: every SSE `data:` event but `[DONE]`, or every NDJSON line.
    pub fn events(&self) -> Vec<Value> {
        let text = self.text();
        let sse = self
            .header("content-type")
            .is_some_and(|ct| ct.contains("event-stream"));
        let parse = |line: &str| -> Value {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stream line is not JSON ({e}): {line:?} in {text}"))
        };
        if sse {
            text.split("\n\n")
                .filter(|event| !event.trim().is_empty())
                .map(|event| {
                    let data = event.strip_prefix("data: ").unwrap_or_else(|| {
                        panic!("SSE event is not one data line: {event:?} in {text}")
                    });
                    assert!(!data.contains('\n'), "one data line per event: {event:?}");
                    data
                })
                .filter(|data| *data != "[DONE]")
                .map(parse)
                .collect()
        } else {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(parse)
                .collect()
        }
    }

    /// Status, cache headers and the start of the body, for failure messages.
    pub fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let cut: String = text.chars().take(600).collect();
        format!(
            "status {} cache {:?} similarity {:?} body {cut}",
            self.status,
            self.header("x-thrifty-cache"),
            self.header("x-thrifty-similarity")
        )
    }

    pub fn assert_ok(&self, what: &str) {
        assert_eq!(self.status, StatusCode::OK, "{what}: {}", self.describe());
    }

    /// Checks status 200 and the `x-thrifty-cache` outcome.
    pub fn assert_cache(&self, outcome: &str, what: &str) {
        self.assert_ok(what);
        assert_eq!(
            self.cache(),
            outcome,
            "{what}: expected x-thrifty-cache {outcome}: {}",
            self.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A client of one thrifty.
// ---------------------------------------------------------------------------------------------

/// `Authorization: Bearer <token>` as a header pair.
pub fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// A client of one running thrifty.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    /// How long a request may wait for its answer, and then for the end of its body.
    pub wait: Duration,
}

impl Api {
    pub fn new(base: String, wait: Duration) -> Api {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client builds");
        Api { client, base, wait }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Starts a POST of `body` and returns the response as soon as its head arrived.
    pub async fn open<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path: &str,
        body: &Value,
        headers: &[(K, V)],
    ) -> reqwest::Response {
        let wait = self.wait;
        let mut request = self.client.post(self.url(path)).json(body);
        for (name, value) in headers {
            request = request.header(name.as_ref(), value.as_ref());
        }
        tokio::time::timeout(wait, request.send())
            .await
            .unwrap_or_else(|_| panic!("POST {path} got no answer within {wait:?}"))
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}"))
    }

    pub async fn post<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path: &str,
        body: &Value,
        headers: &[(K, V)],
    ) -> Reply {
        Reply::read(self.open(path, body, headers).await, self.wait).await
    }

    /// A POST without extra headers.
    pub async fn send(&self, path: &str, body: &Value) -> Reply {
        self.post::<&str, &str>(path, body, &[]).await
    }

    /// Any call, with bearer `token` and a JSON `body` when given.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let wait = self.wait;
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = tokio::time::timeout(wait, request.send())
            .await
            .unwrap_or_else(|_| panic!("{path} got no answer within {wait:?}"))
            .unwrap_or_else(|e| panic!("{path} failed: {e}"));
        Reply::read(response, wait).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, Some(ADMIN_TOKEN), None)
            .await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Reply {
        self.request(reqwest::Method::POST, path, Some(ADMIN_TOKEN), Some(body))
            .await
    }

    pub async fn admin_delete(&self, path: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, Some(ADMIN_TOKEN), None)
            .await
    }

    /// The admin API's reply about the stored answer whose key starts with `short`, or `None`
    /// when it is not stored.
    async fn entry_reply(&self, short: &str) -> Option<Reply> {
        let reply = self
            .admin_get(&format!("/admin/cache/entries/{short}"))
            .await;
        match reply.status {
            StatusCode::OK => Some(reply),
            StatusCode::NOT_FOUND => None,
            _ => panic!("admin entry {short}: {}", reply.describe()),
        }
    }

    /// The stored answer whose key starts with `short`, through the admin API.
    pub async fn entry(&self, short: &str) -> Option<Value> {
        self.entry_reply(short).await.map(|reply| reply.json())
    }

    /// Whether the answer with short key `short` is in the store, through the admin API.
    pub async fn stored(&self, short: &str) -> bool {
        self.entry_reply(short).await.is_some()
    }

    /// `GET /readyz`'s status field.
    pub async fn readiness(&self) -> String {
        let reply = self
            .request(reqwest::Method::GET, "/readyz", None, None)
            .await;
        reply.assert_ok("readyz");
        reply.json()["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Polls `probe` until it returns `Some`, at most `within`.
pub async fn poll<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Starting a scenario's Redis and thrifty.
// ---------------------------------------------------------------------------------------------

/// Spawns a private Redis off the async runtime (its start polls with blocking sleeps).
pub async fn start_redis() -> RedisServer {
    tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("redis start task")
}

/// Starts thrifty with `vars` as its whole environment and waits, at most `wait`, until
/// `/readyz` says its store answers (thrifty serves at once but connects to Redis in the
/// background).
pub async fn start_thrifty(raw: RawConfig, vars: &[(String, String)], wait: Duration) -> Thrifty {
    start_thrifty_until(raw, vars, &["ready"], wait).await
}

/// [`start_thrifty`] with thrifty reading the date and every age from `clock`.
pub async fn start_thrifty_with_clock(
    raw: RawConfig,
    vars: &[(String, String)],
    clock: Clock,
    wait: Duration,
) -> Thrifty {
    start_and_wait(raw, vars, clock, &["ready"], wait).await
}

/// Starts thrifty and waits, at most `wait`, until `/readyz` reports one of `statuses`.
pub async fn start_thrifty_until(
    raw: RawConfig,
    vars: &[(String, String)],
    statuses: &[&str],
    wait: Duration,
) -> Thrifty {
    start_and_wait(raw, vars, Clock::system(), statuses, wait).await
}

/// Starts thrifty on `clock` and waits, at most `wait`, until `/readyz` reports one of
/// `statuses`.
pub async fn start_and_wait(
    raw: RawConfig,
    vars: &[(String, String)],
    clock: Clock,
    statuses: &[&str],
    wait: Duration,
) -> Thrifty {
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let thrifty = Thrifty::start_with_clock(raw, &pairs, clock).await;
    let api = Api::new(thrifty.url(), wait);
    poll(wait, &format!("thrifty is {statuses:?}"), || async {
        let probe = api.client.get(api.url("/readyz")).send().await;
        let status = match probe {
            Ok(response) => response.json::<Value>().await.ok(),
            Err(_) => None,
        };
        status
            .filter(|s| statuses.iter().any(|want| s["status"] == *want))
            .map(drop)
    })
    .await;
    thrifty
}

// ---------------------------------------------------------------------------------------------
// Raw Redis commands.
// ---------------------------------------------------------------------------------------------

/// Raw Redis commands, to see what thrifty stored; each suite adds the reads it needs.
pub struct Probe {
    connection: redis::aio::MultiplexedConnection,
    wait: Duration,
}

impl Probe {
    /// Connects to the Redis at `url`; the connection and every command must answer within
    /// `wait`.
    pub async fn connect(url: &str, wait: Duration) -> Probe {
        let client = redis::Client::open(url).expect("redis url");
        let connection = tokio::time::timeout(wait, client.get_multiplexed_async_connection())
            .await
            .expect("redis connects in time")
            .expect("redis connects");
        Probe { connection, wait }
    }

    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut connection = self.connection.clone();
        tokio::time::timeout(self.wait, cmd.query_async(&mut connection))
            .await
            .expect("redis answers in time")
            .expect("redis command succeeds")
    }

    /// Every key matching the glob `pattern`, walked with SCAN.
    pub async fn scan(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await;
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }
}
