//! This instance's own limiters, with `governor`: the only ones with the embedded store, and
//! the fallback when the shared store does not answer. It keeps no state outside the process.
//!
//! Tenants that have been idle long enough to have a full bucket are forgotten by a
//! periodic `retain_recent`, so memory follows the number of active tenants.

use std::collections::HashMap;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Governor};

use super::{Choice, Limits};

type Keyed =
    Governor<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

fn keyed(limit: crate::config::RateLimit) -> Keyed {
    let quota = Quota::per_minute(limit.per_minute).allow_burst(limit.burst);
    Governor::keyed(quota).with_middleware::<StateInformationMiddleware>()
}

pub struct Local {
    default: Option<Keyed>,
    per_key: HashMap<String, Keyed>,
}

impl Local {
    pub fn new(limits: &Limits) -> Self {
        Local {
            default: limits.default.map(keyed),
            per_key: limits
                .per_key
                .iter()
                .map(|(name, limit)| (name.clone(), keyed(*limit)))
                .collect(),
        }
    }

    /// Admits one request of `tenant` under `choice`, or says how long to wait.
    pub fn check(&self, choice: &Choice<'_>, tenant: &String) -> Result<(), Duration> {
        let limiter = match choice.key {
            Some(name) => self.per_key.get(name),
            None => self.default.as_ref(),
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter
            .check_key(tenant)
            .map(drop)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets tenants whose buckets have refilled; called periodically.
    pub fn forget_idle(&self) {
        for limiter in self.default.iter().chain(self.per_key.values()) {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
