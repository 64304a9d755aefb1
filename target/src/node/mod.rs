//! The node manager: the storage node's pools, their volumes, and each volume's export as an
//! NVMe subsystem of the live [`Target`], kept in step with one another and with the node
//! state file. What the node API calls (synchronously: metadata updates flush to the device).
//!
//! Every Ready volume is exported as its own subsystem, `nqn.2026-11.dev.fabriq:vol:<id>`,
//! whose namespace 1 is the volume (a volume backend over the pool's device); its host allow
//! list comes from the node state file ([`state`]). A Deleting volume is never exported.
//!
//! Every change is ordered so that a crash at any instant leaves no half-made state:
//! - create: carve the volume in the pool (durable), record its hosts (durable, when there are
//!   any; on failure the volume is deleted again), export it;
//! - grow: grow in the pool (durable), then swap the namespace for one of the new size (hosts
//!   get a namespace-attribute-changed event);
//! - delete: unexport (hosts disconnected), wait for commands in flight to drain, delete in the
//!   pool (durable; its extents are discarded), then drop its state entry;
//! - allow and revoke a host, add and remove a listener: the state file first, then the live
//!   target (a host is never admitted before its admission is durable).
//!
//! At start-up ([`Node::open`]) pools are opened (or created), and each Ready volume is
//! exported from the pool and the state file: a rebooted node serves its volumes to the same
//! hosts before anyone calls it.
//!
//! Invariants: one lock over every pool and the state (changes are serialised); the state in
//! memory is what the file holds; every Ready volume of an open pool has a subsystem in the
//! target, and no other volume does; volume names are unique on the node.

#![forbid(unsafe_code)]

mod error;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::backend::{Backend, Extent};
use crate::config::{self, Config, Transport};
use crate::nvme::{Nqn, Nsid};
use crate::storage::{FileDevice, Pool, StorageError, Volume, VolumeId, VolumeState};
use crate::subsys::{
    Connections, ListenerInfo, Namespace, NsTotals, START_BIND_PATIENCE, Subsystem, SubsystemKind, Target,
};

pub use error::{ListenerProblem, NodeError};
pub use state::Access;

type Result<T> = std::result::Result<T, NodeError>;

/// The prefix of every volume's subsystem NQN (DESIGN.md, "Names").
pub const VOLUME_NQN_PREFIX: &str = "nqn.2026-11.dev.fabriq:vol:";
/// How long a delete waits for commands in flight on the volume to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// The smallest pool file the API creates (the storage layer's smallest default pool).
const POOL_FILE_MIN_BYTES: u64 = 10 << 20;
/// The volume's namespace in its subsystem.
const VOLUME_NSID: Nsid = Nsid::MIN;

/// The subsystem NQN a volume is exported as.
pub fn volume_nqn(id: VolumeId) -> String {
    format!("{VOLUME_NQN_PREFIX}{id}")
}

// ---------------------------------------------------------------------------------------------
// What callers send and get back.

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Unique on the node: 1..=64 ASCII letters, digits, `-`, `_`, `.`, starting with a letter
    /// or digit.
    #[schema(example = "pvc-0b6e")]
    pub name: String,
    /// At least this many bytes: the size is rounded up to whole extents (1 MiB by default).
    #[schema(example = 1073741824)]
    pub size_bytes: u64,
    /// The logical block size hosts see: 512 or 4096 (default).
    #[serde(default = "default_block_size")]
    #[schema(default = 4096, example = 4096)]
    pub block_size: u32,
    /// The pool to carve it from; default: the pool with the most free space.
    #[serde(default)]
    pub pool: Option<String>,
    /// Host NQNs allowed to connect from the start.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Admit every host (tests and trials; production lists hosts).
    #[serde(default)]
    pub allow_any_host: bool,
}

fn default_block_size() -> u32 {
    4096
}

/// `PATCH /v1/volumes/{id}`: what to change; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVolume {
    /// Grow to at least this many bytes (rounded up to whole extents). Shrinking is refused;
    /// the current size changes nothing.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Admit every host, or only the listed ones.
    #[serde(default)]
    pub allow_any_host: Option<bool>,
}

/// `POST /v1/pools`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPool {
    /// Unique on the node; same syntax as volume names.
    #[schema(example = "nvme1")]
    pub name: String,
    /// A block device, or a regular file.
    #[schema(value_type = String, example = "/dev/disk/by-id/nvme-EXAMPLE_SSD_1234")]
    pub path: PathBuf,
    /// Creates a missing file of this size (sparse). Ignored for a device or an existing file.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Create the pool even over another pool's label, a file system or a partition table.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/listeners`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddListener {
    /// `tcp` (default) or `rdma` (NVMe/RDMA through the RDMA CM; only in a fabriq-target
    /// built with the `rdma` feature, otherwise refused with 422 `transport_not_built`; the
    /// address must be one of an RDMA device's, e.g. a RoCE interface's).
    #[serde(default = "default_transport")]
    #[schema(default = "tcp")]
    pub transport: String,
    /// An IP address and port; port 0 lets the kernel choose (kept across restarts).
    #[schema(value_type = String, example = "192.0.2.10:4421")]
    pub address: SocketAddr,
    /// What discovery log entries and connect information show; required for a wildcard
    /// address.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "192.0.2.10:4421")]
    pub advertise: Option<SocketAddr>,
    /// Serve only the discovery subsystem.
    #[serde(default)]
    pub discovery_only: bool,
}

fn default_transport() -> String {
    String::from("tcp")
}

/// What a host needs to connect to a volume (`nvme connect -t TRANSPORT -a ADDRESS -s PORT -n NQN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConnectInfo {
    /// `tcp` or `rdma`: the transport of the node's first I/O listener.
    #[schema(example = "tcp")]
    pub transport: String,
    #[schema(example = "192.0.2.10")]
    pub address: String,
    #[schema(example = 4420)]
    pub port: u16,
    #[schema(example = "nqn.2026-11.dev.fabriq:vol:67e55044-10b1-426f-9247-bb680e5fe0c8")]
    pub nqn: String,
}

