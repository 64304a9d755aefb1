//! Volumes through the provisioner onto real storage nodes: placement (spreading, topology,
//! node and pool requirements, a clear 507 or 422), idempotent creates (100 concurrent
//! creates of one name make one volume), publish and unpublish as the node's allow list shows
//! them, capacity accounting against what the nodes report, listing, growing, deleting.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use serde_json::{Value, json};

fn two_nodes() -> (Node, Node, Provisioner) {
    let a = start_node(64, false);
    let b = start_node(64, true);
    let p = Provisioner::start(Options::default());
    p.register("a", &a, json!({"region": "r1", "zone": "z1", "rack": "k1"}));
    p.register("b", &b, json!({"region": "r1", "zone": "z2", "rack": "k2"}));
    (a, b, p)
}

fn node_of(v: &Value) -> &str {
    v["node"].as_str().unwrap()
}

#[test]
fn placement_spreads_and_obeys_requirements() {
    let (a, b, p) = two_nodes();
    // Spreading: the most free space wins, so pools of equal size take turns (a has one
    // pool, b two, each of 55 MiB): a, b, b, a, b, b.
    let mut per_pool: BTreeMap<String, usize> = BTreeMap::new();
    let mut order = Vec::new();
    for i in 0..6 {
        let (status, v) = p.create(&format!("s{i}"), 4 * MIB, json!({}));
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["state"], "ready");
        *per_pool.entry(format!("{}/{}", node_of(&v), v["pool"].as_str().unwrap())).or_default() += 1;
        order.push(node_of(&v).to_owned());
    }
    assert_eq!(per_pool.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{per_pool:?}");
    assert_eq!(order, ["a", "b", "b", "a", "b", "b"]);
    // Topology: a segment of labels; any of several segments.
    let (status, v) = p.create("t1", MIB, json!({"requirements": {"topology": [{"zone": "z2"}]}}));
    assert_eq!((status, node_of(&v)), (201, "b"), "{v}");
    let (status, v) =
        p.create("t2", MIB, json!({"requirements": {"topology": [{"zone": "z9"}, {"rack": "k1", "zone": "z1"}]}}));
    assert_eq!((status, node_of(&v)), (201, "a"), "{v}");
    let (status, v) = p.create("t3", MIB, json!({"requirements": {"topology": [{"zone": "z9"}]}}));
    assert_eq!((status, v["code"].as_str()), (422, Some("unsatisfiable_topology")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("zone=z9"), "{v}");
    // Node and pool.
    let (status, v) = p.create("n1", MIB, json!({"requirements": {"node": "a"}}));
    assert_eq!((status, node_of(&v)), (201, "a"), "{v}");
    let (status, v) = p.create("n2", MIB, json!({"requirements": {"pool": "p2"}}));
    assert_eq!((status, node_of(&v), v["pool"].as_str()), (201, "b", Some("p2")), "{v}");
    let (status, v) = p.create("n3", MIB, json!({"requirements": {"node": "nobody"}}));
    assert_eq!((status, v["code"].as_str()), (422, Some("unknown_node")), "{v}");
    let (status, v) = p.create("n4", MIB, json!({"requirements": {"node": "a", "pool": "p2"}}));
    assert_eq!((status, v["code"].as_str()), (422, Some("unsatisfiable_topology")), "{v}");
    // Too big for any pool: 507, saying how much there is; nothing is left behind.
    let (status, v) = p.create("huge", 60 * MIB, json!({}));
    assert_eq!((status, v["code"].as_str()), (507, Some("insufficient_capacity")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("largest free space"), "{v}");
    p.expect_error("GET", "/v1/volumes/huge", None, 404, "volume_not_found");
    // Every volume is on its node under the provisioner's name for it.
    let total: usize = a.volumes().len() + b.volumes().len();
    assert_eq!(total, p.volumes().len());
    for v in p.volumes() {
        let node = if v["node"] == "a" { &a } else { &b };
        let nv = node.volume_named(&format!("fabriq-{}", v["id"].as_str().unwrap())).unwrap();
        assert_eq!((nv["pool"].as_str(), nv["nqn"].as_str()), (v["pool"].as_str(), v["nqn"].as_str()), "{v}");
    }
}

#[test]
fn creates_are_idempotent_by_name_even_when_concurrent() {
    let (a, b, p) = two_nodes();
    let p = Arc::new(p);
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.create("same", 3 * MIB, json!({"labels": {"app": "db"}})))
        })
        .collect();
    let answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let existed = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, existed), (1, 99), "{:?}", answers.iter().map(|(s, _)| s).collect::<Vec<_>>());
    let ids: std::collections::BTreeSet<&str> = answers.iter().map(|(_, v)| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "every answer is the same volume");
    assert_eq!(a.volumes().len() + b.volumes().len(), 1, "one volume on the nodes");
    // A different request under the name conflicts; the same one is still 200.
    let (status, v) = p.create("same", 4 * MIB, json!({"labels": {"app": "db"}}));
    assert_eq!((status, v["code"].as_str()), (409, Some("volume_conflict")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("size_bytes"), "{v}");
    let (status, v) = p.create("same", 3 * MIB, json!({}));
    assert_eq!((status, v["code"].as_str()), (409, Some("volume_conflict")), "{v}");
    let (status, _) = p.create("same", 3 * MIB, json!({"labels": {"app": "db"}}));
    assert_eq!(status, 200);
    // Delete is idempotent too.
    p.expect("DELETE", "/v1/volumes/same", None, 204);
    p.expect("DELETE", "/v1/volumes/same", None, 204);
    assert_eq!(a.volumes().len() + b.volumes().len(), 0);
}

