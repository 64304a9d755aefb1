//! The host library's one error type, [`HostError`], and the list of ways a
//! controller can break the NVMe/TCP protocol, [`Violation`].
//!
//! Invariants:
//! - An NVMe error status in a completion is not a [`HostError`]: commands
//!   return it in their `Completion`, where tests assert on it. Only helpers
//!   that must interpret the data (Identify, Connect, ...) turn a failed
//!   status into [`HostError::Status`].
//! - Everything else here is a transport failure: the connection may be
//!   unusable afterwards (see each variant).
//! - A bug in the caller (waiting on a CID never submitted, a buffer of the
//!   wrong length) is an assertion, not an error.

use std::time::Duration;

use fabriq_target::nvme::{Cqe, WireError};
use fabriq_target::tcp::pdu::{Digests, Fatal, Fes, PduType};

/// Which digest did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestKind {
    /// HDGST: fatal, the connection cannot be trusted any more.
    Header,
    /// DDGST: the command fails, the connection lives on (NVMe/TCP 3.5).
    Data,
}

/// A transport failure seen by the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The socket failed (connection refused, reset, ...).
    #[error("socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing (or not enough) arrived within the time-out.
    #[error("no answer from the controller within {0:?}")]
    Timeout(Duration),
    /// The controller closed the connection between two PDUs.
    #[error("the controller closed the connection")]
    Closed,
    /// An earlier failure left the byte stream in the middle of a PDU, so
    /// nothing more can be sent or received on this connection.
    #[error("the connection lost PDU framing after an earlier failure")]
    Broken,
    /// The controller sent something the protocol forbids.
    #[error("protocol violation by the controller: {0}")]
    Protocol(#[from] Violation),
    /// The controller sent a C2HTermReq: the connection is over.
    #[error("the controller terminated the connection: {fes:?}, FEI {fei:#x}")]
    TermReq {
        /// Fatal Error Status.
        fes: Fes,
        /// Fatal Error Information.
        fei: u32,
        /// The PDU header the controller quoted.
        data: Vec<u8>,
    },
    /// A digest did not verify. For a data digest, `cid` is the command whose
    /// data it was; the connection is still in step.
    #[error("{kind:?} digest mismatch (cid {cid:?}): computed {computed:#010x}, received {received:#010x}")]
    Digest {
        /// Header or data.
        kind: DigestKind,
        /// The command the data belonged to (data digests only).
        cid: Option<u16>,
        /// What the host computed.
        computed: u32,
        /// What the controller sent.
        received: u32,
    },
    /// A helper that needs a successful command got an error status (for
    /// Connect, dw0 holds IATTR/IPO of an Invalid Parameters status).
    #[error("command {} failed with status {:?}, dw0 {:#x}", .0.cid, .0.status, .0.dw0)]
    Status(Cqe),
    /// Data the controller returned (Identify, a log page) does not decode.
    #[error("the controller returned data that does not decode: {0}")]
    BadData(#[from] WireError),
    /// CSTS did not reach the state asked for (ready, not ready, shutdown
    /// complete) in time, or reports Controller Fatal Status.
    #[error("controller status {csts:#x} is not what was asked for")]
    ControllerStatus {
        /// The last CSTS read.
        csts: u32,
    },
    /// The discovery log page kept changing (its generation counter moved)
    /// while it was read, on every try.
    #[error("the discovery log changed during each of {tries} reads")]
    DiscoveryChanging {
        /// How many times it was read.
        tries: u32,
    },
}

/// What a controller did wrong, as the host saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A received PDU header failed the size table or its typed decode; the
    /// FES/FEI are what a TermReq about it would say.
    #[error("malformed PDU: {0}")]
    Malformed(Fatal),
    /// A PDU type the host cannot receive at this point (an ICResp after the
    /// connection is up, a CapsuleResp before, ...).
    #[error("unexpected {0:?} PDU")]
    Unexpected(PduType),
    /// The ICResp does not grant exactly the digests the ICReq asked for.
    #[error("ICResp digests {granted:?}, asked for {requested:?}")]
    DigestsNotEchoed {
        /// What the ICReq asked for.
        requested: Digests,
        /// What the ICResp said.
        granted: Digests,
    },
    /// A CapsuleResp, C2HData or R2T names a CID with no command outstanding.
    #[error("{pdu_type:?} for cid {cid}, which is not outstanding")]
    UnknownCid {
        /// The PDU that named it.
        pdu_type: PduType,
        /// The CID.
        cid: u16,
    },
    /// An R2T for a command that has no data for the controller, or whose
    /// data went in the capsule.
    #[error("R2T for cid {cid}, which has no data to send by R2T")]
    R2tWithoutData {
        /// The command.
        cid: u16,
    },
    /// An R2T asking for bytes outside the command's data, or for bytes an
    /// earlier R2T already asked for.
    #[error("R2T for cid {cid} asks for {r2tl} bytes at {r2to}, outside {len} or again")]
    R2tOutOfRange {
        /// The command.
        cid: u16,
        /// R2TO.
        r2to: u32,
        /// R2TL.
        r2tl: u32,
        /// The command's data length.
        len: usize,
    },
    /// C2HData for a command that reads no data.
    #[error("C2HData for cid {cid}, which reads no data")]
    C2hDataWithoutRead {
        /// The command.
        cid: u16,
    },
    /// C2HData outside the command's buffer, overlapping data already
    /// received, or after the PDU flagged LAST_PDU.
    #[error("C2HData for cid {cid}: {datal} bytes at {datao} outside {len}, again, or after the last")]
    C2hDataOutOfRange {
        /// The command.
        cid: u16,
        /// DATAO.
        datao: u32,
        /// DATAL.
        datal: u32,
        /// The command's buffer length.
        len: usize,
    },
    /// C2HData with SUCCESS on a queue whose SQ flow control is enabled
    /// (NVMe/TCP 3.3.2.1 only allows it when the host disabled it).
    #[error("C2HData SUCCESS for cid {cid} with SQ flow control enabled")]
    SuccessWithFlowControl {
        /// The command.
        cid: u16,
    },
    /// A command completed successfully without all of its data, or without
    /// a C2HData flagged LAST_PDU.
    #[error("cid {cid} succeeded with {received} of {len} data bytes")]
    MissingData {
        /// The command.
        cid: u16,
        /// Bytes that arrived.
        received: usize,
        /// Bytes expected.
        len: usize,
    },
    /// The discovery log kept its generation counter but changed its number
    /// of records.
    #[error("discovery log NUMREC went from {before} to {after} under one GENCTR")]
    NumrecChanged {
        /// NUMREC read first.
        before: u64,
        /// NUMREC read last.
        after: u64,
    },
}
