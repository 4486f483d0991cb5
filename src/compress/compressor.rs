//! The `Compressor`, the one door the pipeline uses: it counts a request, plans the
//! cut, has a strategy write the condensed message, splices it in, shortens the
//! protected part if it still does not fit, and records what happened. This room
//! must not know wire JSON or call upstreams: the summarizer is handed in.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::Value;

use crate::chat::ChatRequest;
use crate::clock::Clock;
use crate::config::{CompressionConfig, Encoding, Mode, Strategy};
use crate::store::Store;

use super::extractive::Analyses;
use super::models;
use super::outcome::{Force, Outcome, SummaryUse};
use super::placement::Placement;
use super::plan::{Plan, Prepared, Pressure};
use super::shorten::shorten_protected;
use super::stats::Stats;
use super::strategy::{self, Condensed, Summaries};
use super::summarizer::Summarizer;
use super::tokens::TokenCounter;

/// A recovery retry uses this share of the budget.
const HARDER_BUDGET: f64 = 0.75;

/// Compresses chat requests; shared by every request.
pub struct Compressor {
    pub(super) config: CompressionConfig,
    pub(super) store: Option<Arc<Store>>,
    pub(super) counter: TokenCounter,
    /// What each old message yields whatever the question, kept across turns.
    pub(super) analyses: Analyses,
    pub(super) stats: Stats,
    /// What summaries' lifetimes are measured by.
    pub(super) clock: Clock,
}

impl Compressor {
    /// A compressor keeping summaries in `store`, their lifetimes measured by `clock`.
    pub fn new(config: CompressionConfig, store: Arc<Store>, clock: Clock) -> Self {
        Compressor::build(config, Some(store), clock)
    }

    /// A compressor without a summary store, for evaluation and benchmarks;
    /// the summarize strategy still works but summaries are not reused.
    pub fn offline(config: CompressionConfig) -> Self {
        Compressor::build(config, None, Clock::system())
    }

    fn build(config: CompressionConfig, store: Option<Arc<Store>>, clock: Clock) -> Self {
        if config.enabled {
            // Building a tokenizer takes about half a second; do it before the first request needs it.
            std::thread::spawn(TokenCounter::warm_up);
        }
        Compressor {
            config,
            store,
            counter: TokenCounter::new(),
            analyses: Analyses::new(),
            stats: Stats::default(),
            clock,
        }
    }

    pub fn config(&self) -> &CompressionConfig {
        &self.config
    }

    pub fn counter(&self) -> &TokenCounter {
        &self.counter
    }

    /// The encoding `model` is counted in: its override or models-table entry, else
    /// cl100k_base.
    pub fn encoding(&self, model: &str) -> Encoding {
        models::limits(&self.config, model).encoding
    }

    /// Compresses `chat` in place when it is over budget (or `force` says so);
    /// `None` when it was left alone. Never fails: a failing summarizer or store
    /// falls back to the extractive strategy.
    pub async fn compress(
        &self,
        chat: &mut ChatRequest,
        requested_output_tokens: Option<u64>,
        force: Force,
        summarizer: Option<&dyn Summarizer>,
    ) -> Option<Outcome> {
        if !self.config.enabled || force == Force::Off {
            return None;
        }
        let pressure = Pressure {
            recent: self.config.preserve_recent_messages,
            budget_scale: 1.0,
            force: force == Force::Force,
        };
        self.run(chat, requested_output_tokens, pressure, summarizer)
            .await
    }

    /// The recovery retry after the upstream answered `context_length_exceeded`:
    /// half the recent window, three quarters of the budget, every old turn
    /// condensed. Pass the request as the client sent it, not the already
    /// compressed one, so the old turns are condensed once.
    pub async fn harder(
        &self,
        chat: &mut ChatRequest,
        requested_output_tokens: Option<u64>,
        summarizer: Option<&dyn Summarizer>,
    ) -> Option<Outcome> {
        if !self.config.enabled {
            return None;
        }
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        let pressure = Pressure {
            recent: (self.config.preserve_recent_messages / 2).max(1),
            budget_scale: HARDER_BUDGET,
            force: true,
        };
        self.run(chat, requested_output_tokens, pressure, summarizer)
            .await
    }

    /// The extractive strategy alone, synchronously: for evaluation and benchmarks.
    pub fn compress_extractive(
        &self,
        chat: &mut ChatRequest,
        requested_output_tokens: Option<u64>,
        force: Force,
    ) -> Option<Outcome> {
        if !self.config.enabled || force == Force::Off {
            return None;
        }
        let started = Instant::now();
        let pressure = Pressure {
            recent: self.config.preserve_recent_messages,
            budget_scale: 1.0,
            force: force == Force::Force,
        };
        let prepared = self.prepare(chat, requested_output_tokens, pressure)?;
        let condensed = strategy::extractive(
            &self.counter,
            &self.analyses,
            self.config.ratio,
            chat,
            &prepared,
        );
        self.finish(chat, prepared, condensed, started)
    }

