//! The 16-byte completion queue entry (NVMe Base 2.0, 4.6 Figure 99).
//!
//! ```text
//! bytes 0..4 DW0 (command specific)   4..8 DW1 (command specific)
//!       8..10 SQHD   10..12 SQID   12..14 CID   14..16 status: bit 0 phase, bits 15:1 status field
//! ```
//!
//! On fabrics the phase tag has no meaning (entries travel in response
//! capsules, not a ring the host polls), so [`Cqe`] has no phase field:
//! [`Cqe::encode`] writes it as 0, and [`Cqe::encode_with_phase`] and
//! [`Cqe::phase_of`] serve a transport that needs it.

use super::status::Status;
use super::wire::{WireError, assert_out_len, check_len, get_array, get_u16, get_u32, put_u16, put_u32};

/// A completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cqe {
    /// Command specific Dword 0 (e.g. Connect's CNTLID, a feature's value).
    pub dw0: u32,
    /// Command specific Dword 1 (e.g. the high half of a Property Get value).
    pub dw1: u32,
    /// Submission queue head pointer; fabrics hosts that disabled SQ flow
    /// control ignore it.
    pub sqhd: u16,
    pub sqid: u16,
    pub cid: u16,
    pub status: Status,
}

const _: () = assert!(Cqe::SIZE == 16);

impl Cqe {
    /// Size of a completion queue entry in bytes.
    pub const SIZE: usize = 16;

    /// A successful completion of command `cid` with Dword 0 `dw0`.
    pub fn success(cid: u16, dw0: u32) -> Cqe {
        Cqe { dw0, cid, ..Cqe::default() }
    }

    /// A completion of command `cid` with `status` and no command specific data.
    pub fn error(cid: u16, status: Status) -> Cqe {
        Cqe { cid, status, ..Cqe::default() }
    }

    /// The 16 bytes of the entry, phase tag 0.
    pub fn encode(&self) -> [u8; Cqe::SIZE] {
        self.encode_with_phase(false)
    }

    /// The 16 bytes of the entry with phase tag `phase`.
    pub fn encode_with_phase(&self, phase: bool) -> [u8; Cqe::SIZE] {
        let mut b = [0u8; Cqe::SIZE];
        self.encode_into(&mut b, phase);
        b
    }

    /// Writes the entry into the first 16 bytes of `out`.
    ///
    /// # Panics
    /// When `out` is shorter than 16 bytes (a caller bug).
    pub fn encode_into(&self, out: &mut [u8], phase: bool) {
        assert_out_len(out, Cqe::SIZE, "Cqe");
        put_u32(out, 0, self.dw0);
        put_u32(out, 4, self.dw1);
        put_u16(out, 8, self.sqhd);
        put_u16(out, 10, self.sqid);
        put_u16(out, 12, self.cid);
        put_u16(out, 14, self.status.field() << 1 | phase as u16);
    }

    /// Reads an entry; the phase tag is dropped (see [`Cqe::phase_of`]).
    pub fn decode(b: &[u8; Cqe::SIZE]) -> Cqe {
        Cqe {
            dw0: get_u32(b, 0),
            dw1: get_u32(b, 4),
            sqhd: get_u16(b, 8),
            sqid: get_u16(b, 10),
            cid: get_u16(b, 12),
            status: Status::from_field(get_u16(b, 14) >> 1),
        }
    }

    /// Reads an entry from the first 16 bytes of `b`.
    pub fn decode_from(b: &[u8]) -> Result<Cqe, WireError> {
        check_len(b, Cqe::SIZE)?;
        Ok(Cqe::decode(&get_array(b, 0)))
    }

    /// The phase tag of an encoded entry.
    pub fn phase_of(b: &[u8; Cqe::SIZE]) -> bool {
        b[14] & 1 != 0
    }

    /// Dwords 0 and 1 as one 64-bit value: what Property Get returns.
    pub fn value_u64(&self) -> u64 {
        self.dw0 as u64 | (self.dw1 as u64) << 32
    }

    /// Sets Dwords 0 and 1 from a 64-bit value.
    pub fn with_value_u64(mut self, value: u64) -> Cqe {
        self.dw0 = value as u32;
        self.dw1 = (value >> 32) as u32;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        let cqe = Cqe {
            dw0: 0x0000_0001,
            dw1: 0x0A0B_0C0D,
            sqhd: 0x0010,
            sqid: 0x0002,
            cid: 0x1234,
            status: Status::INVALID_FIELD.with_dnr(),
        };
        let want = [
            0x01, 0, 0, 0, 0x0D, 0x0C, 0x0B, 0x0A, 0x10, 0x00, 0x02, 0x00, 0x34, 0x12, // 4002h << 1 = 8004h
            0x04, 0x80,
        ];
        assert_eq!(cqe.encode(), want);
        assert_eq!(Cqe::decode(&want), cqe);
        let with_phase = cqe.encode_with_phase(true);
        assert_eq!(with_phase[14], 0x05);
        assert!(Cqe::phase_of(&with_phase));
        assert_eq!(Cqe::decode(&with_phase), cqe);
    }

    #[test]
    fn property_value_spans_both_dwords() {
        let cqe = Cqe::success(1, 0).with_value_u64(0x0000_0020_1400_03FF);
        assert_eq!((cqe.dw0, cqe.dw1), (0x1400_03FF, 0x20));
        assert_eq!(cqe.value_u64(), 0x0000_0020_1400_03FF);
    }

    #[test]
    fn decode_from_checks_length() {
        assert_eq!(Cqe::decode_from(&[0; 15]), Err(WireError::Short { need: 16, got: 15 }));
        assert!(Cqe::decode_from(&[0; 24]).unwrap().status.is_success());
    }

    proptest! {
        #[test]
        fn round_trips(dw0: u32, dw1: u32, sqhd: u16, sqid: u16, cid: u16, field in 0u16..0x8000, phase: bool) {
            let cqe = Cqe { dw0, dw1, sqhd, sqid, cid, status: Status::from_field(field) };
            let b = cqe.encode_with_phase(phase);
            prop_assert_eq!(Cqe::decode(&b), cqe);
            prop_assert_eq!(Cqe::phase_of(&b), phase);
        }
    }
}
