//! What the integration tests of fabriq-target, fabriq-provisioner and fabriq-csi share: real
//! processes on loopback and a small blocking HTTP client.
//!
//! - [`Daemon`]: a child process whose stderr goes to a log file, waited for until it is
//!   ready, stopped by its PID with SIGTERM (its exit status must be 0) when dropped, killed
//!   with its log's tail printed when the test panics;
//! - [`Node`]: a `fabriq-target` storage node with file pools and its node API, its data
//!   directory kept across restarts (SIGTERM or SIGKILL);
//! - [`exchange`]: one HTTP request answered as (status, JSON);
//! - [`workspace_bin`]: another crate's binary, built by cargo on first use.
//!
//! Dev-only (`publish = false`): nothing here runs outside the tests.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a daemon may take to start listening, and to stop after SIGTERM. Only waits are
/// bounded by these; no test asserts how long anything took.
const READY_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// A port nobody listens on right now (the kernel's choice, released at once: another test
/// may take it before the daemon binds it, which [`Daemon::start`] reports), and never one
/// this process was given before: a test that asks for several ports (two listeners, a
/// client and a peer) gets distinct ones, although each is released before the next is
/// chosen and the kernel may hand the same one out again.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if given.insert(port) {
            return port;
        }
    }
}

/// Whether something accepts connections at `addr`.
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).is_ok()
}

/// Whether process `pid` itself listens on `addr`'s TCP port and accepts there. A port from
/// [`free_port`] is free only until someone binds it: another test's daemon may take it
/// first, and then `listening` alone would call the wrong process ready.
pub fn listens(pid: u32, addr: SocketAddr) -> bool {
    if !listening(addr) {
        return false;
    }
    // The kernel's tables hold every socket of the machine (thousands in TIME_WAIT after a
    // busy test): only lines whose local port matches are split.
    let port = format!(":{:04X} ", addr.port());
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in read_text(Path::new(table)).lines().skip(1).filter(|l| l.contains(&port)) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; st 0A is LISTEN; the inode is field 9.
            let local = fields.get(1).is_some_and(|a| a.ends_with(port.trim_end()));
            if local && fields.get(3) == Some(&"0A") {
                inodes.extend(fields.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    !inodes.is_empty()
        && std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|to| inodes.iter().any(|i| to.as_os_str() == i.as_str()))
            })
        })
}

/// The whole text of a file; empty when it cannot be read.
pub fn read_text(path: &Path) -> String {
    let mut s = String::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s)).ok();
    s
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The workspace's root folder.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// A binary of a crate of the workspace, for the tests of another one (cargo gives a test only
/// its own crate's binaries): `$env` when set, else `cargo build -p package --bin bin` (a
/// no-op when fresh) into the profile directory of the running test (`build/debug`).
pub fn workspace_bin(package: &str, bin: &str, env: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    // The test runs as build/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo")));
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin]).current_dir(workspace());
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().expect("cargo runs").success(), "cargo build -p {package} --bin {bin} failed");
    let path = dir.join(bin);
    assert!(path.exists(), "{} is missing after the build", path.display());
    path
}

/// The fabriq-target binary for another crate's tests: `FABRIQ_TARGET_BIN`, or built once.
pub fn target_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| workspace_bin("fabriq-target", "fabriq-target", "FABRIQ_TARGET_BIN")).clone()
}

/// An HTTP client that hands every status back (no status is an error) and gives up on an
/// exchange after 60 s.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// One HTTP exchange: `auth` is the whole Authorization header, `body` (content type, text).
/// Answers (status, JSON body, or Null when empty, or the text as a JSON string when it is
/// not JSON); `Err` when the exchange itself failed (the server died).
pub fn exchange(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<(&str, String)>,
) -> Result<(u16, Value), ureq::Error> {
    let response = match method {
        "GET" | "DELETE" => {
            let mut req = if method == "GET" { agent.get(url) } else { agent.delete(url) };
            if let Some(auth) = auth {
                req = req.header("Authorization", auth);
            }
            req.call()
        }
        _ => {
            let mut req = match method {
                "POST" => agent.post(url),
                "PUT" => agent.put(url),
                "PATCH" => agent.patch(url),
                other => panic!("method {other}"),
            };
            if let Some(auth) = auth {
                req = req.header("Authorization", auth);
            }
            match body {
                Some((content_type, text)) => req.header("Content-Type", content_type).send(text.as_bytes()),
                None => req.send_empty(),
            }
        }
    }?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string()?;
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Ok((status, value))
}

/// [`exchange`] with a bearer `token` and a JSON `body`.
pub fn json_exchange(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), ureq::Error> {
    let auth = token.map(|t| format!("Bearer {t}"));
    exchange(agent, method, url, auth.as_deref(), body.map(|b| ("application/json", b.to_string())))
}

/// The `answer` to the request `what` names must have `status`; returns its body.
pub fn expect_status((got, value): (u16, Value), what: impl Fn() -> String, status: u16) -> Value {
    assert_eq!(got, status, "{}: {value}", what());
    value
}