    async fn run(
        &self,
        chat: &mut ChatRequest,
        requested_output_tokens: Option<u64>,
        pressure: Pressure,
        summarizer: Option<&dyn Summarizer>,
    ) -> Option<Outcome> {
        let started = Instant::now();
        let prepared = self.prepare(chat, requested_output_tokens, pressure)?;
        let mut condensed = None;
        let mut failed = false;
        if self.config.strategy == Strategy::Summarize && !prepared.plan.condensed.is_empty() {
            if let Some(summarizer) = summarizer {
                let summaries = Summaries {
                    config: &self.config,
                    store: self.store.as_deref(),
                    stats: &self.stats,
                    clock: &self.clock,
                };
                match strategy::summarized(summaries, chat, &prepared, summarizer).await {
                    Ok(done) => condensed = Some(done),
                    Err(error) => {
                        tracing::warn!(%error, "summarizer failed: condensing extractively");
                        self.stats.summaries_failed.fetch_add(1, Ordering::Relaxed);
                        failed = true;
                    }
                }
            }
        }
        let mut condensed = match condensed {
            Some(done) => done,
            None => strategy::extractive(
                &self.counter,
                &self.analyses,
                self.config.ratio,
                chat,
                &prepared,
            ),
        };
        if failed {
            condensed.summary = SummaryUse::Failed;
        }
        self.finish(chat, prepared, condensed, started)
    }

    /// Counts the request and plans the cut; `None` when it should be left alone.
    fn prepare(
        &self,
        chat: &ChatRequest,
        requested_output_tokens: Option<u64>,
        pressure: Pressure,
    ) -> Option<Prepared> {
        let limits = models::limits(&self.config, &chat.model);
        let budget =
            (limits.budget(requested_output_tokens) as f64 * pressure.budget_scale) as usize;
        // Summaries are stored per prefix and reused: they are planned the stable way.
        let mode = match self.config.strategy {
            Strategy::Summarize => Mode::Stable,
            Strategy::Extractive => self.config.mode,
        };
        self.stats.checked.fetch_add(1, Ordering::Relaxed);
        // Under budget by its bytes, a request is under it by its tokens: no count needed.
        if !pressure.force && TokenCounter::request_bound(chat) <= budget {
            return None;
        }
        let counts = self.counter.request(limits.encoding, chat);
        let before = counts.total();
        if before <= budget && !pressure.force {
            return None;
        }
        let plan = Plan::new(
            &chat.messages,
            &counts,
            budget,
            pressure,
            mode,
            self.config.block_size,
            self.config.ratio,
        );
        Some(Prepared {
            encoding: limits.encoding,
            budget,
            counts,
            plan,
            mode,
        })
    }

    /// Replaces the condensed turns, shortens the protected part if it still does not fit, records.
    fn finish(
        &self,
        chat: &mut ChatRequest,
        prepared: Prepared,
        condensed: Condensed,
        started: Instant,
    ) -> Option<Outcome> {
        let Prepared {
            encoding,
            budget,
            counts,
            plan,
            mode: _,
        } = prepared;
        let before = counts.total();
        let old = std::mem::take(&mut chat.messages);
        let mut is_condensed = vec![false; old.len()];
        for &i in &plan.condensed {
            is_condensed[i] = true;
        }
        let mut messages = Vec::with_capacity(old.len() - plan.condensed.len() + 2);
        let mut tokens = Vec::with_capacity(messages.capacity());
        let mut protect_from = None;
        let mut latest_user = None;
        for (i, (message, count)) in old.into_iter().zip(counts.messages).enumerate() {
            if i == plan.protect_start {
                protect_from = Some(messages.len());
            }
            if plan.latest_user == Some(i) {
                latest_user = Some(messages.len());
            }
            if !is_condensed[i] {
                messages.push(message);
                tokens.push(count);
            }
        }
        let mut protect_from = protect_from.unwrap_or(messages.len());
        if let Some(text) = condensed.text {
            let placement = Placement::choose(&messages, plan.lead);
            if let Placement::User(at) | Placement::UserAndAcknowledgement(at) = placement {
                let inserted = placement.inserted();
                let shift = |i: &mut usize| {
                    if *i >= at {
                        *i += inserted;
                    }
                };
                shift(&mut protect_from);
                if let Some(u) = latest_user.as_mut() {
                    shift(u);
                }
                tokens.splice(at..at, std::iter::repeat_n(0, inserted));
            }
            for i in placement.apply(&mut messages, text) {
                tokens[i] = self.counter.message(encoding, &messages[i]);
            }
        }
        let mut after = counts.fixed + tokens.iter().sum::<usize>();
        let mut shortened = 0;
        if after > budget {
            shortened = shorten_protected(
                &self.counter,
                encoding,
                &mut messages,
                &mut tokens,
                protect_from,
                latest_user,
                after - budget,
            );
            after = counts.fixed + tokens.iter().sum::<usize>();
        }
        chat.messages = messages;
        if plan.condensed.is_empty() && shortened == 0 && after <= budget {
            return None;
        }
        let outcome = Outcome {
            before,
            after,
            budget,
            budget_met: shortened == 0 && after <= budget,
            strategy: condensed.strategy.as_str(),
            summary: condensed.summary,
            summarizer_tokens: condensed.summarizer_tokens,
            condensed_messages: plan.condensed.len(),
            shortened_messages: shortened,
            elapsed: started.elapsed(),
        };
        self.stats.record(&outcome);
        Some(outcome)
    }

    /// Counters for `GET /admin/compression/stats`.
    pub fn stats(&self) -> Value {
        super::stats::render(&self.stats.counters(), &self.config)
    }

    /// The counters as named integers, for the totals shared by every instance.
    pub fn stats_counters(&self) -> std::collections::HashMap<String, i64> {
        self.stats.counters()
    }

    /// The report of `counters` (every instance's, from [`Compressor::stats_counters`]).
    pub fn stats_of(&self, counters: &std::collections::HashMap<String, i64>) -> Value {
        super::stats::render(counters, &self.config)
    }
}
