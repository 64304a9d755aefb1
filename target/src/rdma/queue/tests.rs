//! The RDMA queue driven by hand, with no verbs: the test plays the HCA (it fills receive
//! buffers and RDMA READ targets, and completes work requests) and the backend (it completes
//! the io_uring submissions the queue asks for). Runs in every build, with or without the
//! `rdma` feature.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use io_uring::squeue;

use super::*;
use crate::backend::Backend;
use crate::buffers::{BufferPool, Layout};
use crate::config::Transport;
use crate::nvme::property::CC;
use crate::nvme::sqe::{PropertySet, ReadWrite};
use crate::nvme::{CntlId, ConnectData, IoOpcode, Nqn, Nsid, PropertySize, SglDescriptor, SglKind};
use crate::rdma::wire::QueueShape;
use crate::subsys::{Limits, Namespace, Subsystem, SubsystemKind};

const SUBNQN: &str = "nqn.2026-11.dev.fabriq:unit";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555";
const HOSTID: [u8; 16] = [7; 16];
const KEY: u32 = 0x00AB_CDEF;

fn target() -> Arc<Target> {
    let limits = Limits {
        mdts_bytes: 128 * 1024,
        max_queue_entries: 32,
        max_io_queues: 2,
        in_capsule_data_bytes: 8192,
        h2c_window_bytes: 512 * 1024,
        reactors: 1,
        discovery_kato_ms: 0,
        ..Limits::default()
    };
    let target = Target::new(limits);
    let registered = target.register_listener(|_| listener()).unwrap();
    assert_eq!(registered.port_id, 1);
    let hosts: BTreeSet<String> = [HOSTNQN.to_owned()].into();
    let subsys =
        Subsystem::new(Nqn::parse(SUBNQN).unwrap(), SubsystemKind::Nvm, "serial".into(), "model".into(), false, hosts);
    let ns = Namespace::new(Nsid::new(1).unwrap(), 512, Backend::mem(1 << 20).unwrap(), uuid::Uuid::nil(), [0; 16], 1);
    subsys.add_namespace(ns).unwrap();
    target.add_subsystem(subsys).unwrap();
    Arc::new(target)
}

fn listener() -> ListenerInfo {
    let addr = "10.0.2.15:4420".parse().unwrap();
    ListenerInfo { port_id: 1, bound: addr, advertised: addr, discovery_only: false, transport: Transport::Rdma }
}

/// The reactor's side of a queue in a test: pool, submissions, and what the HCA holds.
struct Host {
    target: Arc<Target>,
    pool: BufferPool,
    ops: Vec<(u16, squeue::Entry)>,
    poke: bool,
    stopping: bool,
    /// Receive buffers posted (the HCA's receive queue).
    recvs: Vec<u16>,
    /// Send-queue work posted and not completed.
    sends: Vec<Work>,
    next_cid: u16,
}

impl Host {
    fn new() -> Host {
        let pool = BufferPool::new(&Layout { classes: vec![(4096, 8), (131072, 4)] }).unwrap();
        Host {
            target: target(),
            pool,
            ops: Vec::new(),
            poke: false,
            stopping: false,
            recvs: Vec::new(),
            sends: Vec::new(),
            next_cid: 1,
        }
    }

