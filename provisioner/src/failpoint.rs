//! Crash points for the crash tests: `FABRIQ_PROVISIONER_FAILPOINT=<name>[:<n>]` makes the
//! process abort (no clean-up, like SIGKILL) the `n`-th time (default: first) it passes the
//! point `<name>`. Points sit between the steps of multi-step operations
//! (`create-recorded`, `create-carved`, `create-committed`, `delete-marked`,
//! `delete-node-done`, `grow-recorded`, `publish-recorded`, `unpublish-recorded`).
//!
//! Unset (production), a point costs one load of a value read once at start.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("FABRIQ_PROVISIONER_FAILPOINT").ok()?;
            let (name, at) = match spec.split_once(':') {
                Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed { name, at, hits: AtomicU64::new(0) })
        })
        .as_ref()
}

/// Aborts the process here if this point is armed and its turn has come.
pub fn point(name: &str) {
    if let Some(armed) = armed()
        && armed.name == name
        && armed.hits.fetch_add(1, Ordering::SeqCst) + 1 == armed.at
    {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}
