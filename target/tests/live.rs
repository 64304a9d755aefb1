//! The target changed while hosts are connected, run in the test's process (`common::inproc`)
//! and driven over loopback by the host library: namespaces grown, added and removed (the
//! Asynchronous Event Request completes with a Namespace Attribute Changed notice, masked until
//! the Changed Namespace List log is read; Identify shows the new size; data survives), hosts
//! allowed and revoked (the revoked host's queues close, nobody else's), subsystems removed
//! (discovery controllers get their event from the control plane's thread), listeners added
//! and removed, a volume backend whose transfers cross extent boundaries, and the counters the
//! node API exports.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::inproc::{self, InProc, device_file, mem_namespace, namespace, subsystem, volume};
use fabriq_bench::host::{Connection, HostError, HostOptions};
use fabriq_bench::pattern;
use fabriq_target::nvme::discovery as disc;
use fabriq_target::nvme::features::{self as feat, AsyncEvent, fid};
use fabriq_target::nvme::log::{self, ChangedNamespaces, lid};
use fabriq_target::nvme::{DISCOVERY_NQN, NSID_BROADCAST, Status};
use fabriq_target::subsys::Connections;

const VOL: &str = "nqn.2026-11.dev.fabriq:vol:67e55044-10b1-426f-9247-bb680e5fe0c8";
const OTHER: &str = "nqn.2026-11.dev.fabriq:vol:9b2d3c1e-0000-4000-8000-000000000001";
const MIB: u64 = 1 << 20;
/// What Linux 6.1 writes to Asynchronous Event Configuration: namespace attribute and ANA
/// change notices (the target keeps the bit it supports).
const LINUX_AEC: u32 = 0x900;
/// How long a test waits for something the target does at once.
const PROMPTLY: Duration = Duration::from_secs(5);

/// An admin queue of `nqn`, KATO 0, enabled.
fn admin(addr: SocketAddr, opts: &HostOptions, nqn: &str) -> (Connection, u16) {
    let mut admin = Connection::open(addr, opts).unwrap();
    let cntlid = admin.connect_admin(nqn, 0, 31).unwrap();
    admin.enable().unwrap();
    (admin, cntlid)
}

/// I/O queue `qid` of controller `cntlid` of `nqn`.
fn io_queue(addr: SocketAddr, opts: &HostOptions, nqn: &str, cntlid: u16, qid: u16) -> Connection {
    let mut io = Connection::open(addr, opts).unwrap();
    io.connect_io(nqn, cntlid, qid, 31).unwrap();
    io
}