    fn io(&mut self) -> Io<'_> {
        Io {
            pool: &mut self.pool,
            ops: &mut self.ops,
            reactor: 0,
            fixed_buffers: false,
            now: Instant::now(),
            poke_all: &mut self.poke,
            stopping: self.stopping,
        }
    }

    fn queue(&mut self, qid: u16, entries: u16) -> Queue {
        let icd_bytes = if qid == 0 { 0 } else { 8192 };
        let mut q = Queue::new(Arc::clone(&self.target), 0, listener(), None, QueueShape { qid, entries, icd_bytes });
        q.start();
        self.collect(&mut q);
        assert_eq!(self.recvs.len(), usize::from(entries), "every receive buffer posted at start");
        q
    }

    /// Takes the queue's new work requests into the simulated HCA.
    fn collect(&mut self, q: &mut Queue) {
        for w in q.take_work().collect::<Vec<_>>() {
            match w {
                Work::Recv { index } => {
                    assert!(!self.recvs.contains(&index), "receive buffer {index} posted twice");
                    self.recvs.push(index);
                }
                other => self.sends.push(other),
            }
        }
    }

    /// The host sends a capsule: the SQE and `data` land in a posted receive buffer.
    fn send(&mut self, q: &mut Queue, sqe: &Sqe, data: &[u8]) {
        let index = self.recvs.remove(0);
        let (ptr, cap) = q.recv_buffer(index);
        let len = SQE_BYTES + data.len();
        assert!(len <= cap as usize);
        // SAFETY: the receive buffer holds cap bytes and the queue does not use it now.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, cap as usize) };
        buf[..SQE_BYTES].copy_from_slice(&sqe.encode());
        buf[SQE_BYTES..len].copy_from_slice(data);
        let mut io = self.io();
        q.on_done(WrId::Recv(index), true, len as u32, &mut io);
        self.collect(q);
    }

    /// The HCA finishes the oldest send-queue request matching `pick` (its data copied in
    /// or out by `data`); returns it.
    fn finish(&mut self, q: &mut Queue, ok: bool, pick: impl Fn(&Work) -> bool) -> Work {
        let at = self.sends.iter().position(pick).expect("no such work request posted");
        let w = self.sends.remove(at);
        let id = match w {
            Work::Read { slot, .. } => WrId::Read(slot),
            Work::Write { slot, .. } => WrId::Write(slot),
            Work::Send { slot, .. } => WrId::Send(slot),
            Work::Recv { .. } => unreachable!(),
        };
        let mut io = self.io();
        q.on_done(id, ok, 0, &mut io);
        self.collect(q);
        w
    }

    /// The HCA flushes everything posted (the queue pair went to the error state).
    fn flush_all(&mut self, q: &mut Queue) {
        while let Some(index) = self.recvs.pop() {
            let mut io = self.io();
            q.on_done(WrId::Recv(index), false, 0, &mut io);
        }
        while !self.sends.is_empty() {
            self.finish(q, false, |_| true);
        }
    }

    /// The response of the last Send posted, and the send itself.
    fn response(&mut self, q: &mut Queue) -> (Cqe, Option<u32>) {
        let w = self.finish(q, true, |w| matches!(w, Work::Send { .. }));
        let Work::Send { slot, invalidate } = w else { unreachable!() };
        let (ptr, len) = q.response(slot);
        // SAFETY: the response buffer holds one CQE.
        let bytes: [u8; 16] = unsafe { std::slice::from_raw_parts(ptr, len as usize) }.try_into().unwrap();
        (Cqe::decode(&bytes), invalidate)
    }

    /// Completes every backend submission with its full length (the op's `expect`).
    fn complete_backend(&mut self, q: &mut Queue, res: i32) {
        for (slot, _) in std::mem::take(&mut self.ops) {
            let mut io = self.io();
            q.on_backend(slot, res, &mut io);
            self.collect(q);
        }
    }

    fn cid(&mut self) -> u16 {
        self.next_cid += 1;
        self.next_cid
    }

    /// Connects queue `qid` (admin first); the Connect data travels by RDMA READ on the
    /// admin queue and in the capsule on I/O queues (as the Linux host sends them).
    fn connect(&mut self, q: &mut Queue, qid: u16, cntlid: u16) -> Cqe {
        let sqsize = q.shape().entries - 1;
        let connect = Connect { recfmt: 0, qid, sqsize, cattr: 0, kato_ms: 0 };
        let mut sqe = connect.to_sqe(self.cid());
        sqe.flags |= 1 << 6;
        let data = connect_data(cntlid);
        if qid == 0 {
            sqe.dptr = keyed(0x1000, 1024, 0xF).encode();
            self.send(q, &sqe, &[]);
            self.read_into(q, &data);
            let (cqe, invalidate) = self.response(q);
            assert_eq!(invalidate, Some(KEY), "the host asked for its key to be invalidated");
            cqe
        } else {
            sqe.dptr = SglDescriptor::in_capsule(0, 1024).encode();
            self.send(q, &sqe, &data);
            self.response(q).0
        }
    }

    /// The HCA performs the posted RDMA READ: `data` lands in the target's buffer.
    fn read_into(&mut self, q: &mut Queue, data: &[u8]) {
        let Some(&Work::Read { local, len, addr, key, .. }) =
            self.sends.iter().find(|w| matches!(w, Work::Read { .. }))
        else {
            panic!("no RDMA READ posted: {:?}", self.sends)
        };
        assert_eq!((addr, key, len as usize), (0x1000, KEY, data.len()));
        // SAFETY: the queue's buffer holds len bytes and belongs to the HCA until the READ completes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), local, data.len()) };
        self.finish(q, true, |w| matches!(w, Work::Read { .. }));
    }

    /// An enabled controller with its admin queue, and a connected I/O queue 1.
    fn io_queue(&mut self) -> (Queue, Queue) {
        let mut admin = self.queue(0, 32);
        let cqe = self.connect(&mut admin, 0, CntlId::DYNAMIC.get());
        assert!(cqe.status.is_success(), "{cqe:?}");
        let cntlid = cqe.dw0 as u16;
        let cc = PropertySet { size: PropertySize::Four, offset: CC, value: 0x0046_0001 }.to_sqe(self.cid());
        self.send(&mut admin, &with_null_sgl(cc), &[]);
        assert!(self.response(&mut admin).0.status.is_success());
        // The simulated HCA serves one queue pair at a time: the I/O queue's from here on.
        assert!(self.sends.is_empty());
        self.recvs.clear();
        let mut io = self.queue(1, 32);
        let cqe = self.connect(&mut io, 1, cntlid);
        assert!(cqe.status.is_success(), "{cqe:?}");
        (admin, io)
    }
}

