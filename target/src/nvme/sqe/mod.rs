//! The 64-byte submission queue entry (NVMe Base 2.0, 4.2 Figure 87), its SGL
//! descriptors, and typed views of the commands fabriq serves.
//!
//! ```text
//! byte  0      1      2..3   4..7   8..11  12..15  16..23  24..39  40..63
//!       OPC    FLAGS  CID    NSID   CDW2   CDW3    MPTR    DPTR    CDW10..CDW15
//! FLAGS: bits 1:0 FUSE, bits 7:6 PSDT
//! fabrics commands: byte 4 is FCTYPE (it overlaps the low byte of NSID)
//! ```
//!
//! Submodules hold the typed views, each with `from_sqe` (target side) and
//! `to_sqe` (host side): [`fabrics`] (Connect, Property Get/Set, Disconnect,
//! Authentication), [`admin`] (Identify, Get Log Page, Get/Set Features, Abort,
//! Keep Alive, Asynchronous Event Request), [`io`] (Read, Write, Compare,
//! Write Zeroes, Verify, Dataset Management).
//!
//! Invariants: [`Sqe`] holds every bit of the 64 bytes, so decode and encode
//! are exact inverses; the typed views read only their own fields and assert
//! (a bug) when handed a command of another opcode.

pub mod admin;
pub mod fabrics;
pub mod io;
mod sgl;

pub use admin::{Abort, AsyncEventRequest, Features, GetLogPage, Identify, KeepAlive};
pub use fabrics::{Authentication, Connect, ConnectData, Disconnect, PropertyGet, PropertySet};
pub use io::{DatasetManagement, DsmRange, ReadWrite};
pub use sgl::{SglDescriptor, SglKind, sgl_type};

use super::opcode::{FABRICS_OPCODE, FabricsType};
use super::wire::{
    WireError, assert_out_len, check_len, get_array, get_u16, get_u32, get_u64, put_bytes, put_u16, put_u32, put_u64,
};

/// Byte offsets of the common fields of a submission queue entry
/// (NVMe Base 2.0, 4.2 Figure 87): what an error log entry's parameter error
/// location reports.
pub mod offsets {
    pub const OPCODE: u16 = 0;
    pub const FLAGS: u16 = 1;
    pub const CID: u16 = 2;
    pub const NSID: u16 = 4;
    pub const CDW2: u16 = 8;
    pub const CDW3: u16 = 12;
    pub const MPTR: u16 = 16;
    pub const DPTR: u16 = 24;
    pub const CDW10: u16 = 40;
    pub const CDW11: u16 = 44;
    pub const CDW12: u16 = 48;
    pub const CDW13: u16 = 52;
    pub const CDW14: u16 = 56;
    pub const CDW15: u16 = 60;
}

/// Byte offsets of the fields of fabrics commands within the SQE, and of the
/// Connect data within its 1024 bytes (NVMe Base 2.0, 6.3 Figures 379 and 380;
/// 6.5, 6.6, 6.4): what Connect Invalid Parameters reports in IPO.
pub mod fabrics_offsets {
    /// Fabrics command type, byte 4 of every fabrics command.
    pub const FCTYPE: u16 = 4;
    pub const CONNECT_RECFMT: u16 = 40;
    pub const CONNECT_QID: u16 = 42;
    pub const CONNECT_SQSIZE: u16 = 44;
    pub const CONNECT_CATTR: u16 = 46;
    pub const CONNECT_KATO: u16 = 48;
    pub const PROPERTY_ATTRIB: u16 = 40;
    pub const PROPERTY_OFFSET: u16 = 44;
    pub const PROPERTY_VALUE: u16 = 48;
    pub const DISCONNECT_RECFMT: u16 = 40;
    pub const AUTH_SPSP0: u16 = 41;
    pub const AUTH_SPSP1: u16 = 42;
    pub const AUTH_SECP: u16 = 43;
    pub const AUTH_LENGTH: u16 = 44;
    /// Connect data: Host Identifier, 16 bytes.
    pub const DATA_HOSTID: u16 = 0;
    /// Connect data: Controller ID, 2 bytes.
    pub const DATA_CNTLID: u16 = 16;
    /// Connect data: NVM Subsystem NQN, 256 bytes.
    pub const DATA_SUBNQN: u16 = 256;
    /// Connect data: Host NQN, 256 bytes.
    pub const DATA_HOSTNQN: u16 = 512;
}

