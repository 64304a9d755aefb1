//! The RDMA engine of one reactor: one CM event channel, one queue pair per connection, the
//! reactor's buffer pool registered once per device (protection domain), and the completion
//! queues, all driven from the reactor's thread. The reactor watches the CM event channel
//! and each device's completion channel through io_uring (one-shot polls, re-armed by
//! [`Engine::to_arm`]) and hands what became readable to [`Engine::on_ready`]; the engine
//! reads the events, polls the completion queues and posts what the queues ask for.
//!
//! Listeners are bound where they are added (the daemon's start, the node API's thread:
//! [`Bound::bind`], a CM id listening on an event channel of its own) and reach reactor 0 in a
//! message; its engine moves each onto its own channel ([`Engine::listen`], `rdma_migrate_id`:
//! connection requests already waiting move with them). A removed listener's id is destroyed
//! by the engine ([`Engine::unlisten`]); its connections stay.
//!
//! Connection requests arrive on reactor 0's channel, which checks their private data. An
//! admin queue's (QID 0) is served there; an I/O queue's becomes an [`Incoming`] that the
//! reactor places like an NVMe/TCP connection, on the reactor with the fewest I/O queues. One
//! placed elsewhere waits on an event channel of its own ([`Incoming::park`]) until that
//! reactor's engine (made for its first one, [`Engine::for_connections`]) moves it onto its
//! channel and accepts it ([`Engine::adopt`]): from then on its CM events, completions and
//! backend I/O are that reactor's alone.
//!
//! ```text
//!  a connection (Conn)
//!
//!  CONNECT_REQUEST --private data ok--> queue pair, receives posted, accept --> live
//!        |                                                                     |
//!        +--bad private data / no resources--> reject (with STS) + destroy      |
//!                                                                              v
//!  live --(DISCONNECTED, error event, failed work request, protocol violation, stop)-->
//!  draining: QP in the error state, rdma_disconnect, every posted request flushes back
//!  --(nothing posted, no backend operation)--> QP, CQ, regions, id destroyed; buffers back
//! ```
//!
//! Invariants:
//! - a queue's memory and its pool buffers are released only when its queue pair has nothing
//!   posted and its backend operations have completed (`Queue::idle`, `ops_inflight`);
//! - an engine registers its reactor's pool regions with a device once, at its first
//!   connection on that device, and deregisters them only after every queue pair is gone;
//! - every listening id and every accepted connection's id is on its engine's one event
//!   channel, so one poll watches them all; an id between two engines is on a channel of its
//!   own, owned with it by its [`Incoming`], which rejects and destroys it if dropped;
//! - an I/O queue counts in its reactor's load from placement until its queue pair is freed
//!   ([`IoQueueCount`]);
//! - every loop is bounded: events per readiness, completions per queue per turn (the rest is
//!   polled on the next turn, see [`Engine::turn`]).

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::squeue;
use rdma_sys::{ibv_wc, ibv_wc_status, rdma_cm_event_type as ev, rdma_cm_id};

use crate::buffers::BufferPool;
use crate::rdma::queue::{Queue, Work};
use crate::rdma::verbs::{self, Cq, Device, EventChannel, Mr, SendOp};
use crate::rdma::wire::{CmAccept, CmReject, CmRequest, QueueShape, RECFMT_1_0, RejectStatus, WrId};
use crate::reactor::{IoQueueCount, Load};
use crate::subsys::{ListenerInfo, Target};
use crate::tcp::queue::Io;

/// CM events handled per readiness of the channel (the poll fires again if more wait).
const EVENT_BUDGET: usize = 64;
/// Completion queue events handled per readiness of a completion channel.
const CQ_EVENT_BUDGET: usize = 256;
/// Work completions polled at once.
const WC_BATCH: usize = 32;
/// Listen backlog of a CM id.
const BACKLOG: i32 = 128;
/// Rounds of posting a queue's work per call (a failed post may close the queue, which asks
/// for nothing more, so two rounds suffice; the bound is for safety).
const POST_ROUNDS: usize = 4;

/// The engine's event channel and the listening ids on it (reactor 0's engine has them).
#[derive(Debug)]
struct Listeners {
    channel: EventChannel,
    ids: Vec<(CmId, ListenerInfo)>,
}

#[derive(Debug)]
struct CmId(*mut rdma_cm_id);

