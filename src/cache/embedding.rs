//! The per-input embedding cache: one entry per (scope, model, parameters,
//! input text), so a batch with some cached inputs sends only the rest upstream.

use super::controls::{CacheMode, Controls};
use super::entry::EmbeddingEntry;
use super::key::{self, CacheKey};
use super::{Cache, EMBEDDING_PREFIX, Outcome};
use crate::chat::{Dialect, EmbeddingRequest};

/// The cache's view of one embedding call.
pub struct EmbeddingPlan {
    pub mode: CacheMode,
    /// One key per input; empty when the call is not cached per input.
    pub keys: Vec<CacheKey>,
    /// Each input's share of a batch's token count.
    pub weights: Vec<u64>,
    pub tenant: String,
    pub namespace: Option<String>,
    pub tags: Vec<String>,
    /// How long new entries live.
    pub ttl: std::time::Duration,
    /// The oldest entry the client accepts.
    pub max_age: Option<std::time::Duration>,
}

impl EmbeddingPlan {
    /// The header outcome when nothing was looked up.
    pub fn skipped(&self) -> Option<Outcome> {
        match self.mode {
            _ if !self.keys.is_empty() => None,
            CacheMode::Off => Some(Outcome::Off),
            _ => Some(Outcome::Bypass),
        }
    }
}

fn store_key(key: &CacheKey) -> String {
    format!("{EMBEDDING_PREFIX}{}", key.0)
}

impl Cache {
    pub fn plan_embedding(
        &self,
        dialect: Dialect,
        upstream: &str,
        tenant: &str,
        request: &EmbeddingRequest,
        controls: &Controls,
    ) -> EmbeddingPlan {
        let mode = if self.config.enabled {
            controls.mode
        } else {
            CacheMode::Off
        };
        let scope = self.scope(tenant, controls);
        let (keys, weights) = match mode {
            CacheMode::Off | CacheMode::Bypass => (Vec::new(), Vec::new()),
            _ => request
                .input
                .pieces()
                .into_iter()
                .map(|piece| {
                    let key = key::embedding_key(&scope, dialect, upstream, request, piece);
                    (key, piece.weight())
                })
                .unzip(),
        };
        let ttl = controls.ttl.map_or_else(
            || self.config.ttl_for(&request.model),
            |t| t.min(self.config.max_ttl),
        );
        EmbeddingPlan {
            mode,
            keys,
            weights,
            tenant: tenant.to_owned(),
            namespace: controls.namespace.clone(),
            tags: controls.tags.clone(),
            ttl,
            max_age: controls.max_age,
        }
    }

    /// The cached entry of each input, `None` where there is none.
    pub async fn lookup_embeddings(&self, plan: &EmbeddingPlan) -> Vec<Option<EmbeddingEntry>> {
        if !plan.mode.read() {
            return vec![None; plan.keys.len()];
        }
        let oldest_ms = plan.max_age.map(|age| {
            self.clock
                .now_ms()
                .saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
        });
        let keys: Vec<String> = plan.keys.iter().map(store_key).collect();
        let Ok(raws) = self.store.get_many(&keys).await else {
            return vec![None; plan.keys.len()];
        };
        raws.into_iter()
            .map(|raw| {
                let entry = self.sealer.open::<EmbeddingEntry>(&raw?)?;
                oldest_ms
                    .is_none_or(|oldest| entry.created_ms >= oldest)
                    .then_some(entry)
            })
            .collect()
    }

    /// Stores fresh vectors for the inputs at `indexes`.
    pub async fn put_embeddings(
        &self,
        plan: &EmbeddingPlan,
        model: &str,
        indexes: &[usize],
        vectors: Vec<Vec<f64>>,
        tokens: &[u64],
    ) {
        if !plan.mode.write() {
            return;
        }
        let created_ms = self.clock.now_ms();
        let entries: Vec<(String, bytes::Bytes)> = indexes
            .iter()
            .zip(vectors)
            .zip(tokens)
            .filter_map(|((&i, vector), &tokens)| {
                let entry = EmbeddingEntry {
                    created_ms,
                    tenant: plan.tenant.clone(),
                    namespace: plan.namespace.clone(),
                    tags: plan.tags.clone(),
                    model: model.to_owned(),
                    vector,
                    tokens,
                };
                Some((store_key(plan.keys.get(i)?), self.sealer.seal(&entry)?))
            })
            .collect();
        // A failure is counted by the store; the inputs are simply asked again next time.
        let _ = self.store.put_many(entries, plan.ttl).await;
    }
}

/// The same request with only the inputs at `indexes`.
pub fn subset(request: &EmbeddingRequest, indexes: &[usize]) -> EmbeddingRequest {
    let mut sub = request.clone();
    sub.input = request.input.subset(indexes);
    sub
}

/// Splits a batch's token count over its inputs in proportion to their weights (lengths),
/// so the parts always add up to exactly `total`.
pub fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    if weights.len() == 1 {
        return vec![total];
    }
    let sum: u64 = weights.iter().sum();
    let mut parts: Vec<u64> = weights.iter().map(|w| total * w / sum).collect();
    let mut remainder = total - parts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((total * weights[i]) % sum));
    for i in order {
        if remainder == 0 {
            break;
        }
        parts[i] += 1;
        remainder -= 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportioned_tokens_add_up() {
        for total in [0, 1, 7, 100, 12345] {
            let parts = apportion(total, &[1, 5, 11]);
            assert_eq!(parts.iter().sum::<u64>(), total);
        }
        assert_eq!(apportion(9, &[1]), [9]);
    }
}
