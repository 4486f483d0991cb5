//! The semantic cache: a chat whose last user message means the same as one
//! already answered, in exactly the same context, gets that recorded answer.
//!
//! - The *partition* is a hash of everything that must match exactly: scope,
//!   model, parameters, tools, instructions and the conversation before the
//!   last user message (or a window of it). Only the last user message is
//!   embedded ([`embedder`]) and compared, within its partition ([`index`]).
//! - Nothing is embedded before forwarding unless a hit is possible: a question
//!   is looked up only when its partition holds entries, when it is short enough
//!   to be a question (`max_question_tokens`), and when the model can start on it
//!   within `max_wait`. Questions to remember are embedded after their answers,
//!   in the background, through a bounded queue that drops what it cannot keep up
//!   with ([`Indexer`]). [`stats`] counts each decision.
//! - A candidate above the threshold must also pass the [`guard`].
//! - Vectors are persisted next to the answers they point to, so a restart
//!   rebuilds the index from the store, and instances sharing Redis tell each
//!   other about new entries over pub/sub (and reconcile periodically).
//!
//! It never answers by itself: a hit names an exact cache entry, which the
//! pipeline reads and replays.

pub mod calibration;
pub mod cost;
pub mod embedder;
pub mod eval;
pub mod guard;
pub mod index;
pub mod online;
mod renew;
mod sketch;
pub mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::cache::Cache;
use crate::cache::key::{self, CacheKey, Scope};
use crate::chat::{ChatRequest, Content, Dialect, Endpoint, Message, PartKind, Role};
use crate::config::{ContextRule, SemanticConfig};
use crate::store::Heard;
use embedder::{Embedded, Embedder};
use index::Index;
use stats::{Skip, Stats};

pub use crate::cache::SEMANTIC_PREFIX;

/// Where instances announce new and removed entries.
const EVENTS: &str = "thrifty:v1:semantic:events";

/// How often the index is reconciled with the store.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// How many records a reconcile reads from the store at once.
const LOAD_CONCURRENCY: usize = 64;

/// How many candidates above the threshold the guard looks at for one hit.
const CANDIDATES: usize = 4;

/// How many answered questions the indexer embeds and stores at once.
const INDEX_BATCH: usize = 16;

/// A question ready to look up or to remember.
#[derive(Clone, Debug)]
pub struct Query {
    pub partition: String,
    pub text: String,
    pub vector: Arc<Vec<f32>>,
}

/// A question the stage may look up or remember, not yet embedded.
#[derive(Clone, Debug)]
pub struct Question {
    pub partition: String,
    pub text: String,
    /// Its vector, when a lookup already embedded it.
    pub vector: Option<Arc<Vec<f32>>>,
    /// Found too long by a lookup: never embedded, never indexed.
    pub long: bool,
}

/// What a lookup found.
pub enum Lookup {
    /// Candidates, best first (possibly none), for a question that was embedded.
    Searched(Vec<Hit>),
    Skipped(Skip),
}

/// A question to index once its answer is stored.
struct Pending {
    question: Question,
    answer: CacheKey,
    ttl: Duration,
}

/// A persisted index entry.
#[derive(Serialize, Deserialize)]
struct Record {
    partition: String,
    answer: String,
    text: String,
    vector: Vec<f32>,
    created_ms: u64,
    /// The model that made the vector ([`Embedder::model`]); empty in records written before
    /// records named it.
    #[serde(default)]
    model: String,
}

