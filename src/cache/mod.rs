//! The exact response cache: a pipeline stage that answers repeated calls from
//! the store, records fresh answers (streams included) and lets one of N
//! identical concurrent misses go upstream while the others wait for its answer.
//!
//! - [`key`]: what decides an answer, hashed. [`controls`]: per-request headers.
//! - [`entry`]: what is stored, sealed. [`record`]: the body wrapper that records.
//! - [`replay`]: serving an entry in the client's mode. [`embedding`]: per-input cache.
//! - [`stats`]: counters for the admin API. [`invalidate`]: removal as a background job.
//! - [`hot`]: decoded answers in process in front of the store, coherent across instances.
//! - [`feed`]: a leader's stream shared live with the identical calls that follow it.
//!
//! It never fails a request: a store error is a miss, a bad entry is a miss.

pub mod controls;
pub mod embedding;
pub mod entry;
pub mod feed;
mod framed;
pub mod hot;
pub mod invalidate;
pub mod key;
mod known;
pub mod record;
pub mod replay;
pub mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::chat::{Call, Dialect};
use crate::clock::Clock;
use crate::config::CacheConfig;
use crate::dialect;
use crate::dialect::observe::JsonTexts;
use crate::store::{KEY_PREFIX, Store};
use controls::{CacheMode, Controls};
use entry::{Entry, Sealer};
use key::{CacheKey, Scope};
use stats::Stats;

/// Prefix of recorded answers in the store.
pub const ANSWER_PREFIX: &str = "thrifty:v1:answer:";
/// Prefix of per-input embeddings in the store.
pub const EMBEDDING_PREFIX: &str = "thrifty:v1:embedding:";

/// Prefix of the semantic stage's persisted vectors: invalidation deletes them with the
/// answers they point to.
pub const SEMANTIC_PREFIX: &str = "thrifty:v1:semantic:";

/// The longest a follower waits for a leader's answer before going upstream itself.
const FOLLOW_LIMIT: Duration = Duration::from_secs(900);

/// How many leaders in turn a call follows before it goes upstream on its own.
const FOLLOW_TURNS: usize = 2;

/// What the response's `x-thrifty-cache` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    SemanticHit,
    Miss,
    Bypass,
    Off,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::SemanticHit => "semantic-hit",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
            Outcome::Off => "off",
        }
    }
}

/// Everything the cache decided about one request before it goes upstream.
pub struct Plan {
    pub key: Option<CacheKey>,
    pub mode: CacheMode,
    pub controls: Controls,
    pub scope: Scope,
    pub tenant: String,
    pub model: String,
    pub dialect: Dialect,
}

/// The result of a lookup.
pub enum Lookup {
    Hit {
        entry: Arc<Entry>,
        key: CacheKey,
    },
    /// An identical streamed call is in flight: follow its stream as it arrives. `answer`
    /// says, once it ends, what was recorded (for the follower's savings record).
    Follow {
        reader: feed::Reader,
        answer: watch::Receiver<FlightResult>,
        key: CacheKey,
    },
    /// Go upstream; record the answer if a flight was taken.
    Miss {
        outcome: Outcome,
        flight: Option<Flight>,
    },
}

pub type FlightResult = Option<Option<Arc<Entry>>>;

/// What a followed flight recorded, once it ends: its entry, or `None` when nothing was
/// (or not within the follow limit).
pub async fn recorded(mut answer: watch::Receiver<FlightResult>) -> Option<Arc<Entry>> {
    let result = tokio::time::timeout(FOLLOW_LIMIT, answer.wait_for(Option::is_some)).await;
    match result {
        Ok(Ok(result)) => result.clone().flatten(),
        _ => None,
    }
}

/// A call in flight: the answer it records, and its stream as it comes.
struct Leader {
    answer: watch::Sender<FlightResult>,
    feed: Arc<feed::Feed>,
}

pub struct Cache {
    store: Arc<Store>,
    /// Store writes that run after the client has its answer; shutdown waits for them.
    tasks: tokio_util::task::TaskTracker,
    sealer: Sealer,
    flights: Mutex<HashMap<String, Leader>>,
    hot: Arc<hot::Hot>,
    /// Which answers a shared store holds, so a miss need not ask it.
    known: Option<crate::store::presence::Presence>,
    stats: Stats,
    jobs: invalidate::Jobs,
    config: CacheConfig,
    /// What entries' ages and TTLs are measured by.
    clock: Clock,
}

impl Cache {
    pub fn new(config: &CacheConfig, store: Arc<Store>, clock: Clock) -> Arc<Cache> {
        Arc::new(Cache {
            known: known::for_store(store.announces_in_step()),
            store,
            tasks: tokio_util::task::TaskTracker::new(),
            sealer: Sealer::new(config.encryption_key.as_ref()),
            flights: Mutex::new(HashMap::new()),
            hot: Arc::new(hot::Hot::new(config.hot_bytes)),
            stats: Stats::default(),
            jobs: invalidate::Jobs::default(),
            config: config.clone(),
            clock,
        })
    }

