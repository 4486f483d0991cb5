//! Exact tiktoken counts of one text, fast. Byte-pair encoding never merges across
//! the pieces tiktoken's pattern cuts a text into, so a text's count is the sum of
//! its pieces' counts. Plain text (ASCII and common symbols) is cut by hand
//! ([`pieces`](super::pieces)) and each short piece's count is remembered per thread,
//! which makes counting one pass over the bytes and a table lookup per piece; a
//! piece seen for the first time, and any segment with other characters, is encoded
//! by `tiktoken-rs` itself.
//!
//! The piece cache is keyed by a folded-multiply hash with a random key per thread
//! (as `foldhash` and `ahash` do), because the pieces come from clients. It holds
//! at most `MAX_ENTRIES` pieces per thread and encoding (under a megabyte) and
//! starts over when full. This room must not know messages: it counts strings.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

use tiktoken_rs::CoreBPE;

use super::pieces::{self, Pattern};
use crate::config::Encoding;

/// Pieces up to this many bytes are remembered: the key is the piece in two words.
const MAX_CACHED_PIECE: usize = 15;
/// Pieces remembered per thread and encoding before the cache starts over.
const MAX_ENTRIES: usize = 1 << 15;
/// The direct-mapped table in front of the map: 2048 slots of 16 bytes.
const RECENT_BITS: u32 = 11;
const RECENT_SLOTS: usize = 1 << RECENT_BITS;
/// Where a slot keeps the count: the top four bits, above the length.
const COUNT_SHIFT: u32 = 60;
const COUNT_BITS: u64 = 0xf << COUNT_SHIFT;

thread_local! {
    static CACHES: RefCell<[PieceCounts; 2]> =
        RefCell::new([PieceCounts::new(), PieceCounts::new()]);
}

/// `tiktoken-rs`'s tokenizer for `encoding`, built on first use.
pub(super) fn tokenizer(encoding: Encoding) -> &'static CoreBPE {
    match encoding {
        Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
    }
}

/// Builds both tokenizers now; the first build takes about half a second.
pub(super) fn warm_up() {
    for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
        tokenizer(encoding).encode_ordinary("warm up");
    }
}

/// The tokens of `text` in `encoding`, exactly as `encode_ordinary` counts them.
pub(super) fn count(encoding: Encoding, text: &str) -> usize {
    if text.is_ascii() {
        return count_plain(encoding, text.as_bytes());
    }
    pieces::plain_segments(text)
        .map(|(segment, plain)| {
            if plain {
                count_plain(encoding, segment.as_bytes())
            } else {
                tokenizer(encoding).encode_ordinary(segment).len()
            }
        })
        .sum()
}

fn count_plain(encoding: Encoding, text: &[u8]) -> usize {
    let (slot, pattern) = match encoding {
        Encoding::O200kBase => (0, Pattern::O200k),
        Encoding::Cl100kBase => (1, Pattern::Cl100k),
    };
    CACHES.with_borrow_mut(|caches| {
        let cache = &mut caches[slot];
        let mut start = 0;
        let mut total = 0;
        for end in pieces::piece_ends(text, pattern) {
            total += cache.count(encoding, text, start, end);
            start = end;
        }
        total
    })
}

/// Token counts of the short pieces one thread has seen, for one encoding: all of
/// them in a hash map, the most recent in a small direct-mapped table in front of
/// it that stays in the CPU's first-level cache.
struct PieceCounts {
    /// A piece's key with its count in the top four bits (a piece of at most 15
    /// bytes has at most 15 tokens); the empty slot never matches, as every key
    /// holds a length of at least two.
    recent: Vec<(u64, u64)>,
    counts: HashMap<(u64, u64), u32, Keyed>,
}

impl PieceCounts {
    fn new() -> Self {
        PieceCounts {
            recent: vec![(0, 0); RECENT_SLOTS],
            counts: HashMap::with_hasher(Keyed::random()),
        }
    }

