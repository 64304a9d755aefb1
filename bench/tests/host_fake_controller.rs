//! The host library against an in-process fake controller over a loopback
//! socket: each test scripts the controller's side PDU by PDU (with the
//! target's own PDU encoders and size-table check) in a thread, and drives the
//! host from the test thread. This checks the host's protocol handling on its
//! own, without the target daemon.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use fabriq_bench::host::{Command, Connection, DigestKind, HostError, HostOptions, Placement, Violation};
use fabriq_bench::pattern;
use fabriq_target::nvme::discovery::{DiscoveryLog, DiscoveryLogEntry, TRTYPE_TCP, Tsas};
use fabriq_target::nvme::identify::IdentifyController;
use fabriq_target::nvme::log::lid;
use fabriq_target::nvme::property::{self, Cc, Csts};
use fabriq_target::nvme::sqe::{Connect, ConnectData, GetLogPage, PropertyGet, PropertySet};
use fabriq_target::nvme::{AdminOpcode, Cqe, FabricsType, IoOpcode, Nqn, Sqe, Status};
use fabriq_target::tcp::digest::{self, DataDigest};
use fabriq_target::tcp::pdu::{
    C2hData, CapsuleResp, CommonHeader, Digests, Fatal, Fes, H2cData, HEADER_BUF_LEN, IcResp, Limits, Pdu, PduType,
    R2t, Role, TermReq, check, pda_alignment,
};

const SUBNQN: &str = "nqn.2026-11.dev.fabriq:vol:4f2b8a70-1c3e-4d5f-8a9b-0c1d2e3f4a5b";

/// The controller's end of one connection.
struct Fake {
    stream: TcpStream,
    digests: Digests,
    /// The host's HPDA, in bytes: where C2HData data starts.
    hpda_alignment: u32,
}

/// What the fake received: the typed header and the data.
struct Received {
    pdu: Pdu,
    data: Vec<u8>,
}

impl Received {
    fn sqe(&self) -> Sqe {
        match self.pdu {
            Pdu::CapsuleCmd(capsule) => Sqe::decode(&capsule.sqe),
            _ => panic!("expected a CapsuleCmd, got {:?}", self.pdu),
        }
    }

    fn h2c_data(&self) -> H2cData {
        match self.pdu {
            Pdu::H2cData(header) => header,
            _ => panic!("expected H2CData, got {:?}", self.pdu),
        }
    }
}

