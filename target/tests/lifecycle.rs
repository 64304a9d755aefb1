//! The life of associations and of the daemon, against the real process over loopback:
//! keep-alive expiry (the controller, its admin queue and its I/O queues torn down; a new
//! association works) and keep-alives that keep it; SIGTERM with I/O in flight (exit 0, and
//! what completed reads back after a restart); configuration errors (non-zero exit before
//! listening, FILE:LINE:COL and the field on stderr); `--check-config`; the embedded default
//! configuration; two reactors with I/O queues spread over both; reactors pinned to the
//! CPUs the configuration names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use common::{NQN, Target, free_port};
use fabriq_bench::host::{Command, Connection, HostError, HostOptions, Placement};
use fabriq_bench::pattern;
use fabriq_target::config::Config;
use fabriq_target::nvme::log::{SmartLog, lid};
use fabriq_target::nvme::{DISCOVERY_NQN, Status};
use fabriq_target::tcp::pdu::{H2cData, Pdu};

const BIN: &str = env!("CARGO_BIN_EXE_fabriq-target");

fn mem_subsystem() -> String {
    format!(
        "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"64MiB\"\n  block_size = 512\n"
    )
}

fn file_subsystem(image: &Path) -> String {
    format!(
        "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"file\"\n  path = \"{}\"\n  size = \"8MiB\"\n  block_size = 512\n",
        image.display()
    )
}

/// An admin queue (with `kato_ms`) enabled, and `queues` I/O queues.
fn associate(addr: SocketAddr, opts: &HostOptions, kato_ms: u32, queues: u16) -> (Connection, u16, Vec<Connection>) {
    let mut admin = Connection::open(addr, opts).unwrap();
    let cntlid = admin.connect_admin(NQN, kato_ms, 31).unwrap();
    admin.enable().unwrap();
    admin.set_number_of_queues(u32::from(queues)).unwrap();
    let io = (1..=queues)
        .map(|qid| {
            let mut io = Connection::open(addr, opts).unwrap();
            io.connect_io(NQN, cntlid, qid, 63).unwrap();
            io.set_icd_limit(8192);
            io
        })
        .collect();
    (admin, cntlid, io)
}

fn pattern_of(slba: u64, nlb: u32, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; nlb as usize * 512];
    pattern::fill(&mut data, 512, slba, seed);
    data
}

fn write_ok(io: &mut Connection, slba: u64, nlb: u32, seed: u64) {
    let c = io.write(1, slba, nlb, &pattern_of(slba, nlb, seed), false).unwrap();
    assert!(c.is_success(), "write of {nlb} blocks at {slba}: {:?}", c.cqe);
}

fn check_pattern(io: &mut Connection, slba: u64, nlb: u32, seed: u64) {
    let mut back = vec![0u8; nlb as usize * 512];
    let c = io.read(1, slba, nlb, &mut back).unwrap();
    assert!(c.is_success(), "read of {nlb} blocks at {slba}: {:?}", c.cqe);
    pattern::check(&back, 512, slba, seed).unwrap_or_else(|m| panic!("{nlb} blocks at {slba}: {m:?}"));
}

/// Waits (bounded) until the target closes `conn`.
fn assert_closed(conn: &mut Connection, what: &str) {
    match conn.recv_pdu_timeout(Duration::from_secs(5)) {
        Err(HostError::Closed) => {}
        Err(HostError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected the target to close the connection, got {other:?}"),
    }
}

/// The log without its terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ----- keep-alive -----

#[test]
fn keep_alive_expiry_tears_down_the_controller_and_its_io_queues() {
    // Two reactors, so that the I/O queues are not all where the admin queue is.
    let target = Target::start("reactors = 2", &mem_subsystem());
    let opts = HostOptions::default();
    let (mut admin, cntlid, mut io) = associate(target.addr, &opts, 1000, 2);
    write_ok(&mut io[0], 0, 8, 1);
    write_ok(&mut io[1], 8, 8, 1);
    // No keep-alive from now on: the target closes the admin queue and the I/O queues.
    assert_closed(&mut admin, "admin queue after KATO");
    assert_closed(&mut io[0], "I/O queue 1 after KATO");
    assert_closed(&mut io[1], "I/O queue 2 after KATO");
    assert!(plain(&target.log_text()).contains("keep-alive timer expired"), "{}", target.log_text());
    // The controller is gone.
    match Connection::open(target.addr, &opts).unwrap().connect_io(NQN, cntlid, 1, 31) {
        Err(HostError::Status(cqe)) => assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS.with_dnr()),
        other => panic!("an I/O queue of an expired controller was not refused: {other:?}"),
    }
    // A new association works, and the data is still there.
    let (_admin, _, mut io) = associate(target.addr, &opts, 0, 1);
    check_pattern(&mut io[0], 0, 16, 1);
}

