//! The target's object model: a [`Target`] holds NVM subsystems (each with an allow list of host
//! NQNs and namespaces backed by a [`Backend`]), the discovery subsystem and the listeners.
//!
//! Shared by every reactor, and changed at run time by the control plane (the node API, from its
//! own thread): subsystems, namespaces, hosts and listeners come and go while hosts are
//! connected. Nothing here is touched per I/O except a namespace's counters ([`NsStats`]: one
//! slot per reactor, single writer); a queue keeps its own snapshot of its subsystem's
//! namespace table ([`Subsystem::namespaces`]) and looks at the generation number to notice
//! changes, so the I/O path takes no lock.
//!
//! ```text
//!  control plane thread                         reactors
//!  --------------------                         --------
//!  Subsystem::replace_namespace --> new NsTable (generation + 1)     queues pick it up at their
//!       |                                                            next capsule (`Tables`)
//!       +--> each controller: changed NSID list, event queued  --+
//!  Subsystem::revoke_host ------> controllers killed (dead flag) --+--> Msg::Poke to the reactors
//!  Target::remove_subsystem ----> controllers killed, genctr + 1 --+    (Hub): queues poll, AERs
//!  Target::add_listener --------> socket bound here, Msg::Listen -----> complete, dead controllers'
//!                   (rdma) CM id bound here, Msg::RdmaListen ------> queues close; reactor 0
//!  Target::remove_listener -----> shutdown() here, Msg::Unlisten -----> accepts on listeners (its
//!                                                                       RDMA engine on CM ids)
//! ```
//!
//! Invariants:
//! - subsystem NQNs are unique; NSIDs are unique within a subsystem; port IDs are never reused;
//! - the discovery log generation counter changes whenever what discovery reports may have
//!   changed (subsystems, their hosts, listeners), and reactors are poked so that discovery
//!   controllers' held events complete;
//! - a controller exists only for a host its subsystem allows, in a subsystem still registered:
//!   registration re-checks access under the access lock that every access change takes, and
//!   an access change or a removal kills the controllers it disallows;
//! - every change that a reactor must act on is followed by a poke of the reactors concerned
//!   (once the data plane is attached, [`Target::attach_reactors`]); before that, there are no
//!   connections to act on.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::config;
use crate::ctrl::Controller;
use crate::nvme::{CntlId, DISCOVERY_NQN, Nqn, Nsid};
use crate::reactor::{Inbox, Msg};
pub use crate::stats::{LatencyHistogram, NsStats, NsTotals};

/// How long a starting daemon waits for a listening address that is still in use (see
/// [`Target::add_listener_at_start`]).
pub const START_BIND_PATIENCE: Duration = Duration::from_secs(5);
/// How often that wait tries the address again.
pub const BIND_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// Limits every controller of this target advertises and enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum data transfer of one command, bytes (a power of two, >= 4096).
    pub mdts_bytes: u32,
    /// Maximum entries of a queue (CAP.MQES + 1).
    pub max_queue_entries: u16,
    /// Maximum I/O queues a controller grants (Number of Queues feature).
    pub max_io_queues: u16,
    /// In-capsule data an I/O queue accepts, bytes (IOCCSZ = (64 + this) / 16).
    pub in_capsule_data_bytes: u32,
    /// NVMe/TCP: R2T-requested write data a connection may have outstanding, bytes.
    pub h2c_window_bytes: u32,
    /// NVMe/TCP: most read data one send carries while a queue's reads wait long for their
    /// data (see `slow_read_us`); 0 never slices.
    pub c2h_slice_bytes: u32,
    /// NVMe/TCP: the mean wait of a queue's reads for their data (capsule to data ready),
    /// microseconds, from which its read data goes out in `c2h_slice_bytes` slices.
    pub slow_read_us: u32,
    /// Number of reactors (per-reactor counter slots).
    pub reactors: usize,
    /// Keep-alive time-out of a discovery controller whose host asks for none: stale
    /// discovery controllers are reaped.
    pub discovery_kato_ms: u32,
}

impl Limits {
    /// In-capsule data the admin queue accepts: the Linux host sends Connect data in the
    /// capsule and assumes 8 KiB before it has read IOCCSZ.
    pub const ADMIN_IN_CAPSULE_DATA_BYTES: u32 = 8192;

    /// A read that waits this long for its data is waiting on a device, not on the
    /// reactor: the null namespace and memory-speed files answer within the same turn or
    /// a few tens of microseconds, a disk busy with a deep queue of large reads takes
    /// hundreds (ext4 on this project's virtual disk: about 600 µs for a 2 MiB merge).
    pub const SLOW_READ_US: u32 = 200;

    /// MDTS as the Identify Controller field: log2 of the size in units of the 4 KiB page.
    pub fn mdts_field(&self) -> u8 {
        (self.mdts_bytes / 4096).trailing_zeros() as u8
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            mdts_bytes: 128 * 1024,
            max_queue_entries: 128,
            max_io_queues: 8,
            in_capsule_data_bytes: 8192,
            h2c_window_bytes: 512 * 1024,
            c2h_slice_bytes: 256 * 1024,
            slow_read_us: Limits::SLOW_READ_US,
            reactors: 1,
            discovery_kato_ms: 120_000,
        }
    }
}

