//! Admin and fabrics commands of an I/O controller, against the real daemon over loopback:
//! Connect (admin and I/O queues, each refusal with its status, DNR and IATTR/IPO), the
//! dynamic controller model, Property Get/Set (CAP, VS, CC, CSTS through enable, disable and
//! shutdown), Identify (controller, namespace, lists, descriptors, CSI-specific, refusals),
//! Get Log Page (error information, SMART / health, firmware slot, commands supported and
//! effects, changed namespaces, windows and bounds), Get/Set Features, Keep Alive, Abort,
//! Asynchronous Event Request and Disconnect. After each refusal the same connection (or a
//! new one) is shown to work.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{NQN, Target};
use fabriq_bench::host::{Command, Completion, Connection, HostError, HostOptions, connect_data};
use fabriq_bench::pattern;
use fabriq_target::nvme::features::{self as feat, fid};
use fabriq_target::nvme::identify::controller as idc;
use fabriq_target::nvme::identify::namespace as idn;
use fabriq_target::nvme::identify::{NamespaceId, NvmIdentifyController, cns, csi};
use fabriq_target::nvme::log::{self, CommandsEffectsLog, ErrorInformationEntry, FirmwareSlotLog, SmartLog, lid};
use fabriq_target::nvme::property::{self, Cap, Cc, Csts, ShutdownStatus, Vs};
use fabriq_target::nvme::{
    AdminOpcode, Connect, Cqe, DISCOVERY_NQN, Features, Identify, IoOpcode, PropertySize, Sqe, Status,
};

/// A second subsystem, open only to the hosts its test names.
const RESTRICTED: &str = "nqn.2026-11.dev.fabriq:restricted";
const UUID1: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
const NGUID1: [u8; 16] =
    [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
/// Identify data and most log pages are one 4 KiB page.
const PAGE: usize = 4096;
/// Connect dword 0 of an Invalid Parameters status: IATTR bit 0 (in the data) and IPO.
const IN_DATA: u32 = 1 << 16;

/// `NQN`, open to any host, with a 512-byte-block `mem` namespace 1 of 64 MiB, a 4096-byte-block
/// `mem` namespace 2 of 16 MiB and a `null` namespace 7 of 1 GiB; namespace 1 has a configured
/// UUID and NGUID, the subsystem a configured serial and model.
fn three_namespaces() -> String {
    format!(
        r#"[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
serial = "FQIT0001"
model = "fabriq integration"
  [[subsystem.namespace]]
  nsid = 1
  backend = "mem"
  size = "64MiB"
  block_size = 512
  uuid = "{UUID1}"
  nguid = "00112233445566778899aabbccddeeff"
  [[subsystem.namespace]]
  nsid = 2
  backend = "mem"
  size = "16MiB"
  block_size = 4096
  [[subsystem.namespace]]
  nsid = 7
  backend = "null"
  size = "1GiB"
  block_size = 4096
"#
    )
}

/// An admin queue of `NQN` (KATO 0: no keep-alive needed), enabled.
fn enabled_admin(addr: SocketAddr, opts: &HostOptions) -> (Connection, u16) {
    let mut admin = Connection::open(addr, opts).unwrap();
    let cntlid = admin.connect_admin(NQN, 0, 31).unwrap();
    admin.enable().unwrap();
    (admin, cntlid)
}

/// I/O queue `qid` of controller `cntlid` of `NQN`, sending up to 8 KiB in the capsule.
fn io_queue(addr: SocketAddr, opts: &HostOptions, cntlid: u16, qid: u16) -> Connection {
    let mut io = Connection::open(addr, opts).unwrap();
    io.connect_io(NQN, cntlid, qid, 31).unwrap();
    io.set_icd_limit(8192);
    io
}

/// The CQE of a Connect the target refused.
fn refused<T: std::fmt::Debug>(result: Result<T, HostError>) -> Cqe {
    match result {
        Err(HostError::Status(cqe)) => cqe,
        other => panic!("expected a refused Connect, got {other:?}"),
    }
}

fn assert_status(c: &Completion, want: Status, what: &str) {
    assert_eq!(c.status(), want, "{what}: {:?}", c.cqe);
}

/// Waits (bounded) until the target closes `conn`.
fn assert_closed(conn: &mut Connection, what: &str) {
    match conn.recv_pdu_timeout(Duration::from_secs(5)) {
        Err(HostError::Closed) => {}
        Err(HostError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected the target to close the connection, got {other:?}"),
    }
}

/// Connects I/O queue `qid`, retrying (bounded) while the target still holds it for a
/// connection that just closed: the target frees a QID when it has released that connection.
fn io_queue_when_free(addr: SocketAddr, opts: &HostOptions, cntlid: u16, qid: u16) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut io = Connection::open(addr, opts).unwrap();
    loop {
        match io.connect_io(NQN, cntlid, qid, 31) {
            Ok(()) => break,
            Err(HostError::Status(cqe))
                if cqe.dw0 == u32::from(fabriq_target::nvme::fabrics_offsets::CONNECT_QID)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("I/O queue {qid} could not be connected again: {e:?}"),
        }
    }
    io.set_icd_limit(8192);
    io
}

fn write_read_back(io: &mut Connection, nsid: u32, slba: u64, nlb: u32, seed: u64) {
    let mut data = vec![0u8; nlb as usize * 512];
    pattern::fill(&mut data, 512, slba, seed);
    assert_status(&io.write(nsid, slba, nlb, &data, false).unwrap(), Status::SUCCESS, "write");
    let mut back = vec![0u8; data.len()];
    assert_status(&io.read(nsid, slba, nlb, &mut back).unwrap(), Status::SUCCESS, "read");
    pattern::check(&back, 512, slba, seed).unwrap();
}

fn get_features_cmd(fid: u8, sel: u8, cdw11: u32) -> Command {
    Command::new(Features { fid, sel, cdw11, ..Features::default() }.to_sqe(AdminOpcode::GetFeatures, 0))
}

fn set_features_cmd(fid: u8, cdw11: u32, save: bool) -> Command {
    Command::set_features(&Features { fid, cdw11, save, ..Features::default() })
}

fn identify_csi(cns: u8, nsid: u32, csi: u8) -> Command {
    Command::new(Identify { cns, nsid, csi, ..Identify::default() }.to_sqe(0)).with_data_in(PAGE)
}

fn smart(admin: &mut Connection, nsid: u32) -> SmartLog {
    let c = admin.get_log_page(lid::SMART_HEALTH, nsid, 0, SmartLog::SIZE, false).unwrap().success().unwrap();
    SmartLog::decode(&c.data).unwrap()
}

fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    out[..s.len()].copy_from_slice(s.as_bytes());
    out
}

// ----- Connect -----

#[test]
fn connect_admin_and_io_queues() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let mut admin = Connection::open(target.addr, &opts).unwrap();
    let cntlid = admin.connect_admin(NQN, 0, 31).unwrap();
    assert!((1..=0xFFEF).contains(&cntlid), "dynamic CNTLID {cntlid:#x}");
    assert_eq!(admin.qid(), Some(0));
    admin.enable().unwrap();
    assert_eq!(admin.set_number_of_queues(2).unwrap().sq_count, 2);
    let mut q1 = io_queue(target.addr, &opts, cntlid, 1);
    let mut q2 = io_queue(target.addr, &opts, cntlid, 2);
    assert_eq!((q1.qid(), q2.qid()), (Some(1), Some(2)));
    write_read_back(&mut q1, 1, 0, 8, 1);
    write_read_back(&mut q2, 1, 8, 8, 2);
    // Each queue's completions name their own SQID.
    assert_eq!(q2.flush(1).unwrap().cqe.sqid, 2);
    assert_eq!(admin.keep_alive().unwrap().cqe.sqid, 0);
}

