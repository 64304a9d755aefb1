//! The `fabriq-provisioner` process: opens the store, binds the API, starts the election (etcd)
//! and the reconciler, tells systemd it is ready, and stops cleanly on SIGTERM or SIGINT.
//!
//! Threads: the API's tokio runtime (one thread, plus blocking threads for the service's
//! calls), the reconciler, and with etcd the election.
//!
//! Invariants: READY=1 is sent only once the API's socket is bound and the store answered;
//! a stop lets requests in flight finish (bounded), stops the reconciler between passes, and
//! gives up leadership (revoking the lease) so that another provisioner takes over at once.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::api::{self, Limits};
use crate::config::{Backend, Config};
use crate::leader::{self, LeaderValue, Leadership};
use crate::notify::Notifier;
use crate::service::Service;
use crate::store::etcd::EtcdStore;
use crate::store::redb::RedbStore;
use crate::store::{Records, Store};

/// Blocking threads for the service's calls: each waits on a node or the store.
const BLOCKING_THREADS: usize = 128;
/// How long a stop waits for requests in flight.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tokens(#[from] api::TokenError),
    #[error(transparent)]
    Tls(#[from] api::tls::TlsError),
    #[error("cannot bind the API address {address}: {source}")]
    Bind { address: std::net::SocketAddr, source: std::io::Error },
    #[error("the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), StartError> {
    let generate = config.api.tokens_file.is_none();
    let (tokens, generated) = api::load_or_create_tokens(&config.tokens_file(), generate)?;
    if generated {
        tracing::info!(path = %config.tokens_file().display(), "generated an admin API token");
    }
    let tls = match (&config.api.tls_cert_file, &config.api.tls_key_file) {
        (Some(cert), Some(key)) => Some(api::tls::server_config(cert, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(config.api.address)
        .map_err(|source| StartError::Bind { address: config.api.address, source })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let url = config.advertise_url(bound);

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let (store, leadership): (Arc<dyn Store>, Arc<Leadership>) = match config.store.backend {
        Backend::Redb => {
            let store = RedbStore::open(&config.redb_path())?;
            tracing::info!(path = %config.redb_path().display(), "store: redb");
            (Arc::new(store), Arc::new(Leadership::always(&url)))
        }
        Backend::Etcd => {
            let etcd =
                Arc::new(EtcdStore::new(config.store.endpoints.clone(), &config.store.prefix, config.node_timeout()));
            // The store must answer before the daemon says it is ready.
            etcd.list("nodes/")?;
            tracing::info!(endpoints = ?config.store.endpoints, prefix = %config.store.prefix, "store: etcd");
            let leadership = Arc::new(Leadership::follower());
            let me = LeaderValue { instance: uuid::Uuid::new_v4().to_string(), url: url.clone() };
            let ttl = Duration::from_secs(config.store.lease_ttl_s);
            let (e, l, s) = (Arc::clone(&etcd), Arc::clone(&leadership), Arc::clone(&stop));
            threads.push(
                std::thread::Builder::new()
                    .name(String::from("fabriq-election"))
                    .spawn(move || leader::run_election(e, l, me, ttl, s))?,
            );
            (etcd, leadership)
        }
    };
    let service = Arc::new(Service::new(Records::new(store), Arc::clone(&leadership), config.node_timeout()));
    {
        let weak = Arc::downgrade(&service);
        leadership.on_change(move |leading| {
            if leading && let Some(s) = weak.upgrade() {
                s.kick.kick();
            }
        });
    }
    let (s, st, interval) = (Arc::clone(&service), Arc::clone(&stop), config.reconcile_interval());
    threads.push(
        std::thread::Builder::new()
            .name(String::from("fabriq-reconcile"))
            .spawn(move || crate::reconcile::run(s, interval, st))?,
    );

    let limits = Limits {
        body_limit_bytes: config.api.body_limit_bytes as usize,
        request_timeout: Duration::from_millis(config.api.request_timeout_ms),
    };
    let app = api::app(Arc::clone(&service), tokens, limits);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("fabriq-provisioner")
        .build()?;
    let notifier = Notifier::from_env().map(Arc::new);
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(address = %bound, %url, tls = tls.is_some(), "provisioner API listening");
        if let Some(n) = &notifier
            && let Err(error) = n.ready(&format!("serving on {url}"))
        {
            tracing::warn!(%error, "cannot tell systemd the provisioner is ready");
        }
        if let (Some(n), Some(every)) = (notifier.clone(), Notifier::watchdog_interval()) {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every / 2);
                loop {
                    tick.tick().await;
                    if let Err(error) = n.watchdog() {
                        tracing::warn!(%error, "cannot ping systemd's watchdog");
                    }
                }
            });
        }
        let stopping = notifier.clone();
        let shutdown = async move {
            shutdown_signal().await;
            tracing::info!("stopping");
            if let Some(n) = &stopping {
                let _ = n.stopping();
            }
        };
        match tls {
            Some(config) => {
                let listener = api::tls::TlsListener::new(listener, config)?;
                axum::serve(listener, app).with_graceful_shutdown(shutdown).await
            }
            None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
        }
    });
    runtime.shutdown_timeout(STOP_GRACE);
    stop.store(true, Ordering::SeqCst);
    service.kick.kick();
    for t in threads {
        let _ = t.join();
    }
    tracing::info!("provisioner stopped");
    served.map_err(StartError::Io)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGINT");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
