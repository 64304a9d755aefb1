//! fabriq-target: a userspace NVMe over Fabrics target.
//!
//! Layers, from the wire inwards:
//! - [`nvme`]: the NVMe and NVMe over Fabrics specifications as types, with no I/O.
//! - [`tcp`]: the NVMe/TCP transport binding (PDUs, digests, the per-connection queue).
//! - [`rdma`]: the NVMe/RDMA transport binding (CM private data, SGLs, the queue pair;
//!   the verbs engine with the `rdma` feature).
//!
//! Around them, the control path:
//! - [`config`]: the daemon's TOML configuration, parsed and validated.
//! - [`subsys`]: the target's object model (subsystems, namespaces, hosts, listeners), changed
//!   at run time; [`stats`]: the per-namespace counters it exports.
//! - [`daemon`]: the daemon's life, and the data plane ([`daemon::DataPlane`]) for a target.
//! - [`notify`]: systemd's readiness and watchdog notifications; [`affinity`]: CPU lists and
//!   pinning reactors to CPUs.
//! - [`storage`]: pools and volumes, with crash-safe metadata on the pool's device.
//! - [`node`]: the node manager: pools, volumes and their exports, kept in step with the target.
//! - [`api`]: the node REST API over the node manager.

pub mod affinity;
pub mod api;
pub mod backend;
pub mod buffers;
pub mod config;
pub mod ctrl;
pub mod daemon;
pub mod node;
pub mod notify;
pub mod nvme;
pub mod rdma;
pub mod reactor;
pub mod stats;
pub mod storage;
pub mod subsys;
pub mod tcp;
