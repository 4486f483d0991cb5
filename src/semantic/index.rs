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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use hnsw_rs::prelude::Hnsw;
use parking_lot::{Mutex, RwLock};

use super::embedder::similarity;
use super::sketch::{self, Sketch};

// The graph's parameters, measured at 100k entries in topics (see README). With 16 links and
// 64 candidates at construction, 32 candidates per search found the exact best match for 98%
// of near-duplicate queries (24: 95%; 48: 99% in 1.6 times the time). 12 links and 48
// candidates built twice as fast but found 84%; 100 candidates at construction gained under a
// point for 1.7 times the build.

/// Links per point on the upper layers of the graph (twice that on the bottom layer).
const LINKS: usize = 16;

/// Candidates weighed when a point joins the graph.
const EF_CONSTRUCTION: usize = 64;

/// Candidates weighed by a search.
const EF_SEARCH: usize = 32;

/// The most layers a graph grows.
const LAYERS: usize = 16;

/// Neighbours a graph search returns (before dead slots and the threshold are dropped).
const GRAPH_NEIGHBOURS: usize = 8;

/// The most entries an exhaustive search scores exactly.
const SHORTLIST: usize = 256;

/// Points per thread below which a graph grows on one thread.
const PARALLEL_FROM: usize = 64;

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

/// Cosine distance of the graph's quantised copies of the vectors ([`quantise`]).
#[derive(Clone, Copy, Default)]
struct Cosine;

impl hnsw_rs::prelude::Distance<i8> for Cosine {
    fn eval(&self, a: &[i8], b: &[i8]) -> f32 {
        let (mut ab, mut aa, mut bb) = (0_i32, 0_i32, 0_i32);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (i16::from(x), i16::from(y));
            ab += i32::from(x * y);
            aa += i32::from(x * x);
            bb += i32::from(y * y);
        }
        if aa == 0 || bb == 0 {
            return 1.0;
        }
        (1.0 - ab as f32 / (aa as f32 * bb as f32).sqrt()).max(0.0)
    }
}

