//! Command execution shared by the transports: what happens to a command between "its data is
//! in place" and "its completion is ready", whatever carries its bytes (NVMe/TCP or NVMe/RDMA).
//!
//! A transport's command slot embeds a [`Command`] (the fields execution needs) next to its
//! own transfer state; its queue embeds a [`Core`] (target, binding, namespace [`Tables`], held
//! Asynchronous Event Requests) and implements [`Transport`]: the hooks for what differs (how a
//! completion is sent, how a slot waits for an event, how Connect binds the queue, where
//! null-backend data lives). The queue calls [`Command::start`] when a capsule takes a slot, [`execute`] once the
//! command's data is in place, [`on_backend`] for each backend completion and [`Command::end`]
//! when the slot is freed; in between, execution queues backend operations into [`Io::ops`]
//! ([`submit`]) and, when the last one is in, computes the status and hands it to
//! [`Transport::complete`].
//!
//! ```text
//!  execute -> exec_admin -+-> Transport::complete            (done at once)
//!          |              +-> Transport::await_event         (an AER, until poll_events)
//!          |              +-> submit... -+
//!          +-> exec_io ---> submit... ---+-> [on_backend ...] -> finish -> Transport::complete
//!          +-> Transport::connect
//! ```
//!
//! Nothing here allocates or dispatches dynamically on the I/O path: [`Transport`] is a static
//! generic, monomorphised for each queue.
//!
//! Invariants:
//! - a command runs against the namespace table it started with ([`Tables`]): the control
//!   plane may add, remove or replace namespaces at any time, a capsule picks up the newest
//!   table, and an old table (and the backends in it) lives until its last command completed;
//! - a command's backend operations (several when a volume's I/O crosses extents, or a flush
//!   chained after a write zeroes) are accounted together, by total bytes: any error fails the
//!   command (the first error picks the status), and so does a short total; it completes once
//!   the last one is in.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::squeue;

use crate::backend::{self, Op};
use crate::buffers::{Buf, BufferPool};
use crate::ctrl::io::{IoCmd, IoOp};
use crate::ctrl::{self, AdminOp, AdminOutcome, Binding, Controller, DataDir, Exec};
use crate::nvme::{Sqe, Status};
use crate::subsys::{Namespace, NsTable, Target};

/// What the reactor lends a queue for one call.
pub struct Io<'a> {
    pub pool: &'a mut BufferPool,
    /// Backend submissions to make, by slot (the reactor adds the completion token).
    pub ops: &'a mut Vec<(u16, squeue::Entry)>,
    pub reactor: usize,
    /// Whether the pool's regions are registered with this reactor's ring.
    pub fixed_buffers: bool,
    pub now: Instant,
    /// Set to make every reactor poll its queues (a controller went away, an event is due).
    pub poke_all: &'a mut bool,
    /// The daemon is stopping: take no new commands, finish, close.
    pub stopping: bool,
}

/// The part of a command slot that execution uses, the same for every transport.
#[derive(Debug)]
pub struct Command {
    pub sqe: Sqe,
    pub exec: Exec,
    pub dir: DataDir,
    /// Data length in bytes ([`ctrl::Prepared::len`]).
    pub len: u32,
    pub buf: Option<Buf>,
    /// Compare reads the media into this one.
    pub buf2: Option<Buf>,
    /// Backend operations submitted and not completed.
    pub ops_pending: u32,
    /// What the backend operations submitted so far report in all on success (bytes of reads
    /// and writes; fsync and fallocate report 0), and what they reported.
    pub expect_bytes: u64,
    pub done_bytes: u64,
    /// A backend operation of this command failed (its status is in `status`).
    pub backend_failed: bool,
    /// When the capsule arrived (the reactor's turn clock), for the latency histogram.
    pub arrived: Instant,
    pub status: Status,
    pub dw0: u32,
    pub dw1: u32,
    /// Bytes of data the command returns to the host.
    pub out_len: u32,
    /// Which namespace table the command holds ([`Tables`]), if the queue had one.
    pub table_gen: u64,
    pub holds_table: bool,
    /// A Disconnect: the queue closes once the command is done.
    pub close_after: bool,
}

