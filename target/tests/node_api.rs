//! The node REST API against a running daemon, with a real HTTP client: every endpoint and
//! every error status; then, through the NVMe/TCP host library, what the API promises hosts:
//! a volume is reachable by the hosts allowed on it and no other, a revoked host is
//! disconnected, growth is seen by connected hosts, and a restart brings the volume, its data
//! and its hosts back.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::node::{self, Node};
use fabriq_bench::host::{Connection, HostError, HostOptions};
use fabriq_target::nvme::Status;
use fabriq_target::nvme::features::{AsyncEvent, fid};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

fn create(node: &Node, name: &str, size: u64, extra: Value) -> Value {
    let mut body = json!({ "name": name, "size_bytes": size });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    node.expect("POST", "/v1/volumes", Some(&body), 201)
}

#[test]
fn authentication_health_docs_and_routes() {
    let node = node::start(64, "body_limit_bytes = \"4KiB\"");
    let (status, health) = node.raw("GET", "/v1/health", None, None);
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")), "{health}");
    for path in ["/v1/pools", "/v1/volumes", "/v1/listeners", "/metrics", "/v1/pools/p1"] {
        for auth in [None, Some("Bearer wrong-token-wrong-token"), Some("Basic Zm9vOmJhcg=="), Some("Bearer ")] {
            let (status, body) = node.raw("GET", path, auth, None);
            assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{path} {auth:?}: {body}");
        }
    }
    let (status, body) = node.raw("POST", "/v1/volumes", None, Some(("application/json", "{}".into())));
    assert_eq!(status, 401, "authentication comes before the body: {body}");
    // Request ids: echoed when sane, made up otherwise.
    let response = ureq::get(&node.url("/v1/health")).header("x-request-id", "abc-123").call().unwrap();
    assert_eq!(response.headers().get("x-request-id").unwrap(), "abc-123");
    let response = ureq::get(&node.url("/v1/health")).header("x-request-id", "no spaces!").call().unwrap();
    assert_eq!(response.headers().get("x-request-id").unwrap().len(), 32);
    // Documentation without a token; the document is the committed one.
    let (status, doc) = node.raw("GET", "/openapi.json", None, None);
    assert_eq!(status, 200);
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/target.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(doc, committed);
    let html = ureq::get(&node.url("/docs/")).call().unwrap().into_body().read_to_string().unwrap();
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");
    let js = ureq::get(&node.url("/docs/swagger-ui-bundle.js")).call().unwrap();
    assert_eq!(js.headers().get("content-type").unwrap(), "text/javascript");
    // Unknown routes and methods are JSON too.
    node.expect_error("GET", "/v1/nothing", None, 404, "no_route");
    node.expect_error("PUT", "/v1/pools", Some(&json!({})), 405, "method_not_allowed");
    // The body limit.
    let big = json!({ "name": "x".repeat(8192), "size_bytes": MIB });
    node.expect_error("POST", "/v1/volumes", Some(&big), 413, "body_too_large");
    let metrics = ureq::get(&node.url("/metrics"))
        .header("Authorization", &format!("Bearer {}", node.token))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(metrics.contains("fabriq_pool_capacity_bytes{pool=\"p1\"} 57671680"), "{metrics}");
}