#[test]
fn keep_alives_every_300_ms_keep_the_association_past_kato() {
    let target = Target::simple();
    let opts = HostOptions::default();
    // KATO 2 s with a keep-alive every 300 ms: a generous margin for a loaded test machine,
    // and the run lasts well past KATO.
    let (mut admin, _, mut io) = associate(target.addr, &opts, 2000, 1);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        std::thread::sleep(Duration::from_millis(300));
        assert!(admin.keep_alive().unwrap().is_success());
    }
    write_ok(&mut io[0], 0, 8, 2);
    check_pattern(&mut io[0], 0, 8, 2);
    assert!(admin.identify_controller().is_ok());
    assert!(!plain(&target.log_text()).contains("keep-alive timer expired"));
}

// ----- SIGTERM -----

#[test]
fn sigterm_with_io_in_flight_exits_zero_and_completed_writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_subsystem(&dir.path().join("ns.img"));
    let mut target = Target::start("", &config);
    let opts = HostOptions::default();
    let (_admin, _, mut queues) = associate(target.addr, &opts, 0, 1);
    let io = &mut queues[0];
    // Completed before the signal.
    let mut completed: Vec<(u64, u32, u64)> = Vec::new();
    for i in 0..8 {
        write_ok(io, i * 16, 16, 3);
        completed.push((i * 16, 16, 3));
    }
    // A write by R2T whose R2T has arrived and whose data has not been sent yet.
    let (w_slba, w_nlb) = (1000u64, 64u32);
    let w_data = pattern_of(w_slba, w_nlb, 4);
    let w = io.submit(Command::write(1, w_slba, w_nlb, w_data.clone(), false).placed(Placement::R2t)).unwrap();
    let r2t = match io.recv_pdu().unwrap().pdu {
        Pdu::R2t(r2t) => r2t,
        other => panic!("expected an R2T, got {other:?}"),
    };
    assert_eq!((r2t.cccid, r2t.r2to, r2t.r2tl), (w, 0, w_data.len() as u32));
    // More writes in flight, in the capsule.
    let pending: BTreeMap<u16, u64> = (0..16u64)
        .map(|i| {
            let slba = 2000 + i * 16;
            (io.submit(Command::write(1, slba, 16, pattern_of(slba, 16, 5), false)).unwrap(), slba)
        })
        .collect();
    // SAFETY: kill with a valid signal on our own child's pid.
    assert_eq!(unsafe { libc::kill(target.pid() as i32, libc::SIGTERM) }, 0);
    // Once the reactor has begun to stop (it logs so, then stops taking new commands), the
    // data the R2T asked for: the write is in flight, so it must finish.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !plain(&target.log_text()).contains("stopping reactor=0") {
        assert!(Instant::now() < deadline, "the reactor did not begin to stop:\n{}", target.log_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    // A new command sent now, ahead of that data, is refused (retryable) so the data can come in.
    let late = io.submit(Command::write(1, 3000, 16, pattern_of(3000, 16, 6), false)).unwrap();
    let h2c = H2cData { cccid: w, ttag: r2t.ttag, datao: 0, datal: r2t.r2tl, last: true };
    io.send_h2c_data(&h2c, &w_data).unwrap();
    let c = io.wait(w).unwrap();
    assert!(c.is_success(), "the write whose data was awaited: {:?}", c.cqe);
    completed.push((w_slba, w_nlb, 4));
    assert_eq!(io.wait(late).unwrap().status(), Status::ABORTED_SQ_DELETION, "a command sent after the stop began");
    // The others completed, or, taken after the stop began, were refused as the late one.
    for (cid, slba) in pending {
        let c = io.wait(cid).unwrap();
        match c.status() {
            Status::SUCCESS => completed.push((slba, 16, 5)),
            status => assert_eq!(status, Status::ABORTED_SQ_DELETION, "write at {slba}"),
        }
    }
    // Nothing is in flight any more: the target closes the queue and exits.
    assert_closed(io, "I/O queue of a stopping target");
    target.stop(Duration::from_secs(10));
    drop(queues);
    let target = Target::start("", &config);
    let (_admin, _, mut queues) = associate(target.addr, &opts, 0, 1);
    for (slba, nlb, seed) in completed {
        check_pattern(&mut queues[0], slba, nlb, seed);
    }
    let mut late_blocks = vec![0xFFu8; 16 * 512];
    assert!(queues[0].read(1, 3000, 16, &mut late_blocks).unwrap().is_success());
    assert!(late_blocks.iter().all(|&b| b == 0), "the refused write was not written");
}

