//! A reactor: one data-plane thread owning one io_uring, a buffer pool and the connections
//! (NVMe/TCP queues) that live on it for their whole life.
//!
//! The loop only collects events; each [`Queue`] decides (sans-IO) and the reactor carries
//! out what it asked: a receive into the window the queue names, a gathered `sendmsg` of the
//! PDUs it queued, the backend submissions it produced. Socket and block I/O go through the
//! same ring; nothing here takes a lock on the I/O path. Reactor 0 also accepts connections
//! on every listener and hands each to the reactor with the fewest I/O queues ([`Load`]):
//! an admin queue, mostly idle, does not count, so a host's I/O queues spread evenly.
//!
//! Cross-thread traffic goes through inboxes only ([`Msg`]): connections for a reactor;
//! listeners added and removed at run time (to reactor 0, from the control plane's
//! [`Target::add_listener`] and [`Target::remove_listener`]); pokes (poll every queue now:
//! an asynchronous event is due, a controller was torn down, sent by other reactors and by the
//! control plane through [`Target`]); the stop order; the watchdog's pings.
//!
//! With the `rdma` feature, reactor 0 also runs an RDMA engine (`crate::rdma::engine`) from
//! the moment the first RDMA listener reaches it (`Msg::RdmaListen`). It admits connection
//! requests; admin queues stay on reactor 0, I/O queues are placed by [`Load`] like NVMe/TCP
//! connections (their QID is in the request, so they count as I/O queues at once) and reach
//! another reactor as `Msg::RdmaConn`, whose engine is made for the first one. An engine's CM
//! event channel and completion channels are watched with one-shot polls in its reactor's
//! ring, and its queue pairs' backend I/O goes through that ring too.
//!
//! Invariants:
//! - per connection at most one receive and one send are in flight;
//! - a connection is freed only when nothing of it is in flight (its buffers may be in the
//!   kernel's hands until then);
//! - the ring's submission queue never overflows: a full queue is submitted first, and the
//!   operations one queue call produced go in one submission when the ring can hold them (so
//!   that linked chains stay whole);
//! - a listener's socket is dropped only once its multishot accept has ended (its last
//!   completion came without the MORE flag);
//! - a send of `LARGE_SEND` bytes or more never goes to the kernel in the same submission as
//!   backend operations queued before it: those are submitted first (`send_late`), so the
//!   send's inline copy does not hold their block requests back;
//! - `now` is read once per turn, after the wait, so what the turn handles is stamped with
//!   the time it was reaped (to within the turn);
//! - an idle reactor sleeps in `io_uring_enter`; after activity it busy-polls for a window of
//!   at most `busy_poll`, adapted to how far apart events come (`PollWindow`), then sleeps
//!   again; while it polls with backend operations out, it yields its core every
//!   `YIELD_EVERY` empty looks, so that io-wq workers running the operations the kernel
//!   could not start inline (they share the reactor's CPUs) get it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::buffers::{BufferPool, Layout};
use crate::subsys::{ListenerInfo, Target};
use crate::tcp::queue::{Io, Queue};

/// Connections one reactor may hold; also bounded by the pool (each needs a staging buffer).
pub const MAX_CONNECTIONS: usize = 4096;
/// Most iovecs one `sendmsg` gathers.
pub const SEND_IOVECS: usize = 256;
/// How often queues are polled for keep-alive expiry and controller teardown.
const TICK: Duration = Duration::from_millis(250);
/// Completions handled per turn before the loop looks at submissions again.
const COMPLETION_BUDGET: usize = 512;
/// A busy-polling reactor waiting for backend operations yields its core every this many
/// looks at an empty completion queue (about every microsecond or two).
const YIELD_EVERY: u32 = 32;
/// Bytes of the per-connection receive staging buffer.
pub const STAGING_BYTES: usize = 64 * 1024;
/// A send of at least this many bytes goes to the kernel after the turn's backend operations
/// and receives, not with them (see `send_late`).
const LARGE_SEND: usize = 64 * 1024;

/// Messages other threads send a reactor.
#[derive(Debug)]
pub enum Msg {
    /// A freshly accepted connection for this reactor, and the listener it came through.
    Conn { fd: OwnedFd, listener: ListenerInfo },
    /// Something changed (controller torn down, async event): poll every queue. Pokes that
    /// arrive together are handled as one.
    Poke,
    /// Accept connections on this listening socket (reactor 0 only).
    Listen { fd: Arc<OwnedFd>, info: ListenerInfo },
    /// Serve this RDMA listener, bound by the control plane (reactor 0 only): its CM id
    /// moves to reactor 0's RDMA engine, which is made for the first one.
    #[cfg(feature = "rdma")]
    RdmaListen { bound: Box<crate::rdma::engine::Bound>, info: ListenerInfo },
    /// An NVMe/RDMA I/O queue's connection request, admitted by reactor 0 and placed on this
    /// reactor (its id parked on a channel of its own): this reactor's RDMA engine, made for
    /// the first one, accepts it.
    #[cfg(feature = "rdma")]
    RdmaConn(Box<crate::rdma::engine::Incoming>),
    /// The listener was removed (a TCP socket is already shut down: forget it once its
    /// accept ends; an RDMA CM id is destroyed now).
    Unlisten { port_id: u16 },
    /// Stop: no new connections, finish what is in flight, close, return.
    Stop,
    /// The main thread checks the reactor turns: answer by storing the number.
    Ping(u64),
}

