//! The daemon's life: build the target from the configuration, bind every listener, open the
//! pools and export their volumes, start the reactors and the node API, tell systemd it is ready, keep the watchdog fed while every reactor answers, and
//! on SIGTERM or SIGINT stop: no new connections, in-flight commands finish, backends flush,
//! exit 0 (1 if a reactor failed or panicked).
//!
//! Invariants: READY=1 is sent only after every listener is bound, every Ready volume is
//! exported (a rebooted node serves its volumes before anyone calls it), the node API listens
//! and every reactor runs; the API stops before the reactors at SIGTERM; the
//! watchdog is fed only when every reactor answered the previous ping; signals are blocked in
//! every thread and taken synchronously by the main thread (`sigtimedwait`).

use std::collections::BTreeSet;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
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
use crate::subsys::{Limits, ListenerInfo, Namespace, Subsystem, SubsystemKind, Target};

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
        reactors: c.reactors,
        discovery_kato_ms: c.keep_alive_default_ms,
    }
}

/// Builds the target's subsystems and namespaces (opening every backend).
fn build_target(config: &Config, listeners: Vec<ListenerInfo>) -> Result<Target, StartError> {
    let limits = limits(&config.target);
    let target = Target::new(limits, listeners);
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

fn bind_listeners(config: &Config) -> Result<Vec<(OwnedFd, ListenerInfo)>, StartError> {
    let mut out = Vec::with_capacity(config.listeners.len());
    for (index, l) in config.listeners.iter().enumerate() {
        let bind_err = |source| StartError::Bind { addr: l.address, source };
        let socket = TcpListener::bind(l.address).map_err(bind_err)?;
        let bound = socket.local_addr().map_err(bind_err)?;
        let advertised = match l.advertise {
            Some(mut a) if a.port() == 0 => {
                a.set_port(bound.port());
                a
            }
            Some(a) => a,
            None => bound,
        };
        let info = ListenerInfo { port_id: index as u16 + 1, bound, advertised, discovery_only: l.discovery_only };
        tracing::info!(address = %bound, advertised = %advertised, discovery_only = l.discovery_only, "listening");
        out.push((OwnedFd::from(socket), info));
    }
    Ok(out)
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

struct Running {
    inboxes: Arc<[Arc<Inbox>]>,
    heartbeats: Arc<[AtomicU64]>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

fn start_reactors(
    config: &Config,
    target: &Arc<Target>,
    mut listeners: Vec<(OwnedFd, ListenerInfo)>,
) -> Result<Running, StartError> {
    let n = config.target.reactors.max(1);
    let mut inboxes = Vec::with_capacity(n);
    for id in 0..n {
        inboxes.push(Arc::new(Inbox::new().map_err(|source| StartError::Reactor { id, source })?));
    }
    let inboxes: Arc<[Arc<Inbox>]> = inboxes.into();
    let heartbeats: Arc<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
    // The largest class holds a whole transfer and also each connection's receive staging
    // buffer, which is larger than a small MDTS.
    let largest_bytes = (config.target.mdts_bytes as usize).max(STAGING_BYTES);
    let layout = Layout::for_budget(config.target.buffer_pool_bytes as usize, largest_bytes, 64);
    let (started_tx, started_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(n);
    for id in 0..n {
        let setup = Setup {
            id,
            target: Arc::clone(target),
            inboxes: Arc::clone(&inboxes),
            heartbeats: Arc::clone(&heartbeats),
            listeners: if id == 0 { std::mem::take(&mut listeners) } else { Vec::new() },
            pool: layout.clone(),
            busy_poll: Duration::from_micros(u64::from(config.target.busy_poll_us)),
            ring_entries: RING_ENTRIES,
        };
        let started = started_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fabriq-r{id}"))
            .spawn(move || match Reactor::new(setup) {
                Ok(reactor) => {
                    let _ = started.send(Ok(id));
                    reactor.run()
                }
                Err(e) => {
                    let _ = started.send(Err((id, io::Error::new(e.kind(), e.to_string()))));
                    Err(e)
                }
            })
            .map_err(|source| StartError::Reactor { id, source })?;
        threads.push(thread);
    }
    drop(started_tx);
    for _ in 0..n {
        match started_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err((id, source))) => return Err(StartError::Reactor { id, source }),
            Err(_) => {
                return Err(StartError::Reactor {
                    id: 0,
                    source: io::Error::other("reactor thread ended during start"),
                });
            }
        }
    }
    Ok(Running { inboxes, heartbeats, threads })
}

/// The `nvme` lines that reach this target, for the operator.
fn connect_hints(target: &Target) -> Vec<String> {
    let mut hints = Vec::new();
    if let Some(l) = target.listeners.iter().find(|l| l.discovery_only).or(target.listeners.first()) {
        hints.push(format!("nvme discover -t tcp -a {} -s {}", l.advertised.ip(), l.advertised.port()));
    }
    if let Some(l) = target.listeners.iter().find(|l| !l.discovery_only) {
        for s in target.subsystems() {
            hints.push(format!(
                "nvme connect -t tcp -a {} -s {} -n {}",
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
    let listeners = bind_listeners(&config)?;
    let infos = listeners.iter().map(|(_, info)| info.clone()).collect();
    let target = Arc::new(build_target(&config, infos)?);
    let node = Arc::new(Node::open(&config, Arc::clone(&target)).map_err(StartError::from)?);
    let running = start_reactors(&config, &target, listeners)?;
    node.restore_listeners();
    let api = start_api(&config, &node)?;
    for hint in connect_hints(&target) {
        println!("{hint}");
    }
    if let Some(n) = &notifier {
        let _ = n.status(&format!(
            "serving {} subsystems on {} listeners",
            target.subsystems().len(),
            target.listeners.len()
        ));
        let _ = n.ready();
    }
    let period = notifier.as_ref().and_then(Notifier::watchdog_interval).map_or(HEARTBEAT, |w| w / 2);
    let mut ping: u64 = 0;
    let signal = loop {
        for inbox in running.inboxes.iter() {
            inbox.send(Msg::Ping(ping + 1));
        }
        ping += 1;
        if let Some(sig) = wait_signal(&signals, period) {
            break sig;
        }
        let all_alive = running.heartbeats.iter().all(|h| h.load(Ordering::Acquire) >= ping);
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
    let failed = stop(running, &target);
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

/// Stops the reactors, flushes the backends, and returns how many reactors failed.
fn stop(running: Running, target: &Target) -> usize {
    for inbox in running.inboxes.iter() {
        inbox.send(Msg::Stop);
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut failed = 0;
    for thread in running.threads {
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !thread.is_finished() {
            tracing::warn!("a reactor is still busy after {STOP_GRACE:?}; exiting anyway after the flush");
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
    flush_all(target);
    failed
}

/// Makes everything written durable before the process exits.
fn flush_all(target: &Target) {
    for subsys in target.subsystems() {
        for ns in &subsys.namespaces().namespaces {
            if let Some(fd) = ns.backend.raw_fd() {
                // SAFETY: fdatasync on a descriptor the backend owns and keeps open.
                if unsafe { libc::fdatasync(fd) } != 0 {
                    tracing::error!(subsystem = %subsys.nqn.as_str(), nsid = ns.nsid.get(), error = %io::Error::last_os_error(), "flush at stop failed");
                }
            }
        }
    }
    tracing::info!("stopped; backends flushed");
}
