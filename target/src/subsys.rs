//! The target's object model: a [`Target`] holds NVM subsystems (each with an allow list of host
//! NQNs and namespaces backed by a [`Backend`]), the discovery subsystem and the listeners.
//!
//! Shared by every reactor. Nothing here is touched per I/O except a namespace's counters,
//! which have one slot per reactor (single writer, no atomic read-modify-write); a queue keeps
//! its own snapshot of its subsystem's namespace table ([`Subsystem::namespaces`]) and looks at
//! the generation number to notice changes, so the I/O path takes no lock.
//!
//! Invariants: subsystem NQNs are unique; NSIDs are unique within a subsystem; the discovery
//! log generation counter changes whenever what discovery reports may have changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

use crate::backend::Backend;
use crate::ctrl::Controller;
use crate::nvme::{CntlId, DISCOVERY_NQN, Nqn, Nsid};

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
            reactors: 1,
            discovery_kato_ms: 120_000,
        }
    }
}

/// One listening socket's identity as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The NVMe-oF port identifier (PORTID): the listener's index.
    pub port_id: u16,
    pub bound: SocketAddr,
    /// What discovery log entries show (the bound address when not configured).
    pub advertised: SocketAddr,
    /// Serves only the discovery subsystem: NVM subsystems are not listed on it.
    pub discovery_only: bool,
}

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
}

/// Sums over every reactor's slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NsTotals {
    pub read_cmds: u64,
    pub write_cmds: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub media_errors: u64,
}

fn bump(counter: &AtomicU64, by: u64) {
    // Single writer per slot: a plain load and store, no locked read-modify-write.
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
}

impl NsStats {
    fn new(reactors: usize) -> NsStats {
        NsStats { slots: (0..reactors.max(1)).map(|_| PaddedCounters::default()).collect() }
    }

    pub fn read(&self, reactor: usize, bytes: u64) {
        let s = &self.slots[reactor];
        bump(&s.read_cmds, 1);
        bump(&s.read_bytes, bytes);
    }

    pub fn write(&self, reactor: usize, bytes: u64) {
        let s = &self.slots[reactor];
        bump(&s.write_cmds, 1);
        bump(&s.write_bytes, bytes);
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
        }
        t
    }
}

#[derive(Debug)]
pub struct Namespace {
    pub nsid: Nsid,
    pub block_size: u32,
    pub backend: Backend,
    pub uuid: uuid::Uuid,
    pub nguid: [u8; 16],
    pub stats: NsStats,
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
        Namespace { nsid, block_size, backend, uuid, nguid, stats: NsStats::new(reactors) }
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
            access: RwLock::new(Access { allow_any_host, hosts }),
            namespaces: RwLock::new(Arc::new(NsTable::default())),
            ns_generation: AtomicU64::new(0),
            controllers: Mutex::new(Controllers { next: CntlId::MIN_DYNAMIC.get(), live: BTreeMap::new() }),
        }
    }

    /// Whether `hostnqn` may connect (the discovery subsystem admits every host).
    pub fn allows(&self, hostnqn: &str) -> bool {
        if self.kind == SubsystemKind::Discovery {
            return true;
        }
        let access = self.access.read().expect("access lock");
        access.allow_any_host || access.hosts.contains(hostnqn)
    }

    /// The current namespace table; cheap to clone and to keep.
    pub fn namespaces(&self) -> Arc<NsTable> {
        Arc::clone(&self.namespaces.read().expect("namespace lock"))
    }

    /// The generation of the namespace table: a queue compares it with its snapshot's.
    pub fn ns_generation(&self) -> u64 {
        self.ns_generation.load(Ordering::Acquire)
    }

    /// Adds a namespace; refuses a duplicate NSID (returns the namespace back).
    pub fn add_namespace(&self, ns: Namespace) -> Result<(), Box<Namespace>> {
        let mut table = self.namespaces.write().expect("namespace lock");
        if table.find(ns.nsid.get()).is_some() {
            return Err(Box::new(ns));
        }
        let mut namespaces = table.namespaces.clone();
        namespaces.push(Arc::new(ns));
        namespaces.sort_by_key(|n| n.nsid.get());
        let generation = self.ns_generation.load(Ordering::Relaxed) + 1;
        *table = Arc::new(NsTable { generation, namespaces });
        self.ns_generation.store(generation, Ordering::Release);
        Ok(())
    }

    /// Allocates a controller ID (dynamic model) and registers the controller made with it.
    /// `None` when all 0xFFEF IDs are in use.
    pub fn register_controller(&self, make: impl FnOnce(u16) -> Arc<Controller>) -> Option<Arc<Controller>> {
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
                return Some(ctrl);
            }
        }
        None
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
}

