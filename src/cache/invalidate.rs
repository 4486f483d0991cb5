//! Invalidation as a job: it walks the cache's keys, removes the selected answers and
//! embeddings in bounded batches, then the semantic records that point to removed answers,
//! and reports its progress while it runs. It never holds a request's store budget: every
//! batch gets the bulk timeout, and a batch that fails is tried again before the job gives up.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};

use super::controls::tag_matches;
use super::entry::{EmbeddingEntry, Entry};
use super::{ANSWER_PREFIX, Cache, EMBEDDING_PREFIX, SEMANTIC_PREFIX};
use crate::store::{BATCH_KEYS, StoreError};

/// How many finished or running jobs are remembered for their status.
const KEEP_JOBS: usize = 64;

/// How often a failed batch is tried before the job fails.
const ATTEMPTS: u32 = 3;

/// The pause before a failed batch is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Which entries an invalidation removes; at least one selector is required.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    tenant: Option<String>,
    namespace: Option<String>,
    model: Option<String>,
    tag: Option<String>,
    key_prefix: Option<String>,
    #[serde(default)]
    all: bool,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.tenant.is_none()
            && self.namespace.is_none()
            && self.model.is_none()
            && self.tag.is_none()
            && self.key_prefix.is_none()
    }

    /// Whether an entry with these attributes is selected; every given selector must match.
    fn matches(
        &self,
        hash: &str,
        tenant: &str,
        namespace: Option<&str>,
        model: &str,
        tags: &[String],
    ) -> bool {
        self.all
            || (self.tenant.as_deref().is_none_or(|t| t == tenant)
                && self
                    .namespace
                    .as_deref()
                    .is_none_or(|n| Some(n) == namespace)
                && self.model.as_deref().is_none_or(|m| m == model)
                && self
                    .tag
                    .as_deref()
                    .is_none_or(|sel| tags.iter().any(|t| tag_matches(sel, t)))
                && self
                    .key_prefix
                    .as_deref()
                    .is_none_or(|p| hash.starts_with(p)))
    }

    /// Whether the key's own name decides, so its value need not be read.
    fn decided_by_key(&self) -> bool {
        self.all
            || (self.tenant.is_none()
                && self.namespace.is_none()
                && self.model.is_none()
                && self.tag.is_none())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    Done,
    Failed(String),
}

/// What a job has done so far; read while it runs.
pub struct Progress {
    pub id: String,
    started: Instant,
    /// Answer and embedding keys looked at.
    scanned: AtomicU64,
    /// Answer and embedding entries removed.
    deleted: AtomicU64,
    /// Semantic records removed.
    semantic_deleted: AtomicU64,
    state: Mutex<State>,
}

impl Progress {
    pub fn state(&self) -> State {
        self.state.lock().clone()
    }

    pub fn deleted(&self) -> u64 {
        self.deleted.load(Ordering::Relaxed)
    }

