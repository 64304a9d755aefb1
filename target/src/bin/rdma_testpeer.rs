//! `fabriq-rdma-testpeer`: a hostile NVMe/RDMA host, for the end-to-end tests (built only
//! with the `rdma` feature). It talks to a target through librdmacm and libibverbs the way no
//! well-behaved host would, and checks that the target answers as the NVMe/RDMA transport
//! binding says: a reject with the right status for bad private data, a completion with the
//! right NVMe status for a bad SGL, and, when the host vanishes while data is moving, nothing
//! the host can see (the target's survival is checked by the caller afterwards).
//!
//! ```text
//! fabriq-rdma-testpeer ADDR PORT SUBNQN HOSTNQN SCENARIO...
//!   private-data   connect requests with malformed private data: each rejected with its STS
//!   bad-sgl        an association (admin and I/O queue); commands with bad SGLs: each
//!                  completed with its NVMe status; then a write and a read that round-trip
//!   short-capsule  a capsule shorter than an SQE: the target disconnects
//!   vanish-read    writes whose data the target RDMA READs from here; the queue pair is
//!                  destroyed and the process moves on while the READs are outstanding
//!   vanish-write   reads whose data the target RDMA WRITEs here; the memory is deregistered
//!                  while the WRITEs are in flight, then everything is torn down
//! ```
//!
//! Prints one `ok SCENARIO: ...` line per check and exits 0, or prints `FAIL ...` and exits 1.
//! Every wait is bounded. Resources are released by process exit where a vanishing host
//! would leave them (that is the point).

use std::ffi::CString;
use std::ptr;
use std::time::{Duration, Instant};

use fabriq_target::nvme::property::CC;
use fabriq_target::nvme::sqe::{Connect, ConnectData, PropertySet, ReadWrite};
use fabriq_target::nvme::{CntlId, Cqe, IoOpcode, Nqn, PropertySize, SglDescriptor, SglKind, Sqe, Status};
use fabriq_target::rdma::wire::CmRequest;
use rdma_sys::*;

/// Commands one queue holds (and receive buffers posted for responses).
const ENTRIES: u16 = 32;
/// In-capsule data the target takes on I/O queues (its default).
const ICD_BYTES: usize = 8192;
const CAPSULE_BYTES: usize = 64 + ICD_BYTES;
const RESPONSE_SLOT_BYTES: usize = 64;
/// The host memory the target reads from and writes to: 32 transfers of 128 KiB.
const DATA_BYTES: usize = 32 * 128 * 1024;
/// The namespace the bad commands go to: nsid 1, 512-byte blocks (the e2e configuration).
const NSID: u32 = 1;
const WAIT: Duration = Duration::from_secs(20);

type Result<T> = std::result::Result<T, String>;

fn fail(what: impl std::fmt::Display) -> ! {
    println!("FAIL {what}");
    std::process::exit(1)
}

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// How a connect request ended.
enum Connected {
    Up(Queue),
    /// Rejected by the target: the STS of its reject private data (None: no private data).
    Rejected(Option<u16>),
}

/// One queue pair to the target, with its registered memory.
struct Queue {
    id: *mut rdma_cm_id,
    capsules: Vec<u8>,
    responses: Vec<u8>,
    data: Vec<u8>,
    capsule_mr: *mut ibv_mr,
    response_mr: *mut ibv_mr,
    data_mr: *mut ibv_mr,
    next_slot: usize,
    next_cid: u16,
}

fn register(pd: *mut ibv_pd, buf: &mut [u8], remote: bool) -> Result<*mut ibv_mr> {
    let mut access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
    if remote {
        access |= ibv_access_flags::IBV_ACCESS_REMOTE_READ.0 | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
    }
    // SAFETY: the buffer lives in a Vec of the queue that is never resized, and outlives the
    // region (deregistered before the queue drops its memory, or at process exit).
    let mr = unsafe { ibv_reg_mr(pd, buf.as_mut_ptr().cast(), buf.len(), access as i32) };
    if mr.is_null() { Err(errno("ibv_reg_mr")) } else { Ok(mr) }
}

