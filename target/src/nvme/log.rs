//! Log pages (NVMe Base 2.0, 5.16.1): identifiers, the Error Information,
//! SMART / Health Information, Firmware Slot Information, Changed Namespace
//! List and Commands Supported and Effects pages, and the helper that serves
//! a Get Log Page window of an encoded page.
//!
//! Invariants: every page encodes into a buffer the caller zeroed, asserting
//! its length (a short output buffer is a caller bug); decoders check the
//! length and return [`WireError`]. Multi-byte counters are little endian,
//! the 128-bit ones included.

use super::status::Status;
use super::wire::{
    WireError, assert_out_len, check_len, get_array, get_u16, get_u32, get_u64, get_u128, put_bytes, put_u16, put_u32,
    put_u64, put_u128,
};

/// Log page identifiers (NVMe Base 2.0, 5.16 Figure 202).
pub mod lid {
    pub const SUPPORTED_LOG_PAGES: u8 = 0x00;
    pub const ERROR_INFORMATION: u8 = 0x01;
    pub const SMART_HEALTH: u8 = 0x02;
    pub const FIRMWARE_SLOT: u8 = 0x03;
    pub const CHANGED_NAMESPACE_LIST: u8 = 0x04;
    pub const COMMANDS_SUPPORTED_AND_EFFECTS: u8 = 0x05;
    pub const DEVICE_SELF_TEST: u8 = 0x06;
    pub const TELEMETRY_HOST_INITIATED: u8 = 0x07;
    pub const TELEMETRY_CONTROLLER_INITIATED: u8 = 0x08;
    pub const ENDURANCE_GROUP_INFORMATION: u8 = 0x09;
    pub const ASYMMETRIC_NAMESPACE_ACCESS: u8 = 0x0C;
    pub const FEATURE_IDENTIFIERS_SUPPORTED_AND_EFFECTS: u8 = 0x12;
    /// Discovery log page, served by discovery controllers (see
    /// [`crate::nvme::discovery`]).
    pub const DISCOVERY: u8 = 0x70;
    pub const RESERVATION_NOTIFICATION: u8 = 0x80;
    pub const SANITIZE_STATUS: u8 = 0x81;
}

/// Copies the window `[offset, offset + out.len())` of an encoded log page
/// into `out`, as Get Log Page returns it, and returns how many bytes came
/// from the page; the rest of `out` is zero-filled (reading past the end of a
/// page returns zeroes).
///
/// Returns `None` when `offset` lies past the end of the page: the controller
/// then fails the command with Invalid Field in Command (NVMe Base 2.0, 5.16).
pub fn copy_window(page: &[u8], offset: u64, out: &mut [u8]) -> Option<usize> {
    let start = usize::try_from(offset).ok().filter(|&s| s <= page.len())?;
    let n = out.len().min(page.len() - start);
    out[..n].copy_from_slice(&page[start..start + n]);
    out[n..].fill(0);
    Some(n)
}

/// Parameter error location "no specific field" (NVMe Base 2.0, 5.16.1.2 Figure 205).
pub const PARAMETER_ERROR_LOCATION_NONE: u16 = 0xFFFF;

/// The parameter error location of byte `byte` (0..=63 of the SQE), bit `bit`.
pub const fn parameter_error_location(byte: u8, bit: u8) -> u16 {
    byte as u16 | ((bit & 7) as u16) << 8
}

/// One Error Information log entry, 64 bytes (NVMe Base 2.0, 5.16.1.2 Figure 205).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorInformationEntry {
    /// Unique, increasing error count; 0 marks an empty entry.
    pub error_count: u64,
    /// Submission queue of the failed command (FFFFh if not specific).
    pub sqid: u16,
    /// Command identifier (FFFFh if not specific).
    pub cid: u16,
    /// Status of the completion, stored as the CQE's halfword: bits 15:1 status,
    /// bit 0 the phase tag (`phase`).
    pub status: Status,
    pub phase: bool,
    /// Byte (7:0) and bit (10:8) of the command the error is about
    /// ([`parameter_error_location`], [`PARAMETER_ERROR_LOCATION_NONE`]).
    pub parameter_error_location: u16,
    pub lba: u64,
    pub nsid: u32,
    pub vendor_specific: u8,
    /// Transport type of the command (discovery TRTYPE values).
    pub trtype: u8,
    pub command_specific: u64,
    pub transport_type_specific: u16,
}