/// A volume and its export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VolumeInfo {
    #[schema(example = "67e55044-10b1-426f-9247-bb680e5fe0c8")]
    pub id: String,
    pub name: String,
    pub pool: String,
    /// The capacity hosts see (the size asked for, rounded up to whole extents).
    pub size_bytes: u64,
    pub block_size: u32,
    pub blocks: u64,
    /// `ready` or `deleting` (a delete that did not finish: delete again).
    #[schema(example = "ready")]
    pub state: String,
    pub created_unix_s: u64,
    /// The subsystem NQN.
    pub nqn: String,
    /// A subsystem serves it (every ready volume).
    pub served: bool,
    /// Some host is allowed, or a controller is connected: a delete needs force.
    pub exported: bool,
    pub access: Access,
    /// Live controllers (host associations).
    pub controllers: usize,
    /// Connected I/O queues of those controllers.
    pub io_queues: usize,
    /// How a host connects; absent when the node has no I/O listener.
    pub connect: Option<ConnectInfo>,
}

/// Who may reach a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HostsInfo {
    pub allow_any_host: bool,
    pub hosts: Vec<String>,
}

/// A pool's identity and capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PoolInfoView {
    pub name: String,
    pub id: String,
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// `config` (a `[[pool]]` of the configuration) or `api` (added through the API).
    pub source: String,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
    pub extent_bytes: u64,
    pub device_bytes: u64,
    pub volumes: usize,
    /// The metadata generation: it grows with every change.
    pub generation: u64,
    /// The data path uses O_DIRECT for 4096-byte-block volumes (and 512 when `direct_512`).
    pub direct: bool,
    pub direct_512: bool,
    /// `online`, or `failed`: the pool could not be opened at start-up (see `error`); its
    /// volumes are not served and every figure above is 0. `POST /v1/pools` with the same
    /// name and path tries again.
    #[schema(example = "online")]
    pub state: String,
    /// Why a failed pool could not be opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ListenerView {
    pub port_id: u16,
    /// `tcp` or `rdma`.
    #[schema(example = "tcp")]
    pub transport: String,
    #[schema(value_type = String)]
    pub address: SocketAddr,
    #[schema(value_type = String)]
    pub advertised: SocketAddr,
    pub discovery_only: bool,
    /// `config` or `api`.
    pub source: String,
}

/// One volume's numbers for `/metrics`.
#[derive(Debug, Clone)]
pub struct VolumeMetrics {
    pub id: String,
    pub name: String,
    pub pool: String,
    pub size_bytes: u64,
    pub totals: NsTotals,
    pub connections: Connections,
}

/// Everything `/metrics` renders, taken under the lock at one moment.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub pools: Vec<PoolInfoView>,
    pub volumes: Vec<VolumeMetrics>,
    pub listeners: usize,
    pub uptime_s: u64,
}

// ---------------------------------------------------------------------------------------------
// The manager.

struct PoolEntry {
    pool: Pool,
    path: PathBuf,
    data: DataPath,
    from_config: bool,
}

/// The descriptors the data path reads and writes a pool's device through (the pool keeps its
/// own for metadata): O_DIRECT where the device takes it, buffered otherwise.
struct DataPath {
    buffered: Arc<OwnedFd>,
    direct: Option<Arc<OwnedFd>>,
    /// The smallest block size O_DIRECT accepted (512 or 4096).
    direct_min_block: u32,
}

impl DataPath {
    fn open(path: &Path) -> io::Result<DataPath> {
        let buffered = OpenOptions::new().read(true).write(true).open(path)?;
        let direct = OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(path).ok();
        let (direct, direct_min_block) = match direct {
            Some(file) if direct_read_works(&file, 512) => (Some(file), 512),
            Some(file) if direct_read_works(&file, 4096) => (Some(file), 4096),
            _ => {
                tracing::warn!(path = %path.display(), "O_DIRECT is refused; volumes use the page cache (flush makes data durable)");
                (None, 0)
            }
        };
        Ok(DataPath {
            buffered: Arc::new(buffered.into()),
            direct: direct.map(|f| Arc::new(f.into())),
            direct_min_block,
        })
    }

    /// The descriptor for a volume of `block_size` and whether it is direct.
    fn for_block_size(&self, block_size: u32) -> (Arc<OwnedFd>, bool) {
        match &self.direct {
            Some(fd) if block_size >= self.direct_min_block => (Arc::clone(fd), true),
            _ => (Arc::clone(&self.buffered), false),
        }
    }
}

/// Whether an aligned read of `len` bytes at offset 0 works on an O_DIRECT descriptor.
fn direct_read_works(file: &File, len: usize) -> bool {
    // An aligned buffer without unsafe: a larger vector and the aligned window inside it.
    let mut buf = vec![0u8; len + 4096];
    let start = buf.as_ptr().align_offset(4096);
    start <= 4096 && file.read_exact_at(&mut buf[start..start + len], 0).is_ok()
}

/// A pool of the configuration or the state file that could not be opened at start-up.
struct FailedPool {
    path: PathBuf,
    from_config: bool,
    error: String,
}

struct Inner {
    pools: BTreeMap<String, PoolEntry>,
    /// Pools that failed to open: reported, their volumes' hosts kept in the state, the
    /// other pools served.
    failed: BTreeMap<String, FailedPool>,
    state: state::NodeState,
}

/// The node manager (see the module documentation).
pub struct Node {
    target: Arc<Target>,
    state_path: PathBuf,
    reactors: usize,
    /// Port ids of the configuration's listeners (the API does not remove them).
    configured_ports: BTreeSet<u16>,
    started: Instant,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("state_path", &self.state_path).finish_non_exhaustive()
    }
}

