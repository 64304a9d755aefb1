//! NVM command set I/O against the real daemon over loopback: Read and Write from one block
//! to MDTS (in-capsule and by R2T, one at a time and pipelined), Compare, Flush (one namespace
//! and the broadcast NSID), Write Zeroes (with and without DEAC), Dataset Management
//! (deallocate), FUA writes; the statuses of commands beyond MDTS, out of range (overflow
//! included), on invalid namespaces and with unknown opcodes; 4096-byte blocks, the `null`
//! backend, a `file` backend across a SIGTERM and restart, and injected backend faults
//! (`[[subsystem.namespace.fault]]`) with their error log and SMART records. After each
//! failure the queue is shown to still work.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{NQN, Target};
use fabriq_bench::host::{Command, Completion, Connection, HostOptions, Placement};
use fabriq_bench::pattern;
use fabriq_target::nvme::log::{ErrorInformationEntry, SmartLog, lid};
use fabriq_target::nvme::{DatasetManagement, DsmRange, IoOpcode, Sqe, Status};

const BROADCAST: u32 = 0xFFFF_FFFF;
/// The default MDTS and in-capsule data limit.
const MDTS: usize = 128 * 1024;
const ICD: u32 = 8192;

/// A `[[subsystem]]` named `NQN` open to any host with these `[[subsystem.namespace]]` bodies.
fn subsystem(namespaces: &[&str]) -> String {
    let mut s = format!("[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n");
    for ns in namespaces {
        s.push_str("  [[subsystem.namespace]]\n");
        s.push_str(ns);
        s.push('\n');
    }
    s
}

/// An enabled controller with one I/O queue (in-capsule data up to 8 KiB). The admin queue
/// must stay alive for the I/O queue to.
fn associate(addr: SocketAddr) -> (Connection, Connection) {
    let opts = HostOptions::default();
    let mut admin = Connection::open(addr, &opts).unwrap();
    let cntlid = admin.connect_admin(NQN, 0, 31).unwrap();
    admin.enable().unwrap();
    let mut io = Connection::open(addr, &opts).unwrap();
    io.connect_io(NQN, cntlid, 1, 63).unwrap();
    io.set_icd_limit(ICD);
    (admin, io)
}

fn pattern_of(bs: usize, slba: u64, nlb: u32, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; nlb as usize * bs];
    pattern::fill(&mut data, bs, slba, seed);
    data
}

fn assert_status(c: &Completion, want: Status, what: &str) {
    assert_eq!(c.status(), want, "{what}: {:?}", c.cqe);
}

fn write_ok(io: &mut Connection, nsid: u32, slba: u64, data: &[u8], bs: usize) {
    let nlb = (data.len() / bs) as u32;
    assert_status(
        &io.write(nsid, slba, nlb, data, false).unwrap(),
        Status::SUCCESS,
        &format!("write {nlb} blocks at {slba}"),
    );
}

fn read_ok(io: &mut Connection, nsid: u32, slba: u64, nlb: u32, bs: usize) -> Vec<u8> {
    let mut buf = vec![0u8; nlb as usize * bs];
    assert_status(
        &io.read(nsid, slba, nlb, &mut buf).unwrap(),
        Status::SUCCESS,
        &format!("read {nlb} blocks at {slba}"),
    );
    buf
}

fn check_pattern(io: &mut Connection, nsid: u32, slba: u64, nlb: u32, bs: usize, seed: u64) {
    let back = read_ok(io, nsid, slba, nlb, bs);
    pattern::check(&back, bs, slba, seed).unwrap_or_else(|m| panic!("{nlb} blocks at {slba}: {m:?}"));
}

fn check_zeroes(io: &mut Connection, nsid: u32, slba: u64, nlb: u32, bs: usize) {
    let back = read_ok(io, nsid, slba, nlb, bs);
    assert!(back.iter().all(|&b| b == 0), "{nlb} blocks at {slba} are not zeroes");
}

/// One 64 MiB `mem` namespace of 512-byte blocks (131072 blocks).
fn mem512() -> Target {
    Target::start("", &subsystem(&["  nsid = 1\n  backend = \"mem\"\n  size = \"64MiB\"\n  block_size = 512"]))
}
const MEM512_BLOCKS: u64 = (64 << 20) / 512;

