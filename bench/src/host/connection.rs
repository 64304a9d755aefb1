//! One NVMe/TCP connection (one queue pair) seen from the host: the ICReq /
//! ICResp exchange, Connect, and pipelined commands with their data transfers.
//!
//! Blocking and single-threaded: [`Connection::submit`] sends a capsule and
//! returns its CID; [`Connection::wait`] and [`Connection::wait_any`] receive
//! PDUs until a completion arrives, answering every R2T on the way. Each
//! outstanding command moves through these states (only the host's view):
//!
//! ```text
//!            submit
//!              |
//!              v
//!   +---- Outstanding ----+--------------------+
//!   |   R2T: send H2CData |  C2HData: copy     |
//!   |   for its range     |  into the buffer   |
//!   |  (stays outstanding)|  (stays, or ends   |
//!   |                     |   if SUCCESS set)  |
//!   v                     v                    v
//!  CapsuleResp -------> Finished (waits for wait()/wait_any()) ---> returned
//! ```
//!
//! Invariants:
//! - A CID is outstanding or finished-but-unclaimed at most once; the
//!   allocator skips both.
//! - Every R2T, C2HData and CapsuleResp is checked against the command it
//!   names: an unknown CID, data outside the buffer or asked for twice, data
//!   after LAST_PDU, a successful completion with data missing are protocol
//!   violations ([`Violation`]) returned by whichever wait is running.
//! - Every wait is bounded by the connection's time-out.
//! - The raw calls ([`Connection::send_raw`], [`Connection::recv_pdu`], ...)
//!   bypass this bookkeeping; a test that mixes them with `submit`/`wait`
//!   owns the consequences.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fabriq_target::nvme::sqe::Connect;
use fabriq_target::nvme::sqe::fabrics::CATTR_DISABLE_SQ_FLOW_CONTROL;
use fabriq_target::nvme::status::connect_dw0_cntlid;
use fabriq_target::nvme::{Cqe, Status};
use fabriq_target::tcp::digest::DataDigestMismatch;
use fabriq_target::tcp::pdu::{
    self, C2hData, CapsuleResp, Digests, Fes, H2cData, IcReq, IcResp, Pdu, PduType, R2t, TermReq,
};

use super::command::{self, ADMIN_ICD_BYTES, Command, Data};
use super::error::{DigestKind, HostError, Violation};
use super::options::HostOptions;
use super::wire::{self, Framing, ReceivedPdu, Tamper, Wire};

/// A completed command: its CQE and, for commands that read, the data.
/// An error status is a normal completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The completion queue entry (synthesized with status 0 when the data
    /// came with the C2HData SUCCESS flag and no CapsuleResp).
    pub cqe: Cqe,
    /// Data read from the controller (empty for other commands).
    pub data: Vec<u8>,
}

impl Completion {
    /// The status field.
    pub fn status(&self) -> Status {
        self.cqe.status
    }

    /// Whether the command succeeded.
    pub fn is_success(&self) -> bool {
        self.cqe.status.is_success()
    }

    /// `Ok(self)` when the command succeeded, else [`HostError::Status`].
    pub fn success(self) -> Result<Completion, HostError> {
        if self.is_success() { Ok(self) } else { Err(HostError::Status(self.cqe)) }
    }
}

/// Non-overlapping byte ranges of a command's data, sorted.
#[derive(Debug, Default)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Adds `[start, start + len)` unless it overlaps a range already there.
    fn insert(&mut self, start: u64, len: u64) -> bool {
        let end = start + len;
        let at = self.0.partition_point(|&(s, _)| s < start);
        let overlaps_before = at > 0 && self.0[at - 1].1 > start;
        let overlaps_after = at < self.0.len() && self.0[at].0 < end;
        if overlaps_before || overlaps_after {
            return false;
        }
        self.0.insert(at, (start, end));
        true
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }
}

/// How an outstanding command's data is moving.
#[derive(Debug)]
enum Transfer {
    /// No data, or data that went in the capsule.
    Done,
    /// Data for the controller, sent when R2Ts ask for it.
    ByR2t { data: Vec<u8>, requested: Ranges },
    /// Data from the controller, arriving in C2HData PDUs.
    Reading { buf: Vec<u8>, received: Ranges, last_seen: bool, digest_error: Option<DataDigestMismatch> },
}

