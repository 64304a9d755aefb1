//! The records the provisioner keeps (one JSON value per key, see [`crate::store`]) and the
//! checks on what callers name: volume and node names, labels, host NQNs.
//!
//! A volume's record is its desired state and, through its [`Phase`], the intent of the
//! operation that is changing it:
//!
//! ```text
//!   create ──► Creating ──(carved on the node, committed)──► Ready ──(delete)──► Deleting ──► (gone)
//!                 │                                                                ▲
//!                 └──(the node refused for good: rolled back)──────────────────────┘
//! ```
//!
//! - `Creating`: placed (node, pool and the node volume's name are fixed) but not yet known
//!   to be carved. Finished by whoever holds the volume next (a retried create, or the
//!   reconciler), or rolled back when the node refuses it for good.
//! - `Ready`: carved; `node_volume_id` is the node's id. Size and hosts in the record are
//!   what the node must have; the reconciler drives the node there.
//! - `Deleting`: being removed from its node; the record goes once the node has no such volume.
//!
//! Invariants: a node volume named `fabriq-<volume id>` exists only while a record with that
//! id exists, or for a while after it went (its [`Tombstone`] says so), because the record is
//! written before the carve and deleted after the node's delete; `size_bytes` only grows.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The prefix of every node volume the provisioner carves: `fabriq-<volume id>`.
pub const NODE_VOLUME_PREFIX: &str = "fabriq-";
/// Block sizes volumes may have.
pub const BLOCK_SIZES: [u32; 2] = [512, 4096];
/// The largest volume the provisioner accepts (a sanity bound, not a node limit): 1 PiB.
pub const MAX_VOLUME_BYTES: u64 = 1 << 50;
/// Labels per node or volume.
pub const MAX_LABELS: usize = 32;
/// Topology segments a request may list.
pub const MAX_SEGMENTS: usize = 16;
/// Hosts one volume may be published to.
pub const MAX_HOSTS: usize = 64;

/// The name a volume has on its node.
pub fn node_volume_name(id: &str) -> String {
    format!("{NODE_VOLUME_PREFIX}{id}")
}

/// The volume id in a node volume's name, if the provisioner made it.
pub fn volume_id_of(node_volume_name: &str) -> Option<&str> {
    let id = node_volume_name.strip_prefix(NODE_VOLUME_PREFIX)?;
    uuid::Uuid::parse_str(id).ok().map(|_| id)
}

/// A storage node as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// The node API's base URL (`http://192.0.2.10:8800`).
    pub url: String,
    /// The node API's bearer token (never shown by the API).
    pub token: String,
    pub labels: BTreeMap<String, String>,
    /// No new volumes are placed on a draining node.
    #[serde(default)]
    pub draining: bool,
    pub registered_unix_s: u64,
}

/// Where a volume goes: the caller's constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// Only this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only a pool of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The node must match one of these segments (every label of the segment). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(example = json!([{"zone": "a"}, {"zone": "b"}]))]
    pub topology: Vec<BTreeMap<String, String>>,
}

/// Where a volume was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub node: String,
    pub pool: String,
}

/// See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Creating,
    Ready,
    Deleting,
}

/// A volume: what callers asked for, where it lives, and what the node must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub id: String,
    pub name: String,
    /// The size the create asked for (what a retried create is compared with).
    pub requested_bytes: u64,
    /// The size the volume must have: the create's, then each grow's.
    pub size_bytes: u64,
    pub block_size: u32,
    pub labels: BTreeMap<String, String>,
    pub requirements: Requirements,
    pub placement: Placement,
    pub phase: Phase,
    /// The node's id for the volume, once carved.
    #[serde(default)]
    pub node_volume_id: Option<String>,
    /// The capacity the node gave it (the size rounded up to whole extents).
    #[serde(default)]
    pub capacity_bytes: u64,
    /// The subsystem NQN hosts connect to, once carved.
    #[serde(default)]
    pub nqn: Option<String>,
    /// Hosts (NQNs) allowed to connect.
    #[serde(default)]
    pub hosts: BTreeSet<String>,
    /// Why the volume is not as it should be on its node (it went missing), if it is not.
    #[serde(default)]
    pub degraded: Option<String>,
    pub created_unix_s: u64,
}