impl Queue {
    /// Connects a queue pair to `addr:port` with `private` as the connect request's private
    /// data; receive buffers are posted before the request goes out.
    fn open(addr: &str, port: u16, private: &[u8]) -> Result<Connected> {
        let node = CString::new(addr).expect("an address without NUL");
        let service = CString::new(port.to_string()).expect("digits");
        // SAFETY: all-zero is a valid rdma_addrinfo of hints.
        let mut hints: rdma_addrinfo = unsafe { std::mem::zeroed() };
        hints.ai_port_space = rdma_port_space::RDMA_PS_TCP as i32;
        let mut res: *mut rdma_addrinfo = ptr::null_mut();
        // SAFETY: valid strings, hints and out pointer.
        if unsafe { rdma_getaddrinfo(node.as_ptr(), service.as_ptr(), &hints, &mut res) } != 0 {
            return Err(errno("rdma_getaddrinfo"));
        }
        // SAFETY: all-zero is a valid ibv_qp_init_attr to fill in.
        let mut attr: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.cap.max_send_wr = u32::from(ENTRIES) * 2;
        attr.cap.max_recv_wr = u32::from(ENTRIES);
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        attr.sq_sig_all = 1;
        let mut id: *mut rdma_cm_id = ptr::null_mut();
        // SAFETY: res came from rdma_getaddrinfo; a null PD makes a synchronous id with the
        // device's default PD and completion queues of its own.
        let rc = unsafe { rdma_create_ep(&mut id, res, ptr::null_mut(), &mut attr) };
        // SAFETY: res is not used after this.
        unsafe { rdma_freeaddrinfo(res) };
        if rc != 0 {
            return Err(errno("rdma_create_ep"));
        }
        let mut q = Queue {
            id,
            capsules: vec![0; CAPSULE_BYTES * usize::from(ENTRIES)],
            responses: vec![0; RESPONSE_SLOT_BYTES * usize::from(ENTRIES)],
            data: vec![0; DATA_BYTES],
            capsule_mr: ptr::null_mut(),
            response_mr: ptr::null_mut(),
            data_mr: ptr::null_mut(),
            next_slot: 0,
            next_cid: 0,
        };
        // SAFETY: id is live; its pd was made by rdma_create_ep.
        let pd = unsafe { (*id).pd };
        q.capsule_mr = register(pd, &mut q.capsules, false)?;
        q.response_mr = register(pd, &mut q.responses, false)?;
        q.data_mr = register(pd, &mut q.data, true)?;
        for slot in 0..usize::from(ENTRIES) {
            q.post_recv(slot)?;
        }
        let mut param = rdma_conn_param {
            private_data: private.as_ptr().cast(),
            private_data_len: private.len() as u8,
            responder_resources: 16,
            initiator_depth: 16,
            flow_control: 1,
            retry_count: 7,
            rnr_retry_count: 7,
            srq: 0,
            qp_num: 0,
        };
        // SAFETY: id has its QP; param and the private data live for the call (synchronous).
        if unsafe { rdma_connect(id, &mut param) } == 0 {
            return Ok(Connected::Up(q));
        }
        let error = errno("rdma_connect");
        // SAFETY: a synchronous id keeps its last event until the next call on it.
        let event = unsafe { (*id).event };
        // SAFETY: a non-null event is valid until acknowledged (by rdma_destroy_ep, in drop).
        if !event.is_null() && unsafe { (*event).event } == rdma_cm_event_type::RDMA_CM_EVENT_REJECTED {
            // SAFETY: for a REJECTED event the conn member holds the reject's private data.
            let conn = unsafe { (*event).param.conn };
            let sts = (!conn.private_data.is_null() && conn.private_data_len >= 4).then(|| {
                // SAFETY: private_data_len bytes are valid while the event is.
                let b = unsafe { std::slice::from_raw_parts(conn.private_data.cast::<u8>(), 4) };
                u16::from_le_bytes([b[2], b[3]])
            });
            return Ok(Connected::Rejected(sts));
        }
        Err(error)
    }

    fn post_recv(&mut self, slot: usize) -> Result<()> {
        let at = slot * RESPONSE_SLOT_BYTES;
        // SAFETY: the slot lies in the registered response buffer, which stays put.
        let rc = unsafe {
            rdma_post_recv(
                self.id,
                slot as *mut libc::c_void,
                self.responses[at..].as_mut_ptr().cast(),
                RESPONSE_SLOT_BYTES,
                self.response_mr,
            )
        };
        if rc != 0 { Err(errno("rdma_post_recv")) } else { Ok(()) }
    }

    fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1);
        self.next_cid
    }

    /// Sends a command capsule: `sqe`, then `icd` (in-capsule data), or only the first `len`
    /// bytes of that when `len` is given (a malformed capsule).
    fn send(&mut self, sqe: &Sqe, icd: &[u8], len: Option<usize>) -> Result<()> {
        let slot = self.next_slot;
        self.next_slot = (self.next_slot + 1) % usize::from(ENTRIES);
        let at = slot * CAPSULE_BYTES;
        let capsule = &mut self.capsules[at..at + CAPSULE_BYTES];
        capsule[..64].copy_from_slice(&sqe.encode());
        capsule[64..64 + icd.len()].copy_from_slice(icd);
        let len = len.unwrap_or(64 + icd.len());
        // SAFETY: the capsule lies in the registered capsule buffer; the send is signaled and
        // its completion reaped (or the process ends) before the slot is reused.
        let rc =
            unsafe { rdma_post_send(self.id, ptr::null_mut(), capsule.as_mut_ptr().cast(), len, self.capsule_mr, 0) };
        if rc != 0 { Err(errno("rdma_post_send")) } else { Ok(()) }
    }

    /// The next response; send completions are reaped on the way. A failed work request
    /// (the target went away) is an error naming its status.
    fn response(&mut self) -> Result<Cqe> {
        let deadline = Instant::now() + WAIT;
        // SAFETY: all-zero is a valid ibv_wc.
        let mut wc: ibv_wc = unsafe { std::mem::zeroed() };
        while Instant::now() < deadline {
            // SAFETY: the id's completion queues are live; wc has room for one.
            while unsafe { ibv_poll_cq((*self.id).send_cq, 1, &mut wc) } > 0 {
                if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                    return Err(format!("send completed with status {}", wc.status));
                }
            }
            // SAFETY: as above.
            if unsafe { ibv_poll_cq((*self.id).recv_cq, 1, &mut wc) } > 0 {
                if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                    return Err(format!("receive completed with status {}", wc.status));
                }
                let slot = wc.wr_id as usize;
                let at = slot * RESPONSE_SLOT_BYTES;
                let cqe = Cqe::decode(self.responses[at..at + 16].try_into().expect("16 bytes"));
                self.post_recv(slot)?;
                return Ok(cqe);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(format!("no response within {WAIT:?}"))
    }

    /// Waits until every capsule sent so far has left (its send completed).
    fn sent(&mut self, count: usize) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        // SAFETY: all-zero is a valid ibv_wc.
        let mut wc: ibv_wc = unsafe { std::mem::zeroed() };
        let mut done = 0;
        while done < count && Instant::now() < deadline {
            // SAFETY: the send completion queue is live.
            if unsafe { ibv_poll_cq((*self.id).send_cq, 1, &mut wc) } > 0 {
                if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                    return Err(format!("send completed with status {}", wc.status));
                }
                done += 1;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if done < count { Err(format!("{done} of {count} capsules left within {WAIT:?}")) } else { Ok(()) }
    }

    /// Whether the target disconnects within `WAIT`: the CM's DISCONNECTED event on the
    /// id's own channel (the id is synchronous, so nothing else reads it now).
    fn disconnected(&self) -> Result<bool> {
        // SAFETY: a synchronous id has a channel of its own, live as long as the id.
        let channel = unsafe { (*self.id).channel };
        // SAFETY: the channel's fd is valid; only its O_NONBLOCK flag is added.
        unsafe {
            let fd = (*channel).fd;
            libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
        }
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let mut event: *mut rdma_cm_event = ptr::null_mut();
            // SAFETY: valid channel and out pointer; non-blocking.
            if unsafe { rdma_get_cm_event(channel, &mut event) } == 0 {
                // SAFETY: the event is valid until acknowledged, right after.
                let kind = unsafe { (*event).event };
                // SAFETY: acknowledged once, not used afterwards.
                unsafe { rdma_ack_cm_event(event) };
                if kind == rdma_cm_event_type::RDMA_CM_EVENT_DISCONNECTED {
                    return Ok(true);
                }
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(false)
    }

    /// A keyed SGL descriptor over `len` bytes of the data region at `offset`.
    fn keyed(&self, offset: usize, len: u32) -> SglDescriptor {
        // SAFETY: the data region is registered while the queue lives.
        let key = unsafe { (*self.data_mr).rkey };
        let address = self.data.as_ptr() as u64 + offset as u64;
        SglDescriptor { address, length: len, kind: SglKind::KeyedDataBlock { subtype: 0, key } }
    }

    /// Sends the Fabrics Connect for `qid` and returns its response: the Connect data by RDMA
    /// READ from the data region on the admin queue (which takes no in-capsule data), in the
    /// capsule on I/O queues.
    fn connect(&mut self, qid: u16, cntlid: u16, subnqn: &str, hostnqn: &str) -> Result<Cqe> {
        let mut data = [0u8; 1024];
        ConnectData {
            hostid: *b"fabriq-testpeer!",
            cntlid: CntlId::from_wire(cntlid),
            subnqn: Nqn::parse(subnqn).map_err(|e| e.to_string())?,
            hostnqn: Nqn::parse(hostnqn).map_err(|e| e.to_string())?,
        }
        .encode(&mut data);
        let cid = self.cid();
        let mut sqe = Connect { recfmt: 0, qid, sqsize: ENTRIES - 1, cattr: 0, kato_ms: 0 }.to_sqe(cid);
        sqe.flags |= 1 << 6;
        if qid == 0 {
            self.data[..1024].copy_from_slice(&data);
            sqe.dptr = self.keyed(0, 1024).encode();
            self.send(&sqe, &[], None)?;
        } else {
            sqe.dptr = SglDescriptor::in_capsule(0, 1024).encode();
            self.send(&sqe, &data, None)?;
        }
        self.response()
    }

    fn close(self) {
        // SAFETY: nothing of ours is posted any more that could touch the regions: the
        // connection is torn down first (its requests flush), then the regions, then the id.
        unsafe {
            rdma_disconnect(self.id);
            for mr in [self.capsule_mr, self.response_mr, self.data_mr] {
                if !mr.is_null() {
                    ibv_dereg_mr(mr);
                }
            }
            rdma_destroy_ep(self.id);
        }
    }
}