#[test]
fn connect_refuses_a_host_not_on_the_allow_list() {
    let allowed = HostOptions::default();
    let target = Target::start(
        "",
        &format!(
            "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n\n\
         [[subsystem]]\nnqn = \"{RESTRICTED}\"\nhosts = [\"{}\"]\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n",
            allowed.hostnqn
        ),
    );
    let stranger = HostOptions::default();
    let mut conn = Connection::open(target.addr, &stranger).unwrap();
    let cqe = refused(conn.connect_admin(RESTRICTED, 0, 31));
    assert_eq!(cqe.status, Status::CONNECT_INVALID_HOST.with_dnr());
    assert_eq!(cqe.dw0, IN_DATA | 512, "IATTR 1, IPO = the host NQN's offset in the Connect data");
    // The same connection still connects where the host is welcome.
    conn.connect_admin(NQN, 0, 31).unwrap();
    conn.enable().unwrap();
    // The host on the list gets in.
    let mut ok = Connection::open(target.addr, &allowed).unwrap();
    ok.connect_admin(RESTRICTED, 0, 31).unwrap();
    ok.enable().unwrap();
    assert_eq!(ok.identify_controller().unwrap().subnqn.unwrap().as_str(), RESTRICTED);
}

#[test]
fn connect_refuses_an_unknown_subsystem() {
    let target = Target::simple();
    let mut conn = Connection::open(target.addr, &HostOptions::default()).unwrap();
    let cqe = refused(conn.connect_admin("nqn.2026-11.dev.fabriq:nobody", 0, 31));
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
    assert_eq!(cqe.dw0, IN_DATA | 256, "IATTR 1, IPO = the subsystem NQN's offset");
    conn.connect_admin(NQN, 0, 31).unwrap();
    conn.enable().unwrap();
}

#[test]
fn connect_with_malformed_connect_data_is_refused() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let mut conn = Connection::open(target.addr, &opts).unwrap();
    let connect = Connect { recfmt: 0, qid: 0, sqsize: 31, cattr: 0, kato_ms: 0 };
    let cases = [
        (connect_data(opts.hostid, 0xFFFF, "not an nqn", &opts.hostnqn), 256, "a subsystem NQN that is no NQN"),
        (connect_data(opts.hostid, 0xFFFF, NQN, "nqn.bogus"), 512, "a host NQN that is no NQN"),
        (connect_data(opts.hostid, 1, NQN, &opts.hostnqn), 16, "a static CNTLID on the admin queue"),
    ];
    for (data, ipo, what) in cases {
        let c = conn.execute(Command::connect(&connect, data)).unwrap();
        assert_status(&c, Status::CONNECT_INVALID_PARAMETERS.with_dnr(), what);
        assert_eq!(c.cqe.dw0, IN_DATA | ipo, "{what}: IATTR 1, IPO {ipo}");
    }
    conn.connect_admin(NQN, 0, 31).unwrap();
    conn.enable().unwrap();
}

#[test]
fn connect_to_an_nvm_subsystem_through_a_discovery_only_listener_is_refused() {
    let target = Target::simple();
    let mut conn = Connection::open(target.discovery, &HostOptions::default()).unwrap();
    let cqe = refused(conn.connect_admin(NQN, 0, 31));
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
    assert_eq!(cqe.dw0, IN_DATA | 256);
    // The discovery subsystem is served there.
    conn.connect_admin(DISCOVERY_NQN, 0, 31).unwrap();
    conn.enable().unwrap();
    assert_eq!(conn.identify_controller().unwrap().cntrltype, idc::CNTRLTYPE_DISCOVERY);
}

#[test]
fn connect_with_a_record_format_other_than_zero_is_refused() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let mut conn = Connection::open(target.addr, &opts).unwrap();
    let connect = Connect { recfmt: 1, qid: 0, sqsize: 31, cattr: 0, kato_ms: 0 };
    let data = connect_data(opts.hostid, 0xFFFF, NQN, &opts.hostnqn);
    let c = conn.execute(Command::connect(&connect, data)).unwrap();
    assert_status(&c, Status::CONNECT_INCOMPATIBLE_FORMAT.with_dnr(), "RECFMT 1");
    conn.connect_admin(NQN, 0, 31).unwrap();
    conn.enable().unwrap();
}

#[test]
fn connect_with_sqsize_zero_or_above_max_queue_entries_is_refused() {
    let target = Target::start(
        "max_queue_entries = 64",
        &format!(
            "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n  block_size = 512\n"
        ),
    );
    let opts = HostOptions::default();
    let sqsize_in_sqe = 44;
    let mut admin = Connection::open(target.addr, &opts).unwrap();
    for sqsize in [0, 64, 0xFFFF] {
        let cqe = refused(admin.connect_admin(NQN, 0, sqsize));
        assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr(), "admin SQSIZE {sqsize}");
        assert_eq!(cqe.dw0, sqsize_in_sqe, "IATTR 0, IPO = SQSIZE's offset in the SQE");
    }
    // 63 (64 entries) is the largest allowed.
    let cntlid = admin.connect_admin(NQN, 0, 63).unwrap();
    admin.enable().unwrap();
    let mut io = Connection::open(target.addr, &opts).unwrap();
    for sqsize in [0, 64] {
        let cqe = refused(io.connect_io(NQN, cntlid, 1, sqsize));
        assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr(), "I/O SQSIZE {sqsize}");
        assert_eq!(cqe.dw0, sqsize_in_sqe);
    }
    io.connect_io(NQN, cntlid, 1, 63).unwrap();
    // 64 commands in flight at once are taken.
    let cids: Vec<u16> = (0..64).map(|i| io.submit(Command::read(1, i, 1, 512)).unwrap()).collect();
    for cid in cids {
        assert!(io.wait(cid).unwrap().is_success());
    }
}

#[test]
fn io_connect_with_an_unknown_cntlid_is_refused() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let (_admin, cntlid) = enabled_admin(target.addr, &opts);
    let mut io = Connection::open(target.addr, &opts).unwrap();
    let cqe = refused(io.connect_io(NQN, cntlid.wrapping_add(100), 1, 31));
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
    assert_eq!(cqe.dw0, IN_DATA | 16, "IATTR 1, IPO = CNTLID's offset in the Connect data");
    io.connect_io(NQN, cntlid, 1, 31).unwrap();
    write_read_back(&mut io, 1, 0, 1, 3);
}

#[test]
fn io_connect_with_another_hosts_nqn_is_refused() {
    let target = Target::simple();
    let owner = HostOptions::default();
    let (_admin, cntlid) = enabled_admin(target.addr, &owner);
    let intruder = HostOptions::default();
    let mut io = Connection::open(target.addr, &intruder).unwrap();
    let cqe = refused(io.connect_io(NQN, cntlid, 1, 31));
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
    assert_eq!(cqe.dw0, IN_DATA | 512, "IATTR 1, IPO = the host NQN's offset");
    // The same host NQN with another host ID is another host too.
    let impostor = HostOptions { hostid: intruder.hostid, ..owner.clone() };
    let cqe = refused(Connection::open(target.addr, &impostor).unwrap().connect_io(NQN, cntlid, 1, 31));
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
    // The owner's I/O queue is taken.
    let mut io = io_queue(target.addr, &owner, cntlid, 1);
    write_read_back(&mut io, 1, 0, 1, 4);
}

#[test]
fn io_connect_before_the_controller_is_enabled_is_a_command_sequence_error() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let mut admin = Connection::open(target.addr, &opts).unwrap();
    let cntlid = admin.connect_admin(NQN, 0, 31).unwrap();
    let mut io = Connection::open(target.addr, &opts).unwrap();
    let cqe = refused(io.connect_io(NQN, cntlid, 1, 31));
    assert_eq!(cqe.status, Status::COMMAND_SEQUENCE_ERROR.with_dnr());
    admin.enable().unwrap();
    io.connect_io(NQN, cntlid, 1, 31).unwrap();
    io.set_icd_limit(8192);
    write_read_back(&mut io, 1, 0, 1, 5);
}