impl VolumeRecord {
    /// The volume's name on its node.
    pub fn node_volume_name(&self) -> String {
        node_volume_name(&self.id)
    }
}

/// A deleted volume's node volume, remembered for [`TOMBSTONE_KEEP_S`]: should a carve that
/// was in flight when the volume was deleted land on the node afterwards, the reconciler
/// knows the volume it finds is one to remove, not an unexplained orphan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub id: String,
    pub node: String,
    pub deleted_unix_s: u64,
}

/// How long a tombstone is kept: far longer than any node call can be in flight.
pub const TOMBSTONE_KEEP_S: u64 = 3600;

/// Seconds since the Unix epoch.
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// What is wrong with something a caller named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error(
        "{what} {value:?} is not valid: 1 to 63 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit"
    )]
    Name { what: &'static str, value: String },
    #[error(
        "label key {0:?} is not valid: 1 to 63 lowercase letters, digits, '-', '_', '.' or '/', starting with a letter or digit"
    )]
    LabelKey(String),
    #[error("label value {value:?} of {key:?} is not valid: at most 63 printable ASCII characters, no spaces")]
    LabelValue { key: String, value: String },
    #[error("at most {MAX_LABELS} labels")]
    TooManyLabels,
    #[error("at most {MAX_SEGMENTS} topology segments")]
    TooManySegments,
    #[error("a topology segment needs at least one label")]
    EmptySegment,
    #[error("size_bytes must be 1 to {MAX_VOLUME_BYTES}, not {0}")]
    Size(u64),
    #[error("block_size must be 512 or 4096, not {0}")]
    BlockSize(u32),
    #[error("{0:?} is not a host NQN: `nqn.` followed by a name, at most 223 bytes, printable ASCII without spaces")]
    HostNqn(String),
    #[error("url {0:?} is not valid: http://HOST:PORT or https://HOST:PORT, no path")]
    Url(String),
    #[error("the node token must be 16 or more printable characters without spaces")]
    Token,
}

pub fn check_name(what: &'static str, value: &str) -> Result<(), Invalid> {
    let ok = (1..=63).contains(&value.len())
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok { Ok(()) } else { Err(Invalid::Name { what, value: value.to_owned() }) }
}

pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if labels.len() > MAX_LABELS {
        return Err(Invalid::TooManyLabels);
    }
    for (key, value) in labels {
        let key_ok = (1..=63).contains(&key.len())
            && key.as_bytes()[0].is_ascii_alphanumeric()
            && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b));
        if !key_ok {
            return Err(Invalid::LabelKey(key.clone()));
        }
        if value.len() > 63 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid::LabelValue { key: key.clone(), value: value.clone() });
        }
    }
    Ok(())
}

pub fn check_requirements(r: &Requirements) -> Result<(), Invalid> {
    if let Some(node) = &r.node {
        check_name("node name", node)?;
    }
    if let Some(pool) = &r.pool {
        check_name("pool name", pool)?;
    }
    if r.topology.len() > MAX_SEGMENTS {
        return Err(Invalid::TooManySegments);
    }
    for segment in &r.topology {
        if segment.is_empty() {
            return Err(Invalid::EmptySegment);
        }
        check_labels(segment)?;
    }
    Ok(())
}

pub fn check_size(size_bytes: u64) -> Result<(), Invalid> {
    if (1..=MAX_VOLUME_BYTES).contains(&size_bytes) { Ok(()) } else { Err(Invalid::Size(size_bytes)) }
}

pub fn check_block_size(block_size: u32) -> Result<(), Invalid> {
    if BLOCK_SIZES.contains(&block_size) { Ok(()) } else { Err(Invalid::BlockSize(block_size)) }
}

