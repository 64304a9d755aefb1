//! Read data sent in slices (`c2h_slice_bytes`): while a queue's reads wait on a slow backend,
//! each send carries at most one slice, cut anywhere (inside a PDU header, its data or its
//! digest). Here slicing is forced (`slow_read_us` = 0, a slice of 5000 bytes, which divides
//! nothing) and deep queues of reads of many sizes must come back whole, in place and with
//! their CIDs, under every framing a host may ask for: digests, data alignment (HPDA), and
//! the C2HData SUCCESS flag instead of a CapsuleResp. With slicing off, a turn's sends of
//! read data are large and go to the kernel after the backend reads the same turn queued
//! (the reactor's `send_late`): deep queues of large reads must come back whole too. Run in
//! the test's process (`common::inproc`) and driven over loopback by the host library.

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

/// A target with one reactor and `NQN`'s namespace 1 in memory, its limits set by `limits`.
fn target(limits: impl FnOnce(&mut fabriq_target::subsys::Limits)) -> InProc {
    InProc::start_with(1, limits, |target, _| {
        let s = target.add_subsystem(subsystem(NQN, true, &[])).unwrap();
        s.add_namespace(mem_namespace(1, BLOCKS * BLOCK as u64, 1)).unwrap();
    })
}

/// Writes the whole namespace with the pattern of `seed`.
fn fill(t: &InProc, seed: u64) {
    let (_admin, mut io) = connect(t, &HostOptions::default());
    for chunk in 0..BLOCKS / 256 {
        let slba = chunk * 256;
        let c = io.execute(Command::write(1, slba, 256, pattern_of(slba, 256, seed), false)).unwrap();
        assert!(c.is_success(), "write at {slba}: {:?}", c.cqe);
    }
}

/// Rounds of `depth` reads at once, sizes taken in turn from `sizes`, at pseudo-random
/// places: every one must come back successful with the pattern of `seed`.
fn read_rounds(io: &mut Connection, what: &str, sizes: &[u32], depth: usize, seed: u64) {
    let mut next = 0u64;
    for round in 0..6 {
        let mut expected = HashMap::new();
        for i in 0..depth {
            let nlb = sizes[(round * depth + i) % sizes.len()];
            let slba = next % (BLOCKS - u64::from(nlb));
            next = next.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 17;
            let cid = io.submit(Command::read(1, slba, nlb, nlb as usize * BLOCK)).unwrap();
            expected.insert(cid, (slba, nlb));
        }
        while !expected.is_empty() {
            let c = io.wait_any().unwrap();
            let (slba, nlb) =
                expected.remove(&c.cqe.cid).unwrap_or_else(|| panic!("{what}: unknown CID {}", c.cqe.cid));
            assert!(c.is_success(), "{what}: read of {nlb} blocks at {slba}: {:?}", c.cqe);
            assert!(c.data == pattern_of(slba, nlb, seed), "{what}: data of {nlb} blocks at {slba}");
        }
    }
    assert_eq!(io.outstanding(), 0);
}

#[test]
fn reads_sent_in_slices_arrive_whole_under_every_framing() {
    let t = target(|limits| {
        limits.slow_read_us = 0;
        limits.c2h_slice_bytes = 5000;
    });
    let seed = 0x51_1ce;
    fill(&t, seed);
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
        read_rounds(&mut io, &framing, &sizes, 48, seed);
    }
}

#[test]
fn large_sends_queued_after_the_turns_reads_arrive_whole() {
    let t = target(|limits| limits.c2h_slice_bytes = 0);
    let seed = 0x1a_7e;
    fill(&t, seed);
    // 64 KiB to 128 KiB each: a turn that completes one read sends at least LARGE_SEND, and
    // with 48 at once the host's next commands keep arriving while data goes out.
    let sizes = [256u32, 129, 200, 128, 255];
    for (header_digest, data_digest) in [(false, false), (true, true)] {
        let opts = HostOptions { header_digest, data_digest, ..HostOptions::default() };
        let (_admin, mut io) = connect(&t, &opts);
        read_rounds(&mut io, &format!("digests {header_digest}/{data_digest}"), &sizes, 48, seed);
    }
}
