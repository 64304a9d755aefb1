//! Shared by the provisioner's integration tests: real processes on loopback.
//!
//! - [`Node`]: a `fabriq-target` with a file pool and its node API (the binary is built on
//!   first use, beside this crate's binaries, unless `FABRIQ_TARGET_BIN` names one);
//! - [`Provisioner`]: `fabriq-provisioner` with a known admin and read token, redb or etcd,
//!   a fast reconciler; killed (SIGKILL) or stopped (SIGTERM) and started again on the same
//!   data;
//! - [`Etcd`]: Debian's `etcd` on free loopback ports in a temporary directory;
//! - a small blocking HTTP client (ureq) that answers (status, JSON).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const MIB: u64 = 1 << 20;
pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const READER: &str = "read-token-0123456789abcdef";
pub const HOST1: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2a64-4c1d-9e3f-7d2a1b6c4e90";
pub const HOST2: &str = "nqn.2014-08.org.nvmexpress:uuid:22222222-2a64-4c1d-9e3f-7d2a1b6c4e90";

/// A port nobody listens on right now (the kernel's choice, released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// This crate's binaries' directory (`build/debug`).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_fabriq-provisioner")).parent().unwrap().to_owned()
}

pub fn fabriqctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fabriqctl")
}

/// The fabriq-target binary: `FABRIQ_TARGET_BIN`, or built once beside this crate's binaries.
pub fn target_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("FABRIQ_TARGET_BIN") {
            return PathBuf::from(path);
        }
        let dir = bin_dir();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo")));
        cmd.args(["build", "--quiet", "-p", "fabriq-target", "--bin", "fabriq-target"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "cargo build -p fabriq-target failed");
        let bin = dir.join("fabriq-target");
        assert!(bin.exists(), "{} is missing after the build", bin.display());
        bin
    })
    .clone()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// One HTTP exchange: (status, JSON body or Null). `None` when the exchange failed (the
/// server died).
pub fn http(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match method {
        "GET" | "DELETE" => {
            let mut req = if method == "GET" { agent.get(url) } else { agent.delete(url) };
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
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
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            match body {
                Some(b) => req.send_json(b),
                None => req.send_empty(),
            }
        }
    };
    let response = response.ok()?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().ok()?;
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Some((status, value))
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str, log: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            let text = read(log);
            if text.contains("Address already in use") {
                return false;
            }
            panic!("{what} exited with {status} before listening:\n{text}");
        }
        assert!(Instant::now() < deadline, "{what} not listening after 30 s:\n{}", read(log));
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s)).ok();
    s
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
}

// ---------------------------------------------------------------------------------------------
// Storage nodes.

/// A fabriq-target with pool `p1` (and `p2` when asked) and its node API.
pub struct Node {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub nvme: SocketAddr,
    pub api: SocketAddr,
    pub token: String,
    config: PathBuf,
    log: PathBuf,
    agent: ureq::Agent,
}

impl Node {
    /// A node with pool `p1` of `pool_mib` MiB (55 MiB usable of 64), and `p2` of the same
    /// size when `two_pools`.
    pub fn start(pool_mib: u64, two_pools: bool) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (nvme, api) = (free_port(), free_port());
        let data = dir.path().join("data");
        let mut config = format!(
            "[target]\ndata_dir = \"{data}\"\nbuffer_pool_bytes = \"4MiB\"\n\n\
             [api]\naddress = \"127.0.0.1:{api}\"\n\n\
             [[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{nvme}\"\n\n\
             [[pool]]\nname = \"p1\"\npath = \"{data}/p1.img\"\nsize = \"{pool_mib}MiB\"\n",
            data = data.display(),
        );
        if two_pools {
            config.push_str(&format!(
                "\n[[pool]]\nname = \"p2\"\npath = \"{data}/p2.img\"\nsize = \"{pool_mib}MiB\"\n",
                data = data.display()
            ));
        }
        let path = dir.path().join("target.toml");
        std::fs::write(&path, config).unwrap();
        let mut node = Node {
            child: None,
            log: dir.path().join("target.log"),
            dir,
            nvme: ([127, 0, 0, 1], nvme).into(),
            api: ([127, 0, 0, 1], api).into(),
            token: String::new(),
            config: path,
            agent: agent(),
        };
        node.spawn();
        node
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    fn spawn(&mut self) {
        // After a SIGKILL the kernel releases the old process's sockets a little after it is reaped.
        for _ in 0..100 {
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
            let mut child = Command::new(target_bin())
                .arg("--config")
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let api_up = wait_listening(self.api, &mut child, "fabriq-target", &self.log);
            if api_up && wait_listening(self.nvme, &mut child, "fabriq-target", &self.log) {
                self.child = Some(child);
                self.token = std::fs::read_to_string(self.dir.path().join("data/api-token")).unwrap().trim().to_owned();
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("fabriq-target could not bind its addresses again:\n{}", read(&self.log));
    }

    /// SIGKILL: the node is down until [`Node::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to this node's process, by its PID.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the node runs");
        let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} {}", child.id());
    }

