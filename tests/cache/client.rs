//! The cache suite's calls on one thrifty, beyond the shared client in `tests/common/client.rs`:
//! admin stats and the bounded waits for an entry to be stored or gone.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Api, POLL, Reply, WAIT};

impl Api {
    /// `GET /admin/cache/stats`.
    pub async fn stats(&self) -> Value {
        let reply = self.admin_get("/admin/cache/stats").await;
        reply.assert_ok("admin stats");
        reply.json()
    }

    /// Waits until the answer with key `short` is in the store; returns the admin view of it.
    ///
    /// An entry is written just after the response body ends, so tests that go on to count
    /// upstream calls wait for it here instead of racing it.
    pub async fn wait_stored(&self, short: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(entry) = self.entry(short).await {
                return entry;
            }
            assert!(
                Instant::now() < deadline,
                "entry {short} was not stored within {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no answer with key `short` is in the store.
    pub async fn wait_gone(&self, short: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.entry(short).await.is_some() {
            assert!(
                Instant::now() < deadline,
                "entry {short} was still stored after {within:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// How long the answer with key `short` has left in the store, in milliseconds, through
    /// the admin API; `None` when it is not stored.
    pub async fn expires_in(&self, short: &str) -> Option<u64> {
        let entry = self.entry(short).await?;
        Some(
            entry["expires_in_ms"]
                .as_u64()
                .unwrap_or_else(|| panic!("entry {short} has no expires_in_ms: {entry}")),
        )
    }

    /// Sends a miss and waits until its answer is stored; returns the miss.
    pub async fn fill<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path: &str,
        body: &Value,
        headers: &[(K, V)],
    ) -> Reply {
        let miss = self.post(path, body, headers).await;
        miss.assert_cache("miss", &format!("filling {path}"));
        self.wait_stored(&miss.key()).await;
        miss
    }
}
