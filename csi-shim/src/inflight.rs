//! One operation at a time per volume. The CSI specification leaves it to the plugin to
//! refuse a second call for a volume while one is running (a CO that lost its state may
//! send both): the second gets `ABORTED` and the CO retries with back-off. A [`Guard`]
//! holds the key until it is dropped, whatever path the operation leaves by.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The keys (volume ids or names) with an operation running.
#[derive(Debug, Default, Clone)]
pub struct Inflight {
    keys: Arc<Mutex<HashSet<String>>>,
}

/// Holds one key; dropping it ends the operation.
#[derive(Debug)]
pub struct Guard {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Inflight {
    /// Takes `key`, or `None` when an operation holds it already.
    pub fn try_take(&self, key: &str) -> Option<Guard> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.insert(key.to_owned()).then(|| Guard { keys: Arc::clone(&self.keys), key: key.to_owned() })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let held = keys.remove(&self.key);
        debug_assert!(held, "a guard's key is in the set until the guard goes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_key() {
        let inflight = Inflight::default();
        let a = inflight.try_take("v1").unwrap();
        assert!(inflight.try_take("v1").is_none());
        let b = inflight.try_take("v2").unwrap();
        drop(a);
        assert!(inflight.try_take("v1").is_some());
        drop(b);
    }
}
