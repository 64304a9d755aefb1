//! What a run measures: per-job latency histograms (HDR, nanoseconds), I/O and
//! byte counts, and a per-second time series; merged across jobs at the end.
//!
//! Invariants:
//! - only completions inside the measured window (after the ramp, before the
//!   end) are recorded; the job decides, this module just counts;
//! - recording never allocates: the histograms are sized at start-up for
//!   [`MAX_LATENCY_NS`] and a larger value is clamped to it (and counted in
//!   `clamped`); the series grows by one entry per second at most;
//! - merging is exact for counts and histograms; the per-second p99 of a
//!   merged series is the largest of the jobs' p99s for that second (an upper
//!   bound; exact with one job).

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency the histograms hold: 100 s. Anything slower is clamped.
pub const MAX_LATENCY_NS: u64 = 100_000_000_000;
/// Significant figures of the histograms (0.1% resolution).
const SIGFIG: u8 = 3;

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Second {
    /// Commands completed in this second.
    pub ios: u64,
    /// Bytes they moved.
    pub bytes: u64,
    /// Sum of their latencies, nanoseconds.
    pub lat_sum_ns: u64,
    /// Their largest latency, nanoseconds.
    pub lat_max_ns: u64,
    /// Their 99th percentile latency, nanoseconds (see the module invariants
    /// for merged series).
    pub lat_p99_ns: u64,
}

impl Second {
    /// Mean latency in nanoseconds (0 when nothing completed).
    pub fn lat_mean_ns(&self) -> u64 {
        self.lat_sum_ns.checked_div(self.ios).unwrap_or(0)
    }

    fn merge(&mut self, other: &Second) {
        self.ios += other.ios;
        self.bytes += other.bytes;
        self.lat_sum_ns += other.lat_sum_ns;
        self.lat_max_ns = self.lat_max_ns.max(other.lat_max_ns);
        self.lat_p99_ns = self.lat_p99_ns.max(other.lat_p99_ns);
    }
}

/// Direction of a command, for the per-direction histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// A read.
    Read,
    /// A write.
    Write,
}

/// Everything one job (or, merged, the whole run) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of every measured command, nanoseconds.
    pub all: Histogram<u64>,
    /// Latency of measured reads.
    pub reads: Histogram<u64>,
    /// Latency of measured writes.
    pub writes: Histogram<u64>,
    /// Bytes read in the measured window.
    pub bytes_read: u64,
    /// Bytes written in the measured window.
    pub bytes_written: u64,
    /// Latencies over [`MAX_LATENCY_NS`], recorded as that.
    pub clamped: u64,
    /// Reads whose data was checked against the pattern.
    pub verified_reads: u64,
    /// The per-second series, from the start of the measured window.
    pub series: Vec<Second>,
    current: Second,
    interval: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGFIG).expect("valid histogram bounds")
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new(0)
    }
}

impl Stats {
    /// Empty statistics, with room for `seconds` of series.
    pub fn new(seconds: usize) -> Stats {
        Stats {
            all: histogram(),
            reads: histogram(),
            writes: histogram(),
            bytes_read: 0,
            bytes_written: 0,
            clamped: 0,
            verified_reads: 0,
            series: Vec::with_capacity(seconds + 1),
            current: Second::default(),
            interval: histogram(),
        }
    }

    /// Records one measured command that completed in second `second` of
    /// the window (seconds that passed without completions are filled in).
    #[inline]
    pub fn record(&mut self, second: usize, dir: Dir, bytes: u64, latency_ns: u64) {
        self.roll_to(second);
        let value = if latency_ns > MAX_LATENCY_NS {
            self.clamped += 1;
            MAX_LATENCY_NS
        } else {
            latency_ns.max(1)
        };
        self.all.record(value).expect("value within the bounds");
        self.interval.record(value).expect("value within the bounds");
        match dir {
            Dir::Read => {
                self.reads.record(value).expect("value within the bounds");
                self.bytes_read += bytes;
            }
            Dir::Write => {
                self.writes.record(value).expect("value within the bounds");
                self.bytes_written += bytes;
            }
        }
        self.current.ios += 1;
        self.current.bytes += bytes;
        self.current.lat_sum_ns += value;
        self.current.lat_max_ns = self.current.lat_max_ns.max(value);
    }

    /// Closes every second before `second`.
    pub fn roll_to(&mut self, second: usize) {
        while self.series.len() < second {
            self.current.lat_p99_ns = if self.interval.is_empty() { 0 } else { self.interval.value_at_quantile(0.99) };
            self.series.push(self.current);
            self.current = Second::default();
            self.interval.reset();
        }
    }

    /// Closes the last second (partial seconds are kept: the summary divides
    /// by the real elapsed time, the series shows what happened).
    pub fn finish(&mut self, seconds: usize) {
        self.roll_to(seconds);
        if self.current.ios > 0 {
            self.roll_to(self.series.len() + 1);
        }
    }

    /// Adds another job's statistics to these.
    pub fn merge(&mut self, other: &Stats) {
        self.all.add(&other.all).expect("same bounds");
        self.reads.add(&other.reads).expect("same bounds");
        self.writes.add(&other.writes).expect("same bounds");
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.clamped += other.clamped;
        self.verified_reads += other.verified_reads;
        if self.series.len() < other.series.len() {
            self.series.resize(other.series.len(), Second::default());
        }
        for (mine, theirs) in self.series.iter_mut().zip(&other.series) {
            mine.merge(theirs);
        }
    }

    /// Commands measured.
    pub fn ios(&self) -> u64 {
        self.all.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_fills_gaps_and_closes_partial_seconds() {
        let mut stats = Stats::new(4);
        stats.record(0, Dir::Read, 4096, 1000);
        stats.record(0, Dir::Read, 4096, 3000);
        stats.record(2, Dir::Write, 4096, 5000);
        stats.finish(2);
        assert_eq!(stats.series.len(), 3);
        assert_eq!(stats.series[0].ios, 2);
        assert_eq!(stats.series[0].lat_mean_ns(), 2000);
        assert_eq!(stats.series[1], Second::default());
        assert_eq!(stats.series[2].ios, 1);
        assert_eq!(stats.bytes_read, 8192);
        assert_eq!(stats.bytes_written, 4096);
    }

    #[test]
    fn merge_adds_histograms_and_series() {
        let mut a = Stats::new(2);
        let mut b = Stats::new(2);
        for i in 1..=100u64 {
            a.record(0, Dir::Read, 512, i * 1000);
            b.record(1, Dir::Write, 512, i * 1000 + 100_000);
        }
        a.finish(1);
        b.finish(2);
        let mut merged = Stats::new(2);
        merged.merge(&a);
        merged.merge(&b);
        assert_eq!(merged.ios(), 200);
        assert_eq!(merged.reads.len(), 100);
        assert_eq!(merged.writes.len(), 100);
        assert_eq!(merged.series.len(), 2);
        assert_eq!(merged.series[0].ios, 100);
        assert_eq!(merged.series[1].ios, 100);
        // The merged histogram's median sits between the two populations.
        let p50 = merged.all.value_at_quantile(0.5);
        assert!((99_000..=101_500).contains(&p50), "{p50}");
        assert_eq!(merged.all.max(), b.all.max());
        assert_eq!(merged.all.min(), a.all.min());
        assert_eq!(merged.bytes_read + merged.bytes_written, 200 * 512);
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut stats = Stats::new(1);
        stats.record(0, Dir::Read, 1, MAX_LATENCY_NS * 2);
        assert_eq!(stats.clamped, 1);
        assert_eq!(stats.ios(), 1);
    }
}
