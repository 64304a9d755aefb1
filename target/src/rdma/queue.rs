//! One NVMe/RDMA queue pair (one NVMe queue) as a state machine with no I/O of its own
//! (NVMe over Fabrics RDMA Transport Specification 1.0, section 3).
//!
//! The reactor's RDMA engine owns the queue pair and posts what the queue asks for; the queue
//! owns the memory the capsules land in and the responses leave from. It answers completions
//! ([`Queue::on_recv`], [`Queue::on_done`], [`Queue::on_backend`], [`Queue::poll`]) by
//! pushing work requests ([`Work`]) for the engine to post and backend submissions into
//! [`Io::ops`], the same as the TCP queue.
//!
//! ```text
//!  a command slot (SlotState)
//!
//!  Free -> [WaitBuffer] -> [Reading] -> Executing -> Responding -> Free
//!           (pool empty)   (RDMA READ   (backend,    (RDMA WRITE of the data, if any,
//!                           of the data) admin)       and the SEND of the response)
//!                                         |
//!                                         +-> AwaitEvent (an AER) -> Responding
//! ```
//!
//! Invariants:
//! - `entries` receive buffers of SQE + in-capsule data are posted while the queue lives; a
//!   buffer is posted again as soon as its capsule has been copied out, so the host may have
//!   at most `entries` commands outstanding (one more is a protocol violation);
//! - command slots are allocated at the CM connect (`entries` of them);
//! - a slot's data buffer goes back to the pool only once no work request of it is posted
//!   (the HCA may still read or write it until its completion arrives, flushed or not);
//! - per slot at most two work requests are posted at once (WRITE + SEND, or one READ), so
//!   the send queue holds at most `2 * entries`;
//! - a bad command gets an NVMe status in its response; a protocol violation or any failed
//!   work request closes the queue pair (NVMe/RDMA has no TermReq): the engine then flushes
//!   everything posted and frees the queue only when the last completion is in.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use io_uring::squeue;

use crate::backend::{self, Op};
use crate::buffers::Buf;
use crate::ctrl::io::{IoCmd, IoOp};
use crate::ctrl::{self, AdminOutcome, Binding, DataDir, Exec};
use crate::nvme::{Connect, Cqe, FABRICS_OPCODE, FabricsType, Sqe, Status, connect_invalid_param_dw0, fabrics_offsets};
use crate::rdma::wire::{self, CQE_BYTES, DataPlan, QueueShape, SQE_BYTES, WrId};
use crate::subsys::{ListenerInfo, Namespace, NsTable, Target};
use crate::tcp::queue::Io;

/// A work request the engine posts for the queue. Pointers stay valid until the request's
/// completion: they point into the queue's capsule memory or a slot's pool buffer, which the
/// queue keeps until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Post receive buffer `index` (capsule memory).
    Recv { index: u16 },
    /// RDMA READ `len` bytes from the host's `addr`/`key` into the pool buffer at `local`
    /// (class `class`, for its memory key).
    Read { slot: u16, local: *mut u8, class: u16, len: u32, addr: u64, key: u32 },
    /// RDMA WRITE `len` bytes from the pool buffer at `local` to the host's `addr`/`key`.
    Write { slot: u16, local: *mut u8, class: u16, len: u32, addr: u64, key: u32 },
    /// SEND the slot's response capsule, invalidating `invalidate` at the host if set.
    Send { slot: u16, invalidate: Option<u32> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Needs a data buffer and the pool is empty; moved on when a buffer comes back.
    WaitBuffer,
    /// RDMA READ of its data posted; moved on by its completion.
    Reading,
    /// Backend operations or an admin command; moved on by their completions.
    Executing,
    /// An Asynchronous Event Request; moved on by an event.
    AwaitEvent,
    /// Its WRITE and SEND are posted; freed when both completed.
    Responding,
}

impl SlotState {
    /// The transitions of the module's diagram; anything else is a bug caught by [`Slot::go`].
    fn may_become(self, next: SlotState) -> bool {
        use SlotState as S;
        matches!(
            (self, next),
            (S::Free, S::WaitBuffer | S::Reading | S::Executing | S::Responding)
                | (S::WaitBuffer, S::Reading | S::Executing)
                | (S::Reading, S::Executing | S::Responding)
                | (S::Executing, S::AwaitEvent | S::Responding)
                | (S::AwaitEvent, S::Responding | S::Free)
                | (S::Responding, S::Free)
        )
    }
}