#[test]
fn publish_and_unpublish_drive_the_nodes_allow_list() {
    let (a, b, p) = two_nodes();
    let (_, v) = p.create("vol", 2 * MIB, json!({"requirements": {"node": "a"}}));
    let id = v["id"].as_str().unwrap();
    let node_volume = a.volume_named(&format!("fabriq-{id}")).unwrap();
    let node_id = node_volume["id"].as_str().unwrap();
    let node_hosts = |n: &Node| n.call("GET", &format!("/v1/volumes/{node_id}/hosts"), None).1["hosts"].clone();

    let publication = p.expect("PUT", &format!("/v1/volumes/vol/hosts/{HOST1}"), None, 201);
    assert_eq!(
        publication,
        json!({
            "volume": "vol", "host": HOST1, "transport": "tcp", "address": "127.0.0.1", "port": a.nvme.port(),
            "nqn": format!("nqn.2026-11.dev.fabriq:vol:{node_id}"),
            "paths": [{"transport": "tcp", "address": "127.0.0.1", "port": a.nvme.port()}],
        })
    );
    assert_eq!(node_hosts(&a), json!([HOST1]));
    p.expect("PUT", &format!("/v1/volumes/vol/hosts/{HOST1}"), None, 200);
    p.expect("PUT", &format!("/v1/volumes/{id}/hosts/{HOST2}"), None, 201);
    assert_eq!(node_hosts(&a), json!([HOST1, HOST2]));
    assert_eq!(p.expect("GET", "/v1/volumes/vol/hosts", None, 200), json!({"volume": "vol", "hosts": [HOST1, HOST2]}));
    p.expect_error("PUT", "/v1/volumes/vol/hosts/not-an-nqn", None, 400, "invalid_argument");
    p.expect_error("PUT", &format!("/v1/volumes/none/hosts/{HOST1}"), None, 404, "volume_not_found");

    // A second path: the node gets another listener; publishing shows both.
    let port = free_port();
    let (status, l) = a.call("POST", "/v1/listeners", Some(&json!({"address": format!("127.0.0.1:{port}")})));
    assert_eq!(status, 201, "{l}");
    p.expect("GET", "/v1/nodes/a", None, 200);
    p.eventually(std::time::Duration::from_secs(5), "the new listener is seen", || {
        let pubn = p.expect("PUT", &format!("/v1/volumes/vol/hosts/{HOST1}"), None, 200);
        pubn["paths"].as_array().unwrap().len() == 2
    });

    // Unpublish: off the node's list; idempotent. Deleting while published needs force.
    p.expect("DELETE", &format!("/v1/volumes/vol/hosts/{HOST1}"), None, 204);
    p.expect("DELETE", &format!("/v1/volumes/vol/hosts/{HOST1}"), None, 204);
    assert_eq!(node_hosts(&a), json!([HOST2]));
    p.expect_error("DELETE", "/v1/volumes/vol", None, 409, "volume_published");
    p.expect("DELETE", "/v1/volumes/vol?force=true", None, 204);
    assert!(a.volumes().is_empty() && b.volumes().is_empty());
}

