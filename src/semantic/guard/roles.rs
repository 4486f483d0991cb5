//! Roles in a question: which word a marker ("from", "to", "than", "by", …) binds to
//! which, so the guard can tell "from Paris to Rome" from "from Rome to Paris".

use std::collections::BTreeMap;

use super::words::{DETERMINERS, MARKERS, STOP};
use super::{Analysis, Token, counts, stem};

/// How far back a marker looks for the word it attaches to.
const HEAD_REACH: usize = 3;

/// A role: the content word before a marker, the marker, and the word it introduces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Binding {
    head: Option<String>,
    marker: String,
    arg: String,
}

fn is_word(t: &Token) -> bool {
    let w = t.word.as_str();
    t.digits || t.distinctive || (!STOP.contains(&w) && !MARKERS.contains(&w))
}

/// Every marker in `tokens` with the word it introduces and the word it follows.
pub(super) fn bindings(tokens: &[Token]) -> Vec<Binding> {
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !MARKERS.contains(&t.word.as_str()) {
            continue;
        }
        let arg = tokens[i + 1..]
            .iter()
            .find(|n| !DETERMINERS.contains(&n.word.as_str()))
            .filter(|n| is_word(n));
        let Some(arg) = arg else { continue };
        let head = tokens[i.saturating_sub(HEAD_REACH)..i]
            .iter()
            .rev()
            .take_while(|p| !MARKERS.contains(&p.word.as_str()))
            .find(|p| is_word(p))
            .map(|p| stem(&p.word));
        out.push(Binding {
            head,
            marker: t.word.clone(),
            arg: stem(&arg.word),
        });
    }
    out
}

/// Whether the two questions put the same words in different roles.
pub(super) fn swapped(q: &Analysis, c: &Analysis) -> bool {
    marker_changed(q, c)
        || filler_swapped(q, c)
        || head_swapped(q, c)
        || inverted(q, c)
        || inverted(c, q)
        || passive(q, c)
        || names_reordered(q, c)
}

/// A word introduced by one marker on one side and only by another on the other
/// ("from Paris" / "to Paris").
fn marker_changed(q: &Analysis, c: &Analysis) -> bool {
    q.bindings.iter().any(|b| {
        let there: Vec<&Binding> = c.bindings.iter().filter(|o| o.arg == b.arg).collect();
        !there.is_empty()
            && there.iter().all(|o| o.marker != b.marker)
            && !q
                .bindings
                .iter()
                .any(|o| o.arg == b.arg && there.iter().any(|t| t.marker == o.marker))
    })
}

/// The same word and marker with fillers that trade places ("bigger than a dog" / "bigger
/// than a cat", each side naming the other's filler elsewhere).
fn filler_swapped(q: &Analysis, c: &Analysis) -> bool {
    q.bindings.iter().any(|b| {
        c.bindings.iter().any(|o| {
            o.head == b.head
                && o.head.is_some()
                && o.marker == b.marker
                && o.arg != b.arg
                && c.stems.contains(&b.arg)
                && q.stems.contains(&o.arg)
                && !c
                    .bindings
                    .iter()
                    .any(|x| x.marker == b.marker && x.arg == b.arg)
        })
    })
}

/// The same filler after the same marker, attached to words that trade places ("born in A,
/// raised in B" / "born in B, raised in A").
fn head_swapped(q: &Analysis, c: &Analysis) -> bool {
    q.bindings.iter().any(|b| {
        c.bindings.iter().any(|o| match (&b.head, &o.head) {
            (Some(h1), Some(h2)) => {
                o.marker == b.marker
                    && o.arg == b.arg
                    && h1 != h2
                    && c.stems.contains(h1)
                    && q.stems.contains(h2)
                    && !c
                        .bindings
                        .iter()
                        .any(|x| x.marker == b.marker && x.arg == b.arg && x.head == b.head)
            }
            _ => false,
        })
    })
}

/// "Paris to Rome" / "Rome to Paris": the head and the filler of one role trade places.
fn inverted(q: &Analysis, c: &Analysis) -> bool {
    q.bindings.iter().any(|b| {
        b.head.as_ref().is_some_and(|h| {
            h != &b.arg
                && c.bindings
                    .iter()
                    .any(|o| o.marker == b.marker && o.arg == *h && o.head.as_ref() == Some(&b.arg))
        })
    })
}

/// "A acquired B" / "A was acquired by B": a passive on one side only, between names.
fn passive(q: &Analysis, c: &Analysis) -> bool {
    let by = |a: &Analysis| a.bindings.iter().filter(|b| b.marker == "by").count();
    by(q) != by(c) && q.distinctive.len() >= 2 && c.distinctive.len() >= 2
}

/// The same names in another order ("A acquired B" / "B acquired A").
fn names_reordered(q: &Analysis, c: &Analysis) -> bool {
    let shared = |a: &Analysis, b: &Analysis| -> Vec<String> {
        a.distinctive
            .iter()
            .filter(|w| b.distinctive.contains(w))
            .cloned()
            .collect()
    };
    let (qs, cs) = (shared(q, c), shared(c, q));
    counts(&qs) == counts(&cs) && qs.len() >= 2 && qs != cs && {
        let dedup = |v: &[String]| -> Vec<String> {
            let mut seen = BTreeMap::new();
            v.iter()
                .filter(|w| seen.insert(w.as_str(), ()).is_none())
                .cloned()
                .collect()
        };
        dedup(&qs) != dedup(&cs)
    }
}
