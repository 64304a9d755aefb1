//! One NVMe/TCP connection (one NVMe queue) as a state machine with no I/O of its own
//! (NVMe/TCP transport binding 1.0, sections 3.3 to 3.6).
//!
//! The reactor owns the socket and the ring; it asks the queue where to receive
//! ([`Queue::recv_window`]), what to send ([`Queue::gather`]) and tells it what happened
//! ([`Queue::on_recv`], [`Queue::on_sent`], [`Queue::on_backend`], [`Queue::poll`]). The queue
//! answers by queueing PDUs, pushing backend submissions into [`Io::ops`] and asking to close.
//!
//! ```text
//!  receive side (Rx)                         a command slot (SlotState)
//!
//!  +--------+  header complete  +------+      Free -> [WaitBuffer] -> [WaitData] -> Executing
//!  | Header |------------------>| Data |        ^      (pool empty)   (R2T out)    (backend,
//!  +--------+<------------------+------+        |                                  admin)
//!      |    data (and digest) placed             |                                    |
//!      |                                         +--- Sending (C2HData, CapsuleResp) <-+
//!      +-- fatal error: C2HTermReq queued, Rx stopped, close once it is sent
//! ```
//!
//! Invariants:
//! - a PDU's common header is checked against the size table ([`pdu::check`]) before any
//!   other byte of it is used; large data is received straight into the command's buffer;
//! - command slots are allocated at Connect (SQSIZE entries) and the transfer tag of an R2T is
//!   the slot index;
//! - a slot's buffers go back to the pool only when neither the kernel nor the send queue
//!   uses them (the reactor frees a connection only when nothing of it is in flight);
//! - the send queue holds at most one R2T, one C2HData and one CapsuleResp per slot, plus
//!   one control PDU, so it is bounded by the slot count;
//! - the data R2Ts ask for and that has not arrived stays within the write data window
//!   (`h2c_window_bytes`; the first R2T always goes out); the others wait in `r2t_wait`,
//!   oldest first, and go out as data arrives;
//! - while the queue's reads wait long for their data (`read_wait_us` at least
//!   `slow_read_us`), one send carries at most `c2h_slice_bytes`, so that the commands the
//!   host sends back for the first data are taken in (and reach the backend) before the
//!   rest of a burst has gone out;
//! - a bad command is completed with an NVMe status and the connection lives on; a protocol
//!   violation gets a C2HTermReq and the connection closes;
//! - a command runs against the namespace table it started with (`Tables`): the control plane
//!   may add, remove or replace namespaces at any time, a capsule picks up the newest table,
//!   and an old table (and the backends in it) lives until its last command has completed;
//! - a command's backend operations (several when a volume's I/O crosses extents, or a flush
//!   chained after a write zeroes) are accounted together, by total bytes: any error fails the
//!   command, and so does a short total; it completes once the last one is in.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend;
use crate::buffers::{Buf, BufferPool};
pub use crate::ctrl::exec::Io;
use crate::ctrl::exec::{self, Closing, Command, Core, NullData, Tables, Transport, first_error};
use crate::ctrl::io::{IoCmd, IoOp};
use crate::ctrl::{self, Binding, DataDir, Exec, Prepared};
use crate::nvme::sqe::Psdt;
use crate::nvme::{Cqe, SglDescriptor, SglKind, Sqe, Status};
use crate::subsys::{Limits, ListenerInfo, NsTable, Target};
use crate::tcp::digest::{self, DIGEST_LEN, DataDigest};
use crate::tcp::pdu::{
    self, C2hData, COMMON_HEADER_LEN, CapsuleResp, CommonHeader, Digests, Fatal, IcReq, IcResp, Pdu, R2t, Role, TermReq,
};

/// Data at least this large that is not yet in the staging buffer is received straight into
/// its destination; smaller pieces come through the staging buffer with what follows them.
const DIRECT_RECV_MIN: u32 = 2048;
/// The staging window while the host streams large data PDUs: room for a few headers.
const HEADER_WINDOW: usize = 1024;
/// Data PDUs at least this large switch the staging buffer to `HEADER_WINDOW`.
const LARGE_DATA: u32 = 16 * 1024;
/// PDUs parsed per receive completion before the reactor gets a turn.
const RX_BUDGET: usize = 256;
/// R2Ts outstanding per command, whatever larger number the host's MAXR2T allows.
const MAX_R2T_PER_COMMAND: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first PDU must be an ICReq.
    AwaitIcReq,
    /// Initialized: capsules and data flow.
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    No,
    /// Close once the send queue is empty (after a C2HTermReq or a Disconnect's response).
    AfterSend,
    /// Close at once (peer gone, controller torn down).
    Now,
}

/// Where the data of the PDU being received goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataTo {
    /// In-capsule data of a command.
    Icd { slot: u16 },
    /// An H2CData PDU answering a command's R2T.
    H2c { slot: u16, last: bool },
    /// In-capsule data of a command that already failed: received and dropped.
    Drop { slot: u16 },
}

impl DataTo {
    fn slot(self) -> u16 {
        match self {
            DataTo::Icd { slot } | DataTo::H2c { slot, .. } | DataTo::Drop { slot } => slot,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Incoming {
    to: DataTo,
    dest: *mut u8,
    len: u32,
    done: u32,
    digest: bool,
}

#[derive(Debug, Clone, Copy)]
enum Rx {
    /// The next bytes start a PDU.
    Header,
    /// The data of a PDU whose header was taken.
    Data(Incoming),
    /// Receiving stopped (fatal error, close, stop).
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Its in-capsule data is arriving; moved on when the last byte (and digest) is in.
    ReceivingIcd,
    /// Needs a data buffer and the pool is empty; moved on when a buffer comes back.
    WaitBuffer,
    /// R2T queued or sent; moved on by H2CData.
    WaitData,
    /// Executing: backend operations in flight, moved on by their completions.
    Executing,
    /// An Asynchronous Event Request; moved on by an event.
    AwaitEvent,
    /// Its PDUs are queued or being sent; freed when the last is sent.
    Sending,
}

impl SlotState {
    /// The transitions a command slot may take (see the module's diagram). Anything else is
    /// a bug in the queue, caught by [`Slot::go`].
    fn may_become(self, next: SlotState) -> bool {
        use SlotState as S;
        matches!(
            (self, next),
            (S::Free, S::ReceivingIcd | S::WaitBuffer | S::WaitData | S::Executing | S::Sending)
                | (S::ReceivingIcd, S::Executing | S::Sending)
                | (S::WaitBuffer, S::WaitData | S::Executing)
                | (S::WaitData, S::Executing | S::Sending)
                | (S::Executing, S::AwaitEvent | S::Sending)
                | (S::AwaitEvent, S::Sending | S::Free)
                | (S::Sending, S::Free)
        )
    }
}

/// Where a command's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    None,
    /// A pool buffer (`Slot::buf`).
    Buf,
    /// Received into the reactor's sink (null backend writes).
    Sink,
    /// Sent from the pool's zero region (null backend reads).
    Zeroes,
}

/// Header bytes of the PDUs a slot sends; boxed so their addresses stay put while queued.
#[derive(Debug)]
struct Headers {
    data: [u8; pdu::HEADER_BUF_LEN],
    data_len: u8,
    resp: [u8; 32],
    resp_len: u8,
    r2t: [u8; 32],
    r2t_len: u8,
    ddgst: [u8; DIGEST_LEN],
}

#[derive(Debug)]
struct Slot {
    state: SlotState,
    /// What execution uses, shared with the RDMA queue.
    cmd: Command,
    data: Data,
    received: u32,
    r2t_requested: u32,
    r2t_outstanding: u32,
    r2t_queued: bool,
    /// In `Queue::r2t_wait`, for an R2T the connection's data window has no room for yet.
    r2t_waiting: bool,
    success_flag: bool,
    hdr: Box<Headers>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: SlotState::Free,
            cmd: Command::new(),
            data: Data::None,
            received: 0,
            r2t_requested: 0,
            r2t_outstanding: 0,
            r2t_queued: false,
            r2t_waiting: false,
            success_flag: false,
            hdr: Box::new(Headers {
                data: [0; pdu::HEADER_BUF_LEN],
                data_len: 0,
                resp: [0; 32],
                resp_len: 0,
                r2t: [0; 32],
                r2t_len: 0,
                ddgst: [0; DIGEST_LEN],
            }),
        }
    }

