//! Admin commands a fabrics controller serves (NVMe Base 2.0, 5): Identify,
//! Get Log Page, Get/Set Features, Abort, Keep Alive, Asynchronous Event Request.
//!
//! ```text
//! Identify      CDW10: CNS 7:0, CNTID 31:16   CDW11: CNSSID 15:0, CSI 31:24   CDW14: UUID index 6:0
//! Get Log Page  CDW10: LID 7:0, LSP 14:8, RAE 15, NUMDL 31:16   CDW11: NUMDU 15:0, LSI 31:16
//!               CDW12/13: LPOL/LPOU   CDW14: UUID index 6:0, OT 23, CSI 31:24
//! Get Features  CDW10: FID 7:0, SEL 10:8      Set Features CDW10: FID 7:0, SV 31
//! Abort         CDW10: SQID 15:0, CID 31:16
//! ```
//!
//! Invariant: `from_sqe` asserts the opcode (a dispatch bug otherwise) and
//! reads every field; whether a value is acceptable is the controller's call.

use super::{Sqe, assert_opcode};
use crate::nvme::opcode::AdminOpcode;

/// Identify (NVMe Base 2.0, 5.17 Figures 272 and 273).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identify {
    /// Controller or Namespace Structure: which data structure (see
    /// [`crate::nvme::identify::cns`]).
    pub cns: u8,
    /// Controller identifier, for the CNS values that take one.
    pub cntid: u16,
    /// CNS specific identifier (NVM Set, Endurance Group, domain).
    pub cnssid: u16,
    /// Command set identifier for the CNS values specific to a command set.
    pub csi: u8,
    pub uuid_index: u8,
    /// The namespace, or the starting point of a namespace list.
    pub nsid: u32,
}

impl Identify {
    /// Reads the Identify fields.
    ///
    /// # Panics
    /// When `sqe` is not an Identify command.
    pub fn from_sqe(sqe: &Sqe) -> Identify {
        assert_opcode(sqe, AdminOpcode::Identify as u8, "Identify");
        Identify {
            cns: sqe.cdw10 as u8,
            cntid: (sqe.cdw10 >> 16) as u16,
            cnssid: sqe.cdw11 as u16,
            csi: (sqe.cdw11 >> 24) as u8,
            uuid_index: (sqe.cdw14 & 0x7F) as u8,
            nsid: sqe.nsid,
        }
    }

    /// An Identify command; the caller adds the SGL for 4096 bytes.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe {
            nsid: self.nsid,
            cdw10: self.cns as u32 | (self.cntid as u32) << 16,
            cdw11: self.cnssid as u32 | (self.csi as u32) << 24,
            cdw14: (self.uuid_index & 0x7F) as u32,
            ..Sqe::new(AdminOpcode::Identify as u8, cid)
        }
    }
}

const LSP_MASK: u32 = 0x7F;
const RAE_BIT: u32 = 1 << 15;
const OT_BIT: u32 = 1 << 23;

/// Get Log Page (NVMe Base 2.0, 5.16 Figures 197 to 201).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetLogPage {
    /// Log page identifier (see [`crate::nvme::log::lid`]).
    pub lid: u8,
    /// Log specific field, 7 bits.
    pub lsp: u8,
    /// Retain Asynchronous Event: the read does not clear the event.
    pub rae: bool,
    /// Length to read in dwords: NUMDU:NUMDL plus one, so 1..=2^32.
    pub len_dwords: u64,
    /// Log page offset: bytes, or an index when `offset_is_index` is set.
    pub offset: u64,
    /// Offset Type: `offset` is an index into a list of structures.
    pub offset_is_index: bool,
    /// Log specific identifier.
    pub lsi: u16,
    /// Command set identifier of command set specific logs.
    pub csi: u8,
    pub uuid_index: u8,
    /// The namespace, or FFFF_FFFFh for the controller-wide log.
    pub nsid: u32,
}

