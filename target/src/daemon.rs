//! The daemon's life: build the target from the configuration ([`build_target`]: subsystems,
//! namespaces, every listener bound), open the pools and export their volumes ([`Node::open`]),
//! start the data plane ([`DataPlane::start`]: the
//! reactors, attached to the target so that run-time changes reach them), tell systemd it is
//! ready, keep the watchdog fed while every reactor answers, and on SIGTERM or SIGINT stop
//! ([`DataPlane::stop`]): no new connections, in-flight commands finish, backends flush, exit 0
//! (1 if a reactor failed or panicked).
//!
//! [`build_target`] and [`DataPlane`] are public so that a test (or an embedding) can run the
//! data plane for a [`Target`] it built and changes at run time, in its own process:
//!
//! ```text
//!   let target = Arc::new(Target::new(daemon::limits(&section)));   // or build_target(&config)
//!   target.add_subsystem(..); target.add_listener(&listener)?;     // before or after start
//!   let plane = DataPlane::start(&target, &section)?;               // reactors run, accept
//!   ... target.replace_namespace / revoke_host / add_listener ...   // from any thread
//!   assert_eq!(plane.stop(&target), 0);                              // failed reactors
//! ```
//!
//! Invariants: READY=1 is sent only after every listener is bound, every Ready volume is
//! exported (a rebooted node serves its volumes before anyone calls it), the node API listens
//! and every reactor runs; at SIGTERM the node API stops before the data plane; the
//! watchdog is fed only when every reactor answered the previous ping; signals are blocked in
//! every thread and taken synchronously by the main thread (`sigtimedwait`); a target is
//! served by one data plane in its life.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendError};
use crate::buffers::Layout;
use crate::config::{self, Config};
use crate::node::{Node, NodeError};
use crate::notify::Notifier;
use crate::nvme::{Nqn, Nsid};
use crate::reactor::{Inbox, Msg, Reactor, STAGING_BYTES, Setup};
use crate::subsys::{Limits, Namespace, START_BIND_PATIENCE, Subsystem, SubsystemKind, Target};

