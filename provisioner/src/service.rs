//! The provisioner's operations: nodes, volumes, host access, capacity. Synchronous (the API
//! runs them on blocking threads, the reconciler on its own), each under the lock of the name
//! it changes, each multi-step change written as an intent first (see [`crate::model`]).
//!
//! The steps, and where a crash between them leaves things (the reconciler, or the caller's
//! retry, takes it from there):
//!
//! | operation | steps | after a crash |
//! |---|---|---|
//! | create | place, record `Creating` (with node, pool) -> carve on the node (idempotent by name) -> record `Ready` | carved again (the node finds it) and committed; rolled back if the node refuses for good |
//! | delete | record `Deleting` -> delete on the node (gone counts as done) -> delete the record, write a tombstone | the node's delete again, then the record |
//! | grow | record the new size -> grow on the node | the node grown to the recorded size |
//! | publish / unpublish | record the host set -> allow / revoke on the node | the node's list driven to the record's |
//!
//! Free space for placement is the smaller of what the node last reported and what the
//! records leave (the pool's capacity less every recorded volume on it): a volume recorded a
//! moment ago counts before the node reports it, and space the node has given to volumes
//! the provisioner does not know counts too. Should the node still refuse for space, the
//! create moves to the next choice (a refusal is definite: nothing was carved).
//!
//! Invariants: only the leader changes records (followers get [`Error::NotLeader`]); a
//! record is changed only by compare-and-swap on the revision it was read at, under its
//! name's lock; a node's outcome that is unknown (unreachable, 5xx) never leads to undoing
//! anything: the intent stays for a retry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::failpoint;
use crate::leader::Leadership;
use crate::locks::NameLocks;
use crate::model::{
    self, Invalid, NodeRecord, Phase, Placement, Requirements, Tombstone, VolumeRecord, check_block_size,
    check_host_nqn, check_labels, check_name, check_requirements, check_size, check_token, check_url, now_unix_s,
};
use crate::nodeapi::{CallError, NodeClient, Observation};
use crate::placement::{self, NodeView as PlacementNode, PlacementError, PoolSpace};
use crate::status::{NodeStatus, StatusCache};
use crate::store::{Records, StoreError, Txn, Versioned, encode, node_key, tombstone_key, volume_key};

/// Times a create moves to another node after a refusal for space.
const PLACEMENT_TRIES: usize = 3;
/// Most volumes one list page returns.
pub const MAX_PAGE: usize = 1000;
/// A list page's size when the caller names none.
pub const DEFAULT_PAGE: usize = 100;

// ---------------------------------------------------------------------------------------------
// Errors.

/// Why an operation failed. `crate::api::error` maps each to an HTTP status and code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no volume named {0:?}")]
    VolumeNotFound(String),
    #[error("no node named {0:?}")]
    NodeNotFound(String),
    #[error("volume {name:?} exists with {why}; delete it first or choose another name")]
    VolumeConflict { name: String, why: String },
    #[error("volume {name:?} is being {doing}; retry in a moment")]
    VolumeBusy { name: String, doing: &'static str },
    #[error("volume {name:?} is degraded ({why}): it cannot be changed until an operator looks at its node")]
    VolumeDegraded { name: String, why: String },
    #[error("volume {name:?} is published to {hosts} host(s); unpublish them first, or delete with force=true")]
    VolumePublished { name: String, hosts: usize },
    #[error("volume {name:?} cannot shrink from {current_bytes} to {requested_bytes} bytes")]
    ShrinkRefused { name: String, current_bytes: u64, requested_bytes: u64 },
    #[error("volume {name:?} is published to the most hosts a volume may have ({max})", max = model::MAX_HOSTS)]
    TooManyHosts { name: String },
    #[error("node {name:?} is registered with another URL or token ({url}); update it with PATCH, or remove it first")]
    NodeConflict { name: String, url: String },
    #[error("node URL {url} is registered already, as node {name:?}")]
    UrlTaken { url: String, name: String },
    #[error(
        "node {name:?} holds {volumes} volume(s); delete them first, or remove with force=true (their records go, their data stays on the node)"
    )]
    NodeHasVolumes { name: String, volumes: usize },
    #[error("node {name:?} cannot be reached at {url}: {why}")]
    NodeUnreachableAtRegistration { name: String, url: String, why: String },
    #[error("node {name:?} refused the token given for it")]
    NodeTokenRejected { name: String },
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(
        "pool {pool:?} on node {node:?} has {free_bytes} bytes free, {needed_bytes} more are needed to grow volume {name:?}"
    )]
    NoRoomToGrow { name: String, node: String, pool: String, needed_bytes: u64, free_bytes: u64 },
    #[error("{0}; the change is recorded and will be applied when the node answers")]
    NodeUnavailable(CallError),
    #[error("{0}")]
    NodeRefused(CallError),
    #[error("this provisioner is not the leader; send changes to {}", leader.as_deref().unwrap_or("the leader (not known yet: retry)"))]
    NotLeader { leader: Option<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the record of {0:?} changed under this operation (another provisioner?); retry")]
    Contended(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<CallError> for Error {
    fn from(e: CallError) -> Error {
        if e.is_refusal() { Error::NodeRefused(e) } else { Error::NodeUnavailable(e) }
    }
}

// ---------------------------------------------------------------------------------------------
// What callers send and get back.

/// `POST /v1/nodes`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// Unique: 1..=63 letters, digits, `-`, `_`, `.`.
    #[schema(example = "node-1")]
    pub name: String,
    /// The node API's base URL.
    #[schema(example = "http://192.0.2.10:8800")]
    pub url: String,
    /// The node API's bearer token (the node's `api-token` file).
    pub token: String,
    /// Topology and other labels.
    #[serde(default)]
    #[schema(example = json!({"region": "eu-1", "zone": "a", "rack": "r12"}))]
    pub labels: BTreeMap<String, String>,
}

/// `PATCH /v1/nodes/{name}`: absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNode {
    /// Replaces every label.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Draining: no new volumes are placed on the node (its volumes stay).
    #[serde(default)]
    pub draining: Option<bool>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

/// A node's pool as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    pub name: String,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub volumes: usize,
    /// `online`, or `failed`: the node could not open the pool (see `error`); its volumes
    /// are not served and show as degraded.
    #[schema(example = "online")]
    pub state: String,
    pub error: Option<String>,
}

