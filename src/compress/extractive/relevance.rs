//! Lexical relevance to the latest user message: its content words (lower case,
//! lightly stemmed, stop words dropped) are the query, and old messages and their
//! sentences are scored with BM25 against it. In a dialogue the answer to a question
//! is often the reply to the message that matches it, so a message also inherits part
//! of its neighbours' scores. One pass over each text's words, no allocation per
//! word. This room must not pick excerpts: it only scores.

use std::collections::HashSet;
use std::hash::Hasher;
use std::sync::OnceLock;

use super::text::Fnv;

/// BM25's term-frequency saturation and length normalisation, the usual values.
const K1: f32 = 1.2;
const B: f32 = 0.75;
/// The query keeps at most this many distinct terms (a bit mask per text).
const MAX_TERMS: usize = 64;
/// Words longer than this are not terms (hashes, base64, long identifiers).
const MAX_WORD: usize = 32;
/// Share of a message's score passed on to the message after it (its reply) and to
/// the one before it (what it replies to).
const TO_REPLY: f32 = 0.6;
const TO_PROMPT: f32 = 0.3;

/// The latest user message's terms.
pub struct Query {
    terms: Vec<Vec<u8>>,
    /// Each term's [`term_hash`], in the same order.
    hashes: Vec<u64>,
}

/// Which query terms a text holds, and how many words it has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Hits {
    pub(super) terms: u64,
    pub(super) words: u32,
}

impl Query {
    /// The query of `text`; `None` when it has no content word.
    pub fn new(text: &str) -> Option<Query> {
        let mut terms: Vec<Vec<u8>> = Vec::new();
        let mut buf = [0u8; MAX_WORD];
        for word in words(text) {
            let Some(stem) = stem(word, &mut buf) else {
                continue;
            };
            if is_stop_word(stem) || terms.iter().any(|t| t == stem) {
                continue;
            }
            terms.push(stem.to_vec());
            if terms.len() == MAX_TERMS {
                break;
            }
        }
        let hashes = terms.iter().map(|t| term_hash(t)).collect();
        (!terms.is_empty()).then_some(Query { terms, hashes })
    }

    pub(super) fn len(&self) -> usize {
        self.terms.len()
    }

    /// The terms' hashes, term `i` at `i`: a text holds term `i` when one of its
    /// [`term_hashes`] is `hashes()[i]`.
    pub(super) fn hashes(&self) -> &[u64] {
        &self.hashes
    }

    /// The query terms in `text`.
    pub(super) fn hits(&self, text: &str) -> Hits {
        let mut hits = Hits::default();
        let mut buf = [0u8; MAX_WORD];
        for word in words(text) {
            hits.words += 1;
            let Some(stem) = stem(word, &mut buf) else {
                continue;
            };
            for (i, term) in self.terms.iter().enumerate() {
                if term.len() == stem.len() && term.as_slice() == stem {
                    hits.terms |= 1 << i;
                    break;
                }
            }
        }
        hits
    }
}

/// Per word of `text`, the hash of its stem, or `None` for a word too long to be a
/// term: what [`Query::hits`] compares, worked out without a query so it can be kept.
pub(super) fn term_hashes(text: &str) -> impl Iterator<Item = Option<u64>> {
    let mut buf = [0u8; MAX_WORD];
    words(text).map(move |word| stem(word, &mut buf).map(term_hash))
}

/// FNV-1a of a stem: stems are a few bytes long, and a collision only makes a word
/// count as a query term in the client's own conversation.
fn term_hash(stem: &[u8]) -> u64 {
    let mut hash = Fnv::default();
    hash.write(stem);
    hash.finish()
}

/// BM25 scores of documents given, per document, its length in words and, per query
/// term, how often it occurs there (`tf(doc, term)`).
pub(super) fn bm25(query: &Query, lengths: &[u32], tf: impl Fn(usize, usize) -> u32) -> Vec<f32> {
    let n = lengths.len();
    if n == 0 {
        return Vec::new();
    }
    let average = (lengths.iter().map(|&l| l as f32).sum::<f32>() / n as f32).max(1.0);
    let idf: Vec<f32> = (0..query.len())
        .map(|t| {
            let df = (0..n).filter(|&d| tf(d, t) > 0).count() as f32;
            (1.0 + (n as f32 - df + 0.5) / (df + 0.5)).ln()
        })
        .collect();
    (0..n)
        .map(|d| {
            let norm = K1 * (1.0 - B + B * lengths[d] as f32 / average);
            idf.iter()
                .enumerate()
                .map(|(t, idf)| {
                    let f = tf(d, t) as f32;
                    if f == 0.0 {
                        0.0
                    } else {
                        idf * f * (K1 + 1.0) / (f + norm)
                    }
                })
                .sum()
        })
        .collect()
}

/// Scores scaled to at most 1, each raised by a share of its neighbours' (the reply
/// after a matching message, and the message a matching reply answers).
pub(super) fn in_context(scores: &[f32]) -> Vec<f32> {
    let top = scores.iter().copied().fold(0.0, f32::max);
    if top <= 0.0 {
        return vec![0.0; scores.len()];
    }
    let at = |i: usize| scores[i] / top;
    (0..scores.len())
        .map(|i| {
            let before = if i > 0 { TO_REPLY * at(i - 1) } else { 0.0 };
            let after = scores.get(i + 1).map_or(0.0, |_| TO_PROMPT * at(i + 1));
            at(i).max(before).max(after)
        })
        .collect()
}

