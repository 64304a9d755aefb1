//! Bearer tokens: finding a request's token, comparing it in constant time, the paths anyone
//! may read, and the `bearer` security scheme every operation of the OpenAPI documents refers
//! to. Which tokens are valid, and what each allows, is the API's own business.
//!
//! Invariants: a token is compared without stopping at the first difference; the public paths
//! are liveness and the documentation only.

use axum::http::{HeaderMap, header};
use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The token of `Authorization: Bearer <token>` (or `bearer`), without surrounding white
/// space; `None` when the header is missing, not text, or not a bearer token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
    let token = given.strip_prefix("Bearer ").or_else(|| given.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
pub fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Paths anyone may read: liveness (`/v1/health` on every fabriq API) and the API's own
/// documentation ([`crate::docs`]).
pub fn is_public(path: &str) -> bool {
    path == "/v1/health" || path == "/openapi.json" || path == "/docs" || path.starts_with("/docs/")
}

/// Declares the `bearer` HTTP security scheme (`modifiers(&BearerAuth)` in `#[openapi]`).
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_are_found_and_compared() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        assert_eq!(bearer_token(&with("Bearer abc ")), Some("abc"));
        assert_eq!(bearer_token(&with("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with("Basic abc")), None);
        assert_eq!(bearer_token(&with("Bearerabc")), None);
        assert!(same_token(b"abc", b"abc") && !same_token(b"abc", b"abd") && !same_token(b"abc", b"ab"));
        assert!(same_token(b"", b""));
    }

    #[test]
    fn only_health_and_docs_are_public() {
        for path in ["/v1/health", "/openapi.json", "/docs", "/docs/", "/docs/init.js"] {
            assert!(is_public(path), "{path}");
        }
        for path in ["/", "/metrics", "/v1/volumes", "/v1/health/x", "/docsx", "/openapi.json/x"] {
            assert!(!is_public(path), "{path}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_declared() {
        let mut doc = utoipa::openapi::OpenApi::default();
        BearerAuth.modify(&mut doc);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"],
            serde_json::json!({"type": "http", "scheme": "bearer"})
        );
    }
}