#[test]
fn io_connect_beyond_the_granted_queues_is_refused() {
    let target = Target::start(
        "max_io_queues = 4",
        &format!(
            "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n  block_size = 512\n"
        ),
    );
    let qid_in_sqe = 42;
    let opts = HostOptions::default();
    // Granted by Set Features.
    let (mut admin, cntlid) = enabled_admin(target.addr, &opts);
    assert_eq!(admin.set_number_of_queues(2).unwrap().sq_count, 2);
    let mut io = Connection::open(target.addr, &opts).unwrap();
    let cqe = refused(io.connect_io(NQN, cntlid, 3, 31));
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
    assert_eq!(cqe.dw0, qid_in_sqe, "IATTR 0, IPO = QID's offset in the SQE");
    io.connect_io(NQN, cntlid, 2, 31).unwrap();
    io.set_icd_limit(8192);
    write_read_back(&mut io, 1, 0, 1, 6);
    // Without Set Features the limit is max_io_queues.
    let (_admin2, cntlid2) = enabled_admin(target.addr, &opts);
    let mut io2 = Connection::open(target.addr, &opts).unwrap();
    let cqe = refused(io2.connect_io(NQN, cntlid2, 5, 31));
    assert_eq!((cqe.status, cqe.dw0), (Status::CONNECT_INVALID_PARAMETERS.with_dnr(), qid_in_sqe));
    io2.connect_io(NQN, cntlid2, 4, 31).unwrap();
}

#[test]
fn io_connect_of_a_connected_qid_is_refused() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let (_admin, cntlid) = enabled_admin(target.addr, &opts);
    let mut first = io_queue(target.addr, &opts, cntlid, 1);
    let mut second = Connection::open(target.addr, &opts).unwrap();
    let cqe = refused(second.connect_io(NQN, cntlid, 1, 31));
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
    assert_eq!(cqe.dw0, 42, "IATTR 0, IPO = QID's offset in the SQE");
    // The first is untouched and the second takes another QID.
    write_read_back(&mut first, 1, 0, 1, 7);
    second.connect_io(NQN, cntlid, 2, 31).unwrap();
    second.set_icd_limit(8192);
    write_read_back(&mut second, 1, 1, 1, 8);
    // Once the first connection is gone its QID may be connected again.
    drop(first);
    let mut again = io_queue_when_free(target.addr, &opts, cntlid, 1);
    write_read_back(&mut again, 1, 2, 1, 9);
}

#[test]
fn commands_in_the_wrong_queue_state_are_refused() {
    let target = Target::simple();
    let opts = HostOptions::default();
    // An admin command before Connect.
    let mut admin = Connection::open(target.addr, &opts).unwrap();
    assert_status(
        &admin.execute(Command::keep_alive()).unwrap(),
        Status::COMMAND_SEQUENCE_ERROR.with_dnr(),
        "before Connect",
    );
    let cntlid = admin.connect_admin(NQN, 0, 31).unwrap();
    admin.enable().unwrap();
    // A second Connect on a connected queue.
    let connect = Connect { recfmt: 0, qid: 0, sqsize: 31, cattr: 0, kato_ms: 0 };
    let again =
        admin.execute(Command::connect(&connect, connect_data(opts.hostid, 0xFFFF, NQN, &opts.hostnqn))).unwrap();
    assert_status(&again, Status::COMMAND_SEQUENCE_ERROR.with_dnr(), "second Connect");
    // Property Get belongs to the admin queue.
    let mut io = io_queue(target.addr, &opts, cntlid, 1);
    let c = io.execute(Command::property_get(property::CSTS, PropertySize::Four)).unwrap();
    assert_status(&c, Status::INVALID_OPCODE.with_dnr(), "Property Get on an I/O queue");
    // An admin opcode on an I/O queue is no I/O opcode.
    let c = io.execute(Command::identify(cns::CONTROLLER, 0, 0)).unwrap();
    assert_status(&c, Status::INVALID_OPCODE.with_dnr(), "Identify on an I/O queue");
    write_read_back(&mut io, 1, 0, 2, 10);
    assert_eq!(admin.identify_controller().unwrap().cntlid, cntlid);
}

#[test]
fn completions_report_the_submission_queue_head() {
    let target = Target::simple();
    let opts = HostOptions::default();
    // Admin queue of 8 entries (SQSIZE 7): the Connect takes entry 0, so its completion
    // reports the head at 1; each command after it moves the head on by one, modulo 8.
    let mut admin = Connection::open(target.addr, &opts).unwrap();
    let connect = Connect { recfmt: 0, qid: 0, sqsize: 7, cattr: 0, kato_ms: 0 };
    let c = admin
        .execute(Command::connect(&connect, connect_data(opts.hostid, 0xFFFF, NQN, &opts.hostnqn)))
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(c.cqe.sqhd, 1, "SQHD of the admin Connect");
    let cntlid = c.cqe.dw0 as u16;
    let mut heads = Vec::new();
    for _ in 0..10 {
        heads.push(admin.execute(Command::keep_alive()).unwrap().cqe.sqhd);
    }
    assert_eq!(heads, vec![2, 3, 4, 5, 6, 7, 0, 1, 2, 3]);
    admin.enable().unwrap();
    // I/O queue of 4 entries (SQSIZE 3).
    let mut io = Connection::open(target.addr, &opts).unwrap();
    let connect = Connect { recfmt: 0, qid: 1, sqsize: 3, cattr: 0, kato_ms: 0 };
    let c = io
        .execute(Command::connect(&connect, connect_data(opts.hostid, cntlid, NQN, &opts.hostnqn)))
        .unwrap()
        .success()
        .unwrap();
    assert_eq!((c.cqe.sqhd, c.cqe.sqid), (1, 1), "SQHD of the I/O Connect");
    let heads: Vec<u16> = (0..6).map(|_| io.execute(Command::read(1, 0, 1, 512)).unwrap().cqe.sqhd).collect();
    assert_eq!(heads, vec![2, 3, 0, 1, 2, 3]);
}

#[test]
fn dynamic_controller_model_gives_each_association_its_own_cntlid() {
    let target = Target::simple();
    let a = HostOptions::default();
    let b = HostOptions::default();
    let (mut admin_a, cntlid_a) = enabled_admin(target.addr, &a);
    let (mut admin_b, cntlid_b) = enabled_admin(target.addr, &b);
    let (mut admin_a2, cntlid_a2) = enabled_admin(target.addr, &a);
    assert_ne!(cntlid_a, cntlid_b);
    assert_ne!(cntlid_a, cntlid_a2, "a second association of the same host is another controller");
    assert_ne!(cntlid_b, cntlid_a2);
    assert_eq!(admin_a.identify_controller().unwrap().cntlid, cntlid_a);
    assert_eq!(admin_b.identify_controller().unwrap().cntlid, cntlid_b);
    assert_eq!(admin_a2.identify_controller().unwrap().cntlid, cntlid_a2);
    // Each controller has its own I/O queue 1.
    let mut io_a = io_queue(target.addr, &a, cntlid_a, 1);
    let mut io_b = io_queue(target.addr, &b, cntlid_b, 1);
    write_read_back(&mut io_a, 1, 0, 4, 11);
    write_read_back(&mut io_b, 1, 4, 4, 12);
}

// ----- Properties -----

#[test]
fn cap_and_vs_describe_the_controller() {
    let target = Target::start(
        "max_queue_entries = 64",
        &format!(
            "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n"
        ),
    );
    let mut admin = Connection::open(target.addr, &HostOptions::default()).unwrap();
    admin.connect_admin(NQN, 0, 31).unwrap();
    let cap = Cap::from_u64(admin.property_get(property::CAP, PropertySize::Eight).unwrap());
    assert_eq!(cap.mqes, 63, "MQES = max_queue_entries - 1");
    assert!(cap.cqr, "CQR");
    assert!(cap.to_500ms > 0, "TO");
    assert_ne!(cap.css & property::CAP_CSS_NVM, 0, "CSS: NVM command set");
    assert_eq!((cap.mpsmin, cap.dstrd), (0, 0));
    let vs = admin.property_get(property::VS, PropertySize::Four).unwrap();
    assert_eq!(vs, u64::from(Vs::V2_0.to_u32()));
    assert_eq!(vs, 0x0002_0000);
}