    /// Moves the slot to `next`, checking the transition is one the state machine has.
    fn go(&mut self, next: SlotState) {
        assert!(self.state.may_become(next), "command slot {:?} -> {next:?}", self.state);
        self.state = next;
    }

    fn data_ptr(&self, zeroes: *const u8) -> *const u8 {
        match self.data {
            Data::Zeroes => zeroes,
            _ => self.cmd.buf.as_ref().expect("buffer of a command sending data").as_ptr(),
        }
    }
}

/// A PDU waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tx {
    /// ICResp or C2HTermReq, from `Queue::control`.
    Control,
    R2t(u16),
    /// C2HData: header, data, data digest.
    Data(u16),
    Resp(u16),
}

pub struct Queue {
    /// What execution needs of the queue, shared with the RDMA queue.
    core: Core,
    reactor: usize,
    listener: ListenerInfo,
    phase: Phase,
    close: Close,
    digests: Digests,
    /// Alignment of C2HData data the host asked for (HPDA).
    host_alignment: u32,
    max_r2t: u32,
    maxh2cdata: u32,
    /// Most H2C data bytes asked for by R2Ts and not yet received (at least one R2T is
    /// always let out). Past it, R2Ts wait in `r2t_wait`, oldest first.
    h2c_window: u32,
    h2c_granted: u32,
    r2t_wait: VecDeque<u16>,
    staging: Option<Buf>,
    head: usize,
    tail: usize,
    rx: Rx,
    rx_direct: bool,
    /// The last data received was large: the host is streaming big transfers, so the next
    /// header is read through a small window and the data behind it lands in place rather
    /// than being copied out of the staging buffer.
    large_data: bool,
    /// Parsing stopped because a command's in-capsule data needs a buffer the pool lacks.
    rx_blocked: bool,
    /// The reactor's sink and zero regions (valid for the reactor's life).
    sink: *mut u8,
    zeroes: *const u8,
    sqsize: u16,
    sqhd: u16,
    sq_flow_disabled: bool,
    slots: Vec<Slot>,
    free: Vec<u16>,
    wait_buffer: VecDeque<u16>,
    tx: VecDeque<Tx>,
    tx_sent: usize,
    /// ICResp or C2HTermReq bytes; boxed, like the slots' headers, so that a send in flight
    /// still points at them when the reactor's table of connections grows and moves the queue.
    control: Box<[u8; pdu::HEADER_BUF_LEN]>,
    control_len: usize,
    in_flight: u32,
    /// Moving mean (weight 1/8) of how long a read waited for its data, from its capsule's
    /// turn to the turn its data was ready, microseconds.
    read_wait_us: u32,
}

impl Queue {
    pub fn new(
        target: Arc<Target>,
        reactor: usize,
        listener: ListenerInfo,
        peer: Option<SocketAddr>,
        staging: Buf,
        pool: &BufferPool,
    ) -> Queue {
        let maxh2cdata = target.limits.mdts_bytes;
        let h2c_window = target.limits.h2c_window_bytes;
        let max_data = pool.max_buf_bytes();
        Queue {
            core: Core::new(target, peer, None),
            reactor,
            listener,
            phase: Phase::AwaitIcReq,
            close: Close::No,
            digests: Digests::NONE,
            host_alignment: 4,
            max_r2t: 1,
            maxh2cdata,
            h2c_window,
            h2c_granted: 0,
            r2t_wait: VecDeque::new(),
            staging: Some(staging),
            head: 0,
            tail: 0,
            rx: Rx::Header,
            rx_direct: false,
            large_data: false,
            rx_blocked: false,
            sink: pool.sink(max_data),
            zeroes: pool.zeroes(max_data).0,
            read_wait_us: 0,
            sqsize: 1,
            sqhd: 0,
            sq_flow_disabled: false,
            slots: vec![Slot::new()],
            free: vec![0],
            wait_buffer: VecDeque::new(),
            tx: VecDeque::with_capacity(8),
            tx_sent: 0,
            control: Box::new([0; pdu::HEADER_BUF_LEN]),
            control_len: 0,
            in_flight: 0,
        }
    }

    /// Who this queue is, for log lines: host NQN, controller id and queue id once bound.
    pub fn who(&self) -> String {
        self.core.who().to_string()
    }

    /// Once a Connect bound the queue: whether it is an I/O queue (`Some(true)`) or an admin
    /// or discovery queue (`Some(false)`); `None` before.
    pub fn bound_as_io(&self) -> Option<bool> {
        match self.core.binding {
            Binding::Unbound => None,
            Binding::Admin(_) => Some(false),
            Binding::Io(..) => Some(true),
        }
    }

    pub fn wants_close(&self) -> bool {
        match self.close {
            Close::No => false,
            Close::AfterSend => self.tx.is_empty(),
            Close::Now => true,
        }
    }

    /// The peer went away or the socket failed: close without sending anything more.
    pub fn peer_gone(&mut self, why: &str) {
        if self.close != Close::Now {
            tracing::debug!(who = %self.who(), why, "connection ends");
        }
        self.close = Close::Now;
        self.rx = Rx::Stopped;
    }

