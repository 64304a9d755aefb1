//! What the node remembers of each staged volume, one small JSON file per volume in the
//! state directory: NodeUnstageVolume and NodeExpandVolume get only a volume id and a path,
//! and must still find the subsystem to disconnect or rescan. The record is written before
//! the connect (so an interrupted stage is cleaned by the unstage the CO sends) and removed
//! after the disconnect.

use std::io;
use std::path::{Path, PathBuf};

/// A staged (or being staged) volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Staged {
    pub volume_id: String,
    pub nqn: String,
    pub nsid: u32,
    pub transport: String,
    pub traddr: String,
    pub trsvcid: String,
    pub staging_path: PathBuf,
    /// Raw block (nothing mounted at the staging path) or a file system.
    pub block: bool,
    /// The file system mounted at the staging path (empty for block).
    #[serde(default)]
    pub fs_type: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A volume id as a file name: anything but `[A-Za-z0-9_-]` is hex-escaped.
fn file_name(volume_id: &str) -> String {
    let mut s = String::new();
    for b in volume_id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02x}"));
        }
    }
    format!("{s}.json")
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store { dir: dir.to_owned() }
    }

    fn path(&self, volume_id: &str) -> PathBuf {
        self.dir.join(file_name(volume_id))
    }

    pub fn get(&self, volume_id: &str) -> io::Result<Option<Staged>> {
        match std::fs::read(self.path(volume_id)) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the record (through a temporary file and a rename).
    pub fn put(&self, s: &Staged) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(&s.volume_id);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(s).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, &path)
    }

    pub fn remove(&self, volume_id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(volume_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record (unreadable ones skipped).
    pub fn all(&self) -> Vec<Staged> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(&dir.path().join("volumes"));
        assert_eq!(store.get("v/1").unwrap(), None);
        store.remove("v/1").unwrap();
        let s = Staged {
            volume_id: "v/1".into(),
            nqn: "nqn.x".into(),
            nsid: 1,
            transport: "tcp".into(),
            traddr: "10.0.2.2".into(),
            trsvcid: "4420".into(),
            staging_path: "/stage".into(),
            block: false,
            fs_type: "ext4".into(),
        };
        store.put(&s).unwrap();
        assert_eq!(store.get("v/1").unwrap(), Some(s.clone()));
        assert_eq!(store.all(), vec![s]);
        assert_eq!(file_name("../x"), "%2e%2e%2fx.json");
        store.remove("v/1").unwrap();
        assert!(store.all().is_empty());
    }
}