    /// A call to the node API with its token; panics if the node does not answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        http(&self.agent, method, &format!("{}{path}", self.url()), Some(&self.token), body)
            .unwrap_or_else(|| panic!("node {} did not answer {method} {path}", self.api))
    }

    pub fn volumes(&self) -> Vec<Value> {
        let (status, v) = self.call("GET", "/v1/volumes", None);
        assert_eq!(status, 200, "{v}");
        v.as_array().unwrap().clone()
    }

    pub fn volume_named(&self, name: &str) -> Option<Value> {
        self.volumes().into_iter().find(|v| v["name"] == name)
    }

    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    /// The body to register this node.
    pub fn registration(&self, name: &str, labels: Value) -> Value {
        json!({ "name": name, "url": self.url(), "token": self.token, "labels": labels })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- fabriq-target {} log (tail) ---\n{}", self.api, tail(&read(&self.log), 40));
        }
        if let Some(child) = self.child.take() {
            sigterm(&child);
            let mut child = child;
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
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The provisioner.

/// How to start a provisioner.
#[derive(Clone)]
pub struct Options {
    /// etcd client URL; `None`: redb in the data directory.
    pub etcd: Option<String>,
    pub lease_ttl_s: u64,
    pub reconcile_ms: u64,
    pub extra_api: String,
    /// `FABRIQ_PROVISIONER_FAILPOINT` for the next start.
    pub failpoint: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { etcd: None, lease_ttl_s: 2, reconcile_ms: 200, extra_api: String::new(), failpoint: None }
    }
}

pub struct Provisioner {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    pub agent: ureq::Agent,
    pub options: Options,
    scheme: &'static str,
}

impl Provisioner {
    pub fn start(options: Options) -> Provisioner {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("admin {ADMIN}\nread {READER}\n")).unwrap();
        let store = match &options.etcd {
            Some(url) => format!(
                "[store]\nbackend = \"etcd\"\nendpoints = [\"{url}\"]\nprefix = \"/test/\"\nlease_ttl_s = {}\n",
                options.lease_ttl_s
            ),
            None => String::new(),
        };
        let config = format!(
            "[provisioner]\ndata_dir = \"{data}\"\nreconcile_interval_ms = {reconcile}\nnode_timeout_ms = 3000\n\n\
             [api]\naddress = \"{addr}\"\ntokens_file = \"{tokens}\"\n{extra}\n\n{store}",
            data = dir.path().join("data").display(),
            reconcile = options.reconcile_ms,
            tokens = tokens.display(),
            extra = options.extra_api,
        );
        let path = dir.path().join("provisioner.toml");
        std::fs::write(&path, config).unwrap();
        let scheme = if options.extra_api.contains("tls_cert_file") { "https" } else { "http" };
        let mut p = Provisioner {
            child: None,
            log: dir.path().join("provisioner.log"),
            dir,
            addr,
            config: path,
            agent: agent(),
            options,
            scheme,
        };
        p.spawn();
        p
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    fn spawn(&mut self) {
        for _ in 0..100 {
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_fabriq-provisioner"));
            cmd.arg("--config").arg(&self.config).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log);
            match &self.options.failpoint {
                Some(fp) => cmd.env("FABRIQ_PROVISIONER_FAILPOINT", fp),
                None => cmd.env_remove("FABRIQ_PROVISIONER_FAILPOINT"),
            };
            let mut child = cmd.spawn().unwrap();
            if wait_listening(self.addr, &mut child, "fabriq-provisioner", &self.log) {
                self.child = Some(child);
                self.options.failpoint = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("fabriq-provisioner could not bind its address again:\n{}", read(&self.log));
    }

    /// Arms a failpoint for the next start.
    pub fn arm(&mut self, failpoint: &str) {
        self.options.failpoint = Some(failpoint.to_owned());
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to this provisioner's process, by its PID.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the provisioner runs");
        let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} {}", child.id());
    }