    /// The count of the piece `text[start..end]`.
    fn count(&mut self, encoding: Encoding, text: &[u8], start: usize, end: usize) -> usize {
        let len = end - start;
        // Every byte is a token of its own in both encodings.
        if len == 1 {
            return 1;
        }
        if len > MAX_CACHED_PIECE {
            return encode(encoding, &text[start..end]);
        }
        // The piece in two words, its length in the last byte.
        let key = (
            word(text, start, len.min(8)),
            word(text, start + 8, len.saturating_sub(8)) | (len as u64) << 56,
        );
        // A fixed multiplier is enough here: a collision only costs a trip to the map.
        let slot = ((key.0 ^ key.1.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> (64 - RECENT_BITS)) as usize;
        let (low, high) = self.recent[slot];
        if low == key.0 && high & !COUNT_BITS == key.1 {
            return (high >> COUNT_SHIFT) as usize;
        }
        let count = match self.counts.get(&key) {
            Some(&count) => count,
            None => {
                let count = u32::try_from(encode(encoding, &text[start..end])).unwrap_or(u32::MAX);
                if self.counts.len() >= MAX_ENTRIES {
                    self.counts.clear();
                }
                self.counts.insert(key, count);
                count
            }
        };
        if count < 16 {
            self.recent[slot] = (key.0, key.1 | u64::from(count) << COUNT_SHIFT);
        }
        count as usize
    }
}

/// The `n` (at most 8) bytes of `text` from `at`, little-endian, the rest zero.
fn word(text: &[u8], at: usize, n: usize) -> u64 {
    let mut bytes = [0u8; 8];
    if n == 0 {
        return 0;
    }
    if let Some(whole) = text.get(at..at + 8) {
        // One fixed-size load; the bytes past the piece are masked off.
        bytes.copy_from_slice(whole);
        let word = u64::from_le_bytes(bytes);
        return if n == 8 {
            word
        } else {
            word & ((1u64 << (8 * n)) - 1)
        };
    }
    bytes[..n].copy_from_slice(&text[at..at + n]);
    u64::from_le_bytes(bytes)
}

/// One piece through `tiktoken-rs`; pieces of plain text are whole characters.
fn encode(encoding: Encoding, piece: &[u8]) -> usize {
    std::str::from_utf8(piece).map_or(piece.len(), |piece| {
        tokenizer(encoding).encode_ordinary(piece).len()
    })
}

/// A folded-multiply hash of whole words with a random key.
#[derive(Clone, Copy)]
struct Keyed {
    seed: u64,
    key: u64,
}

impl Keyed {
    fn random() -> Self {
        let state = RandomState::new();
        Keyed {
            seed: state.hash_one(0x5eed_u64),
            key: state.hash_one(0x6b65_7921_u64) | 1,
        }
    }
}

impl BuildHasher for Keyed {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        FoldHasher {
            state: self.seed,
            key: self.key,
        }
    }
}

struct FoldHasher {
    state: u64,
    key: u64,
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        let product = u128::from(self.state ^ word) * u128::from(self.key);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn tiktoken(encoding: Encoding, text: &str) -> usize {
        tokenizer(encoding).encode_ordinary(text).len()
    }

    #[test]
    fn counts_match_tiktoken_with_other_characters_mixed_in() {
        let texts = [
            "Grüße aus Köln!\nThe café’s menu — naïve “quotes” … done.\n/path/to/fïle\n",
            "日本語のテキスト\nand English after it\n\u{a0}indented with a no-break space\n",
            "emoji 🎉🎉 here\n\u{3000}ideographic space\nx\u{2028}y\r\nΣίσυφος 'll 'S\n",
            "tab\t\u{85}next line\n\n  \u{1F600}\n123456 ½ ² ٣",
        ];
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            for text in texts {
                assert_eq!(count(encoding, text), tiktoken(encoding, text), "{text:?}");
                // Twice: the second count comes from the piece cache.
                assert_eq!(count(encoding, text), tiktoken(encoding, text), "{text:?}");
            }
        }
    }

    #[test]
    fn counts_match_tiktoken_on_the_development_conversations() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/eval/conversations");
        let mut texts = Vec::new();
        for file in ["swe_agent_demos.jsonl", "mtbench101_context_memory.jsonl"] {
            let jsonl = std::fs::read_to_string(dir.join(file)).expect("the shared eval files");
            for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
                let value: Value = serde_json::from_str(line).expect("json");
                for message in value["messages"].as_array().into_iter().flatten() {
                    if let Some(text) = message["content"].as_str() {
                        texts.push(text.to_owned());
                    }
                }
            }
        }
        assert!(texts.len() > 500, "{}", texts.len());
        let joined = texts.join("\n");
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let mine: usize = texts.iter().map(|t| count(encoding, t)).sum();
            let theirs: usize = texts.iter().map(|t| tiktoken(encoding, t)).sum();
            assert_eq!(mine, theirs, "{encoding:?}");
            assert_eq!(count(encoding, &joined), tiktoken(encoding, &joined));
        }
    }
}
