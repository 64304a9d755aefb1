//! `fabriqctl` against a provisioner served over HTTPS (rustls, the test certificates in
//! `tests/fixtures/`) and a real storage node: every command, tables for people and `--json`
//! for scripts, exit status 0 / 1 (refused or unreachable, with the API's message) / 2 (usage),
//! tokens from a file or the command line, the CA given with `--ca-file`.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

struct Ctl {
    url: String,
    tokens: String,
}

impl Ctl {
    fn run_with(&self, extra: &[&str], args: &[&str]) -> Output {
        Command::new(fabriqctl_bin())
            .args(["--url", &self.url, "--ca-file", &fixture("ca.pem")])
            .args(extra)
            .args(args)
            .env_remove("FABRIQ_TOKEN")
            .env("FABRIQ_TOKEN_FILE", &self.tokens)
            .output()
            .unwrap()
    }

    /// Must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_with(&[], args);
        assert!(out.status.success(), "fabriqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run_with(&["--json"], args);
        assert!(out.status.success(), "fabriqctl --json {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Must fail with `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run_with(&[], args);
        assert_eq!(out.status.code(), Some(code), "fabriqctl {args:?}: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }
}

#[test]
fn fabriqctl_over_https_drives_nodes_and_volumes() {
    let node = start_node(64, false);
    let tls = format!("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"", fixture("server.pem"), fixture("server.key"));
    let p = Provisioner::start(Options { extra_api: tls, ..Options::default() });
    assert!(p.url().starts_with("https://"));
    let ctl = Ctl { url: p.url(), tokens: p.dir.path().join("tokens").display().to_string() };

    let status = ctl.ok(&["status"]);
    assert!(status.contains("store    redb") && status.contains("role     leader"), "{status}");
    let node_token = node.dir.path().join("data/api-token").display().to_string();
    let node_url = node.base_url();
    ctl.ok(&["node", "register", "n1", "--node-url", &node_url, "--node-token-file", &node_token, "--label", "zone=a"]);
    let list = ctl.ok(&["node", "list"]);
    assert!(list.lines().next().unwrap().starts_with("NAME"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("n1") && l.contains("healthy")), "{list}");
    ctl.ok(&["node", "label", "n1", "rack=r1", "zone-"]);
    assert_eq!(ctl.json(&["node", "get", "n1"])["labels"], serde_json::json!({"rack": "r1"}));

    ctl.ok(&["volume", "create", "v1", "--size", "4MiB", "--label", "app=db", "--topology", "rack=r1"]);
    let v = ctl.json(&["volume", "get", "v1"]);
    assert_eq!((v["state"].as_str(), v["size_bytes"].as_u64()), (Some("ready"), Some(4 * MIB)), "{v}");
    // The same create again is fine; a different one is refused with the API's words.
    ctl.ok(&["volume", "create", "v1", "--size", "4MiB", "--label", "app=db", "--topology", "rack=r1"]);
    let err = ctl.fails(&["volume", "create", "v1", "--size", "5MiB"], 1);
    assert!(err.contains("409 volume_conflict"), "{err}");
    let published = ctl.ok(&["volume", "publish", "v1", HOST1]);
    let nqn = v["nqn"].as_str().unwrap();
    assert!(
        published.contains(&format!("nvme connect -t tcp -a 127.0.0.1 -s {} -n {nqn}", node.nvme.port())),
        "{published}"
    );
    assert_eq!(ctl.ok(&["volume", "hosts", "v1"]).trim(), HOST1);
    let table = ctl.ok(&["volume", "list", "--label", "app=db"]);
    assert!(table.lines().any(|l| l.starts_with("v1") && l.contains("ready") && l.contains("n1")), "{table}");
    assert_eq!(ctl.json(&["volume", "list", "--state", "degraded"]), serde_json::json!([]));
    ctl.ok(&["volume", "grow", "v1", "--size", "8MiB"]);
    assert_eq!(ctl.json(&["volume", "get", "v1"])["capacity_bytes"], 8 * MIB);
    let cap = ctl.ok(&["capacity"]);
    assert!(cap.contains("nodes 1 (1 reachable)") && cap.contains("rack=r1"), "{cap}");

    // Refusals: published volumes need --force; a node with volumes cannot go.
    let err = ctl.fails(&["volume", "delete", "v1"], 1);
    assert!(err.contains("volume_published"), "{err}");
    let err = ctl.fails(&["node", "remove", "n1"], 1);
    assert!(err.contains("node_has_volumes"), "{err}");
    ctl.ok(&["volume", "unpublish", "v1", HOST1]);
    ctl.ok(&["volume", "delete", "v1"]);
    ctl.ok(&["volume", "delete", "v1"]);
    ctl.ok(&["node", "drain", "n1"]);
    ctl.ok(&["node", "remove", "n1"]);

    // A read token may look, not change.
    let out = ctl.run_with(&["--token", READER], &["volume", "create", "v2", "--size", "1MiB"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403 forbidden"));
    let out = ctl.run_with(&["--token", READER], &["volume", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ctl.run_with(&["--token", "not-a-token-of-this-one"], &["volume", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("401 unauthorized"));

    // Usage errors exit 2; an unknown CA or plain HTTP to the HTTPS port, 1.
    let err = ctl.fails(&["volume", "create", "v3", "--size", "1G"], 2);
    assert!(err.contains("size"), "{err}");
    let err = ctl.fails(&["node", "register", "n2", "--node-url", &node_url], 2);
    assert!(err.contains("--node-token"), "{err}");
    let out = Command::new(fabriqctl_bin()).args(["--url", &p.url(), "--token", ADMIN, "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the system's roots do not trust the test CA");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the provisioner"));
    let plain = p.url().replace("https://", "http://");
    let out = Command::new(fabriqctl_bin()).args(["--url", &plain, "--token", ADMIN, "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}