fn connect_data(cntlid: u16) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    ConnectData {
        hostid: HOSTID,
        cntlid: CntlId::from_wire(cntlid),
        subnqn: Nqn::parse(SUBNQN).unwrap(),
        hostnqn: Nqn::parse(HOSTNQN).unwrap(),
    }
    .encode(&mut b);
    b
}

fn keyed(address: u64, length: u32, subtype: u8) -> SglDescriptor {
    SglDescriptor { address, length, kind: SglKind::KeyedDataBlock { subtype, key: KEY } }
}

/// SGLs in the command (PSDT 01b) and the descriptor the Linux host sends with no data.
fn with_null_sgl(mut sqe: Sqe) -> Sqe {
    sqe.flags |= 1 << 6;
    sqe.dptr = keyed(0, 0, 0).encode();
    sqe
}

fn rw(opcode: IoOpcode, cid: u16, slba: u64, nlb: u32, sgl: SglDescriptor) -> Sqe {
    let mut sqe = ReadWrite { slba, nlb, fua: false, limited_retry: false, deac: false }.to_sqe(opcode, cid, 1);
    sqe.flags |= 1 << 6;
    sqe.dptr = sgl.encode();
    sqe
}

#[test]
fn connect_then_write_in_capsule_and_read_back_by_rdma_write() {
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    // A 4 KiB write in the capsule: copied into a pool buffer, the receive buffer reposted.
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Write, cid, 8, 8, SglDescriptor::in_capsule(0, 4096)), &data);
    assert_eq!(h.recvs.len(), 32, "the receive buffer went back as soon as the data was copied");
    assert_eq!(h.ops.len(), 1, "one backend write");
    h.complete_backend(&mut q, 4096);
    let (cqe, invalidate) = h.response(&mut q);
    assert_eq!((cqe.cid, cqe.status, cqe.sqid), (cid, Status::SUCCESS, 1));
    assert_eq!(invalidate, None);
    // A read of the same blocks: backend read, then RDMA WRITE of the data and the response.
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Read, cid, 8, 8, keyed(0x1000, 4096, 0xF)), &[]);
    assert_eq!(h.ops.len(), 1, "one backend read");
    h.complete_backend(&mut q, 4096);
    let write = h.sends.iter().find(|w| matches!(w, Work::Write { .. })).copied().expect("RDMA WRITE posted");
    let Work::Write { len, addr, key, .. } = write else { unreachable!() };
    assert_eq!((len, addr, key), (4096, 0x1000, KEY));
    assert!(matches!(h.sends.last(), Some(Work::Send { invalidate: Some(KEY), .. })), "response after the data");
    h.finish(&mut q, true, |w| matches!(w, Work::Write { .. }));
    assert_eq!(h.response(&mut q).0.status, Status::SUCCESS);
    assert!(q.idle() || !h.recvs.is_empty());
}

