//! Canonical request types that every pipeline stage works on.
//!
//! The dialect adapters translate wire JSON into these types and back; no other
//! module reads or writes wire JSON. Top-level request fields are split into
//! `shaping` (anything that can change the answer, including fields thrifty does
//! not know yet) and `incidental` (fields known not to change it), so the cache
//! key never has to guess.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The wire protocol a downstream client or an upstream server speaks. Serialized by the
/// name [`Dialect::as_str`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    OpenAi,
    Ollama,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Ollama => "ollama",
        }
    }
}

/// The kinds of call thrifty understands; everything else is passed through. Serialized by
/// the name [`Endpoint::as_str`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `/v1/chat/completions`, `/api/chat`.
    Chat,
    /// `/v1/completions`, `/api/generate`.
    Completion,
    /// `/v1/embeddings`, `/api/embed`.
    Embedding,
    /// `/api/embeddings`, Ollama's legacy single-prompt embedding call.
    LegacyEmbedding,
    /// `/v1/responses`, OpenAI's Responses API.
    Responses,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completion => "completion",
            Endpoint::Embedding => "embedding",
            Endpoint::LegacyEmbedding => "legacy_embedding",
            Endpoint::Responses => "responses",
        }
    }
}

/// A decoded call to one of the intercepted endpoints.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Chat(ChatRequest),
    /// A Responses API call: its `input` items as the conversation's messages, every other
    /// field (`instructions`, `previous_response_id`, ...) split like a chat's.
    Responses(ChatRequest),
    Completion(CompletionRequest),
    Embedding(EmbeddingRequest),
}

impl Call {
    pub fn model(&self) -> &str {
        match self {
            Call::Chat(c) | Call::Responses(c) => &c.model,
            Call::Completion(c) => &c.model,
            Call::Embedding(e) => &e.model,
        }
    }

    pub fn stream(&self) -> bool {
        match self {
            Call::Chat(c) | Call::Responses(c) => c.stream,
            Call::Completion(c) => c.stream,
            Call::Embedding(_) => false,
        }
    }

    /// The conversation of a chat or Responses call, which compression and the semantic
    /// cache work on.
    pub fn conversation(&self) -> Option<&ChatRequest> {
        match self {
            Call::Chat(c) | Call::Responses(c) => Some(c),
            Call::Completion(_) | Call::Embedding(_) => None,
        }
    }

    /// The same kind of call with another conversation (a compressed one).
    pub fn with_conversation(&self, conversation: ChatRequest) -> Call {
        match self {
            Call::Responses(_) => Call::Responses(conversation),
            _ => Call::Chat(conversation),
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        match self {
            Call::Chat(_) => Endpoint::Chat,
            Call::Responses(_) => Endpoint::Responses,
            Call::Completion(_) => Endpoint::Completion,
            Call::Embedding(e) if e.legacy => Endpoint::LegacyEmbedding,
            Call::Embedding(_) => Endpoint::Embedding,
        }
    }
}

/// A chat request: a model, a conversation and the parameters around it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    /// Whether the client asked for a streamed answer (SSE or NDJSON).
    pub stream: bool,
    /// Fields that can change the answer, in the order the client sent them.
    pub shaping: Map<String, Value>,
    /// Fields that cannot change the answer (`user`, `metadata`, `stream_options`, `keep_alive`, ...).
    pub incidental: Map<String, Value>,
}

/// A legacy text completion (`/v1/completions`) or an Ollama `/api/generate`.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    pub model: String,
    /// The prompt as sent: a string, or token arrays and lists for OpenAI.
    pub prompt: Value,
    pub stream: bool,
    pub shaping: Map<String, Value>,
    pub incidental: Map<String, Value>,
}

/// An embedding request, batch or single.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    /// True for Ollama's legacy `/api/embeddings` (`prompt` in, one `embedding` out).
    pub legacy: bool,
    pub shaping: Map<String, Value>,
    pub incidental: Map<String, Value>,
}