impl Fake {
    /// Receives one PDU as a controller does: size table, digests, decode.
    fn recv(&mut self) -> Received {
        let mut bytes = vec![0u8; 8];
        self.stream.read_exact(&mut bytes).unwrap();
        let common = CommonHeader::decode(bytes[..8].try_into().unwrap()).unwrap();
        let limits = Limits { max_icd_bytes: 8192, max_data_pdu_bytes: 1 << 20, data_alignment: 4 };
        let layout = check(&common, Role::Controller, self.digests, &limits).unwrap();
        bytes.resize(layout.plen as usize, 0);
        self.stream.read_exact(&mut bytes[8..]).unwrap();
        let hlen = usize::from(layout.hlen);
        if layout.header_digest_len > 0 {
            let received = bytes[hlen..hlen + 4].try_into().unwrap();
            digest::check_header_digest(&bytes[..hlen], received).unwrap();
        }
        let data = bytes[layout.data_range()].to_vec();
        if layout.data_digest_len > 0 {
            let end = layout.data_range().end;
            let mut ddgst = DataDigest::new();
            ddgst.update(&data);
            ddgst.check(bytes[end..end + 4].try_into().unwrap()).unwrap();
        }
        Received { pdu: Pdu::decode(&bytes).unwrap(), data }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Answers the ICReq with `digests` (whatever was asked), MAXH2CDATA
    /// 4096 and `cpda`.
    fn accept_ic(&mut self, digests: Digests, cpda: u8) {
        let ic_req = match self.recv().pdu {
            Pdu::IcReq(ic_req) => ic_req,
            other => panic!("expected an ICReq, got {other:?}"),
        };
        self.hpda_alignment = pda_alignment(ic_req.hpda);
        let mut out = [0u8; HEADER_BUF_LEN];
        let len = IcResp { pfv: 0, cpda, digests, maxh2cdata: 4096 }.encode(&mut out);
        self.send(&out[..len]);
        self.digests = digests;
    }

    fn resp(&mut self, cqe: Cqe) {
        let mut out = [0u8; HEADER_BUF_LEN];
        let len = CapsuleResp { cqe: cqe.encode() }.encode(&mut out, self.digests);
        self.send(&out[..len]);
    }

    fn c2h(&mut self, cid: u16, datao: u32, data: &[u8], last: bool, success: bool) {
        let header = C2hData { cccid: cid, datao, datal: data.len() as u32, last, success };
        let mut out = [0u8; HEADER_BUF_LEN];
        let start = header.encode(&mut out, self.digests, self.hpda_alignment);
        let mut bytes = out[..start].to_vec();
        bytes.extend_from_slice(data);
        if self.digests.data {
            let mut ddgst = DataDigest::new();
            ddgst.update(data);
            bytes.extend_from_slice(&digest::to_wire(ddgst.finish()));
        }
        self.send(&bytes);
    }

    fn r2t(&mut self, cid: u16, ttag: u16, r2to: u32, r2tl: u32) {
        let mut out = [0u8; HEADER_BUF_LEN];
        let len = R2t { cccid: cid, ttag, r2to, r2tl }.encode(&mut out, self.digests);
        self.send(&out[..len]);
    }

    /// Receives a Connect, checks it, and answers with CNTLID `cntlid`.
    fn accept_connect(&mut self, qid: u16, cntlid: u16) -> (Connect, ConnectData) {
        let received = self.recv();
        let sqe = received.sqe();
        let connect = Connect::from_sqe(&sqe);
        assert_eq!(connect.qid, qid);
        let data = ConnectData::decode(&received.data).unwrap();
        self.resp(Cqe::success(sqe.cid, u32::from(cntlid)));
        (connect, data)
    }
}

/// Runs `script` as the controller of the next connection to the returned
/// address.
fn fake(script: impl FnOnce(&mut Fake) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut fake = Fake { stream, digests: Digests::NONE, hpda_alignment: 4 };
        script(&mut fake);
    });
    (addr, handle)
}

fn options() -> HostOptions {
    HostOptions { io_timeout: Duration::from_secs(10), ..HostOptions::default() }
}

const BOTH: Digests = Digests { header: true, data: true };

#[test]
fn connect_and_identify_with_digests_padding_and_split_c2h_data() {
    let opts = HostOptions { header_digest: true, data_digest: true, hpda: 1, ..options() };
    let hostnqn = opts.hostnqn.clone();
    let (addr, controller) = fake(move |fake| {
        // CPDA 3: the host pads capsules with data to 16 bytes.
        fake.accept_ic(BOTH, 3);
        assert_eq!(fake.hpda_alignment, 8);
        let (connect, data) = fake.accept_connect(0, 0x11);
        assert_eq!((connect.sqsize, connect.kato_ms), (31, 30_000));
        assert_eq!(data.hostnqn.as_str(), hostnqn);
        assert_eq!(data.subnqn.as_str(), SUBNQN);
        assert_eq!(data.cntlid.get(), 0xFFFF);

        let identify = fake.recv().sqe();
        assert_eq!(identify.opcode, AdminOpcode::Identify as u8);
        let mut page = vec![0u8; 4096];
        IdentifyController {
            cntlid: 0x11,
            ioccsz: 260,
            subnqn: Some(Nqn::parse(SUBNQN).unwrap()),
            ..IdentifyController::default()
        }
        .encode(&mut page);
        // Second half first: any order that covers the buffer once is fine.
        fake.c2h(identify.cid, 2048, &page[2048..], false, false);
        fake.c2h(identify.cid, 0, &page[..2048], true, false);
        fake.resp(Cqe::success(identify.cid, 0));
    });

    let mut host = Connection::open(addr, &opts).unwrap();
    let ic_resp = *host.ic_resp().unwrap();
    assert_eq!((ic_resp.cpda, ic_resp.maxh2cdata), (3, 4096));
    assert_eq!(host.connect_admin(SUBNQN, 30_000, 31).unwrap(), 0x11);
    assert_eq!(host.icd_limit(), 8192);
    assert_eq!(host.queue_depth(), 32);
    let identify = host.identify_controller().unwrap();
    assert_eq!((identify.cntlid, identify.ioccsz), (0x11, 260));
    assert_eq!(identify.subnqn.unwrap().as_str(), SUBNQN);
    controller.join().unwrap();
}

