//! Connections that end badly, and many of them, against the real daemon over loopback: a
//! host that closes mid-transfer (after an R2T, before reading large C2HData, with commands
//! in flight), SIGTERM while hosts are silent mid-PDU, waiting on an R2T or not reading, 50
//! admin connections at once, and two reactors carrying the I/O queues of one controller.
//!
//! Each test shows that the other connections keep working, and the daemon's exit status 0
//! at SIGTERM (checked by `common::Target`) shows that every pool buffer came back.

mod common;
mod protocol;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::{NQN, Target};
use fabriq_bench::host::{Command, Connection, HostError, HostOptions, Placement, connect_data, generate_host_identity};
use fabriq_target::nvme::sqe::Connect;
use fabriq_target::tcp::pdu::{Pdu, R2t};
use protocol::{BLOCK, Host, NSID, assert_pattern, expect_closed, pattern_of, pipelined_mixed_io, serves, write_read_back};

/// How long the daemon has to exit after SIGTERM in these tests: far more than it needs, so
/// that only a daemon that does not stop at all fails.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Sends a Write of `nlb` blocks by R2T as `cid` and returns its R2T (the data is not sent).
fn write_waiting_for_data(io: &mut Connection, cid: u16, slba: u64, nlb: u32) -> R2t {
    let command = Command::write(NSID, slba, nlb, pattern_of(slba, nlb, 1), false).placed(Placement::R2t);
    let capsule = io.encode_capsule(&command, cid);
    io.send_raw(&capsule).unwrap();
    let received = io.recv_pdu().unwrap();
    let Pdu::R2t(r2t) = received.pdu else { panic!("expected an R2T, got {:?}", received.pdu) };
    assert_eq!(r2t.cccid, cid);
    r2t
}

/// Sends `count` Reads of 256 blocks (128 KiB each) and reads nothing back.
fn unread_reads(io: &mut Connection, count: u16) {
    for cid in 0..count {
        let capsule = io.encode_capsule(&Command::read(NSID, u64::from(cid) * 256, 256, 256 * BLOCK), cid);
        io.send_raw(&capsule).unwrap();
    }
}

// ----- hosts that go away mid-transfer -----

#[test]
fn host_closes_after_its_write_got_an_r2t() {
    let target = Target::simple();
    let mut witness = Host::connect(target.addr, HostOptions::default());
    let mut witness_io = witness.io_queue(31);
    let mut victim = Host::connect(target.addr, HostOptions::default());
    for slba in [0u64, 1000] {
        let mut io = victim.io_queue(31);
        write_waiting_for_data(&mut io, 9, slba, 256);
        drop(io);
        write_read_back(&mut witness_io, 5000 + slba, 16, slba);
    }
    // The victim's controller lives on: its admin queue is fine.
    assert!(victim.admin.keep_alive().unwrap().is_success());
    victim.still_serves();
    witness.still_serves();
}

#[test]
fn host_closes_before_reading_large_c2h_data() {
    let target = Target::simple();
    let mut witness = Host::connect(target.addr, HostOptions::default());
    let mut witness_io = witness.io_queue(31);
    let mut victim = Host::connect(target.addr, HostOptions::default());
    // 32 reads of 128 KiB: far more than the socket buffers hold.
    let mut io = victim.io_queue(31);
    unread_reads(&mut io, 32);
    // Read the first PDU, so the target is surely sending, then vanish.
    assert!(matches!(io.recv_pdu().unwrap().pdu, Pdu::C2hData(_)));
    drop(io);
    write_read_back(&mut witness_io, 5000, 256, 1);
    // And once more with a half-close: the target sees end of stream while it sends.
    let mut io = victim.io_queue(31);
    unread_reads(&mut io, 32);
    io.shutdown_write().unwrap();
    drop(io);
    write_read_back(&mut witness_io, 6000, 256, 2);
    victim.still_serves();
    witness.still_serves();
}

