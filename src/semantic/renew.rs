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
    /// Keeps the keys of the stale records a reconcile found and wakes
    /// [`SemanticCache::renew_stale`].
    pub(super) fn found_stale(&self, mut keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        keys.truncate(MAX_STALE);
        *self.stale.lock() = keys;
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
        let keys = std::mem::take(&mut *self.stale.lock());
        let mut renewed = 0;
        for batch in keys.chunks(RENEW_BATCH) {
            let records = self.still_stale(batch).await;
            let texts: Vec<String> = records.iter().map(|r| r.text.clone()).collect();
            let vectors = self.embedder.embed_background(&texts).await;
            for (record, vector) in records.into_iter().zip(vectors) {
                if let Some(vector) = vector {
                    renewed += usize::from(self.write_back(record, &vector).await);
                }
            }
        }
        if renewed > 0 {
            self.stats.renewed(renewed as u64);
            tracing::info!(renewed, "semantic records of another model embedded again");
        }
        renewed
    }

    /// The records under `keys` that are, as read now, still another model's, with a question
    /// and time left: since the reconcile another instance may have renewed one, or it may
    /// have been deleted.
    async fn still_stale(&self, keys: &[String]) -> Vec<Record> {
        let Ok(raws) = self.cache.store().get_many(keys).await else {
            return Vec::new();
        };
        let model = self.embedder.model();
        raws.iter()
            .flatten()
            .filter_map(|raw| self.cache.sealer().open::<Record>(raw))
            .filter(|r| r.model != model && !r.text.trim().is_empty() && self.time_left(r) > 0)
            .collect()
    }

    /// Writes a record back with this model's vector, keeping its age, and indexes it.
    async fn write_back(&self, record: Record, vector: &[f32]) -> bool {
        let renewed = Record {
            vector: vector.to_vec(),
            model: self.embedder.model().to_owned(),
            ..record
        };
        let key = record_key(&renewed.partition, &renewed.answer);
        let Some(raw) = self.cache.sealer().seal(&renewed) else {
            return false;
        };
        let ttl = Duration::from_millis(self.time_left(&renewed));
        let announcement = format!("add {key}");
        if self
            .cache
            .store()
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