#[test]
fn write_by_rdma_read_then_executes() {
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Write, cid, 0, 64, keyed(0x1000, 32768, 0)), &[]);
    assert!(h.ops.is_empty(), "nothing runs before the data is read");
    h.read_into(&mut q, &[0x5A; 32768]);
    assert_eq!(h.ops.len(), 1);
    h.complete_backend(&mut q, 32768);
    assert_eq!(h.response(&mut q), (Cqe { dw0: 0, dw1: 0, sqhd: 2, sqid: 1, cid, status: Status::SUCCESS }, None));
}

#[test]
fn bad_sgls_get_a_status_and_the_queue_lives_on() {
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    let cases = [
        (keyed(0x1000, 512, 0), Status::DATA_SGL_LENGTH_INVALID.with_dnr()),
        (keyed(0x1000, 4096, 0x3), Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()),
        (SglDescriptor::in_capsule(64, 4096), Status::INVALID_SGL_OFFSET.with_dnr()),
        (SglDescriptor::transport(4096), Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()),
    ];
    for (sgl, status) in cases {
        let cid = h.cid();
        let icd = if sgl.kind == SglKind::DataBlockOffset { vec![0u8; 4096] } else { Vec::new() };
        h.send(&mut q, &rw(IoOpcode::Write, cid, 0, 8, sgl), &icd);
        assert!(h.ops.is_empty());
        assert_eq!(h.response(&mut q).0.status, status, "{sgl:?}");
    }
    assert!(!q.wants_close());
    assert_eq!(h.pool.outstanding(), 0, "failed commands hold no buffer");
}

