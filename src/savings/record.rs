//! What one request cost and what it would have cost: the unit the ledger records.
//! It holds facts only; prices are applied by the ledger's writer.

use serde::{Deserialize, Serialize};

use super::day::Day;
pub use crate::chat::Tokens;

/// What thrifty did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forwarded unchanged and answered by the upstream.
    Miss,
    /// Answered from the exact cache; the upstream was not called.
    ExactHit,
    /// Answered from the semantic cache; the upstream was not called.
    SemanticHit,
    /// Forwarded with a compressed prompt.
    Compressed,
    /// Forwarded untouched because the client or the config asked thrifty to stay out.
    Bypass,
    /// Failed, upstream or in thrifty.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Miss,
        Outcome::ExactHit,
        Outcome::SemanticHit,
        Outcome::Compressed,
        Outcome::Bypass,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Miss => "miss",
            Outcome::ExactHit => "exact_hit",
            Outcome::SemanticHit => "semantic_hit",
            Outcome::Compressed => "compressed",
            Outcome::Bypass => "bypass",
            Outcome::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// Whether the answer came from a cache without calling the upstream.
    pub fn is_hit(self) -> bool {
        matches!(self, Outcome::ExactHit | Outcome::SemanticHit)
    }
}

/// One request as the ledger sees it. Never holds a key, a prompt or a completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unix time in milliseconds when the request arrived.
    pub at_ms: u64,
    /// The tenant id (a key name or `anon-<hash>`), never a key.
    pub tenant: String,
    pub key_name: Option<String>,
    pub team: Option<String>,
    /// From `x-thrifty-tags`, for projects and apps.
    #[serde(default)]
    pub tags: Vec<String>,
    pub dialect: String,
    pub endpoint: String,
    pub model: String,
    pub upstream: String,
    pub outcome: Outcome,
    pub status: u16,
    pub latency_ms: f64,
    pub upstream_ms: Option<f64>,
    /// What it would have cost without thrifty: the prompt as the client sent it and the
    /// completion tokens of the answer it got. Where thrifty changed nothing (a miss, a
    /// bypass, an error) it equals `actual`, the provider's cached tokens included.
    pub baseline: Tokens,
    /// What the upstream billed: zero for a hit, the compressed prompt, the provider's cached tokens.
    pub actual: Tokens,
    /// What thrifty spent to save it (summarizer tokens, paid embeddings).
    pub overhead: Tokens,
    /// The model `overhead` is billed at; the request's model when absent.
    pub overhead_model: Option<String>,
    /// Embedding calls made for the semantic cache; local ones cost nothing but are counted.
    pub embed_calls: u64,
    /// Token counts came from thrifty's tokenizer because the upstream reported none.
    pub estimated: bool,
    /// The answer broke off before its end (the upstream failed midway, or thrifty shut
    /// down): the tokens are those seen until then, and the outcome is `error`.
    #[serde(default)]
    pub partial: bool,
}

impl UsageRecord {
    pub fn day(&self) -> Day {
        Day::from_unix_ms(self.at_ms)
    }

    /// The key dimension of reports: the configured key name, else the tenant id.
    pub fn key(&self) -> &str {
        self.key_name.as_deref().unwrap_or(&self.tenant)
    }
}

/// A raw record as the audit log keeps it: the record, its prices and its costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(flatten)]
    pub record: UsageRecord,
    /// Price versions applied, as `model|upstream|effective`.
    pub prices: Vec<String>,
    pub unpriced: Vec<String>,
    /// Exact decimal costs; absent when a model had no price.
    pub cost: Option<AuditCost>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCost {
    pub currency: String,
    pub baseline: String,
    pub actual: String,
    pub overhead: String,
    pub net_saved: String,
}
