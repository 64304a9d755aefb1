//! Who may change things. With the embedded store there is one provisioner and it always
//! leads. With etcd, provisioners elect one leader through a key attached to a lease:
//!
//! ```text
//!            grant lease, campaign: put `leader` if absent (with the lease)
//!  Follower ───────────────────────────────────────────────────────────────► Leader
//!     ▲   (someone else holds the key: poll it every ttl/3, campaign when it is gone)  │
//!     └──────────── keep-alive failed or answered "expired", or etcd unreachable ──────┘
//!                   for longer than the lease: step down, clear the fence
//! ```
//!
//! While leading, the store's fence holds the leader key's value, so every write is checked
//! inside etcd against the key ([`crate::store::etcd`]): a leader that lost its key without
//! noticing cannot write. Only the leader reconciles and serves writes; followers serve
//! reads and answer writes `421 not_leader` with the leader's URL.
//!
//! Invariants: `is_leader()` turns true only after the key is ours, and false as soon as a
//! keep-alive says the lease is gone or the lease's TTL passes without a successful one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::store::etcd::EtcdStore;

/// The leader key's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderValue {
    /// This run of the provisioner (a new one at every start).
    pub instance: String,
    /// Where its API is reached.
    pub url: String,
}

/// What is called when leadership changes.
type OnChange = Box<dyn Fn(bool) + Send + Sync>;

/// The current leadership as this provisioner knows it.
pub struct Leadership {
    leader: AtomicBool,
    leader_url: RwLock<Option<String>>,
    /// Called (with true) when this provisioner becomes the leader.
    on_change: RwLock<Option<OnChange>>,
}

impl Leadership {
    /// A provisioner that always leads (the embedded store).
    pub fn always(url: &str) -> Leadership {
        Leadership {
            leader: AtomicBool::new(true),
            leader_url: RwLock::new(Some(url.to_owned())),
            on_change: RwLock::new(None),
        }
    }

    /// A provisioner that follows until elected.
    pub fn follower() -> Leadership {
        Leadership { leader: AtomicBool::new(false), leader_url: RwLock::new(None), on_change: RwLock::new(None) }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// The leader's API URL, when known.
    pub fn leader_url(&self) -> Option<String> {
        self.leader_url.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn on_change(&self, f: impl Fn(bool) + Send + Sync + 'static) {
        *self.on_change.write().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    fn set(&self, leader: bool, url: Option<String>) {
        *self.leader_url.write().unwrap_or_else(|p| p.into_inner()) = url;
        let was = self.leader.swap(leader, Ordering::SeqCst);
        if was != leader {
            if leader {
                tracing::info!("this provisioner is now the leader");
            } else {
                tracing::warn!("this provisioner is no longer the leader");
            }
            if let Some(f) = self.on_change.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
                f(leader);
            }
        }
    }
}

/// Runs the election until `stop` is set; on stop, a leader revokes its lease so another
/// takes over at once.
pub fn run_election(
    store: Arc<EtcdStore>,
    leadership: Arc<Leadership>,
    me: LeaderValue,
    ttl: Duration,
    stop: Arc<AtomicBool>,
) {
    let ttl_s = ttl.as_secs().max(2);
    let tick = Duration::from_millis((ttl_s * 1000 / 3).max(200));
    let value = serde_json::to_vec(&me).expect("serialises");
    let mut lease: Option<u64> = None;
    let mut last_renewal = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if leadership.is_leader() {
            let renewed = lease.map(|l| store.keep_alive(l));
            match renewed {
                Some(Ok(true)) => last_renewal = Instant::now(),
                Some(Ok(false)) | None => {
                    tracing::warn!("the leader lease expired");
                    step_down(&store, &leadership, &mut lease);
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "cannot renew the leader lease");
                    if last_renewal.elapsed() >= Duration::from_secs(ttl_s) {
                        step_down(&store, &leadership, &mut lease);
                    }
                }
            }
        } else {
            match campaign(&store, &value, ttl_s, &mut lease) {
                Ok(holder) if holder == value => {
                    last_renewal = Instant::now();
                    store.set_fence(Some(value.clone()));
                    leadership.set(true, Some(me.url.clone()));
                }
                Ok(holder) => {
                    let url = serde_json::from_slice::<LeaderValue>(&holder).ok().map(|v| v.url);
                    leadership.set(false, url);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot take part in the leader election");
                    leadership.set(false, None);
                }
            }
        }
        sleep_unless_stopped(tick, &stop);
    }
    if let Some(l) = lease {
        store.set_fence(None);
        leadership.set(false, None);
        if let Err(error) = store.revoke_lease(l) {
            tracing::warn!(%error, "cannot revoke the leader lease; it expires by itself");
        }
    }
}

/// Campaigns with a lease of our own (granted once and reused while it lives).
fn campaign(store: &EtcdStore, value: &[u8], ttl_s: u64, lease: &mut Option<u64>) -> crate::store::Result<Vec<u8>> {
    let live = match *lease {
        Some(l) => store.keep_alive(l)?,
        None => false,
    };
    if !live {
        *lease = Some(store.grant_lease(ttl_s)?);
    }
    let l = lease.expect("granted above");
    match store.leader()? {
        Some(holder) => Ok(holder),
        None => store.campaign(value, l),
    }
}

fn step_down(store: &EtcdStore, leadership: &Leadership, lease: &mut Option<u64>) {
    store.set_fence(None);
    leadership.set(false, None);
    *lease = None;
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
    }
}
