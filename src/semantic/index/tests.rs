//! Unit tests of the index: partitions, the bounds, the sketch scan against an exact search,
//! and the graph against the scan.

use super::graph::{Cosine, quantise};
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
        let approximate = hnsw_rs::prelude::Distance::eval(&Cosine, &quantise(&a), &quantise(&b));
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
