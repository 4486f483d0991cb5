//! The embedded backend: `redb` on disk under the data directory, with a
//! bounded `moka` layer in memory, so a restart keeps what was cached.
//!
//! Cache writes (puts and touches) commit without an `fsync`; [`EmbeddedStore::persist`],
//! run every second and at shutdown, makes them durable with one. Single puts are written
//! behind: a put returns once its entry is queued and readable, and the queue is gathered
//! for up to [`LINGER`] into one transaction, so answers recorded close together share a
//! commit; until it lands they are read from the queue. A crash of the machine may lose the
//! cache writes of the last second and that linger, never a delete and never the ledger's
//! batches, which commit durably on their own.
//!
//! The values of single puts (answers, semantic records) go to the value log beside the
//! database ([`super::values`]); the table holds where each lies.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use moka::sync::Cache;
use parking_lot::{Condvar, Mutex};
use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};

use tokio::sync::watch;

use super::embedded_err as err;
use super::presence::Presence;
use super::values::{Location, MAX_EXPIRY, MIN_LOGGED, SEGMENT_BYTES, Values, expiry_of, retime};
use super::{StoreError, Tally};
use crate::clock::Clock;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// A value and the unix time in milliseconds it expires at.
#[derive(Clone)]
struct Entry {
    value: Bytes,
    expires_ms: u64,
}

#[derive(Clone)]
pub struct EmbeddedStore {
    pub(super) db: Arc<Database>,
    memory: Memory,
    evictions: Arc<AtomicU64>,
    /// Set by a commit made without an `fsync`, cleared by the durable commit that follows.
    unpersisted: Arc<AtomicBool>,
    /// Single puts waiting for the next group commit.
    puts: Arc<Puts>,
    /// Which keys the table may hold: a read of any other answers without the disk.
    presence: Arc<Presence>,
    /// Where single puts' values lie, the table naming their locations.
    values: Arc<Values>,
    /// What entries' expiry is judged by.
    clock: Clock,
}

/// The memory layer: copies of what reads brought back from disk, and of puts whose commit
/// failed, bounded by their size.
#[derive(Clone)]
struct Memory {
    copies: Cache<String, Entry>,
    /// Bumped, under its lock, after every delete and every batch of puts that lands. A read
    /// from disk copies its value into memory under the same lock, and only if nothing changed
    /// on disk since the read began, so a read racing a delete or a put never leaves an old
    /// copy in memory (see [`EmbeddedStore::remember`]).
    changes: Arc<Mutex<u64>>,
}

impl Memory {
    /// What the disk holds under `keys` changed: their copies go, and no read begun before
    /// can copy what it read.
    fn changed<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut changes = self.changes.lock();
        *changes += 1;
        for key in keys {
            self.copies.invalidate(key);
        }
    }
}

/// Group commit of single puts, written behind: a put joins the queue and returns, and
/// whichever put finds no commit running starts one that gathers puts for up to [`LINGER`]
/// (less once [`LINGER_PUTS`] or [`LINGER_BYTES`] wait, or when something must see them on
/// disk), then writes everything queued in one transaction, again and again until the queue
/// is empty. Answers recorded within a linger of each other share one commit; until it lands
/// a get finds them in `pending`, and once it has, on disk: a put is not copied into the memory
/// layer, which holds what reads brought back. A commit that fails is logged and counted: its
/// entries move to memory and stay there until evicted, as a cache that could not write keeps
/// what it has.
struct Puts {
    queue: Mutex<PutQueue>,
    /// Wakes a lingering commit: enough puts wait, or something waits for them to land.
    hurry: Condvar,
    /// The sequence number of the last put whose commit is over (landed or failed).
    landed: watch::Sender<u64>,
    /// How many commit threads hold the database: one while a commit runs or lingers.
    holders: watch::Sender<usize>,
    /// Puts whose commit failed.
    failed: AtomicU64,
}

