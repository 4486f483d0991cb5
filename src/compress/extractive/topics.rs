//! Main topics: the words the condensed messages use most, tool names included. What
//! one message adds ([`TopicWords`]) is worked out once per text; the count over the
//! condensed messages is made per request.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::mem::size_of;

use crate::chat::{Content, Message, Role};

use super::Source;
use super::text::{Fnv, floor_boundary};

const TOPICS: usize = 6;
/// Only the start of each message feeds the topic count.
const TOPIC_SCAN_BYTES: usize = 2_000;

/// The words one message adds to the topic count, in lower case, each once with its
/// summed weight, in the order they first occur.
#[derive(Default)]
pub(super) struct TopicWords {
    lower: String,
    /// `lower[start..end]` and its weight.
    words: Vec<(u32, u32, u32)>,
}

impl TopicWords {
    /// The words of a plain-text message's start (capitalised ones weigh double), without
    /// stop words; tool results add none.
    pub(super) fn of(message: &Message) -> TopicWords {
        let mut out = TopicWords::default();
        let text = match &message.content {
            Content::Text(t) if message.role != Role::Tool => t.as_str(),
            _ => return out,
        };
        let text = &text[..floor_boundary(text, TOPIC_SCAN_BYTES)];
        // Lower case changes no byte offset, so each word's lower case is at its own place.
        let lower = text.to_ascii_lowercase();
        let mut seen: HashMap<&str, usize, BuildHasherDefault<Fnv>> = HashMap::default();
        for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\'')) {
            if word.len() < 4 || word.len() > 24 || !word.bytes().all(|b| b.is_ascii_alphabetic()) {
                continue;
            }
            let at = word.as_ptr() as usize - text.as_ptr() as usize;
            let lower = &lower[at..at + word.len()];
            if is_stopword(lower) {
                continue;
            }
            let weight = if word.as_bytes()[0].is_ascii_uppercase() {
                2
            } else {
                1
            };
            match seen.get(lower) {
                Some(&i) => out.words[i].2 += weight,
                None => {
                    seen.insert(lower, out.words.len());
                    let start = out.lower.len() as u32;
                    out.lower.push_str(lower);
                    out.words.push((start, out.lower.len() as u32, weight));
                }
            }
        }
        out
    }

    fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.words
            .iter()
            .map(|&(start, end, weight)| (&self.lower[start as usize..end as usize], weight))
    }

    pub(super) fn bytes(&self) -> usize {
        self.lower.capacity() + self.words.capacity() * size_of::<(u32, u32, u32)>()
    }
}

/// The most used words of the condensed messages: tool names, then each message's words
/// (`words`, one per source).
pub(super) fn topics<'w>(
    sources: &'w [Source<'_>],
    words: impl IntoIterator<Item = &'w TopicWords>,
) -> Vec<String> {
    let mut counts: HashMap<&str, (u32, usize)> = HashMap::new();
    let mut order = 0;
    for (s, words) in sources.iter().zip(words) {
        if s.message.role == Role::Tool {
            continue;
        }
        let mut note = |word, weight: u32| {
            order += 1;
            let entry = counts.entry(word).or_insert((0, order));
            entry.0 += weight;
        };
        for c in &s.message.tool_calls {
            note(c.name.as_str(), 1);
        }
        for (word, weight) in words.iter() {
            note(word, weight);
        }
    }
    let mut ranked: Vec<(&str, (u32, usize))> =
        counts.into_iter().filter(|(_, (n, _))| *n >= 2).collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    ranked
        .into_iter()
        .take(TOPICS)
        .map(|(w, _)| w.to_owned())
        .collect()
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
    static SET: std::sync::OnceLock<HashSet<&'static str, BuildHasherDefault<Fnv>>> =
        std::sync::OnceLock::new();
    SET.get_or_init(|| STOP.iter().copied().collect())
        .contains(word)
}
