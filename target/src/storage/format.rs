//! The on-disk format of a pool, byte by byte as FORMAT.md (beside this file) draws it: the
//! label, the two metadata slots and the volume table they carry. Explicit little-endian
//! encoding with every length checked; nothing here does I/O.
//!
//! Invariants: every structure starts on a 4 KiB boundary, so a torn sector (512 or 4096
//! bytes) never touches two of them; an encoded slot or label always decodes to what was
//! encoded (round-trip and golden-byte tests pin it); decoding never panics and never
//! allocates more than the slot's size, whatever the bytes.

use uuid::Uuid;

use super::error::{Corruption, SlotProblem, TableProblem};
use super::ids::{Name, PoolId, VolumeId};
use super::volume::{BlockSize, Run, Volume, VolumeState};

pub(crate) const LABEL_MAGIC: [u8; 8] = *b"FABRIQPL";
pub(crate) const SLOT_MAGIC: [u8; 8] = *b"FABRIQMT";
pub(crate) const FORMAT_VERSION: u32 = 1;
/// The label's bytes (checksum included); the rest of its 4 KiB block is zero.
pub(crate) const LABEL_BYTES: usize = 256;
/// The label's block, and the unit every structure is aligned to and padded to.
pub(crate) const BLOCK_BYTES: u64 = 4096;
/// Where slot A starts: the first MiB holds only the label (and zeroes, wiping what other
/// tools left there), and keeps the conventional 1 MiB alignment.
pub(crate) const SLOT_A_OFFSET: u64 = 1 << 20;
pub(crate) const SLOT_HEADER_BYTES: usize = 64;
pub(crate) const TABLE_HEADER_BYTES: usize = 8;
pub(crate) const VOLUME_FIXED_BYTES: usize = 112;
pub(crate) const RUN_BYTES: usize = 24;
pub(crate) const MIN_EXTENT_BYTES: u64 = 64 << 10;
pub(crate) const MAX_EXTENT_BYTES: u64 = 1 << 30;
pub(crate) const MIN_SLOT_BYTES: u64 = 8 << 10;
pub(crate) const MAX_SLOT_BYTES: u64 = 256 << 20;
pub(crate) const DEFAULT_EXTENT_BYTES: u64 = 1 << 20;
pub(crate) const DEFAULT_SLOT_BYTES: u64 = 4 << 20;

/// Where things are on the device, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub extent_bytes: u64,
    pub slot_offsets: [u64; 2],
    pub slot_bytes: u64,
    /// Physical extents below this one hold metadata.
    pub first_data_extent: u64,
    /// Physical extents on the device (a partial extent at the end is not used).
    pub extent_count: u64,
}

impl Layout {
    /// The layout a new pool gets on a device of `device_bytes`; `None` when the device cannot
    /// hold the metadata area and one data extent. Parameters are already range-checked.
    pub fn for_device(device_bytes: u64, extent_bytes: u64, slot_bytes: u64) -> Option<Layout> {
        let slot_offsets = [SLOT_A_OFFSET, SLOT_A_OFFSET + slot_bytes];
        let metadata_end = SLOT_A_OFFSET + 2 * slot_bytes;
        let first_data_extent = metadata_end.div_ceil(extent_bytes);
        let extent_count = device_bytes / extent_bytes;
        (extent_count > first_data_extent).then_some(Layout {
            extent_bytes,
            slot_offsets,
            slot_bytes,
            first_data_extent,
            extent_count,
        })
    }

    /// The smallest device a pool with these parameters fits on.
    pub fn min_device_bytes(extent_bytes: u64, slot_bytes: u64) -> u64 {
        ((SLOT_A_OFFSET + 2 * slot_bytes).div_ceil(extent_bytes) + 1) * extent_bytes
    }

    pub fn data_extents(&self) -> u64 {
        self.extent_count - self.first_data_extent
    }

    /// The bytes below the data area: label and slots.
    pub fn metadata_bytes(&self) -> u64 {
        self.first_data_extent * self.extent_bytes
    }

    pub fn pool_bytes(&self) -> u64 {
        self.extent_count * self.extent_bytes
    }