#[test]
fn volumes_hosts_and_their_errors() {
    let node = node::start(64, "");
    let pool = node.expect("GET", "/v1/pools/p1", None, 200);
    assert_eq!((pool["capacity_bytes"].as_u64(), pool["free_bytes"].as_u64()), (Some(55 * MIB), Some(55 * MIB)));
    assert_eq!(node.expect("GET", "/v1/pools", None, 200).as_array().unwrap().len(), 1);
    node.expect_error("GET", "/v1/pools/none", None, 404, "pool_not_found");

    // Bad requests: not JSON, wrong fields, bad values. None leaves anything behind.
    let bad = |body: &str, code: &str| {
        let auth = format!("Bearer {}", node.token);
        let (status, value) = node.raw("POST", "/v1/volumes", Some(&auth), Some(("application/json", body.into())));
        assert_eq!((status, value["code"].as_str()), (400, Some(code)), "{body}: {value}");
    };
    bad("{\"name\": \"a\",", "bad_json");
    bad("[1, 2]", "invalid_body");
    bad("{\"name\": \"a\"}", "invalid_body");
    bad("{\"name\": \"a\", \"size_bytes\": -1}", "invalid_body");
    bad("{\"name\": \"a\", \"size_bytes\": 1, \"colour\": \"red\"}", "invalid_body");
    bad("{\"name\": \"a b\", \"size_bytes\": 1048576}", "invalid_argument");
    bad("{\"name\": \"a\", \"size_bytes\": 0}", "invalid_argument");
    bad("{\"name\": \"a\", \"size_bytes\": 1048576, \"block_size\": 1000}", "invalid_argument");
    bad("{\"name\": \"a\", \"size_bytes\": 18446744073709551615}", "invalid_argument");
    bad("{\"name\": \"a\", \"size_bytes\": 1048576, \"hosts\": [\"not-an-nqn\"]}", "invalid_host_nqn");
    let auth = format!("Bearer {}", node.token);
    let (status, value) = node.raw("POST", "/v1/volumes", Some(&auth), Some(("text/plain", "{}".into())));
    assert_eq!((status, value["code"].as_str()), (415, Some("unsupported_media_type")), "{value}");
    node.expect_error(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "a", "size_bytes": MIB, "pool": "none"})),
        404,
        "pool_not_found",
    );
    assert_eq!(node.expect("GET", "/v1/volumes", None, 200), json!([]));

    // Create, and create again (idempotent), or differently (conflict).
    let v = create(&node, "vol-a", 3 * MIB - 100, json!({"block_size": 512}));
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["size_bytes"], 3 * MIB, "rounded up to whole extents");
    assert_eq!((v["blocks"].as_u64(), v["state"].as_str()), (Some(3 * MIB / 512), Some("ready")));
    assert_eq!(v["nqn"], format!("nqn.2026-11.dev.fabriq:vol:{id}"));
    assert_eq!(
        v["connect"],
        json!({"transport": "tcp", "address": "127.0.0.1", "port": node.nvme.port(), "nqn": v["nqn"]})
    );
    assert_eq!((v["exported"].as_bool(), v["served"].as_bool()), (Some(false), Some(true)));
    let again = node.expect(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "vol-a", "size_bytes": 3 * MIB, "block_size": 512})),
        200,
    );
    assert_eq!(again["id"], id.as_str());
    node.expect_error(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "vol-a", "size_bytes": 4 * MIB, "block_size": 512})),
        409,
        "name_taken",
    );
    node.expect_error("POST", "/v1/volumes", Some(&json!({"name": "vol-a", "size_bytes": 3 * MIB})), 409, "name_taken");
    // A pool too full: 507, and nothing half made.
    node.expect_error("POST", "/v1/volumes", Some(&json!({"name": "huge", "size_bytes": 60 * MIB})), 507, "no_space");
    assert_eq!(node.expect("GET", "/v1/volumes", None, 200).as_array().unwrap().len(), 1);
    assert_eq!(node.expect("GET", "/v1/pools/p1", None, 200)["free_bytes"], 52 * MIB);

    // Get, grow, shrink.
    assert_eq!(node.expect("GET", &format!("/v1/volumes/{id}"), None, 200)["name"], "vol-a");
    node.expect_error("GET", "/v1/volumes/not-a-uuid", None, 400, "invalid_volume_id");
    node.expect_error("GET", "/v1/volumes/67e55044-10b1-426f-9247-bb680e5fe0c8", None, 404, "volume_not_found");
    let grown = node.expect("PATCH", &format!("/v1/volumes/{id}"), Some(&json!({"size_bytes": 5 * MIB})), 200);
    assert_eq!(grown["size_bytes"], 5 * MIB);
    node.expect_error("PATCH", &format!("/v1/volumes/{id}"), Some(&json!({"size_bytes": MIB})), 422, "shrink_refused");
    node.expect_error("PATCH", &format!("/v1/volumes/{id}"), Some(&json!({"size_bytes": 100 * MIB})), 507, "no_space");
    node.expect_error("PATCH", &format!("/v1/volumes/{id}"), Some(&json!({"size": 1})), 400, "invalid_body");
    assert_eq!(node.expect("GET", &format!("/v1/volumes/{id}"), None, 200)["size_bytes"], 5 * MIB);

    // Hosts.
    let host = "nqn.2014-08.org.nvmexpress:uuid:5b0c8f1e-2a64-4c1d-9e3f-7d2a1b6c4e90";
    let hosts_path = format!("/v1/volumes/{id}/hosts");
    assert_eq!(node.expect("GET", &hosts_path, None, 200), json!({"allow_any_host": false, "hosts": []}));
    assert_eq!(node.expect("PUT", &format!("{hosts_path}/{host}"), None, 201)["hosts"], json!([host]));
    assert_eq!(node.expect("PUT", &format!("{hosts_path}/{host}"), None, 200)["hosts"], json!([host]));
    node.expect_error("PUT", &format!("{hosts_path}/nqn.bad"), None, 400, "invalid_host_nqn");
    node.expect_error(
        "PUT",
        "/v1/volumes/67e55044-10b1-426f-9247-bb680e5fe0c8/hosts/nqn.2014-08.org.nvmexpress:x",
        None,
        404,
        "volume_not_found",
    );
    assert_eq!(node.expect("GET", &hosts_path, None, 200)["hosts"], json!([host]));
    assert_eq!(node.expect("GET", &format!("/v1/volumes/{id}"), None, 200)["exported"], true);

    // Delete: refused while exported, unless forced; then gone, its space back.
    node.expect_error("DELETE", &format!("/v1/volumes/{id}"), None, 409, "volume_exported");
    node.expect_error("DELETE", &format!("/v1/volumes/{id}?force=maybe"), None, 400, "invalid_query");
    node.expect("DELETE", &format!("{hosts_path}/{host}"), None, 204);
    node.expect("DELETE", &format!("{hosts_path}/{host}"), None, 204);
    node.expect("PATCH", &format!("/v1/volumes/{id}"), Some(&json!({"allow_any_host": true})), 200);
    node.expect_error("DELETE", &format!("/v1/volumes/{id}"), None, 409, "volume_exported");
    node.expect("DELETE", &format!("/v1/volumes/{id}?force=true"), None, 204);
    node.expect_error("GET", &format!("/v1/volumes/{id}"), None, 404, "volume_not_found");
    node.expect_error("DELETE", &format!("/v1/volumes/{id}"), None, 404, "volume_not_found");
    assert_eq!(node.expect("GET", "/v1/pools/p1", None, 200)["free_bytes"], 55 * MIB);
    let b = create(&node, "vol-b", MIB, json!({}));
    node.expect("DELETE", &format!("/v1/volumes/{}", b["id"].as_str().unwrap()), None, 204);
    let state: Value = serde_json::from_str(&std::fs::read_to_string(node.data("node-state.json")).unwrap()).unwrap();
    assert_eq!(state["volumes"], json!({}), "no entry left for deleted volumes");
}

