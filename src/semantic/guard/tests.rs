//! The guard's rules on hand-picked pairs.

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