impl Command {
    pub fn new() -> Command {
        Command {
            sqe: Sqe::default(),
            exec: Exec::None,
            dir: DataDir::None,
            len: 0,
            buf: None,
            buf2: None,
            ops_pending: 0,
            expect_bytes: 0,
            done_bytes: 0,
            backend_failed: false,
            arrived: Instant::now(),
            status: Status::SUCCESS,
            dw0: 0,
            dw1: 0,
            out_len: 0,
            table_gen: 0,
            holds_table: false,
            close_after: false,
        }
    }

    /// A capsule took the slot: its command starts with the table generation `held` (if the
    /// queue has tables) at `now`. What the command runs (`exec`, `dir`, `len`) and its
    /// buffers are the transport's to set.
    pub fn start(&mut self, sqe: Sqe, held: Option<u64>, now: Instant) {
        self.sqe = sqe;
        self.table_gen = held.unwrap_or(0);
        self.holds_table = held.is_some();
        self.status = Status::SUCCESS;
        (self.dw0, self.dw1, self.out_len) = (0, 0, 0);
        (self.expect_bytes, self.done_bytes, self.backend_failed) = (0, 0, false);
        self.arrived = now;
        self.close_after = false;
    }

    /// The command is over: its buffers go back to the pool and its table is released.
    /// Returns whether the queue is to close after it (a Disconnect).
    pub fn end(&mut self, tables: Option<&mut Tables>, pool: &mut BufferPool) -> bool {
        self.give_back(pool);
        self.exec = Exec::None;
        if let (Some(tables), true) = (tables, self.holds_table) {
            tables.release(self.table_gen);
        }
        self.holds_table = false;
        self.close_after
    }

    /// Returns the command's buffers to the pool.
    pub fn give_back(&mut self, pool: &mut BufferPool) {
        if let Some(buf) = self.buf.take() {
            pool.put(buf);
        }
        if let Some(buf) = self.buf2.take() {
            pool.put(buf);
        }
    }
}

impl Default for Command {
    fn default() -> Command {
        Command::new()
    }
}

/// The namespace tables that commands in flight refer to, the current one last, each with
/// its number of users: a table changed by the control plane is dropped only when the last
/// command using it has completed, and the I/O path never touches a shared reference count.
#[derive(Debug)]
pub struct Tables {
    live: Vec<(Arc<NsTable>, u32)>,
}

impl Tables {
    /// The tables of a queue just bound to a subsystem whose namespaces are `first`.
    pub fn new(first: Arc<NsTable>) -> Tables {
        Tables { live: vec![(first, 0)] }
    }

    pub fn current(&self) -> &Arc<NsTable> {
        &self.live.last().expect("a current table").0
    }

    pub fn get(&self, generation: u64) -> &NsTable {
        &self.live.iter().find(|(t, _)| t.generation == generation).expect("table of a command in flight").0
    }

    /// Picks up the subsystem's newest table, if the queue is bound to one and it changed.
    pub fn catch_up(tables: Option<&mut Tables>, binding: &Binding) {
        if let (Some(tables), Some(subsys)) = (tables, binding.subsystem())
            && subsys.ns_generation() != tables.current().generation
        {
            tables.refresh(subsys.namespaces());
        }
    }

    fn refresh(&mut self, latest: Arc<NsTable>) {
        if latest.generation != self.current().generation {
            self.live.push((latest, 0));
            self.prune();
        }
    }

    /// A command starts on the current table: returns its generation.
    pub fn hold(&mut self) -> u64 {
        let last = self.live.last_mut().expect("a current table");
        last.1 += 1;
        last.0.generation
    }

    pub fn release(&mut self, generation: u64) {
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

/// The namespace an I/O command addresses, from the table it started with.
pub fn namespace_of<'a>(tables: Option<&'a Tables>, cmd: &Command) -> Option<&'a Namespace> {
    let Exec::Io(io_cmd) = cmd.exec else { return None };
    tables?.get(cmd.table_gen).namespaces.get(io_cmd.ns_index).map(|ns| &**ns)
}

