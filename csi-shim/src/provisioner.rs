//! What the controller service needs from fabriq-provisioner, as a trait: the controller is
//! written against [`Provisioner`], and the transport lives in one module ([`crate::rest`],
//! the provisioner's REST API). Tests and other transports implement the same trait.
//!
//! The calls are blocking (the REST client is synchronous); the controller runs them on
//! tokio's blocking pool. Every call is idempotent on the provisioner's side: creating a
//! volume by name, publishing a host, deleting a volume or a host that is gone.

use std::collections::BTreeMap;

/// A topology segment: label key -> value (provisioner labels: `zone`, `rack`, ...).
pub type Segment = BTreeMap<String, String>;

/// Where a new volume must go.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Requirements {
    /// The node must carry every label of one of these segments; empty: any node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology: Vec<Segment>,
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeSpec {
    pub name: String,
    pub size_bytes: u64,
    pub block_size: u32,
    pub requirements: Requirements,
    pub labels: BTreeMap<String, String>,
}

/// A volume as the provisioner shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Volume {
    pub id: String,
    pub name: String,
    /// `creating`, `ready`, `degraded` or `deleting`.
    pub state: String,
    /// The size asked for (the create's, then each grow's).
    pub size_bytes: u64,
    /// What the node gave it (whole extents); 0 until carved.
    pub capacity_bytes: u64,
    pub block_size: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub requirements: Requirements,
    pub node: String,
    #[serde(default)]
    pub nqn: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub degraded_reason: Option<String>,
}

/// How a host reaches a published volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Publication {
    pub transport: String,
    pub address: String,
    pub port: u16,
    pub nqn: String,
}

/// Free space, overall or within one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    /// Free space new volumes can use.
    pub available_bytes: u64,
    /// The largest volume that can be created now.
    pub largest_bytes: u64,
}

/// One page of volumes in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub volumes: Vec<Volume>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next_after: Option<String>,
}

/// Why a provisioner call failed, sorted by what the caller should do. The provisioner's
/// machine-readable code and its sentence travel along.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the provisioner has no such volume: {0}")]
    NotFound(String),
    /// The name is taken by a volume with other parameters, or the volume is busy/published.
    #[error("the provisioner refused ({code}): {message}")]
    Conflict { code: String, message: String },
    /// No node has the room.
    #[error("the provisioner has no room ({code}): {message}")]
    Exhausted { code: String, message: String },
    /// No node satisfies the topology.
    #[error("the provisioner cannot place the volume ({code}): {message}")]
    Unsatisfiable { code: String, message: String },
    /// The provisioner found the request malformed (a bug here, or a value it refuses).
    #[error("the provisioner found the request invalid ({code}): {message}")]
    Invalid { code: String, message: String },
    /// Unreachable, timed out, not the leader, a node down: retry later.
    #[error("the provisioner is unavailable: {0}")]
    Unavailable(String),
    /// The token was refused.
    #[error("the provisioner refused the token ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// Anything else the provisioner answered.
    #[error("the provisioner failed ({status} {code}): {message}")]
    Failed { status: u16, code: String, message: String },
}

/// The provisioner, as the controller service uses it. See the module documentation.
pub trait Provisioner: Send + Sync + 'static {
    /// Whether the provisioner answers and takes the token.
    fn health(&self) -> Result<(), Error>;
    /// Creates the volume, or answers the one that exists with this very spec.
    fn create_volume(&self, spec: &VolumeSpec) -> Result<Volume, Error>;
    /// A volume by id or name; `NotFound` if there is none.
    fn get_volume(&self, id_or_name: &str) -> Result<Volume, Error>;
    /// Volumes in name order, `limit` at a time, after the name `after`.
    fn list_volumes(&self, limit: usize, after: Option<&str>) -> Result<Page, Error>;
    /// Deletes the volume; done already if there is none.
    fn delete_volume(&self, id: &str) -> Result<(), Error>;
    /// Grows the volume to at least `size_bytes`.
    fn grow_volume(&self, id: &str, size_bytes: u64) -> Result<Volume, Error>;
    /// Puts the host on the volume's allow list.
    fn publish(&self, id: &str, host_nqn: &str) -> Result<Publication, Error>;
    /// Takes the host off the volume's allow list; done already if it was not on it.
    fn unpublish(&self, id: &str, host_nqn: &str) -> Result<(), Error>;
    /// Free space on nodes carrying every label of `segment` (all nodes when empty).
    fn capacity(&self, segment: &Segment) -> Result<Capacity, Error>;
    /// The labels of a storage node (its topology).
    fn node_labels(&self, node: &str) -> Result<Segment, Error>;
}
