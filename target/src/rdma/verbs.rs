//! The few libibverbs and librdmacm calls the engine makes, each in a small wrapper whose
//! `// SAFETY:` says what it relies on. Raw pointers stay raw: the engine owns the objects and
//! destroys them in order (queue pair, completion queue, memory regions, CM id; then, when
//! the reactor ends, the devices' regions, completion channels and protection domains).
//!
//! Invariants: every file descriptor handed to io_uring is non-blocking, so draining a channel
//! never blocks the reactor; every CM event is acknowledged as soon as it has been read (a
//! destroyed id waits for its events' acknowledgements).

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr;

use rdma_sys::*;

/// errno as an error that names the call. ENODEV (no RDMA device: no RDMA CM, or none with
/// the address) becomes `NotFound`, which std leaves uncategorised.
fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    let kind = if e.raw_os_error() == Some(libc::ENODEV) { io::ErrorKind::NotFound } else { e.kind() };
    io::Error::new(kind, format!("{what}: {e}"))
}

/// rdma_cm and verbs calls that return 0 or -1 and errno.
fn check(rc: i32, what: &str) -> io::Result<()> {
    if rc == 0 { Ok(()) } else { Err(last_error(what)) }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the channel owns; the flags are read before being set.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(last_error("fcntl O_NONBLOCK"));
    }
    Ok(())
}

/// An RDMA CM event channel (its fd is non-blocking).
#[derive(Debug)]
pub struct EventChannel(*mut rdma_event_channel);

// SAFETY: the channel is a kernel file descriptor wrapped in a struct; librdmacm allows using
// it from any thread, and it is used by one thread at a time (moved to its reactor).
unsafe impl Send for EventChannel {}

impl EventChannel {
    pub fn new() -> io::Result<EventChannel> {
        // SAFETY: no arguments; a null result is an error.
        let ch = unsafe { rdma_create_event_channel() };
        if ch.is_null() {
            return Err(last_error("rdma_create_event_channel (is the rdma_ucm module loaded?)"));
        }
        let channel = EventChannel(ch);
        set_nonblocking(channel.fd())?;
        Ok(channel)
    }

    pub fn raw(&self) -> *mut rdma_event_channel {
        self.0
    }

    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel is valid while self lives.
        unsafe { (*self.0).fd }
    }

    /// The next event, copied out and acknowledged; `None` when there is none now.
    pub fn next(&self) -> Option<CmEvent> {
        let mut ev: *mut rdma_cm_event = ptr::null_mut();
        // SAFETY: valid channel and out pointer; the fd is non-blocking so this returns at once.
        if unsafe { rdma_get_cm_event(self.0, &mut ev) } != 0 {
            return None;
        }
        // SAFETY: a successful call gives a valid event until it is acknowledged below.
        let e = unsafe { &*ev };
        let (private_data, initiator_depth, responder_resources) =
            if e.event == rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST {
                // SAFETY: for a connect request the conn member of the union is the one set; its
                // private data is valid (private_data_len bytes) until the event is acknowledged.
                let conn = unsafe { e.param.conn };
                let data = if conn.private_data.is_null() {
                    Vec::new()
                } else {
                    // SAFETY: as above.
                    unsafe {
                        std::slice::from_raw_parts(conn.private_data.cast::<u8>(), usize::from(conn.private_data_len))
                    }
                    .to_vec()
                };
                (data, conn.initiator_depth, conn.responder_resources)
            } else {
                (Vec::new(), 0, 0)
            };
        let out = CmEvent {
            kind: e.event,
            status: e.status,
            id: e.id,
            listen_id: e.listen_id,
            private_data,
            initiator_depth,
            responder_resources,
        };
        // SAFETY: the event came from rdma_get_cm_event and is acknowledged exactly once;
        // nothing of it is used afterwards (everything needed was copied).
        unsafe { rdma_ack_cm_event(ev) };
        Some(out)
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: every id on the channel was destroyed before (the engine's drop order).
        unsafe { rdma_destroy_event_channel(self.0) };
    }
}

