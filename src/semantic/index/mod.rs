//! The in-process vector index: one partition per exact context, searched
//! exhaustively over sign sketches ([`super::sketch`]) while it holds up to
//! `ann_above` entries and through an HNSW graph (`hnsw_rs`) beyond. Either way
//! the shortlist is scored on the exact vectors.
//!
//! Memory is bounded: a partition keeps at most `max_per_partition` entries and
//! the whole index at most `max_total`, least recently used first out.
//!
//! Graphs are built off the lock, with parallel inserts. A partition that grows
//! past `ann_above`, or whose slots were compacted, is searched exhaustively
//! while a background thread builds its graph, which is then swapped in; a
//! batch load ([`Index::insert_many`], the restart path) builds on the caller's
//! thread, also off the lock. The index knows vectors and answer ids only: it
//! never reads the store or runs the model.
//!
//! `partition.rs` holds one partition's slots, `graph.rs` the HNSW graph over them; this file
//! holds the lock, the bounds and the builders.

mod graph;
mod partition;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};

use super::embedder::similarity;
use super::sketch;
use partition::{Partition, Snapshot};

/// The most entries an exhaustive search scores exactly.
const SHORTLIST: usize = 256;

/// One indexed question and the answer entry it points to.
pub struct Item {
    /// The exact cache key (hex) of the recorded answer.
    pub answer: String,
    pub text: String,
    pub vector: Vec<f32>,
    last_used: AtomicU64,
}

/// A candidate above the threshold.
pub struct Candidate {
    pub item: Arc<Item>,
    pub similarity: f32,
}

/// One question to index, for [`Index::insert_many`].
pub struct Entry {
    pub partition: String,
    pub answer: String,
    pub text: String,
    pub vector: Vec<f32>,
}

struct State {
    partitions: HashMap<String, Partition>,
    total: usize,
}

struct Shared {
    state: RwLock<State>,
    clock: AtomicU64,
    max_total: usize,
    max_per_partition: usize,
    ann_above: usize,
    builders: Mutex<Vec<JoinHandle<()>>>,
}

/// A handle on the index; clones share it.
#[derive(Clone)]
pub struct Index {
    shared: Arc<Shared>,
}

impl Index {
    pub fn new(max_total: usize, max_per_partition: usize, ann_above: usize) -> Self {
        Index {
            shared: Arc::new(Shared {
                state: RwLock::new(State {
                    partitions: HashMap::new(),
                    total: 0,
                }),
                clock: AtomicU64::new(0),
                max_total: max_total.max(1),
                max_per_partition: max_per_partition.max(1),
                ann_above: ann_above.max(1),
                builders: Mutex::new(Vec::new()),
            }),
        }
    }

