//! The keys of the maps the driver hands from one RPC to another through the CO: the
//! `publish_context` of ControllerPublishVolume (how the node connects, read by
//! NodeStageVolume and NodePublishVolume) and the `volume_context` of CreateVolume. The names
//! are nvme-cli's (`transport`, `traddr`, `trsvcid`, `subnqn`, `nsid`).

/// `tcp` (or `rdma`).
pub const TRANSPORT: &str = "transport";
/// The storage node's address.
pub const TRADDR: &str = "traddr";
/// The storage node's NVMe port.
pub const TRSVCID: &str = "trsvcid";
/// The volume's subsystem NQN.
pub const SUBNQN: &str = "subnqn";
/// The namespace of the subsystem that is the volume (always 1 for fabriq volumes).
pub const NSID: &str = "nsid";
/// Volume context: the StorageClass's file system, when it named one.
pub const FS_TYPE: &str = "fsType";
/// Volume context: the namespace's logical block size.
pub const BLOCK_SIZE: &str = "blockSize";
/// The label key prefix of topology segments: `topology.fabriq.dev/zone` is the storage
/// node label `zone`.
pub const TOPOLOGY_PREFIX: &str = "topology.fabriq.dev/";
/// The provisioner label that remembers a StorageClass's file system.
pub const FS_TYPE_LABEL: &str = "csi.fabriq.dev/fs-type";
