//! A storage node for the node API tests: a real `fabriq-target` with a file pool and the REST
//! API on loopback, its data directory kept across restarts (SIGTERM or SIGKILL), and a small
//! blocking HTTP client (ureq) that returns every answer as (status, JSON).

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::free_port;

pub struct Node {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// The NVMe/TCP listener.
    pub nvme: SocketAddr,
    /// The node API.
    pub api: SocketAddr,
    pub token: String,
    config: PathBuf,
    log: PathBuf,
    agent: ureq::Agent,
    starts: u32,
}

impl Node {
    /// A node with pool `p1`: a sparse file of `pool_mib` MiB; `api_extra` goes into `[api]`.
    pub fn start(pool_mib: u64, api_extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (nvme, api) = (free_port(), free_port());
        let data = dir.path().join("data");
        let config = format!(
            "[target]\ndata_dir = \"{data}\"\nbuffer_pool_bytes = \"8MiB\"\n\n\
             [api]\naddress = \"127.0.0.1:{api}\"\n{api_extra}\n\n\
             [[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{nvme}\"\n\n\
             [[pool]]\nname = \"p1\"\npath = \"{data}/p1.img\"\nsize = \"{pool_mib}MiB\"\n",
            data = data.display(),
        );
        let path = dir.path().join("target.toml");
        std::fs::write(&path, config).unwrap();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut node = Node {
            child: None,
            log: dir.path().join("target.log"),
            dir,
            nvme: ([127, 0, 0, 1], nvme).into(),
            api: ([127, 0, 0, 1], api).into(),
            token: String::new(),
            config: path,
            agent,
            starts: 0,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        // One start must do, right after a SIGKILL too: the daemon itself waits for the
        // addresses its killed predecessor's io_uring still holds for a moment after the
        // process is reaped (`Target::add_listener_at_start`).
        assert!(self.try_spawn(), "fabriq-target could not bind its addresses again:\n{}", self.log_text());
    }

    /// Starts the daemon and waits until it listens; false if its addresses are still taken.
    fn try_spawn(&mut self) -> bool {
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fabriq-target"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.api).is_err() || TcpStream::connect(self.nvme).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                let log = self.log_text();
                let last_start = log.rsplit("fabriq-target exited").next().unwrap_or(&log);
                if last_start.lines().last().is_some_and(|l| l.contains("Address already in use")) {
                    return false;
                }
                panic!("fabriq-target exited with {status} before listening:\n{log}");
            }
            assert!(Instant::now() < deadline, "fabriq-target not listening after 20 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
        self.token = std::fs::read_to_string(self.dir.path().join("data/api-token")).unwrap().trim().to_owned();
        true
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s)).ok();
        s
    }

    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join("data").join(name)
    }

    /// SIGTERM, a clean exit, and a new start on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGTERM, a clean exit, `between` (with the daemon down), and a new start.
    #[allow(dead_code)]
    pub fn restart_with(&mut self, between: impl FnOnce()) {
        self.stop();
        between();
        self.spawn();
    }

    /// SIGKILL at once (no clean stop), then a new start on the same data.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: kill with a valid signal on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "fabriq-target exited with {status}:\n{}", self.log_text());
                return;
            }
            assert!(Instant::now() < deadline, "fabriq-target did not stop:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// A request with the node's token; `body` is sent as JSON. Returns (status, JSON body or
    /// Null, x-request-id).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        self.raw(method, path, Some(&auth), body.map(|b| ("application/json", b.to_string())))
    }

    /// Any request: `auth` is the whole Authorization header, `body` (content type, text).
    pub fn raw(&self, method: &str, path: &str, auth: Option<&str>, body: Option<(&str, String)>) -> (u16, Value) {
        let url = self.url(path);
        let response = match method {
            "GET" | "DELETE" => {
                let mut req = if method == "GET" { self.agent.get(&url) } else { self.agent.delete(&url) };
                if let Some(auth) = auth {
                    req = req.header("Authorization", auth);
                }
                req.call()
            }
            _ => {
                let mut req = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
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
        };
        let response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_text()));
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap();
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    /// Like [`Node::call`], but a failed exchange (the daemon died) is an `Err`, not a panic.
    pub fn try_call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), ureq::Error> {
        let url = self.url(path);
        let auth = format!("Bearer {}", self.token);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => self.agent.post(&url).header("Authorization", &auth).send_json(b),
            ("PATCH", Some(b)) => self.agent.patch(&url).header("Authorization", &auth).send_json(b),
            other => panic!("{other:?}"),
        }?;
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// The answer must have `status`; returns its body.
    pub fn expect(&self, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        let (got, value) = self.call(method, path, body);
        assert_eq!(got, status, "{method} {path} {body:?}: {value}");
        value
    }

    /// The answer must be the error `status` with `code`.
    pub fn expect_error(&self, method: &str, path: &str, body: Option<&Value>, status: u16, code: &str) {
        let (got, value) = self.call(method, path, body);
        assert_eq!((got, value["code"].as_str()), (status, Some(code)), "{method} {path} {body:?}: {value}");
        assert!(value["message"].as_str().is_some_and(|m| !m.is_empty()), "{value}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.kill();
            eprintln!("--- fabriq-target log ---\n{}", self.log_text());
            return;
        }
        self.stop();
    }
}