/// Whether the target closes `conn` within `limit` (anything it still sends is skipped).
fn closed_within(conn: &mut Connection, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match conn.recv_pdu_timeout(Duration::from_millis(100)) {
            Ok(_) | Err(HostError::Timeout(_)) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The Changed Namespace List log, read with or without RAE.
fn changed_namespaces(admin: &mut Connection, rae: bool) -> ChangedNamespaces {
    let c = admin.get_log_page(lid::CHANGED_NAMESPACE_LIST, NSID_BROADCAST, 0, 4096, rae).unwrap().success().unwrap();
    log::decode_changed_ns_list(&c.data).unwrap()
}

fn ns_attribute_event() -> u32 {
    AsyncEvent::NAMESPACE_ATTRIBUTE_CHANGED.to_dw0()
}

/// Waits for the held AER `cid` and checks it reports a namespace attribute change.
fn expect_ns_event(admin: &mut Connection, cid: u16) {
    let c = admin.wait_timeout(cid, PROMPTLY).expect("the AER completes");
    assert_eq!((c.status(), c.cqe.dw0), (Status::SUCCESS, ns_attribute_event()), "{:?}", c.cqe);
    assert_eq!(AsyncEvent::from_dw0(c.cqe.dw0).log_page, lid::CHANGED_NAMESPACE_LIST);
}

/// Checks that the held AER `cid` is still held: a Keep Alive sent after any completion the
/// target had queued comes back first.
fn expect_no_event(admin: &mut Connection, cid: u16) {
    assert!(admin.keep_alive().unwrap().is_success());
    match admin.wait_timeout(cid, Duration::from_millis(300)) {
        Err(HostError::Timeout(_)) => {}
        other => panic!("the AER completed while the event is masked or disabled: {other:?}"),
    }
}

/// `len` bytes of the pattern of `seed`.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    pattern::fill(&mut buf, 512, 0, seed);
    buf
}

fn write_pattern(io: &mut Connection, nsid: u32, slba: u64, nlb: u32, seed: u64) {
    let data = bytes(nlb as usize * 512, seed);
    assert!(io.write(nsid, slba, nlb, &data, false).unwrap().is_success(), "write at {slba}");
}

fn check_pattern(io: &mut Connection, nsid: u32, slba: u64, nlb: u32, seed: u64) {
    let mut back = vec![0u8; nlb as usize * 512];
    let c = io.read(nsid, slba, nlb, &mut back).unwrap();
    assert!(c.is_success(), "read at {slba}: {:?}", c.cqe);
    assert!(back == bytes(nlb as usize * 512, seed), "data at {slba} is what was written");
}

/// `VOL` with namespace 1 a volume of one 1 MiB extent at device offset 2 MiB of an 8 MiB
/// pool device.
fn one_volume() -> (InProc, Arc<std::os::fd::OwnedFd>) {
    let mut device = None;
    let t = InProc::start(2, |target, dir| {
        let (_, dev) = device_file(dir, 8 * MIB);
        let s = target.add_subsystem(subsystem(VOL, true, &[])).unwrap();
        s.add_namespace(namespace(1, volume(&dev, &[(MIB, 2 * MIB)]), 2)).unwrap();
        device = Some(dev);
    });
    (t, device.unwrap())
}

#[test]
fn growing_a_volume_completes_the_held_aer_and_the_host_sees_the_new_size() {
    let (t, dev) = one_volume();
    let opts = HostOptions::default();
    let (mut admin, cntlid) = admin(t.addr, &opts, VOL);
    assert!(admin.set_features(fid::ASYNC_EVENT_CONFIGURATION, LINUX_AEC).unwrap().is_success());
    assert_eq!(
        admin.get_features(fid::ASYNC_EVENT_CONFIGURATION, 0, 0).unwrap().cqe.dw0,
        feat::AEC_NAMESPACE_ATTRIBUTE
    );
    let aer = admin.async_event_request().unwrap();
    let mut io = io_queue(t.addr, &opts, VOL, cntlid, 1);
    assert_eq!(admin.identify_namespace(1).unwrap().nsze, MIB / 512);
    write_pattern(&mut io, 1, MIB / 512 - 8, 8, 1);
    assert_eq!(changed_namespaces(&mut admin, false), ChangedNamespaces::List(vec![]));

    // The volume grows by a second extent, elsewhere on the device, from another thread.
    let target = Arc::clone(&t.target);
    std::thread::spawn(move || {
        let grown = namespace(1, volume(&dev, &[(MIB, 2 * MIB), (MIB, 6 * MIB)]), 2);
        target.subsystem(VOL).unwrap().replace_namespace(grown).unwrap();
    })
    .join()
    .unwrap();

    expect_ns_event(&mut admin, aer);
    assert_eq!(changed_namespaces(&mut admin, false), ChangedNamespaces::List(vec![1]));
    assert_eq!(changed_namespaces(&mut admin, false), ChangedNamespaces::List(vec![]), "cleared by the read");
    let id = admin.identify_namespace(1).unwrap();
    assert_eq!((id.nsze, id.ncap), (2 * MIB / 512, 2 * MIB / 512));
    // The data is still there, the new blocks work, and a write across the old end lands on
    // both extents.
    check_pattern(&mut io, 1, MIB / 512 - 8, 8, 1);
    write_pattern(&mut io, 1, MIB / 512 - 4, 8, 2);
    check_pattern(&mut io, 1, MIB / 512 - 4, 8, 2);
    write_pattern(&mut io, 1, 2 * MIB / 512 - 1, 1, 3);
    check_pattern(&mut io, 1, 2 * MIB / 512 - 1, 1, 3);
    let c = io.read(1, 2 * MIB / 512, 1, &mut [0u8; 512]).unwrap();
    assert_eq!(c.status(), Status::LBA_OUT_OF_RANGE.with_dnr());
}

#[test]
fn the_namespace_event_is_masked_until_log_04h_is_read_without_rae() {
    let t = InProc::start(1, |target, _| {
        let s = target.add_subsystem(subsystem(VOL, true, &[])).unwrap();
        s.add_namespace(mem_namespace(1, MIB, 1)).unwrap();
    });
    let s = t.subsystem(VOL);
    let grow = |bytes| s.replace_namespace(mem_namespace(1, bytes, 1)).unwrap();
    let (mut admin, _) = admin(t.addr, &HostOptions::default(), VOL);
    assert!(admin.set_features(fid::ASYNC_EVENT_CONFIGURATION, LINUX_AEC).unwrap().is_success());
    let first = admin.async_event_request().unwrap();
    grow(2 * MIB);
    expect_ns_event(&mut admin, first);
    // Masked: changes go to the list, no event.
    let second = admin.async_event_request().unwrap();
    s.add_namespace(mem_namespace(4, MIB, 1)).unwrap();
    expect_no_event(&mut admin, second);
    // Read with RAE: the list stays, so does the mask.
    assert_eq!(changed_namespaces(&mut admin, true), ChangedNamespaces::List(vec![1, 4]));
    grow(3 * MIB);
    expect_no_event(&mut admin, second);
    assert_eq!(changed_namespaces(&mut admin, true), ChangedNamespaces::List(vec![1, 4]));
    // Read without RAE: cleared and unmasked; the next change completes the held request.
    assert_eq!(changed_namespaces(&mut admin, false), ChangedNamespaces::List(vec![1, 4]));
    assert!(s.remove_namespace(4).is_some());
    expect_ns_event(&mut admin, second);
    assert_eq!(changed_namespaces(&mut admin, false), ChangedNamespaces::List(vec![4]));
    // Without AEC bit 8 there is no event, but the list is kept.
    assert!(admin.set_features(fid::ASYNC_EVENT_CONFIGURATION, 0).unwrap().is_success());
    let third = admin.async_event_request().unwrap();
    grow(4 * MIB);
    expect_no_event(&mut admin, third);
    assert_eq!(changed_namespaces(&mut admin, false), ChangedNamespaces::List(vec![1]));
    // A window past the 4 KiB page is refused before anything is cleared.
    grow(5 * MIB);
    let c = admin.get_log_page(lid::CHANGED_NAMESPACE_LIST, NSID_BROADCAST, 4096, 4, false).unwrap();
    assert_eq!(c.status(), Status::INVALID_FIELD.with_dnr());
    assert_eq!(changed_namespaces(&mut admin, false), ChangedNamespaces::List(vec![1]));
}

#[test]
fn more_than_1024_changes_overflow_the_changed_namespace_list() {
    let t = InProc::start(1, |target, _| {
        target.add_subsystem(subsystem(VOL, true, &[])).unwrap();
    });
    let s = t.subsystem(VOL);
    let (mut admin, _) = admin(t.addr, &HostOptions::default(), VOL);
    for nsid in 1..=1025 {
        s.add_namespace(namespace(nsid, fabriq_target::backend::Backend::null(MIB), 1)).unwrap();
    }
    let c = admin.get_log_page(lid::CHANGED_NAMESPACE_LIST, NSID_BROADCAST, 0, 4096, false).unwrap();
    assert_eq!(&c.data[..8], &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
    assert_eq!(log::decode_changed_ns_list(&c.data).unwrap(), ChangedNamespaces::Overflow);
    assert_eq!(changed_namespaces(&mut admin, false), ChangedNamespaces::List(vec![]));
    assert_eq!(admin.active_namespaces(0).unwrap().len(), 1024, "a page of the active list");
}

#[test]
fn namespaces_added_and_removed_while_io_flows() {
    let t = InProc::start(2, |target, _| {
        let s = target.add_subsystem(subsystem(VOL, true, &[])).unwrap();
        s.add_namespace(mem_namespace(1, MIB, 2)).unwrap();
    });
    let s = t.subsystem(VOL);
    let opts = HostOptions::default();
    let (mut admin, cntlid) = admin(t.addr, &opts, VOL);
    assert!(admin.set_features(fid::ASYNC_EVENT_CONFIGURATION, LINUX_AEC).unwrap().is_success());
    let aer = admin.async_event_request().unwrap();
    let mut io = io_queue(t.addr, &opts, VOL, cntlid, 1);
    let c = io.read(2, 0, 1, &mut [0u8; 512]).unwrap();
    assert_eq!(c.status(), Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
    s.add_namespace(mem_namespace(2, 2 * MIB, 2)).unwrap();
    expect_ns_event(&mut admin, aer);
    assert_eq!(changed_namespaces(&mut admin, false), ChangedNamespaces::List(vec![2]));
    assert_eq!(admin.active_namespaces(0).unwrap(), vec![1, 2]);
    assert_eq!(admin.identify_namespace(2).unwrap().nsze, 2 * MIB / 512);
    write_pattern(&mut io, 2, 7, 3, 9);
    check_pattern(&mut io, 2, 7, 3, 9);
    let aer = admin.async_event_request().unwrap();
    assert!(s.remove_namespace(2).is_some());
    expect_ns_event(&mut admin, aer);
    assert_eq!(changed_namespaces(&mut admin, false), ChangedNamespaces::List(vec![2]));
    assert_eq!(admin.active_namespaces(0).unwrap(), vec![1]);
    let c = io.read(2, 7, 3, &mut [0u8; 1536]).unwrap();
    assert_eq!(c.status(), Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
    write_pattern(&mut io, 1, 0, 2, 10);
    check_pattern(&mut io, 1, 0, 2, 10);
}

#[test]
fn namespaces_replaced_under_a_deep_queue_lose_no_command() {
    let (t, dev) = one_volume();
    let opts = HostOptions::default();
    let (_admin, cntlid) = admin(t.addr, &opts, VOL);
    let mut io = io_queue(t.addr, &opts, VOL, cntlid, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let replaced = Arc::new(AtomicU32::new(0));
    let churn = {
        let (target, stop, replaced, dev) = (Arc::clone(&t.target), Arc::clone(&stop), Arc::clone(&replaced), dev);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // The same volume, a new namespace object each time: queues switch tables
                // while their commands are in flight.
                let ns = namespace(1, volume(&dev, &[(MIB, 2 * MIB)]), 2);
                target.subsystem(VOL).unwrap().replace_namespace(ns).unwrap();
                replaced.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    io.set_queue_depth(32);
    // At least 20 rounds of 32 writes in flight, and at least 50 replacements during them
    // (however the scheduler treats the churning thread on a loaded machine), within a bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rounds = 0u64;
    while rounds < 20 || replaced.load(Ordering::Relaxed) < 50 {
        assert!(Instant::now() < deadline, "{rounds} rounds, {} replacements", replaced.load(Ordering::Relaxed));
        let mut cids = Vec::new();
        for i in 0..32u64 {
            let data = bytes(4096, rounds * 100 + i);
            cids.push(io.submit(fabriq_bench::host::Command::write(1, i * 8, 8, data, false)).unwrap());
        }
        for cid in cids {
            let c = io.wait(cid).unwrap();
            assert!(c.is_success(), "round {rounds}: {:?}", c.cqe);
        }
        for i in 0..32u64 {
            check_pattern(&mut io, 1, i * 8, 8, rounds * 100 + i);
        }
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    let totals = t.subsystem(VOL).namespaces().find(1).unwrap().1.stats.totals();
    assert_eq!(totals.write_cmds, rounds * 32, "counters carried over every replacement");
    assert_eq!(totals.media_errors, 0);
}

#[test]
fn revoking_a_host_closes_its_queues_and_nobody_elses() {
    let (a, b) = (HostOptions::default(), HostOptions::default());
    let t = InProc::start(2, |target, _| {
        let s = target.add_subsystem(subsystem(VOL, false, &[&a.hostnqn, &b.hostnqn])).unwrap();
        s.add_namespace(mem_namespace(1, MIB, 2)).unwrap();
        let other = target.add_subsystem(subsystem(OTHER, false, &[&a.hostnqn])).unwrap();
        other.add_namespace(mem_namespace(1, MIB, 2)).unwrap();
    });
    let s = t.subsystem(VOL);
    let (mut a_admin, a_cntlid) = admin(t.addr, &a, VOL);
    let mut a_io = io_queue(t.addr, &a, VOL, a_cntlid, 1);
    let (mut a_other, a_other_cntlid) = admin(t.addr, &a, OTHER);
    let mut a_other_io = io_queue(t.addr, &a, OTHER, a_other_cntlid, 1);
    let (mut b_admin, b_cntlid) = admin(t.addr, &b, VOL);
    let mut b_io = io_queue(t.addr, &b, VOL, b_cntlid, 1);
    let stats = t.target.connection_stats();
    assert_eq!(stats.tcp_connections, 6);
    assert_eq!(
        stats.subsystems,
        vec![
            (VOL.to_owned(), Connections { controllers: 2, io_queues: 2 }),
            (OTHER.to_owned(), Connections { controllers: 1, io_queues: 1 })
        ],
        "in NQN order"
    );

    assert!(s.revoke_host(&a.hostnqn));
    assert!(!s.revoke_host(&a.hostnqn), "already gone");
    assert!(closed_within(&mut a_admin, PROMPTLY), "the revoked host's admin queue closes");
    assert!(closed_within(&mut a_io, PROMPTLY), "and its I/O queue");
    // The other host, and the same host on another subsystem, are undisturbed.
    write_pattern(&mut b_io, 1, 0, 1, 4);
    check_pattern(&mut b_io, 1, 0, 1, 4);
    assert!(b_admin.keep_alive().unwrap().is_success());
    write_pattern(&mut a_other_io, 1, 0, 1, 5);
    assert!(a_other.keep_alive().unwrap().is_success());
    let mut again = Connection::open(t.addr, &a).unwrap();
    match again.connect_admin(VOL, 0, 31) {
        Err(HostError::Status(cqe)) => assert_eq!(cqe.status, Status::CONNECT_INVALID_HOST.with_dnr()),
        other => panic!("a revoked host connected: {other:?}"),
    }
    let deadline = Instant::now() + PROMPTLY;
    while t.target.connection_stats().subsystems[0].1 != (Connections { controllers: 1, io_queues: 1 }) {
        assert!(Instant::now() < deadline, "{:?}", t.target.connection_stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    // Allowed again: it connects.
    assert!(s.allow_host(&a.hostnqn));
    let (_a_admin, a_cntlid) = admin(t.addr, &a, VOL);
    let mut a_io = io_queue(t.addr, &a, VOL, a_cntlid, 1);
    check_pattern(&mut a_io, 1, 0, 1, 4);
}

#[test]
fn closing_a_subsystem_to_its_list_disconnects_the_hosts_not_on_it() {
    let (listed, stranger) = (HostOptions::default(), HostOptions::default());
    let t = InProc::start(1, |target, _| {
        let s = target.add_subsystem(subsystem(VOL, true, &[&listed.hostnqn])).unwrap();
        s.add_namespace(mem_namespace(1, MIB, 1)).unwrap();
    });
    let (mut l_admin, _) = admin(t.addr, &listed, VOL);
    let (mut s_admin, s_cntlid) = admin(t.addr, &stranger, VOL);
    let mut s_io = io_queue(t.addr, &stranger, VOL, s_cntlid, 1);
    t.subsystem(VOL).set_allow_any_host(false);
    assert_eq!(t.subsystem(VOL).access(), (false, vec![listed.hostnqn.clone()]));
    assert!(closed_within(&mut s_admin, PROMPTLY));
    assert!(closed_within(&mut s_io, PROMPTLY));
    assert!(l_admin.keep_alive().unwrap().is_success());
}

/// A discovery controller with discovery log change notices on and a request held.
fn discovery_watcher(addr: SocketAddr, opts: &HostOptions) -> (Connection, u16) {
    let mut conn = Connection::open(addr, opts).unwrap();
    conn.connect_admin(DISCOVERY_NQN, 0, 31).unwrap();
    conn.enable().unwrap();
    assert!(conn.set_features(fid::ASYNC_EVENT_CONFIGURATION, feat::AEC_DISCOVERY_LOG_CHANGE).unwrap().is_success());
    // Reading the log (RAE clear at the end) arms the event.
    conn.discovery_log().unwrap();
    let aer = conn.async_event_request().unwrap();
    (conn, aer)
}

fn expect_discovery_event(conn: &mut Connection, aer: u16) {
    let c = conn.wait_timeout(aer, PROMPTLY).expect("the discovery AER completes");
    assert_eq!(c.cqe.dw0, AsyncEvent::DISCOVERY_LOG_CHANGED.to_dw0());
}

fn listed_nqns(conn: &mut Connection) -> Vec<String> {
    let page = conn.discovery_log().unwrap();
    page.entries.iter().filter(|e| e.subtype == disc::SUBTYPE_NVM).map(|e| e.subnqn.as_str().to_owned()).collect()
}

#[test]
fn removing_a_subsystem_tears_it_down_and_discovery_hears_of_it() {
    let t = InProc::start(2, |target, _| {
        for nqn in [VOL, OTHER] {
            let s = target.add_subsystem(subsystem(nqn, true, &[])).unwrap();
            s.add_namespace(mem_namespace(1, MIB, 2)).unwrap();
        }
    });
    let opts = HostOptions::default();
    let (mut watcher, aer) = discovery_watcher(t.addr, &opts);
    let (mut gone_admin, gone_cntlid) = admin(t.addr, &opts, VOL);
    let mut gone_io = io_queue(t.addr, &opts, VOL, gone_cntlid, 1);
    let (_kept_admin, kept_cntlid) = admin(t.addr, &opts, OTHER);
    let mut kept_io = io_queue(t.addr, &opts, OTHER, kept_cntlid, 1);
    assert_eq!(listed_nqns(&mut watcher), vec![VOL.to_owned(), OTHER.to_owned()]);

    let target = Arc::clone(&t.target);
    let removed = std::thread::spawn(move || target.remove_subsystem(VOL).is_some()).join().unwrap();
    assert!(removed);
    expect_discovery_event(&mut watcher, aer);
    assert_eq!(listed_nqns(&mut watcher), vec![OTHER.to_owned()]);
    assert!(closed_within(&mut gone_admin, PROMPTLY));
    assert!(closed_within(&mut gone_io, PROMPTLY));
    write_pattern(&mut kept_io, 1, 3, 2, 6);
    check_pattern(&mut kept_io, 1, 3, 2, 6);
    match Connection::open(t.addr, &opts).unwrap().connect_admin(VOL, 0, 31) {
        Err(HostError::Status(cqe)) => assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr()),
        other => panic!("connected to a removed subsystem: {other:?}"),
    }
    // A subsystem added at run time is announced the same way, and serves.
    let aer = watcher.async_event_request().unwrap();
    let s = t.target.add_subsystem(subsystem(VOL, true, &[])).unwrap();
    s.add_namespace(mem_namespace(1, MIB, 2)).unwrap();
    expect_discovery_event(&mut watcher, aer);
    assert_eq!(listed_nqns(&mut watcher), vec![VOL.to_owned(), OTHER.to_owned()]);
    let (_admin, cntlid) = admin(t.addr, &opts, VOL);
    write_pattern(&mut io_queue(t.addr, &opts, VOL, cntlid, 1), 1, 0, 1, 7);
}

#[test]
fn host_access_changes_reach_discovery_controllers() {
    let host = HostOptions::default();
    let t = InProc::start(2, |target, _| {
        target.add_subsystem(subsystem(VOL, false, &[])).unwrap();
    });
    let (mut watcher, aer) = discovery_watcher(t.addr, &host);
    assert!(listed_nqns(&mut watcher).is_empty());
    assert!(t.subsystem(VOL).allow_host(&host.hostnqn));
    expect_discovery_event(&mut watcher, aer);
    assert_eq!(listed_nqns(&mut watcher), vec![VOL.to_owned()]);
    let aer = watcher.async_event_request().unwrap();
    assert!(t.subsystem(VOL).revoke_host(&host.hostnqn));
    expect_discovery_event(&mut watcher, aer);
    assert!(listed_nqns(&mut watcher).is_empty());
}

#[test]
fn listeners_added_and_removed_at_run_time() {
    let t = InProc::start(2, |target, _| {
        let s = target.add_subsystem(subsystem(VOL, true, &[])).unwrap();
        s.add_namespace(mem_namespace(1, MIB, 2)).unwrap();
    });
    let opts = HostOptions::default();
    let (mut watcher, aer) = discovery_watcher(t.addr, &opts);
    let added = t.target.add_listener(&inproc::loopback(false)).unwrap();
    assert_eq!(added.port_id, 2);
    assert_ne!(added.bound.port(), 0);
    expect_discovery_event(&mut watcher, aer);
    let page = watcher.discovery_log().unwrap();
    let ports: Vec<_> = page.entries.iter().filter(|e| e.subtype == disc::SUBTYPE_NVM).map(|e| e.portid).collect();
    assert_eq!(ports, vec![1, 2]);
    assert!(page.entries.iter().any(|e| e.portid == 2 && e.trsvcid == added.bound.port().to_string()));

    // Connect through the new listener.
    let (mut admin2, cntlid) = admin(added.bound, &opts, VOL);
    let mut io2 = io_queue(added.bound, &opts, VOL, cntlid, 1);
    write_pattern(&mut io2, 1, 0, 4, 8);

    let aer = watcher.async_event_request().unwrap();
    assert_eq!(t.target.remove_listener(2).map(|l| l.bound), Some(added.bound));
    assert!(t.target.remove_listener(2).is_none());
    // Refused from the moment remove_listener returned.
    assert!(TcpStream::connect(added.bound).is_err(), "the removed listener still accepts");
    expect_discovery_event(&mut watcher, aer);
    let page = watcher.discovery_log().unwrap();
    assert!(page.entries.iter().all(|e| e.portid != 2), "{page:?}");
    // What connected through it keeps working.
    check_pattern(&mut io2, 1, 0, 4, 8);
    assert!(admin2.keep_alive().unwrap().is_success());
    assert_eq!(t.target.listeners().iter().map(|l| l.port_id).collect::<Vec<_>>(), vec![1]);
    // And the first listener still accepts.
    let (_admin, cntlid) = admin(t.addr, &opts, VOL);
    check_pattern(&mut io_queue(t.addr, &opts, VOL, cntlid, 2), 1, 0, 4, 8);
}

#[test]
fn a_discovery_only_listener_added_at_run_time_serves_discovery_only() {
    let t = InProc::start(1, |target, _| {
        target.add_subsystem(subsystem(VOL, true, &[])).unwrap();
    });
    let opts = HostOptions::default();
    let d = t.target.add_listener(&inproc::loopback(true)).unwrap();
    assert!(d.discovery_only);
    let (mut conn, _) = discovery_watcher(d.bound, &opts);
    let page = conn.discovery_log().unwrap();
    assert_eq!((page.entries[0].subtype, page.entries[0].portid), (disc::SUBTYPE_CURRENT_DISCOVERY, d.port_id));
    assert!(page.entries[1..].iter().all(|e| e.portid == 1), "NVM subsystems only on the NVM listener");
    match Connection::open(d.bound, &opts).unwrap().connect_admin(VOL, 0, 31) {
        Err(HostError::Status(cqe)) => assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr()),
        other => panic!("an NVM subsystem on a discovery-only listener: {other:?}"),
    }
}

#[test]
fn volume_transfers_across_extents_land_at_the_device_offsets() {
    let mut path = None;
    // Four 64 KiB extents scattered over the device, out of order.
    const E: u64 = 64 * 1024;
    let pieces = [(E, 5 * E), (E, 2 * E), (2 * E, 8 * E)];
    let t = InProc::start(2, |target, dir| {
        let (p, dev) = device_file(dir, 16 * E);
        let s = target.add_subsystem(subsystem(VOL, true, &[])).unwrap();
        s.add_namespace(namespace(1, volume(&dev, &pieces), 2)).unwrap();
        path = Some(p);
    });
    let device = |at: u64, len: usize| {
        let bytes = std::fs::read(path.as_ref().unwrap()).unwrap();
        bytes[at as usize..at as usize + len].to_vec()
    };
    let opts = HostOptions::default();
    let (_admin, cntlid) = admin(t.addr, &opts, VOL);
    let mut io = io_queue(t.addr, &opts, VOL, cntlid, 1);
    // 128 KiB from 8 KiB before the end of extent 0: 8 KiB, all of extent 1, 56 KiB of extent 2.
    let (slba, nlb) = ((E - 8192) / 512, (2 * E / 512) as u32);
    let data = bytes(2 * E as usize, 11);
    assert!(io.write(1, slba, nlb, &data, false).unwrap().is_success());
    assert_eq!(device(6 * E - 8192, 8192), data[..8192]);
    assert_eq!(device(2 * E, E as usize), data[8192..8192 + E as usize]);
    assert_eq!(device(8 * E, E as usize - 8192), data[8192 + E as usize..]);
    assert!(device(0, 2 * E as usize).iter().all(|&b| b == 0), "nothing outside the extents");
    check_pattern(&mut io, 1, slba, nlb, 11);
    // A read of the very last block, and one past the end.
    write_pattern(&mut io, 1, 4 * E / 512 - 1, 1, 12);
    assert_eq!(device(10 * E - 512, 512), bytes(512, 12));
    let c = io.read(1, 4 * E / 512, 1, &mut [0u8; 512]).unwrap();
    assert_eq!(c.status(), Status::LBA_OUT_OF_RANGE.with_dnr());
    // Write Zeroes and Deallocate across a boundary zero both device ranges.
    assert!(io.write_zeroes(1, (2 * E - 1024) / 512, 4, false).unwrap().is_success());
    assert!(device(3 * E - 1024, 1024).iter().all(|&b| b == 0));
    assert!(device(8 * E, 1024).iter().all(|&b| b == 0));
    assert_eq!(device(8 * E + 1024, 1024), data[8192 + E as usize + 1024..8192 + E as usize + 2048]);
    assert!(io.dsm_deallocate(1, &[((E - 512) / 512, 2)]).unwrap().is_success());
    assert!(device(6 * E - 512, 512).iter().all(|&b| b == 0));
    assert!(device(2 * E, 512).iter().all(|&b| b == 0));
    let mut back = vec![0u8; 2048];
    assert!(io.read(1, (E - 1024) / 512, 4, &mut back).unwrap().is_success());
    assert_eq!(back[..512], data[8192 - 1024..8192 - 512]);
    assert!(back[512..1536].iter().all(|&b| b == 0));
    assert_eq!(back[1536..], data[8192 + 512..8192 + 1024]);
    assert!(io.flush(1).unwrap().is_success());
    // The counters and latency histograms the node API exports.
    let totals = t.subsystem(VOL).namespaces().find(1).unwrap().1.stats.totals();
    assert_eq!((totals.write_cmds, totals.write_bytes), (2, 2 * E + 512));
    assert_eq!(totals.read_latency.count(), totals.read_cmds);
    assert_eq!(totals.write_latency.count(), 2);
    assert!(totals.write_latency.sum_ns > 0);
}

#[test]
fn a_short_device_read_and_an_injected_fault_fail_the_command_not_the_connection() {
    const E: u64 = 64 * 1024;
    let t = InProc::start(1, |target, dir| {
        // The second extent lies past the end of the 1 MiB device file: reading it comes
        // back short (0 bytes), as a truncated or failing device would.
        let (_, dev) = device_file(dir, MIB);
        let s = target.add_subsystem(subsystem(VOL, true, &[])).unwrap();
        s.add_namespace(namespace(1, volume(&dev, &[(E, 0), (E, 4 * MIB)]), 1)).unwrap();
        let faulty = volume(&dev, &[(E, 2 * E), (E, 3 * E)]).with_faults(vec![fabriq_target::backend::Fault {
            reads: true,
            writes: false,
            offset: E + 4096,
            len: 512,
        }]);
        s.add_namespace(namespace(2, faulty, 1)).unwrap();
    });
    let opts = HostOptions::default();
    let (_admin, cntlid) = admin(t.addr, &opts, VOL);
    let mut io = io_queue(t.addr, &opts, VOL, cntlid, 1);
    // Across the boundary: 512 bytes come back from the first extent, none from the second.
    let c = io.read(1, E / 512 - 1, 2, &mut [0u8; 1024]).unwrap();
    assert_eq!(c.status(), Status::UNRECOVERED_READ_ERROR, "a short total is an error");
    write_pattern(&mut io, 1, 0, 4, 13);
    check_pattern(&mut io, 1, 0, 4, 13);
    // An injected fault is in the volume's own offsets, whatever extent holds them.
    let c = io.read(2, (E + 4096) / 512, 1, &mut [0u8; 512]).unwrap();
    assert_eq!(c.status(), Status::UNRECOVERED_READ_ERROR);
    write_pattern(&mut io, 2, (E + 4096) / 512, 1, 14);
    for slba in [(E + 4096) / 512 + 1, (E + 4096) / 512 - 1, E / 512 - 1] {
        assert!(io.read(2, slba, 1, &mut [0u8; 512]).unwrap().is_success(), "block {slba} is not faulted");
    }
    let stats = |nsid| t.subsystem(VOL).namespaces().find(nsid).unwrap().1.stats.totals();
    assert_eq!((stats(1).media_errors, stats(2).media_errors), (1, 1));
}
