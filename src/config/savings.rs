//! `[savings]`: the price table and the ledger's buffers.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::savings::{LedgerOptions, Pricing};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawSavings {
    /// A pricing TOML file; the shipped `config/pricing.toml` is built in when absent.
    pub pricing: Option<PathBuf>,
    /// Records held while the store is unavailable before they are dropped (and counted).
    pub buffer: Option<usize>,
    /// Raw records the audit log keeps.
    pub log_cap: Option<usize>,
    /// Ask OpenAI-style upstreams for the usage chunk of every stream (and strip it for
    /// clients that did not ask), so streamed answers are billed from exact counts.
    pub stream_usage: bool,
}

impl Default for RawSavings {
    fn default() -> Self {
        RawSavings {
            pricing: None,
            buffer: None,
            log_cap: None,
            stream_usage: true,
        }
    }
}

#[derive(Debug)]
pub struct SavingsConfig {
    pub pricing: Pricing,
    pub ledger: LedgerOptions,
    pub stream_usage: bool,
}

pub fn validate_savings(raw: RawSavings) -> Result<SavingsConfig, ConfigError> {
    let pricing = match &raw.pricing {
        Some(path) => Pricing::load(path),
        None => Pricing::default_file(),
    }
    .map_err(|e| ConfigError::invalid("savings.pricing", &format!("a valid price table ({e})")))?;
    let mut ledger = LedgerOptions::default();
    if let Some(buffer) = raw.buffer {
        ledger.buffer = buffer;
    }
    if let Some(cap) = raw.log_cap {
        if cap == 0 {
            return Err(ConfigError::invalid(
                "savings.log_cap",
                "a number above zero",
            ));
        }
        ledger.log_cap = cap;
    }
    Ok(SavingsConfig {
        pricing,
        ledger,
        stream_usage: raw.stream_usage,
    })
}
