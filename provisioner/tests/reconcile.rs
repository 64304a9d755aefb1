//! The reconciler against real storage nodes: a node whose allow list drifted is driven back
//! to the records; a node that goes down is reported unreachable, the changes made meanwhile
//! are recorded and applied once it is back; a volume missing on its node is reported
//! degraded and never recreated; a node volume no record explains is reported, never deleted.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(20);

fn node_volume(node: &Node, v: &Value) -> Option<Value> {
    node.volume_named(&format!("fabriq-{}", v["id"].as_str().unwrap()))
}

fn node_hosts(node: &Node, v: &Value) -> Value {
    node_volume(node, v).map_or(Value::Null, |nv| nv["access"]["hosts"].clone())
}

#[test]
fn drifted_allow_lists_are_driven_back_to_the_records() {
    let a = start_node(64, false);
    let p = Provisioner::start(Options::default());
    p.register("a", &a, json!({}));
    let (status, v) = p.create("v", 2 * MIB, json!({}));
    assert_eq!(status, 201, "{v}");
    p.expect("PUT", &format!("/v1/volumes/v/hosts/{HOST1}"), None, 201);
    let id = node_volume(&a, &v).unwrap()["id"].as_str().unwrap().to_owned();

    // Someone changes the node behind the provisioner's back: HOST1 revoked, HOST2 allowed.
    a.call("DELETE", &format!("/v1/volumes/{id}/hosts/{HOST1}"), None);
    let (status, body) = a.call("PUT", &format!("/v1/volumes/{id}/hosts/{HOST2}"), None);
    assert!(status < 300, "{body}");
    assert_eq!(node_hosts(&a, &v), json!([HOST2]));
    p.eventually(WITHIN, "the node's allow list is the record's again", || node_hosts(&a, &v) == json!([HOST1]));

    // Opened to any host on the node: closed again.
    let (status, body) = a.call("PATCH", &format!("/v1/volumes/{id}"), Some(&json!({"allow_any_host": true})));
    assert_eq!(status, 200, "{body}");
    p.eventually(WITHIN, "the volume is closed to other hosts again", || {
        node_volume(&a, &v).unwrap()["access"]["allow_any_host"] == false
    });
}

