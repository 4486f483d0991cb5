//! The near-miss guard: after the similarity threshold, a candidate is rejected
//! when the two questions differ in what sentence embeddings blur.
//!
//! Each rule is a plain comparison with a name, so every rejection can be
//! explained: numbers, polarity words, distinctive tokens (names, places,
//! identifiers, languages), their order, and differing content words.

use std::collections::BTreeMap;

/// Why a candidate was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Different numbers or quantities ("3 apples" / "4 apples").
    Numbers,
    /// Different negation or polarity words ("turn it on" / "turn it off").
    Polarity,
    /// Different names, places, identifiers or languages ("in Spanish" / "in French").
    Distinctive,
    /// The same distinctive words in another order ("from Paris to Rome" / "from Rome to Paris").
    Order,
    /// A content word differs ("reset" / "change").
    Wording,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Numbers => "numbers",
            Rejection::Polarity => "polarity",
            Rejection::Distinctive => "distinctive",
            Rejection::Order => "order",
            Rejection::Wording => "wording",
        }
    }
}

/// Words whose presence flips or bounds a request's meaning.
const POLARITY: &[&str] = &[
    "not",
    "no",
    "never",
    "none",
    "nothing",
    "nobody",
    "nor",
    "neither",
    "without",
    "cannot",
    "off",
    "on",
    "enable",
    "enabled",
    "disable",
    "disabled",
    "allow",
    "deny",
    "block",
    "unblock",
    "start",
    "stop",
    "open",
    "close",
    "increase",
    "decrease",
    "up",
    "down",
    "add",
    "remove",
    "include",
    "exclude",
    "before",
    "after",
    "more",
    "less",
    "most",
    "least",
    "min",
    "max",
    "minimum",
    "maximum",
    "true",
    "false",
    "yes",
    "show",
    "hide",
    "lock",
    "unlock",
    "install",
    "uninstall",
    "buy",
    "sell",
    "import",
    "export",
    "upload",
    "download",
    "encrypt",
    "decrypt",
    "first",
    "last",
    "above",
    "below",
    "over",
    "under",
    "increment",
    "decrement",
    "higher",
    "lower",
    "larger",
    "smaller",
    "faster",
    "slower",
    "better",
    "worse",
    "best",
    "worst",
    "old",
    "new",
    "cheap",
    "expensive",
    "left",
    "right",
    "inside",
    "outside",
    "from",
    "to",
    "into",
    "positive",
    "negative",
    "always",
    "only",
    "except",
    "but",
    "unless",
    "against",
];

const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
    "once",
    "twice",
    "half",
    "double",
    "triple",
    "second",
    "third",
    "fourth",
    "fifth",
    "dozen",
    "single",
    "pair",
    "few",
    "several",
    "many",
    "all",
    "every",
    "each",
    "both",
    "some",
    "any",
];

/// Lowercase words that name languages, places or technologies without a capital.
const NAMED: &[&str] = &[
    "english",
    "spanish",
    "french",
    "german",
    "italian",
    "portuguese",
    "dutch",
    "russian",
    "chinese",
    "mandarin",
    "cantonese",
    "japanese",
    "korean",
    "arabic",
    "hindi",
    "bengali",
    "turkish",
    "polish",
    "swedish",
    "norwegian",
    "danish",
    "finnish",
    "greek",
    "hebrew",
    "latin",
    "thai",
    "vietnamese",
    "indonesian",
    "ukrainian",
    "czech",
    "romanian",
    "hungarian",
    "persian",
    "python",
    "rust",
    "java",
    "javascript",
    "typescript",
    "golang",
    "ruby",
    "php",
    "kotlin",
    "swift",
    "haskell",
    "scala",
    "perl",
    "bash",
    "sql",
    "html",
    "css",
    "c++",
    "c#",
    "linux",
    "windows",
    "macos",
    "android",
    "ios",
    "celsius",
    "fahrenheit",
    "kilometers",
    "miles",
    "dollars",
    "euros",
    "pounds",
    "yen",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "today",
    "tomorrow",
    "yesterday",
    "morning",
    "evening",
    "night",
    "north",
    "south",
    "east",
    "west",
];