/// PRP or SGL for Data Transfer (NVMe Base 2.0, 4.2 Figure 87, FLAGS bits 7:6).
/// Fabrics transports carry SGLs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Psdt {
    /// 00b: PRPs (PCIe only).
    Prp,
    /// 01b: SGLs; MPTR holds the address of a contiguous metadata buffer.
    SglMptrContiguous,
    /// 10b: SGLs; MPTR holds the address of an SGL segment for metadata.
    SglMptrSegment,
    /// 11b: reserved.
    Reserved,
}

const PSDT_SHIFT: u8 = 6;

/// A submission queue entry, field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sqe {
    pub opcode: u8,
    /// FUSE in bits 1:0, PSDT in bits 7:6.
    pub flags: u8,
    pub cid: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub mptr: u64,
    /// Data pointer: SGL entry 1 on fabrics ([`Sqe::sgl1`]).
    pub dptr: [u8; 16],
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

const _: () = assert!(Sqe::SIZE == 64);

impl Sqe {
    /// Size of a submission queue entry in bytes.
    pub const SIZE: usize = 64;

    /// An all-zero entry with `opcode` and `cid` set.
    pub fn new(opcode: u8, cid: u16) -> Sqe {
        Sqe { opcode, cid, ..Sqe::default() }
    }

    /// A fabrics command entry: opcode 7Fh, FCTYPE in byte 4.
    pub fn fabrics(fctype: FabricsType, cid: u16) -> Sqe {
        Sqe { nsid: fctype as u32, ..Sqe::new(FABRICS_OPCODE, cid) }
    }

    /// Reads the 64 bytes of an entry.
    pub fn decode(b: &[u8; Sqe::SIZE]) -> Sqe {
        Sqe {
            opcode: b[0],
            flags: b[1],
            cid: get_u16(b, 2),
            nsid: get_u32(b, 4),
            cdw2: get_u32(b, 8),
            cdw3: get_u32(b, 12),
            mptr: get_u64(b, 16),
            dptr: get_array(b, 24),
            cdw10: get_u32(b, 40),
            cdw11: get_u32(b, 44),
            cdw12: get_u32(b, 48),
            cdw13: get_u32(b, 52),
            cdw14: get_u32(b, 56),
            cdw15: get_u32(b, 60),
        }
    }

    /// Reads an entry from the first 64 bytes of `b`.
    pub fn decode_from(b: &[u8]) -> Result<Sqe, WireError> {
        check_len(b, Sqe::SIZE)?;
        Ok(Sqe::decode(&get_array(b, 0)))
    }

    /// The 64 bytes of the entry.
    pub fn encode(&self) -> [u8; Sqe::SIZE] {
        let mut b = [0u8; Sqe::SIZE];
        self.encode_into(&mut b);
        b
    }

    /// Writes the entry into the first 64 bytes of `out`.
    ///
    /// # Panics
    /// When `out` is shorter than 64 bytes (a caller bug).
    pub fn encode_into(&self, out: &mut [u8]) {
        assert_out_len(out, Sqe::SIZE, "Sqe");
        out[0] = self.opcode;
        out[1] = self.flags;
        put_u16(out, 2, self.cid);
        put_u32(out, 4, self.nsid);
        put_u32(out, 8, self.cdw2);
        put_u32(out, 12, self.cdw3);
        put_u64(out, 16, self.mptr);
        put_bytes(out, 24, &self.dptr);
        let cdws = [self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15];
        for (i, dw) in cdws.into_iter().enumerate() {
            put_u32(out, 40 + 4 * i, dw);
        }
    }

    /// Fused operation bits (FUSE, FLAGS bits 1:0): 0 normal, 1 first, 2 second.
    pub fn fuse(&self) -> u8 {
        self.flags & 3
    }

    /// PRP or SGL for Data Transfer.
    pub fn psdt(&self) -> Psdt {
        match self.flags >> PSDT_SHIFT {
            0 => Psdt::Prp,
            1 => Psdt::SglMptrContiguous,
            2 => Psdt::SglMptrSegment,
            _ => Psdt::Reserved,
        }
    }

    /// Whether this is a fabrics command (opcode 7Fh), on any queue.
    pub fn is_fabrics(&self) -> bool {
        self.opcode == FABRICS_OPCODE
    }

    /// The fabrics command type, byte 4; meaningful only when [`Sqe::is_fabrics`].
    pub fn fctype(&self) -> u8 {
        self.nsid as u8
    }