#[test]
fn pools_and_listeners() {
    let node = node::start(64, "");
    // A new file pool, then the same again: conflicts.
    let p2 = node.data("p2.img");
    let added = node.expect("POST", "/v1/pools", Some(&json!({"name": "p2", "path": p2, "size_bytes": 32 * MIB})), 201);
    assert_eq!((added["capacity_bytes"].as_u64(), added["source"].as_str()), (Some(23 * MIB), Some("api")));
    node.expect_error(
        "POST",
        "/v1/pools",
        Some(&json!({"name": "p2", "path": node.data("p3.img"), "size_bytes": 32 * MIB})),
        409,
        "pool_exists",
    );
    node.expect_error("POST", "/v1/pools", Some(&json!({"name": "p3", "path": p2})), 409, "device_in_use");
    node.expect_error(
        "POST",
        "/v1/pools",
        Some(&json!({"name": "p3", "path": node.data("missing.img")})),
        422,
        "device_missing",
    );
    node.expect_error(
        "POST",
        "/v1/pools",
        Some(&json!({"name": "p3", "path": node.data("small.img"), "size_bytes": MIB})),
        400,
        "invalid_argument",
    );
    node.expect_error("POST", "/v1/pools", Some(&json!({"name": "p3", "path": node.dir.path()})), 422, "not_a_device");
    node.expect_error(
        "POST",
        "/v1/pools",
        Some(&json!({"name": "bad name", "path": node.data("x.img"), "size_bytes": 32 * MIB})),
        400,
        "invalid_argument",
    );
    // A file that holds an ext4 superblock is refused unless forced.
    let ext = node.data("ext.img");
    let f = std::fs::File::create(&ext).unwrap();
    f.set_len(32 * MIB).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0x53, 0xEF], 1024 + 0x38).unwrap();
    drop(f);
    node.expect_error("POST", "/v1/pools", Some(&json!({"name": "p3", "path": ext})), 409, "foreign_device");
    node.expect("POST", "/v1/pools", Some(&json!({"name": "p3", "path": ext, "force": true})), 201);
    // Volumes go to the emptiest pool unless named.
    let v = create(&node, "on-p2", MIB, json!({"pool": "p2"}));
    assert_eq!(v["pool"], "p2");
    assert_eq!(create(&node, "anywhere", MIB, json!({}))["pool"], "p1");

    // Listeners: the configured one cannot be removed through the API.
    let listeners = node.expect("GET", "/v1/listeners", None, 200);
    assert_eq!(listeners.as_array().unwrap().len(), 1, "{listeners}");
    assert_eq!((listeners[0]["port_id"].as_u64(), listeners[0]["source"].as_str()), (Some(1), Some("config")));
    node.expect_error("DELETE", "/v1/listeners/1", None, 409, "configured_listener");
    node.expect_error("DELETE", "/v1/listeners/77", None, 404, "listener_not_found");
    node.expect_error("DELETE", "/v1/listeners/x", None, 400, "invalid_path");
    node.expect_error(
        "POST",
        "/v1/listeners",
        Some(&json!({"transport": "ib", "address": "127.0.0.1:0"})),
        400,
        "invalid_listener",
    );
    // NVMe/RDMA: refused with a reason the operator can act on; without the feature, that the
    // binary lacks RDMA; with it, that loopback is no RDMA device's address. Nothing is kept.
    let (code, says) = if cfg!(feature = "rdma") {
        ("cannot_listen", "cannot listen")
    } else {
        ("transport_not_built", "without RDMA")
    };
    let (status, refused) =
        node.call("POST", "/v1/listeners", Some(&json!({"transport": "rdma", "address": "127.0.0.1:0"})));
    assert_eq!((status, refused["code"].as_str()), (422, Some(code)), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains(says), "{refused}");
    let state: Value = serde_json::from_str(&std::fs::read_to_string(node.data("node-state.json")).unwrap()).unwrap();
    assert!(state["listeners"].as_array().is_none_or(|l| l.is_empty()), "{state}");
    node.expect_error("POST", "/v1/listeners", Some(&json!({"address": "0.0.0.0:4430"})), 400, "invalid_listener");
    node.expect_error("POST", "/v1/listeners", Some(&json!({"address": "localhost:4430"})), 400, "invalid_body");
    node.expect_error("POST", "/v1/listeners", Some(&json!({"address": node.nvme})), 409, "listener_exists");
    node.expect_error("POST", "/v1/listeners", Some(&json!({"address": "192.0.2.1:4420"})), 422, "cannot_listen");
    // One more listener, on a port the kernel picks: hosts connect there, and volumes say so.
    let added = node.expect("POST", "/v1/listeners", Some(&json!({"address": "127.0.0.1:0"})), 201);
    let (port_id, address) = (added["port_id"].as_u64().unwrap(), added["address"].as_str().unwrap().to_owned());
    assert_eq!((port_id, added["source"].as_str()), (2, Some("api")), "{added}");
    let extra: std::net::SocketAddr = address.parse().unwrap();
    assert_ne!(extra.port(), 0);
    TcpStream::connect(extra).expect("the new listener accepts");
    let gone =
        node.expect("POST", "/v1/listeners", Some(&json!({"address": "127.0.0.1:0", "discovery_only": true})), 201);
    node.expect("DELETE", &format!("/v1/listeners/{}", gone["port_id"]), None, 204);

    // A restart opens the pools added through the API, with their volumes.
    let mut node = node;
    node.restart();
    let pools: Vec<String> = node
        .expect("GET", "/v1/pools", None, 200)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pools, ["p1", "p2", "p3"]);
    let listeners = node.expect("GET", "/v1/listeners", None, 200);
    let addresses: Vec<&str> = listeners.as_array().unwrap().iter().map(|l| l["address"].as_str().unwrap()).collect();
    assert_eq!(addresses, [node.nvme.to_string().as_str(), address.as_str()], "the API's listener is back, same port");
    let opts = HostOptions::default();
    let nqn = v["nqn"].as_str().unwrap();
    node.expect("PUT", &format!("/v1/volumes/{}/hosts/{}", v["id"].as_str().unwrap(), opts.hostnqn), None, 201);
    let mut admin = Connection::open(extra, &opts).unwrap();
    admin.connect_admin(nqn, 0, 31).expect("a host reaches the volume through the API's listener");
    assert_eq!(node.expect("GET", &format!("/v1/volumes/{}", v["id"].as_str().unwrap()), None, 200)["pool"], "p2");
}