    /// The largest payload a slot holds.
    pub fn payload_capacity(&self) -> u64 {
        self.slot_bytes - SLOT_HEADER_BYTES as u64
    }
}

/// The pool's label: written once, at creation, as the last step (its presence means the
/// pool was completely created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Label {
    pub pool_id: PoolId,
    pub name: Name,
    pub created_unix_s: u64,
    pub device_bytes: u64,
    pub sector_bytes: u32,
    pub layout: Layout,
}

/// Why no label was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LabelError {
    /// No label magic: not a pool.
    NoMagic,
    Corrupt(Corruption),
}

impl Label {
    /// The label's 4 KiB block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(BLOCK_BYTES as usize);
        b.extend_from_slice(&LABEL_MAGIC);
        put_u32(&mut b, FORMAT_VERSION);
        put_u32(&mut b, LABEL_BYTES as u32);
        b.extend_from_slice(self.pool_id.get().as_bytes());
        put_u64(&mut b, self.created_unix_s);
        put_u64(&mut b, self.device_bytes);
        put_u32(&mut b, u32::try_from(self.layout.extent_bytes).expect("extent size is at most 1 GiB"));
        put_u32(&mut b, self.sector_bytes);
        put_u64(&mut b, self.layout.slot_offsets[0]);
        put_u64(&mut b, self.layout.slot_offsets[1]);
        put_u64(&mut b, self.layout.slot_bytes);
        put_u64(&mut b, self.layout.first_data_extent);
        put_u64(&mut b, self.layout.extent_count);
        put_u32(&mut b, 0); // incompatible feature flags
        b.push(self.name.as_str().len() as u8);
        b.extend_from_slice(&[0; 3]); // reserved
        put_name(&mut b, &self.name);
        debug_assert_eq!(b.len(), 168);
        b.resize(LABEL_BYTES - 4, 0);
        let crc = crc32c::crc32c(&b);
        put_u32(&mut b, crc);
        b.resize(BLOCK_BYTES as usize, 0);
        b
    }

    /// Reads a label from the device's first bytes (at least [`LABEL_BYTES`]).
    pub fn decode(bytes: &[u8]) -> Result<Label, LabelError> {
        let bytes = bytes.get(..LABEL_BYTES).ok_or(LabelError::NoMagic)?;
        if bytes[..8] != LABEL_MAGIC {
            return Err(LabelError::NoMagic);
        }
        let corrupt = |c| LabelError::Corrupt(c);
        let crc = u32::from_le_bytes(bytes[LABEL_BYTES - 4..].try_into().expect("4 bytes"));
        if crc32c::crc32c(&bytes[..LABEL_BYTES - 4]) != crc {
            return Err(corrupt(Corruption::LabelChecksum));
        }
        let mut r = Reader::new(&bytes[8..LABEL_BYTES - 4]);
        let field = |field: &'static str, value: u64| corrupt(Corruption::LabelField { field, value });
        let version = r.u32();
        if version != FORMAT_VERSION {
            return Err(corrupt(Corruption::LabelVersion(version)));
        }
        let label_bytes = r.u32();
        if label_bytes as usize != LABEL_BYTES {
            return Err(field("label_bytes", label_bytes.into()));
        }
        let pool_id = PoolId::new(r.uuid()).ok_or_else(|| field("pool_id", 0))?;
        let created_unix_s = r.u64();
        let device_bytes = r.u64();
        let extent_bytes = u64::from(r.u32());
        let sector_bytes = r.u32();
        let slot_offsets = [r.u64(), r.u64()];
        let slot_bytes = r.u64();
        let first_data_extent = r.u64();
        let extent_count = r.u64();
        let features = r.u32();
        if features != 0 {
            return Err(corrupt(Corruption::LabelFeatures(features)));
        }
        let name_len = r.u8();
        let reserved: [u8; 3] = r.array();
        let name = r.name(name_len).map_err(|_| field("name", name_len.into()))?;
        if reserved != [0; 3] {
            return Err(field("reserved", 0));
        }
        if !r.rest().iter().all(|&b| b == 0) {
            return Err(field("reserved", 0));
        }
        if !extent_bytes.is_power_of_two() || !(MIN_EXTENT_BYTES..=MAX_EXTENT_BYTES).contains(&extent_bytes) {
            return Err(field("extent_bytes", extent_bytes));
        }
        if sector_bytes != 512 && sector_bytes != 4096 {
            return Err(field("sector_bytes", sector_bytes.into()));
        }
        if !slot_bytes.is_multiple_of(BLOCK_BYTES) || !(MIN_SLOT_BYTES..=MAX_SLOT_BYTES).contains(&slot_bytes) {
            return Err(field("slot_bytes", slot_bytes));
        }
        for (name, offset) in [("slot_a_offset", slot_offsets[0]), ("slot_b_offset", slot_offsets[1])] {
            if !offset.is_multiple_of(BLOCK_BYTES) || offset < BLOCK_BYTES {
                return Err(field(name, offset));
            }
        }
        let (low, high) = (slot_offsets[0].min(slot_offsets[1]), slot_offsets[0].max(slot_offsets[1]));
        if low + slot_bytes > high {
            return Err(field("slot_b_offset", slot_offsets[1]));
        }
        let metadata_end = high.checked_add(slot_bytes).ok_or_else(|| field("slot_b_offset", high))?;
        if first_data_extent.checked_mul(extent_bytes).is_none_or(|end| end < metadata_end) {
            return Err(field("first_data_extent", first_data_extent));
        }
        if extent_count <= first_data_extent || extent_count.checked_mul(extent_bytes).is_none_or(|b| b > device_bytes)
        {
            return Err(field("extent_count", extent_count));
        }
        let layout = Layout { extent_bytes, slot_offsets, slot_bytes, first_data_extent, extent_count };
        Ok(Label { pool_id, name, created_unix_s, device_bytes, sector_bytes, layout })
    }
}