/// The whole target: what every reactor shares.
#[derive(Debug)]
pub struct Target {
    pub limits: Limits,
    pub listeners: Vec<ListenerInfo>,
    pub discovery: Arc<Subsystem>,
    subsystems: RwLock<BTreeMap<String, Arc<Subsystem>>>,
    discovery_genctr: AtomicU64,
    pub started: Instant,
    /// A per-process identity folded into serial numbers and GUIDs.
    pub instance: uuid::Uuid,
    next_error_id: AtomicU16,
}

impl Target {
    pub fn new(limits: Limits, listeners: Vec<ListenerInfo>) -> Target {
        let discovery_nqn = Nqn::parse(DISCOVERY_NQN).expect("the well-known discovery NQN is valid");
        let discovery = Subsystem::new(
            discovery_nqn,
            SubsystemKind::Discovery,
            String::from("fabriq-discovery"),
            String::from("fabriq discovery"),
            true,
            BTreeSet::new(),
        );
        Target {
            limits,
            listeners,
            discovery: Arc::new(discovery),
            subsystems: RwLock::new(BTreeMap::new()),
            discovery_genctr: AtomicU64::new(1),
            started: Instant::now(),
            instance: uuid::Uuid::new_v4(),
            next_error_id: AtomicU16::new(0),
        }
    }

    /// Adds an NVM subsystem; refuses a duplicate NQN.
    pub fn add_subsystem(&self, subsys: Subsystem) -> Result<Arc<Subsystem>, Box<Subsystem>> {
        let mut all = self.subsystems.write().expect("subsystem lock");
        if all.contains_key(subsys.nqn.as_str()) || subsys.nqn.as_str() == DISCOVERY_NQN {
            return Err(Box::new(subsys));
        }
        let subsys = Arc::new(subsys);
        all.insert(subsys.nqn.as_str().to_owned(), Arc::clone(&subsys));
        drop(all);
        self.discovery_changed();
        Ok(subsys)
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
        self.discovery_genctr.load(Ordering::Acquire)
    }

    pub fn discovery_changed(&self) {
        self.discovery_genctr.fetch_add(1, Ordering::AcqRel);
    }

    /// A process-wide sequence number for error log entries.
    pub fn next_error_id(&self) -> u16 {
        self.next_error_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nqn(s: &str) -> Nqn {
        Nqn::parse(s).unwrap()
    }

    fn subsys(allow_any: bool, hosts: &[&str]) -> Subsystem {
        let hosts = hosts.iter().map(|h| h.to_string()).collect();
        Subsystem::new(nqn("nqn.2026-11.dev.fabriq:t"), SubsystemKind::Nvm, "sn".into(), "mn".into(), allow_any, hosts)
    }

    #[test]
    fn host_allow_list() {
        let s = subsys(false, &["nqn.2014-08.org.nvmexpress:uuid:a"]);
        assert!(s.allows("nqn.2014-08.org.nvmexpress:uuid:a"));
        assert!(!s.allows("nqn.2014-08.org.nvmexpress:uuid:b"));
        assert!(subsys(true, &[]).allows("nqn.2014-08.org.nvmexpress:uuid:b"));
    }

    #[test]
    fn namespaces_sorted_unique_and_generation_moves() {
        let s = subsys(true, &[]);
        let ns =
            |id| Namespace::new(Nsid::new(id).unwrap(), 512, Backend::null(1 << 20), uuid::Uuid::nil(), [0; 16], 2);
        let g0 = s.ns_generation();
        s.add_namespace(ns(5)).unwrap();
        s.add_namespace(ns(2)).unwrap();
        assert!(s.add_namespace(ns(5)).is_err());
        let table = s.namespaces();
        assert_eq!(table.namespaces.iter().map(|n| n.nsid.get()).collect::<Vec<_>>(), vec![2, 5]);
        assert_eq!(table.find(5).unwrap().0, 1);
        assert!(table.find(3).is_none());
        assert_eq!(s.ns_generation(), g0 + 2);
        assert_eq!(table.generation, s.ns_generation());
    }

    #[test]
    fn stats_sum_over_reactor_slots() {
        let stats = NsStats::new(2);
        stats.read(0, 4096);
        stats.read(1, 512);
        stats.write(1, 8192);
        let t = stats.totals();
        assert_eq!((t.read_cmds, t.read_bytes, t.write_cmds, t.write_bytes), (2, 4608, 1, 8192));
    }

    #[test]
    fn subsystem_registry_refuses_duplicates_and_bumps_discovery() {
        let t = Target::new(Limits::default(), Vec::new());
        let g = t.discovery_genctr();
        t.add_subsystem(subsys(true, &[])).unwrap();
        assert!(t.add_subsystem(subsys(true, &[])).is_err());
        assert!(t.discovery_genctr() > g);
        assert!(t.subsystem(DISCOVERY_NQN).is_some());
        assert!(t.subsystem("nqn.2026-11.dev.fabriq:t").is_some());
        assert!(t.subsystem("nqn.2026-11.dev.fabriq:nope").is_none());
    }
}
