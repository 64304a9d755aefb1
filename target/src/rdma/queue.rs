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

use crate::ctrl::exec::{self, Command, Core, Io, NullData, Tables, Transport};
use crate::ctrl::{self, DataDir, Exec};
use crate::nvme::{Connect, Cqe, FABRICS_OPCODE, FabricsType, Sqe, Status, connect_invalid_param_dw0, fabrics_offsets};
use crate::rdma::wire::{self, CQE_BYTES, DataPlan, QueueShape, SQE_BYTES, WrId};
use crate::subsys::{ListenerInfo, NsTable, Target};

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
    /// What execution uses, shared with the TCP queue.
    cmd: Command,
    plan: DataPlan,
    /// The receive buffer still holding this command's in-capsule data (waiting for a pool
    /// buffer to copy it into); posted again once copied.
    held_recv: Option<u16>,
    invalidate: Option<u32>,
    /// Work requests of this slot posted and not yet completed.
    wr_pending: u32,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: SlotState::Free,
            cmd: Command::new(),
            plan: DataPlan::None,
            held_recv: None,
            invalidate: None,
            wr_pending: 0,
        }
    }

    fn go(&mut self, next: SlotState) {
        assert!(self.state.may_become(next), "RDMA command slot {:?} -> {next:?}", self.state);
        self.state = next;
    }
}

