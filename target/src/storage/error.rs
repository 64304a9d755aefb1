//! The storage layer's one error type, [`StorageError`], and the detailed problems it carries.
//!
//! Every variant is something the node API can turn into an HTTP status without looking at
//! text: [`StorageError::code`] gives the stable machine-readable code, and the table on
//! [`StorageError`] suggests the status. Corruption is described by enums, never free text, so
//! tests assert on exactly what was found.

use std::io;
use std::path::PathBuf;

use super::ids::{Name, NameProblem, VolumeId};
use super::probe::Signature;

/// Errors of pools and volumes.
///
/// | variant | code | suggested HTTP status |
/// |---|---|---|
/// | `NotFound` | `not_found` | 404 |
/// | `NameTaken` | `name_taken` | 409 |
/// | `Deleting` | `volume_deleting` | 409 |
/// | `NoSpace` | `no_space` | 507 |
/// | `MetadataFull` | `metadata_full` | 507 |
/// | `InvalidArgument` | `invalid_argument` | 400 |
/// | `NotAPool` | `not_a_pool` | 404 (no pool on that device) |
/// | `Foreign` | `foreign_device` | 409 (retry with force) |
/// | `DeviceTooSmall` | `device_too_small` | 422 |
/// | `Corrupt` | `corrupt_metadata` | 500 |
/// | `Open`, `Io` | `io_error` | 500 (503 while the device is unreachable) |
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no volume {0}")]
    NotFound(Lookup),
    #[error("a volume named {0} already exists in this pool")]
    NameTaken(Name),
    #[error("volume {0} is being deleted; delete it again to finish")]
    Deleting(VolumeId),
    #[error(
        "not enough free space: {needed_extents} extents of {extent_bytes} bytes are needed, {free_extents} are free"
    )]
    NoSpace { needed_extents: u64, free_extents: u64, extent_bytes: u64 },
    #[error(
        "the volume table would take {table_bytes} bytes, more than a metadata slot holds ({slot_bytes}): too many volumes or too fragmented"
    )]
    MetadataFull { table_bytes: u64, slot_bytes: u64 },
    #[error(transparent)]
    InvalidArgument(#[from] InvalidArgument),
    #[error("no fabriq pool label on the device{}", match found { Some(s) => format!(" (it holds {s})"), None => String::new() })]
    NotAPool { found: Option<Signature> },
    #[error("the device holds {found}; refusing to create a pool over it unless forced")]
    Foreign { found: Signature },
    #[error("the device holds {device_bytes} bytes, {needed_bytes} are needed: {why}")]
    DeviceTooSmall { device_bytes: u64, needed_bytes: u64, why: &'static str },
    #[error("pool metadata is corrupt: {0}")]
    Corrupt(#[from] Corruption),
    #[error("{path}: {source}", path = path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{context}: {source}")]
    Io { context: &'static str, source: io::Error },
}

impl StorageError {
    /// The stable machine-readable code (see the table on [`StorageError`]).
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::NotFound(_) => "not_found",
            StorageError::NameTaken(_) => "name_taken",
            StorageError::Deleting(_) => "volume_deleting",
            StorageError::NoSpace { .. } => "no_space",
            StorageError::MetadataFull { .. } => "metadata_full",
            StorageError::InvalidArgument(_) => "invalid_argument",
            StorageError::NotAPool { .. } => "not_a_pool",
            StorageError::Foreign { .. } => "foreign_device",
            StorageError::DeviceTooSmall { .. } => "device_too_small",
            StorageError::Corrupt(_) => "corrupt_metadata",
            StorageError::Open { .. } | StorageError::Io { .. } => "io_error",
        }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> StorageError {
        move |source| StorageError::Io { context, source }
    }
}

/// How a missing volume was looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Id(VolumeId),
    Name(String),
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Id(id) => write!(f, "with id {id}"),
            Lookup::Name(name) => write!(f, "named {name:?}"),
        }
    }
}

