// SPDX-License-Identifier: GPL-2.0

//! Latency statistics.

/// Summary of a set of samples (in the samples' unit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation.
    pub stddev: f64,
    /// 50th percentile.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// The `p`th percentile (0..=100) of sorted samples, interpolating linearly between the two
/// closest ranks (numpy's default method): the median of an even count is the mean of the
/// two middle samples.  `None` for no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let pos = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Summarises `samples` (sorting them in place); `None` for no samples.
pub fn summarize(samples: &mut [f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    let pct = |p| percentile(samples, p).unwrap_or(f64::NAN);
    Some(Summary {
        count: samples.len(),
        min: samples[0],
        max: samples[samples.len() - 1],
        mean,
        stddev: var.sqrt(),
        median: pct(50.0),
        p90: pct(90.0),
        p99: pct(99.0),
        p999: pct(99.9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.5));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 100.0), Some(4.0));
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(100.0));
        assert_eq!(percentile(&v, 90.0), Some(91.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p99 = percentile(&v, 99.0).unwrap();
        assert!((p99 - 99.01).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn summary() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        let s = summarize(&mut v).unwrap();
        assert_eq!(v, [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(
            (s.count, s.min, s.max, s.mean, s.median),
            (5, 1.0, 5.0, 3.0, 3.0)
        );
        assert!((s.stddev - 2f64.sqrt()).abs() < 1e-12);
        assert!(summarize(&mut []).is_none());
    }
}
