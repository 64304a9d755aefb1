//! Every error the node API answers with, and the one place where each becomes an HTTP status
//! and a stable machine-readable code ([`classify`]; the rejections both APIs share are
//! classified by `fabriq_http`). The body is always `{"code": "...", "message": "..."}`: the
//! code for programs, the message for people.

use std::io;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fabriq_http::Rejection;
use serde::Serialize;
use utoipa::ToSchema;

use crate::node::{ListenerProblem, NodeError};
use crate::storage::{InvalidArgument, StorageError};

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `volume_not_found`, `name_taken`, `no_space`, ...
    #[schema(example = "volume_exported")]
    pub code: String,
    /// What happened and what to do about it.
    #[schema(
        example = "volume 67e55044-10b1-426f-9247-bb680e5fe0c8 is exported (1 host(s) allowed; 0 controller(s) connected): revoke its hosts and disconnect them first, or delete with force=true"
    )]
    pub message: String,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("missing bearer token: send `Authorization: Bearer <token>` (the token is in the node's token file)")]
    MissingToken,
    #[error("the bearer token is not this node's")]
    WrongToken,
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("{what} {value:?} is not valid: {expected}")]
    Path { what: &'static str, value: String, expected: &'static str },
    #[error("the request failed inside the node (a bug; see the node's log)")]
    Internal,
}