#[derive(Debug)]
struct Slot {
    state: SlotState,
    sqe: Sqe,
    exec: Exec,
    dir: DataDir,
    len: u32,
    plan: DataPlan,
    /// The receive buffer still holding this command's in-capsule data (waiting for a pool
    /// buffer to copy it into); posted again once copied.
    held_recv: Option<u16>,
    invalidate: Option<u32>,
    buf: Option<Buf>,
    /// Compare reads the media into this one.
    buf2: Option<Buf>,
    /// Work requests of this slot posted and not yet completed.
    wr_pending: u32,
    ops_pending: u32,
    /// Bytes the backend operations report in all when they succeed, and have reported.
    expect_bytes: u64,
    done_bytes: u64,
    backend_failed: bool,
    /// When the capsule arrived (the reactor's turn clock), for the latency histogram.
    arrived: std::time::Instant,
    status: Status,
    dw0: u32,
    dw1: u32,
    out_len: u32,
    table_gen: u64,
    holds_table: bool,
    close_after: bool,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: SlotState::Free,
            sqe: Sqe::default(),
            exec: Exec::None,
            dir: DataDir::None,
            len: 0,
            plan: DataPlan::None,
            held_recv: None,
            invalidate: None,
            buf: None,
            buf2: None,
            wr_pending: 0,
            ops_pending: 0,
            expect_bytes: 0,
            done_bytes: 0,
            backend_failed: false,
            arrived: std::time::Instant::now(),
            status: Status::SUCCESS,
            dw0: 0,
            dw1: 0,
            out_len: 0,
            table_gen: 0,
            holds_table: false,
            close_after: false,
        }
    }

    fn go(&mut self, next: SlotState) {
        assert!(self.state.may_become(next), "RDMA command slot {:?} -> {next:?}", self.state);
        self.state = next;
    }
}

/// The namespace tables commands in flight refer to (as in the TCP queue): a table replaced
/// by the control plane is dropped only when its last command completed.
#[derive(Debug)]
struct Tables {
    live: Vec<(Arc<NsTable>, u32)>,
}

impl Tables {
    fn current(&self) -> &Arc<NsTable> {
        &self.live.last().expect("a current table").0
    }

    fn get(&self, generation: u64) -> &NsTable {
        &self.live.iter().find(|(t, _)| t.generation == generation).expect("table of a command in flight").0
    }

    fn refresh(&mut self, latest: Arc<NsTable>) {
        if latest.generation != self.current().generation {
            self.live.push((latest, 0));
            self.prune();
        }
    }

    fn hold(&mut self) -> u64 {
        let last = self.live.last_mut().expect("a current table");
        last.1 += 1;
        last.0.generation
    }

    fn release(&mut self, generation: u64) {
        if let Some(entry) = self.live.iter_mut().find(|(t, _)| t.generation == generation) {
            entry.1 -= 1;
        }
        if self.live.len() > 1 {
            self.prune();
        }
    }

    fn prune(&mut self) {
        let current = self.current().generation;
        self.live.retain(|(t, users)| *users > 0 || t.generation == current);
    }
}

pub struct Queue {
    target: Arc<Target>,
    reactor: usize,
    listener: ListenerInfo,
    peer: Option<SocketAddr>,
    shape: QueueShape,
    closing: bool,
    binding: Binding,
    tables: Option<Tables>,
    sqhd: u16,
    epoch: u32,
    slots: Vec<Slot>,
    free: Vec<u16>,
    wait_buffer: VecDeque<u16>,
    aer_slots: Vec<u16>,
    /// Receive buffers, `entries` of `capsule_bytes` each; registered by the engine.
    capsules: Box<[u8]>,
    /// Response capsules, one CQE per slot; registered by the engine.
    responses: Box<[u8]>,
    recv_posted: u32,
    sends_posted: u32,
    work: Vec<Work>,
    last_keep_alive: std::time::Instant,
    in_flight: u32,
}

impl Queue {
    /// A queue admitted at the CM level: its receive buffers are ready to post ([`Queue::start`]).
    pub fn new(
        target: Arc<Target>,
        reactor: usize,
        listener: ListenerInfo,
        peer: Option<SocketAddr>,
        shape: QueueShape,
    ) -> Queue {
        let entries = usize::from(shape.entries);
        Queue {
            target,
            reactor,
            listener,
            peer,
            shape,
            closing: false,
            binding: Binding::Unbound,
            tables: None,
            sqhd: 0,
            epoch: 0,
            slots: (0..entries).map(|_| Slot::new()).collect(),
            free: (0..shape.entries).rev().collect(),
            wait_buffer: VecDeque::new(),
            aer_slots: Vec::new(),
            capsules: vec![0u8; entries * shape.capsule_bytes()].into_boxed_slice(),
            responses: vec![0u8; entries * CQE_BYTES].into_boxed_slice(),
            recv_posted: 0,
            sends_posted: 0,
            work: Vec::with_capacity(3 * entries),
            last_keep_alive: std::time::Instant::now(),
            in_flight: 0,
        }
    }

    pub fn shape(&self) -> QueueShape {
        self.shape
    }

    /// The capsule memory (receive buffers) to register: it never moves.
    pub fn capsule_memory(&mut self) -> (*mut u8, usize) {
        (self.capsules.as_mut_ptr(), self.capsules.len())
    }