    /// The wall clock entries' ages and TTLs are measured by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Background store writes, for shutdown to wait on.
    pub fn tasks(&self) -> &tokio_util::task::TaskTracker {
        &self.tasks
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Invalidation jobs, for their status.
    pub fn jobs(&self) -> &invalidate::Jobs {
        &self.jobs
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The scope entries of this tenant and namespace live in.
    pub fn scope(&self, tenant: &str, controls: &Controls) -> Scope {
        Scope {
            tenant: (!self.config.share_across_tenants).then(|| tenant.to_owned()),
            namespace: controls.namespace.clone(),
        }
    }

    /// Decides whether and how the call uses the cache.
    pub fn plan(
        &self,
        dialect: Dialect,
        upstream: &str,
        tenant: &str,
        call: &Call,
        controls: Controls,
    ) -> Plan {
        let scope = self.scope(tenant, &controls);
        let too_random = match (
            self.config.max_temperature,
            dialect::temperature(dialect, call),
        ) {
            (Some(max), Some(t)) => t > max,
            _ => false,
        };
        let mode = match controls.mode {
            _ if !self.config.enabled => CacheMode::Off,
            CacheMode::Normal | CacheMode::ReadOnly | CacheMode::Refresh if too_random => {
                CacheMode::Bypass
            }
            mode => mode,
        };
        let key = match mode {
            CacheMode::Off | CacheMode::Bypass => None,
            _ => key::answer_key(&scope, dialect, upstream, call),
        };
        Plan {
            key,
            mode,
            controls,
            scope,
            tenant: tenant.to_owned(),
            model: call.model().to_owned(),
            dialect,
        }
    }

    fn store_key(key: &CacheKey) -> String {
        format!("{ANSWER_PREFIX}{}", key.0)
    }

    /// Reads an entry that is fresh enough for the plan and servable in the client's mode:
    /// from the hot layer when it holds a copy, else from the store (keeping a copy).
    pub async fn read(&self, plan: &Plan, key: &CacheKey, call: &Call) -> Option<Arc<Entry>> {
        let full = Self::store_key(key);
        // A question nobody asked before, as most are, is a miss here at once.
        if !self.may_hold(&full) {
            return None;
        }
        let now = self.clock.now_ms();
        if let Some(entry) = self.read_hot(plan, &full, call, now) {
            return Some(entry);
        }
        let raw = self.store.get(&full).await.ok()??;
        let Some(entry) = self.sealer.open::<Entry>(&raw) else {
            self.stats.unreadable();
            return None;
        };
        if !self.servable(plan, &entry, call) {
            return None;
        }
        let entry = Arc::new(entry);
        let (hot, copy, sealed) = (self.hot.clone(), entry.clone(), raw.len());
        let key = full.clone();
        self.slide(&full, &entry, now, move |expires| {
            hot.put(key, copy, sealed, now, expires);
        });
        Some(entry)
    }

    /// The hot layer's copy, if it holds one servable for the plan; a hit on it extends the
    /// stored entry's TTL when that is due.
    fn read_hot(&self, plan: &Plan, full: &str, call: &Call, now: u64) -> Option<Arc<Entry>> {
        let copy = self.hot.get(full, now)?;
        if !self.servable(plan, &copy.entry, call) {
            return None;
        }
        if copy.touch_due(now, copy.entry.ttl_ms) {
            let extended = copy.clone();
            self.slide(full, &copy.entry, now, move |expires| {
                extended.extended(now, expires);
            });
        }
        Some(copy.entry.clone())
    }

    fn servable(&self, plan: &Plan, entry: &Entry, call: &Call) -> bool {
        let age = Duration::from_millis(self.clock.now_ms().saturating_sub(entry.created_ms));
        if plan.controls.max_age.is_some_and(|max| age > max) {
            return false;
        }
        replay::can_serve(plan.dialect, call, entry)
    }

    /// Looks the call up, following an identical in-flight miss when there is one.
    pub async fn lookup(self: &Arc<Self>, plan: &Plan, call: &Call) -> Lookup {
        let Some(key) = plan.key.clone() else {
            let outcome = if plan.mode == CacheMode::Off {
                Outcome::Off
            } else {
                Outcome::Bypass
            };
            return Lookup::Miss {
                outcome,
                flight: None,
            };
        };
        if plan.mode.read() {
            if let Some(entry) = self.read(plan, &key, call).await {
                return Lookup::Hit { entry, key };
            }
        }
        let outcome = if plan.mode.read() {
            Outcome::Miss
        } else {
            Outcome::Bypass
        };
        if !plan.mode.write() {
            return Lookup::Miss {
                outcome,
                flight: None,
            };
        }
        // A follower whose leader recorded nothing, or nothing it can use, takes the next turn:
        // one of them goes upstream and the rest follow it, once; after that each goes on its
        // own.
        for _ in 0..FOLLOW_TURNS {
            let limit = self.config.max_entry_bytes;
            let waiting = {
                let mut flights = self.flights.lock();
                match flights.get(&key.0) {
                    // A follower holds the feed from here, so a leader whose client leaves
                    // once its answer began goes on for it (see `feed::Lead`).
                    Some(leader) if plan.mode.read() => {
                        Ok((leader.answer.subscribe(), leader.feed.reader()))
                    }
                    // A refreshing call while another is in flight records its own answer,
                    // unregistered.
                    Some(_) => Err(feed::Feed::new(limit)),
                    None => {
                        let (answer, _) = watch::channel(None);
                        let feed = feed::Feed::new(limit);
                        let leader = Leader {
                            answer,
                            feed: feed.clone(),
                        };
                        flights.insert(key.0.clone(), leader);
                        Err(feed)
                    }
                }
            };
            let (mut rx, reader) = match waiting {
                Ok(following) => following,
                Err(own) => {
                    let flight = Flight {
                        cache: self.clone(),
                        key: key.clone(),
                        feed: own,
                        done: false,
                    };
                    // A leader in this instance may have stored its answer between our read and
                    // our claim. It kept a copy in the hot layer when there is one, so only without
                    // it does this cost a second store read.
                    if plan.mode.read() {
                        let stored = if self.hot.enabled() {
                            let full = Self::store_key(&key);
                            let now = self.clock.now_ms();
                            self.may_hold(&full)
                                .then(|| self.read_hot(plan, &full, call, now))
                                .flatten()
                        } else {
                            self.read(plan, &key, call).await
                        };
                        if let Some(entry) = stored {
                            flight.finish(Some(entry.clone()));
                            return Lookup::Hit { entry, key };
                        }
                    }
                    return Lookup::Miss {
                        outcome,
                        flight: Some(flight),
                    };
                }
            };
            // A leader whose answer broke off (past `max_entry_bytes`, or failed) records
            // nothing, though its client may still be reading it: following it would fail, and
            // waiting for its record would only delay this call's own.
            if reader.broken() {
                break;
            }
            // A streaming follower of a streamed answer reads it as it comes. One that comes
            // after the answer ended whole waits for its record instead, and gets the replay
            // any call after the answer gets: only its store write is left.
            if call.stream() {
                let wants_usage = dialect::wants_stream_usage(plan.dialect, call);
                if let Ok(Some(start)) = tokio::time::timeout(FOLLOW_LIMIT, reader.started()).await
                {
                    let live = !reader.ended_whole();
                    if live && start.streamed && (start.has_usage || !wants_usage) {
                        return Lookup::Follow {
                            reader,
                            answer: rx,
                            key,
                        };
                    }
                }
            }
            // Waiting for the recorded answer keeps no leader going.
            drop(reader);
            match tokio::time::timeout(FOLLOW_LIMIT, rx.wait_for(Option::is_some)).await {
                // The leader's answer, if this call can take it; else (nothing recorded, or an
                // answer this call cannot use, such as one without the usage it asks for) the
                // next turn, so that this call's own answer is recorded.
                Ok(Ok(result)) => {
                    if let Some(Some(entry)) = result.clone() {
                        if self.servable(plan, &entry, call) {
                            return Lookup::Hit { entry, key };
                        }
                    }
                }
                // Waited as long as a call may.
                _ => break,
            }
        }
        Lookup::Miss {
            outcome,
            flight: None,
        }
    }

    /// Extends a hit entry's life by its TTL, never past `max_ttl` from its creation, then
    /// calls `extended` with when the stored entry expires at the earliest (as of `now`, before
    /// the store applied it). Nothing is extended at the end of an entry's life.
    fn slide(
        &self,
        full_key: &str,
        entry: &Entry,
        now: u64,
        extended: impl FnOnce(u64) + Send + 'static,
    ) {
        let end_of_life = entry
            .created_ms
            .saturating_add(u64::try_from(self.config.max_ttl.as_millis()).unwrap_or(u64::MAX));
        let ttl = entry.ttl_ms.min(end_of_life.saturating_sub(now));
        if ttl == 0 {
            return;
        }
        let store = self.store.clone();
        let key = full_key.to_owned();
        self.tasks.spawn(async move {
            if store.touch(&key, Duration::from_millis(ttl)).await.is_ok() {
                extended(now.saturating_add(ttl));
            }
        });
    }

    /// The entry a finished recording becomes.
    pub fn entry_for(&self, plan: &Plan, call: &Call, answer: entry::Answer) -> Entry {
        let ttl = plan.controls.ttl.map_or_else(
            || self.config.ttl_for(&plan.model),
            |t| t.min(self.config.max_ttl),
        );
        Entry {
            created_ms: self.clock.now_ms(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            tenant: plan.tenant.clone(),
            namespace: plan.controls.namespace.clone(),
            model: plan.model.clone(),
            tags: plan.controls.tags.clone(),
            dialect: plan.dialect,
            endpoint: call.endpoint(),
            answer,
            compressed_away: 0,
            framed: Default::default(),
        }
    }

    /// Writes an entry, keeps a copy in the hot layer and tells other instances to drop
    /// theirs; failures are counted by the store and otherwise ignored. The `texts` the
    /// answer was read from are sealed as they are (see [`Entry::write_recorded`]).
    pub async fn put(&self, key: &CacheKey, entry: &Arc<Entry>, texts: Option<&JsonTexts>) -> bool {
        let written = texts.and_then(|texts| {
            self.sealer
                .seal_with(|out| entry.write_recorded(texts, out))
        });
        let sealed = written.or_else(|| self.sealer.seal(entry.as_ref()));
        let Some(raw) = sealed else {
            return false;
        };
        let sealed = raw.len();
        let ttl = Duration::from_millis(entry.ttl_ms);
        let full = Self::store_key(key);
        // Before the write: the copy must not outlive the stored entry.
        let now = self.clock.now_ms();
        // Other instances drop their copies once the write is done: the announcement goes in
        // the same round trip, after it.
        let announcement = self.hot.announcement(std::slice::from_ref(&full));
        // Known before the write starts, so a lookup racing it asks the store, and again once
        // it has landed, so a walk of the keys begun meanwhile keeps it.
        self.written(&full);
        let stored = self
            .store
            .put_announced(&full, raw, ttl, hot::EVENTS, &announcement)
            .await
            .is_ok();
        if stored {
            self.written(&full);
            self.stats.stored();
            self.hot
                .put(full.clone(), entry.clone(), sealed, now, now + entry.ttl_ms);
        }
        stored
    }

    /// Deletes answers and embeddings by their full store keys, here and in every instance's
    /// hot layer; returns how many the store held.
    pub async fn delete(&self, keys: &[String]) -> Result<u64, crate::store::StoreError> {
        self.hot.forget(keys);
        let deleted = self.store.delete(keys).await;
        // Announced whether or not the store answered: a copy elsewhere must go either way.
        self.announce(keys).await;
        deleted
    }

    /// Tells the instances sharing the store that these answers changed.
    async fn announce(&self, keys: &[String]) {
        let answers: Vec<String> = keys
            .iter()
            .filter(|k| k.starts_with(ANSWER_PREFIX))
            .cloned()
            .collect();
        if !answers.is_empty() {
            let _ = self
                .store
                .publish(hot::EVENTS, &self.hot.announcement(&answers))
                .await;
        }
    }

    /// Whether an answer entry exists; `None` when the store cannot tell.
    pub async fn exists(&self, key: &CacheKey) -> Option<bool> {
        self.store
            .get(&Self::store_key(key))
            .await
            .ok()
            .map(|v| v.is_some())
    }

    /// Reads any entry by its full key, for the admin API.
    pub async fn get_entry(&self, full_key: &str) -> Option<Entry> {
        let raw = self.store.get(full_key).await.ok()??;
        self.sealer.open(&raw)
    }

    /// Every stored answer and embedding key.
    pub async fn all_keys(&self) -> Result<Vec<String>, crate::store::StoreError> {
        self.store.keys(KEY_PREFIX).await
    }
}

/// The right to record an answer for a key; followers wait for it.
/// Dropping it unfinished releases the followers to go upstream themselves.
pub struct Flight {
    cache: Arc<Cache>,
    key: CacheKey,
    /// The answer's pieces as they come, for streaming followers.
    feed: Arc<feed::Feed>,
    done: bool,
}

impl Flight {
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    pub fn feed(&self) -> &Arc<feed::Feed> {
        &self.feed
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Hands the answer (or its absence) to every follower.
    pub fn finish(mut self, entry: Option<Arc<Entry>>) {
        self.release(entry);
    }

    fn release(&mut self, entry: Option<Arc<Entry>>) {
        if self.done {
            return;
        }
        self.done = true;
        self.feed.end(entry.is_some());
        let mut flights = self.cache.flights.lock();
        // Only this flight's own registration: another may have taken the key since.
        if flights
            .get(&self.key.0)
            .is_some_and(|leader| Arc::ptr_eq(&leader.feed, &self.feed))
        {
            if let Some(leader) = flights.remove(&self.key.0) {
                let _ = leader.answer.send(Some(entry));
            }
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.release(None);
    }
}
