//! Controller properties, which fabrics hosts read and write with Property
//! Get/Set instead of PCIe registers (NVMe Base 2.0, 3.1.4 Figure 35).
//!
//! ```text
//! offset  size  name
//! 00h     8     CAP   Controller Capabilities
//! 08h     4     VS    Version
//! 14h     4     CC    Controller Configuration
//! 1Ch     4     CSTS  Controller Status
//! 20h     4     NSSR  NVM Subsystem Reset (optional)
//! 68h     4     CRTO  Controller Ready Timeouts (when CAP.CRMS is non-zero)
//! ```
//!
//! Invariant: each typed register converts to and from its integer losslessly
//! for every value whose reserved bits are clear; `from_u32`/`from_u64` keep
//! only defined fields, and fail where a defined field holds a reserved value.

use super::sqe::fabrics_offsets;
use super::wire::WireError;

/// Offset of CAP, 8 bytes.
pub const CAP: u32 = 0x00;
/// Offset of VS, 4 bytes.
pub const VS: u32 = 0x08;
/// Offset of CC, 4 bytes.
pub const CC: u32 = 0x14;
/// Offset of CSTS, 4 bytes.
pub const CSTS: u32 = 0x1C;
/// Offset of NSSR, 4 bytes.
pub const NSSR: u32 = 0x20;
/// Offset of CRTO, 4 bytes.
pub const CRTO: u32 = 0x68;

/// The value written to NSSR to reset the NVM subsystem: "NVMe" in ASCII.
pub const NSSR_RESET_VALUE: u32 = 0x4E56_4D65;

/// The size of a property access: Property Get/Set ATTRIB bits 2:0
/// (NVMe Base 2.0, 6.5 Figure 386).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertySize {
    /// 000b: 4 bytes.
    Four,
    /// 001b: 8 bytes.
    Eight,
}

impl PropertySize {
    /// The size in ATTRIB bits 2:0; other values of those bits are reserved.
    pub fn from_attrib(attrib: u8) -> Result<PropertySize, WireError> {
        match attrib & 7 {
            0 => Ok(PropertySize::Four),
            1 => Ok(PropertySize::Eight),
            value => Err(WireError::Reserved { offset: fabrics_offsets::PROPERTY_ATTRIB, value: value as u32 }),
        }
    }

    /// The ATTRIB value.
    pub const fn attrib(self) -> u8 {
        match self {
            PropertySize::Four => 0,
            PropertySize::Eight => 1,
        }
    }

    /// The size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            PropertySize::Four => 4,
            PropertySize::Eight => 8,
        }
    }

    /// The size of the property at `offset`, for the properties a fabrics
    /// controller defines; `None` for any other offset.
    pub const fn of_property(offset: u32) -> Option<PropertySize> {
        match offset {
            CAP => Some(PropertySize::Eight),
            VS | CC | CSTS | NSSR | CRTO => Some(PropertySize::Four),
            _ => None,
        }
    }
}

fn bits64(v: u64, shift: u32, width: u32) -> u64 {
    (v >> shift) & ((1 << width) - 1)
}

fn bits32(v: u32, shift: u32, width: u32) -> u32 {
    (v >> shift) & ((1 << width) - 1)
}

/// CAP.CSS bit: the NVM command set.
pub const CAP_CSS_NVM: u8 = 1 << 0;
/// CAP.CSS bit: one or more I/O command sets, selected through CC.CSS 110b.
/// Setting it makes a Linux host use the I/O command set identify structures.
pub const CAP_CSS_IO_COMMAND_SETS: u8 = 1 << 6;
/// CAP.CSS bit: no I/O command set (admin-only controllers, e.g. discovery).
pub const CAP_CSS_NO_IO: u8 = 1 << 7;

/// Controller Capabilities (NVMe Base 2.0, 3.1.4.1 Figure 36).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cap {
    /// Maximum Queue Entries Supported, 0-based: queues hold up to `mqes + 1`.
    pub mqes: u16,
    /// Contiguous Queues Required (always set on fabrics).
    pub cqr: bool,
    /// Arbitration Mechanism Supported, 2 bits (bit 0 weighted round robin,
    /// bit 1 vendor specific).
    pub ams: u8,
    /// Timeout: worst-case time to CSTS.RDY after CC.EN changes, in 500 ms units.
    pub to_500ms: u8,
    /// Doorbell stride, 4 bits (PCIe only; 0 on fabrics).
    pub dstrd: u8,
    /// NVM Subsystem Reset Supported.
    pub nssrs: bool,
    /// Command Sets Supported, 8 bits: [`CAP_CSS_NVM`], [`CAP_CSS_IO_COMMAND_SETS`],
    /// [`CAP_CSS_NO_IO`].
    pub css: u8,
    /// Boot Partition Support.
    pub bps: bool,
    /// Controller Power Scope, 2 bits.
    pub cps: u8,
    /// Memory Page Size Minimum, 4 bits: 2^(12 + mpsmin) bytes.
    pub mpsmin: u8,
    /// Memory Page Size Maximum, 4 bits.
    pub mpsmax: u8,
    /// Persistent Memory Region Supported.
    pub pmrs: bool,
    /// Controller Memory Buffer Supported.
    pub cmbs: bool,
    /// NVM Subsystem Shutdown Supported.
    pub nsss: bool,
    /// Controller Ready Modes Supported, 2 bits (bit 0 with media, bit 1
    /// independent of media); non-zero makes the host read CRTO.
    pub crms: u8,
}