const _: () = assert!(ErrorInformationEntry::SIZE == 64);

impl ErrorInformationEntry {
    /// Size of an entry in bytes.
    pub const SIZE: usize = 64;

    /// Writes the entry into the first 64 bytes of `out`, which the caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 64 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "ErrorInformationEntry");
        put_u64(out, 0, self.error_count);
        put_u16(out, 8, self.sqid);
        put_u16(out, 10, self.cid);
        put_u16(out, 12, self.status.field() << 1 | self.phase as u16);
        put_u16(out, 14, self.parameter_error_location);
        put_u64(out, 16, self.lba);
        put_u32(out, 24, self.nsid);
        out[28] = self.vendor_specific;
        out[29] = self.trtype;
        put_u64(out, 32, self.command_specific);
        put_u16(out, 40, self.transport_type_specific);
    }

    /// Reads an entry.
    pub fn decode(b: &[u8]) -> Result<ErrorInformationEntry, WireError> {
        check_len(b, Self::SIZE)?;
        let status = get_u16(b, 12);
        Ok(ErrorInformationEntry {
            error_count: get_u64(b, 0),
            sqid: get_u16(b, 8),
            cid: get_u16(b, 10),
            status: Status::from_field(status >> 1),
            phase: status & 1 != 0,
            parameter_error_location: get_u16(b, 14),
            lba: get_u64(b, 16),
            nsid: get_u32(b, 24),
            vendor_specific: b[28],
            trtype: b[29],
            command_specific: get_u64(b, 32),
            transport_type_specific: get_u16(b, 40),
        })
    }
}

/// Critical warning bits of the SMART / Health log.
pub const CRITICAL_WARNING_SPARE: u8 = 1 << 0;
pub const CRITICAL_WARNING_TEMPERATURE: u8 = 1 << 1;
pub const CRITICAL_WARNING_RELIABILITY: u8 = 1 << 2;
pub const CRITICAL_WARNING_READ_ONLY: u8 = 1 << 3;
pub const CRITICAL_WARNING_VOLATILE_BACKUP: u8 = 1 << 4;
pub const CRITICAL_WARNING_PMR_READ_ONLY: u8 = 1 << 5;

/// Data units of the SMART log for `bytes` bytes: thousands of 512-byte
/// units, rounded up (NVMe Base 2.0, 5.16.1.3 Figure 207).
pub const fn data_units(bytes: u128) -> u128 {
    bytes.div_ceil(512 * 1000)
}

/// SMART / Health Information log, 512 bytes (NVMe Base 2.0, 5.16.1.3 Figure 207).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmartLog {
    pub critical_warning: u8,
    /// Composite temperature, kelvin.
    pub composite_temperature_k: u16,
    /// Available spare, percent.
    pub available_spare_pct: u8,
    pub available_spare_threshold_pct: u8,
    pub percentage_used: u8,
    pub endurance_group_critical_warning_summary: u8,
    /// See [`data_units`].
    pub data_units_read: u128,
    pub data_units_written: u128,
    pub host_read_commands: u128,
    pub host_write_commands: u128,
    pub controller_busy_time_min: u128,
    pub power_cycles: u128,
    pub power_on_hours: u128,
    pub unsafe_shutdowns: u128,
    pub media_errors: u128,
    pub error_log_entries: u128,
    pub warning_temperature_time_min: u32,
    pub critical_temperature_time_min: u32,
    /// Temperature sensors 1..8, kelvin (0: not implemented).
    pub temperature_sensors_k: [u16; 8],
    pub thermal_transitions: [u32; 2],
    pub thermal_time_s: [u32; 2],
}

const _: () = assert!(SmartLog::SIZE == 512);

impl SmartLog {
    /// Size of the page in bytes.
    pub const SIZE: usize = 512;

