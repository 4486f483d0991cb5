//! Cache keys: SHA-256 over a canonical encoding of exactly the request fields
//! that decide the answer.
//!
//! The key functions destructure the canonical request, so a new field is a
//! compile error here until someone decides whether it belongs in the key.
//! Object keys are sorted recursively, so field order never splits entries.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::chat::{
    Call, ChatRequest, CompletionRequest, Content, Dialect, EmbeddingRequest, Endpoint, Message,
    Part, Piece, ToolCall,
};
use crate::digest;

/// Who may share an entry: one tenant (or everyone, when sharing is on) and a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `None` when tenants share entries.
    pub tenant: Option<String>,
    pub namespace: Option<String>,
}

/// A hex SHA-256 cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub String);

impl CacheKey {
    /// The short form shown in `x-thrifty-cache-key`.
    pub fn short(&self) -> &str {
        &self.0[..16]
    }
}

/// Feeds values into a hasher with unambiguous framing.
struct Canonical(Sha256);

impl Canonical {
    fn new(kind: &str) -> Self {
        let mut c = Canonical(Sha256::new());
        c.str("thrifty-cache-v1");
        c.str(kind);
        c
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.0.update([1]);
                self.str(s);
            }
            None => self.0.update([0]),
        }
    }

    fn value(&mut self, v: &Value) {
        let mut text = Vec::new();
        write_value(&mut text, v);
        self.bytes(&text);
    }

    fn fields(&mut self, map: &Map<String, Value>) {
        let mut text = Vec::new();
        write_object(&mut text, map);
        self.bytes(&text);
    }

    fn scope(&mut self, scope: &Scope, dialect: Dialect, upstream: &str) {
        self.opt(scope.tenant.as_deref());
        self.opt(scope.namespace.as_deref());
        self.str(dialect.as_str());
        self.str(upstream);
    }

    fn finish(self) -> CacheKey {
        CacheKey(digest::hex(&self.0.finalize()))
    }
}

/// Writes JSON text with object keys sorted at every level (compact, as `serde_json` writes
/// it): the canonical form of a value in a key.
fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => write_object(out, map),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        scalar => write_scalar(out, scalar),
    }
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_scalar(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// A string, number, boolean or null as `serde_json` writes it (into a `Vec`, which cannot
/// fail).
fn write_scalar<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, scalar: &T) {
    let _ = serde_json::to_writer(out, scalar);
}

fn message(c: &mut Canonical, message: &Message) {
    let Message {
        role,
        content,
        tool_calls,
        tool_call_id,
        extra,
    } = message;
    c.str(role.as_str());
    match content {
        Content::Absent => c.str("absent"),
        Content::Text(text) => {
            c.str("text");
            c.str(text);
        }
        Content::Parts(parts) => {
            c.str("parts");
            c.0.update((parts.len() as u64).to_le_bytes());
            for Part { kind: _, raw } in parts {
                c.value(raw);
            }
        }
    }
    c.0.update((tool_calls.len() as u64).to_le_bytes());
    for ToolCall {
        id,
        name,
        arguments,
    } in tool_calls
    {
        c.opt(id.as_deref());
        c.str(name);
        c.str(arguments);
    }
    c.opt(tool_call_id.as_deref());
    c.fields(extra);
}

/// The key of a chat or completion call; embeddings are keyed per input instead.
pub fn answer_key(
    scope: &Scope,
    dialect: Dialect,
    upstream: &str,
    call: &Call,
) -> Option<CacheKey> {
    match call {
        // A Responses call never shares an entry with a chat: their answers differ in shape.
        Call::Chat(chat) => Some(conversation_key("chat", scope, dialect, upstream, chat)),
        Call::Responses(chat) => Some(conversation_key(
            "responses",
            scope,
            dialect,
            upstream,
            chat,
        )),
        Call::Completion(CompletionRequest {
            model,
            prompt,
            stream: _,
            shaping,
            incidental: _,
        }) => {
            let mut c = Canonical::new("completion");
            c.scope(scope, dialect, upstream);
            c.str(model);
            c.value(prompt);
            c.fields(shaping);
            Some(c.finish())
        }
        Call::Embedding(_) => None,
    }
}

/// The key of a chat's or a Responses call's conversation, `kind` telling them apart.
fn conversation_key(
    kind: &str,
    scope: &Scope,
    dialect: Dialect,
    upstream: &str,
    chat: &ChatRequest,
) -> CacheKey {
    let ChatRequest {
        model,
        messages,
        stream: _,
        shaping,
        incidental: _,
    } = chat;
    let mut c = Canonical::new(kind);
    c.scope(scope, dialect, upstream);
    c.str(model);
    c.0.update((messages.len() as u64).to_le_bytes());
    for m in messages {
        message(&mut c, m);
    }
    c.fields(shaping);
    c.finish()
}