impl EmbeddingRequest {
    pub fn endpoint(&self) -> Endpoint {
        if self.legacy {
            Endpoint::LegacyEmbedding
        } else {
            Endpoint::Embedding
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum EmbeddingInput {
    /// Text inputs; `single` records that the client sent one bare string.
    Texts { texts: Vec<String>, single: bool },
    /// Token-id inputs; `single` records that the client sent one flat array.
    Tokens { ids: Vec<Vec<u64>>, single: bool },
}

/// One input of an embedding call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Piece<'a> {
    Text(&'a str),
    Ids(&'a [u64]),
}

impl Piece<'_> {
    /// Its share of a batch's token count: its length, at least 1.
    pub fn weight(self) -> u64 {
        let len = match self {
            Piece::Text(text) => text.chars().count(),
            Piece::Ids(ids) => ids.len(),
        };
        len.max(1) as u64
    }
}

impl EmbeddingInput {
    /// The inputs, in order.
    pub fn pieces(&self) -> Vec<Piece<'_>> {
        match self {
            EmbeddingInput::Texts { texts, .. } => {
                texts.iter().map(|t| Piece::Text(t.as_str())).collect()
            }
            EmbeddingInput::Tokens { ids, .. } => ids.iter().map(|i| Piece::Ids(i)).collect(),
        }
    }

    /// The inputs at `indexes`, in the same form; one input stays bare if it came bare.
    pub fn subset(&self, indexes: &[usize]) -> EmbeddingInput {
        let bare = |single: bool| single && indexes.len() == 1;
        match self {
            EmbeddingInput::Texts { texts, single } => EmbeddingInput::Texts {
                texts: indexes.iter().map(|&i| texts[i].clone()).collect(),
                single: bare(*single),
            },
            EmbeddingInput::Tokens { ids, single } => EmbeddingInput::Tokens {
                ids: indexes.iter().map(|&i| ids[i].clone()).collect(),
                single: bare(*single),
            },
        }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Content,
    pub tool_calls: Vec<ToolCall>,
    /// For tool results: the id of the call this answers (OpenAI) or the tool's name (Ollama).
    pub tool_call_id: Option<String>,
    /// Any other fields of the message (`name`, `refusal`, `thinking`, ...), kept as sent.
    pub extra: Map<String, Value>,
}

impl Message {
    /// A plain text message, as stages that write messages need.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Content::Text(text.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
            extra: Map::new(),
        }
    }

    /// The text of the message with non-text parts replaced by short placeholders.
    pub fn flat_text(&self) -> String {
        match &self.content {
            Content::Absent => String::new(),
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => {
                let mut out = String::new();
                for part in parts {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    match &part.kind {
                        PartKind::Text(t) => out.push_str(t),
                        other => out.push_str(&other.placeholder()),
                    }
                }
                out
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Other(String),
}

impl Role {
    pub fn parse(role: &str) -> Self {
        match role {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => Role::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Other(s) => s,
        }
    }

    /// System and developer messages carry instructions and are never condensed.
    pub fn is_instruction(&self) -> bool {
        matches!(self, Role::System | Role::Developer)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    /// No content field, or `null` (assistant messages that only call tools).
    Absent,
    Text(String),
    Parts(Vec<Part>),
}

/// One content part; `raw` is the part exactly as the client sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub kind: PartKind,
    pub raw: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PartKind {
    Text(String),
    Image,
    Audio,
    File(Option<String>),
    Other(String),
}

impl PartKind {
    /// The short stand-in used when a condensed turn cannot keep the part itself.
    pub fn placeholder(&self) -> String {
        match self {
            PartKind::Text(t) => t.clone(),
            PartKind::Image => "[image]".to_owned(),
            PartKind::Audio => "[audio]".to_owned(),
            PartKind::File(Some(name)) => format!("[file: {name}]"),
            PartKind::File(None) => "[file]".to_owned(),
            PartKind::Other(kind) => format!("[{kind}]"),
        }
    }
}

/// A function call requested by the assistant.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// Token counts of one side of the bill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// Prompt tokens, cached ones included.
    pub prompt: u64,
    /// The part of `prompt` billed at the provider's cached-input price.
    pub cached_prompt: u64,
    pub completion: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }

    pub fn is_zero(&self) -> bool {
        self.prompt == 0 && self.cached_prompt == 0 && self.completion == 0
    }
}

impl std::ops::AddAssign for Tokens {
    fn add_assign(&mut self, other: Tokens) {
        self.prompt += other.prompt;
        self.cached_prompt += other.cached_prompt;
        self.completion += other.completion;
    }
}