    /// SGL entry 1, the data pointer of a fabrics command.
    pub fn sgl1(&self) -> SglDescriptor {
        SglDescriptor::decode(&self.dptr)
    }

    /// The entry with `sgl` as SGL entry 1 and PSDT set to SGL (01b), as
    /// fabrics hosts send every command.
    pub fn with_sgl(mut self, sgl: SglDescriptor) -> Sqe {
        self.dptr = sgl.encode();
        self.flags = (self.flags & 0x3F) | (1 << PSDT_SHIFT);
        self
    }
}

/// Asserts that a typed view is built from the command it describes: handing
/// it another command is a bug in the dispatcher.
fn assert_opcode(sqe: &Sqe, opcode: u8, what: &str) {
    assert!(sqe.opcode == opcode, "{what} view of a command with opcode {:#04x}", sqe.opcode);
}

fn assert_fabrics(sqe: &Sqe, fctype: FabricsType) {
    assert!(
        sqe.is_fabrics() && sqe.fctype() == fctype as u8,
        "{} view of a command with opcode {:#04x} fctype {:#04x}",
        fctype.name(),
        sqe.opcode,
        sqe.fctype()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn golden_bytes() -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0] = 0x02; // Read
        b[1] = 0x41; // PSDT 01b, FUSE 01b
        b[2..4].copy_from_slice(&[0x34, 0x12]);
        b[4..8].copy_from_slice(&[1, 0, 0, 0]);
        b[8..12].copy_from_slice(&[0xAA, 0, 0, 0]);
        b[12..16].copy_from_slice(&[0xBB, 0, 0, 0]);
        b[16..24].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        b[24..40].copy_from_slice(&[0x10; 16]);
        for (i, dw) in (10u8..16).enumerate() {
            b[40 + 4 * i] = dw;
        }
        b
    }

    #[test]
    fn golden_decode() {
        let sqe = Sqe::decode(&golden_bytes());
        assert_eq!(sqe.opcode, 0x02);
        assert_eq!(sqe.fuse(), 1);
        assert_eq!(sqe.psdt(), Psdt::SglMptrContiguous);
        assert_eq!(sqe.cid, 0x1234);
        assert_eq!(sqe.nsid, 1);
        assert_eq!((sqe.cdw2, sqe.cdw3), (0xAA, 0xBB));
        assert_eq!(sqe.mptr, 0x0102_0304_0506_0708);
        assert_eq!(sqe.dptr, [0x10; 16]);
        let cdws = [sqe.cdw10, sqe.cdw11, sqe.cdw12, sqe.cdw13, sqe.cdw14, sqe.cdw15];
        assert_eq!(cdws, [10, 11, 12, 13, 14, 15]);
        assert_eq!(sqe.encode(), golden_bytes());
    }

    #[test]
    fn fabrics_type_sits_in_byte_4() {
        let sqe = Sqe::fabrics(FabricsType::PropertyGet, 9);
        let b = sqe.encode();
        assert_eq!((b[0], b[4]), (0x7F, 0x04));
        assert!(sqe.is_fabrics());
        assert_eq!(sqe.fctype(), FabricsType::PropertyGet as u8);
    }

    #[test]
    fn decode_from_checks_length() {
        assert_eq!(Sqe::decode_from(&[0; 63]), Err(WireError::Short { need: 64, got: 63 }));
        assert_eq!(Sqe::decode_from(&golden_bytes()), Ok(Sqe::decode(&golden_bytes())));
    }

    #[test]
    fn with_sgl_sets_psdt_and_keeps_fuse() {
        let sqe = Sqe { flags: 0xC2, ..Sqe::default() }.with_sgl(SglDescriptor::transport(4096));
        assert_eq!(sqe.flags, 0x42);
        assert_eq!(sqe.sgl1(), SglDescriptor::transport(4096));
    }

    #[test]
    #[should_panic(expected = "Sqe: output buffer holds 10 bytes")]
    fn encode_into_short_buffer_is_a_bug() {
        Sqe::default().encode_into(&mut [0; 10]);
    }

    proptest! {
        #[test]
        fn bytes_round_trip(bytes in proptest::array::uniform32(any::<u8>()),
                            more in proptest::array::uniform32(any::<u8>())) {
            let mut b = [0u8; 64];
            b[..32].copy_from_slice(&bytes);
            b[32..].copy_from_slice(&more);
            prop_assert_eq!(Sqe::decode(&b).encode(), b);
        }
    }
}
