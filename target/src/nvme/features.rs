//! Features (NVMe Base 2.0, 5.27.1 Figure 317): identifiers, the Get Features
//! select values and capability bits, the encodings of the features a fabrics
//! controller keeps (Number of Queues, Asynchronous Event Configuration, Keep
//! Alive Timer), and the Dword 0 of an Asynchronous Event Request completion
//! (NVMe Base 2.0, 5.2.1 Figure 146).
//!
//! Invariant: the typed encodings convert to and from their dword losslessly
//! for values whose reserved bits are clear.

use super::wire::WireError;

/// Feature identifiers (NVMe Base 2.0, 5.27.1 Figure 317).
pub mod fid {
    pub const ARBITRATION: u8 = 0x01;
    pub const POWER_MANAGEMENT: u8 = 0x02;
    pub const LBA_RANGE_TYPE: u8 = 0x03;
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    pub const ERROR_RECOVERY: u8 = 0x05;
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    pub const INTERRUPT_VECTOR_CONFIGURATION: u8 = 0x09;
    pub const WRITE_ATOMICITY: u8 = 0x0A;
    pub const ASYNC_EVENT_CONFIGURATION: u8 = 0x0B;
    pub const AUTONOMOUS_POWER_STATE_TRANSITION: u8 = 0x0C;
    pub const HOST_MEMORY_BUFFER: u8 = 0x0D;
    pub const TIMESTAMP: u8 = 0x0E;
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
    pub const HOST_CONTROLLED_THERMAL_MANAGEMENT: u8 = 0x10;
    pub const NON_OPERATIONAL_POWER_STATE_CONFIG: u8 = 0x11;
    pub const READ_RECOVERY_LEVEL_CONFIG: u8 = 0x12;
    pub const PREDICTABLE_LATENCY_MODE_CONFIG: u8 = 0x13;
    pub const PREDICTABLE_LATENCY_MODE_WINDOW: u8 = 0x14;
    pub const HOST_BEHAVIOR_SUPPORT: u8 = 0x16;
    pub const SANITIZE_CONFIG: u8 = 0x17;
    pub const ENDURANCE_GROUP_EVENT_CONFIGURATION: u8 = 0x18;
    pub const SOFTWARE_PROGRESS_MARKER: u8 = 0x80;
    pub const HOST_IDENTIFIER: u8 = 0x81;
    pub const RESERVATION_NOTIFICATION_MASK: u8 = 0x82;
    pub const RESERVATION_PERSISTENCE: u8 = 0x83;
    pub const NAMESPACE_WRITE_PROTECTION_CONFIG: u8 = 0x84;
}

/// Get Features select (SEL, CDW10 bits 10:8; NVMe Base 2.0, 5.15 Figure 193).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sel {
    Current = 0,
    Default = 1,
    Saved = 2,
    /// Dword 0 of the completion holds the capability bits ([`CAP_SAVEABLE`], ...).
    SupportedCapabilities = 3,
}

impl TryFrom<u8> for Sel {
    type Error = WireError;
    /// 100b..=111b are reserved; the error names CDW10 (byte 40), bits 10:8.
    fn try_from(v: u8) -> Result<Sel, WireError> {
        match v {
            0 => Ok(Sel::Current),
            1 => Ok(Sel::Default),
            2 => Ok(Sel::Saved),
            3 => Ok(Sel::SupportedCapabilities),
            value => Err(WireError::Reserved { offset: 41, value: value as u32 }),
        }
    }
}

/// Supported capabilities bit 0: the feature is saveable.
pub const CAP_SAVEABLE: u32 = 1 << 0;
/// Supported capabilities bit 1: the feature is namespace specific.
pub const CAP_NAMESPACE_SPECIFIC: u32 = 1 << 1;
/// Supported capabilities bit 2: the feature is changeable.
pub const CAP_CHANGEABLE: u32 = 1 << 2;