#[test]
fn cc_and_csts_follow_enable_disable_and_shutdown() {
    let target = Target::simple();
    let mut admin = Connection::open(target.addr, &HostOptions::default()).unwrap();
    admin.connect_admin(NQN, 0, 31).unwrap();
    let cc = |a: &mut Connection| a.property_get(property::CC, PropertySize::Four).unwrap() as u32;
    assert_eq!(cc(&mut admin), 0);
    assert_eq!(admin.csts().unwrap(), Csts::default());
    admin.enable().unwrap();
    let enabled = Cc::from_u32(cc(&mut admin)).unwrap();
    assert!(enabled.en);
    assert_eq!((enabled.iosqes, enabled.iocqes), (6, 4));
    assert!(admin.csts().unwrap().rdy);
    admin.disable().unwrap();
    let csts = admin.csts().unwrap();
    assert!(!csts.rdy && !csts.cfs);
    assert!(!Cc::from_u32(cc(&mut admin)).unwrap().en);
    admin.enable().unwrap();
    assert!(admin.csts().unwrap().rdy);
    admin.shutdown().unwrap();
    let csts = admin.csts().unwrap();
    assert_eq!(csts.shst, ShutdownStatus::Complete);
    assert!(!csts.cfs);
    // The admin queue still answers.
    assert!(admin.keep_alive().unwrap().is_success());
}

#[test]
fn unsupported_property_offsets_and_sizes_are_invalid_field() {
    let target = Target::simple();
    let mut admin = Connection::open(target.addr, &HostOptions::default()).unwrap();
    admin.connect_admin(NQN, 0, 31).unwrap();
    let invalid = Status::INVALID_FIELD.with_dnr();
    let cases = [
        (Command::property_get(property::NSSR, PropertySize::Four), "Get NSSR"),
        (Command::property_get(0x30, PropertySize::Four), "Get 30h"),
        (Command::property_get(0x1000, PropertySize::Four), "Get 1000h"),
        (Command::property_get(property::CAP, PropertySize::Four), "Get CAP as 4 bytes"),
        (Command::property_get(property::CC, PropertySize::Eight), "Get CC as 8 bytes"),
        (Command::property_set(property::CAP, PropertySize::Eight, 0), "Set CAP"),
        (Command::property_set(property::VS, PropertySize::Four, 0), "Set VS"),
        (Command::property_set(property::CSTS, PropertySize::Four, 1), "Set CSTS"),
        (Command::property_set(property::CC, PropertySize::Eight, 0), "Set CC as 8 bytes"),
    ];
    for (command, what) in cases {
        assert_status(&admin.execute(command).unwrap(), invalid, what);
    }
    // A size attribute that is neither 4 nor 8 bytes.
    let mut sqe: Sqe = Command::property_get(property::CC, PropertySize::Four).sqe;
    sqe.cdw10 = (sqe.cdw10 & !0b111) | 0b010;
    assert_status(&admin.execute(Command::new(sqe)).unwrap(), invalid, "ATTRIB 2");
    // Nothing changed.
    assert_eq!(admin.property_get(property::CC, PropertySize::Four).unwrap(), 0);
    admin.enable().unwrap();
}

// ----- Identify -----

#[test]
fn identify_controller_reports_the_configured_limits_and_features() {
    let target = Target::start(
        "mdts_bytes = \"64KiB\"\nin_capsule_data_bytes = 4096\nmax_queue_entries = 96",
        &three_namespaces(),
    );
    let opts = HostOptions::default();
    let (mut admin, cntlid) = enabled_admin(target.addr, &opts);
    let id = admin.identify_controller().unwrap();
    assert_eq!(id.cntrltype, idc::CNTRLTYPE_IO);
    assert_eq!(id.cntlid, cntlid);
    assert_eq!(id.mdts, 4, "64 KiB = 2^4 pages of 4 KiB");
    assert_eq!(id.sn, padded::<20>("FQIT0001"));
    assert_eq!(id.mn, padded::<40>("fabriq integration"));
    assert_eq!(id.fr, padded::<8>(env!("CARGO_PKG_VERSION")));
    assert_eq!(id.subnqn.as_ref().map(|n| n.as_str()), Some(NQN));
    assert_eq!(id.ver, Vs::V2_0.to_u32());
    assert_eq!(id.ioccsz, (64 + 4096) / 16, "IOCCSZ: the SQE and 4 KiB of in-capsule data");
    assert_eq!(id.iorcsz, 1);
    assert_eq!(id.icdoff, 0);
    assert_eq!(id.msdbd, 1);
    assert_eq!(id.sgls, idc::SGLS_BYTE_ALIGNED | idc::SGLS_OFFSET);
    assert_eq!(id.oncs, idc::ONCS_COMPARE | idc::ONCS_DATASET_MANAGEMENT | idc::ONCS_WRITE_ZEROES);
    assert_eq!(id.vwc, idc::VWC_PRESENT | 0b110, "present, and Flush takes the broadcast NSID");
    assert!(id.nn >= 7, "NN {} below the largest NSID", id.nn);
    assert!(id.kas > 0);
    assert_eq!((id.sqes, id.cqes), (0x66, 0x44));
    assert_eq!(id.maxcmd, 96);
    assert_eq!(id.aerl, 3, "four Asynchronous Event Requests");
    assert_eq!(id.acl, 3);
    assert_eq!(id.elpe, 63, "64 error log entries");
    assert_eq!(
        id.lpa & (idc::LPA_SMART_PER_NAMESPACE | idc::LPA_COMMANDS_EFFECTS | idc::LPA_EXTENDED_DATA),
        idc::LPA_SMART_PER_NAMESPACE | idc::LPA_COMMANDS_EFFECTS | idc::LPA_EXTENDED_DATA
    );
    assert_ne!(id.ctratt & idc::CTRATT_HOST_ID_128, 0);
    assert_ne!(id.cmic & idc::CMIC_MULTI_CONTROLLER, 0);
    assert_eq!(id.oaes, idc::OAES_NAMESPACE_ATTRIBUTE);
    assert_eq!(id.frmw, 0b11, "one read-only firmware slot");
}

#[test]
fn identify_namespace_for_512_and_4096_byte_blocks() {
    let target = Target::start("", &three_namespaces());
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let ns1 = admin.identify_namespace(1).unwrap();
    assert_eq!((ns1.nsze, ns1.ncap, ns1.nuse), (131_072, 131_072, 131_072));
    assert_eq!((ns1.nlbaf, ns1.flbas), (0, 0));
    assert_eq!(ns1.lbaf[0].lbads, 9);
    assert_eq!(ns1.lbaf[0].ms, 0);
    assert_eq!(ns1.lbaf[ns1.lba_format_index()].block_size(), Some(512));
    assert_eq!(ns1.nguid, NGUID1);
    assert_eq!(ns1.dlfeat, idn::DLFEAT_READS_ZEROES | idn::DLFEAT_WRITE_ZEROES_DEALLOCATES);
    assert_eq!(ns1.nmic, idn::NMIC_SHARED);
    let ns2 = admin.identify_namespace(2).unwrap();
    assert_eq!((ns2.nsze, ns2.ncap, ns2.nuse), (4096, 4096, 4096));
    assert_eq!(ns2.lbaf[0].lbads, 12);
    assert_eq!(ns2.lbaf[ns2.lba_format_index()].block_size(), Some(4096));
    assert_ne!(ns2.nguid, [0; 16], "a derived NGUID");
    assert_ne!(ns2.nguid, ns1.nguid);
    let ns7 = admin.identify_namespace(7).unwrap();
    assert_eq!(ns7.nsze, (1 << 30) / 4096);
}

#[test]
fn identify_namespace_of_inactive_zero_and_broadcast_nsids() {
    let target = Target::start("", &three_namespaces());
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let inactive = admin.identify(cns::NAMESPACE, 5, 0).unwrap();
    assert_status(&inactive, Status::SUCCESS, "inactive NSID 5");
    assert!(inactive.data.iter().all(|&b| b == 0), "an inactive NSID reads as zeroes");
    for nsid in [0, 0xFFFF_FFFF, 0xFFFF_FFFE] {
        let c = admin.identify(cns::NAMESPACE, nsid, 0).unwrap();
        assert_status(&c, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr(), &format!("NSID {nsid:#x}"));
    }
    assert_eq!(admin.identify_namespace(1).unwrap().nsze, 131_072);
}

