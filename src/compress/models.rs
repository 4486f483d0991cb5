//! What thrifty knows about models: context window and tokenizer, from a built-in
//! table that `[[compression.model]]` entries override.
//!
//! Windows are the model's own maximum. Ollama serves with a smaller `num_ctx`
//! unless told otherwise; an override with `context_window` describes that.
//! This room must not count tokens or touch requests.

use crate::config::CompressionConfig;

use super::tokens::Encoding;

use Encoding::{Cl100kBase as CL100K, O200kBase as O200K};

/// Built-in models, most specific pattern first; `*` matches any run of characters.
/// Names are compared in lower case after any `namespace/` and `ft:` prefix.
const TABLE: &[(&str, u64, Encoding)] = &[
    // OpenAI, o200k_base.
    ("gpt-5-chat*", 128_000, O200K),
    ("gpt-5*", 400_000, O200K),
    ("gpt-4.1*", 1_047_576, O200K),
    ("gpt-4.5*", 128_000, O200K),
    ("chatgpt-4o*", 128_000, O200K),
    ("gpt-4o*", 128_000, O200K),
    ("o1-mini*", 128_000, O200K),
    ("o1-preview*", 128_000, O200K),
    ("o1*", 200_000, O200K),
    ("o3*", 200_000, O200K),
    ("o4*", 200_000, O200K),
    ("codex-mini*", 200_000, O200K),
    ("gpt-oss*", 131_072, O200K),
    // OpenAI, cl100k_base.
    ("gpt-4-turbo*", 128_000, CL100K),
    ("gpt-4-0125*", 128_000, CL100K),
    ("gpt-4-1106*", 128_000, CL100K),
    ("gpt-4-32k*", 32_768, CL100K),
    ("gpt-4*", 8_192, CL100K),
    ("gpt-3.5-turbo-instruct*", 4_096, CL100K),
    ("gpt-3.5*", 16_385, CL100K),
    ("gpt-35-turbo*", 16_385, CL100K),
    // Ollama library models, counted with cl100k_base as an approximation.
    ("llama3.1*", 131_072, CL100K),
    ("llama3.2*", 131_072, CL100K),
    ("llama3.3*", 131_072, CL100K),
    ("llama3*", 8_192, CL100K),
    ("llama2*", 4_096, CL100K),
    ("codellama*", 16_384, CL100K),
    ("qwen3-coder*", 262_144, CL100K),
    ("qwen3*", 40_960, CL100K),
    ("qwq*", 40_960, CL100K),
    ("qwen2.5*", 32_768, CL100K),
    ("qwen2*", 32_768, CL100K),
    ("mistral-nemo*", 131_072, CL100K),
    ("mistral-small3*", 131_072, CL100K),
    ("mistral-small*", 32_768, CL100K),
    ("mistral-large*", 131_072, CL100K),
    ("mistral*", 32_768, CL100K),
    ("mixtral*", 32_768, CL100K),
    ("devstral*", 131_072, CL100K),
    ("gemma3:1b*", 32_768, CL100K),
    ("gemma3:270m*", 32_768, CL100K),
    ("gemma3n*", 32_768, CL100K),
    ("gemma3*", 131_072, CL100K),
    ("gemma2*", 8_192, CL100K),
    ("gemma*", 8_192, CL100K),
    ("phi4-mini*", 131_072, CL100K),
    ("phi4-reasoning*", 32_768, CL100K),
    ("phi4*", 16_384, CL100K),
    ("phi3.5*", 131_072, CL100K),
    ("phi3*128k*", 131_072, CL100K),
    ("phi3*", 4_096, CL100K),
    ("deepseek-r1*", 131_072, CL100K),
    ("deepseek-v3*", 163_840, CL100K),
    ("deepseek-coder-v2*", 163_840, CL100K),
    ("deepseek-coder*", 16_384, CL100K),
    ("command-r*", 131_072, CL100K),
];

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

/// The built-in entry for a model, if any: its context window and encoding.
pub fn known(model: &str) -> Option<(u64, Encoding)> {
    let name = normalize(model);
    TABLE
        .iter()
        .find(|(pattern, _, _)| wildcard(pattern, &name))
        .map(|(_, window, encoding)| (*window, *encoding))
}

/// The limits for a model: the first matching override, then the table, then the defaults.
pub fn limits(config: &CompressionConfig, model: &str) -> ModelLimits {
    let table = known(model);
    let mut limits = ModelLimits {
        max_context_tokens: config.max_context_tokens,
        context_window: table.map(|(window, _)| window),
        encoding: table.map_or(Encoding::Cl100kBase, |(_, encoding)| encoding),
    };
    if let Some(o) = config.models.iter().find(|o| o.glob.is_match(model)) {
        limits.max_context_tokens = o.max_context_tokens.unwrap_or(limits.max_context_tokens);
        limits.context_window = o.context_window.or(limits.context_window);
        limits.encoding = o.encoding.unwrap_or(limits.encoding);
    }
    limits
}

fn normalize(model: &str) -> String {
    let name = model.strip_prefix("ft:").unwrap_or(model);
    let name = name.rsplit('/').next().unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Matches `pattern`, where `*` stands for any run of characters, against all of `name`.
fn wildcard(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let Some(first) = pieces.next() else {
        return name.is_empty();
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*` at all: the whole name must match.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawCompression, RawCompressionModel, validate_compression};

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
            ("phi4:14b", 16_384),
            ("deepseek-r1:7b", 131_072),
            ("Qwen3:4B", 40_960),
        ] {
            assert_eq!(known(model).map(|k| k.0), Some(window), "{model}");
            assert_eq!(known(model).map(|k| k.1), Some(CL100K), "{model}");
        }
        assert_eq!(known("my-own-model"), None);
        assert!(wildcard("phi3*128k*", "phi3:medium-128k-instruct"));
        assert!(!wildcard("phi3*128k*", "phi3:medium"));
        assert!(wildcard("exact", "exact"));
        assert!(!wildcard("exact", "exactly"));
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
        let unknown = limits(&config, "acme-large");
        assert_eq!(unknown.context_window, None);
        assert_eq!(unknown.encoding, CL100K);
        assert_eq!(unknown.budget(Some(1_000_000)), 35_000);
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
    }
}
