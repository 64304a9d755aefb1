//! The NVMe/TCP transport binding against the real daemon over loopback: connection
//! initialization (ICReq/ICResp: PDU sequence, PFV, HPDA, the common header fields, digests
//! echoed, C2HData aligned to HPDA), commands before and after Connect, the SGL rules for
//! in-capsule and R2T data, the queue depth a Connect grants (SQSIZE + 1 outstanding, and
//! one more terminates the connection), SQ flow control on and off (C2HData SUCCESS),
//! pipelining (QD 32 mixed reads and writes, several R2Ts outstanding at once answered out of
//! order), PDUs cut and joined at any byte by TCP, and a MDTS (so MAXH2CDATA) below the
//! receive buffer's size. After every error the daemon is shown to keep serving.

mod common;
mod protocol;

use std::collections::BTreeSet;

use common::Target;
use fabriq_bench::host::wire::ic_req_bytes;
use fabriq_bench::host::{Command, Connection, HostError, HostOptions, Placement};
use fabriq_bench::pattern;
use fabriq_target::nvme::identify::{IdentifyController, cns};
use fabriq_target::nvme::sqe::{SglDescriptor, SglKind};
use fabriq_target::nvme::{Cqe, Status};
use fabriq_target::tcp::digest::DIGEST_LEN;
use fabriq_target::tcp::pdu::{
    self, CAPSULE_CMD_HLEN, DATA_HLEN, Digests, Fes, H2cData, IcReq, LAST_PDU, Pdu, SUCCESS,
};
use protocol::{
    BLOCK, Host, NSID, assert_pattern, assert_status, expect_term_req, pattern_of, pipelined_mixed_io, write_read_back,
};

const IC_REQ: IcReq = IcReq { pfv: 0, hpda: 0, digests: Digests::NONE, maxr2t: 0 };

// ----- connection initialization -----

#[test]
fn capsule_before_icreq_is_a_pdu_sequence_error() {
    let target = Target::simple();
    let mut other = Host::connect(target.addr, HostOptions::default());
    let mut conn = Connection::open_raw(target.addr, &HostOptions::default()).unwrap();
    let capsule = conn.encode_capsule(&Command::keep_alive(), 0);
    conn.send_raw(&capsule).unwrap();
    expect_term_req(&mut conn, Fes::PduSequenceError, 0, &capsule[..usize::from(CAPSULE_CMD_HLEN)]);
    other.still_serves();
}

#[test]
fn icreq_with_pfv_other_than_0_is_an_unsupported_parameter() {
    let target = Target::simple();
    let mut other = Host::connect(target.addr, HostOptions::default());
    let mut conn = Connection::open_raw(target.addr, &HostOptions::default()).unwrap();
    let ic_req = ic_req_bytes(&IcReq { pfv: 1, ..IC_REQ });
    conn.send_raw(&ic_req).unwrap();
    expect_term_req(&mut conn, Fes::UnsupportedParameter, pdu::offset::PFV as u32, &ic_req);
    other.still_serves();
}

#[test]
fn icreq_with_hpda_over_31_is_an_invalid_field() {
    let target = Target::simple();
    let mut other = Host::connect(target.addr, HostOptions::default());
    for hpda in [32u8, 0xFF] {
        let mut conn = Connection::open_raw(target.addr, &HostOptions::default()).unwrap();
        let mut ic_req = ic_req_bytes(&IC_REQ);
        ic_req[pdu::offset::HPDA] = hpda;
        conn.send_raw(&ic_req).unwrap();
        expect_term_req(&mut conn, Fes::InvalidHeaderField, pdu::offset::HPDA as u32, &ic_req);
    }
    other.still_serves();
}