impl GetLogPage {
    /// Reads the Get Log Page fields.
    ///
    /// # Panics
    /// When `sqe` is not a Get Log Page command.
    pub fn from_sqe(sqe: &Sqe) -> GetLogPage {
        assert_opcode(sqe, AdminOpcode::GetLogPage as u8, "Get Log Page");
        let numd_0based = (sqe.cdw10 >> 16) | (sqe.cdw11 & 0xFFFF) << 16;
        GetLogPage {
            lid: sqe.cdw10 as u8,
            lsp: ((sqe.cdw10 >> 8) & LSP_MASK) as u8,
            rae: sqe.cdw10 & RAE_BIT != 0,
            len_dwords: numd_0based as u64 + 1,
            offset: sqe.cdw12 as u64 | (sqe.cdw13 as u64) << 32,
            offset_is_index: sqe.cdw14 & OT_BIT != 0,
            lsi: (sqe.cdw11 >> 16) as u16,
            csi: (sqe.cdw14 >> 24) as u8,
            uuid_index: (sqe.cdw14 & 0x7F) as u8,
            nsid: sqe.nsid,
        }
    }

    /// A Get Log Page command; the caller adds the SGL.
    ///
    /// # Panics
    /// When `len_dwords` is not in 1..=2^32.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        assert!((1..=1 << 32).contains(&self.len_dwords), "Get Log Page length out of range");
        let numd = (self.len_dwords - 1) as u32;
        let rae = if self.rae { RAE_BIT } else { 0 };
        let ot = if self.offset_is_index { OT_BIT } else { 0 };
        Sqe {
            nsid: self.nsid,
            cdw10: self.lid as u32 | (self.lsp as u32 & LSP_MASK) << 8 | rae | numd << 16,
            cdw11: numd >> 16 | (self.lsi as u32) << 16,
            cdw12: self.offset as u32,
            cdw13: (self.offset >> 32) as u32,
            cdw14: (self.uuid_index & 0x7F) as u32 | ot | (self.csi as u32) << 24,
            ..Sqe::new(AdminOpcode::GetLogPage as u8, cid)
        }
    }

    /// Length to read in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.len_dwords * 4
    }
}

const SEL_SHIFT: u32 = 8;
const SEL_MASK: u32 = 0x7;
const SV_BIT: u32 = 1 << 31;

/// Get Features and Set Features (NVMe Base 2.0, 5.15 and 5.27): one view for
/// both, since they share FID and CDW11..CDW15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// Feature identifier (see [`crate::nvme::features::fid`]).
    pub fid: u8,
    /// Get Features: Select (current, default, saved, supported capabilities).
    pub sel: u8,
    /// Set Features: Save the value across power cycles.
    pub save: bool,
    /// Feature specific.
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub uuid_index: u8,
    pub cdw15: u32,
    /// The namespace, for namespace specific features.
    pub nsid: u32,
}

impl Features {
    /// Reads a Get Features or Set Features command; `sel` is read only from
    /// Get Features and `save` only from Set Features.
    ///
    /// # Panics
    /// When `sqe` is neither.
    pub fn from_sqe(sqe: &Sqe) -> Features {
        let get = sqe.opcode == AdminOpcode::GetFeatures as u8;
        if !get {
            assert_opcode(sqe, AdminOpcode::SetFeatures as u8, "Get/Set Features");
        }
        Features {
            fid: sqe.cdw10 as u8,
            sel: if get { ((sqe.cdw10 >> SEL_SHIFT) & SEL_MASK) as u8 } else { 0 },
            save: !get && sqe.cdw10 & SV_BIT != 0,
            cdw11: sqe.cdw11,
            cdw12: sqe.cdw12,
            cdw13: sqe.cdw13,
            uuid_index: (sqe.cdw14 & 0x7F) as u8,
            cdw15: sqe.cdw15,
            nsid: sqe.nsid,
        }
    }