// SAFETY: a CM id may be used from any thread; it moves between threads whole (a listener to
// reactor 0, a connection request to the reactor that serves it), and one thread at a time
// uses it.
unsafe impl Send for CmId {}

impl Drop for Listeners {
    fn drop(&mut self) {
        for (id, _) in self.ids.drain(..) {
            verbs::destroy_id(id.0);
        }
    }
}

/// An I/O queue's connection request, admitted (its private data checked) and not yet
/// accepted: it has been placed on a reactor and travels there. Dropped before an engine
/// adopts it (the reactor stops, a resource is missing), it is rejected and its id destroyed.
#[derive(Debug)]
pub struct Incoming {
    /// Taken when accepted or refused.
    id: Option<CmId>,
    /// The channel the id waits on between two engines ([`Incoming::park`]); dropped after
    /// the id (field order).
    channel: Option<EventChannel>,
    peer: Option<SocketAddr>,
    listener: ListenerInfo,
    shape: QueueShape,
    /// The host's side of the RDMA READ limits, from its request.
    initiator_depth: u8,
    responder_resources: u8,
    /// The I/O queue in its reactor's load, from placement on.
    count: Option<IoQueueCount>,
}

impl Incoming {
    /// Counts the queue in `reactor`'s load: it is placed there.
    pub fn count_on(&mut self, loads: &Arc<[Load]>, reactor: usize) {
        self.count = Some(IoQueueCount::new(loads, reactor));
    }

    /// Moves the id onto an event channel of its own, so that it leaves the engine that
    /// admitted it and whatever that engine does next (it may even end before the request is
    /// adopted); what the CM reports for the id meanwhile waits on that channel.
    pub fn park(&mut self) -> std::io::Result<()> {
        let channel = EventChannel::new()?;
        verbs::migrate_id(self.raw_id(), &channel)?;
        self.channel = Some(channel);
        Ok(())
    }

    fn raw_id(&self) -> *mut rdma_cm_id {
        self.id.as_ref().expect("an incoming request has its id until it is taken").0
    }

    /// Rejects the request (the host sees `status`) and destroys its id.
    fn refuse(mut self, status: RejectStatus, why: &str) {
        self.reject(status, why);
    }

    fn reject(&mut self, status: RejectStatus, why: &str) {
        if let Some(id) = self.id.take() {
            reject_request(id.0, self.peer, Some(self.shape.qid), status, why);
        }
    }
}

/// Rejects a connection request (the host sees `status`) and destroys its id; `qid` once the
/// private data has been read.
fn reject_request(id: *mut rdma_cm_id, peer: Option<SocketAddr>, qid: Option<u16>, status: RejectStatus, why: &str) {
    tracing::warn!(?peer, ?qid, %status, why, "RDMA connect request rejected");
    verbs::reject(id, &CmReject::new(status).encode());
    verbs::destroy_id(id);
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.reject(RejectStatus::NoResources, "no reactor took the request");
    }
}

/// One RDMA listener, bound and listening on an event channel of its own, on its way to the
/// engine of reactor 0 ([`Engine::listen`] moves the id onto the engine's channel). Until
/// then connection requests wait on its channel; dropped, it stops listening.
#[derive(Debug)]
pub struct Bound {
    /// Taken by the engine; destroyed on drop otherwise (before the channel).
    id: Option<CmId>,
    /// Where the id's connection requests wait until the engine moves it onto its own.
    _channel: EventChannel,
    /// The address as bound (port 0 resolved).
    pub addr: SocketAddr,
}

// SAFETY: no method of a shared `&Bound` touches the id or the channel (only `addr` is read
// through one); they are used by whoever owns the `Bound`, and then by reactor 0 alone.
unsafe impl Sync for Bound {}

impl Bound {
    /// Binds and listens on `addr` (port 0: the RDMA CM picks a port).
    pub fn bind(addr: SocketAddr) -> std::io::Result<Bound> {
        let channel = EventChannel::new()?;
        let (id, port) = verbs::listen(&channel, addr, BACKLOG)?;
        let mut addr = addr;
        addr.set_port(port);
        Ok(Bound { id: Some(CmId(id)), _channel: channel, addr })
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            verbs::destroy_id(id.0);
        }
    }
}

