//! Shared by the integration tests: a real `fabriq-target` process on loopback, started
//! from a generated configuration and stopped with SIGTERM (its exit status checked) when
//! the handle drops; and [`inproc`], the data plane run in the test's own process for a
//! target the test builds and changes while hosts are connected.
#![allow(dead_code)]

pub mod inproc;
pub mod node;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub use fabriq_testkit::free_port;
use fabriq_testkit::{Daemon, listens};

/// The NQN of the subsystem most tests use.
pub const NQN: &str = "nqn.2026-11.dev.fabriq:it";

pub struct Target {
    daemon: Daemon,
    pub dir: tempfile::TempDir,
    /// The NVMe/TCP listener.
    pub addr: SocketAddr,
    /// The discovery-only listener.
    pub discovery: SocketAddr,
}

impl Target {
    /// Starts the daemon with `subsystems` (TOML `[[subsystem]]` tables; `{dir}` is replaced
    /// by the test's temporary directory) and `target` (the `[target]` table's body).
    pub fn start(target: &str, subsystems: &str) -> Target {
        // Ports come from the kernel's free list and are released before the daemon binds
        // them: another test may take one meanwhile. A start that loses that race is retried
        // with new ports.
        for _ in 0..4 {
            if let Some(t) = Target::try_start(target, subsystems) {
                return t;
            }
        }
        panic!("fabriq-target could not bind free ports four times in a row");
    }

    fn try_start(target: &str, subsystems: &str) -> Option<Target> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let dport = free_port();
        // The node API listens on 127.0.0.1:8800 by default; tests that want it say so.
        let api = if subsystems.contains("[api]") { "" } else { "[api]\nenabled = false\n\n" };
        let config = format!(
            "[target]\n{target}\n\n[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{dport}\"\ndiscovery_only = true\n\n{api}{}",
            subsystems.replace("{dir}", &dir.path().display().to_string())
        );
        let path = dir.path().join("target.toml");
        std::fs::write(&path, config).unwrap();
        let mut t = Target {
            daemon: Daemon::new("fabriq-target", dir.path().join("target.log")),
            dir,
            addr: ([127, 0, 0, 1], port).into(),
            discovery: ([127, 0, 0, 1], dport).into(),
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fabriq-target"));
        cmd.arg("--config").arg(&path).env("RUST_LOG", "debug");
        let (addr, discovery) = (t.addr, t.discovery);
        t.daemon.start(&mut cmd, |pid| listens(pid, addr) && listens(pid, discovery)).then_some(t)
    }

    /// One subsystem `NQN` open to any host, with a 64 MiB `mem` namespace of 512-byte blocks.
    pub fn simple() -> Target {
        Target::start(
            "",
            &format!(
                "[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n  [[subsystem.namespace]]\n  nsid = 1\n  backend = \"mem\"\n  size = \"64MiB\"\n  block_size = 512\n"
            ),
        )
    }

    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Sends SIGTERM and waits for a clean exit (status 0) within `limit`.
    pub fn stop(&mut self, limit: Duration) {
        self.daemon.stop_within(limit);
    }
}
