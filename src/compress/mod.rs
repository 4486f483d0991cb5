//! Conversation compression: when a chat prompt exceeds its token budget, the old
//! turns are condensed and the recent ones are forwarded verbatim.
//!
//! ```text
//!  [system/developer… + condensed section] [old turns ……………] [latest user] [last N messages]
//!          kept                             └─ condensed ─┘       kept           kept
//! ```
//!
//! The budget is `max_context_tokens` (per-model overrides first), and never more
//! than the model's context window minus the tokens the answer may need when the
//! window is known. Two modes choose what is condensed and what survives of it:
//! - `relevant` condenses every turn outside the recent window, and keeps verbatim,
//!   with speaker and session, the excerpts most relevant to the latest user message
//!   (BM25 against its words, a message's reply sharing its score), then the facts
//!   every answer needs (errors, paths, decisions, names, dates, numbers), within
//!   `ratio` of what it replaces and the room the budget leaves;
//! - `stable` moves the boundary in steps of `block_size` messages and keeps key
//!   points that do not depend on the question, so consecutive turns send an identical
//!   prefix: providers' prompt caches keep hitting and cached summaries get reused
//!   (the summarize strategy always plans this way).
//!
//! **Architecture Invariant:** whatever reaches the upstream is a valid request:
//! - system and developer messages stay verbatim, in order (one of them may carry the
//!   condensed section after its own text);
//! - the last `preserve_recent_messages` messages stay verbatim (a tool call and its
//!   results are one unit, so the window widens to the start of a unit);
//! - the latest user message is never altered or dropped;
//! - an assistant message with `tool_calls` and its tool results are condensed or
//!   kept together: no orphaned result and no call without its result;
//! - the condensed part never puts two user or two assistant messages in a row, and
//!   the conversation after the instructions opens with a user turn if it did before.
//!
//! Where the condensed part goes (`placement`): strict chat templates (Mistral's,
//! Gemma's) reject repeated roles and a conversation opened by the assistant, and
//! some reject a `system` message, so one is never added. When the first kept turn
//! is the assistant's, the condensed part is a user message before it; when it is a
//! user's, a delimited section at the end of the last leading instruction message, or,
//! without instructions, a user message followed by the assistant's "Noted.". The
//! section's header says it is a record of the conversation, not instructions.
//!
//! If the protected part alone exceeds the budget, the longest older tool outputs
//! inside it are shortened first, then the latest ones, then other long messages
//! (never instructions or the latest user message), and the outcome says the
//! budget was not met. This room must not know wire JSON or call upstreams: the
//! summarizer is handed in by the pipeline.
//!
//! The rooms: `compressor` is the door (count, plan, condense, place, record);
//! `plan` picks the cut; `strategy` writes the condensed text with [`extractive`]
//! (relevance scoring in its `relevance`, each message's analysis kept across turns in
//! its `memo`) or a [`summarize`]d, cached summary;
//! `placement` splices it in; `shorten` is the last resort inside the protected part;
//! `summarizer` is the model the pipeline hands in for summaries;
//! [`tokens`] counts messages in the encoding [`models`] finds for the model (the models
//! table itself is configuration, `crate::config::ModelTable`), and `bpe` and `pieces`
//! count text exactly without tiktoken's regular expressions; `stats` keeps the totals;
//! `outcome` is what the caller asks and gets back; [`eval`] and [`synthetic`] measure
//! it all off the request path.

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
mod summarizer;
pub mod synthetic;
#[cfg(test)]
mod tests;
pub mod tokens;

pub use compressor::Compressor;
#[cfg(test)]
pub(crate) use invariants::check_invariants;
pub use models::ModelLimits;
pub use outcome::{Force, Outcome, SummaryUse};
pub use summarizer::{Summarizer, SummaryFuture};
pub use tokens::{Counts, TokenCounter};

pub use crate::config::Encoding;