pub struct Queue {
    /// What execution needs of the queue, shared with the TCP queue.
    core: Core,
    reactor: usize,
    listener: ListenerInfo,
    shape: QueueShape,
    closing: bool,
    sqhd: u16,
    slots: Vec<Slot>,
    free: Vec<u16>,
    wait_buffer: VecDeque<u16>,
    /// Receive buffers, `entries` of `capsule_bytes` each; registered by the engine.
    capsules: Box<[u8]>,
    /// Response capsules, one CQE per slot; registered by the engine.
    responses: Box<[u8]>,
    recv_posted: u32,
    sends_posted: u32,
    work: Vec<Work>,
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
            core: Core::new(target, peer, Some(shape.qid)),
            reactor,
            listener,
            shape,
            closing: false,
            sqhd: 0,
            slots: (0..entries).map(|_| Slot::new()).collect(),
            free: (0..shape.entries).rev().collect(),
            wait_buffer: VecDeque::new(),
            capsules: vec![0u8; entries * shape.capsule_bytes()].into_boxed_slice(),
            responses: vec![0u8; entries * CQE_BYTES].into_boxed_slice(),
            recv_posted: 0,
            sends_posted: 0,
            work: Vec::with_capacity(3 * entries),
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
        self.core.who().to_string()
    }

    pub fn wants_close(&self) -> bool {
        self.closing
    }

    /// Nothing of the queue is posted or running: its memory may go.
    pub fn idle(&self) -> bool {
        self.recv_posted == 0 && self.sends_posted == 0 && self.slots.iter().all(|s| s.cmd.ops_pending == 0)
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
        for slot_no in std::mem::take(&mut self.core.aer_slots) {
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
        Tables::catch_up(self.core.tables.as_mut(), &self.core.binding);
        let empty = NsTable::default();
        let table = self.core.tables.as_ref().map_or(&empty, |t| t.current());
        let prepared = if io.stopping {
            Err((Status::ABORTED_SQ_DELETION, 0))
        } else {
            ctrl::prepare(&sqe, &self.core.binding, table, &self.core.target.limits)
                .and_then(|p| wire::check_sgl(&sqe, &p, icd, self.shape.icd_bytes).map(|plan| (p, plan)))
                .map_err(|status| (status, 0))
                .and_then(|(p, plan)| self.check_connect(&sqe).map(|()| (p, plan)))
        };
        self.sqhd = if self.sqhd + 1 >= self.shape.entries { 0 } else { self.sqhd + 1 };
        self.in_flight += 1;
        self.core.took_command(io.now);
        let held = self.core.tables.as_mut().map(Tables::hold);
        let slot = &mut self.slots[usize::from(slot_no)];
        debug_assert_eq!(slot.state, SlotState::Free);
        slot.cmd.start(sqe, held, io.now);
        slot.invalidate = wire::invalidate_key(&sqe);
        match prepared {
            Err((status, dw0)) => {
                (slot.cmd.exec, slot.cmd.dir, slot.cmd.len, slot.plan) = (Exec::None, DataDir::None, 0, DataPlan::None);
                slot.cmd.dw0 = dw0;
                self.post_recv(index);
                self.complete(slot_no, status, io);
            }
            Ok((p, plan)) => {
                (slot.cmd.exec, slot.cmd.dir, slot.cmd.len, slot.plan) = (p.exec, p.dir, p.len, plan);
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
        if slot.cmd.buf.is_none() {
            match io.pool.get(slot.cmd.len as usize) {
                Some(buf) => slot.cmd.buf = Some(buf),
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
                slot.cmd.buf.as_mut().expect("buffer just taken").slice_mut(len as usize).copy_from_slice(data);
                self.post_recv(index);
                self.execute(slot_no, io);
            }
            DataPlan::Keyed { addr, key } if slot.cmd.dir == DataDir::H2c => {
                let buf = slot.cmd.buf.as_mut().expect("buffer just taken");
                let (local, class, len) = (buf.as_mut_ptr(), buf.fixed_index(), slot.cmd.len);
                slot.go(SlotState::Reading);
                self.push_send(Work::Read { slot: slot_no, local, class, len, addr, key });
            }
            _ => self.execute(slot_no, io),
        }
    }

    fn execute(&mut self, slot_no: u16, io: &mut Io<'_>) {
        self.slots[usize::from(slot_no)].go(SlotState::Executing);
        exec::execute(self, slot_no, io);
    }

    /// A backend operation of slot `slot_no` completed with `res` (bytes, or a negative
    /// errno); see [`exec::on_backend`].
    pub fn on_backend(&mut self, slot_no: u16, res: i32, io: &mut Io<'_>) {
        exec::on_backend(self, slot_no, res, io);
    }

    /// Returns a finished command's resources and moves waiting work on.
    fn free_slot(&mut self, slot_no: u16, io: &mut Io<'_>) {
        let slot = &mut self.slots[usize::from(slot_no)];
        if slot.wr_pending > 0 || slot.cmd.ops_pending > 0 {
            // Teardown while the HCA or the backend still uses its buffers: the last
            // completion frees it.
            return;
        }
        if slot.state == SlotState::Free {
            return;
        }
        let close_after = slot.cmd.end(self.core.tables.as_mut(), io.pool);
        slot.held_recv = None;
        if self.closing {
            slot.state = SlotState::Free;
        } else {
            slot.go(SlotState::Free);
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
        while let Some((waiting, buf)) =
            exec::next_waiting(&mut self.wait_buffer, |s| self.slots[usize::from(s)].cmd.len, io.pool)
        {
            self.slots[usize::from(waiting)].cmd.buf = Some(buf);
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
        if let Some(why) = exec::poll_controller(self, io) {
            return self.close(why.as_str(), io);
        }
        if io.stopping {
            for slot_no in std::mem::take(&mut self.core.aer_slots) {
                self.free_slot(slot_no, io);
            }
            if self.in_flight == 0 {
                return self.close("stopping", io);
            }
        }
        self.resume_waiting(io);
    }

    /// The queue pair is gone and nothing of it is posted or running: give everything back.
    pub fn release(mut self, io: &mut Io<'_>) {
        assert!(self.idle(), "releasing an RDMA queue with work outstanding");
        for slot in &mut self.slots {
            slot.cmd.give_back(io.pool);
        }
        self.core.unbind(io);
    }
}

impl Transport for Queue {
    /// The HCA moves data only to and from registered pool buffers: null-backend data is in
    /// one too (the TCP queue elides it).
    const NULL_DATA: NullData = NullData::Buffered;

    fn parts(&mut self, slot_no: u16) -> (&mut Command, &mut Core) {
        (&mut self.slots[usize::from(slot_no)].cmd, &mut self.core)
    }

    /// Completes a command: the RDMA WRITE of its data (if it returns data) and the SEND of its
    /// response, posted together (the host sees the response only after the data is placed).
    fn complete(&mut self, slot_no: u16, status: Status, io: &mut Io<'_>) {
        exec::record_status(&self.core.binding, &self.slots[usize::from(slot_no)].cmd, status);
        if self.closing {
            return self.free_slot(slot_no, io);
        }
        let qid = self.core.binding.qid();
        let sqhd = self.sqhd;
        let slot = &mut self.slots[usize::from(slot_no)];
        slot.cmd.status = status;
        slot.go(SlotState::Responding);
        let cqe = Cqe { dw0: slot.cmd.dw0, dw1: slot.cmd.dw1, sqhd, sqid: qid, cid: slot.cmd.sqe.cid, status };
        let at = usize::from(slot_no) * CQE_BYTES;
        self.responses[at..at + CQE_BYTES].copy_from_slice(&cqe.encode());
        let slot = &mut self.slots[usize::from(slot_no)];
        if let (true, DataDir::C2h, DataPlan::Keyed { addr, key }, Some(buf)) =
            (status.is_success() && slot.cmd.out_len > 0, slot.cmd.dir, slot.plan, slot.cmd.buf.as_mut())
        {
            let (local, class, len) = (buf.as_mut_ptr(), buf.fixed_index(), slot.cmd.out_len.min(slot.cmd.len));
            self.push_send(Work::Write { slot: slot_no, local, class, len, addr, key });
        }
        let invalidate = self.slots[usize::from(slot_no)].invalidate;
        self.push_send(Work::Send { slot: slot_no, invalidate });
    }

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn connect(&mut self, slot_no: u16, io: &mut Io<'_>) {
        let slot = &self.slots[usize::from(slot_no)];
        let data = slot.cmd.buf.as_ref().map_or(&[][..], |b| b.slice(slot.cmd.len as usize));
        match ctrl::connect(&self.core.target, &self.listener, &slot.cmd.sqe, data, self.reactor) {
            Ok(done) => {
                tracing::info!(peer = ?self.core.peer, host = %done.binding.ctrl().map_or("", |c| c.hostnqn.as_str()),
                    subsystem = %done.binding.subsystem().map_or("", |s| s.nqn.as_str()), qid = done.binding.qid(),
                    cntlid = done.cntlid, sqsize = done.sqsize, "RDMA queue connected");
                self.core.epoch = done.epoch;
                if let Some(subsys) = done.binding.subsystem() {
                    self.core.tables = Some(Tables::new(subsys.namespaces()));
                }
                self.core.binding = done.binding;
                self.slots[usize::from(slot_no)].cmd.dw0 = u32::from(done.cntlid);
                self.complete(slot_no, Status::SUCCESS, io);
            }
            Err(refused) => {
                tracing::warn!(peer = ?self.core.peer, status = ?refused.status, reason = %refused.reason, "RDMA connect refused");
                self.slots[usize::from(slot_no)].cmd.dw0 = refused.dw0;
                self.complete(slot_no, refused.status, io);
            }
        }
    }

    fn await_event(&mut self, slot_no: u16) {
        self.slots[usize::from(slot_no)].go(SlotState::AwaitEvent);
    }
}

#[cfg(test)]
mod tests;