/// One listening socket's identity as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The NVMe-oF port identifier (PORTID): 1, 2, ... in the order listeners were added;
    /// never reused for another listener in the target's life.
    pub port_id: u16,
    pub bound: SocketAddr,
    /// What discovery log entries show (the bound address when not configured).
    pub advertised: SocketAddr,
    /// Serves only the discovery subsystem: NVM subsystems are not listed on it.
    pub discovery_only: bool,
    /// The transport binding the listener speaks (discovery log entries carry it).
    pub transport: crate::config::Transport,
}

#[derive(Debug)]
pub struct Namespace {
    pub nsid: Nsid,
    pub block_size: u32,
    pub backend: Backend,
    pub uuid: uuid::Uuid,
    pub nguid: [u8; 16],
    /// Shared with the namespace that replaces this one ([`Subsystem::replace_namespace`]), so
    /// that counters survive a volume's growth.
    pub stats: Arc<NsStats>,
}

impl Namespace {
    pub fn new(
        nsid: Nsid,
        block_size: u32,
        backend: Backend,
        uuid: uuid::Uuid,
        nguid: [u8; 16],
        reactors: usize,
    ) -> Namespace {
        assert!(block_size == 512 || block_size == 4096, "block size {block_size}");
        assert_eq!(backend.size_bytes() % u64::from(block_size), 0);
        Namespace { nsid, block_size, backend, uuid, nguid, stats: Arc::new(NsStats::new(reactors)) }
    }

    pub fn blocks(&self) -> u64 {
        self.backend.size_bytes() / u64::from(self.block_size)
    }

    pub fn block_shift(&self) -> u32 {
        self.block_size.trailing_zeros()
    }
}

/// A subsystem's namespaces, ascending by NSID.
#[derive(Debug, Default)]
pub struct NsTable {
    pub generation: u64,
    pub namespaces: Vec<Arc<Namespace>>,
}

impl NsTable {
    pub fn find(&self, nsid: u32) -> Option<(usize, &Arc<Namespace>)> {
        let i = self.namespaces.binary_search_by_key(&nsid, |ns| ns.nsid.get()).ok()?;
        Some((i, &self.namespaces[i]))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubsystemKind {
    Nvm,
    Discovery,
}

#[derive(Debug)]
struct Access {
    allow_any_host: bool,
    hosts: BTreeSet<String>,
    /// Removed from its target: no controller may be created any more.
    closed: bool,
}

impl Access {
    fn allows(&self, hostnqn: &str) -> bool {
        !self.closed && (self.allow_any_host || self.hosts.contains(hostnqn))
    }
}

/// Live controllers and their connected I/O queues (a subsystem's, or the target's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connections {
    pub controllers: usize,
    pub io_queues: usize,
}

/// Why [`Subsystem::register_controller`] made no controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("the host is not allowed")]
    NotAllowed,
    #[error("the subsystem was removed")]
    Removed,
    #[error("every controller ID is in use")]
    NoId,
}

#[derive(Debug)]
pub struct Subsystem {
    pub nqn: Nqn,
    pub kind: SubsystemKind,
    pub serial: String,
    pub model: String,
    access: RwLock<Access>,
    namespaces: RwLock<Arc<NsTable>>,
    ns_generation: AtomicU64,
    controllers: Mutex<Controllers>,
    /// The target it was added to: its discovery counter and its reactors.
    hub: OnceLock<Arc<Hub>>,
}

#[derive(Debug, Default)]
struct Controllers {
    next: u16,
    live: BTreeMap<u16, Weak<Controller>>,
}

impl Subsystem {
    pub fn new(
        nqn: Nqn,
        kind: SubsystemKind,
        serial: String,
        model: String,
        allow_any_host: bool,
        hosts: BTreeSet<String>,
    ) -> Subsystem {
        Subsystem {
            nqn,
            kind,
            serial,
            model,
            access: RwLock::new(Access { allow_any_host, hosts, closed: false }),
            namespaces: RwLock::new(Arc::new(NsTable::default())),
            ns_generation: AtomicU64::new(0),
            controllers: Mutex::new(Controllers { next: CntlId::MIN_DYNAMIC.get(), live: BTreeMap::new() }),
            hub: OnceLock::new(),
        }
    }

    /// Whether `hostnqn` may connect (the discovery subsystem admits every host).
    pub fn allows(&self, hostnqn: &str) -> bool {
        if self.kind == SubsystemKind::Discovery {
            return true;
        }
        self.access.read().expect("access lock").allows(hostnqn)
    }

    /// Whether any host may connect, and the allow list, in NQN order.
    pub fn access(&self) -> (bool, Vec<String>) {
        let access = self.access.read().expect("access lock");
        (access.allow_any_host, access.hosts.iter().cloned().collect())
    }

    /// Adds `hostnqn` to the allow list; true if it was not on it. Hosts already connected
    /// are not disturbed.
    pub fn allow_host(&self, hostnqn: &str) -> bool {
        let added = self.access.write().expect("access lock").hosts.insert(hostnqn.to_owned());
        if added {
            self.access_changed();
        }
        added
    }

    /// Removes `hostnqn` from the allow list; true if it was on it. The host's controllers on
    /// this subsystem are torn down (their admin and I/O queues close) unless the subsystem
    /// still admits it (`allow_any_host`); nobody else's are touched.
    pub fn revoke_host(&self, hostnqn: &str) -> bool {
        let removed = self.access.write().expect("access lock").hosts.remove(hostnqn);
        if removed {
            self.access_changed();
        }
        removed
    }

