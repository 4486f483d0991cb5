//! `thrifty eval-compress`: runs the extractive strategy over recorded
//! conversations and reports tokens before and after, time, and what survives.
//!
//! Input is JSONL, one conversation a line: `{"id", "messages": [OpenAI chat
//! messages], "probes": [{"question", "answer", "evidence_msg_idx"?}], "meta"}`.
//! The tokens and time of a row are those of the conversation with its first probe's
//! question appended as the next user turn (the request compression would see).
//!
//! Probes with `evidence_msg_idx` are measured by **answer survival** against the
//! truncation baseline ([`survival`] states the rule): each one whose evidence lies
//! outside the recent window is asked as the next user message, the request is
//! compressed, and its answer must still occur in what reaches the upstream.
//! Probes without it (MT-Bench's) are measured by **term overlap**: the answer's
//! content words that also occur in the original conversation are the probe's terms,
//! and a probe is retained when at least half of them are still in the compressed
//! prompt (reference answers are paraphrases, so substring matching would find
//! nothing even without compression). This room must not be on the request path.

mod survival;
mod terms;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use crate::chat::{Call, ChatRequest, Dialect, Endpoint, Message, Role};
use crate::config::CompressionConfig;
use crate::dialect;

use super::{Compressor, Force, Outcome};
use survival::{normalise, normalised_text, occurs, truncated};
use terms::{terms_of, words};

pub use super::synthetic::{synthetic_agent_conversation, synthetic_agent_conversation_seeded};

/// The model conversations are counted for (o200k_base).
pub const EVAL_MODEL: &str = "gpt-4o";
/// A probe is retained when at least this share of its terms survive.
const RETAINED: f64 = 0.5;

/// One conversation's figures.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: String,
    pub messages: usize,
    pub before: usize,
    pub after: usize,
    pub compressed: bool,
    pub budget_met: bool,
    /// Wall time of the compression call, token counting included.
    pub millis: f64,
    pub probes: usize,
    pub probes_retained: usize,
    /// Probe terms found in the original conversation, and how many survived.
    pub terms: usize,
    pub terms_kept: usize,
    /// Answer survival of the probes with evidence indices.
    pub survival: Survival,
}

/// Answer survival over the probes that say where their answer is ([`survival`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Survival {
    /// Probes whose evidence lies outside the recent window.
    pub asked: usize,
    /// Of those, probes whose answer occurs in their evidence messages.
    pub present: usize,
    /// Of those, answers still in the compressed request…
    pub kept: usize,
    /// …and in the request truncated to the same budget.
    pub truncation_kept: usize,
    /// Compressing the requests of the asked probes.
    pub compressions: usize,
    pub millis: f64,
    pub max_millis: f64,
    pub tokens_after: usize,
    pub truncation_tokens: usize,
}

impl Survival {
    fn add(&mut self, other: &Survival) {
        self.asked += other.asked;
        self.present += other.present;
        self.kept += other.kept;
        self.truncation_kept += other.truncation_kept;
        self.compressions += other.compressions;
        self.millis += other.millis;
        self.max_millis = self.max_millis.max(other.max_millis);
        self.tokens_after += other.tokens_after;
        self.truncation_tokens += other.truncation_tokens;
    }

    /// Shares of the present answers kept by compression and by truncation.
    pub fn shares(&self) -> Option<(f64, f64)> {
        (self.present > 0).then(|| {
            (
                self.kept as f64 / self.present as f64,
                self.truncation_kept as f64 / self.present as f64,
            )
        })
    }
}