/// What a hostile host may put in a command's SGL, each answered with its NVMe status on a
/// queue that lives on: no backend operation, no data transfer, every receive buffer posted
/// again and every pool buffer back after each one.
#[test]
fn hostile_sgls_get_their_status_and_leak_nothing() {
    use crate::nvme::sqe::sgl_type;
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    let bad_type = Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr();
    let bad_length = Status::DATA_SGL_LENGTH_INVALID.with_dnr();
    let invalid = Status::INVALID_FIELD.with_dnr();
    let kind = |kind| SglDescriptor { address: 0x1000, length: 4096, kind };
    // (opcode, blocks of 512 bytes, descriptor, in-capsule bytes sent, PRPs instead of SGLs, status)
    let mut cases: Vec<(IoOpcode, u32, SglDescriptor, usize, bool, Status)> = vec![
        // Over MDTS (128 KiB), whatever the descriptor says.
        (IoOpcode::Read, 257, keyed(0x1000, 0xFF_FFFF, 0), 0, false, invalid),
        (IoOpcode::Write, 257, keyed(0x1000, 0xFF_FFFF, 0), 0, false, invalid),
        // In-capsule data over the queue's in-capsule size, or not what the command moves.
        (IoOpcode::Write, 32, SglDescriptor::in_capsule(0, 16384), 8192, false, bad_length),
        (IoOpcode::Write, 8, SglDescriptor::in_capsule(0, 2048), 2048, false, bad_length),
        (IoOpcode::Write, 8, SglDescriptor::in_capsule(0, 4096), 1024, false, bad_length),
        // In-capsule data at an offset (ICDOFF is 0), aligned or not.
        (IoOpcode::Write, 8, SglDescriptor::in_capsule(1, 4096), 4097, false, Status::INVALID_SGL_OFFSET.with_dnr()),
        (IoOpcode::Write, 8, SglDescriptor::in_capsule(512, 4096), 4608, false, Status::INVALID_SGL_OFFSET.with_dnr()),
        // In-capsule data for a read.
        (IoOpcode::Read, 8, SglDescriptor::in_capsule(0, 4096), 4096, false, invalid),
        // A keyed descriptor shorter than the transfer, and one with data in the capsule too.
        (IoOpcode::Read, 8, keyed(0x1000, 4095, 0), 0, false, bad_length),
        (IoOpcode::Write, 8, keyed(0x1000, 0, 0xF), 0, false, bad_length),
        (IoOpcode::Write, 8, keyed(0x1000, 4096, 0), 4096, false, invalid),
        // PRPs: NVMe over Fabrics has SGLs only.
        (IoOpcode::Read, 8, keyed(0x1000, 4096, 0), 0, true, invalid),
        // Descriptor types this transport does not take.
        (IoOpcode::Read, 8, kind(SglKind::DataBlock), 0, false, bad_type),
        (IoOpcode::Write, 8, kind(SglKind::BitBucket), 0, false, bad_type),
        (IoOpcode::Read, 8, kind(SglKind::Segment { subtype: 0 }), 0, false, bad_type),
        (IoOpcode::Write, 8, kind(SglKind::LastSegment { subtype: 0 }), 0, false, bad_type),
        (IoOpcode::Read, 8, SglDescriptor::transport(4096), 0, false, bad_type),
        (IoOpcode::Read, 8, kind(SglKind::Unknown { desc_type: 0xF, subtype: 0 }), 0, false, bad_type),
        (IoOpcode::Write, 8, kind(SglKind::Unknown { desc_type: 0x6, subtype: 0xF }), 0, false, bad_type),
    ];
    // Every keyed subtype but "address" (0) and "invalidate key" (Fh).
    for subtype in (0u8..=0xF).filter(|&t| t != sgl_type::SUBTYPE_ADDRESS && t != sgl_type::SUBTYPE_INVALIDATE_KEY) {
        cases.push((IoOpcode::Read, 8, keyed(0x1000, 4096, subtype), 0, false, bad_type));
    }
    for (opcode, nlb, sgl, icd, prp, status) in cases {
        let cid = h.cid();
        let mut sqe = rw(opcode, cid, 0, nlb, sgl);
        if prp {
            sqe.flags &= !(3 << 6);
        }
        h.send(&mut q, &sqe, &vec![0xA5; icd]);
        assert!(h.ops.is_empty(), "{sgl:?}: nothing reaches the backend");
        assert!(h.sends.iter().all(|w| matches!(w, Work::Send { .. })), "{sgl:?}: no data moves: {:?}", h.sends);
        let (cqe, _) = h.response(&mut q);
        assert_eq!((cqe.cid, cqe.status), (cid, status), "{opcode:?} {nlb} blocks {sgl:?} icd {icd} prp {prp}");
        assert!(!q.wants_close(), "{sgl:?}: a bad command is a status, not a disconnect");
        assert_eq!(h.recvs.len(), 32, "{sgl:?}: its receive buffer is posted again");
        assert_eq!(h.pool.outstanding(), 0, "{sgl:?}: no buffer held");
    }
    // The queue still works.
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Write, cid, 0, 8, SglDescriptor::in_capsule(0, 4096)), &[1; 4096]);
    h.complete_backend(&mut q, 4096);
    assert_eq!(h.response(&mut q).0.status, Status::SUCCESS);
    assert_eq!(h.pool.outstanding(), 0);
}

