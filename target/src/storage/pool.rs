//! A pool: one device carved into volumes, its metadata kept on the device itself (the format
//! is drawn in FORMAT.md beside this file).
//!
//! Every change is one metadata update: the whole new volume table goes to the slot that does
//! not hold the current one, then a flush, and only then is the change made in memory and
//! reported done. Opening takes the highest generation whose checksums verify, so a crash at
//! any instant leaves the old table or the new one, never a mix.
//!
//! Invariants:
//! - the table in memory is always the one of the slot with generation `generation` on the
//!   device, and always passes [`check_table`] (checked again before every write: writing a
//!   bad table is a bug, and an assertion stops it);
//! - free space is derived from the table, never stored, so it cannot disagree with it; no
//!   physical extent is owned twice;
//! - a volume's extents are discarded only once the volume is durably `Deleting` (no live
//!   volume ever loses data), and a `Deleting` volume is finished by `delete_volume` or the
//!   next open (no space leaks);
//! - the label is written once, last, when the pool is created: a pool with a label always has
//!   a valid table.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::alloc::{self, Span};
use super::device::Device;
use super::error::{Corruption, InvalidArgument, Lookup, SlotProblem, StorageError, TableProblem};
use super::format::{
    self, BLOCK_BYTES, DEFAULT_EXTENT_BYTES, DEFAULT_SLOT_BYTES, Label, LabelError, Layout, MAX_EXTENT_BYTES,
    MAX_SLOT_BYTES, MIN_EXTENT_BYTES, MIN_SLOT_BYTES, SLOT_HEADER_BYTES, SlotHeader,
};
use super::ids::{Name, PoolId, VolumeId};
use super::probe;
use super::volume::{BlockSize, Run, Volume, VolumeState};

type Result<T> = std::result::Result<T, StorageError>;

/// How a new pool is laid out. The defaults are what the issue asks for: 1 MiB extents, and
/// 4 MiB metadata slots (room for about 150 000 runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOptions {
    /// Create even over another pool, a file system or a partition table.
    pub force: bool,
    /// A power of two from 64 KiB to 1 GiB.
    pub extent_bytes: u64,
    /// A multiple of 4096 from 8 KiB to 256 MiB.
    pub slot_bytes: u64,
}

impl Default for CreateOptions {
    fn default() -> CreateOptions {
        CreateOptions { force: false, extent_bytes: DEFAULT_EXTENT_BYTES, slot_bytes: DEFAULT_SLOT_BYTES }
    }
}

/// What a pool is and holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    pub id: PoolId,
    pub name: Name,
    pub created_unix_s: u64,
    /// The device's size when the pool was created.
    pub device_bytes: u64,
    pub sector_bytes: u32,
    pub extent_bytes: u64,
    /// Extents volumes can have.
    pub data_extents: u64,
    pub free_extents: u64,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub volumes: usize,
    /// The metadata generation: it grows by one with every update.
    pub generation: u64,
}

/// Where ids and times come from: the system, or fixed values so that tests can compare
/// whole tables.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    clock_unix_s: Option<u64>,
    next_id: Option<u64>,
}

impl Env {
    pub(crate) fn system() -> Env {
        Env { clock_unix_s: None, next_id: None }
    }

    #[cfg(test)]
    pub(crate) fn fixed(seed: u64) -> Env {
        Env { clock_unix_s: Some(1_700_000_000), next_id: Some(seed << 32) }
    }

    fn now_unix_s(&self) -> u64 {
        self.clock_unix_s.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    fn new_uuid(&mut self) -> Uuid {
        match &mut self.next_id {
            None => Uuid::new_v4(),
            Some(n) => {
                *n += 1;
                let bytes = u128::from(*n).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835).to_le_bytes();
                uuid::Builder::from_random_bytes(bytes).into_uuid()
            }
        }
    }
}

/// An open pool. Not shared by itself: the node API puts it behind a lock.
#[derive(Debug)]
pub struct Pool {
    device: Box<dyn Device>,
    label: Label,
    volumes: Vec<Volume>,
    generation: u64,
    env: Env,
}

impl Pool {
    /// Creates a pool on the whole device with the default layout. Refuses a device that
    /// holds another pool, a file system or a partition table unless `force`.
    pub fn create(device: Box<dyn Device>, name: &str, force: bool) -> Result<Pool> {
        Pool::create_with(device, name, &CreateOptions { force, ..CreateOptions::default() })
    }

    pub fn create_with(device: Box<dyn Device>, name: &str, options: &CreateOptions) -> Result<Pool> {
        Pool::create_in(device, name, options, Env::system())
    }

