//! The discovery controller against the real daemon over loopback: Connect to the well-known
//! discovery NQN (on the discovery-only listener and on the NVM listener), its Identify data,
//! its log page read as nvme-cli does (`discovery_log()`: the current discovery subsystem entry,
//! each allowed NVM subsystem once per listener that serves NVM subsystems, advertised
//! addresses, subsystems whose allow list excludes the host left out, the generation counter),
//! and the admin commands and I/O queues a discovery controller refuses.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::{NQN, Target, free_port};
use fabriq_bench::host::{Command, Completion, Connection, HostError, HostOptions};
use fabriq_target::nvme::discovery::{self as disc, DiscoveryLogEntry, Tsas};
use fabriq_target::nvme::features::{self as feat, fid};
use fabriq_target::nvme::identify::cns;
use fabriq_target::nvme::identify::controller as idc;
use fabriq_target::nvme::log::lid;
use fabriq_target::nvme::{DISCOVERY_NQN, Features, Status};

const MINE: &str = "nqn.2026-11.dev.fabriq:mine";
const THEIRS: &str = "nqn.2026-11.dev.fabriq:theirs";

/// The daemon of these tests: `NQN` open to any host, `MINE` open to `host` only, `THEIRS`
/// open to another host only; besides the harness's two listeners (port IDs 1 and 2, the
/// second discovery-only), listener 3 advertises an IPv4 address and listener 4 an IPv6 one.
struct Setup {
    target: Target,
    host: HostOptions,
    /// The bound address of listener 3.
    third: SocketAddr,
}

fn ns() -> &'static str {
    "  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n"
}

fn setup() -> Setup {
    let host = HostOptions::default();
    let other = HostOptions::default();
    let (p3, p4) = (free_port(), free_port());
    let ns = ns();
    let rest = format!(
        "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n{ns}\n\
         [[subsystem]]\nnqn = \"{MINE}\"\nhosts = [\"{mine}\"]\n{ns}\n\
         [[subsystem]]\nnqn = \"{THEIRS}\"\nhosts = [\"{theirs}\"]\n{ns}\n\
         [[listener]]\naddress = \"127.0.0.1:{p3}\"\nadvertise = \"192.0.2.10:4420\"\n\n\
         [[listener]]\naddress = \"127.0.0.1:{p4}\"\nadvertise = \"[2001:db8::7]:4421\"\n",
        mine = host.hostnqn,
        theirs = other.hostnqn,
    );
    let target = Target::start("", &rest);
    Setup { target, host, third: ([127, 0, 0, 1], p3).into() }
}

/// A discovery controller: connected (KATO 0) and enabled.
fn discovery_ctrl(addr: SocketAddr, opts: &HostOptions) -> (Connection, u16) {
    let mut conn = Connection::open(addr, opts).unwrap();
    let cntlid = conn.connect_admin(DISCOVERY_NQN, 0, 31).unwrap();
    conn.enable().unwrap();
    (conn, cntlid)
}

/// What an entry says, as comparable text: subtype, NQN, port ID, family, address, service.
fn summary(e: &DiscoveryLogEntry) -> (u8, String, u16, u8, String, String) {
    (e.subtype, e.subnqn.as_str().to_owned(), e.portid, e.adrfam, e.traddr.clone(), e.trsvcid.clone())
}

fn assert_status(c: &Completion, want: Status, what: &str) {
    assert_eq!(c.status(), want, "{what}: {:?}", c.cqe);
}

#[test]
fn discovery_controller_identifies_as_one() {
    let s = setup();
    let (mut conn, cntlid) = discovery_ctrl(s.target.discovery, &s.host);
    let id = conn.identify_controller().unwrap();
    assert_eq!(id.cntrltype, idc::CNTRLTYPE_DISCOVERY);
    assert_eq!(id.cntlid, cntlid);
    assert_eq!(id.subnqn.as_ref().map(|n| n.as_str()), Some(DISCOVERY_NQN));
    assert_eq!(id.oaes, idc::OAES_DISCOVERY_LOG_CHANGE);
    assert_eq!(id.nn, 0, "no namespaces");
    assert!(id.kas > 0);
    // KATO 0 in the Connect gets the configured default (120 s) so stale controllers go away.
    let c = conn.get_features(fid::KEEP_ALIVE_TIMER, 0, 0).unwrap();
    assert_eq!((c.status(), c.cqe.dw0), (Status::SUCCESS, 120_000));
    assert!(conn.keep_alive().unwrap().is_success());
}