#[test]
fn refused_connect_returns_status_and_dw0() {
    let (addr, controller) = fake(|fake| {
        fake.accept_ic(Digests::NONE, 0);
        let received = fake.recv();
        let cid = received.sqe().cid;
        fake.resp(Cqe {
            dw0: fabriq_target::nvme::status::connect_invalid_param_dw0(true, 512),
            ..Cqe::error(cid, Status::CONNECT_INVALID_PARAMETERS)
        });
    });
    let mut host = Connection::open(addr, &options()).unwrap();
    match host.connect_admin(SUBNQN, 0, 31) {
        Err(HostError::Status(cqe)) => {
            assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS);
            assert_eq!(cqe.dw0, 0x0001_0200);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(host.qid(), None);
    controller.join().unwrap();
}

#[test]
fn write_by_two_r2ts_while_a_read_completes_first() {
    let written: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
    let expected = written.clone();
    let mut read_data = vec![0u8; 4096];
    pattern::fill(&mut read_data, 512, 40, 7);
    let served = read_data.clone();
    let (addr, controller) = fake(move |fake| {
        fake.accept_ic(Digests::NONE, 0);
        fake.accept_connect(1, 0x11);
        let write = fake.recv();
        let write_sqe = write.sqe();
        assert_eq!(write_sqe.opcode, IoOpcode::Write as u8);
        assert!(write.data.is_empty(), "16 KiB over the ICD limit goes by R2T");
        let read = fake.recv().sqe();
        assert_eq!(read.opcode, IoOpcode::Read as u8);

        // Two R2Ts outstanding at once, second half first.
        fake.r2t(write_sqe.cid, 2, 8192, 8192);
        fake.r2t(write_sqe.cid, 1, 0, 8192);
        let mut got = vec![0u8; 16384];
        for (ttag, datao, last) in [(2, 8192, false), (2, 12288, true), (1, 0, false), (1, 4096, true)] {
            let pdu = fake.recv();
            let h2c = pdu.h2c_data();
            assert_eq!((h2c.cccid, h2c.ttag, h2c.datao), (write_sqe.cid, ttag, datao));
            assert_eq!((h2c.datal, h2c.last), (4096, last), "MAXH2CDATA 4096");
            got[datao as usize..][..4096].copy_from_slice(&pdu.data);
        }
        assert_eq!(got, expected);

        // The read completes before the write.
        fake.c2h(read.cid, 0, &served, true, false);
        fake.resp(Cqe::success(read.cid, 0));
        fake.resp(Cqe::success(write_sqe.cid, 0));
    });

    let mut host = Connection::open(addr, &options()).unwrap();
    host.connect_io(SUBNQN, 0x11, 1, 127).unwrap();
    assert_eq!(host.icd_limit(), 0);
    host.set_icd_limit(8192);
    let write = host.submit(Command::write(1, 0, 32, written, false)).unwrap();
    let read = host.submit(Command::read(1, 40, 8, 4096)).unwrap();
    assert_eq!(host.outstanding(), 2);
    let first = host.wait_any().unwrap();
    assert_eq!(first.cqe.cid, read);
    pattern::check(&first.data, 512, 40, 7).unwrap();
    assert!(host.wait(write).unwrap().is_success());
    assert_eq!(host.outstanding(), 0);
    controller.join().unwrap();
}

#[test]
fn success_flag_completes_a_read_without_capsule_resp() {
    let opts = HostOptions { disable_sq_flow_control: true, ..options() };
    let (addr, controller) = fake(|fake| {
        fake.accept_ic(Digests::NONE, 0);
        let (connect, _) = fake.accept_connect(1, 0x11);
        assert!(connect.sq_flow_control_disabled());
        let read = fake.recv().sqe();
        fake.c2h(read.cid, 0, &[0x5A; 512], true, true);
        let flush = fake.recv().sqe();
        assert_eq!(flush.opcode, IoOpcode::Flush as u8);
        fake.resp(Cqe::success(flush.cid, 0));
    });
    let mut host = Connection::open(addr, &opts).unwrap();
    host.connect_io(SUBNQN, 0x11, 1, 31).unwrap();
    let mut buf = [0u8; 512];
    let completion = host.read(1, 0, 1, &mut buf).unwrap();
    assert!(completion.is_success());
    assert_eq!(completion.cqe.sqid, 1);
    assert_eq!(buf, [0x5A; 512]);
    assert!(host.flush(1).unwrap().is_success());
    controller.join().unwrap();
}

#[test]
fn success_flag_with_flow_control_enabled_is_a_violation() {
    let (addr, controller) = fake(|fake| {
        fake.accept_ic(Digests::NONE, 0);
        fake.accept_connect(1, 0x11);
        let read = fake.recv().sqe();
        fake.c2h(read.cid, 0, &[0; 512], true, true);
    });
    let mut host = Connection::open(addr, &options()).unwrap();
    host.connect_io(SUBNQN, 0x11, 1, 31).unwrap();
    let cid = host.submit(Command::read(1, 0, 1, 512)).unwrap();
    assert!(matches!(
        host.wait(cid),
        Err(HostError::Protocol(Violation::SuccessWithFlowControl { cid: c })) if c == cid
    ));
    controller.join().unwrap();
}

#[test]
fn c2h_term_req_ends_the_wait_and_the_connection() {
    let (addr, controller) = fake(|fake| {
        fake.accept_ic(Digests::NONE, 0);
        let mut header = [0u8; 72];
        fake.stream.read_exact(&mut header).unwrap();
        let term_req = TermReq::reply(Role::Controller, Fatal::invalid_field(2), &header);
        let mut out = [0u8; HEADER_BUF_LEN];
        let len = term_req.encode(&mut out);
        fake.send(&out[..len]);
        // Dropping the stream closes the connection.
    });
    let mut host = Connection::open(addr, &options()).unwrap();
    host.tamper_next(PduType::CapsuleCmd, |bytes| bytes[2] = 71);
    let cid = host.submit(Command::keep_alive()).unwrap();
    match host.wait(cid) {
        Err(HostError::TermReq { fes, fei, data }) => {
            assert_eq!((fes, fei), (Fes::InvalidHeaderField, 2));
            assert_eq!(data.len(), 72);
            assert_eq!(data[2], 71, "the quote is the tampered header");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(host.recv_pdu(), Err(HostError::Closed)));
    controller.join().unwrap();
}

#[test]
fn data_digest_error_fails_only_its_command() {
    let opts = HostOptions { data_digest: true, ..options() };
    let (addr, controller) = fake(|fake| {
        fake.accept_ic(Digests { header: false, data: true }, 0);
        fake.accept_connect(1, 0x11);
        let read = fake.recv().sqe();
        // A C2HData whose DDGST is wrong.
        let header = C2hData { cccid: read.cid, datao: 0, datal: 512, last: true, success: false };
        let mut out = [0u8; HEADER_BUF_LEN];
        let start = header.encode(&mut out, fake.digests, 4);
        let mut bytes = out[..start].to_vec();
        bytes.extend_from_slice(&[1; 512]);
        bytes.extend_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]);
        fake.send(&bytes);
        fake.resp(Cqe::success(read.cid, 0));
        let flush = fake.recv().sqe();
        fake.resp(Cqe::success(flush.cid, 0));
    });
    let mut host = Connection::open(addr, &opts).unwrap();
    host.connect_io(SUBNQN, 0x11, 1, 31).unwrap();
    let cid = host.submit(Command::read(1, 0, 1, 512)).unwrap();
    match host.wait(cid) {
        Err(HostError::Digest { kind: DigestKind::Data, cid: Some(c), received, .. }) => {
            assert_eq!(c, cid);
            assert_eq!(received, u32::from_le_bytes([0xDE, 0xAD, 0xBE, 0xEF]));
        }
        other => panic!("{other:?}"),
    }
    assert!(host.flush(1).unwrap().is_success());
    controller.join().unwrap();
}

