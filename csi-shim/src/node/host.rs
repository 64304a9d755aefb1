//! The node's NVMe host identity: the host NQN (`/etc/nvme/hostnqn`, the node id the
//! controller puts on allow lists) and the host id (`/etc/nvme/hostid`), as nvme-cli keeps
//! them. Missing files are created once, with the form nvme-cli generates
//! (`nqn.2014-08.org.nvmexpress:uuid:<uuid>`, the host id being that UUID), so the node id
//! stays the same across restarts of the driver.

use std::io;
use std::path::Path;

/// The prefix of generated host NQNs.
pub const UUID_NQN_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// The node's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub hostnqn: String,
    pub hostid: String,
}

/// The first non-empty line of a file, if the file exists.
fn first_line(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_new(path: &Path, value: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Through a temporary file and a rename: a crash leaves the old state or the new.
    let tmp = path.with_extension("fabriq-csi.tmp");
    std::fs::write(&tmp, format!("{value}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Reads the host NQN and host id, creating what is missing.
pub fn load_or_create(hostnqn_path: &Path, hostid_path: &Path) -> io::Result<Identity> {
    let hostnqn = match first_line(hostnqn_path)? {
        Some(n) if valid_nqn(&n) => n,
        Some(n) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {n:?} is not an NQN (nqn.YYYY-MM.reverse.domain:...)", hostnqn_path.display()),
            ));
        }
        None => {
            let n = format!("{UUID_NQN_PREFIX}{}", uuid::Uuid::new_v4());
            write_new(hostnqn_path, &n)?;
            tracing::info!(path = %hostnqn_path.display(), hostnqn = %n, "host NQN created");
            n
        }
    };
    let hostid = match first_line(hostid_path)? {
        Some(id) => id,
        None => {
            let id = hostnqn
                .strip_prefix(UUID_NQN_PREFIX)
                .and_then(|u| uuid::Uuid::parse_str(u).ok())
                .unwrap_or_else(uuid::Uuid::new_v4)
                .to_string();
            write_new(hostid_path, &id)?;
            id
        }
    };
    Ok(Identity { hostnqn, hostid })
}

/// An NQN as the NVMe base specification shapes it: `nqn.`, at most 223 bytes, printable.
pub fn valid_nqn(n: &str) -> bool {
    n.len() > 4 && n.len() <= 223 && n.starts_with("nqn.") && n.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (nqn, id) = (dir.path().join("etc/nvme/hostnqn"), dir.path().join("etc/nvme/hostid"));
        let a = load_or_create(&nqn, &id).unwrap();
        assert!(a.hostnqn.starts_with(UUID_NQN_PREFIX));
        assert_eq!(a.hostnqn.strip_prefix(UUID_NQN_PREFIX), Some(a.hostid.as_str()));
        assert_eq!(load_or_create(&nqn, &id).unwrap(), a);
        assert_eq!(std::fs::read_to_string(&nqn).unwrap(), format!("{}\n", a.hostnqn));
    }

    #[test]
    fn existing_files_are_read_and_garbage_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (nqn, id) = (dir.path().join("hostnqn"), dir.path().join("hostid"));
        std::fs::write(&nqn, "\nnqn.2014-08.org.nvmexpress:node-a \n").unwrap();
        std::fs::write(&id, "0f0e0d0c-0000-4000-8000-000000000001\n").unwrap();
        let i = load_or_create(&nqn, &id).unwrap();
        assert_eq!(i.hostnqn, "nqn.2014-08.org.nvmexpress:node-a");
        assert_eq!(i.hostid, "0f0e0d0c-0000-4000-8000-000000000001");
        std::fs::write(&nqn, "not an nqn\n").unwrap();
        assert_eq!(load_or_create(&nqn, &id).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