#[test]
fn read_and_write_from_one_block_to_mdts_in_capsule_and_by_r2t() {
    let target = mem512();
    let (_admin, mut io) = associate(target.addr);
    let mut slba = 0u64;
    for nlb in [1u32, 2, 15, 16, 17, 64, 255, 256] {
        let len = nlb as usize * 512;
        // Auto placement: in the capsule up to 8 KiB, by R2T above.
        let data = pattern_of(512, slba, nlb, 1);
        write_ok(&mut io, 1, slba, &data, 512);
        check_pattern(&mut io, 1, slba, nlb, 512, 1);
        slba += u64::from(nlb);
        // The same size forced through R2T.
        let data = pattern_of(512, slba, nlb, 2);
        let c = io.execute(Command::write(1, slba, nlb, data, false).placed(Placement::R2t)).unwrap();
        assert_status(&c, Status::SUCCESS, &format!("{len}-byte write by R2T"));
        check_pattern(&mut io, 1, slba, nlb, 512, 2);
        slba += u64::from(nlb);
    }
    assert_eq!(256 * 512, MDTS);
    // The last block of the namespace.
    let data = pattern_of(512, MEM512_BLOCKS - 1, 1, 3);
    write_ok(&mut io, 1, MEM512_BLOCKS - 1, &data, 512);
    check_pattern(&mut io, 1, MEM512_BLOCKS - 1, 1, 512, 3);
}

#[test]
fn pipelined_reads_and_writes_complete_with_their_own_data() {
    let target = mem512();
    let (_admin, mut io) = associate(target.addr);
    // 48 writes in flight at once: small ones in the capsule, large ones by R2T.
    let sizes = [1u32, 16, 17, 256, 8, 100];
    let mut writes = Vec::new();
    for i in 0..48u64 {
        let nlb = sizes[i as usize % sizes.len()];
        let slba = i * 256;
        let cid = io.submit(Command::write(1, slba, nlb, pattern_of(512, slba, nlb, 4), false)).unwrap();
        writes.push((cid, slba, nlb));
    }
    for _ in 0..writes.len() {
        assert!(io.wait_any().unwrap().is_success());
    }
    let mut reads = BTreeMap::new();
    for &(_, slba, nlb) in &writes {
        let cid = io.submit(Command::read(1, slba, nlb, nlb as usize * 512)).unwrap();
        reads.insert(cid, (slba, nlb));
    }
    for _ in 0..reads.len() {
        let c = io.wait_any().unwrap();
        assert_status(&c, Status::SUCCESS, "pipelined read");
        let (slba, _) = reads[&c.cqe.cid];
        pattern::check(&c.data, 512, slba, 4).unwrap();
    }
}

#[test]
fn transfers_beyond_mdts_are_invalid_field() {
    let target = mem512();
    let (_admin, mut io) = associate(target.addr);
    let invalid = Status::INVALID_FIELD.with_dnr();
    let over = 257u32;
    let c = io.execute(Command::read(1, 0, over, over as usize * 512)).unwrap();
    assert_status(&c, invalid, "read of MDTS + 1 block");
    let c = io.execute(Command::write(1, 0, over, vec![7; over as usize * 512], false)).unwrap();
    assert_status(&c, invalid, "write of MDTS + 1 block");
    let c = io.execute(Command::compare(1, 0, over, vec![0; over as usize * 512])).unwrap();
    assert_status(&c, invalid, "compare of MDTS + 1 block");
    let c = io.execute(Command::read(1, 0, 65536, 65536 * 512)).unwrap();
    assert_status(&c, invalid, "read of 65536 blocks");
    // Nothing was written, and the queue works.
    check_zeroes(&mut io, 1, 0, 256, 512);
    let data = pattern_of(512, 0, 256, 5);
    write_ok(&mut io, 1, 0, &data, 512);
    check_pattern(&mut io, 1, 0, 256, 512, 5);
}

