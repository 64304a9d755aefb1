//! The node manager's one error type. Each variant is a situation an API client can act on;
//! the `api` module turns it into an HTTP status and a stable code in one place
//! (`api::error`), never by looking at the text.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::nvme::NqnError;
use crate::storage::{StorageError, VolumeId};

use super::state::StateError;

/// Errors of pools, volumes, exports and listeners as the node manages them.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// What the storage layer refused or failed at (its own codes: `StorageError::code`).
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0:?} is not a volume id (a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8)")]
    BadVolumeId(String),
    #[error("no volume with id {0}")]
    VolumeNotFound(VolumeId),
    #[error("no pool named {0:?}")]
    PoolNotFound(String),
    #[error("no listener with port id {0}")]
    ListenerNotFound(u16),
    #[error(
        "a volume named {name} already exists (id {id}, {size_bytes} bytes, {block_size}-byte blocks, pool {pool}); \
         creating it again needs the same size, block size and pool"
    )]
    VolumeExists { name: String, id: VolumeId, size_bytes: u64, block_size: u32, pool: String },
    #[error("volume {id} is exported ({why}): revoke its hosts and disconnect them first, or delete with force=true")]
    Exported { id: VolumeId, why: String },
    #[error("volume {id} still has commands in flight after {waited_ms} ms; it is exported again, try later")]
    Busy { id: VolumeId, waited_ms: u64 },
    #[error("volume {0} is being deleted; delete it again to finish")]
    Deleting(VolumeId),
    #[error("invalid host NQN {nqn:?}: {problem}")]
    BadHostNqn { nqn: String, problem: NqnError },
    #[error("a pool named {0:?} exists already")]
    PoolExists(String),
    #[error(
        "pool {name:?} failed to open at start-up ({error}); add it again (POST /v1/pools, same name and path) once its device is back, or remove it (DELETE /v1/pools/{name}?force=true)"
    )]
    PoolFailed { name: String, error: String },
    #[error("pool {name:?} holds {volumes} volume(s): delete them first")]
    PoolNotEmpty { name: String, volumes: usize },
    #[error("pool {0:?} is in the configuration file: remove it there and restart")]
    ConfiguredPool(String),
    #[error("{} is pool {name:?} already", path.display())]
    PathInUse { path: PathBuf, name: String },
    #[error(
        "{} holds pool {found:?}, not {name:?}: name it {found:?}, or pass force=true to create a new pool over it (its volumes are lost)",
        path.display()
    )]
    OtherPool { path: PathBuf, found: String, name: String },
    #[error("{} does not exist: give size_bytes to create a pool file of that size", .0.display())]
    MissingDevice(PathBuf),
    #[error("a new pool file's size {0} must be a multiple of 4096 of at least 10 MiB")]
    PoolFileSize(u64),
    #[error("the data path cannot open {}: {source}", path.display())]
    DataPath { path: PathBuf, source: io::Error },
    #[error("listener: {0}")]
    BadListener(ListenerProblem),
    #[error("a listener on {0} exists already")]
    ListenerExists(SocketAddr),
    #[error("listener {port_id} ({address}) is in the configuration file: remove it there and restart")]
    ConfiguredListener { port_id: u16, address: SocketAddr },
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: io::Error },
    #[error("subsystem {0} exists already (a [[subsystem]] of the configuration has a volume's NQN)")]
    NqnInUse(String),
    #[error("the node state file: {0}")]
    State(#[from] StateError),
}

/// Why a listener request is refused as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenerProblem {
    #[error("transport {0:?} is not one fabriq-target speaks: \"tcp\" or \"rdma\"")]
    Transport(String),
    #[error(
        "this fabriq-target was built without RDMA: transport \"rdma\" needs a build with the `rdma` cargo feature \
         (cargo build --release -p fabriq-target --features rdma)"
    )]
    RdmaNotBuilt,
    #[error("listening on every address needs `advertise`: discovery log entries must name an address hosts can reach")]
    WildcardNeedsAdvertise,
    #[error("`advertise` must be an address hosts can connect to: not a wildcard address, not port 0")]
    BadAdvertise,
}
