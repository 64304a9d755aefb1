//! Malformed and truncated PDUs against the real daemon over loopback: every header field
//! the size table checks (PDU-Type, FLAGS, HLEN, PDO, PLEN, the in-capsule data limit), the
//! H2CData rules (TTAG, CCCID, DATAO and DATAL against the R2T, MAXH2CDATA, no R2T
//! outstanding), PDUs cut short followed by a close or by silence, and TermReqs from the host.
//!
//! For each violation the C2HTermReq must carry the exact FES and FEI of the NVMe/TCP
//! binding (`tcp::pdu::Fes`, `tcp::pdu::offset`) and quote the offending header (its common
//! header when that is what failed the size table), and the target must close the socket.
//! Meanwhile an I/O queue opened before the first case keeps working, and at the end a new
//! association does too; the daemon then stops with exit status 0 and every pool buffer back.

mod common;
mod protocol;

use common::Target;
use fabriq_bench::host::{Command, Connection, Framing, HostOptions, Placement};
use fabriq_target::nvme::Cqe;
use fabriq_target::tcp::pdu::{
    self, C2hData, COMMON_HEADER_LEN, CapsuleResp, DATA_HLEN, DDGSTF, Digests, Direction, Fes, H2cData, HDGSTF,
    HEADER_BUF_LEN, IcResp, LAST_PDU, Pdu, R2t, SUCCESS, TermData, TermReq,
};
use protocol::{BLOCK, Host, NSID, expect_closed, expect_term_req, pattern_of, write_read_back};

/// In-capsule data of an I/O queue of `Target::simple` (its default).
const ICD_LIMIT: u32 = 8192;
/// How every PDU here is framed: what a default connection negotiates (no digests, CPDA 0).
const FRAMING: Framing = Framing::INITIAL;
/// The CID of the command a case is about.
const CID: u16 = 5;

fn capsule(command: Command) -> Vec<u8> {
    command.to_capsule(CID, FRAMING, ICD_LIMIT).bytes
}

fn flush() -> Vec<u8> {
    capsule(Command::flush(NSID))
}

/// A Write of `nlb` blocks with its data in the capsule.
fn icd_write(nlb: u32) -> Vec<u8> {
    capsule(Command::write(NSID, 0, nlb, pattern_of(0, nlb, 9), false).placed(Placement::InCapsule))
}

/// An H2CData PDU of `datal` bytes for CID/TTAG as given.
fn h2c(cccid: u16, ttag: u16, datao: u32, datal: u32, last: bool) -> Vec<u8> {
    FRAMING.h2c_data(&H2cData { cccid, ttag, datao, datal, last }, &vec![0x5A; datal as usize])
}

/// `pdu` with `edit` applied.
fn edited(mut pdu: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edit(&mut pdu);
    pdu
}

fn set_plen(pdu: &mut [u8], plen: u32) {
    pdu[pdu::offset::PLEN..pdu::offset::PLEN + 4].copy_from_slice(&plen.to_le_bytes());
}

/// What goes before the data of a PDU encoded by `encode` into a header buffer.
fn header_bytes(encode: impl FnOnce(&mut [u8]) -> usize) -> Vec<u8> {
    let mut out = [0u8; HEADER_BUF_LEN];
    let len = encode(&mut out);
    out[..len].to_vec()
}

/// One violation: the PDU, what the C2HTermReq must say, and how many of the PDU's bytes it
/// quotes.
struct Case {
    name: &'static str,
    pdu: Vec<u8>,
    fes: Fes,
    fei: usize,
    quoted: usize,
}

impl Case {
    /// A header the size table refuses: the C2HTermReq quotes the common header.
    fn common(name: &'static str, pdu: Vec<u8>, fes: Fes, fei: usize) -> Case {
        Case { name, pdu, fes, fei, quoted: COMMON_HEADER_LEN }
    }
}

/// The daemon, a witness association whose I/O queue is open throughout, and the check run
/// after each case that the witness still works.
struct Bench {
    witness_io: Connection,
    witness: Host,
    cases_run: u64,
    target: Target,
}

impl Bench {
    fn start() -> Bench {
        let target = Target::simple();
        let mut witness = Host::connect(target.addr, HostOptions::default());
        let witness_io = witness.io_queue(31);
        Bench { witness_io, witness, cases_run: 0, target }
    }

