//! What fabriq's two REST APIs — the node API of `fabriq-target` and the API of
//! `fabriq-provisioner` — share of their HTTP plumbing (axum, utoipa):
//!
//! - [`docs`]: Swagger UI at `/docs` (vendored under `swagger/`, compiled in) and the OpenAPI
//!   document at `/openapi.json`;
//! - [`auth`]: the bearer token of a request, its constant-time comparison, the paths that need
//!   none, and the `bearer` security scheme of the OpenAPI documents;
//! - [`token`]: what a token file must hold, and writing a new one privately and crash-safely;
//! - [`rejection`]: the errors every API answers the same way (bad body, query or path, no such
//!   route or method, time-out) with their HTTP status and stable code, and the JSON error
//!   response;
//! - [`extract`]: the handlers' helpers: extractor results into [`Rejection`]s, work on a
//!   blocking thread;
//! - [`middleware`]: the time-out, the request id and log, the fallbacks;
//! - [`prometheus`]: the text exposition format's lines.
//!
//! What differs stays in each API: its routes, its error enum and `{code, message}` body (each
//! documents its own examples; the provisioner's adds `leader_url`), how tokens are checked
//! (one token, or scoped tokens), its token file's format, its metrics. Each API's error type
//! takes a [`Rejection`] (`From<Rejection>`) and renders it with its own body and logging; the
//! middleware here is generic over that type.
//!
//! Invariants: a rejection's status and code are decided here only, so both APIs answer the
//! same mistakes with the same `code`; nothing here reads an API's state.

#![forbid(unsafe_code)]

pub mod auth;
pub mod docs;
pub mod extract;
pub mod middleware;
pub mod prometheus;
pub mod rejection;
pub mod token;

pub use rejection::Rejection;