/// Words too common to carry a question's meaning.
const STOP: &[&str] = &[
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "am",
    "do",
    "does",
    "did",
    "have",
    "has",
    "had",
    "i",
    "me",
    "my",
    "mine",
    "we",
    "our",
    "you",
    "your",
    "he",
    "she",
    "it",
    "its",
    "they",
    "them",
    "their",
    "his",
    "her",
    "this",
    "that",
    "these",
    "those",
    "there",
    "here",
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "how",
    "why",
    "when",
    "where",
    "can",
    "could",
    "should",
    "would",
    "will",
    "shall",
    "may",
    "might",
    "must",
    "of",
    "in",
    "at",
    "by",
    "for",
    "with",
    "about",
    "as",
    "and",
    "or",
    "if",
    "so",
    "than",
    "then",
    "too",
    "very",
    "just",
    "also",
    "please",
    "tell",
    "know",
    "want",
    "need",
    "like",
    "get",
    "way",
    "ways",
    "s",
    "t",
    "also",
    "any",
    "thing",
    "things",
    "some",
    "one",
    "someone",
    "anyone",
    "something",
    "anything",
    "really",
    "actually",
    "possible",
    "best",
    "good",
    "much",
    "many",
    "does",
    "doing",
    "done",
    "make",
    "made",
    "use",
    "using",
    "used",
    "go",
    "going",
    "up",
    "out",
    "be",
    "into",
    "onto",
    "upon",
    "per",
    "via",
    "while",
    "during",
    "within",
    "is",
    "let",
    "lets",
    "explain",
    "describe",
    "show",
    "give",
    "help",
    "find",
];

/// Negation words; their presence on one side only flips a request.
const NEGATION: &[&str] = &[
    "not", "no", "never", "none", "nothing", "nobody", "nor", "neither", "without", "cannot",
];

/// Words that mark who does what to whom ("X acquired Y" / "X was acquired by Y").
const ROLE: &[&str] = &["by"];

#[derive(Debug)]
struct Analysis {
    /// Numbers and quantity words, in order.
    numbers: Vec<String>,
    /// Polarity words, in order.
    polarity: Vec<String>,
    /// Distinctive tokens, lowercased, in order of appearance.
    distinctive: Vec<String>,
    /// Content words, stemmed, in order.
    content: Vec<String>,
    roles: usize,
}

/// Splits text into words, keeping digits, `.`/`_`/`-` inside identifiers, and `n't` as `not`.
fn words(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut sentence_start = true;
    let separators = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | '(' | ')' | '"' | '?' | '!' | ':' | '[' | ']' | '{' | '}'
            )
    };
    for raw in text.split(separators) {
        let trimmed = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '+' && c != '#');
        let ends_sentence = raw.ends_with('.') && !trimmed.contains('.');
        if trimmed.is_empty() {
            if ends_sentence {
                sentence_start = true;
            }
            continue;
        }
        let lower = trimmed.to_lowercase().replace('\u{2019}', "'");
        let (stem, negated) = match lower.strip_suffix("n't") {
            Some(stem) => (stem.to_owned(), true),
            None => {
                let base = ["'s", "'re", "'ve", "'ll", "'d", "'m"]
                    .iter()
                    .find_map(|suffix| lower.strip_suffix(suffix))
                    .unwrap_or(&lower);
                (base.replace('\'', ""), false)
            }
        };
        let capital = trimmed.chars().next().is_some_and(char::is_uppercase);
        // A capital counts only away from the start of a sentence.
        let distinctive_case = capital && !sentence_start && stem != "i";
        let looks_like_identifier = trimmed.chars().any(|c| c.is_ascii_digit() || c == '_')
            || (trimmed.contains('.') && trimmed.len() > 2)
            || trimmed.chars().skip(1).any(char::is_uppercase);
        if !stem.is_empty() {
            out.push((stem, distinctive_case || looks_like_identifier));
        }
        if negated {
            out.push(("not".to_owned(), false));
        }
        sentence_start = ends_sentence;
    }
    out
}

/// A rough stem, so "plays" and "playing" count as one content word.
fn stem(word: &str) -> String {
    for suffix in ["ing", "ed", "es", "s", "ly"] {
        if let Some(s) = word.strip_suffix(suffix) {
            if s.chars().count() >= 3 {
                return s.to_owned();
            }
        }
    }
    word.to_owned()
}

