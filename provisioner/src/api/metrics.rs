//! `/metrics`: the provisioner's numbers in the Prometheus text exposition format (0.0.4):
//! API requests by method, route and status, and their latency by route (a histogram);
//! volumes by state; nodes by health, and each node's capacity, free space and orphans;
//! whether this provisioner leads; reconciler passes, actions and failures.
//!
//! Invariants: every family is written with its `# HELP` and `# TYPE` lines once, before its
//! samples; label values are escaped as the format requires; histogram buckets are
//! cumulative and end with `+Inf` equal to `_count`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fabriq_http::prometheus::{escape, header, sample};

use crate::service::{Error, Service};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_S: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS_S.len()],
    count: u64,
    sum_s: f64,
}

/// What the request middleware counts.
#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl HttpMetrics {
    /// Counts one answered request. `route` is the matched path template (`/v1/volumes/{name}`),
    /// never the raw path: names would make the label set unbounded.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let seconds = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = latency.entry(route.to_owned()).or_default();
        for (i, bound) in BUCKETS_S.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum_s += seconds;
    }
}

/// Renders every family.
pub fn render(s: &Service, http: &HttpMetrics) -> Result<String, Error> {
    let mut out = String::with_capacity(8192);
    header(&mut out, "fabriq_provisioner_requests_total", "API requests answered.", "counter");
    for ((method, route, status), n) in http.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let labels = format!("method=\"{}\",route=\"{}\",status=\"{status}\"", escape(method), escape(route));
        sample(&mut out, "fabriq_provisioner_requests_total", &labels, n);
    }
    let name = "fabriq_provisioner_request_duration_seconds";
    header(&mut out, name, "API request latency, arrival to answer.", "histogram");
    for (route, h) in http.latency.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let labels = format!("route=\"{}\"", escape(route));
        for (bound, count) in BUCKETS_S.iter().zip(h.counts) {
            sample(&mut out, &format!("{name}_bucket"), &format!("{labels},le=\"{bound}\""), count);
        }
        sample(&mut out, &format!("{name}_bucket"), &format!("{labels},le=\"+Inf\""), h.count);
        sample(&mut out, &format!("{name}_sum"), &labels, h.sum_s);
        sample(&mut out, &format!("{name}_count"), &labels, h.count);
    }

    header(&mut out, "fabriq_provisioner_volumes", "Volumes by state.", "gauge");
    for (state, n) in s.volume_states()? {
        sample(&mut out, "fabriq_provisioner_volumes", &format!("state=\"{state}\""), n);
    }

    let nodes = s.list_nodes()?;
    header(&mut out, "fabriq_provisioner_nodes", "Registered nodes by health.", "gauge");
    for health in ["healthy", "unreachable", "unknown"] {
        let n = nodes.iter().filter(|v| v.health == health).count();
        sample(&mut out, "fabriq_provisioner_nodes", &format!("health=\"{health}\""), n);
    }
    let per_node = |out: &mut String, name: &str, help: &str, f: &dyn Fn(&crate::service::NodeView) -> u64| {
        header(out, name, help, "gauge");
        for n in &nodes {
            sample(out, name, &format!("node=\"{}\"", escape(&n.name)), f(n));
        }
    };
    per_node(&mut out, "fabriq_provisioner_node_up", "1 if the node's last look succeeded.", &|n| {
        u64::from(n.health == "healthy")
    });
    per_node(&mut out, "fabriq_provisioner_node_capacity_bytes", "The node's pool capacity, as last seen.", &|n| {
        n.capacity_bytes
    });
    per_node(&mut out, "fabriq_provisioner_node_free_bytes", "The node's free pool space, as last seen.", &|n| {
        n.free_bytes
    });
    per_node(&mut out, "fabriq_provisioner_node_volumes", "Volumes placed on the node.", &|n| n.volumes as u64);
    per_node(
        &mut out,
        "fabriq_provisioner_node_orphans",
        "Node volumes named like the provisioner's that no record explains.",
        &|n| n.orphans.len() as u64,
    );

    header(&mut out, "fabriq_provisioner_leader", "1 while this provisioner leads.", "gauge");
    sample(&mut out, "fabriq_provisioner_leader", "", u64::from(s.leadership.is_leader()));
    let c = &s.counters;
    for (name, help, value) in [
        ("fabriq_provisioner_reconcile_passes_total", "Reconciler passes.", c.passes.load(Ordering::Relaxed)),
        (
            "fabriq_provisioner_reconcile_actions_total",
            "Steps the reconciler took on nodes and records.",
            c.actions.load(Ordering::Relaxed),
        ),
        (
            "fabriq_provisioner_reconcile_failures_total",
            "Reconciler steps that failed (retried next pass).",
            c.failures.load(Ordering::Relaxed),
        ),
    ] {
        header(&mut out, name, help, "counter");
        sample(&mut out, name, "", value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative() {
        let m = HttpMetrics::default();
        m.record("GET", "/v1/volumes", 200, Duration::from_micros(500));
        m.record("GET", "/v1/volumes", 200, Duration::from_millis(30));
        m.record("POST", "/v1/volumes", 507, Duration::from_secs(20));
        let latency = m.latency.lock().unwrap();
        let h = &latency["/v1/volumes"];
        assert_eq!(h.count, 3);
        assert_eq!(h.counts[0], 1, "<= 1 ms");
        assert_eq!(h.counts[3], 1, "<= 25 ms holds only the first");
        assert_eq!(h.counts[4], 2, "<= 50 ms");
        assert_eq!(h.counts[BUCKETS_S.len() - 1], 2, "20 s is only in +Inf");
        assert_eq!(m.requests.lock().unwrap()[&("POST".into(), "/v1/volumes".into(), 507)], 1);
    }
}