struct Conn {
    key: u64,
    id: *mut rdma_cm_id,
    device: usize,
    queue: Queue,
    // Dropped in this order after the QP: the CQ, then the queue's regions.
    cq: Option<Cq>,
    capsule_mr: Option<Mr>,
    response_mr: Option<Mr>,
    ops_inflight: u32,
    draining: bool,
    /// An I/O queue counts in the reactor's load while this lives.
    _count: Option<IoQueueCount>,
}

/// A device with the reactor's pool registered in its protection domain.
struct DeviceEntry {
    pool_mrs: Vec<Mr>,
    device: Device,
}

pub struct Engine {
    reactor: usize,
    target: Arc<Target>,
    /// I/O queue requests admitted here, for the reactor to place ([`Engine::take_incoming`]);
    /// before `listeners`, whose channel their ids are on, so that they go first.
    incoming: Vec<Incoming>,
    listeners: Listeners,
    devices: Vec<DeviceEntry>,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    generation: u32,
    live: usize,
    /// Whether each source is armed in the ring: 0 the CM channel, 1 + n device n's channel.
    armed: Vec<bool>,
    /// Connections whose completion queue still had completions when their budget ran out.
    pending: Vec<u32>,
    ops: Vec<(u32, u16, squeue::Entry)>,
    scratch: Vec<Work>,
    failed: Vec<WrId>,
    wcs: Vec<ibv_wc>,
    stopping: bool,
}

fn key_of(index: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(index)
}

impl Engine {
    /// The engine of reactor 0, made when the first RDMA listener reaches it (so that a
    /// target without RDMA listeners opens no RDMA device files at all).
    pub fn new(reactor: usize, target: Arc<Target>, first: Bound, info: ListenerInfo) -> std::io::Result<Engine> {
        let mut engine = Engine::for_connections(reactor, target)?;
        engine.listen(first, info);
        Ok(engine)
    }

    /// An engine without listeners, for the connections other reactors place here.
    pub fn for_connections(reactor: usize, target: Arc<Target>) -> std::io::Result<Engine> {
        Ok(Engine {
            reactor,
            target,
            incoming: Vec::new(),
            listeners: Listeners { channel: EventChannel::new()?, ids: Vec::new() },
            devices: Vec::new(),
            conns: Vec::new(),
            free: Vec::new(),
            generation: 0,
            live: 0,
            armed: vec![false],
            pending: Vec::new(),
            ops: Vec::new(),
            scratch: Vec::new(),
            failed: Vec::new(),
            wcs: (0..WC_BATCH).map(|_| verbs::empty_wc()).collect(),
            stopping: false,
        })
    }

    /// Serves one more listener: its id moves onto the engine's event channel (with any
    /// connection request already waiting on its own), and its channel is closed.
    pub fn listen(&mut self, mut bound: Bound, info: ListenerInfo) {
        if self.stopping {
            tracing::info!(port_id = info.port_id, "stopping: the RDMA listener is closed at once");
            return;
        }
        let id = bound.id.take().expect("a bound listener has its id");
        if let Err(error) = verbs::migrate_id(id.0, &self.listeners.channel) {
            tracing::error!(port_id = info.port_id, address = %info.bound, %error, "cannot serve the RDMA listener");
            verbs::destroy_id(id.0);
            return;
        }
        tracing::info!(reactor = self.reactor, port_id = info.port_id, address = %info.bound, "serving the RDMA listener");
        self.listeners.ids.push((id, info));
    }

    /// Stops listening on `port_id`: later connection requests to it are refused by the RDMA
    /// CM; connections made through it stay.
    pub fn unlisten(&mut self, port_id: u16) {
        let listeners = &mut self.listeners;
        if let Some(i) = listeners.ids.iter().position(|(_, info)| info.port_id == port_id) {
            let (id, info) = listeners.ids.remove(i);
            verbs::destroy_id(id.0);
            tracing::info!(reactor = self.reactor, port_id, address = %info.bound, "RDMA listener closed");
        }
    }

    /// Connections alive (the reactor runs until this is zero after a stop).
    pub fn live(&self) -> usize {
        self.live
    }

    /// The sources to poll (one-shot) in the ring now: (fd, source number).
    pub fn to_arm(&mut self) -> Vec<(RawFd, u16)> {
        let mut out = Vec::new();
        for (source, armed) in self.armed.iter_mut().enumerate() {
            if *armed {
                continue;
            }
            let fd =
                if source == 0 { self.listeners.channel.fd() } else { self.devices[source - 1].device.channel_fd() };
            *armed = true;
            out.push((fd, source as u16));
        }
        out
    }

