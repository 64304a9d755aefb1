//! The NVMe base and NVMe over Fabrics specifications as plain types: no I/O here.
//!
//! References: NVM Express Base Specification 2.0 ("NVMe Base 2.0"), which
//! absorbed NVMe over Fabrics 1.1 (its section 6 holds the fabrics commands),
//! and the NVM Command Set Specification 1.0.
//!
//! Submodules:
//! - [`ids`]: `Cid`, `Qid`, `Nsid`, `CntlId`, `Ttag`, `Lba`, and the NVMe Qualified
//!   Name `Nqn`.
//! - [`opcode`]: admin and I/O opcodes, fabrics command types.
//! - [`sqe`]: the 64-byte submission queue entry, SGL descriptors, and typed
//!   views of fabrics, admin and I/O commands.
//! - [`cqe`]: the 16-byte completion queue entry.
//! - [`status`]: the status field, named status codes, Connect response Dword 0.
//! - [`property`]: controller properties (CAP, VS, CC, CSTS) read and written
//!   by Property Get/Set.
//! - [`identify`]: Identify data structures.
//! - [`log`]: log pages and the Get Log Page window helper.
//! - [`discovery`]: the discovery log page.
//! - [`features`]: feature identifiers and encodings, asynchronous events.
//! - [`wire`]: the error type of this layer and byte helpers.
//!
//! Invariants, for every wire structure here: a `SIZE` constant checked at
//! compile time; explicit little-endian encoding at the specification's byte
//! offsets (no transmutes, no unsafe); decoders take `&[u8]` and return
//! [`WireError`] on short input (input comes from peers); encoders write into
//! a caller-provided, zeroed `&mut [u8]` (pooled buffers, no allocation per
//! command) and assert its length (a short buffer is a caller bug).

pub mod cqe;
pub mod discovery;
pub mod features;
pub mod identify;
pub mod ids;
pub mod log;
pub mod opcode;
pub mod property;
pub mod sqe;
pub mod status;
pub mod wire;

pub use cqe::Cqe;
pub use ids::*;
pub use opcode::{AdminOpcode, FABRICS_OPCODE, FabricsType, IoOpcode};
pub use property::PropertySize;
pub use sqe::{
    Abort, Connect, ConnectData, DatasetManagement, Disconnect, DsmRange, Features, GetLogPage, Identify, PropertyGet,
    PropertySet, ReadWrite, SglDescriptor, SglKind, Sqe, fabrics_offsets,
};
pub use status::{Sct, Status, connect_invalid_param_dw0};
pub use wire::WireError;
