//! Commands as the host submits them: an SQE, the data that goes with it, and
//! how that data travels (in the capsule, or by R2T and H2CData; reads by
//! C2HData). Builders for every command the library speaks, and the encoding
//! of a command into its CapsuleCmd PDU.
//!
//! The SQE fields come from the typed views of `fabriq_target::nvme`; this
//! module adds only what NVMe/TCP decides: SGL entry 1 and PSDT (NVMe/TCP
//! 3.3: an in-capsule data block with the offset subtype, or the transport SGL
//! data block), and whether the data fits in the capsule.
//!
//! Invariants:
//! - Host-to-controller data goes in the capsule when it fits the limit of
//!   the queue (8 KiB for fabrics commands, as Linux does, otherwise the
//!   connection's `icd_limit`), unless the command forces a [`Placement`].
//! - [`Command::keep_dptr`] sends the SQE exactly as built, for tests that
//!   need a wrong SGL; otherwise the encoder owns DPTR and PSDT.

use fabriq_target::nvme::features::NumberOfQueues;
use fabriq_target::nvme::ids::{NQN_FIELD_LEN, Nqn};
use fabriq_target::nvme::sqe::fabrics_offsets as off;
use fabriq_target::nvme::sqe::{
    Abort, AsyncEventRequest, Connect, ConnectData, DatasetManagement, Disconnect, DsmRange, Features, GetLogPage,
    Identify, KeepAlive, PropertyGet, PropertySet, ReadWrite, SglDescriptor,
};
use fabriq_target::nvme::{AdminOpcode, CntlId, FabricsType, IoOpcode, PropertySize, Sqe};

use super::wire::Framing;

/// In-capsule data every controller accepts on the admin queue and for
/// fabrics commands on any queue (NVMe/TCP 3.3; Linux's `NVME_TCP_ADMIN_CCSZ`).
pub const ADMIN_ICD_BYTES: u32 = 8192;

/// Bytes of an Identify data structure.
pub const IDENTIFY_BYTES: usize = 4096;

/// The data that goes with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// No data.
    None,
    /// Data the host sends (Write, Connect, Set Features, DSM ranges, ...).
    ToController(Vec<u8>),
    /// This many bytes the controller sends back (Read, Identify, ...).
    FromController(usize),
}

impl Data {
    /// Bytes the command transfers, either way.
    pub fn len(&self) -> usize {
        match self {
            Data::None => 0,
            Data::ToController(data) => data.len(),
            Data::FromController(len) => *len,
        }
    }

    /// Whether no data moves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How host-to-controller data travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// In the capsule when it fits the queue's limit, else by R2T.
    #[default]
    Auto,
    /// In the capsule, whatever its size (for oversized in-capsule data tests).
    InCapsule,
    /// By R2T and H2CData, whatever its size.
    R2t,
}

/// A command ready to submit. The CID of `sqe` is ignored: the connection
/// chooses one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The submission queue entry.
    pub sqe: Sqe,
    /// Its data.
    pub data: Data,
    /// How host-to-controller data travels.
    pub placement: Placement,
    /// Send DPTR and PSDT as they are in `sqe` instead of describing the data.
    pub keep_dptr: bool,
}

/// A command encoded as the PDU that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capsule {
    /// The whole CapsuleCmd PDU.
    pub bytes: Vec<u8>,
    /// Whether the host-to-controller data went in the capsule (if not, and
    /// there is any, the controller asks for it by R2T).
    pub in_capsule: bool,
}

impl Command {
    /// A command with no data.
    pub fn new(sqe: Sqe) -> Command {
        Command { sqe, data: Data::None, placement: Placement::Auto, keep_dptr: false }
    }

    /// The same command sending `data` to the controller.
    pub fn with_data_out(mut self, data: Vec<u8>) -> Command {
        self.data = Data::ToController(data);
        self
    }

    /// The same command reading `len` bytes from the controller.
    pub fn with_data_in(mut self, len: usize) -> Command {
        self.data = Data::FromController(len);
        self
    }

    /// The same command with its data placed as `placement` says.
    pub fn placed(mut self, placement: Placement) -> Command {
        self.placement = placement;
        self
    }

    /// The same command sent with DPTR and PSDT exactly as in its SQE.
    pub fn keep_dptr(mut self) -> Command {
        self.keep_dptr = true;
        self
    }

    /// Connect (NVMe Base 2.0, 6.3) with its 1024 bytes of data.
    pub fn connect(connect: &Connect, data: Vec<u8>) -> Command {
        Command::new(connect.to_sqe(0)).with_data_out(data)
    }

    /// Property Get of a 4- or 8-byte property.
    pub fn property_get(offset: u32, size: PropertySize) -> Command {
        Command::new(PropertyGet { size, offset }.to_sqe(0))
    }