/// A slot header that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotHeader {
    pub generation: u64,
    pub payload_bytes: u64,
    pub payload_crc: u32,
}

/// The bytes of one slot write: header and table, zero-padded to whole 4 KiB blocks. `Err`
/// carries the table's size when it does not fit the slot.
pub(crate) fn encode_slot(
    layout: &Layout,
    pool_id: PoolId,
    generation: u64,
    volumes: &[Volume],
) -> Result<Vec<u8>, u64> {
    let payload = encode_table(volumes);
    if payload.len() as u64 > layout.payload_capacity() {
        return Err(payload.len() as u64);
    }
    let mut b = Vec::with_capacity(SLOT_HEADER_BYTES + payload.len());
    b.extend_from_slice(&SLOT_MAGIC);
    put_u32(&mut b, FORMAT_VERSION);
    put_u32(&mut b, slot_of(generation) as u32);
    b.extend_from_slice(pool_id.get().as_bytes());
    put_u64(&mut b, generation);
    put_u64(&mut b, payload.len() as u64);
    put_u32(&mut b, crc32c::crc32c(&payload));
    put_u64(&mut b, 0); // reserved
    let crc = crc32c::crc32c(&b);
    put_u32(&mut b, crc);
    debug_assert_eq!(b.len(), SLOT_HEADER_BYTES);
    b.extend_from_slice(&payload);
    b.resize(b.len().next_multiple_of(BLOCK_BYTES as usize), 0);
    Ok(b)
}

/// Generation `g` lives in slot `g % 2` (0 = A, 1 = B): an update always writes the slot that
/// does not hold the current state.
pub(crate) fn slot_of(generation: u64) -> usize {
    (generation % 2) as usize
}

