//! Per-namespace I/O counters and latency histograms, written on the data path and read by
//! the control plane (SMART log, the node API's metrics).
//!
//! Every namespace has one slot per reactor; a slot has a single writer (its reactor), so an
//! update is a plain load and store of relaxed atomics, never a locked read-modify-write, and
//! slots are cache-line aligned so reactors do not share lines. Readers sum the slots; a sum
//! taken while reactors write may be a few commands behind, never torn per counter.
//!
//! Latency is recorded per completed Read (and Compare) and Write, from the arrival of the
//! command capsule to the command's completion, both read from the reactor's per-turn clock
//! (so it costs no clock read of its own and is exact to within one reactor turn).
//! [`LatencyHistogram`] buckets are powers of two of a microsecond, `le` bounds 1 µs .. 2^24 µs
//! (about 16.8 s), and one overflow bucket: what a Prometheus histogram needs, plus the sum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets with an upper bound: `le` = 2^i µs for i in `0..BOUNDED_BUCKETS` (1 µs .. ~16.8 s).
pub const BOUNDED_BUCKETS: usize = 25;
/// The bounded buckets and the overflow bucket (+Inf).
pub const BUCKETS: usize = BOUNDED_BUCKETS + 1;

/// Per-namespace counters, one slot per reactor; each slot has a single writer.
#[derive(Debug)]
pub struct NsStats {
    slots: Box<[PaddedCounters]>,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct PaddedCounters {
    read_cmds: AtomicU64,
    write_cmds: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    media_errors: AtomicU64,
    read_latency: Buckets,
    write_latency: Buckets,
}

#[derive(Debug, Default)]
struct Buckets {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Buckets {
    fn record(&self, elapsed: Duration) {
        bump(&self.counts[bucket_of(elapsed)], 1);
        bump(&self.sum_ns, u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    fn add_to(&self, h: &mut LatencyHistogram) {
        for (total, count) in h.counts.iter_mut().zip(&self.counts) {
            *total += count.load(Ordering::Relaxed);
        }
        h.sum_ns = h.sum_ns.wrapping_add(self.sum_ns.load(Ordering::Relaxed));
    }
}

/// The bucket of a latency: the smallest `i` with `elapsed <= 2^i µs`, or the overflow bucket.
fn bucket_of(elapsed: Duration) -> usize {
    let us = elapsed.as_nanos().div_ceil(1000);
    let us = u64::try_from(us).unwrap_or(u64::MAX);
    // ceil(log2(us)) for us >= 2; 0 for 0 and 1.
    let i = (u64::BITS - us.saturating_sub(1).leading_zeros()) as usize;
    i.min(BOUNDED_BUCKETS)
}

/// A latency distribution: counts per power-of-two bucket (not cumulative) and the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// `counts[i]` for `i < BOUNDED_BUCKETS`: latencies in `(2^(i-1), 2^i]` µs (bucket 0: up to
    /// 1 µs); `counts[BOUNDED_BUCKETS]`: above 2^24 µs.
    pub counts: [u64; BUCKETS],
    /// The sum of every recorded latency, nanoseconds.
    pub sum_ns: u64,
}

impl LatencyHistogram {
    /// The upper bound of bounded bucket `i`, microseconds.
    pub fn bound_us(i: usize) -> u64 {
        assert!(i < BOUNDED_BUCKETS, "bucket {i} has no bound");
        1 << i
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Cumulative counts, as Prometheus `le` buckets: `(bound_us, count <= bound)` for each
    /// bounded bucket; the +Inf bucket is [`LatencyHistogram::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts[..BOUNDED_BUCKETS].iter().enumerate().scan(0u64, |acc, (i, &n)| {
            *acc += n;
            Some((LatencyHistogram::bound_us(i), *acc))
        })
    }

    /// Adds another histogram's counts into this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }
}

/// Sums over every reactor's slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NsTotals {
    pub read_cmds: u64,
    pub write_cmds: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub media_errors: u64,
    /// Reads and Compares, capsule arrival to completion.
    pub read_latency: LatencyHistogram,
    /// Writes, capsule arrival to completion.
    pub write_latency: LatencyHistogram,
}