/// The shape the NVMe base specification gives NQNs (section 4.5): `nqn.` and at most 223
/// bytes; the node checks the rest again.
pub fn check_host_nqn(nqn: &str) -> Result<(), Invalid> {
    let ok = nqn.len() <= 223 && nqn.len() > 4 && nqn.starts_with("nqn.") && nqn.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(()) } else { Err(Invalid::HostNqn(nqn.to_owned())) }
}

pub fn check_url(url: &str) -> Result<(), Invalid> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    let ok = rest.is_some_and(|r| {
        let r = r.trim_end_matches('/');
        !r.is_empty() && !r.contains('/') && r.bytes().all(|b| b.is_ascii_graphic())
    });
    if ok { Ok(()) } else { Err(Invalid::Url(url.to_owned())) }
}

pub fn check_token(token: &str) -> Result<(), Invalid> {
    if token.len() >= 16 && token.bytes().all(|b| b.is_ascii_graphic()) { Ok(()) } else { Err(Invalid::Token) }
}

/// Whether `labels` has every label of `segment`.
pub fn matches(labels: &BTreeMap<String, String>, segment: &BTreeMap<String, String>) -> bool {
    segment.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn names() {
        for good in ["a", "pvc-0b6e", "A.b_c-9", &"x".repeat(63)] {
            assert_eq!(check_name("volume name", good), Ok(()), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", &"x".repeat(64)] {
            assert!(check_name("volume name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_and_segments() {
        assert_eq!(check_labels(&labels(&[("zone", "a"), ("topology.fabriq.dev/rack", "r1")])), Ok(()));
        assert_eq!(check_labels(&labels(&[("empty", "")])), Ok(()));
        assert!(matches!(check_labels(&labels(&[("Zone", "a")])), Err(Invalid::LabelKey(_))));
        assert!(matches!(check_labels(&labels(&[("zone", "a b")])), Err(Invalid::LabelValue { .. })));
        let many: BTreeMap<String, String> = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(check_labels(&many), Err(Invalid::TooManyLabels));
        let r = Requirements { topology: vec![BTreeMap::new()], ..Requirements::default() };
        assert_eq!(check_requirements(&r), Err(Invalid::EmptySegment));
        let node = labels(&[("zone", "a"), ("rack", "1")]);
        assert!(matches(&node, &labels(&[("zone", "a")])));
        assert!(matches(&node, &BTreeMap::new()));
        assert!(!matches(&node, &labels(&[("zone", "a"), ("rack", "2")])));
    }

    #[test]
    fn sizes_nqns_urls_tokens() {
        assert!(check_size(0).is_err() && check_size(1).is_ok() && check_size(MAX_VOLUME_BYTES + 1).is_err());
        assert!(check_block_size(512).is_ok() && check_block_size(4096).is_ok() && check_block_size(1024).is_err());
        assert!(check_host_nqn("nqn.2014-08.org.nvmexpress:uuid:5b0c8f1e-2a64-4c1d-9e3f-7d2a1b6c4e90").is_ok());
        assert!(check_host_nqn("nqn.").is_err() && check_host_nqn("host1").is_err());
        assert!(check_host_nqn(&format!("nqn.{}", "x".repeat(220))).is_err());
        assert!(check_url("http://127.0.0.1:8800").is_ok() && check_url("https://node-1:8800/").is_ok());
        assert!(check_url("127.0.0.1:8800").is_err() && check_url("http://a/v1").is_err());
        assert!(check_token("0123456789abcdef").is_ok() && check_token("short").is_err());
    }

    #[test]
    fn node_volume_names_carry_the_volume_id() {
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!(volume_id_of(&node_volume_name(id)), Some(id));
        assert_eq!(volume_id_of("fabriq-not-a-uuid"), None);
        assert_eq!(volume_id_of("pvc-1"), None);
        assert!(node_volume_name(id).len() <= 64, "node names are at most 64 characters");
    }
}
