//! The near-miss guard: hard rules for what sentence embeddings blur and a plain
//! comparison catches reliably, and the lexical features of a pair that passes.
//!
//! Each rule has a name, so every rejection can be explained: different numbers or
//! units, a negation on one side only, opposites ("on" / "off"), a name swapped for
//! another ("Spanish" / "French"), and swapped roles ("from Paris to Rome" / "from
//! Rome to Paris"). Differing wording is not a rule: how much of it the two questions
//! share is a [`Features`] value, for the calibration to weigh against outcomes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use words::{MARKERS, NAMED, NEGATION, NUMBER_WORDS, OPPOSITES, STOP, UNITS};

mod roles;
mod words;

#[cfg(test)]
mod tests;

/// Why a candidate was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Different numbers or quantities ("3 apples" / "4 apples", "5 km" / "5 miles").
    Numbers,
    /// A negation on one side only ("with sugar" / "without sugar").
    Negation,
    /// One side asks for the opposite of the other ("turn it on" / "turn it off").
    Opposite,
    /// A name, identifier or language swapped for another ("in Spanish" / "in French").
    Distinctive,
    /// The same words in swapped roles ("from Paris to Rome" / "from Rome to Paris").
    Order,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Numbers => "numbers",
            Rejection::Negation => "negation",
            Rejection::Opposite => "opposite",
            Rejection::Distinctive => "distinctive",
            Rejection::Order => "order",
        }
    }
}

/// What the words of a pair that passed the rules say, for the calibration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Jaccard overlap of the two questions' content words (stemmed), from 0 to 1.
    pub overlap: f32,
    /// The shorter question's word count over the longer one's, from 0 to 1.
    pub length_ratio: f32,
    /// A rule came close: a name, number word or opposite appears on one side only.
    pub one_sided: bool,
    /// Content words each side has that the other lacks: the asked question's, the recorded
    /// one's.
    #[serde(default)]
    pub unmatched: [u16; 2],
    /// How many content words the two share, and how many of those keep their order (the
    /// longest common subsequence of the shared words as each side orders them).
    #[serde(default)]
    pub shared: u16,
    #[serde(default)]
    pub in_order: u16,
}

/// One word of a question, lowercased, and whether its spelling marks it as a name or
/// identifier (a capital away from the start of a sentence, digits, inner dots or capitals).
struct Token {
    word: String,
    distinctive: bool,
    digits: bool,
}

/// Splits text into words, keeping digits, `.`/`_`/`-` inside identifiers, and `n't` as `not`.
fn tokens(text: &str) -> Vec<Token> {
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
        let trimmed =
            raw.trim_matches(|c: char| !c.is_alphanumeric() && !matches!(c, '+' | '#' | '%'));
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
        let digits = trimmed.chars().any(|c| c.is_ascii_digit());
        let looks_like_identifier = digits
            || trimmed.contains('_')
            || (trimmed.contains('.') && trimmed.len() > 2)
            || trimmed.chars().skip(1).any(char::is_uppercase);
        if !stem.is_empty() {
            out.push(Token {
                distinctive: distinctive_case || looks_like_identifier || NAMED.contains(&&*stem),
                word: stem,
                digits,
            });
        }
        if negated {
            out.push(Token {
                word: "not".to_owned(),
                distinctive: false,
                digits: false,
            });
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

/// A rougher stem for opposites, so "enable", "enabled" and "enabling" meet.
fn lemma(word: &str) -> String {
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(s) = word.strip_suffix(suffix) {
            if s.chars().count() >= 3 {
                let mut s: Vec<char> = s.chars().collect();
                if s.len() >= 2 && s[s.len() - 1] == s[s.len() - 2] {
                    s.pop();
                }
                let s: String = s.into_iter().collect();
                return s.trim_end_matches('e').to_owned();
            }
        }
    }
    let trimmed = word.trim_end_matches('e');
    if trimmed.is_empty() { word } else { trimmed }.to_owned()
}

/// The canonical unit a word names, if any.
fn unit(word: &str) -> Option<&'static str> {
    let singular = [
        word,
        word.strip_suffix("es").unwrap_or(word),
        word.strip_suffix('s').unwrap_or(word),
    ];
    singular.iter().find_map(|w| {
        UNITS
            .iter()
            .find(|(name, _)| name == w)
            .map(|(_, canon)| *canon)
    })
}

/// A number written with digits as it compares: thousands separators and trailing zeros
/// dropped, a unit written against it split off ("5km" is "5 km").
fn digits_quantity(word: &str) -> Option<(String, Option<&'static str>)> {
    let split = word
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(word.len());
    let (number, rest) = word.split_at(split);
    let number = number.replace(',', "");
    if number.is_empty() || !number.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let number = if number.contains('.') {
        number
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    } else {
        number
    };
    match rest {
        "" => Some((number, None)),
        _ => match unit(rest) {
            Some(u) => Some((number, Some(u))),
            // "1st", "3d", "4k": the whole word is the quantity.
            None => Some((word.to_owned(), None)),
        },
    }
}

#[derive(Debug, Default)]
struct Analysis {
    /// Every word, lowercased.
    words: BTreeSet<String>,
    /// Every word, stemmed.
    stems: BTreeSet<String>,
    /// Quantities as they compare ("3", "5 km"), and whether any was written in digits.
    numbers: Vec<String>,
    digit_numbers: bool,
    negations: usize,
    /// Lemmas of every word, for opposites.
    lemmas: BTreeSet<String>,
    /// Distinctive words, in order of appearance.
    distinctive: Vec<String>,
    /// Content words, stemmed.
    content: BTreeSet<String>,
    /// Content words, stemmed, in order of first appearance.
    content_order: Vec<String>,
    /// Who fills which role: (word before the marker, marker, word after it), stemmed.
    bindings: Vec<roles::Binding>,
    word_count: usize,
}