/// The size table applies to the ICReq too: no FLAGS, HLEN and PLEN 128, PDO 0.
#[test]
fn icreq_with_bad_common_header_fields_is_an_invalid_field() {
    let target = Target::simple();
    let mut other = Host::connect(target.addr, HostOptions::default());
    let good = ic_req_bytes(&IC_REQ);
    // (field, a wrong value for its first byte); the FEI is the field's offset.
    let cases = [
        (pdu::offset::FLAGS, pdu::HDGSTF),
        (pdu::offset::HLEN, 127),
        (pdu::offset::PDO, 4),
        (pdu::offset::PLEN, 132),
        (pdu::offset::PLEN, 24),
    ];
    for (field, value) in cases {
        let mut conn = Connection::open_raw(target.addr, &HostOptions::default()).unwrap();
        let mut ic_req = good.clone();
        ic_req[field] = value;
        conn.send_raw(&ic_req).unwrap();
        expect_term_req(&mut conn, Fes::InvalidHeaderField, field as u32, &ic_req[..pdu::COMMON_HEADER_LEN]);
    }
    other.still_serves();
}

#[test]
fn second_icreq_is_a_pdu_sequence_error() {
    let target = Target::simple();
    let mut other = Host::connect(target.addr, HostOptions::default());
    // Once initialized, and once connected.
    let mut initialized = Connection::open(target.addr, &HostOptions::default()).unwrap();
    let ic_req = ic_req_bytes(&IC_REQ);
    initialized.send_raw(&ic_req).unwrap();
    expect_term_req(&mut initialized, Fes::PduSequenceError, 0, &ic_req);
    let mut connected = Connection::open(target.addr, &HostOptions::default()).unwrap();
    connected.connect_admin(common::NQN, 0, 31).unwrap();
    connected.send_raw(&ic_req).unwrap();
    expect_term_req(&mut connected, Fes::PduSequenceError, 0, &ic_req);
    other.still_serves();
}

#[test]
fn icresp_echoes_the_digests_asked_for() {
    let target = Target::simple();
    for (header, data) in [(false, false), (true, false), (false, true), (true, true)] {
        let opts = HostOptions { header_digest: header, data_digest: data, ..HostOptions::default() };
        let mut conn = Connection::open_raw(target.addr, &opts).unwrap();
        let ic_req = ic_req_bytes(&IcReq { digests: Digests { header, data }, ..IC_REQ });
        conn.send_raw(&ic_req).unwrap();
        let received = conn.recv_pdu().unwrap();
        let Pdu::IcResp(ic_resp) = received.pdu else { panic!("expected an ICResp, got {:?}", received.pdu) };
        assert_eq!(ic_resp.digests, Digests { header, data });
        assert_eq!((ic_resp.pfv, ic_resp.cpda), (0, 0));
        // MAXH2CDATA is the daemon's MDTS (128 KiB by default).
        assert_eq!(ic_resp.maxh2cdata, 128 * 1024);
        assert_eq!(received.bytes.len(), 128);
    }
    protocol::serves(target.addr);
}

/// C2HData starts its data at a multiple of the host's HPDA, after the header and its digest,
/// with zero padding in between.
#[test]
fn c2h_data_is_aligned_to_the_hosts_hpda() {
    let target = Target::simple();
    // (HPDA, header digest, the PDO that follows: the header and HDGST rounded up).
    let cases = [
        (0u8, false, 24u8),
        (0, true, 28),
        (1, false, 24),
        (1, true, 32),
        (3, false, 32),
        (7, true, 32),
        (31, false, 128),
        (31, true, 128),
    ];
    for (hpda, header_digest, pdo) in cases {
        let opts = HostOptions { hpda, header_digest, ..HostOptions::default() };
        let mut admin = Connection::open(target.addr, &opts).unwrap();
        let cntlid = admin.connect_admin(common::NQN, 0, 31).unwrap();
        admin.enable().unwrap();
        let capsule = admin.encode_capsule(&Command::identify(cns::CONTROLLER, 0, 0), 7);
        admin.send_raw(&capsule).unwrap();
        let data = admin.recv_pdu().unwrap();
        let Pdu::C2hData(c2h) = data.pdu else { panic!("expected C2HData, got {:?}", data.pdu) };
        assert_eq!((c2h.cccid, c2h.datao, c2h.datal, c2h.last), (7, 0, 4096, true));
        assert_eq!(data.layout.pdo, pdo, "HPDA {hpda}, header digest {header_digest}");
        let header_end = usize::from(DATA_HLEN) + if header_digest { DIGEST_LEN } else { 0 };
        assert!(data.bytes[header_end..usize::from(pdo)].iter().all(|&b| b == 0), "padding is zeroes");
        let ctrl = IdentifyController::decode(data.data()).unwrap();
        assert_eq!(ctrl.cntlid, cntlid, "the data starts at PDO");
        expect_resp(&mut admin, 7, Status::SUCCESS);
        // The library's own reads (which check the alignment too) work on that queue.
        assert!(admin.identify_controller().is_ok());
    }
}

