//! Shared by the integration tests: a real `fabriq-target` process on loopback, started
//! from a generated configuration and stopped with SIGTERM (its exit status checked) when
//! the handle drops; and [`inproc`], the data plane run in the test's own process for a
//! target the test builds and changes while hosts are connected.
#![allow(dead_code)]

pub mod inproc;
pub mod node;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use fabriq_testkit::free_port;

/// The NQN of the subsystem most tests use.
pub const NQN: &str = "nqn.2026-11.dev.fabriq:it";

pub struct Target {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// The NVMe/TCP listener.
    pub addr: SocketAddr,
    /// The discovery-only listener.
    pub discovery: SocketAddr,
    log: PathBuf,
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
        let dport = std::iter::repeat_with(free_port).find(|&p| p != port).unwrap();
        // The node API listens on 127.0.0.1:8800 by default; tests that want it say so.
        let api = if subsystems.contains("[api]") { "" } else { "[api]\nenabled = false\n\n" };
        let config = format!(
            "[target]\n{target}\n\n[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{dport}\"\ndiscovery_only = true\n\n{api}{}",
            subsystems.replace("{dir}", &dir.path().display().to_string())
        );
        let path = dir.path().join("target.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("target.log");
        let child = Command::new(env!("CARGO_BIN_EXE_fabriq-target"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut t = Target {
            child: Some(child),
            dir,
            addr: ([127, 0, 0, 1], port).into(),
            discovery: ([127, 0, 0, 1], dport).into(),
            log,
        };
        if t.wait_listening() { Some(t) } else { None }
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

    /// Waits until both listeners accept; false when the daemon could not bind its ports.
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() || TcpStream::connect(self.discovery).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                if self.log_text().contains("Address already in use") {
                    self.child = None;
                    return false;
                }
                panic!("fabriq-target exited with {status} before listening:\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "fabriq-target not listening after 10 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s)).ok();
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for a clean exit (status 0) within `limit`.
    pub fn stop(&mut self, limit: Duration) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: kill with a valid signal on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "fabriq-target exited with {status}:\n{}", self.log_text());
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fabriq-target did not stop within {limit:?} of SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("--- fabriq-target log ---\n{}", self.log_text());
            }
            return;
        }
        self.stop(Duration::from_secs(20));
    }
}
