//! The learned curve: weighted outcomes binned by similarity within rows of lexical
//! features, pooled so precision never falls as similarity rises, and read as a
//! conservative lower bound under a ceiling the more similar bins set. Pure arithmetic; no
//! store, no clock.

use serde::Serialize;

use crate::semantic::guard::Features;

/// Lower edges of the similarity bins. A similarity below the first is never served.
pub const SIMILARITY_EDGES: [f32; 10] =
    [0.80, 0.84, 0.87, 0.90, 0.92, 0.94, 0.955, 0.97, 0.98, 0.99];

/// Upper edges of the content-word overlap bands (the last band reaches 1).
const OVERLAP_EDGES: [f32; 2] = [0.4, 0.7];

/// Rows: three overlap bands, each with and without a rule that came close.
pub const ROWS: usize = (OVERLAP_EDGES.len() + 1) * 2;

/// The normal quantile of the one-sided bounds: 1.645 gives 95% confidence.
const Z: f64 = 1.645;

/// The bound a cell's window must reach before the cell can join the served region, so the
/// region never carries a cell nobody has measured: about seven agreeing outcomes.
pub const CELL_FLOOR: f64 = 0.7;

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
    /// The bin's own bound: the best Wilson lower bound over the windows of its row that end
    /// at it (the bin pooled with adjacent bins below it, which are no more similar).
    pub lower: f64,
    /// The agreement rate of that window.
    pub point: f64,
    /// The bin's ceiling: the lowest Wilson upper bound over the windows of its row that start
    /// at it (the bin pooled with adjacent bins above it, which are no less similar). Failures
    /// above a bin cap it, so a lucky run of outcomes under a failing stretch is not served.
    pub upper: f64,
    /// The (decayed) outcomes the window holds.
    pub observations: f64,
    /// Whether the bin is part of the served region.
    pub serves: bool,
}

/// The cells that are served, taken together: the bound that their outcomes put on the
/// error rate of what is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Region {
    /// The Wilson lower bound of the region's pooled agreement rate.
    pub lower: f64,
    /// The (decayed) outcomes observed in the region's own cells.
    pub observations: f64,
    /// How many cells it holds.
    pub cells: usize,
}

/// Bound and estimate for every bin of every row, and the region served.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub tallies: Vec<[Tally; SIMILARITY_EDGES.len()]>,
    pub points: Vec<[Point; SIMILARITY_EDGES.len()]>,
    pub region: Region,
}

/// The Wilson score interval's centre and half-width for `agreed` out of `total` (> 0).
fn wilson(agreed: f64, total: f64) -> (f64, f64) {
    let p = (agreed / total).clamp(0.0, 1.0);
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * total);
    let spread = Z * ((p * (1.0 - p) + z2 / (4.0 * total)) / total).sqrt();
    let scale = 1.0 + z2 / total;
    (centre / scale, spread / scale)
}

/// The Wilson score lower bound of `agreed` out of `total`; 0 without data.
pub fn wilson_lower(agreed: f64, total: f64) -> f64 {
    if total <= 0.0 {
        return 0.0;
    }
    let (centre, spread) = wilson(agreed, total);
    (centre - spread).max(0.0)
}

/// The Wilson score upper bound of `agreed` out of `total`; 1 without data.
pub fn wilson_upper(agreed: f64, total: f64) -> f64 {
    if total <= 0.0 {
        return 1.0;
    }
    let (centre, spread) = wilson(agreed, total);
    (centre + spread).min(1.0)
}

/// Each bin's best window and its ceiling. Agreement never falls as similarity rises within
/// a row, so a bin's rate is at least that of any run of bins ending at it (the tightest of
/// their lower bounds holds for the bin; its own outcomes are always in the window), and at
/// most that of any run of bins starting at it (the lowest of their upper bounds).
fn windows(row: &[Tally; SIMILARITY_EDGES.len()]) -> [Point; SIMILARITY_EDGES.len()] {
    let mut points = [Point::default(); SIMILARITY_EDGES.len()];
    for (end, point) in points.iter_mut().enumerate() {
        let mut pooled = Tally::default();
        for tally in row[..=end].iter().rev() {
            pooled.add(*tally);
            let lower = wilson_lower(pooled.agreed, pooled.total());
            if lower > point.lower {
                point.lower = lower;
                point.point = pooled.agreed / pooled.total();
                point.observations = pooled.total();
            }
        }
        let mut pooled = Tally::default();
        point.upper = 1.0;
        for tally in &row[end..] {
            pooled.add(*tally);
            point.upper = point.upper.min(wilson_upper(pooled.agreed, pooled.total()));
        }
    }
    points
}