// ----- commands around Connect -----

#[test]
fn commands_before_connect_fail_with_command_sequence_error() {
    let target = Target::simple();
    let mut conn = Connection::open(target.addr, &HostOptions::default()).unwrap();
    let commands = [
        Command::identify(cns::CONTROLLER, 0, 0),
        Command::property_get(0x1C, fabriq_target::nvme::PropertySize::Four),
        Command::keep_alive(),
        Command::read(NSID, 0, 8, 8 * BLOCK),
        // Data in the capsule (received and dropped) and data by R2T (never asked for).
        Command::write(NSID, 0, 1, vec![0xA5; BLOCK], false).placed(Placement::InCapsule),
        Command::write(NSID, 0, 16, vec![0xA5; 16 * BLOCK], false).placed(Placement::R2t),
    ];
    for command in commands {
        let done = conn.execute(command.clone()).unwrap();
        assert_status(done.status(), Status::COMMAND_SEQUENCE_ERROR);
        assert!(done.status().dnr(), "{command:?}");
    }
    // The connection lives on, and connects.
    conn.connect_admin(common::NQN, 0, 31).unwrap();
    conn.enable().unwrap();
    assert!(conn.identify_controller().is_ok());
}

#[test]
fn connect_twice_is_a_command_sequence_error() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    match host.admin.connect_admin(common::NQN, 0, 31) {
        Err(HostError::Status(cqe)) => assert_status(cqe.status, Status::COMMAND_SEQUENCE_ERROR),
        other => panic!("second Connect on the admin queue: {other:?}"),
    }
    let mut io = host.io_queue(31);
    let cntlid = host.cntlid;
    match io.connect_io(common::NQN, cntlid, 2, 31) {
        Err(HostError::Status(cqe)) => assert_status(cqe.status, Status::COMMAND_SEQUENCE_ERROR),
        other => panic!("second Connect on an I/O queue: {other:?}"),
    }
    // Both queues carry on.
    assert!(host.admin.identify_controller().is_ok());
    write_read_back(&mut io, 0, 8, 1);
    host.still_serves();
}

/// The NVMe/TCP rules for a command's SGL (3.4.2): in-capsule data is described by a Data
/// Block descriptor with the offset subtype, at offset 0, covering exactly the data; data
/// moved by R2T by a Transport SGL Data Block at least as long. Anything else fails the
/// command (with DNR), not the connection, and writes nothing.
#[test]
fn sgl_not_matching_the_data_fails_the_command_not_the_connection() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut io = host.io_queue(31);
    write_read_back(&mut io, 0, 8, 40);
    let write = |placement, sgl: Option<SglDescriptor>| {
        let mut command = Command::write(NSID, 0, 8, pattern_of(0, 8, 41), false).placed(placement);
        if let Some(sgl) = sgl {
            command.sqe = command.sqe.with_sgl(sgl);
        }
        command.keep_dptr()
    };
    let keyed = SglDescriptor { address: 0, length: 4096, kind: SglKind::KeyedDataBlock { subtype: 0, key: 1 } };
    let cases = [
        (
            "in-capsule SGL shorter than the data",
            write(Placement::InCapsule, Some(SglDescriptor::in_capsule(0, 2048))),
            Status::DATA_SGL_LENGTH_INVALID,
        ),
        (
            "in-capsule SGL at offset 16",
            write(Placement::InCapsule, Some(SglDescriptor::in_capsule(16, 4096))),
            Status::INVALID_SGL_OFFSET,
        ),
        (
            "in-capsule data under a transport SGL",
            write(Placement::InCapsule, Some(SglDescriptor::transport(4096))),
            Status::SGL_DESCRIPTOR_TYPE_INVALID,
        ),
        ("in-capsule data under PRPs", write(Placement::InCapsule, None), Status::INVALID_FIELD),
        (
            "an in-capsule SGL and no data in the capsule",
            write(Placement::R2t, Some(SglDescriptor::in_capsule(0, 4096))),
            Status::DATA_SGL_LENGTH_INVALID,
        ),
        (
            "a transport SGL shorter than the data",
            write(Placement::R2t, Some(SglDescriptor::transport(2048))),
            Status::DATA_SGL_LENGTH_INVALID,
        ),
        ("a keyed (RDMA) SGL", write(Placement::R2t, Some(keyed)), Status::SGL_DESCRIPTOR_TYPE_INVALID),
        (
            "a Read carrying in-capsule data",
            Command::read(NSID, 0, 1, BLOCK).with_data_out(vec![1; BLOCK]).placed(Placement::InCapsule),
            Status::INVALID_FIELD,
        ),
    ];
    for (name, command, status) in cases {
        let done = io.execute(command).unwrap();
        assert_status(done.status(), status);
        assert!(done.status().dnr(), "{name}");
        assert_pattern(&mut io, 0, 8, 40);
    }
    write_read_back(&mut io, 0, 8, 42);
}