/// Number of Queues (FID 07h; NVMe Base 2.0, 5.27.1.5 Figures 322 and 323):
/// NSQR in bits 15:0 and NCQR in bits 31:16, both 0-based, in CDW11 of Set
/// Features and in Dword 0 of the completion (NSQA/NCQA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberOfQueues {
    /// I/O submission queues, 1..=65536 (65536, FFFFh on the wire, is invalid
    /// in a request).
    pub sq_count: u32,
    /// I/O completion queues, as `sq_count`.
    pub cq_count: u32,
}

impl NumberOfQueues {
    /// Reads the dword.
    pub const fn from_dword(dw: u32) -> NumberOfQueues {
        NumberOfQueues { sq_count: (dw & 0xFFFF) + 1, cq_count: (dw >> 16) + 1 }
    }

    /// The dword.
    ///
    /// # Panics
    /// When a count is not in 1..=65536.
    pub fn to_dword(self) -> u32 {
        let ok = |n: u32| (1..=0x1_0000).contains(&n);
        assert!(ok(self.sq_count) && ok(self.cq_count), "queue counts out of 1..=65536");
        (self.sq_count - 1) | (self.cq_count - 1) << 16
    }

    /// Whether a host request may hold these counts (FFFFh is invalid).
    pub fn is_valid_request(self) -> bool {
        self.sq_count < 0x1_0000 && self.cq_count < 0x1_0000
    }
}

/// Asynchronous Event Configuration bits (FID 0Bh; NVMe Base 2.0, 5.27.1.7
/// Figure 326). Bits 7:0: the SMART / Health critical warnings that raise events.
pub const AEC_SMART_MASK: u32 = 0xFF;
/// Namespace attribute notices (namespace added, removed, resized).
pub const AEC_NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
/// Firmware activation notices.
pub const AEC_FIRMWARE_ACTIVATION: u32 = 1 << 9;
/// Telemetry log notices.
pub const AEC_TELEMETRY_LOG: u32 = 1 << 10;
/// Asymmetric namespace access change notices.
pub const AEC_ANA_CHANGE: u32 = 1 << 11;
/// Predictable latency event aggregate log change notices.
pub const AEC_PREDICTABLE_LATENCY: u32 = 1 << 12;
/// LBA status information notices.
pub const AEC_LBA_STATUS: u32 = 1 << 13;
/// Endurance group event aggregate log change notices.
pub const AEC_ENDURANCE_GROUP: u32 = 1 << 14;
/// Discovery log page change notices (discovery controllers).
pub const AEC_DISCOVERY_LOG_CHANGE: u32 = 1 << 31;

/// Volatile Write Cache (FID 06h) CDW11 bit 0: write cache enabled.
pub const VWC_WCE: u32 = 1 << 0;
/// Host Identifier (FID 81h) CDW11 bit 0: the host identifier is 128 bits.
pub const HOST_ID_EXHID: u32 = 1 << 0;

/// Asynchronous event types (NVMe Base 2.0, 5.2.1 Figure 146).
pub const EVENT_TYPE_ERROR: u8 = 0;
pub const EVENT_TYPE_SMART_HEALTH: u8 = 1;
pub const EVENT_TYPE_NOTICE: u8 = 2;
pub const EVENT_TYPE_IO_COMMAND_SET: u8 = 6;
pub const EVENT_TYPE_VENDOR: u8 = 7;

/// Notice event information values (NVMe Base 2.0, 5.2.1 Figure 149).
pub const NOTICE_NAMESPACE_ATTRIBUTE_CHANGED: u8 = 0x00;
pub const NOTICE_FIRMWARE_ACTIVATION_STARTING: u8 = 0x01;
pub const NOTICE_TELEMETRY_LOG_CHANGED: u8 = 0x02;
pub const NOTICE_ANA_CHANGE: u8 = 0x03;
pub const NOTICE_DISCOVERY_LOG_CHANGE: u8 = 0xF0;

