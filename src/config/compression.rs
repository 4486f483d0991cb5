//! `[compression]`: when old turns of a conversation are condensed before forwarding, and how.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use super::models::{Encoding, ModelTable};
use super::{ConfigError, Env};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCompression {
    pub enabled: bool,
    /// Prompt tokens above which a request is compressed.
    pub max_context_tokens: u64,
    /// How many of the last messages are always forwarded verbatim.
    pub preserve_recent_messages: usize,
    /// The condensed part may use at most this share of the tokens it replaces.
    pub ratio: f64,
    /// `extractive` (no model call) or `summarize`.
    pub strategy: String,
    /// `relevant` (the condensed part is chosen for the latest user message) or `stable`
    /// (a block-stepped, question-independent prefix that keeps providers' prompt caches).
    pub mode: String,
    /// The model that writes summaries for the `summarize` strategy.
    pub summarizer_model: Option<String>,
    #[serde(with = "humantime_serde")]
    pub summarizer_timeout: Duration,
    /// How long an unused summary is kept; each reuse extends it again.
    #[serde(with = "humantime_serde")]
    pub summary_ttl: Duration,
    /// The longest a summary is kept, however often it is reused.
    #[serde(with = "humantime_serde")]
    pub summary_max_ttl: Duration,
    /// The compression boundary moves in steps of this many messages.
    pub block_size: usize,
    /// A models table file (context windows, encodings); the shipped
    /// `config/models.toml` is built in when absent.
    pub models_file: Option<PathBuf>,
    /// `[[compression.model]]`: per-model limits over the table's, first match wins.
    #[serde(rename = "model")]
    pub models: Vec<RawCompressionModel>,
}

impl Default for RawCompression {
    fn default() -> Self {
        RawCompression {
            enabled: true,
            max_context_tokens: 35_000,
            preserve_recent_messages: 8,
            ratio: 0.3,
            strategy: "extractive".to_owned(),
            mode: "relevant".to_owned(),
            summarizer_model: None,
            summarizer_timeout: Duration::from_secs(20),
            summary_ttl: Duration::from_secs(3600),
            summary_max_ttl: Duration::from_secs(24 * 3600),
            block_size: 8,
            models_file: None,
            models: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompressionModel {
    /// A glob over model names, such as `llama3*` or `gpt-4o*`.
    pub model: String,
    pub max_context_tokens: Option<u64>,
    /// The model's context window, over the models table's (or Ollama's `num_ctx`).
    pub context_window: Option<u64>,
    /// `o200k_base` or `cl100k_base`.
    pub encoding: Option<String>,
}

impl RawCompression {
    /// `THRIFTY_MAX_CONTEXT_TOKENS` and `THRIFTY_PRESERVE_RECENT_MESSAGES`.
    pub fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
        if let Some(value) = env("THRIFTY_MAX_CONTEXT_TOKENS") {
            self.max_context_tokens = value.trim().parse().map_err(|_| {
                ConfigError::invalid("THRIFTY_MAX_CONTEXT_TOKENS", "a number of tokens")
            })?;
        }
        if let Some(value) = env("THRIFTY_PRESERVE_RECENT_MESSAGES") {
            self.preserve_recent_messages = value.trim().parse().map_err(|_| {
                ConfigError::invalid("THRIFTY_PRESERVE_RECENT_MESSAGES", "a number of messages")
            })?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Key points and tool-call summaries picked from the old turns; no model call.
    Extractive,
    /// A summarizer model writes an incremental, cached summary; extractive on failure.
    Summarize,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Extractive => "extractive",
            Strategy::Summarize => "summarize",
        }
    }
}

/// What the condensed part is chosen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every turn outside the recent window is a candidate, and what is kept verbatim is
    /// what the latest user message needs (lexical relevance), then facts every answer
    /// needs. The condensed part changes with the question, so providers' prompt caches
    /// only reuse the instructions before it.
    Relevant,
    /// The boundary moves in blocks of `block_size` messages and the condensed part does
    /// not depend on the question, so consecutive turns send an identical prefix.
    Stable,
}

impl Mode {
    pub fn parse(name: &str) -> Option<Mode> {
        match name {
            "relevant" => Some(Mode::Relevant),
            "stable" => Some(Mode::Stable),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Relevant => "relevant",
            Mode::Stable => "stable",
        }
    }
}

/// Limits for the models one glob matches.
#[derive(Clone, Debug)]
pub struct ModelOverride {
    pub glob: GlobMatcher,
    pub max_context_tokens: Option<u64>,
    pub context_window: Option<u64>,
    pub encoding: Option<Encoding>,
}

/// The validated `[compression]` section.
#[derive(Clone, Debug)]
pub struct CompressionConfig {
    pub enabled: bool,
    pub max_context_tokens: u64,
    pub preserve_recent_messages: usize,
    pub ratio: f64,
    pub strategy: Strategy,
    pub mode: Mode,
    pub summarizer_model: Option<String>,
    pub summarizer_timeout: Duration,
    pub summary_ttl: Duration,
    pub summary_max_ttl: Duration,
    pub block_size: usize,
    /// Context windows and encodings: the shipped table or `models_file`.
    pub model_table: Arc<ModelTable>,
    pub models: Vec<ModelOverride>,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        let raw = RawCompression::default();
        CompressionConfig {
            enabled: raw.enabled,
            max_context_tokens: raw.max_context_tokens,
            preserve_recent_messages: raw.preserve_recent_messages,
            ratio: raw.ratio,
            strategy: Strategy::Extractive,
            mode: Mode::Relevant,
            summarizer_model: raw.summarizer_model,
            summarizer_timeout: raw.summarizer_timeout,
            summary_ttl: raw.summary_ttl,
            summary_max_ttl: raw.summary_max_ttl,
            block_size: raw.block_size,
            model_table: ModelTable::shipped(),
            models: Vec::new(),
        }
    }
}