#[test]
fn discovery_log_lists_each_allowed_subsystem_once_per_nvm_listener() {
    let s = setup();
    let (mut conn, _) = discovery_ctrl(s.target.discovery, &s.host);
    let page = conn.discovery_log().unwrap();
    let (port, dport) = (s.target.addr.port().to_string(), s.target.discovery.port().to_string());
    let current = &page.entries[0];
    assert_eq!(
        summary(current),
        (
            disc::SUBTYPE_CURRENT_DISCOVERY,
            DISCOVERY_NQN.to_owned(),
            2,
            disc::ADRFAM_IPV4,
            "127.0.0.1".to_owned(),
            dport
        ),
        "the current discovery subsystem, as reached"
    );
    let nvm = |nqn: &str, portid, adrfam, traddr: &str, trsvcid: &str| {
        (disc::SUBTYPE_NVM, nqn.to_owned(), portid, adrfam, traddr.to_owned(), trsvcid.to_owned())
    };
    let mut want = BTreeSet::new();
    for nqn in [NQN, MINE] {
        want.insert(nvm(nqn, 1, disc::ADRFAM_IPV4, "127.0.0.1", &port));
        want.insert(nvm(nqn, 3, disc::ADRFAM_IPV4, "192.0.2.10", "4420"));
        want.insert(nvm(nqn, 4, disc::ADRFAM_IPV6, "2001:db8::7", "4421"));
    }
    let got: Vec<_> = page.entries[1..].iter().map(summary).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "no entry twice, none for {THEIRS}, none for the discovery-only listener: {got:#?}"
    );
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    for e in &page.entries {
        assert_eq!(e.trtype, disc::TRTYPE_TCP);
        assert_eq!(e.treq & 0b11, disc::TREQ_SECURE_CHANNEL_NOT_REQUIRED);
        assert_eq!(e.cntlid, 0xFFFF, "dynamic controller model");
        assert_eq!(e.asqsz, 128, "max_queue_entries");
        assert_eq!(e.tsas, Tsas::Tcp { sectype: disc::TCP_SECTYPE_NONE });
    }
    assert!(page.genctr >= 1);
}

#[test]
fn a_host_allowed_nowhere_sees_the_open_subsystem_only() {
    let s = setup();
    let stranger = HostOptions::default();
    let (mut conn, _) = discovery_ctrl(s.target.discovery, &stranger);
    let page = conn.discovery_log().unwrap();
    assert_eq!(page.entries[0].subtype, disc::SUBTYPE_CURRENT_DISCOVERY);
    let nqns: BTreeSet<&str> = page.entries[1..].iter().map(|e| e.subnqn.as_str()).collect();
    assert_eq!(nqns, BTreeSet::from([NQN]));
    assert_eq!(page.entries.len(), 1 + 3);
}

#[test]
fn discovery_is_served_on_the_nvm_listeners_too() {
    let s = setup();
    let (mut conn, _) = discovery_ctrl(s.target.addr, &s.host);
    let page = conn.discovery_log().unwrap();
    assert_eq!(
        summary(&page.entries[0]),
        (
            disc::SUBTYPE_CURRENT_DISCOVERY,
            DISCOVERY_NQN.to_owned(),
            1,
            disc::ADRFAM_IPV4,
            "127.0.0.1".to_owned(),
            s.target.addr.port().to_string()
        )
    );
    assert_eq!(page.entries.len(), 1 + 6);
    // Through a listener with an advertised address, the current entry shows that address.
    let (mut conn, _) = discovery_ctrl(s.third, &s.host);
    let page = conn.discovery_log().unwrap();
    assert_eq!(
        summary(&page.entries[0]),
        (
            disc::SUBTYPE_CURRENT_DISCOVERY,
            DISCOVERY_NQN.to_owned(),
            3,
            disc::ADRFAM_IPV4,
            "192.0.2.10".to_owned(),
            "4420".to_owned()
        )
    );
    // The NVM subsystem is reachable where discovery said.
    let mut admin = Connection::open(s.target.addr, &s.host).unwrap();
    admin.connect_admin(MINE, 0, 31).unwrap();
    admin.enable().unwrap();
}