impl Cap {
    /// The 64-bit property value.
    pub fn to_u64(&self) -> u64 {
        let f = |v: u8, shift: u32, width: u32| (v as u64 & ((1 << width) - 1)) << shift;
        self.mqes as u64
            | (self.cqr as u64) << 16
            | f(self.ams, 17, 2)
            | (self.to_500ms as u64) << 24
            | f(self.dstrd, 32, 4)
            | (self.nssrs as u64) << 36
            | (self.css as u64) << 37
            | (self.bps as u64) << 45
            | f(self.cps, 46, 2)
            | f(self.mpsmin, 48, 4)
            | f(self.mpsmax, 52, 4)
            | (self.pmrs as u64) << 56
            | (self.cmbs as u64) << 57
            | (self.nsss as u64) << 58
            | f(self.crms, 59, 2)
    }

    /// Reads the 64-bit property value; reserved bits are dropped.
    pub fn from_u64(v: u64) -> Cap {
        let b = |shift| bits64(v, shift, 1) != 0;
        Cap {
            mqes: v as u16,
            cqr: b(16),
            ams: bits64(v, 17, 2) as u8,
            to_500ms: bits64(v, 24, 8) as u8,
            dstrd: bits64(v, 32, 4) as u8,
            nssrs: b(36),
            css: bits64(v, 37, 8) as u8,
            bps: b(45),
            cps: bits64(v, 46, 2) as u8,
            mpsmin: bits64(v, 48, 4) as u8,
            mpsmax: bits64(v, 52, 4) as u8,
            pmrs: b(56),
            cmbs: b(57),
            nsss: b(58),
            crms: bits64(v, 59, 2) as u8,
        }
    }
}

/// Version (NVMe Base 2.0, 3.1.4.2 Figure 37): MJR 31:16, MNR 15:8, TER 7:0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vs {
    pub major: u16,
    pub minor: u8,
    pub tertiary: u8,
}

impl Vs {
    pub const V1_3: Vs = Vs { major: 1, minor: 3, tertiary: 0 };
    pub const V1_4: Vs = Vs { major: 1, minor: 4, tertiary: 0 };
    pub const V2_0: Vs = Vs { major: 2, minor: 0, tertiary: 0 };

    /// The version fabriq reports: 2.0.
    ///
    /// Why: the Linux 6.1 host keys its behaviour on 1.1 (Identify active
    /// namespace list, and the NVM command set Identify Controller, CNS 06h,
    /// which 6.1 asks for from 1.1 on), 1.2.1 (SUBNQN must be filled) and 1.3
    /// (namespace identification descriptors, without which it drops the
    /// namespace), and on nothing later, so 1.4 and 2.0 behave the same with
    /// 6.1. Later hosts ask for CNS 06h only from 2.0 on, and it is what tells
    /// them the Dataset Management and Write Zeroes limits; Linux nvmet itself
    /// moved from 1.3 to 2.1. 2.0 is also the revision these types cite.
    pub const FABRIQ: Vs = Vs::V2_0;

    /// The 32-bit property value.
    pub const fn to_u32(self) -> u32 {
        (self.major as u32) << 16 | (self.minor as u32) << 8 | self.tertiary as u32
    }

    /// Reads the 32-bit property value.
    pub const fn from_u32(v: u32) -> Vs {
        Vs { major: (v >> 16) as u16, minor: (v >> 8) as u8, tertiary: v as u8 }
    }
}

/// Shutdown Notification, CC.SHN (NVMe Base 2.0, 3.1.4.5 Figure 41).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownNotification {
    /// 00b: no notification.
    #[default]
    None,
    /// 01b: normal shutdown.
    Normal,
    /// 10b: abrupt shutdown.
    Abrupt,
}

