//! Admin queue helpers on a [`Connection`]: enabling and shutting down the
//! controller through its properties, Identify, logs, features, keep-alive,
//! abort, asynchronous events, and reading the discovery log as nvme-cli
//! does.
//!
//! Helpers that return raw [`Completion`]s leave the status to the caller
//! (tests assert on error statuses); helpers that interpret data return
//! [`HostError::Status`] when the command fails.
//!
//! Invariants: every polling loop (CSTS.RDY, CSTS.SHST, the discovery log's
//! generation counter) has a bound, and a poll never spins without sleeping.

use std::thread;
use std::time::{Duration, Instant};

use fabriq_target::nvme::PropertySize;
use fabriq_target::nvme::discovery::{DiscoveryLogEntry, DiscoveryLogHeader};
use fabriq_target::nvme::features::NumberOfQueues;
use fabriq_target::nvme::identify::{
    IdentifyController, IdentifyNamespace, NamespaceId, cns, decode_ns_id_descriptors, decode_ns_list,
};
use fabriq_target::nvme::log::lid;
use fabriq_target::nvme::property::{
    self, CAP_CSS_IO_COMMAND_SETS, CC_CSS_ALL_IO, CC_CSS_NVM, Cap, Cc, Csts, ShutdownNotification, ShutdownStatus,
};
use fabriq_target::nvme::sqe::Features;

use super::command::Command;
use super::connection::{Completion, Connection};
use super::error::{HostError, Violation};

/// CC.IOSQES: 64-byte submission queue entries (2^6).
pub const IOSQES: u8 = 6;
/// CC.IOCQES: 16-byte completion queue entries (2^4).
pub const IOCQES: u8 = 4;
/// How often CSTS is polled.
const CSTS_POLL: Duration = Duration::from_millis(10);
/// Get Log Page transfer size of the discovery log reads, as nvme-cli
/// (`NVME_LOG_PAGE_PDU_SIZE`): 4 KiB avoids depending on MDTS.
pub const DISCOVERY_CHUNK_BYTES: usize = 4096;
/// How many times the discovery log is read before giving up on a
/// generation counter that keeps moving (nvme-cli's default).
pub const DISCOVERY_TRIES: u32 = 10;

/// The discovery log page, read consistently (one generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryLogPage {
    /// The generation counter the entries belong to.
    pub genctr: u64,
    /// The entries, NUMREC of them.
    pub entries: Vec<DiscoveryLogEntry>,
}

impl Connection {
    /// Property Get; returns the value (dw0, and dw1 for 8-byte properties).
    pub fn property_get(&mut self, offset: u32, size: PropertySize) -> Result<u64, HostError> {
        let completion = self.execute(Command::property_get(offset, size))?.success()?;
        Ok(completion.cqe.value_u64())
    }

    /// Property Set.
    pub fn property_set(&mut self, offset: u32, size: PropertySize, value: u64) -> Result<(), HostError> {
        self.execute(Command::property_set(offset, size, value))?.success().map(|_| ())
    }

    /// CSTS.
    pub fn csts(&mut self) -> Result<Csts, HostError> {
        let value = self.property_get(property::CSTS, PropertySize::Four)? as u32;
        Ok(Csts::from_u32(value)?)
    }

    /// Enables the controller as Linux does: reads CAP, writes CC with EN=1,
    /// IOSQES=6, IOCQES=4, 4 KiB pages, round robin, the command sets CAP
    /// offers, then polls CSTS.RDY for up to CAP.TO (or the connection's
    /// time-out if CAP.TO is 0).
    pub fn enable(&mut self) -> Result<(), HostError> {
        let cap = Cap::from_u64(self.property_get(property::CAP, PropertySize::Eight)?);
        let css = if cap.css & CAP_CSS_IO_COMMAND_SETS != 0 { CC_CSS_ALL_IO } else { CC_CSS_NVM };
        let cc = Cc {
            en: true,
            css,
            mps: 0,
            ams: 0,
            shn: ShutdownNotification::None,
            iosqes: IOSQES,
            iocqes: IOCQES,
            crime: false,
        };
        self.property_set(property::CC, PropertySize::Four, u64::from(cc.to_u32()))?;
        let timeout = match cap.to_500ms {
            0 => self.options().io_timeout,
            to => Duration::from_millis(500) * u32::from(to),
        };
        self.poll_csts(timeout, |csts| csts.rdy)
    }