impl NsTotals {
    /// Adds another namespace's totals into these (a subsystem's, a pool's).
    pub fn merge(&mut self, t: &NsTotals) {
        self.read_cmds += t.read_cmds;
        self.write_cmds += t.write_cmds;
        self.read_bytes += t.read_bytes;
        self.write_bytes += t.write_bytes;
        self.media_errors += t.media_errors;
        self.read_latency.merge(&t.read_latency);
        self.write_latency.merge(&t.write_latency);
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    // Single writer per slot: a plain load and store, no locked read-modify-write.
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
}

impl NsStats {
    /// Counters for `reactors` reactors (at least one slot).
    pub fn new(reactors: usize) -> NsStats {
        NsStats { slots: (0..reactors.max(1)).map(|_| PaddedCounters::default()).collect() }
    }

    /// A completed read (or compare) of `bytes` that took `latency`. Only `reactor` calls it.
    pub fn read(&self, reactor: usize, bytes: u64, latency: Duration) {
        let s = &self.slots[reactor];
        bump(&s.read_cmds, 1);
        bump(&s.read_bytes, bytes);
        s.read_latency.record(latency);
    }

    /// A completed write of `bytes` that took `latency`. Only `reactor` calls it.
    pub fn write(&self, reactor: usize, bytes: u64, latency: Duration) {
        let s = &self.slots[reactor];
        bump(&s.write_cmds, 1);
        bump(&s.write_bytes, bytes);
        s.write_latency.record(latency);
    }

    pub fn media_error(&self, reactor: usize) {
        bump(&self.slots[reactor].media_errors, 1);
    }

    pub fn totals(&self) -> NsTotals {
        let mut t = NsTotals::default();
        for s in self.slots.iter() {
            t.read_cmds += s.read_cmds.load(Ordering::Relaxed);
            t.write_cmds += s.write_cmds.load(Ordering::Relaxed);
            t.read_bytes += s.read_bytes.load(Ordering::Relaxed);
            t.write_bytes += s.write_bytes.load(Ordering::Relaxed);
            t.media_errors += s.media_errors.load(Ordering::Relaxed);
            s.read_latency.add_to(&mut t.read_latency);
            s.write_latency.add_to(&mut t.write_latency);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn stats_sum_over_reactor_slots() {
        let stats = NsStats::new(2);
        stats.read(0, 4096, us(3));
        stats.read(1, 512, us(5));
        stats.write(1, 8192, us(100));
        let t = stats.totals();
        assert_eq!((t.read_cmds, t.read_bytes, t.write_cmds, t.write_bytes), (2, 4608, 1, 8192));
        assert_eq!(t.read_latency.count(), 2);
        assert_eq!(t.read_latency.sum_ns, 8_000);
        assert_eq!(t.write_latency.counts[7], 1, "100 µs is in (64, 128]");
    }

    #[test]
    fn buckets_are_le_powers_of_two_of_a_microsecond() {
        let at = |d| bucket_of(d);
        assert_eq!(at(Duration::ZERO), 0);
        assert_eq!(at(Duration::from_nanos(1)), 0);
        assert_eq!(at(us(1)), 0);
        assert_eq!(at(Duration::from_nanos(1001)), 1);
        assert_eq!(at(us(2)), 1);
        assert_eq!(at(us(3)), 2);
        assert_eq!(at(us(4)), 2);
        assert_eq!(at(us(5)), 3);
        assert_eq!(at(us(1 << 24)), 24);
        assert_eq!(at(us((1 << 24) + 1)), BOUNDED_BUCKETS, "overflow");
        assert_eq!(at(Duration::from_secs(3600)), BOUNDED_BUCKETS);
        assert_eq!(at(Duration::MAX), BOUNDED_BUCKETS);
        for i in 0..BOUNDED_BUCKETS {
            assert_eq!(at(us(LatencyHistogram::bound_us(i))), i, "the bound itself is in its bucket");
        }
    }

    #[test]
    fn cumulative_buckets_end_at_the_bounded_count() {
        let stats = NsStats::new(1);
        for n in [1, 2, 3, 1000, 20_000_000] {
            stats.write(0, 512, us(n));
        }
        let h = stats.totals().write_latency;
        let cumulative: Vec<_> = h.cumulative().collect();
        assert_eq!(cumulative.len(), BOUNDED_BUCKETS);
        assert_eq!(cumulative[0], (1, 1));
        assert_eq!(cumulative[1], (2, 2));
        assert_eq!(cumulative[2], (4, 3));
        assert_eq!(cumulative[10], (1024, 4));
        assert_eq!(cumulative[BOUNDED_BUCKETS - 1], (1 << 24, 4));
        assert_eq!(h.count(), 5, "+Inf holds the 20 s write too");
        let mut twice = h;
        twice.merge(&h);
        assert_eq!(twice.count(), 10);
        assert_eq!(twice.sum_ns, 2 * h.sum_ns);
    }
}
