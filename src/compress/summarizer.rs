//! The summarize strategy's model, as the pipeline hands it in: it writes a summary of
//! a prompt and says whose summaries they are. This room must not know how summaries are
//! stored or found.

use std::future::Future;
use std::pin::Pin;

use crate::chat::Message;

use super::conversations::Conversation;

/// What a summarizer call returns: the summary and the tokens it cost (prompt and completion).
pub type SummaryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(String, u64), String>> + Send + 'a>>;

/// A request's summarizer: writes its summaries and says whose they are. The pipeline
/// implements it by sending `prompt` as a chat request to the configured summarizer
/// model through thrifty's own routing.
pub trait Summarizer: Send + Sync {
    /// Answers the prompt (built by [`summarize::prompt`](super::summarize::prompt)) in at
    /// most about `max_tokens` tokens.
    fn summarize<'a>(&'a self, prompt: &'a [Message], max_tokens: u64) -> SummaryFuture<'a>;

    /// The tenant the summaries belong to: they are never reused across tenants.
    fn tenant(&self) -> &str {
        ""
    }

    /// The conversation the client named (`x-thrifty-chat-id`), to list the summaries under.
    fn conversation(&self) -> Option<&Conversation> {
        None
    }
}
