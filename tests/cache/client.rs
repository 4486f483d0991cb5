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

/// How many times Redis has run each command that returns a value, from `INFO commandstats`.
pub async fn value_reads(probe: &crate::Probe) -> Vec<(String, u64)> {
    let info: String = probe.query(redis::cmd("INFO").arg("commandstats")).await;
    ["get", "mget", "getex", "getdel", "dump", "getrange"]
        .iter()
        .map(|name| {
            let calls = info
                .lines()
                .find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:calls=")))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |n| n.parse().expect("a call count"));
            ((*name).to_owned(), calls)
        })
        .collect()
}

/// The value reads once no earlier one is still arriving: a poll the test gave up on (under
/// load, `wait_stored`'s entry view) may reach Redis a moment later, and must not be counted
/// as the stats call's.
pub async fn settled_value_reads(probe: &crate::Probe) -> Vec<(String, u64)> {
    let mut last = value_reads(probe).await;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let now = value_reads(probe).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("values kept being read with nothing asking: {last:?}");
}
