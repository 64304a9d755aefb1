//! Crashes: the provisioner is stopped dead (SIGKILL, or an abort at a failpoint between the
//! steps of an operation) while it creates, deletes, grows and publishes volumes on real
//! storage nodes. After a restart on the same redb file the store and the nodes must agree:
//! no node volume that no record explains, no record whose node volume is missing, no intent
//! left unfinished, every node allow list equal to its record's, and every volume whose
//! create was acknowledged there (unless its delete was acknowledged after).

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;

/// A small deterministic generator (xorshift64*), seeded from the clock and printed, so a
/// failing run can be repeated with `FABRIQ_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("FABRIQ_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("crash test seed: FABRIQ_CRASH_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn two_nodes() -> (Node, Node, Provisioner) {
    let a = start_node(64, false);
    let b = start_node(64, false);
    let p = Provisioner::start(Options::default());
    p.register("a", &a, json!({}));
    p.register("b", &b, json!({}));
    (a, b, p)
}

const FAILPOINTS: [&str; 8] = [
    "create-recorded",
    "create-carved",
    "create-committed",
    "publish-recorded",
    "unpublish-recorded",
    "grow-recorded",
    "delete-marked",
    "delete-node-done",
];

#[test]
fn an_abort_at_every_step_of_every_operation_is_finished_or_rolled_back_after_a_restart() {
    let (a, b, mut p) = two_nodes();
    let nodes = [("a", &a), ("b", &b)];
    let (status, v) = p.create("keep", 2 * MIB, json!({}));
    assert_eq!(status, 201, "{v}");

    let steps: &[(&str, &str)] = &[
        ("create-recorded", "create"),
        ("create-carved", "create"),
        ("create-committed", "create"),
        ("publish-recorded", "publish"),
        ("unpublish-recorded", "unpublish"),
        ("grow-recorded", "grow"),
        ("delete-marked", "delete"),
        ("delete-node-done", "delete"),
    ];
    for (i, (point, op)) in steps.iter().enumerate() {
        p.stop();
        p.arm(point);
        p.start_again();
        let name = format!("c{i}");
        if *op != "create" {
            let (status, v) = p.create(&name, MIB, json!({}));
            assert_eq!(status, 201, "{v}");
            if *op == "unpublish" || *op == "delete" {
                p.expect("PUT", &format!("/v1/volumes/{name}/hosts/{HOST1}"), None, 201);
            }
        }
        let answer = match *op {
            "create" => {
                p.try_call_as(Some(ADMIN), "POST", "/v1/volumes", Some(&json!({"name": name, "size_bytes": MIB})))
            }
            "publish" => p.try_call_as(Some(ADMIN), "PUT", &format!("/v1/volumes/{name}/hosts/{HOST2}"), None),
            "unpublish" => p.try_call_as(Some(ADMIN), "DELETE", &format!("/v1/volumes/{name}/hosts/{HOST1}"), None),
            "grow" => p.try_call_as(
                Some(ADMIN),
                "PATCH",
                &format!("/v1/volumes/{name}"),
                Some(&json!({"size_bytes": 3 * MIB})),
            ),
            "delete" => p.try_call_as(Some(ADMIN), "DELETE", &format!("/v1/volumes/{name}?force=true"), None),
            _ => unreachable!(),
        };
        assert!(answer.is_none(), "{point}: the provisioner answered {answer:?} instead of aborting");
        assert!(p.wait_exit(Duration::from_secs(10)), "{point}: the provisioner still runs");
        p.start_again();
        let records = agreement(&mut p, &nodes);
        assert!(records.contains_key("keep"), "{point}: an acknowledged volume is gone");
        let v = records.get(&name);
        match *op {
            // Never acknowledged, but its intent was recorded first: the reconciler finishes
            // it, and the caller's retry gets that same volume.
            "create" => {
                let v = v.unwrap_or_else(|| panic!("{point}: the interrupted create was not finished"));
                let (status, again) = p.create(&name, MIB, json!({}));
                assert_eq!((status, &again["id"]), (200, &v["id"]), "{point}: {again}");
            }
            "publish" => assert_eq!(v.unwrap()["hosts"], json!([HOST2]), "{point}"),
            "unpublish" => assert_eq!(v.unwrap()["hosts"], json!([]), "{point}"),
            "grow" => assert_eq!(v.unwrap()["size_bytes"], 3 * MIB, "{point}"),
            "delete" => assert!(v.is_none(), "{point}: an interrupted delete is finished: {v:?}"),
            _ => unreachable!(),
        }
    }
}

/// What the test knows of a name from the answers it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// A create was acknowledged last.
    Present,
    /// A delete was acknowledged last.
    Absent,
    /// The last request got no answer (the provisioner died under it) or an error.
    Unknown,
}