/// What a connected queue hands over when another driver (the load
/// generator's io_uring engine) takes its socket: the socket at a PDU
/// boundary and everything negotiated on it.
#[derive(Debug)]
pub struct QueueParts {
    /// The socket, blocking, with no time-outs set and nothing buffered on
    /// the host's side (the wire reads unbuffered).
    pub stream: TcpStream,
    /// Digests and the controller's CPDA.
    pub framing: Framing,
    /// The host's own HPDA in bytes: where C2HData payloads start.
    pub hpda_alignment: u32,
    /// Most data per H2CData PDU (the ICResp's MAXH2CDATA).
    pub maxh2cdata: u32,
    /// Most host-to-controller data that goes in a capsule.
    pub icd_limit: u32,
    /// The queue's QID.
    pub qid: u16,
    /// Commands the queue may hold outstanding (SQSIZE + 1).
    pub queue_depth: usize,
    /// Whether the host disabled SQ flow control, so that reads may end with
    /// a C2HData SUCCESS flag and no CapsuleResp.
    pub sq_flow_control_disabled: bool,
}

/// One NVMe/TCP connection, host side: a queue pair once connected.
#[derive(Debug)]
pub struct Connection {
    wire: Wire<TcpStream>,
    opts: HostOptions,
    ic_resp: Option<IcResp>,
    qid: Option<u16>,
    icd_limit: u32,
    queue_depth: usize,
    sq_flow_control_disabled: bool,
    next_cid: u16,
    outstanding: BTreeMap<u16, Transfer>,
    finished: BTreeMap<u16, Result<Completion, HostError>>,
    finish_order: VecDeque<u16>,
}

impl Connection {
    /// Connects over TCP and exchanges ICReq/ICResp.
    pub fn open(addr: SocketAddr, opts: &HostOptions) -> Result<Connection, HostError> {
        let mut connection = Connection::open_raw(addr, opts)?;
        connection.initialize()?;
        Ok(connection)
    }

    /// Connects over TCP and sends nothing: for tests of the ICReq itself
    /// ([`Connection::tamper_next`], [`Connection::send_raw`], then
    /// [`Connection::initialize`] or [`Connection::recv_pdu`]).
    pub fn open_raw(addr: SocketAddr, opts: &HostOptions) -> Result<Connection, HostError> {
        let stream = TcpStream::connect_timeout(&addr, opts.io_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(opts.io_timeout))?;
        Ok(Connection {
            wire: Wire::new(stream, pdu::pda_alignment(opts.hpda)),
            opts: opts.clone(),
            ic_resp: None,
            qid: None,
            icd_limit: 0,
            queue_depth: 1,
            sq_flow_control_disabled: false,
            next_cid: 0,
            outstanding: BTreeMap::new(),
            finished: BTreeMap::new(),
            finish_order: VecDeque::new(),
        })
    }

    /// Sends the ICReq the options describe and checks the ICResp: PFV 0,
    /// exactly the digests asked for (as Linux requires), CPDA and MAXH2CDATA
    /// in range (checked by [`IcResp::decode`]).
    pub fn initialize(&mut self) -> Result<&IcResp, HostError> {
        let requested = Digests { header: self.opts.header_digest, data: self.opts.data_digest };
        let ic_req = IcReq { pfv: 0, hpda: self.opts.hpda, digests: requested, maxr2t: self.opts.maxr2t };
        self.wire.send(PduType::IcReq, wire::ic_req_bytes(&ic_req))?;
        let received = self.recv_until(Instant::now() + self.opts.io_timeout)?;
        let ic_resp = match received.pdu {
            Pdu::IcResp(ic_resp) => ic_resp,
            Pdu::TermReq(term_req) => return Err(term_req_error(&term_req)),
            _ => return Err(Violation::Unexpected(received.pdu_type()).into()),
        };
        if ic_resp.digests != requested {
            return Err(Violation::DigestsNotEchoed { requested, granted: ic_resp.digests }.into());
        }
        self.wire.set_framing(Framing { digests: ic_resp.digests, cpda_alignment: pdu::pda_alignment(ic_resp.cpda) });
        Ok(self.ic_resp.insert(ic_resp))
    }