/// Nothing a client sends brings the daemon down.
#[test]
fn garbage_requests_leave_the_daemon_serving() {
    let node = node::start(64, "");
    let auth = format!("Bearer {}", node.token);
    let paths = [
        "/v1/volumes/%00",
        "/v1/volumes/%ff%fe/hosts/%00",
        "/v1/volumes/00000000-0000-0000-0000-000000000000",
        "/v1/pools/..%2f..%2fetc",
        "/v1/listeners/99999999999",
        "/v1/volumes/67e55044-10b1-426f-9247-bb680e5fe0c8/hosts/nqn.2014-08.org.nvmexpress:uuid:zz",
    ];
    for path in paths {
        for method in ["GET", "PUT", "DELETE", "PATCH", "POST"] {
            let (status, _) =
                node.raw(method, path, Some(&auth), Some(("application/json", "{\"size_bytes\": 1e308}".into())));
            assert!((400..500).contains(&status), "{method} {path}: {status}");
        }
    }
    for body in
        ["", "null", "{}", "\"x\"", "{\"name\": null}", "{\"name\": \"\\u0000\", \"size_bytes\": 1}", &"[".repeat(3000)]
    {
        let (status, _) = node.raw("POST", "/v1/volumes", Some(&auth), Some(("application/json", body.to_owned())));
        assert!((400..500).contains(&status), "{body:.40}: {status}");
    }
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        &[0xffu8; 4096][..],
        b"POST /v1/volumes HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(node.api).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(raw);
        let _ = std::io::Read::read(&mut s, &mut [0u8; 512]);
    }
    let (status, health) = node.raw("GET", "/v1/health", None, None);
    assert_eq!(status, 200, "{health}");
}

