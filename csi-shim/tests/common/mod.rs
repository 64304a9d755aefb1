//! Real processes on loopback for the driver's tests: storage nodes (`fabriq_testkit::Node`,
//! `fabriq-target` with a file pool and its node API), `fabriq-provisioner` (redb, one admin
//! token) and the `fabriq-csi` binary serving on a Unix socket in a temporary directory,
//! reached by a real tonic client. The other crates' binaries are built once by cargo unless
//! `FABRIQ_TARGET_BIN` / `FABRIQ_PROVISIONER_BIN` name them. Every process is stopped by its
//! own PID when its handle is dropped (`fabriq_testkit::Daemon`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use fabriq_testkit::{Daemon, json_exchange, listens, workspace_bin};
pub use fabriq_testkit::{Node, free_port};
use serde_json::Value;

pub const MIB: u64 = 1 << 20;
pub const TOKEN: &str = "csi-test-admin-token-0123456789";
pub const HOST1: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001";
pub const HOST2: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000002";

/// A storage node: fabriq-target with one file pool `p1` and its node API.
pub fn start_node(pool_mib: u64) -> Node {
    Node::start(fabriq_testkit::target_bin(), &["p1"], pool_mib, "")
}

/// fabriq-provisioner on redb with the admin token [`TOKEN`].
pub struct Provisioner {
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    agent: ureq::Agent,
}

impl Provisioner {
    pub fn start() -> Provisioner {
        let bin = workspace_bin("fabriq-provisioner", "fabriq-provisioner", "FABRIQ_PROVISIONER_BIN");
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("admin {TOKEN}\n")).unwrap();
        let agent = fabriq_testkit::agent();
        let mut daemon = Daemon::new("fabriq-provisioner", dir.path().join("provisioner.log"));
        for _ in 0..20 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let config = format!(
                "[provisioner]\ndata_dir = \"{}\"\nreconcile_interval_ms = 500\n\n[api]\naddress = \"{addr}\"\ntokens_file = \"{}\"\n",
                dir.path().join("data").display(),
                tokens.display()
            );
            let path = dir.path().join("provisioner.toml");
            std::fs::write(&path, config).unwrap();
            if daemon.start(Command::new(&bin).arg("--config").arg(&path), |pid| listens(pid, addr)) {
                return Provisioner { daemon, dir, addr, agent };
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
        json_exchange(&self.agent, method, &url, Some(TOKEN), body.as_ref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn register(&self, name: &str, node: &Node, labels: Value) {
        let (status, v) = self.call("POST", "/v1/nodes", Some(node.registration(name, labels)));
        assert!(status == 200 || status == 201, "registering {name}: {status} {v}");
    }
}

/// The `fabriq-csi` binary serving on a Unix socket.
pub struct Driver {
    pub daemon: Daemon,
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
        let mut daemon = Daemon::new("fabriq-csi", dir.path().join("csi.log"));
        assert!(daemon.start(&mut cmd, |_| socket.exists()), "fabriq-csi found its socket's path taken");
        Driver { daemon, dir, socket }
    }
}