    /// Connect on the admin queue (QID 0) asking for a dynamic controller;
    /// returns its CNTLID. A refused Connect is [`HostError::Status`] with the
    /// status and dw0 (IATTR/IPO for Invalid Parameters).
    pub fn connect_admin(&mut self, subnqn: &str, kato_ms: u32, sqsize: u16) -> Result<u16, HostError> {
        let cqe = self.connect(subnqn, 0, 0xFFFF, sqsize, kato_ms)?;
        self.icd_limit = ADMIN_ICD_BYTES;
        Ok(connect_dw0_cntlid(cqe.dw0))
    }

    /// Connect of I/O queue `qid` of controller `cntlid`. Set
    /// [`Connection::set_icd_limit`] from the controller's IOCCSZ afterwards
    /// to send writes in the capsule.
    pub fn connect_io(&mut self, subnqn: &str, cntlid: u16, qid: u16, sqsize: u16) -> Result<(), HostError> {
        self.connect(subnqn, qid, cntlid, sqsize, 0).map(|_| ())
    }

    fn connect(&mut self, subnqn: &str, qid: u16, cntlid: u16, sqsize: u16, kato_ms: u32) -> Result<Cqe, HostError> {
        let cattr = if self.opts.disable_sq_flow_control { CATTR_DISABLE_SQ_FLOW_CONTROL } else { 0 };
        let connect = Connect { recfmt: 0, qid, sqsize, cattr, kato_ms };
        let data = command::connect_data(self.opts.hostid, cntlid, subnqn, &self.opts.hostnqn);
        let completion = self.execute(Command::connect(&connect, data))?.success()?;
        self.qid = Some(qid);
        // Linux keeps SQSIZE + 1 commands outstanding; so does this host.
        self.queue_depth = usize::from(sqsize) + 1;
        self.sq_flow_control_disabled = self.opts.disable_sq_flow_control;
        Ok(completion.cqe)
    }

    /// The options the connection was opened with.
    pub fn options(&self) -> &HostOptions {
        &self.opts
    }

    /// What the controller answered to the ICReq.
    pub fn ic_resp(&self) -> Option<&IcResp> {
        self.ic_resp.as_ref()
    }

    /// The queue this connection carries, once connected.
    pub fn qid(&self) -> Option<u16> {
        self.qid
    }

    /// Most host-to-controller data sent in the capsule of a non-fabrics
    /// command (8192 on the admin queue once connected, 0 on I/O queues until
    /// set).
    pub fn icd_limit(&self) -> u32 {
        self.icd_limit
    }

    /// Sets the in-capsule data limit, usually to [`icd_limit_from_ioccsz`]
    /// of the controller's Identify data.
    pub fn set_icd_limit(&mut self, bytes: u32) {
        self.icd_limit = bytes;
    }

    /// Most commands outstanding at once: 1 before Connect, SQSIZE + 1 after.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    /// Overrides the queue depth, e.g. to submit more commands than the
    /// controller allows.
    pub fn set_queue_depth(&mut self, depth: usize) {
        self.queue_depth = depth;
    }

    /// Commands submitted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// How PDUs are framed (digests, CPDA).
    pub fn framing(&self) -> Framing {
        self.wire.framing()
    }

    /// Submits a command and returns its CID.
    ///
    /// # Panics
    /// When the queue depth is reached (wait for a completion first, or raise
    /// it with [`Connection::set_queue_depth`]).
    pub fn submit(&mut self, command: Command) -> Result<u16, HostError> {
        assert!(
            self.outstanding.len() < self.queue_depth,
            "{} commands outstanding, the queue depth",
            self.queue_depth
        );
        let cid = self.allocate_cid();
        let capsule = command.to_capsule(cid, self.wire.framing(), self.icd_limit);
        let transfer = match command.data {
            Data::ToController(data) if !capsule.in_capsule && !data.is_empty() => {
                Transfer::ByR2t { data, requested: Ranges::default() }
            }
            Data::FromController(len) if len > 0 => Transfer::Reading {
                buf: vec![0; len],
                received: Ranges::default(),
                last_seen: false,
                digest_error: None,
            },
            _ => Transfer::Done,
        };
        self.wire.send(PduType::CapsuleCmd, capsule.bytes)?;
        self.outstanding.insert(cid, transfer);
        Ok(cid)
    }