    /// Opens the subsystem to every host, or only to its allow list (hosts not on it lose
    /// their controllers).
    pub fn set_allow_any_host(&self, allow_any_host: bool) {
        let changed = {
            let mut access = self.access.write().expect("access lock");
            std::mem::replace(&mut access.allow_any_host, allow_any_host) != allow_any_host
        };
        if changed {
            self.access_changed();
        }
    }

    /// After a change of the allow list: controllers of hosts no longer allowed go, and
    /// discovery reports the new list. The change was made under the access lock's write
    /// side, so a controller registered after it saw the new list.
    fn access_changed(&self) {
        let killed = self.kill_controllers(|ctrl| !self.allows(ctrl.hostnqn.as_str()));
        if let Some(hub) = self.hub.get() {
            if killed > 0 {
                tracing::info!(subsystem = %self.nqn.as_str(), controllers = killed, "host access revoked; controllers torn down");
            }
            hub.discovery_changed();
        }
    }

    /// Kills the live controllers `which` picks; returns how many. Their queues close when
    /// their reactors look (every reactor is poked).
    fn kill_controllers(&self, which: impl Fn(&Controller) -> bool) -> usize {
        let mut killed = 0;
        for ctrl in self.controllers() {
            if which(&ctrl) && !ctrl.is_dead() {
                ctrl.kill();
                killed += 1;
            }
        }
        if killed > 0
            && let Some(hub) = self.hub.get()
        {
            hub.poke_all();
        }
        killed
    }

    /// Closes the subsystem for good (it was removed from its target): no new controllers,
    /// the live ones torn down.
    fn close(&self) -> usize {
        self.access.write().expect("access lock").closed = true;
        self.kill_controllers(|_| true)
    }

    /// The current namespace table; cheap to clone and to keep.
    pub fn namespaces(&self) -> Arc<NsTable> {
        Arc::clone(&self.namespaces.read().expect("namespace lock"))
    }

    /// The generation of the namespace table: a queue compares it with its snapshot's.
    pub fn ns_generation(&self) -> u64 {
        self.ns_generation.load(Ordering::Acquire)
    }

    /// Publishes a new namespace table made by `edit` from the current list; `edit` returns
    /// false to leave everything as it is.
    fn edit_namespaces(&self, edit: impl FnOnce(&mut Vec<Arc<Namespace>>) -> bool) -> bool {
        let mut table = self.namespaces.write().expect("namespace lock");
        let mut namespaces = table.namespaces.clone();
        if !edit(&mut namespaces) {
            return false;
        }
        namespaces.sort_by_key(|n| n.nsid.get());
        let generation = self.ns_generation.load(Ordering::Relaxed) + 1;
        *table = Arc::new(NsTable { generation, namespaces });
        self.ns_generation.store(generation, Ordering::Release);
        true
    }

    /// Adds a namespace; refuses a duplicate NSID (returns the namespace back). Connected
    /// controllers are told (changed namespace list, namespace attribute event).
    pub fn add_namespace(&self, ns: Namespace) -> Result<(), Box<Namespace>> {
        let nsid = ns.nsid.get();
        let mut ns = Some(ns);
        let added = self.edit_namespaces(|list| {
            if list.iter().any(|n| n.nsid.get() == nsid) {
                return false;
            }
            list.push(Arc::new(ns.take().expect("added once")));
            true
        });
        match ns {
            Some(ns) if !added => Err(Box::new(ns)),
            _ => {
                self.namespace_changed(nsid);
                Ok(())
            }
        }
    }

