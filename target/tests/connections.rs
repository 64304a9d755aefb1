//! Connections that end badly, many of them, and connections that compete for buffers,
//! against the real daemon over loopback: a host that closes mid-transfer (after an R2T,
//! before reading large C2HData, with commands in flight), SIGTERM under load and in the
//! middle of transfers (a write's data, in-capsule data, a Connect's data, completions backed
//! up behind a slow reader: each finishes, or ends when its host goes away), 50 admin
//! connections at once and bursts of 300, two reactors carrying the I/O queues of one
//! controller, and queues sharing a pool too small for all their commands (a command or a
//! receive waiting for a buffer that another queue frees).
//!
//! Each test shows that the other connections keep working, and the daemon's exit status 0
//! at SIGTERM (checked by `common::Target`) shows that every pool buffer came back.

mod common;
mod protocol;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{NQN, Target};
use fabriq_bench::host::{
    Command, Connection, HostError, HostOptions, Placement, connect_data, generate_host_identity,
};
use fabriq_target::nvme::sqe::Connect;
use fabriq_target::nvme::{Cqe, Status};
use fabriq_target::tcp::pdu::{H2cData, Pdu, R2t};
use protocol::{
    BLOCK, Host, NSID, assert_pattern, expect_closed, pattern_of, pipelined_mixed_io, serves, write_read_back,
};

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

// ----- SIGTERM while hosts are mid-transfer -----