    fn allocate_cid(&mut self) -> u16 {
        for _ in 0..=u16::MAX {
            let cid = self.next_cid;
            self.next_cid = self.next_cid.wrapping_add(1);
            if !self.outstanding.contains_key(&cid) && !self.finished.contains_key(&cid) {
                return cid;
            }
        }
        panic!("all 65536 CIDs are outstanding or completed and never waited for");
    }

    /// Submits a command and waits for its completion.
    pub fn execute(&mut self, command: Command) -> Result<Completion, HostError> {
        let cid = self.submit(command)?;
        self.wait(cid)
    }

    /// Waits for command `cid`, within the connection's time-out.
    pub fn wait(&mut self, cid: u16) -> Result<Completion, HostError> {
        self.wait_timeout(cid, self.opts.io_timeout)
    }

    /// Waits for command `cid` at most `timeout` (an Asynchronous Event
    /// Request may take long).
    ///
    /// # Panics
    /// When `cid` was never submitted or was already returned.
    pub fn wait_timeout(&mut self, cid: u16, timeout: Duration) -> Result<Completion, HostError> {
        assert!(
            self.outstanding.contains_key(&cid) || self.finished.contains_key(&cid),
            "cid {cid} is not outstanding"
        );
        let deadline = Instant::now() + timeout;
        while !self.finished.contains_key(&cid) {
            self.pump(deadline)?;
        }
        self.finish_order.retain(|&done| done != cid);
        self.finished.remove(&cid).expect("finished")
    }

    /// Waits for whichever outstanding command completes first (or the
    /// earliest one already completed and not yet returned).
    ///
    /// # Panics
    /// When nothing is outstanding.
    pub fn wait_any(&mut self) -> Result<Completion, HostError> {
        assert!(!self.outstanding.is_empty() || !self.finished.is_empty(), "no command is outstanding");
        let deadline = Instant::now() + self.opts.io_timeout;
        while self.finish_order.is_empty() {
            self.pump(deadline)?;
        }
        let cid = self.finish_order.pop_front().expect("finished");
        self.finished.remove(&cid).expect("finished")
    }

    /// Receives one PDU and acts on it.
    fn pump(&mut self, deadline: Instant) -> Result<(), HostError> {
        let received = self.recv_until(deadline)?;
        let digest_error = received.data_digest_error;
        match received.pdu {
            Pdu::CapsuleResp(resp) => self.on_capsule_resp(&resp),
            Pdu::C2hData(data) => self.on_c2h_data(&data, received.data(), digest_error),
            Pdu::R2t(r2t) => self.on_r2t(&r2t),
            Pdu::TermReq(term_req) => Err(term_req_error(&term_req)),
            _ => Err(Violation::Unexpected(received.pdu_type()).into()),
        }
    }

    fn on_capsule_resp(&mut self, resp: &CapsuleResp) -> Result<(), HostError> {
        let cqe = Cqe::decode(&resp.cqe);
        let transfer = self
            .outstanding
            .remove(&cqe.cid)
            .ok_or(Violation::UnknownCid { pdu_type: PduType::CapsuleResp, cid: cqe.cid })?;
        let result = complete(cqe, transfer)?;
        self.finish(cqe.cid, result);
        Ok(())
    }

    fn on_c2h_data(
        &mut self,
        header: &C2hData,
        data: &[u8],
        digest_error: Option<DataDigestMismatch>,
    ) -> Result<(), HostError> {
        let cid = header.cccid;
        let transfer =
            self.outstanding.get_mut(&cid).ok_or(Violation::UnknownCid { pdu_type: PduType::C2hData, cid })?;
        let Transfer::Reading { buf, received, last_seen, digest_error: command_digest_error } = transfer else {
            return Err(Violation::C2hDataWithoutRead { cid }.into());
        };
        let out_of_range =
            Violation::C2hDataOutOfRange { cid, datao: header.datao, datal: header.datal, len: buf.len() };
        let start = u64::from(header.datao);
        let end = start + u64::from(header.datal);
        if *last_seen || end > buf.len() as u64 || !received.insert(start, u64::from(header.datal)) {
            return Err(out_of_range.into());
        }
        buf[start as usize..end as usize].copy_from_slice(data);
        *last_seen = header.last;
        if command_digest_error.is_none() {
            *command_digest_error = digest_error;
        }
        if header.success {
            if !self.sq_flow_control_disabled {
                return Err(Violation::SuccessWithFlowControl { cid }.into());
            }
            let transfer = self.outstanding.remove(&cid).expect("outstanding");
            let cqe = Cqe { sqid: self.qid.unwrap_or(0), ..Cqe::success(cid, 0) };
            let result = complete(cqe, transfer)?;
            self.finish(cid, result);
        }
        Ok(())
    }