/// A reactor's mailbox: a short queue and an eventfd the reactor watches through its ring.
#[derive(Debug)]
pub struct Inbox {
    msgs: Mutex<VecDeque<Msg>>,
    eventfd: OwnedFd,
}

impl Inbox {
    pub fn new() -> io::Result<Inbox> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor nobody else owns.
        Ok(Inbox { msgs: Mutex::new(VecDeque::new()), eventfd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub fn send(&self, msg: Msg) {
        self.msgs.lock().expect("inbox lock").push_back(msg);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own.
        unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn drain(&self) -> VecDeque<Msg> {
        std::mem::take(&mut *self.msgs.lock().expect("inbox lock"))
    }
}

/// What a reactor is started with.
#[derive(Debug)]
pub struct Setup {
    pub id: usize,
    pub target: Arc<Target>,
    pub inboxes: Arc<[Arc<Inbox>]>,
    /// Where each reactor answers the main thread's pings (the systemd watchdog).
    pub heartbeats: Arc<[AtomicU64]>,
    /// Each reactor's I/O queues, for placing new connections.
    pub loads: Arc<[Load]>,
    pub pool: Layout,
    pub busy_poll: Duration,
    pub ring_entries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Recv = 1,
    Send = 2,
    Backend = 3,
    Accept = 4,
    Inbox = 5,
    Tick = 6,
    /// An RDMA channel became readable; `low` is the engine's source number.
    #[cfg(feature = "rdma")]
    Rdma = 7,
    /// A backend operation of an RDMA queue pair: `conn` is its index, `low` its slot.
    #[cfg(feature = "rdma")]
    RdmaBackend = 8,
}

fn token(kind: Kind, conn: u32, low: u16) -> u64 {
    (kind as u64) << 56 | u64::from(conn) << 16 | u64::from(low)
}

fn untoken(data: u64) -> (u64, u32, u16) {
    (data >> 56, (data >> 16) as u32, data as u16)
}

/// A listener reactor 0 accepts on.
struct Listening {
    fd: Arc<OwnedFd>,
    info: ListenerInfo,
    /// Removed (or stopping): its socket is shut down and its accept is ending.
    closing: bool,
}

/// One reactor's connections as placement sees them: I/O queues (NVMe/TCP and NVMe/RDMA), and
/// NVMe/TCP connections not yet bound by a Connect command (they may become I/O queues).
/// Written by the reactor owning them (and by reactor 0 when it places one there: `pending`
/// for a TCP connection, `io` for an RDMA I/O queue through [`IoQueueCount`]); read by
/// reactor 0 at accept. Relaxed: placement needs a good guess, not a snapshot.
#[derive(Debug, Default)]
pub struct Load {
    io: AtomicU32,
    pending: AtomicU32,
}

impl Load {
    fn weight(&self) -> u32 {
        self.io.load(Ordering::Relaxed) + self.pending.load(Ordering::Relaxed)
    }
}

/// The reactor for a new connection: the one with the fewest I/O queues (counting
/// connections not yet bound); ties go round-robin, from `next` on.
fn place(loads: &[Load], next: &mut usize) -> usize {
    let n = loads.len();
    let start = *next % n;
    let to = (0..n).map(|i| (start + i) % n).min_by_key(|&r| loads[r].weight()).unwrap_or(0);
    *next = to + 1;
    to
}

/// One I/O queue counted in a reactor's [`Load`] for as long as this lives (NVMe/RDMA queues,
/// whose QID is known before they are placed).
#[derive(Debug)]
pub struct IoQueueCount {
    loads: Arc<[Load]>,
    reactor: usize,
}

impl IoQueueCount {
    pub fn new(loads: &Arc<[Load]>, reactor: usize) -> IoQueueCount {
        loads[reactor].io.fetch_add(1, Ordering::Relaxed);
        IoQueueCount { loads: Arc::clone(loads), reactor }
    }
}

impl Drop for IoQueueCount {
    fn drop(&mut self) {
        self.loads[self.reactor].io.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a connection is counted in its reactor's [`Load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Pending,
    Io,
    /// An admin or discovery queue: not counted once bound.
    Not,
}

struct Conn {
    fd: OwnedFd,
    queue: Queue,
    counted: Counted,
    recv_inflight: bool,
    send_inflight: bool,
    ops_inflight: u32,
    closing: bool,
    /// In the reactor's dirty list for this turn.
    dirty: bool,
    iov: Box<[libc::iovec; SEND_IOVECS]>,
    msg: Box<libc::msghdr>,
}

pub struct Reactor {
    id: usize,
    ring: IoUring,
    pool: BufferPool,
    fixed_buffers: bool,
    target: Arc<Target>,
    inboxes: Arc<[Arc<Inbox>]>,
    heartbeats: Arc<[AtomicU64]>,
    loads: Arc<[Load]>,
    conns: Vec<Option<Conn>>,
    free_conns: Vec<u32>,
    live_conns: usize,
    /// Listeners, by the slot index their accept's completion token carries.
    listeners: Vec<Option<Listening>>,
    next_reactor: usize,
    eventfd_buf: Box<u64>,
    tick_spec: Box<types::Timespec>,
    tick_armed: bool,
    poll: PollWindow,
    last_activity: Instant,
    /// The time at the top of the current loop turn: one clock read per turn, not per event.
    now: Instant,
    stopping: bool,
    /// Submissions produced by queues during one call, turned into SQEs afterwards.
    ops: Vec<(u16, squeue::Entry)>,
    /// Set by a queue when a controller went away and other reactors must look.
    poke_all: bool,
    /// Connections touched this turn, driven at its end.
    dirty: Vec<u32>,
    /// Backend operations (either transport's) submitted and not completed.
    backend_inflight: u32,
    /// Backend operations are in the submission queue, not yet submitted.
    backend_queued: bool,
    /// Large sends held back until the end of the turn (`send_late`).
    late_sends: Vec<squeue::Entry>,
    #[cfg(feature = "rdma")]
    rdma: Option<crate::rdma::engine::Engine>,
}

impl Reactor {
    pub fn new(setup: Setup) -> io::Result<Reactor> {
        let ring = new_ring(setup.ring_entries)?;
        let pool = BufferPool::new(&setup.pool)?;
        let target = setup.target;
        // SAFETY: the iovecs describe the pool's regions, which live as long as the pool, and
        // the pool outlives the ring's use of them (the reactor drops connections, then the
        // ring, then the pool).
        let fixed_buffers = match unsafe { ring.submitter().register_buffers(&pool.iovecs()) } {
            Ok(()) => true,
            Err(error) => {
                tracing::info!(reactor = setup.id, %error, "buffers not registered with io_uring (RLIMIT_MEMLOCK?); using plain reads and writes");
                false
            }
        };
        Ok(Reactor {
            id: setup.id,
            ring,
            pool,
            fixed_buffers,
            target: Arc::clone(&target),
            inboxes: setup.inboxes,
            heartbeats: setup.heartbeats,
            loads: setup.loads,
            conns: Vec::new(),
            free_conns: Vec::new(),
            live_conns: 0,
            listeners: Vec::new(),
            next_reactor: 0,
            eventfd_buf: Box::new(0),
            tick_spec: Box::new(types::Timespec::from(TICK)),
            tick_armed: false,
            poll: PollWindow::new(setup.busy_poll),
            last_activity: Instant::now(),
            now: Instant::now(),
            stopping: false,
            ops: Vec::with_capacity(256),
            poke_all: false,
            dirty: Vec::with_capacity(64),
            backend_inflight: 0,
            backend_queued: false,
            late_sends: Vec::new(),
            #[cfg(feature = "rdma")]
            rdma: None,
        })
    }

    /// Runs until told to stop and every connection has closed.
    pub fn run(mut self) -> io::Result<()> {
        self.arm_inbox();
        self.rdma_arm();
        let mut idle_spins: u32 = 0;
        loop {
            if self.stopping && self.live() == 0 {
                break;
            }
            // `now` is the previous turn's: close enough to decide whether to keep polling.
            let busy = self.now.duration_since(self.last_activity) < self.poll.window();
            // Whatever is queued goes to the kernel below.
            self.backend_queued = false;
            let waited = if !busy {
                self.poll.sleeping();
                self.ring.submit_and_wait(1)
            } else if self.nothing_for_the_kernel() {
                // Busy polling with nothing to submit and no completion work pending: look at
                // the completion ring again without a system call.
                // While backend operations are out, now and then give the core away: an
                // operation the kernel could not start without blocking (tmpfs, a buffered
                // read that misses the page cache, a filesystem without NOWAIT) runs on an
                // io-wq worker, which inherits this thread's CPUs and waits for them.
                idle_spins = idle_spins.wrapping_add(1);
                if self.backend_inflight > 0 && idle_spins.is_multiple_of(YIELD_EVERY) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                Ok(0)
            } else {
                self.ring.submit()
            };
            match waited {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            // The one clock read of the turn, after the wait: what is reaped now happened now.
            self.now = Instant::now();
            let handled = self.reap() + self.rdma_turn();
            self.drive_dirty();
            self.send_late();
            if handled > 0 {
                self.poll.activity(self.now.duration_since(self.last_activity));
                self.last_activity = self.now;
            }
        }
        assert_eq!(self.pool.outstanding(), 0, "reactor {} stopped with buffers out", self.id);
        Ok(())
    }

    /// No submissions queued, no deferred completion work (IORING_SQ_TASKRUN), no overflow.
    fn nothing_for_the_kernel(&mut self) -> bool {
        let sq = self.ring.submission();
        sq.is_empty() && !sq.taskrun() && !sq.cq_overflow()
    }

    fn reap(&mut self) -> usize {
        let mut handled = 0;
        while handled < COMPLETION_BUDGET {
            let Some(cqe) = self.ring.completion().next() else { break };
            handled += 1;
            self.complete(cqe.user_data(), cqe.result(), cqe.flags());
        }
        handled
    }

    fn complete(&mut self, data: u64, res: i32, flags: u32) {
        let (kind, conn, low) = untoken(data);
        match kind {
            k if k == Kind::Recv as u64 => self.on_recv(conn, res),
            k if k == Kind::Send as u64 => self.on_sent(conn, res),
            k if k == Kind::Backend as u64 => {
                self.backend_inflight = self.backend_inflight.saturating_sub(1);
                self.on_backend(conn, low, res)
            }
            k if k == Kind::Accept as u64 => self.on_accept(usize::from(low), res, flags),
            k if k == Kind::Inbox as u64 => self.on_inbox(),
            k if k == Kind::Tick as u64 => self.on_tick(),
            #[cfg(feature = "rdma")]
            k if k == Kind::Rdma as u64 => self.with_rdma(|e, io| e.on_ready(low, res, io)),
            #[cfg(feature = "rdma")]
            k if k == Kind::RdmaBackend as u64 => {
                self.backend_inflight = self.backend_inflight.saturating_sub(1);
                self.with_rdma(|e, io| e.on_backend(conn, low, res, io))
            }
            _ => unreachable!("unknown completion token {data:#x}"),
        }
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry points at memory that stays valid until its completion:
            // connection buffers and iovecs are owned by the Conn, which is freed only when
            // nothing of it is in flight; inbox/tick buffers live in the reactor.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if let Err(error) = self.ring.submit() {
                tracing::warn!(reactor = self.id, %error, "io_uring submit failed while the queue was full");
            }
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let Some(listening) = self.listeners[index].as_ref() else { return };
        let fd = types::Fd(listening.fd.as_raw_fd());
        let entry = opcode::AcceptMulti::new(fd).flags(libc::SOCK_CLOEXEC).build();
        self.push(entry.user_data(token(Kind::Accept, 0, index as u16)));
    }

    /// Starts accepting on a listener (reactor 0).
    fn listen(&mut self, fd: Arc<OwnedFd>, info: ListenerInfo) {
        if self.stopping {
            return;
        }
        let listening = Listening { fd, info, closing: false };
        let index = match self.listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
        };
        assert!(index <= usize::from(u16::MAX), "listener slots fit the completion token");
        tracing::debug!(reactor = self.id, port_id = listening.info.port_id, "accepting");
        self.listeners[index] = Some(listening);
        self.arm_accept(index);
    }

    /// A listener was removed: its socket is already shut down, so its accept ends with an
    /// error completion, which frees the slot.
    fn unlisten(&mut self, port_id: u16) {
        if let Some(listening) = self.listeners.iter_mut().flatten().find(|l| l.info.port_id == port_id) {
            listening.closing = true;
        }
    }

    fn arm_inbox(&mut self) {
        let fd = types::Fd(self.inboxes[self.id].eventfd.as_raw_fd());
        let buf = (&mut *self.eventfd_buf as *mut u64).cast::<u8>();
        self.push(opcode::Read::new(fd, buf, 8).build().user_data(token(Kind::Inbox, 0, 0)));
    }

    fn arm_tick(&mut self) {
        if self.tick_armed {
            return;
        }
        self.tick_armed = true;
        let entry = opcode::Timeout::new(&*self.tick_spec as *const types::Timespec).build();
        self.push(entry.user_data(token(Kind::Tick, 0, 0)));
    }

    fn on_accept(&mut self, index: usize, res: i32, flags: u32) {
        let Some(listening) = self.listeners.get(index).and_then(Option::as_ref) else {
            unreachable!("accept completion for listener slot {index}, which is free")
        };
        let (closing, info) = (listening.closing || self.stopping, listening.info.clone());
        if !cqueue::more(flags) {
            if closing {
                // The accept has ended: nothing of the socket is in the kernel's hands now.
                self.listeners[index] = None;
                tracing::debug!(reactor = self.id, port_id = info.port_id, "no longer accepting");
            } else {
                self.arm_accept(index);
            }
        }
        if res < 0 {
            if res != -libc::ECANCELED && !closing {
                tracing::warn!(reactor = self.id, port_id = info.port_id, error = %io::Error::from_raw_os_error(-res), "accept failed");
            }
            return;
        }
        // SAFETY: a successful accept returns a new descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        if closing {
            return;
        }
        let to = place(&self.loads, &mut self.next_reactor);
        self.loads[to].pending.fetch_add(1, Ordering::Relaxed);
        if to == self.id {
            self.add_conn(fd, info);
        } else {
            self.inboxes[to].send(Msg::Conn { fd, listener: info });
        }
    }

    fn on_inbox(&mut self) {
        let mut poked = false;
        for msg in self.inboxes[self.id].drain() {
            match msg {
                Msg::Conn { fd, listener } if !self.stopping => self.add_conn(fd, listener),
                Msg::Conn { .. } => {}
                Msg::Poke => poked = true,
                Msg::Listen { fd, info } => self.listen(fd, info),
                #[cfg(feature = "rdma")]
                Msg::RdmaListen { bound, info } => self.rdma_listen(bound, info),
                #[cfg(feature = "rdma")]
                Msg::RdmaConn(incoming) => self.rdma_adopt(incoming),
                Msg::Unlisten { port_id } => {
                    self.unlisten(port_id);
                    #[cfg(feature = "rdma")]
                    if let Some(engine) = self.rdma.as_mut() {
                        engine.unlisten(port_id);
                    }
                }
                Msg::Stop => self.stop(),
                Msg::Ping(n) => self.heartbeats[self.id].store(n, Ordering::Release),
            }
        }
        if poked {
            self.poll_queues();
        }
        self.arm_inbox();
    }

    fn on_tick(&mut self) {
        self.tick_armed = false;
        self.poll_queues();
        if self.live() > 0 {
            self.arm_tick();
        }
    }

    fn stop(&mut self) {
        self.stopping = true;
        tracing::info!(reactor = self.id, connections = self.live(), "stopping");
        for listening in self.listeners.iter_mut().flatten() {
            listening.closing = true;
            // Shutting the socket down ends the multishot accept with an error completion.
            // SAFETY: shutdown on a listening socket this reactor holds a reference to.
            unsafe { libc::shutdown(listening.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
        #[cfg(feature = "rdma")]
        self.with_rdma(|e, io| e.stop(io));
        self.poll_queues();
    }

    fn add_conn(&mut self, fd: OwnedFd, info: ListenerInfo) {
        let peer = peer_addr(fd.as_raw_fd());
        if self.live_conns >= MAX_CONNECTIONS {
            tracing::warn!(reactor = self.id, ?peer, "connection refused: reactor at its connection limit");
            return;
        }
        let Some(staging) = self.pool.get(STAGING_BYTES) else {
            tracing::warn!(reactor = self.id, ?peer, "connection refused: no receive buffer left in the pool");
            return;
        };
        set_nodelay(fd.as_raw_fd());
        let queue = Queue::new(Arc::clone(&self.target), self.id, info, peer, staging, &self.pool);
        let conn = Conn {
            fd,
            queue,
            counted: Counted::Pending,
            recv_inflight: false,
            send_inflight: false,
            ops_inflight: 0,
            closing: false,
            dirty: false,
            // SAFETY: iovec and msghdr are plain C structs for which all-zero is valid.
            iov: Box::new(unsafe { std::mem::zeroed() }),
            // SAFETY: as above.
            msg: Box::new(unsafe { std::mem::zeroed() }),
        };
        let index = match self.free_conns.pop() {
            Some(i) => {
                self.conns[i as usize] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                (self.conns.len() - 1) as u32
            }
        };
        self.live_conns += 1;
        self.target.count_connection(true);
        tracing::debug!(reactor = self.id, conn = index, ?peer, "connection accepted");
        self.arm_tick();
        self.drive(index);
    }

    fn io(&mut self) -> (Io<'_>, &mut Vec<Option<Conn>>) {
        let io = Io {
            pool: &mut self.pool,
            ops: &mut self.ops,
            reactor: self.id,
            fixed_buffers: self.fixed_buffers,
            now: self.now,
            poke_all: &mut self.poke_all,
            stopping: self.stopping,
        };
        (io, &mut self.conns)
    }

    /// Runs `f` on connection `index`'s queue with the reactor's I/O context, then carries out
    /// what the queue asked for.
    fn with_queue(&mut self, index: u32, f: impl FnOnce(&mut Queue, &mut Io<'_>)) {
        {
            let (mut io, conns) = self.io();
            let Some(conn) = conns.get_mut(index as usize).and_then(Option::as_mut) else { return };
            f(&mut conn.queue, &mut io);
        }
        self.take_ops(index);
        self.mark_dirty(index);
    }

    /// Queues the backend operations connection `index` produced, and pokes the other
    /// reactors if it asked to.
    fn take_ops(&mut self, index: u32) {
        let mut ops = std::mem::take(&mut self.ops);
        // Linked operations (a flush chained after a volume's zeroing pieces) must reach the
        // kernel in one submission, or the chain breaks: make room for the batch first when
        // the ring can hold it at all.
        let (free, capacity) = {
            let sq = self.ring.submission();
            (sq.capacity() - sq.len(), sq.capacity())
        };
        if ops.len() > free
            && ops.len() <= capacity
            && let Err(error) = self.ring.submit()
        {
            tracing::warn!(reactor = self.id, %error, "io_uring submit failed while making room");
        }
        for (slot, entry) in ops.drain(..) {
            self.push(entry.user_data(token(Kind::Backend, index, slot)));
            self.backend_queued = true;
            self.backend_inflight += 1;
            if let Some(conn) = self.conns[index as usize].as_mut() {
                conn.ops_inflight += 1;
            }
        }
        self.ops = ops;
        if std::mem::take(&mut self.poke_all) {
            self.poke_everyone(index);
        }
    }

    /// Remembers that connection `index` may have something to send or receive: every
    /// connection touched in a turn is driven once at the turn's end, so all the responses a
    /// turn produced leave in one `sendmsg`.
    fn mark_dirty(&mut self, index: u32) {
        if let Some(conn) = self.conns[index as usize].as_mut()
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(index);
        }
    }

    fn drive_dirty(&mut self) {
        // Driving one connection may touch others (a closed admin queue pokes its I/O
        // queues), which then join the list: go on until it stays empty.
        let mut i = 0;
        while i < self.dirty.len() {
            let index = self.dirty[i];
            i += 1;
            if let Some(conn) = self.conns[index as usize].as_mut() {
                conn.dirty = false;
                self.drive(index);
            }
        }
        self.dirty.clear();
    }

    /// Queues the turn's large sends last, after submitting what the turn queued before them.
    ///
    /// The `io_uring_enter` that submits a large send copies it inline (30-40 µs for 256 KiB
    /// on loopback), and the block requests the same enter makes wait for that copy: io_uring
    /// plugs the block requests of a submission of three operations or more and lets them go
    /// to the device only once the whole submission is processed. So a turn's backend
    /// operations, and its receives, are submitted first, on their own; the sends go with the
    /// next turn's enter. Two reads and a receive are still a submission io_uring plugs, so
    /// the block layer still merges adjacent reads (measured: 410-440 KiB requests where 128
    /// KiB reads went out in 256 KiB slices, against 260 KiB before).
    fn send_late(&mut self) {
        if self.late_sends.is_empty() {
            return;
        }
        self.submit_now();
        let mut late = std::mem::take(&mut self.late_sends);
        for entry in late.drain(..) {
            self.push(entry);
        }
        self.late_sends = late;
    }

    /// Submits what is queued now.
    fn submit_now(&mut self) {
        self.backend_queued = false;
        match self.ring.submit() {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(error) => tracing::warn!(reactor = self.id, %error, "io_uring submit failed"),
        }
    }

    /// Submits what connection `index` needs now: a send, a receive; or starts and finishes
    /// its close.
    fn drive(&mut self, index: u32) {
        let Some(conn) = self.conns[index as usize].as_mut() else { return };
        if conn.counted == Counted::Pending
            && let Some(io_queue) = conn.queue.bound_as_io()
        {
            let load = &self.loads[self.id];
            load.pending.fetch_sub(1, Ordering::Relaxed);
            if io_queue {
                load.io.fetch_add(1, Ordering::Relaxed);
            }
            conn.counted = if io_queue { Counted::Io } else { Counted::Not };
        }
        if !conn.closing && conn.queue.wants_close() {
            conn.closing = true;
            // Wake the in-flight receive (and any blocked send) so the close can finish.
            // SAFETY: shutdown on a socket this connection owns.
            unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
        let mut entries: [Option<squeue::Entry>; 2] = [None, None];
        if !conn.send_inflight {
            let (n, bytes) = conn.queue.gather(&mut conn.iov[..]);
            if n > 0 {
                conn.msg.msg_iov = conn.iov.as_mut_ptr();
                conn.msg.msg_iovlen = n;
                conn.send_inflight = true;
                let fd = types::Fd(conn.fd.as_raw_fd());
                let send = opcode::SendMsg::new(fd, &*conn.msg)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
                    .user_data(token(Kind::Send, index, 0));
                if bytes >= LARGE_SEND && self.backend_queued {
                    self.late_sends.push(send);
                } else {
                    entries[0] = Some(send);
                }
            }
        }
        if !conn.recv_inflight
            && !conn.closing
            && let Some((ptr, len)) = conn.queue.recv_window()
        {
            conn.recv_inflight = true;
            let fd = types::Fd(conn.fd.as_raw_fd());
            entries[1] = Some(opcode::Recv::new(fd, ptr, len as u32).build().user_data(token(Kind::Recv, index, 0)));
        }
        let idle = !conn.recv_inflight && !conn.send_inflight && conn.ops_inflight == 0;
        for entry in entries.into_iter().flatten() {
            self.push(entry);
        }
        if idle && self.conns[index as usize].as_ref().is_some_and(|c| c.closing) {
            self.free_conn(index);
        }
    }

    fn on_recv(&mut self, index: u32, res: i32) {
        let Some(conn) = self.conns[index as usize].as_mut() else { return };
        conn.recv_inflight = false;
        if res <= 0 {
            if !conn.closing {
                let why =
                    if res == 0 { String::from("peer closed") } else { io::Error::from_raw_os_error(-res).to_string() };
                conn.queue.peer_gone(&why);
            }
            self.with_queue(index, |_, _| {});
            return;
        }
        self.with_queue(index, |q, io| q.on_recv(res as usize, io));
    }

    fn on_sent(&mut self, index: u32, res: i32) {
        let Some(conn) = self.conns[index as usize].as_mut() else { return };
        conn.send_inflight = false;
        if res < 0 {
            conn.queue.peer_gone(&io::Error::from_raw_os_error(-res).to_string());
            self.with_queue(index, |_, _| {});
            return;
        }
        self.with_queue(index, |q, io| q.on_sent(res as usize, io));
    }

    fn on_backend(&mut self, index: u32, slot: u16, res: i32) {
        let Some(conn) = self.conns[index as usize].as_mut() else { return };
        conn.ops_inflight -= 1;
        self.with_queue(index, |q, io| q.on_backend(slot, res, io));
    }

    /// A controller went away: every reactor (this one too) polls its queues.
    fn poke_everyone(&mut self, skip: u32) {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i != self.id {
                inbox.send(Msg::Poke);
            }
        }
        self.poll_queues_except(skip);
    }

    fn poll_queues(&mut self) {
        self.poll_queues_except(u32::MAX);
    }

    fn poll_queues_except(&mut self, skip: u32) {
        for index in 0..self.conns.len() as u32 {
            if index != skip && self.conns[index as usize].is_some() {
                self.with_queue(index, |q, io| q.poll(io));
            }
        }
        #[cfg(feature = "rdma")]
        self.with_rdma(|e, io| e.poll(io));
    }

    fn free_conn(&mut self, index: u32) {
        let conn = self.conns[index as usize].take().expect("freeing a live connection");
        let Conn { fd, queue, counted, .. } = conn;
        match counted {
            Counted::Pending => _ = self.loads[self.id].pending.fetch_sub(1, Ordering::Relaxed),
            Counted::Io => _ = self.loads[self.id].io.fetch_sub(1, Ordering::Relaxed),
            Counted::Not => {}
        }
        let (mut io, _) = self.io();
        queue.release(&mut io);
        drop(fd);
        self.free_conns.push(index);
        self.live_conns -= 1;
        self.target.count_connection(false);
        tracing::debug!(reactor = self.id, conn = index, "connection closed");
        if std::mem::take(&mut self.poke_all) {
            self.poke_everyone(u32::MAX);
        }
    }
}

/// The RDMA engine's place in the loop (feature `rdma`); without the feature these do nothing.
impl Reactor {
    /// Connections of either transport still open.
    fn live(&self) -> usize {
        #[cfg(feature = "rdma")]
        let rdma = self.rdma.as_ref().map_or(0, crate::rdma::engine::Engine::live);
        #[cfg(not(feature = "rdma"))]
        let rdma = 0;
        self.live_conns + rdma
    }

    /// Polls the completion queues the engine could not finish last turn; returns how many
    /// it still has (so the loop keeps polling rather than sleep).
    fn rdma_turn(&mut self) -> usize {
        #[cfg(feature = "rdma")]
        if self.rdma.as_ref().is_some_and(crate::rdma::engine::Engine::has_pending) {
            let mut more = false;
            self.with_rdma(|e, io| more = e.turn(io));
            return usize::from(more);
        }
        0
    }

    /// Arms a one-shot poll for every RDMA channel the engine wants watched.
    fn rdma_arm(&mut self) {
        #[cfg(feature = "rdma")]
        if let Some(engine) = self.rdma.as_mut() {
            for (fd, source) in engine.to_arm() {
                let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build();
                self.push(entry.user_data(token(Kind::Rdma, 0, source)));
            }
        }
    }

    /// Serves an RDMA listener: the engine is made for the first one.
    #[cfg(feature = "rdma")]
    #[allow(clippy::boxed_local)] // boxed in the message (it keeps `Msg` small), moved out here
    fn rdma_listen(&mut self, bound: Box<crate::rdma::engine::Bound>, info: ListenerInfo) {
        if self.stopping {
            return;
        }
        match self.rdma.as_mut() {
            Some(engine) => engine.listen(*bound, info),
            None => match crate::rdma::engine::Engine::new(self.id, Arc::clone(&self.target), *bound, info.clone()) {
                Ok(engine) => {
                    tracing::info!(reactor = self.id, port_id = info.port_id, address = %info.bound, "RDMA engine started");
                    self.rdma = Some(engine);
                }
                Err(error) => {
                    tracing::error!(reactor = self.id, port_id = info.port_id, address = %info.bound, %error, "cannot serve the RDMA listener");
                }
            },
        }
        self.rdma_arm();
    }

    /// Serves an NVMe/RDMA I/O queue placed here by reactor 0; the engine is made for the
    /// first one. Dropped (stopping, no engine), the request is rejected.
    #[cfg(feature = "rdma")]
    #[allow(clippy::boxed_local)] // boxed in the message (it keeps `Msg` small), moved out here
    fn rdma_adopt(&mut self, incoming: Box<crate::rdma::engine::Incoming>) {
        if self.stopping {
            return;
        }
        if self.rdma.is_none() {
            match crate::rdma::engine::Engine::for_connections(self.id, Arc::clone(&self.target)) {
                Ok(engine) => {
                    tracing::info!(reactor = self.id, "RDMA engine started");
                    self.rdma = Some(engine);
                }
                Err(error) => {
                    tracing::error!(reactor = self.id, %error, "no RDMA engine for a placed queue pair");
                    return;
                }
            }
        }
        self.with_rdma(|engine, io| engine.adopt(*incoming, io));
    }

    /// Runs `f` on the RDMA engine with the reactor's I/O context, then submits the backend
    /// operations it produced, re-arms its channels and keeps the tick going while it has
    /// connections.
    #[cfg(feature = "rdma")]
    fn with_rdma(&mut self, f: impl FnOnce(&mut crate::rdma::engine::Engine, &mut Io<'_>)) {
        let Some(engine) = self.rdma.as_mut() else { return };
        let mut io = Io {
            pool: &mut self.pool,
            ops: &mut self.ops,
            reactor: self.id,
            fixed_buffers: self.fixed_buffers,
            now: self.now,
            poke_all: &mut self.poke_all,
            stopping: self.stopping,
        };
        f(engine, &mut io);
        // I/O queues admitted here go where TCP connections would: the fewest I/O queues.
        for mut incoming in engine.take_incoming() {
            let to = place(&self.loads, &mut self.next_reactor);
            incoming.count_on(&self.loads, to);
            if to == self.id {
                engine.adopt(incoming, &mut io);
            } else if let Err(error) = incoming.park() {
                tracing::error!(reactor = self.id, %error, "cannot hand an RDMA connect request to another reactor");
            } else {
                self.inboxes[to].send(Msg::RdmaConn(Box::new(incoming)));
            }
        }
        let mut ops = engine.take_ops();
        for (conn, slot, entry) in ops.drain(..) {
            self.push(entry.user_data(token(Kind::RdmaBackend, conn, slot)));
            self.backend_queued = true;
            self.backend_inflight += 1;
        }
        if let Some(engine) = self.rdma.as_mut() {
            engine.give_back_ops(ops);
        }
        self.rdma_arm();
        if self.live() > 0 {
            self.arm_tick();
        }
        if std::mem::take(&mut self.poke_all) {
            self.poke_everyone(u32::MAX);
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        #[cfg(feature = "rdma")]
        if let Some(engine) = self.rdma.take() {
            let (mut io, _) = self.io();
            engine.shutdown(&mut io);
        }
        // Connections still here hold pool buffers; release them before the pool goes.
        for index in 0..self.conns.len() as u32 {
            if self.conns[index as usize].is_some() {
                self.free_conn(index);
            }
        }
    }
}

/// How long a reactor busy-polls after activity before it sleeps in the kernel: between 0
/// and `busy_poll_us`, adapted as Linux's guest halt-polling adapts its own. A sleeping
/// reactor learns of the next event late (tens of microseconds on a VM, where the wake-up
/// goes through the hypervisor), while polling costs a core. Polling pays when the next
/// event comes soon after the window closed; it is wasted when events come far apart (a
/// lightly loaded target, a disk that takes a millisecond). So each time the reactor went
/// to sleep and was woken, the time since the last activity decides: within twice the
/// longest window (room for the wake-up itself), a longer window would have caught the
/// event, and the window doubles (up to `busy_poll_us`); later than that, the window
/// halves, and below an eighth of `busy_poll_us` it is 0 (sleep at once). An event that
/// arrives while polling changes nothing.
#[derive(Debug, Clone, Copy)]
struct PollWindow {
    max: Duration,
    window: Duration,
    slept: bool,
}

impl PollWindow {
    fn new(max: Duration) -> PollWindow {
        PollWindow { max, window: max, slept: false }
    }

    fn window(&self) -> Duration {
        self.window
    }

    /// The window closed with nothing to do: the reactor sleeps until an event.
    fn sleeping(&mut self) {
        self.slept = true;
    }

    /// Something happened, `idle` after the previous activity.
    fn activity(&mut self, idle: Duration) {
        if !std::mem::take(&mut self.slept) {
            return;
        }
        let floor = self.max / 8;
        self.window = if idle <= self.max * 2 {
            (self.window * 2).max(floor).min(self.max)
        } else if self.window / 2 < floor {
            Duration::ZERO
        } else {
            self.window / 2
        };
    }
}

/// One ring per reactor, only ever entered by its own thread. Completion work runs when the
/// reactor asks for completions (DEFER_TASKRUN: no interrupting the reactor mid-turn), and the
/// TASKRUN flag in the shared ring says when there is some, so a busy-polling reactor knows
/// when a system call is worth making. Kernels before 6.1 get cooperative task running.
fn new_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .build(entries)
        .or_else(|_| IoUring::builder().setup_single_issuer().setup_coop_taskrun().setup_taskrun_flag().build(entries))
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option value on a socket we own.
    unsafe {
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&one as *const libc::c_int).cast(), 4);
    }
}

fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: getpeername writes at most `len` bytes into the storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: valid pointers to storage and its length.
    let rc = unsafe { libc::getpeername(fd, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) };
    if rc != 0 {
        return None;
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::from((u32::from_be(a.sin_addr.s_addr).to_be_bytes(), u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::from((a.sin6_addr.s6_addr, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// Goes to sleep with the current window and is woken `idle` after the last activity.
    fn woken(p: &mut PollWindow, idle: Duration) -> Duration {
        p.sleeping();
        p.activity(idle);
        p.window()
    }

    #[test]
    fn polling_stops_where_it_does_not_pay_and_comes_back_where_it_does() {
        let mut p = PollWindow::new(50 * US);
        assert_eq!(p.window(), 50 * US);
        // Events caught while polling change nothing, however late in the window.
        for idle in [1, 20, 49] {
            p.activity(idle * US);
            assert_eq!(p.window(), 50 * US);
        }
        // Events far apart (a lightly loaded target): the window halves down to an eighth of
        // the longest, then the reactor sleeps at once.
        let shrinking: Vec<_> = (0..5).map(|_| woken(&mut p, 400 * US)).collect();
        assert_eq!(shrinking, [25 * US, 12_500 * US / 1000, 6_250 * US / 1000, Duration::ZERO, Duration::ZERO]);
        // Events soon after a sleep began (within twice the longest window, wake-up
        // included): polling comes back, from an eighth, doubling, up to the longest.
        let growing: Vec<_> = (0..5).map(|_| woken(&mut p, 90 * US)).collect();
        assert_eq!(growing, [6_250 * US / 1000, 12_500 * US / 1000, 25 * US, 50 * US, 50 * US]);
        // At exactly twice the longest window it still grows; past it, it shrinks.
        assert_eq!(woken(&mut p, 100 * US), 50 * US);
        assert_eq!(woken(&mut p, 101 * US), 25 * US);
    }

    #[test]
    fn no_busy_polling_configured_means_none_ever() {
        let mut p = PollWindow::new(Duration::ZERO);
        for idle in [0, 1, 1000] {
            assert_eq!(woken(&mut p, idle * US), Duration::ZERO);
        }
    }

    fn loads(n: usize) -> Arc<[Load]> {
        (0..n).map(|_| Load::default()).collect()
    }

    #[test]
    fn placement_takes_the_fewest_io_queues_and_breaks_ties_in_turn() {
        let loads = loads(3);
        let mut next = 0;
        // All equal: 0, 1, 2, then 0 again.
        let turns: Vec<usize> = (0..4).map(|_| place(&loads, &mut next)).collect();
        assert_eq!(turns, [0, 1, 2, 0]);
        // Reactor 1 carries two I/O queues, reactor 2 one, reactor 0 none: 0 wins wherever
        // the turn stands.
        let counts = [IoQueueCount::new(&loads, 1), IoQueueCount::new(&loads, 1), IoQueueCount::new(&loads, 2)];
        for _ in 0..3 {
            assert_eq!(place(&loads, &mut next), 0);
        }
        // A TCP connection not yet bound counts too.
        loads[0].pending.fetch_add(2, Ordering::Relaxed);
        assert_eq!(place(&loads, &mut next), 2);
        drop(counts);
        assert_eq!(loads.iter().map(|l| l.io.load(Ordering::Relaxed)).collect::<Vec<_>>(), [0, 0, 0]);
    }

    #[test]
    fn an_rdma_io_queue_counts_from_placement_until_dropped() {
        let loads = loads(2);
        let count = IoQueueCount::new(&loads, 1);
        assert_eq!(loads[1].weight(), 1);
        let mut next = 1;
        assert_eq!(place(&loads, &mut next), 0, "the other reactor has no I/O queue");
        drop(count);
        assert_eq!(loads[1].weight(), 0);
    }
}