    pub(crate) fn create_in(
        device: Box<dyn Device>,
        name: &str,
        options: &CreateOptions,
        mut env: Env,
    ) -> Result<Pool> {
        let name = parse_name(name)?;
        let extent_bytes = options.extent_bytes;
        if !extent_bytes.is_power_of_two() || !(MIN_EXTENT_BYTES..=MAX_EXTENT_BYTES).contains(&extent_bytes) {
            return Err(InvalidArgument::ExtentSize(extent_bytes).into());
        }
        let slot_bytes = options.slot_bytes;
        if !slot_bytes.is_multiple_of(BLOCK_BYTES) || !(MIN_SLOT_BYTES..=MAX_SLOT_BYTES).contains(&slot_bytes) {
            return Err(InvalidArgument::SlotSize(slot_bytes).into());
        }
        let sector_bytes = device.sector_bytes();
        if sector_bytes != 512 && sector_bytes != 4096 {
            return Err(InvalidArgument::SectorSize(sector_bytes).into());
        }
        let device_bytes = device.size_bytes();
        let layout =
            Layout::for_device(device_bytes, extent_bytes, slot_bytes).ok_or(StorageError::DeviceTooSmall {
                device_bytes,
                needed_bytes: Layout::min_device_bytes(extent_bytes, slot_bytes),
                why: "a pool needs its metadata area and at least one data extent",
            })?;
        if let Some(found) = probe::probe(&*device).map_err(StorageError::io("probing the device for what it holds"))? {
            if !options.force {
                return Err(StorageError::Foreign { found });
            }
            tracing::warn!(%found, "creating a pool over what the device holds, as forced");
        }
        let pool_id = PoolId::new(env.new_uuid()).expect("a version 4 UUID is never nil");
        let label = Label { pool_id, name, created_unix_s: env.now_unix_s(), device_bytes, sector_bytes, layout };

        // An old label goes first, durably: from here on a crash leaves no pool, never an old
        // pool whose slots are half wiped.
        device
            .write_zeroes(0, BLOCK_BYTES)
            .and_then(|()| device.flush())
            .map_err(StorageError::io("erasing the old label"))?;
        // Old slots and other tools' signatures in the metadata area go; the data area is
        // discarded so that new volumes start from zeroes where the device can promise it.
        device
            .write_zeroes(BLOCK_BYTES, layout.metadata_bytes() - BLOCK_BYTES)
            .map_err(StorageError::io("zeroing the metadata area"))?;
        device
            .discard(layout.metadata_bytes(), layout.data_extents() * extent_bytes)
            .map_err(StorageError::io("discarding the data area"))?;
        device.flush().map_err(StorageError::io("flushing the wiped metadata area"))?;
        let mut pool = Pool { device, label, volumes: Vec::new(), generation: 0, env };
        pool.commit(Vec::new())?;
        // The label is the commit point of the creation.
        let block = pool.label.encode();
        pool.device
            .write_at(&block, 0)
            .and_then(|()| pool.device.flush())
            .map_err(StorageError::io("writing the label"))?;
        tracing::info!(pool = %pool.label.pool_id, name = %pool.label.name, data_extents = layout.data_extents(), extent_bytes, "pool created");
        Ok(pool)
    }

    /// Opens the pool on the device: its label, then the newest valid metadata slot. Volumes
    /// left `Deleting` by a crash are finished (if that fails they stay `Deleting`, and
    /// `delete_volume` finishes them later).
    pub fn open(device: Box<dyn Device>) -> Result<Pool> {
        Pool::open_in(device, Env::system())
    }

