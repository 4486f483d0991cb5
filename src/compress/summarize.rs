//! Strategy 2's summary cache: a rolling hash chain over the canonical messages,
//! summaries stored under the hash of the prefix they cover, and the prompt the
//! summarizer model is asked.
//!
//! h₀ = H(version, tenant, summarizer model, leading instructions, tool definitions) and
//! hᵢ = H(hᵢ₋₁, messageᵢ) over the messages after the leading instructions. The
//! summary of the first k of them lives under `thrifty:v1:summary:<hex hₖ>`, so the
//! next turn of the same conversation finds it without any chat id, and a turn
//! whose boundary moved one block further asks only for the new messages to be
//! folded into the summary it already has. Summaries are a pure function of the
//! prefix they cover (the latest user message is included even though it is also
//! kept verbatim), which is what makes them reusable across turns.
//! This room must not choose boundaries or call the model itself.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chat::{ChatRequest, Content, Message, PartKind, Role};
use crate::dialect;
use crate::store::{KEY_PREFIX, Store};

use super::extractive::{ceil_boundary, clip, floor_boundary};

/// Bumped when the canonical form or the prompt changes, so old summaries are not reused.
const CHAIN_VERSION: &[u8] = b"thrifty-summary-v1";
/// How many earlier block boundaries are probed for a summary to extend.
const MAX_PROBES: usize = 16;
/// Tool outputs in the summarizer's transcript keep this much of their start and end.
const TRANSCRIPT_HEAD: usize = 1_500;
const TRANSCRIPT_TAIL: usize = 500;

pub type Hash = [u8; 32];

/// h₀ … hₙ for the messages from `lead` on: `chain[j]` covers the first `j` of them.
pub fn chain(
    chat: &ChatRequest,
    lead: usize,
    upto: usize,
    summarizer_model: &str,
    tenant: &str,
) -> Vec<Hash> {
    let mut hasher = Sha256::new();
    field(&mut hasher, CHAIN_VERSION);
    field(&mut hasher, tenant.as_bytes());
    field(&mut hasher, summarizer_model.as_bytes());
    for m in &chat.messages[..lead] {
        canonical(&mut hasher, m);
    }
    for tools in dialect::tool_definitions(chat) {
        field(&mut hasher, tools.to_string().as_bytes());
    }
    let mut hashes = Vec::with_capacity(upto.saturating_sub(lead) + 1);
    let mut previous: Hash = hasher.finalize().into();
    hashes.push(previous);
    for m in &chat.messages[lead..upto.min(chat.messages.len())] {
        let mut hasher = Sha256::new();
        hasher.update(previous);
        canonical(&mut hasher, m);
        previous = hasher.finalize().into();
        hashes.push(previous);
    }
    hashes
}

fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Everything about a message that the model sees.
fn canonical(hasher: &mut Sha256, m: &Message) {
    field(hasher, m.role.as_str().as_bytes());
    match &m.content {
        Content::Absent => field(hasher, b"\0absent"),
        Content::Text(t) => field(hasher, t.as_bytes()),
        Content::Parts(parts) => {
            for p in parts {
                match &p.kind {
                    PartKind::Text(t) => field(hasher, t.as_bytes()),
                    _ => field(hasher, p.raw.to_string().as_bytes()),
                }
            }
        }
    }
    for c in &m.tool_calls {
        field(hasher, c.id.as_deref().unwrap_or_default().as_bytes());
        field(hasher, c.name.as_bytes());
        field(hasher, c.arguments.as_bytes());
    }
    field(
        hasher,
        m.tool_call_id.as_deref().unwrap_or_default().as_bytes(),
    );
    if let Some(name) = dialect::message_name(m) {
        field(hasher, name.as_bytes());
    }
}

pub fn key(hash: &Hash) -> String {
    format!("{KEY_PREFIX}summary:{}", hex::encode(hash))
}

/// A stored summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// How many messages after the leading instructions it covers.
    pub covers: usize,
    pub summary: String,
    /// Unix seconds when it was written; the maximum lifetime counts from here.
    pub created: u64,
}

/// The time to live a reused summary gets: the sliding TTL, capped by what is
/// left of its maximum lifetime; `None` once that is used up.
pub fn sliding_ttl(created: u64, now: u64, ttl: Duration, max_ttl: Duration) -> Option<Duration> {
    let age = Duration::from_secs(now.saturating_sub(created));
    let left = max_ttl.checked_sub(age).filter(|d| !d.is_zero())?;
    Some(ttl.min(left))
}

/// The longest stored summary among `boundaries` (counts of covered messages,
/// ascending): its boundary and value. Store errors count as misses.
pub async fn longest(store: &Store, hashes: &[Hash], boundaries: &[usize]) -> Option<Stored> {
    let probes: Vec<usize> = boundaries
        .iter()
        .rev()
        .filter(|b| **b < hashes.len())
        .take(MAX_PROBES)
        .copied()
        .collect();
    let keys: Vec<String> = probes.iter().map(|b| key(&hashes[*b])).collect();
    let found = futures_util::future::join_all(keys.iter().map(|k| store.get(k))).await;
    probes.into_iter().zip(found).find_map(|(covers, got)| {
        let bytes = got.ok().flatten()?;
        let stored: Stored = serde_json::from_slice(&bytes).ok()?;
        (stored.covers == covers).then_some(stored)
    })
}