/// How long a stop waits for connections to finish before flushing and exiting anyway.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How often the main thread checks on the reactors when systemd asks for no watchdog.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Submission queue entries of each reactor's ring.
const RING_ENTRIES: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("subsystem {nqn}: namespace {nsid}: {source}")]
    Backend { nqn: String, nsid: u32, source: BackendError },
    #[error("subsystem {nqn}: {what}")]
    Subsystem { nqn: String, what: String },
    #[error("reactor {id} did not start: {source}")]
    Reactor { id: usize, source: io::Error },
    #[error("signal setup: {0}")]
    Signals(io::Error),
    #[error("pools and volumes: {0}")]
    Node(#[from] NodeError),
    #[error("node API token: {0}")]
    Token(#[from] crate::api::TokenError),
    #[error("node API: cannot listen on {addr}: {source}")]
    ApiBind { addr: SocketAddr, source: io::Error },
}

/// The target's limits as the configuration sets them.
pub fn limits(c: &config::TargetSection) -> Limits {
    Limits {
        mdts_bytes: c.mdts_bytes,
        max_queue_entries: c.max_queue_entries,
        max_io_queues: c.max_io_queues,
        in_capsule_data_bytes: c.in_capsule_data_bytes,
        h2c_window_bytes: c.h2c_window_bytes,
        c2h_slice_bytes: c.c2h_slice_bytes,
        slow_read_us: Limits::SLOW_READ_US,
        reactors: c.reactors,
        discovery_kato_ms: c.keep_alive_default_ms,
    }
}

/// Builds the target from the configuration: binds every listener (in order: port IDs 1, 2,
/// ...), then makes the subsystems and namespaces (opening every backend).
pub fn build_target(config: &Config) -> Result<Target, StartError> {
    let limits = limits(&config.target);
    let target = Target::new(limits);
    // TCP and RDMA alike: reactor 0 accepts on them (RDMA through its RDMA engine) and places
    // I/O queues on every reactor.
    for l in &config.listeners {
        target
            .add_listener_at_start(l, START_BIND_PATIENCE)
            .map_err(|source| StartError::Bind { addr: l.address, source })?;
    }
    for s in &config.subsystems {
        let err = |what: String| StartError::Subsystem { nqn: s.nqn.clone(), what };
        let nqn = Nqn::parse(&s.nqn).map_err(|e| err(e.to_string()))?;
        let serial = s.serial.clone().unwrap_or_else(|| derived_serial(&s.nqn));
        let model = s.model.clone().unwrap_or_else(|| String::from("fabriq"));
        let hosts: BTreeSet<String> = s.hosts.iter().cloned().collect();
        let subsys = Subsystem::new(nqn, SubsystemKind::Nvm, serial, model, s.allow_any_host, hosts);
        for n in &s.namespaces {
            let backend = open_backend(&n.backend, n.block_size)
                .map_err(|source| StartError::Backend { nqn: s.nqn.clone(), nsid: n.nsid, source })?
                .with_faults(n.faults.iter().map(|f| fault(f, n.block_size)).collect());
            let nsid = Nsid::new(n.nsid).ok_or_else(|| err(format!("invalid NSID {}", n.nsid)))?;
            let uuid = n.uuid.unwrap_or_else(|| derived_uuid(&s.nqn, n.nsid));
            let nguid = n.nguid.unwrap_or(*uuid.as_bytes());
            let ns = Namespace::new(nsid, n.block_size, backend, uuid, nguid, limits.reactors);
            subsys.add_namespace(ns).map_err(|_| err(format!("duplicate NSID {}", n.nsid)))?;
        }
        target.add_subsystem(subsys).map_err(|_| err(String::from("duplicate subsystem")))?;
    }
    Ok(target)
}

fn fault(f: &config::Fault, block_size: u32) -> crate::backend::Fault {
    let bs = u64::from(block_size);
    crate::backend::Fault {
        reads: f.reads,
        writes: f.writes,
        offset: f.lba.saturating_mul(bs),
        len: f.blocks.saturating_mul(bs),
    }
}

fn open_backend(b: &config::Backend, block_size: u32) -> Result<Backend, BackendError> {
    match b {
        config::Backend::File { path, size_bytes, direct } => {
            Backend::open_file(path, *size_bytes, block_size, *direct)
        }
        config::Backend::Null { size_bytes } => Ok(Backend::null(*size_bytes)),
        config::Backend::Mem { size_bytes } => Backend::mem(*size_bytes),
    }
}

/// A stable serial number for a subsystem without one: 20 hex digits of a hash of its NQN.
pub(crate) fn derived_serial(nqn: &str) -> String {
    let hash = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, nqn.as_bytes());
    hash.simple().to_string()[..20].to_owned()
}

/// A stable namespace UUID from the subsystem NQN and NSID, so a restart keeps the identity
/// hosts use to tell namespaces apart (multipath, udev links).
fn derived_uuid(nqn: &str, nsid: u32) -> uuid::Uuid {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{nqn}/{nsid}").as_bytes())
}

fn block_signals() -> Result<libc::sigset_t, StartError> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sigset_t; the signal numbers are valid.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(StartError::Signals(io::Error::from_raw_os_error(rc)));
    }
    Ok(set)
}