    pub(crate) fn open_in(device: Box<dyn Device>, env: Env) -> Result<Pool> {
        let device_bytes = device.size_bytes();
        if device_bytes < BLOCK_BYTES {
            return Err(StorageError::NotAPool { found: None });
        }
        let mut block = vec![0; BLOCK_BYTES as usize];
        device.read_at(&mut block, 0).map_err(StorageError::io("reading the label"))?;
        let label = match Label::decode(&block) {
            Ok(label) => label,
            Err(LabelError::NoMagic) => {
                return Err(StorageError::NotAPool { found: probe::probe(&*device).ok().flatten() });
            }
            Err(LabelError::Corrupt(corruption)) => return Err(corruption.into()),
        };
        let layout = label.layout;
        if device_bytes < layout.pool_bytes() {
            return Err(StorageError::DeviceTooSmall {
                device_bytes,
                needed_bytes: layout.pool_bytes(),
                why: "the pool's label says the pool spans more than the device holds (was it shrunk?)",
            });
        }
        let a = read_slot(&*device, &label, 0)?;
        let b = read_slot(&*device, &label, 1)?;
        let (slot, header, payload) = match (a, b) {
            (Err(a), Err(b)) => return Err(Corruption::NoValidSlot { a, b }.into()),
            (Ok((h, p)), Err(_)) => (0, h, p),
            (Err(_), Ok((h, p))) => (1, h, p),
            (Ok((ha, _)), Ok((hb, _))) if ha.generation == hb.generation => {
                return Err(Corruption::SameGeneration(ha.generation).into());
            }
            (Ok((ha, pa)), Ok((hb, pb))) => {
                if ha.generation > hb.generation {
                    (0, ha, pa)
                } else {
                    (1, hb, pb)
                }
            }
        };
        let table_problem = |problem| Corruption::Table {
            slot: if slot == 0 { 'A' } else { 'B' },
            generation: header.generation,
            problem,
        };
        let volumes = format::decode_table(&payload, layout.extent_bytes).map_err(table_problem)?;
        check_table(&volumes, &layout).map_err(table_problem)?;
        let mut pool = Pool { device, label, volumes, generation: header.generation, env };
        tracing::info!(pool = %pool.label.pool_id, name = %pool.label.name, generation = pool.generation, volumes = pool.volumes.len(), "pool opened");
        pool.finish_deletions();
        Ok(pool)
    }

    pub fn id(&self) -> PoolId {
        self.label.pool_id
    }

