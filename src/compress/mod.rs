//! Conversation compression: when a chat prompt exceeds its token budget, the old
//! turns are condensed into one message and the recent ones are forwarded verbatim.
//!
//! ```text
//!  [system/developer…] [old turns ……………………………] [latest user] [last N messages]
//!          kept        └─ condensed into one user ─┘      kept           kept
//!                         message (extractive or a cached, incremental summary)
//! ```
//!
//! The budget is `max_context_tokens` (per-model overrides first), and never more
//! than the model's context window minus the tokens the answer may need when the
//! window is known. The boundary of the condensed part moves in steps of
//! `block_size` messages, so consecutive turns send an identical compressed
//! prefix: providers' prompt caches keep hitting and cached summaries get reused.
//!
//! **Architecture Invariant:** whatever reaches the upstream is a valid request:
//! - system and developer messages stay verbatim, in order;
//! - the last `preserve_recent_messages` messages stay verbatim (a tool call and its
//!   results are one unit, so the window widens to the start of a unit);
//! - the latest user message is never altered or dropped;
//! - an assistant message with `tool_calls` and its tool results are condensed or
//!   kept together: no orphaned result and no call without its result;
//! - the condensed message has the `user` role and plain text content.
//!
//! Why `user` for the condensed turns: every chat template renders user turns,
//! while system-role support varies (Gemma's templates have no system role, some
//! Ollama templates honour a single system message, early o1 models rejected
//! `system`), and old tool output is not trusted enough to be given system-level
//! authority. Consecutive user messages are accepted by OpenAI and Ollama.
//!
//! If the protected part alone exceeds the budget, the longest older tool outputs
//! inside it are shortened first, then the latest ones, then other long messages
//! (never instructions or the latest user message), and the outcome says the
//! budget was not met. This room must not know wire JSON or call upstreams: the
//! summarizer is handed in by the pipeline.

pub mod eval;
pub mod extractive;
pub mod models;
pub mod summarize;
pub mod tokens;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::chat::{ChatRequest, Content, Message, Role};
use crate::config::{CompressionConfig, Strategy};
use crate::store::Store;

pub use models::ModelLimits;
pub use summarize::{Summarizer, SummaryFuture};
pub use tokens::{Counts, Encoding, TokenCounter};

use extractive::Source;

/// Estimated cost of the condensed message's header, for choosing the boundary.
const SUMMARY_OVERHEAD: usize = 48;
/// The condensed message always gets at least this many tokens…
const MIN_SUMMARY_TOKENS: usize = 48;
/// …and at most this share of the budget, so recent turns keep most of the room.
const MAX_SUMMARY_SHARE: f64 = 0.25;
/// Shortened messages keep at least this many tokens.
const MIN_KEEP_TOKENS: usize = 200;
/// How often the extractive text is rebuilt smaller when it overshoots its target.
const FIT_ATTEMPTS: usize = 3;
/// A recovery retry uses this share of the budget.
const HARDER_BUDGET: f64 = 0.75;

/// What the client asked for in `x-thrifty-compression`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Force {
    /// Compress when over budget.
    Auto,
    /// Never compress this request.
    Off,
    /// Condense every turn outside the recent window, even under budget
    /// (only where the operator left compression enabled).
    Force,
}

impl Force {
    /// `off` or `force`; anything else (or no header) is `Auto`.
    pub fn from_header(value: Option<&str>) -> Force {
        match value.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("off") => Force::Off,
            Some(v) if v.eq_ignore_ascii_case("force") => Force::Force,
            _ => Force::Auto,
        }
    }
}

/// How the summary cache served a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SummaryUse {
    /// No summary involved (extractive strategy, or nothing to condense).
    None,
    /// A new summary of the whole condensed part.
    Created,
    /// A stored summary extended with the newly aged-out messages.
    Extended,
    /// A stored summary used as it was.
    Reused,
    /// The summarizer failed or timed out; the extractive strategy stood in.
    Failed,
}

impl SummaryUse {
    pub fn as_str(self) -> &'static str {
        match self {
            SummaryUse::None => "none",
            SummaryUse::Created => "created",
            SummaryUse::Extended => "extended",
            SummaryUse::Reused => "reused",
            SummaryUse::Failed => "failed",
        }
    }
}

/// What compressing one request did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Prompt tokens before and after.
    pub before: usize,
    pub after: usize,
    pub budget: usize,
    /// False when the recent messages alone did not fit and had to be shortened,
    /// or when the prompt is still over budget.
    pub budget_met: bool,
    /// `extractive` or `summarize`: what produced the condensed message.
    pub strategy: &'static str,
    pub summary: SummaryUse,
    /// Tokens the summarizer spent, overhead for the savings ledger.
    pub summarizer_tokens: u64,
    /// Messages folded into the condensed message.
    pub condensed_messages: usize,
    /// Messages inside the protected part that had to be shortened.
    pub shortened_messages: usize,
    pub elapsed: Duration,
}

impl Outcome {
    /// The `x-thrifty-compression` response header: `45210->31877`, with
    /// `; budget-not-met` appended when the budget could not be met.
    pub fn header_value(&self) -> String {
        let mut value = format!("{}->{}", self.before, self.after);
        if !self.budget_met {
            value.push_str("; budget-not-met");
        }
        value
    }
}

/// Compresses chat requests; shared by every request.
pub struct Compressor {
    config: CompressionConfig,
    store: Option<Arc<Store>>,
    counter: TokenCounter,
    stats: Stats,
}

/// How hard one call compresses.
#[derive(Clone, Copy, Debug)]
struct Pressure {
    recent: usize,
    budget_scale: f64,
    force: bool,
}

impl Compressor {
    pub fn new(config: CompressionConfig, store: Arc<Store>) -> Self {
        Compressor::build(config, Some(store))
    }