/// Checks a slot's header (its first [`SLOT_HEADER_BYTES`] bytes) for the slot at `slot` of
/// pool `pool_id`.
pub(crate) fn decode_slot_header(
    bytes: &[u8],
    layout: &Layout,
    pool_id: PoolId,
    slot: usize,
) -> Result<SlotHeader, SlotProblem> {
    let bytes = &bytes[..SLOT_HEADER_BYTES];
    if bytes[..8] != SLOT_MAGIC {
        return Err(if bytes.iter().all(|&b| b == 0) { SlotProblem::Blank } else { SlotProblem::Magic });
    }
    let crc = u32::from_le_bytes(bytes[SLOT_HEADER_BYTES - 4..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..SLOT_HEADER_BYTES - 4]) != crc {
        return Err(SlotProblem::HeaderChecksum);
    }
    let mut r = Reader::new(&bytes[8..SLOT_HEADER_BYTES - 4]);
    let version = r.u32();
    if version != FORMAT_VERSION {
        return Err(SlotProblem::Version(version));
    }
    let index = r.u32();
    if r.uuid() != pool_id.get() {
        return Err(SlotProblem::OtherPool);
    }
    let generation = r.u64();
    if index as usize != slot || generation == 0 || slot_of(generation) != slot {
        return Err(SlotProblem::WrongPlace);
    }
    let payload_bytes = r.u64();
    if payload_bytes > layout.payload_capacity() || (payload_bytes as usize) < TABLE_HEADER_BYTES {
        return Err(SlotProblem::PayloadLength(payload_bytes));
    }
    let payload_crc = r.u32();
    Ok(SlotHeader { generation, payload_bytes, payload_crc })
}

/// The volume table: a count, then one record per volume, in the pool's order.
pub(crate) fn encode_table(volumes: &[Volume]) -> Vec<u8> {
    let runs: usize = volumes.iter().map(|v| v.runs.len()).sum();
    let mut b = Vec::with_capacity(TABLE_HEADER_BYTES + volumes.len() * VOLUME_FIXED_BYTES + runs * RUN_BYTES);
    put_u32(&mut b, u32::try_from(volumes.len()).expect("volume count fits the slot"));
    put_u32(&mut b, 0); // reserved
    for v in volumes {
        b.extend_from_slice(v.id.get().as_bytes());
        put_u64(&mut b, v.size_bytes);
        put_u64(&mut b, v.created_unix_s);
        put_u32(&mut b, v.block_size.bytes());
        b.push(v.state.code());
        b.push(v.name.as_str().len() as u8);
        put_u16(&mut b, 0); // reserved
        put_u32(&mut b, 0); // flags: bit 0 will mean "thin"
        put_u32(&mut b, u32::try_from(v.runs.len()).expect("run count fits the slot"));
        put_name(&mut b, &v.name);
        for run in &v.runs {
            put_u64(&mut b, run.logical_start);
            put_u64(&mut b, run.physical_start);
            put_u64(&mut b, run.count);
        }
    }
    b
}

/// Decodes a table's records (the table-wide checks are `pool::check_table`'s).
pub(crate) fn decode_table(bytes: &[u8], extent_bytes: u64) -> Result<Vec<Volume>, TableProblem> {
    let mut r = Reader::new(bytes);
    let count = r.try_u32()?;
    if r.try_u32()? != 0 {
        return Err(TableProblem::Reserved);
    }
    // Each record takes at least VOLUME_FIXED_BYTES: a count the bytes cannot hold is refused
    // before anything is allocated for it.
    if count as usize > r.remaining() / VOLUME_FIXED_BYTES {
        return Err(TableProblem::Truncated);
    }
    let mut volumes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = VolumeId::new(Uuid::from_bytes(r.try_array()?)).ok_or(TableProblem::NilId)?;
        let size_bytes = r.try_u64()?;
        let created_unix_s = r.try_u64()?;
        let block_bytes = r.try_u32()?;
        let block_size =
            BlockSize::from_bytes(block_bytes).ok_or(TableProblem::BlockSize { volume: id, bytes: block_bytes })?;
        let state_code = r.try_u8()?;
        let state = VolumeState::from_code(state_code).ok_or(TableProblem::State { volume: id, code: state_code })?;
        let name_len = r.try_u8()?;
        if r.try_u16()? != 0 {
            return Err(TableProblem::Reserved);
        }
        let flags = r.try_u32()?;
        if flags != 0 {
            return Err(TableProblem::Flags { volume: id, flags });
        }
        let run_count = r.try_u32()?;
        let name = r.try_name(name_len)?;
        if run_count as usize > r.remaining() / RUN_BYTES {
            return Err(TableProblem::Truncated);
        }
        let mut runs = Vec::with_capacity(run_count as usize);
        for _ in 0..run_count {
            runs.push(Run { logical_start: r.try_u64()?, physical_start: r.try_u64()?, count: r.try_u64()? });
        }
        volumes.push(Volume { id, name, size_bytes, block_size, state, created_unix_s, runs, extent_bytes });
    }
    if r.remaining() != 0 {
        return Err(TableProblem::TrailingBytes);
    }
    Ok(volumes)
}