pub fn validate_compression(raw: RawCompression) -> Result<CompressionConfig, ConfigError> {
    if raw.max_context_tokens == 0 {
        return Err(ConfigError::invalid(
            "compression.max_context_tokens",
            "a number of tokens above zero",
        ));
    }
    if raw.preserve_recent_messages == 0 {
        return Err(ConfigError::invalid(
            "compression.preserve_recent_messages",
            "at least 1 message",
        ));
    }
    if !(raw.ratio > 0.0 && raw.ratio <= 1.0) {
        return Err(ConfigError::invalid(
            "compression.ratio",
            "a number above 0 and at most 1, such as 0.3",
        ));
    }
    let strategy = match raw.strategy.as_str() {
        "extractive" => Strategy::Extractive,
        "summarize" => Strategy::Summarize,
        _ => {
            return Err(ConfigError::invalid(
                "compression.strategy",
                "\"extractive\" or \"summarize\"",
            ));
        }
    };
    let mode = Mode::parse(&raw.mode)
        .ok_or_else(|| ConfigError::invalid("compression.mode", "\"relevant\" or \"stable\""))?;
    let summarizer_model = raw.summarizer_model.filter(|m| !m.trim().is_empty());
    if strategy == Strategy::Summarize && summarizer_model.is_none() {
        return Err(ConfigError::invalid(
            "compression.summarizer_model",
            "a model name when compression.strategy is \"summarize\"",
        ));
    }
    for (key, duration) in [
        ("compression.summarizer_timeout", raw.summarizer_timeout),
        ("compression.summary_ttl", raw.summary_ttl),
        ("compression.summary_max_ttl", raw.summary_max_ttl),
    ] {
        if duration.is_zero() {
            return Err(ConfigError::invalid(key, "a duration above zero"));
        }
    }
    if raw.summary_max_ttl < raw.summary_ttl {
        return Err(ConfigError::invalid(
            "compression.summary_max_ttl",
            "at least compression.summary_ttl",
        ));
    }
    if raw.block_size == 0 {
        return Err(ConfigError::invalid(
            "compression.block_size",
            "at least 1 message",
        ));
    }
    let model_table = match &raw.models_file {
        Some(path) => ModelTable::load(path).map(Arc::new),
        None => Ok(ModelTable::shipped()),
    }
    .map_err(|e| {
        ConfigError::invalid(
            "compression.models_file",
            &format!("a valid models table ({e})"),
        )
    })?;
    let mut models = Vec::new();
    for (i, entry) in raw.models.into_iter().enumerate() {
        let key = |field: &str| format!("compression.model[{i}].{field}");
        let glob = Glob::new(&entry.model)
            .map_err(|e| ConfigError::invalid(key("model"), &format!("a model glob ({e})")))?;
        if entry.max_context_tokens == Some(0) {
            return Err(ConfigError::invalid(
                key("max_context_tokens"),
                "a number of tokens above zero",
            ));
        }
        if entry.context_window == Some(0) {
            return Err(ConfigError::invalid(
                key("context_window"),
                "a number of tokens above zero",
            ));
        }
        let encoding = match entry.encoding.as_deref() {
            None => None,
            Some(name) => Some(Encoding::parse(name).ok_or_else(|| {
                ConfigError::invalid(key("encoding"), "\"o200k_base\" or \"cl100k_base\"")
            })?),
        };
        models.push(ModelOverride {
            glob: glob.compile_matcher(),
            max_context_tokens: entry.max_context_tokens,
            context_window: entry.context_window,
            encoding,
        });
    }
    Ok(CompressionConfig {
        enabled: raw.enabled,
        max_context_tokens: raw.max_context_tokens,
        preserve_recent_messages: raw.preserve_recent_messages,
        ratio: raw.ratio,
        strategy,
        mode,
        summarizer_model,
        summarizer_timeout: raw.summarizer_timeout,
        summary_ttl: raw.summary_ttl,
        summary_max_ttl: raw.summary_max_ttl,
        block_size: raw.block_size,
        model_table,
        models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<CompressionConfig, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            compression: RawCompression,
        }
        let raw = toml::from_str::<Wrapper>(toml_text).map_err(|e| e.to_string())?;
        validate_compression(raw.compression).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_validate_and_match_the_default_config() {
        let validated = validate_compression(RawCompression::default()).expect("valid");
        assert_eq!(
            format!("{validated:?}"),
            format!("{:?}", CompressionConfig::default())
        );
        assert_eq!(validated.max_context_tokens, 35_000);
        assert_eq!(validated.preserve_recent_messages, 8);
        assert_eq!(validated.strategy, Strategy::Extractive);
        assert_eq!(validated.mode, Mode::Relevant);
    }

    #[test]
    fn a_full_section_parses() {
        let config = parse(
            r#"
            [compression]
            enabled = true
            max_context_tokens = 20000
            preserve_recent_messages = 6
            ratio = 0.25
            strategy = "summarize"
            mode = "stable"
            summarizer_model = "llama3.2:3b"
            summarizer_timeout = "5s"
            summary_ttl = "30m"
            summary_max_ttl = "12h"
            block_size = 4

            [[compression.model]]
            model = "llama3*"
            max_context_tokens = 6000
            context_window = 8192
            encoding = "cl100k_base"
            "#,
        )
        .expect("valid");
        assert_eq!(config.strategy, Strategy::Summarize);
        assert_eq!(config.mode, Mode::Stable);
        assert_eq!(config.summary_ttl, Duration::from_secs(1800));
        assert_eq!(config.models.len(), 1);
        assert!(config.models[0].glob.is_match("llama3.1:8b"));
        assert_eq!(config.models[0].encoding, Some(Encoding::Cl100kBase));
        assert_eq!(config.model_table.len(), ModelTable::shipped().len());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("ratio = 1.5", "compression.ratio:"),
            ("ratio = 0.0", "compression.ratio:"),
            ("max_context_tokens = 0", "compression.max_context_tokens:"),
            (
                "preserve_recent_messages = 0",
                "compression.preserve_recent_messages:",
            ),
            ("strategy = \"abstractive\"", "compression.strategy:"),
            ("strategy = \"summarize\"", "compression.summarizer_model:"),
            ("mode = \"recent\"", "compression.mode:"),
            ("summary_ttl = \"2d\"", "compression.summary_max_ttl:"),
            ("block_size = 0", "compression.block_size:"),
            (
                "models_file = \"/nonexistent/thrifty/models.toml\"",
                "compression.models_file:",
            ),
            (
                "[[compression.model]]\nmodel = \"a[\"",
                "compression.model[0].model:",
            ),
            (
                "[[compression.model]]\nmodel = \"x*\"\nencoding = \"p50k\"",
                "compression.model[0].encoding:",
            ),
        ] {
            let err = parse(&format!("[compression]\n{text}")).expect_err(text);
            assert!(err.starts_with(key), "{text}: {err}");
        }
        let err = parse("[compression]\nratios = 0.3").expect_err("unknown key");
        assert!(err.contains("ratios"), "{err}");
    }

    #[test]
    fn environment_overrides_apply() {
        let env = |name: &str| match name {
            "THRIFTY_MAX_CONTEXT_TOKENS" => Some("12000".to_owned()),
            "THRIFTY_PRESERVE_RECENT_MESSAGES" => Some("4".to_owned()),
            _ => None,
        };
        let mut raw = RawCompression::default();
        raw.apply_env(&env).expect("applies");
        assert_eq!(raw.max_context_tokens, 12_000);
        assert_eq!(raw.preserve_recent_messages, 4);

        let bad = |name: &str| (name == "THRIFTY_MAX_CONTEXT_TOKENS").then(|| "lots".to_owned());
        let err = RawCompression::default()
            .apply_env(&bad)
            .expect_err("rejects");
        assert!(
            err.to_string().starts_with("THRIFTY_MAX_CONTEXT_TOKENS:"),
            "{err}"
        );
    }
}
