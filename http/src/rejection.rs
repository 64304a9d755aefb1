//! The errors every fabriq API answers the same way, whatever it serves: a request axum could
//! not take apart (body, query string, path), a path or method no route has, a request that
//! took too long. [`Rejection::classify`] is the one place their HTTP status and stable code
//! are decided; each API's error type wraps a [`Rejection`] and renders it with its own
//! `{"code", "message"}` body through [`error_response`].
//!
//! Invariants: the codes here are part of both APIs' contracts (`bad_json`, `invalid_body`,
//! `body_too_large`, `unsupported_media_type`, `invalid_query`, `invalid_path`, `no_route`,
//! `method_not_allowed`, `timeout`); a 401 always carries `WWW-Authenticate: Bearer`.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A request refused before (or instead of) the API's own work.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("request body: {0}")]
    Body(#[from] JsonRejection),
    #[error("query string: {0}")]
    Query(#[from] QueryRejection),
    #[error("path: {0}")]
    PathParam(#[from] PathRejection),
    #[error("no such resource: see /docs for the API's paths")]
    NoRoute,
    #[error("this resource does not take that method: see /docs")]
    Method,
    #[error("the request took longer than {0:?}; the operation may still complete, look before retrying")]
    Timeout(Duration),
}

impl Rejection {
    /// The status and code of the rejection.
    pub fn classify(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Rejection::Body(rejection) => match rejection.status() {
                S::PAYLOAD_TOO_LARGE => (S::PAYLOAD_TOO_LARGE, "body_too_large"),
                S::UNSUPPORTED_MEDIA_TYPE => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
                _ => match rejection {
                    JsonRejection::JsonSyntaxError(_) => (S::BAD_REQUEST, "bad_json"),
                    _ => (S::BAD_REQUEST, "invalid_body"),
                },
            },
            Rejection::Query(_) => (S::BAD_REQUEST, "invalid_query"),
            Rejection::PathParam(_) => (S::BAD_REQUEST, "invalid_path"),
            Rejection::NoRoute => (S::NOT_FOUND, "no_route"),
            Rejection::Method => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Rejection::Timeout(_) => (S::SERVICE_UNAVAILABLE, "timeout"),
        }
    }
}

/// An error response: `body` as JSON with `status`, and `WWW-Authenticate: Bearer` on a 401.
pub fn error_response(status: StatusCode, body: &impl Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::extract::{DefaultBodyLimit, Path, Query};
    use axum::http::Request;
    use axum::routing::post;
    use tower::ServiceExt;

    /// An API's error type, as small as can be: the rejection and nothing else.
    #[derive(Debug)]
    pub(crate) struct TestError(pub(crate) Rejection);

    impl From<Rejection> for TestError {
        fn from(r: Rejection) -> Self {
            TestError(r)
        }
    }

    impl IntoResponse for TestError {
        fn into_response(self) -> Response {
            let (status, code) = self.0.classify();
            error_response(status, &serde_json::json!({"code": code, "message": self.0.to_string()}))
        }
    }

    /// The status and `code` of a response.
    pub(crate) async fn status_and_code(response: Response) -> (u16, String) {
        let status = response.status().as_u16();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        (status, json["code"].as_str().unwrap_or_default().to_owned())
    }

    #[derive(serde::Deserialize)]
    struct Thing {
        #[allow(dead_code)]
        n: u32,
    }

    #[derive(serde::Deserialize)]
    struct Params {
        #[allow(dead_code)]
        force: bool,
    }

    async fn handler(
        path: Result<Path<u32>, PathRejection>,
        query: Result<Query<Params>, QueryRejection>,
        json: Result<axum::Json<Thing>, JsonRejection>,
    ) -> Result<StatusCode, TestError> {
        crate::extract::path_param(path)?;
        crate::extract::query_params(query)?;
        crate::extract::body(json)?;
        Ok(StatusCode::NO_CONTENT)
    }

    #[tokio::test]
    async fn rejections_map_to_the_documented_codes() {
        let app = Router::new().route("/things/{n}", post(handler)).layer(DefaultBodyLimit::max(64));
        let call = |uri: &str, content_type: Option<&str>, body: &str| {
            let mut req = Request::post(uri);
            if let Some(ct) = content_type {
                req = req.header(header::CONTENT_TYPE, ct);
            }
            app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap())
        };
        let json = Some("application/json");
        let cases = [
            ("/things/1?force=true", json, r#"{"n": 1}"#, 204, ""),
            ("/things/x?force=true", json, r#"{"n": 1}"#, 400, "invalid_path"),
            ("/things/1?force=maybe", json, r#"{"n": 1}"#, 400, "invalid_query"),
            ("/things/1?force=true", json, r#"{"n": "#, 400, "bad_json"),
            ("/things/1?force=true", json, r#"{"m": 1}"#, 400, "invalid_body"),
            ("/things/1?force=true", None, r#"{"n": 1}"#, 415, "unsupported_media_type"),
            (
                "/things/1?force=true",
                json,
                &format!(r#"{{"n": 1, "pad": "{}"}}"#, "x".repeat(100)),
                413,
                "body_too_large",
            ),
        ];
        for (uri, content_type, body, status, code) in cases {
            let response = call(uri, content_type, body).await.unwrap();
            assert_eq!(status_and_code(response).await, (status, code.to_owned()), "{uri} {body}");
        }
    }

    #[tokio::test]
    async fn a_401_asks_for_a_bearer_token() {
        let response = error_response(StatusCode::UNAUTHORIZED, &serde_json::json!({"code": "unauthorized"}));
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let response = error_response(StatusCode::NOT_FOUND, &serde_json::json!({"code": "no_route"}));
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(Rejection::Timeout(Duration::from_secs(1)).classify(), (StatusCode::SERVICE_UNAVAILABLE, "timeout"));
    }
}