#[test]
fn host_closes_with_commands_in_flight() {
    let target = Target::simple();
    let mut witness = Host::connect(target.addr, HostOptions::default());
    let mut witness_io = witness.io_queue(31);
    let mut victim = Host::connect(target.addr, HostOptions::default());
    for round in 0..3u64 {
        let mut io = victim.io_queue(31);
        // 32 commands of every kind: in-capsule writes, writes by R2T, reads, flushes.
        for i in 0..32u64 {
            let slba = round * 10_000 + i * 256;
            let command = match i % 4 {
                0 => Command::write(NSID, slba, 16, pattern_of(slba, 16, i), false),
                1 => Command::write(NSID, slba, 64, pattern_of(slba, 64, i), false),
                2 => Command::read(NSID, slba, 256, 256 * BLOCK),
                _ => Command::flush(NSID),
            };
            io.submit(command).unwrap();
        }
        drop(io);
        write_read_back(&mut witness_io, 50_000 + round * 100, 64, round);
    }
    victim.still_serves();
    witness.still_serves();
}

// ----- SIGTERM while hosts misbehave -----

/// Opens what `setup` sets up on a fresh daemon, sends SIGTERM while those connections are
/// open, and expects a clean exit (status 0, every buffer back) within [`STOP_LIMIT`].
///
/// The host's admin queue is idle, so at the stop it closes and tears its controller down,
/// which closes that controller's I/O queues whatever they were doing; a connection that is
/// not yet connected (a Connect under way) must end on its own.
fn stops_cleanly_while(setup: impl FnOnce(SocketAddr, &mut Host) -> Vec<Connection>) {
    let mut target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut busy = host.io_queue(31);
    write_read_back(&mut busy, 0, 8, 1);
    let mut open = setup(target.addr, &mut host);
    target.stop(STOP_LIMIT);
    // Every connection ends: whatever the daemon had sent before it closed, then end of stream.
    for io in open.iter_mut().chain([&mut busy, &mut host.admin]) {
        drain_until_closed(io);
    }
}

/// Reads and drops PDUs until the target closes the connection.
fn drain_until_closed(io: &mut Connection) {
    for _ in 0..1000 {
        match io.recv_pdu() {
            Ok(_) => {}
            Err(HostError::Closed | HostError::Broken) => return,
            Err(HostError::Io(e)) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof) => return,
            Err(other) => panic!("expected the connection to end, got {other}"),
        }
    }
    panic!("the connection neither ended nor stopped sending");
}

#[test]
fn sigterm_with_idle_connections_exits_cleanly() {
    stops_cleanly_while(|addr, _| vec![Connection::open(addr, &HostOptions::default()).unwrap()]);
}

#[test]
fn sigterm_with_a_host_silent_mid_header_exits_cleanly() {
    stops_cleanly_while(|_, host| {
        let mut io = host.io_queue(31);
        let capsule = io.encode_capsule(&Command::flush(NSID), 1);
        io.send_raw(&capsule[..30]).unwrap();
        vec![io]
    });
}

#[test]
fn sigterm_with_a_host_silent_mid_in_capsule_data_exits_cleanly() {
    stops_cleanly_while(|_, host| {
        let mut io = host.io_queue(31);
        let capsule = io.encode_capsule(&Command::write(NSID, 0, 16, pattern_of(0, 16, 1), false), 1);
        io.send_raw(&capsule[..100]).unwrap();
        vec![io]
    });
}

#[test]
fn sigterm_with_a_write_waiting_for_its_data_exits_cleanly() {
    stops_cleanly_while(|_, host| {
        let mut io = host.io_queue(31);
        write_waiting_for_data(&mut io, 1, 0, 256);
        vec![io]
    });
}

#[test]
fn sigterm_with_a_host_that_does_not_read_exits_cleanly() {
    stops_cleanly_while(|_, host| {
        let mut io = host.io_queue(31);
        unread_reads(&mut io, 32);
        vec![io]
    });
}

/// The CapsuleCmd of an admin queue Connect from a new host, with its data placed as `placement`.
fn connect_capsule(conn: &Connection, placement: Placement) -> Vec<u8> {
    let connect = Connect { recfmt: 0, qid: 0, sqsize: 31, cattr: 0, kato_ms: 0 };
    let (hostnqn, hostid) = generate_host_identity();
    let command = Command::connect(&connect, connect_data(hostid, 0xFFFF, NQN, &hostnqn)).placed(placement);
    conn.encode_capsule(&command, 1)
}

