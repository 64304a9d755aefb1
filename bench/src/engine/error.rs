//! The engine's one error type: everything that stops a run.
//!
//! Three kinds, kept apart as the project's style asks: a controller that
//! breaks the protocol ([`EngineError::Protocol`], [`EngineError::TermReq`],
//! digests), a command that fails ([`EngineError::Status`],
//! [`EngineError::Verify`], local I/O errors), and the machinery failing
//! (sockets, io_uring, a stuck drain). A bug of ours is an assertion instead.

use std::io;

use fabriq_target::nvme::Status;
use fabriq_target::tcp::pdu::Fes;

use crate::host::Violation;
use crate::pattern::Mismatch;

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// io_uring could not be set up or entered.
    #[error("io_uring: {0}")]
    Ring(io::Error),
    /// A socket operation failed.
    #[error("queue {qid}: socket {op} failed: {error}")]
    Socket {
        /// The queue.
        qid: u16,
        /// `send` or `recv`.
        op: &'static str,
        /// The error.
        error: io::Error,
    },
    /// The controller closed a queue's connection.
    #[error("queue {qid}: the controller closed the connection")]
    Closed {
        /// The queue.
        qid: u16,
    },
    /// The controller broke the protocol.
    #[error("queue {qid}: protocol violation by the controller: {violation}")]
    Protocol {
        /// The queue.
        qid: u16,
        /// What it did.
        violation: Violation,
    },
    /// The controller terminated the connection.
    #[error("queue {qid}: the controller sent C2HTermReq {fes:?}, FEI {fei:#x}")]
    TermReq {
        /// The queue.
        qid: u16,
        /// Fatal Error Status.
        fes: Fes,
        /// Fatal Error Information.
        fei: u32,
    },
    /// A PDU header digest did not verify.
    #[error("queue {qid}: header digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    HeaderDigest {
        /// The queue.
        qid: u16,
        /// What the host computed.
        computed: u32,
        /// What the controller sent.
        received: u32,
    },
    /// Read data did not match its data digest.
    #[error("queue {qid}: data digest mismatch in the data of the read at LBA {slba}")]
    DataDigest {
        /// The queue.
        qid: u16,
        /// The read's first LBA.
        slba: u64,
    },
    /// A command completed with an error status.
    #[error("queue {qid}: {} of LBA {slba} failed: {status}", if *.write { "write" } else { "read" })]
    Status {
        /// The queue.
        qid: u16,
        /// First LBA.
        slba: u64,
        /// A write (else a read).
        write: bool,
        /// The status.
        status: Status,
    },
    /// Read data is not what was written.
    #[error("verify failed on queue {qid}: {mismatch}")]
    Verify {
        /// The queue (or local queue index).
        qid: u16,
        /// Where and how it differs.
        mismatch: Mismatch,
    },
    /// A local read or write failed.
    #[error("{} at byte {offset} failed: {error}", if *.write { "write" } else { "read" })]
    LocalIo {
        /// Byte offset.
        offset: u64,
        /// A write (else a read).
        write: bool,
        /// The error.
        error: io::Error,
    },
    /// A local read or write moved fewer bytes than asked.
    #[error("{} at byte {offset} moved {done} of {len} bytes", if *.write { "write" } else { "read" })]
    ShortIo {
        /// Byte offset.
        offset: u64,
        /// A write (else a read).
        write: bool,
        /// Bytes moved.
        done: u32,
        /// Bytes asked for.
        len: u32,
    },
    /// Commands were still outstanding long after the end of the run.
    #[error("{outstanding} commands still outstanding {secs} s after the end of the run")]
    Stuck {
        /// How many.
        outstanding: usize,
        /// How long it waited.
        secs: u64,
    },
}