    /// The backend submissions the queues produced, with their connection and slot; the
    /// emptied vector comes back through [`Engine::give_back_ops`] (no allocation per turn).
    pub fn take_ops(&mut self) -> Vec<(u32, u16, squeue::Entry)> {
        std::mem::take(&mut self.ops)
    }

    pub fn give_back_ops(&mut self, ops: Vec<(u32, u16, squeue::Entry)>) {
        debug_assert!(ops.is_empty());
        if self.ops.is_empty() {
            self.ops = ops;
        }
    }

    /// Whether some completion queue is left to poll from the last turn.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A watched source is readable (or its poll ended: `res` < 0).
    pub fn on_ready(&mut self, source: u16, res: i32, io: &mut Io<'_>) {
        let source = usize::from(source);
        if let Some(armed) = self.armed.get_mut(source) {
            *armed = false;
        }
        if res < 0 && res != -libc::ECANCELED {
            tracing::warn!(reactor = self.reactor, source, error = %std::io::Error::from_raw_os_error(-res), "RDMA channel poll failed");
        }
        if source == 0 {
            for _ in 0..EVENT_BUDGET {
                let Some(event) = self.listeners.channel.next() else { break };
                self.on_cm_event(event, io);
            }
        } else {
            for _ in 0..CQ_EVENT_BUDGET {
                let Some((_, key)) = self.devices[source - 1].device.next_cq_event() else { break };
                if let Some(index) = self.index_of(key) {
                    self.drain_cq(index, io);
                }
            }
        }
    }

    /// Polls the completion queues left over from the last turn; true if some are still left.
    pub fn turn(&mut self, io: &mut Io<'_>) -> bool {
        for index in std::mem::take(&mut self.pending) {
            self.drain_cq(index, io);
        }
        !self.pending.is_empty()
    }

    pub fn on_backend(&mut self, index: u32, slot: u16, res: i32, io: &mut Io<'_>) {
        let Some(conn) = self.conns.get_mut(index as usize).and_then(Option::as_mut) else { return };
        conn.ops_inflight -= 1;
        conn.queue.on_backend(slot, res, io);
        self.settle(index, io);
    }

    /// Timers and pokes: every queue looks at its controller, keep-alive and events.
    pub fn poll(&mut self, io: &mut Io<'_>) {
        for index in 0..self.conns.len() as u32 {
            if let Some(conn) = self.conns[index as usize].as_mut() {
                conn.queue.poll(io);
                self.settle(index, io);
            }
        }
    }

    /// Stop: no new connections; queues finish what is in flight, then close.
    pub fn stop(&mut self, io: &mut Io<'_>) {
        self.stopping = true;
        for (id, _) in self.listeners.ids.drain(..) {
            verbs::destroy_id(id.0);
        }
        self.incoming.clear();
        self.poll(io);
    }

    fn index_of(&self, key: u64) -> Option<u32> {
        let index = key as u32;
        self.conns.get(index as usize)?.as_ref().filter(|c| c.key == key).map(|_| index)
    }

    fn on_cm_event(&mut self, event: verbs::CmEvent, io: &mut Io<'_>) {
        match event.kind {
            ev::RDMA_CM_EVENT_CONNECT_REQUEST => self.on_connect_request(event, io),
            ev::RDMA_CM_EVENT_ESTABLISHED => {
                tracing::debug!(reactor = self.reactor, "RDMA connection established");
            }
            ev::RDMA_CM_EVENT_DISCONNECTED
            | ev::RDMA_CM_EVENT_TIMEWAIT_EXIT
            | ev::RDMA_CM_EVENT_CONNECT_ERROR
            | ev::RDMA_CM_EVENT_UNREACHABLE
            | ev::RDMA_CM_EVENT_REJECTED
            | ev::RDMA_CM_EVENT_ADDR_CHANGE
            | ev::RDMA_CM_EVENT_DEVICE_REMOVAL => {
                let name = verbs::event_name(event.kind);
                if event.id.is_null() {
                    return;
                }
                match self.index_of(verbs::context(event.id)) {
                    Some(index) => {
                        let conn = self.conns[index as usize].as_mut().expect("indexed connection");
                        conn.queue.close(&name, io);
                        self.settle(index, io);
                    }
                    None if event.kind == ev::RDMA_CM_EVENT_DEVICE_REMOVAL => {
                        tracing::error!(reactor = self.reactor, "RDMA device removed under a listener");
                    }
                    None => {}
                }
            }
            other => {
                tracing::debug!(reactor = self.reactor, event = %verbs::event_name(other), status = event.status, "RDMA CM event")
            }
        }
    }