/// The status and code of an error: the only mapping from errors to HTTP in the daemon.
pub fn classify(error: &ApiError) -> (StatusCode, &'static str) {
    match error {
        ApiError::Node(e) => node_status(e),
        ApiError::MissingToken | ApiError::WrongToken => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ApiError::Rejected(rejection) => rejection.classify(),
        ApiError::Path { .. } => (StatusCode::BAD_REQUEST, "invalid_path"),
        ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn node_status(error: &NodeError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match error {
        NodeError::Storage(e) => storage_status(e),
        NodeError::BadVolumeId(_) => (S::BAD_REQUEST, "invalid_volume_id"),
        NodeError::VolumeNotFound(_) => (S::NOT_FOUND, "volume_not_found"),
        NodeError::PoolNotFound(_) => (S::NOT_FOUND, "pool_not_found"),
        NodeError::ListenerNotFound(_) => (S::NOT_FOUND, "listener_not_found"),
        NodeError::VolumeExists { .. } => (S::CONFLICT, "name_taken"),
        NodeError::Exported { .. } => (S::CONFLICT, "volume_exported"),
        NodeError::Busy { .. } => (S::SERVICE_UNAVAILABLE, "volume_busy"),
        NodeError::Deleting(_) => (S::CONFLICT, "volume_deleting"),
        NodeError::BadHostNqn { .. } => (S::BAD_REQUEST, "invalid_host_nqn"),
        NodeError::PoolExists(_) => (S::CONFLICT, "pool_exists"),
        NodeError::PoolFailed { .. } => (S::CONFLICT, "pool_failed"),
        NodeError::PoolNotEmpty { .. } => (S::CONFLICT, "pool_not_empty"),
        NodeError::ConfiguredPool(_) => (S::CONFLICT, "configured_pool"),
        NodeError::PathInUse { .. } => (S::CONFLICT, "device_in_use"),
        NodeError::OtherPool { .. } => (S::CONFLICT, "foreign_device"),
        NodeError::MissingDevice(_) => (S::UNPROCESSABLE_ENTITY, "device_missing"),
        NodeError::PoolFileSize(_) => (S::BAD_REQUEST, "invalid_argument"),
        NodeError::DataPath { .. } => (S::INTERNAL_SERVER_ERROR, "io_error"),
        NodeError::BadListener(ListenerProblem::RdmaNotBuilt) => (S::UNPROCESSABLE_ENTITY, "transport_not_built"),
        NodeError::BadListener(_) => (S::BAD_REQUEST, "invalid_listener"),
        NodeError::ListenerExists(_) => (S::CONFLICT, "listener_exists"),
        NodeError::ConfiguredListener { .. } => (S::CONFLICT, "configured_listener"),
        NodeError::Bind { source, .. } => match source.kind() {
            io::ErrorKind::AddrInUse => (S::CONFLICT, "address_in_use"),
            io::ErrorKind::AddrNotAvailable | io::ErrorKind::PermissionDenied => {
                (S::UNPROCESSABLE_ENTITY, "cannot_listen")
            }
            // RDMA: no RDMA CM on the node (ENOENT: no /dev/infiniband/rdma_cm), or no RDMA
            // device has the address (ENODEV).
            io::ErrorKind::NotFound => (S::UNPROCESSABLE_ENTITY, "cannot_listen"),
            _ if source.raw_os_error() == Some(libc::ENODEV) => (S::UNPROCESSABLE_ENTITY, "cannot_listen"),
            _ => (S::INTERNAL_SERVER_ERROR, "io_error"),
        },
        NodeError::NqnInUse(_) => (S::CONFLICT, "nqn_in_use"),
        NodeError::State(_) => (S::INTERNAL_SERVER_ERROR, "state_file"),
    }
}

fn storage_status(error: &StorageError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    let status = match error {
        StorageError::NotFound(_) | StorageError::NotAPool { .. } => S::NOT_FOUND,
        StorageError::NameTaken(_) | StorageError::Deleting(_) | StorageError::Foreign { .. } => S::CONFLICT,
        StorageError::NoSpace { .. } | StorageError::MetadataFull { .. } => S::INSUFFICIENT_STORAGE,
        StorageError::InvalidArgument(InvalidArgument::Shrink { .. }) => {
            return (S::UNPROCESSABLE_ENTITY, "shrink_refused");
        }
        StorageError::InvalidArgument(InvalidArgument::NotADevice(_)) => {
            return (S::UNPROCESSABLE_ENTITY, "not_a_device");
        }
        StorageError::InvalidArgument(_) => S::BAD_REQUEST,
        StorageError::DeviceTooSmall { .. } => S::UNPROCESSABLE_ENTITY,
        StorageError::Open { source, .. } if source.kind() == io::ErrorKind::ResourceBusy => {
            return (S::CONFLICT, "device_busy");
        }
        StorageError::Open { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
            return (S::UNPROCESSABLE_ENTITY, "permission_denied");
        }
        StorageError::Corrupt(_) | StorageError::Open { .. } | StorageError::Io { .. } => S::INTERNAL_SERVER_ERROR,
    };
    (status, error.code())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = classify(&self);
        let response = fabriq_http::rejection::error_response(
            status,
            &ErrorBody { code: code.to_owned(), message: self.to_string() },
        );
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), code, error = %self, "request failed");
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::VolumeId;
    use std::time::Duration;

    #[test]
    fn node_errors_map_to_the_documented_statuses() {
        let id = VolumeId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (NodeError::VolumeNotFound(id).into(), 404, "volume_not_found"),
            (NodeError::Exported { id, why: String::new() }.into(), 409, "volume_exported"),
            (
                NodeError::Storage(StorageError::NoSpace { needed_extents: 2, free_extents: 1, extent_bytes: 1 })
                    .into(),
                507,
                "no_space",
            ),
            (
                NodeError::Storage(InvalidArgument::Shrink { id, current_bytes: 2, requested_bytes: 1 }.into()).into(),
                422,
                "shrink_refused",
            ),
            (NodeError::Storage(InvalidArgument::BlockSize(7).into()).into(), 400, "invalid_argument"),
            (
                NodeError::Bind { address: "127.0.0.1:1".parse().unwrap(), source: io::ErrorKind::AddrInUse.into() }
                    .into(),
                409,
                "address_in_use",
            ),
            (NodeError::BadListener(ListenerProblem::RdmaNotBuilt).into(), 422, "transport_not_built"),
            (NodeError::BadListener(ListenerProblem::Transport("ib".into())).into(), 400, "invalid_listener"),
            (
                NodeError::Bind {
                    address: "10.0.0.1:4420".parse().unwrap(),
                    source: io::Error::from_raw_os_error(libc::ENODEV),
                }
                .into(),
                422,
                "cannot_listen",
            ),
            (ApiError::MissingToken, 401, "unauthorized"),
            (Rejection::Timeout(Duration::from_secs(1)).into(), 503, "timeout"),
            (Rejection::NoRoute.into(), 404, "no_route"),
        ];
        for (error, status, code) in cases {
            assert_eq!(classify(&error), (StatusCode::from_u16(status).unwrap(), code), "{error}");
        }
    }
}
