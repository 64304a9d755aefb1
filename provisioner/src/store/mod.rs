//! Where the provisioner keeps what it knows: a small key-value interface ([`Store`]) with
//! revisions and all-or-nothing transactions, two implementations ([`redb`] embedded, the
//! default; [`etcd`] for several provisioners), and [`Records`], the typed layer the rest of
//! the crate uses (nodes, volumes, tombstones as JSON values under their keys).
//!
//! | key | value |
//! |---|---|
//! | `nodes/<name>` | [`NodeRecord`]: API URL, token, labels, draining |
//! | `volumes/<name>` | [`VolumeRecord`]: the desired state and the phase of its intent |
//! | `tombstones/<volume id>` | [`Tombstone`]: a deleted volume's node volume, kept for a while |
//!
//! Invariants: a transaction applies every put and delete or none, and only when each of its
//! compares holds (a compare names a key and the revision it must have, 0 for "absent");
//! every key's revision grows with each change and is never reused; a store that acts for a
//! leader refuses ([`StoreError::Fenced`]) any write once that leadership is lost, so a
//! deposed leader cannot overwrite its successor's work.

pub mod etcd;
pub mod redb;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{NodeRecord, Tombstone, VolumeRecord};

/// A value and the revision of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub revision: u64,
}

/// One key's condition in a transaction: its revision must be `revision` (0: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub revision: u64,
}

/// One change in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// Compares, then changes: all applied or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub changes: Vec<Change>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    /// `key` must be at `revision` (0: absent).
    pub fn when(mut self, key: impl Into<String>, revision: u64) -> Txn {
        self.compares.push(Compare { key: key.into(), revision });
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Txn {
        self.changes.push(Change::Put { key: key.into(), value });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.changes.push(Change::Delete { key: key.into() });
        self
    }
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store cannot be reached: {0}")]
    Unavailable(String),
    #[error("the store failed: {0}")]
    Backend(String),
    #[error("the record under {key} cannot be read: {why}")]
    Corrupt { key: String, why: String },
    #[error("this provisioner is no longer the leader; its write was refused")]
    Fenced,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The key-value interface both backends implement (see the module documentation).
pub trait Store: Send + Sync {
    /// One key.
    fn get(&self, key: &str) -> Result<Option<Entry>>;
    /// Every key starting with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Entry)>>;
    /// Applies `txn` if every compare holds: `Ok(true)` when applied, `Ok(false)` when a
    /// compare did not hold (nothing changed).
    fn commit(&self, txn: &Txn) -> Result<bool>;
    /// `redb` or `etcd`, for health and metrics.
    fn kind(&self) -> &'static str;
}

/// The typed records over a [`Store`].
#[derive(Clone)]
pub struct Records {
    store: Arc<dyn Store>,
}

/// A record and the revision it was read at (for compare-and-swap).
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub record: T,
    pub revision: u64,
}

pub const NODES: &str = "nodes/";
pub const VOLUMES: &str = "volumes/";
pub const TOMBSTONES: &str = "tombstones/";

pub fn node_key(name: &str) -> String {
    format!("{NODES}{name}")
}

pub fn volume_key(name: &str) -> String {
    format!("{VOLUMES}{name}")
}

pub fn tombstone_key(id: &str) -> String {
    format!("{TOMBSTONES}{id}")
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records serialise")
}

fn decode<T: DeserializeOwned>(key: &str, entry: Entry) -> Result<Versioned<T>> {
    let record = serde_json::from_slice(&entry.value)
        .map_err(|e| StoreError::Corrupt { key: key.to_owned(), why: e.to_string() })?;
    Ok(Versioned { record, revision: entry.revision })
}

impl Records {
    pub fn new(store: Arc<dyn Store>) -> Records {
        Records { store }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>> {
        self.store.get(key)?.map(|e| decode(key, e)).transpose()
    }

    fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<Versioned<T>>> {
        self.store.list(prefix)?.into_iter().map(|(k, e)| decode(&k, e)).collect()
    }

    pub fn node(&self, name: &str) -> Result<Option<Versioned<NodeRecord>>> {
        self.get(&node_key(name))
    }

    pub fn nodes(&self) -> Result<Vec<Versioned<NodeRecord>>> {
        self.list(NODES)
    }

    pub fn volume(&self, name: &str) -> Result<Option<Versioned<VolumeRecord>>> {
        self.get(&volume_key(name))
    }

    pub fn volumes(&self) -> Result<Vec<Versioned<VolumeRecord>>> {
        self.list(VOLUMES)
    }

    pub fn tombstones(&self) -> Result<Vec<Versioned<Tombstone>>> {
        self.list(TOMBSTONES)
    }

    /// Volumes by node name.
    pub fn volumes_by_node(&self) -> Result<BTreeMap<String, Vec<Versioned<VolumeRecord>>>> {
        let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for v in self.volumes()? {
            out.entry(v.record.placement.node.clone()).or_default().push(v);
        }
        Ok(out)
    }

    pub fn commit(&self, txn: &Txn) -> Result<bool> {
        self.store.commit(txn)
    }
}

/// The conformance checks every backend passes, on an empty store: run by redb's unit tests
/// and by `tests/etcd.rs` against a real etcd. Panics on the first difference.
#[doc(hidden)]
pub fn check_conformance(store: &dyn Store) {
    assert_eq!(store.get("a/x").unwrap(), None);
    // Create only if absent.
    assert!(store.commit(&Txn::new().when("a/x", 0).put("a/x", b"1".to_vec())).unwrap());
    assert!(!store.commit(&Txn::new().when("a/x", 0).put("a/x", b"2".to_vec())).unwrap());
    let first = store.get("a/x").unwrap().unwrap();
    assert_eq!(first.value, b"1");
    assert!(first.revision > 0);
    // Compare-and-swap on the revision.
    assert!(store.commit(&Txn::new().when("a/x", first.revision).put("a/x", b"3".to_vec())).unwrap());
    assert!(!store.commit(&Txn::new().when("a/x", first.revision).put("a/x", b"4".to_vec())).unwrap());
    let second = store.get("a/x").unwrap().unwrap();
    assert_eq!(second.value, b"3");
    assert!(second.revision > first.revision);
    // Several keys, all or nothing.
    let failing = Txn::new().when("a/x", second.revision).when("a/y", 7).put("a/z", b"z".to_vec()).delete("a/x");
    assert!(!store.commit(&failing).unwrap());
    assert_eq!(store.get("a/z").unwrap(), None);
    assert_eq!(store.get("a/x").unwrap().unwrap().value, b"3");
    let applying = Txn::new().when("a/x", second.revision).put("a/y", b"y".to_vec()).put("b/1", b"b".to_vec());
    assert!(store.commit(&applying).unwrap());
    // Listing by prefix, in order, without neighbours.
    assert!(store.commit(&Txn::new().put("a0", b"no".to_vec()).put("a/a", b"first".to_vec())).unwrap());
    let keys: Vec<String> = store.list("a/").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["a/a", "a/x", "a/y"]);
    // Deletes; a deleted key's revision compares as absent, and a new one is higher.
    let y = store.get("a/y").unwrap().unwrap();
    assert!(store.commit(&Txn::new().when("a/y", y.revision).delete("a/y")).unwrap());
    assert_eq!(store.get("a/y").unwrap(), None);
    assert!(store.commit(&Txn::new().when("a/y", 0).put("a/y", b"again".to_vec())).unwrap());
    assert!(store.get("a/y").unwrap().unwrap().revision > y.revision);
    // Deleting what is not there is no error.
    assert!(store.commit(&Txn::new().delete("a/none")).unwrap());
}
