//! The guard's rules on hand-picked pairs.

use super::*;

fn passes(a: &str, b: &str) -> Features {
    match check(a, b) {
        Ok(features) => features,
        Err(rule) => panic!("{a:?} / {b:?} rejected by {}", rule.as_str()),
    }
}

#[test]
fn paraphrases_pass() {
    passes(
        "How do I reset my password?",
        "What is the way to reset my password?",
    );
    passes("How do I reset my password?", "how can I reset my password");
    passes(
        "What is the capital of France?",
        "what's the capital of France",
    );
    passes(
        "Hugging Face Hub is a platform to host Git-based models, datasets, and Spaces.",
        "Hugging Face Hub serves as a repository for hosting Git-based models, datasets, and Spaces.",
    );
    passes(
        "Transformers is a state-of-the-art machine learning library for PyTorch, TensorFlow, and JAX.",
        "Transformers is a cutting-edge machine learning library for PyTorch, TensorFlow, and JAX.",
    );
    passes(
        "how long is 5 km in miles",
        "how long is 5 kilometres in miles",
    );
    passes("turn on the light", "switch the light on");
}

#[test]
fn near_misses_are_rejected_with_a_reason() {
    let cases = [
        (
            "turn dark mode on",
            "turn dark mode off",
            Rejection::Opposite,
        ),
        (
            "how do I enable two-factor login",
            "how do I disable two-factor login",
            Rejection::Opposite,
        ),
        (
            "should I increase the timeout",
            "should I decrease the timeout",
            Rejection::Opposite,
        ),
        (
            "good morning in Spanish",
            "good morning in French",
            Rejection::Distinctive,
        ),
        (
            "say thank you in spanish",
            "say thank you in french",
            Rejection::Distinctive,
        ),
        ("give me 3 ideas", "give me 4 ideas", Rejection::Numbers),
        (
            "give me three ideas",
            "give me four ideas",
            Rejection::Numbers,
        ),
        ("how far is 5 km", "how far is 5 miles", Rejection::Numbers),
        ("I don't want onions", "I want onions", Rejection::Negation),
        (
            "coffee with sugar",
            "coffee without sugar",
            Rejection::Negation,
        ),
        (
            "how do I make coffee with sugar",
            "how do I make coffee without sugar",
            Rejection::Negation,
        ),
        (
            "flights from Paris to Rome",
            "flights from Rome to Paris",
            Rejection::Order,
        ),
        (
            "flights from paris to rome",
            "flights from rome to paris",
            Rejection::Order,
        ),
        (
            "Paris to Rome train times",
            "Rome to Paris train times",
            Rejection::Order,
        ),
        (
            "is a cat bigger than a dog",
            "is a dog bigger than a cat",
            Rejection::Order,
        ),
        (
            "McDonnell Douglas acquired Boeing",
            "McDonnell Douglas was acquired by Boeing",
            Rejection::Order,
        ),
        (
            "Did Google buy YouTube",
            "Did YouTube buy Google",
            Rejection::Order,
        ),
    ];
    for (a, b, rule) in cases {
        assert_eq!(check(a, b), Err(rule), "{a:?} / {b:?}");
        assert_eq!(check(b, a), Err(rule), "{b:?} / {a:?}");
    }
}

#[test]
fn differing_wording_is_a_feature_not_a_rejection() {
    let same = passes("how do I reset my password", "how do I reset my password");
    assert_eq!(same.overlap, 1.0);
    assert_eq!(same.length_ratio, 1.0);
    assert!(!same.one_sided);
    let changed = passes("how do I reset my password", "how do I change my password");
    assert!(
        (changed.overlap - 1.0 / 3.0).abs() < 1e-6,
        "reset/change differ, password is shared: {}",
        changed.overlap
    );
    let different = passes("how to bake bread at home", "how to brew beer at home");
    assert!(different.overlap < changed.overlap);
    let named = passes("how do I install Docker", "how do I install it");
    assert!(named.one_sided, "a name on one side only is a near call");
    let short = passes(
        "reset password",
        "how can I reset the password of my account",
    );
    assert!(short.length_ratio < 0.5);
}

#[test]
fn a_passing_pair_says_which_words_were_swapped_and_whether_the_rest_kept_their_order() {
    let swapped = passes(
        "most of these hotels were built along the avenue",
        "most of these homes were built along the avenue",
    );
    assert_eq!(swapped.unmatched, [1, 1], "{swapped:?}");
    assert_eq!(swapped.in_order, swapped.shared, "{swapped:?}");
    let added = passes(
        "How do I reset my password?",
        "What is the way to reset my password?",
    );
    assert_eq!(added.unmatched[0], 0, "{added:?}");
    assert_eq!(added.in_order, added.shared, "{added:?}");
    let reordered = passes(
        "what is the best way to learn french grammar quickly",
        "quickly learn french grammar: what is the best way",
    );
    assert_eq!(reordered.unmatched, [0, 0], "{reordered:?}");
    assert!(reordered.in_order < reordered.shared, "{reordered:?}");
}
