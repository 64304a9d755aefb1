//! One NVMe/TCP I/O queue driven from a job's io_uring: command slots, the
//! gathered send path and the PDU receive path (NVMe/TCP 1.0, 3.3 and 3.6).
//!
//! The socket comes out of the blocking host library already connected
//! (ICReq/ICResp and Connect done, [`QueueParts`]); from then on only this
//! module touches it.
//!
//! ```text
//!  slot (CID = slot index)          send path                    receive path
//!
//!  Free --issue--> Busy             segments: FIFO ring of       staging buffer (256 KiB)
//!   ^               |  CapsuleResp  [header|data|DDGST]          parse many PDUs per recv:
//!   |               |  or C2HData   pointing at slot templates,  CapsuleResp, R2T, C2HData
//!   |               v  SUCCESS      slot data and inline H2CData C2HData payloads >= 8 KiB
//!   +--(sends of--Retired           headers; one sendmsg in      that are not staged yet are
//!       it done)                    flight, up to 1024 iovecs    received straight into the
//!                                                                slot's buffer; with such
//!                                                                large reads the staging
//!                                                                window is 1 KiB, so only
//!                                                                the first bytes of a payload
//!                                                                are ever copied
//! ```
//!
//! Invariants:
//! - a slot's data buffer and capsule templates are rewritten only when the
//!   slot is Free: Busy means the controller may still read or write them,
//!   Retired means a segment naming them may still be in the kernel's hands;
//! - at most one send and one receive are in flight, and the memory they
//!   name (segments, iovecs, msghdr, staging buffer, slot buffers) lives as
//!   long as the queue, which the job frees only after their completions;
//! - every received PDU is checked against the size table ([`pdu::check`])
//!   before anything else of it is used, and against the command it names
//!   (CID outstanding, data in range and in order, R2T only for a write
//!   that waits for one); a violation ends the run;
//! - the segment ring, the pending-H2C queue and the free list are sized at
//!   start-up: nothing here allocates per command.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Instant;

use fabriq_target::nvme::sqe::ReadWrite;
use fabriq_target::nvme::{Cqe, IoOpcode, SglDescriptor, Status};
use fabriq_target::tcp::digest::{self, DIGEST_LEN, DataDigest};
use fabriq_target::tcp::pdu::{
    self, C2hData, CapsuleCmd, CommonHeader, Digests, H2cData, Layout, PduType, R2t, Role, TermReq,
};
use io_uring::{opcode, types};

use super::buf::Chunks;
use super::{Ctx, Driver, EngineError, OpKind, Ring, errno, token};
use crate::host::{Framing, QueueParts, Violation};
use crate::pattern;
use crate::stats::Dir;
use crate::workload::{Generator, Workload};

/// Bytes of the staging receive buffer.
pub const STAGING_BYTES: usize = 256 * 1024;
/// C2HData payload still to come that is at least this large, with nothing
/// staged, is received straight into the slot's buffer.
pub const DIRECT_RECV_MIN: u32 = 8192;
/// Staging window of a queue whose reads are large (bs >= DIRECT_RECV_MIN):
/// room for a few PDU headers, so that little of a payload lands in the
/// staging buffer (to be copied) before it can be received in place.
pub const LARGE_IO_WINDOW: usize = 1024;
/// Most iovecs one `sendmsg` gathers (Linux's UIO_MAXIOV).
pub const SEND_IOVECS: usize = 1024;
/// Room for any PDU header before data: 128-byte CPDA alignment at most.
const HEADER_ROOM: usize = 128;
/// Most segments the send ring holds.
const MAX_SEGMENTS: usize = 16384;

/// What the queue needs to know about the namespace and the run.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Namespace of every command.
    pub nsid: u32,
    /// Bytes per logical block.
    pub lba_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Not issued: buffers may be rewritten.
    Free,
    /// Issued, no completion yet.
    Busy,
    /// Completed while one of its segments was still being sent; freed when
    /// the last one is.
    Retired,
}

#[derive(Debug, Clone, Copy)]
struct H2cWork {
    ttag: u16,
    next: u32,
    end: u32,
}

/// A command slot: CID = its index.
struct Slot {
    state: SlotState,
    dir: Dir,
    unit: u64,
    slba: u64,
    issued: Instant,
    /// Segments naming this slot's memory that are not sent yet.
    send_refs: u32,
    /// C2HData bytes received (in order).
    received: u32,
    last_seen: bool,
    ddgst_bad: bool,
    /// A read whose unit was written (verify) when it was issued: its data
    /// must match the pattern.
    check: bool,
    /// R2T bytes asked for.
    r2t_requested: u32,
    h2c: Option<H2cWork>,
    /// CapsuleCmd of a read, and its length.
    read_capsule: [u8; HEADER_ROOM],
    read_len: u8,
    /// CapsuleCmd of a write (with in-capsule data: the header up to PDO).
    write_capsule: [u8; HEADER_ROOM],
    write_len: u8,
}

/// One PDU (or the piece of one) waiting to be sent.
struct Segment {
    /// Header bytes: the slot's capsule template, or `inline`.
    header: *const u8,
    header_len: u32,
    header_inline: bool,
    inline: [u8; HEADER_ROOM],
    data: *const u8,
    data_len: u32,
    ddgst: [u8; DIGEST_LEN],
    ddgst_len: u32,
    slot: u16,
}

impl Segment {
    fn empty() -> Segment {
        Segment {
            header: std::ptr::null(),
            header_len: 0,
            header_inline: false,
            inline: [0; HEADER_ROOM],
            data: std::ptr::null(),
            data_len: 0,
            ddgst: [0; DIGEST_LEN],
            ddgst_len: 0,
            slot: 0,
        }
    }

    fn total(&self) -> usize {
        (self.header_len + self.data_len + self.ddgst_len) as usize
    }

    fn parts(&self) -> [(*const u8, usize); 3] {
        let header = if self.header_inline { self.inline.as_ptr() } else { self.header };
        [
            (header, self.header_len as usize),
            (self.data, self.data_len as usize),
            (self.ddgst.as_ptr(), self.ddgst_len as usize),
        ]
    }
}

/// Where the receive path is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum Rx {
    /// The next byte starts a PDU.
    Header,
    /// Payload of a C2HData for `slot`: `remaining` bytes go at `off`.
    Data { slot: u16, off: u32, remaining: u32, datal: u32, digest: Option<DataDigest>, last: bool, success: bool },
    /// The DDGST after a C2HData payload.
    Ddgst { slot: u16, computed: u32, datal: u32, last: bool, success: bool },
}