#[test]
fn every_nsid_up_to_nn_is_valid() {
    let target = Target::start(
        "",
        &format!(
            "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n  \
         [[subsystem.namespace]]\n  nsid = 5000\n  backend = \"mem\"\n  size = \"1MiB\"\n"
        ),
    );
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let nn = admin.identify_controller().unwrap().nn;
    assert_eq!(nn, 5000, "NN: the largest NSID");
    for nsid in [2, 1024, 1025, 4999] {
        let c = admin.identify(cns::NAMESPACE, nsid, 0).unwrap();
        assert_status(&c, Status::SUCCESS, &format!("inactive NSID {nsid}, below NN"));
        assert!(c.data.iter().all(|&b| b == 0));
    }
    let c = admin.identify(cns::NAMESPACE, 5001, 0).unwrap();
    assert_status(&c, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr(), "NSID above NN");
    assert_eq!(admin.identify_namespace(5000).unwrap().nsze, 256);
    assert_eq!(admin.active_namespaces(1).unwrap(), vec![5000]);
}

#[test]
fn active_namespace_list_is_ascending_after_the_given_nsid() {
    let target = Target::start("", &three_namespaces());
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    assert_eq!(admin.active_namespaces(0).unwrap(), vec![1, 2, 7]);
    assert_eq!(admin.active_namespaces(1).unwrap(), vec![2, 7]);
    assert_eq!(admin.active_namespaces(3).unwrap(), vec![7]);
    assert_eq!(admin.active_namespaces(7).unwrap(), Vec::<u32>::new());
    // The command-set specific list of the NVM command set is the same.
    let c = admin.execute(identify_csi(cns::CSI_ACTIVE_NAMESPACE_LIST, 1, csi::NVM)).unwrap().success().unwrap();
    assert_eq!(fabriq_target::nvme::identify::decode_ns_list(&c.data).unwrap(), vec![2, 7]);
    for nsid in [0xFFFF_FFFE, 0xFFFF_FFFF] {
        let c = admin.identify(cns::ACTIVE_NAMESPACE_LIST, nsid, 0).unwrap();
        assert_status(&c, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr(), &format!("list after {nsid:#x}"));
    }
    assert_eq!(admin.active_namespaces(0).unwrap(), vec![1, 2, 7]);
}

#[test]
fn namespace_identification_descriptors_carry_the_configured_ids() {
    let target = Target::start("", &three_namespaces());
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let uuid1 = *uuid::Uuid::parse_str(UUID1).unwrap().as_bytes();
    assert_eq!(
        admin.namespace_descriptors(1).unwrap(),
        vec![NamespaceId::Nguid(NGUID1), NamespaceId::Uuid(uuid1), NamespaceId::Csi(csi::NVM)]
    );
    // Without configured IDs the NGUID is the derived UUID's bytes, and Identify agrees.
    let ids = admin.namespace_descriptors(2).unwrap();
    let (Some(NamespaceId::Nguid(nguid)), Some(NamespaceId::Uuid(uuid))) = (ids.first(), ids.get(1)) else {
        panic!("descriptors of namespace 2: {ids:?}");
    };
    assert_eq!(nguid, uuid);
    assert_ne!(*uuid, [0; 16]);
    assert_eq!(ids[2], NamespaceId::Csi(csi::NVM));
    assert_eq!(admin.identify_namespace(2).unwrap().nguid, *nguid);
    let c = admin.identify(cns::NAMESPACE_ID_DESCRIPTORS, 5, 0).unwrap();
    assert_status(&c, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr(), "descriptors of inactive NSID 5");
    assert_eq!(admin.namespace_descriptors(7).unwrap().len(), 3);
}

#[test]
fn identify_csi_specific_structures_and_unsupported_cns() {
    let target = Target::start("", &three_namespaces());
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let c = admin.execute(identify_csi(cns::CSI_CONTROLLER, 0, csi::NVM)).unwrap().success().unwrap();
    assert_eq!(
        NvmIdentifyController::decode(&c.data).unwrap(),
        NvmIdentifyController::default(),
        "no limits beyond MDTS"
    );
    let c = admin.execute(identify_csi(cns::CSI_NAMESPACE, 1, csi::NVM)).unwrap();
    assert_status(&c, Status::SUCCESS, "CNS 05h of namespace 1");
    let c = admin.execute(identify_csi(cns::CSI_NAMESPACE, 5, csi::NVM)).unwrap();
    assert_status(&c, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr(), "CNS 05h of inactive NSID 5");
    let invalid = Status::INVALID_FIELD.with_dnr();
    let c = admin.execute(identify_csi(cns::CSI_CONTROLLER, 0, csi::ZONED_NAMESPACE)).unwrap();
    assert_status(&c, invalid, "CNS 06h for the zoned command set");
    for cns in [cns::NVM_SET_LIST, cns::ALLOCATED_NAMESPACE_LIST, cns::CONTROLLER_LIST, cns::IO_COMMAND_SET, 0xFF] {
        let c = admin.identify(cns, 0, 0).unwrap();
        assert_status(&c, invalid, &format!("CNS {cns:#x}"));
    }
    assert_eq!(admin.identify_controller().unwrap().cntrltype, idc::CNTRLTYPE_IO);
}

// ----- Get Log Page -----

#[test]
fn error_log_lists_failed_commands_newest_first() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let (mut admin, cntlid) = enabled_admin(target.addr, &opts);
    let mut io = io_queue(target.addr, &opts, cntlid, 1);
    let blocks = (64u64 << 20) / 512;
    let empty = admin.get_log_page(lid::ERROR_INFORMATION, 0, 0, PAGE, false).unwrap().success().unwrap();
    assert!(empty.data.iter().all(|&b| b == 0), "no errors yet");

    let bad_cns = admin.identify(0x1C, 0, 0).unwrap();
    let bad_ns = io.read(9, 0, 1, &mut [0; 512]).unwrap();
    let out_of_range = io.read(1, blocks, 1, &mut [0; 512]).unwrap();
    assert_status(&out_of_range, Status::LBA_OUT_OF_RANGE.with_dnr(), "read past the end");

    let page = admin.get_log_page(lid::ERROR_INFORMATION, 0, 0, PAGE, false).unwrap().success().unwrap();
    let entries: Vec<ErrorInformationEntry> = page
        .data
        .chunks_exact(ErrorInformationEntry::SIZE)
        .map(|e| ErrorInformationEntry::decode(e).unwrap())
        .collect();
    assert_eq!(entries.len(), 64);
    let expect = [(3, 1, &out_of_range, 1, blocks), (2, 1, &bad_ns, 9, 0), (1, 0, &bad_cns, 0, 0)];
    for (entry, (count, sqid, c, nsid, lba)) in entries.iter().zip(expect) {
        assert_eq!(entry.error_count, count);
        assert_eq!(entry.sqid, sqid);
        assert_eq!(entry.cid, c.cqe.cid);
        assert_eq!(entry.status, c.status());
        assert_eq!(entry.nsid, nsid);
        assert_eq!(entry.lba, lba);
    }
    assert_eq!(entries[0].status, Status::LBA_OUT_OF_RANGE.with_dnr());
    assert_eq!(entries[1].status, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
    assert_eq!(entries[2].status, Status::INVALID_FIELD.with_dnr());
    assert!(entries[3..].iter().all(|e| e.error_count == 0), "only three errors");
    assert_eq!(smart(&mut admin, 0xFFFF_FFFF).error_log_entries, 3);
    write_read_back(&mut io, 1, 0, 1, 13);
}

#[test]
fn error_log_keeps_the_newest_64_entries() {
    let target = Target::simple();
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let cids: Vec<u16> = (0..70).map(|_| admin.identify(0x1C, 0, 0).unwrap().cqe.cid).collect();
    let page = admin.get_log_page(lid::ERROR_INFORMATION, 0, 0, PAGE, false).unwrap().success().unwrap();
    let entries: Vec<ErrorInformationEntry> = page
        .data
        .chunks_exact(ErrorInformationEntry::SIZE)
        .map(|e| ErrorInformationEntry::decode(e).unwrap())
        .collect();
    let counts: Vec<u64> = entries.iter().map(|e| e.error_count).collect();
    assert_eq!(counts, (7..=70).rev().collect::<Vec<u64>>(), "the newest 64 of 70, newest first");
    let logged: Vec<u16> = entries.iter().map(|e| e.cid).collect();
    assert_eq!(logged, cids[6..].iter().rev().copied().collect::<Vec<u16>>());
    assert_eq!(smart(&mut admin, 0).error_log_entries, 70);
}