/// Keys are the HCA's to check: a key of 0 or one the host never registered is posted as it
/// came, the transfer fails at the HCA (remote access error), and the queue pair closes with
/// every buffer back once the rest has flushed, for data in either direction.
#[test]
fn zero_and_unknown_keys_fail_the_transfer_and_close_cleanly() {
    for (opcode, key) in
        [(IoOpcode::Write, 0), (IoOpcode::Read, 0), (IoOpcode::Write, 0xDEAD_BEEF), (IoOpcode::Read, u32::MAX)]
    {
        let mut h = Host::new();
        let (_admin, mut q) = h.io_queue();
        let cid = h.cid();
        let sgl = SglDescriptor { address: 0x1001, length: 4096, kind: SglKind::KeyedDataBlock { subtype: 0, key } };
        h.send(&mut q, &rw(opcode, cid, 0, 8, sgl), &[]);
        if opcode == IoOpcode::Read {
            h.complete_backend(&mut q, 4096);
        }
        let posted = h.sends.iter().find(|w| matches!(w, Work::Read { .. } | Work::Write { .. })).copied();
        let (addr, got_key) = match posted {
            Some(Work::Read { addr, key, .. } | Work::Write { addr, key, .. }) => (addr, key),
            other => panic!("{opcode:?}: no transfer posted: {other:?}"),
        };
        assert_eq!((addr, got_key), (0x1001, key), "an unaligned address and any key go to the HCA as sent");
        assert_eq!(h.pool.outstanding(), 1);
        h.finish(&mut q, false, |w| matches!(w, Work::Read { .. } | Work::Write { .. }));
        assert!(q.wants_close(), "{opcode:?} key {key:#x}: a failed transfer ends the queue pair");
        h.flush_all(&mut q);
        assert!(q.idle(), "{opcode:?}: nothing posted, nothing on the backend");
        let mut io = h.io();
        q.release(&mut io);
        assert_eq!(h.pool.outstanding(), 0, "{opcode:?} key {key:#x}: every buffer is back");
    }
}

/// A receive that completes in error (a capsule larger than the receive buffer: local length
/// error), a capsule longer than the queue's capsules, and a failed response SEND: each closes
/// the queue pair, and once everything posted has flushed, no buffer is held.
#[test]
fn failed_receives_oversized_capsules_and_failed_sends_close_cleanly() {
    // A receive in error while a command waits for its RDMA READ.
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Write, cid, 0, 8, keyed(0x1000, 4096, 0)), &[]);
    let index = h.recvs.remove(0);
    let mut io = h.io();
    q.on_done(WrId::Recv(index), false, 0, &mut io);
    assert!(q.wants_close());
    h.flush_all(&mut q);
    assert!(q.idle());
    let mut io = h.io();
    q.release(&mut io);
    assert_eq!(h.pool.outstanding(), 0);

    // A capsule longer than the SQE and the queue's in-capsule size.
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    let index = h.recvs.remove(0);
    let mut io = h.io();
    q.on_done(WrId::Recv(index), true, (SQE_BYTES + 8192 + 1) as u32, &mut io);
    assert!(q.wants_close());
    h.collect(&mut q);
    h.flush_all(&mut q);
    assert!(q.idle());
    let mut io = h.io();
    q.release(&mut io);
    assert_eq!(h.pool.outstanding(), 0);

    // The response SEND of a read fails after its data went out.
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Read, cid, 0, 8, keyed(0x1000, 4096, 0xF)), &[]);
    h.complete_backend(&mut q, 4096);
    h.finish(&mut q, true, |w| matches!(w, Work::Write { .. }));
    h.finish(&mut q, false, |w| matches!(w, Work::Send { .. }));
    assert!(q.wants_close());
    h.flush_all(&mut q);
    assert!(q.idle());
    let mut io = h.io();
    q.release(&mut io);
    assert_eq!(h.pool.outstanding(), 0);
}