/// CC.CSS value: NVM command set.
pub const CC_CSS_NVM: u8 = 0b000;
/// CC.CSS value: all supported I/O command sets.
pub const CC_CSS_ALL_IO: u8 = 0b110;
/// CC.CSS value: admin command set only.
pub const CC_CSS_ADMIN_ONLY: u8 = 0b111;

/// Controller Configuration (NVMe Base 2.0, 3.1.4.5 Figure 41).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cc {
    /// Enable.
    pub en: bool,
    /// I/O Command Set Selected, 3 bits ([`CC_CSS_NVM`], ...).
    pub css: u8,
    /// Memory Page Size, 4 bits: 2^(12 + mps) bytes.
    pub mps: u8,
    /// Arbitration Mechanism Selected, 3 bits.
    pub ams: u8,
    pub shn: ShutdownNotification,
    /// I/O Submission Queue Entry Size, 4 bits: 2^iosqes bytes (6 for 64).
    pub iosqes: u8,
    /// I/O Completion Queue Entry Size, 4 bits: 2^iocqes bytes (4 for 16).
    pub iocqes: u8,
    /// Controller Ready Independent of Media Enable.
    pub crime: bool,
}

impl Cc {
    /// The 32-bit property value.
    pub fn to_u32(&self) -> u32 {
        let f = |v: u8, shift: u32, width: u32| (v as u32 & ((1 << width) - 1)) << shift;
        let shn = match self.shn {
            ShutdownNotification::None => 0,
            ShutdownNotification::Normal => 1,
            ShutdownNotification::Abrupt => 2,
        };
        self.en as u32
            | f(self.css, 4, 3)
            | f(self.mps, 7, 4)
            | f(self.ams, 11, 3)
            | shn << 14
            | f(self.iosqes, 16, 4)
            | f(self.iocqes, 20, 4)
            | (self.crime as u32) << 24
    }

    /// Reads the 32-bit property value; SHN 11b is reserved and fails (the
    /// error's offset is CC's). Reserved bits are dropped.
    pub fn from_u32(v: u32) -> Result<Cc, WireError> {
        let shn = match bits32(v, 14, 2) {
            0 => ShutdownNotification::None,
            1 => ShutdownNotification::Normal,
            2 => ShutdownNotification::Abrupt,
            _ => {
                return Err(WireError::Reserved { offset: CC as u16, value: v });
            }
        };
        Ok(Cc {
            en: v & 1 != 0,
            css: bits32(v, 4, 3) as u8,
            mps: bits32(v, 7, 4) as u8,
            ams: bits32(v, 11, 3) as u8,
            shn,
            iosqes: bits32(v, 16, 4) as u8,
            iocqes: bits32(v, 20, 4) as u8,
            crime: bits32(v, 24, 1) != 0,
        })
    }
}

/// Shutdown Status, CSTS.SHST (NVMe Base 2.0, 3.1.4.6 Figure 42).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownStatus {
    /// 00b: normal operation, no shutdown requested.
    #[default]
    Normal,
    /// 01b: shutdown processing occurring.
    Occurring,
    /// 10b: shutdown processing complete.
    Complete,
}

/// Controller Status (NVMe Base 2.0, 3.1.4.6 Figure 42).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Csts {
    /// Ready.
    pub rdy: bool,
    /// Controller Fatal Status.
    pub cfs: bool,
    pub shst: ShutdownStatus,
    /// NVM Subsystem Reset Occurred.
    pub nssro: bool,
    /// Processing Paused.
    pub pp: bool,
    /// Shutdown Type: the shutdown is of the whole NVM subsystem.
    pub st: bool,
}

impl Csts {
    /// The 32-bit property value.
    pub fn to_u32(&self) -> u32 {
        let shst = match self.shst {
            ShutdownStatus::Normal => 0,
            ShutdownStatus::Occurring => 1,
            ShutdownStatus::Complete => 2,
        };
        self.rdy as u32
            | (self.cfs as u32) << 1
            | shst << 2
            | (self.nssro as u32) << 4
            | (self.pp as u32) << 5
            | (self.st as u32) << 6
    }