    /// A Get Features (`opcode` [`AdminOpcode::GetFeatures`]) or Set Features
    /// command.
    ///
    /// # Panics
    /// When `opcode` is neither.
    pub fn to_sqe(&self, opcode: AdminOpcode, cid: u16) -> Sqe {
        let cdw10 = match opcode {
            AdminOpcode::GetFeatures => self.fid as u32 | (self.sel as u32 & SEL_MASK) << SEL_SHIFT,
            AdminOpcode::SetFeatures => self.fid as u32 | if self.save { SV_BIT } else { 0 },
            other => panic!("Features view cannot build a {} command", other.name()),
        };
        Sqe {
            nsid: self.nsid,
            cdw10,
            cdw11: self.cdw11,
            cdw12: self.cdw12,
            cdw13: self.cdw13,
            cdw14: (self.uuid_index & 0x7F) as u32,
            cdw15: self.cdw15,
            ..Sqe::new(opcode as u8, cid)
        }
    }
}

/// Abort (NVMe Base 2.0, 5.1 Figure 140): abort command `cid` of queue `sqid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort {
    pub sqid: u16,
    pub cid: u16,
}

impl Abort {
    /// Reads the Abort fields.
    ///
    /// # Panics
    /// When `sqe` is not an Abort command.
    pub fn from_sqe(sqe: &Sqe) -> Abort {
        assert_opcode(sqe, AdminOpcode::Abort as u8, "Abort");
        Abort { sqid: sqe.cdw10 as u16, cid: (sqe.cdw10 >> 16) as u16 }
    }

    /// An Abort command with command identifier `cid` (of the Abort itself).
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe { cdw10: self.sqid as u32 | (self.cid as u32) << 16, ..Sqe::new(AdminOpcode::Abort as u8, cid) }
    }
}

/// Keep Alive (NVMe Base 2.0, 5.25): no fields; it restarts the keep alive timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepAlive;

impl KeepAlive {
    /// A Keep Alive command.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe::new(AdminOpcode::KeepAlive as u8, cid)
    }
}

/// Asynchronous Event Request (NVMe Base 2.0, 5.2): no fields; the controller
/// completes it when an event occurs (see [`crate::nvme::features::AsyncEvent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AsyncEventRequest;