/// The host vanishes (DISCONNECTED) at every stage a command can be in: waiting for a pool
/// buffer with its data still in the receive buffer, waiting for its RDMA READ, on the
/// backend, and with its data and response on the wire. Every buffer comes back once the
/// last completion (flush or backend) has arrived, never before.
#[test]
fn a_peer_vanishing_at_any_stage_leaks_nothing() {
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    // Responding: a read's RDMA WRITE and SEND posted.
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Read, cid, 0, 8, keyed(0x1000, 4096, 0)), &[]);
    h.complete_backend(&mut q, 4096);
    // Reading: a write waiting for its data.
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Write, cid, 8, 16, keyed(0x1000, 8192, 0)), &[]);
    // Executing: a write with its data, on the backend.
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Write, cid, 32, 8, SglDescriptor::in_capsule(0, 4096)), &[2; 4096]);
    assert_eq!(h.ops.len(), 1);
    let backend = std::mem::take(&mut h.ops);
    // Waiting for a buffer: the pool is empty, the data stays in the receive buffer.
    let mut held = Vec::new();
    while let Some(b) = h.pool.get(4096) {
        held.push(b);
    }
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Write, cid, 48, 8, SglDescriptor::in_capsule(0, 4096)), &[3; 4096]);
    assert_eq!(h.recvs.len(), 31, "the waiting command holds its receive buffer");
    let ours = h.pool.outstanding() - held.len();
    assert_eq!(ours, 3, "read, write being read, write on the backend");

    let mut io = h.io();
    q.close("DISCONNECTED", &mut io);
    for b in held.drain(..) {
        h.pool.put(b);
    }
    h.flush_all(&mut q);
    assert!(!q.idle(), "the backend write still reads its buffer");
    assert_eq!(h.pool.outstanding(), 1, "only the backend's buffer is out");
    for (slot, _) in backend {
        let mut io = h.io();
        q.on_backend(slot, 4096, &mut io);
        h.collect(&mut q);
    }
    assert!(h.sends.is_empty() && h.ops.is_empty(), "nothing new once closed");
    assert!(q.idle());
    let mut io = h.io();
    q.release(&mut io);
    assert_eq!(h.pool.outstanding(), 0);
}

#[test]
fn a_connect_for_another_queue_is_refused() {
    let mut h = Host::new();
    // The CM set this queue pair up for queue 2; its Connect names queue 1.
    let mut other = h.queue(2, 32);
    let connect = Connect { recfmt: 0, qid: 1, sqsize: 31, cattr: 0, kato_ms: 0 };
    let mut sqe = connect.to_sqe(h.cid());
    sqe.flags |= 1 << 6;
    sqe.dptr = SglDescriptor::in_capsule(0, 1024).encode();
    h.send(&mut other, &sqe, &connect_data(1));
    let cqe = h.response(&mut other).0;
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
    assert_eq!(cqe.dw0, connect_invalid_param_dw0(false, fabrics_offsets::CONNECT_QID));
    assert!(!other.wants_close());
    assert_eq!(h.pool.outstanding(), 0);
}

#[test]
fn protocol_violations_close_the_queue() {
    // A capsule shorter than an SQE.
    let mut h = Host::new();
    let mut q = h.queue(0, 4);
    let index = h.recvs.remove(0);
    let mut io = h.io();
    q.on_done(WrId::Recv(index), true, 10, &mut io);
    assert!(q.wants_close());
    h.collect(&mut q);
    assert!(h.recvs.len() == 3, "nothing reposted once closing");
    h.flush_all(&mut q);
    assert!(q.idle());

    // More commands than the queue holds (each waits for its RDMA READ).
    let mut h = Host::new();
    let mut q = h.queue(0, 4);
    let connect = Connect { recfmt: 0, qid: 0, sqsize: 3, cattr: 0, kato_ms: 0 };
    for _ in 0..4 {
        let mut sqe = connect.to_sqe(h.cid());
        sqe.flags |= 1 << 6;
        sqe.dptr = keyed(0x1000, 1024, 0xF).encode();
        h.send(&mut q, &sqe, &[]);
    }
    assert!(!q.wants_close());
    let mut sqe = connect.to_sqe(h.cid());
    sqe.flags |= 1 << 6;
    sqe.dptr = keyed(0x1000, 1024, 0xF).encode();
    // The host reposts nothing of ours: it has 4 receives in our queue, so this fifth capsule
    // could only arrive in a receive the queue reposted; simulate one.
    h.recvs.push(0);
    h.send(&mut q, &sqe, &[]);
    assert!(q.wants_close(), "a fifth command in a queue of four");
    h.recvs.retain(|&i| i != 0);
    h.flush_all(&mut q);
    assert!(q.idle());
    let mut io = h.io();
    q.release(&mut io);
    assert_eq!(h.pool.outstanding(), 0, "buffers of the commands waiting for data are back");
}