fn admin_connect(node: &Node, opts: &HostOptions, nqn: &str) -> Result<(Connection, u16), HostError> {
    let mut admin = Connection::open(node.nvme, opts)?;
    let cntlid = admin.connect_admin(nqn, 0, 31)?;
    admin.enable()?;
    Ok((admin, cntlid))
}

fn io_connect(node: &Node, opts: &HostOptions, nqn: &str, cntlid: u16) -> Connection {
    let mut io = Connection::open(node.nvme, opts).unwrap();
    io.connect_io(nqn, cntlid, 1, 31).unwrap();
    io.set_icd_limit(8192);
    io
}

/// Waits until a command on `conn` fails because the target closed the connection.
fn closed_within(conn: &mut Connection, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match conn.keep_alive() {
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn hosts_reach_volumes_as_the_api_says_across_restarts() {
    let mut node = node::start(64, "");
    let alice = HostOptions::default();
    let bob = HostOptions::default();
    let v = create(&node, "data", 4 * MIB, json!({"hosts": [alice.hostnqn]}));
    let (id, nqn) = (v["id"].as_str().unwrap().to_owned(), v["nqn"].as_str().unwrap().to_owned());

    // Alice writes and reads back; Bob is refused.
    let (mut admin, cntlid) = admin_connect(&node, &alice, &nqn).unwrap();
    let ns = admin.identify_namespace(1).unwrap();
    assert_eq!(ns.nsze, 4 * MIB / 4096);
    let mut io = io_connect(&node, &alice, &nqn, cntlid);
    let data: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
    assert!(io.write(1, 100, 4, &data, false).unwrap().is_success());
    assert!(io.execute(fabriq_bench::host::Command::flush(1)).unwrap().is_success());
    let mut back = vec![0; data.len()];
    assert!(io.read(1, 100, 4, &mut back).unwrap().is_success());
    assert_eq!(back, data);
    match admin_connect(&node, &bob, &nqn) {
        Err(HostError::Status(cqe)) => assert_eq!(cqe.status, Status::CONNECT_INVALID_HOST.with_dnr()),
        other => panic!("bob got in: {:?}", other.map(|(_, c)| c)),
    }
    let info = node.expect("GET", &format!("/v1/volumes/{id}"), None, 200);
    assert_eq!(info["controllers"], 1, "{info}");

    // Growing while Alice is connected: a namespace attribute event, then Identify Namespace
    // shows the new size (what the Linux host does on that event).
    assert!(admin.set_features(fid::ASYNC_EVENT_CONFIGURATION, 0x100).unwrap().is_success());
    let aer = admin.async_event_request().unwrap();
    node.expect("PATCH", &format!("/v1/volumes/{id}"), Some(&json!({"size_bytes": 8 * MIB})), 200);
    let event = admin.wait_timeout(aer, Duration::from_secs(5)).expect("the AER completes");
    assert_eq!(event.cqe.dw0, AsyncEvent::NAMESPACE_ATTRIBUTE_CHANGED.to_dw0(), "{:?}", event.cqe);
    let ns = admin.identify_namespace(1).unwrap();
    assert_eq!(ns.nsze, 8 * MIB / 4096);
    let tail = vec![0x5Au8; 4096];
    assert!(io.write(1, 8 * MIB / 4096 - 1, 1, &tail, false).unwrap().is_success(), "the new blocks are writable");

    // Bob is allowed, then the delete is refused; Alice is revoked and disconnected.
    node.expect("PUT", &format!("/v1/volumes/{id}/hosts/{}", bob.hostnqn), None, 201);
    node.expect("DELETE", &format!("/v1/volumes/{id}/hosts/{}", alice.hostnqn), None, 204);
    assert!(closed_within(&mut admin, Duration::from_secs(5)), "alice's admin queue is still open");
    assert!(closed_within(&mut io, Duration::from_secs(5)), "alice's I/O queue is still open");
    assert!(matches!(admin_connect(&node, &alice, &nqn), Err(HostError::Status(_))));
    node.expect_error("DELETE", &format!("/v1/volumes/{id}"), None, 409, "volume_exported");

    // A restart: the volume, its size, its data and its hosts come back before anyone calls.
    node.restart();
    let (mut admin, cntlid) = admin_connect(&node, &bob, &nqn).unwrap();
    assert_eq!(admin.identify_namespace(1).unwrap().nsze, 8 * MIB / 4096);
    let mut io = io_connect(&node, &bob, &nqn, cntlid);
    let mut back = vec![0; data.len()];
    assert!(io.read(1, 100, 4, &mut back).unwrap().is_success());
    assert_eq!(back, data);
    assert!(matches!(admin_connect(&node, &alice, &nqn), Err(HostError::Status(_))), "alice stays revoked");
    assert_eq!(node.expect("GET", &format!("/v1/volumes/{id}/hosts"), None, 200)["hosts"], json!([bob.hostnqn]));

    // A forced delete disconnects Bob.
    node.expect("DELETE", &format!("/v1/volumes/{id}?force=true"), None, 204);
    assert!(closed_within(&mut io, Duration::from_secs(5)), "bob's I/O queue is still open");
    node.restart();
    node.expect_error("GET", &format!("/v1/volumes/{id}"), None, 404, "volume_not_found");
}

/// A pool whose device is gone at start-up does not take the node down: the other pools'
/// volumes are served, the failed one is reported with its reason, its volumes keep their
/// hosts, and adding it again once the device is back brings them online without a restart.
#[test]
fn a_failed_pool_leaves_the_others_serving_and_comes_back() {
    let mut node = node::start(64, "");
    let host = HostOptions::default();
    let p2 = node.data("p2.img");
    node.expect("POST", "/v1/pools", Some(&json!({"name": "p2", "path": p2, "size_bytes": 32 * MIB})), 201);
    let on_p1 = create(&node, "on-p1", MIB, json!({"pool": "p1", "hosts": [host.hostnqn]}));
    let on_p2 = create(&node, "on-p2", MIB, json!({"pool": "p2", "hosts": [host.hostnqn]}));
    let away = node.data("p2.away");
    node.restart_with(|| std::fs::rename(&p2, &away).unwrap());

    let health = node.expect("GET", "/v1/health", None, 200);
    assert_eq!((health["status"].as_str(), &health["failed_pools"]), (Some("degraded"), &json!(["p2"])), "{health}");
    let failed = node.expect("GET", "/v1/pools/p2", None, 200);
    assert_eq!((failed["state"].as_str(), failed["capacity_bytes"].as_u64()), (Some("failed"), Some(0)), "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("does not exist"), "{failed}");
    let pools = node.expect("GET", "/v1/pools", None, 200);
    let states: Vec<(&str, &str)> =
        pools.as_array().unwrap().iter().map(|p| (p["name"].as_str().unwrap(), p["state"].as_str().unwrap())).collect();
    assert_eq!(states, [("p1", "online"), ("p2", "failed")]);
    let (status, metrics) = node.raw("GET", "/metrics", Some(&format!("Bearer {}", node.token)), None);
    assert_eq!(status, 200);
    let text = metrics.as_str().map(str::to_owned).unwrap_or_else(|| metrics.to_string());
    assert!(text.contains("fabriq_pool_online{pool=\"p2\"} 0"), "{text}");

    // The other pool's volume serves; the failed pool's is neither served nor carved into.
    admin_connect(&node, &host, on_p1["nqn"].as_str().unwrap()).expect("p1's volume is served");
    assert!(admin_connect(&node, &host, on_p2["nqn"].as_str().unwrap()).is_err());
    node.expect_error(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "x", "size_bytes": MIB, "pool": "p2"})),
        409,
        "pool_failed",
    );
    node.expect_error(
        "POST",
        "/v1/pools",
        Some(&json!({"name": "p2", "path": node.data("other.img"), "size_bytes": 32 * MIB})),
        409,
        "pool_exists",
    );
    node.expect_error("POST", "/v1/pools", Some(&json!({"name": "p2", "path": p2})), 422, "device_missing");
    assert_eq!(node.expect("GET", "/v1/pools/p2", None, 200)["state"], "failed");
    node.expect_error("DELETE", "/v1/pools/p2", None, 409, "pool_failed");
    node.expect_error("DELETE", "/v1/pools/p1", None, 409, "configured_pool");
    node.expect_error("DELETE", "/v1/pools/nope", None, 404, "pool_not_found");

    // The device is back: adding the pool again opens it, and its volume serves its host.
    std::fs::rename(&away, &p2).unwrap();
    let back = node.expect("POST", "/v1/pools", Some(&json!({"name": "p2", "path": p2})), 201);
    assert_eq!((back["state"].as_str(), back["volumes"].as_u64()), (Some("online"), Some(1)), "{back}");
    assert_eq!(node.expect("GET", "/v1/health", None, 200)["status"], "ok");
    admin_connect(&node, &host, on_p2["nqn"].as_str().unwrap()).expect("p2's volume is served to its host again");
    node.restart();
    assert_eq!(node.expect("GET", "/v1/health", None, 200)["status"], "ok");
    admin_connect(&node, &host, on_p2["nqn"].as_str().unwrap()).expect("and after a restart");

    // Removing pools: only an empty one; its label stays, so adding it again opens it.
    node.expect_error("DELETE", "/v1/pools/p2", None, 409, "pool_not_empty");
    node.expect("DELETE", &format!("/v1/volumes/{}?force=true", on_p2["id"].as_str().unwrap()), None, 204);
    let id = node.expect("GET", "/v1/pools/p2", None, 200)["id"].clone();
    node.expect("DELETE", "/v1/pools/p2", None, 204);
    node.expect_error("GET", "/v1/pools/p2", None, 404, "pool_not_found");
    let p3 = node.data("p3.img");
    node.expect("POST", "/v1/pools", Some(&json!({"name": "p3", "path": p3, "size_bytes": 32 * MIB})), 201);
    node.restart_with(|| std::fs::remove_file(&p3).unwrap());
    let names = |node: &Node| -> Vec<String> {
        let pools = node.expect("GET", "/v1/pools", None, 200);
        pools.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&node), ["p1", "p3"], "p2 is not opened any more");
    // A failed pool given up on: forgotten with force.
    node.expect("DELETE", "/v1/pools/p3?force=true", None, 204);
    assert_eq!(node.expect("GET", "/v1/health", None, 200)["status"], "ok");
    let again = node.expect("POST", "/v1/pools", Some(&json!({"name": "p2", "path": p2})), 201);
    assert_eq!((&again["id"], again["volumes"].as_u64()), (&id, Some(0)), "the same pool, opened again");
    node.restart();
    assert_eq!(names(&node), ["p1", "p2"]);
}

