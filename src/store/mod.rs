//! The shared key-value store behind every cache: Redis when configured, an
//! embedded persistent store otherwise.
//!
//! Callers see one small interface. A call on the request path is bounded by the store
//! timeout; a call on many keys or off the request path (a key walk, a ledger batch) by the
//! bulk timeout. Failures are counted and logged at most once per interval; callers treat an
//! error as a miss (fail open), never as a failed request. After a run of consecutive
//! failures the [`breaker`] skips the store until a background probe finds it answering.

pub mod breaker;
mod config;
pub mod counters;
mod embedded;
mod logs;
pub mod presence;
mod redis;
pub mod totals;
mod values;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use breaker::Breaker;
pub use config::StoreConfig;
pub use embedded::EmbeddedStore;
pub use redis::RedisStore;

use crate::clock::Clock;

/// What a subscription to a channel of a shared store delivers.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// The subscription is in place: what is published from now on arrives.
    Subscribed,
    /// A message published on the channel.
    Message(String),
    /// The subscription dropped: what is published until the next `Subscribed` is lost.
    Lost,
}

/// Prefix of every key thrifty writes.
pub const KEY_PREFIX: &str = "thrifty:v1:";

/// How often a failing store is reported in the log.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// How many keys one multi-key command carries; a call on more keys sends several.
pub const BATCH_KEYS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis is not connected")]
    NotConnected,
    #[error("embedded store: {0}")]
    Embedded(String),
    #[error("the embedded store is in use by another thrifty")]
    InUse,
    #[error("store skipped until it answers again")]
    Skipped,
}

/// An error of the embedded store's database, as the store reports it.
pub(super) fn embedded_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Embedded(e.to_string())
}

impl StoreError {
    /// Whether the error says the store is unreachable or too slow, rather than that one
    /// command was wrong: only those open the breaker.
    fn is_outage(&self) -> bool {
        match self {
            StoreError::Timeout(_) | StoreError::NotConnected => true,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
            }
            StoreError::Embedded(_) | StoreError::InUse | StoreError::Skipped => false,
        }
    }
}

pub(super) enum Backend {
    Redis(RedisStore),
    Embedded(EmbeddedStore),
}

/// Live keys under a prefix and the bytes of their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub entries: u64,
    pub bytes: u64,
}

/// How long store calls may take and when the store is skipped.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// One call on the request path.
    pub timeout: Duration,
    /// One call on many keys or off the request path.
    pub bulk_timeout: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// The first pause before probing a skipped store.
    pub breaker_backoff: Duration,
}

impl Limits {
    /// `timeout` on the request path, defaults for the rest.
    pub fn new(timeout: Duration) -> Limits {
        Limits {
            timeout,
            bulk_timeout: timeout.max(Duration::from_secs(10)),
            breaker_failures: 5,
            breaker_backoff: Duration::from_secs(1),
        }
    }

    pub fn from_config(config: &StoreConfig) -> Limits {
        Limits {
            timeout: config.timeout,
            bulk_timeout: config.bulk_timeout,
            breaker_failures: config.breaker_failures.get(),
            breaker_backoff: config.breaker_backoff,
        }
    }

    /// The budget of a call on `keys` keys: the request timeout per command it sends,
    /// at most the bulk timeout.
    fn for_keys(&self, keys: usize) -> Duration {
        let commands = u32::try_from(keys.div_ceil(BATCH_KEYS).max(1)).unwrap_or(u32::MAX);
        self.timeout
            .saturating_mul(commands)
            .min(self.bulk_timeout.max(self.timeout))
    }
}

/// The store with its time limits, breaker and failure accounting.
pub struct Store {
    pub(super) backend: Backend,
    limits: Limits,
    breaker: Breaker,
    /// This store, for the probe the breaker starts.
    me: Weak<Store>,
    errors: AtomicU64,
    last_report: Mutex<Option<Instant>>,
}

