//! Header and data digests (NVMe/TCP 3.3.1.1 and 3.5) against the real daemon over loopback:
//! I/O of every size (in the capsule, by R2T, large reads) with each combination of
//! digests; a header digest that does not verify is fatal (C2HTermReq, Header Digest Error,
//! FEI = the HDGST received); a PDU missing a negotiated digest, or carrying one that was not,
//! has an invalid FLAGS field; a data digest that does not verify, on in-capsule data (a
//! Connect's included) or on H2CData, fails only that command with Transient Transport
//! Error, and the same connection keeps working. Data whose digest failed is never written.

mod common;
mod protocol;

use common::Target;
use fabriq_bench::host::{Command, Connection, HostOptions, Placement};
use fabriq_target::nvme::{Cqe, Status};
use fabriq_target::tcp::digest::DIGEST_LEN;
use fabriq_target::tcp::pdu::{CAPSULE_CMD_HLEN, DATA_HLEN, Digests, Fes, H2cData, Pdu, PduType};
use protocol::{
    BLOCK, Host, NSID, assert_pattern, assert_status, expect_term_req, pattern_of, pipelined_mixed_io, write_read_back,
};

fn with_digests(header: bool, data: bool) -> HostOptions {
    HostOptions { header_digest: header, data_digest: data, ..HostOptions::default() }
}

/// A host whose admin and I/O queues use header and data digests.
fn digest_host(target: &Target) -> Host {
    Host::connect(target.addr, with_digests(true, true))
}

#[test]
fn io_of_every_size_with_each_combination_of_digests() {
    let target = Target::simple();
    let combinations = [(true, false, 0u8), (false, true, 0), (true, true, 0), (true, true, 31)];
    for (run, (header, data, hpda)) in combinations.into_iter().enumerate() {
        let opts = HostOptions { hpda, ..with_digests(header, data) };
        let mut host = Host::connect(target.addr, opts);
        assert!(host.admin.identify_controller().is_ok());
        let mut io = host.io_queue(31);
        assert_eq!(io.framing().digests, Digests { header, data });
        let base = run as u64 * 10_000;
        // 512 B and 8 KiB in the capsule, 8.5 KiB and 128 KiB by R2T; reads of the same.
        for (i, nlb) in [1u32, 16, 17, 256].into_iter().enumerate() {
            write_read_back(&mut io, base + 300 * i as u64, nlb, u64::from(nlb) + base);
        }
        pipelined_mixed_io(&mut io, 50_000 + run as u64 * 8192, 32, 32, 96);
    }
}

#[test]
fn corrupted_header_digest_is_a_fatal_header_digest_error() {
    let target = Target::simple();
    let mut witness = digest_host(&target);
    let mut witness_io = witness.io_queue(31);
    let hlen = usize::from(CAPSULE_CMD_HLEN);
    let hdgst = |pdu: &[u8], hlen: usize| u32::from_le_bytes(pdu[hlen..hlen + DIGEST_LEN].try_into().unwrap());
    // The digest itself corrupted, on a capsule without data and on one with data.
    for command in [Command::flush(NSID), Command::write(NSID, 0, 1, pattern_of(0, 1, 1), false)] {
        let mut io = witness.io_queue(31);
        let mut capsule = io.encode_capsule(&command, 3);
        capsule[hlen] ^= 0x01;
        io.send_raw(&capsule).unwrap();
        expect_term_req(&mut io, Fes::HeaderDigestError, hdgst(&capsule, hlen), &capsule[..hlen]);
        write_read_back(&mut witness_io, 0, 8, 1);
    }
    // The header corrupted under a digest that was right for it: the CID flipped.
    let mut io = witness.io_queue(31);
    let mut capsule = io.encode_capsule(&Command::flush(NSID), 3);
    capsule[10] ^= 0x80;
    io.send_raw(&capsule).unwrap();
    expect_term_req(&mut io, Fes::HeaderDigestError, hdgst(&capsule, hlen), &capsule[..hlen]);
    write_read_back(&mut witness_io, 8, 8, 2);
    // An H2CData header answering an R2T.
    let mut io = witness.io_queue(31);
    let write = Command::write(NSID, 64, 16, pattern_of(64, 16, 3), false).placed(Placement::R2t);
    let capsule = io.encode_capsule(&write, 4);
    io.send_raw(&capsule).unwrap();
    let received = io.recv_pdu().unwrap();
    let Pdu::R2t(r2t) = received.pdu else { panic!("expected an R2T, got {:?}", received.pdu) };
    let mut h2c = io
        .framing()
        .h2c_data(&H2cData { cccid: 4, ttag: r2t.ttag, datao: 0, datal: r2t.r2tl, last: true }, &pattern_of(64, 16, 3));
    let data_hlen = usize::from(DATA_HLEN);
    h2c[data_hlen + 3] ^= 0x40;
    io.send_raw(&h2c).unwrap();
    expect_term_req(&mut io, Fes::HeaderDigestError, hdgst(&h2c, data_hlen), &h2c[..data_hlen]);
    write_read_back(&mut witness_io, 16, 8, 3);
    drop(witness_io);
    witness.still_serves();
}

