//! The analyses of messages already seen, kept across requests: a chat resends its old
//! messages with every turn, so each is analysed once ([`Analysis`]) and only the scoring
//! against the new question runs again. Keyed by a hash of the message's role, content
//! kind and text under a key random per process; an entry holds ranges into the text,
//! never text of its own, so even a colliding key could not put one client's words into
//! another's request (a mismatched length is analysed afresh).
//!
//! Bounded by [`MAX_BYTES`] of analyses, least recently used first out. An analysis with
//! stems takes about 2.5 times its text (1.2 MB for a 150-message, 117k-token prose chat),
//! so the bound holds the history of some fifty such chats.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use moka::policy::EvictionPolicy;

use crate::chat::{Content, Message};

use super::analysis::Analysis;
use super::text::text_of;

/// Bytes of analyses kept.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What the cache itself spends per entry besides the analysis (its key, the `Arc`, the
/// map's bookkeeping): so many tiny messages cannot take it past its bound.
const ENTRY_OVERHEAD: usize = 128;

/// Analyses of the messages seen, shared by every request; clones share them.
#[derive(Clone)]
pub struct Analyses {
    cache: moka::sync::Cache<u64, Arc<Analysis>>,
    keys: RandomState,
    /// Messages analysed because the cache did not hold them.
    analysed: Arc<AtomicU64>,
}

impl Default for Analyses {
    fn default() -> Self {
        Analyses::new()
    }
}

impl Analyses {
    pub fn new() -> Self {
        Analyses::bounded(MAX_BYTES)
    }

    /// A cache of at most `bytes` bytes of analyses.
    pub fn bounded(bytes: u64) -> Self {
        Analyses {
            cache: moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(|_, analysis: &Arc<Analysis>| {
                    u32::try_from(analysis.bytes() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
                })
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            keys: RandomState::new(),
            analysed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The analysis of `message`, with stems when `with_stems`, from the cache when its
    /// text was seen before (and analysed with stems, if they are asked for).
    pub fn of(&self, message: &Message, with_stems: bool) -> Arc<Analysis> {
        let text = text_of(message);
        let mut hasher = self.keys.build_hasher();
        message.role.as_str().hash(&mut hasher);
        matches!(message.content, Content::Text(_)).hash(&mut hasher);
        text.hash(&mut hasher);
        let key = hasher.finish();
        let cached = self.cache.get(&key);
        if let Some(analysis) = cached.filter(|a| a.fits(&text) && (a.with_stems() || !with_stems))
        {
            return analysis;
        }
        let analysis = Arc::new(Analysis::of(message, with_stems));
        self.analysed.fetch_add(1, Ordering::Relaxed);
        self.cache.insert(key, analysis.clone());
        analysis
    }

    /// How many messages were analysed because the cache did not hold them.
    pub fn analysed(&self) -> u64 {
        self.analysed.load(Ordering::Relaxed)
    }

    /// Bytes of analyses held, once pending evictions have run.
    pub fn bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// Analyses held, once pending evictions have run.
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;

    fn message(i: usize) -> Message {
        let text = format!(
            "[Session {i}, 2:15 pm on 3 May, 2023]\nMessage {i}: we walked to the lake with the \
             camera and talked about the marathon for {i} hours. "
        )
        .repeat(20);
        Message::text(Role::User, text)
    }

    #[test]
    fn the_cache_stays_within_its_bound_and_keeps_the_latest_messages() {
        const BOUND: u64 = 256 * 1024;
        let analyses = Analyses::bounded(BOUND);
        let first = analyses.of(&message(0), true);
        let messages = (4 * BOUND / first.bytes() as u64) as usize;
        for i in 1..messages {
            analyses.of(&message(i), true);
            assert!(analyses.bytes() <= BOUND, "{} after {i}", analyses.bytes());
        }
        assert!(analyses.bytes() > BOUND / 2, "{}", analyses.bytes());
        assert!(analyses.len() < messages as u64 / 2, "{}", analyses.len());
        // The latest message is answered from the cache; the first was dropped and is
        // analysed afresh.
        let latest = message(messages - 1);
        assert!(Arc::ptr_eq(
            &analyses.of(&latest, true),
            &analyses.of(&latest, true)
        ));
        assert!(!Arc::ptr_eq(&first, &analyses.of(&message(0), true)));
    }

    #[test]
    fn analyses_are_kept_per_role_and_text_and_made_again_for_stems() {
        let analyses = Analyses::new();
        let user = message(1);
        let assistant = Message::text(Role::Assistant, user.flat_text());
        let a = analyses.of(&user, true);
        let b = analyses.of(&assistant, true);
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &analyses.of(&user, true)));
        assert!(Arc::ptr_eq(&a, &analyses.of(&user, false)));
        assert_eq!(analyses.analysed(), 2);
        // Asked for stems, an analysis made without them is made again.
        let plain = analyses.of(&Message::text(Role::User, "No stems here, please."), false);
        let stemmed = analyses.of(&Message::text(Role::User, "No stems here, please."), true);
        assert!(!plain.with_stems() && stemmed.with_stems());
        assert_eq!(analyses.analysed(), 4);
    }
}