// ----- queue depth -----

/// Writes by R2T hold their command slot until the host sends the data, which it does only
/// when it waits: so all of them are outstanding on the target at once.
fn r2t_write(slba: u64, seed: u64) -> Command {
    Command::write(NSID, slba, 8, pattern_of(slba, 8, seed), false).placed(Placement::R2t)
}

#[test]
fn sqsize_plus_one_commands_outstanding_work() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    for sqsize in [1u16, 3, 31] {
        let mut io = host.io_queue(sqsize);
        assert_eq!(io.queue_depth(), usize::from(sqsize) + 1);
        let slbas: Vec<u64> = (0..=u64::from(sqsize)).map(|i| 1000 * u64::from(sqsize) + 16 * i).collect();
        for &slba in &slbas {
            io.submit(r2t_write(slba, slba)).unwrap();
        }
        for _ in &slbas {
            assert!(io.wait_any().unwrap().is_success());
        }
        for &slba in &slbas {
            assert_pattern(&mut io, slba, 8, slba);
        }
    }
}

#[test]
fn more_commands_than_the_queue_holds_terminate_the_connection() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut io = host.io_queue(3);
    for cid in 0..4u16 {
        let capsule = io.encode_capsule(&r2t_write(u64::from(cid) * 8, 3), cid);
        io.send_raw(&capsule).unwrap();
    }
    let fifth = io.encode_capsule(&Command::flush(NSID), 4);
    io.send_raw(&fifth).unwrap();
    for cid in 0..4u16 {
        let r2t = io.recv_pdu().unwrap();
        assert!(matches!(r2t.pdu, Pdu::R2t(r) if r.cccid == cid), "R2T of cid {cid}, got {:?}", r2t.pdu);
    }
    expect_term_req(&mut io, Fes::PduSequenceError, 0, &fifth[..usize::from(CAPSULE_CMD_HLEN)]);
    host.still_serves();
}

// ----- SQ flow control -----

/// Sends a Read of `nlb` blocks at `slba` as CID `cid` and returns its one C2HData.
fn raw_read(io: &mut Connection, cid: u16, slba: u64, nlb: u32) -> (pdu::C2hData, Vec<u8>, u8) {
    let capsule = io.encode_capsule(&Command::read(NSID, slba, nlb, nlb as usize * BLOCK), cid);
    io.send_raw(&capsule).unwrap();
    let received = io.recv_pdu().unwrap();
    let Pdu::C2hData(c2h) = received.pdu else { panic!("expected C2HData, got {:?}", received.pdu) };
    (c2h, received.data().to_vec(), received.flags())
}

/// The next PDU is the CapsuleResp of `cid` with `status`.
fn expect_resp(conn: &mut Connection, cid: u16, status: Status) -> Cqe {
    let received = conn.recv_pdu().unwrap();
    let Pdu::CapsuleResp(resp) = received.pdu else {
        panic!("expected the CapsuleResp of {cid}, got {:?}", received.pdu)
    };
    let cqe = Cqe::decode(&resp.cqe);
    assert_eq!(cqe.cid, cid, "{cqe:?}");
    assert_status(cqe.status, status);
    cqe
}

