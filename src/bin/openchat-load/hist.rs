//! A lock-free latency histogram in nanoseconds: log-linear buckets (each power of two split in
//! 128 linear steps), so any recorded value is reported within 1/128 (0.8 %) of itself. Every
//! task records into the same histogram with relaxed atomic adds into its thread's shard;
//! nothing is allocated per sample.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Bits of linear resolution per power of two.
const SUB_BITS: u32 = 8;
const SUB: u64 = 1 << SUB_BITS;
const HALF: u64 = SUB / 2;
/// Values below `SUB` have a bucket each; above, 64 - SUB_BITS powers of two with HALF each.
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * HALF) as usize;

fn bucket_of(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb + 1 - SUB_BITS;
    let mantissa = value >> shift; // in [HALF, SUB)
    (SUB + (shift as u64 - 1) * HALF + (mantissa - HALF)) as usize
}

/// The largest value that lands in `bucket`.
fn bucket_high(bucket: usize) -> u64 {
    let b = bucket as u64;
    if b < SUB {
        return b;
    }
    let shift = (b - SUB) / HALF + 1;
    let mantissa = (b - SUB) % HALF + HALF;
    ((mantissa + 1) << shift).wrapping_sub(1) // the last bucket ends at u64::MAX
}

/// One thread's share of a histogram, on its own cache lines.
#[repr(align(128))]
struct Shard {
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

/// Shards per histogram: each recording thread adds into `its index % SHARDS`, so the client's
/// worker threads do not fight over the same counters at hundreds of thousands of frames a
/// second.
const SHARDS: usize = 16;

fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

pub struct Histogram {
    shards: Box<[Shard]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    count: AtomicU64::new(0),
                    sum: AtomicU64::new(0),
                    max: AtomicU64::new(0),
                    buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
                })
                .collect(),
        }
    }
}

impl Histogram {
    pub fn record_nanos(&self, nanos: u64) {
        let shard = &self.shards[thread_shard()];
        shard.buckets[bucket_of(nanos)].fetch_add(1, Relaxed);
        shard.count.fetch_add(1, Relaxed);
        shard.sum.fetch_add(nanos, Relaxed);
        shard.max.fetch_max(nanos, Relaxed);
    }

    pub fn record(&self, d: Duration) {
        self.record_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.shards.iter().map(|s| s.count.load(Relaxed)).sum()
    }

    fn sum(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.sum.load(Relaxed)))
    }

    pub fn max_nanos(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.max.load(Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// The value at or below which `percent` % of the samples lie (reported as its bucket's
    /// upper edge, never above the exact maximum); 0 with no samples.
    pub fn percentile_nanos(&self, percent: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        // (the epsilon keeps 99.9 % of 1000 at rank 999 despite 99.9 / 100 not being exact)
        let rank = ((percent / 100.0 * count as f64 - 1e-9).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for i in 0..BUCKETS {
            seen += self
                .shards
                .iter()
                .map(|s| s.buckets[i].load(Relaxed))
                .sum::<u64>();
            if seen >= rank {
                return bucket_high(i).min(self.max_nanos());
            }
        }
        self.max_nanos()
    }

    pub fn summary(&self) -> Latency {
        let us = |nanos: u64| (nanos as f64 / 100.0).round() / 10.0;
        let count = self.count();
        Latency {
            count,
            mean_us: us(self.sum().checked_div(count).unwrap_or(0)),
            p50_us: us(self.percentile_nanos(50.0)),
            p90_us: us(self.percentile_nanos(90.0)),
            p99_us: us(self.percentile_nanos(99.0)),
            p999_us: us(self.percentile_nanos(99.9)),
            max_us: us(self.max_nanos()),
        }
    }
}

/// Percentiles in microseconds (0.1 µs resolution) for the report.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// Seconds with millisecond resolution, for the report.
pub fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A rate with one decimal, for the report.
pub fn per_second(count: u64, seconds: f64) -> f64 {
    (count as f64 / seconds * 10.0).round() / 10.0
}

/// `1234.5` µs → `1.23 ms`, etc.
pub fn human_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.1} µs")
    }
}

impl Latency {
    pub fn line(&self, with_p999: bool) -> String {
        let p999 = if with_p999 {
            format!("  p99.9 {}", human_us(self.p999_us))
        } else {
            String::new()
        };
        format!(
            "p50 {}  p90 {}  p99 {}{p999}  max {}  (n={})",
            human_us(self.p50_us),
            human_us(self.p90_us),
            human_us(self.p99_us),
            human_us(self.max_us),
            self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(SUB - 1), (SUB - 1) as usize);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_high(BUCKETS - 1), u64::MAX);
        for b in 0..BUCKETS - 1 {
            let high = bucket_high(b);
            assert_eq!(bucket_of(high), b, "upper edge of {b}");
            assert_eq!(bucket_of(high + 1), b + 1, "next value after {b}");
        }
    }

    #[test]
    fn relative_error_is_below_one_percent() {
        for v in [
            300u64,
            1_000,
            12_345,
            999_999,
            5_000_000_000,
            123_456_789_012,
        ] {
            let high = bucket_high(bucket_of(v));
            assert!(high >= v);
            assert!(
                (high - v) as f64 / v as f64 <= 1.0 / HALF as f64,
                "{v} -> {high}"
            );
        }
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        let close = |got: f64, want: f64| (got - want).abs() / want < 0.01;
        assert!(close(s.p50_us, 500.0), "{s:?}");
        assert!(close(s.p90_us, 900.0), "{s:?}");
        assert!(close(s.p99_us, 990.0), "{s:?}");
        assert!(close(s.p999_us, 999.0), "{s:?}");
        assert_eq!(s.max_us, 1000.0);
        assert!(close(s.mean_us, 500.5), "{s:?}");
        // never above the exact maximum
        assert!(s.p999_us <= s.max_us);
    }

    #[test]
    fn small_samples_and_outliers() {
        let h = Histogram::default();
        assert_eq!(h.summary().p99_us, 0.0, "empty histogram reports zeros");
        for _ in 0..99 {
            h.record_nanos(100_000);
        }
        h.record_nanos(80_000_000);
        assert!((h.percentile_nanos(50.0) as f64 - 100_000.0).abs() < 1_000.0);
        assert!((h.percentile_nanos(99.0) as f64 - 100_000.0).abs() < 1_000.0);
        assert_eq!(h.percentile_nanos(99.9), 80_000_000);
        assert_eq!(h.percentile_nanos(100.0), 80_000_000);
        assert_eq!(h.summary().max_us, 80_000.0);
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let h = std::sync::Arc::new(Histogram::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record_nanos(1_000 + (i * 7 + t) % 5_000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.count(), 40_000);
    }

    #[test]
    fn report_rounding() {
        assert_eq!(seconds(Duration::from_nanos(5_152_062_464)), 5.152);
        assert_eq!(seconds(Duration::from_nanos(8_092)), 0.0);
        assert_eq!(per_second(1000, 5.3), 188.7);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_us(12.34), "12.3 µs");
        assert_eq!(human_us(1234.5), "1.23 ms");
        assert_eq!(human_us(2_500_000.0), "2.50 s");
    }
}
