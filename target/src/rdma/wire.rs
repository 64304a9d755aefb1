//! What travels on an NVMe/RDMA queue besides the capsules themselves, as plain data with no
//! I/O (NVMe over Fabrics RDMA Transport Specification 1.0, sections 3.2 and 3.3): the RDMA CM
//! private data of the connect request, accept and reject, the rules for a command's SGL, and
//! the work request identifiers of a queue.
//!
//! ```text
//!  connect request (host -> target), 32 bytes      accept (target -> host), 32 bytes
//!  0..2 RECFMT  2..4 QID  4..6 HRQSIZE             0..2 RECFMT  2..4 CRQSIZE  4..32 reserved
//!  6..8 HSQSIZE  8..32 reserved
//!                                                  reject (target -> host), 4 bytes
//!                                                  0..2 RECFMT  2..4 STS
//! ```
//!
//! Invariants: [`CmRequest::decode`] accepts any bytes and says why it refuses them with the
//! reject status the host understands; [`check_sgl`] only validates (pure), returning an NVMe
//! status for a bad command; nothing here panics on what a peer sends.

use crate::ctrl::{DataDir, Prepared};
use crate::nvme::sqe::Psdt;
use crate::nvme::sqe::sgl_type;
use crate::nvme::wire::{get_u16, put_u16};
use crate::nvme::{SglDescriptor, SglKind, Sqe, Status};

/// The only record format defined (RECFMT 0).
pub const RECFMT_1_0: u16 = 0;
/// Bytes of the submission queue entry at the start of every command capsule.
pub const SQE_BYTES: usize = 64;
/// Bytes of a response capsule (a completion queue entry, nothing more).
pub const CQE_BYTES: usize = 16;
/// Entries of an admin queue a host may ask for (the Linux host asks for 32).
pub const ADMIN_QUEUE_ENTRIES_MAX: u16 = 32;

/// Why a connect request is refused: the STS of the reject private data (RDMA Transport
/// Specification 1.0, Figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[repr(u16)]
pub enum RejectStatus {
    #[error("private data too short")]
    InvalidLength = 0x01,
    #[error("unknown record format")]
    InvalidRecfmt = 0x02,
    #[error("invalid queue id")]
    InvalidQid = 0x03,
    #[error("invalid host submission queue size")]
    InvalidHsqsize = 0x04,
    #[error("invalid host receive queue size")]
    InvalidHrqsize = 0x05,
    #[error("no resources")]
    NoResources = 0x06,
    #[error("invalid IRD")]
    InvalidIrd = 0x07,
    #[error("invalid ORD")]
    InvalidOrd = 0x08,
}

/// The private data of the host's RDMA CM connect request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmRequest {
    pub recfmt: u16,
    pub qid: u16,
    /// Host receive queue size: responses the host can take at once.
    pub hrqsize: u16,
    /// Host submission queue size, 0-based: the queue holds `hsqsize + 1` commands.
    pub hsqsize: u16,
}

impl CmRequest {
    pub const SIZE: usize = 32;

    /// Reads the private data; the CM may hand over more bytes than the 32 (zero padding).
    pub fn decode(b: &[u8]) -> Result<CmRequest, RejectStatus> {
        if b.len() < Self::SIZE {
            return Err(RejectStatus::InvalidLength);
        }
        let req =
            CmRequest { recfmt: get_u16(b, 0), qid: get_u16(b, 2), hrqsize: get_u16(b, 4), hsqsize: get_u16(b, 6) };
        if req.recfmt != RECFMT_1_0 {
            return Err(RejectStatus::InvalidRecfmt);
        }
        Ok(req)
    }

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put_u16(&mut b, 0, self.recfmt);
        put_u16(&mut b, 2, self.qid);
        put_u16(&mut b, 4, self.hrqsize);
        put_u16(&mut b, 6, self.hsqsize);
        b
    }

    /// Checks the sizes against the target's limits; returns the queue's shape.
    pub fn admit(
        &self,
        max_queue_entries: u16,
        max_io_queues: u16,
        icd_bytes: u32,
    ) -> Result<QueueShape, RejectStatus> {
        if self.qid > max_io_queues {
            return Err(RejectStatus::InvalidQid);
        }
        let entries = u32::from(self.hsqsize) + 1;
        let limit = if self.qid == 0 { ADMIN_QUEUE_ENTRIES_MAX.min(max_queue_entries) } else { max_queue_entries };
        if entries < 2 || entries > u32::from(limit) {
            return Err(RejectStatus::InvalidHsqsize);
        }
        // One response per command in flight: the host must be able to take them all.
        if u32::from(self.hrqsize) < entries {
            return Err(RejectStatus::InvalidHrqsize);
        }
        // The admin queue carries no in-capsule data on NVMe/RDMA (its capsules are 64 bytes).
        let icd_bytes = if self.qid == 0 { 0 } else { icd_bytes };
        Ok(QueueShape { qid: self.qid, entries: entries as u16, icd_bytes })
    }
}

