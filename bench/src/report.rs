//! A run's results as people and programs read them: the [`Report`] (every
//! figure, the parameters and the per-second series, serialized to JSON) and
//! its human summary.
//!
//! Units are in the field names: `_us` microseconds, `_s` seconds,
//! `mb_per_s` 10^6 bytes per second, `cpu_pct` percent of one core.
//! Invariants: a report is built from an [`Outcome`] only, so the JSON and
//! the summary always say the same thing; rates divide by the measured
//! window, never by the configured runtime.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::disk::DiskUse;
use crate::engine::run::Outcome;
use crate::engine::setup::NamespaceInfo;
use crate::units::format_size;
use crate::workload::Workload;

/// Latency figures, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Fastest.
    pub min_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// 99.99th percentile.
    pub p9999_us: f64,
    /// Slowest.
    pub max_us: f64,
}

impl Latency {
    /// From a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            p9999_us: us(h.value_at_quantile(0.9999)),
            max_us: us(h.max()),
        }
    }
}

/// Throughput and latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Commands measured.
    pub ios: u64,
    /// Reads among them.
    pub reads: u64,
    /// Writes among them.
    pub writes: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// The measured window.
    pub seconds: f64,
    /// Commands per second.
    pub iops: f64,
    /// 10^6 bytes per second, both directions.
    pub mb_per_s: f64,
    /// Latency of every command.
    pub lat: Latency,
    /// Latency of reads.
    pub read_lat: Latency,
    /// Latency of writes.
    pub write_lat: Latency,
    /// Reads whose data was checked against the pattern.
    pub verified_reads: u64,
    /// Latencies over 100 s (recorded as 100 s).
    pub clamped: u64,
}

/// A process's or thread's CPU use over the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// CPU seconds.
    pub cpu_s: f64,
    /// Percent of one core.
    pub cpu_pct: f64,
    /// Commands per CPU second.
    pub iops_per_cpu_s: f64,
}

impl CpuUse {
    fn of(cpu_s: f64, seconds: f64, ios: u64) -> CpuUse {
        CpuUse {
            cpu_s,
            cpu_pct: if seconds > 0.0 { 100.0 * cpu_s / seconds } else { 0.0 },
            iops_per_cpu_s: if cpu_s > 0.0 { ios as f64 / cpu_s } else { 0.0 },
        }
    }
}

/// CPU figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// The whole bench process.
    pub bench: CpuUse,
    /// Each job thread (the engine alone).
    pub jobs: Vec<CpuUse>,
    /// The target process, with `--target-pid`.
    pub target: Option<CpuUse>,
}

/// One second of the series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesRow {
    /// Seconds since the start of the window (this second's start).
    pub t_s: u64,
    /// Commands completed in it.
    pub iops: u64,
    /// 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Mean latency.
    pub lat_mean_us: f64,
    /// 99th percentile latency (an upper bound with several jobs).
    pub lat_p99_us: f64,
    /// Slowest.
    pub lat_max_us: f64,
}

/// One point of the latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CdfPoint {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at it.
    pub lat_us: f64,
}

/// Everything about one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `fabriq-bench`.
    pub tool: &'static str,
    /// Its version.
    pub version: &'static str,
    /// `--label`.
    pub label: Option<String>,
    /// `tcp` or `local`.
    pub mode: &'static str,
    /// What was driven.
    pub device: String,
    /// The namespace (NVMe/TCP).
    pub namespace: Option<NamespaceInfo>,
    /// Local mode: buffers registered with io_uring.
    pub registered_buffers: Option<bool>,
    /// The workload as run.
    pub params: Workload,
    /// Throughput and latency.
    pub results: Results,
    /// CPU use.
    pub cpu: Cpu,
    /// What `--disk` served.
    pub disk: Option<DiskUse>,
    /// Per second.
    pub series: Vec<SeriesRow>,
    /// Latency distribution.
    pub latency_cdf: Vec<CdfPoint>,
}

