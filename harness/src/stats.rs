//! Summary statistics of repeated measurements, in the style of hyperfine: mean +- standard
//! deviation over runs, percentiles of per-token latencies, and outlier detection by the median
//! absolute deviation (which, unlike the standard deviation, one wild sample cannot inflate).

use serde::{Deserialize, Serialize};

/// Mean, spread and range of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator); 0 for a single sample.
    pub stddev: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// Summarises `xs`; `None` when there are none.
    pub fn of(xs: &[f64]) -> Option<Summary> {
        if xs.is_empty() {
            return None;
        }
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let stddev = if n > 1 {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Summary {
            mean,
            stddev,
            median: percentile(xs, 50.0),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n,
        })
    }
}

/// The `p`-th percentile (0..=100) by linear interpolation between the closest ranks; NaN when
/// `xs` is empty.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Median absolute deviation from the median.
pub fn mad(xs: &[f64]) -> f64 {
    let median = percentile(xs, 50.0);
    let deviations: Vec<f64> = xs.iter().map(|x| (x - median).abs()).collect();
    percentile(&deviations, 50.0)
}

/// hyperfine's threshold: a sample whose modified Z-score exceeds this is an outlier.
pub const OUTLIER_Z: f64 = 14.0;

/// Samples whose modified Z-score, `0.6745 (x - median) / MAD`, exceeds [`OUTLIER_Z`].
/// A MAD of zero (most samples equal) reports no outliers rather than dividing by zero.
pub fn outliers(xs: &[f64]) -> usize {
    let (median, mad) = (percentile(xs, 50.0), mad(xs));
    if mad.is_nan() || mad <= 0.0 {
        return 0;
    }
    xs.iter()
        .filter(|&&x| (0.6745 * (x - median) / mad).abs() > OUTLIER_Z)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.mean, 5.0);
        assert!((s.stddev - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!((s.median, s.min, s.max, s.n), (4.5, 2.0, 9.0, 8));
        assert_eq!(Summary::of(&[3.0]).unwrap().stddev, 0.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn percentiles_interpolate() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 0.0), 1.0);
        assert_eq!(percentile(&xs, 100.0), 100.0);
        assert!((percentile(&xs, 90.0) - 90.1).abs() < 1e-9);
        assert!((percentile(&xs, 99.0) - 99.01).abs() < 1e-9);
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 50.0), 3.0);
    }

    #[test]
    fn one_wild_sample_is_an_outlier() {
        let mut xs: Vec<f64> = (0..50).map(|i| 10.0 + (i % 5) as f64 * 0.1).collect();
        assert_eq!(outliers(&xs), 0);
        xs.push(60.0);
        assert_eq!(outliers(&xs), 1);
        assert_eq!(outliers(&[1.0, 1.0, 1.0, 9.0]), 0, "MAD 0: no verdict");
    }
}