    /// Removes namespace `nsid`; commands in flight on it finish (their queues hold the old
    /// table). Connected controllers are told.
    pub fn remove_namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        let mut removed = None;
        self.edit_namespaces(|list| {
            let Some(i) = list.iter().position(|n| n.nsid.get() == nsid) else { return false };
            removed = Some(list.remove(i));
            true
        });
        if removed.is_some() {
            self.namespace_changed(nsid);
        }
        removed
    }

    /// Replaces the namespace with `ns`'s NSID by `ns` (a grown volume: new extents, new
    /// size); commands in flight finish on the old one. Refuses (returns it back) when no
    /// namespace has that NSID. Connected controllers are told, so hosts rescan and see the
    /// new size.
    ///
    /// The namespace stays the same namespace: it keeps the old one's identity (UUID and
    /// NGUID, whatever `ns` says: a host that finds another identity under the NSID on its
    /// rescan drops the disk and makes a new one; to give an NSID a new identity, remove and
    /// add) and its counters.
    pub fn replace_namespace(&self, ns: Namespace) -> Result<(), Box<Namespace>> {
        let nsid = ns.nsid.get();
        let mut ns = Some(ns);
        let replaced = self.edit_namespaces(|list| {
            let Some(slot) = list.iter_mut().find(|n| n.nsid.get() == nsid) else { return false };
            let mut new = ns.take().expect("replaced once");
            (new.uuid, new.nguid) = (slot.uuid, slot.nguid);
            new.stats = Arc::clone(&slot.stats);
            *slot = Arc::new(new);
            true
        });
        match ns {
            Some(ns) if !replaced => Err(Box::new(ns)),
            _ => {
                self.namespace_changed(nsid);
                Ok(())
            }
        }
    }

    /// Tells every live controller that namespace `nsid` changed, and pokes the reactors of
    /// those with an event due.
    fn namespace_changed(&self, nsid: u32) {
        let mut due = BTreeSet::new();
        for ctrl in self.controllers() {
            if ctrl.namespace_changed(nsid) {
                due.insert(ctrl.admin_reactor);
            }
        }
        if let Some(hub) = self.hub.get() {
            for reactor in due {
                hub.poke(reactor);
            }
        }
    }

    /// Allocates a controller ID (dynamic model) and registers the controller made with it,
    /// if `hostnqn` is allowed and the subsystem still registered: both are checked again
    /// here, under the access lock, so that no controller outlives an access change.
    pub fn register_controller(
        &self,
        hostnqn: &str,
        make: impl FnOnce(u16) -> Arc<Controller>,
    ) -> Result<Arc<Controller>, RegisterError> {
        let access = self.access.read().expect("access lock");
        if access.closed {
            return Err(RegisterError::Removed);
        }
        if self.kind == SubsystemKind::Nvm && !access.allows(hostnqn) {
            return Err(RegisterError::NotAllowed);
        }
        let mut ctrls = self.controllers.lock().expect("controller lock");
        ctrls.live.retain(|_, weak| weak.strong_count() > 0);
        let (min, max) = (CntlId::MIN_DYNAMIC.get(), CntlId::MAX_DYNAMIC.get());
        let span = usize::from(max - min) + 1;
        for _ in 0..span {
            let id = ctrls.next;
            ctrls.next = if id >= max { min } else { id + 1 };
            if let std::collections::btree_map::Entry::Vacant(e) = ctrls.live.entry(id) {
                let ctrl = make(id);
                e.insert(Arc::downgrade(&ctrl));
                return Ok(ctrl);
            }
        }
        Err(RegisterError::NoId)
    }

    pub fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.controllers.lock().expect("controller lock").live.get(&cntlid).and_then(Weak::upgrade)
    }

    pub fn forget_controller(&self, cntlid: u16) {
        self.controllers.lock().expect("controller lock").live.remove(&cntlid);
    }

    /// The live controllers (for teardown and for reports).
    pub fn controllers(&self) -> Vec<Arc<Controller>> {
        self.controllers.lock().expect("controller lock").live.values().filter_map(Weak::upgrade).collect()
    }

    /// How many controllers are live and how many I/O queues they have connected.
    pub fn connections(&self) -> Connections {
        let live: Vec<_> = self.controllers().into_iter().filter(|c| !c.is_dead()).collect();
        Connections { controllers: live.len(), io_queues: live.iter().map(|c| c.io_queue_count()).sum() }
    }
}

/// What a target shares with its subsystems and its reactors: the discovery log generation
/// counter and the reactors' inboxes, through which changes made on any thread reach the data
/// plane.
#[derive(Debug)]
struct Hub {
    discovery_genctr: AtomicU64,
    /// The data plane's inboxes, by reactor ID, once it is attached.
    reactors: RwLock<Option<Arc<[Arc<Inbox>]>>>,
}

impl Hub {
    fn discovery_changed(&self) {
        self.discovery_genctr.fetch_add(1, Ordering::AcqRel);
        // Discovery controllers may sit on any reactor.
        self.poke_all();
    }

    /// Sends `msg` to reactor `id`; hands it back when there is no data plane (or no such
    /// reactor).
    fn send(&self, id: usize, msg: Msg) -> Result<(), Msg> {
        match self.reactors.read().expect("reactor lock").as_ref().and_then(|r| r.get(id)) {
            Some(inbox) => {
                inbox.send(msg);
                Ok(())
            }
            None => Err(msg),
        }
    }

    fn poke(&self, id: usize) {
        let _ = self.send(id, Msg::Poke);
    }

    fn poke_all(&self) {
        if let Some(inboxes) = self.reactors.read().expect("reactor lock").as_ref() {
            for inbox in inboxes.iter() {
                inbox.send(Msg::Poke);
            }
        }
    }
}

/// Binds an RDMA CM listener (the `rdma` feature); its bound address and handle.
#[cfg(feature = "rdma")]
fn bind_rdma(addr: SocketAddr) -> io::Result<(SocketAddr, Handle)> {
    let bound = crate::rdma::engine::Bound::bind(addr)?;
    Ok((bound.addr, Handle::RdmaBound(Box::new(bound))))
}

/// Without the `rdma` feature there is nothing to bind an RDMA listener with.
#[cfg(not(feature = "rdma"))]
fn bind_rdma(_: SocketAddr) -> io::Result<(SocketAddr, Handle)> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "this fabriq-target was built without RDMA (cargo feature `rdma`)"))
}

/// A listener and what discovery says about it.
#[derive(Debug)]
struct Listening {
    info: ListenerInfo,
    handle: Handle,
}

/// What serves a listener.
#[derive(Debug)]
enum Handle {
    /// A TCP socket, shared with reactor 0, which accepts on it; shut down here when the
    /// listener goes.
    Tcp(Arc<OwnedFd>),
    /// An RDMA CM id bound here and not yet handed to reactor 0 (the data plane is not
    /// attached yet): [`Target::attach_reactors`] sends it.
    #[cfg(feature = "rdma")]
    RdmaBound(Box<crate::rdma::engine::Bound>),
    /// An RDMA CM id in reactor 0's RDMA engine (or one registered by a test).
    Rdma,
}

/// What [`Target::connection_stats`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Open NVMe/TCP connections, bound to a controller or not.
    pub tcp_connections: u64,
    /// The discovery subsystem's controllers.
    pub discovery: Connections,
    /// Each NVM subsystem's, by NQN, in NQN order.
    pub subsystems: Vec<(String, Connections)>,
}

