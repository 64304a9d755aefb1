//! Shared by the provisioner's integration tests: real processes on loopback.
//!
//! - storage nodes: `fabriq_testkit::Node`, a `fabriq-target` with a file pool and its node
//!   API (the binary is built on first use, beside this crate's binaries, unless
//!   `FABRIQ_TARGET_BIN` names one);
//! - [`Provisioner`]: `fabriq-provisioner` with a known admin and read token, redb or etcd,
//!   a fast reconciler; killed (SIGKILL) or stopped (SIGTERM) and started again on the same
//!   data;
//! - [`Etcd`]: Debian's `etcd` on free loopback ports in a temporary directory;
//! - the HTTP client of `fabriq_testkit`, which answers (status, JSON).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fabriq_testkit::{Daemon, Started, agent, expect_error_code, expect_status, listens, read_text, tail};
pub use fabriq_testkit::{Node, free_port, json_exchange};
use serde_json::{Value, json};

pub const MIB: u64 = 1 << 20;
pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const READER: &str = "read-token-0123456789abcdef";
pub const HOST1: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2a64-4c1d-9e3f-7d2a1b6c4e90";
pub const HOST2: &str = "nqn.2014-08.org.nvmexpress:uuid:22222222-2a64-4c1d-9e3f-7d2a1b6c4e90";

pub fn fabriqctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fabriqctl")
}

/// A storage node with pool `p1` of `pool_mib` MiB (55 MiB usable of 64), and `p2` of the
/// same size when `two_pools`.
pub fn start_node(pool_mib: u64, two_pools: bool) -> Node {
    let pools: &[&str] = if two_pools { &["p1", "p2"] } else { &["p1"] };
    Node::start(fabriq_testkit::target_bin(), pools, pool_mib, "")
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
    daemon: Daemon,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    config: PathBuf,
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
            daemon: Daemon::new("fabriq-provisioner", dir.path().join("provisioner.log")),
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
        // Its address may still be held for a moment after a SIGKILL.
        for _ in 0..100 {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_fabriq-provisioner"));
            cmd.arg("--config").arg(&self.config);
            match &self.options.failpoint {
                Some(fp) => cmd.env("FABRIQ_PROVISIONER_FAILPOINT", fp),
                None => cmd.env_remove("FABRIQ_PROVISIONER_FAILPOINT"),
            };
            let addr = self.addr;
            match self.daemon.launch(&mut cmd, |pid| listens(pid, addr)) {
                Started::Ready => {
                    self.options.failpoint = None;
                    return;
                }
                // An armed failpoint may abort the process while it starts (finishing what a
                // kill left): that is the crash the caller asked for, and it finds the
                // provisioner down, as after any other crash.
                Started::Exited { log, .. }
                    if self.options.failpoint.is_some() && log.contains("failpoint reached") =>
                {
                    self.options.failpoint = None;
                    return;
                }
                Started::Exited { status, log } => {
                    panic!("fabriq-provisioner exited with {status} before it was ready:\n{log}")
                }
                Started::AddressInUse => {}
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("fabriq-provisioner could not bind its address again:\n{}", self.log_text());
    }

    /// Arms a failpoint for the next start.
    pub fn arm(&mut self, failpoint: &str) {
        self.options.failpoint = Some(failpoint.to_owned());
    }

    /// SIGKILL: the provisioner is down until [`Provisioner::start_again`].
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to this provisioner's process, by its PID.
    pub fn signal(&self, signal: &str) {
        self.daemon.signal(signal);
    }

    /// Waits for the process to end by itself (a failpoint); false if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        self.daemon.wait_exit(limit)
    }

    /// Whether the process still runs (one that ended is reaped and forgotten).
    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    pub fn start_again(&mut self) {
        assert!(!self.daemon.is_running());
        self.spawn();
    }

    /// SIGTERM; the exit status must be success.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }

    /// A call with `token`; `None` when the exchange failed.
    pub fn try_call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        json_exchange(&self.agent, method, &format!("{}{path}", self.url()), token, body).ok()
    }

    /// A call with the admin token; panics if the provisioner does not answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.try_call_as(Some(ADMIN), method, path, body)
            .unwrap_or_else(|| panic!("the provisioner did not answer {method} {path}\n{}", tail(&self.log_text(), 30)))
    }

    pub fn expect(&self, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        expect_status(self.call(method, path, body), || format!("{method} {path} {body:?}"), status)
    }

    pub fn expect_error(&self, method: &str, path: &str, body: Option<&Value>, status: u16, code: &str) -> Value {
        expect_error_code(self.call(method, path, body), || format!("{method} {path} {body:?}"), status, code)
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
            if let Ok((200, _)) =
                json_exchange(&agent, "POST", &format!("{url}/v3/kv/range"), None, Some(&json!({"key": "eA=="})))
            {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("etcd exited with {status}:\n{}", read_text(&dir.path().join("etcd.log")));
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
