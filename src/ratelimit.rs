//! Per-tenant request rate limits with `governor`: a global default, per-key overrides.
//!
//! Tenants that have been idle long enough to have a full bucket are forgotten by a
//! periodic `retain_recent`, so memory follows the number of active tenants.

use std::collections::HashMap;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Governor};

use crate::auth::Tenant;
use crate::config::{ApiKey, RateLimit};
use crate::error::ProxyError;

type Keyed =
    Governor<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// One limit and the keyed limiter that applies it.
struct Bucket {
    limit: RateLimit,
    limiter: Keyed,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_minute(limit.per_minute).allow_burst(limit.burst);
        Bucket {
            limit,
            limiter: Governor::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }
}

pub struct RateLimiter {
    default: Option<Bucket>,
    per_key: HashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(default: Option<RateLimit>, keys: &[ApiKey]) -> Self {
        RateLimiter {
            default: default.map(Bucket::new),
            per_key: keys
                .iter()
                .filter_map(|k| Some((k.name.clone(), Bucket::new(k.rate_limit?))))
                .collect(),
        }
    }

    /// Admits one request for the tenant or says when to retry.
    pub fn check(&self, tenant: &Tenant) -> Result<(), ProxyError> {
        let bucket = tenant
            .key_name
            .as_ref()
            .and_then(|name| self.per_key.get(name))
            .or(self.default.as_ref());
        let Some(bucket) = bucket else { return Ok(()) };
        match bucket.limiter.check_key(&tenant.id) {
            Ok(_) => Ok(()),
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(DefaultClock::default().now());
                let interval = Duration::from_secs(60) / bucket.limit.per_minute.get();
                Err(ProxyError::RateLimited {
                    tenant: tenant.id.clone(),
                    limit: bucket.limit.per_minute.get(),
                    retry_after,
                    reset: retry_after + interval * (bucket.limit.burst.get() - 1),
                })
            }
        }
    }

    /// Forgets tenants whose buckets have refilled; called periodically.
    pub fn forget_idle(&self) {
        for bucket in self.default.iter().chain(self.per_key.values()) {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
        }
    }
}

/// Formats a duration the way OpenAI's `x-ratelimit-reset-*` headers do (`1s`, `6m0s`, `20ms`).
pub fn openai_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{}ms", ms.max(1));
    }
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        let s = format!("{secs:.3}");
        return format!("{}s", s.trim_end_matches('0').trim_end_matches('.'));
    }
    let whole = d.as_secs();
    format!("{}m{}s", whole / 60, whole % 60)
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

    #[test]
    fn burst_then_limited_per_tenant() {
        let limiter = RateLimiter::new(Some(limit(60, 2)), &[]);
        let a = tenant("a", None);
        assert!(limiter.check(&a).is_ok());
        assert!(limiter.check(&a).is_ok());
        let err = limiter.check(&a).expect_err("third is over the burst");
        let ProxyError::RateLimited {
            retry_after, limit, ..
        } = err
        else {
            panic!("expected rate limited")
        };
        assert_eq!(limit, 60);
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
        assert!(
            limiter.check(&tenant("b", None)).is_ok(),
            "tenants are independent"
        );
    }

    #[test]
    fn per_key_override_wins() {
        let keys = [ApiKey {
            name: "big".to_owned(),
            team: None,
            sha256: [0; 32],
            rate_limit: Some(limit(600, 5)),
        }];
        let limiter = RateLimiter::new(Some(limit(60, 1)), &keys);
        let big = tenant("big", Some("big"));
        for _ in 0..5 {
            assert!(limiter.check(&big).is_ok());
        }
        assert!(limiter.check(&big).is_err());
    }

    #[test]
    fn durations_look_like_openai_headers() {
        assert_eq!(openai_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(openai_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
    }
}
