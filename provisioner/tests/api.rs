//! The provisioner's API against a running daemon and real storage nodes, with a real HTTP
//! client: authentication and scopes, documentation, request ids, limits and JSON errors,
//! metrics; nodes registered, listed, labelled, drained and removed, and every refusal.

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn authentication_scopes_docs_limits_and_errors() {
    let p =
        Provisioner::start(Options { extra_api: String::from("body_limit_bytes = \"4KiB\""), ..Options::default() });
    // Health and documentation need no token.
    let (status, health) = p.try_call_as(None, "GET", "/v1/health", None).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        (health["status"].as_str(), health["store"].as_str(), health["leader"].as_bool()),
        (Some("ok"), Some("redb"), Some(true))
    );
    let (status, doc) = p.try_call_as(None, "GET", "/openapi.json", None).unwrap();
    assert_eq!(status, 200);
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/provisioner.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(doc, committed, "the served document is the committed one");
    let html = p.agent.get(&format!("{}/docs/", p.url())).call().unwrap().into_body().read_to_string().unwrap();
    assert!(html.contains("swagger-ui-bundle.js") && html.contains("provisioner"), "{html}");
    let js = p.agent.get(&format!("{}/docs/swagger-ui-bundle.js", p.url())).call().unwrap();
    assert_eq!(js.headers().get("content-type").unwrap(), "text/javascript");

    // Everything else needs a token; a read token may only read.
    for path in ["/v1/nodes", "/v1/volumes", "/v1/capacity", "/metrics", "/v1/volumes/x"] {
        for token in [None, Some("wrong-token-wrong-token")] {
            let (status, body) = p.try_call_as(token, "GET", path, None).unwrap();
            assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{path} {token:?}: {body}");
        }
        let (status, _) = p.try_call_as(Some(READER), "GET", path, None).unwrap();
        assert_ne!(status, 401, "{path}");
    }
    let (status, body) =
        p.try_call_as(Some(READER), "POST", "/v1/volumes", Some(&json!({"name": "a", "size_bytes": 1}))).unwrap();
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = p.try_call_as(Some(READER), "DELETE", "/v1/volumes/a", None).unwrap();
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");

    // Request ids: echoed when sane, made up otherwise.
    let r = p.agent.get(&format!("{}/v1/health", p.url())).header("x-request-id", "abc-123").call().unwrap();
    assert_eq!(r.headers().get("x-request-id").unwrap(), "abc-123");
    let r = p.agent.get(&format!("{}/v1/health", p.url())).header("x-request-id", "no spaces!").call().unwrap();
    assert_eq!(r.headers().get("x-request-id").unwrap().len(), 32);

    // JSON errors for routes, methods, bodies and limits.
    p.expect_error("GET", "/v1/nothing", None, 404, "no_route");
    p.expect_error("PUT", "/v1/volumes", Some(&json!({})), 405, "method_not_allowed");
    p.expect_error("POST", "/v1/volumes", Some(&json!({"name": "a"})), 400, "invalid_body");
    p.expect_error(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "a", "size_bytes": 1, "colour": 1})),
        400,
        "invalid_body",
    );
    p.expect_error("POST", "/v1/volumes", Some(&json!({"name": "a b", "size_bytes": 1})), 400, "invalid_argument");
    p.expect_error("POST", "/v1/volumes", Some(&json!({"name": "a", "size_bytes": 0})), 400, "invalid_argument");
    p.expect_error(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "a", "size_bytes": 1, "block_size": 1000})),
        400,
        "invalid_argument",
    );
    p.expect_error(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "a", "size_bytes": 1, "requirements": {"topology": [{}]}})),
        400,
        "invalid_argument",
    );
    p.expect_error(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "x".repeat(5000), "size_bytes": 1})),
        413,
        "body_too_large",
    );
    p.expect_error("GET", "/v1/volumes?limit=x", None, 400, "invalid_query");
    p.expect_error("GET", "/v1/volumes/none", None, 404, "volume_not_found");
    p.expect_error("GET", "/v1/nodes/none", None, 404, "node_not_found");
    // Nothing to place on: a clear 422.
    p.expect_error(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "a", "size_bytes": MIB})),
        422,
        "unsatisfiable_topology",
    );
    // Deleting and unpublishing what does not exist is done already.
    p.expect("DELETE", "/v1/volumes/none", None, 204);
    p.expect("DELETE", &format!("/v1/volumes/none/hosts/{HOST1}"), None, 204);
    p.expect("DELETE", "/v1/nodes/none", None, 204);

    let metrics = p
        .agent
        .get(&format!("{}/metrics", p.url()))
        .header("Authorization", &format!("Bearer {READER}"))
        .call()
        .unwrap();
    let text = metrics.into_body().read_to_string().unwrap();
    for line in [
        "fabriq_provisioner_requests_total{method=\"GET\",route=\"/v1/volumes/{name}\",status=\"404\"} 2",
        "fabriq_provisioner_volumes{state=\"ready\"} 0",
        "fabriq_provisioner_leader 1",
        "fabriq_provisioner_request_duration_seconds_count{route=\"/v1/health\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
    }
}