    /// Clears CC.EN and polls CSTS.RDY down (a controller reset).
    pub fn disable(&mut self) -> Result<(), HostError> {
        let cc = self.cc()?;
        let cc = Cc { en: false, ..cc };
        self.property_set(property::CC, PropertySize::Four, u64::from(cc.to_u32()))?;
        let timeout = self.options().io_timeout;
        self.poll_csts(timeout, |csts| !csts.rdy)
    }

    /// Normal shutdown: CC.SHN = 01b, then polls CSTS.SHST for "complete".
    pub fn shutdown(&mut self) -> Result<(), HostError> {
        let cc = self.cc()?;
        let cc = Cc { shn: ShutdownNotification::Normal, ..cc };
        self.property_set(property::CC, PropertySize::Four, u64::from(cc.to_u32()))?;
        let timeout = self.options().io_timeout;
        self.poll_csts(timeout, |csts| csts.shst == ShutdownStatus::Complete)
    }

    fn cc(&mut self) -> Result<Cc, HostError> {
        let value = self.property_get(property::CC, PropertySize::Four)? as u32;
        Ok(Cc::from_u32(value)?)
    }

    fn poll_csts(&mut self, timeout: Duration, done: impl Fn(&Csts) -> bool) -> Result<(), HostError> {
        let deadline = Instant::now() + timeout;
        loop {
            let raw = self.property_get(property::CSTS, PropertySize::Four)? as u32;
            let csts = Csts::from_u32(raw)?;
            if csts.cfs {
                return Err(HostError::ControllerStatus { csts: raw });
            }
            if done(&csts) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HostError::ControllerStatus { csts: raw });
            }
            thread::sleep(CSTS_POLL);
        }
    }

    /// Identify with any CNS; the raw completion.
    pub fn identify(&mut self, cns: u8, nsid: u32, cntid: u16) -> Result<Completion, HostError> {
        self.execute(Command::identify(cns, nsid, cntid))
    }

    /// Identify Controller (CNS 01h).
    pub fn identify_controller(&mut self) -> Result<IdentifyController, HostError> {
        let completion = self.identify(cns::CONTROLLER, 0, 0)?.success()?;
        Ok(IdentifyController::decode(&completion.data)?)
    }

    /// Identify Namespace (CNS 00h) of `nsid`.
    pub fn identify_namespace(&mut self, nsid: u32) -> Result<IdentifyNamespace, HostError> {
        let completion = self.identify(cns::NAMESPACE, nsid, 0)?.success()?;
        Ok(IdentifyNamespace::decode(&completion.data)?)
    }

    /// Active Namespace ID list (CNS 02h): the active NSIDs greater than
    /// `from`, at most 1024 of them.
    pub fn active_namespaces(&mut self, from: u32) -> Result<Vec<u32>, HostError> {
        let completion = self.identify(cns::ACTIVE_NAMESPACE_LIST, from, 0)?.success()?;
        Ok(decode_ns_list(&completion.data)?)
    }

    /// Namespace Identification Descriptor list (CNS 03h) of `nsid`.
    pub fn namespace_descriptors(&mut self, nsid: u32) -> Result<Vec<NamespaceId>, HostError> {
        let completion = self.identify(cns::NAMESPACE_ID_DESCRIPTORS, nsid, 0)?.success()?;
        Ok(decode_ns_id_descriptors(&completion.data)?)
    }

    /// Get Log Page of `len` bytes (a multiple of 4) at byte `offset`.
    pub fn get_log_page(
        &mut self,
        lid: u8,
        nsid: u32,
        offset: u64,
        len: usize,
        rae: bool,
    ) -> Result<Completion, HostError> {
        self.execute(Command::get_log_page(lid, nsid, offset, len, rae))
    }

    /// Get Features; the value is in the completion's dw0.
    pub fn get_features(&mut self, fid: u8, sel: u8, nsid: u32) -> Result<Completion, HostError> {
        self.execute(Command::get_features(fid, sel, nsid))
    }

    /// Set Features of `fid` to `cdw11` (controller-wide, not saved).
    pub fn set_features(&mut self, fid: u8, cdw11: u32) -> Result<Completion, HostError> {
        self.execute(Command::set_features(&Features { fid, cdw11, ..Features::default() }))
    }

    /// Set Features Number of Queues asking for `count` I/O queues; returns
    /// what the controller granted (NSQA/NCQA plus one).
    pub fn set_number_of_queues(&mut self, count: u32) -> Result<NumberOfQueues, HostError> {
        let completion = self.execute(Command::set_number_of_queues(count))?.success()?;
        Ok(NumberOfQueues::from_dword(completion.cqe.dw0))
    }

    /// Keep Alive.
    pub fn keep_alive(&mut self) -> Result<Completion, HostError> {
        self.execute(Command::keep_alive())
    }

    /// Abort of command `cid` on queue `sqid`; dw0 bit 0 clear means the
    /// command was aborted.
    pub fn abort(&mut self, sqid: u16, cid: u16) -> Result<Completion, HostError> {
        self.execute(Command::abort(sqid, cid))
    }

    /// Submits an Asynchronous Event Request and returns its CID; its
    /// completion comes when an event occurs ([`Connection::wait_timeout`]).
    pub fn async_event_request(&mut self) -> Result<u16, HostError> {
        self.submit(Command::async_event_request())
    }

    /// Disconnect of this queue.
    pub fn disconnect(&mut self) -> Result<Completion, HostError> {
        self.execute(Command::disconnect())
    }

    /// Reads the discovery log page as nvme-cli does: the 1024-byte header
    /// (RAE set), then the NUMREC entries in 4 KiB Get Log Page commands
    /// (RAE set), then the header again (RAE clear) to check that the
    /// generation counter did not move; retried up to [`DISCOVERY_TRIES`]
    /// times.
    pub fn discovery_log(&mut self) -> Result<DiscoveryLogPage, HostError> {
        for _ in 0..DISCOVERY_TRIES {
            let header = self.discovery_header(true)?;
            if header.numrec == 0 {
                return Ok(DiscoveryLogPage { genctr: header.genctr, entries: Vec::new() });
            }
            let entries_len = usize::try_from(header.numrec)
                .ok()
                .and_then(|n| n.checked_mul(DiscoveryLogEntry::SIZE))
                .expect("NUMREC fits in memory");
            let mut entries_bytes = Vec::with_capacity(entries_len);
            while entries_bytes.len() < entries_len {
                let offset = DiscoveryLogHeader::SIZE + entries_bytes.len();
                let len = (entries_len - entries_bytes.len()).min(DISCOVERY_CHUNK_BYTES);
                let chunk = self.get_log_page(lid::DISCOVERY, 0, offset as u64, len, true)?.success()?;
                entries_bytes.extend_from_slice(&chunk.data);
            }
            let again = self.discovery_header(false)?;
            if again.genctr != header.genctr {
                continue;
            }
            if again.numrec != header.numrec {
                return Err(Violation::NumrecChanged { before: header.numrec, after: again.numrec }.into());
            }
            let entries = entries_bytes
                .chunks_exact(DiscoveryLogEntry::SIZE)
                .map(DiscoveryLogEntry::decode)
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(DiscoveryLogPage { genctr: header.genctr, entries });
        }
        Err(HostError::DiscoveryChanging { tries: DISCOVERY_TRIES })
    }

    fn discovery_header(&mut self, rae: bool) -> Result<DiscoveryLogHeader, HostError> {
        let completion = self.get_log_page(lid::DISCOVERY, 0, 0, DiscoveryLogHeader::SIZE, rae)?.success()?;
        Ok(DiscoveryLogHeader::decode(&completion.data)?)
    }
}