    fn counters(&self) -> [u128; 10] {
        [
            self.data_units_read,
            self.data_units_written,
            self.host_read_commands,
            self.host_write_commands,
            self.controller_busy_time_min,
            self.power_cycles,
            self.power_on_hours,
            self.unsafe_shutdowns,
            self.media_errors,
            self.error_log_entries,
        ]
    }

    /// Writes the page into the first 512 bytes of `out`, which the caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 512 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "SmartLog");
        out[0] = self.critical_warning;
        put_u16(out, 1, self.composite_temperature_k);
        put_bytes(
            out,
            3,
            &[
                self.available_spare_pct,
                self.available_spare_threshold_pct,
                self.percentage_used,
                self.endurance_group_critical_warning_summary,
            ],
        );
        for (i, c) in self.counters().into_iter().enumerate() {
            put_u128(out, 32 + 16 * i, c);
        }
        put_u32(out, 192, self.warning_temperature_time_min);
        put_u32(out, 196, self.critical_temperature_time_min);
        for (i, t) in self.temperature_sensors_k.into_iter().enumerate() {
            put_u16(out, 200 + 2 * i, t);
        }
        let thermal = [self.thermal_transitions, self.thermal_time_s].concat();
        for (i, v) in thermal.into_iter().enumerate() {
            put_u32(out, 216 + 4 * i, v);
        }
    }

    /// Reads the page.
    pub fn decode(b: &[u8]) -> Result<SmartLog, WireError> {
        check_len(b, Self::SIZE)?;
        let c = |i: usize| get_u128(b, 32 + 16 * i);
        let t = |i: usize| get_u32(b, 216 + 4 * i);
        Ok(SmartLog {
            critical_warning: b[0],
            composite_temperature_k: get_u16(b, 1),
            available_spare_pct: b[3],
            available_spare_threshold_pct: b[4],
            percentage_used: b[5],
            endurance_group_critical_warning_summary: b[6],
            data_units_read: c(0),
            data_units_written: c(1),
            host_read_commands: c(2),
            host_write_commands: c(3),
            controller_busy_time_min: c(4),
            power_cycles: c(5),
            power_on_hours: c(6),
            unsafe_shutdowns: c(7),
            media_errors: c(8),
            error_log_entries: c(9),
            warning_temperature_time_min: get_u32(b, 192),
            critical_temperature_time_min: get_u32(b, 196),
            temperature_sensors_k: std::array::from_fn(|i| get_u16(b, 200 + 2 * i)),
            thermal_transitions: [t(0), t(1)],
            thermal_time_s: [t(2), t(3)],
        })
    }
}

/// Firmware Slot Information log, 512 bytes (NVMe Base 2.0, 5.16.1.4 Figure 208).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FirmwareSlotLog {
    /// Active firmware info: active slot (bits 2:0), slot active after the
    /// next reset (bits 6:4).
    pub afi: u8,
    /// Firmware revisions of slots 1..7, ASCII padded with spaces (all zero
    /// for an empty slot).
    pub frs: [[u8; 8]; 7],
}

const _: () = assert!(FirmwareSlotLog::SIZE == 512);

impl FirmwareSlotLog {
    /// Size of the page in bytes.
    pub const SIZE: usize = 512;

    /// Writes the page into the first 512 bytes of `out`, which the caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 512 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "FirmwareSlotLog");
        out[0] = self.afi;
        for (i, slot) in self.frs.iter().enumerate() {
            put_bytes(out, 8 + 8 * i, slot);
        }
    }

    /// Reads the page.
    pub fn decode(b: &[u8]) -> Result<FirmwareSlotLog, WireError> {
        check_len(b, Self::SIZE)?;
        Ok(FirmwareSlotLog { afi: b[0], frs: std::array::from_fn(|i| get_array(b, 8 + 8 * i)) })
    }
}

/// Entries of the Changed Namespace List log (NVMe Base 2.0, 5.16.1.5).
pub const CHANGED_NS_LIST_MAX: usize = 1024;
/// Size of the Changed Namespace List log in bytes.
pub const CHANGED_NS_LIST_SIZE: usize = 4096;
/// First entry meaning "more than 1024 namespaces changed".
pub const CHANGED_NS_OVERFLOW: u32 = 0xFFFF_FFFF;

