//! Records another model made, embedded again with this one.
//!
//! A vector is only comparable with vectors of the model that made it, so a reconcile leaves
//! records of another model (another `semantic.model_dir`, or records from before a release
//! changed the model) out of the index. Their questions are kept as text, so instead of
//! waiting for them to age out, each is embedded again as background work, after every
//! waiting lookup, a few at a time, and written back under this model's name: an upgrade keeps
//! its semantic hits. Instances sharing a store hear of each renewed record as of a new one.

use std::sync::Arc;
use std::time::Duration;

use super::{EVENTS, Record, SemanticCache, record_key};

/// The most stale records one reconcile hands over; the rest wait for a later one.
const MAX_STALE: usize = 10_000;

/// Texts queued for the model at a time, so a renewal never fills its background queue.
const RENEW_BATCH: usize = 16;

impl SemanticCache {
    /// Keeps the stale records a reconcile found and wakes [`SemanticCache::renew_stale`].
    pub(super) fn found_stale(&self, mut stale: Vec<Record>) {
        stale.retain(|record| !record.text.trim().is_empty() && self.time_left(record) > 0);
        if stale.is_empty() {
            return;
        }
        stale.truncate(MAX_STALE);
        *self.stale.lock() = stale;
        self.stale_found.notify_one();
    }

    /// Renews the stale records each reconcile finds, one pass at a time, until dropped.
    pub async fn renew_stale(self: Arc<Self>) {
        loop {
            self.stale_found.notified().await;
            self.renew().await;
        }
    }

    /// Embeds the stale records the last reconcile found with this model, writes them back
    /// and indexes them; returns how many it renewed.
    pub async fn renew(&self) -> usize {
        let stale = std::mem::take(&mut *self.stale.lock());
        let mut renewed = 0;
        for batch in stale.chunks(RENEW_BATCH) {
            let texts: Vec<String> = batch.iter().map(|r| r.text.clone()).collect();
            let vectors = self.embedder.embed_background(&texts).await;
            for (record, vector) in batch.iter().zip(vectors) {
                if let Some(vector) = vector {
                    renewed += usize::from(self.renew_one(record, &vector).await);
                }
            }
        }
        if renewed > 0 {
            self.stats.renewed(renewed as u64);
            tracing::info!(renewed, "semantic records of another model embedded again");
        }
        renewed
    }

    /// Writes one record back with this model's vector, if it is still stored, still another
    /// model's, and has time left.
    async fn renew_one(&self, record: &Record, vector: &[f32]) -> bool {
        let left = self.time_left(record);
        if left == 0 {
            return false;
        }
        let key = record_key(&record.partition, &record.answer);
        let store = self.cache.store();
        // Read again: another instance may have renewed it, or it may have been deleted.
        let Ok(Some(raw)) = store.get(&key).await else {
            return false;
        };
        let Some(current) = self.cache.sealer().open::<Record>(&raw) else {
            return false;
        };
        let model = self.embedder.model();
        if current.model == model || current.text != record.text {
            return false;
        }
        let renewed = Record {
            vector: vector.to_vec(),
            model: model.to_owned(),
            ..current
        };
        let Some(raw) = self.cache.sealer().seal(&renewed) else {
            return false;
        };
        let ttl = Duration::from_millis(left);
        let announcement = format!("add {key}");
        if store
            .put_announced(&key, raw, ttl, EVENTS, &announcement)
            .await
            .is_err()
        {
            return false;
        }
        self.index.insert(
            &renewed.partition,
            &renewed.answer,
            &renewed.text,
            renewed.vector,
        );
        true
    }

    /// How long a record has left to live, in milliseconds: vectors live as long as the
    /// longest an answer may (`cache.max_ttl`), from when they were first written.
    fn time_left(&self, record: &Record) -> u64 {
        let max_ttl = u64::try_from(self.cache.config().max_ttl.as_millis()).unwrap_or(u64::MAX);
        record
            .created_ms
            .saturating_add(max_ttl)
            .saturating_sub(self.cache.clock().now_ms())
    }
}