/// An invalid key: the RDMA READ fails, the queue pair goes to the error state, everything
/// else flushes, and every buffer comes back only after its last completion.
#[test]
fn a_failed_transfer_closes_the_queue_and_buffers_come_back_after_the_flush() {
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    // One write waiting for its data, one read executing on the backend.
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Write, cid, 0, 8, keyed(0x1000, 4096, 0)), &[]);
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Read, cid, 0, 8, keyed(0x2000, 4096, 0xF)), &[]);
    assert_eq!(h.ops.len(), 1);
    assert_eq!(h.pool.outstanding(), 2);
    h.finish(&mut q, false, |w| matches!(w, Work::Read { .. }));
    assert!(q.wants_close());
    h.flush_all(&mut q);
    assert!(!q.idle(), "the backend read still writes into its buffer");
    assert_eq!(h.pool.outstanding(), 1, "the failed READ's buffer is back, the backend's is not");
    h.complete_backend(&mut q, 4096);
    assert!(h.sends.is_empty(), "no response once closing");
    assert!(q.idle());
    let mut io = h.io();
    q.release(&mut io);
    assert_eq!(h.pool.outstanding(), 0);
}

/// The peer vanishes while a response and its data are on the wire: both flush, then the
/// buffer goes back.
#[test]
fn a_peer_vanishing_mid_transfer_leaks_nothing() {
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Read, cid, 0, 256, keyed(0x1000, 131072, 0)), &[]);
    h.complete_backend(&mut q, 131072);
    assert_eq!(h.sends.len(), 2, "WRITE and SEND posted");
    let mut io = h.io();
    q.close("DISCONNECTED", &mut io);
    assert_eq!(h.pool.outstanding(), 1, "still the HCA's");
    h.flush_all(&mut q);
    assert!(q.idle());
    let mut io = h.io();
    q.release(&mut io);
    assert_eq!(h.pool.outstanding(), 0);
}

#[test]
fn an_empty_pool_holds_the_capsule_until_a_buffer_comes_back() {
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    // Take every buffer of the pool.
    let mut held = Vec::new();
    while let Some(b) = h.pool.get(4096) {
        held.push(b);
    }
    let cid = h.cid();
    h.send(&mut q, &rw(IoOpcode::Write, cid, 0, 8, SglDescriptor::in_capsule(0, 4096)), &[1u8; 4096]);
    assert_eq!(h.recvs.len(), 31, "the receive buffer holds the data until it is copied");
    assert!(h.ops.is_empty());
    for b in held.drain(..) {
        h.pool.put(b);
    }
    let mut io = h.io();
    q.poll(&mut io);
    h.collect(&mut q);
    assert_eq!(h.recvs.len(), 32);
    h.complete_backend(&mut q, 4096);
    assert_eq!(h.response(&mut q).0.status, Status::SUCCESS);
}

#[test]
fn disconnect_closes_after_its_response() {
    let mut h = Host::new();
    let (_admin, mut q) = h.io_queue();
    let sqe = with_null_sgl(crate::nvme::sqe::Disconnect { recfmt: 0 }.to_sqe(h.cid()));
    h.send(&mut q, &sqe, &[]);
    assert!(!q.wants_close(), "the response goes first");
    assert_eq!(h.response(&mut q).0.status, Status::SUCCESS);
    assert!(q.wants_close());
}

mod slots {
    use super::super::SlotState as S;

    const ALL: [S; 6] = [S::Free, S::WaitBuffer, S::Reading, S::Executing, S::AwaitEvent, S::Responding];

    /// The slot's whole transition table, row by row.
    #[test]
    fn transition_table() {
        let rows: [(S, &[S]); 6] = [
            (S::Free, &[S::WaitBuffer, S::Reading, S::Executing, S::Responding]),
            (S::WaitBuffer, &[S::Reading, S::Executing]),
            (S::Reading, &[S::Executing, S::Responding]),
            (S::Executing, &[S::AwaitEvent, S::Responding]),
            (S::AwaitEvent, &[S::Responding, S::Free]),
            (S::Responding, &[S::Free]),
        ];
        for (from, allowed) in rows {
            for to in ALL {
                assert_eq!(from.may_become(to), allowed.contains(&to), "{from:?} -> {to:?}");
            }
        }
    }
}
