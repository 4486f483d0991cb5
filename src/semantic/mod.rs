//! The semantic cache: a chat whose last user message means the same as one
//! already answered, in exactly the same context, gets that recorded answer.
//!
//! - The *partition* is a hash of everything that must match exactly: scope,
//!   model, parameters, tools, instructions and the conversation before the
//!   last user message (or a window of it). Only the last user message is
//!   embedded ([`embedder`]) and compared, within its partition ([`index`]).
//! - A candidate above the threshold must also pass the [`guard`].
//! - Vectors are persisted next to the answers they point to, so a restart
//!   rebuilds the index from the store, and instances sharing Redis tell each
//!   other about new entries over pub/sub (and reconcile periodically).
//!
//! It never answers by itself: a hit names an exact cache entry, which the
//! pipeline reads and replays.

pub mod embedder;
pub mod eval;
pub mod guard;
pub mod index;
mod sketch;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};

use crate::cache::key::{self, CacheKey, Scope};
use crate::cache::{Cache, now_ms};
use crate::chat::{ChatRequest, Content, Dialect, Message, PartKind, Role};
use crate::config::{ContextRule, SemanticConfig};
use embedder::Embedder;
use index::Index;

/// Prefix of persisted vectors in the store.
pub const SEMANTIC_PREFIX: &str = "thrifty:v1:semantic:";

/// Where instances announce new and removed entries.
const EVENTS: &str = "thrifty:v1:semantic:events";

/// How often the index is reconciled with the store.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// How many records a reconcile reads from the store at once.
const LOAD_CONCURRENCY: usize = 64;

/// How many candidates above the threshold the guard looks at for one hit.
const CANDIDATES: usize = 4;

/// A question ready to look up or to remember.
#[derive(Clone, Debug)]
pub struct Query {
    pub partition: String,
    pub text: String,
    pub vector: Arc<Vec<f32>>,
}

/// A persisted index entry.
#[derive(Serialize, Deserialize)]
struct Record {
    partition: String,
    answer: String,
    text: String,
    vector: Vec<f32>,
    created_ms: u64,
}

impl Record {
    /// The index entry, if the vector is the model's shape.
    fn into_entry(self) -> Option<index::Entry> {
        (self.vector.len() == embedder::DIMENSIONS).then_some(index::Entry {
            partition: self.partition,
            answer: self.answer,
            text: self.text,
            vector: self.vector,
        })
    }
}

/// A semantic hit: the answer entry to replay and how similar the questions were.
pub struct Hit {
    pub answer: CacheKey,
    pub similarity: f32,
    /// The recorded question the answer was given to.
    pub question: String,
}

pub struct SemanticCache {
    embedder: Arc<Embedder>,
    index: Index,
    cache: Arc<Cache>,
    config: SemanticConfig,
}

