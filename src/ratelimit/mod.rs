//! Per-tenant request rate limits: a global default, per-key overrides.
//!
//! - `local.rs`: this instance's `governor` limiters, the only ones with the embedded store.
//! - `shared.rs`: GCRA in Redis, one budget for every instance on the same Redis.
//!
//! This room picks the limit of a tenant, asks the shared limiter when there is one and
//! falls back to the local one when Redis does not answer: a tenant then gets its limit on
//! each instance (fail open to local limits, never to no limit). The fall-back and the
//! return are logged once each, and `/readyz` reports which limiters are in use.

mod local;
mod shared;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::auth::Tenant;
use crate::config::{ApiKey, RateLimit};
use crate::error::ProxyError;
use crate::store::Store;
use local::Local;
use shared::Shared;

/// The configured limits.
pub(crate) struct Limits {
    default: Option<RateLimit>,
    per_key: HashMap<String, RateLimit>,
}

/// The limit that applies to one request: a key's own (`key` names it) or the default.
pub(crate) struct Choice<'a> {
    key: Option<&'a str>,
    limit: RateLimit,
}

pub struct RateLimiter {
    limits: Limits,
    local: Local,
    shared: Option<Shared>,
    /// Whether the last shared check failed, so that checks run on the local limiters.
    falling_back: AtomicBool,
}

impl RateLimiter {
    /// Limits kept in this process only.
    pub fn new(default: Option<RateLimit>, keys: &[ApiKey]) -> Self {
        let limits = Limits {
            default,
            per_key: keys
                .iter()
                .filter_map(|k| Some((k.name.clone(), k.rate_limit?)))
                .collect(),
        };
        RateLimiter {
            local: Local::new(&limits),
            limits,
            shared: None,
            falling_back: AtomicBool::new(false),
        }
    }

    /// Limits shared through `store` when every instance sees it (Redis), local otherwise.
    pub fn with_store(default: Option<RateLimit>, keys: &[ApiKey], store: &Arc<Store>) -> Self {
        let mut limiter = RateLimiter::new(default, keys);
        if store.is_shared() {
            limiter.shared = Some(Shared::new(store.clone()));
        }
        limiter
    }

    fn choose(&self, tenant: &Tenant) -> Option<Choice<'_>> {
        if let Some((name, limit)) = tenant
            .key_name
            .as_ref()
            .and_then(|name| self.limits.per_key.get_key_value(name))
        {
            return Some(Choice {
                key: Some(name),
                limit: *limit,
            });
        }
        self.limits.default.map(|limit| Choice { key: None, limit })
    }

    /// Admits one request for the tenant or says when to retry.
    pub async fn check(&self, tenant: &Tenant) -> Result<(), ProxyError> {
        let Some(choice) = self.choose(tenant) else {
            return Ok(());
        };
        let verdict = match &self.shared {
            Some(shared) => {
                let bucket = choice.key.unwrap_or("");
                match shared.check(bucket, &tenant.id, choice.limit).await {
                    Ok(verdict) => {
                        self.reached();
                        verdict
                    }
                    Err(error) => {
                        self.unreached(&error);
                        self.local.check(&choice, &tenant.id)
                    }
                }
            }
            None => self.local.check(&choice, &tenant.id),
        };
        verdict.map_err(|retry_after| {
            let limit = choice.limit;
            let interval = Duration::from_secs(60) / limit.per_minute.get();
            ProxyError::RateLimited {
                tenant: tenant.id.clone(),
                limit: limit.per_minute.get(),
                retry_after,
                reset: retry_after + interval * (limit.burst.get() - 1),
            }
        })
    }

    fn reached(&self) {
        if self.falling_back.swap(false, Ordering::AcqRel) {
            tracing::info!("rate limits are shared across instances again");
        }
    }

    fn unreached(&self, error: &crate::store::StoreError) {
        if !self.falling_back.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "store unreachable: rate limits fall back to this instance's own");
        }
    }

    /// Which limiters admit requests now, for `/readyz`: `none` when no limit is set,
    /// `local` without a shared store, `shared`, or `local (store unreachable)` while the
    /// shared store does not answer (`store_answers` is the caller's latest probe).
    pub fn mode(&self, store_answers: bool) -> &'static str {
        if self.limits.default.is_none() && self.limits.per_key.is_empty() {
            return "none";
        }
        match &self.shared {
            None => "local",
            Some(_) if store_answers && !self.falling_back.load(Ordering::Acquire) => "shared",
            Some(_) => "local (store unreachable)",
        }
    }

    /// Forgets tenants whose local buckets have refilled; called periodically.
    pub fn forget_idle(&self) {
        self.local.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn tenant(id: &str, key: Option<&str>) -> Tenant {
        Tenant {
            id: id.to_owned(),
            key_name: key.map(str::to_owned),
            team: None,
            rate_limit: None,
        }
    }

    fn limit(per_minute: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_minute: NonZeroU32::new(per_minute).expect("nonzero"),
            burst: NonZeroU32::new(burst).expect("nonzero"),
        }
    }

    #[tokio::test]
    async fn burst_then_limited_per_tenant() {
        let limiter = RateLimiter::new(Some(limit(60, 2)), &[]);
        let a = tenant("a", None);
        assert!(limiter.check(&a).await.is_ok());
        assert!(limiter.check(&a).await.is_ok());
        let err = limiter
            .check(&a)
            .await
            .expect_err("third is over the burst");
        let ProxyError::RateLimited {
            retry_after, limit, ..
        } = err
        else {
            panic!("expected rate limited")
        };
        assert_eq!(limit, 60);
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
        assert!(
            limiter.check(&tenant("b", None)).await.is_ok(),
            "tenants are independent"
        );
    }

    #[tokio::test]
    async fn per_key_override_wins() {
        let keys = [ApiKey {
            name: "big".to_owned(),
            team: None,
            sha256: [0; 32],
            rate_limit: Some(limit(600, 5)),
        }];
        let limiter = RateLimiter::new(Some(limit(60, 1)), &keys);
        let big = tenant("big", Some("big"));
        for _ in 0..5 {
            assert!(limiter.check(&big).await.is_ok());
        }
        assert!(limiter.check(&big).await.is_err());
    }
}