impl Default for Puts {
    fn default() -> Self {
        Puts {
            queue: Mutex::default(),
            hurry: Condvar::new(),
            landed: watch::Sender::new(0),
            holders: watch::Sender::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

/// How long a commit waits for more puts after the first of a quiet spell. No request waits
/// for it (puts are written behind); it is what a crash may lose on top of the second
/// between durable commits. A redb commit costs about as much as hundreds of inserts, so
/// fewer, larger commits halve what a miss costs under load.
const LINGER: Duration = Duration::from_millis(200);

/// Puts waiting that end a linger at once.
const LINGER_PUTS: usize = 4096;

/// Bytes of values waiting that end a linger at once.
const LINGER_BYTES: usize = 16 << 20;

/// A queued put: its key and entry.
type Waiting = (String, Entry);

/// Puts, and bytes of values, that may wait for a commit at once; beyond either a put fails
/// at once (the answer is simply not cached) rather than queue behind a disk that cannot
/// keep up.
const MAX_WAITING_PUTS: usize = 16_384;
const MAX_WAITING_BYTES: usize = 64 << 20;

#[derive(Default)]
struct PutQueue {
    waiting: Vec<Waiting>,
    /// The bytes of the values in `waiting`.
    waiting_bytes: usize,
    committing: bool,
    /// The entries queued or being written, by key, read before the memory layer: a get
    /// must find a put until its commit lands, and find it rather than an older copy.
    pending: HashMap<String, Entry>,
    /// The sequence number of the last put queued.
    queued: u64,
    /// Something waits for the queued puts to land: the linger ends now.
    hurried: bool,
}

/// Whether two entries are the same put's.
fn same(a: &Entry, b: &Entry) -> bool {
    a.expires_ms == b.expires_ms
        && a.value.as_ptr() == b.value.as_ptr()
        && a.value.len() == b.value.len()
}

impl Puts {
    /// Writes every queued put, a batch per transaction, until none is left.
    fn commit_all(
        &self,
        db: &Database,
        values: &Values,
        unpersisted: &AtomicBool,
        memory: &Memory,
    ) {
        // Should a write panic, the queue is released: its puts stay in memory only, and the
        // next put starts a commit of its own.
        struct Release<'a>(&'a Puts, &'a Memory);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let mut queue = self.0.queue.lock();
                    queue.committing = false;
                    queue.waiting.clear();
                    queue.waiting_bytes = 0;
                    for (key, entry) in queue.pending.drain() {
                        self.1.copies.insert(key, entry);
                    }
                    self.0.landed.send_replace(queue.queued);
                }
            }
        }
        let _release = Release(self, memory);
        loop {
            let (mut batch, last) = {
                let mut queue = self.queue.lock();
                // Every batch lingers, so under load commits come once a linger, not back to
                // back with whatever arrived during the last one.
                let deadline = std::time::Instant::now() + LINGER;
                while !queue.waiting.is_empty() && !queue.hurried && !queue.full_enough() {
                    if self.hurry.wait_until(&mut queue, deadline).timed_out() {
                        break;
                    }
                }
                if queue.waiting.is_empty() {
                    queue.committing = false;
                    return;
                }
                // Whatever hurried the linger waits for these: the next linger is whole.
                queue.hurried = false;
                queue.waiting_bytes = 0;
                (std::mem::take(&mut queue.waiting), queue.queued)
            };
            // In key order, so each leaf is copied once and the tree is walked left to
            // right; a stable sort keeps a key's later put after its earlier one.
            batch.sort_by(|a, b| a.0.cmp(&b.0));
            let written = (|| {
                // The transaction first: while it is open no sweep can judge a segment
                // unnamed that these values are about to be named in.
                let txn = db.begin_write().map_err(err)?;
                let long: Vec<&[u8]> = batch
                    .iter()
                    .filter(|(_, entry)| entry.value.len() >= MIN_LOGGED)
                    .map(|(_, entry)| &entry.value[..])
                    .collect();
                let mut logged = values.append(&long).map_err(err)?.into_iter();
                {
                    let mut table = txn.open_table(TABLE).map_err(err)?;
                    for (key, entry) in &batch {
                        let record = match entry.value.len() >= MIN_LOGGED {
                            true => logged
                                .next()
                                .map(|at| at.record(entry.expires_ms).to_vec())
                                .ok_or_else(|| err("the value log lost count"))?,
                            false => encode(entry),
                        };
                        table.insert(key.as_str(), record.as_slice()).map_err(err)?;
                    }
                }
                commit_lazily(txn, unpersisted)
            })();
            let failed = written.is_err();
            if let Err(error) = written {
                self.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::warn!(%error, puts = batch.len(), "the embedded store could not commit cache writes; they stay in memory only");
            }
            // What the disk holds for these keys changed: older copies leave memory, and a
            // read that began before cannot copy what it read there (see `changes`).
            memory.changed(batch.iter().map(|(key, _)| key.as_str()));
            let mut queue = self.queue.lock();
            for (key, entry) in batch {
                if queue.pending.get(&key).is_some_and(|p| same(p, &entry)) {
                    queue.pending.remove(&key);
                    if failed {
                        memory.copies.insert(key, entry);
                    }
                }
            }
            // With nothing more queued the commit is over before anyone hears that its batch
            // landed, and it is heard under the lock: whoever waited for it finds no commit
            // running, and a commit that a later put starts lands after this one.
            let over = queue.waiting.is_empty();
            if over {
                queue.committing = false;
            }
            self.landed.send_replace(last);
            if over {
                return;
            }
        }
    }
}

impl PutQueue {
    /// Whether enough waits that a linger ends at once.
    fn full_enough(&self) -> bool {
        self.waiting.len() >= LINGER_PUTS || self.waiting_bytes >= LINGER_BYTES
    }
}

impl Puts {
    /// Whether a put of any of `keys` is still waiting for its commit.
    fn any_pending(&self, keys: &[&str]) -> bool {
        let queue = self.queue.lock();
        !queue.pending.is_empty() && keys.iter().any(|key| queue.pending.contains_key(*key))
    }

    /// Settles the queued puts only when one of them is for one of `keys`, so a call about
    /// keys already on disk does not cut a linger short.
    async fn settle_for(&self, keys: &[&str]) {
        if self.any_pending(keys) {
            self.settle().await;
        }
    }

    /// The entry a put still waiting for its commit holds under `key`.
    fn pending(&self, key: &str) -> Option<Entry> {
        let queue = self.queue.lock();
        if queue.pending.is_empty() {
            return None;
        }
        queue.pending.get(key).cloned()
    }

    /// Waits until every put queued so far has committed (or failed), ending a linger early:
    /// for the calls that read or change the disk and must not miss, nor be undone by, a put
    /// made before them.
    async fn settle(&self) {
        let mut landed = self.landed.subscribe();
        let target = {
            let mut queue = self.queue.lock();
            if *landed.borrow() >= queue.queued {
                return;
            }
            queue.hurried = true;
            queue.queued
        };
        self.hurry.notify_one();
        // The sender lives as long as `self`.
        let _ = landed.wait_for(|n| *n >= target).await;
    }
}

fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entry.value.len());
    out.extend_from_slice(&entry.expires_ms.to_le_bytes());
    out.extend_from_slice(&entry.value);
    out
}

/// Commits a cache write without waiting for the disk; [`EmbeddedStore::persist`] follows.
fn commit_lazily(mut txn: WriteTransaction, unpersisted: &AtomicBool) -> Result<(), StoreError> {
    txn.set_durability(Durability::None);
    txn.commit().map_err(err)?;
    unpersisted.store(true, Ordering::Release);
    Ok(())
}

/// The entry a table record holds or, for a logged value, names.
fn decode(values: &Values, raw: &[u8]) -> Option<Entry> {
    let expires_ms = expiry_of(raw)?;
    let value = match Location::of_record(raw) {
        Some(at) => values.read(&at)?,
        None => Bytes::copy_from_slice(&raw[8..]),
    };
    Some(Entry { expires_ms, value })
}

/// The bytes of a table record's value, without reading a logged one.
fn value_len(raw: &[u8]) -> u64 {
    match Location::of_record(raw) {
        Some(at) => u64::from(at.len),
        None => raw.len().saturating_sub(8) as u64,
    }
}

