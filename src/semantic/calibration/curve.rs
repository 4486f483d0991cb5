//! The learned curve: weighted outcomes binned by similarity within rows of lexical
//! features, pooled so precision never falls as similarity rises, and read as a
//! conservative lower bound. Pure arithmetic; no store, no clock.

use serde::Serialize;

use crate::semantic::guard::Features;

/// Lower edges of the similarity bins. A similarity below the first is never served.
pub const SIMILARITY_EDGES: [f32; 10] =
    [0.80, 0.84, 0.87, 0.90, 0.92, 0.94, 0.955, 0.97, 0.98, 0.99];

/// Upper edges of the content-word overlap bands (the last band reaches 1).
const OVERLAP_EDGES: [f32; 2] = [0.4, 0.7];

/// Rows: three overlap bands, each with and without a rule that came close.
pub const ROWS: usize = (OVERLAP_EDGES.len() + 1) * 2;

/// The normal quantile of the one-sided bound: 1.96 gives 97.5% confidence per bin.
const Z: f64 = 1.96;

/// Which row and bin a pair falls in; `None` below the lowest similarity edge.
pub fn cell(similarity: f32, features: &Features) -> Option<(usize, usize)> {
    let bin = SIMILARITY_EDGES
        .iter()
        .rposition(|&edge| similarity >= edge)?;
    let band = OVERLAP_EDGES
        .iter()
        .position(|&edge| features.overlap < edge)
        .unwrap_or(OVERLAP_EDGES.len());
    Some((band * 2 + usize::from(features.one_sided), bin))
}

/// The row's name in the admin view.
pub fn row_name(row: usize) -> String {
    let band = row / 2;
    let low = if band == 0 {
        0.0
    } else {
        OVERLAP_EDGES[band - 1]
    };
    let high = OVERLAP_EDGES.get(band).copied().unwrap_or(1.0);
    let close = if row % 2 == 1 {
        ", a rule came close"
    } else {
        ""
    };
    format!("overlap {low:.1}-{high:.1}{close}")
}

/// Weighted outcomes in one bin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Tally {
    pub agreed: f64,
    pub differed: f64,
}

impl Tally {
    pub fn total(&self) -> f64 {
        self.agreed + self.differed
    }

    fn add(&mut self, other: Tally) {
        self.agreed += other.agreed;
        self.differed += other.differed;
    }
}

/// What the curve says about one bin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    /// The Wilson lower bound of the pooled agreement rate, never below a lower bin's.
    pub lower: f64,
    /// The pooled agreement rate.
    pub point: f64,
    /// The (decayed) outcomes the pooled bound rests on.
    pub observations: f64,
}

/// Bound and estimate for every bin of every row.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub tallies: Vec<[Tally; SIMILARITY_EDGES.len()]>,
    pub points: Vec<[Point; SIMILARITY_EDGES.len()]>,
}

/// The Wilson score lower bound of `agreed` out of `total`; 0 without data.
pub fn wilson_lower(agreed: f64, total: f64) -> f64 {
    if total <= 0.0 {
        return 0.0;
    }
    let p = (agreed / total).clamp(0.0, 1.0);
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * total);
    let spread = Z * ((p * (1.0 - p) + z2 / (4.0 * total)) / total).sqrt();
    ((centre - spread) / (1.0 + z2 / total)).max(0.0)
}

/// Pools adjacent bins whose agreement rate falls as similarity rises (pool adjacent
/// violators, weighted by outcomes), so each block's rate is at least the one below it.
/// Returns, per bin, the pooled tally of its block.
fn pool(row: &[Tally]) -> Vec<Tally> {
    // Blocks as (first bin, pooled tally); an empty bin joins the block below it.
    let mut blocks: Vec<(usize, Tally)> = Vec::new();
    for (i, tally) in row.iter().enumerate() {
        if tally.total() <= 0.0 && !blocks.is_empty() {
            continue;
        }
        blocks.push((i, *tally));
        while blocks.len() >= 2 {
            let (_, upper) = blocks[blocks.len() - 1];
            let (_, lower) = blocks[blocks.len() - 2];
            let rate = |t: Tally| t.agreed / t.total();
            let violates = lower.total() > 0.0 && rate(upper) < rate(lower);
            if !violates {
                break;
            }
            if let Some((_, top)) = blocks.pop() {
                if let Some(last) = blocks.last_mut() {
                    last.1.add(top);
                }
            }
        }
    }
    let mut out = vec![Tally::default(); row.len()];
    for (b, (start, tally)) in blocks.iter().enumerate() {
        let end = blocks.get(b + 1).map_or(row.len(), |next| next.0);
        for slot in &mut out[*start..end] {
            *slot = *tally;
        }
    }
    out
}