impl Store {
    /// Opens Redis when a URL is configured, the embedded store otherwise; the embedded
    /// store's entries expire by `clock` (Redis expires its keys by its own).
    pub fn open(config: &StoreConfig, clock: &Clock) -> Result<Arc<Store>, StoreError> {
        let limits = Limits::from_config(config);
        Ok(match &config.redis_url {
            Some(url) => Store::with(
                Backend::Redis(RedisStore::connect(
                    url.expose(),
                    config.redis_cluster,
                    limits.bulk_timeout,
                )?),
                limits,
            ),
            None => Store::with(
                Backend::Embedded(EmbeddedStore::open(
                    &config.data_dir,
                    config.memory_bytes,
                    clock.clone(),
                )?),
                limits,
            ),
        })
    }

    pub fn redis(store: RedisStore, timeout: Duration) -> Arc<Store> {
        Store::with(Backend::Redis(store), Limits::new(timeout))
    }

    pub fn embedded(store: EmbeddedStore, timeout: Duration) -> Arc<Store> {
        Store::with(Backend::Embedded(store), Limits::new(timeout))
    }

    fn with(backend: Backend, limits: Limits) -> Arc<Store> {
        Arc::new_cyclic(|me| Store {
            backend,
            limits,
            breaker: Breaker::new(limits.breaker_failures, limits.breaker_backoff),
            me: me.clone(),
            errors: AtomicU64::new(0),
            last_report: Mutex::new(None),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Redis(_) => "redis",
            Backend::Embedded(_) => "embedded",
        }
    }

    /// Store failures since start.
    pub fn errors(&self) -> u64 {
        let behind = match &self.backend {
            Backend::Embedded(e) => e.failed_writes(),
            Backend::Redis(_) => 0,
        };
        self.errors.load(Ordering::Relaxed) + behind
    }

    /// Calls skipped by the open breaker since start.
    pub fn skipped(&self) -> u64 {
        self.breaker.skipped()
    }

    /// Whether calls are skipped now because the store stopped answering.
    pub fn is_skipped(&self) -> bool {
        self.breaker.is_open()
    }

    /// A call on the request path.
    pub(super) async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.limited(self.limits.timeout, op).await
    }

