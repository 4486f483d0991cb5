//! What the semantic stage did and skipped, for `/admin/cache/stats` and `/metrics`.
//!
//! Counters only: the stage adds one per decision, and readers take a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::embedder::Counters;

/// Why a question was not looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Its partition holds no entries, so no hit was possible; nothing was embedded.
    Empty,
    /// The last user message is longer than `semantic.max_question_tokens`: exact cache only.
    Long,
    /// The model could not start on it within `semantic.max_wait`.
    Busy,
    /// The model failed.
    Failed,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Empty => "empty_partition",
            Skip::Long => "long",
            Skip::Busy => "busy",
            Skip::Failed => "failed",
        }
    }

    const ALL: [Skip; 4] = [Skip::Empty, Skip::Long, Skip::Busy, Skip::Failed];
}

#[derive(Default)]
pub struct Stats {
    /// Questions embedded and searched.
    lookups: AtomicU64,
    skipped: [AtomicU64; 4],
    /// Questions embedded and indexed after their answers.
    indexed: AtomicU64,
    /// Questions not indexed because the queue was full.
    dropped: AtomicU64,
}

impl Stats {
    pub fn looked_up(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
    }

    pub fn skipped(&self, why: Skip) {
        self.skipped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn indexed(&self, n: u64) {
        self.indexed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn skips(&self, why: Skip) -> u64 {
        self.skipped[why as usize].load(Ordering::Relaxed)
    }

    /// The counters and the model's work as JSON, `queued` being the questions waiting now.
    pub fn json(&self, model: &Counters, queued: usize) -> Value {
        let skipped: serde_json::Map<String, Value> = Skip::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), json!(self.skips(*s))))
            .collect();
        let texts = model.texts.load(Ordering::Relaxed);
        let micros = model.busy_micros.load(Ordering::Relaxed);
        json!({
            "lookups": self.lookups.load(Ordering::Relaxed),
            "skipped": skipped,
            "indexed": self.indexed.load(Ordering::Relaxed),
            "index_queue": queued,
            "index_dropped": self.dropped.load(Ordering::Relaxed),
            "embeddings": texts,
            "model_runs": model.runs.load(Ordering::Relaxed),
            "embedding_ms": micros as f64 / 1000.0,
            "embedding_ms_per_text": if texts == 0 { 0.0 } else { micros as f64 / 1000.0 / texts as f64 },
        })
    }

    /// The counters as a registry for `/metrics`.
    pub fn registry(&self, model: &Counters) -> Registry {
        let mut registry = Registry::default();
        let constant = |value: u64| ConstCounter::new(value);
        registry.register(
            "thrifty_semantic_lookups",
            "Questions the semantic stage embedded and searched",
            constant(self.lookups.load(Ordering::Relaxed)),
        );
        let skipped = Family::<Vec<(String, String)>, Counter>::default();
        for why in Skip::ALL {
            skipped
                .get_or_create(&vec![("reason".to_owned(), why.as_str().to_owned())])
                .inc_by(self.skips(why));
        }
        registry.register(
            "thrifty_semantic_skipped",
            "Questions the semantic stage did not look up, by reason",
            skipped,
        );
        registry.register(
            "thrifty_semantic_indexed",
            "Questions embedded and indexed after their answers",
            constant(self.indexed.load(Ordering::Relaxed)),
        );
        registry.register(
            "thrifty_semantic_index_dropped",
            "Questions not indexed because the index queue was full",
            constant(self.dropped.load(Ordering::Relaxed)),
        );
        registry.register(
            "thrifty_semantic_embeddings",
            "Texts the embedding model embedded",
            constant(model.texts.load(Ordering::Relaxed)),
        );
        registry.register(
            "thrifty_semantic_embedding_seconds",
            "Time the embedding model spent running",
            ConstCounter::new(model.busy_micros.load(Ordering::Relaxed) as f64 / 1e6),
        );
        registry
    }
}
