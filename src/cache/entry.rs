//! What a cache entry holds and how it is sealed for the store.
//!
//! Bytes in the store are `TJ1` + JSON, or, with an encryption key,
//! `TE1` + a 12-byte nonce + AES-256-GCM ciphertext of the JSON. Anything that
//! does not open cleanly is a miss, never an error served to a client.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::framed::Framed;
use crate::chat::{Dialect, Endpoint, Tokens};
use crate::dialect::observe::JsonTexts;
use crate::dialect::usage;
use crate::secret::Secret;

const PLAIN: &[u8] = b"TJ1";
const SEALED: &[u8] = b"TE1";

/// A recorded answer to a chat or completion call.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// Unix milliseconds when the answer was recorded.
    pub created_ms: u64,
    /// The time to live chosen when it was stored; hits extend the entry by this much.
    pub ttl_ms: u64,
    pub tenant: String,
    pub namespace: Option<String>,
    pub model: String,
    pub tags: Vec<String>,
    /// The dialect the answer was recorded in; an entry naming one this build does not know
    /// does not open, which makes it a miss.
    pub dialect: Dialect,
    pub endpoint: Endpoint,
    pub answer: Answer,
    /// Prompt tokens compression removed before the answer was asked for (thrifty's
    /// count); a hit's baseline adds them back to the recorded usage.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compressed_away: u64,
    /// Replay templates, made on first replay while this copy lives in memory.
    #[serde(skip)]
    pub framed: Framed,
}

