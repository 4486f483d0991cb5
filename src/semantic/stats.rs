//! What the semantic stage did and skipped, for `/admin/cache/stats` and `/metrics`.
//!
//! Counters only: the stage adds one per decision, and readers take a snapshot.

use std::collections::HashMap;
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
    /// Stored questions of another model embedded again with this one.
    renewed: AtomicU64,
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

    pub fn renewed(&self, n: u64) {
        self.renewed.fetch_add(n, Ordering::Relaxed);
    }

    fn skips(&self, why: Skip) -> u64 {
        self.skipped[why as usize].load(Ordering::Relaxed)
    }

    /// The stage's decisions as named integers, the shape [`crate::store::totals`]
    /// publishes; the model's work is not among them, it is this process's own.
    pub fn counters(&self) -> HashMap<String, i64> {
        let get = |c: &AtomicU64| i64::try_from(c.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let mut out: HashMap<String, i64> = Skip::ALL
            .iter()
            .map(|s| {
                (
                    format!("skipped_{}", s.as_str()),
                    get(&self.skipped[*s as usize]),
                )
            })
            .collect();
        out.insert("lookups".to_owned(), get(&self.lookups));
        out.insert("indexed".to_owned(), get(&self.indexed));
        out.insert("index_dropped".to_owned(), get(&self.dropped));
        out.insert("renewed".to_owned(), get(&self.renewed));
        out
    }

    /// This process's counters and the model's work as JSON, `queued` being the questions
    /// waiting now.
    pub fn json(&self, model: &Counters, queued: usize) -> Value {
        render(&self.counters(), model, queued)
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
            "thrifty_semantic_renewed",
            "Stored questions of another model embedded again with this one",
            constant(self.renewed.load(Ordering::Relaxed)),
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

/// Counters shaped like [`Stats::counters`] (every instance's, or this one's) and this
/// process's model work as JSON.
pub fn render(counters: &HashMap<String, i64>, model: &Counters, queued: usize) -> Value {
    let get = |name: &str| u64::try_from(counters.get(name).copied().unwrap_or(0)).unwrap_or(0);
    let skipped: serde_json::Map<String, Value> = Skip::ALL
        .iter()
        .map(|s| {
            let name = s.as_str();
            (name.to_owned(), json!(get(&format!("skipped_{name}"))))
        })
        .collect();
    let texts = model.texts.load(Ordering::Relaxed);
    let micros = model.busy_micros.load(Ordering::Relaxed);
    json!({
        "lookups": get("lookups"),
        "skipped": skipped,
        "indexed": get("indexed"),
        "index_queue": queued,
        "index_dropped": get("index_dropped"),
        "renewed": get("renewed"),
        "embeddings": texts,
        "model_runs": model.runs.load(Ordering::Relaxed),
        "embedding_ms": micros as f64 / 1000.0,
        "embedding_ms_per_text": if texts == 0 { 0.0 } else { micros as f64 / 1000.0 / texts as f64 },
    })
}
