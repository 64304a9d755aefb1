//! A volume as its pool records it: identity, size, block size, state, and the extent map
//! that translates its bytes to device bytes.
//!
//! Invariants (checked whenever a table is read or written, see `pool::check_table`): the size
//! is a positive whole number of extents; the runs are in logical order, each at least one
//! extent long, and cover logical extents `0..size/extent` exactly once (a thick volume; the
//! map is logical -> physical so that thin volumes, with holes, can come later); no physical
//! extent belongs to two runs of any volumes of the pool.

use super::error::{InvalidArgument, StorageError};
use super::ids::{Name, VolumeId};

/// The logical block size a volume is exported with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockSize {
    B512,
    B4096,
}

impl BlockSize {
    pub fn from_bytes(bytes: u32) -> Option<BlockSize> {
        match bytes {
            512 => Some(BlockSize::B512),
            4096 => Some(BlockSize::B4096),
            _ => None,
        }
    }

    pub fn bytes(self) -> u32 {
        match self {
            BlockSize::B512 => 512,
            BlockSize::B4096 => 4096,
        }
    }
}

/// Where a volume is in its life.
///
/// ```text
///   create_volume          delete_volume (metadata)      discard + delete (metadata)
///  ───────────────> Ready ──────────────────────> Deleting ──────────────────────────> (gone)
///                    │  ^                            ^  │
///                    └──┘ grow_volume                └──┘ a failed discard, or a crash:
///                                                         delete_volume or the next open
///                                                         finishes it
/// ```
/// A `Deleting` volume still owns its extents (they are not free) but is never to be
/// exported: its data is being discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeState {
    Ready,
    Deleting,
}

impl VolumeState {
    pub(crate) fn code(self) -> u8 {
        match self {
            VolumeState::Ready => 1,
            VolumeState::Deleting => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<VolumeState> {
        match code {
            1 => Some(VolumeState::Ready),
            2 => Some(VolumeState::Deleting),
            _ => None,
        }
    }
}

/// `count` consecutive extents of a volume, from logical extent `logical_start`, stored at
/// physical extents `physical_start..` of the device (physical extent `p` is device bytes
/// `p * extent_bytes ..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Run {
    pub logical_start: u64,
    pub physical_start: u64,
    pub count: u64,
}

impl Run {
    pub fn logical_end(&self) -> u64 {
        self.logical_start + self.count
    }

    pub fn physical_end(&self) -> u64 {
        self.physical_start + self.count
    }
}

/// A volume: a snapshot of its record in the pool's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub(crate) id: VolumeId,
    pub(crate) name: Name,
    pub(crate) size_bytes: u64,
    pub(crate) block_size: BlockSize,
    pub(crate) state: VolumeState,
    pub(crate) created_unix_s: u64,
    pub(crate) runs: Vec<Run>,
    /// Not stored per volume: the pool's extent size, kept here so that [`Volume::map`]
    /// needs nothing else.
    pub(crate) extent_bytes: u64,
}

impl Volume {
    pub fn id(&self) -> VolumeId {
        self.id
    }

    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The volume's capacity: the size asked for, rounded up to whole extents.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// Capacity in logical blocks (the namespace size, NSZE).
    pub fn blocks(&self) -> u64 {
        self.size_bytes / u64::from(self.block_size.bytes())
    }

    pub fn state(&self) -> VolumeState {
        self.state
    }

    /// Creation time, seconds since the Unix epoch.
    pub fn created_unix_s(&self) -> u64 {
        self.created_unix_s
    }

    /// The extent map, in logical order.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    pub fn extent_bytes(&self) -> u64 {
        self.extent_bytes
    }

    pub fn extents(&self) -> u64 {
        self.size_bytes / self.extent_bytes
    }

    /// The device byte ranges `(device_offset, len)` that hold the volume's bytes
    /// `offset..offset + len`, in order; a range never crosses a run boundary.
    pub fn map(&self, offset: u64, len: u64) -> Result<Mapping<'_>, StorageError> {
        let out_of_range = || InvalidArgument::Range { offset, len, size_bytes: self.size_bytes };
        let end = offset.checked_add(len).filter(|&end| end <= self.size_bytes).ok_or_else(out_of_range)?;
        let extent_bytes = self.extent_bytes;
        let index = self.runs.partition_point(|run| run.logical_end() * extent_bytes <= offset);
        Ok(Mapping { runs: &self.runs, extent_bytes, index, pos: offset, end })
    }
}

/// The iterator of [`Volume::map`].
#[derive(Debug, Clone)]
pub struct Mapping<'a> {
    runs: &'a [Run],
    extent_bytes: u64,
    index: usize,
    pos: u64,
    end: u64,
}

impl Iterator for Mapping<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.pos >= self.end {
            return None;
        }
        let run = self.runs[self.index];
        let run_start = run.logical_start * self.extent_bytes;
        let run_end = run.logical_end() * self.extent_bytes;
        debug_assert!(run_start <= self.pos && self.pos < run_end, "runs cover the volume in order");
        let piece_end = self.end.min(run_end);
        let device_offset = run.physical_start * self.extent_bytes + (self.pos - run_start);
        let piece = (device_offset, piece_end - self.pos);
        self.pos = piece_end;
        if piece_end == run_end {
            self.index += 1;
        }
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(runs: Vec<Run>, extent_bytes: u64) -> Volume {
        let extents: u64 = runs.iter().map(|r| r.count).sum();
        Volume {
            id: VolumeId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(),
            name: Name::new("v").unwrap(),
            size_bytes: extents * extent_bytes,
            block_size: BlockSize::B4096,
            state: VolumeState::Ready,
            created_unix_s: 0,
            runs,
            extent_bytes,
        }
    }

    #[test]
    fn map_splits_at_run_boundaries() {
        let e = 1 << 20;
        let v = volume(
            vec![
                Run { logical_start: 0, physical_start: 10, count: 2 },
                Run { logical_start: 2, physical_start: 40, count: 1 },
                Run { logical_start: 3, physical_start: 12, count: 3 },
            ],
            e,
        );
        assert_eq!(v.blocks(), 6 * e / 4096);
        let all: Vec<_> = v.map(0, 6 * e).unwrap().collect();
        assert_eq!(all, vec![(10 * e, 2 * e), (40 * e, e), (12 * e, 3 * e)]);
        let mid: Vec<_> = v.map(2 * e - 512, 1024 + e).unwrap().collect();
        assert_eq!(mid, vec![(12 * e - 512, 512), (40 * e, e), (12 * e, 512)]);
        let inside: Vec<_> = v.map(4 * e + 7, 9).unwrap().collect();
        assert_eq!(inside, vec![(13 * e + 7, 9)]);
        assert_eq!(v.map(6 * e, 0).unwrap().count(), 0);
        let last: Vec<_> = v.map(6 * e - 1, 1).unwrap().collect();
        assert_eq!(last, vec![(15 * e - 1, 1)]);
    }

    #[test]
    fn map_refuses_out_of_range() {
        let v = volume(vec![Run { logical_start: 0, physical_start: 3, count: 1 }], 1 << 20);
        assert!(matches!(v.map(1 << 20, 1), Err(StorageError::InvalidArgument(InvalidArgument::Range { .. }))));
        assert!(v.map(1, u64::MAX).is_err());
        assert!(v.map(u64::MAX, 1).is_err());
    }
}
