//! What compression did since the process started, for `GET /admin/compression/stats`:
//! requests checked and compressed, tokens before and after, summaries created,
//! extended, reused and failed, time spent. This room only adds and reports.

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

    pub(super) fn json(&self, config: &CompressionConfig) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (before, after) = (get(&self.tokens_before), get(&self.tokens_after));
        let compressed = get(&self.compressed);
        json!({
            "enabled": config.enabled,
            "strategy": config.strategy.as_str(),
            "mode": config.mode.as_str(),
            "requests_checked": get(&self.checked),
            "requests_compressed": compressed,
            "retries": get(&self.retries),
            "tokens_before": before,
            "tokens_after": after,
            "tokens_saved": before.saturating_sub(after),
            "ratio": if before == 0 { 1.0 } else { after as f64 / before as f64 },
            "budget_not_met": get(&self.budget_not_met),
            "messages_condensed": get(&self.condensed_messages),
            "messages_shortened": get(&self.shortened_messages),
            "summaries": {
                "created": get(&self.summaries_created),
                "extended": get(&self.summaries_extended),
                "reused": get(&self.summaries_reused),
                "failed": get(&self.summaries_failed),
                "summarizer_tokens": get(&self.summarizer_tokens),
            },
            "time_spent_ms": get(&self.micros) as f64 / 1000.0,
            "mean_time_ms": if compressed == 0 { 0.0 } else { get(&self.micros) as f64 / 1000.0 / compressed as f64 },
        })
    }
}