    fn tick(&self) -> u64 {
        self.shared.clock.fetch_add(1, Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.shared.state.read().total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a partition holds any entry, so that a search in it could find one.
    pub fn holds(&self, partition: &str) -> bool {
        self.shared
            .state
            .read()
            .partitions
            .get(partition)
            .is_some_and(|p| p.live > 0)
    }

    /// Whether searches in a partition go through its graph (rather than the sketch scan).
    pub fn searches_graph(&self, partition: &str) -> bool {
        self.shared
            .state
            .read()
            .partitions
            .get(partition)
            .is_some_and(|p| p.graph.is_some())
    }

    fn item(&self, answer: String, text: String, vector: Vec<f32>) -> Arc<Item> {
        Arc::new(Item {
            answer,
            text,
            vector,
            last_used: AtomicU64::new(self.tick()),
        })
    }

    /// Adds (or refreshes) an entry; evicts the least recently used ones past the bounds.
    pub fn insert(&self, partition: &str, answer: &str, text: &str, vector: Vec<f32>) {
        let item = self.item(answer.to_owned(), text.to_owned(), vector);
        let builds = {
            let mut state = self.shared.state.write();
            let State { partitions, total } = &mut *state;
            let epoch = self.tick();
            let p = partitions
                .entry(partition.to_owned())
                .or_insert_with(|| Partition::new(epoch));
            if !p.by_answer.contains_key(answer) && p.live >= self.shared.max_per_partition {
                *total -= p.evict(p.live + 1 - self.shared.max_per_partition);
                p.compact_if_sparse(self.tick());
            }
            if p.put(item) {
                *total += 1;
            }
            p.extend_graph();
            let mut builds: Vec<(String, Snapshot)> = p
                .claim_build(self.shared.ann_above, self.tick())
                .map(|s| (partition.to_owned(), s))
                .into_iter()
                .collect();
            builds.extend(self.shrink(&mut state));
            builds
        };
        for (name, snapshot) in builds {
            self.build_in_background(name, snapshot);
        }
    }

    /// Adds many entries at once (the restart path): one pass under the lock, then the graphs
    /// of partitions past `ann_above` are built on this thread with parallel inserts, while
    /// searches go on by the sketch scan.
    pub fn insert_many(&self, entries: impl IntoIterator<Item = Entry>) {
        let builds = {
            let mut state = self.shared.state.write();
            let State { partitions, total } = &mut *state;
            let mut touched = HashSet::new();
            for e in entries {
                let item = self.item(e.answer, e.text, e.vector);
                let epoch = self.tick();
                let p = partitions
                    .entry(e.partition.clone())
                    .or_insert_with(|| Partition::new(epoch));
                if p.put(item) {
                    *total += 1;
                }
                touched.insert(e.partition);
            }
            let mut builds = Vec::new();
            for name in touched {
                let Some(p) = partitions.get_mut(&name) else {
                    continue;
                };
                let excess = p.live.saturating_sub(self.shared.max_per_partition);
                *total -= p.evict(excess);
                p.compact_if_sparse(self.tick());
                p.extend_graph();
                if let Some(snapshot) = p.claim_build(self.shared.ann_above, self.tick()) {
                    builds.push((name, snapshot));
                }
            }
            builds.extend(self.shrink(&mut state));
            builds
        };
        for (name, snapshot) in builds {
            self.build(&name, snapshot);
        }
    }

    /// Removes the entry pointing at an answer, wherever it is.
    pub fn remove(&self, partition: &str, answer: &str) {
        let build = {
            let mut state = self.shared.state.write();
            let State { partitions, total } = &mut *state;
            let Some(p) = partitions.get_mut(partition) else {
                return;
            };
            if let Some(slot) = p.by_answer.get(answer).copied() {
                if p.remove_slot(slot) {
                    *total -= 1;
                }
                p.compact_if_sparse(self.tick());
            }
            if p.live == 0 {
                partitions.remove(partition);
                None
            } else {
                p.claim_build(self.shared.ann_above, self.tick())
            }
        };
        if let Some(snapshot) = build {
            self.build_in_background(partition.to_owned(), snapshot);
        }
    }

    /// The candidates at or above `threshold`, best first (at most `k`).
    pub fn search(
        &self,
        partition: &str,
        query: &[f32],
        threshold: f32,
        k: usize,
    ) -> Vec<Candidate> {
        let state = self.shared.state.read();
        let Some(p) = state.partitions.get(partition) else {
            return Vec::new();
        };
        let candidate = |item: &Arc<Item>| {
            let similarity = similarity(query, &item.vector);
            (similarity >= threshold).then(|| Candidate {
                item: item.clone(),
                similarity,
            })
        };
        let mut found: Vec<Candidate> = match &p.graph {
            Some(g) => graph::search(g, query, k)
                .filter_map(|slot| p.items.get(slot)?.as_ref().and_then(candidate))
                .collect(),
            None => sketch::shortlist(
                &p.sketches,
                &sketch::of(query),
                sketch::reach(threshold, query.len()),
                SHORTLIST,
                |slot| p.items[slot].is_some(),
            )
            .into_iter()
            .filter_map(|slot| p.items[slot].as_ref().and_then(candidate))
            .collect(),
        };
        found.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        found.truncate(k);
        let now = self.tick();
        for c in &found {
            c.item.last_used.store(now, Ordering::Relaxed);
        }
        found
    }

    /// Every (partition, answer) pair, for reconciling with the store.
    pub fn entries(&self) -> Vec<(String, String)> {
        let state = self.shared.state.read();
        state
            .partitions
            .iter()
            .flat_map(|(name, p)| p.by_answer.keys().map(move |a| (name.clone(), a.clone())))
            .collect()
    }

    /// Waits for the graphs being built in the background (for tests and benchmarks).
    pub fn wait_for_graphs(&self) {
        loop {
            let running: Vec<JoinHandle<()>> = self.shared.builders.lock().drain(..).collect();
            if running.is_empty() {
                return;
            }
            for builder in running {
                let _ = builder.join();
            }
        }
    }

    /// Evicts the least recently used entries of the whole index past `max_total`; returns the
    /// graphs to build for partitions whose slots were compacted.
    fn shrink(&self, state: &mut State) -> Vec<(String, Snapshot)> {
        let excess = state.total.saturating_sub(self.shared.max_total);
        if excess == 0 {
            return Vec::new();
        }
        let names: Vec<String> = state.partitions.keys().cloned().collect();
        let mut ages: Vec<(u64, usize, usize)> = names
            .iter()
            .enumerate()
            .flat_map(|(n, name)| {
                state.partitions[name]
                    .items
                    .iter()
                    .enumerate()
                    .filter_map(move |(slot, it)| {
                        it.as_ref()
                            .map(|it| (it.last_used.load(Ordering::Relaxed), n, slot))
                    })
            })
            .collect();
        let excess = excess.min(ages.len());
        if excess < ages.len() {
            ages.select_nth_unstable(excess);
        }
        let mut touched = HashSet::new();
        for &(_, n, slot) in &ages[..excess] {
            if let Some(p) = state.partitions.get_mut(&names[n]) {
                if p.remove_slot(slot) {
                    state.total -= 1;
                }
                touched.insert(n);
            }
        }
        let mut builds = Vec::new();
        for n in touched {
            let name = &names[n];
            let epoch = self.tick();
            let Some(p) = state.partitions.get_mut(name) else {
                continue;
            };
            p.compact_if_sparse(epoch);
            if p.live == 0 {
                state.partitions.remove(name);
            } else if let Some(snapshot) = p.claim_build(self.shared.ann_above, self.tick()) {
                builds.push((name.clone(), snapshot));
            }
        }
        builds
    }

    fn build_in_background(&self, partition: String, snapshot: Snapshot) {
        let index = self.clone();
        let name = partition.clone();
        let (tx, rx) = std::sync::mpsc::channel::<Snapshot>();
        let spawned = std::thread::Builder::new()
            .name("thrifty-index".to_owned())
            .spawn(move || {
                if let Ok(snapshot) = rx.recv() {
                    index.build(&name, snapshot);
                }
            });
        match spawned {
            Ok(builder) => {
                let mut builders = self.shared.builders.lock();
                builders.retain(|b| !b.is_finished());
                builders.push(builder);
                let _ = tx.send(snapshot);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start a graph builder, building in place");
                self.build(&partition, snapshot);
            }
        }
    }

    /// Builds a partition's graph from a snapshot and swaps it in, again from a fresh snapshot
    /// if the slots were renumbered meanwhile; gives up if another builder took over.
    fn build(&self, partition: &str, mut snapshot: Snapshot) {
        loop {
            let graph = snapshot.build_graph();
            let mut state = self.shared.state.write();
            let Some(p) = state.partitions.get_mut(partition) else {
                return;
            };
            if p.building != Some(snapshot.token) {
                return;
            }
            if p.epoch == snapshot.epoch {
                p.graph = Some(graph);
                p.indexed = snapshot.slots;
                p.building = None;
                p.extend_graph();
                return;
            }
            if p.live <= self.shared.ann_above {
                p.building = None;
                return;
            }
            snapshot = p.snapshot(snapshot.token);
        }
    }
}
