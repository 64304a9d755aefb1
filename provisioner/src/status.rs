//! What the provisioner last saw of each node: reachable or not, its pools, volumes and
//! listeners, and the node volumes nothing explains (orphans). Kept in memory by every
//! provisioner (leader or not), refreshed by the reconciler's passes and after each change
//! the provisioner makes on a node; never stored: it is observation, not desired state.
//!
//! Invariants: `observation` is the last *successful* look (kept while the node is
//! unreachable, so capacity and paths remain known); `reachable` says whether the last look
//! succeeded.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::nodeapi::Observation;

/// One node's last look.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// The last look succeeded; `None`: no look yet.
    pub reachable: Option<bool>,
    pub last_error: Option<String>,
    pub last_seen_unix_s: Option<u64>,
    pub observation: Option<Observation>,
    /// Names of node volumes that look like the provisioner's but that no record explains.
    pub orphans: Vec<String>,
}

/// Every node's last look.
#[derive(Default)]
pub struct StatusCache {
    nodes: RwLock<BTreeMap<String, NodeStatus>>,
}

impl StatusCache {
    pub fn get(&self, node: &str) -> NodeStatus {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).get(node).cloned().unwrap_or_default()
    }

    pub fn all(&self) -> BTreeMap<String, NodeStatus> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn seen(&self, node: &str, observation: Observation) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let s = nodes.entry(node.to_owned()).or_default();
        s.reachable = Some(true);
        s.last_error = None;
        s.last_seen_unix_s = Some(crate::model::now_unix_s());
        s.observation = Some(observation);
    }

    pub fn unreachable(&self, node: &str, why: String) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let s = nodes.entry(node.to_owned()).or_default();
        if s.reachable != Some(false) {
            tracing::warn!(node, error = %why, "node unreachable");
        }
        s.reachable = Some(false);
        s.last_error = Some(why);
    }

    pub fn set_orphans(&self, node: &str, orphans: Vec<String>) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.entry(node.to_owned()).or_default().orphans = orphans;
    }

    pub fn forget(&self, node: &str) {
        self.nodes.write().unwrap_or_else(|p| p.into_inner()).remove(node);
    }
}