    /// Waits for the process to end by itself (a failpoint); false if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let Some(child) = self.child.as_mut() else { return true };
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Whether the process still runs (one that ended is reaped and forgotten).
    pub fn is_running(&mut self) -> bool {
        if self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_some()) {
            self.child = None;
        }
        self.child.is_some()
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    /// SIGTERM; the exit status must be success.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        sigterm(&child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "fabriq-provisioner exited with {status}:\n{}", self.log_text());
                return;
            }
            assert!(Instant::now() < deadline, "fabriq-provisioner did not stop:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    /// A call with `token`; `None` when the exchange failed.
    pub fn try_call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        http(&self.agent, method, &format!("{}{path}", self.url()), token, body)
    }

    /// A call with the admin token; panics if the provisioner does not answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.try_call_as(Some(ADMIN), method, path, body)
            .unwrap_or_else(|| panic!("the provisioner did not answer {method} {path}\n{}", tail(&self.log_text(), 30)))
    }

    pub fn expect(&self, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        let (got, value) = self.call(method, path, body);
        assert_eq!(got, status, "{method} {path} {body:?}: {value}");
        value
    }

    pub fn expect_error(&self, method: &str, path: &str, body: Option<&Value>, status: u16, code: &str) -> Value {
        let (got, value) = self.call(method, path, body);
        assert_eq!((got, value["code"].as_str()), (status, Some(code)), "{method} {path} {body:?}: {value}");
        assert!(value["message"].as_str().is_some_and(|m| !m.is_empty()), "{value}");
        value
    }

    pub fn register(&self, name: &str, node: &Node, labels: Value) -> Value {
        self.expect("POST", "/v1/nodes", Some(&node.registration(name, labels)), 201)
    }

    pub fn create(&self, name: &str, size: u64, extra: Value) -> (u16, Value) {
        let mut body = json!({ "name": name, "size_bytes": size });
        body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        self.call("POST", "/v1/volumes", Some(&body))
    }

    /// Every volume (all pages).
    pub fn volumes(&self) -> Vec<Value> {
        let page = self.expect("GET", "/v1/volumes?limit=1000", None, 200);
        assert!(page["next_after"].is_null());
        page["volumes"].as_array().unwrap().clone()
    }

    /// Polls `check` (every 50 ms, up to `limit`) until it holds.
    pub fn eventually(&self, limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !check() {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}\n{}", tail(&self.log_text(), 40));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Provisioner {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- fabriq-provisioner {} log (tail) ---\n{}", self.addr, tail(&self.log_text(), 60));
            self.kill();
            return;
        }
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
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
}

// ---------------------------------------------------------------------------------------------
// The store and the nodes agree.

/// Waits until the records and the nodes agree (see the module documentation), and returns
/// the records by name. A provisioner that died meanwhile (a failpoint reached while it
/// finished what a crash left) is started again.
pub fn agreement(p: &mut Provisioner, nodes: &[(&str, &Node)]) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if !p.is_running() {
            p.start_again();
        }
        let why = match disagreement(p, nodes) {
            Ok(records) => return records,
            Err(why) => why,
        };
        assert!(Instant::now() < deadline, "the store and the nodes do not agree: {why}\n{}", p.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get(p: &Provisioner, path: &str) -> Result<Value, String> {
    match p.try_call_as(Some(ADMIN), "GET", path, None) {
        Some((200, v)) => Ok(v),
        other => Err(format!("GET {path}: {other:?}")),
    }
}

fn disagreement(p: &Provisioner, nodes: &[(&str, &Node)]) -> Result<BTreeMap<String, Value>, String> {
    let page = get(p, "/v1/volumes?limit=1000")?;
    assert!(page["next_after"].is_null());
    let records: BTreeMap<String, Value> = page["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v.clone()))
        .collect();
    let by_id: BTreeMap<&str, &Value> = records.values().map(|v| (v["id"].as_str().unwrap(), v)).collect();
    for v in records.values() {
        if v["state"] != "ready" {
            return Err(format!("volume {} is {}", v["name"], v["state"]));
        }
    }
    for (name, node) in nodes {
        let on_node = node.volumes();
        for nv in &on_node {
            let Some(id) = nv["name"].as_str().unwrap().strip_prefix("fabriq-") else { continue };
            let Some(v) = by_id.get(id) else { return Err(format!("node {name} holds {} with no record", nv["name"])) };
            if v["node"] != *name {
                return Err(format!("{} is on node {name}, its record says {}", nv["name"], v["node"]));
            }
            if nv["access"]["hosts"] != v["hosts"] || nv["access"]["allow_any_host"] != false {
                return Err(format!("{}: the node allows {}, the record {}", v["name"], nv["access"], v["hosts"]));
            }
            if nv["size_bytes"].as_u64() < v["size_bytes"].as_u64() || nv["nqn"] != v["nqn"] {
                return Err(format!("{}: the node has {nv}, the record {v}", v["name"]));
            }
        }
        for v in records.values().filter(|v| v["node"] == *name) {
            let wanted = format!("fabriq-{}", v["id"].as_str().unwrap());
            if !on_node.iter().any(|nv| nv["name"] == wanted.as_str()) {
                return Err(format!("the record of {} points at nothing on node {name}", v["name"]));
            }
        }
        let view = get(p, &format!("/v1/nodes/{name}"))?;
        if view["orphans"] != json!([]) {
            return Err(format!("node {name} reports orphans {}", view["orphans"]));
        }
    }
    Ok(records)
}

// ---------------------------------------------------------------------------------------------
// etcd.

/// Debian's etcd (package `etcd-server`) on loopback ports of its own, in a temporary directory.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub url: String,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let mut child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run etcd ({e}): install Debian's etcd-server (scripts/test does as root)")
            });
        let agent = agent();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) =
                http(&agent, "POST", &format!("{url}/v3/kv/range"), None, Some(&json!({"key": "eA=="})))
            {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("etcd exited with {status}:\n{}", read(&dir.path().join("etcd.log")));
            }
            assert!(Instant::now() < deadline, "etcd not serving after 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Etcd { child: Some(child), dir, url }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = &self.dir;
    }
}