#[test]
fn capacity_listing_growing_and_accounting() {
    let (a, b, p) = two_nodes();
    let cap = p.expect("GET", "/v1/capacity", None, 200);
    assert_eq!((cap["nodes"].as_u64(), cap["reachable_nodes"].as_u64()), (Some(2), Some(2)));
    assert_eq!((cap["total_bytes"].as_u64(), cap["free_bytes"].as_u64()), (Some(165 * MIB), Some(165 * MIB)));
    assert_eq!(cap["largest_free_bytes"], 55 * MIB);
    let zone2 = cap["segments"].as_array().unwrap().iter().find(|s| s["key"] == "zone" && s["value"] == "z2").unwrap();
    assert_eq!((zone2["nodes"].as_u64(), zone2["total_bytes"].as_u64()), (Some(1), Some(110 * MIB)));
    let region = cap["segments"].as_array().unwrap().iter().find(|s| s["key"] == "region").unwrap();
    assert_eq!((region["nodes"].as_u64(), region["free_bytes"].as_u64()), (Some(2), Some(165 * MIB)));

    // Sizes round up to the node's extents; the provisioner's free space is the nodes'.
    for (i, size) in [MIB + 1, 5 * MIB, 2 * MIB].into_iter().enumerate() {
        let (status, v) =
            p.create(&format!("c{i}"), size, json!({"labels": {"tier": if i == 1 { "gold" } else { "silver" }}}));
        assert_eq!(status, 201, "{v}");
    }
    let c0 = p.expect("GET", "/v1/volumes/c0", None, 200);
    assert_eq!((c0["size_bytes"].as_u64(), c0["capacity_bytes"].as_u64()), (Some(MIB + 1), Some(2 * MIB)));
    let node_free = |n: &Node| -> u64 {
        n.call("GET", "/v1/pools", None).1.as_array().unwrap().iter().map(|p| p["free_bytes"].as_u64().unwrap()).sum()
    };
    let cap = p.expect("GET", "/v1/capacity", None, 200);
    assert_eq!(cap["free_bytes"].as_u64().unwrap(), node_free(&a) + node_free(&b));
    assert_eq!(cap["free_bytes"].as_u64().unwrap(), 165 * MIB - 9 * MIB);
    let na = p.expect("GET", "/v1/nodes/a", None, 200);
    assert_eq!(na["free_bytes"].as_u64().unwrap(), node_free(&a));

    // Listing: filters and pages.
    let page = p.expect("GET", "/v1/volumes?limit=2", None, 200);
    let names: Vec<&str> = page["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!((names, page["next_after"].as_str()), (vec!["c0", "c1"], Some("c1")));
    let page = p.expect("GET", "/v1/volumes?limit=2&after=c1", None, 200);
    assert_eq!(page["volumes"].as_array().unwrap().len(), 1);
    assert!(page["next_after"].is_null());
    let gold = p.expect("GET", "/v1/volumes?label=tier%3Dgold", None, 200);
    assert_eq!(gold["volumes"][0]["name"], "c1");
    assert_eq!(gold["volumes"].as_array().unwrap().len(), 1);
    let on_a = p.expect("GET", "/v1/volumes?node=a&state=ready", None, 200);
    assert_eq!(on_a["volumes"].as_array().unwrap().len(), a.volumes().len());

    // Growing: the node's volume grows; shrinking and growing past the pool are refused.
    let c1 = p.expect("GET", "/v1/volumes/c1", None, 200);
    let node = if node_of(&c1) == "a" { &a } else { &b };
    let grown =
        p.expect("PATCH", "/v1/volumes/c1", Some(&json!({"size_bytes": 8 * MIB, "labels": {"tier": "platinum"}})), 200);
    assert_eq!((grown["size_bytes"].as_u64(), grown["capacity_bytes"].as_u64()), (Some(8 * MIB), Some(8 * MIB)));
    assert_eq!(grown["labels"], json!({"tier": "platinum"}));
    let nv = node.volume_named(&format!("fabriq-{}", c1["id"].as_str().unwrap())).unwrap();
    assert_eq!(nv["size_bytes"], 8 * MIB);
    p.expect_error("PATCH", "/v1/volumes/c1", Some(&json!({"size_bytes": 4 * MIB})), 422, "shrink_refused");
    p.expect_error("PATCH", "/v1/volumes/c1", Some(&json!({"size_bytes": 100 * MIB})), 507, "insufficient_capacity");
    assert_eq!(p.expect("GET", "/v1/volumes/c1", None, 200)["size_bytes"], 8 * MIB, "a refused grow changes nothing");

    // A create that the request's 100 concurrent twins... aside: deleting gives the space back.
    for v in p.volumes() {
        p.expect("DELETE", &format!("/v1/volumes/{}", v["name"].as_str().unwrap()), None, 204);
    }
    let cap = p.expect("GET", "/v1/capacity", None, 200);
    assert_eq!(cap["free_bytes"], 165 * MIB);
}
