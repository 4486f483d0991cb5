//! Fitting the budget: the ratio, blocks of a stable prefix, shortening inside the
//! protected part, `force` and the recovery retry, and the stats they leave.

use super::*;
use crate::compress::shorten::MIN_KEEP_TOKENS;
use crate::compress::{Encoding, check_invariants};

#[test]
fn the_condensed_part_respects_the_ratio_and_old_turns_shrink_most() {
    let compressor = Compressor::offline(stable(3_000, 4));
    // Every sentence is a key point, so the ratio decides what stays.
    let mut messages = vec![Message::text(Role::System, "You are a careful assistant.")];
    for i in 0..40 {
        messages.push(Message::text(
            Role::User,
            format!(
                "Turn {i}: I moved the cache settings to config/cache_{i}.toml. The service on port 80{i} now reads /etc/app/{i}.env. We decided to pin version 1.{i}.0 of `serde_json_{i}`. Backups of data/{i}.db run on Monday."
            ),
        ));
        messages.push(Message::text(
            Role::Assistant,
            format!(
                "Noted: config/cache_{i}.toml, port 80{i}, version 1.{i}.0, backups on Monday."
            ),
        ));
    }
    let original = request(messages);
    let mut compressed = original.clone();
    let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    let replaced: usize = original
        .messages
        .iter()
        .filter(|m| !compressed.messages.contains(m))
        .map(|m| compressor.counter().message(Encoding::O200kBase, m))
        .sum();
    let summary = Message::text(Role::User, condensed_text(&compressed).expect("condensed"));
    let tokens = compressor.counter().message(Encoding::O200kBase, &summary);
    assert!(
        tokens as f64 <= 0.3 * replaced as f64,
        "{tokens} of {replaced}"
    );
    assert!(outcome.after <= 3_000);
    let text = summary.flat_text();
    // Within the condensed turns, recent ones keep more of their key points.
    let turns = outcome.condensed_messages / 2;
    assert!(turns >= 8, "{outcome:?}");
    let kept = |range: std::ops::Range<usize>| {
        range
            .filter(|i| text.contains(&format!("config/cache_{i}.toml")))
            .count()
    };
    let (early, late) = (kept(0..turns / 3), kept(turns - turns / 3..turns));
    assert!(late > early, "{early} early vs {late} late:\n{text}");
}

#[test]
fn the_boundary_moves_in_blocks_so_the_prefix_stays_identical() {
    let compressor = Compressor::offline(stable(3_000, 4));
    let mut prefixes: Vec<(usize, Vec<Message>)> = Vec::new();
    for turns in 20..32 {
        let mut compressed = chat(turns);
        let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
        // Everything up to the first verbatim conversational turn.
        let first = compressed
            .messages
            .iter()
            .position(|m| !m.role.is_instruction() && !m.flat_text().starts_with("[thrifty:"))
            .expect("a kept turn");
        prefixes.push((
            outcome.condensed_messages,
            compressed.messages[..=first].to_vec(),
        ));
    }
    let mut cuts: Vec<usize> = prefixes.iter().map(|p| p.0).collect();
    cuts.dedup();
    assert!(cuts.len() >= 2 && cuts.len() < prefixes.len(), "{cuts:?}");
    for w in cuts.windows(2) {
        assert_eq!((w[1] - w[0]) % 4, 0, "{cuts:?}");
    }
    for pair in prefixes.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert_eq!(pair[0].1, pair[1].1, "same cut, same prefix");
        }
    }
}

#[test]
fn when_the_recent_part_alone_is_too_big_old_tool_outputs_shrink_first() {
    let big = |tag: &str| format!("{tag} {}\n", FILLER).repeat(40);
    let messages = vec![
        Message::text(Role::System, "agent"),
        Message::text(Role::User, "Investigate the crash."),
        call("a", "read_file", r#"{"path":"a.log"}"#),
        result("a", big("first")),
        call("b", "read_file", r#"{"path":"b.log"}"#),
        result("b", big("second")),
    ];
    let original = request(messages);
    let compressor = Compressor::offline(config(2_000, 8));
    let mut compressed = original.clone();
    let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    assert!(!outcome.budget_met);
    assert!(outcome.header_value().ends_with("; budget-not-met"));
    assert_eq!(outcome.shortened_messages, 1, "{outcome:?}");
    assert!(outcome.after < outcome.before);
    check_invariants(&original, &compressed, 8, false).expect("valid");
    assert!(
        compressed.messages[3]
            .flat_text()
            .contains("removed by thrifty")
    );
    assert_eq!(
        compressed.messages[5], original.messages[5],
        "the latest output is shortened last"
    );
    assert_eq!(compressed.messages[1], original.messages[1]);

    // With no room at all, the latest output is shortened too, the user message never.
    let compressor = Compressor::offline(config(600, 8));
    let mut compressed = original.clone();
    let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    assert_eq!(outcome.shortened_messages, 2, "{outcome:?}");
    assert_eq!(compressed.messages[1], original.messages[1]);
    assert!(outcome.after <= 600 + 2 * MIN_KEEP_TOKENS, "{outcome:?}");
}

#[test]
fn force_condenses_under_budget_and_harder_condenses_more() {
    let compressor = Compressor::offline(config(100_000, 8));
    let mut forced = chat(12);
    let outcome = compress(&compressor, &mut forced, Force::Force).expect("forced");
    assert!(outcome.budget_met);
    assert_eq!(outcome.condensed_messages, 25 - 1 - 8);

    let compressor = Compressor::offline(config(2_000, 8));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let normal = runtime
        .block_on(compressor.compress(&mut chat(20), None, Force::Auto, None))
        .expect("compressed");
    let mut harder = chat(20);
    let retried = runtime
        .block_on(compressor.harder(&mut harder, None, None))
        .expect("compressed");
    assert!(retried.after < normal.after, "{normal:?} {retried:?}");
    assert!(retried.budget <= 1_500);
    check_invariants(&chat(20), &harder, 4, true).expect("valid");
    assert_eq!(compressor.stats()["retries"], 1);
}

#[test]
fn stats_count_what_happened() {
    let compressor = Compressor::offline(config(2_000, 4));
    compress(&compressor, &mut chat(20), Force::Auto).expect("compressed");
    compress(&compressor, &mut chat(2), Force::Auto);
    let stats = compressor.stats();
    assert_eq!(stats["requests_checked"], 2);
    assert_eq!(stats["requests_compressed"], 1);
    assert!(
        stats["tokens_saved"].as_u64().unwrap_or(0) > 2_000,
        "{stats}"
    );
    assert!(stats["ratio"].as_f64().unwrap_or(1.0) < 0.5, "{stats}");
    assert_eq!(stats["summaries"]["created"], 0);
}