/// A request the storage layer refuses as it stands (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidArgument {
    #[error("invalid name {name:?}: {problem}")]
    Name { name: String, problem: NameProblem },
    #[error("block size {0} is not supported: 512 or 4096")]
    BlockSize(u32),
    #[error("a volume's size must be more than zero bytes")]
    ZeroSize,
    #[error("a size of {0} bytes is too large")]
    SizeTooLarge(u64),
    #[error("volume {id} has {current_bytes} bytes; shrinking it to {requested_bytes} is refused")]
    Shrink { id: VolumeId, current_bytes: u64, requested_bytes: u64 },
    #[error("bytes {offset}..+{len} are outside the volume's {size_bytes} bytes")]
    Range { offset: u64, len: u64, size_bytes: u64 },
    #[error("the device's sector size {0} is not supported: 512 or 4096")]
    SectorSize(u32),
    #[error("extent size {0} must be a power of two from 64 KiB to 1 GiB")]
    ExtentSize(u64),
    #[error("metadata slot size {0} must be a multiple of 4096 from 8 KiB to 256 MiB")]
    SlotSize(u64),
    #[error("{}: neither a regular file nor a block device", .0.display())]
    NotADevice(PathBuf),
    #[error("a new pool file's size {0} must be a positive multiple of 4096")]
    FileSize(u64),
}

/// What is wrong with metadata that is present but cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error(
        "the label's checksum does not match (a torn or damaged label: the pool was never completely created, or the label was overwritten)"
    )]
    LabelChecksum,
    #[error("label format version {0} is not supported (this build reads version 1)")]
    LabelVersion(u32),
    #[error("the label asks for unknown incompatible features {0:#x}")]
    LabelFeatures(u32),
    #[error("label field {field} holds an impossible value {value}")]
    LabelField { field: &'static str, value: u64 },
    #[error("no metadata slot is valid: slot A {a}; slot B {b}")]
    NoValidSlot { a: SlotProblem, b: SlotProblem },
    #[error("both metadata slots claim generation {0}")]
    SameGeneration(u64),
    #[error(
        "metadata slot {slot} (generation {generation}) has checksums that verify but a volume table that does not: {problem}"
    )]
    Table { slot: char, generation: u64, problem: TableProblem },
}

/// Why a metadata slot was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotProblem {
    #[error("never written")]
    Blank,
    #[error("no slot magic")]
    Magic,
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("format version {0} is not supported")]
    Version(u32),
    #[error("written by another pool")]
    OtherPool,
    #[error("slot index or generation parity does not match its place")]
    WrongPlace,
    #[error("payload length {0} does not fit the slot")]
    PayloadLength(u64),
    #[error("payload checksum mismatch")]
    PayloadChecksum,
}

/// Why a checksummed volume table is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableProblem {
    #[error("the table ends inside a record")]
    Truncated,
    #[error("bytes follow the last record")]
    TrailingBytes,
    #[error("a reserved field is not zero")]
    Reserved,
    #[error("a volume has the nil id")]
    NilId,
    #[error("volume id {0} appears twice")]
    DuplicateId(VolumeId),
    #[error("a volume name is invalid: {0}")]
    Name(NameProblem),
    #[error("volume name {0} appears twice")]
    DuplicateName(Name),
    #[error("volume {volume}: block size {bytes}")]
    BlockSize { volume: VolumeId, bytes: u32 },
    #[error("volume {volume}: unknown state {code}")]
    State { volume: VolumeId, code: u8 },
    #[error("volume {volume}: unknown flags {flags:#x}")]
    Flags { volume: VolumeId, flags: u32 },
    #[error("volume {volume}: size {size_bytes} is not a positive whole number of extents")]
    Size { volume: VolumeId, size_bytes: u64 },
    #[error("volume {0}: its extent map does not cover its size exactly, in order")]
    Coverage(VolumeId),
    #[error("volume {volume}: physical extents {start}..+{count} are outside the data area")]
    OutOfRange { volume: VolumeId, start: u64, count: u64 },
    #[error("physical extent {extent} is owned by both volume {first} and volume {second}")]
    OwnedTwice { extent: u64, first: VolumeId, second: VolumeId },
}
