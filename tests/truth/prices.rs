//! The truth test's own price table, with round prices so every expected cost is easy to check
//! by hand, written to a file for `savings.pricing`; and which version prices each model.
//!
//! Prices are held as micro-units per million tokens, which is the same number as pico-units per
//! token: the cost of a request in pico-units is `tokens × price`, exactly.

use std::path::{Path, PathBuf};

use super::billing::Tokens;

/// One `[[price]]` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub model: &'static str,
    pub upstream: Option<&'static str>,
    pub effective: &'static str,
    /// Per million tokens, in micro-units (so `1_000_000` is 1.00 per million).
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    pub source: &'static str,
}

impl Price {
    /// Pico-units; no request in the script reports cached prompt tokens.
    pub fn cost(&self, tokens: Tokens) -> i128 {
        i128::from(tokens.prompt) * i128::from(self.input)
            + i128::from(tokens.completion) * i128::from(self.output)
    }
}

const M: u64 = 1_000_000;

/// A superseded version of the main model's price, the one in force, and one not yet in force.
pub const GPT_OLD: Price = Price {
    model: "gpt-4o-mini",
    upstream: None,
    effective: "2020-01-01",
    input: 3 * M,
    cached_input: 3 * M,
    output: 9 * M,
    source: "truth test, superseded",
};
pub const GPT: Price = Price {
    model: "gpt-4o-mini",
    upstream: None,
    effective: "2024-06-01",
    input: M,
    cached_input: M / 2,
    output: 4 * M,
    source: "truth test, in force",
};
pub const GPT_FUTURE: Price = Price {
    model: "gpt-4o-mini",
    upstream: None,
    effective: "2999-01-01",
    input: 50 * M,
    cached_input: 50 * M,
    output: 50 * M,
    source: "truth test, not yet in force",
};
/// The local model, priced (not free) so its costs show in every sum; only on the Ollama upstream.
pub const LLAMA: Price = Price {
    model: "llama3.2",
    upstream: Some("ollama*"),
    effective: "2024-01-01",
    input: M / 5,
    cached_input: M / 5,
    output: 3 * M / 5,
    source: "truth test, local",
};
/// The fake's failing models, priced so errors are not reported as unpriced.
pub const FAIL: Price = Price {
    model: "fail-*",
    upstream: None,
    effective: "2024-01-01",
    input: 10 * M,
    cached_input: 10 * M,
    output: 30 * M,
    source: "truth test, errors",
};
pub const OVERFLOW: Price = Price {
    model: "context-overflow",
    upstream: None,
    effective: "2024-01-01",
    input: 10 * M,
    cached_input: 10 * M,
    output: 30 * M,
    source: "truth test, errors",
};

/// A model whose upstream reports no usage in its streams, so thrifty counts its tokens.
pub const QUIET: Price = Price {
    model: "quiet-*",
    upstream: None,
    effective: "2024-01-01",
    input: 2 * M,
    cached_input: 2 * M,
    output: 8 * M,
    source: "truth test, counted by thrifty",
};

pub const TABLE: [Price; 7] = [GPT_OLD, GPT, GPT_FUTURE, LLAMA, FAIL, OVERFLOW, QUIET];

/// The model the table has no price for.
pub const UNPRICED_MODEL: &str = "mystery-model";

/// The version that prices `model` today, as the table above was written to mean.
pub fn in_force(model: &str) -> Option<Price> {
    match model {
        "gpt-4o-mini" => Some(GPT),
        "llama3.2" => Some(LLAMA),
        "fail-500" => Some(FAIL),
        "context-overflow" => Some(OVERFLOW),
        "quiet-gpt" => Some(QUIET),
        _ => None,
    }
}

/// `1_500_000` micro-units → `"1.5"`.
fn decimal(micro: u64) -> String {
    format!("{}.{:06}", micro / M, micro % M)
}

/// Writes the table as a pricing TOML file in `dir`.
pub fn write_file(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for p in TABLE {
        text.push_str("[[price]]\n");
        text.push_str(&format!("model = \"{}\"\n", p.model));
        if let Some(upstream) = p.upstream {
            text.push_str(&format!("upstream = \"{upstream}\"\n"));
        }
        text.push_str(&format!(
            "input = \"{}\"\ncached_input = \"{}\"\noutput = \"{}\"\n",
            decimal(p.input),
            decimal(p.cached_input),
            decimal(p.output)
        ));
        text.push_str(&format!(
            "currency = \"USD\"\neffective = \"{}\"\nsource = \"{}\"\n\n",
            p.effective, p.source
        ));
    }
    let path = dir.join("pricing.toml");
    std::fs::write(&path, text).expect("write the truth test's pricing file");
    path
}