/// The figures for one file.
#[derive(Clone, Debug)]
pub struct Report {
    pub source: String,
    pub model: &'static str,
    pub budget: u64,
    pub preserve_recent: usize,
    pub mode: &'static str,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn tokens_before(&self) -> usize {
        self.rows.iter().map(|r| r.before).sum()
    }

    pub fn tokens_after(&self) -> usize {
        self.rows.iter().map(|r| r.after).sum()
    }

    pub fn compressed(&self) -> usize {
        self.rows.iter().filter(|r| r.compressed).count()
    }

    pub fn millis(&self) -> f64 {
        self.rows.iter().map(|r| r.millis).sum()
    }

    pub fn probes(&self) -> usize {
        self.rows.iter().map(|r| r.probes).sum()
    }

    pub fn probes_retained(&self) -> usize {
        self.rows.iter().map(|r| r.probes_retained).sum()
    }

    /// Answer survival over all conversations.
    pub fn survival(&self) -> Survival {
        let mut total = Survival::default();
        for r in &self.rows {
            total.add(&r.survival);
        }
        total
    }

    /// Share of probe terms kept over all probes; `None` without probes.
    pub fn term_retention(&self) -> Option<f64> {
        let terms: usize = self.rows.iter().map(|r| r.terms).sum();
        let kept: usize = self.rows.iter().map(|r| r.terms_kept).sum();
        (terms > 0).then(|| kept as f64 / terms as f64)
    }

    /// A plain-text table, one row per conversation and a total.
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "{} ({} conversations, model {}, budget {} tokens, {} recent messages kept, mode {})\n",
            self.source,
            self.rows.len(),
            self.model,
            self.budget,
            self.preserve_recent,
            self.mode,
        );
        let _ = writeln!(
            out,
            "{:<44} {:>5} {:>8} {:>8} {:>6} {:>8} {:>7} {:>9}",
            "conversation", "msgs", "before", "after", "saved", "ms", "budget", "probes"
        );
        let percent = |before: usize, after: usize| {
            if before == 0 {
                0.0
            } else {
                100.0 * (1.0 - after as f64 / before as f64)
            }
        };
        for r in &self.rows {
            let id = if r.id.len() > 44 {
                format!(
                    "…{}",
                    &r.id[super::extractive::ceil_boundary(&r.id, r.id.len() - 43)..]
                )
            } else {
                r.id.clone()
            };
            let budget = match (r.compressed, r.budget_met) {
                (false, _) => "under",
                (true, true) => "met",
                (true, false) => "NOT met",
            };
            let probes = if r.survival.present > 0 {
                format!(
                    "{}/{} (trunc {})",
                    r.survival.kept, r.survival.present, r.survival.truncation_kept
                )
            } else if r.probes == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{}/{} {:.0}%",
                    r.probes_retained,
                    r.probes,
                    100.0 * r.terms_kept as f64 / r.terms.max(1) as f64
                )
            };
            let _ = writeln!(
                out,
                "{id:<44} {:>5} {:>8} {:>8} {:>5.1}% {:>8.2} {budget:>7} {probes:>9}",
                r.messages,
                r.before,
                r.after,
                percent(r.before, r.after),
                r.millis,
            );
        }
        let survival = self.survival();
        let probes = match self.term_retention() {
            _ if survival.present > 0 => format!(
                "{}/{} (trunc {})",
                survival.kept, survival.present, survival.truncation_kept
            ),
            Some(share) => format!(
                "{}/{} {:.0}%",
                self.probes_retained(),
                self.probes(),
                100.0 * share
            ),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<44} {:>5} {:>8} {:>8} {:>5.1}% {:>8.2} {:>7} {probes:>9}",
            format!("total ({} compressed)", self.compressed()),
            self.rows.iter().map(|r| r.messages).sum::<usize>(),
            self.tokens_before(),
            self.tokens_after(),
            percent(self.tokens_before(), self.tokens_after()),
            self.millis(),
            format!(
                "{} NOT",
                self.rows
                    .iter()
                    .filter(|r| r.compressed && !r.budget_met)
                    .count()
            ),
        );
        if let Some((kept, truncation)) = survival.shares() {
            let _ = writeln!(
                out,
                "answer survival: {} probes asked (evidence outside the last {} messages), {} with the answer verbatim in their evidence; \
                 kept by compression {} ({:.2}), by truncation to the same budget {} ({:.2})",
                survival.asked,
                self.preserve_recent,
                survival.present,
                survival.kept,
                kept,
                survival.truncation_kept,
                truncation,
            );
            let n = survival.compressions.max(1) as f64;
            let _ = writeln!(
                out,
                "per asked probe: {:.0} tokens after compression, {:.0} after truncation; compression {:.2} ms mean, {:.2} ms max",
                survival.tokens_after as f64 / n,
                survival.truncation_tokens as f64 / n,
                survival.millis / n,
                survival.max_millis,
            );
            out.push_str("matching: lower case, non-alphanumeric runs as one space, the answer found between word boundaries, the question left out\n");
        } else {
            out.push_str("probes: retained (≥50% of the answer's context terms kept) / total, and the share of all probe terms kept\n");
        }
        out
    }
}

/// Compresses every conversation in `path` with the extractive strategy and `config`'s budget.
pub fn run(path: &Path, config: &CompressionConfig) -> Result<Report, String> {
    run_inspecting(path, config, |_, _, _| {})
}

/// A request as it was before compression, as compressed, and what compressing it did.
pub(crate) type Inspect<'a> = dyn FnMut(&ChatRequest, &ChatRequest, &Outcome) + 'a;