/// A CM event, copied out of librdmacm's before it was acknowledged.
#[derive(Debug)]
pub struct CmEvent {
    pub kind: rdma_cm_event_type::Type,
    pub status: i32,
    pub id: *mut rdma_cm_id,
    pub listen_id: *mut rdma_cm_id,
    pub private_data: Vec<u8>,
    pub initiator_depth: u8,
    pub responder_resources: u8,
}

pub fn event_name(kind: rdma_cm_event_type::Type) -> String {
    // SAFETY: rdma_event_str returns a static string for any value.
    unsafe { std::ffi::CStr::from_ptr(rdma_event_str(kind)) }.to_string_lossy().into_owned()
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A listening CM id bound to `addr` on `channel`; returns it and the port it is bound to.
pub fn listen(channel: &EventChannel, addr: SocketAddr, backlog: i32) -> io::Result<(*mut rdma_cm_id, u16)> {
    let mut id: *mut rdma_cm_id = ptr::null_mut();
    // SAFETY: valid channel and out pointer; TCP port space (reliable connected QPs).
    let rc = unsafe { rdma_create_id(channel.raw(), &mut id, ptr::null_mut(), rdma_port_space::RDMA_PS_TCP) };
    check(rc, "rdma_create_id")?;
    let (mut storage, _) = sockaddr_of(addr);
    // SAFETY: id is valid; the address lives for the call.
    let bound =
        check(unsafe { rdma_bind_addr(id, (&mut storage as *mut libc::sockaddr_storage).cast()) }, "rdma_bind_addr")
            // SAFETY: as above.
            .and_then(|()| check(unsafe { rdma_listen(id, backlog) }, "rdma_listen"));
    if let Err(e) = bound {
        destroy_id(id);
        return Err(e);
    }
    // SAFETY: a bound id's source address is in its route (what rdma_get_src_port reads).
    let port = unsafe { rdma_get_src_port(id) };
    Ok((id, u16::from_be(port)))
}

/// Moves a listening id onto `channel`: its events, and the connection requests already
/// queued for it, arrive there from now on.
pub fn migrate_id(id: *mut rdma_cm_id, channel: &EventChannel) -> io::Result<()> {
    // SAFETY: id is a live listening id whose events were never read on its old channel, so
    // the call does not wait for acknowledgements; the channel outlives the id (the engine
    // destroys its ids before its channel).
    check(unsafe { rdma_migrate_id(id, channel.raw()) }, "rdma_migrate_id")
}

/// The peer's address of a connection's CM id.
pub fn peer_addr(id: *mut rdma_cm_id) -> Option<SocketAddr> {
    // SAFETY: id is a live CM id of a connection request; its route holds the peer's address.
    let storage = unsafe { (*id).route.addr.dst_addr_union.dst_storage };
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::from((a.sin_addr.s_addr.to_ne_bytes(), u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::from((a.sin6_addr.s6_addr, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

pub fn set_context(id: *mut rdma_cm_id, key: u64) {
    // SAFETY: id is a live CM id owned by the engine; context is ours to use.
    unsafe { (*id).context = key as usize as *mut libc::c_void };
}

pub fn context(id: *mut rdma_cm_id) -> u64 {
    // SAFETY: as above.
    unsafe { (*id).context as usize as u64 }
}

pub fn verbs_of(id: *mut rdma_cm_id) -> *mut ibv_context {
    // SAFETY: as above; a connection request's id is bound to its device.
    unsafe { (*id).verbs }
}

pub fn destroy_id(id: *mut rdma_cm_id) {
    // SAFETY: id is live, its QP was destroyed, and every event of it was acknowledged
    // (EventChannel::next acknowledges at once), so this does not block.
    unsafe { rdma_destroy_id(id) };
}

pub fn reject(id: *mut rdma_cm_id, private_data: &[u8]) {
    // SAFETY: id is a connection request's id; the data lives for the call.
    unsafe { rdma_reject(id, private_data.as_ptr().cast(), private_data.len() as u8) };
}

pub fn accept(
    id: *mut rdma_cm_id,
    private_data: &[u8],
    initiator_depth: u8,
    responder_resources: u8,
) -> io::Result<()> {
    let mut param = rdma_conn_param {
        private_data: private_data.as_ptr().cast(),
        private_data_len: private_data.len() as u8,
        responder_resources,
        initiator_depth,
        flow_control: 1,
        retry_count: 7,
        rnr_retry_count: 7,
        srq: 0,
        qp_num: 0,
    };
    // SAFETY: id has a QP; param and the private data live for the call.
    check(unsafe { rdma_accept(id, &mut param) }, "rdma_accept")
}

pub fn disconnect(id: *mut rdma_cm_id) {
    // SAFETY: id is live; disconnecting an unconnected id just fails, which is fine here.
    unsafe { rdma_disconnect(id) };
}

/// A device's protection domain, completion channel and attributes.
#[derive(Debug)]
pub struct Device {
    pub context: *mut ibv_context,
    pub pd: *mut ibv_pd,
    pub channel: *mut ibv_comp_channel,
    pub max_qp_rd_atom: u8,
    pub max_qp_init_rd_atom: u8,
    pub max_qp_wr: u32,
    pub max_cqe: u32,
}

impl Device {
    pub fn open(context: *mut ibv_context) -> io::Result<Device> {
        // SAFETY: all-zero is a valid ibv_device_attr to be filled in.
        let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: context is a device context from the CM; attr is a valid out pointer.
        check(unsafe { ibv_query_device(context, &mut attr) }, "ibv_query_device")?;
        // SAFETY: context is valid.
        let pd = unsafe { ibv_alloc_pd(context) };
        if pd.is_null() {
            return Err(last_error("ibv_alloc_pd"));
        }
        // SAFETY: context is valid.
        let channel = unsafe { ibv_create_comp_channel(context) };
        if channel.is_null() {
            let e = last_error("ibv_create_comp_channel");
            // SAFETY: pd was just allocated and holds nothing.
            unsafe { ibv_dealloc_pd(pd) };
            return Err(e);
        }
        // SAFETY: channel is valid.
        if let Err(e) = set_nonblocking(unsafe { (*channel).fd }) {
            // SAFETY: both were just created and hold nothing.
            unsafe {
                ibv_destroy_comp_channel(channel);
                ibv_dealloc_pd(pd);
            }
            return Err(e);
        }
        Ok(Device {
            context,
            pd,
            channel,
            max_qp_rd_atom: attr.max_qp_rd_atom.clamp(0, 255) as u8,
            max_qp_init_rd_atom: attr.max_qp_init_rd_atom.clamp(0, 255) as u8,
            max_qp_wr: attr.max_qp_wr.max(0) as u32,
            max_cqe: attr.max_cqe.max(0) as u32,
        })
    }

    pub fn channel_fd(&self) -> RawFd {
        // SAFETY: the channel lives as long as the device.
        unsafe { (*self.channel).fd }
    }

    /// Registers `len` bytes at `addr` for local access by the HCA (it writes RDMA READ data
    /// and receives there; it reads RDMA WRITE data and sends from there).
    pub fn register(&self, addr: *mut u8, len: usize) -> io::Result<Mr> {
        let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 as i32;
        // SAFETY: the memory is mapped for as long as the region is registered: the caller
        // deregisters (drops the Mr) before the memory goes.
        let mr = unsafe { ibv_reg_mr(self.pd, addr.cast(), len, access) };
        if mr.is_null() {
            return Err(last_error("ibv_reg_mr"));
        }
        Ok(Mr(mr))
    }

    /// The next completion queue with an event, acknowledged and re-armed; `None` when the
    /// channel has none now. Returns the queue's context (the engine's key).
    pub fn next_cq_event(&self) -> Option<(*mut ibv_cq, u64)> {
        let mut cq: *mut ibv_cq = ptr::null_mut();
        let mut ctx: *mut libc::c_void = ptr::null_mut();
        // SAFETY: valid channel and out pointers; the fd is non-blocking.
        if unsafe { ibv_get_cq_event(self.channel, &mut cq, &mut ctx) } != 0 {
            return None;
        }
        // SAFETY: cq came with the event; one event is acknowledged, and the CQ is armed
        // again before it is polled so that no completion goes unnoticed.
        unsafe {
            ibv_ack_cq_events(cq, 1);
            ibv_req_notify_cq(cq, 0);
        }
        Some((cq, ctx as usize as u64))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every QP, CQ and MR of the device was destroyed before (the engine's order).
        unsafe {
            ibv_destroy_comp_channel(self.channel);
            ibv_dealloc_pd(self.pd);
        }
    }
}

/// A registered memory region; deregistered on drop.
#[derive(Debug)]
pub struct Mr(*mut ibv_mr);

impl Mr {
    pub fn lkey(&self) -> u32 {
        // SAFETY: the region is valid while self lives.
        unsafe { (*self.0).lkey }
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: no work request using the region is outstanding (the engine frees a queue's
        // regions only when it is idle; the pool's when every queue is gone).
        unsafe { ibv_dereg_mr(self.0) };
    }
}

/// A completion queue on the device's channel, armed; destroyed on drop.
#[derive(Debug)]
pub struct Cq(pub *mut ibv_cq);

impl Cq {
    pub fn new(device: &Device, entries: u32, key: u64) -> io::Result<Cq> {
        // SAFETY: valid context and channel; the context pointer is our key, never dereferenced.
        let cq = unsafe {
            ibv_create_cq(device.context, entries as i32, key as usize as *mut libc::c_void, device.channel, 0)
        };
        if cq.is_null() {
            return Err(last_error("ibv_create_cq"));
        }
        // SAFETY: cq was just created.
        if unsafe { ibv_req_notify_cq(cq, 0) } != 0 {
            let e = last_error("ibv_req_notify_cq");
            // SAFETY: nothing uses the new cq.
            unsafe { ibv_destroy_cq(cq) };
            return Err(e);
        }
        Ok(Cq(cq))
    }

    /// Fills `wcs` with completions; returns how many.
    pub fn poll(&self, wcs: &mut [ibv_wc]) -> usize {
        // SAFETY: valid cq; wcs has room for its length.
        let n = unsafe { ibv_poll_cq(self.0, wcs.len() as i32, wcs.as_mut_ptr()) };
        n.max(0) as usize
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: its QP was destroyed and every event of it acknowledged.
        unsafe { ibv_destroy_cq(self.0) };
    }
}

/// Creates the RC queue pair of a connection request's id on `cq`.
pub fn create_qp(id: *mut rdma_cm_id, device: &Device, cq: &Cq, send_wr: u32, recv_wr: u32) -> io::Result<()> {
    // SAFETY: all-zero is a valid ibv_qp_init_attr to fill in.
    let mut attr: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
    attr.send_cq = cq.0;
    attr.recv_cq = cq.0;
    attr.cap.max_send_wr = send_wr;
    attr.cap.max_recv_wr = recv_wr;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    attr.qp_type = ibv_qp_type::IBV_QPT_RC;
    // SAFETY: id is a connection request's id on device's context; attr lives for the call.
    check(unsafe { rdma_create_qp(id, device.pd, &mut attr) }, "rdma_create_qp")
}

pub fn destroy_qp(id: *mut rdma_cm_id) {
    // SAFETY: the id has a QP with nothing posted (flushed and completed).
    unsafe { rdma_destroy_qp(id) };
}

/// Moves the id's QP to the error state: everything posted completes, flushed.
pub fn qp_to_error(id: *mut rdma_cm_id) {
    // SAFETY: id is live; its qp may be null (no QP was made), checked.
    let qp = unsafe { (*id).qp };
    if qp.is_null() {
        return;
    }
    // SAFETY: all-zero is a valid ibv_qp_attr; only the state is read (IBV_QP_STATE).
    let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
    attr.qp_state = ibv_qp_state::IBV_QPS_ERR;
    // SAFETY: qp is live.
    unsafe { ibv_modify_qp(qp, &mut attr, ibv_qp_attr_mask::IBV_QP_STATE.0 as i32) };
}

/// Posts one receive of `len` bytes at `addr`.
pub fn post_recv(id: *mut rdma_cm_id, wr_id: u64, addr: *mut u8, len: u32, lkey: u32) -> io::Result<()> {
    let mut sge = ibv_sge { addr: addr as u64, length: len, lkey };
    let mut wr = ibv_recv_wr { wr_id, next: ptr::null_mut(), sg_list: &mut sge, num_sge: 1 };
    let mut bad: *mut ibv_recv_wr = ptr::null_mut();
    // SAFETY: the id's qp is live; the buffer is registered under lkey and stays owned by its
    // queue until this request completes; wr and sge are copied by the provider during the call.
    let rc = unsafe {
        let qp = (*id).qp;
        (*(*qp).context).ops.post_recv.expect("provider has post_recv")(qp, &mut wr, &mut bad)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) }
}

/// What a send-queue work request does.
#[derive(Debug, Clone, Copy)]
pub enum SendOp {
    Send { invalidate: Option<u32> },
    Read { addr: u64, rkey: u32 },
    Write { addr: u64, rkey: u32 },
}

/// Posts one signaled send-queue request over `len` bytes at `addr`.
pub fn post_send(id: *mut rdma_cm_id, wr_id: u64, op: SendOp, addr: *mut u8, len: u32, lkey: u32) -> io::Result<()> {
    let mut sge = ibv_sge { addr: addr as u64, length: len, lkey };
    // SAFETY: all-zero is a valid ibv_send_wr (plain data and null pointers).
    let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
    wr.wr_id = wr_id;
    wr.sg_list = &mut sge;
    wr.num_sge = 1;
    wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
    match op {
        SendOp::Send { invalidate: None } => wr.opcode = ibv_wr_opcode::IBV_WR_SEND,
        SendOp::Send { invalidate: Some(rkey) } => {
            wr.opcode = ibv_wr_opcode::IBV_WR_SEND_WITH_INV;
            wr.imm_data_invalidated_rkey_union.invalidated_rkey = rkey;
        }
        SendOp::Read { addr, rkey } => {
            wr.opcode = ibv_wr_opcode::IBV_WR_RDMA_READ;
            wr.wr.rdma = rdma_t { remote_addr: addr, rkey };
        }
        SendOp::Write { addr, rkey } => {
            wr.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE;
            wr.wr.rdma = rdma_t { remote_addr: addr, rkey };
        }
    }
    let mut bad: *mut ibv_send_wr = ptr::null_mut();
    // SAFETY: as for post_recv: live qp, registered memory owned until the completion.
    let rc = unsafe {
        let qp = (*id).qp;
        (*(*qp).context).ops.post_send.expect("provider has post_send")(qp, &mut wr, &mut bad)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) }
}

pub fn wc_status_name(status: ibv_wc_status::Type) -> String {
    // SAFETY: ibv_wc_status_str returns a static string for any value.
    unsafe { std::ffi::CStr::from_ptr(ibv_wc_status_str(status)) }.to_string_lossy().into_owned()
}

/// An empty work completion array entry.
pub fn empty_wc() -> ibv_wc {
    // SAFETY: all-zero is a valid ibv_wc (plain data).
    unsafe { std::mem::zeroed() }
}
