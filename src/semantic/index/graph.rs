//! The HNSW graph (`hnsw_rs`) over a partition's slots: i8 quantised copies of the vectors,
//! inserts spread over our own threads, and a search that returns the nearest slots. It knows
//! vectors and slot numbers only: which item a slot holds is the partition's business.

use std::sync::atomic::{AtomicUsize, Ordering};

use hnsw_rs::prelude::Hnsw;

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

/// Points per thread below which a graph grows on one thread.
const PARALLEL_FROM: usize = 64;

/// Cosine distance of the graph's quantised copies of the vectors ([`quantise`]).
#[derive(Clone, Copy, Default)]
pub(super) struct Cosine;

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
pub(super) fn quantise(v: &[f32]) -> Vec<i8> {
    let max = v.iter().fold(0.0_f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { 127.0 / max } else { 0.0 };
    v.iter().map(|x| (x * scale).round() as i8).collect()
}

pub(super) type Graph = Hnsw<'static, i8, Cosine>;

/// A graph over the given vectors, each the point of its slot, with room for `slots` points.
pub(super) fn build<'a>(
    slots: usize,
    vectors: impl IntoIterator<Item = (&'a [f32], usize)>,
) -> Graph {
    let graph = Hnsw::new(LINKS, slots.max(1024), LAYERS, EF_CONSTRUCTION, Cosine);
    extend(&graph, vectors);
    graph
}

/// Adds the given vectors to a graph, each as the point of its slot.
pub(super) fn extend<'a>(graph: &Graph, vectors: impl IntoIterator<Item = (&'a [f32], usize)>) {
    let points: Vec<(Vec<i8>, usize)> = vectors
        .into_iter()
        .map(|(vector, slot)| (quantise(vector), slot))
        .collect();
    insert_points(graph, &points);
}

/// The slots of the points nearest to `query` (at least [`GRAPH_NEIGHBOURS`] of them, dead
/// slots included: the caller drops those and the ones under its threshold).
pub(super) fn search(graph: &Graph, query: &[f32], k: usize) -> impl Iterator<Item = usize> {
    graph
        .search(&quantise(query), k.max(GRAPH_NEIGHBOURS), EF_SEARCH)
        .into_iter()
        .map(|neighbour| neighbour.d_id)
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
