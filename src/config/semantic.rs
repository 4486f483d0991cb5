//! `[semantic]`: the semantic cache's model, threshold, guard, serving mode and index bounds.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Env};

/// Threads one inference may use unless `semantic.threads` says otherwise (README, "What the
/// semantic stage costs", has the measurements behind the default).
pub const DEFAULT_THREADS: usize = 1;

/// Model workers unless `semantic.workers` says otherwise: one per two cores, one to four.
/// Each holds its own copy of the model (about 70 MB); on two cores one worker leaves the
/// other core to the requests.
pub fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    (cores / 2).clamp(1, 4)
}

/// The most model workers a config may ask for.
const MAX_WORKERS: usize = 64;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSemantic {
    pub enabled: bool,
    /// Directory holding model.onnx, the tokenizer files and libonnxruntime.so.
    pub model_dir: Option<PathBuf>,
    pub threshold: f32,
    pub guard: bool,
    pub context: ContextRule,
    pub window_messages: usize,
    pub max_entries: usize,
    pub max_entries_per_partition: usize,
    pub ann_above: usize,
    /// Longest last user message, in the model's word pieces, that is matched semantically.
    pub max_question_tokens: usize,
    /// How long a lookup may wait for the model to start on its question.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Questions waiting to be embedded and indexed after their answers.
    pub index_queue: usize,
    /// Threads one embedding may use.
    pub threads: usize,
    /// Model workers, each embedding one text at a time; unset: [`default_workers`].
    pub workers: Option<usize>,
    pub mode: SemanticMode,
    pub max_error: f64,
    pub explore: f64,
}

/// How a candidate that passes the guard is judged.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SemanticMode {
    /// Served only where outcomes verified on this deployment's traffic bound the error
    /// rate below `max_error`.
    #[default]
    Verified,
    /// Served above the fixed threshold, with no verification.
    Static,
}

/// Which earlier messages must match exactly for a semantic hit.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ContextRule {
    /// The whole conversation before the last user message.
    #[default]
    Prefix,
    /// Instructions plus the last `window_messages` messages before it.
    Window,
}

impl Default for RawSemantic {
    fn default() -> Self {
        RawSemantic {
            enabled: true,
            model_dir: None,
            threshold: 0.88,
            guard: true,
            context: ContextRule::Prefix,
            window_messages: 4,
            max_entries: 200_000,
            max_entries_per_partition: 50_000,
            ann_above: 100_000,
            max_question_tokens: 128,
            max_wait: Duration::from_millis(5),
            index_queue: 1024,
            threads: DEFAULT_THREADS,
            workers: None,
            mode: SemanticMode::Verified,
            max_error: 0.05,
            explore: 0.03,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SemanticConfig {
    pub enabled: bool,
    pub model_dir: PathBuf,
    pub threshold: f32,
    pub guard: bool,
    pub context: ContextRule,
    pub window_messages: usize,
    pub max_entries: usize,
    pub max_entries_per_partition: usize,
    pub ann_above: usize,
    pub max_question_tokens: usize,
    pub max_wait: Duration,
    pub index_queue: usize,
    pub threads: usize,
    /// Model workers (threads that each run their own copy of the model).
    pub workers: usize,
    pub mode: SemanticMode,
    /// The largest error rate verified serving accepts (its bound is on 1 - max_error).
    pub max_error: f64,
    /// The fraction of allowed semantic hits still verified upstream.
    pub explore: f64,
}

/// Where the fetch script puts the model when nothing else is said.
pub fn default_model_dir(env: &Env<'_>) -> PathBuf {
    if let Some(dir) = env("THRIFTY_EMBED_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = env("HOME").unwrap_or_else(|| ".".to_owned());
    PathBuf::from(home).join(".cache/thrifty/models/all-MiniLM-L6-v2")
}

pub fn validate_semantic(raw: RawSemantic, env: &Env<'_>) -> Result<SemanticConfig, ConfigError> {
    if !(0.0..=1.0).contains(&raw.threshold) {
        return Err(ConfigError::invalid(
            "semantic.threshold",
            "a cosine similarity between 0 and 1",
        ));
    }
    if raw.max_entries == 0 || raw.max_entries_per_partition == 0 {
        return Err(ConfigError::invalid(
            "semantic.max_entries",
            "sizes above zero",
        ));
    }
    if raw.max_question_tokens == 0 || raw.index_queue == 0 {
        return Err(ConfigError::invalid(
            "semantic.max_question_tokens",
            "max_question_tokens and index_queue above zero",
        ));
    }
    if !(raw.max_error > 0.0 && raw.max_error < 1.0) {
        return Err(ConfigError::invalid(
            "semantic.max_error",
            "an error rate above 0 and below 1",
        ));
    }
    if !(0.0..=1.0).contains(&raw.explore) {
        return Err(ConfigError::invalid(
            "semantic.explore",
            "a fraction between 0 and 1",
        ));
    }
    let workers = raw.workers.unwrap_or_else(default_workers);
    if !(1..=MAX_WORKERS).contains(&workers) {
        return Err(ConfigError::invalid(
            "semantic.workers",
            "a number of model workers from 1 to 64",
        ));
    }
    Ok(SemanticConfig {
        enabled: raw.enabled,
        model_dir: raw.model_dir.unwrap_or_else(|| default_model_dir(env)),
        threshold: raw.threshold,
        guard: raw.guard,
        context: raw.context,
        window_messages: raw.window_messages,
        max_entries: raw.max_entries,
        max_entries_per_partition: raw.max_entries_per_partition,
        ann_above: raw.ann_above,
        max_question_tokens: raw.max_question_tokens,
        max_wait: raw.max_wait,
        index_queue: raw.index_queue,
        threads: raw.threads.max(1),
        workers,
        mode: raw.mode,
        max_error: raw.max_error,
        explore: raw.explore,
    })
}
