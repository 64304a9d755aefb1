//! The node API under process crashes: a seeded loop of creates, grows and deletes while the
//! daemon is killed with SIGKILL at random moments. After each restart every acknowledged
//! change is there (acknowledged creates exist with their size, acknowledged deletes are gone,
//! acknowledged grows have their size), the pool opens cleanly, and its free space is exactly
//! its capacity less its volumes. A request cut by the kill may have happened or not: either
//! is accepted, then the model takes what the node says.
//!
//! `FABRIQ_CRASH_SEED` replays a run; every failure prints its seed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::node::{self, Node};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;
const KILLS: usize = 15;
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// What the test knows of one volume name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Acknowledged: exists with this size.
    Exists(u64),
    /// Acknowledged: does not exist.
    Gone,
    /// A request was cut: either of two sizes (0 is "gone").
    Either(u64, u64),
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn size_of(k: Known) -> u64 {
    match k {
        Known::Exists(s) => s,
        _ => 0,
    }
}

fn volumes(node: &Node) -> BTreeMap<String, (String, u64)> {
    let list = node.expect("GET", "/v1/volumes", None, 200);
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["state"], "ready", "{v}");
            (
                v["name"].as_str().unwrap().to_owned(),
                (v["id"].as_str().unwrap().to_owned(), v["size_bytes"].as_u64().unwrap()),
            )
        })
        .collect()
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    let seed: u64 = std::env::var("FABRIQ_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_F00D);
    eprintln!("FABRIQ_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let mut node = node::start(48, "");
    let mut model: BTreeMap<&str, Known> = NAMES.iter().map(|n| (*n, Known::Gone)).collect();
    let mut ops = 0usize;
    for kill in 0..KILLS {
        let pid = node.pid() as i32;
        let delay = Duration::from_millis(5 + rng.below(120));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SAFETY: kill with a valid signal on our own child's pid (reaped only after join).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let mut ids: BTreeMap<String, String> = volumes(&node).into_iter().map(|(n, (id, _))| (n, id)).collect();
        // Operations one after the other until the kill cuts one.
        loop {
            let name = NAMES[rng.below(NAMES.len() as u64) as usize];
            let known = model[name];
            let (method, path, body, next) = match (known, ids.get(name)) {
                (Known::Gone, _) => {
                    let size = (1 + rng.below(6)) * MIB;
                    ("POST", String::from("/v1/volumes"), Some(json!({"name": name, "size_bytes": size})), size)
                }
                (Known::Exists(size), Some(id)) if rng.below(2) == 0 => {
                    let grown = size + (1 + rng.below(3)) * MIB;
                    ("PATCH", format!("/v1/volumes/{id}"), Some(json!({"size_bytes": grown})), grown)
                }
                (Known::Exists(_), Some(id)) => ("DELETE", format!("/v1/volumes/{id}?force=true"), None, 0),
                other => unreachable!("seed {seed}: {name} is {other:?} with no id (resolved after every restart)"),
            };
            ops += 1;
            match node.try_call(method, &path, body.as_ref()) {
                Ok((status, value)) => {
                    let acked = match (method, status) {
                        ("POST", 201) | ("PATCH", 200) => {
                            ids.insert(name.to_owned(), value["id"].as_str().unwrap().to_owned());
                            Known::Exists(value["size_bytes"].as_u64().unwrap())
                        }
                        ("DELETE", 204) => {
                            ids.remove(name);
                            Known::Gone
                        }
                        (_, 507) => known,
                        other => panic!("seed {seed}: {method} {path}: unexpected {other:?} {value}"),
                    };
                    model.insert(name, acked);
                }
                Err(_) => {
                    model.insert(name, Known::Either(size_of(known), next));
                    break;
                }
            }
        }
        killer.join().unwrap();
        node.kill_and_restart();
        let found = volumes(&node);
        for (name, known) in model.iter_mut() {
            let have = found.get(*name).map_or(0, |(_, size)| *size);
            let ok = match *known {
                Known::Exists(size) => have == size,
                Known::Gone => have == 0,
                Known::Either(a, b) => have == a || have == b,
            };
            assert!(
                ok,
                "seed {seed}, kill {kill}: volume {name} has {have} bytes, expected {known:?}\n{}",
                node.log_text()
            );
            *known = if have == 0 { Known::Gone } else { Known::Exists(have) };
        }
        let pool = node.expect("GET", "/v1/pools/p1", None, 200);
        let used: u64 = found.values().map(|(_, s)| s).sum();
        assert_eq!(pool["used_bytes"].as_u64(), Some(used), "seed {seed}: {pool}");
        assert_eq!(pool["volumes"].as_u64(), Some(found.len() as u64), "seed {seed}: {pool}");
        let state: Value = serde_json::from_str(
            &std::fs::read_to_string(node.data("node-state.json")).unwrap_or_else(|_| String::from("{\"volumes\":{}}")),
        )
        .unwrap();
        for id in state["volumes"].as_object().unwrap().keys() {
            assert!(found.values().any(|(v, _)| v == id), "seed {seed}: state entry for a volume that is gone: {id}");
        }
    }
    eprintln!("{KILLS} kills, {ops} operations");
}
