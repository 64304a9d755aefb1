//! Per-name locks: one operation at a time on a volume (or node), across the API's threads
//! and the reconciler, while the operation's node calls are in flight. Waiting is for one
//! name only; other names go on.
//!
//! Invariants: a name is in the held set exactly while one [`NameGuard`] for it lives; the
//! guard's drop removes it and wakes the waiters (whichever wins takes it next).

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The set of held names (see the module documentation).
#[derive(Default)]
pub struct NameLocks {
    held: Mutex<BTreeSet<String>>,
    released: Condvar,
}

/// Holds a name until dropped.
pub struct NameGuard<'a> {
    locks: &'a NameLocks,
    name: String,
}

impl NameLocks {
    fn set(&self) -> MutexGuard<'_, BTreeSet<String>> {
        // Only inserts and removes happen under this lock: a panic cannot leave it half-changed.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `name`, then holds it.
    pub fn lock(&self, name: &str) -> NameGuard<'_> {
        let mut held = self.set();
        while held.contains(name) {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.insert(name.to_owned());
        NameGuard { locks: self, name: name.to_owned() }
    }

    /// Holds `name` if no one does.
    pub fn try_lock(&self, name: &str) -> Option<NameGuard<'_>> {
        let mut held = self.set();
        if held.contains(name) {
            return None;
        }
        held.insert(name.to_owned());
        Some(NameGuard { locks: self, name: name.to_owned() })
    }
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        self.locks.set().remove(&self.name);
        self.locks.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_holder_per_name() {
        let locks = NameLocks::default();
        let a = locks.lock("a");
        assert!(locks.try_lock("a").is_none());
        assert!(locks.try_lock("b").is_some());
        drop(a);
        assert!(locks.try_lock("a").is_some());
    }

    #[test]
    fn waiters_take_turns() {
        let locks = Arc::new(NameLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (locks, inside) = (Arc::clone(&locks), Arc::clone(&inside));
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _g = locks.lock("v");
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