#[test]
fn lba_out_of_range_including_overflow() {
    let target = mem512();
    let (_admin, mut io) = associate(target.addr);
    let out = Status::LBA_OUT_OF_RANGE.with_dnr();
    let end = MEM512_BLOCKS;
    for (slba, nlb) in [(end, 1u32), (end - 1, 2), (end - 16, 17), (u64::MAX, 1), (u64::MAX - 1, 4), (1 << 63, 8)] {
        let len = nlb as usize * 512;
        let what = format!("{nlb} blocks at {slba:#x}");
        assert_status(&io.execute(Command::read(1, slba, nlb, len)).unwrap(), out, &format!("read {what}"));
        // In the capsule (the target drops the data) and by R2T (the target never asks for it).
        assert_status(
            &io.execute(Command::write(1, slba, nlb, vec![9; len], false)).unwrap(),
            out,
            &format!("write {what}"),
        );
        let by_r2t = Command::write(1, slba, nlb, vec![9; len], false).placed(Placement::R2t);
        assert_status(&io.execute(by_r2t).unwrap(), out, &format!("write by R2T {what}"));
        assert_status(
            &io.execute(Command::compare(1, slba, nlb, vec![0; len])).unwrap(),
            out,
            &format!("compare {what}"),
        );
        assert_status(&io.write_zeroes(1, slba, nlb, false).unwrap(), out, &format!("write zeroes {what}"));
    }
    // The last blocks are in range and were not touched.
    check_zeroes(&mut io, 1, end - 16, 16, 512);
    let data = pattern_of(512, end - 16, 16, 6);
    write_ok(&mut io, 1, end - 16, &data, 512);
    check_pattern(&mut io, 1, end - 16, 16, 512, 6);
}

#[test]
fn invalid_namespaces_are_invalid_namespace_or_format() {
    let target = Target::start(
        "",
        &subsystem(&[
            "  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n  block_size = 512",
            "  nsid = 3\n  backend = \"mem\"\n  size = \"1MiB\"\n  block_size = 512",
        ]),
    );
    let (_admin, mut io) = associate(target.addr);
    let invalid = Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr();
    for nsid in [0, 2, 4, 0xFFFF_FFFE, BROADCAST] {
        let what = format!("NSID {nsid:#x}");
        assert_status(&io.execute(Command::read(nsid, 0, 1, 512)).unwrap(), invalid, &format!("read {what}"));
        assert_status(
            &io.execute(Command::write(nsid, 0, 1, vec![1; 512], false)).unwrap(),
            invalid,
            &format!("write {what}"),
        );
        assert_status(&io.write_zeroes(nsid, 0, 1, false).unwrap(), invalid, &format!("write zeroes {what}"));
        assert_status(&io.dsm_deallocate(nsid, &[(0, 1)]).unwrap(), invalid, &format!("DSM {what}"));
        assert_status(&io.compare(nsid, 0, 1, &[0; 512]).unwrap(), invalid, &format!("compare {what}"));
    }
    for nsid in [0, 2] {
        assert_status(&io.flush(nsid).unwrap(), invalid, &format!("flush NSID {nsid}"));
    }
    let data = pattern_of(512, 0, 1, 7);
    write_ok(&mut io, 3, 0, &data, 512);
    check_pattern(&mut io, 3, 0, 1, 512, 7);
}

#[test]
fn unknown_and_unsupported_opcodes_are_invalid_opcode() {
    let target = mem512();
    let (_admin, mut io) = associate(target.addr);
    let opcodes = [
        0x7E,
        IoOpcode::WriteUncorrectable.into(),
        IoOpcode::Verify.into(),
        IoOpcode::ReservationReport.into(),
        IoOpcode::Copy.into(),
        IoOpcode::ZoneAppend.into(),
        0x06,
        0xFF,
    ];
    for opcode in opcodes {
        let c = io.execute(Command::new(Sqe { nsid: 1, ..Sqe::new(opcode, 0) })).unwrap();
        assert_status(&c, Status::INVALID_OPCODE.with_dnr(), &format!("opcode {opcode:#04x}"));
    }
    let data = pattern_of(512, 0, 1, 8);
    write_ok(&mut io, 1, 0, &data, 512);
    check_pattern(&mut io, 1, 0, 1, 512, 8);
}

#[test]
fn flush_one_namespace_and_every_namespace() {
    let target = Target::start(
        "",
        &subsystem(&[
            "  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n  block_size = 512",
            "  nsid = 2\n  backend = \"null\"\n  size = \"1MiB\"",
        ]),
    );
    let (_admin, mut io) = associate(target.addr);
    let data = pattern_of(512, 0, 8, 9);
    write_ok(&mut io, 1, 0, &data, 512);
    assert_status(&io.flush(1).unwrap(), Status::SUCCESS, "flush NSID 1");
    assert_status(&io.flush(2).unwrap(), Status::SUCCESS, "flush NSID 2 (null)");
    assert_status(&io.flush(BROADCAST).unwrap(), Status::SUCCESS, "flush every namespace");
    check_pattern(&mut io, 1, 0, 8, 512, 9);
}