#[test]
fn sq_flow_control_disabled_reads_end_with_c2h_data_success() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let opts = HostOptions { disable_sq_flow_control: true, ..host.opts.clone() };
    let mut io = host.io_queue_with(&opts, 31);
    write_read_back(&mut io, 0, 64, 21);
    for (cid, nlb) in [(100u16, 1u32), (101, 64)] {
        let (c2h, data, flags) = raw_read(&mut io, cid, 0, nlb);
        assert_eq!(flags & (LAST_PDU | SUCCESS), LAST_PDU | SUCCESS);
        assert_eq!((c2h.cccid, c2h.datao, c2h.datal), (cid, 0, nlb * BLOCK as u32));
        pattern::check(&data, BLOCK, 0, 21).unwrap();
        // No CapsuleResp for the read: the next PDU answers the next command.
        let flush = io.encode_capsule(&Command::flush(NSID), cid + 100);
        io.send_raw(&flush).unwrap();
        expect_resp(&mut io, cid + 100, Status::SUCCESS);
    }
    // A failed read still gets its CapsuleResp.
    let mut buf = vec![0; BLOCK];
    let beyond = io.read(NSID, protocol::NS_BLOCKS, 1, &mut buf).unwrap();
    assert_status(beyond.status(), Status::LBA_OUT_OF_RANGE);
    // Pipelined I/O with the SUCCESS flag through the library.
    pipelined_mixed_io(&mut io, 100_000, 32, 16, 64);
}

#[test]
fn sq_flow_control_enabled_reads_always_get_a_capsule_resp() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut io = host.io_queue(31);
    write_read_back(&mut io, 0, 64, 22);
    for (cid, nlb) in [(100u16, 1u32), (101, 64)] {
        let (c2h, data, flags) = raw_read(&mut io, cid, 0, nlb);
        assert_eq!(flags & (LAST_PDU | SUCCESS), LAST_PDU);
        assert_eq!((c2h.cccid, c2h.datal), (cid, nlb * BLOCK as u32));
        pattern::check(&data, BLOCK, 0, 22).unwrap();
        expect_resp(&mut io, cid, Status::SUCCESS);
    }
}

// ----- pipelining -----

#[test]
fn qd32_mixed_reads_and_writes_in_the_capsule_and_by_r2t() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut io = host.io_queue(31);
    assert_eq!(host.icd_limit, 8192, "16 blocks go in the capsule, 17 by R2T");
    pipelined_mixed_io(&mut io, 0, 64, 32, 400);
}

#[test]
fn several_r2ts_outstanding_are_answered_in_any_order() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut io = host.io_queue(31);
    const COMMANDS: u16 = 8;
    const NLB: u32 = 16;
    let slba = |cid: u16| 50_000 + u64::from(cid) * 64;
    for cid in 0..COMMANDS {
        let command =
            Command::write(NSID, slba(cid), NLB, pattern_of(slba(cid), NLB, 77), false).placed(Placement::R2t);
        let capsule = io.encode_capsule(&command, cid);
        io.send_raw(&capsule).unwrap();
    }
    // Every command gets its R2T before the host sends a byte of data.
    let mut r2ts = Vec::new();
    for _ in 0..COMMANDS {
        let received = io.recv_pdu().unwrap();
        let Pdu::R2t(r2t) = received.pdu else { panic!("expected an R2T, got {:?}", received.pdu) };
        assert_eq!((r2t.r2to, r2t.r2tl), (0, NLB * BLOCK as u32));
        r2ts.push(r2t);
    }
    let cids: BTreeSet<u16> = r2ts.iter().map(|r| r.cccid).collect();
    let ttags: BTreeSet<u16> = r2ts.iter().map(|r| r.ttag).collect();
    assert_eq!(cids, (0..COMMANDS).collect());
    assert_eq!(ttags.len(), usize::from(COMMANDS), "one transfer tag per command");
    // Answered last first, each in two H2CData PDUs, the second flagged LAST_PDU.
    let half = NLB * BLOCK as u32 / 2;
    for r2t in r2ts.iter().rev() {
        let data = pattern_of(slba(r2t.cccid), NLB, 77);
        for (datao, last) in [(0, false), (half, true)] {
            let header = H2cData { cccid: r2t.cccid, ttag: r2t.ttag, datao, datal: half, last };
            io.send_h2c_data(&header, &data[datao as usize..(datao + half) as usize]).unwrap();
        }
    }
    let mut completed = BTreeSet::new();
    for _ in 0..COMMANDS {
        let received = io.recv_pdu().unwrap();
        let Pdu::CapsuleResp(resp) = received.pdu else { panic!("expected a CapsuleResp, got {:?}", received.pdu) };
        let cqe = Cqe::decode(&resp.cqe);
        assert!(cqe.status.is_success(), "{cqe:?}");
        assert!(completed.insert(cqe.cid), "cid {} completed twice", cqe.cid);
    }
    assert_eq!(completed, (0..COMMANDS).collect());
    for cid in 0..COMMANDS {
        assert_pattern(&mut io, slba(cid), NLB, 77);
    }
}