/// Finds the value log's segments the table names nothing in, and those whose named values
/// fill less than half of them, whose values it appends again and names anew (a value that
/// no longer reads back goes, its key added to `removed`). Returns the segments to delete
/// once the transaction has committed: every one on disk but the current that the table
/// no longer names.
fn compact(
    table: &mut redb::Table<&str, &[u8]>,
    values: &Values,
    removed: &mut Vec<u64>,
) -> Result<Vec<u32>, StoreError> {
    let current = values.current();
    let mut named: HashMap<u32, u64> = HashMap::new();
    for item in table.iter().map_err(err)? {
        let (_, value) = item.map_err(err)?;
        if let Some(at) = Location::of_record(value.value()) {
            *named.entry(at.segment).or_default() += u64::from(at.len);
        }
    }
    let on_disk = values.segments().map_err(err)?;
    let sparse: Vec<u32> = on_disk
        .iter()
        .filter(|(segment, size)| {
            *segment != current && named.get(segment).is_some_and(|live| live * 2 < *size)
        })
        .map(|(segment, _)| *segment)
        .collect();
    if !sparse.is_empty() {
        let mut moving: Vec<(String, u64, Location)> = Vec::new();
        for item in table.iter().map_err(err)? {
            let (key, value) = item.map_err(err)?;
            let raw = value.value();
            if let (Some(at), Some(expires_ms)) = (Location::of_record(raw), expiry_of(raw)) {
                if sparse.contains(&at.segment) {
                    moving.push((key.value().to_owned(), expires_ms, at));
                }
            }
        }
        // A few hundred at a time: one write each, and a bounded copy in memory.
        for chunk in moving.chunks(256) {
            let (readable, unreadable): (Vec<_>, Vec<_>) = chunk
                .iter()
                .map(|(key, expires_ms, at)| (key, *expires_ms, values.read(at)))
                .partition(|(_, _, value)| value.is_some());
            for (key, _, _) in unreadable {
                removed.push(Presence::of(key));
                table.remove(key.as_str()).map_err(err)?;
            }
            let bytes: Vec<&[u8]> = readable.iter().flat_map(|(_, _, v)| v.as_deref()).collect();
            let moved = values.append(&bytes).map_err(err)?;
            for ((key, expires_ms, _), to) in readable.iter().zip(moved) {
                table
                    .insert(key.as_str(), &to.record(*expires_ms)[..])
                    .map_err(err)?;
            }
        }
    }
    Ok(on_disk
        .into_iter()
        .map(|(segment, _)| segment)
        .filter(|segment| {
            *segment != current && (sparse.contains(segment) || !named.contains_key(segment))
        })
        .collect())
}

/// Creates or opens the database file; [`StoreError::InUse`] while another holder keeps its
/// lock.
fn create(path: &Path) -> Result<Database, StoreError> {
    Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
        other => err(other),
    })
}

impl EmbeddedStore {
    /// A store in a fresh directory of its own, for unit tests. The open database outlives its
    /// directory entry, so nothing is left behind.
    #[cfg(test)]
    pub(crate) fn scratch(name: &str, clock: Clock) -> EmbeddedStore {
        let dir =
            std::env::temp_dir().join(format!("thrifty-{name}-{}", uuid::Uuid::new_v4().simple()));
        let store = EmbeddedStore::open(&dir, 1 << 20, clock).expect("the embedded store opens");
        let _ = std::fs::remove_dir_all(&dir);
        store
    }

    /// Opens (or creates) the store in `dir`, keeping up to `memory_bytes` of values in memory;
    /// entries expire by `clock`.
    pub fn open(dir: &Path, memory_bytes: u64, clock: Clock) -> Result<Self, StoreError> {
        EmbeddedStore::open_with_segments(dir, memory_bytes, clock, SEGMENT_BYTES)
    }