#[test]
fn flush_of_every_namespace_in_a_subsystem_without_namespaces() {
    let target = Target::start("", &subsystem(&[]));
    let (mut admin, mut io) = associate(target.addr);
    assert_eq!(admin.active_namespaces(0).unwrap(), Vec::<u32>::new());
    assert_status(&io.flush(BROADCAST).unwrap(), Status::SUCCESS, "flush of no namespace at all");
    assert_status(&io.flush(1).unwrap(), Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr(), "flush NSID 1");
    let c = io.execute(Command::read(1, 0, 1, 512)).unwrap();
    assert_status(&c, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr(), "read NSID 1");
    assert_status(&io.flush(BROADCAST).unwrap(), Status::SUCCESS, "flush again");
    assert!(admin.keep_alive().unwrap().is_success());
}

#[test]
fn write_zeroes_zeroes_the_range_and_keeps_its_neighbours() {
    let target = mem512();
    let (_admin, mut io) = associate(target.addr);
    for (base, deallocate) in [(0u64, false), (4096, true)] {
        let data = pattern_of(512, base, 64, 10);
        write_ok(&mut io, 1, base, &data, 512);
        assert_status(&io.write_zeroes(1, base + 8, 8, deallocate).unwrap(), Status::SUCCESS, "write zeroes");
        check_pattern(&mut io, 1, base, 8, 512, 10);
        check_zeroes(&mut io, 1, base + 8, 8, 512);
        check_pattern(&mut io, 1, base + 16, 48, 512, 10);
        // A single block, the first of the range.
        assert_status(&io.write_zeroes(1, base, 1, deallocate).unwrap(), Status::SUCCESS, "write zeroes of one block");
        check_zeroes(&mut io, 1, base, 1, 512);
        check_pattern(&mut io, 1, base + 1, 7, 512, 10);
    }
    // Write Zeroes moves no data, so MDTS does not bound it: 2048 blocks (1 MiB).
    for slba in (8192..8192 + 2048 + 256).step_by(256) {
        write_ok(&mut io, 1, slba, &pattern_of(512, slba, 256, 11), 512);
    }
    assert_status(
        &io.write_zeroes(1, 8192 + 128, 2048, false).unwrap(),
        Status::SUCCESS,
        "write zeroes of 2048 blocks",
    );
    check_pattern(&mut io, 1, 8192, 128, 512, 11);
    for slba in (8192 + 128..8192 + 128 + 2048).step_by(256) {
        check_zeroes(&mut io, 1, slba, 256, 512);
    }
    check_pattern(&mut io, 1, 8192 + 128 + 2048, 128, 512, 11);
}

#[test]
fn dataset_management_deallocates_all_ranges_or_none() {
    let target = mem512();
    let (_admin, mut io) = associate(target.addr);
    let data = pattern_of(512, 0, 256, 12);
    write_ok(&mut io, 1, 0, &data, 512);
    // Two ranges and an empty one.
    let c = io.dsm_deallocate(1, &[(8, 8), (100, 20), (200, 0)]).unwrap();
    assert_status(&c, Status::SUCCESS, "deallocate");
    check_pattern(&mut io, 1, 0, 8, 512, 12);
    check_zeroes(&mut io, 1, 8, 8, 512);
    check_pattern(&mut io, 1, 16, 84, 512, 12);
    check_zeroes(&mut io, 1, 100, 20, 512);
    check_pattern(&mut io, 1, 120, 136, 512, 12);
    // One range out of bounds fails the command before anything is deallocated.
    let c = io.dsm_deallocate(1, &[(32, 8), (MEM512_BLOCKS - 4, 8), (64, 8)]).unwrap();
    assert_status(&c, Status::LBA_OUT_OF_RANGE.with_dnr(), "a range past the end");
    check_pattern(&mut io, 1, 32, 8, 512, 12);
    check_pattern(&mut io, 1, 64, 8, 512, 12);
    // Without the deallocate attribute the ranges are only hints: nothing changes.
    let hint = DatasetManagement { nr: 1, attr_deallocate: false, idr: true, idw: false };
    let mut range = vec![0u8; DsmRange::SIZE];
    DsmRange { context_attributes: 0, nlb: 8, slba: 128 }.encode(&mut range);
    let c = io.execute(Command::new(hint.to_sqe(0, 1)).with_data_out(range)).unwrap();
    assert_status(&c, Status::SUCCESS, "DSM with hints only");
    check_pattern(&mut io, 1, 128, 8, 512, 12);
    // The range list sent by R2T rather than in the capsule.
    let c = io.execute(Command::dsm_deallocate(1, &[(200, 4)]).placed(Placement::R2t)).unwrap();
    assert_status(&c, Status::SUCCESS, "deallocate, ranges by R2T");
    check_pattern(&mut io, 1, 196, 4, 512, 12);
    check_zeroes(&mut io, 1, 200, 4, 512);
    check_pattern(&mut io, 1, 204, 4, 512, 12);
    // 256 ranges, the most one command takes.
    let ranges: Vec<(u64, u32)> = (0..256).map(|i| (1024 + 2 * i, 1)).collect();
    write_ok(&mut io, 1, 1024, &pattern_of(512, 1024, 256, 13), 512);
    write_ok(&mut io, 1, 1280, &pattern_of(512, 1280, 256, 13), 512);
    assert_status(&io.dsm_deallocate(1, &ranges).unwrap(), Status::SUCCESS, "256 ranges");
    let back = read_ok(&mut io, 1, 1024, 256, 512);
    let mut want = pattern_of(512, 1024, 256, 13);
    for block in want.chunks_exact_mut(1024) {
        block[..512].fill(0);
    }
    assert!(back == want, "every other block deallocated");
}

