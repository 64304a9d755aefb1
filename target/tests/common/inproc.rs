//! The target run in the test's process: the test builds a [`Target`] (subsystems,
//! namespaces), the harness binds one NVMe/TCP listener on loopback and starts the data plane
//! with `daemon::DataPlane`, exactly as the daemon does; the test then changes the target
//! through its live API while `fabriq_bench::host` connections are up. Dropping the handle
//! stops the data plane and checks that no reactor failed.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use fabriq_target::backend::{Backend, Extent};
use fabriq_target::config::{Listener, TargetSection, Transport};
use fabriq_target::daemon::{self, DataPlane};
use fabriq_target::nvme::{Nqn, Nsid};
use fabriq_target::subsys::{Limits, Namespace, Subsystem, SubsystemKind, Target};

pub struct InProc {
    pub target: Arc<Target>,
    plane: Option<DataPlane>,
    /// The NVMe/TCP listener (port ID 1).
    pub addr: SocketAddr,
    /// The number of reactors (namespaces need one counter slot each).
    pub reactors: usize,
    pub dir: tempfile::TempDir,
}

/// What the harness runs with: a small buffer pool, no busy polling (two shared cores).
pub fn section(reactors: usize) -> TargetSection {
    TargetSection { reactors, buffer_pool_bytes: 16 << 20, busy_poll_us: 0, ..TargetSection::default() }
}

/// A listener on loopback, the port chosen by the kernel.
pub fn loopback(discovery_only: bool) -> Listener {
    Listener { transport: Transport::Tcp, address: "127.0.0.1:0".parse().unwrap(), advertise: None, discovery_only }
}

impl InProc {
    /// Builds the target with `build` (given the target and a temporary directory), binds
    /// the listener, starts `reactors` reactors.
    pub fn start(reactors: usize, build: impl FnOnce(&Target, &std::path::Path)) -> InProc {
        InProc::start_with(reactors, |_| {}, build)
    }

    /// As [`InProc::start`], with the limits the configuration gives changed by `limits`
    /// first (some are not configurable: the tests reach them here).
    pub fn start_with(
        reactors: usize,
        limits: impl FnOnce(&mut Limits),
        build: impl FnOnce(&Target, &std::path::Path),
    ) -> InProc {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .try_init();
        let section = section(reactors);
        let mut target_limits = daemon::limits(&section);
        limits(&mut target_limits);
        let target = Arc::new(Target::new(target_limits));
        let dir = tempfile::tempdir().unwrap();
        build(&target, dir.path());
        let addr = target.add_listener(&loopback(false)).unwrap().bound;
        let plane = DataPlane::start(&target, &section).unwrap();
        InProc { target, plane: Some(plane), addr, reactors, dir }
    }

    /// Stops the data plane (idempotent); panics if a reactor failed.
    pub fn stop(&mut self) {
        if let Some(plane) = self.plane.take() {
            assert_eq!(plane.stop(&self.target), 0, "a reactor failed or panicked");
        }
    }

    pub fn subsystem(&self, nqn: &str) -> Arc<Subsystem> {
        self.target.subsystem(nqn).unwrap_or_else(|| panic!("no subsystem {nqn}"))
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Do not wait on reactors that may hold connections the panicking test left open.
            if let Some(plane) = self.plane.take() {
                std::mem::forget(plane);
            }
            return;
        }
        self.stop();
    }
}

pub fn nqn(s: &str) -> Nqn {
    Nqn::parse(s).unwrap()
}

/// An NVM subsystem open to `hosts` (or to any host with `allow_any`).
pub fn subsystem(name: &str, allow_any: bool, hosts: &[&str]) -> Subsystem {
    let hosts = hosts.iter().map(|h| h.to_string()).collect();
    Subsystem::new(nqn(name), SubsystemKind::Nvm, "FQLIVE".into(), "fabriq live".into(), allow_any, hosts)
}

/// Namespace `nsid` of 512-byte blocks on `backend`, with `reactors` counter slots.
pub fn namespace(nsid: u32, backend: Backend, reactors: usize) -> Namespace {
    let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("live/{nsid}").as_bytes());
    Namespace::new(Nsid::new(nsid).unwrap(), 512, backend, uuid, *uuid.as_bytes(), reactors)
}

/// A `mem` namespace of `bytes`.
pub fn mem_namespace(nsid: u32, bytes: u64, reactors: usize) -> Namespace {
    namespace(nsid, Backend::mem(bytes).unwrap(), reactors)
}

/// A pool's device: a file of `bytes` in `dir`, opened read-write (not O_DIRECT: tmpfs).
pub fn device_file(dir: &std::path::Path, bytes: u64) -> (std::path::PathBuf, Arc<OwnedFd>) {
    let path = dir.join("pool.img");
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    file.set_len(bytes).unwrap();
    (path, Arc::new(OwnedFd::from(file)))
}

/// Extents of the given `(len, device_offset)` pieces, in volume order.
pub fn extents(pieces: &[(u64, u64)]) -> Vec<Extent> {
    let mut offset = 0;
    pieces
        .iter()
        .map(|&(len, device_offset)| {
            let e = Extent { offset, device_offset, len };
            offset += len;
            e
        })
        .collect()
}

/// A volume backend over `device` made of `pieces`.
pub fn volume(device: &Arc<OwnedFd>, pieces: &[(u64, u64)]) -> Backend {
    let size = pieces.iter().map(|p| p.0).sum();
    Backend::volume(Arc::clone(device), false, extents(pieces), size)
}
