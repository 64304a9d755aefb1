//! The provisioner's REST API (axum, utoipa, tower): nodes, volumes, host access, capacity.
//!
//! - [`routes`]: the handlers, each documented for OpenAPI (utoipa);
//! - [`error`]: every error as JSON `{"code", "message"}`, with the one mapping to HTTP;
//! - [`metrics`]: `/metrics` in the Prometheus text format;
//! - [`tls`]: HTTPS with rustls when certificate files are configured;
//! - here: the router and its middleware (request ids and logs, request metrics, time-outs,
//!   bearer tokens with scopes, the body limit), the OpenAPI document, Swagger UI at `/docs`
//!   (the assets vendored under `target/src/api/swagger/`, compiled in), the tokens file.
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

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::Service;
use error::ApiError;
use metrics::HttpMetrics;

/// The header that carries a request's id (taken from the client when it sends a sane one).
const REQUEST_ID: &str = "x-request-id";
/// A token shorter than this is refused: it could be guessed.
pub const TOKEN_MIN_CHARS: usize = 16;

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

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

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
    let (_, doc) = api_router();
    let mut text = doc.to_pretty_json().expect("the OpenAPI document serialises");
    text.push('\n');
    text
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
    let doc = Arc::new(doc.to_pretty_json().expect("the OpenAPI document serialises"));
    let metrics = Arc::new(HttpMetrics::default());
    let state = Arc::new(AppState { service, tokens, metrics: Arc::clone(&metrics) });
    let timeout = limits.request_timeout;
    let docs = Router::new()
        .route("/openapi.json", axum::routing::get(move || openapi_doc(Arc::clone(&doc))))
        .route("/docs", axum::routing::get(|| async { axum::response::Redirect::permanent("/docs/") }))
        .route("/docs/", axum::routing::get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route("/docs/init.js", axum::routing::get(|| asset("text/javascript", INIT_JS)))
        .route("/docs/swagger-ui.css", axum::routing::get(|| asset("text/css", SWAGGER_CSS)))
        .route("/docs/swagger-ui-bundle.js", axum::routing::get(|| asset("text/javascript", SWAGGER_JS)));
    api.merge(docs)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::Method })
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), authenticate))
        .layer(middleware::from_fn(move |req, next| with_timeout(timeout, req, next)))
        .layer(middleware::from_fn(move |req, next| request_log(Arc::clone(&metrics), req, next)))
        .with_state(state)
}

// Swagger UI: the node API's vendored copy (one copy in the repository), with a page of our own.
const INDEX_HTML: &str = include_str!("swagger/index.html");
const INIT_JS: &str = include_str!("swagger/init.js");
const SWAGGER_CSS: &str = include_str!("../../../target/src/api/swagger/swagger-ui.css");
const SWAGGER_JS: &str = include_str!("../../../target/src/api/swagger/swagger-ui-bundle.js");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

async fn openapi_doc(doc: Arc<String>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str().to_owned()).into_response()
}

/// Paths anyone may read: liveness and the API's own documentation.
fn is_public(path: &str) -> bool {
    path == "/v1/health" || path == "/openapi.json" || path == "/docs" || path.starts_with("/docs/")
}

async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(given) = given else { return ApiError::MissingToken.into_response() };
    let Some(token) = given.strip_prefix("Bearer ").or_else(|| given.strip_prefix("bearer ")) else {
        return ApiError::MissingToken.into_response();
    };
    let token = token.trim().as_bytes();
    // Every token is compared, so timing tells nothing of which (if any) matched.
    let scope = state.tokens.iter().fold(
        None,
        |found, (scope, t)| {
            if same_token(token, t.as_bytes()) { Some(*scope) } else { found }
        },
    );
    match scope {
        None => ApiError::WrongToken.into_response(),
        Some(Scope::Read) if req.method() != Method::GET && req.method() != Method::HEAD => {
            ApiError::Forbidden.into_response()
        }
        Some(_) => next.run(req).await,
    }
}

/// Compares without stopping at the first difference.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn with_timeout(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// Gives every request an id (the client's `x-request-id` when it is 1..=64 letters, digits,
/// `-`, `_`, `.`), runs it in a span carrying the id, counts it, and logs its outcome.
async fn request_log(metrics: Arc<HttpMetrics>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let value = HeaderValue::from_str(&id).expect("checked or generated: a valid header value");
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let span = tracing::info_span!("api", request_id = %id);
    let start = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = start.elapsed();
    metrics.record(method.as_str(), &route, status.as_u16(), elapsed);
    let elapsed_ms = elapsed.as_millis() as u64;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(%method, path, status = status.as_u16(), elapsed_ms, "api request");
        } else {
            tracing::info!(%method, path, status = status.as_u16(), elapsed_ms, "api request");
        }
    });
    response.headers_mut().insert(REQUEST_ID, value);
    if status == StatusCode::NOT_FOUND && response.headers().get(header::CONTENT_TYPE).is_none() {
        return ApiError::NoRoute.into_response();
    }
    response
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
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err)?;
        writeln!(
            file,
            "# fabriq-provisioner API tokens: `admin <token>` or `read <token>`, one a line.\nadmin {token}"
        )
        .map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(io_err)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
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
            (Some(token), None) if token.len() >= TOKEN_MIN_CHARS && token.bytes().all(|b| b.is_ascii_graphic()) => {
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
        assert!(same_token(b"abc", b"abc") && !same_token(b"abc", b"abd") && !same_token(b"abc", b"ab"));
    }
}