    /// The response memory to register: it never moves.
    pub fn response_memory(&mut self) -> (*mut u8, usize) {
        (self.responses.as_mut_ptr(), self.responses.len())
    }

    /// Where receive buffer `index` is, and its length.
    pub fn recv_buffer(&mut self, index: u16) -> (*mut u8, u32) {
        let size = self.shape.capsule_bytes();
        let at = usize::from(index) * size;
        (self.capsules[at..at + size].as_mut_ptr(), size as u32)
    }

    /// Where slot `slot`'s response capsule is.
    pub fn response(&mut self, slot: u16) -> (*mut u8, u32) {
        let at = usize::from(slot) * CQE_BYTES;
        (self.responses[at..at + CQE_BYTES].as_mut_ptr(), CQE_BYTES as u32)
    }

    /// Asks for every receive buffer to be posted: done before the CM accept.
    pub fn start(&mut self) {
        for index in 0..self.shape.entries {
            self.post_recv(index);
        }
    }

    /// The work requests asked for since the last call.
    pub fn take_work(&mut self) -> std::vec::Drain<'_, Work> {
        self.work.drain(..)
    }

    pub fn who(&self) -> String {
        match &self.binding {
            Binding::Unbound => format!(
                "peer={} qid={} unbound",
                self.peer.map_or(String::from("?"), |p| p.to_string()),
                self.shape.qid
            ),
            Binding::Admin(c) => format!("host={} cntlid={} qid=0 (rdma)", c.hostnqn, c.cntlid),
            Binding::Io(c, qid) => format!("host={} cntlid={} qid={qid} (rdma)", c.hostnqn, c.cntlid),
        }
    }

    pub fn wants_close(&self) -> bool {
        self.closing
    }

    /// Nothing of the queue is posted or running: its memory may go.
    pub fn idle(&self) -> bool {
        self.recv_posted == 0 && self.sends_posted == 0 && self.slots.iter().all(|s| s.ops_pending == 0)
    }

    /// The peer went away, the CM reported an error, or a work request failed: stop taking
    /// commands; what is posted will flush.
    pub fn close(&mut self, why: &str, io: &mut Io<'_>) {
        if !self.closing {
            tracing::info!(who = %self.who(), why, "RDMA queue closing");
        }
        self.closing = true;
        self.work.clear();
        // Work that is waiting, not posted, ends here.
        for slot_no in std::mem::take(&mut self.aer_slots) {
            self.free_slot(slot_no, io);
        }
        // A held receive buffer is simply not posted again.
        while let Some(slot_no) = self.wait_buffer.pop_front() {
            self.free_slot(slot_no, io);
        }
    }

    fn post_recv(&mut self, index: u16) {
        if self.closing {
            return;
        }
        self.recv_posted += 1;
        self.work.push(Work::Recv { index });
    }

    fn push_send(&mut self, work: Work) {
        let slot = match work {
            Work::Read { slot, .. } | Work::Write { slot, .. } | Work::Send { slot, .. } => slot,
            Work::Recv { .. } => unreachable!("receives are not sends"),
        };
        self.slots[usize::from(slot)].wr_pending += 1;
        self.sends_posted += 1;
        self.work.push(work);
    }

    // ----- completions -----

    /// A work request completed; `ok` false when it failed or was flushed. `byte_len` is what
    /// a receive got. Engine-side posting failures come here too, as not ok.
    pub fn on_done(&mut self, id: WrId, ok: bool, byte_len: u32, io: &mut Io<'_>) {
        if !ok && !self.closing {
            self.close(&format!("work request {id:?} failed"), io);
        }
        match id {
            WrId::Recv(index) => {
                assert!(self.recv_posted > 0 && index < self.shape.entries, "receive completion {index} not posted");
                self.recv_posted -= 1;
                if ok {
                    self.on_recv(index, byte_len, io);
                }
            }
            WrId::Read(slot_no) | WrId::Write(slot_no) | WrId::Send(slot_no) => {
                let slot = self.slots.get_mut(usize::from(slot_no)).expect("completion of a known slot");
                assert!(slot.wr_pending > 0 && self.sends_posted > 0, "send completion {id:?} not posted");
                slot.wr_pending -= 1;
                self.sends_posted -= 1;
                match (id, slot.state) {
                    (WrId::Read(_), SlotState::Reading) if slot.wr_pending == 0 => {
                        if self.closing {
                            self.free_slot(slot_no, io);
                        } else {
                            self.execute(slot_no, io);
                        }
                    }
                    (_, SlotState::Responding) if slot.wr_pending == 0 => self.free_slot(slot_no, io),
                    _ => {}
                }
            }
        }
    }

    /// A command capsule arrived in receive buffer `index`.
    fn on_recv(&mut self, index: u16, byte_len: u32, io: &mut Io<'_>) {
        if self.closing {
            return;
        }
        if (byte_len as usize) < SQE_BYTES || byte_len as usize > self.shape.capsule_bytes() {
            return self.close(&format!("capsule of {byte_len} bytes"), io);
        }
        let Some(slot_no) = self.free.pop() else {
            return self.close(&format!("host sent more than the {} commands its queue holds", self.shape.entries), io);
        };
        let (ptr, _) = self.recv_buffer(index);
        // SAFETY: the receive buffer holds capsule_bytes >= 64 bytes and its receive completed:
        // the HCA no longer writes it until it is posted again.
        let raw: [u8; SQE_BYTES] = unsafe { std::ptr::read(ptr.cast::<[u8; SQE_BYTES]>()) };
        let sqe = Sqe::decode(&raw);
        let icd = byte_len - SQE_BYTES as u32;
        if let (Some(tables), Some(subsys)) = (self.tables.as_mut(), self.binding.subsystem())
            && subsys.ns_generation() != tables.current().generation
        {
            tables.refresh(subsys.namespaces());
        }
        let empty = NsTable::default();
        let table = self.tables.as_ref().map_or(&empty, |t| t.current());
        let prepared = if io.stopping {
            Err((Status::ABORTED_SQ_DELETION, 0))
        } else {
            ctrl::prepare(&sqe, &self.binding, table, &self.target.limits)
                .and_then(|p| wire::check_sgl(&sqe, &p, icd, self.shape.icd_bytes).map(|plan| (p, plan)))
                .map_err(|status| (status, 0))
                .and_then(|(p, plan)| self.check_connect(&sqe).map(|()| (p, plan)))
        };
        self.sqhd = if self.sqhd + 1 >= self.shape.entries { 0 } else { self.sqhd + 1 };
        self.in_flight += 1;
        if let Binding::Admin(_) = self.binding {
            self.last_keep_alive = io.now;
        }
        let held = self.tables.as_mut().map(Tables::hold);
        let slot = &mut self.slots[usize::from(slot_no)];
        debug_assert_eq!(slot.state, SlotState::Free);
        slot.sqe = sqe;
        slot.invalidate = wire::invalidate_key(&sqe);
        slot.table_gen = held.unwrap_or(0);
        slot.holds_table = held.is_some();
        slot.status = Status::SUCCESS;
        (slot.dw0, slot.dw1, slot.out_len) = (0, 0, 0);
        (slot.expect_bytes, slot.done_bytes, slot.backend_failed) = (0, 0, false);
        slot.arrived = io.now;
        slot.close_after = false;
        match prepared {
            Err((status, dw0)) => {
                (slot.exec, slot.dir, slot.len, slot.plan) = (Exec::None, DataDir::None, 0, DataPlan::None);
                slot.dw0 = dw0;
                self.post_recv(index);
                self.complete(slot_no, status, io);
            }
            Ok((p, plan)) => {
                (slot.exec, slot.dir, slot.len, slot.plan) = (p.exec, p.dir, p.len, plan);
                match plan {
                    DataPlan::InCapsule { .. } => {
                        slot.held_recv = Some(index);
                        self.want_buffer(slot_no, io);
                    }
                    DataPlan::None => {
                        self.post_recv(index);
                        if p.dir == DataDir::None { self.execute(slot_no, io) } else { self.want_buffer(slot_no, io) }
                    }
                    DataPlan::Keyed { .. } => {
                        self.post_recv(index);
                        self.want_buffer(slot_no, io);
                    }
                }
            }
        }
    }

    /// NVMe/RDMA binds a queue pair to one queue at the CM: its Connect must name that queue
    /// and fit the receive buffers posted for it. The error carries the completion's dword 0.
    fn check_connect(&self, sqe: &Sqe) -> Result<(), (Status, u32)> {
        if sqe.opcode != FABRICS_OPCODE || FabricsType::try_from(sqe.fctype()) != Ok(FabricsType::Connect) {
            return Ok(());
        }
        let cmd = Connect::from_sqe(sqe);
        let offset = if cmd.qid != self.shape.qid {
            fabrics_offsets::CONNECT_QID
        } else if u32::from(cmd.sqsize) + 1 > u32::from(self.shape.entries) {
            fabrics_offsets::CONNECT_SQSIZE
        } else {
            return Ok(());
        };
        tracing::warn!(who = %self.who(), qid = cmd.qid, sqsize = cmd.sqsize, "Connect does not match the RDMA queue");
        Err((Status::CONNECT_INVALID_PARAMETERS.with_dnr(), connect_invalid_param_dw0(false, offset)))
    }

    // ----- command flow -----

    /// Gets the command's data buffer (or waits for one), then moves its data or runs it.
    fn want_buffer(&mut self, slot_no: u16, io: &mut Io<'_>) {
        let slot = &mut self.slots[usize::from(slot_no)];
        if slot.buf.is_none() {
            match io.pool.get(slot.len as usize) {
                Some(buf) => slot.buf = Some(buf),
                None => {
                    if slot.state != SlotState::WaitBuffer {
                        slot.go(SlotState::WaitBuffer);
                    }
                    self.wait_buffer.push_back(slot_no);
                    return;
                }
            }
        }
        match slot.plan {
            DataPlan::InCapsule { len } => {
                let index = slot.held_recv.take().expect("in-capsule data has its receive buffer");
                let size = self.shape.capsule_bytes();
                let at = usize::from(index) * size + SQE_BYTES;
                let data = &self.capsules[at..at + len as usize];
                slot.buf.as_mut().expect("buffer just taken").slice_mut(len as usize).copy_from_slice(data);
                self.post_recv(index);
                self.execute(slot_no, io);
            }
            DataPlan::Keyed { addr, key } if slot.dir == DataDir::H2c => {
                let buf = slot.buf.as_mut().expect("buffer just taken");
                let (local, class, len) = (buf.as_mut_ptr(), buf.fixed_index(), slot.len);
                slot.go(SlotState::Reading);
                self.push_send(Work::Read { slot: slot_no, local, class, len, addr, key });
            }
            _ => self.execute(slot_no, io),
        }
    }

    fn execute(&mut self, slot_no: u16, io: &mut Io<'_>) {
        let slot = &mut self.slots[usize::from(slot_no)];
        slot.go(SlotState::Executing);
        match slot.exec {
            Exec::None => self.complete(slot_no, Status::SUCCESS, io),
            Exec::Connect => self.exec_connect(slot_no, io),
            Exec::Admin(op) => {
                *io.poke_all |= op == ctrl::AdminOp::PropertySet;
                self.exec_admin(slot_no, op, io)
            }
            Exec::Io(cmd) => self.exec_io(slot_no, cmd, io),
        }
    }

    fn exec_connect(&mut self, slot_no: u16, io: &mut Io<'_>) {
        let slot = &self.slots[usize::from(slot_no)];
        let data = slot.buf.as_ref().map_or(&[][..], |b| b.slice(slot.len as usize));
        match ctrl::connect(&self.target, &self.listener, &slot.sqe, data, self.reactor) {
            Ok(done) => {
                tracing::info!(peer = ?self.peer, host = %done.binding.ctrl().map_or("", |c| c.hostnqn.as_str()),
                    subsystem = %done.binding.subsystem().map_or("", |s| s.nqn.as_str()), qid = done.binding.qid(),
                    cntlid = done.cntlid, sqsize = done.sqsize, "RDMA queue connected");
                self.epoch = done.epoch;
                if let Some(subsys) = done.binding.subsystem() {
                    self.tables = Some(Tables { live: vec![(subsys.namespaces(), 0)] });
                }
                self.binding = done.binding;
                self.slots[usize::from(slot_no)].dw0 = u32::from(done.cntlid);
                self.complete(slot_no, Status::SUCCESS, io);
            }
            Err(refused) => {
                tracing::warn!(peer = ?self.peer, status = ?refused.status, reason = %refused.reason, "RDMA connect refused");
                self.slots[usize::from(slot_no)].dw0 = refused.dw0;
                self.complete(slot_no, refused.status, io);
            }
        }
    }

    fn exec_admin(&mut self, slot_no: u16, op: ctrl::AdminOp, io: &mut Io<'_>) {
        let Some(ctrl) = self.binding.ctrl().cloned() else {
            return self.complete(slot_no, Status::COMMAND_SEQUENCE_ERROR.with_dnr(), io);
        };
        let slot = &mut self.slots[usize::from(slot_no)];
        let len = slot.len as usize;
        let data = match slot.buf.as_mut() {
            Some(buf) => {
                let data = buf.slice_mut(len);
                if slot.dir == DataDir::C2h {
                    data.fill(0);
                }
                data
            }
            None => &mut [][..],
        };
        let qid = self.binding.qid();
        match ctrl.admin(&self.target, qid, &slot.sqe, op, data) {
            AdminOutcome::Done { status, dw0, dw1, out_len } => {
                (slot.dw0, slot.dw1, slot.out_len) = (dw0, dw1, out_len);
                self.complete(slot_no, status, io);
            }
            AdminOutcome::Park if self.aer_slots.len() >= ctrl::AER_LIMIT => {
                self.complete(slot_no, Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED.with_dnr(), io);
            }
            AdminOutcome::Park => {
                slot.go(SlotState::AwaitEvent);
                self.aer_slots.push(slot_no);
                self.poll_events(&ctrl, io);
            }
            AdminOutcome::Disconnect => {
                slot.close_after = true;
                self.complete(slot_no, Status::SUCCESS, io);
            }
            AdminOutcome::Flush => {
                let Queue { tables, slots, .. } = self;
                let slot = &mut slots[usize::from(slot_no)];
                if let (Some(tables), true) = (tables.as_ref(), slot.holds_table) {
                    for ns in &tables.get(slot.table_gen).namespaces {
                        submit(slot, slot_no, ns, Op::Flush, (std::ptr::null_mut(), None), false, io);
                    }
                }
                self.ops_submitted(slot_no, io);
            }
        }
    }

    fn exec_io(&mut self, slot_no: u16, cmd: IoCmd, io: &mut Io<'_>) {
        let Binding::Io(ctrl, _) = &self.binding else {
            unreachable!("I/O command on a queue that is not an I/O queue")
        };
        let write_through = !ctrl.volatile_write_cache();
        let Queue { tables, slots, .. } = self;
        let slot = &mut slots[usize::from(slot_no)];
        let table = tables.as_ref().expect("an I/O queue has tables").get(slot.table_gen);
        let Some(ns) = table.namespaces.get(cmd.ns_index) else {
            debug_assert_eq!(cmd.op, IoOp::Flush { all: true });
            return self.ops_submitted(slot_no, io);
        };
        let ns: &Namespace = ns;
        let null = ns.backend.kind() == backend::Kind::Null;
        let (buf_ptr, fixed) = match slot.buf.as_mut() {
            Some(b) => (b.as_mut_ptr(), io.fixed_buffers.then(|| b.fixed_index())),
            None => (std::ptr::null_mut(), None),
        };
        let none = std::ptr::null_mut();
        match cmd.op {
            IoOp::Read { offset, len } => {
                slot.out_len = len;
                if null {
                    // A pool buffer holds whatever it held last: the null backend reads zeroes.
                    if let Some(b) = slot.buf.as_mut() {
                        b.slice_mut(len as usize).fill(0);
                    }
                }
                submit(slot, slot_no, ns, Op::Read { offset, len }, (buf_ptr, fixed), false, io);
            }
            IoOp::Write { offset, len, fua } => {
                submit(
                    slot,
                    slot_no,
                    ns,
                    Op::Write { offset, len, fua: fua || write_through },
                    (buf_ptr, fixed),
                    false,
                    io,
                );
            }
            IoOp::Compare { offset, len } => {
                if !null {
                    match io.pool.get(len as usize) {
                        Some(mut media) => {
                            let target = (media.as_mut_ptr(), io.fixed_buffers.then(|| media.fixed_index()));
                            slot.buf2 = Some(media);
                            submit(slot, slot_no, ns, Op::Read { offset, len }, target, false, io);
                        }
                        None => slot.status = Status::NAMESPACE_NOT_READY,
                    }
                }
            }
            IoOp::Flush { all } => {
                let every =
                    if all { &table.namespaces[..] } else { std::slice::from_ref(&table.namespaces[cmd.ns_index]) };
                for ns in every {
                    submit(slot, slot_no, ns, Op::Flush, (none, None), false, io);
                }
            }
            IoOp::WriteZeroes { offset, len, deallocate, fua } => {
                let op = if deallocate { Op::Deallocate { offset, len } } else { Op::WriteZeroes { offset, len } };
                let durable = fua || write_through;
                submit(slot, slot_no, ns, op, (none, None), durable, io);
                if durable {
                    submit(slot, slot_no, ns, Op::Flush, (none, None), false, io);
                }
            }
            IoOp::DatasetManagement { ranges, deallocate } => {
                if deallocate {
                    let data = slot.buf.as_ref().map_or(&[][..], |b| b.slice(slot.len as usize));
                    match ctrl::io::deallocate_ranges(data, ranges, ns) {
                        Ok(ops) => {
                            for op in ops {
                                submit(slot, slot_no, ns, op, (none, None), false, io);
                            }
                        }
                        Err(status) => slot.status = status,
                    }
                }
            }
        }
        self.ops_submitted(slot_no, io);
    }

    fn ops_submitted(&mut self, slot_no: u16, io: &mut Io<'_>) {
        if self.slots[usize::from(slot_no)].ops_pending == 0 {
            self.finish(slot_no, io);
        }
    }

    /// A backend operation of `slot` completed with `res` (bytes, or a negative errno).
    pub fn on_backend(&mut self, slot_no: u16, res: i32, io: &mut Io<'_>) {
        let who = self.who();
        let Queue { tables, slots, .. } = self;
        let slot = &mut slots[usize::from(slot_no)];
        assert!(slot.ops_pending > 0, "backend completion for RDMA slot {slot_no} with nothing pending");
        slot.ops_pending -= 1;
        let errno = match res {
            // Cancelled behind a failed linked operation: that one reported the error.
            r if r == -libc::ECANCELED => None,
            r if r < 0 => Some(-r),
            r => {
                slot.done_bytes += r as u64;
                None
            }
        };
        let short = slot.ops_pending == 0 && !slot.backend_failed && slot.done_bytes != slot.expect_bytes;
        if let Some(errno) = errno.or(short.then_some(libc::EIO)) {
            let op = match slot.exec {
                Exec::Io(IoCmd { op: IoOp::Read { offset, len } | IoOp::Compare { offset, len }, .. }) => {
                    Op::Read { offset, len }
                }
                _ => Op::Flush,
            };
            let status = backend::status_for_errno(&op, errno);
            tracing::warn!(who = %who, cid = slot.sqe.cid, res, ?status, "backend operation failed");
            slot.status = first_error(slot.status, status);
            if !slot.backend_failed
                && let Some(ns) = namespace_of(tables, slot)
            {
                ns.stats.media_error(io.reactor);
            }
            slot.backend_failed = true;
        }
        if slot.ops_pending == 0 {
            self.finish(slot_no, io);
        }
    }

    fn finish(&mut self, slot_no: u16, io: &mut Io<'_>) {
        let Queue { tables, slots, binding, .. } = self;
        let slot = &slots[usize::from(slot_no)];
        let mut status = slot.status;
        match slot.exec {
            Exec::Admin(_) => {
                if let Some(ctrl) = binding.ctrl() {
                    ctrl.flush_finished();
                }
            }
            Exec::Io(cmd) if status.is_success() => {
                if let IoOp::Compare { len, .. } = cmd.op {
                    let host = slot.buf.as_ref().map_or(&[][..], |b| b.slice(len as usize));
                    let same = match slot.buf2.as_ref() {
                        Some(media) => media.slice(len as usize) == host,
                        None => host.iter().all(|&b| b == 0),
                    };
                    if !same {
                        status = Status::COMPARE_FAILURE;
                    }
                }
                if let Some(ns) = namespace_of(tables, slot) {
                    let latency = io.now.saturating_duration_since(slot.arrived);
                    match cmd.op {
                        IoOp::Read { len, .. } | IoOp::Compare { len, .. } => {
                            ns.stats.read(io.reactor, u64::from(len), latency)
                        }
                        IoOp::Write { len, .. } => ns.stats.write(io.reactor, u64::from(len), latency),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        self.complete(slot_no, status, io);
    }

    /// Completes a command: the RDMA WRITE of its data (if it returns data) and the SEND of its
    /// response, posted together (the host sees the response only after the data is placed).
    fn complete(&mut self, slot_no: u16, status: Status, io: &mut Io<'_>) {
        if !status.is_success() {
            let slot = &self.slots[usize::from(slot_no)];
            if let Some(ctrl) = self.binding.ctrl() {
                ctrl.record_error(self.binding.qid(), &slot.sqe, status);
            }
        }
        if self.closing {
            return self.free_slot(slot_no, io);
        }
        let qid = self.binding.qid();
        let sqhd = self.sqhd;
        let slot = &mut self.slots[usize::from(slot_no)];
        slot.status = status;
        slot.go(SlotState::Responding);
        let cqe = Cqe { dw0: slot.dw0, dw1: slot.dw1, sqhd, sqid: qid, cid: slot.sqe.cid, status };
        let at = usize::from(slot_no) * CQE_BYTES;
        self.responses[at..at + CQE_BYTES].copy_from_slice(&cqe.encode());
        let slot = &mut self.slots[usize::from(slot_no)];
        if let (true, DataDir::C2h, DataPlan::Keyed { addr, key }, Some(buf)) =
            (status.is_success() && slot.out_len > 0, slot.dir, slot.plan, slot.buf.as_mut())
        {
            let (local, class, len) = (buf.as_mut_ptr(), buf.fixed_index(), slot.out_len.min(slot.len));
            self.push_send(Work::Write { slot: slot_no, local, class, len, addr, key });
        }
        let invalidate = self.slots[usize::from(slot_no)].invalidate;
        self.push_send(Work::Send { slot: slot_no, invalidate });
    }

    /// Returns a finished command's resources and moves waiting work on.
    fn free_slot(&mut self, slot_no: u16, io: &mut Io<'_>) {
        let slot = &mut self.slots[usize::from(slot_no)];
        if slot.wr_pending > 0 || slot.ops_pending > 0 {
            // Teardown while the HCA or the backend still uses its buffers: the last
            // completion frees it.
            return;
        }
        if slot.state == SlotState::Free {
            return;
        }
        if let Some(buf) = slot.buf.take() {
            io.pool.put(buf);
        }
        if let Some(buf) = slot.buf2.take() {
            io.pool.put(buf);
        }
        slot.held_recv = None;
        if self.closing {
            slot.state = SlotState::Free;
        } else {
            slot.go(SlotState::Free);
        }
        slot.exec = Exec::None;
        let (table_gen, held, close_after) = (slot.table_gen, slot.holds_table, slot.close_after);
        slot.holds_table = false;
        if let (Some(tables), true) = (self.tables.as_mut(), held) {
            tables.release(table_gen);
        }
        self.free.push(slot_no);
        self.in_flight -= 1;
        if close_after && !self.closing {
            self.close("host disconnected the queue (Disconnect)", io);
        }
        if !self.closing {
            self.resume_waiting(io);
        }
    }

    fn resume_waiting(&mut self, io: &mut Io<'_>) {
        while let Some(&waiting) = self.wait_buffer.front() {
            let len = self.slots[usize::from(waiting)].len as usize;
            let Some(buf) = io.pool.get(len) else { break };
            self.wait_buffer.pop_front();
            self.slots[usize::from(waiting)].buf = Some(buf);
            self.want_buffer(waiting, io);
        }
    }

    // ----- timers and events -----

    /// Periodic and event-driven checks, as for the TCP queue: controller gone or reset,
    /// keep-alive, asynchronous events, stopping, buffers back in the pool.
    pub fn poll(&mut self, io: &mut Io<'_>) {
        if self.closing {
            return;
        }
        if let Some(ctrl) = self.binding.ctrl().cloned() {
            if ctrl.is_dead() && !io.stopping {
                return self.close("controller torn down", io);
            }
            if let Binding::Io(..) = self.binding
                && ctrl.reset_epoch() != self.epoch
            {
                return self.close("controller reset", io);
            }
            if let Binding::Admin(_) = self.binding {
                let kato = ctrl.kato_ms();
                if kato > 0 && io.now.duration_since(self.last_keep_alive) > Duration::from_millis(u64::from(kato)) {
                    tracing::warn!(who = %self.who(), kato_ms = kato, "keep-alive timer expired; tearing the controller down");
                    ctrl.kill();
                    *io.poke_all = true;
                    return self.close("keep-alive expired", io);
                }
                self.poll_events(&ctrl, io);
            }
        }
        if io.stopping {
            for slot_no in std::mem::take(&mut self.aer_slots) {
                self.free_slot(slot_no, io);
            }
            if self.in_flight == 0 {
                return self.close("stopping", io);
            }
        }
        self.resume_waiting(io);
    }

    fn poll_events(&mut self, ctrl: &Arc<ctrl::Controller>, io: &mut Io<'_>) {
        while !self.aer_slots.is_empty() {
            let Some(dw0) = ctrl.take_event(&self.target) else { break };
            let slot_no = self.aer_slots.remove(0);
            self.slots[usize::from(slot_no)].dw0 = dw0;
            self.complete(slot_no, Status::SUCCESS, io);
        }
    }

    /// The queue pair is gone and nothing of it is posted or running: give everything back.
    pub fn release(mut self, io: &mut Io<'_>) {
        assert!(self.idle(), "releasing an RDMA queue with work outstanding");
        for slot in &mut self.slots {
            if let Some(buf) = slot.buf.take() {
                io.pool.put(buf);
            }
            if let Some(buf) = slot.buf2.take() {
                io.pool.put(buf);
            }
        }
        match &self.binding {
            Binding::Admin(ctrl) => {
                ctrl.kill();
                *io.poke_all = true;
            }
            Binding::Io(ctrl, qid) => ctrl.io_queue_gone(*qid),
            Binding::Unbound => {}
        }
    }
}

fn namespace_of<'a>(tables: &'a Option<Tables>, slot: &Slot) -> Option<&'a Namespace> {
    let Exec::Io(cmd) = slot.exec else { return None };
    tables.as_ref()?.get(slot.table_gen).namespaces.get(cmd.ns_index).map(|ns| &**ns)
}

/// Queues one backend operation of a command, or settles it at once (null backend, injected
/// fault), as the TCP queue does.
fn submit(
    slot: &mut Slot,
    slot_no: u16,
    ns: &Namespace,
    op: Op,
    (buf, fixed): (*mut u8, Option<u16>),
    link: bool,
    io: &mut Io<'_>,
) {
    if let Some(errno) = ns.backend.injected_errno(&op) {
        slot.status = first_error(slot.status, backend::status_for_errno(&op, errno));
        if !slot.backend_failed {
            ns.stats.media_error(io.reactor);
        }
        slot.backend_failed = true;
        return;
    }
    let emitted = ns.backend.prep_into(&op, buf, fixed, |entry| {
        let entry = if link { entry.flags(squeue::Flags::IO_LINK) } else { entry };
        io.ops.push((slot_no, entry));
    });
    if emitted > 0 {
        slot.ops_pending += emitted as u32;
        slot.expect_bytes += op.expected_bytes();
    }
}

fn first_error(current: Status, new: Status) -> Status {
    if current.is_success() { new } else { current }
}

#[cfg(test)]
mod tests;