/// What a queue looks like once its connect request is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueShape {
    pub qid: u16,
    /// Commands the queue holds: receive buffers posted, command slots.
    pub entries: u16,
    /// In-capsule data one command capsule may carry.
    pub icd_bytes: u32,
}

impl QueueShape {
    /// Bytes of one receive buffer: the SQE and the in-capsule data behind it.
    pub fn capsule_bytes(&self) -> usize {
        SQE_BYTES + self.icd_bytes as usize
    }
}

/// The private data of the target's accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmAccept {
    pub recfmt: u16,
    /// Controller receive queue size: the command capsules the target takes at once.
    pub crqsize: u16,
}

impl CmAccept {
    pub const SIZE: usize = 32;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put_u16(&mut b, 0, self.recfmt);
        put_u16(&mut b, 2, self.crqsize);
        b
    }

    pub fn decode(b: &[u8]) -> Option<CmAccept> {
        (b.len() >= Self::SIZE).then(|| CmAccept { recfmt: get_u16(b, 0), crqsize: get_u16(b, 2) })
    }
}

/// The private data of the target's reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmReject {
    pub recfmt: u16,
    pub status: RejectStatus,
}

impl CmReject {
    pub const SIZE: usize = 4;

    pub fn new(status: RejectStatus) -> CmReject {
        CmReject { recfmt: RECFMT_1_0, status }
    }

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put_u16(&mut b, 0, self.recfmt);
        put_u16(&mut b, 2, self.status as u16);
        b
    }
}

/// Where a command's data is, once its SGL passed [`check_sgl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPlan {
    /// No data moves.
    None,
    /// The data came in the capsule, right after the SQE.
    InCapsule { len: u32 },
    /// The data is in the host's memory: RDMA READ it (host to controller) or RDMA WRITE
    /// it (controller to host) at `addr` with `key`.
    Keyed { addr: u64, key: u32 },
}

/// The key the host asks the target to invalidate with its response (keyed data block,
/// subtype Fh), if any.
pub fn invalidate_key(sqe: &Sqe) -> Option<u32> {
    match SglDescriptor::decode(&sqe.dptr) {
        SglDescriptor {
            length,
            kind: SglKind::KeyedDataBlock { subtype: sgl_type::SUBTYPE_INVALIDATE_KEY, key },
            ..
        } if length > 0 => Some(key),
        _ => None,
    }
}

/// The NVMe/RDMA rules for a command's SGL (RDMA Transport Specification 1.0, 3.3): data in
/// the capsule is a data block with the offset subtype (offset 0: ICDOFF is 0); data in the
/// host's memory is a keyed data block (subtype 0, or Fh to invalidate the key). `icd` is
/// how many bytes followed the SQE in the capsule, `icd_max` what the queue takes.
pub fn check_sgl(sqe: &Sqe, p: &Prepared, icd: u32, icd_max: u32) -> Result<DataPlan, Status> {
    if p.dir == DataDir::None && icd == 0 {
        // The Linux host sends a keyed descriptor of length 0 here; nothing is looked at.
        return Ok(DataPlan::None);
    }
    if !matches!(sqe.psdt(), Psdt::SglMptrContiguous | Psdt::SglMptrSegment) {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    let sgl = SglDescriptor::decode(&sqe.dptr);
    match sgl.kind {
        SglKind::DataBlockOffset => {
            if p.dir != DataDir::H2c || icd_max == 0 {
                return Err(Status::INVALID_FIELD.with_dnr());
            }
            if sgl.address != 0 {
                return Err(Status::INVALID_SGL_OFFSET.with_dnr());
            }
            if sgl.length > icd_max || sgl.length != p.len || icd < sgl.length {
                return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            Ok(DataPlan::InCapsule { len: sgl.length })
        }
        SglKind::KeyedDataBlock { subtype, key } => {
            if subtype != sgl_type::SUBTYPE_ADDRESS && subtype != sgl_type::SUBTYPE_INVALIDATE_KEY {
                return Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr());
            }
            if icd > 0 || p.dir == DataDir::None {
                // Data in the capsule that no descriptor names, or a descriptor for a command
                // that moves none.
                return Err(Status::INVALID_FIELD.with_dnr());
            }
            if sgl.length < p.len {
                return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            Ok(DataPlan::Keyed { addr: sgl.address, key })
        }
        _ => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()),
    }
}

/// What a work request of a queue was, for its completion: kind in bits 16..24, the receive
/// buffer or command slot in bits 0..16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrId {
    /// A receive buffer for a command capsule.
    Recv(u16),
    /// RDMA READ of a command's data from the host.
    Read(u16),
    /// RDMA WRITE of a command's data to the host.
    Write(u16),
    /// SEND of a command's response capsule.
    Send(u16),
}