impl Node {
    /// Opens (or creates) every pool of the configuration and of the state file, and exports
    /// every Ready volume with its hosts.
    ///
    /// A pool that cannot be opened (a dead or missing disk, a device that now holds something
    /// else) does not stop the start: the node serves the volumes of its other pools, and
    /// reports that one as `failed` with the reason (`/v1/pools`, `/v1/health` says
    /// `degraded`, `/metrics`), loudly in the log. Its volumes' hosts stay in the state file
    /// for when it comes back (`POST /v1/pools` again, or a restart). One bad disk must not
    /// take every volume of the node offline.
    pub fn open(config: &Config, target: Arc<Target>) -> Result<Node> {
        let state_path = config.target.data_dir.join(state::FILE_NAME);
        let mut state = state::load(&state_path)?;
        let mut pools = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for p in &config.pools {
            let opened = open_or_create(&p.name, &p.path, p.size_bytes, p.force);
            file_pool(&mut pools, &mut failed, &p.name, &p.path, true, opened);
        }
        let before = state.clone();
        state.pools.retain(|p| {
            let clash = pools.contains_key(&p.name)
                || failed.contains_key(&p.name)
                || pools.values().any(|e| same_path(&e.path, &p.path))
                || failed.values().any(|f: &FailedPool| same_path(&f.path, &p.path));
            if clash {
                tracing::warn!(pool = %p.name, path = %p.path.display(), "a pool added through the API is now in the configuration; forgetting the API's entry");
            }
            !clash
        });
        for p in &state.pools {
            let opened = open_or_create(&p.name, &p.path, None, false);
            file_pool(&mut pools, &mut failed, &p.name, &p.path, false, opened);
        }
        check_unique_volume_names(&pools);
        // Hosts of volumes no pool holds are dropped, but only when every pool opened: the
        // state does not say which pool a volume is on, and a failed pool's volumes keep theirs.
        if failed.is_empty() {
            let existing: BTreeSet<String> =
                pools.values().flat_map(|e| e.pool.volumes().iter().map(|v| v.id().to_string())).collect();
            state.volumes.retain(|id, _| {
                let known = existing.contains(id);
                if !known {
                    tracing::warn!(volume = %id, "the node state names a volume no pool holds; dropping its hosts");
                }
                known
            });
        }
        if state != before {
            state::save(&state_path, &state)?;
        }
        let configured_ports = target.listeners().iter().map(|l| l.port_id).collect();
        let node = Node {
            target,
            state_path,
            reactors: config.target.reactors,
            configured_ports,
            started: Instant::now(),
            inner: Mutex::new(Inner { pools, failed, state }),
        };
        {
            let inner = node.lock();
            for entry in inner.pools.values() {
                if let Some(error) = node.export_ready(entry, &inner.state).into_iter().next() {
                    return Err(error);
                }
            }
            let volumes: usize = inner.pools.values().map(|e| e.pool.volumes().len()).sum();
            tracing::info!(
                pools = inner.pools.len(),
                failed = inner.failed.len(),
                volumes,
                "node storage opened; volumes exported"
            );
        }
        Ok(node)
    }