/// The whole target: what every reactor shares.
#[derive(Debug)]
pub struct Target {
    pub limits: Limits,
    pub discovery: Arc<Subsystem>,
    subsystems: RwLock<BTreeMap<String, Arc<Subsystem>>>,
    listeners: RwLock<Vec<Listening>>,
    /// The port ID the next listener gets.
    next_port_id: AtomicU32,
    hub: Arc<Hub>,
    /// A data plane was attached once (a target is served by one data plane in its life).
    attached: std::sync::atomic::AtomicBool,
    tcp_connections: AtomicU64,
    pub started: Instant,
    /// A per-process identity folded into serial numbers and GUIDs.
    pub instance: uuid::Uuid,
    next_error_id: AtomicU16,
}

impl Target {
    /// A target with no subsystems and no listeners yet.
    pub fn new(limits: Limits) -> Target {
        let discovery_nqn = Nqn::parse(DISCOVERY_NQN).expect("the well-known discovery NQN is valid");
        let discovery = Subsystem::new(
            discovery_nqn,
            SubsystemKind::Discovery,
            String::from("fabriq-discovery"),
            String::from("fabriq discovery"),
            true,
            BTreeSet::new(),
        );
        let hub = Arc::new(Hub { discovery_genctr: AtomicU64::new(1), reactors: RwLock::new(None) });
        let _ = discovery.hub.set(Arc::clone(&hub));
        Target {
            limits,
            discovery: Arc::new(discovery),
            subsystems: RwLock::new(BTreeMap::new()),
            listeners: RwLock::new(Vec::new()),
            next_port_id: AtomicU32::new(1),
            hub,
            attached: std::sync::atomic::AtomicBool::new(false),
            tcp_connections: AtomicU64::new(0),
            started: Instant::now(),
            instance: uuid::Uuid::new_v4(),
            next_error_id: AtomicU16::new(0),
        }
    }

    /// Adds an NVM subsystem; refuses a duplicate NQN (and the discovery NQN).
    pub fn add_subsystem(&self, subsys: Subsystem) -> Result<Arc<Subsystem>, Box<Subsystem>> {
        let mut all = self.subsystems.write().expect("subsystem lock");
        if all.contains_key(subsys.nqn.as_str())
            || subsys.nqn.as_str() == DISCOVERY_NQN
            || subsys.hub.set(Arc::clone(&self.hub)).is_err()
        {
            return Err(Box::new(subsys));
        }
        let subsys = Arc::new(subsys);
        all.insert(subsys.nqn.as_str().to_owned(), Arc::clone(&subsys));
        drop(all);
        self.discovery_changed();
        Ok(subsys)
    }

