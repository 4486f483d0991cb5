//! A recorded answer framed once per replay mode, with holes where each replay writes its own
//! id and creation time: a hit copies bytes instead of cloning, refreshing and serializing the
//! answer's JSON again.
//!
//! The template is made by refreshing the answer with sentinel values (an id suffix of
//! control characters, which JSON writes escaped, and a creation time in 2096), framing it,
//! and finding the sentinels in the bytes. It is used only when it found exactly as many of
//! each as the answer has fields to refresh; otherwise the replay builds the answer as before.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::chat::{Dialect, Endpoint};

/// The id suffix a template is refreshed with, and how JSON writes it.
pub const ID_SENTINEL: &str = "\u{1}thrifty-id\u{1}";
const ID_WRITTEN: &[u8] = b"\\u0001thrifty-id\\u0001";

/// The creation time a template is refreshed with: 4,000,000,000 s after the epoch.
pub const TIME_SENTINEL_SECS: u64 = 4_000_000_000;
const CREATED_WRITTEN: &[u8] = b"\"created\":4000000000";
const CREATED_AT_WRITTEN: &[u8] = b"2096-10-02T07:06:40.000000000Z";

pub fn time_sentinel() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(TIME_SENTINEL_SECS)
}

/// One entry's templates, made on first use per mode (streamed or not, with the usage chunk
/// or not). Not stored: the copy in memory keeps them while it lives.
#[derive(Debug, Default)]
pub struct Framed([OnceLock<Option<Template>>; 4]);

impl Clone for Framed {
    fn clone(&self) -> Framed {
        Framed::default()
    }
}

impl PartialEq for Framed {
    fn eq(&self, _: &Framed) -> bool {
        true
    }
}

impl Framed {
    /// The template for a mode, made by `make` the first time it is asked for.
    pub fn get(
        &self,
        streamed: bool,
        usage: bool,
        make: impl FnOnce() -> Option<Template>,
    ) -> Option<&Template> {
        self.0[usize::from(streamed) * 2 + usize::from(usage)]
            .get_or_init(make)
            .as_ref()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hole {
    IdSuffix,
    Created,
    CreatedAt,
}

/// Framed bytes and where each replay's own values go.
#[derive(Debug)]
pub struct Template {
    bytes: Vec<u8>,
    holes: Vec<(usize, usize, Hole)>,
}

impl Template {
    /// A template of `bytes`, the framing of `values` refreshed with the sentinels; `None`
    /// unless every field refreshed is found once, and nothing else looks like one.
    pub fn new(
        dialect: Dialect,
        endpoint: Endpoint,
        values: &[Value],
        bytes: Vec<u8>,
    ) -> Option<Template> {
        let expected = |field: &str| {
            values
                .iter()
                .filter(|v| v.as_object().is_some_and(|o| o.contains_key(field)))
                .count()
        };
        let mut holes = Vec::new();
        if endpoint != Endpoint::Responses {
            let wanted: &[(&[u8], Hole, &str)] = match dialect {
                Dialect::OpenAi => &[
                    (ID_WRITTEN, Hole::IdSuffix, "id"),
                    (CREATED_WRITTEN, Hole::Created, "created"),
                ],
                Dialect::Ollama => &[(CREATED_AT_WRITTEN, Hole::CreatedAt, "created_at")],
            };
            for (pattern, hole, field) in wanted {
                let found = find_all(&bytes, pattern);
                let ids = (*hole == Hole::IdSuffix)
                    .then(|| values.iter().filter(|v| v["id"].is_string()).count());
                if found.len() != ids.unwrap_or_else(|| expected(field)) {
                    return None;
                }
                holes.extend(found.into_iter().map(|at| (at, pattern.len(), *hole)));
            }
        }
        holes.sort_unstable_by_key(|(at, _, _)| *at);
        Some(Template { bytes, holes })
    }

    /// The bytes with this replay's id suffix and time written in.
    pub fn fill(&self, id_suffix: &str, now: SystemTime) -> Vec<u8> {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let created = format!("\"created\":{secs}");
        let created_at = humantime::format_rfc3339_nanos(now).to_string();
        let mut out = Vec::with_capacity(self.bytes.len() + 16);
        let mut from = 0;
        for &(at, len, hole) in &self.holes {
            out.extend_from_slice(&self.bytes[from..at]);
            out.extend_from_slice(match hole {
                Hole::IdSuffix => id_suffix.as_bytes(),
                Hole::Created => created.as_bytes(),
                Hole::CreatedAt => created_at.as_bytes(),
            });
            from = at + len;
        }
        out.extend_from_slice(&self.bytes[from..]);
        out
    }
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
    {
        found.push(from + at);
        from += at + needle.len();
    }
    found
}