    pub fn json(&self) -> Value {
        let (state, error) = match self.state() {
            State::Running => ("running", None),
            State::Done => ("done", None),
            State::Failed(e) => ("failed", Some(e)),
        };
        json!({
            "job": self.id,
            "state": state,
            "error": error,
            "scanned": self.scanned.load(Ordering::Relaxed),
            "deleted": self.deleted(),
            "semantic_deleted": self.semantic_deleted.load(Ordering::Relaxed),
            "elapsed_ms": u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// The jobs of this instance, newest last, at most [`KEEP_JOBS`].
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<VecDeque<Arc<Progress>>>,
}

impl Jobs {
    fn add(&self) -> Arc<Progress> {
        let progress = Arc::new(Progress {
            id: uuid::Uuid::new_v4().simple().to_string(),
            started: Instant::now(),
            scanned: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            semantic_deleted: AtomicU64::new(0),
            state: Mutex::new(State::Running),
        });
        let mut jobs = self.jobs.lock();
        if jobs.len() >= KEEP_JOBS {
            jobs.pop_front();
        }
        jobs.push_back(progress.clone());
        progress
    }

    pub fn get(&self, id: &str) -> Option<Arc<Progress>> {
        self.jobs.lock().iter().find(|p| p.id == id).cloned()
    }
}

/// Drops removed semantic records from an in-memory index.
pub type ForgetRecords = Box<dyn Fn(&[String]) + Send + Sync>;

/// Starts a job in the background and returns its progress.
pub fn start(cache: &Arc<Cache>, selector: Selector, forget: ForgetRecords) -> Arc<Progress> {
    let progress = cache.jobs.add();
    let (cache, job) = (cache.clone(), progress.clone());
    tokio::spawn(async move {
        let state = match run(&cache, &selector, &job, &forget).await {
            Ok(()) => State::Done,
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "cache invalidation failed");
                State::Failed(e.to_string())
            }
        };
        *job.state.lock() = state;
    });
    progress
}

async fn run(
    cache: &Cache,
    selector: &Selector,
    progress: &Progress,
    forget: &ForgetRecords,
) -> Result<(), StoreError> {
    let store = cache.store();
    let mut removed_answers: HashSet<String> = HashSet::new();
    for prefix in [ANSWER_PREFIX, EMBEDDING_PREFIX] {
        let keys = retry(|| store.keys(prefix)).await?;
        for batch in keys.chunks(BATCH_KEYS) {
            let doomed = select(cache, selector, prefix, batch).await?;
            progress
                .scanned
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            if doomed.is_empty() {
                continue;
            }
            let deleted = retry(|| cache.delete(&doomed)).await?;
            progress.deleted.fetch_add(deleted, Ordering::Relaxed);
            if prefix == ANSWER_PREFIX {
                removed_answers.extend(
                    doomed
                        .iter()
                        .filter_map(|k| k.strip_prefix(ANSWER_PREFIX))
                        .map(str::to_owned),
                );
            }
        }
    }
    // A semantic record goes with the answer it points to.
    let records: Vec<String> = retry(|| store.keys(SEMANTIC_PREFIX))
        .await?
        .into_iter()
        .filter(|key| {
            let answer = key
                .strip_prefix(SEMANTIC_PREFIX)
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, answer)| answer);
            answer.is_some_and(|a| selector.all || removed_answers.contains(a))
        })
        .collect();
    for batch in records.chunks(BATCH_KEYS) {
        let deleted = retry(|| store.delete(batch)).await?;
        forget(batch);
        progress
            .semantic_deleted
            .fetch_add(deleted, Ordering::Relaxed);
    }
    Ok(())
}

/// The keys of one batch the selector picks; values are read only when the key cannot tell.
async fn select(
    cache: &Cache,
    selector: &Selector,
    prefix: &str,
    batch: &[String],
) -> Result<Vec<String>, StoreError> {
    let hash = |key: &str| key.strip_prefix(prefix).unwrap_or(key).to_owned();
    if selector.decided_by_key() {
        return Ok(batch
            .iter()
            .filter(|k| selector.matches(&hash(k), "", None, "", &[]))
            .cloned()
            .collect());
    }
    let values = retry(|| cache.store().get_batch(batch)).await?;
    let mut doomed = Vec::new();
    for (key, raw) in batch.iter().zip(values) {
        let Some(raw) = raw else { continue };
        let attributes = if prefix == ANSWER_PREFIX {
            cache
                .sealer()
                .open::<Entry>(&raw)
                .map(|e| (e.tenant, e.namespace, e.model, e.tags))
        } else {
            cache
                .sealer()
                .open::<EmbeddingEntry>(&raw)
                .map(|e| (e.tenant, e.namespace, e.model, e.tags))
        };
        if let Some((tenant, namespace, model, tags)) = attributes {
            if selector.matches(&hash(key), &tenant, namespace.as_deref(), &model, &tags) {
                doomed.push(key.clone());
            }
        }
    }
    Ok(doomed)
}

/// Runs a store call until it succeeds, at most [`ATTEMPTS`] times.
async fn retry<T, F, Fut>(mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if attempt >= ATTEMPTS => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}