/// The text of the last message when it is a user's text; otherwise the stage is skipped.
pub fn last_user_text(chat: &ChatRequest) -> Option<&str> {
    let last = chat.messages.last()?;
    if last.role != Role::User || !last.tool_calls.is_empty() {
        return None;
    }
    match &last.content {
        Content::Text(t) if !t.trim().is_empty() => Some(t),
        Content::Parts(parts) => match parts.as_slice() {
            [one] => match &one.kind {
                PartKind::Text(t) if !t.trim().is_empty() => Some(t),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn record_key(partition: &str, answer: &str) -> String {
    format!("{SEMANTIC_PREFIX}{partition}:{answer}")
}

impl SemanticCache {
    /// Loads the model; `None` (with a log line saying why) turns the stage off.
    pub fn load(config: &SemanticConfig, cache: Arc<Cache>) -> Option<Arc<SemanticCache>> {
        if !config.enabled {
            return None;
        }
        match Embedder::shared(&config.model_dir) {
            Ok(embedder) => {
                tracing::info!(
                    model_dir = %config.model_dir.display(),
                    threshold = config.threshold,
                    guard = config.guard,
                    "semantic cache on"
                );
                Some(Arc::new(SemanticCache {
                    embedder,
                    index: Index::new(
                        config.max_entries,
                        config.max_entries_per_partition,
                        config.ann_above,
                    ),
                    cache,
                    config: config.clone(),
                }))
            }
            Err(reason) => {
                tracing::warn!(%reason, "semantic cache is off");
                None
            }
        }
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The messages that must match exactly besides scope and parameters.
    fn context<'a>(&self, prior: &'a [Message]) -> Vec<&'a Message> {
        match self.config.context {
            ContextRule::Prefix => prior.iter().collect(),
            ContextRule::Window => {
                let instructions = prior.iter().filter(|m| m.role.is_instruction());
                let rest: Vec<&Message> =
                    prior.iter().filter(|m| !m.role.is_instruction()).collect();
                let start = rest.len().saturating_sub(self.config.window_messages);
                instructions.chain(rest[start..].iter().copied()).collect()
            }
        }
    }

    /// Embeds the last user message; `None` when the call is not for this stage.
    pub async fn prepare(
        &self,
        scope: &Scope,
        dialect: Dialect,
        upstream: &str,
        chat: &ChatRequest,
    ) -> Option<Query> {
        let text = last_user_text(chat)?;
        let (last, prior) = chat.messages.split_last()?;
        // Everything about the last message but its text must match too (a speaker's `name`).
        let mut shape = last.clone();
        shape.content = Content::Absent;
        let mut context = self.context(prior);
        context.push(&shape);
        let partition = key::partition_key(scope, dialect, upstream, chat, &context);
        let vector = self.embedder.embed(text).await?;
        Some(Query {
            partition: partition.0,
            text: text.to_owned(),
            vector,
        })
    }

    /// Up to `limit` candidates that clear the threshold (never below the configured one) and
    /// the guard, best first, so a caller whose best answer has gone can serve the next.
    ///
    /// The index is asked for `CANDIDATES - 1` more than `limit`, so the guard can turn away
    /// that many near-misses without costing a hit.
    pub fn candidates(&self, query: &Query, threshold: Option<f32>, limit: usize) -> Vec<Hit> {
        if limit == 0 {
            return Vec::new();
        }
        let threshold = threshold.map_or(self.config.threshold, |t| t.max(self.config.threshold));
        let shortlist = limit.saturating_add(CANDIDATES - 1);
        self.index
            .search(&query.partition, &query.vector, threshold, shortlist)
            .into_iter()
            .filter(|c| !self.config.guard || guard::check(&query.text, &c.item.text).is_ok())
            .take(limit)
            .map(|c| Hit {
                answer: CacheKey(c.item.answer.clone()),
                similarity: c.similarity,
                question: c.item.text.clone(),
            })
            .collect()
    }

    /// Indexes a freshly stored answer, persists its vector and tells the other instances.
    pub async fn remember(&self, query: Query, answer: &CacheKey, ttl: Duration) {
        self.index.insert(
            &query.partition,
            &answer.0,
            &query.text,
            query.vector.to_vec(),
        );
        let record = Record {
            partition: query.partition.clone(),
            answer: answer.0.clone(),
            text: query.text,
            vector: query.vector.to_vec(),
            created_ms: now_ms(),
        };
        let Some(raw) = self.cache.sealer().seal(&record) else {
            return;
        };
        let key = record_key(&query.partition, &answer.0);
        let store = self.cache.store();
        // Hits keep extending the answer up to max_ttl, so the vector lives that long; a lookup
        // whose answer has gone forgets the vector then.
        let ttl = ttl.max(self.cache.config().max_ttl);
        if store.put(&key, raw, ttl).await.is_ok() {
            let _ = store.publish(EVENTS, &format!("add {key}")).await;
        }
    }

    /// Drops an entry whose answer is gone.
    pub async fn forget(&self, partition: &str, answer: &str) {
        self.index.remove(partition, answer);
        let key = record_key(partition, answer);
        let store = self.cache.store();
        let _ = store.delete(std::slice::from_ref(&key)).await;
        let _ = store.publish(EVENTS, &format!("del {key}")).await;
    }

    /// Drops the index entries of records already deleted from the store.
    pub fn forget_records(&self, keys: &[String]) {
        for key in keys {
            self.apply_removal(key);
        }
    }

    async fn load_record(&self, key: &str) {
        let Ok(Some(raw)) = self.cache.store().get(key).await else {
            return;
        };
        if let Some(e) = self
            .cache
            .sealer()
            .open::<Record>(&raw)
            .and_then(Record::into_entry)
        {
            self.index
                .insert(&e.partition, &e.answer, &e.text, e.vector);
        }
    }

    fn apply_removal(&self, key: &str) {
        if let Some((partition, answer)) = key
            .strip_prefix(SEMANTIC_PREFIX)
            .and_then(|k| k.split_once(':'))
        {
            self.index.remove(partition, answer);
        }
    }

    /// Brings the index in line with the store: loads what is missing, drops what expired.
    ///
    /// Missing records are read concurrently and indexed in one batch on a blocking thread, so a
    /// restart with a large store builds each graph once, with parallel inserts.
    pub async fn reconcile(&self) -> bool {
        let Ok(keys) = self.cache.store().keys(SEMANTIC_PREFIX).await else {
            return false;
        };
        let live: HashSet<&str> = keys.iter().map(String::as_str).collect();
        for (partition, answer) in self.index.entries() {
            if !live.contains(record_key(&partition, &answer).as_str()) {
                self.index.remove(&partition, &answer);
            }
        }
        let known: HashSet<String> = self
            .index
            .entries()
            .into_iter()
            .map(|(p, a)| record_key(&p, &a))
            .collect();
        let missing: Vec<String> = keys.into_iter().filter(|k| !known.contains(k)).collect();
        let store = self.cache.store().clone();
        let raws: Vec<Option<Bytes>> = stream::iter(missing)
            .map(|key| {
                let store = store.clone();
                async move { store.get(&key).await.ok().flatten() }
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .collect()
            .await;
        let raws: Vec<Bytes> = raws.into_iter().flatten().collect();
        if raws.is_empty() {
            return true;
        }
        let (cache, index) = (self.cache.clone(), self.index.clone());
        let load = tokio::task::spawn_blocking(move || {
            let entries: Vec<index::Entry> = raws
                .iter()
                .filter_map(|raw| cache.sealer().open::<Record>(raw))
                .filter_map(Record::into_entry)
                .collect();
            index.insert_many(entries);
        });
        load.await.is_ok()
    }

    /// Rebuilds the index from the store, then follows other instances until the task is dropped.
    pub async fn sync(self: Arc<Self>) {
        let mut events = self.cache.store().subscribe(EVENTS);
        // Redis connects in the background: rebuild as soon as the store answers.
        while !self.reconcile().await {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.tick().await;
        loop {
            let event = async {
                match events.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = event => match message {
                    Some(message) => match message.split_once(' ') {
                        Some(("add", key)) => self.load_record(key).await,
                        Some(("del", key)) => self.apply_removal(key),
                        _ => {}
                    },
                    None => events = None,
                },
                _ = tick.tick() => {
                    self.reconcile().await;
                }
            }
        }
    }
}