/// An asynchronous event, as Dword 0 of the Asynchronous Event Request
/// completion: type in bits 2:0, information in 15:8, the log page to read in
/// 23:16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncEvent {
    /// [`EVENT_TYPE_NOTICE`], ...; 3 bits.
    pub event_type: u8,
    /// Event information ([`NOTICE_NAMESPACE_ATTRIBUTE_CHANGED`], ...).
    pub info: u8,
    /// The log page the host reads to learn more and clear the event.
    pub log_page: u8,
}

impl AsyncEvent {
    /// Namespace attribute changed: read the Changed Namespace List log.
    pub const NAMESPACE_ATTRIBUTE_CHANGED: AsyncEvent = AsyncEvent {
        event_type: EVENT_TYPE_NOTICE,
        info: NOTICE_NAMESPACE_ATTRIBUTE_CHANGED,
        log_page: crate::nvme::log::lid::CHANGED_NAMESPACE_LIST,
    };

    /// Discovery log page changed: read the discovery log.
    pub const DISCOVERY_LOG_CHANGED: AsyncEvent = AsyncEvent {
        event_type: EVENT_TYPE_NOTICE,
        info: NOTICE_DISCOVERY_LOG_CHANGE,
        log_page: crate::nvme::log::lid::DISCOVERY,
    };

    /// Dword 0 of the completion.
    pub const fn to_dw0(self) -> u32 {
        (self.event_type & 7) as u32 | (self.info as u32) << 8 | (self.log_page as u32) << 16
    }

    /// Reads Dword 0 of the completion.
    pub const fn from_dw0(dw0: u32) -> AsyncEvent {
        AsyncEvent { event_type: (dw0 & 7) as u8, info: (dw0 >> 8) as u8, log_page: (dw0 >> 16) as u8 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn async_event_golden() {
        assert_eq!(AsyncEvent::DISCOVERY_LOG_CHANGED.to_dw0(), 0x0070_F002);
        assert_eq!(AsyncEvent::NAMESPACE_ATTRIBUTE_CHANGED.to_dw0(), 0x0004_0002);
        assert_eq!(AsyncEvent::from_dw0(0x0070_F002), AsyncEvent::DISCOVERY_LOG_CHANGED);
    }

    #[test]
    fn number_of_queues_golden() {
        let q = NumberOfQueues { sq_count: 8, cq_count: 4 };
        assert_eq!(q.to_dword(), 0x0003_0007);
        assert_eq!(NumberOfQueues::from_dword(0x0003_0007), q);
        assert!(!NumberOfQueues::from_dword(0xFFFF).is_valid_request());
        assert!(NumberOfQueues::from_dword(0xFFFE_FFFE).is_valid_request());
    }

    #[test]
    fn sel_values() {
        assert_eq!(Sel::try_from(3), Ok(Sel::SupportedCapabilities));
        assert!(Sel::try_from(4).is_err());
        assert_eq!(CAP_SAVEABLE | CAP_NAMESPACE_SPECIFIC | CAP_CHANGEABLE, 0b111);
    }

    #[test]
    fn feature_ids() {
        assert_eq!(fid::NUMBER_OF_QUEUES, 0x07);
        assert_eq!(fid::ASYNC_EVENT_CONFIGURATION, 0x0B);
        assert_eq!(fid::KEEP_ALIVE_TIMER, 0x0F);
        assert_eq!(fid::HOST_IDENTIFIER, 0x81);
        assert_eq!(AEC_NAMESPACE_ATTRIBUTE | AEC_DISCOVERY_LOG_CHANGE, 0x8000_0100);
    }

    proptest! {
        #[test]
        fn number_of_queues_round_trips(dw: u32) {
            prop_assert_eq!(NumberOfQueues::from_dword(dw).to_dword(), dw);
        }

        #[test]
        fn async_event_round_trips(t in 0u8..8, info: u8, log_page: u8) {
            let e = AsyncEvent { event_type: t, info, log_page };
            prop_assert_eq!(AsyncEvent::from_dw0(e.to_dw0()), e);
        }
    }
}
