//! Per-socket rate limits for frames the server relays to others (typing, media state). A
//! relayed frame costs the server one encode and one write per recipient, so a client that
//! sends them in a loop multiplies its own traffic by the size of the room; the limit caps what
//! one socket can make the server fan out. Sans-IO: time comes in as an argument.
//!
//! [`TokenBucket`] is the generic cell rate algorithm (GCRA): instead of a token count it keeps
//! the moment the bucket would be full again, so it needs no floating point and no refill timer.

use std::time::{Duration, Instant};

/// `per_second` updates a second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Time one update costs.
    interval: Duration,
    /// How far ahead of now the debt may run: `(burst - 1) * interval`.
    tolerance: Duration,
    /// When the debt is paid off (the "theoretical arrival time"); `None` before the first use.
    paid_at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. `per_second` and `burst` are at least 1.
    pub const fn new(per_second: u32, burst: u32) -> TokenBucket {
        let per_second = if per_second == 0 { 1 } else { per_second };
        let burst = if burst == 0 { 1 } else { burst };
        let interval = Duration::from_nanos(1_000_000_000 / per_second as u64);
        TokenBucket {
            interval,
            tolerance: Duration::from_nanos(interval.as_nanos() as u64 * (burst as u64 - 1)),
            paid_at: None,
        }
    }

    /// Takes one token at `now`: `true` if there was one, `false` (and nothing taken) if the
    /// update is over the rate.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let start = match self.paid_at {
            Some(at) if at > now => at,
            _ => now,
        };
        if start.saturating_duration_since(now) > self.tolerance {
            return false;
        }
        self.paid_at = Some(start + self.interval);
        true
    }

    /// Whether a token is there at `now`, without taking it.
    pub fn has_token(&self, now: Instant) -> bool {
        self.paid_at
            .is_none_or(|at| at.saturating_duration_since(now) <= self.tolerance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 10);
        let taken = (0..1000).filter(|_| bucket.try_take(t0)).count();
        assert_eq!(taken, 10, "the burst, and nothing more at the same instant");
        assert!(!bucket.has_token(t0));
        // One token every 100 ms.
        assert!(!bucket.try_take(t0 + Duration::from_millis(99)));
        assert!(bucket.try_take(t0 + Duration::from_millis(100)));
        assert!(!bucket.try_take(t0 + Duration::from_millis(150)));
        assert!(bucket.try_take(t0 + Duration::from_millis(200)));
        // A long pause fills it again, but only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.has_token(later));
        assert_eq!((0..100).filter(|_| bucket.try_take(later)).count(), 10);
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(20, 1);
        for i in 0..200u64 {
            assert!(
                bucket.try_take(t0 + Duration::from_millis(50 * i)),
                "update {i}"
            );
        }
        // Twice the rate: every other update goes through.
        let t1 = t0 + Duration::from_secs(20);
        let passed = (0..200u64)
            .filter(|i| bucket.try_take(t1 + Duration::from_millis(25 * i)))
            .count();
        assert_eq!(passed, 100);
    }

    #[test]
    fn over_a_long_flood_the_average_is_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 10);
        // 1,000 updates a second for 5 s.
        let passed = (0..5000u64)
            .filter(|i| bucket.try_take(t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(passed, 10 + 50 - 1, "the burst, then one per 100 ms");
    }

    #[test]
    fn zero_is_read_as_one() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0, 0);
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0 + Duration::from_millis(500)));
        assert!(bucket.try_take(t0 + Duration::from_secs(1)));
    }
}
