//! A scenario's world: the fake upstream, a Redis or the embedded store, and thrifty with the
//! semantic cache in front; the semantic calls on top of the shared client
//! (`tests/common/client.rs`); Redis reads to see what it stored and who listens.

use std::time::Duration;

use serde_json::{Value, json};
use thrifty::Clock;
use thrifty::config::RawConfig;

use crate::common::client::{Probe, start_and_wait, start_redis};
use crate::common::fake_llm::FakeLlm;
use crate::common::redis::RedisServer;
use crate::common::thrifty::{Thrifty, semantic_config_for};
use crate::{ADMIN_TOKEN, Api, Backend, Dialect, Reply, WAIT, poll};

/// The pub/sub channel on which instances announce new and removed semantic entries.
pub const EVENTS: &str = "thrifty:v1:semantic:events";

/// The prefix of every recorded answer in the store.
pub const ANSWER_PREFIX: &str = "thrifty:v1:answer:";

// ---------------------------------------------------------------------------------------------
// The semantic calls on one thrifty.
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

impl Api {
    /// A chat call of `dialect`.
    pub async fn ask<K: AsRef<str>, V: AsRef<str>>(
        &self,
        dialect: Dialect,
        body: &Value,
        headers: &[(K, V)],
    ) -> Reply {
        self.post(dialect.chat_path(), body, headers).await
    }

    /// `POST /admin/cache/invalidate` with `selector`; returns how many keys it deleted.
    pub async fn invalidate(&self, selector: &Value) -> u64 {
        let reply = self.admin_post("/admin/cache/invalidate", selector).await;
        reply.assert_ok("admin invalidate");
        reply.json()["deleted"]
            .as_u64()
            .unwrap_or_else(|| panic!("invalidate says how many it deleted: {}", reply.text()))
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
        let key = miss.key_header();
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
    /// The clock thrifty reads, kept for starting it again.
    clock: Clock,
}

impl World {
    /// Asks [`crate::PARAPHRASE`]: it must be a semantic hit that reached no upstream.
    pub async fn paraphrase_hits(&self, dialect: Dialect, what: &str) -> Reply {
        let calls = self.fake.calls_to(dialect.chat_path());
        let hit = self
            .api
            .ask(
                dialect,
                &dialect.chat(crate::PARAPHRASE, false),
                &crate::NO_HEADERS,
            )
            .await;
        hit.assert_cache("semantic-hit", what);
        assert_eq!(
            self.fake.calls_to(dialect.chat_path()),
            calls,
            "{what}: a hit never goes upstream"
        );
        hit
    }

    pub async fn start(backend: Backend) -> World {
        World::start_with(backend, |_| {}).await
    }

    /// Starts a world whose config `tweak` changes first.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut RawConfig)) -> World {
        World::start_on(backend, Clock::system(), tweak).await
    }

    /// [`World::start_with`], thrifty reading the date and every age from `clock`.
    pub async fn start_on(
        backend: Backend,
        clock: Clock,
        tweak: impl FnOnce(&mut RawConfig),
    ) -> World {
        let fake = FakeLlm::start().await;
        let mut raw = semantic_config_for(&fake);
        // A loaded test machine must not turn store calls into misses.
        raw.store.timeout = Duration::from_secs(2);
        tweak(&mut raw);
        let redis = match backend {
            Backend::Redis => Some(start_redis().await),
            Backend::Embedded => None,
        };
        let mut vars = vec![("THRIFTY_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned())];
        if let Some(redis) = &redis {
            vars.push(("THRIFTY_REDIS_URL".to_owned(), redis.url()));
        }
        let thrifty = start_and_wait(raw.clone(), &vars, clock.clone(), &["ready"], WAIT).await;
        World {
            clock,
            backend,
            fake,
            redis,
            raw,
            vars,
            api: Api::new(thrifty.url(), WAIT),
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
        raw.store.data_dir = self.fake.scratch_dir("store");
        let thrifty = start_and_wait(raw, &self.vars, self.clock.clone(), &["ready"], WAIT).await;
        let api = Api::new(thrifty.url(), WAIT);
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
        let thrifty = start_and_wait(
            self.raw.clone(),
            &self.vars,
            self.clock.clone(),
            statuses,
            WAIT,
        )
        .await;
        self.api = Api::new(thrifty.url(), WAIT);
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
        Probe::connect(&redis.url(), WAIT).await
    }
}

// ---------------------------------------------------------------------------------------------
// Redis reads.
// ---------------------------------------------------------------------------------------------

/// The semantic suite's Redis reads, to see what thrifty stored and who listens.
impl Probe {
    /// Every key that starts with `prefix`, walked with SCAN.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        self.scan(&format!("{prefix}*")).await
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
