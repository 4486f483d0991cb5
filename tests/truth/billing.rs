//! What the fake upstream bills for a request, from the rules `tests/common/fake_llm.rs`
//! documents (not from its code, and never from thrifty's): prompt tokens are the words of every
//! message plus 3 per message; completion tokens are the words of the answer, which is
//! `"Echo: "` followed by the last user text. A Responses call (`fake_llm/responses.rs`) is
//! billed alike over its `input` items, plus the words of its `instructions`.
//!
//! Also OpenAI's own count of a prompt (tiktoken's o200k_base with the cookbook's framing), for
//! the figures no upstream reports: the prompt tokens compression removed, and a stream whose
//! upstream sent no usage (counted in cl100k_base, the stand-in for models no table knows).

use serde_json::Value;

/// Token counts of one side of a bill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
}

impl Tokens {
    pub fn total(self) -> u64 {
        self.prompt + self.completion
    }
}

/// The text of a message's content: a string, or its `text` parts joined by spaces.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|part| part["type"] == "text")
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A chat's messages, or a Responses call's input items (a string is one user message).
fn messages(request: &Value) -> Vec<Value> {
    match &request["input"] {
        Value::String(text) => vec![serde_json::json!({"role": "user", "content": text})],
        Value::Array(items) => items.clone(),
        _ => request["messages"].as_array().cloned().unwrap_or_default(),
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The last user text of a chat request.
pub fn last_user_text(request: &Value) -> String {
    messages(request)
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default()
}

/// What the fake bills for a chat request it answers (in either dialect).
pub fn billed(request: &Value) -> Tokens {
    Tokens {
        prompt: prompt(request),
        completion: words(&format!("Echo: {}", last_user_text(request))),
    }
}

/// The fake's prompt tokens: words of every message plus 3 per message.
pub fn prompt(request: &Value) -> u64 {
    let instructions = request["instructions"].as_str().map_or(0, words);
    instructions
        + messages(request)
            .iter()
            .map(|m| words(&content_text(&m["content"])) + 3)
            .sum::<u64>()
}

/// OpenAI's prompt tokens for a gpt-4o family model: 3 per message, 1 for its role, its text in
/// o200k_base, and 3 priming the reply.
pub fn openai_prompt(request: &Value) -> u64 {
    framed_prompt(request, tiktoken_rs::o200k_base_singleton())
}

/// A model no table knows, counted the way OpenAI's cookbook frames a chat, in cl100k_base
/// (the stated stand-in): its prompt, and its answer (`"Echo: "` and the last user text).
pub fn stand_in_count(request: &Value) -> Tokens {
    let bpe = tiktoken_rs::cl100k_base_singleton();
    let answer = format!("Echo: {}", last_user_text(request));
    Tokens {
        prompt: framed_prompt(request, bpe),
        completion: bpe.encode_ordinary(&answer).len() as u64,
    }
}

/// 3 per message, 1 for its role, its text in `bpe`, and 3 priming the reply.
fn framed_prompt(request: &Value, bpe: &tiktoken_rs::CoreBPE) -> u64 {
    let per_message: usize = messages(request)
        .iter()
        .map(|m| 3 + 1 + bpe.encode_ordinary(&content_text(&m["content"])).len())
        .sum();
    (per_message + 3) as u64
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn follows_the_fakes_documented_rule() {
        let request = json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "two words"}]}
        ]});
        assert_eq!(
            billed(&request),
            Tokens {
                prompt: 2 + 3 + 2 + 3,
                completion: 3
            }
        );
    }
}
