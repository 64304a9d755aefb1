//! What fabriq volumes can be, in CSI terms: the volume capabilities the driver accepts
//! (access type and access mode), the file systems it formats, and the StorageClass
//! parameters it understands. Shared by the controller (which promises) and the node (which
//! delivers), so both refuse the same things with the same sentences.
//!
//! Access modes: a fabriq volume is one NVMe namespace that any number of hosts may connect
//! to, so raw block volumes may be shared (the applications coordinate); a file system
//! (ext4, xfs) is not a cluster file system, so it is mounted read-write on one node only,
//! and read-only on several.

use std::collections::HashMap;

use crate::csi::VolumeCapability;
use crate::csi::volume_capability::AccessType;
use crate::csi::volume_capability::access_mode::Mode;

/// File systems the node formats and grows.
pub const FS_TYPES: [&str; 2] = ["ext4", "xfs"];
/// The file system when neither the capability nor the StorageClass names one.
pub const DEFAULT_FS_TYPE: &str = "ext4";
/// Block sizes a volume may have (the namespace's logical block size).
pub const BLOCK_SIZES: [u32; 2] = [512, 4096];
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// StorageClass parameter: the file system (`ext4` or `xfs`).
pub const PARAM_FS_TYPE: &str = "fsType";
/// StorageClass parameter: the namespace's logical block size (`512` or `4096`).
pub const PARAM_BLOCK_SIZE: &str = "blockSize";
/// Parameters the Kubernetes sidecars add (`csi.storage.k8s.io/pvc/name`, ...): accepted.
pub const K8S_PARAM_PREFIX: &str = "csi.storage.k8s.io/";

/// How a volume is used, once its capability is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The raw block device.
    Block,
    /// A file system of `fs_type` (empty: not named by the capability) with `flags`.
    Mount { fs_type: String, flags: Vec<String> },
}

/// A capability the driver accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub access: Access,
    pub mode: Mode,
}

impl Capability {
    /// Only readers: mounted read-only.
    pub fn read_only(&self) -> bool {
        matches!(self.mode, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly)
    }

    /// At most one node uses the volume at a time.
    pub fn single_node(&self) -> bool {
        matches!(
            self.mode,
            Mode::SingleNodeWriter
                | Mode::SingleNodeReaderOnly
                | Mode::SingleNodeSingleWriter
                | Mode::SingleNodeMultiWriter
        )
    }
}

/// Why a capability or parameter is refused: the sentence says which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} is required")]
    Missing(String),
    #[error("{field}: {why}")]
    Unsupported { field: String, why: String },
}

/// Checks one capability; `field` names it in the error (`volume_capabilities[0]`).
pub fn check(cap: &VolumeCapability, field: &str) -> Result<Capability, Refused> {
    let unsupported = |why: String| Refused::Unsupported { field: field.to_owned(), why };
    let mode = cap.access_mode.as_ref().ok_or_else(|| Refused::Missing(format!("{field}.access_mode")))?;
    let mode = Mode::try_from(mode.mode).map_err(|_| unsupported(format!("access mode {} is not known", mode.mode)))?;
    if mode == Mode::Unknown {
        return Err(Refused::Missing(format!("{field}.access_mode.mode")));
    }
    let access = match &cap.access_type {
        None => return Err(Refused::Missing(format!("{field}.access_type (block or mount)"))),
        Some(AccessType::Block(_)) => Access::Block,
        Some(AccessType::Mount(m)) => {
            if !m.fs_type.is_empty() && !FS_TYPES.contains(&m.fs_type.as_str()) {
                return Err(unsupported(format!("file system {:?} is not supported (ext4 or xfs)", m.fs_type)));
            }
            if !m.volume_mount_group.is_empty() {
                return Err(unsupported("volume_mount_group is not supported".into()));
            }
            if matches!(mode, Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter) {
                return Err(unsupported(format!(
                    "access mode {} needs a cluster file system; ext4 and xfs can be written by one node only \
                     (use a block volume, or a reader-only mode)",
                    mode.as_str_name()
                )));
            }
            Access::Mount { fs_type: m.fs_type.clone(), flags: m.mount_flags.clone() }
        }
    };
    Ok(Capability { access, mode })
}

/// Checks a list of capabilities (`field`: its name); it must not be empty.
pub fn check_all(caps: &[VolumeCapability], field: &str) -> Result<Vec<Capability>, Refused> {
    if caps.is_empty() {
        return Err(Refused::Missing(field.to_owned()));
    }
    caps.iter().enumerate().map(|(i, c)| check(c, &format!("{field}[{i}]"))).collect()
}