#[test]
fn nodes_are_registered_checked_labelled_drained_and_removed() {
    let n1 = start_node(64, false);
    let n2 = start_node(64, true);
    let p = Provisioner::start(Options::default());

    // Registration calls the node with its token first.
    let mut bad = n1.registration("n1", json!({}));
    bad["token"] = json!("not-the-token-of-this-node");
    p.expect_error("POST", "/v1/nodes", Some(&bad), 422, "node_token_rejected");
    let unreachable =
        json!({"name": "n9", "url": format!("http://127.0.0.1:{}", free_port()), "token": "0123456789abcdef"});
    p.expect_error("POST", "/v1/nodes", Some(&unreachable), 422, "node_unreachable");
    p.expect_error(
        "POST",
        "/v1/nodes",
        Some(&json!({"name": "n1", "url": "ftp://x", "token": "0123456789abcdef"})),
        400,
        "invalid_argument",
    );
    p.expect_error("POST", "/v1/nodes", Some(&n1.registration("n1", json!({"Zone": "a"}))), 400, "invalid_argument");

    let v = p.register("n1", &n1, json!({"region": "r1", "zone": "a", "rack": "1"}));
    assert_eq!((v["health"].as_str(), v["state"].as_str()), (Some("healthy"), Some("active")));
    assert_eq!(v["capacity_bytes"], 55 * MIB);
    assert!(v.get("token").is_none(), "the node token is never shown: {v}");
    // The same again changes nothing; otherwise it conflicts.
    p.expect("POST", "/v1/nodes", Some(&n1.registration("n1", json!({"region": "r1", "zone": "a", "rack": "1"}))), 200);
    p.expect_error("POST", "/v1/nodes", Some(&n1.registration("n1", json!({"zone": "b"}))), 409, "node_conflict");
    p.expect_error("POST", "/v1/nodes", Some(&n1.registration("other", json!({}))), 409, "url_taken");
    p.register("n2", &n2, json!({"region": "r1", "zone": "b", "rack": "2"}));

    let list = p.expect("GET", "/v1/nodes", None, 200);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n1", "n2"]);
    let n2v = p.expect("GET", "/v1/nodes/n2", None, 200);
    assert_eq!(n2v["pools"].as_array().unwrap().len(), 2);
    assert_eq!(n2v["capacity_bytes"], 110 * MIB);

    // Labels and draining.
    let v = p.expect("PATCH", "/v1/nodes/n1", Some(&json!({"labels": {"zone": "c"}})), 200);
    assert_eq!(v["labels"], json!({"zone": "c"}));
    let v = p.expect("PATCH", "/v1/nodes/n1", Some(&json!({"draining": true})), 200);
    assert_eq!(v["state"], "draining");
    p.expect_error("PATCH", "/v1/nodes/n1", Some(&json!({"url": n2.base_url()})), 409, "url_taken");
    p.expect_error(
        "PATCH",
        "/v1/nodes/n1",
        Some(&json!({"token": "wrong-wrong-wrong-wrong"})),
        422,
        "node_token_rejected",
    );
    p.expect_error("PATCH", "/v1/nodes/none", Some(&json!({"draining": true})), 404, "node_not_found");
    // A draining node takes no new volume.
    let (status, v) = p.create("v1", MIB, json!({}));
    assert_eq!((status, v["node"].as_str()), (201, Some("n2")), "{v}");
    let (status, v) = p.create("v2", MIB, json!({"requirements": {"node": "n1"}}));
    assert_eq!((status, v["code"].as_str()), (422, Some("unsatisfiable_topology")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("draining"), "{v}");
    p.expect("PATCH", "/v1/nodes/n1", Some(&json!({"draining": false})), 200);
    let (status, v) = p.create("v2", MIB, json!({"requirements": {"node": "n1"}}));
    assert_eq!((status, v["node"].as_str()), (201, Some("n1")), "{v}");

    // Removal: refused while volumes are on the node, unless forced (records go, data stays).
    p.expect_error("DELETE", "/v1/nodes/n1", None, 409, "node_has_volumes");
    p.expect("DELETE", "/v1/volumes/v2", None, 204);
    p.expect("DELETE", "/v1/nodes/n1", None, 204);
    p.expect_error("GET", "/v1/nodes/n1", None, 404, "node_not_found");
    p.expect("DELETE", "/v1/nodes/n2?force=true", None, 204);
    assert_eq!(p.volumes(), Vec::<Value>::new());
    assert_eq!(n2.volumes().len(), 1, "a forced removal leaves the node's data alone");
}

/// Whatever arrives, the answer is a JSON error with a code and a message, and the provisioner
/// lives on.
#[test]
fn garbage_gets_json_errors_never_a_crash() {
    let node = start_node(64, false);
    let mut p = Provisioner::start(Options::default());
    p.register("n1", &node, json!({}));
    let url = p.url();
    let raw = |method: &str, path: &str, content_type: Option<&str>, body: &[u8]| -> (u16, Value) {
        let target = format!("{url}{path}");
        let auth = format!("Bearer {ADMIN}");
        let response = match method {
            "GET" => p.agent.get(&target).header("Authorization", &auth).call(),
            "DELETE" => p.agent.delete(&target).header("Authorization", &auth).call(),
            _ => {
                let mut req = match method {
                    "POST" => p.agent.post(&target),
                    "PUT" => p.agent.put(&target),
                    _ => p.agent.patch(&target),
                }
                .header("Authorization", &auth);
                if let Some(t) = content_type {
                    req = req.header("Content-Type", t);
                }
                req.send(body)
            }
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}")))
    };
    let json_type = Some("application/json");
    // method, path, content type, body, the status wanted.
    type Case<'a> = (&'a str, String, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("POST", "/v1/volumes".into(), json_type, b"{not json".to_vec(), 400),
        ("POST", "/v1/volumes".into(), json_type, b"".to_vec(), 400),
        ("POST", "/v1/volumes".into(), json_type, vec![0xff, 0xfe, 0x00], 400),
        ("POST", "/v1/volumes".into(), Some("text/plain"), b"{}".to_vec(), 415),
        ("POST", "/v1/volumes".into(), None, b"{}".to_vec(), 415),
        ("POST", "/v1/volumes".into(), json_type, br#"{"name":"a","size_bytes":-1}"#.to_vec(), 400),
        ("POST", "/v1/volumes".into(), json_type, br#"{"name":"a","size_bytes":1e30}"#.to_vec(), 400),
        ("POST", "/v1/volumes".into(), json_type, br#"{"name":"a","size_bytes":18446744073709551615}"#.to_vec(), 400),
        ("POST", "/v1/volumes".into(), json_type, br#"{"name":"\u00e9t\u00e9","size_bytes":1}"#.to_vec(), 400),
        ("POST", "/v1/volumes".into(), json_type, br#"{"name":"a","size_bytes":1,"labels":{"k":"v w"}}"#.to_vec(), 400),
        ("POST", "/v1/volumes".into(), json_type, br#"[1,2,3]"#.to_vec(), 400),
        (
            "POST",
            "/v1/volumes".into(),
            json_type,
            br#"{"name":"a","size_bytes":1,"requirements":{"node":"../x"}}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/nodes".into(),
            json_type,
            br#"{"name":"n2","url":"http://127.0.0.1:1","token":"short"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/nodes".into(),
            json_type,
            br#"{"name":"n2","url":"file:///etc/passwd","token":"0123456789abcdef"}"#.to_vec(),
            400,
        ),
        ("PATCH", "/v1/volumes/none".into(), json_type, br#"{"size_bytes":"big"}"#.to_vec(), 400),
        ("PATCH", "/v1/nodes/n1".into(), json_type, br#"{"labels":{"":"x"}}"#.to_vec(), 400),
        ("PATCH", "/v1/nodes/n1".into(), json_type, br#"{"url":"http://a/b/c"}"#.to_vec(), 400),
        ("PUT", "/v1/volumes/none/hosts/nqn.x%20y".into(), None, vec![], 400),
        ("PUT", "/v1/volumes/%ff/hosts/nqn.2014-08.org.nvmexpress:uuid:1".into(), None, vec![], 400),
        ("GET", "/v1/volumes?limit=-1".into(), None, vec![], 400),
        ("GET", "/v1/volumes?limit=99999999999999999999999".into(), None, vec![], 400),
        ("GET", "/v1/volumes?colour=red".into(), None, vec![], 400),
        ("GET", "/v1/volumes?label=nokey".into(), None, vec![], 400),
        ("DELETE", "/v1/volumes/x?force=maybe".into(), None, vec![], 400),
        ("DELETE", "/v1/nodes/n1?force=2".into(), None, vec![], 400),
        ("GET", format!("/v1/volumes/{}", "x".repeat(3000)), None, vec![], 404),
    ];
    for (method, path, content_type, body, status) in cases {
        let (got, v) = raw(method, &path, content_type, &body);
        assert_eq!(got, status, "{method} {path} {:?}: {v}", String::from_utf8_lossy(&body));
        assert!(v["code"].as_str().is_some_and(|c| !c.is_empty()), "{method} {path}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: {v}");
    }
    assert!(p.is_running(), "the provisioner lives on");
    p.expect("GET", "/v1/nodes/n1", None, 200);
}

/// A request that outlives `request_timeout_ms` is answered `503 timeout` (saying the
/// operation may still complete), and the change it recorded is applied once the node answers.
#[test]
fn a_request_stuck_on_a_frozen_node_times_out_and_completes_later() {
    let node = start_node(64, false);
    let p = Provisioner::start(Options { extra_api: String::from("request_timeout_ms = 500"), ..Options::default() });
    p.register("n1", &node, json!({}));
    let (status, v) = p.create("v", MIB, json!({}));
    assert_eq!(status, 201, "{v}");
    // SIGSTOP: the node's sockets accept, but nothing answers.
    node.signal("STOP");
    let v = p.expect_error("PUT", &format!("/v1/volumes/v/hosts/{HOST1}"), None, 503, "timeout");
    assert!(v["message"].as_str().unwrap().contains("may still complete"), "{v}");
    // Reads that need no node still answer.
    assert_eq!(p.expect("GET", "/v1/volumes/v", None, 200)["hosts"], json!([HOST1]));
    node.signal("CONT");
    p.eventually(std::time::Duration::from_secs(20), "the host reaches the node's allow list", || {
        node.volume_named(&format!("fabriq-{}", p.expect("GET", "/v1/volumes/v", None, 200)["id"].as_str().unwrap()))
            .is_some_and(|nv| nv["access"]["hosts"] == json!([HOST1]))
    });
}
