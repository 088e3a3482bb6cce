//! A fixed-bucket histogram: a plain value that a shard, the storage writer or the SFU fills as
//! things happen and `/metrics` encodes (Prometheus `_bucket`/`_sum`/`_count`). No atomics and no
//! allocation: the owner decides how it is shared (a `Cell`/`RefCell` on a shard, a `Mutex` on the
//! bridge thread), and a snapshot is a copy.

/// The most buckets a histogram has, `+Inf` included.
pub const MAX_BUCKETS: usize = 16;

/// Upper bounds of request and commit latencies, in seconds.
pub const LATENCY_SECONDS: &[f64] = &[
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    f64::INFINITY,
];

/// Upper bounds of media round-trip times, in seconds.
pub const RTT_SECONDS: &[f64] = &[
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.4,
    0.8,
    1.6,
    f64::INFINITY,
];

/// Upper bounds of packet loss fractions (0 = nothing lost; 0.01 = 1 %).
pub const LOSS_RATIO: &[f64] = &[
    0.0,
    0.001,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    f64::INFINITY,
];

/// Counts per bucket (not cumulative), their sum and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: [u64; MAX_BUCKETS],
    sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds`: ascending, at most [`MAX_BUCKETS`], the last `+Inf`.
    pub const fn new(bounds: &'static [f64]) -> Histogram {
        assert!(!bounds.is_empty() && bounds.len() <= MAX_BUCKETS);
        assert!(bounds[bounds.len() - 1] == f64::INFINITY);
        Histogram {
            bounds,
            counts: [0; MAX_BUCKETS],
            sum: 0.0,
        }
    }

    /// Counts one observation (a NaN counts in `+Inf` and adds nothing to the sum).
    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len() - 1);
        self.counts[bucket] += 1;
        if value.is_finite() {
            self.sum += value;
        }
    }

    /// Adds `other`'s counts (the same bounds) to these.
    pub fn merge(&mut self, other: &Histogram) {
        debug_assert_eq!(self.bounds, other.bounds, "merging unlike histograms");
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }

    /// `(upper bound, count in that bucket)`, ascending, ending with `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .zip(self.counts.iter().copied())
            .collect()
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::new(LOSS_RATIO);
        h.observe(0.0);
        h.observe(0.0);
        h.observe(0.01);
        h.observe(0.3);
        h.observe(7.0);
        h.observe(f64::NAN);
        let buckets = h.buckets();
        assert_eq!(buckets.len(), LOSS_RATIO.len());
        assert_eq!(buckets[0], (0.0, 2));
        assert_eq!(buckets[3], (0.01, 1));
        assert_eq!(buckets[8], (0.5, 1));
        assert_eq!(buckets[9], (f64::INFINITY, 2));
        assert_eq!(h.count(), 6);
        assert!((h.sum() - 7.31).abs() < 1e-9);
    }

    #[test]
    fn merging_adds_counts_and_sums() {
        let mut a = Histogram::new(LATENCY_SECONDS);
        let mut b = Histogram::new(LATENCY_SECONDS);
        a.observe(0.002);
        b.observe(0.002);
        b.observe(10.0);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.buckets()[2], (0.0025, 2));
        assert_eq!(a.buckets()[LATENCY_SECONDS.len() - 1].1, 1);
        assert!((a.sum() - 10.004).abs() < 1e-9);
    }
}