/// Flips the last byte of the next PDU of `pdu_type` the connection sends: its DDGST.
fn corrupt_next_data_digest(io: &mut Connection, pdu_type: PduType) {
    io.tamper_next(pdu_type, |pdu| *pdu.last_mut().expect("a PDU") ^= 0xFF);
}

#[test]
fn corrupted_data_digest_on_in_capsule_data_fails_only_that_command() {
    let target = Target::simple();
    let mut host = digest_host(&target);
    let mut io = host.io_queue(31);
    for (slba, nlb) in [(0u64, 1u32), (100, 16)] {
        write_read_back(&mut io, slba, nlb, 1);
        // The digest corrupted, then a data byte under a good digest.
        for corrupt_data in [false, true] {
            if corrupt_data {
                io.tamper_next(PduType::CapsuleCmd, |pdu| {
                    let at = pdu.len() - DIGEST_LEN - 1;
                    pdu[at] ^= 0x01;
                });
            } else {
                corrupt_next_data_digest(&mut io, PduType::CapsuleCmd);
            }
            let done = io.write(NSID, slba, nlb, &pattern_of(slba, nlb, 2), false).unwrap();
            assert_status(done.status(), Status::TRANSIENT_TRANSPORT_ERROR);
            assert!(!done.status().dnr(), "the host may retry");
            // Nothing was written, and the same connection carries on.
            assert_pattern(&mut io, slba, nlb, 1);
        }
        write_read_back(&mut io, slba, nlb, 3);
    }
    pipelined_mixed_io(&mut io, 60_000, 32, 32, 64);
}

#[test]
fn corrupted_data_digest_on_h2c_data_fails_only_that_command() {
    let target = Target::simple();
    let mut host = digest_host(&target);
    let mut io = host.io_queue(31);
    // One H2CData per command, as the library sends it.
    for (slba, nlb) in [(0u64, 17u32), (1000, 256)] {
        write_read_back(&mut io, slba, nlb, 1);
        corrupt_next_data_digest(&mut io, PduType::H2cData);
        let done = io.write(NSID, slba, nlb, &pattern_of(slba, nlb, 2), false).unwrap();
        assert_status(done.status(), Status::TRANSIENT_TRANSPORT_ERROR);
        assert_pattern(&mut io, slba, nlb, 1);
        write_read_back(&mut io, slba, nlb, 3);
    }
    // The R2T answered in four H2CData PDUs, one of them corrupted: the target takes the rest
    // of the data, then fails the command.
    for bad in 0..4u32 {
        let (slba, nlb) = (2000 + u64::from(bad) * 64, 32u32);
        write_read_back(&mut io, slba, nlb, 1);
        let data = pattern_of(slba, nlb, 2);
        let write = Command::write(NSID, slba, nlb, data.clone(), false).placed(Placement::R2t);
        let cid = 500 + bad as u16;
        let capsule = io.encode_capsule(&write, cid);
        io.send_raw(&capsule).unwrap();
        let received = io.recv_pdu().unwrap();
        let Pdu::R2t(r2t) = received.pdu else { panic!("expected an R2T, got {:?}", received.pdu) };
        assert_eq!((r2t.cccid, r2t.r2tl), (cid, nlb * BLOCK as u32));
        let quarter = r2t.r2tl / 4;
        for i in 0..4u32 {
            if i == bad {
                corrupt_next_data_digest(&mut io, PduType::H2cData);
            }
            let datao = i * quarter;
            let header = H2cData { cccid: cid, ttag: r2t.ttag, datao, datal: quarter, last: i == 3 };
            io.send_h2c_data(&header, &data[datao as usize..(datao + quarter) as usize]).unwrap();
        }
        let received = io.recv_pdu().unwrap();
        let Pdu::CapsuleResp(resp) = received.pdu else { panic!("expected a CapsuleResp, got {:?}", received.pdu) };
        let cqe = Cqe::decode(&resp.cqe);
        assert_eq!(cqe.cid, cid);
        assert_status(cqe.status, Status::TRANSIENT_TRANSPORT_ERROR);
        assert_pattern(&mut io, slba, nlb, 1);
    }
    pipelined_mixed_io(&mut io, 60_000, 32, 32, 64);
}