#[test]
fn smart_log_counts_io_per_namespace_and_in_total() {
    let target = Target::start("", &three_namespaces());
    let opts = HostOptions::default();
    let (mut admin, cntlid) = enabled_admin(target.addr, &opts);
    let mut io = io_queue(target.addr, &opts, cntlid, 1);
    let fresh = smart(&mut admin, 0xFFFF_FFFF);
    assert_eq!(
        (fresh.data_units_read, fresh.data_units_written, fresh.host_read_commands, fresh.host_write_commands),
        (0, 0, 0, 0)
    );
    assert_eq!(
        (fresh.available_spare_pct, fresh.available_spare_threshold_pct, fresh.power_cycles, fresh.media_errors),
        (100, 10, 1, 0)
    );

    // Namespace 1 (512-byte blocks): 1000 blocks (512000 bytes, one data unit) in four
    // writes, then one more block: 512512 bytes, two data units, five commands.
    for (slba, nlb) in [(0u64, 256u32), (256, 256), (512, 256), (768, 232), (5000, 1)] {
        let data = vec![0x5A; nlb as usize * 512];
        assert!(io.write(1, slba, nlb, &data, false).unwrap().is_success());
    }
    // Reads: one block, two of 256 blocks, and a one-block Compare: 263168 bytes, one unit.
    let mut buf = vec![0u8; 256 * 512];
    assert!(io.read(1, 0, 1, &mut buf[..512]).unwrap().is_success());
    assert!(io.read(1, 0, 256, &mut buf).unwrap().is_success());
    assert!(io.read(1, 256, 256, &mut buf).unwrap().is_success());
    assert!(io.compare(1, 0, 1, &[0x5A; 512]).unwrap().is_success());
    let ns1 = smart(&mut admin, 1);
    assert_eq!((ns1.data_units_written, ns1.host_write_commands), (2, 5));
    assert_eq!((ns1.data_units_read, ns1.host_read_commands), (1, 4));
    let ns2 = smart(&mut admin, 2);
    assert_eq!(
        (ns2.data_units_read, ns2.data_units_written, ns2.host_read_commands, ns2.host_write_commands),
        (0, 0, 0, 0)
    );

    // Namespace 2 (4096-byte blocks): one block written.
    assert!(io.write(2, 0, 1, &[1; 4096], false).unwrap().is_success());
    let ns2 = smart(&mut admin, 2);
    assert_eq!((ns2.data_units_written, ns2.host_write_commands), (1, 1));
    // The controller-wide page (NSID 0 or broadcast) sums the namespaces before rounding:
    // 516608 bytes written are two data units.
    for nsid in [0, 0xFFFF_FFFF] {
        let all = smart(&mut admin, nsid);
        assert_eq!((all.data_units_written, all.host_write_commands), (2, 6), "NSID {nsid:#x}");
        assert_eq!((all.data_units_read, all.host_read_commands), (1, 4), "NSID {nsid:#x}");
    }
    let c = admin.get_log_page(lid::SMART_HEALTH, 5, 0, SmartLog::SIZE, false).unwrap();
    assert_status(&c, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr(), "SMART of inactive NSID 5");
    assert_eq!(smart(&mut admin, 1).host_write_commands, 5);
}

#[test]
fn firmware_slot_log_reports_the_running_version_in_slot_one() {
    let target = Target::simple();
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let c = admin.get_log_page(lid::FIRMWARE_SLOT, 0, 0, FirmwareSlotLog::SIZE, false).unwrap().success().unwrap();
    let fw = FirmwareSlotLog::decode(&c.data).unwrap();
    assert_eq!(fw.afi & 0b111, 1, "slot 1 active");
    assert_eq!(fw.frs[0], padded::<8>(env!("CARGO_PKG_VERSION")));
    // Identify reports one slot: the others are unsupported, and read as zeroes.
    assert!(fw.frs[1..].iter().all(|slot| *slot == [0; 8]), "unsupported slots: {:?}", &fw.frs[1..]);
    assert_eq!(admin.identify_controller().unwrap().fr, fw.frs[0]);
}

#[test]
fn commands_supported_and_effects_log_lists_what_the_target_implements() {
    let target = Target::simple();
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let c = admin
        .get_log_page(lid::COMMANDS_SUPPORTED_AND_EFFECTS, 0, 0, CommandsEffectsLog::SIZE, false)
        .unwrap()
        .success()
        .unwrap();
    let dword = |at: usize| u32::from_le_bytes(c.data[at * 4..at * 4 + 4].try_into().unwrap());
    let admin_ops = [
        AdminOpcode::GetLogPage,
        AdminOpcode::Identify,
        AdminOpcode::Abort,
        AdminOpcode::SetFeatures,
        AdminOpcode::GetFeatures,
        AdminOpcode::AsyncEventRequest,
        AdminOpcode::KeepAlive,
    ];
    for op in 0..=255u8 {
        let supported = admin_ops.iter().any(|&a| u8::from(a) == op);
        assert_eq!(dword(usize::from(op)), if supported { log::EFFECTS_CSUPP } else { 0 }, "admin opcode {op:#04x}");
    }
    let read_type = [IoOpcode::Flush, IoOpcode::Read, IoOpcode::Compare];
    let write_type = [IoOpcode::Write, IoOpcode::WriteZeroes, IoOpcode::DatasetManagement];
    for op in 0..=255u8 {
        let want = if write_type.iter().any(|&w| u8::from(w) == op) {
            log::EFFECTS_CSUPP | log::EFFECTS_LBCC
        } else if read_type.iter().any(|&r| u8::from(r) == op) {
            log::EFFECTS_CSUPP
        } else {
            0
        };
        assert_eq!(dword(256 + usize::from(op)), want, "I/O opcode {op:#04x}");
    }
}

#[test]
fn changed_namespace_list_is_empty() {
    let target = Target::simple();
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let c = admin
        .get_log_page(lid::CHANGED_NAMESPACE_LIST, 0, 0, log::CHANGED_NS_LIST_SIZE, false)
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(log::decode_changed_ns_list(&c.data).unwrap(), log::ChangedNamespaces::List(Vec::new()));
}

#[test]
fn log_page_windows_and_bounds() {
    let target = Target::start(
        "mdts_bytes = \"64KiB\"",
        &format!(
            "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n"
        ),
    );
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let whole = admin.get_log_page(lid::COMMANDS_SUPPORTED_AND_EFFECTS, 0, 0, PAGE, false).unwrap().success().unwrap();
    let window =
        admin.get_log_page(lid::COMMANDS_SUPPORTED_AND_EFFECTS, 0, 1024, 1024, false).unwrap().success().unwrap();
    assert_eq!(window.data, whole.data[1024..2048], "the I/O half of the effects log");
    let smart_whole = admin.get_log_page(lid::SMART_HEALTH, 0, 0, SmartLog::SIZE, false).unwrap().success().unwrap();
    let smart_tail = admin.get_log_page(lid::SMART_HEALTH, 0, 508, 4, false).unwrap().success().unwrap();
    assert_eq!(smart_tail.data, smart_whole.data[508..512]);
    let invalid = Status::INVALID_FIELD.with_dnr();
    let c = admin.get_log_page(lid::SMART_HEALTH, 0, 512, 4, false).unwrap();
    assert_status(&c, invalid, "SMART at offset 512, past its end");
    let c = admin.get_log_page(lid::COMMANDS_SUPPORTED_AND_EFFECTS, 0, 4096, 4, false).unwrap();
    assert_status(&c, invalid, "effects at offset 4096");
    let c = admin.get_log_page(lid::SMART_HEALTH, 0, 2, 4, false).unwrap();
    assert_status(&c, invalid, "an offset that is not dword aligned");
    let c = admin.get_log_page(lid::SMART_HEALTH, 0, 0, 64 * 1024 + 4, false).unwrap();
    assert_status(&c, invalid, "a length above MDTS");
    let c = admin.get_log_page(lid::ERROR_INFORMATION, 0, 0, 64 * 1024, false).unwrap();
    assert_status(&c, Status::SUCCESS, "a length of exactly MDTS");
    for lid in [lid::DEVICE_SELF_TEST, lid::SANITIZE_STATUS, lid::DISCOVERY, 0xC0] {
        let c = admin.get_log_page(lid, 0, 0, 512, false).unwrap();
        assert_status(&c, Status::INVALID_LOG_PAGE.with_dnr(), &format!("log {lid:#x}"));
    }
    assert_eq!(admin.get_log_page(lid::SMART_HEALTH, 0, 0, SmartLog::SIZE, false).unwrap().data.len(), SmartLog::SIZE);
}