// ----- segmentation -----

/// Sends `bytes` in pieces whose sizes cycle through `sizes`.
fn send_in_pieces(io: &mut Connection, bytes: &[u8], sizes: &[usize]) {
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at == bytes.len() {
            break;
        }
        let end = (at + size).min(bytes.len());
        io.send_raw(&bytes[at..end]).unwrap();
        at = end;
    }
}

/// The receive side takes PDUs however TCP cuts them: many PDUs in one send, one PDU over
/// many sends, cut inside the common header, the header, its digest, the padding, the data
/// and the data digest; with and without digests.
#[test]
fn pdus_split_and_coalesced_at_any_byte() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    const PIECES: [usize; 12] = [1, 2, 3, 5, 7, 11, 13, 64, 100, 1000, 4095, 9000];
    for (run, digests) in [false, true].into_iter().enumerate() {
        let opts = HostOptions { header_digest: digests, data_digest: digests, hpda: 7, ..host.opts.clone() };
        let mut io = host.io_queue_with(&opts, 31);
        let base = 90_000 + run as u64 * 2000;
        let slba = |cid: u16| base + u64::from(cid) * 32;
        // 24 writes in the capsule, of 1 to 16 blocks, as one stream of bytes.
        let nlb = |cid: u16| [1u32, 3, 8, 16][usize::from(cid) % 4];
        let mut stream = Vec::new();
        for cid in 0..24u16 {
            let write = Command::write(NSID, slba(cid), nlb(cid), pattern_of(slba(cid), nlb(cid), 50), false);
            stream.extend(io.encode_capsule(&write, cid));
        }
        send_in_pieces(&mut io, &stream, &PIECES);
        let mut done = BTreeSet::new();
        for _ in 0..24 {
            let cqe = next_resp(&mut io);
            assert!(cqe.status.is_success(), "{cqe:?}");
            done.insert(cqe.cid);
        }
        assert_eq!(done, (0..24).collect());
        // One capsule a byte at a time.
        let write = Command::write(NSID, slba(24), 8, pattern_of(slba(24), 8, 50), false);
        let capsule = io.encode_capsule(&write, 24);
        send_in_pieces(&mut io, &capsule, &[1]);
        expect_resp(&mut io, 24, Status::SUCCESS);
        // H2CData answering an R2T, in pieces.
        let write = Command::write(NSID, slba(25), 32, pattern_of(slba(25), 32, 50), false).placed(Placement::R2t);
        let capsule = io.encode_capsule(&write, 25);
        send_in_pieces(&mut io, &capsule, &[3, 50]);
        let received = io.recv_pdu().unwrap();
        let Pdu::R2t(r2t) = received.pdu else { panic!("expected an R2T, got {:?}", received.pdu) };
        let data = pattern_of(slba(25), 32, 50);
        let h2c =
            io.framing().h2c_data(&H2cData { cccid: 25, ttag: r2t.ttag, datao: 0, datal: r2t.r2tl, last: true }, &data);
        send_in_pieces(&mut io, &h2c, &[1, 7, 2047, 2, 5000]);
        expect_resp(&mut io, 25, Status::SUCCESS);
        for cid in 0..24u16 {
            assert_pattern(&mut io, slba(cid), nlb(cid), 50);
        }
        assert_pattern(&mut io, slba(24), 8, 50);
        assert_pattern(&mut io, slba(25), 32, 50);
    }
}

