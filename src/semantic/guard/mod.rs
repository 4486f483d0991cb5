//! The near-miss guard: after the similarity threshold, a candidate is rejected
//! when the two questions differ in what sentence embeddings blur.
//!
//! Each rule is a plain comparison with a name, so every rejection can be
//! explained: numbers, polarity words, distinctive tokens (names, places,
//! identifiers, languages), their order, and differing content words.

use std::collections::BTreeMap;

use words::{NAMED, NEGATION, NUMBER_WORDS, POLARITY, ROLE, STOP};

mod words;

#[cfg(test)]
mod tests;

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