/// What a Changed Namespace List log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangedNamespaces {
    /// These namespaces changed, ascending.
    List(Vec<u32>),
    /// More than 1024 changed: the host rescans them all.
    Overflow,
}

/// Writes the Changed Namespace List log into the first 4096 bytes of `out`,
/// which the caller zeroed: `nsids` if they fit 1024 entries, else the
/// overflow marker.
///
/// # Panics
/// When `out` is shorter than 4096 bytes.
pub fn encode_changed_ns_list(nsids: &[u32], out: &mut [u8]) {
    assert_out_len(out, CHANGED_NS_LIST_SIZE, "changed namespace list");
    if nsids.len() > CHANGED_NS_LIST_MAX {
        put_u32(out, 0, CHANGED_NS_OVERFLOW);
        return;
    }
    for (i, n) in nsids.iter().enumerate() {
        put_u32(out, 4 * i, *n);
    }
}

/// Reads a Changed Namespace List log.
pub fn decode_changed_ns_list(b: &[u8]) -> Result<ChangedNamespaces, WireError> {
    check_len(b, CHANGED_NS_LIST_SIZE)?;
    if get_u32(b, 0) == CHANGED_NS_OVERFLOW {
        return Ok(ChangedNamespaces::Overflow);
    }
    let ids = b[..CHANGED_NS_LIST_SIZE].chunks_exact(4).map(|c| get_u32(c, 0));
    Ok(ChangedNamespaces::List(ids.take_while(|&n| n != 0).collect()))
}

/// Commands Supported and Effects bits (NVMe Base 2.0, 5.16.1.6 Figure 211).
/// CSUPP: the command is supported.
pub const EFFECTS_CSUPP: u32 = 1 << 0;
/// LBCC: the command may change logical block content.
pub const EFFECTS_LBCC: u32 = 1 << 1;
/// NCC: the command may change namespace capabilities.
pub const EFFECTS_NCC: u32 = 1 << 2;
/// NIC: the command may change the namespace inventory.
pub const EFFECTS_NIC: u32 = 1 << 3;
/// CCC: the command may change controller capabilities.
pub const EFFECTS_CCC: u32 = 1 << 4;
/// CSE, bits 18:16: command submission and execution restrictions.
pub const EFFECTS_CSE_SHIFT: u32 = 16;
/// CSE value: no other command for the same namespace may run concurrently.
pub const EFFECTS_CSE_SAME_NAMESPACE: u32 = 1 << EFFECTS_CSE_SHIFT;
/// CSE value: no other command may run concurrently.
pub const EFFECTS_CSE_ANY: u32 = 2 << EFFECTS_CSE_SHIFT;
/// UUID selection supported.
pub const EFFECTS_UUID_SELECTION: u32 = 1 << 19;

/// Commands Supported and Effects log, 4096 bytes (NVMe Base 2.0, 5.16.1.6
/// Figure 210): one dword per admin opcode, then one per I/O opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandsEffectsLog {
    pub admin: [u32; 256],
    pub io: [u32; 256],
}

impl Default for CommandsEffectsLog {
    fn default() -> CommandsEffectsLog {
        CommandsEffectsLog { admin: [0; 256], io: [0; 256] }
    }
}

const _: () = assert!(CommandsEffectsLog::SIZE == 4096);

impl CommandsEffectsLog {
    /// Size of the page in bytes.
    pub const SIZE: usize = 4096;
    const IO_OFFSET: usize = 1024;

