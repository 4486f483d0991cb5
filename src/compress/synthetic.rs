//! Synthetic conversations for tests and benchmarks: a coding agent's tool calls and
//! their results, and a long chat between two people, the same for the same seed.
//! This room must not be on the request path.

use std::fmt::Write as _;

use serde_json::json;

use crate::chat::{ChatRequest, Message, Role, ToolCall};

/// A deterministic agent conversation for tests and benchmarks: a system prompt,
/// a task, then assistant tool calls and their results (every ninth one fails),
/// about 800 tokens per message on average.
pub fn synthetic_agent_conversation(messages: usize) -> ChatRequest {
    synthetic_agent_conversation_seeded(messages, 0)
}

/// The same kind of conversation with other words and numbers for each `seed`, so a
/// benchmark can show the compressor a conversation it has never counted.
pub fn synthetic_agent_conversation_seeded(messages: usize, seed: u64) -> ChatRequest {
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn word(&mut self) -> &'static str {
            WORDS[(self.next() % WORDS.len() as u64) as usize]
        }
    }
    const WORDS: &[&str] = &[
        "config", "request", "budget", "token", "buffer", "stream", "handler", "store", "cache",
        "retry", "timeout", "parse", "render", "message", "upstream", "client", "server", "limit",
        "window", "summary", "result", "value", "error", "index", "offset", "length",
    ];
    const TOOLS: &[&str] = &["read_file", "bash", "grep", "write_file"];
    // Seed 0 keeps the original stream; xorshift needs a state other than zero.
    let mut rng = Rng((0x2545_f491_4f6c_dd1d ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).max(1));
    let mut out = vec![
        Message::text(
            Role::System,
            "You are a coding agent. Use the tools to inspect and change the repository. Keep answers short.",
        ),
        Message::text(
            Role::User,
            "The proxy drops the last chunk of streamed answers when the upstream closes early. Find the cause in src/stream.rs, fix it, and make sure `cargo test` passes.",
        ),
    ];
    let mut step = 0;
    while out.len() + 2 <= messages {
        let tool = TOOLS[step % TOOLS.len()];
        let file = format!("src/{}_{}.rs", rng.word(), step % 23);
        let id = format!("call_{step:04}");
        let arguments = match tool {
            "bash" => json!({"command": format!("cargo test {}_{}", rng.word(), step)}).to_string(),
            "grep" => json!({"pattern": format!("fn {}_{}", rng.word(), rng.word())}).to_string(),
            "write_file" => {
                json!({"path": file, "content": format!("pub fn {}() {{}}", rng.word())})
                    .to_string()
            }
            _ => json!({"path": file}).to_string(),
        };
        out.push(Message {
            tool_calls: vec![ToolCall {
                id: Some(id.clone()),
                name: tool.to_owned(),
                arguments,
            }],
            ..Message::text(
                Role::Assistant,
                format!(
                    "Step {step}: checking how `{}_{}` handles the {} in {file} before changing it.",
                    rng.word(),
                    rng.word(),
                    rng.word()
                ),
            )
        });
        let mut body = String::new();
        if step % 9 == 4 {
            let _ = writeln!(
                body,
                "error[E0599]: no method named `{}_{}` found for struct `{}` in {file}",
                rng.word(),
                rng.word(),
                rng.word()
            );
        }
        for line in 0..62 {
            let _ = writeln!(
                body,
                "{line:>4}    let {}_{} = self.{}.{}({}, {}_{}) ?; // {} {} {}",
                rng.word(),
                rng.next() % 100,
                rng.word(),
                rng.word(),
                rng.next() % 1000,
                rng.word(),
                rng.word(),
                rng.word(),
                rng.word(),
                rng.word()
            );
        }
        if step % 9 == 4 {
            body.push_str("error: could not compile `thrifty` (lib) due to 1 previous error\n");
        }
        out.push(Message {
            tool_call_id: Some(id),
            ..Message::text(Role::Tool, body)
        });
        step += 1;
    }
    ChatRequest {
        model: "gpt-4o".to_owned(),
        messages: out,
        stream: false,
        shaping: serde_json::Map::new(),
        incidental: serde_json::Map::new(),
    }
}

/// A deterministic chat between two named people over sessions (each opening with a
/// `[Session N, date]` header), about 800 tokens per message, ending with a question;
/// for measuring relevant compression on text that is all prose.
pub fn synthetic_chat_conversation_seeded(messages: usize, seed: u64) -> ChatRequest {
    const WORDS: &[&str] = &[
        "garden", "painting", "guitar", "trip", "museum", "recipe", "marathon", "novel", "camera",
        "puppy", "concert", "workshop", "beach", "mountain", "project", "class", "friend",
        "sister", "weekend", "festival", "bakery", "library", "bike", "lake",
    ];
    const MONTHS: &[&str] = &["January", "March", "May", "July", "September", "November"];
    let mut state = (0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d)).max(1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(messages);
    for i in 0..messages.saturating_sub(1) {
        let (role, name) = if i % 2 == 0 {
            (Role::User, "Joanna")
        } else {
            (Role::Assistant, "Nate")
        };
        let mut text = String::new();
        if i % 20 == 0 {
            let _ = writeln!(
                text,
                "[Session {}, 2:{:02} pm on {} {}, 2023]",
                i / 20 + 1,
                next() % 60,
                next() % 28 + 1,
                MONTHS[(i / 20) % MONTHS.len()]
            );
        }
        while text.len() < 3_400 {
            let month = MONTHS[(next() % MONTHS.len() as u64) as usize];
            let [a, b, c] =
                [next(), next(), next()].map(|n| WORDS[(n % WORDS.len() as u64) as usize]);
            let _ = write!(
                text,
                "Last {month} I went to the {a} with my {b} and we talked about the {c} for {} hours. ",
                next() % 9 + 1
            );
        }
        let mut message = Message::text(role, text);
        message
            .extra
            .insert("name".to_owned(), serde_json::Value::from(name));
        out.push(message);
    }
    out.push(Message::text(
        Role::User,
        "What did I say about the bakery and the marathon back in May?",
    ));
    ChatRequest {
        model: "gpt-4o".to_owned(),
        messages: out,
        stream: false,
        shaping: serde_json::Map::new(),
        incidental: serde_json::Map::new(),
    }
}
