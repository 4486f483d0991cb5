//! The in-process vector index: one partition per exact context, searched by
//! brute force while small and through HNSW (`hnsw_rs`) once large.
//!
//! Memory is bounded: a partition keeps at most `max_per_partition` entries and
//! the whole index at most `max_total`, least recently used first out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hnsw_rs::prelude::Hnsw;
use parking_lot::RwLock;

use super::embedder::similarity;

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

struct Partition {
    items: Vec<Option<Arc<Item>>>,
    by_answer: HashMap<String, usize>,
    live: usize,
    ann: Option<Hnsw<'static, f32, Dot>>,
}

impl Partition {
    fn new() -> Self {
        Partition {
            items: Vec::new(),
            by_answer: HashMap::new(),
            live: 0,
            ann: None,
        }
    }
}

/// Cosine distance of L2-normalised vectors, clamped so rounding never goes below zero.
#[derive(Clone, Copy, Default)]
struct Dot;

impl hnsw_rs::prelude::Distance<f32> for Dot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - similarity(a, b)).max(0.0)
    }
}

pub struct Index {
    partitions: RwLock<HashMap<String, Partition>>,
    clock: AtomicU64,
    total: AtomicU64,
    max_total: usize,
    max_per_partition: usize,
    ann_above: usize,
}

impl Index {
    pub fn new(max_total: usize, max_per_partition: usize, ann_above: usize) -> Self {
        Index {
            partitions: RwLock::new(HashMap::new()),
            clock: AtomicU64::new(0),
            total: AtomicU64::new(0),
            max_total: max_total.max(1),
            max_per_partition: max_per_partition.max(1),
            ann_above: ann_above.max(1),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds (or refreshes) an entry; evicts the least recently used ones past the bounds.
    pub fn insert(&self, partition: &str, answer: &str, text: &str, vector: Vec<f32>) {
        let item = Arc::new(Item {
            answer: answer.to_owned(),
            text: text.to_owned(),
            vector,
            last_used: AtomicU64::new(self.tick()),
        });
        {
            let mut partitions = self.partitions.write();
            let p = partitions
                .entry(partition.to_owned())
                .or_insert_with(Partition::new);
            if let Some(&slot) = p.by_answer.get(answer) {
                p.items[slot] = Some(item);
                return;
            }
            if p.live >= self.max_per_partition {
                evict_oldest(p, &self.total);
            }
            let slot = p.items.len();
            if let Some(ann) = &p.ann {
                ann.insert_slice((&item.vector, slot));
            }
            p.items.push(Some(item));
            p.by_answer.insert(answer.to_owned(), slot);
            p.live += 1;
            self.total.fetch_add(1, Ordering::Relaxed);
            if p.ann.is_none() && p.live > self.ann_above {
                rebuild(p);
            }
        }
        while self.len() > self.max_total {
            if !self.evict_global() {
                break;
            }
        }
    }

    /// Removes the entry pointing at an answer, wherever it is.
    pub fn remove(&self, partition: &str, answer: &str) {
        let mut partitions = self.partitions.write();
        if let Some(p) = partitions.get_mut(partition) {
            if let Some(slot) = p.by_answer.remove(answer) {
                if p.items[slot].take().is_some() {
                    p.live -= 1;
                    self.total.fetch_sub(1, Ordering::Relaxed);
                }
                compact_if_sparse(p);
            }
            if p.live == 0 {
                partitions.remove(partition);
            }
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
        let partitions = self.partitions.read();
        let Some(p) = partitions.get(partition) else {
            return Vec::new();
        };
        let mut found: Vec<Candidate> = match &p.ann {
            Some(ann) => ann
                .search(query, k.max(8), 64)
                .into_iter()
                .filter_map(|n| p.items.get(n.d_id).cloned().flatten())
                .map(|item| Candidate {
                    similarity: similarity(query, &item.vector),
                    item,
                })
                .collect(),
            None => p
                .items
                .iter()
                .flatten()
                .map(|item| Candidate {
                    similarity: similarity(query, &item.vector),
                    item: item.clone(),
                })
                .filter(|c| c.similarity >= threshold)
                .collect(),
        };
        found.retain(|c| c.similarity >= threshold);
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
        let partitions = self.partitions.read();
        partitions
            .iter()
            .flat_map(|(name, p)| p.by_answer.keys().map(move |a| (name.clone(), a.clone())))
            .collect()
    }

    fn evict_global(&self) -> bool {
        let mut partitions = self.partitions.write();
        let oldest = partitions
            .iter()
            .filter_map(|(name, p)| {
                p.items
                    .iter()
                    .flatten()
                    .map(|i| i.last_used.load(Ordering::Relaxed))
                    .min()
                    .map(|t| (t, name.clone()))
            })
            .min();
        let Some((_, name)) = oldest else {
            return false;
        };
        if let Some(p) = partitions.get_mut(&name) {
            evict_oldest(p, &self.total);
            if p.live == 0 {
                partitions.remove(&name);
            }
        }
        true
    }
}

fn evict_oldest(p: &mut Partition, total: &AtomicU64) {
    let oldest = p
        .items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            item.as_ref()
                .map(|it| (it.last_used.load(Ordering::Relaxed), i))
        })
        .min();
    if let Some((_, slot)) = oldest {
        if let Some(item) = p.items[slot].take() {
            p.by_answer.remove(&item.answer);
            p.live -= 1;
            total.fetch_sub(1, Ordering::Relaxed);
        }
        compact_if_sparse(p);
    }
}

/// Rebuilds slots (and the HNSW graph, which cannot delete) once a quarter of them are dead.
fn compact_if_sparse(p: &mut Partition) {
    let dead = p.items.len() - p.live;
    if dead * 4 > p.items.len() && dead > 16 {
        let items: Vec<Option<Arc<Item>>> = p.items.drain(..).filter(Option::is_some).collect();
        p.by_answer = items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| it.as_ref().map(|it| (it.answer.clone(), i)))
            .collect();
        p.items = items;
        if p.ann.is_some() {
            rebuild(p);
        }
    }
}

fn rebuild(p: &mut Partition) {
    let ann = Hnsw::<f32, Dot>::new(16, p.items.len().max(1024) * 2, 16, 100, Dot);
    for (slot, item) in p.items.iter().enumerate() {
        if let Some(item) = item {
            ann.insert_slice((&item.vector, slot));
        }
    }
    p.ann = Some(ann);
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

    #[test]
    fn large_partitions_use_the_graph() {
        let index = Index::new(10_000, 10_000, 50);
        for i in 0..200 {
            index.insert("p", &format!("e{i}"), "t", unit(i));
        }
        let found = index.search("p", &unit(77), 0.999, 1);
        assert!(
            found.first().is_some_and(|c| c.similarity > 0.999),
            "HNSW finds the vector"
        );
    }
}
