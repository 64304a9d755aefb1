//! Real processes on loopback for the driver's tests: storage nodes (`fabriq-target` with a
//! file pool and its node API), `fabriq-provisioner` (redb, one admin token) and the
//! `fabriq-csi` binary serving on a Unix socket in a temporary directory, reached by a real
//! tonic client. The other crates' binaries are built once by cargo unless
//! `FABRIQ_TARGET_BIN` / `FABRIQ_PROVISIONER_BIN` name them. Every process is stopped by its
//! own PID when its handle is dropped.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const MIB: u64 = 1 << 20;
pub const TOKEN: &str = "csi-test-admin-token-0123456789";
pub const HOST1: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001";
pub const HOST2: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000002";

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A binary of another crate of the workspace: `$env`, or `cargo build` (a no-op when fresh)
/// into the same profile directory as this crate's binary.
pub fn other_bin(package: &str, bin: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_BIN_EXE_fabriq-csi")).parent().unwrap().to_owned();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin]).current_dir(workspace());
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().expect("cargo runs").success(), "cargo build -p {package} failed");
    let path = dir.join(bin);
    assert!(path.exists(), "{} missing after the build", path.display());
    path
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A child process stopped by its PID (SIGTERM, then SIGKILL after a bound) when dropped.
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
    what: &'static str,
}

impl Proc {
    fn spawn(what: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = cmd.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Proc { child: Some(child), log, what }
    }

    /// Waits until `ready` holds; false if the process exited first (its log is returned to
    /// the caller through a panic unless the log shows a port lost to another test).
    fn wait(&mut self, ready: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = log_tail(&self.log);
                if log.contains("Address already in use") || log.contains("address in use") {
                    self.child = None;
                    return false;
                }
                panic!("{} exited with {status} before it was ready:\n{log}", self.what);
            }
            assert!(Instant::now() < deadline, "{} not ready after 60 s:\n{}", self.what, log_tail(&self.log));
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.what, log_tail(&self.log));
        }
        self.stop();
    }
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).is_ok()
}

/// A storage node: fabriq-target with one file pool `p1` and its node API.
pub struct Node {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub nvme: SocketAddr,
    pub api: SocketAddr,
    pub token: String,
}

impl Node {
    pub fn start(pool_mib: u64) -> Node {
        let bin = other_bin("fabriq-target", "fabriq-target", "FABRIQ_TARGET_BIN");
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..20 {
            let (nvme, api): (SocketAddr, SocketAddr) =
                (([127, 0, 0, 1], free_port()).into(), ([127, 0, 0, 1], free_port()).into());
            let data = dir.path().join("data");
            let config = format!(
                "[target]\ndata_dir = \"{data}\"\nbuffer_pool_bytes = \"4MiB\"\n\n[api]\naddress = \"{api}\"\n\n\
                 [[listener]]\ntransport = \"tcp\"\naddress = \"{nvme}\"\n\n\
                 [[pool]]\nname = \"p1\"\npath = \"{data}/p1.img\"\nsize = \"{pool_mib}MiB\"\n",
                data = data.display()
            );
            let path = dir.path().join("target.toml");
            std::fs::write(&path, config).unwrap();
            let mut proc = Proc::spawn(
                "fabriq-target",
                Command::new(&bin).arg("--config").arg(&path),
                dir.path().join("target.log"),
            );
            if proc.wait(|| listening(api) && listening(nvme)) {
                let token = std::fs::read_to_string(data.join("api-token")).unwrap().trim().to_owned();
                return Node { proc, dir, nvme, api, token };
            }
        }
        panic!("fabriq-target found no free ports");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }
}

/// fabriq-provisioner on redb with the admin token [`TOKEN`].
pub struct Provisioner {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    agent: ureq::Agent,
}

impl Provisioner {
    pub fn start() -> Provisioner {
        let bin = other_bin("fabriq-provisioner", "fabriq-provisioner", "FABRIQ_PROVISIONER_BIN");
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("admin {TOKEN}\n")).unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        for _ in 0..20 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let config = format!(
                "[provisioner]\ndata_dir = \"{}\"\nreconcile_interval_ms = 500\n\n[api]\naddress = \"{addr}\"\ntokens_file = \"{}\"\n",
                dir.path().join("data").display(),
                tokens.display()
            );
            let path = dir.path().join("provisioner.toml");
            std::fs::write(&path, config).unwrap();
            let mut proc = Proc::spawn(
                "fabriq-provisioner",
                Command::new(&bin).arg("--config").arg(&path),
                dir.path().join("provisioner.log"),
            );
            if proc.wait(|| listening(addr)) {
                return Provisioner { proc, dir, addr, agent };
            }
        }
        panic!("fabriq-provisioner found no free port");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One call with the admin token: (status, JSON body).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url());
        let auth = format!("Bearer {TOKEN}");
        let r = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => self.agent.post(&url).header("Authorization", &auth).send_json(b),
            ("PATCH", Some(b)) => self.agent.patch(&url).header("Authorization", &auth).send_json(b),
            (m, _) => panic!("no {m} here"),
        }
        .unwrap();
        let status = r.status().as_u16();
        let text = r.into_body().read_to_string().unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    pub fn register(&self, name: &str, node: &Node, labels: Value) {
        let body = json!({"name": name, "url": node.url(), "token": node.token, "labels": labels});
        let (status, v) = self.call("POST", "/v1/nodes", Some(body));
        assert!(status == 200 || status == 201, "registering {name}: {status} {v}");
    }
}

/// The `fabriq-csi` binary serving on a Unix socket.
pub struct Driver {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Driver {
    /// `args` after `--endpoint`; the token file is written when `token` is given.
    pub fn start(args: &[&str], token: Option<&str>) -> Driver {
        Driver::start_with_env(args, token, &[])
    }

    /// [`Driver::start`] with environment variables (the flags' `FABRIQ_*` names).
    pub fn start_with_env(args: &[&str], token: Option<&str>, env: &[(&str, &str)]) -> Driver {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("csi/csi.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fabriq-csi"));
        cmd.arg("--endpoint").arg(format!("unix://{}", socket.display())).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(t) = token {
            let file = dir.path().join("token");
            std::fs::write(&file, format!("{t}\n")).unwrap();
            cmd.arg("--token-file").arg(file);
        }
        let mut proc = Proc::spawn("fabriq-csi", &mut cmd, dir.path().join("csi.log"));
        assert!(proc.wait(|| socket.exists()));
        Driver { proc, dir, socket }
    }
}
