//! The middleware both APIs wrap their routes in, generic over the API's error type `E` (any
//! that takes a [`Rejection`] and renders itself):
//!
//! - [`with_timeout`]: answers 503 `timeout` when the request is not answered in time;
//! - [`request_log`]: gives every request an id, runs it in a span carrying the id, logs its
//!   outcome, tells the API's observer (for metrics), and gives axum's bare 404s a JSON body;
//! - [`with_fallbacks`]: 404 `no_route` and 405 `method_not_allowed` as JSON.
//!
//! Invariants: every response carries an `x-request-id`, which the request's log lines share;
//! the id is the client's when it is 1..=64 letters, digits, `-`, `_`, `.`, else a new one.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::Rejection;

/// The header that carries a request's id (taken from the client when it sends a sane one).
pub const REQUEST_ID: &str = "x-request-id";

/// Answers [`Rejection::Timeout`] when the rest of the stack takes longer than `limit` (the
/// work it started may still finish).
pub async fn with_timeout<E>(limit: Duration, req: Request, next: Next) -> Response
where
    E: From<Rejection> + IntoResponse,
{
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => E::from(Rejection::Timeout(limit)).into_response(),
    }
}

/// An answered request, as [`request_log`] hands it to the API's observer.
#[derive(Debug)]
pub struct Outcome<'a> {
    pub method: &'a Method,
    /// The matched route's template (`/v1/volumes/{name}`), `unmatched` when none matched:
    /// never the raw path, which would make a metric's label set unbounded.
    pub route: &'a str,
    pub status: StatusCode,
    pub elapsed: Duration,
}

/// Gives every request an id (the client's `x-request-id` when it is 1..=64 letters, digits,
/// `-`, `_`, `.`), runs it in a span carrying the id, hands its [`Outcome`] to `observe`, and
/// logs it. A 404 without a body type (axum's own) becomes [`Rejection::NoRoute`].
pub async fn request_log<E>(observe: impl FnOnce(&Outcome<'_>), mut req: Request, next: Next) -> Response
where
    E: From<Rejection> + IntoResponse,
{
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let value = HeaderValue::from_str(&id).expect("checked or generated: a valid header value");
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let route = req.extensions().get::<MatchedPath>().cloned();
    let span = tracing::info_span!("api", request_id = %id);
    let start = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = start.elapsed();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    observe(&Outcome { method: &method, route, status, elapsed });
    let elapsed_ms = elapsed.as_millis() as u64;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(%method, path, status = status.as_u16(), elapsed_ms, "api request");
        } else if method == Method::GET && status.is_success() {
            // Reads that worked (the provisioner's reconciler polls every node every few
            // seconds, probes poll health): at debug, so that the log shows changes.
            tracing::debug!(%method, path, status = status.as_u16(), elapsed_ms, "api request");
        } else {
            tracing::info!(%method, path, status = status.as_u16(), elapsed_ms, "api request");
        }
    });
    if status == StatusCode::NOT_FOUND && response.headers().get(header::CONTENT_TYPE).is_none() {
        response = E::from(Rejection::NoRoute).into_response();
    }
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

/// Answers a path no route has with [`Rejection::NoRoute`], and a method a route does not
/// take with [`Rejection::Method`].
pub fn with_fallbacks<S, E>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    E: From<Rejection> + IntoResponse + Send + 'static,
{
    router
        .fallback(|| async { E::from(Rejection::NoRoute) })
        .method_not_allowed_fallback(|| async { E::from(Rejection::Method) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::tests::{TestError, status_and_code};
    use axum::body::Body;
    use axum::routing::get;
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    fn app(observed: Arc<Mutex<Vec<(String, u16)>>>) -> Router {
        let api = Router::new()
            .route("/fast/{name}", get(|| async { "fast" }))
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(3600)).await }))
            .route("/gone", get(|| async { StatusCode::NOT_FOUND }));
        with_fallbacks::<_, TestError>(api)
            .layer(axum::middleware::from_fn(|req, next| with_timeout::<TestError>(Duration::from_secs(5), req, next)))
            .layer(axum::middleware::from_fn(move |req, next| {
                let observed = Arc::clone(&observed);
                request_log::<TestError>(
                    move |o| observed.lock().unwrap().push((format!("{} {}", o.method, o.route), o.status.as_u16())),
                    req,
                    next,
                )
            }))
    }

    fn request(method: Method, path: &str, id: Option<&str>) -> Request {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(id) = id {
            req = req.header(REQUEST_ID, id);
        }
        req.body(Body::empty()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn slow_requests_time_out() {
        let response = app(Arc::default()).oneshot(request(Method::GET, "/slow", None)).await.unwrap();
        assert_eq!(status_and_code(response).await, (503, "timeout".to_owned()));
    }

    #[tokio::test]
    async fn requests_get_an_id_and_are_observed() {
        let observed = Arc::new(Mutex::new(Vec::new()));
        let app = app(Arc::clone(&observed));
        let response = app.clone().oneshot(request(Method::GET, "/fast/a", Some("abc-1_2.3"))).await.unwrap();
        assert_eq!(
            (response.status(), response.headers()[REQUEST_ID].to_str().unwrap()),
            (StatusCode::OK, "abc-1_2.3")
        );
        for bad in ["a b", "", &"x".repeat(65), "é"] {
            let response = app.clone().oneshot(request(Method::GET, "/fast/a", Some(bad))).await.unwrap();
            let id = response.headers()[REQUEST_ID].to_str().unwrap();
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{bad:?} gave {id}");
        }
        assert_eq!(observed.lock().unwrap()[0], ("GET /fast/{name}".to_owned(), 200));
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_are_json() {
        let observed = Arc::new(Mutex::new(Vec::new()));
        let app = app(Arc::clone(&observed));
        let response = app.clone().oneshot(request(Method::GET, "/nothing", None)).await.unwrap();
        assert!(response.headers().contains_key(REQUEST_ID));
        assert_eq!(status_and_code(response).await, (404, "no_route".to_owned()));
        let response = app.clone().oneshot(request(Method::DELETE, "/fast/a", None)).await.unwrap();
        assert_eq!(status_and_code(response).await, (405, "method_not_allowed".to_owned()));
        // A handler's bare 404 gets the JSON body, and the request id like every answer.
        let response = app.clone().oneshot(request(Method::GET, "/gone", Some("id-404"))).await.unwrap();
        assert_eq!(response.headers()[REQUEST_ID], "id-404");
        assert_eq!(status_and_code(response).await, (404, "no_route".to_owned()));
        let routes: Vec<String> = observed.lock().unwrap().iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(routes, ["GET unmatched", "DELETE /fast/{name}", "GET /gone"]);
    }
}