/// One client's loop until its first exchange without an answer (the kill) or `stop`.
fn client_loop(
    url: &str,
    agent: &ureq::Agent,
    worker: usize,
    rng: &mut Rng,
    known: &Mutex<BTreeMap<String, Known>>,
    stop: &AtomicBool,
) {
    let mut next = known.lock().unwrap().len();
    while !stop.load(Ordering::SeqCst) {
        let mine: Vec<String> = known
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, k)| n.starts_with(&format!("w{worker}-")) && **k != Known::Absent)
            .map(|(n, _)| n.clone())
            .collect();
        let roll = rng.below(10);
        let (name, method, path, body, on_ok) = if mine.is_empty() || (mine.len() < 6 && roll < 4) {
            next += 1;
            let name = format!("w{worker}-{next}");
            let body = json!({"name": name, "size_bytes": MIB});
            (name, "POST", String::from("/v1/volumes"), Some(body), Known::Present)
        } else {
            let name = mine[rng.below(mine.len() as u64) as usize].clone();
            match roll {
                0..=4 => (name.clone(), "DELETE", format!("/v1/volumes/{name}?force=true"), None, Known::Absent),
                5 | 6 => (name.clone(), "PUT", format!("/v1/volumes/{name}/hosts/{HOST1}"), None, Known::Present),
                7 => (name.clone(), "DELETE", format!("/v1/volumes/{name}/hosts/{HOST1}"), None, Known::Present),
                _ => (
                    name.clone(),
                    "PATCH",
                    format!("/v1/volumes/{name}"),
                    Some(json!({"size_bytes": 2 * MIB})),
                    Known::Present,
                ),
            }
        };
        // Unknown until answered: a kill now leaves the name to be read from the records.
        let before = known.lock().unwrap().insert(name.clone(), Known::Unknown);
        match json_exchange(agent, method, &format!("{url}{path}"), Some(ADMIN), body.as_ref()) {
            Ok((status, _)) if status < 300 => {
                known.lock().unwrap().insert(name, on_ok);
            }
            Ok((status, v)) => {
                // A refusal the test did not plan (a volume still being created, say): the
                // name's fate is read from the records after the round.
                assert!(status != 400 && status != 401 && status != 404, "{method} {path}: {status} {v}");
                let _ = before;
            }
            Err(_) => return,
        }
    }
}

#[test]
fn sigkill_at_random_moments_of_create_and_delete_loops_loses_nothing_acknowledged() {
    let (a, b, mut p) = two_nodes();
    let nodes = [("a", &a), ("b", &b)];
    let mut rng = Rng::from_env_or_clock();
    let known: Mutex<BTreeMap<String, Known>> = Mutex::new(BTreeMap::new());
    let rounds = 6;
    for round in 0..rounds {
        let url = p.url();
        let agent = p.agent.clone();
        let stop = AtomicBool::new(false);
        let seeds: Vec<u64> = (0..3).map(|_| rng.next()).collect();
        let kill_after = Duration::from_millis(150 + rng.below(1200));
        std::thread::scope(|scope| {
            for (worker, seed) in seeds.into_iter().enumerate() {
                let (url, agent, known, stop) = (&url, &agent, &known, &stop);
                scope.spawn(move || client_loop(url, agent, worker, &mut Rng(seed | 1), known, stop));
            }
            std::thread::sleep(kill_after);
            // SIGKILL, in the middle of whatever the clients were doing (unless a failpoint
            // stopped it already).
            p.kill();
            stop.store(true, Ordering::SeqCst);
        });
        // Every other round the next run also aborts at a failpoint, maybe while it finishes
        // what this kill left.
        let armed = (rng.below(2) == 0)
            .then(|| format!("{}:{}", FAILPOINTS[rng.below(FAILPOINTS.len() as u64) as usize], 1 + rng.below(4)));
        if let Some(point) = &armed {
            p.arm(point);
        }
        p.start_again();
        let records = agreement(&mut p, &nodes);
        let mut known = known.lock().unwrap();
        for (name, k) in known.iter_mut() {
            match k {
                Known::Present => {
                    assert!(records.contains_key(name), "round {round}: acknowledged volume {name} is gone")
                }
                Known::Absent => assert!(!records.contains_key(name), "round {round}: deleted volume {name} is back"),
                Known::Unknown => {}
            }
            // The records say what became of a name whose request got no answer.
            *k = if records.contains_key(name) { Known::Present } else { Known::Absent };
        }
        let acknowledged = known.values().filter(|k| **k == Known::Present).count();
        eprintln!(
            "round {round}: killed after {kill_after:?}, next start armed at {armed:?}; {} names, {acknowledged} volumes",
            known.len()
        );
    }
    assert!(known.lock().unwrap().len() > rounds, "the clients got work done between the kills");
}