    /// A new host's I/O queue, for a case that kills its connection.
    fn victim(&self) -> (Host, Connection) {
        let mut host = Host::connect(self.target.addr, HostOptions::default());
        let io = host.io_queue(31);
        (host, io)
    }

    fn witness_works(&mut self) {
        self.cases_run += 1;
        let n = self.cases_run;
        write_read_back(&mut self.witness_io, 20_000 + 300 * n, 16 + n as u32, n);
    }

    fn run(&mut self, cases: Vec<Case>) {
        for case in cases {
            eprintln!("case: {}", case.name);
            let (_host, mut io) = self.victim();
            io.send_raw(&case.pdu).unwrap();
            expect_term_req(&mut io, case.fes, case.fei as u32, &case.pdu[..case.quoted]);
            self.witness_works();
        }
    }

    fn finish(mut self) {
        self.witness.still_serves();
    }
}

// ----- the size table -----

#[test]
fn wrong_hlen_is_an_invalid_header_field_at_2() {
    let mut bench = Bench::start();
    let hlen = pdu::offset::HLEN;
    bench.run(vec![
        Case::common("CapsuleCmd HLEN 71", edited(flush(), |p| p[hlen] = 71), Fes::InvalidHeaderField, hlen),
        Case::common("CapsuleCmd HLEN 128", edited(flush(), |p| p[hlen] = 128), Fes::InvalidHeaderField, hlen),
        Case::common("CapsuleCmd HLEN 0", edited(icd_write(1), |p| p[hlen] = 0), Fes::InvalidHeaderField, hlen),
        Case::common(
            "H2CData HLEN 28",
            edited(h2c(CID, 1, 0, 512, true), |p| p[hlen] = 28),
            Fes::InvalidHeaderField,
            hlen,
        ),
    ]);
    bench.finish();
}

#[test]
fn bad_pdo_is_an_invalid_header_field_at_3() {
    let mut bench = Bench::start();
    let pdo = pdu::offset::PDO;
    bench.run(vec![
        Case::common(
            "CapsuleCmd PDO inside the header",
            edited(icd_write(1), |p| p[pdo] = 68),
            Fes::InvalidHeaderField,
            pdo,
        ),
        Case::common(
            "CapsuleCmd PDO not a multiple of 4",
            edited(icd_write(1), |p| p[pdo] = 74),
            Fes::InvalidHeaderField,
            pdo,
        ),
        Case::common(
            "H2CData PDO inside the header",
            edited(h2c(CID, 1, 0, 512, true), |p| p[pdo] = 20),
            Fes::InvalidHeaderField,
            pdo,
        ),
        Case::common("H2CData PDO 0", edited(h2c(CID, 1, 0, 512, true), |p| p[pdo] = 0), Fes::InvalidHeaderField, pdo),
    ]);
    bench.finish();
}

#[test]
fn bad_plen_is_an_invalid_header_field_at_4() {
    let mut bench = Bench::start();
    let plen = pdu::offset::PLEN;
    bench.run(vec![
        Case::common(
            "CapsuleCmd without data, PLEN 71",
            edited(flush(), |p| set_plen(p, 71)),
            Fes::InvalidHeaderField,
            plen,
        ),
        Case::common(
            "CapsuleCmd without data, PLEN 76",
            edited(flush(), |p| set_plen(p, 76)),
            Fes::InvalidHeaderField,
            plen,
        ),
        Case::common("CapsuleCmd PLEN 0", edited(flush(), |p| set_plen(p, 0)), Fes::InvalidHeaderField, plen),
        Case::common(
            "CapsuleCmd with PDO but PLEN ending there",
            edited(icd_write(1), |p| set_plen(p, 72)),
            Fes::InvalidHeaderField,
            plen,
        ),
        Case::common(
            "H2CData PLEN short of its PDO",
            edited(h2c(CID, 1, 0, 512, true), |p| set_plen(p, 20)),
            Fes::InvalidHeaderField,
            plen,
        ),
        Case::common(
            "H2CData with no data",
            edited(h2c(CID, 1, 0, 512, true), |p| set_plen(p, 24)),
            Fes::InvalidHeaderField,
            plen,
        ),
    ]);
    bench.finish();
}

