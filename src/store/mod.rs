//! The shared key-value store behind every cache: Redis when configured, an
//! embedded persistent store otherwise.
//!
//! Callers see one small interface. Every call is bounded by the store timeout,
//! and failures are counted and logged at most once per interval; callers treat
//! an error as a miss (fail open), never as a failed request.

pub mod counters;
mod embedded;
mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

pub use embedded::EmbeddedStore;
pub use redis::RedisStore;

/// Prefix of every key thrifty writes.
pub const KEY_PREFIX: &str = "thrifty:v1:";

/// How often a failing store is reported in the log.
const REPORT_EVERY: Duration = Duration::from_secs(30);

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
}

pub(super) enum Backend {
    Redis(RedisStore),
    Embedded(EmbeddedStore),
}

/// The store with its timeout and failure accounting.
pub struct Store {
    pub(super) backend: Backend,
    timeout: Duration,
    errors: AtomicU64,
    last_report: Mutex<Option<Instant>>,
}

impl Store {
    pub fn redis(store: RedisStore, timeout: Duration) -> Arc<Store> {
        Store::with(Backend::Redis(store), timeout)
    }

    pub fn embedded(store: EmbeddedStore, timeout: Duration) -> Arc<Store> {
        Store::with(Backend::Embedded(store), timeout)
    }

    fn with(backend: Backend, timeout: Duration) -> Arc<Store> {
        Arc::new(Store {
            backend,
            timeout,
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
        self.errors.load(Ordering::Relaxed)
    }

    pub(super) async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        if let Err(e) = &result {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let mut last = self.last_report.lock();
            if last.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                *last = Some(Instant::now());
                tracing::warn!(store = self.kind(), error = %e, total_errors = self.errors(), "store unavailable: serving without cache");
            }
        }
        result
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

    pub async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => r.put(key, value, ttl).await,
                Backend::Embedded(e) => e.put(key, value, ttl).await,
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

    pub async fn delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => r.delete(keys).await,
                Backend::Embedded(e) => e.delete(keys).await,
            }
        })
        .await
    }

    /// Every live key starting with `prefix`. Admin paths only: it walks the key space.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Walking the key space may take longer than one request's budget.
        let op = async {
            match &self.backend {
                Backend::Redis(r) => r.keys(prefix).await,
                Backend::Embedded(e) => e.keys(prefix).await,
            }
        };
        match tokio::time::timeout(self.timeout.max(Duration::from_secs(30)), op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// Tells every instance sharing this store; the embedded store has no one to tell.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redis(r) => self.bounded(r.publish(channel, message)).await,
            Backend::Embedded(_) => Ok(()),
        }
    }

    /// Messages other instances publish, when the store is shared.
    pub fn subscribe(&self, channel: &str) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
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

    /// Removes expired entries where the backend does not do it by itself.
    pub async fn sweep(&self) {
        if let Backend::Embedded(e) = &self.backend {
            if let Err(error) = e.sweep().await {
                tracing::warn!(%error, "embedded store sweep failed");
            }
        }
    }

    /// Whether the store answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => r.ping().await,
                Backend::Embedded(_) => Ok(()),
            }
        })
        .await
    }
}
