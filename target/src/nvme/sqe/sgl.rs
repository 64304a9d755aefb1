//! SGL descriptors, 16 bytes (NVMe Base 2.0, 4.1.2.2 Figures 116 to 124).
//!
//! ```text
//! generic:  bytes 0..8 address, 8..12 length, 12..15 reserved, 15 SGL identifier
//! keyed:    bytes 0..8 address, 8..11 length (24 bits), 11..15 key, 15 identifier
//! identifier: bits 7:4 descriptor type, bits 3:0 descriptor subtype
//! ```
//!
//! fabriq sees three on NVMe/TCP: the transport SGL data block (type 5, subtype
//! Ah: data moves by R2T/H2CData or C2HData), the data block with offset
//! subtype (type 0, subtype 1: in-capsule data at that offset of the capsule),
//! and, for RDMA later, the keyed data block (type 4).
//!
//! Invariant: [`SglDescriptor::decode`] accepts any 16 bytes; encoding what it
//! decoded gives the same bytes back, reserved bytes aside.

use crate::nvme::wire::{get_u32, get_u64, put_u32, put_u64};

/// SGL descriptor types and subtypes (NVMe Base 2.0, 4.1.2.2 Figures 117 and 118).
pub mod sgl_type {
    pub const DATA_BLOCK: u8 = 0x0;
    pub const BIT_BUCKET: u8 = 0x1;
    pub const SEGMENT: u8 = 0x2;
    pub const LAST_SEGMENT: u8 = 0x3;
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
    pub const VENDOR_SPECIFIC: u8 = 0xF;
    /// Subtype: the address field is an address.
    pub const SUBTYPE_ADDRESS: u8 = 0x0;
    /// Subtype: the address field is an offset (in-capsule data on fabrics).
    pub const SUBTYPE_OFFSET: u8 = 0x1;
    /// Subtype: transport specific (NVMe/TCP uses Ah for its transport SGL).
    pub const SUBTYPE_TRANSPORT: u8 = 0xA;
    /// Keyed data block subtype asking the target to invalidate the key (RDMA).
    pub const SUBTYPE_INVALIDATE_KEY: u8 = 0xF;
}

/// What an SGL descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SglKind {
    /// Type 0, subtype 0: a data block at an address.
    DataBlock,
    /// Type 0, subtype 1: data in the command capsule, `address` is the offset
    /// from the start of the capsule's data (ICDOFF applies).
    DataBlockOffset,
    /// Type 1: data to be discarded.
    BitBucket,
    /// Type 2: a segment of further descriptors.
    Segment { subtype: u8 },
    /// Type 3: the last segment of further descriptors.
    LastSegment { subtype: u8 },
    /// Type 4: a remote memory region with its key; `length` is 24 bits (RDMA).
    KeyedDataBlock { subtype: u8, key: u32 },
    /// Type 5, subtype Ah: the NVMe/TCP transport SGL data block; the address
    /// is reserved and the data moves in data PDUs.
    TransportDataBlock,
    /// Any other type/subtype pair.
    Unknown { desc_type: u8, subtype: u8 },
}

/// One SGL descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SglDescriptor {
    pub address: u64,
    /// Length in bytes; at most FF_FFFFh for a keyed data block.
    pub length: u32,
    pub kind: SglKind,
}

const KEYED_LENGTH_MAX: u32 = 0x00FF_FFFF;

const _: () = assert!(SglDescriptor::SIZE == 16);

impl SglDescriptor {
    /// Size of a descriptor in bytes.
    pub const SIZE: usize = 16;

    /// The NVMe/TCP transport SGL for `length` bytes moved in data PDUs.
    pub const fn transport(length: u32) -> SglDescriptor {
        SglDescriptor { address: 0, length, kind: SglKind::TransportDataBlock }
    }

    /// In-capsule data: `length` bytes at `offset` of the capsule's data.
    pub const fn in_capsule(offset: u64, length: u32) -> SglDescriptor {
        SglDescriptor { address: offset, length, kind: SglKind::DataBlockOffset }
    }

    /// Reads a descriptor.
    pub fn decode(b: &[u8; 16]) -> SglDescriptor {
        let desc_type = b[15] >> 4;
        let subtype = b[15] & 0xF;
        let address = get_u64(b, 0);
        if desc_type == sgl_type::KEYED_DATA_BLOCK {
            let length = u32::from_le_bytes([b[8], b[9], b[10], 0]);
            let key = get_u32(b, 11);
            return SglDescriptor { address, length, kind: SglKind::KeyedDataBlock { subtype, key } };
        }
        let kind = kind_of(desc_type, subtype);
        SglDescriptor { address, length: get_u32(b, 8), kind }
    }

