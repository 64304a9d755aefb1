//! Where a new volume goes: a pure function of the request and what is known of the nodes,
//! so every rule is tested without a node.
//!
//! Rules, in order:
//! 1. a named node must be registered (else [`PlacementError::UnknownNode`]);
//! 2. candidates: the named node (if any), matching one of the requested topology segments
//!    (if any), not draining, and holding a pool of the requested name (if any); none left is
//!    [`PlacementError::Unsatisfiable`] (422), with the rule that removed the last one;
//! 3. of those, the reachable ones; none is [`PlacementError::Unavailable`] (503: try later);
//! 4. of their pools, those with room for the size rounded up to the pool's extent; none is
//!    [`PlacementError::InsufficientCapacity`] (507), with the largest free space seen;
//! 5. the node whose best pool has the most free space wins (the pool with the most free
//!    space on it), ties going to the node with fewer volumes, then to the first name: new
//!    volumes spread over nodes and fill them evenly.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Requirements, matches};

/// One pool as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpace {
    pub name: String,
    /// What may still be given to volumes (see [`crate::service`] for how it is reckoned).
    pub free_bytes: u64,
    pub extent_bytes: u64,
}

/// One node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub draining: bool,
    pub reachable: bool,
    pub pools: Vec<PoolSpace>,
    /// Volumes the provisioner placed on it.
    pub volumes: usize,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub node: String,
    pub pool: String,
}

/// Why no node was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("node {0:?} is not registered")]
    UnknownNode(String),
    #[error("no node satisfies the requirements: {0}")]
    Unsatisfiable(String),
    #[error("every node that satisfies the requirements is unreachable ({}); try again later", .0.join(", "))]
    Unavailable(Vec<String>),
    #[error(
        "no pool has room for {needed_bytes} bytes: the largest free space on a node that satisfies the requirements is {largest_free_bytes} bytes"
    )]
    InsufficientCapacity { needed_bytes: u64, largest_free_bytes: u64 },
}

/// Chooses a node and pool for `size_bytes` under `req`, never one of `exclude`.
pub fn place(
    size_bytes: u64,
    req: &Requirements,
    nodes: &[NodeView],
    exclude: &BTreeSet<(String, String)>,
) -> Result<Choice, PlacementError> {
    if let Some(name) = &req.node
        && !nodes.iter().any(|n| &n.name == name)
    {
        return Err(PlacementError::UnknownNode(name.clone()));
    }
    let mut left: Vec<&NodeView> =
        nodes.iter().filter(|n| req.node.as_ref().is_none_or(|want| &n.name == want)).collect();
    if left.is_empty() {
        return Err(PlacementError::Unsatisfiable(String::from("no node is registered")));
    }
    if !req.topology.is_empty() {
        left.retain(|n| req.topology.iter().any(|segment| matches(&n.labels, segment)));
        if left.is_empty() {
            return Err(PlacementError::Unsatisfiable(format!(
                "no node has the labels of any requested topology segment ({})",
                segments(&req.topology)
            )));
        }
    }
    left.retain(|n| !n.draining);
    if left.is_empty() {
        return Err(PlacementError::Unsatisfiable(String::from("every node that matches is draining")));
    }
    if let Some(pool) = &req.pool {
        left.retain(|n| n.pools.iter().any(|p| &p.name == pool));
        if left.is_empty() {
            return Err(PlacementError::Unsatisfiable(format!("no node that matches has a pool named {pool:?}")));
        }
    }
    let unreachable: Vec<String> = left.iter().filter(|n| !n.reachable).map(|n| n.name.clone()).collect();
    left.retain(|n| n.reachable);
    if left.is_empty() {
        return Err(PlacementError::Unavailable(unreachable));
    }
    let mut largest_free_bytes = 0;
    let mut best: Option<(u64, usize, &str, &str)> = None;
    for node in &left {
        let pools = node.pools.iter().filter(|p| req.pool.as_ref().is_none_or(|want| &p.name == want));
        let pools = pools.filter(|p| !exclude.contains(&(node.name.clone(), p.name.clone())));
        let mut node_best: Option<&PoolSpace> = None;
        for p in pools {
            largest_free_bytes = largest_free_bytes.max(p.free_bytes);
            let extent = p.extent_bytes.max(1);
            let needed = size_bytes.div_ceil(extent).saturating_mul(extent);
            if needed <= p.free_bytes && node_best.is_none_or(|b| p.free_bytes > b.free_bytes) {
                node_best = Some(p);
            }
        }
        let Some(pool) = node_best else { continue };
        let better = match best {
            None => true,
            Some((free, volumes, _, _)) => {
                (pool.free_bytes, std::cmp::Reverse(node.volumes)) > (free, std::cmp::Reverse(volumes))
            }
        };
        if better {
            best = Some((pool.free_bytes, node.volumes, &node.name, &pool.name));
        }
    }
    match best {
        Some((_, _, node, pool)) => Ok(Choice { node: node.to_owned(), pool: pool.to_owned() }),
        None => Err(PlacementError::InsufficientCapacity { needed_bytes: size_bytes, largest_free_bytes }),
    }
}