/// Queues one backend operation of a command (as one submission per extent it touches), or
/// settles it on the spot (null backend: nothing to do; injected fault: the error). `link`
/// chains the next operation after this one (every piece of this one links to the next).
pub fn submit(
    cmd: &mut Command,
    slot_no: u16,
    ns: &Namespace,
    op: Op,
    (buf, fixed): (*mut u8, Option<u16>),
    link: bool,
    io: &mut Io<'_>,
) {
    if let Some(errno) = ns.backend.injected_errno(&op) {
        cmd.status = first_error(cmd.status, backend::status_for_errno(&op, errno));
        if !cmd.backend_failed {
            ns.stats.media_error(io.reactor);
        }
        cmd.backend_failed = true;
        return;
    }
    let emitted = ns.backend.prep_into(&op, buf, fixed, |entry| {
        let entry = if link { entry.flags(squeue::Flags::IO_LINK) } else { entry };
        io.ops.push((slot_no, entry));
    });
    if emitted > 0 {
        cmd.ops_pending += emitted as u32;
        cmd.expect_bytes += op.expected_bytes();
    }
}

/// The status a command ends with: the first error it met.
pub fn first_error(current: Status, new: Status) -> Status {
    if current.is_success() { new } else { current }
}

/// What a queue's commands run against, lent by [`Transport::command`].
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub target: &'a Target,
    pub binding: &'a Binding,
    pub tables: Option<&'a Tables>,
    /// Asynchronous Event Requests the queue holds.
    pub aer_held: usize,
    pub who: Who<'a>,
}

/// Who a queue is, for log lines: host NQN, controller id and queue id once bound.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub binding: &'a Binding,
    pub peer: Option<SocketAddr>,
    /// NVMe/RDMA binds a queue pair to its queue id before Connect; its lines say so.
    pub rdma_qid: Option<u16>,
}

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rdma = if self.rdma_qid.is_some() { " (rdma)" } else { "" };
        match (self.binding, self.rdma_qid) {
            (Binding::Unbound, None) => {
                write!(f, "peer={} unbound", self.peer.map_or(String::from("?"), |p| p.to_string()))
            }
            (Binding::Unbound, Some(qid)) => {
                write!(f, "peer={} qid={qid} unbound", self.peer.map_or(String::from("?"), |p| p.to_string()))
            }
            (Binding::Admin(c), _) => write!(f, "host={} cntlid={} qid=0{rdma}", c.hostnqn, c.cntlid),
            (Binding::Io(c, qid), _) => write!(f, "host={} cntlid={} qid={qid}{rdma}", c.hostnqn, c.cntlid),
        }
    }
}

/// What every queue keeps to run commands, whatever its transport.
#[derive(Debug)]
pub struct Core {
    pub target: Arc<Target>,
    pub peer: Option<SocketAddr>,
    pub binding: Binding,
    /// Set at Connect for a queue bound to an NVM subsystem.
    pub tables: Option<Tables>,
    /// The slots of the Asynchronous Event Requests held, oldest first.
    pub aer_slots: Vec<u16>,
    /// NVMe/RDMA binds a queue pair to its queue id before Connect; its log lines say so.
    pub rdma_qid: Option<u16>,
    /// The controller's reset epoch an I/O queue joined in.
    pub epoch: u32,
    /// When the admin queue last took a command (the keep-alive timer).
    pub last_keep_alive: Instant,
}

impl Core {
    pub fn new(target: Arc<Target>, peer: Option<SocketAddr>, rdma_qid: Option<u16>) -> Core {
        Core {
            target,
            peer,
            binding: Binding::Unbound,
            tables: None,
            aer_slots: Vec::new(),
            rdma_qid,
            epoch: 0,
            last_keep_alive: Instant::now(),
        }
    }

    /// The queue took a command at `now`: any command on an admin queue restarts the
    /// keep-alive timer.
    pub fn took_command(&mut self, now: Instant) {
        if let Binding::Admin(_) = self.binding {
            self.last_keep_alive = now;
        }
    }

