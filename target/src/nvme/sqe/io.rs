//! I/O commands of the NVM command set (NVM Command Set 1.0, 3.2): Read, Write,
//! Compare, Write Zeroes and Verify share one layout; Dataset Management carries
//! a list of 16-byte ranges in its data.
//!
//! ```text
//! Read/Write/...  CDW10..11: SLBA   CDW12: NLB 15:0 (0-based), DEAC 25 (Write Zeroes),
//!                                          FUA 30, LR 31
//! DSM             CDW10: NR 7:0 (0-based)   CDW11: IDR 0, IDW 1, AD 2
//! DSM range       0..4 context attributes, 4..8 length in blocks, 8..16 SLBA
//! ```
//!
//! Invariant: counts in these views are counts (1-based); the 0-based wire
//! encodings are converted at the edge, in `from_sqe` and `to_sqe`.

use super::{Sqe, assert_opcode};
use crate::nvme::opcode::IoOpcode;
use crate::nvme::wire::{WireError, assert_out_len, check_len, get_u32, get_u64, put_u32, put_u64};

const NLB_MASK: u32 = 0xFFFF;
const DEAC_BIT: u32 = 1 << 25;
const FUA_BIT: u32 = 1 << 30;
const LR_BIT: u32 = 1 << 31;

/// The most blocks one Read/Write/Compare/Write Zeroes/Verify moves.
pub const MAX_NLB: u32 = 1 << 16;

/// Read, Write, Compare, Write Zeroes and Verify (NVM Command Set 1.0, 3.2.3,
/// 3.2.6, 3.2.1, 3.2.8, 3.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadWrite {
    /// Starting LBA.
    pub slba: u64,
    /// Number of logical blocks, 1..=65536 (the NLB field plus one).
    pub nlb: u32,
    /// Force Unit Access: the data is on non-volatile media before completion.
    pub fua: bool,
    pub limited_retry: bool,
    /// Write Zeroes only: deallocate the blocks. False for the other opcodes.
    pub deac: bool,
}

impl ReadWrite {
    /// Reads the fields of any of the five commands.
    ///
    /// # Panics
    /// When `sqe` is another command.
    pub fn from_sqe(sqe: &Sqe) -> ReadWrite {
        let op = IoOpcode::try_from(sqe.opcode);
        assert!(
            matches!(
                op,
                Ok(IoOpcode::Read | IoOpcode::Write | IoOpcode::Compare | IoOpcode::WriteZeroes | IoOpcode::Verify)
            ),
            "ReadWrite view of a command with opcode {:#04x}",
            sqe.opcode
        );
        ReadWrite {
            slba: sqe.cdw10 as u64 | (sqe.cdw11 as u64) << 32,
            nlb: (sqe.cdw12 & NLB_MASK) + 1,
            fua: sqe.cdw12 & FUA_BIT != 0,
            limited_retry: sqe.cdw12 & LR_BIT != 0,
            deac: op == Ok(IoOpcode::WriteZeroes) && sqe.cdw12 & DEAC_BIT != 0,
        }
    }

    /// One of the five commands for namespace `nsid`; the caller adds the SGL.
    ///
    /// # Panics
    /// When `nlb` is not in 1..=65536, or `deac` is set for another opcode
    /// than Write Zeroes.
    pub fn to_sqe(&self, opcode: IoOpcode, cid: u16, nsid: u32) -> Sqe {
        assert!((1..=MAX_NLB).contains(&self.nlb), "NLB {} out of 1..=65536", self.nlb);
        assert!(!self.deac || opcode == IoOpcode::WriteZeroes, "DEAC on {}", opcode.name());
        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
        Sqe {
            nsid,
            cdw10: self.slba as u32,
            cdw11: (self.slba >> 32) as u32,
            cdw12: (self.nlb - 1)
                | flag(self.deac, DEAC_BIT)
                | flag(self.fua, FUA_BIT)
                | flag(self.limited_retry, LR_BIT),
            ..Sqe::new(opcode as u8, cid)
        }
    }

