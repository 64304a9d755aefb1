//! The status field of a completion queue entry, the named status codes
//! fabriq returns or a host sees, and the Connect response's Dword 0.
//!
//! Layout of the 15-bit status field, the CQE's status halfword without its
//! phase bit (NVMe Base 2.0, 4.6.1 Figure 101):
//!
//! ```text
//!  14   13   12:11  10:8   7:0
//! DNR  More   CRD    SCT    SC
//! ```
//!
//! Invariants: a [`Status`] never has bit 15 set; the named constants carry
//! SCT and SC only, with CRD, More and DNR clear: callers add DNR with
//! [`Status::with_dnr`] where a retry cannot succeed.

use std::fmt;

/// Status Code Type (NVMe Base 2.0, 4.6.1.2 Figure 102). Covers all eight
/// values of the 3-bit field so that decoding never fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Sct {
    Generic = 0,
    CommandSpecific = 1,
    MediaAndDataIntegrity = 2,
    PathRelated = 3,
    Reserved4 = 4,
    Reserved5 = 5,
    Reserved6 = 6,
    VendorSpecific = 7,
}

impl Sct {
    /// The type for the 3-bit field value `raw & 7`.
    pub const fn from_bits(raw: u8) -> Sct {
        match raw & 7 {
            0 => Sct::Generic,
            1 => Sct::CommandSpecific,
            2 => Sct::MediaAndDataIntegrity,
            3 => Sct::PathRelated,
            4 => Sct::Reserved4,
            5 => Sct::Reserved5,
            6 => Sct::Reserved6,
            _ => Sct::VendorSpecific,
        }
    }
}

const SC_MASK: u16 = 0x00FF;
const SCT_SHIFT: u16 = 8;
const SCT_MASK: u16 = 0x0700;
const CRD_SHIFT: u16 = 11;
const CRD_MASK: u16 = 0x1800;
const MORE_BIT: u16 = 1 << 13;
const DNR_BIT: u16 = 1 << 14;

/// The status field of a completion: SC, SCT, CRD, More, DNR.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status(u16);

impl Status {
    /// A status of type `sct` and code `sc`, with CRD, More and DNR clear.
    pub const fn new(sct: Sct, sc: u8) -> Status {
        Status(((sct as u16) << SCT_SHIFT) | sc as u16)
    }

    /// The status from the 15-bit field (the CQE halfword shifted right by one);
    /// bit 15 is ignored.
    pub const fn from_field(field: u16) -> Status {
        Status(field & 0x7FFF)
    }

    /// The 15-bit field value.
    pub const fn field(self) -> u16 {
        self.0
    }

    /// The same status with Do Not Retry set.
    pub const fn with_dnr(self) -> Status {
        Status(self.0 | DNR_BIT)
    }

    /// The same status with More set: more status in the Error Information log.
    pub const fn with_more(self) -> Status {
        Status(self.0 | MORE_BIT)
    }

    /// The same status with Command Retry Delay set to `crd` (0..=3: none, or
    /// which of CRDT1..CRDT3 of Identify Controller to wait).
    pub const fn with_crd(self, crd: u8) -> Status {
        Status((self.0 & !CRD_MASK) | (((crd & 3) as u16) << CRD_SHIFT))
    }

    /// SCT and SC alone: the status compared with a named constant.
    pub const fn code(self) -> Status {
        Status(self.0 & (SCT_MASK | SC_MASK))
    }

    /// Do Not Retry.
    pub const fn dnr(self) -> bool {
        self.0 & DNR_BIT != 0
    }

    /// More information in the Error Information log.
    pub const fn more(self) -> bool {
        self.0 & MORE_BIT != 0
    }

    /// Command Retry Delay, 0..=3.
    pub const fn crd(self) -> u8 {
        ((self.0 & CRD_MASK) >> CRD_SHIFT) as u8
    }

    /// Status Code Type.
    pub const fn sct(self) -> Sct {
        Sct::from_bits(((self.0 & SCT_MASK) >> SCT_SHIFT) as u8)
    }

