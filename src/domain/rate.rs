//! Per-user write rate limit (`OPENCHAT_RATE_LIMIT_PER_MINUTE`, advertised in capabilities as
//! `limits.rate_limit_per_minute`): a token bucket per key that holds a minute's allowance and
//! refills continuously. Reads are not limited; every write a user can repeat (posting,
//! deleting, layout and profile changes, uploads, sign-in attempts) takes one token.

use std::collections::HashMap;

use super::error::DomainError;
use super::model::Millis;

/// Buckets idle this long are full again and are dropped by [`RateLimiter::sweep`].
const IDLE_BUCKET_MS: Millis = 60_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Millis,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute: per_minute.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key`, or refuses with 429 `rate_limited` (retryable).
    pub fn check(&mut self, key: &str, now: Millis) -> Result<(), DomainError> {
        let capacity = f64::from(self.per_minute);
        let per_ms = capacity / 60_000.0;
        let bucket = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = (now - bucket.at).max(0) as f64;
        bucket.tokens = (bucket.tokens + elapsed * per_ms).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait_ms = ((1.0 - bucket.tokens) / per_ms).ceil() as i64;
        Err(DomainError::RateLimited {
            per_minute: self.per_minute,
            retry_after_ms: wait_ms,
        })
    }

    /// Forgets buckets that have been idle long enough to be full.
    pub fn sweep(&mut self, now: Millis) {
        self.buckets.retain(|_, b| now - b.at < IDLE_BUCKET_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_of_allowance_then_refusal_then_refill() {
        let mut limiter = RateLimiter::new(60);
        for _ in 0..60 {
            limiter.check("uid_a", 0).unwrap();
        }
        let refused = limiter.check("uid_a", 0).unwrap_err();
        assert_eq!(
            (refused.status(), refused.code(), refused.retryable()),
            (429, "rate_limited", true)
        );
        // Other users are not affected.
        limiter.check("uid_b", 0).unwrap();
        // One token per second comes back.
        limiter.check("uid_a", 1_000).unwrap();
        assert!(limiter.check("uid_a", 1_000).is_err());
        limiter.sweep(200_000);
        assert!(limiter.buckets.is_empty());
    }
}