#[test]
fn compare_matches_and_mismatches() {
    let target = mem512();
    let (_admin, mut io) = associate(target.addr);
    let data = pattern_of(512, 40, 64, 14);
    write_ok(&mut io, 1, 40, &data, 512);
    assert_status(&io.compare(1, 40, 64, &data).unwrap(), Status::SUCCESS, "compare of the same data (by R2T)");
    assert_status(
        &io.compare(1, 40, 1, &data[..512]).unwrap(),
        Status::SUCCESS,
        "compare of one block (in the capsule)",
    );
    let mut last_byte = data.clone();
    *last_byte.last_mut().unwrap() ^= 1;
    assert_status(&io.compare(1, 40, 64, &last_byte).unwrap(), Status::COMPARE_FAILURE, "the last byte differs");
    let mut first_byte = data[..512].to_vec();
    first_byte[0] ^= 0x80;
    assert_status(&io.compare(1, 40, 1, &first_byte).unwrap(), Status::COMPARE_FAILURE, "the first byte differs");
    assert_status(&io.compare(1, 41, 1, &data[..512]).unwrap(), Status::COMPARE_FAILURE, "another block");
    // Never-written blocks compare equal to zeroes.
    assert_status(&io.compare(1, 1000, 8, &[0; 4096]).unwrap(), Status::SUCCESS, "zeroes");
    check_pattern(&mut io, 1, 40, 64, 512, 14);
}

#[test]
fn fua_writes_read_back() {
    let target = mem512();
    let (_admin, mut io) = associate(target.addr);
    for (slba, nlb) in [(0u64, 1u32), (10, 16), (100, 256)] {
        let data = pattern_of(512, slba, nlb, 15);
        assert_status(&io.write(1, slba, nlb, &data, true).unwrap(), Status::SUCCESS, "FUA write");
        check_pattern(&mut io, 1, slba, nlb, 512, 15);
    }
}

#[test]
fn namespace_of_4096_byte_blocks() {
    let target =
        Target::start("", &subsystem(&["  nsid = 1\n  backend = \"mem\"\n  size = \"16MiB\"\n  block_size = 4096"]));
    let (mut admin, mut io) = associate(target.addr);
    let blocks = (16u64 << 20) / 4096;
    let id = admin.identify_namespace(1).unwrap();
    assert_eq!((id.nsze, id.lbaf[0].lbads), (blocks, 12));
    let mut slba = 0;
    for nlb in [1u32, 2, 3, 31, 32] {
        let data = pattern_of(4096, slba, nlb, 16);
        write_ok(&mut io, 1, slba, &data, 4096);
        check_pattern(&mut io, 1, slba, nlb, 4096, 16);
        slba += u64::from(nlb);
    }
    let c = io.execute(Command::read(1, 0, 33, 33 * 4096)).unwrap();
    assert_status(&c, Status::INVALID_FIELD.with_dnr(), "33 blocks of 4 KiB, above MDTS");
    let c = io.execute(Command::read(1, blocks, 1, 4096)).unwrap();
    assert_status(&c, Status::LBA_OUT_OF_RANGE.with_dnr(), "read past the end");
    let c = io.execute(Command::write(1, blocks - 1, 2, vec![1; 8192], false)).unwrap();
    assert_status(&c, Status::LBA_OUT_OF_RANGE.with_dnr(), "write across the end");
    assert_status(&io.write_zeroes(1, 1, 1, false).unwrap(), Status::SUCCESS, "write zeroes");
    check_pattern(&mut io, 1, 0, 1, 4096, 16);
    check_zeroes(&mut io, 1, 1, 1, 4096);
    check_pattern(&mut io, 1, 2, 1, 4096, 16);
    let data = pattern_of(4096, blocks - 1, 1, 17);
    write_ok(&mut io, 1, blocks - 1, &data, 4096);
    check_pattern(&mut io, 1, blocks - 1, 1, 4096, 17);
}