impl AsyncEventRequest {
    /// An Asynchronous Event Request command.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe::new(AdminOpcode::AsyncEventRequest as u8, cid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identify_golden() {
        let id = Identify { cns: 0x06, cntid: 0x0102, cnssid: 0, csi: 0x00, uuid_index: 0, nsid: 0 };
        let b = id.to_sqe(1).encode();
        assert_eq!((b[0], b[40], b[42], b[43], b[47]), (0x06, 0x06, 0x02, 0x01, 0x00));
        let zns = Identify { cns: 0x05, csi: 0x02, nsid: 1, ..Identify::default() };
        let b = zns.to_sqe(1).encode();
        assert_eq!((b[4], b[40], b[47]), (1, 0x05, 0x02));
        assert_eq!(Identify::from_sqe(&Sqe::decode(&b)), zns);
    }

    #[test]
    fn get_log_page_golden_as_linux_reads_the_discovery_log() {
        // 4096 bytes (1024 dwords, NUMD 3FFh) of LID 70h at offset 1024, RAE.
        let g = GetLogPage {
            lid: 0x70,
            lsp: 0,
            rae: true,
            len_dwords: 1024,
            offset: 1024,
            offset_is_index: false,
            lsi: 0,
            csi: 0,
            uuid_index: 0,
            nsid: 0,
        };
        let b = g.to_sqe(0x10).encode();
        assert_eq!(&b[40..44], &[0x70, 0x80, 0xFF, 0x03]);
        assert_eq!(&b[44..48], &[0, 0, 0, 0]);
        assert_eq!(&b[48..56], &[0x00, 0x04, 0, 0, 0, 0, 0, 0]);
        let back = GetLogPage::from_sqe(&Sqe::decode(&b));
        assert_eq!(back, g);
        assert_eq!(back.len_bytes(), 4096);
    }

    #[test]
    fn get_log_page_numd_spans_two_halfwords() {
        let sqe = Sqe {
            cdw10: 0xFFFF_0002,
            cdw11: 0x0001_FFFF,
            cdw14: 0x0280_0003,
            ..Sqe::new(AdminOpcode::GetLogPage as u8, 0)
        };
        let g = GetLogPage::from_sqe(&sqe);
        assert_eq!(g.len_dwords, 1 << 32);
        assert_eq!(g.lsi, 1);
        assert!(g.offset_is_index);
        assert_eq!((g.csi, g.uuid_index), (2, 3));
        assert_eq!(g.to_sqe(0), sqe);
    }

    #[test]
    fn features_get_and_set_golden() {
        // Get Features, Number of Queues, supported capabilities.
        let f = Features { fid: 0x07, sel: 3, ..Features::default() };
        let b = f.to_sqe(AdminOpcode::GetFeatures, 2).encode();
        assert_eq!((b[0], b[40], b[41]), (0x0A, 0x07, 0x03));
        assert_eq!(Features::from_sqe(&Sqe::decode(&b)), f);
        // Set Features, Keep Alive Timer 120 s, saved.
        let s = Features { fid: 0x0F, save: true, cdw11: 120_000, ..Features::default() };
        let b = s.to_sqe(AdminOpcode::SetFeatures, 3).encode();
        assert_eq!((b[0], b[40], b[43]), (0x09, 0x0F, 0x80));
        assert_eq!(&b[44..48], &120_000u32.to_le_bytes());
        assert_eq!(Features::from_sqe(&Sqe::decode(&b)), s);
    }

    #[test]
    fn abort_keep_alive_aer_golden() {
        let b = Abort { sqid: 1, cid: 0x0203 }.to_sqe(9).encode();
        assert_eq!((b[0], &b[40..44]), (0x08, &[1u8, 0, 3, 2][..]));
        assert_eq!(Abort::from_sqe(&Sqe::decode(&b)), Abort { sqid: 1, cid: 0x0203 });
        assert_eq!(KeepAlive.to_sqe(1).encode()[0], 0x18);
        assert_eq!(AsyncEventRequest.to_sqe(1).encode()[0], 0x0C);
    }

    proptest! {
        #[test]
        fn get_log_page_round_trips(
            lid: u8, lsp in 0u8..0x80, rae: bool, len_dwords in 1u64..=(1 << 32),
            offset: u64, ot: bool, lsi: u16, csi: u8, uuid_index in 0u8..0x80, nsid: u32,
        ) {
            let g = GetLogPage {
                lid, lsp, rae, len_dwords, offset, offset_is_index: ot, lsi, csi, uuid_index, nsid,
            };
            prop_assert_eq!(GetLogPage::from_sqe(&g.to_sqe(0)), g);
        }

        #[test]
        fn identify_round_trips(cns: u8, cntid: u16, cnssid: u16, csi: u8, uuid_index in 0u8..0x80, nsid: u32) {
            let id = Identify { cns, cntid, cnssid, csi, uuid_index, nsid };
            prop_assert_eq!(Identify::from_sqe(&id.to_sqe(0)), id);
        }

        #[test]
        fn features_round_trip(fid: u8, sel in 0u8..8, save: bool, cdw11: u32, cdw12: u32,
                               cdw13: u32, uuid_index in 0u8..0x80, cdw15: u32, nsid: u32) {
            let get = Features { fid, sel, save: false, cdw11, cdw12, cdw13, uuid_index, cdw15, nsid };
            prop_assert_eq!(Features::from_sqe(&get.to_sqe(AdminOpcode::GetFeatures, 0)), get);
            let set = Features { sel: 0, save, ..get };
            prop_assert_eq!(Features::from_sqe(&set.to_sqe(AdminOpcode::SetFeatures, 0)), set);
        }
    }
}