fn private_data(qid: u16, hrqsize: u16, hsqsize: u16) -> Vec<u8> {
    CmRequest { recfmt: 0, qid, hrqsize, hsqsize }.encode().to_vec()
}

struct Peer {
    addr: String,
    port: u16,
    subnqn: String,
    hostnqn: String,
}

impl Peer {
    fn up(&self, private: &[u8]) -> Result<Queue> {
        match Queue::open(&self.addr, self.port, private)? {
            Connected::Up(q) => Ok(q),
            Connected::Rejected(sts) => Err(format!("connect request rejected (STS {sts:?})")),
        }
    }

    /// An enabled controller: the admin queue connected and CC.EN set, and I/O queue 1.
    fn association(&self) -> Result<(Queue, Queue)> {
        let mut admin = self.up(&private_data(0, ENTRIES, ENTRIES - 1))?;
        let cqe = admin.connect(0, CntlId::DYNAMIC.get(), &self.subnqn, &self.hostnqn)?;
        if !cqe.status.is_success() {
            return Err(format!("admin Connect: {:?}", cqe.status));
        }
        let cntlid = cqe.dw0 as u16;
        let cid = admin.cid();
        let mut sqe = PropertySet { size: PropertySize::Four, offset: CC, value: 0x0046_0001 }.to_sqe(cid);
        sqe.flags |= 1 << 6;
        sqe.dptr =
            SglDescriptor { address: 0, length: 0, kind: SglKind::KeyedDataBlock { subtype: 0, key: 0 } }.encode();
        admin.send(&sqe, &[], None)?;
        let cqe = admin.response()?;
        if !cqe.status.is_success() {
            return Err(format!("Property Set CC.EN: {:?}", cqe.status));
        }
        let mut io = self.up(&private_data(1, ENTRIES, ENTRIES - 1))?;
        let cqe = io.connect(1, cntlid, &self.subnqn, &self.hostnqn)?;
        if !cqe.status.is_success() {
            return Err(format!("I/O queue Connect: {:?}", cqe.status));
        }
        Ok((admin, io))
    }

