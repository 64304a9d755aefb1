//! Command opcodes: admin (NVMe Base 2.0, 5 Figure 138), I/O of the NVM command
//! set (NVM Command Set 1.0, 3 Figure 18 and NVMe Base 2.0, 7 Figure 410), and the
//! fabrics command types (NVMe Base 2.0, 6 Figure 367).
//!
//! Invariants: each enum lists only codes the specification defines; anything
//! else fails `TryFrom<u8>` with an error carrying the byte. Opcode 7Fh is a
//! fabrics command on any queue, so a dispatcher checks
//! [`crate::nvme::Sqe::is_fabrics`] before it looks up an admin or I/O opcode.

use super::wire::u8_enum;

/// The opcode of every fabrics command; the command type is in byte 4 (FCTYPE).
pub const FABRICS_OPCODE: u8 = 0x7F;

u8_enum! {
    /// Admin command opcodes (NVMe Base 2.0, 5 Figure 138).
    pub enum AdminOpcode ("admin opcode") {
        DeleteIoSq = 0x00 => "Delete I/O Submission Queue",
        CreateIoSq = 0x01 => "Create I/O Submission Queue",
        GetLogPage = 0x02 => "Get Log Page",
        DeleteIoCq = 0x04 => "Delete I/O Completion Queue",
        CreateIoCq = 0x05 => "Create I/O Completion Queue",
        Identify = 0x06 => "Identify",
        Abort = 0x08 => "Abort",
        SetFeatures = 0x09 => "Set Features",
        GetFeatures = 0x0A => "Get Features",
        AsyncEventRequest = 0x0C => "Asynchronous Event Request",
        NamespaceManagement = 0x0D => "Namespace Management",
        FirmwareCommit = 0x10 => "Firmware Commit",
        FirmwareDownload = 0x11 => "Firmware Image Download",
        DeviceSelfTest = 0x14 => "Device Self-test",
        NamespaceAttachment = 0x15 => "Namespace Attachment",
        KeepAlive = 0x18 => "Keep Alive",
        DirectiveSend = 0x19 => "Directive Send",
        DirectiveReceive = 0x1A => "Directive Receive",
        VirtualizationManagement = 0x1C => "Virtualization Management",
        NvmeMiSend = 0x1D => "NVMe-MI Send",
        NvmeMiReceive = 0x1E => "NVMe-MI Receive",
        DoorbellBufferConfig = 0x7C => "Doorbell Buffer Config",
        Fabrics = 0x7F => "Fabrics Commands",
        FormatNvm = 0x80 => "Format NVM",
        SecuritySend = 0x81 => "Security Send",
        SecurityReceive = 0x82 => "Security Receive",
        Sanitize = 0x84 => "Sanitize",
        GetLbaStatus = 0x86 => "Get LBA Status",
    }
}

u8_enum! {
    /// I/O command opcodes of the NVM command set (NVM Command Set 1.0,
    /// 3 Figure 18; reservation commands NVMe Base 2.0, 7 Figure 410), plus the
    /// zoned namespace ones a host may send.
    pub enum IoOpcode ("I/O opcode") {
        Flush = 0x00 => "Flush",
        Write = 0x01 => "Write",
        Read = 0x02 => "Read",
        WriteUncorrectable = 0x04 => "Write Uncorrectable",
        Compare = 0x05 => "Compare",
        WriteZeroes = 0x08 => "Write Zeroes",
        DatasetManagement = 0x09 => "Dataset Management",
        Verify = 0x0C => "Verify",
        ReservationRegister = 0x0D => "Reservation Register",
        ReservationReport = 0x0E => "Reservation Report",
        ReservationAcquire = 0x11 => "Reservation Acquire",
        ReservationRelease = 0x15 => "Reservation Release",
        Copy = 0x19 => "Copy",
        ZoneManagementSend = 0x79 => "Zone Management Send",
        ZoneManagementReceive = 0x7A => "Zone Management Receive",
        ZoneAppend = 0x7D => "Zone Append",
    }
}

u8_enum! {
    /// Fabrics command types, byte 4 (FCTYPE) of a command with opcode 7Fh
    /// (NVMe Base 2.0, 6 Figure 367).
    pub enum FabricsType ("fabrics command type") {
        PropertySet = 0x00 => "Property Set",
        Connect = 0x01 => "Connect",
        PropertyGet = 0x04 => "Property Get",
        AuthenticationSend = 0x05 => "Authentication Send",
        AuthenticationReceive = 0x06 => "Authentication Receive",
        Disconnect = 0x08 => "Disconnect",
    }
}

/// Data transfer direction of an opcode: bits 1:0 of every opcode
/// (NVMe Base 2.0, 5 Figure 138 note; for fabrics commands, of FCTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirection {
    None,
    HostToController,
    ControllerToHost,
    Bidirectional,
}

impl DataDirection {
    /// The direction encoded in bits 1:0 of an opcode or fabrics command type.
    pub const fn of(code: u8) -> DataDirection {
        match code & 3 {
            0 => DataDirection::None,
            1 => DataDirection::HostToController,
            2 => DataDirection::ControllerToHost,
            _ => DataDirection::Bidirectional,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::wire::WireError;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + PartialEq + std::fmt::Debug + TryFrom<u8, Error = WireError> + Into<u8>,
    {
        for &op in all {
            assert_eq!(T::try_from(op.into()), Ok(op));
        }
        let known = all.iter().map(|&o| o.into()).collect::<Vec<u8>>();
        for byte in 0..=255u8 {
            if !known.contains(&byte) {
                assert!(matches!(T::try_from(byte), Err(WireError::Unknown { value, .. }) if value == byte));
            }
        }
    }

    #[test]
    fn every_code_round_trips_and_unknown_bytes_are_carried() {
        round_trips(AdminOpcode::ALL);
        round_trips(IoOpcode::ALL);
        round_trips(FabricsType::ALL);
    }

    #[test]
    fn golden_values() {
        assert_eq!(AdminOpcode::GetLogPage as u8, 0x02);
        assert_eq!(AdminOpcode::Identify as u8, 0x06);
        assert_eq!(AdminOpcode::KeepAlive as u8, 0x18);
        assert_eq!(AdminOpcode::Fabrics as u8, FABRICS_OPCODE);
        assert_eq!(IoOpcode::Verify as u8, 0x0C);
        assert_eq!(IoOpcode::ReservationRelease as u8, 0x15);
        assert_eq!(FabricsType::Disconnect as u8, 0x08);
        assert_eq!(AdminOpcode::GetLogPage.to_string(), "Get Log Page (0x02)");
    }

    #[test]
    fn direction_follows_the_low_bits() {
        assert_eq!(DataDirection::of(IoOpcode::Write as u8), DataDirection::HostToController);
        assert_eq!(DataDirection::of(IoOpcode::Read as u8), DataDirection::ControllerToHost);
        assert_eq!(DataDirection::of(IoOpcode::Flush as u8), DataDirection::None);
        assert_eq!(DataDirection::of(FabricsType::Connect as u8), DataDirection::HostToController);
        assert_eq!(DataDirection::of(FabricsType::PropertyGet as u8), DataDirection::None);
    }
}
