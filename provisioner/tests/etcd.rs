//! Several provisioners on one etcd (Debian's `etcd-server`, started by the test on loopback
//! ports in a temporary directory): one leads, the other serves reads and answers writes
//! `421 not_leader` naming the leader; a leader killed with SIGKILL is replaced once its lease
//! runs out; a leader frozen past its lease cannot write when it wakes (fenced); nothing
//! acknowledged is lost.
//!
//! etcd must be installed (`scripts/test` installs it as root): without it these tests fail
//! and say so, they never pass silently.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const TTL_S: u64 = 2;

fn etcd_options(etcd: &Etcd) -> Options {
    Options { etcd: Some(etcd.url.clone()), lease_ttl_s: TTL_S, ..Options::default() }
}

fn health(p: &Provisioner) -> Option<Value> {
    p.try_call_as(None, "GET", "/v1/health", None).filter(|(s, _)| *s == 200).map(|(_, v)| v)
}

fn is_leader(p: &Provisioner) -> bool {
    health(p).is_some_and(|h| h["leader"] == true)
}

/// Waits until exactly one of `ps` leads and the others name it; returns its index.
fn one_leader(ps: &[&Provisioner], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let healths: Vec<Option<Value>> = ps.iter().map(|p| health(p)).collect();
        let leaders: Vec<usize> =
            (0..ps.len()).filter(|&i| healths[i].as_ref().is_some_and(|h| h["leader"] == true)).collect();
        if let [l] = leaders[..] {
            let url = ps[l].url();
            let named = (0..ps.len())
                .filter(|&i| i != l)
                .all(|i| healths[i].as_ref().is_some_and(|h| h["leader_url"].as_str() == Some(url.as_str())));
            if named {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "no single leader within {limit:?}: {healths:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// etcd, storage nodes `a` and `b`, and two provisioners on that etcd, the nodes registered
/// with `labels` through the one that leads, whose index comes last (the follower's is
/// `1 - l`). Bound in this order, they are dropped provisioners first, etcd last.
fn leader_and_two_nodes(labels: [Value; 2]) -> (Etcd, Node, Node, [Provisioner; 2], usize) {
    let etcd = Etcd::start();
    let a = start_node(64, false);
    let b = start_node(64, false);
    let ps = [Provisioner::start(etcd_options(&etcd)), Provisioner::start(etcd_options(&etcd))];
    let l = one_leader(&[&ps[0], &ps[1]], Duration::from_secs(30));
    let [la, lb] = labels;
    ps[l].register("a", &a, la);
    ps[l].register("b", &b, lb);
    (etcd, a, b, ps, l)
}

fn names(p: &Provisioner) -> Vec<String> {
    p.volumes().iter().map(|v| v["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn the_follower_takes_over_from_a_killed_leader_and_nothing_acknowledged_is_lost() {
    let (_etcd, a, b, mut ps, l) = leader_and_two_nodes([json!({"zone": "z1"}), json!({"zone": "z2"})]);
    let f = 1 - l;
    assert_eq!(health(&ps[l]).unwrap()["store"], "etcd");

    let mut acknowledged = Vec::new();
    for i in 0..4 {
        let (status, v) = ps[l].create(&format!("v{i}"), MIB, json!({}));
        assert_eq!(status, 201, "{v}");
        acknowledged.push(format!("v{i}"));
    }
    ps[l].expect("PUT", &format!("/v1/volumes/v0/hosts/{HOST1}"), None, 201);

    // The follower reads the same records, and answers writes with the leader's URL.
    assert_eq!(names(&ps[f]), acknowledged);
    assert_eq!(ps[f].expect("GET", "/v1/nodes", None, 200).as_array().unwrap().len(), 2);
    for (method, path, body) in [
        ("POST", String::from("/v1/volumes"), Some(json!({"name": "nope", "size_bytes": MIB}))),
        ("DELETE", String::from("/v1/volumes/v1"), None),
        ("PUT", format!("/v1/volumes/v1/hosts/{HOST2}"), None),
        ("PATCH", String::from("/v1/nodes/a"), Some(json!({"draining": true}))),
    ] {
        let v = ps[f].expect_error(method, &path, body.as_ref(), 421, "not_leader");
        assert_eq!(v["leader_url"].as_str(), Some(ps[l].url().as_str()), "{v}");
        assert!(v["message"].as_str().unwrap().contains(&ps[l].url()), "{v}");
    }
    // fabriqctl follows the answer to the leader.
    let out = std::process::Command::new(fabriqctl_bin())
        .args(["--url", &ps[f].url(), "--token", ADMIN, "--json", "volume", "create", "via-ctl", "--size", "1MiB"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    acknowledged.push(String::from("via-ctl"));

    // SIGKILL the leader: the follower takes over once the lease has run out.
    ps[l].kill();
    let f_alone = one_leader(&[&ps[f]], Duration::from_secs(TTL_S * 5 + 10));
    assert_eq!(f_alone, 0);
    let (status, v) = ps[f].create("after", MIB, json!({}));
    assert_eq!(status, 201, "{v}");
    acknowledged.push(String::from("after"));
    let mut now = names(&ps[f]);
    now.sort();
    acknowledged.sort();
    assert_eq!(now, acknowledged, "every acknowledged volume is there after the takeover");
    // The new leader reconciles: a host allowed on the node behind its back is revoked.
    let v0 = ps[f].expect("GET", "/v1/volumes/v0", None, 200);
    let node = if v0["node"] == "a" { &a } else { &b };
    let nv = node.volume_named(&format!("fabriq-{}", v0["id"].as_str().unwrap())).unwrap();
    node.call("PUT", &format!("/v1/volumes/{}/hosts/{HOST2}", nv["id"].as_str().unwrap()), None);
    ps[f].eventually(Duration::from_secs(20), "the new leader drives the node back", || {
        node.volume_named(nv["name"].as_str().unwrap()).unwrap()["access"]["hosts"] == json!([HOST1])
    });

    // The old leader comes back as a follower of the new one.
    ps[l].start_again();
    let leader = one_leader(&[&ps[0], &ps[1]], Duration::from_secs(30));
    assert_eq!(leader, f, "the running leader keeps its place");
    let v = ps[l].expect_error("DELETE", "/v1/volumes/after", None, 421, "not_leader");
    assert_eq!(v["leader_url"].as_str(), Some(ps[f].url().as_str()), "{v}");
    assert_eq!(names(&ps[l]).len(), acknowledged.len());
}

#[test]
fn a_leader_frozen_past_its_lease_is_fenced_when_it_wakes() {
    let etcd = Etcd::start();
    let a = start_node(64, false);
    let ps = [Provisioner::start(etcd_options(&etcd)), Provisioner::start(etcd_options(&etcd))];
    let l = one_leader(&[&ps[0], &ps[1]], Duration::from_secs(30));
    let f = 1 - l;
    ps[l].register("a", &a, json!({}));
    let (status, v) = ps[l].create("before", MIB, json!({}));
    assert_eq!(status, 201, "{v}");

    // SIGSTOP: the leader still believes it leads, but its lease runs out meanwhile.
    ps[l].signal("STOP");
    let deadline = Instant::now() + Duration::from_secs(TTL_S * 5 + 10);
    while !is_leader(&ps[f]) {
        assert!(Instant::now() < deadline, "the follower did not take over:\n{}", ps[f].log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, v) = ps[f].create("by-new-leader", MIB, json!({}));
    assert_eq!(status, 201, "{v}");
    ps[l].signal("CONT");
    // Whatever the woken leader believes for a moment, its writes cannot land.
    for i in 0..20 {
        let (status, v) =
            ps[l].call("POST", "/v1/volumes", Some(&json!({"name": format!("stale-{i}"), "size_bytes": MIB})));
        assert_eq!((status, v["code"].as_str()), (421, Some("not_leader")), "{v}");
    }
    one_leader(&[&ps[0], &ps[1]], Duration::from_secs(30));
    let mut all = names(&ps[f]);
    all.sort();
    assert_eq!(all, ["before", "by-new-leader"]);
    assert_eq!(a.volumes().len(), 2, "no stale write reached the node");
}

/// A client creating volumes the way the CSI driver does (retrying each name until it is
/// acknowledged, following `421` to the leader) while the leader is SIGKILLed: every name it
/// was told exists is there afterwards, once, and the records and the nodes agree.
#[test]
fn creates_retried_across_a_failover_lose_nothing_and_leave_no_orphans() {
    let (_etcd, a, b, mut ps, l) = leader_and_two_nodes([json!({}), json!({})]);
    let f = 1 - l;
    let urls = [ps[l].url(), ps[f].url()];
    let agent = ps[l].agent.clone();
    let killed = std::sync::atomic::AtomicBool::new(false);
    let acknowledged: Vec<(String, String)> = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut acknowledged = Vec::new();
            let mut at = 0;
            let mut after_kill = 0;
            for i in 0.. {
                let name = format!("w{i}");
                let body = json!({"name": name, "size_bytes": MIB});
                let deadline = Instant::now() + Duration::from_secs(60);
                // Retry this name until acknowledged: whichever provisioner answers.
                loop {
                    assert!(Instant::now() < deadline, "{name} never acknowledged");
                    match json_exchange(&agent, "POST", &format!("{}/v1/volumes", urls[at]), Some(ADMIN), Some(&body)) {
                        Ok((200 | 201, v)) => {
                            acknowledged.push((name.clone(), v["id"].as_str().unwrap().to_owned()));
                            break;
                        }
                        Ok((421, v)) => {
                            if let Some(i) = urls.iter().position(|u| Some(u.as_str()) == v["leader_url"].as_str()) {
                                at = i;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        // The leader died under the call, or a node call was cut: again.
                        _ => {
                            at = 1 - at;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                if killed.load(std::sync::atomic::Ordering::SeqCst) {
                    after_kill += 1;
                    if after_kill == 5 {
                        break;
                    }
                }
            }
            acknowledged
        });
        std::thread::sleep(Duration::from_millis(700));
        ps[l].kill();
        killed.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap()
    });
    one_leader(&[&ps[f]], Duration::from_secs(30));
    let records = agreement(&mut ps[f], &[("a", &a), ("b", &b)]);
    assert!(acknowledged.len() > 5, "the writer got work done before the kill: {acknowledged:?}");
    for (name, id) in &acknowledged {
        let v = records.get(name).unwrap_or_else(|| panic!("acknowledged volume {name} is gone"));
        assert_eq!(v["id"].as_str(), Some(id.as_str()), "{name} is the volume that was acknowledged");
    }
    assert_eq!(records.len(), acknowledged.len(), "no volume nobody asked for");
}

/// The etcd store passes the same conformance checks as redb (compare-and-swap on revisions,
/// all-or-nothing transactions, prefix lists), with its writes fenced by the leader key: once
/// another holds the key, a write is refused as fenced.
#[test]
fn the_etcd_store_conforms_and_is_fenced() {
    use fabriq_provisioner::store::etcd::EtcdStore;
    use fabriq_provisioner::store::{Store, StoreError, Txn, check_conformance};
    let etcd = Etcd::start();
    let store = EtcdStore::new(vec![etcd.url.clone()], "/conformance/", Duration::from_secs(5));
    assert!(matches!(store.commit(&Txn::new().put("k", b"v".to_vec())), Err(StoreError::Fenced)), "no fence, no write");
    let lease = store.grant_lease(5).unwrap();
    assert_eq!(store.campaign(b"me", lease).unwrap(), b"me");
    store.set_fence(Some(b"me".to_vec()));
    check_conformance(&store);
    assert_eq!(store.kind(), "etcd");
    // Another holder takes the key (the lease is gone): the next write is fenced.
    store.revoke_lease(lease).unwrap();
    let other = store.grant_lease(5).unwrap();
    assert_eq!(store.campaign(b"someone else", other).unwrap(), b"someone else");
    assert!(matches!(store.commit(&Txn::new().put("a/x", b"late".to_vec())), Err(StoreError::Fenced)));
    assert!(matches!(store.commit(&Txn::new().put("a/x", b"late".to_vec())), Err(StoreError::Fenced)), "and stays so");
    assert_ne!(store.get("a/x").unwrap().unwrap().value, b"late");
}
