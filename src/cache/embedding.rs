//! The per-input embedding cache: one entry per (scope, model, parameters,
//! input text), so a batch with some cached inputs sends only the rest upstream.

use super::controls::{CacheMode, Controls};
use super::entry::EmbeddingEntry;
use super::key::{self, CacheKey};
use super::{Cache, EMBEDDING_PREFIX, Outcome, now_ms};
use crate::chat::{Dialect, EmbeddingInput, EmbeddingRequest};

/// The cache's view of one embedding call.
pub struct EmbeddingPlan {
    pub mode: CacheMode,
    /// One key per text input; empty when the call is not cached per input.
    pub keys: Vec<CacheKey>,
    pub texts: Vec<String>,
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
        let (keys, texts) = match (&request.input, mode) {
            (_, CacheMode::Off | CacheMode::Bypass) | (EmbeddingInput::Tokens(_), _) => {
                (Vec::new(), Vec::new())
            }
            (EmbeddingInput::Texts { texts, .. }, _) => (
                texts
                    .iter()
                    .map(|t| key::embedding_key(&scope, dialect, upstream, request, t))
                    .collect(),
                texts.clone(),
            ),
        };
        let ttl = controls.ttl.map_or_else(
            || self.config.ttl_for(&request.model),
            |t| t.min(self.config.max_ttl),
        );
        EmbeddingPlan {
            mode,
            keys,
            texts,
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
        let oldest_ms = plan
            .max_age
            .map(|age| now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
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
        let created_ms = now_ms();
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
pub fn subset(request: &EmbeddingRequest, texts: &[String], indexes: &[usize]) -> EmbeddingRequest {
    let mut sub = request.clone();
    sub.input = EmbeddingInput::Texts {
        texts: indexes.iter().map(|&i| texts[i].clone()).collect(),
        single: indexes.len() == 1
            && matches!(request.input, EmbeddingInput::Texts { single: true, .. }),
    };
    sub
}

/// Splits a batch's token count over its inputs in proportion to their length,
/// so the parts always add up to exactly `total`.
pub fn apportion(total: u64, texts: &[&str]) -> Vec<u64> {
    if texts.len() == 1 {
        return vec![total];
    }
    let weights: Vec<u64> = texts
        .iter()
        .map(|t| t.chars().count().max(1) as u64)
        .collect();
    let sum: u64 = weights.iter().sum();
    let mut parts: Vec<u64> = weights.iter().map(|w| total * w / sum).collect();
    let mut remainder = total - parts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..texts.len()).collect();
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
            let parts = apportion(total, &["a", "bb bb", "ccc ccc ccc"]);
            assert_eq!(parts.iter().sum::<u64>(), total);
        }
        assert_eq!(apportion(9, &["x"]), [9]);
    }
}