    /// A connection request on a listener: its private data is checked here; an admin
    /// queue is served by this engine, an I/O queue waits for the reactor to place it.
    fn on_connect_request(&mut self, event: verbs::CmEvent, io: &mut Io<'_>) {
        let id = event.id;
        let peer = verbs::peer_addr(id);
        let listener = self.listeners.ids.iter().find(|(l, _)| l.0 == event.listen_id).map(|(_, info)| info.clone());
        let refuse = |status: RejectStatus, why: &str| reject_request(id, peer, None, status, why);
        let Some(listener) = listener.filter(|_| !self.stopping) else {
            return refuse(RejectStatus::NoResources, "not listening");
        };
        let limits = &self.target.limits;
        let shape = match CmRequest::decode(&event.private_data)
            .and_then(|r| r.admit(limits.max_queue_entries, limits.max_io_queues, limits.in_capsule_data_bytes))
        {
            Ok(shape) => shape,
            Err(status) => return refuse(status, "private data"),
        };
        let incoming = Incoming {
            id: Some(CmId(id)),
            channel: None,
            peer,
            listener,
            shape,
            initiator_depth: event.initiator_depth,
            responder_resources: event.responder_resources,
            count: None,
        };
        if shape.qid == 0 {
            self.adopt(incoming, io);
        } else {
            self.incoming.push(incoming);
        }
    }

    /// The I/O queue requests admitted since the last call, for the reactor to place; each
    /// comes back to [`Engine::adopt`] here or on another reactor.
    pub fn take_incoming(&mut self) -> Vec<Incoming> {
        std::mem::take(&mut self.incoming)
    }

