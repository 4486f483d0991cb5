//! The limits compression works with for one model: the configured `[[compression.model]]`
//! overrides over the models table ([`crate::config::ModelTable`]), then the defaults.
//!
//! Windows are the model's own maximum. Ollama serves with a smaller `num_ctx`
//! unless told otherwise; an override with `context_window` describes that.
//! This room must not count tokens or touch requests.

use crate::config::models::normalize;
use crate::config::{CompressionConfig, Encoding, ModelOverride};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelTable;
    use crate::config::{RawCompression, RawCompressionModel, validate_compression};

    use Encoding::{Cl100kBase as CL100K, O200kBase as O200K};

    /// The shipped table's entry for a model, if any: its context window and encoding.
    fn known(model: &str) -> Option<(u64, Encoding)> {
        ModelTable::shipped().get(model)
    }

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
