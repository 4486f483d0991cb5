//! Embedding answers on the wire: reading vectors and token counts out of an
//! upstream answer, and writing an answer in the same shape from cached vectors.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::chat::{Dialect, EmbeddingInput, EmbeddingRequest};

/// Whether the client asked OpenAI for base64-encoded vectors.
pub fn wants_base64(dialect: Dialect, request: &EmbeddingRequest) -> bool {
    dialect == Dialect::OpenAi
        && request
            .shaping
            .get("encoding_format")
            .and_then(Value::as_str)
            == Some("base64")
}

fn decode_base64(text: &str) -> Option<Vec<f64>> {
    let bytes = STANDARD.decode(text).ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    )
}

fn encode_base64(vector: &[f64]) -> String {
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for x in vector {
        // The values came from f32s, so this cast is exact.
        bytes.extend_from_slice(&(*x as f32).to_le_bytes());
    }
    STANDARD.encode(bytes)
}

fn floats(value: &Value) -> Option<Vec<f64>> {
    value.as_array()?.iter().map(Value::as_f64).collect()
}

/// The vectors (in input order) and the prompt tokens of an upstream answer.
pub fn read_answer(dialect: Dialect, legacy: bool, body: &Value) -> Option<(Vec<Vec<f64>>, u64)> {
    match (dialect, legacy) {
        (Dialect::OpenAi, _) => {
            let mut data: Vec<&Value> = body["data"].as_array()?.iter().collect();
            data.sort_by_key(|d| d["index"].as_u64().unwrap_or(0));
            let vectors = data
                .iter()
                .map(|d| match &d["embedding"] {
                    Value::String(b64) => decode_base64(b64),
                    other => floats(other),
                })
                .collect::<Option<Vec<_>>>()?;
            Some((
                vectors,
                body["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            ))
        }
        (Dialect::Ollama, false) => {
            let vectors = body["embeddings"]
                .as_array()?
                .iter()
                .map(floats)
                .collect::<Option<Vec<_>>>()?;
            Some((vectors, body["prompt_eval_count"].as_u64().unwrap_or(0)))
        }
        (Dialect::Ollama, true) => Some((vec![floats(&body["embedding"])?], 0)),
    }
}

/// The `input` field of an embedding request: a bare string or id array where the client
/// sent one, else a list.
pub fn input(input: &EmbeddingInput) -> Value {
    match input {
        EmbeddingInput::Texts { texts, single } if *single && texts.len() == 1 => json!(texts[0]),
        EmbeddingInput::Texts { texts, .. } => json!(texts),
        EmbeddingInput::Tokens { ids, single } if *single && ids.len() == 1 => json!(ids[0]),
        EmbeddingInput::Tokens { ids, .. } => json!(ids),
    }
}

/// An answer holding `vectors`, shaped like `template` (an upstream answer) when there is one.
pub fn write_answer(
    dialect: Dialect,
    request: &EmbeddingRequest,
    template: Option<&Value>,
    model: &str,
    vectors: &[Vec<f64>],
    tokens: u64,
) -> Value {
    match (dialect, request.legacy) {
        (Dialect::OpenAi, _) => {
            let base64 = wants_base64(dialect, request);
            let data: Vec<Value> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let embedding = if base64 {
                        json!(encode_base64(v))
                    } else {
                        json!(v)
                    };
                    json!({"object": "embedding", "index": i, "embedding": embedding})
                })
                .collect();
            let mut out = template
                .cloned()
                .unwrap_or_else(|| json!({"object": "list", "data": [], "model": model}));
            out["data"] = Value::Array(data);
            out["usage"] = json!({"prompt_tokens": tokens, "total_tokens": tokens});
            out
        }
        (Dialect::Ollama, false) => {
            let mut out = template.cloned().unwrap_or_else(|| {
                json!({"model": model, "embeddings": [], "total_duration": 0, "load_duration": 0})
            });
            out["embeddings"] = json!(vectors);
            out["prompt_eval_count"] = json!(tokens);
            out
        }
        (Dialect::Ollama, true) => {
            json!({"embedding": vectors.first().cloned().unwrap_or_default()})
        }
    }
}

/// Ollama's embed answers say how long they took, in nanoseconds. One served from the cache
/// says how long thrifty took: `total` in all, `load` of it reading the cache.
pub fn report_durations(
    dialect: Dialect,
    request: &EmbeddingRequest,
    body: &mut Value,
    total: Duration,
    load: Duration,
) {
    if dialect != Dialect::Ollama || request.legacy {
        return;
    }
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    body["total_duration"] = json!(nanos(total));
    body["load_duration"] = json!(nanos(load).min(nanos(total)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors_round_trip_exactly() {
        let v: Vec<f64> = [0.1f32, -2.5, 3.0e-7]
            .iter()
            .map(|x| f64::from(*x))
            .collect();
        assert_eq!(decode_base64(&encode_base64(&v)), Some(v));
    }
}