// ----- the command line -----

/// Runs the daemon with `args` and waits (bounded) for it to exit; returns its exit code,
/// stdout and stderr.
fn run_to_exit(args: &[&std::ffi::OsStr], cwd: &Path) -> (Option<i32>, String, String) {
    let mut child =
        Process::new(BIN).args(args).current_dir(cwd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fabriq-target {args:?} did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), out, err)
}

#[test]
fn a_config_error_stops_the_daemon_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cases = [
        (
            format!(
                "[target]\nreactors = 1\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"1MiB\"\n  block_size = 1000\n"
            ),
            "14:16",
            "`subsystem[0].namespace[0].block_size`",
        ),
        (format!("[target]\nmdts = 5\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n"), "2:1", "`target.mdts`"),
        (
            format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n[[subsystem]]\nnqn = \"not an nqn\"\n"),
            "4:7",
            "`subsystem[0].nqn`",
        ),
    ];
    for (i, (text, line_col, field)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = run_to_exit(&[std::ffi::OsStr::new("--config"), path.as_os_str()], dir.path());
        assert_eq!(code, Some(78), "EX_CONFIG; stderr: {err}");
        let place = format!("{}:{line_col}:", path.display());
        assert!(err.contains(&place), "stderr names {place}: {err}");
        assert!(err.contains(field), "stderr names the field {field}: {err}");
        assert!(!err.contains("listening") && out.is_empty(), "it listened: {out} {err}");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} is bound");
    }
}

#[test]
fn check_config_prints_the_config_with_every_default() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("target.toml");
    std::fs::write(&path, format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n{}", mem_subsystem())).unwrap();
    let (code, out, err) = run_to_exit(
        &[std::ffi::OsStr::new("--config"), path.as_os_str(), std::ffi::OsStr::new("--check-config")],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{err}");
    let printed = Config::parse(&out, "<stdout>").unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(printed, Config::load(&path).unwrap());
    for line in [
        "mdts_bytes = 131072",
        "max_queue_entries = 128",
        "reactors = 1",
        &format!("address = \"127.0.0.1:{port}\""),
        &format!("nqn = \"{NQN}\""),
    ] {
        assert!(out.lines().any(|l| l.trim() == line), "{line:?} missing from:\n{out}");
    }
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "--check-config listened");
}

