//! The node REST API: what the provisioner and operators use to manage a storage node's pools,
//! volumes, host access and listeners (axum on a small tokio runtime of its own thread).
//!
//! - [`routes`]: the handlers, each documented for OpenAPI (utoipa);
//! - [`error`]: every error as JSON `{"code", "message"}`, with the one mapping to HTTP;
//! - [`metrics`]: the Prometheus text rendering of `/metrics`;
//! - here: the router, its middleware (request ids and logs, time-outs, bearer-token
//!   authentication, the body limit), the OpenAPI document, the token file, and the server's
//!   thread. What the provisioner's API shares (Swagger UI at `/docs`, the middleware, the
//!   rejections, token comparison) is `fabriq_http`'s.
//!
//! Invariants: every request but `/v1/health`, `/docs` and `/openapi.json` carries the node's
//! bearer token or is answered 401 before anything else runs; every request is answered within
//! the configured time-out (503 `timeout` otherwise; the operation may still finish); every
//! response carries an `x-request-id`, which the request's log lines share; the node manager is
//! only called on blocking threads, never on the runtime's own.

#![forbid(unsafe_code)]

pub mod error;
pub mod metrics;
pub mod routes;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use fabriq_http::auth::{self, BearerAuth};
use fabriq_http::middleware::{request_log, with_fallbacks, with_timeout};
use fabriq_http::token::{self, TOKEN_MIN_CHARS};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ApiSection;
use crate::node::Node;
use error::ApiError;

/// Blocking threads for node calls: changes are serialised by the node's lock anyway.
const BLOCKING_THREADS: usize = 4;
/// How long a stop waits for requests in flight.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What every handler shares.
pub struct AppState {
    pub node: Arc<Node>,
    token: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fabriq-target node API",
        version = "1",
        description = "Manage a fabriq storage node: pools, volumes (each exported as its own NVMe subsystem \
                       `nqn.2026-11.dev.fabriq:vol:<id>`), the hosts allowed on them, and listeners. Every \
                       error is JSON `{\"code\", \"message\"}`. Authentication: `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::ErrorBody)),
    tags(
        (name = "volumes", description = "Volumes carved from pools, each exported as one subsystem"),
        (name = "hosts", description = "Which hosts may connect to a volume"),
        (name = "pools", description = "Devices carved into volumes"),
        (name = "listeners", description = "Where hosts connect"),
        (name = "node", description = "Health and metrics"),
    )
)]
struct ApiDoc;

/// The routes and their OpenAPI document.
fn api_router() -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::health))
        .routes(routes!(routes::get_metrics))
        .routes(routes!(routes::list_pools, routes::add_pool))
        .routes(routes!(routes::get_pool, routes::remove_pool))
        .routes(routes!(routes::list_volumes, routes::create_volume))
        .routes(routes!(routes::get_volume, routes::update_volume, routes::delete_volume))
        .routes(routes!(routes::list_hosts))
        .routes(routes!(routes::allow_host, routes::revoke_host))
        .routes(routes!(routes::list_listeners, routes::add_listener))
        .routes(routes!(routes::remove_listener))
        .split_for_parts()
}

/// The OpenAPI 3.1 document of the node API, as committed in `openapi/target.json`.
pub fn openapi_json() -> String {
    fabriq_http::docs::document_file(&api_router().1)
}

/// The whole application: routes, documentation, middleware.
pub fn app(node: Arc<Node>, token: String, settings: &ApiSection) -> Router {
    let (api, doc) = api_router();
    let state = Arc::new(AppState { node, token });
    let timeout = Duration::from_millis(u64::from(settings.request_timeout_ms));
    with_fallbacks::<_, ApiError>(fabriq_http::docs::with_docs(api, &doc))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes as usize))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), authenticate))
        .layer(middleware::from_fn(move |req, next| with_timeout::<ApiError>(timeout, req, next)))
        .layer(middleware::from_fn(|req, next| request_log::<ApiError>(|_| {}, req, next)))
        .with_state(state)
}

async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if auth::is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(token) = auth::bearer_token(req.headers()) else { return ApiError::MissingToken.into_response() };
    if !auth::same_token(token.as_bytes(), state.token.as_bytes()) {
        return ApiError::WrongToken.into_response();
    }
    next.run(req).await
}

// ---------------------------------------------------------------------------------------------
// The token file.

/// Why the token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: io::Error },
    #[error("{}: the token must be at least {TOKEN_MIN_CHARS} printable characters without spaces", path.display())]
    Weak { path: std::path::PathBuf },
}

/// Reads the token from `path`; when the file is missing and `generate` holds, writes a new
/// random one there first (mode 0600, crash-safely). Returns the token and whether it was
/// generated.
pub fn load_or_create_token(path: &Path, generate: bool) -> Result<(String, bool), TokenError> {
    let io_err = |source| TokenError::Io { path: path.to_owned(), source };
    let mut generated = false;
    if generate && !path.exists() {
        token::write_private(path, &format!("{}\n", token::new_token())).map_err(io_err)?;
        generated = true;
    }
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    let token = text.trim();
    if !token::is_strong(token) {
        return Err(TokenError::Weak { path: path.to_owned() });
    }
    Ok((token.to_owned(), generated))
}

// ---------------------------------------------------------------------------------------------
// The server's thread.

/// The running API server.
pub struct Server {
    pub address: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Binds the API's address (so that an error stops the start before READY) and serves on a
/// thread of its own until [`Server::stop`].
pub fn start(node: Arc<Node>, token: String, settings: &ApiSection) -> io::Result<Server> {
    let listener = TcpListener::bind(settings.address)?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let app = app(node, token, settings);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("fabriq-api-blocking")
        .build()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new().name(String::from("fabriq-api")).spawn(move || {
        runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "the node API cannot use its socket");
                    return;
                }
            };
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(%error, "the node API stopped");
            }
        });
        // Blocking node calls still running finish on their own; the process exits after.
        runtime.shutdown_timeout(STOP_GRACE);
    })?;
    tracing::info!(%address, "node API listening");
    Ok(Server { address, shutdown: Some(tx), thread: Some(thread) })
}

impl Server {
    /// Stops accepting, lets requests in flight finish (up to a bound), and joins the thread.
    pub fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let deadline = Instant::now() + STOP_GRACE * 2;
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!("the node API did not stop in time; exiting anyway");
            }
        }
        tracing::info!("node API stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_committed() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/target.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = openapi_json();
        assert!(
            committed == generated,
            "openapi/target.json differs from what the code generates; regenerate it with\n    \
             cargo run -p fabriq-target -- --print-openapi > openapi/target.json\nand commit it"
        );
        let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn tokens_are_generated_once_private_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("api-token");
        let (token, generated) = load_or_create_token(&path, true).unwrap();
        assert!(generated && token.len() == 64);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_token(&path, true).unwrap(), (token, false));
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(load_or_create_token(&path, true), Err(TokenError::Weak { .. })));
        assert!(matches!(load_or_create_token(&dir.path().join("none"), false), Err(TokenError::Io { .. })));
    }
}
