//! Storage pools and volumes. A pool is a device (an NVMe SSD, any block device, or a plain
//! file) claimed with an on-device label and carved into volumes of whole extents; the
//! pool's metadata (its identity and volume table) lives on the pool itself, checksummed and
//! written so that a crash at any instant leaves the old or the new table, never a mix and
//! never an extent owned twice. FORMAT.md, beside this file, draws the format byte by byte
//! and gives the reasoning.
//!
//! - [`device`]: the [`Device`] trait, [`FileDevice`] and [`MemDevice`]; [`FaultyDevice`] for
//!   crash and error tests.
//! - [`Pool`]: create, open (recovery included), volumes: create, get, list, grow, delete.
//! - [`Volume::map`]: a volume's byte range as device byte ranges, for the data path.
//! - [`StorageError`]: the one error type, with stable codes for the node API.
//!
//! Invariants: nothing here is on the I/O path (metadata updates are synchronous, with a
//! flush); free space is always derived from the volume table; the device is refused at
//! creation when it holds another pool, a file system or a partition table, unless forced.

mod alloc;
pub mod device;
mod error;
mod faulty;
mod format;
mod ids;
mod pool;
mod probe;
mod volume;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;

pub use device::{Device, FileDevice, MemDevice};
pub use error::{Corruption, InvalidArgument, Lookup, SlotProblem, StorageError, TableProblem};
pub use faulty::{CachePolicy, Cut, FaultyDevice, Tear};
pub use ids::{Name, NameProblem, PoolId, VolumeId};
pub use pool::{CreateOptions, Pool, PoolInfo};
pub use probe::{Signature, probe};
pub use volume::{BlockSize, Mapping, Run, Volume, VolumeState};