/// A daemon started by hand; killed if the test fails before it stops it.
struct Daemon(Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn without_config_arguments_the_embedded_default_serves_on_4420_and_8009() {
    let taken: Vec<u16> =
        [4420u16, 8009].into_iter().filter(|&p| TcpListener::bind(("127.0.0.1", p)).is_err()).collect();
    if !taken.is_empty() {
        eprintln!("SKIPPED: 127.0.0.1 ports {taken:?} are in use, and the embedded default listens on 4420 and 8009");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let child = Process::new(BIN)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(Some(child));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect("127.0.0.1:4420").is_err() || TcpStream::connect("127.0.0.1:8009").is_err() {
        if let Some(status) = daemon.0.as_mut().unwrap().try_wait().unwrap() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("cannot listen") {
                eprintln!("SKIPPED: another process took port 4420 or 8009 first: {text}");
                return;
            }
            panic!("the default daemon exited with {status}:\n{text}");
        }
        assert!(Instant::now() < deadline, "the default daemon is not listening after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let default_nqn = "nqn.2026-11.dev.fabriq:default";
    let opts = HostOptions::default();
    let mut disc = Connection::open("127.0.0.1:8009".parse().unwrap(), &opts).unwrap();
    disc.connect_admin(DISCOVERY_NQN, 0, 31).unwrap();
    disc.enable().unwrap();
    let page = disc.discovery_log().unwrap();
    let nvm: Vec<_> = page
        .entries
        .iter()
        .filter(|e| e.subnqn.as_str() == default_nqn)
        .map(|e| (e.traddr.as_str(), e.trsvcid.as_str()))
        .collect();
    assert_eq!(nvm, vec![("127.0.0.1", "4420")]);
    let addr: SocketAddr = "127.0.0.1:4420".parse().unwrap();
    let mut admin = Connection::open(addr, &opts).unwrap();
    let cntlid = admin.connect_admin(default_nqn, 0, 31).unwrap();
    admin.enable().unwrap();
    let ns = admin.identify_namespace(1).unwrap();
    assert_eq!((ns.nsze, ns.lbaf[0].lbads), ((1 << 30) / 4096, 12), "a 1 GiB namespace of 4 KiB blocks");
    let mut io = Connection::open(addr, &opts).unwrap();
    io.connect_io(default_nqn, cntlid, 1, 31).unwrap();
    io.set_icd_limit(8192);
    let mut data = vec![0u8; 8192];
    pattern::fill(&mut data, 4096, 7, 6);
    assert!(io.write(1, 7, 2, &data, false).unwrap().is_success());
    let mut back = vec![0u8; 8192];
    assert!(io.read(1, 7, 2, &mut back).unwrap().is_success());
    assert_eq!(back, data);
    drop((io, admin, disc));
    let mut child = daemon.0.take().unwrap();
    // SAFETY: kill with a valid signal on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the default daemon did not stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let image = std::fs::metadata(dir.path().join("fabriq-data/default.img")).unwrap();
    assert_eq!(image.len(), 1 << 30, "./fabriq-data/default.img, 1 GiB");
}

// ----- reactors -----

#[test]
fn two_reactors_spread_io_queues_over_both() {
    let target = Target::start("reactors = 2", &mem_subsystem());
    let opts = HostOptions::default();
    let (mut admin, _, queues) = associate(target.addr, &opts, 0, 4);
    // Which reactor took each I/O queue's connection, from the daemon's log.
    let log = plain(&target.log_text());
    let reactor_of = |conn: &Connection| -> usize {
        let peer = format!("peer=Some({})", conn.local_addr().unwrap());
        let line = log
            .lines()
            .find(|l| l.contains("connection accepted") && l.contains(&peer))
            .unwrap_or_else(|| panic!("no accept of {peer} in:\n{log}"));
        let at = line.find("reactor=").unwrap() + "reactor=".len();
        line[at..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let reactors: Vec<usize> = queues.iter().map(reactor_of).collect();
    assert_eq!(
        reactors.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1]),
        "I/O queues on reactors {reactors:?}"
    );
    // All four queues at once, each on its own range.
    let threads: Vec<_> = queues
        .into_iter()
        .enumerate()
        .map(|(i, mut io)| {
            std::thread::spawn(move || {
                let base = i as u64 * 10_000;
                for j in 0..20u64 {
                    write_ok(&mut io, base + j * 64, 64, 7 + i as u64);
                }
                for j in 0..20u64 {
                    check_pattern(&mut io, base + j * 64, 64, 7 + i as u64);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // The counters of both reactors add up.
    let c = admin.get_log_page(lid::SMART_HEALTH, 1, 0, SmartLog::SIZE, false).unwrap().success().unwrap();
    let smart = SmartLog::decode(&c.data).unwrap();
    assert_eq!((smart.host_write_commands, smart.host_read_commands), (80, 80));
    assert_eq!(smart.data_units_written, (80 * 64 * 512u128).div_ceil(512_000));
}

#[test]
fn reactors_run_on_the_cpus_the_configuration_names() {
    // The last CPU this process may use first, so that reactor 0 is not simply on CPU 0:
    // the order of the list is the reactors' order.
    let allowed = fabriq_target::affinity::allowed();
    let cpus: Vec<usize> = allowed.iter().rev().take(2).copied().collect();
    let list = cpus.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    // No `reactors`: one per CPU listed.
    let target = Target::start(&format!("cpus = [{list}]"), &mem_subsystem());
    let opts = HostOptions::default();
    let (_admin, _, mut queues) = associate(target.addr, &opts, 0, cpus.len() as u16);
    for (i, io) in queues.iter_mut().enumerate() {
        write_ok(io, i as u64 * 64, 64, 11);
        check_pattern(io, i as u64 * 64, 64, 11);
    }
    // Each reactor thread's affinity, from /proc: its own CPU and no other.
    let mut pinned = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", target.pid())).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap();
        let Some(id) = comm.trim().strip_prefix("fabriq-r") else { continue };
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let allowed =
            status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_owned()).unwrap();
        pinned.insert(id.parse::<usize>().unwrap(), allowed);
    }
    let expected: BTreeMap<usize, String> = cpus.iter().enumerate().map(|(i, c)| (i, c.to_string())).collect();
    assert_eq!(pinned, expected, "reactor threads and their CPUs");
    let log = plain(&target.log_text());
    assert_eq!(log.matches("reactor pinned").count(), cpus.len(), "{log}");
}
