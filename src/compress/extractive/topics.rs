//! Main topics: the words the condensed messages use most, tool names included.

use std::collections::HashMap;

use crate::chat::Role;

use super::Source;
use super::text::floor_boundary;

const TOPICS: usize = 6;
/// Only the start of each message feeds the topic count.
const TOPIC_SCAN_BYTES: usize = 2_000;

pub(super) fn topics(sources: &[Source<'_>]) -> Vec<String> {
    let mut counts: HashMap<String, (u32, usize)> = HashMap::new();
    let mut order = 0;
    for s in sources {
        if s.message.role == Role::Tool {
            continue;
        }
        let mut note = |word: String, weight: u32| {
            order += 1;
            let entry = counts.entry(word).or_insert((0, order));
            entry.0 += weight;
        };
        for c in &s.message.tool_calls {
            note(c.name.clone(), 1);
        }
        let text = match &s.message.content {
            crate::chat::Content::Text(t) => t.as_str(),
            _ => "",
        };
        let text = &text[..floor_boundary(text, TOPIC_SCAN_BYTES)];
        for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\'')) {
            if word.len() < 4 || word.len() > 24 || !word.bytes().all(|b| b.is_ascii_alphabetic()) {
                continue;
            }
            let lower = word.to_ascii_lowercase();
            if is_stopword(&lower) {
                continue;
            }
            let weight = if word.as_bytes()[0].is_ascii_uppercase() {
                2
            } else {
                1
            };
            note(lower, weight);
        }
    }
    let mut ranked: Vec<(String, (u32, usize))> =
        counts.into_iter().filter(|(_, (n, _))| *n >= 2).collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    ranked.into_iter().take(TOPICS).map(|(w, _)| w).collect()
}

fn is_stopword(word: &str) -> bool {
    const STOP: &[&str] = &[
        "about",
        "above",
        "after",
        "again",
        "also",
        "always",
        "another",
        "anything",
        "around",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "could",
        "does",
        "doing",
        "done",
        "down",
        "each",
        "even",
        "every",
        "file",
        "files",
        "first",
        "following",
        "from",
        "further",
        "going",
        "good",
        "great",
        "have",
        "having",
        "help",
        "here",
        "into",
        "just",
        "know",
        "last",
        "let's",
        "like",
        "line",
        "lines",
        "look",
        "looks",
        "make",
        "many",
        "more",
        "most",
        "much",
        "must",
        "need",
        "next",
        "now",
        "only",
        "other",
        "over",
        "please",
        "really",
        "same",
        "should",
        "since",
        "some",
        "something",
        "such",
        "sure",
        "take",
        "than",
        "thank",
        "thanks",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "thing",
        "things",
        "think",
        "this",
        "those",
        "through",
        "under",
        "until",
        "very",
        "want",
        "well",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "with",
        "within",
        "without",
        "would",
        "your",
        "yours",
        "able",
        "command",
        "current",
        "directory",
        "okay",
        "still",
        "used",
        "using",
        "what's",
        "it's",
        "i'm",
        "don't",
        "can't",
        "that's",
        "here's",
        "there's",
        "you're",
        "we'll",
        "i'll",
        "let",
        "lets",
        "them",
        "certainly",
        "course",
        "happy",
        "recommend",
        "recommendations",
        "suggest",
        "could",
        "might",
        "also",
        "they're",
        "you'll",
        "you've",
        "i've",
        "isn't",
        "doesn't",
        "didn't",
        "include",
        "includes",
        "including",
        "known",
        "popular",
        "sounds",
        "definitely",
        "quite",
    ];
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    SET.get_or_init(|| STOP.iter().copied().collect())
        .contains(word)
}