    /// [`EmbeddedStore::open`], closing the value log's segments past `segment_bytes`.
    fn open_with_segments(
        dir: &Path,
        memory_bytes: u64,
        clock: Clock,
        segment_bytes: u64,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let db = create(&dir.join("thrifty.redb"))?;
        let values = Values::open(&dir.join("values"), segment_bytes).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(TABLE).map_err(err)?;
        super::logs::migrate(&txn)?;
        txn.commit().map_err(err)?;
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let copies = Cache::builder()
            .eviction_listener(move |_key, _value, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX)
            })
            .max_capacity(memory_bytes)
            .build();
        let store = EmbeddedStore {
            db: Arc::new(db),
            memory: Memory {
                copies,
                changes: Arc::new(Mutex::new(0)),
            },
            evictions,
            unpersisted: Arc::new(AtomicBool::new(false)),
            puts: Arc::new(Puts::default()),
            presence: Arc::new(Presence::default()),
            values: Arc::new(values),
            clock,
        };
        store.walk_keys();
        Ok(store)
    }

    /// Walks the keys on disk once, at open, for [`Presence`]; if it cannot, every read
    /// goes to the disk.
    fn walk_keys(&self) {
        let begun = self.presence.begin_walk();
        let walk = || -> Result<Vec<u64>, StoreError> {
            let txn = self.db.begin_read().map_err(err)?;
            let table = txn.open_table(TABLE).map_err(err)?;
            let mut keys = Vec::new();
            for item in table.iter().map_err(err)? {
                keys.push(Presence::of(item.map_err(err)?.0.value()));
            }
            Ok(keys)
        };
        match walk() {
            Ok(keys) => {
                self.presence.walked(begun, keys);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot walk the store's keys; every read goes to disk");
            }
        }
    }

    /// When an entry written now with `ttl` expires.
    fn expiry(&self, ttl: Duration) -> u64 {
        self.clock
            .now_ms()
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .min(MAX_EXPIRY)
    }

    /// Makes every write committed so far durable, with one `fsync`, if any was made without.
    pub async fn persist(&self) -> Result<(), StoreError> {
        self.puts.settle().await;
        if !self.unpersisted.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let values = self.values.clone();
        let persisted = self
            .blocking(move |db| {
                // Values are appended only inside a write transaction, so none lands between
                // this sync and the commit that makes their locations durable.
                let mut txn = db.begin_write().map_err(err)?;
                values.sync().map_err(err)?;
                txn.set_durability(Durability::Immediate);
                txn.commit().map_err(err)
            })
            .await;
        if persisted.is_err() {
            self.unpersisted.store(true, Ordering::Release);
        }
        persisted
    }

    /// Lands every queued put, waits until no commit thread holds the database, and makes
    /// everything durable: the last call at shutdown, after which the file can be opened again
    /// as soon as this store is dropped.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.puts.settle().await;
        // The sender lives as long as `self`.
        let _ = self.puts.holders.subscribe().wait_for(|n| *n == 0).await;
        self.persist().await
    }

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(err)?
    }

    /// What `read` makes of the table's record under `key`, if there is one.
    async fn read_record<T: Send + 'static>(
        &self,
        key: &str,
        read: impl FnOnce(&[u8]) -> Option<T> + Send + 'static,
    ) -> Result<Option<T>, StoreError> {
        let owned = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(TABLE).map_err(err)?;
            let raw = table.get(owned.as_str()).map_err(err)?;
            Ok(raw.and_then(|v| read(v.value())))
        })
        .await
    }

    /// The entry on disk under `key`, live or not.
    async fn read_disk(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let values = self.values.clone();
        self.read_record(key, move |raw| decode(&values, raw)).await
    }

    /// Whether the table may hold `key`, or a put of it wait for its commit.
    pub fn may_hold(&self, key: &str) -> bool {
        self.presence.may_hold(key)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        // Every key written, pending or copied into memory is known: any other is a miss at
        // once, as most reads are.
        if !self.presence.may_hold(key) {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        // Before memory and the disk: a pending put leaves `pending` only once it is on disk,
        // and memory may hold an older copy until then.
        if let Some(entry) = self.puts.pending(key) {
            return Ok(Some(entry.value).filter(|_| entry.expires_ms > now));
        }
        if let Some(entry) = self.memory.copies.get(key) {
            if entry.expires_ms > now {
                return Ok(Some(entry.value));
            }
            self.memory.copies.invalidate(key);
        }
        let generation = *self.memory.changes.lock();
        let found = self.read_disk(key).await?;
        Ok(match found {
            Some(entry) if entry.expires_ms > now => {
                self.remember(key, &entry, generation);
                Some(entry.value)
            }
            _ => None,
        })
    }

    /// Copies a value read from disk into memory, unless a delete or a batch of puts landed
    /// since the read began (`generation`) or a failed put has left its own, newer copy there
    /// meanwhile: a read racing a put never hides the put's value behind the older one it read.
    fn remember(&self, key: &str, entry: &Entry, generation: u64) {
        let changes = self.memory.changes.lock();
        if *changes == generation {
            self.memory
                .copies
                .entry(key.to_owned())
                .or_insert_with(|| entry.clone());
        }
    }

    /// Reads the keys the memory layer lacks in one read transaction.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, StoreError> {
        let now = self.clock.now_ms();
        let mut values: Vec<Option<Bytes>> = Vec::with_capacity(keys.len());
        let mut missing: Vec<(usize, String)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match self
                .puts
                .pending(key)
                .or_else(|| self.memory.copies.get(key))
            {
                Some(entry) if entry.expires_ms > now => values.push(Some(entry.value)),
                lapsed => {
                    // A lapsed copy goes, so the live one read from disk can take its place.
                    if lapsed.is_some() {
                        self.memory.copies.invalidate(key);
                    }
                    values.push(None);
                    if self.presence.may_hold(key) {
                        missing.push((i, key.clone()));
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(values);
        }
        let generation = *self.memory.changes.lock();
        let log = self.values.clone();
        let found = self
            .blocking(move |db| {
                let txn = db.begin_read().map_err(err)?;
                let table = txn.open_table(TABLE).map_err(err)?;
                let mut found = Vec::with_capacity(missing.len());
                for (i, key) in missing {
                    let raw = table.get(key.as_str()).map_err(err)?;
                    if let Some(entry) = raw.and_then(|v| decode(&log, v.value())) {
                        found.push((i, key, entry));
                    }
                }
                Ok(found)
            })
            .await?;
        for (i, key, entry) in found {
            if entry.expires_ms <= now {
                continue;
            }
            values[i] = Some(entry.value.clone());
            self.remember(&key, &entry, generation);
        }
        Ok(values)
    }

    /// Writes every entry in one write transaction.
    pub async fn put_many(
        &self,
        entries: Vec<(String, Bytes)>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let expires_ms = self.expiry(ttl);
        let entries: Vec<(String, Entry)> = entries
            .into_iter()
            .map(|(key, value)| (key, Entry { value, expires_ms }))
            .collect();
        for (key, entry) in &entries {
            self.presence.add(key);
            self.memory.copies.insert(key.clone(), entry.clone());
        }
        let unpersisted = self.unpersisted.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(TABLE).map_err(err)?;
                for (key, entry) in &entries {
                    table
                        .insert(key.as_str(), encode(entry).as_slice())
                        .map_err(err)?;
                }
            }
            commit_lazily(txn, &unpersisted)
        })
        .await
    }

    pub async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        let entry = Entry {
            value,
            expires_ms: self.expiry(ttl),
        };
        let starts = {
            let mut queue = self.puts.queue.lock();
            if queue.waiting.len() >= MAX_WAITING_PUTS
                || queue.waiting_bytes + entry.value.len() > MAX_WAITING_BYTES
            {
                return Err(err("too many puts waiting for the disk"));
            }
            self.presence.add(key);
            queue.pending.insert(key.to_owned(), entry.clone());
            queue.waiting_bytes += entry.value.len();
            queue.waiting.push((key.to_owned(), entry));
            queue.queued += 1;
            if queue.full_enough() {
                self.puts.hurry.notify_one();
            }
            !std::mem::replace(&mut queue.committing, true)
        };
        if starts {
            let (puts, unpersisted) = (self.puts.clone(), self.unpersisted.clone());
            let db = self.db.clone();
            puts.holders.send_modify(|n| *n += 1);
            let (values, memory) = (self.values.clone(), self.memory.clone());
            tokio::task::spawn_blocking(move || {
                puts.commit_all(&db, &values, &unpersisted, &memory);
                // The database goes before the count does, so whoever waits for none (see
                // [`EmbeddedStore::close`]) finds the file no longer held by this thread.
                drop(db);
                puts.holders.send_modify(|n| *n -= 1);
            });
        }
        Ok(())
    }

    /// Extends a live key. The read and the rewrite are one transaction, so a touch racing
    /// a delete never brings the key back. The memory copy keeps its shorter expiry and is
    /// read again from disk once it lapses.
    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        self.puts.settle_for(&[key]).await;
        let owned = key.to_owned();
        let expires_ms = self.expiry(ttl);
        let unpersisted = self.unpersisted.clone();
        let clock = self.clock.clone();
        self.blocking(move |db| {
            let now = clock.now_ms();
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(TABLE).map_err(err)?;
                let current = table
                    .get(owned.as_str())
                    .map_err(err)?
                    .map(|v| v.value().to_vec());
                let live = current.filter(|raw| expiry_of(raw).is_some_and(|at| at > now));
                if let Some(mut record) = live {
                    retime(&mut record, expires_ms);
                    table
                        .insert(owned.as_str(), record.as_slice())
                        .map_err(err)?;
                }
            }
            commit_lazily(txn, &unpersisted)
        })
        .await
    }

    /// How long a live key has left by the entry on disk (a memory copy may keep an earlier
    /// expiry after a touch).
    pub async fn expires_in(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        self.puts.settle_for(&[key]).await;
        let found = self.read_record(key, expiry_of).await?;
        let now = self.clock.now_ms();
        Ok(found
            .filter(|at| *at > now)
            .map(|at| Duration::from_millis(at - now)))
    }

    pub async fn delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        // A put of one of these keys made before the delete lands first, so the delete
        // removes it for good.
        let named: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.puts.settle_for(&named).await;
        for key in keys {
            self.memory.copies.invalidate(key);
        }
        let owned = keys.to_vec();
        let removed = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(err)?;
                let mut removed = 0;
                {
                    let mut table = txn.open_table(TABLE).map_err(err)?;
                    for key in &owned {
                        if table.remove(key.as_str()).map_err(err)?.is_some() {
                            removed += 1;
                        }
                    }
                }
                txn.commit().map_err(err)?;
                Ok(removed)
            })
            .await;
        if removed.is_ok() {
            self.presence.remove(named.into_iter().map(Presence::of));
        }
        self.memory.changed(keys.iter().map(String::as_str));
        removed
    }

    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.puts.settle().await;
        let prefix = prefix.to_owned();
        let now = self.clock.now_ms();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(TABLE).map_err(err)?;
            let mut keys = Vec::new();
            for item in table.range(prefix.as_str()..).map_err(err)? {
                let (key, value) = item.map_err(err)?;
                if !key.value().starts_with(prefix.as_str()) {
                    break;
                }
                if expiry_of(value.value()).is_some_and(|at| at > now) {
                    keys.push(key.value().to_owned());
                }
            }
            Ok(keys)
        })
        .await
    }

    /// Counts live entries under a prefix and their value bytes in one read transaction.
    pub async fn tally(&self, prefix: &str) -> Result<Tally, StoreError> {
        self.puts.settle().await;
        let prefix = prefix.to_owned();
        let now = self.clock.now_ms();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(TABLE).map_err(err)?;
            let mut tally = Tally::default();
            for item in table.range(prefix.as_str()..).map_err(err)? {
                let (key, value) = item.map_err(err)?;
                if !key.value().starts_with(prefix.as_str()) {
                    break;
                }
                let raw = value.value();
                if expiry_of(raw).is_some_and(|at| at > now) {
                    tally.entries += 1;
                    tally.bytes += value_len(raw);
                }
            }
            Ok(tally)
        })
        .await
    }

    /// Deletes expired entries from disk, then the value log's segments nothing names any
    /// more, moving the live values of mostly dead ones forward first; returns how many
    /// entries went.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        self.puts.settle().await;
        let now = self.clock.now_ms();
        let values = self.values.clone();
        let removed = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(err)?;
                let mut removed = Vec::new();
                let unnamed = {
                    let mut table = txn.open_table(TABLE).map_err(err)?;
                    table
                        .retain(|key, value| {
                            let live = expiry_of(value).is_some_and(|at| at > now);
                            if !live {
                                removed.push(Presence::of(key));
                            }
                            live
                        })
                        .map_err(err)?;
                    compact(&mut table, &values, &mut removed)?
                };
                txn.commit().map_err(err)?;
                for segment in unnamed {
                    if let Err(error) = values.remove(segment) {
                        tracing::warn!(%error, segment, "cannot remove a value log segment");
                    }
                }
                Ok(removed)
            })
            .await?;
        let count = removed.len() as u64;
        self.presence.remove(removed);
        Ok(count)
    }

    /// Entries evicted from the memory layer for its size (they stay on disk).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The value log's segments on disk and their bytes.
    pub fn value_log(&self) -> Option<(usize, u64)> {
        let segments = self.values.segments().ok()?;
        Some((segments.len(), segments.iter().map(|(_, size)| size).sum()))
    }

    /// Puts written behind whose commit failed (they stayed in memory only).
    pub fn failed_writes(&self) -> u64 {
        self.puts.failed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> EmbeddedStore {
        store_on(name, Clock::system())
    }

    fn store_on(name: &str, clock: Clock) -> EmbeddedStore {
        EmbeddedStore::scratch(&format!("embedded-{name}"), clock)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_share_commits_and_every_one_lands_on_disk() {
        let s = store("group");
        let puts = (0..200).map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let value = Bytes::from(format!("value {i}"));
                s.put(&format!("k{i}"), value, Duration::from_secs(60))
                    .await
            })
        });
        for put in futures_util::future::join_all(puts).await {
            put.unwrap().unwrap();
        }
        // Read from disk, not from the memory copies.
        s.memory.copies.invalidate_all();
        for i in 0..200 {
            let got = s.get(&format!("k{i}")).await.unwrap();
            assert_eq!(got, Some(Bytes::from(format!("value {i}"))), "k{i}");
        }
        assert_eq!(s.keys("k").await.unwrap().len(), 200);
        let queue = s.puts.queue.lock();
        assert!(queue.waiting.is_empty() && !queue.committing);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_returns_before_its_commit_which_lands_on_its_own() {
        let s = store("behind");
        let started = std::time::Instant::now();
        s.put("k", Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .unwrap();
        let returned = started.elapsed();
        // Returned while its commit still lingers: the entry is pending, not on disk yet.
        assert!(s.puts.pending("k").is_some(), "returned after {returned:?}");
        assert!(returned < LINGER, "waited {returned:?} for the commit");
        assert_eq!(s.read_disk("k").await.unwrap().map(|e| e.value), None);
        // Nothing hurries it: the linger ends and the commit lands by itself.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.puts.pending("k").is_some() {
            assert!(std::time::Instant::now() < deadline, "the put never landed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            s.read_disk("k").await.unwrap().map(|e| e.value),
            Some(Bytes::from_static(b"v"))
        );
        assert_eq!(s.failed_writes(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_store_has_landed_every_put_and_let_go_of_its_file() {
        let dir = dir_for("close");
        let s = EmbeddedStore::open(&dir, 1 << 20, Clock::system()).unwrap();
        for i in 0..20 {
            s.put(
                &format!("k{i}"),
                Bytes::from_static(b"v"),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        }
        // A commit thread that still holds the file (one started by a late put) is waited for.
        s.puts.holders.send_modify(|n| *n += 1);
        let released = Arc::new(AtomicBool::new(false));
        let late = {
            let (s, released) = (s.clone(), released.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                released.store(true, Ordering::SeqCst);
                s.puts.holders.send_modify(|n| *n -= 1);
            })
        };
        s.close().await.unwrap();
        assert!(
            released.load(Ordering::SeqCst),
            "closed while the file was held"
        );
        late.await.unwrap();
        drop(s);
        // Opened again at once, as a restart on the same data_dir does.
        let reopened = EmbeddedStore::open(&dir, 1 << 20, Clock::system()).unwrap();
        assert_eq!(reopened.keys("k").await.unwrap().len(), 20);
        drop(reopened);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn puts_beyond_the_bytes_that_may_wait_fail_at_once_and_the_rest_land() {
        let s = store("bound");
        // A commit is taken to be running, so nothing drains the queue meanwhile.
        s.puts.queue.lock().committing = true;
        let value = Bytes::from(vec![b'x'; 1 << 20]);
        let fits = MAX_WAITING_BYTES >> 20;
        for i in 0..fits {
            s.put(&format!("k{i}"), value.clone(), Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("put {i} of {fits} refused: {e}"));
        }
        let refused = s.put("over", value.clone(), Duration::from_secs(60)).await;
        assert!(refused.is_err(), "the queue grew past its bound");
        assert_eq!(
            s.get("over").await.unwrap(),
            None,
            "a refused put is not kept"
        );
        assert_eq!(s.puts.queue.lock().waiting.len(), fits);
        // Once the commit runs, every accepted put lands.
        let commit = s.clone();
        tokio::task::spawn_blocking(move || {
            commit.puts.commit_all(
                &commit.db,
                &commit.values,
                &commit.unpersisted,
                &commit.memory,
            )
        })
        .await
        .unwrap();
        assert!(!s.puts.queue.lock().committing);
        s.memory.copies.invalidate_all();
        assert_eq!(s.keys("k").await.unwrap().len(), fits);
        assert_eq!(s.get("k0").await.unwrap(), Some(value));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_waiting_for_its_commit_is_read_and_a_later_delete_removes_it_for_good() {
        let s = store("linger");
        let put = {
            let s = s.clone();
            tokio::spawn(async move {
                s.put("k", Bytes::from_static(b"v"), Duration::from_secs(60))
                    .await
            })
        };
        while s.puts.queue.lock().queued == 0 {
            tokio::task::yield_now().await;
        }
        // Not from the memory layer: from the pending put, or from disk once it landed.
        s.memory.copies.invalidate_all();
        assert_eq!(s.get("k").await.unwrap(), Some(Bytes::from_static(b"v")));
        assert_eq!(s.keys("k").await.unwrap(), ["k"], "a key walk lets it land");
        s.delete(&["k".to_owned()]).await.unwrap();
        put.await.unwrap().unwrap();
        s.memory.copies.invalidate_all();
        assert_eq!(s.get("k").await.unwrap(), None);
        assert!(s.keys("k").await.unwrap().is_empty());
        assert!(s.puts.queue.lock().pending.is_empty());
    }

    #[tokio::test]
    async fn touch_extends_a_live_key_and_never_revives_a_deleted_one() {
        let clock = crate::clock::ManualClock::at_ms(1_000_000);
        let s = store_on("touch", clock.clock());
        s.put("k", Bytes::from_static(b"v"), Duration::from_millis(200))
            .await
            .unwrap();
        s.touch("k", Duration::from_secs(60)).await.unwrap();
        clock.advance(Duration::from_millis(300));
        assert_eq!(s.get("k").await.unwrap(), Some(Bytes::from_static(b"v")));
        assert_eq!(
            s.expires_in("k").await.unwrap(),
            Some(Duration::from_millis(59_700))
        );
        clock.advance(Duration::from_millis(59_700));
        assert_eq!(s.get("k").await.unwrap(), None, "expired by the clock");
        assert_eq!(s.expires_in("k").await.unwrap(), None);
        // Back to a time the key is live at, so only the delete can remove it.
        clock.set_ms(1_000_000);

        s.delete(&["k".to_owned()]).await.unwrap();
        s.touch("k", Duration::from_secs(60)).await.unwrap();
        assert_eq!(s.get("k").await.unwrap(), None);
        assert!(s.keys("k").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn writes_committed_lazily_are_on_disk_once_persisted() {
        let dir = dir_for("persist");
        let s = EmbeddedStore::open(&dir, 1 << 20, Clock::system()).unwrap();
        s.put("k", Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .unwrap();
        s.puts.settle().await;
        assert!(
            s.unpersisted.load(Ordering::Acquire),
            "a put's commit waits for no fsync"
        );
        s.persist().await.unwrap();
        assert!(!s.unpersisted.load(Ordering::Acquire));
        drop(s);
        let reopened = EmbeddedStore::open(&dir, 1 << 20, Clock::system()).unwrap();
        assert_eq!(
            reopened.get("k").await.unwrap(),
            Some(Bytes::from_static(b"v"))
        );
        drop(reopened);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_read_from_disk_never_hides_a_newer_put() {
        let s = store("remember");
        let old = Entry {
            value: Bytes::from_static(b"read from disk"),
            expires_ms: u64::MAX,
        };
        let generation = *s.memory.changes.lock();
        // A put lands between the disk read and its copy into memory.
        s.put("k", Bytes::from_static(b"newer"), Duration::from_secs(60))
            .await
            .unwrap();
        s.remember("k", &old, generation);
        assert_eq!(
            s.get("k").await.unwrap(),
            Some(Bytes::from_static(b"newer"))
        );
        // With nothing in memory, the read's copy is kept.
        s.memory.copies.invalidate("j");
        s.remember("j", &old, generation);
        assert_eq!(
            s.memory.copies.get("j").map(|e| e.value),
            Some(Bytes::from_static(b"read from disk"))
        );
    }

    #[tokio::test]
    async fn a_put_is_read_from_its_queue_then_from_disk_and_only_a_read_copies_it() {
        let s = store("put-memory");
        s.put("k", Bytes::from_static(b"v1"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(s.memory.copies.get("k").is_none(), "a put is not copied");
        assert_eq!(s.get("k").await.unwrap(), Some(Bytes::from_static(b"v1")));
        assert!(s.memory.copies.get("k").is_none(), "read from the queue");
        s.puts.settle().await;
        assert!(s.puts.pending("k").is_none(), "landed");
        assert_eq!(s.get("k").await.unwrap(), Some(Bytes::from_static(b"v1")));
        assert_eq!(
            s.memory.copies.get("k").map(|e| e.value),
            Some(Bytes::from_static(b"v1")),
            "the read from disk is kept in memory"
        );
        // A newer put is read before the older copy, and its landing takes that copy away.
        s.put("k", Bytes::from_static(b"v2"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(s.get("k").await.unwrap(), Some(Bytes::from_static(b"v2")));
        let read = s.get_many(&["k".to_owned()]).await.unwrap();
        assert_eq!(read, vec![Some(Bytes::from_static(b"v2"))]);
        s.puts.settle().await;
        assert!(s.memory.copies.get("k").is_none(), "the older copy went");
        assert_eq!(s.get("k").await.unwrap(), Some(Bytes::from_static(b"v2")));
        assert_eq!(s.get("never written").await.unwrap(), None);
        assert!(s.may_hold("k") && !s.may_hold("never written"));
    }

    #[tokio::test]
    async fn a_read_begun_before_a_batch_landed_does_not_copy_what_it_read() {
        let s = store("landed");
        s.put("k", Bytes::from_static(b"old"), Duration::from_secs(60))
            .await
            .unwrap();
        s.puts.settle().await;
        let generation = *s.memory.changes.lock();
        let old = s.read_disk("k").await.unwrap().expect("on disk");
        // A newer put lands between the disk read and its copy into memory.
        s.put("k", Bytes::from_static(b"new"), Duration::from_secs(60))
            .await
            .unwrap();
        s.puts.settle().await;
        s.remember("k", &old, generation);
        assert!(
            s.memory.copies.get("k").is_none(),
            "the old read is not kept"
        );
        assert_eq!(s.get("k").await.unwrap(), Some(Bytes::from_static(b"new")));
    }

    #[tokio::test]
    async fn a_lapsed_copy_in_memory_gives_way_to_the_touched_one_on_disk() {
        let clock = crate::clock::ManualClock::now();
        let s = store_on("lapsed", clock.clock());
        s.put("t", Bytes::from_static(b"v"), Duration::from_secs(1))
            .await
            .unwrap();
        s.touch("t", Duration::from_secs(60)).await.unwrap();
        clock.advance(Duration::from_secs(2));
        let read = s.get_many(&["t".to_owned()]).await.unwrap();
        assert_eq!(read, vec![Some(Bytes::from_static(b"v"))]);
        let now = clock.clock().now_ms();
        assert!(
            s.memory.copies.get("t").is_some_and(|e| e.expires_ms > now),
            "memory holds the live copy, not the lapsed one"
        );
    }

    #[tokio::test]
    async fn keys_on_disk_are_known_after_a_reopen_and_forgotten_once_removed() {
        let dir = dir_for("presence");
        let clock = crate::clock::ManualClock::now();
        let s = open_at(&dir, &clock);
        assert!(
            !s.presence.may_hold("never"),
            "an empty table holds nothing"
        );
        for (key, ttl) in [("kept", 600), ("deleted", 600), ("expiring", 1)] {
            s.put(key, Bytes::from(key), Duration::from_secs(ttl))
                .await
                .unwrap();
        }
        s.put_many(
            vec![("many".to_owned(), Bytes::from_static(b"m"))],
            Duration::from_secs(600),
        )
        .await
        .unwrap();
        for key in ["kept", "deleted", "expiring", "many"] {
            assert!(s.presence.may_hold(key), "a put is known at once: {key}");
        }
        s.persist().await.unwrap();
        drop(s);
        let s = open_at(&dir, &clock);
        for key in ["kept", "deleted", "expiring"] {
            assert_eq!(s.get(key).await.unwrap(), Some(Bytes::from(key)), "{key}");
        }
        assert_eq!(s.get("many").await.unwrap(), Some(Bytes::from_static(b"m")));
        assert!(!s.presence.may_hold("never"));
        assert_eq!(s.delete(&["deleted".to_owned()]).await.unwrap(), 1);
        clock.advance(Duration::from_secs(2));
        assert_eq!(s.sweep().await.unwrap(), 1);
        assert!(!s.presence.may_hold("deleted") && !s.presence.may_hold("expiring"));
        assert!(s.presence.may_hold("kept"));
        s.put(
            "deleted",
            Bytes::from_static(b"again"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        s.persist().await.unwrap();
        drop(s);
        let s = open_at(&dir, &clock);
        assert_eq!(
            s.get("deleted").await.unwrap(),
            Some(Bytes::from_static(b"again"))
        );
        assert_eq!(s.get("expiring").await.unwrap(), None);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The table's record under `key`.
    async fn record(s: &EmbeddedStore, key: &str) -> Option<Vec<u8>> {
        s.read_record(key, |raw| Some(raw.to_vec())).await.unwrap()
    }

    /// The store in `dir` (opened again after a drop), on `clock`.
    fn open_at(dir: &std::path::Path, clock: &crate::clock::ManualClock) -> EmbeddedStore {
        EmbeddedStore::open(dir, 1 << 20, clock.clock()).unwrap()
    }

    /// A fresh directory for a store a test opens again.
    fn dir_for(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "thrifty-embedded-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ))
    }

    fn long(fill: u8, len: usize) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_values_lie_in_the_log_and_read_back_after_a_reopen() {
        let dir = dir_for("log");
        let clock = crate::clock::ManualClock::now();
        let s = open_at(&dir, &clock);
        let answer = long(b'a', 1500);
        s.put("long", answer.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        s.put("short", Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .unwrap();
        s.persist().await.unwrap();
        // The table names where the long value lies; the short one it holds itself.
        let logged = record(&s, "long").await.unwrap();
        let at = Location::of_record(&logged).expect("a location");
        assert_eq!(
            (logged.len(), at.len),
            (super::super::values::RECORD_LEN, 1500)
        );
        assert_eq!(record(&s, "short").await.unwrap()[8..], *b"v");
        assert_eq!(s.tally("").await.unwrap().bytes, 1501);
        // A touch moves its expiry and keeps where it lies.
        clock.advance(Duration::from_secs(50));
        s.touch("long", Duration::from_secs(60)).await.unwrap();
        let touched = record(&s, "long").await.unwrap();
        assert_eq!(Location::of_record(&touched), Some(at));
        assert_eq!(
            s.expires_in("long").await.unwrap(),
            Some(Duration::from_secs(60))
        );
        s.persist().await.unwrap();
        drop(s);
        let s = open_at(&dir, &clock);
        assert_eq!(s.get("long").await.unwrap(), Some(answer.clone()));
        let many = s
            .get_many(&["short".to_owned(), "long".to_owned()])
            .await
            .unwrap();
        assert_eq!(many, vec![Some(Bytes::from_static(b"v")), Some(answer)]);
        // Past the first expiry it is still live: the touch landed on disk.
        clock.advance(Duration::from_secs(20));
        assert!(s.get("long").await.unwrap().is_some());
        assert_eq!(s.get("short").await.unwrap(), None);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_a_crash_cut_off_reads_as_a_miss_until_it_is_put_again() {
        let dir = dir_for("torn");
        let clock = crate::clock::ManualClock::now();
        let s = open_at(&dir, &clock);
        for key in ["whole", "torn"] {
            s.put(key, versioned(key, 1, 1000), Duration::from_secs(600))
                .await
                .unwrap();
            s.puts.settle().await;
        }
        s.persist().await.unwrap();
        let at = Location::of_record(&record(&s, "torn").await.unwrap()).unwrap();
        let segment = s.values.path(at.segment);
        drop(s);
        // As if the machine crashed before the last value's bytes reached the disk, while a
        // durable commit had already named them.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.set_len(at.offset + 10).unwrap();
        drop(file);
        let s = open_at(&dir, &clock);
        assert_eq!(s.get("torn").await.unwrap(), None, "a miss, not an error");
        assert_eq!(
            s.get("whole").await.unwrap(),
            Some(versioned("whole", 1, 1000))
        );
        s.put("torn", versioned("torn", 2, 1000), Duration::from_secs(600))
            .await
            .unwrap();
        s.persist().await.unwrap();
        s.memory.copies.invalidate_all();
        assert_eq!(
            s.get("torn").await.unwrap(),
            Some(versioned("torn", 2, 1000))
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A value that names its key and version, `len` bytes long.
    fn versioned(key: &str, version: usize, len: usize) -> Bytes {
        let mut value = format!("{key}:{version}:").into_bytes();
        value.resize(len, b'.');
        Bytes::from(value)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_puts_deletes_reads_and_sweeps_never_lose_nor_mix_up_a_value() {
        let dir = dir_for("race");
        let clock = crate::clock::ManualClock::now();
        // Small segments, so sweeps find sparse ones to move while puts keep landing.
        let s = EmbeddedStore::open_with_segments(&dir, 1 << 20, clock.clock(), 8 << 10).unwrap();
        let writers = (0..4).map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                // Each writer owns its keys, so its last write of each is the one that lives.
                let mut last: HashMap<String, Option<Bytes>> = HashMap::new();
                for i in 0..300 {
                    let key = format!("w{w}-k{}", i % 12);
                    if i % 7 == 3 {
                        s.delete(std::slice::from_ref(&key)).await.unwrap();
                        last.insert(key, None);
                    } else {
                        let value = versioned(&key, i, 256 + (i * 37) % 1500);
                        s.put(&key, value.clone(), Duration::from_secs(600))
                            .await
                            .unwrap();
                        last.insert(key, Some(value));
                    }
                    if i % 25 == 0 {
                        s.puts.settle().await;
                    }
                }
                last
            })
        });
        let writers: Vec<_> = writers.collect();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (s, stop) = (s.clone(), stop.clone());
            tokio::spawn(async move {
                let mut read = 0;
                while !stop.load(Ordering::Acquire) {
                    s.memory.copies.invalidate_all();
                    for w in 0..4 {
                        for k in 0..12 {
                            let key = format!("w{w}-k{k}");
                            if let Some(value) = s.get(&key).await.unwrap() {
                                let prefix = format!("{key}:");
                                assert!(value.starts_with(prefix.as_bytes()), "{key}");
                                read += 1;
                            }
                        }
                    }
                    tokio::task::yield_now().await;
                }
                read
            })
        };
        let sweeper = {
            let (s, stop) = (s.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    s.sweep().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let mut expected = HashMap::new();
        for writer in writers {
            expected.extend(writer.await.unwrap());
        }
        stop.store(true, Ordering::Release);
        assert!(reader.await.unwrap() > 0, "the reader read something");
        sweeper.await.unwrap();
        s.sweep().await.unwrap();
        assert!(
            s.values.segments().unwrap().len() > 1 || s.values.current() > 0,
            "the test wrote past one segment"
        );
        // From disk alone, each key holds its last write, or nothing once deleted.
        s.memory.copies.invalidate_all();
        for (key, value) in &expected {
            assert_eq!(&s.get(key).await.unwrap(), value, "{key}");
        }
        drop(s);
        let s = open_at(&dir, &clock);
        for (key, value) in &expected {
            assert_eq!(&s.get(key).await.unwrap(), value, "{key} after a reopen");
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sweep_moves_what_lives_out_of_mostly_dead_segments_and_deletes_the_rest() {
        let dir = dir_for("compact");
        let clock = crate::clock::ManualClock::now();
        let s = EmbeddedStore::open_with_segments(&dir, 1 << 20, clock.clock(), 1000).unwrap();
        let segment = |key: &'static str| {
            let s = s.clone();
            async move {
                Location::of_record(&record(&s, key).await.unwrap())
                    .unwrap()
                    .segment
            }
        };
        // Each put lands on its own: the first segment holds a survivor among the
        // expiring, the second only the expiring, the third a survivor.
        let puts = [
            ("kept", b'k', 300, 600),
            ("gone 1", b'1', 800, 1),
            ("gone 2", b'2', 1100, 1),
            ("new", b'n', 400, 600),
        ];
        for (key, fill, len, ttl) in puts {
            s.put(key, long(fill, len), Duration::from_secs(ttl))
                .await
                .unwrap();
            s.puts.settle().await;
        }
        let first = segment("kept").await;
        assert_eq!(segment("gone 1").await, first);
        let second = segment("gone 2").await;
        let third = segment("new").await;
        assert!(first < second && second < third);
        let expires = s.expires_in("kept").await.unwrap();
        clock.advance(Duration::from_secs(2));
        assert_eq!(s.sweep().await.unwrap(), 2);
        // The first segment's survivor moved, keeping its expiry; the first two are gone.
        let moved = segment("kept").await;
        assert!(moved >= third, "moved to {moved}");
        let on_disk: Vec<u32> = s
            .values
            .segments()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(
            !on_disk.contains(&first) && !on_disk.contains(&second),
            "{on_disk:?}"
        );
        assert!(on_disk.contains(&third));
        assert_eq!(
            s.expires_in("kept").await.unwrap().map(|d| d.as_secs()),
            expires.map(|d| d.as_secs() - 2)
        );
        s.memory.copies.invalidate_all();
        assert_eq!(s.get("kept").await.unwrap(), Some(long(b'k', 300)));
        assert_eq!(s.get("new").await.unwrap(), Some(long(b'n', 400)));
        assert_eq!(s.get("gone 1").await.unwrap(), None);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn many_keys_are_read_and_written_in_order() {
        let s = store("many");
        let entries: Vec<(String, Bytes)> = (0..3)
            .map(|i| (format!("k{i}"), Bytes::from(format!("v{i}"))))
            .collect();
        s.put_many(entries, Duration::from_secs(60)).await.unwrap();
        s.memory.copies.invalidate_all();
        let keys: Vec<String> = ["k2", "nope", "k0"].map(str::to_owned).to_vec();
        let got = s.get_many(&keys).await.unwrap();
        assert_eq!(
            got,
            [Some(Bytes::from("v2")), None, Some(Bytes::from("v0"))]
        );
        assert_eq!(s.get_many(&keys).await.unwrap(), got, "now from memory");
    }
}