    /// Status Code.
    pub const fn sc(self) -> u8 {
        (self.0 & SC_MASK) as u8
    }

    /// Whether the command succeeded (SCT and SC zero; flags do not count).
    pub const fn is_success(self) -> bool {
        self.0 & (SCT_MASK | SC_MASK) == 0
    }

    /// The specification's name of the status code, where this crate knows it.
    /// Command-specific codes 80h..=84h mean different things for Connect and for
    /// NVM commands; both names are given.
    pub fn name(self) -> Option<&'static str> {
        let code = self.code();
        NAMES.iter().find(|(s, _)| *s == code).map(|(_, n)| *n)
    }
}

macro_rules! statuses {
    ($( $(#[$m:meta])* $name:ident = ($sct:ident, $sc:literal, $text:literal); )+) => {
        impl Status {
            $( $(#[$m])* #[doc = concat!("\"", $text, "\"")]
               pub const $name: Status = Status::new(Sct::$sct, $sc); )+
        }
        const NAMES: &[(Status, &str)] = &[ $( (Status::$name, $text), )+ ];
    };
}

// NVMe Base 2.0, 4.6.1.2.1 (generic), 4.6.1.2.2 (command specific), 4.6.1.2.3
// (media and data integrity), 4.6.1.2.4 (path related); NVM Command Set 1.0,
// 3.3.3 (NVM codes 80h..); NVMe Base 2.0, 6.3 Figure 382 (Connect codes).
statuses! {
    SUCCESS = (Generic, 0x00, "Successful Completion");
    INVALID_OPCODE = (Generic, 0x01, "Invalid Command Opcode");
    INVALID_FIELD = (Generic, 0x02, "Invalid Field in Command");
    CID_CONFLICT = (Generic, 0x03, "Command ID Conflict");
    DATA_TRANSFER_ERROR = (Generic, 0x04, "Data Transfer Error");
    ABORTED_POWER_LOSS = (Generic, 0x05, "Commands Aborted due to Power Loss Notification");
    INTERNAL_ERROR = (Generic, 0x06, "Internal Error");
    ABORT_REQUESTED = (Generic, 0x07, "Command Abort Requested");
    ABORTED_SQ_DELETION = (Generic, 0x08, "Command Aborted due to SQ Deletion");
    ABORTED_FAILED_FUSED = (Generic, 0x09, "Command Aborted due to Failed Fused Command");
    ABORTED_MISSING_FUSED = (Generic, 0x0A, "Command Aborted due to Missing Fused Command");
    INVALID_NAMESPACE_OR_FORMAT = (Generic, 0x0B, "Invalid Namespace or Format");
    COMMAND_SEQUENCE_ERROR = (Generic, 0x0C, "Command Sequence Error");
    INVALID_SGL_SEGMENT_DESCRIPTOR = (Generic, 0x0D, "Invalid SGL Segment Descriptor");
    INVALID_NUMBER_OF_SGL_DESCRIPTORS = (Generic, 0x0E, "Invalid Number of SGL Descriptors");
    DATA_SGL_LENGTH_INVALID = (Generic, 0x0F, "Data SGL Length Invalid");
    METADATA_SGL_LENGTH_INVALID = (Generic, 0x10, "Metadata SGL Length Invalid");
    SGL_DESCRIPTOR_TYPE_INVALID = (Generic, 0x11, "SGL Descriptor Type Invalid");
    INVALID_USE_OF_CMB = (Generic, 0x12, "Invalid Use of Controller Memory Buffer");
    PRP_OFFSET_INVALID = (Generic, 0x13, "PRP Offset Invalid");
    ATOMIC_WRITE_UNIT_EXCEEDED = (Generic, 0x14, "Atomic Write Unit Exceeded");
    OPERATION_DENIED = (Generic, 0x15, "Operation Denied");
    INVALID_SGL_OFFSET = (Generic, 0x16, "SGL Offset Invalid");
    HOST_IDENTIFIER_INCONSISTENT_FORMAT = (Generic, 0x18, "Host Identifier Inconsistent Format");
    KEEP_ALIVE_TIMER_EXPIRED = (Generic, 0x19, "Keep Alive Timer Expired");
    KEEP_ALIVE_TIMEOUT_INVALID = (Generic, 0x1A, "Keep Alive Timeout Invalid");
    ABORTED_PREEMPT_AND_ABORT = (Generic, 0x1B, "Command Aborted due to Preempt and Abort");
    SANITIZE_FAILED = (Generic, 0x1C, "Sanitize Failed");
    SANITIZE_IN_PROGRESS = (Generic, 0x1D, "Sanitize In Progress");
    SGL_DATA_BLOCK_GRANULARITY_INVALID = (Generic, 0x1E, "SGL Data Block Granularity Invalid");
    COMMAND_NOT_SUPPORTED_FOR_QUEUE_IN_CMB =
        (Generic, 0x1F, "Command Not Supported for Queue in CMB");
    NAMESPACE_IS_WRITE_PROTECTED = (Generic, 0x20, "Namespace is Write Protected");
    COMMAND_INTERRUPTED = (Generic, 0x21, "Command Interrupted");
    TRANSIENT_TRANSPORT_ERROR = (Generic, 0x22, "Transient Transport Error");
    COMMAND_PROHIBITED_BY_LOCKDOWN =
        (Generic, 0x23, "Command Prohibited by Command and Feature Lockdown");
    ADMIN_COMMAND_MEDIA_NOT_READY = (Generic, 0x24, "Admin Command Media Not Ready");
    LBA_OUT_OF_RANGE = (Generic, 0x80, "LBA Out of Range");
    CAPACITY_EXCEEDED = (Generic, 0x81, "Capacity Exceeded");
    NAMESPACE_NOT_READY = (Generic, 0x82, "Namespace Not Ready");
    RESERVATION_CONFLICT = (Generic, 0x83, "Reservation Conflict");
    FORMAT_IN_PROGRESS = (Generic, 0x84, "Format In Progress");

    COMPLETION_QUEUE_INVALID = (CommandSpecific, 0x00, "Completion Queue Invalid");
    INVALID_QUEUE_IDENTIFIER = (CommandSpecific, 0x01, "Invalid Queue Identifier");
    INVALID_QUEUE_SIZE = (CommandSpecific, 0x02, "Invalid Queue Size");
    ABORT_COMMAND_LIMIT_EXCEEDED = (CommandSpecific, 0x03, "Abort Command Limit Exceeded");
    ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED =
        (CommandSpecific, 0x05, "Asynchronous Event Request Limit Exceeded");
    INVALID_FIRMWARE_SLOT = (CommandSpecific, 0x06, "Invalid Firmware Slot");
    INVALID_FIRMWARE_IMAGE = (CommandSpecific, 0x07, "Invalid Firmware Image");
    INVALID_INTERRUPT_VECTOR = (CommandSpecific, 0x08, "Invalid Interrupt Vector");
    INVALID_LOG_PAGE = (CommandSpecific, 0x09, "Invalid Log Page");
    INVALID_FORMAT = (CommandSpecific, 0x0A, "Invalid Format");
    INVALID_QUEUE_DELETION = (CommandSpecific, 0x0C, "Invalid Queue Deletion");
    FEATURE_IDENTIFIER_NOT_SAVEABLE =
        (CommandSpecific, 0x0D, "Feature Identifier Not Saveable");
    FEATURE_NOT_CHANGEABLE = (CommandSpecific, 0x0E, "Feature Not Changeable");
    FEATURE_NOT_NAMESPACE_SPECIFIC = (CommandSpecific, 0x0F, "Feature Not Namespace Specific");
    OVERLAPPING_RANGE = (CommandSpecific, 0x14, "Overlapping Range");
    NAMESPACE_INSUFFICIENT_CAPACITY = (CommandSpecific, 0x15, "Namespace Insufficient Capacity");
    NAMESPACE_IDENTIFIER_UNAVAILABLE =
        (CommandSpecific, 0x16, "Namespace Identifier Unavailable");
    NAMESPACE_ALREADY_ATTACHED = (CommandSpecific, 0x18, "Namespace Already Attached");
    NAMESPACE_IS_PRIVATE = (CommandSpecific, 0x19, "Namespace Is Private");
    NAMESPACE_NOT_ATTACHED = (CommandSpecific, 0x1A, "Namespace Not Attached");
    CONTROLLER_LIST_INVALID = (CommandSpecific, 0x1C, "Controller List Invalid");
    ANA_GROUP_IDENTIFIER_INVALID = (CommandSpecific, 0x24, "ANA Group Identifier Invalid");
    IO_COMMAND_SET_NOT_SUPPORTED = (CommandSpecific, 0x29, "I/O Command Set Not Supported");
    IO_COMMAND_SET_NOT_ENABLED = (CommandSpecific, 0x2A, "I/O Command Set Not Enabled");
    IO_COMMAND_SET_COMBINATION_REJECTED =
        (CommandSpecific, 0x2B, "I/O Command Set Combination Rejected");
    INVALID_IO_COMMAND_SET = (CommandSpecific, 0x2C, "Invalid I/O Command Set");
    /// Connect: the record format (RECFMT) is not supported. Same code as
    /// [`Status::CONFLICTING_ATTRIBUTES`] of NVM commands.
    CONNECT_INCOMPATIBLE_FORMAT =
        (CommandSpecific, 0x80, "Connect Incompatible Format / Conflicting Attributes");
    /// Connect: the controller is busy (e.g. cannot accept another queue).
    CONNECT_CONTROLLER_BUSY =
        (CommandSpecific, 0x81, "Connect Controller Busy / Invalid Protection Information");
    /// Connect: a parameter is invalid; Dword 0 says which
    /// ([`connect_invalid_param_dw0`]).
    CONNECT_INVALID_PARAMETERS =
        (CommandSpecific, 0x82, "Connect Invalid Parameters / Attempted Write to Read Only Range");
    /// Connect: the host should re-read the discovery log page.
    CONNECT_RESTART_DISCOVERY =
        (CommandSpecific, 0x83, "Connect Restart Discovery / Command Size Limit Exceeded");
    /// Connect: the host is not allowed to reach this subsystem.
    CONNECT_INVALID_HOST = (CommandSpecific, 0x84, "Connect Invalid Host");
    /// Get Log Page of the discovery log: the log changed while being read.
    DISCOVERY_RESTART = (CommandSpecific, 0x90, "Discover Restart");
    /// The command requires in-band authentication first.
    AUTHENTICATION_REQUIRED = (CommandSpecific, 0x91, "Authentication Required");

    WRITE_FAULT = (MediaAndDataIntegrity, 0x80, "Write Fault");
    UNRECOVERED_READ_ERROR = (MediaAndDataIntegrity, 0x81, "Unrecovered Read Error");
    END_TO_END_GUARD_CHECK_ERROR = (MediaAndDataIntegrity, 0x82, "End-to-end Guard Check Error");
    END_TO_END_APPLICATION_TAG_CHECK_ERROR =
        (MediaAndDataIntegrity, 0x83, "End-to-end Application Tag Check Error");
    END_TO_END_REFERENCE_TAG_CHECK_ERROR =
        (MediaAndDataIntegrity, 0x84, "End-to-end Reference Tag Check Error");
    COMPARE_FAILURE = (MediaAndDataIntegrity, 0x85, "Compare Failure");
    ACCESS_DENIED = (MediaAndDataIntegrity, 0x86, "Access Denied");
    DEALLOCATED_OR_UNWRITTEN_LOGICAL_BLOCK =
        (MediaAndDataIntegrity, 0x87, "Deallocated or Unwritten Logical Block");

    INTERNAL_PATH_ERROR = (PathRelated, 0x00, "Internal Path Error");
    ASYMMETRIC_ACCESS_PERSISTENT_LOSS =
        (PathRelated, 0x01, "Asymmetric Access Persistent Loss");
    ASYMMETRIC_ACCESS_INACCESSIBLE = (PathRelated, 0x02, "Asymmetric Access Inaccessible");
    ASYMMETRIC_ACCESS_TRANSITION = (PathRelated, 0x03, "Asymmetric Access Transition");
    CONTROLLER_PATHING_ERROR = (PathRelated, 0x60, "Controller Pathing Error");
    HOST_PATHING_ERROR = (PathRelated, 0x70, "Host Pathing Error");
    COMMAND_ABORTED_BY_HOST = (PathRelated, 0x71, "Command Aborted By Host");
}

impl Status {
    /// NVM command set name of command-specific code 80h (NVM Command Set 1.0, 3.3.3.1).
    pub const CONFLICTING_ATTRIBUTES: Status = Status::new(Sct::CommandSpecific, 0x80);
    /// NVM command set name of command-specific code 81h.
    pub const INVALID_PROTECTION_INFORMATION: Status = Status::new(Sct::CommandSpecific, 0x81);
    /// NVM command set name of command-specific code 82h.
    pub const ATTEMPTED_WRITE_TO_READ_ONLY_RANGE: Status = Status::new(Sct::CommandSpecific, 0x82);
    /// NVM command set name of command-specific code 83h.
    pub const COMMAND_SIZE_LIMIT_EXCEEDED: Status = Status::new(Sct::CommandSpecific, 0x83);
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({:?} sc={:#04x}", self.sct(), self.sc())?;
        if let Some(name) = self.name() {
            write!(f, " \"{name}\"")?;
        }
        self.fmt_flags(f)?;
        f.write_str(")")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name)?,
            None => f.write_str("Unknown Status")?,
        }
        write!(f, " (sct {:#x}, sc {:#04x}", self.sct() as u8, self.sc())?;
        self.fmt_flags(f)?;
        f.write_str(")")
    }
}

impl Status {
    fn fmt_flags(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.crd() != 0 {
            write!(f, ", crd {}", self.crd())?;
        }
        if self.more() {
            f.write_str(", more")?;
        }
        if self.dnr() {
            f.write_str(", dnr")?;
        }
        Ok(())
    }
}

/// AUTHREQ bit of a successful Connect response: authentication transaction
/// required (NVMe Base 2.0, 6.3 Figure 381; Dword 0 bit 17).
pub const AUTHREQ_ATR: u16 = 1 << 1;
/// AUTHREQ bit of a successful Connect response: secure channel required
/// (Dword 0 bit 18).
pub const AUTHREQ_ASCR: u16 = 1 << 2;

/// Dword 0 of a successful Connect response: CNTLID in bits 15:0 and AUTHREQ
/// in bits 31:16 (NVMe Base 2.0, 6.3 Figure 381). For an I/O queue CNTLID is
/// reserved; pass the admin queue's controller id or 0.
pub const fn connect_success_dw0(cntlid: u16, authreq: u16) -> u32 {
    cntlid as u32 | (authreq as u32) << 16
}

/// CNTLID from Dword 0 of a successful Connect response.
pub const fn connect_dw0_cntlid(dw0: u32) -> u16 {
    dw0 as u16
}

/// AUTHREQ from Dword 0 of a successful Connect response.
pub const fn connect_dw0_authreq(dw0: u32) -> u16 {
    (dw0 >> 16) as u16
}

/// Dword 0 of a Connect response with [`Status::CONNECT_INVALID_PARAMETERS`]:
/// IPO (bits 15:0) is the byte offset of the invalid field, IATTR (bits 23:16)
/// says where it is: bit 0 clear for the submission queue entry, set for the
/// Connect data (NVMe Base 2.0, 6.3 Figure 382). Offsets are in
/// [`crate::nvme::sqe::fabrics_offsets`].
pub const fn connect_invalid_param_dw0(in_data: bool, offset: u16) -> u32 {
    offset as u32 | (in_data as u32) << 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_layout_matches_the_specification() {
        // INVALID_FIELD with DNR: SCT 0, SC 02h, bit 14.
        assert_eq!(Status::INVALID_FIELD.with_dnr().field(), 0x4002);
        // Connect Invalid Parameters: SCT 1, SC 82h.
        assert_eq!(Status::CONNECT_INVALID_PARAMETERS.field(), 0x0182);
        // Media: Unrecovered Read Error, SCT 2, SC 81h.
        assert_eq!(Status::UNRECOVERED_READ_ERROR.field(), 0x0281);
        assert_eq!(Status::HOST_PATHING_ERROR.field(), 0x0370);
        assert_eq!(Status::SUCCESS.with_more().field(), 0x2000);
        assert_eq!(Status::SUCCESS.with_crd(3).field(), 0x1800);
    }

    #[test]
    fn accessors_read_back_what_was_built() {
        let s = Status::new(Sct::MediaAndDataIntegrity, 0x85).with_crd(2).with_dnr();
        assert_eq!(s.sct(), Sct::MediaAndDataIntegrity);
        assert_eq!(s.sc(), 0x85);
        assert_eq!(s.crd(), 2);
        assert!(s.dnr());
        assert!(!s.more());
        assert_eq!(s.code(), Status::COMPARE_FAILURE);
        assert!(!s.is_success());
        assert!(Status::SUCCESS.with_dnr().is_success());
    }

    #[test]
    fn every_field_value_round_trips() {
        for field in 0..=0x7FFFu16 {
            let s = Status::from_field(field);
            assert_eq!(s.field(), field);
            let rebuilt = Status::new(s.sct(), s.sc()).with_crd(s.crd());
            let rebuilt = if s.more() { rebuilt.with_more() } else { rebuilt };
            let rebuilt = if s.dnr() { rebuilt.with_dnr() } else { rebuilt };
            assert_eq!(rebuilt, s);
        }
        assert_eq!(Status::from_field(0xFFFF).field(), 0x7FFF);
    }

    #[test]
    fn names_are_unique_per_code() {
        for (i, (a, _)) in NAMES.iter().enumerate() {
            for (b, _) in &NAMES[i + 1..] {
                assert_ne!(a, b, "{a:?} named twice");
            }
        }
        assert_eq!(Status::LBA_OUT_OF_RANGE.with_dnr().name(), Some("LBA Out of Range"));
        assert_eq!(Status::new(Sct::VendorSpecific, 0x42).name(), None);
    }

    #[test]
    fn display_and_debug_name_the_status() {
        let s = Status::INVALID_FIELD.with_dnr();
        assert_eq!(s.to_string(), "Invalid Field in Command (sct 0x0, sc 0x02, dnr)");
        assert_eq!(format!("{s:?}"), "Status(Generic sc=0x02 \"Invalid Field in Command\", dnr)");
    }

    #[test]
    fn connect_dw0_golden_values() {
        assert_eq!(connect_success_dw0(0x0001, 0), 0x0000_0001);
        assert_eq!(connect_success_dw0(0x1234, AUTHREQ_ATR), 0x0002_1234);
        assert_eq!(connect_success_dw0(7, AUTHREQ_ASCR), 0x0004_0007);
        assert_eq!(connect_dw0_cntlid(0x0002_1234), 0x1234);
        assert_eq!(connect_dw0_authreq(0x0002_1234), AUTHREQ_ATR);
        // Host NQN at byte 512 of the Connect data.
        assert_eq!(connect_invalid_param_dw0(true, 512), 0x0001_0200);
        // QID at byte 42 of the SQE.
        assert_eq!(connect_invalid_param_dw0(false, 42), 0x0000_002A);
    }
}