/// The StorageClass parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// `None`: not given (the capability's file system, else ext4).
    pub fs_type: Option<String>,
    pub block_size: u32,
    /// The sidecars' `csi.storage.k8s.io/*` values (PVC name and namespace, PV name).
    pub k8s: Vec<(String, String)>,
}

/// Checks `parameters`; unknown keys are refused so that a typo in a StorageClass shows.
pub fn params(parameters: &HashMap<String, String>) -> Result<Params, Refused> {
    let mut p = Params { fs_type: None, block_size: DEFAULT_BLOCK_SIZE, k8s: Vec::new() };
    let unsupported = |key: &str, why: String| Refused::Unsupported { field: format!("parameters[{key:?}]"), why };
    let mut keys: Vec<&String> = parameters.keys().collect();
    keys.sort();
    for key in keys {
        let value = &parameters[key];
        match key.as_str() {
            PARAM_FS_TYPE => {
                if !FS_TYPES.contains(&value.as_str()) {
                    return Err(unsupported(key, format!("file system {value:?} is not supported (ext4 or xfs)")));
                }
                p.fs_type = Some(value.clone());
            }
            PARAM_BLOCK_SIZE => {
                p.block_size = value
                    .parse()
                    .ok()
                    .filter(|b| BLOCK_SIZES.contains(b))
                    .ok_or_else(|| unsupported(key, format!("{value:?} is not a block size (512 or 4096)")))?;
            }
            k if k.starts_with(K8S_PARAM_PREFIX) => p.k8s.push((key.clone(), value.clone())),
            _ => {
                return Err(unsupported(
                    key,
                    format!("not a parameter of {} (known: {PARAM_FS_TYPE}, {PARAM_BLOCK_SIZE})", crate::DRIVER_NAME),
                ));
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

    pub fn mount(fs: &str, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume { fs_type: fs.into(), ..Default::default() })),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    pub fn block(mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn capabilities() {
        let c = check(&mount("xfs", Mode::SingleNodeWriter), "c").unwrap();
        assert_eq!(c.access, Access::Mount { fs_type: "xfs".into(), flags: vec![] });
        assert!(c.single_node() && !c.read_only());
        assert!(check(&mount("", Mode::MultiNodeReaderOnly), "c").unwrap().read_only());
        assert_eq!(check(&block(Mode::MultiNodeMultiWriter), "c").unwrap().access, Access::Block);
        for mode in [Mode::MultiNodeMultiWriter, Mode::MultiNodeSingleWriter] {
            let e = check(&mount("ext4", mode), "volume_capabilities[0]").unwrap_err();
            assert!(e.to_string().starts_with("volume_capabilities[0]: access mode"), "{e}");
        }
        let e = check(&mount("btrfs", Mode::SingleNodeWriter), "c").unwrap_err();
        assert_eq!(e.to_string(), "c: file system \"btrfs\" is not supported (ext4 or xfs)");
        let e = check(&mount("", Mode::Unknown), "c").unwrap_err();
        assert_eq!(e, Refused::Missing("c.access_mode.mode".into()));
        let e = check(&VolumeCapability { access_type: None, ..mount("", Mode::SingleNodeWriter) }, "c").unwrap_err();
        assert_eq!(e.to_string(), "c.access_type (block or mount) is required");
        let e = check(&VolumeCapability { access_mode: None, ..block(Mode::SingleNodeWriter) }, "c").unwrap_err();
        assert_eq!(e.to_string(), "c.access_mode is required");
        assert_eq!(check_all(&[], "volume_capabilities").unwrap_err().to_string(), "volume_capabilities is required");
    }

    #[test]
    fn parameters() {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let p = params(&map(&[("fsType", "xfs"), ("blockSize", "512"), ("csi.storage.k8s.io/pvc/name", "data-0")]))
            .unwrap();
        assert_eq!(p.fs_type.as_deref(), Some("xfs"));
        assert_eq!(p.block_size, 512);
        assert_eq!(p.k8s, vec![("csi.storage.k8s.io/pvc/name".to_string(), "data-0".to_string())]);
        assert_eq!(params(&map(&[])).unwrap().block_size, 4096);
        let e = params(&map(&[("blockSize", "1024")])).unwrap_err();
        assert_eq!(e.to_string(), "parameters[\"blockSize\"]: \"1024\" is not a block size (512 or 4096)");
        let e = params(&map(&[("fstype", "ext4")])).unwrap_err();
        assert!(e.to_string().contains("not a parameter of csi.fabriq.dev"), "{e}");
    }
}