/// The served region: the cells each measured well enough on their own (bound at least
/// [`CELL_FLOOR`], rate and ceiling at least `1 - max_error`), best first, for as long as the
/// outcomes of all of them together bound the error rate by `max_error`.
fn region(
    tallies: &[[Tally; SIMILARITY_EDGES.len()]],
    points: &mut [[Point; SIMILARITY_EDGES.len()]],
    max_error: f64,
) -> Region {
    let floor = 1.0 - max_error;
    let mut eligible: Vec<(usize, usize)> = points
        .iter()
        .enumerate()
        .flat_map(|(row, bins)| {
            bins.iter()
                .enumerate()
                .filter(|(_, p)| p.lower >= CELL_FLOOR && p.point >= floor && p.upper >= floor)
                .map(move |(bin, _)| (row, bin))
        })
        .collect();
    eligible.sort_by(|a, b| {
        let (pa, pb) = (points[a.0][a.1], points[b.0][b.1]);
        pb.lower
            .total_cmp(&pa.lower)
            .then(pb.point.total_cmp(&pa.point))
    });
    let mut pooled = Tally::default();
    let mut region = Region::default();
    for (taken, &(row, bin)) in eligible.iter().enumerate() {
        pooled.add(tallies[row][bin]);
        let lower = wilson_lower(pooled.agreed, pooled.total());
        if lower >= floor {
            region = Region {
                lower,
                observations: pooled.total(),
                cells: taken + 1,
            };
        }
    }
    for &(row, bin) in &eligible[..region.cells] {
        points[row][bin].serves = true;
    }
    region
}

impl Curve {
    /// Builds the curve from per-bin tallies, serving where the error rate stays under
    /// `max_error`.
    pub fn new(tallies: Vec<[Tally; SIMILARITY_EDGES.len()]>, max_error: f64) -> Curve {
        let mut points: Vec<_> = tallies.iter().map(windows).collect();
        let region = region(&tallies, &mut points, max_error);
        Curve {
            tallies,
            points,
            region,
        }
    }

    /// An empty curve: nothing measured, nothing served.
    pub fn empty() -> Curve {
        Curve::new(vec![[Tally::default(); SIMILARITY_EDGES.len()]; ROWS], 0.0)
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
        assert!(wilson_lower(10.0, 10.0) < 0.8);
        assert!(
            wilson_lower(50.0, 50.0) < 0.95,
            "50 agreeing do not bound 5%"
        );
        assert!(wilson_lower(55.0, 55.0) > 0.95);
        assert!(wilson_lower(100.0, 100.0) > 0.95);
        assert!(wilson_lower(100.0, 100.0) < 1.0);
        assert!(wilson_lower(95.0, 100.0) < 0.95);
    }

    fn empty_row() -> [Tally; SIMILARITY_EDGES.len()] {
        [Tally::default(); SIMILARITY_EDGES.len()]
    }

    #[test]
    fn a_bin_borrows_from_the_bins_below_it() {
        let mut row = empty_row();
        row[3] = tally(200.0, 2.0);
        row[6] = tally(5.0, 0.0);
        let curve = Curve::new(vec![row], 0.05);
        let p = curve.points[0];
        assert!(
            p[6].lower > 0.95,
            "pooled with the well-measured bins below"
        );
        assert_eq!(p[6].observations, 207.0);
        assert!(
            p[9].lower > 0.95,
            "an empty bin above borrows the same window"
        );
        assert_eq!(p[2].lower, 0.0, "nothing below the first measured bin");
        assert!(p[3].serves && p[6].serves && p[9].serves && !p[2].serves);
    }

