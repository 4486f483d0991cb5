//! What thrifty knows about models: context window and tokenizer, from a models
//! table (the shipped `config/models.toml`, or the file `compression.models_file`
//! names) that `[[compression.model]]` entries override.
//!
//! Windows are the model's own maximum. Ollama serves with a smaller `num_ctx`
//! unless told otherwise; an override with `context_window` describes that.
//! This room must not count tokens or touch requests.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use globset::GlobMatcher;
use serde::Deserialize;

use crate::config::{CompressionConfig, ModelOverride};
use crate::table::{self, TableError, glob};

use super::tokens::Encoding;

/// The file shipped in `config/models.toml`, built in as the default.
const SHIPPED: &str = include_str!("../../config/models.toml");

/// Parsed once; `the_shipped_table_parses_and_keeps_its_order` keeps it valid.
static SHIPPED_TABLE: LazyLock<Arc<ModelTable>> = LazyLock::new(|| {
    Arc::new(
        ModelTable::parse(SHIPPED, "built-in models.toml")
            .unwrap_or_else(|e| panic!("the shipped config/models.toml is invalid: {e}")),
    )
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    model: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    model: String,
    context_window: u64,
    encoding: String,
}

/// One row: the models a glob matches, their window and tokenizer.
#[derive(Clone, Debug)]
struct Entry {
    glob: GlobMatcher,
    context_window: u64,
    encoding: Encoding,
}

/// The validated models table, in file order: the first matching entry wins.
#[derive(Clone)]
pub struct ModelTable {
    entries: Vec<Entry>,
    origin: String,
}

impl std::fmt::Debug for ModelTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTable")
            .field("origin", &self.origin)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl ModelTable {
    /// The shipped `config/models.toml`.
    pub fn shipped() -> Arc<ModelTable> {
        SHIPPED_TABLE.clone()
    }

    /// A table file that replaces the shipped one.
    pub fn load(path: &Path) -> Result<ModelTable, TableError> {
        table::load(path, ModelTable::parse)
    }

    pub fn from_toml_str(text: &str) -> Result<ModelTable, TableError> {
        ModelTable::parse(text, "models")
    }

    fn parse(text: &str, origin: &str) -> Result<ModelTable, TableError> {
        let invalid = |message: String| TableError::invalid(origin, message);
        let raw: RawFile = table::raw(text, origin)?;
        let mut entries = Vec::with_capacity(raw.model.len());
        for (i, entry) in raw.model.into_iter().enumerate() {
            let bad = |field: &str, expected: &str| {
                invalid(format!(
                    "model[{i}] ({}): {field}: expected {expected}",
                    entry.model
                ))
            };
            let glob =
                glob(&entry.model).ok_or_else(|| bad("model", "a non-empty model name or glob"))?;
            if entry.context_window == 0 {
                return Err(bad("context_window", "a number of tokens above zero"));
            }
            let encoding = Encoding::parse(&entry.encoding)
                .ok_or_else(|| bad("encoding", "\"o200k_base\" or \"cl100k_base\""))?;
            entries.push(Entry {
                glob,
                context_window: entry.context_window,
                encoding,
            });
        }
        Ok(ModelTable {
            entries,
            origin: origin.to_owned(),
        })
    }

    /// The first matching entry for a model: its context window and encoding.
    pub fn get(&self, model: &str) -> Option<(u64, Encoding)> {
        self.get_plain(&normalize(model))
    }

    /// [`ModelTable::get`] for a name already in the table's form ([`normalize`]).
    fn get_plain(&self, plain: &str) -> Option<(u64, Encoding)> {
        self.entries
            .iter()
            .find(|e| e.glob.is_match(plain))
            .map(|e| (e.context_window, e.encoding))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// When a request names no output limit, this share of a known window is kept for the answer…
const DEFAULT_OUTPUT_SHARE: u64 = 8;
/// …but never more than this many tokens.
const DEFAULT_OUTPUT_CAP: u64 = 4_096;

/// The limits compression works with for one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelLimits {
    pub max_context_tokens: u64,
    pub context_window: Option<u64>,
    pub encoding: Encoding,
}

impl ModelLimits {
    /// The prompt budget: `max_context_tokens`, and never more than the window
    /// minus the tokens the answer may need when the window is known.
    pub fn budget(&self, requested_output_tokens: Option<u64>) -> usize {
        let mut budget = self.max_context_tokens;
        if let Some(window) = self.context_window {
            let output = requested_output_tokens
                .unwrap_or_else(|| (window / DEFAULT_OUTPUT_SHARE).min(DEFAULT_OUTPUT_CAP));
            budget = budget.min(window.saturating_sub(output));
        }
        usize::try_from(budget).unwrap_or(usize::MAX)
    }
}

/// The shipped table's entry for a model, if any: its context window and encoding.
/// Requests use [`limits`], which applies the configured table and overrides.
#[cfg(test)]
fn known(model: &str) -> Option<(u64, Encoding)> {
    SHIPPED_TABLE.get(model)
}

/// The limits for a model: the first matching override, then the table, then the defaults.
pub fn limits(config: &CompressionConfig, model: &str) -> ModelLimits {
    let plain = normalize(model);
    let table = config.model_table.get_plain(&plain);
    let mut limits = ModelLimits {
        max_context_tokens: config.max_context_tokens,
        context_window: table.map(|(window, _)| window),
        encoding: table.map_or(Encoding::Cl100kBase, |(_, encoding)| encoding),
    };
    // An override matches the name as sent or as the table reads it (lower case, without a
    // `namespace/` part or an `ft:` prefix), so `llama3*` also covers `library/llama3:8b`.
    let matches = |o: &&ModelOverride| o.glob.is_match(model) || o.glob.is_match(&plain);
    if let Some(o) = config.models.iter().find(matches) {
        limits.max_context_tokens = o.max_context_tokens.unwrap_or(limits.max_context_tokens);
        limits.context_window = o.context_window.or(limits.context_window);
        limits.encoding = o.encoding.unwrap_or(limits.encoding);
    }
    limits
}

/// A model name as the table reads it: lower case, without an `ft:` prefix or a
/// `namespace/` part.
fn normalize(model: &str) -> String {
    let name = model.strip_prefix("ft:").unwrap_or(model);
    let name = name.rsplit('/').next().unwrap_or(name);
    name.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawCompression, RawCompressionModel, validate_compression};

    use Encoding::{Cl100kBase as CL100K, O200kBase as O200K};

    fn with_overrides(models: Vec<RawCompressionModel>) -> CompressionConfig {
        let raw = RawCompression {
            models,
            ..RawCompression::default()
        };
        validate_compression(raw).expect("valid")
    }

    fn entry(model: &str, window: Option<u64>, encoding: Option<&str>) -> RawCompressionModel {
        RawCompressionModel {
            model: model.to_owned(),
            max_context_tokens: None,
            context_window: window,
            encoding: encoding.map(str::to_owned),
        }
    }

    #[test]
    fn the_shipped_table_parses_and_keeps_its_order() {
        let table = ModelTable::from_toml_str(SHIPPED).expect("config/models.toml is valid");
        assert_eq!(table.len(), ModelTable::shipped().len());
        assert!(table.len() >= 50, "{}", table.len());
        // First match wins: the specific entries sit above the broad ones.
        assert_eq!(table.get("gpt-5-chat-latest"), Some((128_000, O200K)));
        assert_eq!(table.get("gpt-5"), Some((400_000, O200K)));
        assert_eq!(table.get("gpt-4-32k-0613"), Some((32_768, CL100K)));
        assert_eq!(table.get("gpt-4"), Some((8_192, CL100K)));
        assert_eq!(
            format!("{:?}", ModelTable::shipped()),
            format!(
                "ModelTable {{ origin: \"built-in models.toml\", entries: {} }}",
                table.len()
            )
        );
    }

    #[test]
    fn openai_families_get_their_encoding_and_window() {
        for (model, window, encoding) in [
            ("gpt-4o", 128_000, O200K),
            ("gpt-4o-mini-2024-07-18", 128_000, O200K),
            ("gpt-4.1-nano", 1_047_576, O200K),
            ("o1-mini", 128_000, O200K),
            ("o3-mini", 200_000, O200K),
            ("o4-mini-2025-04-16", 200_000, O200K),
            ("gpt-5-mini", 400_000, O200K),
            ("gpt-5-chat-latest", 128_000, O200K),
            ("ft:gpt-4o-mini:acme::abc", 128_000, O200K),
            ("gpt-4-turbo", 128_000, CL100K),
            ("gpt-4-0613", 8_192, CL100K),
            ("gpt-3.5-turbo", 16_385, CL100K),
        ] {
            assert_eq!(known(model), Some((window, encoding)), "{model}");
        }
    }

    #[test]
    fn ollama_tags_and_namespaces_match() {
        for (model, window) in [
            ("llama3.1:8b", 131_072),
            ("llama3:8b-instruct-q4_0", 8_192),
            ("library/llama3.2", 131_072),
            ("qwen2.5:7b", 32_768),
            ("qwen2.5-coder:14b", 32_768),
            ("qwen3:8b", 40_960),
            ("mistral:7b", 32_768),
            ("mistral-nemo:latest", 131_072),
            ("gemma2:9b", 8_192),
            ("gemma3:1b", 32_768),
            ("gemma3:12b", 131_072),
            ("phi3:mini", 4_096),
            ("phi3:mini-128k", 131_072),
            ("phi3:medium-128k-instruct", 131_072),
            ("phi3:medium", 4_096),
            ("phi4:14b", 16_384),
            ("deepseek-r1:7b", 131_072),
            ("Qwen3:4B", 40_960),
        ] {
            assert_eq!(known(model).map(|k| k.0), Some(window), "{model}");
            assert_eq!(known(model).map(|k| k.1), Some(CL100K), "{model}");
        }
        assert_eq!(known("my-own-model"), None);
    }

    #[test]
    fn globs_match_the_whole_normalized_name() {
        let table = ModelTable::from_toml_str(
            r#"
            model = [
                { model = "exact", context_window = 1_000, encoding = "o200k_base" },
                { model = "acme-{small,large}*", context_window = 2_000, encoding = "cl100k_base" },
            ]
            "#,
        )
        .expect("valid");
        assert_eq!(table.get("exact"), Some((1_000, O200K)));
        assert_eq!(table.get("team/EXACT"), Some((1_000, O200K)));
        assert_eq!(table.get("exactly"), None);
        assert_eq!(table.get("acme-large:q4"), Some((2_000, CL100K)));
        assert_eq!(table.get("acme-medium"), None);
    }

    #[test]
    fn a_bad_table_names_the_entry_and_field() {
        for (text, expected) in [
            (
                r#"model = [{ model = "", context_window = 1, encoding = "o200k_base" }]"#,
                "models: model[0] (): model: expected",
            ),
            (
                r#"model = [{ model = "m", context_window = 0, encoding = "o200k_base" }]"#,
                "model[0] (m): context_window: expected",
            ),
            (
                r#"model = [{ model = "m", context_window = 1, encoding = "p50k_base" }]"#,
                "model[0] (m): encoding: expected",
            ),
            (
                r#"model = [{ model = "m", context_window = 1, encoding = "o200k_base", window = 2 }]"#,
                "window",
            ),
            (
                r#"model = [{ model = "m", encoding = "o200k_base" }]"#,
                "context_window",
            ),
        ] {
            let err = ModelTable::from_toml_str(text).expect_err(text);
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn budget_is_the_smaller_of_the_cap_and_the_window_left_for_output() {
        let config = CompressionConfig::default();
        let gpt4o = limits(&config, "gpt-4o");
        assert_eq!(gpt4o.budget(None), 35_000);
        assert_eq!(gpt4o.budget(Some(100_000)), 28_000);
        let llama3 = limits(&config, "llama3:8b");
        assert_eq!(llama3.budget(Some(1_000)), 7_192);
        assert_eq!(llama3.budget(None), 8_192 - 1_024);
    }

    #[test]
    fn an_unknown_model_is_counted_with_cl100k_base_and_has_no_window() {
        let config = CompressionConfig::default();
        let unknown = limits(&config, "acme-large");
        assert_eq!(known("acme-large"), None);
        assert_eq!(unknown.context_window, None);
        assert_eq!(unknown.encoding, CL100K);
        assert_eq!(unknown.max_context_tokens, 35_000);
        assert_eq!(unknown.budget(Some(1_000_000)), 35_000);
    }

    #[test]
    fn a_config_entry_overrides_a_shipped_one_and_adds_new_ones() {
        let config = with_overrides(vec![
            entry("gpt-4o-mini*", Some(64_000), Some("cl100k_base")),
            entry("acme-large*", Some(16_384), None),
        ]);
        assert_eq!(known("gpt-4o-mini"), Some((128_000, O200K)));
        let mini = limits(&config, "gpt-4o-mini");
        assert_eq!(mini.context_window, Some(64_000));
        assert_eq!(mini.encoding, CL100K);
        // Other entries of the shipped table are untouched.
        let gpt4o = limits(&config, "gpt-4o");
        assert_eq!(gpt4o.context_window, Some(128_000));
        assert_eq!(gpt4o.encoding, O200K);
        // A model the table does not know gets the entry's window and the fallback encoding.
        let acme = limits(&config, "acme-large-2");
        assert_eq!(acme.context_window, Some(16_384));
        assert_eq!(acme.encoding, CL100K);
        // A field the entry leaves out comes from the table.
        let config = with_overrides(vec![entry("gpt-4.1*", None, None)]);
        let l = limits(&config, "gpt-4.1-mini");
        assert_eq!((l.context_window, l.encoding), (Some(1_047_576), O200K));
    }

    #[test]
    fn overrides_win_over_the_table() {
        let mut raw = RawCompression::default();
        raw.models.push(RawCompressionModel {
            model: "llama3.1*".to_owned(),
            max_context_tokens: Some(6_000),
            context_window: Some(4_096),
            encoding: Some("o200k_base".to_owned()),
        });
        let config = validate_compression(raw).expect("valid");
        let l = limits(&config, "llama3.1:8b");
        assert_eq!(l.max_context_tokens, 6_000);
        assert_eq!(l.context_window, Some(4_096));
        assert_eq!(l.encoding, O200K);
        assert_eq!(l.budget(Some(96)), 4_000);
        assert_eq!(limits(&config, "llama3.2").max_context_tokens, 35_000);
        // The name as the table reads it matches too.
        assert_eq!(
            limits(&config, "library/Llama3.1:8b").max_context_tokens,
            6_000
        );
    }

    #[test]
    fn models_file_replaces_the_shipped_table() {
        let path = std::env::temp_dir().join(format!(
            "thrifty-models-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(
            &path,
            r#"model = [{ model = "house-model*", context_window = 10_000, encoding = "o200k_base" }]"#,
        )
        .expect("writes");
        let raw = RawCompression {
            models_file: Some(path.clone()),
            ..RawCompression::default()
        };
        let config = validate_compression(raw);
        let _ = std::fs::remove_file(&path);
        let config = config.expect("valid");
        let house = limits(&config, "house-model:7b");
        assert_eq!(
            (house.context_window, house.encoding),
            (Some(10_000), O200K)
        );
        assert_eq!(house.budget(Some(2_000)), 8_000);
        // The shipped entries are gone with the shipped table.
        let gpt4o = limits(&config, "gpt-4o");
        assert_eq!((gpt4o.context_window, gpt4o.encoding), (None, CL100K));
    }
}