/// The partition a chat's last user message is compared within: everything
/// but that message must match exactly (scope, model, parameters, tools and
/// the given context messages). Responses calls have partitions of their own.
pub fn partition_key(
    scope: &Scope,
    dialect: Dialect,
    upstream: &str,
    endpoint: Endpoint,
    chat: &ChatRequest,
    context: &[&Message],
) -> CacheKey {
    let ChatRequest {
        model,
        messages: _,
        stream: _,
        shaping,
        incidental: _,
    } = chat;
    let mut c = Canonical::new(match endpoint {
        Endpoint::Responses => "semantic-partition-responses",
        _ => "semantic-partition",
    });
    c.scope(scope, dialect, upstream);
    c.str(model);
    c.fields(shaping);
    c.0.update((context.len() as u64).to_le_bytes());
    for m in context {
        message(&mut c, m);
    }
    c.finish()
}

/// The key of one input of an embedding call. Token ids are keyed as ids, apart from any
/// text: the same ids under the same model name the same text.
pub fn embedding_key(
    scope: &Scope,
    dialect: Dialect,
    upstream: &str,
    request: &EmbeddingRequest,
    piece: Piece<'_>,
) -> CacheKey {
    let EmbeddingRequest {
        model,
        input: _,
        legacy,
        shaping,
        incidental: _,
    } = request;
    let mut c = Canonical::new(match (*legacy, piece) {
        (true, _) => "embedding-legacy",
        (false, Piece::Text(_)) => "embedding",
        (false, Piece::Ids(_)) => "embedding-ids",
    });
    c.scope(scope, dialect, upstream);
    c.str(model);
    c.fields(shaping);
    match piece {
        Piece::Text(text) => c.str(text),
        Piece::Ids(ids) => {
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            c.str(&ids.join(","));
        }
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::dialect;

    #[test]
    fn canonical_text_is_serde_jsons_text_of_the_value_with_sorted_keys() {
        fn sorted(value: &Value) -> Value {
            match value {
                Value::Object(map) => {
                    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.clone(), sorted(v)))
                            .collect(),
                    )
                }
                Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
                other => other.clone(),
            }
        }
        let value = json!({
            "z": [1, 2.5, -3e-7, {"b": null, "a": true}],
            "a\"\u{1}é": "line\nbreak \u{7f} \u{2028} \\",
            "m": {"y": {}, "x": [], "w": 18446744073709551615u64, "v": -9223372036854775808i64},
        });
        let canonical = |value: &Value| {
            let mut text = Vec::new();
            write_value(&mut text, value);
            String::from_utf8(text).expect("JSON text")
        };
        assert_eq!(canonical(&value), sorted(&value).to_string());
        assert_eq!(canonical(&json!("s")), "\"s\"");
    }

    fn key(body: Value, tenant: &str) -> CacheKey {
        let call = dialect::decode(Dialect::OpenAi, Endpoint::Chat, body.to_string().as_bytes())
            .expect("decodes");
        let scope = Scope {
            tenant: Some(tenant.to_owned()),
            namespace: None,
        };
        answer_key(&scope, Dialect::OpenAi, "openai", &call).expect("chat has a key")
    }

    fn base() -> Value {
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0})
    }

    #[test]
    fn fields_that_do_not_change_the_answer_do_not_change_the_key() {
        let mut with_incidentals = base();
        with_incidentals["stream"] = json!(true);
        with_incidentals["stream_options"] = json!({"include_usage": true});
        with_incidentals["user"] = json!("u-1");
        with_incidentals["metadata"] = json!({"trace": "x"});
        assert_eq!(key(base(), "a"), key(with_incidentals, "a"));
    }

    #[test]
    fn fields_that_change_the_answer_change_the_key() {
        let original = key(base(), "a");
        for (field, value) in [
            ("temperature", json!(0.5)),
            ("seed", json!(7)),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("response_format", json!({"type": "json_object"})),
            ("max_tokens", json!(10)),
            ("a_field_added_next_year", json!(true)),
        ] {
            let mut changed = base();
            changed[field] = value;
            assert_ne!(original, key(changed, "a"), "{field} must be in the key");
        }
        let mut other_message = base();
        other_message["messages"][0]["content"] = json!("hi!");
        assert_ne!(original, key(other_message, "a"));
        assert_ne!(original, key(base(), "b"), "tenants never share a key");
    }

    #[test]
    fn field_order_does_not_matter() {
        let a = json!({"model": "m", "messages": [], "temperature": 0, "top_p": 1});
        let b = json!({"top_p": 1, "temperature": 0, "messages": [], "model": "m"});
        assert_eq!(key(a, "t"), key(b, "t"));
    }
}