    fn staged(&self) -> usize {
        self.tail - self.head
    }

    fn staging_cap(&self) -> usize {
        self.staging.as_ref().map_or(0, Buf::capacity)
    }

    fn staged_bytes(&self) -> &[u8] {
        let staging = self.staging.as_ref().expect("staging buffer while receiving");
        &staging.slice(self.tail)[self.head..]
    }

    // ----- receive side -----

    /// Where the next receive should write, or `None` when receiving is paused.
    pub fn recv_window(&mut self) -> Option<(*mut u8, usize)> {
        if self.close != Close::No || self.rx_blocked || matches!(self.rx, Rx::Stopped) {
            return None;
        }
        if let Rx::Data(inc) = self.rx {
            let remaining = inc.len - inc.done;
            if self.staged() == 0 && remaining >= DIRECT_RECV_MIN {
                self.rx_direct = true;
                // SAFETY: dest is valid for len bytes (a pool buffer or the sink) and done < len.
                return Some((unsafe { inc.dest.add(inc.done as usize) }, remaining as usize));
            }
        }
        self.rx_direct = false;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        } else if self.head > 0 && self.staging_cap() - self.tail < 4096 {
            let (head, tail) = (self.head, self.tail);
            self.staging.as_mut()?.slice_mut(tail).copy_within(head..tail, 0);
            self.tail -= head;
            self.head = 0;
        }
        let cap = self.staging_cap();
        if self.tail == cap {
            return None;
        }
        let staging = self.staging.as_mut()?;
        let window = if self.large_data { (cap - self.tail).min(HEADER_WINDOW) } else { cap - self.tail };
        // SAFETY: tail < capacity, so the window lies inside the staging buffer.
        Some((unsafe { staging.as_mut_ptr().add(self.tail) }, window))
    }

    /// `n` bytes arrived in the window last handed out.
    pub fn on_recv(&mut self, n: usize, io: &mut Io<'_>) {
        if self.rx_direct {
            if let Rx::Data(ref mut inc) = self.rx {
                inc.done += n as u32;
            }
            self.rx_direct = false;
        } else {
            self.tail += n;
        }
        self.process(io);
    }

    fn process(&mut self, io: &mut Io<'_>) {
        for _ in 0..RX_BUDGET {
            let progressed = match self.rx {
                Rx::Stopped => false,
                Rx::Header => self.parse_pdu(io),
                Rx::Data(inc) => self.take_data(inc, io),
            };
            if !progressed || self.close != Close::No {
                break;
            }
        }
    }

    /// Takes one PDU header out of the staging buffer; false when it is not all here yet.
    fn parse_pdu(&mut self, io: &mut Io<'_>) -> bool {
        if self.staged() < COMMON_HEADER_LEN {
            return false;
        }
        let mut common = [0u8; COMMON_HEADER_LEN];
        common.copy_from_slice(&self.staged_bytes()[..COMMON_HEADER_LEN]);
        let digests = if self.phase == Phase::Live { self.digests } else { Digests::NONE };
        let checked =
            CommonHeader::decode(&common).and_then(|ch| pdu::check(&ch, Role::Controller, digests, &self.pdu_limits()));
        let layout = match checked {
            Ok(layout) => layout,
            Err(fatal) => return self.fatal(fatal, &common),
        };
        let carries_data =
            matches!(layout.pdu_type, pdu::PduType::CapsuleCmd | pdu::PduType::H2cData) && layout.data_len > 0;
        let need = if carries_data { usize::from(layout.pdo) } else { layout.plen as usize };
        if self.staged() < need {
            return false;
        }
        let mut header = [0u8; pdu::HEADER_BUF_LEN];
        header[..need].copy_from_slice(&self.staged_bytes()[..need]);
        let hlen = usize::from(layout.hlen);
        if layout.header_digest_len > 0 {
            let mut received = [0u8; DIGEST_LEN];
            received.copy_from_slice(&header[hlen..hlen + DIGEST_LEN]);
            if let Err(fatal) = digest::check_header_digest(&header[..hlen], received) {
                return self.fatal(fatal, &header[..hlen]);
            }
        }
        let parsed = match Pdu::decode(&header[..need]) {
            Ok(p) => p,
            Err(fatal) => return self.fatal(fatal, &header[..hlen]),
        };
        match (self.phase, parsed) {
            (Phase::AwaitIcReq, Pdu::IcReq(req)) => {
                self.head += need;
                self.on_icreq(req);
                true
            }
            (Phase::Live, Pdu::CapsuleCmd(cmd)) => {
                self.on_capsule(&cmd.sqe, layout.data_len, need, &header[..hlen], io)
            }
            (Phase::Live, Pdu::H2cData(h2c)) => self.on_h2c(h2c, layout.data_len, need, &header[..hlen]),
            (_, Pdu::TermReq(term)) => {
                tracing::warn!(who = %self.who(), fes = ?term.fes, fei = term.fei, "host terminated the connection (H2CTermReq)");
                self.head += need;
                self.close = Close::Now;
                self.rx = Rx::Stopped;
                true
            }
            _ => self.fatal(Fatal::sequence(), &header[..hlen]),
        }
    }

    fn pdu_limits(&self) -> pdu::Limits {
        let icd = match self.core.binding {
            Binding::Io(..) => self.core.target.limits.in_capsule_data_bytes,
            _ => Limits::ADMIN_IN_CAPSULE_DATA_BYTES,
        };
        pdu::Limits { max_icd_bytes: icd, max_data_pdu_bytes: self.maxh2cdata, data_alignment: 4 }
    }

    /// A protocol violation: queue a C2HTermReq quoting the offending header and stop. A
    /// malformed TermReq is not answered with one (see `PduType::is_term_req`): close at once.
    fn fatal(&mut self, fatal: Fatal, header: &[u8]) -> bool {
        if header.first().and_then(|&t| pdu::PduType::try_from(t).ok()).is_some_and(pdu::PduType::is_term_req) {
            tracing::warn!(who = %self.who(), fes = ?fatal.fes, fei = fatal.fei, "malformed TermReq from the host; closing the connection");
            self.close = Close::Now;
            self.rx = Rx::Stopped;
            return false;
        }
        tracing::warn!(who = %self.who(), fes = ?fatal.fes, fei = fatal.fei, "protocol violation; terminating the connection");
        let term = TermReq::reply(Role::Controller, fatal, header);
        self.control_len = term.encode(&mut self.control[..]);
        self.tx.push_back(Tx::Control);
        self.close = Close::AfterSend;
        self.rx = Rx::Stopped;
        false
    }

    fn on_icreq(&mut self, req: IcReq) {
        self.host_alignment = pdu::pda_alignment(req.hpda);
        self.digests = req.digests;
        self.max_r2t = req.maxr2t.saturating_add(1).min(MAX_R2T_PER_COMMAND);
        let resp = IcResp { pfv: 0, cpda: 0, digests: req.digests, maxh2cdata: self.maxh2cdata };
        self.control_len = resp.encode(&mut self.control[..]);
        self.tx.push_back(Tx::Control);
        self.phase = Phase::Live;
        tracing::debug!(peer = ?self.core.peer, digests = ?self.digests, hpda = req.hpda, maxr2t = req.maxr2t, "connection initialized");
    }

    /// A command capsule: `icd` bytes of in-capsule data follow the `hdr_len`-byte header.
    fn on_capsule(&mut self, raw: &[u8; 64], icd: u32, hdr_len: usize, header: &[u8], io: &mut Io<'_>) -> bool {
        if io.stopping && !self.awaits_data() {
            self.rx = Rx::Stopped;
            return false;
        }
        let Some(&slot_no) = self.free.last() else {
            tracing::warn!(who = %self.who(), sqsize = self.sqsize, "host sent more commands than its queue holds");
            return self.fatal(Fatal::sequence(), header);
        };
        let sqe = Sqe::decode(raw);
        Tables::catch_up(self.core.tables.as_mut(), &self.core.binding);
        let empty = NsTable::default();
        let table = self.core.tables.as_ref().map_or(&empty, |t| t.current());
        let prepared = if io.stopping {
            // Stopping, with the data of commands in flight still to come after this capsule:
            // refuse it (the host may retry elsewhere) and read on.
            Err(Status::ABORTED_SQ_DELETION)
        } else {
            ctrl::prepare(&sqe, &self.core.binding, table, &self.core.target.limits)
                .and_then(|p| check_sgl(&sqe, &p, icd).map(|()| p))
        };
        let data = prepared.as_ref().map_or(Data::None, |p| data_kind(p, table));
        // In-capsule data of a good command needs its buffer before the capsule is taken.
        let mut icd_buf = None;
        if icd > 0 && data == Data::Buf {
            match io.pool.get(icd as usize) {
                Some(buf) => icd_buf = Some(buf),
                None => {
                    self.rx_blocked = true;
                    return false;
                }
            }
        }
        self.head += hdr_len;
        self.free.pop();
        self.sqhd = if self.sqhd + 1 >= self.sqsize { 0 } else { self.sqhd + 1 };
        self.in_flight += 1;
        self.core.took_command(io.now);
        let held = self.core.tables.as_mut().map(Tables::hold);
        let slot = &mut self.slots[usize::from(slot_no)];
        debug_assert_eq!(slot.state, SlotState::Free);
        slot.cmd.start(sqe, held, io.now);
        slot.received = 0;
        (slot.r2t_requested, slot.r2t_outstanding, slot.r2t_queued) = (0, 0, false);
        slot.success_flag = false;
        slot.data = data;
        slot.cmd.buf = icd_buf;
        match prepared {
            Err(status) => {
                (slot.cmd.exec, slot.cmd.dir, slot.cmd.len) = (Exec::None, DataDir::None, 0);
                if icd > 0 {
                    slot.go(SlotState::ReceivingIcd);
                    slot.cmd.status = status;
                    self.receive_data(DataTo::Drop { slot: slot_no }, self.sink, icd);
                } else {
                    self.complete(slot_no, status, io);
                }
            }
            Ok(p) => {
                (slot.cmd.exec, slot.cmd.dir, slot.cmd.len) = (p.exec, p.dir, p.len);
                if icd > 0 {
                    slot.go(SlotState::ReceivingIcd);
                    let dest = self.dest(slot_no, 0);
                    self.receive_data(DataTo::Icd { slot: slot_no }, dest, icd);
                } else if p.dir == DataDir::None {
                    self.execute(slot_no, io);
                } else {
                    self.want_buffer(slot_no, io);
                }
            }
        }
        true
    }

    /// Where data for `slot` at byte `offset` goes.
    fn dest(&mut self, slot_no: u16, offset: u32) -> *mut u8 {
        let slot = &mut self.slots[usize::from(slot_no)];
        match (slot.data, slot.cmd.buf.as_mut()) {
            // SAFETY: offset < len <= capacity, checked by the callers.
            (Data::Buf, Some(buf)) => unsafe { buf.as_mut_ptr().add(offset as usize) },
            _ => self.sink,
        }
    }

    fn receive_data(&mut self, to: DataTo, dest: *mut u8, len: u32) {
        self.rx = Rx::Data(Incoming { to, dest, len, done: 0, digest: self.digests.data });
    }

    /// Moves staged bytes into the data's destination; finishes the PDU when all is here.
    fn take_data(&mut self, mut inc: Incoming, io: &mut Io<'_>) -> bool {
        let n = ((inc.len - inc.done) as usize).min(self.staged());
        if n > 0 {
            let src = self.staged_bytes()[..n].as_ptr();
            // SAFETY: dest has room for len bytes and done + n <= len; the staging buffer and
            // the destination (a command buffer or the sink) never overlap.
            unsafe { std::ptr::copy_nonoverlapping(src, inc.dest.add(inc.done as usize), n) };
            self.head += n;
            inc.done += n as u32;
        }
        self.rx = Rx::Data(inc);
        if inc.done < inc.len {
            return false;
        }
        let mut digest_ok = true;
        if inc.digest {
            if self.staged() < DIGEST_LEN {
                return false;
            }
            let mut received = [0u8; DIGEST_LEN];
            received.copy_from_slice(&self.staged_bytes()[..DIGEST_LEN]);
            self.head += DIGEST_LEN;
            let mut d = DataDigest::new();
            // SAFETY: dest holds len bytes just written by the receive or the copy above.
            d.update(unsafe { std::slice::from_raw_parts(inc.dest, inc.len as usize) });
            digest_ok = d.check(received).is_ok();
        }
        self.rx = Rx::Header;
        self.large_data = inc.len >= LARGE_DATA;
        self.data_arrived(inc, digest_ok, io);
        true
    }

    fn data_arrived(&mut self, inc: Incoming, digest_ok: bool, io: &mut Io<'_>) {
        let slot_no = inc.to.slot();
        if let DataTo::H2c { .. } = inc.to {
            self.h2c_granted = self.h2c_granted.saturating_sub(inc.len);
            self.grant_waiting_r2ts();
        }
        if let DataTo::Drop { slot } = inc.to {
            let status = self.slots[usize::from(slot)].cmd.status;
            return self.complete(slot, status, io);
        }
        if !digest_ok {
            // The NVMe/TCP binding makes a data digest error a command failure, not a
            // connection failure: the rest of the command's data is still taken, then the
            // command fails and the host may retry it.
            tracing::warn!(who = %self.who(), cid = self.slots[usize::from(slot_no)].cmd.sqe.cid, "data digest mismatch; failing the command");
        }
        let slot = &mut self.slots[usize::from(slot_no)];
        if !digest_ok {
            slot.cmd.status = first_error(slot.cmd.status, Status::TRANSIENT_TRANSPORT_ERROR);
        }
        slot.received += inc.len;
        if slot.received < slot.cmd.len {
            if let DataTo::H2c { last: true, .. } = inc.to {
                slot.r2t_outstanding -= 1;
                self.queue_r2t(slot_no);
            }
            return;
        }
        if !slot.cmd.status.is_success() {
            let status = slot.cmd.status;
            return self.complete(slot_no, status, io);
        }
        self.execute(slot_no, io);
    }

    fn on_h2c(&mut self, h2c: pdu::H2cData, data_len: u32, hdr_len: usize, header: &[u8]) -> bool {
        let slot_no = h2c.ttag;
        let Some(slot) = self.slots.get(usize::from(slot_no)).filter(|s| s.state == SlotState::WaitData) else {
            return self.fatal(Fatal::invalid_field(pdu::offset::TTAG), header);
        };
        if slot.cmd.sqe.cid != h2c.cccid {
            return self.fatal(Fatal::invalid_field(pdu::offset::CCCID), header);
        }
        // Data arrives in order, inside what the R2Ts asked for.
        let end = h2c.datao.checked_add(data_len);
        if h2c.datao != slot.received || end.is_none_or(|end| end > slot.r2t_requested) {
            return self.fatal(Fatal::out_of_range(), header);
        }
        self.head += hdr_len;
        let dest = self.dest(slot_no, h2c.datao);
        self.receive_data(DataTo::H2c { slot: slot_no, last: h2c.last }, dest, data_len);
        true
    }

    // ----- command flow -----

    /// Gets the command's data buffer (or waits for one), then asks for the data or runs it.
    fn want_buffer(&mut self, slot_no: u16, io: &mut Io<'_>) {
        let slot = &mut self.slots[usize::from(slot_no)];
        if slot.data == Data::Buf && slot.cmd.buf.is_none() {
            match io.pool.get(slot.cmd.len as usize) {
                Some(buf) => slot.cmd.buf = Some(buf),
                None => {
                    slot.go(SlotState::WaitBuffer);
                    self.wait_buffer.push_back(slot_no);
                    return;
                }
            }
        }
        if slot.cmd.dir == DataDir::H2c {
            slot.go(SlotState::WaitData);
            self.queue_r2t(slot_no);
        } else {
            self.execute(slot_no, io);
        }
    }

    /// Queues the next R2T of a command if it needs more data and may have another out.
    fn queue_r2t(&mut self, slot_no: u16) {
        let slot = &self.slots[usize::from(slot_no)];
        if slot.r2t_queued || slot.r2t_requested >= slot.cmd.len || slot.r2t_outstanding >= self.max_r2t {
            return;
        }
        let len = self.next_r2t_len(slot_no);
        let admitted = self.window_admits(len);
        let slot = &mut self.slots[usize::from(slot_no)];
        if !admitted {
            if !slot.r2t_waiting {
                slot.r2t_waiting = true;
                self.r2t_wait.push_back(slot_no);
            }
            return;
        }
        self.h2c_granted += len;
        let r2t = R2t { cccid: slot.cmd.sqe.cid, ttag: slot_no, r2to: slot.r2t_requested, r2tl: len };
        slot.hdr.r2t_len = r2t.encode(&mut slot.hdr.r2t, self.digests) as u8;
        slot.r2t_requested += len;
        slot.r2t_outstanding += 1;
        slot.r2t_queued = true;
        self.tx.push_back(Tx::R2t(slot_no));
    }

    /// How much the slot's next R2T asks for: the rest of its data, at most MAXH2CDATA.
    fn next_r2t_len(&self, slot_no: u16) -> u32 {
        let slot = &self.slots[usize::from(slot_no)];
        (slot.cmd.len - slot.r2t_requested).min(self.maxh2cdata)
    }

    /// Whether an R2T for `len` more bytes fits in the connection's write data window; the
    /// first always does, so that a window smaller than one transfer cannot stall a queue.
    fn window_admits(&self, len: u32) -> bool {
        self.h2c_granted == 0 || u64::from(self.h2c_granted) + u64::from(len) <= u64::from(self.h2c_window)
    }

    /// Lets out the waiting R2Ts the data window has room for again, oldest first. A slot
    /// leaves `WaitData` only with its data or at teardown, so every entry still wants its R2T.
    fn grant_waiting_r2ts(&mut self) {
        while let Some(&slot_no) = self.r2t_wait.front() {
            if !self.window_admits(self.next_r2t_len(slot_no)) {
                return;
            }
            self.r2t_wait.pop_front();
            self.slots[usize::from(slot_no)].r2t_waiting = false;
            self.queue_r2t(slot_no);
        }
    }

    fn execute(&mut self, slot_no: u16, io: &mut Io<'_>) {
        self.slots[usize::from(slot_no)].go(SlotState::Executing);
        exec::execute(self, slot_no, io);
    }

    fn bind(&mut self, done: ctrl::Connected) {
        self.sqsize = done.sqsize;
        self.sq_flow_disabled = done.sq_flow_disabled;
        self.core.epoch = done.epoch;
        if let Some(subsys) = done.binding.subsystem() {
            self.core.tables = Some(Tables::new(subsys.namespaces()));
        }
        self.core.binding = done.binding;
        // The Connect command holds slot 0; the rest are new and free.
        self.slots.resize_with(usize::from(done.sqsize), Slot::new);
        self.free = (1..done.sqsize).rev().collect();
        self.tx.reserve(3 * usize::from(done.sqsize) + 1);
        // The Connect took the queue's first entry (SQSIZE is at least 1, so entries >= 2).
        self.sqhd = 1;
    }

    /// A backend operation of slot `slot_no` completed with `res` (bytes, or a negative
    /// errno); see [`exec::on_backend`].
    pub fn on_backend(&mut self, slot_no: u16, res: i32, io: &mut Io<'_>) {
        exec::on_backend(self, slot_no, res, io);
    }

    /// Returns a finished command's resources and moves waiting work on.
    fn free_slot(&mut self, slot_no: u16, io: &mut Io<'_>) {
        let slot = &mut self.slots[usize::from(slot_no)];
        let close_after = slot.cmd.end(self.core.tables.as_mut(), io.pool);
        if self.close == Close::Now {
            // Teardown: whatever the command was doing, it is over.
            slot.state = SlotState::Free;
        } else {
            slot.go(SlotState::Free);
        }
        self.free.push(slot_no);
        self.in_flight -= 1;
        if close_after {
            self.close = Close::AfterSend;
            self.rx = Rx::Stopped;
        }
        if self.close != Close::No {
            return;
        }
        self.resume_waiting(io);
    }

    /// Moves on the work that waits for a pool buffer: commands, then the receive side.
    fn resume_waiting(&mut self, io: &mut Io<'_>) {
        while let Some((waiting, buf)) =
            exec::next_waiting(&mut self.wait_buffer, |s| self.slots[usize::from(s)].cmd.len, io.pool)
        {
            self.slots[usize::from(waiting)].cmd.buf = Some(buf);
            self.want_buffer(waiting, io);
        }
        if self.rx_blocked {
            self.rx_blocked = false;
            self.process(io);
        }
    }

    // ----- send side -----

    fn tx_parts(&self, item: Tx) -> ([(*const u8, usize); 3], usize) {
        let empty = (std::ptr::null(), 0);
        match item {
            Tx::Control => ([(self.control.as_ptr(), self.control_len), empty, empty], 1),
            Tx::R2t(s) => {
                let h = &self.slots[usize::from(s)].hdr;
                ([(h.r2t.as_ptr(), usize::from(h.r2t_len)), empty, empty], 1)
            }
            Tx::Resp(s) => {
                let h = &self.slots[usize::from(s)].hdr;
                ([(h.resp.as_ptr(), usize::from(h.resp_len)), empty, empty], 1)
            }
            Tx::Data(s) => {
                let slot = &self.slots[usize::from(s)];
                let h = &slot.hdr;
                let data = (slot.data_ptr(self.zeroes), slot.cmd.out_len as usize);
                let digest = if self.digests.data { (h.ddgst.as_ptr(), DIGEST_LEN) } else { empty };
                ([(h.data.as_ptr(), usize::from(h.data_len)), data, digest], if self.digests.data { 3 } else { 2 })
            }
        }
    }

    fn tx_len(&self, item: Tx) -> usize {
        let (parts, n) = self.tx_parts(item);
        parts[..n].iter().map(|p| p.1).sum()
    }

    /// Fills `iov` with what to send next; returns how many entries (0: nothing to send)
    /// and how many bytes they hold. While reads wait on a slow backend, that is at most
    /// one slice (`c2h_slice_bytes`).
    pub fn gather(&self, iov: &mut [libc::iovec]) -> (usize, usize) {
        if self.close == Close::Now {
            return (0, 0);
        }
        let budget = send_budget(&self.core.target.limits, self.read_wait_us);
        gather_parts(self.tx.iter().map(|&item| self.tx_parts(item)), self.tx_sent, budget, iov)
    }

    /// `n` bytes of what `gather` offered went out.
    pub fn on_sent(&mut self, mut n: usize, io: &mut Io<'_>) {
        while let Some(&item) = self.tx.front() {
            let remaining = self.tx_len(item) - self.tx_sent;
            if n < remaining {
                self.tx_sent += n;
                return;
            }
            n -= remaining;
            self.tx_sent = 0;
            self.tx.pop_front();
            self.sent(item, io);
        }
        debug_assert_eq!(n, 0, "sent more than was queued");
    }

    fn sent(&mut self, item: Tx, io: &mut Io<'_>) {
        match item {
            Tx::Control => {}
            Tx::R2t(s) => {
                self.slots[usize::from(s)].r2t_queued = false;
                self.queue_r2t(s);
            }
            Tx::Data(s) => {
                if self.slots[usize::from(s)].success_flag {
                    self.free_slot(s, io);
                }
            }
            Tx::Resp(s) => self.free_slot(s, io),
        }
    }

    // ----- timers and events -----

    /// Periodic and event-driven checks: controller gone, keep-alive expired, asynchronous
    /// events due, daemon stopping, buffers back in the pool for work waiting on one.
    pub fn poll(&mut self, io: &mut Io<'_>) {
        if self.close == Close::Now {
            return;
        }
        if let Some(why) = exec::poll_controller(self, io) {
            match why {
                Closing::ControllerGone => tracing::info!(who = %self.who(), "controller torn down; closing its queue"),
                Closing::ControllerReset => {
                    tracing::info!(who = %self.who(), "controller reset; closing its I/O queue")
                }
                Closing::KeepAliveExpired => {}
            }
            self.close = Close::Now;
            self.rx = Rx::Stopped;
            return;
        }
        if io.stopping {
            // Commands waiting for their data (R2T) are in flight too: receive on for them.
            if let Rx::Header = self.rx
                && !self.awaits_data()
            {
                self.rx = Rx::Stopped;
            }
            for slot_no in std::mem::take(&mut self.core.aer_slots) {
                self.free_slot(slot_no, io);
            }
            if self.in_flight == 0 && self.close == Close::No {
                self.close = Close::AfterSend;
            }
        }
        // The buffers another queue of this reactor gave back since: free_slot only resumes
        // its own queue's waiting work.
        if self.close == Close::No {
            self.resume_waiting(io);
        }
    }

    /// Whether a command in flight still needs data from the host (H2CData after an R2T, or
    /// an R2T once a buffer comes back).
    fn awaits_data(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.state == SlotState::WaitData || (s.state == SlotState::WaitBuffer && s.cmd.dir == DataDir::H2c))
    }

    /// The connection is gone and nothing of it is in flight: give everything back.
    pub fn release(mut self, io: &mut Io<'_>) {
        if let Some(staging) = self.staging.take() {
            io.pool.put(staging);
        }
        for slot in &mut self.slots {
            slot.cmd.give_back(io.pool);
        }
        self.core.unbind(io);
    }
}

