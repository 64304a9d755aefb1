//! Every error the provisioner's API answers with, and the one place where each becomes an
//! HTTP status and a stable machine-readable code ([`classify`]; the rejections both APIs
//! share are classified by `fabriq_http`). The body is always
//! `{"code": "...", "message": "..."}` (plus `leader_url` on `421 not_leader`): the code for
//! programs, the message for people.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fabriq_http::Rejection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::placement::PlacementError;
use crate::service::Error;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `volume_not_found`, `insufficient_capacity`, `not_leader`, ...
    #[schema(example = "insufficient_capacity")]
    pub code: String,
    /// What happened and what to do about it.
    #[schema(
        example = "no pool has room for 10737418240 bytes: the largest free space on a node that satisfies the requirements is 4294967296 bytes"
    )]
    pub message: String,
    /// On `421 not_leader`: where to send the request, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_url: Option<String>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] Error),
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    #[error("the bearer token is not one of this provisioner's")]
    WrongToken,
    #[error("this token may only read; changes need an admin token")]
    Forbidden,
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("the request failed inside the provisioner (a bug; see its log)")]
    Internal,
}

/// The status and code of an error: the only mapping from errors to HTTP.
pub fn classify(error: &ApiError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match error {
        ApiError::Service(e) => service_status(e),
        ApiError::MissingToken | ApiError::WrongToken => (S::UNAUTHORIZED, "unauthorized"),
        ApiError::Forbidden => (S::FORBIDDEN, "forbidden"),
        ApiError::Rejected(rejection) => rejection.classify(),
        ApiError::Internal => (S::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn service_status(error: &Error) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match error {
        Error::Invalid(_) => (S::BAD_REQUEST, "invalid_argument"),
        Error::VolumeNotFound(_) => (S::NOT_FOUND, "volume_not_found"),
        Error::NodeNotFound(_) => (S::NOT_FOUND, "node_not_found"),
        Error::VolumeConflict { .. } => (S::CONFLICT, "volume_conflict"),
        Error::VolumeBusy { .. } => (S::CONFLICT, "volume_busy"),
        Error::VolumeDegraded { .. } => (S::CONFLICT, "volume_degraded"),
        Error::VolumePublished { .. } => (S::CONFLICT, "volume_published"),
        Error::ShrinkRefused { .. } => (S::UNPROCESSABLE_ENTITY, "shrink_refused"),
        Error::TooManyHosts { .. } => (S::UNPROCESSABLE_ENTITY, "too_many_hosts"),
        Error::NodeConflict { .. } => (S::CONFLICT, "node_conflict"),
        Error::UrlTaken { .. } => (S::CONFLICT, "url_taken"),
        Error::NodeHasVolumes { .. } => (S::CONFLICT, "node_has_volumes"),
        Error::NodeUnreachableAtRegistration { .. } => (S::UNPROCESSABLE_ENTITY, "node_unreachable"),
        Error::NodeTokenRejected { .. } => (S::UNPROCESSABLE_ENTITY, "node_token_rejected"),
        Error::Placement(p) => match p {
            PlacementError::UnknownNode(_) => (S::UNPROCESSABLE_ENTITY, "unknown_node"),
            PlacementError::Unsatisfiable(_) => (S::UNPROCESSABLE_ENTITY, "unsatisfiable_topology"),
            PlacementError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "nodes_unavailable"),
            PlacementError::InsufficientCapacity { .. } => (S::INSUFFICIENT_STORAGE, "insufficient_capacity"),
        },
        Error::NoRoomToGrow { .. } => (S::INSUFFICIENT_STORAGE, "insufficient_capacity"),
        Error::NodeUnavailable(_) => (S::SERVICE_UNAVAILABLE, "node_unavailable"),
        Error::NodeRefused(_) => (S::BAD_GATEWAY, "node_refused"),
        Error::NotLeader { .. } | Error::Store(StoreError::Fenced) => (S::MISDIRECTED_REQUEST, "not_leader"),
        Error::Store(StoreError::Unavailable(_)) => (S::SERVICE_UNAVAILABLE, "store_unavailable"),
        Error::Store(_) => (S::INTERNAL_SERVER_ERROR, "store_error"),
        Error::Contended(_) => (S::SERVICE_UNAVAILABLE, "contended"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = classify(&self);
        let leader_url = match &self {
            ApiError::Service(Error::NotLeader { leader }) => leader.clone(),
            _ => None,
        };
        let body = ErrorBody { code: code.to_owned(), message: self.to_string(), leader_url };
        let response = fabriq_http::rejection::error_response(status, &body);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), code, error = %self, "request failed");
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodeapi::CallError;
    use std::time::Duration;

    #[test]
    fn errors_map_to_the_documented_statuses() {
        let unreachable = CallError::Unreachable { node: "n".into(), why: "refused".into() };
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (Error::VolumeNotFound("v".into()).into(), 404, "volume_not_found"),
            (Error::VolumeConflict { name: "v".into(), why: "x".into() }.into(), 409, "volume_conflict"),
            (
                Error::Placement(PlacementError::InsufficientCapacity { needed_bytes: 2, largest_free_bytes: 1 })
                    .into(),
                507,
                "insufficient_capacity",
            ),
            (Error::Placement(PlacementError::Unsatisfiable("x".into())).into(), 422, "unsatisfiable_topology"),
            (Error::Placement(PlacementError::Unavailable(vec![])).into(), 503, "nodes_unavailable"),
            (Error::NodeUnavailable(unreachable).into(), 503, "node_unavailable"),
            (Error::NotLeader { leader: None }.into(), 421, "not_leader"),
            (Error::Store(StoreError::Fenced).into(), 421, "not_leader"),
            (ApiError::Forbidden, 403, "forbidden"),
            (ApiError::MissingToken, 401, "unauthorized"),
            (Rejection::Timeout(Duration::from_secs(1)).into(), 503, "timeout"),
            (Rejection::NoRoute.into(), 404, "no_route"),
        ];
        for (error, status, code) in cases {
            assert_eq!(classify(&error), (StatusCode::from_u16(status).unwrap(), code), "{error}");
        }
    }
}