/// The graph's copy of a vector: i8 components, the largest scaled to ±127. The graph keeps
/// its own copy of every vector, and this one takes a quarter of the memory of an f32 copy for
/// the same speed and recall (measured); the candidates are scored again on the exact vectors.
fn quantise(v: &[f32]) -> Vec<i8> {
    let max = v.iter().fold(0.0_f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { 127.0 / max } else { 0.0 };
    v.iter().map(|x| (x * scale).round() as i8).collect()
}

type Graph = Hnsw<'static, i8, Cosine>;

struct Partition {
    /// Slot `i` is graph point `i`; removed entries leave `None` until compaction.
    items: Vec<Option<Arc<Item>>>,
    /// The sketch of slot `i`, kept apart so that a scan reads nothing else.
    sketches: Vec<Sketch>,
    by_answer: HashMap<String, usize>,
    live: usize,
    /// The graph over slots `0..indexed`; `None` while small or while one is being built.
    graph: Option<Graph>,
    indexed: usize,
    /// Changes whenever slots are renumbered, so a graph built from older slots is thrown away.
    epoch: u64,
    /// The token of the builder working for this partition, if any.
    building: Option<u64>,
}

/// The live items of a partition at one epoch, to build a graph from off the lock.
struct Snapshot {
    epoch: u64,
    token: u64,
    slots: usize,
    items: Vec<(Arc<Item>, usize)>,
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

impl Partition {
    fn new(epoch: u64) -> Self {
        Partition {
            items: Vec::new(),
            sketches: Vec::new(),
            by_answer: HashMap::new(),
            live: 0,
            graph: None,
            indexed: 0,
            epoch,
            building: None,
        }
    }

    /// Adds an item, or replaces the one pointing at the same answer; true when it is new.
    fn put(&mut self, item: Arc<Item>) -> bool {
        let sketch = sketch::of(&item.vector);
        if let Some(&slot) = self.by_answer.get(&item.answer) {
            self.items[slot] = Some(item);
            self.sketches[slot] = sketch;
            return false;
        }
        self.by_answer.insert(item.answer.clone(), self.items.len());
        self.items.push(Some(item));
        self.sketches.push(sketch);
        self.live += 1;
        true
    }

    fn remove_slot(&mut self, slot: usize) -> bool {
        match self.items.get_mut(slot).and_then(Option::take) {
            Some(item) => {
                self.by_answer.remove(&item.answer);
                self.live -= 1;
                true
            }
            None => false,
        }
    }

    /// Removes the `n` least recently used entries; returns how many went.
    fn evict(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let mut ages: Vec<(u64, usize)> = self
            .items
            .iter()
            .enumerate()
            .filter_map(|(slot, item)| {
                item.as_ref()
                    .map(|it| (it.last_used.load(Ordering::Relaxed), slot))
            })
            .collect();
        let n = n.min(ages.len());
        if n < ages.len() {
            ages.select_nth_unstable(n);
        }
        ages[..n]
            .iter()
            .filter(|&&(_, slot)| self.remove_slot(slot))
            .count()
    }

    /// Renumbers the slots once a quarter of them are dead; the graph, which cannot delete,
    /// goes with the old numbers.
    fn compact_if_sparse(&mut self, epoch: u64) {
        let dead = self.items.len() - self.live;
        if dead * 4 > self.items.len() && dead > 16 {
            (self.items, self.sketches) = self
                .items
                .drain(..)
                .zip(self.sketches.drain(..))
                .filter(|(item, _)| item.is_some())
                .unzip();
            self.by_answer = self
                .items
                .iter()
                .enumerate()
                .filter_map(|(i, it)| it.as_ref().map(|it| (it.answer.clone(), i)))
                .collect();
            self.graph = None;
            self.indexed = 0;
            self.epoch = epoch;
        }
    }

    /// Adds the slots appended since the graph was built to it.
    fn extend_graph(&mut self) {
        let Some(graph) = &self.graph else {
            return;
        };
        let points: Vec<(Vec<i8>, usize)> = self.items[self.indexed..]
            .iter()
            .enumerate()
            .filter_map(|(i, it)| {
                it.as_ref()
                    .map(|it| (quantise(&it.vector), self.indexed + i))
            })
            .collect();
        insert_points(graph, &points);
        self.indexed = self.items.len();
    }

    /// A snapshot to build a graph from, when the partition is large and has no graph or builder.
    fn claim_build(&mut self, ann_above: usize, token: u64) -> Option<Snapshot> {
        if self.graph.is_some() || self.building.is_some() || self.live <= ann_above {
            return None;
        }
        self.building = Some(token);
        Some(self.snapshot(token))
    }

    fn snapshot(&self, token: u64) -> Snapshot {
        Snapshot {
            epoch: self.epoch,
            token,
            slots: self.items.len(),
            items: self
                .items
                .iter()
                .enumerate()
                .filter_map(|(slot, it)| it.clone().map(|it| (it, slot)))
                .collect(),
        }
    }
}

/// Inserts points into a graph, spread over one thread per core when there are many.
///
/// Scoped threads rather than `parallel_insert` (rayon's global pool): the tokenizer splits
/// micro-batches of queries over that pool too, and they would wait behind a whole build.
fn insert_points(graph: &Graph, points: &[(Vec<i8>, usize)]) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(points.len() / PARALLEL_FROM);
    if threads <= 1 {
        for (vector, slot) in points {
            graph.insert_slice((vector, *slot));
        }
        return;
    }
    let next = AtomicUsize::new(0);
    let work = || {
        while let Some((vector, slot)) = points.get(next.fetch_add(1, Ordering::Relaxed)) {
            graph.insert_slice((vector, *slot));
        }
    };
    std::thread::scope(|scope| {
        // A helper that cannot start only leaves more of the work to this thread.
        for _ in 1..threads {
            let _ = std::thread::Builder::new()
                .name("thrifty-index".to_owned())
                .spawn_scoped(scope, work);
        }
        work();
    });
}

fn build_graph(snapshot: &Snapshot) -> Graph {
    let graph = Hnsw::new(
        LINKS,
        snapshot.slots.max(1024),
        LAYERS,
        EF_CONSTRUCTION,
        Cosine,
    );
    let points: Vec<(Vec<i8>, usize)> = snapshot
        .items
        .iter()
        .map(|(item, slot)| (quantise(&item.vector), *slot))
        .collect();
    insert_points(&graph, &points);
    graph
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
            Some(graph) => graph
                .search(&quantise(query), k.max(GRAPH_NEIGHBOURS), EF_SEARCH)
                .into_iter()
                .filter_map(|n| p.items.get(n.d_id)?.as_ref().and_then(candidate))
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
            let graph = build_graph(&snapshot);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..16)
            .map(|i| ((seed * 31 + i * 7) % 13) as f32 - 6.0)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    #[test]
    fn finds_the_same_vector_and_respects_partitions() {
        let index = Index::new(100, 100, 1000);
        index.insert("p1", "a", "question a", unit(1));
        index.insert("p1", "b", "question b", unit(2));
        let found = index.search("p1", &unit(1), 0.99, 3);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].item.answer, "a");
        assert!(index.search("p2", &unit(1), 0.0, 3).is_empty());
        index.remove("p1", "a");
        assert!(index.search("p1", &unit(1), 0.99, 3).is_empty());
    }

    #[test]
    fn bounded_by_least_recently_used() {
        let index = Index::new(3, 2, 1000);
        index.insert("p", "a", "a", unit(1));
        index.insert("p", "b", "b", unit(2));
        index.search("p", &unit(1), 0.99, 1);
        index.insert("p", "c", "c", unit(3));
        let kept: Vec<String> = index.entries().into_iter().map(|(_, a)| a).collect();
        assert!(kept.contains(&"a".to_owned()), "recently used entry stays");
        assert!(!kept.contains(&"b".to_owned()), "least recently used goes");
        index.insert("q", "d", "d", unit(4));
        index.insert("r", "e", "e", unit(5));
        assert_eq!(index.len(), 3);
    }

    /// Seeded random unit vectors (xorshift, roughly normal components).
    struct Vectors(u64);

    impl Vectors {
        fn next(&mut self) -> f32 {
            // The sum of four uniforms is close enough to normal for direction-uniform vectors.
            (0..4)
                .map(|_| {
                    self.0 ^= self.0 << 13;
                    self.0 ^= self.0 >> 7;
                    self.0 ^= self.0 << 17;
                    (self.0 >> 11) as f32 / (1u64 << 53) as f32 - 0.5
                })
                .sum()
        }

        fn unit(&mut self, dims: usize) -> Vec<f32> {
            normalised((0..dims).map(|_| self.next()).collect())
        }

        /// A near duplicate of `v` (cosine about 0.95).
        fn near(&mut self, v: &[f32]) -> Vec<f32> {
            let scale = 0.33 / (v.len() as f32).sqrt() / 0.577;
            normalised(v.iter().map(|x| x + scale * self.next()).collect())
        }
    }

    fn normalised(mut v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    fn entries(vectors: &[Vec<f32>]) -> Vec<Entry> {
        vectors
            .iter()
            .enumerate()
            .map(|(n, v)| Entry {
                partition: "p".to_owned(),
                answer: format!("a{n}"),
                text: format!("q{n}"),
                vector: v.clone(),
            })
            .collect()
    }

    fn best(index: &Index, query: &[f32]) -> Option<String> {
        index
            .search("p", query, 0.5, 4)
            .first()
            .map(|c| c.item.answer.clone())
    }

    #[test]
    fn batch_built_graph_answers_like_the_scan() {
        let mut rng = Vectors(0x9E37_79B9_7F4A_7C15);
        let vectors: Vec<Vec<f32>> = (0..1500).map(|_| rng.unit(48)).collect();
        let graph = Index::new(10_000, 10_000, 100);
        graph.insert_many(entries(&vectors));
        let brute = Index::new(10_000, 10_000, usize::MAX);
        brute.insert_many(entries(&vectors));
        assert!(graph.searches_graph("p") && !brute.searches_graph("p"));
        assert_eq!(graph.len(), 1500);
        let mut agree = 0;
        for n in (0..1500).step_by(7) {
            let query = rng.near(&vectors[n]);
            let expected = best(&brute, &query);
            assert_eq!(
                expected,
                Some(format!("a{n}")),
                "the scan finds the original"
            );
            agree += usize::from(best(&graph, &query) == expected);
        }
        assert!(
            agree * 100 >= 215 * 99,
            "the graph agreed on {agree} of 215"
        );
    }

    #[test]
    fn sketch_scan_finds_what_an_exact_search_finds() {
        let mut rng = Vectors(19);
        // Topics of ten, so that many entries sit near each query.
        let centres: Vec<Vec<f32>> = (0..100).map(|_| rng.unit(384)).collect();
        let vectors: Vec<Vec<f32>> = (0..1000)
            .map(|n| {
                let scale = 0.9 / 384_f32.sqrt() / 0.577;
                normalised(
                    centres[n % 100]
                        .iter()
                        .map(|x| x + scale * rng.next())
                        .collect(),
                )
            })
            .collect();
        let index = Index::new(10_000, 10_000, usize::MAX);
        index.insert_many(entries(&vectors));
        for (n, threshold) in (0..1000)
            .step_by(9)
            .zip([0.5_f32, 0.7, 0.8, 0.9].iter().cycle())
        {
            let query = rng.near(&vectors[n]);
            let mut exact: Vec<(f32, String)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (similarity(&query, v), format!("a{i}")))
                .filter(|(s, _)| s >= threshold)
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            exact.truncate(4);
            let found: Vec<String> = index
                .search("p", &query, *threshold, 4)
                .into_iter()
                .map(|c| c.item.answer.clone())
                .collect();
            let exact: Vec<String> = exact.into_iter().map(|(_, a)| a).collect();
            assert_eq!(found, exact, "query near a{n} at threshold {threshold}");
        }
    }

    #[test]
    fn quantised_distance_tracks_cosine() {
        let mut rng = Vectors(7);
        for _ in 0..50 {
            let a = rng.unit(384);
            let b = if rng.next() > 0.0 {
                rng.near(&a)
            } else {
                rng.unit(384)
            };
            let exact = 1.0 - similarity(&a, &b);
            let approximate =
                hnsw_rs::prelude::Distance::eval(&Cosine, &quantise(&a), &quantise(&b));
            assert!(
                (exact - approximate).abs() < 0.01,
                "{exact} vs {approximate}"
            );
        }
    }

    #[test]
    fn crossing_the_threshold_builds_in_the_background_and_keeps_answering() {
        let mut rng = Vectors(11);
        let vectors: Vec<Vec<f32>> = (0..400).map(|_| rng.unit(32)).collect();
        let index = Index::new(10_000, 10_000, 100);
        for (n, v) in vectors.iter().enumerate() {
            index.insert("p", &format!("a{n}"), "t", v.clone());
            // Whether by the scan or through the graph, every entry so far is found.
            if n % 50 == 0 {
                assert_eq!(best(&index, &vectors[n / 2]), Some(format!("a{}", n / 2)));
            }
        }
        index.wait_for_graphs();
        assert!(index.searches_graph("p"));
        for n in (0..400).step_by(3) {
            assert_eq!(best(&index, &vectors[n]), Some(format!("a{n}")));
        }
    }

    #[test]
    fn compaction_rebuilds_the_graph_without_the_removed() {
        let mut rng = Vectors(13);
        let vectors: Vec<Vec<f32>> = (0..600).map(|_| rng.unit(32)).collect();
        let index = Index::new(10_000, 10_000, 100);
        index.insert_many(entries(&vectors));
        assert!(index.searches_graph("p"));
        for n in (0..600).filter(|n| n % 2 == 0) {
            index.remove("p", &format!("a{n}"));
        }
        index.wait_for_graphs();
        assert_eq!(index.len(), 300);
        assert!(
            index.searches_graph("p"),
            "300 entries still warrant a graph"
        );
        for (n, v) in vectors.iter().enumerate() {
            let found = best(&index, v);
            if n % 2 == 0 {
                assert_ne!(
                    found,
                    Some(format!("a{n}")),
                    "a removed entry never comes back"
                );
            } else {
                assert_eq!(found, Some(format!("a{n}")));
            }
        }
    }

    #[test]
    fn batch_loads_respect_the_bounds() {
        let mut rng = Vectors(17);
        let vectors: Vec<Vec<f32>> = (0..300).map(|_| rng.unit(16)).collect();
        let index = Index::new(250, 200, 1000);
        index.insert_many(entries(&vectors[..250]));
        assert_eq!(index.len(), 200, "one partition holds at most 200");
        index.insert_many((0..100).map(|n| Entry {
            partition: "q".to_owned(),
            answer: format!("b{n}"),
            text: String::new(),
            vector: vectors[250 + n % 50].clone(),
        }));
        assert_eq!(index.len(), 250, "the whole index holds at most 250");
        let kept: HashSet<String> = index.entries().into_iter().map(|(_, a)| a).collect();
        assert!(
            kept.contains("a249") && !kept.contains("a0"),
            "oldest out first"
        );
    }

    #[test]
    fn large_partitions_use_the_graph() {
        let index = Index::new(10_000, 10_000, 50);
        for i in 0..200 {
            index.insert("p", &format!("e{i}"), "t", unit(i));
        }
        index.wait_for_graphs();
        assert!(index.searches_graph("p"));
        let found = index.search("p", &unit(77), 0.999, 1);
        assert!(
            found.first().is_some_and(|c| c.similarity > 0.999),
            "HNSW finds the vector"
        );
    }
}