    fn on_r2t(&mut self, r2t: &R2t) -> Result<(), HostError> {
        let cid = r2t.cccid;
        let transfer = self.outstanding.get_mut(&cid).ok_or(Violation::UnknownCid { pdu_type: PduType::R2t, cid })?;
        let Transfer::ByR2t { data, requested } = transfer else {
            return Err(Violation::R2tWithoutData { cid }.into());
        };
        let start = u64::from(r2t.r2to);
        let end = start + u64::from(r2t.r2tl);
        if end > data.len() as u64 || !requested.insert(start, u64::from(r2t.r2tl)) {
            return Err(Violation::R2tOutOfRange { cid, r2to: r2t.r2to, r2tl: r2t.r2tl, len: data.len() }.into());
        }
        let maxh2cdata = self.ic_resp.map_or(pdu::MIN_MAXH2CDATA, |ic| ic.maxh2cdata);
        let framing = self.wire.framing();
        let mut offset = r2t.r2to;
        let end = r2t.r2to + r2t.r2tl;
        // MAXH2CDATA is at least 4096, so this loop ends.
        while offset < end {
            let datal = (end - offset).min(maxh2cdata);
            let header = H2cData { cccid: cid, ttag: r2t.ttag, datao: offset, datal, last: offset + datal == end };
            let chunk = &data[offset as usize..(offset + datal) as usize];
            self.wire.send(PduType::H2cData, framing.h2c_data(&header, chunk))?;
            offset += datal;
        }
        Ok(())
    }

    fn finish(&mut self, cid: u16, result: Result<Completion, HostError>) {
        self.finished.insert(cid, result);
        self.finish_order.push_back(cid);
    }

