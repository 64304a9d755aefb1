//! Read data sent in slices (`c2h_slice_bytes`): while a queue's reads wait on a slow backend,
//! each send carries at most one slice, cut anywhere (inside a PDU header, its data or its
//! digest). Here slicing is forced (`slow_read_us` = 0, a slice of 5000 bytes, which divides
//! nothing) and deep queues of reads of many sizes must come back whole, in place and with
//! their CIDs, under every framing a host may ask for: digests, data alignment (HPDA), and
//! the C2HData SUCCESS flag instead of a CapsuleResp. Run in the test's process
//! (`common::inproc`) and driven over loopback by the host library.

mod common;

use std::collections::HashMap;

use common::inproc::{InProc, mem_namespace, subsystem};
use fabriq_bench::host::{Command, Connection, HostOptions};
use fabriq_bench::pattern;

const NQN: &str = "nqn.2026-11.dev.fabriq:sliced";
const BLOCK: usize = 512;
/// The namespace: 8 MiB of 512-byte blocks.
const BLOCKS: u64 = 16384;

fn pattern_of(slba: u64, nlb: u32, seed: u64) -> Vec<u8> {
    let mut buf = vec![0u8; nlb as usize * BLOCK];
    pattern::fill(&mut buf, BLOCK, slba, seed);
    buf
}

/// A controller of `NQN` with one I/O queue of depth 64, connected with `opts`.
fn connect(t: &InProc, opts: &HostOptions) -> (Connection, Connection) {
    let mut admin = Connection::open(t.addr, opts).unwrap();
    let cntlid = admin.connect_admin(NQN, 0, 31).unwrap();
    admin.enable().unwrap();
    let mut io = Connection::open(t.addr, opts).unwrap();
    io.connect_io(NQN, cntlid, 1, 63).unwrap();
    io.set_queue_depth(64);
    (admin, io)
}

#[test]
fn reads_sent_in_slices_arrive_whole_under_every_framing() {
    let t = InProc::start_with(
        1,
        |limits| {
            limits.slow_read_us = 0;
            limits.c2h_slice_bytes = 5000;
        },
        |target, _| {
            let s = target.add_subsystem(subsystem(NQN, true, &[])).unwrap();
            s.add_namespace(mem_namespace(1, BLOCKS * BLOCK as u64, 1)).unwrap();
        },
    );
    let seed = 0x51_1ce;
    {
        let (_admin, mut io) = connect(&t, &HostOptions::default());
        for chunk in 0..BLOCKS / 256 {
            let slba = chunk * 256;
            let c = io.execute(Command::write(1, slba, 256, pattern_of(slba, 256, seed), false)).unwrap();
            assert!(c.is_success(), "write at {slba}: {:?}", c.cqe);
        }
    }
    // Sizes from one block to 256 (128 KiB), none a multiple of the slice.
    let sizes = [1u32, 7, 8, 9, 31, 64, 100, 255, 256];
    let framings = [
        (false, false, 0, false),
        (true, true, 0, false),
        (false, true, 3, true),
        (true, false, 7, true),
        (true, true, 31, true),
    ];
    for (header_digest, data_digest, hpda, disable_sq_flow_control) in framings {
        let opts = HostOptions { header_digest, data_digest, hpda, disable_sq_flow_control, ..HostOptions::default() };
        let framing =
            format!("digests {header_digest}/{data_digest}, HPDA {hpda}, SUCCESS flag {disable_sq_flow_control}");
        let (_admin, mut io) = connect(&t, &opts);
        // Rounds of 48 reads at once: each round's C2HData burst is many slices long.
        let mut next = 0u64;
        for round in 0..6 {
            let mut expected = HashMap::new();
            for i in 0..48 {
                let nlb = sizes[(round * 48 + i) % sizes.len()];
                let slba = next % (BLOCKS - u64::from(nlb));
                next = next.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 17;
                let cid = io.submit(Command::read(1, slba, nlb, nlb as usize * BLOCK)).unwrap();
                expected.insert(cid, (slba, nlb));
            }
            while !expected.is_empty() {
                let c = io.wait_any().unwrap();
                let (slba, nlb) =
                    expected.remove(&c.cqe.cid).unwrap_or_else(|| panic!("{framing}: unknown CID {}", c.cqe.cid));
                assert!(c.is_success(), "{framing}: read of {nlb} blocks at {slba}: {:?}", c.cqe);
                assert!(c.data == pattern_of(slba, nlb, seed), "{framing}: data of {nlb} blocks at {slba}");
            }
        }
        assert_eq!(io.outstanding(), 0);
    }
}