    /// The first LBA past the range, or `None` if it overflows.
    pub fn end_lba(&self) -> Option<u64> {
        self.slba.checked_add(self.nlb as u64)
    }
}

const AD_BIT: u32 = 1 << 2;
const IDW_BIT: u32 = 1 << 1;
const IDR_BIT: u32 = 1 << 0;

/// The most ranges one Dataset Management command carries.
pub const MAX_DSM_RANGES: u32 = 256;

/// Dataset Management (NVM Command Set 1.0, 3.2.2 Figures 38 and 39).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetManagement {
    /// Number of ranges, 1..=256 (the NR field plus one).
    pub nr: u32,
    /// Attribute Deallocate: deallocate (trim) the ranges.
    pub attr_deallocate: bool,
    /// Attribute Integral Dataset for Read.
    pub idr: bool,
    /// Attribute Integral Dataset for Write.
    pub idw: bool,
}

impl DatasetManagement {
    /// Reads the Dataset Management fields.
    ///
    /// # Panics
    /// When `sqe` is another command.
    pub fn from_sqe(sqe: &Sqe) -> DatasetManagement {
        assert_opcode(sqe, IoOpcode::DatasetManagement as u8, "Dataset Management");
        DatasetManagement {
            nr: (sqe.cdw10 & 0xFF) + 1,
            attr_deallocate: sqe.cdw11 & AD_BIT != 0,
            idr: sqe.cdw11 & IDR_BIT != 0,
            idw: sqe.cdw11 & IDW_BIT != 0,
        }
    }

    /// A Dataset Management command for namespace `nsid`; the caller adds the
    /// SGL for `nr` ranges.
    ///
    /// # Panics
    /// When `nr` is not in 1..=256.
    pub fn to_sqe(&self, cid: u16, nsid: u32) -> Sqe {
        assert!((1..=MAX_DSM_RANGES).contains(&self.nr), "NR {} out of 1..=256", self.nr);
        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
        Sqe {
            nsid,
            cdw10: self.nr - 1,
            cdw11: flag(self.attr_deallocate, AD_BIT) | flag(self.idw, IDW_BIT) | flag(self.idr, IDR_BIT),
            ..Sqe::new(IoOpcode::DatasetManagement as u8, cid)
        }
    }

    /// Bytes of range data the command carries.
    pub fn data_len_bytes(&self) -> usize {
        self.nr as usize * DsmRange::SIZE
    }
}

/// One range of a Dataset Management command (NVM Command Set 1.0, 3.2.2
/// Figure 40). Unlike the NLB of Read/Write, `nlb` here is a plain count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DsmRange {
    pub context_attributes: u32,
    /// Length in logical blocks (not 0-based).
    pub nlb: u32,
    pub slba: u64,
}

const _: () = assert!(DsmRange::SIZE == 16);

impl DsmRange {
    /// Size of a range in bytes.
    pub const SIZE: usize = 16;

    /// Reads one range from the first 16 bytes of `b`.
    pub fn decode(b: &[u8]) -> Result<DsmRange, WireError> {
        check_len(b, Self::SIZE)?;
        Ok(DsmRange { context_attributes: get_u32(b, 0), nlb: get_u32(b, 4), slba: get_u64(b, 8) })
    }

