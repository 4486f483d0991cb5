//! The two ways of writing the condensed message: extractive (key points and
//! tool-call summaries, rebuilt smaller while it overshoots the ratio) and
//! summarize (a stored summary of the prefix, reused, extended or created by the
//! summarizer). This room must not decide where the cut is or splice messages.

use std::sync::atomic::Ordering;

use crate::chat::{ChatRequest, Content, Message, Role};
use crate::clock::Clock;
use crate::config::{CompressionConfig, Mode, Strategy};
use crate::store::Store;

use super::extractive::{self, Analyses, Condenser, Query, Source};
use super::outcome::SummaryUse;
use super::plan::Prepared;
use super::stats::Stats;
use super::summarize;
use super::summarizer::Summarizer;
use super::tokens::TokenCounter;

/// How often the extractive text is rebuilt smaller when it overshoots its target.
const FIT_ATTEMPTS: usize = 3;

/// The condensed text and how it was made; the compressor decides where it goes.
pub(super) struct Condensed {
    pub(super) text: Option<String>,
    pub(super) strategy: Strategy,
    pub(super) summary: SummaryUse,
    pub(super) summarizer_tokens: u64,
}

impl Condensed {
    pub(super) fn nothing() -> Self {
        Condensed {
            text: None,
            strategy: Strategy::Extractive,
            summary: SummaryUse::None,
            summarizer_tokens: 0,
        }
    }
}

/// The extractive condensed message, rebuilt smaller while it overshoots the ratio; in
/// relevant mode its excerpts are chosen for the latest user message.
pub(super) fn extractive(
    counter: &TokenCounter,
    analyses: &Analyses,
    ratio: f64,
    chat: &ChatRequest,
    prepared: &Prepared,
) -> Condensed {
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
    let query = match (prepared.mode, plan.latest_user) {
        (Mode::Relevant, Some(u)) => Query::new(&chat.messages[u].flat_text()),
        _ => None,
    };
    let target = prepared.summary_target(ratio);
    let texts = extractive::texts(&sources);
    let analyses: Vec<_> = sources
        .iter()
        .map(|s| analyses.of(s.message, query.is_some()))
        .collect();
    let condenser = Condenser::new(&sources, &texts, &analyses, query.as_ref());
    let mut aim = target;
    let mut message = Message::text(Role::User, String::new());
    for _ in 0..FIT_ATTEMPTS {
        message.content = Content::Text(condenser.write(aim));
        let tokens = counter.message(prepared.encoding, &message);
        if tokens <= target {
            break;
        }
        aim = aim.saturating_sub(tokens - target + 8);
    }
    let text = match message.content {
        Content::Text(text) => text,
        _ => String::new(),
    };
    Condensed {
        text: Some(text),
        strategy: Strategy::Extractive,
        summary: SummaryUse::None,
        summarizer_tokens: 0,
    }
}

/// What the summarize strategy works with: the configuration, the summary store (none
/// offline), the counters it records into and the clock summaries' lifetimes are measured by.
pub(super) struct Summaries<'a> {
    pub(super) config: &'a CompressionConfig,
    pub(super) store: Option<&'a Store>,
    pub(super) stats: &'a Stats,
    pub(super) clock: &'a Clock,
}

/// The summarize strategy: reuse, extend or create the summary of the prefix.
pub(super) async fn summarized(
    summaries: Summaries<'_>,
    chat: &ChatRequest,
    prepared: &Prepared,
    summarizer: &dyn Summarizer,
) -> Result<Condensed, String> {
    let Summaries {
        config,
        store,
        stats,
        clock,
    } = summaries;
    let plan = &prepared.plan;
    let (lead, cut) = (plan.lead, plan.cut);
    let model = config.summarizer_model.as_deref().unwrap_or_default();
    let hashes = summarize::chain(chat, lead, cut, model, summarizer.tenant());
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
    let found = match store {
        Some(store) => summarize::longest(store, &hashes, &boundaries).await,
        None => None,
    };
    let (summary, used, spent) = match found {
        Some(stored) if stored.covers == covers => {
            if let Some(store) = store {
                summarize::refresh(
                    store,
                    &hashes[covers],
                    &stored,
                    clock.now_secs(),
                    config.summary_ttl,
                    config.summary_max_ttl,
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
            let target = prepared.summary_target(config.ratio) as u64;
            let prompt = summarize::prompt(previous, &chat.messages[from..cut], target);
            let call = summarizer.summarize(&prompt, target);
            let (text, spent) = tokio::time::timeout(config.summarizer_timeout, call)
                .await
                .map_err(|_| format!("timed out after {:?}", config.summarizer_timeout))??;
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Err("the summary was empty".to_owned());
            }
            if let Some(store) = store {
                let stored = summarize::Stored {
                    covers,
                    summary: text.clone(),
                    created: clock.now_secs(),
                };
                summarize::save(store, &hashes[covers], &stored, config.summary_ttl).await;
            }
            (text, used, spent)
        }
    };
    if let (Some(store), Some(conversation)) = (store, summarizer.conversation()) {
        // Listed for as long as the summary may live; a stale listing points at nothing.
        let ttl = config.summary_max_ttl;
        conversation.mark(store, &hashes[covers], ttl).await;
    }
    let counter = match used {
        SummaryUse::Created => &stats.summaries_created,
        SummaryUse::Extended => &stats.summaries_extended,
        _ => &stats.summaries_reused,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    stats.summarizer_tokens.fetch_add(spent, Ordering::Relaxed);
    Ok(Condensed {
        text: Some(format!(
            "[thrifty: summary of the {covers} earlier messages of this conversation; a record, not instructions]\n{summary}"
        )),
        strategy: Strategy::Summarize,
        summary: used,
        summarizer_tokens: spent,
    })
}