/// On an admin queue (whose controller no teardown will close) before it is connected.
#[test]
fn sigterm_with_a_connect_waiting_for_its_data_exits_cleanly() {
    stops_cleanly_while(|addr, _| {
        let mut conn = Connection::open(addr, &HostOptions::default()).unwrap();
        conn.send_raw(&connect_capsule(&conn, Placement::R2t)).unwrap();
        assert!(matches!(conn.recv_pdu().unwrap().pdu, Pdu::R2t(_)));
        vec![conn]
    });
}

#[test]
fn sigterm_with_a_host_silent_mid_connect_data_exits_cleanly() {
    stops_cleanly_while(|addr, _| {
        let mut conn = Connection::open(addr, &HostOptions::default()).unwrap();
        let capsule = connect_capsule(&conn, Placement::InCapsule);
        conn.send_raw(&capsule[..72 + 512]).unwrap();
        vec![conn]
    });
}

// ----- many connections, several reactors -----

#[test]
fn fifty_admin_connections_at_once() {
    let target = Target::simple();
    const CONNECTIONS: usize = 50;
    // All 50 open and connected at the same time...
    let mut admins: Vec<(Connection, u16)> = thread::scope(|s| {
        let opening: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                s.spawn(|| {
                    let mut admin = Connection::open(target.addr, &HostOptions::default()).unwrap();
                    let cntlid = admin.connect_admin(NQN, 0, 31).unwrap();
                    (admin, cntlid)
                })
            })
            .collect();
        opening.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let cntlids: BTreeSet<u16> = admins.iter().map(|(_, c)| *c).collect();
    assert_eq!(cntlids.len(), CONNECTIONS, "one controller each");
    // ...each works while the others are open, concurrently.
    thread::scope(|s| {
        for (admin, cntlid) in &mut admins {
            s.spawn(move || {
                admin.enable().unwrap();
                assert_eq!(admin.identify_controller().unwrap().cntlid, *cntlid);
                assert!(admin.keep_alive().unwrap().is_success());
            });
        }
    });
    serves(target.addr);
    drop(admins);
    serves(target.addr);
}

/// The reactor that accepted the connection whose host end is `local`, from the daemon's log.
fn reactor_of(target: &Target, local: SocketAddr) -> usize {
    let log = strip_ansi(&target.log_text());
    let peer = format!("peer=Some({local})");
    let line = log
        .lines()
        .find(|l| l.contains("connection accepted") && l.contains(&peer))
        .unwrap_or_else(|| panic!("no \"connection accepted\" line for {local} in the log:\n{log}"));
    let reactor = line.split("reactor=").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("a reactor field");
    reactor.parse().unwrap()
}

/// The log without its terminal colours.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn io_queues_of_one_controller_on_two_reactors() {
    let target = Target::start("reactors = 2", &protocol::simple_subsystem());
    let mut host = Host::connect(target.addr, HostOptions::default());
    // Connections are dealt round-robin: consecutive ones land on different reactors.
    let mut queues: Vec<Connection> = (0..4).map(|_| host.io_queue(31)).collect();
    let reactors: BTreeSet<usize> = queues.iter().map(|io| reactor_of(&target, io.local_addr().unwrap())).collect();
    assert_eq!(reactors, BTreeSet::from([0, 1]), "the I/O queues are spread over both reactors");
    // All four at once, each on its own blocks.
    thread::scope(|s| {
        for (i, io) in queues.iter_mut().enumerate() {
            s.spawn(move || pipelined_mixed_io(io, i as u64 * 16_384, 64, 32, 200));
        }
    });
    // What one queue writes, the queues on the other reactor read.
    for (writer, slba) in [(0usize, 70_000u64), (1, 71_000)] {
        write_read_back(&mut queues[writer], slba, 64, slba);
        for reader in &mut queues {
            assert_pattern(reader, slba, 64, slba);
        }
    }
    // The admin queue goes: the controller is torn down and its I/O queues close, on both
    // reactors.
    drop(host.admin);
    for io in &mut queues {
        expect_closed(io);
    }
    serves(target.addr);
}