/// Sends SIGTERM and waits until the daemon's reactor has begun its stop (its log says so).
fn begin_stop(target: &Target) {
    // SAFETY: kill with a valid signal on our own child's pid.
    unsafe { libc::kill(target.pid() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_LIMIT;
    while !strip_ansi(&target.log_text()).contains("stopping reactor=0") {
        assert!(Instant::now() < deadline, "the daemon did not begin to stop:\n{}", target.log_text());
        thread::sleep(Duration::from_millis(10));
    }
}

/// Opens what `setup` sets up on a fresh daemon, sends SIGTERM while those connections are
/// open, and expects a clean exit (status 0, every buffer back) within [`STOP_LIMIT`] with
/// nothing more from the host.
fn stops_cleanly_while(setup: impl FnOnce(SocketAddr, &mut Host) -> Vec<Connection>) {
    let mut target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut busy = host.io_queue(31);
    write_read_back(&mut busy, 0, 8, 1);
    let mut open = setup(target.addr, &mut host);
    target.stop(STOP_LIMIT);
    for io in open.iter_mut().chain([&mut busy, &mut host.admin]) {
        expect_closed(io);
    }
}

#[test]
fn sigterm_with_idle_connections_exits_cleanly() {
    stops_cleanly_while(|addr, _| vec![Connection::open(addr, &HostOptions::default()).unwrap()]);
}

/// Between two PDUs nothing is in flight: half a header does not hold the stop.
#[test]
fn sigterm_with_a_host_silent_mid_header_exits_cleanly() {
    stops_cleanly_while(|_, host| {
        let mut io = host.io_queue(31);
        let capsule = io.encode_capsule(&Command::flush(NSID), 1);
        io.send_raw(&capsule[..30]).unwrap();
        vec![io]
    });
}

/// A write whose R2T is out when SIGTERM comes still takes its data and completes; a new
/// command sent meanwhile is refused (Command Aborted due to SQ Deletion); then the queue
/// closes and the daemon exits cleanly.
#[test]
fn sigterm_lets_a_write_waiting_for_its_data_finish() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut io = host.io_queue(31);
    let r2t = write_waiting_for_data(&mut io, 1, 0, 256);
    begin_stop(&target);
    let late = io.encode_capsule(&Command::read(NSID, 0, 8, 8 * BLOCK), 2);
    io.send_raw(&late).unwrap();
    let header = H2cData { cccid: 1, ttag: r2t.ttag, datao: 0, datal: r2t.r2tl, last: true };
    io.send_h2c_data(&header, &pattern_of(0, 256, 1)).unwrap();
    let refused = next_cqe(&mut io);
    assert_eq!(refused.cid, 2);
    protocol::assert_status(refused.status, Status::ABORTED_SQ_DELETION);
    write_1_completes_then_stop_is_clean(&mut io, target);
}

/// In-capsule data cut short when SIGTERM comes: the rest arrives, the write completes, the
/// daemon exits cleanly.
#[test]
fn sigterm_lets_in_capsule_data_arriving_after_it_finish() {
    let target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut io = host.io_queue(31);
    let capsule = io.encode_capsule(&Command::write(NSID, 0, 16, pattern_of(0, 16, 1), false), 1);
    io.send_raw(&capsule[..100]).unwrap();
    begin_stop(&target);
    io.send_raw(&capsule[100..]).unwrap();
    write_1_completes_then_stop_is_clean(&mut io, target);
}

/// After SIGTERM: the write with CID 1 completes successfully, then the queue closes and the
/// daemon exits cleanly.
fn write_1_completes_then_stop_is_clean(io: &mut Connection, mut target: Target) {
    let written = next_cqe(io);
    assert_eq!(written.cid, 1);
    assert!(written.status.is_success(), "{written:?}");
    expect_closed(io);
    target.stop(STOP_LIMIT);
}

/// Completions backed up behind a host that stopped reading are all delivered once it reads
/// on, then the queue closes and the daemon exits cleanly.
#[test]
fn sigterm_delivers_completions_backed_up_behind_a_slow_reader() {
    let mut target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut io = host.io_queue(127);
    // 128 reads of 128 KiB (16 MiB, more than the socket buffers hold), sent in one write so
    // that the target takes them all in one receive: once the first answer is here, every
    // read is in flight.
    const READS: u16 = 128;
    let mut capsules = Vec::new();
    for cid in 0..READS {
        capsules.extend(io.encode_capsule(&Command::read(NSID, u64::from(cid) * 256, 256, 256 * BLOCK), cid));
    }
    io.send_raw(&capsules).unwrap();
    let first = io.recv_pdu().unwrap();
    assert!(matches!(first.pdu, Pdu::C2hData(d) if d.cccid == 0), "{:?}", first.pdu);
    begin_stop(&target);
    let mut completed = BTreeSet::new();
    while completed.len() < usize::from(READS) {
        match io.recv_pdu().unwrap().pdu {
            Pdu::C2hData(_) => {}
            Pdu::CapsuleResp(resp) => {
                let cqe = Cqe::decode(&resp.cqe);
                assert!(cqe.status.is_success(), "{cqe:?}");
                assert!(completed.insert(cqe.cid), "cid {} completed twice", cqe.cid);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    expect_closed(&mut io);
    target.stop(STOP_LIMIT);
}

/// A host silent in the middle of a transfer holds the stop (its command is in flight) until
/// it goes away; then the daemon exits cleanly, every buffer back.
#[test]
fn sigterm_ends_once_a_silent_host_goes_away() {
    let mut target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut waiting = host.io_queue(31);
    write_waiting_for_data(&mut waiting, 1, 0, 256);
    let mut mid_data = host.io_queue(31);
    let capsule = mid_data.encode_capsule(&Command::write(NSID, 512, 16, pattern_of(512, 16, 1), false), 1);
    mid_data.send_raw(&capsule[..100]).unwrap();
    begin_stop(&target);
    drop(waiting);
    drop(mid_data);
    target.stop(STOP_LIMIT);
}

/// The next PDU, which must be a CapsuleResp.
fn next_cqe(io: &mut Connection) -> Cqe {
    let received = io.recv_pdu().unwrap();
    let Pdu::CapsuleResp(resp) = received.pdu else { panic!("expected a CapsuleResp, got {:?}", received.pdu) };
    Cqe::decode(&resp.cqe)
}

/// A Connect of an admin queue from a new host, with its 1024 bytes of data.
fn admin_connect() -> (Command, Vec<u8>) {
    let connect = Connect { recfmt: 0, qid: 0, sqsize: 31, cattr: 0, kato_ms: 0 };
    let (hostnqn, hostid) = generate_host_identity();
    let data = connect_data(hostid, 0xFFFF, NQN, &hostnqn);
    (Command::connect(&connect, data.clone()), data)
}

/// A Connect whose data comes by R2T after SIGTERM completes too, then its connection closes.
#[test]
fn sigterm_lets_a_connect_waiting_for_its_data_finish() {
    let mut target = Target::simple();
    let mut conn = Connection::open(target.addr, &HostOptions::default()).unwrap();
    let (connect, data) = admin_connect();
    let capsule = conn.encode_capsule(&connect.placed(Placement::R2t), 1);
    conn.send_raw(&capsule).unwrap();
    let Pdu::R2t(r2t) = conn.recv_pdu().unwrap().pdu else { panic!("expected an R2T") };
    begin_stop(&target);
    let header = H2cData { cccid: 1, ttag: r2t.ttag, datao: 0, datal: 1024, last: true };
    conn.send_h2c_data(&header, &data).unwrap();
    let connected = next_cqe(&mut conn);
    assert!(connected.status.is_success(), "{connected:?}");
    expect_closed(&mut conn);
    target.stop(STOP_LIMIT);
}

/// SIGTERM while two queues each keep 32 commands in flight (in-capsule and R2T writes,
/// reads): the daemon ends them, closes every connection and exits cleanly.
#[test]
fn sigterm_under_load_exits_cleanly() {
    let mut target = Target::simple();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut queues = [host.io_queue(31), host.io_queue(31)];
    let (busy_tx, busy_rx) = std::sync::mpsc::channel();
    thread::scope(|s| {
        for (q, io) in queues.iter_mut().enumerate() {
            let busy = busy_tx.clone();
            s.spawn(move || {
                let mut submitted = 0u64;
                let mut completed = 0u64;
                // Until the connection ends under it.
                loop {
                    while io.outstanding() < 32 {
                        let slba = q as u64 * 50_000 + (submitted % 64) * 256;
                        let command = match submitted % 3 {
                            0 => Command::write(NSID, slba, 16, pattern_of(slba, 16, submitted), false),
                            1 => Command::write(NSID, slba, 64, pattern_of(slba, 64, submitted), false),
                            _ => Command::read(NSID, slba, 64, 64 * BLOCK),
                        };
                        submitted += 1;
                        if io.submit(command).is_err() {
                            return;
                        }
                    }
                    if io.wait_any().is_err() {
                        return;
                    }
                    completed += 1;
                    if completed == 100 {
                        busy.send(()).unwrap();
                    }
                }
            });
        }
        drop(busy_tx);
        // Once both queues are well under way, stop the daemon beneath them.
        busy_rx.recv().unwrap();
        busy_rx.recv().unwrap();
        target.stop(STOP_LIMIT);
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
    let reactor =
        line.split("reactor=").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("a reactor field");
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
    // Each connection goes to the reactor with the fewest I/O queues (the admin queue does
    // not count): four I/O queues, two on each reactor.
    let mut queues: Vec<Connection> = (0..4).map(|_| host.io_queue(31)).collect();
    let reactors: Vec<usize> = queues.iter().map(|io| reactor_of(&target, io.local_addr().unwrap())).collect();
    assert_eq!(reactors.iter().filter(|&&r| r == 0).count(), 2, "I/O queues per reactor: {reactors:?}");
    assert_eq!(reactors.iter().filter(|&&r| r == 1).count(), 2, "I/O queues per reactor: {reactors:?}");
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

// ----- a short buffer pool -----

/// The daemon with the smallest pool: MDTS 16 KiB gives classes of 4, 16 and 64 KiB, 64
/// buffers each (each connection's 64 KiB receive buffer comes from the last).
fn short_pool_target() -> Target {
    Target::start(
        // No write data window: the writes waiting for data must all get their R2T.
        "mdts_bytes = 16384\nin_capsule_data_bytes = 4096\nbuffer_pool_bytes = 16384\nh2c_window_bytes = \"1GiB\"",
        &protocol::simple_subsystem(),
    )
}

/// Receives PDUs on `io`, answering every R2T with the pattern of `seed` for its blocks, until
/// `count` CapsuleResps arrived; all must be successes.
fn answer_r2ts_until_done(io: &mut Connection, count: usize, slba_of: impl Fn(u16) -> u64, nlb: u32, seed: u64) {
    let mut done = 0;
    while done < count {
        let received = io.recv_pdu().unwrap();
        match received.pdu {
            Pdu::R2t(r2t) => {
                let data = pattern_of(slba_of(r2t.cccid), nlb, seed);
                let header = H2cData { cccid: r2t.cccid, ttag: r2t.ttag, datao: 0, datal: r2t.r2tl, last: true };
                io.send_h2c_data(&header, &data).unwrap();
            }
            Pdu::CapsuleResp(resp) => {
                let cqe = Cqe::decode(&resp.cqe);
                assert!(cqe.status.is_success(), "{cqe:?}");
                done += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Sends `count` Writes of `nlb` blocks by R2T from `base` (CIDs from 0) and returns the
/// `granted` R2Ts that come back: the writes that got a buffer.
fn hog_buffers(io: &mut Connection, base: u64, count: u16, nlb: u32, granted: usize) -> Vec<R2t> {
    for cid in 0..count {
        let slba = base + u64::from(cid) * u64::from(nlb);
        let command = Command::write(NSID, slba, nlb, pattern_of(slba, nlb, 6), false).placed(Placement::R2t);
        let capsule = io.encode_capsule(&command, cid);
        io.send_raw(&capsule).unwrap();
    }
    (0..granted)
        .map(|_| {
            let received = io.recv_pdu().unwrap();
            let Pdu::R2t(r2t) = received.pdu else { panic!("expected an R2T, got {:?}", received.pdu) };
            r2t
        })
        .collect()
}

/// Answers `r2ts`, then every R2T that follows, until all `count` writes from `base` completed.
fn release_buffers(io: &mut Connection, r2ts: &[R2t], base: u64, count: u16, nlb: u32) {
    let slba_of = |cid: u16| base + u64::from(cid) * u64::from(nlb);
    for r2t in r2ts {
        let header = H2cData { cccid: r2t.cccid, ttag: r2t.ttag, datao: 0, datal: r2t.r2tl, last: true };
        io.send_h2c_data(&header, &pattern_of(slba_of(r2t.cccid), nlb, 6)).unwrap();
    }
    answer_r2ts_until_done(io, usize::from(count), slba_of, nlb, 6);
}

/// Nothing arrives on `io` for a while: what it asked for is waiting.
fn still_waiting(io: &mut Connection) {
    match io.recv_pdu_timeout(Duration::from_millis(200)) {
        Err(HostError::Timeout(_)) => {}
        other => panic!("expected the command to wait for a buffer, got {other:?}"),
    }
}

/// One queue holds every 16 KiB-capable buffer (writes waiting for their data); another
/// queue's Read must wait for a buffer, and get one when the first queue's writes complete.
#[test]
fn a_command_waiting_for_a_buffer_gets_one_freed_by_another_queue() {
    let target = short_pool_target();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut hog = host.io_queue(127);
    let mut waiter = host.io_queue(31);
    write_read_back(&mut waiter, 60_000, 32, 5);
    // 64 buffers of 16 KiB and 61 of 64 KiB (three connections hold one each): 125 writes of
    // 16 KiB get theirs and an R2T; the last two wait for a buffer.
    let r2ts = hog_buffers(&mut hog, 0, 127, 32, 64 + 61);
    // The pool has no 16 KiB buffer left: the Read waits...
    let read = waiter.submit(Command::read(NSID, 60_000, 32, 32 * BLOCK)).unwrap();
    still_waiting(&mut waiter);
    // ...until the hog's writes get their data, complete and give their buffers back.
    release_buffers(&mut hog, &r2ts, 0, 127, 32);
    let done = waiter.wait(read).unwrap();
    assert!(done.is_success());
    fabriq_bench::pattern::check(&done.data, BLOCK, 60_000, 5).unwrap();
    for cid in 0..127u64 {
        assert_pattern(&mut waiter, cid * 32, 32, 6);
    }
}

/// The same for a receive side stopped on in-capsule data: no buffer of 4 KiB or more is left
/// for it, so the queue stops reading until another queue gives buffers back.
#[test]
fn a_receive_blocked_on_a_buffer_resumes_when_another_queue_frees_one() {
    let target = short_pool_target();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut small_hog = host.io_queue(127);
    let mut big_hog = host.io_queue(127);
    let mut waiter = host.io_queue(31);
    // The 64 buffers of 4 KiB, then the 64 of 16 KiB and the 60 of 64 KiB left (four
    // connections hold one each).
    let small = hog_buffers(&mut small_hog, 0, 64, 8, 64);
    let big = hog_buffers(&mut big_hog, 10_000, 127, 32, 64 + 60);
    let write = waiter.submit(Command::write(NSID, 60_000, 8, pattern_of(60_000, 8, 7), false)).unwrap();
    still_waiting(&mut waiter);
    release_buffers(&mut small_hog, &small, 0, 64, 8);
    release_buffers(&mut big_hog, &big, 10_000, 127, 32);
    assert!(waiter.wait(write).unwrap().is_success());
    assert_pattern(&mut waiter, 60_000, 8, 7);
    assert_pattern(&mut waiter, 0, 8, 6);
    assert_pattern(&mut waiter, 10_000, 32, 6);
}

/// Two queues of 128 commands each on a pool of 64 buffers per class: commands and receives
/// wait for buffers in turn, and every command completes with the right data.
#[test]
fn queues_share_a_short_pool_under_load() {
    let target = short_pool_target();
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut queues = [host.io_queue(127), host.io_queue(127)];
    thread::scope(|s| {
        for (i, io) in queues.iter_mut().enumerate() {
            // 4 KiB and less in the capsule, 4.5 and 16 KiB by R2T, reads of the same.
            s.spawn(move || protocol::pipelined_io(io, i as u64 * 40_000, 128, 128, 400, &[8, 9, 32, 1, 16]));
        }
    });
    serves(target.addr);
}

// ----- the write data window -----

/// With a window of two 128 KiB transfers, four writes by R2T get two R2Ts; each transfer
/// that arrives lets the oldest waiting write have its R2T, and all four complete intact.
#[test]
fn r2ts_past_the_write_data_window_wait_for_data_to_arrive() {
    let target = Target::start("h2c_window_bytes = \"256KiB\"", &protocol::simple_subsystem());
    let mut host = Host::connect(target.addr, HostOptions::default());
    let mut io = host.io_queue(31);
    let nlb = 256;
    let slba_of = |cid: u16| u64::from(cid) * u64::from(nlb);
    for cid in 0..4u16 {
        let command = Command::write(NSID, slba_of(cid), nlb, pattern_of(slba_of(cid), nlb, 8), false);
        io.send_raw(&io.encode_capsule(&command.placed(Placement::R2t), cid)).unwrap();
    }
    let mut granted = Vec::new();
    for _ in 0..2 {
        let received = io.recv_pdu().unwrap();
        let Pdu::R2t(r2t) = received.pdu else { panic!("expected an R2T, got {:?}", received.pdu) };
        assert_eq!(r2t.r2tl, nlb * BLOCK as u32);
        granted.push(r2t);
    }
    assert_eq!(granted.iter().map(|r| r.cccid).collect::<Vec<_>>(), [0, 1]);
    // 256 KiB asked for and none received: the other two wait.
    still_waiting(&mut io);
    let send = |io: &mut Connection, r2t: &R2t| {
        let header = H2cData { cccid: r2t.cccid, ttag: r2t.ttag, datao: 0, datal: r2t.r2tl, last: true };
        io.send_h2c_data(&header, &pattern_of(slba_of(r2t.cccid), nlb, 8)).unwrap();
    };
    send(&mut io, &granted[0]);
    // Command 0's data is in: its write completes, and command 2 (the oldest waiting) gets
    // the room its transfer left, in whichever order the two PDUs come.
    let mut next = None;
    let mut completed = 0;
    while next.is_none() || completed == 0 {
        match io.recv_pdu().unwrap().pdu {
            Pdu::R2t(r2t) => next = Some(r2t),
            Pdu::CapsuleResp(resp) => {
                assert!(Cqe::decode(&resp.cqe).status.is_success());
                completed += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let next = next.unwrap();
    assert_eq!(next.cccid, 2);
    still_waiting(&mut io);
    send(&mut io, &granted[1]);
    send(&mut io, &next);
    answer_r2ts_until_done(&mut io, 3, slba_of, nlb, 8);
    for cid in 0..4u16 {
        assert_pattern(&mut io, slba_of(cid), nlb, 8);
    }
}

/// A C2HTermReq queued behind data the host is slow to read reaches the host intact, although
/// the reactor's table of connections grows (and moves) while the send waits: nothing that a
/// send in flight points at may move with it. The table is large by then (over 128 KiB, where
/// the allocator maps it on its own, so that the move unmaps the old place).
#[test]
fn a_term_req_behind_unread_data_survives_new_connections() {
    let null_namespace = format!(
        "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"null\"\n  size = \"1GiB\"\n  block_size = 512\n"
    );
    let target = Target::start("mdts_bytes = 1048576", &null_namespace);
    let open = |count: usize| -> Vec<Connection> {
        (0..count).map(|_| Connection::open(target.addr, &HostOptions::default()).unwrap()).collect()
    };
    let mut others = open(200);
    // Without SQ flow control a read is one C2HData: 31 of them and the C2HTermReq fit one send.
    let opts = HostOptions { disable_sq_flow_control: true, ..HostOptions::default() };
    let mut host = Host::connect(target.addr, opts);
    let mut io = host.io_queue(31);
    const READS: u16 = 31;
    const MIB: usize = 1 << 20;
    let mut burst = Vec::new();
    for cid in 0..READS {
        burst.extend(io.encode_capsule(&Command::read(NSID, 0, 2048, MIB), cid));
    }
    let mut bad = io.encode_capsule(&Command::flush(NSID), READS);
    bad[fabriq_target::tcp::pdu::offset::HLEN] = 71;
    burst.extend_from_slice(&bad);
    io.send_raw(&burst).unwrap();
    // The null backend answers at once: 31 MiB of C2HData and the C2HTermReq are on their way,
    // far more than the socket buffers hold. Once the first PDU is here, the send is under way.
    let first = io.recv_pdu().unwrap();
    assert!(matches!(first.pdu, Pdu::C2hData(d) if d.cccid == 0 && d.success), "{:?}", first.pdu);
    // Meanwhile the table of connections outgrows its 256 places.
    others.extend(open(60));
    for cid in 1..READS {
        let received = io.recv_pdu().unwrap();
        assert!(
            matches!(received.pdu, Pdu::C2hData(d) if d.cccid == cid && d.datal as usize == MIB),
            "{:?}",
            received.pdu
        );
    }
    protocol::expect_term_req(&mut io, fabriq_target::tcp::pdu::Fes::InvalidHeaderField, 2, &bad[..8]);
    drop(others);
    assert!(host.admin.keep_alive().unwrap().is_success());
}

/// Connections accepted in bursts while others are being initialized all get an intact
/// ICResp: the reactor's table of connections grows as they arrive, and nothing that a send
/// in flight points at may move with it.
#[test]
fn bursts_of_connections_all_get_intact_icresps() {
    const THREADS: usize = 30;
    const EACH: usize = 10;
    for _ in 0..3 {
        let target = Target::simple();
        let conns: Vec<Connection> = thread::scope(|s| {
            let opening: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        (0..EACH)
                            .map(|_| Connection::open(target.addr, &HostOptions::default()).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            opening.into_iter().flat_map(|t| t.join().unwrap()).collect()
        });
        for conn in &conns {
            let ic_resp = conn.ic_resp().unwrap();
            assert_eq!((ic_resp.pfv, ic_resp.cpda, ic_resp.maxh2cdata), (0, 0, 128 * 1024));
        }
        serves(target.addr);
        drop(conns);
    }
}
