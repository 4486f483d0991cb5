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
    /// More content words differ than a paraphrase needs.
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

/// How many content words may differ on each side before the guard calls it other wording.
const MAX_WORDING_DIFFERENCE: usize = 1;

#[derive(Debug)]
struct Analysis {
    numbers: BTreeMap<String, usize>,
    polarity: BTreeMap<String, usize>,
    /// Distinctive tokens, lowercased, in order of appearance.
    distinctive: Vec<String>,
    content: BTreeMap<String, usize>,
}

/// Splits text into words, keeping digits, `.`/`_`/`-` inside identifiers, and `n't` as `not`.
fn words(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut sentence_start = true;
    for raw in text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | '(' | ')' | '"' | '?' | '!' | ':' | '[' | ']' | '{' | '}'
            )
    }) {
        let trimmed = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '+' && c != '#');
        let ends_sentence = raw.ends_with('.') && !trimmed.contains('.');
        if trimmed.is_empty() {
            if ends_sentence {
                sentence_start = true;
            }
            continue;
        }
        let lower = trimmed.to_lowercase();
        let (stem, negated) = match lower.strip_suffix("n't") {
            Some(stem) => (stem.to_owned(), true),
            None => (lower.replace('\'', ""), false),
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
        numbers: BTreeMap::new(),
        polarity: BTreeMap::new(),
        distinctive: Vec::new(),
        content: BTreeMap::new(),
    };
    for (word, distinctive) in words(text) {
        let w = word.as_str();
        if w.chars().any(|c| c.is_ascii_digit()) || NUMBER_WORDS.contains(&w) {
            *a.numbers.entry(word.clone()).or_default() += 1;
        }
        if POLARITY.contains(&w) {
            *a.polarity.entry(word.clone()).or_default() += 1;
        }
        if distinctive || NAMED.contains(&w) {
            a.distinctive.push(word.clone());
        }
        if !STOP.contains(&w) && !POLARITY.contains(&w) && !NUMBER_WORDS.contains(&w) {
            *a.content.entry(stem(w)).or_default() += 1;
        }
    }
    a
}

fn sorted(v: &[String]) -> Vec<&String> {
    let mut s: Vec<&String> = v.iter().collect();
    s.sort();
    s
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
    if sorted(&q.distinctive) != sorted(&c.distinctive) {
        return Err(Rejection::Distinctive);
    }
    if q.distinctive != c.distinctive {
        return Err(Rejection::Order);
    }
    let only_in = |a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>| {
        a.iter()
            .map(|(w, n)| n.saturating_sub(b.get(w).copied().unwrap_or(0)))
            .sum::<usize>()
    };
    if only_in(&q.content, &c.content) > MAX_WORDING_DIFFERENCE
        || only_in(&c.content, &q.content) > MAX_WORDING_DIFFERENCE
    {
        return Err(Rejection::Wording);
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
    }
}
