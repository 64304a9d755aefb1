//! The node state file: what the node must remember about its exports that the pools do not
//! hold — each volume's host allow list, the listeners and pools added through the API — so
//! that a node that restarts serves its volumes to the same hosts before anyone calls it.
//!
//! The file is `<data_dir>/node-state.json`, replaced whole on every change: the new text goes
//! to a temporary file in the same directory, which is flushed (`fsync`), renamed over the old
//! one, and the directory flushed; a crash at any instant leaves the old file or the new one.
//!
//! Invariants: the file is written before the change it records takes effect on the live
//! target (a host is never admitted before its admission is durable); an entry for a volume
//! that no longer exists is dropped at start-up with a warning; a volume without an entry is
//! exported with no hosts.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's format version; a reader refuses any other.
pub const VERSION: u32 = 1;
/// The file's name in `data_dir`.
pub const FILE_NAME: &str = "node-state.json";
/// A state file larger than this is refused rather than read (it holds host lists, not data).
const MAX_BYTES: u64 = 64 << 20;

/// Who may reach one volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Access {
    #[serde(default)]
    pub allow_any_host: bool,
    /// Host NQNs, sorted, no duplicates.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl Access {
    /// Some host may connect.
    pub fn is_open(&self) -> bool {
        self.allow_any_host || !self.hosts.is_empty()
    }
}

/// A listener added through the API (configured listeners live in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub transport: String,
    /// The address as bound (a port the kernel chose is kept, so hosts find it again).
    pub address: SocketAddr,
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    #[serde(default)]
    pub discovery_only: bool,
}

/// A pool added through the API (configured pools live in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    pub path: PathBuf,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeState {
    pub version: u32,
    /// By volume id (hyphenated UUID).
    #[serde(default)]
    pub volumes: BTreeMap<String, Access>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub pools: Vec<Pool>,
}

impl Default for NodeState {
    fn default() -> NodeState {
        NodeState { version: VERSION, volumes: BTreeMap::new(), listeners: Vec::new(), pools: Vec::new() }
    }
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a node state file ({source}); move it away to start with no hosts allowed", path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{}: format version {version}, this build reads version {VERSION}", path.display())]
    Version { path: PathBuf, version: u32 },
    #[error("{}: {bytes} bytes is more than a node state file holds", path.display())]
    TooLarge { path: PathBuf, bytes: u64 },
}

/// Reads the state file at `path`; a missing file is the empty state (a fresh node).
pub fn load(path: &Path) -> Result<NodeState, StateError> {
    let io_err = |source| StateError::Io { path: path.to_owned(), source };
    let bytes = match std::fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_BYTES => {
            return Err(StateError::TooLarge { path: path.to_owned(), bytes: meta.len() });
        }
        Ok(_) => std::fs::read(path).map_err(io_err)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(NodeState::default()),
        Err(e) => return Err(io_err(e)),
    };
    let state: NodeState =
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path: path.to_owned(), source })?;
    if state.version != VERSION {
        return Err(StateError::Version { path: path.to_owned(), version: state.version });
    }
    Ok(state)
}

/// Replaces the state file at `path` with `state`, crash-safely: temporary file, `fsync`,
/// rename, `fsync` of the directory. When this returns `Ok` the new state is durable.
pub fn save(path: &Path, state: &NodeState) -> Result<(), StateError> {
    let io_err = |source| StateError::Io { path: path.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut text = serde_json::to_vec_pretty(state).expect("the node state serialises");
    text.push(b'\n');
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io_err)?;
    file.write_all(&text).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(load(&path).unwrap(), NodeState::default(), "a missing file is a fresh node");
        let mut state = NodeState::default();
        state.volumes.insert(
            "67e55044-10b1-426f-9247-bb680e5fe0c8".into(),
            Access { allow_any_host: false, hosts: vec!["nqn.2014-08.org.nvmexpress:uuid:a".into()] },
        );
        state.listeners.push(Listener {
            transport: "tcp".into(),
            address: "127.0.0.1:4421".parse().unwrap(),
            advertise: None,
            discovery_only: false,
        });
        state.pools.push(Pool { name: "p".into(), path: "/dev/loop0".into() });
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        state.volumes.clear();
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)], "no temporary file is left behind");
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "{\"version\": 1, \"volumes\": {").unwrap();
        assert!(matches!(load(&path), Err(StateError::Parse { .. })));
        std::fs::write(&path, "{\"version\": 2}").unwrap();
        assert!(matches!(load(&path), Err(StateError::Version { version: 2, .. })));
        std::fs::write(&path, "{\"version\": 1, \"extra\": 0}").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("move it away"), "{err}");
    }
}
