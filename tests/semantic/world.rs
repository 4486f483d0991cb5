//! A scenario's world: the fake upstream, a Redis or the embedded store, and thrifty with the
//! semantic cache in front; an HTTP client of it; raw Redis commands to see what it stored.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use thrifty::config::RawConfig;

use crate::common::fake_llm::FakeLlm;
use crate::common::redis::RedisServer;
use crate::common::thrifty::{Thrifty, fresh_dir, semantic_config_for};
use crate::{ADMIN_TOKEN, Backend, Dialect, POLL, WAIT};

/// The pub/sub channel on which instances announce new and removed semantic entries.
pub const EVENTS: &str = "thrifty:v1:semantic:events";

/// The prefix of every recorded answer in the store.
pub const ANSWER_PREFIX: &str = "thrifty:v1:answer:";

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
    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(WAIT, response.bytes())
            .await
            .unwrap_or_else(|_| panic!("the body did not end within {WAIT:?}"))
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

    /// `x-thrifty-cache-key`, the short key of the entry a miss records.
    pub fn key(&self) -> String {
        self.header("x-thrifty-cache-key")
            .unwrap_or_else(|| panic!("no x-thrifty-cache-key: {}", self.describe()))
            .to_owned()
    }

    /// `x-thrifty-similarity`, which a semantic hit must carry as a number.
    pub fn similarity(&self) -> f32 {
        let raw = self
            .header("x-thrifty-similarity")
            .unwrap_or_else(|| panic!("no x-thrifty-similarity: {}", self.describe()));
        raw.parse()
            .unwrap_or_else(|e| panic!("x-thrifty-similarity {raw:?} is not a number: {e}"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.describe()))
    }

    pub fn is_stream(&self) -> bool {
        self.header("content-type")
            .is_some_and(|ct| ct.contains("event-stream") || ct.contains("ndjson"))
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
                    event.strip_prefix("data: ").unwrap_or_else(|| {
                        panic!("SSE event is not one data line: {event:?} in {text}")
                    })
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
        let text = self.text();
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

/// Request headers as owned pairs.
pub type Headers = Vec<(String, String)>;

/// Owned copies of header pairs of any string types.
pub fn headers<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect()
}