    fn private_data(&self) -> Result<()> {
        let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
            // The IB CM (RoCE too) pads a connect request's private data with zeros to its
            // fixed size, so a short one arrives whole: none at all reads as hsqsize 0
            // (invalid HSQSIZE); where the length is passed on, it is too short.
            ("no private data", Vec::new(), &[0x01, 0x04]),
            (
                "record format 1",
                {
                    let mut b = private_data(1, 32, 31);
                    b[0] = 1;
                    b
                },
                &[0x02],
            ),
            ("qid beyond the I/O queues", private_data(9, 32, 31), &[0x03]),
            ("qid 0xFFFF", private_data(0xFFFF, 32, 31), &[0x03]),
            ("hsqsize 0 (one entry)", private_data(1, 32, 0), &[0x04]),
            ("hsqsize 0xFFFF", private_data(1, 0xFFFF, 0xFFFF), &[0x04]),
            ("admin queue of 64", private_data(0, 64, 63), &[0x04]),
            ("hrqsize below the queue size", private_data(1, 16, 31), &[0x05]),
            ("hrqsize 0", private_data(1, 0, 31), &[0x05]),
        ];
        for (what, private, want) in cases {
            match Queue::open(&self.addr, self.port, &private)? {
                Connected::Rejected(Some(sts)) if want.contains(&sts) => {
                    println!("ok private-data: {what}: rejected with STS {sts:#04x}")
                }
                Connected::Rejected(sts) => return Err(format!("{what}: rejected with {sts:?}, expected {want:x?}")),
                Connected::Up(q) => {
                    q.close();
                    return Err(format!("{what}: accepted"));
                }
            }
        }
        Ok(())
    }

    fn bad_sgl(&self) -> Result<()> {
        let (admin, mut io) = self.association()?;
        let invalid = Status::INVALID_FIELD.with_dnr();
        let bad_type = Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr();
        let bad_length = Status::DATA_SGL_LENGTH_INVALID.with_dnr();
        let bad_offset = Status::INVALID_SGL_OFFSET.with_dnr();
        let keyed = io.keyed(0, 4096);
        let with = |kind| SglDescriptor { kind, ..keyed };
        let mut key_subtype = keyed;
        key_subtype.kind = SglKind::KeyedDataBlock { subtype: 0x3, key: 1 };
        // (what, opcode, blocks, descriptor, in-capsule bytes, PRPs, status)
        let cases: Vec<(&str, IoOpcode, u32, SglDescriptor, usize, bool, Status)> = vec![
            ("read over MDTS", IoOpcode::Read, 257, io.keyed(0, 131584), 0, false, invalid),
            ("write over MDTS", IoOpcode::Write, 1024, io.keyed(0, 524288), 0, false, invalid),
            ("in-capsule over ICD", IoOpcode::Write, 32, SglDescriptor::in_capsule(0, 16384), 8192, false, bad_length),
            ("in-capsule shorter", IoOpcode::Write, 8, SglDescriptor::in_capsule(0, 4096), 1024, false, bad_length),
            ("in-capsule at offset 1", IoOpcode::Write, 8, SglDescriptor::in_capsule(1, 4096), 4097, false, bad_offset),
            ("in-capsule for a read", IoOpcode::Read, 8, SglDescriptor::in_capsule(0, 4096), 4096, false, invalid),
            ("keyed too short", IoOpcode::Read, 8, io.keyed(0, 4095), 0, false, bad_length),
            ("keyed with in-capsule data", IoOpcode::Write, 8, keyed, 4096, false, invalid),
            ("keyed subtype 3", IoOpcode::Read, 8, key_subtype, 0, false, bad_type),
            ("PRPs", IoOpcode::Read, 8, keyed, 0, true, invalid),
            ("data block", IoOpcode::Read, 8, with(SglKind::DataBlock), 0, false, bad_type),
            ("bit bucket", IoOpcode::Write, 8, with(SglKind::BitBucket), 0, false, bad_type),
            ("segment", IoOpcode::Read, 8, with(SglKind::Segment { subtype: 0 }), 0, false, bad_type),
            ("last segment", IoOpcode::Write, 8, with(SglKind::LastSegment { subtype: 0 }), 0, false, bad_type),
            ("TCP transport block", IoOpcode::Read, 8, SglDescriptor::transport(4096), 0, false, bad_type),
        ];
        for (what, opcode, nlb, sgl, icd, prp, want) in cases {
            let cid = io.cid();
            let mut sqe =
                ReadWrite { slba: 0, nlb, fua: false, limited_retry: false, deac: false }.to_sqe(opcode, cid, NSID);
            sqe.flags |= 1 << 6;
            if prp {
                sqe.flags &= !(3 << 6);
            }
            sqe.dptr = sgl.encode();
            io.send(&sqe, &vec![0x5A; icd], None)?;
            let cqe = io.response().map_err(|e| format!("{what}: {e}"))?;
            if (cqe.cid, cqe.status) != (cid, want) {
                return Err(format!("{what}: cid {} status {:?}, expected cid {cid} {want:?}", cqe.cid, cqe.status));
            }
            println!("ok bad-sgl: {what}: {want:?}");
        }
        // The queue lives on: a write in the capsule and a read by RDMA WRITE round-trip.
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let cid = io.cid();
        let mut sqe = ReadWrite { slba: 64, nlb: 8, fua: false, limited_retry: false, deac: false }.to_sqe(
            IoOpcode::Write,
            cid,
            NSID,
        );
        sqe.flags |= 1 << 6;
        sqe.dptr = SglDescriptor::in_capsule(0, 4096).encode();
        io.send(&sqe, &pattern, None)?;
        let cqe = io.response()?;
        if !cqe.status.is_success() {
            return Err(format!("write after the bad commands: {:?}", cqe.status));
        }
        io.data[8192..12288].fill(0);
        let cid = io.cid();
        let mut sqe = ReadWrite { slba: 64, nlb: 8, fua: false, limited_retry: false, deac: false }.to_sqe(
            IoOpcode::Read,
            cid,
            NSID,
        );
        sqe.flags |= 1 << 6;
        sqe.dptr = io.keyed(8192, 4096).encode();
        io.send(&sqe, &[], None)?;
        let cqe = io.response()?;
        if !cqe.status.is_success() || io.data[8192..12288] != pattern[..] {
            return Err(format!(
                "read after the bad commands: {:?}, data equal: {}",
                cqe.status,
                io.data[8192..12288] == pattern[..]
            ));
        }
        println!("ok bad-sgl: the queue still serves: 4 KiB written and read back");
        io.close();
        admin.close();
        Ok(())
    }

    fn short_capsule(&self) -> Result<()> {
        let (admin, mut io) = self.association()?;
        io.send(&Sqe::default(), &[], Some(10))?;
        io.sent(1)?;
        if !io.disconnected()? {
            return Err(format!("a 10-byte capsule: no disconnect within {WAIT:?}"));
        }
        println!("ok short-capsule: the target disconnected the queue pair");
        io.close();
        admin.close();
        Ok(())
    }

    /// `count` commands of 128 KiB each, all in flight.
    fn flood(&self, io: &mut Queue, opcode: IoOpcode, count: usize) -> Result<()> {
        for i in 0..count {
            let cid = io.cid();
            let slba = (i * 256) as u64;
            let mut sqe =
                ReadWrite { slba, nlb: 256, fua: false, limited_retry: false, deac: false }.to_sqe(opcode, cid, NSID);
            sqe.flags |= 1 << 6;
            sqe.dptr = io.keyed(i * 131072, 131072).encode();
            io.send(&sqe, &[], None)?;
        }
        io.sent(count)
    }

    fn vanish_read(&self) -> Result<()> {
        let (admin, mut io) = self.association()?;
        self.flood(&mut io, IoOpcode::Write, 24)?;
        // The target is reading our memory now: the queue pair goes away under it, with no
        // disconnect first (as when a host crashes), and its memory with the process later.
        // SAFETY: the QP is live; nothing here uses it again. The id stays until exit.
        unsafe { rdma_destroy_qp(io.id) };
        println!("ok vanish-read: queue pair destroyed with 24 writes of 128 KiB being read");
        std::mem::forget(io);
        admin.close();
        Ok(())
    }

    fn vanish_write(&self) -> Result<()> {
        let (admin, mut io) = self.association()?;
        self.flood(&mut io, IoOpcode::Read, 24)?;
        // The target is writing into our memory: its registration goes away under it.
        // SAFETY: the region is ours; the target's writes to it now fail at our HCA.
        unsafe { ibv_dereg_mr(io.data_mr) };
        io.data_mr = ptr::null_mut();
        println!("ok vanish-write: memory deregistered with 24 reads of 128 KiB being written");
        std::thread::sleep(Duration::from_millis(200));
        io.close();
        admin.close();
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        eprintln!("usage: fabriq-rdma-testpeer ADDR PORT SUBNQN HOSTNQN SCENARIO...");
        eprintln!("scenarios: private-data bad-sgl short-capsule vanish-read vanish-write");
        std::process::exit(2);
    }
    let peer = Peer {
        addr: args[0].clone(),
        port: args[1].parse().unwrap_or_else(|_| fail(format!("port {:?}", args[1]))),
        subnqn: args[2].clone(),
        hostnqn: args[3].clone(),
    };
    for scenario in &args[4..] {
        let result = match scenario.as_str() {
            "private-data" => peer.private_data(),
            "bad-sgl" => peer.bad_sgl(),
            "short-capsule" => peer.short_capsule(),
            "vanish-read" => peer.vanish_read(),
            "vanish-write" => peer.vanish_write(),
            other => Err(format!("no scenario {other:?}")),
        };
        if let Err(e) = result {
            fail(format!("{scenario}: {e}"));
        }
    }
}