    /// Writes the range into the first 16 bytes of `out`.
    ///
    /// # Panics
    /// When `out` is shorter than 16 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "DsmRange");
        put_u32(out, 0, self.context_attributes);
        put_u32(out, 4, self.nlb);
        put_u64(out, 8, self.slba);
    }

    /// The ranges in `data`, which must hold `nr` of them.
    pub fn decode_list(data: &[u8], nr: u32) -> Result<impl Iterator<Item = DsmRange> + '_, WireError> {
        let len = nr as usize * Self::SIZE;
        check_len(data, len)?;
        Ok(data[..len].chunks_exact(Self::SIZE).map(|c| DsmRange {
            context_attributes: get_u32(c, 0),
            nlb: get_u32(c, 4),
            slba: get_u64(c, 8),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn read_golden() {
        let rw = ReadWrite { slba: 0x1_0000_0002, nlb: 8, fua: true, limited_retry: false, deac: false };
        let b = rw.to_sqe(IoOpcode::Read, 0x0A, 1).encode();
        assert_eq!((b[0], b[4]), (0x02, 1));
        assert_eq!(&b[40..48], &[2, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&b[48..52], &[7, 0, 0, 0x40]);
        assert_eq!(ReadWrite::from_sqe(&Sqe::decode(&b)), rw);
    }

    #[test]
    fn write_zeroes_golden_with_deac() {
        let rw = ReadWrite { slba: 0, nlb: 65536, fua: false, limited_retry: true, deac: true };
        let b = rw.to_sqe(IoOpcode::WriteZeroes, 1, 1).encode();
        assert_eq!(&b[48..52], &[0xFF, 0xFF, 0x00, 0x82]);
        assert_eq!(ReadWrite::from_sqe(&Sqe::decode(&b)), rw);
    }

    #[test]
    fn deac_bit_is_ignored_outside_write_zeroes() {
        let mut sqe =
            ReadWrite { slba: 0, nlb: 1, fua: false, limited_retry: false, deac: false }.to_sqe(IoOpcode::Write, 1, 1);
        sqe.cdw12 |= DEAC_BIT;
        assert!(!ReadWrite::from_sqe(&sqe).deac);
    }

    #[test]
    #[should_panic(expected = "NLB 0 out of 1..=65536")]
    fn zero_blocks_is_a_bug() {
        ReadWrite { slba: 0, nlb: 0, fua: false, limited_retry: false, deac: false }.to_sqe(IoOpcode::Read, 0, 1);
    }

    #[test]
    fn dsm_golden_and_ranges() {
        let d = DatasetManagement { nr: 2, attr_deallocate: true, idr: false, idw: true };
        let b = d.to_sqe(3, 1).encode();
        assert_eq!((b[0], b[40], b[44]), (0x09, 0x01, 0x06));
        assert_eq!(DatasetManagement::from_sqe(&Sqe::decode(&b)), d);
        assert_eq!(d.data_len_bytes(), 32);

        let mut data = [0u8; 32];
        let r0 = DsmRange { context_attributes: 0, nlb: 8, slba: 0x10 };
        let r1 = DsmRange { context_attributes: 1, nlb: 0x100, slba: 0x1_0000_0000 };
        r0.encode(&mut data[..16]);
        r1.encode(&mut data[16..]);
        assert_eq!(&data[..16], &[0, 0, 0, 0, 8, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&data[16..32], &[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        let ranges: Vec<_> = DsmRange::decode_list(&data, 2).unwrap().collect();
        assert_eq!(ranges, vec![r0, r1]);
        assert!(DsmRange::decode_list(&data, 3).is_err());
        assert_eq!(DsmRange::decode(&data[..15]), Err(WireError::Short { need: 16, got: 15 }));
    }

    proptest! {
        #[test]
        fn read_write_round_trips(slba: u64, nlb in 1u32..=MAX_NLB, fua: bool, lr: bool, deac: bool,
                                  op in prop::sample::select(vec![IoOpcode::Read, IoOpcode::Write,
                                      IoOpcode::Compare, IoOpcode::WriteZeroes, IoOpcode::Verify])) {
            let deac = deac && op == IoOpcode::WriteZeroes;
            let rw = ReadWrite { slba, nlb, fua, limited_retry: lr, deac };
            prop_assert_eq!(ReadWrite::from_sqe(&rw.to_sqe(op, 0, 1)), rw);
        }

        #[test]
        fn dsm_round_trips(nr in 1u32..=256, ad: bool, idr: bool, idw: bool) {
            let d = DatasetManagement { nr, attr_deallocate: ad, idr, idw };
            prop_assert_eq!(DatasetManagement::from_sqe(&d.to_sqe(0, 1)), d);
        }

        #[test]
        fn dsm_range_round_trips(context_attributes: u32, nlb: u32, slba: u64) {
            let r = DsmRange { context_attributes, nlb, slba };
            let mut b = [0u8; 16];
            r.encode(&mut b);
            prop_assert_eq!(DsmRange::decode(&b), Ok(r));
        }
    }
}
