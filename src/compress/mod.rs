//! Conversation compression: when a chat prompt exceeds its token budget, the old
//! turns are condensed into one message and the recent ones are forwarded verbatim.
//!
//! ```text
//!  [system/developer…] [old turns ……………………………] [latest user] [last N messages]
//!          kept        └─ condensed into one user ─┘      kept           kept
//!                         message (extractive or a cached, incremental summary)
//! ```
//!
//! The budget is `max_context_tokens` (per-model overrides first), and never more
//! than the model's context window minus the tokens the answer may need when the
//! window is known. The boundary of the condensed part moves in steps of
//! `block_size` messages, so consecutive turns send an identical compressed
//! prefix: providers' prompt caches keep hitting and cached summaries get reused.
//!
//! **Architecture Invariant:** whatever reaches the upstream is a valid request:
//! - system and developer messages stay verbatim, in order;
//! - the last `preserve_recent_messages` messages stay verbatim (a tool call and its
//!   results are one unit, so the window widens to the start of a unit);
//! - the latest user message is never altered or dropped;
//! - an assistant message with `tool_calls` and its tool results are condensed or
//!   kept together: no orphaned result and no call without its result;
//! - the condensed message has the `user` role and plain text content.
//!
//! Why `user` for the condensed turns: every chat template renders user turns,
//! while system-role support varies (Gemma's templates have no system role, some
//! Ollama templates honour a single system message, early o1 models rejected
//! `system`), and old tool output is not trusted enough to be given system-level
//! authority. Consecutive user messages are accepted by OpenAI and Ollama.
//!
//! If the protected part alone exceeds the budget, the longest older tool outputs
//! inside it are shortened first, then the latest ones, then other long messages
//! (never instructions or the latest user message), and the outcome says the
//! budget was not met. This room must not know wire JSON or call upstreams: the
//! summarizer is handed in by the pipeline.
//!
//! The rooms: `compressor` is the door (count, plan, condense, splice, record);
//! `plan` picks the cut; `strategy` writes the condensed message with
//! [`extractive`] or a [`summarize`]d, cached summary; `shorten` is the last resort
//! inside the protected part; [`tokens`] counts messages with [`models`]' encodings,
//! and `bpe` and `pieces` count text exactly without tiktoken's regular
//! expressions; `stats` keeps the totals; `outcome` is what the caller asks and gets
//! back; [`eval`] and [`synthetic`] measure it all off the request path.

mod bpe;
mod compressor;
pub mod conversations;
pub mod eval;
pub mod extractive;
#[cfg(test)]
mod invariants;
pub mod models;
mod outcome;
mod pieces;
mod placement;
mod plan;
mod shorten;
mod stats;
mod strategy;
pub mod summarize;
pub mod synthetic;
#[cfg(test)]
mod tests;
pub mod tokens;

pub use compressor::Compressor;
#[cfg(test)]
pub(crate) use invariants::check_invariants;
pub use models::ModelLimits;
pub use outcome::{Force, Outcome, SummaryUse};
pub use summarize::{Summarizer, SummaryFuture};
pub use tokens::{Counts, Encoding, TokenCounter};