impl Curve {
    /// Builds the curve from per-bin tallies.
    pub fn new(tallies: Vec<[Tally; SIMILARITY_EDGES.len()]>) -> Curve {
        let points = tallies
            .iter()
            .map(|row| {
                let pooled = pool(row);
                let mut points = [Point::default(); SIMILARITY_EDGES.len()];
                let mut best = 0.0f64;
                for (i, t) in pooled.iter().enumerate() {
                    // Higher similarity never gets a lower bound than a lower bin of its row.
                    best = best.max(wilson_lower(t.agreed, t.total()));
                    points[i] = Point {
                        lower: best,
                        point: if t.total() > 0.0 {
                            t.agreed / t.total()
                        } else {
                            0.0
                        },
                        observations: t.total(),
                    };
                }
                points
            })
            .collect();
        Curve { tallies, points }
    }

    /// An empty curve: nothing measured, nothing served.
    pub fn empty() -> Curve {
        Curve::new(vec![[Tally::default(); SIMILARITY_EDGES.len()]; ROWS])
    }

    /// The estimate for one cell.
    pub fn point(&self, row: usize, bin: usize) -> Point {
        self.points
            .get(row)
            .and_then(|r| r.get(bin))
            .copied()
            .unwrap_or_default()
    }

    /// Outcomes in one row, over all bins.
    pub fn row_total(&self, row: usize) -> f64 {
        self.tallies
            .get(row)
            .map_or(0.0, |r| r.iter().map(Tally::total).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(agreed: f64, differed: f64) -> Tally {
        Tally { agreed, differed }
    }

    #[test]
    fn wilson_is_conservative_and_grows_with_evidence() {
        assert_eq!(wilson_lower(0.0, 0.0), 0.0);
        assert!(wilson_lower(10.0, 10.0) < 0.75);
        assert!(wilson_lower(100.0, 100.0) > 0.95);
        assert!(wilson_lower(100.0, 100.0) < 1.0);
        assert!(wilson_lower(95.0, 100.0) < 0.95);
    }

    #[test]
    fn a_higher_bin_never_gets_a_lower_bound() {
        let mut row = [Tally::default(); SIMILARITY_EDGES.len()];
        row[3] = tally(200.0, 2.0);
        row[6] = tally(5.0, 0.0);
        let curve = Curve::new(vec![row]);
        let bounds: Vec<f64> = curve.points[0].iter().map(|p| p.lower).collect();
        assert!(bounds.windows(2).all(|w| w[0] <= w[1]), "{bounds:?}");
        assert!(
            bounds[6] > 0.95,
            "borrowed from the well-measured bin below"
        );
        assert_eq!(bounds[2], 0.0, "nothing below the first measured bin");
    }

    #[test]
    fn a_worse_higher_bin_pools_with_the_one_below() {
        let mut row = [Tally::default(); SIMILARITY_EDGES.len()];
        row[4] = tally(300.0, 0.0);
        row[8] = tally(60.0, 40.0);
        let curve = Curve::new(vec![row]);
        let p = curve.points[0];
        assert_eq!(p[4].observations, 400.0, "pooled with the violator above");
        assert!((p[8].point - 0.9).abs() < 1e-9);
        assert!(
            p[8].lower < 0.95,
            "failures above pull the pooled bound down"
        );
    }

    #[test]
    fn cells_follow_similarity_and_overlap() {
        let f = |overlap, one_sided| Features {
            overlap,
            length_ratio: 1.0,
            one_sided,
        };
        assert_eq!(cell(0.79, &f(1.0, false)), None);
        assert_eq!(cell(0.80, &f(0.1, false)), Some((0, 0)));
        assert_eq!(cell(0.995, &f(0.5, true)), Some((3, 9)));
        assert_eq!(cell(0.91, &f(1.0, false)), Some((4, 3)));
    }
}