impl Record {
    /// The index entry, if `model` made the vector: another model's vectors (another model
    /// directory, or a record older than the model a new release fetched) would be compared
    /// with this one's as if they meant the same, so they are left out of the index until
    /// their text is embedded again with this model ([`renew`]).
    fn into_entry(self, model: &str) -> Option<index::Entry> {
        (self.model == model && self.vector.len() == embedder::DIMENSIONS).then_some(index::Entry {
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
    /// How the two questions compare beyond similarity, for the calibration.
    pub features: guard::Features,
}

pub struct SemanticCache {
    embedder: Arc<Embedder>,
    index: Index,
    cache: Arc<Cache>,
    config: SemanticConfig,
    stats: Stats,
    /// Answered questions waiting to be indexed, bounded by `semantic.index_queue`; `None`
    /// once closed at shutdown.
    queue: Mutex<Option<mpsc::Sender<Pending>>>,
    /// The queue's far end, taken by [`SemanticCache::index_questions`].
    waiting: Mutex<Option<mpsc::Receiver<Pending>>>,
    /// Keys of the records of another model the last reconcile found, to embed again (see
    /// [`renew`]).
    stale: Mutex<Vec<String>>,
    /// Raised when `stale` is filled.
    stale_found: Notify,
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
        match Embedder::shared_with(&config.model_dir, config.threads, config.workers) {
            Ok(embedder) => {
                tracing::info!(
                    model_dir = %config.model_dir.display(),
                    threshold = config.threshold,
                    guard = config.guard,
                    "semantic cache on"
                );
                let (queue, waiting) = mpsc::channel(config.index_queue);
                Some(Arc::new(SemanticCache {
                    embedder,
                    index: Index::new(
                        config.max_entries,
                        config.max_entries_per_partition,
                        config.ann_above,
                    ),
                    cache,
                    config: config.clone(),
                    stats: Stats::default(),
                    queue: Mutex::new(Some(queue)),
                    waiting: Mutex::new(Some(waiting)),
                    stale: Mutex::new(Vec::new()),
                    stale_found: Notify::new(),
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

    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    /// The stage's counters and the model's work, as `/admin/cache/stats` shows them.
    pub fn stats_json(&self) -> serde_json::Value {
        self.stats.json(self.embedder.counters(), self.queued())
    }

    /// The stage's decisions as named integers, for the totals shared by every instance.
    pub fn stats_counters(&self) -> std::collections::HashMap<String, i64> {
        self.stats.counters()
    }

    /// `counters` (every instance's decisions) with this process's model work and queue.
    pub fn stats_of(&self, counters: &std::collections::HashMap<String, i64>) -> serde_json::Value {
        stats::render(counters, self.embedder.counters(), self.queued())
    }

    /// Questions waiting to be indexed now.
    fn queued(&self) -> usize {
        let free = self.queue.lock().as_ref().map_or(0, mpsc::Sender::capacity);
        self.config.index_queue.saturating_sub(free)
    }

    /// The stage's counters for `/metrics`.
    pub fn metrics(&self) -> prometheus_client::registry::Registry {
        self.stats.registry(self.embedder.counters())
    }

    /// The question this call asks, with its partition; `None` when the call is not for this
    /// stage or its last message is surely too long to be a question (counted). Embeds and
    /// tokenizes nothing: the exact length is checked only where the model would run anyway.
    pub fn question(
        &self,
        scope: &Scope,
        dialect: Dialect,
        upstream: &str,
        endpoint: Endpoint,
        chat: &ChatRequest,
    ) -> Option<Question> {
        let text = last_user_text(chat)?;
        if Embedder::surely_longer(text, self.config.max_question_tokens) {
            self.stats.skipped(Skip::Long);
            return None;
        }
        let (last, prior) = chat.messages.split_last()?;
        // Everything about the last message but its text must match too (a speaker's `name`).
        let mut shape = last.clone();
        shape.content = Content::Absent;
        let mut context = self.context(prior);
        context.push(&shape);
        let partition = key::partition_key(scope, dialect, upstream, endpoint, chat, &context);
        Some(Question {
            partition: partition.0,
            text: text.to_owned(),
            vector: None,
            long: false,
        })
    }

    /// Whether a question is longer than `semantic.max_question_tokens` word pieces (counted).
    fn too_long(&self, question: &Question) -> bool {
        let long = !self
            .embedder
            .fits(&question.text, self.config.max_question_tokens);
        if long {
            self.stats.skipped(Skip::Long);
        }
        long
    }

    /// Looks a question up: embeds it only when its partition holds entries and the model can
    /// start on it within `semantic.max_wait`, then offers up to `limit` candidates (see
    /// [`SemanticCache::candidates`]). The vector stays on the question for remembering.
    pub async fn lookup(
        &self,
        question: &mut Question,
        threshold: Option<f32>,
        limit: usize,
    ) -> Lookup {
        if !self.index.holds(&question.partition) {
            self.stats.skipped(Skip::Empty);
            return Lookup::Skipped(Skip::Empty);
        }
        if self.too_long(question) {
            question.long = true;
            return Lookup::Skipped(Skip::Long);
        }
        let vector = match self
            .embedder
            .embed(&question.text, self.config.max_wait)
            .await
        {
            Embedded::Vector(v) => v,
            Embedded::Busy => {
                self.stats.skipped(Skip::Busy);
                return Lookup::Skipped(Skip::Busy);
            }
            Embedded::Failed => {
                self.stats.skipped(Skip::Failed);
                return Lookup::Skipped(Skip::Failed);
            }
        };
        self.stats.looked_up();
        let query = Query {
            partition: question.partition.clone(),
            text: question.text.clone(),
            vector: vector.clone(),
        };
        question.vector = Some(vector);
        Lookup::Searched(self.candidates(&query, threshold, limit))
    }

    /// Queues an answered question for indexing; never waits. When the queue is full the
    /// question is dropped (counted) and simply not indexed.
    pub fn remember_later(&self, question: Question, answer: CacheKey, ttl: Duration) {
        if question.long {
            return;
        }
        let pending = Pending {
            question,
            answer,
            ttl,
        };
        let queue = self.queue.lock();
        let sent = queue.as_ref().is_some_and(|q| q.try_send(pending).is_ok());
        if !sent {
            self.stats.dropped();
        }
    }

    /// Closes the queue of questions to index: [`SemanticCache::index_questions`] finishes
    /// what it holds, then returns.
    pub fn close_queue(&self) {
        self.queue.lock().take();
    }

    /// Embeds queued questions in small batches, as background work for the model, then
    /// indexes, persists and announces them. Runs until the queue is closed and drained; a
    /// second call returns at once.
    pub async fn index_questions(self: Arc<Self>) {
        let Some(mut waiting) = self.waiting.lock().take() else {
            return;
        };
        let mut batch = Vec::with_capacity(INDEX_BATCH);
        while waiting.recv_many(&mut batch, INDEX_BATCH).await > 0 {
            // Questions no lookup has measured are measured here, off the request path.
            batch.retain(|p| p.question.vector.is_some() || !self.too_long(&p.question));
            let texts: Vec<String> = batch
                .iter()
                .filter(|p| p.question.vector.is_none())
                .map(|p| p.question.text.clone())
                .collect();
            let mut vectors = self.embedder.embed_background(&texts).await.into_iter();
            let mut stored = Vec::with_capacity(batch.len());
            for pending in batch.drain(..) {
                let vector = match pending.question.vector {
                    Some(v) => Some(v),
                    None => vectors.next().flatten(),
                };
                let Some(vector) = vector else {
                    self.stats.skipped(Skip::Failed);
                    continue;
                };
                let query = Query {
                    partition: pending.question.partition,
                    text: pending.question.text,
                    vector,
                };
                stored.push(self.remember(query, pending.answer, pending.ttl));
            }
            let n = stored.len() as u64;
            futures_util::future::join_all(stored).await;
            self.stats.indexed(n);
        }
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
            .filter_map(|c| {
                let features = match guard::check(&query.text, &c.item.text) {
                    Ok(features) => features,
                    Err(_) if self.config.guard => return None,
                    // Unguarded, a pair the rules reject still counts as the least alike.
                    Err(_) => guard::Features {
                        overlap: 0.0,
                        length_ratio: 0.0,
                        one_sided: true,
                        unmatched: [0, 0],
                        shared: 0,
                        in_order: 0,
                    },
                };
                Some(Hit {
                    answer: CacheKey(c.item.answer.clone()),
                    similarity: c.similarity,
                    question: c.item.text.clone(),
                    features,
                })
            })
            .take(limit)
            .collect()
    }

    /// Indexes a freshly stored answer, persists its vector and tells the other instances.
    pub async fn remember(&self, query: Query, answer: CacheKey, ttl: Duration) {
        let record = Record {
            partition: query.partition,
            answer: answer.0,
            text: query.text,
            vector: query.vector.to_vec(),
            created_ms: self.cache.clock().now_ms(),
            model: self.embedder.model().to_owned(),
        };
        let key = record_key(&record.partition, &record.answer);
        let store = self.cache.store();
        // Hits keep extending the answer up to max_ttl, so the vector lives that long; a lookup
        // whose answer has gone forgets the vector then.
        let ttl = ttl.max(self.cache.config().max_ttl);
        // Written before the entry joins the index: a reconcile lists the store only after it
        // has taken the index's entries, so every entry it may drop was listed if stored.
        if let Some(raw) = self.cache.sealer().seal(&record) {
            let _ = store
                .put_announced(&key, raw, ttl, EVENTS, &format!("add {key}"))
                .await;
        }
        self.index.insert(
            &record.partition,
            &record.answer,
            &record.text,
            record.vector,
        );
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
            .and_then(|record| record.into_entry(self.embedder.model()))
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

    /// Brings the index in line with the store: loads what is missing, drops what expired,
    /// and hands records of another model to [`SemanticCache::renew_stale`].
    ///
    /// Missing records are read concurrently and indexed in one batch on a blocking thread, so a
    /// restart with a large store builds each graph once, with parallel inserts.
    pub async fn reconcile(&self) -> bool {
        // Taken before the listing: an entry remembered while the store is listed is not in
        // the listing, and must not be dropped for it.
        let indexed = self.index.entries();
        let Ok(keys) = self.cache.store().keys(SEMANTIC_PREFIX).await else {
            return false;
        };
        let live: HashSet<&str> = keys.iter().map(String::as_str).collect();
        for (partition, answer) in indexed {
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
        let model = self.embedder.model().to_owned();
        let load = tokio::task::spawn_blocking(move || {
            let (entries, stale): (Vec<Record>, Vec<Record>) = raws
                .iter()
                .filter_map(|raw| cache.sealer().open::<Record>(raw))
                .partition(|record| record.model == model);
            index.insert_many(
                entries
                    .into_iter()
                    .filter_map(|record| record.into_entry(&model)),
            );
            stale
                .iter()
                .map(|record| record_key(&record.partition, &record.answer))
                .collect()
        });
        let Ok(stale) = load.await else {
            return false;
        };
        self.found_stale(stale);
        true
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
        // Whether announcements may have been missed since the last reconcile.
        let mut lost = false;
        loop {
            let event = async {
                match events.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = event => match message {
                    Some(Heard::Message(message)) => match message.split_once(' ') {
                        Some(("add", key)) => self.load_record(key).await,
                        Some(("del", key)) => self.apply_removal(key),
                        _ => {}
                    },
                    Some(Heard::Lost) => lost = true,
                    Some(Heard::Subscribed) => {
                        if lost {
                            lost = !self.reconcile().await;
                        }
                    }
                    None => events = None,
                },
                _ = tick.tick() => {
                    self.reconcile().await;
                }
            }
        }
    }
}
