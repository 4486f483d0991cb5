//! The scripted mix: every kind of request the ledger records, for two teams and a key without
//! one, in both wire formats, with a model that has no price.

use serde_json::{Value, json};

use super::prices::UNPRICED_MODEL;
use crate::common::dialect::Dialect;

/// Who sends a request: one of thrifty's configured keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Alpha,
    Beta,
    Solo,
}

impl Who {
    pub const ALL: [Who; 3] = [Who::Alpha, Who::Beta, Who::Solo];

    pub fn name(self) -> &'static str {
        match self {
            Who::Alpha => "alpha",
            Who::Beta => "beta",
            Who::Solo => "solo",
        }
    }

    pub fn team(self) -> Option<&'static str> {
        match self {
            Who::Alpha => Some("red"),
            Who::Beta => Some("blue"),
            Who::Solo => None,
        }
    }

    pub fn token(self) -> String {
        format!("sk-truth-{}", self.name())
    }
}

/// Where a step is sent: a dialect's chat, or OpenAI's Responses API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat(Dialect),
    Responses,
}

pub const OPENAI: Endpoint = Endpoint::Chat(Dialect::OpenAi);
pub const OLLAMA: Endpoint = Endpoint::Chat(Dialect::Ollama);

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat(dialect) => dialect.chat_path(),
            Endpoint::Responses => "/v1/responses",
        }
    }
}

/// What thrifty must do with a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Forwarded as sent and answered by the upstream.
    Miss,
    /// Forwarded as sent because the client turned the cache off.
    Bypass,
    /// Forwarded with a compressed prompt.
    Compressed,
    /// The upstream answered with an error.
    Error,
    /// Forwarded as sent and answered by an upstream that reported no usage.
    Unreported,
    /// Answered from the exact cache with the answer of the named step.
    ExactHit(&'static str),
    /// Answered from the semantic cache with the answer of the named step.
    SemanticHit(&'static str),
}

/// What to wait for after a step before the next one is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Nothing,
    /// The answer is stored in the exact cache.
    Stored,
    /// The answer is stored and its question is in the semantic index.
    Indexed,
}

pub struct Step {
    /// Sent as `x-thrifty-tags`, to find the step's raw record in the audit log.
    pub tag: &'static str,
    pub who: Who,
    pub endpoint: Endpoint,
    pub body: Value,
    pub headers: Vec<(&'static str, &'static str)>,
    pub kind: Kind,
    pub wait: Wait,
}

impl Step {
    fn new(tag: &'static str, who: Who, endpoint: Endpoint, body: Value, kind: Kind) -> Step {
        Step {
            tag,
            who,
            endpoint,
            body,
            headers: Vec::new(),
            kind,
            wait: Wait::Nothing,
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Step {
        self.headers.push((name, value));
        self
    }

    fn then(mut self, wait: Wait) -> Step {
        self.wait = wait;
        self
    }

    pub fn model(&self) -> &str {
        self.body["model"].as_str().unwrap_or_default()
    }

    pub fn streams(&self) -> bool {
        self.body["stream"].as_bool() == Some(true)
    }

    /// Whether the client asked for OpenAI's usage chunk.
    pub fn wants_usage(&self) -> bool {
        self.body["stream_options"]["include_usage"].as_bool() == Some(true)
    }
}

pub const GPT: &str = "gpt-4o-mini";
pub const LLAMA: &str = "llama3.2";

pub const SYSTEM: &str = "Be brief.";
/// The semantic pair: equal word counts and equal token counts (" do" and " can" are one
/// token each), so the fake would bill the paraphrase exactly what it billed the question and
/// thrifty's estimate (the recorded prompt plus the questions' token difference) is exact.
pub const QUESTION: &str = "How do I reset my password?";
pub const PARAPHRASE: &str = "How can I reset my password?";

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}], "stream": false})
}

fn ask_with_system(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": text}
    ], "stream": false})
}