fn segments(topology: &[BTreeMap<String, String>]) -> String {
    let each: Vec<String> =
        topology.iter().map(|s| s.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")).collect();
    each.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn node(name: &str, zone: &str, free_mib: &[u64], volumes: usize) -> NodeView {
        NodeView {
            name: name.into(),
            labels: [("zone".to_string(), zone.to_string())].into(),
            draining: false,
            reachable: true,
            pools: free_mib
                .iter()
                .enumerate()
                .map(|(i, f)| PoolSpace { name: format!("p{i}"), free_bytes: f * MIB, extent_bytes: MIB })
                .collect(),
            volumes,
        }
    }

    fn zone(z: &str) -> BTreeMap<String, String> {
        [("zone".to_string(), z.to_string())].into()
    }

    fn pick(size: u64, req: &Requirements, nodes: &[NodeView]) -> Result<Choice, PlacementError> {
        place(size, req, nodes, &BTreeSet::new())
    }

    fn choice(node: &str, pool: &str) -> Result<Choice, PlacementError> {
        Ok(Choice { node: node.into(), pool: pool.into() })
    }

    #[test]
    fn most_free_space_wins_then_fewest_volumes_then_name() {
        let any = Requirements::default();
        let nodes = [node("a", "z1", &[10, 30], 0), node("b", "z1", &[20], 0)];
        assert_eq!(pick(MIB, &any, &nodes), choice("a", "p1"));
        let nodes = [node("a", "z1", &[20], 3), node("b", "z1", &[20], 1), node("c", "z1", &[20], 1)];
        assert_eq!(pick(MIB, &any, &nodes), choice("b", "p0"));
    }

    #[test]
    fn sizes_round_up_to_the_pool_extent() {
        let any = Requirements::default();
        let nodes = [node("a", "z1", &[2], 0)];
        assert_eq!(pick(2 * MIB, &any, &nodes), choice("a", "p0"));
        assert_eq!(
            pick(2 * MIB + 1, &any, &nodes),
            Err(PlacementError::InsufficientCapacity { needed_bytes: 2 * MIB + 1, largest_free_bytes: 2 * MIB })
        );
    }

    #[test]
    fn topology_node_and_pool_constraints() {
        let nodes = [node("a", "z1", &[50], 0), node("b", "z2", &[10], 0), node("c", "z3", &[10, 5], 0)];
        let req = Requirements { topology: vec![zone("z2"), zone("z3")], ..Requirements::default() };
        assert_eq!(pick(MIB, &req, &nodes), choice("b", "p0"));
        let req = Requirements { node: Some("c".into()), ..Requirements::default() };
        assert_eq!(pick(MIB, &req, &nodes), choice("c", "p0"));
        let req = Requirements { pool: Some("p1".into()), ..Requirements::default() };
        assert_eq!(pick(MIB, &req, &nodes), choice("c", "p1"));
        let req = Requirements { node: Some("x".into()), ..Requirements::default() };
        assert_eq!(pick(MIB, &req, &nodes), Err(PlacementError::UnknownNode("x".into())));
        let req = Requirements { topology: vec![zone("z9")], ..Requirements::default() };
        assert!(matches!(pick(MIB, &req, &nodes), Err(PlacementError::Unsatisfiable(why)) if why.contains("zone=z9")));
        let req = Requirements { node: Some("a".into()), pool: Some("p1".into()), ..Requirements::default() };
        assert!(matches!(pick(MIB, &req, &nodes), Err(PlacementError::Unsatisfiable(why)) if why.contains("p1")));
        // The named node is too small: capacity, not topology.
        let req = Requirements { node: Some("b".into()), ..Requirements::default() };
        assert!(matches!(pick(20 * MIB, &req, &nodes), Err(PlacementError::InsufficientCapacity { .. })));
    }

    #[test]
    fn draining_unreachable_and_excluded_nodes() {
        let mut nodes = [node("a", "z1", &[50], 0), node("b", "z1", &[10], 0)];
        nodes[0].draining = true;
        assert_eq!(pick(MIB, &Requirements::default(), &nodes), choice("b", "p0"));
        nodes[1].reachable = false;
        assert_eq!(pick(MIB, &Requirements::default(), &nodes), Err(PlacementError::Unavailable(vec!["b".into()])));
        nodes[1].draining = true;
        assert!(matches!(pick(MIB, &Requirements::default(), &nodes), Err(PlacementError::Unsatisfiable(_))));
        let nodes = [node("a", "z1", &[50], 0), node("b", "z1", &[10], 0)];
        let exclude = [("a".to_string(), "p0".to_string())].into();
        assert_eq!(place(MIB, &Requirements::default(), &nodes, &exclude), choice("b", "p0"));
        assert!(matches!(pick(MIB, &Requirements::default(), &[]), Err(PlacementError::Unsatisfiable(_))));
    }

    #[test]
    fn equal_nodes_take_turns() {
        // What the service does: place, then count the volume and its space on the node.
        let mut nodes = [node("a", "z1", &[100], 0), node("b", "z1", &[100], 0), node("c", "z1", &[100], 0)];
        let mut counts = BTreeMap::new();
        for _ in 0..30 {
            let c = pick(MIB, &Requirements::default(), &nodes).unwrap();
            let n = nodes.iter_mut().find(|n| n.name == c.node).unwrap();
            n.volumes += 1;
            n.pools[0].free_bytes -= MIB;
            *counts.entry(c.node).or_insert(0) += 1;
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [10, 10, 10]);
    }

    /// Against a model: every (node, pool) the request allows, computed the plain way.
    mod model {
        use proptest::prelude::*;

        use super::*;

        fn arb_node(i: usize) -> impl Strategy<Value = NodeView> {
            (
                0..3usize,
                proptest::bool::weighted(0.15),
                proptest::bool::weighted(0.85),
                // Free space in steps of 16 MiB, so that ties (broken by volumes) are common, some of
                // it 2 MiB off a 4 MiB extent, so that rounding up to extents matters.
                proptest::collection::vec(
                    (
                        0..3usize,
                        (0..5u64, prop_oneof![Just(0u64), Just(2)]).prop_map(|(f, odd)| f * 16 + odd),
                        prop_oneof![Just(1u64), Just(4u64)],
                    ),
                    1..4,
                ),
                0..5usize,
            )
                .prop_map(move |(zone, draining, reachable, pools, volumes)| {
                    let mut seen = BTreeSet::new();
                    NodeView {
                        name: format!("n{i}"),
                        labels: [("zone".to_string(), ["a", "b", "c"][zone].to_string())].into(),
                        draining,
                        reachable,
                        pools: pools
                            .into_iter()
                            .filter(|(p, _, _)| seen.insert(*p))
                            .map(|(p, free, extent)| PoolSpace {
                                name: format!("p{p}"),
                                free_bytes: free * MIB,
                                extent_bytes: extent * MIB,
                            })
                            .collect(),
                        volumes,
                    }
                })
        }

        fn arb_nodes() -> impl Strategy<Value = Vec<NodeView>> {
            (0..7usize).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
        }

        fn arb_request() -> impl Strategy<Value = (u64, Requirements)> {
            (
                1..40 * MIB,
                proptest::option::weighted(0.2, 0..7usize),
                proptest::option::weighted(0.3, 0..4usize),
                proptest::collection::btree_set(0..4usize, 0..3),
            )
                .prop_map(|(size, node, pool, zones)| {
                    let req = Requirements {
                        node: node.map(|n| format!("n{n}")),
                        pool: pool.map(|p| format!("p{p}")),
                        // Zone d is on no node.
                        topology: zones.into_iter().map(|z| zone(["a", "b", "c", "d"][z])).collect(),
                    };
                    (size, req)
                })
        }

        /// Nodes the request's labels, name, pool name and draining allow.
        fn allowed<'a>(req: &Requirements, nodes: &'a [NodeView]) -> Vec<&'a NodeView> {
            nodes
                .iter()
                .filter(|n| req.node.as_ref().is_none_or(|w| &n.name == w))
                .filter(|n| req.topology.is_empty() || req.topology.iter().any(|s| matches(&n.labels, s)))
                .filter(|n| !n.draining)
                .filter(|n| req.pool.as_ref().is_none_or(|w| n.pools.iter().any(|p| &p.name == w)))
                .collect()
        }

        /// (node, pool, free, volumes) that can take the size.
        fn candidates(size: u64, req: &Requirements, nodes: &[NodeView]) -> Vec<(String, String, u64, usize)> {
            let mut out = Vec::new();
            for n in allowed(req, nodes).into_iter().filter(|n| n.reachable) {
                for p in n.pools.iter().filter(|p| req.pool.as_ref().is_none_or(|w| &p.name == w)) {
                    if size.div_ceil(p.extent_bytes) * p.extent_bytes <= p.free_bytes {
                        out.push((n.name.clone(), p.name.clone(), p.free_bytes, n.volumes));
                    }
                }
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]
            #[test]
            fn placement_agrees_with_the_model(nodes in arb_nodes(), (size, req) in arb_request()) {
                let got = place(size, &req, &nodes, &BTreeSet::new());
                let fits = candidates(size, &req, &nodes);
                match got {
                    Ok(choice) => {
                        let chosen = fits.iter().find(|c| c.0 == choice.node && c.1 == choice.pool);
                        prop_assert!(chosen.is_some(), "{choice:?} is not allowed: {fits:?}");
                        let chosen = chosen.unwrap();
                        let most = fits.iter().map(|c| c.2).max().unwrap();
                        prop_assert_eq!(chosen.2, most, "the most free space wins");
                        let fewest = fits.iter().filter(|c| c.2 == most).map(|c| c.3).min().unwrap();
                        prop_assert_eq!(chosen.3, fewest, "ties go to fewer volumes");
                    }
                    Err(e) => {
                        prop_assert!(fits.is_empty(), "{e} although {fits:?} fit");
                        let allowed = allowed(&req, &nodes);
                        match e {
                            PlacementError::UnknownNode(_) => {
                                prop_assert!(!nodes.iter().any(|n| Some(&n.name) == req.node.as_ref()))
                            }
                            PlacementError::Unsatisfiable(_) => prop_assert!(allowed.is_empty()),
                            PlacementError::Unavailable(names) => {
                                prop_assert!(!allowed.is_empty() && allowed.iter().all(|n| !n.reachable));
                                prop_assert_eq!(names.len(), allowed.len());
                            }
                            PlacementError::InsufficientCapacity { needed_bytes, .. } => {
                                prop_assert!(allowed.iter().any(|n| n.reachable));
                                prop_assert_eq!(needed_bytes, size);
                            }
                        }
                    }
                }
            }
        }
    }
}