    #[test]
    fn a_bins_own_failures_always_count() {
        // A few failures high up: the bin below still serves, the failing bin does not, even
        // though pooled with the bins below it its rate would pass.
        let mut row = empty_row();
        row[4] = tally(300.0, 0.0);
        row[8] = tally(12.0, 8.0);
        let curve = Curve::new(vec![row], 0.05);
        let p = curve.points[0];
        assert!(p[4].serves, "{:?}", p[4]);
        assert!(p[8].lower > 0.95 && p[8].point > 0.95, "{:?}", p[8]);
        assert!(p[8].upper < 0.8, "{:?}", p[8]);
        assert!(
            !p[8].serves,
            "a bin that fails is not carried by the bins below it"
        );
    }

    #[test]
    fn failures_above_a_bin_cap_it() {
        // Agreement never falls as similarity rises, so a bin is no better than the bins
        // above it: a lucky run under a failing stretch is not served.
        let mut row = empty_row();
        row[1] = tally(8.0, 0.0);
        row[2] = tally(15.0, 9.0);
        row[3] = tally(8.0, 3.0);
        let mut clean = empty_row();
        clean[5] = tally(300.0, 0.0);
        let curve = Curve::new(vec![row, clean], 0.05);
        let lucky = curve.points[0][1];
        assert!(lucky.lower > CELL_FLOOR && lucky.point == 1.0, "{lucky:?}");
        assert!(lucky.upper < 0.95, "{lucky:?}");
        assert!(!lucky.serves, "{lucky:?}");
        assert!(curve.points[1][5].serves, "another row is not capped by it");

        // When the bins above fail on a large scale, even a well-measured bin below them is
        // not served: the row's agreement falls as similarity rises, which the curve
        // does not model, so it serves none of the row.
        let mut row = empty_row();
        row[4] = tally(300.0, 0.0);
        row[8] = tally(60.0, 40.0);
        let p = Curve::new(vec![row], 0.05).points[0];
        assert!(p[4].lower > 0.95 && p[4].upper < 0.95, "{:?}", p[4]);
        assert!(!p[4].serves && !p[8].serves && !p[9].serves);
    }

    #[test]
    fn cells_short_on_their_own_are_served_together() {
        let mut rows = vec![empty_row(); ROWS];
        rows[0][5] = tally(50.0, 0.0);
        rows[2][5] = tally(50.0, 0.0);
        let alone = Curve::new(vec![rows[0], empty_row()], 0.05);
        assert!(
            !alone.points[0][5].serves,
            "50 outcomes alone do not bound 5%"
        );
        let together = Curve::new(rows.clone(), 0.05);
        assert!(together.points[0][5].serves && together.points[2][5].serves);
        assert!(together.region.lower >= 0.95);
        assert_eq!(together.region.observations, 100.0);

        // A cell whose rate is below 1 - max_error, or that is barely measured, never joins,
        // however much the others could carry it.
        rows[4][5] = tally(30.0, 3.0);
        rows[1][9] = tally(5.0, 0.0);
        rows[3][2] = tally(900.0, 0.0);
        let curve = Curve::new(rows, 0.05);
        assert!(!curve.points[4][5].serves, "{:?}", curve.points[4][5]);
        assert!(!curve.points[1][9].serves, "{:?}", curve.points[1][9]);
        assert!(curve.points[3][2].serves && curve.points[0][5].serves);
        assert_eq!(
            curve.region.cells,
            8 + 5 + 5,
            "row 3 from bin 2 up, rows 0 and 2 from bin 5"
        );
    }

    #[test]
    fn a_larger_error_budget_serves_more() {
        let mut row = empty_row();
        row[5] = tally(40.0, 0.0);
        assert!(!Curve::new(vec![row], 0.05).points[0][5].serves);
        assert!(Curve::new(vec![row], 0.10).points[0][5].serves);
    }

    #[test]
    fn cells_follow_similarity_and_overlap() {
        let f = |overlap, one_sided| Features {
            overlap,
            length_ratio: 1.0,
            one_sided,
            unmatched: [0, 0],
            shared: 3,
            in_order: 3,
        };
        assert_eq!(cell(0.79, &f(1.0, false)), None);
        assert_eq!(cell(0.80, &f(0.1, false)), Some((0, 0)));
        assert_eq!(cell(0.995, &f(0.5, true)), Some((3, 9)));
        assert_eq!(cell(0.91, &f(1.0, false)), Some((4, 3)));
    }
}