/// A listener the state file holds but the restarted daemon cannot bind (here an NVMe/RDMA one:
/// without the `rdma` feature it is not built in; with it, loopback has no RDMA device) is
/// reported in the log and kept in the state file for a later start, while the rest of the
/// node starts and serves.
#[test]
fn a_state_file_listener_that_cannot_be_bound_is_kept_for_the_next_start() {
    let mut node = node::start(64, "");
    let added = node.expect("POST", "/v1/listeners", Some(&json!({"address": "127.0.0.1:0"})), 201);
    let path = node.data("node-state.json");
    node.restart_with(|| {
        let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        state["listeners"].as_array_mut().unwrap().push(
            json!({"transport": "rdma", "address": "127.0.0.1:4555", "advertise": null, "discovery_only": false}),
        );
        std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    });
    let listeners = node.expect("GET", "/v1/listeners", None, 200);
    let listed: Vec<(&str, &str)> = listeners
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["transport"].as_str().unwrap(), l["address"].as_str().unwrap()))
        .collect();
    let api = added["address"].as_str().unwrap();
    assert_eq!(
        listed,
        [("tcp", node.nvme.to_string().as_str()), ("tcp", api)],
        "the TCP one is back, the RDMA one is not"
    );
    assert!(node.log_text().contains("cannot restore a listener added through the API"), "{}", node.log_text());
    let state: Value = serde_json::from_str(&std::fs::read_to_string(node.data("node-state.json")).unwrap()).unwrap();
    let kept = state["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["transport"] == "rdma" && l["address"] == "127.0.0.1:4555");
    assert!(kept, "kept for a start that can bind it: {state}");
    node.expect("GET", "/v1/health", None, 200);
}