// ----- Features -----

#[test]
fn number_of_queues_grants_at_most_max_io_queues() {
    let target = Target::start(
        "max_io_queues = 6",
        &format!(
            "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n  block_size = 512\n"
        ),
    );
    let opts = HostOptions::default();
    let (mut admin, cntlid) = enabled_admin(target.addr, &opts);
    let before = admin.get_features(fid::NUMBER_OF_QUEUES, 0, 0).unwrap().success().unwrap();
    assert_eq!(before.cqe.dw0, 5 | 5 << 16, "until Set Features: max_io_queues, 0's based");
    let c = admin.execute(Command::set_number_of_queues(2)).unwrap().success().unwrap();
    assert_eq!(c.cqe.dw0, 1 | 1 << 16, "two granted, 0's based");
    let c = admin.execute(Command::set_number_of_queues(100)).unwrap().success().unwrap();
    assert_eq!(c.cqe.dw0, 5 | 5 << 16, "six granted of 100 asked");
    // Asymmetric asks (NSQR 2, NCQR 0) get the larger of the two.
    let c = admin.execute(set_features_cmd(fid::NUMBER_OF_QUEUES, 2, false)).unwrap().success().unwrap();
    assert_eq!(c.cqe.dw0, 2 | 2 << 16);
    let c = admin.execute(set_features_cmd(fid::NUMBER_OF_QUEUES, 0xFFFF, false)).unwrap();
    assert_status(&c, Status::INVALID_FIELD.with_dnr(), "NSQR FFFFh");
    assert_eq!(admin.get_features(fid::NUMBER_OF_QUEUES, 0, 0).unwrap().cqe.dw0, 2 | 2 << 16);
    // Once an I/O queue exists the number is fixed.
    let mut io = io_queue(target.addr, &opts, cntlid, 3);
    let c = admin.execute(Command::set_number_of_queues(1)).unwrap();
    assert_status(&c, Status::COMMAND_SEQUENCE_ERROR.with_dnr(), "Number of Queues with an I/O queue connected");
    assert_eq!(admin.get_features(fid::NUMBER_OF_QUEUES, 0, 0).unwrap().cqe.dw0, 2 | 2 << 16);
    write_read_back(&mut io, 1, 0, 1, 14);
}

#[test]
fn keep_alive_timer_and_async_event_configuration_features() {
    let target = Target::simple();
    let mut admin = Connection::open(target.addr, &HostOptions::default()).unwrap();
    admin.connect_admin(NQN, 60_000, 31).unwrap();
    admin.enable().unwrap();
    assert_eq!(
        admin.get_features(fid::KEEP_ALIVE_TIMER, 0, 0).unwrap().success().unwrap().cqe.dw0,
        60_000,
        "KATO from Connect"
    );
    assert!(admin.set_features(fid::KEEP_ALIVE_TIMER, 90_000).unwrap().is_success());
    assert_eq!(admin.get_features(fid::KEEP_ALIVE_TIMER, 0, 0).unwrap().cqe.dw0, 90_000);
    assert_eq!(admin.get_features(fid::ASYNC_EVENT_CONFIGURATION, 0, 0).unwrap().success().unwrap().cqe.dw0, 0);
    assert!(admin.set_features(fid::ASYNC_EVENT_CONFIGURATION, feat::AEC_NAMESPACE_ATTRIBUTE).unwrap().is_success());
    assert_eq!(
        admin.get_features(fid::ASYNC_EVENT_CONFIGURATION, 0, 0).unwrap().cqe.dw0,
        feat::AEC_NAMESPACE_ATTRIBUTE
    );
    assert!(admin.set_features(fid::ASYNC_EVENT_CONFIGURATION, 0).unwrap().is_success());
    assert_eq!(admin.get_features(fid::ASYNC_EVENT_CONFIGURATION, 0, 0).unwrap().cqe.dw0, 0);
}

#[test]
fn volatile_write_cache_feature() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let (mut admin, cntlid) = enabled_admin(target.addr, &opts);
    assert_eq!(
        admin.get_features(fid::VOLATILE_WRITE_CACHE, 0, 0).unwrap().success().unwrap().cqe.dw0,
        feat::VWC_WCE,
        "enabled by default"
    );
    assert!(admin.set_features(fid::VOLATILE_WRITE_CACHE, 0).unwrap().is_success());
    assert_eq!(admin.get_features(fid::VOLATILE_WRITE_CACHE, 0, 0).unwrap().cqe.dw0, 0);
    assert_eq!(
        admin.get_features(fid::VOLATILE_WRITE_CACHE, feat::Sel::Default as u8, 0).unwrap().cqe.dw0,
        feat::VWC_WCE
    );
    // Writes through (the cache disabled) work and read back.
    let mut io = io_queue(target.addr, &opts, cntlid, 1);
    write_read_back(&mut io, 1, 0, 16, 15);
    assert!(io.write_zeroes(1, 4, 4, false).unwrap().is_success());
    let mut back = vec![0u8; 4 * 512];
    assert!(io.read(1, 4, 4, &mut back).unwrap().is_success());
    assert!(back.iter().all(|&b| b == 0));
    assert!(admin.set_features(fid::VOLATILE_WRITE_CACHE, feat::VWC_WCE).unwrap().is_success());
    assert_eq!(admin.get_features(fid::VOLATILE_WRITE_CACHE, 0, 0).unwrap().cqe.dw0, feat::VWC_WCE);
}

#[test]
fn host_identifier_feature_returns_the_connect_host_id() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let (mut admin, _) = enabled_admin(target.addr, &opts);
    let c = admin
        .execute(get_features_cmd(fid::HOST_IDENTIFIER, 0, feat::HOST_ID_EXHID).with_data_in(16))
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(c.data, opts.hostid, "the 128-bit host ID of the Connect data");
    assert_eq!(c.cqe.dw0 & 1, 1, "EXHID");
    let c = admin.execute(get_features_cmd(fid::HOST_IDENTIFIER, 0, 0).with_data_in(16)).unwrap();
    assert_status(&c, Status::INVALID_FIELD.with_dnr(), "64-bit host ID (EXHID clear)");
    let c = admin.execute(set_features_cmd(fid::HOST_IDENTIFIER, feat::HOST_ID_EXHID, false)).unwrap();
    assert_status(&c, Status::COMMAND_SEQUENCE_ERROR.with_dnr(), "Set Features Host Identifier on fabrics");
    assert!(admin.keep_alive().unwrap().is_success());
}

#[test]
fn arbitration_and_power_management_features() {
    let target = Target::simple();
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    assert_eq!(admin.get_features(fid::ARBITRATION, 0, 0).unwrap().success().unwrap().cqe.dw0, 0);
    assert!(admin.set_features(fid::ARBITRATION, 0x0302_0103).unwrap().is_success());
    assert_eq!(admin.get_features(fid::ARBITRATION, 0, 0).unwrap().cqe.dw0, 0x0302_0103);
    assert_eq!(admin.get_features(fid::POWER_MANAGEMENT, 0, 0).unwrap().success().unwrap().cqe.dw0, 0);
    assert!(admin.set_features(fid::POWER_MANAGEMENT, 0).unwrap().is_success(), "power state 0");
    for ps in [1, 31] {
        let c = admin.set_features(fid::POWER_MANAGEMENT, ps).unwrap();
        assert_status(&c, Status::INVALID_FIELD.with_dnr(), &format!("power state {ps}"));
    }
    assert_eq!(admin.get_features(fid::POWER_MANAGEMENT, 0, 0).unwrap().cqe.dw0, 0);
}

