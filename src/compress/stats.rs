//! What compression did since the process started, for `GET /admin/compression/stats`:
//! requests checked and compressed, tokens before and after, summaries created,
//! extended, reused and failed, time spent. This room only adds and reports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::config::CompressionConfig;

use super::outcome::Outcome;

/// Counters since the process started; relaxed atomics, as they are only ever read as totals.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) checked: AtomicU64,
    pub(super) compressed: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) tokens_before: AtomicU64,
    pub(super) tokens_after: AtomicU64,
    pub(super) budget_not_met: AtomicU64,
    pub(super) condensed_messages: AtomicU64,
    pub(super) shortened_messages: AtomicU64,
    pub(super) summaries_created: AtomicU64,
    pub(super) summaries_extended: AtomicU64,
    pub(super) summaries_reused: AtomicU64,
    pub(super) summaries_failed: AtomicU64,
    pub(super) summarizer_tokens: AtomicU64,
    pub(super) micros: AtomicU64,
}

impl Stats {
    pub(super) fn record(&self, o: &Outcome) {
        let add = |counter: &AtomicU64, n: usize| {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        };
        add(&self.compressed, 1);
        add(&self.tokens_before, o.before);
        add(&self.tokens_after, o.after);
        add(&self.budget_not_met, usize::from(!o.budget_met));
        add(&self.condensed_messages, o.condensed_messages);
        add(&self.shortened_messages, o.shortened_messages);
        self.micros.fetch_add(
            u64::try_from(o.elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The counters as named integers, the shape [`crate::store::totals`] publishes.
    pub(super) fn counters(&self) -> HashMap<String, i64> {
        let get = |c: &AtomicU64| i64::try_from(c.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        [
            ("requests_checked", &self.checked),
            ("requests_compressed", &self.compressed),
            ("retries", &self.retries),
            ("tokens_before", &self.tokens_before),
            ("tokens_after", &self.tokens_after),
            ("budget_not_met", &self.budget_not_met),
            ("messages_condensed", &self.condensed_messages),
            ("messages_shortened", &self.shortened_messages),
            ("summaries_created", &self.summaries_created),
            ("summaries_extended", &self.summaries_extended),
            ("summaries_reused", &self.summaries_reused),
            ("summaries_failed", &self.summaries_failed),
            ("summarizer_tokens", &self.summarizer_tokens),
            ("micros", &self.micros),
        ]
        .into_iter()
        .map(|(name, counter)| (name.to_owned(), get(counter)))
        .collect()
    }
}

/// The report of counters shaped like [`Stats::counters`] under `config`.
pub(super) fn render(counters: &HashMap<String, i64>, config: &CompressionConfig) -> Value {
    let get = |name: &str| u64::try_from(counters.get(name).copied().unwrap_or(0)).unwrap_or(0);
    let (before, after) = (get("tokens_before"), get("tokens_after"));
    let compressed = get("requests_compressed");
    let micros = get("micros");
    json!({
        "enabled": config.enabled,
        "strategy": config.strategy.as_str(),
        "mode": config.mode.as_str(),
        "requests_checked": get("requests_checked"),
        "requests_compressed": compressed,
        "retries": get("retries"),
        "tokens_before": before,
        "tokens_after": after,
        "tokens_saved": before.saturating_sub(after),
        "ratio": if before == 0 { 1.0 } else { after as f64 / before as f64 },
        "budget_not_met": get("budget_not_met"),
        "messages_condensed": get("messages_condensed"),
        "messages_shortened": get("messages_shortened"),
        "summaries": {
            "created": get("summaries_created"),
            "extended": get("summaries_extended"),
            "reused": get("summaries_reused"),
            "failed": get("summaries_failed"),
            "summarizer_tokens": get("summarizer_tokens"),
        },
        "time_spent_ms": micros as f64 / 1000.0,
        "mean_time_ms": if compressed == 0 { 0.0 } else { micros as f64 / 1000.0 / compressed as f64 },
    })
}