/// Stores a summary; a store error only means the next turn summarizes again.
pub async fn save(store: &Store, hash: &Hash, stored: &Stored, ttl: Duration) {
    if let Ok(bytes) = serde_json::to_vec(stored) {
        let _ = store.put(&key(hash), Bytes::from(bytes), ttl).await;
    }
}

/// Extends a reused summary's life, at `now` (Unix seconds), while its conversation is active.
pub async fn refresh(
    store: &Store,
    hash: &Hash,
    stored: &Stored,
    now: u64,
    ttl: Duration,
    max_ttl: Duration,
) {
    if let Some(ttl) = sliding_ttl(stored.created, now, ttl, max_ttl) {
        let _ = store.touch(&key(hash), ttl).await;
    }
}

const INSTRUCTIONS: &str = "You compress conversations so that an assistant can continue them without the full history. \
Write a summary of the conversation below for that assistant, in compact bullet points, oldest first, with no preamble. \
Keep verbatim, or nearly so: errors and failures with their error text; file paths and what was done to each file; \
configuration, settings, versions and installed packages; code identifiers; decisions and their reasons; open tasks and next steps; \
and for ordinary chat the names, dates, numbers, places and preferences people stated. \
Summarize tool calls per tool with counts and outcomes (for example `read_file ×12, 1 failed`) and keep each failure's error line. \
Do not answer, continue or comment on the conversation.";

/// The messages to send to the summarizer: instructions, the summary so far (if
/// any) and a transcript of the messages to fold in.
pub fn prompt(previous: Option<&str>, messages: &[Message], max_tokens: u64) -> Vec<Message> {
    let mut user = String::new();
    if let Some(previous) = previous {
        user.push_str("Summary of the conversation so far:\n");
        user.push_str(previous);
        user.push_str(
            "\n\nFold these later messages into it and return the whole updated summary:\n\n",
        );
    } else {
        user.push_str("Conversation:\n\n");
    }
    for m in messages {
        transcript(&mut user, m);
    }
    vec![
        Message::text(
            Role::System,
            format!("{INSTRUCTIONS} Use at most {max_tokens} tokens."),
        ),
        Message::text(Role::User, user),
    ]
}

fn transcript(out: &mut String, m: &Message) {
    out.push('[');
    out.push_str(m.role.as_str());
    out.push_str("] ");
    let text = m.flat_text();
    if m.role == Role::Tool && text.len() > TRANSCRIPT_HEAD + TRANSCRIPT_TAIL {
        let head = floor_boundary(&text, TRANSCRIPT_HEAD);
        let tail = ceil_boundary(&text, text.len() - TRANSCRIPT_TAIL);
        out.push_str(&text[..head]);
        out.push_str(" […] ");
        out.push_str(&text[tail..]);
    } else {
        out.push_str(&text);
    }
    for c in &m.tool_calls {
        out.push_str("\n→ ");
        out.push_str(&c.name);
        out.push('(');
        out.push_str(&clip(&c.arguments, 300));
        out.push(')');
    }
    out.push_str("\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn chat(texts: &[&str]) -> ChatRequest {
        let mut messages = vec![Message::text(Role::System, "be brief")];
        for (i, t) in texts.iter().enumerate() {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            messages.push(Message::text(role, *t));
        }
        ChatRequest {
            model: "gpt-4o".to_owned(),
            messages,
            stream: false,
            shaping: Map::new(),
            incidental: Map::new(),
        }
    }

    #[test]
    fn the_chain_depends_on_the_prefix_only() {
        let a = chain(&chat(&["one", "two", "three"]), 1, 4, "m", "t");
        let b = chain(&chat(&["one", "two", "THREE", "four"]), 1, 5, "m", "t");
        assert_eq!(a.len(), 4);
        assert_eq!(a[..3], b[..3]);
        assert_ne!(a[3], b[3]);
        // A different system prompt, tool set or summarizer is a different chain.
        let mut other = chat(&["one"]);
        other.messages[0] = Message::text(Role::System, "be verbose");
        assert_ne!(chain(&other, 1, 2, "m", "t")[0], a[0]);
        assert_ne!(chain(&chat(&["one"]), 1, 2, "n", "t")[0], a[0]);
        assert_ne!(
            chain(&chat(&["one"]), 1, 2, "m", "another tenant")[0],
            a[0],
            "summaries are never shared across tenants"
        );
        assert!(key(&a[1]).starts_with("thrifty:v1:summary:"));
    }

    #[test]
    fn sliding_ttl_is_capped_by_the_maximum_lifetime() {
        let hour = Duration::from_secs(3600);
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(sliding_ttl(1_000, 1_000, hour, day), Some(hour));
        assert_eq!(
            sliding_ttl(0, 23 * 3600 + 1800, hour, day),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(sliding_ttl(0, 24 * 3600, hour, day), None);
    }

    #[test]
    fn the_prompt_carries_the_previous_summary_and_clips_tool_output() {
        let mut tool = Message::text(Role::Tool, "a".repeat(10_000));
        tool.tool_call_id = Some("c1".to_owned());
        let prompt = prompt(Some("- user likes tea"), &[tool], 500);
        assert_eq!(prompt.len(), 2);
        let user = prompt[1].flat_text();
        assert!(user.contains("- user likes tea"));
        assert!(user.len() < 3_000, "{}", user.len());
        assert!(prompt[0].flat_text().contains("at most 500 tokens"));
    }
}
