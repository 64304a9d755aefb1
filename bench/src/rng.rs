//! The load generator's pseudo-random numbers: SplitMix64 (Steele, Lea and
//! Flood, 2014), seeded per queue, and Lemire's multiply-shift mapping of a
//! 64-bit draw onto `0..n` (no division, no rejection loop).
//!
//! Invariants: no allocation, no state but one `u64`; the same seed gives the
//! same sequence on every machine, so `--seed` reproduces a run's offsets;
//! [`Rng::below`] always returns a value in `0..n` for `n >= 1`. The
//! multiply-shift map is biased by at most `n / 2^64`, far below anything a
//! benchmark can see.

/// A SplitMix64 generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for stream `stream` of run seed `seed` (each queue gets
    /// its own stream, so queues do not walk the same offsets).
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng { state: seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03) };
        // Decorrelate neighbouring streams before the first draw.
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n`.
    ///
    /// # Panics
    /// When `n` is 0 (an empty range is a caller bug).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "a random value below 0");
        map_below(self.next_u64(), n)
    }
}

/// Lemire's map of a uniform 64-bit `x` onto `0..n`: the high half of the
/// 128-bit product.
#[inline]
pub fn map_below(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::{Rng, map_below};
    use proptest::prelude::{any, prop_assert, proptest};

    #[test]
    fn map_covers_the_ends() {
        assert_eq!(map_below(0, 10), 0);
        assert_eq!(map_below(u64::MAX, 10), 9);
        assert_eq!(map_below(u64::MAX, 1), 0);
        assert_eq!(map_below(u64::MAX, u64::MAX), u64::MAX - 1);
        assert_eq!(map_below(1 << 63, 4), 2);
    }

    #[test]
    fn same_seed_same_stream_different_streams_differ() {
        let a: Vec<u64> = (0..8).scan(Rng::new(7, 0), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..8).scan(Rng::new(7, 0), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..8).scan(Rng::new(7, 1), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn draws_are_roughly_uniform() {
        // 16 buckets, 160k draws: each bucket within 5% of 10k (about 10
        // standard deviations), a loose check that the map is not skewed.
        let mut rng = Rng::new(42, 3);
        let mut buckets = [0u32; 16];
        for _ in 0..160_000 {
            buckets[rng.below(16) as usize] += 1;
        }
        for count in buckets {
            assert!((9_500..=10_500).contains(&count), "{buckets:?}");
        }
    }

    proptest! {
        #[test]
        fn below_stays_in_range(seed in any::<u64>(), n in 1u64..=u64::MAX) {
            let mut rng = Rng::new(seed, 0);
            for _ in 0..16 {
                prop_assert!(rng.below(n) < n);
            }
        }
    }
}