impl Transport for Queue {
    /// Null-backend reads are sent from the reactor's zero region and writes received into its
    /// sink (`Data::Zeroes`, `Data::Sink`): no pool buffer, no copy.
    const NULL_DATA: NullData = NullData::Elided;

    fn parts(&mut self, slot_no: u16) -> (&mut Command, &mut Core) {
        (&mut self.slots[usize::from(slot_no)].cmd, &mut self.core)
    }

    /// Completes a command: queues its C2HData (if it returns data) and its CapsuleResp.
    fn complete(&mut self, slot_no: u16, status: Status, io: &mut Io<'_>) {
        exec::record_status(&self.core.binding, &self.slots[usize::from(slot_no)].cmd, status);
        if self.close == Close::Now {
            return self.free_slot(slot_no, io);
        }
        let qid = self.core.binding.qid();
        let (digests, alignment, sq_flow_disabled, sqhd) =
            (self.digests, self.host_alignment, self.sq_flow_disabled, self.sqhd);
        let slot = &mut self.slots[usize::from(slot_no)];
        slot.cmd.status = status;
        slot.go(SlotState::Sending);
        let sends_data = status.is_success() && slot.cmd.dir == DataDir::C2h && slot.cmd.out_len > 0;
        if sends_data {
            self.read_wait_us = next_read_wait(self.read_wait_us, io.now.saturating_duration_since(slot.cmd.arrived));
            slot.success_flag = sq_flow_disabled;
            let c2h = C2hData {
                cccid: slot.cmd.sqe.cid,
                datao: 0,
                datal: slot.cmd.out_len,
                last: true,
                success: slot.success_flag,
            };
            slot.hdr.data_len = c2h.encode(&mut slot.hdr.data, digests, alignment) as u8;
            if digests.data {
                let mut d = DataDigest::new();
                // SAFETY: the data pointer is valid for out_len bytes (a buffer or the zeroes).
                d.update(unsafe { std::slice::from_raw_parts(slot.data_ptr(self.zeroes), slot.cmd.out_len as usize) });
                slot.hdr.ddgst = digest::to_wire(d.finish());
            }
            self.tx.push_back(Tx::Data(slot_no));
            if slot.success_flag {
                return;
            }
        }
        let cqe = Cqe { dw0: slot.cmd.dw0, dw1: slot.cmd.dw1, sqhd, sqid: qid, cid: slot.cmd.sqe.cid, status };
        slot.hdr.resp_len = CapsuleResp { cqe: cqe.encode() }.encode(&mut slot.hdr.resp, digests) as u8;
        self.tx.push_back(Tx::Resp(slot_no));
    }

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn connect(&mut self, slot_no: u16, io: &mut Io<'_>) {
        let slot = &self.slots[usize::from(slot_no)];
        let data = slot.cmd.buf.as_ref().map_or(&[][..], |b| b.slice(slot.received as usize));
        match ctrl::connect(&self.core.target, &self.listener, &slot.cmd.sqe, data, self.reactor) {
            Ok(done) => {
                tracing::info!(peer = ?self.core.peer, host = %done.binding.ctrl().map_or("", |c| c.hostnqn.as_str()),
                    subsystem = %done.binding.subsystem().map_or("", |s| s.nqn.as_str()), qid = done.binding.qid(),
                    cntlid = done.cntlid, sqsize = done.sqsize, "queue connected");
                self.bind(done);
                self.slots[usize::from(slot_no)].cmd.dw0 = u32::from(self.core.binding.ctrl().map_or(0, |c| c.cntlid));
                self.complete(slot_no, Status::SUCCESS, io);
            }
            Err(refused) => {
                tracing::warn!(peer = ?self.core.peer, status = ?refused.status, reason = %refused.reason, "connect refused");
                self.slots[usize::from(slot_no)].cmd.dw0 = refused.dw0;
                self.complete(slot_no, refused.status, io);
            }
        }
    }