    /// A compressor without a summary store, for evaluation and benchmarks;
    /// the summarize strategy still works but summaries are not reused.
    pub fn offline(config: CompressionConfig) -> Self {
        Compressor::build(config, None)
    }

    fn build(config: CompressionConfig, store: Option<Arc<Store>>) -> Self {
        if config.enabled {
            // Building a tokenizer takes about half a second; do it before the first request needs it.
            std::thread::spawn(Encoding::warm_up);
        }
        Compressor {
            config,
            store,
            counter: TokenCounter::new(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &CompressionConfig {
        &self.config
    }

    pub fn counter(&self) -> &TokenCounter {
        &self.counter
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
        let condensed = self.extractive(chat, &prepared);
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
                match self.summarized(chat, &prepared, summarizer).await {
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
            None => self.extractive(chat, &prepared),
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
        let counts = self.counter.request(limits.encoding, chat);
        let before = counts.total();
        self.stats.checked.fetch_add(1, Ordering::Relaxed);
        if before <= budget && !pressure.force {
            return None;
        }
        let plan = Plan::new(
            &chat.messages,
            &counts,
            budget,
            pressure,
            self.config.block_size,
            self.config.ratio,
        );
        Some(Prepared {
            encoding: limits.encoding,
            budget,
            counts,
            plan,
        })
    }

    /// The extractive condensed message, rebuilt smaller while it overshoots the ratio.
    fn extractive(&self, chat: &ChatRequest, prepared: &Prepared) -> Condensed {
        let plan = &prepared.plan;
        if plan.condensed.is_empty() {
            return Condensed::nothing();
        }
        let sources: Vec<Source<'_>> = plan
            .condensed
            .iter()
            .map(|&i| Source {
                message: &chat.messages[i],
                tokens: prepared.counts.messages[i],
                after_request: plan.latest_user.is_some_and(|u| i > u),
            })
            .collect();
        let target = prepared.summary_target(self.config.ratio);
        let mut aim = target;
        let mut message = Message::text(Role::User, String::new());
        let mut tokens = 0;
        for _ in 0..FIT_ATTEMPTS {
            message.content = Content::Text(extractive::condense(&sources, aim));
            tokens = self.counter.message(prepared.encoding, &message);
            if tokens <= target {
                break;
            }
            aim = aim.saturating_sub(tokens - target + 8);
        }
        Condensed {
            message: Some((message, tokens)),
            strategy: Strategy::Extractive,
            summary: SummaryUse::None,
            summarizer_tokens: 0,
        }
    }

    /// The summarize strategy: reuse, extend or create the summary of the prefix.
    async fn summarized(
        &self,
        chat: &ChatRequest,
        prepared: &Prepared,
        summarizer: &dyn Summarizer,
    ) -> Result<Condensed, String> {
        let plan = &prepared.plan;
        let (lead, cut) = (plan.lead, plan.cut);
        let model = self.config.summarizer_model.as_deref().unwrap_or_default();
        let hashes = summarize::chain(chat, lead, cut, model);
        let covers = cut - lead;
        let boundaries: Vec<usize> = plan
            .boundaries
            .iter()
            .filter(|b| **b <= cut)
            .map(|b| b - lead)
            .chain(std::iter::once(covers))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let found = match &self.store {
            Some(store) => summarize::longest(store, &hashes, &boundaries).await,
            None => None,
        };
        let (summary, used, spent) = match found {
            Some(stored) if stored.covers == covers => {
                if let Some(store) = &self.store {
                    summarize::refresh(
                        store,
                        &hashes[covers],
                        &stored,
                        self.config.summary_ttl,
                        self.config.summary_max_ttl,
                    )
                    .await;
                }
                (stored.summary, SummaryUse::Reused, 0)
            }
            found => {
                let (previous, from, used) = match &found {
                    Some(stored) => (
                        Some(stored.summary.as_str()),
                        lead + stored.covers,
                        SummaryUse::Extended,
                    ),
                    None => (None, lead, SummaryUse::Created),
                };
                let target = prepared.summary_target(self.config.ratio) as u64;
                let prompt = summarize::prompt(previous, &chat.messages[from..cut], target);
                let call = summarizer.summarize(&prompt, target);
                let (text, spent) = tokio::time::timeout(self.config.summarizer_timeout, call)
                    .await
                    .map_err(|_| {
                        format!("timed out after {:?}", self.config.summarizer_timeout)
                    })??;
                let text = text.trim().to_owned();
                if text.is_empty() {
                    return Err("the summary was empty".to_owned());
                }
                if let Some(store) = &self.store {
                    let stored = summarize::Stored {
                        covers,
                        summary: text.clone(),
                        created: summarize::now_secs(),
                    };
                    summarize::save(store, &hashes[covers], &stored, self.config.summary_ttl).await;
                }
                (text, used, spent)
            }
        };
        let counter = match used {
            SummaryUse::Created => &self.stats.summaries_created,
            SummaryUse::Extended => &self.stats.summaries_extended,
            _ => &self.stats.summaries_reused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.stats
            .summarizer_tokens
            .fetch_add(spent, Ordering::Relaxed);
        let message = Message::text(
            Role::User,
            format!(
                "[thrifty: summary of the {covers} earlier messages of this conversation]\n{summary}"
            ),
        );
        let tokens = self.counter.message(prepared.encoding, &message);
        Ok(Condensed {
            message: Some((message, tokens)),
            strategy: Strategy::Summarize,
            summary: used,
            summarizer_tokens: spent,
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
        } = prepared;
        let before = counts.total();
        let old = std::mem::take(&mut chat.messages);
        let mut is_condensed = vec![false; old.len()];
        for &i in &plan.condensed {
            is_condensed[i] = true;
        }
        let mut messages = Vec::with_capacity(old.len() - plan.condensed.len() + 1);
        let mut tokens = Vec::with_capacity(messages.capacity());
        let mut summary = condensed.message;
        let mut protect_from = None;
        let mut latest_user = None;
        let summary_at = plan
            .latest_user
            .filter(|u| *u < plan.cut)
            .map_or(plan.lead, |u| u + 1);
        for (i, (message, count)) in old.into_iter().zip(counts.messages).enumerate() {
            if i == summary_at {
                if let Some((m, t)) = summary.take() {
                    messages.push(m);
                    tokens.push(t);
                }
            }
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
        if let Some((m, t)) = summary.take() {
            messages.push(m);
            tokens.push(t);
        }
        let protect_from = protect_from.unwrap_or(messages.len());
        let mut after = counts.fixed + tokens.iter().sum::<usize>();
        let mut shortened = 0;
        if after > budget {
            shortened = self.shorten_protected(
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

    /// Shortens long messages from `from` on until `excess` tokens are gone: older
    /// tool outputs first, then the latest ones, then other long messages. Returns
    /// how many messages were shortened.
    fn shorten_protected(
        &self,
        encoding: Encoding,
        messages: &mut [Message],
        tokens: &mut [usize],
        from: usize,
        latest_user: Option<usize>,
        mut excess: usize,
    ) -> usize {
        // The last tool results are what the model is about to read.
        let last_unit = (from..messages.len())
            .rev()
            .find(|&i| messages[i].role != Role::Tool)
            .unwrap_or(from);
        let in_pass = |pass: usize, i: usize, m: &Message| match pass {
            0 => m.role == Role::Tool && i < last_unit,
            1 => m.role == Role::Tool,
            _ => !m.role.is_instruction() && m.tool_calls.is_empty() && Some(i) != latest_user,
        };
        let mut shortened = vec![false; messages.len()];
        for pass in 0..3 {
            if excess == 0 {
                break;
            }
            let candidates: Vec<usize> = (from..messages.len())
                .filter(|&i| in_pass(pass, i, &messages[i]) && tokens[i] > MIN_KEEP_TOKENS)
                .collect();
            let Some(cap) = water_level(
                &candidates.iter().map(|&i| tokens[i]).collect::<Vec<_>>(),
                excess,
            ) else {
                continue;
            };
            for i in candidates {
                if tokens[i] <= cap {
                    continue;
                }
                let text = messages[i].flat_text();
                messages[i].content = Content::Text(shorten(&text, tokens[i], cap));
                let now = self.counter.message(encoding, &messages[i]);
                excess = excess.saturating_sub(tokens[i].saturating_sub(now));
                tokens[i] = now;
                shortened[i] = true;
            }
        }
        shortened.iter().filter(|s| **s).count()
    }

    /// Counters for `GET /admin/compression/stats`.
    pub fn stats(&self) -> Value {
        self.stats.json(&self.config)
    }
}

/// The level to cut the longest of `sizes` down to so that about `excess` is removed
/// (never below `MIN_KEEP_TOKENS`); `None` when nothing is above it.
fn water_level(sizes: &[usize], excess: usize) -> Option<usize> {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    if sorted.first().is_none_or(|top| *top <= MIN_KEEP_TOKENS) {
        return None;
    }
    let mut sum = 0;
    for m in 0..sorted.len() {
        sum += sorted[m];
        let level = sum.saturating_sub(excess) / (m + 1);
        let next = sorted.get(m + 1).copied().unwrap_or(0);
        if level >= next {
            return Some(level.max(MIN_KEEP_TOKENS));
        }
    }
    Some(MIN_KEEP_TOKENS)
}

/// Keeps the start and the end of `text` (about `to` of its `from` tokens) with a marker between.
fn shorten(text: &str, from: usize, to: usize) -> String {
    let keep = (text.len() * to / from.max(1)).saturating_sub(64);
    if keep >= text.len() {
        return text.to_owned();
    }
    let head = extractive::floor_boundary(text, keep * 2 / 3);
    let head = text[..head]
        .rfind('\n')
        .filter(|n| *n > head / 2)
        .unwrap_or(head);
    let tail = extractive::ceil_boundary(text, text.len().saturating_sub(keep / 3).max(head));
    let tail = text[tail..]
        .find('\n')
        .filter(|n| *n < (text.len() - tail) / 2)
        .map_or(tail, |n| tail + n + 1);
    format!(
        "{}\n[… {} tokens removed by thrifty to fit the context budget …]\n{}",
        &text[..head],
        from.saturating_sub(to),
        &text[tail..]
    )
}

/// A planned request: its counts and where to cut.
struct Prepared {
    encoding: Encoding,
    budget: usize,
    counts: Counts,
    plan: Plan,
}

impl Prepared {
    /// Tokens the condensed message may use: the ratio of what it replaces, within the room left.
    fn summary_target(&self, ratio: f64) -> usize {
        let condensed: usize = self
            .plan
            .condensed
            .iter()
            .map(|&i| self.counts.messages[i])
            .sum();
        let kept = self.counts.total() - condensed;
        let room = self.budget.saturating_sub(kept);
        summary_size(condensed, ratio, self.budget)
            .min(room)
            .max(MIN_SUMMARY_TOKENS)
    }
}

/// What the condensed message may cost: `ratio` of what it replaces, at most a share of the budget.
fn summary_size(replaced: usize, ratio: f64, budget: usize) -> usize {
    ((replaced as f64 * ratio) as usize).min((budget as f64 * MAX_SUMMARY_SHARE) as usize)
}

/// The condensed message and how it was made.
struct Condensed {
    message: Option<(Message, usize)>,
    strategy: Strategy,
    summary: SummaryUse,
    summarizer_tokens: u64,
}

impl Condensed {
    fn nothing() -> Self {
        Condensed {
            message: None,
            strategy: Strategy::Extractive,
            summary: SummaryUse::None,
            summarizer_tokens: 0,
        }
    }
}

/// Where a request is cut.
#[derive(Debug, PartialEq)]
struct Plan {
    /// Leading system and developer messages.
    lead: usize,
    latest_user: Option<usize>,
    /// First message of the verbatim tail, at the start of a unit.
    protect_start: usize,
    /// Candidate cuts: block boundaries below `protect_start`, then `protect_start`.
    boundaries: Vec<usize>,
    /// Messages `lead..cut` are condensed, except instructions and the latest user message.
    cut: usize,
    condensed: Vec<usize>,
}

impl Plan {
    fn new(
        messages: &[Message],
        counts: &Counts,
        budget: usize,
        pressure: Pressure,
        block: usize,
        ratio: f64,
    ) -> Plan {
        let lead = messages
            .iter()
            .take_while(|m| m.role.is_instruction())
            .count();
        let latest_user = messages.iter().rposition(|m| m.role == Role::User);
        // A tool result belongs to the unit of the call before it.
        let unit_start =
            |i: usize| i <= lead || i >= messages.len() || messages[i].role != Role::Tool;
        let mut protect_start = messages.len().saturating_sub(pressure.recent).max(lead);
        while !unit_start(protect_start) {
            protect_start -= 1;
        }
        let condensable = |i: usize| !messages[i].role.is_instruction() && Some(i) != latest_user;
        let mut boundaries = Vec::new();
        let mut step = 1;
        for i in lead + 1..protect_start {
            if unit_start(i) && i >= lead + step * block {
                boundaries.push(i);
                step = (i - lead) / block + 1;
            }
        }
        if protect_start > lead {
            boundaries.push(protect_start);
        }
        // The smallest cut that fits, estimating the condensed part at the ratio.
        let total = counts.total();
        let mut cut = protect_start;
        if !pressure.force {
            let mut removed = 0;
            let mut next = lead;
            for &b in &boundaries {
                removed += (next..b)
                    .filter(|&i| condensable(i))
                    .map(|i| counts.messages[i])
                    .sum::<usize>();
                next = b;
                let estimate =
                    total - removed + summary_size(removed, ratio, budget) + SUMMARY_OVERHEAD;
                if estimate <= budget {
                    cut = b;
                    break;
                }
            }
        }
        let condensed = (lead..cut).filter(|&i| condensable(i)).collect();
        Plan {
            lead,
            latest_user,
            protect_start,
            boundaries,
            cut,
            condensed,
        }
    }
}

#[derive(Default)]
struct Stats {
    checked: AtomicU64,
    compressed: AtomicU64,
    retries: AtomicU64,
    tokens_before: AtomicU64,
    tokens_after: AtomicU64,
    budget_not_met: AtomicU64,
    condensed_messages: AtomicU64,
    shortened_messages: AtomicU64,
    summaries_created: AtomicU64,
    summaries_extended: AtomicU64,
    summaries_reused: AtomicU64,
    summaries_failed: AtomicU64,
    summarizer_tokens: AtomicU64,
    micros: AtomicU64,
}

impl Stats {
    fn record(&self, o: &Outcome) {
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

    fn json(&self, config: &CompressionConfig) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (before, after) = (get(&self.tokens_before), get(&self.tokens_after));
        let compressed = get(&self.compressed);
        json!({
            "enabled": config.enabled,
            "strategy": config.strategy.as_str(),
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

/// Checks the invariants every compressed request must keep; shared by the tests here and in `eval`.
#[cfg(test)]
pub(crate) fn check_invariants(
    before: &ChatRequest,
    after: &ChatRequest,
    recent: usize,
    verbatim_tail: bool,
) -> Result<(), String> {
    let (b, a) = (&before.messages, &after.messages);
    let instructions = |ms: &[Message]| -> Vec<Message> {
        ms.iter()
            .filter(|m| m.role.is_instruction())
            .cloned()
            .collect()
    };
    if instructions(b) != instructions(a) {
        return Err("system/developer messages changed".to_owned());
    }
    let lead = b.iter().take_while(|m| m.role.is_instruction()).count();
    if a.get(..lead) != b.get(..lead) {
        return Err("leading instructions moved".to_owned());
    }
    if let Some(u) = b.iter().rposition(|m| m.role == Role::User) {
        if !a.contains(&b[u]) {
            return Err("the latest user message was altered or dropped".to_owned());
        }
    }
    if verbatim_tail {
        let n = recent.min(b.len());
        if a.len() < n || a[a.len() - n..] != b[b.len() - n..] {
            return Err(format!("the last {n} messages are not verbatim"));
        }
    }
    for (i, m) in a.iter().enumerate() {
        if m.role == Role::Tool {
            let owner = a[..i].iter().rposition(|p| p.role != Role::Tool);
            let Some(owner) = owner.filter(|&j| !a[j].tool_calls.is_empty()) else {
                return Err(format!("orphaned tool result at {i}"));
            };
            if let Some(id) = &m.tool_call_id {
                if !a[owner]
                    .tool_calls
                    .iter()
                    .any(|c| c.id.as_ref() == Some(id))
                {
                    return Err(format!(
                        "tool result {i} answers no call of message {owner}"
                    ));
                }
            }
        }
        if !m.tool_calls.is_empty() {
            let results: Vec<&Message> = a[i + 1..]
                .iter()
                .take_while(|r| r.role == Role::Tool)
                .collect();
            if results.len() < m.tool_calls.len() {
                return Err(format!("calls of message {i} lack results"));
            }
            for c in m.tool_calls.iter().filter_map(|c| c.id.as_ref()) {
                if !results.iter().any(|r| r.tool_call_id.as_ref() == Some(c)) {
                    return Err(format!("call {c} of message {i} has no result"));
                }
            }
        }
    }
    let condensed: Vec<&Message> = a
        .iter()
        .filter(|m| m.flat_text().starts_with("[thrifty:"))
        .collect();
    if condensed.len() > 1 {
        return Err("more than one condensed message".to_owned());
    }
    if let Some(c) = condensed.first() {
        if c.role != Role::User
            || !matches!(c.content, Content::Text(_))
            || !c.tool_calls.is_empty()
        {
            return Err("the condensed message is not a plain user message".to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::sync::Mutex;

    use serde_json::{Map, json};

    use super::*;
    use crate::chat::{Call, Dialect, Endpoint, Part, PartKind, ToolCall};
    use crate::config::{RawCompression, validate_compression};
    use crate::store::EmbeddedStore;

    const FILLER: &str = "We went through the remaining parts of the module one by one, compared the behaviour with the notes from the previous session, and wrote down what still looked unclear so that nothing would be forgotten later on.";

    fn config(max_context_tokens: u64, recent: usize) -> CompressionConfig {
        CompressionConfig {
            max_context_tokens,
            preserve_recent_messages: recent,
            block_size: 4,
            ..CompressionConfig::default()
        }
    }

    fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "gpt-4o".to_owned(),
            messages,
            stream: false,
            shaping: Map::new(),
            incidental: Map::new(),
        }
    }

    /// A system prompt, then `turns` user/assistant pairs of about 150 tokens each.
    fn chat(turns: usize) -> ChatRequest {
        let mut messages = vec![Message::text(Role::System, "You are a careful assistant.")];
        for i in 0..turns {
            messages.push(Message::text(
                Role::User,
                format!("Turn {i}: I moved the cache settings to config/cache_{i}.toml. {FILLER} {FILLER}"),
            ));
            messages.push(Message::text(
                Role::Assistant,
                format!("Noted for turn {i}; we decided to keep `max_entries_{i}` at {i}00. {FILLER} {FILLER}"),
            ));
        }
        request(messages)
    }

    fn call(id: &str, name: &str, arguments: &str) -> Message {
        Message {
            tool_calls: vec![ToolCall {
                id: Some(id.to_owned()),
                name: name.to_owned(),
                arguments: arguments.to_owned(),
            }],
            ..Message::text(Role::Assistant, "")
        }
    }

    fn result(id: &str, text: impl Into<String>) -> Message {
        Message {
            tool_call_id: Some(id.to_owned()),
            ..Message::text(Role::Tool, text)
        }
    }

    fn compress(compressor: &Compressor, chat: &mut ChatRequest, force: Force) -> Option<Outcome> {
        compressor.compress_extractive(chat, None, force)
    }

    fn condensed_message(chat: &ChatRequest) -> Option<&Message> {
        chat.messages
            .iter()
            .find(|m| m.flat_text().starts_with("[thrifty:"))
    }

    #[test]
    fn requests_under_budget_or_turned_off_are_left_alone() {
        let compressor = Compressor::offline(config(100_000, 4));
        let mut small = chat(10);
        let original = small.clone();
        assert_eq!(compress(&compressor, &mut small, Force::Auto), None);
        assert_eq!(small, original);

        let compressor = Compressor::offline(config(500, 4));
        assert_eq!(compress(&compressor, &mut small, Force::Off), None);
        assert_eq!(small, original);
        let disabled = Compressor::offline(CompressionConfig {
            enabled: false,
            ..config(500, 4)
        });
        assert_eq!(compress(&disabled, &mut small, Force::Force), None);
        assert_eq!(small, original);

        assert_eq!(Force::from_header(Some("off")), Force::Off);
        assert_eq!(Force::from_header(Some(" FORCE ")), Force::Force);
        assert_eq!(Force::from_header(Some("maybe")), Force::Auto);
        assert_eq!(Force::from_header(None), Force::Auto);
    }

    #[test]
    fn over_budget_conversations_fit_and_keep_their_invariants() {
        let compressor = Compressor::offline(config(2_000, 4));
        let original = chat(20);
        let mut compressed = original.clone();
        let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
        assert!(outcome.before > 4_000, "{outcome:?}");
        assert!(outcome.after <= 2_000, "{outcome:?}");
        assert!(outcome.budget_met);
        assert_eq!(
            outcome.header_value(),
            format!("{}->{}", outcome.before, outcome.after)
        );
        assert_eq!(outcome.strategy, "extractive");
        check_invariants(&original, &compressed, 4, true).expect("valid");
        // The condensed message comes right after the system prompt.
        assert!(compressed.messages[1].flat_text().starts_with("[thrifty:"));
        assert_eq!(
            compressor
                .counter
                .request(Encoding::O200kBase, &compressed)
                .total(),
            outcome.after
        );
    }

    #[test]
    fn instructions_stay_verbatim_and_in_place() {
        let mut original = chat(12);
        original
            .messages
            .insert(1, Message::text(Role::Developer, "Answer in English."));
        original
            .messages
            .insert(9, Message::text(Role::System, "From now on, be brief."));
        let compressor = Compressor::offline(config(1_500, 4));
        let mut compressed = original.clone();
        compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
        check_invariants(&original, &compressed, 4, true).expect("valid");
        assert_eq!(compressed.messages[0].role, Role::System);
        assert_eq!(compressed.messages[1].role, Role::Developer);
        let mid = compressed
            .messages
            .iter()
            .position(|m| m.flat_text() == "From now on, be brief.")
            .expect("kept");
        let summary = compressed
            .messages
            .iter()
            .position(|m| m.flat_text().starts_with("[thrifty:"))
            .expect("condensed");
        assert!(summary < mid);
    }

    #[test]
    fn a_tool_call_and_its_results_stay_together() {
        let mut messages = vec![
            Message::text(Role::System, "agent"),
            Message::text(Role::User, "Fix the build."),
        ];
        for i in 0..10 {
            messages.push(Message {
                tool_calls: vec![
                    ToolCall {
                        id: Some(format!("a{i}")),
                        name: "read_file".to_owned(),
                        arguments: format!(r#"{{"path":"src/{i}.rs"}}"#),
                    },
                    ToolCall {
                        id: Some(format!("b{i}")),
                        name: "bash".to_owned(),
                        arguments: r#"{"command":"cargo check"}"#.to_owned(),
                    },
                    ToolCall {
                        id: Some(format!("c{i}")),
                        name: "grep".to_owned(),
                        arguments: r#"{"pattern":"todo"}"#.to_owned(),
                    },
                ],
                ..Message::text(Role::Assistant, format!("Looking at part {i}."))
            });
            for id in ["a", "b", "c"] {
                messages.push(result(&format!("{id}{i}"), format!("{FILLER}\n").repeat(3)));
            }
        }
        let original = request(messages);
        // A window of 2 would start inside the last group: it widens to the call.
        let compressor = Compressor::offline(config(1_500, 2));
        let mut compressed = original.clone();
        let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
        check_invariants(&original, &compressed, 2, outcome.budget_met).expect("valid");
        let tail = &original.messages[original.messages.len() - 4..];
        assert!(compressed.messages.ends_with(tail) || !outcome.budget_met);
        assert!(
            !compressed.messages[2].tool_calls.is_empty()
                || compressed.messages[2].flat_text().starts_with("[thrifty:")
        );
    }

    #[test]
    fn the_latest_user_message_is_kept_when_it_is_older_than_the_window() {
        let mut messages = vec![
            Message::text(Role::System, "agent"),
            Message::text(Role::User, "Earlier question about config/old.toml."),
            Message::text(Role::Assistant, "Earlier answer."),
            Message::text(
                Role::User,
                "Please migrate the parser to the new API and run the tests.",
            ),
        ];
        for i in 0..30 {
            let id = format!("t{i}");
            messages.push(call(
                &id,
                "bash",
                &format!(r#"{{"command":"pytest tests/test_{i}.py"}}"#),
            ));
            messages.push(result(&id, format!("{FILLER}\n").repeat(2)));
        }
        let original = request(messages);
        let compressor = Compressor::offline(config(1_500, 4));
        let mut compressed = original.clone();
        let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
        assert!(outcome.budget_met, "{outcome:?}");
        check_invariants(&original, &compressed, 4, true).expect("valid");
        let task = compressed
            .messages
            .iter()
            .position(|m| m == &original.messages[3])
            .expect("task kept");
        let summary = condensed_message(&compressed)
            .expect("condensed")
            .flat_text();
        assert!(
            compressed.messages[task + 1]
                .flat_text()
                .starts_with("[thrifty:")
        );
        assert!(
            summary.contains("Before the request above:") || !summary.contains("Key points"),
            "{summary}"
        );
        assert!(summary.contains("bash ×"), "{summary}");
    }

    #[test]
    fn non_text_parts_become_placeholders() {
        let mut original = chat(12);
        original.messages[3] = Message {
            content: Content::Parts(vec![
                Part {
                    kind: PartKind::Text("The error shows up in config/app.toml, see".to_owned()),
                    raw: json!({"type": "text", "text": "The error shows up in config/app.toml, see"}),
                },
                Part {
                    kind: PartKind::Image,
                    raw: json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}),
                },
                Part {
                    kind: PartKind::File(Some("report.pdf".to_owned())),
                    raw: json!({"type": "file", "file": {"filename": "report.pdf", "file_data": "AAAA"}}),
                },
            ]),
            ..Message::text(Role::User, "")
        };
        let compressor = Compressor::offline(config(1_500, 4));
        let mut compressed = original.clone();
        compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
        check_invariants(&original, &compressed, 4, true).expect("valid");
        let summary = condensed_message(&compressed)
            .expect("condensed")
            .flat_text();
        assert!(summary.contains("[image] [file: report.pdf]"), "{summary}");
        assert!(!summary.contains("base64"), "{summary}");
    }

    #[test]
    fn compressed_requests_stay_valid_in_both_dialects() {
        let mut messages = vec![
            Message::text(Role::System, "agent"),
            Message::text(Role::User, "go"),
        ];
        for i in 0..20 {
            let id = format!("t{i}");
            messages.push(call(&id, "read_file", r#"{"path":"src/lib.rs"}"#));
            messages.push(result(&id, format!("{FILLER}\n").repeat(2)));
        }
        messages.push(Message::text(Role::User, "Now summarise what you found."));
        let compressor = Compressor::offline(config(1_200, 3));
        let mut compressed = request(messages);
        compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
        for dialect in [Dialect::OpenAi, Dialect::Ollama] {
            let body = crate::dialect::encode(dialect, &Call::Chat(compressed.clone()));
            let decoded = crate::dialect::decode(dialect, Endpoint::Chat, &body).expect("decodes");
            let Call::Chat(decoded) = decoded else {
                panic!("a chat")
            };
            let roles: Vec<&str> = decoded.messages.iter().map(|m| m.role.as_str()).collect();
            let original: Vec<&str> = compressed
                .messages
                .iter()
                .map(|m| m.role.as_str())
                .collect();
            assert_eq!(roles, original, "{dialect:?}");
        }
    }

    #[test]
    fn the_condensed_part_respects_the_ratio_and_old_turns_shrink_most() {
        let compressor = Compressor::offline(config(3_000, 4));
        // Every sentence is a key point, so the ratio decides what stays.
        let mut messages = vec![Message::text(Role::System, "You are a careful assistant.")];
        for i in 0..40 {
            messages.push(Message::text(
                Role::User,
                format!(
                    "Turn {i}: I moved the cache settings to config/cache_{i}.toml. The service on port 80{i} now reads /etc/app/{i}.env. We decided to pin version 1.{i}.0 of `serde_json_{i}`. Backups of data/{i}.db run on Monday."
                ),
            ));
            messages.push(Message::text(
                Role::Assistant,
                format!(
                    "Noted: config/cache_{i}.toml, port 80{i}, version 1.{i}.0, backups on Monday."
                ),
            ));
        }
        let original = request(messages);
        let mut compressed = original.clone();
        let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
        let replaced: usize = original
            .messages
            .iter()
            .filter(|m| !compressed.messages.contains(m))
            .map(|m| compressor.counter.message(Encoding::O200kBase, m))
            .sum();
        let summary = condensed_message(&compressed).expect("condensed");
        let tokens = compressor.counter.message(Encoding::O200kBase, summary);
        assert!(
            tokens as f64 <= 0.3 * replaced as f64,
            "{tokens} of {replaced}"
        );
        assert!(outcome.after <= 3_000);
        let text = summary.flat_text();
        // Within the condensed turns, recent ones keep more of their key points.
        let turns = outcome.condensed_messages / 2;
        assert!(turns >= 8, "{outcome:?}");
        let kept = |range: std::ops::Range<usize>| {
            range
                .filter(|i| text.contains(&format!("config/cache_{i}.toml")))
                .count()
        };
        let (early, late) = (kept(0..turns / 3), kept(turns - turns / 3..turns));
        assert!(late > early, "{early} early vs {late} late:\n{text}");
    }

    #[test]
    fn the_boundary_moves_in_blocks_so_the_prefix_stays_identical() {
        let compressor = Compressor::offline(config(3_000, 4));
        let mut prefixes: Vec<(usize, Message)> = Vec::new();
        for turns in 20..32 {
            let mut compressed = chat(turns);
            let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
            prefixes.push((outcome.condensed_messages, compressed.messages[1].clone()));
        }
        let mut cuts: Vec<usize> = prefixes.iter().map(|p| p.0).collect();
        cuts.dedup();
        assert!(cuts.len() >= 2 && cuts.len() < prefixes.len(), "{cuts:?}");
        for w in cuts.windows(2) {
            assert_eq!((w[1] - w[0]) % 4, 0, "{cuts:?}");
        }
        for pair in prefixes.windows(2) {
            if pair[0].0 == pair[1].0 {
                assert_eq!(pair[0].1, pair[1].1, "same cut, same condensed message");
            }
        }
    }

    #[test]
    fn when_the_recent_part_alone_is_too_big_old_tool_outputs_shrink_first() {
        let big = |tag: &str| format!("{tag} {}\n", FILLER).repeat(40);
        let messages = vec![
            Message::text(Role::System, "agent"),
            Message::text(Role::User, "Investigate the crash."),
            call("a", "read_file", r#"{"path":"a.log"}"#),
            result("a", big("first")),
            call("b", "read_file", r#"{"path":"b.log"}"#),
            result("b", big("second")),
        ];
        let original = request(messages);
        let compressor = Compressor::offline(config(2_000, 8));
        let mut compressed = original.clone();
        let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
        assert!(!outcome.budget_met);
        assert!(outcome.header_value().ends_with("; budget-not-met"));
        assert_eq!(outcome.shortened_messages, 1, "{outcome:?}");
        assert!(outcome.after < outcome.before);
        check_invariants(&original, &compressed, 8, false).expect("valid");
        assert!(
            compressed.messages[3]
                .flat_text()
                .contains("removed by thrifty")
        );
        assert_eq!(
            compressed.messages[5], original.messages[5],
            "the latest output is shortened last"
        );
        assert_eq!(compressed.messages[1], original.messages[1]);

        // With no room at all, the latest output is shortened too, the user message never.
        let compressor = Compressor::offline(config(600, 8));
        let mut compressed = original.clone();
        let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
        assert_eq!(outcome.shortened_messages, 2, "{outcome:?}");
        assert_eq!(compressed.messages[1], original.messages[1]);
        assert!(outcome.after <= 600 + 2 * MIN_KEEP_TOKENS, "{outcome:?}");
    }

    #[test]
    fn force_condenses_under_budget_and_harder_condenses_more() {
        let compressor = Compressor::offline(config(100_000, 8));
        let mut forced = chat(12);
        let outcome = compress(&compressor, &mut forced, Force::Force).expect("forced");
        assert!(outcome.budget_met);
        assert_eq!(outcome.condensed_messages, 25 - 1 - 8);

        let compressor = Compressor::offline(config(2_000, 8));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let normal = runtime
            .block_on(compressor.compress(&mut chat(20), None, Force::Auto, None))
            .expect("compressed");
        let mut harder = chat(20);
        let retried = runtime
            .block_on(compressor.harder(&mut harder, None, None))
            .expect("compressed");
        assert!(retried.after < normal.after, "{normal:?} {retried:?}");
        assert!(retried.budget <= 1_500);
        check_invariants(&chat(20), &harder, 4, true).expect("valid");
        assert_eq!(compressor.stats()["retries"], 1);
    }

    #[test]
    fn the_compressor_can_be_shared_and_its_futures_sent() {
        fn shared<T: Send + Sync>(_: &T) {}
        fn sendable<T: Send>(_: T) {}
        let compressor = Compressor::offline(config(2_000, 4));
        shared(&compressor);
        let scribe = Scribe::default();
        let mut request = chat(2);
        sendable(compressor.compress(&mut request, None, Force::Auto, Some(&scribe)));
    }

    #[test]
    fn water_level_cuts_the_longest_first() {
        assert_eq!(water_level(&[1_000, 400, 300], 500), Some(500));
        assert_eq!(water_level(&[1_000, 900], 300), Some(800));
        assert_eq!(water_level(&[300, 250], 10_000), Some(MIN_KEEP_TOKENS));
        assert_eq!(water_level(&[150], 100), None);
        let text = "line\n".repeat(1_000);
        let short = shorten(&text, 1_000, 200);
        assert!(
            short.len() < 1_300 && short.contains("800 tokens removed"),
            "{}",
            short.len()
        );
    }

    #[test]
    fn stats_count_what_happened() {
        let compressor = Compressor::offline(config(2_000, 4));
        compress(&compressor, &mut chat(20), Force::Auto).expect("compressed");
        compress(&compressor, &mut chat(2), Force::Auto);
        let stats = compressor.stats();
        assert_eq!(stats["requests_checked"], 2);
        assert_eq!(stats["requests_compressed"], 1);
        assert!(
            stats["tokens_saved"].as_u64().unwrap_or(0) > 2_000,
            "{stats}"
        );
        assert!(stats["ratio"].as_f64().unwrap_or(1.0) < 0.5, "{stats}");
        assert_eq!(stats["summaries"]["created"], 0);
    }

    // ---- strategy 2 ----

    /// A summarizer that numbers its summaries and remembers what it was asked.
    #[derive(Default)]
    struct Scribe {
        prompts: Mutex<Vec<String>>,
        fail: bool,
        hang: bool,
    }

    impl Summarizer for Scribe {
        fn summarize<'a>(&'a self, prompt: &'a [Message], _max_tokens: u64) -> SummaryFuture<'a> {
            let mut prompts = self.prompts.lock().expect("lock");
            prompts.push(prompt[1].flat_text());
            let n = prompts.len();
            let (fail, hang) = (self.fail, self.hang);
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                if fail {
                    return Err("upstream said no".to_owned());
                }
                Ok((format!("- summary number {n}"), 100u64))
            }) as Pin<Box<dyn Future<Output = _> + Send>>
        }
    }

    fn store(name: &str) -> (Arc<Store>, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("thrifty-compress-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::embedded(
            EmbeddedStore::open(&dir, 1 << 20).expect("opens"),
            Duration::from_secs(2),
        );
        (store, dir)
    }

    fn summarize_config() -> CompressionConfig {
        let mut raw = RawCompression {
            max_context_tokens: 3_000,
            preserve_recent_messages: 4,
            strategy: "summarize".to_owned(),
            summarizer_model: Some("llama3.2:3b".to_owned()),
            block_size: 4,
            ..RawCompression::default()
        };
        raw.summarizer_timeout = Duration::from_millis(200);
        validate_compression(raw).expect("valid")
    }

    #[tokio::test]
    async fn summaries_are_created_reused_then_extended() {
        let (store, dir) = store("chain");
        let compressor = Compressor::new(summarize_config(), store);
        let scribe = Scribe::default();
        let mut outcomes = Vec::new();
        let mut prefixes = Vec::new();
        for turns in 20..32 {
            let original = chat(turns);
            let mut compressed = original.clone();
            let outcome = compressor
                .compress(&mut compressed, None, Force::Auto, Some(&scribe))
                .await
                .expect("compressed");
            check_invariants(&original, &compressed, 4, true).expect("valid");
            assert_eq!(outcome.strategy, "summarize");
            prefixes.push(compressed.messages[1].flat_text());
            outcomes.push(outcome);
        }
        let uses: Vec<SummaryUse> = outcomes.iter().map(|o| o.summary).collect();
        assert_eq!(uses[0], SummaryUse::Created, "{uses:?}");
        assert!(uses.contains(&SummaryUse::Reused), "{uses:?}");
        assert!(uses.contains(&SummaryUse::Extended), "{uses:?}");
        assert!(!uses[1..].contains(&SummaryUse::Created), "{uses:?}");
        let calls = scribe.prompts.lock().expect("lock").len();
        assert_eq!(
            calls,
            uses.iter().filter(|u| **u != SummaryUse::Reused).count()
        );
        // An extension sends the summary so far and only the newly aged-out messages.
        let prompts = scribe.prompts.lock().expect("lock").clone();
        let extension = &prompts[1];
        assert!(extension.contains("- summary number 1"), "{extension}");
        assert!(!extension.contains("Turn 0:"), "{extension}");
        assert!(prefixes[0].contains("- summary number 1"));
        for (pair, uses) in prefixes.windows(2).zip(uses[1..].iter()) {
            if *uses == SummaryUse::Reused {
                assert_eq!(pair[0], pair[1]);
            }
        }
        let stats = compressor.stats();
        assert_eq!(stats["summaries"]["created"], 1);
        assert!(
            stats["summaries"]["summarizer_tokens"]
                .as_u64()
                .unwrap_or(0)
                >= 200
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_failing_or_hanging_summarizer_falls_back_to_extractive() {
        let (store, dir) = store("fallback");
        let compressor = Compressor::new(summarize_config(), store);
        for scribe in [
            Scribe {
                fail: true,
                ..Scribe::default()
            },
            Scribe {
                hang: true,
                ..Scribe::default()
            },
        ] {
            let original = chat(24);
            let mut compressed = original.clone();
            let outcome = compressor
                .compress(&mut compressed, None, Force::Auto, Some(&scribe))
                .await
                .expect("compressed");
            assert_eq!(outcome.summary, SummaryUse::Failed);
            assert_eq!(outcome.strategy, "extractive");
            assert!(outcome.budget_met);
            check_invariants(&original, &compressed, 4, true).expect("valid");
            assert!(
                condensed_message(&compressed)
                    .expect("condensed")
                    .flat_text()
                    .contains("Key points")
            );
        }
        assert_eq!(compressor.stats()["summaries"]["failed"], 2);
        // Without a summarizer at hand, the extractive strategy is used quietly.
        let mut compressed = chat(24);
        let outcome = compressor
            .compress(&mut compressed, None, Force::Auto, None)
            .await
            .expect("compressed");
        assert_eq!(outcome.summary, SummaryUse::None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
