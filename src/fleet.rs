//! Statistics that read the same on every instance sharing one Redis: the cache, semantic
//! and compression counters are published to Redis totals (see [`crate::store::totals`])
//! each second and at admin reads, and `/admin/cache/stats` and `/admin/compression/stats`
//! report those totals. With the embedded store, or while Redis does not answer, they report
//! this instance's own counters, and say so in `scope`. `/metrics` adds the totals as
//! `thrifty_cluster_*` families beside the instance's own process metrics.
//!
//! This room never runs on the request path: requests only add to in-process counters.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::cache::stats::Stats as CacheStats;
use crate::compress::Compressor;
use crate::semantic::SemanticCache;
use crate::store::totals::Totals;
use crate::store::{Store, StoreError};

/// `scope` when the figures are every instance's.
const CLUSTER: &str = "cluster";
/// `scope` when the figures are this instance's only.
const INSTANCE: &str = "instance";

/// The counters of this instance: the three rooms that count what they do.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub cache: &'a CacheStats,
    pub semantic: Option<&'a SemanticCache>,
    pub compressor: &'a Compressor,
}

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
    pub async fn publish(&self, sources: Sources<'_>) -> Result<(), StoreError> {
        self.cache.publish(sources.cache.counters()).await?;
        if let Some(semantic) = sources.semantic {
            self.semantic.publish(semantic.stats_counters()).await?;
        }
        self.compression
            .publish(sources.compressor.stats_counters())
            .await
    }
}

/// The counters of `/admin/cache/stats`, the semantic stage's included.
pub async fn cache(fleet: Option<&FleetStats>, sources: Sources<'_>) -> Value {
    let local = sources.cache.counters();
    let Some(fleet) = fleet else {
        let mut out = crate::cache::stats::render(&local);
        if let Some(semantic) = sources.semantic {
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
    if let Some(semantic) = sources.semantic {
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
pub async fn compression(fleet: Option<&FleetStats>, sources: Sources<'_>) -> Value {
    let compressor = sources.compressor;
    let local = compressor.stats_counters();
    let Some(fleet) = fleet else {
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

/// The shared totals as `/metrics` families named `thrifty_cluster_*`, so that a scrape of
/// any instance tells them apart from its own process counters; `None` without a shared
/// store or while it does not answer.
pub async fn metrics(fleet: Option<&FleetStats>, sources: Sources<'_>) -> Option<Registry> {
    let fleet = fleet?;
    let cache = fleet.cache.read(sources.cache.counters()).await.ok()?;
    let compression = fleet
        .compression
        .read(sources.compressor.stats_counters())
        .await
        .ok()?;
    let mut registry = Registry::default();
    let lookups = Family::<Vec<(String, String)>, Counter>::default();
    let overview = crate::cache::stats::render(&cache);
    for outcome in ["hits", "semantic_hits", "misses", "bypasses", "off"] {
        lookups
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc_by(overview[outcome].as_u64().unwrap_or(0));
    }
    registry.register(
        "thrifty_cluster_cache_lookups",
        "Cache outcomes of every instance sharing this store, by outcome",
        lookups,
    );
    let get = |name: &str| u64::try_from(compression.get(name).copied().unwrap_or(0)).unwrap_or(0);
    registry.register(
        "thrifty_cluster_compressed_requests",
        "Requests compressed by every instance sharing this store",
        ConstCounter::new(get("requests_compressed")),
    );
    let tokens = Family::<Vec<(String, String)>, Counter>::default();
    for (measure, name) in [("before", "tokens_before"), ("after", "tokens_after")] {
        tokens
            .get_or_create(&vec![("measure".to_owned(), measure.to_owned())])
            .inc_by(get(name));
    }
    registry.register(
        "thrifty_cluster_compression_tokens",
        "Prompt tokens of compressed requests of every instance sharing this store, before and after",
        tokens,
    );
    if let Some(semantic) = sources.semantic {
        let totals = fleet.semantic.read(semantic.stats_counters()).await.ok()?;
        semantic_metrics(&totals, &mut registry);
    }
    Some(registry)
}

/// The semantic stage's shared decisions: lookups, skips by reason, questions indexed and
/// dropped from the index queue.
fn semantic_metrics(totals: &HashMap<String, i64>, registry: &mut Registry) {
    let get = |name: &str| u64::try_from(totals.get(name).copied().unwrap_or(0)).unwrap_or(0);
    let skipped = Family::<Vec<(String, String)>, Counter>::default();
    for (name, value) in totals {
        if let Some(reason) = name.strip_prefix("skipped_") {
            skipped
                .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
                .inc_by(u64::try_from(*value).unwrap_or(0));
        }
    }
    registry.register(
        "thrifty_cluster_semantic_skipped",
        "Questions the semantic stage of every instance sharing this store skipped, by reason",
        skipped,
    );
    for (name, help, field) in [
        (
            "thrifty_cluster_semantic_lookups",
            "Semantic lookups of every instance sharing this store",
            "lookups",
        ),
        (
            "thrifty_cluster_semantic_indexed",
            "Questions indexed by every instance sharing this store",
            "indexed",
        ),
        (
            "thrifty_cluster_semantic_index_dropped",
            "Questions dropped from a full index queue by every instance sharing this store",
            "index_dropped",
        ),
    ] {
        registry.register(name, help, ConstCounter::new(get(field)));
    }
}
