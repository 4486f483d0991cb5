//! One partition of the index: its slots of items and their sketches, which slot holds which
//! answer, and its graph once it has one. It keeps no lock and starts no thread: the
//! [`Index`](super::Index) holds the lock, applies the bounds and decides when graphs are built.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Item;
use super::graph::{self, Graph};
use crate::semantic::sketch::{self, Sketch};

pub(super) struct Partition {
    /// Slot `i` is graph point `i`; removed entries leave `None` until compaction.
    pub(super) items: Vec<Option<Arc<Item>>>,
    /// The sketch of slot `i`, kept apart so that a scan reads nothing else.
    pub(super) sketches: Vec<Sketch>,
    pub(super) by_answer: HashMap<String, usize>,
    pub(super) live: usize,
    /// The graph over slots `0..indexed`; `None` while small or while one is being built.
    pub(super) graph: Option<Graph>,
    pub(super) indexed: usize,
    /// Changes whenever slots are renumbered, so a graph built from older slots is thrown away.
    pub(super) epoch: u64,
    /// The token of the builder working for this partition, if any.
    pub(super) building: Option<u64>,
}

/// The live items of a partition at one epoch, to build a graph from off the lock.
pub(super) struct Snapshot {
    pub(super) epoch: u64,
    pub(super) token: u64,
    pub(super) slots: usize,
    items: Vec<(Arc<Item>, usize)>,
}

impl Partition {
    pub(super) fn new(epoch: u64) -> Self {
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
    pub(super) fn put(&mut self, item: Arc<Item>) -> bool {
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

    pub(super) fn remove_slot(&mut self, slot: usize) -> bool {
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
    pub(super) fn evict(&mut self, n: usize) -> usize {
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
    pub(super) fn compact_if_sparse(&mut self, epoch: u64) {
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
    pub(super) fn extend_graph(&mut self) {
        let Some(g) = &self.graph else {
            return;
        };
        let vectors = self.items[self.indexed..]
            .iter()
            .enumerate()
            .filter_map(|(i, it)| {
                it.as_ref()
                    .map(|it| (it.vector.as_slice(), self.indexed + i))
            });
        graph::extend(g, vectors);
        self.indexed = self.items.len();
    }

    /// A snapshot to build a graph from, when the partition is large and has no graph or builder.
    pub(super) fn claim_build(&mut self, ann_above: usize, token: u64) -> Option<Snapshot> {
        if self.graph.is_some() || self.building.is_some() || self.live <= ann_above {
            return None;
        }
        self.building = Some(token);
        Some(self.snapshot(token))
    }

    pub(super) fn snapshot(&self, token: u64) -> Snapshot {
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

impl Snapshot {
    /// Builds the graph over the snapshot's items; called off the lock.
    pub(super) fn build_graph(&self) -> Graph {
        graph::build(
            self.slots,
            self.items
                .iter()
                .map(|(item, slot)| (item.vector.as_slice(), *slot)),
        )
    }
}