#[test]
fn a_node_down_and_back_converges_and_missing_volumes_are_degraded_never_recreated() {
    let mut a = start_node(64, false);
    let b = start_node(64, false);
    let p = Provisioner::start(Options::default());
    p.register("a", &a, json!({"zone": "z1"}));
    p.register("b", &b, json!({"zone": "z2"}));
    let on_a = json!({"requirements": {"node": "a"}});
    let (_, v1) = p.create("v1", 2 * MIB, on_a.clone());
    let (_, v2) = p.create("v2", 2 * MIB, on_a.clone());
    let (_, v3) = p.create("v3", 2 * MIB, on_a.clone());
    p.expect("PUT", &format!("/v1/volumes/v1/hosts/{HOST1}"), None, 201);

    a.kill();
    p.eventually(WITHIN, "node a is seen unreachable", || {
        p.expect("GET", "/v1/nodes/a", None, 200)["health"] == "unreachable"
    });
    let cap = p.expect("GET", "/v1/capacity", None, 200);
    assert_eq!((cap["nodes"].as_u64(), cap["reachable_nodes"].as_u64()), (Some(2), Some(1)), "{cap}");
    assert_eq!(cap["placeable_bytes"], 55 * MIB, "only b's space can take new volumes: {cap}");
    // New volumes go elsewhere, or wait when they must go to a.
    let (status, v) = p.create("elsewhere", MIB, json!({}));
    assert_eq!((status, v["node"].as_str()), (201, Some("b")), "{v}");
    let (status, v) = p.create("on-a", MIB, on_a.clone());
    assert_eq!((status, v["code"].as_str()), (503, Some("nodes_unavailable")), "{v}");
    p.expect_error("GET", "/v1/volumes/on-a", None, 404, "volume_not_found");
    // Changes meanwhile are recorded, answered 503, and applied once the node is back.
    p.expect_error("PUT", &format!("/v1/volumes/v1/hosts/{HOST2}"), None, 503, "node_unavailable");
    p.expect_error("DELETE", &format!("/v1/volumes/v1/hosts/{HOST1}"), None, 503, "node_unavailable");
    p.expect_error("PATCH", "/v1/volumes/v3", Some(&json!({"size_bytes": 6 * MIB})), 503, "node_unavailable");
    p.expect_error("DELETE", "/v1/volumes/v2", None, 503, "node_unavailable");
    let v1_now = p.expect("GET", "/v1/volumes/v1", None, 200);
    assert_eq!(v1_now["hosts"], json!([HOST2]));
    assert_eq!(p.expect("GET", "/v1/volumes/v2", None, 200)["state"], "deleting");

    a.start_again();
    p.eventually(WITHIN, "node a is healthy again and in line with the records", || {
        p.expect("GET", "/v1/nodes/a", None, 200)["health"] == "healthy"
            && node_hosts(&a, &v1) == json!([HOST2])
            && node_volume(&a, &v2).is_none()
            && node_volume(&a, &v3).is_some_and(|nv| nv["size_bytes"] == 6 * MIB)
            && p.call("GET", "/v1/volumes/v2", None).0 == 404
            && p.expect("GET", "/v1/volumes/v3", None, 200)["capacity_bytes"] == 6 * MIB
    });

    // A volume lost on its node: degraded, never recreated empty; changes refused; delete works.
    let nv1 = node_volume(&a, &v1).unwrap();
    let (status, body) = a.call("DELETE", &format!("/v1/volumes/{}?force=true", nv1["id"].as_str().unwrap()), None);
    assert!(status < 300, "{body}");
    p.eventually(WITHIN, "v1 is reported degraded", || {
        p.expect("GET", "/v1/volumes/v1", None, 200)["state"] == "degraded"
    });
    let v = p.expect("GET", "/v1/volumes/v1", None, 200);
    assert!(v["degraded_reason"].as_str().unwrap().contains("missing on node a"), "{v}");
    let passes = |p: &Provisioner| -> u64 {
        let text = p
            .agent
            .get(&format!("{}/metrics", p.url()))
            .header("Authorization", &format!("Bearer {READER}"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let line = text.lines().find(|l| l.starts_with("fabriq_provisioner_reconcile_passes_total")).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let seen = passes(&p);
    p.eventually(WITHIN, "a few more passes", || passes(&p) >= seen + 3);
    assert!(node_volume(&a, &v1).is_none(), "a missing volume is never recreated");
    assert_eq!(p.expect("GET", "/v1/volumes/v1", None, 200)["state"], "degraded");
    let text = p
        .agent
        .get(&format!("{}/metrics", p.url()))
        .header("Authorization", &format!("Bearer {ADMIN}"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(text.lines().any(|l| l == "fabriq_provisioner_volumes{state=\"degraded\"} 1"), "{text}");
    p.expect_error("PUT", &format!("/v1/volumes/v1/hosts/{HOST1}"), None, 409, "volume_degraded");
    p.expect_error("PATCH", "/v1/volumes/v1", Some(&json!({"size_bytes": 8 * MIB})), 409, "volume_degraded");
    p.expect("DELETE", "/v1/volumes/v1?force=true", None, 204);
    p.expect_error("GET", "/v1/volumes/v1", None, 404, "volume_not_found");

    // A node volume named like the provisioner's that no record explains: reported, left alone.
    let stray = "fabriq-5b0c8f1e-2a64-4c1d-9e3f-7d2a1b6c4e90";
    let (status, body) = a.call("POST", "/v1/volumes", Some(&json!({"name": stray, "size_bytes": MIB, "pool": "p1"})));
    assert_eq!(status, 201, "{body}");
    p.eventually(WITHIN, "the orphan is reported", || {
        p.expect("GET", "/v1/nodes/a", None, 200)["orphans"] == json!([stray])
    });
    let seen = passes(&p);
    p.eventually(WITHIN, "a few more passes", || passes(&p) >= seen + 3);
    assert!(a.volume_named(stray).is_some(), "an orphan is never deleted blindly");
}

/// A pool added through a node's API whose file is gone at the node's next start is reported
/// failed by the node: its volumes show as degraded with that reason, the other pool's stay
/// ready and take new volumes, and once the file is back they are ready again.
#[test]
fn a_pool_its_node_cannot_open_degrades_its_volumes_until_it_is_back() {
    let mut a = start_node(64, false);
    let p = Provisioner::start(Options::default());
    p.register("a", &a, json!({}));
    let image = a.dir.path().join("data/p2.img");
    let (status, body) =
        a.call("POST", "/v1/pools", Some(&json!({"name": "p2", "path": image, "size_bytes": 32 * MIB})));
    assert_eq!(status, 201, "{body}");
    p.eventually(WITHIN, "the provisioner sees pool p2", || {
        p.expect("GET", "/v1/nodes/a", None, 200)["pools"].as_array().unwrap().len() == 2
    });
    let (status, v) = p.create("on-p2", 2 * MIB, json!({"requirements": {"pool": "p2"}}));
    assert_eq!(status, 201, "{v}");
    let (status, v) = p.create("on-p1", 2 * MIB, json!({"requirements": {"pool": "p1"}}));
    assert_eq!(status, 201, "{v}");

    a.kill();
    let aside = a.dir.path().join("data/p2.aside");
    std::fs::rename(&image, &aside).unwrap();
    a.start_again();
    p.eventually(WITHIN, "on-p2 is degraded because its pool failed", || {
        let v = p.expect("GET", "/v1/volumes/on-p2", None, 200);
        v["state"] == "degraded"
            && v["degraded_reason"].as_str().is_some_and(|r| r.starts_with("pool p2 on node a failed"))
    });
    assert_eq!(p.expect("GET", "/v1/volumes/on-p1", None, 200)["state"], "ready");
    let node = p.expect("GET", "/v1/nodes/a", None, 200);
    let p2 = node["pools"].as_array().unwrap().iter().find(|x| x["name"] == "p2").unwrap().clone();
    assert_eq!(p2["state"], "failed", "{node}");
    assert!(p2["error"].as_str().is_some_and(|e| !e.is_empty()), "{node}");
    // New volumes go to the pool that works.
    let (status, v) = p.create("new", MIB, json!({}));
    assert_eq!((status, v["pool"].as_str()), (201, Some("p1")), "{v}");

    // The file is back and the node opens it again: ready, and nothing was recreated.
    std::fs::rename(&aside, &image).unwrap();
    let (status, body) =
        a.call("POST", "/v1/pools", Some(&json!({"name": "p2", "path": image, "size_bytes": 32 * MIB})));
    assert!(status < 300, "{body}");
    p.eventually(WITHIN, "on-p2 is ready again", || {
        p.expect("GET", "/v1/volumes/on-p2", None, 200)["state"] == "ready"
    });
    let v = p.expect("GET", "/v1/volumes/on-p2", None, 200);
    assert_eq!(node_volume(&a, &v).unwrap()["pool"], "p2");
}