#[test]
fn null_namespace_reads_zeroes_and_takes_writes() {
    let target =
        Target::start("", &subsystem(&["  nsid = 1\n  backend = \"null\"\n  size = \"1GiB\"\n  block_size = 512"]));
    let (mut admin, mut io) = associate(target.addr);
    assert_eq!(admin.identify_namespace(1).unwrap().nsze, (1 << 30) / 512);
    for (slba, nlb) in [(0u64, 1u32), (77, 16), (1000, 256), ((1 << 21) - 1, 1)] {
        let data = pattern_of(512, slba, nlb, 18);
        write_ok(&mut io, 1, slba, &data, 512);
        let c = io.execute(Command::write(1, slba, nlb, data, true).placed(Placement::R2t)).unwrap();
        assert_status(&c, Status::SUCCESS, "FUA write by R2T");
        check_zeroes(&mut io, 1, slba, nlb, 512);
    }
    assert_status(&io.compare(1, 0, 8, &[0; 4096]).unwrap(), Status::SUCCESS, "compare with zeroes");
    assert_status(&io.compare(1, 0, 8, &[1; 4096]).unwrap(), Status::COMPARE_FAILURE, "compare with ones");
    assert_status(&io.write_zeroes(1, 0, 8, true).unwrap(), Status::SUCCESS, "write zeroes");
    assert_status(&io.dsm_deallocate(1, &[(0, 8)]).unwrap(), Status::SUCCESS, "deallocate");
    assert_status(&io.flush(1).unwrap(), Status::SUCCESS, "flush");
    let c = io.execute(Command::read(1, 1 << 21, 1, 512)).unwrap();
    assert_status(&c, Status::LBA_OUT_OF_RANGE.with_dnr(), "read past the end");
}

#[test]
fn file_namespace_keeps_its_data_across_sigterm_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ns.img");
    let config = subsystem(&[&format!(
        "  nsid = 1\n  backend = \"file\"\n  path = \"{}\"\n  size = \"8MiB\"\n  block_size = 512",
        image.display()
    )]);
    let written = [(0u64, 1u32, 19u64), (1, 16, 20), (100, 256, 21), (16383, 1, 22)];
    {
        let mut target = Target::start("", &config);
        let (_admin, mut io) = associate(target.addr);
        for (slba, nlb, seed) in written {
            write_ok(&mut io, 1, slba, &pattern_of(512, slba, nlb, seed), 512);
        }
        // Zeroed and deallocated ranges over written data.
        write_ok(&mut io, 1, 2000, &pattern_of(512, 2000, 64, 23), 512);
        assert_status(&io.write_zeroes(1, 2008, 8, false).unwrap(), Status::SUCCESS, "write zeroes");
        assert_status(&io.dsm_deallocate(1, &[(2032, 8)]).unwrap(), Status::SUCCESS, "deallocate");
        check_zeroes(&mut io, 1, 2008, 8, 512);
        drop(io);
        target.stop(Duration::from_secs(10));
    }
    // The bytes are in the file where the blocks say.
    let on_disk = std::fs::read(&image).unwrap();
    assert_eq!(on_disk.len(), 8 << 20);
    pattern::check(&on_disk[100 * 512..356 * 512], 512, 100, 21).unwrap();
    let target = Target::start("", &config);
    let (_admin, mut io) = associate(target.addr);
    for (slba, nlb, seed) in written {
        check_pattern(&mut io, 1, slba, nlb, 512, seed);
    }
    check_pattern(&mut io, 1, 2000, 8, 512, 23);
    check_zeroes(&mut io, 1, 2008, 8, 512);
    check_pattern(&mut io, 1, 2016, 16, 512, 23);
    check_zeroes(&mut io, 1, 2032, 8, 512);
    check_pattern(&mut io, 1, 2040, 24, 512, 23);
}

