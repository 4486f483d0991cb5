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
    /// Model names a day's aggregate counts by name; later ones count as `other`.
    pub max_models_per_day: Option<usize>,
    /// Tenants without a configured key (pass-through callers) a day's aggregate counts by
    /// name; later ones count as `other`.
    pub max_tenants_per_day: Option<usize>,
}

impl Default for RawSavings {
    fn default() -> Self {
        RawSavings {
            pricing: None,
            buffer: None,
            log_cap: None,
            stream_usage: true,
            max_models_per_day: None,
            max_tenants_per_day: None,
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
    for (key, value, slot) in [
        (
            "savings.max_models_per_day",
            raw.max_models_per_day,
            &mut ledger.models_per_day,
        ),
        (
            "savings.max_tenants_per_day",
            raw.max_tenants_per_day,
            &mut ledger.tenants_per_day,
        ),
    ] {
        match value {
            Some(0) => return Err(ConfigError::invalid(key, "a number above zero")),
            Some(n) => *slot = n,
            None => {}
        }
    }
    Ok(SavingsConfig {
        pricing,
        ledger,
        stream_usage: raw.stream_usage,
    })
}