/// Waits up to `timeout` for a blocked signal; returns it, if one came.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: valid sigset and timespec; siginfo may be null.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// The running reactors of a target.
#[derive(Debug)]
pub struct DataPlane {
    inboxes: Arc<[Arc<Inbox>]>,
    heartbeats: Arc<[AtomicU64]>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl DataPlane {
    /// Starts `section.reactors` reactors for `target` and attaches them to it: reactor 0
    /// accepts on every listener the target has (and on those added later), and run-time
    /// changes poke the reactors. Returns once every reactor runs.
    pub fn start(target: &Arc<Target>, section: &config::TargetSection) -> Result<DataPlane, StartError> {
        let n = section.reactors.max(1);
        let mut inboxes = Vec::with_capacity(n);
        for id in 0..n {
            inboxes.push(Arc::new(Inbox::new().map_err(|source| StartError::Reactor { id, source })?));
        }
        let inboxes: Arc<[Arc<Inbox>]> = inboxes.into();
        let heartbeats: Arc<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
        let loads: Arc<[crate::reactor::Load]> = (0..n).map(|_| crate::reactor::Load::default()).collect();
        // The largest class holds a whole transfer and also each connection's receive staging
        // buffer, which is larger than a small MDTS.
        let largest_bytes = (section.mdts_bytes as usize).max(STAGING_BYTES);
        let layout = Layout::for_budget(section.buffer_pool_bytes as usize, largest_bytes, 64);
        let (started_tx, started_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        for id in 0..n {
            let setup = Setup {
                id,
                target: Arc::clone(target),
                inboxes: Arc::clone(&inboxes),
                heartbeats: Arc::clone(&heartbeats),
                loads: Arc::clone(&loads),
                pool: layout.clone(),
                busy_poll: Duration::from_micros(u64::from(section.busy_poll_us)),
                ring_entries: RING_ENTRIES,
            };
            let started = started_tx.clone();
            let cpu = section.cpus.get(id).copied();
            let thread = std::thread::Builder::new()
                .name(format!("fabriq-r{id}"))
                .spawn(move || {
                    match cpu.map_or(Ok(()), crate::affinity::pin_current_thread).and_then(|()| Reactor::new(setup)) {
                        Ok(reactor) => {
                            if let Some(cpu) = cpu {
                                tracing::info!(reactor = id, cpu, "reactor pinned");
                            }
                            let _ = started.send(Ok(id));
                            reactor.run()
                        }
                        Err(e) => {
                            let _ = started.send(Err((id, io::Error::new(e.kind(), e.to_string()))));
                            Err(e)
                        }
                    }
                })
                .map_err(|source| StartError::Reactor { id, source })?;
            threads.push(thread);
        }
        drop(started_tx);
        let plane = DataPlane { inboxes, heartbeats, threads };
        for _ in 0..n {
            let failure = match started_rx.recv() {
                Ok(Ok(_)) => continue,
                Ok(Err((id, source))) => StartError::Reactor { id, source },
                Err(_) => StartError::Reactor { id: 0, source: io::Error::other("reactor thread ended during start") },
            };
            // The reactors that did start are stopped (they own nothing of the target yet).
            plane.halt();
            return Err(failure);
        }
        target.attach_reactors(Arc::clone(&plane.inboxes));
        Ok(plane)
    }

    /// The reactors' inboxes, by reactor ID.
    pub fn inboxes(&self) -> &Arc<[Arc<Inbox>]> {
        &self.inboxes
    }

    /// Asks every reactor to answer `ping` (see [`DataPlane::answered`]).
    pub fn ping(&self, ping: u64) {
        for inbox in self.inboxes.iter() {
            inbox.send(Msg::Ping(ping));
        }
    }

    /// Whether every reactor answered `ping` or a later one.
    pub fn answered(&self, ping: u64) -> bool {
        self.heartbeats.iter().all(|h| h.load(Ordering::Acquire) >= ping)
    }

    /// Tells every reactor to stop and joins those that do within `STOP_GRACE`.
    fn halt(self) -> usize {
        for inbox in self.inboxes.iter() {
            inbox.send(Msg::Stop);
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut failed = 0;
        for thread in self.threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !thread.is_finished() {
                tracing::warn!("a reactor is still busy after {STOP_GRACE:?}; going on without it");
                continue;
            }
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "reactor failed");
                    failed += 1;
                }
                Err(_) => {
                    tracing::error!("reactor panicked");
                    failed += 1;
                }
            }
        }
        failed
    }

    /// Stops: no new connections, commands in flight finish (for up to `STOP_GRACE`),
    /// connections close, the target is detached and its backends flushed. Returns how many
    /// reactors failed or panicked.
    pub fn stop(self, target: &Target) -> usize {
        let failed = self.halt();
        target.detach_reactors();
        flush_all(target);
        failed
    }
}