/// A host may pad more than the alignment asks: the data starts at the PDO it sends.
#[test]
fn data_is_taken_from_the_pdo_the_host_sends() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut io = host.io_queue(31);
    // Inserts `pad` zero bytes between the header (and its digest) and the data.
    let padded = |mut pdu: Vec<u8>, pad: usize| {
        let pdo = usize::from(pdu[pdu::offset::PDO]);
        pdu.splice(pdo..pdo, std::iter::repeat_n(0u8, pad));
        pdu[pdu::offset::PDO] = (pdo + pad) as u8;
        let plen = u32::from_le_bytes(pdu[4..8].try_into().unwrap()) + pad as u32;
        pdu[4..8].copy_from_slice(&plen.to_le_bytes());
        pdu
    };
    let capsule = io.encode_capsule(&Command::write(NSID, 0, 8, pattern_of(0, 8, 60), false), 1);
    io.send_raw(&padded(capsule, 56)).unwrap();
    expect_resp(&mut io, 1, Status::SUCCESS);
    let capsule = io.encode_capsule(&r2t_write(100, 61), 2);
    io.send_raw(&capsule).unwrap();
    let Pdu::R2t(r2t) = io.recv_pdu().unwrap().pdu else { panic!("expected an R2T") };
    let h2c = io.framing().h2c_data(
        &H2cData { cccid: 2, ttag: r2t.ttag, datao: 0, datal: r2t.r2tl, last: true },
        &pattern_of(100, 8, 61),
    );
    io.send_raw(&padded(h2c, 100)).unwrap();
    expect_resp(&mut io, 2, Status::SUCCESS);
    assert_pattern(&mut io, 0, 8, 60);
    assert_pattern(&mut io, 100, 8, 61);
}

/// The next PDU, which must be a CapsuleResp.
fn next_resp(conn: &mut Connection) -> Cqe {
    let received = conn.recv_pdu().unwrap();
    let Pdu::CapsuleResp(resp) = received.pdu else { panic!("expected a CapsuleResp, got {:?}", received.pdu) };
    Cqe::decode(&resp.cqe)
}

// ----- a small MDTS -----

/// MDTS, and with it MAXH2CDATA, below the 64 KiB a connection's receive buffer takes.
#[test]
fn small_mdts_sets_maxh2cdata_and_serves() {
    let target = Target::start("mdts_bytes = 16384\nin_capsule_data_bytes = 4096", &protocol::simple_subsystem());
    let mut host = Host::connect(target.addr, HostOptions::default());
    assert_eq!(host.admin.identify_controller().unwrap().mdts, 2, "16 KiB: 4 KiB pages times 2^2");
    let mut io = host.io_queue(31);
    assert_eq!(io.ic_resp().unwrap().maxh2cdata, 16384);
    for nlb in [1u32, 8, 9, 32] {
        write_read_back(&mut io, u64::from(nlb) * 100, nlb, u64::from(nlb));
    }
    protocol::pipelined_io(&mut io, 10_000, 64, 32, 200, &[1, 8, 9, 16, 31, 32]);
    // One byte over MAXH2CDATA in one H2CData.
    let mut victim = host.io_queue(31);
    let capsule = victim.encode_capsule(&r2t_write(0, 1), 1);
    victim.send_raw(&capsule).unwrap();
    let Pdu::R2t(r2t) = victim.recv_pdu().unwrap().pdu else { panic!("expected an R2T") };
    let mut header = [0u8; pdu::HEADER_BUF_LEN];
    let len =
        H2cData { cccid: 1, ttag: r2t.ttag, datao: 0, datal: 16388, last: true }.encode(&mut header, Digests::NONE, 4);
    victim.send_raw(&header[..len]).unwrap();
    expect_term_req(&mut victim, Fes::DataTransferLimitExceeded, 0, &header[..pdu::COMMON_HEADER_LEN]);
    host.still_serves();
}