/// In-capsule data over the queue's limit: 8 KiB on the admin queue (and before Connect), the
/// configured `in_capsule_data_bytes` (IOCCSZ) on I/O queues.
#[test]
fn in_capsule_data_over_the_limit_is_an_invalid_plen() {
    let target = Target::start("in_capsule_data_bytes = 4096", &protocol::simple_subsystem());
    let mut host = Host::connect(target.addr, HostOptions::default());
    assert_eq!(host.icd_limit, 4096);
    let plen = pdu::offset::PLEN as u32;
    // At the limit: accepted.
    let mut io = host.io_queue(31);
    let at_limit = Command::write(NSID, 0, 8, pattern_of(0, 8, 4), false).placed(Placement::InCapsule);
    assert!(io.execute(at_limit).unwrap().is_success());
    protocol::assert_pattern(&mut io, 0, 8, 4);
    // One block over.
    let mut victim = host.io_queue(31);
    let over =
        victim.encode_capsule(&Command::write(NSID, 0, 9, vec![1; 9 * BLOCK], false).placed(Placement::InCapsule), CID);
    victim.send_raw(&over).unwrap();
    expect_term_req(&mut victim, Fes::InvalidHeaderField, plen, &over[..COMMON_HEADER_LEN]);
    // Before Connect the admin queue's 8 KiB applies: 8 KiB passes the size table (and the
    // command fails, unconnected), 8.5 KiB does not.
    let mut raw = Connection::open(target.addr, &HostOptions::default()).unwrap();
    let at_admin_limit = Command::keep_alive().with_data_out(vec![2; 8192]).placed(Placement::InCapsule);
    assert!(!raw.execute(at_admin_limit).unwrap().is_success());
    let over_admin =
        raw.encode_capsule(&Command::keep_alive().with_data_out(vec![2; 8704]).placed(Placement::InCapsule), CID);
    raw.send_raw(&over_admin).unwrap();
    expect_term_req(&mut raw, Fes::InvalidHeaderField, plen, &over_admin[..COMMON_HEADER_LEN]);
    write_read_back(&mut io, 100, 8, 5);
    host.still_serves();
}

/// (A C2HTermReq is one too, but it is a TermReq: see `malformed_term_req_is_not_answered`.)
#[test]
fn pdu_types_a_controller_never_receives_are_an_invalid_field_at_0() {
    let mut bench = Bench::start();
    let none = Digests::NONE;
    let ic_resp = header_bytes(|out| IcResp { pfv: 0, cpda: 0, digests: none, maxh2cdata: 4096 }.encode(out));
    let resp = header_bytes(|out| CapsuleResp { cqe: Cqe::success(CID, 0).encode() }.encode(out, none));
    let mut c2h_data = header_bytes(|out| {
        C2hData { cccid: CID, datao: 0, datal: 512, last: true, success: false }.encode(out, none, 4)
    });
    c2h_data.extend_from_slice(&[7; 512]);
    let r2t = header_bytes(|out| R2t { cccid: CID, ttag: 1, r2to: 0, r2tl: 512 }.encode(out, none));
    let at = pdu::offset::PDU_TYPE;
    bench.run(vec![
        Case::common("ICResp", ic_resp, Fes::InvalidHeaderField, at),
        Case::common("CapsuleResp", resp, Fes::InvalidHeaderField, at),
        Case::common("C2HData", c2h_data, Fes::InvalidHeaderField, at),
        Case::common("R2T", r2t, Fes::InvalidHeaderField, at),
        Case::common("reserved type 08h", edited(flush(), |p| p[at] = 0x08), Fes::InvalidHeaderField, at),
        Case::common("reserved type 0Ah", edited(flush(), |p| p[at] = 0x0A), Fes::InvalidHeaderField, at),
        Case::common("reserved type FFh", edited(flush(), |p| p[at] = 0xFF), Fes::InvalidHeaderField, at),
    ]);
    bench.finish();
}