    /// A call off the request path.
    pub(super) async fn bounded_bulk<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.limited(self.limits.bulk_timeout, op).await
    }

    async fn limited<T>(
        &self,
        limit: Duration,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if !self.breaker.admits() {
            return Err(StoreError::Skipped);
        }
        let result = match tokio::time::timeout(limit, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(limit)),
        };
        match &result {
            Ok(_) => self.breaker.success(),
            Err(e) => self.failed(e),
        }
        result
    }

    fn failed(&self, e: &StoreError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        {
            let mut last = self.last_report.lock();
            if last.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                *last = Some(Instant::now());
                tracing::warn!(store = self.kind(), error = %e, total_errors = self.errors(), "store unavailable: serving without cache");
            }
        }
        if e.is_outage() && self.breaker.failure() {
            tracing::warn!(
                store = self.kind(),
                "store keeps failing: skipping it until a probe answers"
            );
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(Store::probe(self.me.clone()));
                }
                Err(_) => self.breaker.close(),
            }
        }
    }

    /// Pings the skipped store, pausing longer after each failure, and lets calls through
    /// again once it answers. It holds the store only while it pings, so a store dropped
    /// at shutdown ends its probe.
    async fn probe(me: Weak<Store>) {
        let Some(pauses) = me.upgrade().map(|store| store.breaker.pauses()) else {
            return;
        };
        for pause in pauses {
            tokio::time::sleep(pause).await;
            let Some(store) = me.upgrade() else {
                return;
            };
            let ping = tokio::time::timeout(store.limits.timeout, store.ping_backend()).await;
            if matches!(ping, Ok(Ok(()))) {
                store.breaker.close();
                tracing::info!(store = store.kind(), "store answers again");
                return;
            }
        }
    }

    async fn ping_backend(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redis(r) => r.ping().await,
            Backend::Embedded(_) => Ok(()),
        }
    }

    /// Whether every instance on this store sees what one writes: Redis, not the embedded store.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// Whether the store may hold `key`: the embedded store knows every key it holds, so a
    /// key it never wrote (most lookups are questions nobody asked before) is answered from
    /// memory; Redis may hold any (the cache keeps its own set of what it holds).
    pub fn may_hold(&self, key: &str) -> bool {
        match &self.backend {
            Backend::Embedded(e) => e.may_hold(key),
            Backend::Redis(_) => true,
        }
    }

    /// Whether the store is shared and every instance hears of a write, announced with
    /// [`Store::put_announced`], before its writer does: one Redis server, not a cluster.
    pub fn announces_in_step(&self) -> bool {
        matches!(&self.backend, Backend::Redis(r) if r.announces_in_step())
    }

    /// Runs a Lua script on Redis, bounded like any request-path call; the embedded store
    /// runs no scripts.
    pub async fn run_script<T: ::redis::FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.bounded(self.script(invocation)).await
    }

    /// Like [`Store::run_script`] off the request path: bounded by the bulk timeout.
    pub async fn run_script_off_path<T: ::redis::FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.bounded_bulk(self.script(invocation)).await
    }

    async fn script<T: ::redis::FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Redis(r) => r.invoke(invocation).await,
            Backend::Embedded(_) => {
                Err(StoreError::Embedded("scripts run on redis only".to_owned()))
            }
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => r.get(key).await,
                Backend::Embedded(e) => e.get(key).await,
            }
        })
        .await
    }

    /// The values of many keys, in their order: one multi-key read per [`BATCH_KEYS`] keys,
    /// bounded by the request timeout per command (at most the bulk timeout).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.limited(self.limits.for_keys(keys.len()), async {
            match &self.backend {
                Backend::Redis(r) => r.get_many(keys).await,
                Backend::Embedded(e) => e.get_many(keys).await,
            }
        })
        .await
    }

    /// Like [`Store::get_many`] off the request path: bounded by the bulk timeout.
    pub async fn get_batch(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded_bulk(async {
            match &self.backend {
                Backend::Redis(r) => r.get_many(keys).await,
                Backend::Embedded(e) => e.get_many(keys).await,
            }
        })
        .await
    }

    pub async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => r.put(key, value, ttl).await,
                Backend::Embedded(e) => e.put(key, value, ttl).await,
            }
        })
        .await
    }

    /// Writes many keys with one time to live: pipelined on Redis, one transaction on the
    /// embedded store, bounded like [`Store::get_many`].
    pub async fn put_many(
        &self,
        entries: Vec<(String, Bytes)>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.limited(self.limits.for_keys(entries.len()), async {
            match &self.backend {
                Backend::Redis(r) => r.put_many(&entries, ttl).await,
                Backend::Embedded(e) => e.put_many(entries, ttl).await,
            }
        })
        .await
    }

    /// Sets a new time to live on an existing key.
    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => r.touch(key, ttl).await,
                Backend::Embedded(e) => e.touch(key, ttl).await,
            }
        })
        .await
    }

    /// How long a key has left to live: `None` when it is gone or never expires.
    pub async fn expires_in(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => r.expires_in(key).await,
                Backend::Embedded(e) => e.expires_in(key).await,
            }
        })
        .await
    }

    /// Deletes keys; returns how many existed. One key is a request-path call; more are a
    /// bulk call, sent as one multi-key command per [`BATCH_KEYS`] keys.
    pub async fn delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        let limit = match keys.len() {
            0 => return Ok(0),
            1 => self.limits.timeout,
            _ => self.limits.bulk_timeout,
        };
        self.limited(limit, async {
            match &self.backend {
                Backend::Redis(r) => r.delete(keys).await,
                Backend::Embedded(e) => e.delete(keys).await,
            }
        })
        .await
    }

    /// Every live key starting with `prefix`. Admin and background paths only: it walks
    /// the key space within the bulk timeout.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.bounded_bulk(async {
            match &self.backend {
                Backend::Redis(r) => r.keys(prefix).await,
                Backend::Embedded(e) => e.keys(prefix).await,
            }
        })
        .await
    }

    /// Hands each live key starting with `prefix` to `each` as the walk finds it, until `each`
    /// breaks it off, so a caller that keeps less than the keys never holds them all (the
    /// embedded store, which is local, lists them first). Background paths only: it walks the
    /// key space within the bulk timeout.
    pub async fn walk_keys(
        &self,
        prefix: &str,
        each: &mut (impl FnMut(String) -> std::ops::ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        self.bounded_bulk(async {
            match &self.backend {
                Backend::Redis(r) => r.walk_keys(prefix, each).await,
                Backend::Embedded(e) => {
                    for key in e.keys(prefix).await? {
                        if each(key).is_break() {
                            break;
                        }
                    }
                    Ok(())
                }
            }
        })
        .await
    }

    /// How many live keys start with `prefix` and how many bytes their values hold, from the
    /// keys and the stored lengths: no value is read into thrifty. Admin paths only: it
    /// walks the key space within the bulk timeout.
    pub async fn tally(&self, prefix: &str) -> Result<Tally, StoreError> {
        self.bounded_bulk(async {
            match &self.backend {
                Backend::Redis(r) => r.tally(prefix).await,
                Backend::Embedded(e) => e.tally(prefix).await,
            }
        })
        .await
    }

    /// Writes a key and then tells the instances sharing the store on `channel`, in one round
    /// trip where the backend allows; the embedded store has no one to tell.
    pub async fn put_announced(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        channel: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => r.put_announced(key, value, ttl, channel, message).await,
                Backend::Embedded(e) => e.put(key, value, ttl).await,
            }
        })
        .await
    }

    /// Tells every instance sharing this store; the embedded store has no one to tell.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redis(r) => self.bounded(r.publish(channel, message)).await,
            Backend::Embedded(_) => Ok(()),
        }
    }

    /// Messages other instances publish, when the store is shared, and when the subscription
    /// is in place or lost.
    pub fn subscribe(&self, channel: &str) -> Option<tokio::sync::mpsc::Receiver<Heard>> {
        match &self.backend {
            Backend::Redis(r) => Some(r.subscribe(channel)),
            Backend::Embedded(_) => None,
        }
    }

    /// Entries the backend evicted for lack of memory, where it tells.
    pub fn evictions(&self) -> Option<u64> {
        match &self.backend {
            Backend::Redis(_) => None,
            Backend::Embedded(e) => Some(e.evictions()),
        }
    }

    /// The embedded store's value log on disk: how many segments, and their bytes (live
    /// values and what the next sweep may reclaim); `None` for Redis or when the directory
    /// cannot be read.
    pub fn value_log(&self) -> Option<(usize, u64)> {
        match &self.backend {
            Backend::Redis(_) => None,
            Backend::Embedded(e) => e.value_log(),
        }
    }

    /// Removes expired entries where the backend does not do it by itself.
    pub async fn sweep(&self) {
        if let Backend::Embedded(e) = &self.backend {
            if let Err(error) = e.sweep().await {
                tracing::warn!(%error, "embedded store sweep failed");
            }
        }
    }

    /// At shutdown: lands the embedded store's queued writes, lets go of its file and makes
    /// everything durable.
    pub async fn close(&self) {
        if let Backend::Embedded(e) = &self.backend {
            if let Err(error) = e.close().await {
                tracing::warn!(%error, "embedded store could not persist its writes");
            }
        }
    }

    /// Makes the cache writes committed so far durable where the backend defers that (the
    /// embedded store's puts commit without an `fsync`).
    pub async fn persist(&self) {
        if let Backend::Embedded(e) = &self.backend {
            if let Err(error) = e.persist().await {
                tracing::warn!(%error, "embedded store could not persist its writes");
            }
        }
    }

    /// Whether the store answers now; at once `Skipped` while the breaker is open.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(self.ping_backend()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gets_the_request_timeout_per_command_up_to_the_bulk_timeout() {
        let limits = Limits {
            timeout: Duration::from_millis(100),
            bulk_timeout: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_backoff: Duration::from_secs(1),
        };
        assert_eq!(limits.for_keys(1), Duration::from_millis(100));
        assert_eq!(limits.for_keys(BATCH_KEYS), Duration::from_millis(100));
        assert_eq!(limits.for_keys(BATCH_KEYS + 1), Duration::from_millis(200));
        assert_eq!(limits.for_keys(1_000_000), Duration::from_secs(1));
    }
}
