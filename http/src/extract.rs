//! The handlers' helpers: an extractor's result turned into the value or a [`Rejection`] (the
//! handlers take `Result<Path<T>, PathRejection>` and the like, so that a bad request is
//! answered with the API's JSON error, not axum's plain text), and work moved to a blocking
//! thread.
//!
//! Invariants: blocking work runs in the request's tracing span, so its log lines carry the
//! request id.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use tokio::task::JoinError;

use crate::Rejection;

/// The path parameters, or why they are not valid.
pub fn path_param<T>(path: Result<Path<T>, PathRejection>) -> Result<T, Rejection> {
    path.map(|Path(v)| v).map_err(Rejection::from)
}

/// The query string's parameters, or why they are not valid.
pub fn query_params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Rejection> {
    query.map(|Query(v)| v).map_err(Rejection::from)
}

/// The JSON body, or why it is not valid.
pub fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, Rejection> {
    json.map(|Json(v)| v).map_err(Rejection::from)
}

/// Runs `work` on `shared` on a blocking thread, in the request's span. `Err` when `work`
/// panicked (a bug: the API answers 500).
pub async fn blocking<S, R, F>(shared: Arc<S>, work: F) -> Result<R, JoinError>
where
    S: Send + Sync + 'static,
    R: Send + 'static,
    F: FnOnce(&S) -> R + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| work(&shared))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocking_work_is_done_or_its_panic_reported() {
        let shared = Arc::new(40);
        assert_eq!(blocking(Arc::clone(&shared), |n| n + 2).await.unwrap(), 42);
        let panicked = blocking(shared, |_| -> u32 { panic!("a bug") }).await;
        assert!(panicked.is_err_and(|e| e.is_panic()));
    }
}
