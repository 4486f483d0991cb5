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
        match &self.cipher {
            None => {
                let mut plain = Vec::with_capacity(1024);
                plain.extend_from_slice(PLAIN);
                serde_json::to_writer(&mut plain, value).ok()?;
                Some(Bytes::from(plain))
            }
            Some(cipher) => {
                let json = serde_json::to_vec(value).ok()?;
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

    #[test]
    fn plain_entries_round_trip() {
        let sealer = Sealer::new(None);
        let raw = sealer.seal(&entry()).expect("seals");
        assert_eq!(sealer.open::<EmbeddingEntry>(&raw), Some(entry()));
    }
}