fn analyse(text: &str) -> Analysis {
    let tokens = tokens(text);
    let mut a = Analysis {
        word_count: tokens.len(),
        ..Analysis::default()
    };
    let mut skip_unit = false;
    for (i, t) in tokens.iter().enumerate() {
        let w = t.word.as_str();
        a.words.insert(t.word.clone());
        a.stems.insert(stem(w));
        a.lemmas.insert(lemma(w));
        if NEGATION.contains(&w) {
            a.negations += 1;
        }
        if std::mem::take(&mut skip_unit) {
            continue;
        }
        let quantity = if t.digits {
            digits_quantity(w)
        } else {
            NUMBER_WORDS
                .iter()
                .find(|(name, _)| *name == w)
                .map(|(_, canon)| ((*canon).to_owned(), None))
        };
        if let Some((number, attached)) = quantity {
            // A unit word right after a number belongs to it; one-letter unit names and
            // "in" count only written against the number ("5m", not "5 m" or "3 in").
            let next = tokens.get(i + 1).map(|n| n.word.as_str());
            let following = next.filter(|n| n.len() > 1 && *n != "in").and_then(unit);
            let canon = match attached.or(following) {
                Some(u) => format!("{number} {u}"),
                None => number,
            };
            skip_unit = attached.is_none() && following.is_some();
            a.digit_numbers |= t.digits;
            a.numbers.push(canon);
            continue;
        }
        if t.distinctive {
            a.distinctive.push(t.word.clone());
        }
        if !NEGATION.contains(&w)
            && !STOP.contains(&w)
            && !MARKERS.contains(&w)
            && a.content.insert(stem(w))
        {
            a.content_order.push(stem(w));
        }
    }
    a.bindings = roles::bindings(&tokens);
    a
}

fn counts(words: &[String]) -> BTreeMap<&str, usize> {
    let mut map = BTreeMap::new();
    for w in words {
        *map.entry(w.as_str()).or_insert(0) += 1;
    }
    map
}

/// Whether one side asks for one of a pair of opposites and the other for the other;
/// and whether any opposite appears on one side only.
fn opposites(q: &Analysis, c: &Analysis) -> (bool, bool) {
    let mut one_sided = false;
    for (x, y) in OPPOSITES {
        let (x, y) = (lemma(x), lemma(y));
        let (qx, qy) = (q.lemmas.contains(&x), q.lemmas.contains(&y));
        let (cx, cy) = (c.lemmas.contains(&x), c.lemmas.contains(&y));
        if (qx && !qy && cy && !cx) || (qy && !qx && cx && !cy) {
            return (true, true);
        }
        one_sided |= (qx || qy) != (cx || cy);
    }
    (false, one_sided)
}

/// Checks whether serving `cached`'s answer for `query` is safe beyond similarity, and
/// returns the pair's lexical features when it is.
pub fn check(query: &str, cached: &str) -> Result<Features, Rejection> {
    let q = analyse(query);
    let c = analyse(cached);
    let mut one_sided = false;
    if counts(&q.numbers) != counts(&c.numbers) {
        // A number word on one side only ("which one") is a near call, not a rejection.
        let only_words_on_one_side = (q.numbers.is_empty() && !c.digit_numbers)
            || (c.numbers.is_empty() && !q.digit_numbers);
        if !only_words_on_one_side {
            return Err(Rejection::Numbers);
        }
        one_sided = true;
    }
    if q.negations != c.negations {
        return Err(Rejection::Negation);
    }
    let (opposite, opposite_one_sided) = opposites(&q, &c);
    if opposite {
        return Err(Rejection::Opposite);
    }
    one_sided |= opposite_one_sided;
    let unmatched = |a: &Analysis, b: &Analysis| {
        a.distinctive
            .iter()
            .any(|w| !b.words.contains(w) && !b.stems.contains(&stem(w)))
    };
    let (q_extra, c_extra) = (unmatched(&q, &c), unmatched(&c, &q));
    if q_extra && c_extra {
        return Err(Rejection::Distinctive);
    }
    one_sided |= q_extra || c_extra;
    if roles::swapped(&q, &c) {
        return Err(Rejection::Order);
    }
    let union = q.content.union(&c.content).count();
    let shared = q.content.intersection(&c.content).count();
    let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    let overlap = if union == 0 {
        1.0
    } else {
        shared as f32 / union as f32
    };
    let (short, long) = (
        q.word_count.min(c.word_count),
        q.word_count.max(c.word_count),
    );
    Ok(Features {
        overlap,
        length_ratio: if long == 0 {
            1.0
        } else {
            short as f32 / long as f32
        },
        one_sided,
        unmatched: [
            count(q.content.len() - shared),
            count(c.content.len() - shared),
        ],
        shared: count(shared),
        in_order: count(in_order(&q, &c)),
    })
}

/// The longest run of content words both questions share in the same order (not necessarily
/// adjacent): "A B C" / "C A B" keep two of three in order.
fn in_order(q: &Analysis, c: &Analysis) -> usize {
    let keep = |a: &Analysis, b: &Analysis| -> Vec<String> {
        a.content_order
            .iter()
            .filter(|w| b.content.contains(*w))
            .cloned()
            .collect()
    };
    let (x, y) = (keep(q, c), keep(c, q));
    let mut row = vec![0usize; y.len() + 1];
    for a in &x {
        let mut diagonal = 0;
        for (j, b) in y.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if a == b {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[y.len()]
}
