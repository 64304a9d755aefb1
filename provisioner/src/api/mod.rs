//! The provisioner's REST API (axum, utoipa, tower): nodes, volumes, host access, capacity.
//!
//! - [`routes`]: the handlers, each documented for OpenAPI (utoipa);
//! - [`error`]: every error as JSON `{"code", "message"}`, with the one mapping to HTTP;
//! - [`metrics`]: `/metrics` in the Prometheus text format;
//! - [`tls`]: HTTPS with rustls when certificate files are configured;
//! - here: the router and its middleware (request ids and logs, request metrics, time-outs,
//!   bearer tokens with scopes, the body limit), the OpenAPI document, the tokens file. What
//!   the node API shares (Swagger UI at `/docs`, the middleware, the rejections, token
//!   comparison) is `fabriq_http`'s.
//!
//! Invariants: every request but `/v1/health`, `/docs` and `/openapi.json` carries one of the
//! provisioner's tokens or is answered 401 before anything else runs; a `read` token may
//! only `GET` (anything else is 403); every request is answered within the configured
//! time-out (503 `timeout`; the operation may still finish); every response carries an
//! `x-request-id`, which the request's log lines share; the service is only called on
//! blocking threads.

pub mod error;
pub mod metrics;
pub mod routes;
pub mod tls;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use fabriq_http::auth::{self, BearerAuth};
use fabriq_http::middleware::{request_log, with_fallbacks, with_timeout};
use fabriq_http::token::{self, TOKEN_MIN_CHARS};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::Service;
use error::ApiError;
use fabriq_http::middleware::Outcome;
use metrics::HttpMetrics;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `GET` only.
    Read,
    /// Everything.
    Admin,
}

/// What every handler shares.
pub struct AppState {
    pub service: Arc<Service>,
    pub tokens: Vec<(Scope, String)>,
    pub metrics: Arc<HttpMetrics>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fabriq provisioner API",
        version = "1",
        description = "Volumes on fabriq storage nodes as one service: ask for a volume of a size, publish it to a host, \
                       and get back where to connect. The provisioner places volumes by free capacity and topology, \
                       carves them through the nodes' APIs and keeps the hosts allowed on them. Every error is JSON \
                       `{\"code\", \"message\"}`. Authentication: `Authorization: Bearer <token>`; read tokens may only GET.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::ErrorBody)),
    tags(
        (name = "volumes", description = "Volumes: created, placed and carved by the provisioner"),
        (name = "hosts", description = "Which hosts may reach a volume, and how they connect"),
        (name = "nodes", description = "The storage nodes volumes are placed on"),
        (name = "capacity", description = "What there is, and what is free"),
        (name = "provisioner", description = "Health and metrics"),
    )
)]
struct ApiDoc;

/// The routes and their OpenAPI document.
fn api_router() -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::health))
        .routes(routes!(routes::get_metrics))
        .routes(routes!(routes::list_nodes, routes::register_node))
        .routes(routes!(routes::get_node, routes::update_node, routes::remove_node))
        .routes(routes!(routes::list_volumes, routes::create_volume))
        .routes(routes!(routes::get_volume, routes::update_volume, routes::delete_volume))
        .routes(routes!(routes::list_hosts))
        .routes(routes!(routes::publish, routes::unpublish))
        .routes(routes!(routes::capacity))
        .split_for_parts()
}

/// The OpenAPI 3.1 document, as committed in `openapi/provisioner.json`.
pub fn openapi_json() -> String {
    fabriq_http::docs::document_file(&api_router().1)
}

/// Settings of the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
}

/// The whole application: routes, documentation, middleware.
pub fn app(service: Arc<Service>, tokens: Vec<(Scope, String)>, limits: Limits) -> Router {
    let (api, doc) = api_router();
    let metrics = Arc::new(HttpMetrics::default());
    let state = Arc::new(AppState { service, tokens, metrics: Arc::clone(&metrics) });
    let timeout = limits.request_timeout;
    with_fallbacks::<_, ApiError>(fabriq_http::docs::with_docs(api, &doc))
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), authenticate))
        .layer(middleware::from_fn(move |req, next| with_timeout::<ApiError>(timeout, req, next)))
        .layer(middleware::from_fn(move |req, next| {
            let metrics = Arc::clone(&metrics);
            let count = move |o: &Outcome| metrics.record(o.method.as_str(), o.route, o.status.as_u16(), o.elapsed);
            request_log::<ApiError>(count, req, next)
        }))
        .with_state(state)
}