#[test]
fn undefined_or_unnegotiated_flags_are_an_invalid_field_at_1() {
    let mut bench = Bench::start();
    let flags = pdu::offset::FLAGS;
    bench.run(vec![
        Case::common("CapsuleCmd LAST_PDU", edited(flush(), |p| p[flags] = LAST_PDU), Fes::InvalidHeaderField, flags),
        Case::common("CapsuleCmd bit 7", edited(flush(), |p| p[flags] = 0x80), Fes::InvalidHeaderField, flags),
        Case::common(
            "CapsuleCmd HDGSTF without header digests",
            edited(flush(), |p| p[flags] = HDGSTF),
            Fes::InvalidHeaderField,
            flags,
        ),
        Case::common(
            "CapsuleCmd DDGSTF without data digests",
            edited(icd_write(1), |p| p[flags] = DDGSTF),
            Fes::InvalidHeaderField,
            flags,
        ),
        Case::common(
            "H2CData SUCCESS",
            edited(h2c(CID, 1, 0, 512, true), |p| p[flags] |= SUCCESS),
            Fes::InvalidHeaderField,
            flags,
        ),
        Case::common(
            "H2CData bit 4",
            edited(h2c(CID, 1, 0, 512, true), |p| p[flags] |= 0x10),
            Fes::InvalidHeaderField,
            flags,
        ),
    ]);
    bench.finish();
}

// ----- H2CData -----

/// Sends a Write of 8 blocks (4096 bytes) by R2T as CID [`CID`] and returns the R2T.
fn write_waiting_for_data(io: &mut Connection) -> R2t {
    let command = Command::write(NSID, 0, 8, pattern_of(0, 8, 3), false).placed(Placement::R2t);
    let capsule = io.encode_capsule(&command, CID);
    io.send_raw(&capsule).unwrap();
    let received = io.recv_pdu().unwrap();
    let Pdu::R2t(r2t) = received.pdu else { panic!("expected an R2T, got {:?}", received.pdu) };
    assert_eq!((r2t.cccid, r2t.r2to, r2t.r2tl), (CID, 0, 4096));
    r2t
}