#[test]
fn icresp_must_echo_the_digests() {
    let (addr, controller) = fake(|fake| fake.accept_ic(Digests::NONE, 0));
    let opts = HostOptions { header_digest: true, ..options() };
    assert!(matches!(Connection::open(addr, &opts), Err(HostError::Protocol(Violation::DigestsNotEchoed { .. }))));
    controller.join().unwrap();
}

#[test]
fn r2t_outside_the_data_is_a_violation() {
    let (addr, controller) = fake(|fake| {
        fake.accept_ic(Digests::NONE, 0);
        fake.accept_connect(1, 0x11);
        let write = fake.recv().sqe();
        fake.r2t(write.cid, 1, 4096, 4096);
    });
    let mut host = Connection::open(addr, &options()).unwrap();
    host.connect_io(SUBNQN, 0x11, 1, 31).unwrap();
    let cid = host.submit(Command::write(1, 0, 8, vec![0; 4096], false).placed(Placement::R2t)).unwrap();
    assert!(matches!(host.wait(cid), Err(HostError::Protocol(Violation::R2tOutOfRange { r2to: 4096, .. }))));
    controller.join().unwrap();
}

#[test]
fn enable_polls_csts_until_ready() {
    let (addr, controller) = fake(|fake| {
        fake.accept_ic(Digests::NONE, 0);
        fake.accept_connect(0, 1);
        let cap = fake.recv().sqe();
        let get = PropertyGet::from_sqe(&cap).unwrap();
        assert_eq!(get.offset, property::CAP);
        // MQES 127, CAP.TO 1 (500 ms), NVM command set.
        fake.resp(Cqe::success(cap.cid, 0).with_value_u64(127 | 1 << 24 | 1 << 37));
        let set = fake.recv().sqe();
        let cc = Cc::from_u32(PropertySet::from_sqe(&set).unwrap().value as u32).unwrap();
        assert!(cc.en);
        assert_eq!((cc.iosqes, cc.iocqes, cc.css), (6, 4, 0));
        fake.resp(Cqe::success(set.cid, 0));
        for ready in [false, false, true] {
            let poll = fake.recv().sqe();
            assert_eq!(PropertyGet::from_sqe(&poll).unwrap().offset, property::CSTS);
            let csts = Csts { rdy: ready, ..Csts::default() };
            fake.resp(Cqe::success(poll.cid, csts.to_u32()));
        }
    });
    let mut host = Connection::open(addr, &options()).unwrap();
    host.connect_admin(SUBNQN, 0, 31).unwrap();
    host.enable().unwrap();
    controller.join().unwrap();
}