/// The `answer` to the request `what` names must be the error `status` with `code` and a
/// message a person can act on (every REST error's shape); returns its body.
pub fn expect_error_code((got, value): (u16, Value), what: impl Fn() -> String, status: u16, code: &str) -> Value {
    assert_eq!((got, value["code"].as_str()), (status, Some(code)), "{}: {value}", what());
    assert!(value["message"].as_str().is_some_and(|m| !m.is_empty()), "{value}");
    value
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// How [`Daemon::launch`] ended.
#[derive(Debug)]
pub enum Started {
    /// The readiness check held.
    Ready,
    /// The process exited first, saying its address was taken.
    AddressInUse,
    /// The process exited first for another reason; `log` is what it wrote this time.
    Exited { status: std::process::ExitStatus, log: String },
}

/// A child process of the test: its stderr appended to `log` (a restart keeps what came
/// before), stopped by its PID when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    what: &'static str,
}

impl Daemon {
    /// A handle for the program `what` logging to `log`; nothing runs before [`Daemon::start`].
    pub fn new(what: &'static str, log: PathBuf) -> Daemon {
        Daemon { child: None, log, what }
    }

    /// Starts `cmd` (with `RUST_LOG=info` unless it sets another) and waits until `ready`
    /// holds for the child's PID (see [`listens`]). False when the process exited first saying
    /// its address was in use (a port lost to another test, or still held by a killed
    /// predecessor); any other early exit panics with the log.
    pub fn start(&mut self, cmd: &mut Command, ready: impl Fn(u32) -> bool) -> bool {
        match self.launch(cmd, ready) {
            Started::Ready => true,
            Started::AddressInUse => false,
            Started::Exited { status, .. } => {
                panic!("{} exited with {status} before it was ready:\n{}", self.what, self.log_tail())
            }
        }
    }

    /// [`Daemon::start`] for callers that expect an early exit may be right (a process told to
    /// abort at a failpoint): says how the start ended instead of panicking.
    pub fn launch(&mut self, cmd: &mut Command, ready: impl Fn(u32) -> bool) -> Started {
        assert!(self.child.is_none(), "{} runs already", self.what);
        let before = read_text(&self.log).len();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        if !cmd.get_envs().any(|(name, _)| name == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + READY_LIMIT;
        while !ready(pid) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                let log = read_text(&self.log);
                let log = log.get(before..).unwrap_or(&log).to_owned();
                if log.contains("Address already in use") || log.contains("address in use") {
                    return Started::AddressInUse;
                }
                return Started::Exited { status, log };
            }
            assert!(Instant::now() < deadline, "{} not ready after {READY_LIMIT:?}:\n{}", self.what, self.log_tail());
            std::thread::sleep(Duration::from_millis(10));
        }
        Started::Ready
    }

    /// Whether the process still runs (one that ended is reaped and forgotten).
    pub fn is_running(&mut self) -> bool {
        if self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_some()) {
            self.child = None;
        }
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap_or_else(|| panic!("{} does not run", self.what)).id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, ...) to the process, by its PID.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL (no clean stop), and the process reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; the process must exit with status 0 (within 20 s, a bound on the wait).
    pub fn stop(&mut self) {
        self.stop_within(STOP_LIMIT);
    }

    /// SIGTERM; the process must exit with status 0 within `limit` (SIGKILL after that).
    pub fn stop_within(&mut self, limit: Duration) {
        if self.child.is_none() {
            return;
        }
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{} exited with {status} after SIGTERM:\n{}", self.what, self.log_tail());
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop within {limit:?} of SIGTERM:\n{}", self.what, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `limit` for the process to end by itself (a failpoint); false if it still
    /// runs.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn log_text(&self) -> String {
        read_text(&self.log)
    }

    fn log_tail(&self) -> String {
        tail(&self.log_text(), 60)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.kill();
            eprintln!("--- {} log (tail) ---\n{}", self.what, self.log_tail());
            return;
        }
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Storage nodes.

/// A `fabriq-target` with file pools and its node API on loopback.
pub struct Node {
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
    /// The NVMe/TCP listener.
    pub nvme: SocketAddr,
    /// The node API.
    pub api: SocketAddr,
    /// The node API's token (the daemon writes it at its first start).
    pub token: String,
    bin: PathBuf,
    config: PathBuf,
    agent: ureq::Agent,
}