/// Runs H2CData cases: each gets a fresh I/O queue with a Write waiting for its data, sends
/// the PDUs `make` builds from the R2T (the last one is the offending one) and expects the
/// C2HTermReq.
/// An H2CData case: its name, the FES and FEI expected, and the PDUs it sends after the R2T.
type H2cCase = (&'static str, Fes, usize, fn(&R2t) -> Vec<Vec<u8>>);

fn run_h2c_cases(cases: Vec<H2cCase>) {
    let mut bench = Bench::start();
    for (name, fes, fei, make) in cases {
        eprintln!("case: {name}");
        let (_host, mut io) = bench.victim();
        let r2t = write_waiting_for_data(&mut io);
        let pdus = make(&r2t);
        for pdu in &pdus {
            io.send_raw(pdu).unwrap();
        }
        let offending = pdus.last().expect("a PDU");
        expect_term_req(&mut io, fes, fei as u32, &offending[..usize::from(DATA_HLEN)]);
        bench.witness_works();
    }
    bench.finish();
}

#[test]
fn h2c_data_naming_the_wrong_transfer_is_an_invalid_field() {
    run_h2c_cases(vec![
        ("TTAG of another slot", Fes::InvalidHeaderField, pdu::offset::TTAG, |r| {
            vec![h2c(CID, r.ttag + 1, 0, 4096, true)]
        }),
        ("TTAG beyond the slots", Fes::InvalidHeaderField, pdu::offset::TTAG, |_| {
            vec![h2c(CID, 0xFFFF, 0, 4096, true)]
        }),
        ("CCCID of no command", Fes::InvalidHeaderField, pdu::offset::CCCID, |r| {
            vec![h2c(CID + 1, r.ttag, 0, 4096, true)]
        }),
        ("DATAL other than PLEN says", Fes::InvalidHeaderField, pdu::offset::DATAL, |r| {
            vec![edited(h2c(CID, r.ttag, 0, 4096, true), |p| p[pdu::offset::DATAL] = 1)]
        }),
    ]);
}

#[test]
fn h2c_data_outside_its_r2t_is_data_transfer_out_of_range() {
    run_h2c_cases(vec![
        ("DATAO past the next expected byte", Fes::DataTransferOutOfRange, 0, |r| {
            vec![h2c(CID, r.ttag, 512, 3584, true)]
        }),
        ("more data than the R2T asked for", Fes::DataTransferOutOfRange, 0, |r| vec![h2c(CID, r.ttag, 0, 8192, true)]),
        ("the first half sent twice", Fes::DataTransferOutOfRange, 0, |r| {
            vec![h2c(CID, r.ttag, 0, 2048, false), h2c(CID, r.ttag, 0, 2048, true)]
        }),
        ("the second PDU runs past the R2T", Fes::DataTransferOutOfRange, 0, |r| {
            vec![h2c(CID, r.ttag, 0, 2048, false), h2c(CID, r.ttag, 2048, 4096, true)]
        }),
    ]);
}

#[test]
fn h2c_data_over_maxh2cdata_is_data_transfer_limit_exceeded() {
    let mut bench = Bench::start();
    let (_host, mut io) = bench.victim();
    let maxh2cdata = io.ic_resp().unwrap().maxh2cdata;
    let r2t = write_waiting_for_data(&mut io);
    // Only the header: the target must refuse it before reading a byte of the data.
    let header = header_bytes(|out| {
        H2cData { cccid: CID, ttag: r2t.ttag, datao: 0, datal: maxh2cdata + 4, last: true }.encode(
            out,
            Digests::NONE,
            4,
        )
    });
    io.send_raw(&header).unwrap();
    expect_term_req(&mut io, Fes::DataTransferLimitExceeded, 0, &header[..COMMON_HEADER_LEN]);
    bench.witness_works();
    bench.finish();
}

#[test]
fn h2c_data_with_no_r2t_outstanding_is_an_invalid_ttag() {
    let mut bench = Bench::start();
    let ttag = pdu::offset::TTAG as u32;
    // On a queue that has seen no command at all.
    let (_host, mut io) = bench.victim();
    let stray = h2c(CID, 1, 0, 512, true);
    io.send_raw(&stray).unwrap();
    expect_term_req(&mut io, Fes::InvalidHeaderField, ttag, &stray[..usize::from(DATA_HLEN)]);
    bench.witness_works();
    // After the R2T's data all arrived and the command completed.
    let (_host, mut io) = bench.victim();
    let r2t = write_waiting_for_data(&mut io);
    io.send_h2c_data(&H2cData { cccid: CID, ttag: r2t.ttag, datao: 0, datal: 4096, last: true }, &pattern_of(0, 8, 3))
        .unwrap();
    let received = io.recv_pdu().unwrap();
    assert!(
        matches!(received.pdu, Pdu::CapsuleResp(resp) if Cqe::decode(&resp.cqe).cid == CID && Cqe::decode(&resp.cqe).status.is_success()),
        "{:?}",
        received.pdu
    );
    let again = h2c(CID, r2t.ttag, 0, 4096, true);
    io.send_raw(&again).unwrap();
    expect_term_req(&mut io, Fes::InvalidHeaderField, ttag, &again[..usize::from(DATA_HLEN)]);
    bench.witness_works();
    // For a Write whose data came in the capsule, once it completed.
    let (_host, mut io) = bench.victim();
    let capsule = io.encode_capsule(&Command::write(NSID, 0, 1, pattern_of(0, 1, 6), false), CID);
    io.send_raw(&capsule).unwrap();
    let received = io.recv_pdu().unwrap();
    assert!(matches!(received.pdu, Pdu::CapsuleResp(_)), "{:?}", received.pdu);
    let stray = h2c(CID, 1, 0, 512, true);
    io.send_raw(&stray).unwrap();
    expect_term_req(&mut io, Fes::InvalidHeaderField, ttag, &stray[..usize::from(DATA_HLEN)]);
    bench.witness_works();
    bench.finish();
}

// ----- truncated PDUs -----

/// The ways a PDU can stop short: a name, and what is sent of the PDU on a fresh I/O queue;
/// the H2CData cases first get a Write waiting for its data and name its transfer tag.
type Truncation = (&'static str, fn(Option<u16>) -> Vec<u8>);

fn truncations() -> [Truncation; 7] {
    fn h2c_of(ttag: Option<u16>) -> Vec<u8> {
        h2c(CID, ttag.expect("an R2T"), 0, 4096, true)
    }
    [
        ("half a common header", |_| flush()[..4].to_vec()),
        ("a common header alone", |_| flush()[..COMMON_HEADER_LEN].to_vec()),
        ("most of a CapsuleCmd header", |_| flush()[..40].to_vec()),
        ("a CapsuleCmd header announcing 4 KiB of in-capsule data", |_| icd_write(8)[..72].to_vec()),
        ("a CapsuleCmd and half its in-capsule data", |_| icd_write(8)[..72 + 2048].to_vec()),
        ("an H2CData header announcing 4 KiB", |ttag| h2c_of(ttag)[..usize::from(DATA_HLEN)].to_vec()),
        ("an H2CData header and half its data", |ttag| h2c_of(ttag)[..usize::from(DATA_HLEN) + 2048].to_vec()),
    ]
}

/// Sends `truncation` on `io`, after the Write it needs if it is an H2CData.
fn send_truncated(io: &mut Connection, (name, cut): Truncation) {
    eprintln!("case: {name}");
    let ttag = name.contains("H2CData").then(|| write_waiting_for_data(io).ttag);
    io.send_raw(&cut(ttag)).unwrap();
}

#[test]
fn truncated_pdu_then_close_ends_only_that_connection() {
    let mut bench = Bench::start();
    for truncation in truncations() {
        let (_host, mut io) = bench.victim();
        send_truncated(&mut io, truncation);
        io.shutdown_write().unwrap();
        expect_closed(&mut io);
        bench.witness_works();
    }
    bench.finish();
}

#[test]
fn truncated_pdu_then_silence_does_not_block_other_connections() {
    let mut bench = Bench::start();
    let mut silent = Vec::new();
    for truncation in truncations() {
        let (host, mut io) = bench.victim();
        send_truncated(&mut io, truncation);
        silent.push((host, io));
        // While the target waits for the rest, everyone else is served.
        bench.witness_works();
        protocol::serves(bench.target.addr);
    }
    // The silent connections are still open: nothing came from the target on them.
    for (_, io) in &mut silent {
        match io.recv_pdu_timeout(std::time::Duration::from_millis(1)) {
            Err(fabriq_bench::host::HostError::Timeout(_)) => {}
            other => panic!("a silent connection got {other:?}"),
        }
    }
    drop(silent);
    bench.finish();
}

// ----- TermReqs from the host -----

#[test]
fn h2c_term_req_closes_the_connection_without_a_reply() {
    let mut bench = Bench::start();
    let (_host, mut io) = bench.victim();
    io.send_term_req(Fes::DataTransferOutOfRange, 0, &flush()[..usize::from(DATA_HLEN)]).unwrap();
    expect_closed(&mut io);
    bench.witness_works();
    // With a command waiting for its data.
    let (_host, mut io) = bench.victim();
    write_waiting_for_data(&mut io);
    io.send_term_req(Fes::PduSequenceError, 0, &[]).unwrap();
    expect_closed(&mut io);
    bench.witness_works();
    bench.finish();
}

/// Nobody answers a TermReq with a TermReq (`tcp::pdu::PduType::is_term_req`): a malformed
/// H2CTermReq, or a C2HTermReq sent the wrong way, ends the connection without a C2HTermReq.
#[test]
fn malformed_term_req_is_not_answered() {
    let mut bench = Bench::start();
    let term =
        TermReq { direction: Direction::H2c, fes: Fes::PduSequenceError, fei: 0, data: TermData::new(&[0xAB; 8]) };
    let good = header_bytes(|out| term.encode(out));
    let c2h = TermReq { direction: Direction::C2h, ..term };
    let cases = [
        ("a C2HTermReq", header_bytes(|out| c2h.encode(out))),
        ("PLEN over 152", edited(good.clone(), |p| set_plen(p, 200))),
        ("PLEN under HLEN", edited(good.clone(), |p| set_plen(p, 16))),
        ("FLAGS set", edited(good.clone(), |p| p[pdu::offset::FLAGS] = HDGSTF)),
        ("HLEN 25", edited(good.clone(), |p| p[pdu::offset::HLEN] = 25)),
        ("unknown FES", edited(good.clone(), |p| p[pdu::offset::FES] = 0x7F)),
    ];
    for (name, bytes) in cases {
        eprintln!("case: {name}");
        let (_host, mut io) = bench.victim();
        io.send_raw(&bytes).unwrap();
        expect_closed(&mut io);
        bench.witness_works();
    }
    bench.finish();
}
