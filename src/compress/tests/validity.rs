//! The invariants: what is left alone, what stays verbatim and in place, tool
//! calls with their results, placeholders, and validity in both dialects.

use serde_json::json;

use super::*;
use crate::chat::{Call, Content, Dialect, Endpoint, Part, PartKind};
use crate::compress::{Encoding, check_invariants};

#[test]
fn requests_under_budget_or_turned_off_are_left_alone() {
    let compressor = Compressor::offline(config(100_000, 4));
    let mut small = chat(10);
    let original = small.clone();
    assert_eq!(compress(&compressor, &mut small, Force::Auto), None);
    assert_eq!(small, original);

    let compressor = Compressor::offline(config(500, 4));
    assert_eq!(compress(&compressor, &mut small, Force::Off), None);
    assert_eq!(small, original);
    let disabled = Compressor::offline(CompressionConfig {
        enabled: false,
        ..config(500, 4)
    });
    assert_eq!(compress(&disabled, &mut small, Force::Force), None);
    assert_eq!(small, original);

    assert_eq!(Force::from_header(Some("off")), Force::Off);
    assert_eq!(Force::from_header(Some(" FORCE ")), Force::Force);
    assert_eq!(Force::from_header(Some("maybe")), Force::Auto);
    assert_eq!(Force::from_header(None), Force::Auto);
}

#[test]
fn over_budget_conversations_fit_and_keep_their_invariants() {
    let compressor = Compressor::offline(config(2_000, 4));
    let original = chat(20);
    let mut compressed = original.clone();
    let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    assert!(outcome.before > 4_000, "{outcome:?}");
    assert!(outcome.after <= 2_000, "{outcome:?}");
    assert!(outcome.budget_met);
    assert_eq!(
        outcome.header_value(),
        format!("{}->{}", outcome.before, outcome.after)
    );
    assert_eq!(outcome.strategy, "extractive");
    check_invariants(&original, &compressed, 4, true).expect("valid");
    // The kept turns open with a user message, so the condensed part is a section at the
    // end of the system prompt: no two user messages in a row.
    let system = compressed.messages[0].flat_text();
    let own = original.messages[0].flat_text();
    assert!(
        system.starts_with(&format!("{own}\n\n[thrifty:")),
        "{system}"
    );
    assert_eq!(compressed.messages[1].role, Role::User);
    assert_eq!(
        compressor
            .counter()
            .request(Encoding::O200kBase, &compressed)
            .total(),
        outcome.after
    );
}

#[test]
fn instructions_stay_verbatim_and_in_place() {
    let mut original = chat(12);
    original
        .messages
        .insert(1, Message::text(Role::Developer, "Answer in English."));
    original
        .messages
        .insert(9, Message::text(Role::System, "From now on, be brief."));
    let compressor = Compressor::offline(config(1_500, 4));
    let mut compressed = original.clone();
    compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    check_invariants(&original, &compressed, 4, true).expect("valid");
    assert_eq!(compressed.messages[0].role, Role::System);
    assert_eq!(compressed.messages[1].role, Role::Developer);
    let mid = compressed
        .messages
        .iter()
        .position(|m| m.flat_text() == "From now on, be brief.")
        .expect("kept");
    let summary = compressed
        .messages
        .iter()
        .position(|m| m.flat_text().contains("[thrifty:"))
        .expect("condensed");
    assert!(summary < mid);
}

