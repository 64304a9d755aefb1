//! The embedded store: one redb file, every commit durable before it returns
//! (`Durability::Immediate`: redb's copy-on-write B-trees and a checksummed, fsynced commit,
//! so a crash leaves the last committed transaction, never a mix).
//!
//! Layout: table `records` maps each key to `revision (u64, little-endian) ++ value`; table
//! `meta` holds `revision`, the store's last revision, bumped once per applied transaction and
//! given to every key the transaction writes.
//!
//! Invariants: one write transaction at a time (redb's writer lock), so compares and changes
//! see no concurrent writer; the file is locked by this process while it is open (a second
//! provisioner on the same file is refused at start).

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Change, Entry, Result, Store, StoreError, Txn};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// The redb store (see the module documentation).
pub struct RedbStore {
    db: Database,
}

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn split(key: &str, bytes: &[u8]) -> Result<Entry> {
    if bytes.len() < 8 {
        return Err(StoreError::Corrupt { key: key.to_owned(), why: String::from("shorter than its revision") });
    }
    let (revision, value) = bytes.split_at(8);
    let revision = u64::from_le_bytes(revision.try_into().expect("eight bytes"));
    Ok(Entry { value: value.to_vec(), revision })
}

impl RedbStore {
    /// Opens the file, or creates it (and its directory).
    pub fn open(path: &Path) -> Result<RedbStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| backend(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| backend(format!("{}: {e}", path.display())))?;
        let store = RedbStore { db };
        // Both tables exist from the first open, so readers never meet a missing table.
        let mut txn = store.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        {
            txn.open_table(RECORDS).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        Ok(store)
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(RECORDS).map_err(backend)?;
        let found = table.get(key).map_err(backend)?;
        found.map(|v| split(key, v.value())).transpose()
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Entry)>> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(RECORDS).map_err(backend)?;
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_owned(), split(key, v.value())?));
        }
        Ok(out)
    }

    fn commit(&self, t: &Txn) -> Result<bool> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(backend)?;
            for c in &t.compares {
                let current = match records.get(c.key.as_str()).map_err(backend)? {
                    Some(v) => split(&c.key, v.value())?.revision,
                    None => 0,
                };
                if current != c.revision {
                    return Ok(false);
                }
            }
            let mut meta = txn.open_table(META).map_err(backend)?;
            let revision = meta.get(REVISION).map_err(backend)?.map_or(0, |v| v.value()) + 1;
            meta.insert(REVISION, revision).map_err(backend)?;
            for change in &t.changes {
                match change {
                    Change::Put { key, value } => {
                        let mut bytes = Vec::with_capacity(8 + value.len());
                        bytes.extend_from_slice(&revision.to_le_bytes());
                        bytes.extend_from_slice(value);
                        records.insert(key.as_str(), bytes.as_slice()).map_err(backend)?;
                    }
                    Change::Delete { key } => {
                        records.remove(key.as_str()).map_err(backend)?;
                    }
                }
            }
        }
        txn.commit().map_err(backend)?;
        Ok(true)
    }

    fn kind(&self) -> &'static str {
        "redb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("sub/state.redb")).unwrap();
        super::super::check_conformance(&store);
    }

    #[test]
    fn survives_reopening_with_revisions_still_growing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let revision = {
            let store = RedbStore::open(&path).unwrap();
            assert!(store.commit(&Txn::new().put("k", b"v".to_vec())).unwrap());
            store.get("k").unwrap().unwrap().revision
        };
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get("k").unwrap().unwrap(), Entry { value: b"v".to_vec(), revision });
        assert!(store.commit(&Txn::new().when("k", revision).put("k", b"w".to_vec())).unwrap());
        assert!(store.get("k").unwrap().unwrap().revision > revision);
    }
}