/// A node: registration, health, capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub name: String,
    pub url: String,
    pub labels: BTreeMap<String, String>,
    /// `active` or `draining`.
    #[schema(example = "active")]
    pub state: String,
    /// `healthy` (the last look succeeded), `unreachable`, or `unknown` (not looked at yet).
    #[schema(example = "healthy")]
    pub health: String,
    pub last_seen_unix_s: Option<u64>,
    pub last_error: Option<String>,
    pub pools: Vec<PoolView>,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    /// Volumes the provisioner placed on the node.
    pub volumes: usize,
    /// Node volumes named like the provisioner's (`fabriq-<uuid>`) that no record explains:
    /// reported, never deleted blindly.
    pub orphans: Vec<String>,
    pub registered_unix_s: u64,
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Unique: 1..=63 letters, digits, `-`, `_`, `.`. Creating is idempotent by name.
    #[schema(example = "pvc-0b6e")]
    pub name: String,
    /// At least this many bytes (nodes round up to whole extents).
    #[schema(example = 10737418240u64)]
    pub size_bytes: u64,
    /// 512 or 4096 (default).
    #[serde(default = "default_block_size")]
    #[schema(default = 4096)]
    pub block_size: u32,
    #[serde(default)]
    pub requirements: Requirements,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_block_size() -> u32 {
    4096
}

/// `PATCH /v1/volumes/{name}`: absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVolume {
    /// Grow to at least this many bytes; shrinking is refused.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Replaces every label.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeView {
    #[schema(example = "0d3f0c52-6a1e-4c3e-9d55-2f9a7e0b1c44")]
    pub id: String,
    pub name: String,
    /// `creating`, `ready`, `degraded` (missing or replaced on its node: see `degraded_reason`),
    /// or `deleting`.
    #[schema(example = "ready")]
    pub state: String,
    /// The size asked for (the create's, then each grow's).
    pub size_bytes: u64,
    /// What the node gave it (rounded up to whole extents); 0 until carved.
    pub capacity_bytes: u64,
    pub block_size: u32,
    pub labels: BTreeMap<String, String>,
    pub requirements: Requirements,
    pub node: String,
    pub pool: String,
    /// The NVMe subsystem hosts connect to; absent until carved.
    pub nqn: Option<String>,
    /// Hosts allowed to connect.
    pub hosts: Vec<String>,
    pub degraded_reason: Option<String>,
    pub created_unix_s: u64,
}

/// `GET /v1/volumes` filters and paging.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VolumeFilter {
    /// Only volumes on this node.
    #[serde(default)]
    pub node: Option<String>,
    /// Only volumes in pools of this name.
    #[serde(default)]
    pub pool: Option<String>,
    /// Only volumes in this state.
    #[serde(default)]
    pub state: Option<String>,
    /// Only volumes with this label: `key=value`.
    #[serde(default)]
    pub label: Option<String>,
    /// Page size: 1..=1000, default 100.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Names after this one (the previous page's `next_after`).
    #[serde(default)]
    pub after: Option<String>,
}

/// One page of volumes, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumePage {
    pub volumes: Vec<VolumeView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<String>,
}

/// One way to reach a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Path {
    #[schema(example = "tcp")]
    pub transport: String,
    #[schema(example = "192.0.2.10")]
    pub address: String,
    #[schema(example = 4420)]
    pub port: u16,
}

/// What a host needs to connect: `nvme connect -t TRANSPORT -a ADDRESS -s PORT -n NQN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Publication {
    pub volume: String,
    pub host: String,
    #[schema(example = "tcp")]
    pub transport: String,
    #[schema(example = "192.0.2.10")]
    pub address: String,
    #[schema(example = 4420)]
    pub port: u16,
    #[schema(example = "nqn.2026-11.dev.fabriq:vol:67e55044-10b1-426f-9247-bb680e5fe0c8")]
    pub nqn: String,
    /// Every path to the volume (the first is the one above).
    pub paths: Vec<Path>,
}

/// `GET /v1/volumes/{name}/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostList {
    pub volume: String,
    pub hosts: Vec<String>,
}

/// Capacity of one topology segment (nodes with one value of one label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SegmentCapacity {
    #[schema(example = "zone")]
    pub key: String,
    #[schema(example = "a")]
    pub value: String,
    pub nodes: usize,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Free on active, reachable nodes of the segment.
    pub placeable_bytes: u64,
    /// The largest volume the segment can take now.
    pub largest_free_bytes: u64,
}

/// `GET /v1/capacity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    pub nodes: usize,
    pub reachable_nodes: usize,
    /// Capacity of every pool of every node (as last seen).
    pub total_bytes: u64,
    /// Free space of every pool of every node (as last seen).
    pub free_bytes: u64,
    /// Free space new volumes can use: active, reachable nodes.
    pub placeable_bytes: u64,
    /// The largest volume that can be created now.
    pub largest_free_bytes: u64,
    /// Per value of each node label (region, zone, rack, ...).
    pub segments: Vec<SegmentCapacity>,
}