/// Words: runs of letters, digits and apostrophes inside words.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '’'))
        .filter(|w| !w.is_empty())
}

/// A word in lower case without a possessive and a plural or verb ending, written
/// into `buf`; `None` for words too long to be terms. Crude, but the same on both
/// sides: `paintings`, `painting` and `painted` all become `paint`.
fn stem<'b>(word: &str, buf: &'b mut [u8; MAX_WORD]) -> Option<&'b [u8]> {
    let bytes = word.as_bytes();
    if bytes.len() > MAX_WORD {
        return None;
    }
    let mut n = 0;
    for &b in bytes {
        buf[n] = b.to_ascii_lowercase();
        n += 1;
    }
    let mut w = &buf[..n];
    for possessive in [&b"'s"[..], "’s".as_bytes()] {
        if let Some(stripped) = w.strip_suffix(possessive) {
            w = stripped;
        }
    }
    let mut end = w.len();
    // The plural or third person first, then the verb ending, then a silent `e`.
    if end > 4 && w.ends_with(b"ies") {
        // `stories` → `stori`, like `story` → `stori` below.
        end -= 2;
    } else if end > 3 && w.ends_with(b"s") && !w.ends_with(b"ss") && !w.ends_with(b"us") {
        end -= 1;
    }
    let w = &w[..end];
    if end > 5 && w.ends_with(b"ing") {
        end -= 3;
    } else if end > 4 && w.ends_with(b"ed") && !w.ends_with(b"eed") {
        end -= 2;
    }
    if end > 3 && w[end - 1] == b'e' {
        // `made`/`make`, `love`/`loved` → `mak`, `lov`.
        end -= 1;
    }
    if end > 3 && w[end - 1] == b'y' {
        buf[end - 1] = b'i';
    }
    Some(&buf[..end])
}

/// Function words and the words questions are made of; they say nothing about which
/// message holds the answer. Compared after stemming.
fn is_stop_word(stem_of_word: &[u8]) -> bool {
    const STOP: &[&str] = &[
        "a",
        "about",
        "after",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "anything",
        "are",
        "as",
        "at",
        "be",
        "been",
        "before",
        "being",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "don't",
        "each",
        "even",
        "ever",
        "for",
        "from",
        "get",
        "go",
        "got",
        "had",
        "has",
        "have",
        "he",
        "her",
        "here",
        "him",
        "his",
        "how",
        "i",
        "i'm",
        "if",
        "in",
        "into",
        "is",
        "it",
        "it's",
        "just",
        "kind",
        "let",
        "like",
        "make",
        "me",
        "might",
        "more",
        "most",
        "much",
        "my",
        "no",
        "not",
        "now",
        "of",
        "on",
        "one",
        "only",
        "or",
        "other",
        "our",
        "out",
        "over",
        "please",
        "really",
        "said",
        "same",
        "say",
        "she",
        "should",
        "so",
        "some",
        "something",
        "such",
        "tell",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "thing",
        "those",
        "to",
        "too",
        "type",
        "up",
        "us",
        "very",
        "was",
        "want",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "yes",
        "you",
        "your",
    ];
    // Stemmed once, the first time a question is read.
    static STEMMED: OnceLock<HashSet<Vec<u8>>> = OnceLock::new();
    STEMMED
        .get_or_init(|| {
            let mut buf = [0u8; MAX_WORD];
            STOP.iter()
                .filter_map(|word| stem(word, &mut buf).map(<[u8]>::to_vec))
                .collect()
        })
        .contains(stem_of_word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stemmed(word: &str) -> String {
        let mut buf = [0u8; MAX_WORD];
        String::from_utf8_lossy(stem(word, &mut buf).expect("short")).into_owned()
    }

    #[test]
    fn inflections_share_a_stem() {
        for group in [
            &["painting", "paintings", "painted", "paint", "paints"][..],
            &["story", "stories"],
            &["love", "loved", "loves"],
            &["Joanna's", "joanna"],
            &["camping", "camp", "camped"],
        ] {
            let stems: Vec<String> = group.iter().map(|w| stemmed(w)).collect();
            assert!(
                stems.windows(2).all(|w| w[0] == w[1]),
                "{group:?}: {stems:?}"
            );
        }
        assert_ne!(stemmed("class"), stemmed("clas"));
    }

    #[test]
    fn questions_keep_their_content_words() {
        let query = Query::new("What did Joanna paint for her sister's birthday?").expect("terms");
        let terms: Vec<String> = query
            .terms
            .iter()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect();
        assert_eq!(terms, ["joanna", "paint", "sister", "birthdai"]);
        assert!(Query::new("What did you do?").is_none());
    }

    #[test]
    fn the_matching_message_and_its_reply_score_highest() {
        let query = Query::new("Which movie did Joanna watch first?").expect("terms");
        let texts = [
            "Hey, how was your week?",
            "Did you finally watch that movie Joanna?",
            "Yes! Eternal Sunshine, I loved it.",
            "Great, talk soon.",
        ];
        let hits: Vec<Hits> = texts.iter().map(|t| query.hits(t)).collect();
        let lengths: Vec<u32> = hits.iter().map(|h| h.words).collect();
        let scores = bm25(&query, &lengths, |d, t| {
            u32::from(hits[d].terms & (1 << t) != 0)
        });
        let context = in_context(&scores);
        assert_eq!(context[1], 1.0);
        assert!(
            context[2] > context[0] && context[2] > context[3],
            "{context:?}"
        );
    }
}
