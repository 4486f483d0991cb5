//! Sign sketches: one bit per dimension (is it positive), so that an exhaustive scan of a
//! partition reads 48 bytes per entry instead of a 1,536-byte vector.
//!
//! The Hamming distance between two sketches tracks the angle between the vectors: a fraction
//! `angle / π` of the bits differ on average, as for random hyperplanes (checked on
//! all-MiniLM-L6-v2 embeddings of the evaluation sentences: pairs above cosine 0.7 sit on the
//! predicted mean, none beyond four standard deviations). A sketch only shortlists; the exact
//! cosine of the shortlisted vectors decides, so a sketch can cost a hit but never make one.

/// Dimensions sketched (the model's); longer vectors are sketched on their first 384.
pub const BITS: usize = 384;

const WORDS: usize = BITS / 64;

/// Standard deviations of Hamming distance allowed above the mean a threshold implies.
const SPREAD: f32 = 5.0;

pub type Sketch = [u64; WORDS];

/// The sketch of a vector.
pub fn of(vector: &[f32]) -> Sketch {
    let mut sketch = [0; WORDS];
    for (i, x) in vector.iter().take(BITS).enumerate() {
        if *x > 0.0 {
            sketch[i / 64] |= 1 << (i % 64);
        }
    }
    sketch
}

fn hamming(a: &Sketch, b: &Sketch) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// The largest Hamming distance at which a vector of `dims` dimensions at cosine `threshold`
/// or more is still expected, with [`SPREAD`] standard deviations to spare.
pub fn reach(threshold: f32, dims: usize) -> u32 {
    let bits = dims.min(BITS) as f32;
    let p = threshold.clamp(-1.0, 1.0).acos() / std::f32::consts::PI;
    let mean = bits * p;
    let deviation = (bits * p * (1.0 - p)).sqrt();
    (mean + SPREAD * deviation).ceil() as u32
}

/// Positions of the sketches within `reach` of `query`, nearest first and at most `max`, skipping
/// those `live` rejects.
pub fn shortlist(
    sketches: &[Sketch],
    query: &Sketch,
    reach: u32,
    max: usize,
    live: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let mut near: Vec<(u32, usize)> = sketches
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let distance = hamming(s, query);
            (distance <= reach && live(i)).then_some((distance, i))
        })
        .collect();
    if near.len() > max {
        near.select_nth_unstable(max);
        near.truncate(max);
    }
    near.sort_unstable();
    near.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketches_keep_signs_and_distance_counts_differing_ones() {
        let a = of(&[1.0, -1.0, 0.5, 0.0]);
        assert_eq!(a[0], 0b0101);
        assert_eq!(hamming(&a, &of(&[1.0, 1.0, -0.5, 0.0])), 2);
        let long: Vec<f32> = (0..500)
            .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert_eq!(
            hamming(&of(&long), &[0; WORDS]),
            128,
            "only the first 384 count"
        );
    }

    #[test]
    fn reach_grows_as_the_threshold_falls() {
        assert!(reach(1.0, 384) == 0);
        let tight = reach(0.95, 384);
        let loose = reach(0.8, 384);
        assert!(tight < loose && loose < 192, "{tight} {loose}");
        assert!(reach(0.8, 16) < reach(0.8, 384));
    }

    #[test]
    fn shortlist_is_nearest_first_bounded_and_live() {
        let query = [0; WORDS];
        let sketches = [
            [0b111, 0, 0, 0, 0, 0],
            [0b1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [u64::MAX, 0, 0, 0, 0, 0],
        ];
        assert_eq!(shortlist(&sketches, &query, 3, 10, |_| true), vec![2, 1, 0]);
        assert_eq!(shortlist(&sketches, &query, 3, 2, |_| true), vec![2, 1]);
        assert_eq!(shortlist(&sketches, &query, 3, 10, |i| i != 2), vec![1, 0]);
    }
}