    fn await_event(&mut self, slot_no: u16) {
        self.slots[usize::from(slot_no)].go(SlotState::AwaitEvent);
    }
}

/// Where a prepared command's data lives: a pool buffer, except null-backend reads and writes
/// (zeroes and the sink: no buffer, no copy).
fn data_kind(p: &Prepared, table: &NsTable) -> Data {
    if p.len == 0 {
        return Data::None;
    }
    if let Exec::Io(IoCmd { ns_index, op }) = p.exec {
        let null = table.namespaces.get(ns_index).is_some_and(|ns| ns.backend.kind() == backend::Kind::Null);
        match op {
            IoOp::Read { .. } if null => return Data::Zeroes,
            IoOp::Write { .. } if null => return Data::Sink,
            _ => {}
        }
    }
    Data::Buf
}

/// The NVMe/TCP rules for a command's SGL (transport binding 1.0, 3.4.2): in-capsule data is
/// described by a Data Block descriptor with the offset subtype, data moved by R2T/H2CData or
/// C2HData by a Transport SGL Data Block descriptor.
fn check_sgl(sqe: &Sqe, p: &Prepared, icd: u32) -> Result<(), Status> {
    if p.dir == DataDir::None && icd == 0 {
        return Ok(());
    }
    if !matches!(sqe.psdt(), Psdt::SglMptrContiguous | Psdt::SglMptrSegment) {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    let sgl = SglDescriptor::decode(&sqe.dptr);
    if icd > 0 {
        if p.dir != DataDir::H2c {
            return Err(Status::INVALID_FIELD.with_dnr());
        }
        if !matches!(sgl.kind, SglKind::DataBlockOffset) {
            return Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr());
        }
        if sgl.address != 0 {
            return Err(Status::INVALID_SGL_OFFSET.with_dnr());
        }
        if sgl.length != icd || icd != p.len {
            return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
        }
        return Ok(());
    }
    match sgl.kind {
        SglKind::TransportDataBlock if sgl.length >= p.len => Ok(()),
        SglKind::TransportDataBlock | SglKind::DataBlockOffset => Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr()),
        _ => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()),
    }
}