    pub fn name(&self) -> &Name {
        &self.label.name
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn info(&self) -> PoolInfo {
        let layout = &self.label.layout;
        let free_extents: u64 = self.free_spans().iter().map(|s| s.count).sum();
        PoolInfo {
            id: self.label.pool_id,
            name: self.label.name.clone(),
            created_unix_s: self.label.created_unix_s,
            device_bytes: self.label.device_bytes,
            sector_bytes: self.label.sector_bytes,
            extent_bytes: layout.extent_bytes,
            data_extents: layout.data_extents(),
            free_extents,
            capacity_bytes: layout.data_extents() * layout.extent_bytes,
            free_bytes: free_extents * layout.extent_bytes,
            volumes: self.volumes.len(),
            generation: self.generation,
        }
    }

    /// The device, for the data path (volume byte ranges map to device byte ranges through
    /// [`Volume::map`]).
    pub fn device(&self) -> &dyn Device {
        &*self.device
    }

    pub fn into_device(self) -> Box<dyn Device> {
        self.device
    }

    /// Every volume, `Deleting` ones included, in creation order.
    pub fn volumes(&self) -> &[Volume] {
        &self.volumes
    }

    pub fn volume(&self, id: VolumeId) -> Result<&Volume> {
        self.volumes.iter().find(|v| v.id == id).ok_or(StorageError::NotFound(Lookup::Id(id)))
    }

    pub fn volume_by_name(&self, name: &str) -> Result<&Volume> {
        self.volumes
            .iter()
            .find(|v| v.name.as_str() == name)
            .ok_or_else(|| StorageError::NotFound(Lookup::Name(name.to_owned())))
    }

    /// Creates a volume of at least `size_bytes` (rounded up to whole extents: the volume's
    /// size is what it really has) with logical blocks of `block_size` bytes (512 or 4096).
    pub fn create_volume(&mut self, name: &str, size_bytes: u64, block_size: u32) -> Result<Volume> {
        let name = parse_name(name)?;
        let block_size = BlockSize::from_bytes(block_size).ok_or(InvalidArgument::BlockSize(block_size))?;
        let extents = self.extents_for(size_bytes)?;
        if self.volumes.iter().any(|v| v.name == name) {
            return Err(StorageError::NameTaken(name));
        }
        let spans = self.allocate(extents, None)?;
        let mut runs = Vec::new();
        append_runs(&mut runs, &spans);
        let volume = Volume {
            id: self.new_volume_id(),
            name,
            size_bytes: extents * self.label.layout.extent_bytes,
            block_size,
            state: VolumeState::Ready,
            created_unix_s: self.env.now_unix_s(),
            runs,
            extent_bytes: self.label.layout.extent_bytes,
        };
        let mut next = self.volumes.clone();
        next.push(volume.clone());
        self.commit(next)?;
        tracing::info!(pool = %self.label.pool_id, volume = %volume.id, name = %volume.name, size_bytes = volume.size_bytes, runs = volume.runs.len(), "volume created");
        Ok(volume)
    }

    /// Grows a volume to at least `new_size_bytes` (rounded up to whole extents). Asking for
    /// less than the volume has is refused; asking for what it has changes nothing.
    pub fn grow_volume(&mut self, id: VolumeId, new_size_bytes: u64) -> Result<Volume> {
        let index = self.index_of(id)?;
        let current = &self.volumes[index];
        if current.state == VolumeState::Deleting {
            return Err(StorageError::Deleting(id));
        }
        if new_size_bytes < current.size_bytes {
            return Err(InvalidArgument::Shrink {
                id,
                current_bytes: current.size_bytes,
                requested_bytes: new_size_bytes,
            }
            .into());
        }
        let extents = self.extents_for(new_size_bytes)?;
        let more = extents - current.extents();
        if more == 0 {
            return Ok(current.clone());
        }
        let spans = self.allocate(more, current.runs.last().map(Run::physical_end))?;
        let mut next = self.volumes.clone();
        append_runs(&mut next[index].runs, &spans);
        next[index].size_bytes = extents * self.label.layout.extent_bytes;
        self.commit(next)?;
        let volume = &self.volumes[index];
        tracing::info!(pool = %self.label.pool_id, volume = %id, size_bytes = volume.size_bytes, runs = volume.runs.len(), "volume grown");
        Ok(volume.clone())
    }

    /// Deletes a volume: marks it `Deleting` (durably), discards its extents, then removes it
    /// from the table. If the discard or the last update fails, the volume stays `Deleting`
    /// and calling this again (or opening the pool) finishes the job.
    pub fn delete_volume(&mut self, id: VolumeId) -> Result<()> {
        let index = self.index_of(id)?;
        if self.volumes[index].state == VolumeState::Ready {
            let mut next = self.volumes.clone();
            next[index].state = VolumeState::Deleting;
            self.commit(next)?;
        }
        self.finish_delete(id)
    }

    fn finish_delete(&mut self, id: VolumeId) -> Result<()> {
        let index = self.index_of(id)?;
        let extent_bytes = self.label.layout.extent_bytes;
        let volume = &self.volumes[index];
        assert_eq!(volume.state, VolumeState::Deleting, "only a volume durably marked deleting loses its data");
        for run in &volume.runs {
            self.device
                .discard(run.physical_start * extent_bytes, run.count * extent_bytes)
                .map_err(StorageError::io("discarding a deleted volume's extents"))?;
        }
        // The discards must be durable before the extents are free to be given out again.
        self.device.flush().map_err(StorageError::io("flushing a deleted volume's discards"))?;
        let mut next = self.volumes.clone();
        let volume = next.remove(index);
        self.commit(next)?;
        tracing::info!(pool = %self.label.pool_id, volume = %id, name = %volume.name, "volume deleted");
        Ok(())
    }

    fn finish_deletions(&mut self) {
        let deleting: Vec<VolumeId> =
            self.volumes.iter().filter(|v| v.state == VolumeState::Deleting).map(|v| v.id).collect();
        for id in deleting {
            if let Err(error) = self.finish_delete(id) {
                tracing::warn!(pool = %self.label.pool_id, volume = %id, %error, "could not finish deleting a volume; it stays deleting");
            }
        }
    }

    /// Writes `volumes` as the next generation and makes it the pool's table once durable.
    fn commit(&mut self, volumes: Vec<Volume>) -> Result<()> {
        let layout = self.label.layout;
        if let Err(problem) = check_table(&volumes, &layout) {
            panic!("refusing to write an inconsistent volume table (a bug): {problem}");
        }
        let generation = self.generation + 1;
        let bytes = format::encode_slot(&layout, self.label.pool_id, generation, &volumes)
            .map_err(|table_bytes| StorageError::MetadataFull { table_bytes, slot_bytes: layout.payload_capacity() })?;
        let offset = layout.slot_offsets[format::slot_of(generation)];
        self.device.write_at(&bytes, offset).map_err(StorageError::io("writing a metadata slot"))?;
        self.device.flush().map_err(StorageError::io("flushing a metadata slot"))?;
        self.volumes = volumes;
        self.generation = generation;
        Ok(())
    }

    fn index_of(&self, id: VolumeId) -> Result<usize> {
        self.volumes.iter().position(|v| v.id == id).ok_or(StorageError::NotFound(Lookup::Id(id)))
    }

    fn extents_for(&self, size_bytes: u64) -> Result<u64> {
        if size_bytes == 0 {
            return Err(InvalidArgument::ZeroSize.into());
        }
        let extent_bytes = self.label.layout.extent_bytes;
        let extents = size_bytes.div_ceil(extent_bytes);
        extents.checked_mul(extent_bytes).ok_or(InvalidArgument::SizeTooLarge(size_bytes))?;
        Ok(extents)
    }

    fn free_spans(&self) -> Vec<Span> {
        check_table(&self.volumes, &self.label.layout)
            .expect("the table in memory was checked when it was written or read")
    }

    fn allocate(&self, extents: u64, after: Option<u64>) -> Result<Vec<Span>> {
        let free = self.free_spans();
        alloc::allocate(&free, extents, after).ok_or_else(|| StorageError::NoSpace {
            needed_extents: extents,
            free_extents: free.iter().map(|s| s.count).sum(),
            extent_bytes: self.label.layout.extent_bytes,
        })
    }

    /// A fresh id. Random 122-bit ids do not collide; the check and the bound are the
    /// assertion that they did not.
    fn new_volume_id(&mut self) -> VolumeId {
        (0..8)
            .map(|_| VolumeId::new(self.env.new_uuid()).expect("a version 4 UUID is never nil"))
            .find(|id| self.volumes.iter().all(|v| v.id != *id))
            .expect("eight random volume ids in a row collided")
    }
}

fn parse_name(raw: &str) -> Result<Name> {
    Name::new(raw).map_err(|problem| InvalidArgument::Name { name: raw.to_owned(), problem }.into())
}

/// Appends allocated spans to a volume's runs, in order, merging a span into the last run
/// when it continues it physically.
fn append_runs(runs: &mut Vec<Run>, spans: &[Span]) {
    for span in spans {
        match runs.last_mut() {
            Some(last) if last.physical_end() == span.start => last.count += span.count,
            last => {
                let logical_start = last.map_or(0, |l| l.logical_end());
                runs.push(Run { logical_start, physical_start: span.start, count: span.count });
            }
        }
    }
}

/// Every invariant of a volume table (ids and names unique, sizes whole extents, each extent
/// map covering its volume in order, every run inside the data area, no extent owned twice);
/// returns the free spans the table leaves.
pub(crate) fn check_table(volumes: &[Volume], layout: &Layout) -> std::result::Result<Vec<Span>, TableProblem> {
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    let mut used = Vec::new();
    for v in volumes {
        if !ids.insert(v.id) {
            return Err(TableProblem::DuplicateId(v.id));
        }
        if !names.insert(&v.name) {
            return Err(TableProblem::DuplicateName(v.name.clone()));
        }
        if v.size_bytes == 0 || !v.size_bytes.is_multiple_of(layout.extent_bytes) {
            return Err(TableProblem::Size { volume: v.id, size_bytes: v.size_bytes });
        }
        let mut covered = 0u64;
        for run in &v.runs {
            if run.logical_start != covered || run.count == 0 {
                return Err(TableProblem::Coverage(v.id));
            }
            covered = covered.checked_add(run.count).ok_or(TableProblem::Coverage(v.id))?;
            used.push((Span { start: run.physical_start, count: run.count }, v.id));
        }
        if covered != v.size_bytes / layout.extent_bytes {
            return Err(TableProblem::Coverage(v.id));
        }
    }
    alloc::free_spans(layout.first_data_extent, layout.extent_count, used)
}

/// One slot's header and payload when both verify; `Err(problem)` when the slot is not valid;
/// an I/O error when it could not be read (never mistaken for an invalid slot: the other
/// slot may be older).
fn read_slot(
    device: &dyn Device,
    label: &Label,
    slot: usize,
) -> Result<std::result::Result<(SlotHeader, Vec<u8>), SlotProblem>> {
    let offset = label.layout.slot_offsets[slot];
    let mut header_bytes = [0; SLOT_HEADER_BYTES];
    device.read_at(&mut header_bytes, offset).map_err(StorageError::io("reading a metadata slot"))?;
    let header = match format::decode_slot_header(&header_bytes, &label.layout, label.pool_id, slot) {
        Ok(header) => header,
        Err(problem) => return Ok(Err(problem)),
    };
    let mut payload = vec![0; header.payload_bytes as usize];
    device
        .read_at(&mut payload, offset + SLOT_HEADER_BYTES as u64)
        .map_err(StorageError::io("reading a metadata slot"))?;
    if crc32c::crc32c(&payload) != header.payload_crc {
        return Ok(Err(SlotProblem::PayloadChecksum));
    }
    Ok(Ok((header, payload)))
}