    /// Property Set.
    pub fn property_set(offset: u32, size: PropertySize, value: u64) -> Command {
        Command::new(PropertySet { size, offset, value }.to_sqe(0))
    }

    /// Disconnect of the queue it is sent on.
    pub fn disconnect() -> Command {
        Command::new(Disconnect { recfmt: 0 }.to_sqe(0))
    }

    /// Identify, reading its 4096 bytes.
    pub fn identify(cns: u8, nsid: u32, cntid: u16) -> Command {
        let identify = Identify { cns, cntid, nsid, ..Identify::default() };
        Command::new(identify.to_sqe(0)).with_data_in(IDENTIFY_BYTES)
    }

    /// Get Log Page reading `len` bytes (a multiple of 4) at byte `offset`.
    pub fn get_log_page(lid: u8, nsid: u32, offset: u64, len: usize, rae: bool) -> Command {
        assert!(len > 0 && len.is_multiple_of(4), "log page length {len} is not a positive number of dwords");
        let get = GetLogPage {
            lid,
            lsp: 0,
            rae,
            len_dwords: len as u64 / 4,
            offset,
            offset_is_index: false,
            lsi: 0,
            csi: 0,
            uuid_index: 0,
            nsid,
        };
        Command::new(get.to_sqe(0)).with_data_in(len)
    }

    /// Get Features of `fid` with Select `sel` (0 current, 1 default, 2
    /// saved, 3 supported capabilities).
    pub fn get_features(fid: u8, sel: u8, nsid: u32) -> Command {
        let features = Features { fid, sel, nsid, ..Features::default() };
        Command::new(features.to_sqe(AdminOpcode::GetFeatures, 0))
    }

    /// Set Features with the fields of `features` (its `sel` is ignored).
    pub fn set_features(features: &Features) -> Command {
        Command::new(features.to_sqe(AdminOpcode::SetFeatures, 0))
    }

    /// Set Features Number of Queues asking for `count` I/O submission and
    /// completion queues.
    pub fn set_number_of_queues(count: u32) -> Command {
        let queues = NumberOfQueues { sq_count: count, cq_count: count };
        Command::set_features(&Features {
            fid: fabriq_target::nvme::features::fid::NUMBER_OF_QUEUES,
            cdw11: queues.to_dword(),
            ..Features::default()
        })
    }

    /// Keep Alive.
    pub fn keep_alive() -> Command {
        Command::new(KeepAlive.to_sqe(0))
    }

    /// Abort of command `cid` on submission queue `sqid`.
    pub fn abort(sqid: u16, cid: u16) -> Command {
        Command::new(Abort { sqid, cid }.to_sqe(0))
    }

    /// Asynchronous Event Request.
    pub fn async_event_request() -> Command {
        Command::new(AsyncEventRequest.to_sqe(0))
    }

    /// Read of `nlb` blocks (a count, 1 to 65536) at `slba` into `len` bytes.
    pub fn read(nsid: u32, slba: u64, nlb: u32, len: usize) -> Command {
        Command::new(rw(nlb, slba, false, false).to_sqe(IoOpcode::Read, 0, nsid)).with_data_in(len)
    }

    /// Write of `nlb` blocks at `slba`.
    pub fn write(nsid: u32, slba: u64, nlb: u32, data: Vec<u8>, fua: bool) -> Command {
        Command::new(rw(nlb, slba, fua, false).to_sqe(IoOpcode::Write, 0, nsid)).with_data_out(data)
    }

    /// Compare of `nlb` blocks at `slba` with `data`.
    pub fn compare(nsid: u32, slba: u64, nlb: u32, data: Vec<u8>) -> Command {
        Command::new(rw(nlb, slba, false, false).to_sqe(IoOpcode::Compare, 0, nsid)).with_data_out(data)
    }

    /// Write Zeroes of `nlb` blocks at `slba`, deallocating them if asked.
    pub fn write_zeroes(nsid: u32, slba: u64, nlb: u32, deallocate: bool) -> Command {
        Command::new(rw(nlb, slba, false, deallocate).to_sqe(IoOpcode::WriteZeroes, 0, nsid))
    }

    /// Flush.
    pub fn flush(nsid: u32) -> Command {
        Command::new(Sqe { nsid, ..Sqe::new(IoOpcode::Flush as u8, 0) })
    }

    /// Dataset Management deallocating `ranges` of (SLBA, block count).
    pub fn dsm_deallocate(nsid: u32, ranges: &[(u64, u32)]) -> Command {
        let dsm = DatasetManagement {
            nr: u32::try_from(ranges.len()).expect("range count"),
            attr_deallocate: true,
            idr: false,
            idw: false,
        };
        let mut data = vec![0u8; dsm.data_len_bytes()];
        for (range, out) in ranges.iter().zip(data.chunks_exact_mut(DsmRange::SIZE)) {
            let (slba, nlb) = *range;
            DsmRange { context_attributes: 0, nlb, slba }.encode(out);
        }
        Command::new(dsm.to_sqe(0, nsid)).with_data_out(data)
    }

