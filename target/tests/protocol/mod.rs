//! Shared by the NVMe/TCP transport tests (`transport.rs`, `malformed.rs`, `digests.rs`,
//! `connections.rs`): a host association already up on a running daemon, the check that a
//! C2HTermReq says exactly what it must and that the target then closes the socket, the
//! proof that the daemon still serves after an error, and a pipelined workload whose every
//! block is verified with `fabriq_bench::pattern`.
//!
//! Invariants: every wait is bounded by the host library's I/O time-out (a target that does
//! not answer or does not close fails the test, it never hangs it); every byte written is
//! read back and checked against the pattern of the run that wrote it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;

use fabriq_bench::host::{Command, Connection, HostError, HostOptions, icd_limit_from_ioccsz};
use fabriq_bench::pattern;
use fabriq_target::nvme::Status;
use fabriq_target::tcp::pdu::{Fes, Pdu, PduType};

use crate::common::NQN;

/// Block size of the namespace `Target::simple` exports.
pub const BLOCK: usize = 512;
/// Its NSID.
pub const NSID: u32 = 1;
/// Blocks in its 64 MiB.
pub const NS_BLOCKS: u64 = 64 << 20 >> 9;
/// I/O queues each association asks for (the daemon's default limit).
pub const IO_QUEUES: u16 = 8;
/// SQSIZE (0's based) of the admin queue, as Linux asks.
pub const ADMIN_SQSIZE: u16 = 31;

/// The `[[subsystem]]` table of `Target::simple`, for tests that start the daemon with their
/// own `[target]` settings.
pub fn simple_subsystem() -> String {
    format!(
        "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"64MiB\"\n  block_size = 512\n"
    )
}

/// One host association: an enabled controller on its admin queue, ready to open I/O queues.
pub struct Host {
    pub admin: Connection,
    pub cntlid: u16,
    /// In-capsule data an I/O queue takes (from IOCCSZ).
    pub icd_limit: u32,
    pub opts: HostOptions,
    pub addr: SocketAddr,
    next_qid: u16,
}

impl Host {
    /// Connects the admin queue, enables the controller, asks for [`IO_QUEUES`] I/O queues.
    pub fn connect(addr: SocketAddr, opts: HostOptions) -> Host {
        let mut admin = Connection::open(addr, &opts).unwrap();
        let cntlid = admin.connect_admin(NQN, 0, ADMIN_SQSIZE).unwrap();
        admin.enable().unwrap();
        let granted = admin.set_number_of_queues(u32::from(IO_QUEUES)).unwrap();
        assert!(granted.sq_count >= u32::from(IO_QUEUES), "granted {granted:?}");
        let ctrl = admin.identify_controller().unwrap();
        Host { admin, cntlid, icd_limit: icd_limit_from_ioccsz(ctrl.ioccsz), opts, addr, next_qid: 1 }
    }

    /// Opens the next I/O queue with `sqsize` (0's based) and the host's options.
    pub fn io_queue(&mut self, sqsize: u16) -> Connection {
        let opts = self.opts.clone();
        self.io_queue_with(&opts, sqsize)
    }

    /// Opens the next I/O queue with other connection options (same host identity).
    pub fn io_queue_with(&mut self, opts: &HostOptions, sqsize: u16) -> Connection {
        assert!(self.next_qid <= IO_QUEUES, "the test uses more than {IO_QUEUES} I/O queues");
        assert_eq!((&opts.hostnqn, opts.hostid), (&self.opts.hostnqn, self.opts.hostid), "another host");
        let qid = self.next_qid;
        self.next_qid += 1;
        let mut io = Connection::open(self.addr, opts).unwrap();
        io.connect_io(NQN, self.cntlid, qid, sqsize).unwrap();
        io.set_icd_limit(self.icd_limit);
        io
    }