    /// The queue is gone: an admin queue takes its controller with it, an I/O queue leaves it.
    pub fn unbind(&self, io: &mut Io<'_>) {
        match &self.binding {
            Binding::Admin(ctrl) => {
                if !ctrl.is_dead() {
                    tracing::info!(who = %self.who(), "admin queue closed; tearing the controller down");
                }
                ctrl.kill();
                *io.poke_all = true;
            }
            Binding::Io(ctrl, qid) => ctrl.io_queue_gone(*qid),
            Binding::Unbound => {}
        }
    }

    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            target: &self.target,
            binding: &self.binding,
            tables: self.tables.as_ref(),
            aer_held: self.aer_slots.len(),
            who: self.who(),
        }
    }

    pub fn who(&self) -> Who<'_> {
        Who { binding: &self.binding, peer: self.peer, rdma_qid: self.rdma_qid }
    }
}

/// The hooks by which execution drives a transport's queue: what differs between transports.
pub trait Transport {
    /// Where null-backend reads and writes keep their data on this transport.
    const NULL_DATA: NullData;

    /// The command in slot `slot_no`, and the queue's [`Core`].
    fn parts(&mut self, slot_no: u16) -> (&mut Command, &mut Core);

    fn core(&mut self) -> &mut Core;

    /// Sends the command's completion (and its data, if it returns some) with `status`.
    fn complete(&mut self, slot_no: u16, status: Status, io: &mut Io<'_>);

    /// Moves the slot of an Asynchronous Event Request to its waiting state.
    fn await_event(&mut self, slot_no: u16);

    /// Runs a Connect (it binds the queue the transport's way).
    fn connect(&mut self, slot_no: u16, io: &mut Io<'_>);
}

/// Runs a command whose data (if any) is in place; the transport moved its slot to its
/// executing state.
pub fn execute<T: Transport>(q: &mut T, slot_no: u16, io: &mut Io<'_>) {
    let exec = q.parts(slot_no).0.exec;
    match exec {
        Exec::None => q.complete(slot_no, Status::SUCCESS, io),
        Exec::Connect => q.connect(slot_no, io),
        Exec::Admin(op) => {
            // A CC write may reset the controller: I/O queues elsewhere must look.
            *io.poke_all |= op == AdminOp::PropertySet;
            let (cmd, core) = q.parts(slot_no);
            let ctx = core.ctx();
            match exec_admin(cmd, slot_no, op, ctx, io) {
                AdminNext::Complete(status) => q.complete(slot_no, status, io),
                AdminNext::Park(ctrl) => {
                    q.await_event(slot_no);
                    q.core().aer_slots.push(slot_no);
                    poll_events(q, &ctrl, io);
                }
                AdminNext::Submitted => ops_submitted(q, slot_no, io),
            }
        }
        Exec::Io(io_cmd) => {
            let (cmd, core) = q.parts(slot_no);
            let ctx = core.ctx();
            exec_io(cmd, slot_no, io_cmd, ctx, T::NULL_DATA, io);
            ops_submitted(q, slot_no, io);
        }
    }
}

/// After a command's operations are queued: when none went to the kernel, finish now.
fn ops_submitted<T: Transport>(q: &mut T, slot_no: u16, io: &mut Io<'_>) {
    if q.parts(slot_no).0.ops_pending == 0 {
        finish(q, slot_no, io);
    }
}

/// A backend operation of slot `slot_no` completed with `res` (bytes, or a negative errno);
/// see [`backend_done`]. The command finishes when it was the last one.
pub fn on_backend<T: Transport>(q: &mut T, slot_no: u16, res: i32, io: &mut Io<'_>) {
    let (cmd, core) = q.parts(slot_no);
    if backend_done(cmd, core.tables.as_ref(), res, io, core.who()) {
        finish(q, slot_no, io);
    }
}

/// Completes held Asynchronous Event Requests, oldest first, while `ctrl` has events.
pub fn poll_events<T: Transport>(q: &mut T, ctrl: &Controller, io: &mut Io<'_>) {
    loop {
        let core = q.core();
        if core.aer_slots.is_empty() {
            return;
        }
        let Some(dw0) = ctrl.take_event(&core.target) else { return };
        let slot_no = core.aer_slots.remove(0);
        q.parts(slot_no).0.dw0 = dw0;
        q.complete(slot_no, Status::SUCCESS, io);
    }
}

/// Why [`poll_controller`] closes a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Its controller was torn down (another queue's keep-alive, the control plane).
    ControllerGone,
    /// An I/O queue of a controller that was reset since it joined.
    ControllerReset,
    /// The admin queue's keep-alive timer expired: the controller is torn down.
    KeepAliveExpired,
}

impl Closing {
    pub fn as_str(self) -> &'static str {
        match self {
            Closing::ControllerGone => "controller torn down",
            Closing::ControllerReset => "controller reset",
            Closing::KeepAliveExpired => "keep-alive expired",
        }
    }
}