impl Entry {
    /// The usage the upstream reported with this answer, read by the dialect it was
    /// recorded in.
    pub fn usage(&self, dialect: Dialect) -> Option<Tokens> {
        match &self.answer {
            Answer::Json(body) => usage::from_json(dialect, body),
            Answer::Stream(chunks) => usage::from_chunks(dialect, chunks),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Entry {
    /// Writes the entry's JSON with its answer as `texts`, the text of each value it was read
    /// from (the body, or each event of a stream), instead of writing the answer again from
    /// its parse: the same JSON, for a copy of the text in place of a walk over every value
    /// and an escape of every string. `None` when the texts are not one per value.
    pub fn write_recorded(&self, texts: &JsonTexts, out: &mut Vec<u8>) -> Option<()> {
        // A body is written as it is; a stream's events as an array.
        let (mode, count, open, close) = match &self.answer {
            Answer::Json(_) => ("json", 1, "", ""),
            Answer::Stream(chunks) => ("stream", chunks.len(), "[", "]"),
        };
        if texts.iter().len() != count {
            return None;
        }
        // Destructured so that a new field is a compile error here until it is written too.
        let Entry {
            created_ms,
            ttl_ms,
            tenant,
            namespace,
            model,
            tags,
            dialect,
            endpoint,
            answer: _,
            compressed_away,
            framed: _,
        } = self;
        let head = Head {
            created_ms: *created_ms,
            ttl_ms: *ttl_ms,
            tenant,
            namespace: namespace.as_deref(),
            model,
            tags,
            dialect: *dialect,
            endpoint: *endpoint,
            compressed_away: *compressed_away,
        };
        serde_json::to_writer(&mut *out, &head).ok()?;
        // The head is an object with fields; the answer joins them before its closing brace.
        // Each text is one whole JSON value, so the object stays whole.
        out.pop();
        out.extend_from_slice(br#","answer":{"mode":""#);
        out.extend_from_slice(mode.as_bytes());
        out.extend_from_slice(br#"","body":"#);
        out.extend_from_slice(open.as_bytes());
        for (i, text) in texts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(text);
        }
        out.extend_from_slice(close.as_bytes());
        out.extend_from_slice(b"}}");
        Some(())
    }
}

/// Every field of an [`Entry`] but its answer, named as the entry names them.
#[derive(Serialize)]
struct Head<'a> {
    created_ms: u64,
    ttl_ms: u64,
    tenant: &'a str,
    namespace: Option<&'a str>,
    model: &'a str,
    tags: &'a [String],
    dialect: Dialect,
    endpoint: Endpoint,
    #[serde(skip_serializing_if = "is_zero")]
    compressed_away: u64,
}

/// The answer as it was recorded: one JSON body, or the chunks of a stream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "mode", content = "body", rename_all = "lowercase")]
pub enum Answer {
    Json(Value),
    Stream(Vec<Value>),
}

/// An embedding of one input.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EmbeddingEntry {
    pub created_ms: u64,
    pub tenant: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub model: String,
    pub vector: Vec<f64>,
    /// The tokens this input accounts for in the upstream's usage.
    pub tokens: u64,
}

/// Seals and opens store values, with or without encryption.
pub struct Sealer {
    cipher: Option<Aes256Gcm>,
}

impl Sealer {
    pub fn new(key: Option<&Secret<[u8; 32]>>) -> Self {
        Sealer {
            cipher: key.map(|k| Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(k.expose()))),
        }
    }

    pub fn seal<T: Serialize>(&self, value: &T) -> Option<Bytes> {
        self.seal_with(|out| serde_json::to_writer(out, value).ok())
    }

    /// Seals the JSON `write` appends to the buffer it is given.
    pub fn seal_with(&self, write: impl FnOnce(&mut Vec<u8>) -> Option<()>) -> Option<Bytes> {
        let mut json = Vec::with_capacity(1024);
        match &self.cipher {
            None => {
                json.extend_from_slice(PLAIN);
                write(&mut json)?;
                Some(Bytes::from(json))
            }
            Some(cipher) => {
                write(&mut json)?;
                let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
                let sealed = cipher.encrypt(&nonce, json.as_slice()).ok()?;
                Some(Bytes::from(
                    [SEALED, nonce.as_slice(), sealed.as_slice()].concat(),
                ))
            }
        }
    }

    pub fn open<T: for<'de> Deserialize<'de>>(&self, raw: &[u8]) -> Option<T> {
        match (&self.cipher, raw.split_at_checked(3)?) {
            (None, (PLAIN, json)) => serde_json::from_slice(json).ok(),
            (Some(cipher), (SEALED, rest)) => {
                let (nonce, sealed) = rest.split_at_checked(12)?;
                let json = cipher.decrypt(Nonce::from_slice(nonce), sealed).ok()?;
                serde_json::from_slice(&json).ok()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::observe::observe;

    fn entry() -> EmbeddingEntry {
        EmbeddingEntry {
            created_ms: 1,
            tenant: "t".to_owned(),
            namespace: None,
            tags: Vec::new(),
            model: "m".to_owned(),
            vector: vec![0.25, -1.5],
            tokens: 3,
        }
    }

    #[test]
    fn sealed_entries_open_only_with_the_same_key() {
        let key = Secret::new([7u8; 32]);
        let sealer = Sealer::new(Some(&key));
        let raw = sealer.seal(&entry()).expect("seals");
        assert!(
            !raw.windows(5).any(|w| w == b"model"),
            "ciphertext hides the JSON"
        );
        assert_eq!(sealer.open::<EmbeddingEntry>(&raw), Some(entry()));
        let other = Sealer::new(Some(&Secret::new([8u8; 32])));
        assert_eq!(
            other.open::<EmbeddingEntry>(&raw),
            None,
            "wrong key is a miss"
        );
        assert_eq!(Sealer::new(None).open::<EmbeddingEntry>(&raw), None);
        let mut corrupted = raw.to_vec();
        let last = corrupted.len() - 1;
        corrupted[last] ^= 1;
        assert_eq!(
            sealer.open::<EmbeddingEntry>(&corrupted),
            None,
            "corruption is a miss"
        );
    }

    fn answer_entry() -> Entry {
        Entry {
            created_ms: 1,
            ttl_ms: 2,
            tenant: "t".to_owned(),
            namespace: None,
            model: "m".to_owned(),
            tags: Vec::new(),
            dialect: Dialect::OpenAi,
            endpoint: Endpoint::LegacyEmbedding,
            answer: Answer::Json(serde_json::json!({"id": "x"})),
            compressed_away: 0,
            framed: Framed::default(),
        }
    }

    #[test]
    fn an_entry_names_its_dialect_and_endpoint_as_stored_before_they_were_typed() {
        let sealer = Sealer::new(None);
        let raw = sealer.seal(&answer_entry()).expect("seals");
        let json: Value = serde_json::from_slice(&raw[3..]).expect("plain JSON");
        assert_eq!(json["dialect"], "openai");
        assert_eq!(json["endpoint"], "legacy_embedding");
        assert_eq!(sealer.open::<Entry>(&raw), Some(answer_entry()));
        for (dialect, endpoint) in [
            (Dialect::Ollama, Endpoint::Responses),
            (Dialect::OpenAi, Endpoint::Chat),
        ] {
            let value = serde_json::to_value((dialect, endpoint)).expect("serializes");
            assert_eq!(
                value,
                serde_json::json!([dialect.as_str(), endpoint.as_str()])
            );
        }
    }

    #[test]
    fn an_entry_of_a_dialect_this_build_does_not_know_is_a_miss() {
        let sealer = Sealer::new(None);
        let raw = sealer.seal(&answer_entry()).expect("seals");
        let text = String::from_utf8(raw.to_vec()).expect("plain JSON is text");
        let unknown = text.replace("\"openai\"", "\"anthropic\"");
        assert_ne!(unknown, text);
        assert_eq!(sealer.open::<Entry>(unknown.as_bytes()), None);
    }

    /// An answer as an upstream may write it: spaces, a float, non-ASCII and an escape.
    const BODY: &str = r#"{ "id": "chatcmpl-1", "choices": [{"message": {"content": "Caf\u00e9 \"ok\" 😀"}}], "score": 1.5e2 }"#;

    fn recorded_entry() -> Entry {
        Entry {
            endpoint: Endpoint::Chat,
            namespace: Some("docs".to_owned()),
            tags: vec!["a".to_owned()],
            compressed_away: 12,
            answer: Answer::Json(serde_json::from_str(BODY).expect("parses")),
            ..answer_entry()
        }
    }

    /// The texts as the recorder gets them: read by the dialect, as they parsed.
    fn texts(text: &str, streamed: bool) -> JsonTexts {
        let bytes = Bytes::from(text.to_owned());
        observe(Dialect::Ollama, Endpoint::Chat, streamed, &bytes)
            .texts
            .expect("every value parsed")
    }

    /// What `entry` seals to, written from `texts`, checked to open as the entry itself.
    fn sealed_from(entry: &Entry, texts: &JsonTexts, key: Option<&Secret<[u8; 32]>>) -> Bytes {
        let sealer = Sealer::new(key);
        let raw = sealer
            .seal_with(|out| entry.write_recorded(texts, out))
            .expect("seals");
        assert_eq!(sealer.open::<Entry>(&raw).as_ref(), Some(entry));
        raw
    }

    /// The plain JSON `raw` holds, beside serde's own seal of `entry`.
    fn both_ways(entry: &Entry, raw: &Bytes) -> (String, Value, Value) {
        let text = String::from_utf8(raw[3..].to_vec()).expect("plain JSON is text");
        let written: Value = serde_json::from_str(&text).expect("JSON");
        let reference = Sealer::new(None).seal(entry).expect("seals");
        let reference: Value = serde_json::from_slice(&reference[3..]).expect("JSON");
        (text, written, reference)
    }

    #[test]
    fn an_entry_sealed_with_its_answers_text_opens_as_the_same_entry() {
        let entry = recorded_entry();
        let body = texts(&format!("\n {BODY}\n"), false);
        sealed_from(&entry, &body, Some(&Secret::new([7u8; 32])));
        let raw = sealed_from(&entry, &body, None);
        let (text, written, reference) = both_ways(&entry, &raw);
        assert!(
            text.contains(BODY),
            "the body is written as it came: {text}"
        );
        assert_eq!(written, reference, "the same JSON as the entry's own");
        let plain = Entry {
            compressed_away: 0,
            namespace: None,
            ..entry
        };
        sealed_from(&plain, &texts(BODY, false), None);
    }

    #[test]
    fn a_streamed_answer_is_sealed_as_its_events_texts() {
        let events = [
            r#"{"message": {"content": "Caf\u00e9"}, "done": false}"#,
            BODY,
            r#"{"done":true}"#,
        ];
        let stream = events.join("\r\n");
        let entry = Entry {
            answer: Answer::Stream(
                events
                    .iter()
                    .map(|e| serde_json::from_str(e).expect("JSON"))
                    .collect(),
            ),
            ..recorded_entry()
        };
        let raw = sealed_from(&entry, &texts(&stream, true), None);
        let (text, written, reference) = both_ways(&entry, &raw);
        assert!(
            text.contains(&format!("[{}]", events.join(","))),
            "each event is written as it came: {text}"
        );
        assert_eq!(written, reference, "the same JSON as the entry's own");
        sealed_from(&entry, &texts(&stream, true), Some(&Secret::new([7u8; 32])));
    }

    #[test]
    fn texts_that_are_not_one_per_value_are_not_written() {
        let mut out = Vec::new();
        let two = texts("{\"id\": 1}\n{\"id\": 2}", true);
        assert!(recorded_entry().write_recorded(&two, &mut out).is_none());
        let stream = Entry {
            answer: Answer::Stream(vec![serde_json::json!({"id": 1})]),
            ..recorded_entry()
        };
        assert!(stream.write_recorded(&two, &mut out).is_none());
        assert!(out.is_empty(), "nothing written");
    }

    #[test]
    fn plain_entries_round_trip() {
        let sealer = Sealer::new(None);
        let raw = sealer.seal(&entry()).expect("seals");
        assert_eq!(sealer.open::<EmbeddingEntry>(&raw), Some(entry()));
    }
}