impl WrId {
    pub fn encode(self) -> u64 {
        let (kind, n) = match self {
            WrId::Recv(n) => (1u64, n),
            WrId::Read(n) => (2, n),
            WrId::Write(n) => (3, n),
            WrId::Send(n) => (4, n),
        };
        kind << 16 | u64::from(n)
    }

    pub fn decode(raw: u64) -> Option<WrId> {
        let n = raw as u16;
        match raw >> 16 {
            1 => Some(WrId::Recv(n)),
            2 => Some(WrId::Read(n)),
            3 => Some(WrId::Write(n)),
            4 => Some(WrId::Send(n)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctrl::{Exec, io::IoCmd, io::IoOp};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// What the Linux host sends for an I/O queue of 128 entries (qid 1).
    #[test]
    fn golden_connect_request_as_linux_sends_it() {
        let mut b = [0u8; 56];
        b[..8].copy_from_slice(&[0x00, 0x00, 0x01, 0x00, 0x80, 0x00, 0x7F, 0x00]);
        let req = CmRequest::decode(&b).unwrap();
        assert_eq!(req, CmRequest { recfmt: 0, qid: 1, hrqsize: 128, hsqsize: 127 });
        assert_eq!(req.encode()[..], b[..32]);
        assert_eq!(req.admit(128, 8, 8192), Ok(QueueShape { qid: 1, entries: 128, icd_bytes: 8192 }));
    }

    #[test]
    fn golden_accept_and_reject() {
        let acc = CmAccept { recfmt: 0, crqsize: 32 }.encode();
        let mut want = [0u8; 32];
        want[2] = 32;
        assert_eq!(acc, want);
        assert_eq!(CmAccept::decode(&acc), Some(CmAccept { recfmt: 0, crqsize: 32 }));
        assert_eq!(CmReject::new(RejectStatus::InvalidHsqsize).encode(), [0, 0, 0x04, 0]);
        assert_eq!(CmReject::new(RejectStatus::NoResources).encode(), [0, 0, 0x06, 0]);
    }

    #[test]
    fn malformed_private_data_is_refused_with_its_status() {
        assert_eq!(CmRequest::decode(&[]), Err(RejectStatus::InvalidLength));
        assert_eq!(CmRequest::decode(&[0; 31]), Err(RejectStatus::InvalidLength));
        let mut b = [0u8; 32];
        b[0] = 1;
        assert_eq!(CmRequest::decode(&b), Err(RejectStatus::InvalidRecfmt));
        let admit = |qid, hrqsize, hsqsize| CmRequest { recfmt: 0, qid, hrqsize, hsqsize }.admit(128, 4, 8192);
        assert_eq!(admit(5, 128, 127), Err(RejectStatus::InvalidQid));
        assert_eq!(admit(1, 128, 0), Err(RejectStatus::InvalidHsqsize));
        assert_eq!(admit(1, 0xFFFF, 0xFFFF), Err(RejectStatus::InvalidHsqsize));
        assert_eq!(admit(1, 200, 128), Err(RejectStatus::InvalidHsqsize));
        assert_eq!(admit(0, 64, 63), Err(RejectStatus::InvalidHsqsize), "admin queues hold at most 32");
        assert_eq!(admit(1, 16, 31), Err(RejectStatus::InvalidHrqsize));
        assert_eq!(admit(0, 32, 31), Ok(QueueShape { qid: 0, entries: 32, icd_bytes: 0 }));
        assert_eq!(admit(0, 32, 31).unwrap().capsule_bytes(), 64);
    }

    /// Every field of the connect request's private data at and around its limits, against
    /// the rules written out once more (RDMA Transport Specification 1.0, 3.2): the reject
    /// status a hostile host gets is the one for the first field that is wrong, in the
    /// order RECFMT, QID, HSQSIZE, HRQSIZE.
    #[test]
    fn every_private_data_field_at_its_limits() {
        const MQES: u16 = 128;
        const IOQ: u16 = 8;
        let model = |r: &CmRequest| -> Result<u16, RejectStatus> {
            if r.recfmt != 0 {
                return Err(RejectStatus::InvalidRecfmt);
            }
            if r.qid > IOQ {
                return Err(RejectStatus::InvalidQid);
            }
            let limit = if r.qid == 0 { 32 } else { MQES };
            let entries = u32::from(r.hsqsize) + 1;
            if !(2..=u32::from(limit)).contains(&entries) {
                return Err(RejectStatus::InvalidHsqsize);
            }
            if u32::from(r.hrqsize) < entries {
                return Err(RejectStatus::InvalidHrqsize);
            }
            Ok(entries as u16)
        };
        let mut seen = BTreeSet::new();
        for recfmt in [0, 1, 0x00FF, 0xFFFF] {
            for qid in [0, 1, IOQ - 1, IOQ, IOQ + 1, 0x00FF, 0xFFFF] {
                for hsqsize in [0, 1, 30, 31, 32, MQES - 2, MQES - 1, MQES, 0x7FFF, 0xFFFF] {
                    for hrqsize in [0, 1, hsqsize, hsqsize.saturating_add(1), hsqsize.saturating_add(2), 0xFFFF] {
                        let r = CmRequest { recfmt, qid, hrqsize, hsqsize };
                        let got = CmRequest::decode(&r.encode()).and_then(|r| r.admit(MQES, IOQ, 8192));
                        let want = model(&r);
                        assert_eq!(got.map(|s| s.entries), want, "{r:?}");
                        if let Ok(shape) = got {
                            assert_eq!(shape.qid, qid);
                            assert_eq!(shape.icd_bytes, if qid == 0 { 0 } else { 8192 }, "{r:?}");
                        }
                        seen.insert(want.map_or_else(|status| status as u16, |_| 0));
                    }
                }
            }
        }
        assert_eq!(seen, BTreeSet::from([0, 2, 3, 4, 5]), "admissions and every field's status were reached");
        // Any length short of 32 bytes, whatever it holds; longer is padding.
        for len in 0..CmRequest::SIZE {
            assert_eq!(CmRequest::decode(&[0xFF; 31][..len]), Err(RejectStatus::InvalidLength), "{len} bytes");
        }
        let mut long = [0xEEu8; 64];
        long[..8].copy_from_slice(&CmRequest { recfmt: 0, qid: 1, hrqsize: 32, hsqsize: 31 }.encode()[..8]);
        assert_eq!(CmRequest::decode(&long).unwrap().admit(MQES, IOQ, 8192).unwrap().entries, 32);
    }

    /// The reject private data for every status (RECFMT 0, then STS), as the host reads it.
    #[test]
    fn golden_reject_for_every_status() {
        let all = [
            (RejectStatus::InvalidLength, 0x01),
            (RejectStatus::InvalidRecfmt, 0x02),
            (RejectStatus::InvalidQid, 0x03),
            (RejectStatus::InvalidHsqsize, 0x04),
            (RejectStatus::InvalidHrqsize, 0x05),
            (RejectStatus::NoResources, 0x06),
            (RejectStatus::InvalidIrd, 0x07),
            (RejectStatus::InvalidOrd, 0x08),
        ];
        for (status, sts) in all {
            assert_eq!(CmReject::new(status).encode(), [0, 0, sts, 0], "{status}");
        }
    }

    fn sqe_with(sgl: SglDescriptor) -> Sqe {
        // PSDT 01b: SGLs.
        Sqe { flags: 1 << 6, dptr: sgl.encode(), ..Sqe::default() }
    }

    fn write(len: u32) -> Prepared {
        Prepared {
            dir: DataDir::H2c,
            len,
            exec: Exec::Io(IoCmd { ns_index: 0, op: IoOp::Write { offset: 0, len, fua: false } }),
        }
    }

    fn read(len: u32) -> Prepared {
        Prepared { dir: DataDir::C2h, len, exec: Exec::Io(IoCmd { ns_index: 0, op: IoOp::Read { offset: 0, len } }) }
    }

    fn keyed(address: u64, length: u32, subtype: u8, key: u32) -> SglDescriptor {
        SglDescriptor { address, length, kind: SglKind::KeyedDataBlock { subtype, key } }
    }

    #[test]
    fn keyed_descriptors_name_the_host_memory() {
        let sqe = sqe_with(keyed(0x1000, 4096, 0xF, 0xAB));
        assert_eq!(check_sgl(&sqe, &read(4096), 0, 8192), Ok(DataPlan::Keyed { addr: 0x1000, key: 0xAB }));
        assert_eq!(invalidate_key(&sqe), Some(0xAB));
        let sqe = sqe_with(keyed(0x1000, 8192, 0, 7));
        assert_eq!(check_sgl(&sqe, &write(4096), 0, 8192), Ok(DataPlan::Keyed { addr: 0x1000, key: 7 }));
        assert_eq!(invalidate_key(&sqe), None);
    }

    #[test]
    fn the_linux_null_descriptor_passes_for_commands_without_data() {
        let sqe = sqe_with(keyed(0, 0, 0, 0));
        let none = Prepared { dir: DataDir::None, len: 0, exec: Exec::None };
        assert_eq!(check_sgl(&sqe, &none, 0, 0), Ok(DataPlan::None));
        assert_eq!(invalidate_key(&sqe), None);
    }

    #[test]
    fn bad_descriptors_get_their_status() {
        let short = sqe_with(keyed(0, 512, 0, 1));
        assert_eq!(check_sgl(&short, &read(4096), 0, 0), Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr()));
        let subtype = sqe_with(keyed(0, 4096, 0x3, 1));
        assert_eq!(check_sgl(&subtype, &read(4096), 0, 0), Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()));
        let transport = sqe_with(SglDescriptor::transport(4096));
        assert_eq!(check_sgl(&transport, &read(4096), 0, 0), Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()));
        let segment = sqe_with(SglDescriptor { address: 0, length: 32, kind: SglKind::LastSegment { subtype: 0 } });
        assert_eq!(check_sgl(&segment, &write(4096), 0, 0), Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()));
        let mut prp = sqe_with(keyed(0, 4096, 0, 1));
        prp.flags = 0;
        assert_eq!(check_sgl(&prp, &read(4096), 0, 0), Err(Status::INVALID_FIELD.with_dnr()));
        let extra = sqe_with(keyed(0, 4096, 0, 1));
        assert_eq!(check_sgl(&extra, &write(4096), 512, 8192), Err(Status::INVALID_FIELD.with_dnr()));
    }

    #[test]
    fn in_capsule_data_at_offset_zero_within_the_limit() {
        let ok = sqe_with(SglDescriptor::in_capsule(0, 4096));
        assert_eq!(check_sgl(&ok, &write(4096), 4096, 8192), Ok(DataPlan::InCapsule { len: 4096 }));
        assert_eq!(check_sgl(&ok, &write(4096), 4096, 0), Err(Status::INVALID_FIELD.with_dnr()), "admin queue");
        assert_eq!(check_sgl(&ok, &read(4096), 4096, 8192), Err(Status::INVALID_FIELD.with_dnr()));
        assert_eq!(check_sgl(&ok, &write(4096), 1000, 8192), Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr()));
        let unaligned = sqe_with(SglDescriptor::in_capsule(16, 4096));
        assert_eq!(check_sgl(&unaligned, &write(4096), 4112, 8192), Err(Status::INVALID_SGL_OFFSET.with_dnr()));
        let oversized = sqe_with(SglDescriptor::in_capsule(0, 16384));
        assert_eq!(check_sgl(&oversized, &write(16384), 16384, 8192), Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr()));
    }

    #[test]
    fn work_request_ids_round_trip() {
        for id in [WrId::Recv(0), WrId::Read(7), WrId::Write(0xFFFF), WrId::Send(127)] {
            assert_eq!(WrId::decode(id.encode()), Some(id));
        }
        assert_eq!(WrId::decode(0), None);
        assert_eq!(WrId::decode(9 << 16), None);
    }

    proptest! {
        #[test]
        fn any_private_data_decodes_or_is_refused(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            match CmRequest::decode(&b) {
                Ok(req) => {
                    prop_assert_eq!(&req.encode()[..8], &b[..8]);
                    if let Ok(shape) = req.admit(128, 8, 8192) {
                        prop_assert!(shape.entries >= 2 && shape.entries <= 128);
                        prop_assert!(u32::from(req.hrqsize) >= u32::from(shape.entries));
                    }
                }
                Err(status) => prop_assert!(matches!(status, RejectStatus::InvalidLength | RejectStatus::InvalidRecfmt)),
            }
        }

        #[test]
        fn any_sgl_is_checked_without_panicking(raw in proptest::array::uniform16(any::<u8>()), icd in 0u32..20000, len in 0u32..20000) {
            let sqe = Sqe { flags: 1 << 6, dptr: raw, ..Sqe::default() };
            for p in [write(len), read(len)] {
                if let Ok(plan) = check_sgl(&sqe, &p, icd, 8192) {
                    match plan {
                        DataPlan::InCapsule { len: n } => prop_assert!(n == p.len && n <= icd && n <= 8192),
                        DataPlan::Keyed { .. } => prop_assert_eq!(icd, 0),
                        DataPlan::None => prop_assert!(false, "data commands always have a plan"),
                    }
                }
            }
        }
    }
}