/// The `nvme` lines that reach this target, for the operator.
fn connect_hints(target: &Target) -> Vec<String> {
    let mut hints = Vec::new();
    let listeners = target.listeners();
    if let Some(l) = listeners.iter().find(|l| l.discovery_only).or(listeners.first()) {
        hints.push(format!("nvme discover -t {} -a {} -s {}", l.transport, l.advertised.ip(), l.advertised.port()));
    }
    if let Some(l) = listeners.iter().find(|l| !l.discovery_only) {
        for s in target.subsystems() {
            hints.push(format!(
                "nvme connect -t {} -a {} -s {} -n {}",
                l.transport,
                l.advertised.ip(),
                l.advertised.port(),
                s.nqn.as_str()
            ));
        }
    }
    hints
}

/// Runs the daemon until SIGTERM or SIGINT; returns once it has stopped cleanly.
pub fn run(config: Config) -> anyhow::Result<()> {
    let signals = block_signals()?;
    let notifier = Notifier::from_env();
    let target = Arc::new(build_target(&config)?);
    let node = Arc::new(Node::open(&config, Arc::clone(&target)).map_err(StartError::from)?);
    node.restore_listeners();
    let plane = DataPlane::start(&target, &config.target)?;
    let api = start_api(&config, &node)?;
    for hint in connect_hints(&target) {
        println!("{hint}");
    }
    if let Some(n) = &notifier {
        let _ = n.status(&format!(
            "serving {} subsystems on {} listeners",
            target.subsystems().len(),
            target.listeners().len()
        ));
        let _ = n.ready();
    }
    let period = notifier.as_ref().and_then(Notifier::watchdog_interval).map_or(HEARTBEAT, |w| w / 2);
    let mut ping: u64 = 0;
    let signal = loop {
        ping += 1;
        plane.ping(ping);
        if let Some(sig) = wait_signal(&signals, period) {
            break sig;
        }
        let all_alive = plane.answered(ping);
        match (&notifier, all_alive) {
            (Some(n), true) => {
                let _ = n.watchdog();
            }
            (_, false) => tracing::error!("a reactor did not answer within {period:?}; not feeding the watchdog"),
            _ => {}
        }
    };
    tracing::info!(signal, "stopping: finishing in-flight commands");
    if let Some(n) = &notifier {
        let _ = n.stopping();
    }
    if let Some(api) = api {
        api.stop();
    }
    let failed = plane.stop(&target);
    // A reactor that returned an error or panicked (a broken invariant: an assertion) is not a
    // clean stop, whatever the build's panic strategy.
    anyhow::ensure!(failed == 0, "{failed} reactor(s) failed or panicked; see the log");
    Ok(())
}

/// Starts the node API when the configuration enables it; the token comes from `token_file`,
/// or from `<data_dir>/api-token`, generated at the first start.
fn start_api(config: &Config, node: &Arc<Node>) -> Result<Option<crate::api::Server>, StartError> {
    if !config.api.enabled {
        return Ok(None);
    }
    let path = config.token_path();
    let (token, generated) = crate::api::load_or_create_token(&path, config.api.token_file.is_none())?;
    if generated {
        tracing::info!(path = %path.display(), "node API token generated");
    }
    let server = crate::api::start(Arc::clone(node), token, &config.api)
        .map_err(|source| StartError::ApiBind { addr: config.api.address, source })?;
    println!("node API: http://{} (bearer token in {})", server.address, path.display());
    Ok(Some(server))
}

/// Makes everything written durable before the process exits.
fn flush_all(target: &Target) {
    for subsys in target.subsystems() {
        for ns in &subsys.namespaces().namespaces {
            if let Err(error) = ns.backend.sync() {
                tracing::error!(subsystem = %subsys.nqn.as_str(), nsid = ns.nsid.get(), %error, "flush at stop failed");
            }
        }
    }
    tracing::info!("stopped; backends flushed");
}