/// One I/O queue.
pub struct TcpQueue {
    index: u32,
    stream: TcpStream,
    qid: u16,
    digests: Digests,
    cpda_alignment: u32,
    maxh2cdata: u32,
    icd_limit: u32,
    sqfc_disabled: bool,
    limits: pdu::Limits,
    target: Target,
    bs: u32,
    nlb: u32,
    offset: u64,
    seed: u64,
    verify: bool,
    slots: Box<[Slot]>,
    free: Vec<u16>,
    bufs: Chunks,
    generator: Generator,
    outstanding: usize,
    // Send path.
    segments: Box<[Segment]>,
    seg_head: usize,
    seg_len: usize,
    /// Bytes of the head segment already sent.
    head_sent: usize,
    pending_h2c: VecDeque<u16>,
    send_inflight: bool,
    iov: Box<[libc::iovec]>,
    msg: Box<libc::msghdr>,
    // Receive path.
    staging: Box<[u8]>,
    head: usize,
    tail: usize,
    rx: Rx,
    recv_inflight: bool,
    recv_direct: bool,
    /// Most bytes one receive into the staging buffer asks for.
    staging_window: usize,
    shut: bool,
}

// SAFETY: the raw pointers in segments and iovecs point into memory this
// queue owns (slot templates, data chunks, its own segments); the queue is
// built on the main thread and then owned and used by one job thread only.
unsafe impl Send for TcpQueue {}