    /// The CapsuleCmd PDU of this command as CID `cid`, framed by `framing`,
    /// on a queue taking up to `icd_limit` bytes of in-capsule data.
    pub fn to_capsule(&self, cid: u16, framing: Framing, icd_limit: u32) -> Capsule {
        let mut sqe = self.sqe;
        sqe.cid = cid;
        let in_capsule = self.goes_in_capsule(icd_limit);
        if !self.keep_dptr {
            let len = u32::try_from(self.data.len()).expect("data over 4 GiB");
            let sgl = if in_capsule { SglDescriptor::in_capsule(0, len) } else { SglDescriptor::transport(len) };
            sqe = sqe.with_sgl(sgl);
        }
        let icd: &[u8] = match (&self.data, in_capsule) {
            (Data::ToController(data), true) => data,
            _ => &[],
        };
        Capsule { bytes: framing.capsule_cmd(&sqe.encode(), icd), in_capsule }
    }

    fn goes_in_capsule(&self, icd_limit: u32) -> bool {
        let Data::ToController(data) = &self.data else {
            return false;
        };
        if data.is_empty() {
            return false;
        }
        let limit = if self.sqe.is_fabrics() { ADMIN_ICD_BYTES } else { icd_limit };
        match self.placement {
            Placement::Auto => data.len() <= limit as usize,
            Placement::InCapsule => true,
            Placement::R2t => false,
        }
    }

    /// Whether this is a fabrics command of type `fctype`.
    pub fn is_fabrics(&self, fctype: FabricsType) -> bool {
        self.sqe.is_fabrics() && self.sqe.fctype() == fctype as u8
    }
}

fn rw(nlb: u32, slba: u64, fua: bool, deac: bool) -> ReadWrite {
    ReadWrite { slba, nlb, fua, limited_retry: false, deac }
}

/// The 1024 bytes of Connect data (NVMe Base 2.0, 6.3 Figure 380). The NQNs
/// are plain strings so that tests can send invalid ones: a valid pair is
/// encoded by [`ConnectData`]; otherwise the bytes go in the fields as given,
/// cut to the 256-byte field.
pub fn connect_data(hostid: [u8; 16], cntlid: u16, subnqn: &str, hostnqn: &str) -> Vec<u8> {
    let mut out = vec![0u8; ConnectData::SIZE];
    if let (Ok(subnqn), Ok(hostnqn)) = (Nqn::parse(subnqn), Nqn::parse(hostnqn)) {
        ConnectData { hostid, cntlid: CntlId::from_wire(cntlid), subnqn, hostnqn }.encode(&mut out);
        return out;
    }
    out[usize::from(off::DATA_HOSTID)..][..16].copy_from_slice(&hostid);
    out[usize::from(off::DATA_CNTLID)..][..2].copy_from_slice(&cntlid.to_le_bytes());
    for (field, text) in [(off::DATA_SUBNQN, subnqn), (off::DATA_HOSTNQN, hostnqn)] {
        let bytes = &text.as_bytes()[..text.len().min(NQN_FIELD_LEN)];
        out[usize::from(field)..][..bytes.len()].copy_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_nqns_go_in_as_given() {
        let data = connect_data([7; 16], 0xFFFF, "not an nqn", "nqn.x");
        assert_eq!(&data[..16], &[7; 16]);
        assert_eq!(&data[16..18], &[0xFF, 0xFF]);
        assert_eq!(&data[256..266], b"not an nqn");
        assert_eq!(data[266], 0);
        assert_eq!(&data[512..517], b"nqn.x");
    }

    #[test]
    fn placement_follows_the_limit_unless_forced() {
        let write = |len| Command::write(1, 0, 1, vec![0; len], false);
        assert!(write(4096).goes_in_capsule(4096));
        assert!(!write(4097).goes_in_capsule(4096));
        assert!(!write(512).goes_in_capsule(0));
        assert!(write(8192).placed(Placement::InCapsule).goes_in_capsule(0));
        assert!(!write(8).placed(Placement::R2t).goes_in_capsule(4096));
        // Fabrics commands always get the admin limit.
        let connect = Command::connect(&Connect { recfmt: 0, qid: 1, sqsize: 31, cattr: 0, kato_ms: 0 }, vec![0; 1024]);
        assert!(connect.goes_in_capsule(0));
        assert!(!Command::read(1, 0, 1, 512).goes_in_capsule(8192));
    }
}