/// The moving mean of reads' wait for their data (weight 1/8, microseconds, a wait counted
/// up to 1 s) after one more read waited `waited`.
fn next_read_wait(mean_us: u32, waited: std::time::Duration) -> u32 {
    let waited = u32::try_from(waited.as_micros()).unwrap_or(u32::MAX).min(1_000_000);
    mean_us - mean_us / 8 + waited / 8
}

/// Most bytes the next send of a queue may carry: one slice while its reads wait on a slow
/// backend, everything queued otherwise.
fn send_budget(limits: &Limits, read_wait_us: u32) -> usize {
    if limits.c2h_slice_bytes > 0 && read_wait_us >= limits.slow_read_us {
        limits.c2h_slice_bytes as usize
    } else {
        usize::MAX
    }
}

/// Fills `iov` from the PDUs queued to send (each up to three parts: header, data, digest),
/// skipping the `skip` bytes already sent and offering at most `budget` bytes; a PDU whose
/// parts do not all fit in the entries left waits for the next send. Returns the entries
/// used and the bytes they hold.
fn gather_parts(
    items: impl Iterator<Item = ([(*const u8, usize); 3], usize)>,
    mut skip: usize,
    budget: usize,
    iov: &mut [libc::iovec],
) -> (usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    'items: for (parts, count) in items {
        if n + count > iov.len() {
            break;
        }
        for &(ptr, len) in &parts[..count] {
            if skip >= len {
                skip -= len;
                continue;
            }
            if bytes == budget {
                break 'items;
            }
            let take = (len - skip).min(budget - bytes);
            bytes += take;
            // SAFETY: ptr is valid for len bytes, skip < len and take <= len - skip.
            iov[n] = libc::iovec { iov_base: unsafe { ptr.add(skip) } as *mut libc::c_void, iov_len: take };
            skip = 0;
            n += 1;
        }
    }
    (n, bytes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::SlotState as S;
    use super::{gather_parts, next_read_wait, send_budget};
    use crate::subsys::Limits;

    /// What `gather_parts` offered, as (offset in `base`, length) pairs.
    fn offered(iov: &[libc::iovec], n: usize, base: *const u8) -> Vec<(usize, usize)> {
        iov[..n].iter().map(|v| (v.iov_base as usize - base as usize, v.iov_len)).collect()
    }

    fn gather(
        items: &[&[(usize, usize)]],
        base: *const u8,
        skip: usize,
        budget: usize,
        slots: usize,
    ) -> Vec<(usize, usize)> {
        let empty = (std::ptr::null(), 0);
        let items = items.iter().map(|parts| {
            let mut a = [empty; 3];
            for (i, &(at, len)) in parts.iter().enumerate() {
                // SAFETY: every offset is within the test's buffer.
                a[i] = (unsafe { base.add(at) }, len);
            }
            (a, parts.len())
        });
        let mut iov = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; slots];
        let (n, bytes) = gather_parts(items, skip, budget, &mut iov);
        let offered = offered(&iov, n, base);
        assert_eq!(bytes, offered.iter().map(|p| p.1).sum::<usize>(), "the bytes it says it offered");
        offered
    }

    /// Two C2HData PDUs (header, data, digest) and a CapsuleResp, laid out in one buffer.
    const PDUS: [&[(usize, usize)]; 3] =
        [&[(0, 24), (100, 5000), (6000, 4)], &[(24, 24), (7000, 3000), (6004, 4)], &[(48, 24)]];

    #[test]
    fn everything_queued_goes_out_without_a_budget() {
        let buf = [0u8; 10_000];
        let all = gather(&PDUS, buf.as_ptr(), 0, usize::MAX, 16);
        assert_eq!(all, [(0, 24), (100, 5000), (6000, 4), (24, 24), (7000, 3000), (6004, 4), (48, 24)]);
    }

    #[test]
    fn a_budget_cuts_the_send_inside_a_part_and_the_next_send_resumes_there() {
        let buf = [0u8; 10_000];
        let first = gather(&PDUS, buf.as_ptr(), 0, 4096, 16);
        assert_eq!(first, [(0, 24), (100, 4072)]);
        // 4096 bytes went out: the next send starts 4072 bytes into the first data part.
        let second = gather(&PDUS, buf.as_ptr(), 4096, 4096, 16);
        assert_eq!(second, [(4172, 928), (6000, 4), (24, 24), (7000, 3000), (6004, 4), (48, 24)]);
        assert_eq!(second.iter().map(|p| p.1).sum::<usize>(), 8080 - 4096, "the rest of the queue");
        // A budget that ends exactly at a part's end offers nothing of the next part.
        assert_eq!(gather(&PDUS, buf.as_ptr(), 0, 5028, 16), [(0, 24), (100, 5000), (6000, 4)]);
        assert_eq!(gather(&PDUS, buf.as_ptr(), 0, 5024, 16), [(0, 24), (100, 5000)]);
    }

    #[test]
    fn a_pdu_whose_parts_do_not_fit_the_entries_waits_for_the_next_send() {
        let buf = [0u8; 10_000];
        assert_eq!(gather(&PDUS, buf.as_ptr(), 0, usize::MAX, 5), [(0, 24), (100, 5000), (6000, 4)]);
        assert_eq!(gather(&PDUS, buf.as_ptr(), 0, usize::MAX, 2), []);
    }

    #[test]
    fn slices_only_while_reads_wait_on_a_slow_backend() {
        let limits = Limits::default();
        assert_eq!((limits.c2h_slice_bytes, limits.slow_read_us), (256 * 1024, Limits::SLOW_READ_US));
        assert_eq!(send_budget(&limits, 0), usize::MAX);
        assert_eq!(send_budget(&limits, Limits::SLOW_READ_US - 1), usize::MAX);
        assert_eq!(send_budget(&limits, Limits::SLOW_READ_US), 256 * 1024);
        let never = Limits { c2h_slice_bytes: 0, ..Limits::default() };
        assert_eq!(send_budget(&never, 1_000_000), usize::MAX);
    }

    #[test]
    fn the_read_wait_follows_the_backend_both_ways() {
        // Reads of a disk answering in 600 µs reach the slicing threshold within a few
        // dozen reads, and a backend that then answers at once brings it back down.
        let mut mean = 0;
        let mut reads = 0;
        while mean < Limits::SLOW_READ_US {
            mean = next_read_wait(mean, Duration::from_micros(600));
            reads += 1;
        }
        assert!(reads <= 8, "{reads} reads to notice a slow backend");
        for _ in 0..40 {
            mean = next_read_wait(mean, Duration::ZERO);
        }
        assert!(mean < 10, "{mean}");
        // A wait of hours counts as one second: the mean settles there, and never overflows.
        let mut mean = 0;
        for _ in 0..1000 {
            mean = next_read_wait(mean, Duration::from_secs(7200));
        }
        assert!((999_000..=1_000_007).contains(&mean), "{mean}");
    }

    const ALL: [S; 7] = [S::Free, S::ReceivingIcd, S::WaitBuffer, S::WaitData, S::Executing, S::AwaitEvent, S::Sending];

    /// The command slot's whole transition table, written out row by row.
    #[test]
    fn slot_transition_table() {
        let rows: [(S, &[S]); 7] = [
            (S::Free, &[S::ReceivingIcd, S::WaitBuffer, S::WaitData, S::Executing, S::Sending]),
            (S::ReceivingIcd, &[S::Executing, S::Sending]),
            (S::WaitBuffer, &[S::WaitData, S::Executing]),
            (S::WaitData, &[S::Executing, S::Sending]),
            (S::Executing, &[S::AwaitEvent, S::Sending]),
            (S::AwaitEvent, &[S::Sending, S::Free]),
            (S::Sending, &[S::Free]),
        ];
        for (from, allowed) in rows {
            for to in ALL {
                assert_eq!(from.may_become(to), allowed.contains(&to), "{from:?} -> {to:?}");
            }
        }
    }

    /// Every state can reach Free again, and Free is reached only through Sending or, for a
    /// held event request, by a stop: no command is ever lost or completed twice.
    #[test]
    fn every_state_returns_to_free() {
        for start in ALL {
            let mut seen = vec![start];
            let mut i = 0;
            while i < seen.len() {
                for to in ALL {
                    if seen[i].may_become(to) && !seen.contains(&to) {
                        seen.push(to);
                    }
                }
                i += 1;
            }
            assert!(seen.contains(&S::Free), "{start:?} never frees");
        }
        for from in ALL {
            if from.may_become(S::Free) {
                assert!(matches!(from, S::Sending | S::AwaitEvent), "{from:?} frees without a response");
            }
        }
    }
}