    /// Removes an NVM subsystem: no host can connect to it any more, its controllers are torn
    /// down (their queues close; commands in flight finish first), discovery stops listing it.
    /// Its backends are not flushed here (the daemon's stop flushes only the subsystems still
    /// registered): a caller about to reuse or delete the storage calls [`Backend::sync`] on
    /// the namespaces it gets back.
    pub fn remove_subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        let subsys = self.subsystems.write().expect("subsystem lock").remove(nqn)?;
        let killed = subsys.close();
        tracing::info!(subsystem = nqn, controllers = killed, "subsystem removed");
        self.discovery_changed();
        Some(subsys)
    }

    /// The subsystem a Connect names (the discovery subsystem included).
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        if nqn == DISCOVERY_NQN {
            return Some(Arc::clone(&self.discovery));
        }
        self.subsystems.read().expect("subsystem lock").get(nqn).cloned()
    }

    /// Every NVM subsystem, in NQN order.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.subsystems.read().expect("subsystem lock").values().cloned().collect()
    }

    /// The discovery log generation counter.
    pub fn discovery_genctr(&self) -> u64 {
        self.hub.discovery_genctr.load(Ordering::Acquire)
    }

    /// What discovery reports changed: bumps the generation counter and pokes the reactors so
    /// that discovery controllers waiting for the event get it.
    pub fn discovery_changed(&self) {
        self.hub.discovery_changed();
    }

    /// The listeners, in port ID order.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.listeners.read().expect("listener lock").iter().map(|l| l.info.clone()).collect()
    }

    /// The listener with port ID `port_id`, if it is still there.
    pub fn listener(&self, port_id: u16) -> Option<ListenerInfo> {
        self.listeners.read().expect("listener lock").iter().find(|l| l.info.port_id == port_id).map(|l| l.info.clone())
    }

    /// Binds a listener now (port 0: the kernel or the RDMA CM picks one, reported in
    /// `bound`) and has the data plane serve it (at once, or when it is attached). RDMA
    /// listeners need the `rdma` feature (`Unsupported` otherwise).
    pub fn add_listener(&self, config: &config::Listener) -> Result<ListenerInfo, io::Error> {
        let (bound, handle) = match config.transport {
            config::Transport::Tcp => {
                let socket = TcpListener::bind(config.address)?;
                (socket.local_addr()?, Handle::Tcp(Arc::new(OwnedFd::from(socket))))
            }
            config::Transport::Rdma => bind_rdma(config.address)?,
        };
        let advertised = match config.advertise {
            Some(mut a) if a.port() == 0 => {
                a.set_port(bound.port());
                a
            }
            Some(a) => a,
            None => bound,
        };
        let mut listeners = self.listeners.write().expect("listener lock");
        let port_id = self.next_port_id.fetch_add(1, Ordering::Relaxed);
        let port_id = u16::try_from(port_id)
            .map_err(|_| io::Error::new(io::ErrorKind::QuotaExceeded, "every NVMe-oF port ID was used"))?;
        let info = ListenerInfo {
            port_id,
            bound,
            advertised,
            discovery_only: config.discovery_only,
            transport: config.transport,
        };
        // Under the listener lock, so that `attach_reactors` hands over each listener once.
        let handle = match handle {
            Handle::Tcp(fd) => {
                let _ = self.hub.send(0, Msg::Listen { fd: Arc::clone(&fd), info: info.clone() });
                Handle::Tcp(fd)
            }
            #[cfg(feature = "rdma")]
            Handle::RdmaBound(b) => match self.hub.send(0, Msg::RdmaListen { bound: b, info: info.clone() }) {
                Ok(()) => Handle::Rdma,
                Err(Msg::RdmaListen { bound, .. }) => Handle::RdmaBound(bound),
                Err(_) => unreachable!("send gives back the message it could not send"),
            },
            Handle::Rdma => Handle::Rdma,
        };
        listeners.push(Listening { info: info.clone(), handle });
        drop(listeners);
        tracing::info!(port_id, transport = %config.transport, address = %bound, advertised = %advertised, discovery_only = config.discovery_only, "listening");
        self.discovery_changed();
        Ok(info)
    }

    /// Records a listener served elsewhere (a test's RDMA queue without an engine): it gets
    /// the next port ID, and discovery lists it.
    pub fn register_listener(&self, make: impl FnOnce(u16) -> ListenerInfo) -> Result<ListenerInfo, io::Error> {
        let mut listeners = self.listeners.write().expect("listener lock");
        let port_id = self.next_port_id.fetch_add(1, Ordering::Relaxed);
        let port_id = u16::try_from(port_id)
            .map_err(|_| io::Error::new(io::ErrorKind::QuotaExceeded, "every NVMe-oF port ID was used"))?;
        let info = make(port_id);
        listeners.push(Listening { info: info.clone(), handle: Handle::Rdma });
        drop(listeners);
        self.discovery_changed();
        Ok(info)
    }

    /// [`Target::add_listener`] for a daemon that is starting: an address in use is tried again
    /// every [`BIND_RETRY_INTERVAL`] until `patience` has passed. A predecessor killed with
    /// SIGKILL leaves its listening sockets bound for a moment after it has been reaped (tens of
    /// milliseconds measured, more on a loaded machine): the kernel tears its io_uring down
    /// asynchronously, and the accepts pending there hold the sockets until then. Without the
    /// retry, a restart straight after a crash fails with "Address already in use". At run
    /// time (the node API) an address in use is answered at once by [`Target::add_listener`].
    pub fn add_listener_at_start(
        &self,
        config: &config::Listener,
        patience: Duration,
    ) -> Result<ListenerInfo, io::Error> {
        let deadline = Instant::now() + patience;
        let mut waited = false;
        loop {
            match self.add_listener(config) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    if !waited {
                        tracing::warn!(address = %config.address, ?patience, "address in use (a killed predecessor's io_uring may still hold it); trying again");
                        waited = true;
                    }
                    std::thread::sleep(BIND_RETRY_INTERVAL);
                }
                other => return other,
            }
        }
    }

    /// Stops accepting on listener `port_id`: connection attempts are refused from the moment
    /// this returns (an RDMA listener's from the moment reactor 0 reads its inbox, next);
    /// connections made through it stay.
    pub fn remove_listener(&self, port_id: u16) -> Option<ListenerInfo> {
        let mut listeners = self.listeners.write().expect("listener lock");
        let i = listeners.iter().position(|l| l.info.port_id == port_id)?;
        let Listening { info, handle } = listeners.remove(i);
        drop(listeners);
        match handle {
            Handle::Tcp(fd) => {
                // SAFETY: shutdown on a listening socket this target owns (reactor 0 holds a
                // second reference, so the descriptor stays open until it has seen its accept
                // end).
                unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
                let _ = self.hub.send(0, Msg::Unlisten { port_id });
            }
            // Never handed over: dropping it stops listening.
            #[cfg(feature = "rdma")]
            Handle::RdmaBound(bound) => drop(bound),
            Handle::Rdma => {
                let _ = self.hub.send(0, Msg::Unlisten { port_id });
            }
        }
        tracing::info!(port_id, transport = %info.transport, address = %info.bound, "listener removed");
        self.discovery_changed();
        Some(info)
    }

    /// Connects the target to its data plane: `inboxes` are the reactors', by ID. Reactor 0
    /// gets every listener to serve; from now on, changes poke the reactors. Once per target.
    pub fn attach_reactors(&self, inboxes: Arc<[Arc<Inbox>]>) {
        assert!(!inboxes.is_empty(), "a data plane has reactors");
        assert!(!self.attached.swap(true, Ordering::AcqRel), "a target is served by one data plane");
        let mut listeners = self.listeners.write().expect("listener lock");
        for l in listeners.iter_mut() {
            match std::mem::replace(&mut l.handle, Handle::Rdma) {
                Handle::Tcp(fd) => {
                    inboxes[0].send(Msg::Listen { fd: Arc::clone(&fd), info: l.info.clone() });
                    l.handle = Handle::Tcp(fd);
                }
                #[cfg(feature = "rdma")]
                Handle::RdmaBound(bound) => inboxes[0].send(Msg::RdmaListen { bound, info: l.info.clone() }),
                Handle::Rdma => {}
            }
        }
        *self.hub.reactors.write().expect("reactor lock") = Some(inboxes);
    }

    /// The data plane stopped: changes no longer poke anything.
    pub fn detach_reactors(&self) {
        *self.hub.reactors.write().expect("reactor lock") = None;
    }

    /// Makes every reactor poll its queues now (events due, controllers torn down).
    pub fn poke_all(&self) {
        self.hub.poke_all();
    }

    /// Makes reactor `id` poll its queues now.
    pub fn poke(&self, id: usize) {
        self.hub.poke(id);
    }

    /// Live connections: TCP connections, controllers and I/O queues per subsystem.
    pub fn connection_stats(&self) -> ConnectionStats {
        ConnectionStats {
            tcp_connections: self.tcp_connections.load(Ordering::Relaxed),
            discovery: self.discovery.connections(),
            subsystems: self.subsystems().iter().map(|s| (s.nqn.as_str().to_owned(), s.connections())).collect(),
        }
    }

    /// A reactor took a connection (`opened`) or let one go.
    pub(crate) fn count_connection(&self, opened: bool) {
        if opened {
            self.tcp_connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.tcp_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A process-wide sequence number for error log entries.
    pub fn next_error_id(&self) -> u16 {
        self.next_error_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:a";
    const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:b";

    fn nqn(s: &str) -> Nqn {
        Nqn::parse(s).unwrap()
    }

    fn subsys(allow_any: bool, hosts: &[&str]) -> Subsystem {
        let hosts = hosts.iter().map(|h| h.to_string()).collect();
        Subsystem::new(nqn("nqn.2026-11.dev.fabriq:t"), SubsystemKind::Nvm, "sn".into(), "mn".into(), allow_any, hosts)
    }

    fn ns(id: u32, bytes: u64) -> Namespace {
        Namespace::new(Nsid::new(id).unwrap(), 512, Backend::null(bytes), uuid::Uuid::nil(), [0; 16], 2)
    }

    #[test]
    fn host_allow_list() {
        let s = subsys(false, &[HOST_A]);
        assert!(s.allows(HOST_A));
        assert!(!s.allows(HOST_B));
        assert!(subsys(true, &[]).allows(HOST_B));
    }

    #[test]
    fn namespaces_sorted_unique_and_generation_moves() {
        let s = subsys(true, &[]);
        let g0 = s.ns_generation();
        s.add_namespace(ns(5, 1 << 20)).unwrap();
        s.add_namespace(ns(2, 1 << 20)).unwrap();
        assert!(s.add_namespace(ns(5, 1 << 20)).is_err());
        let table = s.namespaces();
        assert_eq!(table.namespaces.iter().map(|n| n.nsid.get()).collect::<Vec<_>>(), vec![2, 5]);
        assert_eq!(table.find(5).unwrap().0, 1);
        assert!(table.find(3).is_none());
        assert_eq!(s.ns_generation(), g0 + 2);
        assert_eq!(table.generation, s.ns_generation());
    }

    #[test]
    fn namespaces_are_replaced_and_removed_and_old_tables_stay_whole() {
        let s = subsys(true, &[]);
        s.add_namespace(ns(1, 1 << 20)).unwrap();
        s.add_namespace(ns(3, 1 << 20)).unwrap();
        let before = s.namespaces();
        before.find(1).unwrap().1.stats.write(0, 4096, std::time::Duration::from_micros(3));
        // A grown namespace 1: same NSID, new size, the counters carried over.
        s.replace_namespace(ns(1, 4 << 20)).unwrap();
        let after = s.namespaces();
        assert_eq!(after.find(1).unwrap().1.blocks(), (4 << 20) / 512);
        assert_eq!(after.find(1).unwrap().1.stats.totals().write_cmds, 1, "counters survive a replacement");
        let mut other = ns(1, 8 << 20);
        other.uuid = uuid::Uuid::new_v4();
        other.nguid = [7; 16];
        s.replace_namespace(other).unwrap();
        let identity = s.namespaces().find(1).map(|(_, n)| (n.uuid, n.nguid)).unwrap();
        assert_eq!(identity, (uuid::Uuid::nil(), [0; 16]), "the identity stays");
        let after = s.namespaces();
        assert_eq!(before.find(1).unwrap().1.blocks(), (1 << 20) / 512, "a held table does not change");
        assert_eq!(after.generation, before.generation + 2);
        let refused = s.replace_namespace(ns(2, 1 << 20)).unwrap_err();
        assert_eq!(refused.nsid.get(), 2, "no namespace 2 to replace");
        assert_eq!(s.ns_generation(), after.generation, "a refused change publishes nothing");
        let gone = s.remove_namespace(3).unwrap();
        assert_eq!(gone.nsid.get(), 3);
        assert!(s.remove_namespace(3).is_none());
        assert_eq!(s.namespaces().namespaces.iter().map(|n| n.nsid.get()).collect::<Vec<_>>(), vec![1]);
        assert!(after.find(3).is_some(), "commands holding the old table still find it");
    }

    #[test]
    fn access_changes_report_and_bump_discovery() {
        let t = Target::new(Limits::default());
        let s = t.add_subsystem(subsys(false, &[HOST_A])).unwrap();
        let g = t.discovery_genctr();
        assert!(s.allow_host(HOST_B));
        assert!(!s.allow_host(HOST_B), "already there");
        assert_eq!(s.access(), (false, vec![HOST_A.to_owned(), HOST_B.to_owned()]));
        assert_eq!(t.discovery_genctr(), g + 1, "only a real change moves the counter");
        assert!(s.revoke_host(HOST_A));
        assert!(!s.revoke_host(HOST_A));
        assert!(!s.allows(HOST_A));
        s.set_allow_any_host(true);
        s.set_allow_any_host(true);
        assert!(s.allows(HOST_A));
        assert_eq!(s.access(), (true, vec![HOST_B.to_owned()]));
        assert_eq!(t.discovery_genctr(), g + 3);
    }

    #[test]
    fn registration_rechecks_access_and_removal() {
        let t = Target::new(Limits::default());
        let s = t.add_subsystem(subsys(false, &[HOST_A])).unwrap();
        let never = |_| -> Arc<Controller> { panic!("no controller is made") };
        assert_eq!(s.register_controller(HOST_B, never).unwrap_err(), RegisterError::NotAllowed);
        let removed = t.remove_subsystem("nqn.2026-11.dev.fabriq:t").unwrap();
        assert!(Arc::ptr_eq(&removed, &s));
        assert!(t.subsystem("nqn.2026-11.dev.fabriq:t").is_none());
        assert!(!s.allows(HOST_A), "a removed subsystem admits nobody");
        assert_eq!(s.register_controller(HOST_A, never).unwrap_err(), RegisterError::Removed);
        assert!(t.remove_subsystem("nqn.2026-11.dev.fabriq:t").is_none());
    }

    #[test]
    fn subsystem_registry_refuses_duplicates_and_bumps_discovery() {
        let t = Target::new(Limits::default());
        let g = t.discovery_genctr();
        t.add_subsystem(subsys(true, &[])).unwrap();
        assert!(t.add_subsystem(subsys(true, &[])).is_err());
        assert!(t.discovery_genctr() > g);
        assert!(t.subsystem(DISCOVERY_NQN).is_some());
        assert!(t.subsystem("nqn.2026-11.dev.fabriq:t").is_some());
        assert!(t.subsystem("nqn.2026-11.dev.fabriq:nope").is_none());
        let g = t.discovery_genctr();
        t.remove_subsystem("nqn.2026-11.dev.fabriq:t").unwrap();
        assert!(t.discovery_genctr() > g);
        assert!(t.subsystems().is_empty());
    }

    #[test]
    fn listeners_bind_now_get_fresh_port_ids_and_go() {
        let t = Target::new(Limits::default());
        let any = |discovery_only| config::Listener {
            transport: config::Transport::Tcp,
            address: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            discovery_only,
        };
        let g = t.discovery_genctr();
        let a = t.add_listener(&any(false)).unwrap();
        let b = t.add_listener(&any(true)).unwrap();
        assert_eq!((a.port_id, b.port_id), (1, 2));
        assert_ne!(a.bound.port(), 0, "port 0 is reported as bound");
        assert_eq!(a.advertised, a.bound);
        assert!(std::net::TcpStream::connect(a.bound).is_ok(), "bound and listening (in the backlog)");
        assert_eq!(t.listeners(), vec![a.clone(), b.clone()]);
        assert_eq!(t.remove_listener(1), Some(a.clone()));
        assert!(t.remove_listener(1).is_none());
        assert!(std::net::TcpStream::connect(a.bound).is_err(), "refused once removed");
        let c = t.add_listener(&any(false)).unwrap();
        assert_eq!(c.port_id, 3, "port IDs are not reused");
        assert_eq!(t.listeners(), vec![b, c]);
        assert_eq!(t.listener(3).map(|l| l.port_id), Some(3));
        assert!(t.discovery_genctr() >= g + 4);
        let mut rdma = any(false);
        rdma.transport = config::Transport::Rdma;
        // Without the feature: unsupported; with it, loopback has no RDMA device. Either way
        // nothing is listed and no port ID is used up.
        let err = t.add_listener(&rdma).unwrap_err();
        if !cfg!(feature = "rdma") {
            assert_eq!(err.kind(), io::ErrorKind::Unsupported);
            assert!(err.to_string().contains("built without RDMA"), "{err}");
        }
        assert_eq!(t.listeners().len(), 2);
        assert_eq!(t.add_listener(&any(false)).unwrap().port_id, 4);
    }

    #[test]
    fn a_start_waits_for_an_address_a_killed_predecessor_still_holds() {
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = holder.local_addr().unwrap();
        let config =
            config::Listener { transport: config::Transport::Tcp, address, advertise: None, discovery_only: false };
        let t = Target::new(Limits::default());
        assert_eq!(t.add_listener(&config).unwrap_err().kind(), io::ErrorKind::AddrInUse, "at run time: at once");
        let err = t.add_listener_at_start(&config, Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "not for longer than the patience");
        // The predecessor's socket goes away while the start waits.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(holder);
        });
        let info = t.add_listener_at_start(&config, Duration::from_secs(30)).unwrap();
        release.join().unwrap();
        assert_eq!((info.bound, info.port_id), (address, 1), "no port ID spent on the failed tries");
        assert!(std::net::TcpStream::connect(address).is_ok());
    }
}
