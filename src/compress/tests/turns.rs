//! A chat's next turn: the old messages' analyses come from the cache, and what reaches
//! the upstream is byte for byte what a compressor that never saw the conversation sends.

use super::*;
use crate::compress::check_invariants;
use crate::compress::synthetic::{
    synthetic_agent_conversation_seeded, synthetic_chat_conversation_seeded,
};

/// Builds a conversation of so many messages from a seed.
type Generator = fn(usize, u64) -> ChatRequest;

/// `chat` with the assistant's answer and a new question appended.
fn next_turn(mut chat: ChatRequest, question: &str) -> ChatRequest {
    chat.messages
        .push(Message::text(Role::Assistant, "I think so. Anything else?"));
    chat.messages.push(Message::text(Role::User, question));
    chat
}

#[test]
fn the_next_turn_from_the_cache_equals_a_fresh_compression() {
    let shapes: [(Generator, &str); 2] = [
        (
            synthetic_chat_conversation_seeded,
            "What did Nate say about the guitar and the museum in July?",
        ),
        (
            synthetic_agent_conversation_seeded,
            "Now check whether src/handler_3.rs drops the final chunk too.",
        ),
    ];
    for (conversation, question) in shapes {
        for config in [config(6_000, 4), stable(6_000, 4)] {
            let mode = config.mode;
            let first = conversation(40, 7);
            let second = next_turn(first.clone(), question);
            let third = next_turn(second.clone(), "And the bakery?");

            let warm = Compressor::offline(config.clone());
            let outcome = compress(&warm, &mut first.clone(), Force::Auto).expect("compressed");
            assert_eq!(
                warm.analyses.analysed(),
                outcome.condensed_messages as u64,
                "{mode:?}: each condensed message is analysed once"
            );
            let mut cached = [second.clone(), third.clone()];
            let cached_outcomes = cached
                .each_mut()
                .map(|chat| compress(&warm, chat, Force::Auto).expect("compressed"));
            // Only the messages that aged out of the recent window since are analysed:
            // every turn condenses a prefix of the next one's condensed messages.
            assert_eq!(
                warm.analyses.analysed(),
                cached_outcomes[1].condensed_messages as u64,
                "{mode:?}"
            );

            for (i, original) in [second, third].into_iter().enumerate() {
                let fresh = Compressor::offline(config.clone());
                let mut uncached = original.clone();
                let outcome = compress(&fresh, &mut uncached, Force::Auto).expect("compressed");
                assert_eq!(cached[i], uncached, "{mode:?}, turn {}", i + 2);
                assert_eq!(cached_outcomes[i].after, outcome.after, "{mode:?}");
                check_invariants(&original, &cached[i], 4, true).expect("valid");
            }
        }
    }
}