#[test]
fn discovery_log_is_read_in_chunks_and_checked_for_changes() {
    let entry = |port: u16| DiscoveryLogEntry {
        trtype: TRTYPE_TCP,
        adrfam: 1,
        subtype: 2,
        treq: 0,
        portid: port,
        cntlid: 0xFFFF,
        asqsz: 32,
        eflags: 0,
        trsvcid: "4420".to_owned(),
        subnqn: Nqn::parse(SUBNQN).unwrap(),
        traddr: format!("10.0.0.{port}"),
        tsas: Tsas::Tcp { sectype: 0 },
    };
    let entries: Vec<_> = (1..=5).map(entry).collect();
    let served = entries.clone();
    let (addr, controller) = fake(move |fake| {
        fake.accept_ic(Digests::NONE, 0);
        fake.accept_connect(0, 1);
        let log = DiscoveryLog { genctr: 9, entries: &served };
        // Header, entries as 4096 + 1024 bytes, header again (RAE clear).
        for (offset, len, rae) in [(0, 1024, true), (1024, 4096, true), (5120, 1024, true), (0, 1024, false)] {
            let sqe = fake.recv().sqe();
            let get = GetLogPage::from_sqe(&sqe);
            assert_eq!(get.lid, lid::DISCOVERY);
            assert_eq!((get.offset, get.len_bytes(), get.rae), (offset, len, rae));
            let mut window = vec![0u8; len as usize];
            log.write_window(offset, &mut window).unwrap();
            fake.c2h(sqe.cid, 0, &window, true, false);
            fake.resp(Cqe::success(sqe.cid, 0));
        }
    });
    let mut host = Connection::open(addr, &options()).unwrap();
    host.connect_admin(fabriq_target::nvme::ids::DISCOVERY_NQN, 0, 31).unwrap();
    let page = host.discovery_log().unwrap();
    assert_eq!(page.genctr, 9);
    assert_eq!(page.entries, entries);
    controller.join().unwrap();
}