#[test]
fn a_tool_call_and_its_results_stay_together() {
    let mut messages = vec![
        Message::text(Role::System, "agent"),
        Message::text(Role::User, "Fix the build."),
    ];
    for i in 0..10 {
        messages.push(Message {
            tool_calls: vec![
                ToolCall {
                    id: Some(format!("a{i}")),
                    name: "read_file".to_owned(),
                    arguments: format!(r#"{{"path":"src/{i}.rs"}}"#),
                },
                ToolCall {
                    id: Some(format!("b{i}")),
                    name: "bash".to_owned(),
                    arguments: r#"{"command":"cargo check"}"#.to_owned(),
                },
                ToolCall {
                    id: Some(format!("c{i}")),
                    name: "grep".to_owned(),
                    arguments: r#"{"pattern":"todo"}"#.to_owned(),
                },
            ],
            ..Message::text(Role::Assistant, format!("Looking at part {i}."))
        });
        for id in ["a", "b", "c"] {
            messages.push(result(&format!("{id}{i}"), format!("{FILLER}\n").repeat(3)));
        }
    }
    let original = request(messages);
    // A window of 2 would start inside the last group: it widens to the call.
    let compressor = Compressor::offline(config(1_500, 2));
    let mut compressed = original.clone();
    let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    check_invariants(&original, &compressed, 2, outcome.budget_met).expect("valid");
    let tail = &original.messages[original.messages.len() - 4..];
    assert!(compressed.messages.ends_with(tail) || !outcome.budget_met);
    assert!(
        !compressed.messages[2].tool_calls.is_empty()
            || compressed.messages[2].flat_text().starts_with("[thrifty:")
    );
}

#[test]
fn the_latest_user_message_is_kept_when_it_is_older_than_the_window() {
    let mut messages = vec![
        Message::text(Role::System, "agent"),
        Message::text(Role::User, "Earlier question about config/old.toml."),
        Message::text(Role::Assistant, "Earlier answer."),
        Message::text(
            Role::User,
            "Please migrate the parser to the new API and run the tests.",
        ),
    ];
    for i in 0..30 {
        let id = format!("t{i}");
        messages.push(call(
            &id,
            "bash",
            &format!(r#"{{"command":"pytest tests/test_{i}.py"}}"#),
        ));
        messages.push(result(&id, format!("{FILLER}\n").repeat(2)));
    }
    let original = request(messages);
    let compressor = Compressor::offline(config(1_500, 4));
    let mut compressed = original.clone();
    let outcome = compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    assert!(outcome.budget_met, "{outcome:?}");
    check_invariants(&original, &compressed, 4, true).expect("valid");
    let task = compressed
        .messages
        .iter()
        .position(|m| m == &original.messages[3])
        .expect("task kept");
    let summary = condensed_text(&compressed).expect("condensed");
    // The task is followed by the agent's next kept call; the condensed work before and
    // after it is a section of the system prompt.
    assert!(!compressed.messages[task + 1].tool_calls.is_empty());
    assert!(compressed.messages[0].flat_text().contains("[thrifty:"));
    assert!(
        summary.contains("Before the latest user message:") || !summary.contains("Key points"),
        "{summary}"
    );
    assert!(summary.contains("bash ×"), "{summary}");
}

#[test]
fn non_text_parts_become_placeholders() {
    let mut original = chat(12);
    original.messages[3] = Message {
        content: Content::Parts(vec![
            Part {
                kind: PartKind::Text("The error shows up in config/app.toml, see".to_owned()),
                raw: json!({"type": "text", "text": "The error shows up in config/app.toml, see"}),
            },
            Part {
                kind: PartKind::Image,
                raw: json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}),
            },
            Part {
                kind: PartKind::File(Some("report.pdf".to_owned())),
                raw: json!({"type": "file", "file": {"filename": "report.pdf", "file_data": "AAAA"}}),
            },
        ]),
        ..Message::text(Role::User, "")
    };
    let compressor = Compressor::offline(config(1_500, 4));
    let mut compressed = original.clone();
    compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    check_invariants(&original, &compressed, 4, true).expect("valid");
    let summary = condensed_text(&compressed).expect("condensed");
    assert!(summary.contains("[image] [file: report.pdf]"), "{summary}");
    assert!(!summary.contains("base64"), "{summary}");
}

#[test]
fn compressed_requests_stay_valid_in_both_dialects() {
    let mut messages = vec![
        Message::text(Role::System, "agent"),
        Message::text(Role::User, "go"),
    ];
    for i in 0..20 {
        let id = format!("t{i}");
        messages.push(call(&id, "read_file", r#"{"path":"src/lib.rs"}"#));
        messages.push(result(&id, format!("{FILLER}\n").repeat(2)));
    }
    messages.push(Message::text(Role::User, "Now summarise what you found."));
    let compressor = Compressor::offline(config(1_200, 3));
    let mut compressed = request(messages);
    compress(&compressor, &mut compressed, Force::Auto).expect("compressed");
    for dialect in [Dialect::OpenAi, Dialect::Ollama] {
        let body = crate::dialect::encode(dialect, &Call::Chat(compressed.clone()));
        let decoded = crate::dialect::decode(dialect, Endpoint::Chat, &body).expect("decodes");
        let Call::Chat(decoded) = decoded else {
            panic!("a chat")
        };
        let roles: Vec<&str> = decoded.messages.iter().map(|m| m.role.as_str()).collect();
        let original: Vec<&str> = compressed
            .messages
            .iter()
            .map(|m| m.role.as_str())
            .collect();
        assert_eq!(roles, original, "{dialect:?}");
    }
}