impl TcpQueue {
    /// Queue number `index` of its job, over a connected queue's `parts`,
    /// issuing `workload` through `generator`.
    pub fn new(index: u32, parts: QueueParts, target: Target, workload: &Workload, generator: Generator) -> TcpQueue {
        let qd = workload.iodepth as usize;
        assert!(qd <= parts.queue_depth, "iodepth {qd} over the queue's {} entries", parts.queue_depth);
        assert!(qd <= usize::from(u16::MAX), "CIDs are 16 bits");
        let bs = workload.bs;
        let nlb = bs / target.lba_size;
        let mut queue = TcpQueue {
            index,
            stream: parts.stream,
            qid: parts.qid,
            digests: parts.framing.digests,
            cpda_alignment: parts.framing.cpda_alignment,
            maxh2cdata: parts.maxh2cdata,
            icd_limit: parts.icd_limit,
            sqfc_disabled: parts.sq_flow_control_disabled,
            limits: pdu::Limits { max_icd_bytes: 0, max_data_pdu_bytes: bs, data_alignment: parts.hpda_alignment },
            target,
            bs,
            nlb,
            offset: workload.offset,
            seed: workload.seed,
            verify: workload.verify,
            slots: (0..qd).map(|_| Slot::new()).collect(),
            free: (0..qd as u16).rev().collect(),
            bufs: Chunks::new(qd, bs as usize),
            generator,
            outstanding: 0,
            segments: (0..segment_capacity(qd, bs, parts.maxh2cdata)).map(|_| Segment::empty()).collect(),
            seg_head: 0,
            seg_len: 0,
            head_sent: 0,
            pending_h2c: VecDeque::with_capacity(qd),
            send_inflight: false,
            iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; SEND_IOVECS].into_boxed_slice(),
            // SAFETY: msghdr is a plain C struct for which all-zero is valid.
            msg: Box::new(unsafe { std::mem::zeroed() }),
            staging: vec![0u8; STAGING_BYTES].into_boxed_slice(),
            head: 0,
            tail: 0,
            rx: Rx::Header,
            recv_inflight: false,
            recv_direct: false,
            staging_window: if bs >= DIRECT_RECV_MIN { LARGE_IO_WINDOW } else { STAGING_BYTES },
            shut: false,
        };
        for slot in 0..qd {
            queue.build_templates(slot as u16);
            // Writes without verify send this data over and over: a pattern,
            // not zeroes, so that nothing on the way can shortcut it.
            let lba = u64::from(target.lba_size);
            pattern::fill(queue.bufs.slice_mut(slot, bs as usize), lba as usize, slot as u64, workload.seed);
        }
        queue
    }

    /// The queue's QID.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    fn in_capsule(&self) -> bool {
        self.bs <= self.icd_limit
    }

    fn build_templates(&mut self, cid: u16) {
        let framing = Framing { digests: self.digests, cpda_alignment: self.cpda_alignment };
        let in_capsule = self.in_capsule();
        let (nsid, nlb, bs) = (self.target.nsid, self.nlb, self.bs);
        let slot = &mut self.slots[usize::from(cid)];
        let (read, len) = capsule_template(Dir::Read, cid, nsid, nlb, bs, false, framing);
        slot.read_capsule = read;
        slot.read_len = len as u8;
        let (write, len) = capsule_template(Dir::Write, cid, nsid, nlb, bs, in_capsule, framing);
        slot.write_capsule = write;
        slot.write_len = len as u8;
    }

    /// Writes SLBA into the template of `dir` and refreshes its HDGST.
    #[inline]
    fn patch(&mut self, cid: u16, dir: Dir, slba: u64) {
        let header_digest = self.digests.header;
        let slot = &mut self.slots[usize::from(cid)];
        let capsule = match dir {
            Dir::Read => &mut slot.read_capsule,
            Dir::Write => &mut slot.write_capsule,
        };
        patch_slba(capsule, slba, header_digest);
    }

    fn seg_free(&self) -> usize {
        self.segments.len() - self.seg_len
    }

    fn push_segment(&mut self, fill: impl FnOnce(&mut Segment)) {
        assert!(self.seg_len < self.segments.len(), "segment ring overflow");
        let at = (self.seg_head + self.seg_len) % self.segments.len();
        let seg = &mut self.segments[at];
        seg.header_inline = false;
        seg.data = std::ptr::null();
        seg.data_len = 0;
        seg.ddgst_len = 0;
        fill(seg);
        let slot = seg.slot;
        self.seg_len += 1;
        self.slots[usize::from(slot)].send_refs += 1;
    }

    fn issue(&mut self, cid: u16, dir: Dir, unit: u64, ctx: &Ctx<'_>) {
        let byte = self.offset + unit * u64::from(self.bs);
        let slba = byte / u64::from(self.target.lba_size);
        self.patch(cid, dir, slba);
        let bs = self.bs as usize;
        if dir == Dir::Write && self.verify {
            let lba = self.target.lba_size as usize;
            pattern::fill(self.bufs.slice_mut(usize::from(cid), bs), lba, slba, self.seed);
        }
        let slot = &mut self.slots[usize::from(cid)];
        debug_assert_eq!(slot.state, SlotState::Free);
        slot.state = SlotState::Busy;
        slot.dir = dir;
        slot.unit = unit;
        slot.slba = slba;
        slot.issued = ctx.now;
        slot.check = dir == Dir::Read && ctx.verify.is_some_and(|map| map.is_written(unit));
        slot.received = 0;
        slot.last_seen = false;
        slot.ddgst_bad = false;
        slot.r2t_requested = 0;
        slot.h2c = None;
        let (header, header_len) = match dir {
            Dir::Read => (slot.read_capsule.as_ptr(), u32::from(slot.read_len)),
            Dir::Write => (slot.write_capsule.as_ptr(), u32::from(slot.write_len)),
        };
        let with_data = dir == Dir::Write && self.in_capsule();
        let data = self.bufs.ptr(usize::from(cid)).cast_const();
        let ddgst = (with_data && self.digests.data).then(|| data_digest(self.bufs.slice(usize::from(cid), bs)));
        let bs = self.bs;
        self.push_segment(|seg| {
            seg.slot = cid;
            seg.header = header;
            seg.header_len = header_len;
            if with_data {
                seg.data = data;
                seg.data_len = bs;
            }
            if let Some(ddgst) = ddgst {
                seg.ddgst = ddgst;
                seg.ddgst_len = DIGEST_LEN as u32;
            }
        });
        self.outstanding += 1;
    }

    /// Queues the H2CData PDUs that R2Ts asked for, as far as the ring has room.
    fn emit_h2c(&mut self) {
        while let Some(&cid) = self.pending_h2c.front() {
            let Some(mut work) = self.slots[usize::from(cid)].h2c else {
                self.pending_h2c.pop_front();
                continue;
            };
            while work.next < work.end {
                if self.seg_free() == 0 {
                    self.slots[usize::from(cid)].h2c = Some(work);
                    return;
                }
                let datal = (work.end - work.next).min(self.maxh2cdata);
                let header = H2cData {
                    cccid: cid,
                    ttag: work.ttag,
                    datao: work.next,
                    datal,
                    last: work.next + datal == work.end,
                };
                // next + datal <= bs (checked when the R2T arrived): inside
                // the slot's chunk.
                let data = self.bufs.ptr(usize::from(cid)).wrapping_add(work.next as usize).cast_const();
                let ddgst = self.digests.data.then(|| {
                    let all = self.bufs.slice(usize::from(cid), self.bs as usize);
                    data_digest(&all[work.next as usize..(work.next + datal) as usize])
                });
                let (digests, align) = (self.digests, self.cpda_alignment);
                self.push_segment(|seg| {
                    seg.slot = cid;
                    let mut out = [0u8; pdu::HEADER_BUF_LEN];
                    let len = header.encode(&mut out, digests, align);
                    seg.inline[..len].copy_from_slice(&out[..len]);
                    seg.header_inline = true;
                    seg.header_len = len as u32;
                    seg.data = data;
                    seg.data_len = datal;
                    if let Some(ddgst) = ddgst {
                        seg.ddgst = ddgst;
                        seg.ddgst_len = DIGEST_LEN as u32;
                    }
                });
                work.next += datal;
            }
            self.slots[usize::from(cid)].h2c = None;
            self.pending_h2c.pop_front();
        }
    }

    /// Builds the iovecs of the next `sendmsg` from the head of the ring.
    fn gather(&mut self) -> usize {
        let mut n = 0;
        let mut skip = self.head_sent;
        for k in 0..self.seg_len {
            let seg = &self.segments[(self.seg_head + k) % self.segments.len()];
            for (ptr, len) in seg.parts() {
                if len == 0 {
                    continue;
                }
                if skip >= len {
                    skip -= len;
                    continue;
                }
                if n == SEND_IOVECS {
                    return n;
                }
                self.iov[n] = libc::iovec {
                    // skip < len: inside the part.
                    iov_base: ptr.wrapping_add(skip).cast_mut().cast(),
                    iov_len: len - skip,
                };
                skip = 0;
                n += 1;
            }
        }
        n
    }

    fn on_sent(&mut self, mut n: usize) {
        while n > 0 {
            assert!(self.seg_len > 0, "the kernel sent more than was queued");
            let seg = &self.segments[self.seg_head];
            let rest = seg.total() - self.head_sent;
            if n < rest {
                self.head_sent += n;
                return;
            }
            n -= rest;
            let cid = seg.slot;
            self.head_sent = 0;
            self.seg_head = (self.seg_head + 1) % self.segments.len();
            self.seg_len -= 1;
            let slot = &mut self.slots[usize::from(cid)];
            slot.send_refs -= 1;
            if slot.send_refs == 0 && slot.state == SlotState::Retired {
                slot.state = SlotState::Free;
                self.free.push(cid);
            }
        }
    }

    fn staged(&self) -> usize {
        self.tail - self.head
    }

    fn violation(&self, violation: Violation) -> EngineError {
        EngineError::Protocol { qid: self.qid, violation }
    }

    /// Parses what is staged and received; stops when it needs more bytes.
    fn process(&mut self, ctx: &mut Ctx<'_>) -> Result<(), EngineError> {
        loop {
            let progressed = match self.rx {
                Rx::Header => self.parse_header(ctx)?,
                Rx::Data { .. } => self.take_data(ctx)?,
                Rx::Ddgst { .. } => self.take_ddgst(ctx)?,
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    fn parse_header(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, EngineError> {
        if self.staged() < pdu::COMMON_HEADER_LEN {
            return Ok(false);
        }
        let common: [u8; pdu::COMMON_HEADER_LEN] =
            self.staging[self.head..self.head + pdu::COMMON_HEADER_LEN].try_into().expect("eight bytes");
        let layout = CommonHeader::decode(&common)
            .and_then(|header| pdu::check(&header, Role::Host, self.digests, &self.limits))
            .map_err(|fatal| self.violation(Violation::Malformed(fatal)))?;
        let need = if layout.pdu_type == PduType::C2hData { usize::from(layout.pdo) } else { layout.plen as usize };
        if self.staged() < need {
            return Ok(false);
        }
        let start = self.head;
        self.check_header_digest(&layout, start)?;
        let bytes = &self.staging[start..start + need];
        match layout.pdu_type {
            PduType::CapsuleResp => {
                let cqe =
                    Cqe::decode(bytes[pdu::offset::CQE..pdu::offset::CQE + Cqe::SIZE].try_into().expect("16 bytes"));
                self.head += need;
                self.on_response(cqe, ctx)?;
            }
            PduType::R2t => {
                let r2t = R2t::decode(bytes).map_err(|f| self.violation(Violation::Malformed(f)))?;
                self.head += need;
                self.on_r2t(r2t)?;
            }
            PduType::C2hData => {
                let c2h = C2hData::decode(bytes).map_err(|f| self.violation(Violation::Malformed(f)))?;
                self.head += need;
                self.on_c2h_header(c2h, &layout)?;
            }
            PduType::C2hTermReq => {
                let term = TermReq::decode(bytes).map_err(|f| self.violation(Violation::Malformed(f)))?;
                return Err(EngineError::TermReq { qid: self.qid, fes: term.fes, fei: term.fei });
            }
            other => return Err(self.violation(Violation::Unexpected(other))),
        }
        Ok(true)
    }

    fn check_header_digest(&self, layout: &Layout, start: usize) -> Result<(), EngineError> {
        if layout.header_digest_len == 0 {
            return Ok(());
        }
        let hlen = usize::from(layout.hlen);
        let received: [u8; DIGEST_LEN] =
            self.staging[start + hlen..start + hlen + DIGEST_LEN].try_into().expect("four bytes");
        let header = &self.staging[start..start + hlen];
        digest::check_header_digest(header, received).map_err(|_| EngineError::HeaderDigest {
            qid: self.qid,
            computed: digest::header_digest(header),
            received: digest::from_wire(received),
        })
    }

    fn busy_slot(&self, cid: u16, pdu_type: PduType) -> Result<&Slot, EngineError> {
        match self.slots.get(usize::from(cid)) {
            Some(slot) if slot.state == SlotState::Busy => Ok(slot),
            _ => Err(self.violation(Violation::UnknownCid { pdu_type, cid })),
        }
    }

    fn on_response(&mut self, cqe: Cqe, ctx: &mut Ctx<'_>) -> Result<(), EngineError> {
        let slot = self.busy_slot(cqe.cid, PduType::CapsuleResp)?;
        let bs = self.bs as usize;
        if slot.dir == Dir::Read && cqe.status.is_success() && !(slot.received == self.bs && slot.last_seen) {
            return Err(self.violation(Violation::MissingData {
                cid: cqe.cid,
                received: slot.received as usize,
                len: bs,
            }));
        }
        self.complete_slot(cqe.cid, cqe.status, ctx)
    }

    fn on_r2t(&mut self, r2t: R2t) -> Result<(), EngineError> {
        let in_capsule = self.in_capsule();
        let bs = self.bs;
        let slot = self.busy_slot(r2t.cccid, PduType::R2t)?;
        if slot.dir != Dir::Write || in_capsule {
            return Err(self.violation(Violation::R2tWithoutData { cid: r2t.cccid }));
        }
        let end = u64::from(r2t.r2to) + u64::from(r2t.r2tl);
        let requested = u64::from(slot.r2t_requested) + u64::from(r2t.r2tl);
        if end > u64::from(bs) || requested > u64::from(bs) || slot.h2c.is_some() {
            return Err(self.violation(Violation::R2tOutOfRange {
                cid: r2t.cccid,
                r2to: r2t.r2to,
                r2tl: r2t.r2tl,
                len: bs as usize,
            }));
        }
        let slot = &mut self.slots[usize::from(r2t.cccid)];
        slot.r2t_requested = requested as u32;
        slot.h2c = Some(H2cWork { ttag: r2t.ttag, next: r2t.r2to, end: end as u32 });
        self.pending_h2c.push_back(r2t.cccid);
        Ok(())
    }

    fn on_c2h_header(&mut self, c2h: C2hData, layout: &Layout) -> Result<(), EngineError> {
        let slot = self.busy_slot(c2h.cccid, PduType::C2hData)?;
        if slot.dir != Dir::Read {
            return Err(self.violation(Violation::C2hDataWithoutRead { cid: c2h.cccid }));
        }
        let end = u64::from(c2h.datao) + u64::from(c2h.datal);
        // Data arrives in order (what Linux and SPDK send), never after the last.
        if slot.last_seen || c2h.datao != slot.received || end > u64::from(self.bs) {
            return Err(self.violation(Violation::C2hDataOutOfRange {
                cid: c2h.cccid,
                datao: c2h.datao,
                datal: c2h.datal,
                len: self.bs as usize,
            }));
        }
        self.rx = Rx::Data {
            slot: c2h.cccid,
            off: c2h.datao,
            remaining: c2h.datal,
            datal: c2h.datal,
            digest: (layout.data_digest_len > 0).then(DataDigest::new),
            last: c2h.last,
            success: c2h.success,
        };
        Ok(())
    }

    fn take_data(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, EngineError> {
        let Rx::Data { slot, off, remaining, datal, mut digest, last, success } = self.rx else {
            unreachable!("take_data outside Rx::Data")
        };
        let n = self.staged().min(remaining as usize);
        if n == 0 && remaining > 0 {
            return Ok(false);
        }
        let from = &self.staging[self.head..self.head + n];
        if let Some(d) = digest.as_mut() {
            d.update(from);
        }
        let bs = self.bs as usize;
        self.bufs.slice_mut(usize::from(slot), bs)[off as usize..off as usize + n].copy_from_slice(from);
        self.head += n;
        self.after_data(slot, off + n as u32, remaining - n as u32, datal, digest, last, success, ctx)?;
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    fn after_data(
        &mut self,
        slot: u16,
        off: u32,
        remaining: u32,
        datal: u32,
        digest: Option<DataDigest>,
        last: bool,
        success: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), EngineError> {
        if remaining > 0 {
            self.rx = Rx::Data { slot, off, remaining, datal, digest, last, success };
            return Ok(());
        }
        match digest {
            Some(d) => {
                self.rx = Rx::Ddgst { slot, computed: d.finish(), datal, last, success };
                Ok(())
            }
            None => {
                self.rx = Rx::Header;
                self.finish_c2h(slot, datal, last, success, ctx)
            }
        }
    }

    fn take_ddgst(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, EngineError> {
        let Rx::Ddgst { slot, computed, datal, last, success } = self.rx else {
            unreachable!("take_ddgst outside Rx::Ddgst")
        };
        if self.staged() < DIGEST_LEN {
            return Ok(false);
        }
        let received: [u8; DIGEST_LEN] = self.staging[self.head..self.head + DIGEST_LEN].try_into().expect("four");
        self.head += DIGEST_LEN;
        if digest::from_wire(received) != computed {
            self.slots[usize::from(slot)].ddgst_bad = true;
        }
        self.rx = Rx::Header;
        self.finish_c2h(slot, datal, last, success, ctx)?;
        Ok(true)
    }

    fn finish_c2h(
        &mut self,
        cid: u16,
        datal: u32,
        last: bool,
        success: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), EngineError> {
        let slot = &mut self.slots[usize::from(cid)];
        slot.received += datal;
        slot.last_seen = last;
        if !success {
            return Ok(());
        }
        if !self.sqfc_disabled {
            return Err(self.violation(Violation::SuccessWithFlowControl { cid }));
        }
        if slot.received != self.bs {
            let received = slot.received as usize;
            return Err(self.violation(Violation::MissingData { cid, received, len: self.bs as usize }));
        }
        self.complete_slot(cid, Status::SUCCESS, ctx)
    }

    fn complete_slot(&mut self, cid: u16, status: Status, ctx: &mut Ctx<'_>) -> Result<(), EngineError> {
        let (dir, slba, unit, issued, ddgst_bad, check) = {
            let s = &self.slots[usize::from(cid)];
            (s.dir, s.slba, s.unit, s.issued, s.ddgst_bad, s.check)
        };
        if !status.is_success() {
            return Err(EngineError::Status { qid: self.qid, slba, write: dir == Dir::Write, status });
        }
        if ddgst_bad {
            return Err(EngineError::DataDigest { qid: self.qid, slba });
        }
        if let Some(map) = ctx.verify {
            match dir {
                Dir::Write => map.mark(unit),
                Dir::Read if check => {
                    let data = self.bufs.slice(usize::from(cid), self.bs as usize);
                    pattern::check(data, map.block() as usize, slba, map.seed())
                        .map_err(|mismatch| EngineError::Verify { qid: self.qid, mismatch })?;
                    ctx.verified_read();
                }
                Dir::Read => {}
            }
        }
        ctx.record(issued, dir, u64::from(self.bs));
        self.outstanding -= 1;
        let slot = &mut self.slots[usize::from(cid)];
        if slot.send_refs == 0 {
            slot.state = SlotState::Free;
            self.free.push(cid);
        } else {
            slot.state = SlotState::Retired;
        }
        Ok(())
    }

    /// Where the next receive goes: the slot's buffer for a large payload
    /// with nothing staged, else the free end of the staging buffer.
    fn recv_window(&mut self) -> (*mut u8, usize, bool) {
        if let Rx::Data { slot, off, remaining, .. } = self.rx
            && self.staged() == 0
            && remaining >= DIRECT_RECV_MIN
        {
            // off + remaining <= bs: inside the slot's chunk.
            let ptr = self.bufs.ptr(usize::from(slot)).wrapping_add(off as usize);
            return (ptr, remaining as usize, true);
        }
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        } else if self.head > 0 && self.staging.len() - self.tail < 16 * 1024 {
            self.staging.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        // tail < len (a staged PDU header is at most 256 bytes, far below
        // the buffer): the window is inside the staging buffer.
        let ptr = self.staging.as_mut_ptr().wrapping_add(self.tail);
        (ptr, (self.staging.len() - self.tail).min(self.staging_window), false)
    }

    fn on_recv(&mut self, n: usize, ctx: &mut Ctx<'_>) -> Result<(), EngineError> {
        if self.recv_direct {
            let Rx::Data { slot, off, remaining, datal, mut digest, last, success } = self.rx else {
                unreachable!("a direct receive outside Rx::Data")
            };
            if let Some(d) = digest.as_mut() {
                let all = self.bufs.slice(usize::from(slot), self.bs as usize);
                d.update(&all[off as usize..off as usize + n]);
            }
            self.after_data(slot, off + n as u32, remaining - n as u32, datal, digest, last, success, ctx)?;
        } else {
            self.tail += n;
        }
        self.process(ctx)
    }
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: SlotState::Free,
            dir: Dir::Read,
            unit: 0,
            slba: 0,
            issued: Instant::now(),
            send_refs: 0,
            received: 0,
            last_seen: false,
            ddgst_bad: false,
            check: false,
            r2t_requested: 0,
            h2c: None,
            read_capsule: [0; HEADER_ROOM],
            read_len: 0,
            write_capsule: [0; HEADER_ROOM],
            write_len: 0,
        }
    }
}

/// The CapsuleCmd header (up to PDO: common header, SQE, HDGST, padding) of
/// a Read or Write of `nlb` blocks (`bs` bytes) as CID `cid`, SLBA 0: with
/// an in-capsule SGL and data to follow when `in_capsule`, else a transport
/// SGL. Returns the bytes and their length.
pub fn capsule_template(
    dir: Dir,
    cid: u16,
    nsid: u32,
    nlb: u32,
    bs: u32,
    in_capsule: bool,
    framing: Framing,
) -> ([u8; HEADER_ROOM], usize) {
    let rw = ReadWrite { slba: 0, nlb, fua: false, limited_retry: false, deac: false };
    let (opcode, in_capsule) = match dir {
        Dir::Read => (IoOpcode::Read, false),
        Dir::Write => (IoOpcode::Write, in_capsule),
    };
    let sgl = if in_capsule { SglDescriptor::in_capsule(0, bs) } else { SglDescriptor::transport(bs) };
    let sqe = rw.to_sqe(opcode, cid, nsid).with_sgl(sgl);
    let icd = if in_capsule { bs } else { 0 };
    let mut out = [0u8; pdu::HEADER_BUF_LEN];
    let len = CapsuleCmd { sqe: sqe.encode() }.encode(&mut out, framing.digests, icd, framing.cpda_alignment);
    let mut template = [0u8; HEADER_ROOM];
    template[..len].copy_from_slice(&out[..len]);
    (template, len)
}

/// Sets the SLBA of a capsule template and refreshes its HDGST.
#[inline]
pub fn patch_slba(capsule: &mut [u8], slba: u64, header_digest: bool) {
    // SLBA is CDW10-11: SQE bytes 40..48, after the 8-byte common header.
    const SLBA_AT: usize = pdu::offset::SQE + 40;
    capsule[SLBA_AT..SLBA_AT + 8].copy_from_slice(&slba.to_le_bytes());
    if header_digest {
        let hlen = usize::from(pdu::CAPSULE_CMD_HLEN);
        let hdgst = digest::to_wire(digest::header_digest(&capsule[..hlen]));
        capsule[hlen..hlen + DIGEST_LEN].copy_from_slice(&hdgst);
    }
}

fn data_digest(data: &[u8]) -> [u8; DIGEST_LEN] {
    let mut d = DataDigest::new();
    d.update(data);
    digest::to_wire(d.finish())
}

/// Segments for `qd` commands of `bs` bytes: a capsule each and, for writes
/// by R2T, one H2CData per MAXH2CDATA bytes; within [`MAX_SEGMENTS`].
fn segment_capacity(qd: usize, bs: u32, maxh2cdata: u32) -> usize {
    let per_command = 1 + bs.div_ceil(maxh2cdata.max(pdu::MIN_MAXH2CDATA)) as usize;
    (qd * per_command + 1).clamp(qd + 1, MAX_SEGMENTS.max(qd + 1))
}

impl Driver for TcpQueue {
    fn complete(&mut self, kind: u8, _slot: u16, res: i32, ctx: &mut Ctx<'_>) -> Result<(), EngineError> {
        if kind == OpKind::Recv as u8 {
            self.recv_inflight = false;
            if self.shut {
                return Ok(());
            }
            if res == 0 {
                return Err(EngineError::Closed { qid: self.qid });
            }
            if res < 0 {
                return Err(EngineError::Socket { qid: self.qid, op: "recv", error: errno(res) });
            }
            self.on_recv(res as usize, ctx)
        } else {
            self.send_inflight = false;
            if res < 0 {
                if self.shut {
                    return Ok(());
                }
                return Err(EngineError::Socket { qid: self.qid, op: "send", error: errno(res) });
            }
            self.on_sent(res as usize);
            Ok(())
        }
    }

    fn pump(&mut self, ctx: &mut Ctx<'_>, ring: &mut Ring) -> Result<(), EngineError> {
        if self.shut {
            return Ok(());
        }
        self.emit_h2c();
        while self.seg_free() > 0 {
            let Some(&cid) = self.free.last() else { break };
            if !ctx.may_issue() {
                break;
            }
            let Some((dir, unit)) = self.generator.next_command() else { break };
            self.free.pop();
            self.issue(cid, dir, unit, ctx);
        }
        let fd = types::Fd(self.stream.as_raw_fd());
        if !self.send_inflight && self.seg_len > 0 {
            let n = self.gather();
            self.msg.msg_iov = self.iov.as_mut_ptr();
            self.msg.msg_iovlen = n;
            let entry = opcode::SendMsg::new(fd, &*self.msg).flags(libc::MSG_NOSIGNAL as u32).build().user_data(token(
                self.index,
                OpKind::Send,
                0,
            ));
            // SAFETY: the msghdr, the iovecs and everything they point at
            // (segments, slot templates and buffers) belong to this queue,
            // which outlives the operation (the job drains the ring before
            // dropping it), and are not rewritten until on_sent has consumed
            // them.
            unsafe { ring.push(&entry)? };
            self.send_inflight = true;
        }
        if !self.recv_inflight {
            let (ptr, len, direct) = self.recv_window();
            let len = len.min(u32::MAX as usize) as u32;
            let entry = opcode::Recv::new(fd, ptr, len).build().user_data(token(self.index, OpKind::Recv, 0));
            // SAFETY: the window is inside the staging buffer or a Busy
            // slot's buffer, both owned by this queue until the completion;
            // nothing reads or writes it meanwhile (the slot cannot complete
            // before its data has all arrived).
            unsafe { ring.push(&entry)? };
            self.recv_inflight = true;
            self.recv_direct = direct;
        }
        Ok(())
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }

    fn exhausted(&self) -> bool {
        self.generator.exhausted()
    }

    fn kernel_ops(&self) -> usize {
        usize::from(self.send_inflight) + usize::from(self.recv_inflight)
    }

    fn shutdown(&mut self) {
        self.shut = true;
        // Ends the in-flight receive (and any blocked send) promptly.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Ctx;
    use crate::stats::Stats;
    use crate::workload::{Pattern, VerifyMap};
    use fabriq_target::nvme::Cqe;
    use fabriq_target::tcp::pdu::{CapsuleResp, Fes, TermData};
    use std::net::TcpListener;

    #[test]
    fn segment_capacity_bounds() {
        assert_eq!(segment_capacity(32, 4096, 131072), 65);
        assert_eq!(segment_capacity(16, 131072, 32768), 16 * 5 + 1);
        assert_eq!(segment_capacity(1, 1 << 20, 4096), 258);
        assert_eq!(segment_capacity(1024, 1 << 20, 4096), MAX_SEGMENTS);
    }

    /// A queue over a real (idle) loopback socket, driven by hand: bytes
    /// "received" are written into the window the queue names.
    struct Harness {
        queue: TcpQueue,
        stats: Stats,
        verify: Option<VerifyMap>,
        completed: u64,
        _peer: std::net::TcpStream,
    }

    fn harness(bs: u32, qd: u32, digests: Digests, sqfc_disabled: bool, icd_limit: u32) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        let parts = QueueParts {
            stream,
            framing: Framing { digests, cpda_alignment: 4 },
            hpda_alignment: 4,
            maxh2cdata: 8192,
            icd_limit,
            qid: 1,
            queue_depth: qd as usize,
            sq_flow_control_disabled: sqfc_disabled,
        };
        let mut workload = crate::workload::tests::workload(Pattern::Randrw);
        workload.bs = bs;
        workload.iodepth = qd;
        workload.fit(1 << 30, 512).unwrap();
        let generator = Generator::new(&workload, 0, 1);
        let queue = TcpQueue::new(0, parts, Target { nsid: 1, lba_size: 512 }, &workload, generator);
        Harness { queue, stats: Stats::new(1), verify: None, completed: 0, _peer: peer }
    }

    impl Harness {
        fn issue(&mut self, cid: u16, dir: Dir, unit: u64) {
            let pos = self.queue.free.iter().position(|&c| c == cid).expect("slot free");
            self.queue.free.remove(pos);
            let ctx = Ctx {
                now: Instant::now(),
                issuing: true,
                measuring: true,
                second: 0,
                stats: &mut self.stats,
                bucket: None,
                verify: self.verify.as_ref(),
                completed: self.completed,
                bytes: 0,
            };
            self.queue.issue(cid, dir, unit, &ctx);
        }

        /// Feeds `bytes` in pieces of `chunk`, as receives would.
        fn feed(&mut self, bytes: &[u8], chunk: usize) -> Result<(), EngineError> {
            let mut at = 0;
            while at < bytes.len() {
                let (ptr, len, direct) = self.queue.recv_window();
                let n = len.min(chunk).min(bytes.len() - at);
                // SAFETY: the window is writable for len >= n bytes and no
                // kernel operation is in flight in these tests.
                unsafe { std::ptr::copy_nonoverlapping(bytes[at..].as_ptr(), ptr, n) };
                self.queue.recv_direct = direct;
                let mut ctx = Ctx {
                    now: Instant::now(),
                    issuing: true,
                    measuring: true,
                    second: 0,
                    stats: &mut self.stats,
                    bucket: None,
                    verify: self.verify.as_ref(),
                    completed: self.completed,
                    bytes: 0,
                };
                let result = self.queue.on_recv(n, &mut ctx);
                self.completed = ctx.completed;
                result?;
                at += n;
            }
            Ok(())
        }

        /// Everything queued for sending, as bytes.
        fn sent(&mut self) -> Vec<u8> {
            let n = self.queue.gather();
            let mut out = Vec::new();
            for iov in &self.queue.iov[..n] {
                // SAFETY: the iovecs point at the queue's own live memory.
                out.extend_from_slice(unsafe { std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len) });
            }
            let len = out.len();
            self.queue.on_sent(len);
            out
        }
    }

    fn resp(cid: u16, status: Status, digests: Digests) -> Vec<u8> {
        let mut cqe = [0u8; 16];
        cqe.copy_from_slice(&Cqe { cid, status, sqid: 1, ..Cqe::default() }.encode());
        let mut out = [0u8; pdu::HEADER_BUF_LEN];
        let len = CapsuleResp { cqe }.encode(&mut out, digests);
        out[..len].to_vec()
    }

    fn c2h(cid: u16, datao: u32, data: &[u8], last: bool, success: bool, digests: Digests) -> Vec<u8> {
        let header = C2hData { cccid: cid, datao, datal: data.len() as u32, last, success };
        let mut out = [0u8; pdu::HEADER_BUF_LEN];
        let start = header.encode(&mut out, digests, 4);
        let mut bytes = out[..start].to_vec();
        bytes.extend_from_slice(data);
        if digests.data {
            bytes.extend_from_slice(&data_digest(data));
        }
        bytes
    }

    const NONE: Digests = Digests::NONE;
    const BOTH: Digests = Digests { header: true, data: true };

    #[test]
    fn reads_complete_whatever_the_receive_boundaries() {
        for chunk in [1, 7, 100, 5000, STAGING_BYTES] {
            let mut h = harness(4096, 4, BOTH, false, 8192);
            h.issue(0, Dir::Read, 3);
            h.issue(1, Dir::Read, 5);
            let sent = h.sent();
            assert_eq!(sent.len(), 2 * (72 + 4), "two capsules with header digests");
            let data = vec![0x5A; 4096];
            let mut bytes = c2h(1, 0, &data[..1024], false, false, BOTH);
            bytes.extend(c2h(1, 1024, &data[1024..], true, false, BOTH));
            bytes.extend(resp(1, Status::SUCCESS, BOTH));
            bytes.extend(c2h(0, 0, &data, true, false, BOTH));
            bytes.extend(resp(0, Status::SUCCESS, BOTH));
            h.feed(&bytes, chunk).unwrap();
            assert_eq!(h.completed, 2, "chunk {chunk}");
            assert_eq!(h.queue.outstanding, 0);
            assert_eq!(h.queue.free.len(), 4);
            assert_eq!(h.queue.bufs.slice(1, 4096), &data[..]);
        }
    }

    #[test]
    fn a_slot_is_reused_only_after_its_capsule_was_sent() {
        let mut h = harness(4096, 1, NONE, false, 0);
        h.issue(0, Dir::Read, 0);
        let mut bytes = c2h(0, 0, &[0; 4096], true, false, NONE);
        bytes.extend(resp(0, Status::SUCCESS, NONE));
        h.feed(&bytes, 1 << 20).unwrap();
        assert_eq!(h.completed, 1);
        assert!(h.queue.free.is_empty(), "the capsule is still queued for sending");
        assert_eq!(h.queue.slots[0].state, SlotState::Retired);
        h.sent();
        assert_eq!(h.queue.free, [0]);
    }

    #[test]
    fn large_payloads_go_straight_into_the_slot() {
        let mut h = harness(64 * 1024, 2, NONE, true, 0);
        h.issue(0, Dir::Read, 0);
        let data: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
        let pdu = c2h(0, 0, &data, true, true, NONE);
        // The header first; then the window is the slot's buffer.
        h.feed(&pdu[..24 + 100], 1 << 20).unwrap();
        let (ptr, len, direct) = h.queue.recv_window();
        assert!(direct);
        assert_eq!(len, 65536 - 100);
        assert_eq!(ptr, h.queue.bufs.ptr(0).wrapping_add(100));
        h.feed(&pdu[24 + 100..], 1 << 20).unwrap();
        assert_eq!(h.completed, 1, "SUCCESS flag, no CapsuleResp");
        assert_eq!(h.queue.bufs.slice(0, 65536), &data[..]);
    }

    #[test]
    fn success_flag_needs_sq_flow_control_off() {
        let mut h = harness(4096, 2, NONE, false, 0);
        h.issue(0, Dir::Read, 0);
        let err = h.feed(&c2h(0, 0, &[0; 4096], true, true, NONE), 1 << 20).unwrap_err();
        assert!(
            matches!(err, EngineError::Protocol { violation: Violation::SuccessWithFlowControl { cid: 0 }, .. }),
            "{err}"
        );
    }

    #[test]
    fn r2t_is_answered_with_h2c_data_as_the_host_library_frames_it() {
        for digests in [NONE, BOTH] {
            let mut h = harness(20 * 1024, 2, digests, false, 8192);
            h.issue(1, Dir::Write, 2);
            let capsule = h.sent();
            assert_eq!(capsule.len(), 72 + usize::from(digests.header_len()), "no data in the capsule");
            let mut out = [0u8; pdu::HEADER_BUF_LEN];
            let len = R2t { cccid: 1, ttag: 7, r2to: 0, r2tl: 20 * 1024 }.encode(&mut out, digests);
            h.feed(&out[..len], 1 << 20).unwrap();
            h.queue.emit_h2c();
            let sent = h.sent();
            let framing = Framing { digests, cpda_alignment: 4 };
            let data = h.queue.bufs.slice(1, 20 * 1024).to_vec();
            let mut expected = Vec::new();
            for (datao, datal) in [(0u32, 8192u32), (8192, 8192), (16384, 4096)] {
                let header = H2cData { cccid: 1, ttag: 7, datao, datal, last: datao + datal == 20 * 1024 };
                expected.extend(framing.h2c_data(&header, &data[datao as usize..(datao + datal) as usize]));
            }
            assert_eq!(sent, expected, "{digests:?}");
            h.feed(&resp(1, Status::SUCCESS, digests), 3).unwrap();
            assert_eq!(h.completed, 1);
        }
    }

    #[test]
    fn r2t_for_a_read_or_beyond_the_data_is_a_violation() {
        let mut h = harness(8192, 2, NONE, false, 0);
        h.issue(0, Dir::Read, 0);
        h.issue(1, Dir::Write, 1);
        let r2t = |cccid, r2to, r2tl| {
            let mut out = [0u8; pdu::HEADER_BUF_LEN];
            let len = R2t { cccid, ttag: 1, r2to, r2tl }.encode(&mut out, NONE);
            out[..len].to_vec()
        };
        let err = h.feed(&r2t(0, 0, 4096), 64).unwrap_err();
        assert!(matches!(err, EngineError::Protocol { violation: Violation::R2tWithoutData { cid: 0 }, .. }), "{err}");
        let mut h = harness(8192, 2, NONE, false, 0);
        h.issue(1, Dir::Write, 1);
        let err = h.feed(&r2t(1, 4096, 8192), 64).unwrap_err();
        assert!(matches!(err, EngineError::Protocol { violation: Violation::R2tOutOfRange { .. }, .. }), "{err}");
    }

    #[test]
    fn unknown_cids_digests_statuses_and_term_reqs_stop_the_run() {
        let mut h = harness(4096, 2, NONE, false, 0);
        let err = h.feed(&resp(1, Status::SUCCESS, NONE), 64).unwrap_err();
        assert!(matches!(err, EngineError::Protocol { violation: Violation::UnknownCid { cid: 1, .. }, .. }), "{err}");

        let mut h = harness(4096, 2, BOTH, false, 0);
        h.issue(0, Dir::Read, 0);
        let mut pdu = c2h(0, 0, &[1; 4096], true, false, BOTH);
        let last = pdu.len() - 1;
        pdu[last] ^= 0xFF;
        pdu.extend(resp(0, Status::SUCCESS, BOTH));
        let err = h.feed(&pdu, 512).unwrap_err();
        assert!(matches!(err, EngineError::DataDigest { slba: 0, .. }), "{err}");

        let mut h = harness(4096, 2, BOTH, false, 0);
        let mut bad = resp(0, Status::SUCCESS, BOTH);
        bad[9] ^= 1;
        assert!(matches!(h.feed(&bad, 64).unwrap_err(), EngineError::HeaderDigest { .. }));

        let mut h = harness(4096, 2, NONE, false, 0);
        h.issue(0, Dir::Write, 9);
        let err = h.feed(&resp(0, Status::LBA_OUT_OF_RANGE, NONE), 64).unwrap_err();
        assert!(matches!(err, EngineError::Status { write: true, slba: 72, .. }), "{err}");

        let mut h = harness(4096, 2, NONE, false, 0);
        let term = TermReq {
            direction: pdu::Direction::C2h,
            fes: Fes::PduSequenceError,
            fei: 0,
            data: TermData::new(&[4; 8]),
        };
        let mut out = [0u8; pdu::HEADER_BUF_LEN];
        let len = term.encode(&mut out);
        let err = h.feed(&out[..len], 5).unwrap_err();
        assert!(matches!(err, EngineError::TermReq { fes: Fes::PduSequenceError, .. }), "{err}");
    }

    #[test]
    fn verify_checks_reads_of_written_units_only() {
        let mut h = harness(4096, 2, NONE, false, 0);
        h.verify = Some(VerifyMap::new(1 << 18, false, 1, 512));
        // Unit 4 is not written: a read of zeroes passes unchecked.
        h.issue(0, Dir::Read, 4);
        h.sent();
        let mut bytes = c2h(0, 0, &[0; 4096], true, false, NONE);
        bytes.extend(resp(0, Status::SUCCESS, NONE));
        h.feed(&bytes, 1 << 20).unwrap();
        assert_eq!(h.stats.verified_reads, 0);
        // Write unit 4 (the slot's buffer gets the pattern), then read it back
        // wrong.
        h.issue(1, Dir::Write, 4);
        h.sent();
        h.feed(&resp(1, Status::SUCCESS, NONE), 1 << 20).unwrap();
        let mut good = vec![0u8; 4096];
        pattern::fill(&mut good, 512, 32, 1);
        h.issue(0, Dir::Read, 4);
        h.sent();
        let mut bytes = c2h(0, 0, &good, true, false, NONE);
        bytes.extend(resp(0, Status::SUCCESS, NONE));
        h.feed(&bytes, 1 << 20).unwrap();
        assert_eq!(h.stats.verified_reads, 1);
        h.issue(0, Dir::Read, 4);
        h.sent();
        let mut bad = good.clone();
        bad[1000] ^= 1;
        let mut bytes = c2h(0, 0, &bad, true, false, NONE);
        bytes.extend(resp(0, Status::SUCCESS, NONE));
        let err = h.feed(&bytes, 1 << 20).unwrap_err();
        assert!(
            matches!(err, EngineError::Verify { mismatch: pattern::Mismatch { lba: 33, offset: 488, .. }, .. }),
            "{err}"
        );
    }
}