async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if auth::is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(token) = auth::bearer_token(req.headers()) else { return ApiError::MissingToken.into_response() };
    let token = token.as_bytes();
    // Every token is compared, so timing tells nothing of which (if any) matched.
    let scope = state
        .tokens
        .iter()
        .fold(None, |found, (scope, t)| if auth::same_token(token, t.as_bytes()) { Some(*scope) } else { found });
    match scope {
        None => ApiError::WrongToken.into_response(),
        Some(Scope::Read) if req.method() != Method::GET && req.method() != Method::HEAD => {
            ApiError::Forbidden.into_response()
        }
        Some(_) => next.run(req).await,
    }
}

// ---------------------------------------------------------------------------------------------
// The tokens file.

/// Why the tokens could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}:{line}: expected `admin <token>` or `read <token>`, a token of at least {TOKEN_MIN_CHARS} printable characters", path.display())]
    Line { path: PathBuf, line: usize },
    #[error("{}: no token in the file", path.display())]
    Empty { path: PathBuf },
}

/// Reads the tokens file; when it is missing and `generate` holds, writes one with a new
/// random admin token first (mode 0600, crash-safely). Returns the tokens and whether the
/// file was generated.
pub fn load_or_create_tokens(path: &Path, generate: bool) -> Result<(Vec<(Scope, String)>, bool), TokenError> {
    let io_err = |source| TokenError::Io { path: path.to_owned(), source };
    let mut generated = false;
    if generate && !path.exists() {
        let text = format!(
            "# fabriq-provisioner API tokens: `admin <token>` or `read <token>`, one a line.\nadmin {}\n",
            token::new_token()
        );
        token::write_private(path, &text).map_err(io_err)?;
        generated = true;
    }
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    let tokens = parse_tokens(&text).map_err(|line| TokenError::Line { path: path.to_owned(), line })?;
    if tokens.is_empty() {
        return Err(TokenError::Empty { path: path.to_owned() });
    }
    Ok((tokens, generated))
}

/// Parses `scope token` lines; `Err(line number)` on the first bad one.
pub fn parse_tokens(text: &str) -> Result<Vec<(Scope, String)>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let scope = match words.next() {
            Some("admin") => Scope::Admin,
            Some("read") => Scope::Read,
            _ => return Err(i + 1),
        };
        match (words.next(), words.next()) {
            (Some(token), None) if token::is_strong(token) => {
                out.push((scope, token.to_owned()));
            }
            _ => return Err(i + 1),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_committed() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/provisioner.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = openapi_json();
        assert!(
            committed == generated,
            "openapi/provisioner.json differs from what the code generates; regenerate it with\n    \
             cargo run -p fabriq-provisioner --bin fabriq-provisioner -- --print-openapi > openapi/provisioner.json\n\
             and commit it"
        );
        let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn tokens_files_are_generated_once_private_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("api-tokens");
        let (tokens, generated) = load_or_create_tokens(&path, true).unwrap();
        assert!(generated && tokens.len() == 1 && tokens[0].0 == Scope::Admin && tokens[0].1.len() == 64);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_tokens(&path, true).unwrap(), (tokens, false));
        assert_eq!(
            parse_tokens("# c\n\nadmin 0123456789abcdef\nread  fedcba9876543210 \n"),
            Ok(vec![(Scope::Admin, "0123456789abcdef".into()), (Scope::Read, "fedcba9876543210".into())])
        );
        assert_eq!(parse_tokens("admin short"), Err(1));
        assert_eq!(parse_tokens("\nroot 0123456789abcdef"), Err(2));
        assert_eq!(parse_tokens("admin 0123456789abcdef extra"), Err(1));
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(load_or_create_tokens(&path, true), Err(TokenError::Empty { .. })));
    }
}
