//! The two wire formats a client speaks to thrifty, and each one's paths.
//!
//! Suites add the requests they send in `impl` blocks of their own; the fake upstream adds the
//! answers it renders. Nothing here depends on the rest of `tests/common`, so the benchmarks can
//! mount it beside the fake.

/// The client-facing wire format of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Ollama,
}

pub const DIALECTS: [Dialect; 2] = [Dialect::OpenAi, Dialect::Ollama];

impl Dialect {
    /// The dialect's name as thrifty writes it in cache entries and savings records.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Ollama => "ollama",
        }
    }

    /// The chat path on thrifty, which is also its path on a same-dialect upstream.
    pub fn chat_path(self) -> &'static str {
        match self {
            Dialect::OpenAi => "/v1/chat/completions",
            Dialect::Ollama => "/api/chat",
        }
    }

    /// The legacy prompt path: OpenAI's completions, Ollama's generate.
    pub fn completion_path(self) -> &'static str {
        match self {
            Dialect::OpenAi => "/v1/completions",
            Dialect::Ollama => "/api/generate",
        }
    }

    /// The batch embedding path.
    pub fn embed_path(self) -> &'static str {
        match self {
            Dialect::OpenAi => "/v1/embeddings",
            Dialect::Ollama => "/api/embed",
        }
    }

    /// A passthrough `GET` that lists models.
    pub fn models_path(self) -> &'static str {
        match self {
            Dialect::OpenAi => "/v1/models",
            Dialect::Ollama => "/api/tags",
        }
    }
}