#[test]
fn backend_faults_fail_reads_and_writes_in_their_range_only() {
    let target = Target::start(
        "",
        &subsystem(&["  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n  block_size = 512\n  \
         [[subsystem.namespace.fault]]\n  lba = 100\n  blocks = 8\n  writes = false\n  \
         [[subsystem.namespace.fault]]\n  lba = 200\n  blocks = 4\n  reads = false"]),
    );
    let (mut admin, mut io) = associate(target.addr);
    let read_error = Status::UNRECOVERED_READ_ERROR;
    let write_fault = Status::WRITE_FAULT;
    let mut failed: Vec<(Completion, u64)> = Vec::new();

    // Writes are fine around and in the read-fault range; reads touching it fail.
    write_ok(&mut io, 1, 90, &pattern_of(512, 90, 30, 24), 512);
    for (slba, nlb) in [(100u64, 8u32), (96, 8), (107, 1)] {
        let c = io.execute(Command::read(1, slba, nlb, nlb as usize * 512)).unwrap();
        assert_status(&c, read_error, &format!("read of {nlb} blocks at {slba}"));
        failed.push((c, slba));
    }
    let c = io.compare(1, 104, 1, &pattern_of(512, 104, 1, 24)).unwrap();
    assert_status(&c, read_error, "compare in the read-fault range");
    failed.push((c, 104));
    check_pattern(&mut io, 1, 90, 10, 512, 24);
    check_pattern(&mut io, 1, 108, 12, 512, 24);

    // Writes touching the write-fault range fail; reads there are fine.
    write_ok(&mut io, 1, 196, &pattern_of(512, 196, 4, 25), 512);
    write_ok(&mut io, 1, 204, &pattern_of(512, 204, 4, 25), 512);
    let c = io.write(1, 200, 4, &[0xEE; 2048], false).unwrap();
    assert_status(&c, write_fault, "write in the write-fault range");
    failed.push((c, 200));
    let c = io.execute(Command::write(1, 190, 64, vec![0xEE; 64 * 512], false)).unwrap();
    assert_status(&c, write_fault, "write by R2T across the write-fault range");
    failed.push((c, 190));
    let c = io.write_zeroes(1, 198, 4, false).unwrap();
    assert_status(&c, write_fault, "write zeroes across the write-fault range");
    failed.push((c, 198));
    let c = io.dsm_deallocate(1, &[(203, 1)]).unwrap();
    assert_status(&c, write_fault, "deallocate in the write-fault range");
    failed.push((c, 0));
    let _ = read_ok(&mut io, 1, 200, 4, 512);
    check_pattern(&mut io, 1, 196, 4, 512, 25);
    check_pattern(&mut io, 1, 204, 4, 512, 25);

    // The error log has them, newest first; SMART counts them as media errors.
    let page = admin.get_log_page(lid::ERROR_INFORMATION, 0, 0, 4096, false).unwrap().success().unwrap();
    let entries: Vec<_> = page.data.chunks_exact(64).map(|e| ErrorInformationEntry::decode(e).unwrap()).collect();
    for (entry, (c, lba)) in entries.iter().zip(failed.iter().rev()) {
        assert_eq!((entry.sqid, entry.cid, entry.status, entry.nsid, entry.lba), (1, c.cqe.cid, c.status(), 1, *lba));
    }
    assert_eq!(entries[0].error_count, failed.len() as u64);
    assert_eq!(entries[failed.len()].error_count, 0);
    let smart = admin.get_log_page(lid::SMART_HEALTH, 1, 0, SmartLog::SIZE, false).unwrap().success().unwrap();
    let smart = SmartLog::decode(&smart.data).unwrap();
    assert_eq!(smart.media_errors, failed.len() as u128);
    assert_eq!(smart.error_log_entries, failed.len() as u128);

    // The daemon keeps serving: this queue, and a new association.
    check_pattern(&mut io, 1, 90, 10, 512, 24);
    let (_admin2, mut io2) = associate(target.addr);
    write_ok(&mut io2, 1, 0, &pattern_of(512, 0, 16, 26), 512);
    check_pattern(&mut io2, 1, 0, 16, 512, 26);
}