    /// Serves an admitted connection request: its id moves onto this engine's channel (if it
    /// is parked), the device is opened (and the pool registered) on first use, the queue
    /// pair is made and the request accepted. Refused with NoResources when something is
    /// missing, InvalidHsqsize when the queue is larger than the device allows.
    pub fn adopt(&mut self, mut incoming: Incoming, io: &mut Io<'_>) {
        if self.stopping {
            return incoming.refuse(RejectStatus::NoResources, "stopping");
        }
        let id = incoming.raw_id();
        if incoming.channel.is_some() {
            if let Err(e) = verbs::migrate_id(id, &self.listeners.channel) {
                return incoming.refuse(RejectStatus::NoResources, &e.to_string());
            }
            incoming.channel = None;
        }
        let device = match self.device_for(verbs::verbs_of(id), io.pool) {
            Ok(d) => d,
            Err(e) => return incoming.refuse(RejectStatus::NoResources, &e.to_string()),
        };
        let shape = incoming.shape;
        let entries = u32::from(shape.entries);
        let dev = &self.devices[device].device;
        if 2 * entries > dev.max_qp_wr || 3 * entries > dev.max_cqe {
            return incoming.refuse(RejectStatus::InvalidHsqsize, "queue larger than the device allows");
        }
        let initiator_depth = incoming.responder_resources.min(dev.max_qp_init_rd_atom).max(1);
        let responder_resources = incoming.initiator_depth.min(dev.max_qp_rd_atom);

        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as u32
            }
        };
        self.generation = self.generation.wrapping_add(1).max(1);
        let key = key_of(index, self.generation);
        let peer = incoming.peer;
        let mut queue = Queue::new(Arc::clone(&self.target), self.reactor, incoming.listener.clone(), peer, shape);
        let cq = match Cq::new(dev, 3 * entries, key) {
            Ok(cq) => cq,
            Err(e) => {
                self.free.push(index);
                return incoming.refuse(RejectStatus::NoResources, &e.to_string());
            }
        };
        let registered = verbs::create_qp(id, dev, &cq, 2 * entries, entries).and_then(|()| {
            let (ptr, len) = queue.capsule_memory();
            let capsule_mr = dev.register(ptr, len)?;
            let (ptr, len) = queue.response_memory();
            Ok((capsule_mr, dev.register(ptr, len)?))
        });
        let (capsule_mr, response_mr) = match registered {
            Ok(mrs) => mrs,
            Err(e) => {
                verbs::destroy_qp(id);
                drop(cq);
                self.free.push(index);
                return incoming.refuse(RejectStatus::NoResources, &e.to_string());
            }
        };
        // Accepted or closed from here on: the connection owns the id.
        incoming.id = None;
        verbs::set_context(id, key);
        queue.start();
        self.conns[index as usize] = Some(Conn {
            key,
            id,
            device,
            queue,
            cq: Some(cq),
            capsule_mr: Some(capsule_mr),
            response_mr: Some(response_mr),
            ops_inflight: 0,
            draining: false,
            _count: incoming.count.take(),
        });
        self.live += 1;
        self.post(index, io);
        let accept = CmAccept { recfmt: RECFMT_1_0, crqsize: shape.entries }.encode();
        if let Err(e) = verbs::accept(id, &accept, initiator_depth, responder_resources) {
            let conn = self.conns[index as usize].as_mut().expect("just made");
            conn.queue.close(&e.to_string(), io);
        } else {
            tracing::info!(
                reactor = self.reactor,
                ?peer,
                qid = shape.qid,
                entries,
                icd = shape.icd_bytes,
                "RDMA queue pair accepted"
            );
        }
        self.settle(index, io);
    }

    /// The device entry for `context`, opening it and registering the pool on first use.
    fn device_for(&mut self, context: *mut rdma_sys::ibv_context, pool: &BufferPool) -> std::io::Result<usize> {
        if let Some(i) = self.devices.iter().position(|d| d.device.context == context) {
            return Ok(i);
        }
        let device = Device::open(context)?;
        let mut pool_mrs = Vec::new();
        for iov in pool.iovecs() {
            pool_mrs.push(device.register(iov.iov_base.cast(), iov.iov_len)?);
        }
        tracing::info!(reactor = self.reactor, regions = pool_mrs.len(), "RDMA device opened; buffer pool registered");
        self.devices.push(DeviceEntry { pool_mrs, device });
        self.armed.push(false);
        Ok(self.devices.len() - 1)
    }

    /// Polls a connection's completion queue, up to a budget.
    fn drain_cq(&mut self, index: u32, io: &mut Io<'_>) {
        let Some(conn) = self.conns.get(index as usize).and_then(Option::as_ref) else { return };
        let budget = 4 * usize::from(conn.queue.shape().entries);
        let mut seen = 0;
        while seen < budget {
            let Some(conn) = self.conns.get_mut(index as usize).and_then(Option::as_mut) else { return };
            let Some(cq) = conn.cq.as_ref() else { return };
            let n = cq.poll(&mut self.wcs);
            if n == 0 {
                return;
            }
            seen += n;
            for wc in &self.wcs[..n] {
                let Some(id) = WrId::decode(wc.wr_id) else {
                    tracing::error!(wr_id = wc.wr_id, "completion of an unknown work request");
                    continue;
                };
                let ok = wc.status == ibv_wc_status::IBV_WC_SUCCESS;
                if !ok && wc.status != ibv_wc_status::IBV_WC_WR_FLUSH_ERR {
                    tracing::warn!(who = %conn.queue.who(), ?id, status = %verbs::wc_status_name(wc.status), "RDMA work request failed");
                }
                conn.queue.on_done(id, ok, wc.byte_len, io);
            }
            if !self.settle(index, io) {
                return;
            }
        }
        self.pending.push(index);
    }

    /// After a queue was called: take its backend submissions, post its work requests, start
    /// its close, or free it when it is closed and idle. False if the connection is gone.
    fn settle(&mut self, index: u32, io: &mut Io<'_>) -> bool {
        for (slot, entry) in io.ops.drain(..) {
            self.ops.push((index, slot, entry));
            if let Some(conn) = self.conns[index as usize].as_mut() {
                conn.ops_inflight += 1;
            }
        }
        self.post(index, io);
        let Some(conn) = self.conns[index as usize].as_mut() else { return false };
        if conn.queue.wants_close() && !conn.draining {
            conn.draining = true;
            verbs::qp_to_error(conn.id);
            verbs::disconnect(conn.id);
        }
        if conn.draining && conn.queue.idle() && conn.ops_inflight == 0 {
            self.free_conn(index, io);
            return false;
        }
        true
    }

    /// Posts what the queue asked for; a request that cannot be posted completes as failed.
    fn post(&mut self, index: u32, io: &mut Io<'_>) {
        let Engine { conns, devices, scratch, failed, .. } = self;
        let Some(conn) = conns[index as usize].as_mut() else { return };
        for _ in 0..POST_ROUNDS {
            scratch.extend(conn.queue.take_work());
            if scratch.is_empty() {
                return;
            }
            let pool_mrs = &devices[conn.device].pool_mrs;
            let capsule_lkey = conn.capsule_mr.as_ref().map_or(0, Mr::lkey);
            let response_lkey = conn.response_mr.as_ref().map_or(0, Mr::lkey);
            for work in scratch.drain(..) {
                let (wr, posted) = match work {
                    Work::Recv { index } => {
                        let (ptr, len) = conn.queue.recv_buffer(index);
                        let wr = WrId::Recv(index);
                        (wr, verbs::post_recv(conn.id, wr.encode(), ptr, len, capsule_lkey))
                    }
                    Work::Read { slot, local, class, len, addr, key } => {
                        let wr = WrId::Read(slot);
                        let lkey = pool_mrs[usize::from(class)].lkey();
                        (wr, verbs::post_send(conn.id, wr.encode(), SendOp::Read { addr, rkey: key }, local, len, lkey))
                    }
                    Work::Write { slot, local, class, len, addr, key } => {
                        let wr = WrId::Write(slot);
                        let lkey = pool_mrs[usize::from(class)].lkey();
                        (
                            wr,
                            verbs::post_send(conn.id, wr.encode(), SendOp::Write { addr, rkey: key }, local, len, lkey),
                        )
                    }
                    Work::Send { slot, invalidate } => {
                        let (ptr, len) = conn.queue.response(slot);
                        let wr = WrId::Send(slot);
                        (
                            wr,
                            verbs::post_send(
                                conn.id,
                                wr.encode(),
                                SendOp::Send { invalidate },
                                ptr,
                                len,
                                response_lkey,
                            ),
                        )
                    }
                };
                if let Err(e) = posted {
                    tracing::warn!(who = %conn.queue.who(), ?wr, error = %e, "posting an RDMA work request failed");
                    failed.push(wr);
                }
            }
            for wr in failed.drain(..) {
                conn.queue.on_done(wr, false, 0, io);
            }
        }
    }

    fn free_conn(&mut self, index: u32, io: &mut Io<'_>) {
        let mut conn = self.conns[index as usize].take().expect("freeing a live RDMA connection");
        verbs::destroy_qp(conn.id);
        conn.cq = None;
        conn.capsule_mr = None;
        conn.response_mr = None;
        verbs::destroy_id(conn.id);
        tracing::debug!(reactor = self.reactor, who = %conn.queue.who(), "RDMA queue pair freed");
        conn.queue.release(io);
        self.free.push(index);
        self.live -= 1;
    }

    /// The reactor ends: whatever is left is torn down. Queues that are idle give their
    /// buffers back; a queue with work still posted keeps them (the pool then leaks its
    /// regions rather than let the HCA write into reused memory).
    pub fn shutdown(mut self, io: &mut Io<'_>) {
        for index in 0..self.conns.len() as u32 {
            let Some(conn) = self.conns[index as usize].as_mut() else { continue };
            if !conn.draining {
                conn.draining = true;
                verbs::qp_to_error(conn.id);
                verbs::disconnect(conn.id);
            }
            // Give the flushes a chance to come back.
            self.drain_cq(index, io);
            if let Some(conn) = self.conns[index as usize].take() {
                let Conn { id, queue, cq, capsule_mr, response_mr, .. } = conn;
                verbs::destroy_qp(id);
                drop((cq, capsule_mr, response_mr));
                verbs::destroy_id(id);
                if queue.idle() {
                    queue.release(io);
                } else {
                    tracing::error!(
                        reactor = self.reactor,
                        "RDMA queue torn down with work posted; its buffers are not reused"
                    );
                    std::mem::forget(queue);
                }
            }
        }
        self.devices.clear();
        self.incoming.clear();
    }
}
