//! Relevant mode: what the latest user message needs is kept, with its speaker and
//! session, and the condensed part lands where roles keep alternating whatever the
//! shape of the conversation.

use serde_json::Value;

use super::*;
use crate::chat::{Call, Dialect, Endpoint};
use crate::compress::check_invariants;

/// Two named people over sessions, each opening with a `[Session N, date]` header; one
/// early message holds a fact, and the last user message asks about it.
fn two_people(turns: usize, opener: Role, question: &str) -> ChatRequest {
    let mut messages = Vec::new();
    let other = |role: &Role| {
        if *role == Role::User {
            Role::Assistant
        } else {
            Role::User
        }
    };
    let mut role = opener;
    for i in 0..turns {
        let mut text = String::new();
        if i % 10 == 0 {
            text.push_str(&format!(
                "[Session {}, 4:0{} pm on {} May, 2023]\n",
                i / 10 + 1,
                i % 7,
                i / 10 + 2
            ));
        }
        if i == 7 {
            text.push_str("Guess what, I finally finished the pottery course and made a blue teapot for my mom.");
        } else {
            text.push_str(&format!("Turn {i}: {FILLER}"));
        }
        let mut message = Message::text(role.clone(), text);
        let name = if role == Role::User {
            "Caroline"
        } else {
            "Melanie"
        };
        message.extra.insert("name".to_owned(), Value::from(name));
        messages.push(message);
        role = other(&role);
    }
    if messages.last().is_some_and(|m| m.role == Role::User) {
        messages.push(Message::text(
            Role::Assistant,
            "Anything else on your mind?",
        ));
    }
    messages.push(Message::text(Role::User, question));
    request(messages)
}

#[test]
fn the_excerpt_the_question_needs_is_kept_with_speaker_and_session() {
    let original = two_people(
        120,
        Role::Assistant,
        "What did Caroline make in the pottery course?",
    );
    let compressor = Compressor::offline(config(1_500, 4));
    let mut compressed = original.clone();
    let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    assert!(outcome.budget_met && outcome.after <= 1_500, "{outcome:?}");
    check_invariants(&original, &compressed, 4, true).expect("valid");
    let text = condensed_text(&compressed).expect("condensed");
    let header = text
        .find("[Session 1, 4:00 pm on 2 May, 2023]\n")
        .expect("its session");
    let excerpt = text
        .find("- Caroline: Guess what, I finally finished the pottery course and made a blue teapot for my mom.")
        .expect("the excerpt, with its speaker");
    assert!(header < excerpt, "{text}");
    assert!(!text[header..excerpt].contains("[Session 2"), "{text}");

    // Stable mode condenses the same turns without looking at the question.
    let compressor = Compressor::offline(stable(1_500, 4));
    let mut compressed = original.clone();
    compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    check_invariants(&original, &compressed, 4, true).expect("valid");
}

#[test]
fn roles_alternate_whatever_the_shape_in_both_dialects() {
    for opener in [Role::User, Role::Assistant] {
        for system in [false, true] {
            for recent in [3, 4] {
                let mut original =
                    two_people(60, opener.clone(), "Which course did Caroline finish?");
                if system {
                    original.messages.insert(
                        0,
                        Message::text(Role::System, "You are a friendly companion."),
                    );
                }
                for config in [config(800, recent), stable(800, recent)] {
                    let mode = config.mode;
                    let compressor = Compressor::offline(config);
                    let mut compressed = original.clone();
                    compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
                    let what = format!("{opener:?} system {system} recent {recent} {mode:?}");
                    check_invariants(&original, &compressed, recent, true)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    for dialect in [Dialect::OpenAi, Dialect::Ollama] {
                        let body = crate::dialect::encode(dialect, &Call::Chat(compressed.clone()));
                        let Ok(Call::Chat(decoded)) =
                            crate::dialect::decode(dialect, Endpoint::Chat, &body)
                        else {
                            panic!("{what}: {dialect:?} decodes a chat")
                        };
                        check_invariants(&original, &decoded, recent, true)
                            .unwrap_or_else(|e| panic!("{what} {dialect:?}: {e}"));
                    }
                }
            }
        }
    }
}