fn streamed(mut body: Value, usage: bool) -> Value {
    body["stream"] = json!(true);
    if usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// A conversation long enough that forced compression condenses its old turns.
fn long_conversation() -> Value {
    let mut messages = vec![json!({"role": "system", "content": "You are a terse assistant."})];
    for i in 0..12 {
        messages.push(json!({"role": "user", "content": format!(
            "Question {i}: why did build step {i} fail with error E{i:04} in src/module_{i}.rs? {}",
            "The log shows a missing import and a stale lock file. ".repeat(8)
        )}));
        messages.push(json!({"role": "assistant", "content": format!(
            "Answer {i}: remove the lock file and add the import. {}",
            "Then run the build again and check the output. ".repeat(8)
        )}));
    }
    messages.push(json!({"role": "user", "content": "So what should I fix first?"}));
    json!({"model": GPT, "messages": messages, "stream": false})
}

/// The mix, in order. Without `semantic` the semantic cache is off and its steps are left out.
pub fn mix(semantic: bool) -> Vec<Step> {
    use Endpoint::Responses;
    use Who::{Alpha, Beta, Solo};
    let mut steps = vec![
        Step::new(
            "miss",
            Alpha,
            OPENAI,
            ask(GPT, "What is the capital of France?"),
            Kind::Miss,
        )
        .then(Wait::Stored),
        Step::new(
            "exact-hit",
            Alpha,
            OPENAI,
            ask(GPT, "What is the capital of France?"),
            Kind::ExactHit("miss"),
        ),
        Step::new(
            "other-team-miss",
            Beta,
            OPENAI,
            ask(GPT, "What is the capital of France?"),
            Kind::Miss,
        ),
        Step::new(
            "stream-with-usage",
            Alpha,
            OPENAI,
            streamed(
                ask(GPT, "Explain how photosynthesis works in green plants."),
                true,
            ),
            Kind::Miss,
        ),
        Step::new(
            "stream-without-usage",
            Alpha,
            OPENAI,
            streamed(
                ask(GPT, "List three prime numbers greater than ten."),
                false,
            ),
            Kind::Miss,
        )
        .then(Wait::Stored),
        Step::new(
            "stream-hit",
            Alpha,
            OPENAI,
            streamed(
                ask(GPT, "List three prime numbers greater than ten."),
                false,
            ),
            Kind::ExactHit("stream-without-usage"),
        ),
        Step::new(
            "compressed",
            Alpha,
            OPENAI,
            long_conversation(),
            Kind::Compressed,
        )
        .header("x-thrifty-compression", "force")
        .then(Wait::Stored),
        Step::new(
            "compressed-hit",
            Alpha,
            OPENAI,
            long_conversation(),
            Kind::ExactHit("compressed"),
        )
        .header("x-thrifty-compression", "force"),
        Step::new(
            "bypass",
            Alpha,
            OPENAI,
            ask(GPT, "Describe how castling works in chess."),
            Kind::Bypass,
        )
        .header("x-thrifty-cache", "off"),
        Step::new(
            "error",
            Beta,
            OPENAI,
            ask("fail-500", "Will this fail?"),
            Kind::Error,
        ),
        Step::new(
            "unpriced-miss",
            Solo,
            OPENAI,
            ask(UNPRICED_MODEL, "What causes the tides?"),
            Kind::Miss,
        )
        .then(Wait::Stored),
        Step::new(
            "unpriced-hit",
            Solo,
            OPENAI,
            ask(UNPRICED_MODEL, "What causes the tides?"),
            Kind::ExactHit("unpriced-miss"),
        ),
        Step::new(
            "ollama-miss",
            Beta,
            OLLAMA,
            ask(LLAMA, "Why do volcanoes erupt?"),
            Kind::Miss,
        )
        .then(Wait::Stored),
        Step::new(
            "ollama-hit",
            Beta,
            OLLAMA,
            ask(LLAMA, "Why do volcanoes erupt?"),
            Kind::ExactHit("ollama-miss"),
        ),
        Step::new(
            "ollama-stream",
            Alpha,
            OLLAMA,
            streamed(ask(LLAMA, "How does a rainbow form after rain?"), false),
            Kind::Miss,
        ),
        Step::new(
            "unreported-usage",
            Beta,
            OPENAI,
            streamed(ask("quiet-gpt", "Which planet has the most moons?"), false),
            Kind::Unreported,
        ),
        Step::new(
            "ollama-error",
            Alpha,
            OLLAMA,
            ask("context-overflow", "Read this whole book."),
            Kind::Error,
        ),
        Step::new(
            "responses-miss",
            Alpha,
            Responses,
            json!({"model": GPT, "instructions": SYSTEM, "input": "Name a primary colour."}),
            Kind::Miss,
        )
        .then(Wait::Stored),
        Step::new(
            "responses-hit",
            Alpha,
            Responses,
            json!({"model": GPT, "instructions": SYSTEM, "input": "Name a primary colour."}),
            Kind::ExactHit("responses-miss"),
        ),
        Step::new(
            "responses-stream",
            Beta,
            Responses,
            json!({"model": GPT, "stream": true,
                   "input": [{"role": "user", "content": "Why is the sea salty?"}]}),
            Kind::Miss,
        )
        .then(Wait::Stored),
        Step::new(
            "responses-stream-as-json",
            Beta,
            Responses,
            json!({"model": GPT, "stream": false,
                   "input": [{"role": "user", "content": "Why is the sea salty?"}]}),
            Kind::ExactHit("responses-stream"),
        ),
    ];
    if semantic {
        steps.extend([
            Step::new(
                "semantic-fill",
                Beta,
                OPENAI,
                ask_with_system(GPT, QUESTION),
                Kind::Miss,
            )
            .then(Wait::Indexed),
            Step::new(
                "semantic-hit",
                Beta,
                OPENAI,
                ask_with_system(GPT, PARAPHRASE),
                Kind::SemanticHit("semantic-fill"),
            ),
            Step::new(
                "ollama-semantic-fill",
                Solo,
                OLLAMA,
                ask_with_system(LLAMA, QUESTION),
                Kind::Miss,
            )
            .then(Wait::Indexed),
            Step::new(
                "ollama-semantic-hit",
                Solo,
                OLLAMA,
                ask_with_system(LLAMA, PARAPHRASE),
                Kind::SemanticHit("ollama-semantic-fill"),
            ),
        ]);
    }
    steps
}
