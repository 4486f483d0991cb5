//! Limits shared by every instance on one Redis: GCRA evaluated atomically in Redis by one
//! Lua script, on Redis's clock, so the instances need not agree on the time.
//!
//! One key per tenant holds its theoretical arrival time (TAT) in microseconds and expires
//! when the bucket is full again, so Redis holds only the tenants active within a burst.
//! This room never decides what to do when Redis does not answer: it returns the error.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::RateLimit;
use crate::store::{KEY_PREFIX, Store, StoreError};

/// `KEYS[1]`: the tenant's TAT; `ARGV[1]`: the emission interval (µs); `ARGV[2]`: the burst.
/// Returns `{1, 0}` when admitted, `{0, wait µs}` when not; a refusal writes nothing.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - interval * tonumber(ARGV[2]) - now
if wait > 0 then return {0, wait} end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return {1, 0}
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

pub struct Shared {
    store: Arc<Store>,
}

impl Shared {
    pub fn new(store: Arc<Store>) -> Self {
        Shared { store }
    }

    /// Admits one request of `tenant` under `limit` (`bucket` naming the limit), or says how
    /// long to wait; an error when Redis did not answer within the store's request timeout.
    pub async fn check(
        &self,
        bucket: &str,
        tenant: &str,
        limit: RateLimit,
    ) -> Result<Result<(), Duration>, StoreError> {
        let interval = 60_000_000 / u64::from(limit.per_minute.get());
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(key(bucket, tenant))
            .arg(interval.max(1))
            .arg(limit.burst.get());
        let (admitted, wait): (i64, i64) = self.store.run_script(&invocation).await?;
        Ok(if admitted == 1 {
            Ok(())
        } else {
            Err(Duration::from_micros(u64::try_from(wait).unwrap_or(1)))
        })
    }
}

/// The tenant's key: its id hashed (ids are bounded but may hold any text), in a hash tag of
/// its own so that anything else kept per tenant can live in the same cluster slot.
fn key(bucket: &str, tenant: &str) -> String {
    let digest = Sha256::digest(format!("{bucket}\n{tenant}").as_bytes());
    format!("{KEY_PREFIX}ratelimit:{{{}}}", hex::encode(&digest[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_tagged_per_tenant_and_bucket() {
        let a = key("default", "anon-1");
        assert!(a.starts_with("thrifty:v1:ratelimit:{") && a.ends_with('}'));
        assert_ne!(a, key("default", "anon-2"));
        assert_ne!(a, key("batch", "anon-1"));
        assert_eq!(a, key("default", "anon-1"));
    }
}