// ---------------------------------------------------------------------------------------------
// The service.

/// Reconciler activity, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub passes: AtomicU64,
    pub actions: AtomicU64,
    pub failures: AtomicU64,
}

/// Wakes the reconciler before its next tick.
#[derive(Default)]
pub struct Kick {
    kicked: Mutex<bool>,
    cond: Condvar,
}

impl Kick {
    pub fn kick(&self) {
        *self.kicked.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }

    /// Waits until kicked or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let kicked = self.kicked.lock().unwrap_or_else(|p| p.into_inner());
        let (mut kicked, _) = self.cond.wait_timeout_while(kicked, timeout, |k| !*k).unwrap_or_else(|p| p.into_inner());
        *kicked = false;
    }
}

/// The provisioner (see the module documentation).
pub struct Service {
    pub records: Records,
    pub status: StatusCache,
    pub leadership: Arc<Leadership>,
    pub locks: NameLocks,
    pub kick: Kick,
    pub counters: Counters,
    /// Placement decisions and node removal, one at a time.
    placing: Mutex<()>,
    node_timeout: Duration,
}

fn volume_lock(name: &str) -> String {
    format!("volume/{name}")
}

fn node_lock(name: &str) -> String {
    format!("node/{name}")
}

fn state_of(r: &VolumeRecord) -> &'static str {
    match r.phase {
        Phase::Creating => "creating",
        Phase::Deleting => "deleting",
        Phase::Ready if r.degraded.is_some() => "degraded",
        Phase::Ready => "ready",
    }
}

/// The volume as the API shows it.
pub fn volume_view(r: &VolumeRecord) -> VolumeView {
    VolumeView {
        id: r.id.clone(),
        name: r.name.clone(),
        state: state_of(r).to_owned(),
        size_bytes: r.size_bytes,
        capacity_bytes: r.capacity_bytes,
        block_size: r.block_size,
        labels: r.labels.clone(),
        requirements: r.requirements.clone(),
        node: r.placement.node.clone(),
        pool: r.placement.pool.clone(),
        nqn: r.nqn.clone(),
        hosts: r.hosts.iter().cloned().collect(),
        degraded_reason: r.degraded.clone(),
        created_unix_s: r.created_unix_s,
    }
}

fn round_up(bytes: u64, extent: u64) -> u64 {
    let extent = extent.max(1);
    bytes.div_ceil(extent).saturating_mul(extent)
}

impl Service {
    pub fn new(records: Records, leadership: Arc<Leadership>, node_timeout: Duration) -> Service {
        Service {
            records,
            status: StatusCache::default(),
            leadership,
            locks: NameLocks::default(),
            kick: Kick::default(),
            counters: Counters::default(),
            placing: Mutex::new(()),
            node_timeout,
        }
    }