    /// Binds the listeners added through the API before the last stop. Call once the
    /// reactors run. An address still held by a killed predecessor is waited for, as the
    /// configuration's are ([`Target::add_listener_at_start`]); a listener that cannot be bound
    /// is logged and kept in the state (its address may come back); the others serve.
    pub fn restore_listeners(&self) {
        let inner = self.lock();
        for l in &inner.state.listeners {
            let listener = config::Listener {
                transport: if l.transport == Transport::Rdma.as_str() { Transport::Rdma } else { Transport::Tcp },
                address: l.address,
                advertise: l.advertise,
                discovery_only: l.discovery_only,
            };
            match self.target.add_listener_at_start(&listener, START_BIND_PATIENCE) {
                Ok(info) => {
                    tracing::info!(address = %info.bound, port_id = info.port_id, "listener added through the API restored")
                }
                Err(error) => {
                    tracing::error!(address = %l.address, %error, "cannot restore a listener added through the API")
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug that already stopped a request; the data
        // under it is only changed after the durable step succeeded, so it is still coherent.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn save(&self, inner: &mut Inner, next: state::NodeState) -> Result<()> {
        state::save(&self.state_path, &next)?;
        inner.state = next;
        Ok(())
    }

    // -- volumes ----------------------------------------------------------------------------

    pub fn list_volumes(&self) -> Vec<VolumeInfo> {
        let inner = self.lock();
        let mut out: Vec<VolumeInfo> = inner
            .pools
            .iter()
            .flat_map(|(name, e)| e.pool.volumes().iter().map(move |v| (name, v)))
            .map(|(pool, v)| self.info(&inner, pool, v))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn get_volume(&self, id: &str) -> Result<VolumeInfo> {
        let id = parse_id(id)?;
        let inner = self.lock();
        let (pool, v) = find(&inner, id)?;
        Ok(self.info(&inner, pool, v))
    }

    /// Creates and exports a volume. `Ok((info, true))` when it was created; `Ok((info,
    /// false))` when a volume of that name, size, block size (and pool, if named) exists
    /// already: the hosts asked for are then allowed on it, so a retried create converges.
    pub fn create_volume(&self, req: &CreateVolume) -> Result<(VolumeInfo, bool)> {
        let hosts = check_hosts(&req.hosts)?;
        let mut inner = self.lock();
        if let Some((pool, v)) = find_by_name(&inner, &req.name) {
            let (pool, id) = (pool.to_owned(), v.id());
            let extent = v.extent_bytes();
            let same = v.size_bytes() == req.size_bytes.div_ceil(extent).saturating_mul(extent)
                && v.block_size().bytes() == req.block_size
                && req.pool.as_ref().is_none_or(|p| *p == pool);
            if !same {
                return Err(NodeError::VolumeExists {
                    name: req.name.clone(),
                    id,
                    size_bytes: v.size_bytes(),
                    block_size: v.block_size().bytes(),
                    pool,
                });
            }
            if v.state() == VolumeState::Deleting {
                return Err(NodeError::Deleting(id));
            }
            let mut access = inner.state.volumes.get(&id.to_string()).cloned().unwrap_or_default();
            let before = access.clone();
            access.allow_any_host |= req.allow_any_host;
            access.hosts.extend(hosts);
            access.hosts.sort();
            access.hosts.dedup();
            if access != before {
                self.set_access(&mut inner, id, access)?;
            }
            let (pool, v) = find(&inner, id)?;
            return Ok((self.info(&inner, pool, v), false));
        }
        let pool_name = match &req.pool {
            Some(name) => {
                if let Some(f) = inner.failed.get(name) {
                    return Err(NodeError::PoolFailed { name: name.clone(), error: f.error.clone() });
                }
                if !inner.pools.contains_key(name) {
                    return Err(NodeError::PoolNotFound(name.clone()));
                }
                name.clone()
            }
            None => emptiest_pool(&inner).ok_or_else(|| NodeError::PoolNotFound(String::from("(none configured)")))?,
        };
        let entry = inner.pools.get_mut(&pool_name).expect("checked above");
        let volume = entry.pool.create_volume(&req.name, req.size_bytes, req.block_size)?;
        let id = volume.id();
        let access = Access { allow_any_host: req.allow_any_host, hosts };
        if access.is_open() {
            let mut next = inner.state.clone();
            next.volumes.insert(id.to_string(), access.clone());
            if let Err(error) = self.save(&mut inner, next) {
                // No half-made volume: without its hosts recorded, it is taken back.
                let entry = inner.pools.get_mut(&pool_name).expect("the pool is open");
                if let Err(undo) = entry.pool.delete_volume(id) {
                    tracing::error!(volume = %id, %undo, "could not take back a volume whose hosts were not recorded");
                }
                return Err(error);
            }
        }
        let entry = &inner.pools[&pool_name];
        let volume = entry.pool.volume(id)?.clone();
        if let Err(error) = self.export(entry, &volume, &access) {
            let entry = inner.pools.get_mut(&pool_name).expect("the pool is open");
            if let Err(undo) = entry.pool.delete_volume(id) {
                tracing::error!(volume = %id, %undo, "could not take back a volume that could not be exported");
            }
            return Err(error);
        }
        tracing::info!(volume = %id, name = %req.name, pool = %pool_name, size_bytes = volume.size_bytes(), "volume created and exported");
        Ok((self.info(&inner, &pool_name, &volume), true))
    }

    /// Grows a volume and/or changes `allow_any_host`.
    pub fn update_volume(&self, id: &str, req: &UpdateVolume) -> Result<VolumeInfo> {
        let id = parse_id(id)?;
        let mut inner = self.lock();
        let (pool_name, v) = find(&inner, id)?;
        let pool_name = pool_name.to_owned();
        if v.state() == VolumeState::Deleting {
            return Err(NodeError::Deleting(id));
        }
        if let Some(size_bytes) = req.size_bytes {
            let entry = inner.pools.get_mut(&pool_name).expect("found above");
            let before = entry.pool.volume(id)?.size_bytes();
            let grown = entry.pool.grow_volume(id, size_bytes)?;
            if grown.size_bytes() != before {
                let entry = &inner.pools[&pool_name];
                if let Some(subsys) = self.target.subsystem(&volume_nqn(id)) {
                    let ns = self.namespace(entry, &grown);
                    if subsys.replace_namespace(ns).is_err() {
                        // The subsystem lost its namespace: only a bug gets here.
                        tracing::error!(volume = %id, "the exported volume had no namespace to replace");
                    }
                }
                tracing::info!(volume = %id, size_bytes = grown.size_bytes(), "volume grown");
            }
        }
        if let Some(any) = req.allow_any_host {
            let mut access = inner.state.volumes.get(&id.to_string()).cloned().unwrap_or_default();
            if access.allow_any_host != any {
                access.allow_any_host = any;
                self.set_access(&mut inner, id, access)?;
            }
        }
        let (pool, v) = find(&inner, id)?;
        Ok(self.info(&inner, pool, v))
    }

    /// Deletes a volume: refused while exported unless `force`; its hosts are disconnected,
    /// its extents discarded.
    pub fn delete_volume(&self, id: &str, force: bool) -> Result<()> {
        let id = parse_id(id)?;
        let mut inner = self.lock();
        let (pool_name, v) = find(&inner, id)?;
        let (pool_name, ready) = (pool_name.to_owned(), v.state() == VolumeState::Ready);
        let access = inner.state.volumes.get(&id.to_string()).cloned().unwrap_or_default();
        let controllers = self.target.subsystem(&volume_nqn(id)).map_or(0, |s| s.connections().controllers);
        if !force && (access.is_open() || controllers > 0) {
            let why = match (access.allow_any_host, access.hosts.len(), controllers) {
                (true, _, c) => format!("any host may connect; {c} controller(s) connected"),
                (false, h, c) => format!("{h} host(s) allowed; {c} controller(s) connected"),
            };
            return Err(NodeError::Exported { id, why });
        }
        if ready && let Err(waited_ms) = self.unexport(id) {
            let entry = &inner.pools[&pool_name];
            let volume = entry.pool.volume(id)?.clone();
            self.export(entry, &volume, &access)?;
            return Err(NodeError::Busy { id, waited_ms });
        }
        let entry = inner.pools.get_mut(&pool_name).expect("found above");
        entry.pool.delete_volume(id)?;
        if inner.state.volumes.contains_key(&id.to_string()) {
            let mut next = inner.state.clone();
            next.volumes.remove(&id.to_string());
            if let Err(error) = self.save(&mut inner, next) {
                // The volume is gone; its entry is dropped with a warning at the next start.
                tracing::warn!(volume = %id, %error, "volume deleted, but its hosts are still in the state file");
            }
        }
        tracing::info!(volume = %id, pool = %pool_name, force, "volume deleted");
        Ok(())
    }

    pub fn hosts(&self, id: &str) -> Result<HostsInfo> {
        let id = parse_id(id)?;
        let inner = self.lock();
        find(&inner, id)?;
        let access = inner.state.volumes.get(&id.to_string()).cloned().unwrap_or_default();
        Ok(HostsInfo { allow_any_host: access.allow_any_host, hosts: access.hosts })
    }

    /// Allows `hostnqn` on a volume: durable first, then live. `Ok(true)` when it was not
    /// allowed before.
    pub fn allow_host(&self, id: &str, hostnqn: &str) -> Result<(HostsInfo, bool)> {
        let id = parse_id(id)?;
        let host = check_hosts(&[hostnqn.to_owned()])?.remove(0);
        let mut inner = self.lock();
        let (_, v) = find(&inner, id)?;
        if v.state() == VolumeState::Deleting {
            return Err(NodeError::Deleting(id));
        }
        let mut access = inner.state.volumes.get(&id.to_string()).cloned().unwrap_or_default();
        let added = !access.hosts.contains(&host);
        if added {
            access.hosts.push(host);
            access.hosts.sort();
            self.set_access(&mut inner, id, access.clone())?;
        }
        Ok((HostsInfo { allow_any_host: access.allow_any_host, hosts: access.hosts }, added))
    }

    /// Revokes `hostnqn` on a volume: durable first, then live (its controllers are
    /// disconnected). Revoking a host that is not allowed changes nothing.
    pub fn revoke_host(&self, id: &str, hostnqn: &str) -> Result<HostsInfo> {
        let id = parse_id(id)?;
        let mut inner = self.lock();
        find(&inner, id)?;
        let mut access = inner.state.volumes.get(&id.to_string()).cloned().unwrap_or_default();
        if access.hosts.iter().any(|h| h == hostnqn) {
            access.hosts.retain(|h| h != hostnqn);
            self.set_access(&mut inner, id, access.clone())?;
        }
        Ok(HostsInfo { allow_any_host: access.allow_any_host, hosts: access.hosts })
    }

    /// Records `access` for volume `id` (durably), then applies it to the live subsystem.
    fn set_access(&self, inner: &mut Inner, id: VolumeId, access: Access) -> Result<()> {
        let mut next = inner.state.clone();
        let old = next.volumes.get(&id.to_string()).cloned().unwrap_or_default();
        if access.is_open() {
            next.volumes.insert(id.to_string(), access.clone());
        } else {
            next.volumes.remove(&id.to_string());
        }
        self.save(inner, next)?;
        if let Some(subsys) = self.target.subsystem(&volume_nqn(id)) {
            for host in access.hosts.iter().filter(|h| !old.hosts.contains(h)) {
                subsys.allow_host(host);
            }
            if access.allow_any_host != old.allow_any_host {
                subsys.set_allow_any_host(access.allow_any_host);
            }
            // Controllers of hosts no longer allowed are torn down by the subsystem.
            for host in old.hosts.iter().filter(|h| !access.hosts.contains(h)) {
                subsys.revoke_host(host);
            }
        }
        tracing::info!(volume = %id, allow_any_host = access.allow_any_host, hosts = access.hosts.len(), "volume access changed");
        Ok(())
    }

    // -- exports ----------------------------------------------------------------------------

    fn namespace(&self, entry: &PoolEntry, v: &Volume) -> Namespace {
        let e = v.extent_bytes();
        let extents = v
            .runs()
            .iter()
            .map(|r| Extent { offset: r.logical_start * e, device_offset: r.physical_start * e, len: r.count * e })
            .collect();
        let block_size = v.block_size().bytes();
        let (fd, direct) = entry.data.for_block_size(block_size);
        let backend = Backend::volume(fd, direct, extents, v.size_bytes());
        let uuid = v.id().get();
        Namespace::new(VOLUME_NSID, block_size, backend, uuid, *uuid.as_bytes(), self.reactors)
    }

    /// Exports a Ready volume as its own subsystem with namespace 1.
    fn export(&self, entry: &PoolEntry, v: &Volume, access: &Access) -> Result<()> {
        let nqn_text = volume_nqn(v.id());
        let nqn = Nqn::parse(&nqn_text).expect("a volume NQN is a valid NQN");
        let hosts = access.hosts.iter().cloned().collect();
        let subsys = Subsystem::new(
            nqn,
            SubsystemKind::Nvm,
            crate::daemon::derived_serial(&nqn_text),
            String::from("fabriq volume"),
            access.allow_any_host,
            hosts,
        );
        subsys.add_namespace(self.namespace(entry, v)).map_err(|_| NodeError::NqnInUse(nqn_text.clone()))?;
        self.target.add_subsystem(subsys).map_err(|_| NodeError::NqnInUse(nqn_text))?;
        Ok(())
    }

    /// Takes a volume's subsystem out of the target (its controllers are torn down, no host
    /// may connect any more) and waits until no command is in flight on its namespace: from
    /// then on nothing touches its extents. `Err(waited_ms)` when commands are still in flight
    /// after [`DRAIN_LIMIT`] (the subsystem stays out; the caller exports the volume again).
    fn unexport(&self, id: VolumeId) -> std::result::Result<(), u64> {
        let Some(subsys) = self.target.remove_subsystem(&volume_nqn(id)) else { return Ok(()) };
        let Some(mut ns) = subsys.remove_namespace(VOLUME_NSID.get()) else { return Ok(()) };
        let start = Instant::now();
        // Queues keep the namespace (through their table snapshots) while a command on it is
        // in flight; each lets go once it has seen the change or closed.
        loop {
            match Arc::try_unwrap(ns) {
                Ok(_) => return Ok(()),
                Err(back) if start.elapsed() < DRAIN_LIMIT => {
                    ns = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return Err(start.elapsed().as_millis() as u64),
            }
        }
    }

    fn connect_info(&self, id: VolumeId) -> Option<ConnectInfo> {
        let listeners = self.target.listeners();
        let l = listeners.iter().find(|l| !l.discovery_only)?;
        Some(ConnectInfo {
            transport: l.transport.to_string(),
            address: l.advertised.ip().to_string(),
            port: l.advertised.port(),
            nqn: volume_nqn(id),
        })
    }

    fn info(&self, inner: &Inner, pool: &str, v: &Volume) -> VolumeInfo {
        let access = inner.state.volumes.get(&v.id().to_string()).cloned().unwrap_or_default();
        let subsys = self.target.subsystem(&volume_nqn(v.id()));
        let connections = subsys.as_ref().map(|s| s.connections()).unwrap_or_default();
        let controllers = connections.controllers;
        VolumeInfo {
            id: v.id().to_string(),
            name: v.name().to_string(),
            pool: pool.to_owned(),
            size_bytes: v.size_bytes(),
            block_size: v.block_size().bytes(),
            blocks: v.blocks(),
            state: match v.state() {
                VolumeState::Ready => String::from("ready"),
                VolumeState::Deleting => String::from("deleting"),
            },
            created_unix_s: v.created_unix_s(),
            nqn: volume_nqn(v.id()),
            served: subsys.is_some(),
            exported: access.is_open() || controllers > 0,
            access,
            controllers,
            io_queues: connections.io_queues,
            connect: self.connect_info(v.id()),
        }
    }

    // -- pools ------------------------------------------------------------------------------

    pub fn list_pools(&self) -> Vec<PoolInfoView> {
        pool_views(&self.lock())
    }

    pub fn get_pool(&self, name: &str) -> Result<PoolInfoView> {
        let inner = self.lock();
        match (inner.pools.get(name), inner.failed.get(name)) {
            (Some(entry), _) => Ok(pool_view(name, entry)),
            (None, Some(f)) => Ok(failed_pool_view(name, f)),
            (None, None) => Err(NodeError::PoolNotFound(name.to_owned())),
        }
    }

    /// Pools that failed to open at start-up, by name, with the reason.
    pub fn failed_pools(&self) -> Vec<(String, String)> {
        self.lock().failed.iter().map(|(name, f)| (name.clone(), f.error.clone())).collect()
    }

    /// Opens the pool on a device (or creates it there), exports its volumes, and records it
    /// so that it is opened again at the next start. The name and path of a pool that failed
    /// to open at start-up try that pool again (without `force`: it is opened, never created
    /// over); on success it is online and its volumes are served to their hosts.
    pub fn add_pool(&self, req: &AddPool) -> Result<PoolInfoView> {
        crate::storage::Name::new(&req.name).map_err(|problem| {
            StorageError::from(crate::storage::InvalidArgument::Name { name: req.name.clone(), problem })
        })?;
        let mut inner = self.lock();
        if let Some(f) = inner.failed.get(&req.name) {
            if !same_path(&f.path, &req.path) || req.force {
                return Err(NodeError::PoolExists(req.name.clone()));
            }
            return self.retry_failed_pool(&mut inner, &req.name);
        }
        if inner.pools.contains_key(&req.name) {
            return Err(NodeError::PoolExists(req.name.clone()));
        }
        if let Some((name, _)) = inner.pools.iter().find(|(_, e)| same_path(&e.path, &req.path)) {
            return Err(NodeError::PathInUse { path: req.path.clone(), name: name.clone() });
        }
        if let Some((name, _)) = inner.failed.iter().find(|(_, f)| same_path(&f.path, &req.path)) {
            return Err(NodeError::PathInUse { path: req.path.clone(), name: name.clone() });
        }
        let (pool, data) = open_or_create(&req.name, &req.path, req.size_bytes, req.force)?;
        names_free(&inner.pools, &req.name, &pool)?;
        let mut next = inner.state.clone();
        next.pools.push(state::Pool { name: req.name.clone(), path: req.path.clone() });
        self.save(&mut inner, next)?;
        let entry = PoolEntry { pool, path: req.path.clone(), data, from_config: false };
        let view = self.bring_online(&mut inner, &req.name, entry);
        tracing::info!(pool = %req.name, path = %req.path.display(), volumes = view.volumes, "pool added");
        Ok(view)
    }

    /// Exports every Ready volume of `entry` with the hosts the state gives it; the errors,
    /// volume by volume (the others are exported).
    fn export_ready(&self, entry: &PoolEntry, state: &state::NodeState) -> Vec<NodeError> {
        let mut errors = Vec::new();
        for v in entry.pool.volumes().iter().filter(|v| v.state() == VolumeState::Ready) {
            let access = state.volumes.get(&v.id().to_string()).cloned().unwrap_or_default();
            if let Err(error) = self.export(entry, v, &access) {
                tracing::error!(volume = %v.id(), %error, "a volume cannot be exported");
                errors.push(error);
            }
        }
        errors
    }

    /// Exports an opened pool's volumes (a volume that cannot be is logged) and adds the pool.
    fn bring_online(&self, inner: &mut Inner, name: &str, entry: PoolEntry) -> PoolInfoView {
        self.export_ready(&entry, &inner.state);
        let view = pool_view(name, &entry);
        inner.pools.insert(name.to_owned(), entry);
        view
    }

    /// Closes a pool added through the API and forgets it (see `DELETE /v1/pools/{name}`).
    /// Its label stays: adding the device again opens it.
    pub fn remove_pool(&self, name: &str, force: bool) -> Result<()> {
        let mut inner = self.lock();
        let from_config = match (inner.pools.get(name), inner.failed.get(name)) {
            (Some(e), _) => {
                let volumes = e.pool.volumes().len();
                if !e.from_config && volumes > 0 {
                    return Err(NodeError::PoolNotEmpty { name: name.to_owned(), volumes });
                }
                e.from_config
            }
            (None, Some(f)) => {
                if !f.from_config && !force {
                    return Err(NodeError::PoolFailed { name: name.to_owned(), error: f.error.clone() });
                }
                f.from_config
            }
            (None, None) => return Err(NodeError::PoolNotFound(name.to_owned())),
        };
        if from_config {
            return Err(NodeError::ConfiguredPool(name.to_owned()));
        }
        let mut next = inner.state.clone();
        next.pools.retain(|p| p.name != name);
        self.save(&mut inner, next)?;
        inner.pools.remove(name);
        inner.failed.remove(name);
        tracing::info!(pool = %name, "pool removed from the node");
        Ok(())
    }

    /// Opens a pool that failed at start-up again and serves its volumes. It is in the state
    /// file (or the configuration) already; a failure leaves it failed, with the new reason.
    fn retry_failed_pool(&self, inner: &mut Inner, name: &str) -> Result<PoolInfoView> {
        let f = inner.failed.get_mut(name).expect("checked by the caller");
        let (pool, data) = match open_or_create(name, &f.path, None, false) {
            Ok(opened) => opened,
            Err(error) => {
                f.error = error.to_string();
                return Err(error);
            }
        };
        // A volume made while the pool was away may have taken one of its names.
        names_free(&inner.pools, name, &pool)?;
        let f = inner.failed.remove(name).expect("checked by the caller");
        let entry = PoolEntry { pool, path: f.path, data, from_config: f.from_config };
        let view = self.bring_online(inner, name, entry);
        tracing::info!(pool = %name, volumes = view.volumes, "a pool that had failed to open is online");
        Ok(view)
    }

    // -- listeners --------------------------------------------------------------------------

    pub fn list_listeners(&self) -> Vec<ListenerView> {
        self.target.listeners().iter().map(|l| self.listener_view(l)).collect()
    }

    fn listener_view(&self, l: &ListenerInfo) -> ListenerView {
        ListenerView {
            port_id: l.port_id,
            transport: l.transport.to_string(),
            address: l.bound,
            advertised: l.advertised,
            discovery_only: l.discovery_only,
            source: String::from(if self.configured_ports.contains(&l.port_id) { "config" } else { "api" }),
        }
    }

    /// Binds a new listener and records it (with the port as bound) for the next start: a
    /// TCP socket, or (with the `rdma` feature) an RDMA CM id that reactor 0's RDMA engine
    /// serves.
    pub fn add_listener(&self, req: &AddListener) -> Result<ListenerView> {
        let transport = match req.transport.as_str() {
            "tcp" => Transport::Tcp,
            "rdma" if cfg!(feature = "rdma") => Transport::Rdma,
            "rdma" => return Err(NodeError::BadListener(ListenerProblem::RdmaNotBuilt)),
            other => return Err(NodeError::BadListener(ListenerProblem::Transport(other.to_owned()))),
        };
        if req.address.ip().is_unspecified() && req.advertise.is_none() {
            return Err(NodeError::BadListener(ListenerProblem::WildcardNeedsAdvertise));
        }
        if req.advertise.is_some_and(|a| a.ip().is_unspecified() || a.port() == 0) {
            return Err(NodeError::BadListener(ListenerProblem::BadAdvertise));
        }
        let mut inner = self.lock();
        let listeners = self.target.listeners();
        // TCP ports and the RDMA CM's port space are apart (RoCE and InfiniBand): an NVMe/TCP
        // and an NVMe/RDMA listener may share an address and port, as 4420 usually does.
        let overlaps = |l: &ListenerInfo| {
            let (a, b) = (req.address, l.bound);
            l.transport == transport
                && a.port() != 0
                && a.port() == b.port()
                && a.is_ipv4() == b.is_ipv4()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        };
        if let Some(l) = listeners.iter().find(|l| overlaps(l)) {
            return Err(NodeError::ListenerExists(l.bound));
        }
        let listener = config::Listener {
            transport,
            address: req.address,
            advertise: req.advertise,
            discovery_only: req.discovery_only,
        };
        let info =
            self.target.add_listener(&listener).map_err(|source| NodeError::Bind { address: req.address, source })?;
        let mut next = inner.state.clone();
        next.listeners.push(state::Listener {
            transport: transport.to_string(),
            address: info.bound,
            advertise: req.advertise,
            discovery_only: req.discovery_only,
        });
        if let Err(error) = self.save(&mut inner, next) {
            self.target.remove_listener(info.port_id);
            return Err(error);
        }
        tracing::info!(%transport, address = %info.bound, port_id = info.port_id, "listener added");
        Ok(self.listener_view(&info))
    }

    /// Stops listening on a listener added through the API and forgets it.
    pub fn remove_listener(&self, port_id: u16) -> Result<()> {
        let mut inner = self.lock();
        let listeners = self.target.listeners();
        let l = listeners.iter().find(|l| l.port_id == port_id).ok_or(NodeError::ListenerNotFound(port_id))?;
        if self.configured_ports.contains(&port_id) {
            return Err(NodeError::ConfiguredListener { port_id, address: l.bound });
        }
        let mut next = inner.state.clone();
        next.listeners.retain(|s| s.address != l.bound || s.transport != l.transport.as_str());
        self.save(&mut inner, next)?;
        self.target.remove_listener(port_id);
        tracing::info!(address = %l.bound, port_id, "listener removed");
        Ok(())
    }

    // -- reports ----------------------------------------------------------------------------

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// (pools, volumes) on the node.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.pools.len(), inner.pools.values().map(|e| e.pool.volumes().len()).sum())
    }

    pub fn metrics(&self) -> Metrics {
        let inner = self.lock();
        let pools = pool_views(&inner);
        let mut volumes = Vec::new();
        for (pool, e) in &inner.pools {
            for v in e.pool.volumes() {
                let subsys = self.target.subsystem(&volume_nqn(v.id()));
                let totals = subsys
                    .as_ref()
                    .and_then(|s| s.namespaces().find(VOLUME_NSID.get()).map(|(_, ns)| ns.stats.totals()))
                    .unwrap_or_default();
                volumes.push(VolumeMetrics {
                    id: v.id().to_string(),
                    name: v.name().to_string(),
                    pool: pool.clone(),
                    size_bytes: v.size_bytes(),
                    totals,
                    connections: subsys.as_ref().map(|s| s.connections()).unwrap_or_default(),
                });
            }
        }
        Metrics { pools, volumes, listeners: self.target.listeners().len(), uptime_s: self.started.elapsed().as_secs() }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn parse_id(text: &str) -> Result<VolumeId> {
    VolumeId::parse(text).ok_or_else(|| NodeError::BadVolumeId(text.to_owned()))
}

fn find(inner: &Inner, id: VolumeId) -> Result<(&str, &Volume)> {
    inner
        .pools
        .iter()
        .find_map(|(name, e)| e.pool.volume(id).ok().map(|v| (name.as_str(), v)))
        .ok_or(NodeError::VolumeNotFound(id))
}

fn find_by_name<'a>(inner: &'a Inner, name: &str) -> Option<(&'a str, &'a Volume)> {
    inner.pools.iter().find_map(|(p, e)| e.pool.volume_by_name(name).ok().map(|v| (p.as_str(), v)))
}

fn emptiest_pool(inner: &Inner) -> Option<String> {
    inner.pools.iter().max_by_key(|(_, e)| e.pool.info().free_bytes).map(|(name, _)| name.clone())
}

/// Validated, sorted, de-duplicated host NQNs.
fn check_hosts(hosts: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(hosts.len());
    for h in hosts {
        Nqn::parse(h).map_err(|problem| NodeError::BadHostNqn { nqn: h.clone(), problem })?;
        out.push(h.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Files the outcome of opening a pool at start-up: an open pool into `pools`, one that
/// failed into `failed` (logged).
fn file_pool(
    pools: &mut BTreeMap<String, PoolEntry>,
    failed: &mut BTreeMap<String, FailedPool>,
    name: &str,
    path: &Path,
    from_config: bool,
    opened: Result<(Pool, DataPath)>,
) {
    match opened {
        Ok((pool, data)) => {
            pools.insert(name.to_owned(), PoolEntry { pool, path: path.to_owned(), data, from_config });
        }
        Err(error) => {
            tracing::error!(pool = %name, path = %path.display(), from_config, %error, "cannot open a pool; its volumes are not served");
            failed.insert(name.to_owned(), FailedPool { path: path.to_owned(), from_config, error: error.to_string() });
        }
    }
}

/// Refuses a pool that holds a volume whose name an open pool's volume has already.
fn names_free(pools: &BTreeMap<String, PoolEntry>, name: &str, pool: &Pool) -> Result<()> {
    let names: BTreeSet<String> =
        pools.values().flat_map(|e| e.pool.volumes().iter().map(|v| v.name().to_string())).collect();
    match pool.volumes().iter().find(|v| names.contains(v.name().as_str())) {
        Some(clash) => Err(NodeError::VolumeExists {
            name: clash.name().to_string(),
            id: clash.id(),
            size_bytes: clash.size_bytes(),
            block_size: clash.block_size().bytes(),
            pool: name.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Two pools holding volumes of one name (pools moved between nodes can do that): both are
/// served, but lookups by name find the first; said loudly.
fn check_unique_volume_names(pools: &BTreeMap<String, PoolEntry>) {
    let mut seen = BTreeMap::new();
    for (pool, e) in pools {
        for v in e.pool.volumes() {
            if let Some(first) = seen.insert(v.name().to_string(), pool.clone()) {
                tracing::warn!(name = %v.name(), first = %first, second = %pool, "two pools hold a volume of this name; creates by name see the first");
            }
        }
    }
}

fn pool_view(name: &str, e: &PoolEntry) -> PoolInfoView {
    let info = e.pool.info();
    PoolInfoView {
        name: name.to_owned(),
        id: info.id.to_string(),
        path: e.path.clone(),
        source: String::from(if e.from_config { "config" } else { "api" }),
        capacity_bytes: info.capacity_bytes,
        free_bytes: info.free_bytes,
        used_bytes: info.capacity_bytes - info.free_bytes,
        extent_bytes: info.extent_bytes,
        device_bytes: info.device_bytes,
        volumes: info.volumes,
        generation: info.generation,
        direct: e.data.direct.is_some(),
        direct_512: e.data.direct.is_some() && e.data.direct_min_block == 512,
        state: String::from("online"),
        error: None,
    }
}

fn failed_pool_view(name: &str, f: &FailedPool) -> PoolInfoView {
    PoolInfoView {
        name: name.to_owned(),
        id: String::new(),
        path: f.path.clone(),
        source: String::from(if f.from_config { "config" } else { "api" }),
        capacity_bytes: 0,
        free_bytes: 0,
        used_bytes: 0,
        extent_bytes: 0,
        device_bytes: 0,
        volumes: 0,
        generation: 0,
        direct: false,
        direct_512: false,
        state: String::from("failed"),
        error: Some(f.error.clone()),
    }
}

/// Every pool, online and failed, by name.
fn pool_views(inner: &Inner) -> Vec<PoolInfoView> {
    let mut views: Vec<PoolInfoView> = inner.pools.iter().map(|(name, e)| pool_view(name, e)).collect();
    views.extend(inner.failed.iter().map(|(name, f)| failed_pool_view(name, f)));
    views.sort_by(|a, b| a.name.cmp(&b.name));
    views
}

/// Opens the pool on `path`, or creates it there: a missing file is created (sparse) when
/// `size_bytes` is given; a device without a label gets a new pool; a device holding a pool
/// of another name, a file system or a partition table is refused unless `force`.
fn open_or_create(name: &str, path: &Path, size_bytes: Option<u64>, force: bool) -> Result<(Pool, DataPath)> {
    let device = match std::fs::metadata(path) {
        Ok(_) => FileDevice::open(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let size = size_bytes.ok_or_else(|| NodeError::MissingDevice(path.to_owned()))?;
            if size < POOL_FILE_MIN_BYTES || !size.is_multiple_of(4096) {
                return Err(NodeError::PoolFileSize(size));
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StorageError::Open { path: dir.to_owned(), source })?;
            }
            FileDevice::create(path, size)?
        }
        Err(source) => return Err(StorageError::Open { path: path.to_owned(), source }.into()),
    };
    let pool = match Pool::open(Box::new(device)) {
        Ok(pool) if pool.name().as_str() == name => pool,
        Ok(pool) if force => {
            tracing::warn!(path = %path.display(), found = %pool.name(), pool = %name, "forced: creating a new pool over another pool");
            Pool::create(pool.into_device(), name, true)?
        }
        Ok(pool) => {
            return Err(NodeError::OtherPool {
                path: path.to_owned(),
                found: pool.name().to_string(),
                name: name.to_owned(),
            });
        }
        Err(StorageError::NotAPool { found }) => {
            if let Some(found) = &found {
                tracing::warn!(path = %path.display(), %found, force, "the device holds something else");
            }
            // Pool::open gave the device back by dropping it; open it again to create.
            let device = FileDevice::open(path)?;
            let pool = Pool::create(Box::new(device), name, force)?;
            tracing::info!(pool = %name, path = %path.display(), "pool created");
            pool
        }
        Err(other) => return Err(other.into()),
    };
    let data = DataPath::open(path).map_err(|source| NodeError::DataPath { path: path.to_owned(), source })?;
    Ok((pool, data))
}
