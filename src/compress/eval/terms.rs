//! Term overlap, the retention measure for probes without evidence indices: content
//! words (lower case, at least three characters or containing a digit, no stop words).

use std::collections::HashSet;

use crate::chat::Message;

pub(super) fn terms_of(messages: &[Message]) -> HashSet<String> {
    let mut terms = HashSet::new();
    for m in messages {
        terms.extend(words(&m.flat_text()));
        for c in &m.tool_calls {
            terms.extend(words(&c.arguments));
        }
    }
    terms
}

/// Content words: lower case, at least three characters or containing a digit, no stop words.
pub(super) fn words(text: &str) -> Vec<String> {
    const STOP: &[&str] = &[
        "the",
        "and",
        "for",
        "you",
        "your",
        "with",
        "that",
        "this",
        "are",
        "can",
        "will",
        "have",
        "from",
        "but",
        "not",
        "all",
        "any",
        "was",
        "were",
        "has",
        "had",
        "its",
        "our",
        "out",
        "get",
        "use",
        "one",
        "also",
        "more",
        "some",
        "such",
        "into",
        "than",
        "then",
        "them",
        "they",
        "there",
        "their",
        "what",
        "which",
        "who",
        "how",
        "about",
        "would",
        "could",
        "should",
        "here",
        "just",
        "like",
        "very",
        "well",
        "may",
        "might",
        "sure",
        "yes",
        "her",
        "his",
        "she",
        "him",
        "certainly",
        "course",
        "help",
        "great",
        "good",
        "best",
        "make",
        "need",
        "want",
        "know",
        "these",
        "those",
        "each",
        "other",
        "many",
        "most",
        "both",
        "when",
        "where",
        "while",
        "been",
        "being",
        "does",
        "did",
        "doing",
        "it's",
        "i'm",
        "you're",
        "here's",
        "let",
        "let's",
        "too",
        "only",
        "own",
        "same",
        "recommend",
        "try",
    ];
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| {
            (w.chars().count() >= 3 || w.chars().any(|c| c.is_ascii_digit()))
                && !STOP.contains(&w.as_str())
        })
        .collect()
}