    /// Writes the page into the first 4096 bytes of `out`, which the caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 4096 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "CommandsEffectsLog");
        for (i, e) in self.admin.iter().enumerate() {
            put_u32(out, 4 * i, *e);
        }
        for (i, e) in self.io.iter().enumerate() {
            put_u32(out, Self::IO_OFFSET + 4 * i, *e);
        }
    }

    /// Reads the page.
    pub fn decode(b: &[u8]) -> Result<CommandsEffectsLog, WireError> {
        check_len(b, Self::SIZE)?;
        Ok(CommandsEffectsLog {
            admin: std::array::from_fn(|i| get_u32(b, 4 * i)),
            io: std::array::from_fn(|i| get_u32(b, Self::IO_OFFSET + 4 * i)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::opcode::{AdminOpcode, IoOpcode};
    use crate::nvme::wire::ascii_padded;
    use proptest::prelude::*;

    #[test]
    fn window_copies_and_zero_fills() {
        let page: Vec<u8> = (0..100).collect();
        let mut out = [0xAAu8; 8];
        assert_eq!(copy_window(&page, 96, &mut out), Some(4));
        assert_eq!(out, [96, 97, 98, 99, 0, 0, 0, 0]);
        assert_eq!(copy_window(&page, 0, &mut out), Some(8));
        assert_eq!(out, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(copy_window(&page, 100, &mut out), Some(0));
        assert_eq!(out, [0; 8]);
        assert_eq!(copy_window(&page, 101, &mut out), None);
        assert_eq!(copy_window(&page, u64::MAX, &mut out), None);
    }

    #[test]
    fn error_entry_golden() {
        let e = ErrorInformationEntry {
            error_count: 2,
            sqid: 1,
            cid: 0x0A0B,
            status: Status::INVALID_FIELD.with_dnr(),
            phase: true,
            parameter_error_location: parameter_error_location(44, 0),
            lba: 0x10,
            nsid: 1,
            vendor_specific: 0,
            trtype: 3,
            command_specific: 0x55,
            transport_type_specific: 0x66,
        };
        let mut b = [0u8; 64];
        e.encode(&mut b);
        assert_eq!(&b[..16], &[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x0B, 0x0A, 0x05, 0x80, 44, 0]);
        assert_eq!(&b[16..32], &[0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 3, 0, 0]);
        assert_eq!(&b[32..42], &[0x55, 0, 0, 0, 0, 0, 0, 0, 0x66, 0]);
        assert!(b[42..].iter().all(|&x| x == 0));
        assert_eq!(ErrorInformationEntry::decode(&b), Ok(e));
        assert_eq!(parameter_error_location(12, 7), 0x070C);
    }

    #[test]
    fn smart_golden() {
        let s = SmartLog {
            critical_warning: CRITICAL_WARNING_READ_ONLY,
            composite_temperature_k: 310,
            available_spare_pct: 100,
            available_spare_threshold_pct: 10,
            percentage_used: 1,
            data_units_read: data_units(512_001),
            data_units_written: 0x1_0000_0000_0000_0000,
            power_on_hours: 7,
            temperature_sensors_k: [300, 0, 0, 0, 0, 0, 0, 301],
            thermal_time_s: [0, 9],
            ..Default::default()
        };
        let mut b = [0u8; 512];
        s.encode(&mut b);
        assert_eq!(&b[..7], &[0x08, 0x36, 0x01, 100, 10, 1, 0]);
        assert_eq!(&b[32..34], &[2, 0]);
        assert_eq!(&b[48..64], &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[128..130], &[7, 0]);
        assert_eq!(&b[200..202], &300u16.to_le_bytes());
        assert_eq!(&b[214..216], &301u16.to_le_bytes());
        assert_eq!(&b[228..232], &9u32.to_le_bytes());
        assert!(b[232..].iter().all(|&x| x == 0));
        assert_eq!(SmartLog::decode(&b), Ok(s));
        assert_eq!(data_units(0), 0);
        assert_eq!(data_units(512_000), 1);
    }

    #[test]
    fn firmware_slot_golden() {
        let mut fw = FirmwareSlotLog { afi: 0x01, ..Default::default() };
        fw.frs[0] = ascii_padded("0.1.0").unwrap();
        let mut b = [0u8; 512];
        fw.encode(&mut b);
        assert_eq!(b[0], 1);
        assert_eq!(&b[8..16], b"0.1.0   ");
        assert!(b[16..].iter().all(|&x| x == 0));
        assert_eq!(FirmwareSlotLog::decode(&b), Ok(fw));
    }

    #[test]
    fn changed_namespace_list() {
        let mut b = vec![0u8; 4096];
        encode_changed_ns_list(&[1, 5], &mut b);
        assert_eq!(&b[..12], &[1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_changed_ns_list(&b), Ok(ChangedNamespaces::List(vec![1, 5])));
        let many: Vec<u32> = (1..=1025).collect();
        let mut b = vec![0u8; 4096];
        encode_changed_ns_list(&many, &mut b);
        assert_eq!(&b[..8], &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
        assert_eq!(decode_changed_ns_list(&b), Ok(ChangedNamespaces::Overflow));
        let exactly: Vec<u32> = (1..=1024).collect();
        let mut b = vec![0u8; 4096];
        encode_changed_ns_list(&exactly, &mut b);
        assert_eq!(decode_changed_ns_list(&b), Ok(ChangedNamespaces::List(exactly)));
    }

    #[test]
    fn commands_effects_golden() {
        let mut log = CommandsEffectsLog::default();
        log.admin[AdminOpcode::Identify as usize] = EFFECTS_CSUPP;
        log.io[IoOpcode::Write as usize] = EFFECTS_CSUPP | EFFECTS_LBCC;
        log.io[IoOpcode::DatasetManagement as usize] = EFFECTS_CSUPP | EFFECTS_LBCC | EFFECTS_CSE_ANY;
        let mut b = vec![0u8; 4096];
        log.encode(&mut b);
        assert_eq!(&b[24..28], &[1, 0, 0, 0]);
        assert_eq!(&b[1028..1032], &[3, 0, 0, 0]);
        assert_eq!(&b[1060..1064], &[3, 0, 2, 0]);
        assert_eq!(CommandsEffectsLog::decode(&b), Ok(log));
    }

    proptest! {
        #[test]
        fn error_entry_round_trips(count: u64, sqid: u16, cid: u16, field in 0u16..0x8000, phase: bool,
                                   pel: u16, lba: u64, nsid: u32, vs: u8, trtype: u8, cs: u64, tts: u16) {
            let e = ErrorInformationEntry {
                error_count: count, sqid, cid, status: Status::from_field(field), phase,
                parameter_error_location: pel, lba, nsid, vendor_specific: vs, trtype,
                command_specific: cs, transport_type_specific: tts,
            };
            let mut b = [0u8; 64];
            e.encode(&mut b);
            prop_assert_eq!(ErrorInformationEntry::decode(&b), Ok(e));
        }

        #[test]
        fn smart_round_trips(head in any::<[u8; 5]>(), temp: u16, counters in any::<[u128; 10]>(),
                             times in any::<[u32; 2]>(), sensors in any::<[u16; 8]>(), thermal in any::<[u32; 4]>()) {
            let s = SmartLog {
                critical_warning: head[0], composite_temperature_k: temp, available_spare_pct: head[1],
                available_spare_threshold_pct: head[2], percentage_used: head[3],
                endurance_group_critical_warning_summary: head[4],
                data_units_read: counters[0], data_units_written: counters[1],
                host_read_commands: counters[2], host_write_commands: counters[3],
                controller_busy_time_min: counters[4], power_cycles: counters[5],
                power_on_hours: counters[6], unsafe_shutdowns: counters[7], media_errors: counters[8],
                error_log_entries: counters[9], warning_temperature_time_min: times[0],
                critical_temperature_time_min: times[1], temperature_sensors_k: sensors,
                thermal_transitions: [thermal[0], thermal[1]], thermal_time_s: [thermal[2], thermal[3]],
            };
            let mut b = [0u8; 512];
            s.encode(&mut b);
            prop_assert_eq!(SmartLog::decode(&b), Ok(s));
        }

        #[test]
        fn window_matches_slicing(len in 0usize..300, offset in 0u64..320, out_len in 0usize..64) {
            let page: Vec<u8> = (0..len).map(|i| i as u8 | 1).collect();
            let mut out = vec![0xEE; out_len];
            match copy_window(&page, offset, &mut out) {
                None => prop_assert!(offset as usize > len),
                Some(n) => {
                    let start = offset as usize;
                    prop_assert_eq!(n, out_len.min(len - start));
                    prop_assert_eq!(&out[..n], &page[start..start + n]);
                    prop_assert!(out[n..].iter().all(|&x| x == 0));
                }
            }
        }
    }
}