fn analyse(text: &str) -> Analysis {
    let mut a = Analysis {
        numbers: Vec::new(),
        polarity: Vec::new(),
        distinctive: Vec::new(),
        content: Vec::new(),
        roles: 0,
    };
    for (word, distinctive) in words(text) {
        let w = word.as_str();
        let number = w.chars().any(|c| c.is_ascii_digit()) || NUMBER_WORDS.contains(&w);
        if number {
            a.numbers.push(word.clone());
        }
        if POLARITY.contains(&w) {
            a.polarity.push(word.clone());
        }
        if ROLE.contains(&w) {
            a.roles += 1;
        }
        if distinctive || NAMED.contains(&w) {
            a.distinctive.push(word.clone());
        }
        if !number && !NEGATION.contains(&w) && (!STOP.contains(&w) || POLARITY.contains(&w)) {
            a.content.push(stem(w));
        }
    }
    a
}

fn counts(words: &[String]) -> BTreeMap<&str, usize> {
    let mut map = BTreeMap::new();
    for w in words {
        *map.entry(w.as_str()).or_insert(0) += 1;
    }
    map
}

/// How many words of `a` are not matched in `b`.
fn unmatched(a: &BTreeMap<&str, usize>, b: &BTreeMap<&str, usize>) -> usize {
    a.iter()
        .map(|(w, n)| n.saturating_sub(b.get(w).copied().unwrap_or(0)))
        .sum()
}

/// The length of the longest common subsequence.
fn common_subsequence(a: &[&str], b: &[&str]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Checks whether serving `cached`'s answer for `query` is safe beyond similarity.
pub fn check(query: &str, cached: &str) -> Result<(), Rejection> {
    let q = analyse(query);
    let c = analyse(cached);
    if q.numbers != c.numbers {
        return Err(Rejection::Numbers);
    }
    if q.polarity != c.polarity {
        return Err(Rejection::Polarity);
    }
    if counts(&q.distinctive) != counts(&c.distinctive) {
        return Err(Rejection::Distinctive);
    }
    if q.distinctive != c.distinctive || q.roles != c.roles {
        return Err(Rejection::Order);
    }
    let (qc, cc) = (counts(&q.content), counts(&c.content));
    // Measured on PAWS-Wiki: even one differing content word lets swapped or
    // substituted meanings through, so every content word must be matched.
    if unmatched(&qc, &cc) > 0 || unmatched(&cc, &qc) > 0 {
        return Err(Rejection::Wording);
    }
    let shared = |words: &[String], other: &BTreeMap<&str, usize>| -> Vec<String> {
        words
            .iter()
            .filter(|w| other.contains_key(w.as_str()))
            .cloned()
            .collect()
    };
    let (qs, cs) = (shared(&q.content, &cc), shared(&c.content, &qc));
    let qs: Vec<&str> = qs.iter().map(String::as_str).collect();
    let cs: Vec<&str> = cs.iter().map(String::as_str).collect();
    if common_subsequence(&qs, &cs) < qs.len().min(cs.len()) {
        return Err(Rejection::Order);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paraphrases_pass() {
        assert_eq!(
            check("How do I reset my password?", "how can I reset my password"),
            Ok(())
        );
        assert_eq!(
            check(
                "What is the capital of France?",
                "what's the capital of France"
            ),
            Ok(())
        );
    }

    #[test]
    fn near_misses_are_rejected_with_a_reason() {
        assert_eq!(
            check("turn dark mode on", "turn dark mode off"),
            Err(Rejection::Polarity)
        );
        assert_eq!(
            check("good morning in Spanish", "good morning in French"),
            Err(Rejection::Distinctive)
        );
        assert_eq!(
            check("give me 3 ideas", "give me 5 ideas"),
            Err(Rejection::Numbers)
        );
        assert_eq!(
            check("I don't want onions", "I want onions"),
            Err(Rejection::Polarity)
        );
        assert_eq!(
            check("flights from Paris to Rome", "flights from Rome to Paris"),
            Err(Rejection::Order)
        );
        assert_eq!(
            check("how to bake bread at home", "how to brew beer at home"),
            Err(Rejection::Wording)
        );
        assert_eq!(
            check(
                "McDonnell Douglas acquired Boeing",
                "McDonnell Douglas was acquired by Boeing"
            ),
            Err(Rejection::Order)
        );
        assert_eq!(
            check("how do I reset my password", "how do I change my password"),
            Err(Rejection::Wording),
            "no content word may differ"
        );
    }
}