/// Once negotiated, a digest's flag must be on every PDU that takes it, and a digest that was
/// not negotiated must not appear: FLAGS is an invalid field (FEI 1) otherwise.
#[test]
fn pdu_without_its_negotiated_digest_is_an_invalid_flags_field() {
    let target = Target::simple();
    let mut witness = digest_host(&target);
    let mut witness_io = witness.io_queue(31);
    let flags = fabriq_target::tcp::pdu::offset::FLAGS as u32;
    let quote = |pdu: &[u8]| pdu[..fabriq_target::tcp::pdu::COMMON_HEADER_LEN].to_vec();
    // A capsule without the header digest both sides agreed on.
    let mut io = witness.io_queue(31);
    let bare = Command::flush(NSID).to_capsule(3, fabriq_bench::host::Framing::INITIAL, 0).bytes;
    io.send_raw(&bare).unwrap();
    expect_term_req(&mut io, Fes::InvalidHeaderField, flags, &quote(&bare));
    write_read_back(&mut witness_io, 0, 8, 1);
    // H2CData without its data digest, and H2CData with one nobody negotiated.
    for (header, data) in [(true, true), (true, false)] {
        let mut io = witness
            .io_queue_with(&HostOptions { header_digest: header, data_digest: data, ..witness.opts.clone() }, 31);
        let write = Command::write(NSID, 64, 16, pattern_of(64, 16, 2), false).placed(Placement::R2t);
        let capsule = io.encode_capsule(&write, 4);
        io.send_raw(&capsule).unwrap();
        let received = io.recv_pdu().unwrap();
        let Pdu::R2t(r2t) = received.pdu else { panic!("expected an R2T, got {:?}", received.pdu) };
        let other_data_digest =
            fabriq_bench::host::Framing { digests: Digests { header, data: !data }, cpda_alignment: 4 };
        let h2c = other_data_digest.h2c_data(
            &H2cData { cccid: 4, ttag: r2t.ttag, datao: 0, datal: r2t.r2tl, last: true },
            &pattern_of(64, 16, 2),
        );
        io.send_raw(&h2c).unwrap();
        expect_term_req(&mut io, Fes::InvalidHeaderField, flags, &quote(&h2c));
        write_read_back(&mut witness_io, 8, 8, 2);
    }
    drop(witness_io);
    witness.still_serves();
}

/// A data digest error on the Connect's data fails the Connect (Transient Transport Error), and
/// the host retries it on the same connection.
#[test]
fn connect_with_a_corrupted_data_digest_can_be_retried() {
    let target = Target::simple();
    let mut admin = Connection::open(target.addr, &with_digests(true, true)).unwrap();
    corrupt_next_data_digest(&mut admin, PduType::CapsuleCmd);
    match admin.connect_admin(common::NQN, 0, 31) {
        Err(fabriq_bench::host::HostError::Status(cqe)) => assert_status(cqe.status, Status::TRANSIENT_TRANSPORT_ERROR),
        other => panic!("a Connect whose data digest failed: {other:?}"),
    }
    admin.connect_admin(common::NQN, 0, 31).unwrap();
    admin.enable().unwrap();
    assert!(admin.identify_controller().is_ok());
    protocol::serves(target.addr);
}