    /// The 16 bytes of the descriptor.
    ///
    /// # Panics
    /// When a keyed data block's length does not fit 24 bits, or a subtype or
    /// type does not fit 4 bits (caller bugs).
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        put_u64(&mut b, 0, self.address);
        let (desc_type, subtype) = self.type_and_subtype();
        assert!(desc_type <= 0xF && subtype <= 0xF, "SGL type/subtype out of range");
        if let SglKind::KeyedDataBlock { key, .. } = self.kind {
            assert!(self.length <= KEYED_LENGTH_MAX, "keyed SGL length over 24 bits");
            b[8..11].copy_from_slice(&self.length.to_le_bytes()[..3]);
            put_u32(&mut b, 11, key);
        } else {
            put_u32(&mut b, 8, self.length);
        }
        b[15] = desc_type << 4 | subtype;
        b
    }

    /// The descriptor type and subtype of this descriptor.
    pub fn type_and_subtype(&self) -> (u8, u8) {
        use sgl_type::*;
        match self.kind {
            SglKind::DataBlock => (DATA_BLOCK, SUBTYPE_ADDRESS),
            SglKind::DataBlockOffset => (DATA_BLOCK, SUBTYPE_OFFSET),
            SglKind::BitBucket => (BIT_BUCKET, SUBTYPE_ADDRESS),
            SglKind::Segment { subtype } => (SEGMENT, subtype),
            SglKind::LastSegment { subtype } => (LAST_SEGMENT, subtype),
            SglKind::KeyedDataBlock { subtype, .. } => (KEYED_DATA_BLOCK, subtype),
            SglKind::TransportDataBlock => (TRANSPORT_DATA_BLOCK, SUBTYPE_TRANSPORT),
            SglKind::Unknown { desc_type, subtype } => (desc_type, subtype),
        }
    }
}

fn kind_of(desc_type: u8, subtype: u8) -> SglKind {
    use sgl_type::*;
    match (desc_type, subtype) {
        (DATA_BLOCK, SUBTYPE_ADDRESS) => SglKind::DataBlock,
        (DATA_BLOCK, SUBTYPE_OFFSET) => SglKind::DataBlockOffset,
        (BIT_BUCKET, SUBTYPE_ADDRESS) => SglKind::BitBucket,
        (SEGMENT, subtype) => SglKind::Segment { subtype },
        (LAST_SEGMENT, subtype) => SglKind::LastSegment { subtype },
        (TRANSPORT_DATA_BLOCK, SUBTYPE_TRANSPORT) => SglKind::TransportDataBlock,
        (desc_type, subtype) => SglKind::Unknown { desc_type, subtype },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_transport_sgl_as_linux_nvme_tcp_sends_it() {
        let mut b = [0u8; 16];
        b[8..12].copy_from_slice(&0x2000u32.to_le_bytes());
        b[15] = 0x5A;
        assert_eq!(SglDescriptor::transport(0x2000).encode(), b);
        assert_eq!(SglDescriptor::decode(&b), SglDescriptor::transport(0x2000));
    }

    #[test]
    fn golden_in_capsule_offset() {
        let mut b = [0u8; 16];
        b[0] = 0x00; // offset 0 (ICDOFF 0)
        b[8..12].copy_from_slice(&1024u32.to_le_bytes());
        b[15] = 0x01;
        assert_eq!(SglDescriptor::in_capsule(0, 1024).encode(), b);
        assert_eq!(SglDescriptor::decode(&b).kind, SglKind::DataBlockOffset);
    }

    #[test]
    fn golden_keyed_data_block() {
        let b = [
            0x00, 0x10, 0, 0, 0, 0, 0, 0, // address 1000h
            0x00, 0x20, 0x01, // length 012000h
            0x78, 0x56, 0x34, 0x12, // key
            0x4F, // keyed, invalidate key
        ];
        let d = SglDescriptor::decode(&b);
        assert_eq!(d.address, 0x1000);
        assert_eq!(d.length, 0x01_2000);
        assert_eq!(d.kind, SglKind::KeyedDataBlock { subtype: 0xF, key: 0x1234_5678 });
        assert_eq!(d.encode(), b);
    }

    #[test]
    fn unknown_kinds_keep_type_and_subtype() {
        let mut b = [0u8; 16];
        b[15] = 0x57;
        assert_eq!(SglDescriptor::decode(&b).kind, SglKind::Unknown { desc_type: 5, subtype: 7 });
        b[15] = 0x31;
        assert_eq!(SglDescriptor::decode(&b).kind, SglKind::LastSegment { subtype: 1 });
    }

    #[test]
    #[should_panic(expected = "keyed SGL length over 24 bits")]
    fn keyed_length_over_24_bits_is_a_bug() {
        let d = SglDescriptor { address: 0, length: 1 << 24, kind: SglKind::KeyedDataBlock { subtype: 0, key: 1 } };
        d.encode();
    }

    proptest! {
        #[test]
        fn decode_encode_keeps_meaningful_bytes(b in proptest::array::uniform16(any::<u8>())) {
            let d = SglDescriptor::decode(&b);
            let again = d.encode();
            prop_assert_eq!(SglDescriptor::decode(&again), d);
            // Only the reserved bytes 12..15 of unkeyed descriptors may differ.
            prop_assert_eq!(&again[..12], &b[..12]);
            prop_assert_eq!(again[15], b[15]);
        }
    }
}