impl Report {
    /// The report of `outcome`.
    pub fn new(outcome: &Outcome, label: Option<String>) -> Report {
        let stats = &outcome.stats;
        let seconds = outcome.window.as_secs_f64();
        let ios = stats.ios();
        let bytes = stats.bytes_read + stats.bytes_written;
        let per_s = |x: f64| if seconds > 0.0 { x / seconds } else { 0.0 };
        let results = Results {
            ios,
            reads: stats.reads.len(),
            writes: stats.writes.len(),
            bytes_read: stats.bytes_read,
            bytes_written: stats.bytes_written,
            seconds,
            iops: per_s(ios as f64),
            mb_per_s: per_s(bytes as f64) / 1e6,
            lat: Latency::of(&stats.all),
            read_lat: Latency::of(&stats.reads),
            write_lat: Latency::of(&stats.writes),
            verified_reads: stats.verified_reads,
            clamped: stats.clamped,
        };
        let cpu_seconds = outcome.cpu_window.as_secs_f64();
        let cpu = Cpu {
            bench: CpuUse::of(outcome.bench_cpu.as_secs_f64(), cpu_seconds, ios),
            jobs: outcome
                .jobs
                .iter()
                .map(|(cpu, window)| CpuUse::of(cpu.as_secs_f64(), window.as_secs_f64(), 0))
                .collect(),
            target: outcome.target_cpu.map(|t| CpuUse::of(t.as_secs_f64(), cpu_seconds, ios)),
        };
        let series = stats
            .series
            .iter()
            .enumerate()
            .map(|(t, s)| SeriesRow {
                t_s: t as u64,
                iops: s.ios,
                mb_per_s: s.bytes as f64 / 1e6,
                lat_mean_us: s.lat_mean_ns() as f64 / 1000.0,
                lat_p99_us: s.lat_p99_ns as f64 / 1000.0,
                lat_max_us: s.lat_max_ns as f64 / 1000.0,
            })
            .collect();
        Report {
            tool: "fabriq-bench",
            version: env!("CARGO_PKG_VERSION"),
            label,
            mode: if outcome.namespace.is_some() { "tcp" } else { "local" },
            device: outcome.device.clone(),
            namespace: outcome.namespace,
            registered_buffers: outcome.registered_buffers,
            params: outcome.workload.clone(),
            results,
            cpu,
            disk: outcome.disk.clone(),
            series,
            latency_cdf: cdf(&stats.all),
        }
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let p = &self.params;
        let r = &self.results;
        let mut out = String::new();
        let what = match p.runtime {
            Some(t) => format!("{:.0}s", t.as_secs_f64()),
            None => format!("size={}", format_size(p.size.unwrap_or(0))),
        };
        let _ = writeln!(
            out,
            "{} bs={} iodepth={} queues={} jobs={} {what}{} -> {}",
            rw_name(p),
            format_size(u64::from(p.bs)),
            p.iodepth,
            p.queues,
            p.jobs,
            if p.verify { " verify" } else { "" },
            self.device
        );
        let _ = writeln!(
            out,
            "  IOPS       {:>12}   ({} reads and {} writes in {:.2} s)",
            thousands(r.iops),
            thousands(r.reads as f64),
            thousands(r.writes as f64),
            r.seconds
        );
        let _ = writeln!(out, "  bandwidth  {:>12.1} MB/s", r.mb_per_s);
        let lat_line = |name: &str, l: &Latency| {
            format!(
                "  {name:<10} avg {:.1}  p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1} µs\n",
                l.mean_us, l.p50_us, l.p99_us, l.p999_us, l.max_us
            )
        };
        out.push_str(&lat_line("latency", &r.lat));
        if r.reads > 0 && r.writes > 0 {
            out.push_str(&lat_line("  reads", &r.read_lat));
            out.push_str(&lat_line("  writes", &r.write_lat));
        }
        let jobs: Vec<String> = self.cpu.jobs.iter().map(|j| format!("{:.0}%", j.cpu_pct)).collect();
        let _ = writeln!(
            out,
            "  bench CPU  {:.1}% of a core (job threads {}), {} IOPS per CPU-second",
            self.cpu.bench.cpu_pct,
            jobs.join(" "),
            thousands(self.cpu.bench.iops_per_cpu_s)
        );
        if let Some(t) = &self.cpu.target {
            let _ = writeln!(
                out,
                "  target CPU {:.1}% of a core, {} IOPS per target CPU-second",
                t.cpu_pct,
                thousands(t.iops_per_cpu_s)
            );
        }
        if let Some(d) = &self.disk {
            let mut served = Vec::new();
            for (name, per_s, kib) in
                [("reads", d.reads_per_s, d.read_kib_per_request), ("writes", d.writes_per_s, d.write_kib_per_request)]
            {
                if per_s > 0.0 {
                    served.push(format!("{} {name}/s of {kib:.0} KiB", thousands(per_s)));
                }
            }
            if served.is_empty() {
                served.push(String::from("no requests"));
            }
            let _ = writeln!(
                out,
                "  disk {:<5} {}, {} merged, busy {:.0}%, {:.1} in flight",
                d.device,
                served.join(", "),
                thousands(d.merged as f64),
                d.busy_pct,
                d.queue_depth
            );
        }
        if p.verify {
            let _ = writeln!(out, "  verify     {} reads checked, no mismatch", r.verified_reads);
        }
        if r.clamped > 0 {
            let _ = writeln!(out, "  note       {} latencies over 100 s were recorded as 100 s", r.clamped);
        }
        out
    }
}

fn rw_name(p: &Workload) -> String {
    let name = serde_json::to_value(p.rw).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    if p.rw == crate::workload::Pattern::Randrw { format!("{name} ({}% reads)", p.read_pct) } else { name }
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The latency distribution at percentiles spaced evenly in "nines"
/// (0, 68.4, 90, 96.8, 99, ... 99.999), plus 100.
pub fn cdf(h: &Histogram<u64>) -> Vec<CdfPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<CdfPoint> = (0..=50)
        .map(|i| {
            let nines = f64::from(i) / 10.0;
            let q = 1.0 - 10f64.powf(-nines);
            CdfPoint { percentile: q * 100.0, lat_us: h.value_at_quantile(q) as f64 / 1000.0 }
        })
        .collect();
    points.push(CdfPoint { percentile: 100.0, lat_us: h.max() as f64 / 1000.0 });
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(485_000.0), "485,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }

    #[test]
    fn cdf_is_monotonic() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 100).unwrap();
        }
        let points = cdf(&h);
        assert_eq!(points.first().unwrap().percentile, 0.0);
        assert_eq!(points.last().unwrap().percentile, 100.0);
        assert!(points.windows(2).all(|w| w[0].lat_us <= w[1].lat_us && w[0].percentile <= w[1].percentile));
        let l = Latency::of(&h);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() < 1.0);
    }
}