#[test]
fn raw_misbehaviour_reaches_the_wire() {
    let (addr, controller) = fake(|fake| {
        fake.accept_ic(Digests::NONE, 0);
        let mut bytes = [0u8; 4];
        fake.stream.read_exact(&mut bytes).unwrap();
        assert_eq!(bytes, [0xDE, 0xAD, 0xBE, 0xEF]);
        let h2c = fake.recv().h2c_data();
        assert_eq!((h2c.ttag, h2c.datao, h2c.datal), (0x77, 12, 4));
        // Then the host goes away mid-transfer.
        let mut rest = Vec::new();
        fake.stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let mut out = [0u8; HEADER_BUF_LEN];
        let len = CapsuleResp { cqe: Cqe::success(3, 0).encode() }.encode(&mut out, Digests::NONE);
        fake.send(&out[..len]);
    });
    let mut host = Connection::open(addr, &options()).unwrap();
    host.send_raw(&[0xDE, 0xAD, 0xBE, 0xEF]).unwrap();
    host.send_h2c_data(&H2cData { cccid: 3, ttag: 0x77, datao: 12, datal: 4, last: true }, b"abcd").unwrap();
    host.shutdown_write().unwrap();
    let pdu = host.recv_pdu().unwrap();
    assert_eq!(pdu.pdu_type(), PduType::CapsuleResp);
    controller.join().unwrap();
}

#[test]
fn wait_times_out_when_the_controller_is_silent() {
    let (addr, controller) = fake(|fake| {
        fake.accept_ic(Digests::NONE, 0);
        let _ = fake.recv();
        // Hold the connection open without answering until the host gives up.
        let mut rest = Vec::new();
        fake.stream.read_to_end(&mut rest).unwrap();
    });
    let opts = HostOptions { io_timeout: Duration::from_millis(200), ..options() };
    let mut host = Connection::open(addr, &opts).unwrap();
    let cid = host.submit(Command::keep_alive()).unwrap();
    assert!(matches!(host.wait(cid), Err(HostError::Timeout(_))));
    drop(host);
    controller.join().unwrap();
}

#[test]
fn fabrics_command_type_survives_the_sgl_rewrite() {
    let capsule = Command::property_get(property::CSTS, fabriq_target::nvme::PropertySize::Four).to_capsule(
        9,
        fabriq_bench::host::Framing::INITIAL,
        0,
    );
    let sqe = Sqe::decode(capsule.bytes[8..72].try_into().unwrap());
    assert!(sqe.is_fabrics());
    assert_eq!(sqe.fctype(), FabricsType::PropertyGet as u8);
    assert_eq!(PropertyGet::from_sqe(&sqe).unwrap().offset, property::CSTS);
}
