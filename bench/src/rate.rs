//! A token bucket for `--rate-iops`: each command takes one token; tokens
//! accrue at the rate in continuous time, up to a burst.
//!
//! Tokens are counted in billionths so that integer arithmetic on
//! nanoseconds is exact: `rate` tokens per second is `rate` nano-tokens per
//! nanosecond. Invariants: the level never exceeds the burst; a long pause
//! (the generator stalled) never lets through more than the burst at once;
//! no floating point, no allocation.

use std::time::{Duration, Instant};

const NANO: u64 = 1_000_000_000;

/// A token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens per second.
    rate: u64,
    /// Most tokens held, in nano-tokens.
    burst_nano: u64,
    /// Tokens held, in nano-tokens.
    level_nano: u64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket of `rate` tokens per second holding at most `burst` tokens
    /// (at least 1), starting full at `now`.
    ///
    /// # Panics
    /// When `rate` is 0.
    pub fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        assert!(rate > 0, "a token bucket of rate 0 never lets anything through");
        let burst_nano = burst.max(1).saturating_mul(NANO);
        TokenBucket { rate, burst_nano, level_nano: burst_nano, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        // Beyond a second the bucket is full anyway (burst <= rate is not
        // required, so cap the product rather than the time).
        let elapsed_ns = elapsed.as_nanos().min(u128::from(u64::MAX)) as u64;
        let added = elapsed_ns.saturating_mul(self.rate);
        self.level_nano = self.level_nano.saturating_add(added).min(self.burst_nano);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.level_nano >= NANO {
            self.level_nano -= NANO;
            true
        } else {
            false
        }
    }

    /// How long until a token is there (zero if one is).
    pub fn wait(&self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last);
        let elapsed_ns = elapsed.as_nanos().min(u128::from(u64::MAX)) as u64;
        let level = self.level_nano.saturating_add(elapsed_ns.saturating_mul(self.rate));
        if level >= NANO { Duration::ZERO } else { Duration::from_nanos((NANO - level).div_ceil(self.rate)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 4, t0);
        for _ in 0..4 {
            assert!(bucket.take(t0));
        }
        assert!(!bucket.take(t0));
        assert_eq!(bucket.wait(t0), Duration::from_millis(1));
        assert!(!bucket.take(t0 + Duration::from_micros(999)));
        assert!(bucket.take(t0 + Duration::from_millis(1)));
        assert!(!bucket.take(t0 + Duration::from_millis(1)));
    }

    #[test]
    fn long_pause_gives_only_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1_000_000, 8, t0);
        while bucket.take(t0) {}
        let later = t0 + Duration::from_secs(3600);
        let taken = (0..100).take_while(|_| bucket.take(later)).count();
        assert_eq!(taken, 8);
    }

    #[test]
    fn rate_over_a_second() {
        // Taking as fast as allowed, 1 ms apart, for one second at 250/s:
        // the initial burst plus 250.
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(250, 1, t0);
        let mut taken = 0;
        for ms in 0..=1000 {
            let now = t0 + Duration::from_millis(ms);
            while bucket.take(now) {
                taken += 1;
            }
        }
        assert_eq!(taken, 251);
    }

    #[test]
    fn partial_levels_add_up() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, 1, t0);
        assert!(bucket.take(t0));
        // 1/3 s gives exactly one token; a hair earlier gives none.
        assert!(!bucket.take(t0 + Duration::from_nanos(333_333_333)));
        assert!(bucket.take(t0 + Duration::from_nanos(333_333_334)));
    }
}
