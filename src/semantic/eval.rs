//! `thrifty eval-semantic`: precision and recall of the semantic cache on
//! labelled sentence pairs, across thresholds, with and without the guard.
//!
//! A pair (a, b, label) counts as *served* when b's cached answer would be
//! returned for a: similarity at or above the threshold and, with the guard,
//! the guard passing. Precision = served pairs that mean the same / served.

use std::path::Path;

use serde::Deserialize;

use super::embedder::{Embedder, similarity};
use super::guard;

#[derive(Deserialize)]
struct Pair {
    a: String,
    b: String,
    label: u8,
}

/// Counts at one threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub served_same: usize,
    pub served_different: usize,
    pub same: usize,
}

impl Counts {
    pub fn precision(&self) -> f64 {
        let served = self.served_same + self.served_different;
        if served == 0 {
            1.0
        } else {
            self.served_same as f64 / served as f64
        }
    }

    pub fn recall(&self) -> f64 {
        if self.same == 0 {
            0.0
        } else {
            self.served_same as f64 / self.same as f64
        }
    }
}

/// One pair, scored: its similarity, the guard's verdict, its label and its texts.
#[derive(Clone, Debug)]
pub struct Scored {
    pub similarity: f32,
    pub guard: Result<guard::Features, guard::Rejection>,
    pub same: bool,
    pub a: String,
    pub b: String,
}

impl Scored {
    /// One TSV line for `--dump`: similarity, the guard's verdict (`pass` or the rule that
    /// rejected), the label, both texts, then a passing pair's content-word overlap, length
    /// ratio and whether a rule came close (empty when rejected).
    pub fn tsv(&self) -> String {
        let verdict = self.guard.map_or_else(guard::Rejection::as_str, |_| "pass");
        let features = self.guard.map_or_else(
            |_| "\t\t".to_owned(),
            |f| {
                format!(
                    "{:.3}\t{:.3}\t{}",
                    f.overlap,
                    f.length_ratio,
                    u8::from(f.one_sided)
                )
            },
        );
        let clean = |t: &str| t.replace(['\t', '\n'], " ");
        format!(
            "{}\t{verdict}\t{}\t{}\t{}\t{features}\n",
            self.similarity,
            u8::from(self.same),
            clean(&self.a),
            clean(&self.b)
        )
    }
}

/// One row of the report.
#[derive(Clone, Debug)]
pub struct Row {
    pub threshold: f32,
    pub raw: Counts,
    pub guarded: Counts,
}

/// Scores pairs: similarity and the guard's verdict, per pair.
pub async fn score(embedder: &Embedder, path: &Path) -> Result<Vec<Scored>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let pairs: Vec<Pair> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a pairs file: {e}", path.display()))?;
    let mut texts = Vec::with_capacity(pairs.len() * 2);
    for p in &pairs {
        texts.push(p.a.clone());
        texts.push(p.b.clone());
    }
    let vectors = embedder.embed_many(&texts).await;
    pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (Some(a), Some(b)) = (&vectors[2 * i], &vectors[2 * i + 1]) else {
                return Err("the model failed to embed a pair".to_owned());
            };
            Ok(Scored {
                similarity: similarity(a, b),
                guard: guard::check(&p.a, &p.b),
                same: p.label == 1,
                a: p.a.clone(),
                b: p.b.clone(),
            })
        })
        .collect()
}

/// Precision and recall at each threshold, raw and guarded.
pub fn sweep(scores: &[Scored], thresholds: &[f32]) -> Vec<Row> {
    thresholds
        .iter()
        .map(|&t| {
            let mut raw = Counts::default();
            let mut guarded = Counts::default();
            for pair in scores {
                let (sim, same) = (pair.similarity, pair.same);
                for (counts, allowed) in [(&mut raw, true), (&mut guarded, pair.guard.is_ok())] {
                    if same {
                        counts.same += 1;
                    }
                    if sim >= t && allowed {
                        if same {
                            counts.served_same += 1;
                        } else {
                            counts.served_different += 1;
                        }
                    }
                }
            }
            Row {
                threshold: t,
                raw,
                guarded,
            }
        })
        .collect()
}

/// The thresholds the report shows.
pub fn thresholds() -> Vec<f32> {
    (80..=99).map(|t| t as f32 / 100.0).collect()
}

pub fn render(file: &str, rows: &[Row]) -> String {
    let mut out = format!(
        "{file}\nthreshold  raw-precision  raw-recall  raw-false  guarded-precision  guarded-recall  guarded-false\n"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>9.2}  {:>13.3}  {:>10.3}  {:>9}  {:>17.3}  {:>14.3}  {:>13}\n",
            r.threshold,
            r.raw.precision(),
            r.raw.recall(),
            r.raw.served_different,
            r.guarded.precision(),
            r.guarded.recall(),
            r.guarded.served_different
        ));
    }
    out
}