/// [`run`], handing every request it compresses to `inspect` (the tests check the
/// compression invariants on each).
pub(crate) fn run_inspecting(
    path: &Path,
    config: &CompressionConfig,
    mut inspect: impl FnMut(&ChatRequest, &ChatRequest, &Outcome),
) -> Result<Report, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let compressor = Compressor::offline(config.clone());
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let value: Value = serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
        let id = value["id"].as_str().unwrap_or("?").to_owned();
        let body = json!({"model": EVAL_MODEL, "messages": value["messages"]});
        let mut chat =
            match dialect::decode(Dialect::OpenAi, Endpoint::Chat, body.to_string().as_bytes()) {
                Ok(Call::Chat(chat)) => chat,
                Ok(_) => return Err(format!("{}: not a chat", at())),
                Err(e) => return Err(format!("{}: {e}", at())),
            };
        let probes: Vec<Probe> = value["probes"]
            .as_array()
            .map(|probes| probes.iter().filter_map(Probe::read).collect())
            .unwrap_or_default();
        let survival = survival_of(&compressor, config, &chat, &probes, &mut inspect);
        let context = terms_of(&chat.messages);
        if let Some(probe) = probes.first() {
            chat.messages
                .push(Message::text(Role::User, probe.question.clone()));
        }
        let messages = chat.messages.len();
        let original = chat.clone();
        let started = Instant::now();
        let outcome = compressor.compress_extractive(&mut chat, None, Force::Auto);
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        if let Some(o) = &outcome {
            inspect(&original, &chat, o);
        }
        let before = match &outcome {
            Some(o) => o.before,
            None => compressor
                .counter()
                .request(super::models::limits(config, EVAL_MODEL).encoding, &chat)
                .total(),
        };
        let kept_messages = if probes.is_empty() {
            &chat.messages[..]
        } else {
            &chat.messages[..chat.messages.len() - 1]
        };
        let kept = terms_of(kept_messages);
        let mut row = Row {
            id,
            messages,
            before,
            after: outcome.as_ref().map_or(before, |o| o.after),
            compressed: outcome.is_some(),
            budget_met: outcome.as_ref().is_none_or(|o| o.budget_met),
            millis,
            probes: probes.len(),
            probes_retained: 0,
            terms: 0,
            terms_kept: 0,
            survival,
        };
        for probe in probes.iter().filter(|p| p.evidence.is_none()) {
            let grounded: Vec<String> = words(&probe.answer)
                .into_iter()
                .filter(|w| context.contains(w))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let survived = grounded.iter().filter(|w| kept.contains(*w)).count();
            row.terms += grounded.len();
            row.terms_kept += survived;
            if grounded.is_empty() || survived as f64 >= RETAINED * grounded.len() as f64 {
                row.probes_retained += 1;
            }
        }
        rows.push(row);
    }
    Ok(Report {
        source: path.display().to_string(),
        model: EVAL_MODEL,
        budget: config.max_context_tokens,
        preserve_recent: config.preserve_recent_messages,
        mode: config.mode.as_str(),
        rows,
    })
}

/// A question about the conversation and its reference answer.
struct Probe {
    question: String,
    answer: String,
    /// The messages that hold the answer, when the probe says.
    evidence: Option<Vec<usize>>,
}

impl Probe {
    fn read(p: &Value) -> Option<Probe> {
        let answer = match &p["answer"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some(Probe {
            question: p["question"].as_str()?.to_owned(),
            answer,
            evidence: p["evidence_msg_idx"].as_array().map(|ids| {
                ids.iter()
                    .filter_map(Value::as_u64)
                    .map(|i| i as usize)
                    .collect()
            }),
        })
    }
}

/// Asks every probe whose evidence lies outside the recent window, compressed and
/// truncated to the same budget, and counts the answers that survive.
fn survival_of(
    compressor: &Compressor,
    config: &CompressionConfig,
    chat: &ChatRequest,
    probes: &[Probe],
    inspect: &mut Inspect<'_>,
) -> Survival {
    let mut survival = Survival::default();
    let limits = super::models::limits(config, EVAL_MODEL);
    let budget = limits.budget(None);
    let window = chat
        .messages
        .len()
        .saturating_sub(config.preserve_recent_messages);
    for probe in probes {
        let Some(evidence) = &probe.evidence else {
            continue;
        };
        if evidence.is_empty() || evidence.iter().any(|&i| i >= window) {
            continue;
        }
        survival.asked += 1;
        let answer = normalise(&probe.answer);
        let sources: Vec<Message> = evidence.iter().map(|&i| chat.messages[i].clone()).collect();
        if !occurs(&answer, &normalised_text(&sources)) {
            continue;
        }
        survival.present += 1;
        let mut asked = chat.clone();
        asked
            .messages
            .push(Message::text(Role::User, probe.question.clone()));
        let cut = truncated(compressor.counter(), limits.encoding, &asked, budget);
        let truncation_tokens = compressor.counter().request(limits.encoding, &cut).total();
        let mut compressed = asked.clone();
        let started = Instant::now();
        let outcome = compressor.compress_extractive(&mut compressed, None, Force::Auto);
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        if let Some(o) = &outcome {
            inspect(&asked, &compressed, o);
        }
        let sent = |c: &ChatRequest| normalised_text(&c.messages[..c.messages.len() - 1]);
        survival.kept += usize::from(occurs(&answer, &sent(&compressed)));
        survival.truncation_kept += usize::from(occurs(&answer, &sent(&cut)));
        survival.compressions += 1;
        survival.millis += millis;
        survival.max_millis = survival.max_millis.max(millis);
        survival.tokens_after += outcome.map_or(truncation_tokens, |o| o.after);
        survival.truncation_tokens += truncation_tokens;
    }
    survival
}