/// The periodic checks of a bound queue: controller torn down or reset, keep-alive expired
/// (then the controller is torn down here), and for an admin queue the asynchronous events
/// due. Returns why the queue is to close, if it is.
pub fn poll_controller<T: Transport>(q: &mut T, io: &mut Io<'_>) -> Option<Closing> {
    let core = q.core();
    let ctrl = core.binding.ctrl()?.clone();
    // While the daemon stops, admin queues close first (they are idle) and tear their
    // controllers down; the I/O queues still finish their commands in flight.
    if ctrl.is_dead() && !io.stopping {
        return Some(Closing::ControllerGone);
    }
    if let Binding::Io(..) = core.binding
        && ctrl.reset_epoch() != core.epoch
    {
        return Some(Closing::ControllerReset);
    }
    if let Binding::Admin(_) = core.binding {
        let kato = ctrl.kato_ms();
        if kato > 0 && io.now.duration_since(core.last_keep_alive) > Duration::from_millis(u64::from(kato)) {
            tracing::warn!(who = %core.who(), kato_ms = kato, "keep-alive timer expired; tearing the controller down");
            ctrl.kill();
            *io.poke_all = true;
            return Some(Closing::KeepAliveExpired);
        }
        poll_events(q, &ctrl, io);
    }
    None
}

/// Every operation of the command is done: check, count, complete.
fn finish<T: Transport>(q: &mut T, slot_no: u16, io: &mut Io<'_>) {
    let (cmd, core) = q.parts(slot_no);
    let status = final_status(cmd, core.ctx(), io);
    q.complete(slot_no, status, io);
}

/// What the transport does after [`exec_admin`].
#[derive(Debug)]
enum AdminNext {
    /// Complete the command with this status.
    Complete(Status),
    /// An Asynchronous Event Request to hold until `Controller::take_event` has one.
    Park(Arc<Controller>),
    /// Backend operations are queued (a Flush): wait for them, or finish if there are none.
    Submitted,
}

/// Runs an admin command whose data is in `cmd.buf`.
fn exec_admin(
    cmd: &mut Command,
    slot_no: u16,
    op: AdminOp,
    Ctx { target, binding, tables, aer_held, .. }: Ctx<'_>,
    io: &mut Io<'_>,
) -> AdminNext {
    let Some(ctrl) = binding.ctrl() else {
        return AdminNext::Complete(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
    };
    let len = cmd.len as usize;
    let data = match cmd.buf.as_mut() {
        Some(buf) => {
            let data = buf.slice_mut(len);
            if cmd.dir == DataDir::C2h {
                data.fill(0);
            }
            data
        }
        None => &mut [][..],
    };
    match ctrl.admin(target, binding.qid(), &cmd.sqe, op, data) {
        AdminOutcome::Done { status, dw0, dw1, out_len } => {
            (cmd.dw0, cmd.dw1, cmd.out_len) = (dw0, dw1, out_len);
            AdminNext::Complete(status)
        }
        AdminOutcome::Park if aer_held >= ctrl::AER_LIMIT => {
            AdminNext::Complete(Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED.with_dnr())
        }
        AdminOutcome::Park => AdminNext::Park(ctrl.clone()),
        AdminOutcome::Disconnect => {
            cmd.close_after = true;
            AdminNext::Complete(Status::SUCCESS)
        }
        AdminOutcome::Flush => {
            if let (Some(tables), true) = (tables, cmd.holds_table) {
                for ns in &tables.get(cmd.table_gen).namespaces {
                    submit(cmd, slot_no, ns, Op::Flush, (std::ptr::null_mut(), None), false, io);
                }
            }
            AdminNext::Submitted
        }
    }
}

/// Where a transport keeps the data of reads and writes on a null-backend namespace. The
/// transports differ here on purpose, each taking the cheapest path its wire allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullData {
    /// In no pool buffer (NVMe/TCP sends reads from the reactor's zero region and receives
    /// writes into its sink, see `tcp::queue::Data`): the backend is not called for them.
    Elided,
    /// In a pool buffer like any other (NVMe/RDMA moves data only by RDMA READ and WRITE of
    /// registered pool memory): a read zeroes its buffer, which holds whatever it held last,
    /// and the backend is called as for any namespace (null: nothing to submit).
    Buffered,
}