fn put_u16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// A name field: 64 bytes of name padded with zeroes (its length is stored apart).
fn put_name(b: &mut Vec<u8>, name: &Name) {
    let bytes = name.as_str().as_bytes();
    b.extend_from_slice(bytes);
    b.resize(b.len() + Name::MAX_BYTES - bytes.len(), 0);
}

/// A bounds-checked little-endian reader. The `try_` methods report running out of bytes;
/// the plain ones are for fixed-size structures whose length was checked beforehand.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    fn try_array<const N: usize>(&mut self) -> Result<[u8; N], TableProblem> {
        let end = self.pos.checked_add(N).filter(|&end| end <= self.bytes.len()).ok_or(TableProblem::Truncated)?;
        let array = self.bytes[self.pos..end].try_into().expect("N bytes");
        self.pos = end;
        Ok(array)
    }

    fn try_u8(&mut self) -> Result<u8, TableProblem> {
        Ok(self.try_array::<1>()?[0])
    }

    fn try_u16(&mut self) -> Result<u16, TableProblem> {
        self.try_array().map(u16::from_le_bytes)
    }

    fn try_u32(&mut self) -> Result<u32, TableProblem> {
        self.try_array().map(u32::from_le_bytes)
    }

    fn try_u64(&mut self) -> Result<u64, TableProblem> {
        self.try_array().map(u64::from_le_bytes)
    }

    /// A name field of `len` bytes (the length is stored apart from the 64-byte field).
    fn try_name(&mut self, len: u8) -> Result<Name, TableProblem> {
        let len = len as usize;
        let field: [u8; Name::MAX_BYTES] = self.try_array()?;
        if len > Name::MAX_BYTES || field[len..].iter().any(|&b| b != 0) {
            return Err(TableProblem::Reserved);
        }
        let text = std::str::from_utf8(&field[..len])
            .map_err(|_| TableProblem::Name(super::ids::NameProblem::BadChar('\u{fffd}')))?;
        Name::new(text).map_err(TableProblem::Name)
    }

    fn u8(&mut self) -> u8 {
        self.try_u8().expect("fixed-size structure")
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        self.try_array().expect("fixed-size structure")
    }

    fn u32(&mut self) -> u32 {
        self.try_u32().expect("fixed-size structure")
    }

    fn u64(&mut self) -> u64 {
        self.try_u64().expect("fixed-size structure")
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_bytes(self.try_array().expect("fixed-size structure"))
    }

    fn name(&mut self, len: u8) -> Result<Name, TableProblem> {
        self.try_name(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label() -> Label {
        let layout = Layout::for_device(64 << 20, DEFAULT_EXTENT_BYTES, DEFAULT_SLOT_BYTES).unwrap();
        Label {
            pool_id: PoolId::new(Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff)).unwrap(),
            name: Name::new("pool0").unwrap(),
            created_unix_s: 0x6000_0000,
            device_bytes: 64 << 20,
            sector_bytes: 512,
            layout,
        }
    }

    fn volume() -> Volume {
        Volume {
            id: VolumeId::new(Uuid::from_u128(0xa0a1_a2a3_a4a5_a6a7_a8a9_aaab_acad_aeaf)).unwrap(),
            name: Name::new("vol-a").unwrap(),
            size_bytes: 3 << 20,
            block_size: BlockSize::B4096,
            state: VolumeState::Ready,
            created_unix_s: 0x6000_0001,
            runs: vec![
                Run { logical_start: 0, physical_start: 9, count: 2 },
                Run { logical_start: 2, physical_start: 20, count: 1 },
            ],
            extent_bytes: 1 << 20,
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn default_layout() {
        let l = label().layout;
        assert_eq!(l.slot_offsets, [1 << 20, 5 << 20]);
        assert_eq!(l.first_data_extent, 9);
        assert_eq!(l.extent_count, 64);
        assert_eq!(l.data_extents(), 55);
        assert_eq!(Layout::min_device_bytes(1 << 20, 4 << 20), 10 << 20);
        assert!(Layout::for_device((10 << 20) - 1, 1 << 20, 4 << 20).is_none());
        assert_eq!(Layout::for_device(10 << 20, 1 << 20, 4 << 20).unwrap().data_extents(), 1);
    }

    #[test]
    fn label_golden_bytes() {
        let block = label().encode();
        assert_eq!(block.len(), 4096);
        assert!(block[LABEL_BYTES..].iter().all(|&b| b == 0));
        let expected = concat!(
            "464142524951504c",
            "01000000",
            "00010000",                         // magic, version, label bytes
            "00112233445566778899aabbccddeeff", // pool id
            "0000006000000000",
            "0000000400000000", // created, device bytes
            "00001000",
            "00020000", // extent bytes, sector bytes
            "0000100000000000",
            "0000500000000000", // slot A, slot B
            "0000400000000000",
            "0900000000000000", // slot bytes, first data extent
            "4000000000000000",
            "00000000", // extent count, features
            "05000000",
            "706f6f6c30", // name length, name
        );
        assert_eq!(hex(&block[..expected.len() / 2]), expected);
        assert!(block[expected.len() / 2..LABEL_BYTES - 4].iter().all(|&b| b == 0));
        let crc = crc32c::crc32c(&block[..LABEL_BYTES - 4]);
        assert_eq!(block[LABEL_BYTES - 4..LABEL_BYTES], crc.to_le_bytes());
        assert_eq!(block[510..512], [0, 0], "never mistaken for a DOS boot signature");
    }

    #[test]
    fn label_round_trips_and_every_flipped_bit_is_caught() {
        let l = label();
        let block = l.encode();
        assert_eq!(Label::decode(&block), Ok(l));
        for bit in 64..LABEL_BYTES * 8 {
            let mut bad = block.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Label::decode(&bad), Err(LabelError::Corrupt(Corruption::LabelChecksum)), "bit {bit}");
        }
        assert_eq!(Label::decode(&[0; 4096]), Err(LabelError::NoMagic));
        assert_eq!(Label::decode(b"FABRIQPL"), Err(LabelError::NoMagic), "too short to be a label");
    }

    #[test]
    fn label_fields_are_range_checked() {
        let reseal = |mut block: Vec<u8>| {
            let crc = crc32c::crc32c(&block[..LABEL_BYTES - 4]);
            block[LABEL_BYTES - 4..LABEL_BYTES].copy_from_slice(&crc.to_le_bytes());
            Label::decode(&block)
        };
        let mut block = label().encode();
        block[8] = 2;
        assert_eq!(reseal(block), Err(LabelError::Corrupt(Corruption::LabelVersion(2))));
        let mut block = label().encode();
        block[48..52].copy_from_slice(&3000u32.to_le_bytes());
        assert!(matches!(
            reseal(block),
            Err(LabelError::Corrupt(Corruption::LabelField { field: "extent_bytes", .. }))
        ));
        let mut block = label().encode();
        block[88..96].copy_from_slice(&65u64.to_le_bytes());
        assert!(matches!(
            reseal(block),
            Err(LabelError::Corrupt(Corruption::LabelField { field: "extent_count", .. }))
        ));
        let mut block = label().encode();
        block[96] = 1;
        assert_eq!(reseal(block), Err(LabelError::Corrupt(Corruption::LabelFeatures(1))));
        let mut block = label().encode();
        block[64..72].copy_from_slice(&(3u64 << 20).to_le_bytes());
        assert!(matches!(
            reseal(block),
            Err(LabelError::Corrupt(Corruption::LabelField { field: "slot_b_offset", .. }))
        ));
    }

    #[test]
    fn slot_golden_bytes() {
        let l = label();
        let bytes = encode_slot(&l.layout, l.pool_id, 3, &[volume()]).unwrap();
        assert_eq!(bytes.len(), 4096);
        let payload_len = TABLE_HEADER_BYTES + VOLUME_FIXED_BYTES + 2 * RUN_BYTES;
        let header = concat!(
            "4641425249514d54",
            "01000000",
            "01000000",                         // magic, version, slot B
            "00112233445566778899aabbccddeeff", // pool id
            "0300000000000000",
            "a800000000000000", // generation, payload bytes (168)
        );
        assert_eq!(hex(&bytes[..header.len() / 2]), header);
        assert_eq!(payload_len, 168);
        let payload = &bytes[64..64 + payload_len];
        assert_eq!(bytes[48..52], crc32c::crc32c(payload).to_le_bytes());
        assert_eq!(bytes[52..60], [0; 8]);
        assert_eq!(bytes[60..64], crc32c::crc32c(&bytes[..60]).to_le_bytes());
        let table = concat!(
            "01000000",
            "00000000",                         // volume count, reserved
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf", // volume id
            "0000300000000000",
            "0100006000000000", // size bytes, created
            "00100000",
            "01",
            "05",
            "0000",
            "00000000", // block size, state, name length, reserved, flags
            "02000000",
            "766f6c2d61", // run count, name
        );
        assert_eq!(hex(&payload[..table.len() / 2]), table);
        let runs = concat!(
            "0000000000000000",
            "0900000000000000",
            "0200000000000000",
            "0200000000000000",
            "1400000000000000",
            "0100000000000000",
        );
        assert_eq!(hex(&payload[8 + VOLUME_FIXED_BYTES..]), runs);
        assert!(bytes[64 + payload_len..].iter().all(|&b| b == 0));
    }

    #[test]
    fn slot_header_checks() {
        let l = label();
        let bytes = encode_slot(&l.layout, l.pool_id, 4, &[volume()]).unwrap();
        let header = decode_slot_header(&bytes, &l.layout, l.pool_id, 0).unwrap();
        assert_eq!(header.generation, 4);
        assert_eq!(decode_slot_header(&bytes, &l.layout, l.pool_id, 1), Err(SlotProblem::WrongPlace));
        let other = PoolId::new(Uuid::from_u128(7)).unwrap();
        assert_eq!(decode_slot_header(&bytes, &l.layout, other, 0), Err(SlotProblem::OtherPool));
        assert_eq!(decode_slot_header(&[0; 64], &l.layout, l.pool_id, 0), Err(SlotProblem::Blank));
        let mut torn = bytes.clone();
        torn[40] ^= 0x80;
        assert_eq!(decode_slot_header(&torn, &l.layout, l.pool_id, 0), Err(SlotProblem::HeaderChecksum));
        let payload = &bytes[64..64 + header.payload_bytes as usize];
        assert_eq!(crc32c::crc32c(payload), header.payload_crc);
        assert_eq!(decode_table(payload, 1 << 20).unwrap(), vec![volume()]);
    }

    #[test]
    fn too_big_a_table_is_refused_before_writing() {
        let l = label();
        let mut v = volume();
        v.runs = (0..200_000).map(|i| Run { logical_start: i, physical_start: 9 + 2 * i, count: 1 }).collect();
        assert!(matches!(encode_slot(&l.layout, l.pool_id, 1, &[v]), Err(bytes) if bytes > 4 << 20));
    }

    #[test]
    fn table_decoding_never_panics_on_truncation() {
        let bytes = encode_table(&[volume(), volume()]);
        for len in 0..bytes.len() {
            assert!(decode_table(&bytes[..len], 1 << 20).is_err(), "len {len}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode_table(&long, 1 << 20), Err(TableProblem::TrailingBytes));
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_table(&huge, 1 << 20), Err(TableProblem::Truncated));
    }

    proptest::proptest! {
        #[test]
        fn table_decoding_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = decode_table(&bytes, 1 << 20);
        }
    }
}