    /// Changes are the leader's.
    fn writable(&self) -> Result<()> {
        if self.leadership.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader { leader: self.leadership.leader_url() })
        }
    }

    pub fn client(&self, node: &NodeRecord) -> NodeClient {
        NodeClient::new(&node.name, &node.url, &node.token, self.node_timeout)
    }

    /// Writes `record` over the revision it was read at.
    fn swap(&self, old: &Versioned<VolumeRecord>, record: VolumeRecord) -> Result<Versioned<VolumeRecord>> {
        let key = volume_key(&record.name);
        let txn = Txn::new().when(&key, old.revision).put(&key, encode(&record));
        if !self.records.commit(&txn)? {
            return Err(Error::Contended(record.name));
        }
        let fresh = self.records.volume(&record.name)?.ok_or_else(|| Error::Contended(record.name.clone()))?;
        Ok(fresh)
    }

    /// Looks at a node now and keeps what it saw; `None` when it cannot be reached.
    pub fn refresh(&self, node: &NodeRecord) -> Option<Observation> {
        match self.client(node).observe() {
            Ok(o) => {
                self.status.seen(&node.name, o.clone());
                Some(o)
            }
            Err(e) => {
                self.status.unreachable(&node.name, e.to_string());
                None
            }
        }
    }

    fn node_record(&self, name: &str) -> Result<Versioned<NodeRecord>> {
        self.records.node(name)?.ok_or_else(|| Error::NodeNotFound(name.to_owned()))
    }

    // -- nodes ------------------------------------------------------------------------------

    fn node_view(&self, n: &NodeRecord, status: &NodeStatus, volumes: usize) -> NodeView {
        let pools: Vec<PoolView> = status
            .observation
            .as_ref()
            .map(|o| {
                o.pools
                    .iter()
                    .map(|p| PoolView {
                        name: p.name.clone(),
                        capacity_bytes: p.capacity_bytes,
                        free_bytes: p.free_bytes,
                        volumes: p.volumes,
                        state: p.state.clone(),
                        error: p.error.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        NodeView {
            name: n.name.clone(),
            url: n.url.clone(),
            labels: n.labels.clone(),
            state: String::from(if n.draining { "draining" } else { "active" }),
            health: String::from(match status.reachable {
                Some(true) => "healthy",
                Some(false) => "unreachable",
                None => "unknown",
            }),
            last_seen_unix_s: status.last_seen_unix_s,
            last_error: status.last_error.clone(),
            capacity_bytes: pools.iter().map(|p| p.capacity_bytes).sum(),
            free_bytes: pools.iter().map(|p| p.free_bytes).sum(),
            pools,
            volumes,
            orphans: status.orphans.clone(),
            registered_unix_s: n.registered_unix_s,
        }
    }

    pub fn list_nodes(&self) -> Result<Vec<NodeView>> {
        let by_node = self.records.volumes_by_node()?;
        let status = self.status.all();
        Ok(self
            .records
            .nodes()?
            .iter()
            .map(|n| {
                let s = status.get(&n.record.name).cloned().unwrap_or_default();
                self.node_view(&n.record, &s, by_node.get(&n.record.name).map_or(0, Vec::len))
            })
            .collect())
    }

    pub fn get_node(&self, name: &str) -> Result<NodeView> {
        let n = self.node_record(name)?;
        let volumes = self.records.volumes()?.iter().filter(|v| v.record.placement.node == name).count();
        Ok(self.node_view(&n.record, &self.status.get(name), volumes))
    }

    /// Checks that the node answers with this token.
    fn probe(&self, name: &str, url: &str, token: &str) -> Result<Observation> {
        let client = NodeClient::new(name, url, token, self.node_timeout);
        match client.observe() {
            Ok(o) => Ok(o),
            Err(CallError::Refused { status: 401, .. }) => Err(Error::NodeTokenRejected { name: name.to_owned() }),
            Err(e) => Err(Error::NodeUnreachableAtRegistration {
                name: name.to_owned(),
                url: url.to_owned(),
                why: e.to_string(),
            }),
        }
    }

    /// Registers a node (after checking it answers with its token). `Ok((view, false))` when
    /// it was registered already exactly so.
    pub fn register_node(&self, req: RegisterNode) -> Result<(NodeView, bool)> {
        self.writable()?;
        check_name("node name", &req.name)?;
        let url = req.url.trim_end_matches('/').to_owned();
        check_url(&url)?;
        check_token(&req.token)?;
        check_labels(&req.labels)?;
        let _g = self.locks.lock(&node_lock(&req.name));
        if let Some(existing) = self.records.node(&req.name)? {
            let n = &existing.record;
            if n.url == url && n.token == req.token && n.labels == req.labels {
                return Ok((self.get_node(&req.name)?, false));
            }
            return Err(Error::NodeConflict { name: req.name, url: n.url.clone() });
        }
        if let Some(other) = self.records.nodes()?.into_iter().find(|n| n.record.url == url) {
            return Err(Error::UrlTaken { url, name: other.record.name });
        }
        let observation = self.probe(&req.name, &url, &req.token)?;
        let record = NodeRecord {
            name: req.name.clone(),
            url,
            token: req.token,
            labels: req.labels,
            draining: false,
            registered_unix_s: now_unix_s(),
        };
        let key = node_key(&record.name);
        if !self.records.commit(&Txn::new().when(&key, 0).put(&key, encode(&record)))? {
            return Err(Error::Contended(record.name));
        }
        self.status.seen(&record.name, observation);
        tracing::info!(node = %record.name, url = %record.url, "node registered");
        self.kick.kick();
        Ok((self.get_node(&record.name)?, true))
    }

    pub fn update_node(&self, name: &str, req: UpdateNode) -> Result<NodeView> {
        self.writable()?;
        let _g = self.locks.lock(&node_lock(name));
        let current = self.node_record(name)?;
        let mut next = current.record.clone();
        if let Some(labels) = req.labels {
            check_labels(&labels)?;
            next.labels = labels;
        }
        if let Some(draining) = req.draining {
            next.draining = draining;
        }
        if let Some(url) = &req.url {
            let url = url.trim_end_matches('/').to_owned();
            check_url(&url)?;
            if let Some(other) =
                self.records.nodes()?.into_iter().find(|n| n.record.url == url && n.record.name != name)
            {
                return Err(Error::UrlTaken { url, name: other.record.name });
            }
            next.url = url;
        }
        if let Some(token) = &req.token {
            check_token(token)?;
            next.token = token.clone();
        }
        if next.url != current.record.url || next.token != current.record.token {
            let observation = self.probe(name, &next.url, &next.token)?;
            self.status.seen(name, observation);
        }
        if next != current.record {
            let key = node_key(name);
            if !self.records.commit(&Txn::new().when(&key, current.revision).put(&key, encode(&next)))? {
                return Err(Error::Contended(name.to_owned()));
            }
            tracing::info!(node = name, draining = next.draining, labels = ?next.labels, "node updated");
            self.kick.kick();
        }
        self.get_node(name)
    }

    /// Forgets a node. Refused while volumes are placed on it, unless `force`: then their
    /// records go too (the node's volumes stay on it, untouched).
    pub fn remove_node(&self, name: &str, force: bool) -> Result<usize> {
        self.writable()?;
        let _g = self.locks.lock(&node_lock(name));
        let _placing = self.placing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(current) = self.records.node(name)? else { return Ok(0) };
        let volumes: Vec<Versioned<VolumeRecord>> =
            self.records.volumes()?.into_iter().filter(|v| v.record.placement.node == name).collect();
        if !volumes.is_empty() && !force {
            return Err(Error::NodeHasVolumes { name: name.to_owned(), volumes: volumes.len() });
        }
        let key = node_key(name);
        let mut txn = Txn::new().when(&key, current.revision).delete(&key);
        for v in &volumes {
            let vkey = volume_key(&v.record.name);
            txn = txn.when(&vkey, v.revision).delete(vkey);
        }
        if !self.records.commit(&txn)? {
            return Err(Error::Contended(name.to_owned()));
        }
        self.status.forget(name);
        for v in &volumes {
            tracing::warn!(node = name, volume = %v.record.name, "node removed by force: the volume's record is gone, its data stays on the node");
        }
        tracing::info!(node = name, forgotten_volumes = volumes.len(), "node removed");
        Ok(volumes.len())
    }

    // -- placement --------------------------------------------------------------------------

    /// Every node as placement sees it (free space reckoned as the module documentation says).
    fn placement_views(&self) -> Result<Vec<PlacementNode>> {
        // A node not looked at yet (the provisioner has just started) is looked at now, so
        // that a create right after a start is not refused for want of a reconciler pass.
        let mut status = self.status.all();
        for n in self.records.nodes()? {
            if status.get(&n.record.name).is_none_or(|s| s.reachable.is_none()) {
                self.refresh(&n.record);
                status = self.status.all();
            }
        }
        let by_node = self.records.volumes_by_node()?;
        let mut out = Vec::new();
        for n in self.records.nodes()? {
            let n = n.record;
            let s = status.get(&n.name).cloned().unwrap_or_default();
            let volumes = by_node.get(&n.name).map(Vec::as_slice).unwrap_or(&[]);
            let pools = s
                .observation
                .as_ref()
                .map(|o| {
                    o.pools
                        .iter()
                        .map(|p| {
                            let recorded: u64 = volumes
                                .iter()
                                .filter(|v| v.record.placement.pool == p.name)
                                .map(|v| round_up(v.record.size_bytes.max(v.record.capacity_bytes), p.extent_bytes))
                                .sum();
                            PoolSpace {
                                name: p.name.clone(),
                                free_bytes: p.free_bytes.min(p.capacity_bytes.saturating_sub(recorded)),
                                extent_bytes: p.extent_bytes,
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(PlacementNode {
                name: n.name.clone(),
                labels: n.labels.clone(),
                draining: n.draining,
                reachable: s.reachable == Some(true),
                pools,
                volumes: volumes.len(),
            });
        }
        Ok(out)
    }

    // -- volumes ----------------------------------------------------------------------------

    /// A volume by name, or else by id.
    fn find_volume(&self, name_or_id: &str) -> Result<Versioned<VolumeRecord>> {
        if let Some(v) = self.records.volume(name_or_id)? {
            return Ok(v);
        }
        if uuid::Uuid::parse_str(name_or_id).is_ok()
            && let Some(v) = self.records.volumes()?.into_iter().find(|v| v.record.id == name_or_id)
        {
            return Ok(v);
        }
        Err(Error::VolumeNotFound(name_or_id.to_owned()))
    }

    pub fn get_volume(&self, name_or_id: &str) -> Result<VolumeView> {
        Ok(volume_view(&self.find_volume(name_or_id)?.record))
    }

    pub fn list_volumes(&self, f: &VolumeFilter) -> Result<VolumePage> {
        let limit = f.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let label = match &f.label {
            Some(l) => {
                Some(l.split_once('=').ok_or_else(|| Invalid::LabelValue { key: l.clone(), value: String::new() })?)
            }
            None => None,
        };
        let mut out = Vec::new();
        let mut next_after = None;
        for v in self.records.volumes()? {
            let r = &v.record;
            if f.after.as_ref().is_some_and(|a| r.name.as_str() <= a.as_str())
                || f.node.as_ref().is_some_and(|n| &r.placement.node != n)
                || f.pool.as_ref().is_some_and(|p| &r.placement.pool != p)
                || f.state.as_ref().is_some_and(|s| state_of(r) != s)
                || label.is_some_and(|(k, val)| r.labels.get(k).map(String::as_str) != Some(val))
            {
                continue;
            }
            if out.len() == limit {
                next_after = out.last().map(|v: &VolumeView| v.name.clone());
                break;
            }
            out.push(volume_view(r));
        }
        Ok(VolumePage { volumes: out, next_after })
    }

    /// Creates a volume: idempotent by name (see the module documentation). `Ok((view,
    /// true))` when this call carved it, `Ok((view, false))` when it existed as asked.
    pub fn create_volume(&self, req: CreateVolume) -> Result<(VolumeView, bool)> {
        self.writable()?;
        check_name("volume name", &req.name)?;
        check_size(req.size_bytes)?;
        check_block_size(req.block_size)?;
        check_requirements(&req.requirements)?;
        check_labels(&req.labels)?;
        let _g = self.locks.lock(&volume_lock(&req.name));
        if let Some(current) = self.records.volume(&req.name)? {
            let r = &current.record;
            let mut why = Vec::new();
            if r.requested_bytes != req.size_bytes {
                why.push(format!("size_bytes {}", r.requested_bytes));
            }
            if r.block_size != req.block_size {
                why.push(format!("block_size {}", r.block_size));
            }
            if r.requirements != req.requirements {
                why.push(String::from("other requirements"));
            }
            if r.labels != req.labels {
                why.push(String::from("other labels"));
            }
            if !why.is_empty() {
                return Err(Error::VolumeConflict { name: req.name, why: why.join(", ") });
            }
            return match r.phase {
                Phase::Ready => Ok((volume_view(r), false)),
                Phase::Deleting => Err(Error::VolumeBusy { name: req.name, doing: "deleted" }),
                Phase::Creating => Ok((volume_view(&self.finish_create(current)?.record), true)),
            };
        }
        let recorded = self.place_and_record(&req)?;
        let done = self.finish_create(recorded)?;
        Ok((volume_view(&done.record), true))
    }

    /// Chooses the node and pool and records the intent (`Creating`).
    fn place_and_record(&self, req: &CreateVolume) -> Result<Versioned<VolumeRecord>> {
        let _placing = self.placing.lock().unwrap_or_else(|p| p.into_inner());
        let choice = placement::place(req.size_bytes, &req.requirements, &self.placement_views()?, &BTreeSet::new())?;
        let record = VolumeRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: req.name.clone(),
            requested_bytes: req.size_bytes,
            size_bytes: req.size_bytes,
            block_size: req.block_size,
            labels: req.labels.clone(),
            requirements: req.requirements.clone(),
            placement: Placement { node: choice.node, pool: choice.pool },
            phase: Phase::Creating,
            node_volume_id: None,
            capacity_bytes: 0,
            nqn: None,
            hosts: BTreeSet::new(),
            degraded: None,
            created_unix_s: now_unix_s(),
        };
        let key = volume_key(&record.name);
        if !self.records.commit(&Txn::new().when(&key, 0).put(&key, encode(&record)))? {
            return Err(Error::Contended(record.name));
        }
        tracing::info!(volume = %record.name, id = %record.id, node = %record.placement.node, pool = %record.placement.pool, size_bytes = record.size_bytes, "volume placed");
        self.records.volume(&record.name)?.ok_or(Error::Contended(record.name))
    }

    /// Carves a `Creating` volume on its node and commits it `Ready`; moves it when the node
    /// refuses for space; rolls it back when the node refuses for good. The caller holds the
    /// volume's lock.
    pub fn finish_create(&self, mut current: Versioned<VolumeRecord>) -> Result<Versioned<VolumeRecord>> {
        let mut excluded = BTreeSet::new();
        loop {
            failpoint::point("create-recorded");
            let r = current.record.clone();
            let node = self.node_record(&r.placement.node)?.record;
            let hosts: Vec<String> = r.hosts.iter().cloned().collect();
            let carved = self.client(&node).create_volume(
                &r.node_volume_name(),
                r.size_bytes,
                r.block_size,
                &r.placement.pool,
                &hosts,
            );
            match carved {
                Ok(nv) => {
                    failpoint::point("create-carved");
                    let mut next = r.clone();
                    next.phase = Phase::Ready;
                    next.node_volume_id = Some(nv.id.clone());
                    next.capacity_bytes = nv.size_bytes;
                    next.nqn = Some(nv.nqn.clone());
                    let done = self.swap(&current, next)?;
                    failpoint::point("create-committed");
                    tracing::info!(volume = %r.name, node = %node.name, node_volume = %nv.id, capacity_bytes = nv.size_bytes, "volume created");
                    self.refresh(&node);
                    return Ok(done);
                }
                Err(e)
                    if (e.refused_with("no_space") || e.refused_with("pool_not_found"))
                        && excluded.len() + 1 < PLACEMENT_TRIES =>
                {
                    tracing::warn!(volume = %r.name, node = %node.name, error = %e, "the node refused the volume; placing it again");
                    self.refresh(&node);
                    excluded.insert((r.placement.node.clone(), r.placement.pool.clone()));
                    let _placing = self.placing.lock().unwrap_or_else(|p| p.into_inner());
                    match placement::place(r.size_bytes, &r.requirements, &self.placement_views()?, &excluded) {
                        Ok(choice) => {
                            let mut next = r.clone();
                            next.placement = Placement { node: choice.node, pool: choice.pool };
                            current = self.swap(&current, next)?;
                        }
                        Err(p) => {
                            self.roll_back(current)?;
                            return Err(p.into());
                        }
                    }
                }
                Err(e) if e.is_refusal() => {
                    tracing::warn!(volume = %r.name, node = %node.name, error = %e, "the node refused the volume; rolling the create back");
                    self.roll_back(current)?;
                    return Err(match e {
                        CallError::Refused { status: 507, .. } => {
                            Error::Placement(PlacementError::InsufficientCapacity {
                                needed_bytes: r.size_bytes,
                                largest_free_bytes: 0,
                            })
                        }
                        other => Error::NodeRefused(other),
                    });
                }
                Err(e) => return Err(Error::NodeUnavailable(e)),
            }
        }
    }

    /// Undoes a create: the delete path, which removes whatever the node may hold.
    fn roll_back(&self, current: Versioned<VolumeRecord>) -> Result<()> {
        self.finish_delete(current)
    }

    /// Deletes a volume; deleting one that does not exist is done already. Refused while it
    /// is published, unless `force`.
    pub fn delete_volume(&self, name: &str, force: bool) -> Result<()> {
        self.writable()?;
        let lookup = match self.find_volume(name) {
            Ok(v) => v,
            Err(Error::VolumeNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _g = self.locks.lock(&volume_lock(&lookup.record.name));
        let Some(current) = self.records.volume(&lookup.record.name)? else { return Ok(()) };
        if !current.record.hosts.is_empty() && !force {
            return Err(Error::VolumePublished { name: current.record.name, hosts: current.record.hosts.len() });
        }
        self.finish_delete(current)
    }

    /// Marks `Deleting`, deletes on the node (gone is done), deletes the record and writes a
    /// tombstone. The caller holds the volume's lock.
    pub fn finish_delete(&self, mut current: Versioned<VolumeRecord>) -> Result<()> {
        if current.record.phase != Phase::Deleting {
            let mut next = current.record.clone();
            next.phase = Phase::Deleting;
            current = self.swap(&current, next)?;
            tracing::info!(volume = %current.record.name, "volume deleting");
        }
        failpoint::point("delete-marked");
        let r = &current.record;
        if let Some(node) = self.records.node(&r.placement.node)? {
            let client = self.client(&node.record);
            let name = r.node_volume_name();
            let found = client.volumes()?.into_iter().find(|v| v.name == name);
            if let Some(nv) = found {
                client.delete_volume(&nv.id)?;
            }
            failpoint::point("delete-node-done");
            self.refresh(&node.record);
        }
        let key = volume_key(&r.name);
        let tomb = Tombstone { id: r.id.clone(), node: r.placement.node.clone(), deleted_unix_s: now_unix_s() };
        let txn = Txn::new().when(&key, current.revision).delete(&key).put(tombstone_key(&r.id), encode(&tomb));
        if !self.records.commit(&txn)? {
            return Err(Error::Contended(r.name.clone()));
        }
        tracing::info!(volume = %r.name, id = %r.id, node = %r.placement.node, "volume deleted");
        Ok(())
    }

    /// Grows a volume, and/or replaces its labels.
    pub fn update_volume(&self, name: &str, req: UpdateVolume) -> Result<VolumeView> {
        self.writable()?;
        let lookup = self.find_volume(name)?;
        let _g = self.locks.lock(&volume_lock(&lookup.record.name));
        let mut current = self.find_volume(&lookup.record.name)?;
        if let Some(labels) = req.labels {
            check_labels(&labels)?;
            if labels != current.record.labels {
                let mut next = current.record.clone();
                next.labels = labels;
                current = self.swap(&current, next)?;
            }
        }
        if let Some(size_bytes) = req.size_bytes {
            check_size(size_bytes)?;
            current = self.grow(current, size_bytes)?;
        }
        Ok(volume_view(&current.record))
    }

    fn ready(&self, r: &VolumeRecord) -> Result<()> {
        match r.phase {
            Phase::Creating => Err(Error::VolumeBusy { name: r.name.clone(), doing: "created" }),
            Phase::Deleting => Err(Error::VolumeBusy { name: r.name.clone(), doing: "deleted" }),
            Phase::Ready => match &r.degraded {
                Some(why) => Err(Error::VolumeDegraded { name: r.name.clone(), why: why.clone() }),
                None => Ok(()),
            },
        }
    }

    fn grow(&self, current: Versioned<VolumeRecord>, size_bytes: u64) -> Result<Versioned<VolumeRecord>> {
        let r = current.record.clone();
        self.ready(&r)?;
        if size_bytes < r.size_bytes {
            return Err(Error::ShrinkRefused {
                name: r.name,
                current_bytes: r.size_bytes,
                requested_bytes: size_bytes,
            });
        }
        let node = self.node_record(&r.placement.node)?.record;
        let node_volume = r.node_volume_id.clone().unwrap_or_default();
        if size_bytes <= r.capacity_bytes && size_bytes == r.size_bytes {
            return Ok(current);
        }
        let status = self.status.get(&node.name);
        if let Some(pool) =
            status.observation.as_ref().and_then(|o| o.pools.iter().find(|p| p.name == r.placement.pool))
        {
            let needed = round_up(size_bytes, pool.extent_bytes).saturating_sub(r.capacity_bytes);
            if needed > pool.free_bytes {
                return Err(Error::NoRoomToGrow {
                    name: r.name,
                    node: node.name,
                    pool: pool.name.clone(),
                    needed_bytes: needed,
                    free_bytes: pool.free_bytes,
                });
            }
        }
        let previous = r.size_bytes;
        let mut next = r.clone();
        next.size_bytes = size_bytes;
        let current = self.swap(&current, next)?;
        failpoint::point("grow-recorded");
        match self.client(&node).grow_volume(&node_volume, size_bytes) {
            Ok(nv) => {
                let mut next = current.record.clone();
                next.capacity_bytes = nv.size_bytes;
                let done = self.swap(&current, next)?;
                tracing::info!(volume = %r.name, size_bytes, capacity_bytes = nv.size_bytes, "volume grown");
                self.refresh(&node);
                Ok(done)
            }
            Err(e) if e.is_refusal() => {
                let mut back = current.record.clone();
                back.size_bytes = previous;
                self.swap(&current, back)?;
                self.refresh(&node);
                match e {
                    CallError::Refused { status: 507, .. } => Err(Error::NoRoomToGrow {
                        name: r.name,
                        node: node.name,
                        pool: r.placement.pool,
                        needed_bytes: size_bytes.saturating_sub(r.capacity_bytes),
                        free_bytes: 0,
                    }),
                    other => Err(Error::NodeRefused(other)),
                }
            }
            Err(e) => Err(Error::NodeUnavailable(e)),
        }
    }

    // -- hosts ------------------------------------------------------------------------------

    pub fn hosts(&self, name: &str) -> Result<HostList> {
        let v = self.find_volume(name)?;
        Ok(HostList { volume: v.record.name, hosts: v.record.hosts.into_iter().collect() })
    }

    /// Allows `host` on a volume and says how it connects. `Ok((publication, true))` when
    /// the host was not allowed before.
    pub fn publish(&self, name: &str, host: &str) -> Result<(Publication, bool)> {
        self.writable()?;
        check_host_nqn(host)?;
        let lookup = self.find_volume(name)?;
        let _g = self.locks.lock(&volume_lock(&lookup.record.name));
        let mut current = self.find_volume(&lookup.record.name)?;
        self.ready(&current.record)?;
        let added = !current.record.hosts.contains(host);
        if added {
            if current.record.hosts.len() >= model::MAX_HOSTS {
                return Err(Error::TooManyHosts { name: current.record.name });
            }
            let mut next = current.record.clone();
            next.hosts.insert(host.to_owned());
            current = self.swap(&current, next)?;
        }
        failpoint::point("publish-recorded");
        let r = &current.record;
        let node = self.node_record(&r.placement.node)?.record;
        self.client(&node).allow_host(r.node_volume_id.as_deref().unwrap_or_default(), host)?;
        if added {
            tracing::info!(volume = %r.name, host, node = %node.name, "volume published");
        }
        let status = self.status.get(&node.name);
        let observation = match status.observation {
            Some(o) => o,
            None => self.refresh(&node).ok_or_else(|| {
                Error::NodeUnavailable(CallError::Unreachable {
                    node: node.name.clone(),
                    why: String::from("no listeners known"),
                })
            })?,
        };
        let paths: Vec<Path> = observation
            .listeners
            .iter()
            .filter(|l| !l.discovery_only)
            .filter_map(|l| {
                let addr: std::net::SocketAddr = l.advertised.parse().ok()?;
                Some(Path { transport: l.transport.clone(), address: addr.ip().to_string(), port: addr.port() })
            })
            .collect();
        let first = paths.first().cloned().ok_or_else(|| {
            Error::NodeRefused(CallError::Refused {
                node: node.name.clone(),
                status: 409,
                code: String::from("no_listener"),
                message: String::from("the node has no I/O listener: hosts cannot reach its volumes"),
            })
        })?;
        let publication = Publication {
            volume: r.name.clone(),
            host: host.to_owned(),
            transport: first.transport,
            address: first.address,
            port: first.port,
            nqn: r.nqn.clone().unwrap_or_default(),
            paths,
        };
        Ok((publication, added))
    }

    /// Revokes `host` on a volume (its connections are cut by the node). Idempotent; a volume
    /// that does not exist has no hosts.
    pub fn unpublish(&self, name: &str, host: &str) -> Result<()> {
        self.writable()?;
        check_host_nqn(host)?;
        let lookup = match self.find_volume(name) {
            Ok(v) => v,
            Err(Error::VolumeNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _g = self.locks.lock(&volume_lock(&lookup.record.name));
        let Some(mut current) = self.records.volume(&lookup.record.name)? else { return Ok(()) };
        if current.record.hosts.contains(host) {
            let mut next = current.record.clone();
            next.hosts.remove(host);
            current = self.swap(&current, next)?;
            tracing::info!(volume = %current.record.name, host, "volume unpublished");
        }
        failpoint::point("unpublish-recorded");
        let r = &current.record;
        if let (Some(id), Some(node)) = (&r.node_volume_id, self.records.node(&r.placement.node)?) {
            self.client(&node.record).revoke_host(id, host)?;
        }
        Ok(())
    }

    // -- capacity ---------------------------------------------------------------------------

    pub fn capacity(&self) -> Result<Capacity> {
        let nodes = self.records.nodes()?;
        let views = self.placement_views()?;
        let status = self.status.all();
        #[derive(Default)]
        struct Sum {
            nodes: usize,
            total: u64,
            free: u64,
            placeable: u64,
            largest: u64,
        }
        let mut all = Sum::default();
        let mut reachable = 0;
        let mut segments: BTreeMap<(String, String), Sum> = BTreeMap::new();
        for (n, view) in nodes.iter().zip(&views) {
            let n = &n.record;
            let s = status.get(&n.name).cloned().unwrap_or_default();
            let pools = s.observation.as_ref().map(|o| o.pools.as_slice()).unwrap_or(&[]);
            let total: u64 = pools.iter().map(|p| p.capacity_bytes).sum();
            let free: u64 = pools.iter().map(|p| p.free_bytes).sum();
            let usable = view.reachable && !view.draining;
            if view.reachable {
                reachable += 1;
            }
            let placeable: u64 = if usable { view.pools.iter().map(|p| p.free_bytes).sum() } else { 0 };
            let largest = if usable { view.pools.iter().map(|p| p.free_bytes).max().unwrap_or(0) } else { 0 };
            let add = |sum: &mut Sum| {
                sum.nodes += 1;
                sum.total += total;
                sum.free += free;
                sum.placeable += placeable;
                sum.largest = sum.largest.max(largest);
            };
            add(&mut all);
            for (k, v) in &n.labels {
                add(segments.entry((k.clone(), v.clone())).or_default());
            }
        }
        Ok(Capacity {
            nodes: all.nodes,
            reachable_nodes: reachable,
            total_bytes: all.total,
            free_bytes: all.free,
            placeable_bytes: all.placeable,
            largest_free_bytes: all.largest,
            segments: segments
                .into_iter()
                .map(|((key, value), s)| SegmentCapacity {
                    key,
                    value,
                    nodes: s.nodes,
                    total_bytes: s.total,
                    free_bytes: s.free,
                    placeable_bytes: s.placeable,
                    largest_free_bytes: s.largest,
                })
                .collect(),
        })
    }

    /// Counts for `/metrics`: volumes by state.
    pub fn volume_states(&self) -> Result<BTreeMap<&'static str, usize>> {
        let mut out: BTreeMap<&'static str, usize> =
            ["creating", "ready", "degraded", "deleting"].into_iter().map(|s| (s, 0)).collect();
        for v in self.records.volumes()? {
            *out.entry(state_of(&v.record)).or_default() += 1;
        }
        Ok(out)
    }

    /// Drops tombstones older than [`model::TOMBSTONE_KEEP_S`].
    pub fn expire_tombstones(&self) -> Result<()> {
        let now = now_unix_s();
        for t in self.records.tombstones()? {
            if now.saturating_sub(t.record.deleted_unix_s) > model::TOMBSTONE_KEEP_S {
                let key = tombstone_key(&t.record.id);
                self.records.commit(&Txn::new().when(&key, t.revision).delete(key))?;
            }
        }
        Ok(())
    }
}