    /// The daemon still serves this host: its admin queue answers, and a new I/O queue of the
    /// same controller writes and reads back. Then a brand-new host does the same.
    pub fn still_serves(&mut self) {
        assert!(self.admin.keep_alive().unwrap().is_success());
        let mut io = self.io_queue(31);
        write_read_back(&mut io, 4000, 16, 0x5E17);
        write_read_back(&mut io, 4100, 32, 0x5E18);
        serves(self.addr);
    }
}

/// A brand-new host association on `addr` connects, opens an I/O queue, writes and reads back
/// (4 KiB in the capsule and 16 KiB by R2T: within the smallest MDTS the tests configure).
pub fn serves(addr: SocketAddr) {
    let mut host = Host::connect(addr, HostOptions::default());
    let mut io = host.io_queue(31);
    write_read_back(&mut io, 6000, 8, 0xF2E5);
    write_read_back(&mut io, 6100, 32, 0xF2E6);
}

/// Writes the pattern of `seed` to `nlb` blocks at `slba` and reads it back.
pub fn write_read_back(io: &mut Connection, slba: u64, nlb: u32, seed: u64) {
    let data = pattern_of(slba, nlb, seed);
    let done = io.write(NSID, slba, nlb, &data, false).unwrap();
    assert!(done.is_success(), "write at {slba}: {:?}", done.status());
    assert_pattern(io, slba, nlb, seed);
}

/// Reads `nlb` blocks at `slba` and checks they hold the pattern of `seed`.
pub fn assert_pattern(io: &mut Connection, slba: u64, nlb: u32, seed: u64) {
    let mut back = vec![0; nlb as usize * BLOCK];
    let done = io.read(NSID, slba, nlb, &mut back).unwrap();
    assert!(done.is_success(), "read at {slba}: {:?}", done.status());
    pattern::check(&back, BLOCK, slba, seed).unwrap();
}

/// `nlb` blocks of the pattern of `seed` at `slba`.
pub fn pattern_of(slba: u64, nlb: u32, seed: u64) -> Vec<u8> {
    let mut data = vec![0; nlb as usize * BLOCK];
    pattern::fill(&mut data, BLOCK, slba, seed);
    data
}

/// The next PDU is a C2HTermReq with `fes` and `fei` whose data is exactly `quote` (the
/// offending header, or its common header when that is what failed), and then the target
/// closes the connection.
pub fn expect_term_req(conn: &mut Connection, fes: Fes, fei: u32, quote: &[u8]) {
    let received = conn.recv_pdu().expect("a C2HTermReq");
    assert_eq!(received.pdu_type(), PduType::C2hTermReq, "{:?}", received.pdu);
    let Pdu::TermReq(term) = received.pdu else { unreachable!("a TermReq decodes as one") };
    assert_eq!((term.fes, term.fei), (fes, fei), "FES and FEI of {term:?}");
    assert_eq!(term.data.as_slice(), quote, "the C2HTermReq quotes the offending header");
    expect_closed(conn);
}

/// The target closes the connection: end of stream (or a reset, when the target closed with
/// bytes of ours still unread) before the time-out, and no PDU before it.
pub fn expect_closed(conn: &mut Connection) {
    match conn.recv_pdu() {
        Err(HostError::Closed) => {}
        Err(HostError::Io(e)) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the target to close the connection, got {other:?}"),
    }
}

/// What one pipelined command does to the blocks it names.
#[derive(Debug, Clone, Copy)]
enum Op {
    Write { slba: u64, nlb: u32, seed: u64 },
    Read { slba: u64, nlb: u32 },
}

/// [`pipelined_io`] with writes and reads of 1 to 256 blocks: in the capsule up to the
/// default in-capsule limit (16 blocks), by R2T above it.
pub fn pipelined_mixed_io(io: &mut Connection, base: u64, regions: u64, depth: usize, count: usize) {
    pipelined_io(io, base, regions, depth, count, &[1, 8, 16, 17, 33, 64, 255, 256]);
}