    fn recv_until(&mut self, deadline: Instant) -> Result<ReceivedPdu, HostError> {
        let timeout = self.opts.io_timeout;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(HostError::Timeout(timeout));
        }
        self.wire.stream().set_read_timeout(Some(remaining))?;
        self.wire.recv(timeout)
    }

    /// Takes the socket and the negotiated framing out of a connected,
    /// idle queue, for a driver of its own.
    ///
    /// # Panics
    /// When the queue is not connected, has commands outstanding or
    /// completions not yet waited for, or its stream is out of step.
    pub fn into_queue_parts(self) -> Result<QueueParts, HostError> {
        let qid = self.qid.expect("into_queue_parts of a queue that is not connected");
        let ic_resp = self.ic_resp.expect("connected, so initialized");
        assert!(self.outstanding.is_empty() && self.finished.is_empty(), "into_queue_parts with commands outstanding");
        let framing = self.wire.framing();
        let stream = self.wire.into_stream();
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        Ok(QueueParts {
            stream,
            framing,
            hpda_alignment: pdu::pda_alignment(self.opts.hpda),
            maxh2cdata: ic_resp.maxh2cdata,
            icd_limit: self.icd_limit,
            qid,
            queue_depth: self.queue_depth,
            sq_flow_control_disabled: self.sq_flow_control_disabled,
        })
    }

    /// Sends any bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        self.wire.send_raw(bytes)
    }

    /// Receives whatever PDU comes next, bypassing the command bookkeeping;
    /// a data digest mismatch is [`HostError::Digest`] (after the whole PDU
    /// was read).
    pub fn recv_pdu(&mut self) -> Result<ReceivedPdu, HostError> {
        self.recv_pdu_timeout(self.opts.io_timeout)
    }

    /// [`Connection::recv_pdu`] with its own time-out.
    pub fn recv_pdu_timeout(&mut self, timeout: Duration) -> Result<ReceivedPdu, HostError> {
        let received = self.recv_until(Instant::now() + timeout)?;
        if let Some(mismatch) = received.data_digest_error {
            let cid = match received.pdu {
                Pdu::C2hData(data) => Some(data.cccid),
                _ => None,
            };
            return Err(HostError::Digest {
                kind: DigestKind::Data,
                cid,
                computed: mismatch.computed,
                received: mismatch.received,
            });
        }
        Ok(received)
    }

    /// Rewrites the next PDU of `pdu_type` the connection sends (whole PDU,
    /// digests included) with `edit`; see [`wire::refresh_header_digest`].
    pub fn tamper_next(&mut self, pdu_type: PduType, edit: impl FnOnce(&mut Vec<u8>) + Send + 'static) {
        self.wire.tamper(Tamper::new(pdu_type, edit));
    }

    /// The CapsuleCmd PDU `submit` would send for `command` as CID `cid`,
    /// to edit and send with [`Connection::send_raw`].
    pub fn encode_capsule(&self, command: &Command, cid: u16) -> Vec<u8> {
        command.to_capsule(cid, self.wire.framing(), self.icd_limit).bytes
    }

    /// Sends one H2CData PDU, framed with the connection's digests and CPDA,
    /// whatever its fields say.
    pub fn send_h2c_data(&mut self, header: &H2cData, data: &[u8]) -> Result<(), HostError> {
        let bytes = self.wire.framing().h2c_data(header, data);
        self.wire.send(PduType::H2cData, bytes)
    }

    /// Sends an H2CTermReq quoting `offending_header`.
    pub fn send_term_req(&mut self, fes: Fes, fei: u32, offending_header: &[u8]) -> Result<(), HostError> {
        let term_req = TermReq { direction: pdu::Direction::H2c, fes, fei, data: pdu::TermData::new(offending_header) };
        self.wire.send(PduType::H2cTermReq, wire::term_req_bytes(&term_req))
    }

    /// Closes the sending half of the socket (a host that vanishes
    /// mid-transfer); the controller sees end of stream.
    pub fn shutdown_write(&mut self) -> Result<(), HostError> {
        self.wire.stream().shutdown(Shutdown::Write)?;
        Ok(())
    }

    /// The host's end of the socket.
    pub fn local_addr(&self) -> Result<SocketAddr, HostError> {
        Ok(self.wire.stream().local_addr()?)
    }
}

/// The in-capsule data limit of an I/O queue whose controller reports
/// `ioccsz` (Identify Controller, 16-byte units, SQE included).
pub fn icd_limit_from_ioccsz(ioccsz: u32) -> u32 {
    ioccsz.saturating_mul(16).saturating_sub(64)
}

/// The completion of a command whose CQE (real or synthesized) arrived.
fn complete(cqe: Cqe, transfer: Transfer) -> Result<Result<Completion, HostError>, HostError> {
    let Transfer::Reading { buf, received, last_seen, digest_error } = transfer else {
        return Ok(Ok(Completion { cqe, data: Vec::new() }));
    };
    if let Some(mismatch) = digest_error {
        return Ok(Err(HostError::Digest {
            kind: DigestKind::Data,
            cid: Some(cqe.cid),
            computed: mismatch.computed,
            received: mismatch.received,
        }));
    }
    let complete = received.total() == buf.len() as u64 && last_seen;
    if cqe.status.is_success() && !complete {
        return Err(Violation::MissingData { cid: cqe.cid, received: received.total() as usize, len: buf.len() }.into());
    }
    Ok(Ok(Completion { cqe, data: buf }))
}

fn term_req_error(term_req: &TermReq) -> HostError {
    HostError::TermReq { fes: term_req.fes, fei: term_req.fei, data: term_req.data.as_slice().to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_refuse_overlaps() {
        let mut ranges = Ranges::default();
        assert!(ranges.insert(4096, 4096));
        assert!(ranges.insert(0, 4096));
        assert!(!ranges.insert(4095, 1));
        assert!(!ranges.insert(8191, 2));
        assert!(!ranges.insert(0, 8192));
        assert!(ranges.insert(8192, 1));
        assert_eq!(ranges.total(), 8193);
    }

    #[test]
    fn ioccsz_to_icd_limit() {
        assert_eq!(icd_limit_from_ioccsz(4), 0);
        assert_eq!(icd_limit_from_ioccsz(260), 4096);
        assert_eq!(icd_limit_from_ioccsz(0), 0);
    }
}