impl Node {
    /// The binary `bin` with one sparse file pool per name in `pools`, each of `pool_mib` MiB;
    /// `api_extra` goes into `[api]`. A start that loses its ports to another test is tried
    /// again with new ones.
    pub fn start(bin: impl Into<PathBuf>, pools: &[&str], pool_mib: u64, api_extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut node = Node {
            daemon: Daemon::new("fabriq-target", dir.path().join("target.log")),
            config: dir.path().join("target.toml"),
            dir,
            nvme: ([127, 0, 0, 1], 0).into(),
            api: ([127, 0, 0, 1], 0).into(),
            token: String::new(),
            bin: bin.into(),
            agent: agent(),
        };
        let data = node.dir.path().join("data");
        for _ in 0..20 {
            node.nvme.set_port(free_port());
            node.api.set_port(free_port());
            let mut config = format!(
                "[target]\ndata_dir = \"{data}\"\nbuffer_pool_bytes = \"8MiB\"\n\n\
                 [api]\naddress = \"{api}\"\n{api_extra}\n\n\
                 [[listener]]\ntransport = \"tcp\"\naddress = \"{nvme}\"\n",
                data = data.display(),
                api = node.api,
                nvme = node.nvme,
            );
            for pool in pools {
                config.push_str(&format!(
                    "\n[[pool]]\nname = \"{pool}\"\npath = \"{data}/{pool}.img\"\nsize = \"{pool_mib}MiB\"\n",
                    data = data.display()
                ));
            }
            std::fs::write(&node.config, config).unwrap();
            if node.try_spawn() {
                return node;
            }
        }
        panic!("fabriq-target found no free ports in 20 tries");
    }

    /// Starts the daemon and waits until both its listeners accept; false if an address was
    /// taken.
    fn try_spawn(&mut self) -> bool {
        let (api, nvme) = (self.api, self.nvme);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config").arg(&self.config);
        if !self.daemon.start(&mut cmd, |pid| listens(pid, api) && listens(pid, nvme)) {
            return false;
        }
        self.token = std::fs::read_to_string(self.data("api-token")).unwrap().trim().to_owned();
        true
    }

    /// A start on the same configuration and data: it must succeed at once, right after a
    /// SIGKILL too (the daemon itself waits for the addresses its killed predecessor's
    /// io_uring still holds for a moment after the process is reaped,
    /// `Target::add_listener_at_start`).
    pub fn start_again(&mut self) {
        assert!(self.try_spawn(), "fabriq-target could not bind its addresses again:\n{}", self.log_text());
    }

    /// SIGTERM, a clean exit, and a new start on the same data.
    pub fn restart(&mut self) {
        self.daemon.stop();
        self.start_again();
    }

    /// SIGTERM, a clean exit, `between` (with the daemon down), and a new start.
    pub fn restart_with(&mut self, between: impl FnOnce()) {
        self.daemon.stop();
        between();
        self.start_again();
    }

    /// SIGKILL at once (no clean stop), then a new start on the same data.
    pub fn kill_and_restart(&mut self) {
        self.daemon.kill();
        self.start_again();
    }

    /// SIGKILL: the node is down until [`Node::start_again`].
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the daemon.
    pub fn signal(&self, signal: &str) {
        self.daemon.signal(signal);
    }

    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }

    /// A file of the daemon's data directory.
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join("data").join(name)
    }

    /// The node API's base URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The URL of `path` on the node API.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Any request: `auth` is the whole Authorization header, `body` (content type, text).
    /// Panics, with the daemon's log, if the node does not answer.
    pub fn raw(&self, method: &str, path: &str, auth: Option<&str>, body: Option<(&str, String)>) -> (u16, Value) {
        exchange(&self.agent, method, &self.url(path), auth, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", tail(&self.log_text(), 60)))
    }

    /// A request with the node's token and a JSON `body`: (status, JSON body or Null).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        self.raw(method, path, Some(&auth), body.map(|b| ("application/json", b.to_string())))
    }

    /// Like [`Node::call`], but a failed exchange (the daemon died) is an `Err`, not a panic.
    pub fn try_call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), ureq::Error> {
        json_exchange(&self.agent, method, &self.url(path), Some(&self.token), body)
    }

    /// The answer must have `status`; returns its body.
    pub fn expect(&self, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        expect_status(self.call(method, path, body), || format!("{method} {path} {body:?}"), status)
    }

    /// The answer must be the error `status` with `code` and a message; returns its body.
    pub fn expect_error(&self, method: &str, path: &str, body: Option<&Value>, status: u16, code: &str) -> Value {
        expect_error_code(self.call(method, path, body), || format!("{method} {path} {body:?}"), status, code)
    }

    /// Every volume on the node.
    pub fn volumes(&self) -> Vec<Value> {
        self.expect("GET", "/v1/volumes", None, 200).as_array().unwrap().clone()
    }

    pub fn volume_named(&self, name: &str) -> Option<Value> {
        self.volumes().into_iter().find(|v| v["name"] == name)
    }

    /// The body that registers this node with a provisioner as `name`.
    pub fn registration(&self, name: &str, labels: Value) -> Value {
        json!({ "name": name, "url": self.base_url(), "token": self.token, "labels": labels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_never_given_twice() {
        // Far more than the kernel needs to hand some port out again once it is released.
        let ports: Vec<u16> = (0..2000).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        // Each is free: it can be bound.
        TcpListener::bind(("127.0.0.1", *ports.last().unwrap())).unwrap();
    }

    #[test]
    fn listens_tells_whose_listener_a_port_is() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(listens(std::process::id(), addr));
        // Accepting, but not in that process (PID 1 is not this test).
        assert!(!listens(1, addr));
        drop(listener);
        assert!(!listens(std::process::id(), addr));
    }
}
