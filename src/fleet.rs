//! Statistics that read the same on every instance sharing one Redis: the cache, semantic
//! and compression counters are published to Redis totals (see [`crate::store::totals`])
//! each second and at admin reads, and `/admin/cache/stats` and `/admin/compression/stats`
//! report those totals. With the embedded store, or while Redis does not answer, they report
//! this instance's own counters, and say so in `scope`.
//!
//! This room never runs on the request path: requests only add to in-process counters.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::pipeline::Proxy;
use crate::store::totals::Totals;
use crate::store::{Store, StoreError};

/// `scope` when the figures are every instance's.
const CLUSTER: &str = "cluster";
/// `scope` when the figures are this instance's only.
const INSTANCE: &str = "instance";

/// The totals of the three rooms that count what they do.
pub struct FleetStats {
    cache: Totals,
    semantic: Totals,
    compression: Totals,
}

impl FleetStats {
    /// The shared totals when `store` is shared by several instances.
    pub fn new(store: &Arc<Store>) -> Option<FleetStats> {
        Some(FleetStats {
            cache: Totals::new(store, "cache")?,
            semantic: Totals::new(store, "semantic")?,
            compression: Totals::new(store, "compression")?,
        })
    }

    /// Adds what this instance counted since the last publish to the totals.
    pub async fn publish(&self, proxy: &Proxy) -> Result<(), StoreError> {
        self.cache.publish(proxy.cache().stats().counters()).await?;
        if let Some(semantic) = proxy.semantic() {
            self.semantic.publish(semantic.stats_counters()).await?;
        }
        self.compression
            .publish(proxy.compressor().stats_counters())
            .await
    }
}

/// The counters of `/admin/cache/stats`, the semantic stage's included.
pub async fn cache(proxy: &Proxy) -> Value {
    let local = proxy.cache().stats().counters();
    let Some(fleet) = proxy.fleet() else {
        let mut out = crate::cache::stats::render(&local);
        if let Some(semantic) = proxy.semantic() {
            out["semantic"] = semantic.stats_json();
        }
        out["scope"] = json!(INSTANCE);
        return out;
    };
    let (mut out, mut scope) = match fleet.cache.read(local.clone()).await {
        Ok(totals) => (crate::cache::stats::render(&totals), CLUSTER),
        Err(e) => {
            let mut out = crate::cache::stats::render(&local);
            out["totals_error"] = json!(e.to_string());
            (out, INSTANCE)
        }
    };
    if let Some(semantic) = proxy.semantic() {
        let local = semantic.stats_counters();
        out["semantic"] = match fleet.semantic.read(local.clone()).await {
            Ok(totals) => semantic.stats_of(&totals),
            Err(_) => {
                scope = INSTANCE;
                semantic.stats_of(&local)
            }
        };
    }
    out["scope"] = json!(scope);
    out
}

/// The report of `/admin/compression/stats`.
pub async fn compression(proxy: &Proxy) -> Value {
    let compressor = proxy.compressor();
    let local = compressor.stats_counters();
    let Some(fleet) = proxy.fleet() else {
        let mut out = compressor.stats_of(&local);
        out["scope"] = json!(INSTANCE);
        return out;
    };
    match fleet.compression.read(local.clone()).await {
        Ok(totals) => {
            let mut out = compressor.stats_of(&totals);
            out["scope"] = json!(CLUSTER);
            out
        }
        Err(e) => {
            let mut out = compressor.stats_of(&local);
            out["scope"] = json!(INSTANCE);
            out["totals_error"] = json!(e.to_string());
            out
        }
    }
}