#[test]
fn generation_counter_is_stable_while_nothing_changes() {
    let s = setup();
    let (mut a, _) = discovery_ctrl(s.target.discovery, &s.host);
    let (mut b, _) = discovery_ctrl(s.target.addr, &HostOptions::default());
    let first = a.discovery_log().unwrap();
    let again = a.discovery_log().unwrap();
    let other = b.discovery_log().unwrap();
    assert!(first.genctr >= 1);
    assert_eq!(again, first);
    assert_eq!(other.genctr, first.genctr, "one counter for the whole target");
    // The header alone, and a window of it, agree.
    let header = a.get_log_page(lid::DISCOVERY, 0, 0, 16, false).unwrap().success().unwrap();
    assert_eq!(u64::from_le_bytes(header.data[0..8].try_into().unwrap()), first.genctr);
    assert_eq!(u64::from_le_bytes(header.data[8..16].try_into().unwrap()), first.entries.len() as u64);
    let numrec = a.get_log_page(lid::DISCOVERY, 0, 8, 8, false).unwrap().success().unwrap();
    assert_eq!(numrec.data, header.data[8..16]);
    // Past the end of the page.
    let end = 1024 * (1 + first.entries.len() as u64);
    let c = a.get_log_page(lid::DISCOVERY, 0, end, 1024, false).unwrap();
    assert_status(&c, Status::INVALID_FIELD.with_dnr(), "discovery log past its end");
    assert_eq!(a.discovery_log().unwrap().genctr, first.genctr);
}

#[test]
fn a_discovery_controller_refuses_io_controller_commands() {
    let s = setup();
    let (mut conn, _) = discovery_ctrl(s.target.discovery, &s.host);
    let invalid = Status::INVALID_FIELD.with_dnr();
    for (cns, nsid) in [
        (cns::NAMESPACE, 1),
        (cns::ACTIVE_NAMESPACE_LIST, 0),
        (cns::NAMESPACE_ID_DESCRIPTORS, 1),
        (cns::CSI_CONTROLLER, 0),
    ] {
        assert_status(&conn.identify(cns, nsid, 0).unwrap(), invalid, &format!("Identify CNS {cns:#x}"));
    }
    for f in [fid::NUMBER_OF_QUEUES, fid::VOLATILE_WRITE_CACHE, fid::ARBITRATION, fid::POWER_MANAGEMENT] {
        assert_status(&conn.get_features(f, 0, 0).unwrap(), invalid, &format!("Get Features {f:#x}"));
        assert_status(&conn.set_features(f, 0).unwrap(), invalid, &format!("Set Features {f:#x}"));
        let supported = feat::Sel::SupportedCapabilities as u8;
        assert_status(&conn.get_features(f, supported, 0).unwrap(), invalid, &format!("capabilities of {f:#x}"));
    }
    let host_id = Features { fid: fid::HOST_IDENTIFIER, cdw11: feat::HOST_ID_EXHID, ..Features::default() };
    let c = conn
        .execute(Command::new(host_id.to_sqe(fabriq_target::nvme::AdminOpcode::GetFeatures, 0)).with_data_in(16))
        .unwrap();
    assert_status(&c, invalid, "Host Identifier");
    assert_status(&conn.abort(0, 1).unwrap(), Status::INVALID_OPCODE.with_dnr(), "Abort");
    for lid in [lid::SMART_HEALTH, lid::ERROR_INFORMATION, lid::COMMANDS_SUPPORTED_AND_EFFECTS] {
        let c = conn.get_log_page(lid, 0, 0, 512, false).unwrap();
        assert_status(&c, Status::INVALID_LOG_PAGE.with_dnr(), &format!("log {lid:#x}"));
    }
    // What it does take.
    assert!(conn.set_features(fid::ASYNC_EVENT_CONFIGURATION, feat::AEC_DISCOVERY_LOG_CHANGE).unwrap().is_success());
    assert_eq!(
        conn.get_features(fid::ASYNC_EVENT_CONFIGURATION, 0, 0).unwrap().cqe.dw0,
        feat::AEC_DISCOVERY_LOG_CHANGE
    );
    assert!(conn.set_features(fid::KEEP_ALIVE_TIMER, 30_000).unwrap().is_success());
    assert_eq!(conn.get_features(fid::KEEP_ALIVE_TIMER, 0, 0).unwrap().cqe.dw0, 30_000);
    assert_eq!(conn.discovery_log().unwrap().entries.len(), 1 + 6);
}

#[test]
fn a_discovery_controller_has_no_io_queues() {
    let s = setup();
    let (mut conn, cntlid) = discovery_ctrl(s.target.discovery, &s.host);
    let mut io = Connection::open(s.target.discovery, &s.host).unwrap();
    match io.connect_io(DISCOVERY_NQN, cntlid, 1, 31) {
        Err(HostError::Status(cqe)) => {
            assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
            assert_eq!(cqe.dw0, 42, "IATTR 0, IPO = QID's offset in the SQE");
        }
        other => panic!("an I/O queue of a discovery controller was not refused: {other:?}"),
    }
    assert_eq!(conn.discovery_log().unwrap().entries.len(), 1 + 6);
}