/// Runs an I/O command whose data (if it has some) is in `cmd.buf`: queues its backend
/// operations or settles it.
fn exec_io(
    cmd: &mut Command,
    slot_no: u16,
    io_cmd: IoCmd,
    Ctx { binding, tables, .. }: Ctx<'_>,
    null_data: NullData,
    io: &mut Io<'_>,
) {
    let Binding::Io(ctrl, _) = binding else { unreachable!("I/O command on a queue that is not an I/O queue") };
    let write_through = !ctrl.volatile_write_cache();
    let table = tables.expect("an I/O queue has tables").get(cmd.table_gen);
    let Some(ns) = table.namespaces.get(io_cmd.ns_index) else {
        // Only the broadcast Flush names no namespace, and a subsystem may have none:
        // nothing to flush.
        debug_assert_eq!(io_cmd.op, IoOp::Flush { all: true });
        return;
    };
    let ns: &Namespace = ns;
    let null = ns.backend.kind() == backend::Kind::Null;
    let (buf_ptr, fixed) = match cmd.buf.as_mut() {
        Some(b) => (b.as_mut_ptr(), io.fixed_buffers.then(|| b.fixed_index())),
        None => (std::ptr::null_mut(), None),
    };
    let elided = null && null_data == NullData::Elided;
    let none = std::ptr::null_mut();
    match io_cmd.op {
        IoOp::Read { offset, len } => {
            cmd.out_len = len;
            if null
                && null_data == NullData::Buffered
                && let Some(b) = cmd.buf.as_mut()
            {
                b.slice_mut(len as usize).fill(0);
            }
            if !elided {
                submit(cmd, slot_no, ns, Op::Read { offset, len }, (buf_ptr, fixed), false, io);
            }
        }
        IoOp::Write { offset, len, fua } => {
            if !elided {
                let op = Op::Write { offset, len, fua: fua || write_through };
                submit(cmd, slot_no, ns, op, (buf_ptr, fixed), false, io);
            }
        }
        IoOp::Compare { offset, len } => {
            if !null {
                match io.pool.get(len as usize) {
                    Some(mut media) => {
                        let target = (media.as_mut_ptr(), io.fixed_buffers.then(|| media.fixed_index()));
                        cmd.buf2 = Some(media);
                        submit(cmd, slot_no, ns, Op::Read { offset, len }, target, false, io);
                    }
                    None => cmd.status = Status::NAMESPACE_NOT_READY,
                }
            }
        }
        IoOp::Flush { all } => {
            let every =
                if all { &table.namespaces[..] } else { std::slice::from_ref(&table.namespaces[io_cmd.ns_index]) };
            for ns in every {
                submit(cmd, slot_no, ns, Op::Flush, (none, None), false, io);
            }
        }
        IoOp::WriteZeroes { offset, len, deallocate, fua } => {
            let op = if deallocate { Op::Deallocate { offset, len } } else { Op::WriteZeroes { offset, len } };
            // Durable before completion: chain a flush after the zeroing.
            let durable = fua || write_through;
            submit(cmd, slot_no, ns, op, (none, None), durable, io);
            if durable {
                submit(cmd, slot_no, ns, Op::Flush, (none, None), false, io);
            }
        }
        IoOp::DatasetManagement { ranges, deallocate } => {
            if deallocate {
                // All of the data is in: a command runs only once its `len` bytes arrived.
                let data = cmd.buf.as_ref().map_or(&[][..], |b| b.slice(cmd.len as usize));
                match ctrl::io::deallocate_ranges(data, ranges, ns) {
                    Ok(ops) => {
                        for op in ops {
                            submit(cmd, slot_no, ns, op, (none, None), false, io);
                        }
                    }
                    Err(status) => cmd.status = status,
                }
            }
        }
    }
}