/// Runs `count` commands on `io` with `depth` of them outstanding at once: writes and reads
/// of the block counts in `sizes`, in turn, in `regions` regions of 256 blocks from `base`
/// (each region first written whole, in commands of the largest size), no two commands in
/// flight on the same region, completions taken in whatever order they come. Every read is
/// checked block by block against the run that last wrote each block.
pub fn pipelined_io(io: &mut Connection, base: u64, regions: u64, depth: usize, count: usize, sizes: &[u32]) {
    const REGION_BLOCKS: u32 = 256;
    assert!(depth as u64 <= regions, "each command in flight needs its own region");
    let mut seeds = vec![0u64; (regions * u64::from(REGION_BLOCKS)) as usize];
    let mut busy = vec![false; regions as usize];
    let mut in_flight: HashMap<u16, Op> = HashMap::new();
    let largest = *sizes.iter().max().expect("sizes");
    assert!(REGION_BLOCKS.is_multiple_of(largest), "regions are written whole in commands of {largest} blocks");
    // First every region is written whole, then the mix runs over it.
    let mut planned = Vec::new();
    for r in 0..regions {
        for chunk in 0..REGION_BLOCKS / largest {
            let slba = base + r * u64::from(REGION_BLOCKS) + u64::from(chunk * largest);
            planned.push(Op::Write { slba, nlb: largest, seed: 1000 + r });
        }
    }
    let initial = planned.len();
    for i in 0..count {
        let nlb = sizes[i % sizes.len()];
        let offset = (i as u64 * 37) % u64::from(REGION_BLOCKS - nlb + 1);
        let region = i as u64 % regions;
        let slba = base + region * u64::from(REGION_BLOCKS) + offset;
        planned.push(if i % 2 == 0 { Op::Write { slba, nlb, seed: 5000 + i as u64 } } else { Op::Read { slba, nlb } });
    }
    let region_of = |slba: u64| ((slba - base) / u64::from(REGION_BLOCKS)) as usize;
    let mut pending = planned.into_iter().peekable();
    let mut completed = 0;
    let total = initial + count;
    while completed < total {
        // Submit while there is room and the next command's region is free.
        while in_flight.len() < depth {
            let Some(op) = pending.peek().copied() else { break };
            let slba = match op {
                Op::Write { slba, .. } | Op::Read { slba, .. } => slba,
            };
            if busy[region_of(slba)] {
                break;
            }
            pending.next();
            busy[region_of(slba)] = true;
            let command = match op {
                Op::Write { slba, nlb, seed } => Command::write(NSID, slba, nlb, pattern_of(slba, nlb, seed), false),
                Op::Read { slba, nlb } => Command::read(NSID, slba, nlb, nlb as usize * BLOCK),
            };
            let cid = io.submit(command).unwrap();
            in_flight.insert(cid, op);
        }
        let done = io.wait_any().unwrap();
        let op = in_flight.remove(&done.cqe.cid).expect("a completion for a command in flight");
        assert!(done.is_success(), "{op:?}: {:?}", done.status());
        match op {
            Op::Write { slba, nlb, seed } => {
                busy[region_of(slba)] = false;
                for lba in slba..slba + u64::from(nlb) {
                    seeds[(lba - base) as usize] = seed;
                }
            }
            Op::Read { slba, nlb } => {
                busy[region_of(slba)] = false;
                assert_eq!(done.data.len(), nlb as usize * BLOCK);
                for (i, block) in done.data.chunks_exact(BLOCK).enumerate() {
                    let lba = slba + i as u64;
                    pattern::check(block, BLOCK, lba, seeds[(lba - base) as usize]).unwrap();
                }
            }
        }
        completed += 1;
    }
}

/// Asserts `status` is `expected` (SCT and SC; flags ignored).
pub fn assert_status(status: Status, expected: Status) {
    assert_eq!(status.code(), expected.code(), "status {status:?}, expected {expected:?}");
}
