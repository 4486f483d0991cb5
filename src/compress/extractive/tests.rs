//! The extractive strategy's tests: what is kept, how tools are summarized, what
//! counts as a failure, a path or an identifier.

use super::facts::{looks_like_identifier, looks_like_path};
use super::tools::mentions_failure;
use super::*;
use crate::chat::ToolCall;

fn source(message: &Message) -> Source<'_> {
    Source {
        message,
        tokens: message.flat_text().len() / 4 + 4,
        after_request: false,
    }
}

fn call(id: &str, name: &str, arguments: &str) -> Message {
    Message {
        tool_calls: vec![ToolCall {
            id: Some(id.to_owned()),
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        }],
        ..Message::text(Role::Assistant, "")
    }
}

fn result(id: &str, text: &str) -> Message {
    Message {
        tool_call_id: Some(id.to_owned()),
        ..Message::text(Role::Tool, text)
    }
}

#[test]
fn tool_calls_are_summarized_with_counts_targets_and_error_lines() {
    let mut messages = Vec::new();
    for i in 0..12 {
        let id = format!("r{i}");
        messages.push(call(
            &id,
            "read_file",
            &format!(r#"{{"path":"src/f{i}.rs"}}"#),
        ));
        let body = if i == 7 {
            "Error: No such file or directory (os error 2)".to_owned()
        } else {
            format!(
                "fn f{i}() {{}}\n{}// handles the error case in the middle\n{}",
                "x\n".repeat(300),
                "y\n".repeat(700)
            )
        };
        messages.push(result(&id, &body));
    }
    for i in 0..5 {
        let id = format!("w{i}");
        messages.push(call(
            &id,
            "write_file",
            &format!(r#"{{"path":"out/{i}.txt","content":"..."}}"#),
        ));
        messages.push(result(&id, "wrote 12 bytes"));
    }
    let sources: Vec<Source<'_>> = messages.iter().map(source).collect();
    let text = condense(&sources, 400, None);
    assert!(
        text.contains("read_file ×12 (11 ok, 1 failed): src/f7.rs, src/f8.rs, src/f9.rs, src/f10.rs, src/f11.rs, +7 more"),
        "{text}"
    );
    assert!(text.contains("write_file ×5 (5 ok)"), "{text}");
    assert!(
        text.contains("- read_file src/f7.rs: Error: No such file or directory (os error 2)"),
        "{text}"
    );
    assert!(
        text.starts_with("[thrifty: 34 earlier messages condensed (17 assistant, 17 tool results)"),
        "{text}"
    );
}

#[test]
fn ollama_tool_results_answer_calls_in_order() {
    let mut two = call("", "grep", r#"{"pattern":"deprecated"}"#);
    two.tool_calls[0].id = None;
    two.tool_calls.push(ToolCall {
        id: None,
        name: "bash".to_owned(),
        arguments: r#"{"command":"cargo build"}"#.to_owned(),
    });
    let messages = [
        two,
        Message::text(Role::Tool, "src/a.rs:3: deprecated"),
        Message::text(
            Role::Tool,
            "error[E0425]: cannot find value `x` in this scope",
        ),
    ];
    let sources: Vec<Source<'_>> = messages.iter().map(source).collect();
    let text = condense(&sources, 200, None);
    assert!(text.contains("grep ×1 (1 ok): deprecated"), "{text}");
    assert!(
        text.contains("bash ×1 (0 ok, 1 failed): cargo build"),
        "{text}"
    );
    assert!(text.contains("- bash cargo build: error[E0425]"), "{text}");
}

#[test]
fn failures_are_recognised_and_code_is_not() {
    for failure in [
        "test result: FAILED. 2 passed; 10 failed",
        "=== 1 failed, 2 passed in 0.12s ===",
        "ModuleNotFoundError: No module named 'foo'",
        "error[E0425]: cannot find value `x` in this scope",
        "  File \"x.py\", line 4 SyntaxError: invalid syntax",
        "Traceback (most recent call last):",
        "thread 'main' panicked at src/main.rs:3:5:",
        "bash: foo: command not found",
        "cat: nope.txt: No such file or directory",
    ] {
        assert!(mentions_failure(failure), "{failure}");
    }
    for fine in [
        "test result: ok. 12 passed; 0 failed; 0 ignored",
        "Finished with no errors",
        "let error_58 = self.timeout.error(491, stream_request)?;",
        "    return Err(Error::NotFound);",
        "impl std::error::Error for ProxyError {}",
        "error_count += 1",
    ] {
        assert!(!mentions_failure(fine), "{fine}");
    }
}

#[test]
fn key_points_prefer_facts_and_keep_them_verbatim() {
    let messages = [
        Message::text(
            Role::User,
            "Hi there! My name is Dana and I live in Lisbon. I prefer vegetarian food. The weather is nice and it is a fine day to chat about many different things here.",
        ),
        Message::text(
            Role::Assistant,
            "Nice to meet you, Dana. That sounds lovely, and there is plenty to talk about today, so let us just chat for a while about whatever you want.",
        ),
        Message::text(
            Role::User,
            "We decided to deploy on March 3rd using config/prod.toml and the `deploy_service` script.",
        ),
        Message::text(
            Role::Assistant,
            "Sounds good. Everything seems fine and I am happy to help with any other questions that you might have along the way.",
        ),
    ];
    let sources: Vec<Source<'_>> = messages.iter().map(source).collect();
    let text = condense(&sources, 100, None);
    assert!(text.contains("We decided to deploy on March 3rd using config/prod.toml and the `deploy_service` script."), "{text}");
    assert!(
        text.contains("My name is Dana and I live in Lisbon."),
        "{text}"
    );
    assert!(!text.contains("Everything seems fine"), "{text}");
}

#[test]
fn recent_material_ranks_above_old_material() {
    let mut messages = Vec::new();
    for i in 0..20 {
        messages.push(Message::text(
            Role::User,
            format!("Please update src/module_{i}.rs to use the new API."),
        ));
    }
    let sources: Vec<Source<'_>> = messages.iter().map(source).collect();
    let text = condense(&sources, 120, None);
    assert!(text.contains("module_19.rs"), "{text}");
    assert!(!text.contains("module_0.rs"), "{text}");
}

#[test]
fn paths_and_identifiers_are_recognised() {
    for path in [
        "src/main.rs",
        "/etc/hosts",
        "./run.sh",
        "config.toml",
        "tests/test_api.py",
    ] {
        assert!(looks_like_path(path), "{path}");
    }
    for not in ["e.g", "3.14", "and/or", "http://x.y/z"] {
        assert!(!looks_like_path(not), "{not}");
    }
    assert!(looks_like_identifier("snake_case_name"));
    assert!(looks_like_identifier("camelCase"));
    assert!(!looks_like_identifier("plain"));
}

#[test]
fn clipping_respects_characters() {
    assert_eq!(clip("héllo wörld", 8), "héll…");
    assert_eq!(clip("short", 10), "short");
}