/// A backend operation of `cmd` completed with `res` (bytes, or a negative errno); returns
/// whether it was the last one pending. A command's
/// operations are accounted together: any error fails it (the first one picks the status),
/// and when the last one is in, fewer bytes in all than its operations asked for is an error
/// too (a short transfer: the host retries rather than get half the data). `who` names the
/// queue in the log line of a failure.
fn backend_done(cmd: &mut Command, tables: Option<&Tables>, res: i32, io: &Io<'_>, who: Who<'_>) -> bool {
    assert!(cmd.ops_pending > 0, "backend completion for a command with nothing pending");
    cmd.ops_pending -= 1;
    let errno = match res {
        // Cancelled behind a failed linked operation: that one reported the error.
        r if r == -libc::ECANCELED => None,
        r if r < 0 => Some(-r),
        r => {
            cmd.done_bytes += r as u64;
            None
        }
    };
    let short = cmd.ops_pending == 0 && !cmd.backend_failed && cmd.done_bytes != cmd.expect_bytes;
    if let Some(errno) = errno.or(short.then_some(libc::EIO)) {
        let op = match cmd.exec {
            Exec::Io(IoCmd { op: IoOp::Read { offset, len } | IoOp::Compare { offset, len }, .. }) => {
                Op::Read { offset, len }
            }
            _ => Op::Flush,
        };
        let status = backend::status_for_errno(&op, errno);
        tracing::warn!(who = %who, cid = cmd.sqe.cid, res, done_bytes = cmd.done_bytes,
            expect_bytes = cmd.expect_bytes, ?status, "backend operation failed");
        cmd.status = first_error(cmd.status, status);
        if !cmd.backend_failed
            && let Some(ns) = namespace_of(tables, cmd)
        {
            ns.stats.media_error(io.reactor);
        }
        cmd.backend_failed = true;
    }
    cmd.ops_pending == 0
}

/// Every operation of the command is done: checks (Compare), counts (namespace statistics)
/// and returns the status to complete it with.
fn final_status(cmd: &Command, Ctx { binding, tables, .. }: Ctx<'_>, io: &Io<'_>) -> Status {
    let mut status = cmd.status;
    match cmd.exec {
        Exec::Admin(_) => {
            if let Some(ctrl) = binding.ctrl() {
                ctrl.flush_finished();
            }
        }
        Exec::Io(io_cmd) if status.is_success() => {
            if let IoOp::Compare { len, .. } = io_cmd.op {
                let host = cmd.buf.as_ref().map_or(&[][..], |b| b.slice(len as usize));
                let same = match cmd.buf2.as_ref() {
                    Some(media) => media.slice(len as usize) == host,
                    None => host.iter().all(|&b| b == 0),
                };
                if !same {
                    status = Status::COMPARE_FAILURE;
                }
            }
            if let Some(ns) = namespace_of(tables, cmd) {
                let latency = io.now.saturating_duration_since(cmd.arrived);
                match io_cmd.op {
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
    status
}

/// A command completes with `status`: if it failed, the controller's error log gets an entry.
pub fn record_status(binding: &Binding, cmd: &Command, status: Status) {
    if status.is_success() {
        return;
    }
    if let Some(ctrl) = binding.ctrl() {
        ctrl.record_error(binding.qid(), &cmd.sqe, status);
    }
}

/// The next command waiting for a pool buffer, if the pool now has one of its `len_of`
/// bytes: the command leaves the queue with its buffer.
pub fn next_waiting(
    waiting: &mut VecDeque<u16>,
    len_of: impl Fn(u16) -> u32,
    pool: &mut BufferPool,
) -> Option<(u16, Buf)> {
    let &slot_no = waiting.front()?;
    let buf = pool.get(len_of(slot_no) as usize)?;
    waiting.pop_front();
    Some((slot_no, buf))
}