/// A client of one running thrifty.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: String) -> Api {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client builds");
        Api { client, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path: &str,
        body: &Value,
        headers: &[(K, V)],
    ) -> Reply {
        let mut request = self.client.post(self.url(path)).json(body);
        for (name, value) in headers {
            request = request.header(name.as_ref(), value.as_ref());
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .unwrap_or_else(|_| panic!("POST {path} got no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}"));
        Reply::read(response).await
    }

    /// A chat call of `dialect`.
    pub async fn ask<K: AsRef<str>, V: AsRef<str>>(
        &self,
        dialect: Dialect,
        body: &Value,
        headers: &[(K, V)],
    ) -> Reply {
        self.post(dialect.path(), body, headers).await
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Reply {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .unwrap_or_else(|_| panic!("{path} got no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{path} failed: {e}"));
        Reply::read(response).await
    }

    /// `POST /admin/cache/invalidate` with `selector`; returns how many keys it deleted.
    pub async fn invalidate(&self, selector: &Value) -> u64 {
        let reply = self
            .admin(
                reqwest::Method::POST,
                "/admin/cache/invalidate",
                Some(selector),
            )
            .await;
        reply.assert_ok("admin invalidate");
        reply.json()["deleted"]
            .as_u64()
            .unwrap_or_else(|| panic!("invalidate says how many it deleted: {}", reply.text()))
    }

    /// Whether the answer with short key `short` is in the store, through the admin API.
    pub async fn stored(&self, short: &str) -> bool {
        let path = format!("/admin/cache/entries/{short}");
        let reply = self.admin(reqwest::Method::GET, &path, None).await;
        match reply.status {
            StatusCode::OK => true,
            StatusCode::NOT_FOUND => false,
            _ => panic!("admin entry {short}: {}", reply.describe()),
        }
    }

    /// `GET /readyz`'s status field.
    pub async fn readiness(&self) -> String {
        let response = tokio::time::timeout(WAIT, self.client.get(self.url("/readyz")).send())
            .await
            .unwrap_or_else(|_| panic!("/readyz got no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("/readyz failed: {e}"));
        let reply = Reply::read(response).await;
        reply.assert_ok("readyz");
        reply.json()["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Sends a first question (a miss) and waits until a semantic lookup finds it; returns the
    /// miss.
    pub async fn fill<K: AsRef<str>, V: AsRef<str>>(
        &self,
        dialect: Dialect,
        body: &Value,
        headers: &[(K, V)],
    ) -> Reply {
        let miss = self.ask(dialect, body, headers).await;
        let what = format!("{dialect:?}: filling");
        miss.assert_cache("miss", &what);
        self.wait_indexed(dialect, body, headers, &what).await;
        miss
    }

    /// Waits until the answer to `body` is stored and its question indexed.
    ///
    /// The answer is written just after the response body ends and its vector right after that,
    /// so this polls with a read-only probe (`cache-control: no-store`, so a miss records
    /// nothing): the same request with a space after the last message, which embeds to the same
    /// vector and passes the guard, but has an exact key of its own. A probe that misses goes
    /// upstream, so callers count upstream calls after this returns.
    pub async fn wait_indexed<K: AsRef<str>, V: AsRef<str>>(
        &self,
        dialect: Dialect,
        body: &Value,
        headers: &[(K, V)],
        what: &str,
    ) {
        let probe = with_last_text(body, |text| format!("{text} "));
        let mut headers = self::headers(headers);
        headers.push(("cache-control".to_owned(), "no-store".to_owned()));
        poll(WAIT, &format!("{what}: the question is indexed"), || {
            let (probe, headers) = (&probe, &headers);
            async move {
                let reply = self.ask(dialect, probe, headers).await;
                reply.assert_ok("a read-only probe");
                (reply.cache() == "semantic-hit").then_some(())
            }
        })
        .await;
    }

    /// Sends a request the semantic stage skips (a miss) and waits until its exact answer is
    /// stored; returns the miss.
    pub async fn fill_exact(&self, dialect: Dialect, body: &Value) -> Reply {
        let miss = self.ask(dialect, body, &crate::NO_HEADERS).await;
        miss.assert_cache("miss", &format!("{dialect:?}: filling"));
        let key = miss.key();
        poll(WAIT, &format!("{dialect:?}: entry {key} is stored"), || {
            let key = &key;
            async move { self.stored(key).await.then_some(()) }
        })
        .await;
        miss
    }
}

/// `body` with the text of its last message changed by `change`.
pub fn with_last_text(body: &Value, change: impl Fn(&str) -> String) -> Value {
    let mut body = body.clone();
    let last = body["messages"]
        .as_array_mut()
        .and_then(|m| m.last_mut())
        .expect("a chat request has messages");
    let text = last["content"]
        .as_str()
        .expect("the last message is text")
        .to_owned();
    last["content"] = json!(change(&text));
    body
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
// A fake upstream, a store and a thrifty with the semantic cache, started together.
// ---------------------------------------------------------------------------------------------

/// One scenario's world.
pub struct World {
    pub backend: Backend,
    pub fake: FakeLlm,
    pub redis: Option<RedisServer>,
    /// The config thrifty was started with, for starting it (or another instance) again.
    pub raw: RawConfig,
    /// The environment thrifty was started with (Redis URL and admin token included).
    pub vars: Vec<(String, String)>,
    thrifty: Option<Thrifty>,
    pub api: Api,
}

impl World {
    pub async fn start(backend: Backend) -> World {
        World::start_with(backend, |_| {}).await
    }

    /// Starts a world whose config `tweak` changes first.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut RawConfig)) -> World {
        let fake = FakeLlm::start().await;
        let mut raw = semantic_config_for(&fake);
        // A loaded test machine must not turn store calls into misses.
        raw.store.timeout = Duration::from_secs(2);
        tweak(&mut raw);
        let redis = match backend {
            Backend::Redis => Some(
                tokio::task::spawn_blocking(RedisServer::start)
                    .await
                    .expect("redis start task"),
            ),
            Backend::Embedded => None,
        };
        let mut vars = vec![("THRIFTY_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned())];
        if let Some(redis) = &redis {
            vars.push(("THRIFTY_REDIS_URL".to_owned(), redis.url()));
        }
        let thrifty = start_thrifty(raw.clone(), &vars).await;
        World {
            backend,
            fake,
            redis,
            raw,
            vars,
            api: Api::new(thrifty.url()),
            thrifty: Some(thrifty),
        }
    }

    /// The configured similarity threshold.
    pub fn threshold(&self) -> f32 {
        self.raw.semantic.threshold
    }

    /// Starts a second thrifty on the same Redis, upstream and config (with a data directory
    /// of its own).
    pub async fn another_instance(&self) -> (Thrifty, Api) {
        assert_eq!(self.backend, Backend::Redis, "instances share a Redis");
        let mut raw = self.raw.clone();
        raw.store.data_dir = fresh_dir("store");
        let thrifty = start_thrifty(raw, &self.vars).await;
        let api = Api::new(thrifty.url());
        (thrifty, api)
    }

    /// Shuts thrifty down gracefully: `run` has returned when this does.
    pub async fn shutdown(&mut self) {
        if let Some(thrifty) = self.thrifty.take() {
            assert!(
                thrifty.shutdown(WAIT).await,
                "thrifty did not shut down within {WAIT:?}"
            );
        }
    }

    /// Shuts thrifty down gracefully and waits until its store is closed.
    pub async fn stop(&mut self) {
        self.shutdown().await;
        if self.backend == Backend::Embedded {
            // Store writes detached from requests (a hit's TTL slide, a semantic record) can
            // outlive `run`; `a_stopped_thrifty_has_closed_its_embedded_store` shows it. Wait for
            // them here rather than race them.
            let file = self.redb_file();
            poll(WAIT, "the embedded store is closed", || {
                let file = file.clone();
                async move {
                    tokio::task::spawn_blocking(move || redb::Database::open(file).ok().map(drop))
                        .await
                        .expect("open task")
                }
            })
            .await;
        }
    }

    /// The path of the embedded store's database file.
    pub fn redb_file(&self) -> std::path::PathBuf {
        self.raw.store.data_dir.join("thrifty.redb")
    }

    /// Shuts thrifty down gracefully and starts it again with the same config and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Starts thrifty again (after [`World::stop`]) with the same config and store.
    pub async fn start_again(&mut self) {
        self.start_again_until(&["ready"]).await;
    }

    /// Starts thrifty again while its Redis is down: it serves, degraded.
    pub async fn start_again_degraded(&mut self) {
        self.start_again_until(&["degraded"]).await;
    }

    async fn start_again_until(&mut self, statuses: &[&str]) {
        assert!(self.thrifty.is_none(), "thrifty was stopped first");
        let thrifty = start_thrifty_until(self.raw.clone(), &self.vars, statuses).await;
        self.api = Api::new(thrifty.url());
        self.thrifty = Some(thrifty);
    }

    /// Stops or restarts the world's Redis off the async runtime (both poll with blocking sleeps).
    pub async fn change_redis(&mut self, change: fn(&mut RedisServer)) {
        let mut redis = self.redis.take().expect("a Redis world");
        let redis = tokio::task::spawn_blocking(move || {
            change(&mut redis);
            redis
        })
        .await
        .expect("redis task");
        self.redis = Some(redis);
    }

    /// A connection to this world's Redis.
    pub async fn probe(&self) -> Probe {
        let redis = self.redis.as_ref().expect("this scenario needs Redis");
        Probe::connect(&redis.url()).await
    }
}

/// Starts thrifty with `vars` as its whole environment and waits until `/readyz` says its store
/// answers (thrifty serves at once but connects to Redis in the background).
pub async fn start_thrifty(raw: RawConfig, vars: &[(String, String)]) -> Thrifty {
    start_thrifty_until(raw, vars, &["ready"]).await
}

/// Starts thrifty and waits until `/readyz` reports one of `statuses`.
async fn start_thrifty_until(
    raw: RawConfig,
    vars: &[(String, String)],
    statuses: &[&str],
) -> Thrifty {
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let thrifty = Thrifty::start_with_env(raw, &pairs).await;
    let api = Api::new(thrifty.url());
    poll(WAIT, &format!("thrifty is {statuses:?}"), || async {
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

/// Raw Redis commands, to see what thrifty stored and who listens.
pub struct Probe {
    connection: redis::aio::MultiplexedConnection,
}

impl Probe {
    pub async fn connect(url: &str) -> Probe {
        let client = redis::Client::open(url).expect("redis url");
        let connection = tokio::time::timeout(WAIT, client.get_multiplexed_async_connection())
            .await
            .expect("redis connects in time")
            .expect("redis connects");
        Probe { connection }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut connection = self.connection.clone();
        tokio::time::timeout(WAIT, cmd.query_async(&mut connection))
            .await
            .expect("redis answers in time")
            .expect("redis command succeeds")
    }

    /// Every key that starts with `prefix`, walked with SCAN.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{prefix}*"))
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

    /// How many clients are subscribed to `channel`.
    pub async fn subscribers(&self, channel: &str) -> u64 {
        let (_, count): (String, u64) = self
            .query(redis::cmd("PUBSUB").arg("NUMSUB").arg(channel))
            .await;
        count
    }

    /// Every key under `prefix` with its value and milliseconds to live, as a backup holds them.
    pub async fn dump(&self, prefix: &str) -> Vec<(String, Vec<u8>, i64)> {
        let mut saved = Vec::new();
        for key in self.keys(prefix).await {
            let value: Vec<u8> = self.query(redis::cmd("GET").arg(&key)).await;
            let ttl: i64 = self.query(redis::cmd("PTTL").arg(&key)).await;
            saved.push((key, value, ttl));
        }
        saved
    }

    /// Writes back what [`Probe::dump`] saved, behind thrifty's back.
    pub async fn restore(&self, saved: &[(String, Vec<u8>, i64)]) {
        for (key, value, ttl) in saved {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(value.as_slice());
            if *ttl > 0 {
                set.arg("PX").arg(*ttl);
            }
            let _: String = self.query(&set).await;
        }
    }
}
