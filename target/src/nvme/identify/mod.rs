//! Identify data structures, 4096 bytes each (NVMe Base 2.0, 5.17.2; NVM
//! Command Set 1.0, 4.1.5): the CNS values, the controller and namespace
//! structures a fabrics target fills, the namespace identification descriptor
//! list, namespace ID lists, and the NVM command set specific structures.
//!
//! Submodules: [`controller`] (CNS 01h, and CNS 06h for the NVM command set),
//! [`namespace`] (CNS 00h, CNS 05h and 08h, descriptors CNS 03h, lists CNS
//! 02h/07h).
//!
//! Invariants: every structure has `SIZE` = 4096 and encodes into a buffer
//! the caller zeroed (reserved bytes stay zero), asserting the length (a
//! short output buffer is a caller bug); decoders check the length and return
//! [`crate::nvme::WireError`].

pub mod controller;
pub mod namespace;

pub use controller::{IdentifyController, NvmIdentifyController, PowerStateDescriptor};
pub use namespace::{
    IdentifyNamespace, IdentifyNamespaceIndependent, LbaFormat, NamespaceId, NvmIdentifyNamespace,
    decode_ns_id_descriptors, decode_ns_list, encode_ns_id_descriptors, encode_ns_list,
};

/// Size of every Identify data structure.
pub const IDENTIFY_SIZE: usize = 4096;

/// Controller or Namespace Structure values (NVMe Base 2.0, 5.17.1 Figure 273).
pub mod cns {
    /// Identify Namespace of the NVM command set for NSID.
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller.
    pub const CONTROLLER: u8 = 0x01;
    /// Active namespace ID list: up to 1024 NSIDs greater than NSID.
    pub const ACTIVE_NAMESPACE_LIST: u8 = 0x02;
    /// Namespace identification descriptor list for NSID.
    pub const NAMESPACE_ID_DESCRIPTORS: u8 = 0x03;
    /// NVM Set list.
    pub const NVM_SET_LIST: u8 = 0x04;
    /// I/O command set specific Identify Namespace (CSI in CDW11).
    pub const CSI_NAMESPACE: u8 = 0x05;
    /// I/O command set specific Identify Controller (CSI in CDW11).
    pub const CSI_CONTROLLER: u8 = 0x06;
    /// Active namespace ID list of one I/O command set.
    pub const CSI_ACTIVE_NAMESPACE_LIST: u8 = 0x07;
    /// I/O command set independent Identify Namespace.
    pub const CS_INDEPENDENT_NAMESPACE: u8 = 0x08;
    /// Allocated namespace ID list.
    pub const ALLOCATED_NAMESPACE_LIST: u8 = 0x10;
    /// Identify Namespace of an allocated namespace.
    pub const ALLOCATED_NAMESPACE: u8 = 0x11;
    /// Controllers attached to NSID.
    pub const NAMESPACE_ATTACHED_CONTROLLERS: u8 = 0x12;
    /// Controllers of the NVM subsystem.
    pub const CONTROLLER_LIST: u8 = 0x13;
    /// Secondary controller list.
    pub const SECONDARY_CONTROLLER_LIST: u8 = 0x15;
    /// Namespace granularity list.
    pub const NAMESPACE_GRANULARITY_LIST: u8 = 0x16;
    /// UUID list.
    pub const UUID_LIST: u8 = 0x17;
    /// Endurance group list.
    pub const ENDURANCE_GROUP_LIST: u8 = 0x19;
    /// Identify I/O Command Set data structure.
    pub const IO_COMMAND_SET: u8 = 0x1C;
}

/// Command Set Identifiers (NVMe Base 2.0, 5.17.1 Figure 274 CSI).
pub mod csi {
    pub const NVM: u8 = 0x00;
    pub const KEY_VALUE: u8 = 0x01;
    pub const ZONED_NAMESPACE: u8 = 0x02;
}