    /// Reads the 32-bit property value; SHST 11b is reserved and fails.
    pub fn from_u32(v: u32) -> Result<Csts, WireError> {
        let shst = match bits32(v, 2, 2) {
            0 => ShutdownStatus::Normal,
            1 => ShutdownStatus::Occurring,
            2 => ShutdownStatus::Complete,
            _ => {
                return Err(WireError::Reserved { offset: CSTS as u16, value: v });
            }
        };
        let b = |shift| bits32(v, shift, 1) != 0;
        Ok(Csts { rdy: b(0), cfs: b(1), shst, nssro: b(4), pp: b(5), st: b(6) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cap_golden() {
        // MQES 127, CQR, TO 15 s, CSS NVM, MPSMIN 0 (4 KiB), MPSMAX 4 (64 KiB).
        let cap = Cap { mqes: 127, cqr: true, to_500ms: 30, css: CAP_CSS_NVM, mpsmax: 4, ..Cap::default() };
        assert_eq!(cap.to_u64(), 0x0040_0020_1E01_007F);
        assert_eq!(Cap::from_u64(0x0040_0020_1E01_007F), cap);
    }

    #[test]
    fn cap_every_field_at_its_bits() {
        let all = Cap {
            mqes: 0xFFFF,
            cqr: true,
            ams: 3,
            to_500ms: 0xFF,
            dstrd: 0xF,
            nssrs: true,
            css: 0xFF,
            bps: true,
            cps: 3,
            mpsmin: 0xF,
            mpsmax: 0xF,
            pmrs: true,
            cmbs: true,
            nsss: true,
            crms: 3,
        };
        // Bits 23:19 and 63:61 are reserved.
        assert_eq!(all.to_u64(), 0x1FFF_FFFF_FF07_FFFF);
        assert_eq!(Cap::from_u64(u64::MAX), all);
    }

    #[test]
    fn vs_golden_and_order() {
        assert_eq!(Vs::V1_4.to_u32(), 0x0001_0400);
        assert_eq!(Vs::V2_0.to_u32(), 0x0002_0000);
        assert_eq!(Vs::from_u32(0x0001_0201), Vs { major: 1, minor: 2, tertiary: 1 });
        assert!(Vs::V2_0 > Vs::V1_4 && Vs::V1_4 > Vs::V1_3);
        assert_eq!(Vs::FABRIQ, Vs::V2_0);
    }

    #[test]
    fn cc_golden_as_linux_enables_the_controller() {
        // EN, CSS NVM, MPS 4 KiB, AMS RR, IOSQES 6, IOCQES 4: 0046_0001h.
        let cc = Cc::from_u32(0x0046_0001).unwrap();
        assert_eq!(cc, Cc { en: true, iosqes: 6, iocqes: 4, ..Cc::default() });
        assert_eq!(cc.to_u32(), 0x0046_0001);
        let shutdown = Cc { shn: ShutdownNotification::Normal, ..cc };
        assert_eq!(shutdown.to_u32(), 0x0046_4001);
        let crime = Cc { crime: true, css: CC_CSS_ALL_IO, mps: 1, ams: 7, ..cc };
        assert_eq!(crime.to_u32(), 0x0146_38E1);
        assert_eq!(Cc::from_u32(0xC000), Err(WireError::Reserved { offset: 0x14, value: 0xC000 }));
    }

    #[test]
    fn csts_golden() {
        let ready = Csts { rdy: true, ..Csts::default() };
        assert_eq!(ready.to_u32(), 1);
        let done = Csts { shst: ShutdownStatus::Complete, ..ready };
        assert_eq!(done.to_u32(), 0x09);
        let all = Csts { rdy: true, cfs: true, shst: ShutdownStatus::Occurring, nssro: true, pp: true, st: true };
        assert_eq!(all.to_u32(), 0x77);
        assert_eq!(Csts::from_u32(0x77), Ok(all));
        assert!(Csts::from_u32(0x0C).is_err());
    }

    #[test]
    fn property_sizes() {
        assert_eq!(PropertySize::of_property(CAP), Some(PropertySize::Eight));
        assert_eq!(PropertySize::of_property(CSTS), Some(PropertySize::Four));
        assert_eq!(PropertySize::of_property(0x24), None);
        assert_eq!(PropertySize::from_attrib(0xF8), Ok(PropertySize::Four));
        assert_eq!(PropertySize::from_attrib(1).map(PropertySize::bytes), Ok(8));
        assert!(PropertySize::from_attrib(7).is_err());
        assert_eq!(NSSR_RESET_VALUE.to_be_bytes(), *b"NVMe");
    }

    proptest! {
        #[test]
        fn cap_round_trips(v: u64) {
            let cap = Cap::from_u64(v);
            prop_assert_eq!(Cap::from_u64(cap.to_u64()), cap);
            prop_assert_eq!(cap.to_u64(), v & 0x1FFF_FFFF_FF07_FFFF);
        }

        #[test]
        fn cc_round_trips(v: u32) {
            if let Ok(cc) = Cc::from_u32(v) {
                prop_assert_eq!(cc.to_u32(), v & 0x01FF_FFF1);
            }
        }

        #[test]
        fn csts_round_trips(v: u32) {
            if let Ok(csts) = Csts::from_u32(v) {
                prop_assert_eq!(csts.to_u32(), v & 0x7F);
            }
        }
    }
}