#[test]
fn feature_select_default_and_supported_capabilities() {
    let target = Target::simple();
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let default = feat::Sel::Default as u8;
    let supported = feat::Sel::SupportedCapabilities as u8;
    assert!(admin.set_features(fid::ARBITRATION, 3).unwrap().is_success());
    assert!(admin.set_features(fid::ASYNC_EVENT_CONFIGURATION, feat::AEC_NAMESPACE_ATTRIBUTE).unwrap().is_success());
    assert_eq!(admin.get_features(fid::ARBITRATION, 0, 0).unwrap().cqe.dw0, 3);
    assert_eq!(admin.get_features(fid::ARBITRATION, default, 0).unwrap().success().unwrap().cqe.dw0, 0);
    assert_eq!(admin.get_features(fid::ASYNC_EVENT_CONFIGURATION, default, 0).unwrap().cqe.dw0, 0);
    assert_eq!(admin.get_features(fid::TEMPERATURE_THRESHOLD, default, 0).unwrap().cqe.dw0, 0x0157);
    for f in [
        fid::ARBITRATION,
        fid::POWER_MANAGEMENT,
        fid::TEMPERATURE_THRESHOLD,
        fid::VOLATILE_WRITE_CACHE,
        fid::NUMBER_OF_QUEUES,
        fid::KEEP_ALIVE_TIMER,
        fid::ASYNC_EVENT_CONFIGURATION,
    ] {
        let c = admin.get_features(f, supported, 0).unwrap();
        assert_status(&c, Status::SUCCESS, &format!("capabilities of FID {f:#x}"));
        assert_eq!(c.cqe.dw0, feat::CAP_CHANGEABLE, "FID {f:#x}: changeable, neither saveable nor per namespace");
    }
    let c = admin.get_features(fid::TIMESTAMP, supported, 0).unwrap();
    assert_status(&c, Status::INVALID_FIELD.with_dnr(), "capabilities of an unsupported feature");
}

#[test]
fn saving_and_unknown_features_are_refused() {
    let target = Target::simple();
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    for f in [fid::ARBITRATION, fid::VOLATILE_WRITE_CACHE, fid::KEEP_ALIVE_TIMER] {
        let c = admin.execute(set_features_cmd(f, 0, true)).unwrap();
        assert_status(&c, Status::FEATURE_IDENTIFIER_NOT_SAVEABLE.with_dnr(), &format!("save FID {f:#x}"));
    }
    assert_eq!(
        admin.get_features(fid::VOLATILE_WRITE_CACHE, 0, 0).unwrap().cqe.dw0,
        feat::VWC_WCE,
        "unchanged by the refused save"
    );
    for f in [fid::LBA_RANGE_TYPE, fid::HOST_MEMORY_BUFFER, fid::TIMESTAMP, 0x7E, 0xC0] {
        let c = admin.get_features(f, 0, 0).unwrap();
        assert_status(&c, Status::INVALID_FIELD.with_dnr(), &format!("Get FID {f:#x}"));
        let c = admin.set_features(f, 0).unwrap();
        assert_status(&c, Status::INVALID_FIELD.with_dnr(), &format!("Set FID {f:#x}"));
    }
    assert!(admin.keep_alive().unwrap().is_success());
}

// ----- Keep Alive, Abort, Asynchronous Event Request, Disconnect -----

#[test]
fn keep_alive_and_abort() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let (mut admin, cntlid) = enabled_admin(target.addr, &opts);
    let c = admin.keep_alive().unwrap();
    assert_eq!((c.status(), c.cqe.dw0), (Status::SUCCESS, 0));
    let _io = io_queue(target.addr, &opts, cntlid, 1);
    for (sqid, cid) in [(1, 0), (0, 1234), (7, 7)] {
        let c = admin.abort(sqid, cid).unwrap();
        assert_status(&c, Status::SUCCESS, "Abort");
        assert_eq!(c.cqe.dw0 & 1, 1, "command not aborted");
    }
}

#[test]
fn async_event_requests_are_held_up_to_the_limit() {
    let target = Target::simple();
    let (mut admin, _) = enabled_admin(target.addr, &HostOptions::default());
    let held: Vec<u16> = (0..4).map(|_| admin.async_event_request().unwrap()).collect();
    // The Keep Alive's completion comes after anything completed before it: the requests
    // are still held.
    assert!(admin.keep_alive().unwrap().is_success());
    assert_eq!(admin.outstanding(), 4);
    let fifth = admin.execute(Command::async_event_request()).unwrap();
    assert_status(&fifth, Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED.with_dnr(), "fifth request");
    assert_eq!(admin.outstanding(), 4);
    assert!(!held.contains(&fifth.cqe.cid));
    assert_eq!(admin.identify_controller().unwrap().aerl, 3);
    assert_eq!(admin.outstanding(), 4);
}

#[test]
fn disconnect_closes_the_queue_and_the_admin_disconnect_ends_the_association() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let (mut admin, cntlid) = enabled_admin(target.addr, &opts);
    let mut io = io_queue(target.addr, &opts, cntlid, 1);
    write_read_back(&mut io, 1, 0, 1, 16);
    assert_status(&io.disconnect().unwrap(), Status::SUCCESS, "I/O queue Disconnect");
    assert_closed(&mut io, "disconnected I/O queue");
    // The controller lives on and its QID is free again.
    let mut io = io_queue_when_free(target.addr, &opts, cntlid, 1);
    write_read_back(&mut io, 1, 1, 1, 17);
    assert!(admin.keep_alive().unwrap().is_success());
    // Disconnect on the admin queue ends the association: its I/O queues close too.
    assert_status(&admin.disconnect().unwrap(), Status::SUCCESS, "admin Disconnect");
    assert_closed(&mut admin, "disconnected admin queue");
    assert_closed(&mut io, "I/O queue of a torn-down controller");
    let cqe = refused(Connection::open(target.addr, &opts).unwrap().connect_io(NQN, cntlid, 1, 31));
    assert_eq!(
        (cqe.status, cqe.dw0),
        (Status::CONNECT_INVALID_PARAMETERS.with_dnr(), IN_DATA | 16),
        "the controller is gone"
    );
    // A new association works.
    let (_admin, cntlid) = enabled_admin(target.addr, &opts);
    let mut io = io_queue(target.addr, &opts, cntlid, 1);
    write_read_back(&mut io, 1, 0, 2, 18);
}

#[test]
fn admin_commands_before_enable_and_io_queues_after_a_reset() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let mut admin = Connection::open(target.addr, &opts).unwrap();
    let cntlid = admin.connect_admin(NQN, 0, 31).unwrap();
    // Before CC.EN = 1 only Property Get/Set make sense (as Linux nvmet answers).
    let early = admin.execute(Command::identify(cns::CONTROLLER, 0, 0)).unwrap();
    assert_eq!(early.status(), Status::COMMAND_SEQUENCE_ERROR.with_dnr());
    admin.enable().unwrap();
    let mut io = Connection::open(target.addr, &opts).unwrap();
    io.connect_io(NQN, cntlid, 1, 31).unwrap();
    assert!(io.write(1, 0, 1, &[7u8; 512], false).unwrap().is_success());
    // A controller reset (CC.EN 1 -> 0) deletes the I/O queues: the target closes them.
    admin.disable().unwrap();
    let closed = closed_within(&mut io, Duration::from_secs(5));
    assert!(closed, "the I/O queue stayed open after the controller reset");
    admin.enable().unwrap();
    let mut again = Connection::open(target.addr, &opts).unwrap();
    again.connect_io(NQN, cntlid, 1, 31).unwrap();
    let mut back = [0u8; 512];
    assert!(again.read(1, 0, 1, &mut back).unwrap().is_success());
    assert_eq!(back, [7u8; 512]);
}

/// Whether the target closes `conn` within `limit` (anything it still sends is skipped).
fn closed_within(conn: &mut Connection, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match conn.recv_pdu_timeout(Duration::from_millis(200)) {
            Ok(_) | Err(HostError::Timeout(_)) => {}
            Err(_) => return true,
        }
    }
    false
}
