//! `/metrics`: the node's numbers in the Prometheus text exposition format (0.0.4). Per volume:
//! read and write commands and bytes, media errors, read and write latency histograms (seconds,
//! power-of-two buckets from 1 µs), live controllers and I/O queues, size; per pool: capacity,
//! use, free space, volumes; and the node's uptime and listeners.
//!
//! Invariants: every family is written with its `# HELP` and `# TYPE` lines once, before its
//! samples; label values are escaped as the format requires; histogram buckets are cumulative
//! and end with `+Inf` equal to `_count`.

use fabriq_http::prometheus::{escape, header, sample};

use crate::node::{Metrics, VolumeMetrics};
use crate::subsys::LatencyHistogram;

/// Renders every family.
pub fn render(m: &Metrics) -> String {
    let mut out = String::with_capacity(4096 + m.volumes.len() * 4096);
    gauge(
        &mut out,
        "fabriq_node_uptime_seconds",
        "Seconds since the node manager started.",
        [(String::new(), m.uptime_s)],
    );
    gauge(&mut out, "fabriq_listeners", "Listening sockets.", [(String::new(), m.listeners as u64)]);

    let pool = |f: fn(&crate::node::PoolInfoView) -> u64| {
        m.pools.iter().map(move |p| (format!("pool=\"{}\"", escape(&p.name)), f(p))).collect::<Vec<_>>()
    };
    gauge(
        &mut out,
        "fabriq_pool_online",
        "1 when the pool is open and its volumes served, 0 when it failed to open.",
        pool(|p| u64::from(p.state == "online")),
    );
    gauge(&mut out, "fabriq_pool_capacity_bytes", "Bytes volumes can have in the pool.", pool(|p| p.capacity_bytes));
    gauge(&mut out, "fabriq_pool_used_bytes", "Bytes of the pool given to volumes.", pool(|p| p.used_bytes));
    gauge(&mut out, "fabriq_pool_free_bytes", "Bytes of the pool free for volumes.", pool(|p| p.free_bytes));
    gauge(&mut out, "fabriq_pool_volumes", "Volumes in the pool.", pool(|p| p.volumes as u64));

    let vol = |f: fn(&VolumeMetrics) -> u64| m.volumes.iter().map(move |v| (labels(v), f(v))).collect::<Vec<_>>();
    gauge(&mut out, "fabriq_volume_size_bytes", "The volume's capacity.", vol(|v| v.size_bytes));
    gauge(
        &mut out,
        "fabriq_volume_controllers",
        "Live controllers (host associations) on the volume.",
        vol(|v| v.connections.controllers as u64),
    );
    gauge(
        &mut out,
        "fabriq_volume_io_queues",
        "Connected I/O queues of those controllers.",
        vol(|v| v.connections.io_queues as u64),
    );
    counter(
        &mut out,
        "fabriq_volume_read_ops_total",
        "Read and Compare commands completed.",
        vol(|v| v.totals.read_cmds),
    );
    counter(&mut out, "fabriq_volume_write_ops_total", "Write commands completed.", vol(|v| v.totals.write_cmds));
    counter(&mut out, "fabriq_volume_read_bytes_total", "Bytes read.", vol(|v| v.totals.read_bytes));
    counter(&mut out, "fabriq_volume_write_bytes_total", "Bytes written.", vol(|v| v.totals.write_bytes));
    counter(
        &mut out,
        "fabriq_volume_media_errors_total",
        "Commands failed by the device.",
        vol(|v| v.totals.media_errors),
    );
    histogram(
        &mut out,
        "fabriq_volume_read_latency_seconds",
        "Reads, command capsule arrival to completion.",
        m.volumes.iter().map(|v| (labels(v), &v.totals.read_latency)),
    );
    histogram(
        &mut out,
        "fabriq_volume_write_latency_seconds",
        "Writes, command capsule arrival to completion.",
        m.volumes.iter().map(|v| (labels(v), &v.totals.write_latency)),
    );
    out
}

fn labels(v: &VolumeMetrics) -> String {
    format!("volume=\"{}\",name=\"{}\",pool=\"{}\"", escape(&v.id), escape(&v.name), escape(&v.pool))
}

fn gauge(out: &mut String, name: &str, help: &str, samples: impl IntoIterator<Item = (String, u64)>) {
    header(out, name, help, "gauge");
    for (labels, value) in samples {
        sample(out, name, &labels, value);
    }
}

fn counter(out: &mut String, name: &str, help: &str, samples: impl IntoIterator<Item = (String, u64)>) {
    header(out, name, help, "counter");
    for (labels, value) in samples {
        sample(out, name, &labels, value);
    }
}

fn histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, &'a LatencyHistogram)>,
) {
    header(out, name, help, "histogram");
    for (labels, h) in samples {
        for (bound_us, count) in h.cumulative() {
            let le = bound_us as f64 / 1e6;
            sample(out, &format!("{name}_bucket"), &format!("{labels},le=\"{le}\""), count);
        }
        sample(out, &format!("{name}_bucket"), &format!("{labels},le=\"+Inf\""), h.count());
        sample(out, &format!("{name}_sum"), &labels, h.sum_ns as f64 / 1e9);
        sample(out, &format!("{name}_count"), &labels, h.count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::PoolInfoView;
    use crate::subsys::{Connections, NsTotals};

    #[test]
    fn families_are_well_formed() {
        let mut totals =
            NsTotals { read_cmds: 3, write_cmds: 1, read_bytes: 12288, write_bytes: 4096, ..NsTotals::default() };
        totals.read_latency.counts[3] = 2;
        totals.read_latency.counts[5] = 1;
        totals.read_latency.sum_ns = 50_000;
        let m = Metrics {
            pools: vec![PoolInfoView {
                name: "p".into(),
                id: "x".into(),
                path: "/dev/null".into(),
                source: "config".into(),
                capacity_bytes: 100,
                free_bytes: 40,
                used_bytes: 60,
                extent_bytes: 1,
                device_bytes: 200,
                volumes: 1,
                generation: 3,
                direct: false,
                direct_512: false,
                state: "online".into(),
                error: None,
            }],
            volumes: vec![VolumeMetrics {
                id: "67e55044-10b1-426f-9247-bb680e5fe0c8".into(),
                name: "v\"1".into(),
                pool: "p".into(),
                size_bytes: 60,
                totals,
                connections: Connections { controllers: 1, io_queues: 2 },
            }],
            listeners: 2,
            uptime_s: 5,
        };
        let text = render(&m);
        let labels = "volume=\"67e55044-10b1-426f-9247-bb680e5fe0c8\",name=\"v\\\"1\",pool=\"p\"";
        for line in [
            "fabriq_pool_used_bytes{pool=\"p\"} 60".to_owned(),
            format!("fabriq_volume_read_ops_total{{{labels}}} 3"),
            format!("fabriq_volume_io_queues{{{labels}}} 2"),
            format!("fabriq_volume_read_latency_seconds_bucket{{{labels},le=\"0.000004\"}} 0"),
            format!("fabriq_volume_read_latency_seconds_bucket{{{labels},le=\"0.000008\"}} 2"),
            format!("fabriq_volume_read_latency_seconds_bucket{{{labels},le=\"0.000032\"}} 3"),
            format!("fabriq_volume_read_latency_seconds_bucket{{{labels},le=\"+Inf\"}} 3"),
            format!("fabriq_volume_read_latency_seconds_sum{{{labels}}} 0.00005"),
            format!("fabriq_volume_read_latency_seconds_count{{{labels}}} 3"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert_eq!(text.matches("# TYPE fabriq_volume_read_latency_seconds histogram").count(), 1);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
